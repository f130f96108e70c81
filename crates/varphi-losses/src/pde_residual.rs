//! PDE residuals as likelihoods: the virtual observation `r̂ = 0` (primer eq. 29) and the
//! residual Boltzmann target (eqs. 27–28).

use burn::module::Param;
use burn::prelude::*;
use varphi_models::distributions::LN_2PI;
use varphi_physics::pde::Residual;

/// How the residual noise scale `σ_r` evolves.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum SigmaSchedule {
    /// `σ_r` fixed.
    Fixed,
    /// Tempering toward the hard-constraint limit: `σ_r(t) = σ_0 (σ_r/σ_0)^{min(t/T, 1)}`, a
    /// geometric path from `initial` (`σ_0`) to `sigma` over `steps` (`T`).
    Anneal {
        /// Starting scale `σ_0`.
        initial: f64,
        /// Steps `T` to reach the final `σ_r`.
        steps: usize,
    },
    /// `log σ_r` is a parameter trained with the model (initialised at `sigma`).
    Learned,
}

/// Configuration of a [`ResidualLikelihood`].
#[derive(Config, Debug)]
pub struct ResidualLikelihoodConfig {
    /// Noise scale `σ_r` of the PDE rows (the final value when annealed).
    pub sigma: f64,
    /// Noise scale `σ_b` of the boundary / initial-condition rows; default `sigma`.
    #[config(default = "None")]
    pub boundary_sigma: Option<f64>,
    /// Schedule of `σ_r` (the boundary scale follows it in proportion).
    #[config(default = "SigmaSchedule::Fixed")]
    pub schedule: SigmaSchedule,
}

/// The virtual-observation likelihood (primer eq. 29): the residual of the PDE is observed to be
/// zero with Gaussian noise,
///
/// ```text
/// log p(r̂ = 0 | u, z) = log N(0; r(u, z), σ_r² I) + log N(0; r_b(u, z), σ_b² I)
///                     = −½ Σ_i r_i²/σ_r² − n_r log σ_r − ½ Σ_j r_{b,j}²/σ_b² − n_b log σ_b
///                       − ½ (n_r + n_b) log 2π
/// ```
///
/// with `r` the PDE rows and `r_b` the boundary-condition rows of a
/// [`Residual`] (FD strong form or FEM weak form from `varphi-physics`). `σ_r → 0` recovers the
/// hard constraint `r = 0`.
#[derive(Module, Debug)]
pub struct ResidualLikelihood {
    /// `log σ_r` when learned, `[1]`.
    pub log_sigma: Option<Param<Tensor<1>>>,
    /// `σ_r` (final value when annealed, initial value when learned).
    pub sigma: f64,
    /// `σ_b / σ_r`.
    pub boundary_ratio: f64,
    /// Schedule.
    #[module(skip)]
    pub schedule: SigmaSchedule,
}

impl ResidualLikelihoodConfig {
    /// Build the likelihood (a learned `σ_r` is a parameter on `device`).
    pub fn init(&self, device: &Device) -> ResidualLikelihood {
        assert!(
            self.sigma > 0.0,
            "ResidualLikelihoodConfig.sigma must be > 0, got {}",
            self.sigma
        );
        let boundary = self.boundary_sigma.unwrap_or(self.sigma);
        assert!(boundary > 0.0, "boundary_sigma must be > 0, got {boundary}");
        if let SigmaSchedule::Anneal { initial, .. } = self.schedule {
            assert!(initial > 0.0, "SigmaSchedule::Anneal.initial must be > 0");
        }
        let log_sigma = matches!(self.schedule, SigmaSchedule::Learned).then(|| {
            Param::from_tensor(Tensor::<1>::from_data(
                TensorData::new(vec![self.sigma.ln()], [1]),
                device,
            ))
        });
        ResidualLikelihood {
            log_sigma,
            sigma: self.sigma,
            boundary_ratio: boundary / self.sigma,
            schedule: self.schedule,
        }
    }
}

impl ResidualLikelihood {
    /// `σ_r` at training step `step` (for a learned scale: its initial value).
    pub fn sigma_at(&self, step: usize) -> f64 {
        match self.schedule {
            SigmaSchedule::Fixed | SigmaSchedule::Learned => self.sigma,
            SigmaSchedule::Anneal { initial, steps } => {
                let f = if steps == 0 {
                    1.0
                } else {
                    (step as f64 / steps as f64).min(1.0)
                };
                initial * (self.sigma / initial).powf(f)
            }
        }
    }

    /// `log N(0; r, σ²)` summed over the rows of `r` `[batch, rows]` → `[batch]`, with
    /// `log σ` a scalar tensor (learned) or a number.
    fn gaussian_rows(r: Tensor<2>, log_sigma: LogSigma) -> Tensor<1> {
        let rows = r.dims()[1] as f64;
        if rows == 0.0 {
            return Tensor::zeros([r.dims()[0]], &r.device());
        }
        let sq = r.powi_scalar(2).sum_dim(1).squeeze_dim::<1>(1);
        match log_sigma {
            LogSigma::Value(ls) => sq
                .mul_scalar(-0.5 * (-2.0 * ls).exp())
                .sub_scalar(rows * (ls + 0.5 * LN_2PI)),
            LogSigma::Tensor(ls) => {
                let inv_var = ls.clone().mul_scalar(-2.0).exp();
                (sq * inv_var).mul_scalar(-0.5)
                    - ls.mul_scalar(rows).add_scalar(0.5 * rows * LN_2PI)
            }
        }
    }

    /// `log p(r̂ = 0 | u, z)` per sample, `[batch]`.
    pub fn log_prob(&self, residual: &Residual, step: usize) -> Tensor<1> {
        let ratio = self.boundary_ratio.ln();
        match &self.log_sigma {
            Some(ls) => {
                let ls = ls.val();
                Self::gaussian_rows(residual.pde.clone(), LogSigma::Tensor(ls.clone()))
                    + Self::gaussian_rows(
                        residual.boundary.clone(),
                        LogSigma::Tensor(ls.add_scalar(ratio)),
                    )
            }
            None => {
                let ls = self.sigma_at(step).ln();
                Self::gaussian_rows(residual.pde.clone(), LogSigma::Value(ls))
                    + Self::gaussian_rows(residual.boundary.clone(), LogSigma::Value(ls + ratio))
            }
        }
    }

    /// The current `σ_r` as a number (learned: the parameter's value).
    pub fn current_sigma(&self, step: usize) -> f64 {
        match &self.log_sigma {
            Some(ls) => ls
                .val()
                .into_data()
                .convert::<f64>()
                .try_into_vec_as::<f64>()
                .expect("f64")[0]
                .exp(),
            None => self.sigma_at(step),
        }
    }
}

enum LogSigma {
    Value(f64),
    Tensor(Tensor<1>),
}

/// The residual Boltzmann objective (primer eqs. 27–28, Zhu et al. 2019): the target density
/// of the solution given the parameters is `p_β(u | z) ∝ exp(−β ‖r(u, z)‖²)`, and a
/// conditional surrogate `q(u | z)` is fitted by reverse KL,
///
/// ```text
/// KL(q ‖ p_β) + log Z_β = E_q[β ‖r(u, z)‖²] − H[q(u | z)]   (minimised)
/// ```
///
/// estimated with the reparameterised samples of `q`. `β = 1/(2σ_r²)` makes it the
/// virtual-observation ELBO with a flat prior on `u` (up to constants).
#[derive(Config, Debug)]
pub struct ResidualBoltzmannConfig {
    /// Inverse temperature β > 0.
    pub beta: f64,
}

/// Named parts of the residual Boltzmann objective.
#[derive(Debug, Clone)]
pub struct BoltzmannOutput {
    /// `E_q[β‖r‖²] − H[q]`, averaged over the batch (backpropagate this).
    pub loss: Tensor<1>,
    /// `E_q ‖r‖²` per sample, detached, `[batch]`.
    pub residual_sq: Tensor<1>,
    /// `H[q]` per sample, detached, `[batch]`.
    pub entropy: Tensor<1>,
}

/// The residual Boltzmann objective; see [`ResidualBoltzmannConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResidualBoltzmann {
    /// Inverse temperature β.
    pub beta: f64,
}

impl ResidualBoltzmannConfig {
    /// Build the objective.
    pub fn init(&self) -> ResidualBoltzmann {
        assert!(self.beta > 0.0, "ResidualBoltzmannConfig.beta must be > 0");
        ResidualBoltzmann { beta: self.beta }
    }
}

impl ResidualBoltzmann {
    /// The objective for a batch.
    ///
    /// # Shapes
    /// - `residual_sq`: `[particles, batch]`, `‖r(u_s, z)‖²` for samples `u_s ~ q(u | z)`
    /// - `entropy`: `[batch]`, `H[q(u | z)]`
    pub fn forward(&self, residual_sq: Tensor<2>, entropy: Tensor<1>) -> BoltzmannOutput {
        let e_r = residual_sq.mean_dim(0).squeeze_dim::<1>(0);
        let loss = (e_r.clone().mul_scalar(self.beta) - entropy.clone()).mean();
        BoltzmannOutput {
            loss,
            residual_sq: e_r.detach(),
            entropy: entropy.detach(),
        }
    }

    /// The objective for a surrogate without a closed-form entropy (e.g. a conditional
    /// [`varphi_models::RealNvp`]): `H[q] ≈ −(1/S) Σ_s log q(u_s | z)` from the same samples,
    /// `E_q[β‖r‖² + log q(u | z)]`.
    ///
    /// # Shapes
    /// - `residual_sq`, `log_q`: `[particles, batch]` for samples `u_s ~ q(u | z)`
    pub fn forward_mc(&self, residual_sq: Tensor<2>, log_q: Tensor<2>) -> BoltzmannOutput {
        let entropy = log_q.mean_dim(0).squeeze_dim::<1>(0).neg();
        self.forward(residual_sq, entropy)
    }
}
