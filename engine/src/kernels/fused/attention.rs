//! Self-attention over packed sequences as one graph node: softmax(q kᵀ scale), causal or not, dropped out,
//! times v, for every sequence and head at once. The sequences' tokens lie one after another in (tokens, heads *
//! dim) tensors, with no padding: a batch padded to its longest row spent over half its work on padding (rows
//! of Debian's fortunes, 128 tokens at most), in every projection and in attention.
//!
//! Composed from candle's ops, attention takes a reshape, a transpose and a copy per input, two batched products
//! that candle runs one (row, head) pair after another, each split over the threads, a softmax, a dropout, and a
//! transpose and reshape back, all with their backward nodes. Here the (sequence, head) pairs run in parallel,
//! each product on one thread, reading every head's columns in place from the projections' outputs.

use super::gemm::{product, Threads, View};
use super::{new_tensor, softmax_row, values, with_values, CandleResult};
use crate::error::{AiError, Result};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// One sequence's tokens in a packed tensor: rows `start..start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

/// What shapes the attention of one call.
#[derive(Debug, Clone)]
pub struct Heads {
    /// Query heads.
    pub heads: usize,
    /// Key and value heads: fewer than `heads` for grouped-query attention, query head h reading h / (heads /
    /// kv_heads).
    pub kv_heads: usize,
    /// Multiplies the scores: 1/sqrt(head dim).
    pub scale: f64,
    /// Whether a token attends only to itself and those before it (a decoder).
    pub causal: bool,
    /// Scores added by position, if any.
    pub bias: Option<PairBias>,
}

/// A score added to each (query, key) pair's scaled score by the pair's positions in their sequence, the same in
/// every sequence: MPNet's relative position bias, a sliding window's mask (-inf outside it; each query must see
/// one key at least). A constant: no gradient flows to it.
#[derive(Debug, Clone)]
pub struct PairBias {
    /// (heads, size, size), or (1, size, size) for one bias that every head adds.
    values: Arc<Vec<f32>>,
    heads: usize,
    size: usize,
}

impl PairBias {
    /// The bias of `heads` heads (or 1 for all) over sequences of up to `size` tokens, from (heads, size, size)
    /// values.
    pub fn new(values: Vec<f32>, heads: usize, size: usize) -> Result<Self> {
        if Some(values.len()) != heads.checked_mul(size).and_then(|n| n.checked_mul(size)) {
            return Err(AiError::internal(format!(
                "attention: {} bias values for {heads} heads of {size}²",
                values.len()
            )));
        }
        Ok(PairBias { values: Arc::new(values), heads, size })
    }

    /// Query row `i`'s biases of head `h` over keys 0..n.
    fn row(&self, h: usize, i: usize, n: usize) -> &[f32] {
        let start = ((h % self.heads) * self.size + i) * self.size;
        &self.values[start..start + n]
    }
}

/// Self-attention of the packed sequences `spans` (which do not overlap): q (tokens, heads * dim), k and v
/// (tokens, kv_heads * dim); the result is (tokens, heads * dim), each head's output in its columns, 0 for tokens
/// in no span. `dropout` holds a factor per attention probability: sequence by sequence, head by head, query by
/// query, key by key.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    shape: &Heads,
    spans: &[Span],
    dropout: Option<Vec<f32>>,
) -> Result<Tensor> {
    let (tokens, width) = q.dims2()?;
    let (heads, kv_heads) = (shape.heads, shape.kv_heads);
    let fits = heads > 0
        && kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && width.is_multiple_of(heads)
        && v.dims() == k.dims()
        && k.dims() == [tokens, width / heads * kv_heads]
        && spans.iter().all(|s| s.start + s.len <= tokens)
        && shape
            .bias
            .as_ref()
            .is_none_or(|b| (b.heads == 1 || b.heads == heads) && spans.iter().all(|s| s.len <= b.size));
    if !fits {
        return Err(AiError::internal(format!(
            "attention: {heads} query and {kv_heads} key heads over {} sequences do not fit q {:?}, k {:?}, v {:?} \
             (or a bias of {:?} heads and size)",
            spans.len(),
            q.dims(),
            k.dims(),
            v.dims(),
            shape.bias.as_ref().map(|b| (b.heads, b.size))
        )));
    }
    let mut factor_starts = Vec::with_capacity(spans.len() * heads + 1);
    factor_starts.push(0);
    for s in spans {
        for _ in 0..heads {
            factor_starts.push(factor_starts.last().copied().unwrap_or(0) + s.len * s.len);
        }
    }
    if dropout.as_ref().is_some_and(|d| Some(&d.len()) != factor_starts.last()) {
        return Err(AiError::internal("attention: one dropout factor per attention probability"));
    }
    let op = Attention {
        spans: spans.to_vec(),
        heads,
        kv_heads,
        dim: width / heads,
        scale: shape.scale as f32,
        causal: shape.causal,
        bias: shape.bias.clone(),
        dropout: dropout.map(|d| (Arc::new(d), factor_starts)),
        // Inference needs no probabilities kept for a backward pass: (sequences, heads, len, len) of them.
        keep: q.track_op() || k.track_op() || v.track_op(),
        probs: OnceLock::new(),
    };
    Ok(q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)?)
}

/// How many attention probabilities `spans` have with `heads` heads: the dropout factors `attention` takes.
pub fn probabilities(spans: &[Span], heads: usize) -> usize {
    spans.iter().map(|s| heads * s.len * s.len).sum()
}

struct Attention {
    spans: Vec<Span>,
    heads: usize,
    kv_heads: usize,
    dim: usize,
    scale: f32,
    causal: bool,
    bias: Option<PairBias>,
    /// The factors, and where each (sequence, head)'s start.
    dropout: Option<(Arc<Vec<f32>>, Vec<usize>)>,
    /// Whether to keep the probabilities for a backward pass.
    keep: bool,
    /// The probabilities before dropout, per (sequence, head), that the forward pass computed for the backward.
    probs: OnceLock<Vec<Vec<f32>>>,
}

impl Attention {
    /// Query head h of sequence s in q or the output, (len, dim).
    fn q_view(&self, s: usize, h: usize) -> View {
        let width = self.heads * self.dim;
        View::rows(self.spans[s].start * width + h * self.dim, width)
    }

    /// Key or value head h of sequence s, (len, dim).
    fn kv_view(&self, s: usize, h: usize) -> View {
        let width = self.kv_heads * self.dim;
        View::rows(self.spans[s].start * width + h * self.dim, width)
    }

    fn kv_of(&self, h: usize) -> usize {
        h / (self.heads / self.kv_heads)
    }

    /// The dropout factors of task (sequence * heads + head), if any.
    fn factors(&self, task: usize) -> Option<&[f32]> {
        self.dropout.as_ref().map(|(d, starts)| &d[starts[task]..starts[task + 1]])
    }

    /// Probabilities and output of query head h of sequence s, the task numbered s * heads + h.
    fn head(&self, task: usize, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (s, h) = (task / self.heads, task % self.heads);
        let (n, d) = (self.spans[s].len, self.dim);
        if n == 0 {
            return (Vec::new(), Vec::new());
        }
        let mut scores = vec![0f32; n * n];
        let kv = self.kv_view(s, self.kv_of(h));
        product((n, n, d), &mut scores, View::rows(0, n), q, self.q_view(s, h), k, kv.t(), false, Threads::One);
        let mut probs = vec![0f32; n * n];
        for (i, (p, s)) in probs.chunks_mut(n).zip(scores.chunks(n)).enumerate() {
            // A causal row sees keys 0..=i; the rest keep probability 0.
            let seen = if self.causal { i + 1 } else { n };
            let bias = self.bias.as_ref().map(|b| b.row(h, i, seen));
            softmax_row(&mut p[..seen], &s[..seen], self.scale, bias);
        }
        let dropped = match self.factors(task) {
            Some(f) => {
                scores.iter_mut().zip(&probs).zip(f).for_each(|((s, p), f)| *s = p * f);
                &scores
            }
            None => &probs,
        };
        let mut out = vec![0f32; n * d];
        product((n, d, n), &mut out, View::rows(0, d), dropped, View::rows(0, n), v, kv, false, Threads::One);
        (if self.keep { probs } else { Vec::new() }, out)
    }

    /// Writes each (sequence, head)'s (len, dim) block into its rows and columns of a (tokens, heads * dim)
    /// tensor.
    fn scatter(&self, blocks: &[Vec<f32>], heads: usize, tokens: usize) -> Vec<f32> {
        let width = heads * self.dim;
        let mut out = vec![0f32; tokens * width];
        for (task, block) in blocks.iter().enumerate() {
            let (s, h) = (task / heads, task % heads);
            for (t, values) in block.chunks(self.dim).enumerate() {
                let start = (self.spans[s].start + t) * width + h * self.dim;
                out[start..start + self.dim].copy_from_slice(values);
            }
        }
        out
    }

    /// dq of every query head of key head kh in sequence s (task s * kv_heads + kh), and dk and dv of that head.
    fn backward_group(&self, task: usize, q: &[f32], k: &[f32], v: &[f32], g: &[f32]) -> [Vec<f32>; 3] {
        let (s, kh) = (task / self.kv_heads, task % self.kv_heads);
        let (n, d) = (self.spans[s].len, self.dim);
        let group = self.heads / self.kv_heads;
        let probs = self.probs.get().expect("attention's backward follows its forward");
        let kv = self.kv_view(s, kh);
        let (mut dq, mut dk, mut dv) = (vec![0f32; group * n * d], vec![0f32; n * d], vec![0f32; n * d]);
        if n == 0 {
            return [dq, dk, dv];
        }
        let (mut kept, mut dscores) = (vec![0f32; n * n], vec![0f32; n * n]);
        for j in 0..group {
            let h = kh * group + j;
            let head = s * self.heads + h;
            let p = &probs[head];
            let qv = self.q_view(s, h);
            let factors = self.factors(head);
            let dropped = match factors {
                Some(f) => {
                    kept.iter_mut().zip(p).zip(f).for_each(|((x, p), f)| *x = p * f);
                    &kept
                }
                None => p,
            };
            // dv += dropped probsᵀ g; d(dropped probs) = g vᵀ (g's head h has q's layout).
            let pt = View::rows(0, n).t();
            product((n, d, n), &mut dv, View::rows(0, d), dropped, pt, g, qv, j > 0, Threads::One);
            product((n, n, d), &mut dscores, View::rows(0, n), g, qv, v, kv.t(), false, Threads::One);
            // Back through dropout and softmax: ds = scale p (dp - sum(dp p)); 0 where p is (masked keys).
            for i in 0..n {
                let row = i * n..(i + 1) * n;
                let (ds, p) = (&mut dscores[row.clone()], &p[row.clone()]);
                if let Some(f) = factors {
                    ds.iter_mut().zip(&f[row]).for_each(|(ds, f)| *ds *= f);
                }
                let along: f32 = ds.iter().zip(p).map(|(ds, p)| ds * p).sum();
                ds.iter_mut().zip(p).for_each(|(ds, p)| *ds = self.scale * p * (*ds - along));
            }
            // dq = ds k; dk += dsᵀ q.
            let dq = &mut dq[j * n * d..(j + 1) * n * d];
            product((n, d, n), dq, View::rows(0, d), &dscores, View::rows(0, n), k, kv, false, Threads::One);
            let st = View::rows(0, n).t();
            product((n, d, n), &mut dk, View::rows(0, d), &dscores, st, q, qv, j > 0, Threads::One);
        }
        [dq, dk, dv]
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "pg_ai-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let (q, k, v) = (values(qs, ql)?, values(ks, kl)?, values(vs, vl)?);
        let results: Vec<(Vec<f32>, Vec<f32>)> =
            (0..self.spans.len() * self.heads).into_par_iter().map(|task| self.head(task, q, k, v)).collect();
        let (probs, outs): (Vec<_>, Vec<_>) = results.into_iter().unzip();
        if self.keep && self.probs.set(probs).is_err() {
            bail!("attention: an op computed twice");
        }
        let tokens = ql.dims()[0];
        Ok((CpuStorage::F32(self.scatter(&outs, self.heads, tokens)), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _: &Tensor,
        g: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let groups: Vec<[Vec<f32>; 3]> = with_values(q, |q| {
            with_values(k, |k| {
                with_values(v, |v| {
                    with_values(g, |g| {
                        Ok((0..self.spans.len() * self.kv_heads)
                            .into_par_iter()
                            .map(|task| self.backward_group(task, q, k, v, g))
                            .collect())
                    })
                })
            })
        })?;
        // Each group's dq holds its query heads one after the other: split them into per-head blocks.
        let dq_blocks: Vec<Vec<f32>> = groups
            .iter()
            .enumerate()
            .flat_map(|(task, [dq, _, _])| {
                let block = self.spans[task / self.kv_heads].len * self.dim;
                (0..self.heads / self.kv_heads).map(move |j| dq[j * block..(j + 1) * block].to_vec())
            })
            .collect();
        let dk_blocks: Vec<Vec<f32>> = groups.iter().map(|[_, dk, _]| dk.clone()).collect();
        let dv_blocks: Vec<Vec<f32>> = groups.into_iter().map(|[_, _, dv]| dv).collect();
        let tokens = q.dim(0)?;
        Ok((
            Some(new_tensor(self.scatter(&dq_blocks, self.heads, tokens), q.shape())?),
            Some(new_tensor(self.scatter(&dk_blocks, self.kv_heads, tokens), k.shape())?),
            Some(new_tensor(self.scatter(&dv_blocks, self.kv_heads, tokens), v.shape())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, random};
    use super::*;
    use candle_core::{Device, D};

    /// One sequence's attention composed from candle's ops, as the training models computed it before.
    fn composed(q: &Tensor, k: &Tensor, v: &Tensor, shape: &Heads, factors: Option<&Tensor>) -> Tensor {
        let (n, width) = q.dims2().unwrap();
        let d = width / shape.heads;
        let split = |x: &Tensor, heads: usize| {
            x.reshape((1, n, heads, d)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap()
        };
        let group = shape.heads / shape.kv_heads;
        let kv_of: Vec<u32> = (0..shape.heads).map(|h| (h / group) as u32).collect();
        let kv_of = Tensor::new(kv_of.as_slice(), &Device::Cpu).unwrap();
        let q = split(q, shape.heads);
        let k = split(k, shape.kv_heads).index_select(&kv_of, 1).unwrap().contiguous().unwrap();
        let v = split(v, shape.kv_heads).index_select(&kv_of, 1).unwrap().contiguous().unwrap();
        let mut scores = (q.matmul(&k.t().unwrap()).unwrap() * shape.scale).unwrap();
        if shape.causal {
            scores = scores.broadcast_add(&crate::train::nn::causal_mask(n).unwrap()).unwrap();
        }
        if let Some(b) = &shape.bias {
            let all = Tensor::from_vec(b.values.to_vec(), (b.heads, b.size, b.size), &Device::Cpu).unwrap();
            let own = all.narrow(1, 0, n).unwrap().narrow(2, 0, n).unwrap();
            scores = scores.broadcast_add(&own.unsqueeze(0).unwrap()).unwrap();
        }
        let mut probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        if let Some(f) = factors {
            probs = (probs * f).unwrap();
        }
        probs.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((n, width)).unwrap()
    }

    #[test]
    fn packed_attention_matches_each_sequence_composed_alone() {
        // Sequences of 5, 1, 0 and 3 tokens, in that order, with an unused token at the end; head dim 3.
        let spans = [
            Span { start: 0, len: 5 },
            Span { start: 5, len: 1 },
            Span { start: 6, len: 0 },
            Span { start: 6, len: 3 },
        ];
        for (heads, kv_heads) in [(2, 2), (4, 2), (3, 1)] {
            let inputs =
                [random(&[10, heads * 3], 32), random(&[10, kv_heads * 3], 33), random(&[10, kv_heads * 3], 34)];
            // No bias; one per head, as MPNet's; and one for every head, a window of one token each side.
            let per_head = random(&[heads * 6 * 6], 36).to_vec1::<f32>().unwrap();
            let window = (0..36).map(|i: usize| if (i / 6).abs_diff(i % 6) > 1 { f32::NEG_INFINITY } else { 0.0 });
            let biases = [
                None,
                Some(PairBias::new(per_head, heads, 6).unwrap()),
                Some(PairBias::new(window.collect(), 1, 6).unwrap()),
            ];
            let cases = [(false, false), (true, false), (false, true), (true, true)];
            for ((causal, dropout), bias) in cases.into_iter().flat_map(|c| biases.iter().map(move |b| (c, b))) {
                let shape = Heads { heads, kv_heads, scale: 0.7, causal, bias: bias.clone() };
                let factors: Vec<Option<Tensor>> = spans
                    .iter()
                    .map(|s| {
                        dropout.then(|| {
                            let keep = random(&[1, heads, s.len, s.len], 35 + s.start as u64).ge(0.0).unwrap();
                            (keep.to_dtype(candle_core::DType::F32).unwrap() * 2.0).unwrap()
                        })
                    })
                    .collect();
                let values = dropout.then(|| {
                    factors
                        .iter()
                        .flat_map(|f| f.as_ref().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
                        .collect()
                });
                check(
                    &inputs,
                    |t| attention(&t[0], &t[1], &t[2], &shape, &spans, values.clone()).unwrap(),
                    |t| {
                        // (An empty sequence adds no rows.)
                        let mut parts: Vec<Tensor> = spans
                            .iter()
                            .zip(&factors)
                            .filter(|(s, _)| s.len > 0)
                            .map(|(s, f)| {
                                let part = |x: &Tensor| x.narrow(0, s.start, s.len).unwrap();
                                composed(&part(&t[0]), &part(&t[1]), &part(&t[2]), &shape, f.as_ref())
                            })
                            .collect();
                        // The unused token's output is 0.
                        parts.push(t[0].narrow(0, 9, 1).unwrap().zeros_like().unwrap());
                        Tensor::cat(&parts, 0).unwrap()
                    },
                );
            }
        }
    }

    #[test]
    fn heads_that_do_not_fit_are_refused() {
        let q = random(&[2, 6], 1);
        let spans = [Span { start: 0, len: 2 }];
        let shape = Heads { heads: 4, kv_heads: 2, scale: 1.0, causal: false, bias: None };
        assert!(attention(&q, &q, &q, &shape, &spans, None).is_err());
        let shape = Heads { heads: 3, kv_heads: 2, scale: 1.0, causal: false, bias: None };
        assert!(attention(&q, &q, &q, &shape, &spans, None).is_err());
        let shape = Heads { heads: 2, kv_heads: 2, scale: 1.0, causal: false, bias: None };
        assert!(attention(&q, &q, &q, &shape, &[Span { start: 1, len: 2 }], None).is_err());
        assert!(attention(&q, &q, &q, &shape, &spans, Some(vec![1.0; 7])).is_err());
        // A bias shorter than a sequence, or of another number of heads.
        let bias = |heads, size| Some(PairBias::new(vec![0.0; heads * size * size], heads, size).unwrap());
        let shape = Heads { bias: bias(2, 1), ..shape };
        assert!(attention(&q, &q, &q, &shape, &spans, None).is_err());
        let shape = Heads { bias: bias(3, 2), ..shape };
        assert!(attention(&q, &q, &q, &shape, &spans, None).is_err());
        assert!(PairBias::new(vec![0.0; 7], 2, 2).is_err());
    }

    #[test]
    fn inference_on_plain_tensors_answers_as_composed() {
        // Plain tensors (no variables): the path that keeps no probabilities for a backward pass.
        let (q, k, v) = (random(&[4, 6], 1), random(&[4, 6], 2), random(&[4, 6], 3));
        let bias = PairBias::new(random(&[2 * 4 * 4], 4).to_vec1::<f32>().unwrap(), 2, 4).unwrap();
        let shape = Heads { heads: 2, kv_heads: 2, scale: 0.5, causal: false, bias: Some(bias) };
        let spans = [Span { start: 0, len: 3 }, Span { start: 3, len: 1 }];
        let fused = attention(&q, &k, &v, &shape, &spans, None).unwrap();
        let part = |x: &Tensor, s: &Span| x.narrow(0, s.start, s.len).unwrap();
        let expected: Vec<Tensor> =
            spans.iter().map(|s| composed(&part(&q, s), &part(&k, s), &part(&v, s), &shape, None)).collect();
        let gap = (fused - Tensor::cat(&expected, 0).unwrap()).unwrap().abs().unwrap().max_all().unwrap();
        assert!(gap.to_scalar::<f32>().unwrap() < 1e-5);
    }
}
