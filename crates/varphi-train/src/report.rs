//! `varphi report RUN`: one self-contained HTML page of a run — its config, training curves,
//! predictive bands against the truth, reliability diagram, and every scored block's numbers
//! from `eval.json` (images embedded as base64 PNG, no scripts, no network).
//!
//! Every number in the tables carries the exact `eval.json` value in a `data-v` attribute (the
//! text shows it rounded), so the page can be checked against the evaluation by parsing.

use crate::error::{TrainError, io_err};
use base64::Engine;
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The images a report embeds, if the run has them: (file, heading, what it shows).
const IMAGES: [(&str, &str, &str); 4] = [
    (
        "loss.png",
        "Training curves",
        "train, test and validation terms per epoch (symmetric-log axis when the first epochs dominate)",
    ),
    (
        "bands.png",
        "Predictive vs truth",
        "predictive mean with central 50 % and 90 % intervals against the truth, first test cases of each scored block",
    ),
    (
        "calibration.png",
        "Reliability diagram",
        "coverage of the central intervals against their nominal level (diagonal: calibrated; below: over-confident), before and after recalibration",
    ),
    ("samples.png", "Samples", "the kind's sample plot"),
];

/// A block of `eval.json`: an object with `coverage` and `calibration_curve`, found at `path`.
struct Block<'a> {
    path: String,
    scores: &'a Value,
}

fn blocks<'a>(v: &'a Value, path: &str, out: &mut Vec<Block<'a>>) {
    match v {
        Value::Object(m) => {
            if m.contains_key("coverage") && m.contains_key("calibration_curve") {
                out.push(Block {
                    path: if path.is_empty() {
                        "(scores)".into()
                    } else {
                        path.to_string()
                    },
                    scores: v,
                });
            }
            for (k, x) in m {
                if k == "recalibrated" {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                blocks(x, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                // `[name, scores]` pairs (per-parameter tables) are named by their name.
                match x.as_array().map(Vec::as_slice) {
                    Some([Value::String(name), s]) => blocks(s, &format!("{path}.{name}"), out),
                    _ => {
                        let name = x
                            .get("name")
                            .and_then(Value::as_str)
                            .map_or(i.to_string(), str::to_string);
                        blocks(x, &format!("{path}.{name}"), out);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Top-level numbers of `eval.json` that are not inside a block (test ELBO, sizes, …).
fn headline(eval: &Value) -> Vec<(String, f64)> {
    eval.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                .collect()
        })
        .unwrap_or_default()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A table cell holding `v`: exact value in `data-v`, four significant digits shown.
fn num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => {
            let shown = if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e5) {
                format!("{x:.3e}")
            } else {
                format!("{:.4}", x)
            };
            format!("<td data-v=\"{x}\">{shown}</td>")
        }
        _ => "<td>—</td>".into(),
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    get(v, path).and_then(Value::as_f64)
}

/// Write the report of run `dir` to `out` (default `dir/report.html`); runs `varphi eval`
/// first if the run has no `eval.json`. Returns the path written.
pub fn write_report(dir: &Path, out: Option<&Path>) -> Result<PathBuf, TrainError> {
    let eval_path = dir.join("eval.json");
    if !eval_path.exists() {
        println!("{} has no eval.json: evaluating it first", dir.display());
        crate::session::evaluate(dir, None, false, false)?;
    }
    let eval: Value =
        serde_json::from_str(&std::fs::read_to_string(&eval_path).map_err(io_err(&eval_path))?)
            .map_err(|e| TrainError::Run {
                path: eval_path.clone(),
                message: format!("is not valid JSON ({e}); rerun `varphi eval`"),
            })?;
    let config_path = dir.join("config.toml");
    let config = std::fs::read_to_string(&config_path).map_err(io_err(&config_path))?;
    let mut found = Vec::new();
    blocks(&eval, "", &mut found);

    let mut h = String::new();
    let title = format!("varphi report — {}", dir.display());
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}\
table{{border-collapse:collapse;margin:0.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%;border:1px solid #ddd}}\
pre{{background:#f7f7f7;padding:1em;overflow-x:auto}}.bad{{color:#b00}}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    // Headline numbers.
    let _ = writeln!(
        h,
        "<h2>Evaluation</h2>\n<table id=\"headline\"><tr><th>quantity</th><th>value</th></tr>"
    );
    for (k, v) in headline(&eval) {
        let _ = writeln!(h, "<tr><td>{}</td>{}</tr>", esc(&k), num(Some(v)));
    }
    let _ = writeln!(h, "</table>");
    if let Some(c) = eval.get("calibration") {
        let _ = writeln!(
            h,
            "<p>Recalibrated by <code>calibration.json</code> ({} calibration cases: {}); raw and recalibrated scores are shown side by side.</p>",
            c["cases"],
            esc(c["source"].as_str().unwrap_or(""))
        );
    }
    // Scores and coverage by block.
    if found.is_empty() {
        let _ = writeln!(
            h,
            "<p>This kind's evaluation scores no predictive distribution against held-out truth (e.g. an unconditional VAE), so there is no coverage to report.</p>"
        );
    } else {
        let _ = writeln!(
            h,
            "<h2>Scores and coverage</h2>\n<p>Coverage of the central intervals at 50 / 90 / 95 % (nominal 0.50 / 0.90 / 0.95); calibration error = mean |coverage − nominal| over ten levels.</p>\n<table id=\"scores\"><tr><th>block</th><th>rel. L2</th><th>NLL</th><th>CRPS</th><th>cov 50</th><th>cov 90</th><th>cov 95</th><th>cal. error</th><th>90 % width</th><th>k</th><th>×k cov 90</th><th>conformal cov 90</th><th>SBC p</th><th>TARP p</th></tr>"
        );
        for b in &found {
            let s = b.scores;
            let _ = write!(
                h,
                "<tr data-block=\"{}\"><td>{}</td>",
                esc(&b.path),
                esc(&b.path)
            );
            for key in [
                &["rel_l2"][..],
                &["nll"],
                &["crps"],
                &["coverage", "0.5"],
                &["coverage", "0.9"],
                &["coverage", "0.95"],
                &["calibration_error"],
                &["width_90"],
            ] {
                h += &num(f(s, key));
            }
            h += &num(f(s, &["recalibrated", "scale_factor"]));
            h += &num(f(s, &["recalibrated", "scaled", "coverage", "0.9"]));
            h += &num(f(s, &["recalibrated", "conformal_coverage", "0.9"]));
            h += &num(f(s, &["posterior_checks", "sbc_p_value"]));
            h += &num(f(s, &["posterior_checks", "tarp_p_value"]));
            let _ = writeln!(h, "</tr>");
        }
        let _ = writeln!(h, "</table>");
        let levels = crate::uq::CURVE;
        let _ = write!(
            h,
            "<h3>Calibration curves</h3>\n<table id=\"curves\"><tr><th>block</th>"
        );
        for p in levels {
            let _ = write!(h, "<th>{:.0} %</th>", p * 100.0);
        }
        let _ = writeln!(h, "</tr>");
        for b in &found {
            let _ = write!(
                h,
                "<tr data-block=\"{}\"><td>{}</td>",
                esc(&b.path),
                esc(&b.path)
            );
            for p in levels {
                h += &num(f(b.scores, &["calibration_curve", &format!("{p}")]));
            }
            let _ = writeln!(h, "</tr>");
        }
        let _ = writeln!(h, "</table>");
    }
    // Images.
    for (file, heading, what) in IMAGES {
        let p = dir.join(file);
        if !p.is_file() {
            continue;
        }
        let bytes = std::fs::read(&p).map_err(io_err(&p))?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let _ = writeln!(
            h,
            "<h2>{heading}</h2>\n<p>{what} (<code>{file}</code>)</p>\n<img alt=\"{file}\" src=\"data:image/png;base64,{b64}\">"
        );
    }
    let _ = writeln!(
        h,
        "<h2>Config</h2>\n<pre>{}</pre>\n</body></html>",
        esc(&config)
    );
    let out = out.map_or_else(|| dir.join("report.html"), Path::to_path_buf);
    std::fs::write(&out, h).map_err(io_err(&out))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_found_by_path_and_numbers_keep_their_exact_value() {
        let score =
            serde_json::json!({"coverage": {"0.9": 0.5}, "calibration_curve": {}, "rel_l2": 0.125});
        let eval = serde_json::json!({
            "rel_l2": 0.1, "forward": score, "posterior": {"per_parameter": [["z0", score]]},
            "parameters": [{"name": "omega", "scores": score}],
        });
        let mut found = Vec::new();
        blocks(&eval, "", &mut found);
        let paths: Vec<&str> = found.iter().map(|b| b.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "forward",
                "parameters.omega.scores",
                "posterior.per_parameter.z0"
            ]
        );
        assert_eq!(num(Some(0.1234567)), "<td data-v=\"0.1234567\">0.1235</td>");
        assert_eq!(num(Some(2.5e-7)), "<td data-v=\"0.00000025\">2.500e-7</td>");
        assert_eq!(num(None), "<td>—</td>");
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
