//! Every way a dataset can be bad: the error names the file, the line and
//! the field; `skip_invalid` turns record problems into counted skips.

use std::path::Path;

use sapo_host::chat_template::ChatTemplate;
use sapo_host::data::{
    DataError, Dataset, DatasetKind, DatasetLoader, FileFormat, Form, LoadOptions, Problem, Truncation,
};
use sapo_host::tokenizer::{BpeParts, Tokenizer};

/// Byte-level tokenizer without merges: id 0 is `</s>` (EOS), id 1 + b is byte b.
fn tokenizer() -> Tokenizer {
    let mut tokens: Vec<String> = vec!["</s>".into()];
    tokens.extend(sapo_host::tokenizer::byte_alphabet().iter().map(|c| c.to_string()));
    let token_types = std::iter::once(3).chain(std::iter::repeat(1)).take(tokens.len()).collect();
    Tokenizer::from_bpe_parts(&BpeParts {
        model: "gpt2".into(),
        tokens,
        token_types,
        eos_token_id: Some(0),
        ..BpeParts::default()
    })
    .unwrap()
}

const TEMPLATE: &str = "{% for m in messages %}{% if m.role == 'bad' %}{{ raise_exception('bad role') }}{% endif %}\
<{{ m.role }}>{{ m.content }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";

fn template() -> ChatTemplate {
    ChatTemplate::new(TEMPLATE).unwrap()
}

fn load(kind: DatasetKind, text: &str) -> Result<Dataset, DataError> {
    let tokenizer = tokenizer();
    let template = template();
    let loader = DatasetLoader::new(&tokenizer, Some(&template), LoadOptions::new(kind)).unwrap();
    loader.load_str(Path::new("data/train.jsonl"), text.as_bytes(), FileFormat::JsonLines)
}

/// The error message of loading `text`, which must fail.
fn error(kind: DatasetKind, text: &str) -> String {
    load(kind, text).unwrap_err().to_string()
}

const GOOD: &str = r#"{"prompt": "Q", "chosen": "a", "rejected": "b"}"#;

#[test]
fn each_bad_record_is_named_by_file_line_and_field() {
    use DatasetKind::*;
    let cases: [(DatasetKind, &str, &str); 18] = [
        (Preference, "{oops", "data/train.jsonl:2: not valid JSON: key must be a string at line 1 column 2"),
        (Preference, "[1, 2]", "data/train.jsonl:2: expected a JSON object, got a list"),
        (Preference, r#"{"prompt": "Q", "rejected": "b"}"#, "data/train.jsonl:2: missing field `chosen`"),
        (Preference, r#"{"prompt": "Q", "chosen": "a"}"#, "data/train.jsonl:2: missing field `rejected`"),
        (
            Preference,
            r#"{"prompt": "Q", "chosen": "a", "rejected": null}"#,
            "data/train.jsonl:2: missing field `rejected`",
        ),
        (PromptOnly, r#"{"chosen": "a"}"#, "data/train.jsonl:2: missing field `prompt`"),
        (PromptChosen, r#"{"chosen": "a"}"#, "data/train.jsonl:2: missing field `prompt`"),
        (
            Preference,
            r#"{"prompt": "Q", "chosen": 3, "rejected": "b"}"#,
            "data/train.jsonl:2: field `chosen`: expected a string or a list of {\"role\", \"content\"} messages, got a number",
        ),
        (
            Preference,
            r#"{"prompt": "Q", "chosen": "", "rejected": "b"}"#,
            "data/train.jsonl:2: field `chosen`: empty response",
        ),
        (
            Preference,
            r#"{"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": ""}], "rejected": [{"role": "assistant", "content": "b"}]}"#,
            "data/train.jsonl:2: field `chosen`: empty response",
        ),
        (PromptOnly, r#"{"prompt": []}"#, "data/train.jsonl:2: field `prompt`: empty conversation"),
        (
            PromptOnly,
            r#"{"prompt": [{"content": "Q"}]}"#,
            "data/train.jsonl:2: field `prompt`: message 0: missing `role`",
        ),
        (
            PromptOnly,
            r#"{"prompt": [{"role": "user", "content": "Q"}, {"role": "user", "content": 5}]}"#,
            "data/train.jsonl:2: field `prompt`: message 1: `content` must be a string, got a number",
        ),
        (
            PromptOnly,
            r#"{"prompt": [{"role": "user", "content": "Q", "tool_calls": []}]}"#,
            "data/train.jsonl:2: field `prompt`: message 0: key `tool_calls` is not supported (only `role` and `content` reach the chat template)",
        ),
        (
            PromptOnly,
            r#"{"prompt": ["Q"]}"#,
            "data/train.jsonl:2: field `prompt`: message 0: expected an object, got a string",
        ),
        (
            Preference,
            r#"{"prompt": "Q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}"#,
            "data/train.jsonl:2: fields mix plain text and conversations",
        ),
        (
            Preference,
            r#"{"chosen": "x", "rejected": "y"}"#,
            "data/train.jsonl:2: fields `chosen` and `rejected`: no shared leading part to use as the implicit prompt (and no `prompt` field)",
        ),
        (
            Sft,
            r#"{"prompt": "Q", "completion": {"text": "a"}}"#,
            "data/train.jsonl:2: field `completion`: expected a string or a list of {\"role\", \"content\"} messages, got an object",
        ),
    ];
    for (kind, line, expected) in cases {
        let first = if kind == DatasetKind::Sft { r#"{"text": "fine"}"# } else { GOOD };
        assert_eq!(error(kind, &format!("{first}\n{line}\n")), expected, "{line}");
    }
}

#[test]
fn a_file_mixing_forms_fails_at_the_first_record_of_the_other_form() {
    let conversational = r#"{"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}"#;
    assert_eq!(
        error(DatasetKind::Preference, &format!("{GOOD}\n\n{conversational}\n")),
        "data/train.jsonl:3: record is conversational but the file's first record is plain text"
    );
}

#[test]
fn template_errors_name_the_field_being_rendered() {
    let line = r#"{"prompt": [{"role": "bad", "content": "Q"}]}"#;
    assert_eq!(
        error(DatasetKind::PromptOnly, line),
        "data/train.jsonl:1: field `prompt`: the chat template raised an exception: bad role"
    );
    let line = r#"{"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "bad", "content": "a"}]}"#;
    assert_eq!(
        error(DatasetKind::PromptChosen, line),
        "data/train.jsonl:1: field `chosen`: the chat template raised an exception: bad role"
    );
}

#[test]
fn rows_carry_tools_and_template_kwargs_to_the_template() {
    let tokenizer = tokenizer();
    let template =
        ChatTemplate::new("{{ tools | tojson }}|{{ tone }}|{% for m in messages %}{{ m.content }}{% endfor %}")
            .unwrap();
    let loader = DatasetLoader::new(&tokenizer, Some(&template), LoadOptions::new(DatasetKind::PromptOnly)).unwrap();
    let line = r#"{"prompt": [{"role": "user", "content": "Q"}], "tools": "[{\"z\": 1, \"a\": 2}]", "chat_template_kwargs": {"tone": "dry"}}"#;
    let dataset = loader.load_str(Path::new("t.jsonl"), line.as_bytes(), FileFormat::JsonLines).unwrap();
    let text = tokenizer.decode(&dataset.examples[0].prompt_ids, false).unwrap();
    assert_eq!(text, r#"[{"z": 1, "a": 2}]|dry|Q"#);
    let bad = r#"{"prompt": [{"role": "user", "content": "Q"}], "tools": 3}"#;
    let error = loader.load_str(Path::new("t.jsonl"), bad.as_bytes(), FileFormat::JsonLines).unwrap_err();
    assert_eq!(
        error.to_string(),
        "t.jsonl:1: field `tools`: expected a list of tool schemas (or its JSON text), got a number"
    );
}

#[test]
fn skip_invalid_counts_every_skip_with_its_reason() {
    let tokenizer = tokenizer();
    let template = template();
    let mut options = LoadOptions::new(DatasetKind::Preference);
    options.skip_invalid = true;
    options.truncation = Truncation::KeepStart { max_length: 4 };
    let loader = DatasetLoader::new(&tokenizer, Some(&template), options).unwrap();
    let text = format!(
        "{GOOD}\nnot json\n{}\n{}\n{GOOD}\n{}\n",
        r#"{"prompt": "Q", "chosen": "a"}"#,
        r#"{"prompt": "a long prompt", "chosen": "a", "rejected": "b"}"#,
        r#"{"prompt": "Q", "chosen": "", "rejected": "b"}"#
    );
    let dataset = loader.load_str(Path::new("d.jsonl"), text.as_bytes(), FileFormat::JsonLines).unwrap();
    assert_eq!(dataset.examples.iter().map(|example| example.line).collect::<Vec<_>>(), [1, 5]);
    assert_eq!(dataset.skipped.iter().map(|skip| skip.line).collect::<Vec<_>>(), [2, 3, 4, 6]);
    assert_eq!(dataset.n_records, 6);
    assert_eq!(dataset.form, Form::Standard);
    assert!(matches!(dataset.skipped[2].problem, Problem::PromptTooLong { n_tokens: 13, max_length: 4 }));
    assert_eq!(
        dataset.skip_summary(),
        "skipped 4 of 6 records: empty response ×1, missing field ×1, not JSON ×1, prompt too long ×1 \
         (first: line 2: not valid JSON: expected ident at line 1 column 2)"
    );

    let error = loader.load_str(Path::new("d.jsonl"), b"nope\n[]\n", FileFormat::JsonLines).unwrap_err();
    assert!(matches!(error, DataError::NoExamples { .. }));
    assert!(error.to_string().starts_with("d.jsonl: no usable examples (skipped 2 of 2 records: "), "{error}");
}

#[test]
fn file_level_problems_are_errors_even_when_skipping() {
    let tokenizer = tokenizer();
    let mut options = LoadOptions::new(DatasetKind::Preference);
    options.skip_invalid = true;
    let loader = DatasetLoader::new(&tokenizer, None, options).unwrap();

    let error = loader.load("data/train.csv").unwrap_err();
    assert_eq!(error.to_string(), "data/train.csv: expected a .jsonl or .json file");
    let error = loader.load("/nonexistent/train.jsonl").unwrap_err();
    assert!(matches!(error, DataError::Io { .. }));
    assert!(error.to_string().starts_with("reading /nonexistent/train.jsonl: "), "{error}");

    let error = loader.load_str(Path::new("d.json"), b"[\n{\"prompt\": 1},\n{oops}\n]", FileFormat::Json).unwrap_err();
    assert_eq!(error.to_string(), "d.json: not a JSON array of records: key must be a string at line 3 column 2");
    let error = loader.load_str(Path::new("d.jsonl"), b"", FileFormat::JsonLines).unwrap_err();
    assert_eq!(error.to_string(), "d.jsonl: no usable examples (skipped 0 of 0 records)");

    let conversational = r#"{"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}"#;
    let error = loader.load_str(Path::new("c.jsonl"), conversational.as_bytes(), FileFormat::JsonLines).unwrap_err();
    assert_eq!(error.to_string(), "c.jsonl: conversational data needs a chat template");

    let mut parts = BpeParts { model: "gpt2".into(), ..BpeParts::default() };
    parts.tokens = sapo_host::tokenizer::byte_alphabet().iter().map(|c| c.to_string()).collect();
    let no_eos = Tokenizer::from_bpe_parts(&parts).unwrap();
    let loader = DatasetLoader::new(&no_eos, None, options).unwrap();
    let error = loader.load_str(Path::new("d.jsonl"), GOOD.as_bytes(), FileFormat::JsonLines).unwrap_err();
    assert_eq!(
        error.to_string(),
        "d.jsonl: plain-text data needs the tokenizer's EOS token (TRL appends it to responses)"
    );
    let prompts = LoadOptions::new(DatasetKind::PromptOnly);
    let loader = DatasetLoader::new(&no_eos, None, prompts).unwrap();
    assert!(loader.load_str(Path::new("d.jsonl"), GOOD.as_bytes(), FileFormat::JsonLines).is_ok());
}

#[test]
fn impossible_truncation_settings_are_refused_up_front() {
    let tokenizer = tokenizer();
    for truncation in [
        Truncation::KeepStart { max_length: 0 },
        Truncation::KeepEnd { max_length: 0 },
        Truncation::SapoKeepEndPrompt { max_length: 8, max_prompt_length: 8 },
    ] {
        let options = LoadOptions { truncation, ..LoadOptions::new(DatasetKind::PromptChosen) };
        let error = DatasetLoader::new(&tokenizer, None, options).unwrap_err();
        assert!(matches!(error, DataError::Options { .. }), "{truncation:?}");
        assert!(error.to_string().starts_with("invalid dataset options: "), "{error}");
    }
}

#[test]
fn json_array_files_report_the_line_each_record_starts_on() {
    let text = "[\n  {\"prompt\": \"Q\", \"chosen\": \"a\", \"rejected\": \"b\"},\n  {\n    \"prompt\": \"Q\",\n    \"chosen\": 7\n  }\n]\n";
    let tokenizer = tokenizer();
    let loader = DatasetLoader::new(&tokenizer, None, LoadOptions::new(DatasetKind::Preference)).unwrap();
    let error = loader.load_str(Path::new("d.json"), text.as_bytes(), FileFormat::Json).unwrap_err();
    assert!(error.to_string().starts_with("d.json:3: field `chosen`: expected a string"), "{error}");
}

#[test]
fn files_on_disk_load_by_extension() {
    let dir = std::env::temp_dir().join(format!("sapo_data_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("d.jsonl"), format!("{GOOD}\n{GOOD}\n")).unwrap();
    std::fs::write(dir.join("d.json"), format!("[{GOOD},\n{GOOD}]")).unwrap();
    std::fs::write(dir.join("lines.json"), format!("{GOOD}\n{GOOD}\n")).unwrap();
    let tokenizer = tokenizer();
    let loader = DatasetLoader::new(&tokenizer, None, LoadOptions::new(DatasetKind::Preference)).unwrap();
    let lines = loader.load(dir.join("d.jsonl")).unwrap();
    let array = loader.load(dir.join("d.json")).unwrap();
    let json_lines = loader.load(dir.join("lines.json")).unwrap();
    assert_eq!(lines.examples, json_lines.examples);
    assert_eq!(array.examples.iter().map(|example| example.line).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(array.examples[1].chosen_ids, lines.examples[1].chosen_ids);
    assert_eq!(lines.examples[0].prompt_ids, vec![u32::from(b'Q') + 1]);
    assert_eq!(lines.examples[0].rejected_ids, Some(vec![u32::from(b'b') + 1, 0]));
    std::fs::remove_dir_all(&dir).unwrap();
}
