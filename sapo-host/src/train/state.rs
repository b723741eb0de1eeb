//! Everything of a run that is not weights, as a checkpoint's `state.bin`
//! holds it (postcard), and the check that a resumed run's config may
//! continue the checkpoint's.
//!
//! [`RunState`] is the file format: flat and stable, so checkpoints of
//! earlier versions still resume. The trainer keeps the same facts typed,
//! per method; [`MethodCheckpoint`] is the part each method writes and reads.

use std::collections::BTreeMap;

use sapo_core::replay::ReplayBuffer;
use sapo_core::rng::SapoRng;

use super::config::TrainConfig;
use super::methods::iterative::IterationProgress;
use super::methods::sapo::ReplayItem;
use super::report::ReporterState;

/// The run state of a checkpoint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    pub(crate) config: TrainConfig,
    pub(crate) step: u64,
    pub(crate) phase_step: u64,
    pub(crate) rng: SapoRng,
    pub(crate) sample_stream: u64,
    pub(crate) replay: Option<ReplayBuffer<ReplayItem>>,
    pub(crate) ref_cache: Vec<((usize, u8), f32)>,
    pub(crate) history: Vec<BTreeMap<String, f64>>,
    pub(crate) eval_initial: Option<Vec<f32>>,
    pub(crate) eval_before: Option<(f64, Option<f64>)>,
    pub(crate) adamw_step: u64,
    pub(crate) tokens_seen: u64,
    pub(crate) train_seconds: f64,
    pub(crate) skipped_steps: u64,
    pub(crate) spin: Option<IterationProgress>,
    pub(crate) reporter: ReporterState,
}

impl RunState {
    /// The method's part of the state.
    pub fn method(&self) -> MethodCheckpoint {
        MethodCheckpoint { replay: self.replay.clone(), ref_cache: self.ref_cache.clone(), spin: self.spin.clone() }
    }
}

/// What a method keeps in a checkpoint: each fills the fields it has and
/// leaves the others empty.
#[derive(Debug, Clone, Default)]
pub struct MethodCheckpoint {
    /// SAPO's replay buffer.
    pub replay: Option<ReplayBuffer<ReplayItem>>,
    /// Reference log-probs: `(pair, 0 | 1)` for the chosen and rejected
    /// side of fixed pairs, `(example, 0)` for SAPO's chosen responses.
    pub ref_cache: Vec<((usize, u8), f32)>,
    /// The iteration of SPIN, SPPO or AIPO and its pairs.
    pub spin: Option<IterationProgress>,
}

/// Config fields that do not change a run's numbers: they may differ
/// between a checkpoint and its resumption.
pub const HARMLESS_FIELDS: &[&str] = &[
    "output_dir",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "zero_margin_warn_steps",
    "eval_max_new_tokens",
    "eval_steps",
    // A run may continue on another device (its numbers then differ
    // from an uninterrupted run's by the backends' rounding).
    "device",
];

/// The fields where two configs differ, as `key: old → new`, ignoring [`HARMLESS_FIELDS`].
pub fn config_differences(old: &TrainConfig, new: &TrainConfig) -> Vec<String> {
    let (Ok(old), Ok(new)) = (toml::Table::try_from(old), toml::Table::try_from(new)) else {
        return vec!["(the configs do not serialise)".into()];
    };
    new.iter()
        .filter(|(key, _)| !HARMLESS_FIELDS.contains(&key.as_str()))
        .filter(|(key, value)| old.get(*key) != Some(*value))
        .map(|(key, value)| format!("{key}: {} → {value}", old.get(key).map_or("(none)".into(), ToString::to_string)))
        .collect()
}
