//! Training-throughput benchmark: an MLP VAE 784-512-512-16 (ReLU, Gaussian likelihood with
//! σ = 1, analytic KL, Adam) at batch 128, the model of `benches/pytorch_vae.py`.

use crate::backend::{BackendKind, Precision, select_device};
use crate::error::TrainError;
use crate::model::NoiseSource;
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
    let noise = NoiseSource { seed: 0, stream: 0 };
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
