//! Neural posterior estimation (`[model] kind = "npe"`): the forward-KL amortised posterior of
//! primer eqs. 19–20. Pairs `(z, u)` come from the simulator (the physics data source); each
//! step observes `y = H u + σ_y ε` afresh and maximises `log q_φ(z | y)` of a conditional
//! RealNVP, i.e. minimises `E_{p(z, y)}[−log q_φ(z | y)] = E_y KL(p(z|y) ‖ q_φ(z|y)) + const`.
//! Evaluation is simulation-based calibration: coverage of the true parameters by the central
//! intervals of `q(z | y)` over the held-out cases.

use crate::backend::BackendKind;
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::model::NoiseSource;
use crate::physics::{mean_of, rows};
use crate::run::PreparedData;
use crate::trainer::{Objective, StepOutput};
use crate::uq::{self, UqScores};
use burn::prelude::*;
use serde::Serialize;
use std::path::Path;
use varphi_data::physics::{Observations, observation_indices};
use varphi_losses::ObservationOperator;
use varphi_models::{RealNvp, RealNvpConfig};

/// The trained module.
#[derive(Module, Debug)]
pub struct NpeModel {
    /// `q_φ(z | y)` over normalised parameters, conditioned on normalised observations.
    pub flow: RealNvp,
}

impl NpeModel {
    /// Build for `p` parameters and `m` observations.
    pub fn init(config: &TrainConfig, p: usize, m: usize, device: &Device) -> Self {
        Self {
            flow: RealNvpConfig::new(p)
                .with_layers(config.model.flow_layers)
                .with_hidden(config.model.hidden.clone())
                .with_activation(config.model.activation.into())
                .with_d_cond(m)
                .init(device),
        }
    }
}

/// The NPE objective: simulated observations, `−log q(z | y)`.
pub struct NpeObjective {
    /// `H`: the observed nodes.
    pub operator: ObservationOperator,
    /// `σ_y` (physical units).
    pub sigma: f64,
    /// Solution normalisation: `u = x·x_std + x_mean`; `y` enters the flow as `(y − x_mean)/x_std`.
    pub x_mean: f64,
    /// Solution normalisation.
    pub x_std: f64,
    /// Observation noise of training steps.
    pub noise: NoiseSource,
}

impl NpeObjective {
    /// Build from the config and the run's data.
    pub fn new(config: &TrainConfig, data: &PreparedData) -> Result<Self, TrainError> {
        let (_, physics) = config.data.physics().expect("validated");
        let problem = physics.build();
        let o = config.objective.observations.as_ref().expect("validated");
        let obs = Observations {
            count: o.count,
            sigma: o.sigma,
        };
        let indices = observation_indices(problem.as_ref(), &obs, config.seed).map_err(|e| {
            TrainError::Invalid {
                key: "objective.observations".into(),
                message: e.to_string(),
            }
        })?;
        Ok(Self {
            operator: ObservationOperator::by_index(&indices),
            sigma: o.sigma,
            x_mean: data.norm.x_mean,
            x_std: data.norm.x_std,
            noise: NoiseSource {
                seed: config.seed,
                stream: 0,
            },
        })
    }

    /// Normalised noisy observations of normalised solutions `x` `[b, n_u]`.
    pub fn observe(&self, x: Tensor<2>, noise: NoiseSource, step: usize) -> Tensor<2> {
        let clean = self
            .operator
            .apply(x.mul_scalar(self.x_std).add_scalar(self.x_mean));
        let eps = noise.normal(clean.dims(), step, &clean.device());
        (clean + eps.mul_scalar(self.sigma))
            .sub_scalar(self.x_mean)
            .div_scalar(self.x_std)
    }
}

impl Objective<NpeModel> for NpeObjective {
    fn step(
        &self,
        model: &NpeModel,
        x: Tensor<2>,
        cond: Option<Tensor<2>>,
        step: usize,
        noise_stream: u64,
    ) -> StepOutput {
        let z = cond.expect("npe data carry the parameters as conditions");
        let noise = NoiseSource {
            stream: self.noise.stream + noise_stream,
            ..self.noise
        };
        let y = self.observe(x, noise, step);
        let nll = model.flow.log_prob(z, Some(y)).neg();
        let loss = nll.clone().mean();
        StepOutput {
            terms: vec![
                ("nll", mean_of(nll)),
                ("loss", mean_of(loss.clone().detach())),
            ],
            loss,
            beta: None,
        }
    }
}

/// A loaded NPE run.
pub type NpeRun = crate::run::KindRun<NpeModel, NpeObjective>;

/// Load an NPE run's last checkpoint.
pub fn load_npe_run(dir: &Path, backend: Option<BackendKind>) -> Result<NpeRun, TrainError> {
    crate::run::load_kind_run(dir, backend, |config, data, device| {
        let objective = NpeObjective::new(config, data)?;
        let model = NpeModel::init(
            config,
            data.shape().cond_dim,
            objective.operator.len(),
            device,
        );
        Ok((model, objective))
    })
}

/// `eval.json` of an NPE run.
#[derive(Debug, Clone, Serialize)]
pub struct NpeEval {
    /// Test cases scored.
    pub n_test: usize,
    /// Posterior samples per case.
    pub n_samples: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Observed nodes.
    pub n_obs: usize,
    /// Observation noise.
    pub obs_sigma: f64,
    /// Posterior of all parameters (physical units) against the truths.
    pub posterior: UqScores,
    /// Per parameter: `(name, scores)`.
    pub per_parameter: Vec<(String, UqScores)>,
}

/// Score `q(z | y)` on the first (up to) 200 test cases with 256 samples each; write
/// `eval.json`.
pub fn evaluate_npe_run(run: &NpeRun) -> Result<NpeEval, TrainError> {
    const S: usize = 256;
    let device = &run.device.device;
    let n = run.data.test.len().min(200);
    let idx: Vec<usize> = (0..n).collect();
    let (x, cond) = run.data.test.batch(&idx, device);
    let z_true = cond.expect("npe data carry parameters");
    let p = z_true.dims()[1];
    let y = run.objective.observe(
        x,
        NoiseSource {
            seed: run.config.seed,
            stream: 500,
        },
        0,
    );
    let m = y.dims()[1];
    let y_rep = y
        .unsqueeze_dim::<3>(0)
        .expand([S, n, m])
        .reshape([S * n, m]);
    let eps = NoiseSource {
        seed: run.config.seed,
        stream: 501,
    }
    .normal([S * n, p], 0, device);
    let (z, _) = run.model.flow.forward(eps, Some(y_rep));
    // Physical units.
    let norm = &run.data.norm;
    let unnorm = |v: Vec<f64>| -> Vec<f64> {
        v.chunks(p)
            .flat_map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(j, v)| v * norm.cond_std[j] + norm.cond_mean[j])
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let samples: Vec<Vec<f64>> = unnorm(rows(z)).chunks(n * p).map(|c| c.to_vec()).collect();
    let truth = unnorm(rows(z_true));
    let posterior = uq::score(&samples, &truth, &uq::LEVELS);
    let names = {
        let (_, physics) = run.config.data.physics().expect("validated");
        physics.build().param_names()
    };
    let per_parameter = (0..p)
        .map(|j| {
            let col = |v: &[f64]| v.iter().skip(j).step_by(p).copied().collect::<Vec<_>>();
            let s: Vec<Vec<f64>> = samples.iter().map(|r| col(r)).collect();
            let name = names.get(j).cloned().unwrap_or_else(|| format!("z{j}"));
            (name, uq::score(&s, &col(&truth), &uq::LEVELS))
        })
        .collect();
    let report = NpeEval {
        n_test: n,
        n_samples: S,
        epochs: run.epochs_done,
        n_obs: m,
        obs_sigma: run.objective.sigma,
        posterior,
        per_parameter,
    };
    crate::run::write_eval(&run.dir, &report)?;
    Ok(report)
}
