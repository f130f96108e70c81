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
}

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
/// with σ fixed, one learned global σ, or heteroscedastic σ_i from the decoder.
#[derive(Module, Debug)]
pub struct GaussianLikelihood {
    /// `log σ` when learned globally, `[1]`.
    pub log_sigma: Option<Param<Tensor<1>>>,
    /// Fixed σ (ignored unless `noise` is `Fixed`).
    pub sigma: f64,
    /// Noise model.
    #[module(skip)]
    pub noise: NoiseModel,
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
                let log_sigma = match c.noise {
                    NoiseModel::LearnedGlobal => Some(Param::from_tensor(Tensor::from_data(
                        [c.sigma.ln()],
                        device,
                    ))),
                    _ => None,
                };
                Likelihood::Gaussian(GaussianLikelihood {
                    log_sigma,
                    sigma: c.sigma,
                    noise: c.noise,
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

    /// Per-datum noise standard deviation for Gaussian likelihoods, `[particles, batch, d]`
    /// (`None` for Bernoulli).
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
                })
            }
        }
    }

    /// The current global σ, if there is one (fixed or learned).
    pub fn global_sigma(&self) -> Option<f64> {
        match self {
            Likelihood::Gaussian(g) => match (&g.log_sigma, g.noise) {
                (Some(ls), _) => Some(ls.val().into_data().try_into_vec_as::<f64>().ok()?[0].exp()),
                (None, NoiseModel::Fixed) => Some(g.sigma),
                _ => None,
            },
            Likelihood::Bernoulli(_) => None,
        }
    }
}

enum LogVar {
    Scalar(f64),
    Global(Tensor<1>),
    PerDatum(Tensor<3>),
}

impl GaussianLikelihood {
    fn split(&self, params: Tensor<3>, d: usize) -> (Tensor<3>, LogVar) {
        let [s, b, _] = params.dims();
        match self.noise {
            NoiseModel::Fixed => (params, LogVar::Scalar(2.0 * self.sigma.ln())),
            NoiseModel::LearnedGlobal => {
                let ls = self
                    .log_sigma
                    .as_ref()
                    .expect("learned σ has a parameter")
                    .val();
                (params, LogVar::Global(ls.mul_scalar(2.0)))
            }
            NoiseModel::Heteroscedastic => (
                params.clone().slice([0..s, 0..b, 0..d]),
                LogVar::PerDatum(params.slice([0..s, 0..b, d..2 * d])),
            ),
        }
    }
}
