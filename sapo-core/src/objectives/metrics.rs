//! The named metrics an objective reports for one step.

use alloc::vec::Vec;

/// An ordered list of `(name, value)` metrics, named as TRL logs them
/// (`rewards/chosen`, `logps/rejected`, `nll_loss`, …), so users' dashboards
/// work unchanged.
///
/// ```
/// use sapo_core::objectives::Metrics;
/// let mut metrics = Metrics::with_capacity(1);
/// metrics.push("rewards/margins", 0.25_f32);
/// assert_eq!(metrics.get("rewards/margins"), Some(0.25));
/// assert_eq!(metrics.iter().count(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metrics<T> {
    entries: Vec<(&'static str, T)>,
}

impl<T: Copy> Metrics<T> {
    /// An empty list with room for `capacity` metrics.
    pub fn with_capacity(capacity: usize) -> Self {
        Metrics { entries: Vec::with_capacity(capacity) }
    }

    /// Appends a metric (a later metric with the same name shadows nothing:
    /// names are unique by construction in sapo).
    pub fn push(&mut self, name: &'static str, value: T) {
        self.entries.push((name, value));
    }

    /// The value of the metric called `name`, if reported.
    pub fn get(&self, name: &str) -> Option<T> {
        self.entries.iter().find(|(entry, _)| *entry == name).map(|&(_, value)| value)
    }

    /// All metrics in the order they were reported.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, T)> + '_ {
        self.entries.iter().copied()
    }

    /// How many metrics there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
