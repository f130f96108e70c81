//! `kind = "cvae"`: a conditional VAE `p(x | c) = ∫ p(x | z, c) p(z | c) dz` (standard or
//! learned prior), trained on the bound of `[objective] bound`. With `[objective.residual]` and
//! a physics data source it is a surrogate parameters → solution whose likelihood carries the PDE
//! residual of the decoded mean as a virtual observation (primer eq. 29), with the data
//! likelihood (`data_likelihood = true`) or without solution labels (`false`). `varphi eval`
//! scores it as a surrogate `c → x` against the test solutions.

use crate::config::{Common, SectionError, invalid, section, take_keys, to_table};
use crate::data::{RunData, TrainData, XScaling};
use crate::error::TrainError;
use crate::kind::{Kind, Loaded, Prediction, SampleRequest, input_rows};
use crate::latent::{
    CvaePhysics, ElboObjective, ElboSection, EvalReport, GenerativeModel, LatentModel, NetSection,
    PosteriorName, TrainedLatent, print_eval,
};
use crate::physics_term::{PhysicsTerm, ResidualSection};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use varphi_models::{CvaeConfig, CvaePriorConfig, LearnedPriorConfig};

/// Prior of a CVAE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriorName {
    /// N(0, I).
    Standard,
    /// Learned p(z | c).
    Learned,
}

/// The keys of `[model]` a CVAE adds to the shared networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CvaeModelExtra {
    /// Prior `p(z | c)`.
    #[serde(default = "d_prior")]
    pub prior: PriorName,
}

fn d_prior() -> PriorName {
    PriorName::Standard
}

/// The keys of `[objective]` a CVAE adds to the shared bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CvaeObjectiveExtra {
    /// The PDE residual as a virtual observation (a surrogate parameters → solution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual: Option<ResidualSection>,
    /// With `residual`: keep the data likelihood `log p(x | z, c)` (true: data × physics) or
    /// train on the residual alone (false: no solution labels).
    #[serde(default = "d_true")]
    pub data_likelihood: bool,
    /// Weight `w` of the prior-predictive term `w · E_{p(z|c)}[log p(x | z, c)]` added to the
    /// bound (Sohn et al.'s hybrid CVAE objective; 0: off): the decoder and its noise are
    /// also trained on z drawn as prediction draws it, not only on the posterior's z.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prior_predictive_weight: f64,
}

fn is_zero(w: &f64) -> bool {
    *w == 0.0
}

fn d_true() -> bool {
    true
}

const MODEL_EXTRA: &[&str] = &["prior"];
const OBJECTIVE_EXTRA: &[&str] = &["residual", "data_likelihood", "prior_predictive_weight"];

/// The config of a `cvae` run.
#[derive(Debug, Clone, PartialEq)]
pub struct Cvae {
    /// `[model]`: the networks.
    pub model: NetSection,
    /// `[model] prior`.
    pub prior: CvaeModelExtra,
    /// `[objective]`: the bound.
    pub objective: ElboSection,
    /// `[objective] residual`, `data_likelihood`.
    pub physics: CvaeObjectiveExtra,
}

impl Cvae {
    fn cvae_physics(
        &self,
        common: &Common,
        data: &RunData,
    ) -> Result<Option<Arc<CvaePhysics>>, TrainError> {
        let Some(r) = &self.physics.residual else {
            return Ok(None);
        };
        Ok(Some(Arc::new(CvaePhysics {
            // The model-error term widens a surrogate trained without labels; with a data
            // likelihood its σ is fitted to the data's spread instead.
            term: PhysicsTerm::new(&common.data, r.precondition_key(), &data.norm)?
                .with_linearisation(r.linearised_key())?
                .with_model_error(r.model_error && !self.physics.data_likelihood),
            x_mean: data.norm.x_mean,
            x_std: data.norm.x_std,
            data: self.physics.data_likelihood,
        })))
    }

    fn trained<'a>(&'a self, run: &'a Loaded<Self>) -> TrainedLatent<'a> {
        TrainedLatent {
            model: &run.model,
            objective: &self.objective,
            physics: run.objective.physics.clone(),
            data: &run.data,
            seed: run.common.seed,
            batch_size: run.common.training.batch_size,
            device: &run.device.device,
            scorer: &run.scorer,
        }
    }
}

impl Kind for Cvae {
    const NAME: &'static str = "cvae";
    const SUMMARY_TERMS: &'static [&'static str] = &["loss", "elbo", "log_lik", "kl", "bound"];
    const PREDICTS_TEST_SAMPLES: bool = true;
    type Model = GenerativeModel;
    type Objective = ElboObjective;
    type Eval = EvalReport;

    fn from_tables(
        mut model: toml::Table,
        mut objective: toml::Table,
    ) -> Result<Self, SectionError> {
        let prior = take_keys(&mut model, MODEL_EXTRA);
        let physics = take_keys(&mut objective, OBJECTIVE_EXTRA);
        let mut model_extra = MODEL_EXTRA.to_vec();
        model_extra.push("kind");
        Ok(Self {
            model: section(model, "model", Self::NAME, &model_extra)?,
            prior: section(prior, "model", Self::NAME, &[])?,
            objective: section(objective, "objective", Self::NAME, OBJECTIVE_EXTRA)?,
            physics: section(physics, "objective", Self::NAME, &[])?,
        })
    }

    fn to_tables(&self) -> (toml::Table, toml::Table) {
        let mut model = to_table(&self.model);
        model.extend(to_table(&self.prior));
        let mut objective = to_table(&self.objective);
        objective.extend(to_table(&self.physics));
        (model, objective)
    }

    fn validate(&self, common: &Common) -> Result<(), TrainError> {
        self.model.validate(self.objective.monte_carlo_kl())?;
        self.objective
            .validate(self.model.posterior == PosteriorName::Flow)?;
        let w = self.physics.prior_predictive_weight;
        if !(w.is_finite() && w >= 0.0) {
            return Err(invalid(
                "objective.prior_predictive_weight",
                format!("must be ≥ 0, got {w}"),
            ));
        }
        if w > 0.0 && !self.physics.data_likelihood {
            return Err(invalid(
                "objective.prior_predictive_weight",
                "needs the data likelihood (data_likelihood = true): without labels the bound already draws z from q(z | c)",
            ));
        }
        match &self.physics.residual {
            Some(r) => {
                r.validate()?;
                common.physics_source("a CVAE surrogate with [objective.residual]")?;
            }
            None if !self.physics.data_likelihood => {
                return Err(invalid(
                    "objective.data_likelihood",
                    "false (train without solution labels) needs [objective.residual]",
                ));
            }
            None => {}
        }
        Ok(())
    }

    fn x_scaling(&self) -> XScaling {
        self.objective.x_scaling()
    }

    fn check_data(&self, _common: &Common, data: &TrainData) -> Result<(), TrainError> {
        if data.train.cond_dim == 0 {
            return Err(invalid(
                "model.kind",
                "\"cvae\" needs a condition per sample, but the data have none (set cond_path/cond_key in [data], or use kind = \"vae\")",
            ));
        }
        self.objective
            .check_data(&self.model, data, data.run.shape().cond_dim)
    }

    fn build(
        &self,
        common: &Common,
        data: &RunData,
        device: &Device,
    ) -> Result<(GenerativeModel, ElboObjective), TrainError> {
        let shape = data.shape();
        let c = shape.cond_dim;
        let k = self
            .objective
            .likelihood(shape.features())
            .params_per_datum();
        let prior = match self.prior.prior {
            PriorName::Standard => CvaePriorConfig::Standard,
            PriorName::Learned => CvaePriorConfig::Learned(
                LearnedPriorConfig::new()
                    .with_hidden(self.model.hidden.clone())
                    .with_activation(self.model.activation.into()),
            ),
        };
        let cvae = CvaeConfig::new(
            self.model.encoder(&shape, c),
            self.model.decoder(&shape, c, k),
            c,
        )
        .with_prior(prior)
        .with_flow(self.model.flow())
        .init(device);
        let model = GenerativeModel::init(
            LatentModel::Cvae(cvae),
            &self.objective,
            self.physics.residual.as_ref(),
            shape.features(),
            device,
        );
        let physics = self.cvae_physics(common, data)?;
        let mut objective = self.objective.objective(common.seed, physics);
        let w = self.physics.prior_predictive_weight;
        objective.prior_predictive = (w > 0.0).then_some(w);
        Ok((model, objective))
    }

    fn plot(&self, run: &Loaded<Self>) -> Result<(), TrainError> {
        self.trained(run).plot(&run.dir.join("samples.png"))
    }

    fn evaluate(&self, run: &Loaded<Self>) -> Result<EvalReport, TrainError> {
        Ok(self.trained(run).evaluate(run.epochs_done, true))
    }

    fn print_eval(&self, eval: &EvalReport, dir: &Path) {
        print_eval(eval, dir);
    }

    fn predict(
        &self,
        run: &Loaded<Self>,
        inputs: &varphi_data::read::Array,
        n: usize,
    ) -> Result<Prediction, TrainError> {
        let c = run.data.test.cond_dim;
        let rows = input_rows(inputs, c, "condition")?;
        let mut cond = inputs.data.clone();
        run.data.norm.apply_cond(&mut cond);
        Ok(Prediction {
            samples: self.trained(run).predictive(&cond, rows, n),
            shape: run.data.test.sample_shape.clone(),
            what: "x | c".into(),
            block: Some("surrogate"),
        })
    }

    fn sample(&self, run: &Loaded<Self>, request: &SampleRequest) -> Result<String, TrainError> {
        let c = run.data.test.cond_dim;
        let n = request.n;
        let Some(values) = request.condition_of(c, "value(s)")? else {
            return Err(TrainError::Invalid {
                key: "--condition".into(),
                message: format!(
                    "this model needs a condition: --condition with {c} comma-separated value(s), or --condition-file FILE"
                ),
            });
        };
        let trained = self.trained(run);
        if trained.model_error_term().is_some() {
            // The predictive with the model-error term (its mean over the n samples).
            let mut one = values.to_vec();
            run.data.norm.apply_cond(&mut one);
            let samples: Vec<f64> = trained
                .predictive(&one, 1, n)
                .into_iter()
                .flatten()
                .collect();
            let mut shape = vec![n];
            shape.extend(&run.data.test.sample_shape);
            let out = &request.out;
            varphi_data::npy::save_npy_f32(out, &shape, &samples)
                .map_err(crate::error::io_err(out))?;
            return Ok(format!(
                "wrote {n} samples {shape:?} to {} with the model-error term ([objective.residual] model_error = false to leave it out)",
                out.display()
            ));
        }
        let mut rows: Vec<f64> = (0..n).flat_map(|_| values.iter().copied()).collect();
        run.data.norm.apply_cond(&mut rows);
        let cond = Tensor::<2>::from_data(TensorData::new(rows, [n, c]), &run.device.device);
        trained.sample(n, Some(cond), request.noise, &request.out)
    }
}

#[cfg(test)]
mod tests {
    use crate::tests_common::*;

    #[test]
    fn keys_of_other_kinds_are_rejected_naming_the_key_and_the_kind() {
        let base = "[data]\nkind = \"heat1d\"\nn = 40\ngrid = 8\n[model]\nkind = \"cvae\"\n";
        rejects(
            &format!("{base}flow_layer = 2\n"),
            &["`flow_layer`", "[model]", "cvae", "prior", "latent_dim"],
        );
        rejects(
            &format!("{base}[objective]\nuq_alpha = 0.1\n"),
            &[
                "`uq_alpha`",
                "[objective]",
                "cvae",
                "data_likelihood",
                "beta",
            ],
        );
        rejects(
            &format!("{base}[objective.residual]\nsigma = 0.1\nsigmaa = 2\n"),
            &["`sigmaa`", "[objective.residual]", "cvae", "u_scale"],
        );
        rejects(
            &format!("{base}[objective]\ndata_likelihood = false\n"),
            &["objective.data_likelihood"],
        );
    }

    #[test]
    fn one_step_changes_the_weights_and_eval_matches_a_reload() {
        let config = "seed = 3\n[data]\nkind = \"heat1d\"\nn = 64\ngrid = 8\nmodes = 3\n[model]\nkind = \"cvae\"\nlatent_dim = 3\nhidden = [16]\nprior = \"learned\"\n[training]\nepochs = 2\nbatch_size = 16\n";
        one_step_changes_the_weights(config);
        eval_of_a_trained_run_is_reproducible(config, "test_elbo");
    }

    #[test]
    fn the_prior_predictive_term_adds_w_times_the_log_likelihood_of_prior_draws() {
        let base = "seed = 4\n[data]\nkind = \"heat1d\"\nn = 64\ngrid = 8\nmodes = 3\n[model]\nkind = \"cvae\"\nlatent_dim = 2\nhidden = [16]\nprior = \"learned\"\n[training]\nepochs = 1\nbatch_size = 16\n[objective]\n";
        let off = first_step_terms(base);
        let one = first_step_terms(&format!("{base}prior_predictive_weight = 1.0\n"));
        let three = first_step_terms(&format!("{base}prior_predictive_weight = 3.0\n"));
        // The same model, batch and draws: the bound's terms are unchanged, the prior draws'
        // log-likelihood is the same at every weight, and the loss moves by −w times it.
        assert_eq!(term(&off, "log_lik"), term(&one, "log_lik"));
        let ll = term(&one, "prior_log_lik");
        assert_eq!(ll, term(&three, "prior_log_lik"));
        assert!(off.iter().all(|(k, _)| *k != "prior_log_lik"));
        for (w, terms) in [(1.0, &one), (3.0, &three)] {
            let moved = term(terms, "loss") - term(&off, "loss");
            assert!(
                (moved + w * ll).abs() <= 1e-5 * (w * ll).abs().max(1.0),
                "w = {w}: loss moved by {moved}, −w·ll = {}",
                -w * ll
            );
        }
        rejects(
            &format!("{base}prior_predictive_weight = -1.0\n"),
            &["objective.prior_predictive_weight", "≥ 0"],
        );
    }

    #[test]
    fn an_fno_decoder_conditions_on_the_coefficient_field() {
        // Darcy on 5 × 5 nodes: the condition is the coefficient field on the solution's grid,
        // the decoder an FNO on [a, z, z] (padded to 7 × 7, default modes min(12, 4) = 4).
        let config = "seed = 2\n[data]\nkind = \"darcy\"\nn = 24\ngrid = 5\n[model]\nkind = \"cvae\"\nlatent_dim = 2\nhidden = [16]\ndecoder = \"fno\"\n[model.fno]\nwidth = 4\nlayers = 2\nprojection = 8\npadding = 2\n[objective]\nnoise = \"heteroscedastic\"\n[training]\nepochs = 2\nbatch_size = 8\n";
        one_step_changes_the_weights(config);
        eval_of_a_trained_run_is_reproducible(config, "test_elbo");
        rejects(
            &config.replace("decoder = \"fno\"", "encoder = \"fno\""),
            &["model.encoder", "\"fno\" is a decoder"],
        );
    }
}
