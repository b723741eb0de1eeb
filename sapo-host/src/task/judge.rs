//! Scoring a response to a task prompt, and summing scores over an eval set.
//!
//! A response is compared after trimming surrounding whitespace and one
//! trailing period ("95." is right); otherwise it must be exactly the
//! answer. Partial credit rewards near misses so that an eval can show
//! progress before answers come out exactly right:
//!
//! | kind | score of a wrong response |
//! |---|---|
//! | `add`, `subtract`, `count` | 0 |
//! | `sort` | fraction of positions right, if the numbers are exactly the asked ones; else 0 |
//! | `uppercase`, `first_letters` | fraction of positions right (space-separated), over the longer list |
//! | `join` | half the fraction of words right, reading commas and spaces as separators |
//!
//! **Invariant**: `score == 1.0` exactly when `correct`.

use std::collections::BTreeMap;

use super::TaskKind;
use super::template::Inputs;

/// The judge's view of one response.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The kind the prompt was recognised as.
    pub kind: TaskKind,
    /// The answer that scores 1, for logs of what went wrong.
    pub expected: String,
    /// Whether the response is the answer (after trimming whitespace and a trailing period).
    pub correct: bool,
    /// Credit in [0, 1]: 1 exactly when `correct`, partial credit per kind (module table).
    pub score: f64,
}

/// Scores `response` to `prompt`; `None` when the prompt is not in one of
/// the task templates (surrounding whitespace aside), so foreign eval data is
/// reported rather than scored as wrong.
///
/// ```
/// use sapo_host::task::judge;
/// assert!(judge("What is 37 + 58?", " 95.\n").unwrap().correct);
/// assert_eq!(judge("Write in capital letters: green apple", "GREEN apple").unwrap().score, 0.5);
/// assert!(judge("What is the capital of France?", "Paris").is_none());
/// ```
pub fn judge(prompt: &str, response: &str) -> Option<Verdict> {
    let inputs = Inputs::parse(prompt)?;
    let expected = inputs.answer();
    let trimmed = response.trim();
    let response = trimmed.strip_suffix('.').unwrap_or(trimmed);
    let correct = response == expected;
    let score = if correct { 1.0 } else { partial_credit(&inputs, &expected, response) };
    Some(Verdict { kind: inputs.kind(), expected, correct, score })
}

/// The answer [`judge`] scores 1, or `None` for a prompt outside the templates.
/// Lets SAPO and SPIN data be built from prompts alone.
///
/// ```
/// assert_eq!(sapo_host::task::reference_answer("Sort in ascending order: 12 5 9").as_deref(), Some("5 9 12"));
/// ```
pub fn reference_answer(prompt: &str) -> Option<String> {
    Inputs::parse(prompt).map(|inputs| inputs.answer())
}

/// Credit for a response that is not exactly the answer; always below 1.
fn partial_credit(inputs: &Inputs, expected: &str, response: &str) -> f64 {
    let expected_items: Vec<&str> = expected.split(' ').collect();
    let response_items: Vec<&str> = response.split(' ').collect();
    match inputs {
        Inputs::Add { .. } | Inputs::Subtract { .. } | Inputs::Count { .. } => 0.0,
        Inputs::Sort { .. } => {
            let mut expected_sorted = expected_items.clone();
            let mut response_sorted = response_items.clone();
            expected_sorted.sort_unstable();
            response_sorted.sort_unstable();
            // Same multiset but not the answer: the order is wrong somewhere,
            // so at least two positions differ and the fraction is below 1.
            if expected_sorted == response_sorted { positional_fraction(&expected_items, &response_items) } else { 0.0 }
        }
        // Differing strings split on the same separator give differing lists,
        // so the fraction is below 1.
        Inputs::Uppercase { .. } | Inputs::FirstLetters { .. } => positional_fraction(&expected_items, &response_items),
        Inputs::Join { words } => {
            let expected_words: Vec<&str> = words.iter().map(String::as_str).collect();
            let response_words: Vec<&str> = response.split([',', ' ']).filter(|word| !word.is_empty()).collect();
            0.5 * positional_fraction(&expected_words, &response_words)
        }
    }
}

/// Positions where the lists agree, over the longer list's length (so extra
/// or missing items cost credit); 0 when both are empty.
fn positional_fraction(expected: &[&str], got: &[&str]) -> f64 {
    let longer = expected.len().max(got.len());
    if longer == 0 {
        return 0.0;
    }
    let n_matching = expected.iter().zip(got).filter(|(want, have)| want == have).count();
    n_matching as f64 / longer as f64
}

/// Totals of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct KindSummary {
    /// Verdicts of this kind.
    pub n: usize,
    /// How many were correct.
    pub correct: usize,
    /// Mean score; 0 when `n` is 0.
    pub mean_score: f64,
}

/// Totals over a set of verdicts, as `sapo eval` reports them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    /// Verdicts counted.
    pub n: usize,
    /// How many were correct.
    pub correct: usize,
    /// `correct / n`; 0 when `n` is 0 (nothing was right).
    pub accuracy: f64,
    /// Mean score; 0 when `n` is 0.
    pub mean_score: f64,
    /// The same per kind, for the kinds present, in [`TaskKind`] order.
    pub per_kind: BTreeMap<TaskKind, KindSummary>,
}

/// Sums `verdicts`; scores are added in f64 in the given order.
///
/// ```
/// use sapo_host::task::{TaskKind, judge, score_summary};
/// let verdicts = [judge("What is 2 + 2?", "4").unwrap(), judge("What is 2 + 2?", "5").unwrap()];
/// let summary = score_summary(&verdicts);
/// assert_eq!((summary.n, summary.correct, summary.accuracy), (2, 1, 0.5));
/// assert_eq!(summary.per_kind[&TaskKind::Add].correct, 1);
/// ```
pub fn score_summary(verdicts: &[Verdict]) -> Summary {
    let mut per_kind: BTreeMap<TaskKind, (usize, usize, f64)> = BTreeMap::new();
    for verdict in verdicts {
        let totals = per_kind.entry(verdict.kind).or_default();
        totals.0 += 1;
        totals.1 += usize::from(verdict.correct);
        totals.2 += verdict.score;
    }
    let n = verdicts.len();
    let correct = per_kind.values().map(|totals| totals.1).sum();
    let score_sum: f64 = verdicts.iter().map(|verdict| verdict.score).sum();
    let ratio = |numerator: f64, count: usize| if count == 0 { 0.0 } else { numerator / count as f64 };
    Summary {
        n,
        correct,
        accuracy: ratio(correct as f64, n),
        mean_score: ratio(score_sum, n),
        per_kind: per_kind
            .into_iter()
            .map(|(kind, (n, correct, score_sum))| (kind, KindSummary { n, correct, mean_score: ratio(score_sum, n) }))
            .collect(),
    }
}
