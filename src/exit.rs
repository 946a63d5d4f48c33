//! The exit-code contract in one table. Nothing else in jobdock picks a process exit code.
//!
//! A job's own code passes through untouched and a job killed by signal `n` gives `128 + n`
//! (as a shell reports it). jobdock's own failures use the `sysexits.h` codes below, so a site can
//! requeue on [`INFRASTRUCTURE`] alone (LSF `REQUEUE_EXIT_VALUES=75`, Slurm epilog logic) without
//! requeueing jobs that cannot succeed as they are.

/// The job itself: its exit status, or `128 + n` if it died of signal `n`.
pub const JOB: &str = "0-255 (job's own code; 128+n = killed by signal n)";

/// A bad request: a bad option or variable, an image name, a path or value that the site policy
/// refuses, an image that fails jobdock's checks. Retrying the same job will fail the same way.
pub const BAD_REQUEST: u8 = 64;

/// jobdock itself failed unexpectedly (a bug): report it.
pub const INTERNAL: u8 = 70;

/// The infrastructure failed: dockerd unreachable, a registry error, a daemon error mid-job. The
/// same job may succeed on retry or on another node.
pub const INFRASTRUCTURE: u8 = 75;

/// The site configuration (`wrapper.toml`) is invalid or untrustworthy: the admin must fix it.
pub const CONFIG: u8 = 78;

/// The command was not found in the image (as `sh` and `docker run` report it).
pub const COMMAND_NOT_FOUND: u8 = 127;

/// The command exists in the image but could not be executed.
pub const COMMAND_NOT_EXECUTABLE: u8 = 126;

/// Every code jobdock can exit with, with its meaning: the README's table is generated from this
/// and a test keeps them equal.
pub const TABLE: &[(&str, &str)] = &[
    (JOB, "the job ran: its own exit code is passed through"),
    (
        "64",
        "bad request: refused by site policy, or not valid (fix the job, do not requeue)",
    ),
    ("70", "internal error in jobdock (a bug: please report it)"),
    (
        "75",
        "infrastructure failure: daemon or registry (safe to requeue)",
    ),
    (
        "78",
        "site configuration invalid or untrusted (the admin must fix wrapper.toml)",
    ),
    (
        "126",
        "the command exists in the image but cannot be executed",
    ),
    ("127", "the command was not found in the image"),
];

/// The exit code for a job that exited with `status` or was killed by `signal`.
pub fn from_job(status: i64, signal: Option<i32>) -> u8 {
    match signal {
        Some(n) if (1..=127).contains(&n) => 128 + u8::try_from(n).expect("1..=127 fits"),
        _ => u8::try_from(status & 0xff).expect("masked to a byte"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_codes_pass_through_and_signals_map_to_128_plus_n() {
        let cases = [
            ("success", 0, None, 0),
            ("plain failure", 3, None, 3),
            ("max", 255, None, 255),
            ("sigkill", 137, Some(9), 137),
            ("sigterm", 0, Some(15), 143),
            ("wraps like a shell", 256 + 7, None, 7),
        ];
        for (name, status, signal, want) in cases {
            assert_eq!(from_job(status, signal), want, "{name}");
        }
    }

    #[test]
    fn jobdock_codes_are_distinct_and_listed() {
        let codes = [
            BAD_REQUEST,
            INTERNAL,
            INFRASTRUCTURE,
            CONFIG,
            COMMAND_NOT_FOUND,
            COMMAND_NOT_EXECUTABLE,
        ];
        for (i, a) in codes.iter().enumerate() {
            for b in &codes[i + 1..] {
                assert_ne!(a, b);
            }
            assert!(
                TABLE.iter().any(|(code, _)| *code == a.to_string()),
                "{a} not in TABLE"
            );
        }
    }
}
