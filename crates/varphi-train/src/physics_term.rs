//! The PDE residual as a virtual observation, shared by the kinds that train through it (cvae
//! surrogates, pddlvm, boltzmann): its config section `[objective.residual]` and [`PhysicsTerm`], the
//! problem with its preconditioner and the parameter normalisation.

use crate::config::{check_positive, invalid};
use crate::error::TrainError;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use varphi_data::{DataSource, Normalization};
use varphi_losses::{ModelError, ModelErrorConfig, ResidualLikelihoodConfig, SigmaSchedule};
use varphi_physics::pde::{Preconditioner, Problem, Residual};

/// How `σ_r` evolves during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SigmaScheduleName {
    /// Fixed at `sigma`.
    Fixed,
    /// Geometric from `anneal_from` to `sigma` over `anneal_steps` steps.
    Anneal,
    /// A trained parameter initialised at `sigma`.
    Learned,
}

/// Where the preconditioner of `[objective.residual]` is linearised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PreconditionAt {
    /// `P` = the PDE's operator at a reference coefficient, one fixed matrix.
    #[default]
    Reference,
    /// `P` = the residual's Jacobian at each sample (`varphi_physics::pde::LinearisedPreconditioner`).
    Sample,
}

/// `[objective.residual]`: `log p(r̂ = 0 | u, z) = log N(0; P⁻¹r(u, z), σ_r²) + log N(0; r_b, σ_b²)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidualSection {
    /// `σ_r` of the PDE rows (final value when annealed).
    pub sigma: f64,
    /// `σ_b` of the boundary / initial-condition rows (default: `sigma`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary_sigma: Option<f64>,
    /// Schedule of `σ_r`.
    #[serde(default = "d_schedule")]
    pub schedule: SigmaScheduleName,
    /// Starting `σ_r` of an annealed schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anneal_from: Option<f64>,
    /// Steps of the annealing.
    #[serde(default)]
    pub anneal_steps: usize,
    /// Observe `P⁻¹ r` (operator at unit coefficient) instead of `r`: condition number ~1.
    #[serde(default = "d_true")]
    pub precondition: bool,
    /// Where `P` is linearised: at the problem's reference coefficient (a fixed matrix) or at
    /// every surrogate sample (`J(u)⁻¹ r`, the Newton step; Burgers only).
    #[serde(default)]
    pub precondition_at: PreconditionAt,
    /// Physical scale of `u`: the surrogate predicts `u / u_scale` (a physics estimate, not
    /// taken from solutions).
    #[serde(default = "d_unit")]
    pub u_scale: f64,
    /// Add the residual-informed model-error term to the forward predictive (`eval`,
    /// `predict`, `sample`): a discrepancy `N(0, τ̂²(z) I)` estimated from the residual the
    /// surrogate's mean achieves (docs/objectives.md, "Model error").
    #[serde(default = "d_true")]
    pub model_error: bool,
}

fn d_schedule() -> SigmaScheduleName {
    SigmaScheduleName::Fixed
}
fn d_true() -> bool {
    true
}
fn d_unit() -> f64 {
    1.0
}

impl ResidualSection {
    /// Range checks.
    pub fn validate(&self) -> Result<(), TrainError> {
        check_positive("objective.residual.sigma", self.sigma)?;
        if let Some(b) = self.boundary_sigma {
            check_positive("objective.residual.boundary_sigma", b)?;
        }
        check_positive("objective.residual.u_scale", self.u_scale)?;
        if self.precondition_at == PreconditionAt::Sample && !self.precondition {
            return Err(invalid(
                "objective.residual.precondition_at",
                "precondition_at = \"sample\" needs precondition = true",
            ));
        }
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if self.schedule == SigmaScheduleName::Anneal && !self.anneal_from.is_some_and(positive) {
            return Err(invalid(
                "objective.residual.anneal_from",
                "schedule = \"anneal\" needs anneal_from > 0 (the starting σ_r)",
            ));
        }
        Ok(())
    }

    /// The key of `precondition` when it is on (for [`PhysicsTerm::new`]).
    pub fn precondition_key(&self) -> Option<&'static str> {
        self.precondition
            .then_some("objective.residual.precondition")
    }

    /// The key of `precondition_at` when it asks for the sample-linearised preconditioner (for
    /// [`PhysicsTerm::with_linearisation`]).
    pub fn linearised_key(&self) -> Option<&'static str> {
        (self.precondition && self.precondition_at == PreconditionAt::Sample)
            .then_some("objective.residual.precondition_at")
    }

    /// The virtual-observation likelihood.
    pub fn likelihood(&self) -> ResidualLikelihoodConfig {
        let schedule = match self.schedule {
            SigmaScheduleName::Fixed => SigmaSchedule::Fixed,
            SigmaScheduleName::Learned => SigmaSchedule::Learned,
            SigmaScheduleName::Anneal => SigmaSchedule::Anneal {
                initial: self.anneal_from.unwrap_or(self.sigma),
                steps: self.anneal_steps,
            },
        };
        ResidualLikelihoodConfig::new(self.sigma)
            .with_boundary_sigma(self.boundary_sigma)
            .with_schedule(schedule)
    }
}

/// The physics shared by residual-based objectives: the problem, the optional preconditioner
/// of its residual, and the per-column normalisation of the parameters (the networks see
/// normalised parameters, the residual physical ones).
pub struct PhysicsTerm {
    /// The problem (residual, reference solver).
    pub problem: Box<dyn Problem + Send + Sync>,
    /// `P⁻¹` when the residual is preconditioned.
    pub preconditioner: Option<Preconditioner>,
    /// The PDE rows are mapped by the problem.s [`varphi_physics::pde::LinearisedPreconditioner`] at each solution
    /// (instead of `preconditioner`).
    pub linearised: bool,
    /// Parameter normalisation (per column).
    pub cond_mean: Vec<f64>,
    /// Parameter normalisation (per column).
    pub cond_std: Vec<f64>,
    /// The model-error term of the forward predictive, where configured.
    pub model_error: Option<ModelError>,
}

impl PhysicsTerm {
    /// Build from a physics data source and the run's normaliser; `precondition` names the
    /// config key that asks for `P⁻¹ r` (errors name it), `None` for the raw residual.
    pub fn new(
        data: &DataSource,
        precondition: Option<&str>,
        norm: &Normalization,
    ) -> Result<Self, TrainError> {
        let (_, physics) = data.physics().ok_or_else(|| {
            invalid(
                "data.kind",
                "a PDE residual needs a physics data source (darcy, poisson1d, burgers, heat, pendulum)",
            )
        })?;
        let problem = physics.build();
        let preconditioner = if let Some(key) = precondition {
            Some(problem.preconditioner().ok_or_else(|| {
                invalid(
                    key,
                    format!(
                        "the {} problem has no preconditioner; set precondition = false",
                        problem.name()
                    ),
                )
            })?)
        } else {
            None
        };
        Ok(Self {
            problem,
            preconditioner,
            linearised: false,
            cond_mean: norm.cond_mean.clone(),
            cond_std: norm.cond_std.clone(),
            model_error: None,
        })
    }

    /// Map the PDE rows by the problem's preconditioner linearised at each solution when `key`
    /// (the config key that asks for it) is given; errors name the key when the problem has
    /// none.
    pub fn with_linearisation(mut self, key: Option<&str>) -> Result<Self, TrainError> {
        if let Some(key) = key {
            if self.problem.linearised().is_none() {
                return Err(invalid(
                    key,
                    format!(
                        "the {} problem has no preconditioner linearised at the sample; use precondition_at = \"reference\"",
                        self.problem.name()
                    ),
                ));
            }
            self.linearised = true;
        }
        Ok(self)
    }

    /// With the residual-informed model-error term (default estimator) when `on`.
    pub fn with_model_error(mut self, on: bool) -> Self {
        self.model_error = on.then(|| ModelErrorConfig::new().init());
        self
    }

    /// `(mean, std)` of the parameter normalisation as `[1, p]` rows on `device`.
    fn cond_rows(&self, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let p = self.cond_mean.len();
        let row = |v: &[f64]| Tensor::<2>::from_data(TensorData::new(v.to_vec(), [1, p]), device);
        (row(&self.cond_mean), row(&self.cond_std))
    }

    /// Physical parameters from normalised ones, `[b, p]`.
    pub fn physical(&self, z: Tensor<2>) -> Tensor<2> {
        let (mean, std) = self.cond_rows(&z.device());
        z * std + mean
    }

    /// Normalised parameters (the networks' coordinates) from physical ones, `[b, p]`.
    pub fn normalised(&self, z: Tensor<2>) -> Tensor<2> {
        let (mean, std) = self.cond_rows(&z.device());
        (z - mean) / std
    }

    /// The (preconditioned, where configured) residual of physical solutions `u` `[rows, n_u]`
    /// at physical parameters `z` `[rows, p]`.
    pub fn residual(&self, u: Tensor<2>, z: Tensor<2>) -> Residual {
        if let Some(lin) = self.problem.linearised().filter(|_| self.linearised) {
            let r = self.problem.residual(u.clone(), z.clone());
            return Residual {
                pde: lin.apply_linearised(&u, &z, r.pde),
                boundary: r.boundary,
            };
        }
        let r = self.problem.residual(u, z);
        match &self.preconditioner {
            Some(p) => Preconditioner::apply_with(&p.tensor(&r.pde.device()), r),
            None => r,
        }
    }
}
