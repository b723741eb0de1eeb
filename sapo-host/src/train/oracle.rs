//! Preference oracles for SPPO and AIPO: judge the K responses sampled for
//! a prompt, as scores (higher is better) or as a K×K preference matrix.
//! SPPO turns either into win rates; AIPO takes the best and the worst.
//!
//! Four oracles: the shipped task's rule judge, a length judge (AIPO's
//! length drift), and any external program through the [`CommandOracle`]
//! protocol (PairRM, an API judge, a reward model in another framework).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::config::{OracleName, TrainConfig};
use crate::model_files::hf;

/// An oracle's judgement of K responses.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// One score per response; higher is preferred.
    Scores(Vec<f64>),
    /// Row-major K×K: entry `(i, j)` is the probability that response `i`
    /// is preferred to response `j`.
    Preferences(Vec<f64>),
}

impl Judgement {
    /// SPPO's win rates `P̂_i` and the ranking that picks the pair (the
    /// scores, or the win rates themselves for a matrix).
    ///
    /// # Errors
    /// A judgement of the wrong size, non-finite values, or a matrix entry
    /// outside [0, 1].
    pub fn rates_and_ranking(&self, k: usize) -> Result<(Vec<f64>, Vec<f64>)> {
        match self {
            Judgement::Scores(scores) => {
                if scores.len() != k {
                    bail!("{} scores for {k} responses", scores.len());
                }
                let rates = sapo_core::sppo::win_rates_from_scores(scores).map_err(|e| anyhow!("{e}"))?;
                Ok((rates, scores.clone()))
            }
            Judgement::Preferences(matrix) => {
                let rates = sapo_core::sppo::win_rates_from_matrix(matrix, k).map_err(|e| anyhow!("{e}"))?;
                Ok((rates.clone(), rates))
            }
        }
    }
}

/// Judges the responses to one prompt.
pub trait Oracle: std::fmt::Debug {
    /// The judgement of `responses` to `prompt`; `token_counts` are their
    /// lengths in the policy's tokens.
    ///
    /// # Errors
    /// The oracle cannot judge this prompt, or failed.
    fn judge(&mut self, prompt: &str, responses: &[String], token_counts: &[usize]) -> Result<Judgement>;
}

/// The shipped task's judge (`crate::task::judge`): the partial-credit
/// score in [0, 1], 1 for a correct answer.
#[derive(Debug, Default)]
pub struct RuleOracle;

impl RuleOracle {
    /// The rule judge's scores.
    ///
    /// # Errors
    /// A prompt that is none of the task's kinds.
    pub fn scores(prompt: &str, responses: &[String]) -> Result<Vec<f64>> {
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

impl Oracle for RuleOracle {
    fn judge(&mut self, prompt: &str, responses: &[String], _: &[usize]) -> Result<Judgement> {
        Ok(Judgement::Scores(Self::scores(prompt, responses)?))
    }
}

/// Prefers longer responses (tokens): the pressure under which iterative
/// self-play drifts to long answers, which AIPO's terms counter.
#[derive(Debug, Default)]
pub struct LengthOracle;

impl Oracle for LengthOracle {
    fn judge(&mut self, _: &str, _: &[String], token_counts: &[usize]) -> Result<Judgement> {
        Ok(Judgement::Scores(token_counts.iter().map(|&n| n as f64).collect()))
    }
}

/// An external judge: a program speaking JSON lines on its standard input
/// and output, started once and kept running for the whole run.
///
/// For each prompt sapo writes one line
///
/// ```json
/// {"prompt": "…", "responses": ["…", "…"]}
/// ```
///
/// and waits for one line back, either K scores (higher is better)
///
/// ```json
/// {"scores": [0.1, 2.5]}
/// ```
///
/// or a K×K preference matrix, row `i` column `j` the probability that
/// response `i` beats response `j` (diagonal ½):
///
/// ```json
/// {"preferences": [[0.5, 0.2], [0.8, 0.5]]}
/// ```
///
/// Anything else is an error naming the program and quoting the reply: a
/// line that is not that JSON, a wrong number of values, a non-finite value,
/// no reply within the timeout (the program is then killed), or the program
/// exiting (its status and the end of its standard error are quoted). The
/// program's standard error is otherwise passed through to sapo's.
/// `sapo oracle` is a reference implementation of the protocol.
#[derive(Debug)]
pub struct CommandOracle {
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<std::io::Result<String>>,
    stderr_tail: Arc<Mutex<String>>,
    timeout: Duration,
    requests: usize,
}

/// The most standard-error bytes kept for an error message.
const STDERR_TAIL: usize = 2000;

impl CommandOracle {
    /// Starts `command` (run by `sh -c`, so it may hold arguments and
    /// paths) and waits at most `timeout` for each reply.
    ///
    /// # Errors
    /// The program cannot be started.
    pub fn start(command: &str, timeout: Duration) -> Result<Self> {
        if command.trim().is_empty() {
            bail!("oracle = \"command\" needs oracle_command, the program to run");
        }
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the oracle command `{command}`"))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (sender, replies) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        let tail = Arc::clone(&stderr_tail);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut chunk = [0_u8; 1024];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    return;
                }
                let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
                eprint!("{text}");
                if let Ok(mut kept) = tail.lock() {
                    kept.push_str(&text);
                    if kept.len() > STDERR_TAIL {
                        let cut = kept.len() - STDERR_TAIL;
                        let boundary = (cut..kept.len()).find(|&i| kept.is_char_boundary(i)).unwrap_or(kept.len());
                        kept.drain(..boundary);
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(CommandOracle { command: command.to_string(), child, stdin, replies, stderr_tail, timeout, requests: 0 })
    }

    fn failure(&mut self, what: &str) -> anyhow::Error {
        // Give a dying program a moment to be reaped, so its status is known.
        let mut status = None;
        for _ in 0..20 {
            if let Ok(Some(s)) = self.child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = match status {
            Some(s) => format!(", exit status {s}"),
            None => String::new(),
        };
        let stderr = self.stderr_tail.lock().map(|s| s.trim().to_string()).unwrap_or_default();
        let stderr = if stderr.is_empty() { String::new() } else { format!("; its stderr ends: {stderr}") };
        anyhow!("oracle command `{}`, request {}: {what}{status}{stderr}", self.command, self.requests)
    }

    fn ask(&mut self, request: &str) -> Result<String> {
        self.requests += 1;
        let Some(stdin) = self.stdin.as_mut() else { return Err(self.failure("the program's input is closed")) };
        if stdin
            .write_all(request.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush())
            .is_err()
        {
            return Err(self.failure("the program is not reading its input (it exited?)"));
        }
        match self.replies.recv_timeout(self.timeout) {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(error)) => Err(self.failure(&format!("reading its output: {error}"))),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let message = format!("no reply within {} s; the program was killed", self.timeout.as_secs_f64());
                Err(self.failure(&message))
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.failure("the program exited without replying")),
        }
    }

    fn parse(&mut self, line: &str, k: usize) -> Result<Judgement> {
        let quoted: String = line.chars().take(200).collect();
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(value) => value,
            Err(error) => return Err(self.failure(&format!("the reply is not JSON ({error}): {quoted:?}"))),
        };
        let numbers = |v: &serde_json::Value| -> Option<Vec<f64>> {
            v.as_array()?.iter().map(serde_json::Value::as_f64).collect::<Option<Vec<f64>>>()
        };
        let judgement = if let Some(scores) = value.get("scores") {
            let Some(scores) = numbers(scores) else {
                return Err(self.failure(&format!("`scores` is not a list of numbers: {quoted:?}")));
            };
            if scores.len() != k {
                return Err(self.failure(&format!("{} scores for {k} responses: {quoted:?}", scores.len())));
            }
            Judgement::Scores(scores)
        } else if let Some(rows) = value.get("preferences") {
            let rows: Option<Vec<Vec<f64>>> = rows.as_array().and_then(|rows| rows.iter().map(numbers).collect());
            match rows {
                Some(rows) if rows.len() == k && rows.iter().all(|row| row.len() == k) => {
                    Judgement::Preferences(rows.concat())
                }
                _ => return Err(self.failure(&format!("`preferences` is not a {k}×{k} matrix: {quoted:?}"))),
            }
        } else {
            return Err(self.failure(&format!("the reply has neither `scores` nor `preferences`: {quoted:?}")));
        };
        if let Err(error) = judgement.rates_and_ranking(k) {
            return Err(self.failure(&format!("{error}: {quoted:?}")));
        }
        Ok(judgement)
    }
}

impl Oracle for CommandOracle {
    fn judge(&mut self, prompt: &str, responses: &[String], _: &[usize]) -> Result<Judgement> {
        let request = serde_json::json!({"prompt": prompt, "responses": responses}).to_string();
        let line = self.ask(&request)?;
        self.parse(&line, responses.len())
    }
}

impl Drop for CommandOracle {
    fn drop(&mut self) {
        // Closing its input asks the program to finish; one that does not is killed.
        drop(self.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reward model in Hugging Face's `LlamaForSequenceClassification` layout
/// (also Mistral and Qwen2): the LLaMA body, then a score head `score.weight`
/// `[1, hidden]` on the final-norm hidden state of the conversation's last
/// token. Each response is scored as the conversation [user: prompt,
/// assistant: response] rendered with the reward model's own chat template
/// and tokenizer, as transformers scores it.
#[derive(Debug)]
pub struct RewardModelOracle {
    backend: sapo_core::cpu::CpuBackend,
    config: sapo_core::model::LlamaConfig,
    params: sapo_core::model::LlamaParams<sapo_core::cpu::CpuBackend>,
    score: Vec<f32>,
    tokenizer: crate::tokenizer::Tokenizer,
    template: crate::chat_template::ChatTemplate,
}

impl RewardModelOracle {
    /// Loads a sequence-classification model directory.
    ///
    /// # Errors
    /// Not such a model (its `architectures`, or a score head that is not
    /// `[1, hidden]`), or files that do not load.
    pub fn load(dir: &std::path::Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).with_context(|| format!("{}", config_path.display()))?;
        let raw: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", config_path.display()))?;
        let architecture = raw["architectures"][0].as_str().unwrap_or("");
        if !architecture.ends_with("ForSequenceClassification") {
            bail!(
                "{}: a reward model needs a *ForSequenceClassification architecture (a score head), this is `{architecture}`",
                dir.display()
            );
        }
        let mut config = hf::read_config(dir)?.model;
        // The classification model has no LM head; the body loads as if tied.
        config.tie_word_embeddings = true;
        let backend = sapo_core::cpu::CpuBackend::new();
        let params = hf::load_params(&backend, dir, &config)?;
        let (shape, score) = hf::read_tensor(dir, "score.weight")?;
        if shape != [1, config.hidden_size] {
            bail!("{}: score.weight is {shape:?}, a reward model's is [1, {}]", dir.display(), config.hidden_size);
        }
        let tokenizer = crate::tokenizer::Tokenizer::from_file(dir.join("tokenizer.json"))
            .with_context(|| format!("{}: reading the tokenizer", dir.display()))?;
        let template = crate::chat_template::ChatTemplate::from_tokenizer(&tokenizer)
            .map_err(|e| anyhow!("{}: the reward model's chat template: {e}", dir.display()))?;
        Ok(RewardModelOracle { backend, config, params, score, tokenizer, template })
    }

    /// The token ids the reward model reads for one response.
    ///
    /// # Errors
    /// A template or tokenizer error.
    pub fn conversation_ids(&self, prompt: &str, response: &str) -> Result<Vec<u32>> {
        use crate::chat_template::Message;
        let messages = [Message::new("user", prompt), Message::new("assistant", response)];
        let text = self.template.render(&messages, false).map_err(|e| anyhow!("{e}"))?;
        Ok(self.tokenizer.encode(&text, false)?)
    }

    /// One score per response.
    ///
    /// # Errors
    /// A template, tokenizer or model error.
    pub fn scores(&self, prompt: &str, responses: &[String]) -> Result<Vec<f64>> {
        use sapo_core::backend::Backend;
        use sapo_core::model::{Activations, DeviceBatch, PackedBatch, forward};
        let mut sequences = Vec::with_capacity(responses.len());
        for response in responses {
            let mut ids = self.conversation_ids(prompt, response)?;
            if ids.is_empty() {
                bail!("the reward model's template renders an empty conversation");
            }
            // One extra token, scored, so the last real token's hidden state
            // is computed (a row predicts the token after it); causal
            // attention keeps it from changing any earlier position.
            ids.push(0);
            let mut mask = vec![false; ids.len()];
            mask[ids.len() - 1] = true;
            sequences.push((ids, mask));
        }
        let views: Vec<(&[u32], &[bool])> = sequences.iter().map(|(t, m)| (t.as_slice(), m.as_slice())).collect();
        let batch = PackedBatch::new(&views, self.config.vocab_size)?;
        let device = DeviceBatch::upload(&self.backend, &batch)?;
        let mut acts = Activations::new(&self.backend, &self.config, batch.n_tokens(), batch.n_rows(), batch.n_seqs())?;
        forward(&self.backend, &self.config, &self.params, &device, &mut acts)?;
        let hidden = self.backend.download(&acts.normed)?;
        let c = self.config.hidden_size;
        Ok(batch
            .rows
            .iter()
            .map(|&row| {
                let h = &hidden[row as usize * c..][..c];
                h.iter().zip(&self.score).map(|(&x, &w)| f64::from(x) * f64::from(w)).sum()
            })
            .collect())
    }
}

impl Oracle for RewardModelOracle {
    fn judge(&mut self, prompt: &str, responses: &[String], _: &[usize]) -> Result<Judgement> {
        Ok(Judgement::Scores(self.scores(prompt, responses)?))
    }
}

/// The oracle a config names.
///
/// # Errors
/// A command oracle whose program cannot be started.
pub fn from_config(cfg: &TrainConfig) -> Result<Box<dyn Oracle>> {
    Ok(match cfg.oracle {
        OracleName::Rule => Box::new(RuleOracle),
        OracleName::Length => Box::new(LengthOracle),
        OracleName::RewardModel => Box::new(RewardModelOracle::load(&cfg.oracle_model)?),
        OracleName::Command => {
            Box::new(CommandOracle::start(&cfg.oracle_command, Duration::from_secs_f64(cfg.oracle_timeout))?)
        }
    })
}
