//! Post-hoc recalibration of a trained run's predictive distributions and the [`Scorer`] every
//! evaluation scores through.
//!
//! `varphi calibrate RUN` evaluates the run on labelled *calibration* cases kept apart from the
//! test split (the validation split, fresh draws of the run's generator, or a file) and fits,
//! for every scored block (eval.json's `forward`, `posterior`, …), from the spread ratios `t`
//! of [`uq::spread_ratios`] pooled over the block's `N` entries:
//!
//! ```text
//! spread scaling   k   = argmin_k Σ_{p ∈ CURVE} (C_p(k) − p)²,  C_p(k) = #{t_p ≤ k} / N
//!                  samples move to median + k (x − median) entry by entry
//! split conformal  k_p = t_p,(⌈(N+1) p⌉)   (the ⌈(N+1)p⌉-th smallest ratio; ∞ if > N)
//!                  interval median + k_p [q_lo − median, q_hi − median]
//! ```
//!
//! For a Gaussian predictive whose spread is off by a factor `c`, every `C_p(k)` crosses `p` at
//! `k = c`, so `k` recovers `c`. The conformal intervals have coverage ≥ p on exchangeable
//! cases (here: entries pooled over cases, so the guarantee is for a random entry of a random
//! case). The fit is written to `RUN/calibration.json`; `eval` then reports each block's
//! recalibrated scores beside the raw ones, and `predict` scales its samples by `k`.

use crate::error::{TrainError, io_err};
use crate::ranks;
use crate::uq::{self, CURVE, LEVELS, Recalibrated, UqScores};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The fit's file name in a run directory.
pub const FILE: &str = "calibration.json";

/// What a scored block is: a predictive of solutions, or a posterior over parameters whose
/// truths were drawn from the prior (these also get SBC and TARP checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Predictive of a solution or data (forward surrogate, CVAE, posterior predictive).
    Predictive,
    /// Amortised posterior over parameters of simulated cases.
    Posterior,
}

/// The recalibration of one block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockFit {
    /// Calibration cases.
    pub cases: usize,
    /// Entries pooled (cases × values per case).
    pub entries: usize,
    /// Spread factor `k`.
    pub scale_factor: f64,
    /// Conformal factors `k_p` by level; `null`: too few entries for a finite bound.
    pub conformal_factors: BTreeMap<String, Option<f64>>,
    /// Coverage on the calibration cases before (the calibration curve).
    pub coverage_before: BTreeMap<String, f64>,
    /// Coverage on the calibration cases after scaling by `k` (in-sample).
    pub coverage_scaled: BTreeMap<String, f64>,
}

/// `RUN/calibration.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CalibrationFile {
    /// Where the calibration cases came from, in words.
    pub source: String,
    /// Calibration cases.
    pub cases: usize,
    /// Epochs of the checkpoint it was fitted on.
    pub epochs_done: usize,
    /// `"best"` or `"last"`: the checkpoint it was fitted on.
    pub checkpoint: String,
    /// Fits by block name.
    pub blocks: BTreeMap<String, BlockFit>,
}

impl CalibrationFile {
    /// Read `dir/calibration.json`, if present.
    pub fn read(dir: &Path) -> Result<Option<Self>, TrainError> {
        let path = dir.join(FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| TrainError::Run {
                path: path.clone(),
                message: format!(
                    "is not a calibration file of this version ({e}); rerun `varphi calibrate`"
                ),
            })
    }

    /// Write `dir/calibration.json` (atomically: a temporary file renamed).
    pub fn write(&self, dir: &Path) -> Result<PathBuf, TrainError> {
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(self).expect("json"))
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(path)
    }
}

/// A block's calibration curves, for the reliability diagram.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Block name.
    pub block: String,
    /// Coverage at [`CURVE`] before recalibration.
    pub raw: Vec<f64>,
    /// After spread scaling, if recalibrated.
    pub scaled: Option<Vec<f64>>,
    /// Of the conformal intervals, if recalibrated.
    pub conformal: Option<Vec<f64>>,
}

/// Predictive quantiles and truth of the first cases of a block, for the band plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Bands {
    /// Block name.
    pub block: String,
    /// Up to three cases.
    pub cases: Vec<CaseBands>,
}

/// One case of [`Bands`]: per entry, in data units.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseBands {
    /// 5 % and 95 % quantiles (the central 90 % interval).
    pub q05: Vec<f64>,
    /// 95 % quantile.
    pub q95: Vec<f64>,
    /// 25 % quantile (the central 50 % interval).
    pub q25: Vec<f64>,
    /// 75 % quantile.
    pub q75: Vec<f64>,
    /// Predictive mean.
    pub mean: Vec<f64>,
    /// Truth.
    pub truth: Vec<f64>,
}

/// The bands of the first (up to) three cases of `samples` `[S][n·d]`.
fn bands(block: &str, samples: &[Vec<f64>], truth: &[f64], cases: usize) -> Bands {
    let d = truth.len() / cases.max(1);
    let mut col = vec![0.0; samples.len()];
    let cases = (0..cases.min(3))
        .map(|i| {
            let mut c = CaseBands {
                q05: vec![],
                q95: vec![],
                q25: vec![],
                q75: vec![],
                mean: vec![],
                truth: truth[i * d..(i + 1) * d].to_vec(),
            };
            for j in i * d..(i + 1) * d {
                for (c, x) in col.iter_mut().zip(samples) {
                    *c = x[j];
                }
                col.sort_by(f64::total_cmp);
                c.q05.push(uq::quantile(&col, 0.05));
                c.q95.push(uq::quantile(&col, 0.95));
                c.q25.push(uq::quantile(&col, 0.25));
                c.q75.push(uq::quantile(&col, 0.75));
                c.mean.push(col.iter().sum::<f64>() / col.len() as f64);
            }
            c
        })
        .collect();
    Bands {
        block: block.to_string(),
        cases,
    }
}

struct Recorded {
    cases: usize,
    ratios: Vec<Vec<f64>>,
    raw: BTreeMap<String, f64>,
}

/// Scores blocks of predictive samples: plain, applying a calibration file, or recording the
/// blocks to fit one. Every kind's evaluation scores through the [`crate::kind::Loaded`] run's
/// scorer, so recalibration and the reliability diagram are the same for every kind.
#[derive(Default)]
pub struct Scorer {
    apply: Option<CalibrationFile>,
    record: Option<RefCell<BTreeMap<String, Recorded>>>,
    curves: RefCell<Vec<Curve>>,
    bands: RefCell<Vec<Bands>>,
}

impl Scorer {
    /// Score without recalibration.
    pub fn plain() -> Self {
        Self::default()
    }

    /// Score and add each block's recalibrated scores from `file`.
    pub fn applying(file: CalibrationFile) -> Self {
        Self {
            apply: Some(file),
            ..Self::default()
        }
    }

    /// Score and keep what [`Scorer::fit`] needs.
    pub fn recording() -> Self {
        Self {
            record: Some(RefCell::new(BTreeMap::new())),
            ..Self::default()
        }
    }

    /// The calibration applied, if any.
    pub fn calibration(&self) -> Option<&CalibrationFile> {
        self.apply.as_ref()
    }

    /// Score `samples` `[S][n·d]` against `truth` `[n·d]` for `cases = n` cases as block
    /// `block` (the uq scores, plus SBC/TARP for posteriors, plus the recalibrated scores when
    /// a fit for `block` is applied).
    pub fn score(
        &self,
        block: &str,
        samples: &[Vec<f64>],
        truth: &[f64],
        cases: usize,
        role: Role,
    ) -> UqScores {
        let base = |samples: &[Vec<f64>]| {
            let mut s = uq::score(samples, truth, &LEVELS);
            if role == Role::Posterior {
                s.posterior_checks =
                    ranks::posterior_checks(samples, truth, truth.len() / cases.max(1), &CURVE);
            }
            s
        };
        let mut scores = base(samples);
        let raw_curve: Vec<f64> = scores.calibration_curve.values().copied().collect();
        let mut curve = Curve {
            block: block.to_string(),
            raw: raw_curve,
            scaled: None,
            conformal: None,
        };
        if let Some(rec) = &self.record {
            rec.borrow_mut().insert(
                block.to_string(),
                Recorded {
                    cases,
                    ratios: uq::spread_ratios(samples, truth),
                    raw: scores.calibration_curve.clone(),
                },
            );
        }
        if let Some(fit) = self.apply.as_ref().and_then(|f| f.blocks.get(block)) {
            let scaled = base(&uq::scale_samples(samples, fit.scale_factor));
            let ratios = uq::spread_ratios(samples, truth);
            let conformal_coverage: BTreeMap<String, f64> = CURVE
                .iter()
                .zip(ratios)
                .map(|(p, mut t)| {
                    let key = format!("{p}");
                    t.sort_by(f64::total_cmp);
                    let k = fit.conformal_factors.get(&key).copied().flatten();
                    (key, k.map_or(1.0, |k| uq::coverage_at(&t, k)))
                })
                .collect();
            curve.scaled = Some(scaled.calibration_curve.values().copied().collect());
            curve.conformal = Some(conformal_coverage.values().copied().collect());
            scores.recalibrated = Some(Box::new(Recalibrated {
                fitted_on_cases: fit.cases,
                scale_factor: fit.scale_factor,
                scaled,
                conformal_factors: fit
                    .conformal_factors
                    .iter()
                    .map(|(k, v)| (k.clone(), v.unwrap_or(f64::INFINITY)))
                    .filter(|(_, v)| v.is_finite())
                    .collect(),
                conformal_coverage,
            }));
        }
        self.curves.borrow_mut().push(curve);
        self.bands
            .borrow_mut()
            .push(bands(block, samples, truth, cases));
        scores
    }

    /// The bands of every block scored so far, in order.
    pub fn bands(&self) -> Vec<Bands> {
        self.bands.borrow().clone()
    }

    /// The calibration curves of every block scored so far, in order.
    pub fn curves(&self) -> Vec<Curve> {
        self.curves.borrow().clone()
    }

    /// Fit every recorded block (see the module docs). Empty unless [`Scorer::recording`].
    pub fn fit(&self) -> BTreeMap<String, BlockFit> {
        let Some(rec) = &self.record else {
            return BTreeMap::new();
        };
        rec.borrow()
            .iter()
            .map(|(name, r)| (name.clone(), fit_block(r.cases, &r.ratios, &r.raw)))
            .collect()
    }
}

/// The fit of one block from its spread ratios (one vector per level of [`CURVE`]).
fn fit_block(cases: usize, ratios: &[Vec<f64>], raw: &BTreeMap<String, f64>) -> BlockFit {
    let sorted: Vec<Vec<f64>> = ratios
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.sort_by(f64::total_cmp);
            t
        })
        .collect();
    let n = sorted.first().map_or(0, Vec::len);
    let conformal: Vec<Option<f64>> = CURVE
        .iter()
        .zip(&sorted)
        .map(|(p, t)| conformal_factor(t, *p))
        .collect();
    let k = scale_factor(&sorted, &conformal);
    BlockFit {
        cases,
        entries: n,
        scale_factor: k,
        conformal_factors: CURVE
            .iter()
            .zip(&conformal)
            .map(|(p, k)| (format!("{p}"), *k))
            .collect(),
        coverage_before: raw.clone(),
        coverage_scaled: CURVE
            .iter()
            .zip(&sorted)
            .map(|(p, t)| (format!("{p}"), uq::coverage_at(t, k)))
            .collect(),
    }
}

/// Split-conformal factor at level `p` from sorted ratios: the `⌈(N+1)p⌉`-th smallest, `None`
/// when that exceeds `N` or the ratio is infinite (a collapsed predictive).
pub fn conformal_factor(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    let rank = ((n + 1) as f64 * p).ceil() as usize;
    (rank >= 1 && rank <= n)
        .then(|| sorted[rank - 1])
        .filter(|k| k.is_finite())
}

/// The spread factor minimising the squared calibration-curve error `Σ_p (C_p(k) − p)²` over
/// log-spaced candidates spanning the conformal factors (and each of them); 1 when no level has
/// a finite conformal factor.
pub fn scale_factor(sorted: &[Vec<f64>], conformal: &[Option<f64>]) -> f64 {
    let finite: Vec<f64> = conformal
        .iter()
        .flatten()
        .copied()
        .filter(|k| *k > 0.0)
        .collect();
    if finite.is_empty() {
        return 1.0;
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min) / 4.0;
    let hi = finite.iter().copied().fold(0.0, f64::max) * 4.0;
    let loss = |k: f64| -> f64 {
        CURVE
            .iter()
            .zip(sorted)
            .map(|(p, t)| (uq::coverage_at(t, k) - p).powi(2))
            .sum()
    };
    let steps = 4000;
    let grid = (0..=steps).map(|i| lo * (hi / lo).powf(i as f64 / steps as f64));
    // Among equally good factors (the loss is piecewise constant) take the middle of the best
    // run of grid points, not its left edge.
    let mut best = (f64::INFINITY, 1.0);
    let mut run: Vec<f64> = Vec::new();
    for k in grid.chain(finite.iter().copied()) {
        let l = loss(k);
        if l < best.0 - 1e-15 {
            best = (l, k);
            run = vec![k];
        } else if (l - best.0).abs() <= 1e-15 {
            run.push(k);
        }
    }
    run.sort_by(f64::total_cmp);
    if run.is_empty() {
        best.1
    } else {
        (run[0] * run[run.len() - 1]).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    /// `n` cases of `d` entries, truth ~ N(m, sd²), samples ~ N(m, (sd / c)²): a predictive
    /// `c` times too narrow.
    fn misscaled(n: usize, d: usize, s: usize, c: f64, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let z = Normal::new(0.0, 1.0).unwrap();
        let params: Vec<(f64, f64)> = (0..n * d)
            .map(|i| ((i as f64 * 0.37).sin() * 3.0, 0.2 + (i % 7) as f64 * 0.1))
            .collect();
        let truth = params
            .iter()
            .map(|(m, sd)| m + sd * z.sample(&mut rng))
            .collect();
        let samples = (0..s)
            .map(|_| {
                params
                    .iter()
                    .map(|(m, sd)| m + sd / c * z.sample(&mut rng))
                    .collect()
            })
            .collect();
        (samples, truth)
    }

    #[test]
    fn recalibration_recovers_a_known_misscaling_and_fixes_coverage_out_of_sample() {
        for c in [3.0, 0.5] {
            // Fit on 50 calibration cases of 200 entries. With S samples the interval ends are
            // estimates, and the factor that calibrates *those* intervals is slightly larger
            // than `c` (≈ 2 % at S = 200); S = 1000 isolates the method's own accuracy.
            let (samples, truth) = misscaled(50, 200, 1000, c, 11);
            let rec = Scorer::recording();
            let before = rec.score("forward", &samples, &truth, 50, Role::Predictive);
            let fits = rec.fit();
            let fit = &fits["forward"];
            assert_eq!((fit.cases, fit.entries), (50, 10_000));
            assert!(
                (fit.scale_factor / c - 1.0).abs() < 0.02,
                "factor {} for a predictive {c}× too narrow",
                fit.scale_factor
            );
            for p in CURVE {
                let k = fit.conformal_factors[&format!("{p}")].unwrap();
                assert!((k / c - 1.0).abs() < 0.08, "conformal factor {k} at {p}");
            }
            assert!(before.calibration_error > 0.1);
            // Applied to fresh test cases (another seed): coverage near nominal both ways.
            let (samples, truth) = misscaled(200, 50, 200, c, 12);
            let file = CalibrationFile {
                source: "test".into(),
                cases: 50,
                epochs_done: 0,
                checkpoint: "last".into(),
                blocks: fits,
            };
            let s =
                Scorer::applying(file).score("forward", &samples, &truth, 200, Role::Predictive);
            let r = s.recalibrated.expect("applied");
            for p in LEVELS {
                let key = format!("{p}");
                let tol = 0.02;
                assert!(
                    (r.scaled.coverage[&key] - p).abs() < tol,
                    "scaled {p}: {r:?}"
                );
                assert!(
                    (r.conformal_coverage[&key] - p).abs() < tol,
                    "conformal {p}: {r:?}"
                );
            }
            assert!(r.scaled.calibration_error < 0.015);
            // The raw scores are unchanged by applying.
            assert!((s.coverage["0.9"] - before.coverage["0.9"]).abs() < 0.05);
            assert!(s.nll > r.scaled.nll);
        }
    }

    #[test]
    fn conformal_factors_follow_the_finite_sample_rank() {
        let t: Vec<f64> = (1..=9).map(f64::from).collect();
        // N = 9: ⌈10 · 0.5⌉ = 5 → 5; ⌈10 · 0.9⌉ = 9 → 9; ⌈10 · 0.95⌉ = 10 > N → unbounded.
        assert_eq!(conformal_factor(&t, 0.5), Some(5.0));
        assert_eq!(conformal_factor(&t, 0.9), Some(9.0));
        assert_eq!(conformal_factor(&t, 0.95), None);
        assert_eq!(conformal_factor(&[0.5, f64::INFINITY], 0.6), None);
        // A scorer that applies no fit for a block leaves it alone; an unknown block too.
        let s = Scorer::plain().score("x", &[vec![0.0], vec![1.0]], &[0.5], 1, Role::Predictive);
        assert!(s.recalibrated.is_none() && s.posterior_checks.is_none());
    }
}
