//! The binary: parse, set up logging, call the app, map the outcome to an exit code once.

use clap::Parser;

fn main() -> std::process::ExitCode {
    match jobdock::cli::Cli::try_parse() {
        Ok(cli) => std::process::ExitCode::from(jobdock::app::main(cli)),
        // A usage error is a refused request (64), not clap's 2, which looks like a job's own
        // code; --help and --version print to stdout and succeed.
        Err(e) => {
            let _ = e.print();
            std::process::ExitCode::from(if e.use_stderr() {
                jobdock::exit::BAD_REQUEST
            } else {
                0
            })
        }
    }
}
