//! Data-parallel training: one optimiser step over several devices of this process and several
//! processes (MPI ranks), each evaluating its rows of the same global batch.
//!
//! Every replica holds the same weights and draws the same batch order (both follow from the
//! run's seed), so a step only has to agree on the gradient. With `R` ranks, `D_r` devices on
//! rank `r` and shard `k` holding `b_k` of the batch's `B` rows, the step's gradient is
//!
//! ```text
//! g = Σ_k (b_k / B) ∇ mean_{i ∈ k} ℓ_i   = ∇ mean_{i ∈ batch} ℓ_i
//! ```
//!
//! (per-row losses; see `Objective::rows_exact` for the objectives whose batch statistics
//! make this approximate). Within a rank the shard gradients are moved to the main device and
//! summed; across ranks they are summed by one flat all-reduce of the host-staged gradient
//! (`f64`, in the module's parameter order), then every rank applies the same optimiser step.

use crate::noise::RowWindow;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use std::sync::Arc;

/// The processes of a run and their collectives (MPI, or this process alone).
///
/// Collectives are called by every rank in the same order, from the training thread.
pub trait Collective: Send + Sync {
    /// This process's rank, `0 .. size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Element-wise sum over the ranks, in place (every rank gets the sum).
    fn all_reduce_sum(&self, values: &mut [f64]);
    /// Replace `bytes` on every rank by rank 0's.
    fn broadcast(&self, bytes: &mut Vec<u8>);
    /// Every rank's `bytes`, in rank order, on rank 0 (empty on the others).
    fn gather(&self, bytes: &[u8]) -> Vec<Vec<u8>>;
    /// A description for logs, e.g. `MPI rank 1 of 4`.
    fn describe(&self) -> String;
    /// End every rank of the job with exit status `code` (`MPI_Abort`), so that a rank that
    /// failed does not leave the others waiting in a collective. Does nothing for one process.
    fn abort(&self, _code: i32) {}
}

/// This process alone: the collectives are no-ops.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _values: &mut [f64]) {}
    fn broadcast(&self, _bytes: &mut Vec<u8>) {}
    fn gather(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        vec![bytes.to_vec()]
    }
    fn describe(&self) -> String {
        "one process".into()
    }
}

/// Broadcast a boolean from rank 0.
pub fn broadcast_flag(c: &dyn Collective, flag: bool) -> bool {
    let mut b = vec![flag as u8];
    c.broadcast(&mut b);
    b.first().copied().unwrap_or(0) != 0
}

/// Broadcast a string from rank 0.
pub fn broadcast_string(c: &dyn Collective, s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    c.broadcast(&mut b);
    String::from_utf8_lossy(&b).into_owned()
}

/// Where the rows of each training step go: the ranks, the devices of this rank and the share
/// of the batch each device takes.
#[derive(Clone)]
pub struct DataParallel {
    /// This rank's devices (autodiff), the first the main one (holds the model and the
    /// optimiser state).
    pub devices: Vec<Device>,
    /// Relative batch share of each device (e.g. proportional to its speed).
    pub shares: Vec<f64>,
    /// The ranks.
    pub collective: Arc<dyn Collective>,
    /// Time spent in steps and in communication, shared by the clones.
    pub stats: Arc<std::sync::Mutex<ParallelStats>>,
    /// Replace [`DataParallel::shares`] by the devices' measured speeds after the first
    /// steps (`device_shares = "auto"`).
    pub auto_shares: bool,
    balance: Arc<std::sync::Mutex<Balance>>,
}

/// The speed measurement of `device_shares = "auto"`: after [`BALANCE_WARM_UP`] steps, the
/// rows and seconds of each device over [`BALANCE_STEPS`] steps.
#[derive(Debug, Default)]
struct Balance {
    steps: usize,
    rows: Vec<usize>,
    seconds: Vec<f64>,
    shares: Option<Vec<f64>>,
}

/// Steps not measured by `device_shares = "auto"` (first-call allocation and autotuning).
pub const BALANCE_WARM_UP: usize = 2;
/// Steps `device_shares = "auto"` measures before fixing the shares.
pub const BALANCE_STEPS: usize = 10;

/// What data-parallel steps cost, measured by the training loop (`RUN/parallel.json`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ParallelStats {
    /// Ranks.
    pub ranks: usize,
    /// Devices on each rank.
    pub devices_per_rank: usize,
    /// Batch share of each device.
    pub shares: Vec<f64>,
    /// Whether the objective's shards reproduce the unsharded step to rounding
    /// (`Objective::rows_exact`); otherwise each shard draws noise of its own.
    pub exact: bool,
    /// Float parameters of the model.
    pub parameters: usize,
    /// Payload of one gradient all-reduce (`8 · parameters`, host `f64`).
    pub allreduce_bytes: usize,
    /// Data-parallel steps measured.
    pub steps: usize,
    /// Mean wall time of a step (all shards, communication, not the optimiser), ms.
    pub step_ms: f64,
    /// Mean time of the step's communication: host staging of the gradients, the gradient and
    /// terms all-reduces, and moving other devices' gradients to the main one, ms.
    pub communication_ms: f64,
    /// The part of `communication_ms` in the first collective of the step, the all-reduce of
    /// the loss terms: mostly the wait for the slowest rank, ms.
    pub wait_ms: f64,
    /// The part of `communication_ms` inside the gradient's `MPI_Allreduce` (the transfer),
    /// ms; the rest of `communication_ms` is host staging and moving gradients between
    /// devices.
    pub allreduce_ms: f64,
}

impl ParallelStats {
    /// Add one step of `step_s` seconds, `comm_s` of them communicating; `(wait_ms,
    /// allreduce_ms)` of those waiting in the terms' all-reduce and in the gradient's.
    pub fn record(&mut self, step_s: f64, comm_s: f64, (wait_ms, allreduce_ms): (f64, f64)) {
        let n = self.steps as f64;
        let mean = |old: f64, new: f64| (old * n + new) / (n + 1.0);
        self.step_ms = mean(self.step_ms, step_s * 1e3);
        self.communication_ms = mean(self.communication_ms, comm_s * 1e3);
        self.wait_ms = mean(self.wait_ms, wait_ms);
        self.allreduce_ms = mean(self.allreduce_ms, allreduce_ms);
        self.steps += 1;
    }
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("devices", &self.devices.len())
            .field("shares", &self.shares)
            .field("collective", &self.collective.describe())
            .finish()
    }
}

impl DataParallel {
    /// One device, one process: the plain training step.
    pub fn single(device: &Device) -> Self {
        Self::new(vec![device.clone()], vec![1.0], Arc::new(SingleProcess))
    }

    /// Data-parallel over `devices` (the first the main one) with batch `shares`, on the
    /// ranks of `collective`.
    pub fn new(devices: Vec<Device>, shares: Vec<f64>, collective: Arc<dyn Collective>) -> Self {
        let stats = ParallelStats {
            ranks: collective.size(),
            devices_per_rank: devices.len(),
            shares: shares.clone(),
            ..Default::default()
        };
        Self {
            devices,
            shares,
            collective,
            stats: Arc::new(std::sync::Mutex::new(stats)),
            auto_shares: false,
            balance: Default::default(),
        }
    }

    /// The batch shares in force: the configured ones, or with `auto_shares` the measured
    /// ones once they are known.
    pub fn current_shares(&self) -> Vec<f64> {
        if self.auto_shares
            && let Ok(b) = self.balance.lock()
            && let Some(s) = &b.shares
        {
            return s.clone();
        }
        self.shares.clone()
    }

    /// Report one step's `(device, rows, seconds)` per shard to the `auto_shares` measurement;
    /// after the warm-up and [`BALANCE_STEPS`] measured steps the shares become each device's
    /// rows per second (scaled to sum to the number of devices) and are recorded in the
    /// stats. Splitting differently does not change the step's gradient (see the module
    /// docs), only how long it takes.
    pub fn observe(&self, shards: &[(usize, usize, f64)]) {
        if !self.auto_shares || self.devices.len() < 2 {
            return;
        }
        let Ok(mut b) = self.balance.lock() else {
            return;
        };
        if b.shares.is_some() {
            return;
        }
        b.steps += 1;
        if b.steps <= BALANCE_WARM_UP {
            return;
        }
        let n = self.devices.len();
        b.rows.resize(n, 0);
        b.seconds.resize(n, 0.0);
        for &(d, rows, s) in shards {
            b.rows[d] += rows;
            b.seconds[d] += s;
        }
        if b.steps == BALANCE_WARM_UP + BALANCE_STEPS {
            if b.rows.contains(&0) {
                // A device that got no rows (batches shorter than the devices) was not
                // measured: keep the configured shares.
                b.shares = Some(self.shares.clone());
                return;
            }
            let speed: Vec<f64> = (0..n)
                .map(|d| b.rows[d] as f64 / b.seconds[d].max(1e-12))
                .collect();
            let sum: f64 = speed.iter().sum();
            let shares: Vec<f64> = speed.iter().map(|v| v / sum * n as f64).collect();
            if let Ok(mut st) = self.stats.lock() {
                st.shares = shares.clone();
            }
            b.shares = Some(shares);
        }
    }

    /// Whether a step is split at all.
    pub fn is_single(&self) -> bool {
        self.devices.len() == 1 && self.collective.size() == 1
    }

    /// The main device.
    pub fn main(&self) -> &Device {
        &self.devices[0]
    }

    /// The windows of a batch of `total` rows this rank evaluates, one per local device: the
    /// batch is split evenly over the ranks (largest remainder), then this rank's part over
    /// its devices by [`DataParallel::shares`]. Empty windows (more shards than rows) are
    /// dropped.
    pub fn windows(&self, total: usize) -> Vec<(usize, RowWindow)> {
        let (start, len) = even_parts(total, self.collective.size())[self.collective.rank()];
        self.windows_in(start, len, total)
    }

    /// This rank's rows `start .. start + len` of a batch of `total` rows split over its
    /// devices by [`DataParallel::shares`] (per-rank data: the rank's rows are those of its
    /// shards). Empty windows are dropped.
    pub fn windows_in(&self, start: usize, len: usize, total: usize) -> Vec<(usize, RowWindow)> {
        let rank = self.collective.rank();
        split_rows(len, &self.current_shares())
            .into_iter()
            .enumerate()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(d, (o, n))| {
                (
                    d,
                    RowWindow {
                        offset: start + o,
                        len: n,
                        total,
                        shard: rank * self.devices.len() + d,
                    },
                )
            })
            .collect()
    }
}

/// Split `total` rows into contiguous parts proportional to `shares` (largest remainder, ties
/// to the earlier part): `(offset, len)` per share, lengths summing to `total`.
pub fn split_rows(total: usize, shares: &[f64]) -> Vec<(usize, usize)> {
    let sum: f64 = shares.iter().sum();
    let exact: Vec<f64> = shares.iter().map(|s| total as f64 * s / sum).collect();
    let mut lens: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut left = total - lens.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        fb.partial_cmp(&fa)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    for &i in &order {
        if left == 0 {
            break;
        }
        lens[i] += 1;
        left -= 1;
    }
    let mut offset = 0;
    lens.into_iter()
        .map(|n| {
            let part = (offset, n);
            offset += n;
            part
        })
        .collect()
}

pub use varphi_data::even_parts;

/// The float parameters of `module` in visiting order: ids and shapes.
fn parameter_layout<M: Module>(module: &M) -> Vec<(ParamId, Vec<usize>)> {
    struct Layout(Vec<(ParamId, Vec<usize>)>);
    impl ModuleVisitor for Layout {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push((param.id, param.val().dims().to_vec()));
        }
    }
    let mut v = Layout(Vec::new());
    module.visit(&mut v);
    v.0
}

/// Every float parameter of `module`, flattened in visiting order (host, `f64`).
pub fn flat_parameters<M: Module>(module: &M) -> Vec<f64> {
    struct Flat(Vec<f64>);
    impl ModuleVisitor for Flat {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data().convert::<f64>();
            self.0.extend(data.iter::<f64>());
        }
    }
    let mut v = Flat(Vec::new());
    module.visit(&mut v);
    v.0
}

/// Sum `grads` (of `module`, on `device`) over the ranks of `collective` (adding the time of
/// the MPI call itself to `allreduce_ms`): every
/// parameter's gradient flattened into one device tensor (in `module`'s order; parameters
/// without a gradient on this rank count as zeros, so the ranks always agree on the layout),
/// staged to the host once, summed in `f64` by one all-reduce, and split again on the device.
pub fn all_reduce_gradients<M: Module>(
    module: &M,
    grads: GradientsParams,
    device: &Device,
    collective: &dyn Collective,
    allreduce_ms: Option<&mut f64>,
) -> GradientsParams {
    if collective.size() == 1 {
        return grads;
    }
    let mut grads = grads;
    let layout = parameter_layout(module);
    let mut pieces = Vec::with_capacity(layout.len());
    let mut dtype = None;
    for (id, shape) in &layout {
        let n: usize = shape.iter().product();
        let piece = match take_flat(&mut grads, *id, shape.len()) {
            Some(t) => {
                dtype.get_or_insert(t.dtype());
                t
            }
            None => Tensor::<1>::zeros([n], device),
        };
        pieces.push(piece);
    }
    if pieces.is_empty() {
        return grads;
    }
    let flat = Tensor::cat(pieces, 0);
    let dtype = dtype.unwrap_or(flat.dtype());
    let data = flat.into_data();
    let mut host: Vec<f64> = if data.dtype() == burn::tensor::DType::F32 {
        let v = data.try_into_vec::<f32>().expect("f32 gradients");
        v.into_iter().map(f64::from).collect()
    } else {
        data.convert::<f64>()
            .try_into_vec::<f64>()
            .expect("f64 gradients")
    };
    let t = std::time::Instant::now();
    collective.all_reduce_sum(&mut host);
    if let Some(ms) = allreduce_ms {
        *ms += t.elapsed().as_secs_f64() * 1e3;
    }
    let total = host.len();
    let summed = if dtype == burn::tensor::DType::F64 {
        Tensor::<1>::from_data(TensorData::new(host, [total]), device)
    } else {
        let v: Vec<f32> = host.into_iter().map(|x| x as f32).collect();
        Tensor::<1>::from_data(TensorData::new(v, [total]), device)
    };
    let summed = if summed.dtype() != dtype {
        summed.cast(dtype)
    } else {
        summed
    };
    let mut out = GradientsParams::new();
    let mut at = 0;
    for (id, shape) in &layout {
        let n: usize = shape.iter().product();
        register(&mut out, *id, shape, summed.clone().narrow(0, at, n));
        at += n;
    }
    out
}

/// Remove the gradient of parameter `id` (of tensor rank `rank`) from `grads`, flattened.
fn take_flat(grads: &mut GradientsParams, id: ParamId, rank: usize) -> Option<Tensor<1>> {
    fn take<const D: usize>(grads: &mut GradientsParams, id: ParamId) -> Option<Tensor<1>> {
        let t = grads.remove::<D>(id)?;
        let n = t.shape().num_elements();
        Some(t.reshape([n]))
    }
    match rank {
        1 => take::<1>(grads, id),
        2 => take::<2>(grads, id),
        3 => take::<3>(grads, id),
        4 => take::<4>(grads, id),
        5 => take::<5>(grads, id),
        6 => take::<6>(grads, id),
        r => panic!("parameters of rank {r} are not supported by the all-reduce"),
    }
}

/// Register the flat `values` as the gradient of `id`, reshaped to `shape`.
fn register(out: &mut GradientsParams, id: ParamId, shape: &[usize], values: Tensor<1>) {
    fn put<const D: usize>(
        out: &mut GradientsParams,
        id: ParamId,
        shape: &[usize],
        values: Tensor<1>,
    ) {
        let dims: [usize; D] = shape.try_into().expect("rank D");
        out.register(id, values.reshape(dims));
    }
    match shape.len() {
        1 => put::<1>(out, id, shape, values),
        2 => put::<2>(out, id, shape, values),
        3 => put::<3>(out, id, shape, values),
        4 => put::<4>(out, id, shape, values),
        5 => put::<5>(out, id, shape, values),
        6 => put::<6>(out, id, shape, values),
        r => panic!("parameters of rank {r} are not supported by the all-reduce"),
    }
}

/// The largest difference of `module`'s parameters between this rank and the ranks' mean
/// (0 when every rank holds the same weights): one all-reduce, to check identical
/// initialisation or a resumed checkpoint before training.
pub fn parameter_spread<M: Module>(module: &M, collective: &dyn Collective) -> f64 {
    if collective.size() == 1 {
        return 0.0;
    }
    let mine = flat_parameters(module);
    let mut sum = mine.clone();
    collective.all_reduce_sum(&mut sum);
    let n = collective.size() as f64;
    let local = mine
        .iter()
        .zip(&sum)
        .map(|(a, s)| (a - s / n).abs())
        .fold(0.0, f64::max);
    // Every rank's spread, so that all ranks agree on the verdict.
    let mut all = vec![0.0; collective.size()];
    all[collective.rank()] = local;
    collective.all_reduce_sum(&mut all);
    all.into_iter().fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_by_shares_cover_the_batch_once() {
        assert_eq!(split_rows(10, &[1.0, 1.0]), vec![(0, 5), (5, 5)]);
        assert_eq!(split_rows(11, &[1.0, 1.0]), vec![(0, 6), (6, 5)]);
        assert_eq!(split_rows(10, &[3.0, 1.0]), vec![(0, 8), (8, 2)]);
        assert_eq!(
            split_rows(7, &[1.0, 1.0, 1.0]),
            vec![(0, 3), (3, 2), (5, 2)]
        );
        assert_eq!(split_rows(1, &[1.0, 1.0]), vec![(0, 1), (1, 0)]);
        for total in 0..40 {
            let parts = split_rows(total, &[0.3, 1.0, 2.5]);
            assert_eq!(parts.iter().map(|p| p.1).sum::<usize>(), total);
            let mut at = 0;
            for (o, n) in parts {
                assert_eq!(o, at);
                at += n;
            }
        }
    }

    #[test]
    fn windows_number_the_shards_and_skip_empty_ones() {
        let dp = DataParallel::new(
            vec![Device::flex(), Device::flex()],
            vec![1.0, 1.0],
            Arc::new(SingleProcess),
        );
        let w = dp.windows(9);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].1.offset, w[0].1.len, w[0].1.shard), (0, 5, 0));
        assert_eq!((w[1].1.offset, w[1].1.len, w[1].1.shard), (5, 4, 1));
        assert!(w.iter().all(|(_, r)| r.total == 9));
        assert_eq!(dp.windows(1).len(), 1);
    }
}
