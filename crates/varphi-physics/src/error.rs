//! Errors of the reference solvers.

/// A reference solve that did not produce a trustworthy solution.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PhysicsError {
    /// The sparse factorisation failed (a singular or, for Cholesky, non-SPD matrix).
    #[error(
        "{solver}: sparse factorisation failed ({reason}); check that the coefficient is positive and finite"
    )]
    Factorisation {
        /// Which solver.
        solver: &'static str,
        /// The library's reason.
        reason: String,
    },
    /// Newton's method did not reach the tolerance.
    #[error(
        "{solver}: Newton did not converge in {iterations} iterations (residual {residual:.3e}); refine the grid or the time step, or narrow the parameter ranges"
    )]
    NoConvergence {
        /// Which solver.
        solver: &'static str,
        /// Iterations taken.
        iterations: usize,
        /// Final residual norm.
        residual: f64,
    },
    /// The solution contains NaN or infinity.
    #[error(
        "{solver}: the solution is not finite; the parameters are outside the range the discretisation resolves"
    )]
    NonFinite {
        /// Which solver.
        solver: &'static str,
    },
    /// Inputs of the wrong length.
    #[error("{0}")]
    Shape(String),
}
