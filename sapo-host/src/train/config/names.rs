//! The named values of config fields: methods, optimizers, oracles,
//! precisions and the other enumerations, spelled as in `config.toml`.

use anyhow::{Result, bail};
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
    /// Every method, in `--help` order.
    pub const ALL: [Method; 10] = [
        Method::Sft,
        Method::Sapo,
        Method::Dpo,
        Method::Ipo,
        Method::Hinge,
        Method::Orpo,
        Method::Spin,
        Method::Sppo,
        Method::SppoHard,
        Method::Aipo,
    ];

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

    /// The method a config names.
    ///
    /// # Errors
    /// An unknown name, listing the known ones.
    pub fn parse(name: &str) -> Result<Method> {
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
