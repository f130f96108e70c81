//! The physics set-up of a `dvae` run: which latent model the frames come from, and every part
//! of it the kind needs — the frame and state shapes, the prior of `Λ`, the transition, the
//! initial and process covariances (as differentiable tensors for the filter, as exact draws
//! for sampling) and the true states of generated data.
//!
//! - `advection-video` ([`AdvectionVideoSettings`]): `d = nodes`, `Λ = (c, D)`, `P₀` and `Q`
//!   periodic squared-exponential covariances (plus [`COVARIANCE_JITTER`]); the per-frame
//!   encoder fixes the state only up to its amplitude (an amplitude gauge).
//! - `lorenz-fields` ([`LorenzFieldsSettings`]): `d = 3`, `Λ = (σ, ρ, β)` log-normal, the RK4
//!   map (nonlinear: the extended Kalman filter), `Q = s² I`, `P₀ = a² diag(var u₀)` around the
//!   attractor's mean ([`LorenzFieldsSettings::initial_moments`]); the dynamics fixes the
//!   state's scale, but not the sign of `(X, Y)` (the Lorenz symmetry).
//!
//! In a config, `[objective.setup]` is one of the two settings tables with
//! `problem = "advection-video"` (the default when absent) or `problem = "lorenz-fields"`.

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use varphi_data::DataSource;
use varphi_data::error::DataError;
use varphi_data::sequences::{
    AdvectionVideoSettings, COVARIANCE_JITTER, LorenzFieldsSettings, PeriodicGaussian, Sequences,
};
use varphi_models::{ParameterPrior, ParameterScale};
use varphi_physics::dynamics::{Dynamics, periodic_se_covariance};

/// The physics set-up of a sequence data set (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "toml::Table", into = "toml::Table")]
pub enum SequenceSetup {
    /// Periodic advection–diffusion seen through curve frames.
    AdvectionVideo(AdvectionVideoSettings),
    /// Lorenz-63 seen through Rayleigh–Bénard fields.
    LorenzFields(LorenzFieldsSettings),
}

impl TryFrom<toml::Table> for SequenceSetup {
    type Error = String;
    fn try_from(mut t: toml::Table) -> Result<Self, String> {
        let problem = match t.remove("problem") {
            None => "advection-video".to_string(),
            Some(toml::Value::String(s)) => s,
            Some(v) => return Err(format!("problem must be a string, got {v}")),
        };
        let value = toml::Value::Table(t);
        match problem.as_str() {
            "advection-video" => value
                .try_into()
                .map(Self::AdvectionVideo)
                .map_err(|e| format!("advection-video set-up: {}", e.message())),
            "lorenz-fields" => value
                .try_into()
                .map(Self::LorenzFields)
                .map_err(|e| format!("lorenz-fields set-up: {}", e.message())),
            other => Err(format!(
                "unknown problem \"{other}\"; expected \"advection-video\" or \"lorenz-fields\""
            )),
        }
    }
}

impl From<SequenceSetup> for toml::Table {
    fn from(s: SequenceSetup) -> toml::Table {
        let mut t = match s {
            SequenceSetup::AdvectionVideo(a) => toml::Table::try_from(a),
            SequenceSetup::LorenzFields(l) => toml::Table::try_from(l),
        }
        .expect("settings serialise to a table");
        t.insert("problem".into(), s.problem().into());
        t
    }
}

impl SequenceSetup {
    /// The set-up of a generated data source, with its number of sequences.
    pub fn of_data(source: &DataSource) -> Option<(usize, Self)> {
        source
            .advection_video()
            .map(|(n, s)| (n, Self::AdvectionVideo(s)))
            .or_else(|| {
                source
                    .lorenz_fields()
                    .map(|(n, s)| (n, Self::LorenzFields(s)))
            })
    }

    /// The `problem` name.
    pub fn problem(&self) -> &'static str {
        match self {
            Self::AdvectionVideo(_) => "advection-video",
            Self::LorenzFields(_) => "lorenz-fields",
        }
    }

    /// Check the settings (the error names the key).
    pub fn validate(&self) -> Result<(), DataError> {
        match self {
            Self::AdvectionVideo(s) => s.validate(),
            Self::LorenzFields(s) => s.validate(),
        }
    }

    /// Frames `N` per sequence.
    pub fn frames(&self) -> usize {
        match self {
            Self::AdvectionVideo(s) => s.frames,
            Self::LorenzFields(s) => s.frames,
        }
    }

    /// Shape of one frame: `[height, nodes]` or `[3, height, width]`.
    pub fn frame_shape(&self) -> Vec<usize> {
        match self {
            Self::AdvectionVideo(s) => vec![s.height, s.nodes],
            Self::LorenzFields(s) => vec![3, s.height, s.width],
        }
    }

    /// The frame shape in words, for error messages.
    pub fn frame_shape_words(&self) -> String {
        match self {
            Self::AdvectionVideo(s) => format!("[height, nodes] = [{}, {}]", s.height, s.nodes),
            Self::LorenzFields(s) => {
                format!("[channels, height, width] = [3, {}, {}]", s.height, s.width)
            }
        }
    }

    /// The frame as an image for plots, `[rows, columns]` (the Lorenz channels stacked).
    pub fn image_shape(&self) -> [usize; 2] {
        match self {
            Self::AdvectionVideo(s) => [s.height, s.nodes],
            Self::LorenzFields(s) => [3 * s.height, s.width],
        }
    }

    /// Values per frame.
    pub fn frame_pixels(&self) -> usize {
        self.frame_shape().iter().product()
    }

    /// Shape of one sample, `[N, frame…]`.
    pub fn sample_shape(&self) -> Vec<usize> {
        let mut v = vec![self.frames()];
        v.extend(self.frame_shape());
        v
    }

    /// Latent state dimension `d`.
    pub fn state_dim(&self) -> usize {
        match self {
            Self::AdvectionVideo(s) => s.nodes,
            Self::LorenzFields(_) => 3,
        }
    }

    /// Physical parameters `p`.
    pub fn param_dim(&self) -> usize {
        self.prior().dim()
    }

    /// The prior `p(Λ)`: `c ~ N`, `log D ~ N`; or `log σ, log ρ, log β ~ N`.
    pub fn prior(&self) -> ParameterPrior {
        match self {
            Self::AdvectionVideo(s) => ParameterPrior {
                names: AdvectionVideoSettings::PARAM_NAMES
                    .iter()
                    .map(|n| n.to_string())
                    .collect(),
                mean: vec![s.c_mean, s.log_d_mean],
                sd: vec![s.c_sd, s.log_d_sd],
                scale: vec![ParameterScale::Linear, ParameterScale::Log],
            },
            Self::LorenzFields(s) => ParameterPrior {
                names: LorenzFieldsSettings::PARAM_NAMES
                    .iter()
                    .map(|n| n.to_string())
                    .collect(),
                mean: s.median.iter().map(|m| m.ln()).collect(),
                sd: s.log_sd.to_vec(),
                scale: vec![ParameterScale::Log; 3],
            },
        }
    }

    /// The transition `M(u; Λ)`.
    pub fn dynamics(&self) -> Box<dyn Dynamics> {
        match self {
            Self::AdvectionVideo(s) => Box::new(s.dynamics()),
            Self::LorenzFields(s) => Box::new(s.dynamics()),
        }
    }

    /// The set-up's `Q` parameters: `[scale, length]` (advection) or `[sd]` (Lorenz).
    pub fn process_init(&self) -> Vec<f64> {
        match self {
            Self::AdvectionVideo(s) => vec![s.process_scale, s.process_length],
            Self::LorenzFields(s) => vec![s.process_sd],
        }
    }

    /// The jitter added to `Q` (that of the data generator).
    pub fn process_jitter(&self) -> f64 {
        match self {
            Self::AdvectionVideo(s) => COVARIANCE_JITTER * s.process_scale.powi(2),
            Self::LorenzFields(_) => 0.0,
        }
    }

    /// `Q`, `[1, d, d]`, from `params` `[k]` on the scale of [`SequenceSetup::process_init`].
    pub fn process(&self, params: Tensor<1>) -> Tensor<3> {
        match self {
            Self::AdvectionVideo(s) => periodic_se_covariance(
                s.nodes,
                params.clone().narrow(0, 0, 1),
                params.narrow(0, 1, 1),
                self.process_jitter(),
            ),
            Self::LorenzFields(_) => {
                let device = params.device();
                (Tensor::<2>::eye(3, &device) * params.powf_scalar(2.0).reshape([1, 1]))
                    .unsqueeze_dim(0)
            }
        }
    }

    /// One draw `e ~ N(0, Q)` for `params` (host, `f64`).
    pub fn process_draw(&self, params: &[f64], normal: &mut impl FnMut() -> f64) -> Vec<f64> {
        match self {
            Self::AdvectionVideo(s) => {
                PeriodicGaussian::new(s.nodes, params[0], params[1], self.process_jitter())
                    .draw(normal)
            }
            Self::LorenzFields(_) => (0..3).map(|_| params[0] * normal()).collect(),
        }
    }

    /// The set-up's `P₀` scale: the kernel scale (advection) or 1, a multiplier of the
    /// attractor's sds (Lorenz).
    pub fn initial_scale(&self) -> f64 {
        match self {
            Self::AdvectionVideo(s) => s.initial_scale,
            Self::LorenzFields(_) => 1.0,
        }
    }

    /// Whether the per-frame encoder fixes the state only up to an amplitude `a` that the
    /// learned `P₀` scale then carries (the linear advection): states are reported divided by
    /// `a = learned scale / set-up's`.
    pub fn amplitude_gauge(&self) -> bool {
        matches!(self, Self::AdvectionVideo(_))
    }

    /// Whether the affine diagnostic of the states fits one map per state component (Lorenz:
    /// `X`, `Y`, `Z` differ in meaning and `(X, Y)` in sign) rather than one for all nodes.
    pub fn affine_per_component(&self) -> bool {
        matches!(self, Self::LorenzFields(_))
    }

    /// The rendering state → noiseless frame as a matrix `[d, P]` (row `i` the frame of the
    /// unit state `e_i`), when it is linear (Lorenz: the fields are linear in `X, Y, Z`);
    /// `None` for the advection curves.
    pub fn linear_rendering(&self) -> Option<Vec<f64>> {
        match self {
            Self::AdvectionVideo(_) => None,
            Self::LorenzFields(s) => Some(
                (0..3)
                    .flat_map(|i| {
                        let mut e = [0.0; 3];
                        e[i] = 1.0;
                        s.render(&e)
                    })
                    .collect(),
            ),
        }
    }

    /// The frames of sequences `0 … n−1` of `seed` as a dataset conditioned on `Λ`.
    pub fn dataset(&self, n: usize, seed: u64) -> Result<varphi_data::Dataset, DataError> {
        match self {
            Self::AdvectionVideo(s) => s.dataset(n, seed),
            Self::LorenzFields(s) => s.dataset(n, seed),
        }
    }

    /// Generate sequences `0 … n−1` of `seed` (frames, true states, parameters).
    pub fn generate(&self, n: usize, seed: u64) -> Result<Sequences, DataError> {
        match self {
            Self::AdvectionVideo(s) => s.generate(n, seed),
            Self::LorenzFields(s) => s.generate(n, seed),
        }
    }
}

/// A [`SequenceSetup`] with its initial-state moments computed once (the Lorenz attractor's).
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceModel {
    /// The set-up.
    pub setup: SequenceSetup,
    /// `m₀`, `[d]`.
    initial_mean: Vec<f64>,
    /// Per-component sd of `P₀` at scale 1 (Lorenz), empty for advection.
    initial_sd: Vec<f64>,
}

impl SequenceModel {
    /// Prepare `setup` (the error names a bad setting).
    pub fn new(setup: SequenceSetup) -> Result<Self, DataError> {
        let (initial_mean, initial_sd) = match &setup {
            SequenceSetup::AdvectionVideo(s) => (vec![0.0; s.nodes], Vec::new()),
            SequenceSetup::LorenzFields(s) => {
                let (mean, var) = s.initial_moments()?;
                (mean.to_vec(), var.iter().map(|v| v.sqrt()).collect())
            }
        };
        Ok(Self {
            setup,
            initial_mean,
            initial_sd,
        })
    }

    /// The jitter of the advection `P₀` (that of the data generator).
    fn initial_jitter(s: &AdvectionVideoSettings) -> f64 {
        COVARIANCE_JITTER * s.initial_scale.powi(2)
    }

    /// `m₀` `[1, d]` and `P₀` `[1, d, d]` at scale `scale` (`[1]`, differentiable).
    pub fn initial(&self, scale: Tensor<1>) -> (Tensor<2>, Tensor<3>) {
        let device = scale.device();
        let d = self.initial_mean.len();
        let mean =
            Tensor::<2>::from_data(TensorData::new(self.initial_mean.clone(), [1, d]), &device);
        let cov = match &self.setup {
            SequenceSetup::AdvectionVideo(s) => {
                let length =
                    Tensor::<1>::from_data(TensorData::new(vec![s.initial_length], [1]), &device);
                periodic_se_covariance(d, scale, length, Self::initial_jitter(s))
            }
            SequenceSetup::LorenzFields(_) => {
                let var: Vec<f64> = self.initial_sd.iter().map(|s| s * s).collect();
                let diag = Tensor::<1>::from_data(TensorData::new(var, [d]), &device);
                (Tensor::<2>::eye(d, &device) * diag.reshape([1, d])).unsqueeze_dim::<3>(0)
                    * scale.powf_scalar(2.0).reshape([1, 1, 1])
            }
        };
        (mean, cov)
    }

    /// The offset and scale that standardise the observed components `observed` of the
    /// state for the networks ([`varphi_models::DvaeConfig::state_offset`]): the attractor's
    /// mean and sd (Lorenz); `None` for advection (its state is already O(1)).
    pub fn standardisation(&self, observed: &[usize]) -> Option<(Vec<f64>, Vec<f64>)> {
        match &self.setup {
            SequenceSetup::AdvectionVideo(_) => None,
            SequenceSetup::LorenzFields(_) => Some((
                observed.iter().map(|&j| self.initial_mean[j]).collect(),
                observed.iter().map(|&j| self.initial_sd[j]).collect(),
            )),
        }
    }

    /// One draw `u₀ ~ N(m₀, P₀)` at scale `scale` (host, `f64`).
    pub fn initial_draw(&self, scale: f64, normal: &mut impl FnMut() -> f64) -> Vec<f64> {
        match &self.setup {
            SequenceSetup::AdvectionVideo(s) => {
                PeriodicGaussian::new(s.nodes, scale, s.initial_length, Self::initial_jitter(s))
                    .draw(normal)
            }
            SequenceSetup::LorenzFields(_) => self
                .initial_mean
                .iter()
                .zip(&self.initial_sd)
                .map(|(m, sd)| m + scale * sd * normal())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_up_tables_round_trip_and_default_to_advection() {
        let a: SequenceSetup = toml::from_str::<toml::Table>("nodes = 16\nframes = 7")
            .unwrap()
            .try_into()
            .unwrap();
        match a {
            SequenceSetup::AdvectionVideo(s) => assert_eq!((s.nodes, s.frames), (16, 7)),
            other => panic!("expected advection, got {other:?}"),
        }
        let l: SequenceSetup =
            toml::from_str::<toml::Table>("problem = \"lorenz-fields\"\nwidth = 8")
                .unwrap()
                .try_into()
                .unwrap();
        assert_eq!(l.frame_shape(), vec![3, 8, 8]);
        assert_eq!(l.sample_shape(), vec![40, 3, 8, 8]);
        let back = SequenceSetup::try_from(toml::Table::from(l)).unwrap();
        assert_eq!(back, l);
        let e = SequenceSetup::try_from(
            toml::from_str::<toml::Table>("problem = \"lorenz-fields\"\nnodes = 8").unwrap(),
        )
        .unwrap_err();
        assert!(e.contains("lorenz-fields") && e.contains("nodes"), "{e}");
        let e =
            SequenceSetup::try_from(toml::from_str::<toml::Table>("problem = \"kdv\"").unwrap())
                .unwrap_err();
        assert!(e.contains("kdv"), "{e}");
    }

    #[test]
    fn lorenz_initial_state_is_the_attractors_and_the_prior_is_log_normal() {
        let setup = SequenceSetup::LorenzFields(LorenzFieldsSettings::default());
        let p = setup.prior();
        assert_eq!(p.scale, vec![ParameterScale::Log; 3]);
        assert!((p.mean[1] - 28f64.ln()).abs() < 1e-12);
        let m = SequenceModel::new(setup).unwrap();
        // The moments of the generator's own u₀ (the same 256 streams of seed 0), Z around
        // ρ − 4 and spreads of the attractor's ±8.
        let SequenceSetup::LorenzFields(l) = setup else {
            unreachable!()
        };
        let g = l.generate(256, 0).unwrap();
        let per = (l.frames + 1) * 3;
        for j in 0..3 {
            let u0: Vec<f64> = (0..256).map(|i| g.states[i * per + j]).collect();
            let mean = u0.iter().sum::<f64>() / 256.0;
            let var = u0.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 255.0;
            assert!((m.initial_mean[j] - mean).abs() < 1e-9);
            assert!((m.initial_sd[j] - var.sqrt()).abs() < 1e-9);
            assert!((4.0..12.0).contains(&m.initial_sd[j]), "{:?}", m.initial_sd);
        }
        assert!(
            (m.initial_mean[2] - 24.0).abs() < 3.0,
            "{:?}",
            m.initial_mean
        );
        let device = Device::flex();
        let scale = Tensor::<1>::from_data(TensorData::new(vec![2.0], [1]), &device);
        let (_, cov) = m.initial(scale);
        let c = crate::host::values(cov);
        assert!((c[0] - 4.0 * m.initial_sd[0].powi(2)).abs() < 1e-3 * c[0]);
        assert_eq!(c[1], 0.0);
    }
}
