//! Checkpoints written atomically into a run directory.
//!
//! Layout: `RUN/checkpoint/{model.bpk, optimizer.bpk, state.json}` (burnpack files). A new
//! checkpoint is written to `RUN/.checkpoint.tmp`, the old one is renamed to
//! `RUN/.checkpoint.old`, the new one renamed into place, and the old one removed. A crash at
//! any point leaves at least one complete checkpoint, and [`load`] falls back to `.old`.

use crate::error::{TrainError, io_err};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Training progress stored beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimiser steps completed.
    pub steps_done: usize,
    /// The run's seed (batch order and noise derive from it and the epoch/step).
    pub seed: u64,
    /// Backend that wrote it.
    pub backend: String,
    /// varphi version that wrote it.
    pub varphi_version: String,
}

/// `RUN/checkpoint`.
pub fn dir(run: &Path) -> PathBuf {
    run.join("checkpoint")
}

fn run_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Run {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Make `tmp` an empty folder holding `model.bpk`, the weights of `model`.
fn fresh_with_weights<M: Module + Clone>(tmp: &Path, model: &M) -> Result<(), TrainError> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(io_err(tmp))?;
    }
    std::fs::create_dir_all(tmp).map_err(io_err(tmp))?;
    model
        .clone()
        .save_file(tmp.join("model.bpk"))
        .map_err(|e| run_err(tmp, format!("cannot write model weights: {e:?}")))?;
    Ok(())
}

/// Flush `files` of folder `dir` to disk.
fn sync(dir: &Path, files: &[&str]) -> Result<(), TrainError> {
    for f in files {
        let p = dir.join(f);
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&p))?;
    }
    Ok(())
}

/// Write a checkpoint atomically.
pub fn save<M: Module + Clone>(
    run: &Path,
    model: &M,
    optim: &ModuleOptimizer,
    state: &CheckpointState,
) -> Result<(), TrainError> {
    let tmp = run.join(".checkpoint.tmp");
    let old = run.join(".checkpoint.old");
    let dst = dir(run);
    fresh_with_weights(&tmp, model)?;
    optim
        .save(tmp.join("optimizer.bpk"))
        .map_err(|e| run_err(&tmp, format!("cannot write optimizer state: {e:?}")))?;
    let state_path = tmp.join("state.json");
    std::fs::write(
        &state_path,
        serde_json::to_string_pretty(state).expect("serialisable"),
    )
    .map_err(io_err(&state_path))?;
    sync(&tmp, &["model.bpk", "optimizer.bpk", "state.json"])?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    if dst.exists() {
        std::fs::rename(&dst, &old).map_err(io_err(&dst))?;
    }
    std::fs::rename(&tmp, &dst).map_err(io_err(&tmp))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(())
}

/// The checkpoint folder to read: `checkpoint`, or `.checkpoint.old` after an interrupted save.
pub fn find(run: &Path) -> Result<PathBuf, TrainError> {
    let dst = dir(run);
    if dst.join("state.json").is_file() {
        return Ok(dst);
    }
    let old = run.join(".checkpoint.old");
    if old.join("state.json").is_file() {
        return Ok(old);
    }
    Err(run_err(
        run,
        "no checkpoint found (expected checkpoint/state.json); is this a varphi run directory?",
    ))
}

/// Read the progress record.
pub fn load_state(run: &Path) -> Result<CheckpointState, TrainError> {
    let p = find(run)?.join("state.json");
    let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
    serde_json::from_str(&text).map_err(|e| run_err(&p, format!("corrupt checkpoint state: {e}")))
}

fn load_weights<M: Module>(ckpt: &Path, model: M) -> Result<M, TrainError> {
    let file = ckpt.join("model.bpk");
    // Reading the file and fitting it to the model fail for different reasons: a short or
    // garbled file, or weights of other layers (an edited config).
    let record = burn::store::ModuleRecord::load(&file).map_err(|e| {
        let run = ckpt.parent().unwrap_or(ckpt);
        let old = run.join(".checkpoint.old");
        let fallback = if old.join("model.bpk").is_file() && old != ckpt {
            format!(
                "an older checkpoint exists in {}: move it to {} to use it",
                old.display(),
                dir(run).display()
            )
        } else {
            "no older checkpoint (.checkpoint.old) exists; retrain the run".into()
        };
        run_err(
            &file,
            format!(
                "the weights file is truncated or corrupt ({}); {fallback}",
                format!("{e:?}").replace('\n', " ")
            ),
        )
    })?;
    model.try_load_record(record).map_err(|e| {
        run_err(
            &file,
            format!(
                "the weights do not fit the model of the run's config (was config.toml edited?): {}",
                format!("{e:?}").replace('\n', " ")
            ),
        )
    })
}

/// Load the last checkpoint's weights into `model` (built from the run's config).
pub fn load_model<M: Module>(run: &Path, model: M) -> Result<(M, CheckpointState), TrainError> {
    let ckpt = find(run)?;
    let state = load_state(run)?;
    Ok((load_weights(&ckpt, model)?, state))
}

/// Load the last checkpoint's weights into `model` and its optimiser state into `optim`
/// (resume).
pub fn load_with_optimizer<M: Module>(
    run: &Path,
    model: M,
    optim: ModuleOptimizer,
) -> Result<(M, ModuleOptimizer, CheckpointState), TrainError> {
    let ckpt = find(run)?;
    let state = load_state(run)?;
    let model = load_weights(&ckpt, model)?;
    let optim = optim
        .load(ckpt.join("optimizer.bpk"))
        .map_err(|e| run_err(&ckpt, format!("cannot load optimizer state: {e:?}")))?;
    Ok((model, optim, state))
}

/// Give every float parameter of `model` the float dtype of `device` (weights are stored in the
/// dtype they were trained in; loading an f32 run into a module built on an f64 device keeps
/// f32 parameters, which then cannot meet f64 inputs).
pub fn cast_floats<M: Module>(model: M, device: &burn::prelude::Device) -> M {
    use burn::module::{ModuleMapper, Param};
    use burn::prelude::*;
    struct Cast {
        device: Device,
        dtype: burn::tensor::DType,
    }
    impl ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let t = param.val();
            if t.dtype() == self.dtype {
                return param;
            }
            let data = t.into_data().convert_dtype(self.dtype);
            Param::from_tensor(Tensor::from_data(data, &self.device))
        }
    }
    let dtype = Tensor::<1>::zeros([1], device).dtype();
    model.map(&mut Cast {
        device: device.clone(),
        dtype,
    })
}

/// The best checkpoint of an early-stopped run (`RUN/best/best.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestState {
    /// Epoch (1-based) of the best validation value.
    pub epoch: usize,
    /// The metric, as in metrics.csv (`val_loss`).
    pub metric: String,
    /// Its value at `epoch`.
    pub value: f64,
    /// The epoch training stopped after, if it stopped early.
    #[serde(default)]
    pub stopped_at: Option<usize>,
}

/// `RUN/best`.
pub fn best_dir(run: &Path) -> PathBuf {
    run.join("best")
}

/// Write `model` as the best checkpoint atomically (`RUN/.best.tmp` renamed to `RUN/best`).
pub fn save_best<M: Module + Clone>(
    run: &Path,
    model: &M,
    state: &BestState,
) -> Result<(), TrainError> {
    let tmp = run.join(".best.tmp");
    fresh_with_weights(&tmp, model)?;
    let p = tmp.join("best.json");
    std::fs::write(
        &p,
        serde_json::to_string_pretty(state).expect("serialisable"),
    )
    .map_err(io_err(&p))?;
    sync(&tmp, &["model.bpk", "best.json"])?;
    let dst = best_dir(run);
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(io_err(&dst))?;
    }
    std::fs::rename(&tmp, &dst).map_err(io_err(&tmp))
}

/// Whether run `run` has a best checkpoint (`RUN/best/best.json`).
pub fn has_best(run: &Path) -> bool {
    best_dir(run).join("best.json").is_file()
}

/// Rewrite `RUN/best/best.json` (e.g. to record where training stopped).
pub fn write_best_state(run: &Path, state: &BestState) -> Result<(), TrainError> {
    let p = best_dir(run).join("best.json");
    std::fs::write(
        &p,
        serde_json::to_string_pretty(state).expect("serialisable"),
    )
    .map_err(io_err(&p))
}

/// Read `RUN/best/best.json`.
pub fn load_best_state(run: &Path) -> Result<BestState, TrainError> {
    let p = best_dir(run).join("best.json");
    let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
    serde_json::from_str(&text)
        .map_err(|e| run_err(&p, format!("corrupt best-checkpoint state: {e}")))
}

/// Load the best checkpoint's weights into `model`.
pub fn load_best<M: Module>(run: &Path, model: M) -> Result<(M, BestState), TrainError> {
    let state = load_best_state(run)?;
    Ok((load_weights(&best_dir(run), model)?, state))
}
