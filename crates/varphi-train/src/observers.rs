//! Standard observers: progress display, metrics CSV, checkpoints.

use crate::checkpoint::{self, CheckpointState};
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
        line += &format!("  ({:.1}s)", r.elapsed_s);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
        Ok(())
    }

    fn on_finish(&mut self, _: &Termination) -> Result<(), TrainError> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        Ok(())
    }
}

/// Appends one row per epoch to `metrics.csv`:
/// `epoch,step,elapsed_s,beta,train_<term>…,test_<term>…`.
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
                .map(|(_, v)| format!("{v:.6e}")),
        );
        out += &(row.join(",") + "\n");
        f.write_all(out.as_bytes()).map_err(io_err(&self.path))
    }
}

/// Writes an atomic checkpoint every `every` epochs and after the last one.
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
}

impl<M: Module + Clone> Observer<M> for Checkpointer {
    fn on_epoch_end(
        &mut self,
        r: &EpochRecord,
        model: &M,
        optim: &ModuleOptimizer,
    ) -> Result<(), TrainError> {
        let done = r.epoch + 1;
        if done % self.every == 0 || done == self.epochs {
            checkpoint::save(
                &self.run,
                model,
                optim,
                &CheckpointState {
                    epochs_done: done,
                    steps_done: r.steps_done,
                    seed: self.seed,
                    backend: self.backend.clone(),
                    varphi_version: env!("CARGO_PKG_VERSION").into(),
                },
            )?;
        }
        Ok(())
    }
}
