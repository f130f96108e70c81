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
    // Exactly one input of any shape (e.g. one [H, W] field) is one row.
    let rows = if inputs.data.len() == width {
        1
    } else {
        inputs.shape.first().copied().unwrap_or(0)
    };
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
    /// Where `condition` came from (for error messages).
    pub condition_source: ConditionSource,
    /// Add observation noise to the likelihood mean.
    pub noise: bool,
    /// Output `.npy` file.
    pub out: PathBuf,
}

/// Where the condition of a [`SampleRequest`] came from.
#[derive(Debug, Clone, PartialEq)]
pub enum ConditionSource {
    /// `--condition v1,v2,…` (or none given).
    List,
    /// `--condition-file PATH [--row I]`: the whole array, or row `I` of a `[rows, …]` array.
    File {
        /// The file.
        path: PathBuf,
        /// Shape of the array read.
        shape: Vec<usize>,
        /// The row taken, if any.
        row: Option<usize>,
    },
}

impl SampleRequest {
    /// The flag that gave the condition, for error messages.
    pub fn condition_flag(&self) -> &'static str {
        match self.condition_source {
            ConditionSource::List => "--condition",
            ConditionSource::File { .. } => "--condition-file",
        }
    }

    /// The condition, checked to hold `width` finite values; `what` names one value in
    /// messages (e.g. "parameter value(s) (k1, k2)"). `None` when no condition was given.
    pub fn condition_of(&self, width: usize, what: &str) -> Result<Option<&[f64]>, TrainError> {
        let Some(v) = &self.condition else {
            return Ok(None);
        };
        let invalid = |message: String| TrainError::Invalid {
            key: self.condition_flag().into(),
            message,
        };
        if v.len() != width {
            return Err(invalid(match &self.condition_source {
                ConditionSource::List => {
                    format!(
                        "this run takes {width} comma-separated {what}, got {}",
                        v.len()
                    )
                }
                ConditionSource::File { path, shape, row } => {
                    let taken = match row {
                        Some(r) => format!("row {r} of {} ({shape:?})", path.display()),
                        None => format!("{} ({shape:?})", path.display()),
                    };
                    format!(
                        "{taken} holds {} value(s), but this run takes one condition of {width} {what}: \
                         give a file of exactly {width} values (any shape, e.g. one field), or pick one \
                         row of a [rows, …] file with --row I (`varphi predict --input FILE` predicts \
                         every row)",
                        v.len()
                    )
                }
            }));
        }
        if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
            return Err(invalid(format!(
                "condition values must be finite, got {bad}"
            )));
        }
        Ok(Some(v))
    }

    /// Reject a condition for a model that takes none.
    pub fn no_condition(&self, why: &str) -> Result<(), TrainError> {
        match self.condition {
            Some(_) => Err(TrainError::Invalid {
                key: self.condition_flag().into(),
                message: format!("{why}; drop {}", self.condition_flag()),
            }),
            None => Ok(()),
        }
    }
}

/// The condition of `varphi sample --condition-file`: every value of `array`, or row `row` of
/// its first axis.
pub fn condition_from_file(
    path: &Path,
    array: &varphi_data::read::Array,
    row: Option<usize>,
) -> Result<(Vec<f64>, ConditionSource), TrainError> {
    let shape = array.shape.clone();
    let values = match row {
        None => array.data.clone(),
        Some(r) => {
            let rows = shape.first().copied().unwrap_or(1);
            if r >= rows || shape.is_empty() {
                return Err(TrainError::Invalid {
                    key: "--row".into(),
                    message: format!(
                        "{} ({shape:?}) has {rows} row(s); --row must be below {rows}",
                        path.display()
                    ),
                });
            }
            let width = array.data.len() / rows;
            array.data[r * width..(r + 1) * width].to_vec()
        }
    };
    Ok((
        values,
        ConditionSource::File {
            path: path.to_path_buf(),
            shape,
            row,
        },
    ))
}

/// A generic operation over the kind of a config, called by the registry's single `match`.
pub trait KindVisitor {
    /// What the operation returns.
    type Output;
    /// Run the operation for kind `K`.
    fn visit<K: Kind>(self, kind: K) -> Self::Output;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(shape: &[usize]) -> varphi_data::read::Array {
        let n: usize = shape.iter().product();
        varphi_data::read::Array {
            shape: shape.to_vec(),
            data: (0..n).map(|i| i as f64).collect(),
            notes: Vec::new(),
        }
    }

    fn request(condition: Vec<f64>, condition_source: ConditionSource) -> SampleRequest {
        SampleRequest {
            n: 1,
            condition: Some(condition),
            condition_source,
            noise: false,
            out: PathBuf::from("s.npy"),
        }
    }

    #[test]
    fn a_condition_file_gives_one_field_or_one_row() {
        let path = Path::new("a.npy");
        // One 4 × 4 field is one condition of 16 values.
        let (v, source) = condition_from_file(path, &array(&[4, 4]), None).unwrap();
        let r = request(v, source);
        assert_eq!(r.condition_of(16, "value(s)").unwrap().unwrap().len(), 16);
        assert_eq!(input_rows(&array(&[4, 4]), 16, "condition").unwrap(), 1);
        // Row 2 of [3, 4, 4] fields is values 32..48.
        let (v, _) = condition_from_file(path, &array(&[3, 4, 4]), Some(2)).unwrap();
        let expected: Vec<f64> = (32..48).map(f64::from).collect();
        assert_eq!(v, expected);
        assert_eq!(input_rows(&array(&[3, 4, 4]), 16, "condition").unwrap(), 3);
        // The whole [3, 4, 4] file is not one condition; the message names the way out.
        let (v, source) = condition_from_file(path, &array(&[3, 4, 4]), None).unwrap();
        let err = request(v, source)
            .condition_of(16, "value(s)")
            .unwrap_err()
            .to_string();
        for part in [
            "--condition-file",
            "a.npy ([3, 4, 4])",
            "48 value(s)",
            "--row",
        ] {
            assert!(err.contains(part), "{part} not in {err}");
        }
        let err = condition_from_file(path, &array(&[3, 4, 4]), Some(3))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--row must be below 3"), "{err}");
        // Non-finite values are refused.
        let r = request(vec![1.0, f64::NAN], ConditionSource::List);
        let err = r.condition_of(2, "value(s)").unwrap_err().to_string();
        assert!(
            err.contains("--condition") && err.contains("finite"),
            "{err}"
        );
    }
}
