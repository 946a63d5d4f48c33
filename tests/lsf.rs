//! LSF, reproduced exactly as research/lsf_observed.md records it: a job file in the user's
//! `.lsbatch` with jobdock spliced in as JOB_STARTER, run by `/bin/sh` as the user in a process
//! group of its own with LSF's variables; bkill's signal sequence ending in SIGKILL followed by
//! the shipped POST_EXEC cleanup; the esub in both dialects. jobdock is the installed setuid copy
//! (contrib/install.sh), as on a site.

// Table-driven cases name their columns with tuples.
#![allow(clippy::type_complexity)]

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use util::{ALICE, INSTALLED, Output, Run};

const IMAGE: &str = "jobdock-test/busybox";
const HOME: &str = "/home/jdalice";
/// The JOB_STARTER line contrib/lsf/lsb.applications ships.
const STARTER: &str = "exec /usr/local/bin/jobdock lsf-starter #";

fn bed_is_up() -> bool {
    let docker = std::process::Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    util::with_installed_jobdock(
        "dockerd with the test image (scripts/testbed.sh up)",
        docker,
    )
}

fn job_id() -> u32 {
    util::unique_job_id()
}

/// One LSF job: its job file and the environment res gives the starter.
struct LsfJob {
    id: u32,
    index: u32,
    file: PathBuf,
}

impl LsfJob {
    /// Writes the job file OpenLava writes for `input` (the user's text) with jobdock spliced in.
    fn new(input: &str, index: u32) -> LsfJob {
        let id = job_id();
        let spool = PathBuf::from(HOME).join(".lsbatch");
        std::fs::create_dir_all(&spool).unwrap();
        let uid = Some(nix::unistd::Uid::from_raw(ALICE.1));
        let gid = Some(nix::unistd::Gid::from_raw(ALICE.1));
        nix::unistd::chown(&spool, uid, gid).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();
        let name = if index == 0 {
            format!("1700000000.{id}")
        } else {
            format!("1700000000.{id}.{index}")
        };
        let file = spool.join(name);
        let text = format!(
            "#! /bin/sh\n\n$LSB_TRAPSIGS\n$LSB_RCP1\n$LSB_RCP2\n$LSB_RCP3\n# LSBATCH: User input\n{STARTER} {input}\nExitStat=$?\nwait\n\
             # LSBATCH: End user input\ntrue\nexit `expr $? \"|\" $ExitStat`\n"
        );
        std::fs::write(&file, text).unwrap();
        nix::unistd::chown(&file, uid, gid).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o700)).unwrap();
        LsfJob { id, index, file }
    }

    /// `/bin/sh JOBFILE` as jdalice with the variables LSF sets (research/lsf_observed.md).
    fn starter(&self) -> Run {
        let file = self.file.display().to_string();
        Run::program("/bin/sh", &[&file])
            .user(ALICE.1)
            .cwd(HOME)
            .env("LSB_JOBID", &self.id.to_string())
            .env("LSB_JOBINDEX", &self.index.to_string())
            .env("LSB_JOBFILENAME", &file)
            .env("LSB_JOB_STARTER", STARTER)
            .env("LSB_CONTAINER_IMAGE", IMAGE)
            .env("LSB_TRAPSIGS", "trap # 15 10 12 2 1")
            .env("LSB_HOSTS", "vm")
            .env("LSB_MCPU_HOSTS", "vm 1 ")
            .env("LSB_DJOB_NUMPROC", "1")
            .env("LSB_QUEUE", "docker")
            .env("LSB_JOBNAME", "job")
            .env("LSB_JOB_EXECUSER", ALICE.0)
            .env("LS_SUBCWD", HOME)
            .env("LS_EXEC_T", "START")
            .env("HOME", HOME)
            .env("USER", ALICE.0)
            .env("LOGNAME", ALICE.0)
    }

    /// The label jobdock gives the job's containers.
    fn label(&self) -> String {
        if self.index == 0 {
            self.id.to_string()
        } else {
            format!("{}[{}]", self.id, self.index)
        }
    }

    fn containers(&self) -> Vec<String> {
        util::containers_of(&self.label())
    }
}

impl Drop for LsfJob {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        for c in self.containers() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &c])
                .output();
        }
    }
}

#[test]
fn the_users_exact_command_runs_entirely_in_the_container() {
    if !bed_is_up() {
        return;
    }
    // Each command would break, or run partly on the host, if LSF's splice were obeyed.
    let inside = "test -e /.jobdock/job.sh && echo inside || echo ON-THE-HOST";
    let cases: &[(&str, &str)] = &[
        (&format!("cd /etc; pwd; {inside}"), "/etc\ninside\n"),
        (
            &format!("echo hello | tr a-z A-Z | cat; {inside}"),
            "HELLO\ninside\n",
        ),
        ("for i in 1 2 3; do echo $i; done", "1\n2\n3\n"),
        ("echo 'a  b' \"$USER\" '$HOME'", "a  b jdalice $HOME\n"),
        (
            "x=1; if [ $x = 1 ]; then echo one; fi && wc -l < /etc/passwd",
            "one\n3\n",
        ),
        (
            &format!("#BSUB -q docker\nset -e\ncd /tmp\necho line1 > f\ncat f\n{inside}"),
            "line1\ninside\n",
        ),
    ];
    for (input, want) in cases {
        let job = LsfJob::new(input, 0);
        let out = job.starter().run();
        out.ok();
        assert_eq!(out.stdout, *want, "{input:?}{}", out.report);
        assert!(job.containers().is_empty(), "container left behind");
    }
}

#[test]
fn exit_codes_pass_through_the_job_file() {
    if !bed_is_up() {
        return;
    }
    for (input, code) in [
        ("exit 3", 3),
        ("true", 0),
        ("no-such-command", 127),
        ("kill -TERM $$", 143),
    ] {
        LsfJob::new(input, 0).starter().run().code(code);
    }
}

#[test]
fn array_elements_run_concurrently_with_their_own_output() {
    if !bed_is_up() {
        return;
    }
    let id = job_id();
    let jobs: Vec<LsfJob> = (1..=3)
        .map(|index| {
            let mut job = LsfJob::new("sleep 1; echo element $LSB_JOBINDEX of $LSB_JOBID", index);
            // One LSB_JOBID for all elements, as LSF does.
            let file = PathBuf::from(HOME)
                .join(".lsbatch")
                .join(format!("1700000000.{id}.{index}"));
            std::fs::rename(&job.file, &file).unwrap();
            job.file = file;
            job.id = id;
            job
        })
        .collect();
    let started = Instant::now();
    let children: Vec<_> = jobs
        .iter()
        .map(|j| (j.starter().shown(), j.starter().spawn(true)))
        .collect();
    for (index, (shown, child)) in (1..=3).zip(children) {
        let out = Output::from(child.wait_with_output().unwrap(), shown);
        out.ok();
        assert_eq!(
            out.stdout,
            format!("element {index} of {id}\n"),
            "{}",
            out.report
        );
    }
    // Three one-second jobs at once: far less than three seconds plus three container starts.
    assert!(started.elapsed() < Duration::from_secs(30));
    for job in &jobs {
        assert!(job.containers().is_empty());
    }
}

#[test]
fn a_parallel_job_sees_its_slots() {
    if !bed_is_up() {
        return;
    }
    let job = LsfJob::new("echo $LSB_HOSTS / $LSB_MCPU_HOSTS", 0);
    let out = job
        .starter()
        .env("LSB_HOSTS", "vm vm")
        .env("LSB_MCPU_HOSTS", "vm 2 ")
        .env("LSB_DJOB_NUMPROC", "2")
        .run();
    out.ok();
    assert_eq!(out.stdout.trim_end(), "vm vm / vm 2", "{}", out.report);
}

#[test]
fn a_starter_without_the_trailing_hash_is_refused() {
    if !bed_is_up() {
        return;
    }
    let job = LsfJob::new("echo hi", 0);
    let text = std::fs::read_to_string(&job.file)
        .unwrap()
        .replace(STARTER, "exec /usr/local/bin/jobdock lsf-starter");
    std::fs::write(&job.file, text).unwrap();
    job.starter()
        .env("LSB_JOB_STARTER", "exec /usr/local/bin/jobdock lsf-starter")
        .run()
        .code(64)
        .stderr_has("JOB_STARTER must be `exec /usr/local/bin/jobdock lsf-starter #`");
}

/// bkill: SIGCONT and SIGINT, then SIGTERM, then SIGKILL, each to the job's process group — the
/// last one kills jobdock before it can remove the container; the shipped POST_EXEC does.
#[test]
fn bkill_then_post_exec_leaves_nothing() {
    if !bed_is_up() {
        return;
    }
    let job = LsfJob::new(
        "trap 'echo got INT' INT; trap 'echo got TERM' TERM; while :; do sleep 0.2; done",
        0,
    );
    let run = job.starter();
    let shown = run.shown();
    let child = run.spawn(true);
    let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
    let running = || {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=jobdock.job={}", job.label()),
                "--filter",
                "status=running",
            ])
            .output()
            .unwrap();
        !out.stdout.is_empty()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running() {
        assert!(Instant::now() < deadline, "the job never ran{shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    use nix::sys::signal::{Signal, kill};
    kill(group, Signal::SIGCONT).unwrap();
    kill(group, Signal::SIGINT).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    kill(group, Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    kill(group, Signal::SIGKILL).unwrap();
    let out = Output::from(child.wait_with_output().unwrap(), shown);
    assert_eq!(out.code, 137, "{}", out.report);
    assert_eq!(
        out.stdout, "got INT\ngot TERM\n",
        "INT and TERM reach the job{}",
        out.report
    );
    assert_eq!(
        job.containers().len(),
        1,
        "SIGKILLed jobdock cannot clean up: the post-exec must"
    );

    // POST_EXEC = /usr/local/bin/jobdock cleanup, as the user, with the job's variables.
    let post = Run::program(INSTALLED, &["cleanup"])
        .user(ALICE.1)
        .cwd(HOME)
        .env("LSB_JOBID", &job.id.to_string())
        .env("LSB_JOBINDEX", "0");
    post.run().ok().stdout_has("removed 1 container(s)");
    assert!(job.containers().is_empty());
    // Twice is fine, and another user's post-exec for this job removes nothing of alice's.
    Run::program(INSTALLED, &["cleanup"])
        .user(ALICE.1)
        .cwd(HOME)
        .env("LSB_JOBID", &job.id.to_string())
        .run()
        .ok();
}

#[test]
fn another_users_post_exec_cannot_remove_a_job() {
    if !bed_is_up() {
        return;
    }
    let job = LsfJob::new("sleep 30", 0);
    let child = job.starter().spawn(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = loop {
        let running = util::running_containers_of(&job.label());
        if !running.is_empty() {
            break running;
        }
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    let bob = Run::program(INSTALLED, &["cleanup"])
        .user(util::BOB.1)
        .cwd("/tmp")
        .env("LSB_JOBID", &job.id.to_string())
        .run();
    // His cleanup acts on his own containers only: it succeeds and leaves hers alone.
    bob.code(0);
    assert_eq!(
        util::running_containers_of(&job.label()),
        running,
        "jdbob removed jdalice's container"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-(child.id() as i32)),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
}

/// `jobdock esub` as LSF runs it: as the user, with the parm file and the modify files.
fn esub(
    additional_env: Option<&str>,
    parm_extra: &str,
    env: &[(&str, &str)],
) -> (Output, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let parm = dir.path().join("lsbsubparm");
    std::fs::write(
        &parm,
        format!("LSB_SUB_QUEUE=\"normal\"\nLSB_SUB_NUM_PROCESSORS=1\n{parm_extra}"),
    )
    .unwrap();
    let (envfile, modfile) = (dir.path().join("envfile"), dir.path().join("modfile"));
    for f in [&envfile, &modfile] {
        std::fs::write(f, "").unwrap();
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let mut run = Run::program(INSTALLED, &["esub"])
        .user(ALICE.1)
        .cwd(HOME)
        .env("LSB_SUB_PARM_FILE", &parm.display().to_string())
        .env("LSB_SUB_ABORT_VALUE", "97")
        .env("LSB_SUB_MODIFY_ENVFILE", &envfile.display().to_string())
        .env("LSB_SUB_MODIFY_FILE", &modfile.display().to_string());
    if let Some(a) = additional_env {
        run = run.env("LSB_SUB_ADDITIONAL", a);
    }
    for (k, v) in env {
        run = run.env(k, v);
    }
    let out = run.run();
    (
        out,
        std::fs::read_to_string(envfile).unwrap(),
        std::fs::read_to_string(modfile).unwrap(),
    )
}

#[test]
fn esub_in_both_dialects() {
    if !bed_is_up() {
        return;
    }
    // LSF 10: esub.docker with LSB_SUB_ADDITIONAL in the environment.
    let (out, envfile, modfile) = esub(Some("docker(jobdock-test/busybox)"), "", &[]);
    out.ok();
    assert_eq!(
        envfile, "LSB_CONTAINER_IMAGE=\"jobdock-test/busybox:latest\"\n",
        "{}",
        out.report
    );
    assert_eq!(modfile, "LSB_SUB_APP_NAME=\"docker\"\n");
    // OpenLava: one esub, the -a string only in the parm file.
    let (out, envfile, _) = esub(
        None,
        "LSB_SUB_ADDITIONAL=\"docker(image=127.0.0.1:5000/jobdock-test/busybox:latest)\"\n",
        &[],
    );
    out.ok();
    assert_eq!(
        envfile,
        "LSB_CONTAINER_IMAGE=\"127.0.0.1:5000/jobdock-test/busybox:latest\"\n"
    );
    // Not a docker job: nothing written.
    let (out, envfile, modfile) = esub(None, "", &[]);
    out.ok();
    assert_eq!((envfile.as_str(), modfile.as_str()), ("", ""));
}

#[test]
fn esub_rejects_bad_settings_at_submit_time() {
    if !bed_is_up() {
        return;
    }
    let cases: &[(&str, &[(&str, &str)], &str)] = &[
        ("docker(Bad Image)", &[], "not a valid image reference"),
        (
            "docker(alpine)",
            &[("LSB_DOCKER_VOLUMES", "/etc:/etc2")],
            "LSB_DOCKER_VOLUMES",
        ),
        (
            "docker(alpine)",
            &[("LSF_DOCKER_NETWORK", "container:other")],
            "LSF_DOCKER_NETWORK",
        ),
        (
            "docker(alpine)",
            &[("LSB_DOCKER_PORTS", "22")],
            "LSB_DOCKER_PORTS",
        ),
    ];
    for (additional, env, want) in cases {
        let (out, envfile, _) = esub(Some(additional), "", env);
        out.code(97).stderr_has("job rejected").stderr_has(want);
        assert_eq!(envfile, "", "a rejected job changes nothing");
    }
}

/// `bsub -Is`: the starter's stdin is a terminal; the job gets one too, and LSB_INTERACTIVE
/// (which would make a nested bsub interactive) does not reach it.
#[test]
fn an_interactive_job_gets_a_terminal() {
    if !bed_is_up() {
        return;
    }
    let job = LsfJob::new(
        "test -t 0 && test -t 1 && echo tty; echo ${LSB_INTERACTIVE:-unset}; exit 4",
        0,
    );
    // script(1) runs the job file on a new pseudo-terminal, as res does for -Is.
    let inner = format!("/bin/sh {}", job.file.display());
    let out = job
        .starter()
        .env("LSB_INTERACTIVE", "Y")
        .env("TERM", "xterm")
        .run_program("script", &["-qec", &inner, "/dev/null"]);
    out.code(4);
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    assert_eq!(lines, ["tty", "unset"], "{}", out.report);
}
