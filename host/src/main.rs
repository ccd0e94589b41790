//! `agros-sync`: the command-line front end of the agros-sync host.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
