//! What pg_ai needs from a transformers `config.json`, read leniently: BERT, DistilBERT, RoBERTa and MPNet
//! name the same quantities differently.

use crate::error::{AiError, Result};
use crate::models::deberta::DebertaConfig;
use serde_json::Value;

/// The encoder families pg_ai runs. They share one implementation (see models::bert).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bert,
    DistilBert,
    Roberta,
    /// RoBERTa's positions and heads, with a relative position bias in every layer's attention.
    MPNet,
    /// DeBERTa-v2 and v3: disentangled attention (models::deberta).
    Deberta,
    /// ModernBERT: a network of its own (models::modernbert) under the heads here.
    ModernBert,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::DistilBert => "distilbert",
            Family::Roberta => "roberta",
            Family::MPNet => "mpnet",
            Family::Deberta => "deberta",
            Family::ModernBert => "model",
        }
    }

    /// RoBERTa and MPNet number positions from pad_token_id + 1 and share their heads' names.
    pub fn roberta_like(self) -> bool {
        matches!(self, Family::Roberta | Family::MPNet)
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub family: Family,
    /// `architectures[0]`, e.g. "BertForMaskedLM"; empty when the config does not say.
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate_size: usize,
    pub activation: String,
    pub max_positions: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
    /// MPNet's relative position buckets (its attention bias table's rows); 0 for the others.
    pub relative_buckets: usize,
    /// DeBERTa's attention and pooler settings.
    pub deberta: Option<DebertaConfig>,
    /// Labels in id order, from `id2label`.
    pub labels: Vec<String>,
    /// "multi_label_classification" makes classification scores sigmoids instead of a softmax.
    pub multi_label: bool,
    pub raw: Value,
}

fn usize_field(v: &Value, names: &[&str]) -> Option<usize> {
    names.iter().find_map(|n| v.get(*n).and_then(Value::as_u64)).map(|n| n as usize)
}

impl ModelConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: Value =
            serde_json::from_str(text).map_err(|e| AiError::corrupt(format!("config.json is not valid JSON: {e}")))?;
        Self::from_value(raw)
    }

    pub fn from_value(raw: Value) -> Result<Self> {
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("");
        let family =
            match model_type {
                "bert" => Family::Bert,
                "distilbert" => Family::DistilBert,
                "roberta" | "xlm-roberta" | "camembert" => Family::Roberta,
                "mpnet" => Family::MPNet,
                "deberta-v2" => Family::Deberta,
                "modernbert" => Family::ModernBert,
                other => return Err(AiError::invalid(format!("model_type \"{other}\" is not supported")).with_hint(
                    "pg_ai runs bert, distilbert, roberta, mpnet, deberta-v2 and modernbert encoders (see the registry for every \
                     model type).",
                )),
            };
        let need = |names: &[&str]| {
            usize_field(&raw, names).ok_or_else(|| AiError::corrupt(format!("config.json lacks {}", names.join(" / "))))
        };
        let hidden_size = need(&["hidden_size", "dim"])?;
        let labels = read_labels(&raw)?;
        let pad_token_id = usize_field(&raw, &["pad_token_id"]).unwrap_or(0);
        let vocab_size = need(&["vocab_size"])?;
        // transformers refuses it too (an embedding's padding_idx must be one of its rows); RoBERTa's positions
        // start after it.
        if pad_token_id >= vocab_size {
            return Err(AiError::corrupt(format!(
                "config.json: pad_token_id {pad_token_id} is not below vocab_size {vocab_size}"
            )));
        }
        let activation = raw
            .get("hidden_act")
            .or_else(|| raw.get("activation"))
            .or_else(|| raw.get("hidden_activation"))
            .and_then(Value::as_str)
            .unwrap_or("gelu")
            .to_string();
        let max_positions = need(&["max_position_embeddings"])?;
        let (layers, heads) = (need(&["num_hidden_layers", "n_layers"])?, need(&["num_attention_heads", "n_heads"])?);
        let deberta = match family {
            Family::Deberta => Some(DebertaConfig::from_value(&raw, max_positions, hidden_size, heads)?),
            _ => None,
        };
        Ok(ModelConfig {
            family,
            architecture: raw
                .get("architectures")
                .and_then(|a| a.get(0))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            vocab_size,
            hidden_size,
            layers,
            heads,
            intermediate_size: need(&["intermediate_size", "hidden_dim"])?,
            activation,
            max_positions,
            type_vocab_size: usize_field(&raw, &["type_vocab_size"]).unwrap_or(0),
            layer_norm_eps: raw
                .get("layer_norm_eps")
                .or_else(|| raw.get("norm_eps"))
                .and_then(Value::as_f64)
                .unwrap_or(1e-12),
            pad_token_id,
            relative_buckets: match family {
                Family::MPNet => usize_field(&raw, &["relative_attention_num_buckets"]).unwrap_or(32),
                _ => 0,
            },
            deberta,
            multi_label: raw.get("problem_type").and_then(Value::as_str) == Some("multi_label_classification"),
            labels,
            raw,
        })
    }

    /// Longest input in tokens, special tokens included. RoBERTa and MPNet reserve pad_token_id + 1 positions.
    pub fn max_tokens(&self) -> usize {
        match self.family {
            _ if self.family.roberta_like() => self.max_positions.saturating_sub(self.pad_token_id + 1),
            _ => self.max_positions,
        }
    }
}

/// Labels in id order, from `id2label` (BART's sequence classifier reads them too).
pub fn read_labels(raw: &Value) -> Result<Vec<String>> {
    let Some(map) = raw.get("id2label").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let mut labels = vec![None; map.len()];
    for (id, label) in map {
        let i: usize = id
            .parse()
            .ok()
            .filter(|i| *i < labels.len())
            .ok_or_else(|| AiError::corrupt(format!("id2label has a bad id \"{id}\"")))?;
        labels[i] = label.as_str().map(str::to_string);
    }
    labels
        .into_iter()
        .map(|l| l.ok_or_else(|| AiError::corrupt("id2label labels must be strings with ids 0..n")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_distilbert_names() {
        let c = ModelConfig::from_json(
            r#"{"model_type":"distilbert","dim":32,"n_layers":2,"n_heads":4,"hidden_dim":64,
               "vocab_size":100,"max_position_embeddings":64,"activation":"gelu",
               "architectures":["DistilBertForSequenceClassification"],
               "id2label":{"1":"pos","0":"neg"}}"#,
        )
        .unwrap();
        assert_eq!(c.family, Family::DistilBert);
        assert_eq!((c.hidden_size, c.layers, c.heads, c.intermediate_size), (32, 2, 4, 64));
        assert_eq!(c.labels, vec!["neg", "pos"]);
        assert_eq!(c.architecture, "DistilBertForSequenceClassification");
    }

    #[test]
    fn rejects_unknown_family() {
        let e = ModelConfig::from_json(r#"{"model_type":"mamba"}"#).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::InvalidParameter);
    }
}
