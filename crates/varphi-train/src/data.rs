//! A run's data: loaded or generated, split, normalised on the training split. Training needs
//! both splits ([`TrainData`]); evaluation and sampling need the test split, the saved
//! normalisation and the training split's size only ([`RunData`]).

use crate::config::Common;
use crate::error::TrainError;
use serde::{Deserialize, Serialize};
use std::path::Path;
use varphi_data::{Dataset, Normalization, ShardPart, Splits};

/// Shape facts about the loaded data that a model must agree with.
#[derive(Debug, Clone, PartialEq)]
pub struct DataShape {
    /// Shape of one sample.
    pub sample_shape: Vec<usize>,
    /// Condition width (parameters of a physics source).
    pub cond_dim: usize,
}

impl DataShape {
    /// Values per sample.
    pub fn features(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Channels-first shape for convolutions: `[L]` becomes `[1, L]`.
    pub fn conv_shape(&self) -> Option<Vec<usize>> {
        match self.sample_shape.len() {
            1 => Some(vec![1, self.sample_shape[0]]),
            2 | 3 => Some(self.sample_shape.clone()),
            _ => None,
        }
    }

    /// Why a network that maps a field to a field on the same grid (`net`: `"unet"`, 2-D
    /// only; `"fno"`, 1-D or 2-D) cannot take these data, if it cannot.
    pub fn same_grid_error(&self, net: &str) -> Option<String> {
        let nodes = match (self.sample_shape.as_slice(), net) {
            ([n] | [1, n], "fno") => Some(*n),
            _ => self.field_2d().map(|[h, w]| h * w),
        };
        (nodes != Some(self.cond_dim)).then(|| {
            format!(
                "\"{net}\" maps a field to a field on the same grid: it needs parameters on the solution grid, but the samples have shape {:?} and {} parameters (use \"mlp\")",
                self.sample_shape, self.cond_dim
            )
        })
    }

    /// The side lengths `[h, w]` of a single-channel 2-D field, if the samples are one.
    pub fn field_2d(&self) -> Option<[usize; 2]> {
        match self.sample_shape.as_slice() {
            [h, w] | [1, h, w] => Some([*h, *w]),
            _ => None,
        }
    }
}

/// How the solutions `x` are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum XScaling {
    /// `(x − mean) / std` over the training split (one global mean and std).
    Standardise,
    /// Kept in data units (e.g. Bernoulli data in `[0, 1]`); conditions are still standardised.
    Identity,
}

/// What every kind knows about its data: the test split, the normaliser and the size of the
/// training split.
pub struct RunData {
    /// Test split (normalised).
    pub test: Dataset,
    /// The normaliser (fitted on the training split; identity when `split.normalize = false`).
    pub norm: Normalization,
    /// Samples in the training split.
    pub n_train: usize,
}

impl RunData {
    /// Shape facts.
    pub fn shape(&self) -> DataShape {
        DataShape {
            sample_shape: self.test.sample_shape.clone(),
            cond_dim: self.test.cond_dim,
        }
    }
}

/// A run's data for training: the training split and the rest.
pub struct TrainData {
    /// Training split (normalised).
    pub train: Dataset,
    /// Validation split (normalised), when given or `split.validation_fraction > 0`.
    pub validation: Option<Dataset>,
    /// Test split, normaliser, sizes.
    pub run: RunData,
    /// Conversions applied reading the data files (casts, Fortran order), to report.
    pub notes: Vec<String>,
    /// The shards of the training split this process holds, when it holds only some (per-rank
    /// data, [`prepare_part`]); `train` is then those rows and `run.n_train` all of them.
    pub part: Option<ShardPart>,
}

fn too_few(n: usize) -> TrainError {
    TrainError::Invalid {
        key: "data".into(),
        message: format!("need at least 2 samples for a train/test split, got {n}"),
    }
}

fn fit_norm(
    common: &Common,
    scaling: XScaling,
    train: &Dataset,
    all_reduce: &mut dyn FnMut(&mut [f64]),
) -> Normalization {
    match (common.split.normalize, scaling) {
        (false, _) => Normalization::identity(train.cond_dim),
        (true, XScaling::Standardise) => Normalization::fit_reduced(train, all_reduce),
        (true, XScaling::Identity) => Normalization {
            x_mean: 0.0,
            x_std: 1.0,
            ..Normalization::fit_reduced(train, all_reduce)
        },
    }
}

/// Load, split and normalise the data of a run (paths relative to `base`).
pub fn prepare(common: &Common, scaling: XScaling, base: &Path) -> Result<TrainData, TrainError> {
    let splits = common.data.splits(
        common.data_seed(),
        base,
        common.split.test_fraction,
        common.split.validation_fraction,
    )?;
    let n_train = splits.train.len();
    assemble(common, scaling, splits, n_train, None, &mut |_| {})
}

/// [`prepare`] for one process of a run with per-rank data: only the training rows of the
/// shards in `part` (a physics source generates only those), the test and validation splits
/// on the lead process only (one row elsewhere), and the normaliser of the *whole* training
/// split from sums over all processes (`all_reduce` sums a vector over them in place; every
/// process must call this).
pub fn prepare_part(
    common: &Common,
    scaling: XScaling,
    base: &Path,
    part: ShardPart,
    all_reduce: &mut dyn FnMut(&mut [f64]),
) -> Result<TrainData, TrainError> {
    let (splits, n_train) = common.data.splits_part(
        common.data_seed(),
        base,
        common.split.test_fraction,
        common.split.validation_fraction,
        &part,
    )?;
    assemble(common, scaling, splits, n_train, Some(part), all_reduce)
}

fn assemble(
    common: &Common,
    scaling: XScaling,
    splits: Splits,
    n_train: usize,
    part: Option<ShardPart>,
    all_reduce: &mut dyn FnMut(&mut [f64]),
) -> Result<TrainData, TrainError> {
    let n_all = n_train + splits.validation.as_ref().map_or(0, |v| v.len());
    if n_all + splits.test.len() < 2 || splits.train.is_empty() {
        return Err(too_few(n_all + splits.test.len()));
    }
    if let Some(v) = &splits.validation
        && v.is_empty()
    {
        return Err(TrainError::Invalid {
            key: "split.validation_fraction".into(),
            message: "leaves no validation samples; raise it or give [data] validation".into(),
        });
    }
    let norm = fit_norm(common, scaling, &splits.train, all_reduce);
    Ok(TrainData {
        train: norm.apply(&splits.train),
        validation: splits.validation.as_ref().map(|v| norm.apply(v)),
        run: RunData {
            test: norm.apply(&splits.test),
            n_train,
            norm,
        },
        notes: splits.notes,
        part,
    })
}

/// The test split of a trained run, normalised with the run's saved normaliser `saved`. A
/// physics source regenerates the test cases alone; a file source is reloaded whole and its
/// normalisation checked against `saved` (a changed file is an error, not wrong numbers).
pub fn prepare_test(
    common: &Common,
    scaling: XScaling,
    saved: &Normalization,
    base: &Path,
) -> Result<RunData, TrainError> {
    if common.data.physics().is_some() {
        let (test, n_train) =
            common
                .data
                .load_test(common.data_seed(), base, common.split.test_fraction)?;
        if n_train == 0 {
            return Err(too_few(test.len()));
        }
        return Ok(RunData {
            test: saved.apply(&test),
            norm: saved.clone(),
            n_train,
        });
    }
    let full = prepare(common, scaling, base)?;
    if !saved.approx_eq(&full.run.norm) {
        return Err(TrainError::Invalid {
            key: "data".into(),
            message: "the data no longer match the run (normalisation differs); was the data file changed?".into(),
        });
    }
    Ok(full.run)
}
