//! Writes the shipped task directory: `cargo run -p sapo-host --example make_task -- <out_dir>`.
//!
//! The output is a pure function of `TaskConfig::default()` (seed 42, 3000
//! train and 300 eval examples), so running it again writes the same bytes;
//! `fixtures/task/` is its output, and `tests/task_judge.rs` checks that the
//! two still agree. Prints the average rendered length of an example in
//! tokens, which bounds the sequence length a trainer needs.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sapo_host::chat_template::{ChatTemplate, Message};
use sapo_host::task::{TaskConfig, generate_examples, task_files};
use sapo_host::tokenizer::Tokenizer;

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out_dir), None) = (args.next(), args.next()) else {
        bail!("usage: make_task <out_dir>");
    };
    let out_dir = PathBuf::from(out_dir);
    let config = TaskConfig::default();
    for file in task_files(&config)? {
        let path = out_dir.join(file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, &file.bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} ({} bytes)", path.display(), file.bytes.len());
    }
    report_lengths(&out_dir.join("base"), &config)
}

/// Prints the mean and largest token count of prompt + answer as the chat
/// template renders them, with the tokenizer just written.
fn report_lengths(base_dir: &Path, config: &TaskConfig) -> anyhow::Result<()> {
    let tokenizer = Tokenizer::from_file(base_dir.join("tokenizer.json"))?;
    let template = ChatTemplate::from_tokenizer(&tokenizer)?;
    let examples = generate_examples(config.seed, config.n_train);
    let mut lengths = Vec::with_capacity(examples.len());
    for example in &examples {
        let conversation =
            [Message::new("user", example.prompt.as_str()), Message::new("assistant", example.answer.as_str())];
        lengths.push(tokenizer.encode(&template.render(&conversation, false)?, false)?.len());
    }
    let mean = lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
    let longest = lengths.iter().max().copied().unwrap_or(0);
    println!(
        "rendered prompt + answer: {mean:.1} tokens on average, {longest} at most ({} train examples)",
        lengths.len()
    );
    Ok(())
}
