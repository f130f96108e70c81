//! Flow posteriors for amortised models: a diagonal Gaussian from the encoder followed by a
//! RealNVP flow conditioned on that Gaussian's own statistics (Rezende & Mohamed 2015;
//! primer §2.3 "normalising flows as variational families"):
//!
//! ```text
//! z₀ = μ_φ(x) + σ_φ(x) ⊙ ε,   ε ~ N(0, I)
//! z  = f_ψ(z₀; c),            c = [μ_φ(x), log σ_φ²(x)]          (the amortisation context)
//! log q(z | x) = log N(z₀; μ_φ(x), σ_φ²(x)) − log|det ∂f_ψ/∂z₀|
//! ```
//! Its ActNorms and couplings start as the identity (the coupling networks end in zeros) and its
//! mixing layers as the reversal permutation, so an untrained flow posterior is the encoder's
//! Gaussian with `z`'s components reversed once per layer (unchanged for an even count).
//! The KL term has no closed form: objectives estimate it by Monte Carlo on the same particles
//! (`KlEstimator::MonteCarlo`, IWAE / Rényi bounds), from [`VariationalFamily::rsample_with_log_prob`].

use crate::distributions::{DiagGaussian, VariationalFamily};
use crate::flow::{RealNvp, RealNvpConfig};
use burn::prelude::*;

/// Configuration of a [`PosteriorFlow`].
#[derive(Config, Debug)]
pub struct PosteriorFlowConfig {
    /// Coupling layers.
    #[config(default = 4)]
    pub layers: usize,
    /// Hidden widths of each coupling network.
    #[config(default = "vec![64]")]
    pub hidden: Vec<usize>,
    /// LU-parameterised mixing layers between couplings (needed to rotate the encoder's
    /// axis-aligned Gaussian into a correlated one in few layers).
    #[config(default = true)]
    pub lu_mixing: bool,
}

/// The flow part of a flow posterior over a `dim`-dimensional latent (see the module docs).
#[derive(Module, Debug)]
pub struct PosteriorFlow {
    /// `f_ψ(z₀; c)` with `c = [μ, log σ²]` of the base Gaussian (`d_cond = 2·dim`).
    pub flow: RealNvp,
}

impl PosteriorFlowConfig {
    /// Build the flow for a latent of dimension `dim` (at least 2).
    pub fn init(&self, dim: usize, device: &Device) -> PosteriorFlow {
        assert!(
            dim >= 2,
            "PosteriorFlowConfig: a flow posterior needs a latent of dimension ≥ 2, got {dim}"
        );
        PosteriorFlow {
            flow: RealNvpConfig::new(dim)
                .with_layers(self.layers)
                .with_hidden(self.hidden.clone())
                .with_d_cond(2 * dim)
                .with_lu_mixing(self.lu_mixing)
                .init(device),
        }
    }
}

impl PosteriorFlow {
    /// The flow posterior on top of the encoder's Gaussian `base`.
    pub fn forward(&self, base: DiagGaussian) -> FlowQ {
        let context = Tensor::cat(vec![base.mean.clone(), base.log_var.clone()], 1);
        FlowQ {
            base,
            flow: self.flow.clone(),
            context,
        }
    }
}

/// A flow posterior evaluated for one batch: `q(z | x)` per row (see the module docs).
#[derive(Debug, Clone)]
pub struct FlowQ {
    /// The encoder's Gaussian `N(μ_φ(x), σ_φ²(x))` of `z₀`.
    pub base: DiagGaussian,
    /// The flow `f_ψ`.
    pub flow: RealNvp,
    /// `[μ, log σ²]`, `[batch, 2·dim]`.
    pub context: Tensor<2>,
}

impl FlowQ {
    /// The context repeated for `s` particles, `[s·batch, 2·dim]`.
    fn context_for(&self, s: usize) -> Tensor<2> {
        let [b, c] = self.context.dims();
        self.context
            .clone()
            .unsqueeze::<3>()
            .expand([s, b, c])
            .reshape([s * b, c])
    }
}

impl VariationalFamily for FlowQ {
    fn dims(&self) -> [usize; 2] {
        self.base.dims()
    }

    fn rsample(&self, eps: Tensor<3>) -> Tensor<3> {
        self.rsample_with_log_prob(eps).0
    }

    fn has_analytic_kl(&self) -> bool {
        false
    }

    fn rsample_with_log_prob(&self, eps: Tensor<3>) -> (Tensor<3>, Tensor<2>) {
        let [s, b, d] = eps.dims();
        let z0 = self.base.rsample(eps);
        let log_base = self.base.log_prob(z0.clone());
        let (z, log_det) = self
            .flow
            .forward(z0.reshape([s * b, d]), Some(self.context_for(s)));
        (z.reshape([s, b, d]), log_base - log_det.reshape([s, b]))
    }

    fn log_prob(&self, z: Tensor<3>) -> Tensor<2> {
        let [s, b, d] = z.dims();
        let (z0, log_det_inv) = self
            .flow
            .inverse(z.reshape([s * b, d]), Some(self.context_for(s)));
        self.base.log_prob(z0.reshape([s, b, d])) + log_det_inv.reshape([s, b])
    }

    /// # Panics
    /// Always: a flow's entropy has no closed form (estimate `−E log q` from samples).
    fn entropy(&self) -> Tensor<1> {
        panic!(
            "FlowQ::entropy: a flow posterior has no closed-form entropy; use the Monte-Carlo estimate −mean log q(z) of rsample_with_log_prob"
        )
    }

    /// # Panics
    /// Always: use the Monte-Carlo KL estimator with a flow posterior.
    fn kl_to_diag(&self, _prior: &DiagGaussian) -> Tensor<1> {
        panic!(
            "FlowQ::kl_to_diag: a flow posterior has no closed-form KL; use KlEstimator::MonteCarlo (config: kl = \"monte-carlo\")"
        )
    }

    /// The image `f_ψ(μ_φ(x))` of the base mean — the point summary the model decodes for
    /// reconstructions. It is not the exact mean of `q` unless the flow is affine.
    fn mean(&self) -> Tensor<2> {
        self.flow
            .forward(self.base.mean.clone(), Some(self.context.clone()))
            .0
    }
}

/// The amortised posterior of a [`LatentVariableModel`](crate::LatentVariableModel): the
/// encoder's Gaussian, or a flow on top of it.
#[derive(Debug, Clone)]
pub enum AmortisedQ {
    /// `N(μ_φ(x), diag σ_φ²(x))`.
    Gaussian(DiagGaussian),
    /// [`FlowQ`].
    Flow(FlowQ),
}

impl AmortisedQ {
    /// The encoder's Gaussian (the whole posterior, or the flow's base).
    pub fn base(&self) -> &DiagGaussian {
        match self {
            AmortisedQ::Gaussian(q) => q,
            AmortisedQ::Flow(q) => &q.base,
        }
    }
}

impl VariationalFamily for AmortisedQ {
    fn dims(&self) -> [usize; 2] {
        self.base().dims()
    }
    fn rsample(&self, eps: Tensor<3>) -> Tensor<3> {
        match self {
            AmortisedQ::Gaussian(q) => q.rsample(eps),
            AmortisedQ::Flow(q) => q.rsample(eps),
        }
    }
    fn has_analytic_kl(&self) -> bool {
        matches!(self, AmortisedQ::Gaussian(_))
    }
    fn rsample_with_log_prob(&self, eps: Tensor<3>) -> (Tensor<3>, Tensor<2>) {
        match self {
            AmortisedQ::Gaussian(q) => q.rsample_with_log_prob(eps),
            AmortisedQ::Flow(q) => q.rsample_with_log_prob(eps),
        }
    }
    fn log_prob(&self, z: Tensor<3>) -> Tensor<2> {
        match self {
            AmortisedQ::Gaussian(q) => q.log_prob(z),
            AmortisedQ::Flow(q) => q.log_prob(z),
        }
    }
    fn entropy(&self) -> Tensor<1> {
        match self {
            AmortisedQ::Gaussian(q) => q.entropy(),
            AmortisedQ::Flow(q) => q.entropy(),
        }
    }
    fn kl_to_diag(&self, prior: &DiagGaussian) -> Tensor<1> {
        match self {
            AmortisedQ::Gaussian(q) => q.kl_to_diag(prior),
            AmortisedQ::Flow(q) => q.kl_to_diag(prior),
        }
    }
    fn mean(&self) -> Tensor<2> {
        match self {
            AmortisedQ::Gaussian(q) => q.mean.clone(),
            AmortisedQ::Flow(q) => q.mean(),
        }
    }
}
