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

use serde::Serialize;
use std::collections::BTreeMap;

/// The nominal levels reported by default.
pub const LEVELS: [f64; 3] = [0.5, 0.9, 0.95];

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
    let (mut err2, mut norm2, mut nll, mut crps) = (0.0, 0.0, 0.0, 0.0);
    let mut inside = vec![0usize; levels.len()];
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
    }
    UqScores {
        rel_l2: (err2 / norm2.max(1e-300)).sqrt(),
        nll: nll / n as f64,
        crps: crps / n as f64,
        coverage: levels
            .iter()
            .zip(inside)
            .map(|(p, k)| (format!("{p}"), k as f64 / n as f64))
            .collect(),
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
    }

    /// CRPS of N(m, sd²) at y: sd [z(2Φ(z) − 1) + 2φ(z) − 1/√π], z = (y − m)/sd.
    fn gaussian_crps(m: f64, sd: f64, y: f64) -> f64 {
        let z = (y - m) / sd;
        let phi = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let cdf = 0.5 * (1.0 + erf(z / 2f64.sqrt()));
        sd * (z * (2.0 * cdf - 1.0) + 2.0 * phi - 1.0 / std::f64::consts::PI.sqrt())
    }

    /// erf by Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7).
    fn erf(x: f64) -> f64 {
        let t = 1.0 / (1.0 + 0.3275911 * x.abs());
        let poly = t
            * (0.254829592
                + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
        (1.0 - poly * (-x * x).exp()).copysign(x)
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
