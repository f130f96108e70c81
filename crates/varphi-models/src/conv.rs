//! Convolutional stacks over 1-D signals and 2-D fields (channels first).

use crate::activation::Activation;
use burn::nn::conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig};
use burn::nn::{PaddingConfig1d, PaddingConfig2d};
use burn::prelude::*;

/// Configuration of a [`ConvStack`].
#[derive(Config, Debug)]
pub struct ConvStackConfig {
    /// Input shape, channels first: `[C, L]` (1-D) or `[C, H, W]` (2-D).
    pub shape: Vec<usize>,
    /// Output channels of each convolution.
    pub channels: Vec<usize>,
    /// Odd kernel size.
    #[config(default = 3)]
    pub kernel: usize,
    /// Stride of every convolution: 2 halves each spatial axis (rounding up), 1 keeps it.
    #[config(default = 1)]
    pub stride: usize,
    /// Activation after every convolution.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
}

/// A stack of same-padded convolutions, each followed by the activation.
///
/// Takes and returns *flattened* tensors: `[batch, C·L]` or `[batch, C·H·W]` in, and the
/// flattened output `[batch, C_out·L'·…]` out, so it composes with dense heads.
#[derive(Module, Debug)]
pub struct ConvStack {
    /// 1-D convolutions (empty for a 2-D stack).
    pub conv1d: Vec<Conv1d>,
    /// 2-D convolutions (empty for a 1-D stack).
    pub conv2d: Vec<Conv2d>,
    /// Input shape, channels first.
    #[module(skip)]
    pub shape: Vec<usize>,
    /// Output shape, channels first.
    #[module(skip)]
    pub out_shape: Vec<usize>,
    /// Activation.
    #[module(skip)]
    pub activation: Activation,
}

fn out_len(len: usize, stride: usize) -> usize {
    len.div_ceil(stride)
}

impl ConvStackConfig {
    /// Build the stack.
    pub fn init(&self, device: &Device) -> ConvStack {
        assert!(
            self.shape.len() == 2 || self.shape.len() == 3,
            "ConvStackConfig.shape must be [C, L] or [C, H, W], got {:?}",
            self.shape
        );
        assert!(
            self.kernel % 2 == 1,
            "ConvStackConfig.kernel must be odd, got {}",
            self.kernel
        );
        assert!(
            self.stride == 1 || self.stride == 2,
            "stride must be 1 or 2"
        );
        let pad = self.kernel / 2;
        let mut c_in = self.shape[0];
        let mut spatial: Vec<usize> = self.shape[1..].to_vec();
        let (mut conv1d, mut conv2d) = (Vec::new(), Vec::new());
        for &c_out in &self.channels {
            if self.shape.len() == 2 {
                conv1d.push(
                    Conv1dConfig::new(c_in, c_out, self.kernel)
                        .with_stride(self.stride)
                        .with_padding(PaddingConfig1d::Explicit(pad, pad))
                        .init(device),
                );
            } else {
                conv2d.push(
                    Conv2dConfig::new([c_in, c_out], [self.kernel, self.kernel])
                        .with_stride([self.stride, self.stride])
                        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                        .init(device),
                );
            }
            c_in = c_out;
            spatial = spatial.iter().map(|&s| out_len(s, self.stride)).collect();
        }
        let mut out_shape = vec![c_in];
        out_shape.extend(spatial);
        ConvStack {
            conv1d,
            conv2d,
            shape: self.shape.clone(),
            out_shape,
            activation: self.activation,
        }
    }
}

impl ConvStack {
    /// Flattened output width.
    pub fn d_output(&self) -> usize {
        self.out_shape.iter().product()
    }

    /// `x: [batch, C·spatial]` → `[batch, C_out·spatial']`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [b, f] = x.dims();
        let expected: usize = self.shape.iter().product();
        assert_eq!(
            f, expected,
            "ConvStack: input has {f} features, expected {expected} = {:?}",
            self.shape
        );
        if self.shape.len() == 2 {
            let mut h = x.reshape([b, self.shape[0], self.shape[1]]);
            for conv in &self.conv1d {
                h = self.activation.forward(conv.forward(h));
            }
            h.reshape([b, self.d_output()])
        } else {
            let mut h = x.reshape([b, self.shape[0], self.shape[1], self.shape[2]]);
            for conv in &self.conv2d {
                h = self.activation.forward(conv.forward(h));
            }
            h.reshape([b, self.d_output()])
        }
    }
}
