//! Strong-form finite-difference operators on Burn tensors.
//!
//! All operators are batched tensor ops (slices of the field, no loops over nodes or samples), so
//! autodiff carries gradients to the field `u` and to coefficient fields `a` on every backend.
//! Fields live on closed grids (boundary nodes included); each axis has a [`Boundary`] and the
//! operators return values at the nodes where the PDE is imposed (see [`crate::boundary`]).
//! All stencils are second order in the spacing:
//!
//! ```text
//! gradient     (u_{i+1} − u_{i−1}) / 2h
//! laplacian    (u_{i+1} − 2u_i + u_{i−1}) / h²
//! div(a∇u)     (a_{i+½}(u_{i+1} − u_i) − a_{i−½}(u_i − u_{i−1})) / h²,
//!              a_{i+½} = (a_i + a_{i+1})/2 (arithmetic) or 2 a_i a_{i+1}/(a_i + a_{i+1}) (harmonic)
//! advection    u_i (u_{i+1} − u_{i−1}) / 2h
//! ```
//!
//! # Shapes
//! 1-D: `[batch, n]` → `[batch, m]`; 2-D: `[batch, nx, ny]` → `[batch, mx, my]`, where `m = n − 2`
//! for a Dirichlet axis and `n` otherwise. Coefficient fields have the field's shape or a batch
//! axis of 1 (broadcast).

use crate::boundary::Boundary;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// How a coefficient given at nodes is averaged onto the faces (or cells) between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaceAverage {
    /// `(a + b) / 2`.
    Arithmetic,
    /// `2ab / (a + b)`: the series conductance, exact for a piecewise-constant coefficient
    /// across the face; the usual choice for high-contrast (e.g. two-phase Darcy) fields.
    #[default]
    Harmonic,
}

impl FaceAverage {
    /// Average two tensors of equal shape.
    pub fn apply<const D: usize>(&self, a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
        match self {
            FaceAverage::Arithmetic => (a + b).mul_scalar(0.5),
            FaceAverage::Harmonic => (a.clone() * b.clone()).mul_scalar(2.0) / (a + b),
        }
    }

    /// Average of `f64` values (the same rule, for the CPU reference solvers).
    pub fn of(&self, values: &[f64]) -> f64 {
        let n = values.len() as f64;
        match self {
            FaceAverage::Arithmetic => values.iter().sum::<f64>() / n,
            FaceAverage::Harmonic => n / values.iter().map(|v| 1.0 / v).sum::<f64>(),
        }
    }
}

fn inner<const D: usize>(t: Tensor<D>, dim: usize) -> Tensor<D> {
    let n = t.dims()[dim];
    t.narrow(dim, 1, n - 2)
}

fn shift<const D: usize>(t: Tensor<D>, dim: usize, offset: usize, trim: usize) -> Tensor<D> {
    let n = t.dims()[dim];
    t.narrow(dim, offset, n - trim)
}

/// Central difference along `dim` of a padded field, at its inner nodes along `dim`.
fn d1<const D: usize>(p: Tensor<D>, dim: usize, h: f64) -> Tensor<D> {
    (shift(p.clone(), dim, 2, 2) - shift(p, dim, 0, 2)).div_scalar(2.0 * h)
}

/// Second difference along `dim` of a padded field.
fn d2<const D: usize>(p: Tensor<D>, dim: usize, h: f64) -> Tensor<D> {
    (shift(p.clone(), dim, 2, 2) - shift(p.clone(), dim, 1, 2).mul_scalar(2.0)
        + shift(p, dim, 0, 2))
    .div_scalar(h * h)
}

/// `∂_dim(a ∂_dim u)` with face-averaged `a`, both padded, at inner nodes along `dim`.
fn d_a_d<const D: usize>(
    p: Tensor<D>,
    ap: Tensor<D>,
    dim: usize,
    h: f64,
    avg: FaceAverage,
) -> Tensor<D> {
    let faces = avg.apply(shift(ap.clone(), dim, 0, 1), shift(ap, dim, 1, 1));
    let flux = faces * (shift(p.clone(), dim, 1, 1) - shift(p, dim, 0, 1));
    (shift(flux.clone(), dim, 1, 1) - shift(flux, dim, 0, 1)).div_scalar(h * h)
}

/// Finite-difference stencils on a uniform 1-D grid with spacing `h`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stencil1d {
    /// Node spacing.
    pub h: f64,
    /// Conditions at both ends.
    pub bc: Boundary,
}

impl Stencil1d {
    /// Stencils for spacing `h` and boundary conditions `bc`.
    pub fn new(h: f64, bc: Boundary) -> Self {
        Self { h, bc }
    }

    fn padded(&self, u: Tensor<2>) -> Tensor<2> {
        self.bc.pad(u, 1)
    }

    /// `u` at the nodes where the PDE is imposed, `[batch, m]`.
    pub fn restrict(&self, u: Tensor<2>) -> Tensor<2> {
        self.bc.interior(u, 1)
    }

    /// `u_x`, `[batch, n]` → `[batch, m]`.
    pub fn gradient(&self, u: Tensor<2>) -> Tensor<2> {
        d1(self.padded(u), 1, self.h)
    }

    /// `u_xx`.
    pub fn laplacian(&self, u: Tensor<2>) -> Tensor<2> {
        d2(self.padded(u), 1, self.h)
    }

    /// `(a u_x)_x` with `a` at the nodes, averaged onto faces by `avg`.
    pub fn div_a_grad(&self, u: Tensor<2>, a: Tensor<2>, avg: FaceAverage) -> Tensor<2> {
        d_a_d(self.padded(u), self.padded(a), 1, self.h, avg)
    }

    /// `u u_x` (non-conservative advection, as in Burgers' equation).
    pub fn advection(&self, u: Tensor<2>) -> Tensor<2> {
        let p = self.padded(u);
        inner(p.clone(), 1) * d1(p, 1, self.h)
    }

    /// `u u_x` in the skew-symmetric form `⅓[u u_x + (u²)_x]`, discretised centrally:
    /// `(u_{i+1} + u_i + u_{i−1})(u_{i+1} − u_{i−1}) / 6h`. It conserves the discrete energy
    /// `Σ u_i²` (the sum telescopes), which keeps implicit schemes stable on grids that do not
    /// resolve thin fronts; it is also what P1 Galerkin gives for `u u_x` on a uniform mesh.
    pub fn advection_skew(&self, u: Tensor<2>) -> Tensor<2> {
        let p = self.padded(u);
        let sum = shift(p.clone(), 1, 0, 2) + shift(p.clone(), 1, 1, 2) + shift(p.clone(), 1, 2, 2);
        sum * d1(p, 1, self.h).div_scalar(3.0)
    }
}

/// Finite-difference stencils on a uniform 2-D grid, `x` along axis 1 and `y` along axis 2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stencil2d {
    /// Spacing along `x`.
    pub hx: f64,
    /// Spacing along `y`.
    pub hy: f64,
    /// Conditions at the two `x` ends.
    pub bc_x: Boundary,
    /// Conditions at the two `y` ends.
    pub bc_y: Boundary,
}

impl Stencil2d {
    /// Stencils for spacings `(hx, hy)` and per-axis boundary conditions.
    pub fn new(hx: f64, hy: f64, bc_x: Boundary, bc_y: Boundary) -> Self {
        Self { hx, hy, bc_x, bc_y }
    }

    /// Equal spacing `h` and the same conditions on every side.
    pub fn square(h: f64, bc: Boundary) -> Self {
        Self::new(h, h, bc, bc)
    }

    fn padded(&self, u: Tensor<3>) -> Tensor<3> {
        self.bc_y.pad(self.bc_x.pad(u, 1), 2)
    }

    /// `u` at the nodes where the PDE is imposed, `[batch, mx, my]`.
    pub fn restrict(&self, u: Tensor<3>) -> Tensor<3> {
        self.bc_y.interior(self.bc_x.interior(u, 1), 2)
    }

    /// `(u_x, u_y)`.
    pub fn gradient(&self, u: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let p = self.padded(u);
        (
            inner(d1(p.clone(), 1, self.hx), 2),
            inner(d1(p, 2, self.hy), 1),
        )
    }

    /// `u_xx + u_yy` (5-point).
    pub fn laplacian(&self, u: Tensor<3>) -> Tensor<3> {
        let p = self.padded(u);
        inner(d2(p.clone(), 1, self.hx), 2) + inner(d2(p, 2, self.hy), 1)
    }

    /// `∇·(a∇u)` with `a` at the nodes, averaged onto cell faces by `avg` (5-point).
    pub fn div_a_grad(&self, u: Tensor<3>, a: Tensor<3>, avg: FaceAverage) -> Tensor<3> {
        let p = self.padded(u);
        let ap = self.padded(a);
        let x = d_a_d(inner(p.clone(), 2), inner(ap.clone(), 2), 1, self.hx, avg);
        let y = d_a_d(inner(p, 1), inner(ap, 1), 2, self.hy, avg);
        x + y
    }

    /// `v_x q_x + v_y q_y` for a velocity `(v_x, v_y)` given at the PDE nodes (`[batch, mx, my]`)
    /// and a transported field `q` on the grid; `(u·∇)u` is `advection(u_x, u_y, u_k)`
    /// per component.
    pub fn advection(&self, vx: Tensor<3>, vy: Tensor<3>, q: Tensor<3>) -> Tensor<3> {
        let (qx, qy) = self.gradient(q);
        vx * qx + vy * qy
    }
}

/// The θ-scheme in time: `θ = 0` explicit Euler, `θ = 1` implicit Euler, `θ = ½`
/// Crank–Nicolson (second order).
///
/// ```text
/// r^n = (u^{n+1} − u^n)/Δt − θ F(u^{n+1}) − (1 − θ) F(u^n),   n = 0..T−1
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThetaScheme {
    /// Implicitness θ ∈ [0, 1].
    pub theta: f64,
    /// Time step.
    pub dt: f64,
}

impl ThetaScheme {
    /// Crank–Nicolson with step `dt`.
    pub fn crank_nicolson(dt: f64) -> Self {
        Self { theta: 0.5, dt }
    }

    /// Residual of the scheme along a trajectory.
    ///
    /// # Shapes
    /// - `u`: `[batch, T + 1, m]`, the trajectory at the nodes where the PDE is imposed
    /// - `f`: `[batch, T + 1, m]`, the right-hand side `F(u^n)` at every time level
    /// - returns `[batch, T, m]`
    pub fn residual(&self, u: Tensor<3>, f: Tensor<3>) -> Tensor<3> {
        let t = u.dims()[1];
        assert_eq!(
            u.dims(),
            f.dims(),
            "ThetaScheme::residual: u and F(u) must have the same shape"
        );
        let du = (u.clone().narrow(1, 1, t - 1) - u.narrow(1, 0, t - 1)).div_scalar(self.dt);
        du - f.clone().narrow(1, 1, t - 1).mul_scalar(self.theta)
            - f.narrow(1, 0, t - 1).mul_scalar(1.0 - self.theta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f64_device, observed_orders, tensor, vec};
    use std::f64::consts::PI;

    fn max_err(got: Vec<f64>, want: impl Iterator<Item = f64>) -> f64 {
        got.iter()
            .zip(want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max)
    }

    fn grid(n: usize, bc: Boundary) -> (Vec<f64>, f64) {
        // Periodic: n distinct nodes on [0, 1); otherwise n nodes on [0, 1].
        let h = match bc {
            Boundary::Periodic => 1.0 / n as f64,
            _ => 1.0 / (n - 1) as f64,
        };
        ((0..n).map(|i| i as f64 * h).collect(), h)
    }

    fn pde_nodes(x: &[f64], bc: Boundary) -> Vec<f64> {
        match bc {
            Boundary::Dirichlet { .. } => x[1..x.len() - 1].to_vec(),
            _ => x.to_vec(),
        }
    }

    /// Max error of a 1-D operator against its exact value, on grids of 16, 32, 64, 128 cells.
    fn orders_1d(
        bc: Boundary,
        u: fn(f64) -> f64,
        a: fn(f64) -> f64,
        exact: fn(f64) -> f64,
        op: impl Fn(&Stencil1d, Tensor<2>, Tensor<2>) -> Tensor<2>,
    ) -> Vec<f64> {
        let d = f64_device();
        let errs: Vec<f64> = [16, 32, 64, 128]
            .iter()
            .map(|&cells| {
                let n = if bc == Boundary::Periodic {
                    cells
                } else {
                    cells + 1
                };
                let (x, h) = grid(n, bc);
                let s = Stencil1d::new(h, bc);
                let ut = tensor(x.iter().map(|&x| u(x)).collect(), [1, n], &d);
                let at = tensor(x.iter().map(|&x| a(x)).collect(), [1, n], &d);
                max_err(
                    vec(op(&s, ut, at)),
                    pde_nodes(&x, bc).into_iter().map(exact),
                )
            })
            .collect();
        observed_orders(&errs)
    }

    fn assert_order(orders: &[f64], p: f64, what: &str) {
        assert!(
            orders.iter().all(|o| (o - p).abs() <= 0.2),
            "{what}: observed orders {orders:?}, expected {p} ± 0.2"
        );
    }

    #[test]
    fn stencils_1d_converge_at_second_order() {
        // Dirichlet axis: u = sin(πx) e^x on [0, 1].
        let u = |x: f64| (PI * x).sin() * x.exp();
        let ux = |x: f64| (PI * (PI * x).cos() + (PI * x).sin()) * x.exp();
        let uxx = |x: f64| ((1.0 - PI * PI) * (PI * x).sin() + 2.0 * PI * (PI * x).cos()) * x.exp();
        let a = |x: f64| 1.0 + 0.5 * (2.0 * x).sin();
        // (a u')' = a' u' + a u''.
        let div = |x: f64| {
            let ux = (PI * (PI * x).cos() + (PI * x).sin()) * x.exp();
            let uxx = ((1.0 - PI * PI) * (PI * x).sin() + 2.0 * PI * (PI * x).cos()) * x.exp();
            (2.0 * x).cos() * ux + (1.0 + 0.5 * (2.0 * x).sin()) * uxx
        };
        let adv =
            |x: f64| (PI * x).sin() * x.exp() * (PI * (PI * x).cos() + (PI * x).sin()) * x.exp();
        let bc = Boundary::ZERO;
        assert_order(
            &orders_1d(bc, u, a, ux, |s, u, _| s.gradient(u)),
            2.0,
            "gradient",
        );
        assert_order(
            &orders_1d(bc, u, a, uxx, |s, u, _| s.laplacian(u)),
            2.0,
            "laplacian",
        );
        assert_order(
            &orders_1d(bc, u, a, adv, |s, u, _| s.advection(u)),
            2.0,
            "advection",
        );
        assert_order(
            &orders_1d(bc, u, a, adv, |s, u, _| s.advection_skew(u)),
            2.0,
            "skew advection",
        );
        for avg in [FaceAverage::Arithmetic, FaceAverage::Harmonic] {
            let o = orders_1d(bc, u, a, div, move |s, u, a| s.div_a_grad(u, a, avg));
            assert_order(&o, 2.0, &format!("div(a grad u), {avg:?}"));
        }
    }

    #[test]
    fn skew_symmetric_advection_conserves_energy() {
        // Σ_i u_i (u u_x)_i = 0 for any u with zero Dirichlet ends or on a periodic grid.
        let d = f64_device();
        let v: Vec<f64> = (0..12).map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.3).collect();
        let mut dirichlet = v.clone();
        dirichlet[0] = 0.0;
        dirichlet[11] = 0.0;
        for (bc, u) in [(Boundary::ZERO, dirichlet), (Boundary::Periodic, v)] {
            let s = Stencil1d::new(0.1, bc);
            let ut = tensor(u, [1, 12], &d);
            let e = vec((s.restrict(ut.clone()) * s.advection_skew(ut.clone())).sum())[0];
            let e_nc = vec((s.restrict(ut.clone()) * s.advection(ut)).sum())[0];
            assert!(
                e.abs() < 1e-14 && e_nc.abs() > 1e-3,
                "{bc:?}: {e} (non-conservative {e_nc})"
            );
        }
    }

    #[test]
    fn ghost_node_conditions_converge_at_second_order() {
        // Periodic: u = sin(2πx) on [0, 1); zero flux: u = cos(πx), u'(0) = u'(1) = 0.
        let o = orders_1d(
            Boundary::Periodic,
            |x| (2.0 * PI * x).sin(),
            |_| 1.0,
            |x| -4.0 * PI * PI * (2.0 * PI * x).sin(),
            |s, u, _| s.laplacian(u),
        );
        assert_order(&o, 2.0, "periodic laplacian");
        let o = orders_1d(
            Boundary::ZeroFlux,
            |x| (PI * x).cos(),
            |x| 2.0 + x * x * (1.0 - x) * (1.0 - x),
            |x| {
                let a = 2.0 + x * x * (1.0 - x) * (1.0 - x);
                let ax = 2.0 * x * (1.0 - x) * (1.0 - 2.0 * x);
                -ax * PI * (PI * x).sin() - a * PI * PI * (PI * x).cos()
            },
            |s, u, a| s.div_a_grad(u, a, FaceAverage::Harmonic),
        );
        // a'(0) = a'(1) = 0 too, so the mirrored coefficient is consistent.
        assert_order(&o, 2.0, "zero-flux div(a grad u)");
    }

    #[test]
    fn stencils_2d_converge_at_second_order() {
        let d = f64_device();
        let u = |x: f64, y: f64| (PI * x).sin() * (2.0 * PI * y).sin() * (x + y).exp();
        // Derivatives by nested closed forms.
        let ux = |x: f64, y: f64| {
            (2.0 * PI * y).sin() * (x + y).exp() * (PI * (PI * x).cos() + (PI * x).sin())
        };
        let uy = |x: f64, y: f64| {
            (PI * x).sin()
                * (x + y).exp()
                * (2.0 * PI * (2.0 * PI * y).cos() + (2.0 * PI * y).sin())
        };
        let uxx = |x: f64, y: f64| {
            (2.0 * PI * y).sin()
                * (x + y).exp()
                * ((1.0 - PI * PI) * (PI * x).sin() + 2.0 * PI * (PI * x).cos())
        };
        let uyy = |x: f64, y: f64| {
            (PI * x).sin()
                * (x + y).exp()
                * ((1.0 - 4.0 * PI * PI) * (2.0 * PI * y).sin() + 4.0 * PI * (2.0 * PI * y).cos())
        };
        let a = |x: f64, y: f64| 1.0 + x * x + 0.5 * y;
        let (ax, ay) = (|x: f64, _y: f64| 2.0 * x, |_x: f64, _y: f64| 0.5);
        // Errors at the nodes of the coarsest grid (common to all grids): the max over all
        // interior nodes would drift toward the boundary as h → 0 and blur the order.
        let mut errs = [vec![], vec![], vec![], vec![]];
        for cells in [16, 32, 64, 128] {
            let n = cells + 1;
            let g = crate::grid::Grid2d::unit_square(n);
            let h = 1.0 / cells as f64;
            let s = Stencil2d::square(h, Boundary::ZERO);
            let ut = tensor(g.eval(u), [1, n, n], &d);
            let at = tensor(g.eval(a), [1, n, n], &d);
            let inner = crate::grid::Grid2d::closed([h, 1.0 - h], [h, 1.0 - h], n - 2, n - 2);
            let stride = cells / 16;
            let common = |got: Vec<f64>, want: Vec<f64>| {
                got.iter()
                    .zip(&want)
                    .enumerate()
                    .filter(|(k, _)| {
                        (k / (n - 2) + 1) % stride == 0 && (k % (n - 2) + 1) % stride == 0
                    })
                    .fold(0.0f64, |m, (_, (g, w))| m.max((g - w).abs()))
            };
            let (gx, gy) = s.gradient(ut.clone());
            errs[0].push(common(vec(gx), inner.eval(ux)));
            errs[1].push(common(vec(gy), inner.eval(uy)));
            errs[2].push(common(
                vec(s.laplacian(ut.clone())),
                inner.eval(|x, y| uxx(x, y) + uyy(x, y)),
            ));
            errs[3].push(common(
                vec(s.div_a_grad(ut, at, FaceAverage::Harmonic)),
                inner.eval(|x, y| {
                    ax(x, y) * ux(x, y) + ay(x, y) * uy(x, y) + a(x, y) * (uxx(x, y) + uyy(x, y))
                }),
            ));
        }
        for (e, what) in errs
            .iter()
            .zip(["u_x", "u_y", "laplacian", "div(a grad u)"])
        {
            assert_order(&observed_orders(e), 2.0, what);
        }
    }

    #[test]
    fn theta_scheme_orders_in_time() {
        // u' = λu, u = e^{λt}: the scheme's residual on the exact trajectory is its truncation error.
        let d = f64_device();
        let lambda = -1.3;
        for (theta, p) in [(0.0, 1.0), (1.0, 1.0), (0.5, 2.0)] {
            let errs: Vec<f64> = [10, 20, 40, 80]
                .iter()
                .map(|&steps| {
                    let dt = 1.0 / steps as f64;
                    let u: Vec<f64> = (0..=steps)
                        .map(|n| (lambda * n as f64 * dt).exp())
                        .collect();
                    let f: Vec<f64> = u.iter().map(|v| lambda * v).collect();
                    let s = ThetaScheme { theta, dt };
                    let r = s.residual(
                        tensor(u, [1, steps + 1, 1], &d),
                        tensor(f, [1, steps + 1, 1], &d),
                    );
                    vec(r).iter().fold(0.0, |m, v| f64::max(m, v.abs()))
                })
                .collect();
            assert_order(&observed_orders(&errs), p, &format!("theta = {theta}"));
        }
    }
}
