//! Each method's recipe: the fields whose defaults the method's authors (or
//! TRL, for the baselines) chose, as typed data over the base defaults.
//! A method's defaults come from its own recipe only.

use std::path::PathBuf;

use sapo_core::optim::ScheduleKind;

use super::names::{Method, OptimizerName, SapoObjective};
use super::{RecipeFields, fixtures_dir};

/// A method's recipe and where its values come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Whose values these are, for `--help` and the docs.
    pub source: &'static str,
    /// The fields it sets.
    pub fields: RecipeFields,
}

/// The recipe of `method`; for SAPO, of its `objective` (SAPO-DPO and
/// SAPO-ORPO were published with different optimizers and schedules).
pub fn recipe(method: Method, objective: SapoObjective) -> Recipe {
    let own = RecipeFields {
        method: Some(method),
        output_dir: Some(PathBuf::from("runs").join(method.name())),
        ..RecipeFields::default()
    };
    // The SAPO-DPO, SPIN, SPPO and AIPO authors' optimizer: RMSprop, lr 5e-7,
    // linear schedule with 10 % warm-up.
    let rmsprop_5e7 = RecipeFields {
        optimizer: Some(OptimizerName::Rmsprop),
        learning_rate: Some(5e-7),
        warmup_ratio: Some(0.1),
        ..own.clone()
    };
    let (source, fields) = match (method, objective) {
        (Method::Sft, _) => (
            "TRL SFTConfig (lr 2e-5); the shipped task's SFT data",
            RecipeFields {
                learning_rate: Some(2e-5),
                data: Some(fixtures_dir().join("task").join("data").join("sft.jsonl")),
                ..own
            },
        ),
        (Method::Sapo, SapoObjective::Dpo) => ("SAPO authors, SAPO-DPO: RMSprop, lr 5e-7, 10 % warm-up", rmsprop_5e7),
        (Method::Sapo, SapoObjective::Orpo) => (
            "SAPO authors, SAPO-ORPO: AdamW, lr 5e-6, inverse-sqrt schedule, 100 warm-up steps, λ 0.05",
            RecipeFields {
                objective: Some(SapoObjective::Orpo),
                optimizer: Some(OptimizerName::Adamw),
                learning_rate: Some(5e-6),
                lr_scheduler_type: Some(ScheduleKind::InverseSqrt),
                warmup_steps: Some(100),
                warmup_ratio: Some(0.0),
                beta: Some(0.05),
                ..own
            },
        ),
        (Method::Spin, _) => ("SPIN authors: RMSprop, lr 5e-7, 10 % warm-up, β 0.1", rmsprop_5e7),
        (Method::Sppo | Method::SppoHard, _) => (
            "SPPO authors: RMSprop, lr 5e-7, η = 1/β = 1000, sampling top-p 0.9",
            RecipeFields { beta: Some(0.001), top_k: Some(0), top_p: Some(0.9), ..rmsprop_5e7 },
        ),
        (Method::Aipo, _) => {
            ("AIPO authors: the DPO-like recipe of its iterations (β 0.1, α 0.07, λ 0.2)", rmsprop_5e7)
        }
        (Method::Dpo | Method::Ipo | Method::Hinge | Method::Orpo, _) => {
            ("TRL DPOConfig / ORPOConfig: AdamW, lr 1e-6, linear, β (λ) 0.1", own)
        }
    };
    Recipe { source, fields }
}
