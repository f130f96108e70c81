//! # varphi-data
//!
//! Datasets for varphi:
//!
//! - [`DataSource`]: the `[data]` table of a config — built-in generators (`heat1d`, `heat2d`:
//!   exact Fourier solutions of the heat equation; `darcy`, `poisson1d`, `burgers`, `heat`,
//!   `pendulum`: reference solutions of the paper set-ups from [`physics`], deterministic from a
//!   seed) or files: `.npy`, `.npz`, `.safetensors`, `.csv` ([`read`]: C or Fortran order,
//!   float16/32/64, integer and boolean elements), with an optional condition array, and given
//!   train / validation / test files (`kind = "files"`). NaN/inf, truncated files and shape
//!   mismatches are reported with the file and sample named; [`memory`] refuses allocations
//!   larger than the machine's available memory before they are made.
//! - [`sequences`]: time series with latent physics (`advection-video`: rendered frames of an
//!   advection–diffusion state with unknown speed and diffusivity) for dynamical latent models.
//! - [`physics::generate`] / [`physics::write`]: the generators behind `varphi data`, writing
//!   parameters, solutions, grid coordinates and noisy point observations to `.npz` with a JSON
//!   sidecar.
//! - [`Dataset`] with deterministic train/test [`split`](Dataset::split),
//!   [`Normalization`] fitted on the training split and stored with a run, and a
//!   [`Batcher`] whose epoch order depends only on `(seed, epoch)` (so resumed runs are exact).
//!
//! ```ignore
//! let data = DataSource::Heat1d { n: 1000, grid: 64, modes: 8, t: 0.005, kappa: [0.5, 2.0] }
//!     .load(42, Path::new("."))?;
//! let (train, test) = data.split(0.1, 42);
//! let norm = Normalization::fit(&train);
//! let (x, cond) = norm.apply(&train).batch(&[0, 1, 2], &device);
//! ```
#![warn(missing_docs)]

pub mod builtin;
pub mod config;
pub mod dataset;
pub mod error;
pub mod memory;
pub mod npy;
pub mod physics;
pub mod read;
pub mod sequences;

pub use config::{DataSource, FileSource, ShardPart, Splits};
pub use dataset::{Batcher, Dataset, Normalization, even_parts, split_indices};
pub use error::DataError;
