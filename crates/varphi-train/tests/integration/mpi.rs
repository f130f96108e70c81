//! Training over MPI ranks (the `mpi` feature; `.ci/run` builds it and runs these under
//! OpenMPI's `mpirun -n 2 --oversubscribe` on its 2 cores).

use crate::common::*;
use std::path::Path;
use std::process::{Command, Output};
use varphi_train::session::run_parameters;

/// `mpirun -n ranks varphi ARGS` in `cwd`.
fn mpirun(ranks: usize, args: &[&str], cwd: &Path) -> Output {
    Command::new("mpirun")
        .args(["--oversubscribe", "-n", &ranks.to_string()])
        .arg(env!("CARGO_BIN_EXE_varphi"))
        .args(args)
        .current_dir(cwd)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun (OpenMPI) is on PATH: apt-get install openmpi-bin libopenmpi-dev")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn one_process(dir: &Path, config: &Path, out: &str) -> Vec<f64> {
    let status = Command::new(env!("CARGO_BIN_EXE_varphi"))
        .args(["train", "-q", "--out", out])
        .arg(config)
        .current_dir(dir)
        .output()
        .unwrap();
    ok(&status);
    run_parameters(&dir.join(out)).unwrap()
}

#[test]
fn two_mpi_ranks_with_half_batches_train_the_weights_of_one_process() {
    let dir = temp_dir("mpi-ranks");
    // 230 training rows, batches of 32: 7 epochs = 56 steps, 16 rows per rank per step.
    let cfg = write(&dir, "c.toml", &small_config(7, ""));
    let one = one_process(&dir, &cfg, "one");
    let out = mpirun(2, &["train", "-q", "--mpi", "--out", "two", "c.toml"], &dir);
    ok(&out);
    assert_eq!(*metric(&dir.join("two"), "step").last().unwrap(), 56.0);
    let two = run_parameters(&dir.join("two")).unwrap();
    // f32 weights, the batch summed in another order (one host all-reduce in f64): measured
    // 1e-7 of the largest weight; ≤ 1e-5.
    let d = relative_difference(&one, &two);
    assert!(d < 1e-5, "weights differ by {d:.3e} of the largest");
    // Two ranks with two CPU replicas each: four shards of 8 rows.
    let out = mpirun(
        2,
        &[
            "train",
            "-q",
            "--devices",
            "flex,flex",
            "--out",
            "four",
            "c.toml",
        ],
        &dir,
    );
    ok(&out);
    let four = run_parameters(&dir.join("four")).unwrap();
    let d = relative_difference(&one, &four);
    assert!(d < 1e-5, "2 ranks × 2 devices: weights differ by {d:.3e}");
}

#[test]
fn a_batch_with_fewer_rows_than_ranks_trains_the_weights_of_one_process() {
    let dir = temp_dir("mpi-short-batch");
    // 230 training rows in batches of 229: every epoch ends with a batch of one row, which
    // leaves rank 1 without rows (it evaluates a row with weight 0).
    let text = small_config(3, "").replace("batch_size = 32", "batch_size = 229");
    assert!(text.contains("batch_size = 229"));
    let cfg = write(&dir, "c.toml", &text);
    let one = one_process(&dir, &cfg, "one");
    ok(&mpirun(2, &["train", "-q", "--out", "two", "c.toml"], &dir));
    assert_eq!(*metric(&dir.join("two"), "step").last().unwrap(), 6.0);
    let two = run_parameters(&dir.join("two")).unwrap();
    let d = relative_difference(&one, &two);
    assert!(d < 1e-5, "weights differ by {d:.3e} of the largest");
}

#[test]
fn a_killed_rank_stops_the_job_with_its_checkpoint_and_the_ranks_resume() {
    let dir = temp_dir("mpi-kill");
    let cfg = write(&dir, "long.toml", &small_config(100_000, ""));
    let bin = env!("CARGO_BIN_EXE_varphi");
    let job = Command::new("mpirun")
        .args([
            "--oversubscribe",
            "-n",
            "2",
            bin,
            "train",
            "-q",
            "--out",
            "killed",
        ])
        .arg(&cfg)
        .current_dir(&dir)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for a few epochs' checkpoints, then kill one rank (the last varphi process of
    // this job: rank 0 or 1, either must do).
    let state = dir.join("killed/checkpoint/state.json");
    let t0 = std::time::Instant::now();
    while !(state.exists()
        && std::fs::read_to_string(&state).is_ok_and(|s| !s.contains("\"epochs_done\": 1,")))
    {
        assert!(t0.elapsed().as_secs() < 120, "no checkpoint after 120 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let ranks: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.starts_with(bin) && c.contains("killed")
            })
        })
        .collect();
    assert_eq!(ranks.len(), 2, "two rank processes: {ranks:?}");
    Command::new("kill")
        .args(["-9", &ranks[1].to_string()])
        .status()
        .unwrap();
    let out = job.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exited on signal 9") || stderr.contains("killed"),
        "mpirun names the killed rank: {stderr}"
    );
    // The checkpoint is whole (the kill may land between the renames of an atomic write:
    // `load_state` then reads the kept `.checkpoint.old`); resuming on two ranks for five more
    // epochs continues it, to the weights of one uninterrupted process.
    let done = varphi_train::checkpoint::load_state(&dir.join("killed"))
        .expect("a whole checkpoint after the kill")
        .epochs_done;
    let target = done + 5;
    let more = write(&dir, "more.toml", &small_config(target, ""));
    let out = mpirun(2, &["train", "-q", "--resume", "killed", "more.toml"], &dir);
    ok(&out);
    let steps = metric(&dir.join("killed"), "step");
    assert_eq!(*steps.last().unwrap(), (target * 8) as f64);
    let resumed = run_parameters(&dir.join("killed")).unwrap();
    let one = one_process(&dir, &more, "uninterrupted");
    let d = relative_difference(&one, &resumed);
    assert!(d < 1e-4, "resumed after a kill: weights differ by {d:.3e}");
}

#[test]
fn data_generated_over_two_ranks_is_the_one_process_archive_byte_for_byte() {
    let dir = temp_dir("mpi-data");
    let args = ["data", "darcy", "--n", "41", "--grid", "9", "-q"];
    let one = Command::new(env!("CARGO_BIN_EXE_varphi"))
        .args(args)
        .args(["-o", "one.npz"])
        .current_dir(&dir)
        .output()
        .unwrap();
    ok(&one);
    let mut two = args.to_vec();
    two.extend_from_slice(&["-o", "two.npz"]);
    ok(&mpirun(2, &two, &dir));
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    assert_eq!(
        read("one.npz"),
        read("two.npz"),
        "the 2-rank archive differs"
    );
}

#[test]
fn an_ensemble_of_four_over_two_ranks_is_the_sequential_ensemble() {
    let dir = temp_dir("mpi-ensemble");
    write_pairs(&dir, "train.npz", 240, 0);
    write_pairs(&dir, "test.npz", 100, 1000);
    let config = files_cvae_config("").replace("epochs = 12\n", "epochs = 4\nensemble = 4\n");
    assert!(config.contains("ensemble = 4"), "{config}");
    let cfg = write(&dir, "ens.toml", &config);
    let seq = Command::new(env!("CARGO_BIN_EXE_varphi"))
        .args(["train", "-q", "--out", "seq"])
        .arg(&cfg)
        .current_dir(&dir)
        .output()
        .unwrap();
    ok(&seq);
    let out = mpirun(2, &["train", "--out", "ranks", "ens.toml"], &dir);
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the others train theirs"), "{stdout}");
    for m in 0..4 {
        let a = run_parameters(&dir.join(format!("seq/members/{m}"))).unwrap();
        let b = run_parameters(&dir.join(format!("ranks/members/{m}"))).unwrap();
        // Each member is trained by one process either way: the same weights bit for bit.
        assert_eq!(a, b, "member {m}");
    }
    // The ensemble evaluates as one.
    let eval = Command::new(env!("CARGO_BIN_EXE_varphi"))
        .args(["eval", "ranks"])
        .current_dir(&dir)
        .output()
        .unwrap();
    ok(&eval);
}

#[test]
fn bayes_vi_cases_over_two_ranks_write_the_one_process_files() {
    let dir = temp_dir("mpi-infer");
    let cfg = write(&dir, "bvi.toml", SMALL_BAYES_VI);
    let one = Command::new(env!("CARGO_BIN_EXE_varphi"))
        .args(["infer", "-q", "--out", "one"])
        .arg(&cfg)
        .current_dir(&dir)
        .output()
        .unwrap();
    ok(&one);
    // Three cases over two ranks: cases 0 and 2 on rank 0, case 1 on rank 1.
    ok(&mpirun(
        2,
        &["infer", "-q", "--out", "two", "bvi.toml"],
        &dir,
    ));
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    assert_eq!(read("one/samples.npy"), read("two/samples.npy"));
    assert_eq!(read("one/truth.npy"), read("two/truth.npy"));
    let summary = |run: &str| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&read(&format!("{run}/summary.json"))).unwrap();
        v.as_object_mut().unwrap().remove("wall_s");
        v
    };
    assert_eq!(summary("one"), summary("two"));
}

#[test]
fn ranks_holding_only_their_data_shards_train_the_weights_of_one_process_with_all_of_them() {
    let dir = temp_dir("mpi-data-shards");
    // heat1d (a generated file-like source, read whole and cut): 230 training rows in two
    // shards of 115, batches of 16 + 16 rows.
    let cfg = write(&dir, "c.toml", &small_config(4, "data_shards = 2\n"));
    let one = one_process(&dir, &cfg, "one");
    let out = mpirun(2, &["train", "-q", "--out", "two", "c.toml"], &dir);
    ok(&out);
    let two = run_parameters(&dir.join("two")).unwrap();
    let d = relative_difference(&one, &two);
    assert!(
        d < 1e-5,
        "data shards on 2 ranks: weights differ by {d:.3e}"
    );
    // The normaliser, fitted from sums over the ranks' shards, is the whole split's.
    let norm = |run: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(dir.join(run).join("normalization.json")).unwrap(),
        )
        .unwrap()
    };
    for key in ["x_mean", "x_std"] {
        let (a, b) = (
            norm("one")[key].as_f64().unwrap(),
            norm("two")[key].as_f64().unwrap(),
        );
        assert!((a - b).abs() <= 1e-12 * a.abs(), "{key}: {a} vs {b}");
    }
    // The shards change the batches (not only where the rows live): the plain order differs.
    let plain = write(&dir, "plain.toml", &small_config(4, ""));
    let whole = one_process(&dir, &plain, "plain");
    assert!(relative_difference(&one, &whole) > 1e-4);

    // A physics source generates only each rank's samples; four shards on two ranks (two
    // each) give the batches of four shards in one process.
    let physics = r#"seed = 2
[data]
kind = "poisson1d"
n = 90
grid = 17
[model]
kind = "cvae"
latent_dim = 2
hidden = [16]
[objective]
noise = "learned"
[training]
epochs = 3
batch_size = 16
data_shards = 4
"#;
    let cfg = write(&dir, "p.toml", physics);
    let one = one_process(&dir, &cfg, "p-one");
    ok(&mpirun(
        2,
        &["train", "-q", "--out", "p-two", "p.toml"],
        &dir,
    ));
    let two = run_parameters(&dir.join("p-two")).unwrap();
    let d = relative_difference(&one, &two);
    assert!(d < 1e-5, "4 shards on 2 ranks: weights differ by {d:.3e}");
    // A shard count the ranks do not divide is a one-line error.
    write(
        &dir,
        "bad.toml",
        &physics.replace("data_shards = 4", "data_shards = 3"),
    );
    let out = mpirun(2, &["train", "-q", "--out", "bad", "bad.toml"], &dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("training.data_shards") && err.contains("multiple of the 2 MPI ranks"),
        "{err}"
    );
}

#[test]
fn a_rank_that_fails_alone_ends_the_job_with_its_error_instead_of_leaving_the_others_waiting() {
    let dir = temp_dir("mpi-rank-fails");
    // 40 samples, 30 for training in two shards: a NaN in a row of rank 1's shard is found by
    // rank 1 alone (rank 0 never reads it) while rank 0 goes on to its first collective.
    let (train, _) = varphi_data::split_indices(40, 0.25, 3);
    let bad_row = train[20];
    let mut x: Vec<f64> = (0..40 * 8).map(|v| (f64::from(v) * 0.1).sin()).collect();
    x[bad_row * 8 + 3] = f64::NAN;
    varphi_data::npy::save_npy_f32(&dir.join("d.npy"), &[40, 8], &x).unwrap();
    write(
        &dir,
        "c.toml",
        "seed = 3\n[data]\nkind = \"npy\"\npath = \"d.npy\"\n[split]\ntest_fraction = 0.25\n[model]\nlatent_dim = 2\nhidden = [8]\n[training]\nepochs = 2\nbatch_size = 8\ndata_shards = \"ranks\"\n",
    );
    let out = Command::new("timeout")
        .args(["120", "mpirun", "--oversubscribe", "-n", "2"])
        .arg(env!("CARGO_BIN_EXE_varphi"))
        .args(["train", "-q", "--out", "run", "c.toml"])
        .current_dir(&dir)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(124), "the job hung: {err}");
    assert!(!out.status.success());
    assert!(
        err.contains("error (MPI rank 1 of 2)") && err.contains(&format!("sample {bad_row}")),
        "{err}"
    );
}
