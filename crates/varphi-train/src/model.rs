//! The trained module (latent-variable model + likelihood) and its objective.

use crate::config::{ModelConfig, TrainConfig};
use crate::trainer::{Objective, StepOutput};
use burn::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use varphi_losses::{Elbo, Likelihood};
use varphi_models::{Cvae, DiagGaussian, LatentVariableModel, Vae};

/// A VAE or CVAE.
#[derive(Module, Debug)]
pub enum LatentModel {
    /// Unconditional.
    Vae(Vae),
    /// Conditional.
    Cvae(Cvae),
}

impl LatentVariableModel for LatentModel {
    fn latent_dim(&self) -> usize {
        match self {
            LatentModel::Vae(m) => m.latent_dim(),
            LatentModel::Cvae(m) => m.latent_dim(),
        }
    }
    fn cond_dim(&self) -> usize {
        match self {
            LatentModel::Vae(m) => m.cond_dim(),
            LatentModel::Cvae(m) => m.cond_dim(),
        }
    }
    fn posterior(&self, x: Tensor<2>, cond: Option<Tensor<2>>) -> DiagGaussian {
        match self {
            LatentModel::Vae(m) => m.posterior(x, cond),
            LatentModel::Cvae(m) => m.posterior(x, cond),
        }
    }
    fn prior(&self, batch: usize, cond: Option<Tensor<2>>, device: &Device) -> DiagGaussian {
        match self {
            LatentModel::Vae(m) => m.prior(batch, cond, device),
            LatentModel::Cvae(m) => m.prior(batch, cond, device),
        }
    }
    fn decode(&self, z: Tensor<3>, cond: Option<Tensor<2>>) -> Tensor<3> {
        match self {
            LatentModel::Vae(m) => m.decode(z, cond),
            LatentModel::Cvae(m) => m.decode(z, cond),
        }
    }
}

/// What the trainer optimises: the latent-variable model and its likelihood (whose σ may be a
/// learned parameter).
#[derive(Module, Debug)]
pub struct GenerativeModel {
    /// VAE or CVAE.
    pub model: LatentModel,
    /// Observation likelihood.
    pub likelihood: Likelihood,
}

impl GenerativeModel {
    /// Build from a resolved model config and the run's config.
    pub fn init(model: &ModelConfig, config: &TrainConfig, device: &Device) -> Self {
        let model = match model {
            ModelConfig::Vae(c) => LatentModel::Vae(c.init(device)),
            ModelConfig::Cvae(c) => LatentModel::Cvae(c.init(device)),
        };
        Self {
            model,
            likelihood: config.likelihood().init(device),
        }
    }
}

/// Standard-normal noise that depends only on `(seed, stream, step)`: resumed runs draw
/// exactly the noise an uninterrupted run would, on every backend.
#[derive(Debug, Clone, Copy)]
pub struct NoiseSource {
    /// Base seed.
    pub seed: u64,
    /// Stream id (training, evaluation, sampling use different streams).
    pub stream: u64,
}

impl NoiseSource {
    /// `N(0, 1)` noise of `shape` for step `step`.
    pub fn normal<const D: usize>(
        &self,
        shape: [usize; D],
        step: usize,
        device: &Device,
    ) -> Tensor<D> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ 0xA076_1D64_78BD_642F);
        rng.set_stream(self.stream.wrapping_mul(1 << 32) ^ step as u64);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }
}

/// The ELBO objective for a [`GenerativeModel`].
#[derive(Debug, Clone)]
pub struct ElboObjective {
    /// The bound.
    pub elbo: Elbo,
    /// Training noise.
    pub noise: NoiseSource,
}

impl Objective<GenerativeModel> for ElboObjective {
    fn step(
        &self,
        model: &GenerativeModel,
        x: Tensor<2>,
        cond: Option<Tensor<2>>,
        step: usize,
        noise_stream: u64,
    ) -> StepOutput {
        let [b, _] = x.dims();
        let device = x.device();
        let noise = NoiseSource {
            stream: self.noise.stream + noise_stream,
            ..self.noise
        };
        let eps = noise.normal(
            [self.elbo.config.n_particles, b, model.model.latent_dim()],
            step,
            &device,
        );
        let out = self
            .elbo
            .forward_model(&model.model, &model.likelihood, x, cond, eps, step);
        let s = out.scalars();
        StepOutput {
            loss: out.loss,
            terms: vec![
                ("loss", s.loss),
                ("elbo", s.elbo),
                ("log_lik", s.log_lik),
                ("kl", s.kl),
            ],
            beta: Some(s.beta),
        }
    }
}
