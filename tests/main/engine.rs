//! `jobdock run` and `jobdock cleanup` against the real dockerd of scripts/testbed.sh, as root for
//! the test user jdalice: identity, capabilities, limits and mounts seen from inside the container;
//! exit codes, signals, streams, pulls from the local registry, cleanup, and failures explained.
//!
//! Without a daemon these tests fail when CI=true and skip loudly otherwise. Every job gets a
//! unique LSB_JOBID, and every container a test's jobs made is removed when the test ends, even
//! when it fails.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::util;
use crate::util::{
    ALICE, BIN, BOB, Out, Site, TestJob, containers_of, docker, require, running_containers_of,
    wait_until,
};

const IMAGE: &str = "jobdock-test/busybox";
const NOSHELL: &str = "jobdock-test/noshell";
const REMOTE: &str = "127.0.0.1:5000/jobdock-test/busybox";
const REGISTRY_LOG: &str = "/var/log/jobdock-testbed/registry.log";

/// The capabilities the default config keeps: CHOWN(0) KILL(5) SETPCAP(8) IPC_LOCK(14) SYS_NICE(23).
const ALLOWED_CAPS: u64 = 1 << 0 | 1 << 5 | 1 << 8 | 1 << 14 | 1 << 23;

// ----------------------------------------------------------------------------------- helpers --

/// Whether the test bed is there (root, dockerd, the test users and image).
fn bed_is_up() -> bool {
    util::bed_is_up(&[IMAGE])
}

/// `/proc/self/status` of a job: the value of `field`.
fn status_field(out: &Out, field: &str) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| out.fail(&format!("no {field} in /proc/self/status")))
}

fn host(command: &str, args: &[&str]) -> String {
    let out = Command::new(command).args(args).output().unwrap();
    assert!(out.status.success(), "{command} {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

// -------------------------------------------------------------------- inside the container --

#[test]
fn the_job_runs_as_the_users_host_identity() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("");
    let out = bed
        .job(ALICE, IMAGE, &["sh", "-c", "id; id -G; whoami; pwd"])
        .run();
    out.code(0);
    let want = format!(
        "{}{}{}\n{}\n",
        host("id", &[ALICE.name]),
        host("id", &["-G", ALICE.name]),
        ALICE.name,
        ALICE.home
    );
    if out.stdout != want {
        out.fail(&format!("expected the host's identity:\n{want}"));
    }
    assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
}

#[test]
fn capabilities_are_the_allowlist_and_no_new_privileges() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("");
    let out = bed.job(ALICE, IMAGE, &["cat", "/proc/self/status"]).run();
    out.code(0);
    let mask = |field| u64::from_str_radix(&status_field(&out, field), 16).unwrap();
    // Docker gives a non-root user an empty effective set; what it could gain is the bounding set.
    for field in ["CapEff", "CapPrm", "CapInh"] {
        if mask(field) & !ALLOWED_CAPS != 0 {
            out.fail(&format!(
                "{field} {:x} exceeds {ALLOWED_CAPS:x}",
                mask(field)
            ));
        }
    }
    if mask("CapBnd") != ALLOWED_CAPS {
        out.fail(&format!("CapBnd is not exactly {ALLOWED_CAPS:x}"));
    }
    if status_field(&out, "NoNewPrivs") != "1" {
        out.fail("NoNewPrivs is not 1");
    }
}

#[test]
fn memory_and_pids_limits_are_in_force() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("[limits]\nmemory = \"48m\"\npids = 40\n");
    let out = bed
        .job(
            ALICE,
            IMAGE,
            &[
                "cat",
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
                "/sys/fs/cgroup/pids/pids.max",
            ],
        )
        .run();
    out.code(0);
    let limits: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    let mib48 = (48 * 1024 * 1024).to_string();
    if limits != [mib48.as_str(), mib48.as_str(), "40"] {
        out.fail("expected memory = memory+swap = 48 MiB and 40 pids");
    }

    let forks = bed
        .job(
            ALICE,
            IMAGE,
            &["sh", "-c", "for i in $(seq 60); do sleep 5 & done; wait"],
        )
        .run();
    forks.stderr_has("can't fork");

    let hog = bed.job(
        ALICE,
        IMAGE,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"],
    );
    hog.run()
        .code(137)
        .stderr_has("jobdock: killed: out of memory (limit 48.0 MiB)");
    assert!(containers_of(&hog.id).is_empty());

    // A SIGKILL that is not the kernel's: dockerd's event log (asked when its OOM flag is unset)
    // has no oom event for it, so nothing is said of memory.
    let killed = bed.job(ALICE, IMAGE, &["sh", "-c", "kill -9 $$"]).run();
    killed.code(137);
    if killed.stderr.contains("out of memory") {
        killed.fail("a job that killed itself was said to be out of memory");
    }
}

/// Issue 18.7: a job without a tmpdir of its own gets a tmpfs of limits.tmp_size as /tmp (the
/// image's would fill the node's docker disk), where it may build and run programs but no setuid
/// program or device works; it is held to its size.
#[test]
fn a_job_without_a_tmpdir_gets_a_bounded_tmpfs_as_tmp() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("[limits]\ntmp_size = \"8m\"\n");
    let out = bed
        .job(
            ALICE,
            IMAGE,
            &[
                "sh",
                "-c",
                "grep ' /tmp ' /proc/mounts; stat -c %a /tmp; cp /bin/busybox /tmp/sh && /tmp/sh -c true && echo ran; \
                 dd if=/dev/zero of=/tmp/fill bs=1M count=16 2>&1 | grep -o 'No space left on device'",
            ],
        )
        .run();
    out.code(0);
    let stdout = &out.stdout;
    let lines: Vec<&str> = stdout.lines().collect();
    let mount = lines.first().copied().unwrap_or_default();
    if !(mount.starts_with("tmpfs /tmp tmpfs rw,nosuid,nodev,") && mount.contains("size=8192k")) {
        out.fail("/tmp is not an 8 MiB tmpfs without setuid and devices");
    }
    if lines.get(1) != Some(&"1777") || lines.get(2) != Some(&"ran") {
        out.fail("/tmp is not world-writable and sticky, or a program there did not run");
    }
    if !stdout.contains("No space left on device") {
        out.fail("16 MiB fit in an 8 MiB /tmp");
    }
}

/// Issue 18.7: an image's ENTRYPOINT that jobdock skips is named, with the way to run it
/// (raw mode), which then runs it with the command.
#[test]
fn a_skipped_image_entrypoint_is_named_with_raw_mode() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("");
    let image = "jobdock-test/entrypoint";
    let out = bed.job(ALICE, image, &["echo", "hello"]).run();
    out.code(0).stderr_has(
        "jobdock: the image's ENTRYPOINT [\"/bin/echo\", \"the image entrypoint ran with:\"] is not run",
    );
    out.stderr_has("LSB_DOCKER_RUN_RAW_ARGS=true");
    if out.stdout != "hello\n" {
        out.fail("the command did not run by itself");
    }
    let raw = bed
        .job(ALICE, image, &["hello"])
        .env("LSB_DOCKER_RUN_RAW_ARGS", "true")
        .run();
    raw.code(0);
    if raw.stdout != "the image entrypoint ran with: hello\n" || raw.stderr.contains("ENTRYPOINT") {
        raw.fail("raw mode did not run the entrypoint, or still named it");
    }
}

#[test]
fn only_the_planned_mounts_are_visible() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("");
    let out = bed
        .job(ALICE, IMAGE, &["cat", "/proc/self/mountinfo"])
        .run();
    out.code(0);
    // Mounts of a host file system (not proc, sysfs, tmpfs, cgroup, ... nor the image's overlay).
    let virtual_fs = [
        "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "overlay",
    ];
    let mut seen = BTreeSet::new();
    for line in out.stdout.lines() {
        let (left, right) = line.split_once(" - ").unwrap();
        let fields: Vec<&str> = left.split(' ').collect();
        if !virtual_fs.contains(&right.split(' ').next().unwrap()) {
            seen.insert((
                fields[4].to_string(),
                fields[3].to_string(),
                fields[5].starts_with("ro"),
            ));
        }
    }
    let staging = bed.state().display().to_string();
    let ours: BTreeSet<_> = seen
        .iter()
        .filter(|(target, _, _)| {
            ![
                "/sbin/docker-init",
                "/etc/resolv.conf",
                "/etc/hostname",
                "/etc/hosts",
            ]
            .contains(&target.as_str())
        })
        .cloned()
        .collect();
    // The output FIFOs of the default `engine.output = "fifo"` are staged too, and writable.
    let staged = |target: &str, file: &str, readonly: bool| {
        ours.iter().any(|(t, src, ro)| {
            t == target && src.starts_with(&staging) && src.ends_with(file) && *ro == readonly
        })
    };
    let ok = ours.len() == 5
        && staged("/etc/passwd", "/passwd", true)
        && staged("/etc/group", "/group", true)
        && staged("/dev/jobdock/stdout", "/stdout", false)
        && staged("/dev/jobdock/stderr", "/stderr", false)
        && ours.contains(&(ALICE.home.into(), ALICE.home.into(), false));
    if !ok {
        out.fail(&format!(
            "expected exactly passwd, group (read-only, staged), the output FIFOs (staged) and \
             the home directory; saw {ours:?}"
        ));
    }

    // And they are exactly what `jobdock plan` says.
    let plan = bed.job(ALICE, IMAGE, &["true"]);
    let mut plan_args = plan.args.clone();
    plan_args[0] = "plan".into();
    plan_args.insert(1, "--json".into());
    let planned = TestJob {
        args: plan_args,
        ..plan
    }
    .run();
    planned.code(0);
    let json: serde_json::Value = serde_json::from_slice(&planned.stdout_bytes).unwrap();
    let targets: BTreeSet<String> = json["create"]["HostConfig"]["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Target"].as_str().unwrap().to_string())
        .collect();
    let visible: BTreeSet<String> = ours.into_iter().map(|(t, _, _)| t).collect();
    assert_eq!(visible, targets);
}

// ------------------------------------------------------------------ exit codes and signals --

#[test]
fn exit_codes_pass_through() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("");
    let cases: [(&str, &[&str], i32, &str); 5] = [
        ("success", &["true"], 0, ""),
        ("failure n", &["sh", "-c", "exit 42"], 42, ""),
        ("killed by TERM", &["sh", "-c", "kill -TERM $$"], 143, ""),
        // jobdock's explanation, in place of docker-init's `[FATAL tini (7)] exec ...` (18.7).
        (
            "no such command",
            &["nosuchcommand"],
            127,
            "jobdock: nosuchcommand: not found in image jobdock-test/busybox:latest (PATH=/usr/local/sbin:",
        ),
        (
            "not executable",
            &["/etc/passwd"],
            126,
            "jobdock: /etc/passwd: not executable in image jobdock-test/busybox:latest",
        ),
    ];
    for (name, command, code, message) in cases {
        let out = bed.job(ALICE, IMAGE, command).run();
        if out.status.code() != Some(code)
            || !out.stderr.contains(message)
            || out.stderr.contains("tini")
        {
            out.fail(&format!("{name}: expected {code} and {message:?}, no tini"));
        }
    }
    assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
}

#[test]
fn term_is_forwarded_and_nothing_is_left() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("");
    let job = bed.job(ALICE, IMAGE, &["sh", "-c", "echo ready; exec sleep 100"]);
    let mut child = job.spawn();
    let mut watch = util::Watch::stdout_of(&mut child);
    watch.wait_for("ready", Duration::from_secs(60));
    let start = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = Out::timed(watch.finish(child), start.elapsed(), job.shown());
    // 143: sleep died of the forwarded TERM itself, not of the KILL after the grace period (137).
    out.code(143);
    assert!(containers_of(&job.id).is_empty(), "container left behind");
    assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
}

#[test]
fn a_job_trapping_term_is_killed_after_the_grace_period() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("");
    let job = bed.job(
        ALICE,
        IMAGE,
        &[
            "sh",
            "-c",
            "trap 'echo got TERM' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    let mut child = job.spawn();
    let mut watch = util::Watch::stdout_of(&mut child);
    watch.wait_for("ready", Duration::from_secs(60));
    let start = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = Out::timed(watch.finish(child), start.elapsed(), job.shown());
    out.code(137)
        .stderr_has("still running 3s after SIGTERM (engine.grace_period_secs)");
    // The grace period is a lower bound jobdock keeps: no sooner than 3 s.
    if out.stdout != "ready\ngot TERM\n" || out.elapsed < Duration::from_secs(3) {
        out.fail("the job should have seen TERM, then been killed after 3 s");
    }
    assert!(containers_of(&job.id).is_empty());
}

#[test]
fn tstp_and_cont_pause_and_resume_the_job_not_jobdock() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("");
    let job = bed.job(ALICE, IMAGE, &["sh", "-c", "echo ready; exec sleep 100"]);
    let mut child = job.spawn();
    let mut watch = util::Watch::stdout_of(&mut child);
    watch.wait_for("ready", Duration::from_secs(60));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let paused = || {
        let out = docker(&[
            "inspect",
            "-f",
            "{{.State.Paused}}",
            &containers_of(&job.id)[0],
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    };
    use nix::sys::signal::{Signal, kill};
    kill(pid, Signal::SIGTSTP).unwrap();
    wait_until("the container to pause", Duration::from_secs(10), paused);
    kill(pid, Signal::SIGCONT).unwrap();
    wait_until("the container to resume", Duration::from_secs(10), || {
        !paused()
    });
    // jobdock itself never stopped: it still forwards a TERM.
    kill(pid, Signal::SIGTERM).unwrap();
    let out = Out::timed(watch.finish(child), Duration::ZERO, job.shown());
    out.code(143);
    assert!(containers_of(&job.id).is_empty());
}

#[test]
fn sigkill_to_jobdock_then_cleanup_leaves_nothing() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("");
    let job = bed.job(ALICE, IMAGE, &["sleep", "100"]);
    let mut child = job.spawn();
    wait_until("the job to run", Duration::from_secs(30), || {
        !running_containers_of(&job.id).is_empty()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        containers_of(&job.id).len(),
        1,
        "SIGKILL leaves the container"
    );
    // The staging directory and the cidfile; and the staging mounts' directory if the kill
    // came before jobdock detached them (it does so once the job runs).
    let left = bed.leftovers();
    let kinds = (
        left.iter().filter(|n| n.ends_with(".cid")).count(),
        left.iter()
            .filter(|n| n.starts_with("jobdock-") && !n.ends_with(".cid"))
            .count(),
        left.iter().filter(|n| *n == "mounts").count(),
    );
    assert!(
        kinds.0 == 1 && kinds.1 == 1 && left.len() == 2 + kinds.2,
        "staging dir and cidfile (and perhaps mounts/): {left:?}"
    );

    bed.cleanup(&job.id).run().code(0);
    assert!(containers_of(&job.id).is_empty());
    assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
    // Twice, and for a job that never existed: nothing to do is not an error.
    bed.cleanup(&job.id).run().code(0);
    bed.cleanup("999999999").run().code(0);
}

#[test]
fn cleanup_removes_never_started_containers_and_only_root_cleans_others_jobs() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("");
    let id = bed.job_id();
    let labels = [format!("jobdock.job={id}"), "jobdock.uid=2001".to_string()];
    let created = docker(&[
        "create", "--label", &labels[0], "--label", &labels[1], IMAGE, "true",
    ]);
    assert!(created.status.success());
    assert_eq!(containers_of(&id).len(), 1);

    // jdbob, through a setuid-root copy of jobdock (how a site lets users run it), from /.
    let setuid = util::Setuid::new();
    let bob = TestJob::program(&setuid.path, &["cleanup", "--job", &id]).user(BOB);
    // His cleanup acts on his own containers only: it succeeds and leaves hers alone.
    let out = bob.run();
    out.code(0);
    let said = &out.stdout;
    assert!(said.contains("removed 0 container(s)"), "{said}");
    assert_eq!(
        containers_of(&id).len(),
        1,
        "jdbob removed jdalice's container"
    );

    bed.cleanup(&id).run().code(0);
    assert!(
        containers_of(&id).is_empty(),
        "root removes a Created container"
    );

    // jdbob's own job is his to clean.
    let own = bed.job_id();
    let labels = [
        format!("jobdock.job={own}"),
        format!("jobdock.uid={}", BOB.uid),
    ];
    let created = docker(&[
        "create", "--label", &labels[0], "--label", &labels[1], IMAGE, "true",
    ]);
    assert!(created.status.success());
    TestJob::program(&setuid.path, &["cleanup", "--job", &own])
        .user(BOB)
        .run()
        .code(0);
    assert!(
        containers_of(&own).is_empty(),
        "jdbob could not remove his own container"
    );
}

// ------------------------------------------------------------------------------- streams --

#[test]
fn eight_jobs_at_once_each_get_exactly_their_own_output() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("");
    let script = "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo \"$MARK out $i\"; echo \"$MARK err $i\" >&2; done";
    let jobs: Vec<(String, TestJob)> = (0..8)
        .map(|n| {
            let mark = format!("job{n}");
            let job = bed
                .job(ALICE, IMAGE, &["sh", "-c", script])
                .env("MARK", &mark);
            (mark, job)
        })
        .collect();
    let running: Vec<(String, &TestJob, Child, Instant)> = jobs
        .iter()
        .map(|(mark, job)| (mark.clone(), job, job.spawn(), Instant::now()))
        .collect();
    for (mark, job, child, start) in running {
        let out = Out::timed(
            child.wait_with_output().unwrap(),
            start.elapsed(),
            job.shown(),
        );
        out.code(0);
        let want = |stream: &str| -> String {
            (1..=3000)
                .map(|i| format!("{mark} {stream} {i}\n"))
                .collect()
        };
        if out.stdout != want("out") {
            out.fail(&format!(
                "{mark}: stdout is not exactly its own lines in order"
            ));
        }
        if out.stderr != want("err") {
            out.fail(&format!(
                "{mark}: stderr is not exactly its own lines in order"
            ));
        }
    }
}

#[test]
fn stdin_is_piped_through_byte_for_byte() {
    if !bed_is_up() {
        return;
    }
    let bed = Site::new("");
    // 3 MiB of every byte value: more than any pipe or socket buffer holds.
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13).to_le_bytes()[0])
        .collect();
    let out = bed.job(ALICE, IMAGE, &["cat"]).stdin(&data).run();
    out.code(0);
    if out.stdout_bytes != data {
        out.fail(&format!(
            "cat returned {} bytes, not the same {} bytes",
            out.stdout_bytes.len(),
            data.len()
        ));
    }
    let short = bed.job(ALICE, IMAGE, &["cat"]).stdin(b"data").run();
    short.code(0);
    assert_eq!(short.stdout_bytes, b"data");
}

/// Through attach, and through the stdout FIFO spliced into jobdock's stdout (a pipe here).
#[test]
fn a_reader_that_goes_away_ends_the_job_with_sigpipe() {
    if !bed_is_up() {
        return;
    }
    for engine in ["output = \"attach\"", FIFO] {
        let bed = Site::with_engine(engine, "");
        let job = bed.job(ALICE, IMAGE, &["yes"]);
        let start = Instant::now();
        let mut child = job.spawn();
        let mut first = [0u8; 4];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // The read end is closed now, as `jobdock run -- yes | head -2` does.
        let out = Out::timed(
            child.wait_with_output().unwrap(),
            start.elapsed(),
            job.shown(),
        );
        out.code(141);
        assert_eq!(&first, b"y\ny\n", "{engine}");
        assert!(containers_of(&job.id).is_empty(), "{engine}");
        assert!(
            bed.leftovers().is_empty(),
            "{engine}: {:?}",
            bed.leftovers()
        );
    }
}

#[test]
fn an_interactive_job_gets_a_sized_tty_and_the_terminal_is_restored() {
    if !bed_is_up() || !require("script (util-linux)", Path::new("/usr/bin/script").exists()) {
        return;
    }
    let bed = Site::new("");
    let job = bed.job(ALICE, IMAGE, &["sh", "-c", "tty; sleep 0.3; stty size"]);
    // script(1) gives jobdock a terminal; its stdin ends at once, which must not cut the output.
    let inner = format!(
        "stty cols 120 rows 40; {} {}; echo rc=$?; stty -a",
        BIN,
        shell_words::join(&job.args)
    );
    let out = job.run_program("/usr/bin/script", &["-qec", &inner, "/dev/null"]);
    out.code(0);
    let text = out.stdout.replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    let ok = lines.len() > 3
        && lines[0].starts_with("/dev/pts/")
        && lines[1] == "40 120"
        && lines[2] == "rc=0"
        && text.contains(" icanon ")
        && text.contains(" echo ");
    if !ok {
        out.fail("expected a TTY of 40x120, exit 0, and the terminal back in canonical mode");
    }
}

// ---------------------------------------------------------------------------------- pulls --

/// Registry requests for the test image's manifests after byte `offset` of the access log.
fn manifest_requests(offset: u64) -> Vec<String> {
    let log = std::fs::read(REGISTRY_LOG).unwrap_or_default();
    let from = usize::try_from(offset).map_or(log.len(), |o| o.min(log.len()));
    String::from_utf8_lossy(&log[from..])
        .lines()
        .filter(|l| l.contains("/v2/jobdock-test/busybox/manifests/") && l.contains("\"docker/"))
        .map(str::to_string)
        .collect()
}

/// The pulls among them: each pull resolves the tag exactly once, with a GET of the manifest or,
/// when dockerd's content store still holds it, a HEAD followed by a GET by digest.
fn pulls(offset: u64) -> Vec<String> {
    manifest_requests(offset)
        .into_iter()
        .filter(|l| l.contains("/manifests/latest "))
        .collect()
}

/// The test bed's public registry at 127.0.0.1:5000 answers, with its access log (for counting
/// pulls); a missing one fails the test under CI.
fn registry_is_up() -> bool {
    let up = Path::new(REGISTRY_LOG).exists()
        && Command::new("curl")
            .args([
                "-fsS",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "http://127.0.0.1:5000/v2/",
            ])
            .status()
            .is_ok_and(|s| s.success());
    require("the local registry at 127.0.0.1:5000", up)
}

fn log_size() -> u64 {
    std::fs::metadata(REGISTRY_LOG).map_or(0, |m| m.len())
}

#[test]
fn pulls_follow_the_policy() {
    if !bed_is_up() {
        return;
    }
    if !registry_is_up() {
        return;
    }
    let _held = util::hold(&util::REMOTE_BUSYBOX);
    let missing = Site::with_engine("pull = \"missing\"", "");
    let always = Site::with_engine("pull = \"always\"", "");

    // Absent, needed by four jobs at once: `missing` pulls it once for all of them.
    docker(&["rmi", &format!("{REMOTE}:latest")]);
    let offset = log_size();
    let jobs: Vec<TestJob> = (0..4)
        .map(|_| missing.job(ALICE, REMOTE, &["echo", "pulled"]))
        .collect();
    let children: Vec<Child> = jobs.iter().map(TestJob::spawn).collect();
    for (job, child) in jobs.iter().zip(children) {
        let out = Out::timed(
            child.wait_with_output().unwrap(),
            Duration::ZERO,
            job.shown(),
        );
        out.code(0);
        if out.stdout != "pulled\n" {
            out.fail("the job did not run");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        pulls(offset).len(),
        1,
        "four jobs, one pull: {:?}",
        manifest_requests(offset)
    );

    // Present: `missing` pulls nothing. (The registry may see the access check, a request by
    // digest, once per node and digest: from this job, or from another test's in this window.)
    let offset = log_size();
    missing.job(ALICE, REMOTE, &["true"]).run().code(0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pulls(offset), Vec::<String>::new());
    for request in manifest_requests(offset) {
        assert!(
            request.contains("/manifests/sha256:"),
            "not an access check: {request}"
        );
    }

    // `always`: one pull, even though the image is present. Without a terminal the pull says
    // when it starts and how it ended, at the default level (issue 18.2).
    let offset = log_size();
    let out = always.job(ALICE, REMOTE, &["true"]).run();
    out.code(0)
        .stderr_has(&format!("jobdock: pulling {REMOTE}:latest\n"))
        .stderr_has(&format!("jobdock: pulled {REMOTE}:latest (sha256:"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pulls(offset).len(), 1, "{:?}", manifest_requests(offset));
}

/// Issue 18.3: a tag pushed again (`:latest` moved from one image to another) reaches the next
/// job under `newer`, which asks the registry for the tag's manifest; `missing` keeps running
/// what the node has. Users choose `newer` with LSB_DOCKER_PULL, not what the site does not allow.
#[test]
fn a_moved_tag_is_pulled_under_the_newer_policy() {
    if !bed_is_up() {
        return;
    }
    if !registry_is_up() {
        return;
    }
    let tag = format!(
        "127.0.0.1:5000/jobdock-test/mutable:t{}",
        std::process::id()
    );
    let pushed = |local: &str| {
        for args in [vec!["tag", local, tag.as_str()], vec!["push", tag.as_str()]] {
            let out = docker(&args);
            assert!(out.status.success(), "docker {args:?}: {out:?}");
        }
    };
    // The registry's tag names the entrypoint image; the node still has the busybox it named.
    pushed(IMAGE);
    pushed("jobdock-test/entrypoint");
    assert!(docker(&["tag", IMAGE, &tag]).status.success());

    let site = Site::with_engine("pull = \"missing\"", "");
    let stale = site.job(ALICE, &tag, &["true"]).run();
    stale.code(0);
    assert!(
        !stale.stderr.contains("pulling") && !stale.stderr.contains("ENTRYPOINT"),
        "missing pulled, or ran the registry's image: {}",
        stale.report
    );
    let newer = site
        .job(ALICE, &tag, &["true"])
        .env("LSB_DOCKER_PULL", "newer")
        .run();
    newer
        .code(0)
        .stderr_has("the registry's tag names sha256:")
        .stderr_has(&format!("jobdock: pulled {tag}"))
        // The registry's image ran: the one with an ENTRYPOINT.
        .stderr_has("is not run");
    let again = site
        .job(ALICE, &tag, &["true"])
        .env("LSB_DOCKER_PULL", "newer")
        .run();
    again.code(0);
    assert!(
        !again.stderr.contains("pulling"),
        "pulled an unchanged tag: {}",
        again.report
    );
    site.job(ALICE, &tag, &["true"])
        .env("LSB_DOCKER_PULL", "always")
        .run()
        .code(64)
        .stderr_has("engine.pull_choices");
    docker(&["rmi", &tag]);
}

/// Issue 18.6: `jobdock prune` removes an image no job has run for images.prune_after_days, and
/// keeps one a container uses however old its last run, and every image no job of jobdock's ran;
/// `--dry-run` removes nothing; `jobdock images` shows the last runs.
#[test]
fn prune_removes_idle_images_and_keeps_those_in_use() {
    if !bed_is_up() {
        return;
    }
    let site = Site::new("[images]\nprune_after_days = 30\n");
    let dir = tempfile::tempdir().unwrap();
    let name = |what: &str| format!("jobdock-test/prune-{what}:t{}", std::process::id());
    let (idle, used) = (name("idle"), name("used"));
    for (tag, label) in [(&idle, "idle"), (&used, "used")] {
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!(
                "FROM {IMAGE}\nLABEL jobdock.test.prune={label}-{}\n",
                std::process::id()
            ),
        )
        .unwrap();
        let out = Command::new("docker")
            .args(["build", "-q", "-t", tag, dir.path().to_str().unwrap()])
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap();
        assert!(out.status.success(), "docker build: {out:?}");
        site.job(ALICE, tag, &["true"]).run().code(0);
    }
    let id = |tag: &str| {
        String::from_utf8_lossy(&docker(&["image", "inspect", "-f", "{{.Id}}", tag]).stdout)
            .trim()
            .to_string()
    };
    let (idle_id, used_id) = (id(&idle), id(&used));
    // Both last ran 60 days ago; a container (not running) holds the second.
    for image_id in [&idle_id, &used_id] {
        let record = site
            .state()
            .join("images")
            .join(image_id.trim_start_matches("sha256:"));
        assert!(record.exists(), "no record of the run of {image_id}");
        let out = Command::new("touch")
            .args(["-d", "60 days ago"])
            .arg(&record)
            .status()
            .unwrap();
        assert!(out.success());
    }
    let holder = String::from_utf8_lossy(&docker(&["create", &used, "true"]).stdout)
        .trim()
        .to_string();
    let config = site.config.display().to_string();

    let listed = TestJob::new(&["images", "--config", &config]).run();
    listed.code(0);
    let line = |tag: &str| {
        listed
            .stdout
            .lines()
            .find(|l| l.ends_with(tag))
            .unwrap_or_else(|| panic!("{tag} not listed: {}", listed.report))
            .to_string()
    };
    assert!(line(&used).contains(" yes "), "{}", line(&used));
    assert!(!line(&idle).contains("never"), "{}", line(&idle));

    let dry = TestJob::new(&["prune", "--config", &config, "--dry-run"]).run();
    dry.code(0).stdout_has(&format!(
        "would remove {idle_id} ({idle}): no job has run it for 60 days"
    ));
    assert!(!dry.stdout.contains(&used_id), "{}", dry.report);
    assert_eq!(id(&idle), idle_id, "a dry run removed it");

    let pruned = TestJob::new(&["prune", "--config", &config]).run();
    pruned.code(0).stdout_has(&format!("removed {idle_id}"));
    assert_eq!(id(&idle), "", "the idle image is still on the node");
    assert_eq!(id(&used), used_id, "the image a container uses was removed");
    assert!(
        !id(IMAGE).is_empty(),
        "an image no job of this site ran was removed"
    );

    docker(&["rm", "-f", &holder]);
    docker(&["rmi", &used]);
}

#[test]
fn pulling_an_image_the_registry_lacks_is_the_jobs_error() {
    if !bed_is_up() {
        return;
    }
    // A typo in the image name: requeueing (75) would fail forever.
    let bed = Site::with_engine("pull = \"always\"", "");
    let out = bed
        .job(
            ALICE,
            "127.0.0.1:5000/jobdock-test/no-such-image:1",
            &["true"],
        )
        .run();
    out.code(64)
        .stderr_has("pulling 127.0.0.1:5000/jobdock-test/no-such-image:1")
        .stderr_has("the registry rejects it");
    let never = Site::with_engine("pull = \"never\"", "");
    never
        .job(ALICE, "jobdock-test/not-on-this-node:1", &["true"])
        .run()
        .code(75)
        .stderr_has("engine.pull is \"never\"");
}

// ------------------------------------------------------------------- failures explained --

#[test]
fn an_unreachable_daemon_is_named_with_code_75() {
    if !bed_is_up() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A daemon that is stopped (its socket file left behind) and one that accepts but never answers.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let hung = dir.path().join("hung.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&hung).unwrap();
    let cases = [
        (PathBuf::from("/nonexistent/docker.sock"), "no such socket"),
        (stale, "Connection refused"),
        (hung, "no answer"),
    ];
    for (socket, reason) in cases {
        let engine = format!(
            "socket = \"{}\"\nconnect_timeout_secs = 2",
            socket.display()
        );
        let bed = Site::with_engine(&engine, "");
        let out = bed.job(ALICE, IMAGE, &["true"]).run();
        out.code(75)
            .stderr_has(&format!("cannot reach dockerd at {}", socket.display()))
            .stderr_has(reason);
        // jobdock says how long it waited: connect_timeout_secs (2 s), not its default 60.
        let waited: u64 = out
            .stderr
            .split("waited ")
            .nth(1)
            .and_then(|r| r.split('s').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| out.fail("no \"waited Ns\" in the message"));
        if waited > 2 {
            out.fail("the wait for the daemon is not bounded by connect_timeout_secs (2 s)");
        }
        assert!(bed.leftovers().is_empty());
    }
}

/// A jobdock without its setuid bit (a `cargo install`, a copy on a nosuid mount) may not use the
/// socket: that is the install's fault (78), said at once with the fix, never retried as a
/// daemon that is down (75).
#[test]
fn a_jobdock_that_is_not_setuid_says_so_at_once() {
    if !bed_is_up() {
        return;
    }
    let out = TestJob::new(&["run", "--image", IMAGE, "--", "true"])
        .by(ALICE)
        .run();
    out.code(78)
        .stderr_has("may not use dockerd's socket /var/run/docker.sock")
        .stderr_has("setuid root");
    assert!(!out.stderr.contains("retrying"), "{}", out.report);
}

#[test]
fn an_lsf_job_file_in_an_image_without_a_shell_points_at_raw_mode() {
    if !bed_is_up() {
        return;
    }
    let spool = Path::new(ALICE.home).join(".lsbatch");
    if !spool.exists() {
        std::fs::create_dir(&spool).unwrap();
        std::os::unix::fs::chown(&spool, Some(2001), Some(2001)).unwrap();
    }
    let bed = Site::new("");
    let job = bed.job(ALICE, NOSHELL, &[]);
    let file = spool.join(format!("1700000000.{}", job.id));
    std::fs::write(&file, "#!/bin/sh\necho hello\n").unwrap();
    let out = job
        .env("LSB_JOBFILENAME", &file.display().to_string())
        .run();
    std::fs::remove_file(&file).unwrap();
    out.code(127)
        .stderr_has("has no /bin/sh")
        .stderr_has("LSB_DOCKER_RUN_RAW_ARGS=1");
    assert!(bed.leftovers().is_empty());
}

/// dockerd's hard RLIMIT_MEMLOCK (`None`: unlimited) and whether it holds CAP_SYS_RESOURCE.
fn dockerd_memlock() -> (Option<u64>, bool) {
    let pid = util::dockerd_pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let hard = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max locked memory"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|h| h.parse().ok());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    (hard, cap_eff & (1 << 24) != 0)
}

/// Issue 12.8: a device job gets devices.memlock. Unlimited, from a dockerd that may not grant it
/// (its own hard limit is lower and it lacks CAP_SYS_RESOURCE, as on the test bed), fails as the
/// site's error (78) naming the key and what dockerd may grant; within dockerd's limit it runs
/// with exactly that limit.
#[test]
fn a_device_jobs_memlock_is_devices_memlock_and_a_refusal_names_it() {
    if !bed_is_up() {
        return;
    }
    let (hard, cap_sys_resource) = dockerd_memlock();
    let devices = "[devices]\npaths = [\"/dev/null\"]\n";
    match hard {
        Some(hard) if !cap_sys_resource => {
            let bed = Site::new(&format!("{devices}memlock = \"unlimited\"\n"));
            let out = bed.job(ALICE, IMAGE, &["true"]).run();
            out.code(78)
                .stderr_has("locked-memory limit (devices.memlock = \"unlimited\")")
                .stderr_has(&format!("its own hard limit is {hard} bytes"))
                .stderr_has("set devices.memlock to at most")
                .stderr_has("CAP_SYS_RESOURCE")
                .stderr_has("error setting rlimit type 8");
            assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
            assert!(containers_of(&out_job(&bed)).is_empty());
        }
        _ => eprintln!(
            "dockerd may grant unlimited locked memory (hard {hard:?}, CAP_SYS_RESOURCE \
             {cap_sys_resource}): the refusal is not tested here"
        ),
    }
    if hard.is_some_and(|h| h < 8 << 20) {
        eprintln!("dockerd's memlock hard limit {hard:?} is below 8 MiB: 8m is not tested here");
        return;
    }
    let bed = Site::new(&format!("{devices}memlock = \"8m\"\n"));
    let out = bed
        .job(
            ALICE,
            IMAGE,
            &[
                "sh",
                "-c",
                "grep 'Max locked memory' /proc/self/limits; ls -l /dev/null",
            ],
        )
        .run();
    out.code(0);
    let limits = &out.stdout;
    let words: Vec<&str> = limits
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    if words.get(3..5) != Some(&["8388608", "8388608"][..]) {
        out.fail("the container's memlock is not devices.memlock = 8m (8388608:8388608)");
    }
    assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
}

/// The last job id a bed handed out.
fn out_job(bed: &Site) -> String {
    bed.jobs.last()
}

// ---- issue 15.2: output through FIFOs (engine.output = "fifo") ---------------------------------

const FIFO: &str = "output = \"fifo\"";

/// `job` run to the end with its raw stdout and stderr (not decoded as text).
fn raw_run(job: &TestJob) -> (Option<i32>, Vec<u8>, Vec<u8>) {
    let out = job.spawn().wait_with_output().unwrap();
    (out.status.code(), out.stdout, out.stderr)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// 64 MiB of random bytes through the job's stdout, and through its stderr, arrive byte-exact
/// (sha256) on jobdock's, each alone; the job's stdout really is the FIFO, and with
/// `engine.output = "attach"` it is dockerd's pipe, with the same bytes. jobdock's stdout is a
/// pipe (the FIFO is spliced into it) and a file (copied).
#[test]
fn sixty_four_mib_of_random_bytes_pass_each_fifo_byte_exact() {
    if !bed_is_up() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("jobdock-fifo")
        .tempdir_in(ALICE.home)
        .unwrap();
    let file = dir.path().join("random");
    let mut data = vec![0u8; 64 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    std::fs::write(&file, &data).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(ALICE.uid), None).unwrap();
    std::os::unix::fs::chown(&file, Some(ALICE.uid), None).unwrap();
    let want = sha256_hex(&data);
    let path = file.display().to_string();
    for (engine, fd1) in [
        (FIFO, "/dev/jobdock/stdout"),
        ("output = \"attach\"", "pipe:"),
    ] {
        let site = Site::with_engine(engine, "");
        let (code, out, err) = raw_run(&site.job(ALICE, IMAGE, &["cat", &path]));
        assert_eq!(code, Some(0), "{engine}: {}", String::from_utf8_lossy(&err));
        assert_eq!(
            (out.len(), sha256_hex(&out)),
            (data.len(), want.clone()),
            "{engine}"
        );
        assert!(
            err.is_empty(),
            "{engine}: {}",
            String::from_utf8_lossy(&err)
        );
        let into = dir.path().join("stdout");
        let job = site.job(ALICE, IMAGE, &["cat", &path]);
        let mut cmd = job.command();
        cmd.stdout(std::fs::File::create(&into).unwrap());
        let ran = cmd.output().unwrap();
        assert_eq!(ran.status.code(), Some(0), "{engine}: into a file");
        let out = std::fs::read(&into).unwrap();
        assert_eq!(
            (out.len(), sha256_hex(&out)),
            (data.len(), want.clone()),
            "{engine}: into a file"
        );
        let script = format!("cat {path} >&2; l=$(readlink /proc/$$/fd/1); echo \"$l\" >&2");
        let (code, out, err) = raw_run(&site.job(ALICE, IMAGE, &["sh", "-c", &script]));
        assert_eq!(code, Some(0), "{engine}");
        assert!(
            out.is_empty(),
            "{engine}: {}",
            String::from_utf8_lossy(&out)
        );
        let (bytes, link) = err.split_at(data.len().min(err.len()));
        assert_eq!(sha256_hex(bytes), want, "{engine}: stderr");
        assert!(
            String::from_utf8_lossy(link).starts_with(fd1),
            "{engine}: the job's stdout is {:?}, want {fd1}",
            String::from_utf8_lossy(link)
        );
        assert!(
            site.leftovers().is_empty(),
            "{engine}: {:?}",
            site.leftovers()
        );
    }
}

/// Through the FIFOs each stream keeps its order, written alternately by one process and by two
/// at once; exit codes pass as through attach; a job that closes its output at once, or whose
/// background child still holds its stdout when it exits, ends with the job.
#[test]
fn fifo_streams_keep_their_order_and_the_job_ends_when_its_init_does() {
    if !bed_is_up() {
        return;
    }
    let site = Site::with_engine(FIFO, "");
    let seq = |n: usize| (1..=n).map(|i| format!("{i}\n")).collect::<String>();
    let out = site
        .job(
            ALICE,
            IMAGE,
            &["sh", "-c", "seq 200000 & seq 100000 >&2 & wait"],
        )
        .run();
    out.code(0);
    assert!(out.stdout == seq(200000), "stdout out of order or short");
    assert!(out.stderr == seq(100000), "stderr out of order or short");
    let alternating = "for i in $(seq 2000); do echo o$i; echo e$i >&2; done";
    let out = site.job(ALICE, IMAGE, &["sh", "-c", alternating]).run();
    out.code(0);
    let want = |p: &str| (1..=2000).map(|i| format!("{p}{i}\n")).collect::<String>();
    assert!(
        out.stdout == want("o") && out.stderr == want("e"),
        "{}",
        out.report
    );
    for (script, code) in [
        ("exit 3", 3),
        ("kill -TERM $$", 143),
        ("exec >&- 2>&-; exit 5", 5),
    ] {
        site.job(ALICE, IMAGE, &["sh", "-c", script])
            .run()
            .code(code);
    }
    // The child would hold the FIFO for 60 s; the container's end takes it with the job.
    let started = Instant::now();
    let out = site
        .job(
            ALICE,
            IMAGE,
            &["sh", "-c", "(sleep 60; echo late) & echo now"],
        )
        .run();
    out.code(0);
    assert_eq!(out.stdout, "now\n");
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "jobdock waited for the background child: {:?}",
        started.elapsed()
    );
    assert!(site.leftovers().is_empty(), "{:?}", site.leftovers());
}

/// Through the FIFOs, a command the image lacks is explained as through attach (the wrapper's
/// `sh` reports it, not docker-init), and the out-of-memory kill is told; an image without
/// `/bin/sh` runs through attach.
#[test]
fn fifo_jobs_explain_failures_as_attach_does_and_an_image_without_a_shell_uses_attach() {
    if !bed_is_up() {
        return;
    }
    let site = Site::with_engine(FIFO, "[limits]\nmemory = \"48m\"\n");
    let out = site.job(ALICE, IMAGE, &["nosuchprog", "x"]).run();
    out.code(127)
        .stderr_has("jobdock: nosuchprog: not found in image jobdock-test/busybox:latest (PATH=");
    if out.stderr.contains("exec: line") {
        out.fail("sh's own words were shown");
    }
    site.job(ALICE, IMAGE, &["/etc/passwd"])
        .run()
        .code(126)
        .stderr_has("/etc/passwd: not executable in image");
    site.job(
        ALICE,
        IMAGE,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"],
    )
    .run()
    .code(137)
    .stderr_has("jobdock: killed: out of memory (limit 48.0 MiB)");
    // The noshell image's /true runs, through attach.
    site.job(ALICE, NOSHELL, &["/true"]).run().code(0);
    assert!(site.leftovers().is_empty(), "{:?}", site.leftovers());
}
