//! The `asc` binary: parse the command line, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    asc_gateway::cli::run(asc_gateway::cli::Cli::parse())
}
