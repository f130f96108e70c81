//! `varphi infer`: Bayes VI (primer eqs. 10–12) with the physics in the likelihood. For each of
//! `n` test cases a true parameter field is drawn from the prior, its solution observed at
//! `count` nodes with noise `σ_y`, and a non-amortised Gaussian `q(ξ)` over the whitened
//! parameters (`z = T(ξ)`, `ξ ~ N(0, I)`) is fitted by maximising
//!
//! ```text
//! ELBO(q) = E_q[ log N(y; H u*(T(ξ)), σ_y² I) ] − KL(q(ξ) ‖ N(0, I))
//! ```
//! where `u*` is the reference solver's solution, differentiated by the adjoint method
//! ([`varphi_physics::pde::Darcy::adjoint_pullback`]): no surrogate, no unrolled solver.
//! Posterior samples and scores against the true field are written to the output folder.
//!
//! With `[prior] kind = "dgp"` (a deep generative prior, primer eq. 26, VI-DGP) the latents
//! are those of a VAE trained beforehand on coefficient fields (`run = "<run dir>"`): `z =
//! f_θ*(w)` is the frozen decoder's mean, `q(w)` the fitted family, and the true fields are drawn
//! from the problem's own prior (e.g. the two-phase field, which has no whitened form).

use crate::backend::{BackendKind, Precision, select_device};
use crate::config::{parse_toml, read_config};
use crate::error::{TrainError, io_err};
use crate::noise::NoiseSource;
use crate::observations::ObservationsSection;
use crate::trainer::cosine_lr;
use crate::uq::{self, UqScores};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use varphi_data::DataSource;
use varphi_data::physics::{Observations, PhysicsSettings, observation_indices};
use varphi_losses::{ObservationLikelihood, ObservationOperator};
use varphi_models::{
    DiagGaussian, GaussianFamily, GaussianPosteriorConfig, RealNvp, RealNvpConfig,
    VariationalFamily,
};
use varphi_physics::pde::{Darcy, PdeResidual, PriorTransform, Problem};

/// A `varphi infer` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferConfig {
    /// Seed of the true fields, the observation noise, the sensors and the optimisation.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// The problem (`kind = "darcy"` with a log-normal coefficient); `n` = number of test cases.
    pub data: DataSource,
    /// Sensors and their noise.
    pub observations: ObservationsSection,
    /// The variational family.
    #[serde(default)]
    pub posterior: PosteriorSection,
    /// Adam settings.
    #[serde(default)]
    pub optimizer: InferOptimizer,
    /// Where the latents live: the problem's whitened prior (default) or a deep generative
    /// prior.
    #[serde(default)]
    pub prior: PriorSection,
}

/// `[prior]` of `varphi infer`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorSection {
    /// `whitened` (default): `z = T(ξ)`, `ξ ~ N(0, I)`; `dgp`: `z = f_θ*(w)`, `w ~ N(0, I)`.
    #[serde(default)]
    pub kind: PriorKindName,
    /// `dgp`: the run folder of a VAE trained on coefficient fields (relative to the config).
    #[serde(default)]
    pub run: Option<std::path::PathBuf>,
}

/// Prior kinds of `varphi infer`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriorKindName {
    /// The problem's whitened prior.
    #[default]
    Whitened,
    /// A VAE decoder trained on parameter fields.
    Dgp,
}

fn d_seed() -> u64 {
    1
}

/// `[posterior]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PosteriorSection {
    /// `full-covariance` (default), `mean-field` or `low-rank` (with `rank`).
    #[serde(default = "d_family")]
    pub family: FamilyName,
    /// Columns of `B` in the `low-rank` family `N(μ, BBᵀ + diag σ²)`.
    #[serde(default)]
    pub rank: Option<usize>,
    /// Chi-shell weight `β` of the `map` family.
    #[serde(default = "d_chi_beta")]
    pub chi_beta: f64,
    /// Coupling layers of the `flow` family.
    #[serde(default = "d_flow_layers")]
    pub flow_layers: usize,
    /// Hidden widths of the `flow` family's coupling networks.
    #[serde(default = "d_flow_hidden")]
    pub hidden: Vec<usize>,
    /// Monte-Carlo particles per step.
    #[serde(default = "d_particles")]
    pub particles: usize,
    /// Posterior samples written and scored per case.
    #[serde(default = "d_samples")]
    pub samples: usize,
}

impl Default for PosteriorSection {
    fn default() -> Self {
        Self {
            family: d_family(),
            rank: None,
            chi_beta: d_chi_beta(),
            flow_layers: d_flow_layers(),
            hidden: d_flow_hidden(),
            particles: d_particles(),
            samples: d_samples(),
        }
    }
}

fn d_family() -> FamilyName {
    FamilyName::FullCovariance
}
fn d_chi_beta() -> f64 {
    1.0
}
fn d_flow_layers() -> usize {
    4
}
fn d_flow_hidden() -> Vec<usize> {
    vec![64, 64]
}
fn d_particles() -> usize {
    8
}
fn d_samples() -> usize {
    200
}

/// Family names in configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FamilyName {
    /// Full covariance (Cholesky).
    FullCovariance,
    /// Diagonal covariance.
    MeanField,
    /// Low rank plus diagonal, `N(μ, BBᵀ + diag σ²)` (`[posterior] rank`).
    LowRank,
    /// A RealNVP normalising flow (`[posterior] flow_layers`, `hidden`); the KL term by
    /// Monte Carlo, `E_q[log q(ξ) − log p(ξ)]`.
    Flow,
    /// A point estimate (primer eq. 25): `argmin_w ‖Hu*(w) − y‖²/2σ_y² + β(‖w‖ − μ_χ)²`, the
    /// chi-shell keeping `w` at a standard Gaussian's typical norm (`[posterior] chi_beta`).
    /// One particle; its "samples" are the point, so coverage is 0 and CRPS the absolute error.
    Map,
}

/// `[optimizer]` of `varphi infer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferOptimizer {
    /// Adam steps per case.
    #[serde(default = "d_steps")]
    pub steps: usize,
    /// Initial learning rate.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Final learning rate (cosine decay).
    #[serde(default = "d_lr_final")]
    pub lr_final: f64,
}

impl Default for InferOptimizer {
    fn default() -> Self {
        Self {
            steps: d_steps(),
            lr: d_lr(),
            lr_final: d_lr_final(),
        }
    }
}

fn d_steps() -> usize {
    1000
}
fn d_lr() -> f64 {
    0.02
}
fn d_lr_final() -> f64 {
    1e-4
}

fn solver_err(e: varphi_physics::PhysicsError) -> TrainError {
    TrainError::Invalid {
        key: "optimizer.lr".into(),
        message: format!(
            "the forward solve failed ({e}); a smaller learning rate keeps the fields in range"
        ),
    }
}

fn invalid(key: &str, message: impl Into<String>) -> TrainError {
    TrainError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl InferConfig {
    /// Read, parse and validate.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let config: InferConfig = parse_toml(&read_config(path)?, path)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), TrainError> {
        self.data.validate()?;
        let o = &self.observations;
        if !(o.sigma > 0.0 && o.sigma.is_finite()) {
            return Err(invalid(
                "observations.sigma",
                format!("must be > 0, got {}", o.sigma),
            ));
        }
        if o.count == Some(0) {
            return Err(invalid("observations.count", "must be at least 1"));
        }
        let p = &self.posterior;
        if p.particles == 0 || p.samples < 2 {
            return Err(invalid(
                "posterior",
                "particles must be ≥ 1 and samples ≥ 2",
            ));
        }
        if self.prior.kind == PriorKindName::Dgp && self.prior.run.is_none() {
            return Err(invalid(
                "prior.run",
                "kind = \"dgp\" needs run = \"<folder of a VAE trained on coefficient fields>\"",
            ));
        }
        match (p.family, p.rank) {
            (FamilyName::LowRank, None | Some(0)) => {
                return Err(invalid(
                    "posterior.rank",
                    "family = \"low-rank\" needs rank = k ≥ 1 (columns of B in BBᵀ + diag σ²)",
                ));
            }
            (
                FamilyName::FullCovariance
                | FamilyName::MeanField
                | FamilyName::Flow
                | FamilyName::Map,
                Some(_),
            ) => {
                return Err(invalid(
                    "posterior.rank",
                    "rank applies to family = \"low-rank\" only",
                ));
            }
            _ => {}
        }
        if !(p.chi_beta >= 0.0 && p.chi_beta.is_finite()) {
            return Err(invalid(
                "posterior.chi_beta",
                format!("must be finite and ≥ 0, got {}", p.chi_beta),
            ));
        }
        let t = &self.optimizer;
        if t.steps == 0 || !(t.lr > 0.0 && t.lr.is_finite()) || !(0.0..=t.lr).contains(&t.lr_final)
        {
            return Err(invalid(
                "optimizer",
                "needs steps ≥ 1, lr > 0 and 0 ≤ lr_final ≤ lr",
            ));
        }
        Ok(())
    }

    /// The Darcy problem and its whitened prior (the only forward map with an adjoint so far).
    fn problem(&self) -> Result<(Darcy, Option<PriorTransform>), TrainError> {
        let settings = match self.data.physics() {
            Some((_, PhysicsSettings::Darcy(s))) => s,
            _ => {
                return Err(invalid(
                    "data.kind",
                    "varphi infer needs an adjoint forward map: kind = \"darcy\" (the only one so far)",
                ));
            }
        };
        let darcy = Darcy::new(settings);
        if self.prior.kind == PriorKindName::Dgp {
            return Ok((darcy, None));
        }
        let transform = darcy.prior_transform().ok_or_else(|| {
            invalid(
                "data.settings.coefficient",
                "Bayes VI works on whitened parameters: use kind = \"log-normal\" (a thresholded two-phase field has no standard-normal map; [prior] kind = \"dgp\" learns one)",
            )
        })?;
        Ok((darcy, Some(transform)))
    }
}

/// Scores of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Posterior of the field `a` against the true field.
    pub posterior: UqScores,
    /// Prior on the same case (baseline).
    pub prior: UqScores,
    /// Final ELBO estimate (mean of the last 50 steps).
    pub elbo: f64,
}

/// `summary.json` of `varphi infer`.
#[derive(Debug, Clone, Serialize)]
pub struct InferSummary {
    /// Cases inverted.
    pub n_cases: usize,
    /// Sensors per case.
    pub n_obs: usize,
    /// Noise of the observations.
    pub obs_sigma: f64,
    /// Family used.
    pub family: FamilyName,
    /// Rank of a `low-rank` family.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// Mean over cases of the posterior scores (coverage per level averaged).
    pub posterior: UqScores,
    /// Mean over cases of the prior scores.
    pub prior: UqScores,
    /// SBC and TARP over the cases (each case's field a draw of the prior; ≥ 10 cases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posterior_checks: Option<crate::ranks::PosteriorChecks>,
    /// Each case.
    pub cases: Vec<CaseResult>,
    /// Wall time in seconds.
    pub wall_s: f64,
}

impl InferSummary {
    /// Print the posterior-vs-prior table and what was written to `out`.
    pub fn print(&self, out: &Path) {
        println!(
            "Bayes VI ({}) on {} cases, {} observations each (σ_y = {}), {:.1} s",
            match (self.family, self.rank) {
                (FamilyName::LowRank, Some(k)) => format!("low-rank, rank {k}"),
                (FamilyName::MeanField, _) => "mean-field".into(),
                (FamilyName::Flow, _) => "RealNVP flow".into(),
                (FamilyName::Map, _) => "MAP point with chi-shell".into(),
                _ => "full-covariance".into(),
            },
            self.n_cases,
            self.n_obs,
            self.obs_sigma,
            self.wall_s
        );
        println!("  metric                      posterior        prior");
        let (p, q) = (&self.posterior, &self.prior);
        println!(
            "  relative L2 of the mean  {:>12.5} {:>12.5}",
            p.rel_l2, q.rel_l2
        );
        println!("  NLL per entry            {:>12.5} {:>12.5}", p.nll, q.nll);
        println!(
            "  CRPS per entry           {:>12.5} {:>12.5}",
            p.crps, q.crps
        );
        for (level, c) in &p.coverage {
            let pct = level.parse::<f64>().unwrap_or(f64::NAN) * 100.0;
            let prior = crate::tables::coverage(q, level);
            println!(
                "  {:<24} {c:>12.5} {prior:>12.5}",
                format!("coverage {pct:.0} %")
            );
        }
        if let Some(c) = &self.posterior_checks {
            crate::tables::print_posterior_checks(c);
        }
        println!(
            "wrote {}/{{summary.json, samples.npy, truth.npy}}",
            out.display()
        );
    }
}

fn mean_scores(all: &[&UqScores]) -> UqScores {
    let n = all.len().max(1) as f64;
    let mean_map = |get: fn(&UqScores) -> &std::collections::BTreeMap<String, f64>| {
        let mut m = std::collections::BTreeMap::new();
        for s in all {
            for (k, v) in get(s) {
                *m.entry(k.clone()).or_insert(0.0) += v / n;
            }
        }
        m
    };
    let mean = |get: fn(&UqScores) -> f64| all.iter().map(|s| get(s)).sum::<f64>() / n;
    let bins = all.first().map_or(0, |s| s.pit.len());
    UqScores {
        rel_l2: mean(|s| s.rel_l2),
        nll: mean(|s| s.nll),
        crps: mean(|s| s.crps),
        coverage: mean_map(|s| &s.coverage),
        calibration_curve: mean_map(|s| &s.calibration_curve),
        calibration_error: mean(|s| s.calibration_error),
        width_90: mean(|s| s.width_90),
        pit: (0..bins)
            .map(|b| all.iter().map(|s| s.pit[b]).sum::<f64>() / n)
            .collect(),
        posterior_checks: None,
        recalibrated: None,
    }
}

/// One case's posterior and prior draws `[samples · nn]`, true field and final ELBO: what a
/// rank sends to rank 0, which scores them.
#[derive(Debug, Clone, PartialEq)]
struct CaseOutput {
    case: usize,
    elbo: f64,
    samples: Vec<f64>,
    prior: Vec<f64>,
    truth: Vec<f64>,
}

impl CaseOutput {
    /// `[case, elbo, samples…, prior…, truth…]` as little-endian `f64`.
    fn to_bytes(&self) -> Vec<u8> {
        self.to_values()
            .into_iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    /// `[case, elbo, samples…, prior…, truth…]`.
    fn to_values(&self) -> Vec<f64> {
        [self.case as f64, self.elbo]
            .iter()
            .chain(&self.samples)
            .chain(&self.prior)
            .chain(&self.truth)
            .copied()
            .collect()
    }

    /// The cases of [`CaseOutput::to_bytes`] concatenated, with `draws` samples · nodes and
    /// `nn` nodes each.
    fn all_from_bytes(bytes: &[u8], draws: usize, nn: usize) -> Vec<Self> {
        let v: Vec<f64> = bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Self::all_from_values(&v, draws, nn)
    }

    /// The cases of [`CaseOutput::to_values`] concatenated.
    fn all_from_values(v: &[f64], draws: usize, nn: usize) -> Vec<Self> {
        v.chunks_exact(2 + 2 * draws + nn)
            .map(|c| Self {
                case: c[0] as usize,
                elbo: c[1],
                samples: c[2..2 + draws].to_vec(),
                prior: c[2 + draws..2 + 2 * draws].to_vec(),
                truth: c[2 + 2 * draws..].to_vec(),
            })
            .collect()
    }

    /// The case's scores against its truth.
    fn result(&self, nn: usize) -> CaseResult {
        let rows = |v: &[f64]| -> Vec<Vec<f64>> { v.chunks(nn).map(|r| r.to_vec()).collect() };
        CaseResult {
            posterior: uq::score(&rows(&self.samples), &self.truth, &uq::LEVELS),
            prior: uq::score(&rows(&self.prior), &self.truth, &uq::LEVELS),
            elbo: self.elbo,
        }
    }
}

/// Run `varphi infer`: write `summary.json` and `samples.npy` (`[n, samples, grid, grid]`
/// posterior draws of the field, float32) and `truth.npy` into `out`. Under mpirun the ranks
/// share the cases and rank 0 writes the files (`None` on the other ranks).
pub fn infer(
    config_path: &Path,
    out: &Path,
    quiet: bool,
    split: InferSplit<'_>,
) -> Result<Option<InferSummary>, TrainError> {
    let start = std::time::Instant::now();
    let config = InferConfig::load(config_path)?;
    let config_text = std::fs::read_to_string(config_path).map_err(io_err(config_path))?;
    let (darcy, transform) = config.problem()?;
    let base = config_path.parent().unwrap_or(Path::new("."));
    let (n_cases, _) = config.data.physics().expect("checked");
    let obs = Observations {
        count: config.observations.count,
        sigma: config.observations.sigma,
    };
    let indices = observation_indices(&darcy, &obs, config.seed)?;
    let likelihood = ObservationLikelihood {
        operator: ObservationOperator::by_index(&indices),
        sigma: obs.sigma,
    };
    let device = select_device(BackendKind::Flex, Precision::F64)?.device;
    let ad = device.clone().autodiff();
    let nn = darcy.param_dim();
    let prior_map = match transform {
        Some(t) => FieldPrior::Whitened(t),
        None => FieldPrior::dgp(
            &base.join(config.prior.run.as_ref().expect("validated")),
            nn,
            &ad,
        )?,
    };
    let k = prior_map.latent_dim();
    if config.posterior.family == FamilyName::Flow && k < 2 {
        return Err(invalid(
            "posterior.family",
            format!(
                "a RealNVP flow needs at least 2 latents, the prior has {k}: use a Gaussian family"
            ),
        ));
    }
    let grid = darcy.solution_shape()[0];
    let family = match config.posterior.family {
        FamilyName::FullCovariance => Some(GaussianFamily::FullCovariance),
        FamilyName::MeanField => Some(GaussianFamily::MeanField),
        FamilyName::LowRank => Some(GaussianFamily::LowRank {
            rank: config.posterior.rank.expect("validated"),
        }),
        FamilyName::Flow | FamilyName::Map => None,
    };
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let (s_fit, n_samples) = (
        if config.posterior.family == FamilyName::Map {
            1
        } else {
            config.posterior.particles
        },
        config.posterior.samples,
    );
    let run_case = |case: usize| -> Result<CaseOutput, TrainError> {
        let noise = |stream: u64| NoiseSource {
            seed: config.seed,
            stream: 1000 * case as u64 + stream,
        };
        // Truth and its observations.
        let a_true = match &prior_map {
            FieldPrior::Whitened(t) => t.apply(noise(0).normal([1, k], 0, &device)),
            FieldPrior::Dgp { .. } => {
                // The problem's own prior (e.g. two-phase), not the generator's.
                let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(
                    config.seed ^ (0x9E37_79B9 * (case as u64 + 1)),
                );
                let v = darcy.sample_params(&mut rng);
                Tensor::<2>::from_data(TensorData::new(v, [1, nn]), &device)
            }
        };
        let u_true = darcy.solve_batch(&a_true).map_err(solver_err)?;
        let clean = likelihood.operator.apply(u_true);
        let y = clean.clone()
            + noise(1)
                .normal(clean.dims(), 0, &device)
                .mul_scalar(obs.sigma);
        let y_ad = Tensor::<2>::from_data(y.into_data(), &ad);
        let m = indices.len();
        let y_rep = y_ad.expand([s_fit, m]);
        // Fit q(ξ).
        let mut q = match family {
            Some(f) => Posterior::Gaussian(
                GaussianPosteriorConfig::new(k)
                    .with_family(f)
                    .with_init_log_std(-1.0)
                    .init(&ad),
            ),
            None if config.posterior.family == FamilyName::Map => Posterior::Map(MapPoint {
                // Just off the origin, where ‖w‖ has no gradient.
                w: burn::module::Param::from_tensor(Tensor::zeros([1, k], &ad).add_scalar(1e-2)),
                beta: config.posterior.chi_beta,
            }),
            None => Posterior::Flow(
                RealNvpConfig::new(k)
                    .with_layers(config.posterior.flow_layers)
                    .with_hidden(config.posterior.hidden.clone())
                    .init(&ad),
            ),
        };
        let mut opt = AdamConfig::new().init();
        let mut recent = Vec::new();
        for step in 0..config.optimizer.steps {
            let eps = noise(2).normal([s_fit, k], step, &ad);
            let (xi, kl) = q.sample_with_kl(eps);
            let a = prior_map.field(xi);
            let u_star = darcy.solve_batch(&a).map_err(solver_err)?;
            // Pass 1: ∂ log p(y | u*) / ∂u* at the solver's solution.
            let u_leaf = u_star.clone().require_grad();
            let log_lik =
                likelihood.log_marginal(y_rep.clone(), u_leaf.clone(), u_leaf.zeros_like(), None);
            let grads = log_lik.clone().sum().backward();
            let g = u_leaf
                .grad(&grads)
                .expect("u* takes part in the likelihood");
            let g = Tensor::<2>::from_inner(g);
            // Pass 2: the adjoint pullback carries the same gradient to a, ξ and q.
            let pull = darcy.adjoint_pullback(a, u_star, g).map_err(solver_err)?;
            let loss = kl.clone() - pull.div_scalar(s_fit as f64);
            let value = crate::host::mean_of(log_lik.mean()) - crate::host::mean_of(kl);
            if !value.is_finite() {
                return Err(TrainError::Invalid {
                    key: "optimizer.lr".into(),
                    message: format!(
                        "case {case}, step {step}: the ELBO became {value}; lower the learning rate"
                    ),
                });
            }
            if step + 50 >= config.optimizer.steps {
                recent.push(value);
            }
            let grads = GradientsParams::from_grads(loss.backward(), &q);
            let lr = cosine_lr(
                config.optimizer.lr,
                config.optimizer.lr_final,
                step,
                config.optimizer.steps,
            );
            q = opt.step(lr, q, grads);
        }
        // Posterior and prior samples of the field, scored against the truth.
        let eps = noise(3).normal([n_samples, k], 0, &device);
        let (xi_post, _) = q.valid().sample_with_kl(eps);
        let post = prior_map.field_plain(xi_post);
        let prior_draws = prior_map.field_plain(noise(4).normal([n_samples, k], 0, &device));
        let rows = |t: Tensor<2>| -> Vec<Vec<f64>> {
            let v = crate::host::values(t);
            v.chunks(nn).map(|r| r.to_vec()).collect()
        };
        let truth = crate::host::values(a_true);
        let post_rows = rows(post);
        let posterior = uq::score(&post_rows, &truth, &uq::LEVELS);
        let prior_rows = rows(prior_draws);
        let prior_scores = uq::score(&prior_rows, &truth, &uq::LEVELS);
        if !quiet {
            println!(
                "case {case}: posterior rel_l2 {:.4} (prior {:.4}), 90 % coverage {:.3}, ELBO {:.2}",
                posterior.rel_l2,
                prior_scores.rel_l2,
                posterior.coverage.get("0.9").copied().unwrap_or(f64::NAN),
                recent.iter().sum::<f64>() / recent.len().max(1) as f64
            );
        }
        Ok(CaseOutput {
            case,
            elbo: recent.iter().sum::<f64>() / recent.len().max(1) as f64,
            samples: post_rows.into_iter().flatten().collect(),
            prior: prior_rows.into_iter().flatten().collect(),
            truth,
        })
    };
    // Under mpirun the cases are split over the ranks (case c on rank c mod N) and gathered
    // on rank 0, which writes the files a single process would; `--shard I/N` runs the
    // cases c mod N = I into a part file, and `--merge` reads the parts back.
    let world = crate::cluster::world();
    let (rank, ranks) = (world.rank(), world.size());
    if ranks > 1 && (split.shard.is_some() || split.merge.is_some()) {
        return Err(invalid(
            "shard",
            "--shard / --merge under mpirun: the ranks split the cases themselves; drop them",
        ));
    }
    let draws = n_samples * nn;
    if ranks > 1 {
        // MPI counts are 32-bit; every rank computes the same verdict from the case split.
        let largest = n_cases.div_ceil(ranks) * (2 + 2 * draws + nn) * 8;
        if largest > i32::MAX as usize {
            return Err(invalid(
                "posterior.samples",
                format!(
                    "a rank's cases are {:.1} GiB of draws, and MPI gathers at most 2 GiB per rank: use more ranks or fewer samples, or --shard I/N with --merge",
                    largest as f64 / (1u64 << 30) as f64
                ),
            ));
        }
    }
    let mut outputs = if let Some(parts) = split.merge {
        read_parts(parts, &config_text, (draws, nn, n_cases))?
    } else {
        let (part, parts) = split.shard.unwrap_or((rank, ranks));
        (0..n_cases)
            .filter(|c| c % parts == part)
            .map(run_case)
            .collect::<Result<Vec<_>, _>>()?
    };
    if let Some((part, parts)) = split.shard {
        write_part(
            out,
            &outputs,
            (part, parts),
            &config_text,
            draws + draws + nn + 2,
        )?;
        if !quiet {
            println!(
                "wrote part {part}/{parts} ({} of {n_cases} cases) to {}; merge the parts with `varphi infer CONFIG --merge PART0,PART1,… --out DIR`",
                outputs.len(),
                out.display()
            );
        }
        return Ok(None);
    }
    if ranks > 1 {
        let mine: Vec<u8> = outputs.iter().flat_map(CaseOutput::to_bytes).collect();
        let gathered = world.gather(&mine);
        if rank != 0 {
            return Ok(None);
        }
        outputs = gathered
            .iter()
            .flat_map(|b| CaseOutput::all_from_bytes(b, n_samples * nn, nn))
            .collect();
        outputs.sort_by_key(|o| o.case);
        if outputs.len() != n_cases {
            return Err(TrainError::Parallel(format!(
                "the ranks returned {} of the {n_cases} cases",
                outputs.len()
            )));
        }
    }
    let mut cases = Vec::with_capacity(n_cases);
    let mut all_samples = Vec::with_capacity(n_cases * n_samples * nn);
    let mut truths = Vec::with_capacity(n_cases * nn);
    for o in outputs {
        cases.push(o.result(nn));
        all_samples.extend(o.samples);
        truths.extend(o.truth);
    }
    let summary = InferSummary {
        n_cases,
        n_obs: indices.len(),
        obs_sigma: obs.sigma,
        family: config.posterior.family,
        rank: config.posterior.rank,
        posterior: mean_scores(&cases.iter().map(|c| &c.posterior).collect::<Vec<_>>()),
        prior: mean_scores(&cases.iter().map(|c| &c.prior).collect::<Vec<_>>()),
        posterior_checks: {
            // [case][sample][nn] → [sample][case · nn].
            let by_sample: Vec<Vec<f64>> = (0..n_samples)
                .map(|s| {
                    (0..n_cases)
                        .flat_map(|c| {
                            let at = (c * n_samples + s) * nn;
                            all_samples[at..at + nn].iter().copied()
                        })
                        .collect()
                })
                .collect();
            crate::ranks::posterior_checks(&by_sample, &truths, nn, &crate::uq::CURVE)
        },
        cases,
        wall_s: start.elapsed().as_secs_f64(),
    };
    let p = out.join("samples.npy");
    varphi_data::npy::save_npy_f32(&p, &[n_cases, n_samples, grid, grid], &all_samples)
        .map_err(io_err(&p))?;
    let p = out.join("truth.npy");
    varphi_data::npy::save_npy_f32(&p, &[n_cases, grid, grid], &truths).map_err(io_err(&p))?;
    let p = out.join("summary.json");
    std::fs::write(&p, serde_json::to_string_pretty(&summary).expect("json"))
        .map_err(io_err(&p))?;
    Ok(Some(summary))
}

/// How `varphi infer` shares its cases with other processes (`--shard`, `--merge`).
#[derive(Debug, Clone, Copy, Default)]
pub struct InferSplit<'a> {
    /// `(I, N)`: run only the cases `c mod N = I` and write them as a part (`OUT/part.npz`).
    pub shard: Option<(usize, usize)>,
    /// Part folders (written with `--shard 0/N … N-1/N`, in order) to merge instead of running.
    pub merge: Option<&'a [PathBuf]>,
}

/// Write the cases of part `(I, N)` into `out/part.npz` (one row of
/// [`CaseOutput::to_values`] per case, `width` values) and `out/part.json` (the part and the
/// config it ran).
fn write_part(
    out: &Path,
    outputs: &[CaseOutput],
    (index, count): (usize, usize),
    config_text: &str,
    width: usize,
) -> Result<(), TrainError> {
    let values: Vec<f64> = outputs.iter().flat_map(CaseOutput::to_values).collect();
    let p = out.join("part.npz");
    varphi_data::npy::save_npz_f64(&p, &[("cases", &[outputs.len(), width], &values)])
        .map_err(io_err(&p))?;
    let p = out.join("part.json");
    let meta =
        serde_json::json!({"shard": {"index": index, "count": count}, "config": config_text});
    std::fs::write(&p, serde_json::to_string_pretty(&meta).expect("json")).map_err(io_err(&p))
}

/// The cases of part folders `parts` (in part order), each checked to be part `k` of
/// `parts.len()` of this very config; all `n_cases` must be there.
fn read_parts(
    parts: &[PathBuf],
    config_text: &str,
    (draws, nn, n_cases): (usize, usize, usize),
) -> Result<Vec<CaseOutput>, TrainError> {
    let mut all = Vec::new();
    for (k, dir) in parts.iter().enumerate() {
        let p = dir.join("part.json");
        let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        let meta: serde_json::Value = serde_json::from_str(&text).map_err(|e| TrainError::Run {
            path: p.clone(),
            message: format!("is not JSON: {e}"),
        })?;
        if meta["config"].as_str() != Some(config_text) {
            return Err(TrainError::Run {
                path: dir.clone(),
                message: "is a part of another config: merge with the config the parts ran".into(),
            });
        }
        let (i, n) = (
            meta["shard"]["index"].as_u64(),
            meta["shard"]["count"].as_u64(),
        );
        if i != Some(k as u64) || n != Some(parts.len() as u64) {
            return Err(TrainError::Run {
                path: dir.clone(),
                message: format!(
                    "is part {}/{}, but --merge lists it as part {k}/{}: give every part, in order",
                    i.map_or("?".into(), |v| v.to_string()),
                    n.map_or("?".into(), |v| v.to_string()),
                    parts.len()
                ),
            });
        }
        let a = varphi_data::read::load_npz(&dir.join("part.npz"), "cases")?;
        all.extend(CaseOutput::all_from_values(&a.data, draws, nn));
    }
    all.sort_by_key(|o| o.case);
    let complete = all.len() == n_cases && all.iter().enumerate().all(|(i, o)| o.case == i);
    if !complete {
        return Err(invalid(
            "merge",
            format!(
                "the parts hold {} cases, not each of the config's {n_cases} once",
                all.len()
            ),
        ));
    }
    Ok(all)
}

/// How latents become the coefficient field.
enum FieldPrior {
    /// `a = T(ξ)`.
    Whitened(PriorTransform),
    /// `a = max(f_θ*(w)·x_std + x_mean, floor)`: a frozen VAE decoder's mean.
    Dgp {
        /// The decoder on the autodiff device.
        model: crate::latent::GenerativeModel,
        /// The same without autodiff.
        plain: crate::latent::GenerativeModel,
        /// Data normalisation of the VAE run.
        x_mean: f64,
        /// Data normalisation of the VAE run.
        x_std: f64,
        /// Positive floor of the decoded coefficient (5 % of the training fields' mean).
        floor: f64,
    },
}

impl FieldPrior {
    fn dgp(run: &Path, nn: usize, ad: &Device) -> Result<Self, TrainError> {
        let config = crate::rundir::config(run)?;
        let not_a_vae = |what: String| {
            invalid(
                "prior.run",
                format!(
                    "{} must hold a VAE trained on coefficient fields of {nn} values (it has {what})",
                    run.display()
                ),
            )
        };
        let kind_name = config.kind.name();
        let crate::kinds::KindSection::Vae(vae) = config.kind else {
            return Err(not_a_vae(format!("kind \"{kind_name}\"")));
        };
        let saved = crate::rundir::normalization(run)?;
        let data = crate::data::prepare_test(
            &config.common,
            crate::kind::Kind::x_scaling(&vae),
            &saved,
            Path::new("."),
        )?;
        let shape = data.shape();
        if shape.features() != nn {
            return Err(not_a_vae(format!(
                "samples of shape {:?}",
                shape.sample_shape
            )));
        }
        let (model, _) = crate::checkpoint::load_model(run, vae.model(&data, ad))?;
        let model = crate::checkpoint::cast_floats(model, ad);
        let model = model.no_grad();
        let plain = model.valid();
        let norm = &data.norm;
        Ok(Self::Dgp {
            model,
            plain,
            x_mean: norm.x_mean,
            x_std: norm.x_std,
            floor: 0.05 * norm.x_mean.abs().max(1e-6),
        })
    }

    fn latent_dim(&self) -> usize {
        use varphi_models::LatentVariableModel;
        match self {
            FieldPrior::Whitened(t) => t.latent_dim(),
            FieldPrior::Dgp { model, .. } => model.model.latent_dim(),
        }
    }

    fn decode(
        m: &crate::latent::GenerativeModel,
        w: Tensor<2>,
        x_mean: f64,
        x_std: f64,
        floor: f64,
    ) -> Tensor<2> {
        use varphi_models::LatentVariableModel;
        let [s, _] = w.dims();
        let mean = m.likelihood.mean(m.model.decode(w.unsqueeze_dim(1), None));
        let out = mean.dims()[2];
        mean.reshape([s, out])
            .mul_scalar(x_std)
            .add_scalar(x_mean)
            .clamp_min(floor)
    }

    /// The field of latents on the autodiff device, `[S, nn]`.
    fn field(&self, latents: Tensor<2>) -> Tensor<2> {
        match self {
            FieldPrior::Whitened(t) => t.apply(latents),
            FieldPrior::Dgp {
                model,
                x_mean,
                x_std,
                floor,
                ..
            } => Self::decode(model, latents, *x_mean, *x_std, *floor),
        }
    }

    /// The field of latents on the plain device, `[S, nn]`.
    fn field_plain(&self, latents: Tensor<2>) -> Tensor<2> {
        match self {
            FieldPrior::Whitened(t) => t.apply(latents),
            FieldPrior::Dgp {
                plain,
                x_mean,
                x_std,
                floor,
                ..
            } => Self::decode(plain, latents, *x_mean, *x_std, *floor),
        }
    }
}

/// The fitted `q(ξ)`: a Gaussian family or a normalising flow.
#[derive(Module, Debug)]
enum Posterior {
    Gaussian(varphi_models::GaussianPosterior),
    Flow(RealNvp),
    Map(MapPoint),
}

/// A point estimate `w` with the chi-shell weight.
#[derive(Module, Debug)]
struct MapPoint {
    w: burn::module::Param<Tensor<2>>,
    #[module(skip)]
    beta: f64,
}

impl Posterior {
    /// Reparameterised draws `ξ = T(ε)` for `eps: [S, k]` and the KL term to `N(0, I)`: in
    /// closed form for the Gaussians, `mean_s [log q(ξ_s) − log N(ξ_s; 0, I)]` for the flow.
    fn sample_with_kl(&self, eps: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let [s, k] = eps.dims();
        match self {
            Posterior::Gaussian(q) => {
                let dist = q.forward();
                let prior = DiagGaussian::standard(1, k, &eps.device());
                let xi = dist.rsample(eps.unsqueeze_dim(1)).reshape([s, k]);
                (xi, dist.kl_to_diag(&prior))
            }
            Posterior::Flow(f) => {
                let (xi, log_q) = f.rsample_with_log_prob(eps, None);
                let log_p = xi
                    .clone()
                    .powi_scalar(2)
                    .sum_dim(1)
                    .squeeze_dim::<1>(1)
                    .add_scalar(k as f64 * varphi_models::distributions::LN_2PI)
                    .mul_scalar(-0.5);
                (xi, (log_q - log_p).mean().reshape([1]))
            }
            Posterior::Map(p) => {
                let w = p.w.val();
                let shell = varphi_losses::chi_shell(w.clone(), p.beta);
                (w.expand([s, k]), shell)
            }
        }
    }
}
