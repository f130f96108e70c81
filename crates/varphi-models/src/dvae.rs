//! The Φ-DVAE model (primer eqs. 23–24; Glyn-Davies et al.): a per-frame Gaussian encoder
//! `q_φ(x_n | y_n)` to pseudo-observations `x_n` of latent physics, a frame decoder
//! `p_θ(y_n | x_n)`, and a Gaussian posterior `q_λ(ξ)` over the standardised physical
//! parameters, `Λ = T(ξ)` with `ξ ~ N(0, I)` a priori ([`ParameterPrior`]). The latent states
//! `u_n` are not learned: a Kalman filter integrates them out (`varphi_losses::dvae`).
//!
//! `q_λ` is either one Gaussian shared by every sequence (the paper's set-up: one data set,
//! one `Λ`) or *amortised* ([`DvaeConfig::amortise`]): a network maps the encoder means
//! `μ_φ(y_1) … μ_φ(y_N)` of a sequence to the mean and log-sd of `q_λ(ξ | y_{1:N})`, so that
//! many data sets, each with its own `Λ`, are fitted at once and a new one costs one forward
//! pass (the output is added to [`Dvae::param_mean`] / [`Dvae::param_log_sd`]).
//!
//! The networks work on a standardised state ([`DvaeConfig::state_offset`],
//! [`DvaeConfig::state_scale`]): the pseudo-observations are `x = o + s ⊙ x̃` with `x̃` the
//! encoder's output, and the decoder and the amortisation network see `x̃ = (x − o) / s`, so a
//! latent state of physical size (the Lorenz attractor's `Z ≈ 25 ± 8`) needs no large weights.

use crate::activation::Activation;
use crate::decoder::{Decoder, DecoderConfig};
use crate::distributions::DiagGaussian;
use crate::encoder::{Encoder, EncoderConfig};
use crate::mlp::{Mlp, MlpConfig};
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

/// Dense per-frame networks: any [`EncoderConfig`] / [`DecoderConfig`] on the flattened frame.
#[derive(Config, Debug)]
pub struct DenseFrameNetsConfig {
    /// Per-frame encoder `y_n ↦ q(x_n | y_n)`; its latent width is the pseudo-observation width.
    pub encoder: EncoderConfig,
    /// Per-frame decoder `x_n ↦` the frame likelihood's parameters.
    pub decoder: DecoderConfig,
}

/// A dense encoder with a *known* linear observation map as the decoder (a physics-informed
/// decoder: the frames are a linear rendering of the state, e.g. the Rayleigh–Bénard fields of
/// the Lorenz amplitudes): the frame likelihood's mean is `x M + b` on the pseudo-observations'
/// own scale (not the standardised one), with `M`, `b` fixed. A learned decoder fixes the state
/// only up to any invertible map; the known one fixes it exactly.
#[derive(Config, Debug)]
pub struct KnownDecoderNetsConfig {
    /// Per-frame encoder `y_n ↦ q(x_n | y_n)`.
    pub encoder: EncoderConfig,
    /// `M`, `[m, P]` row-major.
    pub matrix: Vec<f64>,
    /// `b`, `[P]`.
    pub offset: Vec<f64>,
    /// A fixed linear skip `y A + a` added to the encoder network's mean (in the
    /// standardised units of [`DvaeConfig::state_offset`]): `(A [P, m] row-major, a [m])`,
    /// e.g. the least-squares inverse of `M`, so the network learns only a correction.
    #[config(default = "None")]
    pub encoder_skip: Option<(Vec<f64>, Vec<f64>)>,
}

/// Column encoders with a *known* curve rendering as the decoder: frame pixel `(r, j)` is
/// `a · exp(−(v_r − x_j)² / (2 w²)) + c` (the profile drawn as an intensity curve; `a`, `c` the
/// frames' normalisation), fixed. The learned column decoder fixes the state only up to a
/// monotone map per value; the known one fixes it exactly.
#[derive(Config, Debug)]
pub struct CurveNetsConfig {
    /// The column encoder (the decoder settings are unused).
    pub columns: ColumnNetsConfig,
    /// `v_r` of the pixel rows, `[height]`.
    pub row_values: Vec<f64>,
    /// Line width `w`.
    pub line_width: f64,
    /// Scale `a`.
    pub scale: f64,
    /// Shift `c`.
    pub shift: f64,
}

/// The fixed decoder of [`CurveNetsConfig`].
#[derive(Module, Debug)]
pub struct CurveDecoder {
    /// `v_r`.
    #[module(skip)]
    pub row_values: Vec<f64>,
    /// `w`.
    #[module(skip)]
    pub line_width: f64,
    /// `a`.
    #[module(skip)]
    pub scale: f64,
    /// `c`.
    #[module(skip)]
    pub shift: f64,
}

impl CurveDecoder {
    /// The frames' pixel means at `x: [rows, width]`, `[rows, height·width]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [rows, w] = x.dims();
        let h = self.row_values.len();
        let v = Tensor::<3>::from_data(
            TensorData::new(self.row_values.clone(), [1, h, 1]),
            &x.device(),
        );
        let d = x.reshape([rows, 1, w]) - v;
        let curve = (d.powf_scalar(2.0) * (-0.5 / (self.line_width * self.line_width))).exp();
        curve.reshape([rows, h * w]) * self.scale + self.shift
    }
}

/// A dense encoder whose mean is a network's plus a fixed linear map of the frame
/// ([`KnownDecoderNetsConfig::encoder_skip`]).
#[derive(Module, Debug)]
pub struct SkipEncoder {
    /// The network.
    pub net: Encoder,
    /// The fixed map `y A + a`.
    pub skip: FixedAffine,
}

/// A fixed affine map `x M + b` (the decoder of [`KnownDecoderNetsConfig`] and its encoder
/// skip), stored with the model and never trained.
#[derive(Module, Debug)]
pub struct FixedAffine {
    /// `M`, `[m, P]`.
    pub matrix: Param<Tensor<2>>,
    /// `b`, `[1, P]`.
    pub offset: Param<Tensor<2>>,
}

impl FixedAffine {
    /// `x M + b` for `x: [rows, m]`, `[rows, P]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.matrix.val().detach()) + self.offset.val().detach()
    }
}

/// Column networks for frames `[height, width]` whose column `j` shows the latent state at node
/// `j` of a periodic grid (a profile drawn as a curve): the encoder maps columns
/// `j − k … j + k` (periodic) to `q(x_j | y) = N(μ_j, σ_j²)` with one shared MLP, the decoder
/// maps `x_{j−k} … x_{j+k}` to column `j`'s pixels — a 1-D convolution with periodic padding
/// and kernel `2k + 1`, translation-equivariant, so that `x_j` stays tied to node `j` (a dense
/// encoder may code the frame anywhere, and the dynamics then fit a code that does not move).
/// Pseudo-observations are every node (`m = width`); one likelihood parameter per pixel.
#[derive(Config, Debug)]
pub struct ColumnNetsConfig {
    /// Frame height (pixels per column).
    pub height: usize,
    /// Frame width (= grid nodes).
    pub width: usize,
    /// Half-window `k`: the networks see `2k + 1` neighbouring columns.
    #[config(default = 1)]
    pub half_window: usize,
    /// Hidden widths of both column MLPs.
    #[config(default = "vec![64, 64]")]
    pub hidden: Vec<usize>,
    /// Activation.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
}

/// The per-frame networks of a [`Dvae`].
#[derive(Config, Debug)]
pub enum FrameNetsConfig {
    /// Dense networks on the flattened frame.
    Dense(DenseFrameNetsConfig),
    /// Column networks ([`ColumnNetsConfig`]).
    Columns(ColumnNetsConfig),
    /// A dense encoder and a known linear decoder ([`KnownDecoderNetsConfig`]).
    KnownDecoder(KnownDecoderNetsConfig),
    /// Column encoders and a known curve rendering ([`CurveNetsConfig`]).
    Curve(CurveNetsConfig),
}

/// The column encoder of [`ColumnNetsConfig`].
#[derive(Module, Debug)]
pub struct ColumnEncoder {
    /// `(2k + 1)·height → … → 2` (`μ_j`, `log σ_j²`).
    pub net: Mlp,
    /// Frame height.
    pub height: usize,
    /// Frame width.
    pub width: usize,
    /// Half-window `k`.
    pub half_window: usize,
}

/// The column decoder of [`ColumnNetsConfig`].
#[derive(Module, Debug)]
pub struct ColumnDecoder {
    /// `2k + 1 → … → height`.
    pub net: Mlp,
    /// Frame height.
    pub height: usize,
    /// Frame width.
    pub width: usize,
    /// Half-window `k`.
    pub half_window: usize,
}

/// `x: [rows, c, w]` with its columns rolled by `−k … k` (periodic) stacked on the channels:
/// `[rows, (2k + 1) c, w]`, channel block `o` holding column `j + o − k` at `j`.
fn neighbours(x: Tensor<3>, k: usize) -> Tensor<3> {
    let w = x.dims()[2];
    let blocks: Vec<Tensor<3>> = (0..=2 * k)
        .map(|o| {
            // Column j of the block is column (j + o − k) mod w of x.
            let s = (o + w * (k / w + 1) - k) % w;
            if s == 0 {
                x.clone()
            } else {
                Tensor::cat(
                    vec![x.clone().narrow(2, s, w - s), x.clone().narrow(2, 0, s)],
                    2,
                )
            }
        })
        .collect();
    Tensor::cat(blocks, 1)
}

impl ColumnEncoder {
    /// `q(x | y)` of frames `y: [rows, height·width]`, `[rows, width]`.
    pub fn forward(&self, y: Tensor<2>) -> DiagGaussian {
        let rows = y.dims()[0];
        let (h, w) = (self.height, self.width);
        let c = (2 * self.half_window + 1) * h;
        let stacked = neighbours(y.reshape([rows, h, w]), self.half_window)
            .swap_dims(1, 2)
            .reshape([rows * w, c]);
        let out = self.net.forward(stacked).reshape([rows, w, 2]);
        DiagGaussian::new(
            out.clone().narrow(2, 0, 1).reshape([rows, w]),
            out.narrow(2, 1, 1).reshape([rows, w]),
        )
    }
}

impl ColumnDecoder {
    /// The frames' pixel means at `x: [rows, width]`, `[rows, height·width]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let rows = x.dims()[0];
        let (h, w) = (self.height, self.width);
        let k = 2 * self.half_window + 1;
        let stacked = neighbours(x.reshape([rows, 1, w]), self.half_window)
            .swap_dims(1, 2)
            .reshape([rows * w, k]);
        self.net
            .forward(stacked)
            .reshape([rows, w, h])
            .swap_dims(1, 2)
            .reshape([rows, h * w])
    }
}

/// The per-frame encoder of a [`Dvae`].
#[derive(Module, Debug)]
pub enum FrameEncoder {
    /// Dense.
    Dense(Encoder),
    /// Column network.
    Columns(ColumnEncoder),
    /// Dense with a fixed linear skip.
    Skip(SkipEncoder),
}

/// The per-frame decoder of a [`Dvae`].
#[derive(Module, Debug)]
pub enum FrameDecoder {
    /// Dense.
    Dense(Decoder),
    /// Column network.
    Columns(ColumnDecoder),
    /// A known linear map.
    Known(FixedAffine),
    /// A known curve rendering.
    Curve(CurveDecoder),
}

impl FrameNetsConfig {
    /// Dense networks.
    pub fn dense(encoder: EncoderConfig, decoder: DecoderConfig) -> Self {
        Self::Dense(DenseFrameNetsConfig::new(encoder, decoder))
    }

    /// The encoder and decoder.
    pub fn init(&self, device: &Device) -> (FrameEncoder, FrameDecoder) {
        match self {
            Self::Dense(c) => (
                FrameEncoder::Dense(c.encoder.init(device)),
                FrameDecoder::Dense(c.decoder.init(device)),
            ),
            Self::Curve(c) => (
                FrameEncoder::Columns(c.columns.encoder(device)),
                FrameDecoder::Curve(CurveDecoder {
                    row_values: c.row_values.clone(),
                    line_width: c.line_width,
                    scale: c.scale,
                    shift: c.shift,
                }),
            ),
            Self::KnownDecoder(c) => {
                let p = c.offset.len();
                assert!(
                    p > 0 && c.matrix.len() % p == 0,
                    "KnownDecoderNetsConfig: the matrix must be [m, P] with P = offset.len()"
                );
                let m = c.matrix.len() / p;
                let fixed = |v: &[f64], shape: [usize; 2]| {
                    Param::from_tensor(Tensor::<2>::from_data(
                        TensorData::new(v.to_vec(), shape),
                        device,
                    ))
                };
                let net = c.encoder.init(device);
                let encoder = match &c.encoder_skip {
                    None => FrameEncoder::Dense(net),
                    Some((a, b)) => {
                        assert_eq!(
                            (a.len(), b.len()),
                            (p * m, m),
                            "KnownDecoderNetsConfig: the encoder skip must be [P, m] and [m]"
                        );
                        FrameEncoder::Skip(SkipEncoder {
                            net,
                            skip: FixedAffine {
                                matrix: fixed(a, [p, m]),
                                offset: fixed(b, [1, m]),
                            },
                        })
                    }
                };
                (
                    encoder,
                    FrameDecoder::Known(FixedAffine {
                        matrix: fixed(&c.matrix, [m, p]),
                        offset: fixed(&c.offset, [1, p]),
                    }),
                )
            }
            Self::Columns(c) => (
                FrameEncoder::Columns(c.encoder(device)),
                FrameDecoder::Columns(ColumnDecoder {
                    net: c.mlp(2 * c.half_window + 1, c.height, device),
                    height: c.height,
                    width: c.width,
                    half_window: c.half_window,
                }),
            ),
        }
    }
}

impl ColumnNetsConfig {
    /// The shared column MLP `input → hidden… → output`.
    fn mlp(&self, input: usize, output: usize, device: &Device) -> Mlp {
        let mut v = vec![input];
        v.extend(&self.hidden);
        v.push(output);
        MlpConfig::new(v)
            .with_activation(self.activation)
            .init(device)
    }

    /// The column encoder.
    fn encoder(&self, device: &Device) -> ColumnEncoder {
        ColumnEncoder {
            net: self.mlp((2 * self.half_window + 1) * self.height, 2, device),
            height: self.height,
            width: self.width,
            half_window: self.half_window,
        }
    }
}

/// Configuration of a [`Dvae`].
#[derive(Config, Debug)]
pub struct DvaeConfig {
    /// The per-frame encoder and decoder.
    pub nets: FrameNetsConfig,
    /// Physical parameters `p` of `q_λ`.
    pub param_dim: usize,
    /// Initial `log sd` of `q_λ(ξ)` (the mean starts at the prior's, `ξ = 0`).
    #[config(default = -1.0)]
    pub init_log_sd: f64,
    /// The amortisation network of `q_λ(ξ | y_{1:N})`: sizes `[N·m, hidden…, 2p]` (`None`:
    /// one shared `q_λ`).
    #[config(default = "None")]
    pub amortise: Option<MlpConfig>,
    /// Offset `o` of the pseudo-observations, `[m]` (`None`: 0).
    #[config(default = "None")]
    pub state_offset: Option<Vec<f64>>,
    /// Scale `s > 0` of the pseudo-observations, `[m]` (`None`: 1).
    #[config(default = "None")]
    pub state_scale: Option<Vec<f64>>,
}

/// The Φ-DVAE's learned parts (module docs).
#[derive(Module, Debug)]
pub struct Dvae {
    /// `q_φ(x_n | y_n)`.
    pub encoder: FrameEncoder,
    /// `p_θ(y_n | x_n)`'s parameters.
    pub decoder: FrameDecoder,
    /// Mean of `q_λ(ξ)`, `[1, p]`.
    pub param_mean: Param<Tensor<2>>,
    /// `log sd` of `q_λ(ξ)`, `[1, p]`.
    pub param_log_sd: Param<Tensor<2>>,
    /// The amortisation network (`[batch, N·m] → [batch, 2p]`), if amortised.
    pub param_net: Option<Mlp>,
    /// `o` of [`DvaeConfig::state_offset`] (empty: 0).
    #[module(skip)]
    pub state_offset: Vec<f64>,
    /// `s` of [`DvaeConfig::state_scale`] (empty: 1).
    #[module(skip)]
    pub state_scale: Vec<f64>,
}

impl DvaeConfig {
    /// Build the model.
    pub fn init(&self, device: &Device) -> Dvae {
        let p = self.param_dim;
        let (encoder, decoder) = self.nets.init(device);
        Dvae {
            encoder,
            decoder,
            param_mean: Param::from_tensor(Tensor::zeros([1, p], device)),
            param_log_sd: Param::from_tensor(Tensor::full([1, p], self.init_log_sd, device)),
            param_net: self.amortise.as_ref().map(|c| {
                assert_eq!(
                    c.sizes.last(),
                    Some(&(2 * p)),
                    "DvaeConfig: the amortisation network must output 2p = {} values",
                    2 * p
                );
                c.init(device)
            }),
            state_offset: self.state_offset.clone().unwrap_or_default(),
            state_scale: self.state_scale.clone().unwrap_or_default(),
        }
    }
}

impl Dvae {
    /// `(o, s)` as `[1, m]` tensors, when set.
    fn standardisation(&self, m: usize, device: &Device) -> (Option<Tensor<2>>, Option<Tensor<2>>) {
        let row = |v: &[f64]| {
            (!v.is_empty()).then(|| {
                assert_eq!(
                    v.len(),
                    m,
                    "Dvae: the state offset/scale needs one value per pseudo-observation"
                );
                Tensor::<2>::from_data(TensorData::new(v.to_vec(), [1, m]), device)
            })
        };
        (row(&self.state_offset), row(&self.state_scale))
    }

    /// `q_φ(x_n | y_n)` of frames `y: [batch, N, P]`, one row per frame (`[batch·N, m]`), on
    /// the pseudo-observations' scale (`x = o + s ⊙ x̃`).
    pub fn encode(&self, y: Tensor<3>) -> DiagGaussian {
        let [b, n, p] = y.dims();
        let y = y.reshape([b * n, p]);
        let q = match &self.encoder {
            FrameEncoder::Dense(e) => e.forward(y, None),
            FrameEncoder::Columns(e) => e.forward(y),
            FrameEncoder::Skip(e) => {
                let q = e.net.forward(y.clone(), None);
                DiagGaussian::new(q.mean + e.skip.forward(y), q.log_var)
            }
        };
        let m = q.mean.dims()[1];
        let (offset, scale) = self.standardisation(m, &q.mean.device());
        let (mut mean, mut log_var) = (q.mean, q.log_var);
        if let Some(s) = scale {
            mean = mean * s.clone();
            log_var = log_var + s.log() * 2.0;
        }
        if let Some(o) = offset {
            mean = mean + o;
        }
        DiagGaussian::new(mean, log_var)
    }

    /// `x̃ = (x − o) / s` of pseudo-observations `x: [rows, m]`.
    fn standardise(&self, mut x: Tensor<2>) -> Tensor<2> {
        let (offset, scale) = self.standardisation(x.dims()[1], &x.device());
        if let Some(o) = offset {
            x = x - o;
        }
        if let Some(s) = scale {
            x = x / s;
        }
        x
    }

    /// The frame likelihood's parameters at pseudo-observations `x: [batch, N, m]`,
    /// `[batch, N, k·P]` (a learned decoder sees the standardised `x̃`, a known one `x`).
    pub fn decode(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, m] = x.dims();
        let x = x.reshape([b * n, m]);
        let out = match &self.decoder {
            FrameDecoder::Dense(d) => d.forward(self.standardise(x)),
            FrameDecoder::Columns(d) => d.forward(self.standardise(x)),
            FrameDecoder::Known(d) => d.forward(x),
            FrameDecoder::Curve(d) => d.forward(x),
        };
        let k = out.dims()[1];
        out.reshape([b, n, k])
    }

    /// `q_λ(ξ)` over the standardised parameters, `[1, p]` (the shared posterior, or the
    /// offset of an amortised one).
    pub fn param_posterior(&self) -> DiagGaussian {
        DiagGaussian::new(self.param_mean.val(), self.param_log_sd.val() * 2.0)
    }

    /// `q_λ(ξ | y_{1:N})` given the encoder means `mu_x: [batch, N, m]` of each sequence:
    /// `[batch, p]` when amortised, else the shared `[1, p]` posterior.
    pub fn param_posterior_given(&self, mu_x: Tensor<3>) -> DiagGaussian {
        let Some(net) = &self.param_net else {
            return self.param_posterior();
        };
        let [b, n, m] = mu_x.dims();
        let p = self.param_mean.dims()[1];
        let out = net.forward(
            self.standardise(mu_x.reshape([b * n, m]))
                .reshape([b, n * m]),
        );
        let mean = out.clone().narrow(1, 0, p) + self.param_mean.val();
        let log_sd = out.narrow(1, p, p) + self.param_log_sd.val();
        DiagGaussian::new(mean, log_sd * 2.0)
    }

    /// Whether `q_λ` is amortised.
    pub fn is_amortised(&self) -> bool {
        self.param_net.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f64_device, tensor, vec};

    #[test]
    fn column_networks_are_periodic_convolutions() {
        // `neighbours` stacks the rolled columns; rolling a frame's columns by s rolls the
        // encoder's means and the decoder's columns by s (translation equivariance on the
        // periodic grid), and each output column depends only on its 2k + 1 neighbours.
        let dev = f64_device();
        let x = tensor((0..5).map(|v| v as f64).collect(), [1, 1, 5], &dev);
        assert_eq!(
            vec(neighbours(x, 1)),
            vec![4., 0., 1., 2., 3., 0., 1., 2., 3., 4., 1., 2., 3., 4., 0.]
        );
        let (h, w) = (3, 6);
        let (enc, dec) =
            FrameNetsConfig::Columns(ColumnNetsConfig::new(h, w).with_hidden(vec![5])).init(&dev);
        let (FrameEncoder::Columns(enc), FrameDecoder::Columns(dec)) = (enc, dec) else {
            unreachable!()
        };
        let frame: Vec<f64> = (0..h * w).map(|k| ((k * 7) % 11) as f64 / 10.0).collect();
        let roll = |v: &[f64], rows: usize, s: usize| -> Vec<f64> {
            (0..rows)
                .flat_map(|r| (0..w).map(move |j| (r, (j + w - s) % w)))
                .map(|(r, j)| v[r * w + j])
                .collect()
        };
        let mu = vec(enc.forward(tensor(frame.clone(), [1, h * w], &dev)).mean);
        let mu2 = vec(enc
            .forward(tensor(roll(&frame, h, 2), [1, h * w], &dev))
            .mean);
        for (a, b) in roll(&mu, 1, 2).iter().zip(&mu2) {
            assert!((a - b).abs() < 1e-12);
        }
        let u: Vec<f64> = (0..w).map(|j| (j as f64).sin()).collect();
        let y = vec(dec.forward(tensor(u.clone(), [1, w], &dev)));
        let y2 = vec(dec.forward(tensor(roll(&u, 1, 2), [1, w], &dev)));
        for (a, b) in roll(&y, h, 2).iter().zip(&y2) {
            assert!((a - b).abs() < 1e-12);
        }
        // Changing node 0 leaves the columns farther than k = 1 away unchanged.
        let mut v = u.clone();
        v[0] += 1.0;
        let y3 = vec(dec.forward(tensor(v, [1, w], &dev)));
        for r in 0..h {
            for j in 2..w - 1 {
                assert_eq!(y[r * w + j], y3[r * w + j], "row {r} column {j}");
            }
            assert_ne!(y[r * w + 1], y3[r * w + 1]);
        }
    }

    #[test]
    fn standardised_state_is_an_affine_map_of_the_networks_outputs() {
        // x = o + s ⊙ x̃: the encoder's mean and sd map affinely, and the decoder of x equals
        // the plain decoder of x̃ (same weights).
        let dev = f64_device();
        let nets = FrameNetsConfig::dense(
            EncoderConfig::Mlp(crate::encoder::MlpEncoderConfig::new(4, 2).with_hidden(vec![3])),
            DecoderConfig::Mlp(crate::decoder::MlpDecoderConfig::new(2, 4).with_hidden(vec![3])),
        );
        let plain = DvaeConfig::new(nets.clone(), 1).init(&dev);
        let mut scaled = DvaeConfig::new(nets, 1)
            .with_state_offset(Some(vec![1.0, -2.0]))
            .with_state_scale(Some(vec![3.0, 0.5]))
            .init(&dev);
        scaled.encoder = plain.encoder.clone();
        scaled.decoder = plain.decoder.clone();
        let y = tensor((0..8).map(|v| v as f64 / 7.0).collect(), [1, 2, 4], &dev);
        let (q0, q1) = (plain.encode(y.clone()), scaled.encode(y));
        let (m0, m1) = (vec(q0.mean.clone()), vec(q1.mean.clone()));
        let (v0, v1) = (vec(q0.log_var), vec(q1.log_var));
        let (o, s) = ([1.0, -2.0], [3.0, 0.5]);
        for k in 0..4 {
            assert!((m1[k] - (o[k % 2] + s[k % 2] * m0[k])).abs() < 1e-12);
            assert!((v1[k] - (v0[k] + 2.0 * f64::ln(s[k % 2]))).abs() < 1e-12);
        }
        let d0 = vec(plain.decode(q0.mean.reshape([1, 2, 2])));
        let d1 = vec(scaled.decode(q1.mean.reshape([1, 2, 2])));
        for (a, b) in d0.iter().zip(&d1) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
