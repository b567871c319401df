//! Training: new models from rows (`pretrain`) or more training of a saved one (`finetune`), written
//! as save_pretrained directories that engine::model loads unchanged. No Postgres here: rows come
//! through `DataSource`, interrupts and progress go through `Progress`.

pub mod batch;
pub mod bert;
pub mod gpt2;
pub mod nn;
pub mod optim;
pub mod options;
pub mod params;

pub use batch::{Batch, Targets};
pub use bert::{BertTask, TrainableBert};
pub use gpt2::TrainableGpt2;
pub use nn::Dropout;
pub use optim::{AdamW, AdamWConfig, Gradients};
pub use options::TrainOptions;
pub use params::Params;

use crate::engine::error::{AiError, Result};
use candle_core::Tensor;
use serde_json::Value;
use std::path::Path;

/// A model being trained: its parameters and the logits its loss compares with the batch's targets.
pub trait Trainable {
    fn params(&self) -> &Params;
    /// Logits for the batch's targets: (targets, vocab) for token targets, (rows, labels) for labels.
    /// Dropout applies when `dropout` is given.
    fn logits(&self, batch: &Batch, dropout: Option<&mut Dropout>) -> Result<Tensor>;
    /// The config.json that goes with the weights.
    fn config(&self) -> &Value;

    /// Mean cross-entropy over the batch's targets, as transformers' models compute `loss`.
    fn loss(&self, batch: &Batch, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        Ok(candle_nn::loss::cross_entropy(&self.logits(batch, dropout)?, &batch.target_tensor()?)?)
    }

    /// Writes config.json and model.safetensors into `dir`.
    fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self.config()).map_err(|e| AiError::internal(e.to_string()))?;
        std::fs::write(dir.join("config.json"), text + "\n")
            .map_err(|e| AiError::internal(format!("cannot write {}: {e}", dir.display())))?;
        self.params().save(&dir.join("model.safetensors"))
    }
}
