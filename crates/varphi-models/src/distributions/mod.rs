//! Probability distributions as types.
//!
//! Sample tensors carry a leading *particle* axis: `z: [particles, batch, dim]`. Log-densities
//! return `[particles, batch]`; KL divergences and entropies return `[batch]`. Randomness is
//! explicit: `rsample(eps)` takes standard-normal noise so tests can fix it.

mod bernoulli;
mod diag_gaussian;
mod full_gaussian;

pub use bernoulli::Bernoulli;
pub use diag_gaussian::DiagGaussian;
pub use full_gaussian::FullGaussian;

use burn::prelude::*;

/// `ln(2π)`.
pub const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// The standard normal CDF `Φ(x) = (1 + erf(x/√2))/2` on the host, with erf by
/// Abramowitz–Stegun 7.1.26 (absolute error < 1.5e-7): for PIT values and interval checks.
pub fn standard_normal_cdf(x: f64) -> f64 {
    let y = x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * y.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = (1.0 - poly * (-y * y).exp()).copysign(y);
    0.5 * (1.0 + erf)
}

/// A reparameterisable variational family over `R^dim`, one distribution per batch row.
///
/// Implemented by [`DiagGaussian`], [`FullGaussian`] and the flow posteriors
/// ([`crate::FlowQ`], [`crate::AmortisedQ`]); objectives in `varphi-losses` are
/// generic over it.
pub trait VariationalFamily {
    /// `[batch, dim]`.
    fn dims(&self) -> [usize; 2];
    /// Pathwise sample `z = T(eps)` for `eps: [particles, batch, dim]` standard normal.
    fn rsample(&self, eps: Tensor<3>) -> Tensor<3>;
    /// `log q(z)` for `z: [particles, batch, dim]`, returns `[particles, batch]`.
    fn log_prob(&self, z: Tensor<3>) -> Tensor<2>;
    /// A pathwise sample with its `log q(z)`: `([particles, batch, dim], [particles, batch])`.
    /// Flows override it to reuse the forward pass's log-determinant instead of inverting.
    fn rsample_with_log_prob(&self, eps: Tensor<3>) -> (Tensor<3>, Tensor<2>) {
        let z = self.rsample(eps);
        let log_q = self.log_prob(z.clone());
        (z, log_q)
    }
    /// Entropy `H[q] = −E_q log q`, `[batch]`.
    fn entropy(&self) -> Tensor<1>;
    /// Whether [`kl_to_diag`](Self::kl_to_diag) and [`entropy`](Self::entropy) have closed
    /// forms (true for Gaussians; flows estimate them from samples).
    fn has_analytic_kl(&self) -> bool {
        true
    }
    /// Closed-form `KL(q ‖ p)` to a diagonal Gaussian `p` of the same shape, `[batch]`.
    fn kl_to_diag(&self, prior: &DiagGaussian) -> Tensor<1>;
    /// The mean, `[batch, dim]`.
    fn mean(&self) -> Tensor<2>;
}

/// Standard-normal noise `[particles, batch, dim]` drawn on `device` with burn's RNG.
///
/// Reproducible training loops draw noise from their own seeded stream instead (the trainer
/// does); this helper is for quick experiments and tests.
pub fn standard_normal(shape: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), device)
}
