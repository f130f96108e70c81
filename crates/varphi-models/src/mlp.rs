//! Multi-layer perceptron with Taylor-mode input derivatives.

use crate::activation::Activation;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

/// Configuration of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Layer widths including input and output, e.g. `[2, 64, 64, 1]` (at least two entries).
    pub sizes: Vec<usize>,
    /// Activation between hidden layers (none after the last layer).
    #[config(default = "Activation::Tanh")]
    pub activation: Activation,
}

/// A fully connected network `x ↦ W_L σ(… σ(W_1 x + b_1) …) + b_L`.
///
/// Besides [`forward`](Mlp::forward), [`forward_with_derivatives`](Mlp::forward_with_derivatives)
/// returns exact first and second derivatives of the output with respect to chosen input
/// coordinates, propagated forward through the layers (Taylor mode). Burn 0.22's autodiff is
/// first-order only; these derivatives are ordinary tensors, so training on a PDE residual built
/// from them needs only first-order autodiff.
#[derive(Module, Debug)]
pub struct Mlp {
    /// The affine layers.
    pub layers: Vec<Linear>,
    /// Hidden activation.
    #[module(skip)]
    pub activation: Activation,
}

/// Output of [`Mlp::forward_with_derivatives`].
///
/// # Shapes
/// `value: [n, out]`, `grad: [n, c, out]` with `grad[i, k, j] = ∂y_j/∂x_k`,
/// `hessian: [n, c, c, out]` with `hessian[i, k, l, j] = ∂²y_j/∂x_k∂x_l`, where `c` is the number
/// of differentiated input coordinates.
#[derive(Debug, Clone)]
pub struct Jet {
    /// Network output.
    pub value: Tensor<2>,
    /// First derivatives.
    pub grad: Tensor<3>,
    /// Second derivatives (symmetric in the two coordinate axes).
    pub hessian: Tensor<4>,
}

impl Jet {
    /// `∂y/∂x_k`, `[n, out]`.
    pub fn d(&self, k: usize) -> Tensor<2> {
        let [n, _, o] = self.grad.dims();
        self.grad
            .clone()
            .slice([0..n, k..k + 1, 0..o])
            .reshape([n, o])
    }

    /// `∂²y/∂x_k∂x_l`, `[n, out]`.
    pub fn d2(&self, k: usize, l: usize) -> Tensor<2> {
        let [n, _, _, o] = self.hessian.dims();
        self.hessian
            .clone()
            .slice([0..n, k..k + 1, l..l + 1, 0..o])
            .reshape([n, o])
    }

    /// Laplacian `Σ_k ∂²y/∂x_k²`, `[n, out]`.
    pub fn laplacian(&self) -> Tensor<2> {
        let c = self.grad.dims()[1];
        (0..c)
            .map(|k| self.d2(k, k))
            .reduce(|a, b| a + b)
            .expect("at least one coordinate")
    }
}

impl MlpConfig {
    /// Build the network with burn's default (Kaiming-uniform) initialisation.
    pub fn init(&self, device: &Device) -> Mlp {
        assert!(
            self.sizes.len() >= 2,
            "MlpConfig.sizes needs input and output widths, got {:?}",
            self.sizes
        );
        let layers = self
            .sizes
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        Mlp {
            layers,
            activation: self.activation,
        }
    }
}

impl Mlp {
    /// The same network with its last layer's weights and bias set to zero, so that it starts
    /// as the constant 0 (identity-initialised flow couplings, correction networks).
    pub fn with_zero_last_layer(mut self) -> Self {
        let last = self.layers.last_mut().expect("an Mlp has a layer");
        last.weight = burn::module::Param::from_tensor(last.weight.val().zeros_like());
        if let Some(b) = &last.bias {
            last.bias = Some(burn::module::Param::from_tensor(b.val().zeros_like()));
        }
        self
    }

    /// Input width.
    pub fn d_input(&self) -> usize {
        self.layers[0].weight.dims()[0]
    }

    /// Output width.
    pub fn d_output(&self) -> usize {
        self.layers[self.layers.len() - 1].weight.dims()[1]
    }

    /// `y = f(x)` for `x: [..., d_input]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = self.activation.forward(h);
            }
        }
        h
    }

    /// Value, gradient and Hessian of the output w.r.t. the first `n_coords` input columns.
    ///
    /// `x: [n, d_input]`; columns `n_coords..` (e.g. a latent code) are inputs too but are not
    /// differentiated. Propagation per layer:
    ///
    /// ```text
    /// affine  h = xW + b:  ∂h = ∂x W,   ∂²h = ∂²x W
    /// σ:      a = σ(h):    ∂a = σ'(h) ∂h,
    ///                      ∂_k∂_l a = σ''(h) ∂_k h ∂_l h + σ'(h) ∂_k∂_l h
    /// ```
    pub fn forward_with_derivatives(&self, x: Tensor<2>, n_coords: usize) -> Jet {
        let [n, d_in] = x.dims();
        assert_eq!(
            d_in,
            self.d_input(),
            "Mlp::forward_with_derivatives: x has {d_in} columns, expected {}",
            self.d_input()
        );
        assert!(
            n_coords >= 1 && n_coords <= d_in,
            "n_coords must be in 1..={d_in}, got {n_coords}"
        );
        let c = n_coords;
        let device = x.device();
        let last = self.layers.len() - 1;

        // Seed: ∂x/∂x_k = e_k for the first c columns; ∂²x = 0. The first affine layer is applied
        // to the seed directly: ∂h = rows of W.
        let first = &self.layers[0];
        let w0 = first.weight.val(); // [d_in, w]
        let width0 = w0.dims()[1];
        let mut value = first.forward(x);
        let mut grad: Tensor<3> = w0
            .slice([0..c, 0..width0])
            .unsqueeze::<3>()
            .expand([n, c, width0]);
        let mut hess: Tensor<4> = Tensor::zeros([n, c, c, width0], &device);

        for i in 0..=last {
            if i > 0 {
                let layer = &self.layers[i];
                let w = layer.weight.val();
                let [w_in, w_out] = w.dims();
                value = layer.forward(value);
                grad = grad
                    .reshape([n * c, w_in])
                    .matmul(w.clone())
                    .reshape([n, c, w_out]);
                hess = hess
                    .reshape([n * c * c, w_in])
                    .matmul(w)
                    .reshape([n, c, c, w_out]);
            }
            if i < last {
                let [a, d1, d2] = self.activation.forward_d2(value);
                let width = a.dims()[1];
                let d1_3 = d1.clone().unsqueeze_dim::<3>(1); // [n,1,w]
                let d1_4 = d1.unsqueeze_dim::<3>(1).unsqueeze_dim::<4>(1); // [n,1,1,w]
                let d2_4 = d2.unsqueeze_dim::<3>(1).unsqueeze_dim::<4>(1);
                let outer = grad.clone().unsqueeze_dim::<4>(2) * grad.clone().unsqueeze_dim::<4>(1); // [n,c,c,w]
                hess = d2_4 * outer + d1_4 * hess;
                grad = d1_3 * grad;
                value = a;
                debug_assert_eq!(grad.dims(), [n, c, width]);
            }
        }
        Jet {
            value,
            grad,
            hessian: hess,
        }
    }
}
