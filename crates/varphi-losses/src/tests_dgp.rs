//! Deep generative priors: the chi mean in closed form, VI-DGP through a frozen generator
//! against the exact posterior, and the chi-shell keeping a MAP latent on the typical set.

use crate::dgp::{chi_mean, chi_shell};
use crate::tests::{matmul, spd_inverse, transpose};
use burn::module::Param;
use burn::prelude::*;
use varphi_models::MlpConfig;
use varphi_models::testing::{f64_device, normals, tensor, vec};

#[test]
fn chi_mean_matches_closed_forms_and_monte_carlo() {
    let pi = std::f64::consts::PI;
    for (d, want) in [
        (1, (2.0 / pi).sqrt()),
        (2, (pi / 2.0).sqrt()),
        (3, 2.0 * (2.0 / pi).sqrt()),
    ] {
        assert!((chi_mean(d) - want).abs() < 1e-14, "d = {d}");
    }
    // d = 16: the mean norm of 20 000 standard normal draws, within 4 standard errors.
    let dev = f64_device();
    let w = vec(normals([20_000, 16], 5, &dev));
    let norms: Vec<f64> = w
        .chunks(16)
        .map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    let m = norms.iter().sum::<f64>() / 20_000.0;
    let sd = (norms.iter().map(|n| (n - m).powi(2)).sum::<f64>() / 19_999.0).sqrt();
    assert!(
        (m - chi_mean(16)).abs() < 4.0 * sd / 20_000f64.sqrt(),
        "{m} vs {}",
        chi_mean(16)
    );
    // The regulariser: zero on the shell.
    let on = tensor(vec![chi_mean(2), 0.0, 0.0, 1.0], [2, 2], &dev);
    let r = vec(chi_shell(on, 3.0));
    assert!(r[0].abs() < 1e-14);
    assert!((r[1] - 3.0 * (1.0 - chi_mean(2)).powi(2)).abs() < 1e-14);
}

#[test]
fn vi_dgp_through_a_frozen_generator_recovers_the_exact_latent_posterior() {
    // Generator f(w) = Fw + c (a one-layer network with fixed weights, w ∈ ℝ², z ∈ ℝ³), forward
    // map G(z) = Az, y = G(f(w)) + σε: the posterior over w is Gaussian with A_eff = AF.
    let dev = f64_device();
    let ad = dev.clone().autodiff();
    let f: Vec<Vec<f64>> = vec![vec![1.0, 0.3], vec![-0.5, 0.8], vec![0.2, -1.1]];
    let c = vec![0.1, 0.0, -0.2];
    let a: Vec<Vec<f64>> = vec![
        vec![1.0, 0.5, 0.0],
        vec![0.0, 1.0, -0.4],
        vec![0.6, 0.0, 1.0],
        vec![0.3, -0.7, 0.2],
    ];
    let sigma = 0.4;
    let y = [0.9, -0.3, 0.5, 1.1];
    let mut generator = MlpConfig::new(vec![2, 3]).init(&ad);
    generator.layers[0].weight = Param::from_tensor(tensor(transpose(&f).concat(), [2, 3], &ad));
    generator.layers[0].bias = Some(Param::from_tensor(tensor(c.clone(), [3], &ad)));
    let generator = generator.no_grad(); // frozen: trained beforehand
    // Exact posterior over w.
    let a_eff = matmul(&a, &f);
    let ac: Vec<f64> = matmul(&a, &c.iter().map(|v| vec![*v]).collect::<Vec<_>>())
        .into_iter()
        .map(|r| r[0])
        .collect();
    let mut prec = matmul(&transpose(&a_eff), &a_eff);
    for (i, row) in prec.iter_mut().enumerate() {
        for v in row.iter_mut() {
            *v /= sigma * sigma;
        }
        row[i] += 1.0;
    }
    let cov = spd_inverse(&prec);
    let r: Vec<Vec<f64>> = y
        .iter()
        .zip(&ac)
        .map(|(y, b)| vec![(y - b) / (sigma * sigma)])
        .collect();
    let mean: Vec<f64> = matmul(&cov, &matmul(&transpose(&a_eff), &r))
        .into_iter()
        .map(|v| v[0])
        .collect();
    // VI-DGP: full-covariance q(w), likelihood through the generator and G.
    let at = tensor(transpose(&a).concat(), [3, 4], &ad);
    let y_t = tensor(y.to_vec(), [1, 4], &ad);
    let (m, cv) = crate::tests::fit_gaussian_q(
        varphi_models::GaussianFamily::FullCovariance,
        2,
        11,
        &ad,
        |w| {
            let s = w.dims()[0];
            let z = generator.forward(w.reshape([s, 2]));
            let r = z.matmul(at.clone()) - y_t.clone();
            r.powi_scalar(2)
                .sum_dim(1)
                .mul_scalar(-0.5 / (sigma * sigma))
                .reshape([s, 1])
        },
    );
    for i in 0..2 {
        assert!((m[i] - mean[i]).abs() < 1e-3, "mean {m:?} vs {mean:?}");
        for j in 0..2 {
            assert!(
                (cv[2 * i + j] - cov[i][j]).abs() < 1e-3,
                "cov {cv:?} vs {cov:?}"
            );
        }
    }
}

#[test]
fn chi_shell_keeps_an_underdetermined_map_estimate_on_the_typical_set() {
    // w ∈ ℝ⁸, two observations y = G w* (no noise): every w with G w = y fits. Gradient descent
    // from (near) 0 finds the minimum-norm one, far inside the shell; eq. 25's regulariser moves it to
    // ‖w‖ ≈ μ_χ(8) ≈ 2.74 without giving up the fit.
    let dev = f64_device();
    let ad = dev.clone().autodiff();
    let g = normals([8, 2], 21, &dev);
    let w_true = normals([1, 8], 22, &dev);
    let y = w_true.matmul(g.clone());
    let (g, y) = (
        Tensor::<2>::from_data(g.into_data(), &ad),
        Tensor::<2>::from_data(y.into_data(), &ad),
    );
    let fit = |beta: f64| -> (f64, f64) {
        // Start just off the origin, where ‖w‖ has no gradient.
        let mut w = Tensor::<2>::zeros([1, 8], &ad)
            .add_scalar(0.01)
            .require_grad();
        for _ in 0..4000 {
            let misfit = (w.clone().matmul(g.clone()) - y.clone())
                .powi_scalar(2)
                .sum();
            let j = if beta > 0.0 {
                misfit.clone() + chi_shell(w.clone(), beta).sum()
            } else {
                misfit.clone()
            };
            let grad = w.grad(&j.backward()).expect("w is a leaf");
            w = Tensor::<2>::from_inner(w.inner() - grad.mul_scalar(0.02)).require_grad();
        }
        let misfit = vec((w.clone().matmul(g.clone()) - y.clone())
            .powi_scalar(2)
            .sum())[0];
        let norm = vec(w.powi_scalar(2).sum())[0].sqrt();
        (norm, misfit)
    };
    let (n0, m0) = fit(0.0);
    let (n1, m1) = fit(1.0);
    let mu = chi_mean(8);
    assert!(m0 < 1e-8 && m1 < 1e-4, "both fit the data: {m0}, {m1}");
    assert!(n0 < mu - 0.5, "minimum-norm solution {n0} vs μ_χ {mu}");
    assert!((n1 - mu).abs() < 0.02, "shell solution {n1} vs μ_χ {mu}");
}
