//! Sparse direct solves for the reference solvers, through faer's sparse Cholesky and LU.

use crate::error::PhysicsError;
use faer::prelude::*;
use faer::sparse::{SparseColMat, Triplet};

/// A square sparse matrix from `(row, col, value)` triplets (duplicates summed).
pub fn matrix(
    n: usize,
    triplets: &[(usize, usize, f64)],
    solver: &'static str,
) -> Result<SparseColMat<usize, f64>, PhysicsError> {
    let t: Vec<Triplet<usize, usize, f64>> = triplets
        .iter()
        .map(|&(r, c, v)| Triplet::new(r, c, v))
        .collect();
    SparseColMat::try_new_from_triplets(n, n, &t).map_err(|e| factorisation(solver, e))
}

/// The error for a failed factorisation, with the library's reason.
pub fn factorisation(solver: &'static str, reason: impl std::fmt::Debug) -> PhysicsError {
    PhysicsError::Factorisation {
        solver,
        reason: format!("{reason:?}"),
    }
}

/// Solve with a factorisation in place, checking the solution is finite.
pub fn solve_with(
    factor: &impl Solve<f64>,
    b: &[f64],
    solver: &'static str,
) -> Result<Vec<f64>, PhysicsError> {
    let mut x = Col::from_fn(b.len(), |i| b[i]);
    factor.solve_in_place(&mut x);
    let v: Vec<f64> = x.iter().copied().collect();
    if v.iter().all(|x| x.is_finite()) {
        Ok(v)
    } else {
        Err(PhysicsError::NonFinite { solver })
    }
}

/// Solve `A x = b` for a symmetric positive-definite `A` (sparse Cholesky, lower triangle read).
pub fn solve_spd(
    n: usize,
    triplets: &[(usize, usize, f64)],
    b: &[f64],
    solver: &'static str,
) -> Result<Vec<f64>, PhysicsError> {
    let llt = matrix(n, triplets, solver)?
        .sp_cholesky(faer::Side::Lower)
        .map_err(|e| factorisation(solver, e))?;
    solve_with(&llt, b, solver)
}

/// `A⁻¹` of a symmetric positive-definite `A` given as triplets, row-major `[n, n]` (dense
/// result; one sparse Cholesky factorisation, `n` solves — meant for up to a few thousand rows).
pub fn inverse_spd(
    n: usize,
    triplets: &[(usize, usize, f64)],
    solver: &'static str,
) -> Result<Vec<f64>, PhysicsError> {
    let llt = matrix(n, triplets, solver)?
        .sp_cholesky(faer::Side::Lower)
        .map_err(|e| factorisation(solver, e))?;
    let mut inverse = Vec::with_capacity(n * n);
    for j in 0..n {
        let e: Vec<f64> = (0..n).map(|i| f64::from(u8::from(i == j))).collect();
        // Column j of a symmetric inverse is its row j.
        inverse.extend(solve_with(&llt, &e, solver)?);
    }
    Ok(inverse)
}

/// Solve `A x = b` for a general square `A` (sparse LU with partial pivoting).
pub fn solve_lu(
    n: usize,
    triplets: &[(usize, usize, f64)],
    b: &[f64],
    solver: &'static str,
) -> Result<Vec<f64>, PhysicsError> {
    let lu = matrix(n, triplets, solver)?
        .sp_lu()
        .map_err(|e| factorisation(solver, e))?;
    solve_with(&lu, b, solver)
}

/// A residual `R(x)` and its sparse Jacobian as `(row, col, value)` triplets.
pub type ResidualAndJacobian = (Vec<f64>, Vec<(usize, usize, f64)>);

/// Newton's method with backtracking for `R(x) = 0`: at each iteration solve `J δ = −R` by
/// sparse LU and halve the step until `‖R‖∞` decreases. Stops when `‖R‖∞ ≤ tol`, or when a full
/// Newton step changes `x` by less than 1e-14 `max(1, ‖x‖∞)` (the round-off floor, reached
/// after quadratic convergence).
pub fn newton(
    mut x: Vec<f64>,
    system: impl Fn(&[f64]) -> ResidualAndJacobian,
    tol: f64,
    max_iterations: usize,
    solver: &'static str,
) -> Result<Vec<f64>, PhysicsError> {
    let norm = |r: &[f64]| r.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let (mut r, mut jac) = system(&x);
    for _ in 0..max_iterations {
        if norm(&r) <= tol {
            return Ok(x);
        }
        let neg: Vec<f64> = r.iter().map(|v| -v).collect();
        let delta = solve_lu(x.len(), &jac, &neg, solver)?;
        if norm(&delta) <= 1e-14 * norm(&x).max(1.0) {
            return Ok(x.iter().zip(&delta).map(|(x, d)| x + d).collect());
        }
        let mut step = 1.0;
        loop {
            let trial: Vec<f64> = x.iter().zip(&delta).map(|(x, d)| x + step * d).collect();
            let (rt, jt) = system(&trial);
            if norm(&rt) < norm(&r) || step < 1e-3 {
                (x, r, jac) = (trial, rt, jt);
                break;
            }
            step *= 0.5;
        }
        if !x.iter().all(|v| v.is_finite()) {
            return Err(PhysicsError::NonFinite { solver });
        }
    }
    if norm(&r) <= tol {
        Ok(x)
    } else {
        Err(PhysicsError::NoConvergence {
            solver,
            iterations: max_iterations,
            residual: norm(&r),
        })
    }
}

/// Keep the rows and columns of `keep` (sorted node indices), renumbered `0..keep.len()`.
pub fn restrict(
    triplets: &[(usize, usize, f64)],
    n: usize,
    keep: &[usize],
) -> Vec<(usize, usize, f64)> {
    let mut map = vec![usize::MAX; n];
    for (new, &old) in keep.iter().enumerate() {
        map[old] = new;
    }
    triplets
        .iter()
        .filter(|(r, c, _)| map[*r] != usize::MAX && map[*c] != usize::MAX)
        .map(|&(r, c, v)| (map[r], map[c], v))
        .collect()
}

/// The inverse of a tridiagonal matrix given by its rows `(sub, diag, super)` (the first
/// row's `sub` and the last row's `super` are ignored), row-major `[m, m]`, by the Thomas
/// algorithm on the columns of the identity (`O(m²)`, no pivoting: meant for diagonally
/// dominant steps of time-stepping schemes). `None` if a pivot is ~0 or the result is not
/// finite.
pub fn tridiagonal_inverse(rows: &[[f64; 3]]) -> Option<Vec<f64>> {
    let m = rows.len();
    let scale = rows.iter().fold(0.0f64, |a, r| a.max(r[1].abs()));
    let (mut pivot, mut upper) = (vec![0.0; m], vec![0.0; m]);
    for i in 0..m {
        let p = rows[i][1]
            - if i > 0 {
                rows[i][0] * upper[i - 1]
            } else {
                0.0
            };
        if !(p.abs() > 1e-12 * scale) {
            return None;
        }
        pivot[i] = p;
        upper[i] = if i + 1 < m { rows[i][2] / p } else { 0.0 };
    }
    let mut inv = vec![0.0; m * m];
    let mut y = vec![0.0; m];
    for col in 0..m {
        // Forward: y = L⁻¹ e_col vanishes above `col`.
        y[..col].fill(0.0);
        y[col] = 1.0 / pivot[col];
        for i in col + 1..m {
            y[i] = -rows[i][0] * y[i - 1] / pivot[i];
        }
        inv[(m - 1) * m + col] = y[m - 1];
        for i in (0..m - 1).rev() {
            y[i] -= upper[i] * y[i + 1];
            inv[i * m + col] = y[i];
        }
    }
    inv.iter().all(|v| v.is_finite()).then_some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_and_lu_solve_small_systems() {
        // [[4, 1], [1, 3]] x = [1, 2]  →  x = [1/11, 7/11]; duplicates are summed.
        let t = [
            (0, 0, 2.0),
            (0, 0, 2.0),
            (0, 1, 1.0),
            (1, 0, 1.0),
            (1, 1, 3.0),
        ];
        for x in [
            solve_spd(2, &t, &[1.0, 2.0], "t").unwrap(),
            solve_lu(2, &t, &[1.0, 2.0], "t").unwrap(),
        ] {
            assert!((x[0] - 1.0 / 11.0).abs() < 1e-15 && (x[1] - 7.0 / 11.0).abs() < 1e-15);
        }
        // Non-symmetric for LU.
        let t = [(0, 0, 1.0), (0, 1, 2.0), (1, 0, 3.0), (1, 1, 4.0)];
        let x = solve_lu(2, &t, &[5.0, 6.0], "t").unwrap();
        assert!((x[0] + 4.0).abs() < 1e-13 && (x[1] - 4.5).abs() < 1e-13);
        // Indefinite: Cholesky refuses with a named error.
        let t = [(0, 0, -1.0), (1, 1, 1.0)];
        assert!(matches!(
            solve_spd(2, &t, &[1.0, 1.0], "t"),
            Err(PhysicsError::Factorisation { .. })
        ));
    }

    #[test]
    fn the_tridiagonal_inverse_times_the_matrix_is_the_identity() {
        // A non-symmetric 5 × 5 tridiagonal matrix; and a singular one is refused.
        let rows: Vec<[f64; 3]> = (0..5)
            .map(|i| {
                [
                    0.3 + 0.1 * i as f64,
                    2.0 + 0.5 * i as f64,
                    -0.7 + 0.2 * i as f64,
                ]
            })
            .collect();
        let inv = tridiagonal_inverse(&rows).unwrap();
        for i in 0..5 {
            for j in 0..5 {
                let a = |r: usize, c: usize| match c as i64 - r as i64 {
                    -1 => rows[r][0],
                    0 => rows[r][1],
                    1 => rows[r][2],
                    _ => 0.0,
                };
                let v: f64 = (0..5).map(|k| a(i, k) * inv[k * 5 + j]).sum();
                assert!(
                    (v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-14,
                    "{i} {j} {v}"
                );
            }
        }
        assert!(tridiagonal_inverse(&[[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]).is_none());
    }

    #[test]
    fn the_inverse_of_a_small_spd_matrix_is_its_closed_form() {
        // [[4, 1], [1, 3]]⁻¹ = [[3, −1], [−1, 4]] / 11.
        let t = [(0, 0, 4.0), (0, 1, 1.0), (1, 0, 1.0), (1, 1, 3.0)];
        let inv = inverse_spd(2, &t, "t").unwrap();
        let want = [3.0 / 11.0, -1.0 / 11.0, -1.0 / 11.0, 4.0 / 11.0];
        for (a, b) in inv.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{inv:?}");
        }
    }
}
