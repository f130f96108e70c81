//! Objectives on models with known answers (f64).

use crate::elbo::{ElboConfig, KlEstimator};
use crate::likelihood::{GaussianLikelihoodConfig, LikelihoodConfig, NoiseModel};
use burn::prelude::*;
use varphi_models::distributions::LN_2PI;
use varphi_models::testing::{self, cholesky, f64_device, vec};
use varphi_models::{DiagGaussian, FullGaussian, standard_normal};

fn dev() -> Device {
    f64_device()
}

fn tensor<const D: usize>(v: Vec<f64>, shape: [usize; D]) -> Tensor<D> {
    testing::tensor(v, shape, &dev())
}

pub(crate) type Mat = Vec<Vec<f64>>;

pub(crate) fn matmul(a: &Mat, b: &Mat) -> Mat {
    (0..a.len())
        .map(|i| {
            (0..b[0].len())
                .map(|j| (0..b.len()).map(|k| a[i][k] * b[k][j]).sum())
                .collect()
        })
        .collect()
}
pub(crate) fn transpose(a: &Mat) -> Mat {
    (0..a[0].len())
        .map(|j| (0..a.len()).map(|i| a[i][j]).collect())
        .collect()
}
/// Inverse of an SPD matrix via its Cholesky factor.
pub(crate) fn spd_inverse(a: &Mat) -> Mat {
    let n = a.len();
    let l = cholesky(a);
    let mut inv = vec![vec![0.0; n]; n];
    for col in 0..n {
        let mut y = vec![0.0; n];
        for i in 0..n {
            let e = if i == col { 1.0 } else { 0.0 };
            y[i] = (e - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
        }
        let mut x = vec![0.0; n];
        for i in (0..n).rev() {
            x[i] = (y[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
        }
        for i in 0..n {
            inv[i][col] = x[i];
        }
    }
    inv
}
/// log N(x; m, C).
pub(crate) fn log_normal(x: &[f64], m: &[f64], c: &Mat) -> f64 {
    let l = cholesky(c);
    let n = x.len();
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (x[i] - m[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let log_det: f64 = (0..n).map(|i| 2.0 * l[i][i].ln()).sum();
    -0.5 * (y.iter().map(|v| v * v).sum::<f64>() + log_det + n as f64 * LN_2PI)
}

/// x = A z + b + N(0, σ² I), z ~ N(0, I): exact posterior and evidence.
struct LinearGaussian {
    a: Mat,
    b: Vec<f64>,
    sigma: f64,
    x: Vec<f64>,
}

impl LinearGaussian {
    fn new() -> Self {
        Self {
            a: vec![vec![1.0, 0.5], vec![-0.3, 2.0], vec![0.8, -1.0]],
            b: vec![0.1, -0.2, 0.3],
            sigma: 0.5,
            x: vec![1.2, -0.4, 0.9],
        }
    }
    fn posterior(&self) -> (Vec<f64>, Mat) {
        let at = transpose(&self.a);
        let mut prec = matmul(&at, &self.a);
        for (i, row) in prec.iter_mut().enumerate() {
            for v in row.iter_mut() {
                *v /= self.sigma * self.sigma;
            }
            row[i] += 1.0;
        }
        let cov = spd_inverse(&prec);
        let r: Mat = self
            .x
            .iter()
            .zip(&self.b)
            .map(|(x, b)| vec![(x - b) / (self.sigma * self.sigma)])
            .collect();
        let mean = matmul(&cov, &matmul(&at, &r))
            .into_iter()
            .map(|v| v[0])
            .collect();
        (mean, cov)
    }
    fn log_evidence(&self) -> f64 {
        let mut c = matmul(&self.a, &transpose(&self.a));
        for (i, row) in c.iter_mut().enumerate() {
            row[i] += self.sigma * self.sigma;
        }
        log_normal(&self.x, &self.b, &c)
    }
    /// ELBO estimate of the objective for a given q.
    fn elbo(&self, q: &FullGaussian, kl: KlEstimator, particles: usize) -> f64 {
        let lik = LikelihoodConfig::Gaussian(
            GaussianLikelihoodConfig::new()
                .with_sigma(self.sigma)
                .with_noise(NoiseModel::Fixed),
        )
        .init(&dev());
        let at = tensor(transpose(&self.a).concat(), [1, 2, 3]).expand([particles, 2, 3]);
        let b = tensor(self.b.clone(), [1, 1, 3]);
        let x = tensor(self.x.clone(), [1, 3]);
        let elbo = ElboConfig::new()
            .with_kl(kl)
            .with_n_particles(particles)
            .init();
        let prior = DiagGaussian::standard(1, 2, &dev());
        let out = elbo.forward(
            q,
            &prior,
            standard_normal([particles, 1, 2], &dev()),
            |z| lik.log_prob(x, z.matmul(at) + b),
            0,
        );
        vec(out.elbo)[0]
    }
}

fn full(mean: &[f64], cov: &Mat) -> FullGaussian {
    FullGaussian::new(
        tensor(mean.to_vec(), [1, 2]),
        tensor(cholesky(cov).concat(), [1, 2, 2]),
    )
}

#[test]
fn elbo_at_the_exact_posterior_equals_the_log_evidence() {
    let lg = LinearGaussian::new();
    let (mean, cov) = lg.posterior();
    let q = full(&mean, &cov);
    let log_z = lg.log_evidence();
    // With the Monte-Carlo KL the integrand log p(x, z) − log q(z) is constant (= log p(x)) at
    // the exact posterior, so any particle gives the evidence exactly.
    let mc = lg.elbo(&q, KlEstimator::MonteCarlo, 3);
    assert!(
        (mc - log_z).abs() < 1e-10,
        "MC-KL ELBO {mc} vs log evidence {log_z}"
    );
    // The analytic-KL estimator is unbiased; with many particles it matches to MC error.
    let an = lg.elbo(&q, KlEstimator::Analytic, 20_000);
    assert!(
        (an - log_z).abs() < 2e-2,
        "analytic-KL ELBO {an} vs log evidence {log_z}"
    );
}

#[test]
fn elbo_away_from_the_posterior_is_strictly_lower_by_the_kl_gap() {
    let lg = LinearGaussian::new();
    let (mean, cov) = lg.posterior();
    let log_z = lg.log_evidence();
    // Shift the mean and shrink the covariance; the gap equals KL(q ‖ posterior) in closed form.
    let m2 = vec![mean[0] + 0.3, mean[1] - 0.2];
    let c2 = vec![vec![cov[0][0] * 0.5, 0.0], vec![0.0, cov[1][1] * 0.8]];
    let q = full(&m2, &c2);
    let inv = spd_inverse(&cov);
    let tr: f64 = (0..2)
        .map(|i| (0..2).map(|k| inv[i][k] * c2[k][i]).sum::<f64>())
        .sum();
    let d: Vec<f64> = (0..2).map(|i| mean[i] - m2[i]).collect();
    let maha: f64 = (0..2)
        .map(|i| (0..2).map(|k| d[i] * inv[i][k] * d[k]).sum::<f64>())
        .sum();
    let ld = |c: &Mat| c[0][0] * c[1][1] - c[0][1] * c[1][0];
    let gap = 0.5 * (tr + maha - 2.0 + (ld(&cov) / ld(&c2)).ln());
    assert!(gap > 0.05);
    let elbo = lg.elbo(&q, KlEstimator::MonteCarlo, 40_000);
    assert!(
        elbo < log_z - 0.5 * gap,
        "ELBO {elbo} not below log evidence {log_z}"
    );
    assert!(
        (log_z - elbo - gap).abs() < 0.03,
        "gap {} vs KL {gap}",
        log_z - elbo
    );
}

#[test]
fn gaussian_likelihood_modes_match_closed_forms() {
    let d = dev();
    let x = tensor(vec![0.5, -1.0], [1, 2]);
    let mu = vec![0.1, -0.5];
    let lp = |sig: f64| -> f64 {
        (0..2)
            .map(|i| {
                -0.5 * ((vec![0.5, -1.0][i] - mu[i] as f64).powi(2) / (sig * sig)
                    + (sig * sig).ln()
                    + LN_2PI)
            })
            .sum()
    };
    for noise in [NoiseModel::Fixed, NoiseModel::LearnedGlobal] {
        let lik = LikelihoodConfig::Gaussian(
            GaussianLikelihoodConfig::new()
                .with_sigma(0.3)
                .with_noise(noise),
        )
        .init(&d);
        let got = vec(lik.log_prob(x.clone(), tensor(mu.clone(), [1, 1, 2])))[0];
        assert!(
            (got - lp(0.3)).abs() < 1e-12,
            "{noise:?}: {got} vs {}",
            lp(0.3)
        );
    }
    // Heteroscedastic: per-datum log σ².
    let lik = LikelihoodConfig::Gaussian(
        GaussianLikelihoodConfig::new().with_noise(NoiseModel::Heteroscedastic),
    )
    .init(&d);
    let lv = [0.2f64, -0.4f64];
    let got = vec(lik.log_prob(
        x.clone(),
        tensor(vec![mu[0], mu[1], lv[0], lv[1]], [1, 1, 4]),
    ))[0];
    let xs = [0.5, -1.0];
    let want: f64 = (0..2)
        .map(|i| -0.5 * ((xs[i] - mu[i]).powi(2) / lv[i].exp() + lv[i] + LN_2PI))
        .sum();
    assert!((got - want).abs() < 1e-12);
    // Bernoulli: x ℓ − log(1 + e^ℓ).
    let lik = LikelihoodConfig::Bernoulli.init(&d);
    let got = vec(lik.log_prob(
        tensor(vec![1.0, 0.0], [1, 2]),
        tensor(vec![0.7, -0.2], [1, 1, 2]),
    ))[0];
    let want = 0.7 - (1.0 + 0.7f64.exp()).ln() - (1.0 + (-0.2f64).exp()).ln();
    assert!((got - want).abs() < 1e-12);
}

#[test]
fn learned_sigma_receives_the_analytic_gradient() {
    // d/d log σ of Σ_i log N(x_i; μ_i, σ²) = Σ_i [(x_i − μ_i)²/σ² − 1].
    let d = dev().autodiff();
    let lik = LikelihoodConfig::Gaussian(
        GaussianLikelihoodConfig::new()
            .with_sigma(0.3)
            .with_noise(NoiseModel::LearnedGlobal),
    )
    .init(&d);
    let x = Tensor::<2>::from_data(TensorData::new(vec![0.5, -1.0], [1, 2]), &d);
    let mu = Tensor::<3>::from_data(TensorData::new(vec![0.1, -0.5], [1, 1, 2]), &d);
    let grads = lik.log_prob(x, mu).sum().backward();
    let crate::Likelihood::Gaussian(g) = &lik else {
        unreachable!()
    };
    // The parameter is κ, log σ = log 0.3 + SIGMA_GAIN·κ: the chain rule's factor.
    let ls = g.kappa.as_ref().unwrap();
    let got = vec(ls.grad(&grads).unwrap())[0];
    let want = crate::likelihood::SIGMA_GAIN * ((0.4f64.powi(2) + 0.5f64.powi(2)) / 0.09 - 2.0);
    assert!((got - want).abs() < 1e-10, "{got} vs {want}");
}

#[test]
fn per_node_sigma_has_the_per_entry_gradient_and_its_maximum_at_the_per_entry_rms() {
    // log p = Σ_b Σ_i −½[(x_bi − μ_bi)²/σ_i² + log σ_i² + log 2π]; d/d log σ_i (×SIGMA_GAIN for κ_i) =
    // Σ_b [(x_bi − μ_bi)²/σ_i² − 1], zero at σ_i² = mean_b (x_bi − μ_bi)².
    let d = dev().autodiff();
    let lik = LikelihoodConfig::Gaussian(
        GaussianLikelihoodConfig::new()
            .with_sigma(0.3)
            .with_noise(NoiseModel::PerNode)
            .with_dim(Some(3)),
    )
    .init(&d);
    let x = vec![0.5, -1.0, 0.0, 0.2, 0.4, 0.1];
    let m = vec![0.1, -0.5, 0.0, 0.3, 0.1, -0.1];
    let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [2, 3]), &d);
    let mt = Tensor::<3>::from_data(TensorData::new(m.clone(), [1, 2, 3]), &d);
    let lp = lik.log_prob(xt.clone(), mt.clone());
    let want_lp: Vec<f64> = (0..2)
        .map(|b| {
            (0..3)
                .map(|i| {
                    let e: f64 = x[b * 3 + i] - m[b * 3 + i];
                    -0.5 * (e * e / 0.09 + 0.09f64.ln() + LN_2PI)
                })
                .sum()
        })
        .collect();
    let got_lp = vec(lp.clone());
    for (g, w) in got_lp.iter().zip(&want_lp) {
        assert!((g - w).abs() < 1e-10, "{g} vs {w}");
    }
    let grads = lp.sum().backward();
    let crate::Likelihood::Gaussian(g) = &lik else {
        unreachable!()
    };
    let got = vec(g.kappa.as_ref().unwrap().grad(&grads).unwrap());
    for i in 0..3 {
        let want: f64 = crate::likelihood::SIGMA_GAIN
            * (0..2)
                .map(|b| (x[b * 3 + i] - m[b * 3 + i]).powi(2) / 0.09 - 1.0)
                .sum::<f64>();
        assert!(
            (got[i] - want).abs() < 1e-10,
            "node {i}: {} vs {want}",
            got[i]
        );
    }
    // The std is per node, the same for every datum; no global σ is reported.
    let std = vec(lik.std(mt).unwrap());
    assert!(std.iter().all(|s| (s - 0.3).abs() < 1e-12));
    assert_eq!(lik.global_sigma(), None);
    assert_eq!(lik.params_per_datum(), 1);
}

#[test]
fn student_t_likelihood_matches_its_density_and_samples_its_variance() {
    // ν = 3: p(x) = Γ(2)/(Γ(3/2)√(3π) s) (1 + r²/3)^{−2}, Γ(2)/Γ(3/2) = 2/√π, so the
    // constant is 2/(π√3 s).
    let d = dev();
    let lik = LikelihoodConfig::Gaussian(
        GaussianLikelihoodConfig::new()
            .with_sigma(0.3)
            .with_noise(NoiseModel::Fixed)
            .with_dof(Some(3)),
    )
    .init(&d);
    let x = [0.5, -1.0];
    let mu = [0.1, -0.5];
    let got = vec(lik.log_prob(tensor(x.to_vec(), [1, 2]), tensor(mu.to_vec(), [1, 1, 2])))[0];
    let want: f64 = (0..2)
        .map(|i| {
            let r: f64 = (x[i] - mu[i]) / 0.3;
            (2.0 / (std::f64::consts::PI * 3f64.sqrt() * 0.3)).ln() - 2.0 * (1.0 + r * r / 3.0).ln()
        })
        .sum();
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    // ν = 4 (even): Γ(5/2)/Γ(2) = 3√π/4; learned global σ at its start gives the same.
    let lik4 = LikelihoodConfig::Gaussian(
        GaussianLikelihoodConfig::new()
            .with_sigma(0.3)
            .with_noise(NoiseModel::LearnedGlobal)
            .with_dof(Some(4)),
    )
    .init(&d);
    let got = vec(lik4.log_prob(tensor(x.to_vec(), [1, 2]), tensor(mu.to_vec(), [1, 1, 2])))[0];
    let c4 =
        (3.0 * std::f64::consts::PI.sqrt() / 4.0 / (4.0 * std::f64::consts::PI).sqrt() / 0.3).ln();
    let want: f64 = (0..2)
        .map(|i| {
            let r: f64 = (x[i] - mu[i]) / 0.3;
            c4 - 2.5 * (1.0 + r * r / 4.0).ln()
        })
        .sum();
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    // Draws: Var = ν/(ν − 2) s² = 3 · 0.09 for ν = 3 is infinite-tailed in its 4th moment;
    // check ν = 6 (Var = 1.5 · 0.09) and the central 50 % interval ±0.7176 s of t_6.
    let lik6 = LikelihoodConfig::Gaussian(
        GaussianLikelihoodConfig::new()
            .with_sigma(0.3)
            .with_noise(NoiseModel::Fixed)
            .with_dof(Some(6)),
    )
    .init(&d);
    let n = 40_000;
    let mut k = 0u64;
    let e = vec(lik6
        .noise(Tensor::<3>::zeros([1, n, 1], &d), |_| {
            k += 1;
            standard_normal_seeded([1, n, 1], k, &d)
        })
        .unwrap());
    let var = e.iter().map(|v| v * v).sum::<f64>() / n as f64;
    assert!((var / (1.5 * 0.09) - 1.0).abs() < 0.05, "variance {var}");
    let inside = e.iter().filter(|v| v.abs() < 0.7176 * 0.3).count() as f64 / n as f64;
    assert!((inside - 0.5).abs() < 0.01, "central 50 %: {inside}");
    assert_eq!(k, 7, "ε and ν = 6 χ² draws");
}

#[test]
fn kl_warm_up_is_linear_then_constant() {
    let e = ElboConfig::new().with_beta(2.0).with_warmup_steps(4).init();
    let b: Vec<f64> = (0..6).map(|s| e.beta_at(s)).collect();
    assert_eq!(b, vec![0.5, 1.0, 1.5, 2.0, 2.0, 2.0]);
    assert_eq!(ElboConfig::new().init().beta_at(0), 1.0);
}

#[test]
fn beta_weights_only_the_loss() {
    let d = dev();
    let q = DiagGaussian::new(
        tensor(vec![0.5, -0.5], [1, 2]),
        tensor(vec![-0.2, 0.1], [1, 2]),
    );
    let prior = DiagGaussian::standard(1, 2, &d);
    let eps = standard_normal([1, 1, 2], &d);
    let run = |beta: f64| {
        let out = ElboConfig::new().with_beta(beta).init().forward(
            &q,
            &prior,
            eps.clone(),
            |z| z.sum_dim(2).squeeze_dim::<2>(2),
            0,
        );
        out.scalars()
    };
    let (a, b) = (run(1.0), run(4.0));
    assert_eq!(a.elbo, b.elbo);
    assert!((b.loss - a.loss - 3.0 * a.kl).abs() < 1e-12);
}

/// Bayes VI (primer eqs. 10–12) on the linear-Gaussian model, whose posterior is correlated:
/// maximise the ELBO over a non-amortised `q(z)` with Adam. The noise is whitened (sample mean 0,
/// sample covariance I), so for this model the Monte-Carlo ELBO equals its expectation and the
/// optimum is exact.
fn fit_bayes_vi(family: varphi_models::GaussianFamily) -> (Vec<f64>, Vec<f64>) {
    let lg = LinearGaussian::new();
    let ad = dev().autodiff();
    let s = 64;
    let lik = LikelihoodConfig::Gaussian(
        GaussianLikelihoodConfig::new()
            .with_sigma(lg.sigma)
            .with_noise(NoiseModel::Fixed),
    )
    .init(&ad);
    let at = Tensor::<3>::from_data(TensorData::new(transpose(&lg.a).concat(), [1, 2, 3]), &ad)
        .expand([s, 2, 3]);
    let b = Tensor::<3>::from_data(TensorData::new(lg.b.clone(), [1, 1, 3]), &ad);
    let x = Tensor::<2>::from_data(TensorData::new(lg.x.clone(), [1, 3]), &ad);
    fit_gaussian_q(family, 2, 9, &ad, |z| {
        lik.log_prob(x.clone(), z.matmul(at.clone()) + b.clone())
    })
}

/// Maximise the ELBO of a non-amortised `q(z)` (`dim` latents, 64 whitened particles from
/// `seed`, prior `N(0, I)`) for `log p(x | z)` given by `log_lik: [64, 1, dim] → [64, 1]`, with
/// Adam in three learning-rate stages; return the mean and the covariance (flattened).
pub(crate) fn fit_gaussian_q(
    family: varphi_models::GaussianFamily,
    dim: usize,
    seed: u64,
    ad: &Device,
    log_lik: impl Fn(Tensor<3>) -> Tensor<2>,
) -> (Vec<f64>, Vec<f64>) {
    use burn::optim::{AdamConfig, GradientsParams};
    use varphi_models::GaussianPosteriorConfig;
    let s = 64;
    let eps = Tensor::<3>::from_data(
        crate::tests_residual::whitened_noise(s, dim, seed).into_data(),
        ad,
    );
    let elbo = ElboConfig::new().with_n_particles(s).init();
    let prior = DiagGaussian::standard(1, dim, ad);
    let mut q = GaussianPosteriorConfig::new(dim)
        .with_family(family)
        .init(ad);
    let mut opt = AdamConfig::new().init();
    for (n, lr) in [(3000, 0.02), (2000, 0.002), (1000, 0.0002)] {
        for _ in 0..n {
            let out = elbo.forward(&q.forward(), &prior, eps.clone(), &log_lik, 0);
            let grads = GradientsParams::from_grads(out.loss.backward(), &q);
            q = opt.step(lr, q, grads);
        }
    }
    (vec(q.mean.val()), vec(q.covariance()))
}

/// Fit `family` by Bayes VI and check mean and covariance against the closed-form posterior
/// (1e-3); returns the exact covariance.
fn assert_fit_is_the_exact_posterior(family: varphi_models::GaussianFamily) -> Mat {
    let (mean, cov) = LinearGaussian::new().posterior();
    let (m, c) = fit_bayes_vi(family);
    for i in 0..2 {
        assert!((m[i] - mean[i]).abs() < 1e-3, "mean {m:?} vs {mean:?}");
        for j in 0..2 {
            assert!(
                (c[2 * i + j] - cov[i][j]).abs() < 1e-3,
                "cov {c:?} vs {cov:?}"
            );
        }
    }
    cov
}

#[test]
fn bayes_vi_full_covariance_recovers_the_exact_posterior() {
    let cov = assert_fit_is_the_exact_posterior(varphi_models::GaussianFamily::FullCovariance);
    assert!(
        cov[0][1].abs() > 0.01,
        "the test needs a correlated posterior"
    );
}

#[test]
fn bayes_vi_low_rank_plus_diagonal_recovers_the_exact_posterior() {
    // Every 2 × 2 covariance is rank 1 + diagonal, so the family contains the posterior.
    assert_fit_is_the_exact_posterior(varphi_models::GaussianFamily::LowRank { rank: 1 });
}

#[test]
fn bayes_vi_mean_field_finds_the_mean_and_the_inverse_precision_diagonal() {
    let (mean, cov) = LinearGaussian::new().posterior();
    let prec = spd_inverse(&cov);
    let (m, c) = fit_bayes_vi(varphi_models::GaussianFamily::MeanField);
    for i in 0..2 {
        assert!((m[i] - mean[i]).abs() < 1e-3, "mean {m:?} vs {mean:?}");
        let v = 1.0 / prec[i][i];
        assert!(
            (c[3 * i] - v).abs() < 1e-3,
            "variance {} vs 1/Λ_ii = {v}",
            c[3 * i]
        );
        // ... which under-states the marginal variance.
        assert!(v < cov[i][i] - 1e-3);
    }
    assert_eq!(c[1], 0.0);
}

/// Standard normals `shape` from a seeded ChaCha8 stream (f64 device).
fn standard_normal_seeded<const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &Device,
) -> Tensor<D> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..shape.iter().product::<usize>())
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    testing::tensor(v, shape, device)
}
