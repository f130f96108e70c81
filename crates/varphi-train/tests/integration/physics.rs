//! The physics residuals give the same numbers on the CPU (flex, f32) and on wgpu (f32).

use crate::common::*;
use burn::prelude::*;
use rand::SeedableRng;
use varphi_data::physics::{PhysicsSettings, ProblemKind};
use varphi_train::backend::BackendKind;

/// Max |a − b| within 1e-4 of max |a| (f32 on both sides).
fn assert_close(name: &str, a: Vec<f64>, b: Vec<f64>) {
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff <= 1e-4 * scale,
        "{name}: max |flex − wgpu| = {diff:e} (scale {scale:e})"
    );
}

/// flex (f32) and wgpu (f32) devices.
fn cpu_and_gpu() -> (Device, Device) {
    let cpu = Device::flex();
    let gpu = varphi_train::select_device(BackendKind::Wgpu, varphi_train::Precision::F32)
        .unwrap()
        .device;
    (cpu, gpu)
}

fn values(t: Tensor<2>) -> Vec<f64> {
    t.into_data()
        .try_into_vec_as::<f64>()
        .expect("float tensor")
}

#[test]
fn residuals_agree_between_flex_and_wgpu() {
    if !wgpu_or_skip() {
        return;
    }
    let _wgpu = one_wgpu_test_at_a_time();
    let (cpu, gpu) = cpu_and_gpu();
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
        for (name, a, b) in [("pde", pc.clone(), pg), ("boundary", bc, bg)] {
            assert_close(&format!("{kind:?} {name}"), a, b);
        }
        eprintln!("{kind:?}: pde rows {} agree", pc.len());
    }
}

#[test]
fn unet_fno_flow_forward_maps_and_cholesky_agree_between_flex_and_wgpu() {
    if !wgpu_or_skip() {
        return;
    }
    let _wgpu = one_wgpu_test_at_a_time();
    use varphi_models::{RealNvpConfig, UNetConfig};
    use varphi_physics::pde::{Pendulum, PendulumSettings};
    let (cpu, gpu) = cpu_and_gpu();
    cpu.seed(5);
    let input = |n: usize, d: usize, device: &Device| {
        let v: Vec<f64> = (0..n * d)
            .map(|i| ((i * 37 % 101) as f64 / 50.0) - 1.0)
            .collect();
        Tensor::<2>::from_data(TensorData::new(v, [n, d]), device)
    };
    let unet = UNetConfig::new(vec![1, 9, 12], 2)
        .with_channels(vec![4, 8])
        .init(&cpu);
    assert_close(
        "unet",
        values(unet.forward(input(2, 108, &cpu))),
        values(unet.clone().to_device(&gpu).forward(input(2, 108, &gpu))),
    );
    // The FNO's truncated-DFT spectral layers (2-D with padding, and 1-D).
    use varphi_models::FnoConfig;
    let fno = FnoConfig::new(vec![1, 9, 12], 2)
        .with_width(6)
        .with_modes(vec![3, 4])
        .with_layers(2)
        .with_projection(8)
        .with_padding(3)
        .init(&cpu);
    assert_close(
        "fno 2-D",
        values(fno.forward(input(2, 108, &cpu))),
        values(fno.clone().to_device(&gpu).forward(input(2, 108, &gpu))),
    );
    let fno = FnoConfig::new(vec![2, 15], 1)
        .with_width(5)
        .with_modes(vec![5])
        .with_layers(2)
        .with_projection(8)
        .init(&cpu);
    assert_close(
        "fno 1-D",
        values(fno.forward(input(3, 30, &cpu))),
        values(fno.clone().to_device(&gpu).forward(input(3, 30, &gpu))),
    );
    let flow = RealNvpConfig::new(3)
        .with_d_cond(2)
        .with_lu_mixing(true)
        .init(&cpu);
    let (y, c) = (input(4, 3, &cpu), input(4, 2, &cpu));
    let lp_cpu = flow.log_prob(y, Some(c)).unsqueeze_dim::<2>(1);
    let flow_gpu = flow.to_device(&gpu);
    let lp_gpu = flow_gpu
        .log_prob(input(4, 3, &gpu), Some(input(4, 2, &gpu)))
        .unsqueeze_dim::<2>(1);
    assert_close("realnvp log_prob", values(lp_cpu), values(lp_gpu));
    let pendulum = Pendulum::new(PendulumSettings {
        substeps: 2,
        ..PendulumSettings::physvae(4)
    });
    let z = vec![1.0, 1.2, 0.2, 0.5, 2.0, 0.3, 0.9, 0.1, 0.8, 2.5];
    let map = |device: &Device| {
        values(pendulum.forward_map(Tensor::<2>::from_data(
            TensorData::new(z.clone(), [2, 5]),
            device,
        )))
    };
    assert_close("pendulum forward map", map(&cpu), map(&gpu));
    // Pure diffusion through the spectral θ-scheme (exact in f32) and the tensor Cholesky of
    // the low-rank posterior family.
    use varphi_physics::pde::{AdvectionDiffusion, AdvectionDiffusionSettings};
    let heat = AdvectionDiffusion::new(AdvectionDiffusionSettings {
        levels: 6,
        ..AdvectionDiffusionSettings::physvae(12)
    });
    let zh = vec![0.05, 0.0, 1.2, 0.09, 0.0, 0.7];
    let heat_map = |device: &Device| {
        values(heat.forward_map(
            Tensor::<2>::from_data(TensorData::new(zh.clone(), [2, 3]), device),
            0.5,
        ))
    };
    assert_close("heat forward map", heat_map(&cpu), heat_map(&gpu));
    use varphi_physics::pde::{Burgers, BurgersSettings};
    let burgers = Burgers::new(BurgersSettings {
        steps: 4,
        t_end: 0.04,
        ..BurgersSettings::rgnp(9)
    });
    let burgers_map = |device: &Device| {
        values(burgers.forward_map(
            Tensor::<2>::from_data(TensorData::new(vec![0.008, 0.9, 1.3], [1, 3]), device),
            1,
        ))
    };
    assert_close("burgers forward map", burgers_map(&cpu), burgers_map(&gpu));
    let burgers_implicit = |device: &Device| {
        values(
            burgers
                .forward_map_implicit(Tensor::<2>::from_data(
                    TensorData::new(vec![0.008, 0.9, 1.3], [1, 3]),
                    device,
                ))
                .expect("Newton converges at the default parameters"),
        )
    };
    assert_close(
        "burgers θ-scheme map",
        burgers_implicit(&cpu),
        burgers_implicit(&gpu),
    );
    let spd = |device: &Device| {
        let m = input(4, 4, device);
        varphi_models::cholesky(m.clone().matmul(m.transpose()) + Tensor::<2>::eye(4, device))
    };
    assert_close("cholesky", values(spd(&cpu)), values(spd(&gpu)));
}

#[test]
fn kalman_filter_and_its_gradient_agree_between_flex_and_wgpu() {
    if !wgpu_or_skip() {
        return;
    }
    let _wgpu = one_wgpu_test_at_a_time();
    use varphi_losses::kalman::{StateSpaceModel, Transition};
    use varphi_physics::dynamics::{Lorenz63, PeriodicAdvection, periodic_se_covariance};
    let (cpu, gpu) = cpu_and_gpu();
    let (d, m, n) = (8, 4, 6);
    let adv = PeriodicAdvection::new(d, 0.05);
    let x: Vec<f64> = (0..2 * n * m).map(|k| (k as f64 * 0.61).sin()).collect();
    let mut h = vec![0.0; m * d];
    for i in 0..m {
        h[i * d + 2 * i] = 1.0;
    }
    // Log-likelihood per step and its gradient w.r.t. the speeds c (two sequences).
    let run = |device: &Device| {
        let ad = device.clone().autodiff();
        let c = Tensor::<1>::from_data(TensorData::new(vec![0.7, -0.4], [2]), &ad).require_grad();
        let lambda = Tensor::cat(
            vec![c.clone().reshape([2, 1]), Tensor::full([2, 1], 0.01, &ad)],
            1,
        );
        let t =
            |v: Vec<f64>, shape: [usize; 1]| Tensor::<1>::from_data(TensorData::new(v, shape), &ad);
        let model = StateSpaceModel {
            transition: Transition::Dynamics(&adv, lambda),
            process: periodic_se_covariance(d, t(vec![0.1], [1]), t(vec![0.2], [1]), 1e-4),
            observation: Tensor::from_data(TensorData::new(h.clone(), [m, d]), &ad),
            noise: Tensor::full([1, m], 0.01, &ad),
            initial_mean: Tensor::zeros([1, d], &ad),
            initial_cov: Tensor::<2>::eye(d, &ad).unsqueeze_dim(0),
        };
        let out = model.filter(
            Tensor::from_data(TensorData::new(x.clone(), [2, n, m]), &ad),
            false,
        );
        let grads = out.log_likelihood.clone().sum().backward();
        let g = c.grad(&grads).unwrap().unsqueeze_dim::<2>(0);
        (values(out.step_log_likelihood), values(g))
    };
    let ((lc, gc), (lg, gg)) = (run(&cpu), run(&gpu));
    assert_close("kalman step log-likelihoods", lc, lg);
    assert_close("kalman ∂ log p / ∂c", gc, gg);
    // The Lorenz-63 RK4 step and its tangent (the EKF's Jacobian).
    let l = Lorenz63 {
        dt: 0.02,
        substeps: 2,
    };
    let lorenz = |device: &Device| {
        let u = Tensor::<2>::from_data(
            TensorData::new(vec![1.0, -2.0, 20.0, 3.0, 4.0, 15.0], [2, 3]),
            device,
        );
        let lam = Tensor::<2>::from_data(
            TensorData::new([Lorenz63::CLASSICAL, Lorenz63::CLASSICAL].concat(), [2, 3]),
            device,
        );
        use varphi_physics::dynamics::Dynamics;
        let j = l.jacobian(u.clone(), lam.clone()).reshape([2, 9]);
        (values(l.step(u, lam)), values(j))
    };
    let ((sc, jc), (sg, jg)) = (lorenz(&cpu), lorenz(&gpu));
    assert_close("lorenz step", sc, sg);
    assert_close("lorenz jacobian", jc, jg);
}
