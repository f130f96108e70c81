use super::{DiagGaussian, LN_2PI, VariationalFamily};
use burn::prelude::*;

/// A batch of full-covariance Gaussians `N(mean, L Lᵀ)` with lower-triangular Cholesky factor
/// `L` (positive diagonal).
///
/// # Shapes
/// `mean: [batch, dim]`, `scale_tril: [batch, dim, dim]`.
///
/// ```text
/// z = μ + L ε
/// log N(z; μ, LLᵀ) = −½ ‖L⁻¹(z − μ)‖² − Σ_i log L_ii − (d/2) log 2π
/// H                = Σ_i log L_ii + (d/2)(1 + log 2π)
/// KL(q ‖ N(m, diag s²)) = ½ [ Σ_ij L_ij² / s_i² + Σ_i (μ_i − m_i)² / s_i² − d
///                             + Σ_i log s_i² − 2 Σ_i log L_ii ]
/// ```
#[derive(Debug, Clone)]
pub struct FullGaussian {
    /// Means, `[batch, dim]`.
    pub mean: Tensor<2>,
    /// Lower-triangular Cholesky factors with positive diagonal, `[batch, dim, dim]`.
    pub scale_tril: Tensor<3>,
}

impl FullGaussian {
    /// A Gaussian from its mean and Cholesky factor. The factor's upper triangle is ignored.
    pub fn new(mean: Tensor<2>, scale_tril: Tensor<3>) -> Self {
        let [b, d] = mean.dims();
        assert_eq!(
            scale_tril.dims(),
            [b, d, d],
            "FullGaussian: scale_tril must be [batch, dim, dim] = {:?}, got {:?}",
            [b, d, d],
            scale_tril.dims()
        );
        Self {
            mean,
            scale_tril: scale_tril.tril(0),
        }
    }

    /// A Gaussian from an unconstrained square matrix: strictly-lower part kept as is, diagonal
    /// mapped through `exp` so it is positive. This is the parameterisation to optimise.
    pub fn from_unconstrained(mean: Tensor<2>, raw: Tensor<3>) -> Self {
        let [b, d, _] = raw.dims();
        let device = raw.device();
        let eye = Tensor::<2>::eye(d, &device)
            .unsqueeze::<3>()
            .expand([b, d, d]);
        let strict = raw.clone().tril(-1);
        let diag = (raw * eye.clone()).sum_dim(2).exp(); // [b, d, 1]
        Self::new(mean, strict + eye * diag)
    }

    /// Diagonal of `L`, `[batch, dim]`.
    pub fn diag(&self) -> Tensor<2> {
        let [b, d, _] = self.scale_tril.dims();
        let eye = Tensor::<2>::eye(d, &self.scale_tril.device())
            .unsqueeze::<3>()
            .expand([b, d, d]);
        (self.scale_tril.clone() * eye)
            .sum_dim(2)
            .squeeze_dim::<2>(2)
    }

    /// Covariance `L Lᵀ`, `[batch, dim, dim]`.
    pub fn covariance(&self) -> Tensor<3> {
        self.scale_tril
            .clone()
            .matmul(self.scale_tril.clone().swap_dims(1, 2))
    }

    /// Solve `L y = r` for `r: [batch, dim, k]` by forward substitution (differentiable).
    pub fn solve_tril(&self, r: Tensor<3>) -> Tensor<3> {
        let [b, d, k] = r.dims();
        let mut rows: Vec<Tensor<3>> = Vec::with_capacity(d);
        for i in 0..d {
            let mut acc = r.clone().slice([0..b, i..i + 1, 0..k]);
            if i > 0 {
                let l_row = self.scale_tril.clone().slice([0..b, i..i + 1, 0..i]); // [b,1,i]
                let prev = Tensor::cat(rows.clone(), 1); // [b,i,k]
                acc = acc - l_row.matmul(prev);
            }
            let l_ii = self.scale_tril.clone().slice([0..b, i..i + 1, i..i + 1]);
            rows.push(acc / l_ii);
        }
        Tensor::cat(rows, 1)
    }

    /// `Σ_i log L_ii`, `[batch]` (half the log-determinant of the covariance).
    pub fn half_log_det(&self) -> Tensor<1> {
        self.diag().log().sum_dim(1).squeeze_dim::<1>(1)
    }
}

impl VariationalFamily for FullGaussian {
    fn dims(&self) -> [usize; 2] {
        self.mean.dims()
    }

    fn rsample(&self, eps: Tensor<3>) -> Tensor<3> {
        // eps [S, b, d] -> [b, d, S]; z = μ + L ε
        let e = eps.permute([1, 2, 0]);
        let le = self.scale_tril.clone().matmul(e).permute([2, 0, 1]);
        self.mean.clone().unsqueeze::<3>() + le
    }

    fn log_prob(&self, z: Tensor<3>) -> Tensor<2> {
        let [_, _, d] = z.dims();
        let r = (z - self.mean.clone().unsqueeze::<3>()).permute([1, 2, 0]); // [b, d, S]
        let y = self.solve_tril(r);
        let quad = y.powi_scalar(2).sum_dim(1).squeeze_dim::<2>(1); // [b, S]
        let hld = self.half_log_det().unsqueeze_dim::<2>(1); // [b, 1]
        (quad.mul_scalar(-0.5) - hld)
            .sub_scalar(0.5 * d as f64 * LN_2PI)
            .swap_dims(0, 1)
    }

    fn entropy(&self) -> Tensor<1> {
        let [_, d] = self.mean.dims();
        self.half_log_det()
            .add_scalar(0.5 * d as f64 * (1.0 + LN_2PI))
    }

    fn kl_to_diag(&self, prior: &DiagGaussian) -> Tensor<1> {
        let [_, d] = self.mean.dims();
        let inv_var_p = prior.log_var.clone().neg().exp(); // [b, d]
        let tr = (self.scale_tril.clone().powi_scalar(2) * inv_var_p.clone().unsqueeze_dim::<3>(2))
            .sum_dim(2)
            .sum_dim(1)
            .reshape([self.mean.dims()[0]]);
        let maha = ((self.mean.clone() - prior.mean.clone()).powi_scalar(2) * inv_var_p)
            .sum_dim(1)
            .squeeze_dim::<1>(1);
        let log_det_p = prior.log_var.clone().sum_dim(1).squeeze_dim::<1>(1);
        (tr + maha + log_det_p - self.half_log_det().mul_scalar(2.0))
            .sub_scalar(d as f64)
            .mul_scalar(0.5)
    }

    fn mean(&self) -> Tensor<2> {
        self.mean.clone()
    }
}
