//! The Φ-DVAE model (primer eqs. 23–24; Glyn-Davies et al.): a per-frame Gaussian encoder
//! `q_φ(x_n | y_n)` to pseudo-observations `x_n` of latent physics, a frame decoder
//! `p_θ(y_n | x_n)`, and a non-amortised Gaussian posterior `q_λ(ξ)` over the standardised
//! physical parameters, `Λ = T(ξ)` with `ξ ~ N(0, I)` a priori ([`ParameterPrior`]). The latent
//! states `u_n` are not learned: a Kalman filter integrates them out (`varphi_losses::dvae`).

use crate::decoder::{Decoder, DecoderConfig};
use crate::distributions::DiagGaussian;
use crate::encoder::{Encoder, EncoderConfig};
use burn::module::Param;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The scale on which a physical parameter's prior is Gaussian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParameterScale {
    /// `Λ = μ + s ξ`: a parameter of either sign (a velocity).
    Linear,
    /// `Λ = exp(μ + s ξ)`: a positive parameter (a diffusivity, a rate).
    Log,
}

/// The prior of the physical parameters, independent per parameter: `Λ_i = T_i(ξ_i)`,
/// `ξ ~ N(0, I)`, `T_i(ξ) = μ_i + s_i ξ` or `exp(μ_i + s_i ξ)` ([`ParameterScale`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParameterPrior {
    /// Parameter names.
    pub names: Vec<String>,
    /// Means `μ_i` on each parameter's scale.
    pub mean: Vec<f64>,
    /// Standard deviations `s_i > 0` on each parameter's scale.
    pub sd: Vec<f64>,
    /// Scales.
    pub scale: Vec<ParameterScale>,
}

impl ParameterPrior {
    /// Parameters `p`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// A message naming the first inconsistent entry, if any.
    pub fn check(&self) -> Result<(), String> {
        let p = self.mean.len();
        if self.sd.len() != p || self.scale.len() != p || self.names.len() != p {
            return Err(format!(
                "the parameter prior needs one name, mean, sd and scale per parameter, got {} / {p} / {} / {}",
                self.names.len(),
                self.sd.len(),
                self.scale.len()
            ));
        }
        for (i, (m, s)) in self.mean.iter().zip(&self.sd).enumerate() {
            if !m.is_finite() || !s.is_finite() || *s <= 0.0 {
                return Err(format!(
                    "parameter {}: the prior needs a finite mean and an sd > 0, got mean {m}, sd {s}",
                    self.names[i]
                ));
            }
        }
        Ok(())
    }

    /// `Λ = T(ξ)` for `xi: [batch, p]`.
    pub fn to_physical(&self, xi: Tensor<2>) -> Tensor<2> {
        let cols: Vec<Tensor<2>> = (0..self.dim())
            .map(|i| {
                let v = xi.clone().narrow(1, i, 1) * self.sd[i] + self.mean[i];
                match self.scale[i] {
                    ParameterScale::Linear => v,
                    ParameterScale::Log => v.exp(),
                }
            })
            .collect();
        Tensor::cat(cols, 1)
    }

    /// `ξ = T⁻¹(Λ)` of one parameter vector on the host.
    pub fn to_standard(&self, lambda: &[f64]) -> Vec<f64> {
        lambda
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let v = match self.scale[i] {
                    ParameterScale::Linear => l,
                    ParameterScale::Log => l.ln(),
                };
                (v - self.mean[i]) / self.sd[i]
            })
            .collect()
    }

    /// `Λ = T(ξ)` of one standardised vector on the host.
    pub fn to_physical_host(&self, xi: &[f64]) -> Vec<f64> {
        xi.iter()
            .enumerate()
            .map(|(i, &x)| {
                let v = self.mean[i] + self.sd[i] * x;
                match self.scale[i] {
                    ParameterScale::Linear => v,
                    ParameterScale::Log => v.exp(),
                }
            })
            .collect()
    }
}

/// Configuration of a [`Dvae`].
#[derive(Config, Debug)]
pub struct DvaeConfig {
    /// Per-frame encoder `y_n ↦ q(x_n | y_n)`; its latent width is the pseudo-observation width.
    pub encoder: EncoderConfig,
    /// Per-frame decoder `x_n ↦` the frame likelihood's parameters.
    pub decoder: DecoderConfig,
    /// Physical parameters `p` of `q_λ`.
    pub param_dim: usize,
    /// Initial `log sd` of `q_λ(ξ)` (the mean starts at the prior's, `ξ = 0`).
    #[config(default = -1.0)]
    pub init_log_sd: f64,
}

/// The Φ-DVAE's learned parts (module docs).
#[derive(Module, Debug)]
pub struct Dvae {
    /// `q_φ(x_n | y_n)`.
    pub encoder: Encoder,
    /// `p_θ(y_n | x_n)`'s parameters.
    pub decoder: Decoder,
    /// Mean of `q_λ(ξ)`, `[1, p]`.
    pub param_mean: Param<Tensor<2>>,
    /// `log sd` of `q_λ(ξ)`, `[1, p]`.
    pub param_log_sd: Param<Tensor<2>>,
}

impl DvaeConfig {
    /// Build the model.
    pub fn init(&self, device: &Device) -> Dvae {
        let p = self.param_dim;
        Dvae {
            encoder: self.encoder.init(device),
            decoder: self.decoder.init(device),
            param_mean: Param::from_tensor(Tensor::zeros([1, p], device)),
            param_log_sd: Param::from_tensor(Tensor::full([1, p], self.init_log_sd, device)),
        }
    }
}

impl Dvae {
    /// `q_φ(x_n | y_n)` of frames `y: [batch, N, P]`, one row per frame (`[batch·N, m]`).
    pub fn encode(&self, y: Tensor<3>) -> DiagGaussian {
        let [b, n, p] = y.dims();
        self.encoder.forward(y.reshape([b * n, p]), None)
    }

    /// The frame likelihood's parameters at pseudo-observations `x: [batch, N, m]`,
    /// `[batch, N, k·P]`.
    pub fn decode(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, m] = x.dims();
        let out = self.decoder.forward(x.reshape([b * n, m]));
        let k = out.dims()[1];
        out.reshape([b, n, k])
    }

    /// `q_λ(ξ)` over the standardised parameters, `[1, p]`.
    pub fn param_posterior(&self) -> DiagGaussian {
        DiagGaussian::new(self.param_mean.val(), self.param_log_sd.val() * 2.0)
    }
}
