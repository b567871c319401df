//! Gradients, global-norm clipping and AdamW as torch does them. candle_nn's AdamW decays every
//! parameter alike; HF Trainer decays neither biases nor LayerNorm weights, hence this one.

use crate::error::{AiError, Result};
use crate::kernels::fused::{adamw_update, AdamWStep};
use crate::train::checkpoint::{self, Moments};
use crate::train::params::Params;
use candle_core::Tensor;
use std::path::Path;

/// One gradient per parameter, in the order of `Params::list` (None: the loss does not depend on it).
pub struct Gradients(pub Vec<Option<Tensor>>);

impl Gradients {
    /// Back-propagates `loss` to every parameter.
    pub fn of(params: &Params, loss: &Tensor) -> Result<Self> {
        let store = loss.backward()?;
        Ok(Gradients(params.list.iter().map(|p| store.get(p.var.as_tensor()).map(Tensor::detach)).collect()))
    }

    /// Euclidean norm of each gradient (0 for none).
    pub fn norms(&self) -> Result<Vec<f64>> {
        self.0
            .iter()
            .map(|g| match g {
                Some(g) => Ok((g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64).sqrt()),
                None => Ok(0.0),
            })
            .collect()
    }

    /// Scales all gradients so that their global norm is at most `max_norm`, as
    /// torch.nn.utils.clip_grad_norm_ does; returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let total = self.norms()?.iter().map(|n| n * n).sum::<f64>().sqrt();
        if !total.is_finite() {
            return Err(AiError::invalid("the gradients overflowed (the loss became infinite or NaN)")
                .with_hint("Lower learning_rate or keep max_grad_norm at 1."));
        }
        let coef = max_norm / (total + 1e-6);
        if max_norm > 0.0 && coef < 1.0 {
            for g in self.0.iter_mut().flatten() {
                *g = (&*g * coef)?;
            }
        }
        Ok(total)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// torch.optim.AdamW: decoupled weight decay, bias-corrected moments.
pub struct AdamW {
    config: AdamWConfig,
    step: i32,
    /// First and second moments per parameter, created at its first gradient.
    moments: Vec<Option<Moments>>,
}

impl AdamW {
    pub fn new(params: &Params, config: AdamWConfig) -> Self {
        AdamW { config, step: 0, moments: params.list.iter().map(|_| None).collect() }
    }

    /// Writes the moments into a checkpoint directory.
    pub fn save(&self, params: &Params, dir: &Path) -> Result<()> {
        checkpoint::write_moments(
            params.list.iter().map(|p| p.name.as_str()).zip(self.moments.iter().map(Option::as_ref)),
            dir,
        )
    }

    /// Takes the moments back from a checkpoint written after `steps` steps.
    pub fn restore(&mut self, params: &Params, dir: &Path, steps: usize) -> Result<()> {
        self.moments = checkpoint::read_moments(params, dir)?;
        self.step = steps as i32;
        Ok(())
    }

    pub fn step(&mut self, params: &Params, grads: &Gradients, lr: f64) -> Result<()> {
        let c = self.config;
        self.step += 1;
        for ((param, grad), moments) in params.list.iter().zip(&grads.0).zip(&mut self.moments) {
            let Some(g) = grad else { continue };
            let constants = AdamWStep {
                one_minus_beta1: (1.0 - c.beta1) as f32,
                beta2: c.beta2 as f32,
                one_minus_beta2: (1.0 - c.beta2) as f32,
                eps: c.eps as f32,
                step_size: (lr / (1.0 - c.beta1.powi(self.step))) as f32,
                bias_correction2_sqrt: (1.0 - c.beta2.powi(self.step)).sqrt() as f32,
                decay: if param.decay { (1.0 - lr * c.weight_decay) as f32 } else { 1.0 },
            };
            let [p, m, v] = adamw_update(param.var.as_tensor(), g, moments.as_ref(), &constants)?;
            param.var.set(&p)?;
            *moments = Some((m, v));
        }
        Ok(())
    }
}

/// transformers' linear schedule: warmup from 0, then linear decay to 0 at `total`.
/// `step` counts optimizer steps already taken (the first step uses step 0).
pub fn linear_schedule(base: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    base * ((total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::linear_schedule;

    #[test]
    fn schedule_matches_transformers() {
        // get_linear_schedule_with_warmup(opt, 2, 10) over steps 0..10
        let lrs: Vec<f64> = (0..10).map(|s| linear_schedule(1.0, s, 2, 10)).collect();
        assert_eq!(lrs, vec![0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]);
        assert_eq!(linear_schedule(1.0, 0, 0, 4), 1.0);
    }
}
