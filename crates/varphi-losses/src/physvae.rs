//! The objective of the physics-integrated VAE ([`varphi_models::PhysVae`], Takeishi &
//! Kalousis 2021): a Gaussian-likelihood ELBO over `(z_phys, z_aux)` plus the two regularisers
//! that keep the physics in charge of what it can explain.

use varphi_models::distributions::LN_2PI;
use varphi_models::{AmortisedQ, DiagGaussian, PhysVaeOutput, VariationalFamily};

use burn::prelude::*;

/// Loss of a physics-integrated VAE, per sample (then averaged over the batch):
///
/// ```text
/// L = −log N(y; x, σ² I) + β [KL(q(s|y) ‖ N(0,I)) + KL(q(z_aux|y) ‖ N(0,I))]
///     + λ_aux ‖x − x_phys‖² / 2σ²                                  (correction penalty)
/// ```
/// Both KLs are closed-form for Gaussians; a flow `q(s|y)` uses the one-sample estimate
/// `log q(s|y) − log N(s; 0, I)` at the decoded sample `s`. With a learned noise scale
/// ([`forward_with_noise`](Self::forward_with_noise)) `σ` is a parameter in both the likelihood
/// and the penalty: it grows to the decoder's misfit (model error), which widens `q`.
///
/// The first two terms are the negative ELBO (primer eq. 12 with the physics-model decoder of
/// §3.1); the correction penalty is phys-vae's `R_DA`: the auxiliary network pays for every unit
/// of signal it explains in the same currency as the data misfit, weighted by `λ_aux`, so a
/// sufficient physics model leaves it idle. The physics-augmentation regulariser
/// ([`augmentation`](Self::augmentation)) is added by the caller on simulated physics-only
/// data.
#[derive(Debug, Clone, Copy)]
pub struct PhysVaeLoss {
    /// Observation noise `σ` (the data's units).
    pub sigma: f64,
    /// KL weight `β`.
    pub beta: f64,
    /// Correction-penalty weight `λ_aux`.
    pub aux_weight: f64,
}

/// A learned noise model of [`PhysVaeLoss::forward_with_noise`]: innovation scale
/// `σ = exp(log_sigma)` and, optionally, an AR(1) correlation `ρ ∈ (−1, 1)` along the
/// observation vector (its order must be time, e.g. one pendulum trajectory):
///
/// ```text
/// e = y − x,   log p(y | x) = −(m/2) log 2π − m log σ + ½ log(1 − ρ²)
///                            − [(1 − ρ²) e₁² + Σ_{t≥2} (e_t − ρ e_{t−1})²] / 2σ²
/// ```
/// i.e. `N(y; x, Σ)` with `Σ_ij = σ² ρ^|i−j| / (1 − ρ²)` (`ρ = 0`: i.i.d. `N(0, σ²)`). A
/// misfit that is smooth in time (missing physics) is far fewer independent pieces of evidence
/// than `m` i.i.d. residuals; `ρ` lets the likelihood say so.
#[derive(Debug, Clone)]
pub struct PhysVaeNoise {
    /// `log σ`, `[1]`.
    pub log_sigma: Tensor<1>,
    /// `ρ`, `[1]` (`None`: independent noise).
    pub rho: Option<Tensor<1>>,
}

/// Per-sample terms of [`PhysVaeLoss::forward`], each `[b]`.
#[derive(Debug, Clone)]
pub struct PhysVaeTerms {
    /// `log N(y; x, σ²I)`.
    pub log_lik: Tensor<1>,
    /// `KL(q(s|y) ‖ N(0,I))`.
    pub kl_phys: Tensor<1>,
    /// `KL(q(z_aux|y) ‖ N(0,I))` (zeros without `z_aux`).
    pub kl_aux: Tensor<1>,
    /// `‖x − x_phys‖² / 2σ²`.
    pub correction: Tensor<1>,
    /// `L` of the formula above.
    pub loss: Tensor<1>,
}

impl PhysVaeLoss {
    /// The terms for observations `y: [b, m]` (same units and layout as `out.x`), with the
    /// fixed `σ = self.sigma`.
    pub fn forward(&self, y: Tensor<2>, out: &PhysVaeOutput) -> PhysVaeTerms {
        self.forward_with_noise(y, out, None)
    }

    /// [`forward`](Self::forward) with a learned noise model instead of the fixed
    /// `σ = self.sigma` (`None`: fixed).
    pub fn forward_with_noise(
        &self,
        y: Tensor<2>,
        out: &PhysVaeOutput,
        noise: Option<PhysVaeNoise>,
    ) -> PhysVaeTerms {
        assert_eq!(
            y.dims(),
            out.x.dims(),
            "PhysVaeLoss: observations and reconstruction must have the same shape"
        );
        let [b, m] = y.dims();
        let device = y.device();
        let noise = noise.unwrap_or_else(|| PhysVaeNoise {
            log_sigma: Tensor::<1>::from_data(TensorData::new(vec![self.sigma.ln()], [1]), &device),
            rho: None,
        });
        let log_sigma = noise.log_sigma.expand([b]);
        // 1 / 2σ², [b].
        let inv = log_sigma.clone().mul_scalar(-2.0).exp().mul_scalar(0.5);
        let sq = |t: Tensor<2>| t.powi_scalar(2).sum_dim(1).squeeze_dim::<1>(1);
        let e = y - out.x.clone();
        let (white, log_det) = match noise.rho {
            None => (e, Tensor::<1>::zeros([b], &device)),
            Some(rho) => {
                assert!(
                    m >= 2,
                    "PhysVaeLoss: correlated noise needs at least 2 observations"
                );
                // AR(1) innovations: √(1 − ρ²) e₁, e_t − ρ e_{t−1}.
                let one_minus = rho.clone().powi_scalar(2).neg().add_scalar(1.0); // [1]
                let r = rho.reshape([1, 1]);
                let first = e.clone().narrow(1, 0, 1) * one_minus.clone().sqrt().reshape([1, 1]);
                let rest = e.clone().narrow(1, 1, m - 1) - e.narrow(1, 0, m - 1) * r;
                (
                    Tensor::cat(vec![first, rest], 1),
                    one_minus.log().mul_scalar(0.5).expand([b]),
                )
            }
        };
        let log_lik = ((sq(white) * inv.clone()).neg() - log_sigma.mul_scalar(m as f64) + log_det)
            .sub_scalar(m as f64 * 0.5 * LN_2PI);
        let kl_phys = match &out.q_phys {
            AmortisedQ::Gaussian(q) => q.kl_standard_normal(),
            AmortisedQ::Flow(_) => {
                let [b, p] = out.s.dims();
                let prior = DiagGaussian::standard(b, p, &out.s.device());
                let log_q = out
                    .log_q_phys
                    .clone()
                    .expect("PhysVae::forward returns log q(s|y) for a flow posterior");
                log_q - prior.log_prob(out.s.clone().unsqueeze()).squeeze_dim(0)
            }
        };
        let kl_aux = match &out.q_aux {
            Some(q) => q.kl_standard_normal(),
            None => kl_phys.zeros_like(),
        };
        let correction = sq(out.x.clone() - out.x_phys.clone()) * inv;
        let loss = log_lik.clone().neg()
            + (kl_phys.clone() + kl_aux.clone()).mul_scalar(self.beta)
            + correction.clone().mul_scalar(self.aux_weight);
        PhysVaeTerms {
            log_lik,
            kl_phys,
            kl_aux,
            correction,
            loss,
        }
    }

    /// The supervised, forward-KL part of the UQ-VAE objective (Goh et al.; primer eqs. 21–22)
    /// for training pairs whose true latents `s_true` are known: `−log q(s_true | y)`, `[b]`
    /// (Gaussian: `½‖s_true − μ_φ‖²_{C_φ⁻¹} + ½ log|C_φ| + (p/2) log 2π`; a flow: through its
    /// inverse).
    /// The trainer weights it by `(1 − α)/α` next to the ELBO terms: `α = 1` is the reverse-KL
    /// ELBO alone (mode-seeking, over-confident under misspecification), `α → 0` the forward KL
    /// of a posterior fitted to simulated pairs (mass-covering).
    pub fn supervised<Q: VariationalFamily>(q_phys: &Q, s_true: Tensor<2>) -> Tensor<1> {
        q_phys
            .log_prob(s_true.unsqueeze())
            .squeeze_dim::<1>(0)
            .neg()
    }

    /// Physics-augmentation regulariser (phys-vae's "physics-based data augmentation"): for
    /// parameters `s_true` drawn from the prior and decoded by the physics alone (plus noise),
    /// the encoder's point estimate must return them: `½ ‖μ_φ(y_aug) − s_true‖²`, `[b]`
    /// (`μ_φ` the Gaussian's mean, or its image under a flow). It ties `z_phys`
    /// to its physical meaning, which the ELBO alone does not (the correction network could
    /// absorb it).
    pub fn augmentation<Q: VariationalFamily>(q_phys: &Q, s_true: Tensor<2>) -> Tensor<1> {
        (q_phys.mean() - s_true)
            .powi_scalar(2)
            .sum_dim(1)
            .squeeze_dim::<1>(1)
            .mul_scalar(0.5)
    }
}
