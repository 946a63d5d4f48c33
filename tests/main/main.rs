//! The integration tests, one binary: the jobdock binary without a daemon (`cli`), against the
//! real dockerd of scripts/testbed.sh (`engine`, `security`), under LSF as it runs a job starter
//! (`lsf`), under the test bed's Slurm cluster (`slurm`) and its two-node MPI cluster (`mpi`), and
//! its Debian package in a Debian container (`package`). One harness for all of them (`util`): a
//! `TestJob` builder, one job-id generator, one test user type, and the ways a job reaches
//! jobdock (a site's config, a setuid copy, the installed binary).
//!
//! Run one part with `cargo test --test main engine::` (as root, with the test bed up). A new
//! suite is a module here (Cargo.toml has `autotests = false`: a file straight under tests/
//! would never be built); `every_suite_is_a_module_of_this_binary` fails on one that is not.

mod util;

mod authz;
mod cli;
mod engine;
mod lsf;
mod mpi;
mod package;
mod security;
mod slurm;

/// With `autotests = false`, a suite put straight under tests/ (or beside this file without a
/// `mod` line) would never be built or run, and its tests would pass by not existing.
#[test]
fn every_suite_is_a_module_of_this_binary() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&tests), ["main"], "a suite outside tests/main/");
    let this = include_str!("main.rs");
    for file in names(&tests.join("main")) {
        let module = file.strip_suffix(".rs").unwrap_or(&file);
        assert!(
            module == "main" || this.contains(&format!("\nmod {module};\n")),
            "tests/main/{file} is not a module of tests/main/main.rs"
        );
    }
}
