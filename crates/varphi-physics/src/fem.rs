//! Weak-form (Galerkin) residuals on structured meshes, as tensor ops.
//!
//! For `−∇·(a∇u) = f` with piecewise-linear (1-D P1) or bilinear / split-triangle (2-D Q1 / P1)
//! elements, the Galerkin residual is
//!
//! ```text
//! r = A(a) u − M f,      A = Σ_e a_e K_e,   M = Σ_e M_e
//! ```
//!
//! with one coefficient value `a_e` per cell and the reference element stiffness `K_e` and mass
//! `M_e` matrices. `A u` is applied matrix-free: the field is sliced into the values at the
//! cells' corners, multiplied by the 2×2 or 4×4 element matrix, and scattered back to the nodes
//! by zero-padding and summing — batched tensor ops with no loop over cells or samples, so
//! autodiff reaches both `u` and `a`. Dirichlet conditions replace the boundary rows:
//! `r_i = u_i − g_i` (the PDDLVM form, primer eq. 29 with `r = A(u, z)u − f`).
//!
//! The same element matrices assemble the sparse matrices of the `f64` reference solvers
//! ([`Fem1d::assemble`], [`Fem2d::assemble`]), so the tensor residual of a reference solution is
//! zero to round-off.
//!
//! The residual is an integrated quantity: on a uniform mesh `r_i ≈ h^d (−∇·(a∇u) − f)(x_i)`.

use crate::fd::FaceAverage;
use burn::prelude::*;
use burn::tensor::ops::PadMode;
use serde::{Deserialize, Serialize};

/// `K` and `M` of the 1-D P1 element of length `h`: `K = [[1, −1], [−1, 1]]/h`,
/// `M = h/6 [[2, 1], [1, 2]]`.
fn p1_1d(h: f64) -> ([[f64; 2]; 2], [[f64; 2]; 2]) {
    (
        [[1.0 / h, -1.0 / h], [-1.0 / h, 1.0 / h]],
        [[h / 3.0, h / 6.0], [h / 6.0, h / 3.0]],
    )
}

/// Linear finite elements on a uniform 1-D mesh of `n` nodes (`n − 1` cells) with spacing `h`.
///
/// # Shapes
/// Fields `[batch, n]`; cell coefficients `[batch, n − 1]` (or batch 1, broadcast).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fem1d {
    /// Nodes, boundary included.
    pub n: usize,
    /// Cell length.
    pub h: f64,
}

impl Fem1d {
    /// A mesh of `n ≥ 3` nodes with spacing `h`.
    pub fn new(n: usize, h: f64) -> Self {
        assert!(n >= 3, "Fem1d needs at least 3 nodes, got {n}");
        Self { n, h }
    }

    /// Cell values from nodal values by averaging the two end nodes.
    pub fn cell_coefficients(&self, a: Tensor<2>, avg: FaceAverage) -> Tensor<2> {
        let n = a.dims()[1];
        avg.apply(a.clone().narrow(1, 0, n - 1), a.narrow(1, 1, n - 1))
    }

    /// `A(a) u` with `a` one value per cell.
    pub fn stiffness(&self, u: Tensor<2>, a_cells: Tensor<2>) -> Tensor<2> {
        let n = u.dims()[1];
        let flux =
            a_cells * (u.clone().narrow(1, 1, n - 1) - u.narrow(1, 0, n - 1)).div_scalar(self.h);
        // Cell e adds −flux to its left node and +flux to its right node.
        flux.clone().pad([(1, 0)], PadMode::Constant(0.0))
            - flux.pad([(0, 1)], PadMode::Constant(0.0))
    }

    /// `M f` for a nodal `f`.
    pub fn mass(&self, f: Tensor<2>) -> Tensor<2> {
        let n = f.dims()[1];
        let (_, m) = p1_1d(self.h);
        let (l, r) = (f.clone().narrow(1, 0, n - 1), f.narrow(1, 1, n - 1));
        let left = l.clone().mul_scalar(m[0][0]) + r.clone().mul_scalar(m[0][1]);
        let right = l.mul_scalar(m[1][0]) + r.mul_scalar(m[1][1]);
        left.pad([(0, 1)], PadMode::Constant(0.0)) + right.pad([(1, 0)], PadMode::Constant(0.0))
    }

    /// `A(a)u − M f` at interior nodes and `u − g` at the two ends: `[batch, n]`.
    pub fn residual(
        &self,
        u: Tensor<2>,
        a_cells: Tensor<2>,
        f: Tensor<2>,
        g: [f64; 2],
    ) -> Tensor<2> {
        let n = u.dims()[1];
        let r = self.stiffness(u.clone(), a_cells) - self.mass(f);
        Tensor::cat(
            vec![
                u.clone().narrow(1, 0, 1).sub_scalar(g[0]),
                r.narrow(1, 1, n - 2),
                u.narrow(1, n - 1, 1).sub_scalar(g[1]),
            ],
            1,
        )
    }

    /// Triplets `(row, col, value)` of the full `n × n` stiffness matrix for cell values
    /// `a_cells` (duplicates are meant to be summed).
    pub fn assemble(&self, a_cells: &[f64]) -> Vec<(usize, usize, f64)> {
        let (k, _) = p1_1d(self.h);
        let mut t = Vec::with_capacity(4 * a_cells.len());
        for (e, &a) in a_cells.iter().enumerate() {
            for (p, row) in k.iter().enumerate() {
                for (q, kv) in row.iter().enumerate() {
                    t.push((e + p, e + q, a * kv));
                }
            }
        }
        t
    }

    /// `M f` on the CPU.
    pub fn mass_vector(&self, f: &[f64]) -> Vec<f64> {
        let (_, m) = p1_1d(self.h);
        let mut out = vec![0.0; f.len()];
        for e in 0..f.len() - 1 {
            out[e] += m[0][0] * f[e] + m[0][1] * f[e + 1];
            out[e + 1] += m[1][0] * f[e] + m[1][1] * f[e + 1];
        }
        out
    }
}

/// Element family on a structured 2-D mesh of rectangles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Element2d {
    /// Bilinear elements on the rectangles.
    #[default]
    Q1,
    /// Linear elements on triangles, each rectangle split along its (0,0)–(1,1) diagonal.
    P1,
}

/// The four corners of a cell, local index `a + 2b` for the corner at offset `(a, b)`.
const CORNERS: [(usize, usize); 4] = [(0, 0), (1, 0), (0, 1), (1, 1)];

impl Element2d {
    /// Cell stiffness (for `a = 1`) and mass matrices of a `hx × hy` cell, local corner order
    /// `(0,0), (1,0), (0,1), (1,1)`.
    pub fn matrices(&self, hx: f64, hy: f64) -> ([[f64; 4]; 4], [[f64; 4]; 4]) {
        let mut k = [[0.0; 4]; 4];
        let mut m = [[0.0; 4]; 4];
        match self {
            Element2d::Q1 => {
                // Tensor products of the 1-D matrices: K = Kx⊗My + Mx⊗Ky.
                let (kx, mx) = p1_1d(hx);
                let (ky, my) = p1_1d(hy);
                for (p, &(a, b)) in CORNERS.iter().enumerate() {
                    for (q, &(c, d)) in CORNERS.iter().enumerate() {
                        k[p][q] = kx[a][c] * my[b][d] + mx[a][c] * ky[b][d];
                        m[p][q] = mx[a][c] * my[b][d];
                    }
                }
            }
            Element2d::P1 => {
                for tri in [[0usize, 1, 3], [0, 3, 2]] {
                    let pts: Vec<(f64, f64)> = tri
                        .iter()
                        .map(|&c| (CORNERS[c].0 as f64 * hx, CORNERS[c].1 as f64 * hy))
                        .collect();
                    let det = (pts[1].0 - pts[0].0) * (pts[2].1 - pts[0].1)
                        - (pts[2].0 - pts[0].0) * (pts[1].1 - pts[0].1);
                    let area = det.abs() / 2.0;
                    // ∇φ_i = (y_j − y_k, x_k − x_j) / det for (i, j, k) cyclic.
                    let grad: Vec<(f64, f64)> = (0..3)
                        .map(|i| {
                            let (j, l) = ((i + 1) % 3, (i + 2) % 3);
                            ((pts[j].1 - pts[l].1) / det, (pts[l].0 - pts[j].0) / det)
                        })
                        .collect();
                    for i in 0..3 {
                        for j in 0..3 {
                            k[tri[i]][tri[j]] +=
                                area * (grad[i].0 * grad[j].0 + grad[i].1 * grad[j].1);
                            m[tri[i]][tri[j]] += area / 12.0 * if i == j { 2.0 } else { 1.0 };
                        }
                    }
                }
            }
        }
        (k, m)
    }
}

/// Finite elements on a uniform `nx × ny` node mesh of the rectangle, `x` along axis 1.
///
/// # Shapes
/// Fields `[batch, nx, ny]`; cell coefficients `[batch, nx − 1, ny − 1]` (or batch 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fem2d {
    /// Nodes along `x`.
    pub nx: usize,
    /// Nodes along `y`.
    pub ny: usize,
    /// Cell width.
    pub hx: f64,
    /// Cell height.
    pub hy: f64,
    /// Element family.
    pub element: Element2d,
    k: [[f64; 4]; 4],
    m: [[f64; 4]; 4],
}

impl Fem2d {
    /// A mesh of `nx × ny ≥ 3 × 3` nodes.
    pub fn new(nx: usize, ny: usize, hx: f64, hy: f64, element: Element2d) -> Self {
        assert!(
            nx >= 3 && ny >= 3,
            "Fem2d needs at least 3 × 3 nodes, got {nx} × {ny}"
        );
        let (k, m) = element.matrices(hx, hy);
        Self {
            nx,
            ny,
            hx,
            hy,
            element,
            k,
            m,
        }
    }

    /// The unit square with `n × n` nodes.
    pub fn unit_square(n: usize, element: Element2d) -> Self {
        let h = 1.0 / (n - 1) as f64;
        Self::new(n, n, h, h, element)
    }

    /// Cell values from nodal values by averaging the four corners.
    pub fn cell_coefficients(&self, a: Tensor<3>, avg: FaceAverage) -> Tensor<3> {
        let c = corners(a);
        match avg {
            FaceAverage::Arithmetic => {
                (c[0].clone() + c[1].clone() + c[2].clone() + c[3].clone()).mul_scalar(0.25)
            }
            FaceAverage::Harmonic => (c[0].clone().recip()
                + c[1].clone().recip()
                + c[2].clone().recip()
                + c[3].clone().recip())
            .recip()
            .mul_scalar(4.0),
        }
    }

    fn apply(&self, u: Tensor<3>, local: &[[f64; 4]; 4], weight: Option<Tensor<3>>) -> Tensor<3> {
        let c = corners(u);
        let mut out: Option<Tensor<3>> = None;
        for (p, &(a, b)) in CORNERS.iter().enumerate() {
            let mut y: Option<Tensor<3>> = None;
            for (q, cq) in c.iter().enumerate() {
                if local[p][q] != 0.0 {
                    let term = cq.clone().mul_scalar(local[p][q]);
                    y = Some(match y {
                        Some(y) => y + term,
                        None => term,
                    });
                }
            }
            let mut y = y.expect("every element matrix row has a non-zero");
            if let Some(w) = &weight {
                y = y * w.clone();
            }
            let y = y.pad([(a, 1 - a), (b, 1 - b)], PadMode::Constant(0.0));
            out = Some(match out {
                Some(o) => o + y,
                None => y,
            });
        }
        out.expect("four corners")
    }

    /// `A(a) u` with `a` one value per cell.
    pub fn stiffness(&self, u: Tensor<3>, a_cells: Tensor<3>) -> Tensor<3> {
        self.apply(u, &self.k, Some(a_cells))
    }

    /// `M f` for a nodal `f`.
    pub fn mass(&self, f: Tensor<3>) -> Tensor<3> {
        self.apply(f, &self.m, None)
    }

    /// `A(a)u − M f` at interior nodes and `u − g` on the boundary (row replacement):
    /// `[batch, nx, ny]`.
    pub fn residual(&self, u: Tensor<3>, a_cells: Tensor<3>, f: Tensor<3>, g: f64) -> Tensor<3> {
        let device = u.device();
        let inside = crate::boundary::Mask::interior(&[self.nx, self.ny]).tensor::<3>(&device);
        let r = self.stiffness(u.clone(), a_cells) - self.mass(f);
        r * inside.clone() + u.sub_scalar(g) * inside.neg().add_scalar(1.0)
    }

    /// Triplets `(row, col, value)` of the full stiffness matrix (node `(i, j)` is row
    /// `i·ny + j`) for cell values `a_cells` (`[nx − 1, ny − 1]` row-major); duplicates are meant
    /// to be summed.
    pub fn assemble(&self, a_cells: &[f64]) -> Vec<(usize, usize, f64)> {
        self.assemble_with(&self.k, Some(a_cells))
    }

    /// Triplets of the mass matrix.
    pub fn assemble_mass(&self) -> Vec<(usize, usize, f64)> {
        self.assemble_with(&self.m, None)
    }

    fn assemble_with(&self, local: &[[f64; 4]; 4], a: Option<&[f64]>) -> Vec<(usize, usize, f64)> {
        let (ex, ey) = (self.nx - 1, self.ny - 1);
        let mut t = Vec::with_capacity(16 * ex * ey);
        for i in 0..ex {
            for j in 0..ey {
                let w = a.map_or(1.0, |a| a[i * ey + j]);
                let node = |c: usize| (i + CORNERS[c].0) * self.ny + j + CORNERS[c].1;
                for (p, row) in local.iter().enumerate() {
                    for (q, &v) in row.iter().enumerate() {
                        if v != 0.0 {
                            t.push((node(p), node(q), w * v));
                        }
                    }
                }
            }
        }
        t
    }
}

/// The field at the four corners of every cell, `[batch, nx − 1, ny − 1]` each, in local order.
fn corners(u: Tensor<3>) -> [Tensor<3>; 4] {
    let [_, nx, ny] = u.dims();
    CORNERS.map(|(a, b)| u.clone().narrow(1, a, nx - 1).narrow(2, b, ny - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f64_device, observed_orders, tensor, vec};
    use std::f64::consts::PI;

    #[test]
    fn element_matrices_have_the_textbook_entries() {
        // Q1 on a square: diagonal 2/3, edge neighbours −1/6, opposite corner −1/3.
        let (k, m) = Element2d::Q1.matrices(0.5, 0.5);
        assert!((k[0][0] - 2.0 / 3.0).abs() < 1e-15 && (k[0][1] + 1.0 / 6.0).abs() < 1e-15);
        assert!((k[0][3] + 1.0 / 3.0).abs() < 1e-15);
        assert!((m.iter().flatten().sum::<f64>() - 0.25).abs() < 1e-15);
        // P1 split cells assemble to the 5-point Laplacian: no coupling across the diagonal.
        let (k, m) = Element2d::P1.matrices(0.5, 0.5);
        assert!(k[0][3].abs() < 1e-15 && k[1][2].abs() < 1e-15);
        assert!((k[0][0] - 1.0).abs() < 1e-15 && (k[0][1] + 0.5).abs() < 1e-15);
        assert!((m.iter().flatten().sum::<f64>() - 0.25).abs() < 1e-15);
        for (k, _) in [
            Element2d::Q1.matrices(0.3, 0.7),
            Element2d::P1.matrices(0.3, 0.7),
        ] {
            // Constants are in the kernel.
            assert!(k.iter().all(|row| row.iter().sum::<f64>().abs() < 1e-13));
        }
    }

    #[test]
    fn tensor_residual_matches_assembled_matrix() {
        let d = f64_device();
        let fem = Fem2d::new(5, 4, 0.25, 1.0 / 3.0, Element2d::Q1);
        let u: Vec<f64> = (0..20).map(|i| ((i * 7 % 11) as f64).sin()).collect();
        let a: Vec<f64> = (0..12).map(|i| 1.0 + (i % 5) as f64).collect();
        let got = vec(fem.stiffness(
            tensor(u.clone(), [1, 5, 4], &d),
            tensor(a.clone(), [1, 4, 3], &d),
        ));
        let mut want = vec![0.0; 20];
        for (r, c, v) in fem.assemble(&a) {
            want[r] += v * u[c];
        }
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-13, "{got:?} vs {want:?}");
        }
        let fem1 = Fem1d::new(5, 0.25);
        let got = vec(fem1.stiffness(
            tensor(u[..5].to_vec(), [1, 5], &d),
            tensor(a[..4].to_vec(), [1, 4], &d),
        ));
        let mut want = vec![0.0; 5];
        for (r, c, v) in fem1.assemble(&a[..4]) {
            want[r] += v * u[c];
        }
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-13);
        }
    }

    /// Consistency of the weak residual: max over interior nodes of `|r_i| / h^d` for the exact
    /// solution's nodal values, with `f` interpolated at the nodes.
    #[test]
    fn weak_residuals_are_second_order_consistent() {
        let d = f64_device();
        // 1-D: −(a u')' = f, u = sin(πx), a = 1 + x on [0, 1], a averaged onto cells.
        let errs: Vec<f64> = [16, 32, 64, 128]
            .iter()
            .map(|&cells| {
                let n = cells + 1;
                let h = 1.0 / cells as f64;
                let x: Vec<f64> = (0..n).map(|i| i as f64 * h).collect();
                let u: Vec<f64> = x.iter().map(|x| (PI * x).sin()).collect();
                let a: Vec<f64> = x.iter().map(|x| 1.0 + x).collect();
                let f: Vec<f64> = x
                    .iter()
                    .map(|x| -(PI * (PI * x).cos()) + (1.0 + x) * PI * PI * (PI * x).sin())
                    .collect();
                let fem = Fem1d::new(n, h);
                let ac = fem.cell_coefficients(tensor(a, [1, n], &d), FaceAverage::Arithmetic);
                let r =
                    vec(fem.residual(tensor(u, [1, n], &d), ac, tensor(f, [1, n], &d), [0.0, 0.0]));
                r.iter().fold(0.0, |m, v| f64::max(m, v.abs())) / h
            })
            .collect();
        let o = observed_orders(&errs);
        assert!(
            o.iter().all(|o| (o - 2.0).abs() <= 0.2),
            "1-D P1: {o:?} ({errs:?})"
        );
        // 2-D: u = sin(πx) sin(πy), a = 1 + xy.
        for element in [Element2d::Q1, Element2d::P1] {
            let errs: Vec<f64> = [8, 16, 32, 64]
                .iter()
                .map(|&cells| {
                    let n = cells + 1;
                    let h = 1.0 / cells as f64;
                    let g = crate::grid::Grid2d::unit_square(n);
                    let u = g.eval(|x, y| (PI * x).sin() * (PI * y).sin());
                    let a = g.eval(|x, y| 1.0 + x * y);
                    let f = g.eval(|x, y| {
                        let (s, c) = ((PI * x).sin(), (PI * x).cos());
                        let (sy, cy) = ((PI * y).sin(), (PI * y).cos());
                        -(y * PI * c * sy + x * PI * s * cy)
                            + (1.0 + x * y) * 2.0 * PI * PI * s * sy
                    });
                    let fem = Fem2d::unit_square(n, element);
                    let ac =
                        fem.cell_coefficients(tensor(a, [1, n, n], &d), FaceAverage::Arithmetic);
                    let r = vec(fem.residual(
                        tensor(u, [1, n, n], &d),
                        ac,
                        tensor(f, [1, n, n], &d),
                        0.0,
                    ));
                    r.iter().fold(0.0, |m, v| f64::max(m, v.abs())) / (h * h)
                })
                .collect();
            let o = observed_orders(&errs);
            assert!(
                o.iter().all(|o| (o - 2.0).abs() <= 0.2),
                "2-D {element:?}: {o:?} ({errs:?})"
            );
        }
    }
}
