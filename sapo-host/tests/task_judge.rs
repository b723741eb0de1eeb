//! The shipped task: the judge against the generator over thousands of
//! examples, hand-written cases per kind, and `fixtures/task/` against what
//! the generator writes now (exact bytes: the files have no tolerance).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use sapo_host::chat_template::{ChatTemplate, Message};
use sapo_host::data::{DatasetKind, DatasetLoader, LoadOptions};
use sapo_host::task::{
    JsonlShape, TaskConfig, TaskKind, generate_examples, judge, reference_answer, score_summary, task_files,
    write_jsonl,
};
use sapo_host::tokenizer::Tokenizer;

fn task_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/task")
}

const REGENERATE: &str = "cargo run -p sapo-host --example make_task -- fixtures/task";

/// Partial-credit scores are ratios of small integers; this only absorbs the division's rounding.
const SCORE_TOLERANCE: f64 = 1e-12;

/// `(correct, score)` of a response, panicking on an unrecognised prompt.
fn verdict(prompt: &str, response: &str) -> (bool, f64) {
    let verdict = judge(prompt, response).unwrap_or_else(|| panic!("prompt not recognised: {prompt:?}"));
    (verdict.correct, verdict.score)
}

fn assert_score(prompt: &str, response: &str, correct: bool, score: f64) {
    let (got_correct, got_score) = verdict(prompt, response);
    assert_eq!(got_correct, correct, "{prompt:?} → {response:?}: correct");
    assert!(
        (got_score - score).abs() <= SCORE_TOLERANCE,
        "{prompt:?} → {response:?}: score {got_score}, expected {score}"
    );
}

#[test]
fn judge_scores_every_generated_answer_one_and_every_rejected_below_one() {
    for seed in [0, 42, 0xDEAD_BEEF] {
        let examples = generate_examples(seed, 7000);
        let mut per_kind: BTreeMap<TaskKind, usize> = BTreeMap::new();
        for example in &examples {
            let chosen = judge(&example.prompt, &example.answer).unwrap_or_else(|| panic!("seed {seed}: {example:?}"));
            assert_eq!(chosen.kind, example.kind, "seed {seed}: {example:?}");
            assert!(chosen.correct && chosen.score == 1.0, "seed {seed}: answer not scored 1: {example:?}");
            let rejected = judge(&example.prompt, &example.rejected).expect("same prompt");
            assert!(!rejected.correct, "seed {seed}: rejected scored correct: {example:?}");
            assert!(
                (0.0..1.0).contains(&rejected.score),
                "seed {seed}: rejected score {}: {example:?}",
                rejected.score
            );
            assert!(example.answer.len() <= 19, "seed {seed}: answer too long: {example:?}");
            *per_kind.entry(example.kind).or_default() += 1;
        }
        assert_eq!(per_kind.len(), TaskKind::ALL.len(), "seed {seed}: every kind appears");
        assert!(per_kind.values().all(|&count| count == 1000), "seed {seed}: kinds balanced: {per_kind:?}");
    }
}

#[test]
fn generated_prompts_are_distinct_and_the_generator_repeats_itself() {
    let config = TaskConfig::default();
    let examples = generate_examples(config.seed, config.n_train + config.n_eval);
    let prompts: HashSet<&str> = examples.iter().map(|example| example.prompt.as_str()).collect();
    assert_eq!(prompts.len(), examples.len(), "a prompt repeats, so train and eval could share one");
    assert_eq!(examples, generate_examples(config.seed, config.n_train + config.n_eval));
    assert_ne!(examples, generate_examples(config.seed + 1, config.n_train + config.n_eval));
}

#[test]
fn reference_answer_is_what_the_generator_calls_the_answer() {
    for example in generate_examples(5, 700) {
        assert_eq!(reference_answer(&example.prompt).as_deref(), Some(example.answer.as_str()), "{example:?}");
    }
}

#[test]
fn arithmetic_is_exact_but_lenient_on_whitespace_and_a_trailing_period() {
    let add = "What is 37 + 58?";
    assert_score(add, "95", true, 1.0);
    assert_score(add, "  95.\n", true, 1.0);
    assert_score(add, "95..", false, 0.0);
    assert_score(add, "95 .", false, 0.0);
    assert_score(add, "095", false, 0.0);
    assert_score(add, "96", false, 0.0);
    assert_score(add, "The answer is 95", false, 0.0);
    assert_score("What is 58 - 37?", "21", true, 1.0);
    assert_score("What is 58 - 37?", "95", false, 0.0);
    // Hand-written prompts may go below zero; the generator never does.
    assert_score("What is 3 - 5?", "-2", true, 1.0);
    assert_eq!(judge(add, "95").map(|verdict| verdict.kind), Some(TaskKind::Add));
    assert_eq!(judge("What is 58 - 37?", "21").map(|verdict| verdict.kind), Some(TaskKind::Subtract));
}

#[test]
fn sort_credits_positions_only_when_the_numbers_are_the_asked_ones() {
    let prompt = "Sort in ascending order: 12 5 9";
    assert_score(prompt, "5 9 12", true, 1.0);
    assert_score(prompt, "5 9 12.", true, 1.0);
    assert_score(prompt, "5 12 9", false, 1.0 / 3.0);
    assert_score(prompt, "12 9 5", false, 1.0 / 3.0);
    assert_score(prompt, "9 12 5", false, 0.0);
    assert_score(prompt, "5 9", false, 0.0);
    assert_score(prompt, "5 9 13", false, 0.0);
    assert_score(prompt, "5  9 12", false, 0.0);
    assert_score(prompt, "5, 9, 12", false, 0.0);
    assert_score("Sort in ascending order: 40 3 77 18 2", "2 3 40 18 77", false, 3.0 / 5.0);
}

#[test]
fn uppercase_credits_each_word_in_place() {
    let prompt = "Write in capital letters: green apple";
    assert_score(prompt, "GREEN APPLE", true, 1.0);
    assert_score(prompt, "\tGREEN APPLE.  ", true, 1.0);
    assert_score(prompt, "GREEN apple", false, 0.5);
    assert_score(prompt, "Green Apple", false, 0.0);
    assert_score(prompt, "green apple", false, 0.0);
    assert_score(prompt, "GREEN APPLE PIE", false, 2.0 / 3.0);
    assert_score(prompt, "GREEN", false, 0.5);
    assert_score(prompt, "GREEN  APPLE", false, 1.0 / 3.0);
}

#[test]
fn count_is_exact() {
    let prompt = "How many words: red fox runs fast";
    assert_score(prompt, "4", true, 1.0);
    assert_score(prompt, " 4. ", true, 1.0);
    assert_score(prompt, "four", false, 0.0);
    assert_score(prompt, "5", false, 0.0);
    assert_score(prompt, "4 words", false, 0.0);
}

#[test]
fn first_letters_credits_each_letter_in_place() {
    let prompt = "Write the first letter of each word: blue sky rain";
    assert_score(prompt, "b s r", true, 1.0);
    assert_score(prompt, "b s r.\n", true, 1.0);
    assert_score(prompt, "b s t", false, 2.0 / 3.0);
    assert_score(prompt, "B S R", false, 0.0);
    assert_score(prompt, "bsr", false, 0.0);
    assert_score(prompt, "b s", false, 2.0 / 3.0);
}

#[test]
fn join_gives_half_credit_for_the_right_words_without_the_asked_commas() {
    let prompt = "Join the words with commas: red fox dog";
    assert_score(prompt, "red, fox, dog", true, 1.0);
    assert_score(prompt, "red, fox, dog.", true, 1.0);
    assert_score(prompt, "red fox dog", false, 0.5);
    assert_score(prompt, "red,fox,dog", false, 0.5);
    assert_score(prompt, "red, fox", false, 0.5 * 2.0 / 3.0);
    assert_score(prompt, "dog, fox, red", false, 0.5 / 3.0);
    assert_score(prompt, "RED, FOX, DOG", false, 0.0);
}

#[test]
fn prompts_outside_the_templates_are_not_judged() {
    for prompt in [
        "",
        "Hello",
        "What is 2 * 3?",
        "What is 2 + 3",
        "What is +2 + 3?",
        "What is two + 3?",
        "Sort in ascending order: ",
        "Sort in ascending order: 1  2",
        "Sort in ascending order: a b",
        "Sort in descending order: 1 2",
        "Write in capital letters:",
        "Write in capital letters: green  apple",
        "How many words? red fox",
        "Join the words with semicolons: red fox",
    ] {
        assert!(judge(prompt, "4").is_none(), "{prompt:?} was judged");
        assert!(reference_answer(prompt).is_none(), "{prompt:?} has a reference answer");
    }
    // Surrounding whitespace does not hide a template.
    assert_score("  What is 2 + 2?\n", "4", true, 1.0);
}

#[test]
fn score_summary_counts_per_kind() {
    let verdicts: Vec<_> = [
        ("What is 2 + 2?", "4"),
        ("What is 2 + 2?", "5"),
        ("Write in capital letters: green apple", "GREEN apple"),
        ("How many words: red fox", "2"),
    ]
    .iter()
    .map(|(prompt, response)| judge(prompt, response).expect("a task prompt"))
    .collect();
    let summary = score_summary(&verdicts);
    assert_eq!((summary.n, summary.correct), (4, 2));
    assert!((summary.accuracy - 0.5).abs() <= SCORE_TOLERANCE);
    assert!((summary.mean_score - 2.5 / 4.0).abs() <= SCORE_TOLERANCE);
    let kinds: Vec<TaskKind> = summary.per_kind.keys().copied().collect();
    assert_eq!(kinds, [TaskKind::Add, TaskKind::Uppercase, TaskKind::Count]);
    let add = summary.per_kind[&TaskKind::Add];
    assert_eq!((add.n, add.correct), (2, 1));
    assert!((summary.per_kind[&TaskKind::Uppercase].mean_score - 0.5).abs() <= SCORE_TOLERANCE);
    let empty = score_summary(&[]);
    assert_eq!((empty.n, empty.correct, empty.accuracy, empty.mean_score), (0, 0, 0.0, 0.0));
}

#[test]
fn committed_fixture_files_are_what_the_generator_writes_now() {
    for file in task_files(&TaskConfig::default()).expect("task files") {
        let path = task_dir().join(file.path);
        let committed = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(committed == file.bytes, "{} differs from the generator's output; regenerate: {REGENERATE}", file.path);
    }
}

#[test]
fn committed_jsonl_equals_write_jsonl_of_the_generated_split() {
    let config = TaskConfig::default();
    let mut train = generate_examples(config.seed, config.n_train + config.n_eval);
    let eval = train.split_off(config.n_train);
    for (name, text) in [
        ("train.jsonl", write_jsonl(&train, JsonlShape::Preference)),
        ("sft.jsonl", write_jsonl(&train, JsonlShape::Sft)),
        ("eval.jsonl", write_jsonl(&eval, JsonlShape::Preference)),
    ] {
        let path = task_dir().join("data").join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(committed == text, "{name} differs from the generator's output; regenerate: {REGENERATE}");
    }
}

fn committed_tokenizer() -> Tokenizer {
    Tokenizer::from_file(task_dir().join("base/tokenizer.json")).expect("the committed tokenizer loads")
}

#[test]
fn committed_tokenizer_has_the_chatml_specials_and_round_trips_a_rendered_example() {
    let tokenizer = committed_tokenizer();
    assert_eq!(tokenizer.vocab_size(), 512);
    for (id, token) in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].iter().enumerate() {
        assert_eq!(tokenizer.token_to_id(token), Some(id as u32), "{token}");
    }
    assert_eq!(
        (tokenizer.bos_token_id(), tokenizer.eos_token_id(), tokenizer.pad_token_id()),
        (None, Some(2), Some(0))
    );
    let template = ChatTemplate::from_tokenizer(&tokenizer).expect("the ChatML template compiles");
    let mut total_tokens = 0;
    let examples = generate_examples(11, 70);
    for example in &examples {
        let conversation =
            [Message::new("user", example.prompt.as_str()), Message::new("assistant", example.answer.as_str())];
        let text = template.render(&conversation, false).expect("renders");
        assert_eq!(
            text,
            format!(
                "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n{}<|im_end|>\n",
                example.prompt, example.answer
            )
        );
        let ids = tokenizer.encode(&text, false).expect("encodes");
        assert_eq!(ids.iter().filter(|&&id| id == 2).count(), 2, "two <|im_end|> in {text:?}");
        assert_eq!(tokenizer.decode(&ids, false).expect("decodes"), text);
        assert_eq!(
            tokenizer.decode(&ids, true).expect("decodes"),
            format!("user\n{}\nassistant\n{}\n", example.prompt, example.answer)
        );
        total_tokens += ids.len();
    }
    let mean_tokens = total_tokens as f64 / examples.len() as f64;
    assert!(mean_tokens <= 40.0, "examples average {mean_tokens} tokens");
    let prompt = template.render(&[Message::new("user", "What is 1 + 2?")], true).expect("renders");
    assert!(prompt.ends_with("<|im_end|>\n<|im_start|>assistant\n"), "{prompt:?}");
}

#[test]
fn sapo_loads_the_committed_datasets_in_every_shape_they_serve() {
    let tokenizer = committed_tokenizer();
    let template = ChatTemplate::from_tokenizer(&tokenizer).expect("template");
    let config = TaskConfig::default();
    for (name, kind, n_records) in [
        ("train.jsonl", DatasetKind::Preference, config.n_train),
        ("train.jsonl", DatasetKind::PromptChosen, config.n_train),
        ("eval.jsonl", DatasetKind::Preference, config.n_eval),
        ("sft.jsonl", DatasetKind::Sft, config.n_train),
    ] {
        let loader = DatasetLoader::new(&tokenizer, Some(&template), LoadOptions::new(kind)).expect("loader");
        let dataset = loader.load(task_dir().join("data").join(name)).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!((dataset.examples.len(), dataset.skipped.len()), (n_records, 0), "{name} as {kind:?}");
        for example in &dataset.examples {
            let chosen = example.chosen_ids.as_ref().expect("a chosen or completion");
            // The response ends with the turn's `<|im_end|>` and newline, so the model learns to stop.
            assert_eq!(chosen[chosen.len() - 2], 2, "{name}:{}", example.line);
            assert_eq!(example.rejected_ids.is_some(), name != "sft.jsonl", "{name}:{}", example.line);
        }
    }
}

#[test]
fn committed_base_config_reads_and_matches_the_tokenizer() {
    let config = sapo_host::model_files::hf::read_config(&task_dir().join("base")).expect("config.json reads");
    assert_eq!(config.model_type, "llama");
    assert_eq!(config.model.vocab_size, committed_tokenizer().vocab_size());
    assert_eq!((config.model.hidden_size, config.model.num_hidden_layers, config.model.head_dim), (128, 4, 32));
    assert_eq!((config.model.num_attention_heads, config.model.num_key_value_heads), (4, 2));
    assert!(config.model.tie_word_embeddings);
    assert_eq!((config.bos_token_id, config.eos_token_ids.as_slice()), (None, [2].as_slice()));
}
