//! The PDDLVM joint forward / inverse model (Vadeboncoeur et al., primer eq. 30).
//!
//! ```text
//! generative:  p_θ(r̂, u, z) = p(r̂ = 0 | u, z) p_θ(z | u) p(u)
//! variational: q_φ(u, z)   = q_φ(u | z) p(z)
//! ```
//!
//! `q_φ(u | z)` is a forward probabilistic surrogate (parameters → solution field) and
//! `p_θ(z | u)` a learned inverse (solution → parameters), both Gaussian encoders. Trained with
//! `varphi_losses::PddlvmElbo` on the virtual observation of the PDE residual, they need no
//! solution labels. Both networks work in whatever (normalised) coordinates the caller feeds
//! them; the residual closure maps back to physical units.

use crate::distributions::DiagGaussian;
use crate::encoder::{Encoder, EncoderConfig};
use crate::fno::{Fno, FnoConfig};
use crate::unet::{UNet, UNetConfig};
use burn::prelude::*;

/// Architecture of one PDDLVM network: a Gaussian over `[batch, d_out]` given `[batch, d_in]`.
#[derive(Config, Debug)]
pub enum GaussianNetConfig {
    /// A dense or convolutional [`Encoder`] (flattened input → dense head → `[μ, log σ²]`).
    Encoder(EncoderConfig),
    /// A [`UNet`] from a field to a field on the same grid, two output channels `[μ, log σ²]`
    /// (`out_channels` must be 2).
    UNet(UNetConfig),
    /// An [`Fno`] from a field to a field on the same 1-D or 2-D grid, two output channels
    /// `[μ, log σ²]` (`out_channels` must be 2).
    Fno(FnoConfig),
}

impl From<EncoderConfig> for GaussianNetConfig {
    fn from(c: EncoderConfig) -> Self {
        GaussianNetConfig::Encoder(c)
    }
}

impl GaussianNetConfig {
    /// Build the network.
    pub fn init(&self, device: &Device) -> GaussianNet {
        match self {
            GaussianNetConfig::Encoder(c) => GaussianNet::Encoder(c.init(device)),
            GaussianNetConfig::UNet(c) => {
                assert_eq!(
                    c.out_channels, 2,
                    "GaussianNetConfig::UNet needs out_channels = 2 (mean, log variance)"
                );
                GaussianNet::UNet(c.init(device))
            }
            GaussianNetConfig::Fno(c) => {
                assert_eq!(
                    c.out_channels, 2,
                    "GaussianNetConfig::Fno needs out_channels = 2 (mean, log variance)"
                );
                GaussianNet::Fno(c.init(device))
            }
        }
    }

    /// Input width.
    pub fn d_input(&self) -> usize {
        match self {
            GaussianNetConfig::Encoder(EncoderConfig::Mlp(c)) => c.d_input,
            GaussianNetConfig::Encoder(EncoderConfig::Conv(c)) => c.shape.iter().product(),
            GaussianNetConfig::UNet(c) => c.shape.iter().product(),
            GaussianNetConfig::Fno(c) => c.shape.iter().product(),
        }
    }

    /// Output width (the Gaussian's dimension).
    pub fn d_output(&self) -> usize {
        match self {
            GaussianNetConfig::Encoder(c) => c.d_latent(),
            GaussianNetConfig::UNet(c) => c.shape[1] * c.shape[2],
            GaussianNetConfig::Fno(c) => c.shape[1..].iter().product(),
        }
    }
}

/// A Gaussian network (see [`GaussianNetConfig`]).
#[derive(Module, Debug)]
pub enum GaussianNet {
    /// Dense or convolutional encoder.
    Encoder(Encoder),
    /// Field-to-field U-Net.
    UNet(UNet),
    /// Field-to-field Fourier neural operator.
    Fno(Fno),
}

impl GaussianNet {
    /// The Gaussian for inputs `x: [batch, d_in]`.
    pub fn forward(&self, x: Tensor<2>) -> DiagGaussian {
        match self {
            GaussianNet::Encoder(e) => e.forward(x, None),
            GaussianNet::UNet(u) => u.gaussian(x),
            GaussianNet::Fno(f) => f.gaussian(x),
        }
    }
}

/// Configuration of a [`Pddlvm`].
#[derive(Config, Debug)]
pub struct PddlvmConfig {
    /// Forward surrogate `q_φ(u | z)`: input width = parameter dimension, output width =
    /// solution dimension.
    pub forward: GaussianNetConfig,
    /// Inverse model `p_θ(z | u)`: input width = solution dimension, output width = parameter
    /// dimension.
    pub inverse: GaussianNetConfig,
}

/// Forward surrogate and inverse model.
#[derive(Module, Debug)]
pub struct Pddlvm {
    /// `q_φ(u | z)`.
    pub forward: GaussianNet,
    /// `p_θ(z | u)`.
    pub inverse: GaussianNet,
}

impl PddlvmConfig {
    /// Build both networks.
    pub fn init(&self, device: &Device) -> Pddlvm {
        assert_eq!(
            self.forward.d_output(),
            self.inverse.d_input(),
            "PddlvmConfig: the forward surrogate's output width must equal the inverse model's input width"
        );
        Pddlvm {
            forward: self.forward.init(device),
            inverse: self.inverse.init(device),
        }
    }
}

impl Pddlvm {
    /// `q_φ(u | z)` for parameters `z` `[batch, p]`: a Gaussian over `[batch, n_u]`.
    pub fn surrogate(&self, z: Tensor<2>) -> DiagGaussian {
        self.forward.forward(z)
    }

    /// `p_θ(z | u)` for solutions `u` `[batch, n_u]`: a Gaussian over `[batch, p]`.
    pub fn inverse(&self, u: Tensor<2>) -> DiagGaussian {
        self.inverse.forward(u)
    }
}
