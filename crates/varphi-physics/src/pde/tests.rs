//! Known-truth tests of the problems: reference solvers against closed forms, against each
//! other and against themselves under refinement; residuals of reference solutions; gradients of
//! every residual against central finite differences.

use super::*;
use crate::fd::{FaceAverage, Stencil2d};
use crate::fem::{Element2d, Fem2d};
use crate::grid::Grid2d;
use crate::testing::{f64_device, gradient_check, observed_orders, tensor, vec};
use rand::SeedableRng;
use std::f64::consts::PI;

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| f64::max(m, x.abs()))
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0, |m, (x, y)| f64::max(m, (x - y).abs()))
}

fn assert_order(orders: &[f64], p: f64, what: &str) {
    assert!(
        orders.iter().all(|o| (o - p).abs() <= 0.2),
        "{what}: observed orders {orders:?}, expected {p} ± 0.2"
    );
}

/// The residual (all rows) of a problem for one `(u, z)` on the f64 device.
fn residual_of(p: &dyn Problem, u: &[f64], z: &[f64]) -> Residual {
    let d = f64_device();
    p.residual(
        tensor(u.to_vec(), [1, u.len()], &d),
        tensor(z.to_vec(), [1, z.len()], &d),
    )
}

/// Autodiff gradient of `Σ w ⊙ r(u, z)` w.r.t. `(u, z)` against central differences.
fn check_gradients(p: &dyn Problem, u: &[f64], z: &[f64], tol: f64) {
    let (nu, nz) = (u.len(), z.len());
    let n_rows = residual_of(p, u, z).all().dims()[1];
    let w: Vec<f64> = (0..n_rows)
        .map(|i| ((i * 37 % 17) as f64 / 17.0) - 0.4)
        .collect();
    let x0: Vec<f64> = u.iter().chain(z).copied().collect();
    let err = gradient_check(
        |x| {
            let device = x.device();
            let uu = x.clone().narrow(0, 0, nu).reshape([1, nu]);
            let zz = x.narrow(0, nu, nz).reshape([1, nz]);
            let wt = Tensor::<2>::from_data(TensorData::new(w.clone(), [1, n_rows]), &device);
            (p.residual(uu, zz).all() * wt).sum()
        },
        &x0,
        1e-6,
    );
    assert!(err < tol, "{}: gradient rel. error {err:e}", p.name());
}

fn darcy(n: usize, discretisation: DarcyDiscretisation) -> Darcy {
    Darcy::new(DarcySettings {
        discretisation,
        ..DarcySettings::fno(n)
    })
}

const FD_H: DarcyDiscretisation = DarcyDiscretisation::FiniteDifference {
    average: FaceAverage::Harmonic,
};

fn fem(element: Element2d) -> DarcyDiscretisation {
    DarcyDiscretisation::FiniteElement {
        element,
        average: FaceAverage::Arithmetic,
    }
}

/// Manufactured Darcy problem: `u = sin(πx) sin(πy)`, `a = 1 + xy`, `f = −∇·(a∇u)`.
fn mms_u(x: f64, y: f64) -> f64 {
    (PI * x).sin() * (PI * y).sin()
}

fn mms_a(x: f64, y: f64) -> f64 {
    1.0 + x * y
}

fn mms_f(x: f64, y: f64) -> f64 {
    let (s, c, sy, cy) = (
        (PI * x).sin(),
        (PI * x).cos(),
        (PI * y).sin(),
        (PI * y).cos(),
    );
    -(y * PI * c * sy + x * PI * s * cy) + (1.0 + x * y) * 2.0 * PI * PI * s * sy
}

#[test]
fn darcy_solvers_converge_to_a_manufactured_solution() {
    let (u_exact, a_fn, f_fn) = (mms_u, mms_a, mms_f);
    for disc in [FD_H, fem(Element2d::Q1), fem(Element2d::P1)] {
        let errs: Vec<f64> = [9, 17, 33, 65]
            .iter()
            .map(|&n| {
                let g = Grid2d::unit_square(n);
                let u = darcy(n, disc)
                    .solve_with_source(&g.eval(a_fn), &g.eval(f_fn))
                    .unwrap();
                max_diff(&u, &g.eval(u_exact))
            })
            .collect();
        assert_order(&observed_orders(&errs), 2.0, &format!("darcy {disc:?}"));
    }
}

#[test]
fn darcy_fd_and_fem_agree_to_second_order() {
    // A smooth log-normal-like coefficient given as a function, the constant source f = 1.
    let a_fn = |x: f64, y: f64| (0.8 * (2.0 * PI * x).sin() * (PI * y).cos() + 0.3 * x).exp();
    for element in [Element2d::Q1, Element2d::P1] {
        let diffs: Vec<f64> = [17, 33, 65, 129]
            .iter()
            .map(|&n| {
                let a = Grid2d::unit_square(n).eval(a_fn);
                let fd = darcy(
                    n,
                    DarcyDiscretisation::FiniteDifference {
                        average: FaceAverage::Arithmetic,
                    },
                )
                .solve(&a)
                .unwrap();
                let fe = darcy(n, fem(element)).solve(&a).unwrap();
                max_diff(&fd, &fe)
            })
            .collect();
        assert_order(
            &observed_orders(&diffs),
            2.0,
            &format!("FD vs FEM {element:?}"),
        );
    }
}

#[test]
fn darcy_reference_solutions_zero_the_residual() {
    let mut r = rng(5);
    for disc in [FD_H, fem(Element2d::Q1), fem(Element2d::P1)] {
        let p = darcy(17, disc);
        let a = p.sample_params(&mut r);
        let u = p.solve(&a).unwrap();
        let res = residual_of(&p, &u, &a);
        let (pde, bc) = (vec(res.pde), vec(res.boundary));
        // Rows are O(f) (FD) or O(h² f) (FEM); round-off is far below either.
        let scale = match disc {
            DarcyDiscretisation::FiniteDifference { .. } => 1.0,
            _ => (1.0f64 / 16.0).powi(2),
        };
        assert!(max_abs(&pde) < 1e-10 * scale, "{disc:?}: {}", max_abs(&pde));
        assert_eq!(max_abs(&bc), 0.0);
        assert_eq!(bc.len(), 4 * 16);
    }
    // The reference FD solution's residual is below the truncation error of the exact solution
    // of a manufactured problem (the discretisation error the residual can resolve).
    let n = 17;
    let g = Grid2d::unit_square(n);
    let d = f64_device();
    let (a, u_exact, f) = (g.eval(mms_a), g.eval(mms_u), g.eval(mms_f));
    let u_ref = darcy(n, FD_H).solve_with_source(&a, &f).unwrap();
    let st = Stencil2d::square(1.0 / 16.0, crate::boundary::Boundary::ZERO);
    let res = |u: &[f64]| {
        let r = st
            .div_a_grad(
                tensor(u.to_vec(), [1, n, n], &d),
                tensor(a.clone(), [1, n, n], &d),
                FaceAverage::Harmonic,
            )
            .neg()
            - st.restrict(tensor(f.clone(), [1, n, n], &d));
        max_abs(&vec(r))
    };
    let (r_ref, r_exact) = (res(&u_ref), res(&u_exact));
    assert!(
        r_ref < 1e-8 * r_exact,
        "reference {r_ref:e} vs truncation {r_exact:e}"
    );
}

#[test]
fn darcy_residual_gradients_match_finite_differences() {
    let mut r = rng(6);
    for disc in [
        FD_H,
        DarcyDiscretisation::FiniteDifference {
            average: FaceAverage::Arithmetic,
        },
        fem(Element2d::Q1),
        DarcyDiscretisation::FiniteElement {
            element: Element2d::P1,
            average: FaceAverage::Harmonic,
        },
    ] {
        let p = darcy(5, disc);
        let a: Vec<f64> = (0..25)
            .map(|_| 1.0 + 2.0 * rand::Rng::random::<f64>(&mut r))
            .collect();
        let u: Vec<f64> = (0..25)
            .map(|_| rand::Rng::random::<f64>(&mut r) - 0.5)
            .collect();
        check_gradients(&p, &u, &a, 1e-5);
    }
}

#[test]
fn two_phase_prior_matches_the_fno_convention() {
    let p = Darcy::new(DarcySettings::fno(32));
    let a = p.sample_params(&mut rng(7));
    assert_eq!(a.len(), 32 * 32);
    assert!(a.iter().all(|&v| v == 3.0 || v == 12.0));
    let u = p.solve(&a).unwrap();
    // −∇·(a∇u) = 1 with a ∈ [3, 12]: 0 < u ≤ max of the a = 3 solution (≈ 0.0737/3).
    let interior_min = (1..31)
        .flat_map(|i| (1..31).map(move |j| (i, j)))
        .map(|(i, j)| u[i * 32 + j])
        .fold(f64::INFINITY, f64::min);
    assert!(interior_min > 0.0 && max_abs(&u) < 0.0737 / 3.0 * 1.01);
}

#[test]
fn poisson_matches_the_constant_coefficient_closed_form() {
    // z = 0: k = log 2 + 0.1, u = w(1 − x²)/2k, which the scheme reproduces exactly.
    let p = NonlinearPoisson::new(NonlinearPoissonSettings::rgnp(33));
    let w = 1.7;
    let u = p.solve(&[0.0, 0.0, 0.0, 0.0, 0.0, w]).unwrap();
    let k = 2f64.ln() + 0.1;
    let want: Vec<f64> = p.coordinates()[0]
        .1
        .iter()
        .map(|x| w * (1.0 - x * x) / (2.0 * k))
        .collect();
    assert!(max_diff(&u, &want) < 1e-12, "{}", max_diff(&u, &want));
}

#[test]
fn poisson_newton_converges_at_second_order_in_h() {
    let z = [0.9, -0.7, 0.8, -0.6, 0.5, 1.9];
    let fine = NonlinearPoisson::new(NonlinearPoissonSettings::rgnp(1025))
        .solve(&z)
        .unwrap();
    let errs: Vec<f64> = [33, 65, 129, 257]
        .iter()
        .map(|&n| {
            let u = NonlinearPoisson::new(NonlinearPoissonSettings::rgnp(n))
                .solve(&z)
                .unwrap();
            let stride = 1024 / (n - 1);
            max_diff(
                &u,
                &fine.iter().step_by(stride).copied().collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_order(&observed_orders(&errs), 2.0, "poisson1d");
    let p = NonlinearPoisson::new(NonlinearPoissonSettings::rgnp(65));
    let mut r = rng(8);
    for _ in 0..20 {
        let z = p.sample_params(&mut r);
        let u = p.solve(&z).unwrap();
        let res = residual_of(&p, &u, &z);
        assert!(
            max_abs(&vec(res.pde)) < 1e-12,
            "residual of the Newton solution"
        );
    }
    check_gradients(
        &NonlinearPoisson::new(NonlinearPoissonSettings::rgnp(7)),
        &[0.0, 0.3, 0.5, 0.6, 0.4, 0.2, 0.0],
        &z,
        1e-5,
    );
}

#[test]
fn burgers_crank_nicolson_is_second_order_in_time() {
    let z = [0.008, 0.9, 1.3];
    let solve = |steps: usize| {
        let s = BurgersSettings {
            steps,
            ..BurgersSettings::rgnp(65)
        };
        let u = Burgers::new(s).solve(&z).unwrap();
        u[steps * 65..].to_vec() // final level
    };
    let fine = solve(1600);
    let errs: Vec<f64> = [25, 50, 100, 200]
        .iter()
        .map(|&s| max_diff(&solve(s), &fine))
        .collect();
    assert_order(&observed_orders(&errs), 2.0, "burgers in time");
    let p = Burgers::new(BurgersSettings::rgnp(65));
    let u = p.solve(&z).unwrap();
    let res = residual_of(&p, &u, &z);
    assert!(max_abs(&vec(res.pde)) < 1e-9);
    assert!(max_abs(&vec(res.boundary)) < 1e-15);
    for advection in [AdvectionForm::SkewSymmetric, AdvectionForm::NonConservative] {
        let small = Burgers::new(BurgersSettings {
            steps: 3,
            advection,
            ..BurgersSettings::rgnp(6)
        });
        let u: Vec<f64> = (0..24).map(|i| ((i * 5 % 7) as f64 / 7.0) - 0.5).collect();
        check_gradients(&small, &u, &z, 1e-5);
        // Both forms: the reference solution zeroes its own residual.
        let p = Burgers::new(BurgersSettings {
            steps: 50,
            advection,
            ..BurgersSettings::rgnp(129)
        });
        let u = p.solve(&z).unwrap();
        assert!(
            max_abs(&vec(residual_of(&p, &u, &z).pde)) < 1e-9,
            "{advection:?}"
        );
    }
    // The energy-conserving form solves every prior draw even on a coarse grid.
    let coarse = Burgers::new(BurgersSettings::rgnp(17));
    let mut r = rng(12);
    for _ in 0..20 {
        let z = coarse.sample_params(&mut r);
        let u = coarse.solve(&z).unwrap();
        assert!(max_abs(&u) < 1.5, "bounded: {}", max_abs(&u));
    }
}

#[test]
fn heat_matches_fourier_modes_and_the_residual_is_its_truncation_error() {
    // c = 0, nodes strictly inside (0, π) with ghosts at 0 and π: u = a e^{−Dt} sin x.
    let (d_coef, a) = (0.07, 1.2);
    let errs: Vec<f64> = [8, 16, 32, 64]
        .iter()
        .map(|&n| {
            let dx = PI / (n + 1) as f64;
            let s = AdvectionDiffusionSettings {
                dx: Some(dx),
                x0: dx,
                substeps: n,
                ..AdvectionDiffusionSettings::physvae(n)
            };
            let p = AdvectionDiffusion::new(s);
            let u = p.solve(&[d_coef, 0.0, a]).unwrap();
            let t_end = 0.12 * 49.0;
            let want: Vec<f64> = p
                .x()
                .iter()
                .map(|x| a * (-d_coef * t_end).exp() * x.sin())
                .collect();
            max_diff(&u[49 * n..], &want)
        })
        .collect();
    assert_order(&observed_orders(&errs), 2.0, "heat vs Fourier mode");
    // The θ-residual at the stored spacing of the (finely integrated) reference solution is the
    // scheme's truncation error: it falls at second order as dt halves (smooth set-up with the
    // ghost nodes at 0 and π, where the initial condition vanishes), measured as the RMS over
    // rows on a fixed time window (a midpoint sum, so the window's ends do not blur the order).
    let z = [0.05, 0.08, 1.0];
    let res: Vec<f64> = [0.12, 0.06, 0.03, 0.015]
        .iter()
        .map(|&dt| {
            let dx = PI / 21.0;
            let p = AdvectionDiffusion::new(AdvectionDiffusionSettings {
                dx: Some(dx),
                x0: dx,
                dt,
                levels: (1.2 / dt).round() as usize + 1,
                substeps: 64,
                ..AdvectionDiffusionSettings::physvae(20)
            });
            let u = p.solve(&z).unwrap();
            let r = vec(residual_of(&p, &u, &z).pde);
            (r.iter().map(|v| v * v).sum::<f64>() / r.len() as f64).sqrt()
        })
        .collect();
    assert_order(&observed_orders(&res), 2.0, "heat residual");
    let p = AdvectionDiffusion::new(AdvectionDiffusionSettings {
        levels: 3,
        ..AdvectionDiffusionSettings::physvae(5)
    });
    let u: Vec<f64> = (0..15).map(|i| ((i * 3 % 5) as f64) / 5.0).collect();
    check_gradients(&p, &u, &z, 1e-5);
}

#[test]
fn pendulum_matches_small_angles_rk4_order_and_residual_order() {
    // Unforced, θ0 = 1e-3: the damped linear oscillator.
    let (theta0, omega, gamma) = (1e-3, 1.2, 0.3);
    let p = Pendulum::new(PendulumSettings::physvae(50));
    let u = p.solve(&[theta0, omega, gamma, 0.0, 1.0]).unwrap();
    let wd = (omega * omega - gamma * gamma / 4.0).sqrt();
    let lin: Vec<f64> = p.coordinates()[0]
        .1
        .iter()
        .map(|&t| {
            theta0
                * (-gamma * t / 2.0).exp()
                * ((wd * t).cos() + gamma / (2.0 * wd) * (wd * t).sin())
        })
        .collect();
    assert!(
        max_diff(&u, &lin) < 2e-6 * theta0,
        "{}",
        max_diff(&u, &lin) / theta0
    );
    // RK4: fourth order in the step.
    let z = [1.2, 1.3, 0.2, 0.6, 2.0];
    let at_end = |substeps: usize| {
        let p = Pendulum::new(PendulumSettings {
            substeps,
            ..PendulumSettings::physvae(50)
        });
        *p.solve(&z).unwrap().last().unwrap()
    };
    let fine = at_end(1024);
    let errs: Vec<f64> = [4, 8, 16, 32]
        .iter()
        .map(|&s| (at_end(s) - fine).abs())
        .collect();
    assert_order(&observed_orders(&errs), 4.0, "RK4");
    // The FD residual of the accurate solution is second order in dt.
    let res: Vec<f64> = [0.1, 0.05, 0.025, 0.0125]
        .iter()
        .map(|&dt| {
            let p = Pendulum::new(PendulumSettings {
                dt,
                levels: (5.0 / dt) as usize + 1,
                substeps: 64,
                ..PendulumSettings::physvae(3)
            });
            let u = p.solve(&z).unwrap();
            max_abs(&vec(residual_of(&p, &u, &z).pde))
        })
        .collect();
    assert_order(&observed_orders(&res), 2.0, "pendulum residual");
    let p = Pendulum::new(PendulumSettings::physvae(6));
    check_gradients(&p, &[0.3, 0.2, 0.0, -0.2, -0.3, -0.1], &z, 1e-5);
}

#[test]
fn priors_draw_inside_their_ranges() {
    let mut r = rng(9);
    let p = Pendulum::new(PendulumSettings::physvae(50));
    for _ in 0..100 {
        let z = p.sample_params(&mut r);
        assert!(z[0] >= 0.0 && z[0] <= PI / 2.0 && z[1] >= PI / 4.0 && z[1] <= PI / 2.0);
    }
    let b = Burgers::new(BurgersSettings::rgnp(16));
    let z = b.sample_params(&mut r);
    assert!(
        (0.005..=0.01).contains(&z[0])
            && (0.5..=1.0).contains(&z[1])
            && (0.5..=2.0).contains(&z[2])
    );
    assert!(DarcySettings::fno(2).validate().is_err());
    assert!(
        BurgersSettings {
            theta: 1.5,
            ..BurgersSettings::rgnp(16)
        }
        .validate()
        .is_err()
    );
    let _ = Fem2d::unit_square(3, Element2d::Q1);
}

#[test]
fn preconditioned_residuals_measure_the_solution_error() {
    // For a = 1, P⁻¹ r(u* + δ) = δ exactly at interior nodes (P is the operator itself).
    let n = 9;
    for disc in [FD_H, fem(Element2d::Q1)] {
        let p = darcy(n, disc);
        let a = vec![1.0; n * n];
        let u_star = p.solve(&a).unwrap();
        let delta: Vec<f64> = (0..n * n)
            .map(|k| {
                if Grid2d::unit_square(n).on_boundary(k / n, k % n) {
                    0.0
                } else {
                    ((k * 7 % 5) as f64 - 2.0) * 1e-3
                }
            })
            .collect();
        let u: Vec<f64> = u_star.iter().zip(&delta).map(|(u, d)| u + d).collect();
        let pre = p.preconditioner().unwrap();
        let d = f64_device();
        let r = Preconditioner::apply_with(&pre.tensor(&d), residual_of(&p, &u, &a));
        let got = vec(r.pde);
        let want: Vec<f64> = (0..n * n)
            .filter(|&k| !Grid2d::unit_square(n).on_boundary(k / n, k % n))
            .map(|k| delta[k])
            .collect();
        assert!(max_diff(&got, &want) < 1e-12, "{disc:?}");
    }
    let p = NonlinearPoisson::new(NonlinearPoissonSettings::rgnp(9));
    let pre = p.preconditioner().unwrap();
    assert_eq!((pre.n, pre.inverse.len()), (7, 49));
}

/// Burgers on 9 nodes × 7 levels, a state `u` (no solution, amplitude `u_amp`) and a
/// perturbation `δ` (amplitude `d_amp`) on the unknowns of the PDE rows (interior nodes of
/// levels 1..T, zero at the ends and at t = 0), with `δ` at those unknowns (the expected
/// preconditioned rows).
fn burgers_state(u_amp: f64, d_amp: f64) -> (Burgers, Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut settings = BurgersSettings::rgnp(9);
    settings.steps = 6;
    let (n, levels) = (9, 7);
    let inside = |k: usize| k >= n && k % n != 0 && k % n != n - 1;
    let u = (0..n * levels)
        .map(|k| ((k * 13 % 7) as f64 - 3.0) * u_amp)
        .collect();
    let delta: Vec<f64> = (0..n * levels)
        .map(|k| f64::from(u8::from(inside(k))) * ((k * 5 % 11) as f64 - 5.0) * d_amp)
        .collect();
    let want = (0..n * levels)
        .filter(|&k| inside(k))
        .map(|k| delta[k])
        .collect();
    (Burgers::new(settings), u, delta, want)
}

#[test]
fn burgers_preconditioner_inverts_the_heat_part_of_the_space_time_residual() {
    // Without advection (z1 = 0) at the reference viscosity the residual is linear in u and its
    // PDE rows are L u (levels 1..T) plus a term in level 0, so P⁻¹ (r(u + δ) − r(u)) = δ.
    // P⁻¹ is lower block-triangular (causal), so a transposed application would fail this.
    let (p, u, delta, want) = burgers_state(0.1, 1e-2);
    let z = [0.5 * (p.settings.z0[0] + p.settings.z0[1]), 0.0, 1.3];
    let shifted: Vec<f64> = u.iter().zip(&delta).map(|(u, d)| u + d).collect();
    let pre = p.preconditioner().unwrap();
    assert_eq!(pre.n, 6 * 7);
    let pinv = pre.tensor(&f64_device());
    let s =
        |u: &[f64], z: &[f64]| vec(Preconditioner::apply_with(&pinv, residual_of(&p, u, z)).pde);
    let got: Vec<f64> = s(&shifted, &z)
        .iter()
        .zip(s(&u, &z))
        .map(|(a, b)| a - b)
        .collect();
    assert!(max_diff(&got, &want) < 1e-10, "{}", max_diff(&got, &want));
    // With advection the map is no longer exact but the preconditioned residual of a reference
    // solution still vanishes (it is a linear map of r).
    let zt = [0.007, 0.8, 1.3];
    let u_star = p.solve(&zt).unwrap();
    let r = s(&u_star, &zt).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(r < 1e-8, "{r}");
}

#[test]
fn burgers_linearised_preconditioner_inverts_the_residual_jacobian_at_the_sample() {
    // J(u)⁻¹ (r(u + εδ) − r(u))/ε → δ at a state u that is no solution, with advection; and at
    // z1 = 0, z0 = z̄0 it is the fixed preconditioner.
    let (p, u, delta, want) = burgers_state(0.2, 0.1);
    let d = f64_device();
    let row = |v: Vec<f64>| {
        let len = v.len();
        tensor(v, [1, len], &d)
    };
    let eps = 1e-6;
    let shifted: Vec<f64> = u.iter().zip(&delta).map(|(u, d)| u + eps * d).collect();
    let lin = p.linearised().expect("burgers has one");
    for z in [[0.007, 0.8, 1.3], [0.0075, 0.0, 0.6]] {
        let dr = residual_of(&p, &shifted, &z).pde - residual_of(&p, &u, &z).pde;
        let got = vec(lin.apply_linearised(&row(u.clone()), &row(z.to_vec()), dr.div_scalar(eps)));
        assert!(
            max_diff(&got, &want) < 1e-6,
            "{z:?}: {}",
            max_diff(&got, &want)
        );
    }
    let z = [0.0075, 0.0, 0.6];
    let r = residual_of(&p, &u, &z).pde;
    let fixed = vec(r.clone().matmul(p.preconditioner().unwrap().tensor(&d)));
    let at_u = vec(lin.apply_linearised(&row(u.clone()), &row(z.to_vec()), r));
    assert!(
        max_diff(&fixed, &at_u) < 1e-10,
        "{}",
        max_diff(&fixed, &at_u)
    );
}

#[test]
fn uniform_prior_transform_pushes_normals_to_the_prior() {
    use rand_distr::{Distribution, StandardNormal};
    let p = NonlinearPoisson::new(NonlinearPoissonSettings::default());
    let t = p.prior_transform().expect("uniform prior");
    assert_eq!((t.latent_dim(), t.param_dim()), (6, 6));
    let d = f64_device();
    // Φ at known points: Φ(0) = 1/2, Φ(1) = 0.841344746068543, Φ(−2) = 0.022750131948179.
    let xi = tensor(vec![0.0, 1.0, -2.0, 0.0, 0.0, 0.0], [1, 6], &d);
    let z = vec(t.apply(xi));
    let (lo, w) = (-1.0, 2.0);
    for (got, cdf) in z[..3]
        .iter()
        .zip([0.5, 0.841_344_746_068_543, 0.022_750_131_948_179])
    {
        assert!(
            (got - (lo + w * cdf)).abs() < 1e-6,
            "{got} vs {}",
            lo + w * cdf
        );
    }
    assert!((z[5] - 1.5).abs() < 1e-12, "w midpoint {}", z[5]);
    // Moments of T(ξ) for ξ ~ N(0, I): U[−1, 1] has mean 0 and variance 1/3.
    let n = 20_000;
    let mut r = rng(5);
    let xi: Vec<f64> = (0..n * 6).map(|_| StandardNormal.sample(&mut r)).collect();
    let z = vec(t.apply(tensor(xi, [n, 6], &d)));
    for j in 0..5 {
        let col: Vec<f64> = z.iter().skip(j).step_by(6).copied().collect();
        assert!(col.iter().all(|v| (-1.0..=1.0).contains(v)));
        let m = col.iter().sum::<f64>() / n as f64;
        let v = col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: √(1/3 / n) ≈ 0.0041 for the mean, ≈ 0.0021 for the variance.
        assert!(m.abs() < 4.0 * 0.0041, "column {j}: mean {m}");
        assert!(
            (v - 1.0 / 3.0).abs() < 4.0 * 0.0021,
            "column {j}: variance {v}"
        );
    }
}

#[test]
fn log_normal_darcy_prior_transform_is_its_karhunen_loeve_field() {
    use crate::random_field::{KarhunenLoeve, KarhunenLoeveSettings};
    let (n, length, sigma, mean, modes) = (9, 0.3, 0.8, 0.2, 12);
    let settings = DarcySettings {
        coefficient: DarcyCoefficient::LogNormal {
            length,
            sigma,
            mean,
            modes,
        },
        ..DarcySettings::fno(n)
    };
    let t = Darcy::new(settings).prior_transform().expect("log-normal");
    assert_eq!((t.latent_dim(), t.param_dim()), (modes, n * n));
    let kl = KarhunenLoeve::new(&KarhunenLoeveSettings {
        n,
        length,
        sigma,
        mean,
        modes,
    });
    let xi: Vec<f64> = (0..modes).map(|k| (k as f64 * 0.7).sin()).collect();
    let d = f64_device();
    let a = vec(t.apply(tensor(xi.clone(), [1, modes], &d)));
    let want: Vec<f64> = kl.log_field(&xi).into_iter().map(f64::exp).collect();
    assert!(max_diff(&a, &want) < 1e-12 * max_abs(&want));
    // Thresholded fields have no such map.
    assert!(
        Darcy::new(DarcySettings::fno(n))
            .prior_transform()
            .is_none()
    );
}

#[test]
fn darcy_adjoint_gradient_matches_central_differences() {
    // L(a) = Σ_b Σ_p w_p u*(a_b)_p² / 2 through the forward map, its gradient from one adjoint
    // solve per field against central differences of the reference solver (f64; relative step
    // 1e-6 of the entry). Both discretisations, a smooth log-normal and a two-phase field.
    let ad = f64_device().autodiff();
    for disc in [FD_H, fem(Element2d::Q1)] {
        let p = Darcy::new(DarcySettings {
            discretisation: disc,
            ..DarcySettings::fno(9)
        });
        let mut r = rng(5);
        let fields: Vec<Vec<f64>> = (0..2).map(|_| p.sample_params(&mut r)).collect();
        let nn = 81;
        let w: Vec<f64> = (0..nn).map(|i| 1.0 + (i as f64 * 0.37).sin()).collect();
        let loss = |u: &[f64]| -> f64 { u.iter().zip(&w).map(|(u, w)| 0.5 * w * u * u).sum() };
        let flat: Vec<f64> = fields.concat();
        let a = tensor(flat.clone(), [2, nn], &ad).require_grad();
        let u_star = p.solve_batch(&a).unwrap();
        // ∂L/∂u* = w ⊙ u*, then the pullback.
        let w_t = tensor(w.clone(), [1, nn], &ad);
        let g = u_star.clone() * w_t;
        let s = p.adjoint_pullback(a.clone(), u_star.clone(), g).unwrap();
        let grad = vec(a.grad(&s.backward()).unwrap());
        let mut worst: f64 = 0.0;
        let scale = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        for (b, field) in fields.iter().enumerate() {
            for i in [10, 20, 30, 40, 41, 50, 60, 70] {
                let h = 1e-6 * field[i];
                let (mut plus, mut minus) = (field.clone(), field.clone());
                plus[i] += h;
                minus[i] -= h;
                let fd =
                    (loss(&p.solve(&plus).unwrap()) - loss(&p.solve(&minus).unwrap())) / (2.0 * h);
                let g = grad[b * nn + i];
                worst = worst.max((g - fd).abs() / fd.abs().max(1e-3 * scale));
            }
        }
        assert!(worst < 1e-5, "{disc:?}: adjoint vs FD rel. error {worst:e}");
        // Boundary coefficients do matter (faces to boundary nodes), interior ones most.
        assert!(scale > 0.0);
    }
}

#[test]
fn pendulum_forward_map_equals_the_solver_and_differentiates_correctly() {
    // The tensor RK4 map reproduces the host reference solver (same steps, f64) and its autodiff
    // gradient matches central differences of the solver.
    let p = Pendulum::new(PendulumSettings::physvae(30));
    let dev = f64_device();
    let mut r = rng(8);
    let zs: Vec<Vec<f64>> = (0..3).map(|_| p.sample_params(&mut r)).collect();
    let u = vec(p.forward_map(tensor(zs.concat(), [3, 5], &dev)));
    for (i, z) in zs.iter().enumerate() {
        let reference = p.solve(z).unwrap();
        assert!(
            max_diff(&u[i * 30..(i + 1) * 30], &reference) < 1e-12,
            "case {i}"
        );
    }
    // d/dz of Σ_k w_k θ(t_k) for one case.
    let w: Vec<f64> = (0..30).map(|k| (k as f64 * 0.3).cos()).collect();
    let w_t = tensor(w.clone(), [1, 30], &f64_device().autodiff());
    let err = gradient_check(
        |z| p.forward_map(z.reshape([1, 5])).mul(w_t.clone()).sum(),
        &zs[0],
        1e-6,
    );
    assert!(
        err < 1e-6,
        "pendulum forward-map gradient rel. error {err:e}"
    );
}

#[test]
fn heat_forward_map_is_the_theta_scheme_and_differentiates_correctly() {
    // Crank–Nicolson through the spectral map equals the host CN solver (sparse LU per step);
    // explicit Euler (θ = 0) and implicit Euler (θ = 1) equal a direct dense loop of the scheme;
    // the gradient w.r.t. (D, c, a) matches central differences.
    use crate::pde::{AdvectionDiffusion, AdvectionDiffusionSettings};
    let settings = AdvectionDiffusionSettings {
        levels: 12,
        ..AdvectionDiffusionSettings::physvae(20)
    };
    let p = AdvectionDiffusion::new(settings);
    let dev = f64_device();
    let mut r = rng(9);
    let mut zs: Vec<Vec<f64>> = (0..3).map(|_| p.sample_params(&mut r)).collect();
    zs.push(vec![0.05, 0.0, 1.0]); // pure diffusion
    let b = zs.len();
    let (n, levels) = (20, 12);
    let u = vec(p.forward_map(tensor(zs.concat(), [b, 3], &dev), 0.5));
    for (i, z) in zs.iter().enumerate() {
        let reference = p.solve(z).unwrap();
        let d = max_diff(&u[i * n * levels..(i + 1) * n * levels], &reference);
        assert!(d < 1e-9, "case {i} (z = {z:?}): CN map vs solver {d:e}");
    }
    // θ = 0 and θ = 1 against a dense loop (Gaussian elimination on the tridiagonal system).
    let dx = PI / 20.0;
    let h = settings.dt / settings.substeps as f64;
    for theta in [0.0, 1.0] {
        let got = vec(p.forward_map(tensor(zs.concat(), [b, 3], &dev), theta));
        for (i, z) in zs.iter().enumerate() {
            let (lo, di, up) = (
                z[0] / (dx * dx) + z[1] / (2.0 * dx),
                -2.0 * z[0] / (dx * dx),
                z[0] / (dx * dx) - z[1] / (2.0 * dx),
            );
            let f = |u: &[f64]| -> Vec<f64> {
                (0..n)
                    .map(|j| {
                        let at = |k: isize| {
                            if k < 0 || k >= n as isize {
                                0.0
                            } else {
                                u[k as usize]
                            }
                        };
                        let j = j as isize;
                        lo * at(j - 1) + di * at(j) + up * at(j + 1)
                    })
                    .collect()
            };
            let mut u: Vec<f64> = p.x().iter().map(|x| z[2] * x.sin()).collect();
            let mut want = u.clone();
            for _ in 1..levels {
                for _ in 0..settings.substeps {
                    let fu = f(&u);
                    let rhs: Vec<f64> = (0..n).map(|j| u[j] + (1.0 - theta) * h * fu[j]).collect();
                    // Thomas algorithm for (I − θhF) v = rhs.
                    let (a, bd, c) = (-theta * h * lo, 1.0 - theta * h * di, -theta * h * up);
                    let (mut cp, mut dp) = (vec![0.0; n], vec![0.0; n]);
                    for j in 0..n {
                        let m = bd - if j > 0 { a * cp[j - 1] } else { 0.0 };
                        cp[j] = c / m;
                        dp[j] = (rhs[j] - if j > 0 { a * dp[j - 1] } else { 0.0 }) / m;
                    }
                    for j in (0..n).rev() {
                        u[j] = dp[j] - if j + 1 < n { cp[j] * u[j + 1] } else { 0.0 };
                    }
                }
                want.extend_from_slice(&u);
            }
            let d = max_diff(&got[i * n * levels..(i + 1) * n * levels], &want);
            assert!(d < 1e-9, "θ = {theta}, case {i}: map vs loop {d:e}");
        }
    }
    let w: Vec<f64> = (0..n * levels).map(|k| (k as f64 * 0.17).sin()).collect();
    let w_t = tensor(w, [1, n * levels], &f64_device().autodiff());
    for z in [&zs[0], &zs[3]] {
        let err = gradient_check(
            |z| p.forward_map(z.reshape([1, 3]), 0.5).mul(w_t.clone()).sum(),
            z,
            1e-6,
        );
        assert!(
            err < 1e-6,
            "heat forward-map gradient rel. error {err:e} at {z:?}"
        );
    }
}

#[test]
fn burgers_rk4_forward_map_converges_to_the_crank_nicolson_solver() {
    // Both integrate the same semi-discrete system: the RK4 map (1 substep per level, error
    // O(Δt⁴)) differs from the CN solver by CN's O(Δt²) error, so halving the solver's step
    // must cut the difference about 4×. The gradient w.r.t. (z0, z1, c) matches central
    // differences.
    use crate::pde::{Burgers, BurgersSettings};
    let dev = f64_device();
    let coarse = BurgersSettings {
        steps: 20,
        t_end: 0.4,
        ..BurgersSettings::rgnp(33)
    };
    let p = Burgers::new(coarse);
    let z = vec![0.008, 0.9, 1.3];
    let map = vec(p.forward_map(tensor(z.clone(), [1, 3], &dev), 1));
    let map4 = vec(p.forward_map(tensor(z.clone(), [1, 3], &dev), 4));
    let scale = map.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let rk4_self = max_diff(&map, &map4) / scale;
    // The solver at Δt and Δt/2 (every other level compared).
    let cn = p.solve(&z).unwrap();
    let fine = Burgers::new(BurgersSettings {
        steps: 40,
        ..coarse
    });
    let cn_fine: Vec<f64> = fine
        .solve(&z)
        .unwrap()
        .chunks(33)
        .step_by(2)
        .flatten()
        .copied()
        .collect();
    let (d1, d2) = (
        max_diff(&map, &cn) / scale,
        max_diff(&map, &cn_fine) / scale,
    );
    // Measured: RK4 1 vs 4 substeps 3.4e-5; vs CN 2.7e-3 → 6.5e-4 (ratio 4.1).
    assert!(rk4_self < 1e-4, "RK4 with 1 vs 4 substeps: {rk4_self:e}");
    assert!(d1 < 1e-2, "RK4 map vs CN solver: {d1:e}");
    assert!(
        d1 / d2 > 3.0 && d1 / d2 < 5.0,
        "CN's second order: differences {d1:e} → {d2:e}"
    );
    let err = burgers_map_gradient_error(&z, |p, z| p.forward_map(z, 2));
    assert!(
        err < 1e-6,
        "burgers forward-map gradient rel. error {err:e}"
    );
}

/// Largest relative error of the gradient of `Σ w ⊙ map(z)` w.r.t. `z = [z0, z1, c]` against
/// central differences, for a Burgers forward map on 17 nodes, 5 steps to t = 0.1.
fn burgers_map_gradient_error(
    z: &[f64],
    map: impl Fn(&crate::pde::Burgers, Tensor<2>) -> Tensor<2>,
) -> f64 {
    use crate::pde::{Burgers, BurgersSettings};
    let short = Burgers::new(BurgersSettings {
        steps: 5,
        t_end: 0.1,
        ..BurgersSettings::rgnp(17)
    });
    let w: Vec<f64> = (0..6 * 17).map(|k| (k as f64 * 0.37).cos()).collect();
    let w_t = tensor(w, [1, 6 * 17], &f64_device().autodiff());
    gradient_check(
        |z| map(&short, z.reshape([1, 3])).mul(w_t.clone()).sum(),
        z,
        1e-6,
    )
}

#[test]
fn burgers_implicit_forward_map_is_the_solver_with_exact_gradients() {
    // The θ-scheme map runs the reference solver's own Newton steps, so its values are the
    // solver's (to the Newton tolerance, 1e-12 relative per step); its gradient comes from the
    // implicit function theorem at every step and must match central differences of the map.
    use crate::pde::{Burgers, BurgersSettings};
    let dev = f64_device();
    let settings = BurgersSettings {
        steps: 20,
        t_end: 0.4,
        ..BurgersSettings::rgnp(33)
    };
    let p = Burgers::new(settings);
    let zs = [vec![0.008, 0.9, 1.3], vec![0.005, 0.6, 1.9]];
    let map = vec(p
        .forward_map_implicit(tensor(zs.concat(), [2, 3], &dev))
        .unwrap());
    let levels = 21 * 33;
    for (k, z) in zs.iter().enumerate() {
        let cn = p.solve(z).unwrap();
        let scale = cn.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let d = max_diff(&map[k * levels..(k + 1) * levels], &cn) / scale;
        assert!(d < 1e-10, "θ-scheme map vs solver, case {k}: {d:e}");
    }
    // Backward Euler too (θ = 1): a different scheme, still the solver's.
    let be = Burgers::new(BurgersSettings {
        theta: 1.0,
        ..settings
    });
    let d = max_diff(
        &vec(be
            .forward_map_implicit(tensor(zs[0].clone(), [1, 3], &dev))
            .unwrap()),
        &be.solve(&zs[0]).unwrap(),
    );
    assert!(d < 1e-10, "backward Euler map vs solver: {d:e}");

    let err = burgers_map_gradient_error(&zs[0], |p, z| p.forward_map_implicit(z).unwrap());
    assert!(err < 1e-6, "implicit-map gradient rel. error {err:e}");
    // Non-finite parameters are an error, not a panic.
    assert!(
        p.forward_map_implicit(tensor(vec![f64::NAN, 0.9, 1.3], [1, 3], &dev))
            .is_err()
    );
}

#[test]
fn the_poisson_strong_form_matches_central_differences_of_the_flux() {
    // u(x) = (1 − x²)(0.7 + 0.4x) with its exact u′, u″; R = −F′(x) − w for the flux
    // F = k(u(x), x) u′(x), F′ by central differences (h = 1e-5, error ~1e-9).
    let p = NonlinearPoisson::new(NonlinearPoissonSettings::rgnp(9));
    let z = [0.3, -0.8, 0.5, 0.2, -0.6, 1.4];
    let u = |x: f64| (1.0 - x * x) * (0.7 + 0.4 * x);
    let du = |x: f64| -2.0 * x * (0.7 + 0.4 * x) + 0.4 * (1.0 - x * x);
    let d2u = |x: f64| -2.0 * (0.7 + 0.4 * x) - 1.6 * x;
    let s = |x: f64| {
        let t = [
            1.0,
            x,
            2.0 * x * x - 1.0,
            4.0 * x.powi(3) - 3.0 * x,
            8.0 * x.powi(4) - 8.0 * x * x + 1.0,
        ];
        t.iter().zip(&z).map(|(t, z)| t * z).sum::<f64>()
    };
    let flux = |x: f64| {
        let a = u(x) * s(x);
        (a.max(0.0) + (-a.abs()).exp().ln_1p() + 0.1) * du(x)
    };
    let xs = [-0.95, -0.4, 0.0, 0.3, 0.77];
    let d = f64_device();
    let col = |f: &dyn Fn(f64) -> f64| tensor(xs.iter().map(|&x| f(x)).collect(), [5, 1], &d);
    let jet = PointJet {
        u: col(&u),
        grad: vec![col(&du)],
        hess: vec![vec![col(&d2u)]],
    };
    let zt = tensor(z.repeat(5), [5, 6], &d);
    let r = vec(p
        .strong_form()
        .expect("poisson1d has a strong form")
        .strong_residual(col(&|x| x), &jet, zt));
    let h = 1e-5;
    for (i, &x) in xs.iter().enumerate() {
        let want = -(flux(x + h) - flux(x - h)) / (2.0 * h) - z[5];
        assert!(
            (r[i] - want).abs() < 1e-6 * want.abs().max(1.0),
            "x = {x}: {} vs {want}",
            r[i]
        );
    }
    assert_eq!(
        p.strong_form().unwrap().dirichlet_points(),
        vec![vec![-1.0], vec![1.0]]
    );
}

#[test]
fn the_heat_strong_form_vanishes_on_a_travelling_decaying_wave() {
    // u = a e^{−D k² t} sin(k(x − c t)) solves u_t = D u_xx − c u_x exactly.
    let p = AdvectionDiffusion::new(AdvectionDiffusionSettings::physvae(20));
    let (d, c, a, k) = (0.07, 0.04, 1.2, 1.3);
    let pts = [(0.3, 0.5), (1.7, 2.2), (4.0, 0.1)];
    let dev = f64_device();
    let col = |f: &dyn Fn(f64, f64) -> f64| {
        tensor(pts.iter().map(|&(t, x)| f(t, x)).collect(), [3, 1], &dev)
    };
    let e = |t: f64| a * (-d * k * k * t).exp();
    let ph = |t: f64, x: f64| k * (x - c * t);
    let u = |t: f64, x: f64| e(t) * ph(t, x).sin();
    let ux = |t: f64, x: f64| e(t) * k * ph(t, x).cos();
    let uxx = |t: f64, x: f64| -e(t) * k * k * ph(t, x).sin();
    let ut = |t: f64, x: f64| -d * k * k * u(t, x) - c * ux(t, x);
    let zero = col(&|_, _| 0.0);
    let jet = PointJet {
        u: col(&u),
        grad: vec![col(&ut), col(&ux)],
        hess: vec![vec![zero.clone(), zero.clone()], vec![zero, col(&uxx)]],
    };
    let x = tensor(
        pts.iter().flat_map(|&(t, x)| [t, x]).collect(),
        [3, 2],
        &dev,
    );
    let z = tensor([d, c, a].repeat(3), [3, 3], &dev);
    let form = p.strong_form().expect("heat has a strong form");
    let r = vec(form.strong_residual(x, &jet, z.clone()));
    assert!(max_abs(&r) < 1e-14, "{r:?}");
    // Dirichlet values: a sin(x) on t = 0 inside, 0 on the ends.
    let b = form.dirichlet_points();
    let xb = tensor(b.iter().flatten().copied().collect(), [b.len(), 2], &dev);
    let zb = tensor([d, c, a].repeat(b.len()), [b.len(), 3], &dev);
    let g = vec(form.dirichlet_values(xb, zb));
    for (pt, g) in b.iter().zip(&g) {
        let [lo, hi] = form.domain()[1];
        let want = if pt[0] == 0.0 && pt[1] > lo && pt[1] < hi {
            a * pt[1].sin()
        } else {
            0.0
        };
        assert!((g - want).abs() < 1e-14, "{pt:?}: {g} vs {want}");
    }
}

#[test]
fn the_darcy_strong_form_is_exact_for_a_bilinear_coefficient() {
    // a(x, y) = 1 + x + 2y (bilinear, so its interpolant is exact), u = sin(πx) sin(πy):
    // −∇·(a∇u) − f = a 2π² u − (a_x u_x + a_y u_y) − f.
    let p = Darcy::new(DarcySettings::fno(5));
    let nodes = Grid2d::unit_square(5);
    let a: Vec<f64> = nodes
        .x
        .x
        .iter()
        .flat_map(|&x| nodes.y.x.iter().map(move |&y| 1.0 + x + 2.0 * y))
        .collect();
    let pts = [
        (0.13, 0.71),
        (0.5, 0.5),
        (0.9, 0.05),
        (0.0, 0.3),
        (1.0, 1.0),
    ];
    let dev = f64_device();
    let col = |f: &dyn Fn(f64, f64) -> f64| {
        tensor(pts.iter().map(|&(x, y)| f(x, y)).collect(), [5, 1], &dev)
    };
    let u = |x: f64, y: f64| (PI * x).sin() * (PI * y).sin();
    let ux = |x: f64, y: f64| PI * (PI * x).cos() * (PI * y).sin();
    let uy = |x: f64, y: f64| PI * (PI * x).sin() * (PI * y).cos();
    let uxx = |x: f64, y: f64| -PI * PI * u(x, y);
    let uxy = |x: f64, y: f64| PI * PI * (PI * x).cos() * (PI * y).cos();
    let jet = PointJet {
        u: col(&u),
        grad: vec![col(&ux), col(&uy)],
        hess: vec![vec![col(&uxx), col(&uxy)], vec![col(&uxy), col(&uxx)]],
    };
    let x = tensor(
        pts.iter().flat_map(|&(x, y)| [x, y]).collect(),
        [5, 2],
        &dev,
    );
    let z = tensor(a.repeat(5), [5, 25], &dev);
    let form = p.strong_form().expect("darcy has a strong form");
    let r = vec(form.strong_residual(x, &jet, z));
    for (k, &(x, y)) in pts.iter().enumerate() {
        let av = 1.0 + x + 2.0 * y;
        let want = av * 2.0 * PI * PI * u(x, y) - (ux(x, y) + 2.0 * uy(x, y)) - 1.0;
        assert!(
            (r[k] - want).abs() < 1e-12,
            "({x}, {y}): {} vs {want}",
            r[k]
        );
    }
    let b = form.dirichlet_points();
    assert_eq!(b.len(), 128);
    assert!(b.iter().all(|p| p.iter().any(|&v| v == 0.0 || v == 1.0)));
}
