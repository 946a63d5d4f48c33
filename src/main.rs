//! The binary: parse, set up logging, call the app, map the outcome to an exit code once.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = jobdock::cli::Cli::parse();
    std::process::ExitCode::from(jobdock::app::main(cli))
}
