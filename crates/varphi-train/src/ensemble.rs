//! Deep ensembles (`[training] ensemble = K`): `K` members trained with seeds `seed, seed + 1,
//! …, seed + K − 1` on the same data (`data_seed` fixed to the config's), each a complete run in
//! `RUN/members/k`; the ensemble's predictive is their equal-weight mixture
//!
//! ```text
//! p(u | z) = (1/K) Σ_k p_k(u | z),   sampled as S draws of every member (K·S in all).
//! ```
//!
//! `varphi train`, `eval` and `predict` go through here and hand single runs (`K = 1`) to
//! [`crate::session`] unchanged; `eval` of an ensemble evaluates every member as a run of its
//! own (its `eval.json`) and scores each member's predictive and the mixture on the same test
//! cases (`RUN/eval.json`, `RUN/calibration.png`, `RUN/bands.png`).

use crate::backend::BackendKind;
use crate::calibration::{Role, Scorer};
use crate::config::Common;
use crate::error::{TrainError, io_err};
use crate::experiment::TrainConfig;
use crate::kind::{Kind, KindVisitor, PredictRequest};
use crate::plots;
use crate::rundir;
use crate::session::{self, PredictReport, Predicted, TrainOptions, TrainSummary};
use crate::uq::UqScores;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Test cases the mixture is scored on (the first ones of the test split).
const MAX_CASES: usize = 200;
/// Predictive samples per member and case.
const SAMPLES: usize = 64;

/// The directory of member `k` of ensemble run `dir`.
pub fn member_dir(dir: &Path, k: usize) -> PathBuf {
    dir.join("members").join(k.to_string())
}

/// The config of member `k`: one run, seed `seed + k`, the data of the ensemble's seed.
pub fn member_config(config: &TrainConfig, k: usize) -> TrainConfig {
    let mut m = config.clone();
    m.common.data_seed = Some(config.common.data_seed());
    m.common.seed = config.common.seed.wrapping_add(k as u64);
    m.common.training.ensemble = 1;
    m
}

/// Whether a kind's `predict` takes the test split's conditions ([`Kind::PREDICTS_TEST_SAMPLES`]).
struct PredictsTestSamples;

impl KindVisitor for PredictsTestSamples {
    type Output = bool;
    fn visit<K: Kind>(self, _kind: K) -> bool {
        K::PREDICTS_TEST_SAMPLES
    }
}

/// The number of members of run `dir` (1 for a single run).
fn members(dir: &Path) -> Result<(TrainConfig, usize), TrainError> {
    let config = rundir::config(dir)?;
    let k = config.common.training.ensemble;
    Ok((config, k))
}

/// `varphi train`: a single run, or the `K` members of an ensemble one after the other (each
/// resumed where it stopped with `--resume RUN`).
pub fn train(config_path: Option<&Path>, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let (config, run_dir, resuming) = session::prepare(config_path, opts)?;
    let k = config.common.training.ensemble;
    if let Some((_, n)) = opts.shard {
        if k <= 1 {
            return Err(TrainError::Invalid {
                key: "shard".into(),
                message: "--shard splits the members of an ensemble ([training] ensemble = K > 1); this config trains one run: use mpirun to split its batches".into(),
            });
        }
        if opts.out.is_none() && opts.resume.is_none() {
            return Err(TrainError::Invalid {
                key: "shard".into(),
                message: "--shard needs --out DIR: every task of the job array writes its members into the same ensemble folder".into(),
            });
        }
        if crate::cluster::world().size() > 1 {
            return Err(TrainError::Invalid {
                key: "shard".into(),
                message:
                    "--shard under mpirun: the ranks split the members themselves; drop --shard"
                        .into(),
            });
        }
        if n > k {
            return Err(TrainError::Invalid {
                key: "shard".into(),
                message: format!(
                    "{n} parts of {k} members leave parts without a member: use at most {k}"
                ),
            });
        }
    }
    if k <= 1 {
        return session::train_resolved(config, run_dir, resuming, opts);
    }
    if !config.kind.clone().visit(PredictsTestSamples) {
        return Err(TrainError::Invalid {
            key: "training.ensemble".into(),
            message: format!(
                "ensembles of kind \"{}\" are not supported yet: the mixture is scored on the members' predictives of the test split, which kinds cvae, pddlvm and boltzmann have; train single runs with different seeds instead",
                config.kind.name()
            ),
        });
    }
    // Under mpirun the members are split over the ranks (member m on rank m mod N), each
    // trained by its rank alone; rank 0 writes the ensemble's own files.
    let world = crate::cluster::world();
    let (rank, ranks) = (world.rank(), world.size());
    let run_dir = std::path::PathBuf::from(crate::parallel::broadcast_string(
        world.as_ref(),
        &run_dir.to_string_lossy(),
    ));
    let top = run_dir.join("config.toml");
    let created = if rank == 0 {
        ensemble_dir(&run_dir, &top, &config, (resuming, opts.shard.is_some()))
    } else {
        Ok(())
    };
    let failed = crate::parallel::broadcast_string(
        world.as_ref(),
        &created
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    );
    created?;
    if !failed.is_empty() {
        return Err(TrainError::Parallel(format!(
            "rank 0 could not start the ensemble: {failed}"
        )));
    }
    let mut summaries = Vec::with_capacity(k);
    let opts = &TrainOptions {
        alone: ranks > 1,
        quiet: opts.quiet || rank != 0,
        ..opts.clone()
    };
    let (part, parts) = opts.shard.unwrap_or((rank, ranks));
    for m in (0..k).filter(|m| m % parts == part) {
        let dir = member_dir(&run_dir, m);
        let started = crate::checkpoint::find(&dir).is_ok();
        let member = if started {
            rundir::config(&dir)?
        } else {
            member_config(&config, m)
        };
        if !opts.quiet {
            println!(
                "ensemble member {} of {k} (seed {}) in {}{}{}",
                m + 1,
                member.common.seed,
                dir.display(),
                if started { ", resumed" } else { "" },
                if ranks > 1 {
                    format!(" (rank 0 of {ranks}; the others train theirs)")
                } else if let Some((i, n)) = opts.shard {
                    format!(" (part {i}/{n} of a job array)")
                } else {
                    String::new()
                }
            );
        }
        let s = session::train_resolved(member, dir, started, opts)?;
        if !opts.quiet {
            s.print();
        }
        summaries.push(s);
    }
    if let Some((i, n)) = opts.shard
        && !opts.quiet
    {
        println!(
            "part {i}/{n} of the ensemble in {} done; once every part is, `varphi eval {}` scores the mixture",
            run_dir.display(),
            run_dir.display()
        );
    }
    if ranks > 1 {
        // Every member's final terms on rank 0 (the wait for the others' members, too).
        let mine: Vec<(Vec<f64>, Vec<f64>)> = summaries
            .iter()
            .map(|s| {
                (
                    s.last_train.iter().map(|t| t.1).collect(),
                    s.last_test.iter().map(|t| t.1).collect(),
                )
            })
            .collect();
        let gathered = world.gather(&serde_json::to_vec(&mine).expect("json"));
        if rank != 0 {
            return Ok(summaries.pop().unwrap_or(TrainSummary {
                run_dir,
                epochs_done: 0,
                last_train: Vec::new(),
                last_test: Vec::new(),
                device: world.describe(),
                stopped: None,
                best: None,
                members: 0,
            }));
        }
        let template = summaries[0].clone();
        summaries = gathered
            .iter()
            .flat_map(|b| {
                serde_json::from_slice::<Vec<(Vec<f64>, Vec<f64>)>>(b).unwrap_or_default()
            })
            .map(|(train, test)| TrainSummary {
                last_train: template
                    .last_train
                    .iter()
                    .zip(train)
                    .map(|(t, v)| (t.0, v))
                    .collect(),
                last_test: template
                    .last_test
                    .iter()
                    .zip(test)
                    .map(|(t, v)| (t.0, v))
                    .collect(),
                ..template.clone()
            })
            .collect();
    }
    let mean_of = |pick: fn(&TrainSummary) -> &Vec<(&'static str, f64)>| {
        let first = pick(&summaries[0]);
        first
            .iter()
            .map(|(name, _)| {
                let v: Vec<f64> = summaries
                    .iter()
                    .filter_map(|s| pick(s).iter().find(|(n, _)| n == name).map(|t| t.1))
                    .collect();
                (*name, v.iter().sum::<f64>() / v.len().max(1) as f64)
            })
            .collect::<Vec<_>>()
    };
    let last = summaries.last().expect("k > 1 members");
    Ok(TrainSummary {
        run_dir,
        epochs_done: last.epochs_done,
        last_train: mean_of(|s| &s.last_train),
        last_test: mean_of(|s| &s.last_test),
        device: last.device.clone(),
        stopped: None,
        best: None,
        members: k,
    })
}

/// Create ensemble folder `run_dir` with its config `top` (unless resuming). `shared`: a job
/// array's tasks meet in the folder: its config may exist already, and must then be this one.
fn ensemble_dir(
    run_dir: &Path,
    top: &Path,
    config: &TrainConfig,
    (resuming, shared): (bool, bool),
) -> Result<(), TrainError> {
    std::fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
    if resuming {
        return Ok(());
    }
    if shared {
        let text = config.to_toml();
        match std::fs::read_to_string(top) {
            Ok(existing) if existing == text => {}
            Ok(_) => {
                return Err(TrainError::Run {
                    path: run_dir.to_path_buf(),
                    message: "holds an ensemble of another config; give every task the same config, or another --out".into(),
                });
            }
            Err(_) => {
                // Tasks may start together: write beside it, then rename into place.
                let tmp = run_dir.join(format!(".config.toml.{}", std::process::id()));
                std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
                std::fs::rename(&tmp, top).map_err(io_err(top))?;
            }
        }
        return Ok(());
    }
    if top.exists() {
        return Err(TrainError::Run {
            path: run_dir.to_path_buf(),
            message: "already holds a run; use --resume to continue it or --out for a new folder"
                .into(),
        });
    }
    std::fs::write(top, config.to_toml()).map_err(io_err(top))?;
    Ok(())
}

/// A member's or the mixture's scores in an ensemble's `eval.json`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberScores {
    /// The member's run directory (`None`: the mixture).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The member's seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Its predictive scored against the test solutions.
    pub scores: UqScores,
}

/// An ensemble's `eval.json`.
#[derive(Debug, Clone, Serialize)]
pub struct EnsembleEval {
    /// Members `K`.
    pub ensemble: usize,
    /// Test cases scored (the first of the test split).
    pub cases: usize,
    /// Predictive samples per member and case (the mixture has `K` times as many).
    pub samples_per_member: usize,
    /// What is predicted, in words.
    pub what: String,
    /// Each member's predictive.
    pub members: Vec<MemberScores>,
    /// The equal-weight mixture of the members.
    pub mixture: MemberScores,
}

/// `varphi eval`: a single run's evaluation, or an ensemble's (module docs). Returns
/// `eval.json` as JSON.
pub fn evaluate(
    dir: &Path,
    backend: Option<BackendKind>,
    print: bool,
    last: bool,
) -> Result<serde_json::Value, TrainError> {
    let (config, k) = members(dir)?;
    if k <= 1 {
        return session::evaluate(dir, backend, print, last);
    }
    let first = member_dir(dir, 0);
    let (inputs, truth) = session::test_cases(&first, MAX_CASES)?;
    let cases = inputs.shape[0];
    // Only `n` is read: the inputs are the test cases above, and nothing is written.
    let request = PredictRequest {
        input: PathBuf::new(),
        key: None,
        n: SAMPLES,
        out: PathBuf::new(),
        truth: None,
        truth_key: None,
    };
    let scorer = Scorer::plain();
    let mut members = Vec::with_capacity(k);
    let mut mixture: Vec<Vec<f64>> = Vec::with_capacity(k * SAMPLES);
    let mut what = String::new();
    for m in 0..k {
        let mdir = member_dir(dir, m);
        session::evaluate(&mdir, backend, false, last)?;
        let p = session::predictions_for(&mdir, &inputs, &request, backend, last)?;
        what = p.prediction.what.clone();
        let scores = scorer.score(
            &format!("member {m}"),
            &p.prediction.samples,
            &truth,
            cases,
            Role::Predictive,
        );
        members.push(MemberScores {
            dir: Some(mdir.clone()),
            seed: Some(rundir::config(&mdir)?.common.seed),
            scores,
        });
        mixture.extend(p.prediction.samples);
    }
    let mixed = Scorer::plain();
    let scores = mixed.score("mixture", &mixture, &truth, cases, Role::Predictive);
    let mut curves = scorer.curves();
    curves.extend(mixed.curves());
    let report = EnsembleEval {
        ensemble: k,
        cases,
        samples_per_member: SAMPLES,
        what,
        members,
        mixture: MemberScores {
            dir: None,
            seed: None,
            scores,
        },
    };
    let json = serde_json::to_value(&report).expect("eval reports serialise");
    rundir::write_eval(dir, &json)?;
    plots::plot_calibration(&curves, &dir.join("calibration.png"))?;
    plots::plot_bands(&mixed.bands(), &dir.join("bands.png"))?;
    if print {
        print_eval(&report, dir, &config.common);
    }
    Ok(json)
}

fn print_eval(r: &EnsembleEval, dir: &Path, common: &Common) {
    println!(
        "evaluation of the ensemble {} ({} members, seeds {}…{}; {} test cases, {} samples per member)",
        dir.display(),
        r.ensemble,
        common.seed,
        common.seed.wrapping_add(r.ensemble as u64 - 1),
        r.cases,
        r.samples_per_member
    );
    println!(
        "  {:<10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "predictive", "rel L2", "NLL", "CRPS", "50 %", "90 %", "95 %"
    );
    let row = |name: &str, s: &UqScores| {
        let c = |l: &str| s.coverage.get(l).copied().unwrap_or(f64::NAN);
        println!(
            "  {name:<10} {:>10.4} {:>10.4} {:>10.4e} {:>8.3} {:>8.3} {:>8.3}",
            s.rel_l2,
            s.nll,
            s.crps,
            c("0.5"),
            c("0.9"),
            c("0.95")
        );
    };
    for (m, s) in r.members.iter().enumerate() {
        row(&format!("member {m}"), &s.scores);
    }
    row("mixture", &r.mixture.scores);
    println!(
        "wrote {} (members' own evaluations in {}/*/eval.json), {} and {}",
        dir.join("eval.json").display(),
        dir.join("members").display(),
        dir.join("calibration.png").display(),
        dir.join("bands.png").display()
    );
}

/// `varphi predict`: a single run's, or the mixture of an ensemble's members.
pub fn predict(
    dir: &Path,
    request: &PredictRequest,
    backend: Option<BackendKind>,
    last: bool,
) -> Result<PredictReport, TrainError> {
    let (_, k) = members(dir)?;
    if k <= 1 {
        return session::predict(dir, request, backend, last);
    }
    let mut all: Option<Predicted> = None;
    for m in 0..k {
        let p = session::predictions(&member_dir(dir, m), request, backend, last)?;
        match &mut all {
            None => all = Some(p),
            Some(a) => a.prediction.samples.extend(p.prediction.samples),
        }
    }
    let mut all = all.expect("k > 1 members");
    all.prediction.what = format!("{} (mixture of {k} members)", all.prediction.what);
    session::write_prediction(request, all)
}

/// An error for the commands that take one run, not an ensemble (`sample`, `calibrate`,
/// `report`): names the members to use instead.
pub fn single_run(dir: &Path, command: &str) -> Result<(), TrainError> {
    let (_, k) = members(dir)?;
    if k <= 1 {
        return Ok(());
    }
    Err(TrainError::Run {
        path: dir.to_path_buf(),
        message: format!(
            "is an ensemble of {k} members; `varphi {command}` takes one run: give a member ({}/0 … {}/{}), or use `varphi eval` / `varphi predict` on the ensemble",
            dir.join("members").display(),
            dir.join("members").display(),
            k - 1
        ),
    })
}
