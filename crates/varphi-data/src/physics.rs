//! Physics dataset generators: parameters from each problem's prior, reference solutions from
//! its `f64` solver, optional noisy point observations — written to `.npz` (with a JSON sidecar)
//! by `varphi data`, or loaded straight into a [`Dataset`] from a config's `[data]` table.
//!
//! Sample `i` uses its own ChaCha8 stream (`seed`, stream `i + 1`), so a dataset is the same
//! whatever the number of threads, and the first `m` samples of a larger dataset equal a dataset
//! of `m`. Observation locations use stream 0 and are shared by all samples.

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::npy::save_npz_f64;
use rand::SeedableRng;
use rand::seq::index::sample as sample_indices;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use varphi_physics::pde::{
    AdvectionDiffusion, AdvectionDiffusionSettings, Burgers, BurgersSettings, Darcy, DarcySettings,
    NonlinearPoisson, NonlinearPoissonSettings, Pendulum, PendulumSettings, Problem,
};

/// A problem and its settings (the paper set-ups by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum PhysicsSettings {
    /// Darcy flow on the unit square (FNO convention).
    Darcy(DarcySettings),
    /// 1-D nonlinear Poisson (RGNP).
    Poisson1d(NonlinearPoissonSettings),
    /// Viscous Burgers (RGNP).
    Burgers(BurgersSettings),
    /// Advection–diffusion / heat (phys-vae).
    Heat(AdvectionDiffusionSettings),
    /// Damped forced pendulum (phys-vae).
    Pendulum(PendulumSettings),
}

/// Which problem, for the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// See [`PhysicsSettings::Darcy`].
    Darcy,
    /// See [`PhysicsSettings::Poisson1d`].
    Poisson1d,
    /// See [`PhysicsSettings::Burgers`].
    Burgers,
    /// See [`PhysicsSettings::Heat`].
    Heat,
    /// See [`PhysicsSettings::Pendulum`].
    Pendulum,
}

impl PhysicsSettings {
    /// The paper set-up of `kind`, with `grid` nodes per axis (time levels for the pendulum) if
    /// given.
    pub fn new(kind: ProblemKind, grid: Option<usize>) -> Self {
        let mut s = match kind {
            ProblemKind::Darcy => PhysicsSettings::Darcy(DarcySettings::default()),
            ProblemKind::Poisson1d => PhysicsSettings::Poisson1d(Default::default()),
            ProblemKind::Burgers => PhysicsSettings::Burgers(Default::default()),
            ProblemKind::Heat => PhysicsSettings::Heat(Default::default()),
            ProblemKind::Pendulum => PhysicsSettings::Pendulum(Default::default()),
        };
        if let Some(g) = grid {
            s.set_grid(g);
        }
        s
    }

    /// Set the grid size (nodes per axis; time levels for the pendulum).
    pub fn set_grid(&mut self, grid: usize) {
        match self {
            PhysicsSettings::Darcy(s) => s.grid = grid,
            PhysicsSettings::Poisson1d(s) => s.grid = grid,
            PhysicsSettings::Burgers(s) => s.grid = grid,
            PhysicsSettings::Heat(s) => s.grid = grid,
            PhysicsSettings::Pendulum(s) => s.levels = grid,
        }
    }

    /// Check the settings; the error names the key.
    pub fn validate(&self) -> Result<(), DataError> {
        let r = match self {
            PhysicsSettings::Darcy(s) => s.validate(),
            PhysicsSettings::Poisson1d(s) => s.validate(),
            PhysicsSettings::Burgers(s) => s.validate(),
            PhysicsSettings::Heat(s) => s.validate(),
            PhysicsSettings::Pendulum(s) => s.validate(),
        };
        r.map_err(|message| DataError::Invalid {
            key: "problem",
            message,
        })
    }

    /// The problem object (residual, prior, solver).
    pub fn build(&self) -> Box<dyn Problem + Send + Sync> {
        match self {
            PhysicsSettings::Darcy(s) => Box::new(Darcy::new(*s)),
            PhysicsSettings::Poisson1d(s) => Box::new(NonlinearPoisson::new(*s)),
            PhysicsSettings::Burgers(s) => Box::new(Burgers::new(*s)),
            PhysicsSettings::Heat(s) => Box::new(AdvectionDiffusion::new(*s)),
            PhysicsSettings::Pendulum(s) => Box::new(Pendulum::new(*s)),
        }
    }

    /// The default observations of the paper set-up.
    pub fn default_observations(&self) -> Observations {
        let (count, sigma) = match self {
            PhysicsSettings::Darcy(_) => (Some(64), 0.01),
            PhysicsSettings::Poisson1d(_) => (Some(10), 0.01),
            PhysicsSettings::Burgers(_) => (Some(100), 0.05),
            PhysicsSettings::Heat(_) => (None, 1e-3),
            PhysicsSettings::Pendulum(_) => (None, 1e-2),
        };
        Observations { count, sigma }
    }
}

/// Noisy point observations `y = u(x_j) + σ ε` at locations shared by all samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observations {
    /// Number of observed nodes, drawn without replacement from the observable ones; `None`:
    /// every observable node.
    #[serde(default)]
    pub count: Option<usize>,
    /// Noise standard deviation σ.
    pub sigma: f64,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorSpec {
    /// Problem and settings.
    pub physics: PhysicsSettings,
    /// Number of samples.
    pub n: usize,
    /// Seed.
    pub seed: u64,
    /// Observations, if any.
    pub observations: Option<Observations>,
}

/// A named array (`f64`, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedArray {
    /// Name in the archive.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f64>,
}

/// A generated dataset.
#[derive(Debug, Clone)]
pub struct Generated {
    /// `params` (or `coefficient` for Darcy), `solution`, coordinates, observations.
    pub arrays: Vec<NamedArray>,
    /// Shape of one solution.
    pub solution_shape: Vec<usize>,
    /// Parameters per sample.
    pub param_dim: usize,
    /// Names of the parameters (columns of `params`, or the coefficient field).
    pub param_names: Vec<String>,
    /// Seconds spent generating.
    pub seconds: f64,
}

/// The arrays of a generated dataset with one row per sample (the others — coordinates and
/// the observed nodes — are the same for every sample).
pub const PER_SAMPLE_ARRAYS: [&str; 4] = ["params", "coefficient", "solution", "obs_values"];

impl Generated {
    /// Samples (rows of the per-sample arrays).
    pub fn rows(&self) -> usize {
        self.arrays
            .iter()
            .find(|a| PER_SAMPLE_ARRAYS.contains(&a.name.as_str()))
            .map_or(0, |a| a.shape[0])
    }

    /// Consecutive parts of one dataset (e.g. the shards of [`generate_subset`] over
    /// contiguous index ranges) as one: per-sample arrays concatenated in order, the others
    /// checked equal; `seconds` is the slowest part's.
    pub fn concat(parts: Vec<Generated>) -> Result<Generated, DataError> {
        let bad = |message: String| DataError::Invalid {
            key: "shards",
            message,
        };
        let mut parts = parts.into_iter();
        let mut all = parts
            .next()
            .ok_or_else(|| bad("no parts to merge".into()))?;
        for (k, part) in parts.enumerate() {
            let names = |g: &Generated| g.arrays.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
            if names(&part) != names(&all) || part.solution_shape != all.solution_shape {
                return Err(bad(format!(
                    "part {} holds other arrays ({:?}) than part 0 ({:?}): not shards of one dataset",
                    k + 1,
                    names(&part),
                    names(&all)
                )));
            }
            for (a, b) in all.arrays.iter_mut().zip(part.arrays) {
                if PER_SAMPLE_ARRAYS.contains(&a.name.as_str()) {
                    if a.shape[1..] != b.shape[1..] {
                        return Err(bad(format!(
                            "array {} of part {} has rows of shape {:?}, part 0 {:?}",
                            a.name,
                            k + 1,
                            &b.shape[1..],
                            &a.shape[1..]
                        )));
                    }
                    a.shape[0] += b.shape[0];
                    a.data.extend(b.data);
                } else if a.shape != b.shape || a.data != b.data {
                    return Err(bad(format!(
                        "array {} differs between part 0 and part {}: not shards of one dataset (same problem, settings and seed)",
                        a.name,
                        k + 1
                    )));
                }
            }
            all.seconds = all.seconds.max(part.seconds);
        }
        Ok(all)
    }

    /// The array called `name`.
    pub fn array(&self, name: &str) -> Option<&NamedArray> {
        self.arrays.iter().find(|a| a.name == name)
    }

    /// Solutions as samples `[n, 1, ...shape]` (one channel) conditioned on the parameters.
    pub fn into_dataset(self) -> Result<Dataset, DataError> {
        let mut sample_shape = vec![1];
        sample_shape.extend(&self.solution_shape);
        let p = self.param_dim;
        let mut arrays = self.arrays;
        let take = |arrays: &mut Vec<NamedArray>, name: &str| {
            let i = arrays
                .iter()
                .position(|a| a.name == name)
                .expect("generated array");
            arrays.swap_remove(i).data
        };
        let x = take(&mut arrays, "solution");
        let cond = match arrays.iter().any(|a| a.name == "params") {
            true => take(&mut arrays, "params"),
            false => take(&mut arrays, "coefficient"),
        };
        Dataset::new(x, sample_shape, cond, p)
    }
}

/// Generate a dataset on all cores; `progress(k)` is called with the number of finished samples.
pub fn generate(
    spec: &GeneratorSpec,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Generated, DataError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    generate_on(spec, cores, progress)
}

/// [`generate`] on `threads` threads (the data do not depend on it).
pub fn generate_on(
    spec: &GeneratorSpec,
    threads: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Generated, DataError> {
    check_memory(spec, spec.n)?;
    let all: Vec<usize> = (0..spec.n).collect();
    generate_subset(spec, &all, threads, progress)
}

/// Refuse a dataset of `rows` samples that cannot fit in memory, before allocating it: the
/// parameters, solutions and observations in f64, twice (the arrays and the dataset or archive
/// made from them), and the index list.
pub fn check_memory(spec: &GeneratorSpec, rows: usize) -> Result<(), DataError> {
    spec.physics.validate()?;
    let problem = spec.physics.build();
    let nu: u128 = problem.solution_shape().iter().product::<usize>() as u128;
    let np = problem.param_dim() as u128;
    let m = spec
        .observations
        .map_or(1, |o| o.count.unwrap_or(nu as usize).max(1)) as u128;
    let bytes = rows as u128 * ((np + nu + m) * 8 * 2 + 8);
    crate::memory::check(
        bytes,
        &format!(
            "{rows} samples of {} (solution shape {:?})",
            problem.name(),
            problem.solution_shape()
        ),
        "lower the number of samples (varphi data --n, or n in [data])",
    )
}

/// Samples `indices` (each `< spec.n`) of the dataset [`generate_on`] makes, in that order:
/// sample `i` has its own stream, so it is the same whichever others are generated. Arrays hold
/// `indices.len()` rows.
pub fn generate_subset(
    spec: &GeneratorSpec,
    indices: &[usize],
    threads: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Generated, DataError> {
    spec.physics.validate()?;
    if spec.n == 0 || indices.is_empty() {
        return Err(DataError::Invalid {
            key: "n",
            message: "must be at least 1".into(),
        });
    }
    if let Some(&i) = indices.iter().find(|&&i| i >= spec.n) {
        return Err(DataError::Invalid {
            key: "n",
            message: format!("sample {i} requested of a dataset of {}", spec.n),
        });
    }
    check_memory(spec, indices.len())?;
    let start = std::time::Instant::now();
    let problem = spec.physics.build();
    let shape = problem.solution_shape();
    let nu: usize = shape.iter().product();
    let np = problem.param_dim();
    let obs_idx = spec
        .observations
        .map(|o| observation_indices(problem.as_ref(), &o, spec.seed))
        .transpose()?;
    let sigma = spec.observations.map_or(0.0, |o| o.sigma);
    let m = obs_idx.as_ref().map_or(0, Vec::len);

    // Work split over threads; each sample has its own stream.
    let rows = indices.len();
    let threads = threads.clamp(1, rows);
    let done = AtomicUsize::new(0);
    let mut params = vec![0.0; rows * np];
    let mut solution = vec![0.0; rows * nu];
    // At least one slot per sample, so the three chunk iterators below stay in step even
    // without observations (an empty buffer would yield no chunks and no work).
    let stride = m.max(1);
    let mut obs = vec![0.0; rows * stride];
    let chunk = rows.div_ceil(threads);
    let results: Vec<Result<(), DataError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = params
            .chunks_mut(chunk * np)
            .zip(solution.chunks_mut(chunk * nu))
            .zip(obs.chunks_mut(chunk * stride))
            .enumerate()
            .map(|(c, ((pz, pu), po))| {
                let (problem, obs_idx, done) = (&problem, &obs_idx, &done);
                scope.spawn(move || -> Result<(), DataError> {
                    for k in 0..pz.len() / np {
                        let i = indices[c * chunk + k];
                        let mut rng = stream(spec.seed, i as u64 + 1);
                        let z = problem.sample_params(&mut rng);
                        let u = problem.solve(&z).map_err(|e| {
                            DataError::Shape(format!("{} sample {i}: {e}", problem.name()))
                        })?;
                        pz[k * np..(k + 1) * np].copy_from_slice(&z);
                        pu[k * nu..(k + 1) * nu].copy_from_slice(&u);
                        if let Some(idx) = obs_idx {
                            for (j, &p) in idx.iter().enumerate() {
                                let e: f64 = StandardNormal.sample(&mut rng);
                                po[k * m + j] = u[p] + sigma * e;
                            }
                        }
                        progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("generator thread"))
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>, _>>()?;

    let n = rows;
    let named = |name: &str, shape: Vec<usize>, data: Vec<f64>| NamedArray {
        name: name.into(),
        shape,
        data,
    };
    let per_sample: Vec<usize> = std::iter::once(n).chain(shape.iter().copied()).collect();
    let mut arrays = vec![
        match spec.physics {
            PhysicsSettings::Darcy(_) => named("coefficient", per_sample.clone(), params),
            _ => named("params", vec![n, np], params),
        },
        named("solution", per_sample, solution),
    ];
    let coords = problem.coordinates();
    arrays.extend(
        coords
            .iter()
            .map(|(name, c)| named(name, vec![c.len()], c.clone())),
    );
    if let Some(idx) = obs_idx {
        // Coordinates of each observed node, one column per solution axis (the order of
        // `coordinates()`).
        let mut loc = Vec::with_capacity(m * shape.len());
        for &p in &idx {
            let mut rest = p;
            let mut per_axis = vec![0.0; shape.len()];
            for ax in (0..shape.len()).rev() {
                per_axis[ax] = coords[ax].1[rest % shape[ax]];
                rest /= shape[ax];
            }
            loc.extend(per_axis);
        }
        obs.truncate(n * m);
        arrays.extend([
            named(
                "obs_index",
                vec![m],
                idx.iter().map(|&i| i as f64).collect(),
            ),
            named("obs_coords", vec![m, shape.len()], loc),
            named("obs_values", vec![n, m], obs),
            named("obs_sigma", vec![1], vec![sigma]),
        ]);
    }
    Ok(Generated {
        arrays,
        solution_shape: shape,
        param_dim: np,
        param_names: problem.param_names(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The nodes observed by `obs` for generator seed `seed`: `obs.count` distinct observable nodes
/// drawn from the seed's stream 0 (all observable nodes when `count` is `None`), sorted. The
/// same choice as the `obs_index` array of [`generate`], so a trainer can rebuild it.
pub fn observation_indices(
    problem: &dyn Problem,
    obs: &Observations,
    seed: u64,
) -> Result<Vec<usize>, DataError> {
    if !(obs.sigma >= 0.0 && obs.sigma.is_finite()) {
        return Err(DataError::Invalid {
            key: "observations",
            message: format!("sigma must be finite and ≥ 0, got {}", obs.sigma),
        });
    }
    let observable = problem.observable();
    let m = obs.count.unwrap_or(observable.len());
    if m == 0 || m > observable.len() {
        return Err(DataError::Invalid {
            key: "observations",
            message: format!(
                "count must be between 1 and the {} observable nodes, got {m}",
                observable.len()
            ),
        });
    }
    let mut idx: Vec<usize> = if m == observable.len() {
        observable
    } else {
        let mut rng = stream(seed, 0);
        sample_indices(&mut rng, observable.len(), m)
            .into_iter()
            .map(|k| observable[k])
            .collect()
    };
    idx.sort_unstable();
    Ok(idx)
}

fn stream(seed: u64, stream: u64) -> rand_chacha::ChaCha8Rng {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Write `generated` to `path` (`.npz`) and the settings to `path` with extension `.json`.
pub fn write(generated: &Generated, spec: &GeneratorSpec, path: &Path) -> Result<(), DataError> {
    let io = |e: std::io::Error| DataError::Write {
        path: path.to_path_buf(),
        source: e,
    };
    let arrays: Vec<(&str, &[usize], &[f64])> = generated
        .arrays
        .iter()
        .map(|a| (a.name.as_str(), a.shape.as_slice(), a.data.as_slice()))
        .collect();
    // Write to a temporary name first so an interrupted run never leaves a truncated archive.
    let tmp = path.with_extension("npz.partial");
    save_npz_f64(&tmp, &arrays).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    let meta = serde_json::json!({
        "generator": format!("varphi {}", env!("CARGO_PKG_VERSION")),
        "spec": spec,
        "arrays": generated.arrays.iter().map(|a| (a.name.clone(), a.shape.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "param_names": generated.param_names,
        "dtype": "float64 (obs_index holds integer node indices into the flattened solution)",
        "seconds": generated.seconds,
    });
    let side = path.with_extension("json");
    std::fs::write(&side, serde_json::to_string_pretty(&meta).expect("json")).map_err(|e| {
        DataError::Write {
            path: side.clone(),
            source: e,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::load_npz;

    fn spec(kind: ProblemKind, grid: usize, n: usize) -> GeneratorSpec {
        let physics = PhysicsSettings::new(kind, Some(grid));
        let observations = Some(physics.default_observations());
        GeneratorSpec {
            physics,
            n,
            seed: 3,
            observations,
        }
    }

    #[test]
    fn contiguous_shards_concatenate_to_the_full_dataset() {
        let s = spec(ProblemKind::Poisson1d, 17, 7);
        let full = generate_on(&s, 2, &|_| {}).unwrap();
        let a = generate_subset(&s, &[0, 1, 2, 3], 1, &|_| {}).unwrap();
        let b = generate_subset(&s, &[4, 5, 6], 2, &|_| {}).unwrap();
        assert_eq!((a.rows(), b.rows()), (4, 3));
        let merged = Generated::concat(vec![a.clone(), b]).unwrap();
        assert_eq!(merged.arrays, full.arrays);
        // Parts of another dataset (other seed: other observed nodes) are refused.
        let other = GeneratorSpec { seed: 4, ..s };
        let c = generate_subset(&other, &[4, 5, 6], 1, &|_| {}).unwrap();
        let err = Generated::concat(vec![a, c]).unwrap_err().to_string();
        assert!(err.contains("not shards of one dataset"), "{err}");
    }

    #[test]
    fn a_subset_is_the_same_rows_of_the_full_dataset() {
        let s = spec(ProblemKind::Poisson1d, 17, 7);
        let full = generate_on(&s, 2, &|_| {}).unwrap().into_dataset().unwrap();
        let picked = [5, 0, 3];
        let sub = generate_subset(&s, &picked, 3, &|_| {})
            .unwrap()
            .into_dataset()
            .unwrap();
        let want = full.select(&picked);
        assert_eq!(sub.x, want.x);
        assert_eq!(sub.cond, want.cond);
        assert!(generate_subset(&s, &[7], 1, &|_| {}).is_err());
        // The test split of a physics source, generated alone, is the full dataset's test split.
        let source = crate::DataSource::Poisson1d {
            n: 9,
            grid: Some(17),
            settings: None,
        };
        let (test, n_train) = source.load_test(4, Path::new("."), 0.3).unwrap();
        let (train, want) = source.load(4, Path::new(".")).unwrap().split(0.3, 4);
        assert_eq!(
            (test.x, test.cond, n_train),
            (want.x, want.cond, train.len())
        );
    }

    #[test]
    fn the_shards_a_process_holds_are_the_rows_of_the_whole_training_split() {
        use crate::config::ShardPart;
        let source = crate::DataSource::Poisson1d {
            n: 23,
            grid: Some(17),
            settings: None,
        };
        let whole = source.splits(4, Path::new("."), 0.2, 0.25).unwrap();
        let part = |first, count, lead| ShardPart {
            shards: 3,
            first,
            count,
            lead,
        };
        let (a, n_train) = source
            .splits_part(4, Path::new("."), 0.2, 0.25, &part(0, 1, true))
            .unwrap();
        let (b, _) = source
            .splits_part(4, Path::new("."), 0.2, 0.25, &part(1, 2, false))
            .unwrap();
        assert_eq!(n_train, whole.train.len());
        // 23 samples − 5 test − 5 validation = 13 training rows, in shards of 5, 4, 4.
        assert_eq!((n_train, a.train.len(), b.train.len()), (13, 5, 8));
        let joined: Vec<f64> = a.train.x.iter().chain(&b.train.x).copied().collect();
        assert_eq!(joined, whole.train.x);
        let cond: Vec<f64> = a.train.cond.iter().chain(&b.train.cond).copied().collect();
        assert_eq!(cond, whole.train.cond);
        // The lead holds the whole test and validation splits, the others one row of each.
        assert_eq!(a.test, whole.test);
        assert_eq!(a.validation, whole.validation);
        assert_eq!(b.test, whole.test.select(&[0]));
        assert_eq!(b.validation.unwrap().len(), 1);
        // More shards than training rows is an error naming the key.
        let too_many = ShardPart {
            shards: 15,
            ..part(0, 1, true)
        };
        let err = source
            .splits_part(4, Path::new("."), 0.2, 0.25, &too_many)
            .unwrap_err()
            .to_string();
        assert!(err.contains("training.data_shards"), "{err}");
    }

    #[test]
    fn a_file_source_reads_only_the_rows_of_the_shards_held() {
        use crate::config::ShardPart;
        let dir = std::env::temp_dir().join(format!("varphi-file-shards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let x: Vec<f64> = (0..40 * 3).map(|v| f64::from(v) * 0.25).collect();
        let c: Vec<f64> = (0..40).map(f64::from).collect();
        crate::npy::save_npz_f64(&dir.join("d.npz"), &[("x", &[40, 3], &x), ("c", &[40], &c)])
            .unwrap();
        let source = crate::DataSource::Npz {
            path: dir.join("d.npz"),
            x_key: "x".into(),
            cond_key: Some("c".into()),
        };
        let whole = source.splits(5, Path::new("."), 0.25, 0.2).unwrap();
        let parts: Vec<_> = (0..2)
            .map(|k| {
                let part = ShardPart {
                    shards: 2,
                    first: k,
                    count: 1,
                    lead: k == 0,
                };
                source
                    .splits_part(5, Path::new("."), 0.25, 0.2, &part)
                    .unwrap()
            })
            .collect();
        assert_eq!(parts[0].1, whole.train.len());
        let joined: Vec<f64> = parts
            .iter()
            .flat_map(|(s, _)| s.train.cond.clone())
            .collect();
        assert_eq!(joined, whole.train.cond);
        let joined: Vec<f64> = parts.iter().flat_map(|(s, _)| s.train.x.clone()).collect();
        assert_eq!(joined, whole.train.x);
        assert_eq!(parts[0].0.test, whole.test);
        assert_eq!(parts[0].0.validation, whole.validation);
        assert_eq!(parts[1].0.test, whole.test.select(&[0]));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn every_problem_generates_consistent_arrays() {
        for (kind, grid) in [
            (ProblemKind::Darcy, 12),
            (ProblemKind::Poisson1d, 33),
            (ProblemKind::Burgers, 65),
            (ProblemKind::Heat, 20),
            (ProblemKind::Pendulum, 50),
        ] {
            let mut s = spec(kind, grid, 5);
            if let PhysicsSettings::Burgers(b) = &mut s.physics {
                b.steps = 20;
            }
            if let Some(o) = &mut s.observations
                && o.count.is_some()
            {
                o.count = Some(4);
            }
            let g = generate(&s, &|_| {}).unwrap();
            let sol = g.array("solution").unwrap();
            assert_eq!(sol.shape[0], 5);
            let nu: usize = g.solution_shape.iter().product();
            let obs = g.array("obs_values").unwrap();
            let idx = g.array("obs_index").unwrap();
            let sigma = g.array("obs_sigma").unwrap().data[0];
            // Observations are the solution at the indexed nodes plus noise of scale σ.
            let mut sq = 0.0;
            for i in 0..5 {
                for (j, &p) in idx.data.iter().enumerate() {
                    sq +=
                        (obs.data[i * idx.data.len() + j] - sol.data[i * nu + p as usize]).powi(2);
                }
            }
            let rms = (sq / obs.data.len() as f64).sqrt();
            assert!(
                rms > 0.2 * sigma && rms < 3.0 * sigma,
                "{kind:?}: rms {rms} vs σ {sigma}"
            );
            // Deterministic whatever the thread count, and a prefix of a larger set.
            let again = generate_on(&GeneratorSpec { n: 3, ..s.clone() }, 2, &|_| {}).unwrap();
            assert_eq!(
                again.array("solution").unwrap().data[..],
                sol.data[..3 * nu]
            );
        }
    }

    #[test]
    fn writes_npz_and_sidecar_and_loads_as_dataset() {
        let dir = std::env::temp_dir().join(format!("varphi-gen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = spec(ProblemKind::Poisson1d, 17, 4);
        let g = generate(&s, &|_| {}).unwrap();
        let path = dir.join("p.npz");
        write(&g, &s, &path).unwrap();
        assert_eq!(load_npz(&path, "solution").unwrap().shape, vec![4, 17]);
        assert_eq!(load_npz(&path, "params").unwrap().shape, vec![4, 6]);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("p.json")).unwrap()).unwrap();
        assert_eq!(meta["spec"]["physics"]["problem"], "poisson1d");
        let d = g.into_dataset().unwrap();
        assert_eq!(
            (d.len(), d.sample_shape.clone(), d.cond_dim),
            (4, vec![1, 17], 6)
        );
        let err = write(
            &generate(&s, &|_| {}).unwrap(),
            &s,
            Path::new("/nonexistent-dir/x.npz"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent-dir/x.npz"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn without_observations_every_sample_is_still_solved() {
        let mut s = spec(ProblemKind::Poisson1d, 17, 5);
        s.observations = None;
        let g = generate_on(&s, 2, &|_| {}).unwrap();
        assert!(g.array("obs_values").is_none());
        let (z, u) = (g.array("params").unwrap(), g.array("solution").unwrap());
        let problem = s.physics.build();
        for i in 0..5 {
            let want = problem.solve(&z.data[i * 6..(i + 1) * 6]).unwrap();
            assert_eq!(u.data[i * 17..(i + 1) * 17], want[..]);
            assert!(want.iter().any(|v| v.abs() > 0.1));
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let mut s = spec(ProblemKind::Darcy, 2, 4);
        assert!(
            generate(&s, &|_| {})
                .unwrap_err()
                .to_string()
                .contains("grid")
        );
        s.physics.set_grid(8);
        s.n = 0;
        assert!(generate(&s, &|_| {}).unwrap_err().to_string().contains("n"));
        s.n = 2;
        s.observations = Some(Observations {
            count: Some(10_000),
            sigma: 0.1,
        });
        assert!(
            generate(&s, &|_| {})
                .unwrap_err()
                .to_string()
                .contains("observable")
        );
    }
}
