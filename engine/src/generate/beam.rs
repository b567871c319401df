//! Beam search for one input, step for step as transformers' generate() does it (num_beams, length_penalty,
//! early_stopping), so that pg_ai returns the same tokens.

use crate::generate::seq2seq::EarlyStopping;

#[derive(Debug, Clone)]
struct Hypothesis {
    tokens: Vec<u32>,
    score: f32,
}

pub struct Beams {
    num_beams: usize,
    length_penalty: f32,
    early_stopping: EarlyStopping,
    /// The live beams, best first; the score is the sum of the tokens' log-probabilities.
    running: Vec<Hypothesis>,
    /// Finished hypotheses, best first, at most num_beams; the score is divided by length^length_penalty.
    finished: Vec<Hypothesis>,
    /// False once no running beam can beat the worst finished hypothesis.
    improvable: bool,
    done: bool,
}

impl Beams {
    pub fn new(num_beams: usize, length_penalty: f32, early_stopping: EarlyStopping) -> Self {
        // All beams start equal; only the first takes part in the first step.
        let running =
            (0..num_beams).map(|i| Hypothesis { tokens: Vec::new(), score: if i == 0 { 0.0 } else { -1e9 } }).collect();
        Beams {
            num_beams,
            length_penalty,
            early_stopping,
            running,
            finished: Vec::new(),
            improvable: true,
            done: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// What each running beam has generated so far.
    pub fn outputs(&self) -> impl Iterator<Item = &[u32]> + '_ {
        self.running.iter().map(|h| h.tokens.as_slice())
    }

    /// The last token of each running beam, to feed next.
    pub fn last_tokens(&self) -> impl Iterator<Item = u32> + '_ {
        self.running.iter().map(|h| *h.tokens.last().expect("called after a step"))
    }

    /// One step. `log_probs` holds num_beams rows of `vocab` log-probabilities (logits processors applied);
    /// `max_tokens` bounds the generated length. Returns, for each new running beam, the beam it continues
    /// (the caller reorders its cache by it), or None when the search is over.
    pub fn step(
        &mut self,
        log_probs: &[f32],
        vocab: usize,
        max_tokens: usize,
        is_end: impl Fn(u32) -> bool,
    ) -> Option<Vec<usize>> {
        let n = self.num_beams;
        let generated = self.running[0].tokens.len();
        // Candidates: the best 2 * num_beams continuations over all beams, so that num_beams of them go on
        // even if some end here.
        let keep = 2 * n;
        let mut order: Vec<usize> = (0..n * vocab).collect();
        let score = |i: usize| self.running[i / vocab].score + log_probs[i];
        let by_score = |a: &usize, b: &usize| score(*b).total_cmp(&score(*a)).then(a.cmp(b));
        if order.len() > keep {
            order.select_nth_unstable_by(keep - 1, by_score);
            order.truncate(keep);
        }
        order.sort_by(by_score);
        let last_step = generated + 1 >= max_tokens;
        let ends = |i: usize| last_step || is_end((i % vocab) as u32);

        // Finished hypotheses: only among the best num_beams candidates, and only while they can still matter.
        let full = self.finished.len() == n;
        if self.improvable && !(full && self.early_stopping == EarlyStopping::Yes) {
            let length = (generated + 1) as f32;
            for &i in order.iter().take(n).filter(|&&i| ends(i)) {
                let tokens = self.extended(i, vocab);
                let score = score(i) / length.powf(self.length_penalty);
                let at = self.finished.partition_point(|h| h.score >= score);
                self.finished.insert(at, Hypothesis { tokens, score });
                self.finished.truncate(n);
            }
        }

        // The next running beams: the best candidates that did not end.
        let next: Vec<usize> = order.iter().copied().filter(|&i| !ends(i)).take(n).collect();
        if next.len() < n {
            self.done = true;
            return None;
        }
        self.running = next.iter().map(|&i| Hypothesis { tokens: self.extended(i, vocab), score: score(i) }).collect();
        self.improvable = self.improvable && self.can_improve(generated + 1, max_tokens);
        let full = self.finished.len() == n;
        if !self.improvable || (full && self.early_stopping == EarlyStopping::Yes) {
            self.done = true;
            return None;
        }
        Some(next.iter().map(|&i| i / vocab).collect())
    }

    fn extended(&self, candidate: usize, vocab: usize) -> Vec<u32> {
        let mut tokens = self.running[candidate / vocab].tokens.clone();
        tokens.push((candidate % vocab) as u32);
        tokens
    }

    /// transformers' early-stop heuristic: can the best running beam still beat the worst finished one?
    fn can_improve(&self, generated: usize, max_tokens: usize) -> bool {
        if self.finished.len() < self.num_beams {
            return true;
        }
        let length = if self.early_stopping == EarlyStopping::Never && self.length_penalty > 0.0 {
            max_tokens
        } else {
            generated
        };
        let best_possible = self.running[0].score / (length as f32).powf(self.length_penalty);
        best_possible > self.finished.last().expect("full").score
    }

    /// The best finished hypothesis, its end token included.
    pub fn best(&self) -> Vec<u32> {
        self.finished.first().map(|h| h.tokens.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log-probabilities over a 3-token vocabulary (token 0 ends) for each of two beams.
    fn rows(beam0: [f32; 3], beam1: [f32; 3]) -> Vec<f32> {
        beam0.iter().chain(beam1.iter()).map(|p| p.ln()).collect()
    }

    #[test]
    fn beam_search_finds_the_better_sequence_greedy_misses() {
        // Greedy takes token 1 (0.6) then is forced into a poor ending; beam search keeps token 2 (0.4)
        // whose continuation ends with certainty.
        let mut beams = Beams::new(2, 1.0, EarlyStopping::Heuristic);
        let first = beams.step(&rows([0.0001, 0.6, 0.3999], [0.0001, 0.6, 0.3999]), 3, 10, |t| t == 0).unwrap();
        assert_eq!(first, vec![0, 0]);
        assert_eq!(beams.last_tokens().collect::<Vec<_>>(), vec![1, 2]);
        // Beam "1": every continuation is poor; beam "2": ends with certainty.
        let second = beams.step(&rows([0.2, 0.4, 0.4], [0.99, 0.005, 0.005]), 3, 10, |t| t == 0);
        assert_eq!(beams.finished[0].tokens, vec![2, 0]);
        if second.is_some() {
            let _ = beams.step(&rows([0.1, 0.45, 0.45], [0.1, 0.45, 0.45]), 3, 10, |t| t == 0);
        }
        assert_eq!(beams.best(), vec![2, 0]);
    }

    #[test]
    fn max_tokens_ends_every_beam() {
        let mut beams = Beams::new(2, 1.0, EarlyStopping::Heuristic);
        let log_probs = rows([0.01, 0.5, 0.49], [0.01, 0.5, 0.49]);
        assert!(beams.step(&log_probs, 3, 2, |t| t == 0).is_some());
        assert!(beams.step(&log_probs, 3, 2, |t| t == 0).is_none());
        assert!(beams.is_done());
        assert_eq!(beams.best().len(), 2);
    }
}
