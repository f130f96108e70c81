//! Closed-form solutions of the heat equation on the unit interval and square.
//!
//! ```text
//! u_t = κ Δu  on (0,1)^d,   u = 0 on the boundary,
//! u(x, 0) = Σ_k a_k Π_j sin(k_j π x_j)
//! u(x, t) = Σ_k a_k exp(−κ π² |k|² t) Π_j sin(k_j π x_j)
//! ```
//!
//! Each Fourier mode decays independently, so these are exact (to `f64` round-off) and serve
//! as ground truth for the built-in datasets and for solver tests.

use crate::grid::Grid1d;
use std::f64::consts::PI;

/// A sine series solution of the 1-D heat equation with diffusivity `kappa`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatSine1d {
    /// Coefficients `a_k` of `sin(kπx)`, `k = 1..=len`.
    pub coeffs: Vec<f64>,
    /// Diffusivity κ > 0.
    pub kappa: f64,
}

impl HeatSine1d {
    /// A solution with the given sine coefficients and diffusivity.
    pub fn new(coeffs: Vec<f64>, kappa: f64) -> Self {
        Self { coeffs, kappa }
    }

    /// `u(x, t)` at one point.
    pub fn value(&self, x: f64, t: f64) -> f64 {
        self.coeffs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let k = (i + 1) as f64;
                a * (-self.kappa * (k * PI).powi(2) * t).exp() * (k * PI * x).sin()
            })
            .sum()
    }

    /// `u(·, t)` on every node of `grid`.
    pub fn eval(&self, grid: &Grid1d, t: f64) -> Vec<f64> {
        grid.x.iter().map(|&x| self.value(x, t)).collect()
    }
}

/// A double sine series solution of the 2-D heat equation on the unit square.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatSine2d {
    /// Coefficients `a_{kl}` of `sin(kπx) sin(lπy)`, row-major `[modes, modes]`.
    pub coeffs: Vec<f64>,
    /// Number of modes per axis.
    pub modes: usize,
    /// Diffusivity κ > 0.
    pub kappa: f64,
}

impl HeatSine2d {
    /// A solution with `modes × modes` coefficients (row-major, `k` along rows).
    pub fn new(coeffs: Vec<f64>, modes: usize, kappa: f64) -> Self {
        assert_eq!(
            coeffs.len(),
            modes * modes,
            "HeatSine2d needs modes² coefficients"
        );
        Self {
            coeffs,
            modes,
            kappa,
        }
    }

    /// `u(x, y, t)` at one point.
    pub fn value(&self, x: f64, y: f64, t: f64) -> f64 {
        let mut u = 0.0;
        for k in 0..self.modes {
            for l in 0..self.modes {
                let (kf, lf) = ((k + 1) as f64, (l + 1) as f64);
                let decay = (-self.kappa * PI * PI * (kf * kf + lf * lf) * t).exp();
                u += self.coeffs[k * self.modes + l]
                    * decay
                    * (kf * PI * x).sin()
                    * (lf * PI * y).sin();
            }
        }
        u
    }

    /// `u(·, ·, t)` on the tensor grid `gx × gy`, row-major `[gx.len(), gy.len()]`.
    pub fn eval(&self, gx: &Grid1d, gy: &Grid1d, t: f64) -> Vec<f64> {
        let mut out = Vec::with_capacity(gx.len() * gy.len());
        for &x in &gx.x {
            for &y in &gy.x {
                out.push(self.value(x, y, t));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Max over interior nodes of |u_t − κ u_xx| by second-order central differences.
    fn fd_residual_1d(sol: &HeatSine1d, h: f64) -> f64 {
        let t = 0.01;
        let dt = h * 0.1;
        let mut worst: f64 = 0.0;
        let mut x = h;
        while x < 1.0 - h / 2.0 {
            let ut = (sol.value(x, t + dt) - sol.value(x, t - dt)) / (2.0 * dt);
            let uxx = (sol.value(x + h, t) - 2.0 * sol.value(x, t) + sol.value(x - h, t)) / (h * h);
            worst = worst.max((ut - sol.kappa * uxx).abs());
            x += h;
        }
        worst
    }

    #[test]
    fn heat_1d_satisfies_the_pde_at_second_order() {
        let sol = HeatSine1d::new(vec![1.0, -0.5, 0.25], 0.7);
        let r1 = fd_residual_1d(&sol, 1.0 / 32.0);
        let r2 = fd_residual_1d(&sol, 1.0 / 64.0);
        let order = (r1 / r2).log2();
        assert!(
            (order - 2.0).abs() < 0.2,
            "observed order {order} (r1={r1}, r2={r2})"
        );
        // Boundary conditions and initial condition.
        assert!(sol.value(0.0, 0.3).abs() < 1e-14 && sol.value(1.0, 0.3).abs() < 1e-14);
        let x = 0.3;
        let u0: f64 = sol
            .coeffs
            .iter()
            .enumerate()
            .map(|(i, a)| a * (((i + 1) as f64) * PI * x).sin())
            .sum();
        assert!((sol.value(x, 0.0) - u0).abs() < 1e-15);
    }

    #[test]
    fn heat_2d_mode_decays_at_its_eigenvalue() {
        // A single (2,1) mode decays like exp(-κπ²·5·t).
        let mut c = vec![0.0; 9];
        c[3] = 2.0; // k = 2, l = 1
        let sol = HeatSine2d::new(c, 3, 0.5);
        let (x, y) = (0.2, 0.35);
        let ratio = sol.value(x, y, 0.1) / sol.value(x, y, 0.0);
        let expected = (-0.5 * PI * PI * 5.0 * 0.1f64).exp();
        assert!((ratio - expected).abs() < 1e-12, "{ratio} vs {expected}");
    }
}
