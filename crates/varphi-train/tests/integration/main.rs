//! One integration-test binary (each extra binary re-links burn, which is slow on 2 cores).

mod calibration;
mod cli;
mod common;
mod ensemble;
#[cfg(feature = "mpi")]
mod mpi;
mod own_data;
mod physics;
mod training;
