//! Shared helpers for the integration tests: run the jobdock binary with a cleared environment and
//! report everything (command, env, stdout, stderr) when an expectation fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_jobdock");

/// Test users created by scripts/testbed.sh.
pub(crate) const ALICE: (&str, u32) = ("jdalice", 2001);
pub(crate) const BOB: (&str, u32) = ("jdbob", 2002);

/// slurm.conf of the test bed's job_container/tmpfs node (`scripts/slurm-testbed.sh up`): a
/// second one-node cluster, `jobdock-tmpfs`, whose every job runs in a mount namespace of its own
/// with a private /tmp and /dev/shm. Submit to it by setting this as SLURM_CONF, e.g.
/// `Run::program("srun", &["-N1", "-n1", ...]).user(ALICE.1).env("SLURM_CONF", TMPFS_SLURM_CONF)`
/// (it is the cluster's default partition, so no `-p`); start the job outside /tmp (`--chdir`),
/// which the job does not see. Without SLURM_CONF, Slurm commands use the main cluster.
pub(crate) const TMPFS_SLURM_CONF: &str = "/etc/slurm-tmpfs/slurm.conf";

/// True inside CI, where every prerequisite must be present: `CI` set to anything but an empty
/// string, `0` or `false` (CI systems say `true`, `1` or `yes`).
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
}

/// Returns false (after saying so loudly) if a prerequisite is missing outside CI; fails in CI.
pub(crate) fn require(what: &str, present: bool) -> bool {
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

pub(crate) fn test_users_exist() -> bool {
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
pub(crate) struct Run {
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub uid: Option<u32>,
    pub stdin: Option<Vec<u8>>,
    /// What to run: jobdock itself unless `program` says otherwise.
    pub program: PathBuf,
}

/// A job id no other test, test run or concurrent test binary uses (random, 9 digits).
pub(crate) fn unique_job_id() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    100_000_000 + u32::from_le_bytes(b) % 900_000_000
}

/// The docker CLI, for what the tests check behind jobdock's back.
pub(crate) fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

/// Polls `done` until it holds, failing the test after `limit`.
pub(crate) fn wait_until(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
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
pub(crate) fn containers_of(job: &str) -> Vec<String> {
    docker_ps(&["-aq", "--filter", &format!("label=jobdock.job={job}")])
}

/// Job `job`'s running containers (not the never-started one jobdock reads the image with).
pub(crate) fn running_containers_of(job: &str) -> Vec<String> {
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
pub(crate) fn with_installed_jobdock(what: &str, present: bool) -> bool {
    if !(test_users_exist() && require(what, present)) {
        return false;
    }
    install_jobdock();
    true
}

/// jobdock as a site installs it (contrib/install.sh): setuid root in /usr/local/bin.
pub(crate) const INSTALLED: &str = "/usr/local/bin/jobdock";

/// The release build of the jobdock under test, as sites install it (no debug-only test hooks):
/// built here, once per test binary (a no-op when scripts/test.sh has just built it), so it is
/// never older than the source under test.
pub(crate) fn release_binary() -> &'static Path {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--bin", "jobdock"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo build --release");
        assert!(
            out.status.success(),
            "cargo build --release failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        target.join("release/jobdock")
    })
}

/// Installs the release build of the jobdock under test with contrib/install.sh, once per test
/// binary.
pub(crate) fn install_jobdock() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/install.sh");
        let out = Command::new(script)
            .arg(release_binary())
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

pub(crate) struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub report: String,
}

impl Run {
    pub(crate) fn new(args: &[&str]) -> Run {
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
    pub(crate) fn program(program: &str, args: &[&str]) -> Run {
        let mut run = Run::new(args);
        run.program = program.into();
        run
    }

    pub(crate) fn env(mut self, k: &str, v: &str) -> Run {
        self.env.insert(k.into(), v.into());
        self
    }

    pub(crate) fn cwd(mut self, dir: impl AsRef<Path>) -> Run {
        self.cwd = dir.as_ref().into();
        self
    }

    /// Runs as this (non-root) user: real and effective uid and gid, no supplementary groups
    /// beyond the user's own.
    pub(crate) fn user(mut self, uid: u32) -> Run {
        self.uid = Some(uid);
        self
    }

    pub(crate) fn stdin(mut self, data: &[u8]) -> Run {
        self.stdin = Some(data.to_vec());
        self
    }

    pub(crate) fn run(self) -> Output {
        let shown = self.shown();
        let child = self.spawn(false);
        let out = child.wait_with_output().unwrap();
        Output::from(out, shown)
    }

    /// Runs `program ARGS` with this run's user, environment and directory (e.g. under script(1)).
    pub(crate) fn run_program(mut self, program: &str, args: &[&str]) -> Output {
        self.program = program.into();
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.run()
    }

    /// The command line and environment, for failure reports.
    pub(crate) fn shown(&self) -> String {
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
    pub(crate) fn spawn(self, group: bool) -> std::process::Child {
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
            become_user(&mut cmd, uid);
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

/// Makes `cmd` run as `uid` with its primary and supplementary groups, as a login would. The
/// groups are looked up here, before the fork: between fork and exec in this threaded process only
/// async-signal-safe calls may run (no NSS lookup, no allocation), so the child only sets ids.
pub(crate) fn become_user(cmd: &mut Command, uid: u32) {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .unwrap()
        .expect("test user");
    let name = std::ffi::CString::new(user.name.clone()).unwrap();
    let groups = nix::unistd::getgrouplist(&name, user.gid).expect("the user's groups");
    let gid = user.gid;
    let uid = user.uid;
    // SAFETY: the closure makes only the setgroups, setresgid and setresuid system calls, which
    // are async-signal-safe, on data prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setresgid(gid, gid, gid)?;
            nix::unistd::setresuid(uid, uid, uid)?;
            Ok(())
        });
    }
}

impl Output {
    pub(crate) fn from(out: std::process::Output, shown: String) -> Output {
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
    pub(crate) fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "{}", self.report);
        self
    }

    pub(crate) fn code(&self, want: i32) -> &Self {
        assert_eq!(self.code, want, "{}", self.report);
        self
    }

    pub(crate) fn stderr_has(&self, want: &str) -> &Self {
        assert!(
            self.stderr.contains(want),
            "stderr lacks {want:?}{}",
            self.report
        );
        self
    }

    pub(crate) fn stdout_has(&self, want: &str) -> &Self {
        assert!(
            self.stdout.contains(want),
            "stdout lacks {want:?}{}",
            self.report
        );
        self
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON: {e}{}", self.report))
    }
}

/// A temporary directory jobdock will trust a config in: root-owned, and so is every directory
/// above it (jobdock refuses configs under /tmp, where anyone could have swapped them).
pub(crate) fn trusted_tempdir() -> tempfile::TempDir {
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
pub(crate) struct TestConfig {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TestConfig {
    /// `extra` is appended to a config whose state lives in the temp dir.
    pub(crate) fn new(extra: &str) -> TestConfig {
        let dir = trusted_tempdir();
        let path = dir.path().join("wrapper.toml");
        let text = format!(
            "[engine]\nstate_dir = \"{}/state\"\n{extra}\n",
            dir.path().display()
        );
        std::fs::write(&path, text).unwrap();
        TestConfig { dir, path }
    }

    pub(crate) fn arg(&self) -> String {
        self.path.display().to_string()
    }
}

/// A running child's stdout, read line by line on a thread of its own, so that a test can wait for
/// what the job says ("ready" once its traps are set) instead of sleeping; the rest of the output
/// stays for the end.
pub(crate) struct Watch {
    lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<Vec<u8>>,
    seen: Vec<String>,
}

impl Watch {
    /// Takes `child`'s stdout (it must be piped).
    pub(crate) fn stdout_of(child: &mut std::process::Child) -> Watch {
        use std::io::BufRead;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut r = std::io::BufReader::new(stdout);
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                all.extend_from_slice(&line);
                let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_string());
                line.clear();
            }
            all
        });
        Watch {
            lines,
            reader,
            seen: Vec::new(),
        }
    }

    /// Waits until the job prints the line `want`, failing the test after `limit` or at the end of
    /// its output.
    pub(crate) fn wait_for(&mut self, want: &str, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(line) => self.seen.push(line),
                Err(e) => panic!(
                    "waiting for the job to print {want:?}: {e:?}; it printed {:?}",
                    self.seen
                ),
            }
        }
    }

    /// The child's whole output once it has ended: stdout as read, stderr, exit status.
    pub(crate) fn finish(self, child: std::process::Child) -> std::process::Output {
        let out = child.wait_with_output().expect("the child ends");
        let stdout = self.reader.join().expect("the reader ends");
        std::process::Output { stdout, ..out }
    }
}
