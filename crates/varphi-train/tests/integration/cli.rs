//! The `varphi` binary: bad input gives one-line errors; train → sample → eval works.

use crate::common::*;
use std::path::Path;
use std::process::{Command, Output};

pub fn varphi(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_varphi"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run varphi")
}

/// Assert a successful run, showing its stderr otherwise.
pub fn succeeds(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Parse a JSON file the run wrote.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Assert a failed run with a one-line error containing every `needle`.
/// `varphi report RUN` in `dir`: every image in `images` embedded as a PNG, and each
/// `(block, key)` of `blocks` shown with eval.json's exact value (its first number is the
/// block's `rel_l2`), each headline key likewise (parse check: CI has no browser).
pub fn check_report(dir: &Path, run: &str, images: &[&str], blocks: &[&str], headline: &[&str]) {
    succeeds(&varphi(&["report", run], dir));
    let html = std::fs::read_to_string(dir.join(run).join("report.html")).unwrap();
    let eval = read_json(&dir.join(run).join("eval.json"));
    for img in images {
        let at = html
            .find(&format!("alt=\"{img}\" src=\"data:image/png;base64,"))
            .unwrap_or_else(|| panic!("{img} missing from the report"));
        // base64 of the PNG signature \x89PNG\r\n\x1a\n.
        assert!(
            html[at..].contains("base64,iVBORw0KGgo"),
            "{img} is not a PNG"
        );
    }
    let first_value = |from: &str| -> f64 {
        let v = &from[from.find("data-v=\"").unwrap() + 8..];
        v[..v.find('"').unwrap()].parse().unwrap()
    };
    for block in blocks {
        let row = &html[html
            .find(&format!("<tr data-block=\"{block}\">"))
            .unwrap_or_else(|| panic!("no row for block {block}"))..];
        let want = eval
            .pointer(&format!("/{}/rel_l2", block.replace('.', "/")))
            .and_then(|v| v.as_f64())
            .unwrap_or_else(|| panic!("eval.json has no rel_l2 for {block}"));
        assert_eq!(
            first_value(row),
            want,
            "report {block} rel_l2 = eval.json's"
        );
    }
    for key in headline {
        let row = &html[html
            .find(&format!("<tr><td>{key}</td>"))
            .unwrap_or_else(|| panic!("no headline row {key}"))..];
        assert_eq!(
            Some(first_value(row)),
            eval[*key].as_f64(),
            "report {key} = eval.json's"
        );
    }
}

pub fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        !err.contains("panicked")
            && !err.contains("backtrace")
            && !err.contains("internal failure"),
        "{err}"
    );
    for n in needles {
        assert!(err.contains(n), "error does not mention {n:?}: {err}");
    }
}

#[test]
fn bad_configs_give_one_line_errors() {
    let dir = temp_dir("cli-bad");
    let unknown = write(
        &dir,
        "unknown.toml",
        &small_config(1, "").replace("[optimizer]\n", "[optimizer]\nlearnin_rate = 1.0\n"),
    );
    fails_with(
        &varphi(&["train", unknown.to_str().unwrap()], &dir),
        &["unknown.toml", "learnin_rate"],
    );

    let flow_analytic = write(
        &dir,
        "flow-analytic.toml",
        &small_config(1, "").replace("latent_dim = 4\n", "latent_dim = 4\nposterior = \"flow\"\n"),
    );
    fails_with(
        &varphi(&["train", flow_analytic.to_str().unwrap()], &dir),
        &["objective.kl", "monte-carlo"],
    );

    let neg = write(
        &dir,
        "neg.toml",
        &small_config(1, "").replace("lr = 0.003", "lr = -0.1"),
    );
    fails_with(
        &varphi(&["train", neg.to_str().unwrap()], &dir),
        &["optimizer.lr"],
    );

    let missing = write(
        &dir,
        "missing.toml",
        "[data]\nkind = \"npy\"\npath = \"nowhere.npy\"\n[model]\n",
    );
    fails_with(
        &varphi(&["train", missing.to_str().unwrap()], &dir),
        &["nowhere.npy", "does not exist"],
    );

    // NaN in the data file: named with the sample.
    let mut values: Vec<f64> = (0..40).map(|i| i as f64 / 40.0).collect();
    values[13] = f64::NAN;
    varphi_data::npy::save_npz_f64(&dir.join("nan.npz"), &[("x", &[10, 4], &values)]).unwrap();
    let nan = write(
        &dir,
        "nan.toml",
        "[data]\nkind = \"npz\"\npath = \"nan.npz\"\n[model]\n",
    );
    fails_with(
        &varphi(&["train", nan.to_str().unwrap()], &dir),
        &["nan.npz", "non-finite", "sample 3"],
    );

    // Shape mismatches between data and model.
    let good: Vec<f64> = (0..40).map(|i| i as f64 / 40.0).collect();
    varphi_data::npy::save_npz_f64(
        &dir.join("cond.npz"),
        &[("x", &[10, 4], &good), ("c", &[7], &good[..7])],
    )
    .unwrap();
    let rows = write(
        &dir,
        "rows.toml",
        "[data]\nkind = \"npz\"\npath = \"cond.npz\"\ncond_key = \"c\"\n[model]\nkind = \"cvae\"\n",
    );
    fails_with(
        &varphi(&["train", rows.to_str().unwrap()], &dir),
        &["condition array", "n = 10"],
    );
    let cvae = write(
        &dir,
        "cvae.toml",
        "[data]\nkind = \"npz\"\npath = \"cond.npz\"\n[model]\nkind = \"cvae\"\n",
    );
    fails_with(
        &varphi(&["train", cvae.to_str().unwrap()], &dir),
        &["model.kind", "condition"],
    );
    varphi_data::npy::save_npz_f64(&dir.join("4d.npz"), &[("x", &[2, 1, 2, 2, 5], &good)]).unwrap();
    let conv = write(
        &dir,
        "conv.toml",
        "[data]\nkind = \"npz\"\npath = \"4d.npz\"\n[model]\nencoder = \"conv\"\n",
    );
    fails_with(
        &varphi(&["train", conv.to_str().unwrap()], &dir),
        &["model.encoder", "[1, 2, 2, 5]"],
    );

    // Staged physics runs: stage lengths, stages without observations, priors without a
    // standard-normal map.
    let pddlvm = |extra: &str| {
        format!(
            "[data]\nkind = \"darcy\"\nn = 8\ngrid = 5\n[model]\nkind = \"pddlvm\"\n[objective.residual]\nsigma = 0.01\n{extra}"
        )
    };
    let stage = |mode: &str, epochs: usize| {
        format!("[[objective.stages]]\nmode = \"{mode}\"\nepochs = {epochs}\n")
    };
    let cases = [
        (
            "stages.toml",
            pddlvm(&format!("[training]\nepochs = 5\n{}", stage("physics", 3))),
            vec!["objective.stages", "3 epochs", "training.epochs = 5"],
        ),
        (
            "nodata.toml",
            pddlvm(&format!(
                "[training]\nepochs = 4\n{}{}",
                stage("physics", 2),
                stage("data", 2)
            )),
            vec!["objective.stages", "[objective.observations]"],
        ),
        (
            "twophase.toml",
            pddlvm("[objective.observations]\ncount = 4\nsigma = 0.01\n"),
            vec!["objective.observations", "log-normal"],
        ),
        (
            "unet-poisson.toml",
            "[data]\nkind = \"poisson1d\"\nn = 8\ngrid = 9\n[model]\nkind = \"pddlvm\"\nsurrogate = \"unet\"\n[objective.residual]\nsigma = 0.01\n".into(),
            vec!["model.surrogate", "unet", "same grid"],
        ),
        (
            "fno-poisson.toml",
            "[data]\nkind = \"poisson1d\"\nn = 8\ngrid = 9\n[model]\nkind = \"pddlvm\"\ninverse = \"fno\"\n[objective.residual]\nsigma = 0.01\n".into(),
            vec!["model.inverse", "fno", "same grid"],
        ),
        (
            "poisson-at-sample.toml",
            "[data]\nkind = \"poisson1d\"\nn = 8\ngrid = 9\n[model]\nkind = \"pddlvm\"\n[objective.residual]\nsigma = 0.01\nprecondition_at = \"sample\"\n".into(),
            vec!["objective.residual.precondition_at", "poisson1d", "\"reference\""],
        ),
        (
            "at-sample-raw.toml",
            "[data]\nkind = \"burgers\"\nn = 8\ngrid = 9\n[model]\nkind = \"pddlvm\"\n[objective.residual]\nsigma = 0.01\nprecondition = false\nprecondition_at = \"sample\"\n".into(),
            vec!["objective.residual.precondition_at", "precondition = true"],
        ),
        (
            "cvae-fno-heat.toml",
            "[data]\nkind = \"heat1d\"\nn = 8\ngrid = 8\nmodes = 3\n[model]\nkind = \"cvae\"\ndecoder = \"fno\"\n".into(),
            vec!["model.decoder", "fno", "same grid"],
        ),
        (
            "vae-fno.toml",
            "[data]\nkind = \"darcy\"\nn = 8\ngrid = 5\n[model]\nkind = \"vae\"\ndecoder = \"fno\"\n".into(),
            vec!["model.decoder", "fno", "0 parameters"],
        ),
        (
            "fno-modes.toml",
            pddlvm("[model.fno]\nmodes = [9]\n").replace("kind = \"pddlvm\"\n", "kind = \"pddlvm\"\nsurrogate = \"fno\"\n"),
            vec!["model.fno", "9 modes", "at most"],
        ),
        (
            "vae-residual.toml",
            "[data]\nkind = \"darcy\"\nn = 8\ngrid = 5\n[model]\nkind = \"vae\"\n[objective.residual]\nsigma = 0.01\n".into(),
            vec!["`residual`", "kind = \"vae\"", "cvae"],
        ),
        (
            "no-labels.toml",
            "[data]\nkind = \"darcy\"\nn = 8\ngrid = 5\n[model]\nkind = \"cvae\"\n[objective]\ndata_likelihood = false\n".into(),
            vec!["objective.data_likelihood", "[objective.residual]"],
        ),
        (
            "lr-final.toml",
            pddlvm("[optimizer]\nlr = 1e-3\nlr_final = 0.1\n"),
            vec!["optimizer.lr_final"],
        ),
    ];
    for (name, text, needles) in cases {
        let p = write(&dir, name, &text);
        fails_with(&varphi(&["train", p.to_str().unwrap()], &dir), &needles);
    }

    // Missing run directory for eval/sample.
    fails_with(&varphi(&["eval", "no-such-run"], &dir), &["no-such-run"]);
}

#[test]
fn train_sample_eval_from_the_command_line() {
    let dir = temp_dir("cli-flow");
    let cfg = write(&dir, "tiny.toml", &small_config(3, ""));
    let out = varphi(&["train", cfg.to_str().unwrap(), "--out", "run"], &dir);
    succeeds(&out);
    for f in [
        "config.toml",
        "normalization.json",
        "metrics.csv",
        "loss.png",
        "samples.png",
        "checkpoint/model.bpk",
        "checkpoint/optimizer.bpk",
        "checkpoint/state.json",
    ] {
        assert!(dir.join("run").join(f).is_file(), "missing {f}");
    }
    let out = varphi(&["sample", "run", "-n", "5", "-o", "s.npy"], &dir);
    succeeds(&out);
    let s = varphi_data::npy::load_npy(&dir.join("s.npy")).unwrap();
    assert_eq!(s.shape, vec![5, 1, 16]);
    assert!(s.data.iter().all(|v| v.is_finite()));

    let out = varphi(&["eval", "run"], &dir);
    succeeds(&out);
    let report: serde_json::Value = read_json(&dir.join("run/eval.json"));
    for k in [
        "test_elbo",
        "test_log_lik",
        "test_kl",
        "recon_rmse",
        "recon_rel_l2",
    ] {
        assert!(
            report[k].as_f64().is_some_and(f64::is_finite),
            "eval.json {k}: {report}"
        );
    }
    // The reconstruction must beat predicting the data mean (relative L2 well below 1).
    assert!(report["recon_rel_l2"].as_f64().unwrap() < 0.9, "{report}");
    // IWAE with 64 samples bounds log p(x) more tightly than the ELBO.
    let iwae = |r: &serde_json::Value| r["test_iwae64"].as_f64().unwrap();
    assert!(
        iwae(&report) > report["test_elbo"].as_f64().unwrap(),
        "{report}"
    );
    // The run report of an unconditional VAE: its plots and headline numbers.
    check_report(
        &dir,
        "run",
        &["loss.png", "samples.png"],
        &[],
        &["test_elbo", "test_iwae64", "recon_rel_l2"],
    );

    // The same model with a flow posterior (Monte-Carlo KL) trains, reloads and evaluates.
    let flow = small_config(3, "")
        .replace(
            "latent_dim = 4\n",
            "latent_dim = 4\nposterior = \"flow\"\nflow_layers = 2\n",
        )
        .replace("[objective]\n", "[objective]\nkl = \"monte-carlo\"\n");
    let cfg_flow = write(&dir, "flow.toml", &flow);
    succeeds(&varphi(
        &["train", cfg_flow.to_str().unwrap(), "--out", "run-flow"],
        &dir,
    ));
    succeeds(&varphi(&["eval", "run-flow"], &dir));
    let flow_report = read_json(&dir.join("run-flow/eval.json"));
    assert!(iwae(&flow_report).is_finite(), "{flow_report}");
    assert!(
        flow_report["recon_rel_l2"].as_f64().unwrap() < 0.9,
        "{flow_report}"
    );

    // Training into an occupied run dir without --resume is refused.
    let again = varphi(&["train", cfg.to_str().unwrap(), "--out", "run"], &dir);
    fails_with(&again, &["--resume"]);
    // Bad sample arguments.
    fails_with(
        &varphi(&["sample", "run", "-n", "2", "--condition", "1.0"], &dir),
        &["unconditional"],
    );
}

#[test]
fn data_command_writes_archives_and_rejects_bad_arguments() {
    let dir = temp_dir("cli-data");
    let out = varphi(
        &[
            "data", "darcy", "--n", "6", "--grid", "12", "--seed", "4", "-o", "d.npz", "-q",
        ],
        &dir,
    );
    succeeds(&out);
    let u = varphi_data::npy::load_npz(&dir.join("d.npz"), "solution").unwrap();
    assert_eq!(u.shape, vec![6, 12, 12]);
    let a = varphi_data::npy::load_npz(&dir.join("d.npz"), "coefficient").unwrap();
    assert!(a.data.iter().all(|&v| v == 3.0 || v == 12.0));
    let y = varphi_data::npy::load_npz(&dir.join("d.npz"), "obs_values").unwrap();
    assert_eq!(y.shape, vec![6, 64]);
    let meta: serde_json::Value = read_json(&dir.join("d.json"));
    assert_eq!(meta["spec"]["seed"], 4);
    assert_eq!(meta["spec"]["physics"]["grid"], 12);

    fails_with(
        &varphi(&["data", "darcy", "--grid", "2", "-o", "x.npz"], &dir),
        &["--grid", "3"],
    );
    fails_with(
        &varphi(&["data", "darcy", "--n", "0", "-o", "x.npz"], &dir),
        &["--n"],
    );
    fails_with(
        &varphi(&["data", "burgers", "-o", "no-such-dir/x.npz"], &dir),
        &["cannot write", "no-such-dir/x.npz"],
    );
    fails_with(
        &varphi(&["data", "navier-stokes", "-o", "x.npz"], &dir),
        &["navier-stokes", "darcy"],
    );
    write(&dir, "bad.toml", "gird = 8\n");
    fails_with(
        &varphi(
            &["data", "poisson1d", "--settings", "bad.toml", "-o", "x.npz"],
            &dir,
        ),
        &["gird"],
    );
}

#[test]
fn a_config_trains_on_freshly_generated_physics_data() {
    let dir = temp_dir("cli-physics-config");
    let cfg = small_config(2, "").replace(
        "kind = \"heat1d\"\nn = 256\ngrid = 16\nmodes = 4",
        "kind = \"poisson1d\"\nn = 64\ngrid = 17\n[data.settings]\nw = [1.0, 1.5]",
    );
    let cfg = write(&dir, "p.toml", &cfg);
    let out = varphi(
        &["train", cfg.to_str().unwrap(), "--out", "run", "-q"],
        &dir,
    );
    succeeds(&out);
    let out = varphi(&["sample", "run", "-n", "3", "-o", "s.npy"], &dir);
    succeeds(&out);
    assert_eq!(
        varphi_data::npy::load_npy(&dir.join("s.npy"))
            .unwrap()
            .shape,
        vec![3, 1, 17]
    );
    // A typo inside the physics settings is caught when the config is read.
    let bad = write(
        &dir,
        "bad.toml",
        &std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("w = [", "ww = ["),
    );
    fails_with(
        &varphi(&["train", bad.to_str().unwrap(), "--out", "run2"], &dir),
        &["ww"],
    );
}

#[test]
fn physics_only_pddlvm_quick_run_and_uq_evaluation() {
    let dir = temp_dir("cli-pddlvm");
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/poisson1d-nonlinear.toml");
    let out = varphi(
        &[
            "train",
            cfg.to_str().unwrap(),
            "--quick",
            "--out",
            "run",
            "-q",
        ],
        &dir,
    );
    succeeds(&out);
    let out = varphi(&["eval", "run"], &dir);
    succeeds(&out);
    let r: serde_json::Value = read_json(&dir.join("run/eval.json"));
    for k in ["rel_l2", "nll", "crps", "residual_norm"] {
        assert!(r[k].as_f64().is_some_and(f64::is_finite), "{k}: {r}");
    }
    for level in ["0.5", "0.9", "0.95"] {
        let c = r["coverage"][level].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c), "{r}");
    }
    // 16 physics epochs without a single solution label: the surrogate mean is within 30 % of
    // the Newton solutions (the full config reaches ~2 %, docs/experiments.md).
    assert!(r["rel_l2"].as_f64().unwrap() < 0.3, "{r}");
    assert!(r["inverse"]["rel_l2"].as_f64().is_some_and(f64::is_finite));
    // Then 4 data + 4 joint epochs: a posterior from 10 noisy observations, scored against the
    // prior on the same cases (whose coverage is nominal by construction).
    let post = &r["posterior"];
    assert_eq!(post["n_obs"].as_u64(), Some(10), "{r}");
    let prior_90 = post["prior"]["coverage"]["0.9"].as_f64().unwrap();
    assert!((prior_90 - 0.9).abs() < 0.05, "{r}");
    assert!(
        post["params"]["rel_l2"].as_f64().unwrap() < post["prior"]["rel_l2"].as_f64().unwrap(),
        "{r}"
    );
    // The model-error term: `forward` is the widened predictive, `forward.q` q alone; the
    // term only widens (coverage at 90 % at least q's), and its scale is reported.
    let cov90 = |b: &serde_json::Value| b["coverage"]["0.9"].as_f64().unwrap();
    assert!(cov90(&r["forward"]) >= cov90(&r["surrogate_only"]), "{r}");
    assert!(r["model_error"]["tau_rms"].as_f64().unwrap() > 0.0, "{r}");
    // The run report of a posterior run: every plot, and every block's number as eval.json's.
    check_report(
        &dir,
        "run",
        &["loss.png", "samples.png", "bands.png", "calibration.png"],
        &[
            "forward",
            "surrogate_only",
            "inverse",
            "posterior.params",
            "posterior.solution",
        ],
        &["rel_l2", "residual_norm"],
    );
    // In the data stage (epochs 17–20) the surrogate is frozen: its entropy on the fixed test
    // parameters stays where epoch 16 left it, while the posterior's KL moves; both train again
    // in the joint stage.
    let h = metric(&dir.join("run"), "test_entropy");
    let kl = metric(&dir.join("run"), "test_obs_kl");
    assert!(h[15..20].iter().all(|v| *v == h[15]), "{h:?}");
    assert!(h[14] != h[15] && h[20] != h[19], "{h:?}");
    assert!(kl[15..20].windows(2).all(|w| w[0] != w[1]), "{kl:?}");
    // Surrogate samples for given parameters, and a wrong parameter count named.
    let out = varphi(
        &[
            "sample",
            "run",
            "-n",
            "5",
            "-o",
            "s.npy",
            "--condition",
            "0,0,0,0,0,1.5",
        ],
        &dir,
    );
    succeeds(&out);
    let bytes = std::fs::read(dir.join("s.npy")).unwrap();
    let start = 10 + (bytes[8] as usize | (bytes[9] as usize) << 8);
    assert_eq!(bytes.len() - start, 5 * 33 * 4);
    let u: Vec<f64> = bytes[start..]
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
        .collect();
    // z = 0 makes k = ln 2 + 0.1 constant: u = w (1 − x²) / (2k) on (−1, 1). The quick
    // surrogate's sample mean is within 30 % of it.
    let k = std::f64::consts::LN_2 + 0.1;
    let (mut err, mut norm) = (0.0, 0.0);
    for i in 0..33 {
        let x = -1.0 + i as f64 / 16.0;
        let exact = 1.5 * (1.0 - x * x) / (2.0 * k);
        let mean = (0..5).map(|s| u[s * 33 + i]).sum::<f64>() / 5.0;
        err += (mean - exact).powi(2);
        norm += exact * exact;
    }
    assert!(
        (err / norm).sqrt() < 0.3,
        "relative error {}",
        (err / norm).sqrt()
    );
    fails_with(
        &varphi(
            &["sample", "run", "-o", "s.npy", "--condition", "1,2"],
            &dir,
        ),
        &["--condition", "6", "z0"],
    );
}

#[test]
fn a_non_finite_residual_stops_the_run_naming_the_term_and_keeping_the_checkpoint() {
    let dir = temp_dir("cli-pddlvm-nan");
    // σ_r annealed toward 1e-40: within a few steps 1/σ_r² overflows f32 and the residual
    // log-likelihood becomes −∞, after the first epoch's checkpoint was written.
    let cfg = write(
        &dir,
        "nan.toml",
        r#"seed = 2
[data]
kind = "poisson1d"
n = 200
grid = 9
[model]
kind = "pddlvm"
hidden = [16]
[objective.residual]
sigma = 1e-40
schedule = "anneal"
anneal_from = 1.0
anneal_steps = 12
[training]
epochs = 10
batch_size = 64
"#,
    );
    let out = varphi(
        &["train", cfg.to_str().unwrap(), "--out", "run", "-q"],
        &dir,
    );
    fails_with(&out, &["log_residual", "checkpoint (epoch"]);
    assert!(dir.join("run/checkpoint/model.bpk").is_file());
    // Config errors for physics runs name the key.
    let bad = write(
        &dir,
        "bad.toml",
        "[data]\nkind = \"heat1d\"\n[model]\nkind = \"pddlvm\"\n[objective.residual]\nsigma = 0.1\n",
    );
    fails_with(
        &varphi(&["train", bad.to_str().unwrap()], &dir),
        &["data.kind"],
    );
    let bad = write(
        &dir,
        "bad2.toml",
        "[data]\nkind = \"darcy\"\n[model]\nkind = \"pddlvm\"\n",
    );
    fails_with(
        &varphi(&["train", bad.to_str().unwrap()], &dir),
        &["objective.residual"],
    );
}

#[test]
fn cvae_surrogate_trains_on_the_residual_alone() {
    // Residual-only CVAE surrogate z → u (no data likelihood): 100 epochs of 4 steps. The full
    // config reaches 2.7 % (docs/experiments.md); an untrained decoder is ~100 % off.
    let dir = temp_dir("cli-cvae-residual");
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/poisson1d-cvae-residual.toml");
    for args in [
        vec![
            "train",
            cfg.to_str().unwrap(),
            "--quick",
            "--out",
            "run",
            "-q",
        ],
        vec!["eval", "run"],
    ] {
        let out = varphi(&args, &dir);
        succeeds(&out);
    }
    let r: serde_json::Value = read_json(&dir.join("run/eval.json"));
    let s = &r["surrogate"];
    let rel = s["rel_l2"].as_f64().unwrap();
    assert!(rel < 0.3, "{r}");
    for level in ["0.5", "0.9", "0.95"] {
        assert!(
            s["coverage"][level]
                .as_f64()
                .is_some_and(|c| (0.0..=1.0).contains(&c)),
            "{r}"
        );
    }
}

#[test]
fn bayes_vi_with_adjoint_gradients_beats_the_prior() {
    // `varphi infer` on a small Darcy problem (17 × 17, 6-mode log-normal field, 32 sensors):
    // the fitted q(ξ) must be closer to the true fields than the prior and cover them.
    let dir = temp_dir("cli-infer");
    let cfg = write(
        &dir,
        "bvi.toml",
        "seed = 3\n[data]\nkind = \"darcy\"\nn = 3\ngrid = 17\n[data.settings.coefficient]\nkind = \"log-normal\"\nlength = 0.3\nsigma = 0.8\nmean = 0.0\nmodes = 6\n[observations]\ncount = 32\nsigma = 0.005\n[posterior]\nparticles = 4\nsamples = 100\n[optimizer]\nsteps = 300\n",
    );
    let out = varphi(
        &["infer", cfg.to_str().unwrap(), "--out", "bvi", "-q"],
        &dir,
    );
    succeeds(&out);
    let r: serde_json::Value = read_json(&dir.join("bvi/summary.json"));
    let (post, prior) = (
        r["posterior"]["rel_l2"].as_f64().unwrap(),
        r["prior"]["rel_l2"].as_f64().unwrap(),
    );
    assert!(post < 0.8 * prior, "posterior {post} vs prior {prior}: {r}");
    let c90 = r["posterior"]["coverage"]["0.9"].as_f64().unwrap();
    assert!((0.6..=1.0).contains(&c90), "{r}");
    assert!(dir.join("bvi/samples.npy").exists() && dir.join("bvi/truth.npy").exists());
    // The same cases with a RealNVP q(ξ) (Monte-Carlo KL) reach the same accuracy.
    let flow = write(
        &dir,
        "flow.toml",
        &std::fs::read_to_string(&cfg).unwrap().replace(
            "[posterior]\n",
            "[posterior]\nfamily = \"flow\"\nhidden = [32]\n",
        ),
    );
    succeeds(&varphi(
        &["infer", flow.to_str().unwrap(), "--out", "flow", "-q"],
        &dir,
    ));
    let f: serde_json::Value = read_json(&dir.join("flow/summary.json"));
    let flow_post = f["posterior"]["rel_l2"].as_f64().unwrap();
    assert!(
        flow_post < 0.8 * prior && (flow_post - post).abs() < 0.25 * post,
        "flow {flow_post} vs Gaussian {post} vs prior {prior}"
    );

    // A two-phase coefficient has no whitened prior: a one-line error naming the key.
    let bad = write(
        &dir,
        "twophase.toml",
        "[data]\nkind = \"darcy\"\nn = 2\ngrid = 9\n[observations]\nsigma = 0.01\n",
    );
    fails_with(
        &varphi(&["infer", bad.to_str().unwrap()], &dir),
        &["data.settings.coefficient", "log-normal"],
    );
    // The low-rank family needs its rank.
    let bad = write(
        &dir,
        "norank.toml",
        "[data]\nkind = \"darcy\"\nn = 2\ngrid = 9\n[observations]\nsigma = 0.01\n[posterior]\nfamily = \"low-rank\"\n",
    );
    fails_with(
        &varphi(&["infer", bad.to_str().unwrap()], &dir),
        &["posterior.rank", "low-rank"],
    );
}

#[test]
fn npe_posterior_is_calibrated_on_held_out_simulations() {
    // configs/heat-npe.toml --quick: 6 epochs of maximum likelihood on simulated pairs. The
    // prior means are 30–45 % off (uniform priors); q(z|y) must be far closer and its central
    // 90 % intervals must cover the true parameters of 200 held-out cases at about 90 %.
    let dir = temp_dir("cli-npe");
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/heat-npe.toml");
    succeeds(&varphi(
        &[
            "train",
            cfg.to_str().unwrap(),
            "--quick",
            "--out",
            "run",
            "-q",
        ],
        &dir,
    ));
    succeeds(&varphi(&["eval", "run"], &dir));
    let r = read_json(&dir.join("run/eval.json"));
    let c90 = r["posterior"]["coverage"]["0.9"].as_f64().unwrap();
    assert!((0.8..=0.97).contains(&c90), "{r}");
    for p in r["per_parameter"].as_array().unwrap() {
        assert!(p[1]["rel_l2"].as_f64().unwrap() < 0.15, "{p}");
    }
    // Not a generative model of solutions: `sample` says so in one line.
    fails_with(
        &varphi(&["sample", "run", "-n", "2", "-o", "s.npy"], &dir),
        &["kind \"npe\"", "varphi eval"],
    );
    // An npe config without observations.
    let bad = write(
        &dir,
        "noobs.toml",
        "[data]\nkind = \"heat\"\nn = 8\n[model]\nkind = \"npe\"\n",
    );
    fails_with(
        &varphi(&["train", bad.to_str().unwrap()], &dir),
        &["objective.observations", "npe"],
    );
}

#[test]
fn phys_vae_recovers_the_pendulum_frequency() {
    // configs/pendulum-physvae.toml --quick: 4 epochs. The prior mean of ω (π/2 on [0, π]) is
    // 30–100 % off the true ω ∈ [π/4, π/2]; the physics-integrated posterior must beat it
    // clearly and reconstruct the trajectories better than its physics part alone.
    let dir = temp_dir("cli-physvae");
    // Train a shipped config, edited by `edit`, with --quick into `out`, evaluate it;
    // (eval.json, ω's scores).
    let quick_omega = |config: &str, out: &str, edit: &dyn Fn(String) -> String| {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs")
            .join(config);
        let cfg = write(
            &dir,
            &format!("{out}.toml"),
            &edit(std::fs::read_to_string(shipped).unwrap()),
        );
        succeeds(&varphi(
            &[
                "train",
                cfg.to_str().unwrap(),
                "--quick",
                "--out",
                out,
                "-q",
            ],
            &dir,
        ));
        succeeds(&varphi(&["eval", out], &dir));
        let r = read_json(&dir.join(out).join("eval.json"));
        let omega = r["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "omega")
            .expect("omega")
            .clone();
        (r, omega)
    };
    let (r, omega) = quick_omega("pendulum-physvae.toml", "run", &|c| c);
    assert!(omega["rel_error_mean"].as_f64().unwrap() < 0.25, "{r}");
    for key in ["0.5", "0.9", "0.95"] {
        let c = omega["scores"]["coverage"][key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c), "{r}");
    }
    let (rec, phys) = (
        r["reconstruction_rel_l2"].as_f64().unwrap(),
        r["physics_rel_l2"].as_f64().unwrap(),
    );
    assert!(rec < phys && rec < 0.3, "{r}");
    fails_with(
        &varphi(&["sample", "run", "-n", "2", "-o", "s.npy"], &dir),
        &["kind \"phys-vae\"", "varphi eval"],
    );
    // The UQ-VAE with a learned surrogate decoder instead of the RK4 map (--quick: 20 epochs,
    // a few seconds). Its learned likelihood σ must grow above the observation noise: the surrogate decoder's
    // misfit is far larger than σ_y = 0.01.
    let (r, omega) = quick_omega("pendulum-uqvae-surrogate.toml", "sur", &|c| c);
    assert!(omega["rel_error_mean"].as_f64().unwrap() < 0.25, "{r}");
    let sigma = r["learned_sigma"].as_f64().unwrap();
    assert!(sigma > 0.012 && sigma < 1.0, "{r}");
    // ... and its AR(1) correlation must turn positive: the misfit is smooth in time.
    let rho = r["learned_rho"].as_f64().unwrap();
    assert!(rho > 0.1 && rho < 0.99, "{r}");
    // The same with a flow q(s | y).
    let (r, omega) = quick_omega("pendulum-uqvae-surrogate.toml", "flow", &|c| {
        c.replace(
            "[model]\n",
            "[model]\nposterior = \"flow\"\nflow_layers = 2\n",
        )
    });
    assert!(omega["rel_error_mean"].as_f64().unwrap() < 0.25, "{r}");
    // Problems without a decoder physics, and `count` instead of `every`.
    let bad = write(
        &dir,
        "darcy.toml",
        "[data]\nkind = \"darcy\"\nn = 8\n[model]\nkind = \"phys-vae\"\n[objective.observations]\nsigma = 0.01\n",
    );
    fails_with(
        &varphi(&["train", bad.to_str().unwrap()], &dir),
        &["data.kind", "pendulum"],
    );
    let bad = write(
        &dir,
        "count.toml",
        "[data]\nkind = \"pendulum\"\nn = 8\n[model]\nkind = \"phys-vae\"\n[objective.observations]\nsigma = 0.01\ncount = 5\n",
    );
    fails_with(
        &varphi(&["train", bad.to_str().unwrap()], &dir),
        &["`count`", "[objective.observations]", "every"],
    );
    let bad = write(
        &dir,
        "alpha.toml",
        "[data]\nkind = \"pendulum\"\nn = 8\n[model]\nkind = \"phys-vae\"\n[objective.observations]\nsigma = 0.01\n[objective]\nuq_alpha = 0.0\n",
    );
    fails_with(
        &varphi(&["train", bad.to_str().unwrap()], &dir),
        &["objective.uq_alpha", "(0, 1]"],
    );
}

#[test]
fn vi_dgp_infers_a_two_phase_field_through_a_vae_prior() {
    // Stage 1: a small VAE of two-phase Darcy coefficient fields (9 × 9) from `varphi data`;
    // stage 2: `varphi infer` with [prior] kind = "dgp" fits q(w) in its latent space through
    // the frozen decoder (trained in f32, used on the f64 device) and the adjoint solver.
    let dir = temp_dir("cli-dgp");
    succeeds(&varphi(
        &[
            "data",
            "darcy",
            "--n",
            "400",
            "--grid",
            "9",
            "--obs",
            "none",
            "-o",
            "fields.npz",
        ],
        &dir,
    ));
    let prior = write(
        &dir,
        "prior.toml",
        "seed = 2\n[data]\nkind = \"npz\"\npath = \"fields.npz\"\nx_key = \"coefficient\"\n[model]\nlatent_dim = 4\nhidden = [64]\n[training]\nepochs = 15\nbatch_size = 32\n",
    );
    succeeds(&varphi(
        &["train", prior.to_str().unwrap(), "--out", "vae", "-q"],
        &dir,
    ));
    let cfg = write(
        &dir,
        "dgp.toml",
        "seed = 3\n[data]\nkind = \"darcy\"\nn = 3\ngrid = 9\n[observations]\ncount = 20\nsigma = 5e-4\n[prior]\nkind = \"dgp\"\nrun = \"vae\"\n[posterior]\nparticles = 4\nsamples = 50\n[optimizer]\nsteps = 200\n",
    );
    succeeds(&varphi(
        &["infer", cfg.to_str().unwrap(), "--out", "post", "-q"],
        &dir,
    ));
    let r = read_json(&dir.join("post/summary.json"));
    let (post, prior) = (
        r["posterior"]["rel_l2"].as_f64().unwrap(),
        r["prior"]["rel_l2"].as_f64().unwrap(),
    );
    assert!(post < 0.9 * prior, "posterior {post} vs prior {prior}: {r}");
    // The point estimate of eq. 25 (chi-shell MAP) on the same cases.
    let map = write(
        &dir,
        "map.toml",
        &std::fs::read_to_string(&cfg).unwrap().replace(
            "[posterior]\n",
            "[posterior]\nfamily = \"map\"\nchi_beta = 1.0\n",
        ),
    );
    succeeds(&varphi(
        &["infer", map.to_str().unwrap(), "--out", "map", "-q"],
        &dir,
    ));
    let m = read_json(&dir.join("map/summary.json"));
    let map_post = m["posterior"]["rel_l2"].as_f64().unwrap();
    assert!(
        map_post < 0.9 * prior,
        "MAP {map_post} vs prior {prior}: {m}"
    );
    // A dgp prior needs its run.
    let bad = write(
        &dir,
        "norun.toml",
        "[data]\nkind = \"darcy\"\nn = 2\ngrid = 9\n[observations]\nsigma = 0.01\n[prior]\nkind = \"dgp\"\n",
    );
    fails_with(
        &varphi(&["infer", bad.to_str().unwrap()], &dir),
        &["prior.run", "dgp"],
    );
}

#[test]
fn dvae_trains_evaluates_and_samples_from_generated_and_written_sequences() {
    // A small advection-from-video set-up (8 nodes, 6 frames of 6 × 8 pixels), 3 epochs:
    // the pipeline from `varphi data` to `eval` and `sample`, and its bad-input errors. (The
    // shipped config's calibration is measured in docs/experiments.md.)
    let dir = temp_dir("cli-dvae");
    let settings = write(&dir, "setup.toml", "nodes = 8\nframes = 6\nheight = 6\n");
    succeeds(&varphi(
        &[
            "data",
            "advection-video",
            "--n",
            "40",
            "--seed",
            "3",
            "--settings",
            settings.to_str().unwrap(),
            "-o",
            "seq.npz",
        ],
        &dir,
    ));
    let side = read_json(&dir.join("seq.json"));
    assert_eq!(side["arrays"]["frames"], serde_json::json!([40, 6, 6, 8]));
    assert_eq!(side["arrays"]["states"], serde_json::json!([40, 7, 8]));
    assert_eq!(side["settings"]["nodes"], 8);
    let model = "[model]\nkind = \"dvae\"\nhidden = [16]\namortise_hidden = [8]\n[objective]\nforecast = 2\n";
    let training = "[training]\nepochs = 3\nbatch_size = 8\n";
    // Generated in the config.
    let generated = write(
        &dir,
        "gen.toml",
        &format!(
            "seed = 3\n[data]\nkind = \"advection-video\"\nn = 40\n[data.settings]\nnodes = 8\nframes = 6\nheight = 6\n[split]\ntest_fraction = 0.25\n{model}{training}"
        ),
    );
    succeeds(&varphi(
        &["train", generated.to_str().unwrap(), "--out", "gen", "-q"],
        &dir,
    ));
    succeeds(&varphi(&["eval", "gen"], &dir));
    let r = read_json(&dir.join("gen/eval.json"));
    assert_eq!(r["n_test"], 10);
    assert_eq!(r["train_frames"], 4);
    for block in ["posterior", "refined_joint", "state"] {
        let c = r[block]["coverage"]["0.9"]
            .as_f64()
            .or_else(|| r[block]["scores"]["coverage"]["0.9"].as_f64())
            .unwrap_or_else(|| panic!("{block}: {r}"));
        assert!((0.0..=1.0).contains(&c), "{r}");
    }
    assert!(r["forecast"]["frame_rel_l2"].as_f64().unwrap().is_finite());
    assert!(dir.join("gen/bands.png").is_file());
    succeeds(&varphi(&["sample", "gen", "-n", "3", "-o", "s.npy"], &dir));
    let s = varphi_data::read::load_array(&dir.join("s.npy"), None).unwrap();
    assert_eq!(s.shape, vec![3, 6, 6, 8]);
    // The written archive with the set-up in [objective.setup]: the same frames, so the
    // posterior of the first test case matches the generated run's data exactly.
    let from_file = write(
        &dir,
        "file.toml",
        &format!(
            "seed = 3\n[data]\nkind = \"npz\"\npath = \"seq.npz\"\nx_key = \"frames\"\ncond_key = \"params\"\n[split]\ntest_fraction = 0.25\n{model}[objective.setup]\nnodes = 8\nframes = 6\nheight = 6\n{training}"
        ),
    );
    succeeds(&varphi(
        &["train", from_file.to_str().unwrap(), "--out", "file", "-q"],
        &dir,
    ));
    succeeds(&varphi(&["eval", "file"], &dir));
    let f = read_json(&dir.join("file/eval.json"));
    assert_eq!(f["posterior"], r["posterior"], "file vs generated");
    assert_eq!(f["refined_joint"], r["refined_joint"], "file vs generated");
    assert_eq!(r["refined"].as_array().map(Vec::len), Some(2), "{r}");
    assert!(f["state"].is_null(), "a file has no true states: {f}");
    // Bad input: a file whose set-up does not match its frames, missing set-up.
    let wrong = write(
        &dir,
        "wrong.toml",
        &std::fs::read_to_string(&from_file)
            .unwrap()
            .replace("frames = 6\nheight = 6", "frames = 5\nheight = 6"),
    );
    fails_with(
        &varphi(&["train", wrong.to_str().unwrap()], &dir),
        &["5 frames", "same length"],
    );
    let wrong = write(
        &dir,
        "wrong2.toml",
        &std::fs::read_to_string(&from_file)
            .unwrap()
            .replace("frames = 6\nheight = 6", "frames = 6\nheight = 7"),
    );
    fails_with(
        &varphi(&["train", wrong.to_str().unwrap()], &dir),
        &["frames of shape", "[7, 8]"],
    );
    // Lorenz-63 fields: the default archive's shapes, then a small written set-up trained from
    // the file with its set-up in [objective.setup] (extended Kalman filter, 3 parameters).
    succeeds(&varphi(
        &["data", "lorenz-fields", "--n", "3", "-o", "lorenz.npz"],
        &dir,
    ));
    let side = read_json(&dir.join("lorenz.json"));
    assert_eq!(
        side["arrays"]["frames"],
        serde_json::json!([3, 40, 3, 8, 16])
    );
    assert_eq!(side["arrays"]["states"], serde_json::json!([3, 41, 3]));
    let small = "frames = 6\nwidth = 4\nheight = 4\n";
    let lsettings = write(&dir, "lsetup.toml", small);
    succeeds(&varphi(
        &[
            "data",
            "lorenz-fields",
            "--n",
            "24",
            "--settings",
            lsettings.to_str().unwrap(),
            "-o",
            "lorenz-small.npz",
        ],
        &dir,
    ));
    let lorenz = write(
        &dir,
        "lorenz.toml",
        &format!(
            "seed = 3\n[data]\nkind = \"npz\"\npath = \"lorenz-small.npz\"\nx_key = \"frames\"\ncond_key = \"params\"\n[split]\ntest_fraction = 0.25\n{}network = \"dense\"\n[objective]\nforecast = 2\n[objective.setup]\nproblem = \"lorenz-fields\"\n{small}{training}",
            model.replace("[objective]\nforecast = 2\n", "")
        ),
    );
    succeeds(&varphi(
        &["train", lorenz.to_str().unwrap(), "--out", "lorenz", "-q"],
        &dir,
    ));
    succeeds(&varphi(&["eval", "lorenz"], &dir));
    let l = read_json(&dir.join("lorenz/eval.json"));
    assert_eq!(l["per_parameter"].as_array().unwrap().len(), 3, "{l}");
    assert_eq!(l["process"].as_array().unwrap().len(), 1, "{l}");
    succeeds(&varphi(
        &["sample", "lorenz", "-n", "2", "-o", "l.npy"],
        &dir,
    ));
    let s = varphi_data::read::load_array(&dir.join("l.npy"), None).unwrap();
    assert_eq!(s.shape, vec![2, 6, 3, 4, 4]);
    let columns = write(
        &dir,
        "lcolumns.toml",
        &std::fs::read_to_string(&lorenz)
            .unwrap()
            .replace("network = \"dense\"\n", ""),
    );
    fails_with(
        &varphi(&["train", columns.to_str().unwrap()], &dir),
        &["model.network", "dense"],
    );
    let nosetup = write(
        &dir,
        "nosetup.toml",
        &std::fs::read_to_string(&from_file)
            .unwrap()
            .replace("[objective.setup]\nnodes = 8\nframes = 6\nheight = 6\n", ""),
    );
    fails_with(
        &varphi(&["train", nosetup.to_str().unwrap()], &dir),
        &["objective.setup", "advection-video"],
    );
}

#[test]
fn mpi_without_a_launcher_or_a_build_with_mpi_is_a_one_line_error() {
    let dir = temp_dir("cli-mpi");
    write(&dir, "c.toml", &small_config(1, ""));
    let out = varphi(&["train", "c.toml", "--mpi", "--out", "r"], &dir);
    if cfg!(feature = "mpi") {
        fails_with(&out, &["--mpi", "no MPI launcher found", "mpirun -n N"]);
    } else {
        fails_with(
            &out,
            &["--mpi", "built without MPI", "--features varphi-train/mpi"],
        );
    }
    assert!(!dir.join("r").exists(), "nothing written");
    // Several ranks of a build without MPI would each train alone into the same folder.
    if !cfg!(feature = "mpi") {
        let out = Command::new(env!("CARGO_BIN_EXE_varphi"))
            .args(["train", "c.toml", "--out", "r"])
            .env("OMPI_COMM_WORLD_SIZE", "2")
            .current_dir(&dir)
            .output()
            .unwrap();
        fails_with(&out, &["one of 2 ranks", "built without MPI"]);
    }
    // Commands that run as one process refuse a launch of several ranks.
    let out = Command::new(env!("CARGO_BIN_EXE_varphi"))
        .args(["eval", "r"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .current_dir(&dir)
        .output()
        .unwrap();
    fails_with(&out, &["one of 2 MPI ranks", "without mpirun"]);
    // Bad data-parallel devices name the key.
    let out = varphi(
        &["train", "c.toml", "--devices", "flex,cuda", "--out", "r"],
        &dir,
    );
    fails_with(&out, &["devices", "unknown backend 'cuda'"]);
    let out = varphi(
        &[
            "train",
            "c.toml",
            "--devices",
            "flex,flex",
            "--backend",
            "wgpu",
            "--out",
            "r",
        ],
        &dir,
    );
    fails_with(
        &out,
        &["--backend wgpu disagrees with the first of the devices"],
    );
    let out = varphi(
        &[
            "train",
            "c.toml",
            "--devices",
            "wgpu:0,wgpu:1",
            "--out",
            "r",
        ],
        &dir,
    );
    // Two adapters are two devices of one process; this machine has at most one (lavapipe),
    // so the second is refused by name.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let want = if varphi_train::backend::wgpu_available() {
        "no wgpu adapter matches '1'"
    } else {
        "no usable wgpu adapter"
    };
    assert!(err.contains(want), "{err}");
    write(&dir, "s.toml", &small_config(1, "device_shares = \"fast\""));
    fails_with(
        &varphi(&["train", "s.toml", "--out", "r"], &dir),
        &["device_shares", "\"auto\""],
    );
    write(
        &dir,
        "n.toml",
        &small_config(1, "device_shares = [1.0, 2.0]"),
    );
    fails_with(
        &varphi(
            &[
                "train",
                "n.toml",
                "--devices",
                "flex,flex,flex",
                "--out",
                "r",
            ],
            &dir,
        ),
        &["device_shares", "2 entries for the 3 devices"],
    );
    assert!(!dir.join("r").exists(), "nothing written");
}

#[test]
fn data_shards_merge_into_the_archive_one_process_writes_byte_for_byte() {
    let dir = temp_dir("cli-shards");
    let args = ["data", "darcy", "--n", "30", "--grid", "9", "-q"];
    let with = |extra: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(extra);
        varphi(&a, &dir)
    };
    succeeds(&with(&["-o", "one.npz"]));
    for i in 0..3 {
        succeeds(&with(&[
            "--shard",
            &format!("{i}/3"),
            "-o",
            &format!("p{i}.npz"),
        ]));
    }
    succeeds(&with(&[
        "--merge",
        "p0.npz,p1.npz,p2.npz",
        "-o",
        "merged.npz",
    ]));
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    assert_eq!(
        read("one.npz"),
        read("merged.npz"),
        "merged archive differs"
    );
    assert_ne!(read("p0.npz"), read("one.npz"));
    fails_with(
        &with(&["--merge", "p1.npz,p0.npz,p2.npz", "-o", "bad.npz"]),
        &["p1.npz is part 1/3", "in order"],
    );
    fails_with(
        &with(&[
            "--seed",
            "1",
            "--merge",
            "p0.npz,p1.npz,p2.npz",
            "-o",
            "bad.npz",
        ]),
        &["other settings"],
    );
    fails_with(&with(&["--shard", "3/3", "-o", "bad.npz"]), &["0 ≤ I < N"]);
    assert!(!dir.join("bad.npz").exists());
}

#[test]
fn bayes_vi_job_array_parts_merge_into_the_one_process_files() {
    let dir = temp_dir("cli-infer-parts");
    let cfg = write(&dir, "bvi.toml", SMALL_BAYES_VI);
    let cfg = cfg.to_str().unwrap();
    succeeds(&varphi(&["infer", cfg, "--out", "one", "-q"], &dir));
    for i in 0..2 {
        let (part, out) = (format!("{i}/2"), format!("p{i}"));
        succeeds(&varphi(
            &["infer", cfg, "--shard", &part, "--out", &out, "-q"],
            &dir,
        ));
    }
    assert!(
        !dir.join("p0/summary.json").exists(),
        "a part is not a result"
    );
    succeeds(&varphi(
        &["infer", cfg, "--merge", "p0,p1", "--out", "merged", "-q"],
        &dir,
    ));
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    assert_eq!(read("one/samples.npy"), read("merged/samples.npy"));
    assert_eq!(read("one/truth.npy"), read("merged/truth.npy"));
    let summary = |run: &str| {
        let mut v = read_json(&dir.join(run).join("summary.json"));
        v.as_object_mut().unwrap().remove("wall_s");
        v
    };
    assert_eq!(summary("one"), summary("merged"));
    fails_with(
        &varphi(&["infer", cfg, "--merge", "p1,p0", "--out", "bad"], &dir),
        &["is part 1/2", "in order"],
    );
    fails_with(
        &varphi(&["infer", cfg, "--merge", "p0", "--out", "bad"], &dir),
        &["part 0/2", "part 0/1"],
    );
    let other = write(
        &dir,
        "other.toml",
        &std::fs::read_to_string(cfg)
            .unwrap()
            .replace("steps = 100", "steps = 101"),
    );
    fails_with(
        &varphi(
            &[
                "infer",
                other.to_str().unwrap(),
                "--merge",
                "p0,p1",
                "--out",
                "bad",
            ],
            &dir,
        ),
        &["another config"],
    );
}

#[test]
fn bench_prints_each_backend_then_the_ratio_to_its_pytorch_twin() {
    // A stand-in for Python that reports 4.0 steps/s for whatever it is asked, so the ratio
    // line can be checked against the flex line without torch (CI has none).
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("bench");
    let fake = dir.join("python");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"  pytorch  4.0  4096  fake torch, args: $*\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = varphi(
        &[
            "bench",
            "--workload",
            "pinn",
            "--backend",
            "flex",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--pytorch",
        ]
        .into_iter()
        .chain([fake.to_str().unwrap()])
        .collect::<Vec<_>>(),
        &dir,
    );
    succeeds(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let number = |prefix: &str, field: usize| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in\n{stdout}"));
        line.split_whitespace().nth(field).unwrap().parse().unwrap()
    };
    let flex = number("flex", 1);
    let ratio = number("ratio flex/pytorch:", 2);
    assert!(
        (ratio - flex / 4.0).abs() <= 0.006,
        "ratio {ratio} vs flex {flex} / 4.0\n{stdout}"
    );
    assert_eq!(
        stdout.lines().last().unwrap().split(':').next(),
        Some("ratio flex/pytorch")
    );
    // The twin was asked for the same workload and shapes.
    assert!(
        stdout
            .contains("--workload pinn --steps 3 --warmup 1 --batch 1024 --device cpu --threads 1"),
        "{stdout}"
    );
    // A Python that cannot run the twin: one-line error naming the fix.
    let out = varphi(
        &[
            "bench",
            "--workload",
            "pinn",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--backend",
            "flex",
            "--pytorch",
            "/nonexistent/python",
        ],
        &dir,
    );
    fails_with(&out, &["PyTorch twin", "pip install torch"]);
}
