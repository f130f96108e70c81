//! Per-case Gaussian variational inference in standardised coordinates: for each of `n`
//! independent cases (data sets) `i`, fit `q_i(ξ) = N(μ_i, diag s_i²)` by maximising
//!
//! ```text
//! L_i(μ_i, s_i) = E_{ξ ~ q_i}[log p(x_i | ξ)] − KL(q_i ‖ N(0, I)),
//! KL = ½ Σ_j (μ_ij² + s_ij² − 1) − Σ_j log s_ij,
//! ```
//!
//! the expectation by the reparameterisation `ξ = μ_i + s_i ⊙ ε` over draws `ε` with weights
//! `w` ([`Draws`]: randomly rotated spherical points, fixed quadrature nodes, which make the
//! optimum deterministic, or any draws with their weights, e.g. Monte Carlo with `w = 1/S`),
//! maximised by Adam over `(μ, log s)` of every case at once (the cases do not interact: the
//! loss is `−Σ_i L_i`). This is the non-amortised `q_λ`
//! of the Φ-DVAE paper (one Gaussian fitted per data set), used to refine an amortised `q_λ`
//! per sequence ([`GaussianVi::fit`]'s `init`).

use burn::module::{Module, Param};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use varphi_models::distributions::DiagGaussian;

/// Draws `ε` for one step of [`GaussianVi::fit`] and their weights.
#[derive(Debug, Clone)]
pub struct Draws {
    /// Standardised draws, `[1 or n, S, p]` (`1`: the same for every case).
    pub eps: Tensor<3>,
    /// Weights `w_s` (summing to 1), `[1, S]`.
    pub weights: Tensor<2>,
}

impl Draws {
    /// The `2p` points `±√p · Q e_j` of the degree-3 spherical rule, rotated per case by a
    /// Haar-random orthogonal `Q` (Gram–Schmidt of the standard-normal `gaussian`, `[n·p·p]`
    /// row-major per case), equal weights `1/(2p)`. Every step's points have exactly the
    /// first three moments of `N(0, I)` (mean 0, covariance `I`, odd moments 0), so for a
    /// log-likelihood quadratic in `ξ` (a Gaussian posterior) the bound and its gradient are
    /// exact at every step — Monte Carlo's sampling noise in the gradient of `log s` is what
    /// makes plain SVI with a few draws converge slowly. Fourth moments are the sphere's
    /// (`E ε_j⁴ = 3p/(p + 2)` instead of 3): an approximation beyond Gaussian posteriors.
    pub fn rotated_spherical(gaussian: &[f64], n: usize, p: usize, device: &Device) -> Self {
        assert_eq!(
            gaussian.len(),
            n * p * p,
            "one p × p normal matrix per case"
        );
        let r = (p as f64).sqrt();
        let mut eps = Vec::with_capacity(n * 2 * p * p);
        for case in gaussian.chunks(p * p) {
            // Rows of `case` orthonormalised in order (Haar-distributed rows).
            let mut q: Vec<Vec<f64>> = Vec::with_capacity(p);
            for row in case.chunks(p) {
                let mut v = row.to_vec();
                for u in &q {
                    let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                    v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
                }
                let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-300);
                q.push(v.into_iter().map(|a| a / norm).collect());
            }
            for sign in [1.0, -1.0] {
                for u in &q {
                    eps.extend(u.iter().map(|a| sign * r * a));
                }
            }
        }
        let eps = Tensor::<3>::from_data(TensorData::new(eps, [n, 2 * p, p]), device);
        let weights = Tensor::full([1, 2 * p], 1.0 / (2 * p) as f64, device);
        Self { eps, weights }
    }
}

/// The fit's schedule: `(steps, learning rate)` stages of Adam (restarted per stage).
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianVi {
    /// `(steps, lr)` per stage, run in order.
    pub schedule: Vec<(usize, f64)>,
}

#[derive(Module, Debug)]
struct Variational {
    mean: Param<Tensor<2>>,
    log_sd: Param<Tensor<2>>,
}

impl GaussianVi {
    /// Fit `q_i` for every case from `init` (`[n, p]`, on an autodiff device; only its values
    /// are used). `log_lik(ξ)` maps `ξ: [n·S, p]` (case-major: rows `i·S .. (i+1)·S` belong to
    /// case `i`) to `log p(x_i | ξ)`, `[n·S]`; `draws(step)` gives the step's `ε`. A
    /// non-finite bound stops the fit with a message naming the step and the cases. Returns
    /// the fitted `q` (detached) and the last bound per case `L_i`, `[n]`.
    pub fn fit(
        &self,
        init: &DiagGaussian,
        log_lik: impl Fn(Tensor<2>) -> Tensor<1>,
        mut draws: impl FnMut(usize) -> Draws,
    ) -> Result<(DiagGaussian, Tensor<1>), String> {
        let [n, p] = init.mean.dims();
        let mut q = Variational {
            mean: Param::from_tensor(init.mean.clone().detach()),
            log_sd: Param::from_tensor(init.log_var.clone().detach() * 0.5),
        };
        let mut step = 0;
        let mut bound = Tensor::zeros([n], &init.mean.device());
        for &(iters, lr) in &self.schedule {
            // A fresh Adam per stage: its second moments would otherwise remember the large
            // gradients far from the optimum for ~1/(1 − β₂) steps and stall the last stages.
            let mut opt = AdamConfig::new().init();
            for _ in 0..iters {
                let Draws { eps, weights } = draws(step);
                let s = eps.dims()[1];
                let mean = q.mean.val();
                let log_sd = q.log_sd.val();
                let xi = mean.clone().unsqueeze_dim::<3>(1)
                    + log_sd.clone().exp().unsqueeze_dim::<3>(1) * eps;
                let ll = log_lik(xi.reshape([n * s, p])).reshape([n, s]);
                let expected = (ll * weights).sum_dim(1);
                let kl = DiagGaussian::new(mean, log_sd * 2.0).kl(&DiagGaussian::standard(
                    n,
                    p,
                    &expected.device(),
                ));
                let per_case = expected.reshape([n]) - kl;
                let values: Vec<f64> = per_case
                    .clone()
                    .detach()
                    .into_data()
                    .convert::<f64>()
                    .try_to_vec::<f64>()
                    .expect("a float tensor converts to f64");
                let bad: Vec<usize> = (0..n).filter(|&i| !values[i].is_finite()).collect();
                if !bad.is_empty() {
                    return Err(format!(
                        "the variational bound is not finite at step {step} for case(s) {bad:?} (the log-likelihood diverged at a drawn ξ)"
                    ));
                }
                bound = per_case.clone().detach();
                let loss = per_case.sum().neg();
                let grads = GradientsParams::from_grads(loss.backward(), &q);
                q = opt.step(lr, q, grads);
                step += 1;
            }
        }
        let log_var = q.log_sd.val().detach() * 2.0;
        Ok((DiagGaussian::new(q.mean.val().detach(), log_var), bound))
    }
}
