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

/// A recipe of the shipped task, as the binary carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskRecipe {
    /// Where it lives in the source tree (`fixtures/task/recipes/<name>.toml`).
    pub path: &'static str,
    /// Its TOML text.
    pub text: &'static str,
}

/// The shipped task's recipe for `method` (for SAPO, of its `objective`):
/// the comparison grid's tuned settings for it on the task, which `sapo
/// train` layers over the method's defaults when it runs on the shipped
/// task with neither a config file nor a model. `None` for IPO and hinge,
/// which the grid did not tune: they run with their own defaults.
pub fn task_recipe(method: Method, objective: SapoObjective) -> Option<TaskRecipe> {
    let (name, path) = match (method, objective) {
        (Method::Sapo, SapoObjective::Dpo) => ("sapo", "fixtures/task/recipes/sapo.toml"),
        (Method::Sapo, SapoObjective::Orpo) => ("sapo_orpo", "fixtures/task/recipes/sapo_orpo.toml"),
        (Method::Sft, _) => ("sft", "fixtures/task/recipes/sft.toml"),
        (Method::Dpo, _) => ("dpo", "fixtures/task/recipes/dpo.toml"),
        (Method::Orpo, _) => ("orpo", "fixtures/task/recipes/orpo.toml"),
        (Method::Spin, _) => ("spin", "fixtures/task/recipes/spin.toml"),
        (Method::Sppo, _) => ("sppo", "fixtures/task/recipes/sppo.toml"),
        (Method::SppoHard, _) => ("sppo_hard", "fixtures/task/recipes/sppo_hard.toml"),
        (Method::Aipo, _) => ("aipo", "fixtures/task/recipes/aipo.toml"),
        (Method::Ipo | Method::Hinge, _) => return None,
    };
    crate::task::shipped::task_recipe(name).map(|text| TaskRecipe { path, text })
}
