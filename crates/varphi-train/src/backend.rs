//! Backends chosen at run time, always constructed explicitly.
//!
//! burn's `Device::default()` picks wgpu whenever it is compiled in, so varphi never uses it.

use crate::error::TrainError;
use burn::prelude::*;
use burn::tensor::{DeviceConfig, FloatDType};
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, OnceLock};

/// A compute backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// burn's pure-Rust CPU backend (SIMD + rayon). The default: fastest here for the
    /// benchmark VAE (docs/benchmarks.md).
    Flex,
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

const NO_ADAPTER: &str = "no usable wgpu adapter (no Vulkan, Metal or DX12 GPU or driver found; OpenGL is not used); install a GPU driver (on Linux without a GPU: Mesa's lavapipe, package mesa-vulkan-drivers), or use --backend flex";

/// One wgpu adapter of this machine, as `varphi devices` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    /// Index in [`adapters`]' list (`--backend wgpu:INDEX`).
    pub index: usize,
    /// The adapter's name (`--backend wgpu:NAME` matches a part of it).
    pub name: String,
    /// Discrete, integrated or virtual GPU, CPU (a software rasteriser such as lavapipe), other.
    pub device_type: &'static str,
    /// The graphics API: Vulkan, Metal or DX12 (never OpenGL).
    pub api: &'static str,
    /// Driver and version.
    pub driver: String,
    /// Whether it is a software rasteriser running on the CPU.
    pub software: bool,
    kind: burn::tensor::DeviceKind,
    backend: burn::tensor::wgpu::WgpuBackend,
}

impl std::fmt::Display for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wgpu:{}  {} ({}, {}{})",
            self.index,
            self.name,
            self.device_type,
            self.api,
            if self.driver.trim().is_empty() {
                String::new()
            } else {
                format!(", {}", self.driver.trim())
            }
        )
    }
}

/// Poll a future that completes without waiting (wgpu's native adapter enumeration).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// The wgpu adapters of this machine on its native graphics APIs (Vulkan; Metal on macOS;
/// DX12 and Vulkan on Windows), GPUs first, software rasterisers last. OpenGL is never
/// probed: with no GPU driver its EGL path can deadlock instead of failing.
pub fn adapters() -> Vec<Adapter> {
    use burn::tensor::DeviceKind;
    use burn::tensor::wgpu::{WgpuBackend, wgpu};
    let apis: &[(wgpu::Backend, WgpuBackend, &str)] = if cfg!(target_os = "macos") {
        &[(wgpu::Backend::Metal, WgpuBackend::Metal, "Metal")]
    } else if cfg!(target_os = "windows") {
        &[
            (wgpu::Backend::Dx12, WgpuBackend::Dx12, "DX12"),
            (wgpu::Backend::Vulkan, WgpuBackend::Vulkan, "Vulkan"),
        ]
    } else {
        &[(wgpu::Backend::Vulkan, WgpuBackend::Vulkan, "Vulkan")]
    };
    // A broken driver can panic inside wgpu; treat that as "no adapter" without letting the
    // panic hook print anything.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut found = Vec::new();
    for &(api, backend, api_name) in apis {
        let listed = std::panic::catch_unwind(|| {
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends: api.into(),
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            block_on(instance.enumerate_adapters(api.into()))
                .iter()
                .map(wgpu::Adapter::get_info)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
        // cubecl selects "the i-th adapter of this type" on the pinned API, in this order.
        let mut next = [0usize; 4];
        for info in listed {
            let (device_type, slot) = match info.device_type {
                wgpu::DeviceType::DiscreteGpu => ("discrete GPU", Some(0)),
                wgpu::DeviceType::IntegratedGpu => ("integrated GPU", Some(1)),
                wgpu::DeviceType::VirtualGpu => ("virtual GPU", Some(2)),
                wgpu::DeviceType::Other => ("other", Some(3)),
                wgpu::DeviceType::Cpu => ("CPU, software rasteriser", None),
            };
            let i = slot.map_or(0, |k| {
                next[k] += 1;
                next[k] - 1
            });
            let kind = match info.device_type {
                wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(i),
                wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu(i),
                wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu(i),
                wgpu::DeviceType::Other => DeviceKind::DefaultDevice,
                wgpu::DeviceType::Cpu => DeviceKind::Cpu,
            };
            found.push(Adapter {
                index: 0,
                name: info.name.clone(),
                device_type,
                api: api_name,
                driver: format!("{} {}", info.driver, info.driver_info),
                software: info.device_type == wgpu::DeviceType::Cpu,
                kind,
                backend,
            });
        }
    }
    std::panic::set_hook(hook);
    // GPUs first (stable: the driver's order within each group).
    found.sort_by_key(|a| a.software);
    for (i, a) in found.iter_mut().enumerate() {
        a.index = i;
    }
    found
}

/// Whether at least one wgpu adapter exists, without panicking.
pub fn wgpu_available() -> bool {
    !adapters().is_empty()
}

/// The adapter `--backend wgpu:SELECTOR` asked for (an index of [`adapters`] or a part of a
/// name), set once per process before the first wgpu device is made.
static ADAPTER_CHOICE: OnceLock<String> = OnceLock::new();

/// Choose the wgpu adapter of this process by index or name (see [`parse_backend`]). Only
/// the first choice counts: burn's wgpu runtime is initialised once per process.
pub fn choose_adapter(selector: &str) {
    let _ = ADAPTER_CHOICE.set(selector.to_string());
}

/// Parse `--backend`: `flex`, `wgpu`, or `wgpu:INDEX` / `wgpu:NAME` for one adapter
/// of `varphi devices`.
pub fn parse_backend(s: &str) -> Result<(BackendKind, Option<String>), String> {
    let (name, adapter) = match s.split_once(':') {
        Some((n, a)) => (n, Some(a.to_string())),
        None => (s, None),
    };
    let kind = match name.to_ascii_lowercase().as_str() {
        "flex" => BackendKind::Flex,
        "wgpu" => BackendKind::Wgpu,
        "ndarray" => {
            return Err(format!(
                "backend '{s}' is no longer built (burn deprecates it; it was the slowest CPU backend and a quarter of the build); use flex, the default CPU backend (f32 or f64)"
            ));
        }
        _ => {
            return Err(format!(
                "unknown backend '{s}'; use flex, wgpu, or wgpu:INDEX / wgpu:NAME (see varphi devices)"
            ));
        }
    };
    if adapter.is_some() && kind != BackendKind::Wgpu {
        return Err(format!(
            "'{s}': only wgpu takes an adapter (wgpu:INDEX or wgpu:NAME)"
        ));
    }
    if adapter.as_deref().is_some_and(|a| a.trim().is_empty()) {
        return Err(format!(
            "'{s}': give an adapter after 'wgpu:' (see varphi devices)"
        ));
    }
    Ok((kind, adapter))
}

/// The adapter for `selector` (index or case-insensitive part of the name), or the first one.
fn pick_adapter(all: &[Adapter], selector: Option<&str>) -> Result<Adapter, String> {
    let listing = || {
        all.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    match selector {
        None => all.first().cloned().ok_or_else(|| NO_ADAPTER.to_string()),
        Some(sel) => {
            // A number is an index only (adapter names hold digits: "LLVM 15.0.6").
            let found = match sel.parse::<usize>() {
                Ok(i) => all.get(i),
                Err(_) => all
                    .iter()
                    .find(|a| a.name.to_lowercase().contains(&sel.to_lowercase())),
            };
            found.cloned().ok_or_else(|| {
                if all.is_empty() {
                    NO_ADAPTER.to_string()
                } else {
                    format!(
                        "no wgpu adapter matches '{sel}'; this machine has: {}",
                        listing()
                    )
                }
            })
        }
    }
}

/// The wgpu device of adapter `selector` (the process's choice, [`choose_adapter`], when
/// `None`), started once per adapter: burn keeps one runtime per device kind, so two
/// adapters (e.g. `wgpu:0,wgpu:1`) are two devices of one process.
fn wgpu_device(selector: Option<&str>) -> Result<(Device, String), TrainError> {
    type Started = Result<(Device, String), String>;
    // One entry per adapter (name and graphics API), so that two selectors naming the same
    // adapter share its device.
    static WGPU: Mutex<Vec<(String, Started)>> = Mutex::new(Vec::new());
    let selector = selector.or(ADAPTER_CHOICE.get().map(String::as_str));
    let adapter = pick_adapter(&adapters(), selector).map_err(TrainError::Device)?;
    let key = format!("{} | {}", adapter.name, adapter.api);
    let mut started = WGPU.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, d)) = started.iter().find(|(k, _)| *k == key) {
        return d.clone().map_err(TrainError::Device);
    }
    let result: Started = Device::wgpu_options()
        .graphics_api(adapter.backend)
        .device_kind(adapter.kind)
        .init()
        .map_err(|e| {
            format!(
                "cannot start wgpu on {} ({}): {}; try another adapter (varphi devices) or --backend flex",
                adapter.name,
                adapter.api,
                e.to_string().replace('\n', " ")
            )
        })
        .map(|device| {
            let mut description = format!(
                "wgpu on {} ({}, {})",
                adapter.name, adapter.device_type, adapter.api
            );
            if adapter.software {
                description += " — a software rasteriser on the CPU, not a GPU: expect CPU speed (no GPU adapter found; --backend flex is faster)";
            }
            (device, description)
        });
    started.push((key, result.clone()));
    result.map_err(TrainError::Device)
}

/// Build the device for `kind` with default float type `precision`.
///
/// Errors: f64 on wgpu (f64 on Mesa's lavapipe returns wrong `exp`/`tanh`, and most GPUs lack
/// it), or no wgpu adapter (message suggests `--backend flex`).
pub fn select_device(
    kind: BackendKind,
    precision: Precision,
) -> Result<SelectedDevice, TrainError> {
    select_device_on(kind, None, precision)
}

/// [`select_device`] on wgpu adapter `adapter` (an index or part of a name of
/// [`adapters`]; `None`: the process's choice).
pub fn select_device_on(
    kind: BackendKind,
    adapter: Option<&str>,
    precision: Precision,
) -> Result<SelectedDevice, TrainError> {
    let (mut device, description) = match kind {
        BackendKind::Flex => (Device::flex(), "flex (CPU)".to_string()),
        BackendKind::Wgpu => {
            if precision == Precision::F64 {
                return Err(TrainError::Device(
                    "training.precision = \"f64\" is not supported on wgpu; use f32 on the GPU, or --backend flex for f64".into(),
                ));
            }
            wgpu_device(adapter)?
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

/// `varphi devices`: the CPU backends and every wgpu adapter, one per line.
pub fn print_devices() {
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("flex     CPU, {threads} threads (default; f32 or f64)");
    let all = adapters();
    if all.is_empty() {
        println!("wgpu     none: {NO_ADAPTER}");
    }
    for a in &all {
        println!("{a}");
    }
}

/// The backend of a run and its extra data-parallel devices from `--devices` / `training.devices`
/// (`devices`, each a [`parse_backend`] spec; the first is the main device): `(backend of the
/// first, the others selected)`. Without `devices`, `--backend` (`cli`) or the config's
/// backend, and no extra devices.
///
/// Errors: `--backend` disagreeing with the first device; two different wgpu adapters (burn
/// starts one wgpu runtime per process: use one MPI rank per GPU instead); a device that
/// cannot start.
pub fn data_parallel_devices(
    cli: Option<BackendKind>,
    config: BackendKind,
    devices: Option<&[String]>,
    precision: Precision,
) -> Result<(BackendKind, Vec<SelectedDevice>), TrainError> {
    let Some(devices) = devices.filter(|d| !d.is_empty()) else {
        return Ok((cli.unwrap_or(config), Vec::new()));
    };
    let parsed = devices
        .iter()
        .map(|d| parse_backend(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrainError::Invalid {
            key: "devices".into(),
            message: e,
        })?;
    let first = parsed[0].0;
    if let Some(b) = cli
        && b != first
    {
        return Err(TrainError::Invalid {
            key: "devices".into(),
            message: format!(
                "--backend {b} disagrees with the first of the devices ({}); drop --backend (the first device is the main one)",
                devices[0]
            ),
        });
    }
    // The first device's adapter is the process's choice (the main device).
    if let (BackendKind::Wgpu, Some(a)) = &parsed[0] {
        choose_adapter(a);
    }
    let rest = parsed[1..]
        .iter()
        .map(|(k, a)| select_device_on(*k, a.as_deref(), precision))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((first, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_with_an_optional_wgpu_adapter() {
        assert_eq!(parse_backend("flex"), Ok((BackendKind::Flex, None)));
        assert_eq!(parse_backend("wgpu"), Ok((BackendKind::Wgpu, None)));
        assert_eq!(
            parse_backend("wgpu:1"),
            Ok((BackendKind::Wgpu, Some("1".into())))
        );
        assert_eq!(
            parse_backend("wgpu:llvmpipe"),
            Ok((BackendKind::Wgpu, Some("llvmpipe".into())))
        );
        assert!(parse_backend("flex:0").unwrap_err().contains("only wgpu"));
        assert!(
            parse_backend("cuda")
                .unwrap_err()
                .contains("unknown backend")
        );
        assert!(
            parse_backend("wgpu:")
                .unwrap_err()
                .contains("give an adapter")
        );
        let gone = parse_backend("ndarray").unwrap_err();
        assert!(
            gone.contains("no longer built") && gone.contains("use flex"),
            "{gone}"
        );
        assert!(
            pick_adapter(&[], Some("0"))
                .unwrap_err()
                .contains("no usable wgpu adapter")
        );
    }
}
