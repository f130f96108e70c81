//! Errors at the trainer's edges: config, data, checkpoints, devices, non-finite losses.

use std::path::PathBuf;

/// A training-run error. Each message names the problem and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The config file could not be read or parsed.
    #[error("{path}: {message}")]
    Config {
        /// Config file.
        path: PathBuf,
        /// What is wrong (one line).
        message: String,
    },
    /// A config value is out of range or inconsistent.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `optimizer.lr`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Data-parallel or MPI training cannot run as asked.
    #[error("parallel training: {0}")]
    Parallel(String),
    /// Data loading failed.
    #[error(transparent)]
    Data(#[from] varphi_data::DataError),
    /// No usable device.
    #[error("{0}")]
    Device(String),
    /// A run directory or checkpoint problem.
    #[error("{path}: {message}")]
    Run {
        /// Path concerned.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A loss term became NaN or infinite.
    #[error(
        "training stopped: loss term `{term}` became {value} at epoch {epoch}, step {step}; {kept}. Lower optimizer.lr, set optimizer.grad_clip, or check the data"
    )]
    NonFinite {
        /// Term name.
        term: String,
        /// The value.
        value: f64,
        /// Epoch (0-based).
        epoch: usize,
        /// Global step.
        step: usize,
        /// Which checkpoint is kept.
        kept: String,
    },
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// Path concerned.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Attach a path to an I/O error.
pub fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
