//! Classification metrics as scikit-learn computes them, and entity F1 as seqeval does.

use std::collections::HashSet;

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

/// Entities of one row as seqeval's strict IOB2 mode finds them: a B-X and the I-X right after it,
/// as (type, start, end); an I-X that does not continue an X starts nothing.
fn entities<'a>(tags: &[u32], labels: &'a [String]) -> Vec<(&'a str, usize, usize)> {
    let mut found = Vec::new();
    let mut open: Option<(&str, usize)> = None;
    for (i, &tag) in tags.iter().enumerate() {
        let label = labels[tag as usize].as_str();
        if label.strip_prefix("I-").is_some_and(|kind| open.is_some_and(|(o, _)| o == kind)) {
            continue;
        }
        if let Some((kind, start)) = open.take() {
            found.push((kind, start, i));
        }
        open = label.strip_prefix("B-").map(|kind| (kind, i));
    }
    found.extend(open.map(|(kind, start)| (kind, start, tags.len())));
    found
}

/// Entity-level micro F1 over rows of tag ids, as seqeval's f1_score(mode="strict", scheme=IOB2):
/// an entity counts only where type and both ends match. None unless every label is "O", "B-.."
/// or "I-..", since other tag sets have no entities to find.
pub fn entity_f1(predicted: &[&[u32]], gold: &[&[u32]], labels: &[String]) -> Option<f64> {
    if !labels.iter().all(|l| l == "O" || l.starts_with("B-") || l.starts_with("I-")) {
        return None;
    }
    let all = |rows: &[&[u32]]| -> HashSet<(usize, &str, usize, usize)> {
        rows.iter()
            .enumerate()
            .flat_map(|(r, tags)| entities(tags, labels).into_iter().map(move |(k, s, e)| (r, k, s, e)))
            .collect()
    };
    let (p, g) = (all(predicted), all(gold));
    let found = p.intersection(&g).count() as f64;
    // 2PR / (P + R) with P = found / |p| and R = found / |g|; 0 when nothing is found.
    Some(if found == 0.0 { 0.0 } else { 2.0 * found / (p.len() + g.len()) as f64 })
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

    fn f1(predicted: &[&[&str]], gold: &[&[&str]]) -> Option<f64> {
        let labels: Vec<String> = ["B-LOC", "B-PER", "I-PER", "O"].map(String::from).to_vec();
        let ids = |rows: &[&[&str]]| -> Vec<Vec<u32>> {
            rows.iter()
                .map(|r| r.iter().map(|t| labels.iter().position(|l| l == t).unwrap() as u32).collect())
                .collect()
        };
        let (p, g) = (ids(predicted), ids(gold));
        let (p, g): (Vec<&[u32]>, Vec<&[u32]>) =
            (p.iter().map(Vec::as_slice).collect(), g.iter().map(Vec::as_slice).collect());
        entity_f1(&p, &g, &labels)
    }

    #[test]
    fn entity_f1_as_seqeval_strict() {
        // Gold: PER 0..2 and LOC 3..4; predicted: the PER only. P = 1, R = 1/2, F1 = 2/3.
        let v = f1(&[&["B-PER", "I-PER", "O", "O"]], &[&["B-PER", "I-PER", "O", "B-LOC"]]).unwrap();
        assert!((v - 2.0 / 3.0).abs() < 1e-12, "{v}");
        // A PER cut short (0..1 for 0..2) is wrong; the LOC in row 2 is right: P = R = 1/2.
        let v = f1(&[&["B-PER", "O", "O"], &["B-LOC", "O"]], &[&["B-PER", "I-PER", "O"], &["B-LOC", "O"]]).unwrap();
        assert!((v - 0.5).abs() < 1e-12, "{v}");
        // Strict: an I- without its B- is no entity; the wrong type and the wrong row do not count.
        assert_eq!(f1(&[&["O", "I-PER"]], &[&["O", "B-PER"]]), Some(0.0));
        assert_eq!(f1(&[&["B-LOC"]], &[&["B-PER"]]), Some(0.0));
        assert_eq!(f1(&[&["B-LOC", "O"], &["O", "O"]], &[&["O", "O"], &["B-LOC", "O"]]), Some(0.0));
        // Two adjacent B-PER are two entities; an I-PER after B-LOC ends the LOC. All 3 found: F1 = 1.
        let row: &[&str] = &["B-PER", "B-PER", "B-LOC", "I-PER"];
        assert_eq!(f1(&[row], &[row]), Some(1.0));
        let labels: Vec<String> = ["B-LOC", "B-PER", "I-PER", "O"].map(String::from).to_vec();
        assert_eq!(entities(&[1, 1, 0, 2], &labels), vec![("PER", 0, 1), ("PER", 1, 2), ("LOC", 2, 3)]);
        // 3 predicted, 2 gold, 1 right: P = 1/3, R = 1/2, F1 = 2PR / (P + R) = (1/3) / (5/6) = 2/5.
        let v = f1(&[&["B-PER", "B-LOC", "B-PER"]], &[&["B-PER", "O", "B-LOC"]]).unwrap();
        assert!((v - 0.4).abs() < 1e-12, "{v}");
        assert_eq!(entity_f1(&[&[0]], &[&[1]], &["food".to_string(), "O".to_string()]), None);
    }
}
