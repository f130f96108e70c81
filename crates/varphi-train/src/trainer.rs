//! A short, generic training loop; progress, metrics, checkpoints and the NaN guard are
//! observers.

use crate::error::TrainError;
use crate::noise::RowWindow;
use crate::parallel::DataParallel;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use std::time::Instant;
use varphi_data::{Batcher, Dataset, ShardPart};

/// Result of one objective evaluation on a batch.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// Scalar loss to backpropagate, `[1]`.
    pub loss: Tensor<1>,
    /// Named batch means for logging (first entry is the loss).
    pub terms: Vec<(&'static str, f64)>,
    /// KL weight in force, if the objective has one.
    pub beta: Option<f64>,
}

/// An objective the trainer can minimise.
pub trait Objective<M> {
    /// Evaluate on a batch. `noise_stream` separates training (0) from evaluation noise.
    fn step(
        &self,
        model: &M,
        x: Tensor<2>,
        cond: Option<Tensor<2>>,
        step: usize,
        noise_stream: u64,
    ) -> StepOutput;

    /// Evaluate on the rows `rows` of a batch (one data-parallel shard); `x` and `cond` hold
    /// only those rows, and the returned loss is their mean (the trainer weights it by
    /// [`RowWindow::weight`]). An objective whose [`Objective::rows_exact`] is true draws each
    /// row's noise as in the whole batch, so the weighted shards give the unsharded gradient
    /// to rounding. The default draws the shard's noise from a sub-stream of its own
    /// (`noise_stream + (1 + shard)·2²⁴`): the same distribution, not the same numbers.
    fn step_rows(
        &self,
        model: &M,
        x: Tensor<2>,
        cond: Option<Tensor<2>>,
        step: usize,
        noise_stream: u64,
        rows: RowWindow,
    ) -> StepOutput {
        if rows.is_whole() {
            self.step(model, x, cond, step, noise_stream)
        } else {
            self.step(
                model,
                x,
                cond,
                step,
                noise_stream + ((1 + rows.shard as u64) << 24),
            )
        }
    }

    /// Whether [`Objective::step_rows`] reproduces the unsharded step: a mean over rows of
    /// per-row terms with the unsharded noise (no batch statistics such as MMD or free bits).
    fn rows_exact(&self) -> bool {
        false
    }
}

/// Why training ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Termination {
    /// All epochs ran.
    Completed,
    /// An observer (early stopping) ended training after `epoch` (0-based).
    Stopped {
        /// The last epoch run.
        epoch: usize,
        /// Why, in words.
        reason: String,
    },
    /// A loss term became NaN or infinite; no update was applied for that step.
    NonFinite {
        /// Term name.
        term: String,
        /// Its value.
        value: f64,
        /// Epoch.
        epoch: usize,
        /// Step.
        step: usize,
    },
}

/// Per-step report to observers.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Global step (0-based).
    pub step: usize,
    /// Named terms.
    pub terms: Vec<(&'static str, f64)>,
}

/// Per-epoch report to observers.
#[derive(Debug, Clone)]
pub struct EpochRecord {
    /// Epoch just finished (0-based).
    pub epoch: usize,
    /// Steps done so far.
    pub steps_done: usize,
    /// Mean training terms over the epoch.
    pub train: Vec<(&'static str, f64)>,
    /// Mean test terms (empty when there is no test set).
    pub test: Vec<(&'static str, f64)>,
    /// Mean validation terms (empty when there is no validation set).
    pub validation: Vec<(&'static str, f64)>,
    /// KL weight at the end of the epoch.
    pub beta: Option<f64>,
    /// Seconds since the loop started (this session).
    pub elapsed_s: f64,
}

/// Static facts about a fit, given to observers at start.
#[derive(Debug, Clone)]
pub struct FitInfo {
    /// First epoch of this session (> 0 when resuming).
    pub start_epoch: usize,
    /// Total epochs.
    pub epochs: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
}

/// Hooks called by [`fit`]. Errors abort training.
pub trait Observer<M> {
    /// Before the first step.
    fn on_start(&mut self, _info: &FitInfo) -> Result<(), TrainError> {
        Ok(())
    }
    /// After each optimiser step.
    fn on_step(&mut self, _record: &StepRecord) -> Result<(), TrainError> {
        Ok(())
    }
    /// After each epoch, with the current model and optimiser (for checkpoints).
    fn on_epoch_end(
        &mut self,
        _record: &EpochRecord,
        _model: &M,
        _optim: &ModuleOptimizer,
    ) -> Result<(), TrainError> {
        Ok(())
    }
    /// Asked after every epoch's `on_epoch_end`: `Some(reason)` ends training.
    fn stop(&self) -> Option<String> {
        None
    }
    /// Once, at the end, with the final model and optimiser.
    fn on_finish(
        &mut self,
        _termination: &Termination,
        _model: &M,
        _optim: &ModuleOptimizer,
    ) -> Result<(), TrainError> {
        Ok(())
    }
}

/// Everything [`fit`] needs besides the model and optimiser.
pub struct FitSpec<'a> {
    /// Training split (normalised).
    pub train: &'a Dataset,
    /// Test split (normalised), evaluated after every epoch.
    pub test: Option<&'a Dataset>,
    /// Validation split (normalised), evaluated after every epoch (early stopping).
    pub validation: Option<&'a Dataset>,
    /// Batch order.
    pub batcher: Batcher,
    /// Learning rate (the initial one when `lr_final` is set).
    pub lr: f64,
    /// Cosine decay to this learning rate at the last step:
    /// `lr_t = lr_final + ½(lr − lr_final)(1 + cos(π t / T))`, `T` = all steps of the run.
    pub lr_final: Option<f64>,
    /// First epoch (resume).
    pub start_epoch: usize,
    /// Total epochs.
    pub epochs: usize,
    /// The autodiff device.
    pub device: Device,
    /// Data-parallel replicas ([`DataParallel::single`] for the plain step on `device`).
    pub parallel: DataParallel,
    /// Per-rank data: the shards of the training split `train` holds (of `batcher.shards`),
    /// and the rows of the whole split. `None`: `train` is the whole split.
    pub part: Option<(ShardPart, usize)>,
}

impl FitSpec<'_> {
    /// The learning rate of optimiser step `step` (see [`FitSpec::lr_final`]).
    pub fn lr_at(&self, step: usize, steps_per_epoch: usize) -> f64 {
        match self.lr_final {
            None => self.lr,
            Some(end) => cosine_lr(self.lr, end, step, self.epochs * steps_per_epoch),
        }
    }
}

/// `end + ½(start − end)(1 + cos(π t / total))`, held at `end` after `total` steps.
pub fn cosine_lr(start: f64, end: f64, step: usize, total: usize) -> f64 {
    let t = (step as f64 / total.max(1) as f64).min(1.0);
    end + 0.5 * (start - end) * (1.0 + (std::f64::consts::PI * t).cos())
}

fn mean_terms(sum: &[(&'static str, f64)], n: usize) -> Vec<(&'static str, f64)> {
    sum.iter().map(|(k, v)| (*k, v / n.max(1) as f64)).collect()
}

fn accumulate(sum: &mut Vec<(&'static str, f64)>, terms: &[(&'static str, f64)], w: f64) {
    if sum.is_empty() {
        sum.extend(terms.iter().map(|(k, v)| (*k, v * w)));
    } else {
        for (s, (_, v)) in sum.iter_mut().zip(terms) {
            s.1 += v * w;
        }
    }
}

/// Evaluate an objective on a whole dataset without gradients; returns sample-weighted means.
///
/// `step` is the training step the evaluation belongs to (schedules such as KL warm-up use it);
/// batch `i` draws its noise from stream `1 + i`, apart from training's stream 0.
pub fn evaluate<M: Module, O: Objective<M>>(
    model: &M,
    objective: &O,
    data: &Dataset,
    batch_size: usize,
    device: &Device,
    step: usize,
) -> Vec<(&'static str, f64)> {
    let valid = model.valid();
    let device = device.clone().without_autodiff();
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut sum = Vec::new();
    for (i, chunk) in idx.chunks(batch_size.max(1)).enumerate() {
        let (x, cond) = data.batch(chunk, &device);
        let out = objective.step(&valid, x, cond, step, 1 + i as u64);
        accumulate(&mut sum, &out.terms, chunk.len() as f64);
    }
    mean_terms(&sum, data.len())
}

/// One step's rows as this process sees them: `rows` (indices into the process's training
/// data) are rows `offset .. offset + rows.len()` of a batch of `total` rows.
struct StepRows {
    rows: Vec<usize>,
    offset: usize,
    total: usize,
}

/// The batches of epoch `epoch` for this process: with all the data, each batch's rank window
/// ([`DataParallel::windows`]); with per-rank data (`part`), the rows of the shards it holds.
fn epoch_rows(
    batcher: &Batcher,
    n_local: usize,
    part: Option<&(ShardPart, usize)>,
    parallel: &DataParallel,
    epoch: usize,
) -> Vec<StepRows> {
    let Some((part, n)) = part else {
        let (ranks, rank) = (parallel.collective.size(), parallel.collective.rank());
        return batcher
            .epoch(n_local, epoch)
            .into_iter()
            .map(|batch| {
                let (offset, len) = crate::parallel::even_parts(batch.len(), ranks)[rank];
                StepRows {
                    rows: batch[offset..offset + len].to_vec(),
                    offset,
                    total: batch.len(),
                }
            })
            .collect();
    };
    let first_row = batcher.shard_rows(*n, part.first).0;
    let held = part.first..part.first + part.count;
    batcher
        .shard_batches(*n, epoch)
        .into_iter()
        .map(|shards| StepRows {
            offset: shards[..held.start].iter().map(Vec::len).sum(),
            total: shards.iter().map(Vec::len).sum(),
            rows: shards[held.clone()]
                .iter()
                .flatten()
                .map(|i| i - first_row)
                .collect(),
        })
        .collect()
}

/// One data-parallel step: this rank's rows of a batch split over the devices of
/// `parallel`, each part evaluated with [`Objective::step_rows`] on its device and weighted by
/// its share of the batch, the gradients summed on the main device and over the ranks. Returns
/// the batch's terms (the same weighted sum, equal on every rank), β and the gradient (none
/// when a term is not finite on any rank; every rank then stops at the same step).
fn sharded_step<M: Module, O: Objective<M> + Sync>(
    model: &M,
    objective: &O,
    train: &Dataset,
    batch: &StepRows,
    step: usize,
    parallel: &DataParallel,
) -> (
    Vec<(&'static str, f64)>,
    Option<f64>,
    Option<GradientsParams>,
) {
    let started = Instant::now();
    let mut comm = std::time::Duration::ZERO;
    let main = parallel.main();
    // One shard: forward and backward of its rows on its device (its gradient stays there).
    let shard = |replica: M, d: usize, window: RowWindow, weight: f64| {
        let t = Instant::now();
        let device = &parallel.devices[d];
        let replica = if d == 0 {
            replica
        } else {
            replica.fork(device)
        };
        // A weight-0 stand-in row when this rank has none in the batch (see below).
        let local = window.offset.saturating_sub(batch.offset);
        let rows = batch
            .rows
            .get(local..local + window.len)
            .filter(|_| weight > 0.0);
        let rows = rows.unwrap_or(&[0]);
        let (x, cond) = train.batch(rows, device);
        let out = objective.step_rows(&replica, x, cond, step, 0, window);
        let finite = out.terms.iter().all(|(_, v)| v.is_finite());
        let grads = finite.then(|| {
            let grads = out.loss.mul_scalar(weight).backward();
            GradientsParams::from_grads(grads, &replica)
        });
        (
            (d, window, weight),
            out.terms,
            out.beta,
            grads,
            t.elapsed().as_secs_f64(),
        )
    };
    let mut windows: Vec<_> = parallel
        .windows_in(batch.offset, batch.rows.len(), batch.total)
        .into_iter()
        .map(|(d, w)| (d, w, w.weight()))
        .collect();
    if windows.is_empty() {
        // More ranks than rows (a short last batch): this rank evaluates one row with weight
        // 0, so that its terms and gradient have the layout the all-reduces expect and add
        // nothing.
        // (Offset 0: the window must lie in the batch, which may end before this rank's rows.)
        let rows = RowWindow {
            offset: 0,
            len: 1,
            total: batch.total,
            shard: parallel.collective.rank() * parallel.devices.len(),
        };
        windows.push((0, rows, 0.0));
    }
    // The other devices' shards on threads of their own, the main device's on this one.
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = windows[1..]
            .iter()
            .map(|&(d, w, weight)| {
                let replica = model.clone();
                let shard = &shard;
                scope.spawn(move || shard(replica, d, w, weight))
            })
            .collect();
        let (d, w, weight) = windows[0];
        let first = shard(model.clone(), d, w, weight);
        std::iter::once(first)
            .chain(
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a data-parallel shard panicked")),
            )
            .collect()
    });
    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut terms: Vec<(&'static str, f64)> = Vec::new();
    let mut beta = None;
    let mut finite = true;
    let timing: Vec<(usize, usize, f64)> = results
        .iter()
        .map(|((d, w, _), _, _, _, secs)| (*d, w.len, *secs))
        .collect();
    parallel.observe(&timing);
    for ((d, _, weight), shard_terms, shard_beta, grads, _) in results {
        accumulate(&mut terms, &shard_terms, weight);
        beta = beta.or(shard_beta);
        match grads {
            Some(grads) if finite => {
                let grads = if d == 0 {
                    grads
                } else {
                    let t = Instant::now();
                    let g = grads.to_device(main, model);
                    comm += t.elapsed();
                    g
                };
                accumulator.accumulate(model, grads);
            }
            _ => finite = false,
        }
    }
    let collective = parallel.collective.as_ref();
    let record = |comm: std::time::Duration, parts: (f64, f64)| {
        if let Ok(mut s) = parallel.stats.lock() {
            s.record(started.elapsed().as_secs_f64(), comm.as_secs_f64(), parts);
        }
    };
    if collective.size() > 1 {
        // The terms and a finiteness flag in one all-reduce: every rank sees the batch's terms.
        let t = Instant::now();
        let mut flat: Vec<f64> = terms.iter().map(|(_, v)| *v).collect();
        flat.push(if finite { 0.0 } else { 1.0 });
        collective.all_reduce_sum(&mut flat);
        finite = flat.pop() == Some(0.0);
        for (t, v) in terms.iter_mut().zip(flat) {
            t.1 = v;
        }
        let wait = t.elapsed();
        comm += wait;
        if finite {
            let grads = accumulator.grads();
            let t = Instant::now();
            let mut allreduce_ms = 0.0;
            let grads = crate::parallel::all_reduce_gradients(
                model,
                grads,
                main,
                collective,
                Some(&mut allreduce_ms),
            );
            comm += t.elapsed();
            record(comm, (wait.as_secs_f64() * 1e3, allreduce_ms));
            return (terms, beta, Some(grads));
        }
        // A non-finite term on some rank: make sure the terms say so everywhere.
        if terms.iter().all(|(_, v)| v.is_finite())
            && let Some(t) = terms.first_mut()
        {
            t.1 = f64::NAN;
        }
        return (terms, beta, None);
    }
    let grads = finite.then(|| accumulator.grads());
    record(comm, (0.0, 0.0));
    (terms, beta, grads)
}

/// Train `model` with Adam-style `optim` on `objective`; returns the final model, optimiser
/// and why it stopped.
///
/// The loop per step: evaluate the loss, check every term is finite (else stop *before*
/// updating, so the last checkpoint stays good), backpropagate, step the optimiser.
pub fn fit<M: Module, O: Objective<M> + Sync>(
    mut model: M,
    mut optim: ModuleOptimizer,
    objective: &O,
    spec: FitSpec<'_>,
    observers: &mut [Box<dyn Observer<M> + '_>],
) -> Result<(M, ModuleOptimizer, Termination), TrainError> {
    // Rows of the whole training split (per-rank data: of all ranks' shards).
    let n = spec.part.map_or(spec.train.len(), |(_, n)| n);
    let steps_per_epoch = spec.batcher.batches_per_epoch(n);
    let info = FitInfo {
        start_epoch: spec.start_epoch,
        epochs: spec.epochs,
        steps_per_epoch,
    };
    for o in observers.iter_mut() {
        o.on_start(&info)?;
    }
    let collective = spec.parallel.collective.as_ref();
    let spread = crate::parallel::parameter_spread(&model, collective);
    if spread > 0.0 {
        return Err(TrainError::Parallel(format!(
            "the {} ranks start from different weights (largest difference {spread:.3e}); every rank must run the same config with the same seed (and, resuming, the same run directory on a shared file system)",
            collective.size()
        )));
    }
    let start = Instant::now();
    let mut step = spec.start_epoch * steps_per_epoch;
    let mut termination = Termination::Completed;
    'epochs: for epoch in spec.start_epoch..spec.epochs {
        let mut sum = Vec::new();
        let mut beta = None;
        let batches = epoch_rows(
            &spec.batcher,
            spec.train.len(),
            spec.part.as_ref(),
            &spec.parallel,
            epoch,
        );
        for batch in batches {
            let (terms, step_beta, grads) = if spec.parallel.is_single() {
                let (x, cond) = spec.train.batch(&batch.rows, &spec.device);
                let out = objective.step(&model, x, cond, step, 0);
                let grads = out
                    .terms
                    .iter()
                    .all(|(_, v)| v.is_finite())
                    .then(|| GradientsParams::from_grads(out.loss.backward(), &model));
                (out.terms, out.beta, grads)
            } else {
                sharded_step(&model, objective, spec.train, &batch, step, &spec.parallel)
            };
            if let Some((term, value)) = terms.iter().find(|(_, v)| !v.is_finite()) {
                termination = Termination::NonFinite {
                    term: term.to_string(),
                    value: *value,
                    epoch,
                    step,
                };
                break 'epochs;
            }
            beta = step_beta;
            let grads = grads.expect("finite terms come with gradients");
            model = optim.step(spec.lr_at(step, steps_per_epoch), model, grads);
            accumulate(&mut sum, &terms, batch.total as f64);
            let record = StepRecord { epoch, step, terms };
            for o in observers.iter_mut() {
                o.on_step(&record)?;
            }
            step += 1;
        }
        // Only rank 0 reports and decides on early stopping: the others skip the evaluations.
        let reports = spec.parallel.collective.rank() == 0;
        let eval = |d: Option<&Dataset>| {
            d.filter(|_| reports)
                .map(|t| {
                    evaluate(
                        &model,
                        objective,
                        t,
                        spec.batcher.batch_size,
                        &spec.device,
                        step.saturating_sub(1),
                    )
                })
                .unwrap_or_default()
        };
        let record = EpochRecord {
            epoch,
            steps_done: step,
            train: mean_terms(&sum, n),
            test: eval(spec.test),
            validation: eval(spec.validation),
            beta,
            elapsed_s: start.elapsed().as_secs_f64(),
        };
        for o in observers.iter_mut() {
            o.on_epoch_end(&record, &model, &optim)?;
        }
        // Rank 0's observers decide for every rank.
        let reason = observers.iter().find_map(|o| o.stop());
        let collective = spec.parallel.collective.as_ref();
        let reason = if collective.size() > 1 {
            let stop = crate::parallel::broadcast_flag(collective, reason.is_some());
            stop.then(|| crate::parallel::broadcast_string(collective, &reason.unwrap_or_default()))
        } else {
            reason
        };
        if let Some(reason) = reason {
            termination = Termination::Stopped { epoch, reason };
            break;
        }
    }
    for o in observers.iter_mut() {
        o.on_finish(&termination, &model, &optim)?;
    }
    Ok((model, optim, termination))
}

#[cfg(test)]
mod tests {
    use super::cosine_lr;

    #[test]
    fn cosine_schedule_runs_from_start_to_end() {
        assert_eq!(cosine_lr(1e-3, 1e-5, 0, 100), 1e-3);
        assert!((cosine_lr(1e-3, 1e-5, 50, 100) - 0.5 * (1e-3 + 1e-5)).abs() < 1e-15);
        // cos(π/4): ½(1 + √2/2) of the way from end to start.
        let q = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
        assert!((cosine_lr(1e-3, 1e-5, 25, 100) - q).abs() < 1e-15);
        assert!((cosine_lr(1e-3, 1e-5, 100, 100) - 1e-5).abs() < 1e-18);
        assert!((cosine_lr(1e-3, 1e-5, 250, 100) - 1e-5).abs() < 1e-18);
    }
}
