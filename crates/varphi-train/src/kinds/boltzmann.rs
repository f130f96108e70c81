//! `kind = "boltzmann"`: a forward probabilistic surrogate `q_φ(u | z)` fitted data-free to the
//! residual Boltzmann density of primer eqs. 27–28 (Zhu et al. 2019),
//!
//! ```text
//! p_β(u | z) ∝ exp(−β ‖P⁻¹r_pde(u, z)‖² − β_b ‖r_b(u)‖²)
//! loss = E_{p(z)} [ E_{q(u|z)} (β ‖P⁻¹r_pde‖² + β_b ‖r_b‖²) − H[q(u | z)] ]   (= KL(q ‖ p_β) − log Z_β)
//! ```
//!
//! by reparameterised samples from prior draws `z` alone ([`varphi_losses::ResidualBoltzmann`]).
//! `q` is a diagonal Gaussian (closed-form entropy) or a RealNVP flow on top of it (entropy by
//! Monte Carlo, `−mean log q`). Evaluation scores the predictive samples against the reference
//! solver (relative L2, NLL, CRPS, coverage, residual of samples) and checks the fit against
//! the target itself: at the reference solution `u*` (the mode of `p_β`) the target's
//! precision is `Λ = 2 Jᵀ diag(β) J` (`J = ∂r/∂u`; exact for a residual linear in `u`, the
//! Laplace approximation otherwise), whose mean-field reverse-KL optimum has variances
//! `1/Λ_ii` and whose marginals have variances `(Λ⁻¹)_ii`.

use crate::config::{
    ActivationName, Common, FnoSection, SectionError, check_conv, check_hidden, check_positive,
    d_activation, d_channels, d_hidden, invalid, kind_sections, to_table,
};
use crate::data::{RunData, TrainData};
use crate::error::TrainError;
use crate::host::{mean_of, repeat_rows, values};
use crate::kind::{Kind, Loaded, Prediction, SampleRequest};
use crate::latent::d_flow_layers;
use crate::noise::{NoiseSource, Stream};
use crate::physics_term::PhysicsTerm;
use crate::surrogate;
use crate::tables::coverage;
use crate::trainer::{Objective, StepOutput};
use crate::uq::UqScores;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use varphi_losses::ResidualBoltzmann;
use varphi_models::{
    Activation, AmortisedQ, EncoderConfig, GaussianNet, GaussianNetConfig, MlpEncoderConfig,
    PosteriorFlow, PosteriorFlowConfig, UNetConfig, VariationalFamily,
};

/// The family of `q(u | z)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// `N(μ(z), diag σ²(z))`.
    Gaussian,
    /// A RealNVP flow (`flow_layers` couplings, LU mixing) on top of that Gaussian, conditioned
    /// on its mean and log-variance.
    Flow,
}

/// The network from the parameters to the Gaussian's `[μ, log σ²]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// Dense network from the parameters to the flattened solution.
    Mlp,
    /// A U-Net from a parameter field to the solution field on the same 2-D grid.
    Unet,
    /// A Fourier neural operator from a parameter field to the solution field on the same 1-D
    /// or 2-D grid (`[model.fno]`).
    Fno,
}

/// `[model]` of a boltzmann run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoltzmannModelSection {
    /// Family of `q(u | z)`.
    #[serde(default = "d_family")]
    pub surrogate: Family,
    /// Network of the Gaussian (and base of the flow).
    #[serde(default = "d_network")]
    pub network: Network,
    /// Hidden widths of dense layers (and of the flow's coupling networks).
    #[serde(default = "d_hidden")]
    pub hidden: Vec<usize>,
    /// Channels of the U-Net levels.
    #[serde(default = "d_channels")]
    pub channels: Vec<usize>,
    /// Activation.
    #[serde(default = "d_activation")]
    pub activation: ActivationName,
    /// Coupling layers of a flow surrogate.
    #[serde(default = "d_flow_layers")]
    pub flow_layers: usize,
    /// Shape of the Fourier neural operator (`network = "fno"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fno: Option<FnoSection>,
}

fn d_family() -> Family {
    Family::Gaussian
}
fn d_network() -> Network {
    Network::Mlp
}

/// `[objective]` of a boltzmann run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoltzmannObjectiveSection {
    /// Inverse temperature β of the PDE rows (`β = 1/(2σ_r²)` relates it to a virtual
    /// observation with noise σ_r).
    pub beta: f64,
    /// β_b of the boundary / initial-condition rows (default: `beta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary_beta: Option<f64>,
    /// Samples of `q` per parameter draw and step.
    #[serde(default = "d_particles")]
    pub n_particles: usize,
    /// Use `P⁻¹ r` (operator at unit coefficient) instead of `r` in the energy.
    #[serde(default = "d_true")]
    pub precondition: bool,
    /// Physical scale of `u`: the surrogate works in units of `u_scale`.
    #[serde(default = "d_unit")]
    pub u_scale: f64,
    /// Add the residual-informed model-error term to the forward predictive (as
    /// `[objective.residual] model_error` of pddlvm).
    #[serde(default = "d_true")]
    pub model_error: bool,
}

fn d_particles() -> usize {
    1
}
fn d_true() -> bool {
    true
}
fn d_unit() -> f64 {
    1.0
}

/// The config of a `boltzmann` run.
#[derive(Debug, Clone, PartialEq)]
pub struct Boltzmann {
    /// `[model]`.
    pub model: BoltzmannModelSection,
    /// `[objective]`.
    pub objective: BoltzmannObjectiveSection,
}

/// The trained module: the Gaussian network and, for a flow surrogate, the flow.
#[derive(Module, Debug)]
pub struct BoltzmannSurrogate {
    /// `z ↦ N(μ(z), diag σ²(z))` in units of `u_scale`.
    pub gaussian: GaussianNet,
    /// The flow on top (`surrogate = "flow"`).
    pub flow: Option<PosteriorFlow>,
}

impl BoltzmannSurrogate {
    /// `q(u / u_scale | z)` for normalised parameters `z` `[b, p]`.
    pub fn q(&self, z: Tensor<2>) -> AmortisedQ {
        let base = self.gaussian.forward(z);
        match &self.flow {
            None => AmortisedQ::Gaussian(base),
            Some(f) => AmortisedQ::Flow(f.forward(base)),
        }
    }

    /// Samples `[s, b, n_u]` (units of `u_scale`) with `log q`, `[s, b]`, for noise
    /// `eps` `[s, b, n_u]`.
    pub fn rsample(&self, z: Tensor<2>, eps: Tensor<3>) -> (Tensor<3>, Tensor<2>) {
        self.q(z).rsample_with_log_prob(eps)
    }
}

/// The objective: the residual energy of surrogate samples minus their entropy.
pub struct BoltzmannObjective {
    /// The problem, its preconditioner and the parameter normalisation.
    pub physics: PhysicsTerm,
    /// `β` of the PDE rows.
    pub boltzmann: ResidualBoltzmann,
    /// `β_b / β`, the weight of the boundary rows in the energy.
    pub boundary_weight: f64,
    /// Physical scale of `u`.
    pub u_scale: f64,
    /// Samples per parameter draw.
    pub n_particles: usize,
    /// Training noise.
    pub noise: NoiseSource,
}

impl BoltzmannObjective {
    /// `‖P⁻¹r_pde‖² + (β_b/β)‖r_b‖²` of physical solutions `u` `[rows, n_u]` at physical
    /// parameters `z` `[rows, p]`, `[rows]`.
    pub fn energy(&self, u: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
        let r = self.physics.residual(u, z);
        let sq = |t: Tensor<2>| t.powi_scalar(2).sum_dim(1).squeeze_dim::<1>(1);
        sq(r.pde) + sq(r.boundary).mul_scalar(self.boundary_weight)
    }
}

impl Objective<BoltzmannSurrogate> for BoltzmannObjective {
    fn step(
        &self,
        model: &BoltzmannSurrogate,
        x: Tensor<2>,
        cond: Option<Tensor<2>>,
        step: usize,
        noise_stream: u64,
    ) -> StepOutput {
        let device = x.device();
        // `check_data` rejects data without parameters; the solutions `x` are never used.
        let z = cond.unwrap_or_else(|| Tensor::zeros([x.dims()[0], 0], &device));
        let [b, _] = z.dims();
        let (s, nu) = (self.n_particles, x.dims()[1]);
        let eps = self
            .noise
            .offset(noise_stream)
            .normal([s, b, nu], step, &device);
        let q = model.q(z.clone());
        let z_rep = repeat_rows(self.physics.physical(z), s);
        let (u, log_q) = q.rsample_with_log_prob(eps);
        let energy = self
            .energy(u.reshape([s * b, nu]).mul_scalar(self.u_scale), z_rep)
            .reshape([s, b]);
        let out = match q {
            AmortisedQ::Gaussian(g) => self.boltzmann.forward(energy, g.entropy()),
            AmortisedQ::Flow(_) => self.boltzmann.forward_mc(energy, log_q),
        };
        let loss = out.loss;
        StepOutput {
            terms: vec![
                ("loss", mean_of(loss.clone().detach())),
                ("residual_sq", mean_of(out.residual_sq)),
                ("entropy", mean_of(out.entropy)),
            ],
            loss,
            beta: None,
        }
    }
}

/// `eval.json` of a boltzmann run.
#[derive(Debug, Clone, Serialize)]
pub struct BoltzmannEval {
    /// Test cases scored.
    pub n_test: usize,
    /// Predictive samples per case.
    pub n_samples: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// β of the PDE rows.
    pub beta: f64,
    /// Predictive samples against the reference solutions (with the model-error term where
    /// configured).
    pub forward: UqScores,
    /// With the model-error term: `q(u | z)` alone (before the term).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surrogate_only: Option<UqScores>,
    /// With the model-error term: its estimated scale beside the actual error of the mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_error: Option<surrogate::ModelErrorSummary>,
    /// Mean `‖r(u_s, z)‖₂` (PDE and boundary rows, unpreconditioned) of the samples.
    pub residual_norm: f64,
    /// The same for the reference solutions (the discretisation's floor).
    pub reference_residual_norm: f64,
    /// The fit against the target `p_β` at the reference solutions (up to 8 cases; absent for
    /// solutions of more than 1 024 values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetCheck>,
}

/// The surrogate's spread against the Boltzmann target's (see the module docs). Ratios are
/// `sqrt(mean_i var_q,i / σ_i²)` over nodes and cases, `var_q` the sample variance.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// Cases checked.
    pub cases: usize,
    /// Against the mean-field reverse-KL optimum `σ_i² = 1/Λ_ii` (1 when `q` fits the target
    /// as well as a diagonal Gaussian can).
    pub spread_vs_mean_field: f64,
    /// Against the target's marginals `σ_i² = (Λ⁻¹)_ii` (below 1: reverse KL's under-dispersion;
    /// solutions of up to 400 values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread_vs_marginal: Option<f64>,
    /// RMS of `(mean_q,i − u*_i) / σ_i` with the target's marginal `σ_i`: how far the
    /// surrogate's mean sits from the target's mode in units of the target's own spread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_error_in_target_sd: Option<f64>,
}

impl Boltzmann {
    /// The Gaussian network for data of `data`'s shape.
    fn network(&self, data: &RunData) -> Result<GaussianNetConfig, TrainError> {
        let m = &self.model;
        let shape = data.shape();
        let act: Activation = m.activation.into();
        let grid = shape
            .conv_shape()
            .unwrap_or_else(|| vec![1, shape.features()]);
        Ok(match m.network {
            Network::Mlp => EncoderConfig::Mlp(
                MlpEncoderConfig::new(shape.cond_dim, shape.features())
                    .with_hidden(m.hidden.clone())
                    .with_activation(act),
            )
            .into(),
            // `check_data` admits a U-Net only with parameters on the solution's 2-D grid.
            Network::Unet => GaussianNetConfig::UNet(
                UNetConfig::new(grid, 2)
                    .with_channels(m.channels.clone())
                    .with_activation(act),
            ),
            Network::Fno => {
                GaussianNetConfig::Fno(m.fno.clone().unwrap_or_default().network(grid, 2, act)?)
            }
        })
    }
}

impl Kind for Boltzmann {
    const NAME: &'static str = "boltzmann";
    const SUMMARY_TERMS: &'static [&'static str] = &["loss", "residual_sq", "entropy"];
    const PREDICTS_TEST_SAMPLES: bool = true;
    type Model = BoltzmannSurrogate;
    type Objective = BoltzmannObjective;
    type Eval = BoltzmannEval;

    fn from_tables(model: toml::Table, objective: toml::Table) -> Result<Self, SectionError> {
        let (model, objective) = kind_sections(model, objective, Self::NAME)?;
        Ok(Self { model, objective })
    }

    fn to_tables(&self) -> (toml::Table, toml::Table) {
        (to_table(&self.model), to_table(&self.objective))
    }

    fn validate(&self, common: &Common) -> Result<(), TrainError> {
        let m = &self.model;
        check_hidden(&m.hidden)?;
        check_conv(&m.channels, 3)?;
        if m.surrogate == Family::Flow && m.flow_layers == 0 {
            return Err(invalid("model.flow_layers", "must be at least 1"));
        }
        let o = &self.objective;
        check_positive("objective.beta", o.beta)?;
        if let Some(b) = o.boundary_beta {
            check_positive("objective.boundary_beta", b)?;
        }
        check_positive("objective.u_scale", o.u_scale)?;
        if o.n_particles == 0 {
            return Err(invalid("objective.n_particles", "must be at least 1"));
        }
        common.physics_source("kind = \"boltzmann\"")?;
        Ok(())
    }

    fn check_data(&self, _common: &Common, data: &TrainData) -> Result<(), TrainError> {
        let shape = data.run.shape();
        if shape.cond_dim == 0 {
            return Err(invalid(
                "data.kind",
                "a boltzmann run needs the parameters of each sample (a physics data source)",
            ));
        }
        let net = match self.model.network {
            Network::Unet => Some("unet"),
            Network::Fno => Some("fno"),
            Network::Mlp => None,
        };
        if let Some(message) = net.and_then(|n| shape.same_grid_error(n)) {
            return Err(invalid("model.network", message));
        }
        self.network(&data.run)?;
        if self.model.surrogate == Family::Flow && shape.features() < 2 {
            return Err(invalid(
                "model.surrogate",
                "a flow needs solutions of at least 2 values (use \"gaussian\")",
            ));
        }
        Ok(())
    }

    fn build(
        &self,
        common: &Common,
        data: &RunData,
        device: &Device,
    ) -> Result<(BoltzmannSurrogate, BoltzmannObjective), TrainError> {
        let (m, o) = (&self.model, &self.objective);
        let physics = PhysicsTerm::new(
            &common.data,
            o.precondition.then_some("objective.precondition"),
            &data.norm,
        )?
        .with_model_error(o.model_error);
        let model = BoltzmannSurrogate {
            gaussian: self.network(data)?.init(device),
            flow: (m.surrogate == Family::Flow).then(|| {
                PosteriorFlowConfig::new()
                    .with_layers(m.flow_layers)
                    .with_hidden(m.hidden.clone())
                    .init(data.shape().features(), device)
            }),
        };
        let objective = BoltzmannObjective {
            physics,
            boltzmann: ResidualBoltzmann { beta: o.beta },
            boundary_weight: o.boundary_beta.unwrap_or(o.beta) / o.beta,
            u_scale: o.u_scale,
            n_particles: o.n_particles,
            noise: NoiseSource::new(common.seed, Stream::Train),
        };
        Ok((model, objective))
    }

    fn plot(&self, run: &Loaded<Self>) -> Result<(), TrainError> {
        let u_scale = run.objective.u_scale;
        surrogate::plot_forward(&run.data, &run.dir, &run.device.device, |z, eps| {
            let q = run.model.q(z);
            let k = eps.dims()[1];
            let sample = q.rsample(eps);
            let nu = sample.dims()[2];
            (
                q.mean().mul_scalar(u_scale),
                sample.reshape([k, nu]).mul_scalar(u_scale),
            )
        })
    }

    fn evaluate(&self, run: &Loaded<Self>) -> Result<BoltzmannEval, TrainError> {
        evaluate(run)
    }

    fn print_eval(&self, r: &BoltzmannEval, dir: &Path) {
        print_eval(r, dir);
    }

    fn predict(
        &self,
        run: &Loaded<Self>,
        inputs: &varphi_data::read::Array,
        n: usize,
    ) -> Result<Prediction, TrainError> {
        let o = &run.objective;
        surrogate::predict_forward(
            &o.physics,
            inputs,
            n,
            run.common.seed,
            &run.device.device,
            |z, eps| {
                let [s, n, nu] = eps.dims();
                let (u, _) = run.model.rsample(z, eps);
                u.reshape([s * n, nu]).mul_scalar(o.u_scale)
            },
        )
    }

    fn sample(&self, run: &Loaded<Self>, request: &SampleRequest) -> Result<String, TrainError> {
        let o = &run.objective;
        surrogate::sample_forward(
            &o.physics,
            &run.data,
            run.common.seed,
            request,
            &run.device.device,
            |z, eps| {
                let [n, _, nu] = eps.dims();
                run.model
                    .q(z)
                    .rsample(eps)
                    .reshape([n, nu])
                    .mul_scalar(o.u_scale)
            },
        )
    }
}

/// Score the first (up to) 200 test cases with 64 predictive samples each.
fn evaluate(run: &Loaded<Boltzmann>) -> Result<BoltzmannEval, TrainError> {
    let device = &run.device.device;
    let o = &run.objective;
    let s = 64;
    let (truth, z) = surrogate::test_cases(&run.data, 200, device)?;
    let n = z.dims()[0];
    let nu = truth.len() / n;
    let z_phys = o.physics.physical(z.clone());
    let eps =
        NoiseSource::new(run.common.seed, Stream::EvalPredictive).normal([s, n, nu], 0, device);
    let (u, _) = run.model.rsample(z.clone(), eps);
    let u = u.reshape([s * n, nu]).mul_scalar(o.u_scale);
    let (mean, _) = run.model.rsample(z, Tensor::zeros([1, n, nu], device));
    let mean = mean.reshape([n, nu]).mul_scalar(o.u_scale);
    let fwd = surrogate::score_forward(
        &run.scorer,
        &o.physics,
        u,
        mean,
        &truth,
        z_phys.clone(),
        run.common.seed,
    );
    let target = if nu <= 1024 {
        Some(target_check(o, &truth, &fwd.samples, z_phys, s)?)
    } else {
        None
    };
    Ok(BoltzmannEval {
        n_test: n,
        n_samples: s,
        epochs: run.epochs_done,
        beta: o.boltzmann.beta,
        forward: fwd.widened.scores,
        surrogate_only: fwd.widened.surrogate_only,
        model_error: fwd.widened.model_error,
        residual_norm: fwd.residual_norm,
        reference_residual_norm: fwd.reference_residual_norm,
        target,
    })
}

/// [`TargetCheck`] on the first (up to) 8 cases: `J` by central differences of the residual
/// at `u*` (step `10⁻² u_scale`; exact up to rounding for a residual linear in `u`).
fn target_check(
    o: &BoltzmannObjective,
    truth: &[f64],
    samples: &[f64],
    z_phys: Tensor<2>,
    s: usize,
) -> Result<TargetCheck, TrainError> {
    let [n, p] = z_phys.dims();
    let nu = truth.len() / n;
    let cases = n.min(8);
    let device = z_phys.device();
    let h = 1e-2 * o.u_scale;
    let z_all = values(z_phys);
    let (mut mf, mut marg, mut err, mut count) = (0.0, 0.0, 0.0, 0usize);
    let mut marginal_ok = nu <= 400;
    for c in 0..cases {
        let u_star = &truth[c * nu..(c + 1) * nu];
        // Rows u* + h e_j, then u* − h e_j.
        let mut rows = Vec::with_capacity(2 * nu * nu);
        for sign in [1.0, -1.0] {
            for j in 0..nu {
                rows.extend(u_star.iter().enumerate().map(
                    |(i, &v)| {
                        if i == j { v + sign * h } else { v }
                    },
                ));
            }
        }
        let u = Tensor::<2>::from_data(TensorData::new(rows, [2 * nu, nu]), &device);
        let zc = Tensor::<2>::from_data(
            TensorData::new(z_all[c * p..(c + 1) * p].to_vec(), [1, p]),
            &device,
        )
        .expand([2 * nu, p]);
        let r = o.physics.residual(u, zc);
        let (n_pde, n_b) = (r.pde.dims()[1], r.boundary.dims()[1]);
        let r = values(r.all());
        let m = n_pde + n_b;
        // J[k][j] and the weight 2β_k of row k in Λ = 2 Jᵀ diag(β) J.
        let jac = |k: usize, j: usize| (r[j * m + k] - r[(nu + j) * m + k]) / (2.0 * h);
        let beta = o.boltzmann.beta;
        let w = |k: usize| {
            2.0 * if k < n_pde {
                beta
            } else {
                beta * o.boundary_weight
            }
        };
        let cols: Vec<Vec<f64>> = (0..nu)
            .map(|j| (0..m).map(|k| jac(k, j)).collect())
            .collect();
        // Sample mean and variance of q at each node.
        let (mut mean, mut var) = (vec![0.0; nu], vec![0.0; nu]);
        for i in 0..s {
            let row = &samples[(i * n + c) * nu..(i * n + c + 1) * nu];
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, v)| *m += v / s as f64);
        }
        for i in 0..s {
            let row = &samples[(i * n + c) * nu..(i * n + c + 1) * nu];
            for j in 0..nu {
                var[j] += (row[j] - mean[j]).powi(2) / (s - 1) as f64;
            }
        }
        for j in 0..nu {
            let lambda_jj: f64 = (0..m).map(|k| w(k) * cols[j][k].powi(2)).sum();
            mf += var[j] * lambda_jj;
        }
        if marginal_ok {
            let mut triplets = Vec::with_capacity(nu * nu);
            for a in 0..nu {
                for b in 0..nu {
                    let v: f64 = (0..m).map(|k| w(k) * cols[a][k] * cols[b][k]).sum();
                    triplets.push((a, b, v));
                }
            }
            match varphi_physics::sparse::inverse_spd(nu, &triplets, "target precision") {
                Ok(inv) => {
                    for j in 0..nu {
                        let sd2 = inv[j * nu + j];
                        marg += var[j] / sd2;
                        err += (mean[j] - u_star[j]).powi(2) / sd2;
                    }
                }
                // A singular precision (a direction the residual does not see) has no
                // marginals to compare with.
                Err(_) => marginal_ok = false,
            }
        }
        count += nu;
    }
    let rms = |v: f64| (v / count as f64).sqrt();
    Ok(TargetCheck {
        cases,
        spread_vs_mean_field: rms(mf),
        spread_vs_marginal: marginal_ok.then(|| rms(marg)),
        mean_error_in_target_sd: marginal_ok.then(|| rms(err)),
    })
}

fn print_eval(r: &BoltzmannEval, dir: &Path) {
    println!(
        "evaluation of {} ({} test cases × {} samples, {} epochs, β = {})",
        dir.display(),
        r.n_test,
        r.n_samples,
        r.epochs,
        r.beta
    );
    let mut blocks = vec![(
        "forward predictive u|z (with the model-error term)",
        &r.forward,
    )];
    match &r.surrogate_only {
        Some(q) => blocks.push(("surrogate q(u|z) alone", q)),
        None => blocks[0].0 = "surrogate q(u|z)",
    }
    for (name, f) in blocks {
        println!("  {name} against the reference solver");
        println!("    relative L2 of the mean   {:.5}", f.rel_l2);
        println!("    NLL per entry             {:.5}", f.nll);
        println!("    CRPS per entry            {:.5}", f.crps);
        println!(
            "    coverage 50 / 90 / 95 %   {:.3} / {:.3} / {:.3}",
            coverage(f, "0.5"),
            coverage(f, "0.9"),
            coverage(f, "0.95")
        );
    }
    surrogate::print_model_error(r.model_error.as_ref());
    println!(
        "  residual norm of samples {:.4e} (reference solutions: {:.4e})",
        r.residual_norm, r.reference_residual_norm
    );
    if let Some(t) = &r.target {
        println!(
            "  against the target p_β at u* ({} cases): spread / mean-field optimum {:.3}",
            t.cases, t.spread_vs_mean_field
        );
        if let (Some(m), Some(e)) = (t.spread_vs_marginal, t.mean_error_in_target_sd) {
            println!("    spread / target marginal {m:.3}; mean − u* in target sd (RMS) {e:.3}");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::tests_common::*;

    const BASE: &str = "[data]\nkind = \"darcy\"\nn = 40\ngrid = 5\n[model]\nkind = \"boltzmann\"\nhidden = [16]\n";

    #[test]
    fn keys_of_other_kinds_are_rejected_naming_the_key_and_the_kind() {
        rejects(
            &format!("{BASE}[objective]\nbeta = 10.0\nkl = \"analytic\"\n"),
            &["`kl`", "[objective]", "boltzmann", "beta", "u_scale"],
        );
        rejects(
            &format!("{BASE}inverse = \"mlp\"\n[objective]\nbeta = 10.0\n"),
            &["`inverse`", "[model]", "boltzmann", "surrogate", "network"],
        );
        rejects(
            &format!("{BASE}[objective]\nbeta = 10.0\n[objective.residual]\nsigma = 0.1\n"),
            &["`residual`", "boltzmann"],
        );
        rejects(&BASE.to_string(), &["beta"]);
        rejects(
            &format!("{BASE}[objective]\nbeta = -1.0\n"),
            &["objective.beta", "> 0"],
        );
    }

    #[test]
    fn one_step_changes_the_weights_and_eval_matches_a_reload() {
        for family in ["gaussian", "flow"] {
            let config = format!(
                "seed = 2\n{BASE}surrogate = \"{family}\"\nflow_layers = 2\n[objective]\nbeta = 100.0\nu_scale = 0.05\n[training]\nepochs = 2\nbatch_size = 8\n"
            );
            one_step_changes_the_weights(&config);
            eval_of_a_trained_run_is_reproducible(&config, "residual_norm");
        }
        let fno = format!(
            "seed = 2\n{BASE}network = \"fno\"\n[model.fno]\nmodes = [2]\nwidth = 4\nlayers = 1\nprojection = 8\n[objective]\nbeta = 100.0\nu_scale = 0.05\n[training]\nepochs = 1\nbatch_size = 8\n"
        );
        one_step_changes_the_weights(&fno);
    }

    /// A Darcy surrogate on 7 × 7 nodes (log-normal coefficient, FD residual linear in `u`,
    /// so `p_β` is exactly Gaussian); eval.json.
    fn darcy(name: &str, family: &str, epochs: usize) -> serde_json::Value {
        let config = format!(
            "seed = 5\n[data]\nkind = \"darcy\"\nn = 300\ngrid = 7\n[data.settings.coefficient]\nkind = \"log-normal\"\nlength = 0.3\nsigma = 0.5\nmean = 0.0\nmodes = 6\n[model]\nkind = \"boltzmann\"\nsurrogate = \"{family}\"\nhidden = [64, 64]\nflow_layers = 4\n[objective]\nbeta = 2e5\nu_scale = 0.05\n[optimizer]\nlr = 2e-3\n[training]\nepochs = {epochs}\nbatch_size = 32\n"
        );
        train_quietly(name, &config).1
    }

    #[test]
    fn a_gaussian_surrogate_reaches_the_mean_field_optimum_of_the_gaussian_target() {
        // The residual is linear in u: p_β(u | z) = N(u*, Λ⁻¹) with Λ = 2β JᵀJ. The reverse-KL
        // optimum of a diagonal Gaussian is mean u*, variances 1/Λ_ii; an untrained network
        // starts at σ ≈ u_scale, two orders of magnitude too wide.
        let eval = darcy("gaussian", "gaussian", 60);
        let t = &eval["target"];
        let mf = t["spread_vs_mean_field"].as_f64().unwrap();
        assert!((mf - 1.0).abs() < 0.25, "spread / mean-field optimum {mf}");
        let marg = t["spread_vs_marginal"].as_f64().unwrap();
        assert!(marg < mf, "reverse KL under-disperses: {marg} vs {mf}");
        let rel = eval["forward"]["rel_l2"].as_f64().unwrap();
        assert!(rel < 0.1, "rel_l2 {rel}");
    }
}
