//! Checkpoints: a save_pretrained directory (config, weights, tokenizer) plus what the training loop needs to
//! go on exactly where it stopped: AdamW's moments and the loop's counters and random streams. Resuming
//! from one gives the same bytes as a run that never stopped.

use crate::error::{AiError, Result};
use crate::train::params::{read_safetensors, Params};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// AdamW's first and second moments of one parameter.
pub type Moments = (Tensor, Tensor);

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The training loop's state after `step` optimizer steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: usize,
    pub total_steps: usize,
    /// Real tokens trained on so far, and the seconds it took (for the rate shown in progress reports).
    pub tokens: usize,
    pub seconds: f64,
    /// Loss summed since the last report, over this many steps, and the last report's mean.
    pub window_loss: f64,
    pub window_steps: usize,
    pub last_window_loss: Option<f64>,
    pub initial_eval_loss: Option<f64>,
    /// Word positions of the masking and dropout random streams (ChaCha8).
    pub mask_rng_position: u128,
    pub dropout_rng_position: u128,
    pub learning_rate: f64,
    /// What the run trained on: a resume that sees other rows would not continue the same run.
    pub data: DataShape,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataShape {
    pub objective: String,
    pub train_rows: usize,
    pub eval_rows: usize,
    pub labels: Vec<String>,
}

impl TrainerState {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| AiError::missing_file(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| AiError::corrupt(format!("{} is not a trainer state: {e}", path.display())))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| AiError::internal(e.to_string()))?;
        let path = dir.join(STATE_FILE);
        std::fs::write(&path, text + "\n")
            .map_err(|e| AiError::internal(format!("cannot write {}: {e}", path.display())))
    }

    /// Refuses to resume when the rows no longer give the same training set.
    pub fn check_data(&self, now: &DataShape) -> Result<()> {
        if self.data == *now {
            return Ok(());
        }
        let then = &self.data;
        Err(AiError::invalid(format!(
            "the training rows changed since the checkpoint ({} training and {} held-out rows then, {} and {} now)",
            then.train_rows, then.eval_rows, now.train_rows, now.eval_rows
        ))
        .with_hint("A job resumes only on the rows it started with; submit it again to train on the new rows."))
    }
}

/// AdamW's moments as safetensors: `exp_avg.<name>` and `exp_avg_sq.<name>`, torch's names for them.
pub fn write_moments<'a>(moments: impl Iterator<Item = (&'a str, Option<&'a Moments>)>, dir: &Path) -> Result<()> {
    let mut tensors = Vec::new();
    for (name, pair) in moments {
        if let Some((m, v)) = pair {
            tensors.push((format!("exp_avg.{name}"), m.clone()));
            tensors.push((format!("exp_avg_sq.{name}"), v.clone()));
        }
    }
    let path = dir.join(OPTIMIZER_FILE);
    safetensors::serialize_to_file(tensors, None, &path)
        .map_err(|e| AiError::internal(format!("cannot write {}: {e}", path.display())))
}

/// The moments for `params` in their order (None for a parameter that never had a gradient).
pub fn read_moments(params: &Params, dir: &Path) -> Result<Vec<Option<Moments>>> {
    let mut saved = read_safetensors(&dir.join(OPTIMIZER_FILE))?;
    params
        .list
        .iter()
        .map(|p| {
            let pair = (saved.remove(&format!("exp_avg.{}", p.name)), saved.remove(&format!("exp_avg_sq.{}", p.name)));
            match pair {
                (Some(m), Some(v)) if m.dims() == p.var.dims() && v.dims() == p.var.dims() => Ok(Some((m, v))),
                (None, None) => Ok(None),
                _ => Err(AiError::corrupt(format!("the checkpoint's optimizer state for {} is damaged", p.name))),
            }
        })
        .collect()
}
