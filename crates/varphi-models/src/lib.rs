//! # varphi-models
//!
//! Burn modules for variational inference in physics-informed generative modelling:
//!
//! - [`distributions`]: [`DiagGaussian`], [`FullGaussian`] (Cholesky), [`Bernoulli`], with
//!   `rsample(eps)`, `log_prob`, `entropy` and closed-form KL divergences.
//! - [`Mlp`] with Taylor-mode input derivatives ([`Mlp::forward_with_derivatives`]) for
//!   coordinate decoders whose PDE residual needs `u_x`, `u_xx` and mixed partials.
//! - Gaussian [`Encoder`]s and [`Decoder`]s, dense or convolutional (1-D signals, 2-D fields,
//!   channels first), and the [`Vae`] and [`Cvae`] models.
//! - [`RealNvp`]: RealNVP flow (ActNorm + affine couplings, exact log-det), optionally conditional.
//! - [`GaussianPosterior`]: non-amortised mean-field or full-covariance `q(z)` for Bayes VI.
//! - [`UNet`]: a field-to-field U-Net, the forward surrogate of a [`Pddlvm`] over parameter fields.
//! - [`Fno`]: a Fourier neural operator ([`SpectralConv`] layers on 1-D and 2-D grids), the
//!   other field-to-field surrogate.
//! - [`Dvae`]: the Φ-DVAE's per-frame encoder/decoder and `q_λ` over physical parameters
//!   ([`ParameterPrior`]); its latent states are integrated out by `varphi_losses::kalman`.
//!
//! Every module follows Burn's conventions: a `#[derive(Config)]` `FooConfig` with
//! `init(&self, device: &Device)`, a `#[derive(Module)]` `Foo` and a `forward` method. Nothing
//! here picks a backend.
//!
//! ```ignore
//! use burn::prelude::*;
//! use varphi_models::*;
//!
//! let device = Device::flex();
//! let vae = VaeConfig::new(
//!     EncoderConfig::Mlp(MlpEncoderConfig::new(64, 8)),
//!     DecoderConfig::Mlp(MlpDecoderConfig::new(8, 64)),
//! )
//! .init(&device);
//! let x = Tensor::<2>::zeros([16, 64], &device);
//! let q = vae.posterior(x, None);                  // DiagGaussian [16, 8]
//! let z = q.rsample(standard_normal([1, 16, 8], &device));
//! let mean_x = vae.decode(z, None);                // [1, 16, 64]
//! ```
#![warn(missing_docs)]

pub mod activation;
pub mod conv;
pub mod coordinate_decoder;
pub mod decoder;
pub mod distributions;
pub mod dvae;
pub mod encoder;
pub mod flow;
pub mod flow_posterior;
pub mod fno;
pub mod mlp;
pub mod pddlvm;
pub mod physvae;
pub mod posterior;
pub mod unet;
pub mod vae;

pub use activation::Activation;
pub use conv::{ConvStack, ConvStackConfig};
pub use coordinate_decoder::{CoordinateDecoder, CoordinateDecoderConfig};
pub use decoder::{ConvDecoderConfig, Decoder, DecoderConfig, FnoDecoderConfig, MlpDecoderConfig};
pub use distributions::{
    Bernoulli, DiagGaussian, FullGaussian, VariationalFamily, standard_normal,
};
pub use dvae::{
    ColumnDecoder, ColumnEncoder, ColumnNetsConfig, CurveDecoder, CurveNetsConfig,
    DenseFrameNetsConfig, Dvae, DvaeConfig, FixedAffine, FrameDecoder, FrameEncoder,
    FrameNetsConfig, KnownDecoderNetsConfig, ParameterPrior, ParameterScale, SkipEncoder,
};
pub use encoder::{ConvEncoderConfig, Encoder, EncoderConfig, MlpEncoderConfig};
pub use flow::{ActNorm, AffineCoupling, InvertibleLinear, RealNvp, RealNvpConfig};
pub use flow_posterior::{AmortisedQ, FlowQ, PosteriorFlow, PosteriorFlowConfig};
pub use fno::{Fno, FnoConfig, Pointwise, SpectralConv, SpectralConvConfig};
pub use mlp::{Jet, Mlp, MlpConfig};
pub use pddlvm::{GaussianNet, GaussianNetConfig, Pddlvm, PddlvmConfig};
pub use physvae::{PhysVae, PhysVaeConfig, PhysVaeOutput};
pub use posterior::{
    GaussianFamily, GaussianPosterior, GaussianPosteriorConfig, GaussianQ, cholesky,
};
pub use unet::{ConvBlock, UNet, UNetConfig};
pub use vae::{
    Cvae, CvaeConfig, CvaePriorConfig, LatentVariableModel, LearnedPriorConfig, Vae, VaeConfig,
};

#[doc(hidden)]
pub use varphi_physics::testing;
#[cfg(test)]
mod tests_distributions;
#[cfg(test)]
mod tests_taylor;
