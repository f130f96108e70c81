//! Observation likelihoods `p(x | θ)` where θ are the decoder's outputs.

use burn::module::Param;
use burn::prelude::*;
use varphi_models::Bernoulli;
use varphi_models::distributions::LN_2PI;

/// How the Gaussian noise scale σ is set.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum NoiseModel {
    /// σ fixed to `GaussianLikelihoodConfig::sigma`.
    Fixed,
    /// One global σ, learned (initialised at `sigma`), stored as `log σ`.
    LearnedGlobal,
    /// Per-datum σ predicted by the decoder: the decoder emits `[μ, log σ²]`.
    Heteroscedastic,
    /// One learned σ_i per output entry (node), shared by every datum (initialised at
    /// `sigma`; needs `GaussianLikelihoodConfig::dim`): σ that varies over the field — a
    /// Dirichlet boundary, a peak — without a variance head that can overfit.
    PerNode,
}

/// Configuration of a [`GaussianLikelihood`].
#[derive(Config, Debug)]
pub struct GaussianLikelihoodConfig {
    /// Noise scale σ (the fixed value, or the initial value if learned).
    #[config(default = 0.1)]
    pub sigma: f64,
    /// How σ is set.
    #[config(default = "NoiseModel::Fixed")]
    pub noise: NoiseModel,
    /// Entries per datum `d` (required by [`NoiseModel::PerNode`]).
    #[config(default = "None")]
    pub dim: Option<usize>,
    /// Student-t tails with `ν = dof` degrees of freedom and scale σ (`None`: Gaussian).
    #[config(default = "None")]
    pub dof: Option<usize>,
}

/// The gain of a learned σ: `log σ = log sigma + SIGMA_GAIN·κ` ([`GaussianLikelihood::kappa`]).
pub const SIGMA_GAIN: f64 = 10.0;

/// Which likelihood to build.
#[derive(Config, Debug)]
pub enum LikelihoodConfig {
    /// Gaussian `N(x; μ, σ²)`.
    Gaussian(GaussianLikelihoodConfig),
    /// Bernoulli with logits (data in `[0, 1]`).
    Bernoulli,
}

/// Gaussian likelihood
///
/// ```text
/// log p(x | μ, σ) = −½ Σ_i [ (x_i − μ_i)² / σ_i² + log σ_i² + log 2π ]
/// ```
/// with σ fixed, one learned global σ, one learned σ_i per entry shared by all data, or
/// heteroscedastic σ_i from the decoder.
#[derive(Module, Debug)]
pub struct GaussianLikelihood {
    /// `κ` of a learned σ, `log σ = log sigma + SIGMA_GAIN·κ` (`[1]` globally, `[d]` per node;
    /// starts at 0). The gain lets Adam, whose steps are ~lr in the parameter whatever the
    /// gradient's size, move `log σ` by orders of magnitude within a run: unscaled, the heavy
    /// tails of per-batch σ-gradients (a few badly fitted data) held it near its start.
    pub kappa: Option<Param<Tensor<1>>>,
    /// Fixed σ (ignored unless `noise` is `Fixed`).
    pub sigma: f64,
    /// Noise model.
    #[module(skip)]
    pub noise: NoiseModel,
    /// Student-t degrees of freedom `ν` (`None`: Gaussian); σ is then the scale.
    #[module(skip)]
    pub dof: Option<usize>,
}

/// Bernoulli likelihood on logits; see [`Bernoulli`].
#[derive(Module, Debug, Default)]
pub struct BernoulliLikelihood;

/// A likelihood module (learned σ is a parameter, so it trains with the model).
#[derive(Module, Debug)]
pub enum Likelihood {
    /// Gaussian.
    Gaussian(GaussianLikelihood),
    /// Bernoulli.
    Bernoulli(BernoulliLikelihood),
}

impl LikelihoodConfig {
    /// Build the likelihood.
    pub fn init(&self, device: &Device) -> Likelihood {
        match self {
            LikelihoodConfig::Gaussian(c) => {
                assert!(
                    c.sigma > 0.0,
                    "GaussianLikelihoodConfig.sigma must be > 0, got {}",
                    c.sigma
                );
                let kappa = match c.noise {
                    NoiseModel::LearnedGlobal => {
                        Some(Param::from_tensor(Tensor::<1>::zeros([1], device)))
                    }
                    NoiseModel::PerNode => {
                        let d = c.dim.expect(
                            "GaussianLikelihoodConfig.dim is required by NoiseModel::PerNode",
                        );
                        Some(Param::from_tensor(Tensor::<1>::zeros([d], device)))
                    }
                    _ => None,
                };
                if let Some(nu) = c.dof {
                    assert!(
                        nu >= 1,
                        "GaussianLikelihoodConfig.dof must be ≥ 1, got {nu}"
                    );
                }
                Likelihood::Gaussian(GaussianLikelihood {
                    kappa,
                    sigma: c.sigma,
                    noise: c.noise,
                    dof: c.dof,
                })
            }
            LikelihoodConfig::Bernoulli => Likelihood::Bernoulli(BernoulliLikelihood),
        }
    }

    /// Decoder outputs per datum: 2 for heteroscedastic Gaussians (`μ`, `log σ²`), else 1.
    pub fn params_per_datum(&self) -> usize {
        match self {
            LikelihoodConfig::Gaussian(c) if c.noise == NoiseModel::Heteroscedastic => 2,
            _ => 1,
        }
    }
}

impl Likelihood {
    /// Decoder outputs per datum.
    pub fn params_per_datum(&self) -> usize {
        match self {
            Likelihood::Gaussian(g) if g.noise == NoiseModel::Heteroscedastic => 2,
            _ => 1,
        }
    }

    /// `log p(x | θ)` summed over data dimensions.
    ///
    /// # Shapes
    /// `x: [batch, d]`, `params: [particles, batch, k·d]` (k = [`params_per_datum`]),
    /// returns `[particles, batch]`.
    ///
    /// [`params_per_datum`]: Likelihood::params_per_datum
    pub fn log_prob(&self, x: Tensor<2>, params: Tensor<3>) -> Tensor<2> {
        let [b, d] = x.dims();
        let [s, pb, pd] = params.dims();
        let k = self.params_per_datum();
        assert!(
            pb == b && pd == k * d,
            "Likelihood::log_prob: params [particles, batch, k·d] = {:?} does not match x {:?} (k = {k})",
            [s, pb, pd],
            [b, d]
        );
        match self {
            Likelihood::Bernoulli(_) => Bernoulli::new(params).log_prob(x),
            Likelihood::Gaussian(g) if g.dof.is_some() => {
                let nu = g.dof.expect("guarded") as f64;
                let (mean, log_var) = g.split(params, d);
                let sq = (x.unsqueeze::<3>() - mean).powi_scalar(2);
                let device = sq.device();
                // r² = (x − μ)²/σ² per entry and Σ_i log σ_i² per datum.
                let (r2, sum_lv) = match log_var {
                    LogVar::Scalar(lv) => (
                        sq.mul_scalar((-lv).exp()),
                        Tensor::<2>::full([1, 1], d as f64 * lv, &device),
                    ),
                    LogVar::Global(lv) => (
                        sq * lv.clone().neg().exp().reshape([1, 1, 1]),
                        lv.reshape([1, 1]).mul_scalar(d as f64),
                    ),
                    LogVar::PerDatum(lv) => (
                        sq * lv.clone().neg().exp(),
                        lv.sum_dim(2).squeeze_dim::<2>(2),
                    ),
                    LogVar::PerNode(lv) => {
                        let lv = lv.reshape([1, 1, d]);
                        (sq * lv.clone().neg().exp(), lv.sum().reshape([1, 1]))
                    }
                };
                let c = ln_gamma_half(nu + 1.0)
                    - ln_gamma_half(nu)
                    - 0.5 * (nu * std::f64::consts::PI).ln();
                r2.div_scalar(nu)
                    .log1p()
                    .sum_dim(2)
                    .squeeze_dim::<2>(2)
                    .mul_scalar(-(nu + 1.0) / 2.0)
                    - sum_lv.mul_scalar(0.5)
                    + d as f64 * c
            }
            Likelihood::Gaussian(g) => {
                let (mean, log_var) = g.split(params, d);
                let x = x.unsqueeze::<3>();
                let quad = match log_var {
                    LogVar::Scalar(lv) => (x - mean)
                        .powi_scalar(2)
                        .sum_dim(2)
                        .squeeze_dim::<2>(2)
                        .mul_scalar((-lv).exp())
                        .add_scalar(d as f64 * lv),
                    LogVar::Global(lv) => {
                        // lv: [1]; keep it in the graph.
                        let inv = lv.clone().neg().exp().reshape([1, 1]);
                        (x - mean).powi_scalar(2).sum_dim(2).squeeze_dim::<2>(2) * inv
                            + lv.reshape([1, 1]).mul_scalar(d as f64)
                    }
                    LogVar::PerDatum(lv) => ((x - mean).powi_scalar(2) * lv.clone().neg().exp()
                        + lv)
                        .sum_dim(2)
                        .squeeze_dim::<2>(2),
                    LogVar::PerNode(lv) => {
                        let lv = lv.reshape([1, 1, d]);
                        ((x - mean).powi_scalar(2) * lv.clone().neg().exp())
                            .sum_dim(2)
                            .squeeze_dim::<2>(2)
                            + lv.sum().reshape([1, 1])
                    }
                };
                quad.add_scalar(d as f64 * LN_2PI).mul_scalar(-0.5)
            }
        }
    }

    /// The likelihood's mean `E[x | θ]`: μ for Gaussians, `sigmoid(logits)` for Bernoulli.
    /// `params: [particles, batch, k·d]` → `[particles, batch, d]`.
    pub fn mean(&self, params: Tensor<3>) -> Tensor<3> {
        match self {
            Likelihood::Bernoulli(_) => Bernoulli::new(params).probs(),
            Likelihood::Gaussian(g) => {
                let d = params.dims()[2] / self.params_per_datum();
                g.split(params, d).0
            }
        }
    }

    /// Per-datum noise scale σ (the standard deviation of a Gaussian, the scale of a
    /// Student-t), `[particles, batch, d]` (`None` for Bernoulli).
    pub fn std(&self, params: Tensor<3>) -> Option<Tensor<3>> {
        match self {
            Likelihood::Bernoulli(_) => None,
            Likelihood::Gaussian(g) => {
                let d = params.dims()[2] / self.params_per_datum();
                let (mean, lv) = g.split(params, d);
                Some(match lv {
                    LogVar::Scalar(lv) => mean.ones_like().mul_scalar((0.5 * lv).exp()),
                    LogVar::Global(lv) => {
                        mean.ones_like() * lv.mul_scalar(0.5).exp().reshape([1, 1, 1])
                    }
                    LogVar::PerDatum(lv) => lv.mul_scalar(0.5).exp(),
                    LogVar::PerNode(lv) => {
                        mean.ones_like() * lv.mul_scalar(0.5).exp().reshape([1, 1, d])
                    }
                })
            }
        }
    }

    /// A draw of the observation noise `x − μ`, `[particles, batch, d]` (`None` for
    /// Bernoulli): `σ ε` for a Gaussian, `σ ε / √(χ²_ν / ν)` with `χ²_ν = Σ_{j=1..ν} ε_j²` for
    /// Student-t, from standard normals `normals(j)` shaped like the mean (`j = 0`: ε; `1..=ν`:
    /// the χ² draws).
    pub fn noise(
        &self,
        params: Tensor<3>,
        mut normals: impl FnMut(usize) -> Tensor<3>,
    ) -> Option<Tensor<3>> {
        let scale = self.std(params)?;
        let eps = normals(0);
        Some(match self {
            Likelihood::Gaussian(GaussianLikelihood { dof: Some(nu), .. }) => {
                let chi2 = (1..=*nu)
                    .map(|j| normals(j).powi_scalar(2))
                    .reduce(|a, b| a + b)
                    .expect("ν ≥ 1");
                scale * eps / chi2.div_scalar(*nu as f64).sqrt()
            }
            _ => scale * eps,
        })
    }

    /// The current global σ, if there is one (fixed or learned).
    pub fn global_sigma(&self) -> Option<f64> {
        match self {
            Likelihood::Gaussian(g) => match (&g.kappa, g.noise) {
                (_, NoiseModel::PerNode) => None,
                (Some(_), _) => {
                    Some(g.log_sigma()?.into_data().try_into_vec_as::<f64>().ok()?[0].exp())
                }
                (None, NoiseModel::Fixed) => Some(g.sigma),
                _ => None,
            },
            Likelihood::Bernoulli(_) => None,
        }
    }
}

/// `ln Γ(n / 2)` for a positive integer `n` (exact recursion from `Γ(½) = √π`, `Γ(1) = 1`).
fn ln_gamma_half(n: f64) -> f64 {
    let n = n.round() as usize;
    let (mut x, mut acc) = if n % 2 == 0 {
        (1.0, 0.0)
    } else {
        (0.5, 0.5 * std::f64::consts::PI.ln())
    };
    while x < n as f64 / 2.0 - 0.25 {
        acc += x.ln();
        x += 1.0;
    }
    acc
}

enum LogVar {
    Scalar(f64),
    Global(Tensor<1>),
    PerDatum(Tensor<3>),
    PerNode(Tensor<1>),
}

impl GaussianLikelihood {
    /// The learned `log σ` (`[1]` or `[d]`), `None` unless σ is learned.
    pub fn log_sigma(&self) -> Option<Tensor<1>> {
        self.kappa
            .as_ref()
            .map(|k| k.val().mul_scalar(SIGMA_GAIN).add_scalar(self.sigma.ln()))
    }

    fn split(&self, params: Tensor<3>, d: usize) -> (Tensor<3>, LogVar) {
        let [s, b, _] = params.dims();
        match self.noise {
            NoiseModel::Fixed => (params, LogVar::Scalar(2.0 * self.sigma.ln())),
            NoiseModel::LearnedGlobal => {
                let ls = self.log_sigma().expect("learned σ has a parameter");
                (params, LogVar::Global(ls.mul_scalar(2.0)))
            }
            NoiseModel::Heteroscedastic => (
                params.clone().slice([0..s, 0..b, 0..d]),
                LogVar::PerDatum(params.slice([0..s, 0..b, d..2 * d])),
            ),
            NoiseModel::PerNode => {
                let ls = self.log_sigma().expect("per-node σ has a parameter");
                assert_eq!(
                    ls.dims()[0],
                    d,
                    "GaussianLikelihood: per-node σ has {} entries, the data {d}",
                    ls.dims()[0]
                );
                (params, LogVar::PerNode(ls.mul_scalar(2.0)))
            }
        }
    }
}
