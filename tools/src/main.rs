//! The `slidemesh-tools` command line: one subcommand per module under `cmd/`.
//!
//! Parsing is clap's; each subcommand validates its flags into library types and calls
//! the library, so everything testable lives in the library.

mod cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cmd::Cli::parse();
    match cli.command.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("slidemesh-tools: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
