//! Physics-integrated VAE runs (`[model] kind = "phys-vae"`, Takeishi & Kalousis 2021).
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
//! `s ~ N(0, I)`. `varphi eval` scores the posterior of the physical parameters against the
//! simulator's true values (relative error of the posterior mean, coverage, CRPS).

use crate::backend::BackendKind;
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::model::NoiseSource;
use crate::physics::{mean_of, rows};
use crate::run::PreparedData;
use crate::trainer::{Objective, StepOutput};
use crate::uq::{self, UqScores};
use burn::module::Param;
use burn::prelude::*;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use varphi_data::physics::PhysicsSettings;
use varphi_losses::{ObservationOperator, PhysVaeLoss, PhysVaeNoise};
use varphi_models::{Mlp, MlpConfig, PhysVae, PhysVaeConfig};
use varphi_physics::pde::{AdvectionDiffusion, Pendulum};

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
    /// Build from the config (validated: pendulum or heat data, observations present).
    pub fn new(config: &TrainConfig) -> Self {
        let (_, settings) = config.data.physics().expect("validated");
        let every = config
            .objective
            .observations
            .as_ref()
            .and_then(|o| o.every)
            .unwrap_or(1);
        let substeps = config.objective.physvae.substeps;
        match settings {
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
            _ => unreachable!("validated: phys-vae runs on pendulum or heat data"),
        }
    }
}

/// The trained module.
#[derive(Module, Debug)]
pub struct PhysVaeModel {
    /// Encoder over normalised observations, physics + correction decoder.
    pub vae: PhysVae,
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
    pub fn init(config: &TrainConfig, physics: &PhysVaePhysics, device: &Device) -> Self {
        let m = physics.operator.len();
        let p = physics.ranges.len();
        let surrogate = config.objective.physvae.surrogate.then(|| {
            let mut sizes = vec![p];
            sizes.extend(&config.model.hidden);
            sizes.push(m);
            MlpConfig::new(sizes)
                .with_activation(config.model.activation.into())
                .init(device)
        });
        Self {
            vae: PhysVaeConfig::new(m, m, physics.ranges.clone())
                .with_aux_dim(config.model.aux_dim)
                .with_hidden(config.model.hidden.clone())
                .with_activation(config.model.activation.into())
                .with_flow(config.posterior_flow())
                .init(device),
            surrogate,
            log_sigma: config
                .objective
                .physvae
                .learn_noise
                .then(|| Param::from_tensor(Tensor::<1>::zeros([1], device))),
            noise_corr: config
                .objective
                .physvae
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
    /// Build from the config and the run's data.
    pub fn new(config: &TrainConfig, data: &PreparedData) -> Self {
        let sigma = config
            .objective
            .observations
            .as_ref()
            .expect("validated")
            .sigma;
        Self {
            physics: PhysVaePhysics::new(config),
            loss: PhysVaeLoss {
                sigma,
                beta: config.objective.beta,
                aux_weight: config.objective.physvae.aux_weight,
            },
            augmentation: config.objective.physvae.augmentation,
            supervised: config
                .objective
                .physvae
                .uq_alpha
                .map_or(0.0, |a| (1.0 - a) / a),
            x_mean: data.norm.x_mean,
            x_std: data.norm.x_std,
            cond_mean: data.norm.cond_mean.clone(),
            cond_std: data.norm.cond_std.clone(),
            noise: NoiseSource {
                seed: config.seed,
                stream: 0,
            },
        }
    }

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
        let noise = |k: u64| NoiseSource {
            seed: self.noise.seed,
            stream: self.noise.stream + 4 * noise_stream + k,
        };
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
            let theta = self.physical_truth(cond.clone().expect("physics data carry parameters"));
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
            let cond = cond.expect("physics data carry their parameters");
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

/// A loaded phys-vae run.
pub type PhysVaeRun = crate::run::KindRun<PhysVaeModel, PhysVaeObjective>;

/// Load a phys-vae run's last checkpoint.
pub fn load_physvae_run(
    dir: &Path,
    backend: Option<BackendKind>,
) -> Result<PhysVaeRun, TrainError> {
    crate::run::load_kind_run(dir, backend, |config, data, device| {
        let objective = PhysVaeObjective::new(config, data);
        let model = PhysVaeModel::init(config, &objective.physics, device);
        Ok((model, objective))
    })
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

/// Score the physical posterior on the first (up to) 200 test cases with 256 samples each;
/// write `eval.json`.
pub fn evaluate_physvae_run(run: &PhysVaeRun) -> Result<PhysVaeEval, TrainError> {
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
    let seed = run.config.seed;
    let y = obj.observe(x, NoiseSource { seed, stream: 500 }, 0);
    let m = y.dims()[1];
    let vae = &run.model.vae;
    let (p, a) = (vae.phys_dim(), vae.aux_dim);
    let rep = |t: Tensor<2>| {
        let w = t.dims()[1];
        t.unsqueeze_dim::<3>(0)
            .expand([S, n, w])
            .reshape([S * n, w])
    };
    let out = vae.forward(
        rep(obj.encoder_input(y)),
        NoiseSource { seed, stream: 501 }.normal([S * n, p], 0, device),
        NoiseSource { seed, stream: 502 }
            .normal([S * n, a.max(1)], 0, device)
            .narrow(1, 0, a.max(1)),
        run.model.decoder_physics(obj).as_ref(),
    );
    let mean_over_samples = |t: Tensor<2>| t.reshape([S, n, m]).mean_dim(0).reshape([n, m]);
    let rel_l2 = |est: Tensor<2>| -> f64 {
        let (e, c) = (rows(est), rows(clean.clone()));
        let num: f64 = e.iter().zip(&c).map(|(a, b)| (a - b).powi(2)).sum();
        let den: f64 = c.iter().map(|b| b * b).sum();
        (num / den).sqrt()
    };
    let reconstruction_rel_l2 = rel_l2(mean_over_samples(out.x.clone()));
    let physics_rel_l2 = rel_l2(mean_over_samples(out.x_phys.clone()));
    let params = rows(out.params); // [S·n, p], sample-major
    // [n, p] physical truths of the physical latents.
    let truth_all = rows(obj.physical_truth(cond.expect("physics data carry parameters")));
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
                scores: uq::score(&samples, &truth, &uq::LEVELS),
            }
        })
        .collect();
    let report = PhysVaeEval {
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
    };
    crate::run::write_eval(&run.dir, &report)?;
    Ok(report)
}
