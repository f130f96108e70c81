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
use burn::prelude::*;

/// Configuration of a [`Pddlvm`].
#[derive(Config, Debug)]
pub struct PddlvmConfig {
    /// Forward surrogate `q_φ(u | z)`: input width = parameter dimension, latent width =
    /// solution dimension.
    pub forward: EncoderConfig,
    /// Inverse model `p_θ(z | u)`: input width = solution dimension, latent width = parameter
    /// dimension.
    pub inverse: EncoderConfig,
}

/// Forward surrogate and inverse model.
#[derive(Module, Debug)]
pub struct Pddlvm {
    /// `q_φ(u | z)`.
    pub forward: Encoder,
    /// `p_θ(z | u)`.
    pub inverse: Encoder,
}

impl PddlvmConfig {
    /// Build both networks.
    pub fn init(&self, device: &Device) -> Pddlvm {
        assert_eq!(
            self.forward.d_latent(),
            self.inverse_input(),
            "PddlvmConfig: the forward surrogate's output width must equal the inverse model's input width"
        );
        Pddlvm {
            forward: self.forward.init(device),
            inverse: self.inverse.init(device),
        }
    }

    fn inverse_input(&self) -> usize {
        match &self.inverse {
            EncoderConfig::Mlp(c) => c.d_input,
            EncoderConfig::Conv(c) => c.shape.iter().product(),
        }
    }
}

impl Pddlvm {
    /// `q_φ(u | z)` for parameters `z` `[batch, p]`: a Gaussian over `[batch, n_u]`.
    pub fn surrogate(&self, z: Tensor<2>) -> DiagGaussian {
        self.forward.forward(z, None)
    }

    /// `p_θ(z | u)` for solutions `u` `[batch, n_u]`: a Gaussian over `[batch, p]`.
    pub fn inverse(&self, u: Tensor<2>) -> DiagGaussian {
        self.inverse.forward(u, None)
    }
}
