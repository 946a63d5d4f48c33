//! The integration tests, one binary: the jobdock binary without a daemon (`cli`), against the
//! real dockerd of scripts/testbed.sh (`engine`, `security`), under LSF as it runs a job starter
//! (`lsf`) and under the test bed's Slurm cluster (`slurm`). One harness for all of them
//! (`util`): a `TestJob` builder, one job-id generator, one test user type, and the sites' configs.
//!
//! Run one part with `cargo test --test main engine::` (as root, with the test bed up).

mod util;

mod cli;
mod engine;
mod lsf;
mod security;
mod slurm;
