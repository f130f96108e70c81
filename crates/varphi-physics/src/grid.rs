//! Uniform structured grids.

/// A uniform 1-D grid of `n` nodes on `[lo, hi]`.
///
/// `interior` grids exclude the two boundary nodes (spacing `(hi - lo) / (n + 1)`), which is
/// the natural layout for fields with homogeneous Dirichlet conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid1d {
    /// Node coordinates, increasing.
    pub x: Vec<f64>,
    /// Node spacing.
    pub dx: f64,
}

impl Grid1d {
    /// `n` nodes including both end points (`n >= 2`).
    pub fn closed(lo: f64, hi: f64, n: usize) -> Self {
        assert!(n >= 2, "Grid1d::closed needs n >= 2, got {n}");
        let dx = (hi - lo) / (n - 1) as f64;
        Self {
            x: (0..n).map(|i| lo + dx * i as f64).collect(),
            dx,
        }
    }

    /// `n` interior nodes, excluding the end points (`n >= 1`).
    pub fn interior(lo: f64, hi: f64, n: usize) -> Self {
        assert!(n >= 1, "Grid1d::interior needs n >= 1, got {n}");
        let dx = (hi - lo) / (n + 1) as f64;
        Self {
            x: (1..=n).map(|i| lo + dx * i as f64).collect(),
            dx,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// Whether the grid has no nodes.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }
}

/// A uniform 2-D grid of `nx × ny` nodes on `[x_lo, x_hi] × [y_lo, y_hi]`, boundary nodes
/// included. Fields on it are stored row-major with `x` along the first axis:
/// `u[i, j] = u(x_i, y_j)`, tensor shape `[batch, nx, ny]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid2d {
    /// Nodes along `x`.
    pub x: Grid1d,
    /// Nodes along `y`.
    pub y: Grid1d,
}

impl Grid2d {
    /// `nx × ny` nodes including the boundary (`nx, ny >= 2`).
    pub fn closed(x: [f64; 2], y: [f64; 2], nx: usize, ny: usize) -> Self {
        Self {
            x: Grid1d::closed(x[0], x[1], nx),
            y: Grid1d::closed(y[0], y[1], ny),
        }
    }

    /// The unit square with `n × n` nodes including the boundary.
    pub fn unit_square(n: usize) -> Self {
        Self::closed([0.0, 1.0], [0.0, 1.0], n, n)
    }

    /// `[nx, ny]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.x.len(), self.y.len()]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.x.len() * self.y.len()
    }

    /// Whether the grid has no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `f(x_i, y_j)` on every node, row-major `[nx, ny]`.
    pub fn eval(&self, f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
        self.x
            .x
            .iter()
            .flat_map(|&x| self.y.x.iter().map(move |&y| (x, y)))
            .map(|(x, y)| f(x, y))
            .collect()
    }

    /// Whether node `(i, j)` lies on the boundary.
    pub fn on_boundary(&self, i: usize, j: usize) -> bool {
        i == 0 || j == 0 || i + 1 == self.x.len() || j + 1 == self.y.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacings_and_end_points() {
        let g = Grid1d::closed(0.0, 1.0, 5);
        assert_eq!(g.x, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        let g = Grid1d::interior(0.0, 1.0, 3);
        assert_eq!(g.x, vec![0.25, 0.5, 0.75]);
        assert_eq!(g.dx, 0.25);
    }

    #[test]
    fn grid2d_is_row_major_with_x_first() {
        let g = Grid2d::closed([0.0, 1.0], [0.0, 2.0], 3, 2);
        assert_eq!(g.shape(), [3, 2]);
        assert_eq!(
            g.eval(|x, y| x + 10.0 * y),
            vec![0.0, 20.0, 0.5, 20.5, 1.0, 21.0]
        );
        assert!(g.on_boundary(1, 0) && !Grid2d::unit_square(3).on_boundary(1, 1));
    }
}
