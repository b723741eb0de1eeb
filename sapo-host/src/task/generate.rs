//! The seeded generator: examples of every kind in turn, each prompt used
//! once, each with a rule-made wrong answer.

use std::collections::HashSet;

use super::template::Inputs;
use super::{TaskExample, TaskKind};

/// The words of the word kinds: common, lowercase, 3–5 letters, so answers
/// stay short and each word is a few tokens at most.
pub const WORDS: [&str; 50] = [
    "red", "blue", "green", "black", "white", "sun", "moon", "star", "sky", "rain", "snow", "wind", "tree", "leaf",
    "rock", "river", "lake", "sea", "fish", "bird", "cat", "dog", "fox", "horse", "cow", "apple", "bread", "milk",
    "tea", "cake", "book", "pen", "desk", "door", "house", "road", "car", "boat", "train", "city", "park", "day",
    "night", "water", "fire", "stone", "gold", "light", "happy", "cold",
];

/// Largest `n` [`generate_examples`] accepts. The smallest prompt space,
/// `subtract` with 5050 prompts, must hold `n / 7` distinct prompts with room
/// to spare for rejection sampling.
const MAX_EXAMPLES: usize = 20_000;

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, seedable, and the same on
/// every platform and Rust version, which a committed fixture needs.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high` by multiply-shift (bias below 2⁻⁵⁷ for these ranges).
    fn in_range(&mut self, low: usize, high: usize) -> usize {
        let width = (high - low + 1) as u128;
        low + ((u128::from(self.next_u64()) * width) >> 64) as usize
    }

    fn word(&mut self) -> String {
        WORDS[self.in_range(0, WORDS.len() - 1)].to_string()
    }

    fn words(&mut self, min: usize, max: usize) -> Vec<String> {
        let n_words = self.in_range(min, max);
        (0..n_words).map(|_| self.word()).collect()
    }
}

/// `n` examples from `seed`: kinds in turn ([`TaskKind::ALL`] order, so every
/// kind gets `n / 7` or one more), every prompt distinct. Distinct prompts
/// let a caller cut one call's output into train and eval splits that share
/// no prompt; two calls with different seeds may share prompts.
///
/// # Panics
/// If `n` exceeds 20 000, beyond which `subtract` (5050 possible prompts)
/// would run short of fresh prompts.
///
/// ```
/// let examples = sapo_host::task::generate_examples(1, 3);
/// assert_eq!(examples, sapo_host::task::generate_examples(1, 3));
/// assert_eq!(examples[0].kind, sapo_host::task::TaskKind::Add);
/// ```
pub fn generate_examples(seed: u64, n: usize) -> Vec<TaskExample> {
    assert!(n <= MAX_EXAMPLES, "generate_examples: n = {n} exceeds {MAX_EXAMPLES} distinct prompts per call");
    let mut rng = SplitMix64 { state: seed };
    let mut seen: HashSet<String> = HashSet::with_capacity(n);
    let mut examples = Vec::with_capacity(n);
    for index in 0..n {
        let kind = TaskKind::ALL[index % TaskKind::ALL.len()];
        // Redraw on a repeated prompt; with n ≤ MAX_EXAMPLES every kind's
        // prompt space is at least twice what it must supply, so this ends.
        let inputs = loop {
            let inputs = draw_inputs(&mut rng, kind);
            if seen.insert(inputs.prompt()) {
                break inputs;
            }
        };
        let rejected = rejected_answer(&mut rng, &inputs);
        examples.push(TaskExample { kind, prompt: inputs.prompt(), answer: inputs.answer(), rejected });
    }
    examples
}

fn draw_inputs(rng: &mut SplitMix64, kind: TaskKind) -> Inputs {
    match kind {
        TaskKind::Add => Inputs::Add { left: rng.in_range(0, 99) as u32, right: rng.in_range(0, 99) as u32 },
        TaskKind::Subtract => {
            let (first, second) = (rng.in_range(0, 99) as u32, rng.in_range(0, 99) as u32);
            Inputs::Subtract { left: first.max(second), right: first.min(second) }
        }
        TaskKind::Sort => {
            // Distinct numbers, so swapping two of them always changes the list.
            let n_numbers = rng.in_range(3, 5);
            let mut numbers: Vec<u32> = Vec::with_capacity(n_numbers);
            while numbers.len() < n_numbers {
                let number = rng.in_range(0, 99) as u32;
                if !numbers.contains(&number) {
                    numbers.push(number);
                }
            }
            Inputs::Sort { numbers }
        }
        TaskKind::Uppercase => Inputs::Uppercase { words: rng.words(1, 3) },
        TaskKind::Count => Inputs::Count { words: rng.words(2, 6) },
        TaskKind::FirstLetters => Inputs::FirstLetters { words: rng.words(2, 5) },
        TaskKind::Join => Inputs::Join { words: rng.words(2, 3) },
    }
}

/// A plausible wrong answer, one rule per kind (see [`TaskExample::rejected`]).
fn rejected_answer(rng: &mut SplitMix64, inputs: &Inputs) -> String {
    match inputs {
        Inputs::Add { .. } | Inputs::Subtract { .. } => {
            // The generated answers are non-negative and parse back.
            let answer: i64 = inputs.answer().parse().unwrap_or(0);
            let offset = rng.in_range(1, 10) as i64;
            let below = rng.in_range(0, 1) == 0 && answer >= offset;
            (if below { answer - offset } else { answer + offset }).to_string()
        }
        Inputs::Sort { numbers } => {
            let mut sorted = numbers.clone();
            sorted.sort_unstable();
            let first = rng.in_range(0, sorted.len() - 2);
            let second = rng.in_range(first + 1, sorted.len() - 1);
            sorted.swap(first, second);
            sorted.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
        }
        Inputs::Uppercase { words } => {
            if rng.in_range(0, 1) == 0 {
                // Title case: "Green Apple".
                words.iter().map(|word| title_case(word)).collect::<Vec<_>>().join(" ")
            } else {
                // One word left in lowercase: "GREEN apple".
                let lower = rng.in_range(0, words.len() - 1);
                let cased: Vec<String> = words
                    .iter()
                    .enumerate()
                    .map(|(position, word)| if position == lower { word.clone() } else { word.to_uppercase() })
                    .collect();
                cased.join(" ")
            }
        }
        Inputs::Count { words } => {
            let n_words = words.len();
            (if rng.in_range(0, 1) == 0 { n_words - 1 } else { n_words + 1 }).to_string()
        }
        Inputs::FirstLetters { words } => {
            let wrong = rng.in_range(0, words.len() - 1);
            let shift = rng.in_range(1, 25) as u8;
            let letters: Vec<String> = words
                .iter()
                .enumerate()
                .map(|(position, word)| {
                    let letter = word.as_bytes()[0];
                    if position == wrong { char::from(b'a' + (letter - b'a' + shift) % 26) } else { char::from(letter) }
                })
                .map(String::from)
                .collect();
            letters.join(" ")
        }
        Inputs::Join { words } => {
            let separator = if rng.in_range(0, 1) == 0 { " " } else { "," };
            words.join(separator)
        }
    }
}

fn title_case(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
