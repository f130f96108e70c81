//! Distributions against closed forms and Monte-Carlo estimates (f64).

use crate::distributions::{DiagGaussian, FullGaussian, LN_2PI, VariationalFamily};
use crate::testing::{cholesky, f64_device, normals, tensor, vec};

#[test]
fn diag_log_prob_and_entropy_match_closed_form() {
    let dev = f64_device();
    let m = [0.3, -1.2];
    let lv = [0.4_f64, -0.7_f64];
    let q = DiagGaussian::new(
        tensor(m.to_vec(), [1, 2], &dev),
        tensor(lv.to_vec(), [1, 2], &dev),
    );
    let z = [1.1, 0.2];
    let lp = vec(q.log_prob(tensor(z.to_vec(), [1, 1, 2], &dev)))[0];
    let expect: f64 = (0..2)
        .map(|i| -0.5 * ((z[i] - m[i]).powi(2) / lv[i].exp() + lv[i] + LN_2PI))
        .sum();
    assert!((lp - expect).abs() < 1e-12, "{lp} vs {expect}");
    let h = vec(q.entropy())[0];
    let expect_h: f64 = (0..2).map(|i| 0.5 * (1.0 + LN_2PI + lv[i])).sum();
    assert!((h - expect_h).abs() < 1e-12);
}

/// Monte-Carlo mean and standard error of `f` over `n` samples of `q`.
fn mc(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

#[test]
fn analytic_kl_equals_monte_carlo_within_standard_error() {
    let dev = f64_device();
    let q = DiagGaussian::new(
        tensor(vec![0.5, -0.3, 1.0], [1, 3], &dev),
        tensor(vec![-0.5, 0.2, -1.0], [1, 3], &dev),
    );
    let p = DiagGaussian::new(
        tensor(vec![0.1, 0.0, -0.4], [1, 3], &dev),
        tensor(vec![0.3, -0.2, 0.5], [1, 3], &dev),
    );
    let n = 40_000;
    let z = q.rsample(normals([n, 1, 3], 11, &dev));
    let diffs = vec(q.log_prob(z.clone()) - p.log_prob(z));
    let (mean, se) = mc(&diffs);
    let kl = vec(q.kl(&p))[0];
    assert!(
        (mean - kl).abs() < 4.0 * se,
        "MC {mean} ± {se} vs analytic {kl}"
    );
    // Standard-normal special case.
    let std = DiagGaussian::standard(1, 3, &dev);
    let a = vec(q.kl_standard_normal())[0];
    let b = vec(q.kl(&std))[0];
    assert!((a - b).abs() < 1e-12);
}

#[test]
fn full_gaussian_matches_closed_form_and_monte_carlo() {
    let dev = f64_device();
    let cov = vec![
        vec![2.0, 0.6, -0.3],
        vec![0.6, 1.0, 0.2],
        vec![-0.3, 0.2, 0.5],
    ];
    let l = cholesky(&cov);
    let mu = vec![0.2, -0.1, 0.4];
    let q = FullGaussian::new(
        tensor(mu.clone(), [1, 3], &dev),
        tensor(l.concat(), [1, 3, 3], &dev),
    );
    // log_prob at a point, via the explicit inverse of the 3x3 covariance.
    let z = [1.0, 0.5, -0.5];
    let r: Vec<f64> = (0..3).map(|i| z[i] - mu[i]).collect();
    // Forward substitution L y = r.
    let mut y = [0.0; 3];
    for i in 0..3 {
        y[i] = (r[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let log_det: f64 = (0..3).map(|i| 2.0 * l[i][i].ln()).sum();
    let expect = -0.5 * (y.iter().map(|v| v * v).sum::<f64>() + log_det + 3.0 * LN_2PI);
    let lp = vec(q.log_prob(tensor(z.to_vec(), [1, 1, 3], &dev)))[0];
    assert!((lp - expect).abs() < 1e-12, "{lp} vs {expect}");

    // Covariance round trip and sample covariance.
    let c = vec(q.covariance());
    for i in 0..3 {
        for j in 0..3 {
            assert!((c[i * 3 + j] - cov[i][j]).abs() < 1e-12);
        }
    }
    let n = 40_000;
    let samples = vec(q.rsample(normals([n, 1, 3], 12, &dev)));
    let emp = |i: usize, j: usize| {
        (0..n)
            .map(|s| (samples[s * 3 + i] - mu[i]) * (samples[s * 3 + j] - mu[j]))
            .sum::<f64>()
            / n as f64
    };
    assert!((emp(0, 1) - 0.6).abs() < 0.05 && (emp(0, 0) - 2.0).abs() < 0.1);

    // KL to a diagonal prior vs Monte Carlo, and entropy vs −E log q.
    let p = DiagGaussian::new(
        tensor(vec![0.0, 0.3, -0.2], [1, 3], &dev),
        tensor(vec![0.2, -0.1, 0.0], [1, 3], &dev),
    );
    let z = q.rsample(normals([n, 1, 3], 13, &dev));
    let (mean, se) = mc(&vec(q.log_prob(z.clone()) - p.log_prob(z.clone())));
    let kl = vec(q.kl_to_diag(&p))[0];
    assert!(
        (mean - kl).abs() < 4.0 * se,
        "MC {mean} ± {se} vs analytic {kl}"
    );
    let (neg_h, se_h) = mc(&vec(q.log_prob(z)));
    let h = vec(q.entropy())[0];
    assert!((-neg_h - h).abs() < 4.0 * se_h, "{} vs {h}", -neg_h);
}

#[test]
fn unconstrained_parameterisation_is_lower_triangular_with_positive_diagonal() {
    let dev = f64_device();
    let raw = tensor(vec![0.0, 5.0, 0.7, -1.0], [1, 2, 2], &dev);
    let q = FullGaussian::from_unconstrained(tensor(vec![0.0, 0.0], [1, 2], &dev), raw);
    let l = vec(q.scale_tril);
    assert_eq!(l, vec![1.0, 0.0, 0.7, (-1.0f64).exp()]);
}

#[test]
fn tensor_cholesky_matches_the_reference_and_differentiates() {
    use crate::posterior::cholesky;
    use varphi_physics::testing::gradient_check;
    let dev = f64_device();
    // A = MMᵀ + I for a fixed M.
    let d = 5;
    let m: Vec<f64> = (0..d * d)
        .map(|k| ((k * 7 % 11) as f64 - 5.0) / 4.0)
        .collect();
    let a: Vec<Vec<f64>> = (0..d)
        .map(|i| {
            (0..d)
                .map(|j| {
                    (0..d).map(|k| m[i * d + k] * m[j * d + k]).sum::<f64>()
                        + if i == j { 1.0 } else { 0.0 }
                })
                .collect()
        })
        .collect();
    let want = varphi_physics::testing::cholesky(&a);
    let got = vec(cholesky(tensor(a.concat(), [d, d], &dev)));
    for i in 0..d {
        for j in 0..d {
            assert!((got[i * d + j] - want[i][j]).abs() < 1e-12, "L[{i}][{j}]");
        }
    }
    // d/dA of Σ_ij w_ij L_ij (symmetric perturbations through A = S + Sᵀ).
    let w = tensor(
        (0..d * d).map(|k| (k as f64 * 0.3).sin()).collect(),
        [d, d],
        &dev.clone().autodiff(),
    );
    let s0: Vec<f64> = a.concat().iter().map(|v| v / 2.0).collect();
    let err = gradient_check(
        |s| {
            let s = s.reshape([d, d]);
            cholesky(s.clone() + s.transpose()).mul(w.clone()).sum()
        },
        &s0,
        1e-6,
    );
    assert!(err < 1e-6, "cholesky gradient rel. error {err:e}");
}
