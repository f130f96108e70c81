//! `kind = "phys-vae"`: physics-integrated VAEs (Takeishi & Kalousis 2021; primer §3.1).
//!
//! The data come from the full simulator (pendulum: damped and forced; heat: advection and
//! diffusion); the decoder's physics is deliberately incomplete, as in phys-vae:
//!
//! - pendulum: `z_phys = (θ0, ω)` through `θ″ = −ω² sin θ` (RK4, `Pendulum::forward_map` with
//!   `γ = A = 0`); damping and forcing are left to `z_aux`;
//! - heat: `z_phys = (D, a)` through `u_t = D u_xx`, `u(x, 0) = a sin x` (θ-scheme,
//!   `AdvectionDiffusion::forward_map` with `c = 0`); advection is left to `z_aux`.
//!
//! Each step observes `y = H u + σ_y ε` afresh (`H`: every `every`-th level, all nodes) and
//! minimises [`PhysVaeLoss`] plus the physics-augmentation regulariser on `G†(θ(s)) + σ_y ε`,
//! `s ~ N(0, I)`, optionally the UQ-VAE term and a learned (AR(1)) noise model. `varphi eval`
//! scores the posterior of the physical parameters against the simulator's true values
//! (relative error of the posterior mean, coverage, CRPS).

use crate::calibration::Role;
use crate::config::{
    ActivationName, Common, SectionError, check_hidden, d_activation, d_hidden, invalid,
    kind_sections, to_table,
};
use crate::data::{RunData, TrainData};
use crate::error::TrainError;
use crate::host::{mean_of, per_sample, repeat_rows, values};
use crate::kind::{Kind, Loaded, Prediction, input_rows};
use crate::latent::{PosteriorName, d_flow_layers};
use crate::noise::{NoiseSource, Stream};
use crate::tables::print_parameter_table;
use crate::trainer::{Objective, StepOutput};
use crate::uq::UqScores;
use burn::module::Param;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use varphi_data::physics::PhysicsSettings;
use varphi_losses::{ObservationOperator, PhysVaeLoss, PhysVaeNoise};
use varphi_models::{Mlp, MlpConfig, PhysVae as PhysVaeNet, PhysVaeConfig, PosteriorFlowConfig};
use varphi_physics::pde::{AdvectionDiffusion, Pendulum};

/// `[model]` of a phys-vae run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysVaeModelSection {
    /// Auxiliary latent dimension (0: physics only).
    #[serde(default = "d_aux_dim")]
    pub aux_dim: usize,
    /// Hidden widths of the encoder, correction and surrogate networks.
    #[serde(default = "d_hidden")]
    pub hidden: Vec<usize>,
    /// Activation.
    #[serde(default = "d_activation")]
    pub activation: ActivationName,
    /// Posterior of the physical latents: `gaussian` or `flow`.
    #[serde(default = "d_posterior")]
    pub posterior: PosteriorName,
    /// Coupling layers of a flow posterior.
    #[serde(default = "d_flow_layers")]
    pub flow_layers: usize,
}

fn d_aux_dim() -> usize {
    2
}
fn d_posterior() -> PosteriorName {
    PosteriorName::Gaussian
}

/// `[objective.observations]` of a phys-vae run: every node of every `every`-th stored level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysVaeObservations {
    /// Noise standard deviation σ_y (physical units).
    pub sigma: f64,
    /// Observe every `every`-th stored level (from `t = 0`): sub-sampling in time.
    #[serde(default = "d_one")]
    pub every: usize,
}

fn d_one() -> usize {
    1
}

/// `[objective]` of a phys-vae run: `L = −log N(y; x, σ²) + β KL + aux_weight·‖x − x_phys‖²/2σ_y²
/// + augmentation·½‖μ_φ(G†(θ) + σ_y ε) − s‖²` (see [`PhysVaeLoss`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysVaeObjectiveSection {
    /// The observations `y` the encoder sees.
    pub observations: PhysVaeObservations,
    /// KL weight β.
    #[serde(default = "d_unit")]
    pub beta: f64,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// observation vector (its order must be time: one trajectory, e.g. the pendulum's).
    #[serde(default)]
    pub correlated_noise: bool,
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

/// The config of a `phys-vae` run.
#[derive(Debug, Clone, PartialEq)]
pub struct PhysVae {
    /// `[model]`.
    pub model: PhysVaeModelSection,
    /// `[objective]`.
    pub objective: PhysVaeObjectiveSection,
}

impl PhysVae {
    fn physics(&self, common: &Common) -> Result<PhysVaePhysics, TrainError> {
        let (_, settings) = common.physics_source("kind = \"phys-vae\"")?;
        let o = &self.objective;
        PhysVaePhysics::new(settings, o.observations.every, o.substeps).ok_or_else(|| {
            invalid(
                "data.kind",
                "kind = \"phys-vae\" decodes through a forward map written for the pendulum and heat problems: use [data] kind = \"pendulum\" or \"heat\"",
            )
        })
    }
}

/// A zero-width parameter block (data without parameters are rejected by `check_data`).
fn no_parameters(b: usize, device: &Device) -> Tensor<2> {
    Tensor::zeros([b, 0], device)
}

/// A decoder physics: physical parameters `[b, p]` → observations `[b, m]` (physical units).
pub type ForwardMap = Arc<dyn Fn(Tensor<2>) -> Tensor<2> + Send + Sync>;

/// The incomplete physics of a phys-vae run and how its parameters relate to the simulator's.
#[derive(Clone)]
pub struct PhysVaePhysics {
    /// `H ∘ G†`.
    pub map: ForwardMap,
    /// Names of the physical latents.
    pub names: Vec<String>,
    /// `[lo, hi]` of each physical latent.
    pub ranges: Vec<[f64; 2]>,
    /// Column of each physical latent in the simulator's parameter vector.
    pub columns: Vec<usize>,
    /// The observation operator `H`.
    pub operator: ObservationOperator,
}

fn widen(r: [f64; 2], frac: f64) -> [f64; 2] {
    let w = (r[1] - r[0]).max(1e-6);
    [r[0] - frac * w, r[1] + frac * w]
}

impl PhysVaePhysics {
    /// The decoder physics of `settings` (pendulum or heat), observed every `every`-th level,
    /// with `substeps` time steps per stored level; `None` for other problems.
    pub fn new(settings: PhysicsSettings, every: usize, substeps: usize) -> Option<Self> {
        Some(match settings {
            PhysicsSettings::Pendulum(s) => {
                let operator = ObservationOperator::time_subsampled(s.levels, 1, every, None);
                let pendulum =
                    Pendulum::new(varphi_physics::pde::PendulumSettings { substeps, ..s });
                let h = operator.clone();
                let map: ForwardMap = Arc::new(move |p: Tensor<2>| {
                    // [θ0, ω] → [θ0, ω, γ = 0, A = 0, f = 0]
                    let zeros = p.clone().narrow(1, 0, 1).zeros_like();
                    let z = Tensor::cat(vec![p, zeros.clone(), zeros.clone(), zeros], 1);
                    h.apply(pendulum.forward_map(z))
                });
                Self {
                    map,
                    names: vec!["theta0".into(), "omega".into()],
                    // phys-vae's physics prior: ω ∈ [0, π].
                    ranges: vec![widen(s.theta0, 0.1), [0.0, std::f64::consts::PI]],
                    columns: vec![0, 1],
                    operator,
                }
            }
            PhysicsSettings::Heat(s) => {
                let operator = ObservationOperator::time_subsampled(s.levels, s.grid, every, None);
                let theta = s.theta;
                let heat =
                    AdvectionDiffusion::new(varphi_physics::pde::AdvectionDiffusionSettings {
                        substeps,
                        ..s
                    });
                let h = operator.clone();
                let map: ForwardMap = Arc::new(move |p: Tensor<2>| {
                    // [D, a] → [D, c = 0, a]
                    let (d, a) = (p.clone().narrow(1, 0, 1), p.narrow(1, 1, 1));
                    let z = Tensor::cat(vec![d.clone(), d.zeros_like(), a], 1);
                    h.apply(heat.forward_map(z, theta))
                });
                let d_hi = s.diffusivity[1].max(1e-6);
                Self {
                    map,
                    names: vec!["D".into(), "a".into()],
                    ranges: vec![[0.02 * d_hi, 2.0 * d_hi], widen(s.amplitude, 0.1)],
                    columns: vec![0, 2],
                    operator,
                }
            }
            _ => return None,
        })
    }
}

/// The trained module.
#[derive(Module, Debug)]
pub struct PhysVaeModel {
    /// Encoder over normalised observations, physics + correction decoder.
    pub vae: PhysVaeNet,
    /// A learned surrogate `S_ψ(θ) ≈ H G†(θ)` that replaces the forward map in the decoder
    /// (`objective.physvae.surrogate = true`, for an expensive `G†`): input `(θ − lo)/(hi − lo)`,
    /// output in normalised solution units.
    pub surrogate: Option<Mlp>,
    /// `κ` of the learned likelihood noise `log σ = log σ_y + 10κ`
    /// (`objective.physvae.learn_noise`; starts at 0, i.e. at the observation noise). The
    /// factor 10 lets Adam move `log σ` by orders of magnitude within a run's steps.
    pub log_sigma: Option<Param<Tensor<1>>>,
    /// `η` of the learned AR(1) noise correlation `ρ = tanh(10η)` along the observations
    /// (`objective.physvae.correlated_noise`; starts at 0: independent noise).
    pub noise_corr: Option<Param<Tensor<1>>>,
}

/// `log σ = log σ_y + NOISE_SCALE·κ` (see [`PhysVaeModel::log_sigma`]).
const NOISE_SCALE: f64 = 10.0;
/// `ρ = tanh(CORR_SCALE·η)` (see [`PhysVaeModel::noise_corr`]).
const CORR_SCALE: f64 = 10.0;

impl PhysVaeModel {
    /// The learned `log σ`, `[1]` (`None` when the noise is fixed).
    pub fn learned_log_sigma(&self, obs_sigma: f64) -> Option<Tensor<1>> {
        self.log_sigma.as_ref().map(|kappa| {
            kappa
                .val()
                .mul_scalar(NOISE_SCALE)
                .add_scalar(obs_sigma.ln())
        })
    }

    /// The learned AR(1) correlation `ρ`, `[1]` (`None`: independent noise).
    pub fn learned_rho(&self) -> Option<Tensor<1>> {
        self.noise_corr
            .as_ref()
            .map(|eta| eta.val().mul_scalar(CORR_SCALE).tanh())
    }

    /// The learned noise model (`None`: the fixed observation noise).
    pub fn noise(&self, obs_sigma: f64) -> Option<PhysVaeNoise> {
        self.learned_log_sigma(obs_sigma)
            .map(|log_sigma| PhysVaeNoise {
                log_sigma,
                rho: self.learned_rho(),
            })
    }

    /// Build for the run's physics.
    pub fn init(kind: &PhysVae, physics: &PhysVaePhysics, device: &Device) -> Self {
        let (m, o) = (&kind.model, &kind.objective);
        let n_obs = physics.operator.len();
        let p = physics.ranges.len();
        let surrogate = o.surrogate.then(|| {
            let mut sizes = vec![p];
            sizes.extend(&m.hidden);
            sizes.push(n_obs);
            MlpConfig::new(sizes)
                .with_activation(m.activation.into())
                .init(device)
        });
        let flow = (m.posterior == PosteriorName::Flow).then(|| {
            PosteriorFlowConfig::new()
                .with_layers(m.flow_layers)
                .with_hidden(m.hidden.clone())
        });
        Self {
            vae: PhysVaeConfig::new(n_obs, n_obs, physics.ranges.clone())
                .with_aux_dim(m.aux_dim)
                .with_hidden(m.hidden.clone())
                .with_activation(m.activation.into())
                .with_flow(flow)
                .init(device),
            surrogate,
            log_sigma: o
                .learn_noise
                .then(|| Param::from_tensor(Tensor::<1>::zeros([1], device))),
            noise_corr: o
                .correlated_noise
                .then(|| Param::from_tensor(Tensor::<1>::zeros([1], device))),
        }
    }

    /// The decoder's physics: the surrogate when there is one, else `H ∘ G†`.
    pub fn decoder_physics<'a>(
        &'a self,
        objective: &'a PhysVaeObjective,
    ) -> Box<dyn Fn(Tensor<2>) -> Tensor<2> + 'a> {
        match &self.surrogate {
            Some(net) => Box::new(move |theta: Tensor<2>| {
                let device = theta.device();
                let row = |v: &[f64]| {
                    Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device)
                        .unsqueeze_dim::<2>(0)
                };
                let u = (theta - row(&self.vae.lo)) / row(&self.vae.span);
                net.forward(u)
                    .mul_scalar(objective.x_std)
                    .add_scalar(objective.x_mean)
            }),
            None => Box::new(move |theta: Tensor<2>| (objective.physics.map)(theta)),
        }
    }
}

/// The phys-vae objective.
pub struct PhysVaeObjective {
    /// Decoder physics.
    pub physics: PhysVaePhysics,
    /// ELBO + correction penalty.
    pub loss: PhysVaeLoss,
    /// Weight of the physics-augmentation regulariser.
    pub augmentation: f64,
    /// `(1 − α)/α` of the UQ-VAE supervised term (0: off).
    pub supervised: f64,
    /// Solution normalisation `u = x·x_std + x_mean`; encoder inputs are `(y − x_mean)/x_std`.
    pub x_mean: f64,
    /// Solution normalisation.
    pub x_std: f64,
    /// Parameter normalisation (per column of the data's parameters).
    pub cond_mean: Vec<f64>,
    /// Parameter normalisation.
    pub cond_std: Vec<f64>,
    /// Training noise.
    pub noise: NoiseSource,
}

impl PhysVaeObjective {
    /// Noisy observations (physical units) of normalised solutions `x`.
    pub fn observe(&self, x: Tensor<2>, noise: NoiseSource, step: usize) -> Tensor<2> {
        let clean = self
            .physics
            .operator
            .apply(x.mul_scalar(self.x_std).add_scalar(self.x_mean));
        let eps = noise.normal(clean.dims(), step, &clean.device());
        clean + eps.mul_scalar(self.loss.sigma)
    }

    /// The physical parameters `[b, p]` of the physical latents, from the data's normalised
    /// parameter columns.
    pub fn physical_truth(&self, cond: Tensor<2>) -> Tensor<2> {
        let cols: Vec<Tensor<2>> = self
            .physics
            .columns
            .iter()
            .map(|&c| {
                cond.clone()
                    .narrow(1, c, 1)
                    .mul_scalar(self.cond_std[c])
                    .add_scalar(self.cond_mean[c])
            })
            .collect();
        Tensor::cat(cols, 1)
    }

    /// Encoder input for observations `y` (physical units).
    pub fn encoder_input(&self, y: Tensor<2>) -> Tensor<2> {
        y.sub_scalar(self.x_mean).div_scalar(self.x_std)
    }
}

impl Objective<PhysVaeModel> for PhysVaeObjective {
    fn step(
        &self,
        model: &PhysVaeModel,
        x: Tensor<2>,
        cond: Option<Tensor<2>>,
        step: usize,
        noise_stream: u64,
    ) -> StepOutput {
        let noise = |k: u64| self.noise.offset(4 * noise_stream + k);
        let device = x.device();
        let b = x.dims()[0];
        let (p, a) = (model.vae.phys_dim(), model.vae.aux_dim);
        let physics = model.decoder_physics(self);
        let clean_obs = model.surrogate.as_ref().map(|_| {
            self.physics
                .operator
                .apply(x.clone().mul_scalar(self.x_std).add_scalar(self.x_mean))
        });
        let y = self.observe(x, noise(0), step);
        let out = model.vae.forward(
            self.encoder_input(y.clone()),
            noise(1).normal([b, p], step, &device),
            noise(2)
                .normal([b, a.max(1)], step, &device)
                .narrow(1, 0, a.max(1)),
            physics.as_ref(),
        );
        let learned = model.noise(self.loss.sigma);
        let terms = self.loss.forward_with_noise(y, &out, learned.clone());
        let mut loss = terms.loss.clone().mean();
        let mut reported = vec![
            ("nll", mean_of(terms.log_lik.clone().neg())),
            ("kl_phys", mean_of(terms.kl_phys.clone())),
            ("kl_aux", mean_of(terms.kl_aux.clone())),
            ("correction", mean_of(terms.correction.clone())),
        ];
        if let Some(n) = learned {
            reported.push(("sigma", mean_of(n.log_sigma.exp().detach())));
            if let Some(rho) = n.rho {
                reported.push(("rho", mean_of(rho.detach())));
            }
        }
        if let Some(clean) = clean_obs {
            // The surrogate learns the simulator's pairs (θ*, H u*) in the data's own currency.
            let theta =
                self.physical_truth(cond.clone().unwrap_or_else(|| no_parameters(b, &device)));
            let fit = (physics(theta) - clean)
                .powi_scalar(2)
                .sum_dim(1)
                .squeeze_dim::<1>(1)
                .div_scalar(2.0 * self.loss.sigma * self.loss.sigma);
            reported.push(("surrogate", mean_of(fit.clone())));
            loss = loss + fit.mean();
        }
        if self.supervised > 0.0 {
            // The simulator's true physical parameters, mapped to the unconstrained latents.
            let cond = cond.unwrap_or_else(|| no_parameters(b, &device));
            // (The latent ranges contain the simulator's parameter ranges, so the logit is finite.)
            let s_true = model.vae.to_latent(self.physical_truth(cond));
            let sup = PhysVaeLoss::supervised(&out.q_phys, s_true);
            reported.push(("supervised", mean_of(sup.clone())));
            loss = loss + sup.mean().mul_scalar(self.supervised);
        }
        if self.augmentation > 0.0 {
            // s ~ N(0, I) through the physics alone, observed with the same noise.
            let s = noise(3).normal([b, p], 2 * step, &device);
            let clean = physics(model.vae.to_physical(s.clone()));
            let y_aug = clean.clone()
                + noise(3)
                    .normal(clean.dims(), 2 * step + 1, &device)
                    .mul_scalar(self.loss.sigma);
            let (q_aug, _) = model.vae.encode(self.encoder_input(y_aug));
            let aug = PhysVaeLoss::augmentation(&q_aug, s);
            reported.push(("augmentation", mean_of(aug.clone())));
            loss = loss + aug.mean().mul_scalar(self.augmentation);
        }
        reported.push(("loss", mean_of(loss.clone().detach())));
        StepOutput {
            terms: reported,
            loss,
            beta: None,
        }
    }
}

impl Kind for PhysVae {
    const NAME: &'static str = "phys-vae";
    const SUMMARY_TERMS: &'static [&'static str] = &["loss", "nll", "kl_phys", "correction"];
    type Model = PhysVaeModel;
    type Objective = PhysVaeObjective;
    type Eval = PhysVaeEval;

    fn from_tables(model: toml::Table, objective: toml::Table) -> Result<Self, SectionError> {
        let (model, objective) = kind_sections(model, objective, Self::NAME)?;
        Ok(Self { model, objective })
    }

    fn to_tables(&self) -> (toml::Table, toml::Table) {
        (to_table(&self.model), to_table(&self.objective))
    }

    fn validate(&self, common: &Common) -> Result<(), TrainError> {
        let (m, o) = (&self.model, &self.objective);
        check_hidden(&m.hidden)?;
        if m.posterior == PosteriorName::Flow && m.flow_layers == 0 {
            return Err(invalid("model.flow_layers", "must be at least 1"));
        }
        let obs = &o.observations;
        if !(obs.sigma > 0.0 && obs.sigma.is_finite()) {
            return Err(invalid(
                "objective.observations.sigma",
                format!("must be > 0, got {}", obs.sigma),
            ));
        }
        if obs.every == 0 {
            return Err(invalid(
                "objective.observations.every",
                "must be at least 1",
            ));
        }
        if o.substeps == 0 {
            return Err(invalid("objective.substeps", "must be at least 1"));
        }
        if let Some(a) = o.uq_alpha
            && !(a > 0.0 && a <= 1.0)
        {
            return Err(invalid(
                "objective.uq_alpha",
                format!("must be in (0, 1] (1: reverse KL only), got {a}"),
            ));
        }
        for (key, v) in [
            ("objective.beta", o.beta),
            ("objective.aux_weight", o.aux_weight),
            ("objective.augmentation", o.augmentation),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(invalid(key, format!("must be finite and ≥ 0, got {v}")));
            }
        }
        let (_, settings) = common.physics_source("kind = \"phys-vae\"")?;
        if o.correlated_noise {
            if !o.learn_noise {
                return Err(invalid(
                    "objective.correlated_noise",
                    "the AR(1) noise model is learned with its scale: set learn_noise = true too",
                ));
            }
            if !matches!(settings, PhysicsSettings::Pendulum(_)) {
                return Err(invalid(
                    "objective.correlated_noise",
                    "the AR(1) noise runs along the observation vector, which must be one time series: only [data] kind = \"pendulum\" observes one",
                ));
            }
        }
        self.physics(common).map(|_| ())
    }

    fn check_data(&self, _common: &Common, data: &TrainData) -> Result<(), TrainError> {
        if data.train.cond_dim == 0 {
            return Err(invalid(
                "data.kind",
                "a phys-vae run needs the simulator's parameters of each sample (a physics data source)",
            ));
        }
        Ok(())
    }

    fn build(
        &self,
        common: &Common,
        data: &RunData,
        device: &Device,
    ) -> Result<(PhysVaeModel, PhysVaeObjective), TrainError> {
        let o = &self.objective;
        let sigma = o.observations.sigma;
        let objective = PhysVaeObjective {
            physics: self.physics(common)?,
            loss: PhysVaeLoss {
                sigma,
                beta: o.beta,
                aux_weight: o.aux_weight,
            },
            augmentation: o.augmentation,
            supervised: o.uq_alpha.map_or(0.0, |a| (1.0 - a) / a),
            x_mean: data.norm.x_mean,
            x_std: data.norm.x_std,
            cond_mean: data.norm.cond_mean.clone(),
            cond_std: data.norm.cond_std.clone(),
            noise: NoiseSource::new(common.seed, Stream::Train),
        };
        let model = PhysVaeModel::init(self, &objective.physics, device);
        Ok((model, objective))
    }

    fn evaluate(&self, run: &Loaded<Self>) -> Result<PhysVaeEval, TrainError> {
        evaluate(run)
    }

    /// Posterior samples of the physical latents for rows of observed sequences (physical
    /// units, the run's observation operator and order).
    fn predict(
        &self,
        run: &Loaded<Self>,
        inputs: &varphi_data::read::Array,
        n: usize,
    ) -> Result<Prediction, TrainError> {
        let m = run.objective.physics.operator.len();
        let rows = input_rows(inputs, m, "observed sequence")?;
        let y = Tensor::<2>::from_data(
            TensorData::new(inputs.data.clone(), [rows, m]),
            &run.device.device,
        );
        let out = posterior_pass(run, y, n);
        let p = run.model.vae.phys_dim();
        Ok(Prediction {
            samples: per_sample(values(out.params), rows, p),
            shape: vec![p],
            what: format!("({}) | y", run.objective.physics.names.join(", ")),
            // Each physical latent is recalibrated on its own (`parameters.<name>`), not jointly.
            block: None,
        })
    }

    fn print_eval(&self, r: &PhysVaeEval, dir: &Path) {
        print_parameter_table(
            dir,
            (r.n_test, r.n_samples, r.epochs),
            &format!(
                "physical latents from {} noisy observations (σ_y = {}) per case",
                r.n_obs, r.obs_sigma
            ),
            "rel_err",
            r.parameters
                .iter()
                .map(|p| (p.name.clone(), p.rel_error_mean, &p.scores))
                .collect(),
        );
        println!(
            "  reconstruction rel. L2 {:.4} (physics part alone {:.4})",
            r.reconstruction_rel_l2, r.physics_rel_l2
        );
        if let Some(sigma) = r.learned_sigma {
            println!(
                "  learned likelihood σ {sigma:.4} (observation noise σ_y = {})",
                r.obs_sigma
            );
        }
        if let Some(rho) = r.learned_rho {
            println!("  learned AR(1) noise correlation ρ {rho:.4}");
        }
    }
}

/// Scores of one physical parameter.
#[derive(Debug, Clone, Serialize)]
pub struct ParameterScores {
    /// Name (`omega`, `D`, ...).
    pub name: String,
    /// Relative error of the posterior mean, `Σ_i |E_q[θ_i] − θ*_i| / Σ_i |θ*_i|` over the cases
    /// (robust to truths near zero, e.g. the pendulum's θ0).
    pub rel_error_mean: f64,
    /// Posterior scores against the truths (rel. L2 over cases, NLL, CRPS, coverage).
    pub scores: UqScores,
}

/// `eval.json` of a phys-vae run.
#[derive(Debug, Clone, Serialize)]
pub struct PhysVaeEval {
    /// Test cases scored.
    pub n_test: usize,
    /// Posterior samples per case.
    pub n_samples: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Observed values per case.
    pub n_obs: usize,
    /// Observation noise.
    pub obs_sigma: f64,
    /// The learned likelihood noise scale (`learn_noise = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_sigma: Option<f64>,
    /// The learned AR(1) noise correlation (`correlated_noise = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_rho: Option<f64>,
    /// Per physical latent.
    pub parameters: Vec<ParameterScores>,
    /// Relative L2 of the posterior-mean reconstruction `E[x]` against the clean observations.
    pub reconstruction_rel_l2: f64,
    /// Relative L2 of the physics part alone, `E[x_phys]`, against the clean observations.
    pub physics_rel_l2: f64,
}

/// Score the physical posterior on the first (up to) 200 test cases with 256 samples each.
fn evaluate(run: &Loaded<PhysVae>) -> Result<PhysVaeEval, TrainError> {
    const S: usize = 256;
    let device = &run.device.device;
    let obj = &run.objective;
    let n = run.data.test.len().min(200);
    let idx: Vec<usize> = (0..n).collect();
    let (x, cond) = run.data.test.batch(&idx, device);
    let clean = obj
        .physics
        .operator
        .apply(x.clone().mul_scalar(obj.x_std).add_scalar(obj.x_mean));
    let seed = run.common.seed;
    let y = obj.observe(x, NoiseSource::new(seed, Stream::HeldOutObservations), 0);
    let m = y.dims()[1];
    let p = run.model.vae.phys_dim();
    let out = posterior_pass(run, y, S);
    let mean_over_samples = |t: Tensor<2>| t.reshape([S, n, m]).mean_dim(0).reshape([n, m]);
    let rel_l2 = |est: Tensor<2>| -> f64 {
        let (e, c) = (values(est), values(clean.clone()));
        let num: f64 = e.iter().zip(&c).map(|(a, b)| (a - b).powi(2)).sum();
        let den: f64 = c.iter().map(|b| b * b).sum();
        (num / den).sqrt()
    };
    let reconstruction_rel_l2 = rel_l2(mean_over_samples(out.x.clone()));
    let physics_rel_l2 = rel_l2(mean_over_samples(out.x_phys.clone()));
    let params = values(out.params); // [S·n, p], sample-major
    // [n, p] physical truths of the physical latents.
    let cond = cond.ok_or_else(|| invalid("data.kind", "the test data carry no parameters"))?;
    let truth_all = values(obj.physical_truth(cond));
    let parameters = obj
        .physics
        .names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let truth: Vec<f64> = (0..n).map(|i| truth_all[i * p + j]).collect();
            let samples: Vec<Vec<f64>> = (0..S)
                .map(|s| (0..n).map(|i| params[(s * n + i) * p + j]).collect())
                .collect();
            let abs_err: f64 = (0..n)
                .map(|i| {
                    let m: f64 = samples.iter().map(|r| r[i]).sum::<f64>() / S as f64;
                    (m - truth[i]).abs()
                })
                .sum();
            let rel_error_mean = abs_err / truth.iter().map(|t| t.abs()).sum::<f64>();
            ParameterScores {
                name: name.clone(),
                rel_error_mean,
                scores: run.scorer.score(
                    &format!("parameters.{name}"),
                    &samples,
                    &truth,
                    n,
                    Role::Posterior,
                ),
            }
        })
        .collect();
    Ok(PhysVaeEval {
        n_test: n,
        n_samples: S,
        epochs: run.epochs_done,
        n_obs: m,
        obs_sigma: obj.loss.sigma,
        learned_sigma: run
            .model
            .learned_log_sigma(obj.loss.sigma)
            .map(|l| l.exp().into_scalar::<f64>()),
        learned_rho: run.model.learned_rho().map(|r| r.into_scalar::<f64>()),
        parameters,
        reconstruction_rel_l2,
        physics_rel_l2,
    })
}

/// The encoder–decoder pass of `s` posterior samples for each row of physical observations
/// `y` `[n, m]`, with the evaluation's held-out noise streams.
fn posterior_pass(run: &Loaded<PhysVae>, y: Tensor<2>, s: usize) -> varphi_models::PhysVaeOutput {
    let device = &run.device.device;
    let (obj, seed) = (&run.objective, run.common.seed);
    let n = y.dims()[0];
    let vae = &run.model.vae;
    let (p, a) = (vae.phys_dim(), vae.aux_dim);
    vae.forward(
        repeat_rows(obj.encoder_input(y), s),
        NoiseSource::new(seed, Stream::HeldOutPosterior).normal([s * n, p], 0, device),
        NoiseSource::new(seed, Stream::HeldOutAuxiliary)
            .normal([s * n, a.max(1)], 0, device)
            .narrow(1, 0, a.max(1)),
        run.model.decoder_physics(obj).as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use crate::tests_common::*;

    const BASE: &str =
        "[data]\nkind = \"pendulum\"\nn = 40\n[model]\nkind = \"phys-vae\"\nhidden = [16]\n";

    #[test]
    fn keys_of_other_kinds_are_rejected_naming_the_key_and_the_kind() {
        rejects(
            &format!("{BASE}latent_dim = 3\n[objective.observations]\nsigma = 0.01\n"),
            &["`latent_dim`", "[model]", "phys-vae", "aux_dim"],
        );
        rejects(
            &format!(
                "{BASE}[objective]\nkl = \"analytic\"\n[objective.observations]\nsigma = 0.01\n"
            ),
            &["`kl`", "[objective]", "phys-vae", "uq_alpha"],
        );
        rejects(
            &format!("{BASE}[objective.observations]\nsigma = 0.01\ncount = 4\n"),
            &["`count`", "[objective.observations]", "phys-vae", "every"],
        );
        rejects(
            &format!(
                "{BASE}[objective]\ncorrelated_noise = true\n[objective.observations]\nsigma = 0.01\n"
            ),
            &["objective.correlated_noise", "learn_noise"],
        );
        rejects(
            "[data]\nkind = \"poisson1d\"\nn = 8\n[model]\nkind = \"phys-vae\"\n[objective.observations]\nsigma = 0.01\n",
            &["data.kind", "pendulum"],
        );
    }

    #[test]
    fn one_step_changes_the_weights_and_eval_matches_a_reload() {
        let config = format!(
            "seed = 2\n{BASE}aux_dim = 1\n[objective]\nlearn_noise = true\n[objective.observations]\nsigma = 0.01\n[training]\nepochs = 2\nbatch_size = 8\n"
        );
        one_step_changes_the_weights(&config);
        eval_of_a_trained_run_is_reproducible(&config, "parameters");
    }
}
