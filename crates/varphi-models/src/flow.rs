//! Normalising flows: RealNVP (Dinh et al. 2017) with ActNorm, optionally conditional.
//!
//! ```text
//! y = f(ε) = f_L ∘ … ∘ f_1(ε),  ε ~ N(0, I),   log q(y) = log N(ε; 0, I) − Σ_l log|det ∂f_l|
//! ActNorm:         y = x ⊙ exp(s) + b,                         log|det| = Σ s
//! affine coupling: y_a = x_a,  y_b = x_b ⊙ exp(s(x_a, c)) + t(x_a, c),  log|det| = Σ s(x_a, c)
//! invertible linear (`lu_mixing`, Glow's "1×1 convolution" for vectors):
//!                  y = x Wᵀ,  W = P L (U + diag(e^σ)),           log|det| = Σ σ
//! ```
//! (`P` a fixed permutation — the reversal — `L` unit lower, `U` strictly upper triangular,
//! all learned but `P`; at initialisation `W = P`, a pure permutation.)
//! Layers alternate which half (`a` = first ⌊d/2⌋ or the rest) conditions the other, which is
//! a fixed permutation between couplings; `s = 2 tanh(raw / 2)` keeps each layer's scale in
//! `(e⁻², e²)`. Both directions and the log-determinant are exact. With `d_cond > 0` the
//! couplings also see a condition `c`, giving a conditional flow `q(y | c)` (e.g. an amortised
//! posterior `q(z | y)` or a forward-KL / NPE posterior).

use crate::activation::Activation;
use crate::distributions::LN_2PI;
use crate::mlp::{Mlp, MlpConfig};
use burn::module::Param;
use burn::prelude::*;

/// Configuration of a [`RealNvp`].
#[derive(Config, Debug)]
pub struct RealNvpConfig {
    /// Dimension of `y` (at least 2).
    pub dim: usize,
    /// Coupling layers (each preceded by an ActNorm).
    #[config(default = 4)]
    pub layers: usize,
    /// Hidden widths of each coupling's network.
    #[config(default = "vec![64, 64]")]
    pub hidden: Vec<usize>,
    /// Activation of the coupling networks.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// Width of a condition vector (0: unconditional).
    #[config(default = 0)]
    pub d_cond: usize,
    /// An invertible linear layer (LU-parameterised, starting as the reversal permutation)
    /// between each ActNorm and coupling, mixing all dimensions instead of only swapping halves.
    #[config(default = false)]
    pub lu_mixing: bool,
}

/// An invertible linear map `y = x Wᵀ` with `W = P L (U + diag(e^σ))` (see the module docs).
#[derive(Module, Debug)]
pub struct InvertibleLinear {
    /// Strictly lower part of `L` (the rest is ignored), `[d, d]`.
    pub lower: Param<Tensor<2>>,
    /// Strictly upper part of `U` (the rest is ignored), `[d, d]`.
    pub upper: Param<Tensor<2>>,
    /// `σ`, `[1, d]`.
    pub log_scale: Param<Tensor<2>>,
}

impl InvertibleLinear {
    fn new(d: usize, device: &Device) -> Self {
        Self {
            lower: Param::from_tensor(Tensor::zeros([d, d], device)),
            upper: Param::from_tensor(Tensor::zeros([d, d], device)),
            log_scale: Param::from_tensor(Tensor::zeros([1, d], device)),
        }
    }

    /// `(P, L, U + diag(e^σ))`.
    fn factors(&self) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        let [d, _] = self.lower.dims();
        let device = self.lower.device();
        let eye = Tensor::<2>::eye(d, &device);
        let rev: Vec<f64> = (0..d)
            .flat_map(|i| (0..d).map(move |j| if i + j == d - 1 { 1.0 } else { 0.0 }))
            .collect();
        let p = Tensor::<2>::from_data(TensorData::new(rev, [d, d]), &device);
        let l = self.lower.val().tril(-1) + eye.clone();
        let u = self.upper.val().triu(1) + eye * self.log_scale.val().exp();
        (p, l, u)
    }

    /// `y = x Wᵀ` and `log|det W|` (the same for every row).
    pub fn forward(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let (p, l, u) = self.factors();
        let w = p.matmul(l).matmul(u);
        (x.matmul(w.transpose()), self.log_scale.val().sum())
    }

    /// `x = y W⁻ᵀ` and `log|det W⁻¹|`.
    pub fn inverse(&self, y: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let (p, l, u) = self.factors();
        // W⁻¹ = U⁻¹ L⁻¹ Pᵀ, the triangular inverses by substitution.
        let u_inv = tril_inverse(u.transpose()).transpose();
        let w_inv = u_inv.matmul(tril_inverse(l)).matmul(p.transpose());
        (
            y.matmul(w_inv.transpose()),
            self.log_scale.val().sum().neg(),
        )
    }
}

/// Inverse of a lower-triangular `[d, d]` matrix by forward substitution, row by row
/// (`X_i = (e_i − Σ_{j<i} L_ij X_j) / L_ii`; differentiable, `≈ 4d` tensor ops).
fn tril_inverse(l: Tensor<2>) -> Tensor<2> {
    let [d, _] = l.dims();
    let device = l.device();
    let eye = Tensor::<2>::eye(d, &device);
    let mut rows: Vec<Tensor<2>> = Vec::with_capacity(d);
    for i in 0..d {
        let mut r = eye.clone().slice([i..i + 1, 0..d]);
        if i > 0 {
            let prev = Tensor::cat(rows.clone(), 0); // [i, d]
            r = r - l.clone().slice([i..i + 1, 0..i]).matmul(prev);
        }
        rows.push(r / l.clone().slice([i..i + 1, i..i + 1]));
    }
    Tensor::cat(rows, 0)
}

/// One affine coupling layer.
#[derive(Module, Debug)]
pub struct AffineCoupling {
    /// `(x_a, c) ↦ [raw s, t]`.
    pub net: Mlp,
    /// Whether the first half conditions (true) or is transformed (false).
    #[module(skip)]
    pub first_conditions: bool,
}

/// A per-dimension affine layer with learned log-scale and bias.
#[derive(Module, Debug)]
pub struct ActNorm {
    /// `s`, `[1, d]`.
    pub log_scale: Param<Tensor<2>>,
    /// `b`, `[1, d]`.
    pub bias: Param<Tensor<2>>,
}

/// A RealNVP flow (see the module docs).
#[derive(Module, Debug)]
pub struct RealNvp {
    /// ActNorm before each coupling.
    pub norms: Vec<ActNorm>,
    /// Couplings.
    pub couplings: Vec<AffineCoupling>,
    /// Invertible linear layers before each coupling (empty without `lu_mixing`).
    pub mixers: Vec<InvertibleLinear>,
    /// Dimension.
    #[module(skip)]
    pub dim: usize,
    /// Condition width.
    #[module(skip)]
    pub d_cond: usize,
}

impl RealNvpConfig {
    /// Build the flow. The coupling networks' last layers start at zero, so the flow starts as
    /// the identity map.
    pub fn init(&self, device: &Device) -> RealNvp {
        assert!(self.dim >= 2, "RealNvpConfig.dim must be at least 2");
        let half = self.dim / 2;
        let couplings = (0..self.layers)
            .map(|l| {
                let first_conditions = l % 2 == 0;
                let (d_a, d_b) = if first_conditions {
                    (half, self.dim - half)
                } else {
                    (self.dim - half, half)
                };
                let mut sizes = vec![d_a + self.d_cond];
                sizes.extend(&self.hidden);
                sizes.push(2 * d_b);
                let net = MlpConfig::new(sizes)
                    .with_activation(self.activation)
                    .init(device)
                    .with_zero_last_layer();
                AffineCoupling {
                    net,
                    first_conditions,
                }
            })
            .collect();
        let norms = (0..self.layers)
            .map(|_| ActNorm {
                log_scale: Param::from_tensor(Tensor::zeros([1, self.dim], device)),
                bias: Param::from_tensor(Tensor::zeros([1, self.dim], device)),
            })
            .collect();
        let mixers = if self.lu_mixing {
            (0..self.layers)
                .map(|_| InvertibleLinear::new(self.dim, device))
                .collect()
        } else {
            Vec::new()
        };
        RealNvp {
            norms,
            couplings,
            mixers,
            dim: self.dim,
            d_cond: self.d_cond,
        }
    }
}

impl AffineCoupling {
    fn split(&self, x: Tensor<2>, dim: usize) -> (Tensor<2>, Tensor<2>) {
        let [n, _] = x.dims();
        let half = dim / 2;
        let (first, second) = (x.clone().slice([0..n, 0..half]), x.slice([0..n, half..dim]));
        if self.first_conditions {
            (first, second)
        } else {
            (second, first)
        }
    }

    fn join(&self, a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        if self.first_conditions {
            Tensor::cat(vec![a, b], 1)
        } else {
            Tensor::cat(vec![b, a], 1)
        }
    }

    fn scale_shift(&self, a: Tensor<2>, cond: Option<Tensor<2>>) -> (Tensor<2>, Tensor<2>) {
        let input = match cond {
            Some(c) => Tensor::cat(vec![a, c], 1),
            None => a,
        };
        let out = self.net.forward(input);
        let [n, w] = out.dims();
        let d_b = w / 2;
        let raw = out.clone().slice([0..n, 0..d_b]);
        let s = raw.div_scalar(2.0).tanh().mul_scalar(2.0);
        (s, out.slice([0..n, d_b..w]))
    }
}

impl RealNvp {
    fn check_cond(&self, cond: &Option<Tensor<2>>) {
        match (cond, self.d_cond) {
            (None, 0) => {}
            (Some(c), d) if d > 0 && c.dims()[1] == d => {}
            _ => panic!(
                "RealNvp: expects a condition of width {} (0: none)",
                self.d_cond
            ),
        }
    }

    /// `y = f(ε)` for `eps: [n, d]` and `log|det ∂f/∂ε|`, `[n]`.
    pub fn forward(&self, eps: Tensor<2>, cond: Option<Tensor<2>>) -> (Tensor<2>, Tensor<1>) {
        self.check_cond(&cond);
        let [n, _] = eps.dims();
        let mut x = eps;
        let mut log_det = Tensor::<1>::zeros([n], &x.device());
        for (l, (norm, c)) in self.norms.iter().zip(&self.couplings).enumerate() {
            x = x * norm.log_scale.val().exp() + norm.bias.val();
            log_det = log_det + norm.log_scale.val().sum().expand([n]);
            if let Some(m) = self.mixers.get(l) {
                let (y, ld) = m.forward(x);
                x = y;
                log_det = log_det + ld.expand([n]);
            }
            let (a, b) = c.split(x, self.dim);
            let (s, t) = c.scale_shift(a.clone(), cond.clone());
            let b = b * s.clone().exp() + t;
            log_det = log_det + s.sum_dim(1).squeeze_dim::<1>(1);
            x = c.join(a, b);
        }
        (x, log_det)
    }

    /// `ε = f⁻¹(y)` for `y: [n, d]` and `log|det ∂f⁻¹/∂y|`, `[n]`.
    pub fn inverse(&self, y: Tensor<2>, cond: Option<Tensor<2>>) -> (Tensor<2>, Tensor<1>) {
        self.check_cond(&cond);
        let [n, _] = y.dims();
        let mut x = y;
        let mut log_det = Tensor::<1>::zeros([n], &x.device());
        for (l, (norm, c)) in self.norms.iter().zip(&self.couplings).enumerate().rev() {
            let (a, b) = c.split(x, self.dim);
            let (s, t) = c.scale_shift(a.clone(), cond.clone());
            let b = (b - t) * s.clone().neg().exp();
            log_det = log_det - s.sum_dim(1).squeeze_dim::<1>(1);
            x = c.join(a, b);
            if let Some(m) = self.mixers.get(l) {
                let (y, ld) = m.inverse(x);
                x = y;
                log_det = log_det + ld.expand([n]);
            }
            x = (x - norm.bias.val()) * norm.log_scale.val().neg().exp();
            log_det = log_det - norm.log_scale.val().sum().expand([n]);
        }
        (x, log_det)
    }

    /// `log q(y | c)`, `[n]`.
    pub fn log_prob(&self, y: Tensor<2>, cond: Option<Tensor<2>>) -> Tensor<1> {
        let (eps, log_det) = self.inverse(y, cond);
        standard_log_density(eps) + log_det
    }

    /// Reparameterised samples `y = f(ε)` with their `log q(y | c)`, `[n, d]` and `[n]`.
    pub fn rsample_with_log_prob(
        &self,
        eps: Tensor<2>,
        cond: Option<Tensor<2>>,
    ) -> (Tensor<2>, Tensor<1>) {
        let base = standard_log_density(eps.clone());
        let (y, log_det) = self.forward(eps, cond);
        (y, base - log_det)
    }
}

/// `log N(ε; 0, I)` per row.
fn standard_log_density(eps: Tensor<2>) -> Tensor<1> {
    let [_, d] = eps.dims();
    eps.powi_scalar(2)
        .sum_dim(1)
        .squeeze_dim::<1>(1)
        .add_scalar(d as f64 * LN_2PI)
        .mul_scalar(-0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f64_device, normals, tensor, vec};
    use burn::optim::{AdamConfig, GradientsParams};

    /// A flow with non-trivial couplings: random last layers instead of zeros.
    fn random_flow(dim: usize, d_cond: usize, device: &Device) -> RealNvp {
        let mut f = RealNvpConfig::new(dim)
            .with_lu_mixing(d_cond > 0)
            .with_layers(3)
            .with_hidden(vec![8])
            .with_d_cond(d_cond)
            .init(device);
        // Every weight is seeded here: `init` draws from the device RNG, which other tests in
        // the process share, so a flow left to it would differ (and could be near volume
        // preserving) from run to run.
        for (i, c) in f.couplings.iter_mut().enumerate() {
            for (j, layer) in c.net.layers.iter_mut().enumerate() {
                let seed = 100 * (i as u64 + 1) + 2 * j as u64;
                let w = normals(layer.weight.val().dims(), seed, device).mul_scalar(0.4);
                layer.weight = Param::from_tensor(w);
                if let Some(b) = layer.bias.as_mut() {
                    *b = Param::from_tensor(
                        normals(b.val().dims(), seed + 1, device).mul_scalar(0.1),
                    );
                }
            }
        }
        for (i, m) in f.mixers.iter_mut().enumerate() {
            let r = |k: u64, shape: [usize; 2]| {
                Param::from_tensor(normals(shape, 40 + 3 * i as u64 + k, device).mul_scalar(0.3))
            };
            m.lower = r(0, [dim, dim]);
            m.upper = r(1, [dim, dim]);
            m.log_scale = r(2, [1, dim]);
        }
        for (i, n) in f.norms.iter_mut().enumerate() {
            n.log_scale =
                Param::from_tensor(normals([1, dim], 20 + i as u64, device).mul_scalar(0.3));
            n.bias = Param::from_tensor(normals([1, dim], 30 + i as u64, device));
        }
        f
    }

    fn log_abs_det(mut a: Vec<Vec<f64>>) -> f64 {
        // LU with partial pivoting.
        let n = a.len();
        let mut total = 0.0;
        for k in 0..n {
            let p = (k..n)
                .max_by(|&i, &j| a[i][k].abs().total_cmp(&a[j][k].abs()))
                .unwrap();
            a.swap(k, p);
            total += a[k][k].abs().ln();
            for i in k + 1..n {
                let f = a[i][k] / a[k][k];
                for j in k..n {
                    a[i][j] -= f * a[k][j];
                }
            }
        }
        total
    }

    #[test]
    fn log_det_matches_finite_differences_and_inverse_inverts() {
        let dev = f64_device();
        // (5, 2): conditional, with random LU mixing layers.
        for (dim, d_cond) in [(4, 0), (5, 2)] {
            let flow = random_flow(dim, d_cond, &dev);
            let cond = (d_cond > 0).then(|| normals([1, d_cond], 7, &dev));
            let eps0 = vec(normals([1, dim], 3, &dev));
            let f = |e: &[f64]| -> Vec<f64> {
                vec(flow
                    .forward(tensor(e.to_vec(), [1, dim], &dev), cond.clone())
                    .0)
            };
            let h = 1e-6;
            // J[i][j] = ∂y_i/∂ε_j by central differences.
            let mut jac = vec![vec![0.0; dim]; dim];
            for j in 0..dim {
                let (mut p, mut m) = (eps0.clone(), eps0.clone());
                p[j] += h;
                m[j] -= h;
                let (yp, ym) = (f(&p), f(&m));
                for i in 0..dim {
                    jac[i][j] = (yp[i] - ym[i]) / (2.0 * h);
                }
            }
            let (y, log_det) = flow.forward(tensor(eps0.clone(), [1, dim], &dev), cond.clone());
            let ld = vec(log_det)[0];
            let fd = log_abs_det(jac);
            assert!((ld - fd).abs() < 1e-6, "dim {dim}: log det {ld} vs FD {fd}");
            assert!(
                ld.abs() > 0.1,
                "the test needs a non-volume-preserving flow"
            );
            let (back, inv_ld) = flow.inverse(y, cond.clone());
            let back = vec(back);
            for (a, b) in back.iter().zip(&eps0) {
                assert!((a - b).abs() < 1e-10, "inverse: {back:?} vs {eps0:?}");
            }
            assert!((vec(inv_ld)[0] + ld).abs() < 1e-10);
        }
    }

    #[test]
    fn flow_fitted_to_a_banana_reaches_its_entropy() {
        // x1 ~ N(0, 1), x2 = x1²/2 + 0.3 ε: H = ½ ln(2πe) + ½ ln(2πe · 0.09). Maximum likelihood
        // on fresh batches; the test NLL on 20 000 new samples must be within 0.05 nats of H.
        let dev = f64_device();
        let ad = dev.clone().autodiff();
        let banana = |n: usize, seed: u64, device: &Device| {
            let z = vec(normals([n, 2], seed, device));
            let v: Vec<f64> = z
                .chunks(2)
                .flat_map(|r| [r[0], 0.5 * r[0] * r[0] + 0.3 * r[1]])
                .collect();
            tensor(v, [n, 2], device)
        };
        let mut flow = RealNvpConfig::new(2)
            .with_layers(4)
            .with_hidden(vec![32, 32])
            .init(&ad);
        let mut opt = AdamConfig::new().init();
        let steps = 1500;
        for step in 0..steps {
            let x = banana(256, 1000 + step as u64, &ad);
            let loss = flow.log_prob(x, None).mean().neg();
            let grads = GradientsParams::from_grads(loss.backward(), &flow);
            let lr = 1e-4
                + 0.5
                    * (3e-3 - 1e-4)
                    * (1.0 + (std::f64::consts::PI * step as f64 / steps as f64).cos());
            flow = opt.step(lr, flow, grads);
        }
        let test = banana(20_000, 7, &dev);
        let nll = -vec(flow.valid().log_prob(test, None).mean())[0];
        let e = std::f64::consts::E;
        let h = 0.5 * (2.0 * std::f64::consts::PI * e).ln()
            + 0.5 * (2.0 * std::f64::consts::PI * e * 0.09).ln();
        eprintln!("banana: test NLL {nll:.4}, entropy {h:.4}");
        assert!(
            nll - h < 0.05 && nll - h > -0.03,
            "test NLL {nll} vs entropy {h}"
        );
    }
}
