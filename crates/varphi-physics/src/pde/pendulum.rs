//! Damped forced pendulum, the phys-vae set-up (Takeishi & Kalousis).
//!
//! ```text
//! θ″ = A ω² cos(2πft) − γ θ′ − ω² sin θ,   θ(0) = θ0, θ′(0) = 0,
//! θ0 ~ U[0, π/2], ω ~ U[π/4, π/2], γ ~ U[0, .4], A ~ U[.1, 1], f ~ U[π/2, π]
//! ```
//!
//! observed at `levels` times `t_k = k·dt` (`dt = .1`, 50 levels). Residual: second-order
//! central differences at the interior levels,
//!
//! ```text
//! r_k = (θ_{k+1} − 2θ_k + θ_{k−1})/dt² + γ(θ_{k+1} − θ_{k−1})/2dt + ω² sin θ_k − Aω² cos(2πf t_k)
//! ```
//!
//! and initial-condition rows `θ_0 − θ0`, `(−3θ_0 + 4θ_1 − θ_2)/2dt`. The reference solver is
//! classical RK4 with `substeps` steps per level.

use super::{PdeResidual, Problem, Residual, check_range, check_shapes, row, uniform};
use crate::error::PhysicsError;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// Settings of the pendulum problem.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PendulumSettings {
    /// Stored time levels, `t = 0` included.
    pub levels: usize,
    /// Time between levels.
    #[serde(default = "d_dt")]
    pub dt: f64,
    /// RK4 steps per level.
    #[serde(default = "d_substeps")]
    pub substeps: usize,
    /// Range of the initial angle θ0.
    #[serde(default = "d_theta0")]
    pub theta0: [f64; 2],
    /// Range of the natural frequency ω.
    #[serde(default = "d_omega")]
    pub omega: [f64; 2],
    /// Range of the damping γ.
    #[serde(default = "d_gamma")]
    pub gamma: [f64; 2],
    /// Range of the forcing amplitude A.
    #[serde(default = "d_amp")]
    pub amplitude: [f64; 2],
    /// Range of the forcing frequency f.
    #[serde(default = "d_freq")]
    pub frequency: [f64; 2],
}

fn d_dt() -> f64 {
    0.1
}
fn d_substeps() -> usize {
    10
}
fn d_theta0() -> [f64; 2] {
    [0.0, PI / 2.0]
}
fn d_omega() -> [f64; 2] {
    [PI / 4.0, PI / 2.0]
}
fn d_gamma() -> [f64; 2] {
    [0.0, 0.4]
}
fn d_amp() -> [f64; 2] {
    [0.1, 1.0]
}
fn d_freq() -> [f64; 2] {
    [PI / 2.0, PI]
}

impl PendulumSettings {
    /// The phys-vae set-up with `levels` levels.
    pub fn physvae(levels: usize) -> Self {
        Self {
            levels,
            dt: d_dt(),
            substeps: d_substeps(),
            theta0: d_theta0(),
            omega: d_omega(),
            gamma: d_gamma(),
            amplitude: d_amp(),
            frequency: d_freq(),
        }
    }

    /// Check ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.levels < 3 {
            return Err(format!(
                "levels (grid) must be at least 3, got {}",
                self.levels
            ));
        }
        if !(self.dt > 0.0 && self.dt.is_finite()) || self.substeps == 0 {
            return Err(format!(
                "dt must be positive and substeps ≥ 1, got dt={}, substeps={}",
                self.dt, self.substeps
            ));
        }
        check_range("theta0", self.theta0, false)?;
        check_range("omega", self.omega, true)?;
        check_range("gamma", self.gamma, false)?;
        check_range("amplitude", self.amplitude, false)?;
        check_range("frequency", self.frequency, false)
    }
}

/// The pendulum problem.
#[derive(Debug, Clone)]
pub struct Pendulum {
    /// Settings.
    pub settings: PendulumSettings,
}

impl Pendulum {
    /// Build the problem.
    pub fn new(settings: PendulumSettings) -> Self {
        Self { settings }
    }

    /// The forward map `z ↦ θ(t_k)` as tensor ops: the reference solver's classical RK4
    /// (`substeps` per level) on a batch `z: [b, 5]` (`[θ0, ω, γ, A, f]`), returning `[b, levels]`.
    /// Autodiff differentiates through the unrolled steps, so the map can sit inside a decoder
    /// or likelihood (physics-integrated VAEs, Bayes VI).
    pub fn forward_map(&self, z: Tensor<2>) -> Tensor<2> {
        let [b, p] = z.dims();
        assert_eq!(
            p, 5,
            "Pendulum::forward_map: z must be [batch, 5] = [theta0, omega, gamma, A, f]"
        );
        let col = |i: usize| z.clone().narrow(1, i, 1);
        let (theta0, omega, gamma, amp, freq) = (col(0), col(1), col(2), col(3), col(4));
        let w2 = omega.clone() * omega;
        let drive = amp * w2.clone();
        let two_pi_f = freq.mul_scalar(2.0 * PI);
        let rhs = |t: f64, th: Tensor<2>, v: Tensor<2>| -> (Tensor<2>, Tensor<2>) {
            let acc = drive.clone() * two_pi_f.clone().mul_scalar(t).cos()
                - gamma.clone() * v.clone()
                - w2.clone() * th.sin();
            (v, acc)
        };
        let h = self.settings.dt / self.settings.substeps as f64;
        let (mut th, mut v) = (theta0.clone(), theta0.zeros_like());
        let mut t = 0.0;
        let mut out = vec![theta0];
        for _ in 1..self.settings.levels {
            for _ in 0..self.settings.substeps {
                let (k1t, k1v) = rhs(t, th.clone(), v.clone());
                let (k2t, k2v) = rhs(
                    t + h / 2.0,
                    th.clone() + k1t.clone().mul_scalar(h / 2.0),
                    v.clone() + k1v.clone().mul_scalar(h / 2.0),
                );
                let (k3t, k3v) = rhs(
                    t + h / 2.0,
                    th.clone() + k2t.clone().mul_scalar(h / 2.0),
                    v.clone() + k2v.clone().mul_scalar(h / 2.0),
                );
                let (k4t, k4v) = rhs(
                    t + h,
                    th.clone() + k3t.clone().mul_scalar(h),
                    v.clone() + k3v.clone().mul_scalar(h),
                );
                th = th
                    + (k1t + k2t.mul_scalar(2.0) + k3t.mul_scalar(2.0) + k4t).mul_scalar(h / 6.0);
                v = v + (k1v + k2v.mul_scalar(2.0) + k3v.mul_scalar(2.0) + k4v).mul_scalar(h / 6.0);
                t += h;
            }
            out.push(th.clone());
        }
        let u = Tensor::cat(out, 1);
        debug_assert_eq!(u.dims(), [b, self.settings.levels]);
        u
    }

    fn times(&self) -> Vec<f64> {
        (0..self.settings.levels)
            .map(|k| k as f64 * self.settings.dt)
            .collect()
    }
}

impl PdeResidual for Pendulum {
    fn solution_shape(&self) -> Vec<usize> {
        vec![self.settings.levels]
    }

    fn param_dim(&self) -> usize {
        5
    }

    fn residual(&self, u: Tensor<2>, z: Tensor<2>) -> Residual {
        let t_n = self.settings.levels;
        check_shapes("pendulum", &u, &z, t_n, 5);
        let dt = self.settings.dt;
        let device = u.device();
        let p = |i: usize| z.clone().narrow(1, i, 1);
        let (theta0, omega, gamma, amp, freq) = (p(0), p(1), p(2), p(3), p(4));
        let at = |o: usize| u.clone().narrow(1, o, t_n - 2);
        let (prev, cur, next) = (at(0), at(1), at(2));
        let w2 = omega.clone() * omega;
        let t_inner = row(self.times()[1..t_n - 1].to_vec(), &device);
        let forcing = amp * w2.clone() * (freq.mul_scalar(2.0 * PI) * t_inner).cos();
        let pde = (next.clone() - cur.clone().mul_scalar(2.0) + prev.clone()).div_scalar(dt * dt)
            + gamma * (next - prev).div_scalar(2.0 * dt)
            + w2 * cur.sin()
            - forcing;
        let u0 = u.clone().narrow(1, 0, 1);
        let v0 = (u.clone().narrow(1, 1, 1).mul_scalar(4.0)
            - u0.clone().mul_scalar(3.0)
            - u.narrow(1, 2, 1))
        .div_scalar(2.0 * dt);
        Residual {
            pde,
            boundary: Tensor::cat(vec![u0 - theta0, v0], 1),
        }
    }
}

impl Problem for Pendulum {
    fn name(&self) -> &'static str {
        "pendulum"
    }

    fn param_names(&self) -> Vec<String> {
        ["theta0", "omega", "gamma", "A", "f"]
            .map(String::from)
            .to_vec()
    }

    fn sample_params(&self, rng: &mut dyn rand::RngCore) -> Vec<f64> {
        let s = &self.settings;
        [s.theta0, s.omega, s.gamma, s.amplitude, s.frequency]
            .iter()
            .map(|&r| uniform(rng, r))
            .collect()
    }

    fn solve(&self, z: &[f64]) -> Result<Vec<f64>, PhysicsError> {
        if z.len() != 5 {
            return Err(PhysicsError::Shape(format!(
                "pendulum: expected 5 parameters [theta0, omega, gamma, A, f], got {}",
                z.len()
            )));
        }
        let (theta0, omega, gamma, amp, freq) = (z[0], z[1], z[2], z[3], z[4]);
        let w2 = omega * omega;
        let rhs = |t: f64, s: [f64; 2]| -> [f64; 2] {
            [
                s[1],
                amp * w2 * (2.0 * PI * freq * t).cos() - gamma * s[1] - w2 * s[0].sin(),
            ]
        };
        let h = self.settings.dt / self.settings.substeps as f64;
        let mut s = [theta0, 0.0];
        let mut t = 0.0;
        let mut out = vec![theta0];
        for _ in 1..self.settings.levels {
            for _ in 0..self.settings.substeps {
                let k1 = rhs(t, s);
                let k2 = rhs(
                    t + h / 2.0,
                    [s[0] + h / 2.0 * k1[0], s[1] + h / 2.0 * k1[1]],
                );
                let k3 = rhs(
                    t + h / 2.0,
                    [s[0] + h / 2.0 * k2[0], s[1] + h / 2.0 * k2[1]],
                );
                let k4 = rhs(t + h, [s[0] + h * k3[0], s[1] + h * k3[1]]);
                for i in 0..2 {
                    s[i] += h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
                }
                t += h;
            }
            out.push(s[0]);
        }
        if out.iter().all(|v| v.is_finite()) {
            Ok(out)
        } else {
            Err(PhysicsError::NonFinite {
                solver: "pendulum (RK4)",
            })
        }
    }

    fn coordinates(&self) -> Vec<(&'static str, Vec<f64>)> {
        vec![("t", self.times())]
    }
}

impl Default for PendulumSettings {
    fn default() -> Self {
        Self::physvae(50)
    }
}
