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

/// The PDDLVM bound with observations (the "data" mode of eq. 30): an amortised posterior
/// `q_ψ(ξ | y)` over whitened parameters (`z = T(ξ)`, `ξ ~ N(0, I)` a priori, see
/// `varphi_physics::pde::PriorTransform`) and the forward surrogate `q_φ(u | z)`:
///
/// ```text
/// generative:  p(y | u) p(r̂ = 0 | u, z) p(u) p(ξ),  z = T(ξ),  p(u) flat
/// variational: q_ψ(ξ | y) q_φ(u | T(ξ))
/// L(y) = E_{q_ψ(ξ|y) q_φ(u|T(ξ))}[ log p(y | u) + log N(0; r(u, T(ξ)), σ_r² I) − log q_φ(u | T(ξ)) ]
///        − KL(q_ψ(ξ | y) ‖ N(0, I))
/// ```
///
/// The surrogate's entropy is analytic, the KL closed-form; the rest is estimated with one
/// reparameterised `u` per reparameterised `ξ`. Each likelihood is weighted only by its noise
/// scale (σ_y inside `log p(y|u)`, σ_r inside the residual term).
#[derive(Debug, Clone, Copy, Default)]
pub struct PddlvmDataElbo;

/// Named parts of [`PddlvmDataElbo`] (per observation vector, detached) and the loss.
#[derive(Debug, Clone)]
pub struct PddlvmDataOutput {
    /// `−mean L` (backpropagate this).
    pub loss: Tensor<1>,
    /// `E_q log p(y | u)`, `[batch]`.
    pub log_obs: Tensor<1>,
    /// `E_q log p(r̂ = 0 | u, z)`, `[batch]`.
    pub log_residual: Tensor<1>,
    /// `E_q H[q_φ(u | T(ξ))]`, `[batch]`.
    pub entropy: Tensor<1>,
    /// `KL(q_ψ(ξ | y) ‖ N(0, I))`, `[batch]`.
    pub kl: Tensor<1>,
}

impl PddlvmDataElbo {
    /// Evaluate the bound.
    ///
    /// # Shapes
    /// - `q_xi`: `q_ψ(ξ | y)` over `[batch, k]`; `eps_xi`: `[particles, batch, k]`
    /// - `surrogate(ξ)`: `q_φ(u | T(ξ))` over `[particles·batch, n_u]` for `ξ`
    ///   `[particles·batch, k]` (particle-major)
    /// - `eps_u`: `[particles·batch, n_u]`
    /// - `log_lik(ξ, u)`: `(log p(y | u), log p(r̂ = 0 | u, T(ξ)))`, each `[particles·batch]`
    pub fn forward(
        &self,
        q_xi: &DiagGaussian,
        eps_xi: Tensor<3>,
        surrogate: impl FnOnce(Tensor<2>) -> DiagGaussian,
        eps_u: Tensor<2>,
        log_lik: impl FnOnce(Tensor<2>, Tensor<2>) -> (Tensor<1>, Tensor<1>),
    ) -> PddlvmDataOutput {
        let [s, b, k] = eps_xi.dims();
        let xi = q_xi.rsample(eps_xi).reshape([s * b, k]);
        let q_u = surrogate(xi.clone());
        let nu = eps_u.dims()[1];
        let u = q_u
            .rsample(eps_u.reshape([1, s * b, nu]))
            .reshape([s * b, nu]);
        let (lo, lr) = log_lik(xi, u);
        let per_case = |t: Tensor<1>| t.reshape([s, b]).mean_dim(0).reshape([b]);
        let (lo, lr, h) = (per_case(lo), per_case(lr), per_case(q_u.entropy()));
        let kl = q_xi.kl_standard_normal();
        let loss = (lo.clone() + lr.clone() + h.clone() - kl.clone())
            .mean()
            .neg();
        PddlvmDataOutput {
            loss,
            log_obs: lo.detach(),
            log_residual: lr.detach(),
            entropy: h.detach(),
            kl: kl.detach(),
        }
    }
}
