//! `varphi`: train, sample, evaluate and benchmark variational generative models.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use varphi_data::physics::{GeneratorSpec, Observations, PhysicsSettings, ProblemKind};
use varphi_train::backend::{BackendKind, wgpu_available};
use varphi_train::bench::{BenchSpec, vae_throughput};
use varphi_train::config::ModelKind;
use varphi_train::run::{TrainOptions, evaluate_run, load_run, sample_run, train};

/// Training allocates and frees the same large activation buffers every step. glibc's malloc
/// returns such blocks to the OS (mmap/munmap), so every step page-faults them back in: ~20%
/// of CPU time in the benchmark VAE. mimalloc keeps and reuses them (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "varphi",
    version,
    about = "Variational inference for physics-informed deep generative models",
    after_help = "Examples:
  varphi train configs/quickstart.toml                 # train on the built-in heat-equation data
  varphi train configs/quickstart.toml --backend wgpu  # on a GPU (Vulkan/Metal/DX12)
  varphi train --resume runs/quickstart                # continue an interrupted run
  varphi eval runs/quickstart                          # test ELBO, reconstruction error -> eval.json
  varphi sample runs/quickstart -n 100 -o samples.npy  # draw from the model
  varphi sample runs/heat-cvae -n 10 -o s.npy --condition 1.5
  varphi bench --threads 1 --pytorch benches/.venv/bin/python
  varphi data darcy --n 1000 --grid 32 -o darcy.npz     # reference solutions + observations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a TOML config (writes a run directory).
    Train {
        /// Experiment config (optional with --resume).
        config: Option<PathBuf>,
        /// Run directory (default: runs/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Backend, overriding training.backend.
        #[arg(long, value_enum)]
        backend: Option<BackendKind>,
        /// Continue the run in this directory from its last checkpoint.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
        /// Run the config's small variant (training.quick_epochs, default epochs / 10).
        #[arg(long)]
        quick: bool,
    },
    /// Draw samples from a trained model into a .npy file.
    Sample {
        /// Run directory.
        run: PathBuf,
        /// Number of samples.
        #[arg(short, long, default_value_t = 16)]
        n: usize,
        /// Output .npy file ([n, ...sample shape], float32, data units).
        #[arg(short, long, default_value = "samples.npy")]
        output: PathBuf,
        /// Condition values for a CVAE, comma-separated (data units).
        #[arg(long, value_delimiter = ',')]
        condition: Option<Vec<f64>>,
        /// Add observation noise (default: the likelihood mean).
        #[arg(long)]
        noise: bool,
        /// Backend (default: the run's).
        #[arg(long, value_enum)]
        backend: Option<BackendKind>,
    },
    /// Evaluate a trained model on its test split (prints a table, writes eval.json).
    Eval {
        /// Run directory.
        run: PathBuf,
        /// Backend (default: the run's).
        #[arg(long, value_enum)]
        backend: Option<BackendKind>,
    },
    /// Bayes VI with the solver in the likelihood (adjoint gradients): fit q(ξ) to noisy
    /// observations of each test case; writes summary.json, samples.npy and truth.npy.
    Infer {
        /// Inference config (see configs/darcy-bayes-vi.toml).
        config: PathBuf,
        /// Output folder (default: runs/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// No per-case output.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Generate a physics dataset (paper set-up, reference solver) into an .npz archive with a
    /// .json sidecar of the settings.
    Data {
        /// Problem.
        #[arg(value_enum)]
        problem: ProblemArg,
        /// Number of samples.
        #[arg(long, short, default_value_t = 1000)]
        n: usize,
        /// Grid nodes per axis (time levels for the pendulum); default: the set-up's.
        #[arg(long)]
        grid: Option<usize>,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output .npz archive.
        #[arg(short, long)]
        output: PathBuf,
        /// Observed nodes: a count, `all` or `none` (default: the set-up's).
        #[arg(long)]
        obs: Option<ObsArg>,
        /// Observation noise σ (default: the set-up's).
        #[arg(long)]
        obs_sigma: Option<f64>,
        /// TOML file with the problem's settings (e.g. discretisation, parameter ranges).
        #[arg(long)]
        settings: Option<PathBuf>,
        /// Worker threads (default: all cores; the data do not depend on it).
        #[arg(long)]
        threads: Option<usize>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Training throughput of an MLP VAE 784-512-512-16 at batch 128 on each backend.
    Bench {
        /// Backends to run (default: flex, ndarray, and wgpu if an adapter exists).
        #[arg(long, value_enum, value_delimiter = ',')]
        backend: Option<Vec<BackendKind>>,
        /// Timed steps.
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        /// Batch size.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// CPU threads for flex/ndarray (and PyTorch); default: all cores.
        #[arg(long)]
        threads: Option<usize>,
        /// Python interpreter with torch installed: also run benches/pytorch_vae.py.
        #[arg(long)]
        pytorch: Option<PathBuf>,
    },
}

/// Problems of `varphi data`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ProblemArg {
    /// Darcy flow, FNO two-phase coefficient (−∇·(a∇u) = 1 on the unit square).
    Darcy,
    /// 1-D nonlinear Poisson (RGNP).
    Poisson1d,
    /// Viscous Burgers (RGNP).
    Burgers,
    /// Advection–diffusion (phys-vae).
    Heat,
    /// Damped forced pendulum (phys-vae).
    Pendulum,
}

impl From<ProblemArg> for ProblemKind {
    fn from(p: ProblemArg) -> Self {
        match p {
            ProblemArg::Darcy => ProblemKind::Darcy,
            ProblemArg::Poisson1d => ProblemKind::Poisson1d,
            ProblemArg::Burgers => ProblemKind::Burgers,
            ProblemArg::Heat => ProblemKind::Heat,
            ProblemArg::Pendulum => ProblemKind::Pendulum,
        }
    }
}

/// `--obs`: a count, `all` or `none`.
#[derive(Clone, Copy, Debug)]
enum ObsArg {
    Count(usize),
    All,
    None,
}

impl std::str::FromStr for ObsArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(ObsArg::All),
            "none" => Ok(ObsArg::None),
            _ => s
                .parse()
                .map(ObsArg::Count)
                .map_err(|_| format!("expected a count, `all` or `none`, got '{s}'")),
        }
    }
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal failure: {}{at} (please report this)",
            msg.replace('\n', "; ")
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line: clap's message and its list of possible values, without the usage block.
            let text = e.to_string();
            let line = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("Usage:")
                        && !l.starts_with("For more information")
                })
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("{line} (see varphi --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', "; "));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train {
            config,
            out,
            backend,
            resume,
            quiet,
            quick,
        } => {
            let opts = TrainOptions {
                out,
                backend,
                resume,
                quiet,
                no_plots: false,
                quick,
            };
            let s = train(config.as_deref(), &opts)?;
            let fmt = |t: &[(&str, f64)]| {
                t.iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!("done: {} epochs on {}", s.epochs_done, s.device);
            println!("  train: {}", fmt(&s.last_train));
            println!("  test:  {}", fmt(&s.last_test));
            let written: Vec<&str> = [
                "config.toml",
                "metrics.csv",
                "checkpoint/",
                "loss.png",
                "samples.png",
            ]
            .into_iter()
            .filter(|f| s.run_dir.join(f.trim_end_matches('/')).exists())
            .collect();
            println!("  wrote {}/{{{}}}", s.run_dir.display(), written.join(", "));
        }
        Command::Sample {
            run,
            n,
            output,
            condition,
            noise,
            backend,
        } => {
            if n == 0 {
                anyhow::bail!("-n must be at least 1");
            }
            if let Some(kind @ (ModelKind::Npe | ModelKind::PhysVae)) = run_kind(&run) {
                anyhow::bail!(
                    "{} is a{} run (a posterior over parameters given observations, not a generative model of solutions); `varphi eval` scores and samples it",
                    run.display(),
                    if kind == ModelKind::Npe {
                        "n npe"
                    } else {
                        " phys-vae"
                    }
                );
            }
            if is_physics_run(&run) {
                if noise {
                    anyhow::bail!(
                        "--noise is for data likelihoods; a pddlvm surrogate's samples already carry its predictive spread"
                    );
                }
                let loaded = varphi_train::physics::load_physics_run(&run, backend)?;
                let z = varphi_train::physics::sample_surrogate(
                    &loaded,
                    n,
                    condition.as_deref(),
                    &output,
                )?;
                let shown: Vec<String> = z.iter().take(6).map(|v| format!("{v:.4}")).collect();
                println!(
                    "wrote {n} surrogate samples u ~ q(u|z) {:?} to {} (z = [{}{}])",
                    loaded.objective.physics.problem.solution_shape(),
                    output.display(),
                    shown.join(", "),
                    if z.len() > 6 { ", ..." } else { "" }
                );
            } else {
                let loaded = load_run(&run, backend)?;
                sample_run(&loaded, n, condition.as_deref(), noise, &output)?;
                let mut shape = vec![n];
                shape.extend(&loaded.data.test.sample_shape);
                println!("wrote {} samples {:?} to {}", n, shape, output.display());
            }
        }
        Command::Eval { run, backend } if run_kind(&run) == Some(ModelKind::Npe) => {
            let loaded = varphi_train::npe::load_npe_run(&run, backend)?;
            let r = varphi_train::npe::evaluate_npe_run(&loaded)?;
            print_parameter_table(
                &run,
                (r.n_test, r.n_samples, r.epochs),
                &format!(
                    "posterior q(z|y) from {} noisy observations (σ_y = {}) per case",
                    r.n_obs, r.obs_sigma
                ),
                "rel_l2",
                std::iter::once(("all".to_string(), r.posterior.rel_l2, &r.posterior))
                    .chain(
                        r.per_parameter
                            .iter()
                            .map(|(n, s)| (n.clone(), s.rel_l2, s)),
                    )
                    .collect(),
            );
            println!("wrote {}", run.join("eval.json").display());
        }
        Command::Eval { run, backend } if run_kind(&run) == Some(ModelKind::PhysVae) => {
            let loaded = varphi_train::physvae::load_physvae_run(&run, backend)?;
            let r = varphi_train::physvae::evaluate_physvae_run(&loaded)?;
            print_parameter_table(
                &run,
                (r.n_test, r.n_samples, r.epochs),
                &format!(
                    "physical latents from {} noisy observations (σ_y = {}) per case",
                    r.n_obs, r.obs_sigma
                ),
                "rel_err",
                r.parameters
                    .iter()
                    .map(|p| (p.name.clone(), p.rel_error_mean, &p.scores))
                    .collect(),
            );
            println!(
                "  reconstruction rel. L2 {:.4} (physics part alone {:.4})",
                r.reconstruction_rel_l2, r.physics_rel_l2
            );
            if let Some(sigma) = r.learned_sigma {
                println!(
                    "  learned likelihood σ {sigma:.4} (observation noise σ_y = {})",
                    r.obs_sigma
                );
            }
            if let Some(rho) = r.learned_rho {
                println!("  learned AR(1) noise correlation ρ {rho:.4}");
            }
            println!("wrote {}", run.join("eval.json").display());
        }
        Command::Eval { run, backend } if is_physics_run(&run) => {
            let loaded = varphi_train::physics::load_physics_run(&run, backend)?;
            let r = varphi_train::physics::evaluate_physics_run(&loaded)?;
            println!(
                "evaluation of {} ({} test cases × {} predictive samples, {} epochs)",
                run.display(),
                r.n_test,
                r.n_samples,
                r.epochs
            );
            let forward = varphi_train::uq::UqScores {
                rel_l2: r.rel_l2,
                nll: r.nll,
                crps: r.crps,
                coverage: r.coverage.clone(),
            };
            let mut columns = vec![("forward u|z", &forward), ("inverse z|u", &r.inverse)];
            if let Some(p) = &r.posterior {
                println!(
                    "  posterior from {} noisy observations (σ_y = {}) per case",
                    p.n_obs, p.obs_sigma
                );
                columns.extend([
                    ("posterior z|y", &p.params),
                    ("prior z", &p.prior),
                    ("predictive u|y", &p.solution),
                ]);
            }
            print!("  {:<24}", "metric");
            columns.iter().for_each(|(name, _)| print!(" {name:>14}"));
            println!();
            type Get = fn(&varphi_train::uq::UqScores) -> f64;
            let rows: [(&str, Get); 6] = [
                ("relative L2 of the mean", |c| c.rel_l2),
                ("NLL per entry", |c| c.nll),
                ("CRPS per entry", |c| c.crps),
                ("coverage 50 %", |c| {
                    c.coverage.get("0.5").copied().unwrap_or(f64::NAN)
                }),
                ("coverage 90 %", |c| {
                    c.coverage.get("0.9").copied().unwrap_or(f64::NAN)
                }),
                ("coverage 95 %", |c| {
                    c.coverage.get("0.95").copied().unwrap_or(f64::NAN)
                }),
            ];
            for (k, get) in rows {
                print!("  {k:<24}");
                columns
                    .iter()
                    .for_each(|(_, c)| print!(" {:>14.5}", get(c)));
                println!();
            }
            if let Some(p) = r.posterior.as_ref().filter(|p| !p.per_parameter.is_empty()) {
                println!("  posterior per parameter: rel_l2 / coverage 90 %");
                for (name, c) in &p.per_parameter {
                    println!(
                        "    {name:<8} {:>10.4} {:>8.3}",
                        c.rel_l2,
                        c.coverage.get("0.9").copied().unwrap_or(f64::NAN)
                    );
                }
            }
            println!(
                "  residual norm of samples {:.4e} (reference solutions: {:.4e})",
                r.residual_norm, r.reference_residual_norm
            );
            println!("wrote {}", run.join("eval.json").display());
        }
        Command::Infer { config, out, quiet } => {
            let out = out.unwrap_or_else(|| {
                PathBuf::from("runs").join(config.file_stem().unwrap_or_default())
            });
            let r = varphi_train::infer::infer(&config, &out, quiet)?;
            println!(
                "Bayes VI ({}) on {} cases, {} observations each (σ_y = {}), {:.1} s",
                match (r.family, r.rank) {
                    (varphi_train::infer::FamilyName::LowRank, Some(k)) =>
                        format!("low-rank, rank {k}"),
                    (varphi_train::infer::FamilyName::MeanField, _) => "mean-field".into(),
                    (varphi_train::infer::FamilyName::Flow, _) => "RealNVP flow".into(),
                    (varphi_train::infer::FamilyName::Map, _) => "MAP point with chi-shell".into(),
                    _ => "full-covariance".into(),
                },
                r.n_cases,
                r.n_obs,
                r.obs_sigma,
                r.wall_s
            );
            println!("  metric                      posterior        prior");
            println!(
                "  relative L2 of the mean  {:>12.5} {:>12.5}",
                r.posterior.rel_l2, r.prior.rel_l2
            );
            println!(
                "  NLL per entry            {:>12.5} {:>12.5}",
                r.posterior.nll, r.prior.nll
            );
            println!(
                "  CRPS per entry           {:>12.5} {:>12.5}",
                r.posterior.crps, r.prior.crps
            );
            for (level, c) in &r.posterior.coverage {
                let pct = level.parse::<f64>().unwrap_or(f64::NAN) * 100.0;
                let prior = r.prior.coverage.get(level).copied().unwrap_or(f64::NAN);
                println!(
                    "  {:<24} {c:>12.5} {prior:>12.5}",
                    format!("coverage {pct:.0} %")
                );
            }
            println!(
                "wrote {}/{{summary.json, samples.npy, truth.npy}}",
                out.display()
            );
        }
        Command::Eval { run, backend } => {
            let loaded = load_run(&run, backend)?;
            let r = evaluate_run(&loaded)?;
            println!(
                "evaluation of {} ({} test samples, {} epochs)",
                run.display(),
                r.n_test,
                r.epochs
            );
            println!("  {:<34} {:>12}", "metric", "value");
            for (k, v) in [
                ("test ELBO per datum (normalised)", r.test_elbo),
                ("test E_q log p(x|z)", r.test_log_lik),
                ("test KL(q||p)", r.test_kl),
                ("reconstruction RMSE (data units)", r.recon_rmse),
                ("reconstruction relative L2", r.recon_rel_l2),
            ] {
                println!("  {k:<34} {v:>12.5}");
            }
            if let Some(v) = r.test_iwae64 {
                println!("  {:<34} {v:>12.5}", "test IWAE bound, k = 64");
            }
            if let Some(s) = &r.surrogate {
                println!("  surrogate x | c (64 samples per test case, data units)");
                println!("  {:<34} {:>12.5}", "relative L2 of the mean", s.rel_l2);
                println!("  {:<34} {:>12.5}", "NLL per entry", s.nll);
                println!("  {:<34} {:>12.5}", "CRPS per entry", s.crps);
                for (level, c) in &s.coverage {
                    let pct = level.parse::<f64>().unwrap_or(f64::NAN) * 100.0;
                    println!("  {:<34} {c:>12.5}", format!("coverage {pct:.0} %"));
                }
            }
            println!("wrote {}", run.join("eval.json").display());
        }
        Command::Data {
            problem,
            n,
            grid,
            seed,
            output,
            obs,
            obs_sigma,
            settings,
            threads,
            quiet,
        } => generate_data(
            problem, n, grid, seed, &output, obs, obs_sigma, settings, threads, quiet,
        )?,
        Command::Bench {
            backend,
            steps,
            warmup,
            batch,
            threads,
            pytorch,
        } => {
            if let Some(t) = threads {
                // SAFETY: set before any thread pool exists; the program is single-threaded here.
                unsafe { std::env::set_var("RAYON_NUM_THREADS", t.to_string()) };
            }
            let backends = backend.unwrap_or_else(|| {
                let mut v = vec![BackendKind::Flex, BackendKind::Ndarray];
                if wgpu_available() {
                    v.push(BackendKind::Wgpu);
                }
                v
            });
            let spec = BenchSpec {
                batch,
                warmup,
                steps,
            };
            let threads_label = threads.map_or("all".to_string(), |t| t.to_string());
            println!(
                "MLP VAE 784-512-512-16, batch {batch}, {steps} timed steps after {warmup} warm-up, threads: {threads_label}"
            );
            println!(
                "  {:<10} {:>10} {:>12}  device",
                "backend", "steps/s", "samples/s"
            );
            for b in backends {
                match vae_throughput(b, &spec) {
                    Ok(r) => println!(
                        "  {:<10} {:>10.1} {:>12.0}  {} (final loss {:.1})",
                        b.to_string(),
                        r.steps_per_s,
                        r.samples_per_s,
                        r.device,
                        r.final_loss
                    ),
                    Err(e) => println!("  {:<10} unavailable: {e}", b.to_string()),
                }
            }
            if let Some(py) = pytorch {
                let script =
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/pytorch_vae.py");
                let mut cmd = std::process::Command::new(&py);
                cmd.arg(&script).args([
                    "--steps",
                    &steps.to_string(),
                    "--warmup",
                    &warmup.to_string(),
                    "--batch",
                    &batch.to_string(),
                ]);
                if let Some(t) = threads {
                    cmd.args(["--threads", &t.to_string()]);
                }
                let out = cmd
                    .output()
                    .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", py.display()))?;
                if !out.status.success() {
                    anyhow::bail!(
                        "PyTorch reference failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                    );
                }
                print!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
    }
    Ok(())
}

/// Whether `run` holds a physics (pddlvm) run; errors surface later, in the loaders.
/// The evaluation table of a parameter posterior: one row per parameter with a point-error
/// column, NLL, CRPS and coverage at 50/90/95 %.
fn print_parameter_table(
    run: &std::path::Path,
    (n_test, n_samples, epochs): (usize, usize, usize),
    what: &str,
    error_name: &str,
    rows: Vec<(String, f64, &varphi_train::uq::UqScores)>,
) {
    println!(
        "evaluation of {} ({n_test} test cases × {n_samples} posterior samples, {epochs} epochs)",
        run.display()
    );
    println!("  {what}");
    println!(
        "  {:<10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "parameter", error_name, "NLL", "CRPS", "cov 50", "cov 90", "cov 95"
    );
    for (name, err, s) in rows {
        let c = |l: &str| s.coverage.get(l).copied().unwrap_or(f64::NAN);
        println!(
            "  {name:<10} {err:>10.4} {:>10.4} {:>10.4} {:>8.3} {:>8.3} {:>8.3}",
            s.nll,
            s.crps,
            c("0.5"),
            c("0.9"),
            c("0.95")
        );
    }
}

fn run_kind(run: &std::path::Path) -> Option<ModelKind> {
    varphi_train::TrainConfig::load(&run.join("config.toml"))
        .ok()
        .map(|c| c.model.kind)
}

fn is_physics_run(run: &std::path::Path) -> bool {
    run_kind(run) == Some(ModelKind::Pddlvm)
}

#[allow(clippy::too_many_arguments)]
fn generate_data(
    problem: ProblemArg,
    n: usize,
    grid: Option<usize>,
    seed: u64,
    output: &std::path::Path,
    obs: Option<ObsArg>,
    obs_sigma: Option<f64>,
    settings: Option<PathBuf>,
    threads: Option<usize>,
    quiet: bool,
) -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    if n == 0 {
        bail!("--n must be at least 1");
    }
    if let Some(g) = grid
        && g < 3
    {
        bail!("--grid must be at least 3, got {g}");
    }
    let kind = ProblemKind::from(problem);
    let mut physics = PhysicsSettings::new(kind, None);
    if let Some(path) = &settings {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read settings file {}", path.display()))?;
        let bad = |e: toml::de::Error| {
            anyhow::anyhow!("{}: {}", path.display(), e.message().replace('\n', " "))
        };
        physics = match kind {
            ProblemKind::Darcy => PhysicsSettings::Darcy(toml::from_str(&text).map_err(bad)?),
            ProblemKind::Poisson1d => {
                PhysicsSettings::Poisson1d(toml::from_str(&text).map_err(bad)?)
            }
            ProblemKind::Burgers => PhysicsSettings::Burgers(toml::from_str(&text).map_err(bad)?),
            ProblemKind::Heat => PhysicsSettings::Heat(toml::from_str(&text).map_err(bad)?),
            ProblemKind::Pendulum => PhysicsSettings::Pendulum(toml::from_str(&text).map_err(bad)?),
        };
    }
    if let Some(g) = grid {
        physics.set_grid(g);
    }
    physics.validate()?;
    let default_obs = physics.default_observations();
    let sigma = obs_sigma.unwrap_or(default_obs.sigma);
    // The set-up's count, capped at the observable nodes of a small grid.
    let observable = physics.build().observable().len();
    let observations = match obs {
        None => Some(Observations {
            count: default_obs.count.map(|c| c.min(observable)),
            sigma,
        }),
        Some(ObsArg::None) => None,
        Some(ObsArg::All) => Some(Observations { count: None, sigma }),
        Some(ObsArg::Count(0)) => None,
        Some(ObsArg::Count(c)) if c > observable => {
            bail!("--obs {c}: this grid has only {observable} observable nodes")
        }
        Some(ObsArg::Count(c)) => Some(Observations {
            count: Some(c),
            sigma,
        }),
    };
    // Fail on an unwritable output before spending time on the solves.
    let probe = output.with_extension("npz.partial");
    std::fs::write(&probe, b"").map_err(|e| {
        anyhow::anyhow!(
            "cannot write {}: {e} (check that the folder exists and is writable)",
            output.display()
        )
    })?;
    std::fs::remove_file(&probe).ok();
    let spec = GeneratorSpec {
        physics,
        n,
        seed,
        observations,
    };
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(n as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} samples, {per_sec}, eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        )
    };
    bar.set_message(format!("{problem:?}").to_lowercase());
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let generated =
        varphi_data::physics::generate_on(&spec, threads, &|k| bar.set_position(k as u64))?;
    bar.finish_and_clear();
    varphi_data::physics::write(&generated, &spec, output)?;
    let shapes: Vec<String> = generated
        .arrays
        .iter()
        .map(|a| format!("{} {:?}", a.name, a.shape))
        .collect();
    println!(
        "wrote {n} samples to {} in {:.2} s ({:.1} samples/s): {}",
        output.display(),
        generated.seconds,
        n as f64 / generated.seconds,
        shapes.join(", ")
    );
    println!("settings: {}", output.with_extension("json").display());
    Ok(())
}
