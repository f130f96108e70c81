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
}
