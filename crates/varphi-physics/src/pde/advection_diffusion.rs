//! Advection–diffusion (heat) equation, the phys-vae set-up (Takeishi & Kalousis).
//!
//! ```text
//! u_t = D u_xx − c u_x,   u(x, 0) = a sin(x),
//! D, c ~ U[.01, .1],  a ~ U[.5, 1.5]
//! ```
//!
//! on `n` nodes `x_i = x0 + i·dx` (phys-vae: `n = 20`, `x0 = 0`, `dx = π/20`) with `u = 0` at the
//! ghost nodes `x0 − dx` and `x0 + n·dx` (the zero-padded stencil of phys-vae), observed at
//! `levels` times `t_k = k·dt` (`dt = .12`, 50 levels). `c = 0` is the heat equation.
//!
//! Residual: central differences in space and the θ-scheme between consecutive levels,
//!
//! ```text
//! r^k_i = (u^{k+1}_i − u^k_i)/dt − θ F_i(u^{k+1}) − (1 − θ) F_i(u^k),
//! F_i(u) = D (u_{i+1} − 2u_i + u_{i−1})/dx² − c (u_{i+1} − u_{i−1})/2dx
//! ```
//!
//! plus the initial condition `u^0_i − a sin(x_i)` as boundary rows. The reference solver
//! integrates the same semi-discrete system by Crank–Nicolson with `substeps` steps per level
//! (one faer sparse LU per sample, reused for every step).

use super::{
    PdeResidual, PointJet, Problem, Residual, StrongForm, check_range, check_shapes, column3, row,
    uniform,
};
use crate::boundary::Boundary;
use crate::error::PhysicsError;
use crate::fd::{Stencil1d, ThetaScheme};
use crate::sparse;
use burn::prelude::*;
use burn::tensor::ops::PadMode;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// Settings of the advection–diffusion problem.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvectionDiffusionSettings {
    /// Grid nodes.
    pub grid: usize,
    /// Node spacing (default `π / grid`).
    #[serde(default)]
    pub dx: Option<f64>,
    /// First node.
    #[serde(default)]
    pub x0: f64,
    /// Time between stored levels.
    #[serde(default = "d_dt")]
    pub dt: f64,
    /// Stored time levels, `t = 0` included.
    #[serde(default = "d_levels")]
    pub levels: usize,
    /// Crank–Nicolson steps of the reference solver per stored level.
    #[serde(default = "d_substeps")]
    pub substeps: usize,
    /// Implicitness θ of the residual's time scheme.
    #[serde(default = "d_theta")]
    pub theta: f64,
    /// Range of the diffusivity `D`.
    #[serde(default = "d_range")]
    pub diffusivity: [f64; 2],
    /// Range of the velocity `c`.
    #[serde(default = "d_range")]
    pub velocity: [f64; 2],
    /// Range of the initial amplitude `a`.
    #[serde(default = "d_amp")]
    pub amplitude: [f64; 2],
}

fn d_dt() -> f64 {
    0.12
}
fn d_levels() -> usize {
    50
}
fn d_substeps() -> usize {
    8
}
fn d_theta() -> f64 {
    0.5
}
fn d_range() -> [f64; 2] {
    [0.01, 0.1]
}
fn d_amp() -> [f64; 2] {
    [0.5, 1.5]
}

impl AdvectionDiffusionSettings {
    /// The phys-vae set-up on `grid` nodes (`dx = π/grid`).
    pub fn physvae(grid: usize) -> Self {
        Self {
            grid,
            dx: None,
            x0: 0.0,
            dt: d_dt(),
            levels: d_levels(),
            substeps: d_substeps(),
            theta: d_theta(),
            diffusivity: d_range(),
            velocity: d_range(),
            amplitude: d_amp(),
        }
    }

    /// Check ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.grid < 3 {
            return Err(format!("grid must be at least 3 nodes, got {}", self.grid));
        }
        if let Some(dx) = self.dx
            && !(dx > 0.0 && dx.is_finite())
        {
            return Err(format!("dx must be positive, got {dx}"));
        }
        if !(self.dt > 0.0 && self.dt.is_finite()) {
            return Err(format!("dt must be positive, got {}", self.dt));
        }
        if self.levels < 2 || self.substeps == 0 {
            return Err("levels must be at least 2 and substeps at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.theta) {
            return Err(format!("theta must be in [0, 1], got {}", self.theta));
        }
        check_range("diffusivity", self.diffusivity, false)?;
        check_range("velocity", self.velocity, false)?;
        check_range("amplitude", self.amplitude, false)
    }
}

/// The advection–diffusion problem.
#[derive(Debug, Clone)]
pub struct AdvectionDiffusion {
    /// Settings.
    pub settings: AdvectionDiffusionSettings,
    x: Vec<f64>,
    dx: f64,
}

impl AdvectionDiffusion {
    /// Build the problem.
    pub fn new(settings: AdvectionDiffusionSettings) -> Self {
        let dx = settings.dx.unwrap_or(PI / settings.grid as f64);
        let x = (0..settings.grid)
            .map(|i| settings.x0 + i as f64 * dx)
            .collect();
        Self { settings, x, dx }
    }

    /// Node coordinates.
    pub fn x(&self) -> &[f64] {
        &self.x
    }

    /// The forward map `z ↦ u(t_k, x_i)` as tensor ops: the θ-scheme
    /// `(I − θhF) u^{n+1} = (I + (1 − θ)hF) u^n` (`h = dt/substeps`, `F` the zero-ghost
    /// central-difference operator of the module docs) for `z: [b, 3] = [D, c, a]`, returning
    /// `[b, levels·grid]` (level-major, like [`Problem::solve`]). `theta = 0` is explicit Euler
    /// (stable only for `h·max|λ(F)| ≤ 2`), `½` Crank–Nicolson (the reference solver's scheme,
    /// which this map reproduces to rounding), `1` implicit Euler.
    ///
    /// `F = tridiag(ℓ, −2D/dx², υ)` with `ℓ = D/dx² + c/2dx`, `υ = D/dx² − c/2dx` is Toeplitz, so
    /// with `S = diag(r^i)`, `r = √(ℓ/υ)`, `F = S Q diag(μ) Qᵀ S⁻¹` where
    /// `Q_ik = √(2/(n+1)) sin(ikπ/(n+1))` and `μ_k = −2D/dx² + 2√(ℓυ) cos(kπ/(n+1))`. Every step
    /// is then the diagonal amplification `g_k = (1 + (1−θ)hμ_k)/(1 − θhμ_k)` of the modes — the
    /// same numbers as the tridiagonal solves, but batched, on every backend, and differentiable
    /// in `D`, `c` and `a` with first-order autodiff (no unrolled solver).
    ///
    /// Valid for cell Péclet numbers `|c|·dx/2D < 1` (real spectrum); outside it `r` is NaN. The
    /// similarity `S` has condition `r^(n−1)`: with `c = 0` (pure diffusion) `S = I` and the map is
    /// exact in f32; with strong advection on a long grid use f64 (the CPU backends).
    pub fn forward_map(&self, z: Tensor<2>, theta: f64) -> Tensor<2> {
        let [b, p] = z.dims();
        assert_eq!(
            p, 3,
            "AdvectionDiffusion::forward_map: z must be [batch, 3] = [D, c, a]"
        );
        assert!(
            (0.0..=1.0).contains(&theta),
            "AdvectionDiffusion::forward_map: theta must be in [0, 1], got {theta}"
        );
        let (n, levels, dx) = (self.settings.grid, self.settings.levels, self.dx);
        let device = z.device();
        let col = |i: usize| z.clone().narrow(1, i, 1);
        let (d, c, a) = (col(0), col(1), col(2));
        let lower = d.clone().div_scalar(dx * dx) + c.clone().div_scalar(2.0 * dx);
        let upper = d.clone().div_scalar(dx * dx) - c.div_scalar(2.0 * dx);
        // ln r = ½ (ln ℓ − ln υ); √(ℓυ) = exp(½ (ln ℓ + ln υ)).
        let (ll, lu) = (lower.log(), upper.log());
        let log_r = (ll.clone() - lu.clone()).mul_scalar(0.5);
        let coupling = (ll + lu).mul_scalar(0.5).exp();
        let idx = row((1..=n).map(|i| i as f64).collect(), &device);
        let scale = (log_r * idx).exp(); // r^i, [b, n]
        let angle = |k: usize| k as f64 * PI / (n + 1) as f64;
        let cos_k = row((1..=n).map(|k| angle(k).cos()).collect(), &device);
        let mu = d.div_scalar(dx * dx).mul_scalar(-2.0) + coupling.mul_scalar(2.0) * cos_k;
        let h = self.settings.dt / self.settings.substeps as f64;
        let g = (mu.clone().mul_scalar((1.0 - theta) * h).add_scalar(1.0))
            / (mu.mul_scalar(-theta * h).add_scalar(1.0));
        // Amplification over one stored level: g^substeps.
        let mut g_level = g.clone();
        for _ in 1..self.settings.substeps {
            g_level = g_level * g.clone();
        }
        let norm = (2.0 / (n + 1) as f64).sqrt();
        let q: Vec<f64> = (1..=n)
            .flat_map(|i| (1..=n).map(move |k| norm * (i as f64 * angle(k)).sin()))
            .collect();
        let q = Tensor::<2>::from_data(TensorData::new(q, [n, n]), &device); // symmetric
        let sin = row(self.x.iter().map(|x| x.sin()).collect(), &device);
        let u0 = a * sin;
        let mut coeffs = (u0.clone() / scale.clone()).matmul(q.clone());
        let mut out = vec![u0];
        for _ in 1..levels {
            coeffs = coeffs * g_level.clone();
            out.push(coeffs.clone().matmul(q.clone()) * scale.clone());
        }
        let u = Tensor::cat(out, 1);
        debug_assert_eq!(u.dims(), [b, levels * n]);
        u
    }
}

impl PdeResidual for AdvectionDiffusion {
    fn solution_shape(&self) -> Vec<usize> {
        vec![self.settings.levels, self.settings.grid]
    }

    fn param_dim(&self) -> usize {
        3
    }

    fn residual(&self, u: Tensor<2>, z: Tensor<2>) -> Residual {
        let (n, levels) = (self.settings.grid, self.settings.levels);
        check_shapes("heat", &u, &z, n * levels, 3);
        let b = u.dims()[0];
        let flat = u
            .clone()
            .reshape([b * levels, n])
            .pad([(1, 1)], PadMode::Constant(0.0));
        let s = Stencil1d::new(self.dx, Boundary::ZERO);
        let lap = s.laplacian(flat.clone()).reshape([b, levels, n]);
        let grad = s.gradient(flat).reshape([b, levels, n]);
        let f = lap * column3(&z, 0) - grad * column3(&z, 1);
        let u3 = u.reshape([b, levels, n]);
        let scheme = ThetaScheme {
            theta: self.settings.theta,
            dt: self.settings.dt,
        };
        let pde = scheme
            .residual(u3.clone(), f)
            .reshape([b, (levels - 1) * n]);
        let sin = row(self.x.iter().map(|x| x.sin()).collect(), &u3.device());
        let ic = u3.narrow(1, 0, 1).reshape([b, n]) - z.narrow(1, 2, 1) * sin;
        Residual { pde, boundary: ic }
    }
}

impl Problem for AdvectionDiffusion {
    fn name(&self) -> &'static str {
        "heat"
    }

    fn param_names(&self) -> Vec<String> {
        vec!["D".into(), "c".into(), "a".into()]
    }

    fn sample_params(&self, rng: &mut dyn rand::RngCore) -> Vec<f64> {
        let s = &self.settings;
        vec![
            uniform(rng, s.diffusivity),
            uniform(rng, s.velocity),
            uniform(rng, s.amplitude),
        ]
    }

    fn solve(&self, z: &[f64]) -> Result<Vec<f64>, PhysicsError> {
        const SOLVER: &str = "heat (Crank–Nicolson)";
        if z.len() != 3 {
            return Err(PhysicsError::Shape(format!(
                "heat: expected 3 parameters [D, c, a], got {}",
                z.len()
            )));
        }
        let (d, c, a) = (z[0], z[1], z[2]);
        let n = self.settings.grid;
        let h = self.settings.dt / self.settings.substeps as f64;
        // L = tridiag(D/dx² + c/2dx, −2D/dx², D/dx² − c/2dx); solve (I − h/2 L) v = (I + h/2 L) u.
        let (lo, di, up) = (
            d / (self.dx * self.dx) + c / (2.0 * self.dx),
            -2.0 * d / (self.dx * self.dx),
            d / (self.dx * self.dx) - c / (2.0 * self.dx),
        );
        let mut t = Vec::with_capacity(3 * n);
        for i in 0..n {
            if i > 0 {
                t.push((i, i - 1, -0.5 * h * lo));
            }
            t.push((i, i, 1.0 - 0.5 * h * di));
            if i + 1 < n {
                t.push((i, i + 1, -0.5 * h * up));
            }
        }
        // One LU per sample, reused for every step.
        let lu = sparse::matrix(n, &t, SOLVER)?
            .sp_lu()
            .map_err(|e| sparse::factorisation(SOLVER, e))?;
        let mut u: Vec<f64> = self.x.iter().map(|x| a * x.sin()).collect();
        let mut out = Vec::with_capacity(self.settings.levels * n);
        out.extend_from_slice(&u);
        for _ in 1..self.settings.levels {
            for _ in 0..self.settings.substeps {
                let at = |j: isize| {
                    if j < 0 || j >= n as isize {
                        0.0
                    } else {
                        u[j as usize]
                    }
                };
                let rhs: Vec<f64> = (0..n as isize)
                    .map(|i| at(i) + 0.5 * h * (lo * at(i - 1) + di * at(i) + up * at(i + 1)))
                    .collect();
                u = sparse::solve_with(&lu, &rhs, SOLVER)?;
            }
            out.extend_from_slice(&u);
        }
        Ok(out)
    }

    fn coordinates(&self) -> Vec<(&'static str, Vec<f64>)> {
        vec![
            (
                "t",
                (0..self.settings.levels)
                    .map(|k| k as f64 * self.settings.dt)
                    .collect(),
            ),
            ("x", self.x.clone()),
        ]
    }

    fn strong_form(&self) -> Option<&dyn StrongForm> {
        Some(self)
    }
}

/// The continuous problem the grid discretises, in the coordinates `(t, x)` of
/// [`Problem::coordinates`]: `R = u_t − D u_xx + c u_x` on `t ∈ (0, (levels − 1)·dt)`,
/// `x ∈ (x0 − dx, x0 + n·dx)` (the ghost nodes), `u = 0` at both ends and `u(0, x) = a sin(x)`
/// inside (at the left end `a sin(x0 − dx)` need not vanish: the grid's zero ghost node is the
/// same corner mismatch).
impl StrongForm for AdvectionDiffusion {
    fn domain(&self) -> Vec<[f64; 2]> {
        let s = &self.settings;
        vec![
            [0.0, (s.levels - 1) as f64 * s.dt],
            [s.x0 - self.dx, s.x0 + s.grid as f64 * self.dx],
        ]
    }

    fn strong_residual(&self, x: Tensor<2>, u: &PointJet, z: Tensor<2>) -> Tensor<2> {
        let rows = x.dims()[0];
        assert!(
            x.dims()[1] == 2 && z.dims() == [rows, 3],
            "heat strong residual: expected x [rows, 2] = (t, x) and z [rows, 3], got {:?} and {:?}",
            x.dims(),
            z.dims()
        );
        let (d, c) = (z.clone().narrow(1, 0, 1), z.narrow(1, 1, 1));
        u.grad[0].clone() - d * u.hess[1][1].clone() + c * u.grad[1].clone()
    }

    /// 64 points on `t = 0` (ends excluded) and 32 times on each end.
    fn dirichlet_points(&self) -> Vec<Vec<f64>> {
        let [[_, t1], [x_lo, x_hi]] = [self.domain()[0], self.domain()[1]];
        let mut p: Vec<Vec<f64>> = (1..=64)
            .map(|i| vec![0.0, x_lo + (x_hi - x_lo) * i as f64 / 65.0])
            .collect();
        for i in 0..32 {
            let t = t1 * i as f64 / 31.0;
            p.push(vec![t, x_lo]);
            p.push(vec![t, x_hi]);
        }
        p
    }

    /// `a sin(x)` on `t = 0` inside, 0 at the ends.
    fn dirichlet_values(&self, x: Tensor<2>, z: Tensor<2>) -> Tensor<2> {
        let rows = x.dims()[0];
        let [_, [x_lo, x_hi]] = [self.domain()[0], self.domain()[1]];
        let (t, xs) = (x.clone().narrow(1, 0, 1), x.narrow(1, 1, 1));
        let eps = 1e-9 * (x_hi - x_lo);
        let inside = xs.clone().greater_elem(x_lo + eps).float()
            * xs.clone().lower_elem(x_hi - eps).float()
            * t.lower_elem(eps).float();
        let a = z.narrow(1, 2, 1);
        debug_assert_eq!(a.dims(), [rows, 1]);
        inside * a * xs.sin()
    }
}

impl Default for AdvectionDiffusionSettings {
    fn default() -> Self {
        Self::physvae(20)
    }
}
