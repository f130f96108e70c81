//! The config sections every kind shares (`seed`, `[data]`, `[split]`, `[optimizer]`,
//! `[training]`), the vocabulary the kinds' own sections use, and the parsing helpers that turn a
//! serde error into one line naming the key, the kind and the keys it does have.
//!
//! The whole experiment, shared sections plus the kind's `[model]` and `[objective]`, is
//! [`crate::experiment::TrainConfig`].

use crate::backend::{BackendKind, Precision};
use crate::error::TrainError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;
use varphi_data::DataSource;
use varphi_models::{Activation, FnoConfig};

/// A config value out of range or inconsistent, naming its dotted key.
pub fn invalid(key: &str, message: impl Into<String>) -> TrainError {
    TrainError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The sections every kind shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Common {
    /// Seed for data generation, initialisation, batching and Monte-Carlo noise.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Seed of the data alone — generation, the split, observation nodes and the test
    /// observations' noise — when it differs from `seed` (ensemble members share it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_seed: Option<u64>,
    /// Data source (`[data]`, selected by `kind`).
    pub data: DataSource,
    /// Train/test split and normalisation.
    #[serde(default)]
    pub split: SplitConfig,
    /// Optimiser.
    #[serde(default)]
    pub optimizer: OptimizerSection,
    /// Training loop.
    #[serde(default)]
    pub training: TrainingSection,
}

fn d_seed() -> u64 {
    42
}

/// `[split]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Fraction of samples held out for testing, in (0, 1).
    #[serde(default = "d_test_fraction")]
    pub test_fraction: f64,
    /// Fraction of the training part held out for validation (early stopping), in [0, 1);
    /// 0: none, unless `[data] validation` gives a file.
    #[serde(default)]
    pub validation_fraction: f64,
    /// Standardise data (global mean/std) and conditions (per column) on the training split.
    #[serde(default = "d_true")]
    pub normalize: bool,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            test_fraction: d_test_fraction(),
            validation_fraction: 0.0,
            normalize: true,
        }
    }
}

fn d_test_fraction() -> f64 {
    0.1
}
fn d_true() -> bool {
    true
}

/// `[optimizer]`: Adam.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSection {
    /// Learning rate.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Cosine decay of the learning rate from `lr` to this value over the run (constant if
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_final: Option<f64>,
    /// Clip each parameter's gradient to this L2 norm (off if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    /// L2 weight decay added to the gradient (0: off).
    #[serde(default)]
    pub weight_decay: f64,
}

impl Default for OptimizerSection {
    fn default() -> Self {
        Self {
            lr: d_lr(),
            lr_final: None,
            grad_clip: None,
            weight_decay: 0.0,
        }
    }
}

fn d_lr() -> f64 {
    1e-3
}

/// `[training]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    /// Epochs.
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Mini-batch size.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Backend (overridden by `--backend`).
    #[serde(default)]
    pub backend: BackendKind,
    /// Float precision: f32 everywhere, or f64 on the CPU backends.
    #[serde(default)]
    pub precision: Precision,
    /// Write a checkpoint every this many epochs (and always at the end).
    #[serde(default = "d_one")]
    pub checkpoint_every: usize,
    /// Epochs of the small variant run by `varphi train --quick` (default: epochs / 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quick_epochs: Option<usize>,
    /// Stop when a validation metric has not improved for `patience` epochs, keeping the best
    /// checkpoint (`RUN/best`), which `eval`, `sample` and `predict` then use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStoppingSection>,
    /// Members of a deep ensemble: `K > 1` trains `K` runs with seeds `seed, seed + 1, …` on
    /// the same data (`RUN/members/k`); eval and predict use their equal-weight mixture.
    #[serde(default = "d_one")]
    pub ensemble: usize,
    /// Data-parallel devices of this process, e.g. `["flex", "flex"]` or `["wgpu", "flex"]`
    /// (overridden by `--devices`): each step's batch is split over them, the gradients are
    /// summed on the first (docs/scaling.md). Default: the one device of `backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// Relative batch share of each of `devices` (e.g. proportional to their speed), or
    /// `"auto"`: measured speeds; default equal shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_shares: Option<DeviceShares>,
    /// Per-rank data: the training split is cut into this many shards and every batch takes
    /// its share of rows from each ([`varphi_data::Batcher`]); under `mpirun` each rank loads
    /// (a physics source: generates) only its own `data_shards / ranks` shards. `"ranks"`: one
    /// shard per rank. Default: one shard, every rank holds the whole split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_shards: Option<DataShards>,
}

/// `[training] data_shards`: a number of shards, or `"ranks"` (one per MPI rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "toml::Value", into = "toml::Value")]
pub enum DataShards {
    /// This many shards (a multiple of the ranks).
    Count(usize),
    /// One shard per rank.
    Ranks,
}

impl TryFrom<toml::Value> for DataShards {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        match &v {
            toml::Value::String(s) if s == "ranks" => Ok(Self::Ranks),
            toml::Value::Integer(i) if *i >= 1 => Ok(Self::Count(*i as usize)),
            _ => Err(format!(
                "expected a number of shards ≥ 1 (a multiple of the MPI ranks) or \"ranks\"; got {v}"
            )),
        }
    }
}

impl From<DataShards> for toml::Value {
    fn from(s: DataShards) -> Self {
        match s {
            DataShards::Ranks => toml::Value::String("ranks".into()),
            DataShards::Count(n) => toml::Value::Integer(n as i64),
        }
    }
}

impl TrainingSection {
    /// The number of data shards for a run on `ranks` MPI ranks (1 when not set).
    pub fn shards(&self, ranks: usize) -> usize {
        match self.data_shards {
            None => 1,
            Some(DataShards::Count(n)) => n,
            Some(DataShards::Ranks) => ranks.max(1),
        }
    }

    /// The batch order of a run on `ranks` MPI ranks with training seed `seed`.
    pub fn batcher(&self, seed: u64, ranks: usize) -> varphi_data::Batcher {
        varphi_data::Batcher {
            shards: self.shards(ranks),
            ..varphi_data::Batcher::new(self.batch_size, seed)
        }
    }
}

/// `[training] device_shares`: fixed relative shares, or `"auto"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "toml::Value", into = "toml::Value")]
pub enum DeviceShares {
    /// One positive share per device.
    Fixed(Vec<f64>),
    /// Equal shares for the first steps, then shares proportional to each device's measured
    /// rows per second (docs/scaling.md).
    Auto,
}

impl TryFrom<toml::Value> for DeviceShares {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        let bad = || {
            format!(
                "expected a list of positive shares, one per device (e.g. [3, 1]), or \"auto\"; got {v}"
            )
        };
        match &v {
            toml::Value::String(s) if s == "auto" => Ok(Self::Auto),
            toml::Value::Array(a) => a
                .iter()
                .map(|x| match x {
                    toml::Value::Float(f) => Some(*f),
                    toml::Value::Integer(i) => Some(*i as f64),
                    _ => None,
                })
                .collect::<Option<Vec<f64>>>()
                .map(Self::Fixed)
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

impl From<DeviceShares> for toml::Value {
    fn from(s: DeviceShares) -> Self {
        match s {
            DeviceShares::Auto => toml::Value::String("auto".into()),
            DeviceShares::Fixed(v) => {
                toml::Value::Array(v.into_iter().map(toml::Value::Float).collect())
            }
        }
    }
}

/// `[training] early_stopping = { patience = 10, metric = "loss" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStoppingSection {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// A term of the objective on the validation split (metrics.csv's `val_<metric>`).
    #[serde(default = "d_metric")]
    pub metric: String,
    /// `min` or `max`; default `max` for `elbo`, `log_lik`, `bound`, else `min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<StopMode>,
}

/// Whether a smaller or a larger value of the early-stopping metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopMode {
    /// Smaller is better (losses).
    Min,
    /// Larger is better (bounds, log-likelihoods).
    Max,
}

fn d_metric() -> String {
    "loss".into()
}

impl EarlyStoppingSection {
    /// The mode in force (see [`EarlyStoppingSection::mode`]).
    pub fn mode(&self) -> StopMode {
        self.mode.unwrap_or(
            if matches!(self.metric.as_str(), "elbo" | "log_lik" | "bound") {
                StopMode::Max
            } else {
                StopMode::Min
            },
        )
    }
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            epochs: d_epochs(),
            batch_size: d_batch(),
            backend: BackendKind::default(),
            precision: Precision::default(),
            checkpoint_every: 1,
            quick_epochs: None,
            early_stopping: None,
            ensemble: 1,
            devices: None,
            device_shares: None,
            data_shards: None,
        }
    }
}

fn d_epochs() -> usize {
    20
}
fn d_batch() -> usize {
    64
}
fn d_one() -> usize {
    1
}

impl Common {
    /// The seed of the data (see [`Common::data_seed`]).
    pub fn data_seed(&self) -> u64 {
        self.data_seed.unwrap_or(self.seed)
    }

    /// Range checks of the shared sections.
    pub fn validate(&self) -> Result<(), TrainError> {
        let s = &self.split;
        if !(s.test_fraction > 0.0 && s.test_fraction < 1.0) {
            return Err(invalid(
                "split.test_fraction",
                format!("must be in (0, 1), got {}", s.test_fraction),
            ));
        }
        let p = &self.optimizer;
        if !(p.lr.is_finite() && p.lr > 0.0) {
            return Err(invalid(
                "optimizer.lr",
                format!("must be > 0, got {}", p.lr),
            ));
        }
        if let Some(f) = p.lr_final
            && !(f.is_finite() && f >= 0.0 && f <= p.lr)
        {
            return Err(invalid(
                "optimizer.lr_final",
                format!("must be in [0, lr = {}], got {f}", p.lr),
            ));
        }
        if let Some(c) = p.grad_clip
            && !(c.is_finite() && c > 0.0)
        {
            return Err(invalid(
                "optimizer.grad_clip",
                format!("must be > 0, got {c}"),
            ));
        }
        if !(p.weight_decay.is_finite() && p.weight_decay >= 0.0) {
            return Err(invalid(
                "optimizer.weight_decay",
                format!("must be ≥ 0, got {}", p.weight_decay),
            ));
        }
        let t = &self.training;
        if t.epochs == 0 {
            return Err(invalid("training.epochs", "must be at least 1"));
        }
        if t.batch_size == 0 {
            return Err(invalid("training.batch_size", "must be at least 1"));
        }
        if t.ensemble == 0 {
            return Err(invalid(
                "training.ensemble",
                "must be at least 1 (1: a single run; K > 1: K members)",
            ));
        }
        if let Some(d) = &t.devices {
            if d.is_empty() {
                return Err(invalid(
                    "training.devices",
                    "give at least one device, e.g. [\"flex\", \"flex\"], or leave it out",
                ));
            }
            if let Some(bad) = d
                .iter()
                .find_map(|e| crate::backend::parse_backend(e).err())
            {
                return Err(invalid("training.devices", bad));
            }
        }
        if let Some(DeviceShares::Fixed(shares)) = &t.device_shares {
            // Without `devices` here, `--devices` sets the count (checked when training).
            if let Some(n) = t.devices.as_ref().map(Vec::len)
                && shares.len() != n
            {
                return Err(invalid(
                    "training.device_shares",
                    format!(
                        "has {} entries for {n} devices: give one share per device",
                        shares.len()
                    ),
                ));
            }
            if shares.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(invalid(
                    "training.device_shares",
                    format!("must all be finite and > 0, got {shares:?}"),
                ));
            }
        }
        if let Some(DataShards::Count(n)) = t.data_shards
            && n > t.batch_size
        {
            return Err(invalid(
                "training.data_shards",
                format!(
                    "is {n}, more than training.batch_size = {}: every batch takes at least one row of each shard",
                    t.batch_size
                ),
            ));
        }
        if t.checkpoint_every == 0 {
            return Err(invalid("training.checkpoint_every", "must be at least 1"));
        }
        if t.quick_epochs == Some(0) {
            return Err(invalid("training.quick_epochs", "must be at least 1"));
        }
        if !(s.validation_fraction >= 0.0 && s.validation_fraction < 1.0) {
            return Err(invalid(
                "split.validation_fraction",
                format!("must be in [0, 1), got {}", s.validation_fraction),
            ));
        }
        if let Some(e) = &t.early_stopping {
            if e.patience == 0 {
                return Err(invalid(
                    "training.early_stopping.patience",
                    "must be at least 1",
                ));
            }
            let given = matches!(
                &self.data,
                DataSource::Files {
                    validation: Some(_),
                    ..
                }
            );
            if !given && s.validation_fraction == 0.0 {
                return Err(invalid(
                    "training.early_stopping",
                    "needs validation samples: set [split] validation_fraction (e.g. 0.1) or give [data] validation = { path = ... } (kind = \"files\")",
                ));
            }
        }
        Ok(())
    }

    /// The physics settings of a physics data source, or an error saying that `who` (e.g.
    /// `kind = "npe"`) needs one.
    pub fn physics_source(
        &self,
        who: &str,
    ) -> Result<(usize, varphi_data::physics::PhysicsSettings), TrainError> {
        self.data.physics().ok_or_else(|| {
            invalid(
                "data.kind",
                format!(
                    "{who} needs a physics data source (darcy, poisson1d, burgers, heat, pendulum)"
                ),
            )
        })
    }
}

/// Activation names accepted in configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationName {
    /// ReLU.
    Relu,
    /// tanh.
    Tanh,
    /// sin.
    Sin,
    /// softplus.
    Softplus,
    /// GELU.
    Gelu,
    /// SiLU.
    Silu,
}

impl From<ActivationName> for Activation {
    fn from(a: ActivationName) -> Self {
        match a {
            ActivationName::Relu => Activation::Relu,
            ActivationName::Tanh => Activation::Tanh,
            ActivationName::Sin => Activation::Sin,
            ActivationName::Softplus => Activation::Softplus,
            ActivationName::Gelu => Activation::Gelu,
            ActivationName::Silu => Activation::Silu,
        }
    }
}

/// `[model.fno]`: the shape of a Fourier neural operator, used where a kind's network is
/// `"fno"` (varphi_models::Fno: lifting, Fourier layers with pointwise skips, projection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FnoSection {
    /// Fourier modes kept per axis: one value, or `[m₁, m₂]` on a 2-D grid. Default: 12, or
    /// as many as the grid holds if fewer (`(H + 1) / 2` along the first axis, `⌈W / 2⌉`
    /// along the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modes: Option<Vec<usize>>,
    /// Channels of the Fourier layers.
    #[serde(default = "d_fno_width")]
    pub width: usize,
    /// Fourier layers.
    #[serde(default = "d_fno_layers")]
    pub layers: usize,
    /// Hidden channels of the pointwise projection.
    #[serde(default = "d_fno_projection")]
    pub projection: usize,
    /// Zero padding after the last node of each axis (for fields that are not periodic).
    #[serde(default)]
    pub padding: usize,
}

fn d_fno_width() -> usize {
    32
}
fn d_fno_layers() -> usize {
    4
}
fn d_fno_projection() -> usize {
    128
}

impl Default for FnoSection {
    fn default() -> Self {
        Self {
            modes: None,
            width: d_fno_width(),
            layers: d_fno_layers(),
            projection: d_fno_projection(),
            padding: 0,
        }
    }
}

impl FnoSection {
    /// The network from a field of shape `grid` (`[C, H, W]` or `[C, N]`) to `out` channels on
    /// the same grid, or a `model.fno` error naming what does not fit.
    pub fn network(
        &self,
        grid: Vec<usize>,
        out: usize,
        activation: Activation,
    ) -> Result<FnoConfig, TrainError> {
        let modes = self.modes.clone().unwrap_or_else(|| {
            let fit = |n: usize| (n + self.padding).div_ceil(2);
            let most = match grid.as_slice() {
                [_, h, w] => fit(*h).min(fit(*w)),
                _ => fit(*grid.last().unwrap_or(&1)),
            };
            vec![12.min(most).max(1)]
        });
        let config = FnoConfig::new(grid, out)
            .with_modes(modes)
            .with_width(self.width)
            .with_layers(self.layers)
            .with_projection(self.projection)
            .with_padding(self.padding)
            .with_activation(activation);
        config.layout().map_err(|e| invalid("model.fno", e))?;
        Ok(config)
    }
}

/// The default activation of every kind.
pub fn d_activation() -> ActivationName {
    ActivationName::Gelu
}

/// The default hidden widths of every kind.
pub fn d_hidden() -> Vec<usize> {
    vec![128, 128]
}

/// The default convolution channels of every kind.
pub fn d_channels() -> Vec<usize> {
    vec![16, 32]
}

/// The default (odd) kernel size of every kind.
pub fn d_kernel() -> usize {
    3
}

/// `model.channels` needs at least one positive count, `model.kernel` must be odd.
pub fn check_conv(channels: &[usize], kernel: usize) -> Result<(), TrainError> {
    if channels.is_empty() || channels.contains(&0) {
        return Err(invalid(
            "model.channels",
            "needs at least one channel count, each ≥ 1",
        ));
    }
    if kernel % 2 == 0 {
        return Err(invalid(
            "model.kernel",
            format!("must be odd, got {kernel}"),
        ));
    }
    Ok(())
}

/// The `[model]` (which may hold `kind`) and `[objective]` tables of kind `kind` as the
/// kind's two section types.
pub fn kind_sections<M: DeserializeOwned, O: DeserializeOwned>(
    model: toml::Table,
    objective: toml::Table,
    kind: &str,
) -> Result<(M, O), SectionError> {
    Ok((
        section(model, "model", kind, &["kind"])?,
        section(objective, "objective", kind, &[])?,
    ))
}

/// `value` must be finite and > 0; the error names `key`.
pub fn check_positive(key: &str, value: f64) -> Result<(), TrainError> {
    if value > 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(invalid(key, format!("must be > 0, got {value}")))
    }
}

/// Hidden widths must be positive.
pub fn check_hidden(hidden: &[usize]) -> Result<(), TrainError> {
    if hidden.contains(&0) {
        return Err(invalid("model.hidden", "widths must be at least 1"));
    }
    Ok(())
}

/// Read a config file's text (errors name the file).
pub fn read_config(path: &Path) -> Result<String, TrainError> {
    std::fs::read_to_string(path).map_err(|e| TrainError::Config {
        path: path.to_path_buf(),
        message: format!("cannot read config: {e}"),
    })
}

/// Deserialize TOML text into `T`; a syntax or schema error becomes one line naming `origin`
/// and the line number.
pub fn parse_toml<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T, TrainError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| format!(" (line {})", text[..s.start].lines().count().max(1)))
            .unwrap_or_default();
        TrainError::Config {
            path: origin.to_path_buf(),
            message: format!("{}{line}", e.message().trim().replace('\n', "; ")),
        }
    })
}

/// A problem with one section of a config: the dotted path of the offending key (empty for the
/// section itself) and what is wrong, in one line.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionError {
    /// Dotted key, e.g. `objective.residual.gird`.
    pub key: String,
    /// One-line message.
    pub message: String,
}

/// Deserialize the table `table`, found at `prefix` (`model`, `objective`, or empty for the
/// top level), into `T`. An unknown key becomes "`beta` is not a key of [objective] for kind =
/// "pddlvm" (its keys: ...)"; `extra` lists keys of the same table that another part of the
/// kind's config takes (they are named among its keys).
pub fn section<T: DeserializeOwned>(
    table: toml::Table,
    prefix: &str,
    kind: &str,
    extra: &[&str],
) -> Result<T, SectionError> {
    let value = toml::Value::Table(table);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.inner().message().trim().replace('\n', "; ");
        let full = |p: &str| match (prefix.is_empty(), p.is_empty()) {
            (true, _) => p.to_string(),
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{p}"),
        };
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some((key, tail)) = rest.split_once('`')
        {
            // serde's path ends with the unknown key itself: its table is the rest.
            let holder = match path.rsplit_once('.') {
                Some((t, last)) if last == key => t.to_string(),
                None if path == key => String::new(),
                _ => path.clone(),
            };
            let table = full(&holder);
            let key_path = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            let mut keys: Vec<String> = tail
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            // `extra` keys belong to the kind's top-level table only.
            if holder.is_empty() {
                keys.extend(extra.iter().map(|k| k.to_string()));
            }
            let place = if table.is_empty() {
                "the top level".to_string()
            } else {
                format!("[{table}]")
            };
            let owner = if kind.is_empty() {
                String::new()
            } else {
                format!(" for kind = \"{kind}\"")
            };
            let listed = if keys.is_empty() {
                "it has none".to_string()
            } else {
                format!("its keys: {}", keys.join(", "))
            };
            return SectionError {
                key: key_path,
                message: format!("`{key}` is not a key of {place}{owner} ({listed})"),
            };
        }
        let owner = if kind.is_empty() {
            String::new()
        } else {
            format!(" (kind = \"{kind}\" needs it)")
        };
        if let Some(rest) = message.strip_prefix("missing field `")
            && let Some((key, _)) = rest.split_once('`')
        {
            let table = full(&path);
            let key_path = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            return SectionError {
                message: format!("missing `{key_path}`{owner}; add it to the config"),
                key: key_path,
            };
        }
        let key = full(&path);
        SectionError {
            message: format!("`{key}`: {message}"),
            key,
        }
    })
}

/// Split the keys `keys` out of `table` into a table of their own (for a section whose keys
/// two structs share).
pub fn take_keys(table: &mut toml::Table, keys: &[&str]) -> toml::Table {
    let mut out = toml::Table::new();
    for k in keys {
        if let Some(v) = table.remove(*k) {
            out.insert(k.to_string(), v);
        }
    }
    out
}

/// Serialise `value` (a struct) as a TOML table.
pub fn to_table<T: Serialize>(value: &T) -> toml::Table {
    match toml::Value::try_from(value).expect("config sections serialise") {
        toml::Value::Table(t) => t,
        other => panic!("a config section serialised to {other:?}, not a table"),
    }
}

/// The 1-based line of `key` in the table `[table]` of TOML text `text` (`table` empty: the top
/// level), if it is written as `key = ...` there.
pub fn line_of(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = l.strip_prefix('[') {
            current = h
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            continue;
        }
        if current == table
            && let Some(rest) = l.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(i + 1);
        }
    }
    None
}
