//! The `varphi` command line: its arguments ([`Cli`]) and one library call per command
//! ([`run`]). `main.rs` only installs the allocator and the panic hook and prints the error.
#![allow(missing_docs)] // clap turns the `///` comments of the arguments into `--help`.

use crate::backend::BackendKind;
use crate::bench::BenchSpec;
use crate::datagen::DataRequest;
use crate::kind::SampleRequest;
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
  varphi bench --threads 1 --pytorch benches/.venv/bin/python
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
    Data(DataRequest),
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

/// Run one command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
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
            session::train(config.as_deref(), &opts)?.print();
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
            let request = SampleRequest {
                n,
                condition,
                noise,
                out: output,
            };
            println!("{}", session::sample(&run, &request, backend)?);
        }
        Command::Eval { run, backend } => {
            session::evaluate(&run, backend, true)?;
        }
        Command::Infer { config, out, quiet } => {
            let out = out.unwrap_or_else(|| {
                PathBuf::from("runs").join(config.file_stem().unwrap_or_default())
            });
            crate::infer::infer(&config, &out, quiet)?.print(&out);
        }
        Command::Data(request) => crate::datagen::generate(&request)?,
        Command::Bench {
            backend,
            steps,
            warmup,
            batch,
            threads,
            pytorch,
        } => crate::bench::run(
            backend,
            &BenchSpec {
                batch,
                warmup,
                steps,
            },
            threads,
            pytorch.as_deref(),
        )?,
    }
    Ok(())
}
