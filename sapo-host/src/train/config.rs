//! The training configuration: one flat TOML table with TRL's field names,
//! every field overridable with `--set key=value`, defaults per method equal
//! to the authors' where they published one.
//!
//! Resolution: the embedded defaults of the method, then the `--config`
//! file, then each `--set` in order. Unknown keys and bad values stop with
//! one line naming the key and where it came from. The resolved config is
//! what the run directory's `config.toml` holds, so a run can be repeated
//! from it alone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The training methods `sapo train` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Supervised fine-tuning: NLL of the response tokens.
    Sft,
    /// Self-Augmented Preference Optimization (objective `dpo` or `orpo`).
    Sapo,
    /// Offline DPO on prompt/chosen/rejected data.
    Dpo,
    /// Offline IPO.
    Ipo,
    /// Offline hinge (SLiC).
    Hinge,
    /// Offline ORPO (no reference model).
    Orpo,
    /// Self-play fine-tuning: iterations against the previous model.
    Spin,
    /// SPPO (soft win-rate targets): iterations of K samples ranked by an oracle.
    Sppo,
    /// SPPO with hard targets.
    SppoHard,
    /// AIPO: iterations of best/worst pairs with the AIPO loss.
    Aipo,
}

impl Method {
    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            Method::Sft => "sft",
            Method::Sapo => "sapo",
            Method::Dpo => "dpo",
            Method::Ipo => "ipo",
            Method::Hinge => "hinge",
            Method::Orpo => "orpo",
            Method::Spin => "spin",
            Method::Sppo => "sppo",
            Method::SppoHard => "sppo_hard",
            Method::Aipo => "aipo",
        }
    }

    fn parse(name: &str) -> Result<Method> {
        Ok(match name {
            "sft" => Method::Sft,
            "sapo" => Method::Sapo,
            "dpo" => Method::Dpo,
            "ipo" => Method::Ipo,
            "hinge" => Method::Hinge,
            "orpo" => Method::Orpo,
            "spin" => Method::Spin,
            "sppo" => Method::Sppo,
            "sppo_hard" => Method::SppoHard,
            "aipo" => Method::Aipo,
            other => {
                bail!("unknown method `{other}` (sft, sapo, dpo, ipo, hinge, orpo, spin, sppo, sppo_hard or aipo)")
            }
        })
    }
}

/// Every field: name, default (as shown in `--help`), and what it does.
/// The order is the order of `sapo train --help` and of `config.toml`.
pub const FIELDS: &[(&str, &str, &str)] = &[
    ("method", "sapo", "sft | sapo | dpo | ipo | hinge | orpo | spin | sppo | sppo_hard | aipo"),
    ("model", "fixtures/task/model", "Hugging Face model directory or .gguf file to start from"),
    ("data", "fixtures/task/data/train.jsonl", "training data, TRL's JSONL shapes (see docs/training.md)"),
    (
        "eval_data",
        "fixtures/task/data/eval.jsonl",
        "held-out prompts scored by the task judge before and after (\"\" = none)",
    ),
    ("output_dir", "runs/<method>", "run directory: config.toml, metrics.jsonl, plots/, final/"),
    ("seed", "42", "seed of data order, initialisation, segment cuts and sampling"),
    ("init", "pretrained", "pretrained | random (initializer_range normal weights; SFT from a config-only directory)"),
    ("initializer_range", "0.02", "standard deviation of random initialisation"),
    ("objective", "dpo", "SAPO's objective: dpo (SAPO-DPO) or orpo (SAPO-ORPO)"),
    ("beta", "0.1 (sppo/ORPO λ: see docs)", "β of DPO/IPO/hinge/SPIN; for orpo, λ (TRL calls it beta; SAPO-ORPO 0.05)"),
    ("label_smoothing", "0.0", "ε of the sigmoid (cDPO) loss"),
    ("nll_scope", "prompt_and_response", "ORPO's NLL tokens: prompt_and_response (TRL) or response"),
    ("optimizer", "adamw (sapo-dpo, spin: rmsprop)", "adamw | rmsprop"),
    ("learning_rate", "per method (docs/training.md)", "peak learning rate"),
    (
        "lr_scheduler_type",
        "linear (sapo-orpo: inverse_sqrt)",
        "constant | constant_with_warmup | linear | cosine | inverse_sqrt",
    ),
    ("warmup_ratio", "0.0 (sapo-dpo: 0.1)", "warm-up steps as a fraction of the run (used when warmup_steps = 0)"),
    ("warmup_steps", "0 (sapo-orpo: 100)", "warm-up optimizer steps (wins over warmup_ratio when > 0)"),
    ("weight_decay", "0.0", "decoupled (AdamW) or L2 (RMSprop) weight decay"),
    ("adam_beta1", "0.9", "AdamW β1"),
    ("adam_beta2", "0.999", "AdamW β2"),
    ("adam_epsilon", "1e-8", "AdamW ε"),
    ("rmsprop_alpha", "0.99", "RMSprop smoothing constant α"),
    ("rmsprop_epsilon", "1e-8", "RMSprop ε"),
    ("max_grad_norm", "1.0", "clip the global gradient norm to this (0 = no clipping)"),
    ("per_device_train_batch_size", "8", "pairs (or sequences for sft) per micro-batch"),
    ("gradient_accumulation_steps", "1", "micro-batches per optimizer step"),
    ("num_train_epochs", "1", "passes over the data (per iteration for spin)"),
    ("max_steps", "0", "optimizer steps in the run; 0 = from num_train_epochs"),
    ("max_length", "2048", "longest prompt + response sequence"),
    ("max_prompt_length", "1792", "prompt tokens kept (the last ones) when a pair is too long"),
    ("shuffle", "true", "shuffle the data each epoch (false: file order, as for peer comparisons)"),
    ("gradient_checkpointing", "false", "recompute layer activations in the backward pass (less memory)"),
    ("logging_steps", "1", "write a metrics line every this many optimizer steps"),
    ("skip_nonfinite_steps", "false", "skip (and count) an update whose gradient is non-finite instead of stopping"),
    (
        "save_steps",
        "500",
        "write a checkpoint every this many optimizer steps (0 = only at the end and on SIGINT/SIGTERM)",
    ),
    (
        "save_total_limit",
        "2",
        "complete checkpoints kept (0 = all); older ones are deleted after a new one is complete",
    ),
    ("threads", "0", "CPU threads (0 = all cores)"),
    ("device", "cpu", "where to train: cpu, cuda or cuda:N (an NVIDIA GPU through sapo-cuda)"),
    (
        "precision",
        "f32",
        "the layers' matrix products: f32 | tf32 (cuda: TF32 tensor cores) | bf16 (bf16 operands, f32 sums; \
         master weights, optimizer state and everything else f32)",
    ),
    ("zero_margin_warn_steps", "10", "warn once when rewards/margins is exactly 0 this many steps running (0 = never)"),
    ("ema_decay", "0.5", "SAPO: θ_ema ← decay·θ_ema + (1−decay)·θ once per optimizer step"),
    ("sample_every", "1", "SAPO: regenerate rejected responses every this many optimizer steps"),
    ("segment_len", "256", "SAPO: tokens the EMA model regenerates (0 = the whole response)"),
    ("replay_capacity", "2000", "SAPO: replay buffer size (FIFO)"),
    ("replay_sampling", "least_drawn", "SAPO: least_drawn (weight 1/(draws+1)) or uniform"),
    ("ref_update", "ema", "SAPO-DPO reference refresh: ema | policy | fixed"),
    ("ref_update_steps", "108", "SAPO-DPO: refresh the reference every this many optimizer steps"),
    ("temperature", "0.7", "sampling temperature of SAPO's EMA model and SPIN's generations"),
    ("top_k", "50", "sampling top-k (0 = off)"),
    ("top_p", "0.95", "sampling top-p (1 = off)"),
    ("spin_iterations", "2", "SPIN: iterations (each generates, then trains against the model it started from)"),
    ("max_new_tokens", "256", "SPIN, SPPO, AIPO: most tokens generated per response"),
    ("iterations", "3", "SPPO, AIPO: iterations (sample K per prompt, rank with the oracle, train one pass)"),
    ("num_samples", "5", "SPPO, AIPO: responses sampled per prompt (K)"),
    (
        "oracle",
        "rule",
        "SPPO, AIPO: rule (the shipped task's judge), length (prefers longer answers), command (oracle_command) or reward_model (oracle_model)",
    ),
    (
        "oracle_command",
        "",
        "SPPO, AIPO with oracle = command: the judge program (run by sh -c; JSON lines protocol, see `sapo oracle --help`)",
    ),
    ("oracle_timeout", "60", "SPPO, AIPO with oracle = command: seconds to wait for each reply"),
    (
        "oracle_model",
        "",
        "SPPO, AIPO with oracle = reward_model: a Hugging Face *ForSequenceClassification directory (score head)",
    ),
    ("skip_ties", "false", "SPPO: drop prompts whose K responses all tie (AIPO always drops them)"),
    ("aipo_alpha", "0.07", "AIPO: α, the (1+α) scaling of the reference margin"),
    ("aipo_lambda", "0.2", "AIPO: λ, weight of the length-normalised NLL of the chosen response"),
    ("aipo_gamma", "0.0", "AIPO: γ, target margin"),
    ("eval_max_new_tokens", "32", "most tokens generated per held-out prompt by the task evaluation"),
    ("eval_steps", "0", "also score the held-out prompts every this many optimizer steps (0 = before and after only)"),
];

/// A resolved configuration: every field has its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // Each field is documented in `FIELDS`, which `--help` prints.
pub struct TrainConfig {
    pub method: Method,
    pub model: PathBuf,
    pub data: PathBuf,
    pub eval_data: PathBuf,
    pub output_dir: PathBuf,
    pub seed: u64,
    pub init: Init,
    pub initializer_range: f64,
    pub objective: SapoObjective,
    pub beta: f64,
    pub label_smoothing: f64,
    pub nll_scope: NllScopeName,
    pub optimizer: OptimizerName,
    pub learning_rate: f64,
    pub lr_scheduler_type: sapo_core::optim::ScheduleKind,
    pub warmup_ratio: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub rmsprop_alpha: f64,
    pub rmsprop_epsilon: f64,
    pub max_grad_norm: f64,
    pub per_device_train_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub num_train_epochs: u64,
    pub max_steps: u64,
    pub max_length: usize,
    pub max_prompt_length: usize,
    pub shuffle: bool,
    pub gradient_checkpointing: bool,
    pub logging_steps: u64,
    pub skip_nonfinite_steps: bool,
    pub save_steps: u64,
    pub save_total_limit: usize,
    pub threads: usize,
    pub device: String,
    pub precision: PrecisionName,
    pub zero_margin_warn_steps: u64,
    pub ema_decay: f64,
    pub sample_every: u64,
    pub segment_len: usize,
    pub replay_capacity: usize,
    pub replay_sampling: ReplaySamplingName,
    pub ref_update: RefUpdate,
    pub ref_update_steps: u64,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub spin_iterations: u64,
    pub max_new_tokens: usize,
    pub iterations: u64,
    pub num_samples: usize,
    pub oracle: OracleName,
    pub oracle_command: String,
    pub oracle_timeout: f64,
    pub oracle_model: PathBuf,
    pub skip_ties: bool,
    pub aipo_alpha: f64,
    pub aipo_lambda: f64,
    pub aipo_gamma: f64,
    pub eval_max_new_tokens: usize,
    pub eval_steps: u64,
}

/// The preference oracle of SPPO and AIPO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OracleName {
    /// The shipped task's judge: score in [0, 1] per response.
    Rule,
    /// Response length in tokens: prefers longer answers (AIPO's drift).
    Length,
    /// An external program (`oracle_command`) speaking JSON lines.
    Command,
    /// A sequence-classification reward model (`oracle_model`).
    RewardModel,
}

/// Where the starting weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// The model file's weights.
    Pretrained,
    /// Normal(0, initializer_range) weights, norms 1, from the model's config.
    Random,
}

/// SAPO's objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SapoObjective {
    /// SAPO-DPO (with a reference model).
    Dpo,
    /// SAPO-ORPO (no reference model).
    Orpo,
}

/// ORPO's NLL scope as a config value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NllScopeName {
    /// Prompt and chosen response (TRL).
    PromptAndResponse,
    /// Chosen response only.
    Response,
}

/// The optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerName {
    /// torch's AdamW.
    Adamw,
    /// torch's RMSprop without momentum (SAPO-DPO and SPIN authors).
    Rmsprop,
}

/// The GPU a `device` value names: `None` for `cpu`, `Some(0)` for `cuda`,
/// `Some(N)` for `cuda:N`.
///
/// ```
/// use sapo_host::train::config::cuda_ordinal;
/// assert_eq!(cuda_ordinal("cpu"), Ok(None));
/// assert_eq!(cuda_ordinal("cuda:1"), Ok(Some(1)));
/// assert!(cuda_ordinal("tpu").is_err());
/// ```
///
/// # Errors
/// Any other value, with the reason.
pub fn cuda_ordinal(device: &str) -> std::result::Result<Option<usize>, String> {
    match device {
        "cpu" => Ok(None),
        "cuda" => Ok(Some(0)),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(ordinal)) => Ok(Some(ordinal)),
            _ => Err(format!("`{other}`: expected cpu, cuda or cuda:N")),
        },
    }
}

/// The number format of the model's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrecisionName {
    /// Full f32: the reference-comparable mode.
    F32,
    /// f32 values, products on TF32 tensor cores (cuBLAS's TF32 math mode,
    /// PyTorch's `allow_tf32`); a GPU setting, refused on the CPU.
    Tf32,
    /// bf16 mixed precision ([`sapo_core::model::Precision::Bf16`]).
    Bf16,
}

impl PrecisionName {
    /// The config spelling: `f32`, `tf32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            PrecisionName::F32 => "f32",
            PrecisionName::Tf32 => "tf32",
            PrecisionName::Bf16 => "bf16",
        }
    }

    /// The model's precision: TF32 is f32 to the model (the backend rounds).
    pub fn model(self) -> sapo_core::model::Precision {
        match self {
            PrecisionName::F32 | PrecisionName::Tf32 => sapo_core::model::Precision::F32,
            PrecisionName::Bf16 => sapo_core::model::Precision::Bf16,
        }
    }
}

/// The replay buffer's draw policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplaySamplingName {
    /// Weight `1/(draws + 1)`: the authors' policy.
    LeastDrawn,
    /// Every item equally likely.
    Uniform,
}

/// What SAPO-DPO copies into the reference every `ref_update_steps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefUpdate {
    /// The EMA model (the authors' shipped default).
    Ema,
    /// The policy.
    Policy,
    /// Never refresh.
    Fixed,
}

/// The shipped task's SAPO-DPO recipe: the base layer of `sapo train` when
/// neither a config file nor a model is given.
pub const TASK_CONFIG: &str = crate::task::shipped::TASK_RECIPE;

/// The `fixtures/` directory of the shipped task's files, which the binary
/// embeds and writes to a per-version cache directory when a default first
/// needs them ([`crate::task::shipped`]), so the defaults run from an
/// installed binary as from a clone. Computing the path does no I/O:
/// [`resolve`] writes the files when the config points into it.
pub fn fixtures_dir() -> PathBuf {
    crate::task::shipped::fixtures_path()
}

/// The defaults of `method` as a TOML table (before the file and `--set`).
fn method_defaults(method: Method) -> toml::Table {
    let fixtures = fixtures_dir();
    let task = fixtures.join("task");
    let path = |p: PathBuf| toml::Value::String(p.to_string_lossy().into_owned());
    let mut t = toml::Table::new();
    let mut set = |key: &str, value: toml::Value| {
        t.insert(key.to_string(), value);
    };
    use toml::Value::{Boolean as B, Float as F, Integer as I, String as S};
    let s = |v: &str| S(v.to_string());
    set("method", s(method.name()));
    set("model", path(task.join("model")));
    let data = if method == Method::Sft { "sft.jsonl" } else { "train.jsonl" };
    set("data", path(task.join("data").join(data)));
    set("eval_data", path(task.join("data").join("eval.jsonl")));
    set("output_dir", path(PathBuf::from("runs").join(method.name())));
    set("seed", I(42));
    set("init", s("pretrained"));
    set("initializer_range", F(0.02));
    set("objective", s("dpo"));
    set("beta", F(0.1));
    set("label_smoothing", F(0.0));
    set("nll_scope", s("prompt_and_response"));
    set("optimizer", s("adamw"));
    set("learning_rate", F(1e-6));
    set("lr_scheduler_type", s("linear"));
    set("warmup_ratio", F(0.0));
    set("warmup_steps", I(0));
    set("weight_decay", F(0.0));
    set("adam_beta1", F(0.9));
    set("adam_beta2", F(0.999));
    set("adam_epsilon", F(1e-8));
    set("rmsprop_alpha", F(0.99));
    set("rmsprop_epsilon", F(1e-8));
    set("max_grad_norm", F(1.0));
    set("per_device_train_batch_size", I(8));
    set("gradient_accumulation_steps", I(1));
    set("num_train_epochs", I(1));
    set("max_steps", I(0));
    set("max_length", I(2048));
    set("max_prompt_length", I(1792));
    set("shuffle", B(true));
    set("gradient_checkpointing", B(false));
    set("logging_steps", I(1));
    set("skip_nonfinite_steps", B(false));
    set("save_steps", I(500));
    set("save_total_limit", I(2));
    set("threads", I(0));
    set("device", s("cpu"));
    set("precision", s("f32"));
    set("zero_margin_warn_steps", I(10));
    set("ema_decay", F(0.5));
    set("sample_every", I(1));
    set("segment_len", I(256));
    set("replay_capacity", I(2000));
    set("replay_sampling", s("least_drawn"));
    set("ref_update", s("ema"));
    set("ref_update_steps", I(108));
    set("temperature", F(0.7));
    set("top_k", I(50));
    set("top_p", F(0.95));
    set("spin_iterations", I(2));
    set("max_new_tokens", I(256));
    set("iterations", I(3));
    set("num_samples", I(5));
    set("oracle", s("rule"));
    set("oracle_command", s(""));
    set("oracle_timeout", F(60.0));
    set("oracle_model", s(""));
    set("skip_ties", B(false));
    set("aipo_alpha", F(0.07));
    set("aipo_lambda", F(0.2));
    set("aipo_gamma", F(0.0));
    set("eval_max_new_tokens", I(32));
    set("eval_steps", I(0));
    // Per-method values from the authors / TRL.
    match method {
        // TRL SFTConfig.
        Method::Sft => set("learning_rate", F(2e-5)),
        // SAPO-DPO: RMSprop, lr 5e-7, linear, 10 % warm-up.
        Method::Sapo => {
            set("optimizer", s("rmsprop"));
            set("learning_rate", F(5e-7));
            set("warmup_ratio", F(0.1));
        }
        // SPIN: RMSprop, lr 5e-7, β 0.1.
        Method::Spin => {
            set("optimizer", s("rmsprop"));
            set("learning_rate", F(5e-7));
            set("warmup_ratio", F(0.1));
        }
        // SPPO: RMSprop, lr 5e-7, η = 1/β = 1000, sampling temperature 0.7, top-p 0.9.
        Method::Sppo | Method::SppoHard => {
            set("optimizer", s("rmsprop"));
            set("learning_rate", F(5e-7));
            set("warmup_ratio", F(0.1));
            set("beta", F(0.001));
            set("top_k", I(0));
            set("top_p", F(0.9));
        }
        // AIPO: the DPO-like recipe of its iterations (β 0.1, α 0.07, λ 0.2).
        Method::Aipo => {
            set("optimizer", s("rmsprop"));
            set("learning_rate", F(5e-7));
            set("warmup_ratio", F(0.1));
        }
        // TRL DPOConfig / ORPOConfig: AdamW, lr 1e-6, linear, β (λ) 0.1.
        Method::Dpo | Method::Ipo | Method::Hinge | Method::Orpo => {}
    }
    t
}

/// SAPO-ORPO's defaults, applied when the user picks `objective = "orpo"`
/// without setting these fields: AdamW, lr 5e-6, inverse-sqrt schedule,
/// 100 warm-up steps, λ 0.05.
fn sapo_orpo_defaults(table: &mut toml::Table, user: &toml::Table) {
    use toml::Value::{Float as F, Integer as I, String as S};
    for (key, value) in [
        ("optimizer", S("adamw".into())),
        ("learning_rate", F(5e-6)),
        ("lr_scheduler_type", S("inverse_sqrt".into())),
        ("warmup_steps", I(100)),
        ("warmup_ratio", F(0.0)),
        ("beta", F(0.05)),
    ] {
        if !user.contains_key(key) {
            table.insert(key.to_string(), value);
        }
    }
}

/// A `key=value` override; the value is read as a TOML value (numbers,
/// booleans, quoted strings) and otherwise taken as a bare string.
fn parse_override(text: &str) -> Result<(String, toml::Value)> {
    let Some((key, value)) = text.split_once('=') else {
        bail!("--set {text}: expected key=value");
    };
    let key = key.trim().to_string();
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    Ok((key, parsed))
}

fn check_key(key: &str, origin: &str) -> Result<()> {
    if FIELDS.iter().any(|(name, _, _)| *name == key) {
        return Ok(());
    }
    let close = FIELDS.iter().map(|(name, _, _)| *name).find(|name| {
        let (a, b) = (name.as_bytes(), key.as_bytes());
        a.len().abs_diff(b.len()) <= 2 && (name.contains(key) || key.contains(name) || edit_distance(a, b) <= 2)
    });
    match close {
        Some(name) => {
            bail!("{origin}: unknown config key `{key}` (did you mean `{name}`? `sapo train --help` lists them)")
        }
        None => bail!("{origin}: unknown config key `{key}` (`sapo train --help` lists them)"),
    }
}

fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, &y) in b.iter().enumerate() {
            current.push((previous[j] + usize::from(x != y)).min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Builds the resolved config from an optional TOML file and `key=value`
/// overrides (applied in order, after the file).
///
/// # Errors
/// An unreadable or malformed file, an unknown key, a value of the wrong
/// type, or a value out of range — one line naming the key and its origin.
pub fn resolve(file: Option<&Path>, overrides: &[String]) -> Result<TrainConfig> {
    let mut user = toml::Table::new();
    let mut origins: std::collections::BTreeMap<String, String> = Default::default();
    let parsed_overrides: Vec<(String, toml::Value, String)> = overrides
        .iter()
        .map(|text| parse_override(text).map(|(key, value)| (key, value, format!("--set {text}"))))
        .collect::<Result<_>>()?;
    let mut layers: Vec<(String, toml::Table)> = Vec::new();
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|error| anyhow::anyhow!("{}: {}", path.display(), error.message().trim()))?;
            layers.push((path.display().to_string(), table));
        }
        // No config file and no model named: the shipped task's recipe, so
        // `sapo train` alone runs the embedded main job.
        None if !parsed_overrides.iter().any(|(key, _, _)| key == "model") => {
            let table: toml::Table = toml::from_str(TASK_CONFIG).context("the embedded fixtures/task/sapo.toml")?;
            layers.push(("fixtures/task/sapo.toml".to_string(), table));
        }
        None => {}
    }
    for (origin, table) in layers {
        for (key, value) in table {
            check_key(&key, &origin)?;
            origins.insert(key.clone(), origin.clone());
            user.insert(key, value);
        }
    }
    for (key, value, origin) in parsed_overrides {
        check_key(&key, &origin)?;
        origins.insert(key.clone(), origin);
        user.insert(key, value);
    }
    let method = match user.get("method") {
        None => Method::Sapo,
        Some(toml::Value::String(name)) => Method::parse(name).with_context(|| origins["method"].clone())?,
        Some(other) => bail!("{}: method must be a string, got {other}", origins["method"]),
    };
    let mut table = method_defaults(method);
    if method == Method::Sapo && user.get("objective").and_then(toml::Value::as_str) == Some("orpo") {
        sapo_orpo_defaults(&mut table, &user);
    }
    for (key, value) in &user {
        table.insert(key.clone(), value.clone());
    }
    // Integers are fine where floats are expected.
    for key in FLOAT_KEYS {
        if let Some(toml::Value::Integer(i)) = table.get(*key) {
            let value = *i as f64;
            table.insert((*key).to_string(), toml::Value::Float(value));
        }
    }
    let config: TrainConfig = table.clone().try_into().map_err(|error: toml::de::Error| {
        let message = error.message().trim().to_string();
        // toml's message does not always name the field: find the user key
        // that breaks the defaults on its own.
        let defaults = method_defaults(method);
        let culprit = user.iter().find(|(key, value)| {
            let mut trial = defaults.clone();
            let value = match (FLOAT_KEYS.contains(&key.as_str()), value) {
                (true, toml::Value::Integer(i)) => toml::Value::Float(*i as f64),
                _ => (*value).clone(),
            };
            trial.insert((*key).clone(), value);
            trial.try_into::<TrainConfig>().is_err()
        });
        match culprit {
            Some((key, _)) => anyhow::anyhow!("{}: bad value for `{key}`: {message}", origins[key]),
            None => anyhow::anyhow!("config: {message}"),
        }
    })?;
    config.validate().map_err(|(key, message)| {
        let origin = origins.get(key).map_or("default", String::as_str);
        anyhow::anyhow!("{origin}: bad value for `{key}`: {message}")
    })?;
    crate::task::shipped::materialise_for(&[&config.model, &config.data, &config.eval_data, &config.oracle_model])?;
    Ok(config)
}

const FLOAT_KEYS: &[&str] = &[
    "initializer_range",
    "beta",
    "label_smoothing",
    "learning_rate",
    "warmup_ratio",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "rmsprop_alpha",
    "rmsprop_epsilon",
    "max_grad_norm",
    "ema_decay",
    "temperature",
    "top_p",
    "aipo_alpha",
    "aipo_lambda",
    "aipo_gamma",
];

impl TrainConfig {
    /// Range checks the type system does not do; `(key, reason)`.
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let check =
            |ok: bool, key: &'static str, reason: &str| if ok { Ok(()) } else { Err((key, reason.to_string())) };
        check(self.learning_rate.is_finite() && self.learning_rate >= 0.0, "learning_rate", "must be ≥ 0")?;
        check(self.beta.is_finite() && self.beta >= 0.0, "beta", "must be ≥ 0")?;
        check((0.0..0.5).contains(&self.label_smoothing), "label_smoothing", "must be in [0, 0.5)")?;
        check((0.0..=1.0).contains(&self.warmup_ratio), "warmup_ratio", "must be in [0, 1]")?;
        check(self.per_device_train_batch_size >= 1, "per_device_train_batch_size", "must be ≥ 1")?;
        check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be ≥ 1")?;
        check(self.max_steps > 0 || self.num_train_epochs > 0, "num_train_epochs", "must be ≥ 1 when max_steps = 0")?;
        check(self.max_length >= 2, "max_length", "must be ≥ 2")?;
        let on_gpu = cuda_ordinal(&self.device).map_err(|reason| ("device", reason))?.is_some();
        check(on_gpu || self.precision != PrecisionName::Tf32, "precision", "tf32 needs device = cuda (a GPU)")?;
        check(self.oracle_timeout.is_finite() && self.oracle_timeout > 0.0, "oracle_timeout", "must be > 0")?;
        let command_oracle = self.oracle == OracleName::Command;
        let needs_command = !command_oracle || !self.oracle_command.trim().is_empty();
        check(needs_command, "oracle_command", "must name a program when oracle = \"command\"")?;
        let needs_model = self.oracle != OracleName::RewardModel || !self.oracle_model.as_os_str().is_empty();
        check(needs_model, "oracle_model", "must name a model directory when oracle = \"reward_model\"")?;
        if self.max_prompt_length >= self.max_length {
            let reason = format!("{} must be below max_length ({})", self.max_prompt_length, self.max_length);
            return Err(("max_prompt_length", reason));
        }
        check(self.max_grad_norm >= 0.0, "max_grad_norm", "must be ≥ 0")?;
        check(self.logging_steps >= 1, "logging_steps", "must be ≥ 1")?;
        check((0.0..=1.0).contains(&self.ema_decay), "ema_decay", "must be in [0, 1]")?;
        check(self.sample_every >= 1, "sample_every", "must be ≥ 1")?;
        check(self.replay_capacity >= 1, "replay_capacity", "must be ≥ 1")?;
        check(self.ref_update_steps >= 1, "ref_update_steps", "must be ≥ 1")?;
        check(self.temperature > 0.0 && self.temperature.is_finite(), "temperature", "must be > 0")?;
        check(self.top_p > 0.0 && self.top_p <= 1.0, "top_p", "must be in (0, 1]")?;
        check(self.spin_iterations >= 1, "spin_iterations", "must be ≥ 1")?;
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be ≥ 1")?;
        check(self.iterations >= 1, "iterations", "must be ≥ 1")?;
        check(self.num_samples >= 2, "num_samples", "must be ≥ 2 (a chosen and a rejected)")?;
        check(self.initializer_range > 0.0, "initializer_range", "must be > 0")?;
        Ok(())
    }

    /// The config as TOML, with each field's help as a comment above it.
    pub fn to_toml(&self) -> String {
        let table: toml::Table = toml::Table::try_from(self).unwrap_or_default();
        let mut out =
            String::from("# The resolved configuration of this run (`sapo train --config` this file repeats it).\n");
        for (name, _, help) in FIELDS {
            if let Some(value) = table.get(*name) {
                let _ = writeln!(out, "\n# {help}\n{name} = {value}");
            }
        }
        out
    }
}

/// The field list for `sapo train --help`.
pub fn help_text() -> String {
    let mut out = String::from(
        "Config fields (TOML via --config, or --set key=value; later wins):\n\
         Defaults are per method: those marked so follow the authors' recipes.\n\n",
    );
    for (name, default, help) in FIELDS {
        let _ = writeln!(out, "  {name:<28} {help}\n  {:<28} default: {default}", "");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_a_default_and_help_entry() {
        for method in [Method::Sft, Method::Sapo, Method::Dpo, Method::Ipo, Method::Hinge, Method::Orpo, Method::Spin] {
            let table = method_defaults(method);
            let config: TrainConfig = table.clone().try_into().expect("defaults deserialize");
            assert_eq!(config.method, method);
            for key in table.keys() {
                assert!(FIELDS.iter().any(|(name, _, _)| name == key), "{key} has no help entry");
            }
            assert_eq!(table.len(), FIELDS.len());
        }
    }

    #[test]
    fn overrides_apply_in_order_and_sapo_orpo_gets_its_recipe() {
        let model = || "model=some/model".to_string();
        let config = resolve(None, &[model(), "objective=orpo".into(), "learning_rate=1e-5".into()]).expect("valid");
        assert_eq!(config.objective, SapoObjective::Orpo);
        assert_eq!(config.learning_rate, 1e-5);
        assert_eq!(config.lr_scheduler_type, sapo_core::optim::ScheduleKind::InverseSqrt);
        assert_eq!((config.warmup_steps, config.beta), (100, 0.05));
        let config = resolve(None, &[model(), "method=dpo".into(), "beta=1".into()]).expect("integer as float");
        assert_eq!((config.method, config.beta, config.optimizer), (Method::Dpo, 1.0, OptimizerName::Adamw));
    }

    #[test]
    fn bad_keys_and_values_name_themselves() {
        let error = resolve(None, &["learning_rat=1".into()]).unwrap_err().to_string();
        assert!(error.contains("unknown config key `learning_rat`") && error.contains("learning_rate"), "{error}");
        let error = resolve(None, &["optimizer=sgd".into()]).unwrap_err().to_string();
        assert!(error.contains("--set optimizer=sgd") && error.contains("optimizer"), "{error}");
        let error = resolve(None, &["top_p=2".into()]).unwrap_err().to_string();
        assert!(error.contains("top_p") && error.contains("(0, 1]"), "{error}");
        let error = resolve(None, &["method=sppx".into()]).unwrap_err().to_string();
        assert!(error.contains("sppx"), "{error}");
    }

    #[test]
    fn no_file_and_no_model_runs_the_shipped_task_recipe() {
        let config = resolve(None, &[]).expect("the embedded recipe resolves");
        assert_eq!((config.method, config.objective), (Method::Sapo, SapoObjective::Dpo));
        assert!(config.model.ends_with("fixtures/task/model"), "{}", config.model.display());
        assert_eq!(config.max_steps, 376);
        let config = resolve(None, &["model=m".into()]).expect("authors' defaults");
        assert_eq!((config.learning_rate, config.max_steps), (5e-7, 0));
    }

    #[test]
    fn resolved_config_round_trips_through_its_toml() {
        let config = resolve(None, &["method=spin".into(), "segment_len=0".into()]).expect("valid");
        let text = config.to_toml();
        let again: TrainConfig = toml::from_str(&text).expect("written config parses");
        assert_eq!(again, config);
    }
}
