//! Physics-informed runs (`[model] kind = "pddlvm"`): a forward surrogate `q(u|z)` and an
//! inverse model `p(z|u)` trained from parameter draws alone through the virtual observation of
//! the PDE residual (primer eqs. 29–30), evaluated against the reference solver with
//! [`crate::uq`] scores.

use crate::backend::{BackendKind, SelectedDevice, select_device};
use crate::checkpoint;
use crate::config::{DataShape, TrainConfig};
use crate::error::{TrainError, io_err};
use crate::model::NoiseSource;
use crate::plots;
use crate::run::{PreparedData, check_normalization, prepare_data};
use crate::trainer::{Objective, StepOutput};
use crate::uq::{self, UqScores};
use burn::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use varphi_data::Normalization;
use varphi_losses::{PddlvmElbo, ResidualLikelihood};
use varphi_models::{Pddlvm, VariationalFamily};
use varphi_physics::pde::{Preconditioner, Problem};

/// The trained module: both networks and the residual likelihood (whose `σ_r` may be learned).
#[derive(Module, Debug)]
pub struct PhysicsModel {
    /// Forward surrogate and inverse model.
    pub pddlvm: Pddlvm,
    /// Virtual observation of the residual.
    pub residual: ResidualLikelihood,
}

impl PhysicsModel {
    /// Build from the config for data of `shape` (conditions = parameters).
    pub fn init(config: &TrainConfig, shape: &DataShape, device: &Device) -> Self {
        Self {
            pddlvm: config.pddlvm_config(shape).init(device),
            residual: config
                .residual_likelihood()
                .expect("validated: pddlvm has [objective.residual]")
                .init(device),
        }
    }
}

/// The PDDLVM objective on normalised parameters: `z_phys = z·std + mean` enters the residual,
/// the surrogate predicts `u / u_scale`.
pub struct PddlvmObjective {
    /// The problem (residual, reference solver).
    pub problem: Box<dyn Problem + Send + Sync>,
    /// `P⁻¹` when the residual is preconditioned.
    pub preconditioner: Option<Preconditioner>,
    /// Parameter normalisation (per column).
    pub cond_mean: Vec<f64>,
    /// Parameter normalisation (per column).
    pub cond_std: Vec<f64>,
    /// Physical scale of `u`.
    pub u_scale: f64,
    /// Particles per parameter draw.
    pub n_particles: usize,
    /// Training noise.
    pub noise: NoiseSource,
}

impl PddlvmObjective {
    /// Build from the config and the run's normalisation.
    pub fn new(config: &TrainConfig, norm: &Normalization) -> Result<Self, TrainError> {
        let (_, physics) = config.data.physics().ok_or_else(|| TrainError::Invalid {
            key: "data.kind".into(),
            message: "pddlvm needs a physics data source".into(),
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
            cond_mean: norm.cond_mean.clone(),
            cond_std: norm.cond_std.clone(),
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
        let device = z.device();
        let p = self.cond_mean.len();
        let row = |v: &[f64]| Tensor::<2>::from_data(TensorData::new(v.to_vec(), [1, p]), &device);
        z * row(&self.cond_std) + row(&self.cond_mean)
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
        let r = self.problem.residual(u.mul_scalar(self.u_scale), z);
        let r = match &self.preconditioner {
            Some(p) => Preconditioner::apply_with(&p.tensor(&r.pde.device()), r),
            None => r,
        };
        model.residual.log_prob(&r, step)
    }
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
        let noise = NoiseSource {
            stream: self.noise.stream + noise_stream,
            ..self.noise
        };
        let eps = noise.normal([s, b, nu], step, &device);
        let z_phys = self.physical(z.clone());
        let z_rep = z_phys
            .unsqueeze_dim::<3>(0)
            .expand([s, b, p])
            .reshape([s * b, p]);
        let q = model.pddlvm.surrogate(z.clone());
        let out = PddlvmElbo.forward(
            &q,
            eps,
            z,
            |u| self.log_residual(model, u, z_rep, step),
            |u| model.pddlvm.inverse(u),
        );
        let mean = |t: Tensor<1>| {
            t.mean()
                .into_data()
                .convert::<f64>()
                .try_into_vec_as::<f64>()
                .expect("f64")[0]
        };
        let loss = mean(out.loss.clone().detach());
        StepOutput {
            // Component terms first: the NaN guard names the first non-finite one.
            terms: vec![
                ("log_residual", mean(out.log_residual)),
                ("log_inverse", mean(out.log_inverse)),
                ("entropy", mean(out.entropy)),
                ("loss", loss),
                ("sigma_r", model.residual.current_sigma(step)),
            ],
            loss: out.loss,
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
}

/// A physics run loaded for inference.
pub struct PhysicsRun {
    /// Run directory.
    pub dir: PathBuf,
    /// Config.
    pub config: TrainConfig,
    /// Data.
    pub data: PreparedData,
    /// Model (no autodiff).
    pub model: PhysicsModel,
    /// Objective (problem, scales).
    pub objective: PddlvmObjective,
    /// Device.
    pub device: SelectedDevice,
    /// Epochs done.
    pub epochs_done: usize,
}

/// Load a physics run's config, data and latest checkpoint.
pub fn load_physics_run(
    dir: &Path,
    backend: Option<BackendKind>,
) -> Result<PhysicsRun, TrainError> {
    let config = TrainConfig::load(&dir.join("config.toml"))?;
    let data = prepare_data(&config, Path::new("."))?;
    check_normalization(dir, &data)?;
    let device = select_device(
        backend.unwrap_or(config.training.backend),
        config.training.precision,
    )?;
    let model = PhysicsModel::init(&config, &data.shape(), &device.device);
    let (model, _, state) = checkpoint::load(dir, model, None)?;
    let objective = PddlvmObjective::new(&config, &data.norm)?;
    Ok(PhysicsRun {
        dir: dir.to_path_buf(),
        config,
        data,
        model,
        objective,
        device,
        epochs_done: state.epochs_done,
    })
}

fn rows(t: Tensor<2>) -> Vec<f64> {
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
    let u_flat = rows(u.clone().reshape([s * n, nu]));
    let samples: Vec<Vec<f64>> = u_flat.chunks(n * nu).map(<[f64]>::to_vec).collect();
    let fwd = uq::score(&samples, &truth, &uq::LEVELS);
    let norm_of = |u: Tensor<2>, z: Tensor<2>| {
        let r = o.problem.residual(u, z).all();
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
    let qz = run.model.pddlvm.inverse(truth_t.div_scalar(o.u_scale));
    let zs = qz
        .rsample(noise.normal([s, n, p], 1, device))
        .reshape([s * n, p]);
    let zs = rows(o.physical(zs));
    let z_samples: Vec<Vec<f64>> = zs.chunks(n * p).map(<[f64]>::to_vec).collect();
    let inverse = uq::score(&z_samples, &rows(z_phys), &uq::LEVELS);
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
    };
    let path = run.dir.join("eval.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json"))
        .map_err(io_err(&path))?;
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
