//! What the user sees during a run: `metrics.jsonl` (one object per logged
//! step, TRL's names), a progress bar with rate, ETA and the latest
//! loss/accuracy, warnings, and the zero-margin diagnostic.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Averages of the metrics of the micro-batches of one optimizer step.
#[derive(Debug, Default, Clone)]
pub struct StepMetrics {
    sums: BTreeMap<String, (f64, u32)>,
}

impl StepMetrics {
    /// Adds one observation of `name` (averaged at [`StepMetrics::finish`]).
    pub fn add(&mut self, name: &str, value: f64) {
        let entry = self.sums.entry(name.to_string()).or_insert((0.0, 0));
        entry.0 += value;
        entry.1 += 1;
    }

    /// Sets `name` to `value` (not averaged).
    pub fn set(&mut self, name: &str, value: f64) {
        self.sums.insert(name.to_string(), (value, 1));
    }

    /// The mean of each metric.
    pub fn finish(&self) -> BTreeMap<String, f64> {
        self.sums.iter().map(|(name, (sum, count))| (name.clone(), sum / f64::from((*count).max(1)))).collect()
    }
}

/// What a checkpoint keeps of the reporter, so a resumed run's log and
/// warnings continue as if it had never stopped.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct ReporterState {
    /// Bytes of `metrics.jsonl` written so far.
    pub log_bytes: u64,
    /// Steps running with a zero margin.
    pub zero_margin_run: u64,
    /// Whether the zero-margin warning was given.
    pub warned_zero_margin: bool,
    /// Steps shown on the bar.
    pub position: u64,
}

/// The metrics log and the terminal.
#[derive(Debug)]
pub struct Reporter {
    log: BufWriter<File>,
    log_bytes: u64,
    bar: ProgressBar,
    plain: bool,
    quiet: bool,
    started: Instant,
    last_plain: Instant,
    zero_margin_run: u64,
    zero_margin_limit: u64,
    warned_zero_margin: bool,
}

impl Reporter {
    /// Creates `metrics.jsonl` in `run_dir` (a fresh run replaces an old
    /// log; a resumed one cuts it back to what its checkpoint had seen and
    /// continues it) and a progress bar of `total_steps`.
    ///
    /// # Errors
    /// The log cannot be opened.
    pub fn new(
        run_dir: &Path,
        total_steps: u64,
        zero_margin_limit: u64,
        quiet: bool,
        resume: Option<ReporterState>,
    ) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        let state = resume.unwrap_or_default();
        let mut file = match resume {
            None => File::create(&path),
            Some(state) => File::options().create(true).truncate(false).write(true).open(&path).and_then(|file| {
                file.set_len(state.log_bytes)?;
                Ok(file)
            }),
        }
        .with_context(|| format!("{}", path.display()))?;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0)).with_context(|| format!("{}", path.display()))?;
        let bar = ProgressBar::new(total_steps);
        bar.set_position(state.position);
        let plain = quiet || !console_is_terminal();
        if plain {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        } else {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {bar:28.cyan/blue} {pos}/{len} steps · {per_sec} · ETA {eta} · {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        }
        Ok(Reporter {
            log: BufWriter::new(file),
            log_bytes: state.log_bytes,
            bar,
            plain: plain && !quiet,
            quiet,
            started: Instant::now(),
            last_plain: Instant::now(),
            zero_margin_run: state.zero_margin_run,
            zero_margin_limit,
            warned_zero_margin: state.warned_zero_margin,
        })
    }

    /// Sets the bar's prefix (the phase: `sft`, `sapo`, `spin 2/3`, …).
    pub fn phase(&self, text: &str) {
        self.bar.set_prefix(text.to_string());
    }

    /// Restarts the bar for a phase of `total` steps (SPIN iterations).
    pub fn reset(&self, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(0);
    }

    /// Writes one metrics line for `step` and updates the bar.
    ///
    /// # Errors
    /// The log cannot be written.
    pub fn log_step(&mut self, step: u64, metrics: &BTreeMap<String, f64>) -> Result<()> {
        let mut object = serde_json::Map::new();
        object.insert("step".into(), step.into());
        for (name, value) in metrics {
            let value = if value.is_finite() { serde_json::Value::from(*value) } else { serde_json::Value::Null };
            object.insert(name.clone(), value);
        }
        self.write_line(&serde_json::Value::Object(object).to_string())?;
        let mut message = String::new();
        if let Some(loss) = metrics.get("loss") {
            message.push_str(&format!("loss {loss:.4}"));
        }
        if let Some(accuracy) = metrics.get("rewards/accuracies") {
            message.push_str(&format!(" · acc {accuracy:.2}"));
        }
        if let Some(margin) = metrics.get("rewards/margins") {
            message.push_str(&format!(" · margin {margin:.3}"));
        }
        self.bar.set_message(message.clone());
        if self.plain && (self.last_plain.elapsed().as_secs_f64() >= 10.0 || step <= 1) {
            self.last_plain = Instant::now();
            eprintln!("step {step}/{} · {message}", self.bar.length().unwrap_or(0));
        }
        Ok(())
    }

    /// Writes a non-step record (`{"event": …}`) to the log.
    ///
    /// # Errors
    /// The log cannot be written.
    pub fn log_event(&mut self, event: serde_json::Value) -> Result<()> {
        self.write_line(&event.to_string())
    }

    fn write_line(&mut self, line: &str) -> Result<()> {
        writeln!(self.log, "{line}")?;
        self.log.flush()?;
        self.log_bytes += line.len() as u64 + 1;
        Ok(())
    }

    /// What a checkpoint keeps of the reporter.
    pub fn state(&self) -> ReporterState {
        ReporterState {
            log_bytes: self.log_bytes,
            zero_margin_run: self.zero_margin_run,
            warned_zero_margin: self.warned_zero_margin,
            position: self.bar.position(),
        }
    }

    /// Moves the bar to `position` (a resumed phase).
    pub fn advance_to(&self, position: u64) {
        self.bar.set_position(position);
    }

    /// Advances the bar by one optimizer step.
    pub fn tick(&self) {
        self.bar.inc(1);
    }

    /// Prints a line above the bar (and logs it as a warning event).
    ///
    /// # Errors
    /// The log cannot be written.
    pub fn warn(&mut self, step: u64, text: &str) -> Result<()> {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("sapo: warning: {text}"));
        }
        self.log_event(serde_json::json!({"event": "warning", "step": step, "message": text}))
    }

    /// Prints a line above the bar (not when quiet).
    pub fn say(&self, text: &str) {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("{text}"));
        }
    }

    /// Feeds the diagnostic every DPO trainer needs: when every pair's margin
    /// `z` is exactly 0 for `zero_margin_warn_steps` steps running, the policy
    /// and reference give identical log-probs — warned once, with the causes.
    ///
    /// # Errors
    /// The log cannot be written.
    pub fn observe_margins(&mut self, step: u64, margins: &[f64], lr: f64) -> Result<()> {
        if self.zero_margin_limit == 0 || self.warned_zero_margin || margins.is_empty() {
            return Ok(());
        }
        if margins.iter().all(|&z| z == 0.0) {
            self.zero_margin_run += 1;
        } else {
            self.zero_margin_run = 0;
        }
        if self.zero_margin_run >= self.zero_margin_limit {
            self.warned_zero_margin = true;
            let cause = if lr == 0.0 {
                "the learning rate is 0, so the policy never moves from the reference".to_string()
            } else {
                "the policy equals the reference: β = 0 or a learning rate too small to change a weight, \
                 a reference refreshed from the policy every step (ref_update_steps = 1), or a stale \
                 reference log-prob cache"
                    .to_string()
            };
            let text = format!(
                "the margin z = (logπ(y_w) − logref(y_w)) − (logπ(y_l) − logref(y_l)) has been exactly 0 for {} steps running (step {step}): {cause}",
                self.zero_margin_run
            );
            self.warn(step, &text)?;
        }
        Ok(())
    }

    /// Seconds since the reporter started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn console_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}
