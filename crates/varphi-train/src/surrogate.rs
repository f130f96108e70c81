//! What the kinds with a forward probabilistic surrogate `q(u | z)` (pddlvm, boltzmann) share:
//! scoring its predictive samples against the reference solutions, the `samples.png` plot and
//! `varphi sample` at given parameters. The kind supplies the surrogate as a closure from
//! normalised parameters and standard-normal noise to samples in physical units.

use crate::calibration::{Role, Scorer};
use crate::config::invalid;
use crate::data::RunData;
use crate::error::{TrainError, io_err};
use crate::host::{per_sample, repeat_rows, values};
use crate::kind::{Prediction, SampleRequest, input_rows};
use crate::noise::{NoiseSource, Stream};
use crate::physics_term::PhysicsTerm;
use crate::plots;
use crate::uq::UqScores;
use burn::prelude::*;
use std::path::Path;

/// Predictive samples of a forward surrogate scored against the reference solutions.
pub struct ForwardScores {
    /// Block `forward` (with the model-error term where configured), `forward.q` and the
    /// term's scale.
    pub widened: Widened,
    /// Mean `‖r(u_s, z)‖₂` (PDE and boundary rows, unpreconditioned) of the samples.
    pub residual_norm: f64,
    /// The same for the reference solutions (the discretisation's floor).
    pub reference_residual_norm: f64,
    /// The surrogate's own samples of `q(u | z)` (without the model-error draws), `[s·n·n_u]`
    /// sample-major (host copy, for further checks).
    pub samples: Vec<f64>,
}

/// The model-error term on the test cases: the estimated discrepancy scale `τ̂(z)` (no
/// labels) beside the RMS error the mean actually has (labels), both over the free entries.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelErrorSummary {
    /// `√(mean_z τ̂²(z))`.
    pub tau_rms: f64,
    /// Median of `τ̂(z)` over the cases.
    pub tau_median: f64,
    /// `√(mean_z ‖μ(z) − u*(z)‖²/n_free)`: what `τ̂` estimates.
    pub actual_rms_error: f64,
    /// Pearson correlation over the cases of `log τ̂(z)` with the log RMS error of the case:
    /// does the estimate know which cases are hard?
    pub log_correlation: f64,
}

/// The line `varphi eval` prints for the model-error term.
pub fn print_model_error(m: Option<&ModelErrorSummary>) {
    if let Some(m) = m {
        println!(
            "  model-error term: τ̂ rms {:.3e} (median {:.3e}) vs actual rms error of the mean {:.3e}; corr(log τ̂, log error) over cases {:.2}",
            m.tau_rms, m.tau_median, m.actual_rms_error, m.log_correlation
        );
    }
}

/// The 0/1 row `[1, n_u]` of the solution entries a boundary condition does not fix.
fn free_row(physics: &PhysicsTerm, device: &Device) -> Tensor<2> {
    let nu: usize = physics.problem.solution_shape().iter().product();
    let mut free = vec![0.0; nu];
    physics
        .problem
        .observable()
        .into_iter()
        .for_each(|i| free[i] = 1.0);
    Tensor::from_data(TensorData::new(free, [1, nu]), device)
}

/// The surrogate's samples `[s·b, n_u]` (physical units, sample-major) with the model-error
/// term added where configured ([`varphi_losses::ModelError::widen`]: the variance the samples
/// lack of `τ̂²(z)`), `τ̂²(z)` from the residual of `mean`
/// `[b, n_u]` at physical parameters `z_phys` `[b, p]` ([`varphi_losses::ModelError`]).
/// `noise` gives the probes (its step `k`) and the draws (step `k + 1`). Returns the samples and
/// `τ̂²` (`None` without the term).
pub fn with_model_error(
    physics: &PhysicsTerm,
    samples: Tensor<2>,
    mean: Tensor<2>,
    z_phys: Tensor<2>,
    noise: NoiseSource,
    k: usize,
) -> (Tensor<2>, Option<Vec<f64>>) {
    let Some(me) = physics.model_error else {
        return (samples, None);
    };
    let [b, nu] = mean.dims();
    let s = samples.dims()[0] / b.max(1);
    let device = mean.device();
    let free = free_row(physics, &device);
    let reps = repeat_rows(z_phys, me.probes + 1);
    let var = me.variance(
        |u| physics.residual(u, reps.clone()).all(),
        mean,
        free.clone(),
        noise.normal([me.probes, b, nu], k, &device),
    );
    let wide = varphi_losses::ModelError::widen(
        samples.reshape([s, b, nu]),
        var.clone(),
        free,
        noise.normal([s, b, nu], k + 1, &device),
    );
    (wide.reshape([s * b, nu]), Some(values(var)))
}

/// [`ModelErrorSummary`] of `τ̂²` per case against the mean's actual error.
fn summarise(physics: &PhysicsTerm, var: &[f64], mean: &[f64], truth: &[f64]) -> ModelErrorSummary {
    let n = var.len();
    let nu = truth.len() / n.max(1);
    let free = physics.problem.observable();
    let err: Vec<f64> = (0..n)
        .map(|c| {
            let sq: f64 = free
                .iter()
                .map(|&i| (mean[c * nu + i] - truth[c * nu + i]).powi(2))
                .sum();
            sq / free.len().max(1) as f64
        })
        .collect();
    let mut tau: Vec<f64> = var.iter().map(|v| v.sqrt()).collect();
    let mean_of = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (lt, le): (Vec<f64>, Vec<f64>) = tau
        .iter()
        .zip(&err)
        .map(|(t, e)| (t.max(1e-300).ln(), e.sqrt().max(1e-300).ln()))
        .unzip();
    let (mt, mle) = (mean_of(&lt), mean_of(&le));
    let cov: f64 = lt.iter().zip(&le).map(|(a, b)| (a - mt) * (b - mle)).sum();
    let sd = |v: &[f64], m: f64| v.iter().map(|a| (a - m).powi(2)).sum::<f64>().sqrt();
    let log_correlation = cov / (sd(&lt, mt) * sd(&le, mle)).max(1e-300);
    tau.sort_by(f64::total_cmp);
    ModelErrorSummary {
        tau_rms: mean_of(var).sqrt(),
        tau_median: tau.get(n / 2).copied().unwrap_or(0.0),
        actual_rms_error: mean_of(&err).sqrt(),
        log_correlation,
    }
}

/// The first (up to) `max_cases` test cases: reference solutions (physical units, `[n·n_u]`),
/// normalised parameters `[n, p]`.
pub fn test_cases(
    data: &RunData,
    max_cases: usize,
    device: &Device,
) -> Result<(Vec<f64>, Tensor<2>), TrainError> {
    let n = data.test.len().min(max_cases);
    let idx: Vec<usize> = (0..n).collect();
    let (x, cond) = data.test.batch(&idx, device);
    let z = cond.ok_or_else(|| invalid("data.kind", "the test data carry no parameters"))?;
    let mut truth = values(x);
    data.norm.invert_x(&mut truth);
    Ok((truth, z))
}

/// The scores of a surrogate's predictive with and without the model-error term.
pub struct Widened {
    /// Block `name`: with the term where configured, the surrogate alone otherwise.
    pub scores: UqScores,
    /// With the term: block `name.q`, the surrogate alone.
    pub surrogate_only: Option<UqScores>,
    /// With the term: its scale beside the mean's actual error.
    pub model_error: Option<ModelErrorSummary>,
}

/// Score samples `u` `[s·n, n_u]` of a surrogate (physical units, sample-major) against
/// `truth` `[n·n_u]` as block `name`, with the model-error term from the surrogate's `mean`
/// `[n, n_u]` at physical parameters `z_phys` `[n, p]` where `physics` configures it (then
/// block `name.q` scores the surrogate alone).
#[allow(clippy::too_many_arguments)]
pub fn score_widened(
    scorer: &Scorer,
    name: &str,
    physics: &PhysicsTerm,
    u: Tensor<2>,
    mean: Tensor<2>,
    truth: &[f64],
    z_phys: Tensor<2>,
    seed: u64,
) -> Widened {
    let [n, nu] = mean.dims();
    let noise = NoiseSource::new(seed, Stream::ModelError);
    let mean_host = values(mean.clone());
    let raw = u.clone();
    let (u, var) = with_model_error(physics, u, mean, z_phys, noise, 0);
    let surrogate_only = var.as_ref().map(|_| {
        let raw = per_sample(values(raw), n, nu);
        scorer.score(&format!("{name}.q"), &raw, truth, n, Role::Predictive)
    });
    Widened {
        scores: scorer.score(
            name,
            &per_sample(values(u), n, nu),
            truth,
            n,
            Role::Predictive,
        ),
        surrogate_only,
        model_error: var.map(|v| summarise(physics, &v, &mean_host, truth)),
    }
}

/// Score samples `u` `[s·n, n_u]` of `q(u | z)` (physical units, sample-major) against `truth`
/// `[n·n_u]` at physical parameters `z_phys` `[n, p]`, as block `"forward"` of `scorer`; with
/// the model-error term (from the surrogate's `mean` `[n, n_u]`), `"forward"` is the widened
/// predictive and `"forward.q"` the surrogate alone.
pub fn score_forward(
    scorer: &Scorer,
    physics: &PhysicsTerm,
    u: Tensor<2>,
    mean: Tensor<2>,
    truth: &[f64],
    z_phys: Tensor<2>,
    seed: u64,
) -> ForwardScores {
    let [n, _] = z_phys.dims();
    let nu = u.dims()[1];
    let s = u.dims()[0] / n.max(1);
    let device = u.device();
    // (Of the surrogate's own samples: the model-error draws are not solutions.)
    let norm_of = |u: Tensor<2>, z: Tensor<2>| {
        let r = physics.problem.residual(u, z).all();
        values(r.powi_scalar(2).sum_dim(1).sqrt().mean().unsqueeze::<2>())[0]
    };
    let residual_norm = norm_of(u.clone(), repeat_rows(z_phys.clone(), s));
    let raw = values(u.clone());
    let widened = score_widened(
        scorer,
        "forward",
        physics,
        u,
        mean,
        truth,
        z_phys.clone(),
        seed,
    );
    let truth_t = Tensor::<2>::from_data(TensorData::new(truth.to_vec(), [n, nu]), &device);
    ForwardScores {
        widened,
        residual_norm,
        reference_residual_norm: norm_of(truth_t, z_phys),
        samples: raw,
    }
}

/// `samples.png`: reference, surrogate mean and one sample for the first (up to) 4 test cases.
/// `surrogate(z, eps)` returns the mean `[k, n_u]` and one sample per case (physical units)
/// for normalised parameters `z` `[k, p]` and noise `eps` `[1, k, n_u]`.
pub fn plot_forward(
    data: &RunData,
    dir: &Path,
    device: &Device,
    surrogate: impl Fn(Tensor<2>, Tensor<3>) -> (Tensor<2>, Tensor<2>),
) -> Result<(), TrainError> {
    let (truth, z) = test_cases(data, 4, device)?;
    let k = z.dims()[0];
    let nu = truth.len() / k.max(1);
    // (Seed 0: the plot's noise does not depend on the run's seed.)
    let eps = NoiseSource::new(0, Stream::Plot).normal([1, k, nu], 0, device);
    let (mean, sample) = surrogate(z, eps);
    let split = |v: Vec<f64>| v.chunks(nu).map(<[f64]>::to_vec).collect::<Vec<_>>();
    plots::plot_samples_titled(
        &split(truth),
        &split(values(mean)),
        &split(values(sample)),
        &data.test.sample_shape,
        &dir.join("samples.png"),
        &plots::SURROGATE_TITLES,
    )
}

/// `varphi sample` of a surrogate: `request.n` samples `u ~ q(u | z)` at the physical
/// parameters `--condition` (or, without it, those of the first test case), written as
/// `.npy` of shape `[n, solution shape…]`, with the model-error term where configured.
/// `surrogate(z, eps)` maps normalised parameters
/// `[1, p]` and noise `[n, 1, n_u]` to samples `[n, n_u]` in physical units. Returns the line
/// to print.
pub fn sample_forward(
    physics: &PhysicsTerm,
    data: &RunData,
    seed: u64,
    request: &SampleRequest,
    device: &Device,
    surrogate: impl Fn(Tensor<2>, Tensor<3>) -> Tensor<2>,
) -> Result<String, TrainError> {
    if request.noise {
        return Err(invalid(
            "--noise",
            "is for data likelihoods; a surrogate's samples already carry its predictive spread",
        ));
    }
    let n = request.n;
    let p = physics.cond_mean.len();
    let problem = &physics.problem;
    let what = format!(
        "{} parameter value(s) ({})",
        problem.name(),
        if p <= 8 {
            problem.param_names().join(", ")
        } else {
            "the coefficient field".into()
        }
    );
    let z: Vec<f64> = match request.condition_of(p, &what)? {
        Some(v) => v.to_vec(),
        None => {
            let (_, cond) = test_cases(data, 1, device)?;
            values(physics.physical(cond))
        }
    };
    let zt = Tensor::<2>::from_data(TensorData::new(z.clone(), [1, p]), device);
    let nu: usize = problem.solution_shape().iter().product();
    let eps = NoiseSource::new(seed, Stream::Sample).normal([n, 1, nu], 0, device);
    let zn = physics.normalised(zt.clone());
    let mean = surrogate(zn.clone(), Tensor::zeros([1, 1, nu], device));
    let noise = NoiseSource::new(seed, Stream::ModelError);
    let (samples, var) = with_model_error(physics, surrogate(zn, eps), mean, zt, noise, 2);
    let samples = values(samples);
    let mut shape = vec![n];
    shape.extend(problem.solution_shape());
    let out = &request.out;
    varphi_data::npy::save_npy_f32(out, &shape, &samples).map_err(io_err(out))?;
    let shown: Vec<String> = z.iter().take(6).map(|v| format!("{v:.4}")).collect();
    let with = match var {
        Some(v) => format!(
            " with the model-error term (τ̂ = {:.3e}; [objective.residual] model_error = false to leave it out)",
            v[0].sqrt()
        ),
        None => String::new(),
    };
    Ok(format!(
        "wrote {n} surrogate samples u ~ q(u|z) {:?} to {} (z = [{}{}]){with}",
        problem.solution_shape(),
        out.display(),
        shown.join(", "),
        if z.len() > 6 { ", ..." } else { "" }
    ))
}

/// `varphi predict` of a surrogate: `n` samples `u ~ q(u | z)` for each row of physical
/// parameters `inputs` `[rows, p]`. `surrogate(z, eps)` maps normalised parameters `[rows, p]`
/// and noise `[n, rows, n_u]` to samples `[n · rows, n_u]` in physical units (sample-major).
/// The noise is the evaluation's, so the first test cases' parameters give `varphi eval`'s
/// forward samples; the model-error term is added where configured.
pub fn predict_forward(
    physics: &PhysicsTerm,
    inputs: &varphi_data::read::Array,
    n: usize,
    seed: u64,
    device: &Device,
    surrogate: impl Fn(Tensor<2>, Tensor<3>) -> Tensor<2>,
) -> Result<Prediction, TrainError> {
    let p = physics.cond_mean.len();
    let problem = &physics.problem;
    let rows = input_rows(inputs, p, &format!("{} parameter row", problem.name()))?;
    let z = Tensor::<2>::from_data(TensorData::new(inputs.data.clone(), [rows, p]), device);
    let nu: usize = problem.solution_shape().iter().product();
    let eps = NoiseSource::new(seed, Stream::EvalPredictive).normal([n, rows, nu], 0, device);
    let zn = physics.normalised(z.clone());
    let mean = surrogate(zn.clone(), Tensor::zeros([1, rows, nu], device));
    let noise = NoiseSource::new(seed, Stream::ModelError);
    let (u, _) = with_model_error(physics, surrogate(zn, eps), mean, z, noise, 0);
    let u = values(u);
    Ok(Prediction {
        samples: per_sample(u, rows, nu),
        shape: problem.solution_shape(),
        what: "u | z".into(),
        block: Some("forward"),
    })
}
