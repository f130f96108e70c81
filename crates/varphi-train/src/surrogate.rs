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
    /// Relative L2 of the sample mean, NLL, CRPS, coverage by level.
    pub scores: UqScores,
    /// Mean `‖r(u_s, z)‖₂` (PDE and boundary rows, unpreconditioned) of the samples.
    pub residual_norm: f64,
    /// The same for the reference solutions (the discretisation's floor).
    pub reference_residual_norm: f64,
    /// The samples scored, `[s·n·n_u]` sample-major (host copy, for further checks).
    pub samples: Vec<f64>,
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

/// Score samples `u` `[s·n, n_u]` (physical units, sample-major) against `truth` `[n·n_u]` at
/// physical parameters `z_phys` `[n, p]`, as block `"forward"` of `scorer`.
pub fn score_forward(
    scorer: &Scorer,
    physics: &PhysicsTerm,
    u: Tensor<2>,
    truth: &[f64],
    z_phys: Tensor<2>,
    s: usize,
) -> ForwardScores {
    let [n, _] = z_phys.dims();
    let nu = u.dims()[1];
    let device = u.device();
    let flat = values(u.clone());
    let scores = scorer.score(
        "forward",
        &per_sample(flat.clone(), n, nu),
        truth,
        n,
        Role::Predictive,
    );
    let norm_of = |u: Tensor<2>, z: Tensor<2>| {
        let r = physics.problem.residual(u, z).all();
        values(r.powi_scalar(2).sum_dim(1).sqrt().mean().unsqueeze::<2>())[0]
    };
    let residual_norm = norm_of(u, repeat_rows(z_phys.clone(), s));
    let truth_t = Tensor::<2>::from_data(TensorData::new(truth.to_vec(), [n, nu]), &device);
    ForwardScores {
        scores,
        residual_norm,
        reference_residual_norm: norm_of(truth_t, z_phys),
        samples: flat,
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
/// `.npy` of shape `[n, solution shape…]`. `surrogate(z, eps)` maps normalised parameters
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
    let z: Vec<f64> = match &request.condition {
        Some(v) if v.len() == p => v.to_vec(),
        Some(v) => {
            return Err(invalid(
                "--condition",
                format!(
                    "this {} run takes {p} comma-separated parameter value(s) ({}), got {}",
                    problem.name(),
                    if p <= 8 {
                        problem.param_names().join(", ")
                    } else {
                        "the coefficient field".into()
                    },
                    v.len()
                ),
            ));
        }
        None => {
            let (_, cond) = test_cases(data, 1, device)?;
            values(physics.physical(cond))
        }
    };
    if let Some(bad) = z.iter().find(|v| !v.is_finite()) {
        return Err(invalid(
            "--condition",
            format!("parameter values must be finite, got {bad}"),
        ));
    }
    let zt = Tensor::<2>::from_data(TensorData::new(z.clone(), [1, p]), device);
    let nu: usize = problem.solution_shape().iter().product();
    let eps = NoiseSource::new(seed, Stream::Sample).normal([n, 1, nu], 0, device);
    let samples = values(surrogate(physics.normalised(zt), eps));
    let mut shape = vec![n];
    shape.extend(problem.solution_shape());
    let out = &request.out;
    varphi_data::npy::save_npy_f32(out, &shape, &samples).map_err(io_err(out))?;
    let shown: Vec<String> = z.iter().take(6).map(|v| format!("{v:.4}")).collect();
    Ok(format!(
        "wrote {n} surrogate samples u ~ q(u|z) {:?} to {} (z = [{}{}])",
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
/// forward samples.
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
    let u = values(surrogate(physics.normalised(z), eps));
    Ok(Prediction {
        samples: per_sample(u, rows, nu),
        shape: problem.solution_shape(),
        what: "u | z".into(),
        block: Some("forward"),
    })
}
