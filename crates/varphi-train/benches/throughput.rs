//! `cargo bench -p varphi-train`: training throughput of every `varphi bench` workload on flex
//! (and wgpu when an adapter exists), with the workloads' default batch and steps.
//! Same measurement as `varphi bench --workload mlp-vae,unet,fno,pinn,conv-cvae` without the PyTorch twins.

use clap::ValueEnum;
use varphi_train::backend::{BackendKind, wgpu_available};
use varphi_train::bench::{BenchSpec, Workload, throughput};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut backends = vec![BackendKind::Flex];
    if wgpu_available() {
        backends.push(BackendKind::Wgpu);
    }
    for &workload in Workload::value_variants() {
        let spec = BenchSpec::for_workload(workload, 10);
        for &b in &backends {
            match throughput(workload, b, &spec) {
                Ok(r) => println!(
                    "{:<8} {b:<8} {:>8.2} steps/s {:>10.0} samples/s  ({})",
                    workload.name(),
                    r.steps_per_s,
                    r.samples_per_s,
                    r.device
                ),
                Err(e) => println!("{:<8} {b:<8} unavailable: {e}", workload.name()),
            }
        }
    }
}
