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

/// The PDDLVM posterior bound for observations `y` (the "data" mode): an amortised posterior
/// `q_ψ(ξ | y)` over whitened parameters (`z = T(ξ)`, `ξ ~ N(0, I)` a priori, see
/// `varphi_physics::pde::PriorTransform`) and the forward surrogate `q_φ(u | z)` standing in for
/// the solution map, `u` marginalised under it:
///
/// ```text
/// p(y | z) ≈ ∫ p(y | u) q_φ(u | z) du = N(y; H μ_φ(z), σ_y² I + diag(H σ_φ²(z)))
/// L(y) = E_{q_ψ(ξ|y)}[ log N(y; H μ_φ(T(ξ)), σ_y² I + diag(H σ_φ²(T(ξ)))) ]
///        − KL(q_ψ(ξ | y) ‖ N(0, I))
/// ```
///
/// Why not the joint `p(y|u) p(r̂=0|u,z)` with `u ~ q(u|z)` inside the bound: with a flat `p(u)`
/// the virtual observation integrates to `∫ N(0; r(u,z), σ_r²) du = 1 / |det ∂r/∂u|` as
/// `σ_r → 0`, so that bound targets `p(z) p(y|u*(z)) / |det ∂r/∂u|` — a posterior tilted by the
/// residual's Jacobian, which depends on `z` (docs/objectives.md). The surrogate, trained by
/// [`PddlvmElbo`], is the physics; this bound only inverts it. The expectation is estimated with
/// reparameterised `ξ`; the KL is closed-form for Gaussian families and, for a flow (no closed
/// form, [`VariationalFamily::has_analytic_kl`]), the Monte-Carlo estimate
/// `(1/S) Σ_s [log q(ξ_s | y) − log N(ξ_s; 0, I)]` on the same particles.
#[derive(Debug, Clone, Copy, Default)]
pub struct PddlvmDataElbo;

/// Named parts of [`PddlvmDataElbo`] (per observation vector, detached) and the loss.
#[derive(Debug, Clone)]
pub struct PddlvmDataOutput {
    /// `−mean L` (backpropagate this).
    pub loss: Tensor<1>,
    /// `E_q log p(y | T(ξ))`, `[batch]`.
    pub log_obs: Tensor<1>,
    /// `KL(q_ψ(ξ | y) ‖ N(0, I))`, `[batch]`.
    pub kl: Tensor<1>,
}

impl PddlvmDataElbo {
    /// Evaluate the bound.
    ///
    /// # Shapes
    /// - `q_xi`: `q_ψ(ξ | y)` over `[batch, k]` (diagonal or full covariance); `eps_xi`: `[particles, batch, k]`
    /// - `log_lik(ξ)`: `log p(y | T(ξ))` for `ξ` `[particles·batch, k]` (particle-major) →
    ///   `[particles·batch]`, e.g. [`crate::ObservationLikelihood::log_marginal`] of the
    ///   surrogate's mean and variance
    pub fn forward<Q: VariationalFamily>(
        &self,
        q_xi: &Q,
        eps_xi: Tensor<3>,
        log_lik: impl FnOnce(Tensor<2>) -> Tensor<1>,
    ) -> PddlvmDataOutput {
        let [s, b, k] = eps_xi.dims();
        let device = eps_xi.device();
        let prior = DiagGaussian::standard(b, k, &device);
        let (xi, kl) = if q_xi.has_analytic_kl() {
            (q_xi.rsample(eps_xi), q_xi.kl_to_diag(&prior))
        } else {
            let (xi, log_q) = q_xi.rsample_with_log_prob(eps_xi);
            let kl = (log_q - prior.log_prob(xi.clone()))
                .mean_dim(0)
                .reshape([b]);
            (xi, kl)
        };
        let lo = log_lik(xi.reshape([s * b, k]))
            .reshape([s, b])
            .mean_dim(0)
            .reshape([b]);
        let loss = (lo.clone() - kl.clone()).mean().neg();
        PddlvmDataOutput {
            loss,
            log_obs: lo.detach(),
            kl: kl.detach(),
        }
    }
}
