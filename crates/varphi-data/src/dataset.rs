//! In-memory datasets, splits and normalisation.

use crate::error::DataError;
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// `n` samples of shape `sample_shape` (row-major, `f64`), with an optional condition vector
/// per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Flattened samples, `[n, features]`.
    pub x: Vec<f64>,
    /// Shape of one sample, e.g. `[64]`, `[1, 64]` or `[1, 32, 32]`.
    pub sample_shape: Vec<usize>,
    /// Flattened conditions, `[n, cond_dim]` (empty if `cond_dim == 0`).
    pub cond: Vec<f64>,
    /// Condition width (0: unconditional).
    pub cond_dim: usize,
}

impl Dataset {
    /// Build a dataset, checking that the sizes agree.
    pub fn new(
        x: Vec<f64>,
        sample_shape: Vec<usize>,
        cond: Vec<f64>,
        cond_dim: usize,
    ) -> Result<Self, DataError> {
        let features: usize = sample_shape.iter().product();
        if features == 0 {
            return Err(DataError::Shape(format!(
                "sample shape {sample_shape:?} has no elements"
            )));
        }
        if x.len() % features != 0 {
            return Err(DataError::Shape(format!(
                "{} values do not divide into samples of shape {sample_shape:?}",
                x.len()
            )));
        }
        let n = x.len() / features;
        if n == 0 {
            return Err(DataError::Shape("the dataset has no samples".into()));
        }
        if cond.len() != n * cond_dim {
            return Err(DataError::Shape(format!(
                "condition array has {} values, expected n × cond_dim = {n} × {cond_dim} (one row per sample)",
                cond.len()
            )));
        }
        Ok(Self {
            x,
            sample_shape,
            cond,
            cond_dim,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.x.len() / self.features()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per sample.
    pub fn features(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let f = self.features();
        let c = self.cond_dim;
        let mut x = Vec::with_capacity(indices.len() * f);
        let mut cond = Vec::with_capacity(indices.len() * c);
        for &i in indices {
            x.extend_from_slice(&self.x[i * f..(i + 1) * f]);
            cond.extend_from_slice(&self.cond[i * c..(i + 1) * c]);
        }
        Dataset {
            x,
            sample_shape: self.sample_shape.clone(),
            cond,
            cond_dim: c,
        }
    }

    /// Deterministic shuffled split into `(train, test)` with `round(n · test_fraction)` test
    /// samples (at least one of each when `n >= 2`); see [`split_indices`].
    pub fn split(&self, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
        let (train, test) = split_indices(self.len(), test_fraction, seed);
        (self.select(&train), self.select(&test))
    }

    /// Rows `indices` as tensors on `device`: `x: [b, features]`, `cond: [b, cond_dim]`.
    pub fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<2>, Option<Tensor<2>>) {
        let sub = self.select(indices);
        let b = indices.len();
        let x = Tensor::from_data(TensorData::new(sub.x, [b, self.features()]), device);
        let cond = (self.cond_dim > 0)
            .then(|| Tensor::from_data(TensorData::new(sub.cond, [b, self.cond_dim]), device));
        (x, cond)
    }
}

/// The sample indices `(train, test)` of [`Dataset::split`] for `n` samples: a permutation
/// seeded by `seed`, its first `round(n · test_fraction)` entries (clamped to `[1, n − 1]`)
/// the test split. Needs no data, so a run's test cases can be regenerated alone.
pub fn split_indices(n: usize, test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ 0x5eed_5b11,
    ));
    let n_test = ((n as f64 * test_fraction).round() as usize).clamp(1, n.saturating_sub(1).max(1));
    let (test, train) = idx.split_at(n_test.min(n));
    (train.to_vec(), test.to_vec())
}

/// Affine normalisation fitted on the training split and stored with a run.
///
/// `x' = (x − x_mean) / x_std` with one global mean/std for the data (so boundary values and
/// relative magnitudes across the field are kept), and per-column standardisation of the
/// condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Data mean.
    pub x_mean: f64,
    /// Data standard deviation.
    pub x_std: f64,
    /// Condition means, one per column.
    pub cond_mean: Vec<f64>,
    /// Condition standard deviations, one per column.
    pub cond_std: Vec<f64>,
}

fn mean_std(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count().max(1) as f64;
    let mean = values.clone().sum::<f64>() / n;
    let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    (mean, if std > 1e-12 { std } else { 1.0 })
}

impl Normalization {
    /// The identity transform.
    pub fn identity(cond_dim: usize) -> Self {
        Self {
            x_mean: 0.0,
            x_std: 1.0,
            cond_mean: vec![0.0; cond_dim],
            cond_std: vec![1.0; cond_dim],
        }
    }

    /// Fit on a dataset (normally the training split).
    pub fn fit(data: &Dataset) -> Self {
        let (x_mean, x_std) = mean_std(data.x.iter().copied());
        let c = data.cond_dim;
        let (cond_mean, cond_std) = (0..c)
            .map(|j| mean_std(data.cond.iter().skip(j).step_by(c).copied()))
            .unzip();
        Self {
            x_mean,
            x_std,
            cond_mean,
            cond_std,
        }
    }

    /// [`Normalization::fit`] over data spread across processes: `data` is this process's
    /// part and `all_reduce` sums a vector over all parts in place (an MPI all-reduce; a no-op
    /// for one process, which gives `fit` to the bit). Two passes, as `fit`: the counts and
    /// sums give the means, then the sums of squared deviations about them the deviations.
    pub fn fit_reduced(data: &Dataset, all_reduce: &mut dyn FnMut(&mut [f64])) -> Self {
        let c = data.cond_dim;
        let column = |j: usize| data.cond.iter().skip(j).step_by(c.max(1)).copied();
        let mut first = vec![data.x.len() as f64, data.x.iter().sum::<f64>()];
        first.push(data.len() as f64);
        first.extend((0..c).map(|j| column(j).sum::<f64>()));
        all_reduce(&mut first);
        let x_mean = first[1] / first[0].max(1.0);
        let cond_mean: Vec<f64> = (0..c).map(|j| first[3 + j] / first[2].max(1.0)).collect();
        let mut second = vec![data.x.iter().map(|v| (v - x_mean).powi(2)).sum::<f64>()];
        second.extend((0..c).map(|j| column(j).map(|v| (v - cond_mean[j]).powi(2)).sum::<f64>()));
        all_reduce(&mut second);
        let std = |ss: f64, n: f64| {
            let s = (ss / n.max(1.0)).sqrt();
            if s > 1e-12 { s } else { 1.0 }
        };
        Self {
            x_mean,
            x_std: std(second[0], first[0]),
            cond_std: (0..c).map(|j| std(second[1 + j], first[2])).collect(),
            cond_mean,
        }
    }

    /// Whether two normalisations agree to a relative 1e-12 (JSON round trips of `f64` may
    /// differ in the last bit).
    pub fn approx_eq(&self, other: &Self) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300);
        let all = |a: &[f64], b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(*x, *y))
        };
        close(self.x_mean, other.x_mean)
            && close(self.x_std, other.x_std)
            && all(&self.cond_mean, &other.cond_mean)
            && all(&self.cond_std, &other.cond_std)
    }

    /// Normalise a dataset.
    pub fn apply(&self, data: &Dataset) -> Dataset {
        let mut out = data.clone();
        out.x
            .iter_mut()
            .for_each(|v| *v = (*v - self.x_mean) / self.x_std);
        self.apply_cond(&mut out.cond);
        out
    }

    /// Normalise condition rows in place (`[n, cond_dim]` flattened).
    pub fn apply_cond(&self, cond: &mut [f64]) {
        let c = self.cond_mean.len();
        if c == 0 {
            return;
        }
        for (i, v) in cond.iter_mut().enumerate() {
            let j = i % c;
            *v = (*v - self.cond_mean[j]) / self.cond_std[j];
        }
    }

    /// Map normalised condition rows back to data units in place (`[n, cond_dim]` flattened).
    pub fn invert_cond(&self, cond: &mut [f64]) {
        let c = self.cond_mean.len();
        if c == 0 {
            return;
        }
        for (i, v) in cond.iter_mut().enumerate() {
            let j = i % c;
            *v = *v * self.cond_std[j] + self.cond_mean[j];
        }
    }

    /// Map normalised data values back to data units.
    pub fn invert_x(&self, values: &mut [f64]) {
        values
            .iter_mut()
            .for_each(|v| *v = *v * self.x_std + self.x_mean);
    }
}

/// `total` rows in `parts` contiguous parts of (nearly) equal size: `(offset, len)` per part,
/// the first `total mod parts` parts one row longer.
pub fn even_parts(total: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.max(1);
    let (base, extra) = (total / parts, total % parts);
    let mut offset = 0;
    (0..parts)
        .map(|k| {
            let len = base + usize::from(k < extra);
            offset += len;
            (offset - len, len)
        })
        .collect()
}

/// Deterministic mini-batch order: epoch `e` uses a permutation seeded by `(seed, e)`, so an
/// interrupted run resumed at epoch `e` sees exactly the batches it would have seen.
///
/// With `shards > 1` the `n` rows are cut into `shards` contiguous shards ([`even_parts`]) and
/// every batch takes its rows from all of them: shard `k` is permuted on its own (seeded by
/// `(seed, e, k)`) and gives its `B_k` next rows to each batch, `B_k` the even parts of the
/// batch size. A process that holds only some shards (an MPI rank with per-rank data) then
/// knows its rows of every batch without seeing the others' data. One shard is the plain
/// order.
#[derive(Debug, Clone)]
pub struct Batcher {
    /// Batch size.
    pub batch_size: usize,
    /// Base seed.
    pub seed: u64,
    /// Shards the rows are drawn from (1: one permutation of all rows).
    pub shards: usize,
}

impl Batcher {
    /// A batch order over one shard.
    pub fn new(batch_size: usize, seed: u64) -> Self {
        Self {
            batch_size,
            seed,
            shards: 1,
        }
    }

    fn permutation(&self, len: usize, epoch: usize, shard: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..len).collect();
        let mut seed = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch as u64;
        if self.shards > 1 {
            seed ^= ((shard as u64) + 1) << 40;
        }
        idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        idx
    }

    /// Index batches of epoch `epoch` over `n` samples; the last batch may be smaller. With
    /// several shards each batch lists shard 0's rows first, then shard 1's, … (see
    /// [`Batcher::shard_batches`]).
    pub fn epoch(&self, n: usize, epoch: usize) -> Vec<Vec<usize>> {
        if self.shards <= 1 {
            return self
                .permutation(n, epoch, 0)
                .chunks(self.batch_size.max(1))
                .map(<[usize]>::to_vec)
                .collect();
        }
        self.shard_batches(n, epoch)
            .into_iter()
            .map(|parts| parts.concat())
            .collect()
    }

    /// The rows `(offset, len)` of shard `k` among `n` rows.
    pub fn shard_rows(&self, n: usize, k: usize) -> (usize, usize) {
        even_parts(n, self.shards)[k]
    }

    /// Epoch `epoch` as `[batch][shard] → rows` (indices among all `n` rows): shard `k`'s
    /// permutation cut into runs of `B_k` rows; a shard that runs out gives no rows to the
    /// last batches. Every row is in exactly one batch.
    pub fn shard_batches(&self, n: usize, epoch: usize) -> Vec<Vec<Vec<usize>>> {
        let shards = self.shards.max(1);
        let sizes = even_parts(self.batch_size.max(shards), shards);
        let parts = even_parts(n, shards);
        let steps = self.batches_per_epoch(n);
        let mut out = vec![Vec::with_capacity(shards); steps];
        for (k, &(offset, len)) in parts.iter().enumerate() {
            let perm = self.permutation(len, epoch, k);
            let b = sizes[k].1;
            for (s, batch) in out.iter_mut().enumerate() {
                let from = (s * b).min(len);
                let to = ((s + 1) * b).min(len);
                batch.push(perm[from..to].iter().map(|i| offset + i).collect());
            }
        }
        out
    }

    /// Number of batches per epoch (with shards: the most any shard needs).
    pub fn batches_per_epoch(&self, n: usize) -> usize {
        if self.shards <= 1 {
            return n.div_ceil(self.batch_size.max(1));
        }
        let sizes = even_parts(self.batch_size.max(self.shards), self.shards);
        even_parts(n, self.shards)
            .iter()
            .zip(&sizes)
            .map(|(&(_, len), &(_, b))| len.div_ceil(b))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Dataset {
        Dataset::new(
            (0..20).map(f64::from).collect(),
            vec![2],
            (0..10).map(f64::from).collect(),
            1,
        )
        .unwrap()
    }

    #[test]
    fn split_is_a_deterministic_partition() {
        let d = toy();
        let (tr, te) = d.split(0.3, 7);
        assert_eq!((tr.len(), te.len()), (7, 3));
        let mut all: Vec<f64> = tr.cond.iter().chain(te.cond.iter()).copied().collect();
        all.sort_by(f64::total_cmp);
        assert_eq!(all, (0..10).map(f64::from).collect::<Vec<_>>());
        assert_eq!(d.split(0.3, 7), (tr, te));
    }

    #[test]
    fn normalisation_round_trips() {
        let d = toy();
        let norm = Normalization::fit(&d);
        let z = norm.apply(&d);
        let mean: f64 = z.x.iter().sum::<f64>() / z.x.len() as f64;
        let var: f64 = z.x.iter().map(|v| v * v).sum::<f64>() / z.x.len() as f64;
        assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-12);
        let mut back = z.x.clone();
        norm.invert_x(&mut back);
        for (a, b) in back.iter().zip(&d.x) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn json_round_trip_is_approximately_equal_and_changes_are_detected() {
        let norm = Normalization {
            x_mean: 0.006434393183802521,
            x_std: 0.7436165124691619,
            cond_mean: vec![1.2891172194658573],
            cond_std: vec![0.42906375219280674],
        };
        let back: Normalization =
            serde_json::from_str(&serde_json::to_string(&norm).unwrap()).unwrap();
        assert!(back.approx_eq(&norm));
        let moved = Normalization {
            x_std: norm.x_std * (1.0 + 1e-9),
            ..norm.clone()
        };
        assert!(!moved.approx_eq(&norm));
    }

    #[test]
    fn shape_mismatch_is_reported() {
        let err = Dataset::new(vec![0.0; 10], vec![3], vec![], 0).unwrap_err();
        assert!(err.to_string().contains("do not divide"), "{err}");
        let err = Dataset::new(vec![0.0; 9], vec![3], vec![0.0; 2], 1).unwrap_err();
        assert!(err.to_string().contains("condition array"), "{err}");
    }

    #[test]
    fn batcher_covers_each_index_once_per_epoch() {
        let b = Batcher::new(4, 3);
        let e0 = b.epoch(10, 0);
        assert_eq!(e0.len(), 3);
        let mut all: Vec<usize> = e0.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(b.epoch(10, 0), e0);
        assert_ne!(b.epoch(10, 1), e0);
    }

    #[test]
    fn shards_draw_their_share_of_every_batch_and_cover_each_row_once() {
        let b = Batcher {
            shards: 3,
            ..Batcher::new(7, 5)
        };
        // 23 rows in shards of 8, 8, 7; batches take 3, 2, 2 rows of them.
        assert_eq!(b.shard_rows(23, 2), (16, 7));
        let parts = b.shard_batches(23, 4);
        assert_eq!(parts.len(), 4);
        assert_eq!(b.batches_per_epoch(23), 4);
        for (s, batch) in parts.iter().enumerate() {
            let want: [(usize, usize, usize); 3] = [(3, 0, 8), (2, 8, 16), (2, 16, 23)];
            for (k, rows) in batch.iter().enumerate() {
                let (size, lo, hi) = want[k];
                let left = (hi - lo).saturating_sub(s * size);
                assert_eq!(rows.len(), size.min(left), "batch {s} shard {k}");
                assert!(rows.iter().all(|r| (lo..hi).contains(r)));
            }
        }
        let mut all: Vec<usize> = b.epoch(23, 4).concat();
        all.sort();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        assert_ne!(b.epoch(23, 5), b.epoch(23, 4));
        // One shard is the plain order.
        let one = Batcher {
            shards: 1,
            ..Batcher::new(7, 5)
        };
        assert_eq!(one.shard_batches(23, 4).len(), 4);
        assert_eq!(one.epoch(23, 4)[0].len(), 7);
        assert_eq!(even_parts(10, 4), vec![(0, 3), (3, 3), (6, 2), (8, 2)]);
    }

    #[test]
    fn reduced_normalisation_over_parts_equals_the_whole_fit() {
        use std::sync::{Barrier, Mutex};
        let d = toy();
        let whole = Normalization::fit(&d);
        let parts = [d.select(&[0, 1, 2, 3]), d.select(&[4, 5, 6, 7, 8, 9])];
        // Two threads stand for two ranks; the reducer is a sum all-reduce between them.
        let (barrier, shared) = (Barrier::new(2), Mutex::new(Vec::<f64>::new()));
        let fits: Vec<Normalization> = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .iter()
                .map(|part| {
                    let (barrier, shared) = (&barrier, &shared);
                    scope.spawn(move || {
                        Normalization::fit_reduced(part, &mut |v: &mut [f64]| {
                            {
                                let mut s = shared.lock().unwrap();
                                if s.is_empty() {
                                    *s = vec![0.0; v.len()];
                                }
                                s.iter_mut().zip(v.iter()).for_each(|(a, b)| *a += b);
                            }
                            barrier.wait();
                            v.copy_from_slice(&shared.lock().unwrap());
                            if barrier.wait().is_leader() {
                                shared.lock().unwrap().clear();
                            }
                            barrier.wait();
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(fits[0].approx_eq(&whole), "{:?} vs {whole:?}", fits[0]);
        assert_eq!(fits[0], fits[1]);
        // One part alone (no reduction) is the plain fit, to the bit.
        assert_eq!(Normalization::fit_reduced(&d, &mut |_| {}), whole);
    }
}
