//! Noisy point observations of the solution, `y = H u* + σ_y ε`: the config section shared by
//! the kinds with an inverse problem (pddlvm, npe, phys-vae) and by `varphi infer`, and the
//! observed nodes a run's seed chooses.

use crate::config::invalid;
use crate::error::TrainError;
use serde::{Deserialize, Serialize};
use varphi_data::physics::{Observations, observation_indices};
use varphi_losses::ObservationOperator;
use varphi_physics::pde::Problem;

/// `[objective.observations]`: `y = u*(x_j) + σ_y ε` at `count` solution nodes (chosen as
/// `varphi data` chooses them for the run's seed), simulated afresh each step from the training
/// solutions and once, with a fixed seed, for the test cases that `varphi eval` scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationsSection {
    /// Observed nodes (default: every observable node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Noise standard deviation σ_y (physical units of `u`).
    pub sigma: f64,
}

impl ObservationsSection {
    /// Range checks; `key` is the section's dotted name.
    pub fn validate(&self, key: &str) -> Result<(), TrainError> {
        if !(self.sigma > 0.0 && self.sigma.is_finite()) {
            return Err(invalid(
                &format!("{key}.sigma"),
                format!("must be > 0, got {}", self.sigma),
            ));
        }
        if self.count == Some(0) {
            return Err(invalid(&format!("{key}.count"), "must be at least 1"));
        }
        Ok(())
    }

    /// The observation operator at the nodes `varphi data` observes for seed `seed`.
    pub fn operator(
        &self,
        problem: &dyn Problem,
        seed: u64,
        key: &str,
    ) -> Result<ObservationOperator, TrainError> {
        let obs = Observations {
            count: self.count,
            sigma: self.sigma,
        };
        let indices =
            observation_indices(problem, &obs, seed).map_err(|e| invalid(key, e.to_string()))?;
        Ok(ObservationOperator::by_index(&indices))
    }
}
