//! The PDDLVM objective (primer eq. 30): physics-only training of a forward surrogate and an
//! inverse model through the virtual observation of the PDE residual.

use burn::prelude::*;
use varphi_models::{DiagGaussian, VariationalFamily};

/// The PDDLVM bound for parameters `z ~ p(z)` (a batch of prior draws),
///
/// ```text
/// J(φ, θ) = E_{q_φ(u|z)} [ log N(0; r(u, z), σ_r² I) + log p_θ(z | u) ] + H[q_φ(u | z)]
/// ```
///
/// i.e. `E_q[log p(r̂=0|u,z) + log p_θ(z|u) − log q_φ(u|z)]` with the flat `p(u)` and the
/// constant `log p(z)` of the PDDLVM code dropped; the entropy term is analytic. Estimated with
/// reparameterised samples `u = μ + σ ε`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PddlvmElbo;

/// Named parts of the PDDLVM bound (per sample, detached) and the loss.
#[derive(Debug, Clone)]
pub struct PddlvmOutput {
    /// `−mean J` (backpropagate this).
    pub loss: Tensor<1>,
    /// `E_q log p(r̂ = 0 | u, z)`, `[batch]`.
    pub log_residual: Tensor<1>,
    /// `E_q log p_θ(z | u)`, `[batch]`.
    pub log_inverse: Tensor<1>,
    /// `H[q_φ(u | z)]`, `[batch]`.
    pub entropy: Tensor<1>,
}

impl PddlvmElbo {
    /// Evaluate the bound.
    ///
    /// # Shapes
    /// - `q_u`: `q_φ(u | z)` over `[batch, n_u]`; `eps`: `[particles, batch, n_u]`
    /// - `z`: `[batch, p]`, the parameters in the inverse model's coordinates
    /// - `log_residual(u)`: `u` `[particles·batch, n_u]` (particle-major) → `[particles·batch]`
    /// - `inverse(u)`: `p_θ(z | u)` for `u` `[particles·batch, n_u]`
    pub fn forward(
        &self,
        q_u: &DiagGaussian,
        eps: Tensor<3>,
        z: Tensor<2>,
        log_residual: impl FnOnce(Tensor<2>) -> Tensor<1>,
        inverse: impl FnOnce(Tensor<2>) -> DiagGaussian,
    ) -> PddlvmOutput {
        let [s, b, d] = eps.dims();
        let u = q_u.rsample(eps).reshape([s * b, d]);
        let lr = log_residual(u.clone())
            .reshape([s, b])
            .mean_dim(0)
            .reshape([b]);
        let p = z.dims()[1];
        let zs = z.unsqueeze_dim::<3>(0).expand([s, b, p]);
        let li = inverse(u)
            .log_prob(zs.reshape([1, s * b, p]))
            .reshape([s, b])
            .mean_dim(0)
            .reshape([b]);
        let h = q_u.entropy();
        let loss = (lr.clone() + li.clone() + h.clone()).mean().neg();
        PddlvmOutput {
            loss,
            log_residual: lr.detach(),
            log_inverse: li.detach(),
            entropy: h.detach(),
        }
    }
}
