//! The `sapo` command.
//!
//! Today it carries only its name, version and help: the subcommands
//! (`train`, `generate`, `eval`, `verify`, `bench`) arrive with the issues
//! that build the model, the data pipeline and the trainer, and each is
//! listed in the README only once it works.

use clap::Parser;

/// Preference optimization for language models: SAPO, SPPO, AIPO, SPIN, DPO,
/// IPO, hinge and ORPO.
///
/// The numerical core (`sapo-core`) is usable from Rust today; the training
/// subcommands are not implemented yet.
#[derive(Debug, Parser)]
#[command(name = "sapo", version, about, long_about = None)]
struct Cli {}

fn main() {
    let Cli {} = Cli::parse();
    eprintln!("sapo {}: no subcommands yet; see `sapo --help` and the README", env!("CARGO_PKG_VERSION"));
    std::process::exit(2);
}
