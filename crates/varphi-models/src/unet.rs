//! A U-Net over 2-D fields and the Gaussian field-to-field map built on it.
//!
//! The map a field → a Gaussian over another field on the same grid (e.g. a Darcy coefficient
//! field → the pressure) is local and multi-scale; a U-Net (Ronneberger et al. 2015) keeps the
//! resolution in its skip connections, where a dense network must learn every pixel's
//! dependence on every other one. Used as the forward surrogate `q_φ(u | z)` of a
//! [`Pddlvm`](crate::Pddlvm) whose parameter is a field.

use crate::activation::Activation;
use crate::distributions::DiagGaussian;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;

/// Configuration of a [`UNet`].
#[derive(Config, Debug)]
pub struct UNetConfig {
    /// Input shape, channels first: `[C_in, H, W]`.
    pub shape: Vec<usize>,
    /// Output channels per pixel.
    pub out_channels: usize,
    /// Channels per level: level 0 at full resolution, each next one at half (rounding up).
    #[config(default = "vec![32, 64, 128]")]
    pub channels: Vec<usize>,
    /// Activation after every 3×3 convolution.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
}

/// Two same-padded 3×3 convolutions, each followed by the activation.
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// First convolution.
    pub first: Conv2d,
    /// Second convolution.
    pub second: Conv2d,
    /// Activation.
    #[module(skip)]
    pub activation: Activation,
}

impl ConvBlock {
    fn new(c_in: usize, c_out: usize, activation: Activation, device: &Device) -> Self {
        Self {
            first: conv3(c_in, c_out, 1, device),
            second: conv3(c_out, c_out, 1, device),
            activation,
        }
    }

    /// `[B, C_in, H, W]` → `[B, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = self.activation.forward(self.first.forward(x));
        self.activation.forward(self.second.forward(h))
    }
}

fn conv3(c_in: usize, c_out: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// A U-Net: a convolutional block per level, stride-2 3×3 convolutions down, nearest-neighbour
/// ×2 upsampling (cropped to the skip's size, so odd grids work) concatenated with the skip
/// connection and mixed by the level's decoder block, and a 1×1 output convolution with no
/// activation.
///
/// Takes and returns *flattened* tensors, channels first: `[batch, C_in·H·W]` in,
/// `[batch, C_out·H·W]` out.
#[derive(Module, Debug)]
pub struct UNet {
    /// Encoder blocks, one per level.
    pub encode: Vec<ConvBlock>,
    /// Stride-2 convolutions from level `i` to `i + 1`.
    pub down: Vec<Conv2d>,
    /// Decoder blocks on `[upsampled level i + 1, skip of level i]`, one per level below the
    /// last.
    pub decode: Vec<ConvBlock>,
    /// 1×1 output convolution.
    pub output: Conv2d,
    /// Input shape `[C_in, H, W]`.
    #[module(skip)]
    pub shape: Vec<usize>,
    /// Output channels.
    #[module(skip)]
    pub out_channels: usize,
    /// Activation.
    #[module(skip)]
    pub activation: Activation,
}

impl UNetConfig {
    /// Build the network.
    pub fn init(&self, device: &Device) -> UNet {
        assert!(
            self.shape.len() == 3,
            "UNetConfig.shape must be [C, H, W], got {:?}",
            self.shape
        );
        assert!(
            !self.channels.is_empty(),
            "UNetConfig.channels needs at least one level"
        );
        let ch = &self.channels;
        let act = self.activation;
        let mut encode = vec![ConvBlock::new(self.shape[0], ch[0], act, device)];
        let (mut down, mut decode) = (Vec::new(), Vec::new());
        for i in 0..ch.len() - 1 {
            down.push(conv3(ch[i], ch[i], 2, device));
            encode.push(ConvBlock::new(ch[i], ch[i + 1], act, device));
            decode.push(ConvBlock::new(ch[i + 1] + ch[i], ch[i], act, device));
        }
        UNet {
            encode,
            down,
            decode,
            output: Conv2dConfig::new([ch[0], self.out_channels], [1, 1]).init(device),
            shape: self.shape.clone(),
            out_channels: self.out_channels,
            activation: act,
        }
    }
}

/// Nearest-neighbour ×2 upsampling by broadcasting (no interpolation kernel; its gradient is
/// the 2×2 block sum).
fn upsample2(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, 2, w, 2])
        .reshape([b, c, 2 * h, 2 * w])
}

impl UNet {
    /// `[batch, C_in·H·W]` → `[batch, C_out·H·W]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [b, f] = x.dims();
        let (c, h, w) = (self.shape[0], self.shape[1], self.shape[2]);
        assert_eq!(
            f,
            c * h * w,
            "UNet: input has {f} features, expected {} = {:?}",
            c * h * w,
            self.shape
        );
        let mut x = self.encode[0].forward(x.reshape([b, c, h, w]));
        let mut skips = Vec::with_capacity(self.down.len());
        for (down, block) in self.down.iter().zip(&self.encode[1..]) {
            let next = self.activation.forward(down.forward(x.clone()));
            skips.push(x);
            x = block.forward(next);
        }
        for (block, skip) in self.decode.iter().zip(skips).rev() {
            let [_, _, sh, sw] = skip.dims();
            let u = upsample2(x);
            let [_, cu, _, _] = u.dims();
            let u = u.slice([0..b, 0..cu, 0..sh, 0..sw]);
            x = block.forward(Tensor::cat(vec![u, skip], 1));
        }
        self.output
            .forward(x)
            .reshape([b, self.out_channels * h * w])
    }

    /// A Gaussian over the output field: channel 0 the mean, channel 1 `log σ²`
    /// (`out_channels` must be 2).
    pub fn gaussian(&self, x: Tensor<2>) -> DiagGaussian {
        assert_eq!(
            self.out_channels, 2,
            "UNet::gaussian needs out_channels = 2 (mean, log variance)"
        );
        DiagGaussian::from_halves(self.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::vec;

    #[test]
    fn odd_grids_keep_their_shape_and_the_gaussian_splits_channels() {
        let device = Device::flex();
        device.seed(3);
        let net = UNetConfig::new(vec![2, 9, 7], 2)
            .with_channels(vec![4, 6, 8])
            .init(&device);
        let x = Tensor::<2>::random([3, 2 * 9 * 7], burn::tensor::Distribution::Default, &device);
        let out = net.forward(x.clone());
        assert_eq!(out.dims(), [3, 2 * 9 * 7]);
        let g = net.gaussian(x);
        assert_eq!(g.mean.dims(), [3, 63]);
        let diff = (g.mean - out.clone().slice([0..3, 0..63])).abs().max();
        assert_eq!(vec(diff)[0], 0.0);
        let diff = (g.log_var - out.slice([0..3, 63..126])).abs().max();
        assert_eq!(vec(diff)[0], 0.0);
    }

    #[test]
    fn output_is_local_with_a_receptive_field_from_all_levels() {
        // Perturbing one input pixel changes outputs near it and leaves far pixels unchanged:
        // two levels: radius 2 (block) + 1 (down) + 2·2 (coarse block) + 1 (up) + 2 (block)
        // < 12 pixels.
        let device = Device::flex();
        device.seed(5);
        let (h, w) = (32, 32);
        let net = UNetConfig::new(vec![1, h, w], 1)
            .with_channels(vec![4, 8])
            .init(&device);
        let x = Tensor::<2>::zeros([1, h * w], &device);
        let mut bump = vec![0f32; h * w];
        bump[4 * w + 4] = 1.0;
        let y0 = vec(net.forward(x.clone()));
        let y1 = vec(
            net.forward(x + Tensor::<2>::from_data(TensorData::new(bump, [1, h * w]), &device))
        );
        let changed = |i: usize, j: usize| (y1[i * w + j] - y0[i * w + j]).abs() > 0.0;
        assert!(changed(4, 4) && changed(6, 6), "no response near the bump");
        for i in 0..h {
            for j in 0..w {
                if i >= 16 || j >= 16 {
                    assert!(!changed(i, j), "pixel ({i}, {j}) far from the bump changed");
                }
            }
        }
    }
}
