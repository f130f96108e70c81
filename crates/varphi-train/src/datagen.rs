//! `varphi data`: reference solutions of the paper set-ups the primer reviews, generated on all
//! cores into an `.npz` archive (see `varphi_data::physics`).

use std::path::PathBuf;
use varphi_data::physics::{
    Generated, GeneratorSpec, Observations, PER_SAMPLE_ARRAYS, PhysicsSettings, ProblemKind,
};
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

/// `--shard I/N`: part `I` (0-based) of `N` contiguous parts of the samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardArg {
    /// This part, `0 .. count`.
    pub index: usize,
    /// Parts.
    pub count: usize,
}

impl std::str::FromStr for ShardArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected I/N with 0 ≤ I < N (e.g. 0/4), got '{s}'");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
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
    /// Generate only part I of N contiguous parts of the samples (e.g. one task of a job
    /// array); merge the parts with --merge. Under mpirun the ranks split the samples
    /// themselves and rank 0 writes the whole archive.
    #[arg(long)]
    pub shard: Option<ShardArg>,
    /// Merge these part archives (written with --shard 0/N … N-1/N and the same other
    /// arguments), comma-separated in part order, into --output: the archive one process
    /// would write, byte for byte.
    #[arg(long, value_delimiter = ',')]
    pub merge: Option<Vec<PathBuf>>,
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
        shard,
        ref merge,
    } = *request;
    if n == 0 {
        bail!("--n must be at least 1");
    }
    if let Some(g) = grid
        && g < 3
    {
        bail!("--grid must be at least 3, got {g}");
    }
    let world = crate::cluster::world();
    let Some(kind) = problem.problem() else {
        if shard.is_some() || merge.is_some() {
            bail!("--shard / --merge: sequence data sets are generated whole; drop them");
        }
        if world.size() > 1 {
            bail!("sequence data sets are generated by one process: run without mpirun");
        }
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
    if world.rank() == 0 {
        std::fs::write(&probe, b"").map_err(|e| {
            anyhow::anyhow!(
                "cannot write {}: {e} (check that the folder exists and is writable)",
                output.display()
            )
        })?;
        std::fs::remove_file(&probe).ok();
    }
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
    let generated = if let Some(parts) = merge {
        if shard.is_some() {
            bail!("--merge writes the whole archive: drop --shard");
        }
        merge_parts(&spec, parts)?
    } else {
        let (index, count) = match (shard, world.size()) {
            (Some(s), 1) => (s.index, s.count),
            (Some(_), r) => bail!(
                "--shard under mpirun ({r} ranks): the ranks split the samples themselves; drop --shard"
            ),
            (None, r) => (world.rank(), r),
        };
        let (start, len) = crate::parallel::even_parts(n, count)[index];
        if len == 0 {
            bail!("part {index} of {count} of {n} samples is empty: use at most {n} parts");
        }
        // Before the index list: a part too large for memory fails at once.
        varphi_data::physics::check_memory(&spec, len)?;
        if world.size() > 1 {
            // MPI counts are 32-bit: every rank can tell from the split whether some part is
            // too large to gather, so all of them stop together, before generating.
            let problem = spec.physics.build();
            let nu: usize = problem.solution_shape().iter().product();
            let m = spec
                .observations
                .map_or(0, |o| o.count.unwrap_or(problem.observable().len()));
            let per_row = (problem.param_dim() + nu + m) * 8;
            let largest = n.div_ceil(count) * per_row;
            if largest > i32::MAX as usize {
                bail!(
                    "a rank's part is {:.1} GiB, and MPI gathers at most 2 GiB per rank: use more ranks, or --shard I/N with --merge",
                    largest as f64 / (1u64 << 30) as f64
                );
            }
        }
        let indices: Vec<usize> = (start..start + len).collect();
        let part = varphi_data::physics::generate_subset(&spec, &indices, threads, &|k| {
            bar.set_position(k as u64)
        })?;
        if world.size() > 1 {
            match gather_parts(world.as_ref(), part, n)? {
                Some(all) => all,
                None => {
                    bar.finish_and_clear();
                    return Ok(());
                }
            }
        } else {
            part
        }
    };
    bar.finish_and_clear();
    varphi_data::physics::write(&generated, &spec, output)?;
    if let Some(s) = shard {
        mark_part(output, s, generated.rows())?;
        println!(
            "wrote part {}/{} ({} of {n} samples) to {}; merge the parts with `varphi data … --merge PART0,PART1,… -o FILE`",
            s.index,
            s.count,
            generated.rows(),
            output.display()
        );
        return Ok(());
    }
    let n = generated.rows();
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

/// The per-sample values of `g` (its [`PER_SAMPLE_ARRAYS`] in order), little-endian `f64`.
fn per_sample_bytes(g: &Generated) -> Vec<u8> {
    g.arrays
        .iter()
        .filter(|a| PER_SAMPLE_ARRAYS.contains(&a.name.as_str()))
        .flat_map(|a| a.data.iter().flat_map(|v| v.to_le_bytes()))
        .collect()
}

/// `template` (a part of the dataset) with its per-sample arrays replaced by `rows` rows
/// decoded from `bytes` ([`per_sample_bytes`] of another part).
fn part_from_bytes(template: &Generated, rows: usize, bytes: &[u8]) -> anyhow::Result<Generated> {
    let mut g = template.clone();
    let mut values = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")));
    for a in g.arrays.iter_mut() {
        if PER_SAMPLE_ARRAYS.contains(&a.name.as_str()) {
            a.shape[0] = rows;
            let len: usize = a.shape.iter().product();
            a.data = values.by_ref().take(len).collect();
            if a.data.len() != len {
                anyhow::bail!(
                    "a rank sent {} values too few for {}",
                    len - a.data.len(),
                    a.name
                );
            }
        }
    }
    Ok(g)
}

/// Every rank's part on rank 0, merged in rank order (`None` on the other ranks).
fn gather_parts(
    world: &dyn crate::parallel::Collective,
    part: Generated,
    n: usize,
) -> anyhow::Result<Option<Generated>> {
    let bytes = per_sample_bytes(&part);
    let received = world.gather(&bytes);
    if world.rank() != 0 {
        return Ok(None);
    }
    let rows = crate::parallel::even_parts(n, world.size());
    let parts = received
        .iter()
        .zip(rows)
        .map(|(bytes, (_, len))| part_from_bytes(&part, len, bytes))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(Generated::concat(parts)?))
}

/// Note in the sidecar of part archive `output` which part it is.
fn mark_part(output: &std::path::Path, shard: ShardArg, rows: usize) -> anyhow::Result<()> {
    let side = output.with_extension("json");
    let text = std::fs::read_to_string(&side)?;
    let mut meta: serde_json::Value = serde_json::from_str(&text)?;
    meta["shard"] = serde_json::json!({"index": shard.index, "count": shard.count, "rows": rows});
    std::fs::write(&side, serde_json::to_string_pretty(&meta)?)?;
    Ok(())
}

/// Read the part archives `paths` (in part order) of the dataset `spec` describes and merge
/// them; each part's sidecar must name the same spec and its place in the order.
fn merge_parts(spec: &GeneratorSpec, paths: &[PathBuf]) -> anyhow::Result<Generated> {
    use anyhow::{Context, bail};
    let want = serde_json::to_value(spec)?;
    // One sample, for the archive's array order and the shared arrays.
    let template = varphi_data::physics::generate_subset(spec, &[0], 1, &|_| {})?;
    let mut parts = Vec::with_capacity(paths.len());
    for (k, path) in paths.iter().enumerate() {
        let side = path.with_extension("json");
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&side).with_context(|| {
                format!(
                    "cannot read {}, the sidecar of part {}",
                    side.display(),
                    path.display()
                )
            })?)
            .with_context(|| format!("{} is not JSON", side.display()))?;
        if meta["spec"] != want {
            bail!(
                "{} was generated with other settings than this command's (problem, --n, --grid, --seed, --obs, --settings must be the same as for the parts)",
                path.display()
            );
        }
        let (index, count) = (
            meta["shard"]["index"].as_u64(),
            meta["shard"]["count"].as_u64(),
        );
        let (Some(index), Some(count)) = (index, count) else {
            bail!(
                "{} is not a part archive (written without --shard)",
                path.display()
            );
        };
        if index != k as u64 || count != paths.len() as u64 {
            bail!(
                "{} is part {index}/{count}, but --merge lists it as part {k}/{}: give every part, in order",
                path.display(),
                paths.len()
            );
        }
        let mut g = template.clone();
        for a in g.arrays.iter_mut() {
            let arr = varphi_data::read::load_npz(path, &a.name)?;
            a.shape = arr.shape;
            a.data = arr.data;
        }
        parts.push(g);
    }
    let merged = Generated::concat(parts)?;
    if merged.rows() != spec.n {
        bail!(
            "the parts hold {} samples, --n is {}",
            merged.rows(),
            spec.n
        );
    }
    Ok(merged)
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
