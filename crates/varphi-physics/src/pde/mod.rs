//! PDE definitions: one type per problem, each with a differentiable residual
//! ([`PdeResidual`]), a parameter prior and an `f64` reference solver ([`Problem`]).
//!
//! | problem | equation | parameters `z` | solution `u` |
//! |---|---|---|---|
//! | [`Darcy`] | `−∇·(a∇u) = f` on (0,1)², `u = 0` on ∂ | nodal `a`, `[n·n]` | `[n, n]` |
//! | [`NonlinearPoisson`] | `−(k(u,x)u′)′ = w` on (−1,1), `u(±1) = 0` | `[z_0..z_4, w]` | `[n]` |
//! | [`Burgers`] | `u_t + z1 u u_x − z0 u_xx = 0` | `[z0, z1, c]` | `[T+1, n]` |
//! | [`AdvectionDiffusion`] | `u_t = D u_xx − c u_x` | `[D, c, a]` | `[T, n]` |
//! | [`Pendulum`] | `θ″ = Aω² cos(2πft) − γθ′ − ω² sin θ` | `[θ0, ω, γ, A, f]` | `[T]` |

use crate::error::PhysicsError;
use burn::prelude::*;
use rand::Rng;

mod advection_diffusion;
mod burgers;
mod darcy;
mod pendulum;
mod poisson;
mod prior;
#[cfg(test)]
mod tests;

pub use advection_diffusion::{AdvectionDiffusion, AdvectionDiffusionSettings};
pub use burgers::{AdvectionForm, Burgers, BurgersSettings};
pub use darcy::{Darcy, DarcyCoefficient, DarcyDiscretisation, DarcySettings};
pub use pendulum::{Pendulum, PendulumSettings};
pub use poisson::{NonlinearPoisson, NonlinearPoissonSettings};
pub use prior::PriorTransform;

/// A residual split into the rows where the PDE is imposed and the rows of the boundary and
/// initial conditions, so that a likelihood can give each its own noise scale.
#[derive(Debug, Clone)]
pub struct Residual {
    /// PDE rows, `[batch, n_pde]`.
    pub pde: Tensor<2>,
    /// Boundary / initial-condition rows, `[batch, n_bc]`.
    pub boundary: Tensor<2>,
}

impl Residual {
    /// All rows, `[batch, n_pde + n_bc]`.
    pub fn all(self) -> Tensor<2> {
        Tensor::cat(vec![self.pde, self.boundary], 1)
    }
}

/// A fixed linear map `P⁻¹` applied to the PDE rows of a residual, `r ↦ P⁻¹ r`.
///
/// With `P` the operator of the PDE at a reference coefficient (e.g. the unit-coefficient
/// Laplacian or stiffness matrix, symmetric; or the block lower-bidiagonal space–time operator
/// of a time-stepping scheme, not symmetric), `P⁻¹ r(u) ≈ u − u*` behaves like a solution
/// error: a Gaussian virtual observation on it has condition number ~1 instead of `cond(P)²`
/// for the raw residual, which is what makes physics-only training of surrogates practical
/// (docs/physics.md). `r = 0 ⟺ P⁻¹ r = 0`, so the constraint is the same; only the noise
/// model changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Preconditioner {
    /// Number of PDE rows.
    pub n: usize,
    /// `P⁻¹`, row-major `[n, n]`.
    pub inverse: Vec<f64>,
}

impl Preconditioner {
    /// `P⁻¹` of a sparse symmetric positive-definite `P` given as triplets (dense result: meant
    /// for up to a few thousand rows).
    pub fn from_spd(n: usize, triplets: &[(usize, usize, f64)]) -> Result<Self, PhysicsError> {
        let inverse = crate::sparse::inverse_spd(n, triplets, "preconditioner")?;
        Ok(Self { n, inverse })
    }

    /// A dense `P⁻¹` given row-major, `[n, n]`.
    pub fn from_inverse(n: usize, inverse: Vec<f64>) -> Self {
        assert_eq!(inverse.len(), n * n, "Preconditioner: P⁻¹ must be [n, n]");
        Self { n, inverse }
    }

    /// `P⁻ᵀ` as a `[n, n]` tensor on `device`, the factor that maps residual *rows*:
    /// `r P⁻ᵀ = (P⁻¹ rᵀ)ᵀ` (build once, reuse with [`Self::apply_with`]).
    pub fn tensor(&self, device: &Device) -> Tensor<2> {
        Tensor::<2>::from_data(
            TensorData::new(self.inverse.clone(), [self.n, self.n]),
            device,
        )
        .transpose()
    }

    /// The residual with its PDE rows mapped by `P⁻¹` (a tensor from [`Self::tensor`]).
    pub fn apply_with(inverse: &Tensor<2>, r: Residual) -> Residual {
        Residual {
            pde: r.pde.matmul(inverse.clone()),
            boundary: r.boundary,
        }
    }
}

/// A differentiable residual `r(u, z)` of a discretised PDE for a batch of solutions `u` and
/// parameters `z`, built from tensor ops so gradients reach both.
///
/// # Shapes
/// - `u`: `[batch, Π solution_shape]` (flattened row-major)
/// - `z`: `[batch, param_dim]`
pub trait PdeResidual {
    /// Shape of one solution.
    fn solution_shape(&self) -> Vec<usize>;
    /// Number of parameters per sample.
    fn param_dim(&self) -> usize;
    /// The residual of `u` given `z`.
    fn residual(&self, u: Tensor<2>, z: Tensor<2>) -> Residual;
    /// A preconditioner for the PDE rows (the operator at a reference coefficient), if the
    /// problem has one. Default: none.
    fn preconditioner(&self) -> Option<Preconditioner> {
        None
    }
    /// A preconditioner linearised at each solution (Gauss–Newton), for problems whose
    /// Jacobian makes that cheap. Default: none.
    fn linearised(&self) -> Option<&dyn LinearisedPreconditioner> {
        None
    }
}

/// The PDE rows of a residual mapped by the inverse of the residual's own Jacobian at the
/// solution it was evaluated at, `r ↦ J(u)⁻¹ r` with `J = ∂r_pde/∂u` over the unknowns the PDE
/// rows determine (the others are fixed by boundary rows).
///
/// `J(u)⁻¹ r(u)` is the Newton step `u − u*` to first order, for any coefficient and state,
/// where a [`Preconditioner`] at a reference coefficient is exact only there. `J` is built
/// from detached values, so gradients pass through `r` alone: the gradient of
/// `‖J(u₀)⁻¹ r(u)‖²/2` at `u = u₀` is `J⁻¹ r`, the Newton direction.
pub trait LinearisedPreconditioner {
    /// `J(u)⁻¹ r` for solutions `u` `[b, Π shape]`, physical parameters `z` `[b, p]` and the
    /// PDE rows `r` `[b, n_pde]` of their residual; returns `[b, n_pde]`.
    fn apply_linearised(&self, u: &Tensor<2>, z: &Tensor<2>, pde: Tensor<2>) -> Tensor<2>;
}

/// A problem with a parameter prior and a reference solver (CPU, `f64`).
pub trait Problem: PdeResidual {
    /// Short name (`darcy`, `poisson1d`, ...).
    fn name(&self) -> &'static str;
    /// Names of the parameters, or of the parameter field.
    fn param_names(&self) -> Vec<String>;
    /// One draw from the parameter prior.
    fn sample_params(&self, rng: &mut dyn rand::RngCore) -> Vec<f64>;
    /// The reference solution for parameters `z`, row-major in [`PdeResidual::solution_shape`].
    fn solve(&self, z: &[f64]) -> Result<Vec<f64>, PhysicsError>;
    /// Named coordinate arrays of the solution's axes (`x`, `y`, `t`).
    fn coordinates(&self) -> Vec<(&'static str, Vec<f64>)>;
    /// The prior as a differentiable map from standard normals ([`PriorTransform`]), where one
    /// exists (not for thresholded fields). Default: none.
    fn prior_transform(&self) -> Option<PriorTransform> {
        None
    }
    /// Flat indices of the solution entries a sensor can observe (not fixed by a boundary or
    /// initial condition). Default: all.
    fn observable(&self) -> Vec<usize> {
        (0..self.solution_shape().iter().product()).collect()
    }
    /// The PDE's pointwise strong form, for problems that have one in closed form (PINN
    /// residuals). Default: none.
    fn strong_form(&self) -> Option<&dyn StrongForm> {
        None
    }
}

/// A solution and its coordinate derivatives at collocation points, each `[rows, 1]` (e.g. from
/// a coordinate network's Taylor-mode jet).
#[derive(Debug, Clone)]
pub struct PointJet {
    /// `u(x_j)`.
    pub u: Tensor<2>,
    /// `∂u/∂x_k`, one per coordinate.
    pub grad: Vec<Tensor<2>>,
    /// `∂²u/∂x_k∂x_l`, `hess[k][l]`.
    pub hess: Vec<Vec<Tensor<2>>>,
}

/// The strong form of a PDE evaluated pointwise, for collocation (PINN) residuals of networks
/// `u(x; z)` of the coordinates: `R(x; u, z) = 0` in a box domain with Dirichlet values on
/// (a set of points of) its boundary.
pub trait StrongForm {
    /// `[lo, hi]` of each coordinate.
    fn domain(&self) -> Vec<[f64; 2]>;
    /// `R` at collocation points `x` `[rows, c]` from the jet of `u` there and the (physical)
    /// parameters `z` `[rows, p]`, `[rows, 1]`.
    fn strong_residual(&self, x: Tensor<2>, u: &PointJet, z: Tensor<2>) -> Tensor<2>;
    /// The boundary points where Dirichlet values are imposed, `[n_b][c]`.
    fn dirichlet_points(&self) -> Vec<Vec<f64>>;
    /// The Dirichlet values `g(x; z)` at boundary points `x` `[rows, c]`, `[rows, 1]`.
    /// Default: zero.
    fn dirichlet_values(&self, x: Tensor<2>, _z: Tensor<2>) -> Tensor<2> {
        Tensor::zeros([x.dims()[0], 1], &x.device())
    }
}

/// A uniform draw from `[lo, hi]`.
pub(crate) fn uniform(rng: &mut dyn rand::RngCore, range: [f64; 2]) -> f64 {
    range[0] + (range[1] - range[0]) * rng.random::<f64>()
}

/// Check a `[lo, hi]` range.
pub(crate) fn check_range(key: &'static str, r: [f64; 2], positive: bool) -> Result<(), String> {
    if !(r[0].is_finite() && r[1].is_finite() && r[0] <= r[1]) || (positive && r[0] <= 0.0) {
        Err(format!(
            "{key} must be [lo, hi] with lo ≤ hi{}, got {r:?}",
            if positive { " and lo > 0" } else { "" }
        ))
    } else {
        Ok(())
    }
}

/// A per-sample column of `z` as `[batch, 1, 1]` for broadcasting over a field.
pub(crate) fn column3(z: &Tensor<2>, i: usize) -> Tensor<3> {
    z.clone().narrow(1, i, 1).unsqueeze_dim(2)
}

/// The outermost ring of nodes of `[batch, nx, ny]` fields, `[batch, 2ny + 2(nx − 2)]`.
pub(crate) fn ring(u: Tensor<3>) -> Tensor<2> {
    let [b, nx, ny] = u.dims();
    Tensor::cat(
        vec![
            u.clone().narrow(1, 0, 1).reshape([b, ny]),
            u.clone().narrow(1, nx - 1, 1).reshape([b, ny]),
            u.clone()
                .narrow(1, 1, nx - 2)
                .narrow(2, 0, 1)
                .reshape([b, nx - 2]),
            u.narrow(1, 1, nx - 2)
                .narrow(2, ny - 1, 1)
                .reshape([b, nx - 2]),
        ],
        1,
    )
}

/// A constant `[1, n]` row tensor.
pub(crate) fn row(values: Vec<f64>, device: &Device) -> Tensor<2> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [1, n]), device)
}

/// Assert the input shapes of a residual.
pub(crate) fn check_shapes(what: &str, u: &Tensor<2>, z: &Tensor<2>, nu: usize, nz: usize) {
    let (du, dz) = (u.dims(), z.dims());
    assert!(
        du[1] == nu && dz[1] == nz && du[0] == dz[0],
        "{what} residual: expected u [batch, {nu}] and z [batch, {nz}], got u {du:?} and z {dz:?}"
    );
}
