//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A fresh temporary folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("varphi-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small heat1d config (fast on CPU).
pub fn small_config(epochs: usize, extra: &str) -> String {
    format!(
        r#"seed = 3
[data]
kind = "heat1d"
n = 256
grid = 16
modes = 4
[model]
latent_dim = 4
hidden = [32, 32]
[objective]
sigma = 0.1
noise = "learned"
[optimizer]
lr = 0.003
[training]
epochs = {epochs}
batch_size = 32
{extra}"#
    )
}

/// Write `text` to `dir/name` and return the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Rows of a run's metrics.csv without the elapsed-time column.
pub fn metrics_without_time(run: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let t = header.iter().position(|h| *h == "elapsed_s").unwrap();
    lines
        .map(|l| {
            l.split(',')
                .enumerate()
                .filter(|(i, _)| *i != t)
                .map(|(_, v)| v.to_string())
                .collect()
        })
        .collect()
}

/// Column `name` of metrics.csv as numbers.
pub fn metric(run: &Path, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let c = header
        .iter()
        .position(|h| *h == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    lines
        .map(|l| l.split(',').nth(c).unwrap().parse().unwrap())
        .collect()
}

/// Whether a wgpu adapter exists; without one, `false` (the caller skips), except under
/// `CI=true`, where a missing adapter fails the test.
pub fn wgpu_or_skip() -> bool {
    if varphi_train::backend::wgpu_available() {
        return true;
    }
    assert!(
        !wgpu_required(),
        "CI=true but no wgpu adapter: install mesa-vulkan-drivers"
    );
    eprintln!("skipping: no wgpu adapter");
    false
}

/// Held by every test that uses the wgpu device in this process. burn keeps one device (and
/// one random generator) per adapter per process, so two tests seeding and initialising on
/// it at once draw each other's numbers (measured: a weight comparison off by 0.79).
pub fn one_wgpu_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static WGPU_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    WGPU_TESTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the wgpu tests must run (CI) rather than skip.
pub fn wgpu_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `n` pairs (a, u): `u_j = a0 sin(π (j+1) / 17) + a1 cos(π (j+1) / 17) + 0.05 e_j` on 16
/// nodes, `a ∈ [−1, 1]²`, from a fixed pseudo-random sequence starting at `offset`.
pub fn pairs(n: usize, offset: usize) -> (Vec<f64>, Vec<f64>) {
    // A deterministic, well-spread sequence (fractional parts of multiples of irrationals).
    let frac = |k: usize, g: f64| ((k as f64 + 1.0) * g).fract();
    let (mut a, mut u) = (Vec::new(), Vec::new());
    for i in offset..offset + n {
        let a0 = 2.0 * frac(i, 0.754_877_666) - 1.0;
        let a1 = 2.0 * frac(i, 0.569_840_290) - 1.0;
        a.extend([a0, a1]);
        for j in 0..16 {
            let t = std::f64::consts::PI * (j + 1) as f64 / 17.0;
            let e = (frac(i * 16 + j, 0.618_033_988_7) - 0.5) * 0.17; // sd ≈ 0.05
            u.push(a0 * t.sin() + a1 * t.cos() + e);
        }
    }
    (a, u)
}

pub fn write_pairs(dir: &Path, name: &str, n: usize, offset: usize) {
    let (a, u) = pairs(n, offset);
    varphi_data::npy::save_npz_f64(&dir.join(name), &[("u", &[n, 16], &u), ("a", &[n, 2], &a)])
        .unwrap();
}

/// A CVAE on the given `train.npz` / `test.npz` files of [`write_pairs`] (`u` given `a`), 12
/// epochs, with the `[objective]` lines `objective`.
pub fn files_cvae_config(objective: &str) -> String {
    format!(
        r#"seed = 5
[data]
kind = "files"
train = {{ path = "train.npz", x = "u", cond = "a" }}
test = {{ path = "test.npz", x = "u", cond = "a" }}
[model]
kind = "cvae"
latent_dim = 2
hidden = [32, 32]
[objective]
{objective}
[optimizer]
lr = 0.003
[training]
epochs = 12
batch_size = 32
"#
    )
}

/// `varphi predict RUN` on the conditions of `test.npz` (`a`) with its solutions (`u`) as truth
/// and `n` samples per row (the run's default without `n`), into `p.npz`: `p.scores.json`.
pub fn predict_test_file(dir: &Path, run: &str, n: Option<&str>) -> serde_json::Value {
    let mut args = vec!["predict", run, "--input", "test.npz", "--key", "a"];
    if let Some(n) = n {
        args.extend(["-n", n]);
    }
    args.extend(["-o", "p.npz", "--truth", "test.npz", "--truth-key", "u"]);
    crate::cli::succeeds(&crate::cli::varphi(&args, dir));
    crate::cli::read_json(&dir.join("p.scores.json"))
}

/// `predict`'s scores equal `eval`'s block: rel. L2, NLL, CRPS to 1e-9, coverage exactly.
pub fn assert_scores_match(predicted: &serde_json::Value, eval: &serde_json::Value) {
    for k in ["rel_l2", "nll", "crps"] {
        let (a, b) = (predicted[k].as_f64().unwrap(), eval[k].as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{k}: predict {a} vs eval {b}"
        );
    }
    assert_eq!(predicted["coverage"], eval["coverage"]);
}

/// Largest `|a − b|` over `max |a|` (weights of two runs).
pub fn relative_difference(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// A small `varphi infer` config: 3 cases of a 17 × 17 Darcy problem with a 6-mode
/// log-normal field, 32 sensors, 100 steps.
pub const SMALL_BAYES_VI: &str = "seed = 3\n[data]\nkind = \"darcy\"\nn = 3\ngrid = 17\n[data.settings.coefficient]\nkind = \"log-normal\"\nlength = 0.3\nsigma = 0.8\nmean = 0.0\nmodes = 6\n[observations]\ncount = 32\nsigma = 0.005\n[posterior]\nparticles = 4\nsamples = 50\n[optimizer]\nsteps = 100\n";
