//! Calibration checks of an amortised posterior over many simulated cases (`f64`, CPU):
//! simulation-based calibration (SBC) rank histograms and TARP expected coverage, each with a
//! test statistic and a p-value.
//!
//! The truths of a test split are draws from the prior and the observations draws from the
//! likelihood, so for a correct posterior:
//!
//! ```text
//! SBC   r_ij = #{s : θ_ij^s < θ*_ij} ~ U{0, …, S}        per case i, parameter j
//! TARP  f_i  = #{s : ‖θ_i^s − θ_r,i‖ < ‖θ*_i − θ_r,i‖} / S ~ U(0, 1)   θ_r,i a random reference
//! ```
//!
//! SBC: per parameter, the ranks (spread over `B` bins with a deterministic uniform jitter so
//! that `S + 1` need not divide by `B`) give Pearson's χ² = Σ_b (O_b − n/B)² / (n/B) on `B − 1`
//! degrees of freedom; the block's p-value is the smallest over parameters times their number
//! (Bonferroni, capped at 1). TARP (Lemos et al. 2023): the expected coverage
//! `ECP(α) = mean_i 1[f_i < α]` should be `α`; the Kolmogorov–Smirnov distance of the `f_i` from
//! `U(0, 1)` and its asymptotic p-value summarise it. Both reject over-confident posteriors
//! (∪-shaped ranks, ECP below the diagonal) and under-confident ones (∩-shaped, above).

use serde::Serialize;
use std::collections::BTreeMap;

/// SBC and TARP diagnostics of one posterior block.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PosteriorChecks {
    /// Cases (simulated data sets) the checks use.
    pub cases: usize,
    /// SBC rank histogram pooled over parameters (fractions per bin; uniform = 1/B each).
    pub sbc_histogram: Vec<f64>,
    /// Largest χ² over the parameters.
    pub sbc_chi2: f64,
    /// Degrees of freedom of each χ² (`B − 1`).
    pub sbc_dof: usize,
    /// Bonferroni-combined p-value over the parameters (small: ranks not uniform).
    pub sbc_p_value: f64,
    /// TARP expected coverage by credibility level.
    pub tarp_ecp: BTreeMap<String, f64>,
    /// Kolmogorov–Smirnov distance of the TARP statistics from U(0, 1).
    pub tarp_ks: f64,
    /// Its asymptotic p-value.
    pub tarp_p_value: f64,
}

/// Deterministic U[0, 1) from two integers (splitmix64), for the rank jitter and TARP's
/// reference points: the checks of a run are reproducible.
fn unit(a: u64, b: u64) -> f64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add(0x2545_F491_4F6C_DD1D);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// SBC bins for `n` cases: ten when every bin expects at least 5, fewer otherwise (≥ 2).
pub fn sbc_bins(n: usize) -> usize {
    (n / 5).clamp(2, 10)
}

/// SBC and TARP checks of `samples` `[S][n·d]` against `truth` `[n·d]` (`n` cases of `d`
/// parameters, case-major); `levels` are the TARP credibility levels reported. `None` for
/// fewer than 10 cases or 2 samples.
pub fn posterior_checks(
    samples: &[Vec<f64>],
    truth: &[f64],
    d: usize,
    levels: &[f64],
) -> Option<PosteriorChecks> {
    let s = samples.len();
    let d = d.max(1);
    let n = truth.len() / d;
    if n < 10 || s < 2 || n * d != truth.len() {
        return None;
    }
    // SBC: ranks per (case, parameter), binned per parameter.
    let bins = sbc_bins(n);
    let mut pooled = vec![0.0; bins];
    let (mut chi2_max, mut p_min) = (0.0f64, 1.0f64);
    for j in 0..d {
        let mut counts = vec![0usize; bins];
        for i in 0..n {
            let k = i * d + j;
            let y = truth[k];
            let below = samples.iter().filter(|x| x[k] < y).count();
            let ties = samples.iter().filter(|x| x[k] == y).count();
            // Ties (a collapsed posterior at the truth) take a uniform position among themselves.
            let u = unit(k as u64, 1);
            let rank = below as f64 + (u * (ties + 1) as f64).floor().min(ties as f64);
            let pos = (rank + unit(k as u64, 2)) / (s + 1) as f64;
            counts[((pos * bins as f64) as usize).min(bins - 1)] += 1;
        }
        let e = n as f64 / bins as f64;
        let chi2: f64 = counts.iter().map(|&o| (o as f64 - e).powi(2) / e).sum();
        chi2_max = chi2_max.max(chi2);
        p_min = p_min.min(chi2_sf(chi2, bins - 1));
        for (p, c) in pooled.iter_mut().zip(&counts) {
            *p += *c as f64 / (n * d) as f64;
        }
    }
    // TARP: distances in units of each parameter's spread of the truths; the reference point
    // of case i is uniform over the truths' bounding box.
    let mut lo = vec![f64::INFINITY; d];
    let mut hi = vec![f64::NEG_INFINITY; d];
    let mut sd = vec![0.0; d];
    for j in 0..d {
        let col: Vec<f64> = (0..n).map(|i| truth[i * d + j]).collect();
        let m = col.iter().sum::<f64>() / n as f64;
        sd[j] = (col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64)
            .sqrt()
            .max(1e-300);
        for x in col {
            lo[j] = lo[j].min(x);
            hi[j] = hi[j].max(x);
        }
    }
    let mut f: Vec<f64> = (0..n)
        .map(|i| {
            let r: Vec<f64> = (0..d)
                .map(|j| lo[j] + (hi[j] - lo[j]) * unit(i as u64, 3 + j as u64))
                .collect();
            let dist = |x: &[f64]| -> f64 {
                (0..d)
                    .map(|j| ((x[i * d + j] - r[j]) / sd[j]).powi(2))
                    .sum()
            };
            let dt = dist(truth);
            samples.iter().filter(|x| dist(x) < dt).count() as f64 / s as f64
        })
        .collect();
    f.sort_by(f64::total_cmp);
    let ecp = levels
        .iter()
        .map(|&a| {
            (
                format!("{a}"),
                f.iter().filter(|&&x| x < a).count() as f64 / n as f64,
            )
        })
        .collect();
    let ks = ks_uniform(&f);
    Some(PosteriorChecks {
        cases: n,
        sbc_histogram: pooled,
        sbc_chi2: chi2_max,
        sbc_dof: bins - 1,
        sbc_p_value: (p_min * d as f64).min(1.0),
        tarp_ecp: ecp,
        tarp_ks: ks,
        tarp_p_value: ks_p_value(ks, n),
    })
}

/// Kolmogorov–Smirnov distance `sup_x |F_n(x) − x|` of sorted values in `[0, 1]`.
pub fn ks_uniform(sorted: &[f64]) -> f64 {
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| ((i + 1) as f64 / n - x).max(x - i as f64 / n))
        .fold(0.0, f64::max)
}

/// Asymptotic p-value of a KS distance `dn` from `n` values, with Stephens' small-sample
/// correction `λ = (√n + 0.12 + 0.11/√n) dn`: `Q(λ) = 2 Σ_k (−1)^{k−1} e^{−2k²λ²}`.
pub fn ks_p_value(dn: f64, n: usize) -> f64 {
    let sn = (n as f64).sqrt();
    let lambda = (sn + 0.12 + 0.11 / sn) * dn;
    if lambda < 0.2 {
        return 1.0;
    }
    let mut q = 0.0;
    for k in 1..=100 {
        let t = 2.0 * (-2.0 * (k * k) as f64 * lambda * lambda).exp();
        q += if k % 2 == 1 { t } else { -t };
        if t < 1e-16 {
            break;
        }
    }
    q.clamp(0.0, 1.0)
}

/// Survival function of χ² with `dof` degrees of freedom: `Q(dof/2, x/2)`, the regularised
/// upper incomplete gamma function (series for `x < a + 1`, Lentz's continued fraction
/// otherwise; relative accuracy ~1e-14).
pub fn chi2_sf(x: f64, dof: usize) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let a = dof as f64 / 2.0;
    let x = x / 2.0;
    let log_prefactor = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        // P(a, x) = e^{−x} x^a / Γ(a) Σ_n x^n / (a (a+1) … (a+n)).
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        (1.0 - sum * log_prefactor.exp()).clamp(0.0, 1.0)
    } else {
        // Q(a, x) = e^{−x} x^a / Γ(a) · 1 / (x + 1 − a − 1·(1−a) / (x + 3 − a − …)).
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (h * log_prefactor.exp()).clamp(0.0, 1.0)
    }
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9; relative accuracy ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let s: f64 = G[0]
        + G[1..]
            .iter()
            .enumerate()
            .map(|(i, g)| g / (x + (i + 1) as f64))
            .sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn special_functions_match_tabulated_values() {
        // ln Γ(n) = ln (n − 1)!, Γ(1/2) = √π.
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
        assert!((ln_gamma(10.5) - 1_133_278.388_7f64.ln()).abs() < 1e-9);
        // χ² with 2 dof: Q = e^{−x/2}; 9 dof at 16.919 is the 5 % point; 1 dof at 3.8415.
        for x in [0.1, 1.0, 4.0, 30.0] {
            assert!((chi2_sf(x, 2) - (-x / 2.0).exp()).abs() < 1e-13, "{x}");
        }
        assert!((chi2_sf(16.918_977_6, 9) - 0.05).abs() < 1e-8);
        assert!((chi2_sf(3.841_458_82, 1) - 0.05).abs() < 1e-8);
        assert!((chi2_sf(2.087_9, 9) - 0.99).abs() < 1e-5);
        // KS: Q(1.358) ≈ 0.05 (the 5 % critical value), Q(1.628) ≈ 0.01.
        let q = |l: f64| ks_p_value(l / (100f64.sqrt() + 0.12 + 0.011), 100);
        assert!((q(1.358_1) - 0.05).abs() < 2e-4, "{}", q(1.3581));
        assert!((q(1.627_6) - 0.01).abs() < 1e-4, "{}", q(1.6276));
    }

    /// `n` cases of a conjugate Gaussian model θ ~ N(0, 1)^d, y = θ + N(0, σ²): the exact
    /// posterior is N(y / (1 + σ²), σ² / (1 + σ²)); `spread` scales its sd.
    fn conjugate(
        n: usize,
        d: usize,
        s: usize,
        spread: f64,
        seed: u64,
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let sigma2: f64 = 0.5;
        let std = Normal::new(0.0, 1.0).unwrap();
        let truth: Vec<f64> = (0..n * d).map(|_| std.sample(&mut rng)).collect();
        let y: Vec<f64> = truth
            .iter()
            .map(|t| t + sigma2.sqrt() * std.sample(&mut rng))
            .collect();
        let post_sd = (sigma2 / (1.0 + sigma2)).sqrt() * spread;
        let samples = (0..s)
            .map(|_| {
                y.iter()
                    .map(|y| y / (1.0 + sigma2) + post_sd * std.sample(&mut rng))
                    .collect()
            })
            .collect();
        (samples, truth)
    }

    #[test]
    fn a_correct_posterior_passes_and_a_wrong_one_is_rejected() {
        let levels = [0.1, 0.5, 0.9];
        let (samples, truth) = conjugate(400, 3, 99, 1.0, 7);
        let c = posterior_checks(&samples, &truth, 3, &levels).unwrap();
        assert_eq!((c.cases, c.sbc_dof), (400, 9));
        assert!(
            c.sbc_p_value > 0.05,
            "correct posterior rejected by SBC: {c:?}"
        );
        assert!(
            c.tarp_p_value > 0.05,
            "correct posterior rejected by TARP: {c:?}"
        );
        for (a, e) in &c.tarp_ecp {
            let a: f64 = a.parse().unwrap();
            assert!((e - a).abs() < 0.08, "ECP({a}) = {e}");
        }
        assert!(c.sbc_histogram.iter().all(|h| (h - 0.1).abs() < 0.03));
        // Over-confident (half the sd): ∪-shaped ranks, ECP below the diagonal.
        let (samples, truth) = conjugate(400, 3, 99, 0.5, 7);
        let c = posterior_checks(&samples, &truth, 3, &levels).unwrap();
        assert!(c.sbc_p_value < 1e-6 && c.tarp_p_value < 1e-3, "{c:?}");
        assert!(c.sbc_histogram[0] > 0.15 && c.sbc_histogram[9] > 0.15);
        assert!(c.tarp_ecp["0.9"] < 0.8, "{c:?}");
        // Under-confident (twice the sd): ∩-shaped ranks, ECP above the diagonal.
        let (samples, truth) = conjugate(400, 3, 99, 2.0, 7);
        let c = posterior_checks(&samples, &truth, 3, &levels).unwrap();
        assert!(c.sbc_p_value < 1e-6, "{c:?}");
        assert!(c.tarp_p_value < 1e-3 && c.tarp_ecp["0.5"] > 0.6, "{c:?}");
        // Too few cases: no checks.
        assert!(posterior_checks(&samples[..], &truth[..27], 3, &levels).is_none());
    }
}
