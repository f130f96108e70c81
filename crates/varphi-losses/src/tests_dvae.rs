//! The Φ-DVAE bound against its closed form on a linear-Gaussian model (f64).

use crate::dvae::{DvaeElbo, LatentPhysics};
use crate::likelihood::{GaussianLikelihoodConfig, LikelihoodConfig};
use crate::tests::{Mat, log_normal, matmul, spd_inverse, transpose};
use crate::tests_kalman::{host_mat, mat_vec, stacked_system};
use burn::module::Param;
use burn::prelude::*;
use varphi_models::testing::{f64_device, normals, tensor, vec};
use varphi_models::{
    DecoderConfig, DvaeConfig, EncoderConfig, FrameDecoder, FrameEncoder, FrameNetsConfig,
    MlpDecoderConfig, MlpEncoderConfig, ParameterPrior, ParameterScale,
};
use varphi_physics::dynamics::PeriodicAdvection;

#[test]
fn dvae_bound_is_its_closed_form_on_a_linear_gaussian_model() {
    // Linear encoder q(x_n | y_n) = N(A y_n, diag v), linear decoder p(y_n | x_n) = N(B x_n, σ²),
    // q_λ a point mass (sd e⁻³⁰): every term of J has a closed form, estimated here by Monte
    // Carlo over `s` replicas of one sequence.
    let dev = f64_device();
    let (d, p, steps, s) = (4, 5, 3, 20_000);
    let sigma_y = 0.3;
    let a: Mat = (0..d)
        .map(|i| {
            (0..p)
                .map(|j| ((i * 3 + j * 2) % 7) as f64 * 0.15 - 0.4)
                .collect()
        })
        .collect();
    let bm: Mat = (0..p)
        .map(|i| {
            (0..d)
                .map(|j| ((i + 2 * j) % 5) as f64 * 0.2 - 0.3)
                .collect()
        })
        .collect();
    let v: [f64; 4] = [0.02, 0.05, 0.03, 0.08];
    let mut model = DvaeConfig::new(
        FrameNetsConfig::dense(
            EncoderConfig::Mlp(MlpEncoderConfig::new(p, d).with_hidden(vec![])),
            DecoderConfig::Mlp(MlpDecoderConfig::new(d, p).with_hidden(vec![])),
        ),
        2,
    )
    .init(&dev);
    // Linear weights are [in, out] (O = I W + b): the head emits [μ, log σ²].
    let enc_w: Vec<f64> = (0..p)
        .flat_map(|j| (0..2 * d).map(move |o| (j, o)))
        .map(|(j, o)| if o < d { a[o][j] } else { 0.0 })
        .collect();
    let enc_b: Vec<f64> = (0..2 * d)
        .map(|o| if o < d { 0.0 } else { v[o - d].ln() })
        .collect();
    let (FrameEncoder::Dense(encoder), FrameDecoder::Dense(decoder)) =
        (&mut model.encoder, &mut model.decoder)
    else {
        unreachable!("dense networks")
    };
    let head = &mut encoder.head.layers[0];
    head.weight = Param::from_tensor(tensor(enc_w, [p, 2 * d], &dev));
    head.bias = Some(Param::from_tensor(tensor(enc_b, [2 * d], &dev)));
    let dec = &mut decoder.dense.layers[0];
    dec.weight = Param::from_tensor(tensor(transpose(&bm).concat(), [d, p], &dev));
    dec.bias = Some(Param::from_tensor(Tensor::zeros([p], &dev)));
    let xi = [0.5, -0.2];
    model.param_mean = Param::from_tensor(tensor(xi.to_vec(), [1, 2], &dev));
    model.param_log_sd = Param::from_tensor(Tensor::full([1, 2], -30.0, &dev));
    let prior = ParameterPrior {
        names: vec!["c".into(), "D".into()],
        mean: vec![0.6, (0.01f64).ln()],
        sd: vec![0.4, 0.3],
        scale: vec![ParameterScale::Linear, ParameterScale::Log],
    };
    let lambda = prior.to_physical_host(&xi);
    let adv = PeriodicAdvection::new(d, 0.1);
    let q: Mat = (0..d)
        .map(|i| (0..d).map(|j| if i == j { 0.04 } else { 0.01 }).collect())
        .collect();
    let r = vec![0.01; d];
    let m0 = vec![0.3, -0.1, 0.2, 0.0];
    let p0: Mat = (0..d)
        .map(|i| (0..d).map(|j| if i == j { 0.5 } else { 0.0 }).collect())
        .collect();
    let eye: Mat = (0..d)
        .map(|i| (0..d).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    let physics = LatentPhysics {
        dynamics: &adv,
        prior: Some(&prior),
        process: tensor(q.concat(), [1, d, d], &dev),
        observation: tensor(eye.concat(), [d, d], &dev),
        noise: tensor(r.clone(), [1, d], &dev),
        initial_mean: tensor(m0.clone(), [1, d], &dev),
        initial_cov: tensor(p0.concat(), [1, d, d], &dev),
    };
    let y: Vec<f64> = (0..steps * p).map(|k| (k as f64 * 0.77).cos()).collect();
    let likelihood =
        LikelihoodConfig::Gaussian(GaussianLikelihoodConfig::new().with_sigma(sigma_y)).init(&dev);
    let yt = tensor(y.clone(), [1, steps, p], &dev).repeat_dim(0, s);
    let out = DvaeElbo { sequences: 7 }.forward(
        &model,
        &likelihood,
        &physics,
        yt,
        normals([1, s * steps, d], 1, &dev),
        normals([s, 1, 2], 2, &dev),
    );
    out.filter.check().unwrap();
    // Closed forms per sequence.
    let frames: Vec<&[f64]> = y.chunks(p).collect();
    let means: Vec<Vec<f64>> = frames.iter().map(|f| mat_vec(&a, f)).collect();
    let btb = matmul(&transpose(&bm), &bm);
    let rec: f64 = frames
        .iter()
        .zip(&means)
        .map(|(f, m)| {
            let fit = mat_vec(&bm, m);
            let sq: f64 = f.iter().zip(&fit).map(|(a, b)| (a - b).powi(2)).sum();
            let tr: f64 = (0..d).map(|j| btb[j][j] * v[j]).sum();
            -0.5 * p as f64 * (2.0 * std::f64::consts::PI * sigma_y * sigma_y).ln()
                - (sq + tr) / (2.0 * sigma_y * sigma_y)
        })
        .sum();
    let entropy: f64 = steps as f64
        * v.iter()
            .map(|v| 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * v).ln())
            .sum::<f64>();
    let mm = host_mat(&adv.matrix_host(lambda[0], lambda[1]), d);
    let (_, _, mx, cx, _) = stacked_system(&mm, &q, &eye, &r, &m0, &p0, steps);
    let inv = spd_inverse(&cx);
    let a_stacked: Vec<f64> = means.concat();
    let tr: f64 = (0..steps * d).map(|k| inv[k][k] * v[k % d]).sum();
    let dynamics = log_normal(&a_stacked, &mx, &cx) - 0.5 * tr;
    let kl: f64 = xi
        .iter()
        .map(|m| 0.5 * (m * m + (-60.0f64).exp() - 1.0) + 30.0)
        .sum();
    let stats = |t: Tensor<1>| {
        let v = vec(t);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, (var / n).sqrt(), v)
    };
    let (rm, rse, rv) = stats(out.reconstruction.clone());
    let (em, ese, ev) = stats(out.encoder_entropy.clone());
    let (dm, dse, dv) = stats(out.dynamics.clone());
    for (name, got, se, want) in [
        ("reconstruction", rm, rse, rec),
        ("encoder entropy", em, ese, entropy),
        ("dynamics", dm, dse, dynamics),
    ] {
        assert!(
            (got - want).abs() < 4.0 * se,
            "{name}: Monte Carlo {got:.5} ± {se:.5}, closed form {want:.5}"
        );
    }
    assert!((vec(out.kl.clone())[0] - kl).abs() < 1e-9, "KL");
    // loss = KL / S − mean(per-sequence J).
    let total: f64 = rv
        .iter()
        .zip(&ev)
        .zip(&dv)
        .map(|((a, b), c)| a + b + c)
        .sum::<f64>()
        / s as f64;
    let loss = vec(out.loss)[0];
    assert!(
        (loss - (kl / 7.0 - total)).abs() < 1e-8,
        "loss {loss} vs {}",
        kl / 7.0 - total
    );
}

#[test]
fn amortised_bound_and_learned_linear_baseline_reduce_to_the_shared_bound() {
    // An amortisation network whose last layer is zero gives every sequence the shared q_λ:
    // the same terms, the KL paid per sequence instead of once per data set. A learned linear
    // transition A = M(c, D) without parameters gives the physics filter at a point-mass q_λ.
    let dev = f64_device();
    let (d, p, steps, b) = (4, 6, 3, 5);
    let shared_cfg = DvaeConfig::new(
        FrameNetsConfig::dense(
            EncoderConfig::Mlp(MlpEncoderConfig::new(p, d).with_hidden(vec![8])),
            DecoderConfig::Mlp(MlpDecoderConfig::new(d, p).with_hidden(vec![8])),
        ),
        2,
    );
    let mut shared = shared_cfg.init(&dev);
    let xi = [0.3, -0.4];
    shared.param_mean = Param::from_tensor(tensor(xi.to_vec(), [1, 2], &dev));
    shared.param_log_sd = Param::from_tensor(Tensor::full([1, 2], -30.0, &dev));
    let mut amortised = shared_cfg
        .clone()
        .with_amortise(Some(varphi_models::MlpConfig::new(vec![steps * d, 6, 4])))
        .init(&dev);
    amortised.encoder = shared.encoder.clone();
    amortised.decoder = shared.decoder.clone();
    amortised.param_mean = shared.param_mean.clone();
    amortised.param_log_sd = shared.param_log_sd.clone();
    let last = &mut amortised.param_net.as_mut().unwrap().layers[1];
    last.weight = Param::from_tensor(Tensor::zeros([6, 4], &dev));
    last.bias = Some(Param::from_tensor(Tensor::zeros([4], &dev)));
    let prior = ParameterPrior {
        names: vec!["c".into(), "D".into()],
        mean: vec![0.6, (0.01f64).ln()],
        sd: vec![0.4, 0.3],
        scale: vec![ParameterScale::Linear, ParameterScale::Log],
    };
    let adv = PeriodicAdvection::new(d, 0.1);
    let y = normals([b, steps, p], 5, &dev);
    let likelihood =
        LikelihoodConfig::Gaussian(GaussianLikelihoodConfig::new().with_sigma(0.5)).init(&dev);
    let run = |model: &varphi_models::Dvae, physics: &LatentPhysics| {
        DvaeElbo { sequences: 9 }.forward(
            model,
            &likelihood,
            physics,
            y.clone(),
            normals([1, b * steps, d], 6, &dev),
            normals([b, 1, 2], 7, &dev),
        )
    };
    let a = run(&shared, &latent(&adv, Some(&prior), d, &dev));
    let m = run(&amortised, &latent(&adv, Some(&prior), d, &dev));
    let close = |x: Tensor<1>, y: Tensor<1>, what: &str| {
        for (u, v) in vec(x).iter().zip(vec(y)) {
            assert!((u - v).abs() < 1e-10, "{what}: {u} vs {v}");
        }
    };
    close(a.reconstruction.clone(), m.reconstruction.clone(), "rec");
    close(a.dynamics.clone(), m.dynamics.clone(), "dynamics");
    let kl = vec(a.kl.clone())[0];
    assert_eq!(vec(m.kl.clone()).len(), b);
    assert!(vec(m.kl.clone()).iter().all(|k| (k - kl).abs() < 1e-9));
    let j = |o: &crate::dvae::DvaeOutput| {
        vec(o.reconstruction.clone() + o.encoder_entropy.clone() + o.dynamics.clone())
            .iter()
            .sum::<f64>()
            / b as f64
    };
    assert!((vec(a.loss.clone())[0] - (kl / 9.0 - j(&a))).abs() < 1e-8);
    assert!((vec(m.loss.clone())[0] - (kl - j(&m))).abs() < 1e-8);
    // The baseline with A = M(T(ξ)) and no parameters.
    let lambda = prior.to_physical_host(&xi);
    let learned = crate::dvae::LearnedLinear {
        matrix: tensor(adv.matrix_host(lambda[0], lambda[1]), [d, d], &dev),
    };
    let l = run(&shared, &latent(&learned, None, d, &dev));
    close(
        a.dynamics.clone(),
        l.dynamics.clone(),
        "learned-linear dynamics",
    );
    assert!(vec(l.kl.clone()).iter().all(|k| *k == 0.0));
    assert!((vec(l.loss.clone())[0] + j(&l)).abs() < 1e-8);
}

/// Q = 0.05 I, H = I, R = 0.02, m₀ = 0, P₀ = I around `dynamics`.
fn latent<'a>(
    dynamics: &'a dyn varphi_physics::dynamics::Dynamics,
    prior: Option<&'a ParameterPrior>,
    d: usize,
    dev: &Device,
) -> LatentPhysics<'a> {
    let eye: Vec<f64> = (0..d * d)
        .map(|k| if k / d == k % d { 1.0 } else { 0.0 })
        .collect();
    LatentPhysics {
        dynamics,
        prior,
        process: tensor(eye.iter().map(|v| v * 0.05).collect(), [1, d, d], dev),
        observation: tensor(eye.clone(), [d, d], dev),
        noise: tensor(vec![0.02; d], [1, d], dev),
        initial_mean: Tensor::zeros([1, d], dev),
        initial_cov: tensor(eye, [1, d, d], dev),
    }
}
