//! The trained module (latent-variable model + likelihood) and its objective.

use crate::config::{ModelConfig, TrainConfig};
use crate::physics::PhysicsTerm;
use crate::trainer::{Objective, StepOutput};
use burn::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::sync::Arc;
use varphi_losses::{Elbo, ElboOutput, Likelihood, ResidualLikelihood};
use varphi_models::{AmortisedQ, Cvae, DiagGaussian, LatentVariableModel, Vae};

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
    fn variational(&self, x: Tensor<2>, cond: Option<Tensor<2>>) -> AmortisedQ {
        match self {
            LatentModel::Vae(m) => m.variational(x, cond),
            LatentModel::Cvae(m) => m.variational(x, cond),
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
    /// Virtual observation of the PDE residual of the decoded mean (CVAE surrogates with
    /// `[objective.residual]`).
    pub residual: Option<ResidualLikelihood>,
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
            residual: config.residual_likelihood().map(|r| r.init(device)),
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
///
/// Without physics, the usual (C)VAE bound `E_q[log p(x | z, c)] − β KL(q(z | x, c) ‖ p(z | c))`.
/// A CVAE surrogate `c → x` (parameters → solution) with [`CvaePhysics`] adds the virtual
/// observation of the PDE residual of the decoded mean `ū(z, c)` (primer eq. 29) to the
/// likelihood, `log p(x, r̂ = 0 | z, c) = log p(x | z, c) + log N(0; r(ū(z, c), c), σ_r²)`, or,
/// without solution labels, uses it alone: `E_{q(z|c)}[log N(0; r(ū(z, c), c), σ_r²)] −
/// KL(q(z | c) ‖ N(0, I))` with the conditional network `q(z | c)` (the CVAE's learned prior
/// net; `N(0, I)` itself, KL = 0, for a standard prior).
#[derive(Debug, Clone)]
pub struct ElboObjective {
    /// The bound.
    pub elbo: Elbo,
    /// Training noise.
    pub noise: NoiseSource,
    /// The residual term of a CVAE surrogate.
    pub physics: Option<Arc<CvaePhysics>>,
}

/// The residual term of a CVAE surrogate (see [`ElboObjective`]).
pub struct CvaePhysics {
    /// Problem, preconditioner and parameter normalisation.
    pub term: PhysicsTerm,
    /// Solution normalisation of the data: `u = x·x_std + x_mean`.
    pub x_mean: f64,
    /// Solution normalisation of the data.
    pub x_std: f64,
    /// Include the data likelihood `log p(x | z, c)` (false: residual only, no labels).
    pub data: bool,
}

impl std::fmt::Debug for CvaePhysics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CvaePhysics")
            .field("problem", &self.term.problem.name())
            .field("data", &self.data)
            .finish()
    }
}

impl CvaePhysics {
    /// `log p(r̂ = 0 | ū, c)` `[s, b]` for decoded means `mean` `[s, b, n]` (normalised units)
    /// and normalised parameters `cond` `[b, p]`.
    pub fn log_residual(
        &self,
        residual: &ResidualLikelihood,
        mean: Tensor<3>,
        cond: Tensor<2>,
        step: usize,
    ) -> Tensor<2> {
        let [s, b, n] = mean.dims();
        let p = cond.dims()[1];
        let u = mean
            .reshape([s * b, n])
            .mul_scalar(self.x_std)
            .add_scalar(self.x_mean);
        let z = self
            .term
            .physical(cond)
            .unsqueeze_dim::<3>(0)
            .expand([s, b, p])
            .reshape([s * b, p]);
        residual
            .log_prob(&self.term.residual(u, z), step)
            .reshape([s, b])
    }

    /// The bound of a CVAE surrogate for data `x` `[b, n]` (normalised) with parameters `cond`.
    pub fn elbo(
        &self,
        elbo: &Elbo,
        model: &GenerativeModel,
        x: Tensor<2>,
        cond: Tensor<2>,
        eps: Tensor<3>,
        step: usize,
    ) -> ElboOutput {
        let [b, _] = x.dims();
        let device = x.device();
        let residual = model
            .residual
            .as_ref()
            .expect("a CVAE surrogate with [objective.residual] has a residual likelihood");
        let m = &model.model;
        let prior = m.prior(b, Some(cond.clone()), &device);
        let log_lik = |z: Tensor<3>| {
            let params = m.decode(z, Some(cond.clone()));
            let lr = self.log_residual(
                residual,
                model.likelihood.mean(params.clone()),
                cond.clone(),
                step,
            );
            if self.data {
                model.likelihood.log_prob(x.clone(), params) + lr
            } else {
                lr
            }
        };
        if self.data {
            let q = m.variational(x.clone(), Some(cond.clone()));
            elbo.forward(&q, &prior, eps, log_lik, step)
        } else {
            let standard = DiagGaussian::standard(b, m.latent_dim(), &device);
            elbo.forward(&prior, &standard, eps, log_lik, step)
        }
    }
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
        let out = match &self.physics {
            Some(p) => p.elbo(
                &self.elbo,
                model,
                x,
                cond.expect("CVAE data carry conditions"),
                eps,
                step,
            ),
            None => self
                .elbo
                .forward_model(&model.model, &model.likelihood, x, cond, eps, step),
        };
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
