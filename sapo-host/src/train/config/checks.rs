//! Range checks the type system does not do. One rule per parameter: the
//! objective's and the optimizer's hyper-parameters are checked by
//! sapo-core's own checks (the ones its computations apply), the warm-up
//! ratio by sapo-core's schedule; the rest are the trainer's own rules.

use sapo_core::objectives::ObjectiveError;
use sapo_core::optim::{OptimError, warmup_steps_from_ratio};

use super::TrainConfig;
use super::names::{Method, OptimizerName, OracleName, PrecisionName, cuda_ordinal};

/// A field that failed its check and why.
pub type CheckFailure = (&'static str, String);

impl TrainConfig {
    /// Checks every field's range; the first failure as `(key, reason)`.
    ///
    /// # Errors
    /// The first field out of its range.
    pub fn check(&self) -> Result<(), CheckFailure> {
        let check =
            |ok: bool, key: &'static str, reason: &str| if ok { Ok(()) } else { Err((key, reason.to_string())) };
        if let Some(objective) = self.objective() {
            objective.check().map_err(|error| self.objective_failure(error))?;
        }
        match self.optimizer {
            OptimizerName::Adamw => self.adamw_params().check(),
            OptimizerName::Rmsprop => self.rmsprop_params().check(),
        }
        .map_err(|error| self.optimizer_failure(error))?;
        check(self.learning_rate.is_finite() && self.learning_rate >= 0.0, "learning_rate", "must be ≥ 0")?;
        warmup_steps_from_ratio(self.warmup_ratio, 1).map_err(|_| ("warmup_ratio", "must be in [0, 1]".to_string()))?;
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
        check(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0, "max_grad_norm", "must be ≥ 0")?;
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

    /// The config key behind an objective's parameter, with sapo-core's reason.
    fn objective_failure(&self, error: ObjectiveError) -> CheckFailure {
        let key = match &error {
            ObjectiveError::InvalidParameter { name, .. } => match *name {
                "beta" => "beta",
                "label_smoothing" => "label_smoothing",
                // ORPO's λ is the config's `beta`, as TRL names it; AIPO's is its own.
                "lambda" if self.method == Method::Aipo => "aipo_lambda",
                "lambda" => "beta",
                "alpha" => "aipo_alpha",
                "gamma" => "aipo_gamma",
                _ => "method",
            },
            _ => "method",
        };
        (key, error.to_string())
    }

    /// The config key behind an optimizer's parameter, with sapo-core's reason.
    fn optimizer_failure(&self, error: OptimError) -> CheckFailure {
        let key = match (&error, self.optimizer) {
            (OptimError::InvalidParameter { name, .. }, optimizer) => match (*name, optimizer) {
                ("beta1", _) => "adam_beta1",
                ("beta2", _) => "adam_beta2",
                ("eps", OptimizerName::Adamw) => "adam_epsilon",
                ("eps", OptimizerName::Rmsprop) => "rmsprop_epsilon",
                ("alpha", _) => "rmsprop_alpha",
                ("weight_decay", _) => "weight_decay",
                _ => "optimizer",
            },
            _ => "optimizer",
        };
        (key, error.to_string())
    }
}
