//! Shared helpers for the integration tests: run the jobdock binary with a cleared environment and
//! report everything (command, env, stdout, stderr) when an expectation fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_jobdock");

/// Test users created by scripts/testbed.sh.
pub const ALICE: (&str, u32) = ("jdalice", 2001);
pub const BOB: (&str, u32) = ("jdbob", 2002);

/// slurm.conf of the test bed's job_container/tmpfs node (`scripts/slurm-testbed.sh up`): a
/// second one-node cluster, `jobdock-tmpfs`, whose every job runs in a mount namespace of its own
/// with a private /tmp and /dev/shm. Submit to it by setting this as SLURM_CONF, e.g.
/// `Run::program("srun", &["-N1", "-n1", ...]).user(ALICE.1).env("SLURM_CONF", TMPFS_SLURM_CONF)`
/// (it is the cluster's default partition, so no `-p`); start the job outside /tmp (`--chdir`),
/// which the job does not see. Without SLURM_CONF, Slurm commands use the main cluster.
pub const TMPFS_SLURM_CONF: &str = "/etc/slurm-tmpfs/slurm.conf";

/// True inside CI, where every prerequisite must be present: `CI` set to anything but an empty
/// string, `0` or `false` (CI systems say `true`, `1` or `yes`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
}

/// Returns false (after saying so loudly) if a prerequisite is missing outside CI; fails in CI.
pub fn require(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if in_ci() {
        panic!("{what} is missing: CI must run scripts/testbed.sh up first");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of a passing test, and a
    // skip must never look like a pass.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n!!! SKIPPED: {what} is missing; run `scripts/testbed.sh up` (as root) to run this test !!!\n"
    );
    false
}

pub fn test_users_exist() -> bool {
    let ok = nix::unistd::User::from_name(ALICE.0)
        .ok()
        .flatten()
        .is_some()
        && nix::unistd::User::from_name(BOB.0).ok().flatten().is_some();
    require("the test users jdalice and jdbob", ok)
        && require(
            "root (tests switch users)",
            nix::unistd::geteuid().is_root(),
        )
}

/// One run of jobdock, built up like a `Command`, with a clean environment.
pub struct Run {
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub uid: Option<u32>,
    pub stdin: Option<Vec<u8>>,
    /// What to run: jobdock itself unless `program` says otherwise.
    pub program: PathBuf,
}

/// A job id no other test, test run or concurrent test binary uses (random, 9 digits).
pub fn unique_job_id() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    100_000_000 + u32::from_le_bytes(b) % 900_000_000
}

/// The docker CLI, for what the tests check behind jobdock's back.
pub fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

/// Polls `done` until it holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Containers (any state) labelled as job `job`'s, by the docker CLI.
pub fn containers_of(job: &str) -> Vec<String> {
    docker_ps(&["-aq", "--filter", &format!("label=jobdock.job={job}")])
}

/// Job `job`'s running containers (not the never-started one jobdock reads the image with).
pub fn running_containers_of(job: &str) -> Vec<String> {
    docker_ps(&[
        "-q",
        "--filter",
        &format!("label=jobdock.job={job}"),
        "--filter",
        "status=running",
    ])
}

fn docker_ps(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .arg("ps")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Installs the jobdock under test (once per test binary) if `prerequisites` hold; see require().
pub fn with_installed_jobdock(what: &str, present: bool) -> bool {
    if !(test_users_exist() && require(what, present)) {
        return false;
    }
    install_jobdock();
    true
}

/// jobdock as a site installs it (contrib/install.sh): setuid root in /usr/local/bin.
pub const INSTALLED: &str = "/usr/local/bin/jobdock";

/// Installs the jobdock under test with contrib/install.sh, once per test binary.
pub fn install_jobdock() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/install.sh");
        let out = Command::new(script)
            .arg(BIN)
            .output()
            .expect("run contrib/install.sh");
        assert!(
            out.status.success(),
            "contrib/install.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub report: String,
}

impl Run {
    pub fn new(args: &[&str]) -> Run {
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        );
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            env,
            cwd: "/".into(),
            uid: None,
            stdin: None,
            program: BIN.into(),
        }
    }

    /// Runs `program` with `args` instead of jobdock (a shell running an LSF job file, srun).
    pub fn program(program: &str, args: &[&str]) -> Run {
        let mut run = Run::new(args);
        run.program = program.into();
        run
    }

    pub fn env(mut self, k: &str, v: &str) -> Run {
        self.env.insert(k.into(), v.into());
        self
    }

    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Run {
        self.cwd = dir.as_ref().into();
        self
    }

    /// Runs as this (non-root) user: real and effective uid and gid, no supplementary groups
    /// beyond the user's own.
    pub fn user(mut self, uid: u32) -> Run {
        self.uid = Some(uid);
        self
    }

    pub fn stdin(mut self, data: &[u8]) -> Run {
        self.stdin = Some(data.to_vec());
        self
    }

    pub fn run(self) -> Output {
        let shown = self.shown();
        let child = self.spawn(false);
        let out = child.wait_with_output().unwrap();
        Output::from(out, shown)
    }

    /// Runs `program ARGS` with this run's user, environment and directory (e.g. under script(1)).
    pub fn run_program(mut self, program: &str, args: &[&str]) -> Output {
        self.program = program.into();
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.run()
    }

    /// The command line and environment, for failure reports.
    pub fn shown(&self) -> String {
        format!(
            "\n--- command: {} {}\n--- uid: {:?}  cwd: {}\n--- env: {:?}",
            self.program.display(),
            shell_words::join(&self.args),
            self.uid,
            self.cwd.display(),
            self.env,
        )
    }

    /// Starts the command (in a process group of its own if `group`, as LSF's res starts a job)
    /// with stdout and stderr piped; stdin is written and closed first.
    pub fn spawn(self, group: bool) -> std::process::Child {
        let mut cmd = Command::new(&self.program);
        if group {
            cmd.process_group(0);
        }
        cmd.args(&self.args)
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.cwd);
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(uid) = self.uid {
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .unwrap()
                .expect("test user");
            let name = std::ffi::CString::new(user.name.clone()).unwrap();
            let gid = user.gid;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::unistd::initgroups(&name, gid)?;
                    nix::unistd::setresgid(gid, gid, gid)?;
                    let uid = nix::unistd::Uid::from_raw(uid);
                    nix::unistd::setresuid(uid, uid, uid)?;
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program.display()));
        if let Some(data) = &self.stdin {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(data).unwrap();
        }
        child
    }
}

impl Output {
    pub fn from(out: std::process::Output, shown: String) -> Output {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + out.status.signal().unwrap_or(0)
        });
        let report =
            format!("{shown}\n--- exit: {code}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
        Output {
            code,
            stdout,
            stderr,
            report,
        }
    }
}

impl Output {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "{}", self.report);
        self
    }

    pub fn code(&self, want: i32) -> &Self {
        assert_eq!(self.code, want, "{}", self.report);
        self
    }

    pub fn stderr_has(&self, want: &str) -> &Self {
        assert!(
            self.stderr.contains(want),
            "stderr lacks {want:?}{}",
            self.report
        );
        self
    }

    pub fn stdout_has(&self, want: &str) -> &Self {
        assert!(
            self.stdout.contains(want),
            "stdout lacks {want:?}{}",
            self.report
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON: {e}{}", self.report))
    }
}

/// A temporary directory jobdock will trust a config in: root-owned, and so is every directory
/// above it (jobdock refuses configs under /tmp, where anyone could have swapped them).
pub fn trusted_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let base = Path::new("/var/lib/jobdock-tests");
    std::fs::create_dir_all(base).unwrap();
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("t")
        .tempdir_in(base)
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A temporary site config; the directory (and the config) are removed on drop.
pub struct TestConfig {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TestConfig {
    /// `extra` is appended to a config whose state lives in the temp dir.
    pub fn new(extra: &str) -> TestConfig {
        let dir = trusted_tempdir();
        let path = dir.path().join("wrapper.toml");
        let text = format!(
            "[engine]\nstate_dir = \"{}/state\"\n{extra}\n",
            dir.path().display()
        );
        std::fs::write(&path, text).unwrap();
        TestConfig { dir, path }
    }

    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }
}
