//! Helpers for tests with known answers, shared by varphi's crates: an f64 CPU device,
//! host/tensor conversion, a dense Cholesky factorisation for closed-form references, observed
//! convergence orders and finite-difference gradient checks.

use burn::prelude::*;
use burn::tensor::{DeviceConfig, FloatDType};
use std::sync::OnceLock;

/// The flex device configured for f64, once per test process.
pub fn f64_device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let mut d = Device::flex();
            d.configure(DeviceConfig::default().float_dtype(FloatDType::F64))
                .expect("configure f64 before any tensor is created");
            d
        })
        .clone()
}

/// Read a tensor into `Vec<f64>`.
pub fn vec<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().try_into_vec_as::<f64>().expect("f64")
}

/// A tensor from f64 values.
pub fn tensor<const D: usize>(v: Vec<f64>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Lower Cholesky factor of a small dense SPD matrix (reference computations in tests).
pub fn cholesky(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            l[i][j] = if i == j {
                (a[i][i] - s).sqrt()
            } else {
                (a[i][j] - s) / l[j][j]
            };
        }
    }
    l
}

/// Observed convergence orders `log2(e_k / e_{k+1})` of errors on grids refined by 2.
pub fn observed_orders(errors: &[f64]) -> Vec<f64> {
    errors.windows(2).map(|w| (w[0] / w[1]).log2()).collect()
}

/// Check the autodiff gradient of a scalar function against central finite differences.
///
/// `f` maps a 1-D tensor on an autodiff device to a 1-element tensor. Returns the largest
/// relative error `|g_ad − g_fd| / max(|g_fd|, scale)` over all coordinates, where `scale` is
/// the largest `|g_fd|` times 1e-3 (so that near-zero entries do not dominate).
pub fn gradient_check(f: impl Fn(Tensor<1>) -> Tensor<1>, x0: &[f64], step: f64) -> f64 {
    let ad = f64_device().autodiff();
    let n = x0.len();
    let x = Tensor::<1>::from_data(TensorData::new(x0.to_vec(), [n]), &ad).require_grad();
    let grads = f(x.clone()).sum().backward();
    let g_ad = vec(x.grad(&grads).expect("the input takes part in f"));
    let eval =
        |v: Vec<f64>| -> f64 { vec(f(Tensor::<1>::from_data(TensorData::new(v, [n]), &ad)))[0] };
    let g_fd: Vec<f64> = (0..n)
        .map(|i| {
            let (mut p, mut m) = (x0.to_vec(), x0.to_vec());
            p[i] += step;
            m[i] -= step;
            (eval(p) - eval(m)) / (2.0 * step)
        })
        .collect();
    let scale = g_fd.iter().fold(0.0f64, |a, g| a.max(g.abs())) * 1e-3;
    g_ad.iter()
        .zip(&g_fd)
        .map(|(a, b)| (a - b).abs() / b.abs().max(scale).max(1e-300))
        .fold(0.0, f64::max)
}

/// Standard normals of `shape` from a seeded ChaCha8 stream, independent of the device's
/// shared RNG (which concurrently running tests also draw from).
pub fn normals<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| rand_distr::StandardNormal.sample(&mut rng))
        .collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}
