//! Rows from a DataSource: texts for tokenizer training, then token ids and label ids, split into
//! training and held-out rows by a hash of each row's position, so the split needs no shuffle state.

use crate::error::{AiError, Result};
use crate::text::training::TrainTokenizer;
use crate::train::options::TrainOptions;
use crate::train::row_file::{RowWriter, Rows};
use crate::train::{DataSource, Example, Objective};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug)]
pub struct Row {
    pub ids: Vec<u32>,
    /// The row's class id (text classification).
    pub label: Option<u32>,
    /// (position in `ids`, tag id) of each word's first token (token classification).
    pub tags: Vec<(u32, u32)>,
    /// What the decoder must answer, </s> included (seq2seq).
    pub target: Vec<u32>,
}

#[derive(Debug)]
pub struct Prepared {
    /// Kept in a scratch file, read back batch by batch.
    pub train: Rows,
    pub eval: Rows,
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

/// How much text a new tokenizer learns from: the rest of a larger source is read for training but not held
/// for the tokenizer (sentencepiece samples its input likewise).
pub const TOKENIZER_SAMPLE_BYTES: usize = 64 << 20;

/// The non-blank texts (and targets, `with_targets`) of the first TOKENIZER_SAMPLE_BYTES, for training a
/// tokenizer; every row is read, so that a source with no usable text is refused.
pub fn collect_texts(data: &mut dyn DataSource, with_targets: bool) -> Result<Vec<String>> {
    let (mut texts, mut rows, mut bytes, mut usable) = (Vec::new(), 0usize, 0usize, false);
    data.pass(&mut |chunk| {
        rows += chunk.len();
        for e in chunk {
            let target = e.target.filter(|_| with_targets);
            for text in [Some(e.text), target].into_iter().flatten().filter(|t| !t.trim().is_empty()) {
                usable = true;
                if bytes + text.len() <= TOKENIZER_SAMPLE_BYTES {
                    bytes += text.len();
                    texts.push(text);
                } else if texts.is_empty() {
                    // A first row longer than the sample gives its start alone.
                    let mut end = TOKENIZER_SAMPLE_BYTES;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    bytes = end;
                    texts.push(text[..end].to_string());
                }
            }
        }
        Ok(())
    })?;
    match (rows, usable) {
        (0, _) => Err(no_rows()),
        (n, false) => Err(all_empty(n)),
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

/// A usable row before its labels have ids.
struct Pending {
    ids: Vec<u32>,
    label: Option<String>,
    /// Every word's tag, and (position, word) of each word's first token left after truncation.
    tags: Vec<String>,
    firsts: Vec<(u32, u32)>,
    target: Vec<u32>,
}

/// Label and tag names numbered in order of first appearance, as rows are written; sorted at the end.
#[derive(Default)]
struct Names(HashMap<String, u32>);

impl Names {
    fn id(&mut self, name: String) -> u32 {
        let next = self.0.len() as u32;
        *self.0.entry(name).or_insert(next)
    }

    /// The names sorted, and for each id given out, its place among them.
    fn sorted(self) -> (Vec<String>, Vec<u32>) {
        let mut names: Vec<(String, u32)> = self.0.into_iter().collect();
        names.sort();
        let mut place = vec![0u32; names.len()];
        for (i, (_, id)) in names.iter().enumerate() {
            place[*id as usize] = i as u32;
        }
        (names.into_iter().map(|(name, _)| name).collect(), place)
    }
}

/// Tokenizes every row and writes it to a scratch file in `dir`; text classification needs a label for every
/// row, token classification a tag for every word (labels sorted to ids either way).
pub fn prepare(
    data: &mut dyn DataSource,
    tokenizer: &mut TrainTokenizer,
    objective: Objective,
    max_length: usize,
    options: &TrainOptions,
    dir: &Path,
) -> Result<Prepared> {
    let mut writer = RowWriter::create(dir)?;
    let (mut train, mut eval, mut names) = (Vec::new(), Vec::new(), Names::default());
    let (mut position, mut skipped) = (0usize, 0usize);
    data.pass(&mut |chunk| {
        for example in chunk {
            let at = position;
            position += 1;
            if example.text.trim().is_empty() {
                skipped += 1;
                continue;
            }
            let pending = match objective {
                Objective::TokenClassification => tagged_row(at, example, tokenizer, max_length)?,
                Objective::Seq2Seq => paired_row(example, tokenizer, max_length, options)?,
                _ => labelled_row(at, example, tokenizer, objective, max_length)?,
            };
            let Some(p) = pending else {
                skipped += 1;
                continue;
            };
            let tag_ids: Vec<u32> = p.tags.into_iter().map(|t| names.id(t)).collect();
            let row = Row {
                label: p.label.map(|l| names.id(l)),
                tags: p.firsts.iter().map(|&(at, word)| (at, tag_ids[word as usize])).collect(),
                ids: p.ids,
                target: p.target,
            };
            let span = writer.write(&row)?;
            if held_out(at, options.seed, options.test_size) {
                eval.push(span);
            } else {
                train.push(span);
            }
        }
        Ok(())
    })?;
    if position == 0 {
        return Err(no_rows());
    }
    if train.is_empty() && eval.is_empty() {
        return Err(all_empty(position));
    }
    let (labels, places) = names.sorted();
    check_labels(&labels, objective)?;
    if train.is_empty() {
        return Err(AiError::invalid(format!("test_size {} leaves no rows to train on", options.test_size))
            .with_hint("Lower test_size or supply more rows."));
    }
    let (file, places) = (writer.finish()?, Arc::new(places));
    Ok(Prepared {
        train: Rows::new(file.clone(), train, places.clone()),
        eval: Rows::new(file, eval, places),
        labels,
        rows: position,
        skipped,
    })
}

/// A row for mlm, clm or text classification; None when it encodes to nothing but special tokens.
fn labelled_row(
    at: usize,
    example: Example,
    tokenizer: &mut TrainTokenizer,
    objective: Objective,
    max_length: usize,
) -> Result<Option<Pending>> {
    let ids = tokenizer.encode(&example.text, max_length)?;
    if tokenizer.is_empty_encoding(&ids) {
        return Ok(None);
    }
    let labelled = objective == Objective::TextClassification;
    let label = example.label.filter(|l| !l.is_empty() && labelled);
    if labelled && label.is_none() {
        return Err(AiError::invalid(format!("training row {} has text but no label", at + 1))
            .with_hint("Text classification needs a label for every row; filter out rows with NULL labels."));
    }
    Ok(Some(Pending { ids, label, tags: Vec::new(), firsts: Vec::new(), target: Vec::new() }))
}

/// A row for seq2seq: the source (after the options' source_prefix) and the target, each ending in </s>;
/// None (skipped and counted) when the target is NULL or blank.
fn paired_row(
    example: Example,
    tokenizer: &mut TrainTokenizer,
    max_length: usize,
    options: &TrainOptions,
) -> Result<Option<Pending>> {
    let Some(target) = example.target.filter(|t| !t.trim().is_empty()) else { return Ok(None) };
    let prefix = options.source_prefix.as_deref().unwrap_or("");
    let ids = tokenizer.encode(&format!("{prefix}{}", example.text), max_length)?;
    let target = tokenizer.encode(&target, max_length)?;
    if tokenizer.is_empty_encoding(&ids) || tokenizer.is_empty_encoding(&target) {
        return Ok(None);
    }
    Ok(Some(Pending { ids, label: None, tags: Vec::new(), firsts: Vec::new(), target }))
}

/// A row for token classification: its words encoded as pre-split input (transformers'
/// is_split_into_words), each word's tag on its first token; None when truncation left no word.
fn tagged_row(
    at: usize,
    example: Example,
    tokenizer: &mut TrainTokenizer,
    max_length: usize,
) -> Result<Option<Pending>> {
    let row = at + 1;
    let words: Vec<&str> = example.text.split_whitespace().collect();
    let given = example.tags.ok_or_else(|| {
        AiError::invalid(format!("training row {row} has text but no tags"))
            .with_hint("Token classification needs an array of tags, one per word; filter out rows with NULL tags.")
    })?;
    if given.len() != words.len() {
        return Err(AiError::invalid(format!("training row {row} has {} words but {} tags", words.len(), given.len()))
            .with_hint("Words are the text split on whitespace; give exactly one tag per word."));
    }
    let tags =
        given.into_iter().map(|t| t.filter(|t| !t.is_empty())).collect::<Option<Vec<String>>>().ok_or_else(|| {
            AiError::invalid(format!("training row {row} has a NULL or empty tag"))
                .with_hint("Every word needs a tag; use \"O\" for words outside any entity.")
        })?;
    let (ids, word_ids) = tokenizer.encode_words(&words, max_length)?;
    // Only a word's first token is labelled; later pieces and special tokens get none (-100).
    let firsts: Vec<(u32, u32)> = (0..word_ids.len())
        .filter_map(|t| {
            let word = word_ids[t]?;
            (t == 0 || word_ids[t - 1] != Some(word)).then_some((t as u32, word))
        })
        .collect();
    if firsts.is_empty() {
        return Ok(None);
    }
    Ok(Some(Pending { ids, label: None, tags, firsts, target: Vec::new() }))
}

/// A classification objective needs at least two distinct labels.
fn check_labels(labels: &[String], objective: Objective) -> Result<()> {
    if !objective.is_classification() || labels.len() >= 2 {
        return Ok(());
    }
    let (what, needs) = match objective {
        Objective::TokenClassification => {
            ("word has the same tag", "A token classifier needs at least two different tags.")
        }
        _ => ("row has the same label", "A classifier needs at least two different labels."),
    };
    let only = labels.first().map_or("", String::as_str);
    Err(AiError::invalid(format!("every {what} \"{only}\"")).with_hint(needs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Example;

    struct Rows(Vec<Example>);

    impl DataSource for Rows {
        fn pass(&mut self, each: &mut dyn FnMut(Vec<Example>) -> Result<()>) -> Result<()> {
            each(self.0.clone())
        }
    }

    fn tagged(text: &str, tags: &[&str]) -> Example {
        Example {
            text: text.into(),
            tags: Some(tags.iter().map(|t| Some(t.to_string())).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_first_piece_of_a_word_is_tagged() {
        let texts = vec!["anna went to oslo".to_string()];
        // The smallest vocabulary: single characters, so every word is split into one piece per letter.
        let mut tokenizer = TrainTokenizer::train_wordpiece(&texts, 0, &Default::default()).unwrap();
        let options = TrainOptions { test_size: 0.0, ..Default::default() };
        let dir = std::env::temp_dir();
        let mut rows = Rows(vec![
            tagged("anna went to oslo", &["B-PER", "O", "O", "B-LOC"]),
            tagged("  ", &[]),
            // [CLS] o ##s ##l [SEP] after truncation to 5: one word left, and it trains.
            tagged("oslo anna", &["B-LOC", "B-PER"]),
        ]);
        let p = prepare(&mut rows, &mut tokenizer, Objective::TokenClassification, 5, &options, &dir).unwrap();
        assert_eq!(p.labels, vec!["B-LOC", "B-PER", "O"]);
        assert_eq!((p.rows, p.skipped, p.train.len()), (3, 1, 2));
        // [CLS] a ##n ##n [SEP]: "anna" is cut after three pieces and still tagged.
        assert_eq!(p.train.get(0).unwrap().tags, vec![(1, 1)]);
        assert_eq!(p.train.get(1).unwrap().tags, vec![(1, 0)]);
        let p = prepare(&mut rows, &mut tokenizer, Objective::TokenClassification, 64, &options, &dir).unwrap();
        // [CLS] a ##n ##n ##a w ##e ##n ##t t ##o o ##s ##l ##o [SEP]
        assert_eq!(p.train.get(0).unwrap().ids.len(), 16);
        assert_eq!(p.train.get(0).unwrap().tags, vec![(1, 1), (5, 2), (9, 2), (11, 0)]);
        assert_eq!(p.train.get(1).unwrap().tags, vec![(1, 0), (5, 1)]);
        // Truncated to [CLS] [SEP], a row has no word left: skipped and counted.
        let mut rows = Rows(vec![tagged("anna went", &["B-PER", "O"]), tagged("to oslo", &["O", "B-LOC"])]);
        let e = prepare(&mut rows, &mut tokenizer, Objective::TokenClassification, 2, &options, &dir).unwrap_err();
        assert_eq!(e.message, "all 2 training texts are empty or NULL");
    }

    #[test]
    fn held_out_fraction_is_about_test_size() {
        let n = (0..10_000).filter(|i| held_out(*i, 42, 0.1)).count();
        assert!((900..1100).contains(&n), "{n}");
        assert_eq!((0..100).filter(|i| held_out(*i, 42, 0.0)).count(), 0);
        let other: Vec<bool> = (0..50).map(|i| held_out(i, 7, 0.5)).collect();
        assert_ne!(other, (0..50).map(|i| held_out(i, 42, 0.5)).collect::<Vec<_>>());
    }
}
