//! Train, evaluate and sample any kind: the config is parsed once, the registry picks the kind,
//! and these generic functions do the same steps for every [`Kind`] — run directory, data,
//! device, resume, the training loop with its observers, checkpoints, plots, `eval.json`.

use crate::backend::{BackendKind, select_device};
use crate::calibration::{self, CalibrationFile, Scorer};
use crate::checkpoint;
use crate::config::Common;
use crate::data::{self, TrainData};
use crate::error::TrainError;
use crate::experiment::TrainConfig;
use crate::kind::{Kind, KindVisitor, Loaded, PredictRequest, SampleRequest};
use crate::observers::{Checkpointer, MetricsCsv, Progress};
use crate::plots;
use crate::rundir;
use crate::trainer::{self, FitSpec, Observer, Termination};
use burn::grad_clipping::GradientClippingConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::prelude::*;
use std::path::{Path, PathBuf};

/// Options of `varphi train`.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Run directory (default: `runs/<config name>`, suffixed `-2`, `-3`, … if taken).
    pub out: Option<PathBuf>,
    /// Backend override.
    pub backend: Option<BackendKind>,
    /// Resume this run directory.
    pub resume: Option<PathBuf>,
    /// No progress output.
    pub quiet: bool,
    /// Skip the PNG plots.
    pub no_plots: bool,
    /// Run the config's small variant: `training.quick_epochs` (default epochs / 10) epochs.
    pub quick: bool,
    /// Data-parallel devices (overrides `training.devices`), e.g. `["flex", "flex"]`.
    pub devices: Option<Vec<String>>,
    /// Train in this process alone even under mpirun (an ensemble member of one rank).
    pub alone: bool,
    /// `(I, N)`: train only the ensemble members `m` with `m mod N = I` (one task of a job
    /// array; every task writes into the same `--out` folder).
    pub shard: Option<(usize, usize)>,
}

/// What a finished training run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Run directory.
    pub run_dir: PathBuf,
    /// Epochs completed in total.
    pub epochs_done: usize,
    /// Final mean training terms.
    pub last_train: Vec<(&'static str, f64)>,
    /// Final mean test terms.
    pub last_test: Vec<(&'static str, f64)>,
    /// Device description.
    pub device: String,
    /// Why training ended before its last epoch (early stopping), if it did.
    pub stopped: Option<String>,
    /// The best checkpoint kept (`RUN/best`), if early stopping is on.
    pub best: Option<checkpoint::BestState>,
    /// Members of an ensemble (`RUN/members/k`; 0 for a single run): the terms are their means.
    pub members: usize,
}

impl TrainSummary {
    /// Print the final terms and the files written.
    pub fn print(&self) {
        let fmt = |t: &[(&str, f64)]| {
            t.iter()
                .map(|(k, v)| format!("{k} {v:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.members > 0 {
            println!(
                "done: an ensemble of {} members, {} epochs each on {}",
                self.members, self.epochs_done, self.device
            );
            println!("  mean over members, train: {}", fmt(&self.last_train));
            println!("  mean over members, test:  {}", fmt(&self.last_test));
            println!(
                "  wrote {}/config.toml and the members' runs in {}/members/{{0…{}}}",
                self.run_dir.display(),
                self.run_dir.display(),
                self.members - 1
            );
            return;
        }
        println!("done: {} epochs on {}", self.epochs_done, self.device);
        if let Some(why) = &self.stopped {
            println!("  stopped early: {why}");
        }
        if let Some(b) = &self.best {
            println!(
                "  best checkpoint: epoch {} ({} {:.6}) in {}; eval, sample and predict use it (--last for the last)",
                b.epoch,
                b.metric,
                b.value,
                checkpoint::best_dir(&self.run_dir).display()
            );
        }
        println!("  train: {}", fmt(&self.last_train));
        println!("  test:  {}", fmt(&self.last_test));
        let written: Vec<&str> = [
            "config.toml",
            "metrics.csv",
            "checkpoint/",
            "best/",
            "loss.png",
            "samples.png",
        ]
        .into_iter()
        .filter(|f| self.run_dir.join(f.trim_end_matches('/')).exists())
        .collect();
        println!(
            "  wrote {}/{{{}}}",
            self.run_dir.display(),
            written.join(", ")
        );
    }
}

/// The config of `varphi train`: a new one from `config_path`, or a run's own for `--resume`
/// (optionally with more epochs from `config_path`). Returns the config, the run directory and
/// whether it resumes.
fn resolve(
    config_path: Option<&Path>,
    opts: &TrainOptions,
) -> Result<(TrainConfig, PathBuf, bool), TrainError> {
    match (&opts.resume, config_path) {
        (Some(run), given) => {
            let saved = rundir::config(run)?;
            let config = match given {
                None => saved,
                Some(p) => {
                    let new = TrainConfig::load(p)?;
                    let mut cmp = new.clone();
                    cmp.common.data = saved.common.data.clone();
                    cmp.common.training.epochs = saved.common.training.epochs;
                    cmp.common.training.backend = saved.common.training.backend;
                    if cmp != saved {
                        return Err(TrainError::Config {
                            path: p.to_path_buf(),
                            message: format!(
                                "differs from the config of {} in more than training.epochs; resume with the run's own config or start a new run",
                                run.display()
                            ),
                        });
                    }
                    let mut config = new;
                    config.common.data = saved.common.data;
                    config
                }
            };
            Ok((config, run.clone(), true))
        }
        (None, Some(p)) => {
            let mut config = TrainConfig::load(p)?;
            // `c.toml` has the parent "", which `absolute` refuses: the current folder.
            let base = p
                .parent()
                .filter(|b| !b.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            config.common.data = config
                .common
                .data
                .resolved(&std::path::absolute(base).unwrap_or(base.to_path_buf()));
            let dir = opts.out.clone().unwrap_or_else(|| rundir::fresh(p));
            Ok((config, dir, false))
        }
        (None, None) => Err(TrainError::Invalid {
            key: "config".into(),
            message: "give a config file, or --resume RUN_DIR".into(),
        }),
    }
}

/// Train from a config (or resume a run). See [`TrainOptions`].
pub fn train(config_path: Option<&Path>, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let (config, run_dir, resuming) = prepare(config_path, opts)?;
    train_resolved(config, run_dir, resuming, opts)
}

/// The config, run directory and whether it resumes, for `varphi train` (see [`resolve`]),
/// shrunk for `--quick`.
pub fn prepare(
    config_path: Option<&Path>,
    opts: &TrainOptions,
) -> Result<(TrainConfig, PathBuf, bool), TrainError> {
    let (mut config, run_dir, resuming) = resolve(config_path, opts)?;
    if opts.quick && !resuming {
        let t = &config.common.training;
        let epochs = t.quick_epochs.unwrap_or((t.epochs / 10).max(1));
        config.shrink_to(epochs);
    }
    Ok((config, run_dir, resuming))
}

/// Train a resolved `config` (data paths absolute) into `run_dir` (resuming the run there when
/// `resuming`); `opts.out`, `resume` and `quick` are not read.
pub fn train_resolved(
    config: TrainConfig,
    run_dir: PathBuf,
    resuming: bool,
    opts: &TrainOptions,
) -> Result<TrainSummary, TrainError> {
    let mut config = config;
    if config.common.training.data_shards == Some(crate::config::DataShards::Ranks) {
        // Saved as the count it stands for, so that every later use sees the same batches.
        let ranks = if opts.alone {
            1
        } else {
            crate::cluster::world().size()
        };
        config.common.training.data_shards = Some(crate::config::DataShards::Count(ranks));
    }
    let to_save = config.clone();
    config.kind.visit(TrainKind {
        common: config.common,
        saved: &to_save,
        run_dir,
        resuming,
        opts,
    })
}

struct TrainKind<'a> {
    common: Common,
    saved: &'a TrainConfig,
    run_dir: PathBuf,
    resuming: bool,
    opts: &'a TrainOptions,
}

impl KindVisitor for TrainKind<'_> {
    type Output = Result<TrainSummary, TrainError>;

    fn visit<K: Kind>(self, kind: K) -> Self::Output {
        let Self {
            common,
            saved,
            run_dir,
            resuming,
            opts,
        } = self;
        let world: std::sync::Arc<dyn crate::parallel::Collective> = if opts.alone {
            std::sync::Arc::new(crate::parallel::SingleProcess)
        } else {
            crate::cluster::world()
        };
        let lead = world.rank() == 0;
        let devices = opts
            .devices
            .clone()
            .or_else(|| common.training.devices.clone());
        let (backend, replicas) = crate::backend::data_parallel_devices(
            opts.backend,
            common.training.backend,
            devices.as_deref(),
            common.training.precision,
        )?;
        let quiet = opts.quiet || !lead;
        use crate::config::DeviceShares;
        let (shares, auto) = match &common.training.device_shares {
            None => (vec![1.0; 1 + replicas.len()], false),
            Some(DeviceShares::Auto) => (vec![1.0; 1 + replicas.len()], true),
            Some(DeviceShares::Fixed(s)) if s.len() == 1 + replicas.len() => (s.clone(), false),
            Some(DeviceShares::Fixed(s)) => {
                return Err(TrainError::Invalid {
                    key: "training.device_shares".into(),
                    message: format!(
                        "has {} entries for the {} devices (training.devices / --devices): give one share per device, or \"auto\"",
                        s.len(),
                        1 + replicas.len()
                    ),
                });
            }
        };
        let shards = common.training.shards(world.size());
        let data = if world.size() > 1 && shards > 1 {
            if shards % world.size() != 0 {
                return Err(TrainError::Invalid {
                    key: "training.data_shards".into(),
                    message: format!(
                        "is {shards}, not a multiple of the {} MPI ranks: each rank holds data_shards / ranks shards; use a multiple, or \"ranks\"",
                        world.size()
                    ),
                });
            }
            let per = shards / world.size();
            let part = varphi_data::ShardPart {
                shards,
                first: world.rank() * per,
                count: per,
                lead,
            };
            data::prepare_part(&common, kind.x_scaling(), Path::new("."), part, &mut |v| {
                world.all_reduce_sum(v)
            })?
        } else {
            data::prepare(&common, kind.x_scaling(), Path::new("."))?
        };
        kind.check_data(&common, &data)?;
        let selected = select_device(backend, common.training.precision)?;
        if !quiet {
            let extra = if replicas.is_empty() {
                String::new()
            } else {
                format!(" and {} more data-parallel device(s)", replicas.len())
            };
            let ranks = if world.size() > 1 {
                format!(", on each of {} MPI ranks", world.size())
            } else {
                String::new()
            };
            println!("device: {}{extra}{ranks}", selected.description);
            for note in &data.notes {
                println!("data: {note}");
            }
        }
        // Rank 0 names and creates the run directory; the broadcast is also the barrier the
        // other ranks wait at until it exists.
        if lead && !resuming {
            rundir::create(&run_dir, saved, &data.run.norm)?;
        }
        let run_dir = PathBuf::from(crate::parallel::broadcast_string(
            world.as_ref(),
            &run_dir.to_string_lossy(),
        ));
        let device = selected.device.clone().autodiff();
        // The device's generator is shared by every user of the device in this process
        // (burn keeps one per device): hold it from seeding to the last initial weight, so
        // that a run started next to another (tests, a library user's threads) gets the
        // weights of its seed.
        let (model, objective) = {
            static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _alone = SEEDED_INIT.lock().unwrap_or_else(|e| e.into_inner());
            device.seed(common.seed);
            kind.build(&common, &data.run, &device)?
        };
        let mut all = vec![device.clone()];
        all.extend(replicas.iter().map(|d| d.device.clone().autodiff()));
        let mut parallel = crate::parallel::DataParallel::new(all, shares, world.clone());
        parallel.auto_shares = auto;
        let stats = parallel.stats.clone();
        let fit = FitRun {
            common: &common,
            run_dir: &run_dir,
            resuming,
            backend,
            data: &data,
            device: &device,
            quiet,
            parallel,
        };
        let (model, stopped) = fit.run(model, &objective)?;
        let stats = stats.lock().map(|s| s.clone()).unwrap_or_default();
        if lead && stats.steps > 0 {
            let stats = crate::parallel::ParallelStats {
                exact: trainer::Objective::rows_exact(&objective),
                parameters: burn::module::Module::num_params(&model),
                allreduce_bytes: if world.size() > 1 {
                    8 * burn::module::Module::num_params(&model)
                } else {
                    0
                },
                ..stats
            };
            let p = run_dir.join("parallel.json");
            std::fs::write(&p, serde_json::to_string_pretty(&stats).expect("json"))
                .map_err(crate::error::io_err(&p))?;
            if !quiet {
                println!(
                    "data-parallel: {} rank(s) × {} device(s), {:.2} ms per step, {:.3} ms of it communicating ({:.1} %) → {}",
                    stats.ranks,
                    stats.devices_per_rank,
                    stats.step_ms,
                    stats.communication_ms,
                    100.0 * stats.communication_ms / stats.step_ms.max(1e-12),
                    p.display()
                );
            }
        }
        if !lead {
            // The other ranks hold the same model; rank 0 writes the run's files.
            return Ok(TrainSummary {
                epochs_done: common.training.epochs,
                last_train: Vec::new(),
                last_test: Vec::new(),
                run_dir,
                device: format!("{} ({})", selected.description, world.describe()),
                stopped,
                best: None,
                members: 0,
            });
        }
        let (model, best) = if checkpoint::has_best(&run_dir) {
            let (m, b) = checkpoint::load_best(&run_dir, model)?;
            (m, Some(b))
        } else {
            (model, None)
        };
        let metrics = plots::read_metrics(&run_dir.join("metrics.csv")).unwrap_or_default();
        let epochs_done = checkpoint::load_state(&run_dir)
            .map(|s| s.epochs_done)
            .unwrap_or(common.training.epochs);
        if !opts.no_plots {
            plots::plot_losses(&metrics, &run_dir.join("loss.png"))?;
            let trained = Loaded {
                dir: run_dir.clone(),
                common,
                kind,
                data: data.run,
                model: model.valid(),
                objective,
                device: selected.clone(),
                epochs_done,
                best: best.clone(),
                scorer: Scorer::plain(),
            };
            trained.kind.plot(&trained)?;
        }
        let last = metrics.last().cloned().unwrap_or_default();
        let pick = |prefix: &str| -> Vec<(&'static str, f64)> {
            K::SUMMARY_TERMS
                .iter()
                .filter_map(|k| last.get(&format!("{prefix}_{k}")).map(|v| (*k, *v)))
                .collect()
        };
        Ok(TrainSummary {
            epochs_done,
            last_train: pick("train"),
            last_test: pick("test"),
            run_dir,
            device: selected.description,
            stopped,
            best,
            members: 0,
        })
    }
}

fn adam(common: &Common) -> ModuleOptimizer {
    let o = &common.optimizer;
    let mut adam = AdamConfig::new();
    if let Some(c) = o.grad_clip {
        adam = adam.with_grad_clipping(Some(GradientClippingConfig::Norm(c as f32)));
    }
    if o.weight_decay > 0.0 {
        adam = adam.with_weight_decay(Some(WeightDecayConfig::new(o.weight_decay as f32)));
    }
    adam.init()
}

/// What the training loop needs from the run being set up.
struct FitRun<'a> {
    common: &'a Common,
    run_dir: &'a Path,
    resuming: bool,
    backend: BackendKind,
    data: &'a TrainData,
    device: &'a Device,
    quiet: bool,
    parallel: crate::parallel::DataParallel,
}

impl FitRun<'_> {
    /// Resume (if asked), run the training loop with progress, metrics and checkpoint
    /// observers, and turn a non-finite loss term into an error that names the term and the
    /// kept checkpoint.
    fn run<M, O>(&self, model: M, objective: &O) -> Result<(M, Option<String>), TrainError>
    where
        M: Module + Clone + 'static,
        O: trainer::Objective<M> + Sync,
    {
        let common = self.common;
        let run_dir = self.run_dir.to_path_buf();
        let optim = adam(common);
        if self.resuming
            && let Ok(best) = checkpoint::load_best_state(&run_dir)
            && let Some(at) = best.stopped_at
        {
            return Err(TrainError::Run {
                path: run_dir,
                message: format!(
                    "stopped early after epoch {at} (best {} at epoch {}); it would not improve by resuming: start a new run to train longer (e.g. with a larger patience)",
                    best.metric, best.epoch
                ),
            });
        }
        let (model, optim, start_epoch) = if self.resuming {
            let (m, o, state) = checkpoint::load_with_optimizer(&run_dir, model, optim)?;
            (m, o, state.epochs_done)
        } else {
            (model, optim, 0)
        };
        let (train, test) = (&self.data.train, &self.data.run.test);
        let validation = self.data.validation.as_ref();
        // A rough bound on one step's memory: the batch and about 32 copies of it (activations,
        // gradients, optimiser work), in f64.
        let b = common.training.batch_size.min(train.len()) as u128;
        varphi_data::memory::check(
            b * train.features() as u128 * 8 * 32,
            &format!(
                "a training batch of {b} samples of {} values (with activations and gradients, about 32 copies)",
                train.features()
            ),
            "lower training.batch_size",
        )?;
        if !self.quiet {
            let val = validation.map_or(String::new(), |v| format!(" / {} validation", v.len()));
            let given = if common.data.given_test() {
                " (given test file)"
            } else {
                ""
            };
            let held = self.data.part.map_or(String::new(), |p| {
                format!(
                    ", {} of them on this rank (data_shards = {}, {} per rank)",
                    train.len(),
                    p.shards,
                    p.count
                )
            });
            println!(
                "run dir: {}  ({} train{held}{val} / {} test{given} samples of shape {:?}, {} parameters)",
                run_dir.display(),
                self.data.run.n_train,
                test.len(),
                train.sample_shape,
                burn::module::Module::num_params(&model)
            );
        }
        if start_epoch >= common.training.epochs {
            return Err(TrainError::Run {
                path: run_dir,
                message: format!(
                    "already trained for {start_epoch} of {} epochs; raise training.epochs in a config passed with --resume to continue",
                    common.training.epochs
                ),
            });
        }
        let lead = self.parallel.collective.rank() == 0;
        let mut observers: Vec<Box<dyn Observer<M>>> = vec![
            Box::new(Progress::new(self.quiet)),
            Box::new(MetricsCsv::new(run_dir.join("metrics.csv"))),
            Box::new(Checkpointer {
                run: run_dir.clone(),
                every: common.training.checkpoint_every,
                epochs: common.training.epochs,
                seed: common.seed,
                backend: self.backend.to_string(),
                pending: None,
            }),
        ];
        if let Some(e) = &common.training.early_stopping {
            observers.push(Box::new(crate::observers::EarlyStopping::new(
                run_dir.clone(),
                e.clone(),
            )));
        }
        if !lead {
            // Only rank 0 writes metrics and checkpoints; its early-stopping verdict is
            // broadcast to the others by the training loop.
            observers.clear();
        }
        let spec = FitSpec {
            train,
            test: Some(test),
            validation,
            batcher: common
                .training
                .batcher(common.seed, self.parallel.collective.size()),
            lr: common.optimizer.lr,
            lr_final: common.optimizer.lr_final,
            start_epoch,
            epochs: common.training.epochs,
            device: self.device.clone(),
            parallel: self.parallel.clone(),
            part: self.data.part.map(|p| (p, self.data.run.n_train)),
        };
        let (model, _optim, termination) =
            trainer::fit(model, optim, objective, spec, &mut observers)?;
        if let Termination::Stopped { epoch, reason } = termination {
            return Ok((model, Some(format!("after epoch {}: {reason}", epoch + 1))));
        }
        if let Termination::NonFinite {
            term,
            value,
            epoch,
            step,
        } = termination
        {
            let kept = match checkpoint::load_state(&run_dir) {
                Ok(s) => format!(
                    "last good checkpoint (epoch {}) kept in {}",
                    s.epochs_done,
                    checkpoint::dir(&run_dir).display()
                ),
                Err(_) => "no checkpoint had been written yet".into(),
            };
            return Err(TrainError::NonFinite {
                term,
                value,
                epoch,
                step,
                kept,
            });
        }
        Ok((model, None))
    }
}

/// Open trained run `dir` of kind `kind` on `backend` (default: the run's): its test split
/// (regenerated alone for physics sources), saved normaliser and its best checkpoint (runs with
/// early stopping; unless `last`) or last checkpoint.
pub fn open<K: Kind>(
    dir: &Path,
    common: Common,
    kind: K,
    backend: Option<BackendKind>,
    last: bool,
) -> Result<Loaded<K>, TrainError> {
    let saved = rundir::normalization(dir)?;
    let data = data::prepare_test(&common, kind.x_scaling(), &saved, Path::new("."))?;
    let device = select_device(
        backend.unwrap_or(common.training.backend),
        common.training.precision,
    )?;
    let (model, objective) = kind.build(&common, &data, &device.device)?;
    let use_best = !last && checkpoint::has_best(dir);
    let (model, epochs_done, best) = if use_best {
        let (model, best) = checkpoint::load_best(dir, model)?;
        (model, best.epoch, Some(best))
    } else {
        let (model, state) = checkpoint::load_model(dir, model)?;
        (model, state.epochs_done, None)
    };
    Ok(Loaded {
        dir: dir.to_path_buf(),
        common,
        kind,
        data,
        model,
        objective,
        device,
        epochs_done,
        best,
        scorer: Scorer::plain(),
    })
}

/// Apply the run's `calibration.json` to `run`'s scores, if it has one fitted on the checkpoint
/// in use; a calibration of another checkpoint is not applied, with a note on stderr.
fn apply_calibration<K: Kind>(run: &mut Loaded<K>) -> Result<(), TrainError> {
    let Some(c) = CalibrationFile::read(&run.dir)? else {
        return Ok(());
    };
    let used = if run.best.is_some() { "best" } else { "last" };
    if c.epochs_done == run.epochs_done && c.checkpoint == used {
        run.scorer = Scorer::applying(c);
    } else {
        eprintln!(
            "note: {} was fitted on the {} checkpoint of epoch {}, this command uses the {used} one of epoch {}: not applied; rerun `varphi calibrate {}`",
            run.dir.join(calibration::FILE).display(),
            c.checkpoint,
            c.epochs_done,
            run.epochs_done,
            run.dir.display()
        );
    }
    Ok(())
}

/// The line saying which calibration a command applies, if any.
fn calibration_line<K: Kind>(run: &Loaded<K>) -> Option<String> {
    run.scorer.calibration().map(|c| {
        format!(
            "recalibrated by {} ({} calibration cases: {}); raw scores are kept beside the recalibrated ones",
            run.dir.join(calibration::FILE).display(),
            c.cases,
            c.source
        )
    })
}

/// The line saying which checkpoint a command used, for runs with a best checkpoint.
fn checkpoint_line<K: Kind>(run: &Loaded<K>) -> Option<String> {
    run.best.as_ref().map(|b| {
        format!(
            "using the best checkpoint: epoch {} ({} {:.6}){}; --last for the last",
            b.epoch,
            b.metric,
            b.value,
            b.stopped_at
                .map(|e| format!(", training stopped early after epoch {e}"))
                .unwrap_or_default()
        )
    })
}

struct EvalKind<'a> {
    dir: &'a Path,
    common: Common,
    backend: Option<BackendKind>,
    print: bool,
    last: bool,
}

impl KindVisitor for EvalKind<'_> {
    type Output = Result<serde_json::Value, TrainError>;

    fn visit<K: Kind>(self, kind: K) -> Self::Output {
        let mut run = open(self.dir, self.common, kind, self.backend, self.last)?;
        apply_calibration(&mut run)?;
        let eval = run.kind.evaluate(&run)?;
        let mut json = serde_json::to_value(&eval).expect("eval reports serialise");
        if let (Some(b), Some(obj)) = (&run.best, json.as_object_mut()) {
            obj.insert(
                "checkpoint".into(),
                serde_json::json!({ "best": true, "epoch": b.epoch, "metric": b.metric, "value": b.value, "stopped_at": b.stopped_at }),
            );
        }
        if let (Some(c), Some(obj)) = (run.scorer.calibration(), json.as_object_mut()) {
            obj.insert(
                "calibration".into(),
                serde_json::json!({ "file": calibration::FILE, "source": c.source, "cases": c.cases }),
            );
        }
        rundir::write_eval(self.dir, &json)?;
        let curves = run.scorer.curves();
        let diagram = self.dir.join("calibration.png");
        if !curves.is_empty() {
            plots::plot_calibration(&curves, &diagram)?;
            plots::plot_bands(&run.scorer.bands(), &self.dir.join("bands.png"))?;
        }
        if self.print {
            if let Some(line) = checkpoint_line(&run) {
                println!("{line}");
            }
            if let Some(line) = calibration_line(&run) {
                println!("{line}");
            }
            run.kind.print_eval(&eval, self.dir);
            print_calibration_summary(&curves);
            println!("wrote {}", self.dir.join("eval.json").display());
            if !curves.is_empty() {
                println!(
                    "wrote {} (reliability diagram) and {} (predictive bands vs truth)",
                    diagram.display(),
                    self.dir.join("bands.png").display()
                );
            }
        }
        Ok(json)
    }
}

/// `varphi eval`: score run `dir` on its test split, write `eval.json` and (with `print`) the
/// kind's table; returns the report as JSON. `last`: the last checkpoint, not the best.
pub fn evaluate(
    dir: &Path,
    backend: Option<BackendKind>,
    print: bool,
    last: bool,
) -> Result<serde_json::Value, TrainError> {
    let config = rundir::config(dir)?;
    config.kind.visit(EvalKind {
        dir,
        common: config.common,
        backend,
        print,
        last,
    })
}

struct SampleKind<'a> {
    dir: &'a Path,
    common: Common,
    backend: Option<BackendKind>,
    request: &'a SampleRequest,
    last: bool,
}

impl KindVisitor for SampleKind<'_> {
    type Output = Result<String, TrainError>;

    fn visit<K: Kind>(self, kind: K) -> Self::Output {
        if self.request.n == 0 {
            return Err(TrainError::Invalid {
                key: "n".into(),
                message: "the number of samples must be at least 1".into(),
            });
        }
        let run = open(self.dir, self.common, kind, self.backend, self.last)?;
        let line = run.kind.sample(&run, self.request)?;
        Ok(match checkpoint_line(&run) {
            Some(c) => format!("{c}\n{line}"),
            None => line,
        })
    }
}

/// `varphi sample`: draw from trained run `dir`; returns the line to print.
pub fn sample(
    dir: &Path,
    request: &SampleRequest,
    backend: Option<BackendKind>,
    last: bool,
) -> Result<String, TrainError> {
    let config = rundir::config(dir)?;
    config.kind.visit(SampleKind {
        dir,
        common: config.common,
        backend,
        request,
        last,
    })
}

/// What `varphi predict` wrote and, with `--truth`, the scores.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PredictReport {
    /// Input rows.
    pub rows: usize,
    /// Samples per row.
    pub samples_per_row: usize,
    /// Shape of one prediction.
    pub shape: Vec<usize>,
    /// What is predicted.
    pub what: String,
    /// The output archive.
    pub output: PathBuf,
    /// Scores against `--truth` (the same metrics as `varphi eval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<crate::uq::UqScores>,
    /// The spread factor of the run's `calibration.json` applied to the samples, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recalibrated: Option<f64>,
}

/// One run's predictive samples for `varphi predict`, recalibrated where the run has a
/// `calibration.json`.
#[derive(Debug, Clone)]
pub struct Predicted {
    /// The samples.
    pub prediction: crate::kind::Prediction,
    /// Input rows.
    pub rows: usize,
    /// The spread factor applied, if any.
    pub recalibrated: Option<f64>,
}

struct PredictKind<'a> {
    dir: &'a Path,
    common: Common,
    backend: Option<BackendKind>,
    request: &'a PredictRequest,
    /// The inputs, when not read from `request.input`.
    inputs: Option<&'a varphi_data::read::Array>,
    last: bool,
}

impl KindVisitor for PredictKind<'_> {
    type Output = Result<Predicted, TrainError>;

    fn visit<K: Kind>(self, kind: K) -> Self::Output {
        let r = self.request;
        if r.n < 2 {
            return Err(TrainError::Invalid {
                key: "-n".into(),
                message: "predict needs at least 2 samples per input (for a spread)".into(),
            });
        }
        let inputs = match self.inputs {
            Some(a) => a.clone(),
            None => varphi_data::read::load_array(&r.input, r.key.as_deref())?,
        };
        let rows = inputs.shape.first().copied().unwrap_or(0);
        if rows == 0 {
            return Err(TrainError::Invalid {
                key: "--input".into(),
                message: format!("{} holds no input rows", r.input.display()),
            });
        }
        let mut run = open(self.dir, self.common, kind, self.backend, self.last)?;
        apply_calibration(&mut run)?;
        let per_row: usize = run.data.test.sample_shape.iter().product();
        varphi_data::memory::check(
            3 * (rows as u128) * (r.n as u128) * (per_row as u128) * 8,
            &format!("predicting {} samples for {rows} inputs", r.n),
            "lower -n or split the input file",
        )?;
        if let Some(line) = checkpoint_line(&run) {
            println!("{line}");
        }
        let mut pred = run.kind.predict(&run, &inputs, r.n)?;
        let fit = pred
            .block
            .and_then(|b| run.scorer.calibration()?.blocks.get(b).map(|f| (b, f)));
        let recalibrated = fit.map(|(b, f)| {
            pred.samples = crate::uq::scale_samples(&pred.samples, f.scale_factor);
            println!(
                "recalibrated by {}: samples of \"{b}\" spread ×{:.4} about their medians",
                run.dir.join(calibration::FILE).display(),
                f.scale_factor
            );
            f.scale_factor
        });
        Ok(Predicted {
            prediction: pred,
            rows,
            recalibrated,
        })
    }
}

/// The predictive samples of run `dir` for each row of `request`'s input file (see
/// [`predict`]), not yet written.
pub fn predictions(
    dir: &Path,
    request: &PredictRequest,
    backend: Option<BackendKind>,
    last: bool,
) -> Result<Predicted, TrainError> {
    predictions_of(dir, request, None, backend, last)
}

/// [`predictions`] for `inputs` in memory (`request.input` is not read).
pub fn predictions_for(
    dir: &Path,
    inputs: &varphi_data::read::Array,
    request: &PredictRequest,
    backend: Option<BackendKind>,
    last: bool,
) -> Result<Predicted, TrainError> {
    predictions_of(dir, request, Some(inputs), backend, last)
}

fn predictions_of(
    dir: &Path,
    request: &PredictRequest,
    inputs: Option<&varphi_data::read::Array>,
    backend: Option<BackendKind>,
    last: bool,
) -> Result<Predicted, TrainError> {
    let config = rundir::config(dir)?;
    config.kind.visit(PredictKind {
        dir,
        common: config.common,
        backend,
        request,
        inputs,
        last,
    })
}

struct TestCasesKind<'a> {
    dir: &'a Path,
    common: Common,
    max: usize,
}

impl KindVisitor for TestCasesKind<'_> {
    type Output = Result<(varphi_data::read::Array, Vec<f64>), TrainError>;

    fn visit<K: Kind>(self, kind: K) -> Self::Output {
        let saved = rundir::normalization(self.dir)?;
        let data = data::prepare_test(&self.common, kind.x_scaling(), &saved, Path::new("."))?;
        let t = &data.test;
        let n = t.len().min(self.max);
        let d: usize = t.sample_shape.iter().product();
        let mut cond = t.cond[..n * t.cond_dim].to_vec();
        saved.invert_cond(&mut cond);
        let mut truth = t.x[..n * d].to_vec();
        saved.invert_x(&mut truth);
        let inputs = varphi_data::read::Array {
            shape: vec![n, t.cond_dim],
            data: cond,
            notes: vec![],
        };
        Ok((inputs, truth))
    }
}

/// The first (up to) `max` test cases of run `dir` as `varphi predict` takes them: the inputs
/// (conditions or parameters, data units, `[n, c]`) and the solutions (data units, `[n·d]`).
pub fn test_cases(
    dir: &Path,
    max: usize,
) -> Result<(varphi_data::read::Array, Vec<f64>), TrainError> {
    let config = rundir::config(dir)?;
    config.kind.visit(TestCasesKind {
        dir,
        common: config.common,
        max,
    })
}

/// Write `predicted` as `request.out` (`samples` `[rows, S, …]`, `mean`, `std`), scored
/// against `request.truth` where given (written beside it as `<output>.scores.json`), and
/// print what was written.
pub fn write_prediction(
    request: &PredictRequest,
    predicted: Predicted,
) -> Result<PredictReport, TrainError> {
    let r = request;
    let Predicted {
        prediction: pred,
        rows,
        recalibrated,
    } = predicted;
    let truth = r
        .truth
        .as_ref()
        .map(|t| varphi_data::read::load_array(t, r.truth_key.as_deref()))
        .transpose()?;
    let d: usize = pred.shape.iter().product();
    let s = pred.samples.len();
    let mut samples = vec![0.0; rows * s * d];
    let mut mean = vec![0.0; rows * d];
    let mut std = vec![0.0; rows * d];
    for i in 0..rows {
        for j in 0..d {
            let col: Vec<f64> = pred.samples.iter().map(|x| x[i * d + j]).collect();
            let m = col.iter().sum::<f64>() / s as f64;
            let v = col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (s - 1) as f64;
            mean[i * d + j] = m;
            std[i * d + j] = v.sqrt();
            for (k, x) in col.iter().enumerate() {
                samples[(i * s + k) * d + j] = *x;
            }
        }
    }
    let scores = match truth {
        None => None,
        Some(t) => {
            if t.data.len() != rows * d || t.shape.first() != Some(&rows) {
                return Err(TrainError::Invalid {
                    key: "--truth".into(),
                    message: format!(
                        "{} has shape {:?}; it needs one truth of shape {:?} per input row ({rows} rows)",
                        r.truth.as_ref().expect("truth given").display(),
                        t.shape,
                        pred.shape
                    ),
                });
            }
            Some(crate::uq::score(&pred.samples, &t.data, &crate::uq::LEVELS))
        }
    };
    let with = |lead: &[usize]| -> Vec<usize> {
        lead.iter()
            .copied()
            .chain(pred.shape.iter().copied())
            .collect()
    };
    let (s_shape, m_shape) = (with(&[rows, s]), with(&[rows]));
    varphi_data::npy::save_npz_f64(
        &r.out,
        &[
            ("samples", s_shape.as_slice(), samples.as_slice()),
            ("mean", m_shape.as_slice(), mean.as_slice()),
            ("std", m_shape.as_slice(), std.as_slice()),
        ],
    )
    .map_err(crate::error::io_err(&r.out))?;
    let report = PredictReport {
        rows,
        samples_per_row: s,
        shape: pred.shape,
        what: pred.what,
        output: r.out.clone(),
        scores,
        recalibrated,
    };
    println!(
        "wrote {} samples of {} {:?} for each of {} inputs to {} (samples, mean, std)",
        report.samples_per_row,
        report.what,
        report.shape,
        report.rows,
        report.output.display()
    );
    if let Some(scores) = &report.scores {
        let p = report.output.with_extension("scores.json");
        std::fs::write(&p, serde_json::to_string_pretty(&report).expect("json"))
            .map_err(crate::error::io_err(&p))?;
        println!("  scores against the truth (data units)");
        crate::tables::print_scores(scores, 34);
        println!("wrote {}", p.display());
    }
    Ok(report)
}

/// `varphi predict`: predictive samples of run `dir` for each row of an input file, written as
/// `.npz` (`samples`, `mean`, `std`); with a truth file, scored and the scores written beside
/// it (`<output>.scores.json`) and printed.
pub fn predict(
    dir: &Path,
    request: &PredictRequest,
    backend: Option<BackendKind>,
    last: bool,
) -> Result<PredictReport, TrainError> {
    write_prediction(request, predictions(dir, request, backend, last)?)
}

/// One line per scored block: the calibration error (mean |coverage − nominal| over ten
/// levels), and after recalibration when applied.
fn print_calibration_summary(curves: &[calibration::Curve]) {
    if curves.is_empty() {
        return;
    }
    let err = |c: &[f64]| -> f64 {
        c.iter()
            .zip(crate::uq::CURVE)
            .map(|(c, p)| (c - p).abs())
            .sum::<f64>()
            / c.len().max(1) as f64
    };
    println!("  calibration error (mean |coverage − nominal| over 10 levels; 0 is calibrated)");
    for c in curves {
        let after = match (&c.scaled, &c.conformal) {
            (Some(s), Some(k)) => format!(
                "   recalibrated: scaled {:.3}, conformal {:.3}",
                err(s),
                err(k)
            ),
            _ => String::new(),
        };
        println!("    {:<28} {:.3}{after}", c.block, err(&c.raw));
    }
}

/// Where `varphi calibrate` takes its labelled calibration cases from.
#[derive(Debug, Clone, PartialEq)]
pub enum CalibrationSource {
    /// The run's validation split if it has one, else 50 fresh cases of a generated source.
    Auto,
    /// `count` fresh cases of the run's generator (a seed of their own).
    Fresh(usize),
    /// Labelled cases in a file (`x`, and `cond` for conditional kinds).
    File(varphi_data::FileSource),
}

/// The seed of fresh calibration cases and of the evaluation noise on them: the run's seed
/// with these bits flipped, so they share no stream with the run's data or its test scores.
const CALIBRATION_SALT: u64 = 0xCA11_B8A7_E5EE_D001;

struct CalibrateKind<'a> {
    dir: &'a Path,
    common: Common,
    backend: Option<BackendKind>,
    source: &'a CalibrationSource,
    last: bool,
}

impl KindVisitor for CalibrateKind<'_> {
    type Output = Result<CalibrationFile, TrainError>;

    fn visit<K: Kind>(self, kind: K) -> Self::Output {
        let common = &self.common;
        let salted = common.seed ^ CALIBRATION_SALT;
        let fresh = |count: usize| -> Result<(varphi_data::Dataset, String), TrainError> {
            match common.data.fresh(count, salted)? {
                Some(d) => Ok((
                    d,
                    format!("{count} fresh draws of the run's generator (seed {salted:#x})"),
                )),
                None => Err(TrainError::Invalid {
                    key: "--n".into(),
                    message: "the run's data come from files, which have no generator to draw fresh cases from; give labelled cases with --data FILE (or a [data] validation split)".into(),
                }),
            }
        };
        let (cases, source) = match self.source {
            CalibrationSource::Fresh(n) => fresh(*n)?,
            CalibrationSource::File(f) => {
                let mut notes = Vec::new();
                let d = f.load(&mut notes)?;
                for n in notes {
                    println!("note: {n}");
                }
                let n = d.len();
                (d, format!("{n} labelled cases from {}", f.path.display()))
            }
            CalibrationSource::Auto => {
                let has_validation = common.split.validation_fraction > 0.0
                    || matches!(
                        &common.data,
                        varphi_data::DataSource::Files {
                            validation: Some(_),
                            ..
                        }
                    );
                let validation = if has_validation {
                    common
                        .data
                        .splits(
                            common.seed,
                            Path::new("."),
                            common.split.test_fraction,
                            common.split.validation_fraction,
                        )?
                        .validation
                        .filter(|v| !v.is_empty())
                } else {
                    None
                };
                match validation {
                    Some(v) => {
                        let n = v.len();
                        (v, format!("the run's validation split ({n} cases)"))
                    }
                    None => fresh(50).map_err(|_| TrainError::Invalid {
                        key: "varphi calibrate".into(),
                        message: "the run has no validation split and its data come from files: give labelled calibration cases with --data FILE".into(),
                    })?,
                }
            }
        };
        let mut run = open(self.dir, self.common.clone(), kind, self.backend, self.last)?;
        let test = &run.data.test;
        if cases.sample_shape != test.sample_shape || cases.cond_dim != test.cond_dim {
            return Err(TrainError::Invalid {
                key: "--data".into(),
                message: format!(
                    "calibration cases have samples of shape {:?} with {} condition value(s); the run's have {:?} with {}",
                    cases.sample_shape, cases.cond_dim, test.sample_shape, test.cond_dim
                ),
            });
        }
        if cases.len() < 10 {
            return Err(TrainError::Invalid {
                key: "--n".into(),
                message: format!(
                    "{} calibration cases are too few; give at least 10 (50 is a good size)",
                    cases.len()
                ),
            });
        }
        run.data.test = run.data.norm.apply(&cases);
        // Evaluation noise of its own (observations, posterior draws), not the test scores'.
        run.common.seed = salted;
        run.scorer = Scorer::recording();
        run.kind.evaluate(&run)?;
        let blocks = run.scorer.fit();
        if blocks.is_empty() {
            return Err(TrainError::Run {
                path: self.dir.to_path_buf(),
                message: format!(
                    "is a run of kind \"{}\", whose evaluation scores no predictive distribution against truth: nothing to calibrate",
                    K::NAME
                ),
            });
        }
        let used = cases
            .len()
            .min(blocks.values().map(|b| b.cases).max().unwrap_or(0));
        let file = CalibrationFile {
            source,
            cases: used,
            epochs_done: run.epochs_done,
            checkpoint: if run.best.is_some() { "best" } else { "last" }.into(),
            blocks,
        };
        file.write(self.dir)?;
        Ok(file)
    }
}

/// `varphi calibrate`: fit the recalibration of run `dir` on labelled calibration cases apart
/// from its test split and write `dir/calibration.json` (see [`crate::calibration`]).
pub fn calibrate(
    dir: &Path,
    source: &CalibrationSource,
    backend: Option<BackendKind>,
    last: bool,
) -> Result<CalibrationFile, TrainError> {
    let config = rundir::config(dir)?;
    config.kind.visit(CalibrateKind {
        dir,
        common: config.common,
        backend,
        source,
        last,
    })
}

/// Print what [`calibrate`] fitted.
pub fn print_calibration(dir: &Path, file: &CalibrationFile) {
    println!(
        "calibration of {} on {} ({} cases used)",
        dir.display(),
        file.source,
        file.cases
    );
    println!(
        "  {:<28} {:>8} {:>8} {:>12} {:>12} {:>10}",
        "block", "entries", "k", "cov 90 raw", "cov 90 ×k", "conf. k90"
    );
    for (name, b) in &file.blocks {
        let get =
            |m: &std::collections::BTreeMap<String, f64>| m.get("0.9").copied().unwrap_or(f64::NAN);
        let k90 = b
            .conformal_factors
            .get("0.9")
            .copied()
            .flatten()
            .map_or("unbounded".to_string(), |k| format!("{k:.4}"));
        println!(
            "  {name:<28} {:>8} {:>8.4} {:>12.3} {:>12.3} {k90:>10}",
            b.entries,
            b.scale_factor,
            get(&b.coverage_before),
            get(&b.coverage_scaled)
        );
    }
    println!(
        "wrote {}; `varphi eval` now reports recalibrated scores beside the raw ones and `varphi predict` scales its samples",
        dir.join(calibration::FILE).display()
    );
}

struct ParametersKind<'a> {
    dir: &'a Path,
    common: Common,
}

impl KindVisitor for ParametersKind<'_> {
    type Output = Result<Vec<f64>, TrainError>;

    fn visit<K: Kind>(self, kind: K) -> Self::Output {
        let run = open(self.dir, self.common, kind, None, true)?;
        Ok(crate::parallel::flat_parameters(&run.model))
    }
}

/// Every weight of run `dir`'s last checkpoint, flattened in the model's parameter order
/// (`f64`): to compare runs, e.g. data-parallel against one device.
pub fn run_parameters(dir: &Path) -> Result<Vec<f64>, TrainError> {
    let config = rundir::config(dir)?;
    config.kind.visit(ParametersKind {
        dir,
        common: config.common,
    })
}
