//! The run directory: `config.toml` (resolved, data paths absolute), `normalization.json`,
//! `checkpoint/`, `metrics.csv`, `loss.png`, `samples.png` and, after `varphi eval`,
//! `eval.json`. Creating, opening and writing its files happens here only.

use crate::checkpoint;
use crate::error::{TrainError, io_err};
use crate::experiment::TrainConfig;
use serde::Serialize;
use std::path::{Path, PathBuf};
use varphi_data::Normalization;

/// `runs/<config name>`, suffixed `-2`, `-3`, … if taken.
pub fn fresh(config_path: &Path) -> PathBuf {
    let stem = config_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("run");
    let base = PathBuf::from("runs").join(stem);
    if !base.exists() {
        return base;
    }
    (2..)
        .map(|i| PathBuf::from("runs").join(format!("{stem}-{i}")))
        .find(|p| !p.exists())
        .expect("some free name")
}

/// Start a new run in `dir`: refuse a folder that already holds a run, then write the config and
/// the normaliser.
pub fn create(dir: &Path, config: &TrainConfig, norm: &Normalization) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    if checkpoint::find(dir).is_ok() {
        return Err(TrainError::Run {
            path: dir.to_path_buf(),
            message: "already holds a run; use --resume to continue it or --out for a new folder"
                .into(),
        });
    }
    let _ = std::fs::remove_file(dir.join("metrics.csv"));
    let p = dir.join("config.toml");
    std::fs::write(&p, config.to_toml()).map_err(io_err(&p))?;
    let p = dir.join("normalization.json");
    std::fs::write(&p, serde_json::to_string_pretty(norm).expect("json")).map_err(io_err(&p))
}

/// The config saved in run `dir`.
pub fn config(dir: &Path) -> Result<TrainConfig, TrainError> {
    let p = dir.join("config.toml");
    if !p.is_file() {
        return Err(TrainError::Run {
            path: dir.to_path_buf(),
            message:
                "is not a run directory (no config.toml); give the folder `varphi train` wrote"
                    .into(),
        });
    }
    TrainConfig::load(&p)
}

/// The normaliser saved in run `dir`.
pub fn normalization(dir: &Path) -> Result<Normalization, TrainError> {
    let p = dir.join("normalization.json");
    let text = std::fs::read_to_string(&p).map_err(|e| TrainError::Run {
        path: p.clone(),
        message: format!(
            "cannot read the run's normalisation ({e}); was the run folder copied incompletely?"
        ),
    })?;
    serde_json::from_str(&text).map_err(|e| TrainError::Run {
        path: p,
        message: format!("corrupt normalisation: {e}"),
    })
}

/// Write an evaluation report as `dir/eval.json`.
pub fn write_eval(dir: &Path, report: &impl Serialize) -> Result<(), TrainError> {
    let p = dir.join("eval.json");
    std::fs::write(&p, serde_json::to_string_pretty(report).expect("json")).map_err(io_err(&p))
}
