use super::{LN_2PI, VariationalFamily};
use burn::prelude::*;

/// A batch of diagonal Gaussians `N(mean, diag(exp(log_var)))`.
///
/// # Shapes
/// `mean`, `log_var`: `[batch, dim]`.
///
/// ```text
/// log N(z; μ, σ²) = −½ Σ_i [ (z_i − μ_i)² / σ_i² + log σ_i² + log 2π ]
/// H               =  ½ Σ_i [ 1 + log 2π + log σ_i² ]
/// KL(q ‖ p)       =  ½ Σ_i [ log σ_p,i² − log σ_q,i² + (σ_q,i² + (μ_q,i − μ_p,i)²) / σ_p,i² − 1 ]
/// ```
#[derive(Debug, Clone)]
pub struct DiagGaussian {
    /// Means, `[batch, dim]`.
    pub mean: Tensor<2>,
    /// Log-variances, `[batch, dim]`.
    pub log_var: Tensor<2>,
}

impl DiagGaussian {
    /// A Gaussian from its mean and log-variance (same shape).
    pub fn new(mean: Tensor<2>, log_var: Tensor<2>) -> Self {
        assert_eq!(
            mean.dims(),
            log_var.dims(),
            "DiagGaussian: mean {:?} and log_var {:?} must have the same shape",
            mean.dims(),
            log_var.dims()
        );
        Self { mean, log_var }
    }

    /// A Gaussian from a network's output `[batch, 2·dim]`: the first half of each row the
    /// means, the second the log-variances (a field network's channel 0 and channel 1).
    pub fn from_halves(out: Tensor<2>) -> Self {
        let [b, f] = out.dims();
        assert!(
            f % 2 == 0,
            "DiagGaussian::from_halves: {f} features is not 2·dim"
        );
        let n = f / 2;
        Self::new(out.clone().slice([0..b, 0..n]), out.slice([0..b, n..f]))
    }

    /// `batch` copies of the standard normal `N(0, I_dim)`.
    pub fn standard(batch: usize, dim: usize, device: &Device) -> Self {
        Self {
            mean: Tensor::zeros([batch, dim], device),
            log_var: Tensor::zeros([batch, dim], device),
        }
    }

    /// Standard deviations `exp(½ log_var)`, `[batch, dim]`.
    pub fn std(&self) -> Tensor<2> {
        self.log_var.clone().mul_scalar(0.5).exp()
    }

    /// Variances, `[batch, dim]`.
    pub fn variance(&self) -> Tensor<2> {
        self.log_var.clone().exp()
    }

    /// Draw `particles` samples with burn's device RNG, `[particles, batch, dim]`.
    pub fn sample(&self, particles: usize) -> Tensor<3> {
        let [b, d] = self.mean.dims();
        let eps = super::standard_normal([particles, b, d], &self.mean.device());
        self.rsample(eps)
    }

    /// Closed-form `KL(self ‖ N(0, I))`, `[batch]`.
    pub fn kl_standard_normal(&self) -> Tensor<1> {
        let var = self.variance();
        (var + self.mean.clone().powi_scalar(2) - self.log_var.clone() - 1.0)
            .sum_dim(1)
            .squeeze_dim::<1>(1)
            .mul_scalar(0.5)
    }

    /// Closed-form `KL(self ‖ other)`, `[batch]`.
    pub fn kl(&self, other: &DiagGaussian) -> Tensor<1> {
        self.kl_per_dim(other).sum_dim(1).squeeze_dim::<1>(1)
    }

    /// `KL(q_j ‖ p_j)` of each dimension, `[batch, dim]` (they sum to [`DiagGaussian::kl`]).
    pub fn kl_per_dim(&self, other: &DiagGaussian) -> Tensor<2> {
        let var_q = self.variance();
        let inv_var_p = other.log_var.clone().neg().exp();
        let diff2 = (self.mean.clone() - other.mean.clone()).powi_scalar(2);
        ((other.log_var.clone() - self.log_var.clone()) + (var_q + diff2) * inv_var_p - 1.0)
            .mul_scalar(0.5)
    }

    /// Detach both parameters from the autodiff graph.
    pub fn detach(self) -> Self {
        Self {
            mean: self.mean.detach(),
            log_var: self.log_var.detach(),
        }
    }
}

impl VariationalFamily for DiagGaussian {
    fn dims(&self) -> [usize; 2] {
        self.mean.dims()
    }

    fn rsample(&self, eps: Tensor<3>) -> Tensor<3> {
        let [_, b, d] = eps.dims();
        assert_eq!(
            [b, d],
            self.mean.dims(),
            "DiagGaussian::rsample: eps [particles, batch, dim] has batch/dim {:?}, expected {:?}",
            [b, d],
            self.mean.dims()
        );
        self.mean.clone().unsqueeze::<3>() + self.std().unsqueeze::<3>() * eps
    }

    fn log_prob(&self, z: Tensor<3>) -> Tensor<2> {
        let [_, _, d] = z.dims();
        let mean = self.mean.clone().unsqueeze::<3>();
        let log_var = self.log_var.clone().unsqueeze::<3>();
        let inv_var = log_var.clone().neg().exp();
        let quad = ((z - mean).powi_scalar(2) * inv_var + log_var).sum_dim(2);
        quad.squeeze_dim::<2>(2)
            .add_scalar(d as f64 * LN_2PI)
            .mul_scalar(-0.5)
    }

    fn entropy(&self) -> Tensor<1> {
        let [_, d] = self.mean.dims();
        self.log_var
            .clone()
            .sum_dim(1)
            .squeeze_dim::<1>(1)
            .add_scalar(d as f64 * (1.0 + LN_2PI))
            .mul_scalar(0.5)
    }

    fn kl_to_diag(&self, prior: &DiagGaussian) -> Tensor<1> {
        self.kl(prior)
    }

    fn mean(&self) -> Tensor<2> {
        self.mean.clone()
    }
}
