//! The training workloads of `varphi bench`, one per model family, each the twin of a workload
//! in `benches/pytorch_bench.py` (same layers, shapes, loss, optimiser and timing).
//!
//! One step is a forward pass, the backward pass and an Adam update (lr 1e-3) on a fixed
//! random batch; `warmup` untimed steps come first, then `steps` timed ones, and the loss is
//! read back once at the end (the only host synchronisation inside the timed loop).

use crate::backend::{BackendKind, Precision, select_device};
use crate::error::TrainError;
use crate::noise::{NoiseSource, Stream};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use std::time::Instant;
use varphi_losses::{ElboConfig, GaussianLikelihoodConfig, LikelihoodConfig, NoiseModel};
use varphi_models::{
    Activation, Cvae, CvaeConfig, CvaePriorConfig, DecoderConfig, EncoderConfig, Fno, FnoConfig,
    FnoDecoderConfig, LearnedPriorConfig, Mlp, MlpConfig, MlpDecoderConfig, MlpEncoderConfig, UNet,
    UNetConfig, Vae, VaeConfig,
};

/// A benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// MLP VAE 784-512-512-16 (ReLU), Gaussian likelihood σ = 1, analytic KL.
    MlpVae,
    /// The U-Net of `configs/darcy-forward-unet.toml`: 1 → 2 channels on 32 × 32, levels
    /// [8, 16, 32], ReLU, Gaussian negative log-likelihood of a field.
    Unet,
    /// The FNO of `configs/darcy-forward-fno.toml`: 32 × 32 (+ 2 coordinate channels), width
    /// 32, 12 × 12 modes, 4 layers, zero padding 8, projection 128, ReLU, Gaussian NLL.
    Fno,
    /// A coordinate network 2 → 64 → 64 → 1 (tanh) trained on `‖Δu − f‖²` at 1 024 points:
    /// the Laplacian by Taylor mode here, by double backward in PyTorch.
    Pinn,
    /// The field-conditioned CVAE of `configs/darcy-cvae-fno.toml` on 32 × 32 fields: encoder
    /// `[u, a]` → 256 → 256 → `(μ, log σ²)` of 4 latents, learned prior `a` → 256 → 256 →
    /// `(μ, log σ²)`, FNO decoder on the channels `[a, z₁ … z₄]` (width 32, 8 × 8 modes, 4
    /// layers, padding 4, projection 128) to a mean and log-variance per node; ReLU; the
    /// ELBO with one particle and the analytic KL between the two Gaussians.
    ConvCvae,
}

impl Workload {
    /// The name on the command line and in `benches/pytorch_bench.py`.
    pub fn name(self) -> &'static str {
        match self {
            Self::MlpVae => "mlp-vae",
            Self::Unet => "unet",
            Self::Fno => "fno",
            Self::Pinn => "pinn",
            Self::ConvCvae => "conv-cvae",
        }
    }

    /// One-line description for the table header.
    pub fn describe(self) -> &'static str {
        match self {
            Self::MlpVae => "MLP VAE 784-512-512-16 (ReLU, Gaussian σ = 1, analytic KL)",
            Self::Unet => "U-Net [8, 16, 32] 1→2 channels, 32×32, ReLU, Gaussian NLL",
            Self::Fno => {
                "FNO width 32, 12×12 modes, 4 layers, padding 8, projection 128, 32×32, ReLU, Gaussian NLL"
            }
            Self::Pinn => "coordinate MLP 2-64-64-1 (tanh), loss ‖Δu − f‖² (points = batch)",
            Self::ConvCvae => {
                "CVAE u | a on 32×32: MLP encoder and learned prior 256-256, FNO decoder width 32, 8×8 modes, 4 layers, latent 4, ReLU, ELBO"
            }
        }
    }

    /// Default batch (collocation points for `pinn`).
    pub fn default_batch(self) -> usize {
        match self {
            Self::MlpVae => 128,
            Self::Unet | Self::Fno => 64,
            Self::ConvCvae => 32,
            Self::Pinn => 1024,
        }
    }

    /// Default timed steps (fewer for the expensive 2-D fields).
    pub fn default_steps(self) -> usize {
        match self {
            Self::MlpVae | Self::Pinn => 50,
            Self::Unet | Self::Fno | Self::ConvCvae => 20,
        }
    }
}

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

impl BenchSpec {
    /// The workload's default batch and steps with `warmup` warm-up steps.
    pub fn for_workload(workload: Workload, warmup: usize) -> Self {
        Self {
            batch: workload.default_batch(),
            warmup,
            steps: workload.default_steps(),
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
    /// Training samples (points for `pinn`) per second.
    pub samples_per_s: f64,
    /// Final loss (sanity check that it trained).
    pub final_loss: f64,
}

/// Time `spec.steps` training steps of `model` on `loss(model, step)` after `spec.warmup`
/// untimed ones; returns (steps per second, final loss).
fn time_training<M: Module>(
    mut model: M,
    spec: &BenchSpec,
    device: &Device,
    loss: impl Fn(&M, usize) -> Tensor<1>,
) -> (f64, f64) {
    let mut optim = AdamConfig::new().init();
    let mut step = |model: M, i: usize| {
        let l = loss(&model, i);
        let grads = GradientsParams::from_grads(l.backward(), &model);
        (optim.step(1e-3, model, grads), l)
    };
    for i in 0..spec.warmup {
        model = step(model, i).0;
    }
    let _ = device.sync();
    let start = Instant::now();
    let mut last = None;
    for i in 0..spec.steps {
        let (m, l) = step(model, spec.warmup + i);
        model = m;
        last = Some(l);
    }
    let final_loss = last.map(|l| l.into_scalar::<f64>()).unwrap_or(f64::NAN);
    (
        spec.steps as f64 / start.elapsed().as_secs_f64(),
        final_loss,
    )
}

/// Mean over the batch of the Gaussian negative log-likelihood of `target` under a flattened
/// `[mean | log σ²]` output, without the constant: `½ Σ_i (log σ²_i + (y_i − μ_i)² / σ²_i)`.
fn gaussian_nll(out: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    let [b, f] = out.dims();
    let mean = out.clone().slice([0..b, 0..f / 2]);
    let log_var = out.slice([0..b, f / 2..f]);
    let sq = (target - mean).powi_scalar(2) * log_var.clone().neg().exp();
    (log_var + sq).sum_dim(1).mean() * 0.5
}

/// Side of the 2-D fields of `unet` and `fno`.
const FIELD: usize = 32;

/// The `mlp-vae` model.
fn mlp_vae(device: &Device) -> Vae {
    let (d, h, l) = (784, 512, 16);
    VaeConfig::new(
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
    .init(device)
}

/// The `unet` model.
fn unet(device: &Device) -> UNet {
    UNetConfig::new(vec![1, FIELD, FIELD], 2)
        .with_channels(vec![8, 16, 32])
        .with_activation(Activation::Relu)
        .init(device)
}

/// The `fno` model.
fn fno(device: &Device) -> Fno {
    FnoConfig::new(vec![1, FIELD, FIELD], 2)
        .with_padding(8)
        .with_activation(Activation::Relu)
        .init(device)
}

/// Latent dimension of `conv-cvae`.
const CVAE_LATENT: usize = 4;

/// The `conv-cvae` model.
fn conv_cvae(device: &Device) -> Cvae {
    let (n, l, act) = (FIELD * FIELD, CVAE_LATENT, Activation::Relu);
    let fno = FnoConfig::new(vec![1 + l, FIELD, FIELD], 2)
        .with_modes(vec![8])
        .with_padding(4)
        .with_activation(act);
    CvaeConfig::new(
        EncoderConfig::Mlp(
            MlpEncoderConfig::new(n, l)
                .with_hidden(vec![256, 256])
                .with_activation(act)
                .with_d_cond(n),
        ),
        DecoderConfig::Fno(FnoDecoderConfig::new(l, fno)),
        n,
    )
    .with_prior(CvaePriorConfig::Learned(
        LearnedPriorConfig::new()
            .with_hidden(vec![256, 256])
            .with_activation(act),
    ))
    .init(device)
}

/// The `pinn` model.
fn pinn(device: &Device) -> Mlp {
    MlpConfig::new(vec![2, 64, 64, 1])
        .with_activation(Activation::Tanh)
        .init(device)
}

/// Time `workload` on `backend` (f32).
pub fn throughput(
    workload: Workload,
    backend: BackendKind,
    spec: &BenchSpec,
) -> Result<BenchResult, TrainError> {
    let selected = select_device(backend, Precision::F32)?;
    let device = selected.device.clone().autodiff();
    device.seed(0);
    let b = spec.batch;
    let uniform = Distribution::Uniform(0.0, 1.0);
    let (steps_per_s, final_loss) = match workload {
        Workload::MlpVae => {
            let (d, l) = (784, 16);
            let vae = mlp_vae(&device);
            let likelihood = LikelihoodConfig::Gaussian(
                GaussianLikelihoodConfig::new()
                    .with_sigma(1.0)
                    .with_noise(NoiseModel::Fixed),
            )
            .init(&device);
            let elbo = ElboConfig::new().init();
            let noise = NoiseSource::new(0, Stream::Train);
            let x: Tensor<2> = Tensor::random([b, d], uniform, &device);
            time_training(vae, spec, &device, |m, i| {
                let eps = noise.normal([1, b, l], i, &device);
                elbo.forward_model(m, &likelihood, x.clone(), None, eps, i)
                    .loss
            })
        }
        Workload::Unet | Workload::Fno => {
            let n = FIELD;
            let x: Tensor<2> = Tensor::random([b, n * n], uniform, &device);
            let y: Tensor<2> = Tensor::random([b, n * n], uniform, &device);
            if workload == Workload::Unet {
                let net = unet(&device);
                time_training(net, spec, &device, |m, _| {
                    gaussian_nll(m.forward(x.clone()), y.clone())
                })
            } else {
                let net = fno(&device);
                time_training(net, spec, &device, |m, _| {
                    gaussian_nll(m.forward(x.clone()), y.clone())
                })
            }
        }
        Workload::ConvCvae => {
            let n = FIELD * FIELD;
            let cvae = conv_cvae(&device);
            let likelihood = LikelihoodConfig::Gaussian(
                GaussianLikelihoodConfig::new().with_noise(NoiseModel::Heteroscedastic),
            )
            .init(&device);
            let elbo = ElboConfig::new().init();
            let noise = NoiseSource::new(0, Stream::Train);
            let x: Tensor<2> = Tensor::random([b, n], uniform, &device);
            let c: Tensor<2> = Tensor::random([b, n], uniform, &device);
            time_training(cvae, spec, &device, |m, i| {
                let eps = noise.normal([1, b, CVAE_LATENT], i, &device);
                elbo.forward_model(m, &likelihood, x.clone(), Some(c.clone()), eps, i)
                    .loss
            })
        }
        Workload::Pinn => {
            let net = pinn(&device);
            let x: Tensor<2> = Tensor::random([b, 2], uniform, &device);
            let f: Tensor<2> = Tensor::random([b, 1], uniform, &device);
            time_training(net, spec, &device, |m, _| {
                let jet = m.forward_with_derivatives(x.clone(), 2);
                (jet.laplacian() - f.clone()).powi_scalar(2).mean()
            })
        }
    };
    Ok(BenchResult {
        backend,
        device: selected.description,
        steps_per_s,
        samples_per_s: steps_per_s * b as f64,
        final_loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_models_have_the_parameter_counts_of_their_pytorch_twins() {
        // sum(p.numel()) of benches/pytorch_bench.py's models (torch 2.15; a complex parameter
        // counts twice), so a twin that drifts from these layers fails here.
        let device = Device::flex();
        assert_eq!(mlp_vae(&device).num_params(), 1_354_544);
        assert_eq!(unet(&device).num_params(), 32_530);
        assert_eq!(fno(&device).num_params(), 2_269_826);
        assert_eq!(pinn(&device).num_params(), 4_417);
        assert_eq!(conv_cvae(&device).num_params(), 1_914_642);
    }

    #[test]
    fn every_workload_trains_with_a_finite_loss() {
        let spec = BenchSpec {
            batch: 2,
            warmup: 1,
            steps: 2,
        };
        for &w in <Workload as clap::ValueEnum>::value_variants() {
            let r = throughput(w, BackendKind::Flex, &spec).expect("flex is always there");
            assert!(
                r.final_loss.is_finite() && r.steps_per_s > 0.0,
                "{}: loss {}, {} steps/s",
                w.name(),
                r.final_loss,
                r.steps_per_s
            );
        }
    }
}
