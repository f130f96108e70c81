//! docs/configs.md lists every key of every kind with its default; this test checks it against
//! the types. Each documented table's keys must equal the keys the type accepts (read from the
//! one-line error a probe key `__probe__` gets in that table), and each documented default must
//! equal the value a minimal config of the kind serialises to (`—` where the key has none: it
//! is required, optional, or a sub-table documented on its own).

use crate::experiment::TrainConfig;
use crate::kinds::KindSection;
use std::collections::BTreeMap;
use std::path::Path;

/// A minimal valid config of each kind (the keys without defaults set).
fn minimal(kind: &str) -> String {
    let (data, objective) = match kind {
        "vae" => ("kind = \"heat1d\"", ""),
        "cvae" | "pddlvm" => (
            "kind = \"poisson1d\"",
            "[objective.residual]\nsigma = 0.1\n",
        ),
        "npe" => ("kind = \"heat\"", "[objective.observations]\nsigma = 0.1\n"),
        "boltzmann" => ("kind = \"darcy\"\ngrid = 5", "[objective]\nbeta = 10.0\n"),
        "pinn" => ("kind = \"poisson1d\"", ""),
        "phys-vae" => (
            "kind = \"pendulum\"",
            "[objective.observations]\nsigma = 0.1\n",
        ),
        "dvae" => ("kind = \"advection-video\"", ""),
        other => panic!("add a minimal config of kind {other} to this test"),
    };
    format!("[data]\n{data}\n[model]\nkind = \"{kind}\"\n{objective}")
}

/// The keys the type of table `path` (`model`, `objective.residual`, `training`, or `` for the
/// top level) accepts in a config of kind `kind`.
fn accepted_keys(kind: &str, path: &str) -> Vec<String> {
    let mut table: toml::Table = toml::from_str(&minimal(kind)).unwrap();
    let parts: Vec<&str> = if path.is_empty() {
        vec![]
    } else {
        path.split('.').collect()
    };
    // Walk (creating tables; an array of tables gets one element) and plant the probe.
    let mut t = &mut table;
    for (i, p) in parts.iter().enumerate() {
        let array = parts.len() == i + 1 && *p == "stages";
        if array {
            let mut probe = toml::Table::new();
            probe.insert("__probe__".into(), toml::Value::Integer(0));
            t.insert(
                p.to_string(),
                toml::Value::Array(vec![toml::Value::Table(probe)]),
            );
            t = match t.get_mut(*p) {
                Some(toml::Value::Array(a)) => match &mut a[0] {
                    toml::Value::Table(t) => t,
                    _ => unreachable!(),
                },
                _ => unreachable!(),
            };
            break;
        }
        t = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap();
    }
    t.insert("__probe__".into(), toml::Value::Integer(0));
    let text = toml::to_string(&table).unwrap();
    let e = TrainConfig::from_toml(&text, Path::new("probe.toml"))
        .unwrap_err()
        .to_string();
    let list = e
        .split("its keys: ")
        .nth(1)
        .unwrap_or_else(|| panic!("probe of [{path}] for {kind}: {e}"));
    let list = list.trim_end_matches(|c| c == ')' || c == '.');
    let list = list.split(')').next().unwrap();
    let mut keys: Vec<String> = list.split(", ").map(str::to_string).collect();
    keys.sort();
    keys
}

/// The serialised value of `path.key` in the minimal config of `kind`, as the doc writes it:
/// `` `value` ``, or `—` for none, a sub-table or an array of tables.
fn default_of(config: &toml::Table, path: &str, key: &str) -> String {
    let mut t = Some(config);
    for p in path.split('.').filter(|p| !p.is_empty()) {
        t = t.and_then(|t| t.get(p)).and_then(|v| v.as_table());
    }
    match t.and_then(|t| t.get(key)) {
        None | Some(toml::Value::Table(_)) => "—".into(),
        Some(toml::Value::Array(a)) if a.first().is_none_or(|v| v.is_table()) => "—".into(),
        Some(v) => format!("`{v}`"),
    }
}

/// The minimal config of `kind` as it serialises, with its defaults filled in. An optional
/// sub-table that the minimal config leaves out (`[model.fno]`) is planted empty first, so its
/// keys serialise with their defaults too (unless the empty table is not valid on its own).
fn serialised_defaults(kind: &str, path: &str) -> toml::Table {
    let parse = |text: &str| {
        TrainConfig::from_toml(text, Path::new("m.toml"))
            .ok()
            .map(|c| toml::from_str::<toml::Table>(&c.to_toml()).unwrap())
    };
    let mut planted: toml::Table = toml::from_str(&minimal(kind)).unwrap();
    let mut t = &mut planted;
    for p in path.split('.').filter(|p| !p.is_empty() && *p != "stages") {
        t = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap();
    }
    parse(&toml::to_string(&planted).unwrap())
        .or_else(|| parse(&minimal(kind)))
        .unwrap()
}

/// `(kind, table path) → [(key, default)]` as docs/configs.md writes them.
fn documented() -> BTreeMap<(String, String), Vec<(String, String)>> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configs.md"),
    )
    .unwrap();
    let mut out: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    let (mut kind, mut table) = (String::new(), None::<String>);
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            kind = h
                .split('"')
                .nth(1)
                .map(str::to_string)
                .unwrap_or_else(|| "every kind".into());
            table = None;
        } else if let Some(h) = line.strip_prefix("### ") {
            let h = h.trim().trim_matches('`');
            table = Some(
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .replace("top level", ""),
            );
        } else if let (Some(t), Some(row)) = (&table, line.strip_prefix("| `")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let key = cells[0].trim_end_matches('`').to_string();
            let default = cells.get(1).map_or("", |c| c.trim()).to_string();
            out.entry((kind.clone(), t.clone()))
                .or_default()
                .push((key, default));
        }
    }
    out
}

#[test]
fn docs_configs_lists_every_key_of_every_kind_with_its_default() {
    let doc = documented();
    let mut failures = Vec::new();
    let mut covered = 0;
    for ((kind, path), rows) in &doc {
        let probe_kind = if kind == "every kind" {
            "vae"
        } else {
            kind.as_str()
        };
        let mut keys: Vec<String> = rows.iter().map(|(k, _)| k.clone()).collect();
        keys.sort();
        let want = accepted_keys(probe_kind, path);
        if keys != want {
            failures.push(format!(
                "{kind} [{path}]: docs list {keys:?}, the type accepts {want:?}"
            ));
        }
        let table = serialised_defaults(probe_kind, path);
        // Keys the minimal config sets itself are the required ones: documented as `—`.
        let given: toml::Table = toml::from_str(&minimal(probe_kind)).unwrap();
        for (key, default) in rows {
            let expected = if key == "kind" && path == "model" {
                format!("`\"{kind}\"`")
            } else if default_of(&given, path, key) != "—" {
                "—".to_string()
            } else {
                default_of(&table, path, key)
            };
            if *default != expected {
                failures.push(format!(
                    "{kind} [{path}] {key}: docs say {default}, the default is {expected}"
                ));
            }
        }
        covered += 1;
    }
    // Every kind has its [model] and [objective] documented.
    for name in KindSection::NAMES {
        for t in ["model", "objective"] {
            if !doc.contains_key(&(name.to_string(), t.to_string())) {
                failures.push(format!(
                    "docs/configs.md has no [{t}] table for kind \"{name}\""
                ));
            }
        }
    }
    assert!(covered >= 15, "only {covered} tables documented");
    assert!(
        failures.is_empty(),
        "docs/configs.md is out of date:\n{}",
        failures.join("\n")
    );
}
