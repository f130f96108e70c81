//! `kind = "pinn"`: a parametric physics-informed network `u(x; z)`, an MLP of the coordinates
//! and the (normalised) PDE parameters ([`varphi_models::CoordinateDecoder`]), trained from
//! parameter draws alone on the PDE's strong form at random collocation points:
//!
//! ```text
//! loss = E_{p(z)} [ mean_j R(x_j; u, z)² + λ_b mean_b (u(x_b; z) − g(x_b; z))² ],
//! x_j ~ U(domain) afresh each step,
//! ```
//!
//! the negative log-likelihood of the virtual observations `R = 0` and `u = g` with noise
//! scales in the ratio `σ_b/σ_r = λ_b^(−1/2)`, up to a factor. `u′`, `u″` come from Taylor-mode
//! propagation through the network (first-order autodiff only), the residual from the problem's
//! [`varphi_physics::pde::StrongForm`]. A PINN is a point estimate: `varphi eval` reports its
//! error against the reference solver at the grid nodes and its residuals, not calibration.
//! Problems with a strong form: `poisson1d` (`x`), `heat` (`(t, x)`) and `darcy` (`(x, y)`, the
//! nodal coefficient interpolated bilinearly).

use crate::config::{
    ActivationName, Common, SectionError, check_hidden, check_positive, d_hidden, invalid,
    kind_sections, to_table,
};
use crate::data::{RunData, TrainData};
use crate::error::TrainError;
use crate::host::{mean_of, repeat_rows, values};
use crate::kind::{Kind, Loaded, SampleRequest};
use crate::noise::{NoiseSource, Stream};
use crate::physics_term::PhysicsTerm;
use crate::plots;
use crate::surrogate;
use crate::trainer::{Objective, StepOutput};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use varphi_models::{Activation, CoordinateDecoder, CoordinateDecoderConfig, Jet};
use varphi_physics::pde::{PointJet, Problem, StrongForm};

/// `[model]` of a pinn run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnModelSection {
    /// Hidden widths.
    #[serde(default = "d_hidden")]
    pub hidden: Vec<usize>,
    /// A smooth activation (second derivatives are taken): tanh, sin, softplus, gelu, silu.
    #[serde(default = "d_tanh")]
    pub activation: ActivationName,
}

fn d_tanh() -> ActivationName {
    ActivationName::Tanh
}

/// `[objective]` of a pinn run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnObjectiveSection {
    /// Collocation points per step (shared by the batch, drawn afresh each step).
    #[serde(default = "d_collocation")]
    pub collocation: usize,
    /// λ_b, the weight of the Dirichlet rows.
    #[serde(default = "d_boundary_weight")]
    pub boundary_weight: f64,
    /// Physical scale of `u`: the network predicts `u / u_scale`.
    #[serde(default = "d_unit")]
    pub u_scale: f64,
}

fn d_collocation() -> usize {
    64
}
fn d_boundary_weight() -> f64 {
    10.0
}
fn d_unit() -> f64 {
    1.0
}

/// The config of a `pinn` run.
#[derive(Debug, Clone, PartialEq)]
pub struct Pinn {
    /// `[model]`.
    pub model: PinnModelSection,
    /// `[objective]`.
    pub objective: PinnObjectiveSection,
}

/// The objective: strong-form residuals at collocation points plus Dirichlet penalties.
pub struct PinnObjective {
    /// The problem (its strong form, checked in `build`) and the parameter normalisation.
    pub physics: PhysicsTerm,
    /// Collocation points per step.
    pub collocation: usize,
    /// λ_b.
    pub boundary_weight: f64,
    /// Physical scale of `u`.
    pub u_scale: f64,
    /// Collocation noise.
    pub noise: NoiseSource,
}

/// The strong form of `problem`, or the error naming what to change.
fn strong_form(problem: &dyn Problem) -> Result<&dyn StrongForm, TrainError> {
    problem.strong_form().ok_or_else(|| {
        invalid(
            "data.kind",
            format!(
                "the {} problem has no pointwise strong form for collocation residuals (pinn supports poisson1d, heat and darcy); use kind = \"pddlvm\" or \"boltzmann\" with its discrete residual",
                problem.name()
            ),
        )
    })
}

/// A `[rows, c]` tensor of points.
fn points(p: &[Vec<f64>], device: &Device) -> Tensor<2> {
    let c = p.first().map_or(0, Vec::len);
    let flat: Vec<f64> = p.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [p.len(), c]), device)
}

impl PinnObjective {
    /// `z` `[b, p]` repeated for each of `n` points, sample-major: `[b·n, p]`.
    fn per_point(z: Tensor<2>, n: usize) -> Tensor<2> {
        let [b, p] = z.dims();
        z.unsqueeze_dim::<3>(1)
            .expand([b, n, p])
            .reshape([b * n, p])
    }

    /// The jet of `u = u_scale · net` in physical units.
    fn point_jet(&self, jet: Jet) -> PointJet {
        let c = jet.grad.dims()[1];
        let s = self.u_scale;
        PointJet {
            u: jet.value.clone().mul_scalar(s),
            grad: (0..c).map(|k| jet.d(k).mul_scalar(s)).collect(),
            hess: (0..c)
                .map(|k| (0..c).map(|l| jet.d2(k, l).mul_scalar(s)).collect())
                .collect(),
        }
    }

    /// Strong residuals `[b, n]` at points `x` `[n, c]` for normalised parameters `z` `[b, p]`.
    pub fn residual(
        &self,
        form: &dyn StrongForm,
        net: &CoordinateDecoder,
        x: Tensor<2>,
        z: Tensor<2>,
    ) -> Tensor<2> {
        let (n, b) = (x.dims()[0], z.dims()[0]);
        let jet = self.point_jet(net.forward_with_derivatives(x.clone(), z.clone()));
        let z_phys = Self::per_point(self.physics.physical(z), n);
        form.strong_residual(repeat_rows(x, b), &jet, z_phys)
            .reshape([b, n])
    }

    /// Dirichlet misfits `u − g` `[b, n_b]` for normalised parameters `z` `[b, p]`.
    pub fn boundary(
        &self,
        form: &dyn StrongForm,
        net: &CoordinateDecoder,
        z: Tensor<2>,
    ) -> Tensor<2> {
        let device = z.device();
        let xb = points(&form.dirichlet_points(), &device);
        let (n, b) = (xb.dims()[0], z.dims()[0]);
        let u = net
            .forward(xb.clone(), z.clone())
            .reshape([b, n])
            .mul_scalar(self.u_scale);
        let g = form.dirichlet_values(
            repeat_rows(xb, b),
            Self::per_point(self.physics.physical(z), n),
        );
        u - g.reshape([b, n])
    }

    /// `n` uniform points in the problem's box for step `step`, `[n, c]`.
    fn collocation_points(
        &self,
        form: &dyn StrongForm,
        n: usize,
        step: usize,
        stream: u64,
        device: &Device,
    ) -> Tensor<2> {
        let domain = form.domain();
        let c = domain.len();
        let u = self.noise.offset(stream).uniform(n * c, step);
        let x: Vec<f64> = u
            .chunks(c)
            .flat_map(|row| {
                row.iter()
                    .zip(&domain)
                    .map(|(v, [lo, hi])| lo + (hi - lo) * v)
                    .collect::<Vec<_>>()
            })
            .collect();
        Tensor::from_data(TensorData::new(x, [n, c]), device)
    }
}

impl Objective<CoordinateDecoder> for PinnObjective {
    fn step(
        &self,
        model: &CoordinateDecoder,
        x: Tensor<2>,
        cond: Option<Tensor<2>>,
        step: usize,
        noise_stream: u64,
    ) -> StepOutput {
        let device = x.device();
        let z = cond.unwrap_or_else(|| Tensor::zeros([x.dims()[0], 0], &device));
        // `build` refuses a problem without a strong form, so this objective always has one.
        let form = strong_form(self.physics.problem.as_ref()).unwrap_or_else(|e| panic!("{e}"));
        let xc = self.collocation_points(form, self.collocation, step, noise_stream, &device);
        let r2 = self
            .residual(form, model, xc, z.clone())
            .powi_scalar(2)
            .mean_dim(1)
            .squeeze_dim::<1>(1);
        let b2 = self
            .boundary(form, model, z)
            .powi_scalar(2)
            .mean_dim(1)
            .squeeze_dim::<1>(1);
        let loss = (r2.clone() + b2.clone().mul_scalar(self.boundary_weight)).mean();
        StepOutput {
            terms: vec![
                ("residual_sq", mean_of(r2.detach())),
                ("boundary_sq", mean_of(b2.detach())),
                ("loss", mean_of(loss.clone().detach())),
            ],
            loss,
            beta: None,
        }
    }
}

/// `eval.json` of a pinn run.
#[derive(Debug, Clone, Serialize)]
pub struct PinnEval {
    /// Test cases scored.
    pub n_test: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// `‖u_θ − u*‖ / ‖u*‖` over the grid nodes of all test cases, `u*` the reference solver's.
    pub rel_l2: f64,
    /// `max |u_θ − u*|` over nodes and cases.
    pub max_abs_error: f64,
    /// RMS strong residual at evenly spaced interior points (256 on a line, 16 × 16 in 2-D;
    /// the first 32 test cases).
    pub strong_residual_rms: f64,
    /// RMS Dirichlet misfit.
    pub boundary_rms: f64,
    /// Mean `‖r(u_θ, z)‖₂` of the discrete residual (unpreconditioned) at the grid nodes.
    pub residual_norm: f64,
    /// The same for the reference solutions (the discretisation's floor).
    pub reference_residual_norm: f64,
}

impl Kind for Pinn {
    const NAME: &'static str = "pinn";
    const SUMMARY_TERMS: &'static [&'static str] = &["loss", "residual_sq", "boundary_sq"];
    type Model = CoordinateDecoder;
    type Objective = PinnObjective;
    type Eval = PinnEval;

    fn from_tables(model: toml::Table, objective: toml::Table) -> Result<Self, SectionError> {
        let (model, objective) = kind_sections(model, objective, Self::NAME)?;
        Ok(Self { model, objective })
    }

    fn to_tables(&self) -> (toml::Table, toml::Table) {
        (to_table(&self.model), to_table(&self.objective))
    }

    fn validate(&self, common: &Common) -> Result<(), TrainError> {
        check_hidden(&self.model.hidden)?;
        if self.model.activation == ActivationName::Relu {
            return Err(invalid(
                "model.activation",
                "relu has no second derivative; use tanh, sin, softplus, gelu or silu",
            ));
        }
        let o = &self.objective;
        if o.collocation == 0 {
            return Err(invalid("objective.collocation", "must be at least 1"));
        }
        if !(o.boundary_weight >= 0.0 && o.boundary_weight.is_finite()) {
            return Err(invalid(
                "objective.boundary_weight",
                format!("must be ≥ 0, got {}", o.boundary_weight),
            ));
        }
        check_positive("objective.u_scale", o.u_scale)?;
        let (_, physics) = common.physics_source("kind = \"pinn\"")?;
        strong_form(physics.build().as_ref())?;
        Ok(())
    }

    fn check_data(&self, _common: &Common, data: &TrainData) -> Result<(), TrainError> {
        if data.run.shape().cond_dim == 0 {
            return Err(invalid(
                "data.kind",
                "a pinn run needs the parameters of each sample (a physics data source)",
            ));
        }
        Ok(())
    }

    fn build(
        &self,
        common: &Common,
        data: &RunData,
        device: &Device,
    ) -> Result<(CoordinateDecoder, PinnObjective), TrainError> {
        let physics = PhysicsTerm::new(&common.data, None, &data.norm)?;
        let coords = strong_form(physics.problem.as_ref())?.domain().len();
        let act: Activation = self.model.activation.into();
        let net =
            CoordinateDecoderConfig::new(coords, data.shape().cond_dim, self.model.hidden.clone())
                .with_activation(act)
                .init(device);
        let o = &self.objective;
        Ok((
            net,
            PinnObjective {
                physics,
                collocation: o.collocation,
                boundary_weight: o.boundary_weight,
                u_scale: o.u_scale,
                noise: NoiseSource::new(common.seed, Stream::Train),
            },
        ))
    }

    /// `samples.png`: reference, prediction and error on the first (up to) 4 test cases.
    fn plot(&self, run: &Loaded<Self>) -> Result<(), TrainError> {
        let device = &run.device.device;
        let o = &run.objective;
        let (truth, z) = surrogate::test_cases(&run.data, 4, device)?;
        let k = z.dims()[0];
        let nodes = grid_nodes(&o.physics);
        let nu = nodes.len();
        if nu * k != truth.len() {
            // `varphi eval` names the mismatch.
            return Ok(());
        }
        let pred = values(
            run.model
                .forward(points(&nodes, device), z)
                .reshape([k, nu])
                .mul_scalar(o.u_scale),
        );
        let err: Vec<f64> = pred.iter().zip(&truth).map(|(p, t)| p - t).collect();
        let split = |v: &[f64]| v.chunks(nu).map(<[f64]>::to_vec).collect::<Vec<_>>();
        plots::plot_samples_titled(
            &split(&truth),
            &split(&pred),
            &split(&err),
            &run.data.test.sample_shape,
            &run.dir.join("samples.png"),
            &plots::PINN_TITLES,
        )
    }

    fn evaluate(&self, run: &Loaded<Self>) -> Result<PinnEval, TrainError> {
        evaluate(run)
    }

    fn print_eval(&self, r: &PinnEval, dir: &Path) {
        println!(
            "evaluation of {} ({} test cases, {} epochs; a PINN is a point estimate: no predictive spread to calibrate)",
            dir.display(),
            r.n_test,
            r.epochs
        );
        println!("  relative L2 vs the reference solver  {:.5}", r.rel_l2);
        println!(
            "  max |u − u*|                         {:.4e}",
            r.max_abs_error
        );
        println!(
            "  strong residual RMS                  {:.4e}",
            r.strong_residual_rms
        );
        println!(
            "  Dirichlet misfit RMS                 {:.4e}",
            r.boundary_rms
        );
        println!(
            "  discrete residual norm {:.4e} (reference solutions: {:.4e})",
            r.residual_norm, r.reference_residual_norm
        );
    }

    fn sample(&self, run: &Loaded<Self>, _request: &SampleRequest) -> Result<String, TrainError> {
        Err(TrainError::Run {
            path: run.dir.clone(),
            message: "is a run of kind \"pinn\", a point estimate u(x; z) with no distribution to sample; `varphi eval` scores it".into(),
        })
    }
}

/// Every point of the tensor grid of `axes`, row-major (the last axis fastest), `[Π len][c]`.
fn tensor_grid(axes: &[Vec<f64>]) -> Vec<Vec<f64>> {
    axes.iter().fold(vec![Vec::new()], |points, axis| {
        points
            .into_iter()
            .flat_map(|prefix| {
                axis.iter().map(move |&v| {
                    let mut p = prefix.clone();
                    p.push(v);
                    p
                })
            })
            .collect()
    })
}

/// The grid nodes of the problem's solution, row-major over its axes, `[n_u][c]`.
fn grid_nodes(physics: &PhysicsTerm) -> Vec<Vec<f64>> {
    let axes: Vec<Vec<f64>> = physics
        .problem
        .coordinates()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    tensor_grid(&axes)
}

/// Score the first (up to) 200 test cases.
fn evaluate(run: &Loaded<Pinn>) -> Result<PinnEval, TrainError> {
    let device = &run.device.device;
    let o = &run.objective;
    let form = strong_form(o.physics.problem.as_ref())?;
    let (truth, z) = surrogate::test_cases(&run.data, 200, device)?;
    let n = z.dims()[0];
    let nodes = grid_nodes(&o.physics);
    let nu = nodes.len();
    if nu * n != truth.len() {
        return Err(invalid(
            "data",
            format!(
                "the solutions have {} values per case but the problem's grid has {nu} nodes",
                truth.len() / n.max(1)
            ),
        ));
    }
    let u = run
        .model
        .forward(points(&nodes, device), z.clone())
        .reshape([n, nu])
        .mul_scalar(o.u_scale);
    let pred = values(u.clone());
    let (mut err2, mut norm2, mut max_abs) = (0.0, 0.0, 0.0f64);
    for (p, t) in pred.iter().zip(&truth) {
        err2 += (p - t).powi(2);
        norm2 += t * t;
        max_abs = max_abs.max((p - t).abs());
    }
    // Evenly spaced interior points: a tensor grid.
    let domain = form.domain();
    let per_axis = if domain.len() == 1 { 256 } else { 16 };
    let lines: Vec<Vec<f64>> = domain
        .iter()
        .map(|[lo, hi]| {
            (0..per_axis)
                .map(|i| lo + (hi - lo) * (i as f64 + 0.5) / per_axis as f64)
                .collect()
        })
        .collect();
    let xs = tensor_grid(&lines);
    let rms = |t: Tensor<2>| mean_of(t.powi_scalar(2).flatten::<1>(0, 1)).sqrt();
    // (The jets of every point of every case would not fit: the first 32 cases.)
    let strong = rms(o.residual(
        form,
        &run.model,
        points(&xs, device),
        z.clone().narrow(0, 0, n.min(32)),
    ));
    let boundary = rms(o.boundary(form, &run.model, z.clone()));
    let z_phys = o.physics.physical(z);
    let norm_of = |u: Tensor<2>| {
        let r = o.physics.problem.residual(u, z_phys.clone()).all();
        mean_of(r.powi_scalar(2).sum_dim(1).sqrt().squeeze_dim::<1>(1))
    };
    let truth_t = Tensor::<2>::from_data(TensorData::new(truth.clone(), [n, nu]), device);
    Ok(PinnEval {
        n_test: n,
        epochs: run.epochs_done,
        rel_l2: (err2 / norm2.max(f64::MIN_POSITIVE)).sqrt(),
        max_abs_error: max_abs,
        strong_residual_rms: strong,
        boundary_rms: boundary,
        residual_norm: norm_of(u),
        reference_residual_norm: norm_of(truth_t),
    })
}

#[cfg(test)]
mod tests {
    use crate::tests_common::*;

    const BASE: &str = "[data]\nkind = \"poisson1d\"\nn = 24\ngrid = 17\n[model]\nkind = \"pinn\"\nhidden = [16]\n";

    #[test]
    fn keys_of_other_kinds_are_rejected_naming_the_key_and_the_kind() {
        rejects(
            &format!("{BASE}[objective]\nbeta = 4.0\n"),
            &["`beta`", "[objective]", "pinn", "collocation"],
        );
        rejects(
            &format!("{BASE}latent_dim = 4\n"),
            &["`latent_dim`", "[model]", "pinn", "hidden"],
        );
        rejects(
            &format!("{BASE}activation = \"relu\"\n"),
            &["model.activation", "second derivative"],
        );
        rejects(
            "[data]\nkind = \"burgers\"\nn = 8\n[model]\nkind = \"pinn\"\n",
            &["data.kind", "burgers", "strong form"],
        );
    }

    #[test]
    fn one_step_changes_the_weights_and_eval_matches_a_reload() {
        let config = format!(
            "seed = 2\n{BASE}[objective]\ncollocation = 16\n[training]\nepochs = 2\nbatch_size = 8\n"
        );
        one_step_changes_the_weights(&config);
        eval_of_a_trained_run_is_reproducible(&config, "rel_l2");
    }

    #[test]
    fn a_poisson_pinn_matches_the_newton_reference_solver() {
        // −(k(u, x)u′)′ = w with k = softplus(u s(x)) + 0.1 on 33 nodes, Chebyshev coefficients
        // in [−0.3, 0.3] (a narrower prior than RGNP's [−1, 1], for a test of ~1 000 steps);
        // the reference is Newton on linear elements. The network never sees a solution: an
        // untrained one is ~100 % off, and the residual falls by two orders of magnitude.
        let config = "seed = 3\n[data]\nkind = \"poisson1d\"\nn = 256\ngrid = 33\n[data.settings]\nz = [-0.3, 0.3]\n[model]\nkind = \"pinn\"\nhidden = [64, 64]\n[objective]\ncollocation = 64\nu_scale = 0.3\n[optimizer]\nlr = 3e-3\nlr_final = 1e-4\n[training]\nepochs = 120\nbatch_size = 32\n";
        let (m, eval) = train_quietly("pinn", config);
        let rel = eval["rel_l2"].as_f64().unwrap();
        assert!(rel < 0.06, "rel_l2 {rel}");
        let r = m.col("train_residual_sq");
        assert!(r.last().unwrap() < &(0.01 * r[0]), "{r:?}");
        let (res, floor) = (
            eval["residual_norm"].as_f64().unwrap(),
            eval["reference_residual_norm"].as_f64().unwrap(),
        );
        assert!(floor < 1e-4 && res < 0.1, "{res} vs {floor}");
    }
}
