//! The Kalman filter's marginal likelihood `log p(x_{1:N} | Λ)` of a linear-Gaussian (or
//! linearised) state-space model, in tensor ops so that autodiff differentiates it through the
//! transition's parameters `Λ`, the covariances `Q`, `R`, `P₀` and the pseudo-observations `x`
//! (Φ-DVAE, primer eq. 24); and the Rauch–Tung–Striebel smoother for the latent states.
//!
//! ```text
//! u_0 ~ N(m₀, P₀),   u_n = M(u_{n−1}; Λ) + e_n,  e_n ~ N(0, Q),   x_n = H u_n + r_n,  r_n ~ N(0, diag R)
//!
//! log p(x_{1:N} | Λ) = Σ_n log N(x_n; H m_{n|n−1}, H P_{n|n−1} Hᵀ + R)      (prediction-error decomposition)
//! m_{n|n−1} = M(m_{n−1|n−1}),   P_{n|n−1} = J_n P_{n−1|n−1} J_nᵀ + Q,   J_n = ∂M/∂u (m_{n−1|n−1})
//! ```
//!
//! With a linear `M` ([`Transition::Linear`], or a [`Dynamics`] that `is_linear`, whose matrix
//! is then built once) this is the exact Kalman filter; with a nonlinear [`Dynamics`]
//! ([`Transition::Dynamics`]) it is the extended Kalman filter, `J_n` from the transition's
//! tangent-linear map. Because `R` is diagonal, the update processes the `m`
//! components of `x_n` one at a time (sequential scalar updates): each needs one division, no
//! matrix factorisation, and the sum of the scalar terms `log N(v_j; 0, s_j)` equals the joint
//! `log N(x_n; ·, S_n)` exactly (chain rule of the conditionals within a step). Covariances are
//! re-symmetrised after each update. Batches are independent sequences (or independent samples
//! of `Λ` for one sequence); every covariance input may have batch 1 (shared).

use burn::prelude::*;
use faer::prelude::*;
use varphi_models::distributions::LN_2PI;
use varphi_physics::dynamics::Dynamics;

/// Errors of the filter's inputs and of a filter that broke down.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KalmanError {
    /// Inputs of inconsistent shapes.
    #[error("kalman filter: {0}")]
    Shape(String),
    /// A covariance that should be symmetric positive definite is not.
    #[error(
        "kalman filter: the {what} is not positive definite; give a covariance with positive eigenvalues (add jitter to a GP covariance, keep variances > 0)"
    )]
    NotPositiveDefinite {
        /// Which covariance.
        what: String,
    },
    /// The filter produced NaN/∞ or a non-positive innovation variance.
    #[error(
        "kalman filter diverged: {term} is {value} (the state covariance blew up or lost positive definiteness); shorten the time step, increase the observation noise R or the process noise Q, or rescale the data"
    )]
    Diverged {
        /// Which term.
        term: &'static str,
        /// Its value.
        value: f64,
    },
}

/// The transition `u_{n−1} ↦ u_n` of a [`StateSpaceModel`].
pub enum Transition<'a> {
    /// Fixed matrices `M`, `[batch or 1, d, d]`: the Kalman filter.
    Linear(Tensor<3>),
    /// A transition with parameters `Λ: [batch, p]`: the extended Kalman filter (exact when
    /// the dynamics is linear in `u`).
    Dynamics(&'a dyn Dynamics, Tensor<2>),
}

/// A linear-Gaussian state-space model (module docs). Tensors with batch 1 are shared by every
/// sequence.
pub struct StateSpaceModel<'a> {
    /// The transition.
    pub transition: Transition<'a>,
    /// Process-noise covariance `Q`, `[batch or 1, d, d]`.
    pub process: Tensor<3>,
    /// Observation matrix `H`, `[m, d]`.
    pub observation: Tensor<2>,
    /// Observation-noise variances `diag R`, `[batch or 1, m]`.
    pub noise: Tensor<2>,
    /// Initial mean `m₀`, `[batch or 1, d]`.
    pub initial_mean: Tensor<2>,
    /// Initial covariance `P₀`, `[batch or 1, d, d]`.
    pub initial_cov: Tensor<3>,
}

/// The filter's result.
#[derive(Debug, Clone)]
pub struct FilterOutput {
    /// `log p(x_{1:N} | Λ)` per sequence, `[batch]`.
    pub log_likelihood: Tensor<1>,
    /// The per-step terms `log p(x_n | x_{1:n−1}, Λ)`, `[batch, N]`.
    pub step_log_likelihood: Tensor<2>,
    /// The smallest innovation variance `s_j` met (detached, `[1]`): ≤ 0 means breakdown.
    pub min_innovation_variance: Tensor<1>,
    /// Predicted and filtered moments for [`rts_smooth`], when kept.
    pub states: Option<FilterStates>,
}

/// The filter's moments (detached): index `n = 0 … N` for the filtered ones (`n = 0` the
/// prior), `n = 1 … N` stored at `n − 1` for the predicted ones and the Jacobians `J_n`.
#[derive(Debug, Clone)]
pub struct FilterStates {
    /// `m_{n|n}`, `N + 1` of `[batch, d]`.
    pub filtered_mean: Vec<Tensor<2>>,
    /// `P_{n|n}`, `N + 1` of `[batch, d, d]`.
    pub filtered_cov: Vec<Tensor<3>>,
    /// `m_{n|n−1}`, `N` of `[batch, d]`.
    pub predicted_mean: Vec<Tensor<2>>,
    /// `P_{n|n−1}`, `N` of `[batch, d, d]`.
    pub predicted_cov: Vec<Tensor<3>>,
    /// `J_n = ∂M/∂u` at `m_{n−1|n−1}`, `N` of `[batch, d, d]`.
    pub jacobian: Vec<Tensor<3>>,
}

impl FilterOutput {
    /// An error when the filter broke down (a non-positive innovation variance or a
    /// non-finite log-likelihood). Reads two numbers from the device.
    pub fn check(&self) -> Result<(), KalmanError> {
        let s = self.min_innovation_variance.clone().into_scalar::<f64>();
        if !s.is_finite() || s <= 0.0 {
            return Err(KalmanError::Diverged {
                term: "the innovation variance H P Hᵀ + R",
                value: s,
            });
        }
        let ll = self
            .log_likelihood
            .clone()
            .detach()
            .sum()
            .into_scalar::<f64>();
        if !ll.is_finite() {
            return Err(KalmanError::Diverged {
                term: "the log-likelihood log p(x | Λ)",
                value: ll,
            });
        }
        Ok(())
    }
}

fn batched<const D: usize>(t: Tensor<D>, batch: usize) -> Tensor<D> {
    if t.dims()[0] == batch {
        t
    } else {
        t.repeat_dim(0, batch)
    }
}

impl StateSpaceModel<'_> {
    /// State dimension `d`.
    pub fn state_dim(&self) -> usize {
        self.observation.dims()[1]
    }

    /// Shape checks of the model against observations `x: [batch, N, m]`.
    pub fn check_shapes(&self, x_dims: [usize; 3]) -> Result<(), KalmanError> {
        let [b, _, m] = x_dims;
        let [mh, d] = self.observation.dims();
        let bad = |what: &str, got: Vec<usize>, want: String| {
            Err(KalmanError::Shape(format!(
                "{what} has shape {got:?}, expected {want} (batch {b}, state {d}, observed {mh})"
            )))
        };
        let batch_ok = |n: usize| n == 1 || n == b;
        if m != mh {
            return bad(
                "the observations x",
                x_dims.to_vec(),
                format!("[{b}, N, {mh}]"),
            );
        }
        let sq = |t: &Tensor<3>| {
            let [tb, r, c] = t.dims();
            batch_ok(tb) && r == d && c == d
        };
        if !sq(&self.process) {
            return bad(
                "Q",
                self.process.dims().to_vec(),
                format!("[1 or {b}, {d}, {d}]"),
            );
        }
        if !sq(&self.initial_cov) {
            return bad(
                "P₀",
                self.initial_cov.dims().to_vec(),
                format!("[1 or {b}, {d}, {d}]"),
            );
        }
        let [nb, nm] = self.noise.dims();
        if !batch_ok(nb) || nm != m {
            return bad("R", self.noise.dims().to_vec(), format!("[1 or {b}, {m}]"));
        }
        let [ib, id] = self.initial_mean.dims();
        if !batch_ok(ib) || id != d {
            return bad(
                "m₀",
                self.initial_mean.dims().to_vec(),
                format!("[1 or {b}, {d}]"),
            );
        }
        match &self.transition {
            Transition::Linear(mat) => {
                if !sq(mat) {
                    return bad("M", mat.dims().to_vec(), format!("[1 or {b}, {d}, {d}]"));
                }
            }
            Transition::Dynamics(dynamics, lambda) => {
                if dynamics.state_dim() != d {
                    return Err(KalmanError::Shape(format!(
                        "the dynamics has {} states but H has {d} columns",
                        dynamics.state_dim()
                    )));
                }
                let want = [b, dynamics.param_dim()];
                if lambda.dims() != want {
                    return bad("Λ", lambda.dims().to_vec(), format!("{want:?}"));
                }
            }
        }
        Ok(())
    }

    /// Shapes, and `Q`, `P₀` positive definite and `R > 0` (read to the host).
    pub fn validate(&self, x_dims: [usize; 3]) -> Result<(), KalmanError> {
        self.check_shapes(x_dims)?;
        for (what, cov) in [
            ("process-noise covariance Q", &self.process),
            ("initial covariance P₀", &self.initial_cov),
        ] {
            let [b, d, _] = cov.dims();
            let v = host(cov.clone());
            for k in 0..b {
                let m = &v[k * d * d..(k + 1) * d * d];
                if llt(m, d).is_err() || m.iter().any(|x| !x.is_finite()) {
                    return Err(KalmanError::NotPositiveDefinite { what: what.into() });
                }
            }
        }
        if host(self.noise.clone())
            .iter()
            .any(|&r| !r.is_finite() || r <= 0.0)
        {
            return Err(KalmanError::NotPositiveDefinite {
                what: "observation-noise variance R (an entry ≤ 0 or not finite)".into(),
            });
        }
        Ok(())
    }

    /// A linear transition's matrix, built once (batched like `mean: [batch, d]`) rather than
    /// at every step; `None` for a nonlinear one.
    fn fixed_transition(&self, mean: &Tensor<2>) -> Option<Tensor<3>> {
        let b = mean.dims()[0];
        match &self.transition {
            Transition::Linear(mat) => Some(batched(mat.clone(), b)),
            Transition::Dynamics(dynamics, lambda) if dynamics.is_linear() => {
                Some(dynamics.jacobian(mean.clone(), lambda.clone()))
            }
            Transition::Dynamics(..) => None,
        }
    }

    /// The prediction step `m ↦ M(m)`, `P ↦ J P Jᵀ + Q` (`J` the transition's Jacobian at
    /// `m`); returns `(J, M(m), J P Jᵀ + Q)`.
    fn predict(
        &self,
        fixed: &Option<Tensor<3>>,
        mean: Tensor<2>,
        cov: Tensor<3>,
        q: &Tensor<3>,
    ) -> (Tensor<3>, Tensor<2>, Tensor<3>) {
        let [b, d] = mean.dims();
        let (jac, next) = match (fixed, &self.transition) {
            (Some(mat), _) => {
                let next = mat.clone().matmul(mean.reshape([b, d, 1])).reshape([b, d]);
                (mat.clone(), next)
            }
            (None, Transition::Dynamics(dynamics, lambda)) => (
                dynamics.jacobian(mean.clone(), lambda.clone()),
                dynamics.step(mean, lambda.clone()),
            ),
            (None, Transition::Linear(_)) => unreachable!("a linear transition is fixed"),
        };
        let cov = jac.clone().matmul(cov).matmul(jac.clone().swap_dims(1, 2)) + q.clone();
        (jac, next, cov)
    }

    /// The forecast of `steps` transitions without observations from the moments `mean:
    /// [batch, d]`, `cov: [batch, d, d]` (e.g. the last filtered ones): the `(mean, cov)`
    /// after each step, by the prediction step of the (extended) Kalman filter —
    /// `m_{k+1} = M(m_k; Λ)`, `P_{k+1} = J_k P_k J_kᵀ + Q` (exact for a linear transition, the
    /// linearised moments otherwise).
    pub fn forecast(
        &self,
        mut mean: Tensor<2>,
        mut cov: Tensor<3>,
        steps: usize,
    ) -> Vec<(Tensor<2>, Tensor<3>)> {
        let b = mean.dims()[0];
        let q = batched(self.process.clone(), b);
        let fixed = self.fixed_transition(&mean);
        let mut out = Vec::with_capacity(steps);
        for _ in 0..steps {
            let (_, next, next_cov) = self.predict(&fixed, mean, cov, &q);
            (mean, cov) = (next, next_cov);
            out.push((mean.clone(), cov.clone()));
        }
        out
    }

    /// Run the filter over `x: [batch, N, m]` (module docs); `keep_states` keeps the moments
    /// for [`rts_smooth`]. Shapes must pass [`StateSpaceModel::check_shapes`].
    pub fn filter(&self, x: Tensor<3>, keep_states: bool) -> FilterOutput {
        let [b, steps, m] = x.dims();
        let d = self.state_dim();
        let device = x.device();
        let mut mean = batched(self.initial_mean.clone(), b);
        let mut cov = batched(self.initial_cov.clone(), b);
        let q = batched(self.process.clone(), b);
        let r = batched(self.noise.clone(), b);
        let mut states = keep_states.then(|| FilterStates {
            filtered_mean: vec![mean.clone().detach()],
            filtered_cov: vec![cov.clone().detach()],
            predicted_mean: Vec::new(),
            predicted_cov: Vec::new(),
            jacobian: Vec::new(),
        });
        let rows: Vec<Tensor<2>> = (0..m)
            .map(|j| self.observation.clone().narrow(0, j, 1))
            .collect();
        let fixed = self.fixed_transition(&mean);
        let mut min_s = Tensor::<2>::full([b, 1], f64::INFINITY, &device);
        let mut terms = Vec::with_capacity(steps);
        for n in 0..steps {
            let (jac, next, next_cov) = self.predict(&fixed, mean, cov, &q);
            (mean, cov) = (next, next_cov);
            if let Some(s) = states.as_mut() {
                s.jacobian.push(jac.detach());
                s.predicted_mean.push(mean.clone().detach());
                s.predicted_cov.push(cov.clone().detach());
            }
            let xn = x.clone().narrow(1, n, 1).reshape([b, m]);
            let mut ll = Tensor::<2>::zeros([b, 1], &device);
            for (j, h) in rows.iter().enumerate() {
                let ph = cov
                    .clone()
                    .matmul(h.clone().reshape([1, d, 1]))
                    .reshape([b, d]); // P hᵀ
                let s = (ph.clone() * h.clone()).sum_dim(1) + r.clone().narrow(1, j, 1); // [b, 1]
                let v = xn.clone().narrow(1, j, 1) - (mean.clone() * h.clone()).sum_dim(1);
                let gain = ph.clone() / s.clone();
                mean = mean + gain.clone() * v.clone();
                cov = cov - gain.reshape([b, d, 1]).matmul(ph.reshape([b, 1, d]));
                ll = ll - (s.clone().log() + v.powf_scalar(2.0) / s.clone() + LN_2PI) * 0.5;
                min_s = min_s.min_pair(s.detach());
            }
            cov = (cov.clone() + cov.swap_dims(1, 2)) * 0.5;
            if let Some(s) = states.as_mut() {
                s.filtered_mean.push(mean.clone().detach());
                s.filtered_cov.push(cov.clone().detach());
            }
            terms.push(ll);
        }
        let step_log_likelihood = if steps == 0 {
            Tensor::zeros([b, 0], &device)
        } else {
            Tensor::cat(terms, 1)
        };
        FilterOutput {
            log_likelihood: step_log_likelihood.clone().sum_dim(1).reshape([b]),
            step_log_likelihood,
            min_innovation_variance: min_s.min().reshape([1]),
            states,
        }
    }
}

/// Smoothed moments `p(u_n | x_{1:N}, Λ)` for `n = 0 … N`, `f64` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Smoothed {
    /// Sequences.
    pub batch: usize,
    /// Time levels `N + 1` (the initial state included).
    pub levels: usize,
    /// State dimension.
    pub dim: usize,
    /// Means `[batch, N + 1, d]`.
    pub mean: Vec<f64>,
    /// Covariances `[batch, N + 1, d, d]`.
    pub cov: Vec<f64>,
}

impl Smoothed {
    /// Mean of sequence `b` at level `n`.
    pub fn mean_at(&self, b: usize, n: usize) -> &[f64] {
        let o = (b * self.levels + n) * self.dim;
        &self.mean[o..o + self.dim]
    }
    /// Covariance of sequence `b` at level `n`, row-major `[d, d]`.
    pub fn cov_at(&self, b: usize, n: usize) -> &[f64] {
        let dd = self.dim * self.dim;
        let o = (b * self.levels + n) * dd;
        &self.cov[o..o + dd]
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("a float tensor converts to f64")
}

fn llt(
    m: &[f64],
    d: usize,
) -> Result<faer::linalg::solvers::Llt<f64>, faer::linalg::solvers::LltError> {
    Mat::from_fn(d, d, |i, j| m[i * d + j]).llt(faer::Side::Lower)
}

/// The Cholesky factor of `p`, or of `p + ε·(tr p / d)·I` for the smallest
/// `ε ∈ {1e-7, 1e-6, …, 1e-3}` that has one: a predicted covariance computed in `f32` (a
/// filter on the GPU or flex) loses positive definiteness by rounding when a mode is damped
/// to the level of the process noise's jitter. `None` if none of them factorises.
fn jittered_llt(p: &Mat<f64>, d: usize) -> Option<faer::linalg::solvers::Llt<f64>> {
    if let Ok(f) = p.llt(faer::Side::Lower) {
        return Some(f);
    }
    let scale = (0..d).map(|i| p[(i, i)]).sum::<f64>() / d as f64;
    (1..=5).find_map(|k| {
        let eps = 10f64.powi(-8 + k) * scale;
        let q = Mat::from_fn(d, d, |i, j| p[(i, j)] + if i == j { eps } else { 0.0 });
        q.llt(faer::Side::Lower).ok()
    })
}

/// The Rauch–Tung–Striebel smoother over a filter's [`FilterStates`], on the host in `f64`:
///
/// ```text
/// G_n = P_{n|n} J_{n+1}ᵀ P_{n+1|n}⁻¹
/// m_{n|N} = m_{n|n} + G_n (m_{n+1|N} − m_{n+1|n}),   P_{n|N} = P_{n|n} + G_n (P_{n+1|N} − P_{n+1|n}) G_nᵀ
/// ```
///
/// (for the EKF, the extended RTS smoother with the filter's Jacobians). A predicted covariance
/// that lost positive definiteness to `f32` rounding is factorised with a relative jitter of at
/// most 1e-3 of its mean variance (see `jittered_llt`); beyond that it is an error.
pub fn rts_smooth(states: &FilterStates) -> Result<Smoothed, KalmanError> {
    let levels = states.filtered_mean.len();
    let [batch, d] = states.filtered_mean[0].dims();
    fn all<const D: usize>(ts: &[Tensor<D>]) -> Vec<Vec<f64>> {
        ts.iter().map(|t| host(t.clone())).collect()
    }
    let (mf, pf) = (all(&states.filtered_mean), all(&states.filtered_cov));
    let (mp, pp) = (all(&states.predicted_mean), all(&states.predicted_cov));
    let jac = all(&states.jacobian);
    let mut mean = vec![0.0; batch * levels * d];
    let mut cov = vec![0.0; batch * levels * d * d];
    let mat = |v: &[f64], b: usize| Mat::from_fn(d, d, |i, j| v[b * d * d + i * d + j]);
    let col = |v: &[f64], b: usize| Mat::from_fn(d, 1, |i, _| v[b * d + i]);
    for b in 0..batch {
        let mut ms = col(&mf[levels - 1], b);
        let mut ps = mat(&pf[levels - 1], b);
        let mut store = |n: usize, ms: &Mat<f64>, ps: &Mat<f64>| {
            let o = (b * levels + n) * d;
            for i in 0..d {
                mean[o + i] = ms[(i, 0)];
                for j in 0..d {
                    cov[o * d + i * d + j] = ps[(i, j)];
                }
            }
        };
        store(levels - 1, &ms, &ps);
        for n in (0..levels - 1).rev() {
            let p_f = mat(&pf[n], b);
            let p_p = mat(&pp[n], b);
            let j = mat(&jac[n], b);
            let factor = jittered_llt(&p_p, d).ok_or_else(|| KalmanError::NotPositiveDefinite {
                what: format!("predicted covariance P_{{{}|{}}} of sequence {b}", n + 1, n),
            })?;
            let gt = factor.solve(&j * &p_f); // Gᵀ = P_p⁻¹ J P_f
            let g = gt.transpose().to_owned();
            ms = col(&mf[n], b) + &g * (&ms - col(&mp[n], b));
            ps = &p_f + &g * (&ps - &p_p) * &gt;
            ps = (&ps + ps.transpose()) * Scale(0.5);
            store(n, &ms, &ps);
        }
    }
    Ok(Smoothed {
        batch,
        levels,
        dim: d,
        mean,
        cov,
    })
}
