//! The `varphi` command line: its arguments ([`Cli`]) and one library call per command
//! ([`run`]). `main.rs` only installs the allocator and the panic hook and prints the error.
#![allow(missing_docs)] // clap turns the `///` comments of the arguments into `--help`.

use crate::backend::{BackendKind, choose_adapter, parse_backend};
use crate::bench::{BenchOverrides, PytorchTwin, Workload};
use crate::datagen::DataRequest;
use crate::kind::{ConditionSource, PredictRequest, SampleRequest, condition_from_file};
use crate::session::{self, TrainOptions};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// `varphi`: train, sample, evaluate and benchmark variational generative models.
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
  varphi sample runs/darcy-cvae-fno -n 10 --condition-file darcy.npz --condition-key coefficient --row 3
  varphi predict runs/my-cvae --input new.npz --key a -n 64 -o pred.npz --truth new.npz --truth-key u
  varphi calibrate runs/poisson1d-nonlinear --n 50      # recalibrate on 50 fresh labelled cases
  varphi report runs/quickstart                        # one HTML page: curves, bands, calibration, scores
  varphi devices                                       # list backends and wgpu adapters
  varphi bench --workload unet,fno --threads 2 --pytorch benches/.venv/bin/python
  varphi data darcy --n 1000 --grid 32 -o darcy.npz     # reference solutions + observations"
)]
pub struct Cli {
    #[command(subcommand)]
    /// The command.
    pub command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Train a model from a TOML config (writes a run directory).
    Train {
        /// Experiment config (optional with --resume).
        config: Option<PathBuf>,
        /// Run directory (default: runs/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Backend, overriding training.backend: flex, wgpu, wgpu:INDEX or wgpu:NAME.
        #[arg(long, value_parser = backend_arg)]
        backend: Option<BackendArg>,
        /// Continue the run in this directory from its last checkpoint.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
        /// Run the config's small variant (training.quick_epochs, default epochs / 10).
        #[arg(long)]
        quick: bool,
        /// Data-parallel devices of this process, comma-separated (e.g. flex,flex), overriding
        /// training.devices: each batch is split over them (docs/scaling.md).
        #[arg(long, value_delimiter = ',')]
        devices: Option<Vec<String>>,
        /// Require MPI: fail unless started by mpirun / srun with a build that has the `mpi`
        /// feature (without it, MPI is used whenever such a launch is detected).
        #[arg(long)]
        mpi: bool,
        /// Train only the ensemble members m with m mod N = I (one task of a job array; give
        /// every task the same --out); `varphi eval` the folder when all are done.
        #[arg(long)]
        shard: Option<crate::datagen::ShardArg>,
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
        /// Condition values for a CVAE, comma-separated (data units; negative values are
        /// fine: --condition -1.5,2).
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
        condition: Option<Vec<f64>>,
        /// The condition from a file (.npy, .npz, .safetensors, .csv; data units): all its values
        /// (any shape, e.g. one coefficient field), or one row of a [rows, …] file with --row.
        #[arg(long, conflicts_with = "condition")]
        condition_file: Option<PathBuf>,
        /// Array (.npz, .safetensors) or columns (.csv) of --condition-file.
        #[arg(long, requires = "condition_file")]
        condition_key: Option<String>,
        /// Row of --condition-file to take (0-based) when it holds several conditions.
        #[arg(long, requires = "condition_file")]
        row: Option<usize>,
        /// Add observation noise (default: the likelihood mean).
        #[arg(long)]
        noise: bool,
        /// Backend (default: the run's).
        #[arg(long, value_parser = backend_arg)]
        backend: Option<BackendArg>,
        /// Use the last checkpoint instead of the best one (runs with early stopping).
        #[arg(long)]
        last: bool,
    },
    /// Predict for new inputs: S samples of the predictive for every input row, written to an
    /// .npz archive with `samples` [rows, S, ...], `mean` and `std` [rows, ...] (data units).
    Predict {
        /// Run directory.
        run: PathBuf,
        /// Input file (.npy, .npz, .safetensors, .csv): one input per row — CVAE conditions,
        /// PDDLVM / boltzmann parameters, NPE observations.
        #[arg(long)]
        input: PathBuf,
        /// Array (.npz, .safetensors) or columns (.csv) of the inputs.
        #[arg(long)]
        key: Option<String>,
        /// Samples per input.
        #[arg(short, long, default_value_t = 64)]
        n: usize,
        /// Output .npz archive.
        #[arg(short, long, default_value = "predictions.npz")]
        output: PathBuf,
        /// Truth for each input row: score the predictions (relative L2, NLL, CRPS, coverage).
        #[arg(long)]
        truth: Option<PathBuf>,
        /// Array or columns of the truth file.
        #[arg(long)]
        truth_key: Option<String>,
        /// Backend (default: the run's).
        #[arg(long, value_parser = backend_arg)]
        backend: Option<BackendArg>,
        /// Use the last checkpoint instead of the best one (runs with early stopping).
        #[arg(long)]
        last: bool,
    },
    /// Evaluate a trained model on its test split (prints a table, writes eval.json).
    Eval {
        /// Run directory.
        run: PathBuf,
        /// Backend (default: the run's).
        #[arg(long, value_parser = backend_arg)]
        backend: Option<BackendArg>,
        /// Use the last checkpoint instead of the best one (runs with early stopping).
        #[arg(long)]
        last: bool,
    },
    /// Recalibrate a trained run on labelled cases kept apart from its test split: fit a spread
    /// factor and split-conformal intervals per scored block, written to RUN/calibration.json,
    /// which eval (recalibrated scores beside the raw ones) and predict (scaled samples) apply.
    Calibrate {
        /// Run directory.
        run: PathBuf,
        /// Fresh draws of the run's generator as calibration cases (default: the run's
        /// validation split if it has one, else 50 fresh draws).
        #[arg(long, conflicts_with = "data")]
        n: Option<usize>,
        /// Labelled calibration cases in a file (.npy, .npz, .safetensors, .csv).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Array or columns of the samples in --data (default: the file's only or `x` array).
        #[arg(long)]
        x: Option<String>,
        /// Array or columns of the conditions / parameters in --data.
        #[arg(long)]
        cond: Option<String>,
        /// Backend (default: the run's).
        #[arg(long, value_parser = backend_arg)]
        backend: Option<BackendArg>,
        /// Use the last checkpoint instead of the best one (runs with early stopping).
        #[arg(long)]
        last: bool,
    },
    /// Write RUN/report.html: one self-contained page with the config, training curves,
    /// predictive bands vs truth, reliability diagram and eval.json's scores (evaluates first
    /// if the run has no eval.json).
    Report {
        /// Run directory.
        run: PathBuf,
        /// Output HTML file (default: RUN/report.html).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// List the backends and the wgpu adapters of this machine (`--backend wgpu:INDEX`).
    Devices,
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
        /// Run only the cases c with c mod N = I (one task of a job array) into --out as a
        /// part; merge the parts with --merge.
        #[arg(long)]
        shard: Option<crate::datagen::ShardArg>,
        /// Part folders written with --shard 0/N … N-1/N, comma-separated in part order:
        /// write the files one process would into --out.
        #[arg(long, value_delimiter = ',')]
        merge: Option<Vec<PathBuf>>,
    },
    /// Generate a physics dataset (paper set-up, reference solver) into an .npz archive with a
    /// .json sidecar of the settings.
    Data(DataRequest),
    /// Training throughput of benchmark workloads on each backend, beside their PyTorch twins.
    Bench {
        /// Workloads (mlp-vae, unet, fno, pinn, conv-cvae; comma-separated).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "mlp-vae")]
        workload: Vec<Workload>,
        /// Backends to run (default: flex, and wgpu if an adapter exists).
        #[arg(long, value_enum, value_delimiter = ',')]
        backend: Option<Vec<BackendKind>>,
        /// Timed steps (default: 50 for mlp-vae and pinn, 20 for unet, fno and conv-cvae).
        #[arg(long)]
        steps: Option<usize>,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        /// Batch size (default: 128 for mlp-vae, 64 for unet and fno, 32 for conv-cvae, 1024 points for pinn).
        #[arg(long)]
        batch: Option<usize>,
        /// CPU threads for flex (and PyTorch); default: all cores.
        #[arg(long)]
        threads: Option<usize>,
        /// Python interpreter with torch installed: also run the twin in
        /// benches/pytorch_bench.py and print `ratio <backend>/pytorch`.
        #[arg(long)]
        pytorch: Option<PathBuf>,
        /// torch device of the twin (cpu or cuda).
        #[arg(long, default_value = "cpu")]
        pytorch_device: String,
    },
}

/// `--backend`: a backend and, for wgpu, an adapter (see [`parse_backend`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BackendArg(pub BackendKind, pub Option<String>);

fn backend_arg(s: &str) -> Result<BackendArg, String> {
    parse_backend(s).map(|(k, a)| BackendArg(k, a))
}

impl BackendArg {
    /// The backend, after choosing the process's wgpu adapter if one was named.
    pub fn kind(self) -> BackendKind {
        if let Some(a) = &self.1 {
            choose_adapter(a);
        }
        self.0
    }
}

fn kind(b: Option<BackendArg>) -> Option<BackendKind> {
    b.map(BackendArg::kind)
}

/// Run one command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let parallel = matches!(
        cli.command,
        Command::Train { .. } | Command::Data(_) | Command::Infer { .. }
    );
    if !parallel && let Some(n) = crate::cluster::launched_ranks().filter(|&n| n > 1) {
        anyhow::bail!(
            "started as one of {n} MPI ranks, but only train, data and infer use several ranks (docs/scaling.md); run this command as one process, without mpirun"
        );
    }
    match cli.command {
        Command::Train {
            config,
            out,
            backend,
            resume,
            quiet,
            quick,
            devices,
            mpi,
            shard,
        } => {
            let _mpi = crate::cluster::Guard::init(mpi)?;
            let lead = crate::cluster::world().rank() == 0;
            let opts = TrainOptions {
                out,
                backend: kind(backend),
                resume,
                quiet,
                no_plots: false,
                quick,
                devices,
                alone: false,
                shard: shard.map(|s| (s.index, s.count)),
            };
            let summary = crate::cluster::end_job_on_error(
                crate::ensemble::train(config.as_deref(), &opts).map_err(Into::into),
            )?;
            if lead {
                summary.print();
            }
        }
        Command::Sample {
            run,
            n,
            output,
            condition,
            condition_file,
            condition_key,
            row,
            noise,
            backend,
            last,
        } => {
            if n == 0 {
                anyhow::bail!("-n must be at least 1");
            }
            let (condition, condition_source) = match &condition_file {
                Some(path) => {
                    let array = varphi_data::read::load_array(path, condition_key.as_deref())?;
                    let (values, source) = condition_from_file(path, &array, row)?;
                    (Some(values), source)
                }
                None => (condition, ConditionSource::List),
            };
            let request = SampleRequest {
                n,
                condition,
                condition_source,
                noise,
                out: output,
            };
            crate::ensemble::single_run(&run, "sample")?;
            println!("{}", session::sample(&run, &request, kind(backend), last)?);
        }
        Command::Predict {
            run,
            input,
            key,
            n,
            output,
            truth,
            truth_key,
            backend,
            last,
        } => {
            let request = PredictRequest {
                input,
                key,
                n,
                out: output,
                truth,
                truth_key,
            };
            crate::ensemble::predict(&run, &request, kind(backend), last)?;
        }
        Command::Eval { run, backend, last } => {
            crate::ensemble::evaluate(&run, kind(backend), true, last)?;
        }
        Command::Calibrate {
            run,
            n,
            data,
            x,
            cond,
            backend,
            last,
        } => {
            let source = match (n, data) {
                (Some(n), _) => session::CalibrationSource::Fresh(n),
                (None, Some(path)) => session::CalibrationSource::File(varphi_data::FileSource {
                    path,
                    x,
                    cond,
                    cond_path: None,
                }),
                (None, None) => session::CalibrationSource::Auto,
            };
            crate::ensemble::single_run(&run, "calibrate")?;
            let file = session::calibrate(&run, &source, kind(backend), last)?;
            session::print_calibration(&run, &file);
        }
        Command::Report { run, output } => {
            crate::ensemble::single_run(&run, "report")?;
            let p = crate::report::write_report(&run, output.as_deref())?;
            println!("wrote {}", p.display());
        }
        Command::Devices => crate::backend::print_devices(),
        Command::Infer {
            config,
            out,
            quiet,
            shard,
            merge,
        } => {
            let out = out.unwrap_or_else(|| {
                PathBuf::from("runs").join(config.file_stem().unwrap_or_default())
            });
            let _mpi = crate::cluster::Guard::init(false)?;
            let split = crate::infer::InferSplit {
                shard: shard.map(|s| (s.index, s.count)),
                merge: merge.as_deref(),
            };
            let summary = crate::infer::infer(&config, &out, quiet, split);
            if let Some(summary) = crate::cluster::end_job_on_error(summary.map_err(Into::into))? {
                summary.print(&out);
            }
        }
        Command::Data(request) => {
            let _mpi = crate::cluster::Guard::init(false)?;
            crate::cluster::end_job_on_error(
                crate::datagen::generate(&request).map_err(Into::into),
            )?
        }
        Command::Bench {
            workload,
            backend,
            steps,
            warmup,
            batch,
            threads,
            pytorch,
            pytorch_device,
        } => crate::bench::run(
            &workload,
            backend,
            &BenchOverrides {
                batch,
                steps,
                warmup,
            },
            threads,
            pytorch
                .map(|python| PytorchTwin {
                    python,
                    device: pytorch_device,
                })
                .as_ref(),
        )?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from(std::iter::once("varphi").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn negative_numbers_are_accepted_wherever_the_cli_takes_numbers() {
        for form in [
            vec!["sample", "runs/x", "--condition", "-0.0134,0.155,-2"],
            vec!["sample", "runs/x", "--condition=-0.0134,0.155,-2"],
        ] {
            let Command::Sample { condition, .. } = parse(&form).unwrap().command else {
                panic!("not a sample command");
            };
            assert_eq!(condition, Some(vec![-0.0134, 0.155, -2.0]));
        }
        let Command::Sample { condition, .. } = parse(&["sample", "runs/x", "--condition", "-1.5"])
            .unwrap()
            .command
        else {
            panic!("not a sample command");
        };
        assert_eq!(condition, Some(vec![-1.5]));
        let err = parse(&["sample", "runs/x", "--condition", "-1.5,abc"])
            .err()
            .unwrap();
        assert!(err.contains("abc"), "{err}");
    }

    #[test]
    fn backend_flags_take_a_wgpu_adapter() {
        let Command::Eval { backend, last, .. } =
            parse(&["eval", "runs/x", "--backend", "wgpu:1", "--last"])
                .unwrap()
                .command
        else {
            panic!("not an eval command");
        };
        assert_eq!(
            backend,
            Some(BackendArg(BackendKind::Wgpu, Some("1".into())))
        );
        assert!(last);
        let err = parse(&["train", "c.toml", "--backend", "gpu"])
            .err()
            .unwrap();
        assert!(err.contains("unknown backend 'gpu'"), "{err}");
    }
}
