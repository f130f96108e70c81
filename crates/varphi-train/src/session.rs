//! Train, evaluate and sample any kind: the config is parsed once, the registry picks the kind,
//! and these generic functions do the same steps for every [`Kind`] — run directory, data,
//! device, resume, the training loop with its observers, checkpoints, plots, `eval.json`.

use crate::backend::{BackendKind, select_device};
use crate::checkpoint;
use crate::config::Common;
use crate::data::{self, TrainData};
use crate::error::TrainError;
use crate::experiment::TrainConfig;
use crate::kind::{Kind, KindVisitor, Loaded, SampleRequest};
use crate::observers::{Checkpointer, MetricsCsv, Progress};
use crate::plots;
use crate::rundir;
use crate::trainer::{self, FitSpec, Observer, Termination};
use burn::grad_clipping::GradientClippingConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::prelude::*;
use std::path::{Path, PathBuf};
use varphi_data::Batcher;

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
        println!("done: {} epochs on {}", self.epochs_done, self.device);
        println!("  train: {}", fmt(&self.last_train));
        println!("  test:  {}", fmt(&self.last_test));
        let written: Vec<&str> = [
            "config.toml",
            "metrics.csv",
            "checkpoint/",
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
            let base = p.parent().unwrap_or(Path::new("."));
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
    let (mut config, run_dir, resuming) = resolve(config_path, opts)?;
    if opts.quick && !resuming {
        let t = &config.common.training;
        let epochs = t.quick_epochs.unwrap_or((t.epochs / 10).max(1));
        config.shrink_to(epochs);
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
        let backend = opts.backend.unwrap_or(common.training.backend);
        let data = data::prepare(&common, kind.x_scaling(), Path::new("."))?;
        kind.check_data(&common, &data)?;
        let selected = select_device(backend, common.training.precision)?;
        if !opts.quiet {
            println!("device: {}", selected.description);
        }
        if !resuming {
            rundir::create(&run_dir, saved, &data.run.norm)?;
        }
        let device = selected.device.clone().autodiff();
        device.seed(common.seed);
        let (model, objective) = kind.build(&common, &data.run, &device)?;
        let fit = FitRun {
            common: &common,
            run_dir: &run_dir,
            resuming,
            backend,
            data: &data,
            device: &device,
            quiet: opts.quiet,
        };
        let model = fit.run(model, &objective)?;
        let metrics = plots::read_metrics(&run_dir.join("metrics.csv")).unwrap_or_default();
        let epochs_done = common.training.epochs;
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
}

impl FitRun<'_> {
    /// Resume (if asked), run the training loop with progress, metrics and checkpoint
    /// observers, and turn a non-finite loss term into an error that names the term and the
    /// kept checkpoint.
    fn run<M, O>(&self, model: M, objective: &O) -> Result<M, TrainError>
    where
        M: Module + Clone + 'static,
        O: trainer::Objective<M>,
    {
        let common = self.common;
        let run_dir = self.run_dir.to_path_buf();
        let optim = adam(common);
        let (model, optim, start_epoch) = if self.resuming {
            let (m, o, state) = checkpoint::load_with_optimizer(&run_dir, model, optim)?;
            (m, o, state.epochs_done)
        } else {
            (model, optim, 0)
        };
        let (train, test) = (&self.data.train, &self.data.run.test);
        if !self.quiet {
            println!(
                "run dir: {}  ({} train / {} test samples of shape {:?}, {} parameters)",
                run_dir.display(),
                train.len(),
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
        let mut observers: Vec<Box<dyn Observer<M>>> = vec![
            Box::new(Progress::new(self.quiet)),
            Box::new(MetricsCsv::new(run_dir.join("metrics.csv"))),
            Box::new(Checkpointer {
                run: run_dir.clone(),
                every: common.training.checkpoint_every,
                epochs: common.training.epochs,
                seed: common.seed,
                backend: self.backend.to_string(),
            }),
        ];
        let spec = FitSpec {
            train,
            test: Some(test),
            batcher: Batcher {
                batch_size: common.training.batch_size,
                seed: common.seed,
            },
            lr: common.optimizer.lr,
            lr_final: common.optimizer.lr_final,
            start_epoch,
            epochs: common.training.epochs,
            device: self.device.clone(),
        };
        let (model, _optim, termination) =
            trainer::fit(model, optim, objective, spec, &mut observers)?;
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
        Ok(model)
    }
}

/// Open trained run `dir` of kind `kind` on `backend` (default: the run's): its test split
/// (regenerated alone for physics sources), saved normaliser and last checkpoint.
pub fn open<K: Kind>(
    dir: &Path,
    common: Common,
    kind: K,
    backend: Option<BackendKind>,
) -> Result<Loaded<K>, TrainError> {
    let saved = rundir::normalization(dir)?;
    let data = data::prepare_test(&common, kind.x_scaling(), &saved, Path::new("."))?;
    let device = select_device(
        backend.unwrap_or(common.training.backend),
        common.training.precision,
    )?;
    let (model, objective) = kind.build(&common, &data, &device.device)?;
    let (model, state) = checkpoint::load_model(dir, model)?;
    Ok(Loaded {
        dir: dir.to_path_buf(),
        common,
        kind,
        data,
        model,
        objective,
        device,
        epochs_done: state.epochs_done,
    })
}

struct EvalKind<'a> {
    dir: &'a Path,
    common: Common,
    backend: Option<BackendKind>,
    print: bool,
}

impl KindVisitor for EvalKind<'_> {
    type Output = Result<serde_json::Value, TrainError>;

    fn visit<K: Kind>(self, kind: K) -> Self::Output {
        let run = open(self.dir, self.common, kind, self.backend)?;
        let eval = run.kind.evaluate(&run)?;
        rundir::write_eval(self.dir, &eval)?;
        if self.print {
            run.kind.print_eval(&eval, self.dir);
            println!("wrote {}", self.dir.join("eval.json").display());
        }
        Ok(serde_json::to_value(&eval).expect("eval reports serialise"))
    }
}

/// `varphi eval`: score run `dir` on its test split, write `eval.json` and (with `print`) the
/// kind's table; returns the report as JSON.
pub fn evaluate(
    dir: &Path,
    backend: Option<BackendKind>,
    print: bool,
) -> Result<serde_json::Value, TrainError> {
    let config = rundir::config(dir)?;
    config.kind.visit(EvalKind {
        dir,
        common: config.common,
        backend,
        print,
    })
}

struct SampleKind<'a> {
    dir: &'a Path,
    common: Common,
    backend: Option<BackendKind>,
    request: &'a SampleRequest,
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
        let run = open(self.dir, self.common, kind, self.backend)?;
        run.kind.sample(&run, self.request)
    }
}

/// `varphi sample`: draw from trained run `dir`; returns the line to print.
pub fn sample(
    dir: &Path,
    request: &SampleRequest,
    backend: Option<BackendKind>,
) -> Result<String, TrainError> {
    let config = rundir::config(dir)?;
    config.kind.visit(SampleKind {
        dir,
        common: config.common,
        backend,
        request,
    })
}
