//! Seeded noise streams: every Monte-Carlo draw of a run depends only on `(seed, stream,
//! step)`, so a resumed run draws exactly the noise an uninterrupted one would, on every
//! backend, and evaluation never shares noise with training.

use burn::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// The named noise streams of a run. Each has a fixed id (the ids of earlier versions, so old
/// runs evaluate to the same numbers); an objective may fan a stream out into sub-streams with
/// [`NoiseSource::offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Training steps (evaluation of the objective on batch `i` of a split uses offset `1 + i`).
    Train,
    /// The samples of `samples.png`.
    Plot,
    /// The test ELBO of `eval.json`.
    EvalElbo,
    /// `varphi sample`.
    Sample,
    /// Predictive latents / samples scored by `varphi eval`.
    EvalPredictive,
    /// Observation noise added to those predictive samples.
    EvalPredictiveNoise,
    /// The fixed noisy observations of a PDDLVM run's test cases.
    EvalObservations,
    /// The model-error term of a surrogate's predictive: probes (step 0) and discrepancy
    /// draws (step 1) of `eval` and `predict`, the same of `sample` (steps 2, 3).
    ModelError,
    /// The importance samples of the IWAE bound in `eval.json`.
    EvalIwae,
    /// The fixed noisy observations of an amortised posterior's test cases (npe, phys-vae).
    HeldOutObservations,
    /// Posterior draws on those test cases.
    HeldOutPosterior,
    /// Auxiliary-latent draws on those test cases (phys-vae).
    HeldOutAuxiliary,
}

impl Stream {
    /// The stream's id.
    pub fn id(self) -> u64 {
        match self {
            Stream::Train => 0,
            Stream::Plot => 7,
            Stream::EvalElbo => 100,
            Stream::Sample => 200,
            Stream::EvalPredictive => 300,
            Stream::EvalPredictiveNoise => 301,
            Stream::EvalObservations => 302,
            Stream::ModelError => 310,
            Stream::EvalIwae => 400,
            Stream::HeldOutObservations => 500,
            Stream::HeldOutPosterior => 501,
            Stream::HeldOutAuxiliary => 502,
        }
    }
}

/// Rows `offset .. offset + len` of a batch of `total` rows: the part of a training batch one
/// data-parallel shard (a device or an MPI rank) evaluates. `shard` numbers the shards of a
/// step (0 for the whole batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowWindow {
    /// First row.
    pub offset: usize,
    /// Rows in the window.
    pub len: usize,
    /// Rows of the whole batch.
    pub total: usize,
    /// Index of the shard among all shards of the step.
    pub shard: usize,
}

impl RowWindow {
    /// The whole batch of `n` rows.
    pub fn whole(n: usize) -> Self {
        Self {
            offset: 0,
            len: n,
            total: n,
            shard: 0,
        }
    }

    /// Whether the window is the whole batch.
    pub fn is_whole(&self) -> bool {
        self.offset == 0 && self.len == self.total
    }

    /// The window's share of the batch, `len / total` (the weight of its mean loss).
    pub fn weight(&self) -> f64 {
        self.len as f64 / self.total.max(1) as f64
    }
}

/// Standard-normal noise that depends only on `(seed, stream, step)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoiseSource {
    /// Base seed.
    pub seed: u64,
    /// Stream id ([`Stream::id`] plus any sub-stream offset).
    pub stream: u64,
}

impl NoiseSource {
    /// The named stream `stream` of seed `seed`.
    pub fn new(seed: u64, stream: Stream) -> Self {
        Self {
            seed,
            stream: stream.id(),
        }
    }

    /// The sub-stream `k` above this one (`stream + k`).
    pub fn offset(self, k: u64) -> Self {
        Self {
            stream: self.stream + k,
            ..self
        }
    }

    /// `N(0, 1)` noise of `shape` for step `step`.
    pub fn normal<const D: usize>(
        &self,
        shape: [usize; D],
        step: usize,
        device: &Device,
    ) -> Tensor<D> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ 0xA076_1D64_78BD_642F);
        rng.set_stream(self.stream.wrapping_mul(1 << 32) ^ step as u64);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// The rows `window` of the `N(0, 1)` draw of `shape` with axis `axis` of length
    /// `window.total` instead of `shape[axis]` (= `window.len`): a data-parallel shard draws
    /// exactly the noise its rows get in the unsharded batch, so sharded and unsharded steps
    /// agree to rounding. The whole window is [`NoiseSource::normal`].
    pub fn normal_rows<const D: usize>(
        &self,
        shape: [usize; D],
        axis: usize,
        window: RowWindow,
        step: usize,
        device: &Device,
    ) -> Tensor<D> {
        assert_eq!(
            shape[axis], window.len,
            "noise axis {axis} of {shape:?} is not the shard's {} rows",
            window.len
        );
        if window.is_whole() {
            return self.normal(shape, step, device);
        }
        let mut full = shape;
        full[axis] = window.total;
        self.normal(full, step, device)
            .narrow(axis, window.offset, window.len)
    }

    /// `U[0, 1)` values for step `step` (host-side, e.g. collocation points), row-major.
    pub fn uniform(&self, n: usize, step: usize) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ 0x5851_F42D_4C95_7F2D);
        rng.set_stream(self.stream.wrapping_mul(1 << 32) ^ step as u64);
        (0..n).map(|_| rand::Rng::random::<f64>(&mut rng)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let device = Device::flex();
        let a = NoiseSource::new(3, Stream::Train);
        let v = |s: NoiseSource, step| {
            s.normal([64], step, &device)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(v(a, 5), v(a, 5));
        assert_ne!(v(a, 5), v(a, 6));
        assert_ne!(v(a, 5), v(a.offset(1), 5));
        assert_ne!(v(a, 5), v(NoiseSource::new(3, Stream::Sample), 5));
        assert_ne!(v(a, 5), v(NoiseSource::new(4, Stream::Train), 5));
        // Ids are distinct: no two named streams draw the same noise.
        let all = [
            Stream::Train,
            Stream::Plot,
            Stream::EvalElbo,
            Stream::Sample,
            Stream::EvalPredictive,
            Stream::EvalPredictiveNoise,
            Stream::EvalObservations,
            Stream::EvalIwae,
            Stream::HeldOutObservations,
            Stream::HeldOutPosterior,
            Stream::HeldOutAuxiliary,
        ];
        let mut ids: Vec<u64> = all.iter().map(|s| s.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
    }
}
