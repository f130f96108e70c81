//! Random coefficient fields on the unit square: spectral Gaussian random fields, the two-phase
//! thresholded fields of the FNO Darcy benchmark, and log-normal fields from a truncated
//! Karhunen–Loève expansion. All in `f64`, deterministic given the RNG.

use faer::Mat;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rustfft::FftPlanner;
use rustfft::num_complex::Complex;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// A Gaussian random field with covariance operator `σ²(−Δ + τ²)^(−α)`, `σ = τ^(α − d/2)`,
/// sampled spectrally on the nodes of an `n × n` grid of the unit square.
///
/// The field is drawn on the torus of period 2 (the unit square and its mirror image, as the
/// cosine series of the FNO data generator implies) with `M = 2(n − 1)` points per axis:
///
/// ```text
/// g(x_j) = Re Σ_k s_k ξ_k exp(2πi k·j / M),   ξ_k = a_k + i b_k,  a_k, b_k ~ N(0, 1)
/// s_k = σ (π²|k|² + τ²)^(−α/2),  s_0 = 0  (zero-mean mode removed, as in FNO)
/// ```
///
/// so `Var g(x) = Σ_k s_k²` ([`Self::variance`]). The inverse DFT is computed with rustfft.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaussianRandomField {
    /// Nodes per axis of the unit-square grid (boundary included).
    pub n: usize,
    /// Smoothness exponent α (FNO Darcy: 2).
    pub alpha: f64,
    /// Inverse length scale τ (FNO Darcy: 3).
    pub tau: f64,
}

impl GaussianRandomField {
    /// The FNO Darcy field: `α = 2, τ = 3`.
    pub fn fno_darcy(n: usize) -> Self {
        Self {
            n,
            alpha: 2.0,
            tau: 3.0,
        }
    }

    fn torus(&self) -> usize {
        2 * (self.n - 1)
    }

    /// Spectral standard deviations `s_k`, row-major `[M, M]` in FFT order.
    pub fn mode_std(&self) -> Vec<f64> {
        let m = self.torus();
        let sigma = self.tau.powf(self.alpha - 1.0);
        let wave = |i: usize| -> f64 {
            if i <= m / 2 {
                i as f64
            } else {
                i as f64 - m as f64
            }
        };
        let mut s = Vec::with_capacity(m * m);
        for i in 0..m {
            for j in 0..m {
                let k2 = wave(i).powi(2) + wave(j).powi(2);
                s.push(if i == 0 && j == 0 {
                    0.0
                } else {
                    sigma * (PI * PI * k2 + self.tau * self.tau).powf(-self.alpha / 2.0)
                });
            }
        }
        s
    }

    /// Pointwise variance `Σ_k s_k²`.
    pub fn variance(&self) -> f64 {
        self.mode_std().iter().map(|s| s * s).sum()
    }

    /// `Cov(g(x_j), g(x_j + (di, dj)·h))` in grid steps `h = 1/(n − 1)`.
    pub fn covariance(&self, di: usize, dj: usize) -> f64 {
        let m = self.torus();
        let s = self.mode_std();
        let mut c = 0.0;
        for i in 0..m {
            for j in 0..m {
                let phase = 2.0 * PI * ((i * di + j * dj) % m) as f64 / m as f64;
                c += s[i * m + j].powi(2) * phase.cos();
            }
        }
        c
    }

    /// One field on the `n × n` nodes, row-major.
    pub fn sample(&self, rng: &mut (impl Rng + ?Sized)) -> Vec<f64> {
        let m = self.torus();
        let s = self.mode_std();
        let mut buf: Vec<Complex<f64>> = s
            .iter()
            .map(|&s| {
                let a: f64 = StandardNormal.sample(rng);
                let b: f64 = StandardNormal.sample(rng);
                Complex::new(s * a, s * b)
            })
            .collect();
        let fft = FftPlanner::new().plan_fft_inverse(m);
        // Rows, then columns through a transpose.
        fft.process(&mut buf);
        let mut t = vec![Complex::new(0.0, 0.0); m * m];
        for i in 0..m {
            for j in 0..m {
                t[j * m + i] = buf[i * m + j];
            }
        }
        fft.process(&mut t);
        let mut out = Vec::with_capacity(self.n * self.n);
        for i in 0..self.n {
            for j in 0..self.n {
                out.push(t[j * m + i].re);
            }
        }
        out
    }
}

/// The two-phase coefficient of the FNO Darcy benchmark: `hi` where `g ≥ 0`, `lo` elsewhere.
pub fn threshold(g: &[f64], lo: f64, hi: f64) -> Vec<f64> {
    g.iter().map(|&v| if v >= 0.0 { hi } else { lo }).collect()
}

/// A log-normal field `a = exp(μ + Σ_{k<K} √λ_k ξ_k φ_k(x))`, `ξ ~ N(0, I_K)`, from the
/// truncated Karhunen–Loève expansion of the separable exponential covariance
///
/// ```text
/// C((x, y), (x', y')) = σ² exp(−|x − x'|/ℓ) exp(−|y − y'|/ℓ)   on the unit square.
/// ```
///
/// The 1-D eigenpairs come from the Nyström method with trapezoid weights (a dense symmetric
/// eigendecomposition by faer); the 2-D ones are their products, sorted by eigenvalue. With all
/// `n²` modes the expansion reproduces the discrete covariance exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct KarhunenLoeve {
    /// Nodes per axis.
    pub n: usize,
    /// Eigenvalues `λ_k`, descending.
    pub eigenvalues: Vec<f64>,
    /// Modes `φ_k` on the nodes, row-major `[K, n·n]`.
    pub modes: Vec<f64>,
    /// Mean `μ` of the log-field.
    pub mean: f64,
}

/// Settings of a [`KarhunenLoeve`] expansion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KarhunenLoeveSettings {
    /// Nodes per axis.
    pub n: usize,
    /// Correlation length ℓ.
    pub length: f64,
    /// Standard deviation σ of the log-field.
    pub sigma: f64,
    /// Mean μ of the log-field.
    pub mean: f64,
    /// Retained modes K.
    pub modes: usize,
}

impl KarhunenLoeve {
    /// Build the expansion (cost: one `n × n` symmetric eigendecomposition).
    pub fn new(s: &KarhunenLoeveSettings) -> Self {
        let n = s.n;
        let h = 1.0 / (n - 1) as f64;
        let w: Vec<f64> = (0..n)
            .map(|i| if i == 0 || i == n - 1 { h / 2.0 } else { h })
            .collect();
        let x: Vec<f64> = (0..n).map(|i| i as f64 * h).collect();
        let b = Mat::from_fn(n, n, |i, j| {
            w[i].sqrt() * (-(x[i] - x[j]).abs() / s.length).exp() * w[j].sqrt()
        });
        let evd = b
            .self_adjoint_eigen(faer::Side::Lower)
            .expect("symmetric eigendecomposition of a correlation matrix");
        let mu: Vec<f64> = (0..n).map(|k| evd.S()[k].max(0.0)).collect();
        let u = evd.U();
        // φ_k(x_i) = v_ik / √w_i.
        let phi = |k: usize, i: usize| u[(i, k)] / w[i].sqrt();
        let mut pairs: Vec<(usize, usize)> =
            (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).collect();
        pairs.sort_by(|a, b| (mu[b.0] * mu[b.1]).total_cmp(&(mu[a.0] * mu[a.1])));
        pairs.truncate(s.modes.min(n * n));
        let eigenvalues = pairs
            .iter()
            .map(|&(i, j)| s.sigma * s.sigma * (mu[i] * mu[j]))
            .collect();
        let mut modes = Vec::with_capacity(pairs.len() * n * n);
        for &(ki, kj) in &pairs {
            for i in 0..n {
                for j in 0..n {
                    modes.push(phi(ki, i) * phi(kj, j));
                }
            }
        }
        Self {
            n,
            eigenvalues,
            modes,
            mean: s.mean,
        }
    }

    /// Number of retained modes.
    pub fn len(&self) -> usize {
        self.eigenvalues.len()
    }

    /// Whether no mode is retained.
    pub fn is_empty(&self) -> bool {
        self.eigenvalues.is_empty()
    }

    /// The log-field `μ + Σ_k √λ_k ξ_k φ_k` for coordinates `ξ` (length K), row-major `[n, n]`.
    pub fn log_field(&self, xi: &[f64]) -> Vec<f64> {
        let nn = self.n * self.n;
        let mut out = vec![self.mean; nn];
        for (k, (&lambda, &z)) in self.eigenvalues.iter().zip(xi).enumerate() {
            let c = lambda.sqrt() * z;
            for (o, p) in out.iter_mut().zip(&self.modes[k * nn..(k + 1) * nn]) {
                *o += c * p;
            }
        }
        out
    }

    /// A coefficient field `exp(log_field(ξ))` with fresh `ξ ~ N(0, I)`; returns `(ξ, a)`.
    pub fn sample(&self, rng: &mut (impl Rng + ?Sized)) -> (Vec<f64>, Vec<f64>) {
        let xi: Vec<f64> = (0..self.len())
            .map(|_| StandardNormal.sample(rng))
            .collect();
        let a = self.log_field(&xi).into_iter().map(f64::exp).collect();
        (xi, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn spectral_field_has_its_covariance() {
        let grf = GaussianRandomField::fno_darcy(9);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let n_samples = 4000;
        let (mut var, mut cov) = (0.0, 0.0);
        for _ in 0..n_samples {
            let g = grf.sample(&mut rng);
            // Node (2, 3) and its neighbour 3 steps along x.
            var += g[2 * 9 + 3].powi(2);
            cov += g[2 * 9 + 3] * g[5 * 9 + 3];
        }
        let (var, cov) = (var / n_samples as f64, cov / n_samples as f64);
        let (v0, c0) = (grf.variance(), grf.covariance(3, 0));
        // Standard errors of the sample second moments of a Gaussian pair.
        let se_v = v0 * (2.0 / n_samples as f64).sqrt();
        let se_c = ((v0 * v0 + c0 * c0) / n_samples as f64).sqrt();
        assert!((var - v0).abs() < 4.0 * se_v, "variance {var} vs {v0}");
        assert!((cov - c0).abs() < 4.0 * se_c, "covariance {cov} vs {c0}");
        assert!(c0 > 0.0 && c0 < v0);
    }

    #[test]
    fn thresholded_field_is_two_phase() {
        let grf = GaussianRandomField::fno_darcy(16);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let a = threshold(&grf.sample(&mut rng), 3.0, 12.0);
        assert!(a.iter().all(|&v| v == 3.0 || v == 12.0));
        assert!(a.contains(&3.0) && a.contains(&12.0));
    }

    #[test]
    fn full_karhunen_loeve_reproduces_the_covariance() {
        let n = 6;
        let kl = KarhunenLoeve::new(&KarhunenLoeveSettings {
            n,
            length: 0.3,
            sigma: 0.8,
            mean: 0.0,
            modes: n * n,
        });
        let h = 1.0 / (n - 1) as f64;
        let nn = n * n;
        let c = |p: usize, q: usize| {
            let (xi, yi, xj, yj) = (
                (p / n) as f64 * h,
                (p % n) as f64 * h,
                (q / n) as f64 * h,
                (q % n) as f64 * h,
            );
            0.64 * (-(xi - xj).abs() / 0.3).exp() * (-(yi - yj).abs() / 0.3).exp()
        };
        for p in 0..nn {
            for q in 0..nn {
                let s: f64 = (0..kl.len())
                    .map(|k| kl.eigenvalues[k] * kl.modes[k * nn + p] * kl.modes[k * nn + q])
                    .sum();
                assert!((s - c(p, q)).abs() < 1e-10, "({p},{q}): {s} vs {}", c(p, q));
            }
        }
        assert!(kl.eigenvalues.windows(2).all(|w| w[0] >= w[1]));
        // Truncation keeps the leading modes and a log-normal field is positive.
        let short = KarhunenLoeve::new(&KarhunenLoeveSettings {
            modes: 5,
            ..KarhunenLoeveSettings {
                n,
                length: 0.3,
                sigma: 0.8,
                mean: 0.0,
                modes: 0,
            }
        });
        assert_eq!(short.eigenvalues, kl.eigenvalues[..5]);
        let (xi, a) = short.sample(&mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
        assert_eq!(xi.len(), 5);
        assert!(a.iter().all(|&v| v > 0.0));
    }
}
