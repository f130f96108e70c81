//! The experiment config: the shared sections ([`Common`]) and the kind's own `[model]` and
//! `[objective]` ([`KindSection`]), parsed once, in two steps: the TOML text to a table, then
//! each part to its type, so a key of another kind is an unknown key naming the kind. Saved as
//! `config.toml` in every run directory.

use crate::config::{Common, SectionError, line_of, parse_toml, read_config, section, to_table};
use crate::error::TrainError;
use crate::kinds::KindSection;
use std::path::Path;

/// A whole experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The sections every kind shares.
    pub common: Common,
    /// The kind's `[model]` and `[objective]`.
    pub kind: KindSection,
}

/// Keys of the previous (single flat) schema that moved, with where they went: an old config
/// gets this one line instead of an unknown-key error.
fn migration_hint(table: &toml::Table, kind: &str) -> Option<(String, String)> {
    let sub = |a: &str, b: &str| {
        table
            .get(a)
            .and_then(|v| v.as_table())
            .is_some_and(|t| t.contains_key(b))
    };
    if sub("objective", "physvae") {
        let message = if kind == "phys-vae" {
            "this config uses the old schema: the keys of [objective.physvae] (aux_weight, augmentation, substeps, uq_alpha, surrogate, learn_noise, correlated_noise) are now keys of [objective] itself under kind = \"phys-vae\"; move them there (docs/configs.md)".to_string()
        } else {
            // Old run directories saved this table for every kind.
            format!(
                "this config was written before the per-kind schema ([objective.physvae] is gone, and kind = \"{kind}\" never used it): delete that table, or, for a run directory, train the run again (docs/configs.md)"
            )
        };
        return Some(("objective.physvae".into(), message));
    }
    if sub("training", "stages") {
        return Some((
            "training.stages".into(),
            "this config uses the old schema: [[training.stages]] moved to [[objective.stages]] (stages are part of a pddlvm objective); rename the table (docs/configs.md)".into(),
        ));
    }
    if kind == "pddlvm" && (sub("model", "encoder") || sub("model", "decoder")) {
        return Some((
            "model.decoder".into(),
            "this config uses the old schema: a pddlvm model names its networks by role: model.decoder is now model.surrogate (q(u|z)) and model.encoder is model.inverse (p(z|u)) (docs/configs.md)".into(),
        ));
    }
    None
}

impl TrainConfig {
    /// Parse and validate TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, TrainError> {
        let mut table: toml::Table = parse_toml(text, origin)?;
        let fail = |e: SectionError| {
            let (table_path, key) = match e.key.rsplit_once('.') {
                Some((t, k)) => (t.to_string(), k.to_string()),
                None => (String::new(), e.key.clone()),
            };
            let line = line_of(text, &table_path, &key)
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            TrainError::Config {
                path: origin.to_path_buf(),
                message: format!("{}{line}", e.message),
            }
        };
        let mut model = match table.remove("model") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => {
                return Err(fail(SectionError {
                    key: "model".into(),
                    message: "[model] must be a table".into(),
                }));
            }
            None => {
                return Err(fail(SectionError {
                    key: "model".into(),
                    message: format!(
                        "missing [model] (with kind = one of {})",
                        KindSection::NAMES.join(", ")
                    ),
                }));
            }
        };
        let kind = match model.remove("kind") {
            None => "vae".to_string(),
            Some(toml::Value::String(s)) => s,
            Some(other) => {
                return Err(fail(SectionError {
                    key: "model.kind".into(),
                    message: format!("model.kind must be a string, got {other}"),
                }));
            }
        };
        let objective = match table.remove("objective") {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(_) => {
                return Err(fail(SectionError {
                    key: "objective".into(),
                    message: "[objective] must be a table".into(),
                }));
            }
        };
        let mut probe = table.clone();
        probe.insert("model".into(), toml::Value::Table(model.clone()));
        probe.insert("objective".into(), toml::Value::Table(objective.clone()));
        if let Some((key, message)) = migration_hint(&probe, &kind) {
            return Err(fail(SectionError { key, message }));
        }
        let common: Common = section(table, "", "", &[]).map_err(fail)?;
        let kind = KindSection::parse(&kind, model, objective).map_err(fail)?;
        let config = Self { common, kind };
        config.validate()?;
        Ok(config)
    }

    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        Self::from_toml(&read_config(path)?, path)
    }

    /// All checks that need no data.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.common.validate()?;
        self.kind.validate(&self.common)
    }

    /// Serialise to TOML (defaults filled in).
    pub fn to_toml(&self) -> String {
        let mut table = to_table(&self.common);
        let (mut model, objective) = self.kind.to_tables();
        model.insert("kind".into(), toml::Value::String(self.kind.name().into()));
        table.insert("model".into(), toml::Value::Table(model));
        if !objective.is_empty() {
            table.insert("objective".into(), toml::Value::Table(objective));
        }
        toml::to_string_pretty(&table).expect("config serialises")
    }

    /// Shrink the run to about `epochs` (for `--quick`), scaling kind-specific epoch counts
    /// (stages) in proportion.
    pub fn shrink_to(&mut self, epochs: usize) {
        let t = &mut self.common.training;
        t.epochs = self.kind.shrink_epochs(t.epochs, epochs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
seed = 1
[data]
kind = "heat1d"
n = 50
grid = 16
[model]
latent_dim = 4
"#;

    fn parse(extra: &str) -> Result<TrainConfig, TrainError> {
        TrainConfig::from_toml(&format!("{BASE}{extra}"), Path::new("test.toml"))
    }

    #[test]
    fn defaults_fill_in_and_round_trip() {
        let c = parse("").unwrap();
        assert_eq!(c.common.training.epochs, 20);
        assert_eq!(c.kind.name(), "vae");
        let again = TrainConfig::from_toml(&c.to_toml(), Path::new("x")).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_key_and_its_line_named() {
        let e = parse("[optimizer]\nlearning_rate = 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("learning_rate") && e.contains("[optimizer]") && !e.contains('\n'),
            "{e}"
        );
        assert!(e.contains("line 10"), "{e}");
        let e = TrainConfig::from_toml(
            "[data]\nkind = \"heat1d\"\ngird = 3\n[model]\n",
            Path::new("t"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("gird"), "{e}");
        let e = parse("[model]\n").unwrap_err().to_string();
        assert!(e.contains("model") || e.contains("duplicate"), "{e}");
        let e = TrainConfig::from_toml("[data]\nkind = \"heat1d\"\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing [model]") && e.contains("pddlvm"), "{e}");
        let e = TrainConfig::from_toml(&format!("bogus = 1\n{BASE}"), Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`bogus`") && e.contains("top level"), "{e}");
    }

    #[test]
    fn an_unknown_kind_lists_the_kinds() {
        let e = TrainConfig::from_toml(
            "[data]\nkind = \"heat1d\"\n[model]\nkind = \"gan\"\n",
            Path::new("t"),
        )
        .unwrap_err()
        .to_string();
        for k in KindSection::NAMES {
            assert!(e.contains(k), "{e}");
        }
    }

    #[test]
    fn out_of_range_shared_values_name_the_key() {
        let e = parse("[optimizer]\nlr = -0.1\n").unwrap_err().to_string();
        assert!(e.contains("optimizer.lr"), "{e}");
        let e = parse("[training]\nepochs = 0\n").unwrap_err().to_string();
        assert!(e.contains("training.epochs"), "{e}");
        let e = parse("[split]\ntest_fraction = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("split.test_fraction"), "{e}");
    }

    #[test]
    fn old_style_configs_get_a_migration_hint() {
        let physvae = "[data]\nkind = \"pendulum\"\nn = 8\n[model]\nkind = \"phys-vae\"\n[objective.observations]\nsigma = 0.01\n[objective.physvae]\nuq_alpha = 0.1\n";
        let e = TrainConfig::from_toml(physvae, Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("old schema") && e.contains("[objective] itself") && !e.contains('\n'),
            "{e}"
        );
        // An old run directory's config.toml held [objective.physvae] for every kind.
        let old_run = "[data]\nkind = \"heat1d\"\n[model]\nkind = \"vae\"\naux_dim = 2\n[objective.physvae]\naugmentation = 1.0\n";
        let e = TrainConfig::from_toml(old_run, Path::new("run/config.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("per-kind schema") && e.contains("train the run again"),
            "{e}"
        );
        let staged = "[data]\nkind = \"poisson1d\"\nn = 8\n[model]\nkind = \"pddlvm\"\n[objective.residual]\nsigma = 0.1\n[training]\nepochs = 2\n[[training.stages]]\nmode = \"physics\"\nepochs = 2\n";
        let e = TrainConfig::from_toml(staged, Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[[objective.stages]]"), "{e}");
        let roles = "[data]\nkind = \"poisson1d\"\nn = 8\n[model]\nkind = \"pddlvm\"\ndecoder = \"mlp\"\n[objective.residual]\nsigma = 0.1\n";
        let e = TrainConfig::from_toml(roles, Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.surrogate"), "{e}");
    }
}
