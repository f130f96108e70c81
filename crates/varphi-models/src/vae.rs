//! Variational autoencoders: [`Vae`] and the conditional [`Cvae`].

use crate::activation::Activation;
use crate::decoder::{Decoder, DecoderConfig};
use crate::distributions::DiagGaussian;
use crate::encoder::{Encoder, EncoderConfig, MlpEncoderConfig};
use crate::flow_posterior::{AmortisedQ, PosteriorFlow, PosteriorFlowConfig};
use burn::prelude::*;

/// A latent-variable model `p(x, z | c) = p(x | z, c) p(z | c)` with an amortised posterior
/// `q(z | x, c)` (the encoder's Gaussian, optionally followed by a flow). Objectives in
/// `varphi-losses` and the trainer work through it.
///
/// `cond` is `None` for unconditional models.
pub trait LatentVariableModel {
    /// Latent dimension.
    fn latent_dim(&self) -> usize;
    /// Width of the condition vector (0 for unconditional models).
    fn cond_dim(&self) -> usize;
    /// The encoder's Gaussian for `x: [batch, features]`: `q(z | x, c)` itself, or the base
    /// of a flow posterior.
    fn posterior(&self, x: Tensor<2>, cond: Option<Tensor<2>>) -> DiagGaussian;
    /// The variational posterior `q(z | x, c)` that objectives sample from: the Gaussian of
    /// [`posterior`](Self::posterior) unless the model has a flow on top of it.
    fn variational(&self, x: Tensor<2>, cond: Option<Tensor<2>>) -> AmortisedQ {
        AmortisedQ::Gaussian(self.posterior(x, cond))
    }
    /// `p(z | c)` for a batch of `batch` rows.
    fn prior(&self, batch: usize, cond: Option<Tensor<2>>, device: &Device) -> DiagGaussian;
    /// Likelihood parameters for `z: [particles, batch, latent]`, `[particles, batch, out]`.
    fn decode(&self, z: Tensor<3>, cond: Option<Tensor<2>>) -> Tensor<3>;
}

/// Configuration of a [`Vae`].
#[derive(Config, Debug)]
pub struct VaeConfig {
    /// Encoder `x ↦ q(z|x)`.
    pub encoder: EncoderConfig,
    /// Decoder `z ↦ likelihood parameters`.
    pub decoder: DecoderConfig,
    /// A flow on top of the encoder's Gaussian (`None`: Gaussian posterior).
    #[config(default = "None")]
    pub flow: Option<PosteriorFlowConfig>,
}

/// A VAE with standard-normal prior `p(z) = N(0, I)` (primer eq. 18).
#[derive(Module, Debug)]
pub struct Vae {
    /// Amortised posterior.
    pub encoder: Encoder,
    /// Generative network.
    pub decoder: Decoder,
    /// Flow posterior on top of the encoder, if any.
    pub flow: Option<PosteriorFlow>,
}

impl VaeConfig {
    /// Build the VAE.
    pub fn init(&self, device: &Device) -> Vae {
        let encoder = self.encoder.init(device);
        let flow = self.flow.as_ref().map(|f| f.init(encoder.d_latent, device));
        Vae {
            encoder,
            decoder: self.decoder.init(device),
            flow,
        }
    }
}

fn with_flow(flow: &Option<PosteriorFlow>, base: DiagGaussian) -> AmortisedQ {
    match flow {
        None => AmortisedQ::Gaussian(base),
        Some(f) => AmortisedQ::Flow(f.forward(base)),
    }
}

impl LatentVariableModel for Vae {
    fn latent_dim(&self) -> usize {
        self.encoder.d_latent
    }
    fn cond_dim(&self) -> usize {
        0
    }
    fn posterior(&self, x: Tensor<2>, _cond: Option<Tensor<2>>) -> DiagGaussian {
        self.encoder.forward(x, None)
    }
    fn variational(&self, x: Tensor<2>, cond: Option<Tensor<2>>) -> AmortisedQ {
        with_flow(&self.flow, self.posterior(x, cond))
    }
    fn prior(&self, batch: usize, _cond: Option<Tensor<2>>, device: &Device) -> DiagGaussian {
        DiagGaussian::standard(batch, self.latent_dim(), device)
    }
    fn decode(&self, z: Tensor<3>, _cond: Option<Tensor<2>>) -> Tensor<3> {
        self.decoder.forward_particles(z)
    }
}

/// The prior of a [`Cvae`].
#[derive(Config, Debug)]
pub enum CvaePriorConfig {
    /// `p(z | c) = N(0, I)`.
    Standard,
    /// A learned conditional Gaussian `p_ψ(z | c) = N(μ_ψ(c), diag σ²_ψ(c))`.
    Learned(LearnedPriorConfig),
}

/// A learned conditional prior network.
#[derive(Config, Debug)]
pub struct LearnedPriorConfig {
    /// Hidden widths.
    #[config(default = "vec![64]")]
    pub hidden: Vec<usize>,
    /// Hidden activation.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
}

/// Configuration of a [`Cvae`]. The encoder's `d_cond` must equal `d_cond`, and the decoder's
/// input width must be `latent + d_cond`.
#[derive(Config, Debug)]
pub struct CvaeConfig {
    /// Encoder `(x, c) ↦ q(z | x, c)`.
    pub encoder: EncoderConfig,
    /// Decoder `(z, c) ↦ likelihood parameters`.
    pub decoder: DecoderConfig,
    /// Condition width.
    pub d_cond: usize,
    /// Prior over z.
    #[config(default = "CvaePriorConfig::Standard")]
    pub prior: CvaePriorConfig,
    /// A flow on top of the encoder's Gaussian (`None`: Gaussian posterior).
    #[config(default = "None")]
    pub flow: Option<PosteriorFlowConfig>,
}

/// A conditional VAE:
///
/// ```text
/// log p(x | c) ≥ E_{q(z|x,c)}[log p(x | z, c)] − KL(q(z | x, c) ‖ p(z | c))
/// ```
/// The condition enters the encoder, the decoder (concatenated to z) and, if learned, the prior.
#[derive(Module, Debug)]
pub struct Cvae {
    /// Amortised posterior.
    pub encoder: Encoder,
    /// Generative network on `[z, c]`.
    pub decoder: Decoder,
    /// Learned conditional prior, or `None` for `N(0, I)`.
    pub prior_net: Option<Encoder>,
    /// Flow posterior on top of the encoder, if any.
    pub flow: Option<PosteriorFlow>,
    /// Condition width.
    pub d_cond: usize,
}

impl CvaeConfig {
    /// Build the CVAE.
    pub fn init(&self, device: &Device) -> Cvae {
        let d_latent = self.encoder.d_latent();
        let prior_net = match &self.prior {
            CvaePriorConfig::Standard => None,
            CvaePriorConfig::Learned(p) => Some(
                EncoderConfig::Mlp(
                    MlpEncoderConfig::new(self.d_cond, d_latent)
                        .with_hidden(p.hidden.clone())
                        .with_activation(p.activation),
                )
                .init(device),
            ),
        };
        Cvae {
            encoder: self.encoder.init(device),
            decoder: self.decoder.init(device),
            prior_net,
            flow: self.flow.as_ref().map(|f| f.init(d_latent, device)),
            d_cond: self.d_cond,
        }
    }
}

fn expect_cond(cond: Option<Tensor<2>>, d: usize, what: &str) -> Tensor<2> {
    let c = cond.unwrap_or_else(|| panic!("Cvae::{what}: a condition of width {d} is required"));
    assert_eq!(
        c.dims()[1],
        d,
        "Cvae::{what}: condition has {} columns, expected {d}",
        c.dims()[1]
    );
    c
}

impl LatentVariableModel for Cvae {
    fn latent_dim(&self) -> usize {
        self.encoder.d_latent
    }
    fn cond_dim(&self) -> usize {
        self.d_cond
    }
    fn posterior(&self, x: Tensor<2>, cond: Option<Tensor<2>>) -> DiagGaussian {
        let c = expect_cond(cond, self.d_cond, "posterior");
        self.encoder.forward(x, Some(c))
    }
    fn variational(&self, x: Tensor<2>, cond: Option<Tensor<2>>) -> AmortisedQ {
        with_flow(&self.flow, self.posterior(x, cond))
    }
    fn prior(&self, batch: usize, cond: Option<Tensor<2>>, device: &Device) -> DiagGaussian {
        match &self.prior_net {
            None => DiagGaussian::standard(batch, self.latent_dim(), device),
            Some(net) => {
                // A prior network is a Gaussian "encoder" of the condition alone.
                let c = expect_cond(cond, self.d_cond, "prior");
                net.head_only(c)
            }
        }
    }
    fn decode(&self, z: Tensor<3>, cond: Option<Tensor<2>>) -> Tensor<3> {
        let c = expect_cond(cond, self.d_cond, "decode");
        let [s, b, _] = z.dims();
        let c = c.unsqueeze::<3>().expand([s, b, self.d_cond]);
        self.decoder.forward_particles(Tensor::cat(vec![z, c], 2))
    }
}
