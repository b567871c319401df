//! A right-padded batch's real tokens, one after another with no padding, as the encoders' layers read them on the
//! CPU: every projection, norm and feed-forward then works on real tokens only, and pg_ai's attention keeps each
//! row's tokens apart by their spans. Rows of different lengths in one batch otherwise spend much of each layer on
//! padding.

use crate::error::Result;
use crate::kernels::fused::Span;
use candle_core::{DType, Device, Tensor};

pub struct Packed {
    /// Each row's tokens in the packed tensor.
    spans: Vec<Span>,
    /// For each packed token, its place among the (batch * seq) padded ones.
    gather: Tensor,
    /// For each padded place, its packed token, or the zero row after them all for padding.
    scatter: Tensor,
    /// Each packed token's position in its row.
    positions: Vec<u32>,
    batch: usize,
    seq: usize,
}

impl Packed {
    /// The real tokens of `mask` (batch, seq), whose ones lead each row; None where there are none.
    pub fn of(mask: &Tensor) -> Result<Option<Self>> {
        let (batch, seq) = mask.dims2()?;
        let lengths = mask.to_dtype(DType::F32)?.sum(1)?.to_vec1::<f32>()?;
        let tokens: usize = lengths.iter().map(|&len| len as usize).sum();
        if tokens == 0 {
            return Ok(None);
        }
        let (mut spans, mut gather) = (Vec::with_capacity(batch), Vec::with_capacity(tokens));
        let mut positions = Vec::with_capacity(tokens);
        let mut scatter = vec![tokens as u32; batch * seq];
        for (row, &len) in lengths.iter().enumerate() {
            spans.push(Span { start: gather.len(), len: len as usize });
            for t in 0..len as usize {
                scatter[row * seq + t] = gather.len() as u32;
                gather.push((row * seq + t) as u32);
                positions.push(t as u32);
            }
        }
        let gather = Tensor::from_vec(gather, tokens, &Device::Cpu)?;
        let scatter = Tensor::from_vec(scatter, batch * seq, &Device::Cpu)?;
        Ok(Some(Packed { spans, gather, scatter, positions, batch, seq }))
    }

    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// Each packed token's position in its row: for rotary angles.
    pub fn positions(&self) -> &[u32] {
        &self.positions
    }

    /// (batch, seq, hidden) to (tokens, hidden).
    pub fn pack(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = x.dim(2)?;
        Ok(x.reshape((self.batch * self.seq, hidden))?.index_select(&self.gather, 0)?)
    }

    /// (tokens, hidden) back to (batch, seq, hidden), padding's states 0.
    pub fn unpack(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = x.dim(1)?;
        let with_zero = Tensor::cat(&[x, &Tensor::zeros((1, hidden), x.dtype(), x.device())?], 0)?;
        Ok(with_zero.index_select(&self.scatter, 0)?.reshape((self.batch, self.seq, hidden))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_the_real_tokens_and_puts_them_back() {
        // Rows of 2, 0 and 3 real tokens out of 3.
        let mask = Tensor::new(&[[1u32, 1, 0], [0, 0, 0], [1, 1, 1]], &Device::Cpu).unwrap();
        let rows = Packed::of(&mask).unwrap().unwrap();
        assert_eq!(rows.spans(), [Span { start: 0, len: 2 }, Span { start: 2, len: 0 }, Span { start: 2, len: 3 }]);
        assert_eq!(rows.positions(), [0, 1, 0, 1, 2]);
        let x = Tensor::arange(1f32, 19.0, &Device::Cpu).unwrap().reshape((3, 3, 2)).unwrap();
        let packed = rows.pack(&x).unwrap();
        let want = [[1f32, 2.], [3., 4.], [13., 14.], [15., 16.], [17., 18.]];
        assert_eq!(packed.to_vec2::<f32>().unwrap(), want);
        let back = rows.unpack(&packed).unwrap().to_vec3::<f32>().unwrap();
        let zero = [0f32, 0.];
        assert_eq!(back, [[[1., 2.], [3., 4.], zero], [zero, zero, zero], [[13., 14.], [15., 16.], [17., 18.]]]);
        let none = Tensor::zeros((2, 4), DType::U32, &Device::Cpu).unwrap();
        assert!(Packed::of(&none).unwrap().is_none());
    }
}
