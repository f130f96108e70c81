//! Deep ensembles end to end: `[training] ensemble = 3` trains three members on the same data
//! (member 0 is the single run of the same config), `eval` scores each member and the
//! equal-weight mixture, `predict` samples the same mixture, and the one-run commands name
//! the members instead.

use crate::cli::{fails_with, read_json, succeeds, varphi};
use crate::common::*;

#[test]
fn an_ensemble_trains_members_on_one_data_set_and_scores_their_mixture() {
    let dir = temp_dir("ensemble");
    write_pairs(&dir, "train.npz", 240, 0);
    write_pairs(&dir, "test.npz", 100, 1000);
    let single = files_cvae_config("");
    let ensemble = single.replace("epochs = 12\n", "epochs = 12\nensemble = 3\n");
    assert_ne!(single, ensemble);
    let one = write(&dir, "one.toml", &single);
    let ens = write(&dir, "ens.toml", &ensemble);
    succeeds(&varphi(
        &["train", one.to_str().unwrap(), "--out", "one", "-q"],
        &dir,
    ));
    let out = varphi(&["train", ens.to_str().unwrap(), "--out", "ens"], &dir);
    succeeds(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("an ensemble of 3 members"), "{stdout}");
    for (k, seed) in [(0, 5), (1, 6), (2, 7)] {
        let text =
            std::fs::read_to_string(dir.join(format!("ens/members/{k}/config.toml"))).unwrap();
        assert!(
            text.contains(&format!("seed = {seed}\n")),
            "member {k}: {text}"
        );
        assert!(text.contains("data_seed = 5\n"), "member {k}: {text}");
    }

    succeeds(&varphi(&["eval", "one"], &dir));
    let out = varphi(&["eval", "ens"], &dir);
    succeeds(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("mixture"), "{stdout}");
    let e = read_json(&dir.join("ens/eval.json"));
    assert_eq!(e["ensemble"], 3);
    assert_eq!(e["cases"], 100);
    let members = e["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    // Member 0 is the single run: the same seed, data and steps give the same scores, in the
    // member's own eval.json and in the ensemble's.
    let alone = read_json(&dir.join("one/eval.json"))["surrogate"].clone();
    let m0 = read_json(&dir.join("ens/members/0/eval.json"))["surrogate"].clone();
    assert_eq!(alone["coverage"], m0["coverage"]);
    assert_eq!(alone["rel_l2"], m0["rel_l2"]);
    assert_eq!(members[0]["scores"]["rel_l2"], alone["rel_l2"]);
    // Different seeds give different members, and the mixture is at least as wide as its
    // narrowest member.
    let w = |v: &serde_json::Value| v["width_90"].as_f64().unwrap();
    let widths: Vec<f64> = members.iter().map(|m| w(&m["scores"])).collect();
    assert!(
        widths[0] != widths[1] && widths[1] != widths[2],
        "{widths:?}"
    );
    let mixture = &e["mixture"]["scores"];
    assert!(
        w(mixture) >= widths.iter().copied().fold(f64::INFINITY, f64::min),
        "{widths:?} vs {}",
        w(mixture)
    );
    assert!(dir.join("ens/calibration.png").is_file());
    assert!(dir.join("ens/bands.png").is_file());

    // predict on the ensemble draws the same mixture: 3 × 64 samples per row, scored like eval.
    let scores = &predict_test_file(&dir, "ens", Some("64"))["scores"];
    let s = varphi_data::npy::load_npz(&dir.join("p.npz"), "samples").unwrap();
    assert_eq!(s.shape, vec![100, 192, 16]);
    assert_scores_match(scores, mixture);

    // The commands that take one run name the members.
    fails_with(
        &varphi(
            &[
                "sample",
                "ens",
                "-n",
                "4",
                "-o",
                "s.npy",
                "--condition",
                "0.5,0.5",
            ],
            &dir,
        ),
        &["ensemble of 3 members", "members"],
    );
    fails_with(
        &varphi(&["report", "ens"], &dir),
        &["ensemble of 3 members"],
    );
    // A member is a run of its own.
    succeeds(&varphi(
        &[
            "sample",
            "ens/members/1",
            "-n",
            "4",
            "-o",
            "s.npy",
            "--condition",
            "0.5,0.5",
        ],
        &dir,
    ));
    // A kind whose predictive is not of the test split's conditions is refused before training.
    let vae = small_config(2, "").replace("batch_size", "ensemble = 2\nbatch_size");
    assert!(vae.contains("ensemble = 2"), "{vae}");
    let vae = write(&dir, "vae.toml", &vae);
    fails_with(
        &varphi(&["train", vae.to_str().unwrap(), "--out", "vae"], &dir),
        &["training.ensemble", "kind \"vae\"", "not supported"],
    );
    assert!(!dir.join("vae").exists());
    // ensemble = 0 is refused by name.
    let bad = write(
        &dir,
        "bad.toml",
        &single.replace("epochs = 12\n", "epochs = 12\nensemble = 0\n"),
    );
    fails_with(
        &varphi(&["train", bad.to_str().unwrap(), "--out", "bad"], &dir),
        &["training.ensemble", "at least 1"],
    );
}

#[test]
fn job_array_parts_train_the_members_of_the_sequential_ensemble() {
    let dir = temp_dir("ensemble-shards");
    write_pairs(&dir, "train.npz", 240, 0);
    write_pairs(&dir, "test.npz", 100, 1000);
    let config = files_cvae_config("").replace("epochs = 12\n", "epochs = 3\nensemble = 3\n");
    let cfg = write(&dir, "ens.toml", &config);
    let cfg = cfg.to_str().unwrap();
    succeeds(&varphi(&["train", cfg, "--out", "seq", "-q"], &dir));
    // Two tasks of a job array: members 0 and 2, then member 1, into one folder.
    for part in ["0/2", "1/2"] {
        succeeds(&varphi(
            &["train", cfg, "--shard", part, "--out", "arr", "-q"],
            &dir,
        ));
    }
    for m in 0..3 {
        let a =
            varphi_train::session::run_parameters(&dir.join(format!("seq/members/{m}"))).unwrap();
        let b =
            varphi_train::session::run_parameters(&dir.join(format!("arr/members/{m}"))).unwrap();
        assert_eq!(a, b, "member {m}");
    }
    succeeds(&varphi(&["eval", "arr"], &dir));
    succeeds(&varphi(&["eval", "seq"], &dir));
    let (a, b) = (
        read_json(&dir.join("seq/eval.json")),
        read_json(&dir.join("arr/eval.json")),
    );
    assert_eq!(a["mixture"], b["mixture"]);
    // A task of another config, a single run, or no --out are refused.
    let other = write(
        &dir,
        "other.toml",
        &config.replace("epochs = 3", "epochs = 4"),
    );
    fails_with(
        &varphi(
            &[
                "train",
                other.to_str().unwrap(),
                "--shard",
                "0/2",
                "--out",
                "arr",
            ],
            &dir,
        ),
        &["another config"],
    );
    fails_with(
        &varphi(&["train", cfg, "--shard", "0/2"], &dir),
        &["--shard needs --out"],
    );
    let single = write(&dir, "one.toml", &files_cvae_config(""));
    fails_with(
        &varphi(
            &[
                "train",
                single.to_str().unwrap(),
                "--shard",
                "0/2",
                "--out",
                "x",
            ],
            &dir,
        ),
        &["--shard splits the members of an ensemble"],
    );
}
