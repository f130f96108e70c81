//! A flow posterior inside an amortised VAE, against linear-Gaussian truth (f64):
//! `z ~ N(0, I₂)`, `x | z ~ N(Az, σ²I₃)`. The exact posterior has a constant, strongly
//! correlated covariance `Λ⁻¹` (`Λ = I + AᵀA/σ²`) and a mean linear in `x`, so a linear
//! encoder reaches the best mean-field Gaussian, whose ELBO falls short of `log p(x)` by
//! exactly `½(Σᵢ log Λᵢᵢ − log det Λ)` (0.798 nats here) for every `x`; a flow with LU mixing
//! can represent the exact posterior and should close that gap.

use crate::elbo::{ElboConfig, KlEstimator};
use crate::tests::{Mat, log_normal, matmul, transpose};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use varphi_models::distributions::LN_2PI;
use varphi_models::testing::{f64_device, normals, tensor, vec};
use varphi_models::{
    DecoderConfig, DiagGaussian, EncoderConfig, LatentVariableModel, MlpDecoderConfig,
    MlpEncoderConfig, PosteriorFlowConfig, Vae, VaeConfig,
};

const SIGMA: f64 = 0.5;
const N: usize = 64;

fn a() -> Mat {
    vec![vec![1.0, 1.0], vec![1.0, 1.3], vec![0.6, 0.4]]
}

/// `N` observations drawn from the model, `[N, 3]` row-major.
fn data() -> Vec<f64> {
    let dev = f64_device();
    let z = vec(normals([N, 2], 11, &dev));
    let e = vec(normals([N, 3], 12, &dev));
    let a = a();
    (0..N)
        .flat_map(|n| {
            let (z, e, a) = (&z, &e, &a);
            (0..3).map(move |i| a[i][0] * z[2 * n] + a[i][1] * z[2 * n + 1] + SIGMA * e[3 * n + i])
        })
        .collect()
}

/// Mean `log p(x)` over the data: `x ~ N(0, AAᵀ + σ²I)`.
fn mean_log_evidence(x: &[f64]) -> f64 {
    let a = a();
    let mut c = matmul(&a, &transpose(&a));
    for (i, row) in c.iter_mut().enumerate() {
        row[i] += SIGMA * SIGMA;
    }
    x.chunks(3)
        .map(|xi| log_normal(xi, &[0.0; 3], &c))
        .sum::<f64>()
        / N as f64
}

/// `log p(x | z)` for `z: [s, N, 2]` and the data `x: [N, 3]`.
fn log_lik(x: Tensor<2>, z: Tensor<3>) -> Tensor<2> {
    let [s, n, _] = z.dims();
    let at = tensor(transpose(&a()).concat(), [1, 2, 3], &z.device()).expand([s, 2, 3]);
    let r = z.matmul(at) - x.unsqueeze::<3>().expand([s, n, 3]);
    r.powi_scalar(2)
        .div_scalar(SIGMA * SIGMA)
        .add_scalar(LN_2PI + (SIGMA * SIGMA).ln())
        .sum_dim(2)
        .squeeze_dim::<2>(2)
        .mul_scalar(-0.5)
}

/// Train the encoder (linear: the exact posterior mean is linear in `x`) and the flow, if
/// any, by the Monte-Carlo-KL ELBO with the decoder fixed to the true `A`; return the mean
/// ELBO over the data (512 particles).
fn fitted_elbo(flow: bool) -> f64 {
    let dev = f64_device();
    let ad = dev.clone().autodiff();
    let mut vae: Vae = VaeConfig::new(
        EncoderConfig::Mlp(MlpEncoderConfig::new(3, 2).with_hidden(vec![])),
        DecoderConfig::Mlp(MlpDecoderConfig::new(2, 3)),
    )
    .with_flow(flow.then(|| {
        PosteriorFlowConfig::new()
            .with_layers(3)
            .with_hidden(vec![16])
    }))
    .init(&ad);
    // Seed every weight that trains: `init` draws from the device RNG that parallel tests share.
    for (j, layer) in vae.encoder.head.layers.iter_mut().enumerate() {
        let w = normals(layer.weight.dims(), 90 + j as u64, &ad).mul_scalar(0.3);
        layer.weight = burn::module::Param::from_tensor(w);
    }
    if let Some(f) = vae.flow.as_mut() {
        for (k, c) in f.flow.couplings.iter_mut().enumerate() {
            let last = c.net.layers.len() - 1;
            for (j, layer) in c.net.layers.iter_mut().enumerate() {
                let w = layer.weight.val();
                let scale = if j == last { 0.0 } else { 0.5 };
                let fresh =
                    normals(w.dims(), 100 + 10 * k as u64 + j as u64, &ad).mul_scalar(scale);
                layer.weight = burn::module::Param::from_tensor(fresh);
            }
        }
    }
    let x = tensor(data(), [N, 3], &ad);
    let elbo = ElboConfig::new()
        .with_kl(KlEstimator::MonteCarlo)
        .with_n_particles(8)
        .init();
    let prior = DiagGaussian::standard(N, 2, &ad);
    let mut opt = AdamConfig::new().init();
    let mut step = 0u64;
    for (n, lr) in [(1500, 0.01), (1000, 0.002)] {
        for _ in 0..n {
            let q = vae.variational(x.clone(), None);
            let eps = normals([8, N, 2], 1000 + step, &ad);
            let out = elbo.forward(&q, &prior, eps, |z| log_lik(x.clone(), z), 0);
            let grads = GradientsParams::from_grads(out.loss.backward(), &vae);
            vae = opt.step(lr, vae, grads);
            step += 1;
        }
    }
    let x = tensor(data(), [N, 3], &dev);
    let vae = vae.valid();
    let q = vae.variational(x.clone(), None);
    let big = ElboConfig::new()
        .with_kl(KlEstimator::MonteCarlo)
        .with_n_particles(512)
        .init();
    let out = big.forward(
        &q,
        &DiagGaussian::standard(N, 2, &dev),
        normals([512, N, 2], 7, &dev),
        |z| log_lik(x.clone(), z),
        0,
    );
    vec(out.elbo).iter().sum::<f64>() / N as f64
}

#[test]
fn flow_posterior_closes_the_mean_field_gap_of_an_amortised_vae() {
    let a = a();
    let ata = matmul(&transpose(&a), &a);
    let l = |i: usize, j: usize| ata[i][j] / (SIGMA * SIGMA) + if i == j { 1.0 } else { 0.0 };
    let det = l(0, 0) * l(1, 1) - l(0, 1) * l(1, 0);
    let mf_gap = 0.5 * (l(0, 0).ln() + l(1, 1).ln() - det.ln());
    assert!((mf_gap - 0.798).abs() < 1e-3, "{mf_gap}");
    let log_p = mean_log_evidence(&data());

    let gap_gauss = log_p - fitted_elbo(false);
    let gap_flow = log_p - fitted_elbo(true);
    eprintln!("gaps: mean-field {gap_gauss:.4} (theory {mf_gap:.4}), flow {gap_flow:.4}");
    assert!(
        (gap_gauss - mf_gap).abs() < 0.03,
        "mean-field gap {gap_gauss} vs theory {mf_gap}"
    );
    assert!(
        (-0.01..0.03).contains(&gap_flow),
        "flow gap {gap_flow} (mean-field {gap_gauss}, theory {mf_gap})"
    );
}

/// The PDDLVM posterior bound takes a flow `q(ξ | y)`: its KL is then the Monte-Carlo estimate
/// on the bound's own particles — for an identity flow exactly the host-computed
/// `mean_s [log N(ξ_s; μ, σ²) − log N(ξ_s; 0, I)]`, and near the closed form with many
/// particles.
#[test]
fn pddlvm_data_bound_estimates_the_kl_of_a_flow_posterior() {
    let dev = f64_device();
    let (mu, lv) = (
        vec![0.5, -1.0, 0.2, 1.5, 0.0, -0.3],
        vec![-0.5, 0.3, -1.2, 0.1, -0.8, 0.4],
    );
    let base = DiagGaussian::new(
        tensor(mu.clone(), [2, 3], &dev),
        tensor(lv.clone(), [2, 3], &dev),
    );
    // Two couplings and two reversal mixers: the identity map at initialisation.
    let q = PosteriorFlowConfig::new()
        .with_layers(2)
        .with_hidden(vec![8])
        .init(3, &dev)
        .forward(base.clone());
    const S: usize = 4096;
    let eps = normals([S, 2, 3], 21, &dev);
    let out = crate::PddlvmDataElbo.forward(&q, eps.clone(), |xi| {
        xi.sum_dim(1).squeeze_dim::<1>(1).mul_scalar(0.0)
    });
    let kl = vec(out.kl);
    let analytic = vec(base.kl_standard_normal());
    let e = vec(eps);
    for b in 0..2 {
        let mc: f64 = (0..S)
            .map(|s| {
                (0..3)
                    .map(|j| {
                        let (m, l, ep) = (mu[3 * b + j], lv[3 * b + j], e[(s * 2 + b) * 3 + j]);
                        let xi = m + (0.5 * l).exp() * ep;
                        -0.5 * ep * ep - 0.5 * l + 0.5 * xi * xi
                    })
                    .sum::<f64>()
            })
            .sum::<f64>()
            / S as f64;
        assert!(
            (kl[b] - mc).abs() < 1e-9,
            "flow KL {} vs host MC {mc}",
            kl[b]
        );
        assert!(
            (kl[b] - analytic[b]).abs() < 0.1,
            "flow KL {} vs closed form {}",
            kl[b],
            analytic[b]
        );
    }
}
