//! DeBERTa-v2 and v3 (`deberta-v2`): BERT's encoder layers with disentangled attention. Besides the content
//! scores q·k, each head adds content-to-position (the query against the key's relative position) and
//! position-to-content (the key against the query's) scores, read from one table of relative position embeddings
//! over log-spaced buckets, as transformers' DisentangledSelfAttention computes them. models::bert runs the rest
//! (embeddings, projections, heads); this module holds what is DeBERTa's own.

use crate::error::{AiError, Result};
use candle_core::{Module, Tensor, D};
use candle_nn::VarBuilder;
use serde_json::Value;

/// What DeBERTa's config.json says beyond BERT's.
#[derive(Debug, Clone)]
pub struct DebertaConfig {
    /// Positions (token embeddings plus absolute positions) as BERT has them; DeBERTa-v3 has none.
    pub absolute_positions: bool,
    /// Relative attention on; without it DeBERTa is BERT without positions.
    pub relative: bool,
    /// Buckets of relative positions on each side (position_buckets), or 0 for plain distances.
    pub buckets: usize,
    /// The distance the buckets' logarithmic part reaches (max_relative_positions).
    pub max_distance: usize,
    pub c2p: bool,
    pub p2c: bool,
    /// Positions projected by the content's own query and key projections (v3), or by their own.
    pub share_att_key: bool,
    /// The relative embeddings go through the encoder's LayerNorm first (norm_rel_ebd "layer_norm").
    pub norm_relative: bool,
    /// The sequence classifier's pooler activation (pooler_hidden_act).
    pub pooler_act: String,
}

impl DebertaConfig {
    pub fn from_value(raw: &Value, max_positions: usize, hidden: usize, heads: usize) -> Result<Self> {
        let int = |name: &str| raw.get(name).and_then(Value::as_i64);
        let flag = |name: &str, default: bool| raw.get(name).and_then(Value::as_bool).unwrap_or(default);
        let unsupported = |what: &str| {
            Err(AiError::invalid(format!("DeBERTa models with {what} are not supported"))
                .with_hint("pg_ai runs DeBERTa-v2 and v3 models such as microsoft/deberta-v3-base and its fine-tunes."))
        };
        if int("conv_kernel_size").unwrap_or(0) > 0 {
            return unsupported("a convolution layer (conv_kernel_size)");
        }
        if int("embedding_size").is_some_and(|e| e != hidden as i64) {
            return unsupported("an embedding size other than the hidden size");
        }
        if heads > 0 && int("attention_head_size").is_some_and(|d| d != (hidden / heads) as i64) {
            return unsupported("an attention_head_size of their own");
        }
        let kinds: Vec<String> = match raw.get("pos_att_type") {
            Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).map(str::to_lowercase).collect(),
            Some(Value::String(s)) => s.to_lowercase().split('|').map(|k| k.trim().to_string()).collect(),
            _ => Vec::new(),
        };
        let max_relative = int("max_relative_positions").filter(|&m| m >= 1).map_or(max_positions, |m| m as usize);
        let buckets = int("position_buckets").filter(|&b| b > 0).map_or(0, |b| b as usize);
        let norm = raw.get("norm_rel_ebd").and_then(Value::as_str).unwrap_or("none").to_lowercase();
        let config = DebertaConfig {
            absolute_positions: flag("position_biased_input", true),
            relative: flag("relative_attention", false),
            buckets,
            max_distance: max_relative,
            c2p: kinds.iter().any(|k| k == "c2p"),
            p2c: kinds.iter().any(|k| k == "p2c"),
            share_att_key: flag("share_att_key", false),
            norm_relative: norm.split('|').any(|k| k.trim() == "layer_norm"),
            pooler_act: raw.get("pooler_hidden_act").and_then(Value::as_str).unwrap_or("gelu").to_string(),
        };
        if config.relative && config.span() == 0 {
            return Err(AiError::corrupt("config.json: relative attention over no positions"));
        }
        Ok(config)
    }

    /// The rows of the position table each pair of a `len`-token sequence reads, as (len, len) tables: for
    /// content-to-position, at [query][key], the bucket of query minus key; for position-to-content, at
    /// [key][query], that of key minus query, negated; both moved to start at 0 and clamped to the table.
    pub fn position_rows(&self, len: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let span = self.span() as i64;
        let row = |b: i64| (b + span).clamp(0, 2 * span - 1) as u32;
        let distance = |d: i64| bucket(d, self.buckets, self.max_distance);
        let table = |f: &dyn Fn(i64) -> u32| -> candle_core::Result<Tensor> {
            let n = len as i64;
            let cells: Vec<u32> = (0..n).flat_map(|r| (0..n).map(move |c| r - c)).map(f).collect();
            Tensor::from_vec(cells, (len, len), &candle_core::Device::Cpu)
        };
        Ok((table(&|d| row(distance(d)))?, table(&|d| row(-distance(d)))?))
    }

    /// Rows of the relative embeddings on each side of zero (att_span).
    pub fn span(&self) -> usize {
        if self.buckets > 0 {
            self.buckets
        } else {
            self.max_distance
        }
    }

    /// The scores' divisor is sqrt(head size x this): one for the content scores and one per position kind.
    pub fn scale_factor(&self) -> usize {
        1 + usize::from(self.c2p) + usize::from(self.p2c)
    }
}

/// transformers' make_log_bucket_position: distances below half the buckets as they are, longer ones on a log
/// scale up to `max_distance`, in f32 as torch computes them (so the boundaries fall where its do).
fn bucket(relative: i64, buckets: usize, max_distance: usize) -> i64 {
    if buckets == 0 {
        return relative;
    }
    let mid = (buckets / 2) as i64;
    let abs = if relative < mid && relative > -mid { mid - 1 } else { relative.abs() };
    if abs <= mid {
        return relative;
    }
    let scale = ((max_distance as f32 - 1.0) / mid as f32).ln();
    let log = ((abs as f32 / mid as f32).ln() / scale * (mid - 1) as f32).ceil() as i64 + mid;
    log * relative.signum()
}

/// Each layer's relative position embeddings projected into its heads, computed once at load (they depend on
/// the weights alone).
pub struct Disentangled {
    config: DebertaConfig,
    /// Per layer: the positions as keys (content-to-position) and as queries (position-to-content), each
    /// (heads, 2 x span, head size), where the config asks for them.
    layers: Vec<(Option<Tensor>, Option<Tensor>)>,
}

impl Disentangled {
    /// `base` is the encoder's VarBuilder. The projections are read in f32 whatever the layers are held in: they
    /// run once, here.
    pub fn load(
        base: &VarBuilder,
        config: &DebertaConfig,
        hidden: usize,
        heads: usize,
        eps: f64,
        layers: usize,
    ) -> candle_core::Result<Self> {
        let rows = config.span().saturating_mul(2);
        let mut table = base.pp("encoder.rel_embeddings").get((rows, hidden), "weight")?;
        if config.norm_relative {
            table = candle_nn::layer_norm(hidden, eps, base.pp("encoder.LayerNorm"))?.forward(&table)?;
        }
        let in_heads = |x: Tensor| x.reshape((rows, heads, hidden / heads))?.transpose(0, 1)?.contiguous();
        let mut tables = Vec::new(); // not sized by config.json, which may be damaged
        for i in 0..layers {
            let own = base.pp(format!("encoder.layer.{i}.attention.self"));
            // v3 projects positions with the content's own query and key projections.
            let (key, query) =
                if config.share_att_key { ("key_proj", "query_proj") } else { ("pos_key_proj", "pos_query_proj") };
            let project = |name: &str| -> candle_core::Result<Tensor> {
                in_heads(candle_nn::linear(hidden, hidden, own.pp(name))?.forward(&table)?)
            };
            let as_key = if config.c2p { Some(project(key)?) } else { None };
            let as_query = if config.p2c { Some(project(query)?) } else { None };
            tables.push((as_key, as_query));
        }
        Ok(Disentangled { config: config.clone(), layers: tables })
    }

    /// DebertaConfig::position_rows.
    pub fn indices(&self, len: usize) -> candle_core::Result<(Tensor, Tensor)> {
        self.config.position_rows(len)
    }

    /// What the content scores q·k are divided by: sqrt(head size x the scale factor).
    pub fn content_scale(&self, head_size: usize) -> f64 {
        ((head_size * self.config.scale_factor()) as f64).sqrt()
    }

    /// The position scores of `layer` to add to the content scores, (batch, heads, len, len), for queries and keys
    /// (batch, heads, len, head size), already divided as the content scores are. Computed a row at a time: a
    /// row's scores against every position row are (heads, len, 2 x span), which for a whole batch of long texts
    /// would be several times the attention scores themselves.
    pub fn scores(&self, layer: usize, q: &Tensor, k: &Tensor, indices: &(Tensor, Tensor)) -> Result<Tensor> {
        let (b, h, len, d) = q.dims4()?;
        let span = self.config.span();
        let f32s =
            crate::budget::product(&[b, h, len, len, 3]).saturating_add(crate::budget::product(&[h, len, 2 * span, 3]));
        crate::budget::check(f32s.saturating_mul(4), || format!("DeBERTa's attention over {b} rows of {len} tokens"))?;
        let (as_key, as_query) = &self.layers[layer];
        let index = |i: &Tensor| i.unsqueeze(0)?.broadcast_as((h, len, len))?.contiguous();
        let (c2p, p2c) = (index(&indices.0)?, index(&indices.1)?);
        let mut rows = Vec::with_capacity(b);
        for r in 0..b {
            let (q, k) = (q.get(r)?, k.get(r)?);
            let mut row = Tensor::zeros((h, len, len), q.dtype(), q.device())?;
            if let Some(positions) = as_key {
                // The row's queries against every position row, then each pair's row.
                row = (row + q.matmul(&positions.t()?)?.gather(&c2p, D::Minus1)?)?;
            }
            if let Some(positions) = as_query {
                row = (row + k.matmul(&positions.t()?)?.gather(&p2c, D::Minus1)?.transpose(1, 2)?)?;
            }
            rows.push(row);
        }
        Ok((Tensor::stack(&rows, 0)? / self.content_scale(d))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_as_transformers_makes_them() {
        // make_log_bucket_position(torch.arange(-40, 41), 8, 64)
        let got: Vec<i64> = (-40..=40).map(|d| bucket(d, 8, 64)).collect();
        let mut want = Vec::new();
        for d in -40i64..=40 {
            let a = d.abs();
            want.push(if a <= 4 {
                d
            } else {
                d.signum() * (4 + ((a as f32 / 4.0).ln() / (63f32 / 4.0).ln() * 3.0).ceil() as i64)
            });
        }
        assert_eq!(got, want);
        assert_eq!(bucket(7, 0, 64), 7);
    }
}
