//! Non-amortised Gaussian posteriors `q(z)` for Bayes VI (primer eqs. 10–12): one set of
//! variational parameters for one data set, fitted by maximising the ELBO
//! `E_q[log p(y | z)] − KL(q(z) ‖ p(z))` (e.g. with `varphi_losses::Elbo::forward`).

use crate::distributions::{DiagGaussian, FullGaussian, VariationalFamily};
use burn::module::Param;
use burn::prelude::*;

/// The Gaussian family of a [`GaussianPosterior`].
#[derive(Config, Debug, Copy, PartialEq)]
pub enum GaussianFamily {
    /// `N(μ, diag σ²)`: `2d` parameters. Under the reverse KL it finds the exact mean of a
    /// Gaussian target and the variances `1/Λ_ii` (Λ the target's precision), which
    /// under-state the marginal variances `Σ_ii` when the target is correlated.
    MeanField,
    /// `N(μ, LLᵀ)` with a lower-triangular `L` (positive diagonal through `exp`): `d + d²`
    /// parameters, exact for Gaussian targets.
    FullCovariance,
    /// `N(μ, BBᵀ + diag σ²)` with `B: [d, rank]`: `d(rank + 2)` parameters, the usual choice
    /// for high-dimensional fields (correlations along a few directions). Evaluated through the
    /// Cholesky factor of the `d × d` covariance ([`cholesky`], `O(d³)` per step, fine for `d`
    /// up to a few hundred); exact for Gaussian targets whose covariance has that form (any
    /// 2 × 2 covariance is rank 1 + diagonal).
    LowRank {
        /// Columns of `B`.
        rank: usize,
    },
}

/// Configuration of a [`GaussianPosterior`].
#[derive(Config, Debug)]
pub struct GaussianPosteriorConfig {
    /// Dimension of `z`.
    pub dim: usize,
    /// Family.
    #[config(default = "GaussianFamily::FullCovariance")]
    pub family: GaussianFamily,
    /// Initial `log σ` of every component (the mean starts at 0).
    #[config(default = 0.0)]
    pub init_log_std: f64,
}

/// Variational parameters of a non-amortised Gaussian `q(z)`.
#[derive(Module, Debug)]
pub struct GaussianPosterior {
    /// `μ`, `[1, d]`.
    pub mean: Param<Tensor<2>>,
    /// Mean field: `log σ²`, `[1, d]`. Full covariance: unconstrained `L`, `[d, d]` (strict
    /// lower triangle as is, diagonal through `exp`). Low rank: `[B | log σ²]`, `[d, rank + 1]`.
    pub raw: Param<Tensor<2>>,
    /// Family.
    #[module(skip)]
    pub family: GaussianFamily,
}

impl GaussianPosteriorConfig {
    /// Build `q(z)` with mean 0 and standard deviation `exp(init_log_std)` per component.
    pub fn init(&self, device: &Device) -> GaussianPosterior {
        let d = self.dim;
        let raw = match self.family {
            GaussianFamily::MeanField => {
                Tensor::<2>::zeros([1, d], device).add_scalar(2.0 * self.init_log_std)
            }
            GaussianFamily::FullCovariance => {
                Tensor::<2>::eye(d, device).mul_scalar(self.init_log_std)
            }
            GaussianFamily::LowRank { rank } => {
                assert!(rank >= 1, "GaussianFamily::LowRank needs rank ≥ 1");
                // B starts small but not zero (at B = 0 the gradient w.r.t. B vanishes), with
                // a fixed pattern so that fits are reproducible.
                let b0 = 0.1 * self.init_log_std.exp();
                let v: Vec<f64> = (0..d)
                    .flat_map(|i| {
                        (0..=rank).map(move |k| {
                            if k == rank {
                                2.0 * self.init_log_std
                            } else {
                                b0 * ((i + 1) as f64 * (k + 1) as f64).cos()
                            }
                        })
                    })
                    .collect();
                Tensor::<2>::from_data(TensorData::new(v, [d, rank + 1]), device)
            }
        };
        GaussianPosterior {
            mean: Param::from_tensor(Tensor::zeros([1, d], device)),
            raw: Param::from_tensor(raw),
            family: self.family,
        }
    }
}

/// Lower Cholesky factor `L` of a symmetric positive-definite `a: [d, d]` (`a = LLᵀ`), by the
/// left-looking column algorithm in tensor ops, so autodiff differentiates through it (`O(d³)`
/// work, `≈ 6d` tensor ops). A non-positive pivot gives NaN.
pub fn cholesky(a: Tensor<2>) -> Tensor<2> {
    let [d, d2] = a.dims();
    assert_eq!(
        d,
        d2,
        "cholesky: the matrix must be square, got {:?}",
        a.dims()
    );
    let device = a.device();
    let mut cols: Vec<Tensor<2>> = Vec::with_capacity(d);
    for j in 0..d {
        let mut v = a.clone().slice([j..d, j..j + 1]); // [d − j, 1]
        if j > 0 {
            let l = Tensor::cat(cols.clone(), 1); // [d, j]
            let below = l.clone().slice([j..d, 0..j]);
            let row = l.slice([j..j + 1, 0..j]);
            v = v - below.matmul(row.transpose());
        }
        // v / √v₀: the diagonal entry √v₀ and the column below it at once.
        let col = v.clone() / v.slice([0..1, 0..1]).sqrt();
        cols.push(if j > 0 {
            Tensor::cat(vec![Tensor::zeros([j, 1], &device), col], 0)
        } else {
            col
        });
    }
    Tensor::cat(cols, 1)
}

/// A [`GaussianPosterior`] evaluated: either family behind one [`VariationalFamily`].
#[derive(Debug, Clone)]
pub enum GaussianQ {
    /// Mean field.
    Diag(DiagGaussian),
    /// Full covariance.
    Full(FullGaussian),
}

impl GaussianPosterior {
    /// The distribution, `batch = 1`.
    pub fn forward(&self) -> GaussianQ {
        let mean = self.mean.val();
        match self.family {
            GaussianFamily::MeanField => GaussianQ::Diag(DiagGaussian::new(mean, self.raw.val())),
            GaussianFamily::FullCovariance => GaussianQ::Full(FullGaussian::from_unconstrained(
                mean,
                self.raw.val().unsqueeze::<3>(),
            )),
            GaussianFamily::LowRank { rank } => {
                let [d, _] = self.raw.dims();
                let raw = self.raw.val();
                let b = raw.clone().narrow(1, 0, rank);
                let var = raw.narrow(1, rank, 1).exp(); // [d, 1]
                let cov =
                    b.clone().matmul(b.transpose()) + Tensor::<2>::eye(d, &mean.device()) * var;
                GaussianQ::Full(FullGaussian::new(mean, cholesky(cov).unsqueeze::<3>()))
            }
        }
    }

    /// The covariance matrix `[d, d]`.
    pub fn covariance(&self) -> Tensor<2> {
        match self.forward() {
            GaussianQ::Diag(q) => {
                let d = q.mean.dims()[1];
                Tensor::<2>::eye(d, &q.mean.device()) * q.log_var.exp()
            }
            GaussianQ::Full(q) => {
                let [_, d, _] = q.scale_tril.dims();
                let l = q.scale_tril.reshape([d, d]);
                l.clone().matmul(l.transpose())
            }
        }
    }
}

impl VariationalFamily for GaussianQ {
    fn dims(&self) -> [usize; 2] {
        match self {
            GaussianQ::Diag(q) => q.dims(),
            GaussianQ::Full(q) => q.dims(),
        }
    }
    fn rsample(&self, eps: Tensor<3>) -> Tensor<3> {
        match self {
            GaussianQ::Diag(q) => q.rsample(eps),
            GaussianQ::Full(q) => q.rsample(eps),
        }
    }
    fn log_prob(&self, z: Tensor<3>) -> Tensor<2> {
        match self {
            GaussianQ::Diag(q) => q.log_prob(z),
            GaussianQ::Full(q) => q.log_prob(z),
        }
    }
    fn entropy(&self) -> Tensor<1> {
        match self {
            GaussianQ::Diag(q) => q.entropy(),
            GaussianQ::Full(q) => q.entropy(),
        }
    }
    fn kl_to_diag(&self, prior: &DiagGaussian) -> Tensor<1> {
        match self {
            GaussianQ::Diag(q) => q.kl_to_diag(prior),
            GaussianQ::Full(q) => q.kl_to_diag(prior),
        }
    }
    fn mean(&self) -> Tensor<2> {
        match self {
            GaussianQ::Diag(q) => q.mean.clone(),
            GaussianQ::Full(q) => q.mean.clone(),
        }
    }
}
