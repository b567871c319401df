//! GPT-2 with a KV cache. candle has no GPT-2; the nearest model (bigcode) stores its projections
//! the other way round, as GPT-2's Conv1D layers keep their weights as (in, out).

use crate::error::{AiError, Result};
use crate::generate::kv_cache::{causal_mask, CachedDecoder, KvCache};
use crate::kernels::int8::{bytes, Projection};
use crate::models::layer_norm_size;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{ops::softmax_last_dim, Embedding, LayerNorm, VarBuilder};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_positions: usize,
    pub n_inner: usize,
    pub layer_norm_epsilon: f64,
    pub eos_token_id: Option<u32>,
}

impl Gpt2Config {
    pub fn from_json(raw: &Value) -> Result<Self> {
        let need = |name: &str| {
            raw.get(name)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| AiError::corrupt(format!("config.json lacks {name}")))
        };
        let n_embd = need("n_embd")?;
        let activation = raw.get("activation_function").and_then(Value::as_str).unwrap_or("gelu_new");
        if !matches!(activation, "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") {
            return Err(AiError::invalid(format!("GPT-2 activation \"{activation}\" is not supported")));
        }
        Ok(Gpt2Config {
            vocab_size: need("vocab_size")?,
            n_embd,
            n_layer: need("n_layer")?,
            n_head: need("n_head")?,
            n_positions: need("n_positions")?,
            n_inner: raw.get("n_inner").and_then(Value::as_u64).map_or(n_embd.saturating_mul(4), |v| v as usize),
            layer_norm_epsilon: raw.get("layer_norm_epsilon").and_then(Value::as_f64).unwrap_or(1e-5),
            eos_token_id: raw.get("eos_token_id").and_then(Value::as_u64).map(|v| v as u32),
        })
    }
}

/// GPT-2's Conv1D is a linear layer with its weight stored as (in, out).
fn conv1d(vb: VarBuilder, d_in: usize, d_out: usize, int8: bool) -> candle_core::Result<Projection> {
    let weight = vb.get((d_in, d_out), "weight")?.t()?.contiguous()?;
    Projection::new(weight, Some(vb.get(d_out, "bias")?), int8)
}

fn layer_norm(vb: VarBuilder, dim: usize, eps: f64) -> candle_core::Result<LayerNorm> {
    Ok(LayerNorm::new(vb.get(dim, "weight")?, vb.get(dim, "bias")?, eps))
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Projection,
    attn_proj: Projection,
    ln_2: LayerNorm,
    c_fc: Projection,
    mlp_proj: Projection,
}

pub struct Gpt2 {
    pub config: Gpt2Config,
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Projection,
    /// The LM head is the token embedding matrix itself.
    tied_head: bool,
}

impl Gpt2 {
    /// Loads the weights, the projections and LM head as Q8_0 where `int8` (see engine::kernels::int8).
    pub fn load(vb: &VarBuilder, config: Gpt2Config, int8: bool) -> Result<Self> {
        let c = &config;
        let load = || -> candle_core::Result<Gpt2> {
            let t = if vb.contains_tensor("transformer.wte.weight") { vb.pp("transformer") } else { vb.clone() };
            let wte = Embedding::new(t.pp("wte").get((c.vocab_size, c.n_embd), "weight")?, c.n_embd);
            let wpe = Embedding::new(t.pp("wpe").get((c.n_positions, c.n_embd), "weight")?, c.n_embd);
            let mut blocks = Vec::new(); // not sized by config.json, which may be damaged
            for i in 0..c.n_layer {
                let b = t.pp(format!("h.{i}"));
                blocks.push(Block {
                    ln_1: layer_norm(b.pp("ln_1"), c.n_embd, c.layer_norm_epsilon)?,
                    c_attn: conv1d(b.pp("attn.c_attn"), c.n_embd, 3 * c.n_embd, int8)?,
                    attn_proj: conv1d(b.pp("attn.c_proj"), c.n_embd, c.n_embd, int8)?,
                    ln_2: layer_norm(b.pp("ln_2"), c.n_embd, c.layer_norm_epsilon)?,
                    c_fc: conv1d(b.pp("mlp.c_fc"), c.n_embd, c.n_inner, int8)?,
                    mlp_proj: conv1d(b.pp("mlp.c_proj"), c.n_inner, c.n_embd, int8)?,
                });
            }
            // The LM head is tied to the token embeddings and usually absent from the file.
            let tied_head = !vb.contains_tensor("lm_head.weight");
            let head = if tied_head {
                wte.embeddings().clone()
            } else {
                vb.pp("lm_head").get((c.vocab_size, c.n_embd), "weight")?
            };
            Ok(Gpt2 {
                ln_f: layer_norm(t.pp("ln_f"), c.n_embd, c.layer_norm_epsilon)?,
                lm_head: Projection::head(head, None, int8, tied_head)?,
                tied_head,
                // In 8 bits the head is a copy, and the lookup table can be f16: half the bytes, and rounding far
                // below the 8-bit weights'.
                wte: if int8 { Embedding::new(wte.embeddings().to_dtype(DType::F16)?, c.n_embd) } else { wte },
                wpe,
                blocks,
                config: config.clone(),
            })
        };
        if config.n_head == 0 || !config.n_embd.is_multiple_of(config.n_head) {
            return Err(AiError::corrupt("n_embd is not a multiple of n_head"));
        }
        load().map_err(|e| AiError::corrupt(format!("the weights do not match config.json: {e}")))
    }

    /// Parameters, counting the tied LM head once.
    pub fn parameter_count(&self) -> usize {
        self.count(Projection::parameters, Tensor::elem_count)
    }

    /// Bytes of the weights in memory. An 8-bit head tied to the embeddings is a copy of them, and counts.
    pub fn weight_bytes(&self) -> usize {
        let int8_head = matches!(self.lm_head, Projection::Quantized { .. });
        self.count(Projection::bytes, bytes) + if self.tied_head && int8_head { self.lm_head.bytes() } else { 0 }
    }

    /// Sums `of` over the projections and `tensor` over the other tensors.
    fn count(&self, of: fn(&Projection) -> usize, tensor: fn(&Tensor) -> usize) -> usize {
        let norm = |n: &LayerNorm| layer_norm_size(n, tensor);
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| norm(&b.ln_1) + norm(&b.ln_2) + of(&b.c_attn) + of(&b.attn_proj) + of(&b.c_fc) + of(&b.mlp_proj))
            .sum();
        tensor(self.wte.embeddings())
            + tensor(self.wpe.embeddings())
            + blocks
            + norm(&self.ln_f)
            + if self.tied_head { 0 } else { of(&self.lm_head) }
    }

    fn block_forward(
        &self,
        b: &Block,
        x: &Tensor,
        kv: &mut Option<(Tensor, Tensor)>,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (batch, seq, h) = x.dims3()?;
        let heads = self.config.n_head;
        let d = h / heads;
        let qkv = b.c_attn.forward(&b.ln_1.forward(x)?)?;
        let split = |i: usize| qkv.narrow(D::Minus1, i * h, h)?.reshape((batch, seq, heads, d))?.transpose(1, 2);
        let (q, mut k, mut v) = (split(0)?.contiguous()?, split(1)?, split(2)?);
        if let Some((past_k, past_v)) = kv.as_ref() {
            k = Tensor::cat(&[past_k, &k], 2)?;
            v = Tensor::cat(&[past_v, &v], 2)?;
        }
        let (k, v) = (k.contiguous()?, v.contiguous()?);
        *kv = Some((k.clone(), v.clone()));
        let mut scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let context = softmax_last_dim(&scores)?.matmul(&v)?.transpose(1, 2)?.reshape((batch, seq, h))?;
        let x = (x + b.attn_proj.forward(&context)?)?;
        let mlp = b.mlp_proj.forward(&b.c_fc.forward(&b.ln_2.forward(&x)?)?.gelu()?)?;
        x + mlp
    }
}

impl CachedDecoder for Gpt2 {
    fn context(&self) -> usize {
        self.config.n_positions
    }

    fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let seq = ids.len();
        let past = cache.prepare(seq, self.blocks.len(), self.context())?;
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let positions = Tensor::arange(past as u32, (past + seq) as u32, &Device::Cpu)?;
        let mut x = self.wte.forward(&input)?.to_dtype(DType::F32)?.broadcast_add(&self.wpe.forward(&positions)?)?;
        let mask = causal_mask(seq, past)?;
        for (block, kv) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            x = self.block_forward(block, &x, kv, mask.as_ref())?;
        }
        let last = self.ln_f.forward(&x.narrow(1, seq - 1, 1)?)?;
        Ok(self.lm_head.forward(&last)?.squeeze(0)?.squeeze(0)?)
    }
}
