//! jobdock: runs HPC batch jobs inside hardened Docker containers, as the job's own user.
//!
//! The shape is plan, then execute: `job` + `config` + `identity` + `overrides` decide, `plan` holds
//! the decision, `engine` carries it out. `app` is the only place where the process's environment,
//! ids and files meet the planner and the engine.

// Table-driven tests name their columns with tuples; that is the point of them.
#![cfg_attr(test, allow(clippy::type_complexity))]

pub mod agent;
pub mod app;
pub mod authz;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod engine;
pub mod esub;
pub mod exit;
pub mod identity;
pub mod image;
pub mod job;
pub mod logging;
pub mod overrides;
pub mod plan;
pub mod probe;
pub mod sshd;
pub mod trust;
pub mod units;

/// For the unit tests that need root (ownership checks, bind mounts, root-owned state): they are
/// `#[ignore = "needs root..."]`, which `scripts/test.sh` runs as root with `--include-ignored`;
/// run otherwise they fail here, loudly, rather than pass without testing anything.
#[cfg(test)]
pub(crate) fn needs_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: run it as root (scripts/test.sh does)"
    );
}
