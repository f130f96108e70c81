//! Pointwise activations with their first and second derivatives.
//!
//! The derivatives drive Taylor-mode propagation in [`crate::Mlp::forward_with_derivatives`].

use burn::prelude::*;
use burn::tensor::activation::{gelu, relu, sigmoid, silu, softplus};
use std::f64::consts::PI;

/// An elementwise activation σ.
///
/// ```text
/// tanh:     σ' = 1 − σ²,            σ'' = −2σσ'
/// sin:      σ' = cos h,             σ'' = −sin h
/// softplus: σ' = s = sigmoid(h),    σ'' = s(1 − s)
/// gelu:     σ = hΦ(h), σ' = Φ + hφ, σ'' = φ(2 − h²)
/// silu:     σ = hs,  σ' = s(1 + h(1 − s)),  σ'' = s(1 − s)(2 + h(1 − 2s))
/// relu:     σ' = 1[h > 0],          σ'' = 0
/// ```
#[derive(burn::config::Config, Debug, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(h, 0)`; second derivative 0 (not suited to second-order residuals).
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// `sin(h)` (SIREN-style).
    Sin,
    /// `log(1 + exp h)`.
    Softplus,
    /// Exact (erf) GELU.
    Gelu,
    /// `h · sigmoid(h)` (a.k.a. swish).
    Silu,
    /// No activation.
    Identity,
}

impl Activation {
    /// σ(h).
    pub fn forward<const D: usize>(&self, h: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => relu(h),
            Activation::Tanh => h.tanh(),
            Activation::Sin => h.sin(),
            Activation::Softplus => softplus(h, 1.0),
            Activation::Gelu => gelu(h),
            Activation::Silu => silu(h),
            Activation::Identity => h,
        }
    }

    /// `(σ(h), σ'(h), σ''(h))`, sharing intermediate results.
    pub fn forward_d2<const D: usize>(&self, h: Tensor<D>) -> [Tensor<D>; 3] {
        match self {
            Activation::Relu => {
                let mask = h.clone().greater_elem(0.0).float();
                let zero = h.zeros_like();
                [relu(h), mask, zero]
            }
            Activation::Tanh => {
                let t = h.tanh();
                let d1 = t.clone().powi_scalar(2).neg().add_scalar(1.0);
                let d2 = t.clone().mul(d1.clone()).mul_scalar(-2.0);
                [t, d1, d2]
            }
            Activation::Sin => {
                let s = h.clone().sin();
                [s.clone(), h.cos(), s.neg()]
            }
            Activation::Softplus => {
                let s = sigmoid(h.clone());
                let d2 = s.clone() * s.clone().neg().add_scalar(1.0);
                [softplus(h, 1.0), s, d2]
            }
            Activation::Gelu => {
                let cdf = h
                    .clone()
                    .mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
                    .erf()
                    .add_scalar(1.0)
                    .mul_scalar(0.5);
                let pdf = h
                    .clone()
                    .powi_scalar(2)
                    .mul_scalar(-0.5)
                    .exp()
                    .mul_scalar(1.0 / (2.0 * PI).sqrt());
                let value = h.clone() * cdf.clone();
                let d1 = cdf + h.clone() * pdf.clone();
                let d2 = pdf * h.powi_scalar(2).neg().add_scalar(2.0);
                [value, d1, d2]
            }
            Activation::Silu => {
                let s = sigmoid(h.clone());
                let one_minus = s.clone().neg().add_scalar(1.0);
                let value = h.clone() * s.clone();
                let d1 = s.clone() * (h.clone() * one_minus.clone()).add_scalar(1.0);
                let d2 = s.clone()
                    * one_minus
                    * (h * s.mul_scalar(-2.0).add_scalar(1.0)).add_scalar(2.0);
                [value, d1, d2]
            }
            Activation::Identity => [h.clone(), h.ones_like(), h.zeros_like()],
        }
    }
}
