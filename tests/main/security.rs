//! Attacks on jobdock's promises (SECURITY.md), against the real dockerd of scripts/testbed.sh:
//! hostile images; a non-root user driving a setuid-root copy of jobdock to read what they could
//! not, gain a capability, reach the docker socket, or see and stop another user's job; mounts
//! outside the allowed roots; and the symlink swap on a mount source between jobdock's check and
//! the container's start. Each test asserts that the attack gains nothing.
//!
//! Without the test bed these tests fail when CI=true and skip loudly otherwise. Every job gets a
//! unique LSB_JOBID, and every container of a test's jobs is removed when the test ends.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::util;
use crate::util::{
    ALICE, BOB, Out, Setuid, Site, TestJob, containers_of, docker, job_id, require, wait_until,
};

const BUSYBOX: &str = "jobdock-test/busybox";
const HOSTILE: &str = "jobdock-test/hostile";
const HOSTILE_WORKDIR: &str = "jobdock-test/hostile-workdir";
const HOSTILE_ENTRYPOINT: &str = "jobdock-test/hostile-entrypoint";
/// An image whose ENTRYPOINT echoes (scripts/testbed.sh).
const ENTRYPOINT: &str = "jobdock-test/entrypoint";
/// CHOWN(0) KILL(5) SETPCAP(8) IPC_LOCK(14) SYS_NICE(23): the default allowlist.
const ALLOWED_CAPS: &str = "0000000000804121";
const NO_CAPS: &str = "0000000000000000";

// ----------------------------------------------------------------------------------- helpers --

fn bed_is_up() -> bool {
    util::bed_is_up(&[
        BUSYBOX,
        HOSTILE,
        HOSTILE_WORKDIR,
        HOSTILE_ENTRYPOINT,
        ENTRYPOINT,
    ])
}

/// A file only `owner` may read (mode 0600), holding a fresh secret; removed on drop.
struct Secret {
    path: PathBuf,
    text: String,
}

impl Secret {
    fn new(path: PathBuf, owner: u32) -> Secret {
        let text = format!("secret-{}-{}", std::process::id(), job_id());
        std::fs::write(&path, format!("{text}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(owner), Some(owner)).unwrap();
        Secret { path, text }
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs `job` and checks that jobdock refuses it (64), saying each of `words`, before any
/// container of its job exists.
#[track_caller]
fn refused_before_any_container(job: &TestJob, words: &[&str]) {
    let out = job.run();
    out.code(64);
    for want in words {
        out.stderr_has(want);
    }
    if !containers_of(&job.id).is_empty() {
        out.fail("a container was made");
    }
}

fn host_groups(user: &str) -> String {
    let out = Command::new("id").args(["-G", user]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

// ------------------------------------------------------------------------ hostile images --

/// The image's /etc/group names a group "3001" (jdalice's first group) with gid 0. dockerd would
/// resolve jdalice's GroupAdd entry 3001 in it and give her root's group: refused before start.
#[test]
fn an_image_group_named_like_the_users_gid_is_refused() {
    if !bed_is_up() {
        return;
    }
    let site = Site::new("");
    let job = site.job(ALICE, HOSTILE, &["id"]);
    job.run()
        .code(64)
        .stderr_has("its /etc/group has a group named \"3001\" with gid 0")
        .never_shows("uid=");
    assert!(containers_of(&job.id).is_empty(), "a container was left");
}

/// For jdbob (whose gids the image does not name), the image's passwd and group claim his name,
/// uid and membership as root's: he still gets exactly his host identity.
#[test]
fn an_image_passwd_and_group_claiming_root_grant_nothing() {
    if !bed_is_up() {
        return;
    }
    let site = Site::new("");
    let out = site
        .job(
            BOB,
            HOSTILE,
            &[
                "sh",
                "-c",
                "id -u; id -g; id -G; cat /etc/passwd /proc/self/status",
            ],
        )
        .run();
    out.code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    if lines.len() < 3 || lines[..3] != ["2002", "2002", host_groups(BOB.name).as_str()] {
        out.fail(&format!(
            "expected uid 2002, gid 2002 and the host's groups {}",
            host_groups(BOB.name)
        ));
    }
    if out.stdout.contains("claims root") || out.stdout.contains("2001:x:0:0") {
        out.fail("the image's /etc/passwd is visible");
    }
    if out.value("Uid") != "2002\t2002\t2002\t2002" || out.value("Gid") != "2002\t2002\t2002\t2002"
    {
        out.fail("the kernel's ids are not jdbob's");
    }
    let groups = out.value("Groups");
    if groups.split_whitespace().any(|g| g == "0" || g == "6") {
        out.fail("the job got root's or disk's group");
    }
}

#[test]
fn a_setuid_root_program_in_the_image_stays_the_user() {
    if !bed_is_up() {
        return;
    }
    let site = Site::new("");
    let out = site.job(BOB, HOSTILE, &["/bin/suid-escalate"]).run();
    out.code(0);
    for key in [
        "start.euid",
        "start.suid",
        "end.ruid",
        "end.euid",
        "end.suid",
    ] {
        if out.value(key) != "2002" {
            out.fail(&format!("{key} is not 2002: the setuid bit took effect"));
        }
    }
    if out.value("start.egid") != "2002" {
        out.fail("the setgid bit took effect");
    }
    for key in ["setuid0", "setgid0", "setgroups0"] {
        if out.value(key) != "Operation not permitted" {
            out.fail(&format!("{key} did not fail"));
        }
    }
    for key in ["start.CapEff", "start.CapPrm", "end.CapEff"] {
        if out.value(key) != NO_CAPS {
            out.fail(&format!("{key} is not empty"));
        }
    }
    assert_eq!(out.value("start.NoNewPrivs"), "1");
}

/// cap-escalate has CHOWN and KILL as file capabilities (both in the bounding set: only
/// no-new-privileges stops them); cap-setuid has SETUID and SETGID (outside it: not executable).
#[test]
fn file_capabilities_in_the_image_grant_nothing() {
    if !bed_is_up() {
        return;
    }
    let site = Site::new("");
    let out = site.job(BOB, HOSTILE, &["/bin/cap-escalate"]).run();
    out.code(0);
    for key in [
        "start.CapEff",
        "start.CapPrm",
        "start.CapInh",
        "start.CapAmb",
        "end.CapEff",
    ] {
        if out.value(key) != NO_CAPS {
            out.fail(&format!(
                "{key} is not empty: the file capabilities took effect"
            ));
        }
    }
    assert_eq!(out.value("start.CapBnd"), ALLOWED_CAPS);
    let out = site
        .job(BOB, HOSTILE, &["sh", "-c", "/bin/cap-setuid; echo rc=$?"])
        .run();
    out.code(0);
    if !out.stdout.contains("rc=126") || out.stdout.contains("start.euid") {
        out.fail("a program with capabilities outside the bounding set must not run");
    }
}

/// /kmsg in the image is the host's /dev/kmsg (c 1:11), mode 0666: the device cgroup refuses it.
#[test]
fn device_nodes_in_the_image_cannot_be_opened() {
    if !bed_is_up() {
        return;
    }
    let site = Site::new("");
    let out = site
        .job(
            BOB,
            HOSTILE,
            &[
                "sh",
                "-c",
                "head -c 1 /kmsg; echo rc=$?; echo x > /kmsg; echo rc=$?",
            ],
        )
        .run();
    out.code(0);
    if out.stdout != "rc=1\nrc=1\n" || out.stderr.matches("Operation not permitted").count() != 2 {
        out.fail("the image's device node could be opened");
    }
}

/// `WORKDIR /proc/self/fd/7` (runc CVE-2024-21626) applies only when jobdock sets no working
/// directory (it could not tell the job's): refused before start. Otherwise jobdock's wins.
#[test]
fn an_image_workdir_in_proc_is_refused() {
    if !bed_is_up() {
        return;
    }
    let site = Site::new("");
    let gone = site.dir.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let mut job = site.job(BOB, HOSTILE_WORKDIR, &["pwd"]).cwd(&gone);
    job.cwd_gone = true;
    job.run()
        .code(64)
        .stderr_has("its WORKDIR /proc/self/fd/7 is under /proc");
    assert!(containers_of(&job.id).is_empty());

    let out = site.job(BOB, HOSTILE_WORKDIR, &["pwd"]).run();
    out.code(0);
    assert_eq!(out.stdout, format!("{}\n", BOB.home), "{}", out.report);
}

/// The image's entrypoint is the setuid-root program: in raw mode it runs (as the user, gaining
/// nothing); otherwise jobdock replaces it with the job's command.
#[test]
fn an_entrypoint_that_tries_to_become_root_gets_nothing() {
    if !bed_is_up() {
        return;
    }
    let site = Site::new("");
    let raw = site
        .job(BOB, HOSTILE_ENTRYPOINT, &["LSB_DOCKER_PLACE_HOLDER"])
        .env("LSB_DOCKER_RUN_RAW_ARGS", "1")
        .run();
    raw.code(0);
    assert_eq!(raw.value("end.euid"), "2002", "{}", raw.report);
    assert_eq!(raw.value("setuid0"), "Operation not permitted");
    assert_eq!(raw.value("end.CapEff"), NO_CAPS);
    // Its /etc/shadow argument is the image's (it has none), never the host's.
    assert_eq!(
        raw.value("read /etc/shadow"),
        "No such file or directory",
        "{}",
        raw.stdout
    );

    let plain = site.job(BOB, HOSTILE_ENTRYPOINT, &["id", "-u"]).run();
    plain.code(0);
    assert_eq!(plain.stdout, "2002\n", "{}", plain.report);
}

// --------------------------------------------------------- a user through setuid jobdock --

/// Through every input that names a host file (env files, host files, the working directory,
/// volumes, symlinks to them, the config), jdalice reads nothing she could not read herself:
/// /etc/shadow, jdbob's 0600 file in his 0700 home, a 0644 file in a 0755 directory under that
/// home (a bind mount would skip the home's search permission), a root-owned 0600 file.
#[test]
fn a_user_reads_nothing_through_jobdock_she_could_not_read_herself() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let root_dir = util::trusted_tempdir();
    let root_secret = Secret::new(root_dir.path().join("root-secret"), 0);
    let bob_secret = Secret::new(Path::new(BOB.home).join("jobdock-secret"), BOB.uid);
    let bob_pub = Path::new(BOB.home).join("jobdock-public");
    std::fs::create_dir_all(&bob_pub).unwrap();
    std::os::unix::fs::chown(&bob_pub, Some(BOB.uid), Some(BOB.uid)).unwrap();
    std::fs::set_permissions(&bob_pub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bob_public = Secret::new(bob_pub.join("readable"), BOB.uid);
    std::fs::set_permissions(&bob_public.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shadow_root = std::fs::read_to_string("/etc/shadow")
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();

    // Links in her own home to each target.
    let links = tempfile::Builder::new()
        .prefix("jobdock-links")
        .tempdir_in(ALICE.home)
        .unwrap();
    std::os::unix::fs::chown(links.path(), Some(ALICE.uid), Some(ALICE.uid)).unwrap();
    let targets = [
        ("shadow", PathBuf::from("/etc/shadow")),
        ("bob", bob_secret.path.clone()),
        ("bobpub", bob_public.path.clone()),
        ("root", root_secret.path.clone()),
    ];
    for (name, target) in &targets {
        std::os::unix::fs::symlink(target, links.path().join(name)).unwrap();
        std::os::unix::fs::symlink(
            target.parent().unwrap(),
            links.path().join(format!("{name}-dir")),
        )
        .unwrap();
    }

    let mut attempts = 0;
    for (name, target) in &targets {
        let file = target.display().to_string();
        let dir = target.parent().unwrap().display().to_string();
        let link = links.path().join(name).display().to_string();
        let link_dir = links
            .path()
            .join(format!("{name}-dir"))
            .display()
            .to_string();
        let cases: Vec<(&str, TestJob)> = vec![
            (
                "env file",
                setuid
                    .run(ALICE, BUSYBOX, &["env"])
                    .env("LSB_DOCKER_ENV_FILE", &file),
            ),
            (
                "env file via a symlink",
                setuid
                    .run(ALICE, BUSYBOX, &["env"])
                    .env("LSB_DOCKER_ENV_FILE", &link),
            ),
            (
                "add-host file",
                setuid
                    .run(ALICE, BUSYBOX, &["cat", "/etc/hosts"])
                    .env("LSF_DOCKER_ADD_HOST_FILE", &file),
            ),
            (
                "add-host file via a symlink",
                setuid
                    .run(ALICE, BUSYBOX, &["cat", "/etc/hosts"])
                    .env("LSB_DOCKER_ADD_HOST_FILE", &link),
            ),
            (
                "volume",
                setuid
                    .run(ALICE, BUSYBOX, &["sh", "-c", "cat /x/*"])
                    .env("LSB_DOCKER_VOLUMES", &format!("{dir}:/x")),
            ),
            (
                "volume via a symlink",
                setuid
                    .run(ALICE, BUSYBOX, &["sh", "-c", "cat /x/*"])
                    .env("LSB_DOCKER_VOLUMES", &format!("{link_dir}:/x")),
            ),
            (
                "working directory",
                setuid
                    .run(ALICE, BUSYBOX, &["sh", "-c", "cat ./*"])
                    .cwd(&dir),
            ),
            (
                "working directory via a symlink",
                setuid
                    .run(ALICE, BUSYBOX, &["sh", "-c", "cat ./*"])
                    .cwd(&link_dir),
            ),
            (
                "LSB_DOCKER_WORKDIR",
                setuid
                    .run(ALICE, BUSYBOX, &["sh", "-c", "cat ./*"])
                    .env("LSB_DOCKER_WORKDIR", &dir),
            ),
            (
                "config",
                setuid.by(
                    ALICE,
                    &["plan", "--config", &file, "--image", BUSYBOX, "--", "id"],
                ),
            ),
            (
                "JOBDOCK_CONFIG",
                setuid
                    .run(ALICE, BUSYBOX, &["cat", &file])
                    .env("JOBDOCK_CONFIG", &file),
            ),
        ];
        for (how, job) in cases {
            attempts += 1;
            let out = job.run();
            out.never_shows(&root_secret.text)
                .never_shows(&bob_secret.text)
                .never_shows(&bob_public.text)
                .never_shows(&shadow_root);
            // Refused, or (the image's own /etc/hosts, an LSB_DOCKER_WORKDIR that is a directory
            // of the image's) ran without the file.
            if out.status.code() == Some(0)
                && !matches!(how, "LSB_DOCKER_WORKDIR" | "JOBDOCK_CONFIG")
            {
                out.fail(&format!("{name} by {how}: accepted"));
            }
        }
    }
    assert_eq!(attempts, 44);
    drop(bob_public);
    let _ = std::fs::remove_dir(&bob_pub);
}

/// Issue 18.7, as a user meets it through the installed kind of jobdock (setuid, the site's
/// config): a job without a tmpdir of its own has the site's bounded tmpfs as /tmp, her prompt
/// says she is in the image, a command missing from the image is named by jobdock (not tini's
/// `[FATAL tini (7)] exec ... failed`), and an image ENTRYPOINT that is not run is named.
#[test]
fn inside_the_container_a_user_is_told_where_she_is() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let out = setuid
        .run(
            ALICE,
            BUSYBOX,
            &["sh", "-c", "grep ' /tmp ' /proc/mounts; echo \"$PS1\""],
        )
        .env("PS1", "\\u$ ")
        .run();
    out.code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    // wrapper.toml.example's limits.tmp_size, 1g, in the kernel's KiB.
    let tmp = lines.first().copied().unwrap_or_default();
    if !(tmp.starts_with("tmpfs /tmp tmpfs rw,nosuid,nodev,") && tmp.contains("size=1048576k")) {
        out.fail("/tmp is not the site's 1 GiB tmpfs without setuid and devices");
    }
    if lines.get(1) != Some(&format!("({BUSYBOX}:latest) \\u$ ").as_str()) {
        out.fail("the prompt does not name the image");
    }

    let missing = setuid.run(ALICE, BUSYBOX, &["python3", "-V"]).run();
    missing.code(127).stderr_has(&format!(
        "jobdock: python3: not found in image {BUSYBOX}:latest (PATH=/usr/local/sbin:"
    ));
    if missing.stderr.contains("tini") {
        missing.fail("tini's own message reached the user");
    }

    let entrypoint = setuid.run(ALICE, ENTRYPOINT, &["echo", "hello"]).run();
    entrypoint
        .code(0)
        .stderr_has("jobdock: the image's ENTRYPOINT [\"/bin/echo\", \"the image entrypoint ran with:\"] is not run")
        .stderr_has("LSB_DOCKER_RUN_RAW_ARGS=true");
    if entrypoint.stdout != "hello\n" {
        entrypoint.fail("the command did not run by itself");
    }
}

/// Whatever jdalice asks of a setuid-root jobdock, her job has no capability, no-new-privileges,
/// her own ids, and the bounding set of the allowlist.
#[test]
fn a_user_gains_no_capability_or_identity_through_setuid_jobdock() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let out = setuid
        .run(ALICE, BUSYBOX, &["cat", "/proc/self/status"])
        .env("SUDO_UID", "0")
        .env("SLURM_JOB_UID", "0")
        .env("USER", "root")
        .run();
    out.code(0);
    for key in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        if out.value(key) != NO_CAPS {
            out.fail(&format!("{key} is not empty"));
        }
    }
    assert_eq!(out.value("CapBnd"), ALLOWED_CAPS, "{}", out.stdout);
    assert_eq!(out.value("NoNewPrivs"), "1");
    assert_eq!(out.value("Uid"), "2001\t2001\t2001\t2001");

    for claim in ["root", "0", BOB.name] {
        let mut job = setuid.run(ALICE, BUSYBOX, &["id"]);
        job.args
            .splice(1..1, ["--user".to_string(), claim.to_string()]);
        job.run()
            .code(64)
            .stderr_has("only root may run a job as another user");
    }
    let site = Site::new("[security]\ncap_add = [\"CHOWN\"]\n");
    let config = site.config.display().to_string();
    setuid
        .by(
            ALICE,
            &["run", "--config", &config, "--image", BUSYBOX, "--", "id"],
        )
        .run()
        .code(64)
        .stderr_has("only root may choose the site config");
    for (var, value) in [
        ("LSB_DOCKER_IPC", "container:x"),
        ("LSB_DOCKER_NETWORK", "container:x"),
    ] {
        setuid
            .run(ALICE, BUSYBOX, &["id"])
            .env(var, value)
            .run()
            .code(64)
            .stderr_has("never allowed");
    }
}

/// A setuid-root jobdock that someone besides root could replace or rewrite refuses to run: a
/// world-writable binary, and a binary in a directory the user owns (she could swap the file for
/// another under the same name between an admin's check and a job).
#[test]
fn a_setuid_jobdock_others_could_replace_refuses_to_run() {
    if !bed_is_up() {
        return;
    }
    let writable = Setuid::new();
    std::fs::set_permissions(&writable.path, std::fs::Permissions::from_mode(0o4757)).unwrap();
    let out = writable.run(ALICE, BUSYBOX, &["id"]).run();
    out.code(78).stderr_has(&format!(
        "{} is writable by group or others (mode 4757)",
        writable.path.display()
    ));

    let in_her_dir = Setuid::new();
    let dir = in_her_dir.path.parent().unwrap();
    std::os::unix::fs::chown(dir, Some(ALICE.uid), Some(ALICE.uid)).unwrap();
    let out = in_her_dir.run(ALICE, BUSYBOX, &["id"]).run();
    out.code(78)
        .stderr_has(&format!("{} is owned by uid 2001, not root", dir.display()));
    for job in [&writable, &in_her_dir] {
        assert!(containers_of(&job.jobs.last()).is_empty());
    }
}

/// No path to dockerd or containerd from inside a job: no socket is there to find, none can be
/// mounted, and the job is not in the docker group.
#[test]
fn the_docker_socket_is_out_of_reach() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let out = setuid
        .run(
            ALICE,
            BUSYBOX,
            &[
                "sh",
                "-c",
                "find / \\( -path /proc -o -path /sys \\) -prune -o -type s -print 2>/dev/null; \
                 for s in /var/run/docker.sock /run/docker.sock /run/containerd/containerd.sock \
                 /var/run/docker/containerd/containerd.sock; do test -e $s && echo FOUND $s; done; \
                 id -G",
            ],
        )
        .run();
    out.code(0);
    if out.stdout.trim() != host_groups(ALICE.name) {
        out.fail("a socket is visible, or the groups are not exactly the user's");
    }
    let docker_gid = nix::unistd::Group::from_name("docker")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw().to_string());
    if let Some(gid) = docker_gid {
        assert!(!out.stdout.split_whitespace().any(|g| g == gid));
    }
    for volume in [
        "/var/run/docker.sock:/s",
        "/run/docker.sock:/s",
        "/var/run:/r",
        "/run:/r",
        "/run/containerd:/c",
        "/var/lib/docker:/d",
    ] {
        let out = setuid
            .run(ALICE, BUSYBOX, &["ls", "-l", "/s", "/r", "/c", "/d"])
            .env("LSB_DOCKER_VOLUMES", volume)
            .run();
        out.code(64).stderr_has("LSB_DOCKER_VOLUMES");
    }
}

/// jdbob's job runs. jdalice's job cannot see its processes, signal them, join its namespaces, or
/// remove it; afterwards it still runs.
#[test]
fn one_users_job_cannot_see_signal_or_remove_anothers() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let bob = setuid.run(BOB, BUSYBOX, &["sleep", "4217"]);
    let mut bob_child = bob.spawn();
    wait_until("jdbob's job to run", Duration::from_secs(30), || {
        containers_of(&bob.id).iter().any(|c| {
            let out = docker(&["inspect", "-f", "{{.State.Running}}", c]);
            String::from_utf8_lossy(&out.stdout).trim() == "true"
        })
    });
    let container = containers_of(&bob.id)[0].clone();
    let host_pid =
        String::from_utf8(docker(&["inspect", "-f", "{{.State.Pid}}", &container]).stdout)
            .unwrap()
            .trim()
            .to_string();
    let running = || {
        let out = docker(&["inspect", "-f", "{{.State.Running}}", &container]);
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    };

    let seen = setuid
        .run(
            ALICE,
            BUSYBOX,
            &[
                "sh",
                "-c",
                &format!("ps -o user,pid,args; kill -9 {host_pid}; echo kill=$?"),
            ],
        )
        .run();
    if seen.stdout.contains("4217") || seen.stdout.contains("jdbob") {
        seen.fail("jdalice's job sees jdbob's");
    }
    if !seen.stdout.contains("kill=1") {
        seen.fail("kill of jdbob's job's host pid did not fail");
    }
    assert!(running(), "jdbob's job was stopped");

    for (var, value) in [
        ("LSB_DOCKER_IPC", format!("container:{container}")),
        ("LSB_DOCKER_NETWORK", format!("container:{container}")),
        ("LSB_DOCKER_CGROUP", format!("/docker/{container}")),
    ] {
        setuid
            .run(ALICE, BUSYBOX, &["true"])
            .env(var, &value)
            .run()
            .code(64)
            .stderr_has(var);
    }
    // Her cleanup of his job acts on her containers only (none), and says nothing of his.
    let cleaned = setuid.by(ALICE, &["cleanup", "--job", &bob.id]).run();
    cleaned
        .code(0)
        .never_shows(&container[..12])
        .never_shows("jdbob");
    assert!(running(), "jdbob's job was stopped");

    // jdbob's own jobdock still forwards his TERM.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(bob_child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = bob_child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
}

/// Volumes only from under mounts.allowed_roots, checked as the user, whatever the spelling.
#[test]
fn volumes_outside_the_allowed_roots_are_refused() {
    if !bed_is_up() {
        return;
    }
    // Through the setuid jobdock (with whatever config is installed), sensitive paths never.
    let setuid = Setuid::new();
    for volume in [
        "/etc:/x",
        "/:/x",
        "/root:/x",
        "/proc/1/root:/x",
        "/dev:/x",
        "/boot:/x",
    ] {
        setuid
            .run(ALICE, BUSYBOX, &["ls", "/x"])
            .env("LSB_DOCKER_VOLUMES", volume)
            .run()
            .code(64)
            .stderr_has("LSB_DOCKER_VOLUMES");
    }

    let site = Site::new("");
    let roots = site.dir.path().join("roots");
    std::fs::create_dir(&roots).unwrap();
    let mine = roots.join("alice");
    std::fs::create_dir(&mine).unwrap();
    std::os::unix::fs::chown(&mine, Some(ALICE.uid), Some(ALICE.uid)).unwrap();
    let bob_pub = Path::new(BOB.home).join("jobdock-public-vol");
    std::fs::create_dir_all(&bob_pub).unwrap();
    std::fs::set_permissions(&bob_pub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let vault = roots.join("vault");
    std::fs::create_dir(&vault).unwrap();
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(vault.join("open")).unwrap();
    std::fs::set_permissions(vault.join("open"), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (link, target) in [
        ("etc", "/etc"),
        ("bob", bob_pub.to_str().unwrap()),
        ("sock", "/var/run/docker.sock"),
        ("up", ".."),
    ] {
        std::os::unix::fs::symlink(target, mine.join(link)).unwrap();
    }
    let config = format!(
        "[engine]\nstate_dir = \"{}\"\n[network]\ndefault = \"none\"\n[mounts]\nallowed_roots = [\"{}\"]\n",
        site.dir.path().join("state").display(),
        roots.display()
    );
    std::fs::write(&site.config, config).unwrap();
    let m = mine.display().to_string();
    let r = roots.display().to_string();
    let cases = [
        (format!("{m}:/data"), ""),
        ("/etc:/x".to_string(), "which jobs may never see"),
        (format!("{m}/etc:/x"), "outside the allowed roots"),
        // jdbob's 0755 directory, in his 0700 home: she cannot reach it.
        (format!("{m}/bob:/x"), "Permission denied"),
        (format!("{m}/sock:/x"), "not a directory"),
        (format!("{m}/up/..:/x"), "\"..\""),
        (format!("{m}/../../..:/x"), "\"..\""),
        (format!("{r}/vault/open:/x"), "Permission denied"),
        (format!("{m}:/etc/passwd"), "synthesized by jobdock"),
        (format!("{m}:/proc/sys"), "runtime owns"),
        (format!("{m}:/x:Z"), "only ro or rw"),
        (format!("{m}:/x:rshared"), "only ro or rw"),
        ("alice:/x".to_string(), "named volumes"),
        (format!("{m}/../alice:/x"), "\"..\""),
    ];
    for (volume, want) in cases {
        let job = site
            .job(ALICE, BUSYBOX, &["ls", "/data"])
            .env("LSB_DOCKER_VOLUMES", &volume);
        let out = job.run();
        if want.is_empty() {
            out.code(0);
        } else {
            out.code(64)
                .stderr_has("LSB_DOCKER_VOLUMES")
                .stderr_has(want);
            assert!(
                containers_of(&job.id).is_empty(),
                "{volume}: container made"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&bob_pub);
}

// ------------------------------------------------------------ the mount-source swap race --

/// A directory under an allowed root, owned by the user, for the swap tests; and a directory the
/// user cannot reach (in a 0700 root-owned one) with a secret in it.
struct Swap {
    site: Site,
    data: PathBuf,
    secret: PathBuf,
    text: String,
}

impl Swap {
    fn new() -> Swap {
        let site = Site::new("");
        let roots = site.dir.path().join("roots");
        std::fs::create_dir(&roots).unwrap();
        std::os::unix::fs::chown(&roots, Some(ALICE.uid), Some(ALICE.uid)).unwrap();
        let data = roots.join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("mine"), "mine\n").unwrap();
        std::os::unix::fs::chown(&data, Some(ALICE.uid), Some(ALICE.uid)).unwrap();
        let vault = site.dir.path().join("vault");
        std::fs::create_dir(&vault).unwrap();
        std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o700)).unwrap();
        let secret = vault.join("open");
        std::fs::create_dir(&secret).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = format!("vault-{}", job_id());
        std::fs::write(secret.join("SECRET"), format!("{text}\n")).unwrap();
        let config = format!(
            "[engine]\nstate_dir = \"{}\"\nconnect_timeout_secs = 10\n[network]\ndefault = \"none\"\n\
             [mounts]\nallowed_roots = [\"{}\"]\n",
            site.dir.path().join("state").display(),
            roots.display()
        );
        std::fs::write(&site.config, config).unwrap();
        Swap {
            site,
            data,
            secret,
            text,
        }
    }
}

/// Between jobdock's check (as the user) and the container's start, the checked directory is
/// replaced by a symlink to /etc. jobdock must not start the container, remove it, and say why.
/// A debug-build delay (JOBDOCK_TEST_DELAY_BEFORE_VERIFY_MS) holds jobdock after create so the swap
/// lands in that window every time.
#[test]
fn a_mount_source_swapped_for_a_symlink_after_the_check_is_never_mounted() {
    if !bed_is_up() {
        return;
    }
    let swap = Swap::new();
    let job = swap
        .site
        .job(
            ALICE,
            BUSYBOX,
            &["sh", "-c", "cat /data/hostname /data/mine"],
        )
        .env(
            "LSB_DOCKER_VOLUMES",
            &format!("{}:/data", swap.data.display()),
        )
        .env("JOBDOCK_TEST_DELAY_BEFORE_VERIFY_MS", "3000");
    let child = job.spawn();
    wait_until(
        "the container to be created",
        Duration::from_secs(30),
        || !containers_of(&job.id).is_empty(),
    );
    let moved = swap.data.with_file_name("data.real");
    std::fs::rename(&swap.data, &moved).unwrap();
    std::os::unix::fs::symlink("/etc", &swap.data).unwrap();
    let out = Out::from(child.wait_with_output().unwrap(), job.shown());
    out.code(64)
        .stderr_has(&format!("mount source {}:", swap.data.display()))
        .stderr_has("was it replaced, or a symlink swapped in?")
        .never_shows("mine");
    if !out.stdout.is_empty() {
        out.fail("the job ran");
    }
    assert!(containers_of(&job.id).is_empty(), "the container was left");

    // Swapped before the check: refused by the plan, nothing created.
    let early = swap
        .site
        .job(ALICE, BUSYBOX, &["cat", "/data/hostname"])
        .env(
            "LSB_DOCKER_VOLUMES",
            &format!("{}:/data", swap.data.display()),
        );
    early.run().code(64).stderr_has("outside the allowed roots");
    assert!(containers_of(&early.id).is_empty());
}

/// The race for real: a thread swaps the checked directory and a symlink to a directory the user
/// cannot reach, as fast as it can (RENAME_EXCHANGE), while jobs that mount it run. No job may
/// ever see the secret there, on its output or through a file it writes to its home; each ends
/// refused, stopped, or having run on the user's own directory. JOBDOCK_RACE_ATTEMPTS sets the
/// number of jobs (default 2000).
#[test]
fn racing_symlink_swaps_on_a_mount_source_never_expose_their_target() {
    if !bed_is_up() {
        return;
    }
    let attempts: usize = std::env::var("JOBDOCK_RACE_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let swap = Swap::new();
    let flip = swap.data.with_file_name("flip");
    std::os::unix::fs::symlink(&swap.secret, &flip).unwrap();
    let loot = tempfile::Builder::new()
        .prefix("jobdock-race")
        .tempdir_in(ALICE.home)
        .unwrap();
    std::os::unix::fs::chown(loot.path(), Some(ALICE.uid), Some(ALICE.uid)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, a, b) = (stop.clone(), swap.data.clone(), flip.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &a,
                    nix::fcntl::AT_FDCWD,
                    &b,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
                swaps += 1;
            }
            swaps
        })
    };

    let script = format!(
        "cat /data/SECRET > {}/$LSB_JOBID 2>/dev/null; ls /data",
        loot.path().display()
    );
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let started = Instant::now();
    let parallel = 4;
    let mut done = 0;
    while done < attempts {
        let batch: Vec<(TestJob, Child)> = (0..parallel.min(attempts - done))
            .map(|_| {
                let job = swap.site.job(ALICE, BUSYBOX, &["sh", "-c", &script]).env(
                    "LSB_DOCKER_VOLUMES",
                    &format!("{}:/data", swap.data.display()),
                );
                let child = job.spawn();
                (job, child)
            })
            .collect();
        for (job, child) in batch {
            let out = Out::from(child.wait_with_output().unwrap(), job.shown());
            out.never_shows(&swap.text);
            if out.stdout.contains("SECRET") {
                out.fail("the job saw the directory behind the symlink");
            }
            let kind = match out.status.code() {
                Some(0) if out.stdout.contains("mine") => "ran on the user's directory",
                Some(64) if out.stderr.contains("jobdock: LSB_DOCKER_VOLUMES=") => {
                    "refused by the plan"
                }
                Some(64) if out.stderr.contains("jobdock: mount source ") => "refused before start",
                other => out.fail(&format!("unexpected outcome {other:?}")),
            };
            *outcomes.entry(kind).or_default() += 1;
            assert!(containers_of(&job.id).is_empty(), "a container was left");
        }
        done += parallel;
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = flipper.join().unwrap();
    for entry in std::fs::read_dir(loot.path()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.contains(&swap.text),
            "{} holds the secret: a job had the directory behind the symlink mounted",
            path.display()
        );
    }
    let _ = std::io::stderr().write_all(
        format!(
            "race: {attempts} jobs in {:?} against {swaps} swaps: {outcomes:?}\n",
            started.elapsed()
        )
        .as_bytes(),
    );
    assert!(
        outcomes.len() > 1,
        "the race never hit both states: {outcomes:?}"
    );
}

// ----------------------------------------------------------------------- resource abuse --
// The pids and memory limits (fork bomb, memory hog) are attacked in the engine module
// (memory_and_pids_limits_are_in_force) and, under a Slurm job's own limit, in the slurm module.

/// Free bytes on the file system that holds `path`.
fn free_bytes(path: &str) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    st.blocks_available() as u64 * st.fragment_size() as u64
}

/// A job writes 2 GiB to its stdout. Every byte reaches jobdock's stdout, and dockerd keeps none
/// of it: the container has no log driver and no log file, its directories under the docker root
/// stay small, and the file system holding the docker root loses far less than the output.
#[test]
fn gigabytes_of_output_write_nothing_under_the_docker_root() {
    use std::io::Read;
    if !bed_is_up() {
        return;
    }
    const OUTPUT: u64 = 2 << 30;
    let root = String::from_utf8(docker(&["info", "-f", "{{.DockerRootDir}}"]).stdout).unwrap();
    let root = root.trim().to_string();
    let free_before = free_bytes(&root);
    let setuid = Setuid::new();
    let job = setuid.run(
        ALICE,
        BUSYBOX,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero bs=1048576 count=2048 2>/dev/null; sleep 4",
        ],
    );
    let mut child = job.spawn();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let (mut seen, mut nonzero) = (0u64, false);
    while seen < OUTPUT {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "the job's output ended after {seen} bytes");
        nonzero |= buf[..n].iter().any(|&b| b != 0);
        seen += n as u64;
    }

    // All of it delivered; the container still runs (its `sleep`): look at what dockerd kept.
    let ids = util::running_containers_of(&job.id);
    assert_eq!(ids.len(), 1, "expected the job's one running container");
    let inspect = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.LogConfig.Type}}|{{.LogPath}}|{{.GraphDriver.Data.UpperDir}}|{{.Id}}",
        &ids[0],
    ]);
    let inspect = String::from_utf8(inspect.stdout).unwrap();
    let fields: Vec<&str> = inspect.trim().split('|').collect();
    assert_eq!(
        fields[..2],
        ["none", ""],
        "the container logs its output: {inspect}"
    );
    let du = |dir: &str| -> u64 {
        let out = Command::new("du").args(["-sxb", dir]).output().unwrap();
        assert!(out.status.success(), "du {dir}");
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_whitespace().next().unwrap().parse().unwrap()
    };
    let container_dir = format!("{root}/containers/{}", fields[3]);
    for dir in [container_dir.as_str(), fields[2]] {
        let size = du(dir);
        assert!(
            size < 1 << 20,
            "{dir} holds {size} bytes after 2 GiB of output"
        );
    }
    let lost = free_before.saturating_sub(free_bytes(&root));
    assert!(
        lost < 256 << 20,
        "the file system of {root} lost {lost} bytes while the job wrote 2 GiB"
    );

    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success() && rest.is_empty() && !nonzero,
        "exit {status:?}, {} bytes past 2 GiB, non-zero bytes: {nonzero}\n{stderr}",
        rest.len()
    );
    assert!(containers_of(&job.id).is_empty(), "the container was left");
}

/// Env files that would exhaust jobdock's memory or hang it are refused before any container
/// exists: a 1 GiB (sparse) file, a FIFO nobody writes to, a character device that never ends.
#[test]
fn huge_or_endless_env_files_are_refused() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let dir = tempfile::Builder::new()
        .prefix("jobdock-envfiles")
        .tempdir_in(ALICE.home)
        .unwrap();
    std::os::unix::fs::chown(dir.path(), Some(ALICE.uid), Some(ALICE.uid)).unwrap();
    let huge = dir.path().join("huge.env");
    let file = std::fs::File::create(&huge).unwrap();
    file.set_len(1 << 30).unwrap();
    drop(file);
    let fifo = dir.path().join("fifo.env");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    for path in [&huge, &fifo] {
        std::os::unix::fs::chown(path, Some(ALICE.uid), Some(ALICE.uid)).unwrap();
    }

    for (path, why) in [
        (huge.as_path(), "larger than 65536 bytes"),
        (fifo.as_path(), "not a regular file"),
        (Path::new("/dev/zero"), "not a regular file"),
    ] {
        let job = setuid
            .run(ALICE, BUSYBOX, &["env"])
            .env("LSB_DOCKER_ENV_FILE", path.to_str().unwrap());
        let mut child = job.spawn();
        // A hang is the attack: give up after a minute instead of blocking the suite.
        let mut waited = Duration::ZERO;
        while child.try_wait().unwrap().is_none() {
            if waited > Duration::from_secs(60) {
                let _ = child.kill();
                panic!(
                    "jobdock hung on the env file {}\n{}",
                    path.display(),
                    job.shown()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
            waited += Duration::from_millis(50);
        }
        let out = Out::from(child.wait_with_output().unwrap(), job.shown());
        out.code(64)
            .stderr_has("LSB_DOCKER_ENV_FILE")
            .stderr_has(why);
        assert!(containers_of(&job.id).is_empty(), "a container exists");
    }
}

// ---- issue 11: no process but the job's own in its container ----------------------------------

const HEALTHCHECK: &str = "jobdock-test/healthcheck";

/// An image's HEALTHCHECK is a process dockerd execs in the container every interval, with the
/// job's groups resolved *by name* in the container's current /etc/group, which the job can change
/// after start: that made any user root. The testbed shows the image's check runs under a plain
/// `docker run`; through setuid jobdock it never runs, and the container never restarts.
#[test]
fn an_image_healthcheck_never_runs_in_a_job_container() {
    if !bed_is_up()
        || !require(
            "the image jobdock-test/healthcheck",
            docker(&["image", "inspect", HEALTHCHECK]).status.success(),
        )
    {
        return;
    }
    let inspect = |c: &str, format: &str| {
        String::from_utf8_lossy(&docker(&["inspect", "-f", format, c]).stdout)
            .trim()
            .to_string()
    };
    // The image really has a check, or this test proves nothing.
    let image_check = String::from_utf8_lossy(
        &docker(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.Healthcheck.Test}}",
            HEALTHCHECK,
        ])
        .stdout,
    )
    .trim()
    .to_string();
    assert!(image_check.contains("healthcheck-ran"), "{image_check}");

    let setuid = Setuid::new();
    let job = setuid.run(
        ALICE,
        HEALTHCHECK,
        &["sh", "-c", "echo ready; exec sleep 3600"],
    );
    let mut child = job.spawn();
    let mut container = String::new();
    wait_until("jdalice's job to run", Duration::from_secs(60), || {
        container = util::running_containers_of(&job.id)
            .into_iter()
            .next()
            .unwrap_or_default();
        !container.is_empty()
    });
    let test = inspect(&container, "{{json .Config.Healthcheck.Test}}");
    let health = inspect(&container, "{{json .State.Health}}");
    let restart = inspect(&container, "{{.HostConfig.RestartPolicy.Name}}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(test, r#"["NONE"]"#, "the image's health check is on");
    assert_eq!(
        health, "null",
        "dockerd keeps a health state: it runs checks"
    );
    assert_eq!(restart, "no");
    assert_eq!(status.code(), Some(143));
    assert!(containers_of(&job.id).is_empty(), "container left behind");
}

/// The user's writable directories are mounted nosuid and nodev: a setuid program or device node
/// the job leaves there does nothing in a later job. (A read-only mount loses both when runc
/// remounts it read-only; no-new-privileges still stops setuid programs there.)
#[test]
fn the_users_writable_directories_are_nosuid_nodev_in_the_job() {
    if !bed_is_up() {
        return;
    }
    let out = Setuid::new()
        .run(ALICE, BUSYBOX, &["cat", "/proc/self/mountinfo"])
        .env("LSB_DOCKER_VOLUMES", "/scratch/jdalice:/data")
        .run();
    out.code(0);
    for target in [ALICE.home, "/data"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(target))
            .unwrap_or_else(|| out.fail(&format!("{target} is not mounted")));
        let options: Vec<&str> = line.split(' ').nth(5).unwrap_or("").split(',').collect();
        for want in ["rw", "nosuid", "nodev"] {
            if !options.contains(&want) {
                out.fail(&format!("{target} is mounted without {want}: {line}"));
            }
        }
    }
}

/// `jobdock doctor` on the test node, as an admin runs the installed binary: Debian 12's runc
/// 1.1.5 lacks the fix for CVE-2024-45310 (and CVE-2024-21626), which it names; the binary,
/// dockerd and the mount namespace pass. In a mount namespace of its own (as Slurm's
/// job_container/tmpfs gives each job) the node check fails. Ordinary users are refused.
#[test]
fn the_node_check_names_runtime_holes_and_a_foreign_mount_namespace() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let doctor = TestJob::program(&setuid.path, &["doctor"]).job(job_id());
    let out = doctor.run();
    out.code(0);
    for want in [
        "ok   binary:",
        "ok   dockerd:",
        "ok   mount namespace:",
        "ok   cgroup driver: cgroupfs",
        "runtime: runc",
    ] {
        if !out.stdout.contains(want) {
            out.fail(&format!("no {want:?}"));
        }
    }
    let runc = String::from_utf8_lossy(
        &docker(&[
            "version",
            "--format",
            "{{range .Server.Components}}{{if eq .Name \"runc\"}}{{.Version}}{{end}}{{end}}",
        ])
        .stdout,
    )
    .trim()
    .to_string();
    let patch = runc
        .strip_prefix("1.1.")
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse::<u32>().ok());
    if patch.is_some_and(|p| p < 14) && !out.stdout.contains("warn runtime: runc") {
        out.fail(&format!(
            "runc {runc} lacks the CVE-2024-45310 fix: no warning"
        ));
    }
    if patch.is_some_and(|p| p < 14) && !out.stdout.contains("CVE-2024-45310") {
        out.fail("the warning does not name CVE-2024-45310");
    }

    let mut private =
        TestJob::program("/usr/bin/unshare", &["-m", "--propagation", "private"]).job(job_id());
    private
        .args
        .extend([setuid.path.display().to_string(), "doctor".into()]);
    // Another mount namespace (Slurm's job_container/tmpfs) is one jobdock stages into (12.4).
    let out = private.run();
    let detail = out.code(0).value("jobdock doctor: ok   mount namespace");
    assert!(
        detail.contains("another mount namespace") && detail.contains("stages its mounts"),
        "{detail}"
    );

    setuid
        .by(ALICE, &["doctor"])
        .run()
        .code(64)
        .stderr_has("run it as root");
}
// ---- issue 11: mounts, amplification, GPUs, ports, rlimits --

/// The names runc created, as root, in a host directory mounted over /etc (and the mount points
/// the tests below try to make it create).
const ENGINE_LITTER: &[&str] = &[
    "passwd",
    "group",
    "hosts",
    "hostname",
    "resolv.conf",
    "x",
    "s",
    "lab",
];

/// A fresh directory of jdalice's (0700) under `parent`, removed on drop.
fn alice_dir(parent: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("jobdock-issue11-")
        .tempdir_in(parent)
        .unwrap();
    std::os::unix::fs::chown(dir.path(), Some(ALICE.uid), Some(ALICE.uid)).unwrap();
    dir
}

/// The entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[track_caller]
fn no_litter_in(dir: &Path) {
    for name in ENGINE_LITTER {
        assert!(
            !dir.join(name).exists(),
            "{} was created on the host",
            dir.join(name).display()
        );
    }
}

/// cwd /usr is mounted at its own path: a volume inside it made runc create /usr/x on the host,
/// as root. Both the working directory over /usr and the volume into it are refused, before any
/// container exists, and /usr/x never appears.
#[test]
fn a_working_directory_over_usr_and_a_volume_into_it_are_refused() {
    if !bed_is_up() {
        return;
    }
    assert!(
        !Path::new("/usr/x").exists(),
        "/usr/x exists before the test"
    );
    let setuid = Setuid::new();
    let job = setuid
        .run(ALICE, BUSYBOX, &["true"])
        .cwd("/usr")
        .env("LSB_DOCKER_VOLUMES", "/gpfs/jdalice:/usr/x");
    refused_before_any_container(
        &job,
        &[
            "LSB_DOCKER_VOLUMES=\"/gpfs/jdalice:/usr/x\"",
            "/usr/x is at or under /usr, a system directory of the container",
        ],
    );
    assert!(
        !Path::new("/usr/x").exists(),
        "/usr/x was created on the host"
    );
    no_litter_in(Path::new("/gpfs/jdalice"));

    let job = setuid.run(ALICE, BUSYBOX, &["true"]).cwd("/usr");
    refused_before_any_container(
        &job,
        &[
            "mount target /usr: the job's working directory",
            "a system directory of the container",
        ],
    );
}

/// `LSB_DOCKER_VOLUMES=/scratch:/etc` left root-owned passwd, group, hosts, hostname and
/// resolv.conf in /scratch (and, on runc 1.1.5, raced CVE-2024-45310). Every system directory
/// and / are refused as targets; the source directory stays as it was.
#[test]
fn volumes_over_the_containers_system_directories_are_refused() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let fresh = alice_dir("/scratch/jdalice");
    for target in [
        "/etc",
        "/usr",
        "/lib64",
        "/run",
        "/",
        "/bin",
        "/etc/ssl",
        "/.jobdock",
    ] {
        for source in ["/scratch/jdalice", fresh.path().to_str().unwrap()] {
            let volume = format!("{source}:{target}");
            let job = setuid
                .run(ALICE, BUSYBOX, &["true"])
                .env("LSB_DOCKER_VOLUMES", &volume);
            let out = job.run();
            out.code(64).stderr_has("LSB_DOCKER_VOLUMES");
            if target != "/" {
                out.stderr_has(&format!(
                    "is at or under {}",
                    target.trim_end_matches("/ssl")
                ));
            } else {
                out.stderr_has("cannot mount over the container's root");
            }
            assert!(
                containers_of(&job.id).is_empty(),
                "{volume}: a container was made"
            );
        }
    }
    no_litter_in(Path::new("/scratch/jdalice"));
    assert_eq!(
        entries(fresh.path()),
        Vec::<String>::new(),
        "the volume source changed"
    );
}

/// A volume inside another mount (a volume, the home): runc would create its mount point in the
/// outer mount's host directory. Refused, nothing created; a volume beside the others, and a
/// working directory inside a volume, still work.
#[test]
fn a_volume_nested_under_another_mount_is_refused() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let outer = alice_dir("/gpfs/jdalice");
    let inner = alice_dir("/scratch/jdalice");
    let (o, i) = (
        outer.path().display().to_string(),
        inner.path().display().to_string(),
    );
    for (volumes, words) in [
        (
            format!("{o}:/data {i}:/data/s"),
            "/data/s would be mounted inside /data",
        ),
        (
            format!("{i}:/data/s {o}:/data"),
            "/data/s would be mounted inside /data",
        ),
        (
            format!("{i}:/home/jdalice/lab"),
            "/home/jdalice/lab would be mounted inside /home/jdalice",
        ),
        (
            format!("{o}:/home"),
            "/home/jdalice would be mounted inside /home",
        ),
    ] {
        let job = setuid
            .run(ALICE, BUSYBOX, &["true"])
            .env("LSB_DOCKER_VOLUMES", &volumes);
        refused_before_any_container(&job, &["LSB_DOCKER_VOLUMES", words]);
    }
    assert_eq!(entries(outer.path()), Vec::<String>::new(), "{o} changed");
    assert_eq!(entries(inner.path()), Vec::<String>::new(), "{i} changed");
    assert!(
        !Path::new(ALICE.home).join("lab").exists(),
        "a mount point was made in the home"
    );

    // Siblings are fine; so is a job that works inside one of its volumes.
    let run = inner.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(ALICE.uid), Some(ALICE.uid)).unwrap();
    let out = setuid
        .run(ALICE, BUSYBOX, &["sh", "-c", "pwd; ls /data /scratch"])
        .cwd(&run)
        .env("LSB_DOCKER_VOLUMES", &format!("{o}:/data {i}"))
        .run();
    out.code(0);
    if out.stdout.lines().next() != Some(run.to_str().unwrap()) {
        out.fail("the job did not start in its working directory");
    }
    assert_eq!(entries(outer.path()), Vec::<String>::new(), "{o} changed");
    assert_eq!(entries(inner.path()), ["run"], "{i} changed");
}

/// LSF's job tmpdir lies under /tmp: mounted at /tmp and at its own path, runc created that
/// path's mount point inside the tmpdir, as root. Now it is /tmp only, and the job working in it
/// works there.
#[test]
fn a_tmpdir_under_tmp_gets_nothing_created_inside_it() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let tmp = alice_dir("/tmp");
    let path = tmp.path().display().to_string();
    let out = setuid
        .run(
            ALICE,
            BUSYBOX,
            &["sh", "-c", "pwd; echo $__LSF_JOB_TMPDIR__; touch /tmp/mine"],
        )
        .cwd(tmp.path())
        .env("__LSF_JOB_TMPDIR__", &path)
        .run();
    out.code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    if lines != ["/tmp", "/tmp"] {
        out.fail("the job did not work in its tmpdir as /tmp");
    }
    assert_eq!(
        entries(tmp.path()),
        ["mine"],
        "the tmpdir holds something the job did not make"
    );
}

/// One 64 KiB add-host file named 300 times put 19 MB into dockerd; 40 env files reached E2BIG.
/// Files named twice and totals past the limits are refused before any container exists.
#[test]
fn amplified_add_host_and_env_files_are_refused_before_any_container() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let dir = alice_dir(ALICE.home);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::os::unix::fs::chown(&path, Some(ALICE.uid), Some(ALICE.uid)).unwrap();
        path.display().to_string()
    };
    let mut hosts = String::new();
    let mut n = 0;
    while hosts.len() < 64 * 1024 - 64 {
        hosts.push_str(&format!(
            "host{n}.example.org:10.{}.{}.{}\n",
            n / 65536,
            n / 256 % 256,
            n % 256
        ));
        n += 1;
    }
    let hosts = write("hosts", &hosts);
    let three_hundred = vec![hosts.as_str(); 300].join(" ");
    let small: Vec<String> = (0..2)
        .map(|k| {
            let entries: String = (0..200)
                .map(|i| format!("h{k}x{i}:10.9.{k}.{}\n", i % 250))
                .collect();
            write(&format!("hosts{k}"), &entries)
        })
        .collect();
    let big: Vec<String> = (0..5)
        .map(|k| {
            write(
                &format!("big{k}.env"),
                &format!("BIG{k}={}\n", "v".repeat(60 * 1024)),
            )
        })
        .collect();
    let env = write("one.env", "A=1\n");
    let cases = [
        (
            "LSB_DOCKER_ADD_HOST_FILE",
            three_hundred.clone(),
            "is named twice",
        ),
        (
            "LSB_DOCKER_ADD_HOST_FILE",
            hosts.clone(),
            "(MAX_EXTRA_HOSTS",
        ),
        (
            "LSB_DOCKER_ADD_HOST_FILE",
            small.join(" "),
            "more than the 256 /etc/hosts entries",
        ),
        (
            "LSB_DOCKER_ENV_FILE",
            format!("{env} {env}"),
            "is named twice",
        ),
        (
            "LSB_DOCKER_ENV_FILE",
            vec![env.as_str(); 40].join(" "),
            "is named twice",
        ),
        (
            "LSB_DOCKER_ENV_FILE",
            big.join(" "),
            "more than the 262144 a job may have (MAX_ENV_BYTES)",
        ),
    ];
    for (var, value, words) in cases {
        let job = setuid.run(ALICE, BUSYBOX, &["true"]).env(var, &value);
        refused_before_any_container(&job, &[&format!("{var}="), words]);
    }
    // Within the limits, the same files work.
    setuid
        .run(
            ALICE,
            BUSYBOX,
            &["sh", "-c", "test -n \"$BIG3\" && grep -c h1x /etc/hosts"],
        )
        .env("LSB_DOCKER_ENV_FILE", &big[..4].join(" "))
        .env("LSB_DOCKER_ADD_HOST_FILE", &small[1])
        .run()
        .code(0);
}

/// GPU selectors that are no device id were sent as an allocation (`DeviceIDs ["all"]`).
#[test]
fn gpu_selectors_that_are_not_device_ids_are_refused() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    for (value, words) in [
        ("all", "\"all\" is not a GPU id"),
        ("none", "\"none\" is not a GPU id"),
        ("void", "\"void\" is not a GPU id"),
        ("-1", "\"-1\" is not a GPU id"),
        ("0,0", "GPU 0 is named twice"),
    ] {
        // LSF (Setuid::run sets LSB_JOBID): the allocation is CUDA_VISIBLE_DEVICES.
        let job = setuid
            .run(ALICE, BUSYBOX, &["true"])
            .env("CUDA_VISIBLE_DEVICES", value);
        refused_before_any_container(&job, &[&format!("CUDA_VISIBLE_DEVICES={value:?}"), words]);
        // Slurm: SLURM_STEP_GPUS.
        let mut job = setuid
            .run(ALICE, BUSYBOX, &["true"])
            .env("SLURM_STEP_GPUS", value);
        job.env.remove("LSB_JOBID");
        job.env.insert("SLURM_JOB_ID".into(), job.id.clone());
        refused_before_any_container(&job, &[&format!("SLURM_STEP_GPUS={value:?}"), words]);
    }
}

/// One job published the whole port range (ports.range 8000-8999), and the same host port twice.
#[test]
fn the_whole_port_range_and_duplicate_host_ports_are_refused() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    for (value, words) in [
        (
            "8000-8999",
            "1000 ports, more than the 100 a job may publish (MAX_PORTS)",
        ),
        ("8000-8060 8100-8160", "122 ports"),
        (
            "8001 8001",
            "publishes a host or container port of 8001:8001/tcp again",
        ),
        ("8001:80 8001:81", "again"),
        ("8001-8010 8005", "again"),
    ] {
        let job = setuid
            .run(ALICE, BUSYBOX, &["true"])
            .env("LSB_DOCKER_PORTS", value);
        refused_before_any_container(&job, &[&format!("LSB_DOCKER_PORTS={value:?}"), words]);
    }
}

/// The container had dockerd's rlimits (open files 20000) instead of the job's. The caller's own
/// soft and hard limits, set just before the setuid exec (by prlimit, as the scheduler would),
/// are what /proc/self/limits shows in the container.
#[test]
fn the_container_has_the_callers_own_resource_limits() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let mut job = setuid.run(ALICE, BUSYBOX, &["cat", "/proc/self/limits"]);
    let limits = [
        ("Max open files", "--nofile=1000:4000", "1000", "4000"),
        ("Max processes", "--nproc=3000:5000", "3000", "5000"),
        (
            "Max stack size",
            "--stack=4194304:16777216",
            "4194304",
            "16777216",
        ),
        ("Max core file size", "--core=0:1048576", "0", "1048576"),
        (
            "Max locked memory",
            "--memlock=65536:131072",
            "65536",
            "131072",
        ),
    ];
    let mut args: Vec<String> = limits.iter().map(|l| l.1.to_string()).collect();
    args.push("--".into());
    args.push(job.program.display().to_string());
    args.append(&mut job.args);
    job.args = args;
    job.program = "/usr/bin/prlimit".into();
    let out = job.run();
    out.code(0);
    for (name, _, soft, hard) in limits {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| out.fail(&format!("no {name} line")));
        let words: Vec<&str> = line[name.len()..].split_whitespace().collect();
        if words.len() < 2 || words[0] != soft || words[1] != hard {
            out.fail(&format!(
                "{name} is {words:?}, the caller's is {soft} {hard}"
            ));
        }
    }
}

// ---- issue 11: private images, the pull lock, leftovers, cleanup --

/// The testbed's registry that requires a login; jdbob's ~/.docker/config.json has his account.
const PRIVATE_REGISTRY: &str = "127.0.0.1:5001";
/// Root's login to it, for pushing (`docker --config DIR push`).
const PUSH_LOGIN: &str = "/etc/jobdock-testbed/registry-auth.docker";
const PUBLIC_REGISTRY: &str = "127.0.0.1:5000";
/// engine.state_dir of the test site (wrapper.toml.example), which the setuid jobdock uses.
const SITE_STATE: &str = "/run/jobdock";

fn private_registry_is_up() -> bool {
    bed_is_up()
        && require(
            "the private registry on 127.0.0.1:5001 and its logins (scripts/testbed.sh up)",
            std::net::TcpStream::connect(PRIVATE_REGISTRY).is_ok()
                && Path::new(PUSH_LOGIN).join("config.json").exists()
                && Path::new(BOB.home).join(".docker/config.json").exists(),
        )
}

fn unique() -> String {
    format!("{}-{}", std::process::id(), job_id())
}

/// An image built on the node for one test from the busybox one (plus `extra` Dockerfile lines
/// and the files in `context`), pushed to a registry and removed from the node, so that the
/// first job that names it pulls it. Removed from the node again on drop.
struct Pushed {
    name: String,
    id: String,
}

impl Pushed {
    fn new(registry: &str, repo: &str, extra: &str, context: Option<&Path>) -> Pushed {
        let name = format!("{registry}/jobdock-test/{repo}-{}:v1", unique());
        let dir = tempfile::tempdir().unwrap();
        let context = context.unwrap_or(dir.path());
        std::fs::write(
            context.join("Dockerfile"),
            format!("FROM {BUSYBOX}\nLABEL jobdock.test={name}\n{extra}\n"),
        )
        .unwrap();
        let built = docker(&["build", "-q", "-t", &name, &context.display().to_string()]);
        assert!(built.status.success(), "docker build: {built:?}");
        let id = String::from_utf8(docker(&["image", "inspect", "-f", "{{.Id}}", &name]).stdout)
            .unwrap()
            .trim()
            .to_string();
        let mut push = vec!["push", &name];
        if registry == PRIVATE_REGISTRY {
            push = vec!["--config", PUSH_LOGIN, "push", &name];
        }
        let pushed = docker(&push);
        assert!(pushed.status.success(), "docker push: {pushed:?}");
        let removed = docker(&["rmi", &name]);
        assert!(removed.status.success(), "docker rmi: {removed:?}");
        assert!(!present(&name));
        Pushed { name, id }
    }
}

impl Drop for Pushed {
    fn drop(&mut self) {
        docker(&["rmi", "-f", &self.id]);
    }
}

fn present(image: &str) -> bool {
    docker(&["image", "inspect", image]).status.success()
}

/// The config.json of `user`, as a test writes it; the user's own is restored on drop.
struct DockerConfig {
    path: PathBuf,
    saved: Option<Vec<u8>>,
}

impl DockerConfig {
    fn write(user: util::TestUser, text: &str) -> DockerConfig {
        let dir = Path::new(user.home).join(".docker");
        if !dir.exists() {
            std::fs::create_dir(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.uid)).unwrap();
        }
        let path = dir.join("config.json");
        let saved = std::fs::read(&path).ok();
        std::fs::write(&path, text).unwrap();
        std::os::unix::fs::chown(&path, Some(user.uid), Some(user.uid)).unwrap();
        DockerConfig { path, saved }
    }
}

impl Drop for DockerConfig {
    fn drop(&mut self) {
        match &self.saved {
            Some(text) => std::fs::write(&self.path, text).unwrap(),
            None => std::fs::remove_file(&self.path).unwrap(),
        }
    }
}

/// jdbob pulls an image from a registry that needs his login; jdalice, with no credentials or
/// wrong ones, may not run it by tag, digest or image id, and no container is made; jdbob still
/// may; a public image still runs for her.
#[test]
fn a_private_image_runs_only_for_users_its_registry_accepts() {
    if !private_registry_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let image = Pushed::new(PRIVATE_REGISTRY, "private", "", None);

    let started = Instant::now();
    let bob = setuid.run(BOB, &image.name, &["echo", "bob-ran"]).run();
    bob.code(0);
    assert!(bob.stdout.contains("bob-ran"), "{}", bob.stdout);
    eprintln!("jdbob pulled and ran it in {:?}", started.elapsed());
    assert!(present(&image.name));
    let digest = String::from_utf8(
        docker(&[
            "image",
            "inspect",
            "-f",
            "{{index .RepoDigests 0}}",
            &image.name,
        ])
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(digest.starts_with(PRIVATE_REGISTRY), "{digest}");

    let refused = |names: &[&str]| {
        for name in names {
            let job = setuid.run(ALICE, name, &["echo", "alice-ran"]);
            let out = job.run();
            out.code(64)
                .stderr_has(PRIVATE_REGISTRY)
                .never_shows("alice-ran");
            out.never_shows("jdbob");
            assert!(
                containers_of(&job.id).is_empty(),
                "{name}: a container exists"
            );
        }
    };
    // No credentials at all: by tag, by digest, by image id.
    refused(&[&image.name, &digest, &image.id]);
    // Credentials the registry refuses.
    {
        use base64::Engine as _;
        let wrong = base64::engine::general_purpose::STANDARD.encode("jdbob:not-his-password");
        let _config = DockerConfig::write(
            ALICE,
            &format!(r#"{{"auths": {{"{PRIVATE_REGISTRY}": {{"auth": "{wrong}"}}}}}}"#),
        );
        refused(&[&image.name, &image.id]);
    }

    let again = Instant::now();
    let bob = setuid.run(BOB, &image.name, &["echo", "bob-ran"]).run();
    bob.code(0);
    eprintln!("jdbob's second run: {:?}", again.elapsed());

    let public = format!("{PUBLIC_REGISTRY}/{BUSYBOX}");
    let _held = util::hold(&util::REMOTE_BUSYBOX);
    let first = Instant::now();
    setuid.run(ALICE, &public, &["true"]).run().code(0);
    let second = Instant::now();
    setuid.run(ALICE, &public, &["true"]).run().code(0);
    eprintln!(
        "a public image for jdalice: {:?} (first check), {:?} (cached)",
        second - first,
        second.elapsed()
    );
}

/// FNV-1a, as jobdock names an image's pull lock.
fn lock_file(image: &str) -> PathBuf {
    let h = image.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    Path::new(SITE_STATE).join(format!("locks/pull-{h:016x}.lock"))
}

/// The pid the lock file names as its holder.
fn lock_holder(image: &str) -> Option<u32> {
    let text = std::fs::read_to_string(lock_file(image)).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// A context directory with 32 MiB of the same pseudo-random bytes every run (the registry keeps
/// one copy of the layer), so that pulling the image takes a while.
fn big_context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut bytes = Vec::with_capacity(32 << 20);
    while bytes.len() < 32 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    let blob = dir.path().join("blob");
    std::fs::write(&blob, bytes).unwrap();
    let epoch = nix::sys::time::TimeSpec::new(0, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &blob,
        &epoch,
        &epoch,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    dir
}

/// Starts `job` and waits until it holds the pull lock of `image`; then sends it `signal`.
/// `None` if its pull was over before the signal arrived (the test tries again).
fn signal_while_holding(
    job: &TestJob,
    image: &str,
    signal: nix::sys::signal::Signal,
) -> Option<Child> {
    let mut child = job.spawn();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lock_holder(image) != Some(pid) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{} ended ({status}) before it took the pull lock",
                job.shown()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} never took the pull lock",
            job.shown()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        signal,
    )
    .unwrap();
    if signal == nix::sys::signal::Signal::SIGSTOP {
        wait_until("jobdock to stop", Duration::from_secs(30), || {
            process_state(pid) == Some('T')
        });
    } else {
        wait_until("jobdock to die", Duration::from_secs(30), || {
            child.try_wait().unwrap().is_some()
        });
    }
    // Killed, it holds nothing any more (and anyone's jobdock may sweep its lock file): that its
    // pull had not finished is what counts.
    let holding = signal != nix::sys::signal::Signal::SIGSTOP || lock_holder(image) == Some(pid);
    if holding && !present(image) {
        Some(child)
    } else {
        eprintln!("its pull was done before {signal}; trying again");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        None
    }
}

/// jdalice's setuid jobdock, stopped while it holds the node's pull lock for an image, keeps
/// nobody waiting: jdbob's job of the same image completes.
#[test]
fn a_stopped_pull_lock_holder_keeps_nobody_waiting() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let context = big_context();
    let (image, alice, mut child) = (0..3)
        .find_map(|_| {
            let image = Pushed::new(
                PUBLIC_REGISTRY,
                "lock",
                "COPY blob /blob",
                Some(context.path()),
            );
            let alice = setuid.run(ALICE, &image.name, &["true"]);
            let child =
                signal_while_holding(&alice, &image.name, nix::sys::signal::Signal::SIGSTOP)?;
            Some((image, alice, child))
        })
        .expect("jdalice's jobdock stopped while holding the pull lock, in one of 3 tries");

    let started = Instant::now();
    let bob = setuid.run(BOB, &image.name, &["echo", "bob-ran"]);
    let mut bob_child = bob.spawn();
    // Generous: without the fix, jdbob waits engine.pull_timeout_secs (an hour).
    wait_until("jdbob's job to complete", Duration::from_secs(600), || {
        bob_child.try_wait().unwrap().is_some()
    });
    let out = Out::from(bob_child.wait_with_output().unwrap(), bob.shown());
    out.code(0);
    assert!(out.stdout.contains("bob-ran"), "{}", out.stdout);
    if !out.stderr.contains("is stopped") {
        // dockerd may finish her pull although she reads none of it: then he did not wait
        // because the image was there.
        eprintln!("jdbob found the image on the node: {}", out.stderr);
    }
    eprintln!(
        "jdbob's job ran in {:?} while jdalice's jobdock was stopped holding the lock",
        started.elapsed()
    );
    assert_eq!(
        process_state(child.id()),
        Some('T'),
        "jdalice's jobdock was stopped throughout"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    eprintln!("jdalice's jobdock, resumed, ended: {status}");
    assert!(
        containers_of(&alice.id).is_empty(),
        "jdalice's container left"
    );
    assert!(containers_of(&bob.id).is_empty(), "jdbob's container left");
    assert!(
        !lock_file(&image.name).exists(),
        "the lock file stays behind"
    );
}

/// Everything in the site's state directory (and its mounts/) named for job `id`.
fn site_files_of(id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for dir in [
        PathBuf::from(SITE_STATE),
        Path::new(SITE_STATE).join("mounts"),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().into_string().unwrap();
            if name.starts_with(&format!("jobdock-lsf-{id}-")) {
                found.push(dir.join(name).display().to_string());
            }
        }
    }
    found
}

/// A jobdock SIGKILLed during its pull, or between create and start, leaves only what its
/// owner's cleanup (LSF's POST_EXEC, as the user) and root's (the epilog) remove; a stale pull
/// lock does not stay; another user's cleanup of the job takes nothing of hers.
#[test]
fn what_a_killed_jobdock_leaves_its_owner_and_the_epilog_remove() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let context = big_context();
    let (image, alice) = (0..3)
        .find_map(|_| {
            let image = Pushed::new(
                PUBLIC_REGISTRY,
                "killed",
                "COPY blob /blob",
                Some(context.path()),
            );
            let alice = setuid.run(ALICE, &image.name, &["true"]);
            signal_while_holding(&alice, &image.name, nix::sys::signal::Signal::SIGKILL)?;
            Some((image, alice))
        })
        .expect("jdalice's jobdock killed while holding the pull lock, in one of 3 tries");
    let cleanup = |user, id: &str| setuid.by(user, &["cleanup"]).env("LSB_JOBID", id).run();
    // Staging comes after the pull: killed while pulling, jobdock has made nothing of the job.
    assert_eq!(site_files_of(&alice.id), Vec::<String>::new());
    cleanup(ALICE, &alice.id).code(0);
    assert!(containers_of(&alice.id).is_empty());
    assert_eq!(site_files_of(&alice.id), Vec::<String>::new());
    assert!(
        !lock_file(&image.name).exists(),
        "the dead holder's lock file stays"
    );

    // Killed once its container exists (the debug build waits before checking it).
    for root in [false, true] {
        let job = setuid
            .run(ALICE, BUSYBOX, &["true"])
            .env("JOBDOCK_TEST_DELAY_BEFORE_VERIFY_MS", "30000");
        let mut child = job.spawn();
        wait_until("the container", Duration::from_secs(60), || {
            !containers_of(&job.id).is_empty()
        });
        child.kill().unwrap();
        child.wait().unwrap();
        let left = site_files_of(&job.id);
        assert!(
            !left.is_empty(),
            "nothing to clean up: the test tests nothing"
        );
        // jdbob's cleanup of her job leaves her container and cidfile, and says nothing of
        // them (the staging of her dead jobdock is anyone's to sweep).
        let cid = left.iter().find(|f| f.ends_with(".cid")).cloned();
        let bob = cleanup(BOB, &job.id);
        bob.code(0).never_shows("jdalice");
        assert!(!containers_of(&job.id).is_empty());
        if let Some(cid) = cid {
            assert!(
                Path::new(&cid).exists(),
                "jdbob's cleanup removed her cidfile"
            );
        }
        if root {
            let epilog = TestJob::new(&["cleanup", "--job", &job.id]).job(job.id.clone());
            epilog.run().code(0);
        } else {
            cleanup(ALICE, &job.id).code(0);
        }
        assert!(containers_of(&job.id).is_empty(), "root={root}");
        assert_eq!(site_files_of(&job.id), Vec::<String>::new(), "root={root}");
    }
}

/// `ulimit -f 0` cannot kill the setuid jobdock halfway through writing its files (SIGXFSZ) and
/// leave them behind: root lifts the limit for itself and the job runs, or, where jobdock lacks
/// CAP_SYS_RESOURCE (a container's bounding set), the write fails, is the caller's doing (64),
/// and is cleaned up after.
#[test]
fn a_file_size_limit_cannot_kill_jobdock_midway() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let path = setuid.path.display().to_string();
    let job = TestJob::program(
        "/bin/sh",
        &[
            "-c",
            "ulimit -f 0 && exec \"$0\" run --image \"$1\" -- echo ran",
            &path,
            BUSYBOX,
        ],
    )
    .job(setuid.jobs.id())
    .cwd(ALICE.home)
    .user(ALICE);
    let out = job.run();
    let lifts = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|c| u64::from_str_radix(c.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0);
    if lifts {
        out.code(0);
        assert!(out.stdout.contains("ran"), "{}", out.stdout);
    } else {
        eprintln!("no CAP_SYS_RESOURCE here: the limit stays, and must be refused cleanly");
        out.code(64).stderr_has("ulimit -f");
    }
    assert!(containers_of(&job.id).is_empty());
    assert_eq!(site_files_of(&job.id), Vec::<String>::new());
}

/// jdalice labels her container with jdbob's job id; his cleanup (POST_EXEC, as him) succeeds,
/// removes his own container and reveals nothing of hers; root's removes hers too.
#[test]
fn another_users_label_does_not_break_the_owners_cleanup() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let bob = setuid.run(BOB, BUSYBOX, &["sleep", "4311"]);
    let running = |id: &str, n: usize| util::running_containers_of(id).len() == n;
    let mut bob_child = bob.spawn();
    wait_until("jdbob's job", Duration::from_secs(60), || {
        running(&bob.id, 1)
    });
    let mut alice = setuid.run(ALICE, BUSYBOX, &["sleep", "4312"]);
    alice = alice.env("LSB_JOBID", &bob.id);
    let mut alice_child = alice.spawn();
    wait_until("jdalice's job", Duration::from_secs(60), || {
        running(&bob.id, 2)
    });
    let hers: Vec<String> = containers_of(&bob.id)
        .into_iter()
        .filter(|c| {
            let uid = docker(&[
                "inspect",
                "-f",
                "{{index .Config.Labels \"jobdock.uid\"}}",
                c,
            ]);
            String::from_utf8_lossy(&uid.stdout).trim() == "2001"
        })
        .collect();
    assert_eq!(hers.len(), 1);
    let name = String::from_utf8(docker(&["inspect", "-f", "{{.Name}}", &hers[0]]).stdout).unwrap();
    let name = name.trim().trim_start_matches('/').to_string();

    let out = setuid.by(BOB, &["cleanup"]).env("LSB_JOBID", &bob.id).run();
    out.code(0)
        .never_shows(&name)
        .never_shows(&hers[0][..12])
        .never_shows("2001")
        .never_shows("jdalice")
        .never_shows(&alice_child.id().to_string());
    assert!(
        out.stdout.contains("removed 1 container(s)"),
        "{}",
        out.stdout
    );
    assert_eq!(containers_of(&bob.id), hers, "his gone, hers left");
    let _ = bob_child.wait();

    let epilog = TestJob::new(&["cleanup", "--job", &bob.id]).job(bob.id.clone());
    epilog.run().code(0);
    assert!(
        containers_of(&bob.id).is_empty(),
        "root removes all of the job's"
    );
    let _ = alice_child.wait();
}

/// An image whose /etc/group is a symlink loop (directly, or through a directory) is the job's
/// problem (64), not the node's (75); no container is left.
#[test]
fn an_image_group_file_that_is_a_symlink_loop_is_refused() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    for (case, links) in [
        ("loop", &[("etc/group", "group")][..]),
        (
            "through a directory",
            &[("etc/group", "g2/x"), ("etc/g2", "g2")][..],
        ),
    ] {
        let root = tempfile::tempdir().unwrap();
        for dir in ["bin", "etc"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.path().join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", root.path().join("bin/true")).unwrap();
        for (link, target) in links {
            std::os::unix::fs::symlink(target, root.path().join(link)).unwrap();
        }
        let name = format!("jobdock-test/grouploop-{}", unique());
        let imported = Command::new("sh")
            .args([
                "-c",
                "tar -C \"$0\" -c . | docker import - \"$1\"",
                &root.path().display().to_string(),
                &name,
            ])
            .output()
            .unwrap();
        assert!(imported.status.success(), "{imported:?}");
        let job = setuid.run(ALICE, &name, &["/bin/true"]);
        let out = job.run();
        docker(&["rmi", "-f", &name]);
        // A symlink loop at the mount point /etc/group is refused as such (issue 11.2).
        out.code(64)
            .stderr_has("/etc/group")
            .stderr_has("its symlinks loop");
        assert!(
            containers_of(&job.id).is_empty(),
            "{case}: a container exists"
        );
    }
}

// ---- issue 11.2: image symlinks at mount targets -------------------------------------------------

/// An image in which `/data` is a symlink to `/etc`: a volume at `/data` would land on the
/// container's `/etc`, and runc would then create `/etc/hosts`, `/etc/hostname` and
/// `/etc/resolv.conf` (root's) in the user's host directory. The plan cannot see the image; the
/// check after create can: refused (64) naming the image, the target and the symlink, before
/// anything is made in the directory, and no container is left.
#[test]
fn an_image_symlink_at_a_volume_target_is_refused_and_creates_nothing() {
    if !bed_is_up() {
        return;
    }
    let name = format!("jobdock-test/data-to-etc-{}", unique());
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {BUSYBOX}\nRUN ln -s /etc /data\n"),
    )
    .unwrap();
    let built = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", &name])
        .arg(context.path())
        .output()
        .unwrap();
    assert!(built.status.success(), "docker build: {built:?}");
    let volume = tempfile::Builder::new()
        .prefix("jobdock-imagelink")
        .tempdir_in("/scratch/jdalice")
        .unwrap();
    std::os::unix::fs::chown(volume.path(), Some(ALICE.uid), Some(ALICE.uid)).unwrap();
    let setuid = Setuid::new();
    let job = setuid.run(ALICE, &name, &["ls", "/data"]).env(
        "LSB_DOCKER_VOLUMES",
        &format!("{}:/data", volume.path().display()),
    );
    let out = job.run();
    docker(&["rmi", "-f", &name]);
    out.code(64)
        .stderr_has(&format!("image {name}"))
        .stderr_has("/data is a symbolic link to /etc")
        .stderr_has("mount at /data");
    let made: Vec<_> = std::fs::read_dir(volume.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        made.is_empty(),
        "the engine created {made:?} in the host directory"
    );
    assert!(
        containers_of(&job.id).is_empty(),
        "a container is left: {:?}",
        containers_of(&job.id)
    );
}

// ---- issue 12.4: private mount namespaces --------------------------------------------------------

/// `jobdock ARGS` as root in a mount namespace of its own (as Slurm's job_container/tmpfs runs a
/// job step), made now: a copy of the host's mounts, none shared.
fn in_private_namespace(args: &[&str], job: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", util::BIN])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LSB_JOBID", job)
        .current_dir(ALICE.home);
    cmd
}

/// A jobdock killed in a private mount namespace between staging and start leaves its staging
/// mounts where it made them, in dockerd's namespace. `jobdock cleanup`, run in another private
/// namespace made later (a later job's, which holds a copy of those mounts), removes the
/// container and detaches them in both; nothing is left in dockerd's namespace or the state
/// directory.
#[test]
fn a_killed_jobdocks_staging_mounts_are_detached_in_dockerds_namespace_by_cleanup() {
    if !bed_is_up() {
        return;
    }
    let job = job_id();
    let staged = format!("/mounts/jobdock-lsf-{job}-");
    let mut run = in_private_namespace(
        &[
            "run", "--user", ALICE.name, "--image", BUSYBOX, "--", "true",
        ],
        &job,
    )
    .env("JOBDOCK_TEST_DELAY_BEFORE_VERIFY_MS", "30000")
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_until(
        "the job's container and its staging mount in dockerd's namespace",
        Duration::from_secs(30),
        || !containers_of(&job).is_empty() && util::dockerds_mounts().contains(&staged),
    );
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(
        util::dockerds_mounts().contains(&staged),
        "SIGKILL leaves the mount"
    );

    let out = in_private_namespace(&["cleanup", "--job", &job], &job)
        .output()
        .unwrap();
    assert!(out.status.success(), "jobdock cleanup: {out:?}");
    assert!(
        !util::dockerds_mounts().contains(&staged),
        "a staging mount is left in dockerd's namespace"
    );
    let left = containers_of(&job);
    assert!(
        left.is_empty(),
        "containers left after cleanup: {}\ncleanup said: {}{}",
        String::from_utf8_lossy(
            &docker(&[
                "ps",
                "-a",
                "--filter",
                &format!("label=jobdock.job={job}"),
                "--format",
                "{{.ID}} {{.Names}} {{.Status}} {{.CreatedAt}}",
            ])
            .stdout
        ),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<String> = std::fs::read_dir(Path::new(SITE_STATE).join("mounts"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("jobdock-lsf-{job}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

// ---- issue 12.5-12.7: refusals as a user meets them, through the setuid binary -----------------

/// What a user gets wrong, refused through setuid jobdock as jdalice, each as the job's error
/// (64, never the requeue code 75 or clap's 2) naming what to fix, and no container made: a
/// misspelt override, a Slurm size beyond what the API carries, an image the registry does not
/// have, a flag that does not exist.
#[test]
fn a_users_mistakes_are_the_jobs_error_through_the_setuid_binary() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let cases: Vec<(TestJob, &str)> = vec![
        (
            setuid
                .run(ALICE, BUSYBOX, &["true"])
                .env("LSB_DOCKER_VOLUME", "/scratch/jdalice:/data"),
            "did you mean LSB_DOCKER_VOLUMES?",
        ),
        (
            {
                // A Slurm job's variables only (the harness gives every job an LSB_JOBID).
                let mut job = setuid
                    .run(ALICE, BUSYBOX, &["true"])
                    .env("SLURM_JOB_ID", "77")
                    .env("SLURM_MEM_PER_NODE", "18446744073709551615");
                job.env.remove("LSB_JOBID");
                job
            },
            "SLURM_MEM_PER_NODE=\"18446744073709551615\": is more than Docker can take",
        ),
        (
            setuid.run(
                ALICE,
                "127.0.0.1:5000/jobdock-test/no-such-image:1",
                &["true"],
            ),
            "the registry rejects it",
        ),
        (
            setuid.by(ALICE, &["run", "--no-such-flag", "--", "true"]),
            "--no-such-flag",
        ),
    ];
    for (job, want) in cases {
        refused_before_any_container(&job, &[want]);
    }
}

// ---- issue 18: the audit record --

/// Lines of the node's syslog (authpriv, where rsyslog puts jobdock's records) naming `job`,
/// once jobdock's record for it has arrived (rsyslog writes asynchronously).
fn audit_records(job: &str) -> Vec<String> {
    let field = format!(" job={job} ");
    for _ in 0..100 {
        let log = std::fs::read_to_string("/var/log/auth.log").unwrap_or_default();
        let found: Vec<String> = log
            .lines()
            .filter(|l| l.contains(" jobdock[") && l.contains(&field))
            .map(str::to_string)
            .collect();
        if !found.is_empty() {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Vec::new()
}

/// Issue 18.1: every job leaves one record in the node's syslog, through the installed setuid
/// binary as an ordinary user: who, which job, the image and the digest that ran, the mounts,
/// the exit code and duration; a job jobdock refused leaves one with the rule it broke. What a
/// user puts in a variable cannot add a field or a line to it.
#[test]
fn each_job_leaves_one_audit_record_in_syslog() {
    if !bed_is_up() {
        return;
    }
    let setuid = Setuid::new();
    let ran = setuid.run(ALICE, BUSYBOX, &["sh", "-c", "exit 3"]);
    ran.run().code(3);
    let records = audit_records(&ran.id);
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    for want in [
        "action=run user=jdalice uid=2001 ",
        &format!(" image={BUSYBOX}"),
        ":/home/jdalice:rw",
        " exit=3 duration=",
    ] {
        assert!(r.contains(want), "no {want:?} in {r}");
    }
    assert!(!r.contains(" error="), "{r}");
    let digest = r.split(" digest=").nth(1).and_then(|d| d.split(' ').next());
    assert!(
        digest.is_some_and(|d| d.contains("sha256:")),
        "no image digest in {r}"
    );

    let refused = setuid.run(ALICE, BUSYBOX, &["true"]).env(
        "LSB_DOCKER_VOLUME",
        "/scratch/jdalice:/data\nexit=0 user=root",
    );
    refused.run().code(64);
    let records = audit_records(&refused.id);
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    for want in [
        "action=run user=jdalice uid=2001 ",
        " exit=64 ",
        "did you mean LSB_DOCKER_VOLUMES?",
    ] {
        assert!(r.contains(want), "no {want:?} in {r}");
    }
    assert!(!r.contains("\nexit=0") && !r.contains(" exit=0 "), "{r}");
}

// ---- issue 15.1: the image checks' verdicts, kept per image id ---------------------------------

/// The names of the containers dockerd created for job `job` since `since` (unix seconds), from
/// dockerd's own event log: what jobdock made, whatever it says.
fn created_for(job: &str, since: &str) -> Vec<String> {
    let until = format!("{:.3}", now_secs() + 0.001);
    let out = docker(&[
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--filter",
        "type=container",
        "--filter",
        "event=create",
        "--filter",
        &format!("label=jobdock.job={job}"),
        "--format",
        "{{.Actor.Attributes.name}}",
    ]);
    assert!(out.status.success(), "docker events: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn image_id(image: &str) -> String {
    let out = docker(&["image", "inspect", "-f", "{{.Id}}", image]);
    assert!(
        out.status.success(),
        "docker image inspect {image}: {out:?}"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `job` (which must succeed) and returns whether dockerd created a container to read the
/// image's files for it (the job's own is always created).
#[track_caller]
fn read_the_image(site: &Site, user: util::TestUser, image: &str) -> bool {
    let since = format!("{:.3}", now_secs() - 0.001);
    let job = site.job(user, image, &["true"]);
    job.run().code(0);
    let made = created_for(&job.id, &since);
    let inert: Vec<_> = made.iter().filter(|n| n.ends_with("-image")).collect();
    assert!(
        made.len() == 1 + inert.len() && inert.len() <= 1,
        "{}: dockerd created {made:?}",
        job.shown()
    );
    assert!(containers_of(&job.id).is_empty(), "a container is left");
    !inert.is_empty()
}

/// A job's image checks read the image through an inert container; a later job of the same image
/// id with the same mounts and groups trusts the kept verdict and makes none (dockerd's event log
/// shows it). An entry that is not root's alone is ignored, the image read again, and the entry
/// replaced by root's.
#[test]
fn an_image_check_that_passed_is_kept_per_image_id_while_roots_alone() {
    if !bed_is_up() {
        return;
    }
    let site = Site::new("");
    let entry = site
        .state()
        .join("image-checks")
        .join(image_id(BUSYBOX).trim_start_matches("sha256:"));
    assert!(
        read_the_image(&site, ALICE, BUSYBOX),
        "the first job reads the image"
    );
    let meta = std::fs::symlink_metadata(&entry).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (0, 0o600),
        "{}",
        entry.display()
    );
    assert!(
        !read_the_image(&site, ALICE, BUSYBOX),
        "the second job reads it again"
    );
    // Another user's groups are another key.
    assert!(
        read_the_image(&site, BOB, BUSYBOX),
        "jdbob's groups are not jdalice's"
    );
    assert!(!read_the_image(&site, BOB, BUSYBOX));
    // Not root's alone: ignored, read again, and root's again after.
    std::os::unix::fs::chown(&entry, Some(ALICE.uid), None).unwrap();
    assert!(
        read_the_image(&site, ALICE, BUSYBOX),
        "a user's entry was trusted"
    );
    assert_eq!(std::fs::symlink_metadata(&entry).unwrap().uid(), 0);
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o602)).unwrap();
    assert!(
        read_the_image(&site, ALICE, BUSYBOX),
        "a world-writable entry was trusted"
    );
    assert!(!read_the_image(&site, ALICE, BUSYBOX));
}

/// The hostile image (a group named "3001" with gid 0) is refused for jdalice whatever entry lies
/// at its id: busybox's verdict copied there (it names busybox's id), or a pass forged for it that
/// is not root's alone. The control: the same forged pass as root's is trusted (no container
/// reads the image), so the forged line is the very key the job looks for.
#[test]
fn a_kept_image_verdict_is_never_another_images_nor_a_users() {
    if !bed_is_up() {
        return;
    }
    let site = Site::new("");
    let busybox = image_id(BUSYBOX);
    let hostile = image_id(HOSTILE);
    assert_ne!(busybox, hostile);
    let dir = site.state().join("image-checks");
    assert!(read_the_image(&site, ALICE, BUSYBOX));
    let kept = std::fs::read_to_string(dir.join(busybox.trim_start_matches("sha256:"))).unwrap();
    assert!(kept.contains(&busybox), "{kept}");
    let at_hostile = dir.join(hostile.trim_start_matches("sha256:"));
    let refused = |case: &str| {
        let job = site.job(ALICE, HOSTILE, &["id"]);
        let out = job.run();
        out.code(64)
            .stderr_has("its /etc/group has a group named \"3001\" with gid 0")
            .never_shows("uid=");
        assert!(
            containers_of(&job.id).is_empty(),
            "{case}: a container was left"
        );
    };
    std::fs::write(&at_hostile, &kept).unwrap();
    std::fs::set_permissions(&at_hostile, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused("busybox's verdict at the hostile image's id");
    let forged = kept.replace(&busybox, &hostile);
    for (case, uid, mode) in [
        ("jdalice's", ALICE.uid, 0o600),
        ("group-writable", 0, 0o620),
    ] {
        std::fs::write(&at_hostile, &forged).unwrap();
        std::os::unix::fs::chown(&at_hostile, Some(uid), Some(0)).unwrap();
        std::fs::set_permissions(&at_hostile, std::fs::Permissions::from_mode(mode)).unwrap();
        refused(case);
    }
    // The control: root's forged pass is the key jdalice's job looks for, and is used (root's
    // state directory is root's word, as the site config is).
    std::fs::write(&at_hostile, &forged).unwrap();
    std::os::unix::fs::chown(&at_hostile, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&at_hostile, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(std::fs::metadata(&at_hostile).unwrap().uid(), 0);
    assert!(
        !read_the_image(&site, ALICE, HOSTILE),
        "root's entry was not used: the forged line is not the job's key"
    );
    std::fs::remove_file(&at_hostile).unwrap();
}
