//! The Φ-DVAE evidence lower bound (primer eq. 24): frames `y_{1:N}`, pseudo-observations
//! `x_n ~ q_φ(x_n | y_n)`, latent physics integrated out by a Kalman filter, and a Gaussian
//! `q_λ(ξ)` over the standardised physical parameters `Λ = T(ξ)`:
//!
//! ```text
//! J = Σ_n E_{q_φ}[log p_θ(y_n | x_n) − log q_φ(x_n | y_n)]
//!     + E_{q_φ q_λ}[log p(x_{1:N} | Λ)] − KL(q_λ(ξ) ‖ N(0, I)) / S
//! ```
//!
//! per sequence, `S` the sequences of the data set that share `Λ` (the KL is paid once per
//! data set), `log p(x_{1:N} | Λ)` the filter's prediction-error decomposition
//! ([`crate::kalman`]). One pathwise sample of `x` and of `ξ` per sequence; autodiff reaches the
//! encoder, the decoder, `q_λ` and every tensor of [`LatentPhysics`] (learned `Q`, `R`).
//! `J ≤ log p(y_{1:N})` of the generative model `p(ξ) p(x_{1:N} | T(ξ)) Π_n p_θ(y_n | x_n)`.

use crate::kalman::{FilterOutput, StateSpaceModel, Transition};
use crate::likelihood::Likelihood;
use burn::prelude::*;
use varphi_models::distributions::{DiagGaussian, VariationalFamily};
use varphi_models::{Dvae, ParameterPrior};
use varphi_physics::dynamics::Dynamics;

/// The state-space model around the pseudo-observations: `u_n = M(u_{n−1}; Λ) + e_n`,
/// `x_n = H u_n + r_n` (shapes of [`StateSpaceModel`]).
pub struct LatentPhysics<'a> {
    /// The transition `M`.
    pub dynamics: &'a dyn Dynamics,
    /// `Λ = T(ξ)`.
    pub prior: &'a ParameterPrior,
    /// `Q`, `[1 or batch, d, d]`.
    pub process: Tensor<3>,
    /// `H`, `[m, d]`.
    pub observation: Tensor<2>,
    /// `diag R`, `[1 or batch, m]`.
    pub noise: Tensor<2>,
    /// `m₀`, `[1 or batch, d]`.
    pub initial_mean: Tensor<2>,
    /// `P₀`, `[1 or batch, d, d]`.
    pub initial_cov: Tensor<3>,
}

impl LatentPhysics<'_> {
    /// The state-space model at parameters `lambda: [batch, p]`.
    pub fn model(&self, lambda: Tensor<2>) -> StateSpaceModel<'_> {
        StateSpaceModel {
            transition: Transition::Dynamics(self.dynamics, lambda),
            process: self.process.clone(),
            observation: self.observation.clone(),
            noise: self.noise.clone(),
            initial_mean: self.initial_mean.clone(),
            initial_cov: self.initial_cov.clone(),
        }
    }
}

/// The objective (module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DvaeElbo {
    /// Sequences `S` of the data set sharing `Λ`.
    pub sequences: usize,
}

/// The bound and its terms (detached but `loss`; the terms per sequence, `[batch]`).
#[derive(Debug, Clone)]
pub struct DvaeOutput {
    /// `−J`, to minimise, `[1]`.
    pub loss: Tensor<1>,
    /// `Σ_n log p_θ(y_n | x_n)`.
    pub reconstruction: Tensor<1>,
    /// `−Σ_n log q_φ(x_n | y_n)` (a one-sample entropy estimate).
    pub encoder_entropy: Tensor<1>,
    /// `log p(x_{1:N} | Λ)`.
    pub dynamics: Tensor<1>,
    /// `KL(q_λ ‖ N(0, I))` (not divided by `S`).
    pub kl: Tensor<1>,
    /// The filter's output, for [`FilterOutput::check`].
    pub filter: FilterOutput,
}

impl DvaeElbo {
    /// `−J` for frames `y: [batch, N, P]` with encoder noise `eps_x: [1, batch·N, m]` and
    /// parameter noise `eps_xi: [batch, 1, p]` (standard normal).
    pub fn forward(
        &self,
        model: &Dvae,
        likelihood: &Likelihood,
        physics: &LatentPhysics,
        y: Tensor<3>,
        eps_x: Tensor<3>,
        eps_xi: Tensor<3>,
    ) -> DvaeOutput {
        let [b, n, p] = y.dims();
        let device = y.device();
        let q_x = model.encode(y.clone());
        let (x, log_q) = q_x.rsample_with_log_prob(eps_x); // [1, b·n, m], [1, b·n]
        let m = x.dims()[2];
        let params = model.decode(x.clone().reshape([b, n, m]));
        let k = params.dims()[2];
        let rec = likelihood
            .log_prob(y.reshape([b * n, p]), params.reshape([1, b * n, k]))
            .reshape([b, n])
            .sum_dim(1)
            .reshape([b]);
        let entropy = log_q.neg().reshape([b, n]).sum_dim(1).reshape([b]);
        let q_xi = model.param_posterior();
        let xi = q_xi.rsample(eps_xi).reshape([b, physics.prior.dim()]);
        let filter = physics
            .model(physics.prior.to_physical(xi))
            .filter(x.reshape([b, n, m]), false);
        let dyn_ll = filter.log_likelihood.clone();
        let kl = q_xi.kl_to_diag(&DiagGaussian::standard(1, physics.prior.dim(), &device));
        let per_sequence = rec.clone() + entropy.clone() + dyn_ll.clone();
        let loss = kl.clone() / self.sequences.max(1) as f64 - per_sequence.mean();
        DvaeOutput {
            loss,
            reconstruction: rec.detach(),
            encoder_entropy: entropy.detach(),
            dynamics: dyn_ll.detach(),
            kl: kl.detach(),
            filter,
        }
    }
}
