//! Masked-LM inputs as transformers' DataCollatorForLanguageModeling makes them: each non-special
//! token is chosen with probability p; of the chosen, 80% become [MASK], 10% a random token, 10% stay.
//! The loss is taken on the chosen positions only.

use crate::train::batch::{Batch, Targets};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub struct Masker<'a> {
    pub mask_id: u32,
    pub pad_id: u32,
    pub vocab_size: usize,
    pub special_ids: &'a [u32],
    pub probability: f64,
}

impl Masker<'_> {
    pub fn batch(&self, seqs: &[&[u32]], rng: &mut ChaCha8Rng) -> Batch {
        let mut batch = Batch::padded(seqs, self.pad_id, Targets::Labels(Vec::new()));
        let len = batch.len;
        let candidates: Vec<usize> = seqs
            .iter()
            .enumerate()
            .flat_map(|(r, s)| {
                s.iter().enumerate().filter(|(_, id)| !self.special_ids.contains(id)).map(move |(t, _)| r * len + t)
            })
            .collect();
        let mut chosen: Vec<usize> =
            candidates.iter().copied().filter(|_| rng.random::<f64>() < self.probability).collect();
        // A batch with nothing to predict would have no loss: take one position.
        if chosen.is_empty() && !candidates.is_empty() {
            chosen.push(candidates[rng.random_range(0..candidates.len())]);
        }
        let targets: Vec<u32> = chosen.iter().map(|&p| batch.ids[p]).collect();
        for &p in &chosen {
            let roll = rng.random::<f64>();
            if roll < 0.8 {
                batch.ids[p] = self.mask_id;
            } else if roll < 0.9 {
                batch.ids[p] = self.random_token(rng);
            }
        }
        batch.targets = Targets::Tokens { positions: chosen.iter().map(|&p| p as u32).collect(), ids: targets };
        batch
    }

    fn random_token(&self, rng: &mut ChaCha8Rng) -> u32 {
        loop {
            let id = rng.random_range(0..self.vocab_size as u32);
            if !self.special_ids.contains(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn masks_only_ordinary_tokens_in_the_right_proportions() {
        let seqs: Vec<Vec<u32>> =
            (0..200).map(|i| (0..50).map(|t| if t == 0 { 2 } else { 5 + (i * t) % 90 }).collect()).collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let m = Masker { mask_id: 4, pad_id: 0, vocab_size: 100, special_ids: &[0, 1, 2, 3, 4], probability: 0.15 };
        let batch = m.batch(&refs, &mut ChaCha8Rng::seed_from_u64(1));
        let Targets::Tokens { positions, ids } = &batch.targets else { panic!() };
        let n = positions.len() as f64;
        assert!((n / (200.0 * 49.0) - 0.15).abs() < 0.01, "{n}");
        let masked = positions.iter().filter(|p| batch.ids[**p as usize] == 4).count() as f64;
        assert!((masked / n - 0.8).abs() < 0.03);
        let kept = positions.iter().zip(ids).filter(|(p, id)| batch.ids[**p as usize] == **id).count() as f64;
        assert!(kept / n > 0.08 && kept / n < 0.13);
        assert!(positions.iter().all(|p| !(*p as usize).is_multiple_of(50)), "a special token was chosen");
    }
}
