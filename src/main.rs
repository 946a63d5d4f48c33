//! The binary: parse, set up logging, call the app, map the outcome to an exit code once.

use clap::FromArgMatches;

fn main() -> std::process::ExitCode {
    let parsed = jobdock::cli::command()
        .try_get_matches()
        .and_then(|m| jobdock::cli::Cli::from_arg_matches(&m));
    match parsed {
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
