//! A training batch: padded token ids and what the model must predict.

use crate::error::{AiError, Result};
use crate::kernels::fused::Span;
use candle_core::{DType, Device, Tensor};

#[derive(Debug, Clone)]
pub enum Targets {
    /// Flat positions (row * len + column) whose output must predict `ids`: masked tokens for a
    /// masked LM, every next token for a causal LM. Padding is simply never listed (candle's
    /// cross_entropy has no ignore_index).
    Tokens { positions: Vec<u32>, ids: Vec<u32> },
    /// One class id per row.
    Labels(Vec<u32>),
}

/// The decoder side of a sequence-to-sequence batch: each row's target shifted right after the start token,
/// padded on the right.
#[derive(Debug, Clone)]
pub struct DecoderInput {
    /// (rows, len) row-major.
    pub ids: Vec<u32>,
    pub len: usize,
}

/// A batch's real tokens packed row after row, without padding, for the models that skip it (BERT, GPT-2):
/// padded to its longest row, a batch of Debian's fortunes was more than half padding.
#[derive(Debug, Clone)]
pub struct Packed {
    pub ids: Vec<u32>,
    /// Each token's position in its row.
    pub positions: Vec<u32>,
    /// Each row's tokens.
    pub spans: Vec<Span>,
    /// Where the token targets lie among the packed tokens (Targets::Tokens' positions, renumbered).
    pub targets: Vec<u32>,
}

impl Packed {
    /// Each packed token's word embedding alone, for models without absolute positions: (tokens, dim).
    pub fn words(&self, words: &Tensor) -> Result<Tensor> {
        Ok(words.index_select(&Tensor::from_vec(self.ids.clone(), self.ids.len(), &Device::Cpu)?, 0)?)
    }

    /// Each packed token's word embedding plus its position's (positions counted from `offset`): (tokens, dim).
    pub fn embeddings(&self, words: &Tensor, positions: &Tensor, offset: u32) -> Result<Tensor> {
        let n = self.ids.len();
        let ids = Tensor::from_vec(self.ids.clone(), n, &Device::Cpu)?;
        let at: Vec<u32> = self.positions.iter().map(|p| p + offset).collect();
        let at = Tensor::from_vec(at, n, &Device::Cpu)?;
        Ok((words.index_select(&ids, 0)? + positions.index_select(&at, 0)?)?)
    }
}

/// The given rows of `states` (rows, dim): (rows.len(), dim).
pub fn rows_of(states: &Tensor, rows: &[u32]) -> Result<Tensor> {
    Ok(states.index_select(&Tensor::from_vec(rows.to_vec(), rows.len(), &Device::Cpu)?, 0)?)
}

#[derive(Debug, Clone)]
pub struct Batch {
    /// (rows, len) row-major, padded on the right.
    pub ids: Vec<u32>,
    /// 1 over real tokens, 0 over padding.
    pub attention: Vec<u32>,
    pub rows: usize,
    pub len: usize,
    /// Token targets index the decoder's positions when there is one.
    pub targets: Targets,
    /// Sequence-to-sequence batches only.
    pub decoder: Option<DecoderInput>,
}

impl Batch {
    /// Pads `seqs` on the right with `pad`.
    pub fn padded(seqs: &[&[u32]], pad: u32, targets: Targets) -> Batch {
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let rows = seqs.len();
        let (mut ids, mut attention) = (vec![pad; rows * len], vec![0u32; rows * len]);
        for (r, s) in seqs.iter().enumerate() {
            ids[r * len..r * len + s.len()].copy_from_slice(s);
            attention[r * len..r * len + s.len()].fill(1);
        }
        Batch { ids, attention, rows, len, targets, decoder: None }
    }

    /// Sources padded with `pad` for the encoder; each target, shifted right after `start`, for the decoder,
    /// which must predict every token of it (</s> included).
    pub fn seq2seq(sources: &[&[u32]], targets: &[&[u32]], pad: u32, start: u32) -> Batch {
        let len = targets.iter().map(|t| t.len()).max().unwrap_or(0);
        let (mut ids, mut positions, mut wanted) = (vec![pad; targets.len() * len], Vec::new(), Vec::new());
        for (r, t) in targets.iter().enumerate() {
            for (i, &token) in t.iter().enumerate() {
                ids[r * len + i] = if i == 0 { start } else { t[i - 1] };
                positions.push((r * len + i) as u32);
                wanted.push(token);
            }
        }
        let mut batch = Batch::padded(sources, pad, Targets::Tokens { positions, ids: wanted });
        batch.decoder = Some(DecoderInput { ids, len });
        batch
    }

    /// Every next token of each sequence, for a causal LM: position t predicts token t + 1.
    pub fn next_token_targets(seqs: &[&[u32]], len: usize) -> Targets {
        let (mut positions, mut ids) = (Vec::new(), Vec::new());
        for (r, s) in seqs.iter().enumerate() {
            for t in 0..s.len().saturating_sub(1) {
                positions.push((r * len + t) as u32);
                ids.push(s[t + 1]);
            }
        }
        Targets::Tokens { positions, ids }
    }

    /// From transformers' tensors: `labels` uses -100 for "no target"; `shift` as causal LMs do
    /// (the label at t + 1 is predicted at t).
    pub fn from_hf(input_ids: &[Vec<u32>], attention_mask: &[Vec<u32>], labels: &[Vec<i64>], shift: bool) -> Batch {
        let (rows, len) = (input_ids.len(), input_ids.first().map_or(0, Vec::len));
        let (mut positions, mut ids) = (Vec::new(), Vec::new());
        for (r, row) in labels.iter().enumerate() {
            for t in 0..len {
                let source = if shift { t + 1 } else { t };
                if let Some(&l) = row.get(source).filter(|l| **l >= 0) {
                    positions.push((r * len + t) as u32);
                    ids.push(l as u32);
                }
            }
        }
        Batch {
            ids: input_ids.concat(),
            attention: attention_mask.concat(),
            rows,
            len,
            targets: Targets::Tokens { positions, ids },
            decoder: None,
        }
    }

    /// A sequence-to-sequence batch from transformers' tensors: `labels` (-100 for "no target") index the
    /// decoder's positions, whose inputs are `decoder_input_ids`.
    pub fn seq2seq_from_hf(
        input_ids: &[Vec<u32>],
        attention_mask: &[Vec<u32>],
        decoder_input_ids: &[Vec<u32>],
        labels: &[Vec<i64>],
    ) -> Batch {
        let mut batch = Batch::from_hf(decoder_input_ids, &[], labels, false);
        let decoder = DecoderInput { ids: batch.ids, len: batch.len };
        batch.ids = input_ids.concat();
        batch.attention = attention_mask.concat();
        batch.len = input_ids.first().map_or(0, Vec::len);
        batch.decoder = Some(decoder);
        batch
    }

    /// The real tokens packed; each row's must come first (padding on the right).
    pub fn packed(&self) -> Result<Packed> {
        let mut packed = Packed { ids: Vec::new(), positions: Vec::new(), spans: Vec::new(), targets: Vec::new() };
        for r in 0..self.rows {
            let row = r * self.len..(r + 1) * self.len;
            let attention = &self.attention[row.clone()];
            let len = attention.iter().take_while(|a| **a != 0).count();
            if attention[len..].iter().any(|a| *a != 0) {
                return Err(AiError::internal("a training batch must have its padding on the right"));
            }
            packed.spans.push(Span { start: packed.ids.len(), len });
            packed.ids.extend_from_slice(&self.ids[row.start..row.start + len]);
            packed.positions.extend(0..len as u32);
        }
        if let Targets::Tokens { positions, .. } = &self.targets {
            for &p in positions {
                let (r, t) = (p as usize / self.len.max(1), p as usize % self.len.max(1));
                match packed.spans.get(r) {
                    Some(span) if t < span.len => packed.targets.push((span.start + t) as u32),
                    _ => return Err(AiError::internal("a token target lies on padding")),
                }
            }
        }
        Ok(packed)
    }

    pub fn ids_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.ids.clone(), (self.rows, self.len), &Device::Cpu)?)
    }

    /// The additive attention mask of the (encoder) tokens, (rows, 1, 1, len): 0 where attended, a large negative
    /// number over padding, as transformers adds its dtype's minimum.
    pub fn padding_bias(&self) -> Result<Tensor> {
        let attended = Tensor::from_vec(self.attention.clone(), (self.rows, 1, 1, self.len), &Device::Cpu)?;
        Ok(((attended.to_dtype(DType::F32)? - 1.0)? * 1e30)?)
    }

    /// Real (non-padding) tokens in the batch, the decoder's targets included.
    pub fn tokens(&self) -> usize {
        let decoded = if self.decoder.is_some() { self.target_count() } else { 0 };
        self.attention.iter().filter(|a| **a != 0).count() + decoded
    }

    /// The ids the loss compares the logits with.
    pub fn target_ids(&self) -> &[u32] {
        match &self.targets {
            Targets::Tokens { ids, .. } => ids,
            Targets::Labels(labels) => labels,
        }
    }

    /// The states of `hidden` (rows, len, dim) at the token targets' positions, (targets, dim): only those go
    /// through a vocabulary projection.
    pub fn at_targets(&self, hidden: &Tensor) -> Result<Tensor> {
        let Targets::Tokens { positions, .. } = &self.targets else {
            return Err(AiError::internal("a language model predicts tokens, not labels"));
        };
        let (rows, len, dim) = hidden.dims3()?;
        rows_of(&hidden.reshape((rows * len, dim))?, positions)
    }

    pub fn target_count(&self) -> usize {
        match &self.targets {
            Targets::Tokens { ids, .. } => ids.len(),
            Targets::Labels(labels) => labels.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_drops_the_padding_and_renumbers_the_targets() {
        let (a, b): (&[u32], &[u32]) = (&[5, 6, 7], &[8]);
        // Row 0 predicts at its columns 0 and 1, row 1 at its column 0: padded positions 0, 1 and 3.
        let targets = Batch::next_token_targets(&[a, &[8, 9]], 3);
        let mut batch = Batch::padded(&[a, b], 0, targets);
        let Targets::Tokens { positions, .. } = &batch.targets else { unreachable!() };
        assert_eq!(positions, &[0, 1, 3]);
        let packed = batch.packed().unwrap();
        assert_eq!((packed.ids, packed.positions), (vec![5, 6, 7, 8], vec![0, 1, 2, 0]));
        assert_eq!(packed.spans, [Span { start: 0, len: 3 }, Span { start: 3, len: 1 }]);
        assert_eq!(packed.targets, [0, 1, 3]);
        // A target on padding, and padding before a token, are refused.
        batch.targets = Targets::Tokens { positions: vec![4], ids: vec![1] };
        assert!(batch.packed().is_err());
        batch.attention = vec![1, 0, 1, 1, 0, 0];
        assert!(batch.packed().is_err());
    }
}
