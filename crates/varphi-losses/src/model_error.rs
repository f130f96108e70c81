//! A residual-informed model-error (discrepancy) term for surrogates trained through a PDE
//! residual (docs/objectives.md, "Model error").
//!
//! The ELBO of a physics-trained surrogate `q(u | z)` shrinks its spread to what `σ_r` allows,
//! while the network's approximation error `δ = μ(z) − u*(z)` stays larger: the predictive is
//! over-confident. The residual the mean *achieves* measures that error without labels. With
//! `s(u) = P⁻¹ r(u, z)` the (preconditioned) residual and `M = ∂s/∂u` at the mean,
//! `s(μ) ≈ M δ`. Model the error as a discrepancy `δ ~ N(0, τ² I)` on the `n` free solution
//! entries and match `‖s(μ)‖² ≈ τ² n g²`, `g²` the mean square gain of `M` on errors:
//!
//! ```text
//! τ̂²(z) = ‖s(μ(z))‖² / (n g²),   g² = Σ_k ‖(s(μ + h v_k) − s(μ)) / h‖² / Σ_k ‖v_k‖²,
//! ```
//!
//! by finite differences of step `h = step · rms(μ)` (exact for a residual linear in `u`, a
//! secant of the error's size otherwise) along probe directions `v_k` ([`Probe`]):
//! - [`Probe::Mean`] (default): `v = μ` on the free entries, so `g = ‖Mμ‖/‖μ‖` and
//!   `τ̂ = rms(μ) · ‖s(μ)‖ / ‖Mμ‖` — *relative error ≈ relative residual*, measured along the
//!   solution. Right for errors shaped like the solution (the smooth, low-frequency errors of
//!   trained networks), exact for `δ ∝ μ`; the gain of a differential operator on white noise
//!   is far larger than on smooth errors, and would read a smooth error as a small one.
//! - [`Probe::White`]: `K` Hutchinson probes `v_k ~ N(0, I)`, `n g² ≈ tr(MᵀM)`: the moment
//!   estimate for a white discrepancy, unbiased when `δ ~ N(0, τ² I)`.
//!
//! The predictive with model error adds the discrepancy to every sample, `u_s + τ_add(z) ε_s`
//! on the free entries, with `τ_add² = max(τ̂² − v_q, 0)` and `v_q` the surrogate's own variance
//! (averaged over the free entries): its spread per entry is then `max(v_q, τ̂²)`, not their sum,
//! since both account for the same error.
//!
//! The residual's *norm* is used, its direction is not: using it would be a Newton step, the
//! solve a surrogate exists to avoid. The estimate includes the virtual-observation noise
//! (`‖s‖² ≳ n_rows σ_r²` for a trained model), so it is conservative by at most `σ_r²/g²`.

use burn::prelude::*;

/// The probe directions of [`ModelError`]'s gain (module docs).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Along the mean: relative error ≈ relative residual.
    Mean,
    /// `K` white-noise (Hutchinson) probes: a white discrepancy.
    White,
}

/// Configuration of [`ModelError`].
#[derive(Config, Debug)]
pub struct ModelErrorConfig {
    /// Probe directions.
    #[config(default = "Probe::Mean")]
    pub probe: Probe,
    /// White-noise probes `K` per case (one direction for [`Probe::Mean`]).
    #[config(default = 8)]
    pub probes: usize,
    /// Finite-difference step relative to the RMS of the mean's free entries.
    #[config(default = 1e-2)]
    pub step: f64,
}

impl ModelErrorConfig {
    /// The estimator.
    pub fn init(&self) -> ModelError {
        ModelError {
            probe: self.probe,
            probes: match self.probe {
                Probe::Mean => 1,
                Probe::White => self.probes.max(1),
            },
            step: self.step,
        }
    }
}

/// The residual-informed discrepancy `δ ~ N(0, τ̂²(z) I)` of a surrogate's mean (module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelError {
    /// Probe directions.
    pub probe: Probe,
    /// Probes `K` per case (1 for [`Probe::Mean`]).
    pub probes: usize,
    /// Relative finite-difference step.
    pub step: f64,
}

impl ModelError {
    /// `τ̂²(z)` per case, `[b]`.
    ///
    /// - `residual(u)`: all (preconditioned, where configured) residual rows of solutions `u`
    ///   `[(K + 1)·b, n_u]`, stacked block-major (block 0 is the mean, block `k` the `k`-th
    ///   probe), at the parameters of their case (the caller repeats them `K + 1` times);
    /// - `mean`: the surrogate's mean `μ(z)` `[b, n_u]`;
    /// - `free`: `[1, n_u]`, 1 on entries a boundary condition does not fix, 0 elsewhere;
    /// - `probes`: standard normals `[K, b, n_u]` ([`Probe::Mean`] uses them only for a case
    ///   whose mean is zero on the free entries).
    pub fn variance(
        &self,
        residual: impl Fn(Tensor<2>) -> Tensor<2>,
        mean: Tensor<2>,
        free: Tensor<2>,
        probes: Tensor<3>,
    ) -> Tensor<1> {
        let [b, nu] = mean.dims();
        let k = probes.dims()[0];
        let n_free = free.clone().sum().into_scalar::<f64>();
        let n_free = n_free.max(1.0);
        // h per case: step · rms of the free entries of μ (or step where μ is ~0).
        let rms = (mean.clone() * free.clone())
            .powi_scalar(2)
            .sum_dim(1)
            .div_scalar(n_free)
            .sqrt();
        let h = rms.clone().clamp_min(1e-6).mul_scalar(self.step); // [b, 1]
        let v = match self.probe {
            // A case whose mean is zero on the free entries has no direction of its own: it
            // takes the white probe instead of a 0/0 gain.
            Probe::Mean => {
                let white = rms.clone().lower_elem(1e-12).float().unsqueeze_dim::<3>(0);
                mean.clone().unsqueeze_dim::<3>(0).expand([k, b, nu])
                    * white.clone().neg().add_scalar(1.0)
                    + probes * white
            }
            Probe::White => probes,
        } * free.clone().unsqueeze_dim::<3>(0);
        let shifted = mean.clone().unsqueeze_dim::<3>(0) + v.clone() * h.clone().unsqueeze_dim(0);
        let rows = Tensor::cat(vec![mean, shifted.reshape([k * b, nu])], 0);
        let r = residual(rows);
        let m = r.dims()[1];
        let s0 = r.clone().narrow(0, 0, b);
        let sk = r.narrow(0, b, k * b).reshape([k, b, m]);
        let mv = (sk - s0.clone().unsqueeze_dim::<3>(0)) / h.unsqueeze_dim(0);
        // g² = Σ_k ‖M v_k‖² / Σ_k ‖v_k‖² (for white probes, n g² is Hutchinson's tr(MᵀM)).
        let gain2 = mv.powi_scalar(2).sum_dim(2).sum_dim(0).reshape([b])
            / v.powi_scalar(2)
                .sum_dim(2)
                .sum_dim(0)
                .reshape([b])
                .clamp_min(1e-30);
        let trace = gain2.mul_scalar(n_free).clamp_min(1e-30);
        s0.powi_scalar(2).sum_dim(1).reshape([b]) / trace
    }

    /// Samples with the discrepancy added where their own spread falls short of it:
    /// `u_s + τ_add(z) ε_s ⊙ free` with `τ_add² = max(τ̂² − v_q, 0)`, `v_q(z)` the samples'
    /// variance averaged over the free entries (0 for a single sample), so that the
    /// predictive's variance per free entry is `max(v_q, τ̂²)`: a surrogate whose own spread
    /// already covers its error is not widened twice. `samples` `[S, b, n_u]`, `variance`
    /// `[b]` from [`Self::variance`], standard normals `eps` `[S, b, n_u]`.
    pub fn widen(
        samples: Tensor<3>,
        variance: Tensor<1>,
        free: Tensor<2>,
        eps: Tensor<3>,
    ) -> Tensor<3> {
        let [s, b, _] = samples.dims();
        let free3 = free.unsqueeze_dim::<3>(0);
        let n_free = free3.clone().sum().into_scalar::<f64>().max(1.0);
        let own = if s > 1 {
            samples
                .clone()
                .var(0)
                .mul(free3.clone())
                .sum_dim(2)
                .reshape([b])
                .div_scalar(n_free)
        } else {
            variance.zeros_like()
        };
        let tau = (variance - own).clamp_min(0.0).sqrt().reshape([1, b, 1]);
        samples + eps * tau * free3
    }
}
