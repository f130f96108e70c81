//! The evidence lower bound and its β / warm-up / multi-particle variants.

use crate::likelihood::Likelihood;
use burn::prelude::*;
use varphi_models::{DiagGaussian, LatentVariableModel, VariationalFamily};

/// How `KL(q ‖ p)` is estimated.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum KlEstimator {
    /// Closed form (exact, lowest variance); requires a Gaussian `q` and prior.
    Analytic,
    /// `(1/S) Σ_s [log q(z_s) − log p(z_s)]` on the same particles as the likelihood term.
    MonteCarlo,
}

/// Configuration of an [`Elbo`].
///
/// β-VAE is `ElboConfig::new().with_beta(4.0)`; KL warm-up is `with_warmup_steps(n)`.
#[derive(Config, Debug)]
pub struct ElboConfig {
    /// Weight β on the KL term once warm-up is over (β = 1: the true ELBO).
    #[config(default = 1.0)]
    pub beta: f64,
    /// Number of optimiser steps over which the KL weight rises linearly from 0 to β
    /// (0: no warm-up).
    #[config(default = 0)]
    pub warmup_steps: usize,
    /// Number of particles S of the Monte-Carlo estimate.
    #[config(default = 1)]
    pub n_particles: usize,
    /// KL estimator.
    #[config(default = "KlEstimator::Analytic")]
    pub kl: KlEstimator,
}

/// The (β-weighted) evidence lower bound, primer eq. (14)/(17) and its amortised form (18):
///
/// ```text
/// ELBO(x) = E_{q(z|x)}[log p(x | z)] − KL(q(z | x) ‖ p(z))   ≤ log p(x)
///
/// estimate, z_s = T_φ(ε_s), ε_s ~ N(0, I), s = 1..S:
///   log_lik = (1/S) Σ_s log p(x | z_s)
///   kl      = KL_closed(q ‖ p)                      (Analytic)
///           = (1/S) Σ_s [log q(z_s) − log p(z_s)]   (MonteCarlo)
///   loss    = −mean_batch[ log_lik − β_t · kl ],   β_t = β · min(1, (t+1)/warmup)
/// ```
/// `elbo`, `log_lik` and `kl` in the output are per-datum batch means with β = 1.
#[derive(Debug, Clone)]
pub struct Elbo {
    /// The configuration.
    pub config: ElboConfig,
}

/// What an [`Elbo`] evaluation returns: `loss` to backpropagate, the other terms detached.
#[derive(Debug, Clone)]
pub struct ElboOutput {
    /// `−mean(log_lik − β_t kl)`, `[1]`, attached to the graph.
    pub loss: Tensor<1>,
    /// Per-datum ELBO (β = 1), `[batch]`, detached.
    pub elbo: Tensor<1>,
    /// Per-datum `E_q log p(x|z)`, `[batch]`, detached.
    pub log_lik: Tensor<1>,
    /// Per-datum KL estimate, `[batch]`, detached.
    pub kl: Tensor<1>,
    /// The KL weight used at this step.
    pub beta: f64,
}

/// Batch means of an [`ElboOutput`], read back in one transfer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ElboScalars {
    /// Loss value.
    pub loss: f64,
    /// Mean ELBO.
    pub elbo: f64,
    /// Mean log-likelihood term.
    pub log_lik: f64,
    /// Mean KL.
    pub kl: f64,
    /// KL weight.
    pub beta: f64,
}

impl ElboOutput {
    /// Read the batch means back to the host (one device synchronisation).
    pub fn scalars(&self) -> ElboScalars {
        let v = Tensor::cat(
            vec![
                self.loss.clone().detach(),
                self.elbo.clone().mean(),
                self.log_lik.clone().mean(),
                self.kl.clone().mean(),
            ],
            0,
        )
        .into_data()
        .convert::<f64>()
        .try_into_vec_as::<f64>()
        .expect("f64 data");
        ElboScalars {
            loss: v[0],
            elbo: v[1],
            log_lik: v[2],
            kl: v[3],
            beta: self.beta,
        }
    }
}

impl ElboConfig {
    /// Build the objective.
    pub fn init(&self) -> Elbo {
        assert!(self.n_particles >= 1, "ElboConfig.n_particles must be >= 1");
        assert!(
            self.beta >= 0.0,
            "ElboConfig.beta must be >= 0, got {}",
            self.beta
        );
        Elbo {
            config: self.clone(),
        }
    }
}

impl Elbo {
    /// KL weight at optimiser step `step` (0-based).
    pub fn beta_at(&self, step: usize) -> f64 {
        let c = &self.config;
        if c.warmup_steps == 0 {
            c.beta
        } else {
            c.beta * ((step + 1) as f64 / c.warmup_steps as f64).min(1.0)
        }
    }

    /// The particles `z = T(ε)` `[particles, batch, latent]` of `q` and the per-datum KL
    /// estimate `[batch]` of the configured [`KlEstimator`] (closed form, or the particle mean of
    /// `log q(z_s) − log p(z_s)` on the same particles).
    pub fn particles_and_kl<Q: VariationalFamily>(
        &self,
        q: &Q,
        prior: &DiagGaussian,
        eps: Tensor<3>,
    ) -> (Tensor<3>, Tensor<1>) {
        match self.config.kl {
            KlEstimator::Analytic => (q.rsample(eps), q.kl_to_diag(prior)),
            KlEstimator::MonteCarlo => {
                let (z, log_q) = q.rsample_with_log_prob(eps);
                let kl = (log_q - prior.log_prob(z.clone()))
                    .mean_dim(0)
                    .squeeze_dim::<1>(0);
                (z, kl)
            }
        }
    }

    /// Evaluate the ELBO for a variational family `q`, a diagonal Gaussian prior and a
    /// log-likelihood function of the particles.
    ///
    /// # Shapes
    /// `eps: [particles, batch, latent]` standard normal; `log_lik(z)` maps
    /// `z: [particles, batch, latent]` to `[particles, batch]`.
    pub fn forward<Q: VariationalFamily>(
        &self,
        q: &Q,
        prior: &DiagGaussian,
        eps: Tensor<3>,
        log_lik: impl FnOnce(Tensor<3>) -> Tensor<2>,
        step: usize,
    ) -> ElboOutput {
        let (z, kl) = self.particles_and_kl(q, prior, eps);
        let ll = log_lik(z).mean_dim(0).squeeze_dim::<1>(0); // [b]
        let beta = self.beta_at(step);
        let loss = (ll.clone() - kl.clone().mul_scalar(beta)).mean().neg();
        let elbo = (ll.clone() - kl.clone()).detach();
        ElboOutput {
            loss,
            elbo,
            log_lik: ll.detach(),
            kl: kl.detach(),
            beta,
        }
    }

    /// Evaluate the ELBO of a [`LatentVariableModel`] with an observation likelihood, under
    /// its [`variational`](LatentVariableModel::variational) posterior (a flow posterior needs
    /// `KlEstimator::MonteCarlo`).
    ///
    /// `x: [batch, features]`, `cond: [batch, d_cond]` or `None`,
    /// `eps: [n_particles, batch, latent]`.
    pub fn forward_model<M: LatentVariableModel>(
        &self,
        model: &M,
        likelihood: &Likelihood,
        x: Tensor<2>,
        cond: Option<Tensor<2>>,
        eps: Tensor<3>,
        step: usize,
    ) -> ElboOutput {
        let [b, _] = x.dims();
        let device = x.device();
        let q = model.variational(x.clone(), cond.clone());
        let prior = model.prior(b, cond.clone(), &device);
        self.forward(
            &q,
            &prior,
            eps,
            |z| likelihood.log_prob(x, model.decode(z, cond)),
            step,
        )
    }
}
