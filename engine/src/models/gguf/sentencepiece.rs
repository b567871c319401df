//! The sentencepiece vocabularies of GGUF files (tokenizer.ggml.model "llama": Llama 2, Mistral 7B, TinyLlama,
//! Phi-3 and their kin), which candle does not read: each piece with its score and type. llama.cpp splits a text
//! into characters and merges, again and again, the neighbouring pair whose joined piece has the highest score;
//! characters of no piece become their bytes' pieces (<0x41>). That is a BPE whose merges rank by the score of
//! the piece they make, as transformers' converter builds LlamaTokenizerFast from a sentencepiece model, so it is
//! built here on the tokenizers crate rather than written by hand.

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{bail, Result};
use std::collections::HashSet;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// llama.cpp's token types (tokenizer.ggml.token_type).
const NORMAL: i64 = 1;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// The piece that stands for a space.
const SPACE: &str = "\u{2581}";

/// The tokenizer of a GGUF file whose vocabulary is sentencepiece's: as llama.cpp tokenizes, with the start token
/// where tokenizer.ggml.add_bos_token says (by default) and a space before the text where add_space_prefix says (by
/// default). Generated pieces decode with their spaces, as llama.cpp's do.
pub fn tokenizer(content: &Content) -> Result<Tokenizer> {
    let get = |key: &str| content.metadata.get(&format!("tokenizer.ggml.{key}"));
    let Some(Value::Array(tokens)) = get("tokens") else { bail!("tokenizer.ggml.tokens is missing") };
    let tokens: Vec<String> = tokens.iter().map(|t| t.to_string().cloned()).collect::<Result<_>>()?;
    let scores: Vec<f32> = match get("scores") {
        Some(Value::Array(scores)) => scores.iter().map(Value::to_f32).collect::<Result<_>>()?,
        _ => bail!("tokenizer.ggml.scores is missing"),
    };
    let types: Vec<i64> = match get("token_type") {
        Some(Value::Array(types)) => types.iter().map(integer).collect::<Result<_>>()?,
        _ => vec![NORMAL; tokens.len()],
    };
    if scores.len() != tokens.len() || types.len() != tokens.len() {
        bail!("{} tokens but {} scores and {} token types", tokens.len(), scores.len(), types.len())
    }
    let id = |key: &str| get(key).map(integer).transpose();
    let flag = |key: &str, default: bool| get(key).map_or(Ok(default), Value::to_bool);
    let name_of = |id: Option<i64>| -> Result<Option<String>> {
        match id {
            None => Ok(None),
            Some(id) => match usize::try_from(id).ok().and_then(|i| tokens.get(i)) {
                Some(token) => Ok(Some(token.clone())),
                None => bail!("token id {id} is outside the vocabulary of {}", tokens.len()),
            },
        }
    };

    let mut vocab = Vocab::default();
    for (i, token) in tokens.iter().enumerate() {
        vocab.entry(token.clone()).or_insert(i as u32);
    }
    let merges = merges(&tokens, &scores, &types, &vocab)?;
    let mut bpe = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true);
    if let Some(unknown) = name_of(id("unknown_token_id")?.or(Some(0)))? {
        bpe = bpe.unk_token(unknown).fuse_unk(true);
    }
    let mut tokenizer = Tokenizer::new(bpe.build().map_err(candle_core::Error::wrap)?);

    let mut normalizers = Vec::new();
    if flag("add_space_prefix", true)? {
        normalizers.push(Prepend::new(SPACE.to_string()).into());
    }
    normalizers.push(Replace::new(" ", SPACE).map_err(candle_core::Error::wrap)?.into());
    tokenizer.with_normalizer(Some(NormalizerSequence::new(normalizers))).map_err(candle_core::Error::wrap)?;
    tokenizer.with_decoder(Some(DecoderSequence::new(vec![
        Replace::new(SPACE, " ").map_err(candle_core::Error::wrap)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ])));
    // Control tokens (<s>, </s>) are read whole in a text, as llama.cpp reads them with special tokens parsed;
    // user-defined pieces are read whole too, before the merges.
    let whole = |kind: i64, special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == kind)
            .map(|(token, _)| AddedToken::from(token.clone(), special))
            .collect()
    };
    tokenizer.add_special_tokens(whole(CONTROL, true)).map_err(candle_core::Error::wrap)?;
    tokenizer.add_tokens(whole(USER_DEFINED, false)).map_err(candle_core::Error::wrap)?;

    let bos = name_of(id("bos_token_id")?)?.zip(id("bos_token_id")?);
    if let (true, Some((bos, bos_id))) = (flag("add_bos_token", true)?, bos) {
        let start = TemplateProcessing::builder()
            .try_single(format!("{bos} $A"))
            .and_then(|t| t.try_pair(format!("{bos} $A $B")))
            .map_err(candle_core::Error::msg)?
            .special_tokens(vec![(bos, bos_id as u32)])
            .build()
            .map_err(candle_core::Error::wrap)?;
        tokenizer.with_post_processor(Some(start));
    }
    Ok(tokenizer)
}

/// Every pair of pieces that joins into a normal or user-defined piece, ranked by that piece's score, highest
/// first (ties by the pieces' ids, as transformers' converter orders them). The file decides how many pairs
/// there are (a piece of n characters has n - 1 cuts): beyond the budget they are refused before they are held.
fn merges(tokens: &[String], scores: &[f32], types: &[i64], vocab: &Vocab) -> Result<Vec<(String, String)>> {
    type Ranked<'a> = (f32, u32, u32, &'a str, &'a str);
    let refused = |e: crate::error::AiError| candle_core::Error::Msg(e.to_string());
    let cuts = tokens.iter().fold(0usize, |n, t| n.saturating_add(t.chars().count().saturating_sub(1)));
    let entry = std::mem::size_of::<Ranked>();
    crate::budget::check(cuts.saturating_mul(entry), || format!("the merges of {cuts} cuts of pieces"))
        .map_err(refused)?;
    let mut ranked: Vec<Ranked> = Vec::new();
    let mut seen = HashSet::new();
    for ((token, score), kind) in tokens.iter().zip(scores).zip(types) {
        if !matches!(*kind, NORMAL | USER_DEFINED) || !seen.insert(token.as_str()) {
            continue;
        }
        for (cut, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(cut);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                ranked.push((*score, l, r, left, right));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let text = ranked.iter().fold(0usize, |n, (_, _, _, l, r)| n.saturating_add(l.len() + r.len()));
    let bytes = text.saturating_add(ranked.len().saturating_mul(std::mem::size_of::<(String, String)>()));
    crate::budget::check(bytes, || format!("{} merges", ranked.len())).map_err(refused)?;
    Ok(ranked.into_iter().map(|(_, _, _, l, r)| (l.to_string(), r.to_string())).collect())
}

fn integer(value: &Value) -> Result<i64> {
    Ok(match value {
        Value::U8(v) => *v as i64,
        Value::I8(v) => *v as i64,
        Value::U16(v) => *v as i64,
        Value::I16(v) => *v as i64,
        Value::U32(v) => *v as i64,
        Value::I32(v) => *v as i64,
        Value::U64(v) => *v as i64,
        Value::I64(v) => *v,
        other => bail!("expected an integer, got {other:?}"),
    })
}
