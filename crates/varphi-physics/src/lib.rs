//! # varphi-physics
//!
//! The physics of varphi, in two forms:
//!
//! - **Differentiable residual operators** on Burn tensors (any backend, batched, gradients to the
//!   field and to coefficient fields): strong-form finite differences ([`fd`]: gradient,
//!   Laplacian, `∇·(a∇u)` with arithmetic or harmonic face averages, advection, θ-scheme time
//!   residuals) with Dirichlet, zero-flux and periodic [`boundary`] conditions, and weak-form
//!   Galerkin residuals `A(a)u − Mf` on P1 (1-D) and Q1/P1 (2-D) elements ([`fem`]).
//! - **Problems** ([`pde`]): Darcy, 1-D nonlinear Poisson, Burgers, advection–diffusion and the
//!   forced pendulum, each with a residual ([`pde::PdeResidual`]), the parameter prior of the
//!   paper it reproduces and an `f64` reference solver ([`pde::Problem`]; sparse Cholesky / LU
//!   from faer, Newton, Crank–Nicolson, RK4), plus random coefficient fields
//!   ([`random_field`]: spectral GRFs via rustfft, two-phase thresholding, log-normal
//!   Karhunen–Loève) and the closed-form heat solutions of [`heat`].
//! - **State transitions** ([`dynamics`]) `u_n = M(u_{n−1}; Λ)` with their tangent-linear maps,
//!   for Kalman filters over latent physics: exact periodic advection–diffusion, Lorenz-63.
//!
//! Tensor code takes the device of its inputs; reference solvers are CPU `f64` and return
//! [`PhysicsError`] when a factorisation or Newton iteration fails.
//!
//! ```ignore
//! use varphi_physics::pde::{Darcy, DarcySettings, PdeResidual, Problem};
//! let darcy = Darcy::new(DarcySettings::fno(32));
//! let a = darcy.sample_params(&mut rng);          // two-phase coefficient, 32 × 32
//! let u = darcy.solve(&a)?;                        // reference solution (f64)
//! let r = darcy.residual(u_tensor, a_tensor);      // r.pde: [batch, 30·30], r.boundary: ring
//! ```
#![warn(missing_docs)]

pub mod boundary;
pub mod dynamics;
pub mod error;
pub mod fd;
pub mod fem;
pub mod grid;
pub mod heat;
pub mod pde;
pub mod random_field;
pub mod sparse;
#[doc(hidden)]
pub mod testing;

pub use error::PhysicsError;
