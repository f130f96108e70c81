//! `cargo bench -p varphi-train`: training throughput of the benchmark VAE on each CPU backend
//! (and wgpu when an adapter exists). Same measurement as `varphi bench`.

use varphi_train::backend::{BackendKind, wgpu_available};
use varphi_train::bench::{BenchSpec, vae_throughput};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let spec = BenchSpec::default();
    let mut backends = vec![BackendKind::Flex, BackendKind::Ndarray];
    if wgpu_available() {
        backends.push(BackendKind::Wgpu);
    }
    for b in backends {
        match vae_throughput(b, &spec) {
            Ok(r) => println!(
                "{b:<8} {:>8.1} steps/s {:>10.0} samples/s  ({})",
                r.steps_per_s, r.samples_per_s, r.device
            ),
            Err(e) => println!("{b:<8} unavailable: {e}"),
        }
    }
}
