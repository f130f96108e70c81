//! The experiment config: one TOML file describes data, model, objective, optimiser and
//! training. Unknown keys and out-of-range values are rejected up front, naming the key.

use crate::backend::{BackendKind, Precision};
use crate::error::TrainError;
use serde::{Deserialize, Serialize};
use std::path::Path;
use varphi_data::DataSource;
use varphi_data::physics::PhysicsSettings;
use varphi_losses::{
    ElboConfig, GaussianLikelihoodConfig, KlEstimator, LikelihoodConfig, NoiseModel,
    ResidualLikelihoodConfig, SigmaSchedule,
};
use varphi_models::{
    Activation, ConvDecoderConfig, ConvEncoderConfig, CvaeConfig, CvaePriorConfig, DecoderConfig,
    EncoderConfig, GaussianNetConfig, LearnedPriorConfig, MlpDecoderConfig, MlpEncoderConfig,
    PddlvmConfig, PosteriorFlowConfig, UNetConfig, VaeConfig,
};

/// A whole experiment. Saved as `config.toml` in every run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed for data generation, initialisation, batching and Monte-Carlo noise.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Data source (`[data]`, selected by `kind`).
    pub data: DataSource,
    /// Train/test split and normalisation.
    #[serde(default)]
    pub split: SplitConfig,
    /// Model.
    pub model: ModelSection,
    /// Objective.
    #[serde(default)]
    pub objective: ObjectiveSection,
    /// Optimiser.
    #[serde(default)]
    pub optimizer: OptimizerSection,
    /// Training loop.
    #[serde(default)]
    pub training: TrainingSection,
}

fn d_seed() -> u64 {
    42
}

/// `[split]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Fraction of samples held out for testing, in (0, 1).
    #[serde(default = "d_test_fraction")]
    pub test_fraction: f64,
    /// Standardise data (global mean/std) and conditions (per column) on the training split.
    #[serde(default = "d_true")]
    pub normalize: bool,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            test_fraction: d_test_fraction(),
            normalize: true,
        }
    }
}

fn d_test_fraction() -> f64 {
    0.1
}
fn d_true() -> bool {
    true
}

/// Model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Unconditional VAE.
    Vae,
    /// Conditional VAE (needs a condition array).
    Cvae,
    /// PDDLVM forward surrogate q(u|z) + inverse model p(z|u), trained through the virtual
    /// observation of the PDE residual (needs a physics `[data]` source and
    /// `[objective.residual]`).
    Pddlvm,
    /// Forward-KL amortised posterior (neural posterior estimation, primer eqs. 19–20): a
    /// conditional RealNVP `q(z | y)` trained by maximum likelihood on simulated pairs, `y`
    /// noisy observations of the solution (needs a physics `[data]` source and
    /// `[objective.observations]`).
    Npe,
    /// Physics-integrated VAE (Takeishi & Kalousis; primer §3.1): physical latents decoded by
    /// the problem's own forward map (pendulum: undamped, unforced RK4; heat: pure diffusion by
    /// the θ-scheme), auxiliary latents by a correction network (needs a pendulum or heat data
    /// source and `[objective.observations]`).
    PhysVae,
}

/// Network architecture of an encoder or decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetKind {
    /// Dense network on the flattened sample.
    Mlp,
    /// Convolutions over the sample's grid (1-D or 2-D, channels first).
    Conv,
    /// A U-Net from a 2-D field to a field on the same grid (PDDLVM networks whose parameter is
    /// a field on the solution grid, e.g. Darcy's coefficient).
    Unet,
}

/// Prior of a CVAE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriorKind {
    /// N(0, I).
    Standard,
    /// Learned p(z | c).
    Learned,
}

/// The amortised posterior family of `vae`, `cvae` and `phys-vae` models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PosteriorKind {
    /// The encoder's diagonal Gaussian.
    Gaussian,
    /// A RealNVP flow (`flow_layers` couplings, `hidden` widths, LU mixing) on top of the
    /// encoder's Gaussian, conditioned on its mean and log-variance; the KL is estimated by
    /// Monte Carlo.
    Flow,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `vae` or `cvae`.
    #[serde(default = "d_model_kind")]
    pub kind: ModelKind,
    /// Latent dimension.
    #[serde(default = "d_latent")]
    pub latent_dim: usize,
    /// Encoder architecture.
    #[serde(default = "d_net")]
    pub encoder: NetKind,
    /// Decoder architecture.
    #[serde(default = "d_net")]
    pub decoder: NetKind,
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
    /// CVAE prior.
    #[serde(default = "d_prior")]
    pub prior: PriorKind,
    /// Amortised posterior of `vae`, `cvae` and `phys-vae` models: `gaussian` or `flow`.
    #[serde(default = "d_posterior")]
    pub posterior: PosteriorKind,
    /// Coupling layers of a flow (`npe`, and `posterior = "flow"`).
    #[serde(default = "d_flow_layers")]
    pub flow_layers: usize,
    /// Auxiliary latent dimension of a `phys-vae` (0: physics only).
    #[serde(default = "d_aux_dim")]
    pub aux_dim: usize,
}

fn d_aux_dim() -> usize {
    2
}

fn d_posterior() -> PosteriorKind {
    PosteriorKind::Gaussian
}

fn d_flow_layers() -> usize {
    6
}

/// Activation names accepted in configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationName {
    /// ReLU.
    Relu,
    /// tanh.
    Tanh,
    /// sin.
    Sin,
    /// softplus.
    Softplus,
    /// GELU.
    Gelu,
    /// SiLU.
    Silu,
}

impl From<ActivationName> for Activation {
    fn from(a: ActivationName) -> Self {
        match a {
            ActivationName::Relu => Activation::Relu,
            ActivationName::Tanh => Activation::Tanh,
            ActivationName::Sin => Activation::Sin,
            ActivationName::Softplus => Activation::Softplus,
            ActivationName::Gelu => Activation::Gelu,
            ActivationName::Silu => Activation::Silu,
        }
    }
}

fn d_model_kind() -> ModelKind {
    ModelKind::Vae
}
fn d_latent() -> usize {
    8
}
fn d_net() -> NetKind {
    NetKind::Mlp
}
fn d_hidden() -> Vec<usize> {
    vec![128, 128]
}
fn d_channels() -> Vec<usize> {
    vec![16, 32]
}
fn d_kernel() -> usize {
    3
}
fn d_activation() -> ActivationName {
    ActivationName::Gelu
}
fn d_prior() -> PriorKind {
    PriorKind::Standard
}

/// Likelihood family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LikelihoodKind {
    /// Gaussian.
    Gaussian,
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

/// `[objective]`: the ELBO and its likelihood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSection {
    /// Likelihood family.
    #[serde(default = "d_lik")]
    pub likelihood: LikelihoodKind,
    /// Gaussian σ (in normalised units when `split.normalize`).
    #[serde(default = "d_sigma")]
    pub sigma: f64,
    /// Gaussian noise model.
    #[serde(default = "d_noise")]
    pub noise: NoiseName,
    /// KL weight β.
    #[serde(default = "d_beta")]
    pub beta: f64,
    /// KL estimator.
    #[serde(default = "d_kl")]
    pub kl: KlName,
    /// Linear KL warm-up length in steps.
    #[serde(default)]
    pub warmup_steps: usize,
    /// Monte-Carlo particles per datum.
    #[serde(default = "d_particles")]
    pub n_particles: usize,
    /// The PDE residual as a virtual observation: the training signal of `pddlvm` models, and
    /// a second likelihood term of `cvae` surrogates (parameters → solution).
    #[serde(default)]
    pub residual: Option<ResidualSection>,
    /// CVAE surrogates with `[objective.residual]`: keep the data likelihood `log p(x | z, c)`
    /// (true: data × physics) or train on the residual alone (false: no solution labels).
    #[serde(default = "d_true")]
    pub data_likelihood: bool,
    /// Noisy point observations of the solution and the amortised parameter posterior
    /// `q(ξ | y)` (`pddlvm` models with a whitened prior).
    #[serde(default)]
    pub observations: Option<ObservationsSection>,
    /// Regularisers and decoder physics of a `phys-vae`.
    #[serde(default)]
    pub physvae: PhysVaeSection,
}

/// `[objective.physvae]`: `L = −log N(y; x, σ_y²) + β KL + aux_weight·‖x − x_phys‖²/2σ_y² +
/// augmentation·½‖μ_φ(G†(θ) + σ_y ε) − s‖²` (see `varphi_losses::PhysVaeLoss`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysVaeSection {
    /// Weight of the correction penalty `λ_aux`.
    #[serde(default = "d_aux_weight")]
    pub aux_weight: f64,
    /// Weight of the physics-augmentation regulariser (0: off).
    #[serde(default = "d_unit")]
    pub augmentation: f64,
    /// Time steps per stored level of the decoder's forward map (RK4 / θ-scheme).
    #[serde(default = "d_phys_substeps")]
    pub substeps: usize,
    /// UQ-VAE skew-JS weight `α ∈ (0, 1]` (primer eqs. 21–22): adds the supervised forward-KL
    /// term `(1 − α)/α · (−log q(s_true | y))` on the simulator's true physical parameters.
    /// Absent (or 1): the reverse-KL ELBO alone.
    #[serde(default)]
    pub uq_alpha: Option<f64>,
    /// Decode through a learned surrogate `S_ψ(θ) ≈ H G†(θ)` (an MLP with `[model] hidden`),
    /// trained on the simulator's pairs `(θ*, H u*)` alongside the VAE, instead of the forward
    /// map (for a `G†` too expensive to call at every step).
    #[serde(default)]
    pub surrogate: bool,
    /// Learn the likelihood's noise scale `σ` (one scalar, starting at the observation noise)
    /// instead of fixing it at `observations.sigma`: under a misspecified decoder it grows to
    /// the misfit the decoder cannot explain (a model-error term), widening the posterior.
    #[serde(default)]
    pub learn_noise: bool,
    /// With `learn_noise`: also learn an AR(1) correlation `ρ` of the noise along the
    /// observation vector (its order must be time: one trajectory, e.g. the pendulum's), so a
    /// misfit that is smooth in time counts as few independent pieces of evidence.
    #[serde(default)]
    pub correlated_noise: bool,
}

impl Default for PhysVaeSection {
    fn default() -> Self {
        Self {
            aux_weight: d_aux_weight(),
            augmentation: d_unit(),
            substeps: d_phys_substeps(),
            uq_alpha: None,
            surrogate: false,
            learn_noise: false,
            correlated_noise: false,
        }
    }
}

fn d_aux_weight() -> f64 {
    1e-3
}
fn d_unit() -> f64 {
    1.0
}
fn d_phys_substeps() -> usize {
    2
}

/// How `σ_r` evolves during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SigmaScheduleName {
    /// Fixed at `sigma`.
    Fixed,
    /// Geometric from `anneal_from` to `sigma` over `anneal_steps` steps.
    Anneal,
    /// A trained parameter initialised at `sigma`.
    Learned,
}

/// `[objective.residual]`: `log p(r̂ = 0 | u, z) = log N(0; P⁻¹r(u, z), σ_r²) + log N(0; r_b, σ_b²)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidualSection {
    /// `σ_r` of the PDE rows (final value when annealed).
    pub sigma: f64,
    /// `σ_b` of the boundary / initial-condition rows (default: `sigma`).
    #[serde(default)]
    pub boundary_sigma: Option<f64>,
    /// Schedule of `σ_r`.
    #[serde(default = "d_schedule")]
    pub schedule: SigmaScheduleName,
    /// Starting `σ_r` of an annealed schedule.
    #[serde(default)]
    pub anneal_from: Option<f64>,
    /// Steps of the annealing.
    #[serde(default)]
    pub anneal_steps: usize,
    /// Observe `P⁻¹ r` (operator at unit coefficient) instead of `r`: condition number ~1.
    #[serde(default = "d_true")]
    pub precondition: bool,
    /// Physical scale of `u`: the surrogate predicts `u / u_scale` (a physics estimate, not
    /// taken from solutions).
    #[serde(default = "d_unit")]
    pub u_scale: f64,
}

/// `[objective.observations]`: `y = u*(x_j) + σ_y ε` at `count` solution nodes (chosen as
/// `varphi data` chooses them for the run's seed), simulated afresh each step from the training
/// solutions and once, with a fixed seed, for the test cases that `varphi eval` scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationsSection {
    /// Observed nodes (default: every observable node).
    #[serde(default)]
    pub count: Option<usize>,
    /// Noise standard deviation σ_y (physical units of `u`).
    pub sigma: f64,
    /// Time-dependent problems with `phys-vae`: observe every `every`-th stored level (from
    /// `t = 0`) at every node — sub-sampling in time (default 1: every level).
    #[serde(default)]
    pub every: Option<usize>,
}

/// What a training stage optimises (`[[training.stages]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageMode {
    /// The physics-only PDDLVM bound on prior draws (no observations, no solutions).
    Physics,
    /// The observation bound `L(y)` (amortised posterior + surrogate).
    Data,
    /// Both bounds, summed.
    Joint,
}

/// One stage of a staged run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSection {
    /// Objective of the stage.
    pub mode: StageMode,
    /// Epochs it lasts.
    pub epochs: usize,
}

fn d_schedule() -> SigmaScheduleName {
    SigmaScheduleName::Fixed
}

impl Default for ObjectiveSection {
    fn default() -> Self {
        Self {
            likelihood: d_lik(),
            sigma: d_sigma(),
            noise: d_noise(),
            beta: d_beta(),
            kl: d_kl(),
            warmup_steps: 0,
            n_particles: d_particles(),
            residual: None,
            data_likelihood: true,
            observations: None,
            physvae: PhysVaeSection::default(),
        }
    }
}

fn d_lik() -> LikelihoodKind {
    LikelihoodKind::Gaussian
}
fn d_sigma() -> f64 {
    0.1
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

/// `[optimizer]`: Adam.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSection {
    /// Learning rate.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Cosine decay of the learning rate from `lr` to this value over the run (constant if
    /// absent).
    #[serde(default)]
    pub lr_final: Option<f64>,
    /// Clip each parameter's gradient to this L2 norm (off if absent).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Decoupled-from-nothing L2 weight decay added to the gradient (0: off).
    #[serde(default)]
    pub weight_decay: f64,
}

impl Default for OptimizerSection {
    fn default() -> Self {
        Self {
            lr: d_lr(),
            lr_final: None,
            grad_clip: None,
            weight_decay: 0.0,
        }
    }
}

fn d_lr() -> f64 {
    1e-3
}

/// `[training]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    /// Epochs.
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Mini-batch size.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Backend (overridden by `--backend`).
    #[serde(default)]
    pub backend: BackendKind,
    /// Float precision: f32 everywhere, or f64 on the CPU backends.
    #[serde(default)]
    pub precision: Precision,
    /// Write a checkpoint every this many epochs (and always at the end).
    #[serde(default = "d_one")]
    pub checkpoint_every: usize,
    /// Epochs of the small variant run by `varphi train --quick` (default: epochs / 10).
    #[serde(default)]
    pub quick_epochs: Option<usize>,
    /// Stages in order (`pddlvm` models); their epochs must add up to `epochs`. Default: one
    /// physics stage, or one joint stage when `[objective.observations]` is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageSection>,
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            epochs: d_epochs(),
            batch_size: d_batch(),
            backend: BackendKind::default(),
            precision: Precision::default(),
            checkpoint_every: 1,
            quick_epochs: None,
            stages: Vec::new(),
        }
    }
}

fn d_epochs() -> usize {
    20
}
fn d_batch() -> usize {
    64
}
fn d_one() -> usize {
    1
}

fn invalid(key: &str, message: impl Into<String>) -> TrainError {
    TrainError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Shape facts about the loaded data that the model must agree with.
#[derive(Debug, Clone, PartialEq)]
pub struct DataShape {
    /// Shape of one sample.
    pub sample_shape: Vec<usize>,
    /// Condition width.
    pub cond_dim: usize,
}

impl DataShape {
    /// Values per sample.
    pub fn features(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Channels-first shape for convolutions: `[L]` becomes `[1, L]`.
    pub fn conv_shape(&self) -> Option<Vec<usize>> {
        match self.sample_shape.len() {
            1 => Some(vec![1, self.sample_shape[0]]),
            2 | 3 => Some(self.sample_shape.clone()),
            _ => None,
        }
    }
}

/// Read a config file's text (errors name the file).
pub fn read_config(path: &Path) -> Result<String, TrainError> {
    std::fs::read_to_string(path).map_err(|e| TrainError::Config {
        path: path.to_path_buf(),
        message: format!("cannot read config: {e}"),
    })
}

/// Deserialize TOML into `T`; a syntax or schema error becomes one line naming `origin` and the
/// line number.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &Path,
) -> Result<T, TrainError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| format!(" (line {})", text[..s.start].lines().count().max(1)))
            .unwrap_or_default();
        TrainError::Config {
            path: origin.to_path_buf(),
            message: format!("{}{line}", e.message().trim().replace('\n', "; ")),
        }
    })
}

impl TrainConfig {
    /// Parse a TOML string; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, TrainError> {
        let config: TrainConfig = parse_toml(text, origin)?;
        config.validate()?;
        Ok(config)
    }

    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        Self::from_toml(&read_config(path)?, path)
    }

    /// Serialise to TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Range checks that do not need the data.
    pub fn validate(&self) -> Result<(), TrainError> {
        let s = &self.split;
        if !(s.test_fraction > 0.0 && s.test_fraction < 1.0) {
            return Err(invalid(
                "split.test_fraction",
                format!("must be in (0, 1), got {}", s.test_fraction),
            ));
        }
        let m = &self.model;
        if m.latent_dim == 0 {
            return Err(invalid("model.latent_dim", "must be at least 1"));
        }
        if m.hidden.contains(&0) {
            return Err(invalid("model.hidden", "widths must be at least 1"));
        }
        if m.channels.is_empty() || m.channels.contains(&0) {
            return Err(invalid(
                "model.channels",
                "needs at least one channel count, each ≥ 1",
            ));
        }
        if m.kernel % 2 == 0 {
            return Err(invalid(
                "model.kernel",
                format!("must be odd, got {}", m.kernel),
            ));
        }
        if m.posterior == PosteriorKind::Flow {
            if !matches!(
                m.kind,
                ModelKind::Vae | ModelKind::Cvae | ModelKind::PhysVae
            ) {
                return Err(invalid(
                    "model.posterior",
                    "a flow posterior is built for kind = \"vae\", \"cvae\" and \"phys-vae\" (npe is a flow already; pddlvm uses Gaussian posteriors)",
                ));
            }
            if m.kind != ModelKind::PhysVae && m.latent_dim < 2 {
                return Err(invalid(
                    "model.latent_dim",
                    "a flow posterior needs latent_dim ≥ 2 (a 1-D flow is a monotone map a Gaussian with learned mean and variance nearly covers)",
                ));
            }
            if m.kind != ModelKind::PhysVae && self.objective.kl != KlName::MonteCarlo {
                return Err(invalid(
                    "objective.kl",
                    "a flow posterior has no closed-form KL: set kl = \"monte-carlo\"",
                ));
            }
            if m.flow_layers == 0 {
                return Err(invalid("model.flow_layers", "must be at least 1"));
            }
        }
        if m.prior == PriorKind::Learned && m.kind != ModelKind::Cvae {
            return Err(invalid(
                "model.prior",
                "a learned prior needs model.kind = \"cvae\"",
            ));
        }
        if let Some(r) = &self.objective.residual {
            let positive = |v: f64| v > 0.0 && v.is_finite();
            if !positive(r.sigma) {
                return Err(invalid(
                    "objective.residual.sigma",
                    format!("must be > 0, got {}", r.sigma),
                ));
            }
            if let Some(b) = r.boundary_sigma
                && !positive(b)
            {
                return Err(invalid(
                    "objective.residual.boundary_sigma",
                    format!("must be > 0, got {b}"),
                ));
            }
            if !positive(r.u_scale) {
                return Err(invalid(
                    "objective.residual.u_scale",
                    format!("must be > 0, got {}", r.u_scale),
                ));
            }
            if r.schedule == SigmaScheduleName::Anneal && !r.anneal_from.is_some_and(positive) {
                return Err(invalid(
                    "objective.residual.anneal_from",
                    "schedule = \"anneal\" needs anneal_from > 0 (the starting σ_r)",
                ));
            }
        }
        if self.objective.residual.is_some() && m.kind == ModelKind::Vae {
            return Err(invalid(
                "objective.residual",
                "a PDE residual needs the parameters of each sample: use kind = \"cvae\" (a surrogate parameters → solution) or \"pddlvm\"",
            ));
        }
        if !self.objective.data_likelihood
            && !(m.kind == ModelKind::Cvae && self.objective.residual.is_some())
        {
            return Err(invalid(
                "objective.data_likelihood",
                "false (train without solution labels) needs kind = \"cvae\" and [objective.residual]",
            ));
        }
        if m.kind == ModelKind::Cvae
            && self.objective.residual.is_some()
            && self.data.physics().is_none()
        {
            return Err(invalid(
                "objective.residual",
                "a CVAE residual needs a physics data source ([data] kind = \"darcy\", \"poisson1d\", ...)",
            ));
        }
        if m.kind == ModelKind::Pddlvm {
            if self.objective.residual.is_none() {
                return Err(invalid(
                    "objective.residual",
                    "kind = \"pddlvm\" trains on the PDE residual: add [objective.residual] with sigma = ...",
                ));
            }
            if self.data.physics().is_none() {
                return Err(invalid(
                    "data.kind",
                    "kind = \"pddlvm\" needs a physics data source (darcy, poisson1d, burgers, heat, pendulum)",
                ));
            }
        }
        if m.kind == ModelKind::Npe {
            if self.objective.observations.is_none() {
                return Err(invalid(
                    "objective.observations",
                    "kind = \"npe\" learns q(z | y) from noisy observations y: add [objective.observations] with sigma = ...",
                ));
            }
            if self.data.physics().is_none() {
                return Err(invalid(
                    "data.kind",
                    "kind = \"npe\" simulates its training pairs: use a physics data source (darcy, poisson1d, burgers, heat, pendulum)",
                ));
            }
            if m.flow_layers == 0 {
                return Err(invalid("model.flow_layers", "must be at least 1"));
            }
        }
        if self.objective.physvae.correlated_noise {
            if !self.objective.physvae.learn_noise {
                return Err(invalid(
                    "objective.physvae.correlated_noise",
                    "the AR(1) noise model is learned with its scale: set learn_noise = true too",
                ));
            }
            if !matches!(
                self.data.physics().map(|(_, p)| p),
                Some(PhysicsSettings::Pendulum(_))
            ) {
                return Err(invalid(
                    "objective.physvae.correlated_noise",
                    "the AR(1) noise runs along the observation vector, which must be one time series: only [data] kind = \"pendulum\" observes one",
                ));
            }
        }
        if m.kind == ModelKind::PhysVae {
            if self.objective.observations.is_none() {
                return Err(invalid(
                    "objective.observations",
                    "kind = \"phys-vae\" encodes noisy observations y: add [objective.observations] with sigma = ...",
                ));
            }
            if !matches!(
                self.data.physics().map(|(_, p)| p),
                Some(PhysicsSettings::Pendulum(_) | PhysicsSettings::Heat(_))
            ) {
                return Err(invalid(
                    "data.kind",
                    "kind = \"phys-vae\" decodes through a forward map written for the pendulum and heat problems: use [data] kind = \"pendulum\" or \"heat\"",
                ));
            }
            let pv = &self.objective.physvae;
            if pv.substeps == 0 {
                return Err(invalid("objective.physvae.substeps", "must be at least 1"));
            }
            if let Some(a) = pv.uq_alpha
                && !(a > 0.0 && a <= 1.0)
            {
                return Err(invalid(
                    "objective.physvae.uq_alpha",
                    format!("must be in (0, 1] (1: reverse KL only), got {a}"),
                ));
            }
            for (key, v) in [
                ("objective.physvae.aux_weight", pv.aux_weight),
                ("objective.physvae.augmentation", pv.augmentation),
            ] {
                if !(v >= 0.0 && v.is_finite()) {
                    return Err(invalid(key, format!("must be finite and ≥ 0, got {v}")));
                }
            }
        }
        if let Some(o) = &self.objective.observations {
            if !matches!(
                m.kind,
                ModelKind::Pddlvm | ModelKind::Npe | ModelKind::PhysVae
            ) {
                return Err(invalid(
                    "objective.observations",
                    "observations of the solution are used by kind = \"pddlvm\", \"npe\" and \"phys-vae\" models only",
                ));
            }
            if o.every == Some(0) {
                return Err(invalid(
                    "objective.observations.every",
                    "must be at least 1",
                ));
            }
            if o.every.is_some() && m.kind != ModelKind::PhysVae {
                return Err(invalid(
                    "objective.observations.every",
                    "sub-sampling in time is implemented for kind = \"phys-vae\" (the other kinds choose `count` nodes)",
                ));
            }
            if o.count.is_some() && m.kind == ModelKind::PhysVae {
                return Err(invalid(
                    "objective.observations.count",
                    "a phys-vae observes every node of the observed levels; choose the levels with `every`",
                ));
            }
            if !(o.sigma > 0.0 && o.sigma.is_finite()) {
                return Err(invalid(
                    "objective.observations.sigma",
                    format!("must be > 0, got {}", o.sigma),
                ));
            }
            if o.count == Some(0) {
                return Err(invalid(
                    "objective.observations.count",
                    "must be at least 1",
                ));
            }
        }
        let stages = &self.training.stages;
        if !stages.is_empty() {
            if m.kind != ModelKind::Pddlvm {
                return Err(invalid(
                    "training.stages",
                    "staged training is for kind = \"pddlvm\" models",
                ));
            }
            if stages.iter().any(|s| s.epochs == 0) {
                return Err(invalid("training.stages", "each stage needs epochs ≥ 1"));
            }
            let total: usize = stages.iter().map(|s| s.epochs).sum();
            if total != self.training.epochs {
                return Err(invalid(
                    "training.stages",
                    format!(
                        "the stages last {total} epochs but training.epochs = {}; make them equal",
                        self.training.epochs
                    ),
                ));
            }
            if self.objective.observations.is_none()
                && stages.iter().any(|s| s.mode != StageMode::Physics)
            {
                return Err(invalid(
                    "training.stages",
                    "\"data\" and \"joint\" stages need [objective.observations]",
                ));
            }
        }
        let o = &self.objective;
        if !(o.sigma.is_finite() && o.sigma > 0.0) {
            return Err(invalid(
                "objective.sigma",
                format!("must be > 0, got {}", o.sigma),
            ));
        }
        if !(o.beta.is_finite() && o.beta >= 0.0) {
            return Err(invalid(
                "objective.beta",
                format!("must be ≥ 0, got {}", o.beta),
            ));
        }
        if o.n_particles == 0 {
            return Err(invalid("objective.n_particles", "must be at least 1"));
        }
        let p = &self.optimizer;
        if !(p.lr.is_finite() && p.lr > 0.0) {
            return Err(invalid(
                "optimizer.lr",
                format!("must be > 0, got {}", p.lr),
            ));
        }
        if let Some(f) = p.lr_final
            && !(f.is_finite() && f >= 0.0 && f <= p.lr)
        {
            return Err(invalid(
                "optimizer.lr_final",
                format!("must be in [0, lr = {}], got {f}", p.lr),
            ));
        }
        if let Some(c) = p.grad_clip
            && !(c.is_finite() && c > 0.0)
        {
            return Err(invalid(
                "optimizer.grad_clip",
                format!("must be > 0, got {c}"),
            ));
        }
        if !(p.weight_decay.is_finite() && p.weight_decay >= 0.0) {
            return Err(invalid(
                "optimizer.weight_decay",
                format!("must be ≥ 0, got {}", p.weight_decay),
            ));
        }
        let t = &self.training;
        if t.epochs == 0 {
            return Err(invalid("training.epochs", "must be at least 1"));
        }
        if t.batch_size == 0 {
            return Err(invalid("training.batch_size", "must be at least 1"));
        }
        if t.checkpoint_every == 0 {
            return Err(invalid("training.checkpoint_every", "must be at least 1"));
        }
        Ok(())
    }

    /// Checks that need the data's shape, e.g. a CVAE without conditions.
    pub fn check_data(&self, shape: &DataShape) -> Result<(), TrainError> {
        let m = &self.model;
        if matches!(
            m.kind,
            ModelKind::Cvae | ModelKind::Pddlvm | ModelKind::Npe | ModelKind::PhysVae
        ) && shape.cond_dim == 0
        {
            return Err(invalid(
                "model.kind",
                "\"cvae\" needs a condition per sample, but the data have none (set cond_path/cond_key in [data], or use kind = \"vae\")",
            ));
        }
        if m.kind == ModelKind::Npe && shape.cond_dim < 2 {
            return Err(invalid(
                "model.kind",
                format!(
                    "\"npe\" fits a RealNVP flow, which needs at least 2 parameters; the data have {}",
                    shape.cond_dim
                ),
            ));
        }
        let uses_unet = m.encoder == NetKind::Unet || m.decoder == NetKind::Unet;
        if uses_unet {
            let field = match shape.sample_shape.as_slice() {
                [h, w] | [1, h, w] => Some(h * w),
                _ => None,
            };
            if m.kind != ModelKind::Pddlvm || field != Some(shape.cond_dim) {
                return Err(invalid(
                    if m.decoder == NetKind::Unet {
                        "model.decoder"
                    } else {
                        "model.encoder"
                    },
                    format!(
                        "\"unet\" maps a 2-D field to a field on the same grid: it needs kind = \"pddlvm\" with parameters on the solution grid, but the samples have shape {:?} and {} parameters (use \"mlp\")",
                        shape.sample_shape, shape.cond_dim
                    ),
                ));
            }
        }
        if m.kind == ModelKind::Pddlvm && m.decoder == NetKind::Conv {
            return Err(invalid(
                "model.decoder",
                "the PDDLVM surrogate q(u|z) is \"mlp\" or \"unet\" (\"conv\" is for the inverse model, model.encoder)",
            ));
        }
        let uses_conv = m.encoder == NetKind::Conv || m.decoder == NetKind::Conv;
        if uses_conv && shape.conv_shape().is_none() {
            return Err(invalid(
                "model.encoder",
                format!(
                    "convolutions need samples shaped [L], [C, L] or [C, H, W]; the data have shape {:?} (use \"mlp\")",
                    shape.sample_shape
                ),
            ));
        }
        Ok(())
    }

    /// The likelihood config.
    pub fn likelihood(&self) -> LikelihoodConfig {
        match self.objective.likelihood {
            LikelihoodKind::Bernoulli => LikelihoodConfig::Bernoulli,
            LikelihoodKind::Gaussian => LikelihoodConfig::Gaussian(
                GaussianLikelihoodConfig::new()
                    .with_sigma(self.objective.sigma)
                    .with_noise(match self.objective.noise {
                        NoiseName::Fixed => NoiseModel::Fixed,
                        NoiseName::Learned => NoiseModel::LearnedGlobal,
                        NoiseName::Heteroscedastic => NoiseModel::Heteroscedastic,
                    }),
            ),
        }
    }

    /// The ELBO config.
    pub fn elbo(&self) -> ElboConfig {
        let o = &self.objective;
        ElboConfig::new()
            .with_beta(o.beta)
            .with_warmup_steps(o.warmup_steps)
            .with_n_particles(o.n_particles)
            .with_kl(match o.kl {
                KlName::Analytic => KlEstimator::Analytic,
                KlName::MonteCarlo => KlEstimator::MonteCarlo,
            })
    }

    fn encoder(&self, shape: &DataShape, d_cond: usize) -> EncoderConfig {
        let m = &self.model;
        let act: Activation = m.activation.into();
        match m.encoder {
            NetKind::Mlp => EncoderConfig::Mlp(
                MlpEncoderConfig::new(shape.features(), m.latent_dim)
                    .with_hidden(m.hidden.clone())
                    .with_activation(act)
                    .with_d_cond(d_cond),
            ),
            NetKind::Unet => unreachable!("check_data rejects unet outside pddlvm"),
            NetKind::Conv => EncoderConfig::Conv(
                ConvEncoderConfig::new(shape.conv_shape().expect("checked"), m.latent_dim)
                    .with_channels(m.channels.clone())
                    .with_hidden(m.hidden.clone())
                    .with_kernel(m.kernel)
                    .with_activation(act)
                    .with_d_cond(d_cond),
            ),
        }
    }

    fn decoder(&self, shape: &DataShape, d_cond: usize) -> DecoderConfig {
        let m = &self.model;
        let act: Activation = m.activation.into();
        let k = self.likelihood().params_per_datum();
        let d_in = m.latent_dim + d_cond;
        match m.decoder {
            NetKind::Mlp => DecoderConfig::Mlp(
                MlpDecoderConfig::new(d_in, k * shape.features())
                    .with_hidden(m.hidden.clone())
                    .with_activation(act),
            ),
            NetKind::Unet => unreachable!("check_data rejects unet outside pddlvm"),
            NetKind::Conv => {
                let mut out = shape.conv_shape().expect("checked");
                out[0] *= k;
                let mut channels = m.channels.clone();
                channels.reverse();
                DecoderConfig::Conv(
                    ConvDecoderConfig::new(d_in, out)
                        .with_channels(channels)
                        .with_kernel(m.kernel)
                        .with_activation(act),
                )
            }
        }
    }

    /// The PDDLVM networks: `q(u | z)` from `cond_dim` parameters to the flattened solution
    /// (`model.decoder`: dense, or a U-Net when the parameter is a field on the solution grid)
    /// and `p(z | u)` back (`model.encoder`: dense, convolutional or U-Net).
    pub fn pddlvm_config(&self, shape: &DataShape) -> PddlvmConfig {
        let m = &self.model;
        let act: Activation = m.activation.into();
        let (p, nu) = (shape.cond_dim, shape.features());
        let dense = |i: usize, o: usize| -> GaussianNetConfig {
            EncoderConfig::Mlp(
                MlpEncoderConfig::new(i, o)
                    .with_hidden(m.hidden.clone())
                    .with_activation(act),
            )
            .into()
        };
        let unet = || {
            let field = shape.conv_shape().expect("checked: a 2-D field");
            GaussianNetConfig::UNet(
                UNetConfig::new(field, 2)
                    .with_channels(m.channels.clone())
                    .with_activation(act),
            )
        };
        let forward = match m.decoder {
            NetKind::Unet => unet(),
            _ => dense(p, nu),
        };
        let inverse = match m.encoder {
            NetKind::Unet => unet(),
            NetKind::Conv => EncoderConfig::Conv(
                ConvEncoderConfig::new(shape.conv_shape().expect("checked"), p)
                    .with_channels(m.channels.clone())
                    .with_hidden(m.hidden.clone())
                    .with_kernel(m.kernel)
                    .with_activation(act),
            )
            .into(),
            NetKind::Mlp => dense(nu, p),
        };
        PddlvmConfig::new(forward, inverse)
    }

    /// The stages as `(mode, first epoch after it)`, the default filled in.
    pub fn stage_plan(&self) -> Vec<(StageMode, usize)> {
        let stages = &self.training.stages;
        if stages.is_empty() {
            let mode = match self.objective.observations {
                None => StageMode::Physics,
                Some(_) => StageMode::Joint,
            };
            return vec![(mode, self.training.epochs)];
        }
        let mut end = 0;
        stages
            .iter()
            .map(|s| {
                end += s.epochs;
                (s.mode, end)
            })
            .collect()
    }

    /// Shrink the run to `epochs` (for `--quick`), scaling the stages in proportion (each keeps
    /// at least one epoch).
    pub fn shrink_to(&mut self, epochs: usize) {
        let t = &mut self.training;
        if !t.stages.is_empty() {
            let total = t.epochs as f64;
            for s in &mut t.stages {
                s.epochs = ((s.epochs as f64 * epochs as f64 / total).round() as usize).max(1);
            }
            t.epochs = t.stages.iter().map(|s| s.epochs).sum();
        } else {
            t.epochs = epochs;
        }
    }

    /// The virtual-observation likelihood of `[objective.residual]`.
    pub fn residual_likelihood(&self) -> Option<ResidualLikelihoodConfig> {
        let r = self.objective.residual.as_ref()?;
        let schedule = match r.schedule {
            SigmaScheduleName::Fixed => SigmaSchedule::Fixed,
            SigmaScheduleName::Learned => SigmaSchedule::Learned,
            SigmaScheduleName::Anneal => SigmaSchedule::Anneal {
                initial: r.anneal_from.unwrap_or(r.sigma),
                steps: r.anneal_steps,
            },
        };
        Some(
            ResidualLikelihoodConfig::new(r.sigma)
                .with_boundary_sigma(r.boundary_sigma)
                .with_schedule(schedule),
        )
    }

    /// The flow on top of the encoder's Gaussian (`posterior = "flow"`), with the model's
    /// hidden widths and activation.
    pub fn posterior_flow(&self) -> Option<PosteriorFlowConfig> {
        (self.model.posterior == PosteriorKind::Flow).then(|| {
            PosteriorFlowConfig::new()
                .with_layers(self.model.flow_layers)
                .with_hidden(self.model.hidden.clone())
        })
    }

    /// The model config for data of the given shape (VAE / CVAE).
    pub fn model_config(&self, shape: &DataShape) -> ModelConfig {
        match self.model.kind {
            ModelKind::Vae => ModelConfig::Vae(
                VaeConfig::new(self.encoder(shape, 0), self.decoder(shape, 0))
                    .with_flow(self.posterior_flow()),
            ),
            ModelKind::Pddlvm | ModelKind::Npe | ModelKind::PhysVae => {
                unreachable!("pddlvm, npe and phys-vae runs build their own models")
            }
            ModelKind::Cvae => {
                let c = shape.cond_dim;
                let prior = match self.model.prior {
                    PriorKind::Standard => CvaePriorConfig::Standard,
                    PriorKind::Learned => CvaePriorConfig::Learned(
                        LearnedPriorConfig::new()
                            .with_hidden(self.model.hidden.clone())
                            .with_activation(self.model.activation.into()),
                    ),
                };
                ModelConfig::Cvae(
                    CvaeConfig::new(self.encoder(shape, c), self.decoder(shape, c), c)
                        .with_prior(prior)
                        .with_flow(self.posterior_flow()),
                )
            }
        }
    }
}

/// The library-level model config derived from a [`TrainConfig`].
#[derive(Debug, Clone)]
pub enum ModelConfig {
    /// VAE.
    Vae(VaeConfig),
    /// CVAE.
    Cvae(CvaeConfig),
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
seed = 1
[data]
kind = "heat1d"
n = 50
grid = 16
[model]
latent_dim = 4
"#;

    fn parse(extra: &str) -> Result<TrainConfig, TrainError> {
        TrainConfig::from_toml(&format!("{BASE}{extra}"), Path::new("test.toml"))
    }

    #[test]
    fn defaults_fill_in_and_round_trip() {
        let c = parse("").unwrap();
        assert_eq!(c.training.epochs, 20);
        assert_eq!(c.objective.n_particles, 1);
        let again = TrainConfig::from_toml(&c.to_toml(), Path::new("x")).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_key_named() {
        let e = parse("[optimizer]\nlearning_rate = 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("learning_rate") && !e.contains('\n'), "{e}");
        let e = TrainConfig::from_toml(
            "[data]\nkind = \"heat1d\"\ngird = 3\n[model]\n",
            Path::new("t"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("gird"), "{e}");
        let e = parse("[model]\n").unwrap_err().to_string();
        assert!(e.contains("model") || e.contains("duplicate"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        let e = parse("[optimizer]\nlr = -0.1\n").unwrap_err().to_string();
        assert!(e.contains("optimizer.lr"), "{e}");
        let e = parse("[training]\nepochs = 0\n").unwrap_err().to_string();
        assert!(e.contains("training.epochs"), "{e}");
        let e = parse("[objective]\nsigma = 0\n").unwrap_err().to_string();
        assert!(e.contains("objective.sigma"), "{e}");
        let e = parse("[split]\ntest_fraction = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("split.test_fraction"), "{e}");
    }

    #[test]
    fn flow_posteriors_need_a_monte_carlo_kl_and_a_model_that_has_one() {
        let with = |model: &str, extra: &str| {
            TrainConfig::from_toml(
                &format!("{}{extra}", BASE.replace("latent_dim = 4\n", model)),
                Path::new("t"),
            )
        };
        let flow = "latent_dim = 4\nposterior = \"flow\"\n";
        let e = with(flow, "").unwrap_err().to_string();
        assert!(
            e.contains("objective.kl") && e.contains("monte-carlo"),
            "{e}"
        );
        let ok = with(flow, "[objective]\nkl = \"monte-carlo\"\n").unwrap();
        assert_eq!(ok.posterior_flow().map(|f| f.layers), Some(6));
        let e = with(
            "latent_dim = 1\nposterior = \"flow\"\n",
            "[objective]\nkl = \"monte-carlo\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("model.latent_dim"), "{e}");
        let e = with("latent_dim = 4\nkind = \"npe\"\nposterior = \"flow\"\n", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.posterior"), "{e}");
        assert!(parse("").unwrap().posterior_flow().is_none());
    }

    #[test]
    fn correlated_noise_needs_a_learned_scale_and_one_time_series() {
        let physvae = |extra: &str, kind: &str| {
            TrainConfig::from_toml(
                &format!(
                    "[data]\nkind = \"{kind}\"\nn = 8\n[model]\nkind = \"phys-vae\"\n[objective.observations]\nsigma = 0.01\n[objective.physvae]\n{extra}"
                ),
                Path::new("t"),
            )
        };
        let e = physvae("correlated_noise = true\n", "pendulum")
            .unwrap_err()
            .to_string();
        assert!(e.contains("learn_noise"), "{e}");
        let both = "learn_noise = true\ncorrelated_noise = true\n";
        let e = physvae(both, "heat").unwrap_err().to_string();
        assert!(
            e.contains("objective.physvae.correlated_noise") && e.contains("pendulum"),
            "{e}"
        );
        assert!(physvae(both, "pendulum").is_ok());
    }

    #[test]
    fn cvae_without_conditions_is_rejected() {
        let mut c = parse("").unwrap();
        c.model.kind = ModelKind::Cvae;
        let e = c
            .check_data(&DataShape {
                sample_shape: vec![16],
                cond_dim: 0,
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.kind"), "{e}");
    }
}
