//! Which examples each optimizer step takes, as transformers' Trainer
//! counts them, and the learning-rate schedule of a phase.

use anyhow::Result;
use sapo_core::optim::LrSchedule;
use sapo_core::rng::SapoRng;

use super::TrainBackend;
use super::config::TrainConfig;
use super::session::Session;

/// A permutation of `0..n` for `epoch` (identity when not shuffling).
fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = SapoRng::from_seed_and_stream(seed, 0x5eed_0000 + epoch);
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1).unwrap_or(0) as usize;
            order.swap(i, j);
        }
    }
    order
}

/// Which examples each micro-batch of each step takes: `ceil(n / B)`
/// batches per epoch (the last may be short), `gradient_accumulation_steps`
/// batches per optimizer step.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    n: usize,
    batch: usize,
    accumulation: usize,
    seed: u64,
    shuffle: bool,
    /// Optimizer steps of the phase: `max_steps`, or the epochs' worth.
    pub total_steps: u64,
}

impl BatchPlan {
    /// The plan over `n` examples.
    pub fn new(cfg: &TrainConfig, n: usize) -> Self {
        let mut plan = BatchPlan {
            n,
            batch: cfg.per_device_train_batch_size,
            accumulation: cfg.gradient_accumulation_steps,
            seed: cfg.seed,
            shuffle: cfg.shuffle,
            total_steps: 0,
        };
        plan.total_steps =
            if cfg.max_steps > 0 { cfg.max_steps } else { plan.steps_per_epoch() * cfg.num_train_epochs };
        plan
    }

    fn steps_per_epoch(&self) -> u64 {
        ((self.n.div_ceil(self.batch) / self.accumulation).max(1)) as u64
    }

    /// The micro-batches of step `step` (0-based) and the fractional epoch.
    pub fn micro_batches(&self, step: u64) -> (Vec<Vec<usize>>, f64) {
        let per_epoch = self.steps_per_epoch();
        let epoch = step / per_epoch;
        let order = epoch_order(self.n, self.seed, epoch, self.shuffle);
        let first = (step % per_epoch) as usize * self.accumulation;
        let batches = (first..first + self.accumulation)
            .map(|b| order[(b * self.batch).min(self.n)..((b + 1) * self.batch).min(self.n)].to_vec())
            .filter(|batch| !batch.is_empty())
            .collect();
        (batches, (step + 1) as f64 / per_epoch as f64)
    }
}

/// A stretch of training with one plan and one schedule: the whole run, or
/// one iteration of SPIN, SPPO or AIPO.
#[derive(Debug, Clone)]
pub struct Phase {
    /// The examples of each step.
    pub plan: BatchPlan,
    /// The learning rate of each step.
    pub schedule: LrSchedule,
}

impl Phase {
    /// The phase over `n` examples.
    ///
    /// # Errors
    /// A warm-up ratio sapo-core refuses.
    pub fn new<B: TrainBackend>(session: &Session<B>, n: usize) -> Result<Self> {
        let plan = BatchPlan::new(&session.cfg, n);
        let schedule = session.lr_schedule(plan.total_steps)?;
        Ok(Phase { plan, schedule })
    }

    /// Whether the session has taken every step of the phase.
    pub fn is_done<B: TrainBackend>(&self, session: &Session<B>) -> bool {
        session.phase_step >= self.plan.total_steps
    }
}
