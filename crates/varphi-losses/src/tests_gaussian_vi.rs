//! Per-case Gaussian VI against closed forms (f64).

use crate::gaussian_vi::{Draws, GaussianVi};
use crate::tests::spd_inverse;
use burn::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use varphi_models::distributions::DiagGaussian;
use varphi_models::testing::{f64_device, tensor, vec};

fn normals(n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

#[test]
fn rotated_spherical_points_have_the_first_three_moments_of_the_standard_normal() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let (n, p) = (5, 3);
    let d = Draws::rotated_spherical(&normals(n * p * p, &mut rng), n, p, &f64_device());
    assert_eq!(d.eps.dims(), [n, 2 * p, p]);
    let e = vec(d.eps);
    let w = vec(d.weights);
    assert!(w.iter().all(|v| (v - 1.0 / 6.0).abs() < 1e-15));
    for case in e.chunks(2 * p * p) {
        for j in 0..p {
            let mean: f64 = (0..2 * p).map(|s| case[s * p + j]).sum::<f64>() / (2 * p) as f64;
            assert!(mean.abs() < 1e-12, "mean {mean}");
            for k in 0..p {
                let cov: f64 = (0..2 * p)
                    .map(|s| case[s * p + j] * case[s * p + k])
                    .sum::<f64>()
                    / (2 * p) as f64;
                let want = if j == k { 1.0 } else { 0.0 };
                assert!((cov - want).abs() < 1e-12, "cov[{j}][{k}] = {cov}");
            }
        }
    }
}

#[test]
fn mean_field_fit_of_a_correlated_gaussian_posterior_is_its_closed_form() {
    // log p(x | ξ) = −½ (ξ − a)ᵀ A (ξ − a) with a correlated A; the posterior is Gaussian with
    // precision Λ = A + I and mean Λ⁻¹ A a, and the optimal mean-field q has that mean and
    // s_j = Λ_jj^{−1/2} (not the marginal sd): exact, since the rotated spherical points
    // integrate quadratics exactly. Three cases of p = 3 at once, from the prior N(0, I).
    let device = f64_device();
    let ad = device.clone().autodiff();
    let p = 3;
    let cases: [([f64; 9], [f64; 3]); 3] = [
        (
            [40.0, 12.0, -5.0, 12.0, 25.0, 3.0, -5.0, 3.0, 9.0],
            [0.8, -1.2, 0.4],
        ),
        (
            [400.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.25],
            [0.1, 2.0, -1.0],
        ),
        (
            [90.0, -60.0, 0.0, -60.0, 50.0, 10.0, 0.0, 10.0, 30.0],
            [-0.5, 0.3, 1.5],
        ),
    ];
    let n = cases.len();
    let (a_mat, a_vec): (Vec<f64>, Vec<f64>) = (
        cases.iter().flat_map(|c| c.0).collect(),
        cases.iter().flat_map(|c| c.1).collect(),
    );
    let s = 2 * p;
    // [n·S, p, p] and [n·S, p]: each case's A and a repeated for its points.
    let a_t = tensor(a_mat.clone(), [n, 1, p * p], &ad)
        .repeat_dim(1, s)
        .reshape([n * s, p, p]);
    let c_t = tensor(a_vec.clone(), [n, 1, p], &ad)
        .repeat_dim(1, s)
        .reshape([n * s, p]);
    let log_lik = |xi: Tensor<2>| -> Tensor<1> {
        let r = (xi - c_t.clone()).unsqueeze_dim::<3>(2); // [n·S, p, 1]
        let quad = r.clone().transpose().matmul(a_t.clone().matmul(r));
        quad.reshape([n * s]) * -0.5
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let init = DiagGaussian::standard(n, p, &ad);
    let vi = GaussianVi {
        schedule: vec![(300, 0.03), (200, 0.01), (200, 0.002)],
    };
    let (q, bound) = vi
        .fit(&init, log_lik, |_| {
            Draws::rotated_spherical(&normals(n * p * p, &mut rng), n, p, &ad)
        })
        .unwrap();
    let (mean, sd, bound) = (vec(q.mean.clone()), vec(q.std()), vec(bound));
    for i in 0..n {
        let mut lam: Vec<Vec<f64>> = (0..p)
            .map(|j| (0..p).map(|k| a_mat[i * 9 + j * p + k]).collect())
            .collect();
        (0..p).for_each(|j| lam[j][j] += 1.0);
        let cov = spd_inverse(&lam);
        let aa: Vec<f64> = (0..p)
            .map(|j| {
                (0..p)
                    .map(|k| a_mat[i * 9 + j * p + k] * a_vec[i * p + k])
                    .sum()
            })
            .collect();
        for j in 0..p {
            let m: f64 = (0..p).map(|k| cov[j][k] * aa[k]).sum();
            let sj = 1.0 / lam[j][j].sqrt();
            let (mq, sq) = (mean[i * p + j], sd[i * p + j]);
            assert!(
                (mq - m).abs() < 0.02 * sj && (sq / sj - 1.0).abs() < 0.01,
                "case {i}, ξ_{j}: q {mq:.5} ± {sq:.5}, closed form {m:.5} ± {sj:.5}"
            );
        }
        // The reported bound is the closed form at the fitted q (the last step's q, one Adam
        // step of lr 0.002 before it: equal to ~1e-4 nats):
        // E_q[log p] = −½ [(μ − a)ᵀ A (μ − a) + Σ_j A_jj s_j²], KL = ½ Σ (μ² + s² − 1) − Σ log s.
        let (mu, sq) = (&mean[i * p..(i + 1) * p], &sd[i * p..(i + 1) * p]);
        let r: Vec<f64> = (0..p).map(|j| mu[j] - a_vec[i * p + j]).collect();
        let a = |j: usize, k: usize| a_mat[i * 9 + j * p + k];
        let quad: f64 = (0..p)
            .map(|j| (0..p).map(|k| r[j] * a(j, k) * r[k]).sum::<f64>() + a(j, j) * sq[j] * sq[j])
            .sum();
        let kl: f64 = (0..p)
            .map(|j| 0.5 * (mu[j] * mu[j] + sq[j] * sq[j] - 1.0) - sq[j].ln())
            .sum();
        let want = -0.5 * quad - kl;
        assert!(
            (bound[i] - want).abs() < 1e-2,
            "case {i}: bound {:.6}, closed form {want:.6}",
            bound[i]
        );
    }
}

#[test]
fn a_diverging_log_likelihood_is_named() {
    let ad = f64_device().autodiff();
    let init = DiagGaussian::standard(2, 1, &ad);
    let vi = GaussianVi {
        schedule: vec![(3, 0.01)],
    };
    let err = vi
        .fit(
            &init,
            |xi| xi.reshape([4]).log(), // log of a negative ξ: NaN
            |_| Draws::rotated_spherical(&[1.0, 1.0], 2, 1, &ad),
        )
        .unwrap_err();
    assert!(err.contains("not finite at step 0"), "{err}");
}
