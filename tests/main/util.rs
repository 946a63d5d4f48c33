//! The one harness of the integration tests: the test users, one job-id generator, one builder for
//! a process under test (`TestJob`: jobdock or a scheduler's program, its arguments, environment,
//! user, directory and input) whose `Out` reports everything (command, env, exit, stdout, stderr)
//! when an expectation fails, and the ways a job reaches jobdock: `Site` (a config of the test's
//! own, jobs run as root for a user, as a scheduler's prolog would), `Setuid` (a setuid-root copy
//! run as the user) and `INSTALLED` (the Debian package's copy, for LSF and Slurm). Every
//! container of a `Site`'s or a `Setuid`'s jobs is removed when the test ends.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_jobdock");

/// dockerd's socket on the test bed.
pub(crate) const SOCKET: &str = "/var/run/docker.sock";

/// A user scripts/testbed.sh creates: name, uid (= gid) and home directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TestUser {
    pub name: &'static str,
    pub uid: u32,
    pub home: &'static str,
}

pub(crate) const ALICE: TestUser = TestUser {
    name: "jdalice",
    uid: 2001,
    home: "/home/jdalice",
};

pub(crate) const BOB: TestUser = TestUser {
    name: "jdbob",
    uid: 2002,
    home: "/home/jdbob",
};

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
    let ok = [ALICE, BOB].iter().all(|u| {
        nix::unistd::User::from_name(u.name)
            .ok()
            .flatten()
            .is_some()
    });
    require("the test users jdalice and jdbob", ok)
        && require(
            "root (tests switch users)",
            nix::unistd::geteuid().is_root(),
        )
}

/// Whether dockerd answers a ping on [`SOCKET`].
pub(crate) fn daemon_answers() -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(SOCKET) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let mut answer = String::new();
    s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").is_ok()
        && s.read_to_string(&mut answer).is_ok()
        && answer.ends_with("OK")
}

/// Whether the test bed is there for jobs on the real dockerd: root, the test users, a dockerd
/// answering, and `images` (see require()).
pub(crate) fn bed_is_up(images: &[&str]) -> bool {
    if !test_users_exist()
        || !require(
            &format!("a dockerd answering on {SOCKET}"),
            daemon_answers(),
        )
    {
        return false;
    }
    images.iter().all(|image| {
        let present = docker(&["image", "inspect", image]).status.success();
        require(&format!("the image {image}"), present)
    })
}

/// The pid of the dockerd on [`SOCKET`], from its pid file: another dockerd may run on the node (a
/// test bed's own, on another socket), and then `pidof dockerd` names both. Without a pid file,
/// `pidof`'s answer.
pub(crate) fn dockerd_pid() -> String {
    std::fs::read_to_string("/var/run/docker.pid")
        .ok()
        .or_else(|| {
            let out = Command::new("pidof").arg("dockerd").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .map(|p| p.trim().to_string())
        .unwrap_or_default()
}

/// dockerd's mount table, as its process sees it.
pub(crate) fn dockerds_mounts() -> String {
    std::fs::read_to_string(format!("/proc/{}/mountinfo", dockerd_pid())).unwrap_or_default()
}

/// The public registry's copy of the test image, `127.0.0.1:5000/jobdock-test/busybox`, which
/// the engine module removes from the node to count its pulls. The suites share one binary, so a
/// test that runs, pulls or removes it holds this (`let _held = util::hold(&REMOTE_BUSYBOX)`).
pub(crate) static REMOTE_BUSYBOX: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds `lock` for the rest of the test, even if a test that held it failed.
pub(crate) fn hold(lock: &'static std::sync::Mutex<()>) -> std::sync::MutexGuard<'static, ()> {
    lock.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A job id (an LSF or Slurm job number) no other test, test run or concurrent test process uses:
/// random, 9 digits.
pub(crate) fn job_id() -> String {
    use std::io::Read;
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    (100_000_000 + u32::from_le_bytes(b) % 900_000_000).to_string()
}

/// The job ids a test handed out: every container of those jobs is removed when this is dropped,
/// at the end of the test, even when it fails.
#[derive(Default)]
pub(crate) struct Jobs(std::cell::RefCell<Vec<String>>);

impl Jobs {
    /// A fresh job id whose containers go when this is dropped.
    pub(crate) fn id(&self) -> String {
        let id = job_id();
        self.0.borrow_mut().push(id.clone());
        id
    }

    /// The last id handed out.
    pub(crate) fn last(&self) -> String {
        self.0.borrow().last().cloned().unwrap_or_default()
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        for id in self.0.borrow().iter() {
            let ids = containers_of(id);
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                docker(&args);
            }
        }
    }
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

/// jobdock as a site installs it (the Debian package of scripts/build-deb.sh): setuid root in
/// /usr/bin.
pub(crate) const INSTALLED: &str = "/usr/bin/jobdock";

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

/// Installs the release build of the jobdock under test as the Debian package, once per test
/// binary: built into target/debian, then `dpkg -i`. The test bed's /etc/jobdock/wrapper.toml
/// is kept without a question (`--force-confold`: the node's config is the site's).
pub(crate) fn install_jobdock() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian");
        let deb = build_deb(&out, env!("CARGO_PKG_VERSION"));
        TestJob::program(
            "dpkg",
            &[
                "-i",
                "--force-confdef",
                "--force-confold",
                &deb.display().to_string(),
            ],
        )
        .run()
        .ok();
    });
}

/// Builds the Debian package of the jobdock under test (scripts/build-deb.sh, from the release
/// builds of jobdock and its SPANK plugin) with `version` into `out`; returns its path.
pub(crate) fn build_deb(out: &Path, version: &str) -> PathBuf {
    let binary = release_binary();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let spank = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "jobdock-spank"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo build --release -p jobdock-spank");
    assert!(
        spank.status.success(),
        "cargo build --release -p jobdock-spank failed:\n{}",
        String::from_utf8_lossy(&spank.stderr)
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-deb.sh");
    let built = TestJob::program(script, &[&out.display().to_string()])
        .env("JOBDOCK_BINARY", &binary.display().to_string())
        .env(
            "SPANK_PLUGIN",
            &binary
                .with_file_name("libjobdock_spank.so")
                .display()
                .to_string(),
        )
        .env("DEB_VERSION", version)
        .run();
    built.ok();
    let arch = TestJob::program("dpkg", &["--print-architecture"]).run();
    let deb = out.join(format!("jobdock_{version}_{}.deb", arch.ok().stdout.trim()));
    assert_eq!(
        built.stdout.trim(),
        deb.display().to_string(),
        "{}",
        built.report
    );
    deb
}

/// One process under test, built up like a `Command` from a cleared environment: jobdock (the
/// build under test, as root, unless told otherwise) or a program that runs it (`/bin/sh` with an
/// LSF job file, srun, sbatch, script(1)).
#[derive(Clone)]
pub(crate) struct TestJob {
    /// What runs: the jobdock under test, a copy of it (setuid, installed), or another program.
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// Runs as this user (real and effective ids, the user's groups), else as root.
    pub user: Option<TestUser>,
    /// `None`: stdin is /dev/null. `Some(bytes)`: a pipe; `run` writes the bytes and closes it,
    /// `spawn` leaves it to the caller.
    pub stdin: Option<Vec<u8>>,
    /// Starts in a process group of its own, as LSF's res starts a job.
    pub group: bool,
    /// Starts in a directory that no longer exists (`getcwd` fails).
    pub cwd_gone: bool,
    /// The job id it was given (LSB_JOBID), if any.
    pub id: String,
}

impl TestJob {
    /// `jobdock ARGS` (the build under test) as root, from `/`, with only PATH set.
    pub(crate) fn new(args: &[&str]) -> TestJob {
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        );
        TestJob {
            program: BIN.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env,
            cwd: "/".into(),
            user: None,
            stdin: None,
            group: false,
            cwd_gone: false,
            id: String::new(),
        }
    }

    /// Runs `program` with `args` instead of jobdock.
    pub(crate) fn program(program: impl AsRef<Path>, args: &[&str]) -> TestJob {
        let mut job = TestJob::new(args);
        job.program = program.as_ref().into();
        job
    }

    /// As LSF's job `id` (LSB_JOBID).
    pub(crate) fn job(mut self, id: String) -> TestJob {
        self.env.insert("LSB_JOBID".into(), id.clone());
        self.id = id;
        self
    }

    pub(crate) fn env(mut self, k: &str, v: &str) -> TestJob {
        self.env.insert(k.into(), v.into());
        self
    }

    pub(crate) fn cwd(mut self, dir: impl AsRef<Path>) -> TestJob {
        self.cwd = dir.as_ref().into();
        self
    }

    /// Runs as `user`: real and effective uid and gid, and the user's groups, as a login would.
    pub(crate) fn user(mut self, user: TestUser) -> TestJob {
        self.user = Some(user);
        self
    }

    /// As `user` from their home directory, with HOME set, as from their login shell.
    pub(crate) fn by(self, user: TestUser) -> TestJob {
        self.user(user).cwd(user.home).env("HOME", user.home)
    }

    pub(crate) fn stdin(mut self, data: &[u8]) -> TestJob {
        self.stdin = Some(data.to_vec());
        self
    }

    /// In a process group of its own, as LSF's res starts a job file.
    pub(crate) fn in_own_group(mut self) -> TestJob {
        self.group = true;
        self
    }

    /// Runs it to the end, writing its input meanwhile.
    pub(crate) fn run(&self) -> Out {
        let start = std::time::Instant::now();
        let mut child = self.spawn();
        let feeder = child.stdin.take().map(|mut pipe| {
            let input = self.stdin.clone().unwrap_or_default();
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&input);
            })
        });
        let out = child.wait_with_output().unwrap();
        if let Some(feeder) = feeder {
            feeder.join().unwrap();
        }
        Out::timed(out, start.elapsed(), self.shown())
    }

    /// Runs `program ARGS` with this job's user, environment and directory (e.g. under script(1)).
    pub(crate) fn run_program(mut self, program: &str, args: &[&str]) -> Out {
        self.program = program.into();
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.run()
    }

    /// The command line, user, directory and environment, for failure reports.
    pub(crate) fn shown(&self) -> String {
        format!(
            "\n--- command: {} {}\n--- user: {:?}  cwd: {}{}\n--- env: {:?}",
            self.program.display(),
            shell_words::join(&self.args),
            self.user.map(|u| u.name),
            self.cwd.display(),
            if self.cwd_gone { " (removed)" } else { "" },
            self.env,
        )
    }

    /// The command, ready to start: stdout and stderr piped, stdin as `stdin` says.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        if self.group {
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
        if self.cwd_gone {
            let gone = std::ffi::CString::new(self.cwd.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: one rmdir system call on a path prepared before the fork (a CStr needs no
            // allocation in nix): async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    nix::unistd::unlinkat(
                        nix::fcntl::AT_FDCWD,
                        gone.as_c_str(),
                        nix::unistd::UnlinkatFlags::RemoveDir,
                    )?;
                    Ok(())
                });
            }
        }
        if let Some(user) = self.user {
            become_user(&mut cmd, user.uid);
        }
        cmd
    }

    /// Starts it; a piped stdin is left open to the caller.
    ///
    /// A program this process has just written (`Setuid`'s copy) can be "busy" for a moment: a
    /// child another test thread forked holds the copy's write descriptor until it execs
    /// (ETXTBSY, rust-lang/rust#114554). That is retried; any other error fails the test.
    pub(crate) fn spawn(&self) -> std::process::Child {
        let mut busy = 0;
        loop {
            match self.command().spawn() {
                Ok(child) => return child,
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && busy < 100 => {
                    busy += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("spawn {}: {e}", self.program.display()),
            }
        }
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

/// How a [`TestJob`] ended, with everything a failure report needs.
pub(crate) struct Out {
    pub status: std::process::ExitStatus,
    /// The exit code as a shell reports it: `128 + n` for a process killed by signal `n`.
    pub code: i32,
    /// stdout as text (lossily); `stdout_bytes` as written.
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
    pub elapsed: std::time::Duration,
    /// The command, its exit and its output, for assertion messages.
    pub report: String,
}

impl Out {
    pub(crate) fn from(out: std::process::Output, shown: String) -> Out {
        Out::timed(out, std::time::Duration::ZERO, shown)
    }

    /// The end of a process that ran for `elapsed`.
    pub(crate) fn timed(
        out: std::process::Output,
        elapsed: std::time::Duration,
        shown: String,
    ) -> Out {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + out.status.signal().unwrap_or(0)
        });
        let report = format!(
            "{shown}\n--- {} after {elapsed:?}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
            out.status
        );
        Out {
            status: out.status,
            code,
            stdout,
            stdout_bytes: out.stdout,
            stderr,
            elapsed,
            report,
        }
    }

    #[track_caller]
    pub(crate) fn fail(&self, why: &str) -> ! {
        panic!("{why}{}", self.report)
    }

    #[track_caller]
    pub(crate) fn ok(&self) -> &Self {
        self.code(0)
    }

    /// It exited with `want` (and was not killed by a signal).
    #[track_caller]
    pub(crate) fn code(&self, want: i32) -> &Self {
        if self.status.code() != Some(want) {
            self.fail(&format!("expected exit code {want}"));
        }
        self
    }

    #[track_caller]
    pub(crate) fn stderr_has(&self, want: &str) -> &Self {
        if !self.stderr.contains(want) {
            self.fail(&format!("stderr lacks {want:?}"));
        }
        self
    }

    #[track_caller]
    pub(crate) fn stdout_has(&self, want: &str) -> &Self {
        if !self.stdout.contains(want) {
            self.fail(&format!("stdout lacks {want:?}"));
        }
        self
    }

    #[track_caller]
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| self.fail(&format!("not JSON: {e}")))
    }

    /// The value of `key=value` (the hostile images' escalate program) or `Key:\tvalue`
    /// (`/proc/self/status`) in the output.
    #[track_caller]
    pub(crate) fn value(&self, key: &str) -> String {
        self.stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|r| r.strip_prefix('=').or_else(|| r.strip_prefix(':')))
            })
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| self.fail(&format!("no {key} in the output")))
    }

    #[track_caller]
    pub(crate) fn never_shows(&self, secret: &str) -> &Self {
        if self.stdout.contains(secret) || self.stderr.contains(secret) {
            self.fail(&format!("the secret {secret:?} got out"));
        }
        self
    }
}

/// A site config of the test's own in a root-owned temp dir (where jobdock trusts it), with its
/// own state directory; jobs run as root for a user (`--user`), as a scheduler's prolog or
/// execution driver would. Every container of its jobs is removed at the end.
pub(crate) struct Site {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub jobs: Jobs,
}

impl Site {
    /// The test bed's defaults (no network, a short grace period); `extra` is appended.
    pub(crate) fn new(extra: &str) -> Site {
        Site::with_engine("", extra)
    }

    /// As `new`, with `engine` lines added to the `[engine]` table.
    pub(crate) fn with_engine(engine: &str, extra: &str) -> Site {
        let dir = trusted_tempdir();
        let config = dir.path().join("wrapper.toml");
        let timeout = if engine.contains("connect_timeout_secs") {
            ""
        } else {
            "connect_timeout_secs = 5\n"
        };
        let text = format!(
            "[engine]\nstate_dir = \"{}\"\n{timeout}grace_period_secs = 3\n{engine}\n\
             # The jobs need no network; \"none\" keeps the tests off the node's bridge and iptables.\n\
             [network]\ndefault = \"none\"\n{extra}\n",
            dir.path().join("state").display()
        );
        std::fs::write(&config, text).unwrap();
        Site {
            dir,
            config,
            jobs: Jobs::default(),
        }
    }

    pub(crate) fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Entries in the state dir but the node's pull locks, image access verdicts, image runs and
    /// image check verdicts.
    pub(crate) fn leftovers(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.state()) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !["locks", "access", "images", "image-checks"].contains(&n.as_str()))
            .collect()
    }

    /// A fresh job id whose containers go at the end of the test.
    pub(crate) fn job_id(&self) -> String {
        self.jobs.id()
    }

    /// `jobdock run --config <ours> --user USER --image IMAGE -- COMMAND` as root from the user's
    /// home, as a new job; stdin is a pipe (`stdin` fills it), as a scheduler's job has.
    pub(crate) fn job(&self, user: TestUser, image: &str, command: &[&str]) -> TestJob {
        let config = self.config.display().to_string();
        let mut args = vec![
            "run", "--config", &config, "--user", user.name, "--image", image,
        ];
        if !command.is_empty() {
            args.push("--");
            args.extend(command);
        }
        TestJob::new(&args)
            .job(self.jobs.id())
            .cwd(user.home)
            .env("HOME", user.home)
            .stdin(b"")
    }

    /// `jobdock cleanup --config <ours> --job ID` as root.
    pub(crate) fn cleanup(&self, id: &str) -> TestJob {
        let config = self.config.display().to_string();
        TestJob::new(&["cleanup", "--config", &config, "--job", id])
    }
}

/// jobdock installed setuid root in a root-owned directory, as a site lets users run it (LSF's job
/// starter runs as the user): a user is always their real uid, and the site config is the default
/// one. Every container of its jobs is removed at the end.
pub(crate) struct Setuid {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub jobs: Jobs,
}

impl Setuid {
    pub(crate) fn new() -> Setuid {
        let dir = trusted_tempdir();
        let path = dir.path().join("jobdock");
        // The debug build: some of these tests hold it between create and its checks
        // (JOBDOCK_TEST_DELAY_BEFORE_VERIFY_MS); the LSF and Slurm suites use the release build.
        std::fs::copy(BIN, &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o4755)).unwrap();
        Setuid {
            _dir: dir,
            path,
            jobs: Jobs::default(),
        }
    }

    /// `jobdock ARGS` as `user`, from their home directory, as a new job.
    pub(crate) fn by(&self, user: TestUser, args: &[&str]) -> TestJob {
        TestJob::program(&self.path, args)
            .job(self.jobs.id())
            .by(user)
    }

    /// `jobdock run --image IMAGE -- COMMAND` as `user`.
    pub(crate) fn run(&self, user: TestUser, image: &str, command: &[&str]) -> TestJob {
        let mut args = vec!["run", "--image", image, "--"];
        args.extend(command);
        self.by(user, &args)
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
