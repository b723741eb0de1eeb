//! The training configuration: one flat TOML table with TRL's field names,
//! every field overridable with `--set key=value`.
//!
//! Each field is declared once, below: its doc comment is its `--help` text
//! and its `config.toml` comment, its default is a typed value. Each
//! method's recipe (the authors' or TRL's values where they published one)
//! is typed data in [`recipes`]; ranges are checked in [`checks`] with
//! sapo-core's own rules where sapo-core has one.
//!
//! Resolution: the defaults of the method (base, then its recipe), then the
//! `--config` file — or, with neither a file nor a model, the shipped
//! task's recipe for SAPO — then each `--set` in order. A default that
//! depends on another field (`max_prompt_length` on `max_length`) follows
//! the value the user set. Unknown keys and bad values stop with one line
//! naming the key and where it came from. The resolved config is what the
//! run directory's `config.toml` holds, so a run can be repeated from it alone.

pub mod checks;
pub mod help;
mod names;
pub mod params;
pub mod recipes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub use help::help_text;
pub use names::{
    Init, Method, NllScopeName, OptimizerName, OracleName, PrecisionName, RefUpdate, ReplaySamplingName, SapoObjective,
    cuda_ordinal,
};
pub use recipes::Recipe;

/// A config field as `--help` and `config.toml` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The TOML key.
    pub name: &'static str,
    /// What it does (its doc comment).
    pub help: &'static str,
    /// Whether it holds a float (an integer is accepted for it).
    pub float: bool,
}

/// Whether a field's Rust type is a float, so `beta = 1` is read as 1.0.
const fn is_float(ty: &str) -> bool {
    let b = ty.as_bytes();
    b.len() == 3 && b[0] == b'f' && ((b[1] == b'6' && b[2] == b'4') || (b[1] == b'3' && b[2] == b'2'))
}

/// Declares every field once: the resolved [`TrainConfig`], the partial
/// [`RecipeFields`] with the same fields, the [`FIELDS`] table `--help` prints,
/// and the base defaults.
macro_rules! declare_config {
    ($( $(#[doc = $doc:literal])+ $name:ident: $ty:ty = $default:expr, )+) => {
        /// A resolved configuration: every field has its value.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct TrainConfig {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
        }

        /// Some fields of a config, set over the defaults: a method's recipe.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct RecipeFields {
            $( $(#[doc = $doc])+ pub $name: Option<$ty>, )+
        }

        impl RecipeFields {
            /// Sets the fields this recipe has in `config`.
            pub fn apply_to(&self, config: &mut TrainConfig) {
                $( if let Some(value) = &self.$name { config.$name = value.clone(); } )+
            }

            /// The keys it sets, in declaration order.
            pub fn keys(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $( if self.$name.is_some() { keys.push(stringify!($name)); } )+
                keys
            }
        }

        /// Every field, in the order of `sapo train --help` and of `config.toml`.
        pub const FIELDS: &[Field] = &[
            $( Field { name: stringify!($name), help: concat!($($doc, "\n"),+), float: is_float(stringify!($ty)) }, )+
        ];

        /// The defaults before any method's recipe.
        fn base_defaults() -> TrainConfig {
            TrainConfig { $( $name: $default, )+ }
        }
    };
}

declare_config! {
    /// sft | sapo | dpo | ipo | hinge | orpo | spin | sppo | sppo_hard | aipo
    method: Method = Method::Sapo,
    /// Hugging Face model directory or .gguf file to start from
    model: PathBuf = fixtures_dir().join("task").join("model"),
    /// training data, TRL's JSONL shapes (see docs/training.md)
    data: PathBuf = fixtures_dir().join("task").join("data").join("train.jsonl"),
    /// held-out prompts scored by the task judge before and after ("" = none)
    eval_data: PathBuf = fixtures_dir().join("task").join("data").join("eval.jsonl"),
    /// run directory: config.toml, metrics.jsonl, plots/, final/
    output_dir: PathBuf = PathBuf::from("runs").join(Method::Sapo.name()),
    /// seed of data order, initialisation, segment cuts and sampling
    seed: u64 = 42,
    /// pretrained | random (initializer_range normal weights; SFT from a config-only directory)
    init: Init = Init::Pretrained,
    /// standard deviation of random initialisation
    initializer_range: f64 = 0.02,
    /// SAPO's objective: dpo (SAPO-DPO) or orpo (SAPO-ORPO)
    objective: SapoObjective = SapoObjective::Dpo,
    /// β of DPO/IPO/hinge/SPIN/SPPO/AIPO (> 0); for orpo and SAPO-ORPO, λ (≥ 0; TRL calls it beta)
    beta: f64 = 0.1,
    /// ε of the sigmoid (cDPO) loss, in [0, 0.5]
    label_smoothing: f64 = 0.0,
    /// ORPO's NLL tokens: prompt_and_response (TRL) or response
    nll_scope: NllScopeName = NllScopeName::PromptAndResponse,
    /// adamw | rmsprop
    optimizer: OptimizerName = OptimizerName::Adamw,
    /// peak learning rate
    learning_rate: f64 = 1e-6,
    /// constant | constant_with_warmup | linear | cosine | inverse_sqrt
    lr_scheduler_type: sapo_core::optim::ScheduleKind = sapo_core::optim::ScheduleKind::Linear,
    /// warm-up steps as a fraction of the run (used when warmup_steps = 0)
    warmup_ratio: f64 = 0.0,
    /// warm-up optimizer steps (wins over warmup_ratio when > 0)
    warmup_steps: u64 = 0,
    /// decoupled (AdamW) or L2 (RMSprop) weight decay
    weight_decay: f64 = 0.0,
    /// AdamW β1
    adam_beta1: f64 = 0.9,
    /// AdamW β2
    adam_beta2: f64 = 0.999,
    /// AdamW ε
    adam_epsilon: f64 = 1e-8,
    /// RMSprop smoothing constant α
    rmsprop_alpha: f64 = 0.99,
    /// RMSprop ε
    rmsprop_epsilon: f64 = 1e-8,
    /// clip the global gradient norm to this (0 = no clipping)
    max_grad_norm: f64 = 1.0,
    /// pairs (or sequences for sft) per micro-batch
    per_device_train_batch_size: usize = 8,
    /// micro-batches per optimizer step
    gradient_accumulation_steps: usize = 1,
    /// passes over the data (per iteration for spin)
    num_train_epochs: u64 = 1,
    /// optimizer steps in the run; 0 = from num_train_epochs
    max_steps: u64 = 0,
    /// longest prompt + response sequence
    max_length: usize = 2048,
    /// prompt tokens kept (the last ones) when a pair is too long; unless
    /// set, max_length − max_length/8 of the max_length in force
    max_prompt_length: usize = derived_max_prompt_length(2048),
    /// shuffle the data each epoch (false: file order, as for peer comparisons)
    shuffle: bool = true,
    /// recompute layer activations in the backward pass (less memory)
    gradient_checkpointing: bool = false,
    /// write a metrics line every this many optimizer steps
    logging_steps: u64 = 1,
    /// skip (and count) an update whose gradient is non-finite instead of stopping
    skip_nonfinite_steps: bool = false,
    /// write a checkpoint every this many optimizer steps (0 = only at the end and on SIGINT/SIGTERM)
    save_steps: u64 = 500,
    /// complete checkpoints kept (0 = all); older ones are deleted after a new one is complete
    save_total_limit: usize = 2,
    /// CPU threads (0 = all cores)
    threads: usize = 0,
    /// where to train: cpu, cuda or cuda:N (an NVIDIA GPU through sapo-cuda)
    device: String = "cpu".to_string(),
    /// the layers' matrix products: f32 | tf32 (cuda: TF32 tensor cores) | bf16 (bf16 operands, f32 sums;
    /// master weights, optimizer state and everything else f32)
    precision: PrecisionName = PrecisionName::F32,
    /// warn once when rewards/margins is exactly 0 this many steps running (0 = never)
    zero_margin_warn_steps: u64 = 10,
    /// SAPO: θ_ema ← decay·θ_ema + (1−decay)·θ once per optimizer step
    ema_decay: f64 = 0.5,
    /// SAPO: regenerate rejected responses every this many optimizer steps
    sample_every: u64 = 1,
    /// SAPO: tokens the EMA model regenerates (0 = the whole response)
    segment_len: usize = 256,
    /// SAPO: replay buffer size (FIFO)
    replay_capacity: usize = 2000,
    /// SAPO: least_drawn (weight 1/(draws+1)) or uniform
    replay_sampling: ReplaySamplingName = ReplaySamplingName::LeastDrawn,
    /// SAPO-DPO reference refresh: ema | policy | fixed
    ref_update: RefUpdate = RefUpdate::Ema,
    /// SAPO-DPO: refresh the reference every this many optimizer steps
    ref_update_steps: u64 = 108,
    /// sampling temperature of SAPO's EMA model and SPIN's generations
    temperature: f32 = 0.7,
    /// sampling top-k (0 = off)
    top_k: usize = 50,
    /// sampling top-p (1 = off)
    top_p: f32 = 0.95,
    /// SPIN: iterations (each generates, then trains against the model it started from)
    spin_iterations: u64 = 2,
    /// SPIN, SPPO, AIPO: most tokens generated per response
    max_new_tokens: usize = 256,
    /// SPPO, AIPO: iterations (sample K per prompt, rank with the oracle, train one pass)
    iterations: u64 = 3,
    /// SPPO, AIPO: responses sampled per prompt (K)
    num_samples: usize = 5,
    /// SPPO, AIPO: rule (the shipped task's judge), length (prefers longer answers), command
    /// (oracle_command) or reward_model (oracle_model)
    oracle: OracleName = OracleName::Rule,
    /// SPPO, AIPO with oracle = command: the judge program (run by sh -c; JSON lines protocol, see
    /// `sapo oracle --help`)
    oracle_command: String = String::new(),
    /// SPPO, AIPO with oracle = command: seconds to wait for each reply
    oracle_timeout: f64 = 60.0,
    /// SPPO, AIPO with oracle = reward_model: a Hugging Face *ForSequenceClassification directory (score head)
    oracle_model: PathBuf = PathBuf::new(),
    /// SPPO: drop prompts whose K responses all tie (AIPO always drops them)
    skip_ties: bool = false,
    /// AIPO: α, the (1+α) scaling of the reference margin
    aipo_alpha: f64 = 0.07,
    /// AIPO: λ, weight of the length-normalised NLL of the chosen response
    aipo_lambda: f64 = 0.2,
    /// AIPO: γ, target margin
    aipo_gamma: f64 = 0.0,
    /// most tokens generated per held-out prompt by the task evaluation
    eval_max_new_tokens: usize = 32,
    /// also score the held-out prompts every this many optimizer steps (0 = before and after only)
    eval_steps: u64 = 0,
}

/// `max_prompt_length` when the user does not set it: seven eighths of
/// `max_length` (1792 of 2048), leaving the response at least an eighth.
/// TRL 1.16 has no separate prompt limit; this one only decides where a
/// too-long pair is cut, and must follow the `max_length` in force.
pub const fn derived_max_prompt_length(max_length: usize) -> usize {
    max_length - max_length / 8
}

/// The `fixtures/` directory of the shipped task's files, which the binary
/// embeds and writes to a per-version cache directory when a default first
/// needs them ([`crate::task::shipped`]), so the defaults run from an
/// installed binary as from a clone. Computing the path does no I/O:
/// [`resolve`] writes the files when the config points into it.
pub fn fixtures_dir() -> PathBuf {
    crate::task::shipped::fixtures_path()
}

/// The defaults of `method` (for SAPO, of its `objective`): the base
/// defaults, the method's recipe, and `max_prompt_length` derived.
pub fn method_defaults(method: Method, objective: SapoObjective) -> TrainConfig {
    let mut config = base_defaults();
    recipes::recipe(method, objective).fields.apply_to(&mut config);
    config.max_prompt_length = derived_max_prompt_length(config.max_length);
    config
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

fn field(key: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|field| field.name == key)
}

fn check_key(key: &str, origin: &str) -> Result<()> {
    if field(key).is_some() {
        return Ok(());
    }
    let close = FIELDS.iter().map(|field| field.name).find(|name| {
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

/// `value` as the field `key` takes it: an integer where a float is expected becomes one.
fn coerce(key: &str, value: &toml::Value) -> toml::Value {
    match (field(key).is_some_and(|field| field.float), value) {
        (true, toml::Value::Integer(i)) => toml::Value::Float(*i as f64),
        _ => value.clone(),
    }
}

/// The layer between the defaults and `--set`: the config file, or — with
/// neither a file nor a model — the shipped task's recipe for the method
/// the overrides name (SAPO when they name none; for SAPO, the recipe of
/// its objective), if the task has one for it.
fn first_layer(
    file: Option<&Path>,
    overrides: &[(String, toml::Value, String)],
) -> Result<Option<(String, toml::Table)>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|error| anyhow::anyhow!("{}: {}", path.display(), error.message().trim()))?;
        return Ok(Some((path.display().to_string(), table)));
    }
    if overrides.iter().any(|(key, _, _)| key == "model") {
        return Ok(None);
    }
    let last =
        |name: &str| overrides.iter().rev().find(|(key, _, _)| key == name).map(|(_, value, origin)| (value, origin));
    let method = match last("method") {
        Some((toml::Value::String(name), origin)) => Method::parse(name).with_context(|| origin.clone())?,
        // A non-string method is refused with its origin by `resolve`.
        Some(_) => return Ok(None),
        None => Method::Sapo,
    };
    let objective = match last("objective").and_then(|(value, _)| value.as_str()) {
        Some("orpo") => SapoObjective::Orpo,
        _ => SapoObjective::Dpo,
    };
    let Some(recipe) = recipes::task_recipe(method, objective) else { return Ok(None) };
    let table: toml::Table = toml::from_str(recipe.text).with_context(|| format!("the embedded {}", recipe.path))?;
    Ok(Some((recipe.path.to_string(), table)))
}

/// Builds the resolved config from an optional TOML file and `key=value`
/// overrides (applied in order, after the file).
///
/// # Errors
/// An unreadable or malformed file, an unknown key, a value of the wrong
/// type, or a value out of range — one line naming the key and its origin.
pub fn resolve(file: Option<&Path>, overrides: &[String]) -> Result<TrainConfig> {
    let parsed_overrides: Vec<(String, toml::Value, String)> = overrides
        .iter()
        .map(|text| parse_override(text).map(|(key, value)| (key, value, format!("--set {text}"))))
        .collect::<Result<_>>()?;
    let mut user = toml::Table::new();
    let mut origins: BTreeMap<String, String> = BTreeMap::new();
    let layer = first_layer(file, &parsed_overrides)?;
    let layer_entries =
        layer.into_iter().flat_map(|(origin, table)| table.into_iter().map(move |(k, v)| (k, v, origin.clone())));
    for (key, value, origin) in layer_entries.chain(parsed_overrides) {
        check_key(&key, &origin)?;
        user.insert(key.clone(), coerce(&key, &value));
        origins.insert(key, origin);
    }
    let method = match user.get("method") {
        None => Method::Sapo,
        Some(toml::Value::String(name)) => Method::parse(name).with_context(|| origins["method"].clone())?,
        Some(other) => bail!("{}: method must be a string, got {other}", origins["method"]),
    };
    let objective = match user.get("objective").and_then(toml::Value::as_str) {
        Some("orpo") => SapoObjective::Orpo,
        _ => SapoObjective::Dpo,
    };
    let defaults =
        toml::Table::try_from(method_defaults(method, objective)).context("the defaults do not serialise")?;
    let mut table = defaults.clone();
    table.extend(user.iter().map(|(key, value)| (key.clone(), value.clone())));
    let mut config: TrainConfig = table.try_into().map_err(|error: toml::de::Error| {
        let message = error.message().trim().to_string();
        // toml's message does not always name the field: find the user key
        // that breaks the defaults on its own.
        let culprit = user.iter().find(|(key, value)| {
            let mut trial = defaults.clone();
            trial.insert((*key).clone(), (*value).clone());
            trial.try_into::<TrainConfig>().is_err()
        });
        match culprit {
            Some((key, _)) => anyhow::anyhow!("{}: bad value for `{key}`: {message}", origins[key]),
            None => anyhow::anyhow!("config: {message}"),
        }
    })?;
    if !user.contains_key("max_prompt_length") {
        config.max_prompt_length = derived_max_prompt_length(config.max_length);
    }
    config.check().map_err(|(key, message)| {
        let origin = origins.get(key).map_or("default", String::as_str);
        anyhow::anyhow!("{origin}: bad value for `{key}`: {message}")
    })?;
    crate::task::shipped::materialise_for(&[&config.model, &config.data, &config.eval_data, &config.oracle_model])?;
    Ok(config)
}

#[cfg(test)]
mod tests;
