//! BART's sequence classifier (bart-large-mnli, the zero-shot model transformers defaults to), as
//! BartForSequenceClassification computes it: the encoder reads the text, the decoder reads it again shifted right
//! by one (its start token first), and the decoder's state at the text's last end token goes through a dense
//! layer, tanh and the output layer.

use super::{Kind, Marian, MarianConfig};
use crate::error::{AiError, Result};
use crate::files::ModelFiles;
use crate::generate::seq2seq::{Memory, Seq2Seq};
use crate::models::bert::config::read_labels;
use crate::models::bert::{var_builder, Batch};
use crate::text::TextTokenizer;
use candle_core::{Device, Module, Tensor};
use candle_nn::Linear;
use serde_json::Value;

pub struct BartClassifier {
    network: Marian,
    dense: Linear,
    out: Linear,
    pub tokenizer: TextTokenizer,
    /// In id order, from id2label.
    pub labels: Vec<String>,
    /// problem_type "multi_label_classification": scores are sigmoids rather than a softmax.
    pub multi_label: bool,
    eos: u32,
    decoder_start: u32,
    pub config: Value,
    pub architecture: String,
    pub parameters: usize,
}

impl BartClassifier {
    pub fn load(files: &ModelFiles, config: Value) -> Result<Self> {
        let network_config: MarianConfig = serde_json::from_value(config.clone())
            .map_err(|e| AiError::corrupt(format!("config.json is not a BART config: {e}")))?;
        let labels = read_labels(&config)?;
        if labels.is_empty() {
            return Err(AiError::corrupt("config.json names no labels (id2label)"));
        }
        let id = |name: &str, default: u32| config.get(name).and_then(Value::as_u64).map_or(default, |v| v as u32);
        let vb = var_builder(&files.weights, &Device::Cpu)?;
        let network = Marian::load(&vb, network_config, Kind::Bart)?;
        let d = network.config.d_model;
        let head = vb.pp("classification_head");
        let (dense, out) = (|| {
            Ok::<_, candle_core::Error>((
                candle_nn::linear(d, d, head.pp("dense"))?,
                candle_nn::linear(d, labels.len(), head.pp("out_proj"))?,
            ))
        })()
        .map_err(|e| AiError::corrupt(format!("the classification head does not match config.json: {e}")))?;
        let parameters = network.parameter_count() + (d + 1) * (d + labels.len());
        Ok(BartClassifier {
            tokenizer: TextTokenizer::load(&files.dir, network.config.max_position_embeddings, None)?,
            multi_label: config.get("problem_type").and_then(Value::as_str) == Some("multi_label_classification"),
            eos: id("eos_token_id", 2),
            decoder_start: id("decoder_start_token_id", 2),
            architecture: config.pointer("/architectures/0").and_then(Value::as_str).unwrap_or("").to_string(),
            network,
            dense,
            out,
            labels,
            config,
            parameters,
        })
    }

    /// Logits (rows, labels) of a padded batch.
    pub fn logits(&self, batch: &Batch) -> Result<Tensor> {
        let memory = Memory::new(self.network.encode(&batch.ids, &batch.mask)?, &batch.mask)?;
        let ids: Vec<Vec<u32>> = batch.ids.to_vec2()?;
        let (rows, len) = batch.ids.dims2()?;
        // transformers' shift_tokens_right, and the row of each text's last end token in the decoder's output.
        let mut shifted = Vec::with_capacity(rows * len);
        let mut last_ends = Vec::with_capacity(rows);
        for (r, row) in ids.iter().enumerate() {
            // A row with an end token is not empty.
            let end = row.iter().rposition(|&t| t == self.eos).ok_or_else(|| {
                AiError::invalid("the input has no end token").with_hint("The tokenizer must end texts with </s>.")
            })?;
            shifted.push(self.decoder_start);
            shifted.extend_from_slice(&row[..len - 1]);
            last_ends.push((r * len + end) as u32);
        }
        let shifted = Tensor::from_vec(shifted, (rows, len), &Device::Cpu)?;
        let states = self.network.decoder_states(&shifted, &memory)?;
        let d = states.dim(2)?;
        let at_ends =
            states.reshape((rows * len, d))?.index_select(&Tensor::from_vec(last_ends, rows, &Device::Cpu)?, 0)?;
        Ok(self.out.forward(&self.dense.forward(&at_ends)?.tanh()?)?)
    }
}
