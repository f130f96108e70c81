//! The physics residuals give the same numbers on the CPU (ndarray, f32) and on wgpu (f32).

use crate::common::*;
use burn::prelude::*;
use rand::SeedableRng;
use varphi_data::physics::{PhysicsSettings, ProblemKind};
use varphi_train::backend::BackendKind;

fn values(t: Tensor<2>) -> Vec<f64> {
    t.into_data()
        .try_into_vec_as::<f64>()
        .expect("float tensor")
}

#[test]
fn residuals_agree_between_ndarray_and_wgpu() {
    if !wgpu_or_skip() {
        return;
    }
    #[allow(deprecated)]
    let cpu = Device::ndarray();
    let gpu = varphi_train::select_device(BackendKind::Wgpu, varphi_train::Precision::F32)
        .unwrap()
        .device;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for (kind, grid) in [
        (ProblemKind::Darcy, 16),
        (ProblemKind::Poisson1d, 33),
        (ProblemKind::Burgers, 17),
        (ProblemKind::Heat, 20),
        (ProblemKind::Pendulum, 50),
    ] {
        let mut settings = PhysicsSettings::new(kind, Some(grid));
        if let PhysicsSettings::Burgers(b) = &mut settings {
            b.steps = 20;
        }
        let problem = settings.build();
        let batch = 3;
        let (mut z, mut u) = (vec![], vec![]);
        for _ in 0..batch {
            let zi = problem.sample_params(&mut rng);
            let ui = problem.solve(&zi).unwrap();
            // Perturb the solution so every row is far from zero (no cancellation to compare).
            u.extend(
                ui.iter()
                    .enumerate()
                    .map(|(k, v)| v + 0.01 * ((k * 7 % 13) as f64 - 6.0)),
            );
            z.extend(zi);
        }
        let (nu, nz) = (u.len() / batch, z.len() / batch);
        let eval = |device: &Device| {
            let ut = Tensor::<2>::from_data(TensorData::new(u.clone(), [batch, nu]), device);
            let zt = Tensor::<2>::from_data(TensorData::new(z.clone(), [batch, nz]), device);
            let r = problem.residual(ut, zt);
            (values(r.pde), values(r.boundary))
        };
        let (pc, bc) = eval(&cpu);
        let (pg, bg) = eval(&gpu);
        for (name, a, b) in [("pde", &pc, &pg), ("boundary", &bc, &bg)] {
            let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
            let diff = a
                .iter()
                .zip(b)
                .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                diff <= 1e-4 * scale,
                "{kind:?} {name}: max |ndarray − wgpu| = {diff:e} (scale {scale:e})"
            );
        }
        eprintln!("{kind:?}: pde rows {} agree", pc.len());
    }
}
