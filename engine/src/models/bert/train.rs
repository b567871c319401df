//! A differentiable BERT with transformers' tensor names, so that engine::models::bert loads what it saves:
//! BertForMaskedLM (decoder tied to the word embeddings), BertForSequenceClassification and
//! BertForTokenClassification, and the same three of DistilBERT, RoBERTa (and XLM-RoBERTa, CamemBERT) and
//! DeBERTa-v2/v3, which differ in what family::Layout describes and, for DeBERTa, in its disentangled attention.

use crate::error::{AiError, Result};
use crate::kernels::fused::{add_bias, Heads, Span};
use crate::models::bert::config::{Family, ModelConfig};
use crate::models::bert::layout::Layout;
use crate::models::deberta::DebertaConfig;
use crate::train::batch::{rows_of, Batch, Packed, Targets};
use crate::train::nn::{attention, attention_probs, dropout, layer_norm, linear, Activation, Dropout};
use crate::train::options::ModelSize;
use crate::train::params::{read_config, read_safetensors, ParamBuilder, Params};
use crate::train::Trainable;
use candle_core::Tensor;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// What the model is trained to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BertTask {
    MaskedLm,
    /// Labels in id order.
    Classifier(Vec<String>),
    /// One label per token; labels in id order.
    TokenClassifier(Vec<String>),
}

impl BertTask {
    /// `class` as Layout::class_of gives it.
    fn architecture(&self, class: &str) -> String {
        let task = match self {
            BertTask::MaskedLm => "MaskedLM",
            BertTask::Classifier(_) => "SequenceClassification",
            BertTask::TokenClassifier(_) => "TokenClassification",
        };
        format!("{class}For{task}")
    }

    fn labels(&self) -> Option<&[String]> {
        match self {
            BertTask::MaskedLm => None,
            BertTask::Classifier(labels) | BertTask::TokenClassifier(labels) => Some(labels),
        }
    }
}

type Pair = (Tensor, Tensor);

struct Layer {
    query: Pair,
    key: Pair,
    value: Pair,
    attention_out: Pair,
    attention_norm: Pair,
    ffn_in: Pair,
    ffn_out: Pair,
    output_norm: Pair,
    /// DeBERTa's own position projections, where it does not share the content's (share_att_key false).
    position_key: Option<Pair>,
    position_query: Option<Pair>,
}

/// DeBERTa's relative position embeddings (and their norm), which every layer's attention projects.
struct Relative {
    config: DebertaConfig,
    table: Tensor,
    norm: Option<Pair>,
}

enum Head {
    MaskedLm {
        dense: Pair,
        act: Activation,
        norm: Pair,
        bias: Tensor,
    },
    /// `pre` is BERT's pooler (tanh), DistilBERT's pre_classifier (relu) or RoBERTa's classifier.dense (tanh).
    Classifier {
        pre: Pair,
        act: Activation,
        /// Dropout before `pre` (RoBERTa's head, DeBERTa's pooler), if any.
        dropout_first: Option<f64>,
        out: Pair,
        dropout: f64,
    },
    /// No pooler: transformers builds this encoder with add_pooling_layer=False.
    TokenClassifier {
        out: Pair,
        dropout: f64,
    },
}

pub struct TrainableBert {
    /// The config.json to write: the base's, with the architecture and labels of this task.
    pub config: Value,
    params: Params,
    /// Parameters initialised here rather than read from the base (a new head, say).
    pub fresh: Vec<String>,
    word: Tensor,
    /// Absent in DeBERTa-v3, whose positions are relative only.
    position: Option<Tensor>,
    /// Where positions start (RoBERTa's pad_token_id + 1).
    position_offset: usize,
    token_type: Option<Tensor>,
    embeddings_norm: Pair,
    layers: Vec<Layer>,
    relative: Option<Relative>,
    head: Head,
    heads: usize,
    eps: f64,
    act: Activation,
    hidden_dropout: f64,
    attention_dropout: f64,
    attention_out_dropout: bool,
}

/// config.json of a new BERT of the given size.
pub fn new_config(size: &ModelSize) -> Value {
    json!({
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": size.vocab_size,
        "hidden_size": size.hidden_size,
        "num_hidden_layers": size.layers,
        "num_attention_heads": size.heads,
        "intermediate_size": size.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": size.dropout,
        "attention_probs_dropout_prob": size.dropout,
        "classifier_dropout": null,
        "max_position_embeddings": size.positions,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "tie_word_embeddings": true,
        "dtype": "float32",
    })
}

/// Bare encoder files name tensors without the family's prefix; old files name the decoder bias
/// after the decoder (tied to the head's bias, so either will do).
fn normalise_names(source: HashMap<String, Tensor>, layout: &Layout) -> HashMap<String, Tensor> {
    source
        .into_iter()
        .map(|(name, t)| {
            let name = if layout.bare.iter().any(|p| name.starts_with(p)) {
                format!("{}.{name}", layout.prefix)
            } else if name == "cls.predictions.decoder.bias" || name == "lm_head.decoder.bias" {
                name.replace(".decoder.bias", ".bias")
            } else {
                name
            };
            (name, t)
        })
        .collect()
}

fn f64_field(config: &Value, name: &str, default: f64) -> f64 {
    config.get(name).and_then(Value::as_f64).unwrap_or(default)
}

impl TrainableBert {
    /// Loads a save_pretrained directory for further training; the task follows its architecture.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = read_config(dir)?;
        let parsed = ModelConfig::from_value(config.clone())?;
        let task = if parsed.architecture.ends_with("ForSequenceClassification") {
            BertTask::Classifier(parsed.labels.clone())
        } else if parsed.architecture.ends_with("ForTokenClassification") {
            BertTask::TokenClassifier(parsed.labels.clone())
        } else {
            BertTask::MaskedLm
        };
        Self::build(config, task, read_safetensors(&dir.join("model.safetensors"))?, 0)
    }

    /// Builds the model for `task` from `config`, taking tensors from `source` where it has them
    /// and initialising the rest (seeded) as transformers does.
    pub fn build(mut config: Value, task: BertTask, source: HashMap<String, Tensor>, seed: u64) -> Result<Self> {
        let c = ModelConfig::from_value(config.clone())?;
        let layout = Layout::of(c.family)?;
        if c.heads == 0 || !c.hidden_size.is_multiple_of(c.heads) {
            return Err(AiError::corrupt("hidden size is not a multiple of the number of heads"));
        }
        if c.family == Family::DistilBert && config.get("sinusoidal_pos_embds").and_then(Value::as_bool) == Some(true) {
            return Err(AiError::wrong_task("a DistilBERT with sinusoidal position embeddings cannot be trained here")
                .with_hint("Fine-tuning supports DistilBERT models with learnt position embeddings."));
        }
        let position_offset = layout.position_offset(c.pad_token_id);
        if c.max_positions <= position_offset {
            return Err(AiError::corrupt("config.json: max_position_embeddings leaves no position for a token"));
        }
        let class = layout.class_of(config.get("model_type").and_then(Value::as_str).unwrap_or(""));
        let mut source = normalise_names(source, layout);
        // A head trained for other labels, or for sequences rather than tokens (or the reverse), starts afresh
        // (RoBERTa's classifier.dense with it).
        if task.labels().is_some_and(|labels| labels != c.labels || c.architecture != task.architecture(class)) {
            source.retain(|name, _| !name.starts_with("classifier."));
        }
        let std = f64_field(&config, "initializer_range", 0.02);
        if !(std > 0.0 && std.is_finite()) {
            return Err(AiError::corrupt("config.json: initializer_range must be a positive number"));
        }
        let (h, inter) = (c.hidden_size, c.intermediate_size);
        let mut b = ParamBuilder::new(source, seed);
        let base = layout.prefix;
        let word = b.embedding(
            &format!("{base}.embeddings.word_embeddings.weight"),
            c.vocab_size,
            h,
            std,
            Some(c.pad_token_id),
        )?;
        // RoBERTa's position embeddings have a padding row too (zero when new; never used for a real token).
        let position_pad = (position_offset > 0).then_some(c.pad_token_id);
        let position = match &c.deberta {
            Some(d) if !d.absolute_positions => None,
            _ => Some(b.embedding(
                &format!("{base}.embeddings.position_embeddings.weight"),
                c.max_positions,
                h,
                std,
                position_pad,
            )?),
        };
        let token_types = format!("{base}.embeddings.token_type_embeddings.weight");
        // DeBERTa-v3 has no token types (type_vocab_size 0).
        let token_type = if layout.token_types && (c.deberta.is_none() || c.type_vocab_size > 0) {
            Some(b.embedding(&token_types, c.type_vocab_size.max(1), h, std, None)?)
        } else {
            None
        };
        let embeddings_norm = b.norm(&format!("{base}.embeddings.LayerNorm"), h)?;
        let lin = |b: &mut ParamBuilder, name: String, d_in: usize, d_out: usize| -> Result<Pair> {
            Ok((b.normal(&format!("{name}.weight"), &[d_out, d_in], std)?, b.bias(&format!("{name}.bias"), d_out)?))
        };
        let relative = match &c.deberta {
            Some(d) if d.relative => Some(Relative {
                config: d.clone(),
                table: b.embedding(
                    &format!("{base}.encoder.rel_embeddings.weight"),
                    d.span().saturating_mul(2),
                    h,
                    std,
                    None,
                )?,
                norm: if d.norm_relative { Some(b.norm(&format!("{base}.encoder.LayerNorm"), h)?) } else { None },
            }),
            _ => None,
        };
        // DeBERTa's own position projections (share_att_key false), where its attention reads positions that way.
        let own_positions = |kind: bool| relative.as_ref().is_some_and(|r| !r.config.share_att_key && kind);
        let (own_key, own_query) = (
            own_positions(relative.as_ref().is_some_and(|r| r.config.c2p)),
            own_positions(relative.as_ref().is_some_and(|r| r.config.p2c)),
        );
        let mut layers = Vec::new();
        for i in 0..c.layers {
            let p = format!("{base}.{}.{i}", layout.names.layer);
            let position_key =
                if own_key { Some(lin(&mut b, format!("{p}.attention.self.pos_key_proj"), h, h)?) } else { None };
            let position_query =
                if own_query { Some(lin(&mut b, format!("{p}.attention.self.pos_query_proj"), h, h)?) } else { None };
            layers.push(Layer {
                position_key,
                position_query,
                query: lin(&mut b, format!("{p}.{}", layout.names.query), h, h)?,
                key: lin(&mut b, format!("{p}.{}", layout.names.key), h, h)?,
                value: lin(&mut b, format!("{p}.{}", layout.names.value), h, h)?,
                attention_out: lin(&mut b, format!("{p}.{}", layout.names.attention_out), h, h)?,
                attention_norm: b.norm(&format!("{p}.{}", layout.names.attention_norm), h)?,
                ffn_in: lin(&mut b, format!("{p}.{}", layout.names.ffn_in), h, inter)?,
                ffn_out: lin(&mut b, format!("{p}.{}", layout.names.ffn_out), inter, h)?,
                output_norm: b.norm(&format!("{p}.{}", layout.names.output_norm), h)?,
            });
        }
        let act = Activation::parse(&c.activation)?;
        let dropouts = layout.dropouts(&config);
        let head = match &task {
            BertTask::MaskedLm => Head::MaskedLm {
                dense: lin(&mut b, layout.mlm_dense.into(), h, h)?,
                act: layout.mlm_act.unwrap_or(act),
                norm: b.norm(layout.mlm_norm, h)?,
                bias: b.bias(layout.mlm_bias, c.vocab_size)?,
            },
            BertTask::Classifier(labels) => Head::Classifier {
                pre: lin(&mut b, layout.seq_dense.into(), h, h)?,
                act: match &c.deberta {
                    Some(d) => Activation::parse(&d.pooler_act)?,
                    None => layout.seq_act,
                },
                dropout_first: layout.seq_dropout_first.then_some(dropouts.before_pooler),
                out: lin(&mut b, layout.seq_out.into(), h, labels.len())?,
                dropout: dropouts.sequence_head,
            },
            BertTask::TokenClassifier(labels) => Head::TokenClassifier {
                out: lin(&mut b, "classifier".into(), h, labels.len())?,
                dropout: dropouts.token_head,
            },
        };
        let obj = config.as_object_mut().ok_or_else(|| AiError::corrupt("config.json is not an object"))?;
        for key in ["id2label", "label2id", "problem_type", "num_labels"] {
            obj.remove(key);
        }
        obj.insert("architectures".into(), json!([task.architecture(class)]));
        if let Some(labels) = task.labels() {
            let id2label: serde_json::Map<String, Value> =
                labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
            let label2id: serde_json::Map<String, Value> =
                labels.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect();
            obj.insert("id2label".into(), Value::Object(id2label));
            obj.insert("label2id".into(), Value::Object(label2id));
        }
        if matches!(task, BertTask::Classifier(_)) {
            obj.insert("problem_type".into(), json!("single_label_classification"));
        }
        Ok(TrainableBert {
            config,
            fresh: std::mem::take(&mut b.fresh),
            params: b.params,
            word,
            position,
            position_offset,
            relative,
            token_type,
            embeddings_norm,
            layers,
            head,
            heads: c.heads,
            eps: c.layer_norm_eps,
            act,
            hidden_dropout: dropouts.hidden,
            attention_dropout: dropouts.attention,
            attention_out_dropout: layout.attention_out_dropout,
        })
    }

    /// Last hidden states of the batch's real tokens, packed: (tokens, hidden).
    pub fn hidden(&self, batch: &Batch, packed: &Packed, mut d: Option<&mut Dropout>) -> Result<Tensor> {
        let mut x = match &self.position {
            Some(position) => {
                if self.position_offset + batch.len > position.dim(0)? {
                    let len = batch.len;
                    return Err(AiError::internal(format!("a batch of {len} tokens exceeds the position embeddings")));
                }
                packed.embeddings(&self.word, position, self.position_offset as u32)?
            }
            None => packed.words(&self.word)?,
        };
        if let Some(token_type) = &self.token_type {
            // Single-sentence inputs: every token is of type 0.
            x = add_bias(&x, &token_type.get(0)?)?;
        }
        let mut x = dropout(&mut d, &layer_norm(&x, &self.embeddings_norm, self.eps)?, self.hidden_dropout)?;
        for l in &self.layers {
            x = self.layer(l, &x, &packed.spans, &mut d)?;
        }
        Ok(x)
    }

    fn layer(&self, l: &Layer, x: &Tensor, spans: &[Span], d: &mut Option<&mut Dropout>) -> Result<Tensor> {
        let h = x.dim(1)?;
        let scale = 1.0 / ((h / self.heads) as f64).sqrt();
        let heads = Heads { heads: self.heads, kv_heads: self.heads, scale, causal: false, bias: None };
        let project = |p: &Pair| linear(x, &p.0, Some(&p.1));
        let qkv = (&project(&l.query)?, &project(&l.key)?, &project(&l.value)?);
        let context = match &self.relative {
            Some(relative) => self.disentangled(relative, l, qkv, spans, d)?,
            None => attention(qkv, &heads, spans, d, self.attention_dropout)?,
        };
        let a = linear(&context, &l.attention_out.0, Some(&l.attention_out.1))?;
        let a = if self.attention_out_dropout { dropout(d, &a, self.hidden_dropout)? } else { a };
        let x = layer_norm(&(a + x)?, &l.attention_norm, self.eps)?;
        let f = self.act.apply(&linear(&x, &l.ffn_in.0, Some(&l.ffn_in.1))?)?;
        let f = dropout(d, &linear(&f, &l.ffn_out.0, Some(&l.ffn_out.1))?, self.hidden_dropout)?;
        layer_norm(&(f + x)?, &l.output_norm, self.eps)
    }
}

impl TrainableBert {
    /// DeBERTa's attention, sequence by sequence on candle's differentiable operations: the content scores plus
    /// the content-to-position and position-to-content ones (models::deberta computes the same at inference),
    /// over (tokens, hidden) queries, keys and values; (tokens, hidden) out.
    fn disentangled(
        &self,
        r: &Relative,
        l: &Layer,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        spans: &[Span],
        d: &mut Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let (heads, h) = (self.heads, q.dim(1)?);
        let head_size = h / heads;
        let table = match &r.norm {
            Some(norm) => layer_norm(&r.table, norm, self.eps)?,
            None => r.table.clone(),
        };
        let in_heads = |x: &Tensor| -> Result<Tensor> {
            let n = x.dim(0)?;
            Ok(x.reshape((n, heads, head_size))?.transpose(0, 1)?.contiguous()?)
        };
        let shared = r.config.share_att_key;
        let position = |own: &Option<Pair>, content: &Pair| -> Result<Tensor> {
            let p = if shared {
                content
            } else {
                own.as_ref().ok_or_else(|| AiError::internal("no position projection"))?
            };
            in_heads(&linear(&table, &p.0, Some(&p.1))?)
        };
        let as_key = if r.config.c2p { Some(position(&l.position_key, &l.key)?) } else { None };
        let as_query = if r.config.p2c { Some(position(&l.position_query, &l.query)?) } else { None };
        let scale = 1.0 / ((head_size * r.config.scale_factor()) as f64).sqrt();
        let mut out = Vec::with_capacity(spans.len());
        for s in spans {
            let n = s.len;
            let (qs, ks, vs) = (
                in_heads(&q.narrow(0, s.start, n)?)?,
                in_heads(&k.narrow(0, s.start, n)?)?,
                in_heads(&v.narrow(0, s.start, n)?)?,
            );
            let (c2p, p2c) = r.config.position_rows(n)?;
            let index = |t: Tensor| t.unsqueeze(0)?.broadcast_as((heads, n, n))?.contiguous();
            let mut scores = qs.matmul(&ks.t()?)?;
            if let Some(positions) = &as_key {
                scores = (scores + qs.matmul(&positions.t()?)?.gather(&index(c2p)?, 2)?)?;
            }
            if let Some(positions) = &as_query {
                scores = (scores + ks.matmul(&positions.t()?)?.gather(&index(p2c)?, 2)?.transpose(1, 2)?)?;
            }
            let probs = dropout(d, &attention_probs(&scores, scale, None)?, self.attention_dropout)?;
            out.push(probs.matmul(&vs)?.transpose(0, 1)?.reshape((n, h))?);
        }
        Ok(Tensor::cat(&out, 0)?)
    }
}

impl Trainable for TrainableBert {
    fn params(&self) -> &Params {
        &self.params
    }

    fn logits(&self, batch: &Batch, mut d: Option<&mut Dropout>) -> Result<Tensor> {
        let packed = batch.packed()?;
        let hidden = self.hidden(batch, &packed, d.as_deref_mut())?;
        match (&self.head, &batch.targets) {
            (Head::MaskedLm { dense, act, norm, bias }, Targets::Tokens { .. }) => {
                // Only the masked positions go through the vocabulary projection.
                let x = rows_of(&hidden, &packed.targets)?;
                let x = layer_norm(&act.apply(&linear(&x, &dense.0, Some(&dense.1))?)?, norm, self.eps)?;
                linear(&x, &self.word, Some(bias))
            }
            (Head::Classifier { pre, act, dropout_first, out, dropout: p }, Targets::Labels(_)) => {
                if packed.spans.iter().any(|s| s.len == 0) {
                    return Err(AiError::internal("a row to classify has no tokens"));
                }
                let starts: Vec<u32> = packed.spans.iter().map(|s| s.start as u32).collect();
                let mut first = rows_of(&hidden, &starts)?;
                if let Some(before) = dropout_first {
                    first = dropout(&mut d, &first, *before)?;
                }
                let pooled = act.apply(&linear(&first, &pre.0, Some(&pre.1))?)?;
                linear(&dropout(&mut d, &pooled, *p)?, &out.0, Some(&out.1))
            }
            // Tokens without a target (transformers' -100) are left out rather than ignored by the loss.
            (Head::TokenClassifier { out, dropout: p }, Targets::Tokens { .. }) => {
                linear(&dropout(&mut d, &rows_of(&hidden, &packed.targets)?, *p)?, &out.0, Some(&out.1))
            }
            _ => Err(AiError::internal("the batch's targets do not fit the model's head")),
        }
    }

    fn config(&self) -> &Value {
        &self.config
    }
}
