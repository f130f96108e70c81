//! `varphi bench`: training throughput of each workload ([`crate::workloads`]) on each backend,
//! and of its PyTorch twin `benches/pytorch_bench.py` in the same run, printed side by side with
//! the ratio of steps per second.

use crate::backend::BackendKind;
use crate::error::TrainError;
pub use crate::workloads::{BenchResult, BenchSpec, Workload, throughput};

/// Where and how to run the PyTorch twin.
#[derive(Debug, Clone)]
pub struct PytorchTwin {
    /// Python interpreter with torch installed.
    pub python: std::path::PathBuf,
    /// torch device: `cpu` or `cuda`.
    pub device: String,
}

/// `varphi bench`: for each workload, the throughput of each backend in `backends` (default:
/// flex and wgpu if an adapter exists), then, with `pytorch`, of the PyTorch twin in
/// the same run, and last `ratio <backend>/pytorch: R` (steps/s over steps/s; flex's line last).
/// `threads` sets `RAYON_NUM_THREADS` (and PyTorch's `torch.set_num_threads`). `spec` overrides
/// the workload's default batch and steps where given.
pub fn run(
    workloads: &[Workload],
    backends: Option<Vec<BackendKind>>,
    spec: &BenchOverrides,
    threads: Option<usize>,
    pytorch: Option<&PytorchTwin>,
) -> Result<(), TrainError> {
    if let Some(t) = threads {
        // SAFETY: set before any thread pool exists; the program is single-threaded here.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", t.to_string()) };
    }
    let backends = backends.unwrap_or_else(|| {
        let mut v = vec![BackendKind::Flex];
        if crate::backend::wgpu_available() {
            v.push(BackendKind::Wgpu);
        }
        v
    });
    let threads_label = threads.map_or("all".to_string(), |t| t.to_string());
    for &workload in workloads {
        let spec = spec.resolve(workload);
        println!(
            "{} — {}, batch {}, {} timed steps after {} warm-up, threads: {threads_label}",
            workload.name(),
            workload.describe(),
            spec.batch,
            spec.steps,
            spec.warmup
        );
        println!(
            "  {:<10} {:>10} {:>12}  device",
            "backend", "steps/s", "samples/s"
        );
        let mut ours = Vec::new();
        for &b in &backends {
            match throughput(workload, b, &spec) {
                Ok(r) => {
                    println!(
                        "  {:<10} {:>10.2} {:>12.0}  {} (final loss {:.4})",
                        b.to_string(),
                        r.steps_per_s,
                        r.samples_per_s,
                        r.device,
                        r.final_loss
                    );
                    ours.push(r);
                }
                Err(e) => println!("  {:<10} unavailable: {e}", b.to_string()),
            }
        }
        let Some(twin) = pytorch else {
            continue;
        };
        let theirs = run_twin(twin, workload, &spec, threads)?;
        ours.sort_by_key(|r| r.backend == BackendKind::Flex);
        for r in &ours {
            println!("ratio {}/pytorch: {:.2}", r.backend, r.steps_per_s / theirs);
        }
    }
    Ok(())
}

/// Batch and steps given on the command line (`None`: the workload's default).
#[derive(Debug, Clone, Default)]
pub struct BenchOverrides {
    /// Batch size.
    pub batch: Option<usize>,
    /// Timed steps.
    pub steps: Option<usize>,
    /// Untimed warm-up steps.
    pub warmup: usize,
}

impl BenchOverrides {
    fn resolve(&self, workload: Workload) -> BenchSpec {
        let d = BenchSpec::for_workload(workload, self.warmup);
        BenchSpec {
            batch: self.batch.unwrap_or(d.batch),
            steps: self.steps.unwrap_or(d.steps),
            warmup: self.warmup,
        }
    }
}

/// Run `benches/pytorch_bench.py` for `workload`, print its line, return its steps/s.
fn run_twin(
    twin: &PytorchTwin,
    workload: Workload,
    spec: &BenchSpec,
    threads: Option<usize>,
) -> Result<f64, TrainError> {
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/pytorch_bench.py");
    let mut cmd = std::process::Command::new(&twin.python);
    cmd.arg(&script).args([
        "--workload",
        workload.name(),
        "--steps",
        &spec.steps.to_string(),
        "--warmup",
        &spec.warmup.to_string(),
        "--batch",
        &spec.batch.to_string(),
        "--device",
        &twin.device,
    ]);
    if let Some(t) = threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    let failed = |message: String| TrainError::Run {
        path: twin.python.clone(),
        message,
    };
    let out = cmd.output().map_err(|e| {
        failed(format!(
            "cannot run the PyTorch twin ({e}); pass --pytorch a Python with torch installed, e.g. \
             python3 -m venv benches/.venv && benches/.venv/bin/pip install torch numpy"
        ))
    })?;
    if !out.status.success() {
        return Err(failed(format!(
            "the PyTorch twin failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    // Its line: `  pytorch  <steps/s> <samples/s>  …`.
    stdout
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("pytorch")).then(|| f.next()?.parse::<f64>().ok())?
        })
        .ok_or_else(|| {
            failed(format!(
                "no `pytorch <steps/s>` line in its output: {stdout}"
            ))
        })
}
