//! End-to-end behaviour of training: it learns, checkpoints round-trip, resume is exact, and
//! CPU-trained models run on wgpu.

use crate::common::*;
use burn::optim::AdamConfig;
use burn::prelude::*;
use std::path::Path;
use varphi_models::{LatentVariableModel, VariationalFamily};
use varphi_train::backend::BackendKind;
use varphi_train::checkpoint::{self, CheckpointState};
use varphi_train::data::{self, TrainData};
use varphi_train::experiment::TrainConfig;
use varphi_train::kind::Kind;
use varphi_train::kinds::KindSection;
use varphi_train::latent::GenerativeModel;
use varphi_train::session::{TrainOptions, train};

/// The model and data of a `vae` config.
fn build(config: &TrainConfig, device: &Device) -> (GenerativeModel, TrainData) {
    let KindSection::Vae(vae) = &config.kind else {
        panic!("a vae config")
    };
    let data = data::prepare(&config.common, vae.x_scaling(), Path::new(".")).unwrap();
    (vae.model(&data.run, device), data)
}

fn quiet(out: &Path) -> TrainOptions {
    TrainOptions {
        out: Some(out.to_path_buf()),
        quiet: true,
        no_plots: true,
        ..Default::default()
    }
}

fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// Deterministic model outputs for comparisons: decoder mean at the posterior mean.
fn outputs(model: &GenerativeModel, x: Tensor<2>) -> Vec<f32> {
    let q = model.model.posterior(x, None);
    let params = model.model.decode(q.mean().unsqueeze::<3>(), None);
    vec(model.likelihood.mean(params))
}

#[test]
fn two_hundred_steps_lower_the_loss() {
    let dir = temp_dir("learns");
    // 256 samples, 10% test -> 230 train -> 8 batches/epoch; 25 epochs = 200 steps.
    let cfg = write(&dir, "c.toml", &small_config(25, ""));
    train(Some(&cfg), &quiet(&dir.join("run"))).unwrap();
    let steps = metric(&dir.join("run"), "step");
    assert_eq!(*steps.last().unwrap(), 200.0);
    let loss = metric(&dir.join("run"), "train_loss");
    let test_elbo = metric(&dir.join("run"), "test_elbo");
    assert!(loss.last().unwrap() < &(loss[0] - 1.0), "loss {loss:?}");
    assert!(
        test_elbo.last().unwrap() > &test_elbo[0],
        "test elbo {test_elbo:?}"
    );
}

#[test]
fn checkpoint_round_trip_gives_identical_outputs() {
    let dir = temp_dir("ckpt");
    let config = TrainConfig::from_toml(&small_config(1, ""), Path::new("t")).unwrap();
    let device = Device::flex();
    let (model, data) = build(&config, &device);
    let (x, _) = data.run.test.batch(&[0, 1, 2], &device);
    let state = CheckpointState {
        epochs_done: 1,
        steps_done: 8,
        seed: 3,
        backend: "flex".into(),
        varphi_version: "test".into(),
    };
    checkpoint::save(&dir, &model, &AdamConfig::new().init(), &state).unwrap();
    // A differently initialised model, then loaded: outputs must be bit-identical.
    device.seed(999);
    let (fresh, _) = build(&config, &device);
    assert_ne!(outputs(&fresh, x.clone()), outputs(&model, x.clone()));
    let (loaded, s) = checkpoint::load_model(&dir, fresh).unwrap();
    assert_eq!(s, state);
    assert_eq!(outputs(&loaded, x.clone()), outputs(&model, x));
    // A second save replaces the first atomically (no temp folders left behind).
    checkpoint::save(&dir, &model, &AdamConfig::new().init(), &state).unwrap();
    assert!(!dir.join(".checkpoint.tmp").exists() && !dir.join(".checkpoint.old").exists());
}

#[test]
fn resume_reproduces_an_uninterrupted_run_exactly() {
    let dir = temp_dir("resume");
    let full = write(&dir, "full.toml", &small_config(4, ""));
    let half = write(&dir, "half.toml", &small_config(2, ""));
    train(Some(&full), &quiet(&dir.join("a"))).unwrap();
    train(Some(&half), &quiet(&dir.join("b"))).unwrap();
    let resume = TrainOptions {
        resume: Some(dir.join("b")),
        ..quiet(&dir.join("b"))
    };
    train(Some(&full), &resume).unwrap();
    let (a, b) = (
        metrics_without_time(&dir.join("a")),
        metrics_without_time(&dir.join("b")),
    );
    assert_eq!(a.len(), 4);
    assert_eq!(a, b, "resumed metrics differ from the uninterrupted run");
}

#[test]
fn cpu_trained_model_runs_on_wgpu_and_wgpu_training_learns() {
    if !wgpu_or_skip() {
        return;
    }
    let _wgpu = one_wgpu_test_at_a_time();
    let dir = temp_dir("wgpu");
    let config = TrainConfig::from_toml(&small_config(1, ""), Path::new("t")).unwrap();
    let cpu = Device::flex();
    let (model, data) = build(&config, &cpu);
    let state = CheckpointState {
        epochs_done: 1,
        steps_done: 1,
        seed: 3,
        backend: "flex".into(),
        varphi_version: "test".into(),
    };
    checkpoint::save(&dir, &model, &AdamConfig::new().init(), &state).unwrap();
    let gpu = varphi_train::select_device(BackendKind::Wgpu, varphi_train::Precision::F32)
        .unwrap()
        .device;
    let (on_gpu, _) = build(&config, &gpu);
    let (on_gpu, _) = checkpoint::load_model(&dir, on_gpu).unwrap();
    let idx: Vec<usize> = (0..8).collect();
    let (xc, _) = data.run.test.batch(&idx, &cpu);
    let (xg, _) = data.run.test.batch(&idx, &gpu);
    let (a, b) = (outputs(&model, xc), outputs(&on_gpu, xg));
    for (u, v) in a.iter().zip(&b) {
        assert!(
            (u - v).abs() <= 1e-4 * (1.0 + u.abs()),
            "flex {u} vs wgpu {v}"
        );
    }

    // Short training on both: wgpu must learn like the CPU (different noise stream order is
    // irrelevant here: both draw the same seeded noise, but kernels differ, so compare
    // statistically).
    let cfg = write(&dir, "c.toml", &small_config(6, ""));
    train(Some(&cfg), &quiet(&dir.join("cpu"))).unwrap();
    let opts = TrainOptions {
        backend: Some(BackendKind::Wgpu),
        ..quiet(&dir.join("gpu"))
    };
    train(Some(&cfg), &opts).unwrap();
    let (lc, lg) = (
        metric(&dir.join("cpu"), "train_loss"),
        metric(&dir.join("gpu"), "train_loss"),
    );
    let drop_cpu = lc[0] - lc[5];
    assert!(
        lg[5] < lg[0] - 0.5 * drop_cpu,
        "wgpu loss {lg:?} vs cpu {lc:?}"
    );
    assert!(
        (lg[5] - lc[5]).abs() < 0.25 * drop_cpu.abs() + 0.5,
        "wgpu final {} vs cpu {}",
        lg[5],
        lc[5]
    );
}

#[test]
fn every_shipped_config_validates() {
    // `varphi train` configs load as TrainConfig, `varphi infer` configs as InferConfig; a
    // config that is neither (a typo, a removed key) fails here rather than for a user.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let train = TrainConfig::load(&path);
        let infer = varphi_train::infer::InferConfig::load(&path);
        assert!(
            train.is_ok() || infer.is_ok(),
            "{}: as a train config: {}; as an infer config: {}",
            path.display(),
            train.unwrap_err(),
            infer.unwrap_err()
        );
        n += 1;
    }
    assert!(n >= 25, "found only {n} configs in {}", dir.display());
}

#[test]
fn two_cpu_replicas_with_half_batches_train_the_weights_of_one_device() {
    let dir = temp_dir("replicas");
    // 230 training rows, batches of 32 (the last of each epoch 6): 7 epochs = 56 steps, each
    // split 16 / 16 (3 / 3) over the two replicas.
    let cfg = write(&dir, "c.toml", &small_config(7, ""));
    train(Some(&cfg), &quiet(&dir.join("one"))).unwrap();
    let two = TrainOptions {
        devices: Some(vec!["flex".into(), "flex".into()]),
        ..quiet(&dir.join("two"))
    };
    train(Some(&cfg), &two).unwrap();
    let uneven = write(
        &dir,
        "u.toml",
        &small_config(
            7,
            "devices = [\"flex\", \"flex\"]\ndevice_shares = [3.0, 1.0]",
        ),
    );
    train(Some(&uneven), &quiet(&dir.join("uneven"))).unwrap();
    let auto = write(
        &dir,
        "a.toml",
        &small_config(
            7,
            "devices = [\"flex\", \"flex\"]\ndevice_shares = \"auto\"",
        ),
    );
    train(Some(&auto), &quiet(&dir.join("auto"))).unwrap();
    // The measured shares are recorded (two equal devices: both near 1, positive, summing to 2).
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("auto/parallel.json")).unwrap())
            .unwrap();
    let shares: Vec<f64> = p["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(shares.len(), 2);
    assert!((shares.iter().sum::<f64>() - 2.0).abs() < 1e-9 && shares.iter().all(|&s| s > 0.0));
    assert_eq!(p["steps"], 56);
    // The VAE's ELBO shards draw the unsharded noise: the step is exact.
    assert_eq!(p["exact"], true);
    assert_eq!(*metric(&dir.join("two"), "step").last().unwrap(), 56.0);
    let one = varphi_train::session::run_parameters(&dir.join("one")).unwrap();
    for run in ["two", "uneven", "auto"] {
        let other = varphi_train::session::run_parameters(&dir.join(run)).unwrap();
        let d = relative_difference(&one, &other);
        // f32 weights after 56 Adam steps: the shards sum the batch in another order, so
        // agreement is to rounding (measured 1.6e-7 and 3.1e-7 of the largest weight):
        // ≤ 1e-5.
        assert!(d < 1e-5, "{run}: weights differ by {d:.3e} of the largest");
        let (a, b) = (
            metric(&dir.join("one"), "train_loss"),
            metric(&dir.join(run), "train_loss"),
        );
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() < 1e-3 * x.abs().max(1.0),
                "{run}: losses {a:?} vs {b:?}"
            );
        }
    }
    // A different seed gives different weights: the comparison can fail.
    let other_seed = write(
        &dir,
        "s.toml",
        &small_config(7, "").replace("seed = 3", "seed = 4"),
    );
    train(Some(&other_seed), &quiet(&dir.join("seed4"))).unwrap();
    let seed4 = varphi_train::session::run_parameters(&dir.join("seed4")).unwrap();
    assert!(relative_difference(&one, &seed4) > 1e-2);
}

#[test]
fn a_gpu_with_a_cpu_replica_trains_the_weights_of_the_gpu_alone() {
    if !wgpu_or_skip() {
        return;
    }
    let _wgpu = one_wgpu_test_at_a_time();
    let dir = temp_dir("replicas-wgpu");
    // 3 epochs = 24 steps (lavapipe is slow).
    let cfg = write(&dir, "c.toml", &small_config(3, ""));
    let run = |name: &str, backend: Option<BackendKind>, devices: Option<[&str; 2]>| {
        let opts = TrainOptions {
            backend,
            devices: devices.map(|d| d.iter().map(|s| s.to_string()).collect()),
            ..quiet(&dir.join(name))
        };
        train(Some(&cfg), &opts).unwrap();
        varphi_train::session::run_parameters(&dir.join(name)).unwrap()
    };
    let gpu = run("gpu", Some(BackendKind::Wgpu), None);
    let twice = run("twice", None, Some(["wgpu", "wgpu"]));
    let mixed = run("mixed", None, Some(["wgpu", "flex"]));
    let (d_twice, d_mixed) = (
        relative_difference(&gpu, &twice),
        relative_difference(&gpu, &mixed),
    );
    // Measured on Mesa's lavapipe: 1.1e-7 and 2.1e-4 of the largest weight.
    // Two shards on the GPU: its rounding alone.
    assert!(d_twice < 1e-5, "wgpu,wgpu: {d_twice:.3e}");
    // Half of every batch on the CPU: the two backends' f32 kernels (exp, softplus, matmul
    // order) round differently.
    assert!(d_mixed < 1e-3, "wgpu,flex: {d_mixed:.3e}");
}
