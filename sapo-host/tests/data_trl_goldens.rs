//! Dataset tokenisation against TRL 1.16's `DPOTrainer._prepare_dataset`,
//! `SFTTrainer._prepare_dataset` and `DataCollatorForPreference` truncation
//! (goldens from `fixtures/text/generate.py`). Ids compared exactly.

use std::path::{Path, PathBuf};

use sapo_host::chat_template::ChatTemplate;
use sapo_host::data::{DataError, DatasetKind, DatasetLoader, FileFormat, LoadOptions, Problem, Truncation};
use sapo_host::model_files::gguf::{GgufFile, tokenizer_parts};
use sapo_host::tokenizer::Tokenizer;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn golden() -> Value {
    let path = fixtures().join("text/trl_datasets.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|id| id.as_u64().unwrap() as u32).collect()
}

/// The tokenizer a golden case names, or `None` when the SmolLM2 GGUF is absent.
fn tokenizer(name: &str) -> Option<Tokenizer> {
    match name {
        "tiny_bpe" => Some(Tokenizer::from_file(fixtures().join("text/tiny_bpe/tokenizer.json")).unwrap()),
        "smollm2" => {
            let path = fixtures().join("downloads/SmolLM2-135M-Instruct.Q4_1.gguf");
            if !path.exists() {
                eprintln!(
                    "skipped: fixtures/downloads/SmolLM2-135M-Instruct.Q4_1.gguf not present (run fixtures/fetch_smollm2.sh)"
                );
                return None;
            }
            let parts = tokenizer_parts(&GgufFile::open(path).unwrap()).unwrap();
            Some(Tokenizer::from_gguf_parts(&parts).unwrap())
        }
        other => panic!("unknown tokenizer {other}"),
    }
}

/// The golden rows as JSON Lines.
fn jsonl(rows: &Value) -> String {
    rows.as_array().unwrap().iter().map(|row| format!("{row}\n")).collect()
}

fn load(tokenizer: &Tokenizer, rows: &str, options: LoadOptions) -> Result<sapo_host::data::Dataset, DataError> {
    let template = ChatTemplate::from_tokenizer(tokenizer).unwrap();
    let loader = DatasetLoader::new(tokenizer, Some(&template), options).unwrap();
    loader.load_str(Path::new("golden.jsonl"), rows.as_bytes(), FileFormat::JsonLines)
}

#[test]
fn preference_rows_tokenize_like_dpo_trainer() {
    let golden = golden();
    let mut n_rows = 0;
    for case in golden["dpo"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let Some(tokenizer) = tokenizer(case["tokenizer"].as_str().unwrap()) else { continue };
        let mut options = LoadOptions::new(DatasetKind::Preference);
        let kept: Vec<usize> = match case["max_length"].as_u64() {
            Some(max_length) => {
                options.truncation = Truncation::KeepStart { max_length: max_length as usize };
                options.skip_invalid = true;
                case["kept_indices"].as_array().unwrap().iter().map(|index| index.as_u64().unwrap() as usize).collect()
            }
            None => (0..case["rows"].as_array().unwrap().len()).collect(),
        };
        let dataset = load(&tokenizer, &jsonl(&case["rows"]), options).unwrap();
        let indices: Vec<usize> = dataset.examples.iter().map(|example| example.index).collect();
        assert_eq!(indices, kept, "{name}: the examples TRL keeps");
        for skip in &dataset.skipped {
            assert!(matches!(skip.problem, Problem::PromptTooLong { .. }), "{name}: {:?}", skip.problem);
        }
        for (example, expected) in dataset.examples.iter().zip(case["prepared"].as_array().unwrap()) {
            assert_eq!(example.prompt_ids, ids(&expected["prompt_ids"]), "{name} row {}", example.index);
            assert_eq!(example.chosen_ids, Some(ids(&expected["chosen_ids"])), "{name} row {}", example.index);
            assert_eq!(example.rejected_ids, Some(ids(&expected["rejected_ids"])), "{name} row {}", example.index);
            n_rows += 1;
        }
    }
    println!("DPO preparation: {n_rows} rows identical to TRL's prompt/chosen/rejected ids");
}

#[test]
fn prompt_too_long_is_an_error_naming_the_line_without_skip_invalid() {
    let golden = golden();
    let Some(tokenizer) = tokenizer("smollm2") else { return };
    let case = golden["dpo"].as_array().unwrap().iter().find(|case| case["name"] == "filter_keep_start_9").unwrap();
    let mut options = LoadOptions::new(DatasetKind::Preference);
    options.truncation = Truncation::KeepStart { max_length: 9 };
    let error = load(&tokenizer, &jsonl(&case["rows"]), options).unwrap_err();
    assert_eq!(
        error.to_string(),
        "golden.jsonl:2: field `prompt`: 11 tokens leave no room for a response under max_length 9 (TRL drops such examples silently)"
    );
}

#[test]
fn prompt_chosen_and_prompt_only_agree_with_the_preference_split_on_these_rows() {
    let golden = golden();
    let Some(tokenizer) = tokenizer("smollm2") else { return };
    for case in golden["dpo"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|case| case["name"] == "strings" || case["name"] == "conversational")
    {
        let rows: Vec<Value> = case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| serde_json::json!({"prompt": row["prompt"], "chosen": row["chosen"]}))
            .collect();
        let dataset =
            load(&tokenizer, &jsonl(&Value::Array(rows.clone())), LoadOptions::new(DatasetKind::PromptChosen)).unwrap();
        for (example, expected) in dataset.examples.iter().zip(case["prepared"].as_array().unwrap()) {
            assert_eq!(example.prompt_ids, ids(&expected["prompt_ids"]));
            assert_eq!(example.chosen_ids, Some(ids(&expected["chosen_ids"])));
            assert_eq!(example.rejected_ids, None);
        }
        let dataset = load(&tokenizer, &jsonl(&Value::Array(rows)), LoadOptions::new(DatasetKind::PromptOnly)).unwrap();
        for (example, expected) in dataset.examples.iter().zip(case["prepared"].as_array().unwrap()) {
            // The prompt alone, untrimmed: TRL's prompt ids are a prefix of it.
            assert!(example.prompt_ids.starts_with(&ids(&expected["prompt_ids"])));
            assert_eq!(example.chosen_ids, None);
        }
    }
}

#[test]
fn sft_rows_tokenize_like_sft_trainer() {
    let golden = golden();
    let Some(tokenizer) = tokenizer("smollm2") else { return };
    let mut n_rows = 0;
    for case in golden["sft"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let dataset = load(&tokenizer, &jsonl(&case["rows"]), LoadOptions::new(DatasetKind::Sft)).unwrap();
        for (example, expected) in dataset.examples.iter().zip(case["prepared"].as_array().unwrap()) {
            let input_ids = ids(&expected["input_ids"]);
            let n_masked =
                expected["labels"].as_array().unwrap().iter().filter(|label| label.as_i64() == Some(-100)).count();
            let chosen = example.chosen_ids.clone().unwrap();
            assert_eq!([example.prompt_ids.clone(), chosen].concat(), input_ids, "{name}");
            assert_eq!(example.prompt_ids.len(), n_masked, "{name}: the prompt is what TRL masks");
            n_rows += 1;
        }
    }
    println!("SFT preparation: {n_rows} rows identical to TRL's input ids and label masks");
}

#[test]
fn truncation_matches_the_preference_collator() {
    let golden = golden();
    let examples = golden["collator_examples"].as_array().unwrap();
    let mut n_sequences = 0;
    for case in golden["collator"].as_array().unwrap() {
        let max_length = case["max_length"].as_u64().unwrap() as usize;
        let truncation = match case["truncation_mode"].as_str().unwrap() {
            "keep_start" => Truncation::KeepStart { max_length },
            _ => Truncation::KeepEnd { max_length },
        };
        let sequences = case["sequences"].as_array().unwrap();
        let sides = ["chosen_ids", "rejected_ids"];
        let pairs = sides.iter().flat_map(|side| examples.iter().map(move |example| (example, *side)));
        for ((example, side), expected) in pairs.zip(sequences) {
            let prompt = ids(&example["prompt_ids"]);
            let response = ids(&example[side]);
            let (kept_prompt, kept_response) = truncation.apply(&prompt, &response);
            assert_eq!([kept_prompt, kept_response].concat(), ids(&expected["input_ids"]), "{truncation:?}");
            let mask: Vec<u32> =
                std::iter::repeat_n(0, kept_prompt.len()).chain(std::iter::repeat_n(1, kept_response.len())).collect();
            assert_eq!(mask, ids(&expected["completion_mask"]), "{truncation:?}");
            n_sequences += 1;
        }
    }
    println!("collator truncation: {n_sequences} sequences identical");
}
