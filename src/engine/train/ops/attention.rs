//! Multi-head attention as one graph node: softmax(q kᵀ scale + mask), dropped out, times v, for every head at
//! once. Composed from candle's ops it takes a reshape, a transpose and a copy per input, two batched products
//! that candle runs one (row, head) pair after another, each split over the threads, a softmax, a dropout, and
//! a transpose and reshape back, all with their backward nodes. Here the heads run in parallel, each product on
//! one thread, reading every head's columns in place from the projections' (rows, tokens, heads * dim) outputs.

use super::gemm::{product, Threads, View};
use super::{check_mask, mask_offsets, new_tensor, softmax_row, values, with_values, CandleResult};
use crate::engine::error::{AiError, Result};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// What shapes the attention of one call.
#[derive(Debug, Clone)]
pub struct Heads {
    /// Query heads.
    pub heads: usize,
    /// Key and value heads: fewer than `heads` for grouped-query attention, query head h reading h / (heads /
    /// kv_heads).
    pub kv_heads: usize,
    /// Multiplies the scores before the mask is added: 1/sqrt(head dim), or 1 for T5.
    pub scale: f64,
}

/// Attention of `q` (rows, queries, heads * dim) over `k` and `v` (rows, keys, kv_heads * dim): (rows, queries,
/// heads * dim), each head's output in its columns. `mask` is additive and constant, broadcast to (rows, heads,
/// queries, keys); `dropout` holds a factor per attention probability, in that order.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    shape: &Heads,
    mask: Option<&Tensor>,
    dropout: Option<Vec<f32>>,
) -> Result<Tensor> {
    let (rows, queries, width) = q.dims3()?;
    let (kv_rows, keys, kv_width) = k.dims3()?;
    let (heads, kv_heads) = (shape.heads, shape.kv_heads);
    let fits = heads > 0
        && kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && width.is_multiple_of(heads)
        && kv_rows == rows
        && v.dims() == k.dims()
        && kv_width == width / heads * kv_heads;
    if !fits {
        return Err(AiError::internal(format!(
            "attention: {heads} query and {kv_heads} key heads do not fit q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    let scores = [rows, heads, queries, keys];
    if let Some(mask) = mask {
        check_mask(mask.dims(), &scores)?;
    }
    if dropout.as_ref().is_some_and(|d| d.len() != scores.iter().product::<usize>()) {
        return Err(AiError::internal("attention: one dropout factor per attention probability"));
    }
    let op = Attention {
        rows,
        queries,
        keys,
        heads,
        kv_heads,
        dim: width / heads,
        scale: shape.scale as f32,
        mask: mask.map(|m| Ok::<_, AiError>((m.contiguous()?, mask_offsets(m.dims(), &scores[..3])))).transpose()?,
        dropout: dropout.map(Arc::new),
        probs: OnceLock::new(),
    };
    Ok(q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)?)
}

struct Attention {
    rows: usize,
    queries: usize,
    keys: usize,
    heads: usize,
    kv_heads: usize,
    dim: usize,
    scale: f32,
    /// The mask and where each (row, head, query) row of scores starts in it.
    mask: Option<(Tensor, Vec<usize>)>,
    dropout: Option<Arc<Vec<f32>>>,
    /// The probabilities before dropout, per (row, head), that the forward pass computed for the backward.
    probs: OnceLock<Vec<Vec<f32>>>,
}

impl Attention {
    /// Head h of row r of q or of the output, (queries, dim).
    fn q_view(&self, r: usize, h: usize) -> View {
        let width = self.heads * self.dim;
        View::rows(r * self.queries * width + h * self.dim, width)
    }

    /// Key or value head h of row r, (keys, dim).
    fn kv_view(&self, r: usize, h: usize) -> View {
        let width = self.kv_heads * self.dim;
        View::rows(r * self.keys * width + h * self.dim, width)
    }

    fn kv_of(&self, h: usize) -> usize {
        h / (self.heads / self.kv_heads)
    }

    /// The dropout factors of (row, head), if any.
    fn factors(&self, task: usize) -> Option<&[f32]> {
        let size = self.queries * self.keys;
        self.dropout.as_ref().map(|d| &d[task * size..(task + 1) * size])
    }

    /// Probabilities and output of head h of row r, the task numbered r * heads + h.
    fn head(&self, task: usize, q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>) -> (Vec<f32>, Vec<f32>) {
        let (r, h) = (task / self.heads, task % self.heads);
        let (nq, nk, d) = (self.queries, self.keys, self.dim);
        let mut scores = vec![0f32; nq * nk];
        let kv = self.kv_view(r, self.kv_of(h));
        product((nq, nk, d), &mut scores, View::rows(0, nk), q, self.q_view(r, h), k, kv.t(), false, Threads::One);
        let mut probs = vec![0f32; nq * nk];
        for (i, (p, s)) in probs.chunks_mut(nk).zip(scores.chunks(nk)).enumerate() {
            let row = mask.zip(self.mask.as_ref()).map(|(m, (_, offsets))| {
                let start = offsets[task * nq + i];
                &m[start..start + nk]
            });
            softmax_row(p, s, self.scale, row);
        }
        let dropped = match self.factors(task) {
            Some(f) => {
                scores.iter_mut().zip(&probs).zip(f).for_each(|((s, p), f)| *s = p * f);
                &scores
            }
            None => &probs,
        };
        let mut out = vec![0f32; nq * d];
        product((nq, d, nk), &mut out, View::rows(0, d), dropped, View::rows(0, nk), v, kv, false, Threads::One);
        (probs, out)
    }

    /// Writes each head's (queries, dim) block into its columns of a (rows, queries, heads * dim) tensor.
    fn scatter(&self, blocks: &[Vec<f32>], heads: usize, tokens: usize) -> Vec<f32> {
        let width = heads * self.dim;
        let mut out = vec![0f32; self.rows * tokens * width];
        for (task, block) in blocks.iter().enumerate() {
            let (r, h) = (task / heads, task % heads);
            for (t, values) in block.chunks(self.dim).enumerate() {
                let start = (r * tokens + t) * width + h * self.dim;
                out[start..start + self.dim].copy_from_slice(values);
            }
        }
        out
    }

    /// dq of every query head of key head kh in row r, and dk and dv of that head.
    fn backward_group(&self, task: usize, q: &[f32], k: &[f32], v: &[f32], g: &[f32]) -> [Vec<f32>; 3] {
        let (r, kh) = (task / self.kv_heads, task % self.kv_heads);
        let (nq, nk, d) = (self.queries, self.keys, self.dim);
        let group = self.heads / self.kv_heads;
        let probs = self.probs.get().expect("attention's backward follows its forward");
        let kv = self.kv_view(r, kh);
        let (mut dq, mut dk, mut dv) = (vec![0f32; group * nq * d], vec![0f32; nk * d], vec![0f32; nk * d]);
        let (mut kept, mut dscores) = (vec![0f32; nq * nk], vec![0f32; nq * nk]);
        for j in 0..group {
            let h = kh * group + j;
            let head = r * self.heads + h;
            let p = &probs[head];
            let (qv, gv) = (self.q_view(r, h), self.q_view(r, h));
            let factors = self.factors(head);
            let dropped = match factors {
                Some(f) => {
                    kept.iter_mut().zip(p).zip(f).for_each(|((x, p), f)| *x = p * f);
                    &kept
                }
                None => p,
            };
            // dv += dropped probsᵀ g; d(dropped probs) = g vᵀ.
            let pt = View::rows(0, nk).t();
            product((nk, d, nq), &mut dv, View::rows(0, d), dropped, pt, g, gv, j > 0, Threads::One);
            product((nq, nk, d), &mut dscores, View::rows(0, nk), g, gv, v, kv.t(), false, Threads::One);
            // Back through dropout and softmax: ds = scale p (dp - sum(dp p)).
            for i in 0..nq {
                let row = i * nk..(i + 1) * nk;
                let (ds, p) = (&mut dscores[row.clone()], &p[row.clone()]);
                if let Some(f) = factors {
                    ds.iter_mut().zip(&f[row]).for_each(|(ds, f)| *ds *= f);
                }
                let along: f32 = ds.iter().zip(p).map(|(ds, p)| ds * p).sum();
                ds.iter_mut().zip(p).for_each(|(ds, p)| *ds = self.scale * p * (*ds - along));
            }
            // dq = ds k; dk += dsᵀ q.
            let dq = &mut dq[j * nq * d..(j + 1) * nq * d];
            product((nq, d, nk), dq, View::rows(0, d), &dscores, View::rows(0, nk), k, kv, false, Threads::One);
            let st = View::rows(0, nk).t();
            product((nk, d, nq), &mut dk, View::rows(0, d), &dscores, st, q, qv, j > 0, Threads::One);
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
        let run = |mask: Option<&[f32]>| -> Vec<(Vec<f32>, Vec<f32>)> {
            (0..self.rows * self.heads).into_par_iter().map(|task| self.head(task, q, k, v, mask)).collect()
        };
        let results = match &self.mask {
            Some((mask, _)) => with_values(mask, |m| Ok(run(Some(m))))?,
            None => run(None),
        };
        let (probs, outs): (Vec<_>, Vec<_>) = results.into_iter().unzip();
        if self.probs.set(probs).is_err() {
            bail!("attention: an op computed twice");
        }
        Ok((CpuStorage::F32(self.scatter(&outs, self.heads, self.queries)), ql.shape().clone()))
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
                        Ok((0..self.rows * self.kv_heads)
                            .into_par_iter()
                            .map(|task| self.backward_group(task, q, k, v, g))
                            .collect())
                    })
                })
            })
        })?;
        // Each group's dq holds its query heads one after the other: split them into per-head blocks.
        let block = self.queries * self.dim;
        let dq_blocks: Vec<Vec<f32>> =
            groups.iter().flat_map(|[dq, _, _]| dq.chunks(block).map(<[f32]>::to_vec)).collect();
        let dk_blocks: Vec<Vec<f32>> = groups.iter().map(|[_, dk, _]| dk.clone()).collect();
        let dv_blocks: Vec<Vec<f32>> = groups.into_iter().map(|[_, _, dv]| dv).collect();
        Ok((
            Some(new_tensor(self.scatter(&dq_blocks, self.heads, self.queries), q.shape())?),
            Some(new_tensor(self.scatter(&dk_blocks, self.kv_heads, self.keys), k.shape())?),
            Some(new_tensor(self.scatter(&dv_blocks, self.kv_heads, self.keys), v.shape())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, random};
    use super::*;
    use candle_core::D;

    /// The attention composed from candle's ops, as the training models computed it before.
    fn composed(t: &[Tensor], shape: &Heads, mask: Option<&Tensor>, factors: Option<&Tensor>) -> Tensor {
        let (b, nq, width) = t[0].dims3().unwrap();
        let nk = t[1].dim(1).unwrap();
        let d = width / shape.heads;
        let split = |x: &Tensor, n: usize, len: usize| {
            x.reshape((b, len, n, d)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap()
        };
        let group = shape.heads / shape.kv_heads;
        let kv_of: Vec<u32> = (0..shape.heads).map(|h| (h / group) as u32).collect();
        let kv_of = Tensor::new(kv_of.as_slice(), &candle_core::Device::Cpu).unwrap();
        let q = split(&t[0], shape.heads, nq).contiguous().unwrap();
        let k = split(&t[1], shape.kv_heads, nk).index_select(&kv_of, 1).unwrap().contiguous().unwrap();
        let v = split(&t[2], shape.kv_heads, nk).index_select(&kv_of, 1).unwrap().contiguous().unwrap();
        let mut scores = (q.matmul(&k.t().unwrap()).unwrap() * shape.scale).unwrap();
        if let Some(m) = mask {
            scores = scores.broadcast_add(m).unwrap();
        }
        let mut probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        if let Some(f) = factors {
            probs = (probs * f).unwrap();
        }
        probs.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((b, nq, width)).unwrap()
    }

    #[test]
    fn attention_matches_composed_ops() {
        // 2 rows, 5 queries, 4 keys, head dim 3.
        let masks = [None, Some(random(&[2, 1, 1, 4], 30)), Some(random(&[5, 4], 31))];
        for (heads, kv_heads) in [(2, 2), (4, 2), (3, 1)] {
            let shape = Heads { heads, kv_heads, scale: 0.7 };
            let inputs =
                [random(&[2, 5, heads * 3], 32), random(&[2, 4, kv_heads * 3], 33), random(&[2, 4, kv_heads * 3], 34)];
            for mask in &masks {
                for dropout in [false, true] {
                    let factors = dropout.then(|| {
                        let f =
                            random(&[2, heads, 5, 4], 35).ge(0.0).unwrap().to_dtype(candle_core::DType::F32).unwrap();
                        (f * 2.0).unwrap()
                    });
                    let values = factors.as_ref().map(|f| f.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                    check(
                        &inputs,
                        |t| attention(&t[0], &t[1], &t[2], &shape, mask.as_ref(), values.clone()).unwrap(),
                        |t| composed(t, &shape, mask.as_ref(), factors.as_ref()),
                    );
                }
            }
        }
    }

    #[test]
    fn heads_that_do_not_fit_are_refused() {
        let q = random(&[1, 2, 6], 1);
        let shape = Heads { heads: 4, kv_heads: 2, scale: 1.0 };
        assert!(attention(&q, &q, &q, &shape, None, None).is_err());
        let shape = Heads { heads: 3, kv_heads: 2, scale: 1.0 };
        assert!(attention(&q, &q, &q, &shape, None, None).is_err());
    }
}
