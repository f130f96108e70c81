//! `varphi calibrate` end to end: a CVAE whose fixed likelihood σ is four times the data's
//! noise is under-confident; recalibration on 50 labelled cases from a file narrows it, `eval`
//! reports both, `predict` scales its samples, and a stale or impossible calibration says so.

use crate::cli::{fails_with, read_json, succeeds, varphi};
use crate::common::*;

fn cov90(block: &serde_json::Value) -> f64 {
    block["coverage"]["0.9"].as_f64().unwrap()
}

#[test]
fn calibrate_on_labelled_cases_fixes_an_under_confident_cvae() {
    let dir = temp_dir("calibrate");
    write_pairs(&dir, "train.npz", 240, 0);
    write_pairs(&dir, "test.npz", 100, 1000);
    write_pairs(&dir, "cal.npz", 50, 3000);
    // σ fixed at 0.5 in normalised units; the noise is ~0.05 / std(u) ≈ 0.1 of that scale.
    let cfg = write(
        &dir,
        "wide.toml",
        &files_cvae_config("sigma = 0.5\nnoise = \"fixed\""),
    );
    succeeds(&varphi(
        &["train", cfg.to_str().unwrap(), "--out", "run", "-q"],
        &dir,
    ));
    // Files have no generator: --n is refused, and so is the default without a validation split.
    fails_with(
        &varphi(&["calibrate", "run", "--n", "50"], &dir),
        &["--n", "no generator", "--data FILE"],
    );
    fails_with(&varphi(&["calibrate", "run"], &dir), &["--data FILE"]);
    succeeds(&varphi(&["eval", "run"], &dir));
    let raw = read_json(&dir.join("run/eval.json"))["surrogate"].clone();
    assert!(cov90(&raw) > 0.97, "the wide likelihood over-covers: {raw}");
    assert!(raw.get("recalibrated").is_none());
    assert_eq!(raw["calibration_curve"].as_object().unwrap().len(), 10);

    let out = varphi(
        &[
            "calibrate",
            "run",
            "--data",
            "cal.npz",
            "--x",
            "u",
            "--cond",
            "a",
        ],
        &dir,
    );
    succeeds(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("50 labelled cases from cal.npz"),
        "{stdout}"
    );
    let fit = read_json(&dir.join("run/calibration.json"));
    let k = fit["blocks"]["surrogate"]["scale_factor"].as_f64().unwrap();
    assert!(k < 0.7, "an over-dispersed predictive is narrowed: k = {k}");

    let out = varphi(&["eval", "run"], &dir);
    succeeds(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("recalibrated by"),
        "eval says it applies the calibration"
    );
    let eval = read_json(&dir.join("run/eval.json"));
    let s = &eval["surrogate"];
    assert_eq!(s["coverage"], raw["coverage"], "raw scores unchanged");
    let r = &s["recalibrated"];
    let scaled = cov90(&r["scaled"]);
    let conformal = r["conformal_coverage"]["0.9"].as_f64().unwrap();
    assert!(
        (scaled - 0.9).abs() < (cov90(&raw) - 0.9).abs() && (scaled - 0.9).abs() < 0.06,
        "scaled 90 % coverage {scaled} (raw {})",
        cov90(&raw)
    );
    assert!((conformal - 0.9).abs() < 0.06, "conformal {conformal}");
    assert!(r["scaled"]["nll"].as_f64().unwrap() < s["nll"].as_f64().unwrap());
    assert_eq!(eval["calibration"]["cases"], 50);
    assert!(dir.join("run/calibration.png").is_file());

    // The report embeds every image and shows eval.json's numbers.
    crate::cli::check_report(
        &dir,
        "run",
        &["loss.png", "bands.png", "calibration.png", "samples.png"],
        &["surrogate"],
        &[],
    );

    // predict applies the factor: its scores against the test file are eval's scaled ones.
    let p = predict_test_file(&dir, "run", None);
    assert_eq!(p["recalibrated"].as_f64().unwrap(), k);
    let (a, b) = (
        p["scores"]["crps"].as_f64().unwrap(),
        r["scaled"]["crps"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() <= 1e-9 * b,
        "predict {a} vs eval's scaled {b}"
    );

    // Training on makes the calibration stale: eval says so and reports raw scores only.
    let _ = std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("epochs = 12", "epochs = 14"),
    );
    succeeds(&varphi(
        &["train", "--resume", "run", cfg.to_str().unwrap(), "-q"],
        &dir,
    ));
    let out = varphi(&["eval", "run"], &dir);
    succeeds(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not applied; rerun `varphi calibrate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        read_json(&dir.join("run/eval.json"))["surrogate"]
            .get("recalibrated")
            .is_none()
    );
    // Calibration cases of another shape are refused naming both shapes.
    write(&dir, "bad.csv", "a,b\n1,2\n");
    fails_with(
        &varphi(&["calibrate", "run", "--data", "bad.csv"], &dir),
        &["calibration", "shape"],
    );
}
