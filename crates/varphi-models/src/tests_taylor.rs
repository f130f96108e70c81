//! Taylor-mode derivatives of the MLP against central finite differences and an analytic u(x).

use crate::activation::Activation;
use crate::mlp::MlpConfig;
use crate::testing::{f64_device, tensor, vec};
use burn::module::Param;
use burn::prelude::*;

/// Check value, gradient and Hessian w.r.t. the first two of three inputs against central
/// differences (f64, h = 1e-4 for first and 1e-3 for second derivatives).
fn check_activation(act: Activation) {
    let dev = f64_device();
    dev.seed(7);
    let mlp = MlpConfig::new(vec![3, 16, 16, 2])
        .with_activation(act)
        .init(&dev);
    let pts = vec![0.3, -0.4, 0.5, -0.7, 0.2, -0.1];
    let x = tensor(pts.clone(), [2, 3], &dev);
    let jet = mlp.forward_with_derivatives(x.clone(), 2);
    let value = vec(jet.value.clone());
    let direct = vec(mlp.forward(x));
    for (a, b) in value.iter().zip(&direct) {
        assert!((a - b).abs() < 1e-12, "{act:?}: value {a} vs {b}");
    }
    let f = |p: &[f64]| vec(mlp.forward(tensor(p.to_vec(), [2, 3], &dev)));
    let shift = |k: usize, h: f64, l: usize, g: f64| {
        let mut p = pts.clone();
        for i in 0..2 {
            p[i * 3 + k] += h;
            p[i * 3 + l] += g;
        }
        f(&p)
    };
    let grad = vec(jet.grad.clone()); // [2, 2, 2]
    let hess = vec(jet.hessian.clone()); // [2, 2, 2, 2]
    let h1 = 1e-4;
    let h2 = 1e-3;
    for k in 0..2 {
        let (fp, fm) = (shift(k, h1, k, 0.0), shift(k, -h1, k, 0.0));
        for i in 0..2 {
            for j in 0..2 {
                let fd = (fp[i * 2 + j] - fm[i * 2 + j]) / (2.0 * h1);
                let tm = grad[(i * 2 + k) * 2 + j];
                assert!(
                    (fd - tm).abs() < 1e-7 * (1.0 + fd.abs()),
                    "{act:?}: d/dx{k} {tm} vs FD {fd}"
                );
            }
        }
        for l in 0..2 {
            let fpp = shift(k, h2, l, h2);
            let fpm = shift(k, h2, l, -h2);
            let fmp = shift(k, -h2, l, h2);
            let fmm = shift(k, -h2, l, -h2);
            for i in 0..2 {
                for j in 0..2 {
                    let idx = i * 2 + j;
                    let fd = if k == l {
                        // (f(x+2h) - 2f(x) + f(x-2h)) / (4h²) using the shifted evaluations.
                        let f0 = f(&pts)[idx];
                        (fpp[idx] - 2.0 * f0 + fmm[idx]) / (4.0 * h2 * h2)
                    } else {
                        (fpp[idx] - fpm[idx] - fmp[idx] + fmm[idx]) / (4.0 * h2 * h2)
                    };
                    let tm = hess[((i * 2 + k) * 2 + l) * 2 + j];
                    assert!(
                        (fd - tm).abs() < 1e-5 * (1.0 + fd.abs()),
                        "{act:?}: d2/dx{k}dx{l} {tm} vs FD {fd}"
                    );
                }
            }
        }
    }
}

#[test]
fn taylor_mode_matches_finite_differences_tanh() {
    check_activation(Activation::Tanh);
}
#[test]
fn taylor_mode_matches_finite_differences_sin() {
    check_activation(Activation::Sin);
}
#[test]
fn taylor_mode_matches_finite_differences_softplus() {
    check_activation(Activation::Softplus);
}
#[test]
fn taylor_mode_matches_finite_differences_gelu() {
    check_activation(Activation::Gelu);
}
#[test]
fn taylor_mode_matches_finite_differences_silu() {
    check_activation(Activation::Silu);
}

#[test]
fn taylor_mode_matches_an_analytic_network() {
    // u(x, y) = c · tanh(a x + b y + d): u_x = c a s, u_xx = −2 c a² t s, u_xy = −2 c a b t s,
    // with t = tanh(·), s = 1 − t².
    let dev = f64_device();
    let (a, b, c, d) = (0.8, -1.3, 2.0, 0.1);
    let mut mlp = MlpConfig::new(vec![2, 1, 1])
        .with_activation(Activation::Tanh)
        .init(&dev);
    mlp.layers[0].weight = Param::from_tensor(tensor(vec![a, b], [2, 1], &dev));
    mlp.layers[0].bias = Some(Param::from_tensor(tensor(vec![d], [1], &dev)));
    mlp.layers[1].weight = Param::from_tensor(tensor(vec![c], [1, 1], &dev));
    mlp.layers[1].bias = Some(Param::from_tensor(tensor(vec![0.0], [1], &dev)));
    let (x, y) = (0.4, -0.25);
    let jet = mlp.forward_with_derivatives(tensor(vec![x, y], [1, 2], &dev), 2);
    let t = f64::tanh(a * x + b * y + d);
    let s = 1.0 - t * t;
    let close = |got: Tensor<2>, want: f64| {
        let g = vec(got)[0];
        assert!((g - want).abs() < 1e-12, "{g} vs {want}");
    };
    close(jet.value.clone(), c * t);
    close(jet.d(0), c * a * s);
    close(jet.d(1), c * b * s);
    close(jet.d2(0, 0), -2.0 * c * a * a * t * s);
    close(jet.d2(0, 1), -2.0 * c * a * b * t * s);
    close(jet.d2(1, 0), -2.0 * c * a * b * t * s);
    close(jet.laplacian(), -2.0 * c * (a * a + b * b) * t * s);
}
