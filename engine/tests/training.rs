//! Training against torch (tests/fixtures/golden/train_*.json, made by make_train_fixtures.py): the loss,
//! every gradient, and two AdamW steps with clipping, within 1e-4. Then whole training runs on small data.

mod training_support;

use pg_ai_engine::train::{
    AdamW, AdamWConfig, Batch, BertTask, Gradients, Targets, Trainable, TrainableBert, TrainableGpt2, TrainableLlama,
    TrainableT5,
};
use serde_json::Value;
use std::path::PathBuf;
use training_support::fixtures;

const TOLERANCE: f64 = 1e-4;
/// Added per unit of the expected value: f32 sums in another order differ by about 1e-6 of their size, which for a
/// gradient norm of 19 is already more than TOLERANCE.
const RELATIVE: f64 = 1e-5;

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
    assert!(
        (actual - expected).abs() < TOLERANCE + RELATIVE * expected.abs(),
        "{what}: {actual} vs torch's {expected}"
    );
}

/// Like `close`, but collects the mismatch so that one run shows them all.
fn near(errors: &mut Vec<String>, actual: f64, expected: &Value, slack: f64, what: &str) {
    let expected = expected.as_f64().unwrap();
    // Written so that NaN fails too.
    let within = (actual - expected).abs() < TOLERANCE + RELATIVE * expected.abs() + slack;
    if !within {
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
    // DeBERTa's position keys' bias too: content-to-position scores add q·b to a whole row as well.
    let deberta = name.ends_with("attention.self.pos_key_proj.bias");
    if name.ends_with("attention.self.key.bias") || name.ends_with("attention.k_lin.bias") || deberta {
        Some((0, elements))
    } else if name.ends_with("attn.c_attn.bias") {
        Some((elements / 3, elements / 3))
    } else {
        None
    }
}

/// Values whose Adam updates rounding noise may decide: the key biases above, and the key bias of a model with
/// rotary positions (Qwen2's k_proj.bias), whose gradient is not 0 (each position rotates the bias its own way)
/// but nearly so in the dimensions that rotate slowly, which over a short batch come close to the case above.
/// DeBERTa's content key bias likewise: its gradient is 0 where no position-to-content scores read the keys (the
/// v2-style fixture), and comes from those alone where they do (v3).
fn noise_driven(name: &str, elements: usize) -> Option<(usize, usize)> {
    match name.ends_with("self_attn.k_proj.bias") || name.ends_with("attention.self.key_proj.bias") {
        true => Some((0, elements)),
        false => key_bias(name, elements),
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
            let noisy = noise_driven(&p.name, values.len());
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

#[test]
fn token_classification_step_matches_torch() {
    let g = golden("token_classification");
    let model = TrainableBert::load(&model_dir("bert-ner")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, false));
}

#[test]
fn distilbert_mlm_step_matches_torch() {
    let g = golden("distilbert_mlm");
    let model = TrainableBert::load(&model_dir("distilbert-mlm")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, false));
}

#[test]
fn distilbert_classification_step_matches_torch() {
    let g = golden("distilbert_text_classification");
    let model = TrainableBert::load(&model_dir("distilbert-classifier")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, false));
}

#[test]
fn roberta_mlm_step_matches_torch() {
    let g = golden("roberta_mlm");
    let model = TrainableBert::load(&model_dir("roberta-mlm")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, false));
}

#[test]
fn roberta_classification_step_matches_torch() {
    let g = golden("roberta_text_classification");
    let model = TrainableBert::load(&model_dir("roberta-classifier")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, false));
}

#[test]
fn xlm_roberta_mlm_step_matches_torch() {
    let g = golden("xlm_roberta_mlm");
    let model = TrainableBert::load(&model_dir("xlm-roberta-mlm")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, false));
}

#[test]
fn xlm_roberta_classification_step_matches_torch() {
    let g = golden("xlm_roberta_text_classification");
    let model = TrainableBert::load(&model_dir("xlm-roberta-classifier")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, false));
}

#[test]
fn camembert_mlm_step_matches_torch() {
    let g = golden("camembert_mlm");
    let model = TrainableBert::load(&model_dir("camembert-mlm")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, false));
}

/// DeBERTa-v3 (the tagger and masked LM: positions both ways over log buckets, projections shared with the
/// content's, no absolute positions) and a DeBERTa-v2-style classifier (its own position projections,
/// content-to-position only, absolute positions).
#[test]
fn deberta_steps_match_torch() {
    for (golden_name, dir) in [
        ("deberta_token_classification", "deberta-ner"),
        ("deberta_mlm", "deberta-mlm"),
        ("deberta_text_classification", "deberta-classifier"),
    ] {
        let g = golden(golden_name);
        let model = TrainableBert::load(&model_dir(dir)).unwrap();
        assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
        check_against_torch(&model, &g, &batch(&g, false));
    }
}

#[test]
fn llama_clm_step_matches_torch() {
    let g = golden("llama_clm");
    let model = TrainableLlama::load(&model_dir("llama")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, true));
}

#[test]
fn seq2seq_step_matches_torch() {
    let g = golden("seq2seq");
    let model = TrainableT5::load(&model_dir("t5")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    let b = &g["batch"];
    let batch = Batch::seq2seq_from_hf(
        &matrix(&b["input_ids"]),
        &matrix(&b["attention_mask"]),
        &matrix(&b["decoder_input_ids"]),
        &matrix::<i64>(&b["labels"]),
    );
    // The batch pg_ai builds from the same rows is the same batch.
    let targets: Vec<Vec<u32>> = matrix::<i64>(&b["labels"])
        .iter()
        .map(|r| r.iter().filter(|l| **l >= 0).map(|l| *l as u32).collect())
        .collect();
    let sources: Vec<Vec<u32>> = matrix::<u32>(&b["input_ids"])
        .iter()
        .zip(matrix::<u32>(&b["attention_mask"]))
        .map(|(ids, mask)| ids.iter().zip(mask).filter(|(_, m)| *m == 1).map(|(i, _)| *i).collect())
        .collect();
    let ours = Batch::seq2seq(
        &sources.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        &targets.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        0,
        model.decoder_start().unwrap(),
    );
    assert_eq!((&ours.ids, &ours.attention), (&batch.ids, &batch.attention));
    // Past a target's end the decoder's inputs differ (transformers shifts </s> in there) and matter to no target.
    let flat_labels: Vec<i64> = matrix::<i64>(&b["labels"]).concat();
    let decoded = |batch: &Batch| -> Vec<u32> {
        batch
            .decoder
            .as_ref()
            .unwrap()
            .ids
            .iter()
            .zip(&flat_labels)
            .filter(|(_, l)| **l >= 0)
            .map(|(i, _)| *i)
            .collect()
    };
    assert_eq!(decoded(&ours), decoded(&batch));
    check_against_torch(&model, &g, &batch);
}

#[test]
fn a_sequence_head_is_not_reused_for_tokens() {
    // Same labels, but a sequence classifier's head (and pooler) mean nothing to a token classifier.
    let dir = model_dir("bert-classifier");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let source = pg_ai_engine::train::params::read_safetensors(&dir.join("model.safetensors")).unwrap();
    let labels = vec!["food".to_string(), "sport".to_string(), "weather".to_string()];
    let model = TrainableBert::build(config, BertTask::TokenClassifier(labels), source, 0).unwrap();
    assert_eq!(model.fresh, vec!["classifier.weight", "classifier.bias"]);
    assert!(model.params().list.iter().all(|p| !p.name.contains("pooler")));
    assert_eq!(model.config["architectures"][0], "BertForTokenClassification");
    assert!(model.config.get("problem_type").is_none());
}

// ---- Whole training runs on small data -------------------------------------------------------------

use pg_ai_engine::error::ErrorKind;
use pg_ai_engine::files::ModelFiles;
use pg_ai_engine::generate::translator::{TranslateOptions, Translator};
use pg_ai_engine::generate::{generate_with, GenerateOptions};
use pg_ai_engine::models::{AnyModel, Model, Task};
use pg_ai_engine::tasks::{classify::classify, fill_mask::fill_mask, ner::ner};
use pg_ai_engine::train::{finetune, pretrain, Example, Objective, TrainOptions, TrainOutcome};
use serde_json::json;
use std::collections::HashMap;
use training_support::{scratch, sentences, Recorder, Rows};

fn options(v: Value) -> TrainOptions {
    TrainOptions::from_json(&v).unwrap()
}

fn load_any(dir: &std::path::Path) -> AnyModel {
    AnyModel::load(&ModelFiles::in_dir(dir.to_path_buf()).unwrap(), &Default::default()).unwrap()
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
    // The slot takes a verb: the four best answers are verbs the rows use, "reads" among them. (The fifth, at
    // about 0.07, is a verb or a noun depending on dropout's draws.)
    let verbs = ["reads", "cooks", "paints", "drinks", "walks", "sells"];
    assert_eq!(answers.len(), 5);
    assert!(answers[..4].iter().all(|a| verbs.contains(&a.token.as_str())), "{answers:?}");
    assert!(answers.iter().any(|a| a.token == "reads"), "{answers:?}");
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn pretrained_clm_learns_and_generates() {
    let texts = sentences();
    let mut rows = Rows::texts(&texts);
    let out = scratch("clm");
    let o = options(json!({"max_steps": 400, "learning_rate": 2e-3, "warmup_ratio": 0.05, "vocab_size": 400}));
    let outcome = pretrain(Objective::Clm, &mut rows, &o, &mut Recorder::default(), &out).unwrap();
    eprintln!("{}", outcome.metrics);
    assert_eq!((outcome.architecture.as_str(), outcome.task.as_str()), ("GPT2LMHeadModel", "text-generation"));
    let model = load_any(&out);
    let AnyModel::Gpt2(_) = &model else { panic!("not loaded as GPT-2") };
    let vocab = model.config_json()["vocab_size"].as_f64().unwrap();
    let (initial, eval) = (metric(&outcome, "initial_eval_loss"), metric(&outcome, "eval_loss"));
    assert!((initial - vocab.ln()).abs() < 1.0, "an untrained model should be near ln(vocab): {initial}");
    assert!(eval < 0.5 * vocab.ln(), "eval loss {eval} vs ln(vocab) {}", vocab.ln());

    let generate = GenerateOptions { max_tokens: 20, ..Default::default() };
    let mut text = String::new();
    generate_with(model.causal().unwrap(), "The cat", &generate, &mut || (), &mut |piece| text.push_str(piece))
        .unwrap();
    eprintln!("The cat{text}");
    // Greedy decoding of a model that learnt the rows continues the prompt as one of them does,
    // and stops at <|endoftext|> after the full stop.
    let whole = format!("The cat{text}");
    assert!(texts.contains(&whole), "\"{whole}\" is not a training sentence");
    std::fs::remove_dir_all(out).unwrap();
}

/// Two label sets with nothing in common but the sentence frame, in the fixture models' vocabulary.
fn food_or_sport() -> Vec<(String, Option<String>)> {
    let people = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
    let foods = ["bread", "cheese", "soup", "pasta", "apples", "rice"];
    let sports = ["football", "tennis", "hockey", "golf", "rugby"];
    let food = ["{n} is eating {x} .", "we cooked {x} for dinner .", "{n} bought fresh {x} .", "i love eating {x} ."];
    let sport =
        ["{n} is playing {x} .", "we watched the {x} match .", "{n} won the {x} game .", "the {x} team played well ."];
    let mut rows = Vec::new();
    for (i, n) in people.iter().enumerate() {
        for (j, t) in food.iter().enumerate() {
            let x = foods[(i + j) % foods.len()];
            rows.push((t.replace("{n}", n).replace("{x}", x), Some("food".to_string())));
        }
        for (j, t) in sport.iter().enumerate() {
            let x = sports[(i + 2 * j) % sports.len()];
            rows.push((t.replace("{n}", n).replace("{x}", x), Some("sport".to_string())));
        }
    }
    rows
}

fn check_classifier(outcome: &TrainOutcome, out: &std::path::Path, architecture: &str) {
    eprintln!("{}", outcome.metrics);
    assert_eq!(outcome.architecture, architecture);
    assert!(metric(outcome, "accuracy") >= 0.9, "held-out accuracy {}", metric(outcome, "accuracy"));
    assert!(metric(outcome, "macro_f1") >= 0.9);
    assert!(metric(outcome, "eval_examples") >= 5.0);
    let m = encoder(out);
    assert_eq!(m.config.labels, vec!["food", "sport"]);
    assert!(m.can(Task::TextClassification));
    let inputs = ["judy is eating cheese .", "judy won the golf game ."];
    let answers = classify(&m, &inputs, &mut || ()).unwrap();
    assert_eq!(answers[0][0].label, "food", "{answers:?}");
    assert_eq!(answers[1][0].label, "sport", "{answers:?}");
}

#[test]
fn pretrained_classifier_separates_two_label_sets() {
    let mut rows = Rows::labelled(&food_or_sport());
    let out = scratch("cls");
    let o = options(json!({"epochs": 10, "learning_rate": 2e-3, "test_size": 0.2, "batch_size": 8}));
    let outcome = pretrain(Objective::TextClassification, &mut rows, &o, &mut Recorder::default(), &out).unwrap();
    check_classifier(&outcome, &out, "BertForSequenceClassification");
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn classifier_finetuned_from_a_masked_lm() {
    let mut rows = Rows::labelled(&food_or_sport());
    let out = scratch("ft-cls");
    let base = model_dir("bert-mlm");
    let o = options(json!({"epochs": 5, "learning_rate": 1e-3, "test_size": 0.2, "batch_size": 8}));
    let outcome =
        finetune(&base, Objective::TextClassification, &mut rows, &o, &mut Recorder::default(), &out).unwrap();
    check_classifier(&outcome, &out, "BertForSequenceClassification");
    // The encoder came from the base and trained on; the pooler and classifier are new.
    let tokenizer = std::fs::read(base.join("tokenizer.json")).unwrap();
    assert_eq!(std::fs::read(out.join("tokenizer.json")).unwrap(), tokenizer);
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn classifier_finetuned_from_a_distilbert_masked_lm() {
    let mut rows = Rows::labelled(&food_or_sport());
    let out = scratch("ft-distil-cls");
    let o = options(json!({"epochs": 10, "learning_rate": 2e-3, "test_size": 0.2, "batch_size": 8}));
    let outcome = finetune(
        &model_dir("distilbert-mlm"),
        Objective::TextClassification,
        &mut rows,
        &o,
        &mut Recorder::default(),
        &out,
    )
    .unwrap();
    check_classifier(&outcome, &out, "DistilBertForSequenceClassification");
    // DistilBERT's own head and names: pre_classifier and classifier, no pooler, no token types.
    let saved = pg_ai_engine::train::params::read_safetensors(&out.join("model.safetensors")).unwrap();
    for name in ["pre_classifier.weight", "classifier.weight", "distilbert.transformer.layer.1.ffn.lin2.bias"] {
        assert!(saved.contains_key(name), "{name} not in {:?}", saved.keys());
    }
    assert!(saved.keys().all(|k| !k.contains("pooler") && !k.contains("token_type") && !k.starts_with("vocab_")));
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn finetuned_roberta_mlm_loads_and_fills_a_mask() {
    let texts: Vec<String> = food_or_sport().into_iter().map(|(t, _)| t).collect();
    let o = options(json!({"max_steps": 60, "learning_rate": 2e-3}));
    let out = scratch("ft-roberta-mlm");
    let base = model_dir("roberta-mlm");
    let outcome =
        finetune(&base, Objective::Mlm, &mut Rows::texts(&texts), &o, &mut Recorder::default(), &out).unwrap();
    eprintln!("{}", outcome.metrics);
    assert_eq!((outcome.architecture.as_str(), outcome.task.as_str()), ("RobertaForMaskedLM", "fill-mask"));
    assert!(metric(&outcome, "eval_loss") < 0.7 * metric(&outcome, "initial_eval_loss"));
    let config: Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!((config["model_type"].as_str(), config["pad_token_id"].as_u64()), (Some("roberta"), Some(1)));
    let m = encoder(&out);
    assert!(m.can(Task::FillMask));
    // <mask> takes no space before it (lstrip is off), as the masked "Ġbread" token had one of its own.
    let answers = fill_mask(&m, &["alice is eating<mask> ."], 3, &mut || ()).unwrap().remove(0);
    eprintln!("{answers:?}");
    let foods = ["bread", "cheese", "soup", "pasta", "apples", "rice"];
    assert!(foods.iter().any(|f| answers[0].sequence == format!("alice is eating {f} .")), "{answers:?}");
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn roberta_pre_split_words_encode_as_the_running_text() {
    use pg_ai_engine::text::training::{Style, TrainTokenizer};
    let mut t = TrainTokenizer::from_dir(&model_dir("roberta-mlm"), Style::Encoder).unwrap();
    assert_eq!((t.pad_id, t.mask_id, t.special_ids.as_slice()), (1, Some(4), &[0, 1, 2, 3, 4][..]));
    let text = "erin visited los angeles yesterday .";
    let words: Vec<&str> = text.split(' ').collect();
    let (ids, word_ids) = t.encode_words(&words, 64).unwrap();
    assert_eq!(ids, t.encode(text, 64).unwrap());
    assert_eq!((ids[0], ids[ids.len() - 1]), (0, 2));
    // Every word keeps its index over all its pieces; <s> and </s> belong to none.
    assert_eq!((word_ids[0], word_ids[1], word_ids[ids.len() - 1]), (None, Some(0), None));
    let mut seen: Vec<u32> = word_ids.iter().flatten().copied().collect();
    seen.dedup();
    assert_eq!(seen, (0..words.len() as u32).collect::<Vec<_>>());
}

#[test]
fn finetuned_mlm_and_clm_load_and_answer() {
    let texts: Vec<String> = food_or_sport().into_iter().map(|(t, _)| t).collect();
    let o = options(json!({"max_steps": 30, "learning_rate": 1e-3}));

    let out = scratch("ft-mlm");
    let outcome =
        finetune(&model_dir("bert-mlm"), Objective::Mlm, &mut Rows::texts(&texts), &o, &mut Recorder::default(), &out)
            .unwrap();
    eprintln!("{}", outcome.metrics);
    assert!(metric(&outcome, "eval_loss") < metric(&outcome, "initial_eval_loss"));
    let m = encoder(&out);
    let answers = fill_mask(&m, &["alice is eating [MASK] ."], 3, &mut || ()).unwrap().remove(0);
    assert!(["bread", "cheese", "soup", "pasta", "apples", "rice"].contains(&answers[0].token.as_str()), "{answers:?}");
    std::fs::remove_dir_all(out).unwrap();

    let out = scratch("ft-clm");
    let outcome =
        finetune(&model_dir("gpt2"), Objective::Clm, &mut Rows::texts(&texts), &o, &mut Recorder::default(), &out)
            .unwrap();
    eprintln!("{}", outcome.metrics);
    assert!(metric(&outcome, "eval_loss") < metric(&outcome, "initial_eval_loss"));
    let model = load_any(&out);
    let mut text = String::new();
    let greedy = GenerateOptions { max_tokens: 10, ..Default::default() };
    generate_with(model.causal().unwrap(), "alice is", &greedy, &mut || (), &mut |p| text.push_str(p)).unwrap();
    assert!(!text.trim().is_empty());
    std::fs::remove_dir_all(out).unwrap();
}

/// Qwen2: query, key and value biases, tied embeddings.
#[test]
fn qwen2_clm_step_matches_torch() {
    let g = golden("qwen2_clm");
    let model = TrainableLlama::load(&model_dir("qwen2")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, true));
}

/// Qwen3: norms of each query and key head, a head_dim that is not hidden_size / heads.
#[test]
fn qwen3_clm_step_matches_torch() {
    let g = golden("qwen3_clm");
    let model = TrainableLlama::load(&model_dir("qwen3")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    check_against_torch(&model, &g, &batch(&g, true));
}

/// Mistral: Llama's arithmetic under its own name, which a fine-tuned model keeps.
#[test]
fn mistral_clm_step_matches_torch() {
    let g = golden("mistral_clm");
    let model = TrainableLlama::load(&model_dir("mistral")).unwrap();
    assert!(model.fresh.is_empty(), "new parameters: {:?}", model.fresh);
    assert_eq!(model.config["architectures"][0], "MistralForCausalLM");
    check_against_torch(&model, &g, &batch(&g, true));
}

#[test]
fn finetuned_llama_learns_a_new_sentence_frame() {
    for (base, architecture) in
        [("llama", "LlamaForCausalLM"), ("qwen2", "Qwen2ForCausalLM"), ("qwen3", "Qwen3ForCausalLM")]
    {
        learns_a_new_sentence_frame(base, architecture);
    }
}

fn learns_a_new_sentence_frame(base: &str, architecture: &str) {
    // "{n} plays {x} on sunday ." is new to the fixture, which learnt the toy sentences of make_fixtures.py.
    let people = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let texts: Vec<String> =
        people.iter().flat_map(|n| ["tennis", "golf", "chess"].map(|x| format!("{n} plays {x} on sunday ."))).collect();
    let out = scratch(&format!("ft-{base}"));
    let o = options(json!({"max_steps": 40, "learning_rate": 3e-3, "batch_size": 8}));
    let outcome =
        finetune(&model_dir(base), Objective::Clm, &mut Rows::texts(&texts), &o, &mut Recorder::default(), &out)
            .unwrap();
    eprintln!("{base}: {}", outcome.metrics);
    assert_eq!((outcome.architecture.as_str(), outcome.task.as_str()), (architecture, "text-generation"));
    assert!(metric(&outcome, "eval_loss") < 0.5 * metric(&outcome, "initial_eval_loss"));
    let model = load_any(&out);
    let AnyModel::Llama(_) = &model else { panic!("not loaded as Llama") };
    let mut text = String::new();
    let greedy = GenerateOptions { max_tokens: 30, ..Default::default() };
    generate_with(model.causal().unwrap(), "grace plays", &greedy, &mut || (), &mut |p| text.push_str(p)).unwrap();
    // A sentence of the new frame, ended where the rows end (the end-of-text token after each).
    let frame = ["tennis", "golf", "chess"].map(|x| format!("grace plays {x} on sunday ."));
    assert!(frame.contains(&format!("grace plays{text}")), "{base}: grace plays{text}");
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn same_seed_gives_the_same_bytes() {
    let texts = sentences();
    let run = |seed: u64, name: &str| {
        let out = scratch(name);
        // Dropout on, so that its random stream is covered too.
        let o = options(json!({"max_steps": 12, "seed": seed, "dropout": 0.1, "batch_size": 8}));
        pretrain(Objective::Mlm, &mut Rows::texts(&texts), &o, &mut Recorder::default(), &out).unwrap();
        let files = ["model.safetensors", "tokenizer.json", "config.json"].map(|f| std::fs::read(out.join(f)).unwrap());
        std::fs::remove_dir_all(out).unwrap();
        files
    };
    let (a, b, c) = (run(42, "seed-a"), run(42, "seed-b"), run(43, "seed-c"));
    for (i, name) in ["model.safetensors", "tokenizer.json", "config.json"].iter().enumerate() {
        assert!(a[i] == b[i], "same seed, different {name}");
    }
    assert_ne!(a[0], c[0], "another seed gave the same weights");
}

/// A toy language pair, English to German word by word (as make_fixtures.py's), over every sentence of one frame.
fn english_german() -> Vec<(String, String)> {
    const WORDS: &str = "the die cat katze dog hund bird vogel horse pferd fish fisch cow kuh mouse maus sat sass \
                         ran lief slept schlief ate ass in im park park garden garten house haus river fluss \
                         field feld forest wald barn stall . .";
    let list: Vec<&str> = WORDS.split_whitespace().collect();
    let words: HashMap<&str, &str> = list.chunks(2).map(|p| (p[0], p[1])).collect();
    let mut pairs = Vec::new();
    for animal in ["cat", "dog", "bird", "horse", "fish", "cow", "mouse"] {
        for verb in ["sat", "ran", "slept", "ate"] {
            for place in ["park", "garden", "house", "river", "field", "forest", "barn"] {
                let english = format!("the {animal} {verb} in the {place} .");
                let german: Vec<&str> = english.split(' ').map(|w| words[w]).collect();
                pairs.push((english, german.join(" ")));
            }
        }
    }
    pairs
}

fn pairs_rows(pairs: &[(String, String)]) -> Rows {
    Rows::new(
        pairs.iter().map(|(s, t)| Example { text: s.clone(), target: Some(t.clone()), ..Default::default() }).collect(),
    )
}

fn translator(dir: &std::path::Path) -> Translator {
    match load_any(dir) {
        AnyModel::Seq2Seq(t) => t,
        _ => panic!("{} is not a translation model", dir.display()),
    }
}

fn translate(t: &Translator, texts: &[&str]) -> Vec<String> {
    let prefix = t.translation_prefix(None, None).unwrap();
    let inputs: Vec<String> = texts.iter().map(|s| format!("{prefix}{s}")).collect();
    t.generate(&inputs, TranslateOptions { max_tokens: 64, num_beams: 1 }, &mut || ()).unwrap()
}

#[test]
fn pretrained_seq2seq_learns_to_translate() {
    let mut pairs = english_german();
    pairs.push(("the cat sat in the park .".into(), " ".into())); // a blank target is skipped and counted
    let out = scratch("seq2seq");
    let o = options(json!({"max_steps": 450, "learning_rate": 3e-3, "warmup_ratio": 0.05, "vocab_size": 150,
                           "batch_size": 16, "dropout": 0.0, "source_prefix": "translate English to German: "}));
    let outcome = pretrain(Objective::Seq2Seq, &mut pairs_rows(&pairs), &o, &mut Recorder::default(), &out).unwrap();
    eprintln!("{}", outcome.metrics);
    assert_eq!((outcome.architecture.as_str(), outcome.task.as_str()), ("T5ForConditionalGeneration", "translation"));
    assert_eq!((outcome.examples, outcome.skipped), (pairs.len() - 1, 1));
    // The held-out rows, never trained on, are predicted almost surely, token by token.
    let (initial, eval) = (metric(&outcome, "initial_eval_loss"), metric(&outcome, "eval_loss"));
    assert!(eval < 0.05 * initial, "eval loss {eval} from {initial}");

    // Through ai_translate's path (the recorded prefix, greedy decoding until </s>), rows it learnt come back whole.
    let t = translator(&out);
    assert_eq!(t.translation_prefix(None, None).unwrap(), "translate English to German: ");
    let learnt: Vec<&(String, String)> = (0..pairs.len() - 1)
        .filter(|&i| !pg_ai_engine::train::data::held_out(i, 42, 0.1))
        .map(|i| &pairs[i])
        .take(4)
        .collect();
    let sources: Vec<&str> = learnt.iter().map(|(s, _)| s.as_str()).collect();
    let targets: Vec<&str> = learnt.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(translate(&t, &sources), targets);
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn unigram_vocabulary_is_the_same_every_time() {
    use pg_ai_engine::text::training::TrainTokenizer;
    let texts: Vec<String> = english_german().into_iter().flat_map(|(s, t)| [s, t]).collect();
    let vocab = |size: usize| {
        let t = TrainTokenizer::train_unigram(&texts, size, &Default::default()).unwrap();
        let dir = scratch("unigram");
        std::fs::create_dir_all(&dir).unwrap();
        t.write(&dir, 32).unwrap();
        let json = std::fs::read_to_string(dir.join("tokenizer.json")).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        json
    };
    let first = vocab(60);
    for _ in 0..4 {
        assert!(vocab(60) == first, "two trainings on the same texts gave different vocabularies");
    }
}

#[test]
fn t5_finetuned_for_a_new_pair() {
    // English to German with the words in reverse order: the base model's pair, changed.
    let pairs: Vec<(String, String)> =
        english_german().into_iter().map(|(s, t)| (s, t.split(' ').rev().collect::<Vec<_>>().join(" "))).collect();
    let out = scratch("ft-t5");
    let o = options(json!({"max_steps": 100, "learning_rate": 3e-3}));
    let outcome =
        finetune(&model_dir("t5"), Objective::Seq2Seq, &mut pairs_rows(&pairs), &o, &mut Recorder::default(), &out)
            .unwrap();
    eprintln!("{}", outcome.metrics);
    assert!(metric(&outcome, "eval_loss") < 0.5 * metric(&outcome, "initial_eval_loss"));
    let t = translator(&out);
    // Trained without a prefix, so ai_translate without languages adds none; the base's own pair is still known.
    assert_eq!(t.translation_prefix(None, None).unwrap(), "");
    assert_eq!(t.translation_prefix(Some("en"), Some("de")).unwrap(), "translate English to German: ");
    assert_eq!(translate(&t, &["the dog sat in the garden ."]), vec![". garten die im sass hund die"]);
    std::fs::remove_dir_all(out).unwrap();
}

type Tagged = (String, Option<Vec<Option<String>>>);

/// Tags each word of `frame`: a placeholder's words become B-/I- of its kind, the rest O.
fn tag_frame(frame: &str, fill: &[(&str, &str, &str)]) -> Tagged {
    let (mut words, mut tags) = (Vec::new(), Vec::new());
    for word in frame.split_whitespace() {
        match fill.iter().find(|(slot, _, _)| *slot == word) {
            Some((_, entity, kind)) => {
                for (i, w) in entity.split(' ').enumerate() {
                    words.push(w.to_string());
                    tags.push(Some(format!("{}-{kind}", if i == 0 { "B" } else { "I" })));
                }
            }
            None => {
                words.push(word.to_string());
                tags.push(Some("O".to_string()));
            }
        }
    }
    (words.join(" "), Some(tags))
}

/// Sentences naming people (PER) and cities (LOC), some of two words, generated deterministically.
fn people_and_places(people: &[&str], surnames: &[&str], cities: &[&str], frames: &[&str], n: usize) -> Vec<Tagged> {
    let person = |i: usize| match (i / people.len()) % 3 {
        0 => format!("{} {}", people[i % people.len()], surnames[(i / 7) % surnames.len()]),
        _ => people[i % people.len()].to_string(),
    };
    (0..n)
        .map(|i| {
            let (p, q) = (person(i), person(i * 7 + 3));
            let (c, d) = (cities[(i * 3) % cities.len()], cities[(i * 3 + 1) % cities.len()]);
            let fill = [("{p}", p.as_str(), "PER"), ("{q}", q.as_str(), "PER"), ("{c}", c, "LOC"), ("{d}", d, "LOC")];
            tag_frame(frames[i % frames.len()], &fill)
        })
        .collect()
}

const FRAMES: [&str; 7] = [
    "{p} lives in {c} .",
    "{p} flew to {c} yesterday .",
    "we met {p} in {c} last week .",
    "{c} is where {p} works .",
    "{p} and {q} visited {c} .",
    "the train from {c} to {d} was late .",
    "{p} called {q} from {c} .",
];

#[test]
fn pretrained_token_classifier_finds_people_and_places() {
    let people = ["Anna", "Maria", "John", "Peter", "Lucas", "Sofia", "Omar", "Yuki", "Ravi", "Elena"];
    let surnames = ["Smith", "Garcia", "Kowalski", "Tanaka"];
    let cities = ["Paris", "Berlin", "Madrid", "Tokyo", "Lima", "Cairo", "Oslo", "Rome", "New York", "Buenos Aires"];
    let mut data = people_and_places(&people, &surnames, &cities, &FRAMES, 300);
    let sentence = "Yuki Tanaka met Elena in Buenos Aires .";
    assert!(data.iter().all(|(t, _)| t != sentence));
    data.push((" ".to_string(), Some(Vec::new()))); // blank: skipped and counted
    let out = scratch("ner");
    let o = options(json!({"epochs": 8, "learning_rate": 2e-3, "test_size": 0.2, "batch_size": 16}));
    let outcome =
        pretrain(Objective::TokenClassification, &mut Rows::tagged(&data), &o, &mut Recorder::default(), &out).unwrap();
    eprintln!("{}", outcome.metrics);
    assert_eq!(
        (outcome.architecture.as_str(), outcome.task.as_str()),
        ("BertForTokenClassification", "token-classification")
    );
    assert_eq!((outcome.examples, outcome.skipped), (300, 1));
    assert!(metric(&outcome, "eval_examples") >= 40.0);
    assert!(metric(&outcome, "eval_loss") < 0.5 * metric(&outcome, "initial_eval_loss"));
    for key in ["accuracy", "macro_f1", "entity_f1"] {
        assert!(metric(&outcome, key) >= 0.95, "held-out {key} {}", metric(&outcome, key));
    }
    // No pooler: transformers' BertForTokenClassification has none.
    let saved = pg_ai_engine::train::params::read_safetensors(&out.join("model.safetensors")).unwrap();
    assert!(saved.keys().all(|k| !k.contains("pooler")), "{:?}", saved.keys());

    let m = encoder(&out);
    assert_eq!(m.config.labels, vec!["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]);
    assert!(m.can(Task::TokenClassification));
    let found = ner(&m, &[sentence], &mut || ()).unwrap().remove(0);
    let spans: Vec<(&str, &str)> = found.iter().map(|e| (&sentence[e.start..e.end], e.label.as_str())).collect();
    assert_eq!(spans, vec![("Yuki Tanaka", "PER"), ("Elena", "PER"), ("Buenos Aires", "LOC")], "{found:?}");
    std::fs::remove_dir_all(out).unwrap();
}

/// Fine-tunes the fixture `base` as a tagger of people and places in lower case (words the fixture models'
/// vocabularies hold whole); checks the architecture and the held-out scores, and returns the output directory.
fn finetune_tagger(base: &str, architecture: &str, epochs: usize) -> std::path::PathBuf {
    let people = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"];
    let surnames = ["smith", "jones", "brown", "taylor"];
    let cities = ["paris", "london", "berlin", "madrid", "rome", "vienna", "new york", "los angeles"];
    let frames =
        ["{p} lives in {c} .", "{p} flew to {c} yesterday .", "in {c} , {p} met {q} .", "{p} and {q} visited {c} ."];
    let data = people_and_places(&people, &surnames, &cities, &frames, 160);
    let out = scratch(&format!("ft-ner-{base}"));
    let o = options(json!({"epochs": epochs, "learning_rate": 2e-3, "test_size": 0.2, "batch_size": 8}));
    let outcome = finetune(
        &model_dir(base),
        Objective::TokenClassification,
        &mut Rows::tagged(&data),
        &o,
        &mut Recorder::default(),
        &out,
    )
    .unwrap();
    eprintln!("{}", outcome.metrics);
    assert_eq!(outcome.architecture, architecture);
    for key in ["accuracy", "entity_f1"] {
        assert!(metric(&outcome, key) >= 0.95, "held-out {key} {}", metric(&outcome, key));
    }
    out
}

/// The entities `dir`'s tagger finds in `sentence`, as (text, label).
fn entities(dir: &std::path::Path, sentence: &str) -> Vec<(String, String)> {
    let found = ner(&encoder(dir), &[sentence], &mut || ()).unwrap().remove(0);
    found.iter().map(|e| (sentence[e.start..e.end].to_string(), e.label.clone())).collect()
}

#[test]
fn token_classifier_finetuned_from_a_masked_lm() {
    let out = finetune_tagger("bert-mlm", "BertForTokenClassification", 15);
    let expected = [("judy", "PER"), ("rome", "LOC")].map(|(t, l)| (t.to_string(), l.to_string()));
    assert_eq!(entities(&out, "judy lives in rome ."), expected);
    std::fs::remove_dir_all(out).unwrap();
}

/// A classifier and a tagger fine-tuned from the masked LM `base`, a sentencepiece model (`class` names its
/// architectures). These tiny vocabularies cut most words into a bare "▁" and letters; only a word's first piece
/// is trained (as transformers' examples do), so the held-out scores, which read first pieces, are the check, and
/// the saved tagger must load as one.
fn classifier_and_tagger_from(base: &str, class: &str) {
    let mut rows = Rows::labelled(&food_or_sport());
    let out = scratch(&format!("ft-{base}-cls"));
    let o = options(json!({"epochs": 10, "learning_rate": 2e-3, "test_size": 0.2, "batch_size": 8}));
    let outcome =
        finetune(&model_dir(base), Objective::TextClassification, &mut rows, &o, &mut Recorder::default(), &out)
            .unwrap();
    check_classifier(&outcome, &out, &format!("{class}ForSequenceClassification"));
    std::fs::remove_dir_all(out).unwrap();
    let out = finetune_tagger(base, &format!("{class}ForTokenClassification"), 40);
    assert!(encoder(&out).can(Task::TokenClassification));
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn classifier_and_tagger_finetuned_from_an_xlm_roberta_masked_lm() {
    classifier_and_tagger_from("xlm-roberta-mlm", "XLMRoberta");
}

#[test]
fn classifier_and_tagger_finetuned_from_a_deberta_masked_lm() {
    classifier_and_tagger_from("deberta-mlm", "DebertaV2");
}

#[test]
fn token_classifier_finetuned_from_a_roberta_masked_lm() {
    // Pre-split words through RoBERTa's byte-level BPE: the tagger must see the tokens that the running
    // text gives at inference ("Ġrome", not "rome").
    let out = finetune_tagger("roberta-mlm", "RobertaForTokenClassification", 15);
    // Only a word's first piece is trained (as for BERT), and inference groups pieces as transformers'
    // "simple" aggregation does, so the check takes words that this tiny BPE keeps whole ("Ġberlin").
    let expected = [("judy", "PER"), ("berlin", "LOC")].map(|(t, l)| (t.to_string(), l.to_string()));
    assert_eq!(entities(&out, "judy lives in berlin ."), expected);
    std::fs::remove_dir_all(out).unwrap();
}

fn error_kind(result: pg_ai_engine::error::Result<TrainOutcome>) -> ErrorKind {
    match result {
        Ok(_) => panic!("training succeeded where it should have failed"),
        Err(e) => {
            assert!(e.kind != ErrorKind::Internal, "internal error: {}", e.message);
            e.kind
        }
    }
}

#[test]
fn bad_input_is_refused_with_the_right_error() {
    let o = options(json!({"max_steps": 2}));
    let out = scratch("bad");
    let mut quiet = Recorder::default();
    let texts = |t: &[&str]| Rows::texts(&t.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let labelled = |r: &[(&str, Option<&str>)]| {
        Rows::labelled(&r.iter().map(|(t, l)| (t.to_string(), l.map(str::to_string))).collect::<Vec<_>>())
    };
    assert_eq!(
        error_kind(pretrain(Objective::Mlm, &mut texts(&[]), &o, &mut quiet, &out)),
        ErrorKind::InvalidParameter
    );
    assert_eq!(
        error_kind(pretrain(Objective::Mlm, &mut texts(&["", " "]), &o, &mut quiet, &out)),
        ErrorKind::InvalidParameter
    );
    let one_class = labelled(&[("a b c", Some("x")), ("d e f", Some("x"))]);
    assert_eq!(
        error_kind(pretrain(Objective::TextClassification, &mut { one_class }, &o, &mut quiet, &out)),
        ErrorKind::InvalidParameter
    );
    let unlabelled = labelled(&[("a b c", Some("x")), ("d e f", None), ("g h", Some("y"))]);
    let e = pretrain(Objective::TextClassification, &mut { unlabelled }, &o, &mut quiet, &out).unwrap_err();
    assert_eq!((e.kind, e.message.as_str()), (ErrorKind::InvalidParameter, "training row 2 has text but no label"));
    let tagged = |r: &[(&str, &[&str])]| {
        let tags = |t: &[&str]| Some(t.iter().map(|s| Some(s.to_string())).collect());
        Rows::tagged(&r.iter().map(|(text, t)| (text.to_string(), tags(t))).collect::<Vec<_>>())
    };
    let miscounted = tagged(&[("alice lives in paris", &["B-PER", "O", "B-LOC"]), ("bob ran", &["B-PER", "O"])]);
    let e = pretrain(Objective::TokenClassification, &mut { miscounted }, &o, &mut quiet, &out).unwrap_err();
    assert_eq!((e.kind, e.message.as_str()), (ErrorKind::InvalidParameter, "training row 1 has 4 words but 3 tags"));
    assert!(e.hint.is_some());
    let one_tag = tagged(&[("alice lives here", &["O", "O", "O"]), ("bob ran", &["O", "O"])]);
    let e = pretrain(Objective::TokenClassification, &mut { one_tag }, &o, &mut quiet, &out).unwrap_err();
    assert_eq!((e.kind, e.message.as_str()), (ErrorKind::InvalidParameter, "every word has the same tag \"O\""));
    let mut null_tag = Rows::tagged(&[
        ("bob ran".to_string(), Some(vec![Some("B-PER".to_string()), Some("O".to_string())])),
        ("alice ran".to_string(), Some(vec![None, Some("O".to_string())])),
    ]);
    let e = pretrain(Objective::TokenClassification, &mut null_tag, &o, &mut quiet, &out).unwrap_err();
    assert_eq!((e.kind, e.message.as_str()), (ErrorKind::InvalidParameter, "training row 2 has a NULL or empty tag"));
    let mut untagged = Rows::texts(&["alice ran".to_string()]);
    let e = pretrain(Objective::TokenClassification, &mut untagged, &o, &mut quiet, &out).unwrap_err();
    assert_eq!((e.kind, e.message.as_str()), (ErrorKind::InvalidParameter, "training row 1 has text but no tags"));
    let mut fine = tagged(&[("alice ran", &["B-PER", "O"]), ("bob sat", &["B-PER", "O"])]);
    let ner_on_gpt2 = finetune(&model_dir("gpt2"), Objective::TokenClassification, &mut fine, &o, &mut quiet, &out);
    assert_eq!(error_kind(ner_on_gpt2), ErrorKind::WrongTask);
    let mut some = texts(&["the cat sat", "the dog ran"]);
    let clm_on_bert = finetune(&model_dir("bert-mlm"), Objective::Clm, &mut some, &o, &mut quiet, &out);
    assert_eq!(error_kind(clm_on_bert), ErrorKind::WrongTask);
    let mlm_on_gpt2 = finetune(&model_dir("gpt2"), Objective::Mlm, &mut some, &o, &mut quiet, &out);
    assert_eq!(error_kind(mlm_on_gpt2), ErrorKind::WrongTask);
    let clm_on_distilbert = finetune(&model_dir("distilbert-mlm"), Objective::Clm, &mut some, &o, &mut quiet, &out);
    assert_eq!(error_kind(clm_on_distilbert), ErrorKind::WrongTask);
    let e = finetune(&model_dir("t5"), Objective::Mlm, &mut some, &o, &mut quiet, &out).unwrap_err();
    assert_eq!((e.kind, e.message.as_str()), (ErrorKind::WrongTask, "a t5 model cannot be trained for mlm"));
    assert_eq!(e.hint.as_deref(), Some("A t5 base can be fine-tuned for seq2seq."));
    let e = finetune(&model_dir("marian"), Objective::Seq2Seq, &mut some, &o, &mut quiet, &out).unwrap_err();
    assert_eq!((e.kind, e.message.as_str()), (ErrorKind::WrongTask, "fine-tuning a \"marian\" model is not supported"));
    assert!(e.hint.unwrap().contains("t5 (seq2seq)"));
    let ner_on_llama = finetune(&model_dir("llama"), Objective::TokenClassification, &mut fine, &o, &mut quiet, &out);
    let e = ner_on_llama.unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::WrongTask, "a llama model cannot be trained for token-classification")
    );
    let prefixed = options(json!({"source_prefix": "summarize: "}));
    let e = finetune(&model_dir("gpt2"), Objective::Clm, &mut some, &prefixed, &mut quiet, &out).unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::InvalidParameter, "option source_prefix applies to seq2seq only")
    );
    let sized = options(json!({"hidden_size": 32}));
    let resized = finetune(&model_dir("bert-mlm"), Objective::Mlm, &mut some, &sized, &mut quiet, &out);
    assert_eq!(error_kind(resized), ErrorKind::InvalidParameter);
    for bad in [
        json!({"batch_size": 0}),
        json!({"learning_rate": -0.1}),
        json!({"mask_probability": 1.5}),
        json!({"test_size": 1.0}),
        json!({"epochs": 3, "bogus": 1}),
    ] {
        let e = TrainOptions::from_json(&bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParameter, "{bad}");
        assert!(e.hint.is_some() || e.message.contains("must be"), "{bad}: {}", e.message);
    }
    let e = Objective::parse("speech").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidParameter);
    assert!(e.hint.unwrap().contains("mlm (masked LM, BERT), clm (causal LM, GPT-2), seq2seq"));
    assert_eq!(Objective::parse("translation").unwrap(), Objective::Seq2Seq);
    assert_eq!(Objective::parse("text-classification").unwrap(), Objective::TextClassification);
    assert_eq!(Objective::parse("token-classification").unwrap(), Objective::TokenClassification);
    assert_eq!(Objective::TokenClassification.task(), "token-classification");
    // The progress callback stops training with its own error, and nothing is written.
    let mut stopper = Recorder { stop_after: Some(1), ..Default::default() };
    let e = pretrain(Objective::Mlm, &mut Rows::texts(&sentences()), &o, &mut stopper, &out).unwrap_err();
    assert_eq!(e.message, "canceling statement due to user request");
    assert!(!out.join("model.safetensors").exists());
}
