//! The optimizer a run was configured with, its moments, and how they go
//! into and come out of a checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use sapo_core::model::{AdamWState, LlamaConfig, LlamaParams, RmspropState};
use sapo_core::optim::{AdamWParams, RmspropParams};

use super::TrainBackend;
use super::config::{OptimizerName, TrainConfig};

/// The optimizer and its state.
#[derive(Debug)]
pub enum Optimizer<B: TrainBackend> {
    /// torch's AdamW.
    AdamW(AdamWState<B>, AdamWParams),
    /// torch's RMSprop (no momentum, not centred).
    Rmsprop(RmspropState<B>, RmspropParams),
}

impl<B: TrainBackend> Optimizer<B> {
    /// A fresh optimizer of the kind and hyper-parameters `cfg` names.
    ///
    /// # Errors
    /// An allocation failure.
    pub fn new(backend: &B, cfg: &TrainConfig, config: &LlamaConfig) -> Result<Self> {
        Ok(match cfg.optimizer {
            OptimizerName::Adamw => Optimizer::AdamW(AdamWState::new(backend, config)?, cfg.adamw_params()),
            OptimizerName::Rmsprop => Optimizer::Rmsprop(RmspropState::new(backend, config)?, cfg.rmsprop_params()),
        })
    }

    /// One update of `params` by `grads` at learning rate `lr`.
    ///
    /// # Errors
    /// A backend or parameter error.
    pub fn update(&mut self, backend: &B, params: &mut LlamaParams<B>, grads: &LlamaParams<B>, lr: f64) -> Result<()> {
        match self {
            Optimizer::AdamW(state, hp) => state.update(backend, params, grads, lr, hp)?,
            Optimizer::Rmsprop(state, hp) => state.update(backend, params, grads, lr, hp)?,
        }
        Ok(())
    }

    /// AdamW's step count (0 for RMSprop, which keeps none).
    pub fn adamw_step(&self) -> u64 {
        match self {
            Optimizer::AdamW(state, _) => state.step,
            Optimizer::Rmsprop(..) => 0,
        }
    }

    /// The moments as named weight sets, as a checkpoint stores them.
    pub fn checkpoint_weights(&self) -> Vec<(&'static str, &LlamaParams<B>)> {
        match self {
            Optimizer::AdamW(moments, _) => vec![("exp_avg", &moments.exp_avg), ("exp_avg_sq", &moments.exp_avg_sq)],
            Optimizer::Rmsprop(averages, _) => vec![("square_avg", &averages.square_avg)],
        }
    }

    /// Takes the moments back from a checkpoint's weight sets.
    ///
    /// # Errors
    /// The checkpoint in `dir` lacks them.
    pub fn restore(
        &mut self,
        weights: &mut BTreeMap<String, LlamaParams<B>>,
        adamw_step: u64,
        dir: &Path,
    ) -> Result<()> {
        match self {
            Optimizer::AdamW(state, _) => {
                let (m, v) = (weights.remove("exp_avg"), weights.remove("exp_avg_sq"));
                let (Some(m), Some(v)) = (m, v) else { bail!("{}: no AdamW moments", dir.display()) };
                state.exp_avg = m;
                state.exp_avg_sq = v;
                state.step = adamw_step;
            }
            Optimizer::Rmsprop(state, _) => {
                state.square_avg =
                    weights.remove("square_avg").ok_or_else(|| anyhow!("{}: no RMSprop averages", dir.display()))?;
            }
        }
        Ok(())
    }
}
