//! The run sequence against the recording fake: the order of calls, each step's failure with its
//! cleanup, signals, output and input, exit codes.

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::config::{PullPolicy, SiteConfig};
use crate::engine::Blame;
use crate::engine::fake::{
    BrokenPipe, FakeDaemon, FakeHost, ID, SharedBuf, chunk_err, chunk_out, lsf_plan,
};
use crate::job::JobContext;
use crate::plan::Request;
use crate::probe::fake::FakeProbe;

fn plan(state_dir: &Path, command: &[&str]) -> ContainerPlan {
    let mut config = SiteConfig::default();
    config.engine.state_dir = state_dir.to_path_buf();
    config.mounts.home = false;
    // The fake daemon has no FIFOs to write to: output through attach (the FIFOs' own tests are
    // the engine module's, on the real dockerd).
    config.engine.output = crate::config::OutputPath::Attach;
    let req = Request {
        image: Some("jobdock-test/busybox".into()),
        command: command.iter().map(|s| s.to_string()).collect(),
        script: None,
    };
    lsf_plan(
        &config,
        &[],
        vec![(3001, Some("jdproj".into()))],
        JobContext::default(),
        &req,
        &FakeProbe::default(),
    )
}

/// A private temp dir standing in for the state dir (root-owned when the tests run as root).
struct Bed {
    dir: tempfile::TempDir,
}

impl Bed {
    /// A root-owned state dir (the engine refuses others): the tests using it are ignored
    /// unless run as root with --include-ignored, and fail loudly otherwise.
    fn new() -> Bed {
        crate::needs_root();
        Bed {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    /// Everything left in the state dir but the lock directory.
    fn leftovers(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.state()) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "locks" && n != "images")
            .collect();
        names.sort();
        names
    }
}

struct Ran {
    result: Result<Outcome, EngineError>,
    calls: Vec<String>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `plan` on `d`, sending `signals` (each after `delay`) once the job has started.
async fn run_with(
    d: &FakeDaemon,
    plan: &ContainerPlan,
    policy: PullPolicy,
    signals: &[(Duration, Sig)],
    stdin: &[&str],
) -> Ran {
    let state = plan.staging.dir.parent().unwrap().to_path_buf();
    let settings = Settings {
        pull: PullSettings {
            policy,
            auth: None,
            state_dir: &state,
            timeout: Duration::from_secs(60),
            live: false,
            backoff: Duration::from_millis(1),
        },
        access: crate::engine::access::AccessSettings {
            uid: 2001,
            credentials: &crate::engine::Credentials::default(),
            state_dir: &state,
        },
        state_dir: &state,
        cidfile_dir: &state,
        grace: Duration::from_secs(10),
        host: &FakeHost::default(),
    };
    let (sig_tx, mut sig_rx) = mpsc::channel(16);
    let plan_signals = signals.to_vec();
    tokio::spawn(async move {
        for (delay, sig) in plan_signals {
            tokio::time::sleep(delay).await;
            let _ = sig_tx.send(sig).await;
        }
        std::future::pending::<()>().await;
    });
    let (in_tx, in_rx) = mpsc::channel(1);
    let input: Vec<Vec<u8>> = stdin.iter().map(|s| s.as_bytes().to_vec()).collect();
    tokio::spawn(async move {
        for chunk in input {
            let _ = in_tx.send(chunk).await;
        }
    });
    let (stdout, stderr) = (SharedBuf::default(), SharedBuf::default());
    let io = Io {
        stdout: Box::new(stdout.clone()),
        stderr: Box::new(stderr.clone()),
        stdout_pipe: None,
        stdin: in_rx,
        terminal: None,
    };
    // A run that hangs is a failure, not a stuck test (paused clocks get there at once).
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        run(d, plan, &settings, &mut sig_rx, io),
    )
    .await
    .expect("the run ends");
    Ran {
        result,
        calls: d.calls(),
        stdout: stdout.contents(),
        stderr: stderr.contents(),
    }
}

fn names(calls: &[String]) -> Vec<&str> {
    calls.iter().map(|c| c.split(' ').next().unwrap()).collect()
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_job_runs_in_order_and_leaves_nothing() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["echo", "hi"]);
    let mut d = FakeDaemon::default();
    d.output = vec![chunk_out("one\n"), chunk_err("oops\n"), chunk_out("two\n")];
    d.exit = Some(3);
    let ran = run_with(&d, &p, PullPolicy::Missing, &[], &["in1", "in2"]).await;
    assert_eq!(
        ran.result.unwrap(),
        Outcome {
            code: 3,
            messages: vec![],
            image: "sha256:0123".into(),
        }
    );
    assert_eq!(
        names(&ran.calls),
        [
            "image_exists",
            "create",
            "inspect",
            "create_inert",
            "stat_path",
            "read_file",
            "attach",
            "start",
            "inspect",
            // The image-reading container goes while the job starts.
            "remove",
            "wait",
            "inspect",
            "remove"
        ]
    );
    assert_eq!(ran.calls.last().unwrap(), &format!("remove {ID}"));
    assert_eq!(ran.stdout, b"one\ntwo\n");
    assert_eq!(ran.stderr, b"oops\n");
    assert_eq!(
        bed.leftovers(),
        Vec::<String>::new(),
        "staging and cidfile removed"
    );
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn stdin_reaches_the_job_and_is_closed_at_its_end() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["cat"]);
    let mut d = FakeDaemon::default();
    // The job runs until it is told to stop, so the feeder has all the time it needs.
    d.exit = None;
    let ran = run_with(
        &d,
        &p,
        PullPolicy::Missing,
        &[(Duration::from_millis(100), Sig::Term)],
        &["abc", "def\n"],
    )
    .await;
    assert_eq!(ran.result.unwrap().code, 143);
    assert_eq!(d.stdin.contents(), b"abcdef\n");
    assert!(
        *d.stdin.closed.lock().unwrap(),
        "stdin closed after the input ended"
    );
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_tty_jobs_stdin_stays_open_after_jobdocks_input_ends() {
    let bed = Bed::new();
    let mut p = plan(&bed.state(), &["sh"]);
    p.tty = true;
    let mut d = FakeDaemon::default();
    d.exit = None;
    let term = [(Duration::from_millis(100), Sig::Term)];
    let ran = run_with(&d, &p, PullPolicy::Missing, &term, &["ls\r"]).await;
    assert_eq!(ran.result.unwrap().code, 143);
    assert_eq!(d.stdin.contents(), b"ls\r");
    assert!(
        !*d.stdin.closed.lock().unwrap(),
        "dockerd would end the output"
    );
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn the_cidfile_holds_the_id_while_the_job_runs() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["true"]);
    let cidfile = files::cidfile_path(&bed.state(), &p.name);
    let mut d = FakeDaemon::default();
    d.exit = None;
    let term = [(Duration::from_millis(200), Sig::Term)];
    let ran = tokio::join!(run_with(&d, &p, PullPolicy::Missing, &term, &[]), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let cid = std::fs::read_to_string(&cidfile).unwrap();
        let passwd = std::fs::read_to_string(&p.staging.passwd).unwrap();
        (cid, passwd)
    });
    assert_eq!(ran.1.0, ID);
    assert!(ran.1.1.contains("jdalice:x:2001:2001"), "{}", ran.1.1);
    assert!(ran.0.result.is_ok());
    assert!(!cidfile.exists());
}

/// Every step that can fail: the error is reported, and whatever exists is removed.
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn each_failing_step_is_reported_and_cleaned_up() {
    let bed = Bed::new();
    let cases = [
        (
            "image_exists",
            ErrorKind::Status(500),
            Blame::Infrastructure,
            false,
        ),
        (
            "create",
            ErrorKind::Status(500),
            Blame::Infrastructure,
            true,
        ),
        ("create", ErrorKind::Timeout, Blame::Infrastructure, true),
        (
            "attach",
            ErrorKind::Status(500),
            Blame::Infrastructure,
            true,
        ),
        ("start", ErrorKind::Status(500), Blame::Infrastructure, true),
        ("wait", ErrorKind::Stream, Blame::Infrastructure, true),
    ];
    for (step, kind, blame, removed) in cases {
        let p = plan(&bed.state(), &["true"]);
        let d = FakeDaemon::failing(step, kind, "daemon says no");
        let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
        let e = ran.result.unwrap_err();
        assert_eq!(e.blame(), blame, "{step}: {e}");
        assert!(e.to_string().contains("daemon says no"), "{step}: {e}");
        let calls = names(&ran.calls);
        assert_eq!(calls.contains(&"remove"), removed, "{step}: {calls:?}");
        if step == "create" {
            // The answer never came: the container may exist, and only its name is known.
            assert_eq!(ran.calls.last().unwrap(), &format!("remove {}", p.name));
        }
        assert_eq!(bed.leftovers(), Vec::<String>::new(), "{step}");
    }
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn an_unsafe_state_dir_is_the_sites_to_fix_and_nothing_is_created() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["true"]);
    std::fs::create_dir(bed.state()).unwrap();
    std::fs::set_permissions(
        bed.state(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let d = FakeDaemon::default();
    let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.blame(), Blame::Config, "{e}");
    assert!(e.to_string().contains("engine.state_dir"), "{e}");
    assert!(ran.calls.is_empty(), "{:?}", ran.calls);
    assert!(bed.leftovers().is_empty());
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_failed_run_and_a_failed_cleanup_are_both_reported() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["true"]);
    let mut d = FakeDaemon::failing("start", ErrorKind::Status(500), "start broke");
    d.fail.insert(
        "remove",
        DaemonError::new(ErrorKind::Unreachable, "daemon gone"),
    );
    let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
    let e = ran.result.unwrap_err().to_string();
    assert!(
        e.contains("start broke") && e.contains("daemon gone"),
        "{e}"
    );
    assert!(e.contains("jobdock cleanup --job 212"), "{e}");
    assert_eq!(bed.leftovers(), Vec::<String>::new(), "files go even so");
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_failed_cleanup_after_a_good_run_keeps_the_jobs_code() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["true"]);
    let mut d = FakeDaemon::failing("remove", ErrorKind::Timeout, "no answer");
    d.exit = Some(0);
    let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
    let outcome = ran.result.unwrap();
    assert_eq!(
        outcome.code, 0,
        "a finished job is not requeued for a leftover"
    );
    assert!(outcome.messages[0].contains("no answer"), "{outcome:?}");
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_name_conflict_is_reported_and_the_other_container_left_alone() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["true"]);
    let d = FakeDaemon::failing("create", ErrorKind::Conflict, "name in use");
    let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
    assert!(matches!(ran.result, Err(EngineError::NameInUse { .. })));
    assert!(!names(&ran.calls).contains(&"remove"), "{:?}", ran.calls);
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn start_errors_for_the_command_map_to_127_and_126() {
    let bed = Bed::new();
    let cases = [
        (
            "exec: \"nosuch\": executable file not found in $PATH",
            Blame::NotFound,
        ),
        (
            "exec: \"/x\": stat /x: no such file or directory",
            Blame::NotFound,
        ),
        ("exec: \"/etc\": permission denied", Blame::NotExecutable),
        (
            "error while creating mount source path: no such file or directory",
            Blame::Infrastructure,
        ),
    ];
    for (message, blame) in cases {
        let p = plan(&bed.state(), &["nosuch"]);
        let d = FakeDaemon::failing("start", ErrorKind::Status(400), message);
        let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
        assert_eq!(ran.result.unwrap_err().blame(), blame, "{message}");
        assert!(names(&ran.calls).contains(&"remove"));
    }
}

/// Issue 12.8: a device job whose locked-memory limit dockerd may not grant fails as the site's
/// error (78), naming devices.memlock, and the container is removed.
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_limit_dockerd_may_not_grant_is_the_sites_error() {
    let bed = Bed::new();
    let mut p = plan(&bed.state(), &["true"]);
    p.devices = vec!["/dev/null".into()];
    p.ulimits = vec![crate::plan::Ulimit {
        name: "memlock",
        soft: -1,
        hard: -1,
    }];
    let d = FakeDaemon::failing(
        "start",
        ErrorKind::Status(500),
        "failed to create shim task: OCI runtime create failed: runc create failed: unable to \
         start container process: error during container init: error setting rlimits for ready \
         process: error setting rlimit type 8: operation not permitted: unknown",
    );
    let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.blame(), Blame::Config, "{e}");
    assert!(
        e.to_string().contains("devices.memlock = \"unlimited\""),
        "{e}"
    );
    assert!(names(&ran.calls).contains(&"remove"), "{:?}", ran.calls);
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn an_image_without_the_shell_the_job_file_needs_is_explained() {
    let bed = Bed::new();
    let mut p = plan(&bed.state(), &["true"]);
    p.entrypoint = Some(vec!["/bin/sh".into()]);
    p.cmd = Some(vec!["/home/jdalice/.lsbatch/job".into()]);
    let mut d = FakeDaemon::default();
    d.missing_paths = vec!["/bin/sh"];
    let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.blame(), Blame::NotFound);
    let text = e.to_string();
    assert!(
        text.contains("/bin/sh") && text.contains("LSB_DOCKER_RUN_RAW_ARGS=1"),
        "{text}"
    );
    assert!(!names(&ran.calls).contains(&"start"));
    assert!(names(&ran.calls).contains(&"remove"));
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn an_error_mid_stream_ends_the_run_and_removes_the_container() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["yes"]);
    let mut d = FakeDaemon::default();
    d.exit = None;
    d.output = vec![chunk_out("y\n")];
    d.output_error = Some(DaemonError::new(ErrorKind::Stream, "connection reset"));
    let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.blame(), Blame::Infrastructure);
    assert!(e.to_string().contains("connection reset"), "{e}");
    assert_eq!(ran.stdout, b"y\n");
    assert_eq!(ran.calls.last().unwrap(), &format!("remove {ID}"));
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_reader_that_goes_away_gets_the_job_a_sigpipe_as_in_a_shell() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["yes"]);
    let state = bed.state();
    let mut d = FakeDaemon::default();
    d.exit = None;
    d.output = vec![
        chunk_out("y\n"),
        chunk_err("still here\n"),
        chunk_out("y\n"),
    ];
    let settings = Settings {
        pull: PullSettings {
            policy: PullPolicy::Missing,
            auth: None,
            state_dir: &state,
            timeout: Duration::from_secs(60),
            live: false,
            backoff: Duration::from_millis(1),
        },
        access: crate::engine::access::AccessSettings {
            uid: 2001,
            credentials: &crate::engine::Credentials::default(),
            state_dir: &state,
        },
        state_dir: &state,
        cidfile_dir: &state,
        grace: Duration::from_secs(10),
        host: &FakeHost::default(),
    };
    let stderr = SharedBuf::default();
    let io = Io {
        stdout: Box::new(BrokenPipe),
        stderr: Box::new(stderr.clone()),
        stdout_pipe: None,
        stdin: mpsc::channel(1).1,
        terminal: None,
    };
    let (_tx, mut rx) = mpsc::channel(1);
    let run = run(&d, &p, &settings, &mut rx, io);
    let outcome = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap();
    assert_eq!(outcome.unwrap().code, 141);
    assert_eq!(stderr.contents(), b"still here\n", "stderr is not affected");
    let kills: Vec<String> = d
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("kill"))
        .collect();
    assert_eq!(kills, ["kill SIGPIPE"]);
}

#[tokio::test(start_paused = true)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn stop_signals_are_forwarded_then_the_job_is_killed_after_the_grace_period() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["sleep", "100"]);
    let mut d = FakeDaemon::default();
    d.exit = None;
    d.trapped = vec!["SIGTERM", "SIGUSR1"];
    let signals = [
        (Duration::from_millis(10), Sig::Usr1),
        (Duration::from_millis(10), Sig::Term),
    ];
    let ran = run_with(&d, &p, PullPolicy::Missing, &signals, &[]).await;
    let outcome = ran.result.unwrap();
    assert_eq!(outcome.code, 137);
    assert!(
        outcome.messages[0].contains("10s after SIGTERM"),
        "{outcome:?}"
    );
    let kills: Vec<&String> = ran.calls.iter().filter(|c| c.starts_with("kill")).collect();
    assert_eq!(kills, ["kill SIGUSR1", "kill SIGTERM", "kill SIGKILL"]);
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_forwarded_term_ends_a_job_that_does_not_trap_it() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["sleep", "100"]);
    let mut d = FakeDaemon::default();
    d.exit = None;
    let ran = run_with(
        &d,
        &p,
        PullPolicy::Missing,
        &[(Duration::from_millis(20), Sig::Term)],
        &[],
    )
    .await;
    assert_eq!(ran.result.unwrap().code, 143);
    assert!(!ran.calls.contains(&"kill SIGKILL".to_string()));
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn suspend_and_resume_pause_the_container_and_a_stop_resumes_it_first() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["sleep", "100"]);
    let mut d = FakeDaemon::default();
    d.exit = None;
    let ms = Duration::from_millis(20);
    let signals = [
        (ms, Sig::Tstp),
        (ms, Sig::Cont),
        (ms, Sig::Tstp),
        (ms, Sig::Tstp),
        (ms, Sig::Term),
    ];
    let ran = run_with(&d, &p, PullPolicy::Missing, &signals, &[]).await;
    assert_eq!(ran.result.unwrap().code, 143);
    let control: Vec<&str> = ran
        .calls
        .iter()
        .map(String::as_str)
        .filter(|c| ["pause", "unpause"].contains(c) || c.starts_with("kill"))
        .collect();
    assert_eq!(
        control,
        ["pause", "unpause", "pause", "unpause", "kill SIGTERM"]
    );
}

#[tokio::test(start_paused = true)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_stop_signal_before_the_job_starts_abandons_it_and_cleans_up() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["true"]);
    let mut d = FakeDaemon::default();
    *d.image_present.borrow_mut() = false;
    d.pull_time = Duration::from_secs(30);
    let state = bed.state();
    let settings = Settings {
        pull: PullSettings {
            policy: PullPolicy::Missing,
            auth: None,
            state_dir: &state,
            timeout: Duration::from_secs(60),
            live: false,
            backoff: Duration::from_millis(1),
        },
        access: crate::engine::access::AccessSettings {
            uid: 2001,
            credentials: &crate::engine::Credentials::default(),
            state_dir: &state,
        },
        state_dir: &state,
        cidfile_dir: &state,
        grace: Duration::from_secs(10),
        host: &FakeHost::default(),
    };
    let (tx, mut rx) = mpsc::channel(4);
    tx.send(Sig::Usr1).await.unwrap();
    tx.send(Sig::Int).await.unwrap();
    let io = Io {
        stdout: Box::new(SharedBuf::default()),
        stderr: Box::new(SharedBuf::default()),
        stdout_pipe: None,
        stdin: mpsc::channel(1).1,
        terminal: None,
    };
    // The clock is paused: waiting out the fake's 30 s pull would advance it by 30 s.
    let started = tokio::time::Instant::now();
    let e = run(&d, &p, &settings, &mut rx, io).await.unwrap_err();
    assert!(
        started.elapsed() < d.pull_time,
        "the pull was waited for, not abandoned"
    );
    assert_eq!(e.blame(), Blame::Signal(2));
    assert!(!names(&d.calls()).contains(&"create"));
    assert_eq!(bed.leftovers(), Vec::<String>::new());
}

/// An OOM kill is explained with the limit, whether dockerd's flag says so or only its event log
/// (an OOM notice that reached dockerd after the exit).
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn an_oom_kill_is_explained_with_the_limit() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["hog"]);
    for (flag, event) in [(true, false), (false, true)] {
        let mut d = FakeDaemon::default();
        d.exit = Some(137);
        d.oom_killed = flag;
        d.oom_event = event;
        let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
        assert_eq!(
            ran.result.unwrap(),
            Outcome {
                code: 137,
                messages: vec!["killed: out of memory (limit 4.0 GiB)".into()],
                image: "sha256:0123".into(),
            },
            "flag {flag}, event {event}"
        );
        // dockerd's flag is enough: its event log is asked only without it.
        assert_eq!(names(&ran.calls).contains(&"oom_event"), !flag);
    }
    // Other ends never ask: the event log is read for an unexplained SIGKILL only.
    for exit in [0, 1, 143] {
        let mut d = FakeDaemon::default();
        d.exit = Some(exit);
        d.oom_event = true;
        let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
        assert!(!names(&ran.calls).contains(&"oom_event"), "exit {exit}");
        assert_eq!(ran.result.unwrap().messages, Vec::<String>::new());
    }
}

/// Issue 18.7: a command the image lacks is explained by jobdock, in place of docker-init's
/// `[FATAL tini (7)] exec ...`; the same words printed by a job that ran are its own output.
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_command_missing_from_the_image_is_explained_by_jobdock() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["python3"]);
    let tini = "[FATAL tini (7)] exec python3 failed: No such file or directory\n";
    let cases = [
        (
            127,
            tini,
            vec![
                "python3: not found in image jobdock-test/busybox:latest (PATH=/usr/local/bin:/usr/bin:/bin); is it installed there, or elsewhere on another PATH (give its full path)?",
            ],
            "",
        ),
        (
            126,
            "[FATAL tini (8)] exec /data/run.sh failed: Permission denied\n",
            vec![
                "/data/run.sh: not executable in image jobdock-test/busybox:latest (PATH=/usr/local/bin:/usr/bin:/bin)",
            ],
            "",
        ),
        // A job that ran and printed the words: they are its output, and nothing is explained.
        (0, tini, vec![], tini),
        (
            127,
            "python3: command not found\n",
            vec![],
            "python3: command not found\n",
        ),
    ];
    for (exit, first, messages, stderr) in cases {
        let mut d = FakeDaemon::default();
        d.output = vec![chunk_err(first)];
        d.exit = Some(exit);
        let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
        let outcome = ran.result.unwrap();
        assert_eq!(outcome.messages, messages, "exit {exit}, {first:?}");
        assert_eq!(ran.stderr, stderr.as_bytes(), "exit {exit}, {first:?}");
    }
    // Held only as the first output: later, it is written where it came.
    let mut d = FakeDaemon::default();
    d.output = vec![chunk_out("hi\n"), chunk_err(tini)];
    d.exit = Some(127);
    let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
    assert_eq!(ran.result.unwrap().messages, Vec::<String>::new());
    assert_eq!(
        (ran.stdout.as_slice(), ran.stderr.as_slice()),
        (&b"hi\n"[..], tini.as_bytes())
    );
}

/// Issue 18.3: `newer` asks the registry which manifest the tag names and pulls only when the
/// node's image is not it; a registry that cannot be asked leaves the node's image.
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn the_newer_policy_pulls_a_tag_that_moved() {
    let bed = Bed::new();
    let on_node = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let moved = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    // (the tag's digest in the registry, the registry answers, image present, pulls)
    let cases = [
        (on_node, true, true, 0),
        (moved, true, true, 1),
        (moved, true, false, 1),
        (moved, false, true, 0),
    ];
    for (tag, answers, present, pulls) in cases {
        let p = plan(&bed.state(), &["true"]);
        let mut d = FakeDaemon::default();
        d.repo_digests = vec![format!("jobdock-test/busybox@{on_node}")];
        d.tag_digest = Some(tag.to_string());
        if answers {
            d.registry.insert("", Ok(()));
        }
        *d.image_present.borrow_mut() = present;
        let ran = run_with(&d, &p, PullPolicy::Newer, &[], &[]).await;
        let pulled = ran.calls.iter().filter(|c| c.starts_with("pull")).count();
        assert_eq!(
            pulled, pulls,
            "{tag} answers={answers} present={present}: {:?}",
            ran.calls
        );
        assert!(
            ran.result.is_ok(),
            "{tag} answers={answers} present={present}"
        );
    }
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn pull_policies() {
    let bed = Bed::new();
    // (policy, image present, pulls, error)
    let cases = [
        (PullPolicy::Missing, true, 0, false),
        (PullPolicy::Missing, false, 1, false),
        (PullPolicy::Always, true, 1, false),
        (PullPolicy::Never, true, 0, false),
        (PullPolicy::Never, false, 0, true),
    ];
    for (policy, present, pulls, fails) in cases {
        let p = plan(&bed.state(), &["true"]);
        let d = FakeDaemon::default();
        *d.image_present.borrow_mut() = present;
        let ran = run_with(&d, &p, policy, &[], &[]).await;
        let pulled: Vec<&String> = ran.calls.iter().filter(|c| c.starts_with("pull")).collect();
        assert_eq!(pulled.len(), pulls, "{policy:?} present={present}");
        if pulls > 0 {
            assert_eq!(pulled[0], "pull jobdock-test/busybox:latest");
        }
        assert_eq!(ran.result.is_err(), fails, "{policy:?} present={present}");
    }
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn transient_pull_failures_are_retried_and_permanent_ones_are_not() {
    let bed = Bed::new();
    // A rate limit is the node's trouble, retried; a missing image is the job's (64): a typo
    // requeued would fail forever.
    for (message, attempts, blame) in [
        ("toomanyrequests: slow down", 4, Blame::Infrastructure),
        ("manifest unknown", 1, Blame::BadRequest),
        (
            "write /var/lib/docker/x: no space left on device",
            1,
            Blame::Infrastructure,
        ),
    ] {
        let p = plan(&bed.state(), &["true"]);
        let d = FakeDaemon::failing("pull", ErrorKind::Stream, message);
        *d.image_present.borrow_mut() = false;
        let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
        let e = ran.result.unwrap_err();
        assert_eq!(e.blame(), blame, "{message}");
        assert!(e.to_string().contains(message), "{e}");
        let pulls = ran.calls.iter().filter(|c| c.starts_with("pull")).count();
        assert_eq!(pulls, attempts, "{message}");
    }
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn concurrent_jobs_share_one_pull_of_a_missing_image() {
    let bed = Bed::new();
    let state = bed.state();
    files::ensure_private_dir("engine.state_dir", &state).unwrap();
    let mut d = FakeDaemon::default();
    d.pull_time = Duration::from_millis(300);
    *d.image_present.borrow_mut() = false;
    let image = crate::image::ImageRef::parse("jobdock-test/busybox").unwrap();
    let s = PullSettings {
        policy: PullPolicy::Missing,
        auth: None,
        state_dir: &state,
        timeout: Duration::from_secs(10),
        live: false,
        backoff: Duration::from_millis(1),
    };
    let (a, b) = tokio::join!(
        pull::ensure_image(&d, &image, &s),
        pull::ensure_image(&d, &image, &s)
    );
    a.unwrap();
    b.unwrap();
    let pulls = d.calls().iter().filter(|c| c.starts_with("pull")).count();
    assert_eq!(pulls, 1, "{:?}", d.calls());
}

/// A writer that, like tokio's stdout, accepts bytes at once and delivers them later (here: when
/// flushed) into a log shared with the other stream, as a terminal is.
struct Deferred {
    pending: Vec<u8>,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncWrite for Deferred {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let pending = std::mem::take(&mut self.pending);
        self.log.lock().unwrap().extend_from_slice(&pending);
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[tokio::test]
async fn output_reaches_a_shared_terminal_in_the_order_the_streams_delivered_it() {
    let chunks = vec![
        chunk_out("1 out\n"),
        chunk_out("2 out\n"),
        chunk_err("3 err\n"),
        chunk_out("4 out\n"),
        chunk_err("5 err\n"),
        chunk_err("6 err\n"),
    ];
    let (_, got) = pump_chunks(chunks, None, None).await;
    assert_eq!(got, "1 out\n2 out\n3 err\n4 out\n5 err\n6 err\n");
}

/// `chunks` through `pump_output` as attach delivers them, both streams written to one log (as
/// to a shared terminal), with the job's exit `status` (`None`: never known) and the program the
/// FIFO wrapper execs (`wrapped`): the exec failure it explains and what it wrote.
async fn pump_chunks(
    chunks: Vec<Chunk>,
    status: Option<i64>,
    wrapped: Option<&str>,
) -> (Option<ExecFailure>, String) {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let output: Output = Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok)));
    let (status_tx, rx) = tokio::sync::oneshot::channel();
    // Unsent, the status is never known (and the sender lives as long as the pump).
    let _unsent = match status {
        Some(status) => status_tx.send(status).map(|()| None).unwrap(),
        None => Some(status_tx),
    };
    let got = pump_output(
        Source {
            output,
            spliced: None,
        },
        log_writer(&log),
        log_writer(&log),
        Arc::new(Pumping::default()),
        rx,
        wrapped.map(str::to_string),
    )
    .await
    .unwrap();
    let written = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    (got, written)
}

// ---- issue 11: private images, the pull lock, leftovers --

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_private_image_the_user_may_not_have_is_refused_before_anything_is_made() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["true"]);
    let mut d = FakeDaemon::default();
    d.repo_digests = vec![format!("jobdock-test/busybox@sha256:{}", "a".repeat(64))];
    let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.blame(), Blame::BadRequest, "{e}");
    assert!(e.to_string().contains("jobdock-test/busybox:latest"), "{e}");
    assert_eq!(
        names(&ran.calls),
        ["image_exists", "registry_manifest"],
        "no container, no removal needed"
    );
    assert_eq!(bed.leftovers(), Vec::<String>::new());
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn the_container_is_made_of_the_digest_the_registry_confirmed() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["true"]);
    let mut d = FakeDaemon::default();
    let digest = format!("sha256:{}", "b".repeat(64));
    d.repo_digests = vec![format!("jobdock-test/busybox@{digest}")];
    d.registry.insert("", Ok(()));
    let ran = run_with(&d, &p, PullPolicy::Missing, &[], &[]).await;
    assert_eq!(ran.result.unwrap().code, 0);
    let created = d.created_plan().unwrap();
    assert_eq!(
        created.image.to_string(),
        format!("jobdock-test/busybox@{digest}")
    );
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_stuck_pull_lock_holder_is_not_waited_for() {
    let bed = Bed::new();
    let state = bed.state();
    files::ensure_private_dir("engine.state_dir", &state).unwrap();
    let image = crate::image::ImageRef::parse("jobdock-test/busybox").unwrap();
    let s = PullSettings {
        policy: PullPolicy::Missing,
        auth: None,
        state_dir: &state,
        timeout: Duration::from_secs(3600),
        live: false,
        backoff: Duration::from_millis(1),
    };
    // Another job holds the lock and has not beaten for a minute.
    let name = format!(
        "pull-{:016x}.lock",
        pull::fnv1a(image.to_string().as_bytes())
    );
    let held = files::try_lock(&state, &name).unwrap().unwrap();
    let path = state.join(files::LOCKS).join(&name);
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    let old = nix::sys::time::TimeSpec::from_duration(
        old.duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap(),
    );
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &path,
        &old,
        &old,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let d = FakeDaemon::default();
    *d.image_present.borrow_mut() = false;
    let started = std::time::Instant::now();
    pull::ensure_image(&d, &image, &s).await.unwrap();
    eprintln!("pulled past a stuck holder in {:?}", started.elapsed());
    assert_eq!(
        d.calls().iter().filter(|c| c.starts_with("pull")).count(),
        1
    );

    // And once the image is on the node, nobody waits for the holder at all, stuck or not.
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &path,
        &nix::sys::time::TimeSpec::UTIME_NOW,
        &nix::sys::time::TimeSpec::UTIME_NOW,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let always = PullSettings {
        policy: PullPolicy::Always,
        ..s
    };
    let d = FakeDaemon::default();
    pull::ensure_image(&d, &image, &always).await.unwrap();
    assert_eq!(
        names(&d.calls()),
        ["image_exists", "pull", "image_exists"],
        "present: pulled again without waiting for the lock"
    );
    drop(held);
    assert!(!path.exists(), "the holder removes its lock file");
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn staging_is_made_after_the_pull_and_says_whose_it_is() {
    let bed = Bed::new();
    let p = plan(&bed.state(), &["true"]);
    let mut d = FakeDaemon::default();
    d.exit = None;
    let term = [(Duration::from_millis(200), Sig::Term)];
    let ran = tokio::join!(run_with(&d, &p, PullPolicy::Missing, &term, &[]), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        files::staging_creator(&p.staging.dir)
    });
    let creator = ran.1.expect("the staging directory names its creator");
    assert_eq!((creator.uid, creator.pid), (2001, std::process::id()));
    assert!(creator.alive());
    assert!(ran.0.result.is_ok());
    assert_eq!(bed.leftovers(), Vec::<String>::new());

    // One whose creator is dead is swept by the next run.
    let stale = bed.state().join("jobdock-lsf-99-1.dead");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("owner"), "2001 0 0\n").unwrap();
    let p = plan(&bed.state(), &["true"]);
    let d = FakeDaemon::default();
    run_with(&d, &p, PullPolicy::Missing, &[], &[])
        .await
        .result
        .unwrap();
    assert!(!stale.exists(), "swept");
}

/// Issue 15.2: through the output FIFOs the wrapper's `sh` reports a command it cannot exec, in
/// each shell's words; held as the first output and explained for 127 and 126 as tini's report
/// is, written as it came otherwise, and never for another program than the job's.
#[tokio::test]
async fn the_fifo_wrappers_exec_failure_is_explained_as_tinis() {
    let cases = [
        (
            "jobdock: exec: line 0: python3: not found\n",
            "python3",
            127,
            true,
        ),
        (
            "jobdock: 1: exec: python3: not found\n",
            "python3",
            127,
            true,
        ),
        (
            "jobdock: line 0: exec: python3: not found\n",
            "python3",
            127,
            true,
        ),
        (
            "jobdock: 1: exec: /data/run.sh: Permission denied\n",
            "/data/run.sh",
            126,
            true,
        ),
        // The job's own words, another program, another status, or more than the one line.
        (
            "jobdock: 1: exec: python3: not found\n",
            "python3",
            0,
            false,
        ),
        (
            "jobdock: 1: exec: python3: not found\n",
            "python",
            127,
            false,
        ),
        ("sh: 1: exec: python3: not found\n", "python3", 127, false),
        ("jobdock: 1: python3: not found\n", "python3", 127, false),
        (
            "jobdock: 1: exec: python3: not found\nmore\n",
            "python3",
            127,
            false,
        ),
    ];
    for (line, program, status, explained) in cases {
        let (got, written) = pump_chunks(vec![chunk_err(line)], Some(status), Some(program)).await;
        if explained {
            let f = got.unwrap_or_else(|| panic!("{line:?}: not explained"));
            assert_eq!(f.program, program);
            let reason = if status == 126 {
                "Permission denied"
            } else {
                "No such file or directory"
            };
            assert_eq!(f.reason, reason);
            assert_eq!(written, "", "{line:?}");
        } else {
            assert_eq!(got, None, "{line:?} {program} {status}");
            assert_eq!(written, line);
        }
    }
}

/// docker-init writes its report in three writes (`[FATAL tini (7)] `, the words, `\n`), and
/// dockerd delivers them as one chunk or several, as they were read: either way it is explained.
/// A first stderr that only starts like one is the job's, written whole and in its place.
#[tokio::test]
async fn tinis_report_in_several_chunks_is_explained_and_other_first_output_kept() {
    let report = [
        "[FATAL tini (7)] ",
        "exec python3 failed: No such file or directory",
        "\n",
    ];
    let cases: [(Vec<Chunk>, Option<&str>, &str); 6] = [
        (report.map(chunk_err).to_vec(), Some("python3"), ""),
        (
            vec![chunk_err("[FATAL ti"), chunk_err(&report[..].concat()[9..])],
            Some("python3"),
            "",
        ),
        // More than the one line, or output between: the job's own.
        (
            vec![
                chunk_err(report[0]),
                chunk_err(report[1]),
                chunk_err("\nmore\n"),
            ],
            None,
            "[FATAL tini (7)] exec python3 failed: No such file or directory\nmore\n",
        ),
        (
            vec![
                chunk_err(report[0]),
                chunk_out("out\n"),
                chunk_err("rest\n"),
            ],
            None,
            "[FATAL tini (7)] out\nrest\n",
        ),
        (
            vec![
                chunk_err("[FATAL"),
                chunk_err(" job: no\n"),
                chunk_out("out\n"),
            ],
            None,
            "[FATAL job: no\nout\n",
        ),
        // An unfinished line at the end is written as it came.
        (vec![chunk_err(report[0])], None, report[0]),
    ];
    for (chunks, explained, written) in cases {
        let (got, log) = pump_chunks(chunks.clone(), Some(127), None).await;
        assert_eq!(got.map(|f| f.program).as_deref(), explained, "{chunks:?}");
        assert_eq!(log, written, "{chunks:?}");
    }
}

// ---- issue 15 item 2: the job's stdout FIFO spliced into jobdock's stdout --

/// Pipes standing in for the job's FIFOs (read ends as `fifo::open` leaves them; the job's write
/// ends) and for jobdock's stdout (its read end; the write end spliced into).
fn spliced_pipes() -> (Source, std::fs::File, std::fs::File, std::fs::File) {
    let (out_r, job_out) = nix::unistd::pipe().unwrap();
    let (err_r, job_err) = nix::unistd::pipe().unwrap();
    let (ours_r, ours_w) = nix::unistd::pipe().unwrap();
    let opened = crate::engine::fifo::Opened::from_pipes(out_r, err_r);
    let (output, spliced, writers) = opened.into_output(Some(ours_w));
    assert!(spliced.is_some() && writers.is_empty());
    (
        Source { output, spliced },
        job_out.into(),
        job_err.into(),
        ours_r.into(),
    )
}

/// Bytes no two pieces of which are alike for long: a lost, doubled or moved block shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn log_writer(log: &Arc<std::sync::Mutex<Vec<u8>>>) -> Box<Deferred> {
    Box::new(Deferred {
        pending: Vec::new(),
        log: log.clone(),
    })
}

#[tokio::test]
async fn a_spliced_stdout_reaches_jobdocks_pipe_byte_exact_and_a_slow_reader_holds_the_job() {
    use std::io::{Read, Write};
    let (source, mut job_out, mut job_err, mut ours) = spliced_pipes();
    let data = pattern(16 << 20);
    let written = Arc::new(AtomicU64::new(0));
    let job = {
        let (data, written) = (data.clone(), written.clone());
        std::thread::spawn(move || {
            for piece in data.chunks(100_003) {
                job_out.write_all(piece).unwrap();
                written.fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
            drop(job_out);
            job_err.write_all(b"done\n").unwrap();
        })
    };
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pumping = Arc::new(Pumping::default());
    let (_status_tx, status) = tokio::sync::oneshot::channel();
    let pump = tokio::spawn(pump_output(
        source,
        Box::new(tokio::io::sink()),
        log_writer(&log),
        pumping.clone(),
        status,
        None,
    ));
    // Nobody reads jobdock's stdout yet: the job gets no further than the two pipes hold.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = written.load(Ordering::Relaxed);
    assert!(held < 4 << 20, "the job wrote {held} bytes nobody read");
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        ours.read_to_end(&mut got).unwrap();
        got
    });
    assert_eq!(pump.await.unwrap().unwrap(), None);
    job.join().unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the bytes differ");
    assert_eq!(log.lock().unwrap().as_slice(), b"done\n");
}

#[tokio::test]
async fn a_reader_of_a_spliced_stdout_going_away_is_a_broken_pipe_and_the_job_is_not_held() {
    use std::io::Write;
    let (source, mut job_out, job_err, ours) = spliced_pipes();
    drop(ours);
    drop(job_err);
    // Far more than the pipes hold: the job ends only if its output is read and discarded.
    let job = std::thread::spawn(move || job_out.write_all(&pattern(8 << 20)).unwrap());
    let pumping = Arc::new(Pumping::default());
    let (_status_tx, status) = tokio::sync::oneshot::channel();
    let pumped = pump_output(
        source,
        Box::new(tokio::io::sink()),
        Box::new(tokio::io::sink()),
        pumping.clone(),
        status,
        None,
    )
    .await;
    assert_eq!(pumped.unwrap(), None);
    job.join().unwrap();
    let notified = pumping.broken_pipe.notified();
    assert!(
        futures_util::FutureExt::now_or_never(notified).is_some(),
        "no broken pipe reported"
    );
}

/// The end of a spliced stdout the job never wrote to is no output: the wrapper's report of a
/// failed exec stays held and is explained.
#[tokio::test]
async fn a_held_exec_failure_is_explained_when_the_spliced_stdout_ends_empty() {
    use std::io::{Read, Write};
    let (source, job_out, mut job_err, mut ours) = spliced_pipes();
    drop(job_out);
    job_err
        .write_all(b"jobdock: exec: line 0: python3: not found\n")
        .unwrap();
    drop(job_err);
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (status_tx, status) = tokio::sync::oneshot::channel();
    status_tx.send(127).unwrap();
    let got = pump_output(
        source,
        log_writer(&log),
        log_writer(&log),
        Arc::new(Pumping::default()),
        status,
        Some("python3".into()),
    )
    .await
    .unwrap();
    assert_eq!(got.map(|f| f.program).as_deref(), Some("python3"));
    assert_eq!(log.lock().unwrap().as_slice(), b"");
    let mut spliced = Vec::new();
    ours.read_to_end(&mut spliced).unwrap();
    assert_eq!(spliced, b"");
}
