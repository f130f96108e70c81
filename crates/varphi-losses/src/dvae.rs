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
//!
//! With an amortised `q_λ(ξ | y_{1:N})` ([`Dvae::is_amortised`]) every sequence is its own data
//! set with its own `Λ`: the KL is per sequence and `J` is averaged over the batch. Without
//! physical parameters ([`LatentPhysics::prior`] `None`, e.g. the KVAE-style baseline
//! [`LearnedLinear`]) there is no `q_λ` and no KL.

use crate::kalman::{FilterOutput, StateSpaceModel, Transition};
use crate::likelihood::Likelihood;
use burn::prelude::*;
use varphi_models::distributions::{DiagGaussian, VariationalFamily};
use varphi_models::{Dvae, ParameterPrior};
use varphi_physics::dynamics::Dynamics;

/// A learned linear transition `u ↦ A u` without physics (the KVAE-style baseline of a
/// Φ-DVAE): `A` is a tensor of the model, so autodiff trains it through the filter. Takes no
/// parameters (`Λ` is ignored).
#[derive(Debug, Clone)]
pub struct LearnedLinear {
    /// `A`, `[d, d]`.
    pub matrix: Tensor<2>,
}

impl Dynamics for LearnedLinear {
    fn state_dim(&self) -> usize {
        self.matrix.dims()[0]
    }
    fn param_dim(&self) -> usize {
        0
    }
    fn step(&self, u: Tensor<2>, _lambda: Tensor<2>) -> Tensor<2> {
        u.matmul(self.matrix.clone().transpose())
    }
    fn tangent(&self, _u: Tensor<2>, _lambda: Tensor<2>, v: Tensor<3>) -> Tensor<3> {
        let b = v.dims()[0];
        self.matrix
            .clone()
            .unsqueeze_dim::<3>(0)
            .repeat_dim(0, b)
            .matmul(v)
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn step_host(&self, u: &[f64], _lambda: &[f64]) -> Vec<f64> {
        let d = u.len();
        let a: Vec<f64> = self
            .matrix
            .clone()
            .into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .expect("a float tensor converts to f64");
        (0..d)
            .map(|j| (0..d).map(|l| a[j * d + l] * u[l]).sum())
            .collect()
    }
}

/// The state-space model around the pseudo-observations: `u_n = M(u_{n−1}; Λ) + e_n`,
/// `x_n = H u_n + r_n` (shapes of [`StateSpaceModel`]).
pub struct LatentPhysics<'a> {
    /// The transition `M`.
    pub dynamics: &'a dyn Dynamics,
    /// `Λ = T(ξ)`; `None`: a transition without physical parameters (no `q_λ`, no KL).
    pub prior: Option<&'a ParameterPrior>,
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
    /// `KL(q_λ ‖ N(0, I))`: `[1]` for a shared `q_λ` (not divided by `S`), `[batch]` when
    /// amortised, zeros without parameters.
    pub kl: Tensor<1>,
    /// The filter's output, for [`FilterOutput::check`].
    pub filter: FilterOutput,
}

impl DvaeElbo {
    /// `−J` for frames `y: [batch, N, P]` with encoder noise `eps_x: [1, batch·N, m]` and
    /// parameter noise `eps_xi: [batch, 1, p]` (standard normal; unused without parameters).
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
        let x = x.reshape([b, n, m]);
        let (lambda, kl) = match physics.prior {
            Some(prior) => {
                let q_xi = model.param_posterior_given(q_x.mean.clone().reshape([b, n, m]));
                let rows = q_xi.dims()[0];
                let eps = if rows == 1 {
                    eps_xi
                } else {
                    eps_xi.reshape([1, b, prior.dim()])
                };
                let xi = q_xi.rsample(eps).reshape([b, prior.dim()]);
                let kl = q_xi.kl_to_diag(&DiagGaussian::standard(rows, prior.dim(), &device));
                (prior.to_physical(xi), kl)
            }
            None => (Tensor::zeros([b, 1], &device), Tensor::zeros([1], &device)),
        };
        let filter = physics.model(lambda).filter(x, false);
        let dyn_ll = filter.log_likelihood.clone();
        let per_sequence = rec.clone() + entropy.clone() + dyn_ll.clone();
        let kl_term = if model.is_amortised() {
            kl.clone().mean()
        } else {
            kl.clone() / self.sequences.max(1) as f64
        };
        let loss = kl_term - per_sequence.mean();
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
