//! `kind = "dvae"`: the Φ-DVAE of primer eqs. 23–24 on sequences of image frames
//! (`[data] kind = "advection-video"` or `"lorenz-fields"`, or frames from a file with the
//! set-up in `[objective.setup]`, [`crate::sequence_setup`]). Each sample is one sequence
//! `y_{1:N}`; a per-frame encoder gives pseudo-observations `x_n` of the latent state (every
//! `observe_every`-th node), a Kalman filter (advection–diffusion) or extended Kalman filter
//! (Lorenz-63) integrates the latent state out, and an amortised Gaussian `q_λ(ξ | y_{1:N})`
//! over the standardised parameters (`(c, log D)` or `log (σ, ρ, β)`) is fitted by the bound
//! of [`varphi_losses::DvaeElbo`]. The last `forecast` frames of each sequence are never seen by
//! the model: evaluation forecasts them.
//!
//! `transition = "learned-linear"` is the KVAE-style baseline in the same code: the same
//! encoder, decoder and filter with a learned matrix `A` in place of the physics (no `Λ`).
//!
//! Evaluation (`eval.json`), on up to 200 test sequences: the posterior of `Λ` against the
//! truth (coverage, SBC, TARP) — the exact `p(Λ | x_{1:N})` of the trained latent model on a
//! zooming grid, pooled over 4 encoder draws `x ~ q_φ(x | y)` (the non-amortised Φ-DVAE
//! posterior, `p(Λ | y) ≈ ∫ p(Λ | x) q_φ(x | y) dx`), beside the
//! amortised `q_λ` (its amortisation gap); the RTS-smoothed latent states against the true
//! states (advection: in the set-up's units, divided by the amplitude `a` the learned `P₀`
//! scale implies; relative L2, also after the best affine map — the encoder fixes the state
//! only up to a monotone map, and Lorenz's `(X, Y)` only up to sign — and coverage, mixed over
//! 8 posterior draws of `Λ`), the forecast of the held-out states (the filter's prediction
//! step: linearised moments for Lorenz) and frames (with persistence for scale), and the
//! frames' reconstruction.

use crate::calibration::Role;
use crate::config::{
    ActivationName, Common, SectionError, check_hidden, d_activation, d_hidden, invalid,
    kind_sections, to_table,
};
use crate::data::{RunData, TrainData};
use crate::error::{TrainError, io_err};
use crate::host::{mean_of, per_parameter, values};
use crate::kind::{Kind, Loaded, SampleRequest};
use crate::noise::{NoiseSource, Stream};
use crate::sequence_setup::{SequenceModel, SequenceSetup};
use crate::tables::{coverage, print_parameter_table};
use crate::trainer::{Objective, StepOutput};
use crate::uq::UqScores;
use burn::module::Param;
use burn::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::path::Path;
use varphi_losses::kalman::rts_smooth;
use varphi_losses::{
    Draws, DvaeElbo, GaussianLikelihoodConfig, GaussianVi, LatentPhysics, LearnedLinear,
    Likelihood, LikelihoodConfig, NoiseModel, SIGMA_GAIN,
};
use varphi_models::decoder::{DecoderConfig, MlpDecoderConfig};
use varphi_models::distributions::DiagGaussian;
use varphi_models::encoder::{EncoderConfig, MlpEncoderConfig};
use varphi_models::mlp::MlpConfig;
use varphi_models::{
    ColumnNetsConfig, CurveNetsConfig, Dvae, DvaeConfig, FrameNetsConfig, KnownDecoderNetsConfig,
    ParameterPrior,
};
use varphi_physics::dynamics::Dynamics;

/// The latent transition of a dvae run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransitionName {
    /// The known physics with unknown `Λ` (Φ-DVAE).
    #[default]
    Physics,
    /// A learned matrix `A`, no physics, no `Λ` (KVAE-style baseline).
    LearnedLinear,
}

/// The per-frame networks of a dvae run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkName {
    /// Column networks: periodic 1-D convolutions over the frame's columns
    /// ([`varphi_models::ColumnNetsConfig`]); every node observed (advection only).
    #[default]
    Columns,
    /// Dense MLPs on the flattened frame.
    Dense,
}

/// The frame decoder of a dvae run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecoderName {
    /// Learned with the encoder (`network`).
    #[default]
    Learned,
    /// The set-up's own rendering, known and fixed (a physics-informed decoder): the curve
    /// frames of `advection-video` (with column encoders) or the linear fields of
    /// `lorenz-fields` (with a dense encoder plus the rendering's least-squares inverse).
    Known,
}

/// How the pseudo-observation noise `R` of a dvae run is parameterised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseName {
    /// One variance for every observed component: `R = r² I` (exchangeable nodes, advection).
    #[default]
    Shared,
    /// One variance per observed component: `R = diag(r_1², …, r_m²)` (components the encoder
    /// recovers with different accuracy, e.g. Lorenz's `X` vs `Y`, `Z`).
    PerComponent,
}

/// `[model]` of a dvae run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DvaeModelSection {
    /// The frame encoder and decoder.
    #[serde(default)]
    pub network: NetworkName,
    /// Learn the decoder, or use the set-up's known rendering.
    #[serde(default)]
    pub decoder: DecoderName,
    /// Half-window `k` of column networks (they see `2k + 1` columns).
    #[serde(default = "d_half_window")]
    pub half_window: usize,
    /// Hidden widths of the frame encoder and decoder.
    #[serde(default = "d_hidden")]
    pub hidden: Vec<usize>,
    /// Activation of the networks.
    #[serde(default = "d_activation")]
    pub activation: ActivationName,
    /// The pseudo-observations are the latent state at every `observe_every`-th node (`H`).
    #[serde(default = "d_every")]
    pub observe_every: usize,
    /// The latent transition.
    #[serde(default)]
    pub transition: TransitionName,
    /// Hidden widths of the amortisation network of `q_λ(ξ | y_{1:N})`.
    #[serde(default = "d_amortise")]
    pub amortise_hidden: Vec<usize>,
}

fn d_every() -> usize {
    1
}
fn d_half_window() -> usize {
    1
}
fn d_amortise() -> Vec<usize> {
    vec![128]
}
fn d_forecast() -> usize {
    4
}
fn d_noise_sd() -> f64 {
    0.1
}
fn d_true() -> bool {
    true
}
fn d_frame_sigma() -> f64 {
    0.2
}

/// `[objective]` of a dvae run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DvaeObjectiveSection {
    /// Frames at the end of each sequence held out of training (forecast in `eval`).
    #[serde(default = "d_forecast")]
    pub forecast: usize,
    /// Initial sd `√R` of the pseudo-observation noise.
    #[serde(default = "d_noise_sd")]
    pub noise_sd: f64,
    /// Learn `R`.
    #[serde(default = "d_true")]
    pub learn_noise: bool,
    /// `R`'s parameterisation: one variance for every observed component, or one each.
    #[serde(default)]
    pub noise: NoiseName,
    /// Learn the scale and length of the process noise `Q` (else the set-up's).
    #[serde(default = "d_true")]
    pub learn_process: bool,
    /// Learn the scale of the initial covariance `P₀`: the encoder fixes the latent state only
    /// up to its amplitude, and `P₀`, `Q` learned with it keep the filter consistent with the
    /// amplitude it settles on (with both fixed, the encoder stretched the state by ~1.3 and
    /// the posterior of `c` covered 0.79 at 90 %; learned, 0.90).
    #[serde(default = "d_true")]
    pub learn_initial: bool,
    /// Initial σ of the Gaussian frame likelihood, in normalised pixel units (learned).
    #[serde(default = "d_frame_sigma")]
    pub frame_sigma: f64,
    /// The physics set-up of the frames ([`SequenceSetup`]: `problem = "advection-video"`,
    /// the default, or `"lorenz-fields"`, with that problem's settings); default: the `[data]`
    /// settings of a generated source (required for frames from a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<SequenceSetup>,
}

/// The config of a `dvae` run.
#[derive(Debug, Clone, PartialEq)]
pub struct DvaeKind {
    /// `[model]`.
    pub model: DvaeModelSection,
    /// `[objective]`.
    pub objective: DvaeObjectiveSection,
}

/// The trained module: the Φ-DVAE, its frame likelihood and the learned noise of the latent
/// model.
#[derive(Module, Debug)]
pub struct DvaeModel {
    /// Encoder, decoder and `q_λ`.
    pub dvae: Dvae,
    /// The frame likelihood (learned σ).
    pub likelihood: Likelihood,
    /// `κ` of `√R`, `log √R = log noise_sd + SIGMA_GAIN·κ` ([`DvaeModel::log_noise_sd`]):
    /// `[1]` (shared) or `[m]` (per component), starting at 0. The gain lets Adam move `√R`
    /// by a factor of several within a run: unscaled, `log √R` stayed within 3 % of its start
    /// (0.1 or 0.03) over 1 900 steps, while the bound preferred 0.1 to 0.03 by 207 nats per
    /// sequence and the posterior's calibration hinged on it (docs/experiments.md).
    pub noise_kappa: Param<Tensor<1>>,
    /// The initial `√R` (`[objective] noise_sd`).
    pub noise_sd: f64,
    /// `log` of `Q`'s parameters ([`SequenceSetup::process_init`]: scale and length, or sd).
    pub log_process: Param<Tensor<1>>,
    /// `log` of `P₀`'s scale, `[1]`.
    pub log_initial_scale: Param<Tensor<1>>,
    /// `A` of the learned-linear baseline, `[d, d]`.
    pub transition: Option<Param<Tensor<2>>>,
}

impl DvaeModel {
    /// `log √R = log noise_sd + SIGMA_GAIN·κ`, `[1]` or `[m]`.
    pub fn log_noise_sd(&self) -> Tensor<1> {
        self.noise_kappa
            .val()
            .mul_scalar(SIGMA_GAIN)
            .add_scalar(self.noise_sd.ln())
    }

    /// The learned `√R` on the host, one value or one per component.
    pub fn learned_noise_sd(&self) -> Vec<f64> {
        values(self.log_noise_sd())
            .iter()
            .map(|l| l.exp())
            .collect()
    }
}

/// The dvae objective: the negative Φ-DVAE bound on the first `frames − forecast` frames.
pub struct DvaeObjective {
    /// The physics set-up.
    pub latent: SequenceModel,
    /// `p(Λ)`.
    pub prior: ParameterPrior,
    /// Observed nodes (rows of `H`).
    pub observed: Vec<usize>,
    /// Frames the model trains on.
    pub train_frames: usize,
    /// Sequences of the training split.
    pub sequences: usize,
    /// Learn `R`.
    pub learn_noise: bool,
    /// Learn `Q`.
    pub learn_process: bool,
    /// Learn `P₀`'s scale.
    pub learn_initial: bool,
    /// Training noise.
    pub noise: NoiseSource,
}

impl DvaeObjective {
    /// The physics set-up.
    pub fn setup(&self) -> &SequenceSetup {
        &self.latent.setup
    }

    /// Values per frame.
    fn pixels(&self) -> usize {
        self.setup().frame_pixels()
    }

    /// `H`, `[m, d]`.
    fn observation(&self, device: &Device) -> Tensor<2> {
        let d = self.setup().state_dim();
        let mut h = vec![0.0; self.observed.len() * d];
        for (j, &node) in self.observed.iter().enumerate() {
            h[j * d + node] = 1.0;
        }
        Tensor::from_data(TensorData::new(h, [self.observed.len(), d]), device)
    }

    /// `Q`'s parameters (learned or the set-up's), `[k]`.
    fn process_params(&self, model: &DvaeModel) -> Tensor<1> {
        let p = model.log_process.val();
        let p = if self.learn_process { p } else { p.detach() };
        p.exp()
    }

    /// `P₀`'s scale (learned or the set-up's), `[1]`.
    fn initial_scale(&self, model: &DvaeModel) -> Tensor<1> {
        let l = model.log_initial_scale.val();
        let l = if self.learn_initial { l } else { l.detach() };
        l.exp()
    }

    /// `diag R`, `[1, m]`.
    fn noise_var(&self, model: &DvaeModel) -> Tensor<2> {
        let l = model.log_noise_sd();
        let l = if self.learn_noise { l } else { l.detach() };
        let k = l.dims()[0];
        let v = (l * 2.0).exp().reshape([1, k]);
        if k == self.observed.len() {
            v
        } else {
            v.repeat_dim(1, self.observed.len())
        }
    }

    /// The latent state-space model around the pseudo-observations.
    fn physics<'a>(
        &'a self,
        model: &DvaeModel,
        dynamics: &'a dyn Dynamics,
        device: &Device,
    ) -> LatentPhysics<'a> {
        let (initial_mean, initial_cov) = self.latent.initial(self.initial_scale(model));
        LatentPhysics {
            dynamics,
            prior: model.transition.is_none().then_some(&self.prior),
            process: self.setup().process(self.process_params(model)),
            observation: self.observation(device),
            noise: self.noise_var(model),
            initial_mean,
            initial_cov,
        }
    }

    /// `f` of the latent model of `model`'s transition (the physics, or the learned `A`).
    fn with_physics<R>(
        &self,
        model: &DvaeModel,
        device: &Device,
        f: impl FnOnce(&LatentPhysics) -> R,
    ) -> R {
        let physics = self.setup().dynamics();
        let learned = model
            .transition
            .as_ref()
            .map(|a| LearnedLinear { matrix: a.val() });
        let dynamics: &dyn Dynamics = match &learned {
            Some(l) => l,
            None => physics.as_ref(),
        };
        f(&self.physics(model, dynamics, device))
    }

    /// Frames `x: [b, N·P]` (normalised) as the training frames `[b, N_train, P]`.
    fn training_frames(&self, x: Tensor<2>) -> Tensor<3> {
        let b = x.dims()[0];
        x.reshape([b, self.setup().frames(), self.pixels()])
            .narrow(1, 0, self.train_frames)
    }
}

impl Objective<DvaeModel> for DvaeObjective {
    fn step(
        &self,
        model: &DvaeModel,
        x: Tensor<2>,
        _cond: Option<Tensor<2>>,
        step: usize,
        noise_stream: u64,
    ) -> StepOutput {
        let device = x.device();
        let b = x.dims()[0];
        let y = self.training_frames(x);
        let noise = self.noise.offset(noise_stream);
        let m = self.observed.len();
        let eps_x = noise.normal([1, b * self.train_frames, m], 2 * step, &device);
        let eps_xi = noise.normal([b, 1, self.prior.dim()], 2 * step + 1, &device);
        let out = self.with_physics(model, &device, |physics| {
            DvaeElbo {
                sequences: self.sequences,
            }
            .forward(&model.dvae, &model.likelihood, physics, y, eps_x, eps_xi)
        });
        let noise_sd = mean_of(model.log_noise_sd().detach().exp());
        StepOutput {
            terms: vec![
                ("loss", mean_of(out.loss.clone().detach())),
                ("reconstruction", mean_of(out.reconstruction)),
                ("encoder_entropy", mean_of(out.encoder_entropy)),
                ("dynamics", mean_of(out.dynamics)),
                ("kl", mean_of(out.kl)),
                ("noise_sd", noise_sd),
            ],
            loss: out.loss,
            beta: None,
        }
    }
}

/// Scores of latent states against the truth.
#[derive(Debug, Clone, Serialize)]
pub struct StateScores {
    /// Relative L2 error of the mean states.
    pub rel_l2: f64,
    /// The same after the least-squares affine map `a x + b` of the mean states onto the
    /// truth (one `a`, `b` for all sequences): the error of the state's shape, with the
    /// encoder's amplitude/offset gauge removed (a diagnostic; the scores below use no truth).
    pub affine_rel_l2: f64,
    /// Uncertainty scores of the state marginals (mixed over the `Λ` draws).
    pub scores: UqScores,
}

/// The forecast of the held-out frames.
#[derive(Debug, Clone, Serialize)]
pub struct ForecastScores {
    /// Frames forecast.
    pub frames: usize,
    /// The forecast states against the true ones.
    pub state: Option<StateScores>,
    /// Relative L2 error of the decoded forecast frames (data units).
    pub frame_rel_l2: f64,
    /// The same error of persistence (the last seen frame repeated), for scale.
    pub persistence_rel_l2: f64,
}

/// `eval.json` of a dvae run.
#[derive(Debug, Clone, Serialize)]
pub struct DvaeEval {
    /// Test sequences scored.
    pub n_test: usize,
    /// Posterior samples per sequence.
    pub n_samples: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// The latent transition.
    pub transition: TransitionName,
    /// Frames seen per sequence.
    pub train_frames: usize,
    /// Learned √R: one value (shared) or one per observed component.
    pub noise_sd: Vec<f64>,
    /// Learned (or fixed) `Q` parameters: scale and length (advection) or sd (Lorenz).
    pub process: Vec<f64>,
    /// Learned (or fixed) `P₀` scale.
    pub initial_scale: f64,
    /// The posterior of `Λ` (`(c, D)` or `(σ, ρ, β)`) of each test sequence (physical units) against the
    /// truths: the exact `p(Λ | x_{1:N}) ∝ p(x_{1:N} | Λ) p(Λ)` of the trained latent model on
    /// a zooming grid over `ξ`, pooled over 4 encoder draws `x ~ q_φ(x | y)` (the non-amortised
    /// Φ-DVAE posterior without a Gaussian restriction).
    pub posterior: Option<UqScores>,
    /// [`DvaeEval::posterior`] per parameter: `(name, scores)`.
    pub per_parameter: Vec<(String, UqScores)>,
    /// The amortised `q_λ(Λ | y_{1:N})` per parameter (one network pass per sequence): its
    /// gap to [`DvaeEval::posterior`] is the amortisation error.
    pub amortised: Vec<(String, UqScores)>,
    /// The refined `q_λ` of each test sequence (a Gaussian over `ξ` fitted to the sequence's
    /// own bound from the amortised one, the trained networks fixed): the variational
    /// posterior without the amortisation gap, all parameters jointly.
    pub refined_joint: Option<UqScores>,
    /// [`DvaeEval::refined_joint`] per parameter.
    pub refined: Vec<(String, UqScores)>,
    /// RTS-smoothed states `u_1 … u_{N_train}` against the true states (generated data).
    pub state: Option<StateScores>,
    /// The forecast of the held-out frames.
    pub forecast: Option<ForecastScores>,
    /// Relative L2 error of the frames decoded from the encoder means (data units).
    pub reconstruction_rel_l2: f64,
    /// The pseudo-observations' errors against the true states: what the filter assumes of
    /// them (white, `N(0, R)`) against what they are (generated data).
    pub pseudo_observations: Option<PseudoObservationScores>,
}

/// The encoder means `x̂_n` against `H u_n` of the true states, `e_n = x̂_n − H u_n`, per
/// observed component `j`, over the seen frames of the test sequences (with the advection's
/// amplitude gauge, `x̂` after the least-squares map `α x + β` onto the truth, and `√R`, the
/// encoder sd scaled by `|α|`: the state's shape error).
/// The filter treats `e_n` as white noise `N(0, R)`; a lag-1 autocorrelation `φ` over time
/// makes the `N` pseudo-observations worth about `N (1 − φ) / (1 + φ)` independent ones (AR(1)),
/// so the posterior of `Λ` would be too narrow by about `√((1 + φ)/(1 − φ))`, and an error rms
/// above `√R` makes it too narrow as well.
#[derive(Debug, Clone, Serialize)]
pub struct PseudoObservationScores {
    /// `rms_n,i (e_{n,j})`, per component.
    pub rms_error: Vec<f64>,
    /// `mean_n,i (e_{n,j})`, per component.
    pub bias: Vec<f64>,
    /// Lag-1 autocorrelation over time of `e_{n,j} − bias_j`, pooled over sequences, per
    /// component.
    pub lag1: Vec<f64>,
    /// Correlation of the centred errors of components `j` and `j + 1` at the same frame,
    /// pooled over pairs (0 with one component).
    pub neighbour_corr: f64,
    /// The encoder's own sd `rms(sd_φ)`, per component.
    pub encoder_sd: Vec<f64>,
    /// The learned `√R`, per component.
    pub noise_sd: Vec<f64>,
}

impl PseudoObservationScores {
    /// From `mean`, `sd`, `truth` `[n·frames·m]` (sequence, frame, component order).
    fn of(
        mean: &[f64],
        sd: &[f64],
        truth: &[f64],
        (n, frames, m): (usize, usize, usize),
        noise_sd: Vec<f64>,
    ) -> Self {
        let at = |i: usize, t: usize, j: usize| (i * frames + t) * m + j;
        let e: Vec<f64> = mean.iter().zip(truth).map(|(x, u)| x - u).collect();
        let count = (n * frames) as f64;
        let per = |f: &dyn Fn(usize, usize, usize) -> f64| -> Vec<f64> {
            (0..m)
                .map(|j| {
                    (0..n)
                        .flat_map(|i| (0..frames).map(move |t| (i, t)))
                        .map(|(i, t)| f(i, t, j))
                        .sum::<f64>()
                        / count
                })
                .collect()
        };
        let bias = per(&|i, t, j| e[at(i, t, j)]);
        let c = |i: usize, t: usize, j: usize| e[at(i, t, j)] - bias[j];
        let var = per(&|i, t, j| c(i, t, j).powi(2));
        let lag1 = (0..m)
            .map(|j| {
                let num: f64 = (0..n)
                    .flat_map(|i| (1..frames).map(move |t| (i, t)))
                    .map(|(i, t)| c(i, t, j) * c(i, t - 1, j))
                    .sum();
                num / (n * frames.saturating_sub(1)).max(1) as f64 / var[j].max(1e-300)
            })
            .collect();
        // Σ c_j c_{j+1}, Σ c_j², Σ c_{j+1}² over every frame and pair.
        let (mut cov, mut v0, mut v1) = (0.0, 0.0, 0.0);
        for i in 0..n {
            for t in 0..frames {
                for j in 1..m {
                    let (a, b) = (c(i, t, j - 1), c(i, t, j));
                    cov += a * b;
                    v0 += a * a;
                    v1 += b * b;
                }
            }
        }
        let neighbour_corr = if m > 1 {
            cov / (v0 * v1).sqrt().max(1e-300)
        } else {
            0.0
        };
        Self {
            rms_error: var
                .iter()
                .zip(&bias)
                .map(|(v, b)| (v + b * b).sqrt())
                .collect(),
            bias,
            lag1,
            neighbour_corr,
            encoder_sd: per(&|i, t, j| sd[at(i, t, j)].powi(2))
                .iter()
                .map(|v| v.sqrt())
                .collect(),
            noise_sd,
        }
    }
}

impl DvaeKind {
    /// The physics set-up: `[objective.setup]` or the `[data]` settings.
    pub fn setup(&self, common: &Common) -> Result<SequenceSetup, TrainError> {
        match (SequenceSetup::of_data(&common.data), &self.objective.setup) {
            (Some((_, s)), None) => Ok(s),
            (Some((_, s)), Some(o)) if s == *o => Ok(s),
            (Some(_), Some(_)) => Err(invalid(
                "objective.setup",
                "differs from the [data] settings, so the model's physics would not be the data's; drop [objective.setup] (the data's set-up is used)",
            )),
            (None, Some(o)) => Ok(*o),
            (None, None) => Err(invalid(
                "objective.setup",
                "the frames are not generated ([data] kind = \"advection-video\" or \"lorenz-fields\"), so give their physics set-up in [objective.setup]: problem = \"advection-video\" (the default: nodes, frames, dt, height, priors of c and D, P₀ and Q) or \"lorenz-fields\" (frames, dt, width, height, prior of σ, ρ, β, process_sd)",
            )),
        }
    }

    /// Observed nodes.
    fn observed(&self, s: &SequenceSetup) -> Vec<usize> {
        (0..s.state_dim())
            .step_by(self.model.observe_every.max(1))
            .collect()
    }

    fn train_frames(&self, s: &SequenceSetup) -> usize {
        s.frames() - self.objective.forecast
    }
}

impl Kind for DvaeKind {
    const NAME: &'static str = "dvae";
    const SUMMARY_TERMS: &'static [&'static str] =
        &["loss", "reconstruction", "dynamics", "kl", "noise_sd"];
    type Model = DvaeModel;
    type Objective = DvaeObjective;
    type Eval = DvaeEval;

    fn from_tables(model: toml::Table, objective: toml::Table) -> Result<Self, SectionError> {
        let (model, objective) = kind_sections(model, objective, Self::NAME)?;
        Ok(Self { model, objective })
    }

    fn to_tables(&self) -> (toml::Table, toml::Table) {
        (to_table(&self.model), to_table(&self.objective))
    }

    fn validate(&self, common: &Common) -> Result<(), TrainError> {
        check_hidden(&self.model.hidden)?;
        check_hidden(&self.model.amortise_hidden)?;
        let s = self.setup(common)?;
        s.validate()?;
        let d = s.state_dim();
        if self.model.observe_every == 0 || self.model.observe_every > d {
            return Err(invalid(
                "model.observe_every",
                format!(
                    "must be between 1 and the {d} state components, got {}",
                    self.model.observe_every
                ),
            ));
        }
        if self.model.network == NetworkName::Columns
            && let SequenceSetup::LorenzFields(_) = s
        {
            return Err(invalid(
                "model.network",
                "column networks tie each latent node to a frame column (advection-video); the Lorenz fields have 3 latent components: set network = \"dense\"",
            ));
        }
        if self.model.decoder == DecoderName::Known {
            let want = match s {
                SequenceSetup::AdvectionVideo(_) => NetworkName::Columns,
                SequenceSetup::LorenzFields(_) => NetworkName::Dense,
            };
            if self.model.network != want || self.model.observe_every != 1 {
                return Err(invalid(
                    "model.decoder",
                    format!(
                        "decoder = \"known\" for {} goes with network = \"{}\" and observe_every = 1 (the rendering maps the whole state)",
                        s.problem(),
                        match want {
                            NetworkName::Columns => "columns",
                            NetworkName::Dense => "dense",
                        }
                    ),
                ));
            }
        }
        if self.model.network == NetworkName::Columns && self.model.observe_every != 1 {
            return Err(invalid(
                "model.observe_every",
                "column networks observe every node (x_j is tied to column j); set observe_every = 1, or network = \"dense\"",
            ));
        }
        if self.objective.forecast + 2 > s.frames() {
            return Err(invalid(
                "objective.forecast",
                format!(
                    "holds out {} of the {} frames; at least 2 must remain to train on",
                    self.objective.forecast,
                    s.frames()
                ),
            ));
        }
        for (key, v) in [
            ("objective.noise_sd", self.objective.noise_sd),
            ("objective.frame_sigma", self.objective.frame_sigma),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(key, format!("must be finite and > 0, got {v}")));
            }
        }
        if s.process_init()[0] <= 0.0 {
            return Err(invalid(
                match s {
                    SequenceSetup::AdvectionVideo(_) => "process_scale",
                    SequenceSetup::LorenzFields(_) => "process_sd",
                },
                "of the set-up ([data.settings] or [objective.setup]) must be > 0 for the filter (Q = 0 makes the smoother's predicted covariance singular)",
            ));
        }
        Ok(())
    }

    fn check_data(&self, common: &Common, data: &TrainData) -> Result<(), TrainError> {
        let s = self.setup(common)?;
        let want = s.sample_shape();
        let got = &data.train.sample_shape;
        let frames = s.frames();
        let flat = |v: &[usize]| v.iter().product::<usize>();
        if *got != want && !(got.len() == 2 && got[0] == frames && got[1] == flat(&want[1..])) {
            let message = if got.first() != Some(&frames) {
                format!(
                    "sequences of {frames} frames are expected (set-up frames = {frames}), the data's samples have shape {got:?}; every sequence must have the same length — cut or pad them to {frames} frames, or set frames"
                )
            } else {
                format!(
                    "frames of shape {} are expected, the data's samples have shape {got:?}; render the frames at the set-up's size or change the set-up's frame size",
                    s.frame_shape_words()
                )
            };
            return Err(invalid("data", message));
        }
        let p = s.param_dim();
        if data.train.cond_dim != 0 && data.train.cond_dim != p {
            return Err(invalid(
                "data",
                format!(
                    "the conditions are the true ({}) of each sequence ({p} columns) or absent, got {} columns",
                    s.prior().names.join(", "),
                    data.train.cond_dim
                ),
            ));
        }
        Ok(())
    }

    fn build(
        &self,
        common: &Common,
        data: &RunData,
        device: &Device,
    ) -> Result<(DvaeModel, DvaeObjective), TrainError> {
        let s = self.setup(common)?;
        let observed = self.observed(&s);
        let (m, d, p) = (observed.len(), s.state_dim(), s.param_dim());
        let px = s.frame_pixels();
        let act = self.model.activation.into();
        let likelihood = LikelihoodConfig::Gaussian(
            GaussianLikelihoodConfig::new()
                .with_sigma(self.objective.frame_sigma)
                .with_noise(NoiseModel::LearnedGlobal),
        )
        .init(device);
        let k = likelihood.params_per_datum();
        let train_frames = self.train_frames(&s);
        let physics = self.model.transition == TransitionName::Physics;
        let amortise = physics.then(|| {
            let mut sizes = vec![train_frames * m];
            sizes.extend(&self.model.amortise_hidden);
            sizes.push(2 * p);
            MlpConfig::new(sizes).with_activation(act)
        });
        let encoder = || {
            EncoderConfig::Mlp(
                MlpEncoderConfig::new(px, m)
                    .with_hidden(self.model.hidden.clone())
                    .with_activation(act),
            )
        };
        let latent = SequenceModel::new(s)?;
        let standardisation = latent.standardisation(&observed);
        let nets = match (self.model.decoder, self.model.network) {
            (DecoderName::Known, NetworkName::Columns) => {
                let SequenceSetup::AdvectionVideo(a) = s else {
                    return Err(invalid("model.network", "columns need advection-video"));
                };
                let norm = &data.norm;
                FrameNetsConfig::Curve(CurveNetsConfig::new(
                    ColumnNetsConfig::new(a.height, d)
                        .with_half_window(self.model.half_window)
                        .with_hidden(self.model.hidden.clone())
                        .with_activation(act),
                    a.row_values(),
                    a.line_width,
                    1.0 / norm.x_std,
                    -norm.x_mean / norm.x_std,
                ))
            }
            (DecoderName::Known, NetworkName::Dense) => {
                // The rendering in normalised frame units: (R x − μ) / s.
                let norm = &data.norm;
                let rendering = s.linear_rendering().ok_or_else(|| {
                    invalid("model.decoder", "the set-up's rendering is not linear")
                })?;
                let matrix: Vec<f64> = rendering.iter().map(|v| v / norm.x_std).collect();
                let offset = vec![-norm.x_mean / norm.x_std; px];
                let skip = least_squares_inverse(&matrix, &offset, m, standardisation.as_ref())?;
                FrameNetsConfig::KnownDecoder(
                    KnownDecoderNetsConfig::new(encoder(), matrix, offset)
                        .with_encoder_skip(Some(skip)),
                )
            }
            (DecoderName::Learned, NetworkName::Dense) => FrameNetsConfig::dense(
                encoder(),
                DecoderConfig::Mlp(
                    MlpDecoderConfig::new(m, px * k)
                        .with_hidden(self.model.hidden.clone())
                        .with_activation(act),
                ),
            ),
            (DecoderName::Learned, NetworkName::Columns) => FrameNetsConfig::Columns(
                ColumnNetsConfig::new(s.image_shape()[0], d)
                    .with_half_window(self.model.half_window)
                    .with_hidden(self.model.hidden.clone())
                    .with_activation(act),
            ),
        };
        let (offset, scale) = standardisation.unzip();
        let dvae = DvaeConfig::new(nets, p)
            .with_amortise(amortise)
            .with_state_offset(offset)
            .with_state_scale(scale)
            .init(device);
        let log = |v: f64| Tensor::<1>::from_data(TensorData::new(vec![v.ln()], [1]), device);
        let noise_params = match self.objective.noise {
            NoiseName::Shared => 1,
            NoiseName::PerComponent => observed.len(),
        };
        let model = DvaeModel {
            dvae,
            likelihood,
            noise_kappa: Param::from_tensor(Tensor::zeros([noise_params], device)),
            noise_sd: self.objective.noise_sd,
            log_process: Param::from_tensor(Tensor::cat(
                s.process_init().into_iter().map(log).collect(),
                0,
            )),
            log_initial_scale: Param::from_tensor(log(s.initial_scale())),
            transition: (!physics).then(|| Param::from_tensor(Tensor::<2>::eye(d, device))),
        };
        let objective = DvaeObjective {
            prior: s.prior(),
            latent,
            observed,
            train_frames,
            sequences: data.n_train,
            learn_noise: self.objective.learn_noise,
            learn_process: self.objective.learn_process,
            learn_initial: self.objective.learn_initial,
            noise: NoiseSource::new(common.seed, Stream::Train),
        };
        Ok((model, objective))
    }

    fn plot(&self, run: &Loaded<Self>) -> Result<(), TrainError> {
        let s = run.objective.setup();
        // The frames need no exact posterior: the amortised draws of Λ drive the forecast.
        let t = Trained::of(run, run.data.test.len().min(3), false)?;
        let (n_tr, px) = (run.objective.train_frames, s.frame_pixels());
        // Case 0: the last seen frame, its reconstruction, the first forecast frame.
        let frame = |v: &[f64], k: usize| v[k * px..(k + 1) * px].to_vec();
        let data0 = &t.frames_data[0];
        let f = s.frames() - n_tr;
        let mut data = vec![frame(data0, n_tr - 1)];
        let mut recon = vec![frame(&t.recon[0], n_tr - 1)];
        let mut third = vec![recon[0].clone()];
        if f > 0 {
            data.push(frame(data0, n_tr));
            recon.push(t.forecast_frames[0][..px].to_vec());
            third = vec![t.forecast_frames[0][..px].to_vec()];
        }
        crate::plots::plot_samples_titled(
            &data,
            &recon,
            &third,
            &s.image_shape(),
            &run.dir.join("samples.png"),
            &[
                "frames: last seen, first forecast",
                "decoded: reconstruction, forecast",
                "forecast frame",
                "data (lines) vs decoded (dots)",
                "forecast frame",
            ],
        )
    }

    fn evaluate(&self, run: &Loaded<Self>) -> Result<DvaeEval, TrainError> {
        let n = run.data.test.len().min(200);
        let t = Trained::of(run, n, true)?;
        Ok(t.report(run))
    }

    fn print_eval(&self, r: &DvaeEval, dir: &Path) {
        match &r.posterior {
            Some(post) => print_parameter_table(
                dir,
                (r.n_test, r.n_samples, r.epochs),
                &format!(
                    "p({} | frames) from {} frames per sequence (Kalman-filter likelihood of 4 encoder draws, on a grid)",
                    r.per_parameter
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.train_frames
                ),
                "rel_l2",
                std::iter::once(("all".to_string(), post.rel_l2, post))
                    .chain(
                        r.per_parameter
                            .iter()
                            .map(|(n, s)| (n.clone(), s.rel_l2, s)),
                    )
                    .collect(),
            ),
            None => println!(
                "evaluation of {} ({} test sequences, {} epochs): learned-linear transition (no physical parameters)",
                dir.display(),
                r.n_test,
                r.epochs
            ),
        }
        for (what, name, g) in r
            .amortised
            .iter()
            .map(|(n, g)| ("amortised", n, g))
            .chain(r.refined.iter().map(|(n, g)| ("refined", n, g)))
        {
            println!(
                "  {:<22} rel L2 {:>8.4}   cov 50/90/95 {:.3} / {:.3} / {:.3}",
                format!("{what} q({name} | y)"),
                g.rel_l2,
                coverage(g, "0.5"),
                coverage(g, "0.9"),
                coverage(g, "0.95")
            );
        }
        let row = |what: &str, s: &StateScores| {
            println!(
                "  {what:<22} rel L2 {:>8.4}   cov 50/90/95 {:.3} / {:.3} / {:.3}   (affine-corrected rel L2 {:.4})",
                s.rel_l2,
                coverage(&s.scores, "0.5"),
                coverage(&s.scores, "0.9"),
                coverage(&s.scores, "0.95"),
                s.affine_rel_l2
            )
        };
        if let Some(s) = &r.state {
            row("smoothed states", s);
        }
        if let Some(f) = &r.forecast {
            if let Some(s) = &f.state {
                row(&format!("forecast states ({})", f.frames), s);
            }
            println!(
                "  forecast frames        rel L2 {:>8.4}   (persistence {:.4})",
                f.frame_rel_l2, f.persistence_rel_l2
            );
        }
        let q = match r.process.as_slice() {
            [scale, length] => format!("Q scale/length = {scale:.4} / {length:.4}"),
            other => format!("Q sd = {}", list(other, 4)),
        };
        println!(
            "  reconstructed frames   rel L2 {:>8.4}   √R = {}, {q}, P₀ scale {:.4}",
            r.reconstruction_rel_l2,
            list(&r.noise_sd, 4),
            r.initial_scale
        );
        if let Some(e) = &r.pseudo_observations {
            println!(
                "  pseudo-obs. errors     rms {} vs √R {} (encoder sd {}), lag-1 autocorr. {}, neighbour corr. {:.3}",
                list(&e.rms_error, 3),
                list(&e.noise_sd, 3),
                list(&e.encoder_sd, 3),
                list(&e.lag1, 3),
                e.neighbour_corr
            );
        }
    }

    /// Sequences from the trained generative model: `Λ ~ p(Λ)` (physics) or the learned `A`,
    /// `u_0 ~ N(m₀, P₀)`, `u_n = M(u_{n−1}; Λ) + e_n`, `e_n ~ N(0, Q)`, frames decoded from
    /// `H u_n` (with the frame noise when `--noise`); `[n, N, frame…]` in data units.
    fn sample(&self, run: &Loaded<Self>, request: &SampleRequest) -> Result<String, TrainError> {
        request.no_condition("a dvae run samples Λ from its prior")?;
        let o = &run.objective;
        let s = o.setup();
        let (d, steps, p) = (s.state_dim(), s.frames(), o.prior.dim());
        let device = &run.device.device;
        let a = run.model.transition.as_ref().map(|a| values(a.val()));
        let dynamics = s.dynamics();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(run.common.seed ^ 0x005a_3e11);
        let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
        let q: Vec<f64> = values(run.model.log_process.val())
            .iter()
            .map(|l| l.exp())
            .collect();
        let p0 = values(run.model.log_initial_scale.val())[0].exp();
        let mut states = Vec::with_capacity(request.n * steps * d);
        for _ in 0..request.n {
            let lambda = o
                .prior
                .to_physical_host(&(0..p).map(|_| normal()).collect::<Vec<_>>());
            let mut u = o.latent.initial_draw(p0, &mut normal);
            for _ in 0..steps {
                let e = s.process_draw(&q, &mut normal);
                let next = match &a {
                    Some(a) => mat_vec(a, &u, d),
                    None => dynamics.step_host(&u, &lambda),
                };
                u = next.iter().zip(&e).map(|(a, b)| a + b).collect();
                states.extend(o.observed.iter().map(|&j| u[j]));
            }
        }
        let m = o.observed.len();
        let x = Tensor::<3>::from_data(TensorData::new(states, [request.n, steps, m]), device);
        let params = run.model.dvae.decode(x);
        let px = s.frame_pixels();
        let k = params.dims()[2] / px;
        let params = params.reshape([1, request.n * steps, px * k]);
        let lik = &run.model.likelihood;
        let mut frames = values(lik.mean(params.clone()));
        if request.noise
            && let Some(sd) = lik.std(params)
        {
            for (f, sd) in frames.iter_mut().zip(values(sd)) {
                *f += sd * normal();
            }
        }
        run.data.norm.invert_x(&mut frames);
        let mut shape = vec![request.n];
        shape.extend(s.sample_shape());
        varphi_data::npy::save_npy_f32(&request.out, &shape, &frames)
            .map_err(io_err(&request.out))?;
        Ok(format!(
            "wrote {} sequences of {steps} frames {} ({}) to {}",
            request.n,
            s.frame_shape_words(),
            match run.model.transition {
                Some(_) => "learned linear transition",
                None => "Λ from the prior",
            },
            request.out.display()
        ))
    }
}

/// The least-squares inverse `x = (ŷ − b) Mᵀ (M Mᵀ)⁻¹` of the known decoder `ŷ = x M + b`
/// (`M` `[m, P]`), as the encoder skip `(A, a)` in the standardised units `x̃ = (x − o) / s`
/// of `standardisation`.
fn least_squares_inverse(
    matrix: &[f64],
    offset: &[f64],
    m: usize,
    standardisation: Option<&(Vec<f64>, Vec<f64>)>,
) -> Result<(Vec<f64>, Vec<f64>), TrainError> {
    let p = offset.len();
    let gram: Vec<(usize, usize, f64)> = (0..m)
        .flat_map(|i| (0..m).map(move |j| (i, j)))
        .map(|(i, j)| {
            let v = (0..p).map(|k| matrix[i * p + k] * matrix[j * p + k]).sum();
            (i, j, v)
        })
        .collect();
    let g_inv = varphi_physics::sparse::inverse_spd(m, &gram, "the Gram matrix of the rendering")
        .map_err(|e| {
        invalid(
            "model.decoder",
            format!("the known rendering has no least-squares inverse: {e}"),
        )
    })?;
    let (o, s) = match standardisation {
        Some((o, s)) => (o.clone(), s.clone()),
        None => (vec![0.0; m], vec![1.0; m]),
    };
    // A[k, j] = Σ_i M[i, k] G⁻¹[i, j] / s_j;  a_j = (−Σ_k b_k A_phys[k, j] − o_j) / s_j.
    let a_phys: Vec<f64> = (0..p)
        .flat_map(|k| (0..m).map(move |j| (k, j)))
        .map(|(k, j)| (0..m).map(|i| matrix[i * p + k] * g_inv[i * m + j]).sum())
        .collect();
    let a: Vec<f64> = (0..p * m).map(|kj| a_phys[kj] / s[kj % m]).collect();
    let b: Vec<f64> = (0..m)
        .map(|j| {
            let shift: f64 = (0..p).map(|k| offset[k] * a_phys[k * m + j]).sum();
            (-shift - o[j]) / s[j]
        })
        .collect();
    Ok((a, b))
}

/// Draws of `Λ` per test sequence for the state scores.
const LAMBDA_DRAWS: usize = 8;
/// Gaussian draws per `Λ` draw and state entry.
const STATE_DRAWS: usize = 8;
/// Posterior samples per sequence.
const POSTERIOR_SAMPLES: usize = 256;

/// A trained run's inferences on its first `n` test sequences, on the host in `f64`.
struct Trained {
    n: usize,
    /// Samples `[S][n·2]` of the exact `p(Λ | x_{1:N})`, pooled over encoder draws (grid).
    posterior: Option<Vec<Vec<f64>>>,
    /// Samples `[S][n·2]` of the amortised `q_λ(Λ | y_{1:N})`.
    amortised: Option<Vec<Vec<f64>>>,
    /// Samples `[S][n·2]` of the refined (per-sequence) `q_λ` ([`refine_posterior`]).
    refined: Option<Vec<Vec<f64>>>,
    /// The true `(c, D)` `[n·2]`, when the data carry them.
    truth_params: Option<Vec<f64>>,
    /// `[draw][case][level 1 … N_train][d]` smoothed means and variances, in the set-up's units
    /// (divided by the learned amplitude `a` = learned `P₀` scale / the set-up's).
    smoothed: Vec<Vec<(Vec<f64>, Vec<f64>)>>,
    /// `[draw][case][forecast step][d]` forecast means and variances.
    forecast: Vec<Vec<(Vec<f64>, Vec<f64>)>>,
    /// `[case]` all frames (data units), `[N·P]`.
    frames_data: Vec<Vec<f64>>,
    /// `[case]` reconstructions of the seen frames (data units), `[N_train·P]`.
    recon: Vec<Vec<f64>>,
    /// `[case]` decoded forecast frames (data units, mean over the draws), `[F·P]`.
    forecast_frames: Vec<Vec<f64>>,
    /// `[case]` the true states `u_0 … u_N` (generated data).
    truth_states: Option<Vec<Vec<f64>>>,
    /// The encoder's pseudo-observations against `H u` of the true states (generated data).
    pseudo_observations: Option<PseudoObservationScores>,
}

/// `v` for a table: one value when all agree (to the digits shown), each of up to 4, else the
/// range `lo…hi`.
fn list(v: &[f64], digits: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if format!("{lo:.digits$}") == format!("{hi:.digits$}") {
        format!("{lo:.digits$}")
    } else if v.len() <= 4 {
        v.iter()
            .map(|x| format!("{x:.digits$}"))
            .collect::<Vec<_>>()
            .join(" / ")
    } else {
        format!("{lo:.digits$}…{hi:.digits$}")
    }
}

fn mat_vec(a: &[f64], u: &[f64], d: usize) -> Vec<f64> {
    (0..d)
        .map(|j| (0..d).map(|l| a[j * d + l] * u[l]).sum())
        .collect()
}

/// The least-squares affine map `a_g x + b_g` of `mean` onto `truth`, one per group `g = k mod
/// groups` of the entries (1: one map for all).
fn affine_fit(mean: &[f64], truth: &[f64], groups: usize) -> Vec<f64> {
    let mut fit = vec![0.0; mean.len()];
    for g in 0..groups {
        let idx: Vec<usize> = (g..mean.len()).step_by(groups).collect();
        let x: Vec<f64> = idx.iter().map(|&i| mean[i]).collect();
        let y: Vec<f64> = idx.iter().map(|&i| truth[i]).collect();
        let (a, b) = slope_fit(&x, &y);
        for &i in &idx {
            fit[i] = a * mean[i] + b;
        }
    }
    fit
}

/// The least-squares `(a, b)` of `y ≈ a x + b`.
fn slope_fit(x: &[f64], y: &[f64]) -> (f64, f64) {
    let k = x.len() as f64;
    let mx = x.iter().sum::<f64>() / k;
    let my = y.iter().sum::<f64>() / k;
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let a = sxy / sxx.max(1e-300);
    (a, my - a * mx)
}

fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

impl Trained {
    /// The inferences on the first `n` test sequences; `exact`: also the grid posterior of `Λ`
    /// (the expensive part), whose draws then drive the states (else the amortised `q_λ`'s).
    fn of(run: &Loaded<DvaeKind>, n: usize, exact: bool) -> Result<Self, TrainError> {
        let o = &run.objective;
        let s = o.setup();
        let device = &run.device.device;
        let seed = run.common.seed;
        let (d, m, n_tr, p) = (
            s.state_dim(),
            o.observed.len(),
            o.train_frames,
            o.prior.dim(),
        );
        let px = s.frame_pixels();
        let idx: Vec<usize> = (0..n).collect();
        let (x, cond) = run.data.test.batch(&idx, device);
        let y = o.training_frames(x.clone());
        let q_x = run.model.dvae.encode(y.clone());
        let mu_x = q_x.mean.clone().reshape([n, n_tr, m]);
        // Reconstructions of the seen frames from the encoder means.
        let lik = &run.model.likelihood;
        let dec = run.model.dvae.decode(mu_x.clone());
        let k = dec.dims()[2] / px;
        let mut recon = values(lik.mean(dec.reshape([1, n * n_tr, px * k])));
        run.data.norm.invert_x(&mut recon);
        let mut all = values(x);
        run.data.norm.invert_x(&mut all);
        let frames_data: Vec<Vec<f64>> = all.chunks(s.frames() * px).map(<[f64]>::to_vec).collect();
        let recon: Vec<Vec<f64>> = recon.chunks(n_tr * px).map(<[f64]>::to_vec).collect();

        // Λ: amortised and exact posterior samples (physics), the draws the states are mixed over.
        let draws = LAMBDA_DRAWS;
        let truth_params = cond.map(|c| {
            let mut v = values(c);
            run.data.norm.invert_cond(&mut v);
            v
        });
        let (amortised, refined, posterior, lambda) = match run.model.transition {
            None => {
                let q = run.model.dvae.param_posterior_given(mu_x.clone());
                let rows = q.mean.dims()[0];
                let (mean, sd) = (values(q.mean.clone()), values(q.std()));
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(NoiseSource::new(seed, Stream::HeldOutPosterior).stream);
                let samples = gaussian_draws(o, (&mean, &sd, rows), n, POSTERIOR_SAMPLES, &mut rng);
                if exact {
                    // p(Λ | y) ≈ ∫ p(Λ | x) q_φ(x | y) dx: pooled over encoder draws of x.
                    let sd_x = q_x.std().reshape([n, n_tr, m]);
                    let mut per_draw = Vec::with_capacity(ENCODER_DRAWS);
                    for k in 0..ENCODER_DRAWS {
                        let eps = NoiseSource::new(seed, Stream::EvalPredictiveNoise).normal(
                            [n, n_tr, m],
                            k,
                            device,
                        );
                        let x = mu_x.clone() + sd_x.clone() * eps;
                        per_draw.push(grid_posterior(o, &run.model, x, seed + k as u64, device)?);
                    }
                    let grid: Vec<Vec<f64>> = (0..POSTERIOR_SAMPLES)
                        .map(|j| per_draw[j % ENCODER_DRAWS][j / ENCODER_DRAWS].clone())
                        .collect();
                    let lambda = grid[..draws].to_vec();
                    // The non-amortised q_λ of each sequence, from the amortised one.
                    let (rm, rs) = refine_posterior(o, &run.model, &q, &q_x, seed, device)
                        .map_err(|e| TrainError::Run {
                            path: run.dir.clone(),
                            message: format!("refining q_λ on the test sequences: {e}"),
                        })?;
                    rng.set_stream(NoiseSource::new(seed, Stream::HeldOutPosterior).stream + 3);
                    let refined = gaussian_draws(o, (&rm, &rs, n), n, POSTERIOR_SAMPLES, &mut rng);
                    (Some(samples), Some(refined), Some(grid), Some(lambda))
                } else {
                    let lambda = samples[..draws].to_vec();
                    (Some(samples), None, None, Some(lambda))
                }
            }
            Some(_) => (None, None, None, None),
        };

        // Filter + RTS smoother for each draw, on the pseudo-observation means.
        let reps = if lambda.is_some() { draws } else { 1 };
        let xs = mu_x
            .clone()
            .unsqueeze_dim::<4>(0)
            .repeat_dim(0, reps)
            .reshape([reps * n, n_tr, m]);
        let lambda_t = match &lambda {
            Some(l) => Tensor::<2>::from_data(TensorData::new(l.concat(), [reps * n, p]), device),
            None => Tensor::zeros([n, 1], device),
        };
        // Forecast: the prediction step from the last filtered moments through the held-out
        // frames (exact for a linear transition, linearised for Lorenz).
        let f = s.frames() - n_tr;
        let (filter, predicted) = o.with_physics(&run.model, device, |physics| {
            let model = physics.model(lambda_t);
            let filter = model.filter(xs, true);
            let predicted = filter.states.as_ref().map(|st| {
                model.forecast(
                    st.filtered_mean[n_tr].clone(),
                    st.filtered_cov[n_tr].clone(),
                    f,
                )
            });
            (filter, predicted)
        });
        filter.check().map_err(|e| TrainError::Run {
            path: run.dir.clone(),
            message: format!("evaluating the test sequences: {e}"),
        })?;
        let states = filter.states.expect("states kept");
        let smooth = rts_smooth(&states).map_err(|e| TrainError::Run {
            path: run.dir.clone(),
            message: format!("smoothing the test sequences: {e}"),
        })?;
        let smoothed: Vec<Vec<(Vec<f64>, Vec<f64>)>> = (0..reps)
            .map(|r| {
                (0..n)
                    .map(|i| {
                        let b = r * n + i;
                        let mut mean = Vec::with_capacity(n_tr * d);
                        let mut var = Vec::with_capacity(n_tr * d);
                        for level in 1..=n_tr {
                            mean.extend(smooth.mean_at(b, level));
                            let c = smooth.cov_at(b, level);
                            var.extend((0..d).map(|j| c[j * d + j].max(0.0)));
                        }
                        (mean, var)
                    })
                    .collect()
            })
            .collect();

        let predicted: Vec<(Vec<f64>, Vec<f64>)> = predicted
            .expect("states kept")
            .into_iter()
            .map(|(mean, cov)| (values(mean), values(cov)))
            .collect();
        let mut forecast = Vec::with_capacity(reps);
        let mut obs_pred = Vec::with_capacity(reps * n * f * m);
        for r in 0..reps {
            let mut per_case = Vec::with_capacity(n);
            for i in 0..n {
                let b = r * n + i;
                let (mut means, mut vars) = (Vec::new(), Vec::new());
                for (mean, cov) in &predicted {
                    let mean = &mean[b * d..(b + 1) * d];
                    let cov = &cov[b * d * d..(b + 1) * d * d];
                    obs_pred.extend(o.observed.iter().map(|&j| mean[j]));
                    means.extend(mean);
                    vars.extend((0..d).map(|j| cov[j * d + j].max(0.0)));
                }
                per_case.push((means, vars));
            }
            forecast.push(per_case);
        }
        let forecast_frames = if f > 0 {
            let xp = Tensor::<3>::from_data(TensorData::new(obs_pred, [reps * n, f, m]), device);
            let dec = run.model.dvae.decode(xp);
            let mut v = values(lik.mean(dec.reshape([1, reps * n * f, px * k])));
            run.data.norm.invert_x(&mut v);
            let per = f * px;
            (0..n)
                .map(|i| {
                    (0..per)
                        .map(|j| {
                            (0..reps).map(|r| v[(r * n + i) * per + j]).sum::<f64>() / reps as f64
                        })
                        .collect()
                })
                .collect()
        } else {
            vec![Vec::new(); n]
        };

        // The true states of the test sequences, regenerated (generated data only).
        let truth_states = match SequenceSetup::of_data(&run.common.data) {
            Some((n_all, settings)) => {
                let seed = run.common.data_seed();
                let g = settings.generate(n_all, seed)?;
                let (_, test) =
                    varphi_data::split_indices(n_all, run.common.split.test_fraction, seed);
                let per = (s.frames() + 1) * d;
                Some(
                    test.iter()
                        .take(n)
                        .map(|&t| g.states[t * per..(t + 1) * per].to_vec())
                        .collect(),
                )
            }
            None => None,
        };
        // Report the states in the set-up's units: the advection encoder fixes x only up to its
        // amplitude a, and the learned P₀ scale is a × the set-up's (no truth used).
        let gauge = s.amplitude_gauge() && run.kind.model.decoder == DecoderName::Learned;
        let a = if gauge {
            values(run.model.log_initial_scale.val())[0].exp() / s.initial_scale()
        } else {
            1.0
        };
        let unstretch =
            |moments: Vec<Vec<(Vec<f64>, Vec<f64>)>>| -> Vec<Vec<(Vec<f64>, Vec<f64>)>> {
                moments
                    .into_iter()
                    .map(|draw| {
                        draw.into_iter()
                            .map(|(m, v)| {
                                (
                                    m.iter().map(|x| x / a).collect(),
                                    v.iter().map(|x| x / (a * a)).collect(),
                                )
                            })
                            .collect()
                    })
                    .collect()
            };
        let (smoothed, forecast) = (unstretch(smoothed), unstretch(forecast));
        let pseudo_observations = truth_states.as_ref().map(|truth: &Vec<Vec<f64>>| {
            let hu: Vec<f64> = truth
                .iter()
                .flat_map(|u| {
                    (1..=n_tr)
                        .flat_map(|level| o.observed.iter().map(move |&j| u[level * d + j]))
                        .collect::<Vec<_>>()
                })
                .collect();
            let mean = values(mu_x.clone());
            // With the amplitude gauge, errors after the least-squares map `α x + β` onto the
            // truth (the state's shape error; `a` from P₀ alone leaves a gauge error that is
            // as smooth as `u` and would read as correlated noise); else in x's own units.
            let (alpha, beta) = if gauge {
                slope_fit(&mean, &hu)
            } else {
                (1.0, 0.0)
            };
            let mean: Vec<f64> = mean.iter().map(|x| alpha * x + beta).collect();
            let sd: Vec<f64> = values(q_x.std()).iter().map(|x| alpha.abs() * x).collect();
            let r = run.model.learned_noise_sd();
            let noise_sd = (0..m).map(|j| alpha.abs() * r[j % r.len()]).collect();
            PseudoObservationScores::of(&mean, &sd, &hu, (n, n_tr, m), noise_sd)
        });
        Ok(Self {
            n,
            posterior,
            amortised,
            refined,
            truth_params,
            smoothed,
            forecast,
            frames_data,
            recon,
            forecast_frames,
            truth_states,
            pseudo_observations,
        })
    }

    /// State samples `[S][n·len]` from the per-draw Gaussian marginals `(mean, var)` of
    /// `moments[draw][case]`, `STATE_DRAWS` per draw.
    fn state_samples(moments: &[Vec<(Vec<f64>, Vec<f64>)>], seed: u64) -> Vec<Vec<f64>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(NoiseSource::new(seed, Stream::EvalPredictive).stream);
        let mut out = Vec::new();
        for draw in moments {
            for _ in 0..STATE_DRAWS {
                out.push(
                    draw.iter()
                        .flat_map(|(m, v)| {
                            m.iter()
                                .zip(v)
                                .map(|(m, v)| {
                                    let e: f64 = StandardNormal.sample(&mut rng);
                                    m + v.sqrt() * e
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect(),
                );
            }
        }
        out
    }

    fn state_scores(
        &self,
        run: &Loaded<DvaeKind>,
        block: &str,
        moments: &[Vec<(Vec<f64>, Vec<f64>)>],
        truth: &[f64],
        groups: usize,
    ) -> StateScores {
        let samples = Self::state_samples(moments, run.common.seed);
        let mean: Vec<f64> = (0..truth.len())
            .map(|j| {
                moments
                    .iter()
                    .map(|draw| {
                        let per = draw[0].0.len();
                        draw[j / per].0[j % per]
                    })
                    .sum::<f64>()
                    / moments.len() as f64
            })
            .collect();
        StateScores {
            rel_l2: rel_l2(&mean, truth),
            affine_rel_l2: rel_l2(&affine_fit(&mean, truth, groups), truth),
            scores: run
                .scorer
                .score(block, &samples, truth, self.n, Role::Predictive),
        }
    }

    fn report(&self, run: &Loaded<DvaeKind>) -> DvaeEval {
        let o = &run.objective;
        let s = o.setup();
        let (d, n_tr, px, p) = (
            s.state_dim(),
            o.train_frames,
            s.frame_pixels(),
            o.prior.dim(),
        );
        let f = s.frames() - n_tr;
        let groups = if s.affine_per_component() { d } else { 1 };
        // Node 0's trajectory over every level (smoothed, then forecast) first, for bands.png.
        if let Some(truth) = &self.truth_states {
            let traj: Vec<Vec<(Vec<f64>, Vec<f64>)>> = self
                .smoothed
                .iter()
                .zip(&self.forecast)
                .map(|(sm, fc)| {
                    sm.iter()
                        .zip(fc)
                        .map(|((ms, vs), (mf, vf))| {
                            let pick = |v: &[f64]| v.iter().step_by(d).copied().collect::<Vec<_>>();
                            let mut m = pick(ms);
                            m.extend(pick(mf));
                            let mut v = pick(vs);
                            v.extend(pick(vf));
                            (m, v)
                        })
                        .collect()
                })
                .collect();
            let t: Vec<f64> = truth
                .iter()
                .flat_map(|u| {
                    (1..=s.frames())
                        .map(|level| u[level * d])
                        .collect::<Vec<_>>()
                })
                .collect();
            let _ = self.state_scores(run, "trajectory", &traj, &t, 1);
        }
        let (posterior, per_parameter) = match (&self.posterior, &self.truth_params) {
            (Some(samples), Some(truth)) => (
                Some(
                    run.scorer
                        .score("posterior", samples, truth, self.n, Role::Posterior),
                ),
                per_parameter(&run.scorer, "posterior", samples, truth, p, &o.prior.names),
            ),
            _ => (None, Vec::new()),
        };
        let amortised = match (&self.amortised, &self.truth_params) {
            (Some(samples), Some(truth)) => crate::host::per_parameter(
                &run.scorer,
                "amortised",
                samples,
                truth,
                p,
                &o.prior.names,
            ),
            _ => Vec::new(),
        };
        let (refined_joint, refined) = match (&self.refined, &self.truth_params) {
            (Some(samples), Some(truth)) => (
                Some(
                    run.scorer
                        .score("refined", samples, truth, self.n, Role::Posterior),
                ),
                crate::host::per_parameter(
                    &run.scorer,
                    "refined",
                    samples,
                    truth,
                    p,
                    &o.prior.names,
                ),
            ),
            _ => (None, Vec::new()),
        };
        let state = self.truth_states.as_ref().map(|truth| {
            let t: Vec<f64> = truth
                .iter()
                .flat_map(|u| u[d..(n_tr + 1) * d].to_vec())
                .collect();
            self.state_scores(run, "state", &self.smoothed, &t, groups)
        });
        let forecast = (f > 0).then(|| {
            let data: Vec<f64> = self
                .frames_data
                .iter()
                .flat_map(|v| v[n_tr * px..].to_vec())
                .collect();
            let pred: Vec<f64> = self.forecast_frames.concat();
            let last: Vec<f64> = self
                .frames_data
                .iter()
                .flat_map(|v| v[(n_tr - 1) * px..n_tr * px].repeat(f))
                .collect();
            ForecastScores {
                frames: f,
                state: self.truth_states.as_ref().map(|truth| {
                    let t: Vec<f64> = truth
                        .iter()
                        .flat_map(|u| u[(n_tr + 1) * d..].to_vec())
                        .collect();
                    self.state_scores(run, "forecast", &self.forecast, &t, groups)
                }),
                frame_rel_l2: rel_l2(&pred, &data),
                persistence_rel_l2: rel_l2(&last, &data),
            }
        });
        let seen: Vec<f64> = self
            .frames_data
            .iter()
            .flat_map(|v| v[..n_tr * px].to_vec())
            .collect();
        DvaeEval {
            n_test: self.n,
            n_samples: POSTERIOR_SAMPLES,
            epochs: run.epochs_done,
            transition: run.kind.model.transition,
            train_frames: n_tr,
            noise_sd: run.model.learned_noise_sd(),
            process: values(run.model.log_process.val())
                .iter()
                .map(|l| l.exp())
                .collect(),
            initial_scale: values(run.model.log_initial_scale.val())[0].exp(),
            posterior,
            per_parameter,
            amortised,
            refined_joint,
            refined,
            state,
            forecast,
            reconstruction_rel_l2: rel_l2(&self.recon.concat(), &seen),
            pseudo_observations: self.pseudo_observations.clone(),
        }
    }
}

/// `count` samples `[count][n·p]` (physical units) of the Gaussians `N(mean, sd²)` over `ξ`
/// given as `(mean, sd, rows)` (`[rows·p]`; `rows = 1`: the same for every case).
fn gaussian_draws(
    o: &DvaeObjective,
    (mean, sd, rows): (&[f64], &[f64], usize),
    n: usize,
    count: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<Vec<f64>> {
    let p = o.prior.dim();
    (0..count)
        .map(|_| {
            (0..n)
                .flat_map(|i| {
                    let r = if rows == 1 { 0 } else { i };
                    let xi: Vec<f64> = (0..p)
                        .map(|j| {
                            let e: f64 = StandardNormal.sample(rng);
                            mean[r * p + j] + sd[r * p + j] * e
                        })
                        .collect();
                    o.prior.to_physical_host(&xi)
                })
                .collect()
        })
        .collect()
}

/// Sequences refined together.
const REFINE_CASES: usize = 50;
/// Adam's `(steps, lr)` stages of [`refine_posterior`] (from the amortised `q_λ`).
const REFINE_SCHEDULE: [(usize, f64); 3] = [(150, 0.03), (100, 0.01), (50, 0.002)];

/// The non-amortised `q_λ` of each test sequence: `N(μ_i, diag s_i²)` over `ξ` maximising the
/// sequence's own Φ-DVAE bound in `Λ`, `E_{q_φ(x|y_i) q_i(ξ)}[log p(x | T(ξ))] − KL(q_i ‖ N(0, I))`
/// ([`GaussianVi`]; per step the `2p` points of a randomly rotated spherical rule for `ξ`
/// ([`Draws::rotated_spherical`]), each with a fresh encoder draw of `x`), started from
/// the amortised `q_λ(ξ | y_i)` — the per-data-set `q_λ` of the Φ-DVAE paper, with the trained
/// encoder and latent model fixed. Returns `(mean, sd)` `[n·p]` on `ξ`'s scale.
fn refine_posterior(
    o: &DvaeObjective,
    model: &DvaeModel,
    amortised: &DiagGaussian,
    q_x: &DiagGaussian,
    seed: u64,
    device: &Device,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let ad = device.clone().autodiff();
    let model = model.clone().to_device(&ad).no_grad();
    let dynamics = o.setup().dynamics();
    let physics = o.physics(&model, dynamics.as_ref(), &ad);
    let (n_tr, m, p) = (o.train_frames, o.observed.len(), o.prior.dim());
    let n = q_x.mean.dims()[0] / n_tr;
    let to_ad = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), &ad);
    let [rows, _] = amortised.mean.dims();
    let init = DiagGaussian::new(
        to_ad(amortised.mean.clone()).repeat_dim(0, n / rows),
        to_ad(amortised.log_var.clone()).repeat_dim(0, n / rows),
    );
    let mu_x = to_ad(q_x.mean.clone().reshape([n, n_tr * m]));
    let sd_x = to_ad(q_x.std().reshape([n, n_tr * m]));
    let vi = GaussianVi {
        schedule: REFINE_SCHEDULE.to_vec(),
    };
    let s = 2 * p;
    let noise = NoiseSource::new(seed, Stream::HeldOutPosterior).offset(4);
    let (mut mean, mut sd) = (Vec::with_capacity(n * p), Vec::with_capacity(n * p));
    for start in (0..n).step_by(REFINE_CASES) {
        let k = REFINE_CASES.min(n - start);
        let rows_of = |t: &Tensor<2>| t.clone().narrow(0, start, k);
        let chunk = DiagGaussian::new(rows_of(&init.mean), rows_of(&init.log_var));
        // x draws of step t: [k·S, N, m], case-major like ξ.
        let x_of = |t: usize| {
            let eps = noise
                .offset(1)
                .normal([k, s, n_tr * m], start * 1000 + t, &ad);
            (rows_of(&mu_x).unsqueeze_dim::<3>(1) + rows_of(&sd_x).unsqueeze_dim::<3>(1) * eps)
                .reshape([k * s, n_tr, m])
        };
        let calls = std::cell::Cell::new(0);
        let (q, _) = vi.fit(
            &chunk,
            |xi| {
                // One call per step: fresh encoder draws each step.
                let x = x_of(calls.replace(calls.get() + 1));
                physics
                    .model(o.prior.to_physical(xi))
                    .filter(x, false)
                    .log_likelihood
            },
            |t| {
                let g = values(noise.normal([k, p, p], start * 1000 + t, device));
                Draws::rotated_spherical(&g, k, p, &ad)
            },
        )?;
        mean.extend(values(q.mean.clone()));
        sd.extend(values(q.std()));
    }
    Ok((mean, sd))
}

/// Encoder draws `x ~ q_φ(x | y)` the exact posterior of `Λ` is pooled over.
const ENCODER_DRAWS: usize = 4;
/// Grid points per axis of [`grid_posterior`] for `p ≤ 2` parameters and for more.
const GRID: [usize; 2] = [15, 11];
/// Zoom stages of [`grid_posterior`] for `p ≤ 2` and for more (a coarser grid zooms once more).
const GRID_STAGES: [usize; 2] = [4, 5];
/// Sequences filtered together by [`grid_posterior`].
const GRID_CASES: usize = 8;

/// Samples `[S][n·p]` (physical units) of the exact posterior `p(ξ | x) ∝ p(x | T(ξ)) N(ξ; 0, I)`
/// of each sequence given pseudo-observations `x = mu_x` `[n, N, m]`, by the (extended)
/// Kalman-filter likelihood on a `G^p` grid over `ξ` (`G` = [`GRID`]): first `[−4, 4]^p`, then
/// re-centred (stages − 1 times, [`GRID_STAGES`]) on the posterior mean with half-width `5 sd`
/// (at least 1.5 spacings) per axis; samples are the last grid's cells drawn by weight with a
/// uniform jitter within the cell.
fn grid_posterior(
    o: &DvaeObjective,
    model: &DvaeModel,
    mu_x: Tensor<3>,
    seed: u64,
    device: &Device,
) -> Result<Vec<Vec<f64>>, TrainError> {
    let n = mu_x.dims()[0];
    let p = o.prior.dim();
    let dynamics = o.setup().dynamics();
    let physics = o.physics(model, dynamics.as_ref(), device);
    let (g, stages) = if p <= 2 {
        (GRID[0], GRID_STAGES[0])
    } else {
        (GRID[1], GRID_STAGES[1])
    };
    let cells = g.pow(p as u32);
    // Per case: centre and half-width per axis.
    let mut window: Vec<Vec<(f64, f64)>> = vec![vec![(0.0, 4.0); p]; n];
    let node = |w: &[(f64, f64)], mut cell: usize| -> Vec<f64> {
        let mut xi = vec![0.0; p];
        for k in (0..p).rev() {
            let (c, h) = w[k];
            xi[k] = c - h + 2.0 * h * (cell % g) as f64 / (g - 1) as f64;
            cell /= g;
        }
        xi
    };
    let mut weights = vec![vec![0.0; cells]; n];
    for stage in 0..stages {
        for start in (0..n).step_by(GRID_CASES) {
            let cases: Vec<usize> = (start..(start + GRID_CASES).min(n)).collect();
            let rows = cases.len() * cells;
            let mut lambda = Vec::with_capacity(rows * p);
            let mut prior = Vec::with_capacity(rows);
            for &i in &cases {
                for cell in 0..cells {
                    let xi = node(&window[i], cell);
                    lambda.extend(o.prior.to_physical_host(&xi));
                    prior.push(-0.5 * xi.iter().map(|v| v * v).sum::<f64>());
                }
            }
            let idx: Vec<i64> = cases
                .iter()
                .flat_map(|&i| std::iter::repeat_n(i as i64, cells))
                .collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [rows]), device);
            let x = mu_x.clone().select(0, idx);
            let lambda = Tensor::<2>::from_data(TensorData::new(lambda, [rows, p]), device);
            let ll = values(physics.model(lambda).filter(x, false).log_likelihood);
            for (k, &i) in cases.iter().enumerate() {
                // A non-finite likelihood (a filter that diverged at a far-off Λ) weighs 0.
                let lw: Vec<f64> = (0..cells)
                    .map(|j| {
                        let l = ll[k * cells + j] + prior[k * cells + j];
                        if l.is_finite() { l } else { f64::NEG_INFINITY }
                    })
                    .collect();
                let top = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if !top.is_finite() {
                    return Err(invalid(
                        "eval",
                        format!(
                            "the Kalman-filter log-likelihood of test sequence {i} is not finite at any grid point of the exact posterior; the trained latent model diverged (retrain with a smaller learning rate)"
                        ),
                    ));
                }
                let w: Vec<f64> = lw.iter().map(|l| (l - top).exp()).collect();
                let total: f64 = w.iter().sum();
                weights[i] = w.iter().map(|v| v / total).collect();
            }
        }
        if stage + 1 == stages {
            break;
        }
        // Re-centre every case on its posterior mean, ±5 sd (≥ 1.5 spacings, ≤ the window).
        for (w, wt) in window.iter_mut().zip(&weights) {
            let (mut mean, mut sq) = (vec![0.0; p], vec![0.0; p]);
            for (cell, wc) in wt.iter().enumerate() {
                for (k, v) in node(w, cell).into_iter().enumerate() {
                    mean[k] += wc * v;
                    sq[k] += wc * v * v;
                }
            }
            *w = (0..p)
                .map(|k| {
                    let sd = (sq[k] - mean[k] * mean[k]).max(0.0).sqrt();
                    let spacing = 2.0 * w[k].1 / (g - 1) as f64;
                    (mean[k], (5.0 * sd).max(1.5 * spacing).min(w[k].1))
                })
                .collect();
        }
    }
    // Sample the last grid: a cell by weight, uniform within it.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(
        NoiseSource::new(seed, Stream::HeldOutPosterior)
            .offset(1)
            .stream,
    );
    let cdf: Vec<Vec<f64>> = weights
        .iter()
        .map(|w| {
            w.iter()
                .scan(0.0, |acc, v| {
                    *acc += v;
                    Some(*acc)
                })
                .collect()
        })
        .collect();
    Ok((0..POSTERIOR_SAMPLES)
        .map(|_| {
            (0..n)
                .flat_map(|i| {
                    let u: f64 = rand::Rng::random(&mut rng);
                    let j = cdf[i].partition_point(|c| *c < u).min(cells - 1);
                    let centre = node(&window[i], j);
                    let xi: Vec<f64> = (0..p)
                        .map(|k| {
                            let spacing = 2.0 * window[i][k].1 / (g - 1) as f64;
                            let e: f64 = rand::Rng::random(&mut rng);
                            centre[k] + (e - 0.5) * spacing
                        })
                        .collect();
                    o.prior.to_physical_host(&xi)
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::tests_common::*;

    const BASE: &str = "[data]\nkind = \"advection-video\"\nn = 24\n[data.settings]\nnodes = 8\nframes = 6\nheight = 6\n[model]\nkind = \"dvae\"\nhidden = [16]\namortise_hidden = [8]\n";

    const LORENZ: &str = "[data]\nkind = \"lorenz-fields\"\nn = 24\n[data.settings]\nframes = 8\nwidth = 4\nheight = 4\n[model]\nkind = \"dvae\"\nnetwork = \"dense\"\nhidden = [16]\namortise_hidden = [8]\n";

    /// The set-up, model and objective of `config`, built on 4 generated sequences with
    /// identity normalisation.
    fn built(
        config: &str,
        device: &burn::prelude::Device,
    ) -> (
        crate::sequence_setup::SequenceSetup,
        super::DvaeModel,
        super::DvaeObjective,
    ) {
        use crate::kind::Kind;
        let c = crate::experiment::TrainConfig::from_toml(config, std::path::Path::new("t.toml"))
            .unwrap();
        let crate::kinds::KindSection::Dvae(kind) = c.kind.clone() else {
            unreachable!("a dvae config")
        };
        let setup = kind.setup(&c.common).unwrap();
        let run = crate::data::RunData {
            test: setup.dataset(4, 3).unwrap(),
            norm: varphi_data::Normalization::identity(setup.param_dim()),
            n_train: 4,
        };
        let (model, o) = kind.build(&c.common, &run, device).unwrap();
        (setup, model, o)
    }

    /// The kind built from a Lorenz `config`, `n` sequences generated with seed `data_seed`, and
    /// their true states `u_1 … u_{N_train}` plus `N(0, sd_j²)` noise of seed `noise` per
    /// component, `[n, N_train, 3]`.
    fn noisy_lorenz_states(
        config: &str,
        device: &burn::prelude::Device,
        (n, data_seed, noise): (usize, u64, u64),
        sd: [f64; 3],
    ) -> (
        super::DvaeModel,
        super::DvaeObjective,
        varphi_data::sequences::Sequences,
        burn::prelude::Tensor<3>,
    ) {
        use super::*;
        let (setup, model, o) = built(config, device);
        let SequenceSetup::LorenzFields(setup) = setup else {
            unreachable!("a lorenz config")
        };
        let n_tr = o.train_frames;
        let g = setup.generate(n, data_seed).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(noise);
        let per = (setup.frames + 1) * 3;
        let x: Vec<f64> = (0..n)
            .flat_map(|i| g.states[i * per + 3..i * per + (n_tr + 1) * 3].to_vec())
            .enumerate()
            .map(|(k, u)| {
                let e: f64 = StandardNormal.sample(&mut rng);
                u + sd[k % 3] * e
            })
            .collect();
        let x = Tensor::<3>::from_data(TensorData::new(x, [n, n_tr, 3]), device);
        (model, o, g, x)
    }

    #[test]
    fn keys_of_other_kinds_and_bad_set_ups_are_rejected_naming_the_key() {
        rejects(
            &format!("{BASE}latent_dim = 3\n"),
            &["`latent_dim`", "[model]", "dvae", "observe_every"],
        );
        rejects(
            &format!("{BASE}[objective]\nbeta = 2\n"),
            &["`beta`", "[objective]", "dvae", "forecast"],
        );
        rejects(
            &format!("{BASE}[objective]\nforecast = 5\n"),
            &["objective.forecast", "at least 2"],
        );
        rejects(
            &format!("{BASE}observe_every = 0\n"),
            &["model.observe_every"],
        );
        rejects(
            &format!("{BASE}[objective.setup]\nnodes = 8\nframes = 7\nheight = 6\n"),
            &["objective.setup", "differs"],
        );
        rejects(
            "[data]\nkind = \"heat1d\"\nn = 40\n[model]\nkind = \"dvae\"\n",
            &["objective.setup", "advection-video"],
        );
        rejects(
            &LORENZ.replace("network = \"dense\"", "network = \"columns\""),
            &["model.network", "dense"],
        );
        rejects(
            &format!("{BASE}decoder = \"known\"\nnetwork = \"dense\"\n"),
            &["model.decoder", "columns"],
        );
        rejects(
            &format!("{LORENZ}observe_every = 4\n"),
            &["model.observe_every", "3 state components"],
        );
        rejects(
            &format!("{LORENZ}[objective.setup]\nproblem = \"lorenz-fields\"\nnodes = 8\n"),
            &["lorenz-fields", "nodes"],
        );
    }

    #[test]
    fn grid_posterior_and_refined_q_match_a_fine_grid_of_the_same_likelihood() {
        // Pseudo-observations = true states + N(0, R) noise of one sequence; the zooming
        // 15 × 15 grid's samples against the moments of a 101 × 101 grid over ±6 sd (flex,
        // f32: log-likelihoods of a few hundred nats to ~1e-4, far below the tolerances).
        use super::*;
        let _rng = device_rng(); // model initialisation draws from the shared device RNG
        let device = Device::flex();
        let (setup, model, o) = built(&format!("{BASE}[objective]\nforecast = 2\n"), &device);
        let SequenceSetup::AdvectionVideo(setup) = setup else {
            unreachable!("an advection config")
        };
        let (d, n_tr) = (setup.nodes, o.train_frames);
        let g = setup.generate(1, 11).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let x: Vec<f64> = g.states[d..(n_tr + 1) * d]
            .iter()
            .map(|u| {
                let e: f64 = StandardNormal.sample(&mut rng);
                u + 0.1 * e
            })
            .collect();
        let x = Tensor::<3>::from_data(TensorData::new(x, [1, n_tr, d]), &device);
        let samples = grid_posterior(&o, &model, x.clone(), 1, &device).unwrap();
        let xi: Vec<Vec<f64>> = samples.iter().map(|s| o.prior.to_standard(s)).collect();
        let moments = |w: &[(f64, [f64; 2])]| -> [[f64; 2]; 2] {
            [0, 1].map(|k| {
                let m: f64 = w.iter().map(|(p, v)| p * v[k]).sum();
                let v: f64 = w.iter().map(|(p, v)| p * (v[k] - m).powi(2)).sum();
                [m, v.sqrt()]
            })
        };
        let sampled = moments(
            &xi.iter()
                .map(|v| (1.0 / xi.len() as f64, [v[0], v[1]]))
                .collect::<Vec<_>>(),
        );
        let fine = 101;
        let nodes: Vec<[f64; 2]> = (0..fine * fine)
            .map(|k| {
                let at = |j: usize, a: usize| {
                    sampled[j][0] + sampled[j][1] * (12.0 * a as f64 / (fine - 1) as f64 - 6.0)
                };
                [at(0, k / fine), at(1, k % fine)]
            })
            .collect();
        let lambda: Vec<f64> = nodes
            .iter()
            .flat_map(|v| o.prior.to_physical_host(v))
            .collect();
        let lambda = Tensor::<2>::from_data(TensorData::new(lambda, [fine * fine, 2]), &device);
        let xs = x.clone().repeat_dim(0, fine * fine);
        let ll = o.with_physics(&model, &device, |p| {
            values(p.model(lambda).filter(xs, false).log_likelihood)
        });
        let lw: Vec<f64> = ll
            .iter()
            .zip(&nodes)
            .map(|(l, v)| l - 0.5 * (v[0] * v[0] + v[1] * v[1]))
            .collect();
        let top = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = lw.iter().map(|l| (l - top).exp()).sum();
        let exact = moments(
            &lw.iter()
                .zip(&nodes)
                .map(|(l, v)| ((l - top).exp() / total, *v))
                .collect::<Vec<_>>(),
        );
        for k in 0..2 {
            let [[ms, ss], [me, se]] = [sampled[k], exact[k]];
            assert!(
                (ms - me).abs() < 0.2 * se && (ss / se - 1.0).abs() < 0.12,
                "ξ_{k}: grid samples {ms:.4} ± {ss:.4}, fine grid {me:.4} ± {se:.4}"
            );
        }
        // The posterior is far narrower than the prior: the zoom did its work.
        assert!(exact[0][1] < 0.2, "{exact:?}");
        // The refined q_λ from the prior N(0, I) (Gaussian VI on the same likelihood, encoder
        // draws ≈ x): the fine grid's moments (the posterior is near-Gaussian in ξ).
        let q_x = DiagGaussian::new(
            x.reshape([n_tr, d]),
            Tensor::full([n_tr, d], -30.0, &device),
        );
        let prior = DiagGaussian::standard(1, 2, &device);
        let (rm, rs) = refine_posterior(&o, &model, &prior, &q_x, 3, &device).unwrap();
        for k in 0..2 {
            let [me, se] = exact[k];
            assert!(
                (rm[k] - me).abs() < 0.2 * se && (rs[k] / se - 1.0).abs() < 0.15,
                "ξ_{k}: refined q {:.4} ± {:.4}, fine grid {me:.4} ± {se:.4}",
                rm[k],
                rs[k]
            );
        }
    }

    #[test]
    fn lorenz_grid_posterior_given_the_true_states_is_calibrated_over_100_sequences() {
        // Known observation map: pseudo-observations = true Lorenz states + N(0, 0.1²) over 20
        // frames, the latent model the data's (R = 0.1², Q and P₀ the set-up's). Over 100
        // simulated sequences the extended-Kalman-filter grid posterior of each of (σ, ρ, β)
        // covers the truth at 50 / 90 / 95 % within 3 binomial sds (+0.02 for the grid), its
        // SBC ranks (10 bins) are not rejected (χ² < 27.9, p = 0.001 at 9 dof), and it is far
        // narrower than the 10 % prior.
        use super::*;
        let _rng = device_rng();
        let config = "[data]\nkind = \"lorenz-fields\"\nn = 24\n[data.settings]\nframes = 20\n[model]\nkind = \"dvae\"\nnetwork = \"dense\"\nhidden = [8]\namortise_hidden = [8]\n[objective]\nnoise_sd = 0.1\nforecast = 0\n";
        let device = Device::flex();
        let (model, o, g, x) = noisy_lorenz_states(config, &device, (100, 11, 4), [0.1; 3]);
        let n = 100;
        let samples = grid_posterior(&o, &model, x, 1, &device).unwrap();
        for k in 0..3 {
            let name = &o.prior.names[k];
            let mut bins = [0usize; 10];
            let mut cover = [0usize; 3];
            let mut sd_xi = 0.0;
            for i in 0..n {
                let t = g.params[3 * i + k];
                let mut v: Vec<f64> = samples.iter().map(|s| s[3 * i + k]).collect();
                v.sort_by(|a, b| a.total_cmp(b));
                let r = v.partition_point(|a| *a < t) as f64 / v.len() as f64;
                bins[((r * 10.0) as usize).min(9)] += 1;
                for (c, q) in cover.iter_mut().zip([0.5, 0.9, 0.95]) {
                    if (r - 0.5).abs() < q / 2.0 {
                        *c += 1;
                    }
                }
                let xi: Vec<f64> = v.iter().map(|l| l.ln()).collect();
                let m = xi.iter().sum::<f64>() / xi.len() as f64;
                sd_xi += (xi.iter().map(|a| (a - m).powi(2)).sum::<f64>() / xi.len() as f64).sqrt()
                    / o.prior.sd[k]
                    / n as f64;
            }
            for (c, q) in cover.iter().zip([0.5, 0.9, 0.95]) {
                let got = *c as f64 / n as f64;
                let tol = 3.0 * (q * (1.0 - q) / n as f64).sqrt() + 0.02;
                assert!(
                    (got - q).abs() <= tol,
                    "{name}: coverage {got:.2} at {q} (±{tol:.3}); SBC bins {bins:?}"
                );
            }
            let e = n as f64 / 10.0;
            let chi2: f64 = bins.iter().map(|b| (*b as f64 - e).powi(2) / e).sum();
            assert!(chi2 < 27.9, "{name}: SBC χ² {chi2:.1}, bins {bins:?}");
            assert!(
                sd_xi < 0.5,
                "{name}: mean posterior sd {sd_xi:.3} prior sds"
            );
        }
    }

    #[test]
    fn learned_noise_recovers_planted_levels_per_component_and_their_pooled_level_shared() {
        // Pseudo-observations = true Lorenz states + N(0, diag(0.05², 0.15², 0.15²)) over 20
        // frames of 40 sequences; Λ the truth, Q and P₀ the set-up's (fixed). Maximising the
        // extended-Kalman-filter log-likelihood over √R (Adam on its κ, as in training) recovers
        // each component's sd with `noise = "per-component"` (800 residuals each: the sd of
        // the estimate is ≈ 2.5 %; asserted within 8 %), and with `noise = "shared"` the
        // pooled level √(mean r_j²) = 0.126, which over-trusts Y and Z by 1.19× in sd.
        use super::*;
        use burn::optim::{AdamConfig, GradientsParams};
        let _rng = device_rng();
        let planted = [0.05, 0.15, 0.15];
        let device = Device::flex().autodiff();
        for (noise, want) in [
            ("per-component", planted.to_vec()),
            (
                "shared",
                vec![(planted.iter().map(|r| r * r).sum::<f64>() / 3.0).sqrt()],
            ),
        ] {
            let config = format!(
                "[data]\nkind = \"lorenz-fields\"\nn = 24\n[data.settings]\nframes = 20\n[model]\nkind = \"dvae\"\nnetwork = \"dense\"\nhidden = [8]\namortise_hidden = [8]\n[objective]\nnoise_sd = 0.1\nnoise = \"{noise}\"\nlearn_process = false\nlearn_initial = false\nforecast = 0\n"
            );
            let n = 40;
            let (mut model, o, g, x) = noisy_lorenz_states(&config, &device, (n, 5, 6), planted);
            let lambda = Tensor::<2>::from_data(TensorData::new(g.params.clone(), [n, 3]), &device);
            let mut opt = AdamConfig::new().init();
            for _ in 0..300 {
                let ll = o.with_physics(&model, &device, |physics| {
                    physics
                        .model(lambda.clone())
                        .filter(x.clone(), false)
                        .log_likelihood
                });
                let grads = GradientsParams::from_grads((-ll.mean()).backward(), &model);
                model = opt.step(0.002, model, grads); // 0.02 in log √R (SIGMA_GAIN)
            }
            let got = model.learned_noise_sd();
            assert_eq!(got.len(), want.len(), "{noise}: {got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g / w - 1.0).abs() < 0.08,
                    "{noise}: learned √R {got:?}, planted {want:?}"
                );
            }
        }
    }

    #[test]
    fn pseudo_observation_scores_recover_planted_ar1_errors() {
        // Errors e_{n,j} = φ e_{n−1,j} + √(1 − φ²) s_j w plus a bias b_j (stationary AR(1),
        // φ = 0.6, s = 0.1 / 0.2 / 0.3, b = 0.05 / 0 / −0.05), the neighbours correlated at 0.5
        // through a shared innovation, over 100 sequences of 200 frames: the scores recover
        // φ and the correlation to 0.03, and rms = √(s² + b²) and the bias to 3 % of s.
        use super::*;
        let (n, frames, m, phi, rho): (usize, usize, usize, f64, f64) = (100, 200, 3, 0.6, 0.5);
        let (s, b) = ([0.1, 0.2, 0.3], [0.05, 0.0, -0.05]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
        let (mut mean, mut truth) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let mut z = [0.0; 3];
            for t in 0..frames {
                let shared = normal();
                for j in 0..m {
                    let w = rho.sqrt() * shared + (1.0 - rho).sqrt() * normal();
                    z[j] = if t == 0 {
                        w
                    } else {
                        phi * z[j] + (1.0 - phi * phi).sqrt() * w
                    };
                    let u = normal();
                    truth.push(u);
                    mean.push(u + b[j] + s[j] * z[j]);
                }
            }
        }
        let sd = vec![0.01; mean.len()];
        let r = PseudoObservationScores::of(&mean, &sd, &truth, (n, frames, m), vec![0.1; m]);
        for j in 0..m {
            let rms = (s[j] * s[j] + b[j] * b[j]).sqrt();
            assert!((r.lag1[j] - phi).abs() < 0.03, "lag-1 {:?}", r.lag1);
            assert!(
                (r.rms_error[j] - rms).abs() < 0.03 * s[j],
                "rms {:?}",
                r.rms_error
            );
            assert!((r.bias[j] - b[j]).abs() < 0.03 * s[j], "bias {:?}", r.bias);
            assert!((r.encoder_sd[j] - 0.01).abs() < 1e-12);
        }
        assert!(
            (r.neighbour_corr - rho).abs() < 0.03,
            "neighbour {}",
            r.neighbour_corr
        );
    }

    #[test]
    fn known_decoders_are_the_set_ups_renderings() {
        // decoder = "known" (identity normalisation): the decoded frame of a true state is the
        // generator's noiseless rendering, for the advection curves and the Lorenz fields.
        use super::*;
        let _rng = device_rng();
        let device = Device::flex();
        for config in [
            format!("{BASE}decoder = \"known\"\n"),
            LORENZ.replace(
                "network = \"dense\"\n",
                "network = \"dense\"\ndecoder = \"known\"\n",
            ),
        ] {
            let (setup, model, _) = built(&config, &device);
            let d = setup.state_dim();
            let g = setup.generate(1, 5).unwrap();
            let u = g.states[d..2 * d].to_vec();
            let want = match setup {
                SequenceSetup::AdvectionVideo(a) => a.render(&u),
                SequenceSetup::LorenzFields(l) => l.render(&u),
            };
            let x = Tensor::<3>::from_data(TensorData::new(u, [1, 1, d]), &device);
            let got = values(model.dvae.decode(x));
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "{} decoded {a} vs rendered {b}",
                    setup.problem()
                );
            }
        }
    }

    #[test]
    fn encoder_skip_inverts_the_known_rendering() {
        // ŷ = x M + b with M of full row rank: o + s ⊙ (ŷ A + a) = x exactly.
        let (m, p) = (2, 5);
        let matrix: Vec<f64> = (0..m * p).map(|k| ((k * 7) % 11) as f64 - 4.5).collect();
        let offset: Vec<f64> = (0..p).map(|k| 0.1 * k as f64).collect();
        let st = (vec![2.0, -1.0], vec![3.0, 0.5]);
        let (a, b) = super::least_squares_inverse(&matrix, &offset, m, Some(&st)).unwrap();
        let x = [0.7, -1.3];
        let y: Vec<f64> = (0..p)
            .map(|k| offset[k] + (0..m).map(|i| x[i] * matrix[i * p + k]).sum::<f64>())
            .collect();
        for j in 0..m {
            let t = b[j] + (0..p).map(|k| y[k] * a[k * m + j]).sum::<f64>();
            let back = st.0[j] + st.1[j] * t;
            assert!((back - x[j]).abs() < 1e-10, "{back} vs {}", x[j]);
        }
    }

    #[test]
    fn one_step_changes_the_weights_and_eval_matches_a_reload() {
        let config = format!(
            "seed = 2\n{BASE}[objective]\nforecast = 2\n[training]\nepochs = 2\nbatch_size = 8\n"
        );
        one_step_changes_the_weights(&config);
        eval_of_a_trained_run_is_reproducible(&config, "posterior");
        let baseline = format!(
            "seed = 2\n{BASE}transition = \"learned-linear\"\n[objective]\nforecast = 2\n[training]\nepochs = 2\nbatch_size = 8\n"
        );
        one_step_changes_the_weights(&baseline);
        eval_of_a_trained_run_is_reproducible(&baseline, "forecast");
        // Lorenz-63 through the extended Kalman filter, three parameters on the grid.
        let lorenz = format!(
            "seed = 2\n{LORENZ}[objective]\nforecast = 2\n[training]\nepochs = 2\nbatch_size = 8\n"
        );
        one_step_changes_the_weights(&lorenz);
        eval_of_a_trained_run_is_reproducible(&lorenz, "posterior");
        let known = lorenz.replace(
            "network = \"dense\"\n",
            "network = \"dense\"\ndecoder = \"known\"\n",
        );
        one_step_changes_the_weights(&known);
    }
}
