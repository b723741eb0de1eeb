//! The prompt templates, written and parsed in one place so the generator and
//! the judge cannot disagree about them.

use super::TaskKind;

const SORT_PREFIX: &str = "Sort in ascending order: ";
const UPPERCASE_PREFIX: &str = "Write in capital letters: ";
const COUNT_PREFIX: &str = "How many words: ";
const FIRST_LETTERS_PREFIX: &str = "Write the first letter of each word: ";
const JOIN_PREFIX: &str = "Join the words with commas: ";

/// What a prompt asks about: the kind and its inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Inputs {
    Add { left: u32, right: u32 },
    Subtract { left: u32, right: u32 },
    Sort { numbers: Vec<u32> },
    Uppercase { words: Vec<String> },
    Count { words: Vec<String> },
    FirstLetters { words: Vec<String> },
    Join { words: Vec<String> },
}

impl Inputs {
    pub(super) fn kind(&self) -> TaskKind {
        match self {
            Inputs::Add { .. } => TaskKind::Add,
            Inputs::Subtract { .. } => TaskKind::Subtract,
            Inputs::Sort { .. } => TaskKind::Sort,
            Inputs::Uppercase { .. } => TaskKind::Uppercase,
            Inputs::Count { .. } => TaskKind::Count,
            Inputs::FirstLetters { .. } => TaskKind::FirstLetters,
            Inputs::Join { .. } => TaskKind::Join,
        }
    }

    /// The user message.
    pub(super) fn prompt(&self) -> String {
        match self {
            Inputs::Add { left, right } => format!("What is {left} + {right}?"),
            Inputs::Subtract { left, right } => format!("What is {left} - {right}?"),
            Inputs::Sort { numbers } => format!("{SORT_PREFIX}{}", join_numbers(numbers)),
            Inputs::Uppercase { words } => format!("{UPPERCASE_PREFIX}{}", words.join(" ")),
            Inputs::Count { words } => format!("{COUNT_PREFIX}{}", words.join(" ")),
            Inputs::FirstLetters { words } => format!("{FIRST_LETTERS_PREFIX}{}", words.join(" ")),
            Inputs::Join { words } => format!("{JOIN_PREFIX}{}", words.join(" ")),
        }
    }

    /// The one answer scored correct. Subtraction may go negative for prompts
    /// written by hand; the generator never asks for one.
    pub(super) fn answer(&self) -> String {
        match self {
            Inputs::Add { left, right } => (i64::from(*left) + i64::from(*right)).to_string(),
            Inputs::Subtract { left, right } => (i64::from(*left) - i64::from(*right)).to_string(),
            Inputs::Sort { numbers } => {
                let mut sorted = numbers.clone();
                sorted.sort_unstable();
                join_numbers(&sorted)
            }
            Inputs::Uppercase { words } => words.join(" ").to_uppercase(),
            Inputs::Count { words } => words.len().to_string(),
            Inputs::FirstLetters { words } => {
                // Words are never empty (`parse_words`, the word list), so
                // `chars().next()` always yields a letter.
                let letters: Vec<String> =
                    words.iter().filter_map(|word| word.chars().next()).map(String::from).collect();
                letters.join(" ")
            }
            Inputs::Join { words } => words.join(", "),
        }
    }

    /// The inputs of a prompt in one of the templates, `None` otherwise.
    /// Surrounding whitespace is ignored; inside, the template must match
    /// exactly (single spaces, plain decimal numbers).
    pub(super) fn parse(prompt: &str) -> Option<Self> {
        let prompt = prompt.trim();
        if let Some(question) = prompt.strip_prefix("What is ").and_then(|rest| rest.strip_suffix('?')) {
            if let Some((left, right)) = question.split_once(" + ") {
                return Some(Inputs::Add { left: parse_number(left)?, right: parse_number(right)? });
            }
            let (left, right) = question.split_once(" - ")?;
            return Some(Inputs::Subtract { left: parse_number(left)?, right: parse_number(right)? });
        }
        if let Some(rest) = prompt.strip_prefix(SORT_PREFIX) {
            let numbers = rest.split(' ').map(parse_number).collect::<Option<Vec<u32>>>()?;
            return Some(Inputs::Sort { numbers });
        }
        // A matching prefix settles the kind: bad words after it refuse the prompt.
        let words_after = |prefix: &str| prompt.strip_prefix(prefix).map(parse_words);
        if let Some(words) = words_after(UPPERCASE_PREFIX) {
            return Some(Inputs::Uppercase { words: words? });
        }
        if let Some(words) = words_after(COUNT_PREFIX) {
            return Some(Inputs::Count { words: words? });
        }
        if let Some(words) = words_after(FIRST_LETTERS_PREFIX) {
            return Some(Inputs::FirstLetters { words: words? });
        }
        let words = words_after(JOIN_PREFIX)??;
        Some(Inputs::Join { words })
    }
}

fn join_numbers(numbers: &[u32]) -> String {
    numbers.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

/// Plain decimal digits only: `u32::from_str` would also take `+5`.
fn parse_number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Words separated by single spaces; an empty word (two spaces) refuses the prompt.
fn parse_words(text: &str) -> Option<Vec<String>> {
    let words: Vec<String> = text.split(' ').map(str::to_string).collect();
    if words.iter().any(String::is_empty) {
        return None;
    }
    Some(words)
}
