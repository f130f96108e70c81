//! Helpers for tests with known answers, shared by varphi's crates: an f64 CPU device,
//! host/tensor conversion and a dense Cholesky factorisation for closed-form references.

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
