//! The seam every experiment kind implements: [`Kind`]. A kind owns its config sections
//! (`[model]` without `kind`, and `[objective]`), validates them, builds its model and objective,
//! and evaluates, prints and samples a trained run. The generic session ([`crate::session`])
//! does the rest — run directories, resume, the training loop, checkpoints, metrics, plots of
//! the loss — identically for every kind. The registry ([`crate::kinds`]) maps the config's
//! `kind` to the implementing type in one `match`.

use crate::backend::SelectedDevice;
use crate::config::{Common, SectionError};
use crate::data::{RunData, TrainData, XScaling};
use crate::error::TrainError;
use crate::trainer::Objective;
use burn::module::Module;
use burn::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One experiment kind: its typed config (`Self`), model, objective and evaluation.
pub trait Kind: Sized + Clone + std::fmt::Debug + PartialEq {
    /// The name in `[model] kind = "..."`.
    const NAME: &'static str;
    /// The terms of the final training/test summary, in metrics.csv's names.
    const SUMMARY_TERMS: &'static [&'static str];
    /// Whether [`Kind::predict`] takes the test split's conditions (data units) as its inputs
    /// and predicts its samples — what an ensemble's evaluation needs of its members.
    const PREDICTS_TEST_SAMPLES: bool = false;
    /// The trained module.
    type Model: Module + Clone + std::fmt::Debug + 'static;
    /// What the training loop minimises (`Sync`: data-parallel shards evaluate it on threads).
    type Objective: Objective<Self::Model> + Sync;
    /// The report `varphi eval` writes as `eval.json`.
    type Eval: Serialize;

    /// Parse the kind's `[model]` table (without `kind`) and `[objective]` table.
    fn from_tables(model: toml::Table, objective: toml::Table) -> Result<Self, SectionError>;

    /// The `[model]` (without `kind`) and `[objective]` tables, defaults filled in.
    fn to_tables(&self) -> (toml::Table, toml::Table);

    /// Checks that need no data, including those against the shared sections.
    fn validate(&self, common: &Common) -> Result<(), TrainError>;

    /// How the solutions are normalised.
    fn x_scaling(&self) -> XScaling {
        XScaling::Standardise
    }

    /// Checks that need the loaded data (shapes, value ranges).
    fn check_data(&self, common: &Common, data: &TrainData) -> Result<(), TrainError>;

    /// `varphi train --quick`: shrink kind-specific epoch counts (e.g. stages) from `from`
    /// epochs in all to about `to`; returns the new total.
    fn shrink_epochs(&mut self, _from: usize, to: usize) -> usize {
        to
    }

    /// Build the untrained model and the objective on `device` (autodiff for training).
    fn build(
        &self,
        common: &Common,
        data: &RunData,
        device: &Device,
    ) -> Result<(Self::Model, Self::Objective), TrainError>;

    /// Plots besides `loss.png` after training (e.g. `samples.png`).
    fn plot(&self, _run: &Loaded<Self>) -> Result<(), TrainError> {
        Ok(())
    }

    /// Score a trained run on its test split (the session writes `eval.json`).
    fn evaluate(&self, run: &Loaded<Self>) -> Result<Self::Eval, TrainError>;

    /// Print the evaluation table of `eval` for the run in `dir`.
    fn print_eval(&self, eval: &Self::Eval, dir: &Path);

    /// `varphi predict`: `n` predictive samples for each row of `inputs` (`[rows, ...]`, data
    /// units, the kind's input: a CVAE's condition, a surrogate's parameters, …).
    fn predict(
        &self,
        run: &Loaded<Self>,
        _inputs: &varphi_data::read::Array,
        _n: usize,
    ) -> Result<Prediction, TrainError> {
        Err(TrainError::Run {
            path: run.dir.clone(),
            message: format!(
                "is a run of kind \"{}\", which has no input → predictive map for `varphi predict`; use `varphi sample` or `varphi eval`",
                Self::NAME
            ),
        })
    }

    /// `varphi sample`: write samples to `request.out`; returns the line to print.
    fn sample(&self, run: &Loaded<Self>, _request: &SampleRequest) -> Result<String, TrainError> {
        Err(TrainError::Run {
            path: run.dir.clone(),
            message: format!(
                "is a run of kind \"{}\": a posterior over parameters given observations, not a generative model of solutions; `varphi eval` scores and samples it",
                Self::NAME
            ),
        })
    }
}

/// `varphi predict`: S samples of the predictive for each input row.
#[derive(Debug, Clone)]
pub struct PredictRequest {
    /// Input file.
    pub input: PathBuf,
    /// Array or columns of the input file.
    pub key: Option<String>,
    /// Samples per input.
    pub n: usize,
    /// Output `.npz`.
    pub out: PathBuf,
    /// Truth file to score against.
    pub truth: Option<PathBuf>,
    /// Array or columns of the truth file.
    pub truth_key: Option<String>,
}

/// Predictive samples for `rows` inputs, in data units.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// `[S][rows · d]`: sample `s` of every row, rows in input order.
    pub samples: Vec<Vec<f64>>,
    /// Shape of one prediction (`d` values).
    pub shape: Vec<usize>,
    /// What is predicted, in words (e.g. "x | c").
    pub what: String,
    /// The evaluation block whose recalibration applies to these samples (`"forward"`,
    /// `"posterior"`, …); `None`: none does.
    pub block: Option<&'static str>,
}

/// The number of rows of `inputs` for `varphi predict`, checking that each row holds `width`
/// values; `what` names one row's content in the error (e.g. "condition").
pub fn input_rows(
    inputs: &varphi_data::read::Array,
    width: usize,
    what: &str,
) -> Result<usize, TrainError> {
    let rows = inputs.shape.first().copied().unwrap_or(0);
    if inputs.data.len() != rows * width {
        return Err(TrainError::Invalid {
            key: "--input".into(),
            message: format!(
                "this run takes one {what} of {width} value(s) per row ([rows, {width}]), got shape {:?}",
                inputs.shape
            ),
        });
    }
    Ok(rows)
}

/// A trained run: its config, test data, model (without autodiff), objective and device.
pub struct Loaded<K: Kind> {
    /// Run directory.
    pub dir: PathBuf,
    /// Shared config sections.
    pub common: Common,
    /// The kind's own config.
    pub kind: K,
    /// Test split, normaliser, training-split size.
    pub data: RunData,
    /// The trained model.
    pub model: K::Model,
    /// The objective (problem, scales, observation operator).
    pub objective: K::Objective,
    /// Device.
    pub device: SelectedDevice,
    /// Epochs trained.
    pub epochs_done: usize,
    /// The best checkpoint in use instead of the last one (early-stopped runs).
    pub best: Option<crate::checkpoint::BestState>,
    /// What every score of the evaluation goes through (recalibration, reliability diagram).
    pub scorer: crate::calibration::Scorer,
}

/// What `varphi sample` asks for.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    /// Number of samples.
    pub n: usize,
    /// Condition values (data units), for conditional models.
    pub condition: Option<Vec<f64>>,
    /// Add observation noise to the likelihood mean.
    pub noise: bool,
    /// Output `.npy` file.
    pub out: PathBuf,
}

/// A generic operation over the kind of a config, called by the registry's single `match`.
pub trait KindVisitor {
    /// What the operation returns.
    type Output;
    /// Run the operation for kind `K`.
    fn visit<K: Kind>(self, kind: K) -> Self::Output;
}
