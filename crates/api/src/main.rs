//! The `camledger` binary: parse, set up tracing, run, map the outcome to an exit code.
//!
//! Exit codes: 0 success; 1 the command failed (the error and its causes on stderr, each
//! once); 2 usage error (clap: unknown flag, missing or invalid value such as a `--server`
//! without `http://`; a malformed `evaluate --labels` file), before anything runs.

use std::process::ExitCode;

use camledger_api::cli::Command;
use clap::Parser;

fn main() -> ExitCode {
    let cli = camledger_api::cli::Cli::parse();
    // Commands that print their result on stdout log only warnings by default, so the
    // result is not repeated as an INFO line (CAMLEDGER_LOG still overrides).
    let default_level = match cli.command {
        Command::Bench { .. }
        | Command::Snapshot { .. }
        | Command::Snapshots { .. }
        | Command::Restore { .. }
        | Command::Checkpoint { .. }
        | Command::Checkpoints { .. }
        | Command::Evaluate(_) => "warn",
        _ => "info",
    };
    camledger_api::telemetry::init(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(camledger_api::cli::EXIT_FAILURE);
        }
    };
    match runtime.block_on(camledger_api::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", camledger_api::cli::error_message(&e));
            ExitCode::from(camledger_api::cli::exit_status(&e))
        }
    }
}
