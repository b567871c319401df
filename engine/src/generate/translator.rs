//! A loaded T5, Marian or BART model answering translation and summarisation: task prefixes, batching with padding
//! masks, greedy decoding and beam search.

use crate::error::{AiError, Result};
use crate::files::ModelFiles;
use crate::generate::beam::Beams;
use crate::generate::seq2seq::{token_column, DecoderCache, GenerationSettings, Memory, Seq2Seq};
use crate::models::bert::var_builder;
use crate::models::marian::{Kind, Marian};
use crate::models::t5::T5;
use crate::tasks::{encode_all, in_batches};
use crate::text::TextTokenizer;
use crate::timing::forward;
use candle_core::{Device, Tensor, D};
use serde_json::Value;

/// Upper bound on num_beams: each beam is a decoder row.
pub const MAX_BEAMS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    T5,
    Marian,
    Bart,
}

pub struct Translator {
    pub family: Family,
    pub architecture: String,
    pub config: Value,
    pub tokenizer: TextTokenizer,
    pub settings: GenerationSettings,
    model: Box<dyn Seq2Seq>,
    /// Marian's and BART's decoders have positions for this many tokens: generation ends there.
    decoder_limit: Option<usize>,
    pub parameter_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct TranslateOptions {
    pub max_tokens: usize,
    pub num_beams: usize,
}

impl TranslateOptions {
    pub fn check(&self) -> Result<()> {
        use crate::generate::MAX_TOKENS_LIMIT;
        if self.max_tokens == 0 || self.max_tokens > MAX_TOKENS_LIMIT {
            return Err(AiError::invalid(format!("max_tokens must be between 1 and {MAX_TOKENS_LIMIT}")));
        }
        if self.num_beams == 0 || self.num_beams > MAX_BEAMS {
            return Err(AiError::invalid(format!("num_beams must be between 1 and {MAX_BEAMS}"))
                .with_hint("1 is greedy decoding; 4 or 5 is usual for beam search."));
        }
        Ok(())
    }
}

impl Translator {
    pub fn load(files: &ModelFiles, config: Value, family: Family) -> Result<Self> {
        let parse =
            |what: &str, e: serde_json::Error| AiError::corrupt(format!("config.json is not a {what} config: {e}"));
        let vb = var_builder(&files.weights, &Device::Cpu)?;
        // The longest input; Marian's and BART's decoders have positions for as many tokens, so output stops there.
        let (model, parameters, max_tokens, decoder_limit): (Box<dyn Seq2Seq>, usize, usize, Option<usize>) =
            match family {
                Family::T5 => {
                    let m = T5::load(&vb, serde_json::from_value(config.clone()).map_err(|e| parse("T5", e))?)?;
                    // Relative positions have no hard limit; n_positions is what the model was trained for.
                    let limit = config.get("n_positions").and_then(Value::as_u64).unwrap_or(512) as usize;
                    let parameters = m.parameter_count();
                    (Box::new(m), parameters, limit, None)
                }
                Family::Marian | Family::Bart => {
                    let (name, kind) =
                        if family == Family::Bart { ("BART", Kind::Bart) } else { ("Marian", Kind::Marian) };
                    let config = serde_json::from_value(config.clone()).map_err(|e| parse(name, e))?;
                    let m = Marian::load(&vb, config, kind)?;
                    let (parameters, limit) = (m.parameter_count(), m.config.max_position_embeddings);
                    (Box::new(m), parameters, limit, Some(limit))
                }
            };
        let architecture = config
            .pointer("/architectures/0")
            .and_then(Value::as_str)
            .unwrap_or(match family {
                Family::T5 => "T5ForConditionalGeneration",
                Family::Marian => "MarianMTModel",
                Family::Bart => "BartForConditionalGeneration",
            })
            .to_string();
        Ok(Translator {
            family,
            architecture,
            tokenizer: TextTokenizer::load(&files.dir, max_tokens, None)?,
            settings: GenerationSettings::load(files, &config)?,
            config,
            model,
            decoder_limit,
            parameter_bytes: parameters * 4,
        })
    }

    /// What goes before a text to translate it. T5 is told in words ("translate English to German: ",
    /// the prefix in config.json's task_specific_params when it has one); a multilingual Marian model is
    /// told by a target-language token such as ">>fra<<"; a one-pair Marian model and BART need nothing.
    pub fn translation_prefix(&self, source: Option<&str>, target: Option<&str>) -> Result<String> {
        if self.family == Family::Bart {
            return Ok(String::new());
        }
        if self.family == Family::Marian {
            return Ok(match target.map(|t| format!(">>{t}<<")) {
                Some(token) if self.tokenizer.token_to_id(&token).is_some() => format!("{token} "),
                _ => String::new(),
            });
        }
        let params = self.config.get("task_specific_params").and_then(Value::as_object);
        let pairs: Vec<(&str, &str)> = params
            .into_iter()
            .flatten()
            .filter(|(key, _)| key.starts_with("translation_"))
            .filter_map(|(key, v)| Some((key.as_str(), v.get("prefix")?.as_str()?)))
            .collect();
        match (source, target) {
            (Some(s), Some(t)) => {
                let key = format!("translation_{s}_to_{t}");
                Ok(pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map_or_else(|| format!("translate {s} to {t}: "), |p| p.1.into()))
            }
            // A model trained by ai_pretrain/ai_finetune records the prefix it learnt with.
            (None, None) if params.and_then(|p| p.get("translation")).is_some() => Ok(self
                .config
                .pointer("/task_specific_params/translation/prefix")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()),
            (None, None) if pairs.len() == 1 => Ok(pairs[0].1.to_string()),
            _ => {
                let known: Vec<&str> = pairs.iter().map(|(_, p)| p.trim_end_matches(": ")).collect();
                Err(AiError::invalid("this T5 model needs source_lang and target_lang").with_hint(
                    if known.is_empty() {
                        "Give both, e.g. source_lang => 'English', target_lang => 'German'.".to_string()
                    } else {
                        format!("Give both; the model was trained for: {}.", known.join("; "))
                    },
                ))
            }
        }
    }

    /// What goes before a text to summarise it: the prefix the config names, else T5's "summarize: " (BART
    /// summarisers take the text alone).
    pub fn summarization_prefix(&self) -> String {
        let default = if self.family == Family::T5 { "summarize: " } else { "" };
        self.config
            .pointer("/task_specific_params/summarization/prefix")
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    }

    /// Generates an output text for each input, in batches; `between` runs before every decoder step
    /// (the SQL layer checks for interrupts there).
    pub fn generate(
        &self,
        inputs: &[String],
        options: TranslateOptions,
        between: &mut dyn FnMut(),
    ) -> Result<Vec<String>> {
        let ids = self.generate_ids(inputs, options, between)?;
        ids.iter().map(|ids| self.tokenizer.decode(ids, true)).collect()
    }

    /// Token ids for each input, the end token included where one was produced (as transformers returns them).
    pub fn generate_ids(
        &self,
        inputs: &[String],
        options: TranslateOptions,
        between: &mut dyn FnMut(),
    ) -> Result<Vec<Vec<u32>>> {
        options.check()?;
        let options = TranslateOptions {
            max_tokens: self.decoder_limit.map_or(options.max_tokens, |limit| options.max_tokens.min(limit)),
            ..options
        };
        let texts: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let encodings = encode_all(&self.tokenizer, &texts, true, between)?;
        in_batches(&self.tokenizer, &encodings, &mut || {}, |_, batch| {
            let memory = Memory::new(forward(|| self.model.encode(&batch.ids, &batch.mask))?, &batch.mask)?;
            if options.num_beams == 1 {
                self.greedy(memory, options.max_tokens, between)
            } else {
                self.beam_search(memory, options, between)
            }
        })
    }

    /// The decoder's logits for each position of `prefix` (decoder start token first) on one input.
    pub fn step_logits(&self, input: &str, prefix: &[u32]) -> Result<Vec<Vec<f32>>> {
        let encoding = self.tokenizer.encode_whole(input)?;
        let batch = self.tokenizer.batch(&[&encoding])?;
        let memory = Memory::new(forward(|| self.model.encode(&batch.ids, &batch.mask))?, &batch.mask)?;
        let mut cache = DecoderCache::new(self.model.layers());
        let mut out = Vec::new();
        for &token in prefix {
            out.push(self.model.decode_step(&token_column(&[token])?, &memory, &mut cache)?.squeeze(0)?.to_vec1()?);
        }
        Ok(out)
    }

    fn greedy(&self, mut memory: Memory, max_tokens: usize, between: &mut dyn FnMut()) -> Result<Vec<Vec<u32>>> {
        let rows = memory.states.dim(0)?;
        let mut outputs = vec![Vec::new(); rows];
        let mut active: Vec<usize> = (0..rows).collect();
        let mut tokens = vec![self.settings.decoder_start; rows];
        let mut cache = DecoderCache::new(self.model.layers());
        for step in 0..max_tokens {
            between();
            let logits = forward(|| self.model.decode_step(&token_column(&tokens)?, &memory, &mut cache))?;
            let so_far: Vec<&[u32]> = active.iter().map(|&i| outputs[i].as_slice()).collect();
            let next: Vec<u32> =
                self.settings.process(&logits, &so_far, step + 1 == max_tokens)?.argmax(D::Minus1)?.to_vec1()?;
            let mut keep = Vec::with_capacity(active.len());
            for (row, (&input, &token)) in active.iter().zip(&next).enumerate() {
                outputs[input].push(token);
                if !self.settings.is_end(token) {
                    keep.push(row);
                }
            }
            if keep.is_empty() {
                break;
            }
            if keep.len() < active.len() {
                let rows = Tensor::from_vec(keep.iter().map(|&r| r as u32).collect(), keep.len(), &Device::Cpu)?;
                cache.select(&rows)?;
                memory = memory.select(&rows)?;
            }
            active = keep.iter().map(|&r| active[r]).collect();
            tokens = keep.iter().map(|&r| next[r]).collect();
        }
        Ok(outputs)
    }

    fn beam_search(
        &self,
        memory: Memory,
        options: TranslateOptions,
        between: &mut dyn FnMut(),
    ) -> Result<Vec<Vec<u32>>> {
        let n = options.num_beams;
        let inputs = memory.states.dim(0)?;
        let s = &self.settings;
        let mut searches: Vec<Beams> = (0..inputs).map(|_| Beams::new(n, s.length_penalty, s.early_stopping)).collect();
        // Rows are (input, beam) pairs of the inputs still searching.
        let mut active: Vec<usize> = (0..inputs).collect();
        let repeat: Vec<u32> = (0..inputs as u32).flat_map(|i| std::iter::repeat_n(i, n)).collect();
        let mut memory = memory.select(&Tensor::from_vec(repeat, inputs * n, &Device::Cpu)?)?;
        let mut tokens = vec![s.decoder_start; inputs * n];
        let mut cache = DecoderCache::new(self.model.layers());
        for step in 0..options.max_tokens {
            between();
            let logits = forward(|| self.model.decode_step(&token_column(&tokens)?, &memory, &mut cache))?;
            let vocab = logits.dim(1)?;
            let so_far: Vec<&[u32]> = active.iter().flat_map(|&i| searches[i].outputs()).collect();
            let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let scores = s.process(&log_probs, &so_far, step + 1 == options.max_tokens)?;
            let scores: Vec<f32> = scores.flatten_all()?.to_vec1()?;
            let mut rows = Vec::new();
            let mut still = Vec::new();
            for (slot, &input) in active.iter().enumerate() {
                let block = &scores[slot * n * vocab..(slot + 1) * n * vocab];
                if let Some(sources) = searches[input].step(block, vocab, options.max_tokens, |t| s.is_end(t)) {
                    rows.extend(sources.iter().map(|&b| (slot * n + b) as u32));
                    still.push(input);
                }
            }
            if still.is_empty() {
                break;
            }
            let rows = Tensor::from_vec(rows, still.len() * n, &Device::Cpu)?;
            cache.select(&rows)?;
            if still.len() < active.len() {
                let kept: Vec<u32> = active
                    .iter()
                    .enumerate()
                    .filter(|(_, input)| still.contains(input))
                    .flat_map(|(slot, _)| (0..n).map(move |b| (slot * n + b) as u32))
                    .collect();
                memory = memory.select(&Tensor::from_vec(kept, still.len() * n, &Device::Cpu)?)?;
            }
            active = still;
            tokens = active.iter().flat_map(|&i| searches[i].last_tokens().collect::<Vec<_>>()).collect();
        }
        Ok(searches.iter().map(Beams::best).collect())
    }
}
