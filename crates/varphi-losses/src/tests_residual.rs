//! PDE residuals as likelihoods, against closed forms (f64).

use crate::elbo::ElboConfig;
use crate::observation::{ObservationLikelihood, ObservationOperator};
use crate::pde_residual::{ResidualBoltzmannConfig, ResidualLikelihoodConfig, SigmaSchedule};
use crate::tests::{Mat, matmul, spd_inverse, transpose};
use burn::module::Param;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::ops::PadMode;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use varphi_models::distributions::LN_2PI;
use varphi_models::testing::{self, cholesky, f64_device, vec};
use varphi_models::{DiagGaussian, FullGaussian, VariationalFamily};
use varphi_physics::fem::Fem1d;
use varphi_physics::pde::Residual;

/// `−u'' = f` on (0, 1) with `u(0) = u(1) = 0`, P1 elements, `d` interior unknowns:
/// `r(u) = K u − M f` (interior rows), boundary rows `u_0`, `u_{d+1}` (zero here).
struct LinearPde {
    d: usize,
    fem: Fem1d,
    f: Vec<f64>,
}

impl LinearPde {
    fn new(d: usize) -> Self {
        let h = 1.0 / (d + 1) as f64;
        let f = (0..d + 2).map(|i| 10.0 + 5.0 * (i as f64 * h)).collect();
        Self {
            d,
            fem: Fem1d::new(d + 2, h),
            f,
        }
    }

    /// Residual of interior values `u` `[batch, d]`.
    fn residual(&self, u: Tensor<2>) -> Residual {
        let device = u.device();
        let full = u.pad([(1, 1)], PadMode::Constant(0.0));
        let ones = Tensor::<2>::ones([1, self.d + 1], &device);
        let f = Tensor::<2>::from_data(TensorData::new(self.f.clone(), [1, self.d + 2]), &device);
        let r = self.fem.residual(full, ones, f, [0.0, 0.0]);
        Residual {
            pde: r.clone().narrow(1, 1, self.d),
            boundary: Tensor::cat(
                vec![r.clone().narrow(1, 0, 1), r.narrow(1, self.d + 1, 1)],
                1,
            ),
        }
    }

    /// `(K, M f)` on the interior.
    fn system(&self) -> (Mat, Vec<f64>) {
        let d = self.d;
        let mut k = vec![vec![0.0; d]; d];
        for (r, c, v) in self.fem.assemble(&vec![1.0; d + 1]) {
            if (1..=d).contains(&r) && (1..=d).contains(&c) {
                k[r - 1][c - 1] += v;
            }
        }
        let mf = self.fem.mass_vector(&self.f);
        (k, mf[1..=d].to_vec())
    }

    /// Posterior of `u` under `N(0, s² I)` prior and the virtual observation with `σ_r`.
    fn posterior(&self, sigma_r: f64, s: f64) -> (Vec<f64>, Mat) {
        let (k, mf) = self.system();
        let mut prec = matmul(&transpose(&k), &k);
        for (i, row) in prec.iter_mut().enumerate() {
            for v in row.iter_mut() {
                *v /= sigma_r * sigma_r;
            }
            row[i] += 1.0 / (s * s);
        }
        let cov = spd_inverse(&prec);
        let ktf: Vec<f64> = (0..self.d)
            .map(|i| (0..self.d).map(|j| k[j][i] * mf[j]).sum::<f64>() / (sigma_r * sigma_r))
            .collect();
        let mean = (0..self.d)
            .map(|i| (0..self.d).map(|j| cov[i][j] * ktf[j]).sum())
            .collect();
        (mean, cov)
    }
}

/// `S` standard-normal draws whose sample mean is 0 and sample covariance exactly `I`, so the
/// Monte-Carlo ELBO of a linear-Gaussian model equals its expectation.
pub(crate) fn whitened_noise(s: usize, d: usize, seed: u64) -> Tensor<3> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut e: Vec<Vec<f64>> = (0..s)
        .map(|_| (0..d).map(|_| StandardNormal.sample(&mut rng)).collect())
        .collect();
    for j in 0..d {
        let m = e.iter().map(|r| r[j]).sum::<f64>() / s as f64;
        e.iter_mut().for_each(|r| r[j] -= m);
    }
    let c: Mat = (0..d)
        .map(|i| {
            (0..d)
                .map(|j| e.iter().map(|r| r[i] * r[j]).sum::<f64>() / s as f64)
                .collect()
        })
        .collect();
    let l = cholesky(&c);
    // ε ← L⁻¹ ε per sample (forward substitution).
    let flat: Vec<f64> = e
        .iter()
        .flat_map(|r| {
            let mut y = vec![0.0; d];
            for i in 0..d {
                y[i] = (r[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
            }
            y
        })
        .collect();
    testing::tensor(flat, [s, 1, d], &f64_device())
}

#[derive(Module, Debug)]
struct Q {
    mean: Param<Tensor<2>>,
    raw: Param<Tensor<3>>,
}

impl Q {
    fn new(d: usize, device: &Device) -> Self {
        Self {
            mean: Param::from_tensor(Tensor::zeros([1, d], device)),
            raw: Param::from_tensor(Tensor::zeros([1, d, d], device)),
        }
    }
    fn q(&self) -> FullGaussian {
        FullGaussian::from_unconstrained(self.mean.val(), self.raw.val())
    }
}

/// Fit a full-covariance Gaussian `q(u)` to the virtual-observation ELBO by Adam.
fn fit(
    pde: &LinearPde,
    lik: ResidualLikelihoodConfig,
    prior_std: f64,
    steps: &[(usize, f64)],
) -> (Vec<f64>, Vec<f64>) {
    let ad = f64_device().autodiff();
    let d = pde.d;
    let eps = whitened_noise(64, d, 1);
    let eps = Tensor::<3>::from_data(eps.into_data(), &ad);
    let lik = lik.init(&ad);
    let elbo = ElboConfig::new().init();
    let prior = DiagGaussian::new(
        Tensor::zeros([1, d], &ad),
        Tensor::<2>::zeros([1, d], &ad).add_scalar(2.0 * prior_std.ln()),
    );
    let mut model = Q::new(d, &ad);
    let mut opt = AdamConfig::new().init();
    let mut step = 0;
    for &(n, lr) in steps {
        for _ in 0..n {
            let q = model.q();
            let out = elbo.forward(
                &q,
                &prior,
                eps.clone(),
                |u| {
                    let [s, b, _] = u.dims();
                    lik.log_prob(&pde.residual(u.reshape([s * b, d])), step)
                        .reshape([s, b])
                },
                step,
            );
            let grads = GradientsParams::from_grads(out.loss.backward(), &model);
            model = opt.step(lr, model, grads);
            step += 1;
        }
    }
    let q = model.q();
    (vec(q.mean.clone()), vec(q.covariance()))
}

#[test]
fn virtual_observation_elbo_optimum_is_the_gaussian_posterior() {
    let pde = LinearPde::new(4);
    let (sigma_r, s) = (5.0, 1.0);
    let (mean, cov) = fit(
        &pde,
        ResidualLikelihoodConfig::new(sigma_r),
        s,
        &[(3000, 0.02), (2000, 0.002), (1000, 0.0002)],
    );
    let (m0, c0) = pde.posterior(sigma_r, s);
    let c0: Vec<f64> = c0.into_iter().flatten().collect();
    for (a, b) in mean.iter().zip(&m0) {
        assert!((a - b).abs() < 1e-3, "mean {mean:?} vs {m0:?}");
    }
    for (a, b) in cov.iter().zip(&c0) {
        assert!((a - b).abs() < 1e-3, "cov {cov:?} vs {c0:?}");
    }
}

#[test]
fn annealing_sigma_to_zero_recovers_the_reference_solution() {
    let pde = LinearPde::new(4);
    let (k, mf) = pde.system();
    let u_ref: Vec<f64> = {
        let inv = spd_inverse(&k);
        (0..4)
            .map(|i| (0..4).map(|j| inv[i][j] * mf[j]).sum())
            .collect()
    };
    let scale = u_ref.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut errors = vec![];
    for sigma in [1.0, 0.1, 0.01] {
        let lik = ResidualLikelihoodConfig::new(sigma).with_schedule(SigmaSchedule::Anneal {
            initial: 5.0,
            steps: 2000,
        });
        let (mean, _) = fit(
            &pde,
            lik,
            1.0,
            &[(3000, 0.02), (2000, 0.002), (1000, 0.0002)],
        );
        errors.push(
            mean.iter()
                .zip(&u_ref)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
                / scale,
        );
    }
    // The prior pulls the mean toward 0 by O(σ_r²): the error falls as σ_r → 0.
    assert!(errors[0] > errors[1] && errors[1] > errors[2], "{errors:?}");
    assert!(errors[2] < 1e-3, "{errors:?}");
}

#[test]
fn residual_likelihood_matches_its_formula_and_schedules() {
    let d = f64_device();
    let r = Residual {
        pde: testing::tensor(vec![0.3, -0.4, 1.0, 0.0], [2, 2], &d),
        boundary: testing::tensor(vec![0.1, 0.2], [2, 1], &d),
    };
    let lik = ResidualLikelihoodConfig::new(0.5)
        .with_boundary_sigma(Some(0.1))
        .init(&d);
    let got = vec(lik.log_prob(&r, 0));
    let ln = |x: f64, s: f64| -0.5 * x * x / (s * s) - s.ln() - 0.5 * LN_2PI;
    let want = [
        ln(0.3, 0.5) + ln(-0.4, 0.5) + ln(0.1, 0.1),
        ln(1.0, 0.5) + ln(0.0, 0.5) + ln(0.2, 0.1),
    ];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
    let anneal = ResidualLikelihoodConfig::new(0.01)
        .with_schedule(SigmaSchedule::Anneal {
            initial: 1.0,
            steps: 100,
        })
        .init(&d);
    assert!((anneal.sigma_at(0) - 1.0).abs() < 1e-15);
    assert!((anneal.sigma_at(50) - 0.1).abs() < 1e-12);
    assert!(
        (anneal.sigma_at(100) - 0.01).abs() < 1e-15 && (anneal.sigma_at(1000) - 0.01).abs() < 1e-15
    );
    // Learned σ: d/d log σ Σ log N(0; r_i, σ²) = Σ r_i²/σ² − n (boundary rows follow σ).
    let ad = d.clone().autodiff();
    let lik = ResidualLikelihoodConfig::new(0.5)
        .with_schedule(SigmaSchedule::Learned)
        .init(&ad);
    let r = Residual {
        pde: Tensor::from_data(TensorData::new(vec![0.3, -0.4], [1, 2]), &ad),
        boundary: Tensor::from_data(TensorData::new(vec![0.1], [1, 1]), &ad),
    };
    let grads = lik.log_prob(&r, 0).sum().backward();
    let g = vec(lik.log_sigma.as_ref().unwrap().grad(&grads).unwrap())[0];
    let want = (0.09 + 0.16 + 0.01) / 0.25 - 3.0;
    assert!((g - want).abs() < 1e-12, "{g} vs {want}");
}

#[test]
fn boltzmann_objective_is_the_flat_prior_virtual_observation_elbo() {
    // With β = 1/(2σ²): E_q[β‖r‖²] − H[q] = −E_q log N(0; r, σ²) − H[q] − n(log σ + ½ log 2π).
    let dev = f64_device();
    let pde = LinearPde::new(3);
    let q = FullGaussian::from_unconstrained(
        testing::tensor(vec![0.2, 0.5, 0.1], [1, 3], &dev),
        testing::tensor(
            vec![-1.0, 0.0, 0.0, 0.3, -1.2, 0.0, 0.1, 0.2, -0.8],
            [1, 3, 3],
            &dev,
        ),
    );
    let eps = whitened_noise(32, 3, 2);
    let u = q.rsample(eps).reshape([32, 3]);
    let res = pde.residual(u);
    let sigma = 0.7;
    let sq = res.pde.clone().powi_scalar(2).sum_dim(1).reshape([32, 1]);
    let out = ResidualBoltzmannConfig::new(1.0 / (2.0 * sigma * sigma))
        .init()
        .forward(sq, q.entropy());
    let vo = ResidualLikelihoodConfig::new(sigma).init(&dev);
    let pde_only = Residual {
        pde: res.pde,
        boundary: Tensor::zeros([32, 0], &dev),
    };
    let ll = vec(vo.log_prob(&pde_only, 0)).iter().sum::<f64>() / 32.0;
    let h = vec(q.entropy())[0];
    let want = -ll - h - 3.0 * (sigma.ln() + 0.5 * LN_2PI);
    let got = vec(out.loss)[0];
    assert!((got - want).abs() < 1e-10, "{got} vs {want}");
}

#[test]
fn observation_operators_are_exact_for_bilinear_fields() {
    let dev = f64_device();
    let (nx, ny) = (5, 4);
    let field = |x: f64, y: f64| 1.0 + 2.0 * x - 3.0 * y + 4.0 * x * y;
    let g = varphi_physics::grid::Grid2d::closed([0.0, 2.0], [0.0, 1.0], nx, ny);
    let u = testing::tensor(g.eval(field), [1, nx * ny], &dev);
    let pts = [
        [0.3, 0.7],
        [1.99, 0.01],
        [0.0, 0.0],
        [2.0, 1.0],
        [1.25, 0.4],
    ];
    let h = ObservationOperator::bilinear(&pts, nx, ny, [0.0, 2.0], [0.0, 1.0]);
    let got = vec(h.apply(u.clone()));
    for (p, v) in pts.iter().zip(&got) {
        assert!((v - field(p[0], p[1])).abs() < 1e-12, "{p:?}: {v}");
    }
    let by = ObservationOperator::by_index(&[0, 7, 19]);
    assert_eq!(
        vec(by.apply(u.clone())),
        [field(0.0, 0.0), field(0.5, 1.0), field(2.0, 1.0)]
    );
    // Sub-sampling in time: a trajectory u(t_k, x_i) = 10k + i on 7 levels × 3 nodes.
    let traj: Vec<f64> = (0..7)
        .flat_map(|k| (0..3).map(move |i| (10 * k + i) as f64))
        .collect();
    let traj = testing::tensor(traj, [1, 21], &dev);
    let every3 = ObservationOperator::time_subsampled(7, 3, 3, Some(&[0, 2]));
    assert_eq!(
        vec(every3.apply(traj.clone())),
        [0.0, 2.0, 30.0, 32.0, 60.0, 62.0]
    );
    let all = ObservationOperator::time_subsampled(7, 3, 4, None);
    assert_eq!(vec(all.apply(traj)), [0.0, 1.0, 2.0, 40.0, 41.0, 42.0]);
    // Gaussian data likelihood.
    let lik = ObservationLikelihood {
        operator: by,
        sigma: 0.2,
    };
    let y = testing::tensor(vec![1.1, 0.0, 8.0], [1, 3], &dev);
    let mu = [field(0.0, 0.0), field(0.5, 1.0), field(2.0, 1.0)];
    let want: f64 = [1.1, 0.0, 8.0]
        .iter()
        .zip(mu)
        .map(|(y, m)| -0.5 * (y - m) * (y - m) / 0.04 - 0.2f64.ln() - 0.5 * LN_2PI)
        .sum();
    assert!((vec(lik.log_prob(y, u))[0] - want).abs() < 1e-12);
}

#[test]
fn pddlvm_bound_is_the_sum_of_its_terms_and_trains_a_physics_only_surrogate() {
    use crate::pddlvm::PddlvmElbo;
    use varphi_models::{EncoderConfig, MlpEncoderConfig, PddlvmConfig};
    use varphi_physics::pde::{
        NonlinearPoisson, NonlinearPoissonSettings, PdeResidual, Preconditioner, Problem,
    };
    let ad = f64_device().autodiff();
    ad.seed(3);
    let problem = NonlinearPoisson::new(NonlinearPoissonSettings::rgnp(9));
    let enc = |i: usize, o: usize| {
        EncoderConfig::Mlp(MlpEncoderConfig::new(i, o).with_hidden(vec![32, 32]))
    };
    let mut model = PddlvmConfig::new(enc(6, 9).into(), enc(9, 6).into()).init(&ad);
    let lik = ResidualLikelihoodConfig::new(1e-3)
        .with_schedule(SigmaSchedule::Anneal {
            initial: 0.1,
            steps: 300,
        })
        .init(&ad);
    let pinv = problem.preconditioner().unwrap().tensor(&ad);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let z: Vec<f64> = (0..32)
        .flat_map(|_| problem.sample_params(&mut rng))
        .collect();
    let z = Tensor::<2>::from_data(TensorData::new(z, [32, 6]), &ad);
    let eps_at = |k: u64| {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(100 + k);
        let v: Vec<f64> = (0..2 * 32 * 9)
            .map(|_| StandardNormal.sample(&mut r))
            .collect();
        Tensor::<3>::from_data(TensorData::new(v, [2, 32, 9]), &ad)
    };
    let log_res = |u: Tensor<2>, step: usize| {
        let zz = z
            .clone()
            .unsqueeze_dim::<3>(0)
            .expand([2, 32, 6])
            .reshape([64, 6]);
        lik.log_prob(
            &Preconditioner::apply_with(&pinv, problem.residual(u, zz)),
            step,
        )
    };
    // The bound equals E log p(r̂=0|u,z) + E log p(z|u) + H[q] computed by hand.
    let q = model.surrogate(z.clone());
    let out = PddlvmElbo.forward(
        &q,
        eps_at(0),
        z.clone(),
        |u| log_res(u, 0),
        |u| model.inverse(u),
    );
    let u = q.rsample(eps_at(0)).reshape([64, 9]);
    let by_hand = vec(log_res(u.clone(), 0)).iter().sum::<f64>() / 64.0
        + vec(model.inverse(u).log_prob(
            z.clone()
                .unsqueeze_dim::<3>(0)
                .expand([2, 32, 6])
                .reshape([1, 64, 6]),
        ))
        .iter()
        .sum::<f64>()
            / 64.0
        + vec(q.entropy()).iter().sum::<f64>() / 32.0;
    assert!((vec(out.loss)[0] + by_hand).abs() < 1e-9 * by_hand.abs().max(1.0));
    // A short physics-only run (no solution labels) brings the surrogate's mean near the
    // Newton reference.
    let truth: Vec<f64> = vec(z.clone())
        .chunks(6)
        .flat_map(|zi| problem.solve(zi).unwrap())
        .collect();
    let rel = |m: &Tensor<2>| {
        let m = vec(m.clone());
        (m.iter()
            .zip(&truth)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            / truth.iter().map(|b| b * b).sum::<f64>())
        .sqrt()
    };
    let before = rel(&model.surrogate(z.clone()).mean);
    let mut opt = AdamConfig::new().init();
    for step in 0..600 {
        let q = model.surrogate(z.clone());
        let out = PddlvmElbo.forward(
            &q,
            eps_at(step as u64 + 1),
            z.clone(),
            |u| log_res(u, step),
            |u| model.inverse(u),
        );
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = opt.step(2e-3, model, grads);
    }
    let after = rel(&model.surrogate(z.clone()).mean);
    assert!(
        before > 0.5 && after < 0.05,
        "relative L2 {before} → {after}"
    );
}

#[derive(Module, Debug)]
struct DiagQ {
    mean: Param<Tensor<2>>,
    log_var: Param<Tensor<2>>,
}

/// Linear-Gaussian data mode: a surrogate `q(u | ξ) = N(A ξ, τ² I)` and `y = H u + σ_y ε` with
/// `H A = diag(a)`. Marginalising `u` gives `y | ξ ~ N(diag(a) ξ, s² I)`, `s² = σ_y² + τ²`, so
/// the bound's optimum over a diagonal `q(ξ)` is the exact posterior: `Σ*_ii = 1 / (1 + a_i²/s²)`,
/// `μ*_i = Σ*_ii a_i y_i / s²`.
#[test]
fn pddlvm_data_bound_optimum_is_the_gaussian_posterior_of_the_parameters() {
    use crate::pddlvm::PddlvmDataElbo;
    let ad = f64_device().autodiff();
    let (k, nu, tau, sigma_y): (usize, usize, f64, f64) = (2, 3, 0.3, 0.4);
    // A = [[2, 0], [1, 1], [0, 0.5]]; H observes nodes 0 and 2, so H A = diag(2, 0.5).
    let a_t = Tensor::<2>::from_data(
        TensorData::new(vec![2.0, 1.0, 0.0, 0.0, 1.0, 0.5], [k, nu]),
        &ad,
    );
    let obs = ObservationLikelihood {
        operator: ObservationOperator::by_index(&[0, 2]),
        sigma: sigma_y,
    };
    let y = [0.7, -0.4];
    let diag = [2.0, 0.5];
    let s = 64;
    let eps_xi = Tensor::<3>::from_data(whitened_noise(s, k, 7).into_data(), &ad);
    let y_rep = Tensor::<2>::from_data(TensorData::new(y.to_vec(), [1, 2]), &ad).expand([s, 2]);
    let mut model = DiagQ {
        mean: Param::from_tensor(Tensor::zeros([1, k], &ad)),
        log_var: Param::from_tensor(Tensor::zeros([1, k], &ad)),
    };
    let bound = |model: &DiagQ| {
        let q = DiagGaussian::new(model.mean.val(), model.log_var.val());
        PddlvmDataElbo.forward(&q, eps_xi.clone(), |xi| {
            let mean = xi.matmul(a_t.clone());
            let var = mean.zeros_like().add_scalar(tau * tau);
            obs.log_marginal(y_rep.clone(), mean, var, None)
        })
    };
    let mut opt = AdamConfig::new().init();
    for (n, lr) in [(3000, 0.02), (2000, 0.002), (1000, 0.0002)] {
        for _ in 0..n {
            let out = bound(&model);
            let grads = GradientsParams::from_grads(out.loss.backward(), &model);
            model = opt.step(lr, model, grads);
        }
    }
    let (mean, var) = (vec(model.mean.val()), vec(model.log_var.val().exp()));
    let s2 = sigma_y * sigma_y + tau * tau;
    let mut log_evidence = 0.0;
    for i in 0..k {
        let v = 1.0 / (1.0 + diag[i] * diag[i] / s2);
        let m = v * diag[i] * y[i] / s2;
        assert!(
            (mean[i] - m).abs() < 1e-3,
            "mean {mean:?}: component {i} should be {m}"
        );
        assert!(
            (var[i] - v).abs() < 1e-3,
            "variance {var:?}: component {i} should be {v}"
        );
        // y_i ~ N(0, a_i² + s²) marginally.
        let t = diag[i] * diag[i] + s2;
        log_evidence += -0.5 * (LN_2PI + t.ln() + y[i] * y[i] / t);
    }
    // At the exact posterior the bound is the log evidence.
    let out = bound(&model);
    let l = vec(out.log_obs)[0] - vec(out.kl)[0];
    assert!(
        (l - log_evidence).abs() < 1e-4,
        "bound {l} vs log evidence {log_evidence}"
    );
}

#[test]
fn a_flow_surrogate_trained_on_the_boltzmann_objective_reaches_the_gaussian_target() {
    // r(u, z) = Au − bz with SPD A: p_β(u | z) ∝ exp(−β‖Au − bz‖²) is N(A⁻¹bz, (2βAᵀA)⁻¹).
    // A conditional RealNVP q(u | z) (LU mixing) trained by E_q[β‖r‖² + log q] on z ~ U[−1, 1]
    // must match that mean and covariance at a held-out z.
    use varphi_models::RealNvpConfig;
    let dev = f64_device();
    let ad = dev.clone().autodiff();
    let a: Mat = vec![
        vec![2.0, -1.0, 0.0],
        vec![-1.0, 2.0, -1.0],
        vec![0.0, -1.0, 2.0],
    ];
    let b = [1.0, 0.5, -1.0];
    let beta = 2.0;
    let at = testing::tensor(transpose(&a).concat(), [3, 3], &ad);
    let b_row = testing::tensor(b.to_vec(), [1, 3], &ad);
    let mut flow = RealNvpConfig::new(3)
        .with_d_cond(1)
        .with_layers(4)
        .with_hidden(vec![32, 32])
        .with_lu_mixing(true)
        .init(&ad);
    // Seeded hidden weights (init draws from the device RNG that parallel tests share); the
    // last layers stay at zero, so the flow starts as the identity.
    for (c, coupling) in flow.couplings.iter_mut().enumerate() {
        let n_layers = coupling.net.layers.len();
        for (l, layer) in coupling
            .net
            .layers
            .iter_mut()
            .take(n_layers - 1)
            .enumerate()
        {
            let [fan_in, fan_out] = layer.weight.dims();
            let w = testing::normals([fan_in, fan_out], 500 + 10 * c as u64 + l as u64, &ad)
                .mul_scalar(1.0 / (fan_in as f64).sqrt());
            layer.weight = Param::from_tensor(w);
        }
    }
    let objective = ResidualBoltzmannConfig::new(beta).init();
    let mut opt = AdamConfig::new().init();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(31);
    let n = 128;
    for step in 0..2000 {
        let z: Vec<f64> = (0..n)
            .map(|_| rand::Rng::random_range(&mut rng, -1.0..1.0))
            .collect();
        let z = testing::tensor(z, [n, 1], &ad);
        let eps = testing::normals([n, 3], 10_000 + step as u64, &ad);
        let (u, log_q) = flow.rsample_with_log_prob(eps, Some(z.clone()));
        let r = u.matmul(at.clone()) - z * b_row.clone();
        let r2 = r.powi_scalar(2).sum_dim(1).reshape([1, n]);
        let out = objective.forward_mc(r2, log_q.reshape([1, n]));
        let grads = GradientsParams::from_grads(out.loss.backward(), &flow);
        let lr = if step < 1500 { 3e-3 } else { 3e-4 };
        flow = opt.step(lr, flow, grads);
    }
    // Closed form at z = 0.7.
    let mut prec = matmul(&transpose(&a), &a);
    for row in prec.iter_mut() {
        for v in row.iter_mut() {
            *v *= 2.0 * beta;
        }
    }
    let cov = spd_inverse(&prec);
    let a_inv = spd_inverse(&a);
    let mean: Vec<f64> = (0..3)
        .map(|i| (0..3).map(|j| a_inv[i][j] * b[j] * 0.7).sum())
        .collect();
    let s = 20_000;
    let flow = flow.valid();
    let (u, _) = flow.forward(
        testing::normals([s, 3], 7, &dev),
        Some(Tensor::<2>::zeros([s, 1], &dev).add_scalar(0.7)),
    );
    let u = vec(u);
    let m: Vec<f64> = (0..3)
        .map(|j| u.iter().skip(j).step_by(3).sum::<f64>() / s as f64)
        .collect();
    let scale = cov
        .iter()
        .enumerate()
        .map(|(i, r)| r[i])
        .fold(0.0, f64::max);
    for i in 0..3 {
        assert!(
            (m[i] - mean[i]).abs() < 0.05 * scale.sqrt(),
            "mean {m:?} vs {mean:?}"
        );
        for j in 0..3 {
            let c: f64 = u
                .chunks(3)
                .map(|r| (r[i] - m[i]) * (r[j] - m[j]))
                .sum::<f64>()
                / (s - 1) as f64;
            assert!(
                (c - cov[i][j]).abs() < 0.05 * scale,
                "cov[{i}][{j}] {c} vs {}",
                cov[i][j]
            );
        }
    }
}

/// `u* = K⁻¹ M f` of [`LinearPde`] and `n` surrogate means `u* + δ_i`, `δ_i` from `error(i, rng)`.
fn means_with_error(
    pde: &LinearPde,
    n: usize,
    mut error: impl FnMut(usize, &mut rand_chacha::ChaCha8Rng) -> Vec<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let (k, mf) = pde.system();
    let kinv = spd_inverse(&k);
    let d = pde.d;
    let u_star: Vec<f64> = (0..d)
        .map(|i| (0..d).map(|j| kinv[i][j] * mf[j]).sum())
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let mut mean = Vec::with_capacity(n * d);
    for i in 0..n {
        let e = error(i, &mut rng);
        mean.extend(u_star.iter().zip(&e).map(|(u, e)| u + e));
    }
    (u_star, mean)
}

/// Standard normals `[a, b, c]` from `seed`.
fn normals(shape: [usize; 3], seed: u64) -> Tensor<3> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v = (0..shape.iter().product::<usize>())
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    testing::tensor(v, shape, &f64_device())
}

#[test]
fn model_error_recovers_a_known_discrepancy_through_the_raw_fem_residual() {
    // The known answer: the surrogate mean is u* + δ with δ ~ N(0, τ² I), so the exact
    // predictive of u* given the mean is N(μ, τ² I). The estimate sees only the raw residual
    // r(μ) = K δ of the linear FEM system (M = K, far from I: tr(KᵀK) is estimated by probes).
    let pde = LinearPde::new(31);
    let (d, n, tau) = (pde.d, 1000, 0.02);
    let (u_star, mean) = means_with_error(&pde, n, |_, rng| {
        (0..d)
            .map(|_| {
                let e: f64 = StandardNormal.sample(rng);
                tau * e
            })
            .collect()
    });
    let dev = f64_device();
    let me = crate::ModelErrorConfig::new()
        .with_probe(crate::Probe::White)
        .init();
    let free = Tensor::<2>::ones([1, d], &dev);
    let var = me.variance(
        |u| pde.residual(u).pde,
        testing::tensor(mean.clone(), [n, d], &dev),
        free.clone(),
        normals([me.probes, n, d], 3),
    );
    let var = vec(var);
    let ratio = var.iter().sum::<f64>() / n as f64 / (tau * tau);
    assert!((ratio - 1.0).abs() < 0.05, "E τ̂² / τ² = {ratio}");
    // Coverage of the widened predictive (no surrogate spread) at three levels over all
    // (case, node) pairs, against the exact predictive's nominal values.
    let s = 400;
    let samples = testing::tensor(mean.clone(), [1, n, d], &dev).expand([s, n, d]);
    let wide = crate::ModelError::widen(
        samples,
        testing::tensor(var, [n], &dev),
        free,
        normals([s, n, d], 4),
    );
    let wide = vec(wide.swap_dims(0, 1).swap_dims(1, 2)); // [n, d, s]
    for (level, z) in [(0.5, 0.6745), (0.9, 1.6449), (0.95, 1.9600)] {
        let mut hit = 0usize;
        for c in 0..n {
            for j in 0..d {
                let mut col = wide[(c * d + j) * s..(c * d + j + 1) * s].to_vec();
                col.sort_by(f64::total_cmp);
                let lo = col[((1.0 - level) / 2.0 * s as f64) as usize];
                let hi = col[((1.0 + level) / 2.0 * s as f64) as usize - 1];
                hit += usize::from((lo..=hi).contains(&u_star[j]));
            }
        }
        let cov = hit as f64 / (n * d) as f64;
        // τ̂ is a per-case estimate (a few effective degrees of freedom), so the predictive is
        // a scale mixture: slightly heavy-tailed, within 0.03 of nominal.
        assert!(
            (cov - level).abs() < 0.03,
            "coverage {cov} at {level} (z = {z})"
        );
    }
}

#[test]
fn preconditioned_model_error_is_the_rms_error_of_any_shape() {
    // With P = K (exact at this coefficient), s(μ) = K⁻¹ r(μ) = δ and M = I: τ̂² is the mean
    // square of the error, smooth or not, and the probes' gain is exactly 1.
    let pde = LinearPde::new(15);
    let d = pde.d;
    let (k, _) = pde.system();
    let kinv = spd_inverse(&k);
    let dev = f64_device();
    let pinv = testing::tensor(kinv.concat(), [d, d], &dev);
    let shapes = [0.05, -0.01, 0.2];
    let (_, mean) = means_with_error(&pde, 3, |i, _| {
        (0..d)
            .map(|j| shapes[i] * (std::f64::consts::PI * (j + 1) as f64 / (d + 1) as f64).sin())
            .collect()
    });
    let me = crate::ModelErrorConfig::new()
        .with_probe(crate::Probe::White)
        .with_probes(2)
        .init();
    let var = vec(me.variance(
        |u| pde.residual(u).pde.matmul(pinv.clone()),
        testing::tensor(mean, [3, d], &dev),
        Tensor::<2>::ones([1, d], &dev),
        normals([2, 3, d], 5),
    ));
    for (i, a) in shapes.iter().enumerate() {
        // Mean square of a·sin(πj/(d+1)), j = 1..d: a²/2 · (d+1)/d.
        let want = a * a / 2.0 * (d + 1) as f64 / d as f64;
        assert!((var[i] / want - 1.0).abs() < 1e-8, "{} vs {want}", var[i]);
    }
    // Entries a boundary condition fixes stay as they are.
    let free = testing::tensor([vec![0.0], vec![1.0; d - 1]].concat(), [1, d], &dev);
    let samples = Tensor::<3>::zeros([4, 3, d], &dev);
    let wide = vec(crate::ModelError::widen(
        samples,
        testing::tensor(var, [3], &dev),
        free,
        normals([4, 3, d], 6),
    ));
    assert!(wide.chunks(d).all(|row| row[0] == 0.0 && row[1] != 0.0));
}

#[test]
fn model_error_along_the_mean_recovers_a_smooth_error_the_white_probes_miss() {
    // δ = c u* (an error shaped like the solution, as a trained network's smooth errors are):
    // along the mean, s(μ) = c K u* and K μ = (1 + c) K u*, so τ̂² = c² ‖u*‖²/d = mean(δ²)
    // exactly, through the raw residual. White probes measure K's gain on white noise, which
    // for a second-difference operator is far above its gain on smooth fields.
    let pde = LinearPde::new(31);
    let d = pde.d;
    let cs = [0.1, -0.03, 0.5];
    let (u_star, mean) = means_with_error(&pde, 3, |_, _| vec![0.0; d]);
    let mean: Vec<f64> = mean
        .chunks(d)
        .zip(cs)
        .flat_map(|(m, c)| m.iter().map(move |v| v * (1.0 + c)))
        .collect();
    let dev = f64_device();
    let estimate = |probe| {
        let me = crate::ModelErrorConfig::new().with_probe(probe).init();
        vec(me.variance(
            |u| pde.residual(u).pde,
            testing::tensor(mean.clone(), [3, d], &dev),
            Tensor::<2>::ones([1, d], &dev),
            normals([me.probes, 3, d], 7),
        ))
    };
    let (along, white) = (estimate(crate::Probe::Mean), estimate(crate::Probe::White));
    let ms = u_star.iter().map(|u| u * u).sum::<f64>() / d as f64;
    for (i, c) in cs.iter().enumerate() {
        let want = c * c * ms;
        assert!(
            (along[i] / want - 1.0).abs() < 1e-6,
            "{} vs {want}",
            along[i]
        );
        assert!(white[i] < 0.05 * want, "white {} vs {want}", white[i]);
    }
}

#[test]
fn model_error_along_a_zero_mean_falls_back_to_the_white_probe() {
    // μ = 0 has no direction: the Mean probe takes the white one for that case (finite, equal
    // to the White estimate with the same probe) and keeps its own for the other cases.
    let pde = LinearPde::new(31);
    let d = pde.d;
    let (_, mean) = means_with_error(&pde, 2, |_, _| vec![0.0; d]);
    let mut mean: Vec<f64> = mean.iter().map(|v| v * 1.1).collect();
    mean[..d].iter_mut().for_each(|v| *v = 0.0);
    let dev = f64_device();
    let probes = normals([1, 2, d], 3);
    let run = |probe| {
        let me = crate::ModelErrorConfig::new()
            .with_probe(probe)
            .with_probes(1)
            .init();
        vec(me.variance(
            |u| pde.residual(u).pde,
            testing::tensor(mean.clone(), [2, d], &dev),
            Tensor::<2>::ones([1, d], &dev),
            probes.clone(),
        ))
    };
    let (along, white) = (run(crate::Probe::Mean), run(crate::Probe::White));
    assert!(along[0].is_finite() && along[0] > 0.0, "{along:?}");
    assert!(
        (along[0] / white[0] - 1.0).abs() < 1e-9,
        "{along:?} vs {white:?}"
    );
    let ms = mean[d..].iter().map(|u| u * u).sum::<f64>() / d as f64;
    let want = ms * (0.1f64 / 1.1).powi(2);
    assert!(
        (along[1] / want - 1.0).abs() < 1e-6,
        "{} vs {want}",
        along[1]
    );
}

#[test]
fn widening_adds_only_the_variance_the_samples_lack() {
    // Samples with variance v_q per free entry and τ̂² = 0.04: the widened variance is
    // max(v_q, τ̂²) — 0.04 for v_q = 0.01 (τ_add² = 0.03), unchanged for v_q = 0.09.
    let dev = f64_device();
    let (s, d) = (20_000, 4);
    let free = Tensor::<2>::ones([1, d], &dev);
    let spread = |sd: f64, seed| normals([s, 1, d], seed).mul_scalar(sd);
    for (sd, want) in [(0.1, 0.04), (0.3, 0.09)] {
        let samples = spread(sd, 11);
        let before = vec(samples.clone().var(0)).iter().sum::<f64>() / d as f64;
        let wide = crate::ModelError::widen(
            samples,
            testing::tensor(vec![0.04], [1], &dev),
            free.clone(),
            normals([s, 1, d], 12),
        );
        let var = vec(wide.var(0)).iter().sum::<f64>() / d as f64;
        assert!(
            (var / want - 1.0).abs() < 0.03,
            "v_q {sd}²: {var} vs {want}"
        );
        if sd > 0.2 {
            assert_eq!(var, before, "no widening when the samples already cover τ̂²");
        }
    }
}
