//! Divergences between two distributions that can both be sampled and evaluated.

use burn::prelude::*;
use varphi_models::VariationalFamily;

/// Monte-Carlo skew Jensen–Shannon divergence (primer eq. 21, Goh et al.'s UQ-VAE):
///
/// ```text
/// JS_α(q ‖ p) = α KL(q ‖ m_α) + (1 − α) KL(p ‖ m_α),   m_α = (1 − α) q + α p,
/// ```
/// estimated with `z_q = T_q(ε_q)`, `z_p = T_p(ε_p)` (`eps_*: [k, batch, dim]`) and
/// `log m_α = logsumexp(log(1−α) + log q, log α + log p)`. `α → 1` gives the reverse KL
/// `KL(q ‖ p)`, `α → 0` the forward KL `KL(p ‖ q)`; `α ∈ (0, 1)` interpolates. Returns `[batch]`,
/// differentiable through both reparameterisations.
pub fn skew_js<Q: VariationalFamily, P: VariationalFamily>(
    q: &Q,
    p: &P,
    eps_q: Tensor<3>,
    eps_p: Tensor<3>,
    alpha: f64,
) -> Tensor<1> {
    assert!(
        alpha > 0.0 && alpha < 1.0,
        "skew_js: alpha must lie in (0, 1), got {alpha} (use the KL itself at the limits)"
    );
    let (la, lb) = ((1.0 - alpha).ln(), alpha.ln());
    // log m_α(z) from log q(z) and log p(z), stable.
    let log_m = |lq: Tensor<2>, lp: Tensor<2>| {
        let a = lq.add_scalar(la);
        let b = lp.add_scalar(lb);
        let max = a.clone().max_pair(b.clone()).detach();
        ((a - max.clone()).exp() + (b - max.clone()).exp()).log() + max
    };
    let zq = q.rsample(eps_q);
    let (lq_q, lp_q) = (q.log_prob(zq.clone()), p.log_prob(zq));
    let kl_q = (lq_q.clone() - log_m(lq_q, lp_q))
        .mean_dim(0)
        .squeeze_dim::<1>(0);
    let zp = p.rsample(eps_p);
    let (lq_p, lp_p) = (q.log_prob(zp.clone()), p.log_prob(zp));
    let kl_p = (lp_p.clone() - log_m(lq_p, lp_p))
        .mean_dim(0)
        .squeeze_dim::<1>(0);
    kl_q.mul_scalar(alpha) + kl_p.mul_scalar(1.0 - alpha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use varphi_models::DiagGaussian;
    use varphi_models::testing::{f64_device, normals, tensor, vec};

    fn gaussians() -> (DiagGaussian, DiagGaussian) {
        let dev = f64_device();
        let g = |m: Vec<f64>, lv: Vec<f64>| {
            DiagGaussian::new(tensor(m, [1, 3], &dev), tensor(lv, [1, 3], &dev))
        };
        (
            g(vec![0.2, -0.5, 1.0], vec![-0.3, 0.4, 0.0]),
            g(vec![0.0, 0.3, 0.6], vec![0.2, -0.1, 0.5]),
        )
    }

    #[test]
    fn limits_are_the_reverse_and_forward_kl() {
        let dev = f64_device();
        let (q, p) = gaussians();
        let k = 200_000;
        let (eq, ep) = (normals([k, 1, 3], 21, &dev), normals([k, 1, 3], 22, &dev));
        let reverse = vec(q.kl_to_diag(&p))[0];
        let forward = vec(p.kl_to_diag(&q))[0];
        let near1 = vec(skew_js(&q, &p, eq.clone(), ep.clone(), 1.0 - 1e-9))[0];
        let near0 = vec(skew_js(&q, &p, eq.clone(), ep.clone(), 1e-9))[0];
        // Same-sample MC estimates of each KL, for the exact part of the check.
        let zq = q.rsample(eq);
        let mc_rev = vec((q.log_prob(zq.clone()) - p.log_prob(zq)).mean())[0];
        let zp = p.rsample(ep);
        let mc_fwd = vec((p.log_prob(zp.clone()) - q.log_prob(zp)).mean())[0];
        assert!((near1 - mc_rev).abs() < 1e-6, "{near1} vs {mc_rev}");
        assert!((near0 - mc_fwd).abs() < 1e-6, "{near0} vs {mc_fwd}");
        // And the closed forms, within Monte-Carlo error (~3e-3 here).
        assert!((near1 - reverse).abs() < 0.01, "{near1} vs {reverse}");
        assert!((near0 - forward).abs() < 0.01, "{near0} vs {forward}");
        assert!(
            (reverse - forward).abs() > 0.05,
            "the test needs asymmetric KLs"
        );
    }

    #[test]
    fn interior_values_are_bounded_and_vanish_for_equal_distributions() {
        let dev = f64_device();
        let (q, p) = gaussians();
        let seed = std::cell::Cell::new(40);
        let e = || {
            seed.set(seed.get() + 1);
            normals([20_000, 1, 3], seed.get(), &dev)
        };
        for alpha in [0.1, 0.5, 0.9] {
            // m_α ≥ (1−α) q and m_α ≥ α p, so JS_α ≤ −α ln(1−α) − (1−α) ln α (ln 2 at ½).
            let js = vec(skew_js(&q, &p, e(), e(), alpha))[0];
            assert!(js > 0.0, "α {alpha}: {js}");
            let h = -(alpha * (1.0 - alpha).ln() + (1.0 - alpha) * alpha.ln());
            assert!(js <= h + 1e-9, "α {alpha}: {js} > {h}");
            let same = vec(skew_js(&q, &q, e(), e(), alpha))[0];
            assert!(same.abs() < 1e-12, "α {alpha}: {same}");
        }
    }
}
