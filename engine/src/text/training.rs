//! Tokenizers for training: new ones learnt from the rows (WordPiece as BERT uses, byte-level BPE as
//! GPT-2 uses, a sentencepiece-style Unigram as T5 uses) or a base model's own, and the files engine::text /
//! engine::text::decoder load them from.

use crate::error::{AiError, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::Metaspace;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::utils::parallelism::{get_parallelism, set_parallelism};
use tokenizers::{
    AddedToken, ModelWrapper, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString,
    PreTokenizer, PreTokenizerWrapper, Tokenizer, TruncationParams,
};

pub const BERT_SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// T5's special tokens, in its order: <pad> 0 (also the decoder's start), </s> 1, <unk> 2.
pub const T5_SPECIALS: [&str; 3] = ["<pad>", "</s>", "<unk>"];

/// Files a tokenizer may consist of; a fine-tuned model gets copies of its base's.
const TOKENIZER_FILES: &[&str] =
    &["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// [CLS] text [SEP], for encoders.
    Encoder,
    /// text <|endoftext|>, for decoders.
    Decoder,
    /// text </s>, for sequence-to-sequence models (sources and targets alike).
    Seq2Seq,
}

pub struct TrainTokenizer {
    inner: Tokenizer,
    pub style: Style,
    pub pad_id: u32,
    pub mask_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// Special tokens: never masked, never drawn as a random replacement.
    pub special_ids: Vec<u32>,
    /// Characters in the vocabulary's longest token (text::worth_reading).
    longest_token: usize,
}

/// The texts, ending early once `stop` is set: a cancelled run need not wait for the rest of the sample.
fn until<'a>(texts: &'a [String], stop: &'a AtomicBool) -> impl Iterator<Item = &'a String> + Send + 'a {
    texts.iter().take_while(move |_| !stop.load(Ordering::Relaxed))
}

fn tok_err(e: impl std::fmt::Display) -> AiError {
    AiError::internal(format!("tokenizer: {e}"))
}

fn special(t: &str) -> AddedToken {
    AddedToken::from(t.to_string(), true)
}

impl TrainTokenizer {
    /// A WordPiece vocabulary learnt from `texts`, with BERT's normaliser, pre-tokenizer and
    /// [CLS]/[SEP] template; the special tokens come first, so [PAD] is 0.
    pub fn train_wordpiece(texts: &[String], vocab_size: usize, stop: &AtomicBool) -> Result<Self> {
        let normalizer = BertNormalizer::new(true, true, None, true);
        // The trainer numbers "##c" pieces in hash-map order, and ties between merges go by those
        // numbers, so the same rows would give different vocabularies run to run. Reserving every
        // "##c" up front, in character order, makes training deterministic.
        let mut alphabet = BTreeSet::new();
        for text in until(texts, stop) {
            let mut n = NormalizedString::from(text.as_str());
            normalizer.normalize(&mut n).map_err(tok_err)?;
            alphabet.extend(n.get().chars().filter(|c| !c.is_whitespace()));
        }
        let reserved: Vec<AddedToken> = BERT_SPECIALS
            .iter()
            .map(|t| t.to_string())
            .chain(alphabet.iter().map(|c| format!("##{c}")))
            .map(|t| AddedToken::from(t, true))
            .collect();
        let mut trainer: TrainerWrapper = WordPieceTrainer::builder()
            .vocab_size(vocab_size.max(reserved.len() + alphabet.len()))
            .min_frequency(1)
            .show_progress(false)
            .special_tokens(reserved)
            .build()
            .into();
        let mut scratch = Tokenizer::new(WordPiece::default());
        scratch.with_normalizer(Some(normalizer)).map_err(tok_err)?;
        scratch.with_pre_tokenizer(Some(BertPreTokenizer));
        scratch.train(&mut trainer, until(texts, stop)).map_err(tok_err)?;
        // A fresh tokenizer over the learnt vocabulary, where only the five BERT tokens are special.
        let ModelWrapper::WordPiece(model) = scratch.get_model() else {
            return Err(AiError::internal("the WordPiece trainer returned another model"));
        };
        let mut tokenizer = Tokenizer::new(model.clone());
        tokenizer.with_normalizer(Some(normalizer)).map_err(tok_err)?;
        tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        tokenizer.with_decoder(Some(WordPieceDecoder::default()));
        tokenizer.add_special_tokens(BERT_SPECIALS.map(special)).map_err(tok_err)?;
        let id = |t: &str| tokenizer.token_to_id(t).ok_or_else(|| AiError::internal(format!("{t} missing")));
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        tokenizer.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
        Self::wrap(tokenizer, Style::Encoder)
    }

    /// A byte-level BPE learnt from `texts` (every byte is in the alphabet, so nothing is unknown),
    /// with <|endoftext|> as token 0.
    pub fn train_byte_bpe(texts: &[String], vocab_size: usize, stop: &AtomicBool) -> Result<Self> {
        let mut tokenizer = Tokenizer::new(BPE::default());
        tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let mut trainer: TrainerWrapper = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(1)
            .show_progress(false)
            .special_tokens(vec![special(END_OF_TEXT)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        tokenizer.train(&mut trainer, until(texts, stop)).map_err(tok_err)?;
        Self::wrap(tokenizer, Style::Decoder)
    }

    /// A sentencepiece-style Unigram vocabulary learnt from `texts`, as T5's: Metaspace pre-tokenizer ("▁"
    /// for spaces), no normaliser (case is kept), "</s>" after every text, T5's special tokens first.
    pub fn train_unigram(texts: &[String], vocab_size: usize, stop: &AtomicBool) -> Result<Self> {
        let metaspace = Metaspace::default();
        // The trainer counts words in a randomly seeded hash map and sums in parallel, so the same rows could
        // give different vocabularies; it is fed here with counts in word order, one thread.
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for text in until(texts, stop) {
            let mut words = PreTokenizedString::from(text.as_str());
            metaspace.pre_tokenize(&mut words).map_err(tok_err)?;
            for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::None) {
                *counts.entry(word.to_string()).or_default() += 1;
            }
        }
        let trainer = UnigramTrainer::builder()
            .vocab_size(vocab_size as u32)
            .show_progress(false)
            .special_tokens(T5_SPECIALS.map(special).to_vec())
            .unk_token(Some("<unk>".into()))
            .build()
            .map_err(tok_err)?;
        let mut model = Unigram::default();
        let parallel = get_parallelism();
        set_parallelism(false);
        let trained = trainer.do_train(counts.into_iter().collect(), &mut model);
        set_parallelism(parallel);
        trained.map_err(|e| {
            AiError::invalid(format!("cannot learn a vocabulary of {vocab_size} pieces: {e}"))
                .with_hint("vocab_size must hold at least every character of the rows; raise it.")
        })?;
        let mut tokenizer = Tokenizer::new(canonical_unigram(&model)?);
        tokenizer.with_pre_tokenizer(Some(metaspace.clone()));
        tokenizer.with_decoder(Some(metaspace));
        tokenizer.add_special_tokens(T5_SPECIALS.map(special)).map_err(tok_err)?;
        let eos = tokenizer.token_to_id("</s>").ok_or_else(|| AiError::internal("</s> missing"))?;
        let template = TemplateProcessing::builder()
            .try_single("$A </s>")
            .map_err(tok_err)?
            .special_tokens(vec![("</s>".to_string(), eos)])
            .build()
            .map_err(tok_err)?;
        tokenizer.with_post_processor(Some(template));
        Self::wrap(tokenizer, Style::Seq2Seq)
    }

    /// A base model's tokenizer.json, with its special tokens found as engine::text finds them.
    pub fn from_dir(dir: &Path, style: Style) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| AiError::corrupt(format!("cannot read {}: {e}", path.display())))?;
        let mut t = Self::wrap(tokenizer, style)?;
        let config: Value = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        let field = |name: &str| match config.get(name)? {
            Value::String(s) => Some(s.clone()),
            other => other.get("content")?.as_str().map(str::to_string),
        };
        let find = |name: &str, fallbacks: &[&str]| {
            field(name)
                .into_iter()
                .chain(fallbacks.iter().map(|s| s.to_string()))
                .find_map(|tok| t.inner.token_to_id(&tok))
        };
        t.mask_id = find("mask_token", &["[MASK]", "<mask>"]);
        t.pad_id = find("pad_token", &["[PAD]", "<pad>"]).unwrap_or(t.pad_id);
        t.eos_id = find("eos_token", &[END_OF_TEXT, "</s>"]).or(t.eos_id);
        Ok(t)
    }

    fn wrap(mut inner: Tokenizer, style: Style) -> Result<Self> {
        inner.with_padding(None);
        inner.with_truncation(None).map_err(tok_err)?;
        let special_ids: Vec<u32> = {
            let mut ids: Vec<u32> =
                inner.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect();
            ids.sort();
            ids
        };
        let id = |t: &str| inner.token_to_id(t);
        Ok(TrainTokenizer {
            pad_id: id("[PAD]").or(id("<pad>")).unwrap_or(0),
            mask_id: id("[MASK]"),
            eos_id: id(END_OF_TEXT).or(id("</s>")),
            special_ids,
            style,
            longest_token: crate::text::longest_token(&inner),
            inner,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of one text, at most `max_length` of them: [CLS] .. [SEP] for an encoder, text then </s> for a
    /// sequence-to-sequence model (the text is cut, not the special tokens), text then <|endoftext|> for a decoder.
    pub fn encode(&mut self, text: &str, max_length: usize) -> Result<Vec<u32>> {
        // A huge row costs what its first max_length tokens cost.
        let text = crate::text::worth_reading(text, max_length, self.longest_token);
        match self.style {
            Style::Encoder | Style::Seq2Seq => {
                self.inner
                    .with_truncation(Some(TruncationParams { max_length, ..Default::default() }))
                    .map_err(tok_err)?;
                let e = self.inner.encode(text, true).map_err(|e| AiError::invalid(format!("cannot tokenize: {e}")))?;
                Ok(e.get_ids().to_vec())
            }
            Style::Decoder => {
                let eos = self.eos_id.ok_or_else(|| {
                    AiError::wrong_task("the tokenizer has no end-of-text token")
                        .with_hint("Name it eos_token in tokenizer_config.json.")
                })?;
                let e = self.inner.encode(text, true).map_err(|e| AiError::invalid(format!("cannot tokenize: {e}")))?;
                let mut ids = e.get_ids().to_vec();
                ids.truncate(max_length - 1);
                ids.push(eos);
                Ok(ids)
            }
        }
    }

    /// Token ids of words given already split (transformers' is_split_into_words), with the
    /// special tokens an encoder adds, cut to `max_length`; and for each token, the index of the
    /// word it comes from (None for special tokens).
    pub fn encode_words(&mut self, words: &[&str], max_length: usize) -> Result<(Vec<u32>, Vec<Option<u32>>)> {
        if self.style != Style::Encoder {
            return Err(AiError::wrong_task("token classification needs an encoder's tokenizer"));
        }
        self.inner.with_truncation(Some(TruncationParams { max_length, ..Default::default() })).map_err(tok_err)?;
        // A byte-level BPE without add_prefix_space (RoBERTa's) encodes "paris" alone unlike "paris" after a
        // space ("Ġparis"). transformers refuses pre-split words there unless add_prefix_space is set, which
        // then spaces every word, the first too; here every word but the first gets a space, which gives the
        // tokens of the running text, as the saved tokenizer encodes it at inference.
        let spaced: Vec<String>;
        let words: Vec<&str> = if self.inner.get_pre_tokenizer().is_some_and(byte_level_without_prefix) {
            spaced =
                words.iter().enumerate().map(|(i, w)| if i == 0 { w.to_string() } else { format!(" {w}") }).collect();
            spaced.iter().map(String::as_str).collect()
        } else {
            words.to_vec()
        };
        let e = self.inner.encode(words, true).map_err(|e| AiError::invalid(format!("cannot tokenize: {e}")))?;
        Ok((e.get_ids().to_vec(), e.get_word_ids().to_vec()))
    }

    /// Whether an encoding holds nothing but special tokens (an empty or blank text).
    pub fn is_empty_encoding(&self, ids: &[u32]) -> bool {
        ids.iter().all(|id| self.special_ids.contains(id))
    }

    /// Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json for a new tokenizer.
    pub fn write(&self, dir: &Path, max_length: usize) -> Result<()> {
        let mut clean = self.inner.clone();
        clean.with_truncation(None).map_err(tok_err)?;
        clean.save(dir.join("tokenizer.json"), false).map_err(tok_err)?;
        let (config, map) = match self.style {
            Style::Encoder => (
                json!({"tokenizer_class": "BertTokenizer", "do_lower_case": true, "tokenize_chinese_chars": true,
                       "strip_accents": null, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                       "cls_token": "[CLS]", "mask_token": "[MASK]", "model_max_length": max_length}),
                json!({"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                       "mask_token": "[MASK]"}),
            ),
            Style::Decoder => (
                json!({"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": false, "bos_token": END_OF_TEXT,
                       "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT, "model_max_length": max_length}),
                json!({"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT}),
            ),
            Style::Seq2Seq => (
                json!({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "pad_token": "<pad>",
                       "unk_token": "<unk>", "model_max_length": max_length}),
                json!({"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}),
            ),
        };
        write_json(&dir.join("tokenizer_config.json"), &config)?;
        write_json(&dir.join("special_tokens_map.json"), &map)
    }
}

/// The trained Unigram with the characters the trainer had to add back numbered in character order. It gives
/// them the lowest scores in steps of 1e-4 in hash-set order, so which character gets which score (and id) would
/// change run to run; here the single characters in that band share its scores in sorted order.
fn canonical_unigram(model: &Unigram) -> Result<Unigram> {
    // In id order: T5's special tokens first, then the pieces by falling score.
    let mut pieces: Vec<(String, f64)> = model.iter().cloned().collect();
    let specials = T5_SPECIALS.len();
    let (head, rest) = pieces.split_at_mut(specials);
    let single = |p: &str| p.chars().count() == 1;
    let lowest = rest.iter().map(|(_, s)| *s).fold(f64::INFINITY, f64::min);
    let band = lowest + 1e-4 * (rest.iter().filter(|(p, _)| single(p)).count() + 1) as f64;
    let in_band: Vec<usize> = (0..rest.len()).filter(|&i| single(&rest[i].0) && rest[i].1 <= band).collect();
    let mut scores: Vec<f64> = in_band.iter().map(|&i| rest[i].1).collect();
    let mut chars: Vec<String> = in_band.iter().map(|&i| rest[i].0.clone()).collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    chars.sort();
    for (&i, (c, s)) in in_band.iter().zip(chars.into_iter().zip(scores)) {
        rest[i] = (c, s);
    }
    rest.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let vocab: Vec<(String, f64)> = head.iter().cloned().chain(rest.iter().cloned()).collect();
    let unk = vocab.iter().position(|(p, _)| p == "<unk>");
    Unigram::from(vocab, unk, false).map_err(tok_err)
}

/// Whether the pre-tokenizer is (or holds) a byte-level one that adds no space before the text.
fn byte_level_without_prefix(p: &PreTokenizerWrapper) -> bool {
    match p {
        PreTokenizerWrapper::ByteLevel(b) => !b.add_prefix_space,
        PreTokenizerWrapper::Sequence(s) => s.as_ref().iter().any(byte_level_without_prefix),
        _ => false,
    }
}

pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| AiError::internal(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| AiError::internal(format!("cannot write {}: {e}", path.display())))
}

/// Copies a base model's tokenizer files, unchanged, into `out`.
pub fn copy_tokenizer_files(base: &Path, out: &Path) -> Result<()> {
    for name in TOKENIZER_FILES {
        let from = base.join(name);
        if from.is_file() {
            std::fs::copy(&from, out.join(name))
                .map_err(|e| AiError::internal(format!("cannot copy {}: {e}", from.display())))?;
        }
    }
    Ok(())
}
