//! # varphi-physics
//!
//! Grids, PDE definitions and reference solutions used by varphi's data generators and
//! physics-informed objectives. Reference computations are in `f64` on the CPU; they do not
//! depend on a tensor backend.
//!
//! This release ships the closed-form Fourier solutions of the heat equation used by the
//! built-in datasets ([`heat`]) and uniform grids ([`grid`]).
//!
//! ```ignore
//! use varphi_physics::{grid::Grid1d, heat::HeatSine1d};
//! let grid = Grid1d::interior(0.0, 1.0, 64);
//! let u = HeatSine1d::new(vec![1.0, 0.5], 1.0).eval(&grid, 0.01);
//! ```
#![warn(missing_docs)]

pub mod grid;
pub mod heat;
