//! Time-series data sets with latent physics, for dynamical latent models (Φ-DVAE, primer
//! eqs. 23–24): the latent state follows a known discretised PDE with unknown parameters and
//! is seen only through rendered image frames.
//!
//! **Advection from video** ([`AdvectionVideoSettings`]): per sequence, `Λ = (c, D)` from the
//! prior (`c ~ N(c_mean, c_sd²)`, `log D ~ N(log_d_mean, log_d_sd²)`), an initial profile
//! `u_0 ~ N(0, P₀)` on a periodic grid (P₀ a periodic squared-exponential covariance plus
//! [`COVARIANCE_JITTER`]), and
//!
//! ```text
//! u_n = M(c, D) u_{n−1} + e_n,   e_n ~ N(0, Q)          (exact spectral step, varphi_physics::dynamics)
//! y_n[r, j] = exp(−(v_r − u_n[j])² / (2 w²)) + σ_pix ε   (frame n: the profile drawn as a curve)
//! ```
//!
//! with `v_r` the value at pixel row `r` of `height` rows spanning `value_range` (row 0 at the
//! top: the largest value) and column `j` at node `j`. `P₀` and `Q` are the covariances a
//! Kalman filter of the same model assumes, so a model that inverts the rendering can be
//! calibrated exactly. Frames `y_1 … y_N` are the samples (`[N, height, nodes]`), `(c, D)` the
//! conditions, and the states `u_0 … u_N` the truth for scoring latent trajectories.
//!
//! **Lorenz-63 from fields** ([`LorenzFieldsSettings`]): the Lorenz state `(X, Y, Z)` with
//! `(σ, ρ, β)` from a log-normal prior, seen through the Rayleigh–Bénard convection fields whose
//! Galerkin truncation the Lorenz equations are (Saltzman 1962; Lorenz 1963), on the cell
//! `x ∈ [0, 2/a]`, `z ∈ [0, 1]`, `a = 1/√2`:
//!
//! ```text
//! ψ = X sin(π a x) sin(π z) / s,   θ = (√2 Y cos(π a x) sin(π z) − Z sin(2π z)) / s
//! u = −∂ψ/∂z,  w = ∂ψ/∂x            (frame channels: u, w, θ at cell centres, + noise)
//! ```
//!
//! with a fixed scale `s` that keeps the fields O(1). The state starts from a spin-up of the
//! sequence's own attractor and follows the RK4 map plus isotropic process noise.
//!
//! Sequence `i` uses its own ChaCha8 stream `(seed, i + 1)`: the first `m` sequences of a
//! larger set equal a set of `m`, whatever the threads.

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::npy::save_npz_f64;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use std::path::Path;
use varphi_physics::dynamics::{Dynamics, Lorenz63, PeriodicAdvection, periodic_se_kernel_host};

/// The jitter of `P₀` and `Q`, relative to their variance `s²`: both are the periodic
/// squared-exponential kernel plus `COVARIANCE_JITTER · s² · I` (here and in a filter of the
/// same model), which keeps them positive definite in `f32`.
pub const COVARIANCE_JITTER: f64 = 1e-4;

/// Settings of the advection-from-video data set (module docs); the defaults are the shipped
/// set-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvectionVideoSettings {
    /// Grid nodes of the periodic unit interval (even), also the frame width.
    pub nodes: usize,
    /// Frames `N` per sequence.
    pub frames: usize,
    /// Time between frames.
    pub dt: f64,
    /// Frame height in pixels.
    pub height: usize,
    /// Values `[lo, hi]` spanned by the frame's rows.
    pub value_range: [f64; 2],
    /// Width `w` of the drawn curve, in value units.
    pub line_width: f64,
    /// Pixel noise σ_pix.
    pub pixel_sigma: f64,
    /// Prior mean of the speed `c`.
    pub c_mean: f64,
    /// Prior sd of `c`.
    pub c_sd: f64,
    /// Prior mean of `log D`.
    pub log_d_mean: f64,
    /// Prior sd of `log D`.
    pub log_d_sd: f64,
    /// Scale of the initial covariance `P₀`.
    pub initial_scale: f64,
    /// Length of `P₀` (fraction of the domain).
    pub initial_length: f64,
    /// Scale of the process noise `Q`.
    pub process_scale: f64,
    /// Length of `Q`.
    pub process_length: f64,
}

impl Default for AdvectionVideoSettings {
    fn default() -> Self {
        Self {
            nodes: 32,
            frames: 20,
            dt: 0.05,
            height: 20,
            value_range: [-3.5, 3.5],
            line_width: 0.5,
            pixel_sigma: 0.05,
            c_mean: 0.5,
            c_sd: 0.25,
            log_d_mean: 0.002f64.ln(),
            log_d_sd: 0.5,
            initial_scale: 1.0,
            initial_length: 0.1,
            process_scale: 0.05,
            process_length: 0.1,
        }
    }
}

/// The generated sequences, row-major `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequences {
    /// Sequences generated.
    pub n: usize,
    /// `[n, N, height, nodes]`.
    pub frames: Vec<f64>,
    /// `[n, N + 1, nodes]`: `u_0 … u_N`.
    pub states: Vec<f64>,
    /// `[n, 2]`: `(c, D)`.
    pub params: Vec<f64>,
}

impl AdvectionVideoSettings {
    /// Parameter names.
    pub const PARAM_NAMES: [&'static str; 2] = ["c", "D"];

    /// Check the settings; the error names the key.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |key: &'static str, message: String| Err(DataError::Invalid { key, message });
        if self.nodes < 4 || !self.nodes.is_multiple_of(2) {
            return bad(
                "settings.nodes",
                format!("must be even and at least 4, got {}", self.nodes),
            );
        }
        if self.frames < 2 {
            return bad(
                "settings.frames",
                format!("must be at least 2, got {}", self.frames),
            );
        }
        if self.height < 2 {
            return bad(
                "settings.height",
                format!("must be at least 2 pixels, got {}", self.height),
            );
        }
        let [lo, hi] = self.value_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return bad(
                "settings.value_range",
                format!("must be [lo, hi] with lo < hi, got {:?}", self.value_range),
            );
        }
        for (key, v) in [
            ("settings.dt", self.dt),
            ("settings.line_width", self.line_width),
            ("settings.c_sd", self.c_sd),
            ("settings.log_d_sd", self.log_d_sd),
            ("settings.initial_scale", self.initial_scale),
            ("settings.initial_length", self.initial_length),
            ("settings.process_length", self.process_length),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(key, format!("must be finite and > 0, got {v}"));
            }
        }
        for (key, v) in [
            ("settings.pixel_sigma", self.pixel_sigma),
            ("settings.process_scale", self.process_scale),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(key, format!("must be finite and ≥ 0, got {v}"));
            }
        }
        for (key, v) in [
            ("settings.c_mean", self.c_mean),
            ("settings.log_d_mean", self.log_d_mean),
        ] {
            if !v.is_finite() {
                return bad(key, format!("must be finite, got {v}"));
            }
        }
        Ok(())
    }

    /// The transition of the latent state.
    pub fn dynamics(&self) -> PeriodicAdvection {
        PeriodicAdvection::new(self.nodes, self.dt)
    }

    /// Shape of one sample: `[N, height, nodes]`.
    pub fn sample_shape(&self) -> Vec<usize> {
        vec![self.frames, self.height, self.nodes]
    }

    /// Pixel rows' values `v_r`, top (largest) first.
    pub fn row_values(&self) -> Vec<f64> {
        let [lo, hi] = self.value_range;
        (0..self.height)
            .map(|r| hi - (r as f64 + 0.5) / self.height as f64 * (hi - lo))
            .collect()
    }

    /// The noiseless frame of profile `u` (`[height, nodes]`, row-major).
    pub fn render(&self, u: &[f64]) -> Vec<f64> {
        let w2 = 2.0 * self.line_width * self.line_width;
        self.row_values()
            .iter()
            .flat_map(|v| u.iter().map(move |uj| (-(v - uj).powi(2) / w2).exp()))
            .collect()
    }

    /// Sequences `0 … n−1` (module docs).
    pub fn generate(&self, n: usize, seed: u64) -> Result<Sequences, DataError> {
        self.validate()?;
        if n == 0 {
            return Err(DataError::Invalid {
                key: "n",
                message: "must be at least 1".into(),
            });
        }
        let (d, steps, px) = (self.nodes, self.frames, self.height * self.nodes);
        crate::memory::check(
            (n * (steps * px + (steps + 1) * d + 2) * 8 * 2) as u128,
            &format!("{n} advection-video sequences of {steps} frames"),
            "lower the number of sequences (n in [data])",
        )?;
        let dynamics = self.dynamics();
        let jittered = |scale: f64, length: f64| {
            PeriodicGaussian::new(d, scale, length, COVARIANCE_JITTER * scale * scale)
        };
        let p0 = jittered(self.initial_scale, self.initial_length);
        let q = jittered(self.process_scale, self.process_length);
        let mut out = Sequences {
            n,
            frames: Vec::with_capacity(n * steps * px),
            states: Vec::with_capacity(n * (steps + 1) * d),
            params: Vec::with_capacity(2 * n),
        };
        for i in 0..n {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i as u64 + 1);
            let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
            let c = self.c_mean + self.c_sd * normal();
            let diffusivity = (self.log_d_mean + self.log_d_sd * normal()).exp();
            let lambda = [c, diffusivity];
            let mut u = p0.draw(&mut normal);
            out.states.extend(&u);
            for _ in 0..steps {
                let e = q.draw(&mut normal);
                u = dynamics
                    .step_host(&u, &lambda)
                    .iter()
                    .zip(&e)
                    .map(|(a, b)| a + b)
                    .collect();
                out.states.extend(&u);
                let frame = self.render(&u);
                out.frames
                    .extend(frame.iter().map(|v| v + self.pixel_sigma * normal()));
            }
            out.params.extend(lambda);
        }
        Ok(out)
    }

    /// Write `seqs` (generated with `seed`) to `path` (`.npz`: `frames [n, N, height, nodes]`,
    /// `states [n, N + 1, nodes]`, `params [n, 2]`, `x [nodes]`, `t [N + 1]`,
    /// `row_values [height]`) and the settings to `path` with extension `.json`. A config
    /// trains on it with `[data] kind = "npz"`, `x_key = "frames"`, `cond_key = "params"` and
    /// these settings as `[objective.setup]`.
    pub fn write(&self, seqs: &Sequences, seed: u64, path: &Path) -> Result<(), DataError> {
        let (n, steps, d) = (seqs.n, self.frames, self.nodes);
        let x: Vec<f64> = (0..d).map(|j| j as f64 / d as f64).collect();
        let t: Vec<f64> = (0..=steps).map(|k| k as f64 * self.dt).collect();
        let rows = self.row_values();
        write_archive(
            path,
            &[
                ("frames", vec![n, steps, self.height, d], &seqs.frames),
                ("states", vec![n, steps + 1, d], &seqs.states),
                ("params", vec![n, 2], &seqs.params),
                ("x", vec![d], &x),
                ("t", vec![steps + 1], &t),
                ("row_values", vec![self.height], &rows),
            ],
            serde_json::json!({
                "problem": "advection-video",
                "n": n,
                "seed": seed,
                "settings": self,
                "param_names": Self::PARAM_NAMES,
            }),
        )
    }

    /// The frames of `n` sequences as a [`Dataset`] conditioned on `(c, D)`.
    pub fn dataset(&self, n: usize, seed: u64) -> Result<Dataset, DataError> {
        let s = self.generate(n, seed)?;
        Dataset::new(s.frames, self.sample_shape(), s.params, 2)
    }
}

/// Settings of the Lorenz-63-from-fields data set (module docs); the defaults are the shipped
/// set-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LorenzFieldsSettings {
    /// Frames `N` per sequence.
    pub frames: usize,
    /// Time between frames.
    pub dt: f64,
    /// RK4 steps per frame.
    pub substeps: usize,
    /// Spin-up time before the first state (from `(1, 1, 1)` plus noise).
    pub spin_up: f64,
    /// Grid cells across the convection cell (frame width).
    pub width: usize,
    /// Grid cells in height.
    pub height: usize,
    /// Field noise σ.
    pub field_sigma: f64,
    /// Prior medians of `(σ, ρ, β)`.
    pub median: [f64; 3],
    /// Prior sds of `(log σ, log ρ, log β)`.
    pub log_sd: [f64; 3],
    /// Process-noise sd per step (isotropic `Q`).
    pub process_sd: f64,
}

impl Default for LorenzFieldsSettings {
    fn default() -> Self {
        Self {
            frames: 40,
            dt: 0.02,
            substeps: 2,
            spin_up: 5.0,
            width: 16,
            height: 8,
            field_sigma: 0.05,
            median: Lorenz63::CLASSICAL,
            log_sd: [0.1, 0.1, 0.1],
            process_sd: 0.05,
        }
    }
}

/// The field scale `s` of [`LorenzFieldsSettings::render`].
const FIELD_SCALE: f64 = 20.0;

impl LorenzFieldsSettings {
    /// Parameter names.
    pub const PARAM_NAMES: [&'static str; 3] = ["sigma", "rho", "beta"];
    /// The aspect of the critical mode, `a = 1/√2`.
    pub const ASPECT: f64 = std::f64::consts::FRAC_1_SQRT_2;

    /// Check the settings; the error names the key.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |key: &'static str, message: String| Err(DataError::Invalid { key, message });
        for (key, v, least) in [
            ("settings.frames", self.frames, 2),
            ("settings.substeps", self.substeps, 1),
            ("settings.width", self.width, 2),
            ("settings.height", self.height, 2),
        ] {
            if v < least {
                return bad(key, format!("must be at least {least}, got {v}"));
            }
        }
        for (key, v) in [("settings.dt", self.dt)]
            .into_iter()
            .chain(self.median.iter().map(|m| ("settings.median", *m)))
            .chain(self.log_sd.iter().map(|m| ("settings.log_sd", *m)))
        {
            if !(v.is_finite() && v > 0.0) {
                return bad(key, format!("must be finite and > 0, got {v}"));
            }
        }
        for (key, v) in [
            ("settings.spin_up", self.spin_up),
            ("settings.field_sigma", self.field_sigma),
            ("settings.process_sd", self.process_sd),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(key, format!("must be finite and ≥ 0, got {v}"));
            }
        }
        Ok(())
    }

    /// The transition of the latent state.
    pub fn dynamics(&self) -> Lorenz63 {
        Lorenz63 {
            dt: self.dt,
            substeps: self.substeps,
        }
    }

    /// Shape of one sample: `[N, 3, height, width]` (channels `u`, `w`, `θ`).
    pub fn sample_shape(&self) -> Vec<usize> {
        vec![self.frames, 3, self.height, self.width]
    }

    /// The noiseless fields `(u, w, θ)` of state `(X, Y, Z)` at the cell centres,
    /// `[3, height, width]` row-major (row 0 at the bottom, `z` small).
    pub fn render(&self, state: &[f64]) -> Vec<f64> {
        let (x_, y_, z_) = (state[0], state[1], state[2]);
        let a = Self::ASPECT;
        let pi = PI;
        let (h, w) = (self.height, self.width);
        let mut out = vec![0.0; 3 * h * w];
        for r in 0..h {
            let z = (r as f64 + 0.5) / h as f64;
            for c in 0..w {
                let x = (c as f64 + 0.5) / w as f64 * (2.0 / a);
                let (sx, cx) = ((pi * a * x).sin(), (pi * a * x).cos());
                let (sz, cz) = ((pi * z).sin(), (pi * z).cos());
                let k = r * w + c;
                out[k] = -x_ * sx * pi * cz / FIELD_SCALE;
                out[h * w + k] = x_ * pi * a * cx * sz / FIELD_SCALE;
                out[2 * h * w + k] =
                    (2f64.sqrt() * y_ * cx * sz - z_ * (2.0 * pi * z).sin()) / FIELD_SCALE;
            }
        }
        out
    }

    /// Sequences `0 … n−1` (module docs): frames `[n, N, 3, height, width]`, states
    /// `[n, N + 1, 3]`, params `[n, 3]`.
    pub fn generate(&self, n: usize, seed: u64) -> Result<Sequences, DataError> {
        self.validate()?;
        if n == 0 {
            return Err(DataError::Invalid {
                key: "n",
                message: "must be at least 1".into(),
            });
        }
        let px = 3 * self.height * self.width;
        crate::memory::check(
            (n * (self.frames * px + (self.frames + 1) * 3 + 3) * 8 * 2) as u128,
            &format!("{n} lorenz-fields sequences of {} frames", self.frames),
            "lower the number of sequences (n in [data])",
        )?;
        let dynamics = self.dynamics();
        let spin = (self.spin_up / self.dt).round() as usize;
        let mut out = Sequences {
            n,
            frames: Vec::with_capacity(n * self.frames * px),
            states: Vec::with_capacity(n * (self.frames + 1) * 3),
            params: Vec::with_capacity(3 * n),
        };
        for i in 0..n {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i as u64 + 1);
            let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
            let lambda: Vec<f64> = (0..3)
                .map(|j| (self.median[j].ln() + self.log_sd[j] * normal()).exp())
                .collect();
            let mut u: Vec<f64> = (0..3).map(|_| 1.0 + normal()).collect();
            for _ in 0..spin {
                u = dynamics.step_host(&u, &lambda);
            }
            out.states.extend(&u);
            for _ in 0..self.frames {
                u = dynamics
                    .step_host(&u, &lambda)
                    .iter()
                    .map(|v| v + self.process_sd * normal())
                    .collect();
                out.states.extend(&u);
                out.frames.extend(
                    self.render(&u)
                        .iter()
                        .map(|v| v + self.field_sigma * normal()),
                );
            }
            out.params.extend(lambda);
        }
        Ok(out)
    }

    /// Write `seqs` (generated with `seed`) to `path` (`.npz`: `frames [n, N, 3, height,
    /// width]`, `states [n, N + 1, 3]`, `params [n, 3]`, `t [N + 1]`) with a `.json` sidecar.
    pub fn write(&self, seqs: &Sequences, seed: u64, path: &Path) -> Result<(), DataError> {
        let n = seqs.n;
        let t: Vec<f64> = (0..=self.frames).map(|k| k as f64 * self.dt).collect();
        write_archive(
            path,
            &[
                (
                    "frames",
                    vec![n, self.frames, 3, self.height, self.width],
                    &seqs.frames,
                ),
                ("states", vec![n, self.frames + 1, 3], &seqs.states),
                ("params", vec![n, 3], &seqs.params),
                ("t", vec![self.frames + 1], &t),
            ],
            serde_json::json!({
                "problem": "lorenz-fields",
                "n": n,
                "seed": seed,
                "settings": self,
                "param_names": Self::PARAM_NAMES,
                "channels": ["u", "w", "theta"],
            }),
        )
    }

    /// Mean and variance per component of the spun-up state `u_0` over the prior (sequences
    /// `0 … 255` of seed 0 of [`LorenzFieldsSettings::generate`]): the Gaussian `P₀` a filter
    /// of this set-up starts from. (A spin-up of 5 time units from near `(1, 1, 1)` visits the
    /// two wings unevenly: for the defaults `X`, `Y` have mean ≈ −7, sds ≈ 8, `Z` ≈ 26 ± 8.)
    pub fn initial_moments(&self) -> Result<([f64; 3], [f64; 3]), DataError> {
        const DRAWS: usize = 256;
        let g = self.generate(DRAWS, 0)?;
        let per = (self.frames + 1) * 3;
        let k = DRAWS as f64;
        let mean = [0, 1, 2].map(|j| (0..DRAWS).map(|i| g.states[i * per + j]).sum::<f64>() / k);
        let var = [0, 1, 2].map(|j| {
            (0..DRAWS)
                .map(|i| (g.states[i * per + j] - mean[j]).powi(2))
                .sum::<f64>()
                / (k - 1.0)
        });
        Ok((mean, var))
    }

    /// The frames of `n` sequences as a [`Dataset`] conditioned on `(σ, ρ, β)`.
    pub fn dataset(&self, n: usize, seed: u64) -> Result<Dataset, DataError> {
        let s = self.generate(n, seed)?;
        Dataset::new(s.frames, self.sample_shape(), s.params, 3)
    }
}

/// `arrays` into the `.npz` archive `path` (through a temporary file, so an interrupted write
/// leaves no truncated archive) and `meta` plus the arrays' shapes into the `.json` sidecar.
fn write_archive(
    path: &Path,
    arrays: &[(&str, Vec<usize>, &[f64])],
    mut meta: serde_json::Value,
) -> Result<(), DataError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| DataError::Write { path: p, source: e }
    };
    let view: Vec<(&str, &[usize], &[f64])> = arrays
        .iter()
        .map(|(name, shape, data)| (*name, shape.as_slice(), *data))
        .collect();
    let tmp = path.with_extension("npz.partial");
    save_npz_f64(&tmp, &view).map_err(io(path))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    meta["generator"] = format!("varphi {}", env!("CARGO_PKG_VERSION")).into();
    meta["dtype"] = "float64".into();
    meta["arrays"] = arrays
        .iter()
        .map(|(name, shape, _)| (name.to_string(), serde_json::json!(shape)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let side = path.with_extension("json");
    std::fs::write(&side, serde_json::to_string_pretty(&meta).expect("json")).map_err(io(&side))
}

/// `N(0, K + jitter·I)` on `n` nodes of the periodic unit interval, `K` the periodic
/// squared-exponential kernel of [`periodic_se_kernel_host`], drawn exactly through the real
/// Fourier basis that diagonalises every circulant matrix (no factorisation).
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodicGaussian {
    lambda: Vec<f64>,
}

impl PeriodicGaussian {
    /// The Gaussian of kernel scale `scale`, length `length` plus `jitter·I` on `n` (even) nodes.
    pub fn new(n: usize, scale: f64, length: f64, jitter: f64) -> Self {
        Self {
            lambda: spectrum(&periodic_se_kernel_host(n, scale, length))
                .iter()
                .map(|l| l + jitter)
                .collect(),
        }
    }

    /// One draw, from the standard normals `normal` yields.
    pub fn draw(&self, normal: &mut impl FnMut() -> f64) -> Vec<f64> {
        circulant_sample(&self.lambda, normal)
    }
}

/// The eigenvalues of a symmetric circulant matrix with first row `row`, in the real Fourier
/// basis order `q = 0 … n−1` (`λ_q = Σ_s c(s) cos(2π q s / n)`), clamped at 0.
fn spectrum(row: &[f64]) -> Vec<f64> {
    let n = row.len();
    (0..n)
        .map(|q| {
            row.iter()
                .enumerate()
                .map(|(s, c)| c * (2.0 * PI * (q * s) as f64 / n as f64).cos())
                .sum::<f64>()
                .max(0.0)
        })
        .collect()
}

/// A draw of `N(0, C)` for the symmetric circulant `C` of eigenvalues `lambda` ([`spectrum`]):
/// `u = Σ_q √λ_q ξ_q e_q` over the real orthonormal Fourier basis (`1/√n`, `√(2/n) cos`,
/// `√(2/n) sin`, `(−1)^j/√n`), exact for any even `n`.
fn circulant_sample(lambda: &[f64], normal: &mut impl FnMut() -> f64) -> Vec<f64> {
    let n = lambda.len();
    let mut u = vec![0.0; n];
    let inv = 1.0 / (n as f64).sqrt();
    let two = (2.0 / n as f64).sqrt();
    let a0 = lambda[0].sqrt() * normal() * inv;
    u.iter_mut().for_each(|v| *v += a0);
    for (q, l) in lambda.iter().enumerate().take(n / 2).skip(1) {
        let (a, b) = (l.sqrt() * normal() * two, l.sqrt() * normal() * two);
        for (j, v) in u.iter_mut().enumerate() {
            let t = 2.0 * PI * (q * j) as f64 / n as f64;
            *v += a * t.cos() + b * t.sin();
        }
    }
    let an = lambda[n / 2].sqrt() * normal() * inv;
    for (j, v) in u.iter_mut().enumerate() {
        *v += if j % 2 == 0 { an } else { -an };
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circulant_draws_have_the_covariance_of_the_kernel() {
        // The empirical covariance of 40 000 draws equals the circulant SE matrix within
        // sampling error (sd of a covariance estimate ≈ √(2/N) · s² ≈ 0.007).
        let n = 8;
        let row = periodic_se_kernel_host(n, 1.0, 0.15);
        let lambda = spectrum(&row);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
        let draws = 40_000;
        let mut cov = vec![0.0; n * n];
        for _ in 0..draws {
            let u = circulant_sample(&lambda, &mut normal);
            for j in 0..n {
                for l in 0..n {
                    cov[j * n + l] += u[j] * u[l] / draws as f64;
                }
            }
        }
        for j in 0..n {
            for l in 0..n {
                let want = row[(l + n - j) % n];
                let got = cov[j * n + l];
                assert!(
                    (got - want).abs() < 0.035,
                    "C[{j},{l}] = {got}, want {want}"
                );
            }
        }
    }

    /// Without noise, every state of `g` is the transition of the previous one (1e-12) and
    /// every frame the rendering of its state; `[d, p, N]`: state and parameter widths, frames.
    fn follows(
        g: &Sequences,
        dynamics: &dyn Dynamics,
        render: &dyn Fn(&[f64]) -> Vec<f64>,
        [d, p, steps]: [usize; 3],
    ) {
        let px = g.frames.len() / (g.n * steps);
        for i in 0..g.n {
            let lambda = &g.params[p * i..p * (i + 1)];
            for k in 0..steps {
                let u0 = &g.states[(i * (steps + 1) + k) * d..][..d];
                let u1 = &g.states[(i * (steps + 1) + k + 1) * d..][..d];
                for (a, b) in dynamics.step_host(u0, lambda).iter().zip(u1) {
                    assert!((a - b).abs() < 1e-12, "sequence {i}, step {k}");
                }
                assert_eq!(
                    &g.frames[(i * steps + k) * px..][..px],
                    render(u1).as_slice()
                );
            }
        }
    }

    #[test]
    fn sequences_follow_the_dynamics_and_the_frames_draw_the_states() {
        let s = AdvectionVideoSettings {
            process_scale: 0.0,
            pixel_sigma: 0.0,
            ..Default::default()
        };
        let g = s.generate(3, 7).unwrap();
        let (d, px) = (s.nodes, s.height * s.nodes);
        follows(&g, &s.dynamics(), &|u| s.render(u), [d, 2, s.frames]);
        // The brightest row of each column is the row whose value is nearest the state.
        let rows = s.row_values();
        let u = &g.states[d..2 * d];
        let frame = &g.frames[..px];
        for j in 0..d {
            let best = (0..s.height)
                .max_by(|&a, &b| frame[a * d + j].total_cmp(&frame[b * d + j]))
                .unwrap();
            let nearest = (0..s.height)
                .min_by(|&a, &b| (rows[a] - u[j]).abs().total_cmp(&(rows[b] - u[j]).abs()))
                .unwrap();
            assert_eq!(best, nearest, "column {j}");
        }
        // Prefixes agree; another seed differs.
        let more = s.generate(5, 7).unwrap();
        assert_eq!(&more.frames[..g.frames.len()], g.frames.as_slice());
        assert_ne!(s.generate(3, 8).unwrap().params, g.params);
    }

    #[test]
    fn lorenz_fields_are_the_rayleigh_benard_modes_of_the_lorenz_state() {
        let s = LorenzFieldsSettings {
            process_sd: 0.0,
            field_sigma: 0.0,
            ..Default::default()
        };
        let g = s.generate(2, 5).unwrap();
        follows(&g, &s.dynamics(), &|u| s.render(u), [3, 3, s.frames]);
        // On the attractor after the spin-up: Z of order ρ − 1, |X| of order √(β(ρ − 1)).
        let z: Vec<f64> = g.states.iter().skip(2).step_by(3).copied().collect();
        assert!(z.iter().all(|z| *z > 0.0 && *z < 60.0), "{z:?}");
        // The velocity is divergence-free (central differences of the cell-centre values,
        // second order) and θ's modes return (Y, Z) by projection.
        let fine = LorenzFieldsSettings {
            width: 64,
            height: 32,
            ..s
        };
        let state = [7.0, -3.0, 21.0];
        let f = fine.render(&state);
        let (fh, fw) = (fine.height, fine.width);
        let (dx, dz) = (
            2.0 / LorenzFieldsSettings::ASPECT / fw as f64,
            1.0 / fh as f64,
        );
        let at = |ch: usize, r: usize, c: usize| f[ch * fh * fw + r * fw + c];
        let mut worst: f64 = 0.0;
        for r in 1..fh - 1 {
            for c in 1..fw - 1 {
                let div = (at(0, r, c + 1) - at(0, r, c - 1)) / (2.0 * dx)
                    + (at(1, r + 1, c) - at(1, r - 1, c)) / (2.0 * dz);
                worst = worst.max(div.abs());
            }
        }
        assert!(worst < 0.01, "max |∇·(u, w)| = {worst}");
        let (mut py, mut pz, mut ny, mut nz) = (0.0, 0.0, 0.0, 0.0);
        for r in 0..fh {
            let z = (r as f64 + 0.5) / fh as f64;
            for c in 0..fw {
                let x = (c as f64 + 0.5) / fw as f64 * (2.0 / LorenzFieldsSettings::ASPECT);
                let ey =
                    2f64.sqrt() * (PI * LorenzFieldsSettings::ASPECT * x).cos() * (PI * z).sin();
                let ez = -(2.0 * PI * z).sin();
                py += at(2, r, c) * ey;
                ny += ey * ey;
                pz += at(2, r, c) * ez;
                nz += ez * ez;
            }
        }
        let (y, zz) = (py / ny * FIELD_SCALE, pz / nz * FIELD_SCALE);
        assert!(
            (y - state[1]).abs() < 1e-9 && (zz - state[2]).abs() < 1e-9,
            "{y} {zz}"
        );
        let e = LorenzFieldsSettings {
            frames: 1,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("settings.frames"), "{e}");
    }

    #[test]
    fn bad_settings_name_the_key() {
        for (s, key) in [
            (
                AdvectionVideoSettings {
                    nodes: 31,
                    ..Default::default()
                },
                "settings.nodes",
            ),
            (
                AdvectionVideoSettings {
                    frames: 1,
                    ..Default::default()
                },
                "settings.frames",
            ),
            (
                AdvectionVideoSettings {
                    value_range: [1.0, -1.0],
                    ..Default::default()
                },
                "settings.value_range",
            ),
            (
                AdvectionVideoSettings {
                    dt: f64::NAN,
                    ..Default::default()
                },
                "settings.dt",
            ),
        ] {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
