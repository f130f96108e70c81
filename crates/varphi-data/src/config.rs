//! The `[data]` table of an experiment config.

use crate::builtin::{Heat1dSettings, Heat2dSettings, heat1d, heat2d};
use crate::dataset::Dataset;
use crate::error::DataError;
use crate::physics::{GeneratorSpec, PhysicsSettings, generate, generate_subset};
use crate::read::{Array, array_rows, load_array, load_array_rows};
use crate::sequences::{AdvectionVideoSettings, LorenzFieldsSettings};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use varphi_physics::pde::{
    AdvectionDiffusionSettings, BurgersSettings, DarcySettings, NonlinearPoissonSettings,
    PendulumSettings,
};

/// Where the data come from. Selected by `kind` in the `[data]` table.
///
/// ```toml
/// [data]
/// kind = "heat1d"     # built-in, generated from `seed`
/// n = 2000
/// grid = 64
/// ```
/// ```toml
/// [data]
/// kind = "npz"
/// path = "fields.npz"
/// x_key = "u"            # [n, ...] float or integer
/// cond_key = "kappa"     # optional [n] or [n, c]
/// ```
/// ```toml
/// [data]
/// kind = "files"         # given splits, each a file (.npy, .npz, .safetensors, .csv)
/// train = { path = "train.npz", x = "u", cond = "a" }
/// test = { path = "test.npz", x = "u", cond = "a" }       # optional: else [split] test_fraction
/// validation = { path = "val.npz", x = "u", cond = "a" }  # optional
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataSource {
    /// 1-D heat-equation solutions, see [`Heat1dSettings`].
    Heat1d {
        /// Samples.
        #[serde(default = "d_n")]
        n: usize,
        /// Interior grid nodes.
        #[serde(default = "d_grid1")]
        grid: usize,
        /// Sine modes.
        #[serde(default = "d_modes")]
        modes: usize,
        /// Observation time.
        #[serde(default = "d_t1")]
        t: f64,
        /// Diffusivity range `[lo, hi]`.
        #[serde(default = "d_kappa")]
        kappa: [f64; 2],
    },
    /// 2-D heat-equation solutions, see [`Heat2dSettings`].
    Heat2d {
        /// Samples.
        #[serde(default = "d_n")]
        n: usize,
        /// Interior nodes per axis.
        #[serde(default = "d_grid2")]
        grid: usize,
        /// Sine modes per axis.
        #[serde(default = "d_modes2")]
        modes: usize,
        /// Observation time.
        #[serde(default = "d_t2")]
        t: f64,
        /// Diffusivity range `[lo, hi]`.
        #[serde(default = "d_kappa")]
        kappa: [f64; 2],
    },
    /// Darcy flow solutions `[n, 1, grid, grid]` conditioned on the coefficient field,
    /// generated on the fly ([`crate::physics`]); `settings` overrides the FNO set-up.
    Darcy {
        /// Samples.
        #[serde(default = "d_n_physics")]
        n: usize,
        /// Nodes per axis.
        #[serde(default)]
        grid: Option<usize>,
        /// Problem settings.
        #[serde(default)]
        settings: Option<DarcySettings>,
    },
    /// 1-D nonlinear Poisson solutions `[n, 1, grid]` conditioned on `[z0..z4, w]`.
    Poisson1d {
        /// Samples.
        #[serde(default = "d_n_physics")]
        n: usize,
        /// Nodes.
        #[serde(default)]
        grid: Option<usize>,
        /// Problem settings.
        #[serde(default)]
        settings: Option<NonlinearPoissonSettings>,
    },
    /// Burgers trajectories `[n, 1, steps + 1, grid]` conditioned on `[z0, z1, c]`.
    Burgers {
        /// Samples.
        #[serde(default = "d_n_physics")]
        n: usize,
        /// Nodes.
        #[serde(default)]
        grid: Option<usize>,
        /// Problem settings.
        #[serde(default)]
        settings: Option<BurgersSettings>,
    },
    /// Advection–diffusion trajectories `[n, 1, levels, grid]` conditioned on `[D, c, a]`.
    Heat {
        /// Samples.
        #[serde(default = "d_n_physics")]
        n: usize,
        /// Nodes.
        #[serde(default)]
        grid: Option<usize>,
        /// Problem settings.
        #[serde(default)]
        settings: Option<AdvectionDiffusionSettings>,
    },
    /// Pendulum angles `[n, 1, levels]` conditioned on `[θ0, ω, γ, A, f]`.
    Pendulum {
        /// Samples.
        #[serde(default = "d_n_physics")]
        n: usize,
        /// Time levels.
        #[serde(default)]
        grid: Option<usize>,
        /// Problem settings.
        #[serde(default)]
        settings: Option<PendulumSettings>,
    },
    /// Advection from video: sequences of rendered frames `[n, N, height, nodes]` of a latent
    /// advection–diffusion state, conditioned on `(c, D)` ([`crate::sequences`]).
    AdvectionVideo {
        /// Sequences.
        #[serde(default = "d_n_physics")]
        n: usize,
        /// Set-up (the defaults of [`AdvectionVideoSettings`] when absent).
        #[serde(default)]
        settings: Option<AdvectionVideoSettings>,
    },
    /// Lorenz-63 seen through Rayleigh–Bénard fields: frames `[n, N, 3, height, width]`
    /// (`u`, `w`, `θ`), conditioned on `(σ, ρ, β)` ([`crate::sequences`]).
    LorenzFields {
        /// Sequences.
        #[serde(default = "d_n_physics")]
        n: usize,
        /// Set-up (the defaults of [`LorenzFieldsSettings`] when absent).
        #[serde(default)]
        settings: Option<LorenzFieldsSettings>,
    },
    /// A `.npy` file `[n, ...]`, with an optional `.npy` of conditions `[n]` or `[n, c]`.
    Npy {
        /// Data file.
        path: PathBuf,
        /// Condition file.
        #[serde(default)]
        cond_path: Option<PathBuf>,
    },
    /// Given splits: a training source and optional validation and test sources, each a
    /// [`FileSource`]. Without `test`, `[split] test_fraction` of `train` is held out.
    Files {
        /// Training samples.
        train: FileSource,
        /// Validation samples (early stopping), optional.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        validation: Option<FileSource>,
        /// Test samples, optional.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        test: Option<FileSource>,
    },
    /// Arrays in a `.npz` archive.
    Npz {
        /// Archive.
        path: PathBuf,
        /// Name of the data array.
        #[serde(default = "d_x_key")]
        x_key: String,
        /// Name of the condition array.
        #[serde(default)]
        cond_key: Option<String>,
    },
}

/// One split of `kind = "files"`: the samples `x` and optional conditions of one file (or the
/// conditions from a second file, `cond_path`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// Data file: `.npy`, `.npz`, `.safetensors` or `.csv`.
    pub path: PathBuf,
    /// Array (`.npz`, `.safetensors`) or columns (`.csv`, `"a,b"`) of the samples `[n, ...]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Array or columns of the conditions `[n]` or `[n, c]` (in `cond_path` if given, else in
    /// `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cond: Option<String>,
    /// A second file holding the conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cond_path: Option<PathBuf>,
}

impl FileSource {
    /// Load the samples (and conditions) as a [`Dataset`]; conversions applied on reading are
    /// appended to `notes`.
    pub fn load(&self, notes: &mut Vec<String>) -> Result<Dataset, DataError> {
        let xa = load_array(&self.path, self.x.as_deref())?;
        notes.extend(xa.notes.iter().cloned());
        let (x, shape) = as_samples(xa, &self.path)?;
        let n = x.len() / shape.iter().product::<usize>();
        let cond_file = self.cond_path.as_ref().unwrap_or(&self.path);
        let (cond, c) = match (&self.cond, &self.cond_path) {
            (None, None) => (vec![], 0),
            (key, _) => {
                let ca = load_array(cond_file, key.as_deref())?;
                notes.extend(ca.notes.iter().cloned());
                as_cond(ca, n, cond_file)?
            }
        };
        Dataset::new(x, shape, cond, c)
    }

    /// The number of samples in the file (from the array's header where the format has one).
    pub fn rows(&self) -> Result<usize, DataError> {
        let n = array_rows(&self.path, self.x.as_deref())?;
        if self.cond.is_some() || self.cond_path.is_some() {
            let cond_file = self.cond_path.as_ref().unwrap_or(&self.path);
            let m = array_rows(cond_file, self.cond.as_deref())?;
            if m != n {
                return Err(DataError::Shape(format!(
                    "{}: condition array has {m} rows for the {n} samples of {} (one row per sample)",
                    cond_file.display(),
                    self.path.display()
                )));
            }
        }
        Ok(n)
    }

    /// Samples `rows` (ascending, distinct) of the file, as [`FileSource::load`] would give
    /// them; every format is streamed so that only those rows are held
    /// ([`crate::read::load_array_rows`]).
    pub fn load_rows(&self, rows: &[usize], notes: &mut Vec<String>) -> Result<Dataset, DataError> {
        self.rows()?;
        let xa = load_array_rows(&self.path, self.x.as_deref(), rows)?;
        notes.extend(xa.notes.iter().cloned());
        let (x, shape) = as_samples(xa, &self.path)?;
        let cond_file = self.cond_path.as_ref().unwrap_or(&self.path);
        let (cond, c) = match (&self.cond, &self.cond_path) {
            (None, None) => (vec![], 0),
            (key, _) => {
                let ca = load_array_rows(cond_file, key.as_deref(), rows)?;
                notes.extend(ca.notes.iter().cloned());
                as_cond(ca, rows.len(), cond_file)?
            }
        };
        Dataset::new(x, shape, cond, c)
    }

    fn check_exists(&self, key: &'static str) -> Result<(), DataError> {
        for p in std::iter::once(&self.path).chain(&self.cond_path) {
            if !p.is_file() {
                return Err(DataError::Invalid {
                    key,
                    message: format!("file {} does not exist", p.display()),
                });
            }
        }
        Ok(())
    }

    fn resolved(&self, base: &Path) -> FileSource {
        FileSource {
            path: join(base, &self.path),
            cond_path: self.cond_path.as_ref().map(|p| join(base, p)),
            ..self.clone()
        }
    }
}

fn join(base: &Path, p: &Path) -> PathBuf {
    if p.is_relative() {
        base.join(p)
    } else {
        p.to_path_buf()
    }
}

/// The splits of a data source (see [`DataSource::splits`]).
#[derive(Debug, Clone)]
pub struct Splits {
    /// Training samples.
    pub train: Dataset,
    /// Validation samples, when given or carved out of the training part.
    pub validation: Option<Dataset>,
    /// Test samples.
    pub test: Dataset,
    /// Conversions applied on reading files (element type casts, Fortran order).
    pub notes: Vec<String>,
}

/// The shards of the training split one process holds (see [`DataSource::splits_part`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPart {
    /// Shards the training split is cut into.
    pub shards: usize,
    /// The first shard held.
    pub first: usize,
    /// Shards held (contiguous).
    pub count: usize,
    /// Whether this process evaluates the test and validation splits (rank 0).
    pub lead: bool,
}

/// Seed offset of the validation split, so that it never changes the test split.
const VALIDATION_SEED: u64 = 0x7a11_da7e;

/// The rows `train` (indices of the whole source) split as [`DataSource::splits`] carves the
/// validation split out of them: `(train, validation)`.
fn validation_rows(train: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let (t, v) = crate::dataset::split_indices(train.len(), fraction, seed ^ VALIDATION_SEED);
    let pick = |pos: Vec<usize>| pos.into_iter().map(|p| train[p]).collect();
    (pick(t), pick(v))
}

/// Samples `rows` of the physics dataset of `n` samples from `seed`, generated alone on all
/// cores (each sample has its own stream).
fn generate_rows(
    physics: PhysicsSettings,
    n: usize,
    seed: u64,
    rows: &[usize],
) -> Result<Dataset, DataError> {
    let spec = GeneratorSpec {
        physics,
        n,
        seed,
        observations: None,
    };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    generate_subset(&spec, rows, cores, &|_| {})?.into_dataset()
}

fn d_n() -> usize {
    2000
}
fn d_n_physics() -> usize {
    1000
}
fn d_grid1() -> usize {
    64
}
fn d_grid2() -> usize {
    16
}
fn d_modes() -> usize {
    8
}
fn d_modes2() -> usize {
    4
}
fn d_t1() -> f64 {
    0.005
}
fn d_t2() -> f64 {
    0.002
}
fn d_kappa() -> [f64; 2] {
    [0.5, 2.0]
}
fn d_x_key() -> String {
    "x".into()
}

fn as_samples(arr: Array, what: &Path) -> Result<(Vec<f64>, Vec<usize>), DataError> {
    if arr.shape.is_empty() || arr.shape[0] == 0 {
        return Err(DataError::Shape(format!(
            "{}: data array must be [n, ...] with n ≥ 1, got shape {:?}",
            what.display(),
            arr.shape
        )));
    }
    let mut sample_shape = arr.shape[1..].to_vec();
    if sample_shape.is_empty() {
        sample_shape.push(1);
    }
    Ok((arr.data, sample_shape))
}

fn as_cond(arr: Array, n: usize, what: &Path) -> Result<(Vec<f64>, usize), DataError> {
    let c = match arr.shape.as_slice() {
        [m] if *m == n => 1,
        [m, c] if *m == n => *c,
        s => {
            return Err(DataError::Shape(format!(
                "{}: condition array must be [n] or [n, c] with n = {n} (one row per sample), got shape {s:?}",
                what.display()
            )));
        }
    };
    Ok((arr.data, c))
}

impl DataSource {
    /// Check settings before any work.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |key: &'static str, message: String| Err(DataError::Invalid { key, message });
        match self {
            DataSource::Heat1d {
                n,
                grid,
                modes,
                t,
                kappa,
            }
            | DataSource::Heat2d {
                n,
                grid,
                modes,
                t,
                kappa,
            } => {
                if *n < 2 {
                    return bad("n", format!("must be at least 2, got {n}"));
                }
                if *grid < 3 {
                    return bad("grid", format!("must be at least 3, got {grid}"));
                }
                if *modes == 0 {
                    return bad("modes", "must be at least 1".into());
                }
                if !(t.is_finite() && *t >= 0.0) {
                    return bad("t", format!("must be a finite time ≥ 0, got {t}"));
                }
                if !(kappa[0] > 0.0 && kappa[1] >= kappa[0] && kappa[1].is_finite()) {
                    return bad(
                        "kappa",
                        format!("must be [lo, hi] with 0 < lo ≤ hi, got {kappa:?}"),
                    );
                }
                Ok(())
            }
            DataSource::Darcy { .. }
            | DataSource::Poisson1d { .. }
            | DataSource::Burgers { .. }
            | DataSource::Heat { .. }
            | DataSource::Pendulum { .. } => {
                let (n, physics) = self.physics().expect("a physics source");
                if n < 2 {
                    return bad("n", format!("must be at least 2, got {n}"));
                }
                physics.validate()
            }
            DataSource::AdvectionVideo { n, settings } => {
                if *n < 2 {
                    return bad("n", format!("must be at least 2, got {n}"));
                }
                settings.unwrap_or_default().validate()
            }
            DataSource::LorenzFields { n, settings } => {
                if *n < 2 {
                    return bad("n", format!("must be at least 2, got {n}"));
                }
                settings.unwrap_or_default().validate()
            }
            DataSource::Npy { path, cond_path } => {
                for p in std::iter::once(path).chain(cond_path) {
                    if !p.is_file() {
                        return bad("path", format!("file {} does not exist", p.display()));
                    }
                }
                Ok(())
            }
            DataSource::Npz { path, .. } => {
                if !path.is_file() {
                    return bad("path", format!("file {} does not exist", path.display()));
                }
                Ok(())
            }
            DataSource::Files {
                train,
                validation,
                test,
            } => {
                train.check_exists("train")?;
                if let Some(v) = validation {
                    v.check_exists("validation")?;
                }
                if let Some(t) = test {
                    t.check_exists("test")?;
                }
                Ok(())
            }
        }
    }

    /// For a physics source: the number of samples and the problem settings.
    pub fn physics(&self) -> Option<(usize, PhysicsSettings)> {
        fn with<S: Clone + Default>(
            settings: &Option<S>,
            grid: Option<usize>,
            wrap: fn(S) -> PhysicsSettings,
        ) -> PhysicsSettings {
            let mut p = wrap(settings.clone().unwrap_or_default());
            if let Some(g) = grid {
                p.set_grid(g);
            }
            p
        }
        Some(match self {
            DataSource::Darcy { n, grid, settings } => {
                (*n, with(settings, *grid, PhysicsSettings::Darcy))
            }
            DataSource::Poisson1d { n, grid, settings } => {
                (*n, with(settings, *grid, PhysicsSettings::Poisson1d))
            }
            DataSource::Burgers { n, grid, settings } => {
                (*n, with(settings, *grid, PhysicsSettings::Burgers))
            }
            DataSource::Heat { n, grid, settings } => {
                (*n, with(settings, *grid, PhysicsSettings::Heat))
            }
            DataSource::Pendulum { n, grid, settings } => {
                (*n, with(settings, *grid, PhysicsSettings::Pendulum))
            }
            _ => return None,
        })
    }

    /// Load or generate the full dataset. Relative paths are resolved against `base`
    /// (the config file's folder).
    pub fn load(&self, seed: u64, base: &Path) -> Result<Dataset, DataError> {
        self.resolved(base).validate()?;
        if let Some((n, physics)) = self.physics() {
            let spec = GeneratorSpec {
                physics,
                n,
                seed,
                observations: None,
            };
            return generate(&spec, &|_| {})?.into_dataset();
        }
        match self.resolved(base) {
            DataSource::Heat1d {
                n,
                grid,
                modes,
                t,
                kappa,
            } => Ok(heat1d(&Heat1dSettings {
                n,
                grid,
                modes,
                t,
                kappa,
                seed,
            })),
            DataSource::Heat2d {
                n,
                grid,
                modes,
                t,
                kappa,
            } => Ok(heat2d(&Heat2dSettings {
                n,
                grid,
                modes,
                t,
                kappa,
                seed,
            })),
            DataSource::AdvectionVideo { n, settings } => {
                settings.unwrap_or_default().dataset(n, seed)
            }
            DataSource::LorenzFields { n, settings } => {
                settings.unwrap_or_default().dataset(n, seed)
            }
            DataSource::Npy { path, cond_path } => FileSource {
                path,
                x: None,
                cond: None,
                cond_path,
            }
            .load(&mut Vec::new()),
            DataSource::Npz {
                path,
                x_key,
                cond_key,
            } => FileSource {
                path,
                x: Some(x_key),
                cond: cond_key,
                cond_path: None,
            }
            .load(&mut Vec::new()),
            DataSource::Files { train, .. } => train.load(&mut Vec::new()),
            physics => unreachable!("{physics:?} is generated above"),
        }
    }

    /// `count` new samples of a generated source (physics problems, `heat1d`, `heat2d`) from
    /// `seed`: draws of the same generator that share no stream with the run's data when
    /// `seed` differs from the run's (each physics sample's stream is `(seed, index)`). `None`
    /// for file sources, which have no generator.
    pub fn fresh(&self, count: usize, seed: u64) -> Result<Option<Dataset>, DataError> {
        let mut source = self.clone();
        match &mut source {
            DataSource::Heat1d { n, .. }
            | DataSource::Heat2d { n, .. }
            | DataSource::Darcy { n, .. }
            | DataSource::Poisson1d { n, .. }
            | DataSource::Burgers { n, .. }
            | DataSource::Heat { n, .. }
            | DataSource::Pendulum { n, .. }
            | DataSource::AdvectionVideo { n, .. }
            | DataSource::LorenzFields { n, .. } => *n = count,
            DataSource::Npy { .. } | DataSource::Files { .. } | DataSource::Npz { .. } => {
                return Ok(None);
            }
        }
        source.load(seed, Path::new(".")).map(Some)
    }

    /// The test split of [`Dataset::split`]`(test_fraction, seed)` of the full dataset, and the
    /// size of its training split. A physics source generates the test samples alone (each
    /// sample has its own stream), so scoring a run does not redo its training set's solves.
    pub fn load_test(
        &self,
        seed: u64,
        base: &Path,
        test_fraction: f64,
    ) -> Result<(Dataset, usize), DataError> {
        if let Some((n, physics)) = self.physics() {
            self.validate()?;
            let (train, test) = crate::dataset::split_indices(n, test_fraction, seed);
            let data = generate_rows(physics, n, seed, &test)?;
            return Ok((data, train.len()));
        }
        let s = self.splits(seed, base, test_fraction, 0.0)?;
        Ok((s.test, s.train.len()))
    }

    /// The training, validation and test splits, with relative paths resolved against
    /// `base`. Given splits (`kind = "files"` with `test` / `validation`) are used as they
    /// are; otherwise `test_fraction` of the samples are held out for testing (the split of
    /// [`Dataset::split`]`(test_fraction, seed)`), and `validation_fraction` (0: none) of the
    /// remaining training part for validation, from a seed of its own so the test split does
    /// not change.
    pub fn splits(
        &self,
        seed: u64,
        base: &Path,
        test_fraction: f64,
        validation_fraction: f64,
    ) -> Result<Splits, DataError> {
        let mut notes = Vec::new();
        let (all, given_validation, given_test) = match self.resolved(base) {
            DataSource::Files {
                train,
                validation,
                test,
            } => {
                self.resolved(base).validate()?;
                let all = train.load(&mut notes)?;
                let v = validation.map(|v| v.load(&mut notes)).transpose()?;
                let t = test.map(|t| t.load(&mut notes)).transpose()?;
                for (name, d) in [("validation", &v), ("test", &t)] {
                    if let Some(d) = d
                        && (d.sample_shape != all.sample_shape || d.cond_dim != all.cond_dim)
                    {
                        return Err(DataError::Shape(format!(
                            "the {name} samples have shape {:?} with {} condition(s), the training samples {:?} with {}; give the splits the same layout",
                            d.sample_shape, d.cond_dim, all.sample_shape, all.cond_dim
                        )));
                    }
                }
                (all, v, t)
            }
            _ => (self.load(seed, base)?, None, None),
        };
        let (train, test) = match given_test {
            Some(t) => (all, t),
            None => all.split(test_fraction, seed),
        };
        let (train, validation) = match given_validation {
            Some(v) => (train, Some(v)),
            None if validation_fraction > 0.0 => {
                let (t, v) = train.split(validation_fraction, seed ^ VALIDATION_SEED);
                (t, Some(v))
            }
            None => (train, None),
        };
        Ok(Splits {
            train,
            validation,
            test,
            notes,
        })
    }

    /// The splits of [`DataSource::splits`] as one process of a run with per-rank data holds
    /// them: of the training split only the rows of shards `part.first .. part.first +
    /// part.count` ([`crate::Batcher::shard_rows`] over its `n_train` rows, returned with
    /// them), and the whole test and validation splits on the lead process only (one row each
    /// elsewhere, kept for the layout). A physics source generates only those samples (each
    /// sample has its own stream, so they equal the whole split's rows); other sources are read
    /// whole and cut.
    pub fn splits_part(
        &self,
        seed: u64,
        base: &Path,
        test_fraction: f64,
        validation_fraction: f64,
        part: &ShardPart,
    ) -> Result<(Splits, usize), DataError> {
        let held = |n_train: usize| -> Result<std::ops::Range<usize>, DataError> {
            let parts = crate::dataset::even_parts(n_train, part.shards);
            if part.count == 0 || part.first + part.count > part.shards || n_train < part.shards {
                return Err(DataError::Invalid {
                    key: "training.data_shards",
                    message: format!(
                        "cannot give shards {}..{} of {} over {n_train} training samples: use at most one shard per training sample",
                        part.first,
                        part.first + part.count,
                        part.shards
                    ),
                });
            }
            let (start, _) = parts[part.first];
            let (last, len) = parts[part.first + part.count - 1];
            Ok(start..last + len)
        };
        // The lead holds the whole test and validation splits, the others their first row.
        let keep = |d: Dataset| if part.lead { d } else { d.select(&[0]) };
        let cut = |idx: &[usize]| -> Vec<usize> {
            idx.iter()
                .take(if part.lead { idx.len() } else { 1 })
                .copied()
                .collect()
        };
        if let Some((n, physics)) = self.physics() {
            self.validate()?;
            let (train, test) = crate::dataset::split_indices(n, test_fraction, seed);
            let (train, validation) = if validation_fraction > 0.0 {
                let (t, v) = validation_rows(&train, validation_fraction, seed);
                (t, Some(v))
            } else {
                (train, None)
            };
            let n_train: usize = train.len();
            let rows = held(n_train)?;
            let test = cut(&test);
            let validation = validation.as_deref().map(cut);
            let mut wanted: Vec<usize> = train[rows.clone()].to_vec();
            wanted.extend(&test);
            wanted.extend(validation.iter().flatten());
            let all = generate_rows(physics, n, seed, &wanted)?;
            let range =
                |from: usize, len: usize| all.select(&(from..from + len).collect::<Vec<_>>());
            let mine = rows.len();
            return Ok((
                Splits {
                    train: range(0, mine),
                    test: range(mine, test.len()),
                    validation: validation.map(|v| range(mine + test.len(), v.len())),
                    notes: Vec::new(),
                },
                n_train,
            ));
        }
        let Some((all, given_validation, given_test)) = self.file_parts(base) else {
            // Generated whole (heat1d, heat2d, sequences), then cut.
            let s = self.splits(seed, base, test_fraction, validation_fraction)?;
            let n_train = s.train.len();
            let rows: Vec<usize> = held(n_train)?.collect();
            return Ok((
                Splits {
                    train: s.train.select(&rows),
                    test: keep(s.test),
                    validation: s.validation.map(keep),
                    notes: s.notes,
                },
                n_train,
            ));
        };
        // A file: the split is computed from the row count alone, then only the rows needed
        // here are read.
        self.resolved(base).validate()?;
        let n = all.rows()?;
        let (train, test) = match &given_test {
            Some(_) => ((0..n).collect(), Vec::new()),
            None => crate::dataset::split_indices(n, test_fraction, seed),
        };
        let (train, validation) = match &given_validation {
            None if validation_fraction > 0.0 => validation_rows(&train, validation_fraction, seed),
            _ => (train, Vec::new()),
        };
        let n_train = train.len();
        let mine = &train[held(n_train)?];
        let (test, validation) = (cut(&test), cut(&validation));
        let mut wanted: Vec<usize> = mine
            .iter()
            .chain(&test)
            .chain(&validation)
            .copied()
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut notes = Vec::new();
        let read = all.load_rows(&wanted, &mut notes)?;
        let at = |idx: &[usize]| -> Dataset {
            let pos: Vec<usize> = idx
                .iter()
                .map(|i| wanted.binary_search(i).expect("every needed row was read"))
                .collect();
            read.select(&pos)
        };
        let other = |f: Option<FileSource>,
                     notes: &mut Vec<String>|
         -> Result<Option<Dataset>, DataError> {
            f.map(|f| {
                if part.lead {
                    f.load(notes)
                } else {
                    f.load_rows(&[0], notes)
                }
            })
            .transpose()
        };
        let test = match other(given_test, &mut notes)? {
            Some(t) => t,
            None => at(&test),
        };
        let validation = match other(given_validation, &mut notes)? {
            Some(v) => Some(v),
            None if !validation.is_empty() => Some(at(&validation)),
            None => None,
        };
        let train = at(mine);
        for (name, d) in [("validation", validation.as_ref()), ("test", Some(&test))] {
            if let Some(d) = d
                && (d.sample_shape != train.sample_shape || d.cond_dim != train.cond_dim)
            {
                return Err(DataError::Shape(format!(
                    "the {name} samples have shape {:?} with {} condition(s), the training samples {:?} with {}; give the splits the same layout",
                    d.sample_shape, d.cond_dim, train.sample_shape, train.cond_dim
                )));
            }
        }
        Ok((
            Splits {
                train,
                validation,
                test,
                notes,
            },
            n_train,
        ))
    }

    /// For a file source: the file holding the samples to split, and the given validation and
    /// test files (paths resolved against `base`). `None` for generated sources.
    fn file_parts(
        &self,
        base: &Path,
    ) -> Option<(FileSource, Option<FileSource>, Option<FileSource>)> {
        match self.resolved(base) {
            DataSource::Npy { path, cond_path } => Some((
                FileSource {
                    path,
                    x: None,
                    cond: None,
                    cond_path,
                },
                None,
                None,
            )),
            DataSource::Npz {
                path,
                x_key,
                cond_key,
            } => Some((
                FileSource {
                    path,
                    x: Some(x_key),
                    cond: cond_key,
                    cond_path: None,
                },
                None,
                None,
            )),
            DataSource::Files {
                train,
                validation,
                test,
            } => Some((train, validation, test)),
            _ => None,
        }
    }

    /// For an advection-video source: the number of sequences and the set-up.
    pub fn advection_video(&self) -> Option<(usize, AdvectionVideoSettings)> {
        match self {
            DataSource::AdvectionVideo { n, settings } => Some((*n, settings.unwrap_or_default())),
            _ => None,
        }
    }

    /// For a lorenz-fields source: the number of sequences and the set-up.
    pub fn lorenz_fields(&self) -> Option<(usize, LorenzFieldsSettings)> {
        match self {
            DataSource::LorenzFields { n, settings } => Some((*n, settings.unwrap_or_default())),
            _ => None,
        }
    }

    /// Whether the test samples are a given file (not a random split).
    pub fn given_test(&self) -> bool {
        matches!(self, DataSource::Files { test: Some(_), .. })
    }

    /// The same source with relative paths joined onto `base`.
    pub fn resolved(&self, base: &Path) -> DataSource {
        let fix = |p: &PathBuf| join(base, p);
        match self {
            DataSource::Npy { path, cond_path } => DataSource::Npy {
                path: fix(path),
                cond_path: cond_path.as_ref().map(fix),
            },
            DataSource::Npz {
                path,
                x_key,
                cond_key,
            } => DataSource::Npz {
                path: fix(path),
                x_key: x_key.clone(),
                cond_key: cond_key.clone(),
            },
            DataSource::Files {
                train,
                validation,
                test,
            } => DataSource::Files {
                train: train.resolved(base),
                validation: validation.as_ref().map(|v| v.resolved(base)),
                test: test.as_ref().map(|t| t.resolved(base)),
            },
            other => other.clone(),
        }
    }
}
