//! A linear layer as one graph node: x W (+ b) over x's last dimension, the weight read in place whichever way
//! it is stored. Composed from candle's ops it is a reshape, a transpose, a product, a broadcast add and a
//! reshape back, five nodes whose backward each allocates, zeroes and adds a gradient.

use super::gemm::{product, Threads, View};
use super::{new_tensor, row_sum, values, with_values, CandleResult};
use crate::error::{AiError, Result};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

/// How a weight is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// (out, in), as torch.nn.Linear keeps it.
    OutIn,
    /// (in, out), as GPT-2's Conv1D keeps it.
    InOut,
}

/// `x` (.., in) times the weight, plus the bias (out) if any: (.., out).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stored: Stored) -> Result<Tensor> {
    let (d0, d1) = w.dims2()?;
    let (inputs, outputs) = if stored == Stored::OutIn { (d1, d0) } else { (d0, d1) };
    if inputs == 0 || outputs == 0 || x.dims().last() != Some(&inputs) || b.is_some_and(|b| b.dims() != [outputs]) {
        return Err(AiError::internal(format!(
            "linear: inputs of shape {:?} and a bias of shape {:?} do not fit a weight of shape {:?}",
            x.dims(),
            b.map(Tensor::dims),
            w.dims()
        )));
    }
    let op = Linear { stored, inputs, outputs };
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    Ok(match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op)?,
        None => x.apply_op2(&w, op)?,
    })
}

struct Linear {
    stored: Stored,
    inputs: usize,
    outputs: usize,
}

impl Linear {
    /// The weight as an (in x out) matrix.
    fn w(&self) -> View {
        match self.stored {
            Stored::OutIn => View::rows(0, self.inputs).t(),
            Stored::InOut => View::rows(0, self.outputs),
        }
    }

    fn forward(&self, x: &[f32], xl: &Layout, w: &[f32], b: Option<&[f32]>) -> CandleResult<(CpuStorage, Shape)> {
        let rows = x.len() / self.inputs;
        let mut y = match b {
            Some(b) => b.repeat(rows),
            None => vec![0f32; rows * self.outputs],
        };
        let dims = (rows, self.outputs, self.inputs);
        let (xv, yv) = (View::rows(0, self.inputs), View::rows(0, self.outputs));
        product(dims, &mut y, yv, x, xv, w, self.w(), b.is_some(), Threads::All);
        let mut shape = xl.dims().to_vec();
        *shape.last_mut().expect("x has dimensions") = self.outputs;
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    /// dx = g Wᵀ, dW = xᵀ g (stored the weight's way), db = the sum of g's rows.
    fn backward(&self, x: &Tensor, w: &Tensor, g: &Tensor, bias: bool) -> CandleResult<[Option<Tensor>; 3]> {
        let rows = x.elem_count() / self.inputs;
        let (inputs, outputs) = (self.inputs, self.outputs);
        let (dx, dw, db) = with_values(x, |x| {
            with_values(w, |w| {
                with_values(g, |g| {
                    let gv = View::rows(0, outputs);
                    let mut dx = vec![0f32; rows * inputs];
                    product(
                        (rows, inputs, outputs),
                        &mut dx,
                        View::rows(0, inputs),
                        g,
                        gv,
                        w,
                        self.w().t(),
                        false,
                        Threads::All,
                    );
                    let mut dw = vec![0f32; inputs * outputs];
                    let xt = View::rows(0, inputs).t();
                    match self.stored {
                        Stored::InOut => product(
                            (inputs, outputs, rows),
                            &mut dw,
                            View::rows(0, outputs),
                            x,
                            xt,
                            g,
                            gv,
                            false,
                            Threads::All,
                        ),
                        Stored::OutIn => {
                            let (dv, xv) = (View::rows(0, inputs), View::rows(0, inputs));
                            product((outputs, inputs, rows), &mut dw, dv, g, gv.t(), x, xv, false, Threads::All)
                        }
                    }
                    Ok((dx, dw, bias.then(|| row_sum(g, outputs))))
                })
            })
        })?;
        Ok([
            Some(new_tensor(dx, x.shape())?),
            Some(new_tensor(dw, w.shape())?),
            db.map(|db| new_tensor(db, &Shape::from(outputs))).transpose()?,
        ])
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "pg_ai-linear"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> CandleResult<(CpuStorage, Shape)> {
        self.forward(values(xs, xl)?, xl, values(ws, wl)?, None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, g: &Tensor) -> CandleResult<(Option<Tensor>, Option<Tensor>)> {
        let [dx, dw, _] = self.backward(x, w, g, false)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "pg_ai-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let b = values(bs, bl)?;
        if b.len() != self.outputs {
            bail!("linear: the bias must have {} values", self.outputs);
        }
        self.forward(values(xs, xl)?, xl, values(ws, wl)?, Some(b))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _: &Tensor,
        _: &Tensor,
        g: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [dx, dw, db] = self.backward(x, w, g, true)?;
        Ok((dx, dw, db))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, random};
    use super::*;

    #[test]
    fn linear_matches_candle_either_way_stored() {
        let x = random(&[3, 11, 6], 20);
        for (stored, w) in [(Stored::OutIn, random(&[5, 6], 21)), (Stored::InOut, random(&[6, 5], 22))] {
            let plain = |x: &Tensor, w: &Tensor| {
                let w = if stored == Stored::OutIn { w.t().unwrap() } else { w.clone() };
                x.broadcast_matmul(&w).unwrap()
            };
            check(
                &[x.clone(), w.clone(), random(&[5], 23)],
                |t| linear(&t[0], &t[1], Some(&t[2]), stored).unwrap(),
                |t| plain(&t[0], &t[1]).broadcast_add(&t[2]).unwrap(),
            );
            check(&[x.clone(), w], |t| linear(&t[0], &t[1], None, stored).unwrap(), |t| plain(&t[0], &t[1]));
        }
        // Shapes that do not fit, and empty rows, are errors rather than panics.
        assert!(linear(&x, &random(&[5, 7], 24), None, Stored::OutIn).is_err());
        assert!(linear(&random(&[2, 0], 25), &random(&[3, 0], 26), None, Stored::OutIn).is_err());
    }
}
