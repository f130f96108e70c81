//! The Kalman filter, extended Kalman filter and RTS smoother against the brute-force Gaussian
//! of the stacked linear system, central differences and an exact grid posterior (f64).

use crate::gaussian_vi::{Draws, GaussianVi};
use crate::kalman::{KalmanError, StateSpaceModel, Transition, rts_smooth};
use crate::tests::{Mat, log_normal, matmul, spd_inverse, transpose};
use burn::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use varphi_models::distributions::{DiagGaussian, standard_normal_cdf};
use varphi_models::testing::{cholesky, f64_device, gradient_check, tensor, vec};
use varphi_physics::dynamics::{Dynamics, Lorenz63, PeriodicAdvection, periodic_se_covariance};

fn dev() -> Device {
    f64_device()
}

pub(crate) fn host_mat(v: &[f64], d: usize) -> Mat {
    v.chunks(d).map(|r| r.to_vec()).collect()
}

pub(crate) fn mat_vec(a: &Mat, x: &[f64]) -> Vec<f64> {
    a.iter()
        .map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

fn add(a: &Mat, b: &Mat) -> Mat {
    a.iter()
        .zip(b)
        .map(|(r, s)| r.iter().zip(s).map(|(x, y)| x + y).collect())
        .collect()
}

/// A small linear-Gaussian test problem: periodic advection on `d` nodes, a dense `H` of `m`
/// rows, SE process noise, per-component `R`, `N` steps, two sequences with their own `(c, D)`.
struct Linear {
    d: usize,
    m: usize,
    steps: usize,
    adv: PeriodicAdvection,
    lambdas: Vec<[f64; 2]>,
    h: Mat,
    r: Vec<f64>,
    q: Mat,
    m0: Vec<f64>,
    p0: Mat,
    /// `[batch][N·m]`.
    x: Vec<Vec<f64>>,
}

impl Linear {
    fn new() -> Self {
        let (d, m, steps) = (6, 3, 5);
        let adv = PeriodicAdvection::new(d, 0.07);
        let q = periodic_se_covariance(
            d,
            tensor(vec![0.3], [1], &dev()),
            tensor(vec![0.2], [1], &dev()),
            1e-3,
        );
        let q = host_mat(&vec(q), d);
        let h: Mat = (0..m)
            .map(|i| {
                (0..d)
                    .map(|j| ((i * 7 + j * 3) % 5) as f64 * 0.3 - 0.5)
                    .collect()
            })
            .collect();
        let r = vec![0.04, 0.09, 0.02];
        let m0: Vec<f64> = (0..d).map(|j| (j as f64).sin()).collect();
        let p0: Mat = (0..d)
            .map(|i| {
                (0..d)
                    .map(|j| 0.5 * 0.6f64.powi((i as i32 - j as i32).abs()))
                    .collect()
            })
            .collect();
        let x = (0..2)
            .map(|b| {
                (0..steps * m)
                    .map(|k| ((k * 13 + b * 5) as f64 * 0.37).sin() * 0.8)
                    .collect()
            })
            .collect();
        Self {
            d,
            m,
            steps,
            adv,
            lambdas: vec![[0.9, 0.01], [-1.3, 0.03]],
            h,
            r,
            q,
            m0,
            p0,
            x,
        }
    }

    fn lambda(&self) -> Tensor<2> {
        tensor(self.lambdas.concat(), [2, 2], &dev())
    }

    fn model<'a>(&self, transition: Transition<'a>) -> StateSpaceModel<'a> {
        let (d, m) = (self.d, self.m);
        StateSpaceModel {
            transition,
            process: tensor(self.q.concat(), [1, d, d], &dev()),
            observation: tensor(self.h.concat(), [m, d], &dev()),
            noise: tensor(self.r.clone(), [1, m], &dev()),
            initial_mean: tensor(self.m0.clone(), [1, d], &dev()),
            initial_cov: tensor(self.p0.concat(), [1, d, d], &dev()),
        }
    }

    fn x(&self) -> Tensor<3> {
        tensor(self.x.concat(), [2, self.steps, self.m], &dev())
    }

    /// [`stacked_system`] of sequence `b`.
    #[allow(clippy::type_complexity)]
    fn stacked(&self, b: usize) -> (Vec<f64>, Mat, Vec<f64>, Mat, Mat) {
        let [c, diff] = self.lambdas[b];
        let mm = host_mat(&self.adv.matrix_host(c, diff), self.d);
        stacked_system(
            &mm, &self.q, &self.h, &self.r, &self.m0, &self.p0, self.steps,
        )
    }
}

/// The linear system `u_0 ~ N(m₀, P₀)`, `u_k = M u_{k−1} + N(0, Q)`, `x_k = H u_k + N(0, diag r)`
/// stacked over `k = 1 … n`: the mean and covariance of `u_{0:n}` and of `x_{1:n}`, and their
/// cross-covariance.
#[allow(clippy::type_complexity)]
pub(crate) fn stacked_system(
    mm: &Mat,
    q: &Mat,
    h: &Mat,
    r: &[f64],
    m0: &[f64],
    p0: &Mat,
    n: usize,
) -> (Vec<f64>, Mat, Vec<f64>, Mat, Mat) {
    let (d, m) = (m0.len(), h.len());
    let mut means = vec![m0.to_vec()];
    let mut diag = vec![p0.clone()];
    for k in 1..=n {
        means.push(mat_vec(mm, &means[k - 1]));
        diag.push(add(&matmul(&matmul(mm, &diag[k - 1]), &transpose(mm)), q));
    }
    // C_ij = C_ii (M^{j−i})ᵀ for j ≥ i.
    let block = |i: usize, j: usize| -> Mat {
        let (lo, hi, flip) = if i <= j { (i, j, false) } else { (j, i, true) };
        let mut c = diag[lo].clone();
        for _ in lo..hi {
            c = matmul(&c, &transpose(mm));
        }
        if flip { transpose(&c) } else { c }
    };
    let nu = (n + 1) * d;
    let mut cu = vec![vec![0.0; nu]; nu];
    for i in 0..=n {
        for j in 0..=n {
            let c = block(i, j);
            for a in 0..d {
                for e in 0..d {
                    cu[i * d + a][j * d + e] = c[a][e];
                }
            }
        }
    }
    let mu: Vec<f64> = means.concat();
    // x = G u + r with G selecting H u_k for k = 1..n.
    let mut g = vec![vec![0.0; nu]; n * m];
    for k in 0..n {
        for i in 0..m {
            for j in 0..d {
                g[k * m + i][(k + 1) * d + j] = h[i][j];
            }
        }
    }
    let mx = mat_vec(&g, &mu);
    let mut cx = matmul(&matmul(&g, &cu), &transpose(&g));
    for k in 0..n {
        for i in 0..m {
            cx[k * m + i][k * m + i] += r[i];
        }
    }
    let cux = matmul(&cu, &transpose(&g));
    (mu, cu, mx, cx, cux)
}

#[test]
fn kalman_log_likelihood_is_the_stacked_gaussian_marginal() {
    let p = Linear::new();
    let lambda = p.lambda();
    let out = p
        .model(Transition::Linear(p.adv.matrix(lambda)))
        .filter(p.x(), false);
    out.check().unwrap();
    let ll = vec(out.log_likelihood);
    let steps = vec(out.step_log_likelihood.sum_dim(1));
    for b in 0..2 {
        let (_, _, mx, cx, _) = p.stacked(b);
        let exact = log_normal(&p.x[b], &mx, &cx);
        assert!(
            (ll[b] - exact).abs() < 1e-9,
            "sequence {b}: filter {} vs brute force {exact}",
            ll[b]
        );
        assert!((steps[b] - ll[b]).abs() < 1e-12);
    }
}

#[test]
fn rts_smoother_is_the_batch_gaussian_posterior() {
    let p = Linear::new();
    let out = p
        .model(Transition::Linear(p.adv.matrix(p.lambda())))
        .filter(p.x(), true);
    let smoothed = rts_smooth(out.states.as_ref().unwrap()).unwrap();
    assert_eq!(smoothed.levels, p.steps + 1);
    let d = p.d;
    for b in 0..2 {
        let (mu, cu, mx, cx, cux) = p.stacked(b);
        let inv = spd_inverse(&cx);
        let gain = matmul(&cux, &inv);
        let innov: Vec<f64> = p.x[b].iter().zip(&mx).map(|(x, m)| x - m).collect();
        let mean: Vec<f64> = mu
            .iter()
            .zip(mat_vec(&gain, &innov))
            .map(|(a, b)| a + b)
            .collect();
        let cov = add(
            &cu,
            &matmul(&gain, &transpose(&cux))
                .into_iter()
                .map(|r| r.into_iter().map(|v| -v).collect())
                .collect(),
        );
        for n in 0..=p.steps {
            for i in 0..d {
                let got = smoothed.mean_at(b, n)[i];
                assert!(
                    (got - mean[n * d + i]).abs() < 1e-9,
                    "mean b{b} n{n} i{i}: {got} vs {}",
                    mean[n * d + i]
                );
                for j in 0..d {
                    let got = smoothed.cov_at(b, n)[i * d + j];
                    let want = cov[n * d + i][n * d + j];
                    assert!((got - want).abs() < 1e-9, "cov b{b} n{n}: {got} vs {want}");
                }
            }
        }
    }
}

#[test]
fn forecast_from_the_initial_moments_is_the_prior_of_the_stacked_system() {
    // Without observations the forecast moments are the prior marginals of u_1 … u_N, for the
    // fixed-matrix filter and the tangent-linear path alike; and on Lorenz-63 with P = 0 the
    // mean is the RK4 map itself.
    let p = Linear::new();
    let d = p.d;
    let generic = Generic(p.adv);
    for transition in [
        Transition::Linear(p.adv.matrix(p.lambda())),
        Transition::Dynamics(&generic, p.lambda()),
    ] {
        let model = p.model(transition);
        let out = model.forecast(
            tensor([p.m0.clone(), p.m0.clone()].concat(), [2, d], &dev()),
            tensor([p.p0.concat(), p.p0.concat()].concat(), [2, d, d], &dev()),
            p.steps,
        );
        assert_eq!(out.len(), p.steps);
        for b in 0..2 {
            let (mu, cu, ..) = p.stacked(b);
            for (k, (mean, cov)) in out.iter().enumerate() {
                let n = k + 1;
                let (mean, cov) = (vec(mean.clone()), vec(cov.clone()));
                for i in 0..d {
                    assert!((mean[b * d + i] - mu[n * d + i]).abs() < 1e-12);
                    for j in 0..d {
                        let want = cu[n * d + i][n * d + j];
                        assert!((cov[b * d * d + i * d + j] - want).abs() < 1e-12);
                    }
                }
            }
        }
    }
    let lorenz = Lorenz63 {
        dt: 0.02,
        substeps: 2,
    };
    let l = Lorenz63::CLASSICAL;
    let u0 = [1.0, -2.0, 20.0];
    let model = StateSpaceModel {
        transition: Transition::Dynamics(&lorenz, tensor(l.to_vec(), [1, 3], &dev())),
        process: tensor(vec![0.0; 9], [1, 3, 3], &dev()),
        observation: tensor(vec![1.0, 0.0, 0.0], [1, 3], &dev()),
        noise: tensor(vec![1.0], [1, 1], &dev()),
        initial_mean: tensor(u0.to_vec(), [1, 3], &dev()),
        initial_cov: tensor(vec![0.0; 9], [1, 3, 3], &dev()),
    };
    let out = model.forecast(
        tensor(u0.to_vec(), [1, 3], &dev()),
        tensor(vec![0.0; 9], [1, 3, 3], &dev()),
        3,
    );
    let mut u = u0.to_vec();
    for (mean, cov) in out {
        u = lorenz.step_host(&u, &l);
        let got = vec(mean);
        for i in 0..3 {
            assert!((got[i] - u[i]).abs() < 1e-10, "{got:?} vs {u:?}");
        }
        assert!(vec(cov).iter().all(|v| v.abs() < 1e-12));
    }
}

/// Periodic advection through the generic tangent-linear path only (the default Jacobian).
struct Generic(PeriodicAdvection);

impl Dynamics for Generic {
    fn state_dim(&self) -> usize {
        self.0.state_dim()
    }
    fn param_dim(&self) -> usize {
        2
    }
    fn step(&self, u: Tensor<2>, lambda: Tensor<2>) -> Tensor<2> {
        self.0.step(u, lambda)
    }
    fn tangent(&self, u: Tensor<2>, lambda: Tensor<2>, v: Tensor<3>) -> Tensor<3> {
        self.0.tangent(u, lambda, v)
    }
    fn step_host(&self, u: &[f64], lambda: &[f64]) -> Vec<f64> {
        self.0.step_host(u, lambda)
    }
}

#[test]
fn extended_kalman_filter_on_a_linear_model_is_the_kalman_filter() {
    let p = Linear::new();
    let kf = p
        .model(Transition::Linear(p.adv.matrix(p.lambda())))
        .filter(p.x(), true);
    let generic = Generic(p.adv);
    let ekf = p
        .model(Transition::Dynamics(&generic, p.lambda()))
        .filter(p.x(), true);
    let (a, b) = (vec(kf.log_likelihood), vec(ekf.log_likelihood));
    for k in 0..2 {
        assert!((a[k] - b[k]).abs() < 1e-12, "{a:?} vs {b:?}");
    }
    let (sa, sb) = (
        rts_smooth(kf.states.as_ref().unwrap()).unwrap(),
        rts_smooth(ekf.states.as_ref().unwrap()).unwrap(),
    );
    for (x, y) in sa.mean.iter().zip(&sb.mean) {
        assert!((x - y).abs() < 1e-12);
    }
}

#[test]
fn filter_gradients_match_central_differences() {
    // θ = [c, D, log s_Q, log ℓ_Q, log r, x_{1:N}]: every input the ELBO differentiates.
    let p = Linear::new();
    let (d, m, n) = (p.d, p.m, p.steps);
    let adv = p.adv;
    let h = p.h.concat();
    let (m0, p0) = (p.m0.clone(), p.p0.concat());
    let f = |theta: Tensor<1>| -> Tensor<1> {
        let device = theta.device();
        let lambda = theta.clone().narrow(0, 0, 2).reshape([1, 2]);
        let q = periodic_se_covariance(
            d,
            theta.clone().narrow(0, 2, 1).exp(),
            theta.clone().narrow(0, 3, 1).exp(),
            1e-3,
        );
        let r = theta
            .clone()
            .narrow(0, 4, 1)
            .exp()
            .reshape([1, 1])
            .repeat_dim(1, m);
        let x = theta.narrow(0, 5, n * m).reshape([1, n, m]);
        let model = StateSpaceModel {
            transition: Transition::Dynamics(&adv, lambda),
            process: q,
            observation: tensor(h.clone(), [m, d], &device),
            noise: r,
            initial_mean: tensor(m0.clone(), [1, d], &device),
            initial_cov: tensor(p0.clone(), [1, d, d], &device),
        };
        model.filter(x, false).log_likelihood
    };
    let mut theta = vec![0.9, 0.02, (0.3f64).ln(), (0.2f64).ln(), (0.05f64).ln()];
    theta.extend(&p.x[0]);
    let err = gradient_check(f, &theta, 1e-5);
    assert!(err < 1e-5, "relative gradient error {err:.2e}");
}

#[test]
fn advection_matrix_is_the_exact_spectral_step() {
    let n = 8;
    let adv = PeriodicAdvection::new(n, 0.1);
    let lambdas = [[0.7, 0.0], [1.0 / (n as f64 * 0.1), 0.0], [-0.4, 0.05]];
    let m = vec(adv.matrix(tensor(lambdas.concat(), [3, 2], &dev())));
    for (b, [c, diff]) in lambdas.iter().enumerate() {
        let host = adv.matrix_host(*c, *diff);
        for (x, y) in m[b * n * n..(b + 1) * n * n].iter().zip(&host) {
            assert!((x - y).abs() < 1e-12, "tensor vs host");
        }
        let mm = host_mat(&host, n);
        // A Fourier mode q < n/2 is advected and damped exactly.
        for q in 1..n / 2 {
            let k = 2.0 * std::f64::consts::PI * q as f64;
            let u: Vec<f64> = (0..n).map(|j| (k * j as f64 / n as f64).cos()).collect();
            let next = mat_vec(&mm, &u);
            for (j, v) in next.iter().enumerate() {
                let x = j as f64 / n as f64;
                let want = (-diff * k * k * 0.1).exp() * (k * (x - c * 0.1)).cos();
                assert!((v - want).abs() < 1e-12, "mode {q} node {j}: {v} vs {want}");
            }
        }
    }
    // c dt = one cell, D = 0: the shift permutation.
    let shift = host_mat(&adv.matrix_host(lambdas[1][0], 0.0), n);
    for j in 0..n {
        for l in 0..n {
            let want = if l == (j + n - 1) % n { 1.0 } else { 0.0 };
            assert!((shift[j][l] - want).abs() < 1e-12);
        }
    }
    // D = 0 conserves energy but for the Nyquist mode v_j = (−1)^j/√n, scaled by cos(π n c dt):
    // MᵀM = I − (1 − cos²) v vᵀ.
    let o = host_mat(&adv.matrix_host(0.7, 0.0), n);
    let oto = matmul(&transpose(&o), &o);
    let damp = 1.0 - (std::f64::consts::PI * n as f64 * 0.7 * 0.1).cos().powi(2);
    for i in 0..n {
        for j in 0..n {
            let sign = if (i + j) % 2 == 0 { 1.0 } else { -1.0 };
            let want = if i == j { 1.0 } else { 0.0 } - damp * sign / n as f64;
            assert!((oto[i][j] - want).abs() < 1e-12, "{} vs {want}", oto[i][j]);
        }
    }
}

#[test]
fn lorenz_tangent_is_the_derivative_of_the_rk4_map() {
    let l = Lorenz63 {
        dt: 0.05,
        substeps: 4,
    };
    let u0 = [1.2, -3.4, 20.5];
    let lam = [10.0, 28.0, 8.0 / 3.0];
    let host = l.step_host(&u0, &lam);
    let u = tensor(u0.to_vec(), [1, 3], &dev());
    let lt = tensor(lam.to_vec(), [1, 3], &dev());
    let step = vec(l.step(u.clone(), lt.clone()));
    for i in 0..3 {
        assert!((step[i] - host[i]).abs() < 1e-12, "tensor vs host step");
    }
    let jac = vec(l.jacobian(u, lt));
    let h = 1e-6;
    for j in 0..3 {
        let (mut a, mut b) = (u0, u0);
        a[j] += h;
        b[j] -= h;
        let (fa, fb) = (l.step_host(&a, &lam), l.step_host(&b, &lam));
        for i in 0..3 {
            let fd = (fa[i] - fb[i]) / (2.0 * h);
            let got = jac[i * 3 + j];
            assert!(
                (got - fd).abs() < 1e-6 * fd.abs().max(1.0),
                "∂M_{i}/∂u_{j}: {got} vs {fd}"
            );
        }
    }
}

#[test]
fn extended_kalman_filter_tracks_lorenz63_and_the_smoother_improves_on_it() {
    let l = Lorenz63 {
        dt: 0.02,
        substeps: 2,
    };
    let lam = Lorenz63::CLASSICAL;
    let (steps, sigma, q_sd) = (150, 1.0, 0.05);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
    let mut u = vec![1.0, 1.0, 25.0];
    let (mut truth, mut x) = (vec![u.clone()], Vec::new());
    for _ in 0..steps {
        u = l
            .step_host(&u, &lam)
            .iter()
            .map(|v| v + q_sd * normal())
            .collect();
        x.extend(u.iter().map(|v| v + sigma * normal()));
        truth.push(u.clone());
    }
    let model = StateSpaceModel {
        transition: Transition::Dynamics(&l, tensor(lam.to_vec(), [1, 3], &dev())),
        process: Tensor::<2>::eye(3, &dev()).unsqueeze_dim(0) * (q_sd * q_sd),
        observation: Tensor::<2>::eye(3, &dev()),
        noise: Tensor::full([1, 3], sigma * sigma, &dev()),
        initial_mean: tensor(vec![0.0, 0.0, 20.0], [1, 3], &dev()),
        initial_cov: Tensor::<2>::eye(3, &dev()).unsqueeze_dim(0) * 25.0,
    };
    model.validate([1, steps, 3]).unwrap();
    let out = model.filter(tensor(x, [1, steps, 3], &dev()), true);
    out.check().unwrap();
    let states = out.states.unwrap();
    let smoothed = rts_smooth(&states).unwrap();
    let rmse = |get: &dyn Fn(usize) -> Vec<f64>| -> f64 {
        let s: f64 = (20..=steps)
            .map(|n| {
                get(n)
                    .iter()
                    .zip(&truth[n])
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
            })
            .sum();
        (s / (3 * (steps - 19)) as f64).sqrt()
    };
    let filtered = rmse(&|n| vec(states.filtered_mean[n].clone()));
    let smooth = rmse(&|n| smoothed.mean_at(0, n).to_vec());
    assert!(
        filtered < 0.6 * sigma && smooth < 0.8 * filtered,
        "filtered RMSE {filtered:.3}, smoothed {smooth:.3}, observation sd {sigma}"
    );
}

#[test]
fn bad_covariances_shapes_and_a_broken_filter_are_named() {
    let p = Linear::new();
    let d = p.d;
    let mut model = p.model(Transition::Linear(p.adv.matrix(p.lambda())));
    model.validate([2, p.steps, p.m]).unwrap();
    let err = model.validate([2, p.steps, p.m + 1]).unwrap_err();
    assert!(matches!(err, KalmanError::Shape(_)), "{err}");
    assert!(err.to_string().contains("observations x"), "{err}");
    model.process = model.process.clone() - Tensor::<2>::eye(d, &dev()).unsqueeze_dim(0) * 5.0;
    let err = model.validate([2, p.steps, p.m]).unwrap_err();
    assert!(
        err.to_string().contains("process-noise covariance Q"),
        "{err}"
    );
    // Zero noise everywhere: a zero innovation variance, reported rather than NaN.
    let zero = StateSpaceModel {
        transition: Transition::Linear(p.adv.matrix(p.lambda())),
        process: Tensor::zeros([1, d, d], &dev()),
        observation: tensor(p.h.concat(), [p.m, d], &dev()),
        noise: Tensor::zeros([1, p.m], &dev()),
        initial_mean: tensor(p.m0.clone(), [1, d], &dev()),
        initial_cov: Tensor::zeros([1, d, d], &dev()),
    };
    assert!(zero.validate([2, p.steps, p.m]).is_err());
    let err = zero.filter(p.x(), false).check().unwrap_err();
    assert!(err.to_string().contains("innovation variance"), "{err}");
}

/// Gauss–Hermite rule with 7 nodes for `E_{N(0,1)}[f(ε)]` (nodes `√2 t_i`, weights `w_i/√π`).
fn gauss_hermite7() -> (Vec<f64>, Vec<f64>) {
    let t = [
        -2.651_961_356_835_233,
        -1.673_551_628_767_471,
        -0.816_287_882_858_965,
        0.0,
        0.816_287_882_858_965,
        1.673_551_628_767_471,
        2.651_961_356_835_233,
    ];
    let w = [
        0.000_971_781_245_100,
        0.054_515_582_819_127,
        0.425_607_252_610_128,
        0.810_264_617_556_807,
        0.425_607_252_610_128,
        0.054_515_582_819_127,
        0.000_971_781_245_100,
    ];
    let sp = std::f64::consts::PI.sqrt();
    (
        t.iter().map(|t| t * std::f64::consts::SQRT_2).collect(),
        w.iter().map(|w| w / sp).collect(),
    )
}

/// Advection with unknown speed `c` observed at every other node: the latent physics of the
/// "advection from video" problem with a known (identity) observation map.
struct AdvectionInverse {
    adv: PeriodicAdvection,
    diffusivity: f64,
    steps: usize,
    obs: Vec<usize>,
    sigma: f64,
    q_scale: f64,
    /// Prior `c ~ N(mu0, s0²)` (a velocity of either sign: no transform).
    prior: (f64, f64),
}

impl AdvectionInverse {
    fn m0(&self) -> Vec<f64> {
        let n = self.adv.nodes;
        (0..n)
            .map(|j| (-((j as f64 / n as f64 - 0.4) / 0.2).powi(2)).exp())
            .collect()
    }

    fn q(&self, device: &Device) -> Tensor<3> {
        let s = Tensor::<1>::from_data(TensorData::new(vec![self.q_scale], [1]), device);
        let l = Tensor::<1>::from_data(TensorData::new(vec![0.15], [1]), device);
        periodic_se_covariance(self.adv.nodes, s, l, 1e-6)
    }

    /// One data set for speed `c`: `x [N·m]`.
    fn simulate(&self, c: f64, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<f64> {
        let n = self.adv.nodes;
        let q = host_mat(&vec(self.q(&dev())), n);
        let lq = cholesky(&q);
        let mut noise = |sd: f64| -> f64 {
            let e: f64 = StandardNormal.sample(rng);
            sd * e
        };
        let mut u = self.m0();
        let mut x = Vec::new();
        for _ in 0..self.steps {
            u = self.adv.step_host(&u, &[c, self.diffusivity]);
            let e: Vec<f64> = (0..n).map(|_| noise(1.0)).collect();
            let le = mat_vec(&lq, &e);
            u.iter_mut().zip(le).for_each(|(u, e)| *u += e);
            x.extend(self.obs.iter().map(|&j| u[j] + noise(self.sigma)));
        }
        x
    }

    /// `log p(x | c)` for `c: [batch]` and data `x: [batch, N, m]`.
    fn log_lik(&self, c: Tensor<1>, x: Tensor<3>) -> Tensor<1> {
        let device = c.device();
        let [b] = c.dims();
        let n = self.adv.nodes;
        let m = self.obs.len();
        let lambda = Tensor::cat(
            vec![
                c.reshape([b, 1]),
                Tensor::full([b, 1], self.diffusivity, &device),
            ],
            1,
        );
        let mut h = vec![0.0; m * n];
        for (i, &j) in self.obs.iter().enumerate() {
            h[i * n + j] = 1.0;
        }
        StateSpaceModel {
            transition: Transition::Dynamics(&self.adv, lambda),
            process: self.q(&device),
            observation: Tensor::from_data(TensorData::new(h, [m, n]), &device),
            noise: Tensor::full([1, m], self.sigma * self.sigma, &device),
            initial_mean: Tensor::from_data(TensorData::new(self.m0(), [1, n]), &device),
            initial_cov: Tensor::<2>::eye(n, &device).unsqueeze_dim(0) * 1e-4,
        }
        .filter(x, false)
        .log_likelihood
    }

    /// The exact posterior mean and sd of `c` on a fine grid (trapezoid rule).
    fn grid_posterior(&self, x: &[f64]) -> (f64, f64) {
        let (mu0, s0) = self.prior;
        let k = 1201;
        let (lo, hi) = (mu0 - 6.0 * s0, mu0 + 6.0 * s0);
        let g: Vec<f64> = (0..k)
            .map(|i| lo + (hi - lo) * i as f64 / (k - 1) as f64)
            .collect();
        let c = Tensor::<1>::from_data(TensorData::new(g.clone(), [k]), &dev());
        let m = self.obs.len();
        let xt = Tensor::<3>::from_data(TensorData::new(x.to_vec(), [1, self.steps, m]), &dev())
            .repeat_dim(0, k);
        let ll = vec(self.log_lik(c, xt));
        let lp: Vec<f64> = ll
            .iter()
            .zip(&g)
            .map(|(l, v)| l - 0.5 * ((v - mu0) / s0).powi(2))
            .collect();
        let top = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = lp.iter().map(|l| (l - top).exp()).collect();
        let z: f64 = w.iter().sum();
        let mean = w.iter().zip(&g).map(|(w, v)| w * v).sum::<f64>() / z;
        let var = w
            .iter()
            .zip(&g)
            .map(|(w, v)| w * (v - mean).powi(2))
            .sum::<f64>()
            / z;
        assert!(w[0] < 1e-12 * z && w[k - 1] < 1e-12 * z, "grid too narrow");
        (mean, var.sqrt())
    }

    /// Fit `q(c) = N(μ_k, s_k²)` to each of the `K` data sets `x: [K·N·m]` by maximising
    /// the ELBO `E_q[log p(x | c)] − KL(q ‖ prior)` by [`GaussianVi`] (expectation by 7-point
    /// Gauss–Hermite, so the optimum is deterministic); all data sets in one batched filter.
    /// Returns `(μ_k, s_k)`.
    fn fit(&self, x: &[f64], k: usize) -> Vec<(f64, f64)> {
        let ad = dev().autodiff();
        let (mu0, s0) = self.prior;
        let (nodes, weights) = gauss_hermite7();
        let g = nodes.len();
        let m = self.obs.len();
        let draws = Draws {
            eps: Tensor::<3>::from_data(TensorData::new(nodes, [1, g, 1]), &ad),
            weights: Tensor::<2>::from_data(TensorData::new(weights, [1, g]), &ad),
        };
        // [K·g, N, m]: each data set repeated for its quadrature nodes.
        let xt = Tensor::<3>::from_data(TensorData::new(x.to_vec(), [k, 1, self.steps * m]), &ad)
            .repeat_dim(1, g)
            .reshape([k * g, self.steps, m]);
        // Standardised z = (c − μ0)/s0 ~ N(0, 1) under the prior, from N(0, e⁻²).
        let init = DiagGaussian::new(Tensor::zeros([k, 1], &ad), Tensor::full([k, 1], -2.0, &ad));
        let vi = GaussianVi {
            schedule: vec![(300, 0.05), (150, 0.01), (100, 0.002)],
        };
        let (q, _) = vi
            .fit(
                &init,
                |z| self.log_lik((z * s0 + mu0).reshape([k * g]), xt.clone()),
                |_| draws.clone(),
            )
            .expect("finite bound");
        let (mean, sd) = (vec(q.mean.clone()), vec(q.std()));
        mean.iter()
            .zip(&sd)
            .map(|(m, s)| (mu0 + s0 * m, s0 * s))
            .collect()
    }
}

fn advection_inverse() -> AdvectionInverse {
    AdvectionInverse {
        adv: PeriodicAdvection::new(8, 0.05),
        diffusivity: 0.002,
        steps: 6,
        obs: vec![0, 2, 4, 6],
        sigma: 0.05,
        q_scale: 0.02,
        prior: (0.6, 0.4),
    }
}

#[test]
fn variational_posterior_of_the_advection_speed_matches_the_exact_grid_posterior() {
    let p = advection_inverse();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut x = Vec::new();
    for c in [0.8, 0.1, 1.4, -0.3] {
        x.extend(p.simulate(c, &mut rng));
    }
    let fits = p.fit(&x, 4);
    let per = p.steps * p.obs.len();
    for (k, (m, s)) in fits.iter().enumerate() {
        let (em, es) = p.grid_posterior(&x[k * per..(k + 1) * per]);
        assert!(
            (m - em).abs() < 0.05 * es && (s / es - 1.0).abs() < 0.02,
            "data set {k}: q(c) = N({m:.4}, {s:.4}²), exact mean {em:.4} sd {es:.4}"
        );
    }
}

#[test]
fn variational_posterior_of_the_advection_speed_is_calibrated_over_simulated_data_sets() {
    // c ~ prior, x ~ p(x | c); coverage of the true c by q's central intervals.
    let p = advection_inverse();
    let k = 300;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let (mu0, s0) = p.prior;
    let (mut truth, mut x) = (Vec::new(), Vec::new());
    for _ in 0..k {
        let z: f64 = StandardNormal.sample(&mut rng);
        let c = mu0 + s0 * z;
        x.extend(p.simulate(c, &mut rng));
        truth.push(c);
    }
    let fits = p.fit(&x, k);
    // SBC with a continuous q: the rank of the truth is its PIT Φ((c − μ)/s), uniform when q is
    // calibrated; Kolmogorov–Smirnov against U(0, 1). The same data with q's sd halved (an
    // over-confident posterior) must be rejected.
    let pit = |shrink: f64| -> Vec<f64> {
        truth
            .iter()
            .zip(&fits)
            .map(|(t, (m, s))| standard_normal_cdf((t - m) / (s * shrink)))
            .collect()
    };
    let (p_ok, p_bad) = (ks_uniform_p_value(pit(1.0)), ks_uniform_p_value(pit(0.5)));
    eprintln!("advection c over {k} data sets: KS p-value {p_ok:.3} (sd/2: {p_bad:.2e})");
    assert!(
        p_ok > 0.05 && p_bad < 1e-3,
        "KS p-values: q {p_ok:.3}, q with sd/2 {p_bad:.2e}"
    );
    for (level, zq) in [
        (0.5, 0.674_489_750),
        (0.9, 1.644_853_627),
        (0.95, 1.959_963_985),
    ] {
        let covered = truth
            .iter()
            .zip(&fits)
            .filter(|(t, (m, s))| ((*t - m) / s).abs() <= zq)
            .count() as f64
            / k as f64;
        eprintln!("coverage {covered:.3} at {level}");
        assert!(
            (covered - level).abs() <= 0.05,
            "coverage {covered:.3} at nominal {level}"
        );
    }
}

/// The asymptotic Kolmogorov–Smirnov p-value of `u` against `U(0, 1)`.
fn ks_uniform_p_value(mut u: Vec<f64>) -> f64 {
    u.sort_by(f64::total_cmp);
    let n = u.len() as f64;
    let d = u
        .iter()
        .enumerate()
        .map(|(i, v)| (v - i as f64 / n).max((i + 1) as f64 / n - v))
        .fold(0.0, f64::max);
    let t = (n.sqrt() + 0.12 + 0.11 / n.sqrt()) * d;
    let p: f64 = (1..100)
        .map(|k| {
            let k = k as f64;
            2.0 * (-1f64).powi(k as i32 - 1) * (-2.0 * k * k * t * t).exp()
        })
        .sum();
    p.clamp(0.0, 1.0)
}
