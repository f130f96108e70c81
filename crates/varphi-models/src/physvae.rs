//! Physics-integrated VAE (Takeishi & Kalousis, NeurIPS 2021; primer §3.1 "physics-model
//! decoders"): the latent splits into physical parameters `z_phys`, decoded by a known forward
//! map `G†` (an ODE/PDE solver written in tensor ops, e.g. `Pendulum::forward_map` or
//! `AdvectionDiffusion::forward_map`), and auxiliary codes `z_aux`, decoded by a network that
//! corrects what the (incomplete) physics cannot explain:
//!
//! ```text
//! q(s, z_aux | y) = N(μ_φ(y), diag σ_φ²(y)),    p(s) = p(z_aux) = N(0, I)
//!   (optionally q(s | y) a flow on top of its Gaussian: `PhysVaeConfig::flow`)
//! θ_phys = lo + (hi − lo) ⊙ sigmoid(s)            (a bounded physical parameter per latent)
//! x_phys = G†(θ_phys),   x = x_phys + g_ψ([x_phys, z_aux])
//! ```
//!
//! `g_ψ`'s last layer starts at zero, so an untrained model decodes by physics alone. The
//! objective with its regularisers is `varphi_losses::PhysVaeLoss`; the forward map is passed
//! to [`PhysVae::forward`] as a closure, so the module stays a plain Burn module whatever the
//! physics.

use crate::activation::Activation;
use crate::distributions::{DiagGaussian, VariationalFamily};
use crate::flow_posterior::{AmortisedQ, PosteriorFlow, PosteriorFlowConfig};
use crate::mlp::{Mlp, MlpConfig};
use burn::prelude::*;

/// Configuration of a [`PhysVae`].
#[derive(Config, Debug)]
pub struct PhysVaeConfig {
    /// Width of the encoder's input (the observations, normalised by the caller).
    pub obs_dim: usize,
    /// Width of the physics output `G†(θ_phys)` that the auxiliary decoder corrects.
    pub out_dim: usize,
    /// `[lo, hi]` of each physical parameter: `θ_phys = lo + (hi − lo)·sigmoid(s)`.
    pub ranges: Vec<[f64; 2]>,
    /// Auxiliary latent dimension (0: physics only, no correction network).
    #[config(default = 2)]
    pub aux_dim: usize,
    /// Hidden widths of the encoder and of the auxiliary decoder.
    #[config(default = "vec![128, 128]")]
    pub hidden: Vec<usize>,
    /// Activation.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// A flow on top of `q(s | y)`'s Gaussian (`None`: Gaussian; needs ≥ 2 physical
    /// parameters). `z_aux` keeps its Gaussian, so the marginal `q(s | y)` stays exact.
    #[config(default = "None")]
    pub flow: Option<PosteriorFlowConfig>,
}

/// The physics-integrated VAE (see the module docs).
#[derive(Module, Debug)]
pub struct PhysVae {
    /// `y ↦ [μ_s, log σ_s², μ_aux, log σ_aux²]`.
    pub encoder: Mlp,
    /// `[x_phys, z_aux] ↦ correction` (absent when `aux_dim = 0`).
    pub aux_decoder: Option<Mlp>,
    /// Flow posterior of the physical latents, if any.
    pub flow: Option<PosteriorFlow>,
    /// Lower bounds of the physical parameters.
    #[module(skip)]
    pub lo: Vec<f64>,
    /// `hi − lo`.
    #[module(skip)]
    pub span: Vec<f64>,
    /// Auxiliary latent dimension.
    #[module(skip)]
    pub aux_dim: usize,
}

/// Output of [`PhysVae::forward`].
#[derive(Debug, Clone)]
pub struct PhysVaeOutput {
    /// `q(s | y)` over the unconstrained physical latents (Gaussian or flow).
    pub q_phys: AmortisedQ,
    /// The sample `s ~ q(s | y)`, `[b, p]`.
    pub s: Tensor<2>,
    /// `log q(s | y)` of that sample, `[b]`, for a flow posterior (whose KL is estimated from
    /// it; `None` for the Gaussian, whose KL is closed-form).
    pub log_q_phys: Option<Tensor<1>>,
    /// `q(z_aux | y)` (when `aux_dim > 0`).
    pub q_aux: Option<DiagGaussian>,
    /// The physical parameters the sample decodes through `G†`, `[b, p]`.
    pub params: Tensor<2>,
    /// `G†(θ_phys)`, `[b, out_dim]`.
    pub x_phys: Tensor<2>,
    /// The full reconstruction `x_phys + g_ψ([x_phys, z_aux])`, `[b, out_dim]`.
    pub x: Tensor<2>,
}

impl PhysVaeConfig {
    /// Build the model.
    ///
    /// # Panics
    /// If `ranges` is empty or a range is not `lo < hi`.
    pub fn init(&self, device: &Device) -> PhysVae {
        assert!(
            !self.ranges.is_empty(),
            "PhysVaeConfig.ranges needs one [lo, hi] per physical parameter"
        );
        for r in &self.ranges {
            assert!(
                r[0] < r[1] && r[0].is_finite() && r[1].is_finite(),
                "PhysVaeConfig.ranges: each range must be finite with lo < hi, got {r:?}"
            );
        }
        let p = self.ranges.len();
        let sizes = |i: usize, o: usize| {
            let mut s = vec![i];
            s.extend(&self.hidden);
            s.push(o);
            s
        };
        let encoder = MlpConfig::new(sizes(self.obs_dim, 2 * (p + self.aux_dim)))
            .with_activation(self.activation)
            .init(device);
        let aux_decoder = (self.aux_dim > 0).then(|| {
            MlpConfig::new(sizes(self.out_dim + self.aux_dim, self.out_dim))
                .with_activation(self.activation)
                .init(device)
                .with_zero_last_layer()
        });
        PhysVae {
            encoder,
            aux_decoder,
            flow: self.flow.as_ref().map(|f| f.init(p, device)),
            lo: self.ranges.iter().map(|r| r[0]).collect(),
            span: self.ranges.iter().map(|r| r[1] - r[0]).collect(),
            aux_dim: self.aux_dim,
        }
    }
}

impl PhysVae {
    /// Number of physical parameters.
    pub fn phys_dim(&self) -> usize {
        self.lo.len()
    }

    fn row(&self, v: &[f64], device: &Device) -> Tensor<2> {
        Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), device).unsqueeze_dim(0)
    }

    /// `q(s | y)` and `q(z_aux | y)` for encoder inputs `y: [b, obs_dim]`.
    pub fn encode(&self, y: Tensor<2>) -> (AmortisedQ, Option<DiagGaussian>) {
        let (p, a) = (self.phys_dim(), self.aux_dim);
        let h = self.encoder.forward(y);
        let part = |o: usize, w: usize| h.clone().narrow(1, o, w);
        let base = DiagGaussian::new(part(0, p), part(p, p));
        let q_phys = match &self.flow {
            None => AmortisedQ::Gaussian(base),
            Some(f) => AmortisedQ::Flow(f.forward(base)),
        };
        let q_aux = (a > 0).then(|| DiagGaussian::new(part(2 * p, a), part(2 * p + a, a)));
        (q_phys, q_aux)
    }

    /// `θ_phys = lo + (hi − lo)·sigmoid(s)`, `[b, p]`.
    pub fn to_physical(&self, s: Tensor<2>) -> Tensor<2> {
        let device = s.device();
        burn::tensor::activation::sigmoid(s) * self.row(&self.span, &device)
            + self.row(&self.lo, &device)
    }

    /// The inverse of [`to_physical`](Self::to_physical): `s = logit((θ − lo)/(hi − lo))`.
    pub fn to_latent(&self, params: Tensor<2>) -> Tensor<2> {
        let device = params.device();
        let u = (params - self.row(&self.lo, &device)) / self.row(&self.span, &device);
        (u.clone() / u.neg().add_scalar(1.0)).log()
    }

    /// Decode physical parameters and auxiliary codes: `(x_phys, x)`.
    pub fn decode(
        &self,
        params: Tensor<2>,
        z_aux: Option<Tensor<2>>,
        physics: &dyn Fn(Tensor<2>) -> Tensor<2>,
    ) -> (Tensor<2>, Tensor<2>) {
        let x_phys = physics(params);
        let x = match (&self.aux_decoder, z_aux) {
            (Some(net), Some(z)) => {
                x_phys.clone() + net.forward(Tensor::cat(vec![x_phys.clone(), z], 1))
            }
            (None, _) => x_phys.clone(),
            (Some(_), None) => panic!("PhysVae::decode: the model has z_aux; pass it"),
        };
        (x_phys, x)
    }

    /// Encode `y`, draw `s = T_φ(ε_phys)` (`μ + σ ε_phys` without a flow) and
    /// `z_aux = μ + σ ε_aux`, decode.
    ///
    /// # Shapes
    /// `y: [b, obs_dim]`, `eps_phys: [b, p]`, `eps_aux: [b, aux_dim]` (ignored when 0).
    pub fn forward(
        &self,
        y: Tensor<2>,
        eps_phys: Tensor<2>,
        eps_aux: Tensor<2>,
        physics: &dyn Fn(Tensor<2>) -> Tensor<2>,
    ) -> PhysVaeOutput {
        let (q_phys, q_aux) = self.encode(y);
        let eps = eps_phys.unsqueeze::<3>();
        let (s, log_q) = if q_phys.has_analytic_kl() {
            (q_phys.rsample(eps), None)
        } else {
            let (s, log_q) = q_phys.rsample_with_log_prob(eps);
            (s, Some(log_q.squeeze_dim::<1>(0)))
        };
        let s = s.squeeze_dim::<2>(0);
        let params = self.to_physical(s.clone());
        let z_aux = q_aux.as_ref().map(|q| q.mean.clone() + q.std() * eps_aux);
        let (x_phys, x) = self.decode(params.clone(), z_aux, physics);
        PhysVaeOutput {
            q_phys,
            s,
            log_q_phys: log_q,
            q_aux,
            params,
            x_phys,
            x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f64_device, normals, tensor, vec};

    #[test]
    fn physical_transform_inverts_and_untrained_decoder_is_pure_physics() {
        let dev = f64_device();
        let model = PhysVaeConfig::new(4, 3, vec![[0.0, 3.0], [-1.0, 1.0]])
            .with_hidden(vec![8])
            .init(&dev);
        let s = normals([5, 2], 1, &dev);
        let p = model.to_physical(s.clone());
        for (i, v) in vec(p.clone()).iter().enumerate() {
            let r = [[0.0, 3.0], [-1.0, 1.0]][i % 2];
            assert!(*v > r[0] && *v < r[1]);
        }
        let back = vec(model.to_latent(p));
        for (a, b) in back.iter().zip(vec(s)) {
            assert!((a - b).abs() < 1e-10);
        }
        // G†(θ) = [θ0 + θ1, θ0θ1, θ0²]: the untrained correction is exactly zero.
        let physics = |t: Tensor<2>| {
            let (a, b) = (t.clone().narrow(1, 0, 1), t.narrow(1, 1, 1));
            Tensor::cat(
                vec![a.clone() + b.clone(), a.clone() * b, a.powi_scalar(2)],
                1,
            )
        };
        let y = normals([5, 4], 2, &dev);
        let out = model.forward(
            y,
            normals([5, 2], 3, &dev),
            normals([5, 2], 4, &dev),
            &physics,
        );
        assert_eq!(vec(out.x.clone()), vec(out.x_phys.clone()));
        let want = vec(physics(out.params));
        assert_eq!(vec(out.x_phys), want);
        let q_aux = out.q_aux.expect("aux_dim = 2");
        assert_eq!(q_aux.mean.dims(), [5, 2]);
        // Physics only: no correction network at all.
        let bare = PhysVaeConfig::new(4, 3, vec![[0.0, 1.0], [0.0, 1.0]])
            .with_aux_dim(0)
            .init(&dev);
        assert!(bare.aux_decoder.is_none());
        let (_, x) = bare.decode(tensor(vec![0.5, 0.5], [1, 2], &dev), None, &physics);
        assert_eq!(vec(x), [1.0, 0.25, 0.25]);
    }
}
