//! `kind = "vae"`: an unconditional VAE `p(x) = ∫ p(x | z) p(z) dz` with an amortised posterior
//! `q(z | x)` (Gaussian or a flow on top of it), trained on the bound of `[objective] bound`
//! (ELBO, IWAE, Rényi-α; free bits, score-function estimator, MMD). Shares its networks,
//! objective and evaluation with `cvae` ([`crate::latent`]).

use crate::config::{Common, SectionError, kind_sections, to_table};
use crate::data::{RunData, TrainData, XScaling};
use crate::error::TrainError;
use crate::kind::{Kind, Loaded, SampleRequest};
use crate::latent::{
    ElboObjective, ElboSection, EvalReport, GenerativeModel, LatentModel, NetSection,
    PosteriorName, TrainedLatent, print_eval,
};
use burn::prelude::*;
use std::path::Path;
use varphi_models::VaeConfig;

/// The config of a `vae` run: `[model]` and `[objective]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Vae {
    /// `[model]`: the networks.
    pub model: NetSection,
    /// `[objective]`: the bound.
    pub objective: ElboSection,
}

impl Vae {
    /// The shared steps of a trained run.
    pub fn trained<'a>(&'a self, run: &'a Loaded<Self>) -> TrainedLatent<'a> {
        TrainedLatent {
            model: &run.model,
            objective: &self.objective,
            physics: None,
            data: &run.data,
            seed: run.common.seed,
            batch_size: run.common.training.batch_size,
            device: &run.device.device,
            scorer: &run.scorer,
        }
    }

    /// The untrained model for data of `data`'s shape on `device`.
    pub fn model(&self, data: &RunData, device: &Device) -> GenerativeModel {
        let shape = data.shape();
        let k = self
            .objective
            .likelihood(shape.features())
            .params_per_datum();
        let vae = VaeConfig::new(
            self.model.encoder(&shape, 0),
            self.model.decoder(&shape, 0, k),
        )
        .with_flow(self.model.flow())
        .init(device);
        GenerativeModel::init(
            LatentModel::Vae(vae),
            &self.objective,
            None,
            shape.features(),
            device,
        )
    }
}

impl Kind for Vae {
    const NAME: &'static str = "vae";
    const SUMMARY_TERMS: &'static [&'static str] = &["loss", "elbo", "log_lik", "kl", "bound"];
    type Model = GenerativeModel;
    type Objective = ElboObjective;
    type Eval = EvalReport;

    fn from_tables(model: toml::Table, objective: toml::Table) -> Result<Self, SectionError> {
        if objective.contains_key("residual") {
            return Err(SectionError {
                key: "objective.residual".into(),
                message: "`residual` is not a key of [objective] for kind = \"vae\": a PDE residual needs the parameters of each sample; use kind = \"cvae\" (a surrogate parameters → solution) or \"pddlvm\"".into(),
            });
        }
        let (model, objective) = kind_sections(model, objective, Self::NAME)?;
        Ok(Self { model, objective })
    }

    fn to_tables(&self) -> (toml::Table, toml::Table) {
        (to_table(&self.model), to_table(&self.objective))
    }

    fn validate(&self, _common: &Common) -> Result<(), TrainError> {
        self.model.validate(self.objective.monte_carlo_kl())?;
        self.objective
            .validate(self.model.posterior == PosteriorName::Flow)
    }

    fn x_scaling(&self) -> XScaling {
        self.objective.x_scaling()
    }

    fn check_data(&self, _common: &Common, data: &TrainData) -> Result<(), TrainError> {
        self.objective.check_data(&self.model, data, 0)
    }

    fn build(
        &self,
        common: &Common,
        data: &RunData,
        device: &Device,
    ) -> Result<(GenerativeModel, ElboObjective), TrainError> {
        Ok((
            self.model(data, device),
            self.objective.objective(common.seed, None),
        ))
    }

    fn plot(&self, run: &Loaded<Self>) -> Result<(), TrainError> {
        self.trained(run).plot(&run.dir.join("samples.png"))
    }

    fn evaluate(&self, run: &Loaded<Self>) -> Result<EvalReport, TrainError> {
        Ok(self.trained(run).evaluate(run.epochs_done, false))
    }

    fn print_eval(&self, eval: &EvalReport, dir: &Path) {
        print_eval(eval, dir);
    }

    fn sample(&self, run: &Loaded<Self>, request: &SampleRequest) -> Result<String, TrainError> {
        request.no_condition("this model is unconditional")?;
        self.trained(run)
            .sample(request.n, None, request.noise, &request.out)
    }
}

#[cfg(test)]
mod tests {
    use crate::tests_common::*;

    #[test]
    fn keys_of_other_kinds_are_rejected_naming_the_key_and_the_kind() {
        let base = "[data]\nkind = \"heat1d\"\nn = 40\ngrid = 8\n[model]\nkind = \"vae\"\n";
        rejects(
            &format!("{base}aux_dim = 2\n"),
            &["`aux_dim`", "[model]", "vae", "latent_dim"],
        );
        rejects(
            &format!("{base}[objective]\ndata_likelihood = false\n"),
            &["`data_likelihood`", "[objective]", "vae", "beta"],
        );
        rejects(
            &format!("{base}[objective.residual]\nsigma = 0.1\n"),
            &["`residual`", "vae"],
        );
        rejects(&format!("{base}prior = \"learned\"\n"), &["`prior`", "vae"]);
    }

    #[test]
    fn one_step_changes_the_weights_and_eval_matches_a_reload() {
        let config = "seed = 3\n[data]\nkind = \"heat1d\"\nn = 64\ngrid = 8\nmodes = 3\n[model]\nkind = \"vae\"\nlatent_dim = 3\nhidden = [16]\n[training]\nepochs = 2\nbatch_size = 16\n";
        one_step_changes_the_weights(config);
        eval_of_a_trained_run_is_reproducible(config, "test_elbo");
    }

    /// A tiny heat1d VAE with `objective` lines, trained for `epochs`; its metrics.csv columns.
    fn trained(name: &str, epochs: usize, objective: &str) -> (Metrics, serde_json::Value) {
        let config = format!(
            "seed = 5\n[data]\nkind = \"heat1d\"\nn = 256\ngrid = 16\nmodes = 4\n[model]\nlatent_dim = 4\nhidden = [32, 32]\n[objective]\n{objective}[optimizer]\nlr = 0.003\n[training]\nepochs = {epochs}\nbatch_size = 32\n"
        );
        train_quietly(name, &config)
    }

    #[test]
    fn importance_weighted_bounds_train_and_order_as_theory_says() {
        // For the same k samples a Rényi-α bound (α < 1, IWAE: α = 0) is at least their ELBO
        // (Jensen's inequality); training must raise it.
        for (name, line) in [
            ("iwae", "bound = \"iwae\"\nn_particles = 8\n"),
            ("renyi", "bound = \"renyi\"\nalpha = 0.5\nn_particles = 8\n"),
        ] {
            let (m, eval) = trained(name, 6, line);
            let (bound, elbo) = (m.col("test_bound"), m.col("test_elbo"));
            for (b, e) in bound.iter().zip(&elbo) {
                assert!(b >= e, "{name}: bound {b} < its ELBO {e}");
            }
            assert!(
                bound[5] > bound[0] + 5.0,
                "{name}: the test bound did not rise: {bound:?}"
            );
            let ess = m.col("train_ess");
            assert!(ess.iter().all(|e| *e >= 1.0 && *e <= 8.0), "{ess:?}");
            // The eval IWAE-64 bound is at least the trained k = 8 bound (more samples).
            let iwae64 = eval["test_iwae64"].as_f64().unwrap();
            assert!(iwae64 > bound[5] - 1.0, "{name}: {iwae64} vs {}", bound[5]);
        }
    }

    #[test]
    fn free_bits_keep_a_strongly_regularised_vae_from_collapsing() {
        // β = 100 squeezes KL(q‖p) toward 0; with free bits λ = 0.5 nats per dimension the KL
        // term gives no pressure below λ, so the encoder spends up to its floor d·λ = 2 nats
        // where they buy likelihood. (Measured with the learned σ's gain: 0.015 without, 1.57
        // with; 1.32 and 2.32 when σ barely moved from its start.)
        let (collapsed, _) = trained("beta100", 6, "beta = 100.0\n");
        let (kept, _) = trained("freebits", 6, "beta = 100.0\nfree_bits = 0.5\n");
        let (a, b) = (collapsed.last("test_kl"), kept.last("test_kl"));
        assert!(
            b > 0.6 * 4.0 * 0.5 && b > 10.0 * a,
            "KL with free bits {b} vs without {a}"
        );
    }

    #[test]
    fn the_score_function_estimator_trains_and_the_mmd_term_pulls_q_to_the_prior() {
        // REINFORCE gradients of the likelihood term still raise the ELBO (more slowly than the
        // reparameterised ones).
        let (m, _) = trained("sf", 6, "estimator = \"score-function\"\nn_particles = 4\n");
        let elbo = m.col("test_elbo");
        assert!(elbo[5] > elbo[0] + 5.0, "{elbo:?}");
        // β = 0 leaves the aggregate posterior free to drift from the prior; the MMD term
        // λ·MMD²(q(z), p(z)) with λ = 1000 pulls it back (InfoVAE). Measured: 0.028 vs 0.059.
        let (with, _) = trained("mmd", 6, "beta = 0.0\nmmd_weight = 1000.0\n");
        let (without, _) = trained("nommd", 6, "beta = 0.0\nmmd_weight = 1e-9\n");
        let (a, b) = (with.last("test_mmd"), without.last("test_mmd"));
        assert!(a < 0.7 * b, "MMD² with the term {a} vs without {b}");
    }
}
