//! What a finished run reports: steps, time, the first and last tenth of
//! the training curves, and the held-out figures before and after.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run directory.
    pub output_dir: PathBuf,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Mean loss over the first and the last tenth of the steps.
    pub loss_first_last: Option<(f64, f64)>,
    /// Mean `rewards/accuracies` over the first and the last tenth.
    pub accuracy_first_last: Option<(f64, f64)>,
    /// Mean `rewards/margins` over the first and the last tenth.
    pub margin_first_last: Option<(f64, f64)>,
    /// Held-out pairs: share where the model ranks chosen above rejected,
    /// before and after.
    pub eval_pair_accuracy: Option<(f64, f64)>,
    /// Held-out pairs after training, against the starting model: reward
    /// accuracy and mean margin β·z.
    pub eval_rewards: Option<(f64, f64)>,
    /// Task accuracy before and after training, if evaluated.
    pub eval_before_after: Option<(f64, f64)>,
    /// Training tokens per second.
    pub tokens_per_second: f64,
}

/// The means of `key` over the first and the last tenth of the steps.
pub(crate) fn mean_of_tenths(history: &[BTreeMap<String, f64>], key: &str) -> Option<(f64, f64)> {
    let values: Vec<f64> = history.iter().filter_map(|m| m.get(key).copied()).filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return None;
    }
    let tenth = (values.len() / 10).max(1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Some((mean(&values[..tenth]), mean(&values[values.len() - tenth..])))
}
