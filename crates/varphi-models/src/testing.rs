//! Test helpers shared by this crate's unit tests (compiled only for tests).

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
