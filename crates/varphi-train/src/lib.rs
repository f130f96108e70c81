//! # varphi-train
//!
//! The training side of varphi: a short generic loop with observers ([`trainer`]), run-time
//! backend selection ([`backend`]), atomic checkpoints ([`checkpoint`]), the validated
//! experiment config ([`config`]), plots ([`plots`]), evaluation and sampling ([`run`]) and the
//! throughput benchmark ([`bench`]), physics-only PDDLVM runs ([`physics`]), and scores of
//! predictive uncertainty ([`uq`]: relative
//! L2, NLL, CRPS, coverage). The `varphi` binary is a thin CLI over these.
//!
//! ```ignore
//! use varphi_train::run::{train, TrainOptions};
//! let summary = train(Some("configs/quickstart.toml".as_ref()), &TrainOptions::default())?;
//! println!("{}", summary.run_dir.display());
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod infer;
pub mod model;
pub mod npe;
pub mod observers;
pub mod physics;
pub mod physvae;
pub mod plots;
pub mod run;
pub mod trainer;
pub mod uq;

pub use backend::{BackendKind, Precision, select_device};
pub use config::TrainConfig;
pub use error::TrainError;
