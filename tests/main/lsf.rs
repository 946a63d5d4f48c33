//! LSF, reproduced exactly as research/lsf_observed.md records it: a job file in the user's
//! `.lsbatch` with jobdock spliced in as JOB_STARTER, run by `/bin/sh` as the user in a process
//! group of its own with LSF's variables; bkill's signal sequence ending in SIGKILL followed by
//! the shipped POST_EXEC cleanup; the esub in both dialects. jobdock is the installed setuid copy
//! (the Debian package), as on a site.

// Table-driven cases name their columns with tuples.
#![allow(clippy::type_complexity)]

use crate::util;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::util::{ALICE, INSTALLED, Out, TestJob};

const IMAGE: &str = "jobdock-test/busybox";
const HOME: &str = ALICE.home;
/// The JOB_STARTER line contrib/lsf ships, as an LSF-family config reader hands it on (it cuts
/// every line at `#`: the line has none). `the_shipped_starter_line_survives_the_config_reader`
/// reads it from the shipped files; install.sh and the package write it naming the installed
/// jobdock, as the job files below are.
const SHIPPED_STARTER: &str = "exec /usr/local/bin/jobdock lsf-starter;";
const STARTER: &str = "exec /usr/bin/jobdock lsf-starter;";

/// What an LSF-family scheduler's config reader makes of a `KEY = value` line of lsb.queues or
/// lsb.applications (research/lsf_observed.md): everything from the first `#` is gone, quotes or
/// not, and the value is trimmed.
fn as_the_config_reader_reads(line: &str) -> Option<(String, String)> {
    let kept = line.split('#').next().unwrap_or("");
    let (key, value) = kept.split_once('=')?;
    Some((key.trim().to_string(), value.trim().to_string()))
}

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

/// One LSF job: its job file and the environment res gives the starter.
struct LsfJob {
    id: String,
    index: u32,
    file: PathBuf,
}

impl LsfJob {
    /// Writes the job file OpenLava writes for `input` (the user's text) with jobdock spliced in.
    fn new(input: &str, index: u32) -> LsfJob {
        let id = util::job_id();
        let spool = PathBuf::from(HOME).join(".lsbatch");
        std::fs::create_dir_all(&spool).unwrap();
        let uid = Some(nix::unistd::Uid::from_raw(ALICE.uid));
        let gid = Some(nix::unistd::Gid::from_raw(ALICE.uid));
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
    fn starter(&self) -> TestJob {
        let file = self.file.display().to_string();
        TestJob::program("/bin/sh", &[&file])
            .user(ALICE)
            .cwd(HOME)
            .env("LSB_JOBID", &self.id)
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
            .env("LSB_JOB_EXECUSER", ALICE.name)
            .env("LS_SUBCWD", HOME)
            .env("LS_EXEC_T", "START")
            .env("HOME", HOME)
            .env("USER", ALICE.name)
            .env("LOGNAME", ALICE.name)
    }

    /// The label jobdock gives the job's containers.
    fn label(&self) -> String {
        if self.index == 0 {
            self.id.clone()
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
    let id = util::job_id();
    let jobs: Vec<LsfJob> = (1..=3)
        .map(|index| {
            let mut job = LsfJob::new("sleep 1; echo element $LSB_JOBINDEX of $LSB_JOBID", index);
            // One LSB_JOBID for all elements, as LSF does.
            let file = PathBuf::from(HOME)
                .join(".lsbatch")
                .join(format!("1700000000.{id}.{index}"));
            std::fs::rename(&job.file, &file).unwrap();
            job.file = file;
            job.id = id.clone();
            job
        })
        .collect();
    let children: Vec<_> = jobs
        .iter()
        .map(|j| (j.starter().shown(), j.starter().in_own_group().spawn()))
        .collect();
    for (index, (shown, child)) in (1..=3).zip(children) {
        let out = Out::from(child.wait_with_output().unwrap(), shown);
        out.ok();
        assert_eq!(
            out.stdout,
            format!("element {index} of {id}\n"),
            "{}",
            out.report
        );
    }
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

/// The JOB_STARTER lines contrib/lsf ships are what the scheduler hands on, through its config
/// reader, and what the job files below are written with.
#[test]
fn the_shipped_starter_line_survives_the_config_reader() {
    for file in ["lsb.applications", "lsb.queues"] {
        let path = format!("{}/contrib/lsf/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let starters: Vec<String> = text
            .lines()
            .filter_map(as_the_config_reader_reads)
            .filter(|(k, _)| k == "JOB_STARTER")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(starters, [SHIPPED_STARTER], "{path}");
    }
}

/// The line the last release documented, `exec ... lsf-starter #`, reaches the job file without
/// its `#`: the starter gets the words of the user's first command. jobdock fails closed, as the
/// site's error (78): no container, nothing of the job run by jobdock.
#[test]
fn a_starter_line_cut_at_its_hash_fails_closed_as_the_sites_error() {
    if !bed_is_up() {
        return;
    }
    let (_, cut) =
        as_the_config_reader_reads(&format!("JOB_STARTER = exec {INSTALLED} lsf-starter #"))
            .unwrap();
    assert_eq!(cut, format!("exec {INSTALLED} lsf-starter"));
    let job = LsfJob::new("echo hi", 0);
    let text = std::fs::read_to_string(&job.file)
        .unwrap()
        .replace(&format!("{STARTER} "), &format!("{cut} "));
    std::fs::write(&job.file, text).unwrap();
    let out = job.starter().env("LSB_JOB_STARTER", &cut).run();
    out.code(78)
        .stderr_has(&format!("JOB_STARTER must be `{STARTER}`"));
    assert!(job.containers().is_empty());
}

/// bkill: SIGCONT and SIGINT, then SIGTERM, then SIGKILL, each to the job's process group — the
/// last one kills jobdock before it can remove the container; the shipped POST_EXEC does.
#[test]
fn bkill_then_post_exec_leaves_nothing() {
    if !bed_is_up() {
        return;
    }
    let job = LsfJob::new(
        "trap 'echo got INT' INT; trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.2; done",
        0,
    );
    let run = job.starter();
    let shown = run.shown();
    let mut child = run.in_own_group().spawn();
    let group = nix::unistd::Pid::from_raw(-(i32::try_from(child.id()).unwrap()));
    let mut watch = util::Watch::stdout_of(&mut child);
    // LSF waits JOB_TERMINATE_INTERVAL between the signals; the test waits until each arrived.
    watch.wait_for("ready", Duration::from_secs(60));
    use nix::sys::signal::{Signal, kill};
    kill(group, Signal::SIGCONT).unwrap();
    kill(group, Signal::SIGINT).unwrap();
    watch.wait_for("got INT", Duration::from_secs(30));
    kill(group, Signal::SIGTERM).unwrap();
    watch.wait_for("got TERM", Duration::from_secs(30));
    kill(group, Signal::SIGKILL).unwrap();
    let out = Out::from(watch.finish(child), shown);
    assert_eq!(out.code, 137, "{}", out.report);
    assert_eq!(
        out.stdout, "ready\ngot INT\ngot TERM\n",
        "INT and TERM reach the job{}",
        out.report
    );
    assert_eq!(
        job.containers().len(),
        1,
        "SIGKILLed jobdock cannot clean up: the post-exec must"
    );

    // POST_EXEC = /usr/bin/jobdock cleanup, as the user, with the job's variables.
    let post = TestJob::program(INSTALLED, &["cleanup"])
        .user(ALICE)
        .cwd(HOME)
        .env("LSB_JOBID", &job.id)
        .env("LSB_JOBINDEX", "0");
    post.run().ok().stdout_has("removed 1 container(s)");
    assert!(job.containers().is_empty());
    // Twice is fine, and another user's post-exec for this job removes nothing of alice's.
    TestJob::program(INSTALLED, &["cleanup"])
        .user(ALICE)
        .cwd(HOME)
        .env("LSB_JOBID", &job.id)
        .run()
        .ok();
}

#[test]
fn another_users_post_exec_cannot_remove_a_job() {
    if !bed_is_up() {
        return;
    }
    let job = LsfJob::new("sleep 30", 0);
    let child = job.starter().in_own_group().spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = loop {
        let running = util::running_containers_of(&job.label());
        if !running.is_empty() {
            break running;
        }
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    let bob = TestJob::program(INSTALLED, &["cleanup"])
        .user(util::BOB)
        .cwd("/tmp")
        .env("LSB_JOBID", &job.id)
        .run();
    // His cleanup acts on his own containers only: it succeeds and leaves hers alone.
    bob.code(0);
    assert_eq!(
        util::running_containers_of(&job.label()),
        running,
        "jdbob removed jdalice's container"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-(i32::try_from(child.id()).unwrap())),
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
) -> (Out, String, String) {
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
    // The package's esub (naming the installed jobdock), as a site copies it into
    // $LSF_SERVERDIR/esub.docker.
    let script = dir.path().join("esub.docker");
    std::fs::copy("/usr/share/jobdock/lsf/esub.docker", &script).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut run = TestJob::program(script.display().to_string(), &[])
        .user(ALICE)
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
    let (out, envfile, modfile) = esub(
        None,
        "LSB_SUB_ADDITIONAL=\"docker(image=127.0.0.1:5000/jobdock-test/busybox:latest)\"\n",
        &[],
    );
    out.ok();
    assert_eq!(
        envfile,
        "LSB_CONTAINER_IMAGE=\"127.0.0.1:5000/jobdock-test/busybox:latest\"\n"
    );
    // No application profiles there (OpenLava warns about LSB_SUB_APP_NAME on every bsub): the
    // docker queue instead.
    assert_eq!(modfile, "LSB_SUB_QUEUE=\"docker\"\n", "{}", out.report);
    assert!(!out.stderr.contains("APP_NAME"), "{}", out.report);
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
        // A typo would run the job on the host without a word.
        ("dcoker(alpine)", &[], "did you mean docker"),
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

/// A job tmpdir made by the test as LSF makes it (0700, the user's; another owner's is 0777), with
/// a marker in it; removed on drop.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(path: PathBuf, owner: u32) -> TmpDir {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("marker"), format!("{}\n", path.display())).unwrap();
        for p in [path.clone(), path.join("marker")] {
            nix::unistd::chown(
                &p,
                Some(nix::unistd::Uid::from_raw(owner)),
                Some(nix::unistd::Gid::from_raw(owner)),
            )
            .unwrap();
        }
        // Another user's trap is open to all: the job could enter it, and its files be read.
        let mode = if owner == ALICE.uid { 0o700 } else { 0o777 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        TmpDir(path)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The job's tmpdir is its /tmp, however LSF names it — through the installed setuid jobdock,
/// which never sees TMPDIR itself (glibc's secure mode removes it before main): OpenLava's and
/// LSF's default `/tmp/<jobid>.tmpdir` with no variable set; `<LSB_JOB_TMPDIR>/<jobid>.tmpdir`
/// (LSB_JOB_TMPDIR is the base); TMPDIR when LSB_SET_TMPDIR=y sets it; `<jobid>_<index>` for an
/// array element. A directory of that name someone else made is not mounted. TZDIR and LOCPATH,
/// which glibc removes too, reach the job.
#[test]
fn the_jobs_tmpdir_is_its_tmp_through_the_setuid_binary() {
    if !bed_is_up() {
        return;
    }
    let show = "cat /tmp/marker 2>&1; echo TZDIR=$TZDIR LOCPATH=$LOCPATH";
    // (what, index, where LSF made it, its owner, extra variables, whether it is mounted)
    let cases: Vec<(
        &str,
        u32,
        fn(&str) -> String,
        u32,
        Vec<(&str, String)>,
        bool,
    )> = vec![
        (
            "default",
            0,
            |id| format!("/tmp/{id}.tmpdir"),
            ALICE.uid,
            vec![],
            true,
        ),
        (
            "array element",
            3,
            |id| format!("/tmp/{id}_3.tmpdir"),
            ALICE.uid,
            vec![],
            true,
        ),
        (
            "LSB_JOB_TMPDIR base",
            0,
            |id| format!("/scratch/{id}.tmpdir"),
            ALICE.uid,
            vec![("LSB_JOB_TMPDIR", "/scratch".into())],
            true,
        ),
        (
            "TMPDIR (LSB_SET_TMPDIR=y), elsewhere",
            0,
            |id| format!("/scratch/jdalice/{id}.tmpdir"),
            ALICE.uid,
            vec![],
            true,
        ),
        (
            "made by someone else",
            0,
            |id| format!("/tmp/{id}.tmpdir"),
            util::BOB.uid,
            vec![],
            false,
        ),
    ];
    for (what, index, place, owner, extra, mounted) in cases {
        let job = LsfJob::new(show, index);
        let dir = TmpDir::new(PathBuf::from(place(&job.id)), owner);
        let mut run = job
            .starter()
            .env("TZDIR", "/usr/share/zoneinfo")
            .env("LOCPATH", "/usr/lib/locale");
        if what.starts_with("TMPDIR") {
            run = run.env("TMPDIR", &dir.0.display().to_string());
        }
        for (k, v) in &extra {
            run = run.env(k, v);
        }
        let out = run.run();
        out.ok();
        let first = out.stdout.lines().next().unwrap_or("");
        if mounted {
            assert_eq!(first, dir.0.display().to_string(), "{what}{}", out.report);
        } else {
            assert!(first.contains("No such file"), "{what}{}", out.report);
            out.stderr_has(&format!("owned by uid {}", util::BOB.uid));
        }
        assert!(
            out.stdout
                .contains("TZDIR=/usr/share/zoneinfo LOCPATH=/usr/lib/locale"),
            "{what}{}",
            out.report
        );
    }
}
