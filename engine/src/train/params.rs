//! A model's trainable parameters by their transformers names: taken from a base model's file when
//! it has them, otherwise initialised as transformers does (seeded), and written back as safetensors.

use crate::error::{AiError, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;
use std::path::Path;

pub struct Param {
    pub name: String,
    pub var: Var,
    /// Whether AdamW decays it: HF Trainer decays neither biases nor LayerNorm weights.
    pub decay: bool,
}

#[derive(Default)]
pub struct Params {
    pub list: Vec<Param>,
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.list.iter().find(|p| p.name == name).map(|p| p.var.as_tensor())
    }

    pub fn count(&self) -> usize {
        self.list.iter().map(|p| p.var.elem_count()).sum()
    }

    /// Writes the parameters as safetensors with transformers' {"format": "pt"} metadata.
    /// The file is the same bytes for the same values: safetensors orders tensors by name.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> =
            self.list.iter().map(|p| (p.name.clone(), p.var.as_tensor().clone())).collect();
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(tensors, Some(metadata), path)
            .map_err(|e| AiError::internal(format!("cannot write {}: {e}", path.display())))
    }
}

/// A save_pretrained directory's config.json.
pub fn read_config(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| AiError::missing_file(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| AiError::corrupt(format!("{} is not valid JSON: {e}", path.display())))
}

/// Reads every tensor of a safetensors file as f32.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
        AiError::corrupt(format!("cannot read {}: {e}", path.display()))
            .with_hint("The file is not valid safetensors; write it again with save_pretrained.")
    })?;
    tensors.into_iter().map(|(name, t)| Ok((name, t.to_dtype(DType::F32)?))).collect()
}

/// The number of parameters in a safetensors file, from its header alone (the weights are not read).
pub fn safetensors_parameters(path: &Path) -> Result<usize> {
    use std::io::Read;
    let corrupt = |why: String| AiError::corrupt(format!("cannot read {}: {why}", path.display()));
    let mut file = std::fs::File::open(path).map_err(|e| corrupt(e.to_string()))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).map_err(|e| corrupt(e.to_string()))?;
    let length = u64::from_le_bytes(length);
    // safetensors itself refuses headers above 100 MB.
    if length > 100_000_000 {
        return Err(corrupt(format!("a header of {length} bytes")));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header).map_err(|e| corrupt(e.to_string()))?;
    let header: serde_json::Value = serde_json::from_slice(&header).map_err(|e| corrupt(e.to_string()))?;
    let tensors = header.as_object().ok_or_else(|| corrupt("a header that is not an object".into()))?;
    Ok(tensors
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, t)| t.get("shape")?.as_array().cloned())
        .map(|shape| shape.iter().map(|d| d.as_u64().unwrap_or(0) as usize).fold(1usize, usize::saturating_mul))
        .fold(0, usize::saturating_add))
}

/// Builds a parameter list in a fixed order, so the same seed draws the same values.
pub struct ParamBuilder {
    source: HashMap<String, Tensor>,
    rng: ChaCha8Rng,
    pub params: Params,
    /// Names initialised here rather than taken from the source.
    pub fresh: Vec<String>,
    /// Their parameters: a base's config.json can ask for any number of layers the file lacks.
    fresh_parameters: usize,
}

impl ParamBuilder {
    pub fn new(source: HashMap<String, Tensor>, seed: u64) -> Self {
        ParamBuilder {
            source,
            rng: ChaCha8Rng::seed_from_u64(seed),
            params: Params::default(),
            fresh: Vec::new(),
            fresh_parameters: 0,
        }
    }

    fn add(
        &mut self,
        name: &str,
        dims: &[usize],
        decay: bool,
        init: impl FnOnce(&mut ChaCha8Rng, usize) -> Vec<f32>,
    ) -> Result<Tensor> {
        let tensor = match self.source.remove(name) {
            Some(t) if t.dims() == dims => t,
            Some(t) => {
                return Err(AiError::corrupt(format!(
                    "tensor {name} has shape {:?} where config.json implies {dims:?}",
                    t.dims()
                )))
            }
            None => {
                let n = crate::budget::product(dims);
                self.fresh_parameters = self.fresh_parameters.saturating_add(n);
                // Weights, gradients and AdamW's two moments, as train::options::Shape counts them.
                crate::budget::check(self.fresh_parameters.saturating_mul(16), || {
                    format!("training {} new parameters (up to {name})", self.fresh_parameters)
                })?;
                self.fresh.push(name.to_string());
                Tensor::from_vec(init(&mut self.rng, n), dims, &Device::Cpu)?
            }
        };
        let var = Var::from_tensor(&tensor)?;
        let t = var.as_tensor().clone();
        self.params.list.push(Param { name: name.to_string(), var, decay });
        Ok(t)
    }

    /// Normal(0, std) weights, as transformers' `_init_weights` draws them; decayed.
    pub fn normal(&mut self, name: &str, dims: &[usize], std: f64) -> Result<Tensor> {
        self.add(name, dims, true, |rng, n| {
            let normal = Normal::new(0.0f32, std as f32).expect("std is positive");
            (0..n).map(|_| normal.sample(rng)).collect()
        })
    }

    /// Normal(0, std) values that are not decayed: HF Trainer decays no parameter with "bias" in its name,
    /// T5's relative_attention_bias tables among them.
    pub fn normal_undecayed(&mut self, name: &str, dims: &[usize], std: f64) -> Result<Tensor> {
        self.add(name, dims, false, |rng, n| {
            let normal = Normal::new(0.0f32, std as f32).expect("std is positive");
            (0..n).map(|_| normal.sample(rng)).collect()
        })
    }

    /// An RMS norm's scale (T5's layer norms): ones, not decayed.
    pub fn scale(&mut self, name: &str, dim: usize) -> Result<Tensor> {
        self.add(name, &[dim], false, |_, n| vec![1.0; n])
    }

    /// An embedding whose padding row starts at zero, as nn.Embedding(padding_idx) is initialised.
    pub fn embedding(&mut self, name: &str, rows: usize, dim: usize, std: f64, pad: Option<usize>) -> Result<Tensor> {
        self.add(name, &[rows, dim], true, |rng, n| {
            let normal = Normal::new(0.0f32, std as f32).expect("std is positive");
            let mut v: Vec<f32> = (0..n).map(|_| normal.sample(rng)).collect();
            if let Some(p) = pad.filter(|p| *p < rows) {
                v[p * dim..(p + 1) * dim].fill(0.0);
            }
            v
        })
    }

    /// A bias: zeros, not decayed.
    pub fn bias(&mut self, name: &str, dim: usize) -> Result<Tensor> {
        self.add(name, &[dim], false, |_, n| vec![0.0; n])
    }

    /// A LayerNorm's weight and bias: ones and zeros, neither decayed.
    pub fn norm(&mut self, prefix: &str, dim: usize) -> Result<(Tensor, Tensor)> {
        let w = self.add(&format!("{prefix}.weight"), &[dim], false, |_, n| vec![1.0; n])?;
        Ok((w, self.bias(&format!("{prefix}.bias"), dim)?))
    }

    pub fn has_source(&self, name: &str) -> bool {
        self.source.contains_key(name)
    }
}
