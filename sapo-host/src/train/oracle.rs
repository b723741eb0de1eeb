//! Preference oracles for SPPO and AIPO: score the K responses sampled for
//! a prompt. Higher is better; SPPO turns scores into win rates, AIPO takes
//! the best and the worst.

use anyhow::{Result, bail};

use super::config::OracleName;

/// Scores the responses to one prompt.
pub trait Oracle: std::fmt::Debug {
    /// One score per response (higher is preferred).
    ///
    /// # Errors
    /// The oracle cannot score this prompt.
    fn scores(&mut self, prompt: &str, responses: &[String], token_counts: &[usize]) -> Result<Vec<f64>>;
}

/// The shipped task's judge (`crate::task::judge`): the partial-credit
/// score in [0, 1], 1 for a correct answer.
#[derive(Debug, Default)]
pub struct RuleOracle;

impl Oracle for RuleOracle {
    fn scores(&mut self, prompt: &str, responses: &[String], _: &[usize]) -> Result<Vec<f64>> {
        responses
            .iter()
            .map(|response| match crate::task::judge(prompt, response) {
                Some(verdict) => Ok(verdict.score),
                None => bail!(
                    "the rule oracle does not know the task of prompt {:?}",
                    prompt.chars().take(60).collect::<String>()
                ),
            })
            .collect()
    }
}

/// Prefers longer responses (tokens): the pressure under which iterative
/// self-play drifts to long answers, which AIPO's terms counter.
#[derive(Debug, Default)]
pub struct LengthOracle;

impl Oracle for LengthOracle {
    fn scores(&mut self, _: &str, _: &[String], token_counts: &[usize]) -> Result<Vec<f64>> {
        Ok(token_counts.iter().map(|&n| n as f64).collect())
    }
}

/// The oracle a config names.
pub fn from_config(name: OracleName) -> Box<dyn Oracle> {
    match name {
        OracleName::Rule => Box::new(RuleOracle),
        OracleName::Length => Box::new(LengthOracle),
    }
}
