//! Darcy flow / linear elliptic problem on the unit square (FNO convention).
//!
//! ```text
//! −∇·(a(x)∇u(x)) = f  on (0, 1)²,   u = 0 on the boundary
//! ```
//!
//! Prior on `a`: the FNO two-phase field (`a = 12` where a GRF with `α = 2, τ = 3` is ≥ 0,
//! `3` elsewhere) or a log-normal Karhunen–Loève field.

use super::{
    PdeResidual, PointJet, Preconditioner, Problem, Residual, StrongForm, check_shapes, ring,
};
use crate::error::PhysicsError;
use crate::fd::{FaceAverage, Stencil2d};
use crate::fem::{Element2d, Fem2d};
use crate::random_field::{GaussianRandomField, KarhunenLoeve, KarhunenLoeveSettings, threshold};
use crate::{boundary::Boundary, grid::Grid2d, sparse};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Prior of the coefficient field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DarcyCoefficient {
    /// `hi` where a GRF `(−Δ + τ²)^(−α)` is ≥ 0, `lo` elsewhere (FNO: 2, 3, 3, 12).
    TwoPhase {
        /// GRF smoothness α.
        alpha: f64,
        /// GRF inverse length scale τ.
        tau: f64,
        /// Value where the GRF is negative.
        lo: f64,
        /// Value where the GRF is non-negative.
        hi: f64,
    },
    /// `exp` of a truncated Karhunen–Loève field with exponential covariance.
    LogNormal {
        /// Correlation length.
        length: f64,
        /// Standard deviation of `log a`.
        sigma: f64,
        /// Mean of `log a`.
        mean: f64,
        /// Retained modes.
        modes: usize,
    },
}

impl Default for DarcyCoefficient {
    fn default() -> Self {
        DarcyCoefficient::TwoPhase {
            alpha: 2.0,
            tau: 3.0,
            lo: 3.0,
            hi: 12.0,
        }
    }
}

/// Spatial discretisation of the residual and the reference solver.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DarcyDiscretisation {
    /// 5-point finite differences, `a` averaged onto faces. Residual rows:
    /// `−∇_h·(a∇_h u) − f` at interior nodes.
    FiniteDifference {
        /// Face average.
        #[serde(default)]
        average: FaceAverage,
    },
    /// Galerkin elements, `a` averaged onto cells. Residual rows: `(A(a)u − M f)_i` at interior
    /// nodes (≈ `h²` times the strong residual).
    FiniteElement {
        /// Element family.
        #[serde(default)]
        element: Element2d,
        /// Cell average of the nodal coefficient.
        #[serde(default)]
        average: FaceAverage,
    },
}

impl Default for DarcyDiscretisation {
    fn default() -> Self {
        DarcyDiscretisation::FiniteDifference {
            average: FaceAverage::Harmonic,
        }
    }
}

/// Settings of the Darcy problem.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DarcySettings {
    /// Nodes per axis, boundary included (FNO: 16, 32, 64 — often quoted as 2^k + 1).
    pub grid: usize,
    /// Constant source `f`.
    #[serde(default = "one")]
    pub forcing: f64,
    /// Coefficient prior.
    #[serde(default)]
    pub coefficient: DarcyCoefficient,
    /// Discretisation.
    #[serde(default)]
    pub discretisation: DarcyDiscretisation,
}

fn one() -> f64 {
    1.0
}

impl DarcySettings {
    /// The FNO set-up on `grid × grid` nodes.
    pub fn fno(grid: usize) -> Self {
        Self {
            grid,
            forcing: 1.0,
            coefficient: DarcyCoefficient::default(),
            discretisation: DarcyDiscretisation::default(),
        }
    }

    /// Check ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.grid < 3 {
            return Err(format!(
                "grid must be at least 3 nodes per axis, got {}",
                self.grid
            ));
        }
        if !self.forcing.is_finite() {
            return Err(format!("forcing must be finite, got {}", self.forcing));
        }
        match self.coefficient {
            DarcyCoefficient::TwoPhase { alpha, tau, lo, hi } => {
                if !(alpha > 1.0 && tau > 0.0 && lo > 0.0 && hi > 0.0) {
                    return Err(format!(
                        "coefficient: need alpha > 1 (d/2), tau > 0 and positive lo/hi, got alpha={alpha}, tau={tau}, lo={lo}, hi={hi}"
                    ));
                }
            }
            DarcyCoefficient::LogNormal {
                length,
                sigma,
                modes,
                mean,
            } => {
                if !(length > 0.0 && sigma >= 0.0 && modes >= 1 && mean.is_finite()) {
                    return Err(format!(
                        "coefficient: need length > 0, sigma ≥ 0, modes ≥ 1, got length={length}, sigma={sigma}, modes={modes}"
                    ));
                }
            }
        }
        Ok(())
    }
}

enum Prior {
    TwoPhase(GaussianRandomField, f64, f64),
    LogNormal(KarhunenLoeve),
}

/// The Darcy problem: residual, coefficient prior and reference solver.
pub struct Darcy {
    /// Settings.
    pub settings: DarcySettings,
    grid: Grid2d,
    prior: Prior,
}

impl std::fmt::Debug for Darcy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Darcy")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Darcy {
    /// Build the problem (for a log-normal prior this computes the KL modes).
    pub fn new(settings: DarcySettings) -> Self {
        let n = settings.grid;
        let prior = match settings.coefficient {
            DarcyCoefficient::TwoPhase { alpha, tau, lo, hi } => {
                Prior::TwoPhase(GaussianRandomField { n, alpha, tau }, lo, hi)
            }
            DarcyCoefficient::LogNormal {
                length,
                sigma,
                mean,
                modes,
            } => Prior::LogNormal(KarhunenLoeve::new(&KarhunenLoeveSettings {
                n,
                length,
                sigma,
                mean,
                modes,
            })),
        };
        Self {
            settings,
            grid: Grid2d::unit_square(n),
            prior,
        }
    }

    fn h(&self) -> f64 {
        self.grid.x.dx
    }

    /// Indices of the interior nodes, row-major.
    fn interior(&self) -> Vec<usize> {
        let n = self.settings.grid;
        (0..n * n)
            .filter(|&p| !self.grid.on_boundary(p / n, p % n))
            .collect()
    }

    /// The discrete operator `A(a)` on the interior nodes as triplets (FD: the `h⁻²`-scaled
    /// 5-point `−∇·(a∇·)`; FEM: the stiffness matrix restricted to the interior). Symmetric.
    fn operator(&self, a: &[f64]) -> Vec<(usize, usize, f64)> {
        let n = self.settings.grid;
        match self.settings.discretisation {
            DarcyDiscretisation::FiniteDifference { average } => {
                let m = n - 2;
                let h2 = self.h() * self.h();
                let id = |i: usize, j: usize| (i - 1) * m + (j - 1);
                let mut t = Vec::with_capacity(5 * m * m);
                for i in 1..n - 1 {
                    for j in 1..n - 1 {
                        let mut diag = 0.0;
                        for (ni, nj) in [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)] {
                            let c = average.of(&[a[i * n + j], a[ni * n + nj]]) / h2;
                            diag += c;
                            if !self.grid.on_boundary(ni, nj) {
                                t.push((id(i, j), id(ni, nj), -c));
                            }
                        }
                        t.push((id(i, j), id(i, j), diag));
                    }
                }
                t
            }
            DarcyDiscretisation::FiniteElement { element, average } => {
                let fem = Fem2d::unit_square(n, element);
                let cells: Vec<f64> = (0..n - 1)
                    .flat_map(|i| (0..n - 1).map(move |j| (i, j)))
                    .map(|(i, j)| {
                        average.of(&[
                            a[i * n + j],
                            a[(i + 1) * n + j],
                            a[i * n + j + 1],
                            a[(i + 1) * n + j + 1],
                        ])
                    })
                    .collect();
                sparse::restrict(&fem.assemble(&cells), n * n, &self.interior())
            }
        }
    }

    /// The interior right-hand side for a nodal source `f` (FD: `f`; FEM: `M f`).
    fn load(&self, f: &[f64]) -> Vec<f64> {
        let n = self.settings.grid;
        match self.settings.discretisation {
            DarcyDiscretisation::FiniteDifference { .. } => {
                self.interior().iter().map(|&p| f[p]).collect()
            }
            DarcyDiscretisation::FiniteElement { element, .. } => {
                let fem = Fem2d::unit_square(n, element);
                let mut load = vec![0.0; n * n];
                for (r, c, v) in fem.assemble_mass() {
                    load[r] += v * f[c];
                }
                self.interior().iter().map(|&p| load[p]).collect()
            }
        }
    }

    fn embed(&self, interior: &[f64]) -> Vec<f64> {
        let n = self.settings.grid;
        let mut u = vec![0.0; n * n];
        for (v, p) in interior.iter().zip(self.interior()) {
            u[p] = *v;
        }
        u
    }
}

impl PdeResidual for Darcy {
    fn solution_shape(&self) -> Vec<usize> {
        vec![self.settings.grid; 2]
    }

    fn param_dim(&self) -> usize {
        self.settings.grid * self.settings.grid
    }

    fn residual(&self, u: Tensor<2>, z: Tensor<2>) -> Residual {
        let n = self.settings.grid;
        check_shapes("darcy", &u, &z, n * n, n * n);
        let b = u.dims()[0];
        let u = u.reshape([b, n, n]);
        let a = z.reshape([b, n, n]);
        let f = self.settings.forcing;
        let pde = match self.settings.discretisation {
            DarcyDiscretisation::FiniteDifference { average } => {
                Stencil2d::square(self.h(), Boundary::ZERO)
                    .div_a_grad(u.clone(), a, average)
                    .neg()
                    .sub_scalar(f)
            }
            DarcyDiscretisation::FiniteElement { element, average } => {
                let fem = Fem2d::unit_square(n, element);
                let cells = fem.cell_coefficients(a, average);
                let load = Tensor::<3>::ones([1, n, n], &u.device()).mul_scalar(f);
                (fem.stiffness(u.clone(), cells) - fem.mass(load))
                    .narrow(1, 1, n - 2)
                    .narrow(2, 1, n - 2)
            }
        };
        Residual {
            pde: pde.reshape([b, (n - 2) * (n - 2)]),
            boundary: ring(u),
        }
    }

    /// The inverse of the discrete operator at `a = 1` on the interior (FD: the 5-point
    /// `−Δ_h`; FEM: the unit stiffness matrix), so `P⁻¹ r ≈ a (u − u*)` in scale.
    fn preconditioner(&self) -> Option<Preconditioner> {
        let n = self.settings.grid;
        let ones = vec![1.0; n * n];
        let keep = self.interior();
        let t = match self.settings.discretisation {
            DarcyDiscretisation::FiniteDifference { .. } => {
                let h2 = self.h() * self.h();
                let m = n - 2;
                let mut t = Vec::with_capacity(5 * m * m);
                for i in 0..m {
                    for j in 0..m {
                        t.push((i * m + j, i * m + j, 4.0 / h2));
                        for (di, dj) in [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)] {
                            let (a, b) = (i as i64 + di, j as i64 + dj);
                            if a >= 0 && b >= 0 && a < m as i64 && b < m as i64 {
                                t.push((i * m + j, a as usize * m + b as usize, -1.0 / h2));
                            }
                        }
                    }
                }
                t
            }
            DarcyDiscretisation::FiniteElement { element, .. } => {
                let fem = Fem2d::unit_square(n, element);
                sparse::restrict(&fem.assemble(&ones[..(n - 1) * (n - 1)]), n * n, &keep)
            }
        };
        Preconditioner::from_spd(keep.len(), &t).ok()
    }
}

impl Problem for Darcy {
    fn name(&self) -> &'static str {
        "darcy"
    }

    fn param_names(&self) -> Vec<String> {
        vec!["coefficient".into()]
    }

    /// Log-normal priors only: `a = exp(μ + Σ_k √λ_k ξ_k φ_k)`.
    fn prior_transform(&self) -> Option<super::PriorTransform> {
        match &self.prior {
            Prior::TwoPhase(..) => None,
            Prior::LogNormal(kl) => {
                let (k, nn) = (kl.len(), kl.n * kl.n);
                let mut basis = vec![0.0; nn * k];
                for (j, lambda) in kl.eigenvalues.iter().enumerate() {
                    for i in 0..nn {
                        basis[i * k + j] = lambda.sqrt() * kl.modes[j * nn + i];
                    }
                }
                Some(super::PriorTransform::LogLinear {
                    mean: kl.mean,
                    basis,
                    k,
                })
            }
        }
    }

    fn sample_params(&self, rng: &mut dyn rand::RngCore) -> Vec<f64> {
        match &self.prior {
            Prior::TwoPhase(grf, lo, hi) => threshold(&grf.sample(rng), *lo, *hi),
            Prior::LogNormal(kl) => kl.sample(rng).1,
        }
    }

    fn solve(&self, a: &[f64]) -> Result<Vec<f64>, PhysicsError> {
        let n = self.settings.grid;
        self.solve_with_source(a, &vec![self.settings.forcing; n * n])
    }

    fn coordinates(&self) -> Vec<(&'static str, Vec<f64>)> {
        vec![("x", self.grid.x.x.clone()), ("y", self.grid.y.x.clone())]
    }

    fn observable(&self) -> Vec<usize> {
        self.interior()
    }

    fn strong_form(&self) -> Option<&dyn StrongForm> {
        Some(self)
    }
}

/// The continuous problem `R = −∇·(a∇u) − f = −(a Δu + ∇a·∇u) − f` on (0, 1)², `u = 0` on the
/// boundary, in the coordinates `(x, y)` of [`Problem::coordinates`], with `a` the bilinear
/// interpolant of the nodal coefficient (the parameters): `∇a` is its cellwise gradient, so a
/// thresholded two-phase coefficient gives a residual that is only meaningful cell by cell.
impl StrongForm for Darcy {
    fn domain(&self) -> Vec<[f64; 2]> {
        vec![[0.0, 1.0], [0.0, 1.0]]
    }

    fn strong_residual(&self, x: Tensor<2>, u: &PointJet, z: Tensor<2>) -> Tensor<2> {
        let n = self.settings.grid;
        let rows = x.dims()[0];
        assert!(
            x.dims()[1] == 2 && z.dims() == [rows, n * n],
            "darcy strong residual: expected x [rows, 2] and z [rows, {}], got {:?} and {:?}",
            n * n,
            x.dims(),
            z.dims()
        );
        let device = x.device();
        let h = self.h();
        let pts = x.into_data().try_into_vec_as::<f64>().expect("f64");
        // Per row: the 4 corner nodes of its cell and the weights of a, ∂a/∂x, ∂a/∂y.
        let (mut idx, mut w, mut wx, mut wy) = (
            Vec::with_capacity(4 * rows),
            Vec::with_capacity(4 * rows),
            Vec::with_capacity(4 * rows),
            Vec::with_capacity(4 * rows),
        );
        let cell = |v: f64| {
            let s = (v / h).clamp(0.0, (n - 1) as f64);
            let i = (s.floor() as usize).min(n - 2);
            (i, s - i as f64)
        };
        for r in 0..rows {
            let ((i, tx), (j, ty)) = (cell(pts[2 * r]), cell(pts[2 * r + 1]));
            for (di, dj, wv, wxv, wyv) in [
                (0, 0, (1.0 - tx) * (1.0 - ty), -(1.0 - ty), -(1.0 - tx)),
                (1, 0, tx * (1.0 - ty), 1.0 - ty, -tx),
                (0, 1, (1.0 - tx) * ty, -ty, 1.0 - tx),
                (1, 1, tx * ty, ty, tx),
            ] {
                idx.push(((i + di) * n + j + dj) as i64);
                w.push(wv);
                wx.push(wxv / h);
                wy.push(wyv / h);
            }
        }
        let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [rows, 4]), &device);
        let corners = z.gather(1, idx);
        let interp = |weights: Vec<f64>| {
            let t = Tensor::<2>::from_data(TensorData::new(weights, [rows, 4]), &device);
            (corners.clone() * t).sum_dim(1)
        };
        let (a, ax, ay) = (interp(w), interp(wx), interp(wy));
        let laplacian = u.hess[0][0].clone() + u.hess[1][1].clone();
        (a * laplacian + ax * u.grad[0].clone() + ay * u.grad[1].clone())
            .neg()
            .sub_scalar(self.settings.forcing)
    }

    /// 32 points on each side (corners included once).
    fn dirichlet_points(&self) -> Vec<Vec<f64>> {
        let mut p = Vec::with_capacity(128);
        for i in 0..32 {
            let s = i as f64 / 32.0;
            p.extend([
                vec![s, 0.0],
                vec![1.0, s],
                vec![1.0 - s, 1.0],
                vec![0.0, 1.0 - s],
            ]);
        }
        p
    }
}

impl Default for DarcySettings {
    fn default() -> Self {
        Self::fno(32)
    }
}

impl Darcy {
    /// The reference solution for coefficient `a` and a nodal source `f` (both `[n, n]`
    /// row-major) instead of the constant forcing, e.g. for manufactured solutions.
    pub fn solve_with_source(&self, a: &[f64], f: &[f64]) -> Result<Vec<f64>, PhysicsError> {
        let n = self.settings.grid;
        if a.len() != n * n || f.len() != n * n {
            return Err(PhysicsError::Shape(format!(
                "darcy: coefficient and source have {} and {} values, expected {n}×{n}",
                a.len(),
                f.len()
            )));
        }
        if let Some(v) = a.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(PhysicsError::Shape(format!(
                "darcy: coefficient must be positive and finite, found {v}"
            )));
        }
        let m = self.interior().len();
        let solver = match self.settings.discretisation {
            DarcyDiscretisation::FiniteDifference { .. } => "darcy (FD)",
            DarcyDiscretisation::FiniteElement { .. } => "darcy (FEM)",
        };
        let x = sparse::solve_spd(m, &self.operator(a), &self.load(f), solver)?;
        Ok(self.embed(&x))
    }

    /// The forward map `a ↦ u*(a)` for a batch of coefficient fields `a` `[b, n²]`: one
    /// sparse Cholesky solve per row on the CPU in f64, returned on `a`'s device as a constant
    /// (no autodiff graph). Differentiate through it with [`Darcy::adjoint_pullback`].
    pub fn solve_batch(&self, a: &Tensor<2>) -> Result<Tensor<2>, PhysicsError> {
        let [b, nn] = a.dims();
        let host = to_host(a.clone().inner().into_data())?;
        let mut u = Vec::with_capacity(b * nn);
        for row in host.chunks(nn) {
            u.extend(self.solve(row)?);
        }
        Ok(Tensor::<2>::from_data(TensorData::new(u, [b, nn]), &a.device()).detach())
    }

    /// The adjoint (implicit-function) gradient of the forward map. For `u* = u*(a)` (from
    /// [`Darcy::solve_batch`]) and `g = ∂L/∂u*` `[b, n²]` of any downstream loss `L`, solves
    /// `A(a)ᵀ λ = g` on the interior (the operator is symmetric) and returns the scalar
    /// `s(a) = −Σ_rows λ · r(u*, a)`, whose gradient w.r.t. `a` is `dL/da` exactly
    /// (`r(u*(a), a) = 0` ⇒ `du*/da = −A⁻¹ ∂r/∂a`). Backpropagate `s` to send `dL/da` on to
    /// whatever produced `a`; `λ` and `u*` enter as constants.
    pub fn adjoint_pullback(
        &self,
        a: Tensor<2>,
        u_star: Tensor<2>,
        grad_u: Tensor<2>,
    ) -> Result<Tensor<1>, PhysicsError> {
        let [b, nn] = a.dims();
        let device = a.device();
        let coef = to_host(a.clone().inner().into_data())?;
        let g = to_host(grad_u.inner().into_data())?;
        let keep = self.interior();
        let m = keep.len();
        let mut lambda = Vec::with_capacity(b * m);
        for (row, g) in coef.chunks(nn).zip(g.chunks(nn)) {
            let rhs: Vec<f64> = keep.iter().map(|&p| g[p]).collect();
            lambda.extend(sparse::solve_spd(
                m,
                &self.operator(row),
                &rhs,
                "darcy adjoint",
            )?);
        }
        let lambda = Tensor::<2>::from_data(TensorData::new(lambda, [b, m]), &device);
        let r = self.residual(u_star.detach(), a).pde;
        Ok((lambda * r).sum().neg())
    }
}

fn to_host(data: TensorData) -> Result<Vec<f64>, PhysicsError> {
    data.convert::<f64>()
        .try_into_vec_as::<f64>()
        .map_err(|e| PhysicsError::Shape(format!("darcy: reading a tensor: {e:?}")))
}
