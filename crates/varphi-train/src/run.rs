//! Runs: train from a config into a run directory, resume, evaluate and sample.
//!
//! A run directory holds `config.toml` (resolved: data paths absolute), `normalization.json`,
//! `checkpoint/`, `metrics.csv`, `loss.png`, `samples.png` and, after `varphi eval`,
//! `eval.json`.

use crate::backend::{BackendKind, SelectedDevice, select_device};
use crate::checkpoint;
use crate::config::{DataShape, LikelihoodKind, ModelKind, TrainConfig};
use crate::error::{TrainError, io_err};
use crate::model::{ElboObjective, GenerativeModel, NoiseSource};
use crate::observers::{Checkpointer, MetricsCsv, Progress};
use crate::plots;
use crate::trainer::{self, FitSpec, Observer, Termination};
use burn::grad_clipping::GradientClippingConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use varphi_data::{Batcher, Dataset, Normalization};
use varphi_losses::RenyiBound;
use varphi_models::{LatentVariableModel, VariationalFamily};

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

/// Data prepared for a run: normalised splits and the normaliser.
pub struct PreparedData {
    /// Training split (normalised).
    pub train: Dataset,
    /// Test split (normalised).
    pub test: Dataset,
    /// The normaliser (identity when `split.normalize = false`).
    pub norm: Normalization,
}

impl PreparedData {
    /// Shape facts.
    pub fn shape(&self) -> DataShape {
        DataShape {
            sample_shape: self.train.sample_shape.clone(),
            cond_dim: self.train.cond_dim,
        }
    }
}

/// Load, split and normalise the data of `config` (paths relative to `base`).
pub fn prepare_data(config: &TrainConfig, base: &Path) -> Result<PreparedData, TrainError> {
    let data = config.data.load(config.seed, base)?;
    if data.len() < 2 {
        return Err(TrainError::Invalid {
            key: "data".into(),
            message: format!(
                "need at least 2 samples for a train/test split, got {}",
                data.len()
            ),
        });
    }
    if config.objective.likelihood == LikelihoodKind::Bernoulli {
        if let Some(v) = data.x.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(TrainError::Invalid {
                key: "objective.likelihood".into(),
                message: format!("\"bernoulli\" needs data in [0, 1], found {v}; use \"gaussian\""),
            });
        }
    }
    let (train, test) = data.split(config.split.test_fraction, config.seed);
    let bernoulli = config.objective.likelihood == LikelihoodKind::Bernoulli;
    // Bernoulli data stay in [0, 1]; conditions are still standardised.
    let norm = match (config.split.normalize, bernoulli) {
        (false, _) => Normalization::identity(train.cond_dim),
        (true, false) => Normalization::fit(&train),
        (true, true) => Normalization {
            x_mean: 0.0,
            x_std: 1.0,
            ..Normalization::fit(&train)
        },
    };
    Ok(PreparedData {
        train: norm.apply(&train),
        test: norm.apply(&test),
        norm,
    })
}

fn adam(config: &TrainConfig) -> ModuleOptimizer {
    let o = &config.optimizer;
    let mut adam = AdamConfig::new();
    if let Some(c) = o.grad_clip {
        adam = adam.with_grad_clipping(Some(GradientClippingConfig::Norm(c as f32)));
    }
    if o.weight_decay > 0.0 {
        adam = adam.with_weight_decay(Some(WeightDecayConfig::new(o.weight_decay as f32)));
    }
    adam.init()
}

fn fresh_run_dir(config_path: Option<&Path>) -> PathBuf {
    let stem = config_path
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str())
        .unwrap_or("run");
    let base = PathBuf::from("runs").join(stem);
    if !base.exists() {
        return base;
    }
    (2..)
        .map(|i| PathBuf::from("runs").join(format!("{stem}-{i}")))
        .find(|p| !p.exists())
        .expect("some free name")
}

/// Train from a config (or resume a run). See [`TrainOptions`].
pub fn train(config_path: Option<&Path>, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let (config, run_dir, resuming) = match (&opts.resume, config_path) {
        (Some(run), given) => {
            let saved = TrainConfig::load(&run.join("config.toml"))?;
            let config = match given {
                None => saved,
                Some(p) => {
                    let new = TrainConfig::load(p)?;
                    let mut cmp = new.clone();
                    cmp.data = saved.data.clone();
                    cmp.training.epochs = saved.training.epochs;
                    cmp.training.backend = saved.training.backend;
                    if cmp != saved {
                        return Err(TrainError::Config {
                            path: p.to_path_buf(),
                            message: format!(
                                "differs from the config of {} in more than training.epochs; resume with the run's own config or start a new run",
                                run.display()
                            ),
                        });
                    }
                    TrainConfig {
                        data: saved.data,
                        ..new
                    }
                }
            };
            (config, run.clone(), true)
        }
        (None, Some(p)) => {
            let config = TrainConfig::load(p)?;
            let base = p.parent().unwrap_or(Path::new("."));
            let config = TrainConfig {
                data: config
                    .data
                    .resolved(&std::path::absolute(base).unwrap_or(base.to_path_buf())),
                ..config
            };
            let dir = opts.out.clone().unwrap_or_else(|| fresh_run_dir(Some(p)));
            (config, dir, false)
        }
        (None, None) => {
            return Err(TrainError::Invalid {
                key: "config".into(),
                message: "give a config file, or --resume RUN_DIR".into(),
            });
        }
    };
    let mut config = config;
    if opts.quick && !resuming {
        let t = &config.training;
        let epochs = t.quick_epochs.unwrap_or((t.epochs / 10).max(1));
        config.shrink_to(epochs);
    }
    let backend = opts.backend.unwrap_or(config.training.backend);
    let data = prepare_data(&config, Path::new("."))?;
    config.check_data(&data.shape())?;
    let selected = select_device(backend, config.training.precision)?;
    if !opts.quiet {
        println!("device: {}", selected.description);
    }

    std::fs::create_dir_all(&run_dir).map_err(io_err(&run_dir))?;
    if !resuming {
        if checkpoint::find(&run_dir).is_ok() {
            return Err(TrainError::Run {
                path: run_dir.clone(),
                message:
                    "already holds a run; use --resume to continue it or --out for a new folder"
                        .into(),
            });
        }
        let _ = std::fs::remove_file(run_dir.join("metrics.csv"));
        let p = run_dir.join("config.toml");
        std::fs::write(&p, config.to_toml()).map_err(io_err(&p))?;
        let p = run_dir.join("normalization.json");
        std::fs::write(&p, serde_json::to_string_pretty(&data.norm).expect("json"))
            .map_err(io_err(&p))?;
    }

    let device = selected.device.clone().autodiff();
    device.seed(config.seed);
    let ctx = RunContext {
        config: &config,
        run_dir: &run_dir,
        resuming,
        backend,
        data: &data,
        device: &device,
        quiet: opts.quiet,
    };
    if config.model.kind == ModelKind::Npe {
        let objective = crate::npe::NpeObjective::new(&config, &data)?;
        let model = crate::npe::NpeModel::init(
            &config,
            data.shape().cond_dim,
            objective.operator.len(),
            &device,
        );
        fit_run(&ctx, model, &objective)?;
        return loss_plot_and_summary(
            &config,
            run_dir,
            opts,
            selected.description,
            &["loss", "nll"],
        );
    }
    if config.model.kind == ModelKind::PhysVae {
        let objective = crate::physvae::PhysVaeObjective::new(&config, &data);
        let model = crate::physvae::PhysVaeModel::init(&config, &objective.physics, &device);
        fit_run(&ctx, model, &objective)?;
        return loss_plot_and_summary(
            &config,
            run_dir,
            opts,
            selected.description,
            &["loss", "nll", "kl_phys", "correction"],
        );
    }
    if config.model.kind == ModelKind::Pddlvm {
        let objective = crate::physics::PddlvmObjective::new(&config, &data)?;
        let model = crate::physics::PhysicsModel::init(&config, &data.shape(), &objective, &device);
        let model = fit_run(&ctx, model, &objective)?;
        let metrics = plots::read_metrics(&run_dir.join("metrics.csv")).unwrap_or_default();
        if !opts.no_plots {
            plots::plot_losses(&metrics, &run_dir.join("loss.png"))?;
            crate::physics::sample_plot(
                &model.valid(),
                &objective,
                &data,
                &selected.device,
                &run_dir.join("samples.png"),
            )?;
        }
        return Ok(summary(
            &config,
            &metrics,
            run_dir,
            selected.description,
            &["loss", "log_residual", "log_inverse", "entropy"],
        ));
    }
    let model_config = config.model_config(&data.shape());
    let model = GenerativeModel::init(&model_config, &config, &device);
    let objective = ElboObjective {
        elbo: config.elbo().init(),
        noise: NoiseSource {
            seed: config.seed,
            stream: 0,
        },
        physics: cvae_physics(&config, &data)?,
    };
    let model = fit_run(&ctx, model, &objective)?;

    let metrics = plots::read_metrics(&run_dir.join("metrics.csv")).unwrap_or_default();
    if !opts.no_plots {
        plots::plot_losses(&metrics, &run_dir.join("loss.png"))?;
        let model = model.valid();
        sample_plot(
            &model,
            &data,
            &config,
            &selected.device,
            &run_dir.join("samples.png"),
        )?;
    }
    Ok(summary(
        &config,
        &metrics,
        run_dir,
        selected.description,
        &["loss", "elbo", "log_lik", "kl"],
    ))
}

/// After a run whose only plot is the loss curve: plot it (unless `--no-plots`) and summarise.
fn loss_plot_and_summary(
    config: &TrainConfig,
    run_dir: PathBuf,
    opts: &TrainOptions,
    device: String,
    keys: &[&'static str],
) -> Result<TrainSummary, TrainError> {
    let metrics = plots::read_metrics(&run_dir.join("metrics.csv")).unwrap_or_default();
    if !opts.no_plots {
        plots::plot_losses(&metrics, &run_dir.join("loss.png"))?;
    }
    Ok(summary(config, &metrics, run_dir, device, keys))
}

fn summary(
    config: &TrainConfig,
    metrics: &[plots::MetricsRow],
    run_dir: PathBuf,
    device: String,
    keys: &[&'static str],
) -> TrainSummary {
    let last = metrics.last().cloned().unwrap_or_default();
    let pick = |prefix: &str| -> Vec<(&'static str, f64)> {
        keys.iter()
            .filter_map(|k| last.get(&format!("{prefix}_{k}")).map(|v| (*k, *v)))
            .collect()
    };
    TrainSummary {
        epochs_done: config.training.epochs,
        last_train: pick("train"),
        last_test: pick("test"),
        run_dir,
        device,
    }
}

/// What [`fit_run`] needs from the run being set up.
struct RunContext<'a> {
    config: &'a TrainConfig,
    run_dir: &'a Path,
    resuming: bool,
    backend: BackendKind,
    data: &'a PreparedData,
    device: &'a Device,
    quiet: bool,
}

/// Resume (if asked), run the training loop with progress, metrics and checkpoint observers, and
/// turn a non-finite loss term into an error that names the term and the kept checkpoint.
fn fit_run<M, O>(ctx: &RunContext<'_>, model: M, objective: &O) -> Result<M, TrainError>
where
    M: Module + Clone + 'static,
    O: trainer::Objective<M>,
{
    let config = ctx.config;
    let run_dir = ctx.run_dir.to_path_buf();
    let optim = adam(config);
    let (model, optim, start_epoch) = if ctx.resuming {
        let (m, o, state) = checkpoint::load(&run_dir, model, Some(optim))?;
        (m, o.expect("requested"), state.epochs_done)
    } else {
        (model, optim, 0)
    };
    if !ctx.quiet {
        println!(
            "run dir: {}  ({} train / {} test samples of shape {:?}, {} parameters)",
            run_dir.display(),
            ctx.data.train.len(),
            ctx.data.test.len(),
            ctx.data.train.sample_shape,
            burn::module::Module::num_params(&model)
        );
    }
    if start_epoch >= config.training.epochs {
        return Err(TrainError::Run {
            path: run_dir,
            message: format!(
                "already trained for {start_epoch} of {} epochs; raise training.epochs in a config passed with --resume to continue",
                config.training.epochs
            ),
        });
    }
    let mut observers: Vec<Box<dyn Observer<M>>> = vec![
        Box::new(Progress::new(ctx.quiet)),
        Box::new(MetricsCsv::new(run_dir.join("metrics.csv"))),
        Box::new(Checkpointer {
            run: run_dir.clone(),
            every: config.training.checkpoint_every,
            epochs: config.training.epochs,
            seed: config.seed,
            backend: ctx.backend.to_string(),
        }),
    ];
    let spec = FitSpec {
        train: &ctx.data.train,
        test: Some(&ctx.data.test),
        batcher: Batcher {
            batch_size: config.training.batch_size,
            seed: config.seed,
        },
        lr: config.optimizer.lr,
        lr_final: config.optimizer.lr_final,
        start_epoch,
        epochs: config.training.epochs,
        device: ctx.device.clone(),
    };
    let (model, _optim, termination) = trainer::fit(model, optim, objective, spec, &mut observers)?;
    drop(observers);
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

fn to_rows(t: Tensor<2>) -> Vec<Vec<f64>> {
    let [n, d] = t.dims();
    let v = t.into_data().try_into_vec_as::<f64>().expect("f64");
    (0..n).map(|i| v[i * d..(i + 1) * d].to_vec()).collect()
}

/// Reconstructions `E[x | z = mean of q(z|x)]` and prior samples `E[x | z ~ p(z|c)]`, in data
/// units, for the first `k` test samples.
fn recon_and_prior(
    model: &GenerativeModel,
    data: &PreparedData,
    indices: &[usize],
    seed: u64,
    device: &Device,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (x, cond) = data.test.batch(indices, device);
    let b = indices.len();
    let q = model.model.variational(x.clone(), cond.clone());
    let recon = model
        .likelihood
        .mean(model.model.decode(q.mean().unsqueeze::<3>(), cond.clone()))
        .squeeze_dim::<2>(0);
    let prior = model.model.prior(b, cond.clone(), device);
    let eps = NoiseSource { seed, stream: 7 }.normal([1, b, model.model.latent_dim()], 0, device);
    let generated = model
        .likelihood
        .mean(model.model.decode(prior.rsample(eps), cond))
        .squeeze_dim::<2>(0);
    let unnorm = |rows: Vec<Vec<f64>>| {
        rows.into_iter()
            .map(|mut r| {
                data.norm.invert_x(&mut r);
                r
            })
            .collect::<Vec<_>>()
    };
    (
        unnorm(to_rows(x)),
        unnorm(to_rows(recon)),
        unnorm(to_rows(generated)),
    )
}

fn sample_plot(
    model: &GenerativeModel,
    data: &PreparedData,
    config: &TrainConfig,
    device: &Device,
    path: &Path,
) -> Result<(), TrainError> {
    let k = data.test.len().min(4);
    let idx: Vec<usize> = (0..k).collect();
    let (x, recon, prior) = recon_and_prior(model, data, &idx, config.seed, device);
    plots::plot_samples(&x, &recon, &prior, &data.test.sample_shape, path)
}

/// A trained run loaded for inference.
pub struct LoadedRun {
    /// Run directory.
    pub dir: PathBuf,
    /// Its config.
    pub config: TrainConfig,
    /// Its data (regenerated or reloaded deterministically).
    pub data: PreparedData,
    /// The trained model (no autodiff).
    pub model: GenerativeModel,
    /// The device.
    pub device: SelectedDevice,
    /// Epochs done.
    pub epochs_done: usize,
}

/// Check that the regenerated data give the normalisation saved with the run.
pub(crate) fn check_normalization(dir: &Path, data: &PreparedData) -> Result<(), TrainError> {
    let norm_path = dir.join("normalization.json");
    if let Ok(text) = std::fs::read_to_string(&norm_path) {
        let saved: Normalization = serde_json::from_str(&text).map_err(|e| TrainError::Run {
            path: norm_path.clone(),
            message: format!("corrupt normalisation: {e}"),
        })?;
        if !saved.approx_eq(&data.norm) {
            return Err(TrainError::Run {
                path: norm_path,
                message: "the data no longer match the run (normalisation differs); was the data file changed?".into(),
            });
        }
    }
    Ok(())
}

/// A run directory's config, its data (regenerated or reloaded, checked against the saved
/// normalisation) and the device for `backend` (default: the run's) — what every run loader
/// needs before its model.
pub fn open_run(
    dir: &Path,
    backend: Option<BackendKind>,
) -> Result<(TrainConfig, PreparedData, SelectedDevice), TrainError> {
    let config = TrainConfig::load(&dir.join("config.toml"))?;
    let data = prepare_data(&config, Path::new("."))?;
    check_normalization(dir, &data)?;
    let selected = select_device(
        backend.unwrap_or(config.training.backend),
        config.training.precision,
    )?;
    Ok((config, data, selected))
}

/// Load a run directory's config, data and latest checkpoint onto `backend` (default: the
/// run's backend).
pub fn load_run(dir: &Path, backend: Option<BackendKind>) -> Result<LoadedRun, TrainError> {
    let (config, data, selected) = open_run(dir, backend)?;
    let model = GenerativeModel::init(
        &config.model_config(&data.shape()),
        &config,
        &selected.device,
    );
    let (model, _, state) = checkpoint::load(dir, model, None)?;
    Ok(LoadedRun {
        dir: dir.to_path_buf(),
        config,
        data,
        model,
        device: selected,
        epochs_done: state.epochs_done,
    })
}

/// Test-set evaluation of a run (`eval.json`).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Test samples.
    pub n_test: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Mean test ELBO per datum (normalised units; with the config's particles).
    pub test_elbo: f64,
    /// Mean test `E_q log p(x|z)`.
    pub test_log_lik: f64,
    /// Mean test KL.
    pub test_kl: f64,
    /// Plain (C)VAE runs: the IWAE bound with 64 importance samples per test datum, a tighter
    /// estimate of `log p(x | c)` than the ELBO (normalised units), comparable across
    /// posterior families.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_iwae64: Option<f64>,
    /// RMSE of reconstructions `E[x | z = E_q z]` in data units.
    pub recon_rmse: f64,
    /// Relative L2 error of reconstructions, `‖x̂ − x‖ / ‖x‖` over the test set.
    pub recon_rel_l2: f64,
    /// CVAE runs: the conditional model as a surrogate `c → x`, scored against the test
    /// solutions (data units) with 64 samples `x = ū(z, c) + σ ε`, `z ~ p(z | c)`; without a
    /// trained data likelihood (`data_likelihood = false`) the decoded means `ū(z, c)` alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surrogate: Option<crate::uq::UqScores>,
}

/// The residual term of a CVAE surrogate run (`kind = "cvae"` with `[objective.residual]`).
fn cvae_physics(
    config: &TrainConfig,
    data: &PreparedData,
) -> Result<Option<std::sync::Arc<crate::model::CvaePhysics>>, TrainError> {
    if config.model.kind != ModelKind::Cvae || config.objective.residual.is_none() {
        return Ok(None);
    }
    Ok(Some(std::sync::Arc::new(crate::model::CvaePhysics {
        term: crate::physics::PhysicsTerm::new(config, data)?,
        x_mean: data.norm.x_mean,
        x_std: data.norm.x_std,
        data: config.objective.data_likelihood,
    })))
}

/// Predictive scores of a CVAE as a surrogate (see [`EvalReport::surrogate`]).
fn surrogate_scores(run: &LoadedRun) -> crate::uq::UqScores {
    const S: usize = 64;
    let device = &run.device.device;
    let n = run.data.test.len();
    let idx: Vec<usize> = (0..n).collect();
    let mut samples = vec![Vec::new(); S];
    let mut truth = Vec::new();
    for (c, chunk) in idx.chunks(256).enumerate() {
        let (x, cond) = run.data.test.batch(chunk, device);
        let b = chunk.len();
        let m = &run.model.model;
        let prior = m.prior(b, cond.clone(), device);
        let eps = NoiseSource {
            seed: run.config.seed,
            stream: 300,
        }
        .normal([S, b, m.latent_dim()], c, device);
        let params = m.decode(prior.rsample(eps), cond);
        let mut mean = run.model.likelihood.mean(params.clone());
        if run.config.objective.data_likelihood
            && let Some(std) = run.model.likelihood.std(params)
        {
            let eps = NoiseSource {
                seed: run.config.seed,
                stream: 301,
            }
            .normal::<3>(mean.dims(), c, device);
            mean = mean + std * eps;
        }
        let nx = mean.dims()[2];
        for (s, rows) in samples.iter_mut().enumerate() {
            let t = mean.clone().slice([s..s + 1, 0..b, 0..nx]).reshape([b, nx]);
            for mut r in to_rows(t) {
                run.data.norm.invert_x(&mut r);
                rows.extend(r);
            }
        }
        for mut r in to_rows(x) {
            run.data.norm.invert_x(&mut r);
            truth.extend(r);
        }
    }
    crate::uq::score(&samples, &truth, &crate::uq::LEVELS)
}

/// Mean IWAE bound `L_64` over the test split (see [`EvalReport::test_iwae64`]).
fn test_iwae(run: &LoadedRun) -> f64 {
    const K: usize = 64;
    let device = &run.device.device;
    let m = &run.model.model;
    let n = run.data.test.len();
    let idx: Vec<usize> = (0..n).collect();
    let mut total = 0.0;
    for (c, chunk) in idx.chunks(128).enumerate() {
        let (x, cond) = run.data.test.batch(chunk, device);
        let q = m.variational(x.clone(), cond.clone());
        let prior = m.prior(chunk.len(), cond.clone(), device);
        let eps = NoiseSource {
            seed: run.config.seed,
            stream: 400,
        }
        .normal([K, chunk.len(), m.latent_dim()], c, device);
        let out = RenyiBound::iwae().forward(&q, &prior, eps, |z| {
            run.model.likelihood.log_prob(x, m.decode(z, cond))
        });
        total += out.bound.sum().into_scalar::<f64>();
    }
    total / n.max(1) as f64
}

/// Evaluate a run on its test split and write `eval.json`.
pub fn evaluate_run(run: &LoadedRun) -> Result<EvalReport, TrainError> {
    let device = &run.device.device;
    let objective = ElboObjective {
        elbo: run.config.elbo().with_beta(1.0).with_warmup_steps(0).init(),
        noise: NoiseSource {
            seed: run.config.seed,
            stream: 100,
        },
        physics: cvae_physics(&run.config, &run.data)?,
    };
    let terms = trainer::evaluate(
        &run.model,
        &objective,
        &run.data.test,
        run.config.training.batch_size,
        device,
        0,
    );
    let get = |k: &str| {
        terms
            .iter()
            .find(|(n, _)| *n == k)
            .map_or(f64::NAN, |t| t.1)
    };
    let (mut se, mut sx) = (0.0, 0.0);
    let mut count = 0usize;
    let n = run.data.test.len();
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(256) {
        let (x, recon, _) = recon_and_prior(&run.model, &run.data, chunk, run.config.seed, device);
        for (a, b) in x.iter().zip(&recon) {
            for (u, v) in a.iter().zip(b) {
                se += (u - v).powi(2);
                sx += u * u;
                count += 1;
            }
        }
    }
    let report = EvalReport {
        n_test: n,
        epochs: run.epochs_done,
        test_elbo: get("elbo"),
        test_log_lik: get("log_lik"),
        test_kl: get("kl"),
        test_iwae64: (run.config.objective.residual.is_none()).then(|| test_iwae(run)),
        recon_rmse: (se / count.max(1) as f64).sqrt(),
        recon_rel_l2: (se / sx.max(1e-300)).sqrt(),
        surrogate: (run.config.model.kind == ModelKind::Cvae).then(|| surrogate_scores(run)),
    };
    write_eval(&run.dir, &report)?;
    Ok(report)
}

/// Write an evaluation report as `RUN/eval.json`.
pub fn write_eval(dir: &Path, report: &impl Serialize) -> Result<(), TrainError> {
    let p = dir.join("eval.json");
    std::fs::write(&p, serde_json::to_string_pretty(report).expect("json")).map_err(io_err(&p))
}

/// A run whose model is built by its own module (`pddlvm`, `npe`, `phys-vae`), loaded from its
/// last checkpoint for evaluation.
pub struct KindRun<M, O> {
    /// Run directory.
    pub dir: PathBuf,
    /// Config.
    pub config: TrainConfig,
    /// Data.
    pub data: PreparedData,
    /// Model (no autodiff).
    pub model: M,
    /// Objective (problem, scales, observation operator).
    pub objective: O,
    /// Device.
    pub device: SelectedDevice,
    /// Epochs done.
    pub epochs_done: usize,
}

/// Open `dir`, build the objective and an untrained model with `build`, and load the last
/// checkpoint into the model.
pub fn load_kind_run<M: Module, O>(
    dir: &Path,
    backend: Option<BackendKind>,
    build: impl FnOnce(&TrainConfig, &PreparedData, &Device) -> Result<(M, O), TrainError>,
) -> Result<KindRun<M, O>, TrainError> {
    let (config, data, device) = open_run(dir, backend)?;
    let (model, objective) = build(&config, &data, &device.device)?;
    let (model, _, state) = checkpoint::load(dir, model, None)?;
    Ok(KindRun {
        dir: dir.to_path_buf(),
        config,
        data,
        model,
        objective,
        device,
        epochs_done: state.epochs_done,
    })
}

/// Draw `n` samples from the prior predictive and write them (data units, float32) to `out`
/// with shape `[n, ...sample_shape]`. `condition` (for CVAEs, in data units) is one value per
/// condition column, used for every sample. `noise` adds observation noise.
pub fn sample_run(
    run: &LoadedRun,
    n: usize,
    condition: Option<&[f64]>,
    noise: bool,
    out: &Path,
) -> Result<(), TrainError> {
    let device = &run.device.device;
    let c = run.model.model.cond_dim();
    let cond = match (c, condition) {
        (0, None) => None,
        (0, Some(_)) => {
            return Err(TrainError::Invalid {
                key: "--condition".into(),
                message: "this model is unconditional; drop --condition".into(),
            });
        }
        (c, Some(v)) if v.len() == c => {
            let mut rows: Vec<f64> = (0..n).flat_map(|_| v.iter().copied()).collect();
            run.data.norm.apply_cond(&mut rows);
            Some(Tensor::<2>::from_data(
                TensorData::new(rows, [n, c]),
                device,
            ))
        }
        (c, _) => {
            return Err(TrainError::Invalid {
                key: "--condition".into(),
                message: format!("this model needs --condition with {c} comma-separated value(s)"),
            });
        }
    };
    let latent = run.model.model.latent_dim();
    let noise_src = NoiseSource {
        seed: run.config.seed,
        stream: 200,
    };
    let prior = run.model.model.prior(n, cond.clone(), device);
    let z = prior.rsample(noise_src.normal([1, n, latent], 0, device));
    let params = run.model.model.decode(z, cond);
    let mut x = run.model.likelihood.mean(params.clone());
    if noise {
        if let Some(std) = run.model.likelihood.std(params) {
            let dims = x.dims();
            x = x + std * noise_src.normal::<3>(dims, 1, device);
        }
    }
    let mut values = x.into_data().try_into_vec_as::<f64>().expect("f64");
    run.data.norm.invert_x(&mut values);
    let mut shape = vec![n];
    shape.extend(&run.data.test.sample_shape);
    varphi_data::npy::save_npy_f32(out, &shape, &values).map_err(io_err(out))
}
