//! Training-throughput benchmark: an MLP VAE 784-512-512-16 (ReLU, Gaussian likelihood with
//! σ = 1, analytic KL, Adam) at batch 128, the model of `benches/pytorch_vae.py`.

use crate::backend::{BackendKind, Precision, select_device};
use crate::error::TrainError;
use crate::noise::{NoiseSource, Stream};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use std::time::Instant;
use varphi_losses::{ElboConfig, GaussianLikelihoodConfig, LikelihoodConfig, NoiseModel};
use varphi_models::{
    Activation, DecoderConfig, EncoderConfig, MlpDecoderConfig, MlpEncoderConfig, VaeConfig,
};

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// Batch size.
    pub batch: usize,
    /// Untimed warm-up steps (shader compilation, autotune, allocator warm-up).
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
}

impl Default for BenchSpec {
    fn default() -> Self {
        Self {
            batch: 128,
            warmup: 10,
            steps: 50,
        }
    }
}

/// One benchmark result.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Backend.
    pub backend: BackendKind,
    /// Device description.
    pub device: String,
    /// Optimiser steps per second.
    pub steps_per_s: f64,
    /// Training samples per second.
    pub samples_per_s: f64,
    /// Final loss (sanity check that it trained).
    pub final_loss: f64,
}

/// Time `spec.steps` full training steps (forward, backward, Adam) on `backend`.
pub fn vae_throughput(backend: BackendKind, spec: &BenchSpec) -> Result<BenchResult, TrainError> {
    let selected = select_device(backend, Precision::F32)?;
    let device = selected.device.clone().autodiff();
    device.seed(0);
    let (d, h, l, b) = (784, 512, 16, spec.batch);
    let vae = VaeConfig::new(
        EncoderConfig::Mlp(
            MlpEncoderConfig::new(d, l)
                .with_hidden(vec![h, h])
                .with_activation(Activation::Relu),
        ),
        DecoderConfig::Mlp(
            MlpDecoderConfig::new(l, d)
                .with_hidden(vec![h, h])
                .with_activation(Activation::Relu),
        ),
    )
    .init(&device);
    let likelihood = LikelihoodConfig::Gaussian(
        GaussianLikelihoodConfig::new()
            .with_sigma(1.0)
            .with_noise(NoiseModel::Fixed),
    )
    .init(&device);
    let elbo = ElboConfig::new().init();
    let mut optim = AdamConfig::new().init();
    let noise = NoiseSource::new(0, Stream::Train);
    let x: Tensor<2> = Tensor::random(
        [b, d],
        burn::tensor::Distribution::Uniform(0.0, 1.0),
        &device,
    );
    let mut model = vae;
    let mut step = |model: varphi_models::Vae, i: usize| {
        let eps = noise.normal([1, b, l], i, &device);
        let out = elbo.forward_model(&model, &likelihood, x.clone(), None, eps, i);
        let loss = out.loss.clone();
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        (optim.step(1e-3, model, grads), loss)
    };
    for i in 0..spec.warmup {
        model = step(model, i).0;
    }
    let _ = device.sync();
    let start = Instant::now();
    let mut last = None;
    for i in 0..spec.steps {
        let (m, loss) = step(model, spec.warmup + i);
        model = m;
        last = Some(loss);
    }
    let final_loss = last.map(|l| l.into_scalar::<f64>()).unwrap_or(f64::NAN);
    let secs = start.elapsed().as_secs_f64();
    Ok(BenchResult {
        backend,
        device: selected.description,
        steps_per_s: spec.steps as f64 / secs,
        samples_per_s: (spec.steps * b) as f64 / secs,
        final_loss,
    })
}

/// `varphi bench`: the throughput of each backend in `backends` (default: flex, ndarray and
/// wgpu if an adapter exists), then, with `pytorch`, the PyTorch twin `benches/pytorch_vae.py`
/// in the same run; prints one table. `threads` sets `RAYON_NUM_THREADS` (and PyTorch's).
pub fn run(
    backends: Option<Vec<BackendKind>>,
    spec: &BenchSpec,
    threads: Option<usize>,
    pytorch: Option<&std::path::Path>,
) -> Result<(), TrainError> {
    if let Some(t) = threads {
        // SAFETY: set before any thread pool exists; the program is single-threaded here.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", t.to_string()) };
    }
    let backends = backends.unwrap_or_else(|| {
        let mut v = vec![BackendKind::Flex, BackendKind::Ndarray];
        if crate::backend::wgpu_available() {
            v.push(BackendKind::Wgpu);
        }
        v
    });
    let threads_label = threads.map_or("all".to_string(), |t| t.to_string());
    println!(
        "MLP VAE 784-512-512-16, batch {}, {} timed steps after {} warm-up, threads: {threads_label}",
        spec.batch, spec.steps, spec.warmup
    );
    println!(
        "  {:<10} {:>10} {:>12}  device",
        "backend", "steps/s", "samples/s"
    );
    for b in backends {
        match vae_throughput(b, spec) {
            Ok(r) => println!(
                "  {:<10} {:>10.1} {:>12.0}  {} (final loss {:.1})",
                b.to_string(),
                r.steps_per_s,
                r.samples_per_s,
                r.device,
                r.final_loss
            ),
            Err(e) => println!("  {:<10} unavailable: {e}", b.to_string()),
        }
    }
    let Some(py) = pytorch else {
        return Ok(());
    };
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/pytorch_vae.py");
    let mut cmd = std::process::Command::new(py);
    cmd.arg(&script).args([
        "--steps",
        &spec.steps.to_string(),
        "--warmup",
        &spec.warmup.to_string(),
        "--batch",
        &spec.batch.to_string(),
    ]);
    if let Some(t) = threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    let failed = |message: String| TrainError::Run {
        path: py.to_path_buf(),
        message,
    };
    let out = cmd
        .output()
        .map_err(|e| failed(format!("cannot run the PyTorch reference: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "PyTorch reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}
