//! `sapo train --help` prints the config's fields with the defaults that
//! `resolve` gives (checked per method by the config's unit tests against
//! `help_text`); this checks the binary prints exactly that text.

use std::process::Command;

#[test]
fn sapo_train_help_prints_every_field_and_default_resolve_gives() {
    let output = Command::new(env!("CARGO_BIN_EXE_sapo")).args(["train", "--help"]).output().expect("sapo runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8(output.stdout).expect("utf-8");
    let expected = sapo_host::train::config::help_text();
    for line in expected.lines().filter(|line| !line.trim().is_empty()) {
        assert!(printed.contains(line.trim_end()), "`sapo train --help` lacks: {line}");
    }
    for field in sapo_host::train::config::FIELDS {
        assert!(printed.contains(&format!("  {:<28} ", field.name)), "{} is not in --help", field.name);
    }
}
