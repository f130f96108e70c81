use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softplus};

/// Independent Bernoulli variables parameterised by logits.
///
/// ```text
/// log p(x | ℓ) = Σ_i [ x_i ℓ_i − log(1 + exp ℓ_i) ]     (x_i ∈ [0, 1])
/// ```
/// Values in `(0, 1)` are accepted (the "continuous Bernoulli" without its normaliser), as is
/// customary for grey-scale images.
#[derive(Debug, Clone)]
pub struct Bernoulli {
    /// Logits `[particles, batch, dim]`.
    pub logits: Tensor<3>,
}

impl Bernoulli {
    /// Bernoulli variables with the given logits.
    pub fn new(logits: Tensor<3>) -> Self {
        Self { logits }
    }

    /// Success probabilities `sigmoid(logits)`.
    pub fn probs(&self) -> Tensor<3> {
        sigmoid(self.logits.clone())
    }

    /// `log p(x)` summed over the last axis, `[particles, batch]`; `x: [batch, dim]`.
    pub fn log_prob(&self, x: Tensor<2>) -> Tensor<2> {
        let x = x.unsqueeze::<3>();
        (x * self.logits.clone() - softplus(self.logits.clone(), 1.0))
            .sum_dim(2)
            .squeeze_dim::<2>(2)
    }
}
