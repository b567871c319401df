//! Training against torch (tests/fixtures/golden/train_*.json, made by make_train_fixtures.py): the loss,
//! every gradient, and two AdamW steps with clipping, within 1e-4. Then whole training runs on small data.

mod training_support;

use pg_ai::engine::train::{AdamW, AdamWConfig, Batch, Gradients, Targets, Trainable, TrainableBert, TrainableGpt2};
use serde_json::Value;
use std::path::PathBuf;
use training_support::fixtures;

const TOLERANCE: f64 = 1e-4;

fn golden(name: &str) -> Value {
    let path = fixtures().join("golden").join(format!("train_{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

fn matrix<T: serde::de::DeserializeOwned>(v: &Value) -> Vec<Vec<T>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn close(actual: f64, expected: &Value, what: &str) {
    let expected = expected.as_f64().unwrap();
    assert!((actual - expected).abs() < TOLERANCE, "{what}: {actual} vs torch's {expected}");
}

/// Like `close`, but collects the mismatch so that one run shows them all.
fn near(errors: &mut Vec<String>, actual: f64, expected: &Value, slack: f64, what: &str) {
    let expected = expected.as_f64().unwrap();
    if !((actual - expected).abs() < TOLERANCE + slack) {
        errors.push(format!("{what}: {actual} vs torch's {expected}"));
    }
}

/// The batch as transformers saw it.
fn batch(g: &Value, shift: bool) -> Batch {
    let b = &g["batch"];
    let ids: Vec<Vec<u32>> = matrix(&b["input_ids"]);
    let mask: Vec<Vec<u32>> = matrix(&b["attention_mask"]);
    if b["labels"][0].is_array() {
        Batch::from_hf(&ids, &mask, &matrix::<i64>(&b["labels"]), shift)
    } else {
        let labels: Vec<u32> = serde_json::from_value(b["labels"].clone()).unwrap();
        let mut batch = Batch::from_hf(&ids, &mask, &[], false);
        batch.targets = Targets::Labels(labels);
        batch
    }
}

fn loss_of(model: &dyn Trainable, batch: &Batch) -> f64 {
    model.loss(batch, None).unwrap().to_scalar::<f32>().unwrap() as f64
}

/// The key projection's bias, as (start, len) in the flattened tensor: softmax ignores a constant
/// added to every score of a row, so its true gradient is exactly 0 and what both frameworks compute
/// is rounding noise, which Adam (g / (|g| + eps)) turns into updates of up to lr either way.
fn key_bias(name: &str, elements: usize) -> Option<(usize, usize)> {
    if name.ends_with("attention.self.key.bias") {
        Some((0, elements))
    } else if name.ends_with("attn.c_attn.bias") {
        Some((elements / 3, elements / 3))
    } else {
        None
    }
}

/// Loss, gradients, and two clipped AdamW steps, all against torch.
fn check_against_torch(model: &dyn Trainable, g: &Value, batch: &Batch) {
    let params = model.params();
    let expected = g["params"].as_object().unwrap();
    let names: Vec<&str> = params.list.iter().map(|p| p.name.as_str()).collect();
    let mut want: Vec<&str> = expected.keys().map(String::as_str).collect();
    let mut have = names.clone();
    want.sort();
    have.sort();
    assert_eq!(have, want, "parameter names differ from transformers'");
    // HF Trainer's weight-decay grouping.
    let decay: Vec<&str> = g["decay"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for p in &params.list {
        assert_eq!(p.decay, decay.contains(&p.name.as_str()), "weight decay of {}", p.name);
    }

    let config = AdamWConfig { weight_decay: g["weight_decay"].as_f64().unwrap(), ..Default::default() };
    let mut opt = AdamW::new(params, config);
    let lr = g["lr"].as_f64().unwrap();
    let max_norm = g["max_grad_norm"].as_f64().unwrap();
    for step in 0..2 {
        let loss = model.loss(batch, None).unwrap();
        close(loss.to_scalar::<f32>().unwrap() as f64, &g["losses"][step], &format!("loss before step {}", step + 1));
        let mut grads = Gradients::of(params, &loss).unwrap();
        if step == 0 {
            for ((name, norm), grad) in names.iter().zip(grads.norms().unwrap()).zip(&grads.0) {
                assert!(norm > 0.0, "{name} receives no gradient");
                close(norm, &expected[*name]["grad_norm"], &format!("gradient norm of {name}"));
                let grad = grad.as_ref().unwrap().flatten_all().unwrap();
                if let Some((start, len)) = key_bias(name, grad.elem_count()) {
                    let part: Vec<f32> = grad.narrow(0, start, len).unwrap().to_vec1().unwrap();
                    let part_norm = part.iter().map(|g| (*g as f64).powi(2)).sum::<f64>().sqrt();
                    assert!(part_norm < 1e-6, "{name}: the key bias gradient should be 0, not norm {part_norm}");
                }
            }
        }
        let total = grads.clip(max_norm).unwrap();
        close(total, &g["total_grad_norms"][step], "total gradient norm");
        opt.step(params, &grads, lr).unwrap();
        let mut errors = Vec::new();
        for p in &params.list {
            let values: Vec<f32> = p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let want = &expected[&p.name]["after"][step];
            let sum: f64 = values.iter().map(|v| *v as f64).sum();
            // Noise-driven elements may differ by up to lr per step each; the rest must match.
            let noisy = key_bias(&p.name, values.len());
            let slack = |elements: usize| elements as f64 * lr * (step + 1) as f64;
            let sum_slack = noisy.map_or(0.0, |(_, len)| slack(len));
            near(&mut errors, sum, &want["sum"], sum_slack, &format!("sum of {} after step {}", p.name, step + 1));
            for (i, (v, w)) in values.iter().zip(want["first"].as_array().unwrap()).enumerate() {
                let in_noise = noisy.is_some_and(|(start, len)| (start..start + len).contains(&i));
                let what = format!("{}[{i}] after step {}", p.name, step + 1);
                near(&mut errors, *v as f64, w, if in_noise { slack(1) } else { 0.0 }, &what);
            }
        }
        assert!(errors.is_empty(), "{} mismatches:\n{}", errors.len(), errors.join("\n"));
    }
    close(loss_of(model, batch), &g["losses"][2], "loss after two steps");
}

#[test]
fn mlm_step_matches_torch() {
    let g = golden("mlm");
    let model = TrainableBert::load(&model_dir("bert-mlm")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, false));
}

#[test]
fn clm_step_matches_torch() {
    let g = golden("clm");
    let model = TrainableGpt2::load(&model_dir("gpt2")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, true));
}

#[test]
fn classification_step_matches_torch() {
    let g = golden("text_classification");
    let model = TrainableBert::load(&model_dir("bert-classifier")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, false));
}

// ---- Whole training runs on small data -------------------------------------------------------------

use pg_ai::engine::error::ErrorKind;
use pg_ai::engine::files::ModelFiles;
use pg_ai::engine::generate::{generate_with, GenerateOptions};
use pg_ai::engine::model::{AnyModel, Model, Task};
use pg_ai::engine::tasks::{classify::classify, fill_mask::fill_mask};
use pg_ai::engine::train::{finetune, pretrain, Objective, TrainOptions, TrainOutcome};
use serde_json::json;
use training_support::{scratch, sentences, Recorder, Rows};

fn options(v: Value) -> TrainOptions {
    TrainOptions::from_json(&v).unwrap()
}

fn load_any(dir: &std::path::Path) -> AnyModel {
    AnyModel::load(&ModelFiles::in_dir(dir.to_path_buf()).unwrap()).unwrap()
}

fn encoder(dir: &std::path::Path) -> Model {
    match load_any(dir) {
        AnyModel::Encoder(m) => m,
        _ => panic!("{} is not an encoder", dir.display()),
    }
}

fn metric(outcome: &TrainOutcome, name: &str) -> f64 {
    outcome.metrics[name].as_f64().unwrap_or_else(|| panic!("no metric {name} in {}", outcome.metrics))
}

#[test]
fn pretrained_mlm_learns_and_fills_masks() {
    let mut texts = sentences();
    texts.extend(["".to_string(), "   ".to_string()]); // NULL and blank texts are skipped and counted
    let mut rows = Rows::texts(&texts);
    let out = scratch("mlm");
    let mut progress = Recorder::default();
    let o = options(json!({"max_steps": 600, "learning_rate": 2e-3, "warmup_ratio": 0.05, "log_every": 200}));
    let outcome = pretrain(Objective::Mlm, &mut rows, &o, &mut progress, &out).unwrap();
    eprintln!("{}", outcome.metrics);
    assert_eq!((outcome.architecture.as_str(), outcome.task.as_str()), ("BertForMaskedLM", "fill-mask"));
    assert_eq!((outcome.steps, outcome.examples, outcome.skipped), (600, 200, 2));
    assert_eq!(progress.reports.iter().map(|r| r.step).collect::<Vec<_>>(), vec![200, 400, 600]);
    assert!(progress.checks >= 600);

    let m = encoder(&out);
    let vocab = m.config.vocab_size as f64;
    let (initial, eval) = (metric(&outcome, "initial_eval_loss"), metric(&outcome, "eval_loss"));
    assert!((initial - vocab.ln()).abs() < 1.0, "an untrained model should be near ln(vocab): {initial}");
    assert!(eval < 0.5 * vocab.ln(), "eval loss {eval} vs ln(vocab) {}", vocab.ln());
    assert!((metric(&outcome, "perplexity") - eval.exp()).abs() < 1e-9);

    assert!(m.can(Task::FillMask));
    let answers = fill_mask(&m, &["The farmer [MASK] a book every morning."], 5, &mut || ()).unwrap().remove(0);
    eprintln!("{answers:?}");
    assert_eq!(answers.len(), 5);
    assert_eq!(answers[0].token, "reads");
    std::fs::remove_dir_all(out).unwrap();
}
