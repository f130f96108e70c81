//! Coordinate (PINN-style) decoders `u(x; z)`: an MLP of the coordinates and the latent code,
//! whose derivatives with respect to the coordinates come from Taylor mode, so residuals of
//! PDEs can be evaluated at collocation points with first-order autodiff only.

use crate::activation::Activation;
use crate::mlp::{Jet, Mlp, MlpConfig};
use burn::prelude::*;

/// Configuration of a [`CoordinateDecoder`].
#[derive(Config, Debug)]
pub struct CoordinateDecoderConfig {
    /// Number of coordinates `c` (1 for `x`, 2 for `(x, t)` or `(x, y)`).
    pub coords: usize,
    /// Latent dimension `k`.
    pub latent: usize,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// Output channels.
    #[config(default = 1)]
    pub out: usize,
    /// Hidden activation (smooth, since second derivatives are used).
    #[config(default = "Activation::Tanh")]
    pub activation: Activation,
}

/// `u(x; z) = MLP([x, z])`.
///
/// # Shapes
/// - `x`: `[n, c]` collocation points (shared by the batch)
/// - `z`: `[b, k]` latent codes
/// - rows of the outputs are ordered sample-major: row `i·n + j` is `(z_i, x_j)`
#[derive(Module, Debug)]
pub struct CoordinateDecoder {
    /// The network; its first `c` inputs are the coordinates.
    pub mlp: Mlp,
    /// Number of coordinates.
    pub coords: usize,
}

impl CoordinateDecoderConfig {
    /// Build the decoder.
    pub fn init(&self, device: &Device) -> CoordinateDecoder {
        let mut sizes = vec![self.coords + self.latent];
        sizes.extend(&self.hidden);
        sizes.push(self.out);
        CoordinateDecoder {
            mlp: MlpConfig::new(sizes)
                .with_activation(self.activation)
                .init(device),
            coords: self.coords,
        }
    }
}

impl CoordinateDecoder {
    /// Every `(z_i, x_j)` pair as one input row `[x_j, z_i]`, `[b·n, c + k]`.
    pub fn inputs(&self, x: Tensor<2>, z: Tensor<2>) -> Tensor<2> {
        let ([n, c], [b, k]) = (x.dims(), z.dims());
        assert_eq!(
            c, self.coords,
            "CoordinateDecoder: x must be [n, {}], got [n, {c}]",
            self.coords
        );
        let xs = x.unsqueeze_dim::<3>(0).expand([b, n, c]);
        let zs = z.unsqueeze_dim::<3>(1).expand([b, n, k]);
        Tensor::cat(vec![xs, zs], 2).reshape([b * n, c + k])
    }

    /// `u(x_j; z_i)`, `[b, n, out]`.
    pub fn forward(&self, x: Tensor<2>, z: Tensor<2>) -> Tensor<3> {
        let (n, b) = (x.dims()[0], z.dims()[0]);
        let y = self.mlp.forward(self.inputs(x, z));
        let out = y.dims()[1];
        y.reshape([b, n, out])
    }

    /// Value, gradient and Hessian with respect to the coordinates at every `(z_i, x_j)`
    /// (rows sample-major, see [`Jet`]).
    pub fn forward_with_derivatives(&self, x: Tensor<2>, z: Tensor<2>) -> Jet {
        self.mlp
            .forward_with_derivatives(self.inputs(x, z), self.coords)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f64_device, tensor, vec};
    use burn::module::Param;

    #[test]
    fn taylor_residual_equals_the_analytic_residual() {
        // u(x; z) = Σ_j a_j tanh(w_j x + v_j z + b_j) + c, a known function of x and z; the
        // residual r = −u_xx + u u_x − sin(x) from the Taylor-mode jet must equal its closed form.
        let dev = f64_device();
        let mut dec = CoordinateDecoderConfig::new(1, 1, vec![2]).init(&dev);
        let (w, v, b, a, c) = ([1.3, -0.7], [0.5, 1.1], [0.2, -0.3], [0.8, -1.4], 0.25);
        dec.mlp.layers[0].weight =
            Param::from_tensor(tensor(vec![w[0], w[1], v[0], v[1]], [2, 2], &dev));
        dec.mlp.layers[0].bias = Some(Param::from_tensor(tensor(b.to_vec(), [2], &dev)));
        dec.mlp.layers[1].weight = Param::from_tensor(tensor(a.to_vec(), [2, 1], &dev));
        dec.mlp.layers[1].bias = Some(Param::from_tensor(tensor(vec![c], [1], &dev)));
        let xs = [-0.9, 0.1, 0.6, 1.7];
        let zs = [0.4, -1.2];
        let jet = dec.forward_with_derivatives(
            tensor(xs.to_vec(), [4, 1], &dev),
            tensor(zs.to_vec(), [2, 1], &dev),
        );
        let x_col = tensor(xs.repeat(2), [8, 1], &dev);
        let r = vec(jet.d2(0, 0).neg() + jet.value.clone() * jet.d(0) - x_col.sin());
        for (i, &z) in zs.iter().enumerate() {
            for (j, &x) in xs.iter().enumerate() {
                let (mut u, mut ux, mut uxx) = (c, 0.0, 0.0);
                for k in 0..2 {
                    let t = (w[k] * x + v[k] * z + b[k]).tanh();
                    u += a[k] * t;
                    ux += a[k] * w[k] * (1.0 - t * t);
                    uxx += a[k] * w[k] * w[k] * (-2.0 * t * (1.0 - t * t));
                }
                let want = -uxx + u * ux - x.sin();
                assert!(
                    (r[i * 4 + j] - want).abs() < 1e-12,
                    "z={z}, x={x}: {} vs {want}",
                    r[i * 4 + j]
                );
            }
        }
        assert_eq!(
            dec.forward(
                tensor(xs.to_vec(), [4, 1], &dev),
                tensor(zs.to_vec(), [2, 1], &dev)
            )
            .dims(),
            [2, 4, 1]
        );
    }
}
