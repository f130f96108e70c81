//! Backends chosen at run time, always constructed explicitly.
//!
//! burn's `Device::default()` picks wgpu whenever it is compiled in, so varphi never uses it.

use crate::error::TrainError;
use burn::prelude::*;
use burn::tensor::{DeviceConfig, FloatDType};
use serde::{Deserialize, Serialize};

/// A compute backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// burn's pure-Rust CPU backend (SIMD + rayon). The default: fastest here for the
    /// benchmark VAE (docs/benchmarks.md).
    Flex,
    /// burn's ndarray CPU backend (deprecated upstream, kept for comparison).
    Ndarray,
    /// burn-wgpu: Vulkan, Metal or DX12 GPUs, f32 only.
    Wgpu,
}

impl Default for BackendKind {
    fn default() -> Self {
        BackendKind::Flex
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
        })
    }
}

/// Float precision of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// 32-bit floats (all backends).
    #[default]
    F32,
    /// 64-bit floats (CPU backends only).
    F64,
}

/// A device ready for training: the backend, its float type, and a description for logs.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    /// The (non-autodiff) device.
    pub device: Device,
    /// The backend.
    pub kind: BackendKind,
    /// Human-readable description, e.g. the GPU adapter name.
    pub description: String,
}

/// Whether at least one wgpu adapter exists, without panicking.
pub fn wgpu_available() -> bool {
    std::panic::catch_unwind(|| {
        !Device::enumerate(burn::tensor::DeviceType::Wgpu)
            .into_vec()
            .is_empty()
    })
    .unwrap_or(false)
}

/// Build the device for `kind` with default float type `precision`.
///
/// Errors: f64 on wgpu (f64 on Mesa's lavapipe returns wrong `exp`/`tanh`, and most GPUs lack
/// it), or no wgpu adapter (message suggests `--backend flex`).
pub fn select_device(
    kind: BackendKind,
    precision: Precision,
) -> Result<SelectedDevice, TrainError> {
    #[allow(deprecated)] // ndarray is deprecated upstream; kept as a comparison backend
    let (mut device, description) = match kind {
        BackendKind::Flex => (Device::flex(), "flex (CPU)".to_string()),
        BackendKind::Ndarray => (Device::ndarray(), "ndarray (CPU)".to_string()),
        BackendKind::Wgpu => {
            if precision == Precision::F64 {
                return Err(TrainError::Device(
                    "training.precision = \"f64\" is not supported on wgpu; use f32 on the GPU, or --backend flex for f64".into(),
                ));
            }
            if !wgpu_available() {
                return Err(TrainError::Device(
                    "no wgpu adapter found (no Vulkan, Metal or DX12 GPU or driver); install a GPU driver (on Linux without a GPU: Mesa's lavapipe, package mesa-vulkan-drivers) or use --backend flex".into(),
                ));
            }
            let device = Device::wgpu_options().init().map_err(|e| {
                TrainError::Device(format!(
                    "wgpu adapter could not be initialised: {e}; use --backend flex to train on the CPU"
                ))
            })?;
            let names: Vec<String> = Device::enumerate_physical()
                .into_iter()
                .map(|g| g.name)
                .collect();
            let description = if names.is_empty() {
                format!("wgpu {device:?}")
            } else {
                format!("wgpu on {}", names.join(", "))
            };
            (device, description)
        }
    };
    if precision == Precision::F64 {
        let current = device.settings().float_dtype;
        if current != FloatDType::F64.into() {
            device
                .configure(DeviceConfig::default().float_dtype(FloatDType::F64))
                .map_err(|e| {
                    TrainError::Device(format!(
                        "cannot switch {kind} to f64 ({e:?}); set the precision before any tensor is created"
                    ))
                })?;
        }
    }
    Ok(SelectedDevice {
        device,
        kind,
        description,
    })
}
