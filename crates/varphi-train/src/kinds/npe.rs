//! `kind = "npe"`: neural posterior estimation, the forward-KL amortised posterior of primer
//! eqs. 19–20. Pairs `(z, u)` come from the simulator (the physics data source); each step
//! observes `y = H u + σ_y ε` afresh and maximises `log q_φ(z | y)` of a conditional RealNVP,
//! i.e. minimises `E_{p(z, y)}[−log q_φ(z | y)] = E_y KL(p(z|y) ‖ q_φ(z|y)) + const`.
//! Evaluation is simulation-based calibration: coverage of the true parameters by the central
//! intervals of `q(z | y)` over the held-out cases.

use crate::calibration::Role;
use crate::config::{
    ActivationName, Common, SectionError, check_hidden, d_activation, d_hidden, invalid,
    kind_sections, to_table,
};
use crate::data::{RunData, TrainData};
use crate::error::TrainError;
use crate::host::{mean_of, per_parameter, per_sample, repeat_rows, values};
use crate::kind::{Kind, Loaded, Prediction, input_rows};
use crate::latent::d_flow_layers;
use crate::noise::{NoiseSource, Stream};
use crate::observations::ObservationsSection;
use crate::tables::print_parameter_table;
use crate::trainer::{Objective, StepOutput};
use crate::uq::UqScores;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use varphi_losses::ObservationOperator;
use varphi_models::{RealNvp, RealNvpConfig};

/// `[model]` of an npe run: the conditional flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpeModelSection {
    /// Coupling layers.
    #[serde(default = "d_flow_layers")]
    pub flow_layers: usize,
    /// Hidden widths of the coupling networks.
    #[serde(default = "d_hidden")]
    pub hidden: Vec<usize>,
    /// Activation of the coupling networks.
    #[serde(default = "d_activation")]
    pub activation: ActivationName,
}

/// `[objective]` of an npe run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpeObjectiveSection {
    /// The observations `y` the posterior conditions on.
    pub observations: ObservationsSection,
}

/// The config of an `npe` run.
#[derive(Debug, Clone, PartialEq)]
pub struct Npe {
    /// `[model]`.
    pub model: NpeModelSection,
    /// `[objective]`.
    pub objective: NpeObjectiveSection,
}

/// The trained module.
#[derive(Module, Debug)]
pub struct NpeModel {
    /// `q_φ(z | y)` over normalised parameters, conditioned on normalised observations.
    pub flow: RealNvp,
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
        // `check_data` rejects data without parameters; an empty condition is a zero-width one.
        let z = cond.unwrap_or_else(|| Tensor::zeros([x.dims()[0], 0], &x.device()));
        let y = self.observe(x, self.noise.offset(noise_stream), step);
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

impl Kind for Npe {
    const NAME: &'static str = "npe";
    const SUMMARY_TERMS: &'static [&'static str] = &["loss", "nll"];
    type Model = NpeModel;
    type Objective = NpeObjective;
    type Eval = NpeEval;

    fn from_tables(model: toml::Table, objective: toml::Table) -> Result<Self, SectionError> {
        let (model, objective) = kind_sections(model, objective, Self::NAME)?;
        Ok(Self { model, objective })
    }

    fn to_tables(&self) -> (toml::Table, toml::Table) {
        (to_table(&self.model), to_table(&self.objective))
    }

    fn validate(&self, common: &Common) -> Result<(), TrainError> {
        check_hidden(&self.model.hidden)?;
        if self.model.flow_layers == 0 {
            return Err(invalid("model.flow_layers", "must be at least 1"));
        }
        self.objective
            .observations
            .validate("objective.observations")?;
        common.physics_source("kind = \"npe\" (it simulates its training pairs)")?;
        Ok(())
    }

    fn check_data(&self, _common: &Common, data: &TrainData) -> Result<(), TrainError> {
        let p = data.train.cond_dim;
        if p < 2 {
            return Err(invalid(
                "model.kind",
                format!(
                    "\"npe\" fits a RealNVP flow, which needs at least 2 parameters; the data have {p}"
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
    ) -> Result<(NpeModel, NpeObjective), TrainError> {
        let (_, physics) = common.physics_source("kind = \"npe\"")?;
        let problem = physics.build();
        let o = &self.objective.observations;
        let operator = o.operator(
            problem.as_ref(),
            common.data_seed(),
            "objective.observations",
        )?;
        let model = NpeModel {
            flow: RealNvpConfig::new(data.test.cond_dim)
                .with_layers(self.model.flow_layers)
                .with_hidden(self.model.hidden.clone())
                .with_activation(self.model.activation.into())
                .with_d_cond(operator.len())
                .init(device),
        };
        let objective = NpeObjective {
            operator,
            sigma: o.sigma,
            x_mean: data.norm.x_mean,
            x_std: data.norm.x_std,
            noise: NoiseSource::new(common.seed, Stream::Train),
        };
        Ok((model, objective))
    }

    /// Score `q(z | y)` on the first (up to) 200 test cases with 256 samples each.
    fn evaluate(&self, run: &Loaded<Self>) -> Result<NpeEval, TrainError> {
        const S: usize = 256;
        let device = &run.device.device;
        let seed = run.common.seed;
        let n = run.data.test.len().min(200);
        let idx: Vec<usize> = (0..n).collect();
        let (x, cond) = run.data.test.batch(&idx, device);
        let z_true =
            cond.ok_or_else(|| invalid("data.kind", "the test data carry no parameters"))?;
        let p = z_true.dims()[1];
        let y = run
            .objective
            .observe(x, NoiseSource::new(seed, Stream::HeldOutObservations), 0);
        let m = y.dims()[1];
        let samples = posterior_samples(run, y, S);
        let truth = unnorm(&run.data.norm, values(z_true), p);
        let names = run
            .common
            .physics_source("kind = \"npe\"")?
            .1
            .build()
            .param_names();
        Ok(NpeEval {
            n_test: n,
            n_samples: S,
            epochs: run.epochs_done,
            n_obs: m,
            obs_sigma: run.objective.sigma,
            posterior: run
                .scorer
                .score("posterior", &samples, &truth, n, Role::Posterior),
            per_parameter: per_parameter(&run.scorer, "posterior", &samples, &truth, p, &names),
        })
    }

    /// Posterior samples `z ~ q(z | y)` for rows of observations `y` (physical units, the
    /// run's observation operator and order), with the evaluation's noise: the first test
    /// cases' held-out observations give `varphi eval`'s samples.
    fn predict(
        &self,
        run: &Loaded<Self>,
        inputs: &varphi_data::read::Array,
        n: usize,
    ) -> Result<Prediction, TrainError> {
        let m = run.objective.operator.len();
        let rows = input_rows(inputs, m, "set of observations")?;
        let o = &run.objective;
        let y: Vec<f64> = inputs
            .data
            .iter()
            .map(|v| (v - o.x_mean) / o.x_std)
            .collect();
        let y = Tensor::<2>::from_data(TensorData::new(y, [rows, m]), &run.device.device);
        Ok(Prediction {
            samples: posterior_samples(run, y, n),
            shape: vec![run.data.test.cond_dim],
            what: "z | y".into(),
            block: Some("posterior"),
        })
    }

    fn print_eval(&self, r: &NpeEval, dir: &Path) {
        print_parameter_table(
            dir,
            (r.n_test, r.n_samples, r.epochs),
            &format!(
                "posterior q(z|y) from {} noisy observations (σ_y = {}) per case",
                r.n_obs, r.obs_sigma
            ),
            "rel_l2",
            std::iter::once(("all".to_string(), r.posterior.rel_l2, &r.posterior))
                .chain(
                    r.per_parameter
                        .iter()
                        .map(|(n, s)| (n.clone(), s.rel_l2, s)),
                )
                .collect(),
        );
    }
}

/// Normalised parameters `[n·p]` back to physical units.
fn unnorm(norm: &varphi_data::Normalization, v: Vec<f64>, p: usize) -> Vec<f64> {
    v.chunks(p)
        .flat_map(|r| {
            r.iter()
                .enumerate()
                .map(|(j, v)| v * norm.cond_std[j] + norm.cond_mean[j])
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `s` samples of `q(z | y)` for normalised observations `y` `[n, m]`: `[s][n·p]` in physical
/// units (held-out posterior noise stream).
fn posterior_samples(run: &Loaded<Npe>, y: Tensor<2>, s: usize) -> Vec<Vec<f64>> {
    let n = y.dims()[0];
    let p = run.data.test.cond_dim;
    let eps = NoiseSource::new(run.common.seed, Stream::HeldOutPosterior).normal(
        [s * n, p],
        0,
        &run.device.device,
    );
    let (z, _) = run.model.flow.forward(eps, Some(repeat_rows(y, s)));
    per_sample(unnorm(&run.data.norm, values(z), p), n, p)
}

#[cfg(test)]
mod tests {
    use crate::tests_common::*;

    const BASE: &str = "[data]\nkind = \"heat\"\nn = 40\n[model]\nkind = \"npe\"\nhidden = [16]\nflow_layers = 2\n";

    #[test]
    fn keys_of_other_kinds_are_rejected_naming_the_key_and_the_kind() {
        rejects(
            &format!("{BASE}latent_dim = 3\n[objective.observations]\nsigma = 0.01\n"),
            &["`latent_dim`", "[model]", "npe", "flow_layers"],
        );
        rejects(
            &format!("{BASE}[objective]\nbeta = 2\n[objective.observations]\nsigma = 0.01\n"),
            &["`beta`", "[objective]", "npe", "observations"],
        );
        rejects(
            &format!("{BASE}[objective.observations]\nsigma = 0.01\nevery = 2\n"),
            &["`every`", "[objective.observations]", "npe", "count"],
        );
        rejects(BASE, &["observations"]);
    }

    #[test]
    fn one_step_changes_the_weights_and_eval_matches_a_reload() {
        let config = format!(
            "seed = 2\n{BASE}[objective.observations]\ncount = 6\nsigma = 0.01\n[training]\nepochs = 2\nbatch_size = 8\n"
        );
        one_step_changes_the_weights(&config);
        eval_of_a_trained_run_is_reproducible(&config, "posterior");
    }
}
