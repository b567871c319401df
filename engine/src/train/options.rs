//! Training options from a JSON object: every key optional, unknown keys and absurd values refused
//! with a hint, so that a typo in SQL does not silently train with a default.

use crate::error::{AiError, Result};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub epochs: usize,
    /// Stops after this many optimizer steps, whatever `epochs` says.
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    /// None: 5e-4 when pretraining, 5e-5 when fine-tuning.
    pub learning_rate: Option<f64>,
    pub warmup_steps: Option<usize>,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    /// 0 turns clipping off.
    pub max_grad_norm: f64,
    pub mask_probability: f64,
    pub seed: u64,
    pub test_size: f64,
    pub log_every: usize,
    pub max_length: usize,
    /// Dropout of a new model (hidden and attention); a fine-tuned model keeps its config's.
    pub dropout: Option<f64>,
    /// A background job saves a checkpoint every this many steps (None: every few minutes).
    pub checkpoint_every: Option<usize>,
    /// Text put before every source of a seq2seq run (T5's "translate English to German: "), recorded in the
    /// model's config so that ai_translate puts it there too.
    pub source_prefix: Option<String>,
    // Model size, for pretraining only (None: the defaults below).
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub layers: Option<usize>,
    pub heads: Option<usize>,
    pub intermediate_size: Option<usize>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 3,
            max_steps: None,
            batch_size: 16,
            learning_rate: None,
            warmup_steps: None,
            warmup_ratio: 0.0,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            mask_probability: 0.15,
            seed: 42,
            test_size: 0.1,
            log_every: 50,
            max_length: 128,
            dropout: None,
            checkpoint_every: None,
            source_prefix: None,
            vocab_size: None,
            hidden_size: None,
            layers: None,
            heads: None,
            intermediate_size: None,
        }
    }
}

/// The shortest sequences training takes: room for the special tokens and a few words.
pub const MIN_MAX_LENGTH: u64 = 8;

const KEYS: &[&str] = &[
    "epochs",
    "max_steps",
    "batch_size",
    "learning_rate",
    "warmup_steps",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "mask_probability",
    "seed",
    "test_size",
    "log_every",
    "max_length",
    "dropout",
    "checkpoint_every",
    "source_prefix",
    "vocab_size",
    "hidden_size",
    "layers",
    "heads",
    "intermediate_size",
];

/// The options that shape a new model; fine-tuning keeps the base model's shape.
pub const MODEL_SIZE_KEYS: &[&str] = &["vocab_size", "hidden_size", "layers", "heads", "intermediate_size"];

fn int(map: &Map<String, Value>, key: &str, min: u64, max: u64) -> Result<Option<usize>> {
    let Some(v) = map.get(key).filter(|v| !v.is_null()) else { return Ok(None) };
    // 3.0 is accepted as 3: JSON built in SQL often carries numerics.
    let n = v.as_u64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64));
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n as usize)),
        _ => Err(AiError::invalid(format!("option {key} must be a whole number from {min} to {max}, not {v}"))),
    }
}

/// A number in a range; `open_low`/`open_high` exclude the ends.
fn real(
    map: &Map<String, Value>,
    key: &str,
    low: f64,
    high: f64,
    open_low: bool,
    open_high: bool,
) -> Result<Option<f64>> {
    let Some(v) = map.get(key).filter(|v| !v.is_null()) else { return Ok(None) };
    let ok = |x: f64| {
        x.is_finite() && if open_low { x > low } else { x >= low } && if open_high { x < high } else { x <= high }
    };
    match v.as_f64() {
        Some(x) if ok(x) => Ok(Some(x)),
        _ => {
            let (l, h) = (if open_low { "(" } else { "[" }, if open_high { ")" } else { "]" });
            Err(AiError::invalid(format!("option {key} must be a number in {l}{low}, {high}{h}, not {v}")))
        }
    }
}

impl TrainOptions {
    pub fn from_json(v: &Value) -> Result<Self> {
        let empty = Map::new();
        let map = match v {
            Value::Null => &empty,
            Value::Object(map) => map,
            other => {
                return Err(AiError::invalid(format!("training options must be a JSON object, not {other}"))
                    .with_hint("For example '{\"epochs\": 3, \"batch_size\": 16}'."))
            }
        };
        if let Some(unknown) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(AiError::invalid(format!("unknown training option \"{unknown}\""))
                .with_hint(format!("Options: {}.", KEYS.join(", "))));
        }
        let d = TrainOptions::default();
        let o = TrainOptions {
            epochs: int(map, "epochs", 1, 10_000)?.unwrap_or(d.epochs),
            max_steps: int(map, "max_steps", 1, 100_000_000)?,
            batch_size: int(map, "batch_size", 1, 4096)?.unwrap_or(d.batch_size),
            learning_rate: real(map, "learning_rate", 0.0, 1.0, true, false)?,
            warmup_steps: int(map, "warmup_steps", 0, 100_000_000)?,
            warmup_ratio: real(map, "warmup_ratio", 0.0, 1.0, false, true)?.unwrap_or(d.warmup_ratio),
            weight_decay: real(map, "weight_decay", 0.0, 1.0, false, false)?.unwrap_or(d.weight_decay),
            max_grad_norm: real(map, "max_grad_norm", 0.0, 1e6, false, false)?.unwrap_or(d.max_grad_norm),
            mask_probability: real(map, "mask_probability", 0.0, 1.0, true, true)?.unwrap_or(d.mask_probability),
            seed: int(map, "seed", 0, u64::MAX)?.map_or(d.seed, |s| s as u64),
            test_size: real(map, "test_size", 0.0, 1.0, false, true)?.unwrap_or(d.test_size),
            log_every: int(map, "log_every", 1, 100_000_000)?.unwrap_or(d.log_every),
            max_length: int(map, "max_length", MIN_MAX_LENGTH, 8192)?.unwrap_or(d.max_length),
            dropout: real(map, "dropout", 0.0, 1.0, false, true)?,
            checkpoint_every: int(map, "checkpoint_every", 1, 100_000_000)?,
            source_prefix: match map.get("source_prefix") {
                None | Some(Value::Null) => None,
                Some(Value::String(prefix)) => Some(prefix.clone()),
                Some(other) => {
                    return Err(AiError::invalid(format!("option source_prefix must be a string, not {other}")))
                }
            },
            vocab_size: int(map, "vocab_size", 100, 1_000_000)?,
            hidden_size: int(map, "hidden_size", 4, 8192)?,
            layers: int(map, "layers", 1, 96)?,
            heads: int(map, "heads", 1, 128)?,
            intermediate_size: int(map, "intermediate_size", 1, 65_536)?,
        };
        if map.contains_key("warmup_steps") && map.contains_key("warmup_ratio") {
            return Err(AiError::invalid("give warmup_steps or warmup_ratio, not both"));
        }
        let (hidden, heads) = (o.hidden_size(), o.heads());
        if !hidden.is_multiple_of(heads) {
            return Err(AiError::invalid(format!("hidden_size {hidden} is not a multiple of heads {heads}"))
                .with_hint(
                    "Each attention head gets hidden_size / heads dimensions, e.g. hidden_size 64 with 2 heads.",
                ));
        }
        // Each bound alone allows a model no machine holds: check what they make together, before any row is read.
        let shape = Shape {
            parameters: None,
            vocab_size: o.vocab_size(),
            hidden_size: hidden,
            layers: o.layers(),
            heads,
            intermediate_size: o.intermediate_size(),
        };
        shape.check_memory(&o)?;
        Ok(o)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size.unwrap_or(2000)
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size.unwrap_or(64)
    }

    pub fn layers(&self) -> usize {
        self.layers.unwrap_or(2)
    }

    pub fn heads(&self) -> usize {
        self.heads.unwrap_or(2)
    }

    pub fn intermediate_size(&self) -> usize {
        self.intermediate_size.unwrap_or(4 * self.hidden_size())
    }

    /// The model-size options that were given, which fine-tuning refuses.
    pub fn model_size_given(&self) -> Vec<&'static str> {
        let given = [self.vocab_size, self.hidden_size, self.layers, self.heads, self.intermediate_size];
        MODEL_SIZE_KEYS.iter().zip(given).filter(|(_, v)| v.is_some()).map(|(k, _)| *k).collect()
    }

    /// Warmup steps out of `total`.
    pub fn warmup(&self, total: usize) -> usize {
        self.warmup_steps.unwrap_or_else(|| (self.warmup_ratio * total as f64).ceil() as usize)
    }
}

/// What the memory of a training run depends on.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// The parameters of a base model's file, when there is one; the sizes below give an estimate too.
    pub parameters: Option<usize>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate_size: usize,
}

impl Shape {
    /// Bytes a run holds at its peak, roughly: f32 weights, their gradients and AdamW's two moments (16 bytes a
    /// parameter), and what a step keeps for its backward pass at the batch size and max_length: each layer's
    /// hidden states, feed-forward activations and attention probabilities, and the output logits.
    pub fn training_bytes(&self, options: &TrainOptions) -> usize {
        use crate::budget::product as p;
        let (h, i, layers) = (self.hidden_size, self.intermediate_size, self.layers);
        // What the sizes make, or what the file holds if that is more (a config can understate a model, and a
        // header can understate what a config will build).
        let per_layer = p(&[4, h, h]).saturating_add(p(&[2, h, i]));
        let sized = p(&[self.vocab_size, h])
            .saturating_add(p(&[options.max_length, h]))
            .saturating_add(p(&[layers, per_layer]));
        let parameters = self.parameters.unwrap_or(0).max(sized);
        let tokens = p(&[options.batch_size, options.max_length]);
        let per_layer = p(&[tokens, h.saturating_mul(12).saturating_add(i.saturating_mul(3))]).saturating_add(p(&[
            options.batch_size,
            self.heads,
            options.max_length,
            options.max_length,
            3,
        ]));
        let logits = p(&[tokens, self.vocab_size, 3]);
        p(&[parameters, 16]).saturating_add(p(&[layers, per_layer, 4])).saturating_add(p(&[logits, 4]))
    }

    /// 53200 before anything is built when the run would not fit the budget of one call.
    pub fn check_memory(&self, options: &TrainOptions) -> Result<()> {
        crate::budget::check(self.training_bytes(options), || {
            format!(
                "training a model of hidden_size {}, {} layers and a vocabulary of {} with batch_size {} and max_length {}",
                self.hidden_size, self.layers, self.vocab_size, options.batch_size, options.max_length
            )
        })
    }
}

/// The shape of a new model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSize {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate_size: usize,
    /// Longest input in tokens.
    pub positions: usize,
    pub dropout: f64,
}

impl ModelSize {
    /// The options' size with the vocabulary the tokenizer actually learnt.
    pub fn new(o: &TrainOptions, vocab_size: usize) -> Self {
        ModelSize {
            vocab_size,
            hidden_size: o.hidden_size(),
            layers: o.layers(),
            heads: o.heads(),
            intermediate_size: o.intermediate_size(),
            positions: o.max_length,
            dropout: o.dropout.unwrap_or(0.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    #[test]
    fn defaults_and_overrides() {
        let o = TrainOptions::from_json(&json!({"epochs": 5, "learning_rate": 1e-3, "seed": 7.0})).unwrap();
        assert_eq!((o.epochs, o.learning_rate, o.seed, o.batch_size), (5, Some(1e-3), 7, 16));
        assert_eq!(TrainOptions::from_json(&Value::Null).unwrap(), TrainOptions::default());
        assert_eq!(o.intermediate_size(), 256);
    }

    #[test]
    fn refuses_bad_values() {
        for bad in [
            json!({"batch_size": 0}),
            json!({"learning_rate": -1}),
            json!({"mask_probability": 1.0}),
            json!({"mask_probability": 0}),
            json!({"test_size": 1}),
            json!({"epochs": "three"}),
            json!({"epoch": 3}),
            json!({"hidden_size": 30, "heads": 4}),
            json!([1, 2]),
        ] {
            let e = TrainOptions::from_json(&bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidParameter, "{bad}");
        }
        let e = TrainOptions::from_json(&json!({"epoch": 3})).unwrap_err();
        assert!(e.hint.unwrap().contains("epochs"));
    }
}
