//! State transitions of dynamical latent models (Φ-DVAE, primer eqs. 23–24):
//! `u_n = M(u_{n−1}; Λ) + e_n` with `e_n ~ N(0, Q(Λ))`, in tensor ops so that a Kalman filter
//! can differentiate its marginal likelihood through `Λ`, and with the *tangent-linear* map
//! `v ↦ ∂M/∂u · v` that an extended Kalman filter propagates covariances with.
//!
//! - [`PeriodicAdvection`]: `u_t + c u_x = D u_xx` on a periodic grid, stepped exactly in
//!   Fourier space (linear in `u`, `Λ = [c, D]`).
//! - [`Lorenz63`]: `(σ(Y − X), X(ρ − Z) − Y, XY − βZ)` by classical RK4 (`Λ = [σ, ρ, β]`); its
//!   tangent is the exact derivative of the RK4 map, not of the ODE.
//! - [`periodic_se_covariance`]: a squared-exponential (statFEM-style) covariance on the
//!   periodic grid, differentiable in its scale and length.
//!
//! Every transition has an `f64` host twin (`step_host`) for generating data.

use burn::prelude::*;
use std::f64::consts::PI;

/// A discrete-time transition `u ↦ M(u; Λ)` on `d` states with `p` parameters, batched: row `b`
/// of `u` is stepped with row `b` of `Λ`.
pub trait Dynamics {
    /// State dimension `d`.
    fn state_dim(&self) -> usize;
    /// Parameter dimension `p`.
    fn param_dim(&self) -> usize;
    /// `M(u; Λ)` for `u: [batch, d]`, `lambda: [batch, p]`.
    fn step(&self, u: Tensor<2>, lambda: Tensor<2>) -> Tensor<2>;
    /// The tangent-linear map at `u`: `∂M/∂u · v` for the `k` columns of `v: [batch, d, k]`.
    fn tangent(&self, u: Tensor<2>, lambda: Tensor<2>, v: Tensor<3>) -> Tensor<3>;
    /// The Jacobian `∂M/∂u` at `u`, `[batch, d, d]` (the tangent of the identity).
    fn jacobian(&self, u: Tensor<2>, lambda: Tensor<2>) -> Tensor<3> {
        let [b, d] = u.dims();
        let eye = Tensor::<2>::eye(d, &u.device())
            .unsqueeze_dim::<3>(0)
            .repeat_dim(0, b);
        self.tangent(u, lambda, eye)
    }
    /// `M(u; Λ)` in `f64` on the host, one state.
    fn step_host(&self, u: &[f64], lambda: &[f64]) -> Vec<f64>;
    /// Whether `M` is linear in `u` (`M(u) = J u`, `J` independent of `u`): a filter then builds
    /// `J` once per sequence instead of once per step.
    fn is_linear(&self) -> bool {
        false
    }
}

/// Linear advection–diffusion `u_t + c u_x = D u_xx` on `nodes` equispaced points of the
/// periodic unit interval, advanced by `dt` *exactly* for the trigonometric interpolant:
///
/// ```text
/// M(c, D) = F⁻¹ diag(e^{−D k_q² dt − i k_q c dt}) F,   k_q = 2πq,  q = −n/2+1 … n/2,
/// ```
///
/// a real circulant matrix `M_jl = m((j − l) mod n)` with
/// `m(s) = (1/n) Σ_q e^{−D k_q² dt} cos(k_q (s/n − c dt))` (the Nyquist mode taken by its real
/// part, so that it is damped by `cos(π n c dt)` unless the shift is whole cells). Unconditionally
/// stable; with `D = 0` energy-conserving on every other mode, and a shift by whole cells is a
/// permutation. `Λ = [c, D]`, `c` of either sign.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeriodicAdvection {
    /// Grid nodes `n` (even).
    pub nodes: usize,
    /// Time step between observations.
    pub dt: f64,
}

impl PeriodicAdvection {
    /// The transition on `nodes` (even, ≥ 2) nodes with step `dt`.
    pub fn new(nodes: usize, dt: f64) -> Self {
        assert!(
            nodes >= 2 && nodes.is_multiple_of(2),
            "PeriodicAdvection: nodes must be even and ≥ 2, got {nodes}"
        );
        Self { nodes, dt }
    }

    /// Wavenumbers `k_q` of the modes `q = 0 … n/2` and their multiplicity (1 for the mean and
    /// the Nyquist mode, 2 for the conjugate pairs).
    fn modes(&self) -> (Vec<f64>, Vec<f64>) {
        let half = self.nodes / 2;
        let k = (0..=half).map(|q| 2.0 * PI * q as f64).collect();
        let w = (0..=half)
            .map(|q| if q == 0 || q == half { 1.0 } else { 2.0 })
            .collect();
        (k, w)
    }

    /// The circulant matrices `M(c, D)`, `[batch, n, n]`, from `lambda: [batch, 2]`.
    pub fn matrix(&self, lambda: Tensor<2>) -> Tensor<3> {
        let device = lambda.device();
        let n = self.nodes;
        let [b, _] = lambda.dims();
        let (k, w) = self.modes();
        let nq = k.len();
        let k = Tensor::<1>::from_data(TensorData::new(k, [nq]), &device);
        let w = Tensor::<1>::from_data(TensorData::new(w, [nq]), &device);
        let c = lambda.clone().narrow(1, 0, 1).unsqueeze_dim::<3>(2); // [b, 1, 1]
        let diff = lambda.narrow(1, 1, 1).unsqueeze_dim::<3>(2);
        let s: Vec<f64> = (0..n).map(|s| s as f64 / n as f64).collect();
        let s = Tensor::<1>::from_data(TensorData::new(s, [n]), &device);
        let k3 = k.clone().reshape([1, 1, nq]);
        // phase [b, n, q] = k_q (s/n − c dt)
        let phase = (s.reshape([1, n, 1]) - c * self.dt) * k3.clone();
        let amp = (diff * (-self.dt) * k3.clone().powf_scalar(2.0)).exp() * w.reshape([1, 1, nq]);
        let kernel = (phase.cos() * amp).sum_dim(2).reshape([b, n]) / n as f64; // m(s)
        let idx: Vec<i64> = (0..n)
            .flat_map(|j| (0..n).map(move |l| ((j + n - l) % n) as i64))
            .collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n * n]), &device);
        kernel.select(1, idx).reshape([b, n, n])
    }

    /// `M(c, D)` row-major in `f64` on the host.
    pub fn matrix_host(&self, c: f64, diffusivity: f64) -> Vec<f64> {
        let n = self.nodes;
        let (k, w) = self.modes();
        let kernel: Vec<f64> = (0..n)
            .map(|s| {
                k.iter()
                    .zip(&w)
                    .map(|(k, w)| {
                        w * (-diffusivity * k * k * self.dt).exp()
                            * (k * (s as f64 / n as f64 - c * self.dt)).cos()
                    })
                    .sum::<f64>()
                    / n as f64
            })
            .collect();
        (0..n)
            .flat_map(|j| (0..n).map(move |l| (j, l)))
            .map(|(j, l)| kernel[(j + n - l) % n])
            .collect()
    }
}

impl Dynamics for PeriodicAdvection {
    fn state_dim(&self) -> usize {
        self.nodes
    }
    fn param_dim(&self) -> usize {
        2
    }
    fn step(&self, u: Tensor<2>, lambda: Tensor<2>) -> Tensor<2> {
        let [b, n] = u.dims();
        self.matrix(lambda)
            .matmul(u.reshape([b, n, 1]))
            .reshape([b, n])
    }
    fn tangent(&self, _u: Tensor<2>, lambda: Tensor<2>, v: Tensor<3>) -> Tensor<3> {
        self.matrix(lambda).matmul(v)
    }
    fn jacobian(&self, _u: Tensor<2>, lambda: Tensor<2>) -> Tensor<3> {
        self.matrix(lambda)
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn step_host(&self, u: &[f64], lambda: &[f64]) -> Vec<f64> {
        let m = self.matrix_host(lambda[0], lambda[1]);
        let n = self.nodes;
        (0..n)
            .map(|j| (0..n).map(|l| m[j * n + l] * u[l]).sum())
            .collect()
    }
}

/// The Lorenz-63 system `(σ(Y − X), X(ρ − Z) − Y, XY − βZ)` advanced over `dt` by `substeps`
/// classical RK4 steps; `Λ = [σ, ρ, β]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lorenz63 {
    /// Time between observations.
    pub dt: f64,
    /// RK4 steps per `dt`.
    pub substeps: usize,
}

impl Lorenz63 {
    /// The classical parameters `(σ, ρ, β) = (10, 28, 8/3)`.
    pub const CLASSICAL: [f64; 3] = [10.0, 28.0, 8.0 / 3.0];

    /// The vector field and, for `v: [batch, 3, k]`, its derivative `J_f(u) v`.
    fn field(
        u: &Tensor<2>,
        lambda: &Tensor<2>,
        v: Option<&Tensor<3>>,
    ) -> (Tensor<2>, Option<Tensor<3>>) {
        let c = |t: &Tensor<2>, i| t.clone().narrow(1, i, 1); // [b, 1]
        let (x, y, z) = (c(u, 0), c(u, 1), c(u, 2));
        let (sigma, rho, beta) = (c(lambda, 0), c(lambda, 1), c(lambda, 2));
        let f = Tensor::cat(
            vec![
                sigma.clone() * (y.clone() - x.clone()),
                x.clone() * (rho.clone() - z.clone()) - y.clone(),
                x.clone() * y.clone() - beta.clone() * z.clone(),
            ],
            1,
        );
        let df = v.map(|v| {
            let r = |i| v.clone().narrow(1, i, 1); // [b, 1, k]
            let e = |t: Tensor<2>| t.unsqueeze_dim::<3>(2); // [b, 1, 1]
            let (vx, vy, vz) = (r(0), r(1), r(2));
            Tensor::cat(
                vec![
                    e(sigma) * (vy.clone() - vx.clone()),
                    e(rho - z) * vx.clone() - vy.clone() - e(x.clone()) * vz.clone(),
                    e(y) * vx + e(x) * vy - e(beta) * vz,
                ],
                1,
            )
        });
        (f, df)
    }

    /// One RK4 step of `h` with the tangent of `v` when given.
    fn rk4(
        &self,
        u: Tensor<2>,
        lambda: &Tensor<2>,
        v: Option<Tensor<3>>,
        h: f64,
    ) -> (Tensor<2>, Option<Tensor<3>>) {
        let (k1, d1) = Self::field(&u, lambda, v.as_ref());
        let shift = |a: &Tensor<2>, k: &Tensor<2>, s| a.clone() + k.clone() * s;
        let shift_v = |a: &Option<Tensor<3>>, k: &Option<Tensor<3>>, s| {
            a.as_ref()
                .zip(k.as_ref())
                .map(|(a, k)| a.clone() + k.clone() * s)
        };
        let (k2, d2) = Self::field(
            &shift(&u, &k1, h / 2.0),
            lambda,
            shift_v(&v, &d1, h / 2.0).as_ref(),
        );
        let (k3, d3) = Self::field(
            &shift(&u, &k2, h / 2.0),
            lambda,
            shift_v(&v, &d2, h / 2.0).as_ref(),
        );
        let (k4, d4) = Self::field(&shift(&u, &k3, h), lambda, shift_v(&v, &d3, h).as_ref());
        let next = u + (k1 + k2 * 2.0 + k3 * 2.0 + k4) * (h / 6.0);
        let tangent = match (v, d1, d2, d3, d4) {
            (Some(v), Some(d1), Some(d2), Some(d3), Some(d4)) => {
                Some(v + (d1 + d2 * 2.0 + d3 * 2.0 + d4) * (h / 6.0))
            }
            _ => None,
        };
        (next, tangent)
    }

    fn field_host(u: &[f64], l: &[f64]) -> [f64; 3] {
        [
            l[0] * (u[1] - u[0]),
            u[0] * (l[1] - u[2]) - u[1],
            u[0] * u[1] - l[2] * u[2],
        ]
    }
}

impl Dynamics for Lorenz63 {
    fn state_dim(&self) -> usize {
        3
    }
    fn param_dim(&self) -> usize {
        3
    }
    fn step(&self, mut u: Tensor<2>, lambda: Tensor<2>) -> Tensor<2> {
        let h = self.dt / self.substeps as f64;
        for _ in 0..self.substeps {
            u = self.rk4(u, &lambda, None, h).0;
        }
        u
    }
    fn tangent(&self, mut u: Tensor<2>, lambda: Tensor<2>, mut v: Tensor<3>) -> Tensor<3> {
        let h = self.dt / self.substeps as f64;
        for _ in 0..self.substeps {
            let (next, dv) = self.rk4(u, &lambda, Some(v), h);
            u = next;
            v = dv.expect("the tangent was requested");
        }
        v
    }
    fn step_host(&self, u: &[f64], lambda: &[f64]) -> Vec<f64> {
        let h = self.dt / self.substeps as f64;
        let mut u = [u[0], u[1], u[2]];
        let add = |a: &[f64; 3], k: &[f64; 3], s: f64| {
            [a[0] + s * k[0], a[1] + s * k[1], a[2] + s * k[2]]
        };
        for _ in 0..self.substeps {
            let k1 = Self::field_host(&u, lambda);
            let k2 = Self::field_host(&add(&u, &k1, h / 2.0), lambda);
            let k3 = Self::field_host(&add(&u, &k2, h / 2.0), lambda);
            let k4 = Self::field_host(&add(&u, &k3, h), lambda);
            for i in 0..3 {
                u[i] += h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
            }
        }
        u.to_vec()
    }
}

/// The first row `c(s) = s² exp(−d(0, x_s)² / (2ℓ²))`, `s = 0 … n−1`, of the circulant
/// [`periodic_se_covariance`] (without jitter), `f64` on the host: row `j` of the matrix is
/// `c((l − j) mod n)` (for generating data from the same prior the filter assumes).
pub fn periodic_se_kernel_host(n: usize, scale: f64, length: f64) -> Vec<f64> {
    (0..n)
        .map(|s| {
            let d = s as f64 / n as f64;
            let d = d.min(1.0 - d);
            scale * scale * (-d * d / (2.0 * length * length)).exp()
        })
        .collect()
}

/// A squared-exponential covariance on `n` equispaced nodes of the periodic unit interval,
/// `Q_jl = s² exp(−d(x_j, x_l)² / (2ℓ²)) + jitter·δ_jl` with `d` the distance on the circle,
/// `[1, n, n]`, differentiable in `scale = s` and `length = ℓ` (`[1]` tensors each).
pub fn periodic_se_covariance(
    n: usize,
    scale: Tensor<1>,
    length: Tensor<1>,
    jitter: f64,
) -> Tensor<3> {
    let device = scale.device();
    let d2: Vec<f64> = (0..n)
        .flat_map(|j| (0..n).map(move |l| (j, l)))
        .map(|(j, l)| {
            let s = (j as f64 - l as f64).abs() / n as f64;
            s.min(1.0 - s).powi(2)
        })
        .collect();
    let d2 = Tensor::<2>::from_data(TensorData::new(d2, [n, n]), &device);
    let l2 = length.powf_scalar(2.0).reshape([1, 1]) * 2.0;
    let q = (d2.neg() / l2).exp() * scale.powf_scalar(2.0).reshape([1, 1])
        + Tensor::<2>::eye(n, &device) * jitter;
    q.unsqueeze_dim(0)
}
