//! Whitened parameter priors: a differentiable map `z = T(ξ)` with `ξ ~ N(0, I_k)` such that
//! `T(ξ) ~ p(z)`. Variational posteriors over parameters are then Gaussians over `ξ`, and the
//! prior term of an ELBO is the analytic `KL(q(ξ | y) ‖ N(0, I))`.

use burn::prelude::*;

/// `z = T(ξ)` for `ξ ~ N(0, I_k)`, exact in distribution for the priors it represents.
#[derive(Debug, Clone, PartialEq)]
pub enum PriorTransform {
    /// Independent uniforms `z_i = lo_i + (hi_i − lo_i) Φ(ξ_i)`, `Φ` the standard normal CDF
    /// (`k = p`).
    Uniform {
        /// Lower ends.
        lo: Vec<f64>,
        /// Upper ends.
        hi: Vec<f64>,
    },
    /// A log-normal field `z = exp(μ + B ξ)` (a truncated Karhunen–Loève expansion):
    /// `B` is `[p, k]`, column `j` = `√λ_j φ_j`.
    LogLinear {
        /// Mean `μ` of `log z`.
        mean: f64,
        /// `B`, row-major `[p, k]`.
        basis: Vec<f64>,
        /// Latent dimension `k`.
        k: usize,
    },
}

impl PriorTransform {
    /// Latent dimension `k`.
    pub fn latent_dim(&self) -> usize {
        match self {
            PriorTransform::Uniform { lo, .. } => lo.len(),
            PriorTransform::LogLinear { k, .. } => *k,
        }
    }

    /// Parameter dimension `p`.
    pub fn param_dim(&self) -> usize {
        match self {
            PriorTransform::Uniform { lo, .. } => lo.len(),
            PriorTransform::LogLinear { basis, k, .. } => basis.len() / k,
        }
    }

    /// `T(ξ)` for `ξ` `[batch, k]` → `[batch, p]`, differentiable in `ξ`.
    pub fn apply(&self, xi: Tensor<2>) -> Tensor<2> {
        let device = xi.device();
        match self {
            PriorTransform::Uniform { lo, hi } => {
                let p = lo.len();
                let row = |v: Vec<f64>| Tensor::<2>::from_data(TensorData::new(v, [1, p]), &device);
                let width: Vec<f64> = lo.iter().zip(hi).map(|(l, h)| h - l).collect();
                let cdf = xi
                    .mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
                    .erf()
                    .add_scalar(1.0)
                    .mul_scalar(0.5);
                cdf * row(width) + row(lo.clone())
            }
            PriorTransform::LogLinear { mean, basis, k } => {
                let p = basis.len() / k;
                let b = Tensor::<2>::from_data(TensorData::new(basis.clone(), [p, *k]), &device);
                xi.matmul(b.transpose()).add_scalar(*mean).exp()
            }
        }
    }
}
