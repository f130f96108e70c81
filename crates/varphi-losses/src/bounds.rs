//! Importance-weighted bounds on `log p(x)`: IWAE and the Rényi-α (variational Rényi) family.
//!
//! Both take the log importance weights `log w_i = log p(x, z_i) − log q(z_i | x)` of `k`
//! samples `z_i ~ q` per datum, so any likelihood, prior and variational family can use them
//! (the model supplies `log p(x, z)` through a closure, as in [`crate::Elbo`]).
//!
//! ```text
//! IWAE (Burda et al. 2016):       L_k   = E[ log (1/k) Σ_i w_i ]
//! Rényi-α (Li & Turner 2016):     L_α,k = E[ 1/(1−α) · log (1/k) Σ_i w_i^{1−α} ]
//! ```
//! `L_1 = ELBO ≤ L_k ≤ L_{k+1} ≤ log p(x)`, and `L_k → log p(x)` as `k → ∞`. The Rényi bound
//! is the IWAE bound at `α = 0`, tends to the ELBO as `α → 1`, and at `α < 0` its estimate can
//! exceed `log p(x)` (it is then no bound; the MC estimate is biased for every finite `k`).
//! These are extensions beyond the primer (its §5 "not found" list).

use burn::prelude::*;
use varphi_models::{DiagGaussian, VariationalFamily};

/// `log (1/k) Σ_i exp(a_i)` along dim 0 of `a: [k, batch]`, stable; returns `[batch]`.
pub fn log_mean_exp(a: Tensor<2>) -> Tensor<1> {
    let max = a.clone().max_dim(0).detach(); // [1, b]
    ((a - max.clone()).exp().mean_dim(0).log() + max).squeeze_dim::<1>(0)
}

/// The Rényi-α bound estimate `1/(1−α) log (1/k) Σ_i w_i^{1−α}` from `log_w: [k, batch]`;
/// `α = 0` is the IWAE bound, `α = 1` (the limit) the ELBO `mean_i log w_i`. Returns `[batch]`.
pub fn renyi_bound(log_w: Tensor<2>, alpha: f64) -> Tensor<1> {
    if (alpha - 1.0).abs() < 1e-12 {
        return log_w.mean_dim(0).squeeze_dim::<1>(0);
    }
    let a = 1.0 - alpha;
    log_mean_exp(log_w.mul_scalar(a)).div_scalar(a)
}

/// What an importance-weighted bound returns: `loss` to backpropagate, the rest detached.
#[derive(Debug, Clone)]
pub struct BoundOutput {
    /// `−mean_b L`, `[1]`, attached to the graph.
    pub loss: Tensor<1>,
    /// Per-datum bound `L`, `[batch]`, detached.
    pub bound: Tensor<1>,
    /// Per-datum ELBO from the same samples (`mean_i log w_i`), `[batch]`, detached.
    pub elbo: Tensor<1>,
    /// Effective sample size of the normalised weights per datum, in `[1, k]`, detached.
    pub ess: Tensor<1>,
}

/// The Rényi-α / IWAE objective with `k` samples per datum (`eps: [k, batch, dim]`).
///
/// `L_α,k = 1/(1−α) · log (1/k) Σ_i (p(x, z_i) / q(z_i | x))^{1−α}`, `z_i = T_q(ε_i)`, with
/// `p(x, z) = p(x | z) p(z)` and reparameterised gradients. `α = 0`: IWAE; `α → 1`: ELBO.
#[derive(Debug, Clone, Copy)]
pub struct RenyiBound {
    /// `α` (0 for IWAE).
    pub alpha: f64,
}

impl RenyiBound {
    /// The IWAE bound (`α = 0`).
    pub fn iwae() -> Self {
        Self { alpha: 0.0 }
    }

    /// Evaluate for the posterior `q`, the prior `p(z)` and `log p(x | z)` as a closure
    /// `[k, batch, dim] → [k, batch]`.
    pub fn forward<Q: VariationalFamily>(
        &self,
        q: &Q,
        prior: &DiagGaussian,
        eps: Tensor<3>,
        log_lik: impl FnOnce(Tensor<3>) -> Tensor<2>,
    ) -> BoundOutput {
        let (z, log_q) = q.rsample_with_log_prob(eps);
        let log_w = log_lik(z.clone()) + prior.log_prob(z) - log_q;
        let bound = renyi_bound(log_w.clone(), self.alpha);
        let lw = log_w.detach();
        let [k, _] = lw.dims();
        // ESS = (Σ w)² / Σ w² = exp(2 LSE(log w) − LSE(2 log w)).
        let lse = |a: Tensor<2>| log_mean_exp(a).add_scalar((k as f64).ln());
        let ess = (lse(lw.clone()).mul_scalar(2.0) - lse(lw.clone().mul_scalar(2.0))).exp();
        BoundOutput {
            loss: bound.clone().mean().neg(),
            bound: bound.detach(),
            elbo: lw.mean_dim(0).squeeze_dim::<1>(0),
            ess,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Linear-Gaussian truth: `z ~ N(0, I_d)`, `x | z ~ N(z, s² I)`, so
    //! `log p(x) = Σ_j log N(x_j; 0, 1 + s²)` and `p(z | x) = N(x/(1+s²), s²/(1+s²))`.
    use super::*;
    use varphi_models::distributions::LN_2PI;
    use varphi_models::testing::{f64_device, normals, tensor, vec};

    const S2: f64 = 0.25;

    fn x() -> Vec<f64> {
        vec![0.3, -1.2, 2.0, 0.7, -0.4, 1.1]
    }

    fn log_evidence(x: &[f64]) -> f64 {
        let v = 1.0 + S2;
        x.iter().map(|x| -0.5 * (LN_2PI + v.ln() + x * x / v)).sum()
    }

    /// `log p(x | z)` for `z: [k, 1, d]`.
    fn log_lik(z: Tensor<3>) -> Tensor<2> {
        let [k, b, d] = z.dims();
        let xs = tensor(x(), [1, 1, d], &z.device()).expand([k, b, d]);
        ((z - xs)
            .powi_scalar(2)
            .div_scalar(S2)
            .add_scalar(LN_2PI + S2.ln()))
        .sum_dim(2)
        .squeeze_dim::<2>(2)
        .mul_scalar(-0.5)
    }

    fn q(mean_shift: f64, var_scale: f64) -> DiagGaussian {
        let dev = f64_device();
        let d = x().len();
        let m: Vec<f64> = x().iter().map(|x| x / (1.0 + S2) + mean_shift).collect();
        let lv = vec![(var_scale * S2 / (1.0 + S2)).ln(); d];
        DiagGaussian::new(tensor(m, [1, d], &dev), tensor(lv, [1, d], &dev))
    }

    fn bound(alpha: f64, q: &DiagGaussian, k: usize, reps: usize) -> f64 {
        let dev = f64_device();
        let d = x().len();
        let prior = DiagGaussian::standard(1, d, &dev);
        let mut total = 0.0;
        for rep in 0..reps {
            let eps = normals([k, 1, d], 1000 * k as u64 + rep as u64, &dev);
            let out = RenyiBound { alpha }.forward(q, &prior, eps, log_lik);
            total += vec(out.bound)[0];
        }
        total / reps as f64
    }

    #[test]
    fn exact_posterior_makes_every_bound_the_log_evidence() {
        let q = q(0.0, 1.0);
        for alpha in [0.0, 0.5, 1.0, -1.0] {
            for k in [1, 5] {
                let b = bound(alpha, &q, k, 1);
                assert!(
                    (b - log_evidence(&x())).abs() < 1e-10,
                    "α {alpha}, k {k}: {b}"
                );
            }
        }
    }

    #[test]
    fn iwae_increases_with_k_toward_the_log_evidence() {
        // A poor q (mean off by 0.5, variance 3× too wide): averaged over repetitions the IWAE
        // bound rises with k, stays below log p(x), and closes most of the gap.
        let q = q(0.5, 3.0);
        let truth = log_evidence(&x());
        let ks = [1, 4, 16, 64, 256];
        let b: Vec<f64> = ks.iter().map(|&k| bound(0.0, &q, k, 400)).collect();
        for w in b.windows(2) {
            assert!(w[1] > w[0], "not increasing: {b:?}");
        }
        assert!(b[4] < truth, "{b:?} vs {truth}");
        let gap1 = truth - b[0];
        let gap256 = truth - b[4];
        assert!(gap1 > 1.0, "ELBO gap {gap1}");
        assert!(gap256 < 0.1 * gap1, "gaps {gap1} → {gap256}");
        // k = 1 is the ELBO, whose expectation is known in closed form:
        // log p(x) − KL(q ‖ p(z|x)).
        let (v, vq, dm) = (S2 / (1.0 + S2), 3.0 * S2 / (1.0 + S2), 0.5);
        let kl = x().len() as f64 * 0.5 * (vq / v + dm * dm / v - 1.0 + (v / vq).ln());
        // α = 1 averages log w over all k samples: 20 000 of them, s.e. ≈ 0.02.
        let elbo = bound(1.0, &q, 20_000, 1);
        assert!(
            (elbo - (truth - kl)).abs() < 0.08,
            "{elbo} vs {}",
            truth - kl
        );
        assert!(
            (b[0] - elbo).abs() < 0.5,
            "k = 1 IWAE {} vs ELBO {elbo}",
            b[0]
        );
    }

    #[test]
    fn renyi_interpolates_between_iwae_and_the_elbo() {
        let q = q(0.5, 3.0);
        let dev = f64_device();
        let d = x().len();
        let prior = DiagGaussian::standard(1, d, &dev);
        let eps = normals([32, 1, d], 3, &dev);
        let at = |alpha: f64| {
            vec(RenyiBound { alpha }
                .forward(&q, &prior, eps.clone(), log_lik)
                .bound)[0]
        };
        let (iwae, elbo) = (at(0.0), at(1.0));
        // Same samples: L_α is non-increasing in α, equal to IWAE at 0 and → ELBO at 1.
        let mid = [0.25, 0.5, 0.75].map(at);
        assert!(iwae >= mid[0] && mid[0] >= mid[1] && mid[1] >= mid[2] && mid[2] >= elbo);
        assert!(
            (at(1.0 - 1e-7) - elbo).abs() < 1e-4,
            "{} vs {elbo}",
            at(1.0 - 1e-7)
        );
        assert!((at(1e-12) - iwae).abs() < 1e-9);
        // α < 0 lies above IWAE on the same samples.
        assert!(at(-1.0) >= iwae);
    }

    #[test]
    fn log_mean_exp_is_stable() {
        let dev = f64_device();
        // Columns {1000, −1000} and {1000, 0}: both log-mean-exp to 1000 − ln 2 (to 1e-300);
        // the naive formula overflows.
        let a = tensor(vec![1000.0, 1000.0, -1000.0, 0.0], [2, 2], &dev);
        for v in vec(log_mean_exp(a)) {
            assert!((v - (1000.0 - 2f64.ln())).abs() < 1e-9, "{v}");
        }
    }
}
