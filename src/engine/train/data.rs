//! Rows from a DataSource: texts for tokenizer training, then token ids and label ids, split into
//! training and held-out rows by a hash of each row's position, so the split needs no shuffle state.

use super::options::TrainOptions;
use super::tokenizer::TrainTokenizer;
use super::DataSource;
use crate::engine::error::{AiError, Result};
use std::collections::BTreeSet;

pub struct Row {
    pub ids: Vec<u32>,
    pub label: Option<u32>,
}

pub struct Prepared {
    pub train: Vec<Row>,
    pub eval: Vec<Row>,
    /// Labels in id order (classification only).
    pub labels: Vec<String>,
    /// Rows seen, usable or not.
    pub rows: usize,
    /// Rows left out because their text was empty.
    pub skipped: usize,
}

impl Prepared {
    pub fn examples(&self) -> usize {
        self.train.len() + self.eval.len()
    }
}

fn no_rows() -> AiError {
    AiError::invalid("the training data has no rows").with_hint("Check the query that supplies the training rows.")
}

fn all_empty(rows: usize) -> AiError {
    AiError::invalid(format!("all {rows} training texts are empty or NULL"))
        .with_hint("Rows whose text is NULL or blank are skipped; at least one must have text.")
}

/// Every non-blank text, for training a tokenizer.
pub fn collect_texts(data: &mut dyn DataSource) -> Result<Vec<String>> {
    let (mut texts, mut rows) = (Vec::new(), 0usize);
    data.pass(&mut |chunk| {
        rows += chunk.len();
        texts.extend(chunk.into_iter().map(|e| e.text).filter(|t| !t.trim().is_empty()));
        Ok(())
    })?;
    match (rows, texts.len()) {
        (0, _) => Err(no_rows()),
        (n, 0) => Err(all_empty(n)),
        _ => Ok(texts),
    }
}

/// splitmix64: a well-mixed hash of the row position, so that held-out rows are spread evenly.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether row `position` is held out: a fraction `test_size` of rows, the same for the same seed.
pub fn held_out(position: usize, seed: u64, test_size: f64) -> bool {
    test_size > 0.0 && (mix(mix(seed) ^ position as u64) >> 11) as f64 / (1u64 << 53) as f64 <= test_size
}

/// Tokenizes every row; with `labelled`, every usable row must carry a label (sorted to ids).
pub fn prepare(
    data: &mut dyn DataSource,
    tokenizer: &mut TrainTokenizer,
    labelled: bool,
    max_length: usize,
    options: &TrainOptions,
) -> Result<Prepared> {
    let mut rows: Vec<(usize, Vec<u32>, Option<String>)> = Vec::new();
    let (mut position, mut skipped) = (0usize, 0usize);
    data.pass(&mut |chunk| {
        for example in chunk {
            let at = position;
            position += 1;
            if example.text.trim().is_empty() {
                skipped += 1;
                continue;
            }
            let ids = tokenizer.encode(&example.text, max_length)?;
            if tokenizer.is_empty_encoding(&ids) {
                skipped += 1;
                continue;
            }
            let label = example.label.filter(|l| !l.is_empty());
            if labelled && label.is_none() {
                return Err(AiError::invalid(format!("training row {} has text but no label", at + 1))
                    .with_hint("Text classification needs a label for every row; filter out rows with NULL labels."));
            }
            rows.push((at, ids, label));
        }
        Ok(())
    })?;
    if position == 0 {
        return Err(no_rows());
    }
    if rows.is_empty() {
        return Err(all_empty(position));
    }
    let labels: Vec<String> = if labelled {
        let set: BTreeSet<&String> = rows.iter().filter_map(|r| r.2.as_ref()).collect();
        set.into_iter().cloned().collect()
    } else {
        Vec::new()
    };
    if labelled && labels.len() < 2 {
        return Err(AiError::invalid(format!("every row has the same label \"{}\"", labels[0]))
            .with_hint("A classifier needs at least two different labels."));
    }
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (at, ids, label) in rows {
        let label = label.map(|l| labels.binary_search(&l).expect("label collected above") as u32);
        let row = Row { ids, label: if labelled { label } else { None } };
        if held_out(at, options.seed, options.test_size) {
            eval.push(row);
        } else {
            train.push(row);
        }
    }
    if train.is_empty() {
        return Err(AiError::invalid(format!("test_size {} leaves no rows to train on", options.test_size))
            .with_hint("Lower test_size or supply more rows."));
    }
    Ok(Prepared { train, eval, labels, rows: position, skipped })
}

#[cfg(test)]
mod tests {
    use super::held_out;

    #[test]
    fn held_out_fraction_is_about_test_size() {
        let n = (0..10_000).filter(|i| held_out(*i, 42, 0.1)).count();
        assert!((900..1100).contains(&n), "{n}");
        assert_eq!((0..100).filter(|i| held_out(*i, 42, 0.0)).count(), 0);
        let other: Vec<bool> = (0..50).map(|i| held_out(i, 7, 0.5)).collect();
        assert_ne!(other, (0..50).map(|i| held_out(i, 42, 0.5)).collect::<Vec<_>>());
    }
}
