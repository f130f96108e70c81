//! 1-D nonlinear Poisson equation (the RGNP set-up).
//!
//! ```text
//! −(k(u, x) u′)′ = w  on (−1, 1),   u(±1) = 0,
//! k(u, x) = log(1 + exp(u s(x))) + 0.1,   s(x) = Σ_{i<5} z_i T_i(x)   (Chebyshev T_i)
//! z ~ U[−1, 1]^5,  w ~ U[1, 2]
//! ```
//!
//! Discretisation: linear elements on `n` nodes with `k` evaluated at the cell midpoints (the
//! same as the conservative finite-difference scheme times `h`):
//!
//! ```text
//! r_i = F_{i−½} − F_{i+½} − w h,   F_{e} = k(ū_e, x_e)(u_{e+1} − u_e)/h,   ū_e = (u_e + u_{e+1})/2
//! ```
//!
//! with `r = u_0` and `r = u_{n−1}` as boundary rows. The reference solver is Newton's method on
//! the same equations (tridiagonal Jacobian, faer sparse LU).

use super::{
    PdeResidual, PointJet, Preconditioner, Problem, Residual, StrongForm, check_range,
    check_shapes, uniform,
};
use crate::error::PhysicsError;
use crate::{grid::Grid1d, sparse};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softplus};
use serde::{Deserialize, Serialize};

/// Settings of the nonlinear Poisson problem.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NonlinearPoissonSettings {
    /// Nodes on [−1, 1], both ends included.
    pub grid: usize,
    /// Range of each Chebyshev coefficient `z_i`.
    #[serde(default = "z_range")]
    pub z: [f64; 2],
    /// Range of the source `w`.
    #[serde(default = "w_range")]
    pub w: [f64; 2],
}

fn z_range() -> [f64; 2] {
    [-1.0, 1.0]
}
fn w_range() -> [f64; 2] {
    [1.0, 2.0]
}

impl NonlinearPoissonSettings {
    /// The RGNP ranges on `grid` nodes.
    pub fn rgnp(grid: usize) -> Self {
        Self {
            grid,
            z: z_range(),
            w: w_range(),
        }
    }

    /// Check ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.grid < 3 {
            return Err(format!("grid must be at least 3 nodes, got {}", self.grid));
        }
        check_range("z", self.z, false)?;
        check_range("w", self.w, false)
    }
}

/// Number of Chebyshev coefficients.
const N_CHEB: usize = 5;

fn chebyshev(x: f64) -> [f64; N_CHEB] {
    let mut t = [1.0, x, 0.0, 0.0, 0.0];
    for i in 2..N_CHEB {
        t[i] = 2.0 * x * t[i - 1] - t[i - 2];
    }
    t
}

/// The nonlinear Poisson problem.
#[derive(Debug, Clone)]
pub struct NonlinearPoisson {
    /// Settings.
    pub settings: NonlinearPoissonSettings,
    grid: Grid1d,
    /// Midpoints of the cells.
    mid: Vec<f64>,
}

impl NonlinearPoisson {
    /// Build the problem.
    pub fn new(settings: NonlinearPoissonSettings) -> Self {
        let grid = Grid1d::closed(-1.0, 1.0, settings.grid);
        let mid = grid.x.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
        Self {
            settings,
            grid,
            mid,
        }
    }

    /// `s(x_e) = Σ z_i T_i(x_e)` at the cell midpoints.
    fn slope(&self, z: &[f64]) -> Vec<f64> {
        self.mid
            .iter()
            .map(|&x| chebyshev(x).iter().zip(z).map(|(t, z)| t * z).sum())
            .collect()
    }

    /// Residual rows `r_1..r_{n−2}` and the Jacobian triplets w.r.t. the interior unknowns.
    fn residual_and_jacobian(
        &self,
        u: &[f64],
        s: &[f64],
        w: f64,
    ) -> (Vec<f64>, Vec<(usize, usize, f64)>) {
        let n = u.len();
        let h = self.grid.dx;
        // Per cell e: flux and its derivatives w.r.t. u_e (left) and u_{e+1} (right).
        let cell: Vec<(f64, f64, f64)> = (0..n - 1)
            .map(|e| {
                let ub = 0.5 * (u[e] + u[e + 1]);
                let arg = ub * s[e];
                let k = arg.max(0.0) + (-arg.abs()).exp().ln_1p() + 0.1;
                let dk = s[e] / (1.0 + (-arg).exp());
                let du = (u[e + 1] - u[e]) / h;
                (k * du, 0.5 * dk * du - k / h, 0.5 * dk * du + k / h)
            })
            .collect();
        let m = n - 2;
        let mut r = vec![0.0; m];
        let mut t = Vec::with_capacity(3 * m);
        for i in 1..n - 1 {
            let row = i - 1;
            r[row] = cell[i - 1].0 - cell[i].0 - w * h;
            // ∂F_{i−1}/∂u_{i−1}, ∂F_{i−1}/∂u_i, −∂F_i/∂u_i, −∂F_i/∂u_{i+1}.
            if i > 1 {
                t.push((row, row - 1, cell[i - 1].1));
            }
            t.push((row, row, cell[i - 1].2 - cell[i].1));
            if i < n - 2 {
                t.push((row, row + 1, -cell[i].2));
            }
        }
        (r, t)
    }
}

impl PdeResidual for NonlinearPoisson {
    fn solution_shape(&self) -> Vec<usize> {
        vec![self.settings.grid]
    }

    fn param_dim(&self) -> usize {
        N_CHEB + 1
    }

    fn residual(&self, u: Tensor<2>, z: Tensor<2>) -> Residual {
        let n = self.settings.grid;
        check_shapes("poisson1d", &u, &z, n, N_CHEB + 1);
        let device = u.device();
        let h = self.grid.dx;
        // T [5, n − 1]: Chebyshev polynomials at the midpoints.
        let t: Vec<f64> = (0..N_CHEB)
            .flat_map(|i| self.mid.iter().map(move |&x| chebyshev(x)[i]))
            .collect();
        let t = Tensor::<2>::from_data(TensorData::new(t, [N_CHEB, n - 1]), &device);
        let s = z.clone().narrow(1, 0, N_CHEB).matmul(t);
        let w = z.narrow(1, N_CHEB, 1);
        let (left, right) = (u.clone().narrow(1, 0, n - 1), u.clone().narrow(1, 1, n - 1));
        let ubar = (left.clone() + right.clone()).mul_scalar(0.5);
        let k = softplus(ubar * s, 1.0).add_scalar(0.1);
        let flux = k * (right - left).div_scalar(h);
        let pde = flux.clone().narrow(1, 0, n - 2) - flux.narrow(1, 1, n - 2) - w.mul_scalar(h);
        Residual {
            pde,
            boundary: Tensor::cat(vec![u.clone().narrow(1, 0, 1), u.narrow(1, n - 1, 1)], 1),
        }
    }

    /// `K₀⁻¹` with `K₀` the stiffness matrix of `k = 1` (so `K₀⁻¹ r ≈ k (u − u*)`).
    fn preconditioner(&self) -> Option<Preconditioner> {
        Preconditioner::from_spd(self.settings.grid - 2, &self.unit_stiffness()).ok()
    }
}

impl NonlinearPoisson {
    /// The unit-coefficient stiffness matrix `tridiag(−1, 2, −1)/h` on the interior nodes.
    fn unit_stiffness(&self) -> Vec<(usize, usize, f64)> {
        let m = self.settings.grid - 2;
        let h = self.grid.dx;
        (0..m)
            .flat_map(|i| {
                let mut t = vec![(i, i, 2.0 / h)];
                if i > 0 {
                    t.push((i, i - 1, -1.0 / h));
                }
                if i + 1 < m {
                    t.push((i, i + 1, -1.0 / h));
                }
                t
            })
            .collect()
    }
}

impl Problem for NonlinearPoisson {
    fn name(&self) -> &'static str {
        "poisson1d"
    }

    fn param_names(&self) -> Vec<String> {
        vec![
            "z0".into(),
            "z1".into(),
            "z2".into(),
            "z3".into(),
            "z4".into(),
            "w".into(),
        ]
    }

    fn prior_transform(&self) -> Option<super::PriorTransform> {
        let (z, w) = (self.settings.z, self.settings.w);
        let mut lo = vec![z[0]; N_CHEB];
        let mut hi = vec![z[1]; N_CHEB];
        lo.push(w[0]);
        hi.push(w[1]);
        Some(super::PriorTransform::Uniform { lo, hi })
    }

    fn sample_params(&self, rng: &mut dyn rand::RngCore) -> Vec<f64> {
        let mut z: Vec<f64> = (0..N_CHEB).map(|_| uniform(rng, self.settings.z)).collect();
        z.push(uniform(rng, self.settings.w));
        z
    }

    fn solve(&self, z: &[f64]) -> Result<Vec<f64>, PhysicsError> {
        const SOLVER: &str = "poisson1d (Newton)";
        if z.len() != N_CHEB + 1 {
            return Err(PhysicsError::Shape(format!(
                "poisson1d: expected 6 parameters [z0..z4, w], got {}",
                z.len()
            )));
        }
        let n = self.settings.grid;
        let s = self.slope(&z[..N_CHEB]);
        let w = z[N_CHEB];
        let tol = 1e-11 * (w.abs() * self.grid.dx).max(1e-300);
        // Unknowns: the interior nodes; the ends are fixed at 0.
        let full = |inner: &[f64]| {
            let mut u = vec![0.0; n];
            u[1..n - 1].copy_from_slice(inner);
            u
        };
        let inner = sparse::newton(
            vec![0.0; n - 2],
            |x| self.residual_and_jacobian(&full(x), &s, w),
            tol,
            50,
            SOLVER,
        )?;
        Ok(full(&inner))
    }

    fn coordinates(&self) -> Vec<(&'static str, Vec<f64>)> {
        vec![("x", self.grid.x.clone())]
    }

    fn observable(&self) -> Vec<usize> {
        (1..self.settings.grid - 1).collect()
    }

    fn strong_form(&self) -> Option<&dyn StrongForm> {
        Some(self)
    }
}

/// The strong form on (−1, 1) with `u(±1) = 0`, expanded by the chain rule:
///
/// ```text
/// R = −(k u′)′ − w = −(k_u u′ + k_x) u′ − k u″ − w,
/// k_u = σ(u s) s,   k_x = σ(u s) u s′,   σ the logistic function (softplus′)
/// ```
impl StrongForm for NonlinearPoisson {
    fn domain(&self) -> Vec<[f64; 2]> {
        vec![[-1.0, 1.0]]
    }

    fn strong_residual(&self, x: Tensor<2>, u: &PointJet, z: Tensor<2>) -> Tensor<2> {
        let rows = x.dims()[0];
        assert!(
            x.dims()[1] == 1 && z.dims() == [rows, N_CHEB + 1],
            "poisson1d strong residual: expected x [rows, 1] and z [rows, {}], got {:?} and {:?}",
            N_CHEB + 1,
            x.dims(),
            z.dims()
        );
        // T_i and T_i′ by the recurrences T_{i+1} = 2x T_i − T_{i−1},
        // T′_{i+1} = 2T_i + 2x T′_i − T′_{i−1}.
        let one = Tensor::<2>::ones([rows, 1], &x.device());
        let mut t = vec![one.clone(), x.clone()];
        let mut dt = vec![one.zeros_like(), one];
        for i in 1..N_CHEB - 1 {
            t.push(x.clone().mul(t[i].clone()).mul_scalar(2.0) - t[i - 1].clone());
            dt.push(
                (t[i].clone() + x.clone().mul(dt[i].clone())).mul_scalar(2.0) - dt[i - 1].clone(),
            );
        }
        let coef = |i: usize| z.clone().narrow(1, i, 1);
        let s = (0..N_CHEB)
            .map(|i| coef(i) * t[i].clone())
            .reduce(|a, b| a + b)
            .expect("5 terms");
        let ds = (0..N_CHEB)
            .map(|i| coef(i) * dt[i].clone())
            .reduce(|a, b| a + b)
            .expect("5 terms");
        let (v, ux, uxx) = (u.u.clone(), u.grad[0].clone(), u.hess[0][0].clone());
        let arg = v.clone() * s.clone();
        let k = softplus(arg.clone(), 1.0).add_scalar(0.1);
        let logistic = sigmoid(arg);
        let k_u = logistic.clone() * s;
        let k_x = logistic * v * ds;
        let flux_x = (k_u * ux.clone() + k_x) * ux + k * uxx;
        flux_x.neg() - coef(N_CHEB)
    }

    fn dirichlet_points(&self) -> Vec<Vec<f64>> {
        vec![vec![-1.0], vec![1.0]]
    }
}

impl Default for NonlinearPoissonSettings {
    fn default() -> Self {
        Self::rgnp(65)
    }
}
