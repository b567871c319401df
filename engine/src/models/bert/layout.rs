//! What DistilBERT and RoBERTa name and do differently from BERT. TrainableBert is one encoder for all
//! three; this table holds transformers' tensor names, config keys and head shapes of each, so that
//! what it saves loads in engine::models::bert and in transformers.

use crate::error::{AiError, ErrorKind, Result};
use crate::models::bert::config::Family;
use crate::models::bert::Names;
use crate::train::nn::Activation;
use serde_json::Value;

pub struct Layout {
    pub family: Family,
    /// The encoder's prefix in task models' tensor names ("bert", "distilbert", "roberta").
    pub prefix: &'static str,
    /// The start of architecture names ("Bert" in "BertForMaskedLM").
    pub class: &'static str,
    /// Top-level names in a bare encoder's file, which lacks the prefix.
    pub bare: &'static [&'static str],
    /// The encoder layers' tensor names, shared with inference.
    pub names: &'static Names,
    pub token_types: bool,
    /// DistilBERT adds the attention output to the residual without dropout.
    pub attention_out_dropout: bool,
    /// Masked-LM head: transform, its LayerNorm, the decoder's bias (the decoder is the word embeddings),
    /// and the transform's activation where it is not hidden_act.
    pub mlm_dense: &'static str,
    pub mlm_norm: &'static str,
    pub mlm_bias: &'static str,
    pub mlm_act: Option<Activation>,
    /// Sequence classifier: a dense layer (and its activation) on the first token, then the output layer.
    pub seq_dense: &'static str,
    pub seq_act: Activation,
    pub seq_out: &'static str,
    /// RoBERTa's classification head applies dropout before its dense layer too.
    pub seq_dropout_first: bool,
}

const BERT: Layout = Layout {
    family: Family::Bert,
    prefix: "bert",
    class: "Bert",
    bare: &["embeddings.", "encoder.", "pooler."],
    names: Names::of(Family::Bert),
    token_types: true,
    attention_out_dropout: true,
    mlm_dense: "cls.predictions.transform.dense",
    mlm_norm: "cls.predictions.transform.LayerNorm",
    mlm_bias: "cls.predictions.bias",
    mlm_act: None,
    seq_dense: "bert.pooler.dense",
    seq_act: Activation::Tanh,
    seq_out: "classifier",
    seq_dropout_first: false,
};

const DISTILBERT: Layout = Layout {
    family: Family::DistilBert,
    prefix: "distilbert",
    class: "DistilBert",
    bare: &["embeddings.", "transformer."],
    names: Names::of(Family::DistilBert),
    token_types: false,
    attention_out_dropout: false,
    mlm_dense: "vocab_transform",
    mlm_norm: "vocab_layer_norm",
    mlm_bias: "vocab_projector.bias",
    mlm_act: None,
    seq_dense: "pre_classifier",
    seq_act: Activation::Relu,
    seq_out: "classifier",
    seq_dropout_first: false,
};

const ROBERTA: Layout = Layout {
    family: Family::Roberta,
    prefix: "roberta",
    class: "Roberta",
    bare: &["embeddings.", "encoder.", "pooler."],
    mlm_dense: "lm_head.dense",
    mlm_norm: "lm_head.layer_norm",
    mlm_bias: "lm_head.bias",
    // RobertaLMHead applies erf GELU whatever hidden_act says.
    mlm_act: Some(Activation::Gelu),
    seq_dense: "classifier.dense",
    seq_act: Activation::Tanh,
    seq_out: "classifier.out_proj",
    seq_dropout_first: true,
    ..BERT
};

const DEBERTA: Layout = Layout {
    family: Family::Deberta,
    prefix: "deberta",
    class: "DebertaV2",
    bare: &["embeddings.", "encoder."],
    names: Names::of(Family::Deberta),
    // ContextPooler: dropout, dense and its activation (pooler_hidden_act, read at build), then the classifier.
    seq_dense: "pooler.dense",
    seq_act: Activation::Gelu,
    seq_dropout_first: true,
    ..BERT
};

/// Dropout probabilities, read from a family's own config keys.
pub struct Dropouts {
    pub hidden: f64,
    pub attention: f64,
    pub sequence_head: f64,
    /// Before the sequence head's dense layer, where the layout has dropout there.
    pub before_pooler: f64,
    pub token_head: f64,
}

fn f64_field(config: &Value, name: &str, default: f64) -> f64 {
    config.get(name).and_then(Value::as_f64).unwrap_or(default)
}

impl Layout {
    /// The layout of a family that trains here (MPNet does not yet: its relative position bias has no
    /// differentiable attention of its own).
    pub fn of(family: Family) -> Result<&'static Layout> {
        match family {
            Family::Bert => Ok(&BERT),
            Family::DistilBert => Ok(&DISTILBERT),
            Family::Roberta => Ok(&ROBERTA),
            Family::MPNet => Err(AiError::new(ErrorKind::Unsupported, "MPNet models cannot be trained here yet")),
            Family::Deberta => Ok(&DEBERTA),
            Family::ModernBert => {
                Err(AiError::new(ErrorKind::Unsupported, "ModernBERT models cannot be trained here yet"))
            }
        }
    }

    /// The start of architecture names for config.json's `model_type`: XLM-RoBERTa and CamemBERT are RoBERTa under
    /// names of their own.
    pub fn class_of(&self, model_type: &str) -> &'static str {
        match model_type {
            "xlm-roberta" => "XLMRoberta",
            "camembert" => "Camembert",
            _ => self.class,
        }
    }

    /// RoBERTa numbers positions from pad_token_id + 1, as transformers' create_position_ids does.
    pub fn position_offset(&self, pad_token_id: usize) -> usize {
        if self.family == Family::Roberta {
            pad_token_id + 1
        } else {
            0
        }
    }

    pub fn dropouts(&self, config: &Value) -> Dropouts {
        match self.family {
            Family::DistilBert => {
                let hidden = f64_field(config, "dropout", 0.1);
                Dropouts {
                    hidden,
                    attention: f64_field(config, "attention_dropout", 0.1),
                    sequence_head: f64_field(config, "seq_classif_dropout", 0.2),
                    before_pooler: 0.0,
                    token_head: hidden,
                }
            }
            Family::Deberta => {
                // DebertaV2ForSequenceClassification: cls_dropout (else hidden_dropout_prob) before the classifier,
                // and its ContextPooler's pooler_dropout before the pooler; the tagger drops hidden_dropout_prob.
                let hidden = f64_field(config, "hidden_dropout_prob", 0.1);
                Dropouts {
                    hidden,
                    attention: f64_field(config, "attention_probs_dropout_prob", 0.1),
                    sequence_head: f64_field(config, "cls_dropout", hidden),
                    before_pooler: f64_field(config, "pooler_dropout", 0.0),
                    token_head: hidden,
                }
            }
            Family::Bert | Family::Roberta | Family::MPNet | Family::ModernBert => {
                let hidden = f64_field(config, "hidden_dropout_prob", 0.1);
                let head = f64_field(config, "classifier_dropout", hidden);
                Dropouts {
                    hidden,
                    attention: f64_field(config, "attention_probs_dropout_prob", 0.1),
                    sequence_head: head,
                    // RoBERTa's head drops the same before its dense layer.
                    before_pooler: head,
                    token_head: head,
                }
            }
        }
    }
}
