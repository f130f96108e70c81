//! Checks every kind's unit tests run on a tiny config of that kind: bad keys are rejected in
//! one line, one optimiser step changes the weights, `varphi eval` of a trained run is the same
//! from the library and after a fresh reload, and a resumed run reproduces an uninterrupted one.

use crate::experiment::TrainConfig;
use crate::kind::{Kind, KindVisitor};
use crate::session::{self, TrainOptions};
use crate::trainer::Objective;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use std::path::{Path, PathBuf};

/// Tests that initialise models hold this lock: model initialisation draws from the device's
/// RNG after `device.seed`, and tests of one binary run in parallel threads that share it.
static DEVICE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn device_rng() -> std::sync::MutexGuard<'static, ()> {
    DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// The config must fail to parse or validate with a one-line message containing every needle.
pub fn rejects(config: &str, needles: &[&str]) {
    let e = TrainConfig::from_toml(config, Path::new("t.toml"))
        .expect_err("the config must be rejected")
        .to_string();
    assert!(!e.contains('\n'), "multi-line error: {e}");
    for n in needles {
        assert!(e.contains(n), "error lacks {n:?}: {e}");
    }
}

/// A fresh temporary folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("varphi-unit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn parse(config: &str) -> TrainConfig {
    TrainConfig::from_toml(config, Path::new("t.toml")).unwrap()
}

/// Sum of squares of every float parameter, a fingerprint of the weights.
fn weight_norm<M: Module>(model: &M) -> f64 {
    struct Sum(f64);
    impl ModuleVisitor for Sum {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0 += p.val().powi_scalar(2).sum().into_scalar::<f64>();
        }
    }
    let mut s = Sum(0.0);
    model.visit(&mut s);
    s.0
}

struct StepOf<'a> {
    common: &'a crate::config::Common,
}

impl KindVisitor for StepOf<'_> {
    type Output = (f64, f64, Vec<(&'static str, f64)>);
    fn visit<K: Kind>(self, kind: K) -> Self::Output {
        let common = self.common;
        let data = crate::data::prepare(common, kind.x_scaling(), Path::new(".")).unwrap();
        kind.check_data(common, &data).unwrap();
        let device = Device::flex().autodiff();
        device.seed(common.seed);
        let (model, objective) = kind.build(common, &data.run, &device).unwrap();
        let before = weight_norm(&model);
        let idx: Vec<usize> = (0..common.training.batch_size.min(data.train.len())).collect();
        let (x, cond) = data.train.batch(&idx, &device);
        let out = objective.step(&model, x, cond, 0, 0);
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        let mut optim = burn::optim::AdamConfig::new().init();
        let model = optim.step(1e-2, model, grads);
        (before, weight_norm(&model), out.terms)
    }
}

/// The logged terms of the first training step of `config` (first batch, step 0).
pub fn first_step_terms(config: &str) -> Vec<(&'static str, f64)> {
    let _rng = device_rng();
    let c = parse(config);
    c.kind.clone().visit(StepOf { common: &c.common }).2
}

/// Term `name` of [`first_step_terms`].
pub fn term(terms: &[(&'static str, f64)], name: &str) -> f64 {
    terms
        .iter()
        .find(|(k, _)| *k == name)
        .unwrap_or_else(|| panic!("no term {name} in {terms:?}"))
        .1
}

/// Build the kind of `config`, take one Adam step on one batch: the loss is finite and the
/// weights change.
pub fn one_step_changes_the_weights(config: &str) {
    let _rng = device_rng();
    let c = parse(config);
    let (before, after, terms) = c.kind.clone().visit(StepOf { common: &c.common });
    let loss = term(&terms, "loss");
    assert!(loss.is_finite(), "loss {loss}");
    assert!(
        (after - before).abs() > 1e-9 * before.abs().max(1.0),
        "one step left the weights at {before}"
    );
}

fn quiet(out: &Path) -> TrainOptions {
    TrainOptions {
        out: Some(out.to_path_buf()),
        quiet: true,
        no_plots: true,
        ..Default::default()
    }
}

/// Train `config` (its `training.epochs`), evaluate it twice (two fresh loads): the reports are
/// identical, contain `key` and say how many epochs were trained. Then resume a copy trained
/// for half the epochs: its evaluation equals the uninterrupted run's.
pub fn eval_of_a_trained_run_is_reproducible(config: &str, key: &str) {
    let _rng = device_rng();
    let c = parse(config);
    let name = format!("{}-{}", c.kind.name(), key);
    let dir = temp_dir(&name);
    let path = dir.join("c.toml");
    std::fs::write(&path, config).unwrap();
    let run = dir.join("run");
    session::train(Some(&path), &quiet(&run)).unwrap();
    let a = session::evaluate(&run, None, false, false).unwrap();
    let b = session::evaluate(&run, None, false, false).unwrap();
    assert_eq!(a, b);
    assert!(a.get(key).is_some(), "eval.json lacks {key}: {a}");
    let epochs = c.common.training.epochs;
    assert_eq!(a["epochs"], serde_json::json!(epochs));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    // serde_json's default float parser may round the last bit of a printed f64.
    assert_json_close(&saved, &a, 1e-12, "eval.json as written");

    // Resume: train half, then continue with the full config.
    let half = config.replace(
        &format!("epochs = {epochs}\n"),
        &format!("epochs = {}\n", epochs / 2),
    );
    assert_ne!(half, config, "the test config must set training.epochs");
    let half_path = dir.join("half.toml");
    std::fs::write(&half_path, half).unwrap();
    let resumed = dir.join("resumed");
    session::train(Some(&half_path), &quiet(&resumed)).unwrap();
    let opts = TrainOptions {
        resume: Some(resumed.clone()),
        ..quiet(&resumed)
    };
    session::train(Some(&path), &opts).unwrap();
    let r = session::evaluate(&resumed, None, false, false).unwrap();
    // Equal up to the summation order of the CPU backend's parallel reductions, which can
    // shift by an ulp when tests share the cores (separate processes agree bit for bit).
    assert_json_close(
        &r,
        &a,
        1e-6,
        "a resumed run must evaluate like the uninterrupted one",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The columns of a run's metrics.csv.
pub struct Metrics {
    header: Vec<String>,
    rows: Vec<Vec<f64>>,
}

impl Metrics {
    /// Read `run/metrics.csv`.
    pub fn read(run: &Path) -> Self {
        let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
        let mut lines = text.lines();
        let header = lines
            .next()
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect();
        let rows = lines
            .map(|l| {
                l.split(',')
                    .map(|v| v.parse().unwrap_or(f64::NAN))
                    .collect()
            })
            .collect();
        Self { header, rows }
    }

    /// Column `name`, one value per epoch.
    pub fn col(&self, name: &str) -> Vec<f64> {
        let c = self
            .header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.header));
        self.rows.iter().map(|r| r[c]).collect()
    }

    /// Last value of column `name`.
    pub fn last(&self, name: &str) -> f64 {
        *self.col(name).last().unwrap()
    }
}

/// Train `config` quietly into a fresh folder and evaluate it: its metrics and eval.json.
pub fn train_quietly(name: &str, config: &str) -> (Metrics, serde_json::Value) {
    let _rng = device_rng();
    let dir = temp_dir(name);
    let path = dir.join("c.toml");
    std::fs::write(&path, config).unwrap();
    let run = dir.join("run");
    session::train(Some(&path), &quiet(&run)).unwrap();
    let eval = session::evaluate(&run, None, false, false).unwrap();
    let m = Metrics::read(&run);
    let _ = std::fs::remove_dir_all(&dir);
    (m, eval)
}

/// Every number of `a` within relative `rtol` of the same entry of `b`; everything else equal.
pub fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, rtol: f64, what: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= rtol * x.abs().max(y.abs()),
                "{what}: {x} vs {y}"
            );
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{what}"
            );
            for (k, v) in x {
                assert_json_close(v, &y[k], rtol, &format!("{what} [{k}]"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{what}");
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                assert_json_close(u, v, rtol, &format!("{what} [{i}]"));
            }
        }
        _ => assert_eq!(a, b, "{what}"),
    }
}
