//! Amortised Gaussian encoders `q(z | x[, c]) = N(μ(x, c), diag σ²(x, c))`.

use crate::activation::Activation;
use crate::conv::{ConvStack, ConvStackConfig};
use crate::distributions::DiagGaussian;
use crate::mlp::{Mlp, MlpConfig};
use burn::prelude::*;

/// Which encoder to build.
#[derive(Config, Debug)]
pub enum EncoderConfig {
    /// Dense network on the flattened input.
    Mlp(MlpEncoderConfig),
    /// Convolutions on a 1-D signal or 2-D field, then a dense head.
    Conv(ConvEncoderConfig),
}

/// Dense Gaussian encoder.
#[derive(Config, Debug)]
pub struct MlpEncoderConfig {
    /// Flattened input width.
    pub d_input: usize,
    /// Latent dimension.
    pub d_latent: usize,
    /// Hidden widths.
    #[config(default = "vec![256, 256]")]
    pub hidden: Vec<usize>,
    /// Hidden activation.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// Width of a condition vector concatenated to the input (0: none).
    #[config(default = 0)]
    pub d_cond: usize,
}

/// Convolutional Gaussian encoder.
#[derive(Config, Debug)]
pub struct ConvEncoderConfig {
    /// Input shape, channels first: `[C, L]` or `[C, H, W]`.
    pub shape: Vec<usize>,
    /// Latent dimension.
    pub d_latent: usize,
    /// Channels of the stride-2 convolutions.
    #[config(default = "vec![16, 32]")]
    pub channels: Vec<usize>,
    /// Hidden widths of the dense head.
    #[config(default = "vec![128]")]
    pub hidden: Vec<usize>,
    /// Odd kernel size.
    #[config(default = 3)]
    pub kernel: usize,
    /// Activation.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// Width of a condition vector concatenated to the convolutional features (0: none).
    #[config(default = 0)]
    pub d_cond: usize,
}

/// A Gaussian encoder: returns a [`DiagGaussian`] per input row.
#[derive(Module, Debug)]
pub struct Encoder {
    /// Optional convolutional trunk.
    pub conv: Option<ConvStack>,
    /// Dense head producing `[μ, log σ²]`.
    pub head: Mlp,
    /// Latent dimension.
    pub d_latent: usize,
    /// Condition width (0: unconditional).
    pub d_cond: usize,
}

fn head_sizes(d_in: usize, hidden: &[usize], d_out: usize) -> Vec<usize> {
    let mut sizes = vec![d_in];
    sizes.extend_from_slice(hidden);
    sizes.push(d_out);
    sizes
}

impl EncoderConfig {
    /// Build the encoder.
    pub fn init(&self, device: &Device) -> Encoder {
        match self {
            EncoderConfig::Mlp(c) => Encoder {
                conv: None,
                head: MlpConfig::new(head_sizes(c.d_input + c.d_cond, &c.hidden, 2 * c.d_latent))
                    .with_activation(c.activation)
                    .init(device),
                d_latent: c.d_latent,
                d_cond: c.d_cond,
            },
            EncoderConfig::Conv(c) => {
                let conv = ConvStackConfig::new(c.shape.clone(), c.channels.clone())
                    .with_kernel(c.kernel)
                    .with_stride(2)
                    .with_activation(c.activation)
                    .init(device);
                let head = MlpConfig::new(head_sizes(
                    conv.d_output() + c.d_cond,
                    &c.hidden,
                    2 * c.d_latent,
                ))
                .with_activation(c.activation)
                .init(device);
                Encoder {
                    conv: Some(conv),
                    head,
                    d_latent: c.d_latent,
                    d_cond: c.d_cond,
                }
            }
        }
    }

    /// Latent dimension.
    pub fn d_latent(&self) -> usize {
        match self {
            EncoderConfig::Mlp(c) => c.d_latent,
            EncoderConfig::Conv(c) => c.d_latent,
        }
    }
}

impl Encoder {
    /// `q(z | x, c)` for `x: [batch, features]`, `cond: [batch, d_cond]`.
    pub fn forward(&self, x: Tensor<2>, cond: Option<Tensor<2>>) -> DiagGaussian {
        let h = match &self.conv {
            Some(conv) => conv.forward(x),
            None => x,
        };
        let h = match (cond, self.d_cond) {
            (Some(c), d) if d > 0 => {
                assert_eq!(
                    c.dims()[1],
                    d,
                    "Encoder: condition has {} columns, expected {d}",
                    c.dims()[1]
                );
                Tensor::cat(vec![h, c], 1)
            }
            (None, 0) => h,
            (Some(_), _) => panic!("Encoder: got a condition but d_cond = 0"),
            (None, d) => panic!("Encoder: expects a condition of width {d}"),
        };
        self.head_only(h)
    }

    /// Apply only the dense head to features `h` and split its output into `[μ, log σ²]`
    /// (also used by conditional priors, whose input is the condition itself).
    pub fn head_only(&self, h: Tensor<2>) -> DiagGaussian {
        let out = self.head.forward(h);
        let [b, _] = out.dims();
        let l = self.d_latent;
        DiagGaussian::new(out.clone().slice([0..b, 0..l]), out.slice([0..b, l..2 * l]))
    }
}
