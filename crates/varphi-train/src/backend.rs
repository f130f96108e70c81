//! Backends chosen at run time, always constructed explicitly.
//!
//! burn's `Device::default()` picks wgpu whenever it is compiled in, so varphi never uses it.

use crate::error::TrainError;
use burn::prelude::*;
use burn::tensor::{DeviceConfig, FloatDType};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

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

const NO_ADAPTER: &str = "no wgpu adapter found (no Vulkan, Metal or DX12 GPU or driver); install a GPU driver (on Linux without a GPU: Mesa's lavapipe, package mesa-vulkan-drivers) or use --backend flex";

/// The wgpu devices of this machine (empty when there is no adapter or driver).
fn wgpu_adapters() -> Vec<Device> {
    // A missing driver can panic inside the runtime; treat that as "no adapter" without
    // letting the panic hook print anything.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let devices =
        std::panic::catch_unwind(|| Device::enumerate(burn::tensor::DeviceType::Wgpu).into_vec())
            .unwrap_or_default();
    std::panic::set_hook(hook);
    devices
}

/// Whether at least one wgpu adapter exists, without panicking.
pub fn wgpu_available() -> bool {
    !wgpu_adapters().is_empty()
}

/// The process-wide wgpu device: burn's wgpu runtime can be initialised only once per
/// process, so the first successful initialisation is kept and reused.
fn wgpu_device() -> Result<(Device, String), TrainError> {
    static WGPU: OnceLock<Result<(Device, String), String>> = OnceLock::new();
    WGPU.get_or_init(|| {
        // `Device::enumerate` lists the adapters without panicking when there are none (the
        // lazy `Device::wgpu` constructor would panic on first use instead). The first entry
        // is the preferred adapter (discrete GPUs first).
        let device = wgpu_adapters()
            .into_iter()
            .next()
            .ok_or_else(|| NO_ADAPTER.to_string())?;
        let names: Vec<String> = Device::enumerate_physical()
            .into_iter()
            .map(|g| g.name)
            .collect();
        let description = if names.is_empty() {
            format!("wgpu {device:?}")
        } else {
            format!("wgpu on {}", names.join(", "))
        };
        Ok((device, description))
    })
    .clone()
    .map_err(TrainError::Device)
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
            wgpu_device()?
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
