//! `varphi data`: reference solutions of the paper set-ups the primer reviews, generated on all
//! cores into an `.npz` archive (see `varphi_data::physics`).

use std::path::PathBuf;
use varphi_data::physics::{GeneratorSpec, Observations, PhysicsSettings, ProblemKind};
use varphi_data::sequences::{AdvectionVideoSettings, LorenzFieldsSettings};

/// Problems of `varphi data`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ProblemArg {
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
    /// Advection from video: rendered frames of a latent advection–diffusion state (Φ-DVAE).
    AdvectionVideo,
    /// Lorenz-63 seen through its Rayleigh–Bénard velocity and temperature fields (Φ-DVAE).
    LorenzFields,
}

impl ProblemArg {
    /// The physics problem (`None`: a sequence data set of [`varphi_data::sequences`]).
    fn problem(self) -> Option<ProblemKind> {
        Some(match self {
            ProblemArg::Darcy => ProblemKind::Darcy,
            ProblemArg::Poisson1d => ProblemKind::Poisson1d,
            ProblemArg::Burgers => ProblemKind::Burgers,
            ProblemArg::Heat => ProblemKind::Heat,
            ProblemArg::Pendulum => ProblemKind::Pendulum,
            ProblemArg::AdvectionVideo | ProblemArg::LorenzFields => return None,
        })
    }
}

/// `--obs`: a count, `all` or `none`.
#[derive(Clone, Copy, Debug)]
pub enum ObsArg {
    /// Observe this many nodes.
    Count(usize),
    /// Every observable node.
    All,
    /// No observations.
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

/// What `varphi data` generates (its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct DataRequest {
    /// Problem.
    #[arg(value_enum)]
    pub problem: ProblemArg,
    /// Number of samples.
    #[arg(long, short, default_value_t = 1000)]
    pub n: usize,
    /// Grid nodes per axis (time levels for the pendulum); default: the set-up's.
    #[arg(long)]
    pub grid: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output .npz archive.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Observed nodes: a count, `all` or `none` (default: the set-up's).
    #[arg(long)]
    pub obs: Option<ObsArg>,
    /// Observation noise σ (default: the set-up's).
    #[arg(long)]
    pub obs_sigma: Option<f64>,
    /// TOML file with the problem's settings (e.g. discretisation, parameter ranges).
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// Worker threads (default: all cores; the data do not depend on it).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `varphi data`: generate the reference solutions (and observations) of a paper set-up into
/// an `.npz` archive with a `.json` sidecar of the settings.
pub fn generate(request: &DataRequest) -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    let DataRequest {
        problem,
        n,
        grid,
        seed,
        ref output,
        obs,
        obs_sigma,
        ref settings,
        threads,
        quiet,
    } = *request;
    if n == 0 {
        bail!("--n must be at least 1");
    }
    if let Some(g) = grid
        && g < 3
    {
        bail!("--grid must be at least 3, got {g}");
    }
    let Some(kind) = problem.problem() else {
        return sequences(request);
    };
    let mut physics = PhysicsSettings::new(kind, None);
    if let Some(path) = settings {
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

/// `varphi data advection-video | lorenz-fields`: sequences of frames, latent states and
/// parameters ([`varphi_data::sequences`]) into an `.npz` archive with a `.json` sidecar;
/// `--settings` is a TOML file of the set-up's fields, `--grid` the advection nodes.
fn sequences(request: &DataRequest) -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    if request.obs.is_some() || request.obs_sigma.is_some() {
        bail!(
            "sequence data sets have no point observations: the frames are the observations (their noise is in --settings); drop --obs / --obs-sigma"
        );
    }
    fn settings<T: Default + serde::de::DeserializeOwned>(
        path: &Option<PathBuf>,
    ) -> anyhow::Result<T> {
        let Some(path) = path else {
            return Ok(T::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read settings file {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message().replace('\n', " ")))
    }
    let start = std::time::Instant::now();
    let (what, frames, shape) = match request.problem {
        ProblemArg::LorenzFields => {
            if request.grid.is_some() {
                bail!("--grid: lorenz-fields has no grid option; set width / height in --settings");
            }
            let s: LorenzFieldsSettings = settings(&request.settings)?;
            s.validate()?;
            let g = s.generate(request.n, request.seed)?;
            s.write(&g, request.seed, &request.output)?;
            ("sequences (u, w, θ)", s.frames, [s.height, s.width])
        }
        ProblemArg::AdvectionVideo => {
            let mut s: AdvectionVideoSettings = settings(&request.settings)?;
            if let Some(g) = request.grid {
                s.nodes = g;
            }
            s.validate()?;
            let g = s.generate(request.n, request.seed)?;
            s.write(&g, request.seed, &request.output)?;
            ("sequences", s.frames, [s.height, s.nodes])
        }
        physics => unreachable!("{physics:?} is a physics problem, generated by `generate`"),
    };
    println!(
        "wrote {} {what} of {frames} frames {}×{} to {} in {:.2} s: frames, states, params",
        request.n,
        shape[0],
        shape[1],
        request.output.display(),
        start.elapsed().as_secs_f64()
    );
    println!(
        "settings: {}",
        request.output.with_extension("json").display()
    );
    Ok(())
}
