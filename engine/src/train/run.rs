//! The training loop: shuffled batches each epoch, AdamW with clipping and a linear schedule,
//! progress reports, the held-out evaluation at the start and the end, and checkpoints to resume from.

use crate::error::{AiError, Result};
use crate::text::training::TrainTokenizer;
use crate::threads;
use crate::train::batch::{Batch, Targets};
use crate::train::checkpoint::{DataShape, TrainerState};
use crate::train::data::{Prepared, Row};
use crate::train::mask::Masker;
use crate::train::metrics::{accuracy, entity_f1, macro_f1};
use crate::train::nn::Dropout;
use crate::train::optim::{linear_schedule, AdamW, AdamWConfig, Gradients};
use crate::train::options::TrainOptions;
use crate::train::row_file::Rows;
use crate::train::{Objective, Progress, StepReport, Trainable};
use candle_core::D;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Independent random streams, so that e.g. the masking does not depend on how many dropout
/// numbers were drawn before it.
fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Each row's tagged positions as flat batch positions (row * len + column) with their tag ids.
fn tag_targets(rows: &[&Row], len: usize) -> Targets {
    let (mut positions, mut ids) = (Vec::new(), Vec::new());
    for (r, row) in rows.iter().enumerate() {
        for &(at, tag) in &row.tags {
            positions.push((r * len) as u32 + at);
            ids.push(tag);
        }
    }
    Targets::Tokens { positions, ids }
}

pub struct Job<'a> {
    pub model: &'a dyn Trainable,
    pub objective: Objective,
    pub tokenizer: &'a TrainTokenizer,
    pub data: &'a Prepared,
    pub options: &'a TrainOptions,
    pub learning_rate: f64,
    /// Writes the tokenizer files into a checkpoint.
    pub tokenizer_files: &'a dyn Fn(&Path) -> Result<()>,
    /// A checkpoint directory to go on from, and its state.
    pub resume: Option<(&'a Path, &'a TrainerState)>,
}

pub struct Finished {
    pub metrics: Value,
    pub steps: usize,
}

impl Job<'_> {
    /// What the run trains on, as a checkpoint records it.
    pub fn data_shape(&self) -> DataShape {
        DataShape {
            objective: self.objective.name().to_string(),
            train_rows: self.data.train.len(),
            eval_rows: self.data.eval.len(),
            labels: self.data.labels.clone(),
        }
    }

    fn batch(&self, rows: &[&Row], rng: &mut ChaCha8Rng) -> Result<Batch> {
        let seqs: Vec<&[u32]> = rows.iter().map(|r| r.ids.as_slice()).collect();
        let t = self.tokenizer;
        Ok(match self.objective {
            Objective::Mlm => Masker {
                mask_id: t.mask_id.ok_or_else(|| AiError::wrong_task("the tokenizer has no mask token"))?,
                pad_id: t.pad_id,
                vocab_size: t.vocab_size(),
                special_ids: &t.special_ids,
                probability: self.options.mask_probability,
            }
            .batch(&seqs, rng),
            Objective::Clm => {
                let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
                let pad = t.eos_id.unwrap_or(t.pad_id);
                Batch::padded(&seqs, pad, Batch::next_token_targets(&seqs, len))
            }
            Objective::TextClassification => {
                let labels = rows.iter().map(|r| r.label.unwrap_or(0)).collect();
                Batch::padded(&seqs, t.pad_id, Targets::Labels(labels))
            }
            Objective::TokenClassification => {
                let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
                Batch::padded(&seqs, t.pad_id, tag_targets(rows, len))
            }
            Objective::Seq2Seq => {
                let start = self.model.decoder_start().ok_or_else(|| AiError::internal("not an encoder-decoder"))?;
                let targets: Vec<&[u32]> = rows.iter().map(|r| r.target.as_slice()).collect();
                Batch::seq2seq(&seqs, &targets, t.pad_id, start)
            }
        })
    }

    /// Mean loss per target over `rows` (masks drawn from a fixed stream, so every evaluation of
    /// the same rows sees the same masks), and predicted labels for classification (one per row, or
    /// one per tagged word in row order).
    fn evaluate(&self, rows: &Rows) -> Result<(f64, Vec<u32>)> {
        let mut rng = stream(self.options.seed, 9);
        let (mut total, mut count, mut predicted) = (0.0f64, 0usize, Vec::new());
        for start in (0..rows.len()).step_by(self.options.batch_size) {
            let chunk = rows.slice(start..(start + self.options.batch_size).min(rows.len()))?;
            let batch = self.batch(&chunk.iter().collect::<Vec<_>>(), &mut rng)?;
            let logits = self.model.logits(&batch, None)?;
            let loss = crate::kernels::fused::cross_entropy(&logits, batch.target_ids())?.to_scalar::<f32>()? as f64;
            total += loss * batch.target_count() as f64;
            count += batch.target_count();
            if self.objective.is_classification() {
                predicted.extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
            }
        }
        Ok((total / count.max(1) as f64, predicted))
    }

    /// Word-level accuracy and macro F1, and entity-level F1 where the tags are IOB2.
    fn tag_metrics(&self, predicted: &[u32], metrics: &mut Value) -> Result<()> {
        let eval = &self.data.eval;
        let gold: Vec<Vec<u32>> =
            (0..eval.len()).map(|i| Ok(eval.get(i)?.tags.iter().map(|t| t.1).collect())).collect::<Result<_>>()?;
        let flat: Vec<u32> = gold.concat();
        metrics["accuracy"] = json!(accuracy(predicted, &flat));
        metrics["macro_f1"] = json!(macro_f1(predicted, &flat));
        // The predictions come in row order: cut them into rows again.
        let mut rest = predicted;
        let predicted_rows: Vec<&[u32]> = gold
            .iter()
            .map(|g| {
                let (mine, after) = rest.split_at(g.len());
                rest = after;
                mine
            })
            .collect();
        let gold_rows: Vec<&[u32]> = gold.iter().map(Vec::as_slice).collect();
        if let Some(f1) = entity_f1(&predicted_rows, &gold_rows, &self.data.labels) {
            metrics["entity_f1"] = json!(f1);
        }
        Ok(())
    }

    pub fn run(&self, progress: &mut dyn Progress) -> Result<Finished> {
        let o = self.options;
        let train = &self.data.train;
        let steps_per_epoch = train.len().div_ceil(o.batch_size);
        let total = o.max_steps.unwrap_or(o.epochs * steps_per_epoch);
        let warmup = o.warmup(total);
        let params = self.model.params();
        let mut optimizer = AdamW::new(params, AdamWConfig { weight_decay: o.weight_decay, ..Default::default() });
        let (mut shuffle_rng, mut mask_rng) = (stream(o.seed, 1), stream(o.seed, 2));
        let mut dropout = Dropout::new(o.seed.wrapping_add(3));
        let (mut step, mut tokens, mut started) = (0usize, 0usize, Instant::now());
        let (mut window_loss, mut window_steps, mut last_window) = (0.0f64, 0usize, f64::NAN);
        let initial_eval = match self.resume {
            Some((dir, state)) => {
                state.check_data(&self.data_shape())?;
                optimizer.restore(params, dir, state.step)?;
                mask_rng.set_word_pos(state.mask_rng_position);
                dropout.set_position(state.dropout_rng_position);
                (step, tokens) = (state.step, state.tokens);
                (window_loss, window_steps) = (state.window_loss, state.window_steps);
                last_window = state.last_window_loss.unwrap_or(f64::NAN);
                started = started.checked_sub(Duration::from_secs_f64(state.seconds)).unwrap_or(started);
                state.initial_eval_loss
            }
            None if self.data.eval.is_empty() => None,
            None => Some(self.evaluate(&self.data.eval)?.0),
        };

        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut epoch = 0usize;
        'epochs: while step < total {
            // Every epoch reshuffles, also those a resumed run skips, so the order is the same as without a stop.
            order.shuffle(&mut shuffle_rng);
            let done_this_epoch = step.saturating_sub(epoch * steps_per_epoch);
            epoch += 1;
            for chunk in order.chunks(o.batch_size).skip(done_this_epoch) {
                progress.check()?;
                let rows: Vec<Row> = chunk.iter().map(|&i| train.get(i)).collect::<Result<_>>()?;
                let batch = self.batch(&rows.iter().collect::<Vec<_>>(), &mut mask_rng)?;
                let lr = linear_schedule(self.learning_rate, step, warmup, total);
                // On the compute threads, as inference is (threads::in_pool).
                let loss_value = threads::in_pool(|| -> Result<f64> {
                    let loss = self.model.loss(&batch, Some(&mut dropout))?;
                    let loss_value = loss.to_scalar::<f32>()? as f64;
                    if !loss_value.is_finite() {
                        return Err(AiError::invalid(format!("the loss became {loss_value} at step {}", step + 1))
                            .with_hint("Lower learning_rate."));
                    }
                    let mut grads = Gradients::of(params, &loss)?;
                    if o.max_grad_norm > 0.0 {
                        grads.clip(o.max_grad_norm)?;
                    }
                    optimizer.step(params, &grads, lr)?;
                    Ok(loss_value)
                })?;
                step += 1;
                tokens += batch.tokens();
                window_loss += loss_value;
                window_steps += 1;
                if step % o.log_every == 0 || step == total {
                    last_window = window_loss / window_steps as f64;
                    (window_loss, window_steps) = (0.0, 0);
                    let elapsed = started.elapsed().as_secs_f64();
                    progress.report(&StepReport {
                        step,
                        total_steps: total,
                        loss: last_window as f32,
                        learning_rate: lr,
                        tokens_per_second: tokens as f64 / elapsed.max(1e-9),
                        seconds_left: elapsed / step as f64 * (total - step) as f64,
                    });
                }
                if step >= total {
                    break 'epochs;
                }
                progress.checkpoint(step, &mut |dir| {
                    self.model.save(dir)?;
                    (self.tokenizer_files)(dir)?;
                    optimizer.save(params, dir)?;
                    TrainerState {
                        step,
                        total_steps: total,
                        tokens,
                        seconds: started.elapsed().as_secs_f64(),
                        window_loss,
                        window_steps,
                        last_window_loss: Some(last_window).filter(|l| l.is_finite()),
                        initial_eval_loss: initial_eval,
                        mask_rng_position: mask_rng.get_word_pos(),
                        dropout_rng_position: dropout.position(),
                        learning_rate: self.learning_rate,
                        data: self.data_shape(),
                    }
                    .write(dir)
                })?;
            }
        }

        let mut metrics = json!({
            "train_loss": last_window,
            "steps": step,
            "epochs": step as f64 / steps_per_epoch as f64,
            "examples": self.data.examples(),
            "train_examples": train.len(),
            "eval_examples": self.data.eval.len(),
            "skipped": self.data.skipped,
            "learning_rate": self.learning_rate,
        });
        if let Some(initial) = initial_eval {
            let (eval_loss, predicted) = self.evaluate(&self.data.eval)?;
            metrics["initial_eval_loss"] = json!(initial);
            metrics["eval_loss"] = json!(eval_loss);
            if self.objective == Objective::TextClassification {
                let eval = &self.data.eval;
                let gold: Vec<u32> =
                    (0..eval.len()).map(|i| Ok(eval.get(i)?.label.unwrap_or(0))).collect::<Result<_>>()?;
                metrics["accuracy"] = json!(accuracy(&predicted, &gold));
                metrics["macro_f1"] = json!(macro_f1(&predicted, &gold));
            } else if self.objective == Objective::TokenClassification {
                self.tag_metrics(&predicted, &mut metrics)?;
            } else {
                metrics["perplexity"] = json!(eval_loss.exp());
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        metrics["seconds"] = json!(seconds);
        metrics["tokens_per_second"] = json!(tokens as f64 / seconds.max(1e-9));
        Ok(Finished { metrics, steps: step })
    }
}
