//! A scientist's own data end to end: given train / validation / test files, `varphi predict`
//! on new inputs, early stopping, and the faults that must fail fast with one line.

use crate::cli::{fails_with, read_json, succeeds, varphi};
use crate::common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[test]
fn given_train_and_test_files_then_predict_scores_like_eval() {
    let dir = temp_dir("own-data");
    write_pairs(&dir, "train.npz", 240, 0);
    write_pairs(&dir, "test.npz", 40, 1000);
    let (a_new, _) = pairs(5, 5000);
    let mut csv = String::from("a0,a1\n");
    for r in a_new.chunks(2) {
        csv += &format!("{},{}\n", r[0], r[1]);
    }
    write(&dir, "new.csv", &csv);
    let cfg = write(
        &dir,
        "own.toml",
        &files_cvae_config("sigma = 0.1\nnoise = \"learned\""),
    );
    let out = varphi(&["train", cfg.to_str().unwrap(), "--out", "run"], &dir);
    succeeds(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("240 train / 40 test (given test file)"),
        "{stdout}"
    );
    succeeds(&varphi(&["eval", "run"], &dir));
    let eval = read_json(&dir.join("run/eval.json"));
    assert_eq!(eval["n_test"], 40, "the given test file is the test split");
    let surrogate = &eval["surrogate"];

    // Predicting the test file's conditions with its solutions as truth gives eval's scores.
    let scores = &predict_test_file(&dir, "run", Some("64"))["scores"];
    assert_scores_match(scores, surrogate);
    // The model learned the map: well below the data's scale, and calibrated-ish.
    assert!(surrogate["rel_l2"].as_f64().unwrap() < 0.5, "{surrogate}");

    // New inputs from a CSV file: [rows, S, 16] samples, mean and std.
    succeeds(&varphi(
        &[
            "predict", "run", "--input", "new.csv", "-n", "8", "-o", "new.npz",
        ],
        &dir,
    ));
    let p = dir.join("new.npz");
    let s = varphi_data::npy::load_npz(&p, "samples").unwrap();
    assert_eq!(s.shape, vec![5, 8, 16]);
    let m = varphi_data::npy::load_npz(&p, "mean").unwrap();
    let sd = varphi_data::npy::load_npz(&p, "std").unwrap();
    assert_eq!(
        (m.shape.clone(), sd.shape.clone()),
        (vec![5, 16], vec![5, 16])
    );
    assert!(sd.data.iter().all(|&v| v > 0.0 && v.is_finite()));
    // The mean of row 0's samples is its `mean`.
    let mean0: f64 = (0..8).map(|k| s.data[k * 16 + 3]).sum::<f64>() / 8.0;
    assert!((mean0 - m.data[3]).abs() < 1e-9);

    // Negative condition values on the command line; the same condition as row 1 of a
    // file samples exactly the same (same seed, same draws). A multi-row file without --row,
    // or a row past the end, is a one-line error.
    write(&dir, "cond.csv", "a0,a1\n9,9\n-0.5,1.25\n");
    for (source, out) in [
        (vec!["--condition", "-0.5,1.25"], "by_list.npy"),
        (
            vec!["--condition-file", "cond.csv", "--row", "1"],
            "by_file.npy",
        ),
    ] {
        let mut args = vec!["sample", "run", "-n", "3", "-o", out];
        args.extend(source);
        succeeds(&varphi(&args, &dir));
    }
    let by_list = varphi_data::read::load_array(&dir.join("by_list.npy"), None).unwrap();
    let by_file = varphi_data::read::load_array(&dir.join("by_file.npy"), None).unwrap();
    assert_eq!(by_file.shape, vec![3, 16]);
    assert_eq!(by_file.data, by_list.data);
    fails_with(
        &varphi(&["sample", "run", "--condition-file", "new.csv"], &dir),
        &[
            "--condition-file",
            "new.csv",
            "[5, 2]",
            "10 value(s)",
            "--row",
        ],
    );
    fails_with(
        &varphi(
            &["sample", "run", "--condition-file", "new.csv", "--row", "5"],
            &dir,
        ),
        &["--row", "5 row(s)"],
    );
    // Wrong input widths and truth shapes are one-line errors.
    fails_with(
        &varphi(
            &["predict", "run", "--input", "test.npz", "--key", "u"],
            &dir,
        ),
        &["--input", "2 value(s) per row", "[40, 16]"],
    );
    fails_with(
        &varphi(
            &[
                "predict",
                "run",
                "--input",
                "new.csv",
                "--truth",
                "test.npz",
                "--truth-key",
                "u",
            ],
            &dir,
        ),
        &["--truth", "[40, 16]", "5 rows"],
    );
    fails_with(
        &varphi(&["predict", "run", "--input", "test.npz"], &dir),
        &["test.npz", "name the array", "a, u"],
    );
}

#[test]
fn early_stopping_stops_at_the_validation_optimum_and_keeps_that_checkpoint() {
    let dir = temp_dir("early-stop");
    // 24 training samples, a wide network and a high learning rate: it over-fits.
    let cfg = write(
        &dir,
        "overfit.toml",
        r#"seed = 2
[data]
kind = "heat1d"
n = 60
grid = 16
modes = 4
[split]
test_fraction = 0.2
validation_fraction = 0.5
[model]
latent_dim = 8
hidden = [256, 256]
[objective]
sigma = 0.05
noise = "learned"
[optimizer]
lr = 0.003
[training]
epochs = 400
batch_size = 8
checkpoint_every = 7
early_stopping = { patience = 8, metric = "loss" }
"#,
    );
    let out = varphi(
        &["train", cfg.to_str().unwrap(), "--out", "run", "-q"],
        &dir,
    );
    succeeds(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let best = read_json(&dir.join("run/best/best.json"));
    let best_epoch = best["epoch"].as_u64().unwrap() as usize;
    let stopped = best["stopped_at"].as_u64().expect("it stopped early") as usize;
    assert!(stdout.contains("stopped early"), "{stdout}");
    assert_eq!(stopped, best_epoch + 8, "{best}");
    assert!(stopped < 400);
    let val = metric(&dir.join("run"), "val_loss");
    assert_eq!(val.len(), stopped, "one metrics row per epoch run");
    let argmin = (0..val.len())
        .min_by(|&i, &j| val[i].total_cmp(&val[j]))
        .unwrap()
        + 1;
    assert_eq!(argmin, best_epoch, "best = the validation optimum: {val:?}");
    // It did over-fit: the validation loss at the stop is above the optimum.
    assert!(val[stopped - 1] > val[best_epoch - 1]);
    // The last epoch is checkpointed too, apart from the best.
    let state = read_json(&dir.join("run/checkpoint/state.json"));
    assert_eq!(state["epochs_done"].as_u64().unwrap() as usize, stopped);
    assert_ne!(
        std::fs::read(dir.join("run/best/model.bpk")).unwrap(),
        std::fs::read(dir.join("run/checkpoint/model.bpk")).unwrap()
    );
    // eval uses the best checkpoint and says so; --last the last one.
    let out = varphi(&["eval", "run"], &dir);
    succeeds(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("using the best checkpoint: epoch {best_epoch}")),
        "{said}"
    );
    let e_best = read_json(&dir.join("run/eval.json"));
    assert_eq!(
        e_best["checkpoint"]["epoch"].as_u64().unwrap() as usize,
        best_epoch
    );
    assert_eq!(e_best["epochs"].as_u64().unwrap() as usize, best_epoch);
    succeeds(&varphi(&["eval", "run", "--last"], &dir));
    let e_last = read_json(&dir.join("run/eval.json"));
    assert!(e_last.get("checkpoint").is_none());
    assert_ne!(e_best["test_elbo"], e_last["test_elbo"]);
    // Resuming a stopped run is refused with the reason.
    fails_with(
        &varphi(&["train", "--resume", "run"], &dir),
        &["stopped early", "start a new run"],
    );
    // Early stopping without validation samples is a config error.
    let novalid = write(
        &dir,
        "novalid.toml",
        &small_config(3, "early_stopping = { patience = 2 }\n"),
    );
    fails_with(
        &varphi(&["train", novalid.to_str().unwrap()], &dir),
        &["training.early_stopping", "validation_fraction"],
    );
}

/// Run `varphi` with extra environment variables; fail the test if it takes over `secs`.
fn varphi_within(args: &[&str], cwd: &Path, env: &[(&str, &str)], secs: u64) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_varphi"))
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run varphi");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > Duration::from_secs(secs) {
            child.kill().ok();
            panic!("varphi {args:?} did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn faults_fail_within_seconds_with_one_line_errors() {
    let dir = temp_dir("faults");
    let cfg = write(&dir, "tiny.toml", &small_config(1, ""));
    // No Vulkan driver: the loader is pointed at a missing file.
    let missing = dir.join("no-such-icd.json");
    let missing = missing.to_str().unwrap();
    let out = varphi_within(
        &[
            "train",
            cfg.to_str().unwrap(),
            "--backend",
            "wgpu",
            "--out",
            "gpu",
        ],
        &dir,
        &[("VK_ICD_FILENAMES", missing), ("VK_DRIVER_FILES", missing)],
        10,
    );
    fails_with(&out, &["no usable wgpu adapter", "--backend flex"]);
    let out = varphi_within(
        &["devices"],
        &dir,
        &[("VK_ICD_FILENAMES", missing), ("VK_DRIVER_FILES", missing)],
        10,
    );
    succeeds(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("wgpu     none"));

    // With a driver (lavapipe on CI), the adapter is listed and selectable by index.
    if wgpu_or_skip() {
        let out = varphi_within(&["devices"], &dir, &[], 30);
        succeeds(&out);
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(listed.contains("wgpu:0 "), "{listed}");
        let out = varphi_within(
            &[
                "train",
                cfg.to_str().unwrap(),
                "--backend",
                "wgpu:0",
                "--out",
                "gpu0",
            ],
            &dir,
            &[],
            300,
        );
        succeeds(&out);
        assert!(String::from_utf8_lossy(&out.stdout).contains("device: wgpu on "));
        fails_with(
            &varphi_within(
                &["eval", "gpu0", "--backend", "wgpu:no-such-gpu"],
                &dir,
                &[],
                30,
            ),
            &["no wgpu adapter matches 'no-such-gpu'", "wgpu:0"],
        );
    }

    // A dataset larger than the machine's memory.
    let out = varphi_within(
        &[
            "data",
            "darcy",
            "--n",
            "100000000000",
            "--grid",
            "32",
            "-o",
            "x.npz",
        ],
        &dir,
        &[],
        10,
    );
    fails_with(
        &out,
        &[
            "100000000000 samples of darcy",
            "PiB",
            "memory is available",
            "--n",
        ],
    );
    assert!(!dir.join("x.npz").exists());

    // A truncated weights file, with and without an older checkpoint beside it.
    succeeds(&varphi(
        &["train", cfg.to_str().unwrap(), "--out", "run", "-q"],
        &dir,
    ));
    let bpk = dir.join("run/checkpoint/model.bpk");
    let bytes = std::fs::read(&bpk).unwrap();
    std::fs::write(&bpk, &bytes[..bytes.len() / 2]).unwrap();
    let out = varphi_within(&["eval", "run"], &dir, &[], 10);
    fails_with(
        &out,
        &["model.bpk", "truncated or corrupt", "no older checkpoint"],
    );
    let old = dir.join("run/.checkpoint.old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("model.bpk"), &bytes).unwrap();
    let out = varphi_within(&["eval", "run"], &dir, &[], 10);
    fails_with(&out, &["truncated or corrupt", ".checkpoint.old"]);

    // A truncated data file.
    varphi_data::npy::save_npz_f64(&dir.join("d.npz"), &[("x", &[50, 8], &vec![0.5; 400])])
        .unwrap();
    let d = std::fs::read(dir.join("d.npz")).unwrap();
    std::fs::write(dir.join("d.npz"), &d[..d.len() - 300]).unwrap();
    let bad = write(
        &dir,
        "bad.toml",
        "[data]\nkind = \"npz\"\npath = \"d.npz\"\n[model]\n",
    );
    fails_with(
        &varphi_within(&["train", bad.to_str().unwrap()], &dir, &[], 10),
        &["d.npz", "truncated or corrupt"],
    );
}
