//! Decoders `z[, c] ↦ likelihood parameters` (flattened).

use crate::activation::Activation;
use crate::conv::{ConvStack, ConvStackConfig};
use crate::fno::{Fno, FnoConfig};
use crate::mlp::{Mlp, MlpConfig};
use burn::prelude::*;

/// Which decoder to build.
#[derive(Config, Debug)]
pub enum DecoderConfig {
    /// Dense network producing the flattened output.
    Mlp(MlpDecoderConfig),
    /// Dense projection to a full-resolution feature map, then same-padded convolutions.
    Conv(ConvDecoderConfig),
    /// A Fourier neural operator on the condition's grid: the condition is a field, the latent
    /// code is broadcast to every node as extra input channels (spatial conditioning).
    Fno(FnoDecoderConfig),
}

/// Field-conditioned decoder `(z, c) ↦ FNO([c, z 1ᵀ])`: the condition `c` is a field on the
/// sample's grid (`[C_c·H·W]` or `[C_c·N]`, channels first) and `z` is copied to every node.
#[derive(Config, Debug)]
pub struct FnoDecoderConfig {
    /// Latent dimension (the first `d_latent` input columns; the rest is the condition field).
    pub d_latent: usize,
    /// The operator: its `shape` is `[C_c + d_latent, H, W]` (or `[C_c + d_latent, N]`), its
    /// `out_channels` the likelihood parameters per node.
    pub fno: FnoConfig,
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
    /// The field-conditioned operator of [`DecoderConfig::Fno`] (then `dense` is unused and
    /// empty).
    pub fno: Option<Fno>,
    /// Latent dimension of a [`DecoderConfig::Fno`] decoder.
    #[module(skip)]
    pub d_latent: usize,
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
                    fno: None,
                    d_latent: 0,
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
                    fno: None,
                    d_latent: 0,
                }
            }
            DecoderConfig::Fno(c) => Decoder {
                dense: Mlp {
                    layers: Vec::new(),
                    activation: Activation::Identity,
                },
                conv: None,
                out: None,
                fno: Some(c.fno.init(device)),
                d_latent: c.d_latent,
            },
        }
    }
}

impl Decoder {
    /// `z: [batch, d_input]` → `[batch, d_output]`.
    pub fn forward(&self, z: Tensor<2>) -> Tensor<2> {
        if let Some(fno) = &self.fno {
            return fno.forward(self.spatial_input(z, fno));
        }
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

    /// `[z, c]` rows → the FNO's channels-first input `[c, z, …, z]` per node.
    fn spatial_input(&self, input: Tensor<2>, fno: &Fno) -> Tensor<2> {
        let [b, d] = input.dims();
        let [channels, h, w] = fno.shape;
        let nodes = h * w;
        let l = self.d_latent;
        assert_eq!(
            d,
            l + (channels - l) * nodes,
            "FNO decoder: {d} inputs, expected {l} latent + {} × {nodes} condition values",
            channels - l
        );
        let z = input.clone().slice([0..b, 0..l]);
        let c = input.slice([0..b, l..d]).reshape([b, channels - l, nodes]);
        let z = z.unsqueeze_dim::<3>(2).expand([b, l, nodes]);
        Tensor::cat(vec![c, z], 1).reshape([b, channels * nodes])
    }

    /// `z: [particles, batch, d_input]` → `[particles, batch, d_output]`.
    pub fn forward_particles(&self, z: Tensor<3>) -> Tensor<3> {
        let [s, b, d] = z.dims();
        let out = self.forward(z.reshape([s * b, d]));
        let o = out.dims()[1];
        out.reshape([s, b, o])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f64_device, tensor, vec};

    #[test]
    fn the_fno_decoder_feeds_the_condition_field_and_the_latent_code_at_every_node() {
        let dev = f64_device();
        dev.seed(4);
        let (l, h, w, b) = (2, 3, 5, 2);
        let fno = FnoConfig::new(vec![1 + l, h, w], 2)
            .with_width(4)
            .with_modes(vec![2])
            .with_layers(2)
            .with_projection(6);
        let dec = DecoderConfig::Fno(FnoDecoderConfig::new(l, fno)).init(&dev);
        let z = [[0.3, -1.2], [2.0, 0.5]];
        let field: Vec<f64> = (0..b * h * w).map(|i| (i as f64 * 0.37).sin()).collect();
        let mut rows = Vec::new();
        let mut stacked = Vec::new();
        for i in 0..b {
            rows.extend(z[i]);
            rows.extend(&field[i * h * w..(i + 1) * h * w]);
            // Channels first: the field, then each latent coordinate copied to every node.
            stacked.extend(&field[i * h * w..(i + 1) * h * w]);
            for zj in z[i] {
                stacked.extend(std::iter::repeat_n(zj, h * w));
            }
        }
        let out = dec.forward(tensor(rows, [b, l + h * w], &dev));
        assert_eq!(out.dims(), [b, 2 * h * w]);
        let want = dec
            .fno
            .as_ref()
            .unwrap()
            .forward(tensor(stacked, [b, (1 + l) * h * w], &dev));
        let gap = vec((out.clone() - want).abs().max())[0];
        assert!(
            gap < 1e-12,
            "decoder vs the hand-stacked FNO input: {gap:e}"
        );
        // The output depends on z (not only on the condition).
        let rows2: Vec<f64> = [[0.3, -1.2], [-2.0, 0.5]]
            .iter()
            .enumerate()
            .flat_map(|(i, zi)| {
                zi.iter()
                    .copied()
                    .chain(field[i * h * w..(i + 1) * h * w].iter().copied())
                    .collect::<Vec<_>>()
            })
            .collect();
        let out2 = vec(dec.forward(tensor(rows2, [b, l + h * w], &dev)));
        let out = vec(out);
        let n = 2 * h * w;
        assert_eq!(out[..n], out2[..n], "row 0 unchanged");
        assert!(
            out[n..]
                .iter()
                .zip(&out2[n..])
                .any(|(a, c)| (a - c).abs() > 1e-6),
            "row 1's z changed, so must its output"
        );
    }
}
