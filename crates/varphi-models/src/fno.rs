//! Fourier neural operators (Li et al. 2021): spectral convolutions on 1-D and 2-D grids and the
//! FNO network built from them, with a Gaussian head for field-to-field surrogates.
//!
//! A spectral convolution keeps the lowest Fourier modes of each input channel, mixes channels
//! with one complex matrix per mode and transforms back:
//!
//! ```text
//! X_i(k)  = Σ_{h,w} x_i(h, w) e^{−2πi (k₁h/H + k₂w/W)}        k₁ ∈ {−(m₁−1), …, m₁−1}, k₂ ∈ {0, …, m₂−1}
//! Y_o(k)  = Σ_i X_i(k) R_{io}(k)                                R(k) ∈ ℂ^{C_in × C_out}, learned
//! y_o(h, w) = (1/HW) Σ_{k₁} Σ_{k₂} c_{k₂} Re[Y_o(k) e^{+2πi (k₁h/H + k₂w/W)}]    c₀ = 1, c_{k₂>0} = 2
//! ```
//!
//! i.e. the inverse real FFT of a spectrum that is zero outside the kept modes (the `k₂ = 0`
//! column keeps its real part only, as `irfft2` does). The kept frequencies along the first axis
//! are symmetric (`±k₁`), so a layer with real-valued `R` maps a real cosine to the same cosine.
//!
//! **The transforms are truncated DFTs written as matrix products, not FFTs.** With `m` modes
//! of an axis of `n` nodes a transform costs `n·m` multiply-adds per line against an FFT's
//! `~n log₂ n` plus the copy of all `n` bins; for the grids of varphi's problems (n ≤ 128,
//! m ≤ 16) the dense product is as cheap, runs in the GEMM kernels that are the fastest path
//! on every backend, differentiates through ordinary autodiff, and works for any `n` (an FFT
//! needs a power of two, so a 33-node grid would be padded to 64). Burn's `signal` feature
//! (rfft/irfft) would also rebuild burn with another feature set for CI. See docs/design.md.
//!
//! A 1-D convolution is the 2-D one on `H = 1` with `m₁ = 1` (only `k₁ = 0`).

use crate::activation::Activation;
use crate::distributions::DiagGaussian;
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::ops::PadMode;
use std::f64::consts::PI;

/// The frequencies kept along an axis of `n` nodes with `m` modes: `0, 1, …, m−1` then
/// `n−m+1, …, n−1` (i.e. `−(m−1), …, −1`), so `2m − 1` of them.
fn axis_frequencies(m: usize, n: usize) -> Vec<usize> {
    (0..m).chain((1..m).map(|k| n - k)).collect()
}

/// Configuration of a [`SpectralConv`].
#[derive(Config, Debug)]
pub struct SpectralConvConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Modes kept: `[m₁, m₂]` on a 2-D grid (`2m₁ − 1 ≤ H`, `m₂ ≤ ⌈W/2⌉`), or `[m]` on a 1-D
    /// one (the last axis; the first has `m₁ = 1`).
    pub modes: Vec<usize>,
}

/// A spectral convolution (see the module docs): complex weights `R = R_re + i R_im`, one
/// `C_in × C_out` matrix per kept mode.
#[derive(Module, Debug)]
pub struct SpectralConv {
    /// Real parts, `[modes, C_in, C_out]`; mode `k₂·K₁ + j` is frequency `(k₁ⱼ, k₂)`.
    pub weight_re: Param<Tensor<3>>,
    /// Imaginary parts, same shape.
    pub weight_im: Param<Tensor<3>>,
    /// `[m₁, m₂]`.
    #[module(skip)]
    pub modes: [usize; 2],
}

impl SpectralConvConfig {
    /// Build the layer: weights uniform on `[0, 1/(C_in·C_out))`, as in the original FNO.
    pub fn init(&self, device: &Device) -> SpectralConv {
        let modes = match self.modes.as_slice() {
            [m] => [1, *m],
            [m1, m2] => [*m1, *m2],
            other => panic!("SpectralConvConfig.modes must have 1 or 2 entries, got {other:?}"),
        };
        assert!(
            modes[0] >= 1 && modes[1] >= 1,
            "SpectralConvConfig.modes must be ≥ 1, got {:?}",
            self.modes
        );
        let count = (2 * modes[0] - 1) * modes[1];
        let scale = 1.0 / (self.in_channels * self.out_channels) as f64;
        let shape = [count, self.in_channels, self.out_channels];
        let draw = || {
            Param::from_tensor(Tensor::<3>::random(
                shape,
                Distribution::Uniform(0.0, scale),
                device,
            ))
        };
        SpectralConv {
            weight_re: draw(),
            weight_im: draw(),
            modes,
        }
    }
}

/// The transform matrices of a grid `H × W` (built on the host in f64) for fields laid out
/// channels last, `[H, W, B, C]`, so that every transform is one GEMM over all batch members
/// and channels and no transposed copy is made (see [`SpectralConv::apply`]).
struct Transforms {
    /// `[2m₂, W]`, rows `(re/im, k₂)`: `A = F_W x` along `W`.
    forward_w: Tensor<3>,
    /// `[K, 2H]`, columns `(y, re/im)`: the real part of the transform along `H`.
    forward_h_re: Tensor<2>,
    /// `[K, 2H]`: its imaginary part.
    forward_h_im: Tensor<2>,
    /// `[2H, K]`, rows `(y, re/im)`: the inverse along `H` applied to `Re Y`.
    inverse_h_re: Tensor<2>,
    /// `[2H, K]`: applied to `Im Y`.
    inverse_h_im: Tensor<2>,
    /// `[W, 2m₂]`, columns `(re/im, k₂)`, with the `c_{k₂}/(HW)` weights: `y = I_W Z`.
    inverse_w: Tensor<3>,
}

impl Transforms {
    fn new(modes: [usize; 2], h: usize, w: usize, device: &Device) -> Self {
        let [m1, m2] = modes;
        let rows = axis_frequencies(m1, h);
        let k = rows.len();
        let angle = |f: usize, x: usize, n: usize| 2.0 * PI * ((f * x) % n) as f64 / n as f64;
        let norm = 1.0 / (h * w) as f64;
        let (mut fw, mut iw) = (vec![0.0; 2 * m2 * w], vec![0.0; w * 2 * m2]);
        for x in 0..w {
            for f in 0..m2 {
                let (s, c) = angle(f, x, w).sin_cos();
                // forward e^{−iθ}: Re = Σ x cos θ, Im = −Σ x sin θ
                fw[f * w + x] = c;
                fw[(m2 + f) * w + x] = -s;
                // inverse c_f/(HW) Re[Z e^{+iθ}] = c_f/(HW) (Re Z cos θ − Im Z sin θ)
                let weight = if f == 0 { norm } else { 2.0 * norm };
                iw[x * 2 * m2 + f] = weight * c;
                iw[x * 2 * m2 + m2 + f] = -weight * s;
            }
        }
        let mut fh_re = vec![0.0; k * 2 * h];
        let mut fh_im = vec![0.0; k * 2 * h];
        let mut ih_re = vec![0.0; 2 * h * k];
        let mut ih_im = vec![0.0; 2 * h * k];
        for y in 0..h {
            for (j, &f) in rows.iter().enumerate() {
                let (s, c) = angle(f, y, h).sin_cos();
                // forward e^{−iφ}: Re X = C Re A + S Im A, Im X = C Im A − S Re A
                fh_re[j * 2 * h + 2 * y] = c;
                fh_re[j * 2 * h + 2 * y + 1] = s;
                fh_im[j * 2 * h + 2 * y] = -s;
                fh_im[j * 2 * h + 2 * y + 1] = c;
                // inverse e^{+iφ}: Re Z = C Re Y − S Im Y, Im Z = S Re Y + C Im Y
                ih_re[2 * y * k + j] = c;
                ih_re[(2 * y + 1) * k + j] = s;
                ih_im[2 * y * k + j] = -s;
                ih_im[(2 * y + 1) * k + j] = c;
            }
        }
        let t = |v: Vec<f64>, shape: [usize; 2]| {
            Tensor::<2>::from_data(TensorData::new(v, shape), device)
        };
        Self {
            forward_w: t(fw, [2 * m2, w]).unsqueeze(),
            forward_h_re: t(fh_re, [k, 2 * h]),
            forward_h_im: t(fh_im, [k, 2 * h]),
            inverse_h_re: t(ih_re, [2 * h, k]),
            inverse_h_im: t(ih_im, [2 * h, k]),
            inverse_w: t(iw, [w, 2 * m2]).unsqueeze(),
        }
    }
}

impl SpectralConv {
    /// Check that the kept modes fit a grid `H × W`; the message names the limit.
    pub fn check_grid(modes: [usize; 2], h: usize, w: usize) -> Result<(), String> {
        if 2 * modes[0] - 1 > h {
            return Err(format!(
                "{} modes along an axis of {h} nodes: at most (H + 1) / 2 = {} fit",
                modes[0],
                h.div_ceil(2)
            ));
        }
        if 2 * (modes[1] - 1) >= w {
            return Err(format!(
                "{} modes along an axis of {w} nodes: at most ⌈W / 2⌉ = {} fit",
                modes[1],
                w.div_ceil(2)
            ));
        }
        Ok(())
    }

    /// `[B, C_in, H, W]` → `[B, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        if let Err(e) = Self::check_grid(self.modes, h, w) {
            panic!("SpectralConv: {e}");
        }
        let t = Transforms::new(self.modes, h, w, &x.device());
        let y = self.apply(x.permute([2, 3, 0, 1]), &t);
        let co = y.dims()[3];
        debug_assert_eq!(y.dims(), [h, w, b, co], "{c} → {co} channels");
        y.permute([2, 3, 0, 1])
    }

    /// The convolution of a channels-last field `[H, W, B, C_in]` → `[H, W, B, C_out]` with
    /// the grid's tables. Every step is one (batched) GEMM over all `B·C` columns at once:
    ///
    /// ```text
    /// A[y]  = F_W x[y]                       [2m₂, W] · [W, B·C]          per row y
    /// X_re  = F_H,re A,  X_im = F_H,im A     [K, 2H] · [2H, m₂·B·C]      A as [(y, re/im), (k₂, b, c)]
    /// Y_re  = X_re R_re − X_im R_im          per mode: [B, C_in] · [C_in, C_out]
    /// Y_im  = X_re R_im + X_im R_re
    /// Z     = I_H,re Y_re + I_H,im Y_im      [2H, K] · [K, m₂·B·C_out]
    /// y[y]  = I_W Z[y]                       [W, 2m₂] · [2m₂, B·C_out]    per row y
    /// ```
    fn apply(&self, x: Tensor<4>, t: &Transforms) -> Tensor<4> {
        let [h, w, b, ci] = x.dims();
        let [_, m2] = self.modes;
        let k = t.forward_h_re.dims()[0];
        let co = self.weight_re.dims()[2];
        let a = t
            .forward_w
            .clone()
            .matmul(x.reshape([h, w, b * ci]))
            .reshape([2 * h, m2 * b * ci]);
        let spectrum = |table: &Tensor<2>| table.clone().matmul(a.clone()).reshape([k, m2, b, ci]);
        let (x_re, x_im) = (spectrum(&t.forward_h_re), spectrum(&t.forward_h_im));
        // Weights are stored mode-major with k₂ outer, [(k₂, k₁), C_in, C_out]; viewed [k₁, k₂, ..].
        let weight = |p: &Param<Tensor<3>>| p.val().reshape([m2, k, ci, co]).swap_dims(0, 1);
        let (r_re, r_im) = (weight(&self.weight_re), weight(&self.weight_im));
        let y_re = x_re.clone().matmul(r_re.clone()) - x_im.clone().matmul(r_im.clone());
        let y_im = x_re.matmul(r_im) + x_im.matmul(r_re);
        let z = t
            .inverse_h_re
            .clone()
            .matmul(y_re.reshape([k, m2 * b * co]))
            + t.inverse_h_im
                .clone()
                .matmul(y_im.reshape([k, m2 * b * co]));
        t.inverse_w
            .clone()
            .matmul(z.reshape([h, 2 * m2, b * co]))
            .reshape([h, w, b, co])
    }

    /// `[B, C_in, N]` → `[B, C_out, N]` (1-D: built with one mode count, `m₁ = 1`).
    pub fn forward_1d(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, c, n] = x.dims();
        let y = self.forward(x.reshape([b, c, 1, n]));
        let co = y.dims()[1];
        y.reshape([b, co, n])
    }
}

/// A pointwise (1×1) linear map over channels of a channels-last field, `[N, C_in]` →
/// `[N, C_out]` (the weight is stored `[C_out, C_in]` as a 1×1 convolution's).
#[derive(Module, Debug)]
pub struct Pointwise {
    /// `[C_out, C_in]`.
    pub weight: Param<Tensor<2>>,
    /// `[C_out]`.
    pub bias: Param<Tensor<1>>,
}

impl Pointwise {
    /// Weights and bias uniform on `±1/√C_in` (burn's `Linear` default).
    pub fn new(c_in: usize, c_out: usize, device: &Device) -> Self {
        let bound = 1.0 / (c_in as f64).sqrt();
        let u = Distribution::Uniform(-bound, bound);
        Self {
            weight: Param::from_tensor(Tensor::random([c_out, c_in], u, device)),
            bias: Param::from_tensor(Tensor::random([c_out], u, device)),
        }
    }

    /// Channels last: `[N, C_in]` → `[N, C_out]`, one GEMM for all `N` positions.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.weight.val().transpose()) + self.bias.val().unsqueeze()
    }
}

/// Configuration of an [`Fno`].
#[derive(Config, Debug)]
pub struct FnoConfig {
    /// Input shape, channels first: `[C_in, H, W]` (2-D) or `[C_in, N]` (1-D).
    pub shape: Vec<usize>,
    /// Output channels per node.
    pub out_channels: usize,
    /// Channels of the Fourier layers.
    #[config(default = 32)]
    pub width: usize,
    /// Modes kept per axis: one value for every axis, or `[m₁, m₂]` on a 2-D grid.
    #[config(default = "vec![12]")]
    pub modes: Vec<usize>,
    /// Fourier layers.
    #[config(default = 4)]
    pub layers: usize,
    /// Hidden channels of the two-layer pointwise projection.
    #[config(default = 128)]
    pub projection: usize,
    /// Zero padding added after the last node of each axis before the Fourier layers (and cut
    /// off before the projection), so that a non-periodic field is not wrapped around.
    #[config(default = 0)]
    pub padding: usize,
    /// Append the node coordinates (`y`, `x` in `[0, 1]`) to the input channels.
    #[config(default = true)]
    pub coordinates: bool,
    /// Activation after the lifting-free Fourier layers (all but the last) and in the
    /// projection.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
}

/// A Fourier neural operator: pointwise lifting to `width` channels, `layers` Fourier layers
/// `h ← σ(K h + W h)` (a [`SpectralConv`] `K` plus a pointwise skip `W`; no activation after
/// the last), and a pointwise projection `width → projection → C_out`.
///
/// Takes and returns *flattened* tensors, channels first, like [`crate::UNet`]:
/// `[batch, C_in·H·W]` in, `[batch, C_out·H·W]` out.
#[derive(Module, Debug)]
pub struct Fno {
    /// Lifting `C_in (+2 coordinates) → width`.
    pub lift: Pointwise,
    /// Spectral convolutions, one per layer.
    pub spectral: Vec<SpectralConv>,
    /// Pointwise skips, one per layer.
    pub skip: Vec<Pointwise>,
    /// `width → projection`.
    pub project: Pointwise,
    /// `projection → C_out`.
    pub output: Pointwise,
    /// `[C_in, H, W]` (a 1-D input has `H = 1`).
    #[module(skip)]
    pub shape: [usize; 3],
    /// Output channels.
    #[module(skip)]
    pub out_channels: usize,
    /// Padding per padded axis.
    #[module(skip)]
    pub padding: usize,
    /// Whether coordinates are appended.
    #[module(skip)]
    pub coordinates: bool,
    /// Activation.
    #[module(skip)]
    pub activation: Activation,
}

impl FnoConfig {
    /// The grid `[C_in, H, W]` (1-D: `H = 1`) and the modes `[m₁, m₂]`, or what is wrong.
    pub fn layout(&self) -> Result<([usize; 3], [usize; 2]), String> {
        let (shape, one_d) = match self.shape.as_slice() {
            [c, n] => ([*c, 1, *n], true),
            [c, h, w] => ([*c, *h, *w], false),
            s => {
                return Err(format!(
                    "the FNO's input shape must be [C, N] or [C, H, W], got {s:?}"
                ));
            }
        };
        let modes = match (self.modes.as_slice(), one_d) {
            ([m], true) => [1, *m],
            ([m], false) => [*m, *m],
            ([m1, m2], false) => [*m1, *m2],
            (m, _) => {
                return Err(format!(
                    "modes {m:?} do not fit a {}-D grid: give one value, or [m₁, m₂] on a 2-D grid",
                    if one_d { 1 } else { 2 }
                ));
            }
        };
        if modes.contains(&0) {
            return Err("modes must be ≥ 1".into());
        }
        let pad = |n: usize| if n == 1 { 1 } else { n + self.padding };
        SpectralConv::check_grid(modes, pad(shape[1]), pad(shape[2]))?;
        if self.layers == 0 || self.width == 0 {
            return Err("an FNO needs layers ≥ 1 and width ≥ 1".into());
        }
        Ok((shape, modes))
    }

    /// Build the network.
    pub fn init(&self, device: &Device) -> Fno {
        let (shape, modes) = self.layout().unwrap_or_else(|e| panic!("FnoConfig: {e}"));
        let c_in = shape[0] + if self.coordinates { 2 } else { 0 };
        let spectral = (0..self.layers)
            .map(|_| SpectralConvConfig::new(self.width, self.width, modes.to_vec()).init(device))
            .collect();
        let skip = (0..self.layers)
            .map(|_| Pointwise::new(self.width, self.width, device))
            .collect();
        Fno {
            lift: Pointwise::new(c_in, self.width, device),
            spectral,
            skip,
            project: Pointwise::new(self.width, self.projection, device),
            output: Pointwise::new(self.projection, self.out_channels, device),
            shape,
            out_channels: self.out_channels,
            padding: self.padding,
            coordinates: self.coordinates,
            activation: self.activation,
        }
    }
}

/// Node coordinates channels last, `[H, W, 1, 2]`: channel 0 `y = i/(H−1)`, channel 1
/// `x = j/(W−1)` (0 on an axis of one node).
fn coordinate_channels(h: usize, w: usize, device: &Device) -> Tensor<4> {
    let frac = |i: usize, n: usize| {
        if n > 1 {
            i as f64 / (n - 1) as f64
        } else {
            0.0
        }
    };
    let v = (0..h * w)
        .flat_map(|p| [frac(p / w, h), frac(p % w, w)])
        .collect();
    Tensor::from_data(TensorData::new(v, [h, w, 1, 2]), device)
}

impl Fno {
    /// `[batch, C_in·H·W]` → `[batch, C_out·H·W]`.
    ///
    /// Inside, the hidden field is kept channels last, `[H, W, B, width]`: the pointwise
    /// layers are then one GEMM over all nodes, and the spectral layers one GEMM per transform
    /// (no transposed copies; [`SpectralConv::apply`]). Only the input and the output are
    /// transposed.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [b, f] = x.dims();
        let [c, h, w] = self.shape;
        assert_eq!(
            f,
            c * h * w,
            "Fno: input has {f} features, expected {} = {:?}",
            c * h * w,
            self.shape
        );
        let mut x = x.reshape([b, c, h, w]).permute([2, 3, 0, 1]);
        if self.coordinates {
            let grid = coordinate_channels(h, w, &x.device()).expand([h, w, b, 2]);
            x = Tensor::cat(vec![x, grid], 3);
        }
        let ci = x.dims()[3];
        let width = self.skip[0].weight.dims()[0];
        let mut x = self
            .lift
            .forward(x.reshape([h * w * b, ci]))
            .reshape([h, w, b, width]);
        let (ph, pw) = (if h > 1 { self.padding } else { 0 }, self.padding);
        if self.padding > 0 {
            x = x.pad([(0, ph), (0, pw), (0, 0), (0, 0)], PadMode::Constant(0.0));
        }
        let (hp, wp) = (h + ph, w + pw);
        // Checked by FnoConfig::layout at init; all layers share the grid and the modes.
        let tables = Transforms::new(self.spectral[0].modes, hp, wp, &x.device());
        let last = self.spectral.len() - 1;
        for (i, (k, s)) in self.spectral.iter().zip(&self.skip).enumerate() {
            let skip = s
                .forward(x.clone().reshape([hp * wp * b, width]))
                .reshape([hp, wp, b, width]);
            let y = k.apply(x, &tables) + skip;
            x = if i < last {
                self.activation.forward(y)
            } else {
                y
            };
        }
        if self.padding > 0 {
            x = x.slice([0..h, 0..w, 0..b, 0..width]);
        }
        let x = self
            .activation
            .forward(self.project.forward(x.reshape([h * w * b, width])));
        self.output
            .forward(x)
            .reshape([h, w, b, self.out_channels])
            .permute([2, 3, 0, 1])
            .reshape([b, self.out_channels * h * w])
    }

    /// A Gaussian over the output field: channel 0 the mean, channel 1 `log σ²`
    /// (`out_channels` must be 2).
    pub fn gaussian(&self, x: Tensor<2>) -> DiagGaussian {
        assert_eq!(
            self.out_channels, 2,
            "Fno::gaussian needs out_channels = 2 (mean, log variance)"
        );
        DiagGaussian::from_halves(self.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f64_device, gradient_check, tensor, vec};

    /// Deterministic values in [−1, 1).
    fn wiggle(n: usize, salt: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (((i + 3 * salt) * 37 + salt) % 101) as f64 / 50.5 - 1.0)
            .collect()
    }

    fn layer(
        ci: usize,
        co: usize,
        modes: [usize; 2],
        re: Vec<f64>,
        im: Vec<f64>,
        device: &Device,
    ) -> SpectralConv {
        let count = (2 * modes[0] - 1) * modes[1];
        SpectralConv {
            weight_re: Param::from_tensor(tensor(re, [count, ci, co], device)),
            weight_im: Param::from_tensor(tensor(im, [count, ci, co], device)),
            modes,
        }
    }

    /// The module docs' formula, term by term in f64 complex arithmetic.
    fn direct(
        x: &[f64],
        [b, ci, h, w]: [usize; 4],
        co: usize,
        modes: [usize; 2],
        re: &[f64],
        im: &[f64],
    ) -> Vec<f64> {
        let rows = axis_frequencies(modes[0], h);
        let k = rows.len();
        let mut y = vec![0.0; b * co * h * w];
        for bi in 0..b {
            for (j, &k1) in rows.iter().enumerate() {
                for k2 in 0..modes[1] {
                    let theta = |p: usize, q: usize| {
                        2.0 * PI
                            * (k1 as f64 * p as f64 / h as f64 + k2 as f64 * q as f64 / w as f64)
                    };
                    // X_i(k) = Σ x e^{−iθ}
                    let xs: Vec<(f64, f64)> = (0..ci)
                        .map(|i| {
                            let mut acc = (0.0, 0.0);
                            for p in 0..h {
                                for q in 0..w {
                                    let v = x[((bi * ci + i) * h + p) * w + q];
                                    acc.0 += v * theta(p, q).cos();
                                    acc.1 -= v * theta(p, q).sin();
                                }
                            }
                            acc
                        })
                        .collect();
                    let mode = k2 * k + j;
                    let c = if k2 == 0 { 1.0 } else { 2.0 };
                    for o in 0..co {
                        let (mut yr, mut yi) = (0.0, 0.0);
                        for (i, &(xr, xi)) in xs.iter().enumerate() {
                            let (wr, wi) =
                                (re[(mode * ci + i) * co + o], im[(mode * ci + i) * co + o]);
                            yr += xr * wr - xi * wi;
                            yi += xr * wi + xi * wr;
                        }
                        for p in 0..h {
                            for q in 0..w {
                                let t = theta(p, q);
                                y[((bi * co + o) * h + p) * w + q] +=
                                    c * (yr * t.cos() - yi * t.sin()) / (h * w) as f64;
                            }
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn a_spectral_convolution_equals_the_direct_dft_in_f64() {
        let dev = f64_device();
        // Grids that are not powers of two, 2-D and 1-D.
        for (dims, modes) in [
            ([2, 3, 7, 10], [3, 4]),
            ([2, 3, 1, 12], [1, 5]),
            ([1, 2, 6, 6], [3, 3]),
        ] {
            let [b, ci, h, w] = dims;
            let co = 2;
            let count = (2 * modes[0] - 1) * modes[1] * ci * co;
            let (re, im) = (wiggle(count, 1), wiggle(count, 2));
            let x = wiggle(b * ci * h * w, 3);
            let conv = layer(ci, co, modes, re.clone(), im.clone(), &dev);
            let got = vec(conv.forward(tensor(x.clone(), dims, &dev)));
            let want = direct(&x, dims, co, modes, &re, &im);
            let err = got
                .iter()
                .zip(&want)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err < 1e-12,
                "{dims:?} modes {modes:?}: max |layer − direct DFT| = {err:e}"
            );
        }
    }

    #[test]
    fn identity_weights_pass_kept_fourier_modes_and_remove_the_others() {
        let dev = f64_device();
        let (h, w, modes) = (8usize, 12usize, [3usize, 4usize]);
        let count = (2 * modes[0] - 1) * modes[1];
        let conv = layer(1, 1, modes, vec![1.0; count], vec![0.0; count], &dev);
        let wave = |a: f64, c: f64, phase: f64| -> Vec<f64> {
            (0..h * w)
                .map(|p| {
                    let (i, j) = ((p / w) as f64, (p % w) as f64);
                    (2.0 * PI * (a * i / h as f64 + c * j / w as f64) + phase).cos()
                })
                .collect()
        };
        let run = |v: Vec<f64>| vec(conv.forward(tensor(v, [1, 1, h, w], &dev)));
        // Kept: |k₁| ≤ 2, k₂ ≤ 3, any phase (sines too), negative k₁ too.
        for (a, c, phase) in [
            (0.0, 0.0, 0.0),
            (2.0, 3.0, 0.4),
            (-2.0, 1.0, 1.1),
            (1.0, 0.0, -0.7),
        ] {
            let v = wave(a, c, phase);
            let err = run(v.clone())
                .iter()
                .zip(&v)
                .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                err < 1e-12,
                "mode ({a}, {c}) phase {phase}: not reproduced ({err:e})"
            );
        }
        // Dropped: |k₁| = 3 or k₂ = 4.
        for (a, c) in [(3.0, 0.0), (0.0, 4.0), (3.0, 5.0)] {
            let out = run(wave(a, c, 0.3));
            let max = out.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert!(
                max < 1e-12,
                "mode ({a}, {c}) should be removed, max |y| = {max:e}"
            );
        }
    }

    #[test]
    fn gradients_match_central_differences() {
        let dev = f64_device();
        let ad = dev.clone().autodiff();
        ad.seed(11);
        // The whole FNO, padded, with coordinates: the gradient w.r.t. its input. (Step 1e-4:
        // at 1e-6 the differences' round-off is ~1e-6 relative even on a linear network.)
        let fno = FnoConfig::new(vec![1, 5, 6], 2)
            .with_width(3)
            .with_modes(vec![2, 3])
            .with_layers(2)
            .with_projection(4)
            .with_padding(2)
            .init(&ad);
        let weights = tensor(wiggle(2 * 60, 5), [2, 60], &ad);
        let x0 = wiggle(2 * 30, 7);
        let err = gradient_check(
            |x| {
                (fno.forward(x.reshape([2, 30])) * weights.clone())
                    .sum()
                    .reshape([1])
            },
            &x0,
            1e-4,
        );
        assert!(err < 1e-6, "FNO input gradient rel. error {err:e}");
        // A spectral layer's weight gradients.
        let (ci, co, modes, dims) = (2, 2, [2, 2], [2, 2, 4, 5]);
        let count = 3 * 2 * ci * co;
        let x = tensor(wiggle(2 * 2 * 20, 9), dims, &ad);
        let probe = tensor(wiggle(2 * 2 * 20, 4), dims, &ad);
        let loss = |re: Vec<f64>, im: Vec<f64>| {
            let conv = layer(ci, co, modes, re, im, &ad);
            let l = (conv.forward(x.clone()) * probe.clone()).sum();
            (conv, l)
        };
        let (re0, im0) = (wiggle(count, 6), wiggle(count, 8));
        let (conv, l) = loss(re0.clone(), im0.clone());
        let grads = l.backward();
        let g_re = vec(conv.weight_re.grad(&grads).expect("weight_re takes part"));
        let g_im = vec(conv.weight_im.grad(&grads).expect("weight_im takes part"));
        let eps = 1e-6;
        let value = |re: Vec<f64>, im: Vec<f64>| vec(loss(re, im).1)[0];
        for idx in 0..count {
            let bump = |v: &[f64], s: f64| {
                let mut v = v.to_vec();
                v[idx] += s;
                v
            };
            let fd_re = (value(bump(&re0, eps), im0.clone())
                - value(bump(&re0, -eps), im0.clone()))
                / (2.0 * eps);
            let fd_im = (value(re0.clone(), bump(&im0, eps))
                - value(re0.clone(), bump(&im0, -eps)))
                / (2.0 * eps);
            assert!(
                (g_re[idx] - fd_re).abs() < 1e-7 * fd_re.abs().max(1.0),
                "∂/∂R_re[{idx}]: {} vs {fd_re}",
                g_re[idx]
            );
            assert!(
                (g_im[idx] - fd_im).abs() < 1e-7 * fd_im.abs().max(1.0),
                "∂/∂R_im[{idx}]: {} vs {fd_im}",
                g_im[idx]
            );
        }
    }

    #[test]
    fn an_fno_keeps_grids_and_rejects_modes_that_do_not_fit() {
        let dev = f64_device();
        dev.seed(2);
        let fno = FnoConfig::new(vec![2, 9, 7], 2)
            .with_width(4)
            .with_modes(vec![4])
            .with_layers(1)
            .with_projection(8)
            .init(&dev);
        let x = tensor(wiggle(3 * 126, 1), [3, 126], &dev);
        let g = fno.gaussian(x);
        assert_eq!(g.mean.dims(), [3, 63]);
        let one_d = FnoConfig::new(vec![1, 33], 1)
            .with_width(4)
            .with_modes(vec![16])
            .with_layers(1);
        assert!(one_d.layout().is_ok());
        let out = one_d
            .init(&dev)
            .forward(tensor(wiggle(2 * 33, 2), [2, 33], &dev));
        assert_eq!(out.dims(), [2, 33]);
        let err = FnoConfig::new(vec![1, 8, 8], 2)
            .with_modes(vec![5])
            .layout()
            .unwrap_err();
        assert!(err.contains("at most (H + 1) / 2 = 4"), "{err}");
        // Padding widens what fits.
        assert!(
            FnoConfig::new(vec![1, 8, 8], 2)
                .with_modes(vec![5])
                .with_padding(2)
                .layout()
                .is_ok()
        );
        let err = FnoConfig::new(vec![1, 8, 8], 2)
            .with_modes(vec![1, 2, 3])
            .layout()
            .unwrap_err();
        assert!(err.contains("do not fit a 2-D grid"), "{err}");
    }
}
