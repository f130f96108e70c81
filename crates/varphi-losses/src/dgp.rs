//! Deep generative priors (primer eqs. 25–26): a generator `f_θ*: w ↦ z` trained beforehand on
//! parameter samples (e.g. a VAE decoder, `p(w) = N(0, I)`) reparameterises an inverse problem
//! in its low-dimensional latent `w`.
//!
//! - **Point estimate (25)**, Lopez-Alvis et al.:
//!   `J(w) = ‖G†(f_θ*(w)) − y‖² + β (‖w‖ − μ_χ)²`, `z* = f_θ*(argmin J)`. The chi-shell term
//!   ([`chi_shell`]) keeps `w` at the norm a standard Gaussian draw typically has
//!   ([`chi_mean`]), where the generator was trained, instead of near the origin.
//! - **VI-DGP (26)**, Xia et al.: `E_{q(w)}[−log p(y | z = f_θ*(w))] + KL(q(w) ‖ N(0, I))` —
//!   Bayes VI ([`crate::Elbo`] with a [`varphi_models::GaussianPosterior`]) whose likelihood
//!   decodes `w` through the frozen generator before the forward map; samples `z = f_θ*(w)`.

use burn::prelude::*;

/// Mean norm of a `d`-dimensional standard Gaussian, the mean of a chi distribution with `d`
/// degrees of freedom: `μ_χ = √2 Γ((d+1)/2) / Γ(d/2)` (`≈ √(d − ½)` for large `d`). Computed
/// exactly from `r(1) = 1/√π`, `r(d+1) = d / (2 r(d))` with `r(d) = Γ((d+1)/2)/Γ(d/2)`.
///
/// # Panics
/// If `d = 0`.
pub fn chi_mean(d: usize) -> f64 {
    assert!(d >= 1, "chi_mean: the dimension must be at least 1");
    let mut r = 1.0 / std::f64::consts::PI.sqrt();
    for k in 1..d {
        r = k as f64 / (2.0 * r);
    }
    std::f64::consts::SQRT_2 * r
}

/// The chi-shell regulariser of eq. 25, `β (‖w‖ − μ_χ(d))²` per row of `w: [b, d]`, `[b]`.
pub fn chi_shell(w: Tensor<2>, beta: f64) -> Tensor<1> {
    let d = w.dims()[1];
    w.powi_scalar(2)
        .sum_dim(1)
        .squeeze_dim::<1>(1)
        .sqrt()
        .sub_scalar(chi_mean(d))
        .powi_scalar(2)
        .mul_scalar(beta)
}
