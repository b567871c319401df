//! Sentence embeddings as sentence-transformers computes them: the pooling of `1_Pooling/config.json`
//! and the Normalize module of `modules.json`. A plain encoder gets mean pooling, as there.

use crate::error::{AiError, Result};
use crate::files::ModelFiles;
use candle_core::{DType, Tensor, D};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Cls,
    Max,
    Mean,
    MeanSqrtLen,
}

#[derive(Debug, Clone)]
pub struct Pooling {
    /// Concatenated in this order, as sentence-transformers does when several are on.
    pub modes: Vec<Mode>,
    pub normalize: bool,
}

impl Pooling {
    pub fn from_files(files: &ModelFiles) -> Result<Pooling> {
        let modules = files.read_json("modules.json")?;
        let module_path = |kind: &str| -> Option<String> {
            modules.as_ref()?.as_array()?.iter().find_map(|m| {
                let t = m.get("type")?.as_str()?;
                t.ends_with(kind).then(|| m.get("path").and_then(Value::as_str).unwrap_or("").to_string())
            })
        };
        let normalize = module_path("Normalize").is_some();
        let Some(pooling_dir) = module_path("Pooling") else {
            return Ok(Pooling { modes: vec![Mode::Mean], normalize });
        };
        let config = files.read_json(&format!("{pooling_dir}/config.json"))?.ok_or_else(|| {
            AiError::missing_file(format!("modules.json names {pooling_dir}/config.json, which is missing"))
        })?;
        let on = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
        let modes: Vec<Mode> = [
            ("pooling_mode_cls_token", Mode::Cls),
            ("pooling_mode_max_tokens", Mode::Max),
            ("pooling_mode_mean_tokens", Mode::Mean),
            ("pooling_mode_mean_sqrt_len_tokens", Mode::MeanSqrtLen),
        ]
        .into_iter()
        .filter(|(key, _)| on(key))
        .map(|(_, mode)| mode)
        .collect();
        if modes.is_empty() {
            return Err(AiError::invalid(format!("{pooling_dir}/config.json sets no pooling mode pg_ai supports"))
                .with_hint("Supported: cls, max, mean and mean_sqrt_len tokens."));
        }
        Ok(Pooling { modes, normalize })
    }

    /// (batch, seq, hidden) hidden states and (batch, seq) mask -> (batch, dim) embeddings.
    pub fn apply(&self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mask = mask.to_device(hidden.device())?.to_dtype(DType::F32)?.unsqueeze(2)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mut parts = Vec::with_capacity(self.modes.len());
        for mode in &self.modes {
            parts.push(match mode {
                Mode::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
                Mode::Max => {
                    // Padding must never win the max: push it far below any real value.
                    let masked = hidden.broadcast_add(&((mask.clone() - 1.0)? * 1e9)?)?;
                    masked.max(1)?
                }
                Mode::Mean => hidden.broadcast_mul(&mask)?.sum(1)?.broadcast_div(&counts)?,
                Mode::MeanSqrtLen => hidden.broadcast_mul(&mask)?.sum(1)?.broadcast_div(&counts.sqrt()?)?,
            });
        }
        let mut pooled = Tensor::cat(&parts, 1)?;
        if self.normalize {
            let norm = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            pooled = pooled.broadcast_div(&norm)?;
        }
        Ok(pooled)
    }
}
