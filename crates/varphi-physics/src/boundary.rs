//! Boundary conditions for fields on closed grids, as tensor ops.
//!
//! Every field is stored on a grid that includes its boundary nodes. Along each axis a
//! [`Boundary`] says how the stencil operators of [`crate::fd`] treat the ends:
//!
//! - [`Boundary::Dirichlet`]: the boundary node carries the prescribed value; the PDE is imposed
//!   at interior nodes only and the condition itself is a separate residual `u_b − g`
//!   ([`Boundary::residual`]), which a likelihood can treat as a further virtual observation.
//! - [`Boundary::ZeroFlux`]: homogeneous Neumann, `∂u/∂n = 0`, by a mirrored ghost node
//!   `u_{−1} = u_1` (second order); the PDE is imposed at the boundary nodes too.
//! - [`Boundary::Periodic`]: node `n` is node `0`; the PDE is imposed at every node.
//!
//! [`Boundary::pad`] adds the ghost layer (none for Dirichlet), after which every stencil
//! returns values at the nodes where the PDE holds.

use burn::prelude::*;
use burn::tensor::ops::PadMode;

/// What happens at both ends of one grid axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Boundary {
    /// `u = lo` at the first node and `u = hi` at the last.
    Dirichlet {
        /// Value at the first node.
        lo: f64,
        /// Value at the last node.
        hi: f64,
    },
    /// Zero normal derivative (mirrored ghost node).
    ZeroFlux,
    /// The axis wraps around: the node after the last is the first.
    Periodic,
}

impl Boundary {
    /// Homogeneous Dirichlet, `u = 0` at both ends.
    pub const ZERO: Boundary = Boundary::Dirichlet { lo: 0.0, hi: 0.0 };

    /// Add the ghost layer along `dim` (Dirichlet: unchanged).
    ///
    /// # Shapes
    /// `[.., n, ..]` → `[.., n + 2, ..]` (ZeroFlux, Periodic) or unchanged (Dirichlet).
    pub fn pad<const D: usize>(&self, u: Tensor<D>, dim: usize) -> Tensor<D> {
        let n = u.dims()[dim];
        match self {
            Boundary::Dirichlet { .. } => u,
            Boundary::ZeroFlux => {
                let mut pads = [(0usize, 0usize); D];
                pads[dim] = (1, 1);
                u.pad(pads, PadMode::Reflect)
            }
            Boundary::Periodic => {
                let last = u.clone().narrow(dim, n - 1, 1);
                let first = u.clone().narrow(dim, 0, 1);
                Tensor::cat(vec![last, u, first], dim)
            }
        }
    }

    /// Number of nodes along the axis at which the PDE is imposed, for `n` grid nodes.
    pub fn n_pde_nodes(&self, n: usize) -> usize {
        match self {
            Boundary::Dirichlet { .. } => n - 2,
            _ => n,
        }
    }

    /// The nodes along `dim` at which the PDE is imposed (Dirichlet: drop both ends).
    pub fn interior<const D: usize>(&self, u: Tensor<D>, dim: usize) -> Tensor<D> {
        let n = u.dims()[dim];
        match self {
            Boundary::Dirichlet { .. } => u.narrow(dim, 1, n - 2),
            _ => u,
        }
    }

    /// Residual of the condition itself: `[u_first − lo, u_last − hi]` along `dim`
    /// (Dirichlet), `None` otherwise (those conditions are built into the stencils).
    ///
    /// # Shapes
    /// `[.., n, ..]` → `[.., 2, ..]`.
    pub fn residual<const D: usize>(&self, u: Tensor<D>, dim: usize) -> Option<Tensor<D>> {
        let n = u.dims()[dim];
        match *self {
            Boundary::Dirichlet { lo, hi } => Some(Tensor::cat(
                vec![
                    u.clone().narrow(dim, 0, 1).sub_scalar(lo),
                    u.narrow(dim, n - 1, 1).sub_scalar(hi),
                ],
                dim,
            )),
            _ => None,
        }
    }
}

/// A 0/1 mask over a field: `1` where a residual is imposed, `0` where it is not (holes,
/// inactive cells, boundary rows). Multiplying a residual by it removes those rows from a
/// Gaussian virtual-observation likelihood's sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    /// Shape of one field.
    pub shape: Vec<usize>,
    /// Row-major 0/1 values.
    pub values: Vec<f64>,
}

impl Mask {
    /// All nodes active.
    pub fn full(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
            values: vec![1.0; shape.iter().product()],
        }
    }

    /// Active everywhere except the outermost layer of nodes along every axis.
    pub fn interior(shape: &[usize]) -> Self {
        let n: usize = shape.iter().product();
        let values = (0..n)
            .map(|flat| {
                let mut rest = flat;
                let mut inside = true;
                for &len in shape.iter().rev() {
                    let i = rest % len;
                    rest /= len;
                    inside &= i > 0 && i + 1 < len;
                }
                f64::from(u8::from(inside))
            })
            .collect();
        Self {
            shape: shape.to_vec(),
            values,
        }
    }

    /// Number of active nodes.
    pub fn count(&self) -> usize {
        self.values.iter().filter(|&&v| v != 0.0).count()
    }

    /// The mask as a `[1, ..shape]` tensor that broadcasts over a batch.
    pub fn tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        assert_eq!(
            D,
            self.shape.len() + 1,
            "Mask::tensor: a {}-D mask gives a {}-D tensor, asked for {D}-D",
            self.shape.len(),
            self.shape.len() + 1
        );
        let mut shape = vec![1];
        shape.extend(&self.shape);
        Tensor::from_data(TensorData::new(self.values.clone(), shape), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f64_device, tensor, vec};

    #[test]
    fn ghost_layers_and_boundary_residuals() {
        let d = f64_device();
        let u = tensor(vec![1.0, 2.0, 3.0, 4.0], [1, 4], &d);
        assert_eq!(
            vec(Boundary::ZeroFlux.pad(u.clone(), 1)),
            [2.0, 1.0, 2.0, 3.0, 4.0, 3.0]
        );
        assert_eq!(
            vec(Boundary::Periodic.pad(u.clone(), 1)),
            [4.0, 1.0, 2.0, 3.0, 4.0, 1.0]
        );
        let bc = Boundary::Dirichlet { lo: 1.0, hi: 5.0 };
        assert_eq!(vec(bc.residual(u.clone(), 1).unwrap()), [0.0, -1.0]);
        assert_eq!(vec(bc.interior(u, 1)), [2.0, 3.0]);
        assert_eq!(bc.n_pde_nodes(4), 2);
    }

    #[test]
    fn interior_mask() {
        let m = Mask::interior(&[3, 4]);
        assert_eq!(m.values, [0., 0., 0., 0., 0., 1., 1., 0., 0., 0., 0., 0.]);
        assert_eq!(m.count(), 2);
        assert_eq!(Mask::full(&[2, 2]).count(), 4);
    }
}
