//! The latent-variable model of the `vae` and `cvae` kinds: its network and objective config
//! sections, the trained module ([`GenerativeModel`]), the objective ([`ElboObjective`]: the
//! ELBO and the other bounds of `[objective] bound`, free bits, the score-function estimator,
//! the MMD term, and a CVAE surrogate's PDE residual), and the evaluation, plot and sampling
//! steps both kinds share.

use crate::calibration::Role;
use crate::config::{
    ActivationName, FnoSection, check_conv, check_hidden, d_activation, d_channels, d_hidden,
    d_kernel, invalid,
};
use crate::data::{DataShape, RunData, TrainData, XScaling};
use crate::error::{TrainError, io_err};
use crate::host::{mean_of, rows};
use crate::noise::{NoiseSource, RowWindow, Stream};
use crate::physics_term::PhysicsTerm;
use crate::plots;
use crate::trainer::{self, Objective, StepOutput};
use crate::uq::UqScores;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use varphi_losses::{
    Elbo, ElboConfig, ElboOutput, GaussianLikelihoodConfig, KlEstimator, Likelihood,
    LikelihoodConfig, NoiseModel, RenyiBound, ResidualLikelihood, free_bits_kl, mmd2,
    score_function_surrogate,
};
use varphi_models::{
    Activation, AmortisedQ, ConvDecoderConfig, ConvEncoderConfig, Cvae, DecoderConfig,
    DiagGaussian, EncoderConfig, FnoDecoderConfig, LatentVariableModel, MlpDecoderConfig,
    MlpEncoderConfig, PosteriorFlowConfig, Vae, VariationalFamily,
};

/// Network architecture of a (C)VAE encoder or decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetName {
    /// Dense network on the flattened sample.
    Mlp,
    /// Convolutions over the sample's grid (1-D or 2-D, channels first).
    Conv,
    /// Decoder only: a Fourier neural operator on the grid of a condition *field* (the
    /// condition is a field on the sample's grid; `z` is broadcast to every node), shaped by
    /// `[model.fno]`.
    Fno,
}

/// The amortised posterior family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PosteriorName {
    /// The encoder's diagonal Gaussian.
    Gaussian,
    /// A RealNVP flow (`flow_layers` couplings, `hidden` widths, LU mixing) on top of the
    /// encoder's Gaussian, conditioned on its mean and log-variance; the KL is estimated by
    /// Monte Carlo.
    Flow,
}

/// The networks of a (C)VAE (`[model]` of `vae`; of `cvae` with `prior`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSection {
    /// Latent dimension.
    #[serde(default = "d_latent")]
    pub latent_dim: usize,
    /// Encoder architecture.
    #[serde(default = "d_net")]
    pub encoder: NetName,
    /// Decoder architecture.
    #[serde(default = "d_net")]
    pub decoder: NetName,
    /// Hidden widths of dense layers.
    #[serde(default = "d_hidden")]
    pub hidden: Vec<usize>,
    /// Convolution channels (encoder: stride-2 layers; decoder: feature map then hidden).
    #[serde(default = "d_channels")]
    pub channels: Vec<usize>,
    /// Odd kernel size of convolutions.
    #[serde(default = "d_kernel")]
    pub kernel: usize,
    /// Activation: relu, tanh, sin, softplus, gelu, silu.
    #[serde(default = "d_activation")]
    pub activation: ActivationName,
    /// Amortised posterior: `gaussian` or `flow`.
    #[serde(default = "d_posterior")]
    pub posterior: PosteriorName,
    /// Coupling layers of a flow posterior.
    #[serde(default = "d_flow_layers")]
    pub flow_layers: usize,
    /// Shape of the Fourier neural operator (`decoder = "fno"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fno: Option<FnoSection>,
}

fn d_latent() -> usize {
    8
}
fn d_net() -> NetName {
    NetName::Mlp
}
fn d_posterior() -> PosteriorName {
    PosteriorName::Gaussian
}
/// The default number of coupling layers of a flow.
pub fn d_flow_layers() -> usize {
    6
}

impl NetSection {
    /// Range checks (`monte_carlo_kl`: whether the objective estimates the KL by sampling).
    pub fn validate(&self, monte_carlo_kl: bool) -> Result<(), TrainError> {
        if self.latent_dim == 0 {
            return Err(invalid("model.latent_dim", "must be at least 1"));
        }
        if self.encoder == NetName::Fno {
            return Err(invalid(
                "model.encoder",
                "\"fno\" is a decoder (it maps a condition field to the sample's field); use \"mlp\" or \"conv\"",
            ));
        }
        check_hidden(&self.hidden)?;
        check_conv(&self.channels, self.kernel)?;
        if self.posterior == PosteriorName::Flow {
            if self.latent_dim < 2 {
                return Err(invalid(
                    "model.latent_dim",
                    "a flow posterior needs latent_dim ≥ 2 (a 1-D flow is a monotone map a Gaussian with learned mean and variance nearly covers)",
                ));
            }
            if !monte_carlo_kl {
                return Err(invalid(
                    "objective.kl",
                    "a flow posterior has no closed-form KL: set kl = \"monte-carlo\" (or bound = \"iwae\" / \"renyi\")",
                ));
            }
            if self.flow_layers == 0 {
                return Err(invalid("model.flow_layers", "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Convolutions need a grid; an FNO decoder needs a condition field on the sample's grid
    /// (`d_cond`: the condition columns the model takes, 0 for a `vae`).
    pub fn check_shape(&self, shape: &DataShape, d_cond: usize) -> Result<(), TrainError> {
        if self.decoder == NetName::Fno {
            let conditioned = DataShape {
                sample_shape: shape.sample_shape.clone(),
                cond_dim: d_cond,
            };
            if let Some(e) = conditioned.same_grid_error("fno") {
                return Err(invalid("model.decoder", e));
            }
            self.decoder_fno(shape, d_cond, 2)?;
        }
        let uses_conv = self.encoder == NetName::Conv || self.decoder == NetName::Conv;
        if uses_conv && shape.conv_shape().is_none() {
            return Err(invalid(
                if self.encoder == NetName::Conv {
                    "model.encoder"
                } else {
                    "model.decoder"
                },
                format!(
                    "convolutions need samples shaped [L], [C, L] or [C, H, W]; the data have shape {:?} (use \"mlp\")",
                    shape.sample_shape
                ),
            ));
        }
        Ok(())
    }

    /// The flow on top of the encoder's Gaussian (`posterior = "flow"`).
    pub fn flow(&self) -> Option<PosteriorFlowConfig> {
        (self.posterior == PosteriorName::Flow).then(|| {
            PosteriorFlowConfig::new()
                .with_layers(self.flow_layers)
                .with_hidden(self.hidden.clone())
        })
    }

    /// The encoder for data of `shape` with `d_cond` condition columns.
    pub fn encoder(&self, shape: &DataShape, d_cond: usize) -> EncoderConfig {
        let act: Activation = self.activation.into();
        match (self.encoder, shape.conv_shape()) {
            (NetName::Conv, Some(grid)) => EncoderConfig::Conv(
                ConvEncoderConfig::new(grid, self.latent_dim)
                    .with_channels(self.channels.clone())
                    .with_hidden(self.hidden.clone())
                    .with_kernel(self.kernel)
                    .with_activation(act)
                    .with_d_cond(d_cond),
            ),
            // `check_shape` rejects conv without a grid before anything is built.
            _ => EncoderConfig::Mlp(
                MlpEncoderConfig::new(shape.features(), self.latent_dim)
                    .with_hidden(self.hidden.clone())
                    .with_activation(act)
                    .with_d_cond(d_cond),
            ),
        }
    }

    /// The FNO decoder `(z, c) ↦ k` likelihood parameters per node, or the `model.fno` error
    /// that says what does not fit.
    fn decoder_fno(
        &self,
        shape: &DataShape,
        d_cond: usize,
        k: usize,
    ) -> Result<FnoDecoderConfig, TrainError> {
        let mut grid = shape
            .conv_shape()
            .unwrap_or_else(|| vec![1, shape.features()]);
        let nodes: usize = grid[1..].iter().product();
        grid[0] = d_cond / nodes.max(1) + self.latent_dim;
        let fno = self
            .fno
            .clone()
            .unwrap_or_default()
            .network(grid, k, self.activation.into())?;
        Ok(FnoDecoderConfig::new(self.latent_dim, fno))
    }

    /// The decoder for data of `shape`, `d_cond` condition columns and `k` likelihood
    /// parameters per datum (checked by [`check_shape`](Self::check_shape) first).
    pub fn decoder(&self, shape: &DataShape, d_cond: usize, k: usize) -> DecoderConfig {
        let act: Activation = self.activation.into();
        let d_in = self.latent_dim + d_cond;
        match (self.decoder, shape.conv_shape()) {
            (NetName::Fno, _) => DecoderConfig::Fno(
                self.decoder_fno(shape, d_cond, k)
                    .expect("checked by NetSection::check_shape"),
            ),
            (NetName::Conv, Some(mut out)) => {
                out[0] *= k;
                let mut channels = self.channels.clone();
                channels.reverse();
                DecoderConfig::Conv(
                    ConvDecoderConfig::new(d_in, out)
                        .with_channels(channels)
                        .with_kernel(self.kernel)
                        .with_activation(act),
                )
            }
            _ => DecoderConfig::Mlp(
                MlpDecoderConfig::new(d_in, k * shape.features())
                    .with_hidden(self.hidden.clone())
                    .with_activation(act),
            ),
        }
    }
}

/// Likelihood family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LikelihoodName {
    /// Gaussian.
    Gaussian,
    /// Student-t with `dof` degrees of freedom and scale σ: heavy tails, for errors that are
    /// small on most data and large on a few.
    StudentT,
    /// Bernoulli (data in [0, 1], no normalisation).
    Bernoulli,
}

/// Gaussian noise model names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseName {
    /// Fixed σ.
    Fixed,
    /// One learned σ.
    Learned,
    /// Decoder-predicted σ per datum.
    Heteroscedastic,
    /// One learned σ per entry (node) of the sample, shared by all data.
    PerNode,
}

/// KL estimator names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KlName {
    /// Closed form.
    Analytic,
    /// Monte Carlo.
    MonteCarlo,
}

/// The training bound (`[objective] bound`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoundName {
    /// The (β-weighted) ELBO.
    Elbo,
    /// The importance-weighted bound `L_k`, `k = n_particles` (Burda et al.).
    Iwae,
    /// The Rényi-α bound `L_α` with `k = n_particles` samples (Li & Turner; `α = 0`: IWAE,
    /// `α → 1`: the ELBO).
    Renyi,
}

/// The gradient estimator of the likelihood term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EstimatorName {
    /// Reparameterised samples `z = μ + σ ε`.
    Reparameterised,
    /// The score-function (REINFORCE) estimator with a leave-one-out baseline: the
    /// likelihood's gradient through `∇ log q(z)` only (for decoders that cannot be
    /// differentiated w.r.t. `z`); needs `n_particles ≥ 2`.
    ScoreFunction,
}

/// `[objective]` of a (C)VAE: the bound, its likelihood and its regularisers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElboSection {
    /// Likelihood family.
    #[serde(default = "d_lik")]
    pub likelihood: LikelihoodName,
    /// Gaussian σ (in normalised units when `split.normalize`).
    #[serde(default = "d_sigma")]
    pub sigma: f64,
    /// Gaussian noise model.
    #[serde(default = "d_noise")]
    pub noise: NoiseName,
    /// Degrees of freedom ν of a Student-t likelihood.
    #[serde(default = "d_dof")]
    pub dof: usize,
    /// KL weight β (ELBO).
    #[serde(default = "d_beta")]
    pub beta: f64,
    /// KL estimator (ELBO).
    #[serde(default = "d_kl")]
    pub kl: KlName,
    /// Linear KL warm-up length in steps (ELBO).
    #[serde(default)]
    pub warmup_steps: usize,
    /// Monte-Carlo particles per datum (`k` of the IWAE / Rényi bounds).
    #[serde(default = "d_particles")]
    pub n_particles: usize,
    /// The training bound: `elbo`, `iwae` or `renyi`.
    #[serde(default = "d_bound")]
    pub bound: BoundName,
    /// `α` of the Rényi bound, in `[0, 1)`.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// Free bits `λ` (ELBO with a Gaussian posterior): the KL term becomes
    /// `Σ_j max(λ, mean_batch KL_j)`, no pressure on a latent dimension below `λ` nats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bits: Option<f64>,
    /// Gradient estimator of the likelihood term (ELBO).
    #[serde(default = "d_estimator")]
    pub estimator: EstimatorName,
    /// Weight `λ` of the MMD term `λ · MMD²(q(z), p(z))` between the batch's posterior samples
    /// and prior samples (InfoVAE / PI-VAE style distribution matching; 0: off).
    #[serde(default)]
    pub mmd_weight: f64,
    /// Bandwidth `h` of the MMD's Gaussian kernel `exp(−‖x − y‖²/2h²)` (latent units).
    #[serde(default = "d_unit")]
    pub mmd_bandwidth: f64,
}

fn d_lik() -> LikelihoodName {
    LikelihoodName::Gaussian
}
fn d_sigma() -> f64 {
    0.1
}
fn d_dof() -> usize {
    4
}
fn d_noise() -> NoiseName {
    NoiseName::Learned
}
fn d_beta() -> f64 {
    1.0
}
fn d_kl() -> KlName {
    KlName::Analytic
}
fn d_particles() -> usize {
    1
}
fn d_bound() -> BoundName {
    BoundName::Elbo
}
fn d_alpha() -> f64 {
    0.5
}
fn d_estimator() -> EstimatorName {
    EstimatorName::Reparameterised
}
fn d_unit() -> f64 {
    1.0
}

impl ElboSection {
    /// Whether the KL is estimated by sampling (as a flow posterior needs).
    pub fn monte_carlo_kl(&self) -> bool {
        self.kl == KlName::MonteCarlo || self.bound != BoundName::Elbo
    }

    /// Range checks (`flow`: the posterior is a flow).
    pub fn validate(&self, flow: bool) -> Result<(), TrainError> {
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(invalid(
                "objective.sigma",
                format!("must be > 0, got {}", self.sigma),
            ));
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(invalid(
                "objective.beta",
                format!("must be ≥ 0, got {}", self.beta),
            ));
        }
        if self.n_particles == 0 {
            return Err(invalid("objective.n_particles", "must be at least 1"));
        }
        if self.likelihood == LikelihoodName::StudentT && self.dof < 2 {
            return Err(invalid(
                "objective.dof",
                format!(
                    "must be at least 2 (ν = 1 is the Cauchy, whose mean does not exist), got {}",
                    self.dof
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.alpha) {
            return Err(invalid(
                "objective.alpha",
                format!(
                    "must be in [0, 1) (α → 1 is the ELBO: use bound = \"elbo\"), got {}",
                    self.alpha
                ),
            ));
        }
        let elbo_only = |key: &str| {
            let bound = format!("{:?}", self.bound).to_lowercase();
            invalid(
                key,
                format!("applies to bound = \"elbo\"; the {bound} bound has no separate KL term"),
            )
        };
        if self.bound != BoundName::Elbo {
            if self.n_particles < 2 {
                return Err(invalid(
                    "objective.n_particles",
                    "an importance-weighted bound needs n_particles = k ≥ 2 (k = 1 is the ELBO)",
                ));
            }
            if self.free_bits.is_some() {
                return Err(elbo_only("objective.free_bits"));
            }
            if self.estimator != EstimatorName::Reparameterised {
                return Err(elbo_only("objective.estimator"));
            }
            if self.warmup_steps > 0 || self.beta != 1.0 {
                return Err(elbo_only("objective.beta"));
            }
        }
        if let Some(l) = self.free_bits {
            if !(l.is_finite() && l >= 0.0) {
                return Err(invalid(
                    "objective.free_bits",
                    format!("must be ≥ 0 nats, got {l}"),
                ));
            }
            if self.kl != KlName::Analytic || flow {
                return Err(invalid(
                    "objective.free_bits",
                    "free bits clamp the closed-form KL per dimension: they need kl = \"analytic\" and posterior = \"gaussian\"",
                ));
            }
        }
        if self.estimator == EstimatorName::ScoreFunction && self.n_particles < 2 {
            return Err(invalid(
                "objective.n_particles",
                "the score-function estimator's leave-one-out baseline needs n_particles ≥ 2",
            ));
        }
        if !(self.mmd_weight.is_finite() && self.mmd_weight >= 0.0) {
            return Err(invalid(
                "objective.mmd_weight",
                format!("must be ≥ 0, got {}", self.mmd_weight),
            ));
        }
        if !(self.mmd_bandwidth.is_finite() && self.mmd_bandwidth > 0.0) {
            return Err(invalid(
                "objective.mmd_bandwidth",
                format!("must be > 0, got {}", self.mmd_bandwidth),
            ));
        }
        Ok(())
    }

    /// The likelihood config for samples of `dim` entries.
    pub fn likelihood(&self, dim: usize) -> LikelihoodConfig {
        match self.likelihood {
            LikelihoodName::Bernoulli => LikelihoodConfig::Bernoulli,
            LikelihoodName::Gaussian | LikelihoodName::StudentT => LikelihoodConfig::Gaussian(
                GaussianLikelihoodConfig::new()
                    .with_sigma(self.sigma)
                    .with_noise(match self.noise {
                        NoiseName::Fixed => NoiseModel::Fixed,
                        NoiseName::Learned => NoiseModel::LearnedGlobal,
                        NoiseName::Heteroscedastic => NoiseModel::Heteroscedastic,
                        NoiseName::PerNode => NoiseModel::PerNode,
                    })
                    .with_dim(Some(dim))
                    .with_dof((self.likelihood == LikelihoodName::StudentT).then_some(self.dof)),
            ),
        }
    }

    /// The ELBO config.
    pub fn elbo(&self) -> ElboConfig {
        ElboConfig::new()
            .with_beta(self.beta)
            .with_warmup_steps(self.warmup_steps)
            .with_n_particles(self.n_particles)
            .with_kl(match self.kl {
                KlName::Analytic => KlEstimator::Analytic,
                KlName::MonteCarlo => KlEstimator::MonteCarlo,
            })
    }

    /// How the solutions are normalised: Bernoulli data stay in `[0, 1]`.
    pub fn x_scaling(&self) -> XScaling {
        match self.likelihood {
            LikelihoodName::Bernoulli => XScaling::Identity,
            LikelihoodName::Gaussian | LikelihoodName::StudentT => XScaling::Standardise,
        }
    }

    /// The data checks of a (C)VAE: value ranges of the likelihood, grids of convolutions and
    /// of an FNO decoder (`d_cond`: the condition columns the model takes, 0 for a `vae`).
    pub fn check_data(
        &self,
        net: &NetSection,
        data: &TrainData,
        d_cond: usize,
    ) -> Result<(), TrainError> {
        self.check_values(&data.train.x)?;
        self.check_values(&data.run.test.x)?;
        net.check_shape(&data.run.shape(), d_cond)
    }

    /// Bernoulli data must lie in `[0, 1]`.
    pub fn check_values(&self, x: &[f64]) -> Result<(), TrainError> {
        if self.likelihood == LikelihoodName::Bernoulli
            && let Some(v) = x.iter().find(|v| !(0.0..=1.0).contains(*v))
        {
            return Err(invalid(
                "objective.likelihood",
                format!("\"bernoulli\" needs data in [0, 1], found {v}; use \"gaussian\""),
            ));
        }
        Ok(())
    }

    /// The objective of a run of this section.
    pub fn objective(&self, seed: u64, physics: Option<Arc<CvaePhysics>>) -> ElboObjective {
        ElboObjective {
            elbo: self.elbo().init(),
            bound: self.bound,
            alpha: self.alpha,
            free_bits: self.free_bits,
            estimator: self.estimator,
            mmd: (self.mmd_weight > 0.0).then_some((self.mmd_weight, self.mmd_bandwidth)),
            prior_predictive: None,
            noise: NoiseSource::new(seed, Stream::Train),
            physics,
        }
    }
}

/// A VAE or CVAE.
#[derive(Module, Debug)]
pub enum LatentModel {
    /// Unconditional.
    Vae(Vae),
    /// Conditional.
    Cvae(Cvae),
}

impl LatentVariableModel for LatentModel {
    fn latent_dim(&self) -> usize {
        match self {
            LatentModel::Vae(m) => m.latent_dim(),
            LatentModel::Cvae(m) => m.latent_dim(),
        }
    }
    fn cond_dim(&self) -> usize {
        match self {
            LatentModel::Vae(m) => m.cond_dim(),
            LatentModel::Cvae(m) => m.cond_dim(),
        }
    }
    fn posterior(&self, x: Tensor<2>, cond: Option<Tensor<2>>) -> DiagGaussian {
        match self {
            LatentModel::Vae(m) => m.posterior(x, cond),
            LatentModel::Cvae(m) => m.posterior(x, cond),
        }
    }
    fn variational(&self, x: Tensor<2>, cond: Option<Tensor<2>>) -> AmortisedQ {
        match self {
            LatentModel::Vae(m) => m.variational(x, cond),
            LatentModel::Cvae(m) => m.variational(x, cond),
        }
    }
    fn prior(&self, batch: usize, cond: Option<Tensor<2>>, device: &Device) -> DiagGaussian {
        match self {
            LatentModel::Vae(m) => m.prior(batch, cond, device),
            LatentModel::Cvae(m) => m.prior(batch, cond, device),
        }
    }
    fn decode(&self, z: Tensor<3>, cond: Option<Tensor<2>>) -> Tensor<3> {
        match self {
            LatentModel::Vae(m) => m.decode(z, cond),
            LatentModel::Cvae(m) => m.decode(z, cond),
        }
    }
}

/// Noise steps of a Student-t likelihood's χ² draws: draw `j` of chunk `c` is step
/// `c + j·CHI2_STEP` (`j = 0`, the Gaussian ε, keeps step `c`).
const CHI2_STEP: usize = 1 << 20;

/// What the trainer optimises: the latent-variable model and its likelihood (whose σ may be a
/// learned parameter).
#[derive(Module, Debug)]
pub struct GenerativeModel {
    /// VAE or CVAE.
    pub model: LatentModel,
    /// Observation likelihood.
    pub likelihood: Likelihood,
    /// Virtual observation of the PDE residual of the decoded mean (CVAE surrogates with
    /// `[objective.residual]`).
    pub residual: Option<ResidualLikelihood>,
}

/// The (C)VAE objective: `[objective] bound` with its regularisers.
///
/// ```text
/// elbo   : E_q[log p(x | z, c)] − β KL(q(z | x, c) ‖ p(z | c))              (primer eq. 18)
///          free bits: β Σ_j max(λ, mean_batch KL_j) in place of β KL
///          score-function: ∇ E_q log p through mean_s (log p_s − b_s) ∇ log q(z_s)
/// iwae   : log (1/k) Σ_s w_s,            w_s = p(x, z_s | c) / q(z_s | x, c)
/// renyi  : 1/(1−α) log (1/k) Σ_s w_s^{1−α}
/// + mmd  : − λ MMD²(q(z), p(z)) on the batch's posterior and prior samples
/// + prior predictive (CVAE): + w · E_{p(z|c)}[log p(x | z, c)], one reparameterised draw
///          of the prior per datum — the GSNN term of Sohn et al.'s hybrid objective (2015,
///          eq. 9), which trains the decoder and its σ on what prediction uses: z ~ p(z | c)
/// ```
/// A CVAE surrogate `c → x` (parameters → solution) with [`CvaePhysics`] adds the virtual
/// observation of the PDE residual of the decoded mean `ū(z, c)` (primer eq. 29) to the
/// likelihood, `log p(x, r̂ = 0 | z, c) = log p(x | z, c) + log N(0; r(ū(z, c), c), σ_r²)`, or,
/// without solution labels, uses it alone: `E_{q(z|c)}[log N(0; r(ū(z, c), c), σ_r²)] −
/// KL(q(z | c) ‖ N(0, I))` with the conditional network `q(z | c)`.
#[derive(Debug, Clone)]
pub struct ElboObjective {
    /// The ELBO (β, warm-up, particles, KL estimator).
    pub elbo: Elbo,
    /// The training bound.
    pub bound: BoundName,
    /// `α` of the Rényi bound.
    pub alpha: f64,
    /// Free bits `λ`.
    pub free_bits: Option<f64>,
    /// Gradient estimator of the likelihood term.
    pub estimator: EstimatorName,
    /// `(λ, h)` of the MMD term.
    pub mmd: Option<(f64, f64)>,
    /// Weight `w` of the prior-predictive (GSNN) term (CVAE).
    pub prior_predictive: Option<f64>,
    /// Training noise.
    pub noise: NoiseSource,
    /// The residual term of a CVAE surrogate.
    pub physics: Option<Arc<CvaePhysics>>,
}

/// The residual term of a CVAE surrogate (see [`ElboObjective`]).
pub struct CvaePhysics {
    /// Problem, preconditioner and parameter normalisation.
    pub term: PhysicsTerm,
    /// Solution normalisation of the data: `u = x·x_std + x_mean`.
    pub x_mean: f64,
    /// Solution normalisation of the data.
    pub x_std: f64,
    /// Include the data likelihood `log p(x | z, c)` (false: residual only, no labels).
    pub data: bool,
}

impl std::fmt::Debug for CvaePhysics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CvaePhysics")
            .field("problem", &self.term.problem.name())
            .field("data", &self.data)
            .finish()
    }
}

impl CvaePhysics {
    /// `log p(r̂ = 0 | ū, c)` `[s, b]` for decoded means `mean` `[s, b, n]` (normalised units)
    /// and normalised parameters `cond` `[b, p]`.
    pub fn log_residual(
        &self,
        residual: &ResidualLikelihood,
        mean: Tensor<3>,
        cond: Tensor<2>,
        step: usize,
    ) -> Tensor<2> {
        let [s, b, n] = mean.dims();
        let p = cond.dims()[1];
        let u = mean
            .reshape([s * b, n])
            .mul_scalar(self.x_std)
            .add_scalar(self.x_mean);
        let z = self
            .term
            .physical(cond)
            .unsqueeze_dim::<3>(0)
            .expand([s, b, p])
            .reshape([s * b, p]);
        residual
            .log_prob(&self.term.residual(u, z), step)
            .reshape([s, b])
    }
}

/// What one evaluation of the objective produces before it is reduced to a loss.
struct Parts {
    loss: Tensor<1>,
    terms: Vec<(&'static str, f64)>,
    beta: Option<f64>,
}

impl ElboObjective {
    /// The log-likelihood `[s, b]` of particles `z` `[s, b, d]`: the data likelihood, plus the
    /// PDE residual of the decoded mean for a CVAE surrogate (or the residual alone).
    fn log_lik(
        &self,
        model: &GenerativeModel,
        x: &Tensor<2>,
        cond: &Option<Tensor<2>>,
        z: Tensor<3>,
        step: usize,
    ) -> Tensor<2> {
        let params = model.model.decode(z, cond.clone());
        match (&self.physics, &model.residual, cond) {
            (Some(p), Some(residual), Some(c)) => {
                let lr = p.log_residual(
                    residual,
                    model.likelihood.mean(params.clone()),
                    c.clone(),
                    step,
                );
                if p.data {
                    model.likelihood.log_prob(x.clone(), params) + lr
                } else {
                    lr
                }
            }
            _ => model.likelihood.log_prob(x.clone(), params),
        }
    }

    /// `q` and `p`: the amortised posterior and the prior, or, for a CVAE surrogate without
    /// labels, the conditional network `q(z | c)` and `N(0, I)`.
    fn families(
        &self,
        model: &GenerativeModel,
        x: &Tensor<2>,
        cond: &Option<Tensor<2>>,
    ) -> (AmortisedQ, DiagGaussian) {
        let [b, _] = x.dims();
        let device = x.device();
        let m = &model.model;
        // The order the two networks enter the graph sets the order autodiff sums their
        // gradients in, hence the last bits of a run: kept as runs before the per-kind layout
        // had it (posterior first without a residual, prior first with one).
        if self.physics.is_none() {
            let q = m.variational(x.clone(), cond.clone());
            return (q, m.prior(b, cond.clone(), &device));
        }
        let prior = m.prior(b, cond.clone(), &device);
        match &self.physics {
            Some(p) if !p.data => (
                AmortisedQ::Gaussian(prior),
                DiagGaussian::standard(b, m.latent_dim(), &device),
            ),
            _ => (m.variational(x.clone(), cond.clone()), prior),
        }
    }

    fn elbo_parts(
        &self,
        model: &GenerativeModel,
        (q, prior): (&AmortisedQ, &DiagGaussian),
        (x, cond): (Tensor<2>, Option<Tensor<2>>),
        eps: Tensor<3>,
        step: usize,
    ) -> Parts {
        let log_lik = |z: Tensor<3>| self.log_lik(model, &x, &cond, z, step);
        let out = if self.estimator == EstimatorName::Reparameterised && self.free_bits.is_none() {
            self.elbo.forward(q, prior, eps, log_lik, step)
        } else {
            self.regularised_elbo(q, prior, eps, log_lik, step)
        };
        let s = out.scalars();
        Parts {
            loss: out.loss,
            terms: vec![
                ("loss", s.loss),
                ("elbo", s.elbo),
                ("log_lik", s.log_lik),
                ("kl", s.kl),
            ],
            beta: Some(s.beta),
        }
    }

    /// The ELBO with free bits and/or the score-function estimator:
    /// `loss = −mean_b[ℓ̂] + β_t · K`, `ℓ̂` the particle mean of `log p(x | z_s)` (plus the
    /// score-function surrogate, whose value is 0 and whose gradient is the REINFORCE one), `K`
    /// the batch-mean KL or, with free bits, `Σ_j max(λ, mean_b KL_j)`.
    fn regularised_elbo(
        &self,
        q: &AmortisedQ,
        prior: &DiagGaussian,
        eps: Tensor<3>,
        log_lik: impl FnOnce(Tensor<3>) -> Tensor<2>,
        step: usize,
    ) -> ElboOutput {
        let (z, kl) = self.elbo.particles_and_kl(q, prior, eps);
        let (objective, ll) = match self.estimator {
            EstimatorName::Reparameterised => {
                let ll = log_lik(z).mean_dim(0).squeeze_dim::<1>(0);
                (ll.clone(), ll)
            }
            EstimatorName::ScoreFunction => {
                // Detached particles: the likelihood reaches q's parameters through log q only.
                let z = z.detach();
                let ll_s = log_lik(z.clone()); // [s, b]
                let surrogate = score_function_surrogate(ll_s.clone(), q.log_prob(z), None);
                let ll = ll_s.mean_dim(0).squeeze_dim::<1>(0);
                (ll.clone() + surrogate, ll)
            }
        };
        let penalty = match (self.free_bits, q) {
            (Some(lambda), AmortisedQ::Gaussian(g)) => free_bits_kl(g, prior, lambda),
            _ => kl.clone().mean(),
        };
        let beta = self.elbo.beta_at(step);
        let loss = penalty.mul_scalar(beta) - objective.mean();
        ElboOutput {
            loss,
            elbo: (ll.clone() - kl.clone()).detach(),
            log_lik: ll.detach(),
            kl: kl.detach(),
            beta,
        }
    }

    fn renyi_parts(
        &self,
        model: &GenerativeModel,
        (q, prior): (&AmortisedQ, &DiagGaussian),
        (x, cond): (Tensor<2>, Option<Tensor<2>>),
        eps: Tensor<3>,
        step: usize,
    ) -> Parts {
        let alpha = match self.bound {
            BoundName::Iwae => 0.0,
            _ => self.alpha,
        };
        let out = RenyiBound { alpha }
            .forward(q, prior, eps, |z| self.log_lik(model, &x, &cond, z, step));
        Parts {
            terms: vec![
                ("loss", mean_of(out.loss.clone().detach())),
                ("bound", mean_of(out.bound)),
                ("elbo", mean_of(out.elbo)),
                ("ess", mean_of(out.ess)),
            ],
            loss: out.loss,
            beta: None,
        }
    }
}

impl Objective<GenerativeModel> for ElboObjective {
    fn step(
        &self,
        model: &GenerativeModel,
        x: Tensor<2>,
        cond: Option<Tensor<2>>,
        step: usize,
        noise_stream: u64,
    ) -> StepOutput {
        let [b, _] = x.dims();
        self.step_rows(model, x, cond, step, noise_stream, RowWindow::whole(b))
    }

    /// Exact without batch statistics: the MMD term, free bits (a batch-mean KL) and a CVAE
    /// residual (its own draws) make shards differ from the whole batch.
    fn rows_exact(&self) -> bool {
        self.mmd.is_none() && self.free_bits.is_none() && self.physics.is_none()
    }

    fn step_rows(
        &self,
        model: &GenerativeModel,
        x: Tensor<2>,
        cond: Option<Tensor<2>>,
        step: usize,
        noise_stream: u64,
        rows: RowWindow,
    ) -> StepOutput {
        let [b, _] = x.dims();
        let device = x.device();
        let noise = self.noise.offset(noise_stream);
        let d = model.model.latent_dim();
        let eps = noise.normal_rows([self.elbo.config.n_particles, b, d], 1, rows, step, &device);
        let (q, prior) = self.families(model, &x, &cond);
        let families = (&q, &prior);
        let mut parts = match self.bound {
            BoundName::Elbo => {
                self.elbo_parts(model, families, (x.clone(), cond.clone()), eps, step)
            }
            BoundName::Iwae | BoundName::Renyi => {
                self.renyi_parts(model, families, (x.clone(), cond.clone()), eps, step)
            }
        };
        if let Some((weight, h)) = self.mmd
            && b >= 2
        {
            // Aggregate posterior vs prior: one posterior and one prior draw per datum, on a
            // sub-stream of their own.
            let sub = noise.offset(1 << 20);
            let zq = q.rsample(sub.normal_rows([1, b, d], 1, rows, 2 * step, &device));
            let zp = prior.rsample(sub.normal_rows([1, b, d], 1, rows, 2 * step + 1, &device));
            let m = mmd2(zq.reshape([b, d]), zp.reshape([b, d]), h);
            parts.terms.push(("mmd", mean_of(m.clone().detach())));
            parts.loss = parts.loss + m.mul_scalar(weight);
            parts.terms[0].1 = mean_of(parts.loss.clone().detach());
        }
        if let Some(weight) = self.prior_predictive {
            // z ~ p(z | c) on a sub-stream of its own, one draw per datum.
            let sub = noise.offset(2 << 20);
            let zp = prior.rsample(sub.normal_rows([1, b, d], 1, rows, step, &device));
            let ll = self
                .log_lik(model, &x, &cond, zp, step)
                .mean_dim(0)
                .squeeze_dim::<1>(0);
            parts
                .terms
                .push(("prior_log_lik", mean_of(ll.clone().detach())));
            parts.loss = parts.loss - ll.mean().mul_scalar(weight);
            parts.terms[0].1 = mean_of(parts.loss.clone().detach());
        }
        StepOutput {
            loss: parts.loss,
            terms: parts.terms,
            beta: parts.beta,
        }
    }
}

impl GenerativeModel {
    /// Wrap a built VAE or CVAE with the likelihood of `objective` (and a CVAE surrogate's
    /// residual likelihood).
    pub fn init(
        model: LatentModel,
        objective: &ElboSection,
        residual: Option<&crate::physics_term::ResidualSection>,
        dim: usize,
        device: &Device,
    ) -> Self {
        Self {
            model,
            likelihood: objective.likelihood(dim).init(device),
            residual: residual.map(|r| r.likelihood().init(device)),
        }
    }
}

/// Test-set evaluation of a (C)VAE run (`eval.json`).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Test samples.
    pub n_test: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Mean test ELBO per datum (normalised units; with the config's particles).
    pub test_elbo: f64,
    /// Mean test `E_q log p(x|z)`.
    pub test_log_lik: f64,
    /// Mean test KL.
    pub test_kl: f64,
    /// Runs without a residual: the IWAE bound with 64 importance samples per test datum, a
    /// tighter estimate of `log p(x | c)` than the ELBO (normalised units), comparable across
    /// posterior families.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_iwae64: Option<f64>,
    /// RMSE of reconstructions `E[x | z = E_q z]` in data units.
    pub recon_rmse: f64,
    /// Relative L2 error of reconstructions, `‖x̂ − x‖ / ‖x‖` over the test set.
    pub recon_rel_l2: f64,
    /// CVAE runs: the conditional model as a surrogate `c → x`, scored against the test
    /// solutions (data units) with 64 samples `x = ū(z, c) + σ ε`, `z ~ p(z | c)`; without a
    /// trained data likelihood (`data_likelihood = false`) the decoded means `ū(z, c)` alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surrogate: Option<UqScores>,
    /// A residual-only CVAE surrogate with the model-error term: `surrogate` is the predictive
    /// with the term, this the decoded means alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surrogate_only: Option<UqScores>,
    /// The model-error term's scale beside the actual error of the predictive mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_error: Option<crate::surrogate::ModelErrorSummary>,
}

/// What the shared (C)VAE steps need of a trained run.
pub struct TrainedLatent<'a> {
    /// The model.
    pub model: &'a GenerativeModel,
    /// Its objective's config (the eval ELBO is its `elbo` with β = 1, no warm-up).
    pub objective: &'a ElboSection,
    /// A CVAE surrogate's residual.
    pub physics: Option<Arc<CvaePhysics>>,
    /// Test split and normaliser.
    pub data: &'a RunData,
    /// Seed.
    pub seed: u64,
    /// Batch size of the test ELBO.
    pub batch_size: usize,
    /// Device (no autodiff).
    pub device: &'a Device,
    /// The run's scorer.
    pub scorer: &'a crate::calibration::Scorer,
}

impl TrainedLatent<'_> {
    fn unnorm(&self, t: Tensor<2>) -> Vec<Vec<f64>> {
        rows(t)
            .into_iter()
            .map(|mut r| {
                self.data.norm.invert_x(&mut r);
                r
            })
            .collect()
    }

    /// Reconstructions `E[x | z = mean of q(z|x)]` and prior samples `E[x | z ~ p(z|c)]`, in
    /// data units, for test samples `indices`: `(data, reconstructions, prior samples)`.
    fn recon_and_prior(&self, indices: &[usize]) -> [Vec<Vec<f64>>; 3] {
        let m = &self.model.model;
        let (x, cond) = self.data.test.batch(indices, self.device);
        let b = indices.len();
        let q = m.variational(x.clone(), cond.clone());
        let recon = self
            .model
            .likelihood
            .mean(m.decode(q.mean().unsqueeze::<3>(), cond.clone()))
            .squeeze_dim::<2>(0);
        let prior = m.prior(b, cond.clone(), self.device);
        let eps = NoiseSource::new(self.seed, Stream::Plot).normal(
            [1, b, m.latent_dim()],
            0,
            self.device,
        );
        let generated = self
            .model
            .likelihood
            .mean(m.decode(prior.rsample(eps), cond))
            .squeeze_dim::<2>(0);
        [self.unnorm(x), self.unnorm(recon), self.unnorm(generated)]
    }

    /// `samples.png`: data, reconstructions and prior samples of up to four test samples.
    pub fn plot(&self, path: &Path) -> Result<(), TrainError> {
        let k = self.data.test.len().min(4);
        let idx: Vec<usize> = (0..k).collect();
        let [x, recon, prior] = self.recon_and_prior(&idx);
        plots::plot_samples(&x, &recon, &prior, &self.data.test.sample_shape, path)
    }

    /// Predictive scores of a CVAE as a surrogate (see [`EvalReport::surrogate`]), with the
    /// model-error term of a residual-only surrogate where configured (its mean: the mean of
    /// the decoded samples).
    fn surrogate_scores(&self) -> crate::surrogate::Widened {
        let test = &self.data.test;
        let n = test.len();
        let samples = self.predictive_samples(&test.cond, n, 64);
        let mut truth = test.x.clone();
        self.data.norm.invert_x(&mut truth);
        let Some(term) = self.model_error_term() else {
            return crate::surrogate::Widened {
                scores: self
                    .scorer
                    .score("surrogate", &samples, &truth, n, Role::Predictive),
                surrogate_only: None,
                model_error: None,
            };
        };
        let (u, mean, z) = self.as_tensors(term, samples, &test.cond, n);
        crate::surrogate::score_widened(
            self.scorer,
            "surrogate",
            term,
            u,
            mean,
            &truth,
            z,
            self.seed,
        )
    }

    /// The residual term of a surrogate whose predictive carries the model-error term.
    pub fn model_error_term(&self) -> Option<&crate::physics_term::PhysicsTerm> {
        self.physics
            .as_ref()
            .map(|p| &p.term)
            .filter(|t| t.model_error.is_some())
    }

    /// Host samples `[s][rows·d]` (data units) at normalised conditions `cond` as tensors:
    /// the samples `[s·rows, d]`, their mean `[rows, d]` and the physical parameters.
    fn as_tensors(
        &self,
        term: &crate::physics_term::PhysicsTerm,
        samples: Vec<Vec<f64>>,
        cond: &[f64],
        rows: usize,
    ) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        let s = samples.len();
        let flat: Vec<f64> = samples.into_iter().flatten().collect();
        let d = flat.len() / (s * rows).max(1);
        let u = Tensor::<2>::from_data(TensorData::new(flat, [s * rows, d]), self.device);
        let mean = u
            .clone()
            .reshape([s, rows, d])
            .mean_dim(0)
            .reshape([rows, d]);
        let c = cond.len() / rows.max(1);
        let cond = Tensor::<2>::from_data(TensorData::new(cond.to_vec(), [rows, c]), self.device);
        (u, mean, term.physical(cond))
    }

    /// The predictive of `varphi predict`: [`Self::predictive_samples`] with the model-error
    /// term of a residual-only surrogate where configured.
    pub fn predictive(&self, cond: &[f64], rows: usize, s: usize) -> Vec<Vec<f64>> {
        let samples = self.predictive_samples(cond, rows, s);
        let Some(term) = self.model_error_term() else {
            return samples;
        };
        let d = samples.first().map_or(0, |v| v.len() / rows.max(1));
        let (u, mean, z) = self.as_tensors(term, samples, cond, rows);
        let noise = NoiseSource::new(self.seed, Stream::ModelError);
        let (u, _) = crate::surrogate::with_model_error(term, u, mean, z, noise, 0);
        crate::host::per_sample(crate::host::values(u), rows, d)
    }

    /// `s` samples of the CVAE's predictive `x = ū(z, c) + σ ε`, `z ~ p(z | c)` (the decoded
    /// means alone without a trained data likelihood), for `rows` normalised conditions `cond`
    /// `[rows, c]`: `[s][rows · d]` in data units. Rows are drawn in chunks of 256 with the
    /// evaluation's noise streams, so the test conditions give `varphi eval`'s samples.
    pub fn predictive_samples(&self, cond: &[f64], rows: usize, s: usize) -> Vec<Vec<f64>> {
        let device = self.device;
        let m = &self.model.model;
        let c_dim = cond.len() / rows.max(1);
        let idx: Vec<usize> = (0..rows).collect();
        let mut samples = vec![Vec::new(); s];
        let with_noise = self.physics.as_ref().is_none_or(|p| p.data);
        for (c, chunk) in idx.chunks(256).enumerate() {
            let b = chunk.len();
            let rows_c = cond[chunk[0] * c_dim..(chunk[0] + b) * c_dim].to_vec();
            let cond = Tensor::<2>::from_data(TensorData::new(rows_c, [b, c_dim]), device);
            let prior = m.prior(b, Some(cond.clone()), device);
            let eps = NoiseSource::new(self.seed, Stream::EvalPredictive).normal(
                [s, b, m.latent_dim()],
                c,
                device,
            );
            let params = m.decode(prior.rsample(eps), Some(cond));
            let mut mean = self.model.likelihood.mean(params.clone());
            let dims = mean.dims();
            let source = NoiseSource::new(self.seed, Stream::EvalPredictiveNoise);
            if with_noise
                && let Some(noise) = self.model.likelihood.noise(params, |j| {
                    source.normal::<3>(dims, c + j * CHI2_STEP, device)
                })
            {
                mean = mean + noise;
            }
            let nx = mean.dims()[2];
            for (k, out) in samples.iter_mut().enumerate() {
                let t = mean.clone().slice([k..k + 1, 0..b, 0..nx]).reshape([b, nx]);
                out.extend(self.unnorm(t).into_iter().flatten());
            }
        }
        samples
    }

    /// Mean IWAE bound `L_64` over the test split (see [`EvalReport::test_iwae64`]).
    fn test_iwae(&self) -> f64 {
        const K: usize = 64;
        let m = &self.model.model;
        let n = self.data.test.len();
        let idx: Vec<usize> = (0..n).collect();
        let mut total = 0.0;
        for (c, chunk) in idx.chunks(128).enumerate() {
            let (x, cond) = self.data.test.batch(chunk, self.device);
            let q = m.variational(x.clone(), cond.clone());
            let prior = m.prior(chunk.len(), cond.clone(), self.device);
            let eps = NoiseSource::new(self.seed, Stream::EvalIwae).normal(
                [K, chunk.len(), m.latent_dim()],
                c,
                self.device,
            );
            let out = RenyiBound::iwae().forward(&q, &prior, eps, |z| {
                self.model.likelihood.log_prob(x, m.decode(z, cond))
            });
            total += out.bound.sum().into_scalar::<f64>();
        }
        total / n.max(1) as f64
    }

    /// Score on the test split (`surrogate`: also score the CVAE as a surrogate `c → x`).
    pub fn evaluate(&self, epochs: usize, surrogate: bool) -> EvalReport {
        let mut objective = self.objective.clone();
        objective.beta = 1.0;
        objective.warmup_steps = 0;
        objective.bound = BoundName::Elbo;
        objective.free_bits = None;
        objective.estimator = EstimatorName::Reparameterised;
        objective.mmd_weight = 0.0;
        let mut eval_objective = objective.objective(self.seed, self.physics.clone());
        eval_objective.noise = NoiseSource::new(self.seed, Stream::EvalElbo);
        let terms = trainer::evaluate(
            self.model,
            &eval_objective,
            &self.data.test,
            self.batch_size,
            self.device,
            0,
        );
        let get = |k: &str| {
            terms
                .iter()
                .find(|(n, _)| *n == k)
                .map_or(f64::NAN, |t| t.1)
        };
        let (mut se, mut sx) = (0.0, 0.0);
        let mut count = 0usize;
        let n = self.data.test.len();
        let idx: Vec<usize> = (0..n).collect();
        for chunk in idx.chunks(256) {
            let [x, recon, _] = self.recon_and_prior(chunk);
            for (a, b) in x.iter().zip(&recon) {
                for (u, v) in a.iter().zip(b) {
                    se += (u - v).powi(2);
                    sx += u * u;
                    count += 1;
                }
            }
        }
        let (surrogate, surrogate_only, model_error) =
            match surrogate.then(|| self.surrogate_scores()) {
                Some(w) => (Some(w.scores), w.surrogate_only, w.model_error),
                None => (None, None, None),
            };
        EvalReport {
            n_test: n,
            epochs,
            test_elbo: get("elbo"),
            test_log_lik: get("log_lik"),
            test_kl: get("kl"),
            test_iwae64: self.physics.is_none().then(|| self.test_iwae()),
            recon_rmse: (se / count.max(1) as f64).sqrt(),
            recon_rel_l2: (se / sx.max(1e-300)).sqrt(),
            surrogate,
            surrogate_only,
            model_error,
        }
    }

    /// Draw `n` samples from the prior predictive (data units, float32) into `out`, shape
    /// `[n, ...sample_shape]`; `cond` are normalised conditions `[n, c]` for a CVAE.
    pub fn sample(
        &self,
        n: usize,
        cond: Option<Tensor<2>>,
        noise: bool,
        out: &Path,
    ) -> Result<String, TrainError> {
        let m = &self.model.model;
        let source = NoiseSource::new(self.seed, Stream::Sample);
        let prior = m.prior(n, cond.clone(), self.device);
        let z = prior.rsample(source.normal([1, n, m.latent_dim()], 0, self.device));
        let params = m.decode(z, cond);
        let mut x = self.model.likelihood.mean(params.clone());
        let dims = x.dims();
        if noise
            && let Some(e) = self.model.likelihood.noise(params, |j| {
                source.normal::<3>(dims, 1 + j * CHI2_STEP, self.device)
            })
        {
            x = x + e;
        }
        let mut values = crate::host::values(x);
        self.data.norm.invert_x(&mut values);
        let mut shape = vec![n];
        shape.extend(&self.data.test.sample_shape);
        varphi_data::npy::save_npy_f32(out, &shape, &values).map_err(io_err(out))?;
        Ok(format!("wrote {n} samples {shape:?} to {}", out.display()))
    }
}

/// Print a (C)VAE evaluation table.
pub fn print_eval(r: &EvalReport, dir: &Path) {
    println!(
        "evaluation of {} ({} test samples, {} epochs)",
        dir.display(),
        r.n_test,
        r.epochs
    );
    println!("  {:<34} {:>12}", "metric", "value");
    for (k, v) in [
        ("test ELBO per datum (normalised)", r.test_elbo),
        ("test E_q log p(x|z)", r.test_log_lik),
        ("test KL(q||p)", r.test_kl),
        ("reconstruction RMSE (data units)", r.recon_rmse),
        ("reconstruction relative L2", r.recon_rel_l2),
    ] {
        println!("  {k:<34} {v:>12.5}");
    }
    if let Some(v) = r.test_iwae64 {
        println!("  {:<34} {v:>12.5}", "test IWAE bound, k = 64");
    }
    if let Some(s) = &r.surrogate {
        println!("  surrogate x | c (64 samples per test case, data units)");
        crate::tables::print_scores(s, 34);
    }
    if let Some(s) = &r.surrogate_only {
        println!("  the decoded means alone, without the model-error term");
        crate::tables::print_scores(s, 34);
    }
    crate::surrogate::print_model_error(r.model_error.as_ref());
}
