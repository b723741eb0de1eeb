//! The shipped task: short instructions whose answers a program can check,
//! their generator, their judge, and the files a tiny model is trained on.
//!
//! The task exists so that sapo can be trained and evaluated end to end on a
//! machine without downloads: a model small enough to train in minutes can
//! learn it, and [`judge`] measures how well it did, so a preference method
//! can be seen to help (or not) in numbers rather than by reading samples.
//!
//! # Kinds ([`TaskKind`])
//!
//! Each kind has one fixed English prompt template, so the judge recovers the
//! inputs from the prompt text alone (`template.rs` both writes and parses it).
//!
//! | kind | prompt | answer |
//! |---|---|---|
//! | `add` | `What is 37 + 58?` | `95` |
//! | `subtract` | `What is 58 - 37?` | `21` |
//! | `sort` | `Sort in ascending order: 12 5 9` | `5 9 12` |
//! | `uppercase` | `Write in capital letters: green apple` | `GREEN APPLE` |
//! | `count` | `How many words: red fox runs fast` | `4` |
//! | `first_letters` | `Write the first letter of each word: blue sky rain` | `b s r` |
//! | `join` | `Join the words with commas: red fox` | `red, fox` |
//!
//! `join` is the IFEval-like formatting constraint ("separate with commas"):
//! the words are given, only the format is asked for.
//!
//! # Parts
//!
//! * `generate.rs`: [`generate_examples`], a seeded generator with a rule-made
//!   wrong answer per example (the `rejected` of a preference pair).
//! * `judge.rs`: [`judge`] scores any response to a task prompt, with partial
//!   credit; [`score_summary`] aggregates verdicts for `sapo eval`.
//! * `files.rs`: the shipped files ([`task_files`]): TRL conversational JSONL
//!   ([`write_jsonl`]) and the base model's `config.json`.
//! * `tokenizer.rs`: a byte-level BPE trained on the task text with a ChatML
//!   template ([`train_tokenizer`]).
//! * `shipped.rs`: the files the defaults read, embedded in the binary and
//!   written on first use to a per-version cache directory
//!   ([`shipped::materialise`]), so an installed `sapo` needs no clone.
//!
//! **Architecture Invariant**: everything here is a pure function of
//! [`TaskConfig`]; `fixtures/task/` is what [`task_files`] returns for the
//! default config, and a test keeps the two equal.
//!
//! ```
//! use sapo_host::task::{TaskKind, generate_examples, judge};
//! let examples = generate_examples(7, 14);
//! for example in &examples {
//!     assert_eq!(judge(&example.prompt, &example.answer).map(|verdict| verdict.score), Some(1.0));
//!     assert!(!judge(&example.prompt, &example.rejected).unwrap().correct);
//! }
//! let verdict = judge("Sort in ascending order: 12 5 9", "5 12 9").unwrap();
//! assert_eq!((verdict.kind, verdict.correct), (TaskKind::Sort, false));
//! assert!((verdict.score - 1.0 / 3.0).abs() < 1e-12); // only the 5 is in place
//! ```

mod files;
mod generate;
mod judge;
pub mod shipped;
mod template;
mod tokenizer;

pub use files::{JsonlShape, TaskConfig, TaskFile, base_config_json, generation_config_json, task_files, write_jsonl};
pub use generate::{WORDS, generate_examples};
pub use judge::{KindSummary, Summary, Verdict, judge, reference_answer, score_summary};
pub use tokenizer::{CHAT_TEMPLATE, SPECIAL_TOKENS, tokenizer_config_json, train_tokenizer};

/// Which instruction an example is. The order here is the generator's
/// round-robin order and the order of [`Summary::per_kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskKind {
    /// `What is a + b?` with a, b in 0..=99.
    Add,
    /// `What is a - b?` with 0 ≤ b ≤ a ≤ 99, so the answer is never negative.
    Subtract,
    /// `Sort in ascending order: …` with 3–5 distinct numbers in 0..=99.
    Sort,
    /// `Write in capital letters: …` with 1–3 words.
    Uppercase,
    /// `How many words: …` with 2–6 words.
    Count,
    /// `Write the first letter of each word: …` with 2–5 words; letters space-separated.
    FirstLetters,
    /// `Join the words with commas: …` with 2–3 words; joined by `", "`.
    Join,
}

impl TaskKind {
    /// Every kind, in declaration order.
    pub const ALL: [TaskKind; 7] = [
        TaskKind::Add,
        TaskKind::Subtract,
        TaskKind::Sort,
        TaskKind::Uppercase,
        TaskKind::Count,
        TaskKind::FirstLetters,
        TaskKind::Join,
    ];

    /// The snake_case name used in reports and metrics (`first_letters`).
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Add => "add",
            TaskKind::Subtract => "subtract",
            TaskKind::Sort => "sort",
            TaskKind::Uppercase => "uppercase",
            TaskKind::Count => "count",
            TaskKind::FirstLetters => "first_letters",
            TaskKind::Join => "join",
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One generated example: a prompt, its one correct answer, and a plausible
/// wrong answer made by a rule, so that preference methods have a pair
/// without sampling a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskExample {
    /// Which instruction this is.
    pub kind: TaskKind,
    /// The user message, in the kind's template.
    pub prompt: String,
    /// The exact answer [`judge`] scores 1.
    pub answer: String,
    /// A near miss [`judge`] scores incorrect: arithmetic off by 1–10, two
    /// list items swapped, wrong capitalisation, a count off by one, a wrong
    /// letter, or words joined without the asked separator.
    pub rejected: String,
}
