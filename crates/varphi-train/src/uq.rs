//! Scores of predictive uncertainty against held-out truth, from samples of the predictive
//! distribution (`f64`, CPU).
//!
//! For `n` test cases with truth `y_i ∈ R^d` and `S` predictive samples `x_i^s`:
//!
//! ```text
//! rel_l2    = ‖m − y‖₂ / ‖y‖₂                          m_i = mean_s x_i^s (all cases, all entries)
//! nll       = mean_{i,j} −log N(y_ij; m_ij, v_ij)      v_ij = sample variance (+ floor)
//! crps      = mean_{i,j} [ E|X − y_ij| − ½ E|X − X′| ]  X, X′ ~ empirical samples of entry ij
//! coverage  = fraction of y_ij inside the central p-interval [q_{(1−p)/2}, q_{(1+p)/2}]
//! ```
//!
//! `nll` uses the Gaussian with the samples' mean and variance (the predictive of a Gaussian
//! model, an approximation otherwise); quantiles interpolate linearly between order statistics.
//!
//! Calibration diagnostics come with every score: the coverage at the ten levels of
//! [`CURVE`] (the calibration curve of a reliability diagram), its mean absolute deviation
//! from the diagonal, the mean width of the 90 % interval, and the PIT histogram: the
//! fraction of entries whose probability integral transform `PIT = #{s : x^s < y} / S` falls
//! in each tenth of `[0, 1]` (flat for a calibrated predictive, ∪-shaped for an
//! over-confident one, ∩-shaped for an under-confident one). Posterior blocks add the SBC and
//! TARP checks of [`crate::ranks`]; recalibrated runs add [`Recalibrated`].

use crate::ranks::PosteriorChecks;
use serde::Serialize;
use std::collections::BTreeMap;

/// The nominal levels reported by default.
pub const LEVELS: [f64; 3] = [0.5, 0.9, 0.95];

/// The nominal levels of the calibration curve (ten; [`LEVELS`] among them).
pub const CURVE: [f64; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95];

/// Bins of the PIT histogram.
pub const PIT_BINS: usize = 10;

/// Predictive scores, the keys of `eval.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UqScores {
    /// Relative L2 error of the predictive mean.
    pub rel_l2: f64,
    /// Mean Gaussian negative log predictive density per entry.
    pub nll: f64,
    /// Mean continuous ranked probability score per entry.
    pub crps: f64,
    /// Empirical coverage of the central intervals, by nominal level (`"0.9"` → fraction).
    pub coverage: BTreeMap<String, f64>,
    /// Coverage at every level of [`CURVE`] (the calibration curve).
    pub calibration_curve: BTreeMap<String, f64>,
    /// Mean |coverage − nominal| over [`CURVE`] (0 for a calibrated predictive).
    pub calibration_error: f64,
    /// Mean width of the central 90 % interval (data units).
    pub width_90: f64,
    /// PIT histogram: fraction of entries per tenth of `[0, 1]`.
    pub pit: Vec<f64>,
    /// SBC and TARP checks (posterior blocks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posterior_checks: Option<PosteriorChecks>,
    /// The scores after the run's `calibration.json` (runs that have one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recalibrated: Option<Box<Recalibrated>>,
}

/// A block's scores after post-hoc recalibration (`varphi calibrate`), beside the raw ones.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recalibrated {
    /// Calibration cases the factors were fitted on.
    pub fitted_on_cases: usize,
    /// Spread factor `k`: every sample is moved to `median + k (x − median)` per entry.
    pub scale_factor: f64,
    /// The scores of the scaled samples.
    pub scaled: UqScores,
    /// Split-conformal factors by level: the interval `median + k_p [q_lo − median, q_hi − median]`.
    pub conformal_factors: BTreeMap<String, f64>,
    /// Coverage of those conformal intervals by level.
    pub conformal_coverage: BTreeMap<String, f64>,
}

/// For each entry and each level of [`CURVE`], the spread factor that just covers the truth:
/// `t = (y − med) / (q_hi − med)` above the median, `(med − y) / (med − q_lo)` below. The
/// interval scaled by `k` about the median covers `y` iff `t ≤ k`, so coverage at scale `k` is
/// the fraction of `t ≤ k` ([`coverage_at`]), and the raw coverage that at `k = 1`.
pub fn spread_ratios(samples: &[Vec<f64>], truth: &[f64]) -> Vec<Vec<f64>> {
    let s = samples.len();
    let mut t = vec![Vec::with_capacity(truth.len()); CURVE.len()];
    let mut col = vec![0.0; s];
    for (j, &y) in truth.iter().enumerate() {
        for (c, x) in col.iter_mut().zip(samples) {
            *c = x[j];
        }
        col.sort_by(f64::total_cmp);
        let med = quantile(&col, 0.5);
        for (k, &p) in CURVE.iter().enumerate() {
            let (lo, hi) = (
                quantile(&col, (1.0 - p) / 2.0),
                quantile(&col, (1.0 + p) / 2.0),
            );
            let (dist, half) = if y >= med {
                (y - med, hi - med)
            } else {
                (med - y, med - lo)
            };
            t[k].push(if dist <= 0.0 {
                0.0
            } else if half <= 0.0 {
                f64::INFINITY
            } else {
                dist / half
            });
        }
    }
    t
}

/// The fraction of sorted ratios `t ≤ k`.
pub fn coverage_at(sorted: &[f64], k: f64) -> f64 {
    sorted.partition_point(|&t| t <= k) as f64 / sorted.len().max(1) as f64
}

/// Samples `[S][m]` moved to `median + k (x − median)` entry by entry.
pub fn scale_samples(samples: &[Vec<f64>], k: f64) -> Vec<Vec<f64>> {
    let m = samples.first().map_or(0, Vec::len);
    let mut out = samples.to_vec();
    let mut col = vec![0.0; samples.len()];
    for j in 0..m {
        for (c, x) in col.iter_mut().zip(samples) {
            *c = x[j];
        }
        col.sort_by(f64::total_cmp);
        let med = quantile(&col, 0.5);
        for x in out.iter_mut() {
            x[j] = med + k * (x[j] - med);
        }
    }
    out
}

/// Score `samples` `[S][n·d]` (sample-major, each of length `truth.len()`) against `truth`.
pub fn score(samples: &[Vec<f64>], truth: &[f64], levels: &[f64]) -> UqScores {
    let s = samples.len();
    assert!(
        s >= 2,
        "uq::score needs at least 2 predictive samples, got {s}"
    );
    assert!(
        samples.iter().all(|x| x.len() == truth.len()),
        "uq::score: every sample must have {} entries",
        truth.len()
    );
    let n = truth.len();
    let (mut err2, mut norm2, mut nll, mut crps, mut width) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut inside = vec![0usize; levels.len()];
    let mut inside_curve = [0usize; CURVE.len()];
    let mut pit = vec![0.0; PIT_BINS];
    let mut col = vec![0.0; s];
    let scale2 = truth.iter().map(|y| y * y).sum::<f64>() / n as f64;
    for (j, &y) in truth.iter().enumerate() {
        for (c, x) in col.iter_mut().zip(samples) {
            *c = x[j];
        }
        col.sort_by(f64::total_cmp);
        let m = col.iter().sum::<f64>() / s as f64;
        let v = col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (s - 1) as f64;
        // A variance floor keeps a collapsed predictive from giving −∞: 1e-12 of the data's
        // mean square.
        let v = v.max(1e-12 * scale2.max(1e-300));
        err2 += (m - y).powi(2);
        norm2 += y * y;
        nll += 0.5 * ((y - m).powi(2) / v + v.ln() + (2.0 * std::f64::consts::PI).ln());
        crps += crps_sorted(&col, y);
        for (k, &p) in levels.iter().enumerate() {
            let (lo, hi) = (
                quantile(&col, (1.0 - p) / 2.0),
                quantile(&col, (1.0 + p) / 2.0),
            );
            if lo <= y && y <= hi {
                inside[k] += 1;
            }
        }
        for (k, &p) in CURVE.iter().enumerate() {
            let (lo, hi) = (
                quantile(&col, (1.0 - p) / 2.0),
                quantile(&col, (1.0 + p) / 2.0),
            );
            if lo <= y && y <= hi {
                inside_curve[k] += 1;
            }
            if p == 0.9 {
                width += hi - lo;
            }
        }
        add_pit(&mut pit, &col, y);
    }
    let curve: BTreeMap<String, f64> = CURVE
        .iter()
        .zip(inside_curve)
        .map(|(p, k)| (format!("{p}"), k as f64 / n as f64))
        .collect();
    let calibration_error = CURVE
        .iter()
        .map(|p| (curve[&format!("{p}")] - p).abs())
        .sum::<f64>()
        / CURVE.len() as f64;
    UqScores {
        rel_l2: (err2 / norm2.max(1e-300)).sqrt(),
        nll: nll / n as f64,
        crps: crps / n as f64,
        coverage: levels
            .iter()
            .zip(inside)
            .map(|(p, k)| (format!("{p}"), k as f64 / n as f64))
            .collect(),
        calibration_curve: curve,
        calibration_error,
        width_90: width / n as f64,
        pit: pit.iter().map(|c| c / n as f64).collect(),
        posterior_checks: None,
        recalibrated: None,
    }
}

/// Add one entry's PIT to the histogram. The rank `r = #{x < y}` (ties counted half) of `S`
/// samples is spread evenly over `[r/(S+1), (r+1)/(S+1)]`, so a calibrated predictive gives a
/// flat histogram in expectation for any `S`.
fn add_pit(hist: &mut [f64], sorted: &[f64], y: f64) {
    let s = sorted.len();
    let below = sorted.partition_point(|&x| x < y);
    let ties = sorted[below..].partition_point(|&x| x == y);
    let r = below as f64 + ties as f64 / 2.0;
    let (a, b) = (r / (s + 1) as f64, (r + 1.0) / (s + 1) as f64);
    let bins = hist.len();
    for (k, h) in hist.iter_mut().enumerate() {
        let (lo, hi) = (k as f64 / bins as f64, (k + 1) as f64 / bins as f64);
        let overlap = (b.min(hi) - a.max(lo)).max(0.0);
        *h += overlap / (b - a);
    }
}

/// Linear-interpolation quantile (type 7) of sorted values.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    let pos = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 < sorted.len() {
        sorted[i] * (1.0 - f) + sorted[i + 1] * f
    } else {
        sorted[i]
    }
}

/// CRPS of the empirical distribution of sorted samples at `y`:
/// `mean|x − y| − ½ mean|x − x′|`, with `mean|x − x′| = 2/S² Σ_i (2i − S + 1) x_(i)`.
pub fn crps_sorted(sorted: &[f64], y: f64) -> f64 {
    let s = sorted.len() as f64;
    let e1 = sorted.iter().map(|x| (x - y).abs()).sum::<f64>() / s;
    let e2 = sorted
        .iter()
        .enumerate()
        .map(|(i, x)| (2.0 * i as f64 - s + 1.0) * x)
        .sum::<f64>()
        * 2.0
        / (s * s);
    e1 - 0.5 * e2
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    /// Truth and predictive samples from the same Gaussians: calibrated by construction.
    fn simulate(
        n: usize,
        s: usize,
        spread: f64,
        seed: u64,
    ) -> (Vec<Vec<f64>>, Vec<f64>, Vec<(f64, f64)>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let params: Vec<(f64, f64)> = (0..n)
            .map(|i| ((i as f64 * 0.37).sin() * 3.0, 0.2 + (i % 7) as f64 * 0.1))
            .collect();
        let truth = params
            .iter()
            .map(|&(m, sd)| Normal::new(m, sd).unwrap().sample(&mut rng))
            .collect();
        let samples = (0..s)
            .map(|_| {
                params
                    .iter()
                    .map(|&(m, sd)| Normal::new(m, sd * spread).unwrap().sample(&mut rng))
                    .collect()
            })
            .collect();
        (samples, truth, params)
    }

    #[test]
    fn calibrated_predictive_covers_at_the_nominal_levels() {
        let (n, s) = (4000, 400);
        let (samples, truth, params) = simulate(n, s, 1.0, 1);
        let sc = score(&samples, &truth, &LEVELS);
        for p in LEVELS {
            let got = sc.coverage[&format!("{p}")];
            // Binomial standard error plus the O(1/S) bias of empirical quantiles.
            let tol = 4.0 * (p * (1.0 - p) / n as f64).sqrt() + 2.0 / s as f64;
            assert!((got - p).abs() < tol, "coverage at {p}: {got}");
        }
        // Gaussian NLL and CRPS against their closed forms averaged over the cases.
        let nll: f64 = params
            .iter()
            .zip(&truth)
            .map(|(&(m, sd), y)| {
                0.5 * ((y - m) / sd).powi(2) + sd.ln() + 0.5 * (2.0 * std::f64::consts::PI).ln()
            })
            .sum::<f64>()
            / n as f64;
        assert!((sc.nll - nll).abs() < 0.02, "nll {} vs {nll}", sc.nll);
        let crps: f64 = params
            .iter()
            .zip(&truth)
            .map(|(&(m, sd), y)| gaussian_crps(m, sd, *y))
            .sum::<f64>()
            / n as f64;
        assert!(
            (sc.crps - crps).abs() < 0.01 * crps,
            "crps {} vs {crps}",
            sc.crps
        );
        // Over-dispersed and under-dispersed predictives cover too much and too little.
        let wide = score(&simulate(n, s, 2.0, 1).0, &truth, &[0.9]).coverage["0.9"];
        let narrow = score(&simulate(n, s, 0.5, 1).0, &truth, &[0.9]).coverage["0.9"];
        assert!(wide > 0.97 && narrow < 0.65, "{wide} {narrow}");
        assert!(sc.rel_l2 > 0.0 && sc.rel_l2 < 1.0);
        // The calibration curve follows the diagonal and the PIT histogram is flat.
        assert!(sc.calibration_error < 0.02, "{:?}", sc.calibration_curve);
        assert_eq!(sc.calibration_curve["0.9"], sc.coverage["0.9"]);
        assert!(
            sc.pit.iter().all(|h| (h - 0.1).abs() < 0.015),
            "{:?}",
            sc.pit
        );
        // Mean 90 % width of N(m, sd²): 2 · 1.6449 · mean(sd).
        let sd_mean = params.iter().map(|p| p.1).sum::<f64>() / n as f64;
        assert!((sc.width_90 / (2.0 * 1.644_85 * sd_mean) - 1.0).abs() < 0.02);
        // An over-confident predictive piles PIT into the outer bins.
        let narrow = score(&simulate(n, s, 0.5, 1).0, &truth, &[0.9]);
        assert!(
            narrow.pit[0] > 0.2 && narrow.pit[9] > 0.2,
            "{:?}",
            narrow.pit
        );
    }

    #[test]
    fn spread_ratios_give_the_coverage_of_scaled_samples() {
        let (samples, truth, _) = simulate(500, 64, 0.7, 3);
        let t = spread_ratios(&samples, &truth);
        let raw = score(&samples, &truth, &CURVE);
        for k in [0.5, 1.0, 1.43, 2.0] {
            let scaled = score(&scale_samples(&samples, k), &truth, &CURVE);
            for (i, p) in CURVE.iter().enumerate() {
                let mut sorted = t[i].clone();
                sorted.sort_by(f64::total_cmp);
                let key = format!("{p}");
                assert!(
                    (coverage_at(&sorted, k) - scaled.coverage[&key]).abs() < 1e-12,
                    "k {k}, level {p}"
                );
                if k == 1.0 {
                    assert_eq!(coverage_at(&sorted, 1.0), raw.coverage[&key]);
                }
            }
        }
    }

    /// CRPS of N(m, sd²) at y: sd [z(2Φ(z) − 1) + 2φ(z) − 1/√π], z = (y − m)/sd.
    fn gaussian_crps(m: f64, sd: f64, y: f64) -> f64 {
        let z = (y - m) / sd;
        let phi = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let cdf = varphi_models::distributions::standard_normal_cdf(z);
        sd * (z * (2.0 * cdf - 1.0) + 2.0 * phi - 1.0 / std::f64::consts::PI.sqrt())
    }

    #[test]
    fn crps_and_quantiles_of_small_ensembles() {
        // Two samples {0, 2} at y = 0: E|X − y| = 1, E|X − X′| = 1 → CRPS = 0.5.
        assert!((crps_sorted(&[0.0, 2.0], 0.0) - 0.5).abs() < 1e-15);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), 3.0);
        assert!((quantile(&[1.0, 2.0], 0.25) - 1.25).abs() < 1e-15);
        // A perfect point prediction.
        let s = score(&[vec![1.0, 2.0], vec![1.0, 2.0]], &[1.0, 2.0], &[0.9]);
        assert_eq!((s.rel_l2, s.crps, s.coverage["0.9"]), (0.0, 0.0, 1.0));
    }
}
