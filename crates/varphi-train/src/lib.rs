//! # varphi-train
//!
//! The training side of varphi. One module per experiment kind ([`kinds`]: `vae`, `cvae`,
//! `pddlvm`, `boltzmann`, `pinn`, `npe`, `phys-vae`), each implementing the [`kind::Kind`] trait with its own typed
//! config; the registry [`kinds::KindSection`] maps `[model] kind` to it in one `match`, and
//! [`session`] trains, evaluates and samples any kind the same way. Shared pieces have homes of
//! their own: the shared config sections ([`config`]) and the whole experiment
//! ([`experiment`]), the run's data ([`data`]), the run directory ([`rundir`]), seeded noise
//! streams ([`noise`]), host-side helpers ([`host`]), the PDE residual term ([`physics_term`]),
//! forward-surrogate scoring, plots and sampling ([`surrogate`]), observations ([`observations`]), the (C)VAE model both latent kinds share ([`latent`]), the
//! short generic loop with observers ([`trainer`], [`observers`]), atomic checkpoints
//! ([`checkpoint`]), run-time backend selection ([`backend`]), plots ([`plots`]), scores of
//! predictive uncertainty ([`uq`]), their calibration checks ([`ranks`]) and recalibration
//! ([`calibration`]), the HTML run report ([`report`]), Bayes VI with the solver in the likelihood ([`infer`]),
//! dataset generation ([`datagen`]) and the throughput benchmark ([`bench`], its workloads in [`workloads`]). The `varphi`
//! binary is [`cli`].
//!
//! ```ignore
//! use varphi_train::session::{train, evaluate, TrainOptions};
//! let summary = train(Some("configs/quickstart.toml".as_ref()), &TrainOptions::default())?;
//! let report = evaluate(&summary.run_dir, None, false, false)?; // eval.json as JSON
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod bench;
pub mod calibration;
pub mod checkpoint;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod data;
pub mod datagen;
pub mod ensemble;
pub mod error;
pub mod experiment;
pub mod host;
pub mod infer;
pub mod kind;
pub mod kinds;
pub mod latent;
pub mod noise;
pub mod observations;
pub mod observers;
pub mod parallel;
pub mod physics_term;
pub mod plots;
pub mod ranks;
pub mod report;
pub mod rundir;
pub mod sequence_setup;
pub mod session;
pub mod surrogate;
pub mod tables;
pub mod trainer;
pub mod uq;
pub mod workloads;

#[cfg(test)]
mod tests_common;
#[cfg(test)]
mod tests_config_reference;

pub use backend::{BackendKind, Precision, select_device};
pub use error::TrainError;
pub use experiment::TrainConfig;
pub use kind::Kind;
