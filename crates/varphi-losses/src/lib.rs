//! # varphi-losses
//!
//! Objectives for variational inference, composed rather than inherited:
//!
//! - [`Likelihood`]: Gaussian (fixed, learned global or heteroscedastic σ) and Bernoulli.
//! - [`ResidualLikelihood`]: a PDE residual as a virtual observation `r̂ = 0` with noise `σ_r`
//!   (fixed, annealed toward the hard constraint, or learned) and its own `σ_b` for boundary rows
//!   (primer eq. 29); [`ObservationLikelihood`] with an [`ObservationOperator`] (node index or
//!   bilinear) for sparse data, so physics × data is a sum of log-likelihoods weighted only by
//!   their noise scales; [`ResidualBoltzmann`] `E_q[β‖r‖²] − H[q]` (eqs. 27–28).
//! - [`Elbo`]: the evidence lower bound with a [`KlEstimator`] (analytic or Monte Carlo), β,
//!   linear KL warm-up and `n_particles` (primer eqs. 14, 17, 18).
//! - [`RenyiBound`]: importance-weighted bounds, IWAE (`α = 0`) and Rényi-α (`α → 1`: ELBO).
//! - [`free_bits_kl`], [`mmd2`] (PI-VAE's MMD term) and [`score_function_surrogate`]
//!   (REINFORCE with a leave-one-out baseline).
//! - [`ModelError`]: a residual-informed discrepancy `δ ~ N(0, τ̂²(z) I)` that carries a
//!   physics-trained surrogate's approximation error into its predictive, without labels.
//! - [`StateSpaceModel::filter`]: the (extended) Kalman filter's marginal likelihood
//!   `log p(x_{1:N} | Λ)` of latent physics, differentiable through `Λ`, `Q`, `R` and `x`
//!   (Φ-DVAE, primer eq. 24), and the [`rts_smooth`]er for the latent states; [`DvaeElbo`]
//!   assembles the Φ-DVAE bound around it; [`GaussianVi`] fits a Gaussian `q(ξ)` per case
//!   (data set) to such a likelihood, the non-amortised `q_λ`.
//! - [`skew_js`]: the skew Jensen–Shannon divergence `JS_α` (primer eq. 21).
//!
//! Each objective returns named parts: `loss` to backpropagate and detached terms for logging.
//!
//! ```ignore
//! let elbo = ElboConfig::new().with_beta(4.0).with_n_particles(2).init();
//! let out = elbo.forward_model(&vae, &likelihood, x, None, eps, step);
//! let grads = out.loss.backward();
//! ```
#![warn(missing_docs)]

pub mod bounds;
pub mod dgp;
pub mod divergences;
pub mod dvae;
pub mod elbo;
pub mod estimators;
pub mod gaussian_vi;
pub mod kalman;
pub mod likelihood;
pub mod model_error;
pub mod observation;
pub mod pddlvm;
pub mod pde_residual;
pub mod physvae;

pub use bounds::{BoundOutput, RenyiBound, log_mean_exp, renyi_bound};
pub use dgp::{chi_mean, chi_shell};
pub use divergences::skew_js;
pub use dvae::{DvaeElbo, DvaeOutput, LatentPhysics, LearnedLinear};
pub use elbo::{Elbo, ElboConfig, ElboOutput, ElboScalars, KlEstimator};
pub use estimators::{free_bits_kl, mmd2, score_function_surrogate};
pub use gaussian_vi::{Draws, GaussianVi};
pub use kalman::{
    FilterOutput, FilterStates, KalmanError, Smoothed, StateSpaceModel, Transition, rts_smooth,
};
pub use likelihood::{
    BernoulliLikelihood, GaussianLikelihood, GaussianLikelihoodConfig, Likelihood,
    LikelihoodConfig, NoiseModel, SIGMA_GAIN,
};
pub use model_error::{ModelError, ModelErrorConfig, Probe};
pub use observation::{ObservationLikelihood, ObservationOperator};
pub use pddlvm::{PddlvmDataElbo, PddlvmDataOutput, PddlvmElbo, PddlvmOutput};
pub use pde_residual::{
    BoltzmannOutput, ResidualBoltzmann, ResidualBoltzmannConfig, ResidualLikelihood,
    ResidualLikelihoodConfig, SigmaSchedule,
};
pub use physvae::{PhysVaeLoss, PhysVaeNoise, PhysVaeTerms};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dgp;
#[cfg(test)]
mod tests_dvae;
#[cfg(test)]
mod tests_flow_posterior;
#[cfg(test)]
mod tests_gaussian_vi;
#[cfg(test)]
mod tests_kalman;
#[cfg(test)]
mod tests_physvae;
#[cfg(test)]
mod tests_residual;
