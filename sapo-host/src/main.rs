//! The `sapo` command. `main` calls `run` and turns an error into one line
//! on stderr and a non-zero exit code (2 for bad usage or input).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use sapo_core::cpu::CpuBackend;
use sapo_core::model::{self, DecodeBuffers, GenerationConfig, KvCache};
use sapo_core::rng::SapoRng;
use sapo_core::sampling::SamplingParams;
use sapo_host::chat_template::Message;
use sapo_host::model_files;

/// Preference optimization for language models: SAPO, SPPO, AIPO, SPIN, DPO,
/// IPO, hinge and ORPO.
#[derive(Debug, Parser)]
#[command(name = "sapo", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Continue a prompt or a chat with a model: a Hugging Face directory or
    /// a .gguf file. The model's chat template formats the prompt.
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// A Hugging Face model directory (config.json, model.safetensors,
    /// tokenizer.json) or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// The user message to answer (repeat for several independent prompts,
    /// generated as one batch).
    #[arg(long, conflicts_with = "messages")]
    prompt: Vec<String>,
    /// A JSON file holding one chat: a list of {"role", "content"} messages.
    #[arg(long)]
    messages: Option<PathBuf>,
    /// Feed the prompt text as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Always take the most likely token.
    #[arg(long)]
    greedy: bool,
    /// Sampling temperature (> 0).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Keep the k most likely tokens (0 keeps all).
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Keep the most likely tokens reaching this probability mass (1 keeps all).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Most new tokens per prompt.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Seed of the sampler (prompt i uses stream i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object per prompt (prompt ids, generated ids, text)
    /// instead of the text. Without it, a single prompt's answer is printed
    /// as it is generated.
    #[arg(long)]
    json: bool,
}

fn main() {
    if let Err(error) = run() {
        // One line: the error and its causes, each cause once (some errors
        // already print their source in their own message).
        let mut line = String::new();
        for cause in error.chain().map(|c| c.to_string()) {
            if !line.contains(&cause) {
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(&cause);
            }
        }
        eprintln!("sapo: {line}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Generate(args) => generate(args),
    }
}

fn generate(args: GenerateArgs) -> Result<()> {
    let backend = CpuBackend::new();
    let loaded = model_files::load(&backend, &args.model)?;
    let chats: Vec<Vec<Message>> = match &args.messages {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
            let messages: Vec<Message> = serde_json::from_str(&text)
                .with_context(|| format!("{}: expected a list of {{\"role\", \"content\"}}", path.display()))?;
            vec![messages]
        }
        None if args.prompt.is_empty() => bail!("give --prompt TEXT or --messages FILE"),
        None => args.prompt.iter().map(|p| vec![Message::new("user", p.as_str())]).collect(),
    };
    let mut prompts = Vec::with_capacity(chats.len());
    for chat in &chats {
        let text = match (&loaded.chat_template, args.raw) {
            (Some(template), false) => template.render(chat, true)?,
            _ => chat.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n"),
        };
        prompts.push(loaded.tokenizer.encode(&text, false)?);
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let (config, params) = (&loaded.config, &loaded.params);
    let mut cache = KvCache::new(&backend, config, prompts.len(), longest + args.max_new_tokens)?;
    let mut buffers =
        DecodeBuffers::new(&backend, config, prompts.iter().map(Vec::len).sum::<usize>().max(1), prompts.len())?;
    let sampling = if args.greedy {
        SamplingParams::greedy()
    } else {
        SamplingParams { greedy: false, temperature: args.temperature, top_k: args.top_k, top_p: args.top_p }
    };
    let generation =
        GenerationConfig { max_new_tokens: args.max_new_tokens, stop_ids: loaded.eos_ids.clone(), sampling };
    let mut rngs: Vec<SapoRng> =
        (0..prompts.len()).map(|i| SapoRng::from_seed_and_stream(args.seed, i as u64)).collect();
    let prefixes: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    // One plain-text prompt streams its answer as it is generated: the text
    // of all tokens so far is decoded and only the new suffix printed, so
    // characters spanning several tokens appear whole.
    let stream = !args.json && prompts.len() == 1;
    let mut streamed_ids: Vec<u32> = Vec::new();
    let mut printed = String::new();
    let tokenizer = &loaded.tokenizer;
    let on_token = |_: usize, token: u32| {
        if stream {
            streamed_ids.push(token);
            if let Ok(text) = tokenizer.decode(&streamed_ids, true)
                && text.len() > printed.len()
                && text.starts_with(printed.as_str())
                && !text.ends_with('\u{fffd}')
            {
                print!("{}", &text[printed.len()..]);
                let _ = std::io::stdout().flush();
                printed = text;
            }
        }
    };
    let outputs = model::generate_streaming(
        &backend,
        config,
        params,
        &mut cache,
        &mut buffers,
        &prefixes,
        &generation,
        &mut rngs,
        on_token,
    )
    .map_err(|error| anyhow::anyhow!("{error}"))?;
    let mut stdout = std::io::stdout().lock();
    if stream {
        let text = tokenizer.decode(&outputs[0], true)?;
        writeln!(stdout, "{}", text.get(printed.len()..).unwrap_or(""))?;
        return Ok(());
    }
    for (prompt, output) in prompts.iter().zip(&outputs) {
        let text = loaded.tokenizer.decode(output, true)?;
        if args.json {
            let record = serde_json::json!({ "prompt_ids": prompt, "generated_ids": output, "text": text });
            writeln!(stdout, "{record}")?;
        } else {
            writeln!(stdout, "{text}")?;
        }
    }
    Ok(())
}
