//! A Llama on pg_ai's own projections (engine::kernels::int8's `Projection`), in f32 or, for pg_ai.int8_decoders, in 8
//! bits, or on a GGUF file's quantized weights as stored (engine::models::gguf). candle's quantized Llama holds each
//! row of weights as it comes, and rows that are not whole blocks of 256 (SmolLM2's 576) miss candle's tiled VNNI
//! kernels; a `Projection` pads them: on SmolLM2's shapes 2.5x faster per generated token and 6x on prompts, for the
//! products alone. In f32 a `Projection` multiplies a generated token's single row with engine::kernels::matvec, which
//! candle-transformers' Llama does not (SmolLM2 size: 16 -> 20 tokens/s, engine/benches/generate.rs). Query, key and
//! value, and gate and up, are each one product, so every input is read (and in 8 bits quantised) once per layer.
//! Llama's relatives run on it too: what Qwen2, Qwen3, Mistral and Phi-3 change is a `Variant`, what Gemma 2 and 3
//! change besides a `Gemma`.

use crate::error::Result;
use crate::generate::kv_cache::{causal_mask, sliding_mask, CachedDecoder, KvCache};
use crate::kernels::int8::{bytes, Projection};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{ops::softmax_last_dim, rotary_emb::rope, Embedding, RmsNorm, VarBuilder};
use candle_transformers::models::llama::Config;
use candle_transformers::utils::repeat_kv;

/// What Llama's relatives change in its layers, read from their config.json.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Variant {
    /// Biases on the query, key and value projections (Qwen2; Llama and Qwen3 with attention_bias).
    pub qkv_bias: bool,
    /// A bias on the attention's output projection (Llama and Qwen3 with attention_bias).
    pub out_bias: bool,
    /// An RMS norm over each query and key head before the rotation (Qwen3).
    pub qk_norm: bool,
    /// Each head's width where config.json gives one (Qwen3's is not hidden_size / heads).
    pub head_dim: Option<usize>,
    /// How many of each head's dimensions rotate, where not all do (Phi-3's partial_rotary_factor).
    pub rotary_dims: Option<usize>,
}

/// What Gemma 2 and 3 change beyond `Variant` (their norms' offset of one is folded into the weights at load).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Gemma {
    /// Scores are scaled by query_pre_attn_scalar^-1/2, not head_dim^-1/2.
    pub query_pre_attn_scalar: f64,
    /// Gemma 2 caps scores and logits smoothly: cap * tanh(x / cap).
    pub attention_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    /// Gemma 3: the rope base of the sliding-window layers (others use rope_theta).
    pub local_rope_theta: Option<f32>,
    /// Which layers attend through a sliding window (config.json's layer_types).
    pub sliding_layers: Vec<bool>,
}

/// Attention through a sliding window: the layers marked attend to the last `size` positions only (Mistral's and
/// Phi-3's every layer, Qwen2's and Qwen3's from max_window_layers on, Gemma's local layers).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Window {
    pub size: usize,
    pub layers: Vec<bool>,
}

/// One decoder layer's weights.
pub struct Layer {
    pub attention_norm: RmsNorm,
    /// Query, key and value rows stacked: (heads + 2 kv_heads) * head_dim outputs, query and key rows in
    /// transformers' rotate-half order; their biases where the variant has them.
    pub qkv: Projection,
    /// Qwen3's norms of each query and key head.
    pub query_norm: Option<RmsNorm>,
    pub key_norm: Option<RmsNorm>,
    pub attention_out: Projection,
    pub mlp_norm: RmsNorm,
    /// Gate and up rows stacked: 2 * intermediate outputs.
    pub gate_up: Projection,
    pub down: Projection,
    /// Gemma's norms of the attention's and the MLP's outputs.
    pub attention_out_norm: Option<RmsNorm>,
    pub mlp_out_norm: Option<RmsNorm>,
}

pub struct ProjectedLlama {
    /// The lookup table; in f16 with 8-bit weights: half the bytes, and rounding far below the 8-bit weights'.
    embeddings: Embedding,
    /// Whether the head is the lookup table itself (tied, in f32), whose bytes count once.
    head_is_embeddings: bool,
    layers: Vec<Layer>,
    norm: RmsNorm,
    head: Projection,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    /// Rotary frequencies, one per pair of a head's rotating dimensions (transformers' default rope).
    inverse_frequencies: Vec<f32>,
    /// The first `rotary_dims` dimensions of each head rotate; the rest pass unchanged.
    rotary_dims: usize,
    context: usize,
    gemma: Option<Gemma>,
    /// Gemma 3's frequencies for its sliding-window layers.
    local_inverse_frequencies: Option<Vec<f32>>,
    window: Option<Window>,
}

impl ProjectedLlama {
    /// Loads a transformers Llama, or a relative that `variant` describes (without llama3 rope scaling, which the
    /// caller leaves to candle-transformers), its weights in 8 bits or not: in f32 it answers as transformers does
    /// (the tests check).
    pub fn load(
        vb: &VarBuilder,
        c: &Config,
        variant: Variant,
        gemma: Option<Gemma>,
        int8: bool,
    ) -> candle_core::Result<Self> {
        let head_dim = head_dim(c, variant)?;
        let (h, q, kv, ff) = (
            c.hidden_size,
            head_dim.saturating_mul(c.num_attention_heads),
            head_dim.saturating_mul(c.num_key_value_heads),
            c.intermediate_size,
        );
        // Gemma's norms scale by (1 + weight).
        let offset = gemma.is_some();
        let norm = |vb: VarBuilder, n: usize| {
            let weight = vb.get(n, "weight")?;
            let weight = if offset { (weight + 1.0)? } else { weight };
            Ok::<_, candle_core::Error>(RmsNorm::new(weight, c.rms_norm_eps))
        };
        // Phi-3 stores query, key and value (and gate and up) as one fused tensor, in that order.
        let stacked = |vb: &VarBuilder, parts: &[(&str, usize)], bias: bool| {
            let fused = match parts.len() {
                3 => "qkv_proj",
                _ => "gate_up_proj",
            };
            if vb.contains_tensor(&format!("{fused}.weight")) {
                // Saturating: sizes from config.json; a wrong one fails at the shape check below.
                let n = parts.iter().fold(0usize, |sum, (_, n)| sum.saturating_add(*n));
                let bias = if bias { Some(vb.get(n, &format!("{fused}.bias"))?) } else { None };
                return Projection::new(vb.get((n, h), &format!("{fused}.weight"))?, bias, int8);
            }
            let rows = parts
                .iter()
                .map(|(name, n)| vb.get((*n, h), &format!("{name}.weight")))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let bias = if bias {
                let parts = parts.iter().map(|(name, n)| vb.get(*n, &format!("{name}.bias")));
                Some(Tensor::cat(&parts.collect::<candle_core::Result<Vec<_>>>()?, 0)?)
            } else {
                None
            };
            Projection::new(Tensor::cat(&rows, 0)?, bias, int8)
        };
        let head_norm = |vb: &VarBuilder, name: &str| variant.qk_norm.then(|| norm(vb.pp(name), head_dim)).transpose();
        // No capacity from config.json: a damaged layer count must fail at the first missing tensor, not allocate.
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("model.layers.{i}"));
            let (a, m) = (l.pp("self_attn"), l.pp("mlp"));
            let out_bias = if variant.out_bias { Some(a.get(h, "o_proj.bias")?) } else { None };
            // Gemma's post_attention_layernorm normalises the attention's output; Llama's, the MLP's input.
            let (mlp_norm, attention_out_norm, mlp_out_norm) = match gemma {
                Some(_) => (
                    norm(l.pp("pre_feedforward_layernorm"), h)?,
                    Some(norm(l.pp("post_attention_layernorm"), h)?),
                    Some(norm(l.pp("post_feedforward_layernorm"), h)?),
                ),
                None => (norm(l.pp("post_attention_layernorm"), h)?, None, None),
            };
            layers.push(Layer {
                attention_norm: norm(l.pp("input_layernorm"), h)?,
                qkv: stacked(&a, &[("q_proj", q), ("k_proj", kv), ("v_proj", kv)], variant.qkv_bias)?,
                query_norm: head_norm(&a, "q_norm")?,
                key_norm: head_norm(&a, "k_norm")?,
                attention_out: Projection::new(a.get((h, q), "o_proj.weight")?, out_bias, int8)?,
                mlp_norm,
                gate_up: stacked(&m, &[("gate_proj", ff), ("up_proj", ff)], false)?,
                down: Projection::new(m.get((h, ff), "down_proj.weight")?, None, int8)?,
                attention_out_norm,
                mlp_out_norm,
            });
        }
        let embeddings = vb.get((c.vocab_size, h), "model.embed_tokens.weight")?;
        let head =
            if c.tie_word_embeddings { embeddings.clone() } else { vb.get((c.vocab_size, h), "lm_head.weight")? };
        let head = Projection::head(head, None, int8, c.tie_word_embeddings)?;
        let embeddings = embeddings.to_dtype(if int8 { DType::F16 } else { DType::F32 })?;
        let final_norm = norm(vb.pp("model.norm"), h)?;
        let mut model = Self::new(c, variant, embeddings, layers, final_norm, head, c.tie_word_embeddings && !int8)?;
        if let Some(gemma) = gemma {
            if gemma.sliding_layers.len() != model.layers.len() {
                candle_core::bail!(
                    "layer_types names {} layers, not {}",
                    gemma.sliding_layers.len(),
                    model.layers.len()
                )
            }
            model.local_inverse_frequencies =
                gemma.local_rope_theta.map(|theta| inverse_frequencies(theta, model.rotary_dims));
            model.gemma = Some(gemma);
        }
        Ok(model)
    }

    /// A Llama of these parts. `embeddings` (vocabulary, hidden) is the lookup table, in f32 or f16;
    /// `head_is_embeddings` says the head holds that same tensor, whose bytes then count once.
    pub fn new(
        c: &Config,
        variant: Variant,
        embeddings: Tensor,
        layers: Vec<Layer>,
        norm: RmsNorm,
        head: Projection,
        head_is_embeddings: bool,
    ) -> candle_core::Result<Self> {
        let head_dim = head_dim(c, variant)?;
        let rotary_dims = variant.rotary_dims.unwrap_or(head_dim);
        if rotary_dims == 0 || rotary_dims > head_dim || rotary_dims % 2 == 1 {
            candle_core::bail!("{rotary_dims} rotary dimensions do not fit heads of {head_dim}")
        }
        let inverse_frequencies = inverse_frequencies(c.rope_theta, rotary_dims);
        Ok(ProjectedLlama {
            head_is_embeddings,
            embeddings: Embedding::new(embeddings, c.hidden_size),
            layers,
            norm,
            head,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim,
            intermediate: c.intermediate_size,
            inverse_frequencies,
            rotary_dims,
            context: c.max_position_embeddings,
            gemma: None,
            local_inverse_frequencies: None,
            window: None,
        })
    }

    /// Divides each rotary frequency by its factor (a GGUF's rope_freqs: Llama 3.1's rope scaling, as llama.cpp's
    /// converter writes it), one per pair of rotating dimensions.
    pub fn with_frequency_factors(mut self, factors: &[f32]) -> candle_core::Result<Self> {
        if factors.len() != self.inverse_frequencies.len() || factors.iter().any(|f| !f.is_finite() || *f <= 0.0) {
            candle_core::bail!(
                "rope_freqs holds {} factors for {} rotary frequencies, each finite and above 0",
                factors.len(),
                self.inverse_frequencies.len()
            )
        }
        for (frequency, factor) in self.inverse_frequencies.iter_mut().zip(factors) {
            *frequency /= factor;
        }
        Ok(self)
    }

    /// Makes the layers that `window` marks attend through it.
    pub fn with_window(mut self, window: Option<Window>) -> Self {
        self.window = window.filter(|w| w.size > 0);
        self
    }

    /// Bytes of the weights in memory.
    pub fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let head_norms: usize = [&l.query_norm, &l.key_norm, &l.attention_out_norm, &l.mlp_out_norm]
                    .into_iter()
                    .flatten()
                    .map(|n| bytes(n.weight()))
                    .sum();
                bytes(l.attention_norm.weight())
                    + bytes(l.mlp_norm.weight())
                    + head_norms
                    + [&l.qkv, &l.attention_out, &l.gate_up, &l.down].map(Projection::bytes).iter().sum::<usize>()
            })
            .sum();
        let head = if self.head_is_embeddings { 0 } else { self.head.bytes() };
        bytes(self.embeddings.embeddings()) + layers + bytes(self.norm.weight()) + head
    }

    /// Cosines and sines of the rotary angles of `frequencies` for positions past..past + seq, each
    /// (seq, rotary_dims / 2).
    fn rotation(&self, frequencies: &[f32], past: usize, seq: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let angles: Vec<f32> = (past..past + seq).flat_map(|p| frequencies.iter().map(move |f| p as f32 * f)).collect();
        let angles = Tensor::from_vec(angles, (seq, self.rotary_dims / 2), &Device::Cpu)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    fn layer_forward(
        &self,
        l: &Layer,
        x: &Tensor,
        kv: &mut Option<(Tensor, Tensor)>,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (batch, seq, _) = x.dims3()?;
        let d = self.head_dim;
        let qkv = l.qkv.forward(&l.attention_norm.forward(x)?)?;
        let heads = |start: usize, n: usize| {
            qkv.narrow(D::Minus1, start * d, n * d)?.reshape((batch, seq, n, d))?.transpose(1, 2)?.contiguous()
        };
        let normed = |x: Tensor, norm: &Option<RmsNorm>| match norm {
            Some(norm) => norm.forward(&x),
            None => Ok(x),
        };
        // Rotates the first rotary_dims dimensions of each head (all of them but in Phi-3-style partial rotation).
        let rotated = |x: Tensor| -> candle_core::Result<Tensor> {
            if self.rotary_dims == d {
                return rope(&x, cos, sin);
            }
            let turned = rope(&x.narrow(D::Minus1, 0, self.rotary_dims)?.contiguous()?, cos, sin)?;
            Tensor::cat(&[&turned, &x.narrow(D::Minus1, self.rotary_dims, d - self.rotary_dims)?], D::Minus1)?
                .contiguous()
        };
        let q = rotated(normed(heads(0, self.heads)?, &l.query_norm)?)?;
        let mut k = rotated(normed(heads(self.heads, self.kv_heads)?, &l.key_norm)?)?;
        let mut v = heads(self.heads + self.kv_heads, self.kv_heads)?;
        if let Some((past_k, past_v)) = kv.as_ref() {
            k = Tensor::cat(&[past_k, &k], 2)?;
            v = Tensor::cat(&[past_v, &v], 2)?;
        }
        *kv = Some((k.clone(), v.clone()));
        // Each key and value head serves heads / kv_heads query heads.
        let repeat = self.heads / self.kv_heads;
        let (k, v) = (repeat_kv(k, repeat)?.contiguous()?, repeat_kv(v, repeat)?.contiguous()?);
        let scale = self.gemma.as_ref().map_or(d as f64, |g| g.query_pre_attn_scalar);
        let mut scores = (q.matmul(&k.t()?)? / scale.sqrt())?;
        if let Some(cap) = self.gemma.as_ref().and_then(|g| g.attention_softcap) {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let context = softmax_last_dim(&scores)?.matmul(&v)?.transpose(1, 2)?.reshape((batch, seq, self.heads * d))?;
        let x = (x + normed(l.attention_out.forward(&context)?, &l.attention_out_norm)?)?;
        let gate_up = l.gate_up.forward(&l.mlp_norm.forward(&x)?)?;
        let gate = gate_up.narrow(D::Minus1, 0, self.intermediate)?;
        let up = gate_up.narrow(D::Minus1, self.intermediate, self.intermediate)?;
        // Gemma's gate is GELU's tanh approximation (gelu_pytorch_tanh), which candle's gelu is.
        let gate = if self.gemma.is_some() { gate.gelu()? } else { gate.silu()? };
        x + normed(l.down.forward(&(gate * up)?)?, &l.mlp_out_norm)?
    }
}

/// Rotary frequencies, one per pair of `rotary_dims` dimensions (transformers' default rope).
fn inverse_frequencies(theta: f32, rotary_dims: usize) -> Vec<f32> {
    (0..rotary_dims / 2).map(|i| 1.0 / theta.powf(2.0 * i as f32 / rotary_dims as f32)).collect()
}

/// Each attention head's width (config.json's head_dim, or the hidden size's share), once the head counts are
/// known to fit it.
pub fn head_dim(c: &Config, variant: Variant) -> candle_core::Result<usize> {
    let (heads, kv_heads) = (c.num_attention_heads, c.num_key_value_heads);
    let fits = heads > 0 && kv_heads > 0 && heads.is_multiple_of(kv_heads);
    match variant.head_dim {
        Some(d) if fits && d > 0 && d.is_multiple_of(2) => Ok(d),
        None if fits && c.hidden_size.is_multiple_of(heads) && (c.hidden_size / heads).is_multiple_of(2) => {
            Ok(c.hidden_size / heads)
        }
        _ => candle_core::bail!(
            "{heads} attention heads and {kv_heads} key/value heads do not fit hidden size {} (head_dim {:?})",
            c.hidden_size,
            variant.head_dim
        ),
    }
}

impl CachedDecoder for ProjectedLlama {
    fn context(&self) -> usize {
        self.context
    }

    fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let seq = ids.len();
        let past = cache.prepare(seq, self.layers.len(), self.context())?;
        let global = self.rotation(&self.inverse_frequencies, past, seq)?;
        let local = match &self.local_inverse_frequencies {
            Some(frequencies) => Some(self.rotation(frequencies, past, seq)?),
            None => None,
        };
        let mask = causal_mask(seq, past)?;
        let local_mask = match &self.window {
            Some(w) => sliding_mask(seq, past, w.size)?,
            None => None,
        };
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let mut x = self.embeddings.forward(&input)?.to_dtype(DType::F32)?;
        if self.gemma.is_some() {
            // Gemma scales its embeddings by sqrt(hidden_size), rounded to the weights' type (f32 here).
            x = (x * (self.embeddings.hidden_size() as f32).sqrt() as f64)?;
        }
        for (i, (layer, kv)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            let sliding = self.gemma.as_ref().is_some_and(|g| g.sliding_layers[i]);
            let (cos, sin) = match (&local, sliding) {
                (Some(local), true) => local,
                _ => &global,
            };
            let mask = match &self.window {
                Some(w) if w.layers.get(i) == Some(&true) => local_mask.as_ref(),
                _ => mask.as_ref(),
            };
            x = self.layer_forward(layer, &x, kv, cos, sin, mask)?;
        }
        let last = self.norm.forward(&x.narrow(1, seq - 1, 1)?)?;
        let mut logits = self.head.forward(&last)?.squeeze(0)?.squeeze(0)?;
        if let Some(cap) = self.gemma.as_ref().and_then(|g| g.final_softcap) {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;
    use candle_transformers::models::llama::{Cache, Llama};

    /// Random Llamas with grouped-query attention, rows of 48 (not whole Q8_0 blocks: held in f32 but the MLP's
    /// down projection) and of 64 (all in 8 bits), against candle-transformers' Llama on the same weights, over a
    /// prompt and then one token through the cache: in f32 they agree to rounding, in 8 bits within 5% of the
    /// logits' spread (measured over runs: 0.5-2.6%; random weights, drawn anew each run, give large logits).
    #[test]
    fn answers_as_candle_transformers_llama() {
        for hidden in [48, 64] {
            let config = Config {
                hidden_size: hidden,
                intermediate_size: 2 * hidden,
                vocab_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                num_key_value_heads: 2,
                use_flash_attn: false,
                rms_norm_eps: 1e-6,
                rope_theta: 10000.0,
                bos_token_id: None,
                eos_token_id: None,
                rope_scaling: None,
                max_position_embeddings: 64,
                tie_word_embeddings: true,
            };
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            let exact = Llama::load(vb.clone(), &config).unwrap();
            let mut cache = Cache::new(true, DType::F32, &config, &Device::Cpu).unwrap();
            let models = [
                (ProjectedLlama::load(&vb, &config, Variant::default(), None, false).unwrap(), 1e-5),
                (ProjectedLlama::load(&vb, &config, Variant::default(), None, true).unwrap(), 0.05),
            ];
            let mut caches = [KvCache::default(), KvCache::default()];
            let prompt = [3u32, 17, 42, 5, 9, 30];
            for (position, ids) in [(0, &prompt[..]), (prompt.len(), &[11u32][..])] {
                let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
                let want: Vec<f32> =
                    exact.forward(&input, position, &mut cache).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let spread =
                    want.iter().cloned().fold(f32::MIN, f32::max) - want.iter().cloned().fold(f32::MAX, f32::min);
                for ((model, bound), kv) in models.iter().zip(&mut caches) {
                    let got: Vec<f32> = model.forward(ids, kv).unwrap().to_vec1().unwrap();
                    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                    assert!(worst < bound * spread, "hidden {hidden}, position {position}: {worst} of {spread}");
                }
            }
        }
    }
}
