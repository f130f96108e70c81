//! # varphi-losses
//!
//! Objectives for variational inference, composed rather than inherited:
//!
//! - [`Likelihood`]: Gaussian (fixed, learned global or heteroscedastic σ) and Bernoulli.
//! - [`Elbo`]: the evidence lower bound with a [`KlEstimator`] (analytic or Monte Carlo), β,
//!   linear KL warm-up and `n_particles` (primer eqs. 14, 17, 18).
//!
//! Each objective returns named parts: `loss` to backpropagate and detached terms for logging.
//!
//! ```ignore
//! let elbo = ElboConfig::new().with_beta(4.0).with_n_particles(2).init();
//! let out = elbo.forward_model(&vae, &likelihood, x, None, eps, step);
//! let grads = out.loss.backward();
//! ```
#![warn(missing_docs)]

pub mod elbo;
pub mod likelihood;

pub use elbo::{Elbo, ElboConfig, ElboOutput, ElboScalars, KlEstimator};
pub use likelihood::{
    BernoulliLikelihood, GaussianLikelihood, GaussianLikelihoodConfig, Likelihood,
    LikelihoodConfig, NoiseModel,
};

#[cfg(test)]
mod tests;
