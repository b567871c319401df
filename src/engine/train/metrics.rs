//! Classification metrics as scikit-learn computes them.

/// Fraction of predictions equal to the gold labels.
pub fn accuracy(predicted: &[u32], gold: &[u32]) -> f64 {
    if gold.is_empty() {
        return 0.0;
    }
    predicted.iter().zip(gold).filter(|(p, g)| p == g).count() as f64 / gold.len() as f64
}

/// F1 averaged over the labels that occur in either list, as f1_score(average="macro"); a label
/// never predicted or never present scores 0.
pub fn macro_f1(predicted: &[u32], gold: &[u32]) -> f64 {
    let mut labels: Vec<u32> = predicted.iter().chain(gold).copied().collect();
    labels.sort();
    labels.dedup();
    if labels.is_empty() {
        return 0.0;
    }
    let f1 = |label: u32| {
        let tp = predicted.iter().zip(gold).filter(|(p, g)| **p == label && **g == label).count() as f64;
        let predicted_n = predicted.iter().filter(|p| **p == label).count() as f64;
        let gold_n = gold.iter().filter(|g| **g == label).count() as f64;
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (predicted_n + gold_n)
        }
    };
    labels.iter().map(|l| f1(*l)).sum::<f64>() / labels.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scikit_learn() {
        // sklearn.metrics.f1_score([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], average="macro") == 0.4333...
        let (gold, pred) = ([0, 0, 1, 1, 2], [0, 1, 1, 1, 0]);
        assert!((macro_f1(&pred, &gold) - 0.43333333333333335).abs() < 1e-12);
        assert!((accuracy(&pred, &gold) - 0.6).abs() < 1e-12);
    }
}
