//! Printing of evaluation tables shared by several kinds.

use crate::ranks::PosteriorChecks;
use crate::uq::UqScores;
use std::path::Path;

/// The rows of one set of scores: relative L2, NLL, CRPS and coverage by level, labels padded to
/// `width`.
pub fn print_scores(s: &UqScores, width: usize) {
    println!("  {:<width$} {:>12.5}", "relative L2 of the mean", s.rel_l2);
    println!("  {:<width$} {:>12.5}", "NLL per entry", s.nll);
    println!("  {:<width$} {:>12.5}", "CRPS per entry", s.crps);
    for (level, c) in &s.coverage {
        let pct = level.parse::<f64>().unwrap_or(f64::NAN) * 100.0;
        println!("  {:<width$} {c:>12.5}", format!("coverage {pct:.0} %"));
    }
    println!(
        "  {:<width$} {:>12.5}",
        "calibration error (10 levels)", s.calibration_error
    );
    if let Some(c) = &s.posterior_checks {
        print_posterior_checks(c);
    }
    if let Some(r) = &s.recalibrated {
        println!(
            "  recalibrated (spread ×{:.4}, fitted on {} cases): NLL {:.5}, CRPS {:.5}, calibration error {:.5}",
            r.scale_factor,
            r.fitted_on_cases,
            r.scaled.nll,
            r.scaled.crps,
            r.scaled.calibration_error
        );
        let cov = |m: &std::collections::BTreeMap<String, f64>| {
            ["0.5", "0.9", "0.95"]
                .iter()
                .map(|k| format!("{:.3}", m.get(*k).copied().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "    coverage 50 / 90 / 95 %: scaled {}, conformal {}",
            cov(&r.scaled.coverage),
            cov(&r.conformal_coverage)
        );
    }
}

/// One line of SBC and TARP results.
pub fn print_posterior_checks(c: &PosteriorChecks) {
    println!(
        "  SBC ranks over {} cases: max χ² {:.1} ({} dof), p = {:.3}; TARP KS {:.3}, p = {:.3}{}",
        c.cases,
        c.sbc_chi2,
        c.sbc_dof,
        c.sbc_p_value,
        c.tarp_ks,
        c.tarp_p_value,
        if c.sbc_p_value < 0.01 || c.tarp_p_value < 0.01 {
            "  (not calibrated)"
        } else {
            ""
        }
    );
}

/// Coverage at `level` (`"0.9"`), NaN if not scored.
pub fn coverage(s: &UqScores, level: &str) -> f64 {
    s.coverage.get(level).copied().unwrap_or(f64::NAN)
}

/// The evaluation table of a parameter posterior: one row per parameter with a point-error
/// column, NLL, CRPS and coverage at 50/90/95 %.
pub fn print_parameter_table(
    run: &Path,
    (n_test, n_samples, epochs): (usize, usize, usize),
    what: &str,
    error_name: &str,
    rows: Vec<(String, f64, &UqScores)>,
) {
    println!(
        "evaluation of {} ({n_test} test cases × {n_samples} posterior samples, {epochs} epochs)",
        run.display()
    );
    println!("  {what}");
    println!(
        "  {:<10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "parameter", error_name, "NLL", "CRPS", "cov 50", "cov 90", "cov 95"
    );
    for (name, err, s) in rows {
        println!(
            "  {name:<10} {err:>10.4} {:>10.4} {:>10.4} {:>8.3} {:>8.3} {:>8.3}",
            s.nll,
            s.crps,
            coverage(s, "0.5"),
            coverage(s, "0.9"),
            coverage(s, "0.95")
        );
    }
}
