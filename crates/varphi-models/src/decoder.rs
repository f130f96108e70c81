//! Decoders `z[, c] ↦ likelihood parameters` (flattened).

use crate::activation::Activation;
use crate::conv::{ConvStack, ConvStackConfig};
use crate::mlp::{Mlp, MlpConfig};
use burn::prelude::*;

/// Which decoder to build.
#[derive(Config, Debug)]
pub enum DecoderConfig {
    /// Dense network producing the flattened output.
    Mlp(MlpDecoderConfig),
    /// Dense projection to a full-resolution feature map, then same-padded convolutions.
    Conv(ConvDecoderConfig),
}

/// Dense decoder.
#[derive(Config, Debug)]
pub struct MlpDecoderConfig {
    /// Input width (latent dimension plus condition width).
    pub d_input: usize,
    /// Flattened output width (data width × likelihood parameters per datum).
    pub d_output: usize,
    /// Hidden widths.
    #[config(default = "vec![256, 256]")]
    pub hidden: Vec<usize>,
    /// Hidden activation.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
}

/// Convolutional decoder for 1-D signals (`[C, L]`) and 2-D fields (`[C, H, W]`).
#[derive(Config, Debug)]
pub struct ConvDecoderConfig {
    /// Input width (latent dimension plus condition width).
    pub d_input: usize,
    /// Output shape, channels first; channels = data channels × likelihood parameters.
    pub shape: Vec<usize>,
    /// Channels of the feature map and of the hidden convolutions.
    #[config(default = "vec![32, 16]")]
    pub channels: Vec<usize>,
    /// Odd kernel size.
    #[config(default = 3)]
    pub kernel: usize,
    /// Activation.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
}

/// A decoder returning flattened likelihood parameters `[batch, d_output]`.
#[derive(Module, Debug)]
pub struct Decoder {
    /// Dense part (the whole decoder for `Mlp`, the projection for `Conv`).
    pub dense: Mlp,
    /// Hidden convolutions (activation after each).
    pub conv: Option<ConvStack>,
    /// Final linear convolution to the output channels.
    pub out: Option<ConvStack>,
}

impl DecoderConfig {
    /// Build the decoder.
    pub fn init(&self, device: &Device) -> Decoder {
        match self {
            DecoderConfig::Mlp(c) => {
                let mut sizes = vec![c.d_input];
                sizes.extend_from_slice(&c.hidden);
                sizes.push(c.d_output);
                Decoder {
                    dense: MlpConfig::new(sizes)
                        .with_activation(c.activation)
                        .init(device),
                    conv: None,
                    out: None,
                }
            }
            DecoderConfig::Conv(c) => {
                assert!(
                    !c.channels.is_empty(),
                    "ConvDecoderConfig.channels is empty"
                );
                let spatial: Vec<usize> = c.shape[1..].to_vec();
                let n_spatial: usize = spatial.iter().product();
                let mut hidden_shape = vec![c.channels[0]];
                hidden_shape.extend(&spatial);
                let dense = MlpConfig::new(vec![c.d_input, c.channels[0] * n_spatial])
                    .with_activation(c.activation)
                    .init(device);
                let conv = ConvStackConfig::new(hidden_shape.clone(), c.channels[1..].to_vec())
                    .with_kernel(c.kernel)
                    .with_activation(c.activation)
                    .init(device);
                let mut last_shape = vec![*c.channels.last().unwrap()];
                last_shape.extend(&spatial);
                let out = ConvStackConfig::new(last_shape, vec![c.shape[0]])
                    .with_kernel(c.kernel)
                    .with_activation(Activation::Identity)
                    .init(device);
                Decoder {
                    dense,
                    conv: Some(conv),
                    out: Some(out),
                }
            }
        }
    }
}

impl Decoder {
    /// `z: [batch, d_input]` → `[batch, d_output]`.
    pub fn forward(&self, z: Tensor<2>) -> Tensor<2> {
        let h = self.dense.forward(z);
        match (&self.conv, &self.out) {
            (Some(conv), Some(out)) => {
                // The dense projection is followed by the activation before the convolutions.
                let h = conv.activation.forward(h);
                out.forward(conv.forward(h))
            }
            _ => h,
        }
    }

    /// `z: [particles, batch, d_input]` → `[particles, batch, d_output]`.
    pub fn forward_particles(&self, z: Tensor<3>) -> Tensor<3> {
        let [s, b, d] = z.dims();
        let out = self.forward(z.reshape([s * b, d]));
        let o = out.dims()[1];
        out.reshape([s, b, o])
    }
}
