//! Observation operators `H: grid → points` and the Gaussian data likelihood of sparse noisy
//! observations, for product likelihoods `p(r̂ = 0 | u, z) · p(y | u)` (primer §3.12).

use burn::prelude::*;
use burn::tensor::Int;
use varphi_models::distributions::LN_2PI;

/// A linear map from a field on a grid to values at `m` points: each point is a weighted sum of
/// (at most four) grid nodes — a node itself (`by_index`) or the bilinear interpolation between
/// the four corners of the cell containing the point (`bilinear`).
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationOperator {
    /// `[corner][point]` flat node indices.
    pub nodes: Vec<Vec<usize>>,
    /// `[corner][point]` weights.
    pub weights: Vec<Vec<f64>>,
}

impl ObservationOperator {
    /// Observe the field at the given flat node indices.
    pub fn by_index(indices: &[usize]) -> Self {
        Self {
            nodes: vec![indices.to_vec()],
            weights: vec![vec![1.0; indices.len()]],
        }
    }

    /// Sub-sampling in time: of a trajectory stored level-major as `[levels × nodes]` values,
    /// observe every `every`-th level from `t_0` (levels `0, every, 2·every, …`) at the given
    /// spatial `nodes` (all nodes when `None`). The observed values are ordered level-major.
    ///
    /// # Panics
    /// If `every` is 0 or a node index is `≥ nodes_per_level`.
    pub fn time_subsampled(
        levels: usize,
        nodes_per_level: usize,
        every: usize,
        nodes: Option<&[usize]>,
    ) -> Self {
        assert!(every > 0, "time_subsampled: every must be at least 1");
        let all: Vec<usize> = (0..nodes_per_level).collect();
        let nodes = nodes.unwrap_or(&all);
        assert!(
            nodes.iter().all(|&i| i < nodes_per_level),
            "time_subsampled: node index out of range (nodes per level: {nodes_per_level})"
        );
        let idx: Vec<usize> = (0..levels)
            .step_by(every)
            .flat_map(|k| nodes.iter().map(move |&i| k * nodes_per_level + i))
            .collect();
        Self::by_index(&idx)
    }

    /// Bilinear interpolation at points `(x, y)` of a field on the `nx × ny` closed grid of
    /// `[x0, x1] × [y0, y1]` (row-major, `x` first). Points outside are clamped to the domain.
    pub fn bilinear(points: &[[f64; 2]], nx: usize, ny: usize, x: [f64; 2], y: [f64; 2]) -> Self {
        let (hx, hy) = (
            (x[1] - x[0]) / (nx - 1) as f64,
            (y[1] - y[0]) / (ny - 1) as f64,
        );
        let mut nodes: Vec<Vec<usize>> = (0..4).map(|_| Vec::with_capacity(points.len())).collect();
        let mut weights: Vec<Vec<f64>> = (0..4).map(|_| Vec::with_capacity(points.len())).collect();
        for p in points {
            let fx = ((p[0] - x[0]) / hx).clamp(0.0, (nx - 1) as f64);
            let fy = ((p[1] - y[0]) / hy).clamp(0.0, (ny - 1) as f64);
            let (i, j) = (
                (fx.floor() as usize).min(nx - 2),
                (fy.floor() as usize).min(ny - 2),
            );
            let (tx, ty) = (fx - i as f64, fy - j as f64);
            for (c, (di, dj, w)) in [
                (0, 0, (1.0 - tx) * (1.0 - ty)),
                (1, 0, tx * (1.0 - ty)),
                (0, 1, (1.0 - tx) * ty),
                (1, 1, tx * ty),
            ]
            .into_iter()
            .enumerate()
            {
                nodes[c].push((i + di) * ny + j + dj);
                weights[c].push(w);
            }
        }
        Self { nodes, weights }
    }

    /// Number of observed points.
    pub fn len(&self) -> usize {
        self.nodes[0].len()
    }

    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `H u`: `[batch, nodes]` → `[batch, m]`.
    pub fn apply(&self, u: Tensor<2>) -> Tensor<2> {
        let device = u.device();
        let m = self.len();
        let mut out: Option<Tensor<2>> = None;
        for (nodes, weights) in self.nodes.iter().zip(&self.weights) {
            let idx = Tensor::<1, Int>::from_data(
                TensorData::new(nodes.iter().map(|&i| i as i64).collect::<Vec<_>>(), [m]),
                &device,
            );
            let w = Tensor::<2>::from_data(TensorData::new(weights.clone(), [1, m]), &device);
            let term = u.clone().select(1, idx) * w;
            out = Some(match out {
                Some(o) => o + term,
                None => term,
            });
        }
        out.expect("at least one corner")
    }

    /// `Var[H u]` of a field with independent entries of variance `var` `[batch, nodes]`:
    /// `Σ_c w_c² var(node_c)` → `[batch, m]`.
    pub fn apply_variance(&self, var: Tensor<2>) -> Tensor<2> {
        let squared = Self {
            nodes: self.nodes.clone(),
            weights: self
                .weights
                .iter()
                .map(|w| w.iter().map(|v| v * v).collect())
                .collect(),
        };
        squared.apply(var)
    }
}

/// Gaussian likelihood of observations `y = H u + σ_y ε`:
///
/// ```text
/// log p(y | u) = −½ Σ_j (y_j − (H u)_j)² / σ_y² − m log σ_y − ½ m log 2π
/// ```
///
/// In a product likelihood it is added to the virtual-observation term, each weighted only by
/// its own noise scale.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationLikelihood {
    /// Where and how the field is observed.
    pub operator: ObservationOperator,
    /// Noise scale σ_y.
    pub sigma: f64,
}

impl ObservationLikelihood {
    /// `log p(y | u)` per sample: `y` `[batch, m]`, `u` `[batch, nodes]` → `[batch]`.
    pub fn log_prob(&self, y: Tensor<2>, u: Tensor<2>) -> Tensor<1> {
        let m = self.operator.len() as f64;
        (y - self.operator.apply(u))
            .powi_scalar(2)
            .sum_dim(1)
            .squeeze_dim::<1>(1)
            .mul_scalar(-0.5 / (self.sigma * self.sigma))
            .sub_scalar(m * (self.sigma.ln() + 0.5 * LN_2PI))
    }

    /// `log ∫ p(y | u) N(u; μ, diag v) du = log N(y; H μ, σ_y² I + diag(Var[H u]) + diag(s²))`:
    /// the observation likelihood with `u` marginalised under a diagonal Gaussian (e.g. a
    /// probabilistic surrogate `q(u | z)`), plus an optional model-error variance `s²` per point
    /// (`[1 or batch, m]`), per sample: `y` `[batch, m]`, `mean`, `var` `[batch, nodes]` →
    /// `[batch]`. The cross-covariances bilinear weights would induce between points sharing a
    /// node are dropped (exact for `by_index`).
    pub fn log_marginal(
        &self,
        y: Tensor<2>,
        mean: Tensor<2>,
        var: Tensor<2>,
        model_var: Option<Tensor<2>>,
    ) -> Tensor<1> {
        let mut total = self
            .operator
            .apply_variance(var)
            .add_scalar(self.sigma * self.sigma);
        if let Some(extra) = model_var {
            total = total + extra;
        }
        let sq = (y - self.operator.apply(mean)).powi_scalar(2) / total.clone();
        (sq + total.log())
            .sum_dim(1)
            .squeeze_dim::<1>(1)
            .add_scalar(self.operator.len() as f64 * LN_2PI)
            .mul_scalar(-0.5)
    }
}
