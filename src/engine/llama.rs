//! Llama-family decoders from safetensors (Llama, SmolLM and the like), on candle-transformers' Llama with its KV
//! cache, or with pg_ai.int8_decoders on its quantized Llama.

use super::codec::DecoderTokenizer;
use super::encoder::var_builder;
use super::error::{AiError, Result};
use super::files::ModelFiles;
use super::generate::{CausalLm, Decoder, TextCodec};
use super::{gguf, int8};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama::{Cache, Config, Llama, LlamaConfig, LlamaEosToks};
use candle_transformers::models::quantized_llama::{ModelWeights, MAX_SEQ_LEN};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Cursor;

pub struct LlamaModel {
    pub architecture: String,
    pub config: Value,
    weights: Weights,
    codec: DecoderTokenizer,
    chat_template: Option<String>,
    pub parameters: usize,
    /// Bytes of the weights in memory: 4 per parameter in f32; in int8 about 1.06 for the linear weights, 4 for the
    /// token embeddings (kept in f32 for lookup).
    pub weight_bytes: usize,
}

/// The weights, in f32 on candle-transformers' Llama or in 8 bits on its quantized Llama (see engine::int8).
enum Weights {
    F32 { model: Llama, config: Config },
    Int8 { model: ModelWeights, context: usize },
}

impl LlamaModel {
    /// Loads the model, its linear weights in 8 bits where `int8` (see engine::int8).
    pub fn load(files: &ModelFiles, config: Value, int8: bool) -> Result<Self> {
        let parsed: LlamaConfig = serde_json::from_value(top_level_rope(config.clone())?)
            .map_err(|e| AiError::corrupt(format!("config.json is not a Llama configuration: {e}")))?;
        let llama_config = parsed.clone().into_config(false);
        let eos_ids = match parsed.eos_token_id {
            Some(LlamaEosToks::Single(id)) => vec![id],
            Some(LlamaEosToks::Multiple(ids)) => ids,
            None => Vec::new(),
        };
        let codec = DecoderTokenizer::from_dir(files, eos_ids)?;
        let chat_template = files
            .read_json("tokenizer_config.json")?
            .and_then(|c| c.get("chat_template")?.as_str().map(str::to_string));
        let c = &llama_config;
        let kv = c.hidden_size / c.num_attention_heads * c.num_key_value_heads;
        let per_layer =
            c.hidden_size * (2 * c.hidden_size + 2 * kv) + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size;
        let head = if c.tie_word_embeddings { 0 } else { c.vocab_size * c.hidden_size };
        let parameters = c.vocab_size * c.hidden_size + c.num_hidden_layers * per_layer + c.hidden_size + head;
        let vb = var_builder(&files.weights)?;
        let mismatch = |e: candle_core::Error| AiError::corrupt(format!("the weights do not match config.json: {e}"));
        // candle's quantized Llama knows no rope scaling: llama3-scaled models stay in f32.
        let (weights, weight_bytes) = if int8 && c.rope_scaling.is_none() {
            let (gguf, mut data, bytes) = as_int8_gguf(&vb, c).map_err(mismatch)?;
            let model = ModelWeights::from_gguf(gguf, &mut data, &Device::Cpu).map_err(mismatch)?;
            (Weights::Int8 { model, context: c.max_position_embeddings.min(MAX_SEQ_LEN) }, bytes)
        } else {
            let model = Llama::load(vb, &llama_config).map_err(mismatch)?;
            (Weights::F32 { model, config: llama_config }, parameters * 4)
        };
        let architecture =
            config.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or("LlamaForCausalLM");
        Ok(LlamaModel {
            architecture: architecture.to_string(),
            config,
            weights,
            codec,
            chat_template,
            parameters,
            weight_bytes,
        })
    }
}

/// The weights as an in-memory GGUF in llama.cpp's layout, linear weights in Q8_0, for candle's quantized Llama
/// (whose fields are private: a GGUF is the one way in). Also the bytes of the weights.
fn as_int8_gguf(vb: &VarBuilder, c: &Config) -> candle_core::Result<(gguf_file::Content, Cursor<Vec<u8>>, usize)> {
    use gguf_file::Value as G;
    let head_dim = c.hidden_size / c.num_attention_heads;
    let kv = head_dim * c.num_key_value_heads;
    let (h, ff) = (c.hidden_size, c.intermediate_size);
    let metadata: HashMap<String, G> = [
        ("general.architecture", G::String("llama".into())),
        ("llama.attention.head_count", G::U32(c.num_attention_heads as u32)),
        ("llama.attention.head_count_kv", G::U32(c.num_key_value_heads as u32)),
        ("llama.block_count", G::U32(c.num_hidden_layers as u32)),
        ("llama.embedding_length", G::U32(h as u32)),
        ("llama.rope.dimension_count", G::U32(head_dim as u32)),
        ("llama.attention.layer_norm_rms_epsilon", G::F32(c.rms_norm_eps as f32)),
        ("llama.rope.freq_base", G::F32(c.rope_theta)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut add = |name: String, weight: Tensor| -> candle_core::Result<()> {
        let q = if weight.rank() == 1 { QTensor::quantize(&weight, GgmlDType::F32)? } else { int8::quantize(&weight)? };
        tensors.push((name, q));
        Ok(())
    };
    let embed = vb.get((c.vocab_size, h), "model.embed_tokens.weight")?;
    if !c.tie_word_embeddings {
        add("output.weight".into(), vb.get((c.vocab_size, h), "lm_head.weight")?)?;
    }
    add("token_embd.weight".into(), embed)?;
    add("output_norm.weight".into(), vb.get(h, "model.norm.weight")?)?;
    for i in 0..c.num_hidden_layers {
        let (l, blk) = (vb.pp(format!("model.layers.{i}")), format!("blk.{i}"));
        let q = l.get((h, h), "self_attn.q_proj.weight")?;
        let k = l.get((kv, h), "self_attn.k_proj.weight")?;
        add(format!("{blk}.attn_q.weight"), interleave_rope_rows(&q, c.num_attention_heads)?)?;
        add(format!("{blk}.attn_k.weight"), interleave_rope_rows(&k, c.num_key_value_heads)?)?;
        add(format!("{blk}.attn_v.weight"), l.get((kv, h), "self_attn.v_proj.weight")?)?;
        add(format!("{blk}.attn_output.weight"), l.get((h, h), "self_attn.o_proj.weight")?)?;
        add(format!("{blk}.ffn_gate.weight"), l.get((ff, h), "mlp.gate_proj.weight")?)?;
        add(format!("{blk}.ffn_up.weight"), l.get((ff, h), "mlp.up_proj.weight")?)?;
        add(format!("{blk}.ffn_down.weight"), l.get((h, ff), "mlp.down_proj.weight")?)?;
        add(format!("{blk}.attn_norm.weight"), l.get(h, "input_layernorm.weight")?)?;
        add(format!("{blk}.ffn_norm.weight"), l.get(h, "post_attention_layernorm.weight")?)?;
    }
    let mut data = Vec::new();
    let mut tensor_infos = HashMap::new();
    for (name, q) in tensors {
        data.resize(data.len().next_multiple_of(gguf_file::DEFAULT_ALIGNMENT as usize), 0);
        let info = gguf_file::TensorInfo { ggml_dtype: q.dtype(), shape: q.shape().clone(), offset: data.len() as u64 };
        tensor_infos.insert(name, info);
        data.extend_from_slice(&q.data()?);
    }
    let content =
        gguf_file::Content { magic: gguf_file::VersionedMagic::GgufV3, metadata, tensor_infos, tensor_data_offset: 0 };
    let bytes = gguf::bytes_in_memory(&content);
    Ok((content, Cursor::new(data), bytes))
}

/// transformers rotates the two halves of each head (rotate_half); llama.cpp's layout, which candle's quantized
/// Llama reads, rotates neighbouring pairs. Reordering the rows of the query and key projections alike turns one
/// into the other (what llama.cpp's converter does): the attention scores do not change.
fn interleave_rope_rows(weight: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = weight.dims2()?;
    weight.reshape((heads, 2, rows / heads / 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((rows, cols))
}

/// transformers 5 writes the rotary settings under `rope_parameters`; candle reads `rope_theta` and
/// `rope_scaling` at the top level and would otherwise fall back to theta 10000 without a word.
fn top_level_rope(mut config: Value) -> Result<Value> {
    let Some(rope) = config.get("rope_parameters").cloned() else { return Ok(config) };
    if config.get("rope_theta").is_none() {
        if let Some(theta) = rope.get("rope_theta") {
            config["rope_theta"] = theta.clone();
        }
    }
    match rope.get("rope_type").and_then(Value::as_str) {
        None | Some("default") => {}
        Some("llama3") if config.get("rope_scaling").is_none() => config["rope_scaling"] = rope,
        Some("llama3") => {}
        Some(other) => {
            return Err(AiError::invalid(format!("rotary embeddings of type \"{other}\" are not supported"))
                .with_hint("pg_ai runs Llama models with default or llama3 rotary embeddings."))
        }
    }
    Ok(config)
}

struct Session<'a> {
    model: &'a Llama,
    config: &'a Config,
    cache: Cache,
    position: usize,
}

impl Session<'_> {
    fn fresh_cache(config: &Config) -> Result<Cache> {
        Ok(Cache::new(true, DType::F32, config, &Device::Cpu)?)
    }
}

impl Decoder for Session<'_> {
    fn reset(&mut self) -> Result<()> {
        self.cache = Session::fresh_cache(self.config)?;
        self.position = 0;
        Ok(())
    }

    fn context_size(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn next_logits(&mut self, ids: &[u32]) -> Result<Tensor> {
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let logits = self.model.forward(&input, self.position, &mut self.cache)?;
        self.position += ids.len();
        Ok(logits.squeeze(0)?)
    }
}

impl CausalLm for LlamaModel {
    fn session(&self) -> Result<Box<dyn Decoder + '_>> {
        match &self.weights {
            Weights::F32 { model, config } => {
                Ok(Box::new(Session { model, config, cache: Session::fresh_cache(config)?, position: 0 }))
            }
            Weights::Int8 { model, context } => Ok(gguf::session(model, *context)),
        }
    }

    fn codec(&self) -> &dyn TextCodec {
        &self.codec
    }

    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    /// A random Llama whose rows (48) are not whole Q8_0 blocks, so that int8 keeps some projections in f32 and
    /// quantises the rest (the MLP's down projection reads 96): both paths must still answer alike, and the
    /// reordered query and key rows must leave attention as it was.
    #[test]
    fn int8_llama_answers_as_the_f32_one() {
        let config = Config {
            hidden_size: 48,
            intermediate_size: 96,
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
        let (gguf, mut data, _) = as_int8_gguf(&vb, &config).unwrap();
        let dtypes: Vec<GgmlDType> = gguf.tensor_infos.values().map(|i| i.ggml_dtype).collect();
        assert!(dtypes.contains(&GgmlDType::Q8_0) && dtypes.contains(&GgmlDType::F32), "{dtypes:?}");
        let mut int8 = ModelWeights::from_gguf(gguf, &mut data, &Device::Cpu).unwrap();

        let ids = Tensor::new(&[[3u32, 17, 42, 5, 9, 30]], &Device::Cpu).unwrap();
        let mut cache = Cache::new(true, DType::F32, &config, &Device::Cpu).unwrap();
        let want: Vec<f32> = exact.forward(&ids, 0, &mut cache).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let got: Vec<f32> = int8.forward(&ids, 0).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let spread = want.iter().cloned().fold(f32::MIN, f32::max) - want.iter().cloned().fold(f32::MAX, f32::min);
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst < 0.01 * spread, "largest change {worst} of a spread of {spread}");
    }
}
