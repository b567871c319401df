//! A run stopped after a checkpoint and resumed from it ends with the same bytes as a run that never
//! stopped: weights, tokenizer, config and metrics.

mod training_support;

use pg_ai_engine::error::{AiError, ErrorKind, Result};
use pg_ai_engine::train::{finetune, pretrain, resume, Objective, Progress, StepReport, TrainOptions, TrainOutcome};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use training_support::{fixtures, scratch, sentences, Recorder, Rows};

/// Saves a checkpoint after step `at`, then fails at the next check, as a server stopping would.
struct StopAfterCheckpoint {
    at: usize,
    dir: PathBuf,
    saved: bool,
    steps_reported: Vec<usize>,
}

impl Progress for StopAfterCheckpoint {
    fn check(&mut self) -> Result<()> {
        if self.saved {
            return Err(AiError::new(ErrorKind::Cancelled, "the server is shutting down"));
        }
        Ok(())
    }

    fn report(&mut self, step: &StepReport) {
        self.steps_reported.push(step.step);
    }

    fn checkpoint(&mut self, step: usize, write: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
        if step == self.at {
            std::fs::create_dir_all(&self.dir).unwrap();
            write(&self.dir)?;
            self.saved = true;
        }
        Ok(())
    }
}

const FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

/// Metrics without the timings, which differ from run to run.
fn metrics_without_timing(outcome: &TrainOutcome) -> Value {
    let mut m = outcome.metrics.clone();
    for key in ["seconds", "tokens_per_second"] {
        m.as_object_mut().unwrap().remove(key);
    }
    m
}

/// Runs `train` once straight through and once stopped after step `at` and resumed; asserts both end alike.
fn check_resume(
    name: &str,
    objective: Objective,
    rows: impl Fn() -> Rows,
    options: Value,
    at: usize,
    train: impl Fn(&mut Rows, &TrainOptions, &mut dyn Progress, &Path) -> Result<TrainOutcome>,
) {
    let o = TrainOptions::from_json(&options).unwrap();
    let straight_dir = scratch(&format!("{name}-straight"));
    let straight = train(&mut rows(), &o, &mut Recorder::default(), &straight_dir).unwrap();

    let (checkpoint, resumed_dir) = (scratch(&format!("{name}-checkpoint")), scratch(&format!("{name}-resumed")));
    let mut stopper = StopAfterCheckpoint { at, dir: checkpoint.clone(), saved: false, steps_reported: vec![] };
    let stopped = train(&mut rows(), &o, &mut stopper, &scratch(&format!("{name}-stopped")));
    assert_eq!(stopped.unwrap_err().kind, ErrorKind::Cancelled);
    let mut progress = Recorder::default();
    let resumed = resume(&checkpoint, objective, &mut rows(), &o, &mut progress, &resumed_dir).unwrap();

    for file in FILES {
        let (a, b) = (std::fs::read(straight_dir.join(file)).unwrap(), std::fs::read(resumed_dir.join(file)).unwrap());
        assert!(a == b, "{name}: {file} differs after resuming at step {at}");
    }
    assert_eq!(metrics_without_timing(&straight), metrics_without_timing(&resumed), "{name}");
    assert_eq!((straight.steps, straight.task.as_str()), (resumed.steps, resumed.task.as_str()));
    // Progress goes on from the checkpoint's step.
    assert!(progress.reports.first().unwrap().step > at, "{name}: {:?}", progress.reports);
    assert_eq!(progress.checks, straight.steps - at);
    for dir in [straight_dir, checkpoint, resumed_dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn pretrained_mlm_resumes_mid_epoch_with_dropout_and_warmup() {
    // 200 rows, about 180 for training, 16 a batch: 12 steps an epoch; stop in the second epoch.
    let options = json!({"max_steps": 30, "dropout": 0.1, "warmup_steps": 5, "log_every": 4, "vocab_size": 300});
    check_resume(
        "mlm",
        Objective::Mlm,
        || Rows::texts(&sentences()),
        options,
        17,
        |rows, o, p, out| pretrain(Objective::Mlm, rows, o, p, out),
    );
}

#[test]
fn pretrained_clm_resumes_at_an_epoch_boundary() {
    let options = json!({"epochs": 2, "batch_size": 30, "vocab_size": 300, "log_every": 3});
    let steps_per_epoch = {
        let train = (0..200).filter(|i| !pg_ai_engine::train::data::held_out(*i, 42, 0.1)).count();
        train.div_ceil(30)
    };
    check_resume(
        "clm",
        Objective::Clm,
        || Rows::texts(&sentences()),
        options,
        steps_per_epoch,
        |rows, o, p, out| pretrain(Objective::Clm, rows, o, p, out),
    );
}

fn labelled() -> Rows {
    let rows: Vec<(String, Option<String>)> = sentences()
        .into_iter()
        .map(|s| {
            let label = if s.contains("cat") || s.contains("dog") { "animal" } else { "other" };
            (s, Some(label.to_string()))
        })
        .collect();
    Rows::labelled(&rows)
}

#[test]
fn finetuned_classifier_resumes() {
    let base = fixtures().join("models/bert-mlm");
    let options = json!({"max_steps": 10, "batch_size": 8, "learning_rate": 1e-3});
    check_resume("classifier", Objective::TextClassification, labelled, options, 4, |rows, o, p, out| {
        finetune(&base, Objective::TextClassification, rows, o, p, out)
    });
}

#[test]
fn finetuned_roberta_mlm_resumes_with_dropout() {
    let base = fixtures().join("models/roberta-mlm");
    let options = json!({"max_steps": 10, "batch_size": 8, "learning_rate": 1e-3, "dropout": 0.1});
    check_resume(
        "roberta-mlm",
        Objective::Mlm,
        || Rows::texts(&sentences()),
        options,
        6,
        |rows, o, p, out| finetune(&base, Objective::Mlm, rows, o, p, out),
    );
}

#[test]
fn finetuned_distilbert_classifier_resumes_with_dropout() {
    let base = fixtures().join("models/distilbert-mlm");
    let options = json!({"max_steps": 8, "batch_size": 8, "learning_rate": 1e-3, "dropout": 0.1});
    check_resume("distilbert-classifier", Objective::TextClassification, labelled, options, 3, |rows, o, p, out| {
        finetune(&base, Objective::TextClassification, rows, o, p, out)
    });
}

#[test]
fn resume_refuses_rows_that_changed() {
    let options = TrainOptions::from_json(&json!({"max_steps": 6, "vocab_size": 300})).unwrap();
    let checkpoint = scratch("changed-checkpoint");
    let mut stopper = StopAfterCheckpoint { at: 2, dir: checkpoint.clone(), saved: false, steps_reported: vec![] };
    let texts = sentences();
    let _ = pretrain(Objective::Mlm, &mut Rows::texts(&texts), &options, &mut stopper, &scratch("changed-stopped"));
    assert!(stopper.saved);
    let fewer = Rows::texts(&texts[..150]);
    let out = scratch("changed-out");
    let e = resume(&checkpoint, Objective::Mlm, &mut { fewer }, &options, &mut Recorder::default(), &out).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidParameter);
    assert!(e.message.starts_with("the training rows changed since the checkpoint"), "{}", e.message);
    assert!(!out.join("model.safetensors").exists());
    std::fs::remove_dir_all(checkpoint).unwrap();
}

#[test]
fn finetuned_tagger_resumes() {
    // Tags of no meaning but a fixed rule: enough for the run's state to matter.
    let tagged = || {
        let rows: Vec<(String, Option<Vec<Option<String>>>)> = sentences()
            .into_iter()
            .map(|s| {
                let tags = s.split_whitespace().map(|w| Some(if w.len() > 4 { "B-LONG" } else { "O" }.to_string()));
                let tags = tags.collect();
                (s, Some(tags))
            })
            .collect();
        Rows::tagged(&rows)
    };
    let base = fixtures().join("models/bert-mlm");
    let options = json!({"max_steps": 8, "batch_size": 8, "learning_rate": 1e-3, "dropout": 0.1});
    check_resume("tagger", Objective::TokenClassification, tagged, options, 5, |rows, o, p, out| {
        finetune(&base, Objective::TokenClassification, rows, o, p, out)
    });
}

#[test]
fn pretrained_seq2seq_resumes_with_dropout() {
    // Each sentence as the source, its words reversed as the target.
    let pairs = || {
        let rows = sentences()
            .into_iter()
            .map(|s| {
                let target = s.split_whitespace().rev().collect::<Vec<_>>().join(" ");
                pg_ai_engine::train::Example { text: s, target: Some(target), ..Default::default() }
            })
            .collect();
        Rows::new(rows)
    };
    let options = json!({"max_steps": 16, "batch_size": 16, "dropout": 0.1, "vocab_size": 300,
                         "source_prefix": "reverse: "});
    check_resume("seq2seq", Objective::Seq2Seq, pairs, options, 7, |rows, o, p, out| {
        pretrain(Objective::Seq2Seq, rows, o, p, out)
    });
}

#[test]
fn finetuned_llama_resumes_with_dropout() {
    let base = fixtures().join("models/llama");
    let options = json!({"max_steps": 8, "batch_size": 8, "learning_rate": 1e-3, "dropout": 0.1});
    check_resume(
        "llama",
        Objective::Clm,
        || Rows::texts(&sentences()),
        options,
        3,
        |rows, o, p, out| finetune(&base, Objective::Clm, rows, o, p, out),
    );
}
