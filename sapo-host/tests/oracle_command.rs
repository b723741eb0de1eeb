//! The command oracle against `sapo oracle` (the reference judge program,
//! no Python needed): scores and matrices, every failure mode of the
//! protocol, and SPPO trained end to end through it.

use std::time::{Duration, Instant};

use sapo_host::train::Trainer;

mod common;
use sapo_host::train::config::resolve;
use sapo_host::train::oracle::{CommandOracle, Judgement, Oracle, RuleOracle};

fn judge_program(args: &str) -> String {
    format!("'{}' oracle {args}", env!("CARGO_BIN_EXE_sapo"))
}

fn responses(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

const PROMPTS: [(&str, [&str; 3]); 3] = [
    ("How many words: boat sun", ["2", "3", "two words"]),
    ("Sort in ascending order: 3 1 2", ["1 2 3", "3 2 1", "1 2 3"]),
    ("How many words: a b c", ["1", "3", ""]),
];

#[test]
fn scores_come_back_for_every_prompt_from_one_running_program() {
    let mut oracle = CommandOracle::start(&judge_program("--judge rule"), Duration::from_secs(30)).unwrap();
    for (prompt, texts) in PROMPTS {
        let texts = responses(&texts);
        let expected = RuleOracle::scores(prompt, &texts).unwrap();
        assert_eq!(oracle.judge(prompt, &texts, &[1, 1, 1]).unwrap(), Judgement::Scores(expected));
    }
}

#[test]
fn a_preference_matrix_reply_gives_its_row_means_as_win_rates() {
    let mut oracle = CommandOracle::start(&judge_program("--judge length --matrix"), Duration::from_secs(30)).unwrap();
    let texts = responses(&["a", "abc", "ab"]);
    let judgement = oracle.judge("any prompt", &texts, &[1, 1, 1]).unwrap();
    assert!(matches!(judgement, Judgement::Preferences(ref m) if m.len() == 9));
    let (rates, ranking) = judgement.rates_and_ranking(3).unwrap();
    let from_scores = sapo_core::sppo::win_rates_from_scores(&[1.0, 3.0, 2.0]).unwrap();
    for (a, b) in rates.iter().zip(&from_scores) {
        assert!((a - b).abs() < 1e-12, "{rates:?} vs {from_scores:?}");
    }
    assert_eq!(rates, ranking, "a matrix ranks by its win rates");
}

#[test]
fn every_failure_of_the_program_is_an_error_naming_it_and_what_went_wrong() {
    let cases = [
        ("bad-json", "the reply is not JSON"),
        ("wrong-count", "2 scores for 3 responses"),
        ("exit", "exiting on purpose"),
        ("hang", "no reply within 1 s; the program was killed"),
    ];
    let texts = responses(&PROMPTS[0].1);
    for (fault, expected) in cases {
        // The first request is answered; the second misbehaves.
        let command = judge_program(&format!("--judge rule --fault {fault} --fault-after 1"));
        let mut oracle = CommandOracle::start(&command, Duration::from_secs(1)).unwrap();
        oracle.judge(PROMPTS[0].0, &texts, &[1, 1, 1]).unwrap_or_else(|e| panic!("{fault}: first request: {e}"));
        let started = Instant::now();
        let error = oracle.judge(PROMPTS[0].0, &texts, &[1, 1, 1]).expect_err(fault).to_string();
        assert!(error.contains(expected), "{fault}: {error}");
        assert!(error.contains("oracle command") && error.contains("request 2"), "{fault}: {error}");
        assert!(started.elapsed() < Duration::from_secs(10), "{fault}: took {:?}", started.elapsed());
        if fault == "exit" {
            assert!(error.contains("exit status"), "{error}");
        }
    }
}

#[test]
fn a_program_that_does_not_exist_fails_at_its_first_request() {
    let mut oracle = CommandOracle::start("/no/such/judge --flag", Duration::from_secs(5)).unwrap();
    let error = oracle.judge("p", &responses(&["a"]), &[1]).expect_err("no program").to_string();
    assert!(error.contains("/no/such/judge"), "{error}");
    assert!(error.contains("exit status") || error.contains("exited"), "{error}");
}

#[test]
fn sppo_trains_through_the_command_oracle_as_through_the_built_in_rule() {
    let data = common::train_subset("oracle-command", "prompts", 0, 6);
    let dir = data.parent().unwrap().to_path_buf();
    let run = |name: &str, oracle: &[String]| {
        let mut overrides = vec![
            format!("output_dir={:?}", dir.join(name).display().to_string()),
            format!("data={:?}", data.display().to_string()),
            "method=\"sppo\"".into(),
            "iterations=2".into(),
            "num_samples=3".into(),
            "max_new_tokens=12".into(),
            "per_device_train_batch_size=4".into(),
            "eval_data=\"\"".into(),
        ];
        overrides.extend(oracle.iter().cloned());
        let cfg = resolve(None, &overrides).unwrap();
        Trainer::new(cfg).unwrap().run(true).unwrap();
        let samples = |i: u32| std::fs::read_to_string(dir.join(name).join(format!("samples/iteration-{i}.jsonl")));
        [samples(1).unwrap(), samples(2).unwrap()]
    };
    // The program notes each start, so the test sees how often it was started.
    let starts = dir.join("starts.log");
    let program = format!("echo started >> '{}'; exec {}", starts.display(), judge_program("--judge rule"));
    let command = format!("oracle_command={program:?}");
    let through_command = run("command", &["oracle=\"command\"".into(), command]);
    let built_in = run("rule", &["oracle=\"rule\"".into()]);
    // Same seeds, same samples, same judge: the same scores and pairs.
    assert_eq!(through_command, built_in);
    assert_eq!(through_command[0].lines().count(), 6);
    // One program for the whole run, not one per iteration.
    assert_eq!(std::fs::read_to_string(&starts).unwrap().lines().count(), 1);
}
