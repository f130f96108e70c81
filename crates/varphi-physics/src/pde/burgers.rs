//! Viscous Burgers' equation (the RGNP set-up).
//!
//! ```text
//! u_t + z1 u u_x − z0 u_xx = 0,  x ∈ (0, 1), t ∈ (0, T],  u(0, t) = u(1, t) = 0,
//! u(x, 0) = sin(2cπx) sin(πx),   z0 ~ U[.005, .01], z1 ~ U[.5, 1], c ~ U[.5, 2]
//! ```
//!
//! Central differences in space and the θ-scheme (Crank–Nicolson by default) in time:
//!
//! ```text
//! r^n_i = (u^{n+1}_i − u^n_i)/Δt − θ F_i(u^{n+1}) − (1 − θ) F_i(u^n),
//! F_i(u) = −z1 A_i(u) + z0 (u_{i+1} − 2u_i + u_{i−1})/h²
//! A_i(u) = (u_{i+1} + u_i + u_{i−1})(u_{i+1} − u_{i−1})/6h      (skew-symmetric, default)
//!        or u_i (u_{i+1} − u_{i−1})/2h                           (non-conservative)
//! ```
//!
//! The skew-symmetric form conserves the discrete energy, so Crank–Nicolson stays stable on
//! grids that do not resolve the thin fronts of small `z0`; the non-conservative form needs
//! `h ≲ 2 z0 / max|u|` (about 100 nodes at the default ranges).
//!
//! Boundary rows: `u^n_0`, `u^n_{n−1}` for every level, and the initial condition
//! `u^0_i − u_0(x_i)` at interior nodes. The reference solver solves the same scheme, Newton at
//! every step (tridiagonal Jacobian, faer sparse LU).

use super::{
    LinearisedPreconditioner, PdeResidual, Preconditioner, Problem, Residual, check_range,
    check_shapes, column3, row, uniform,
};
use crate::error::PhysicsError;
use crate::fd::{Stencil1d, ThetaScheme};
use crate::{boundary::Boundary, grid::Grid1d, sparse};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// Settings of the Burgers problem.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BurgersSettings {
    /// Nodes on [0, 1], both ends included.
    pub grid: usize,
    /// Time steps (the solution has `steps + 1` levels).
    #[serde(default = "d_steps")]
    pub steps: usize,
    /// Final time.
    #[serde(default = "d_t_end")]
    pub t_end: f64,
    /// Implicitness θ of the time scheme.
    #[serde(default = "d_theta")]
    pub theta: f64,
    /// Range of the viscosity `z0`.
    #[serde(default = "d_z0")]
    pub z0: [f64; 2],
    /// Range of the advection strength `z1`.
    #[serde(default = "d_z1")]
    pub z1: [f64; 2],
    /// Range of the initial-condition frequency `c`.
    #[serde(default = "d_c")]
    pub c: [f64; 2],
    /// Discretisation of `u u_x`.
    #[serde(default)]
    pub advection: AdvectionForm,
}

/// Discretisation of the advection term `u u_x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvectionForm {
    /// `(u_{i+1} + u_i + u_{i−1})(u_{i+1} − u_{i−1})/6h`: energy-conserving.
    #[default]
    SkewSymmetric,
    /// `u_i (u_{i+1} − u_{i−1})/2h`.
    NonConservative,
}

fn d_steps() -> usize {
    100
}
fn d_t_end() -> f64 {
    1.0
}
fn d_theta() -> f64 {
    0.5
}
fn d_z0() -> [f64; 2] {
    [0.005, 0.01]
}
fn d_z1() -> [f64; 2] {
    [0.5, 1.0]
}
fn d_c() -> [f64; 2] {
    [0.5, 2.0]
}

impl BurgersSettings {
    /// The RGNP ranges on `grid` nodes with 100 Crank–Nicolson steps to `t = 1`.
    pub fn rgnp(grid: usize) -> Self {
        Self {
            grid,
            steps: d_steps(),
            t_end: d_t_end(),
            theta: d_theta(),
            z0: d_z0(),
            z1: d_z1(),
            c: d_c(),
            advection: AdvectionForm::SkewSymmetric,
        }
    }

    /// Check ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.grid < 3 {
            return Err(format!("grid must be at least 3 nodes, got {}", self.grid));
        }
        if self.steps == 0 {
            return Err("steps must be at least 1".into());
        }
        if !(self.t_end > 0.0 && self.t_end.is_finite()) {
            return Err(format!("t_end must be positive, got {}", self.t_end));
        }
        if !(0.0..=1.0).contains(&self.theta) {
            return Err(format!("theta must be in [0, 1], got {}", self.theta));
        }
        check_range("z0", self.z0, true)?;
        check_range("z1", self.z1, false)?;
        check_range("c", self.c, false)
    }
}

/// The Burgers problem.
#[derive(Debug, Clone)]
pub struct Burgers {
    /// Settings.
    pub settings: BurgersSettings,
    grid: Grid1d,
}

impl Burgers {
    /// Build the problem.
    pub fn new(settings: BurgersSettings) -> Self {
        Self {
            grid: Grid1d::closed(0.0, 1.0, settings.grid),
            settings,
        }
    }

    fn dt(&self) -> f64 {
        self.settings.t_end / self.settings.steps as f64
    }

    /// The forward map `z ↦ u(t_n, x_i)` as tensor ops: the same semi-discrete system as the
    /// residual and the reference solver (`du/dt = F(u)` at interior nodes, `u = 0` at the
    /// ends, the configured advection form) integrated by explicit classical RK4 with
    /// `substeps` steps per stored level, for `z: [b, 3] = [z0, z1, c]`; returns
    /// `[b, (steps + 1)·grid]` (level-major, like [`Problem::solve`]). Autodiff differentiates
    /// through the unrolled steps (first order), so the map can sit in a likelihood or decoder.
    ///
    /// Explicit: stable for `Δt/substeps ≲ 2.8 / max|λ(F′)|`, roughly `h²/(1.4 z0)` for the
    /// diffusion and `2.8h/(z1 max|u|)` for the advection — one substep at the RGNP set-up on 33
    /// nodes (Δt = 0.01), more on finer grids. The reference solver's Crank–Nicolson steps
    /// differ from it by their own `O(Δt²)` error.
    pub fn forward_map(&self, z: Tensor<2>, substeps: usize) -> Tensor<2> {
        assert_eq!(
            z.dims()[1],
            3,
            "Burgers::forward_map: z must be [batch, 3] = [z0, z1, c]"
        );
        assert!(substeps >= 1, "Burgers::forward_map: substeps must be ≥ 1");
        let col = |i: usize| z.clone().narrow(1, i, 1);
        let (z0, z1) = (col(0), col(1));
        let u0 = self.initial_tensor(col(2));
        let rhs = |u: Tensor<2>| self.rhs_tensor(u, z0.clone(), z1.clone());
        let dt = self.dt() / substeps as f64;
        let mut u = u0.clone();
        let mut out = vec![u0];
        for _ in 0..self.settings.steps {
            for _ in 0..substeps {
                let k1 = rhs(u.clone());
                let k2 = rhs(u.clone() + k1.clone().mul_scalar(dt / 2.0));
                let k3 = rhs(u.clone() + k2.clone().mul_scalar(dt / 2.0));
                let k4 = rhs(u.clone() + k3.clone().mul_scalar(dt));
                u = u + (k1 + k2.mul_scalar(2.0) + k3.mul_scalar(2.0) + k4).mul_scalar(dt / 6.0);
            }
            out.push(u.clone());
        }
        Tensor::cat(out, 1)
    }

    /// `u(x, 0) = sin(2cπx) sin(πx)` on the grid (exactly 0 at the ends) for `c: [b, 1]`.
    fn initial_tensor(&self, c: Tensor<2>) -> Tensor<2> {
        let n = self.settings.grid;
        let device = c.device();
        let x = row(self.grid.x.clone(), &device);
        let sin_pi_x = row(
            self.grid.x.iter().map(|&x| (PI * x).sin()).collect(),
            &device,
        );
        let mask = row(
            (0..n)
                .map(|i| if i == 0 || i + 1 == n { 0.0 } else { 1.0 })
                .collect(),
            &device,
        );
        (c * x).mul_scalar(2.0 * PI).sin() * sin_pi_x * mask
    }

    /// `F(u)` of the module docs as tensor ops, `[b, grid]` with zeros at the two ends, for
    /// `u: [b, grid]` and the coefficients `z0, z1: [b, 1]`.
    fn rhs_tensor(&self, u: Tensor<2>, z0: Tensor<2>, z1: Tensor<2>) -> Tensor<2> {
        let n = self.settings.grid;
        let h = self.grid.dx;
        let [b, _] = u.dims();
        let device = u.device();
        let (l, m, r) = (
            u.clone().narrow(1, 0, n - 2),
            u.clone().narrow(1, 1, n - 2),
            u.narrow(1, 2, n - 2),
        );
        let a = match self.settings.advection {
            AdvectionForm::SkewSymmetric => {
                (r.clone() + m.clone() + l.clone()) * (r.clone() - l.clone()) / (6.0 * h)
            }
            AdvectionForm::NonConservative => m.clone() * (r.clone() - l.clone()) / (2.0 * h),
        };
        let f = z1.neg() * a + z0.div_scalar(h * h) * (r - m.mul_scalar(2.0) + l);
        let zero = Tensor::<2>::zeros([b, 1], &device);
        Tensor::cat(vec![zero.clone(), f, zero], 1)
    }

    /// The forward map by the configured θ-scheme (Crank–Nicolson by default) — the reference
    /// solver's own scheme, so the values equal [`Problem::solve`] to its Newton tolerance —
    /// for `z: [b, 3] = [z0, z1, c]`, returning `[b, (steps + 1)·grid]` (level-major).
    ///
    /// Each step solves `G(u^{n+1}; u^n, z) = 0` (module docs) by Newton on the host in f64,
    /// outside the autodiff tape, and re-enters the tape through the implicit function theorem:
    ///
    /// ```text
    /// u^{n+1} = u* − J⁻¹ [G(u*; u^n, z) − stop_grad(G(u*; u^n, z))],   J = ∂G/∂u^{n+1}(u*)
    /// ```
    /// whose value is `u*` and whose derivative is `∂u^{n+1}/∂(u^n, z) = −J⁻¹ ∂G/∂(u^n, z)`,
    /// the exact derivative of the implicit step (first-order autodiff suffices; `J⁻¹` is a
    /// constant dense `[grid − 2]²` matrix per row). Unconditionally stable, unlike the
    /// explicit [`forward_map`](Self::forward_map); costs one host round trip per step. Where
    /// Newton needs sub-steps (far outside the default ranges) the value is still the
    /// solver's, and the gradient that of one full step at it.
    ///
    /// # Errors
    /// [`PhysicsError`] if Newton fails even with sub-steps, or `z` is not finite.
    pub fn forward_map_implicit(&self, z: Tensor<2>) -> Result<Tensor<2>, PhysicsError> {
        use faer::linalg::solvers::DenseSolveCore;
        let [b, p] = z.dims();
        assert_eq!(
            p, 3,
            "Burgers::forward_map_implicit: z must be [batch, 3] = [z0, z1, c]"
        );
        let n = self.settings.grid;
        let m = n - 2;
        let (theta, dt) = (self.settings.theta, self.dt());
        let device = z.device();
        let zh = host_values(z.clone());
        if zh.iter().any(|v| !v.is_finite()) {
            return Err(PhysicsError::NonFinite { solver: SOLVER });
        }
        let col = |i: usize| z.clone().narrow(1, i, 1);
        let (z0, z1) = (col(0), col(1));
        let mut u = self.initial_tensor(col(2));
        let mut out = vec![u.clone()];
        for _ in 0..self.settings.steps {
            let uh = host_values(u.clone());
            let mut star = Vec::with_capacity(b * n);
            let mut jinv = Vec::with_capacity(b * m * m);
            for k in 0..b {
                let zk = [zh[3 * k], zh[3 * k + 1]];
                let next = self.step(&uh[k * n..(k + 1) * n], zk, dt, 0)?;
                let (_, d) = self.rhs(&next, zk[0], zk[1]);
                let mut jac = faer::Mat::<f64>::zeros(m, m);
                for (i, j, v) in step_jacobian(&d, theta, dt) {
                    jac[(i, j)] = v;
                }
                let inv = jac.partial_piv_lu().inverse();
                jinv.extend(
                    (0..m)
                        .flat_map(|i| (0..m).map(move |j| (i, j)))
                        .map(|(i, j)| inv[(i, j)]),
                );
                star.extend(next);
            }
            let star = Tensor::<2>::from_data(TensorData::new(star, [b, n]), &device);
            let jinv = Tensor::<3>::from_data(TensorData::new(jinv, [b, m, m]), &device);
            let g = (star.clone() - u.clone()).div_scalar(dt)
                - self
                    .rhs_tensor(star.clone(), z0.clone(), z1.clone())
                    .mul_scalar(theta)
                - self
                    .rhs_tensor(u, z0.clone(), z1.clone())
                    .mul_scalar(1.0 - theta);
            let g = g.narrow(1, 1, m);
            let delta = jinv
                .matmul((g.clone() - g.detach()).unsqueeze_dim::<3>(2))
                .reshape([b, m]);
            let zero = Tensor::<2>::zeros([b, 1], &device);
            u = star - Tensor::cat(vec![zero.clone(), delta, zero], 1);
            out.push(u.clone());
        }
        Ok(Tensor::cat(out, 1))
    }

    /// `F(u)` at interior nodes and its tridiagonal derivative (sub, diag, super) per row.
    fn rhs(&self, u: &[f64], z0: f64, z1: f64) -> (Vec<f64>, Vec<[f64; 3]>) {
        let h = self.grid.dx;
        let n = u.len();
        (1..n - 1)
            .map(|i| {
                let (l, c, r) = (u[i - 1], u[i], u[i + 1]);
                // A and its derivatives w.r.t. (u_{i−1}, u_i, u_{i+1}).
                let (a, da) = match self.settings.advection {
                    AdvectionForm::SkewSymmetric => (
                        (r + c + l) * (r - l) / (6.0 * h),
                        [
                            (-c - 2.0 * l) / (6.0 * h),
                            (r - l) / (6.0 * h),
                            (2.0 * r + c) / (6.0 * h),
                        ],
                    ),
                    AdvectionForm::NonConservative => (
                        c * (r - l) / (2.0 * h),
                        [-c / (2.0 * h), (r - l) / (2.0 * h), c / (2.0 * h)],
                    ),
                };
                let k = z0 / (h * h);
                let f = -z1 * a + k * (r - 2.0 * c + l);
                let d = [-z1 * da[0] + k, -z1 * da[1] - 2.0 * k, -z1 * da[2] + k];
                (f, d)
            })
            .unzip()
    }
}

impl Burgers {
    /// One θ-step of length `dt` from `u` by Newton; if Newton fails, two half steps (up to
    /// 2⁵ sub-steps), which only happens far outside the default parameter ranges or on very
    /// coarse grids.
    fn step(
        &self,
        u: &[f64],
        z: [f64; 2],
        dt: f64,
        depth: usize,
    ) -> Result<Vec<f64>, PhysicsError> {
        let [z0, z1] = z;
        let n = u.len();
        let theta = self.settings.theta;
        let (f_old, _) = self.rhs(u, z0, z1);
        let scale = u.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300) / dt;
        let full = |inner: &[f64]| {
            let mut v = vec![0.0; n];
            v[1..n - 1].copy_from_slice(inner);
            v
        };
        // G(v) = (v − u)/dt − θF(v) − (1 − θ)F(u) at interior nodes; Jacobian I/dt − θ F′(v).
        let system = |inner: &[f64]| {
            let v = full(inner);
            let (f_new, d) = self.rhs(&v, z0, z1);
            let g = (0..n - 2)
                .map(|i| (v[i + 1] - u[i + 1]) / dt - theta * f_new[i] - (1.0 - theta) * f_old[i])
                .collect();
            (g, step_jacobian(&d, theta, dt))
        };
        match sparse::newton(u[1..n - 1].to_vec(), system, 1e-12 * scale, 30, SOLVER) {
            Ok(inner) => Ok(full(&inner)),
            Err(PhysicsError::NoConvergence { .. }) if depth < 5 => {
                let half = self.step(u, z, dt / 2.0, depth + 1)?;
                self.step(&half, z, dt / 2.0, depth + 1)
            }
            Err(e) => Err(e),
        }
    }
}

const SOLVER: &str = "burgers (θ-scheme + Newton)";

/// The tridiagonal rows `(sub, diag, super)` of `a I + b F′` from those of `F′` ([`Burgers::rhs`]).
fn shifted_rows(f: &[[f64; 3]], a: f64, b: f64) -> Vec<[f64; 3]> {
    f.iter()
        .map(|f| [b * f[0], a + b * f[1], b * f[2]])
        .collect()
}

/// `∂G/∂u^{n+1} = I/dt − θ F′(u^{n+1})` at interior nodes as `(row, col, value)` triplets, from
/// the tridiagonal `F′` rows `(sub, diag, super)` of [`Burgers::rhs`].
fn step_jacobian(d: &[[f64; 3]], theta: f64, dt: f64) -> Vec<(usize, usize, f64)> {
    let m = d.len();
    let mut t = Vec::with_capacity(3 * m);
    for (i, r) in shifted_rows(d, 1.0 / dt, -theta).into_iter().enumerate() {
        if i > 0 {
            t.push((i, i - 1, r[0]));
        }
        t.push((i, i, r[1]));
        if i + 1 < m {
            t.push((i, i + 1, r[2]));
        }
    }
    t
}

impl Burgers {
    /// The blocks `(D⁻¹, K = −D⁻¹E)` of one time step of the residual's Jacobian, both
    /// row-major `[m, m]`, from the tridiagonal `F′` rows (sub, diag, super) at the new level
    /// (`D = I/Δt − θF′`) and the old one (`E = −I/Δt − (1 − θ)F′`); `None` where `D` is
    /// numerically singular.
    fn step_blocks(&self, new: &[[f64; 3]], old: &[[f64; 3]]) -> Option<(Vec<f64>, Vec<f64>)> {
        let (dt, theta) = (self.dt(), self.settings.theta);
        let m = new.len();
        let d = shifted_rows(new, 1.0 / dt, -theta);
        let e = shifted_rows(old, -1.0 / dt, -(1.0 - theta));
        let d_inv = sparse::tridiagonal_inverse(&d)?;
        // K_ij = −Σ_l (D⁻¹)_il E_lj, E tridiagonal: l ∈ {j − 1, j, j + 1}.
        let mut k = vec![0.0; m * m];
        for (row, out) in d_inv.chunks_exact(m).zip(k.chunks_exact_mut(m)) {
            for j in 0..m {
                let mut v = row[j] * e[j][1];
                if j > 0 {
                    v += row[j - 1] * e[j - 1][2];
                }
                if j + 1 < m {
                    v += row[j + 1] * e[j + 1][0];
                }
                out[j] = -v;
            }
        }
        Some((d_inv, k))
    }

    /// [`Self::step_blocks`] of the heat part at the mid-range viscosity (no advection), the
    /// blocks of the fixed preconditioner.
    fn reference_blocks(&self) -> (Vec<f64>, Vec<f64>) {
        let n = self.settings.grid;
        let z0 = 0.5 * (self.settings.z0[0] + self.settings.z0[1]);
        let (_, f) = self.rhs(&vec![0.0; n], z0, 0.0);
        self.step_blocks(&f, &f)
            .expect("the heat step I/Δt − θ z0 Δ_h is diagonally dominant")
    }
}

/// The solution's values on the host, `f64`, row-major.
fn host_values(t: Tensor<2>) -> Vec<f64> {
    t.detach()
        .into_data()
        .convert::<f64>()
        .try_into_vec_as::<f64>()
        .expect("f64 data")
}

impl LinearisedPreconditioner for Burgers {
    /// `J(u)⁻¹ r` for the PDE rows `r` `[b, T(n − 2)]` by block forward substitution,
    /// `s¹ = D₁⁻¹ r¹`, `sⁿ = Dₙ⁻¹ rⁿ + Kₙ sⁿ⁻¹`, with `Dₙ = I/Δt − θF′(uⁿ)`,
    /// `Kₙ = −Dₙ⁻¹(−I/Δt − (1 − θ)F′(uⁿ⁻¹))` at each sample's own levels and `(z0, z1)`: the
    /// Newton step of the whole trajectory. The blocks are built on the host from detached
    /// values (tridiagonal inverses, `O(T n²)` per sample); a step whose `Dₙ` is singular
    /// (far from any solution) falls back to the reference blocks.
    fn apply_linearised(&self, u: &Tensor<2>, z: &Tensor<2>, pde: Tensor<2>) -> Tensor<2> {
        let (n, t) = (self.settings.grid, self.settings.steps);
        let m = n - 2;
        let [b, _] = u.dims();
        let device = pde.device();
        let (uh, zh) = (host_values(u.clone()), host_values(z.clone()));
        let reference = self.reference_blocks();
        let block = t * m * m;
        let (mut d_inv, mut k) = (vec![0.0; b * block], vec![0.0; b * block]);
        // Samples are independent: split them over the cores (the tensor ops are idle here).
        let sample = |s: usize, d_out: &mut [f64], k_out: &mut [f64]| {
            let level = |l: usize| {
                let at = (s * (t + 1) + l) * n;
                self.rhs(&uh[at..at + n], zh[3 * s], zh[3 * s + 1]).1
            };
            let mut old = level(0);
            for l in 0..t {
                let new = level(l + 1);
                let (di, ki) = self
                    .step_blocks(&new, &old)
                    .filter(|(di, ki)| di.iter().chain(ki).all(|v| v.is_finite()))
                    .unwrap_or_else(|| reference.clone());
                d_out[l * m * m..(l + 1) * m * m].copy_from_slice(&di);
                k_out[l * m * m..(l + 1) * m * m].copy_from_slice(&ki);
                old = new;
            }
        };
        let threads = std::thread::available_parallelism().map_or(1, |c| c.get());
        let per = b.div_ceil(threads.max(1)).max(1);
        std::thread::scope(|scope| {
            for (c, (dc, kc)) in d_inv
                .chunks_mut(per * block)
                .zip(k.chunks_mut(per * block))
                .enumerate()
            {
                let sample = &sample;
                scope.spawn(move || {
                    for (i, (ds, ks)) in dc.chunks_mut(block).zip(kc.chunks_mut(block)).enumerate()
                    {
                        sample(c * per + i, ds, ks);
                    }
                });
            }
        });
        let blocks = |v: Vec<f64>| {
            Tensor::<3>::from_data(TensorData::new(v, [b * t, m, m]), &device).reshape([b, t, m, m])
        };
        let (d_inv, k) = (blocks(d_inv), blocks(k));
        let a = d_inv
            .reshape([b * t, m, m])
            .matmul(pde.reshape([b * t, m, 1]))
            .reshape([b, t, m]);
        let at = |x: Tensor<3>, l: usize| x.narrow(1, l, 1).reshape([b, m]);
        let mut s = at(a.clone(), 0);
        let mut out = vec![s.clone()];
        for l in 1..t {
            let kl = k.clone().narrow(1, l, 1).reshape([b, m, m]);
            s = at(a.clone(), l) + kl.matmul(s.unsqueeze_dim::<3>(2)).reshape([b, m]);
            out.push(s.clone());
        }
        Tensor::cat(out, 1)
    }
}

impl PdeResidual for Burgers {
    fn solution_shape(&self) -> Vec<usize> {
        vec![self.settings.steps + 1, self.settings.grid]
    }

    fn param_dim(&self) -> usize {
        3
    }

    fn residual(&self, u: Tensor<2>, z: Tensor<2>) -> Residual {
        let (n, levels) = (self.settings.grid, self.settings.steps + 1);
        check_shapes("burgers", &u, &z, n * levels, 3);
        let b = u.dims()[0];
        let device = u.device();
        let s = Stencil1d::new(self.grid.dx, Boundary::ZERO);
        let flat = u.clone().reshape([b * levels, n]);
        let adv = match self.settings.advection {
            AdvectionForm::SkewSymmetric => s.advection_skew(flat.clone()),
            AdvectionForm::NonConservative => s.advection(flat.clone()),
        }
        .reshape([b, levels, n - 2]);
        let lap = s.laplacian(flat.clone()).reshape([b, levels, n - 2]);
        let f = lap * column3(&z, 0) - adv * column3(&z, 1);
        let inner = s.restrict(flat).reshape([b, levels, n - 2]);
        let scheme = ThetaScheme {
            theta: self.settings.theta,
            dt: self.dt(),
        };
        let pde = scheme
            .residual(inner.clone(), f)
            .reshape([b, (levels - 1) * (n - 2)]);
        // u0 = sin(2cπx) sin(πx) at interior nodes.
        let x = &self.grid.x[1..n - 1];
        let c = z.narrow(1, 2, 1);
        let u0 = (c * row(x.iter().map(|x| 2.0 * PI * x).collect(), &device)).sin()
            * row(x.iter().map(|x| (PI * x).sin()).collect(), &device);
        let ic = inner.narrow(1, 0, 1).reshape([b, n - 2]) - u0;
        let u3 = u.reshape([b, levels, n]);
        let ends = Tensor::cat(
            vec![
                u3.clone().narrow(2, 0, 1).reshape([b, levels]),
                u3.narrow(2, n - 1, 1).reshape([b, levels]),
            ],
            1,
        );
        Residual {
            pde,
            boundary: Tensor::cat(vec![ends, ic], 1),
        }
    }

    /// The inverse of the residual's linear part at the mid-range viscosity
    /// `z̄0 = (z0_lo + z0_hi)/2` without advection — time marching of the heat equation. Over
    /// the interior nodes of levels `1..=T` (level-major, as the PDE rows) that part is block
    /// lower-bidiagonal, with `D = I/Δt − θ z̄0 Δ_h` on the diagonal and
    /// `E = −I/Δt − (1 − θ) z̄0 Δ_h` below it, so
    ///
    /// ```text
    /// (L⁻¹)_{pq} = (−D⁻¹E)^{p−q} D⁻¹  (p ≥ q),   0 above the diagonal.
    /// ```
    ///
    /// `L⁻¹ r(u)` is then `u − u*` (in units of `u`) for a heat-equation trajectory and a
    /// first-order correction of it with advection: the raw residual's smooth-in-time errors,
    /// which it barely penalises, become visible (docs/physics.md).
    fn preconditioner(&self) -> Option<Preconditioner> {
        let (t, m) = (self.settings.steps, self.settings.grid - 2);
        let (d_inv, k) = self.reference_blocks();
        // (L⁻¹)_{pq} = K^{p−q} D⁻¹ with K = −D⁻¹E.
        let mut blocks = vec![d_inv];
        for q in 1..t {
            let prev = &blocks[q - 1];
            let next = (0..m * m)
                .map(|ij| {
                    let (i, j) = (ij / m, ij % m);
                    (0..m).map(|l| k[i * m + l] * prev[l * m + j]).sum()
                })
                .collect();
            blocks.push(next);
        }
        let size = t * m;
        let mut inverse = vec![0.0; size * size];
        for p in 0..t {
            for q in 0..=p {
                for i in 0..m {
                    let row = (p * m + i) * size + q * m;
                    inverse[row..row + m].copy_from_slice(&blocks[p - q][i * m..(i + 1) * m]);
                }
            }
        }
        Some(Preconditioner::from_inverse(size, inverse))
    }

    fn linearised(&self) -> Option<&dyn LinearisedPreconditioner> {
        Some(self)
    }
}

impl Problem for Burgers {
    fn name(&self) -> &'static str {
        "burgers"
    }

    fn param_names(&self) -> Vec<String> {
        vec!["z0".into(), "z1".into(), "c".into()]
    }

    fn prior_transform(&self) -> Option<super::PriorTransform> {
        let s = &self.settings;
        Some(super::PriorTransform::Uniform {
            lo: vec![s.z0[0], s.z1[0], s.c[0]],
            hi: vec![s.z0[1], s.z1[1], s.c[1]],
        })
    }

    fn sample_params(&self, rng: &mut dyn rand::RngCore) -> Vec<f64> {
        let s = &self.settings;
        vec![uniform(rng, s.z0), uniform(rng, s.z1), uniform(rng, s.c)]
    }

    fn solve(&self, z: &[f64]) -> Result<Vec<f64>, PhysicsError> {
        if z.len() != 3 {
            return Err(PhysicsError::Shape(format!(
                "burgers: expected 3 parameters [z0, z1, c], got {}",
                z.len()
            )));
        }
        let (z0, z1, c) = (z[0], z[1], z[2]);
        let n = self.settings.grid;
        let dt = self.dt();
        let mut u: Vec<f64> = self
            .grid
            .x
            .iter()
            .map(|&x| (2.0 * c * PI * x).sin() * (PI * x).sin())
            .collect();
        u[0] = 0.0;
        u[n - 1] = 0.0;
        let mut out = Vec::with_capacity((self.settings.steps + 1) * n);
        out.extend_from_slice(&u);
        for _ in 0..self.settings.steps {
            u = self.step(&u, [z0, z1], dt, 0)?;
            out.extend_from_slice(&u);
        }
        Ok(out)
    }

    fn coordinates(&self) -> Vec<(&'static str, Vec<f64>)> {
        let dt = self.dt();
        vec![
            (
                "t",
                (0..=self.settings.steps).map(|k| k as f64 * dt).collect(),
            ),
            ("x", self.grid.x.clone()),
        ]
    }

    fn observable(&self) -> Vec<usize> {
        let n = self.settings.grid;
        (1..=self.settings.steps)
            .flat_map(|k| (1..n - 1).map(move |i| k * n + i))
            .collect()
    }
}

impl Default for BurgersSettings {
    fn default() -> Self {
        Self::rgnp(129)
    }
}
