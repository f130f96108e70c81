//! Errors at the data edge (files, shapes, values).

use std::path::PathBuf;

/// Everything that can go wrong loading or preparing data. Messages name the problem and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file could not be read.
    #[error("cannot read data file {path}: {source} (check the path in [data])")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// An `.npz` archive lacks the requested array.
    #[error("{path} has no array named '{key}' (arrays present: {present})")]
    MissingArray {
        /// File.
        path: PathBuf,
        /// Requested key.
        key: String,
        /// Names present.
        present: String,
    },
    /// The array's element type is not float32/float64.
    #[error(
        "{path}: unsupported element type {dtype}; save the array as float (16/32/64-bit), integer or boolean"
    )]
    Dtype {
        /// File.
        path: PathBuf,
        /// The dtype string.
        dtype: String,
    },
    /// A file whose contents cannot be parsed: truncated or corrupt.
    #[error(
        "{path}: not a readable {format} file, it is truncated or corrupt ({detail}); write it again"
    )]
    Corrupt {
        /// File.
        path: PathBuf,
        /// The format expected from its extension.
        format: &'static str,
        /// What the parser said.
        detail: String,
    },
    /// More memory than this machine has available.
    #[error("{what} needs {needed}, but only {available} of memory is available; {fix}")]
    Memory {
        /// What would allocate.
        what: String,
        /// Its size.
        needed: String,
        /// Available memory.
        available: String,
        /// The setting to change.
        fix: String,
    },
    /// NaN or infinity in the data.
    #[error(
        "{path}: non-finite value ({value}) at flat index {index} (sample {sample}); clean or drop that sample"
    )]
    NonFinite {
        /// File or array.
        path: PathBuf,
        /// Flat index.
        index: usize,
        /// Sample index.
        sample: usize,
        /// The value.
        value: f64,
    },
    /// Shapes that do not fit together or a setting out of range.
    #[error("{0}")]
    Shape(String),
    /// A file could not be written.
    #[error("cannot write {path}: {source} (check that the folder exists and is writable)")]
    Write {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A bad setting in `[data]`.
    #[error("[data] {key}: {message}")]
    Invalid {
        /// Config key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}
