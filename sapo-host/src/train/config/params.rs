//! The sapo-core parameters a config makes: the objective and the
//! optimizer's hyper-parameters, built in one place for the trainer and for
//! the range checks.

use sapo_core::objectives::{
    AipoParams, DpoParams, HingeParams, IpoParams, NllScope, Objective, OrpoParams, SpinParams, SppoHardParams,
    SppoParams,
};
use sapo_core::optim::{AdamWParams, RmspropParams};

use super::TrainConfig;
use super::names::{Method, NllScopeName, SapoObjective};

impl TrainConfig {
    /// The preference objective the method trains with; `None` for SFT.
    pub fn objective(&self) -> Option<Objective> {
        let orpo = OrpoParams {
            lambda: self.beta,
            nll_scope: match self.nll_scope {
                NllScopeName::PromptAndResponse => NllScope::PromptAndResponse,
                NllScopeName::Response => NllScope::Response,
            },
        };
        let dpo = DpoParams { beta: self.beta, label_smoothing: self.label_smoothing };
        Some(match self.method {
            Method::Sft => return None,
            Method::Dpo => Objective::Dpo(dpo),
            Method::Ipo => Objective::Ipo(IpoParams { beta: self.beta }),
            Method::Hinge => Objective::Hinge(HingeParams { beta: self.beta }),
            Method::Orpo => Objective::Orpo(orpo),
            Method::Spin => Objective::Spin(SpinParams { beta: self.beta }),
            Method::Sppo => Objective::Sppo(SppoParams { beta: self.beta }),
            Method::SppoHard => Objective::SppoHard(SppoHardParams { beta: self.beta }),
            Method::Aipo => Objective::Aipo(AipoParams {
                beta: self.beta,
                alpha: self.aipo_alpha,
                lambda: self.aipo_lambda,
                gamma: self.aipo_gamma,
                label_smoothing: self.label_smoothing,
            }),
            Method::Sapo => match self.objective {
                SapoObjective::Dpo => Objective::Dpo(dpo),
                SapoObjective::Orpo => Objective::Orpo(orpo),
            },
        })
    }

    /// AdamW's hyper-parameters.
    pub fn adamw_params(&self) -> AdamWParams {
        AdamWParams {
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_epsilon,
            weight_decay: self.weight_decay,
        }
    }

    /// RMSprop's hyper-parameters (no momentum, not centred, as the authors ran it).
    pub fn rmsprop_params(&self) -> RmspropParams {
        RmspropParams {
            alpha: self.rmsprop_alpha,
            eps: self.rmsprop_epsilon,
            weight_decay: self.weight_decay,
            momentum: 0.0,
            centered: false,
        }
    }
}
