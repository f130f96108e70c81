//! Host-side helpers: tensors to `f64` vectors and sample layouts for the scores of [`crate::uq`].

use crate::calibration::{Role, Scorer};
use crate::uq::UqScores;
use burn::prelude::*;

/// Mean of a `[n]` tensor as `f64`.
pub fn mean_of(t: Tensor<1>) -> f64 {
    t.mean()
        .into_data()
        .convert::<f64>()
        .try_into_vec_as::<f64>()
        .expect("f64")[0]
}

/// All values of a tensor, row-major, as `f64`.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().try_into_vec_as::<f64>().expect("f64")
}

/// Rows of a `[n, d]` tensor.
pub fn rows(t: Tensor<2>) -> Vec<Vec<f64>> {
    let [_, d] = t.dims();
    values(t).chunks(d.max(1)).map(<[f64]>::to_vec).collect()
}

/// `[S·n, w]` sample-major values as `S` vectors of `n·w` values (the layout of
/// [`crate::uq::score`]).
pub fn per_sample(v: Vec<f64>, n: usize, w: usize) -> Vec<Vec<f64>> {
    v.chunks(n * w).map(<[f64]>::to_vec).collect()
}

/// Column `j` of `[S][n·p]` samples and of `[n·p]` truth.
pub fn column(
    samples: &[Vec<f64>],
    truth: &[f64],
    p: usize,
    j: usize,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let col = |v: &[f64]| v.iter().skip(j).step_by(p).copied().collect::<Vec<_>>();
    (samples.iter().map(|v| col(v)).collect(), col(truth))
}

/// Per-parameter posterior scores `(name, scores)` of `[S][n·p]` samples (names from `names`,
/// `z{j}` past its end), scored as blocks `{block}.{name}`.
pub fn per_parameter(
    scorer: &Scorer,
    block: &str,
    samples: &[Vec<f64>],
    truth: &[f64],
    p: usize,
    names: &[String],
) -> Vec<(String, UqScores)> {
    (0..p)
        .map(|j| {
            let name = names.get(j).cloned().unwrap_or_else(|| format!("z{j}"));
            let (s, t) = column(samples, truth, p, j);
            let n = t.len();
            let scores = scorer.score(&format!("{block}.{name}"), &s, &t, n, Role::Posterior);
            (name, scores)
        })
        .collect()
}

/// A `[n, w]` tensor repeated `s` times along a new leading axis and flattened: `[s·n, w]`.
pub fn repeat_rows(t: Tensor<2>, s: usize) -> Tensor<2> {
    let [n, w] = t.dims();
    t.unsqueeze_dim::<3>(0)
        .expand([s, n, w])
        .reshape([s * n, w])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_trip() {
        let device = Device::flex();
        let t = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2., 3., 4., 5., 6.], [3, 2]),
            &device,
        );
        assert_eq!(
            rows(t.clone()),
            vec![vec![1., 2.], vec![3., 4.], vec![5., 6.]]
        );
        assert_eq!(mean_of(t.clone().reshape([6])), 3.5);
        let r = values(repeat_rows(t.narrow(0, 0, 2), 2));
        assert_eq!(r, vec![1., 2., 3., 4., 1., 2., 3., 4.]);
        assert_eq!(per_sample(r, 2, 2).len(), 2);
    }
}
