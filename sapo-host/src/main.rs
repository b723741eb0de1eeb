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
use sapo_host::train::config::cuda_ordinal;

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
    /// Train a model: SFT, SAPO (DPO or ORPO), offline DPO/IPO/hinge/ORPO, or
    /// SPIN. With no arguments, runs SAPO-DPO on the shipped task model and
    /// data (about two minutes on 2 cores).
    #[command(after_long_help = sapo_host::train::config::help_text())]
    Train(TrainArgs),
    /// Score a model on held-out task prompts with the shipped judge
    /// (greedy answers; accuracy overall and per task kind).
    Eval(EvalArgs),
    /// Check a GPU against the CPU reference: every backend operation on
    /// fresh random inputs of realistic shapes, then a whole SAPO training
    /// step on a model; prints op, shape, dtype, relative error, tolerance
    /// and pass/fail, and exits non-zero if any check fails.
    Verify(VerifyArgs),
    /// Serve the command-oracle protocol with a built-in judge: the reference
    /// implementation of what `oracle = "command"` runs, and a template for
    /// your own judge.
    #[command(long_about = ORACLE_PROTOCOL)]
    Oracle(OracleArgs),
    /// Compare methods on the shipped task: a grid of `sapo train` runs
    /// (cells × seeds, fixtures/compare/grid.toml by default), judged on
    /// held-out prompts; writes results.md (mean ± 95% interval per cell),
    /// results.json and plots. Finished runs are kept, so an interrupted
    /// grid continues where it stopped.
    Compare(CompareArgs),
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// The grid file (TOML; default: the shipped fixtures/compare/grid.toml).
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Where the configs, runs, results.md, results.json and plots go.
    #[arg(long, default_value = "runs/compare")]
    output_dir: PathBuf,
    /// Use the first N seeds of the grid only.
    #[arg(long)]
    seeds: Option<usize>,
    /// Run only these cells (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// `sapo train` processes at a time (each runs with the grid's `threads`).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Print the runs and write the configs, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rebuild the report from the runs that finished; run nothing.
    #[arg(long)]
    report_only: bool,
}

const ORACLE_PROTOCOL: &str = "\
Serve the command-oracle protocol with a built-in judge.

SPPO and AIPO with `oracle = \"command\"` start `oracle_command` (through sh -c) once
and keep it running. For each prompt they write one line to its standard input:

    {\"prompt\": \"...\", \"responses\": [\"...\", \"...\"]}

and read one line from its standard output: K scores, higher is better,

    {\"scores\": [0.1, 2.5]}

or a K x K preference matrix, entry (i, j) the probability that response i beats
response j (diagonal 0.5):

    {\"preferences\": [[0.5, 0.2], [0.8, 0.5]]}

A reply that is not such JSON, has the wrong number of values or a non-finite one,
does not come within `oracle_timeout` seconds (the program is then killed), or a
program that exits, stops the run with an error naming the program and quoting the
reply or the end of its standard error. Standard error is passed through.

This command answers with the shipped task's rule judge or a length judge:

    sapo train --method sppo --set oracle=command --set 'oracle_command=sapo oracle --judge rule'";

#[derive(Debug, Args)]
struct OracleArgs {
    /// rule (the shipped task's judge, partial credit in [0, 1]) or length
    /// (characters: prefers longer answers).
    #[arg(long, default_value = "rule")]
    judge: String,
    /// Reply with the preference matrix σ(s_i − s_j) instead of the scores.
    #[arg(long)]
    matrix: bool,
    /// Misbehave on purpose from request `fault_after` on (tests of the
    /// protocol's failure handling): bad-json, wrong-count, exit or hang.
    #[arg(long, hide = true)]
    fault: Option<String>,
    /// The 0-based request from which `fault` applies.
    #[arg(long, hide = true, default_value_t = 0)]
    fault_after: usize,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The device to check: cuda or cuda:N.
    #[arg(long, default_value = "cuda:0")]
    device: String,
    /// Operation shapes: smollm2 (SmolLM2-135M's layers, 512 tokens) or small.
    #[arg(long, default_value = "smollm2")]
    shapes: String,
    /// The model of the training step (Hugging Face directory or .gguf).
    #[arg(long, default_value_os_t = sapo_host::train::config::fixtures_dir().join("task").join("model"))]
    model: PathBuf,
    /// Preference pairs in the training step.
    #[arg(long, default_value_t = 8)]
    pairs: usize,
    /// Seed of the random inputs (default: a fresh one, printed).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Debug, Args)]
struct TrainArgs {
    /// A TOML file of config fields (see below); flags and --set override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one config field, e.g. --set learning_rate=1e-6 (repeatable;
    /// applied in order, after the file and the flags).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The method (config field `method`).
    #[arg(long)]
    method: Option<String>,
    /// The starting model (config field `model`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The training data (config field `data`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The run directory (config field `output_dir`).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Seed (config field `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Optimizer steps (config field `max_steps`).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Where to train: cpu, cuda or cuda:N (config field `device`).
    #[arg(long)]
    device: Option<String>,
    /// CPU threads (config field `threads`; 0 = all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar or progress lines (errors and the summary still print).
    #[arg(long)]
    quiet: bool,
    /// Continue the run in DIR from its newest complete checkpoint (its
    /// config.toml is the config; flags and --set still apply). A run
    /// directory that already holds a checkpoint resumes without this flag.
    #[arg(long, value_name = "DIR", conflicts_with = "overwrite")]
    resume: Option<PathBuf>,
    /// Start afresh even if the output directory holds checkpoints (they are deleted).
    #[arg(long)]
    overwrite: bool,
    /// Resume even if the config differs from the checkpoint's in a field that changes the result.
    #[arg(long)]
    allow_config_change: bool,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(long, default_value_os_t = sapo_host::train::config::fixtures_dir().join("task").join("model"))]
    model: PathBuf,
    /// JSONL with a `prompt` field per line (the task's held-out split by default).
    #[arg(long, default_value_os_t = sapo_host::train::config::fixtures_dir().join("task").join("data").join("eval.jsonl"))]
    data: PathBuf,
    /// Most tokens generated per answer.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
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

/// A failure while running (exit code 1), as opposed to bad usage or input (2).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Run(anyhow::Error),
}

fn is_run_failure(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Failure>().is_some() || error.downcast_ref::<sapo_host::train::stop::WhileTraining>().is_some()
}

fn main() {
    if let Err(error) = run() {
        let code = match error.downcast_ref::<sapo_host::train::stop::Interrupted>() {
            Some(interrupted) => 128 + interrupted.signal as i32,
            None if is_run_failure(&error) => 1,
            None => 2,
        };
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
        std::process::exit(code);
    }
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Generate(args) => generate(args),
        Command::Train(args) => train(args),
        Command::Eval(args) => eval(args),
        Command::Verify(args) => verify(args),
        Command::Oracle(args) => oracle(args),
        Command::Compare(args) => compare(args),
    }
}

fn compare(args: CompareArgs) -> Result<()> {
    use sapo_host::compare::{Grid, Layout, runner, write_report};
    let mut grid = Grid::load(args.grid.as_deref())?;
    grid.select(&args.only)?;
    if let Some(n) = args.seeds {
        if n == 0 {
            bail!("--seeds 0: at least one seed");
        }
        grid.seeds.truncate(n);
    }
    let layout = Layout { root: args.output_dir.clone() };
    let runs = runner::plan(&grid, &layout)?;
    let exe = std::env::current_exe().context("finding the sapo binary")?;
    if args.dry_run {
        for run in &runs {
            let state = if runner::done(&layout, &run.cell, run.seed).is_some() { "done" } else { "to run" };
            println!("{state:6}  {} {}", exe.display(), run.args.join(" "));
        }
        return Ok(());
    }
    let (results, failures) = if args.report_only {
        (runner::finished(&layout, &runs)?, Vec::new())
    } else {
        runner::run_all(&exe, &layout, &runs, args.jobs).map_err(Failure::Run)?
    };
    let command: Vec<String> = std::env::args().collect();
    let machine = format!(
        "{} CPU threads available, {} job(s) at a time, {} {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.jobs,
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    let written = write_report(&grid, &layout, &results, &machine, &format!("sapo {}", command[1..].join(" ")))
        .map_err(Failure::Run)?;
    println!("{} of {} runs finished; report:", results.len(), runs.len());
    for path in written {
        println!("  {}", path.display());
    }
    if !failures.is_empty() {
        return Err(Failure::Run(anyhow::anyhow!("{} run(s) failed: {}", failures.len(), failures.join("; "))).into());
    }
    Ok(())
}

fn train(args: TrainArgs) -> Result<()> {
    let mut overrides = Vec::new();
    let mut flag = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            overrides.push(format!("{key}={}", toml_string(&value)));
        }
    };
    flag("method", args.method.clone());
    flag("model", args.model.as_ref().map(|p| p.display().to_string()));
    flag("data", args.data.as_ref().map(|p| p.display().to_string()));
    flag("output_dir", args.output_dir.as_ref().map(|p| p.display().to_string()));
    flag("device", args.device.clone());
    let mut numbers: Vec<String> = Vec::new();
    numbers.extend(args.seed.map(|v| format!("seed={v}")));
    numbers.extend(args.max_steps.map(|v| format!("max_steps={v}")));
    numbers.extend(args.threads.map(|v| format!("threads={v}")));
    overrides.extend(numbers);
    overrides.extend(args.set.iter().cloned());
    let config_file = match (&args.config, &args.resume) {
        (Some(file), _) => Some(file.clone()),
        (None, Some(dir)) => Some(dir.join("config.toml")),
        (None, None) => None,
    };
    if let Some(dir) = &args.resume {
        overrides.insert(0, format!("output_dir={}", toml_string(&dir.display().to_string())));
    }
    let config = sapo_host::train::config::resolve(config_file.as_deref(), &overrides)?;
    if config.threads > 0 {
        // Only fails if a pool already exists, which nothing here builds first.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(config.threads).build_global();
    }
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let flag = std::sync::Arc::clone(&sapo_host::train::stop::INTERRUPT);
        signal_hook::flag::register_usize(signal, flag, signal as usize).context("installing the signal handler")?;
    }
    let checkpoints = sapo_host::train::checkpoint::list(&config.output_dir)?;
    if args.overwrite && !checkpoints.is_empty() {
        let dir = config.output_dir.join("checkpoints");
        std::fs::remove_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    }
    let resuming = args.resume.is_some() || (!args.overwrite && !checkpoints.is_empty());
    // `resolve` has validated the device.
    let summary = match cuda_ordinal(&config.device).map_err(|reason| anyhow::anyhow!("device {reason}"))? {
        None => run_on(config, CpuBackend::new(), resuming, &args)?,
        Some(ordinal) => {
            let gpu = sapo_cuda::CudaBackend::new(ordinal).map_err(|e| Failure::Run(e.into()))?;
            let tf32 = config.precision == sapo_host::train::config::PrecisionName::Tf32;
            gpu.set_tf32(tf32).map_err(|e| Failure::Run(e.into()))?;
            if !args.quiet {
                let precision = config.precision.name();
                eprintln!("sapo: training on {} ({}) in {precision}", gpu.device_name(), gpu.arch());
            }
            run_on(config, gpu, resuming, &args)?
        }
    };
    let pair = |p: Option<(f64, f64)>, digits: usize| {
        p.map(|(a, b)| format!("{a:.digits$} → {b:.digits$}")).unwrap_or_else(|| "n/a".into())
    };
    println!("done: {} steps in {:.1} s ({:.0} tokens/s)", summary.steps, summary.seconds, summary.tokens_per_second);
    println!("  loss               {}", pair(summary.loss_first_last, 4));
    if summary.accuracy_first_last.is_some() {
        println!("  rewards/accuracies {}", pair(summary.accuracy_first_last, 3));
        println!("  rewards/margins    {}", pair(summary.margin_first_last, 4));
    }
    if let Some((before, after)) = summary.eval_before_after {
        println!(
            "  task accuracy      {:.1}% → {:.1}% (held-out prompts, greedy, judged)",
            100.0 * before,
            100.0 * after
        );
    }
    if let Some((before, after)) = summary.eval_pair_accuracy {
        println!(
            "  pair accuracy      {:.1}% → {:.1}% (held-out pairs: logπ(correct) > logπ(wrong))",
            100.0 * before,
            100.0 * after
        );
    }
    if let Some((accuracy, margin)) = summary.eval_rewards {
        println!("  held-out rewards   accuracy {accuracy:.3}, margin {margin:.4} (against the starting model)");
    }
    println!("  model              {}", summary.output_dir.join("final").display());
    println!("  metrics, plots     {}", summary.output_dir.display());
    Ok(())
}

/// A value as a TOML string literal for `--set`.
fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

fn oracle(args: OracleArgs) -> Result<()> {
    use std::io::BufRead;
    if !matches!(args.judge.as_str(), "rule" | "length") {
        bail!("--judge {}: expected rule or length", args.judge);
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for (index, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading the request")?;
        let request: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("request {index} is not JSON"))?;
        let prompt = request.get("prompt").and_then(|p| p.as_str()).context("request without `prompt`")?;
        let responses: Vec<String> = request
            .get("responses")
            .and_then(|r| r.as_array())
            .and_then(|r| r.iter().map(|v| v.as_str().map(str::to_string)).collect())
            .context("request without a `responses` list of strings")?;
        let mut scores = match args.judge.as_str() {
            "rule" => sapo_host::train::oracle::RuleOracle::scores(prompt, &responses)?,
            _ => responses.iter().map(|r| r.chars().count() as f64).collect(),
        };
        let fault = args.fault.as_deref().filter(|_| index >= args.fault_after);
        let reply = match fault {
            Some("bad-json") => "scores: 1, 2".to_string(),
            Some("exit") => {
                eprintln!("sapo oracle: exiting on purpose (--fault exit)");
                std::process::exit(3);
            }
            Some("hang") => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
            Some("wrong-count") => {
                scores.pop();
                serde_json::json!({ "scores": scores }).to_string()
            }
            Some(other) => bail!("--fault {other}: expected bad-json, wrong-count, exit or hang"),
            None if args.matrix => {
                let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
                let rows: Vec<Vec<f64>> =
                    scores.iter().map(|&own| scores.iter().map(|&other| sigmoid(own - other)).collect()).collect();
                serde_json::json!({ "preferences": rows }).to_string()
            }
            None => serde_json::json!({ "scores": scores }).to_string(),
        };
        writeln!(stdout, "{reply}")?;
        stdout.flush()?;
    }
    Ok(())
}

/// `cpu` → `None`, `cuda` → device 0, `cuda:N` → device N.
/// Starts (or resumes) the run on `backend` and trains to the end.
fn run_on<B: sapo_host::train::TrainBackend>(
    config: sapo_host::train::TrainConfig,
    backend: B,
    resuming: bool,
    args: &TrainArgs,
) -> Result<sapo_host::train::RunSummary> {
    use sapo_host::train::Trainer;
    let trainer = if resuming {
        let (trainer, notes) = Trainer::resume_on(config, backend, args.allow_config_change)?;
        if !args.quiet {
            notes.iter().for_each(|note| eprintln!("sapo: {note}"));
        }
        trainer
    } else {
        Trainer::on_backend(config, backend)?
    };
    trainer.run(args.quiet)
}

fn verify(args: VerifyArgs) -> Result<()> {
    use sapo_core::backend::Backend;
    use sapo_host::verify::{self, Backends, OpShapes, StepSetup};
    let ordinal = cuda_ordinal(&args.device).map_err(|reason| anyhow::anyhow!("--device {reason}"))?;
    let Some(ordinal) = ordinal else { bail!("sapo verify checks a GPU: --device cuda or cuda:N") };
    let shapes = match args.shapes.as_str() {
        "smollm2" => OpShapes::smollm2(),
        "small" => OpShapes::small(),
        other => bail!("--shapes {other}: expected smollm2 or small"),
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    let cpu = CpuBackend::new();
    sapo_host::task::shipped::materialise_for(&[&args.model])?;
    let loaded = model_files::load(&cpu, &args.model)?;
    let weights = loaded.params.tensors().into_iter().map(|t| cpu.download(t)).collect::<Result<Vec<_>, _>>()?;
    let setup = StepSetup::random(loaded.config, weights, args.pairs, 8, seed);
    let gpu = sapo_cuda::CudaBackend::new(ordinal).map_err(|e| Failure::Run(e.into()))?;
    println!("device: {} ({}), seed {seed}, step model {}", gpu.device_name(), gpu.arch(), args.model.display());
    let backends = Backends { reference: &cpu, candidate: &gpu };
    let mut checks = verify::check_ops(backends, &shapes, seed).map_err(Failure::Run)?;
    // Heads too wide for the blocked attention kernels take the per-row ones.
    checks.extend(verify::check_ops(backends, &OpShapes::wide_heads(), seed ^ 1).map_err(Failure::Run)?);
    // f32 and bf16 on both sides, bf16 against f32, and the GPU's f32 step twice.
    checks.extend(verify::check_step_precisions(backends, &setup).map_err(Failure::Run)?);
    // The products again with TF32 tensor cores allowed (the switch
    // PyTorch calls allow_tf32), held to TF32's tolerance.
    gpu.set_tf32(true).map_err(|e| Failure::Run(e.into()))?;
    let tf32 = verify::check_matmuls(backends, &shapes, seed ^ 2, "tf32", verify::TF32_MATMUL_TOLERANCE);
    checks.extend(tf32.map_err(Failure::Run)?);
    gpu.set_tf32(false).map_err(|e| Failure::Run(e.into()))?;
    print!("{}", verify::render(&checks));
    let failed = checks.iter().filter(|c| !c.passed()).count();
    if failed > 0 {
        return Err(Failure::Run(anyhow::anyhow!("{failed} of {} checks failed", checks.len())).into());
    }
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    use sapo_host::train::{eval, sampler::Sampler};
    let backend = CpuBackend::new();
    sapo_host::task::shipped::materialise_for(&[&args.model, &args.data])?;
    let loaded = model_files::load(&backend, &args.model)?;
    let prompts = eval::read_prompts(&args.data, &loaded.tokenizer, loaded.chat_template.as_ref())?;
    let outcome = eval::evaluate(
        &backend,
        &loaded.config,
        &loaded.params,
        &loaded.tokenizer,
        &loaded.eos_ids,
        &prompts,
        args.max_new_tokens,
        &mut Sampler::default(),
    )
    .map_err(Failure::Run)?;
    let summary = &outcome.summary;
    if args.json {
        let per_kind: serde_json::Map<String, serde_json::Value> = summary
            .per_kind
            .iter()
            .map(|(kind, s)| {
                (
                    kind.name().to_string(),
                    serde_json::json!({"n": s.n, "correct": s.correct, "mean_score": s.mean_score}),
                )
            })
            .collect();
        let record = serde_json::json!({
            "model": args.model, "n": summary.n, "correct": summary.correct, "accuracy": summary.accuracy,
            "mean_score": summary.mean_score, "mean_length": outcome.mean_length, "unjudged": outcome.unjudged,
            "per_kind": per_kind,
        });
        println!("{record}");
        return Ok(());
    }
    println!(
        "accuracy {:.1}% ({}/{}), mean score {:.3}, mean answer length {:.1} tokens",
        100.0 * summary.accuracy,
        summary.correct,
        summary.n,
        summary.mean_score,
        outcome.mean_length
    );
    for (kind, s) in &summary.per_kind {
        println!(
            "  {:<14} {:>5.1}% ({}/{})",
            kind.name(),
            100.0 * s.correct as f64 / s.n.max(1) as f64,
            s.correct,
            s.n
        );
    }
    if outcome.unjudged > 0 {
        println!("  ({} prompts the judge does not know were not scored)", outcome.unjudged);
    }
    Ok(())
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
