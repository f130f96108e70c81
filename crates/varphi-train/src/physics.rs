//! Physics-informed runs (`[model] kind = "pddlvm"`): a forward surrogate `q(u|z)` and an
//! inverse model `p(z|u)` trained from parameter draws alone through the virtual observation of
//! the PDE residual (primer eqs. 29–30), evaluated against the reference solver with
//! [`crate::uq`] scores. With `[objective.observations]` an amortised posterior `q(ξ|y)` over
//! the whitened parameters learns to invert sparse noisy observations `y` through the same
//! surrogate and residual ([`varphi_losses::PddlvmDataElbo`]), in stages physics → data → joint.

use crate::backend::BackendKind;
use crate::config::{DataShape, StageMode, TrainConfig};
use crate::error::{TrainError, io_err};
use crate::model::NoiseSource;
use crate::plots;
use crate::run::PreparedData;
use crate::trainer::{Objective, StepOutput};
use crate::uq::{self, UqScores};
use burn::module::Param;
use burn::prelude::*;
use serde::Serialize;
use std::path::Path;
use varphi_data::{Batcher, physics::Observations};
use varphi_losses::{
    ObservationLikelihood, ObservationOperator, PddlvmDataElbo, PddlvmElbo, ResidualLikelihood,
};
use varphi_models::{Activation, FullGaussian, Mlp, MlpConfig, Pddlvm, VariationalFamily};
use varphi_physics::pde::{Preconditioner, PriorTransform, Problem, Residual};

/// The trained module: both networks and the residual likelihood (whose `σ_r` may be learned).
#[derive(Module, Debug)]
pub struct PhysicsModel {
    /// Forward surrogate and inverse model.
    pub pddlvm: Pddlvm,
    /// Virtual observation of the residual.
    pub residual: ResidualLikelihood,
    /// Amortised full-covariance posterior `q_ψ(ξ | y) = N(μ(y), L(y)L(y)ᵀ)` over the whitened
    /// parameters (runs with observations): an MLP `y ↦ [μ, raw L]`, `k + k²` outputs.
    pub posterior: Option<Mlp>,
    /// `log s_j`, the surrogate's model error at each observed point, `[1, m]` (physical
    /// units), learned with the posterior (type-II maximum likelihood over the training pairs).
    pub model_error: Option<Param<Tensor<2>>>,
}

impl PhysicsModel {
    /// Build from the config for data of `shape` (conditions = parameters) and the objective
    /// (which knows the observation count and the latent dimension).
    pub fn init(
        config: &TrainConfig,
        shape: &DataShape,
        objective: &PddlvmObjective,
        device: &Device,
    ) -> Self {
        let act: Activation = config.model.activation.into();
        Self {
            pddlvm: config.pddlvm_config(shape).init(device),
            residual: config
                .residual_likelihood()
                .expect("validated: pddlvm has [objective.residual]")
                .init(device),
            posterior: objective.observations.as_ref().map(|o| {
                let k = o.transform.latent_dim();
                let mut sizes = vec![o.likelihood.operator.len()];
                sizes.extend(&config.model.hidden);
                sizes.push(k + k * k);
                MlpConfig::new(sizes).with_activation(act).init(device)
            }),
            model_error: objective.observations.as_ref().map(|o| {
                let m = o.likelihood.operator.len();
                Param::from_tensor(
                    Tensor::<2>::zeros([1, m], device).add_scalar(o.likelihood.sigma.ln()),
                )
            }),
        }
    }
}

/// The observation part of a run with `[objective.observations]`.
pub struct ObservationTerm {
    /// `log p(y | u)` at the observed nodes (physical units).
    pub likelihood: ObservationLikelihood,
    /// `z = T(ξ)`, `ξ ~ N(0, I)`.
    pub transform: PriorTransform,
}

/// The PDDLVM objective on normalised parameters: `z_phys = z·std + mean` enters the residual,
/// the surrogate predicts `u / u_scale`.
pub struct PddlvmObjective {
    /// The problem, its residual and the parameter normalisation.
    pub physics: PhysicsTerm,
    /// Physical scale of `u`.
    pub u_scale: f64,
    /// Particles per parameter draw.
    pub n_particles: usize,
    /// Training noise.
    pub noise: NoiseSource,
    /// Observations and the whitened prior (runs with `[objective.observations]`).
    pub observations: Option<ObservationTerm>,
    /// `(mode, first epoch after the stage)`.
    pub stages: Vec<(StageMode, usize)>,
    /// Optimiser steps per epoch (to find the stage of a step).
    pub steps_per_epoch: usize,
    /// Solution normalisation of the data (`u = x·x_std + x_mean`).
    pub x_mean: f64,
    /// Solution normalisation of the data.
    pub x_std: f64,
}

/// The physics shared by residual-based objectives: the problem, the optional preconditioner
/// of its residual, and the per-column normalisation of the parameters (the networks see
/// normalised parameters, the residual physical ones).
pub struct PhysicsTerm {
    /// The problem (residual, reference solver).
    pub problem: Box<dyn Problem + Send + Sync>,
    /// `P⁻¹` when the residual is preconditioned.
    pub preconditioner: Option<Preconditioner>,
    /// Parameter normalisation (per column).
    pub cond_mean: Vec<f64>,
    /// Parameter normalisation (per column).
    pub cond_std: Vec<f64>,
}

impl PhysicsTerm {
    /// Build from the config's physics data source and `[objective.residual]`.
    pub fn new(config: &TrainConfig, data: &PreparedData) -> Result<Self, TrainError> {
        let (_, physics) = config.data.physics().ok_or_else(|| TrainError::Invalid {
            key: "data.kind".into(),
            message: "a PDE residual needs a physics data source (darcy, poisson1d, burgers, ...)"
                .into(),
        })?;
        let problem = physics.build();
        let r = config.objective.residual.as_ref().expect("validated");
        let preconditioner = if r.precondition {
            Some(
                problem
                    .preconditioner()
                    .ok_or_else(|| TrainError::Invalid {
                        key: "objective.residual.precondition".into(),
                        message: format!(
                            "the {} problem has no preconditioner; set precondition = false",
                            problem.name()
                        ),
                    })?,
            )
        } else {
            None
        };
        Ok(Self {
            problem,
            preconditioner,
            cond_mean: data.norm.cond_mean.clone(),
            cond_std: data.norm.cond_std.clone(),
        })
    }

    /// `(mean, std)` of the parameter normalisation as `[1, p]` rows on `device`.
    fn cond_rows(&self, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let p = self.cond_mean.len();
        let row = |v: &[f64]| Tensor::<2>::from_data(TensorData::new(v.to_vec(), [1, p]), device);
        (row(&self.cond_mean), row(&self.cond_std))
    }

    /// Physical parameters from normalised ones, `[b, p]`.
    pub fn physical(&self, z: Tensor<2>) -> Tensor<2> {
        let (mean, std) = self.cond_rows(&z.device());
        z * std + mean
    }

    /// Normalised parameters (the networks' coordinates) from physical ones, `[b, p]`.
    pub fn normalised(&self, z: Tensor<2>) -> Tensor<2> {
        let (mean, std) = self.cond_rows(&z.device());
        (z - mean) / std
    }

    /// The (preconditioned, where configured) residual of physical solutions `u` `[rows, n_u]`
    /// at physical parameters `z` `[rows, p]`.
    pub fn residual(&self, u: Tensor<2>, z: Tensor<2>) -> Residual {
        let r = self.problem.residual(u, z);
        match &self.preconditioner {
            Some(p) => Preconditioner::apply_with(&p.tensor(&r.pde.device()), r),
            None => r,
        }
    }
}

impl PddlvmObjective {
    /// Build from the config and the run's (normalised) data.
    pub fn new(config: &TrainConfig, data: &PreparedData) -> Result<Self, TrainError> {
        let norm = &data.norm;
        let physics = PhysicsTerm::new(config, data)?;
        let problem = &physics.problem;
        let r = config.objective.residual.as_ref().expect("validated");
        let observations = match &config.objective.observations {
            None => None,
            Some(o) => {
                let transform = problem.prior_transform().ok_or_else(|| TrainError::Invalid {
                    key: "objective.observations".into(),
                    message: format!(
                        "the {} prior has no standard-normal reparameterisation (thresholded fields have none); use a log-normal coefficient or drop [objective.observations]",
                        problem.name()
                    ),
                })?;
                let obs = Observations {
                    count: o.count,
                    sigma: o.sigma,
                };
                let indices =
                    varphi_data::physics::observation_indices(problem.as_ref(), &obs, config.seed)
                        .map_err(|e| TrainError::Invalid {
                            key: "objective.observations".into(),
                            message: e.to_string(),
                        })?;
                Some(ObservationTerm {
                    likelihood: ObservationLikelihood {
                        operator: ObservationOperator::by_index(&indices),
                        sigma: o.sigma,
                    },
                    transform,
                })
            }
        };
        let steps_per_epoch = Batcher {
            batch_size: config.training.batch_size,
            seed: config.seed,
        }
        .batches_per_epoch(data.train.len());
        Ok(Self {
            observations,
            stages: config.stage_plan(),
            steps_per_epoch,
            x_mean: norm.x_mean,
            x_std: norm.x_std,
            physics,
            u_scale: r.u_scale,
            n_particles: config.objective.n_particles,
            noise: NoiseSource {
                seed: config.seed,
                stream: 0,
            },
        })
    }

    /// Physical parameters from normalised ones, `[b, p]`.
    pub fn physical(&self, z: Tensor<2>) -> Tensor<2> {
        self.physics.physical(z)
    }

    /// Normalised parameters (the networks' coordinates) from physical ones, `[b, p]`.
    pub fn normalised(&self, z: Tensor<2>) -> Tensor<2> {
        self.physics.normalised(z)
    }

    /// `log p(r̂ = 0 | u, z)` for surrogate outputs `u` `[rows, n_u]` (units of `u_scale`) and
    /// physical parameters `z` `[rows, p]`.
    pub fn log_residual(
        &self,
        model: &PhysicsModel,
        u: Tensor<2>,
        z: Tensor<2>,
        step: usize,
    ) -> Tensor<1> {
        let r = self.physics.residual(u.mul_scalar(self.u_scale), z);
        model.residual.log_prob(&r, step)
    }

    /// The stage of optimiser step `step`.
    pub fn mode_at(&self, step: usize) -> StageMode {
        let epoch = step / self.steps_per_epoch.max(1);
        self.stages
            .iter()
            .find(|(_, end)| epoch < *end)
            .or(self.stages.last())
            .map_or(StageMode::Physics, |s| s.0)
    }

    /// Noisy observations `y = u(x_j) + σ_y ε` of solutions `u` `[b, n_u]` (physical units).
    pub fn observe(&self, u: Tensor<2>, noise: NoiseSource, step: usize) -> Tensor<2> {
        let o = self.observations.as_ref().expect("a run with observations");
        let device = u.device();
        let clean = o.likelihood.operator.apply(u);
        let eps = noise.normal(clean.dims(), step, &device);
        clean + eps.mul_scalar(o.likelihood.sigma)
    }

    /// `q_ψ(ξ | y)` for observations `y` `[b, m]` (physical units).
    pub fn posterior(&self, model: &PhysicsModel, y: Tensor<2>) -> FullGaussian {
        let o = self.observations.as_ref().expect("a run with observations");
        let k = o.transform.latent_dim();
        let b = y.dims()[0];
        let out = model
            .posterior
            .as_ref()
            .expect("a run with observations has a posterior network")
            .forward(y.div_scalar(self.u_scale));
        let mean = out.clone().slice([0..b, 0..k]);
        let raw = out.slice([0..b, k..k + k * k]).reshape([b, k, k]);
        FullGaussian::from_unconstrained(mean, raw)
    }

    /// The observation bound [`PddlvmDataElbo`] for observations `y` `[b, m]`. The surrogate
    /// enters frozen (its parameters as constants): gradients reach `ξ` through it, but the
    /// observations never pull the surrogate away from the physics.
    pub fn data_bound(
        &self,
        model: &PhysicsModel,
        y: Tensor<2>,
        noise: NoiseSource,
        step: usize,
    ) -> varphi_losses::PddlvmDataOutput {
        let o = self.observations.as_ref().expect("a run with observations");
        let device = y.device();
        let [b, m] = y.dims();
        let (s, k) = (self.n_particles, o.transform.latent_dim());
        let q_xi = self.posterior(model, y.clone());
        let eps_xi = noise.normal([s, b, k], step, &device);
        let y_rep = y
            .unsqueeze_dim::<3>(0)
            .expand([s, b, m])
            .reshape([s * b, m]);
        // `valid()`: parameters without autodiff act as constants, inputs stay tracked.
        let frozen = model.pddlvm.forward.valid();
        let scale = self.u_scale;
        PddlvmDataElbo.forward(&q_xi, eps_xi, |xi| {
            let q_u = frozen.forward(self.normalised(o.transform.apply(xi)));
            o.likelihood.log_marginal(
                y_rep,
                q_u.mean.clone().mul_scalar(scale),
                q_u.variance().mul_scalar(scale * scale),
                model
                    .model_error
                    .as_ref()
                    .map(|p| p.val().mul_scalar(2.0).exp()),
            )
        })
    }
}

/// Mean of a `[n]` tensor as `f64`.
pub(crate) fn mean_of(t: Tensor<1>) -> f64 {
    t.mean()
        .into_data()
        .convert::<f64>()
        .try_into_vec_as::<f64>()
        .expect("f64")[0]
}

impl Objective<PhysicsModel> for PddlvmObjective {
    fn step(
        &self,
        model: &PhysicsModel,
        x: Tensor<2>,
        cond: Option<Tensor<2>>,
        step: usize,
        noise_stream: u64,
    ) -> StepOutput {
        let device = x.device();
        let z = cond.expect("pddlvm data carry the parameters as conditions");
        let [b, p] = z.dims();
        let nu = x.dims()[1];
        let s = self.n_particles;
        // Separate streams: physics particles, observation noise, posterior particles.
        let stream = |k: u64| NoiseSource {
            stream: self.noise.stream + noise_stream + k * 1_000_000,
            ..self.noise
        };
        let mode = self.mode_at(step);
        // A term outside the stage's loss is still reported, but computed without autodiff: a
        // graph that is never backpropagated would pile up.
        let untracked =
            (mode != StageMode::Joint && self.observations.is_some()).then(|| model.valid());
        let (for_physics, z) = match (mode, &untracked) {
            (StageMode::Data, Some(valid)) => (valid, z.inner()),
            _ => (model, z),
        };
        let (for_data, x) = match (mode, &untracked) {
            (StageMode::Physics, Some(valid)) => (valid, x.inner()),
            _ => (model, x),
        };
        let eps = stream(0).normal([s, b, nu], step, &device);
        let z_phys = self.physical(z.clone());
        let z_rep = z_phys
            .unsqueeze_dim::<3>(0)
            .expand([s, b, p])
            .reshape([s * b, p]);
        let q = for_physics.pddlvm.surrogate(z.clone());
        let out = PddlvmElbo.forward(
            &q,
            eps,
            z,
            |u| self.log_residual(for_physics, u, z_rep, step),
            |u| for_physics.pddlvm.inverse(u),
        );
        // Component terms first: the NaN guard names the first non-finite one.
        let mut terms = vec![
            ("log_residual", mean_of(out.log_residual)),
            ("log_inverse", mean_of(out.log_inverse)),
            ("entropy", mean_of(out.entropy)),
        ];
        let mut loss = (mode != StageMode::Data).then_some(out.loss);
        if self.observations.is_some() {
            // The batch holds normalised solutions.
            let u = x.mul_scalar(self.x_std).add_scalar(self.x_mean);
            let y = self.observe(u, stream(1), step);
            let d = self.data_bound(for_data, y, stream(2), step);
            terms.extend([
                ("obs_log_lik", mean_of(d.log_obs)),
                ("obs_kl", mean_of(d.kl)),
            ]);
            if mode != StageMode::Physics {
                loss = Some(match loss {
                    Some(l) => l + d.loss,
                    None => d.loss,
                });
            }
        }
        let loss = loss.expect("every stage has a loss");
        terms.push(("loss", mean_of(loss.clone().detach())));
        terms.push(("sigma_r", model.residual.current_sigma(step)));
        StepOutput {
            terms,
            loss,
            beta: None,
        }
    }
}

/// `eval.json` of a physics run.
#[derive(Debug, Clone, Serialize)]
pub struct PhysicsEval {
    /// Test cases scored.
    pub n_test: usize,
    /// Predictive samples per case.
    pub n_samples: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Forward surrogate vs the reference solutions: relative L2 of the mean.
    pub rel_l2: f64,
    /// Mean Gaussian NLL per solution entry.
    pub nll: f64,
    /// Mean CRPS per solution entry.
    pub crps: f64,
    /// Coverage of central intervals by level.
    pub coverage: std::collections::BTreeMap<String, f64>,
    /// Mean `‖r(u_s, z)‖₂` (PDE and boundary rows, unpreconditioned) of surrogate samples.
    pub residual_norm: f64,
    /// The same for the reference solutions (the discretisation's floor).
    pub reference_residual_norm: f64,
    /// Inverse model `p(z | u_true)` against the true parameters.
    pub inverse: UqScores,
    /// Runs with observations: the parameter posterior given noisy observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posterior: Option<PosteriorEval>,
}

/// Scores of the amortised posterior on the test cases, from observations
/// `y = u*(x_j) + σ_y ε` simulated once with a fixed seed.
#[derive(Debug, Clone, Serialize)]
pub struct PosteriorEval {
    /// Observed nodes per case.
    pub n_obs: usize,
    /// Observation noise σ_y.
    pub obs_sigma: f64,
    /// `z = T(ξ)`, `ξ ~ q(ξ | y)`, against the true parameters.
    pub params: UqScores,
    /// The prior `T(ξ)`, `ξ ~ N(0, I)`, on the same cases: the baseline the observations improve
    /// on (its coverage is nominal by construction, its rel_l2 is the prior's spread).
    pub prior: UqScores,
    /// Posterior predictive `u ~ q(u | T(ξ))`, `ξ ~ q(ξ | y)`, against the reference solutions.
    pub solution: UqScores,
    /// Per-parameter posterior scores (named), for up to 16 parameters: which ones the
    /// observations identify and which stay at their prior.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_parameter: Vec<(String, UqScores)>,
}

/// [`uq::score`] of column `j` of `[S][n·p]` samples against `[n·p]` truth.
fn column_scores(samples: &[Vec<f64>], truth: &[f64], p: usize, j: usize) -> UqScores {
    let col = |v: &[f64]| v.iter().skip(j).step_by(p).copied().collect::<Vec<_>>();
    let s: Vec<Vec<f64>> = samples.iter().map(|v| col(v)).collect();
    uq::score(&s, &col(truth), &uq::LEVELS)
}

/// A physics run loaded for inference.
pub type PhysicsRun = crate::run::KindRun<PhysicsModel, PddlvmObjective>;

/// Load a physics run's config, data and latest checkpoint.
pub fn load_physics_run(
    dir: &Path,
    backend: Option<BackendKind>,
) -> Result<PhysicsRun, TrainError> {
    crate::run::load_kind_run(dir, backend, |config, data, device| {
        let objective = PddlvmObjective::new(config, data)?;
        let model = PhysicsModel::init(config, &data.shape(), &objective, device);
        Ok((model, objective))
    })
}

pub(crate) fn rows(t: Tensor<2>) -> Vec<f64> {
    t.into_data().try_into_vec_as::<f64>().expect("f64")
}

/// Score the first (up to) 200 test cases with 64 predictive samples each; write `eval.json`.
pub fn evaluate_physics_run(run: &PhysicsRun) -> Result<PhysicsEval, TrainError> {
    let device = &run.device.device;
    let o = &run.objective;
    let n = run.data.test.len().min(200);
    let s = 64;
    let idx: Vec<usize> = (0..n).collect();
    let (x, cond) = run.data.test.batch(&idx, device);
    let z = cond.expect("parameters");
    let (p, nu) = (z.dims()[1], x.dims()[1]);
    let mut truth = rows(x);
    run.data.norm.invert_x(&mut truth);
    let z_phys = o.physical(z.clone());
    let noise = NoiseSource {
        seed: run.config.seed,
        stream: 300,
    };
    // Forward: q(u | z).
    let q = run.model.pddlvm.surrogate(z);
    let u = q
        .rsample(noise.normal([s, n, nu], 0, device))
        .mul_scalar(o.u_scale);
    // `[S·n, w]` samples as `[S][n·w]`.
    let split =
        |v: Vec<f64>, w: usize| -> Vec<Vec<f64>> { v.chunks(n * w).map(<[f64]>::to_vec).collect() };
    let samples = split(rows(u.clone().reshape([s * n, nu])), nu);
    let fwd = uq::score(&samples, &truth, &uq::LEVELS);
    let norm_of = |u: Tensor<2>, z: Tensor<2>| {
        let r = o.physics.problem.residual(u, z).all();
        rows(r.powi_scalar(2).sum_dim(1).sqrt().mean().unsqueeze::<2>())[0]
    };
    let z_rep = z_phys
        .clone()
        .unsqueeze_dim::<3>(0)
        .expand([s, n, p])
        .reshape([s * n, p]);
    let residual_norm = norm_of(u.reshape([s * n, nu]), z_rep);
    let truth_t = Tensor::<2>::from_data(TensorData::new(truth.clone(), [n, nu]), device);
    let reference_residual_norm = norm_of(truth_t.clone(), z_phys.clone());
    // Inverse: p(z | u_true).
    let qz = run
        .model
        .pddlvm
        .inverse(truth_t.clone().div_scalar(o.u_scale));
    let zs = qz
        .rsample(noise.normal([s, n, p], 1, device))
        .reshape([s * n, p]);
    let z_samples = split(rows(o.physical(zs)), p);
    let z_truth = rows(z_phys);
    let inverse = uq::score(&z_samples, &z_truth, &uq::LEVELS);
    let posterior = match &o.observations {
        None => None,
        Some(obs) => {
            let y = o.observe(
                truth_t,
                NoiseSource {
                    seed: run.config.seed,
                    stream: 302,
                },
                0,
            );
            let k = obs.transform.latent_dim();
            let q_xi = o.posterior(&run.model, y);
            let xi = q_xi
                .rsample(noise.normal([s, n, k], 2, device))
                .reshape([s * n, k]);
            let z_post = obs.transform.apply(xi);
            let q_u = run.model.pddlvm.surrogate(o.normalised(z_post.clone()));
            let u_post = q_u
                .rsample(noise.normal([1, s * n, nu], 3, device))
                .reshape([s * n, nu])
                .mul_scalar(o.u_scale);
            let xi0 = noise.normal([s * n, k], 4, device);
            let z_post = split(rows(z_post), p);
            let names = o.physics.problem.param_names();
            let per_parameter = if p <= 16 {
                (0..p)
                    .map(|j| {
                        let name = names.get(j).cloned().unwrap_or_else(|| format!("z{j}"));
                        (name, column_scores(&z_post, &z_truth, p, j))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Some(PosteriorEval {
                n_obs: obs.likelihood.operator.len(),
                obs_sigma: obs.likelihood.sigma,
                per_parameter,
                params: uq::score(&z_post, &z_truth, &uq::LEVELS),
                prior: uq::score(
                    &split(rows(obs.transform.apply(xi0)), p),
                    &z_truth,
                    &uq::LEVELS,
                ),
                solution: uq::score(&split(rows(u_post), nu), &truth, &uq::LEVELS),
            })
        }
    };
    let report = PhysicsEval {
        n_test: n,
        n_samples: s,
        epochs: run.epochs_done,
        rel_l2: fwd.rel_l2,
        nll: fwd.nll,
        crps: fwd.crps,
        coverage: fwd.coverage,
        residual_norm,
        reference_residual_norm,
        inverse,
        posterior,
    };
    crate::run::write_eval(&run.dir, &report)?;
    Ok(report)
}

/// `samples.png`: reference solution, surrogate mean and one surrogate sample for up to four
/// test cases.
pub fn sample_plot(
    model: &PhysicsModel,
    objective: &PddlvmObjective,
    data: &PreparedData,
    device: &Device,
    path: &Path,
) -> Result<(), TrainError> {
    let k = data.test.len().min(4);
    let idx: Vec<usize> = (0..k).collect();
    let (x, cond) = data.test.batch(&idx, device);
    let nu = x.dims()[1];
    let mut truth = rows(x);
    data.norm.invert_x(&mut truth);
    let q = model.pddlvm.surrogate(cond.expect("parameters"));
    let mean = rows(q.mean.clone().mul_scalar(objective.u_scale));
    let eps = NoiseSource { seed: 0, stream: 7 }.normal([1, k, nu], 0, device);
    let sample = rows(
        q.rsample(eps)
            .mul_scalar(objective.u_scale)
            .reshape([k, nu]),
    );
    let split = |v: Vec<f64>| v.chunks(nu).map(<[f64]>::to_vec).collect::<Vec<_>>();
    plots::plot_samples_titled(
        &split(truth),
        &split(mean),
        &split(sample),
        &data.test.sample_shape,
        path,
        &plots::SURROGATE_TITLES,
    )
}

/// `n` predictive samples `u ~ q(u | z)` of the forward surrogate (physical units), for the
/// physical parameters `condition` (or, without it, those of the first test case), written to
/// `out` as float32 `.npy` `[n, ...solution shape]`. Returns the parameters used.
pub fn sample_surrogate(
    run: &PhysicsRun,
    n: usize,
    condition: Option<&[f64]>,
    out: &Path,
) -> Result<Vec<f64>, TrainError> {
    let device = &run.device.device;
    let o = &run.objective;
    let p = o.physics.cond_mean.len();
    let z: Vec<f64> = match condition {
        Some(v) if v.len() == p => v.to_vec(),
        Some(v) => {
            return Err(TrainError::Invalid {
                key: "--condition".into(),
                message: format!(
                    "this {} run takes {p} comma-separated parameter value(s) ({}), got {}",
                    o.physics.problem.name(),
                    if p <= 8 {
                        o.physics.problem.param_names().join(", ")
                    } else {
                        "the coefficient field".into()
                    },
                    v.len()
                ),
            });
        }
        None => {
            let (_, cond) = run.data.test.batch(&[0], device);
            rows(o.physical(cond.expect("parameters")))
        }
    };
    if let Some(bad) = z.iter().find(|v| !v.is_finite()) {
        return Err(TrainError::Invalid {
            key: "--condition".into(),
            message: format!("parameter values must be finite, got {bad}"),
        });
    }
    let zt = Tensor::<2>::from_data(TensorData::new(z.clone(), [1, p]), device);
    let q = run.model.pddlvm.surrogate(o.normalised(zt));
    let nu = q.mean.dims()[1];
    let eps = NoiseSource {
        seed: run.config.seed,
        stream: 200,
    }
    .normal([n, 1, nu], 0, device);
    let values = rows(q.rsample(eps).reshape([n, nu]).mul_scalar(o.u_scale));
    let mut shape = vec![n];
    shape.extend(o.physics.problem.solution_shape());
    varphi_data::npy::save_npy_f32(out, &shape, &values).map_err(io_err(out))?;
    Ok(z)
}
