//! Every kind of model pg_ai runs from a save_pretrained directory, keyed by config.json's `model_type`: how it
//! loads, what it answers, where it runs and how a base of it is fine-tuned. Loading, fine-tuning and their error
//! hints all read this one table, so a new family is a folder in models/ and an entry here. (GGUF files carry no
//! config.json; models::gguf reads their architecture from the file.)

use super::bert::config::ModelConfig;
use super::bert::train::TrainableBert;
use super::gpt2::train::TrainableGpt2;
use super::gpt2::Gpt2Model;
use super::llama::train::TrainableLlama;
use super::llama::LlamaModel;
use super::marian::classifier::BartClassifier;
use super::t5::train::TrainableT5;
use super::{AnyModel, Model, Task};
use crate::error::{listed, AiError, ErrorKind, Result};
use crate::files::ModelFiles;
use crate::generate::translator::{Family, Translator};
use crate::text::training::Style;
use crate::train::{bert_task, data::Prepared, Objective, Trainable};
use candle_core::{Device, Tensor};
use serde_json::Value;
use std::collections::HashMap;

/// One `model_type`.
pub struct ModelType {
    pub name: &'static str,
    /// What its weights can answer (AnyModel::can); an encoder answers the task of the head it has, and embeddings.
    pub tasks: &'static [Task],
    /// Which of the pg_ai.int8_* settings holds its linear layers in 8 bits, if any.
    pub int8: Int8Setting,
    /// Whether pg_ai.device = cuda moves it to the GPU; other models run on the CPU.
    pub gpu: bool,
    pub load: fn(&ModelFiles, Value, &Target) -> Result<AnyModel>,
    /// How a base of this type is fine-tuned, where it can be.
    pub training: Option<Training>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Setting {
    Encoders,
    Decoders,
    None,
}

/// Where and how one load puts the weights, as the settings and the registry decide together.
pub struct Target {
    pub int8: bool,
    pub device: Device,
}

/// A base's weights by their transformers names.
pub type Weights = HashMap<String, Tensor>;

/// Builds the differentiable model for an objective from a config and a base's weights (empty for a new model),
/// seeded.
pub type Build = fn(Value, Objective, &Prepared, Weights, u64) -> Result<Box<dyn Trainable>>;

pub struct Training {
    pub objectives: &'static [Objective],
    /// How the tokenizer frames texts.
    pub style: Style,
    /// The config keys the `dropout` option sets.
    pub dropout_keys: &'static [&'static str],
    pub build: Build,
}

const ENCODER_TASKS: &[Task] = &[
    Task::FillMask,
    Task::TextClassification,
    Task::TokenClassification,
    Task::QuestionAnswering,
    Task::FeatureExtraction,
];
const ENCODER_OBJECTIVES: &[Objective] =
    &[Objective::Mlm, Objective::TextClassification, Objective::TokenClassification];

/// BERT, RoBERTa and their kin: one encoder (models::bert) with their own config keys.
const fn encoder(name: &'static str, dropout_keys: &'static [&'static str], trains: bool) -> ModelType {
    ModelType {
        name,
        tasks: ENCODER_TASKS,
        int8: Int8Setting::Encoders,
        gpu: true,
        load: load_encoder,
        training: if trains {
            Some(Training { objectives: ENCODER_OBJECTIVES, style: Style::Encoder, dropout_keys, build: build_bert })
        } else {
            None
        },
    }
}

// A null classifier_dropout follows hidden_dropout_prob; DistilBERT's head has its own key.
const BERT_DROPOUT: &[&str] = &["hidden_dropout_prob", "attention_probs_dropout_prob"];

pub const MODEL_TYPES: &[ModelType] = &[
    encoder("bert", BERT_DROPOUT, true),
    encoder("distilbert", &["dropout", "attention_dropout", "seq_classif_dropout"], true),
    encoder("roberta", BERT_DROPOUT, true),
    encoder("xlm-roberta", BERT_DROPOUT, true),
    encoder("camembert", BERT_DROPOUT, true),
    // Inference only so far (README, Status).
    encoder("mpnet", BERT_DROPOUT, false),
    // Their position scores and rotary tables are made on the CPU (models::deberta, models::modernbert).
    ModelType { gpu: false, ..encoder("deberta-v2", BERT_DROPOUT, true) },
    ModelType { gpu: false, ..encoder("modernbert", BERT_DROPOUT, false) },
    ModelType {
        name: "gpt2",
        tasks: &[Task::TextGeneration],
        int8: Int8Setting::Decoders,
        gpu: false,
        load: |files, config, how| Ok(AnyModel::Gpt2(Gpt2Model::load(files, config, how.int8)?)),
        training: Some(Training {
            objectives: &[Objective::Clm],
            style: Style::Decoder,
            dropout_keys: &["resid_pdrop", "embd_pdrop", "attn_pdrop"],
            build: |config, _, _, source, seed| Ok(Box::new(TrainableGpt2::build(config, source, seed)?)),
        }),
    },
    decoder("llama", true),
    decoder("mistral", true),
    decoder("qwen2", true),
    decoder("qwen3", true),
    decoder("phi3", false),
    decoder("gemma2", false),
    decoder("gemma3_text", false),
    ModelType {
        name: "t5",
        tasks: &[Task::Translation, Task::Summarization],
        int8: Int8Setting::None,
        gpu: false,
        load: |files, config, _| Ok(AnyModel::Seq2Seq(Translator::load(files, config, Family::T5)?)),
        training: Some(Training {
            objectives: &[Objective::Seq2Seq],
            style: Style::Seq2Seq,
            dropout_keys: &["dropout_rate"],
            build: |config, _, _, source, seed| Ok(Box::new(TrainableT5::build(config, source, seed)?)),
        }),
    },
    ModelType {
        name: "marian",
        tasks: &[Task::Translation],
        int8: Int8Setting::None,
        gpu: false,
        load: |files, config, _| Ok(AnyModel::Seq2Seq(Translator::load(files, config, Family::Marian)?)),
        training: None,
    },
    ModelType {
        name: "bart",
        tasks: &[Task::Summarization, Task::Translation, Task::TextClassification],
        int8: Int8Setting::None,
        gpu: false,
        load: |files, config, _| {
            Ok(if config.pointer("/architectures/0").and_then(Value::as_str) == Some("BartForSequenceClassification") {
                AnyModel::BartClassifier(BartClassifier::load(files, config)?)
            } else {
                AnyModel::Seq2Seq(Translator::load(files, config, Family::Bart)?)
            })
        },
        training: None,
    },
];

/// Llama and its relatives (see llama::projected::Variant), on models::llama; `trains`: fine-tuned on
/// llama::train (not yet for Phi-3's fused projections).
const fn decoder(name: &'static str, trains: bool) -> ModelType {
    ModelType {
        name,
        tasks: &[Task::TextGeneration],
        int8: Int8Setting::Decoders,
        gpu: false,
        load: |files, config, how| Ok(AnyModel::Llama(LlamaModel::load(files, config, how.int8)?)),
        training: if trains {
            Some(Training {
                objectives: &[Objective::Clm],
                style: Style::Decoder,
                // Llama has attention dropout only, and so have its relatives.
                dropout_keys: &["attention_dropout"],
                build: |config, _, _, source, seed| Ok(Box::new(TrainableLlama::build(config, source, seed)?)),
            })
        } else {
            None
        },
    }
}

fn load_encoder(files: &ModelFiles, config: Value, how: &Target) -> Result<AnyModel> {
    Ok(AnyModel::Encoder(Model::load(files, ModelConfig::from_value(config)?, how.int8, &how.device)?))
}

fn build_bert(
    config: Value,
    objective: Objective,
    prepared: &Prepared,
    source: Weights,
    seed: u64,
) -> Result<Box<dyn Trainable>> {
    Ok(Box::new(TrainableBert::build(config, bert_task(objective, prepared), source, seed)?))
}

/// The types that fine-tune, those with the same objectives together: "bert and roberta (mlm or clm), t5 (seq2seq)".
fn fine_tuning_summary() -> String {
    let mut groups: Vec<(Vec<&str>, &[Objective])> = Vec::new();
    for t in MODEL_TYPES {
        let Some(training) = &t.training else { continue };
        match groups.iter_mut().find(|(_, objectives)| *objectives == training.objectives) {
            Some((names, _)) => names.push(t.name),
            None => groups.push((vec![t.name], training.objectives)),
        }
    }
    listed(
        groups.iter().map(|(names, objectives)| {
            format!("{} ({})", listed(names, "and"), listed(objectives.iter().map(|o| o.name()), "or"))
        }),
        "and",
    )
}

/// The entry for config.json's `model_type`.
pub fn find(model_type: &str) -> Result<&'static ModelType> {
    MODEL_TYPES.iter().find(|t| t.name == model_type).ok_or_else(|| {
        AiError::invalid(format!("model_type \"{model_type}\" is not supported")).with_hint(format!(
            "pg_ai runs models of type {}, and GGUF files of {} models.",
            listed(MODEL_TYPES.iter().map(|t| t.name), "or"),
            super::gguf::architectures()
        ))
    })
}

/// How a base of `model_type` is fine-tuned for `objective`, or why it cannot be.
pub fn training(model_type: &str, objective: Objective) -> Result<&'static Training> {
    let Some(training) = MODEL_TYPES.iter().find(|t| t.name == model_type).and_then(|t| t.training.as_ref()) else {
        return Err(AiError::wrong_task(format!("fine-tuning a \"{model_type}\" model is not supported"))
            .with_hint(format!("Fine-tuning supports {} models.", fine_tuning_summary())));
    };
    if !training.objectives.contains(&objective) {
        return Err(AiError::new(
            ErrorKind::WrongTask,
            format!("a {model_type} model cannot be trained for {}", objective.name()),
        )
        .with_hint(format!(
            "A {model_type} base can be fine-tuned for {}.",
            listed(training.objectives.iter().map(|o| o.name()), "or")
        )));
    }
    Ok(training)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_model_type_and_hints_from_the_table() {
        for (i, t) in MODEL_TYPES.iter().enumerate() {
            assert!(MODEL_TYPES[..i].iter().all(|u| u.name != t.name), "{} twice", t.name);
        }
        let e = find("mamba").err().unwrap();
        assert_eq!(e.message, "model_type \"mamba\" is not supported");
        assert_eq!(
            e.hint.as_deref(),
            Some(
                "pg_ai runs models of type bert, distilbert, roberta, xlm-roberta, camembert, mpnet, deberta-v2, \
                 modernbert, gpt2, llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3_text, t5, marian or bart, and GGUF files of \
                 llama, qwen2, qwen3 and phi3 models."
            )
        );
        let e = training("marian", Objective::Seq2Seq).err().unwrap();
        assert_eq!(
            e.hint.as_deref(),
            Some(
                "Fine-tuning supports bert, distilbert, roberta, xlm-roberta, camembert and deberta-v2 (mlm, \
                 text-classification or token-classification), gpt2, llama, mistral, qwen2 and qwen3 (clm) and t5 \
                 (seq2seq) models."
            )
        );
        let e = training("bert", Objective::Clm).err().unwrap();
        assert_eq!(e.message, "a bert model cannot be trained for clm");
        assert_eq!(
            e.hint.as_deref(),
            Some("A bert base can be fine-tuned for mlm, text-classification or token-classification.")
        );
        assert_eq!(training("llama", Objective::Clm).unwrap().style, Style::Decoder);
    }
}
