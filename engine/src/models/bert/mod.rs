//! BERT, DistilBERT, RoBERTa, MPNet and DeBERTa encoders with their task heads.
//!
//! Written here rather than taken from candle-transformers because pg_ai needs what those models
//! lack: the sequence- and token-classification heads, the pooler, one padding-mask convention for
//! all the families (so a batch answers exactly as single calls do), and one code path that the
//! training work can later switch to differentiable ops. The families differ only in tensor names,
//! RoBERTa's (and MPNet's) position offset, the classification head, MPNet's relative position bias and
//! DeBERTa's position scores (models::deberta), so one implementation serves all.

pub mod config;
pub mod layout;
pub mod model;
pub mod pooling;
pub mod train;

use crate::device::cpu_kernels;
use crate::error::{AiError, Result};
use crate::kernels::fused::{attention, Gelu, Heads, PairBias};
use crate::kernels::int8::{bytes, Projection};
use crate::models::bert::config::{Family, ModelConfig};
use crate::models::deberta::Disentangled;
use crate::models::packed::Packed;
use crate::models::position_buckets;
use crate::models::{layer_norm_size, modernbert};
use crate::timing::forward;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{ops::softmax_last_dim, Embedding, LayerNorm, Linear, VarBuilder};

#[derive(Debug, Clone, Copy)]
pub enum Activation {
    Gelu,
    GeluTanh,
    Relu,
    Silu,
    Tanh,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            "tanh" => Activation::Tanh,
            other => return Err(AiError::invalid(format!("activation \"{other}\" is not supported"))),
        })
    }

    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        // On the CPU, pg_ai's GELU: its erf, exp and tanh vectorise, candle's call the C library per element.
        let fast = cpu_kernels(x.device()) && x.dtype() == DType::F32;
        match self {
            Activation::Gelu if fast => x.contiguous()?.apply_op1(Gelu { tanh: false }),
            Activation::GeluTanh if fast => x.contiguous()?.apply_op1(Gelu { tanh: true }),
            Activation::Gelu => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
        }
    }
}

/// Tensor names of one family, relative to its base prefix ("bert.", "distilbert.", "roberta.").
pub struct Names {
    pub type_embeddings: Option<&'static str>,
    pub embeddings_norm: &'static str,
    pub layer: &'static str,
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attention_out: &'static str,
    pub attention_norm: &'static str,
    pub ffn_in: &'static str,
    pub ffn_out: &'static str,
    pub output_norm: &'static str,
}

impl Names {
    /// The names of `family` (training uses them too, so that what it saves loads here).
    pub const fn of(family: Family) -> &'static Names {
        match family {
            Family::DistilBert => &DISTILBERT_NAMES,
            Family::Bert | Family::Roberta => &BERT_NAMES,
            Family::MPNet => &MPNET_NAMES,
            Family::Deberta => &DEBERTA_NAMES,
            // Read by models::modernbert itself; training refuses it.
            Family::ModernBert => &BERT_NAMES,
        }
    }
}

const BERT_NAMES: Names = Names {
    type_embeddings: Some("embeddings.token_type_embeddings"),
    embeddings_norm: "embeddings.LayerNorm",
    layer: "encoder.layer",
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_out: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    output_norm: "output.LayerNorm",
};

const DISTILBERT_NAMES: Names = Names {
    type_embeddings: None,
    embeddings_norm: "embeddings.LayerNorm",
    layer: "transformer.layer",
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attention_out: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    ffn_in: "ffn.lin1",
    ffn_out: "ffn.lin2",
    output_norm: "output_layer_norm",
};

const DEBERTA_NAMES: Names = Names {
    query: "attention.self.query_proj",
    key: "attention.self.key_proj",
    value: "attention.self.value_proj",
    ..BERT_NAMES
};

const MPNET_NAMES: Names = Names {
    type_embeddings: None,
    embeddings_norm: "embeddings.LayerNorm",
    layer: "encoder.layer",
    query: "attention.attn.q",
    key: "attention.attn.k",
    value: "attention.attn.v",
    attention_out: "attention.attn.o",
    attention_norm: "attention.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    output_norm: "output.LayerNorm",
};

fn linear(vb: &VarBuilder, name: &str, in_dim: usize, out_dim: usize) -> candle_core::Result<Linear> {
    candle_nn::linear(in_dim, out_dim, vb.pp(name))
}

/// A linear layer's weights, held in 8 bits where `int8`.
fn project(linear: Linear, int8: bool) -> candle_core::Result<Projection> {
    Projection::batched(linear.weight().clone(), linear.bias().cloned(), int8)
}

/// Stacks linear layers that read the same input into one.
fn fused(parts: &[Linear], int8: bool) -> candle_core::Result<Projection> {
    let weights: Vec<&Tensor> = parts.iter().map(Linear::weight).collect();
    let biases = parts.iter().map(|p| p.bias().cloned()).collect::<Option<Vec<Tensor>>>();
    Projection::batched(Tensor::cat(&weights, 0)?, biases.map(|b| Tensor::cat(&b, 0)).transpose()?, int8)
}

fn layer_norm(vb: &VarBuilder, name: &str, dim: usize, eps: f64) -> candle_core::Result<LayerNorm> {
    let vb = vb.pp(name);
    Ok(LayerNorm::new(vb.get(dim, "weight")?, vb.get(dim, "bias")?, eps))
}

struct Layer {
    /// Query, key and value projections in one matrix: one product instead of three.
    qkv: Projection,
    attention_out: Projection,
    attention_norm: LayerNorm,
    ffn_in: Projection,
    ffn_out: Projection,
    output_norm: LayerNorm,
}

/// One input batch: token ids, segment ids and the attention mask, all (batch, seq) u32.
pub struct Batch {
    pub ids: Tensor,
    pub type_ids: Tensor,
    pub mask: Tensor,
}

/// How a layer's attention leaves out padding: by the rows' spans in packed tokens (pg_ai's attention, CPU) or an
/// additive mask over padded rows (candle's ops, any device: see engine::device). The padding tokens' own states
/// differ between the two, and nothing reads them.
enum Attend {
    /// The batch's real tokens, with MPNet's relative position bias.
    Packed(Packed, Option<PairBias>),
    Bias(Tensor),
    /// DeBERTa: an additive padding mask, and the rows of the position tables each pair reads.
    Disentangled(Tensor, (Tensor, Tensor)),
}

pub struct Encoder {
    family: Family,
    word_embeddings: Embedding,
    /// Absent in DeBERTa-v3, whose positions are relative only.
    position_embeddings: Option<Embedding>,
    type_embeddings: Option<Embedding>,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    activation: Activation,
    position_offset: u32,
    /// MPNet's relative position bias, (buckets, heads), which every layer adds to its attention scores.
    relative_bias: Option<Tensor>,
    /// DeBERTa's position scores.
    disentangled: Option<Disentangled>,
}

/// MPNet's bias for every (query, key) pair of a sequence of `seq` tokens, (heads, seq, seq), from its table of
/// (buckets, heads): bidirectional buckets of key minus query, up to a distance of 128, as MPNet computes them.
fn relative_bias(table: &Tensor, seq: usize) -> candle_core::Result<Tensor> {
    let (buckets, heads) = table.dims2()?;
    let ids: Vec<u32> = (0..seq as i64)
        .flat_map(|query| (0..seq as i64).map(move |key| position_buckets::bucket(key - query, true, buckets, 128)))
        .collect();
    let ids = Tensor::from_vec(ids, seq * seq, table.device())?;
    table.index_select(&ids, 0)?.reshape((seq, seq, heads))?.permute((2, 0, 1))?.contiguous()
}

/// Task heads found in the weights; a model may carry none (a plain encoder for embeddings).
pub enum Head {
    MaskedLm {
        transform: Projection,
        act: Activation,
        norm: LayerNorm,
        decoder: Projection,
        /// Whether the decoder's weight is the word embeddings (an 8-bit one is a copy of them).
        tied: bool,
    },
    /// `pre` is BERT's pooler (tanh), DistilBERT's pre_classifier (relu), RoBERTa's dense (tanh), DeBERTa's
    /// ContextPooler or ModernBERT's head (with its norm after); ModernBERT may pool by the mean of the tokens
    /// rather than the first.
    SequenceClassifier { pre: Option<(Projection, Activation)>, norm: Option<LayerNorm>, mean: bool, out: Projection },
    /// `pre`: ModernBERT's head before the output layer.
    TokenClassifier { pre: Option<Transform>, out: Projection },
    /// Extractive question answering: a start and an end logit per token (`qa_outputs`).
    QuestionAnswering { pre: Option<Transform>, out: Projection },
}

/// A dense layer, its activation and a norm: ModernBERT's prediction head before its task's output layer.
pub struct Transform {
    dense: Projection,
    act: Activation,
    norm: LayerNorm,
}

impl Transform {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.norm.forward(&self.act.apply(&self.dense.forward(x)?)?)
    }

    fn count(&self, of: fn(&Projection) -> usize, tensor: fn(&Tensor) -> usize) -> usize {
        of(&self.dense) + layer_norm_size(&self.norm, tensor)
    }
}

impl Encoder {
    /// Finds the base prefix: task models nest the encoder under "bert." etc., bare encoders do not.
    fn base<'a>(vb: &VarBuilder<'a>, config: &ModelConfig) -> VarBuilder<'a> {
        let prefix = config.family.name();
        if vb.contains_tensor(&format!("{prefix}.embeddings.word_embeddings.weight")) {
            vb.pp(prefix)
        } else {
            vb.clone()
        }
    }

    /// Loads the encoder, its linear layers in 8 bits where `int8` (see engine::kernels::int8).
    pub fn load(vb: &VarBuilder, config: &ModelConfig, int8: bool) -> Result<Self> {
        let names = Names::of(config.family);
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        if config.heads == 0 || !h.is_multiple_of(config.heads) {
            return Err(AiError::corrupt("hidden size is not a multiple of the number of heads"));
        }
        let base = Self::base(vb, config);
        let load = || -> candle_core::Result<Encoder> {
            let emb = |name: &str, n: usize| {
                Ok::<_, candle_core::Error>(Embedding::new(base.pp(name).get((n, h), "weight")?, h))
            };
            let type_embeddings = match names.type_embeddings {
                Some(name) if config.type_vocab_size > 0 => Some(emb(name, config.type_vocab_size)?),
                _ => None,
            };
            let mut layers = Vec::new(); // not sized by config.json, which may be damaged
            for i in 0..config.layers {
                let l = base.pp(format!("{}.{i}", names.layer));
                let inter = config.intermediate_size;
                layers.push(Layer {
                    qkv: fused(
                        &[linear(&l, names.query, h, h)?, linear(&l, names.key, h, h)?, linear(&l, names.value, h, h)?],
                        int8,
                    )?,
                    attention_out: project(linear(&l, names.attention_out, h, h)?, int8)?,
                    attention_norm: layer_norm(&l, names.attention_norm, h, eps)?,
                    ffn_in: project(linear(&l, names.ffn_in, h, inter)?, int8)?,
                    ffn_out: project(linear(&l, names.ffn_out, inter, h)?, int8)?,
                    output_norm: layer_norm(&l, names.output_norm, h, eps)?,
                });
            }
            let disentangled = match &config.deberta {
                Some(d) if d.relative => Some(Disentangled::load(&base, d, h, config.heads, eps, layers.len())?),
                _ => None,
            };
            Ok(Encoder {
                family: config.family,
                word_embeddings: match emb("embeddings.word_embeddings", config.vocab_size)? {
                    // The lookup table in f16: half the bytes, and rounding far below the 8-bit weights'.
                    table if int8 => Embedding::new(table.embeddings().to_dtype(DType::F16)?, h),
                    table => table,
                },
                position_embeddings: match &config.deberta {
                    Some(d) if !d.absolute_positions => None,
                    _ => Some(emb("embeddings.position_embeddings", config.max_positions)?),
                },
                type_embeddings,
                embeddings_norm: layer_norm(&base, names.embeddings_norm, h, eps)?,
                layers,
                heads: config.heads,
                activation: Activation::Gelu,
                position_offset: if config.family.roberta_like() { config.pad_token_id as u32 + 1 } else { 0 },
                relative_bias: match config.family {
                    Family::MPNet => Some(
                        base.pp("encoder.relative_attention_bias")
                            .get((config.relative_buckets, config.heads), "weight")?,
                    ),
                    _ => None,
                },
                disentangled,
            })
        };
        let mut encoder = load().map_err(|e| {
            AiError::corrupt(format!("the weights do not match config.json: {e}"))
                .with_hint("Check that config.json and the safetensors files come from the same model.")
        })?;
        encoder.activation = Activation::parse(&config.activation)?;
        Ok(encoder)
    }

    /// Last hidden states, (batch, seq, hidden).
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        forward(|| self.hidden_states(batch))
    }

    fn hidden_states(&self, batch: &Batch) -> Result<Tensor> {
        let (_, seq) = batch.ids.dims2()?;
        // Batches are made on the CPU; the weights may be on a GPU.
        let device = self.word_embeddings.embeddings().device();
        // Padding is always on the right, so a plain range gives every real token its position.
        let positions = Tensor::arange(self.position_offset, self.position_offset + seq as u32, device)?;
        let mut x = self.word_embeddings.forward(&batch.ids.to_device(device)?)?.to_dtype(DType::F32)?;
        if let Some(table) = &self.position_embeddings {
            x = x.broadcast_add(&table.forward(&positions)?)?;
        }
        if let Some(types) = &self.type_embeddings {
            // RoBERTa has one type; its tokenizers mark a pair's second text as type 1, which transformers never
            // passes to it (RobertaTokenizer returns no token_type_ids).
            let ids =
                if types.embeddings().dim(0)? == 1 { batch.type_ids.zeros_like()? } else { batch.type_ids.clone() };
            x = (x + types.forward(&ids.to_device(device)?)?)?;
        }
        x = self.embeddings_norm.forward(&x)?;
        let attend = if cpu_kernels(device) && self.disentangled.is_none() {
            // The layers read the real tokens only, packed (1, tokens, hidden); attention keeps the rows apart.
            let Some(rows) = Packed::of(&batch.mask)? else {
                return Ok(x); // no real token: nothing reads padding's states
            };
            x = rows.pack(&x)?.unsqueeze(0)?;
            let bias = match &self.relative_bias {
                Some(table) => {
                    let values = relative_bias(table, seq)?.flatten_all()?.to_vec1::<f32>()?;
                    Some(PairBias::new(values, self.heads, seq)?)
                }
                None => None,
            };
            Attend::Packed(rows, bias)
        } else {
            // Additive mask: 0 where attended, a large negative number over padding. (batch, 1, 1, seq)
            let mask = batch.mask.to_device(device)?.to_dtype(DType::F32)?;
            let padding = ((mask - 1.0)? * 1e30)?.unsqueeze(1)?.unsqueeze(1)?;
            match (&self.relative_bias, &self.disentangled) {
                // (batch, heads, seq, seq), as MPNet's compute_position_bias.
                (Some(table), _) => Attend::Bias(padding.broadcast_add(&relative_bias(table, seq)?.unsqueeze(0)?)?),
                (None, Some(d)) => Attend::Disentangled(padding, d.indices(seq)?),
                (None, None) => Attend::Bias(padding),
            }
        };
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.layer_forward(i, layer, &x, &attend)?;
        }
        match attend {
            Attend::Packed(rows, _) => rows.unpack(&x.squeeze(0)?),
            _ => Ok(x),
        }
    }

    fn layer_forward(&self, index: usize, l: &Layer, x: &Tensor, attend: &Attend) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let d = h / self.heads;
        let qkv = l.qkv.forward(x)?;
        let context = match attend {
            // pg_ai's attention: the (row, head) pairs in parallel, each over the row's real tokens only.
            Attend::Packed(rows, bias) => {
                let part =
                    |i: usize| -> Result<Tensor> { Ok(qkv.narrow(2, i * h, h)?.contiguous()?.reshape((b * s, h))?) };
                let scale = 1.0 / (d as f64).sqrt();
                let heads = Heads { heads: self.heads, kv_heads: self.heads, scale, causal: false, bias: bias.clone() };
                attention(&part(0)?, &part(1)?, &part(2)?, &heads, rows.spans(), None)?.reshape((b, s, h))?
            }
            Attend::Bias(bias) | Attend::Disentangled(bias, _) => {
                let split = |t: Tensor| t.reshape((b, s, self.heads, d))?.transpose(1, 2)?.contiguous();
                let q = split(qkv.narrow(2, 0, h)?)?;
                let k = split(qkv.narrow(2, h, h)?)?;
                let v = split(qkv.narrow(2, 2 * h, h)?)?;
                let mut scores = match (&self.disentangled, attend) {
                    (Some(positions), Attend::Disentangled(_, indices)) => {
                        let content = (q.matmul(&k.t()?)? / positions.content_scale(d))?;
                        (content + positions.scores(index, &q, &k, indices)?)?
                    }
                    _ => (q.matmul(&k.t()?)? / (d as f64).sqrt())?,
                };
                scores = scores.broadcast_add(bias)?;
                softmax_last_dim(&scores)?.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?
            }
        };
        let x = l.attention_norm.forward(&(l.attention_out.forward(&context)? + x)?)?;
        let ffn = l.ffn_out.forward(&self.activation.apply(&l.ffn_in.forward(&x)?)?)?;
        Ok(l.output_norm.forward(&(ffn + x)?)?)
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn parameter_count(&self) -> usize {
        self.count(Projection::parameters, Tensor::elem_count)
    }

    /// Bytes of the weights in memory.
    pub fn weight_bytes(&self) -> usize {
        self.count(Projection::bytes, bytes)
    }

    /// Sums `of` over the projections and `tensor` over the other tensors.
    fn count(&self, of: fn(&Projection) -> usize, tensor: fn(&Tensor) -> usize) -> usize {
        let norm = |n: &LayerNorm| layer_norm_size(n, tensor);
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.qkv, &l.attention_out, &l.ffn_in, &l.ffn_out].map(of).iter().sum::<usize>()
                    + norm(&l.attention_norm)
                    + norm(&l.output_norm)
            })
            .sum();
        tensor(self.word_embeddings.embeddings())
            + self.position_embeddings.as_ref().map_or(0, |p| tensor(p.embeddings()))
            + self.type_embeddings.as_ref().map_or(0, |t| tensor(t.embeddings()))
            + norm(&self.embeddings_norm)
            + layers
    }

    pub fn word_embeddings(&self) -> &Tensor {
        self.word_embeddings.embeddings()
    }
}

impl Head {
    /// Parameters the head adds; a decoder tied to the word embeddings adds only its bias.
    pub fn parameter_count(&self) -> usize {
        self.count(Projection::parameters, Tensor::elem_count, |decoder| decoder.bias().map_or(0, Tensor::elem_count))
    }

    /// Bytes the head adds; a decoder tied to the word embeddings shares them in f32, and copies them in 8 bits.
    pub fn weight_bytes(&self) -> usize {
        self.count(Projection::bytes, bytes, |decoder| match decoder {
            Projection::F32(l) => l.bias().map_or(0, bytes),
            Projection::Quantized { .. } | Projection::Vnni { .. } | Projection::Packed { .. } => decoder.bytes(),
        })
    }

    /// Sums `of` over the projections (`tied_decoder` for a decoder tied to the word embeddings) and `tensor`
    /// over the other tensors.
    fn count(
        &self,
        of: fn(&Projection) -> usize,
        tensor: fn(&Tensor) -> usize,
        tied_decoder: fn(&Projection) -> usize,
    ) -> usize {
        match self {
            Head::MaskedLm { transform, norm, decoder, tied, .. } => {
                of(transform) + layer_norm_size(norm, tensor) + if *tied { tied_decoder(decoder) } else { of(decoder) }
            }
            Head::SequenceClassifier { pre, norm, out, .. } => {
                pre.as_ref().map_or(0, |(d, _)| of(d))
                    + norm.as_ref().map_or(0, |n| layer_norm_size(n, tensor))
                    + of(out)
            }
            Head::TokenClassifier { pre, out } | Head::QuestionAnswering { pre, out } => {
                pre.as_ref().map_or(0, |t| t.count(of, tensor)) + of(out)
            }
        }
    }

    /// Loads whichever head the weights carry. Decoders tied to the word embeddings are often
    /// absent from the file; they then reuse `word_embeddings`.
    /// Linear layers are held in 8 bits where `int8`.
    pub fn load(vb: &VarBuilder, config: &ModelConfig, word_embeddings: &Tensor, int8: bool) -> Result<Option<Head>> {
        let (h, v, eps) = (config.hidden_size, config.vocab_size, config.layer_norm_eps);
        let n_labels = config.labels.len().max(1);
        let act = Activation::parse(&config.activation)?;
        let pooler_act = config.deberta.as_ref().map_or(Ok(Activation::Tanh), |d| Activation::parse(&d.pooler_act))?;
        let projection = |vb: &VarBuilder, name: &str, in_dim: usize, out_dim: usize| {
            project(linear(vb, name, in_dim, out_dim)?, int8)
        };
        // The masked-LM decoder, and whether it is tied to the word embeddings.
        let decoder = |vb: VarBuilder, bias: Tensor| -> candle_core::Result<(Projection, bool)> {
            let tied = !vb.contains_tensor("weight");
            // In f32 the embeddings themselves; to_dtype copies the f16 ones of an 8-bit encoder (then quantized).
            let weight = if tied { word_embeddings.to_dtype(DType::F32)? } else { vb.get((v, h), "weight")? };
            Ok((Projection::head(weight, Some(bias), int8, tied)?, tied))
        };
        // A masked-LM head: its dense layer and norm by name under `p`, its decoder under `decoder_vb`.
        let masked_lm = |p: &VarBuilder,
                         dense: &str,
                         norm: &str,
                         decoder_vb: VarBuilder,
                         bias: Tensor,
                         act: Activation|
         -> candle_core::Result<Head> {
            let (decoder, tied) = decoder(decoder_vb, bias)?;
            Ok(Head::MaskedLm {
                transform: projection(p, dense, h, h)?,
                act,
                norm: layer_norm(p, norm, h, eps)?,
                decoder,
                tied,
            })
        };
        // The decoder's bias: beside the decoder, or in it.
        let lm_bias =
            |p: &VarBuilder| if p.contains_tensor("bias") { p.get(v, "bias") } else { p.pp("decoder").get(v, "bias") };
        // ModernBERT: its prediction head (dense, activation, norm; no biases by default) under every task's layer.
        let classifier_act =
            Activation::parse(config.raw.get("classifier_activation").and_then(|a| a.as_str()).unwrap_or("gelu"))?;
        let modern_head = || -> candle_core::Result<Option<Head>> {
            let has = |name: &str| vb.contains_tensor(name);
            if !has("head.dense.weight") {
                return Ok(None);
            }
            let dense = modernbert::projection(&vb.pp("head.dense"), h, h, int8)?;
            let norm = modernbert::norm(&vb.pp("head.norm"), h, eps)?;
            let classifier = || modernbert::projection(&vb.pp("classifier"), h, n_labels, int8);
            let architecture = config.architecture.as_str();
            Ok(Some(if has("classifier.weight") && architecture.ends_with("ForTokenClassification") {
                Head::TokenClassifier { pre: Some(Transform { dense, act: classifier_act, norm }), out: classifier()? }
            } else if has("classifier.weight") && architecture.ends_with("ForQuestionAnswering") {
                let out = modernbert::projection(&vb.pp("classifier"), h, 2, int8)?;
                Head::QuestionAnswering { pre: Some(Transform { dense, act: classifier_act, norm }), out }
            } else if has("classifier.weight") {
                let mean = config.raw.get("classifier_pooling").and_then(|p| p.as_str()) == Some("mean");
                Head::SequenceClassifier {
                    pre: Some((dense, classifier_act)),
                    norm: Some(norm),
                    mean,
                    out: classifier()?,
                }
            } else {
                let bias = if has("decoder.bias") {
                    vb.get(v, "decoder.bias")?
                } else {
                    Tensor::zeros(v, DType::F32, &Device::Cpu)?
                };
                let (decoder, tied) = decoder(vb.pp("decoder"), bias)?;
                Head::MaskedLm { transform: dense, act: classifier_act, norm, decoder, tied }
            }))
        };
        let head = || -> candle_core::Result<Option<Head>> {
            let has = |name: &str| vb.contains_tensor(name);
            Ok(Some(match config.family {
                // DeBERTa's "legacy" head has BERT's names.
                Family::Bert | Family::Deberta if has("cls.predictions.transform.dense.weight") => {
                    let p = vb.pp("cls.predictions");
                    masked_lm(&p, "transform.dense", "transform.LayerNorm", p.pp("decoder"), lm_bias(&p)?, act)?
                }
                Family::DistilBert if has("vocab_transform.weight") => {
                    let p = vb.pp("vocab_projector");
                    masked_lm(vb, "vocab_transform", "vocab_layer_norm", p.clone(), p.get(v, "bias")?, act)?
                }
                Family::Deberta if has("lm_predictions.lm_head.dense.weight") => {
                    let p = vb.pp("lm_predictions.lm_head");
                    masked_lm(&p, "dense", "LayerNorm", p.pp("decoder"), p.get(v, "bias")?, act)?
                }
                family if family.roberta_like() && has("lm_head.dense.weight") => {
                    let p = vb.pp("lm_head");
                    // RobertaLMHead and MPNetLMHead apply erf GELU whatever hidden_act says.
                    masked_lm(&p, "dense", "layer_norm", p.pp("decoder"), lm_bias(&p)?, Activation::Gelu)?
                }
                family if family.roberta_like() && has("classifier.out_proj.weight") => Head::SequenceClassifier {
                    pre: Some((projection(vb, "classifier.dense", h, h)?, Activation::Tanh)),
                    norm: None,
                    mean: false,
                    out: projection(vb, "classifier.out_proj", h, n_labels)?,
                },
                Family::ModernBert => return modern_head(),
                _ if has("qa_outputs.weight") => {
                    Head::QuestionAnswering { pre: None, out: projection(vb, "qa_outputs", h, 2)? }
                }
                _ if has("classifier.weight") => {
                    let out = projection(vb, "classifier", h, n_labels)?;
                    let token_level = config.architecture.ends_with("ForTokenClassification");
                    if token_level {
                        Head::TokenClassifier { pre: None, out }
                    } else {
                        let pre = match config.family {
                            Family::DistilBert => (projection(vb, "pre_classifier", h, h)?, Activation::Relu),
                            // DeBERTa's ContextPooler, outside the encoder, with an activation of its own.
                            Family::Deberta => (projection(vb, "pooler.dense", h, h)?, pooler_act),
                            _ => (projection(&Encoder::base(vb, config), "pooler.dense", h, h)?, Activation::Tanh),
                        };
                        Head::SequenceClassifier { pre: Some(pre), norm: None, mean: false, out }
                    }
                }
                _ => return Ok(None),
            }))
        };
        head().map_err(|e| AiError::corrupt(format!("the task head does not match config.json: {e}")))
    }

    /// Masked-LM logits for one position's hidden state(s), (n, hidden) -> (n, vocab).
    pub fn masked_lm_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let Head::MaskedLm { transform, act, norm, decoder, .. } = self else {
            return Err(AiError::internal("not a masked-LM head"));
        };
        forward(|| Ok(decoder.forward(&norm.forward(&act.apply(&transform.forward(hidden)?)?)?)?))
    }

    /// Sequence logits from the first token's hidden state (or the mean of the real tokens' ones),
    /// (batch, seq, hidden) -> (batch, labels); `mask` (batch, seq) marks the real tokens.
    pub fn sequence_logits(&self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let Head::SequenceClassifier { pre, norm, mean, out } = self else {
            return Err(AiError::internal("not a sequence-classification head"));
        };
        forward(|| {
            let mut x = if *mean {
                let mask = mask.to_dtype(DType::F32)?.to_device(hidden.device())?;
                hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?.broadcast_div(&mask.sum_keepdim(1)?)?
            } else {
                hidden.narrow(1, 0, 1)?.squeeze(1)?
            };
            if let Some((dense, act)) = pre {
                x = act.apply(&dense.forward(&x)?)?;
            }
            if let Some(norm) = norm {
                x = norm.forward(&x)?;
            }
            Ok(out.forward(&x)?)
        })
    }

    /// Per-token logits, (batch, seq, hidden) -> (batch, seq, labels).
    pub fn token_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let Head::TokenClassifier { pre, out } = self else {
            return Err(AiError::internal("not a token-classification head"));
        };
        forward(|| Ok(out.forward(&pre.as_ref().map_or_else(|| Ok(hidden.clone()), |t| t.forward(hidden))?)?))
    }

    /// Per-token answer start and end logits, (batch, seq, hidden) -> (batch, seq, 2).
    pub fn span_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let Head::QuestionAnswering { pre, out } = self else {
            return Err(AiError::internal("not a question-answering head"));
        };
        forward(|| Ok(out.forward(&pre.as_ref().map_or_else(|| Ok(hidden.clone()), |t| t.forward(hidden))?)?))
    }
}

/// Loads weights from safetensors files, memory-mapped, converting to f32 (onto a GPU, copied there).
pub fn var_builder(weights: &[std::path::PathBuf], device: &Device) -> Result<VarBuilder<'static>> {
    for path in weights {
        std::fs::File::open(path).map_err(|e| {
            AiError::missing_file(format!("cannot open {}: {e}", path.display()))
                .with_hint("The database server reads model files as its own operating-system user.")
        })?;
    }
    // SAFETY: the files are mapped read-only; pg_ai never writes to a model file while it is loaded.
    unsafe { VarBuilder::from_mmaped_safetensors(weights, DType::F32, device) }.map_err(|e| {
        AiError::corrupt(format!("cannot read the weights: {e}"))
            .with_hint("The file is not valid safetensors; write it again with save_pretrained.")
    })
}
