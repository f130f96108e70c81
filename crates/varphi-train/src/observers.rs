//! Standard observers: progress display, metrics CSV, checkpoints.

use crate::checkpoint::{self, BestState, CheckpointState};
use crate::config::{EarlyStoppingSection, StopMode};
use crate::error::{TrainError, io_err};
use crate::trainer::{EpochRecord, FitInfo, Observer, StepRecord, Termination};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

fn fmt_terms(terms: &[(&'static str, f64)]) -> String {
    terms
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join("  ")
}

/// An indicatif progress bar with the running terms when stderr is a terminal; otherwise one
/// plain line per epoch on stdout.
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    every: usize,
}

impl Progress {
    /// A progress observer. `quiet` suppresses everything.
    pub fn new(quiet: bool) -> Self {
        Self {
            bar: None,
            quiet,
            every: 1,
        }
    }
}

impl<M> Observer<M> for Progress {
    fn on_start(&mut self, info: &FitInfo) -> Result<(), TrainError> {
        if self.quiet {
            return Ok(());
        }
        let total = (info.epochs * info.steps_per_epoch) as u64;
        self.every = (info.steps_per_epoch / 10).max(1);
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} epoch {prefix} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta}) {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_position((info.start_epoch * info.steps_per_epoch) as u64);
            self.bar = Some(bar);
        }
        Ok(())
    }

    fn on_step(&mut self, r: &StepRecord) -> Result<(), TrainError> {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if r.step % self.every == 0 {
                bar.set_prefix(format!("{}", r.epoch + 1));
                bar.set_message(fmt_terms(&r.terms[..r.terms.len().min(4)]));
            }
        }
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        r: &EpochRecord,
        _: &M,
        _: &ModuleOptimizer,
    ) -> Result<(), TrainError> {
        if self.quiet {
            return Ok(());
        }
        let mut line = format!("epoch {:>3}  train: {}", r.epoch + 1, fmt_terms(&r.train));
        if !r.test.is_empty() {
            let test: Vec<_> = r
                .test
                .iter()
                .filter(|(k, _)| *k != "loss")
                .copied()
                .collect();
            line += &format!("  | test: {}", fmt_terms(&test));
        }
        if let Some((k, v)) = r.validation.first() {
            line += &format!("  | val {k} {v:.4}");
        }
        line += &format!("  ({:.1}s)", r.elapsed_s);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
        Ok(())
    }

    fn on_finish(&mut self, _: &Termination, _: &M, _: &ModuleOptimizer) -> Result<(), TrainError> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        Ok(())
    }
}

/// Appends one row per epoch to `metrics.csv`:
/// `epoch,step,elapsed_s,beta,train_<term>…,test_<term>…[,val_<term>…]`.
pub struct MetricsCsv {
    path: PathBuf,
    offset_s: f64,
}

impl MetricsCsv {
    /// Write to `path` (appending when it exists, e.g. on resume).
    pub fn new(path: PathBuf) -> Self {
        let offset_s = crate::plots::read_metrics(&path)
            .ok()
            .and_then(|rows| rows.last().and_then(|r| r.get("elapsed_s").copied()))
            .unwrap_or(0.0);
        Self { path, offset_s }
    }
}

impl<M> Observer<M> for MetricsCsv {
    fn on_epoch_end(
        &mut self,
        r: &EpochRecord,
        _: &M,
        _: &ModuleOptimizer,
    ) -> Result<(), TrainError> {
        let new = !self.path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        let mut out = String::new();
        if new {
            let mut header = vec![
                "epoch".to_string(),
                "step".into(),
                "elapsed_s".into(),
                "beta".into(),
            ];
            header.extend(r.train.iter().map(|(k, _)| format!("train_{k}")));
            header.extend(r.test.iter().map(|(k, _)| format!("test_{k}")));
            header.extend(r.validation.iter().map(|(k, _)| format!("val_{k}")));
            out += &(header.join(",") + "\n");
        }
        let mut row = vec![
            (r.epoch + 1).to_string(),
            r.steps_done.to_string(),
            format!("{:.3}", self.offset_s + r.elapsed_s),
            r.beta.map(|b| b.to_string()).unwrap_or_default(),
        ];
        row.extend(
            r.train
                .iter()
                .chain(&r.test)
                .chain(&r.validation)
                .map(|(_, v)| format!("{v:.6e}")),
        );
        out += &(row.join(",") + "\n");
        f.write_all(out.as_bytes()).map_err(io_err(&self.path))
    }
}

/// Writes an atomic checkpoint every `every` epochs and after the last one, including the last
/// one run when an observer stops training early.
pub struct Checkpointer {
    /// Run directory.
    pub run: PathBuf,
    /// Interval in epochs.
    pub every: usize,
    /// Total epochs.
    pub epochs: usize,
    /// Seed.
    pub seed: u64,
    /// Backend name.
    pub backend: String,
    /// The last epoch seen not yet checkpointed: `(epochs done, steps done)`.
    pub pending: Option<(usize, usize)>,
}

impl Checkpointer {
    fn save<M: Module + Clone>(
        &self,
        (epochs_done, steps_done): (usize, usize),
        model: &M,
        optim: &ModuleOptimizer,
    ) -> Result<(), TrainError> {
        checkpoint::save(
            &self.run,
            model,
            optim,
            &CheckpointState {
                epochs_done,
                steps_done,
                seed: self.seed,
                backend: self.backend.clone(),
                varphi_version: env!("CARGO_PKG_VERSION").into(),
            },
        )
    }
}

impl<M: Module + Clone> Observer<M> for Checkpointer {
    fn on_epoch_end(
        &mut self,
        r: &EpochRecord,
        model: &M,
        optim: &ModuleOptimizer,
    ) -> Result<(), TrainError> {
        let done = (r.epoch + 1, r.steps_done);
        self.pending = Some(done);
        if done.0 % self.every == 0 || done.0 == self.epochs {
            self.save(done, model, optim)?;
            self.pending = None;
        }
        Ok(())
    }

    fn on_finish(
        &mut self,
        termination: &Termination,
        model: &M,
        optim: &ModuleOptimizer,
    ) -> Result<(), TrainError> {
        // A non-finite loss keeps the last good checkpoint; an early stop checkpoints the
        // epoch it stopped after.
        if let (Termination::Stopped { .. }, Some(done)) = (termination, self.pending.take()) {
            self.save(done, model, optim)?;
        }
        Ok(())
    }
}

/// Early stopping on a validation metric: after every epoch, a better value than any before
/// saves the model as the best checkpoint (`RUN/best`, [`checkpoint::save_best`]); `patience`
/// epochs without one end training. Resumes from the state in `RUN/best/best.json`.
pub struct EarlyStopping {
    /// Run directory.
    pub run: PathBuf,
    /// The setting.
    pub spec: EarlyStoppingSection,
    /// The best so far.
    pub best: Option<BestState>,
    /// Epochs done (the last one seen).
    pub last_epoch: usize,
}

impl EarlyStopping {
    /// An observer for `run`, picking up the best checkpoint of an earlier session if any.
    pub fn new(run: PathBuf, spec: EarlyStoppingSection) -> Self {
        let best = checkpoint::load_best_state(&run).ok();
        let last_epoch = best.as_ref().map_or(0, |b| b.epoch);
        Self {
            run,
            spec,
            best,
            last_epoch,
        }
    }

    fn better(&self, value: f64) -> bool {
        match &self.best {
            None => true,
            Some(b) => match self.spec.mode() {
                StopMode::Min => value < b.value,
                StopMode::Max => value > b.value,
            },
        }
    }
}

impl<M: Module + Clone> Observer<M> for EarlyStopping {
    fn on_epoch_end(
        &mut self,
        r: &EpochRecord,
        model: &M,
        _: &ModuleOptimizer,
    ) -> Result<(), TrainError> {
        let metric = &self.spec.metric;
        let Some(&(_, value)) = r.validation.iter().find(|(k, _)| *k == metric.as_str()) else {
            let have: Vec<&str> = r.validation.iter().map(|(k, _)| *k).collect();
            return Err(TrainError::Invalid {
                key: "training.early_stopping.metric".into(),
                message: format!(
                    "\"{metric}\" is not a term of this objective; choose one of: {}",
                    have.join(", ")
                ),
            });
        };
        self.last_epoch = r.epoch + 1;
        if value.is_finite() && self.better(value) {
            let best = BestState {
                epoch: r.epoch + 1,
                metric: format!("val_{metric}"),
                value,
                stopped_at: None,
            };
            checkpoint::save_best(&self.run, model, &best)?;
            self.best = Some(best);
        }
        Ok(())
    }

    fn stop(&self) -> Option<String> {
        let best = self.best.as_ref()?;
        (self.last_epoch >= best.epoch + self.spec.patience).then(|| {
            format!(
                "no better {} for {} epochs; best at epoch {} ({} {:.6})",
                best.metric, self.spec.patience, best.epoch, best.metric, best.value
            )
        })
    }

    fn on_finish(
        &mut self,
        termination: &Termination,
        _: &M,
        _: &ModuleOptimizer,
    ) -> Result<(), TrainError> {
        if let (Termination::Stopped { epoch, .. }, Some(best)) = (termination, &mut self.best) {
            best.stopped_at = Some(epoch + 1);
            checkpoint::write_best_state(&self.run, best)?;
        }
        Ok(())
    }
}
