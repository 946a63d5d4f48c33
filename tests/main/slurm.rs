//! Slurm for real: the one-node cluster of scripts/slurm-testbed.sh runs jobs as jdalice that call
//! the installed setuid jobdock, in job steps and batch scripts. The container joins the step's
//! cgroup and is held to the job's memory; the shipped epilog removes what a cancelled job left.
//! The SPANK plugin's options run on that cluster, its site settings (enforce=1 sbatch=0
//! default_image) on the test bed's `jobdock-enforce`, whose plugstack line has them.

use crate::util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{ALICE, INSTALLED, TestJob, containers_of, require, running_containers_of};

const IMAGE: &str = "jobdock-test/busybox";
const HOME: &str = ALICE.home;

fn cluster_is_up() -> bool {
    cluster_with_conf_is_up(None)
}

/// Whether the cluster `conf` (a slurm.conf; `None`: the default one) accepts jobs.
pub(crate) fn cluster_with_conf_is_up(conf: Option<&str>) -> bool {
    let mut sinfo = std::process::Command::new("sinfo");
    if let Some(conf) = conf {
        sinfo.env("SLURM_CONF", conf);
    }
    let idle = sinfo.args(["-h", "-o", "%t"]).output().is_ok_and(|o| {
        // Busy (alloc, mix, comp) is fine: the tests share the node. Unusable is not.
        let state = String::from_utf8_lossy(&o.stdout)
            .trim()
            .trim_end_matches(['*', '~', '#', '!', '%', '$', '@', '^', '-'])
            .to_string();
        o.status.success()
            && !state.is_empty()
            && ![
                "down", "drain", "drng", "fail", "failg", "unk", "maint", "inval", "boot",
            ]
            .contains(&state.as_str())
    });
    util::with_installed_jobdock(
        &format!(
            "a Slurm node that accepts jobs ({}; scripts/slurm-testbed.sh up)",
            conf.unwrap_or("the default slurm.conf")
        ),
        idle,
    )
}

/// `srun ARGS` as jdalice from her home.
pub(crate) fn srun(args: &[&str]) -> TestJob {
    TestJob::program("srun", args)
        .by(ALICE)
        .env("USER", ALICE.name)
}

#[test]
fn a_job_step_runs_in_the_steps_cgroup_as_the_user() {
    if !cluster_is_up() {
        return;
    }
    let out = srun(&[
        "-N1",
        "-n1",
        "--mem=64M",
        INSTALLED,
        "run",
        "--image",
        IMAGE,
        "--",
        "sh",
        "-c",
        "id -un; grep :memory: /proc/self/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
         grep ' /tmp ' /proc/mounts",
    ])
    .run();
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"jdalice"), "{}", out.report);
    // The container's cgroup is a child of the step's: .../uid_2001/job_N/step_0/<container id>.
    let cgroup = lines.get(1).copied().unwrap_or("");
    assert!(
        cgroup.contains("/uid_2001/job_") && cgroup.contains("/step_0/"),
        "not in the step's cgroup: {}",
        out.report
    );
    assert_eq!(
        lines.get(2),
        Some(&"67108864"),
        "the job's 64M, read from its cgroup{}",
        out.report
    );
    // This node gives jobs no tmpdir (no job_container/tmpfs): /tmp is the site's bounded tmpfs
    // (wrapper.toml.example's limits.tmp_size, 1g), not the image's unbounded overlay.
    let tmp = lines.get(3).copied().unwrap_or("");
    assert!(
        tmp.starts_with("tmpfs /tmp tmpfs rw,nosuid,nodev,") && tmp.contains("size=1048576k"),
        "/tmp is not the site's 1 GiB tmpfs{}",
        out.report
    );
}

#[test]
fn the_jobs_memory_limit_holds_the_container() {
    if !cluster_is_up() {
        return;
    }
    let out = srun(&[
        "-N1",
        "-n1",
        "--mem=64M",
        INSTALLED,
        "run",
        "--image",
        IMAGE,
        "--",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=128M",
        "count=1",
    ])
    .run();
    out.code(137)
        .stderr_has("killed: out of memory (limit 64.0 MiB)");
}

#[test]
fn input_piped_to_srun_reaches_the_job() {
    if !cluster_is_up() {
        return;
    }
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let out = srun(&[
        "-N1",
        "-n1",
        "--mem=64M",
        INSTALLED,
        "run",
        "--image",
        IMAGE,
        "--",
        "md5sum",
    ])
    .stdin(&data)
    .run();
    out.ok();
    let want = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&data)?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        out.stdout,
        String::from_utf8_lossy(&want.stdout),
        "{}",
        out.report
    );
}

/// A batch script in a directory of alice's; `sbatch --wait` returns when it ended.
pub(crate) fn batch(script: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("jobdock-slurm")
        .tempdir_in(HOME)
        .unwrap();
    let uid = Some(nix::unistd::Uid::from_raw(ALICE.uid));
    nix::unistd::chown(dir.path(), uid, Some(nix::unistd::Gid::from_raw(ALICE.uid))).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.path().join("job.sh");
    std::fs::write(&path, script).unwrap();
    nix::unistd::chown(&path, uid, None).unwrap();
    (dir, path)
}

/// `sbatch --parsable -o OUTPUT` of `batch`'s script as alice, from its directory, on the cluster
/// of `conf` (`None`: the main one): the job's id.
pub(crate) fn submit(script: &Path, output: &Path, conf: Option<&str>) -> String {
    let mut sbatch = TestJob::program(
        "sbatch",
        &[
            "--parsable",
            "-o",
            &output.display().to_string(),
            &script.display().to_string(),
        ],
    )
    .user(ALICE)
    .cwd(script.parent().unwrap());
    if let Some(conf) = conf {
        sbatch = sbatch.env("SLURM_CONF", conf);
    }
    let out = sbatch.run();
    out.ok();
    out.stdout.trim().split(';').next().unwrap().to_string()
}

#[test]
fn an_sbatch_script_runs_jobdock() {
    if !cluster_is_up() {
        return;
    }
    let (dir, script) = batch(&format!(
        "#!/bin/sh\n#SBATCH --mem=64M\n{INSTALLED} run --image {IMAGE} -- sh -c 'echo batch $SLURM_JOB_ID; id -un; echo $SLURM_MEM_PER_NODE'\n"
    ));
    let output = dir.path().join("out");
    let out = TestJob::program(
        "sbatch",
        &[
            "--wait",
            "-o",
            &output.display().to_string(),
            &script.display().to_string(),
        ],
    )
    .user(ALICE)
    .cwd(dir.path())
    .run();
    out.ok();
    let text = std::fs::read_to_string(&output).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("batch ")),
        "{text}{}",
        out.report
    );
    assert_eq!(&lines[1..], ["jdalice", "64"], "{text}");
}

#[test]
fn a_cancelled_job_leaves_nothing_after_the_epilog() {
    if !cluster_is_up() {
        return;
    }
    let epilog = std::process::Command::new("scontrol")
        .args(["show", "config"])
        .output()
        .unwrap();
    let configured = String::from_utf8_lossy(&epilog.stdout)
        .lines()
        .any(|l| l.starts_with("Epilog ") && l.contains(PACKAGE_EPILOG));
    if !require(
        "Epilog=/usr/libexec/jobdock/jobdock-epilog (the package's) in slurm.conf (scripts/slurm-testbed.sh up)",
        configured,
    ) {
        return;
    }
    let (_dir, script) = batch(&format!(
        "#!/bin/sh\n#SBATCH --mem=64M\n{INSTALLED} run --image {IMAGE} -- sleep 300\n"
    ));
    let job = submit(&script, Path::new("/dev/null"), None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while containers_of(&job).is_empty() {
        assert!(
            Instant::now() < deadline,
            "job {job}'s container never appeared"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // scancel signals the job's processes; the container is dockerd's child and survives it
    // unless jobdock or the epilog removes it.
    TestJob::program("scancel", &["--signal=KILL", "--full", &job])
        .user(ALICE)
        .run()
        .ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !containers_of(&job).is_empty() {
        assert!(
            Instant::now() < deadline,
            "job {job}'s container outlived the job and its epilog"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The shipped epilog, run as slurmd runs it: on a node without jobdock it succeeds and says so
/// (configuring it before the rollout drains nothing); when `jobdock cleanup` fails it fails, so
/// that Slurm drains the node; without SLURM_JOB_ID it refuses.
#[test]
fn the_epilog_drains_only_when_cleanup_fails() {
    let epilog = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/slurm/epilog");
    let run = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(epilog)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A job id no cgroup is named after, so the cgroup sweep finds nothing.
    let job = ("SLURM_JOB_ID", "4000000001");

    let (code, stderr) = run(&[job, ("JOBDOCK", "/nonexistent/jobdock")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/jobdock is not installed on this node"),
        "{stderr}"
    );

    let (code, stderr) = run(&[job, ("JOBDOCK", "/bin/false")]);
    assert_eq!(
        code,
        Some(1),
        "a failed cleanup must fail the epilog: {stderr}"
    );

    let (code, stderr) = run(&[("JOBDOCK", "/bin/true")]);
    assert_ne!(code, Some(0), "no SLURM_JOB_ID: {stderr}");
    assert!(stderr.contains("the epilog needs SLURM_JOB_ID"), "{stderr}");
}

// ---- issue 11.6: the job is the one the kernel says, not the environment ------------------------

/// What the container of a job step reports: its memory cgroup line and its own memory limit.
const CGROUP_AND_LIMIT: &str =
    "grep :memory: /proc/self/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes";

/// Inside a real job, unsetting SLURM_JOB_ID or naming another job (with a bigger allocation)
/// changes nothing: the container joins the step's cgroup and is held to the job's 64 MiB.
#[test]
fn a_job_that_unsets_or_forges_its_id_stays_in_its_cgroup_and_limit() {
    if !cluster_is_up() {
        return;
    }
    let run = format!("{INSTALLED} run --image {IMAGE} -- sh -c '{CGROUP_AND_LIMIT}'");
    let script = format!(
        "echo job=$SLURM_JOB_ID; \
         env -u SLURM_JOB_ID -u SLURM_JOBID {run}; \
         env SLURM_JOB_ID=1 SLURM_JOBID=1 SLURM_MEM_PER_NODE=1048576 {run}"
    );
    let out = srun(&["-N1", "-n1", "--mem=64M", "sh", "-c", &script]).run();
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let job = lines
        .first()
        .and_then(|l| l.strip_prefix("job="))
        .unwrap_or_else(|| panic!("no job id{}", out.report));
    assert_eq!(lines.len(), 5, "{}", out.report);
    for pair in lines[1..].chunks(2) {
        assert!(
            pair[0].contains(&format!("/job_{job}/step_0/")),
            "the container left job {job}'s cgroup: {}{}",
            pair[0],
            out.report
        );
        assert_eq!(pair[1], "67108864", "not the job's 64M{}", out.report);
    }
    out.stderr_has("no job variables").stderr_has(&format!(
        "names job 1, but jobdock runs in job {job}'s cgroup"
    ));
}

/// Outside any job, SLURM_JOB_ID and a 1 TiB allocation are only variables: the site's limit
/// (4g in the example config the test site runs) holds, and the container is in no job's cgroup.
#[test]
fn forged_slurm_variables_outside_a_job_get_the_site_limits() {
    if !cluster_is_up() {
        return;
    }
    let out = TestJob::program(
        INSTALLED,
        &["run", "--image", IMAGE, "--", "sh", "-c", CGROUP_AND_LIMIT],
    )
    .user(ALICE)
    .cwd(HOME)
    .env("HOME", HOME)
    .env("SLURM_JOB_ID", "77")
    .env("SLURM_JOBID", "77")
    .env("SLURM_STEP_ID", "0")
    .env("SLURM_MEM_PER_NODE", "1048576")
    .run();
    out.ok()
        .stderr_has("does not run in the cgroup of slurm job 77");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        !lines.first().is_some_and(|l| l.contains("/slurm")),
        "in a Slurm cgroup{}",
        out.report
    );
    assert_eq!(
        lines.get(1),
        Some(&"4294967296"),
        "not the site's 4g{}",
        out.report
    );
}

// ---- issue 12.4: private mount namespaces --------------------------------------------------------

/// A directory of alice's with a marker file in it, under `base`.
fn alices_dir_with_marker(base: &str, marker: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("jobdock-mountns")
        .tempdir_in(base)
        .unwrap();
    let uid = Some(nix::unistd::Uid::from_raw(ALICE.uid));
    let gid = Some(nix::unistd::Gid::from_raw(ALICE.uid));
    nix::unistd::chown(dir.path(), uid, gid).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.path().join("marker");
    std::fs::write(&file, format!("{marker}\n")).unwrap();
    nix::unistd::chown(&file, uid, gid).unwrap();
    dir
}

/// Slurm's job_container/tmpfs runs the job in a mount namespace of its own, where jobdock's
/// staging mounts would be invisible to dockerd (the job would get empty directories). On the
/// test bed's tmpfs cluster the job sees its real home, its real /scratch volume, and its own
/// private /tmp (what the job wrote there before jobdock ran, and the container writes back);
/// nothing is left: no container, no staging mount in dockerd's namespace.
#[test]
fn a_job_in_slurms_private_mount_namespace_gets_its_real_directories() {
    if !cluster_with_conf_is_up(Some(util::TMPFS_SLURM_CONF)) {
        return;
    }
    let home = alices_dir_with_marker(HOME, "home-marker");
    let volume = alices_dir_with_marker("/scratch/jdalice", "scratch-marker");
    let in_home = home.path().join("marker");
    let volumes = format!("{}:/data", volume.path().display());
    let script = format!(
        "echo job=$SLURM_JOB_ID; echo private-tmp > /tmp/jd-mountns; \
         {INSTALLED} run --image {IMAGE} -- sh -c 'cat {} /data/marker /tmp/jd-mountns; \
         echo from-container > /tmp/jd-back' && echo back=$(cat /tmp/jd-back)",
        in_home.display()
    );
    let out = srun(&[
        "-N1",
        "-n1",
        "--mem=64M",
        "--chdir",
        HOME,
        "sh",
        "-c",
        &script,
    ])
    .env("SLURM_CONF", util::TMPFS_SLURM_CONF)
    .env("LSB_DOCKER_VOLUMES", &volumes)
    .run();
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let job = lines
        .first()
        .and_then(|l| l.strip_prefix("job="))
        .unwrap_or_else(|| panic!("no job id{}", out.report));
    assert_eq!(
        &lines[1..],
        [
            "home-marker",
            "scratch-marker",
            "private-tmp",
            "back=from-container"
        ],
        "{}",
        out.report
    );
    // The job's /tmp is its own, not the node's.
    assert!(!Path::new("/tmp/jd-mountns").exists(), "{}", out.report);
    assert!(
        containers_of(job).is_empty(),
        "containers left{}",
        out.report
    );
    // Other tests' jobs may be staging theirs right now: only this job's count.
    let mounts = util::dockerds_mounts();
    assert!(
        !mounts.contains(&format!("/mounts/jobdock-slurm-{job}-")),
        "staging mounts left in dockerd's namespace:\n{mounts}"
    );
}

// ---- issue 16: srun/sbatch --container-image through jobdock's SPANK plugin ---------------------

/// The plugin where the Debian package puts it, and the main cluster's plugstack file, which
/// scripts/slurm-testbed.sh writes: the package's `required` line
/// (/usr/share/jobdock/slurm/plugstack.conf) and the test build (`--features test-hooks`, only
/// `--jobdock-test-panic=HOOK`).
const SPANK_SO: &str = "/usr/lib/jobdock/jobdock_spank.so";
const SPANK_PLUGSTACK: &str = "/etc/slurm/plugstack.conf.d/jobdock.conf";
/// The plugstack line the Debian package ships for sites to add.
const PACKAGE_PLUGSTACK: &str = "/usr/share/jobdock/slurm/plugstack.conf";
/// The Slurm epilog of the Debian package.
const PACKAGE_EPILOG: &str = "/usr/libexec/jobdock/jobdock-epilog";
const SLURMD_LOG: &str = "/var/log/jobdock-testbed/slurm/slurmd.log";
/// The bounding set of jobdock's capability allowlist (tests/security.rs).
const SPANK_ALLOWED_CAPS: &str = "0000000000804121";

/// Whether the main cluster runs the plugin as the test bed sets it up.
fn spank_is_up() -> bool {
    if !cluster_is_up() {
        return false;
    }
    let conf = std::fs::read_to_string(SPANK_PLUGSTACK).unwrap_or_default();
    // The line the installed package gives sites to add (naming its own paths).
    let shipped = std::fs::read_to_string(PACKAGE_PLUGSTACK).unwrap_or_default();
    let line = shipped
        .lines()
        .find(|l| l.starts_with("required "))
        .unwrap_or("(no required line in the package's plugstack.conf)");
    require(
        "the SPANK plugin on the main cluster's plugstack (scripts/slurm-testbed.sh up)",
        conf.lines().any(|l| l == line)
            && conf.contains("jobdock_spank_test.so")
            && Path::new(SPANK_SO).exists(),
    )
}

/// `key:\tvalue` lines of /proc/self/status as the job printed them.
fn status_value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map_or("", str::trim)
}

/// What a task reports about itself: ids, capabilities, no-new-privs, memory cgroup and limit.
const WHO_AND_WHERE: &str = "id; grep -E '^(Uid|Gid|Groups|Cap[A-Za-z]+|NoNewPrivs):' /proc/self/status; \
     grep :memory: /proc/self/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes";

/// `srun --container-image=IMG cmd` as an ordinary user gets exactly what
/// `srun jobdock run --image IMG -- cmd` gives: her ids and groups, no capability, the bounding set
/// of the allowlist, no-new-privileges, a container in the step's cgroup held to the job's memory.
#[test]
fn srun_container_image_runs_the_task_in_a_container_as_the_user() {
    if !spank_is_up() {
        return;
    }
    let native = srun(&[
        "-N1",
        "-n1",
        "--mem=64M",
        "--container-image",
        IMAGE,
        "sh",
        "-c",
        WHO_AND_WHERE,
    ])
    .run();
    native.ok();
    let by_hand = srun(&[
        "-N1",
        "-n1",
        "--mem=64M",
        INSTALLED,
        "run",
        "--image",
        IMAGE,
        "--",
        "sh",
        "-c",
        WHO_AND_WHERE,
    ])
    .run();
    by_hand.ok();
    let out = &native.stdout;
    assert!(
        out.starts_with("uid=2001(jdalice) gid=2001(jdalice) groups=2001(jdalice)"),
        "{}",
        native.report
    );
    for key in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(
            status_value(out, key),
            "0000000000000000",
            "{key}{}",
            native.report
        );
    }
    assert_eq!(
        status_value(out, "CapBnd"),
        SPANK_ALLOWED_CAPS,
        "{}",
        native.report
    );
    assert_eq!(status_value(out, "NoNewPrivs"), "1", "{}", native.report);
    // In a container: a cgroup of its own below the step's (plain srun puts the task in
    // .../step_0/task_0), held to the job's 64M.
    let cgroup = out.lines().find(|l| l.contains(":memory:")).unwrap_or("");
    let below_step = cgroup.split("/step_0/").nth(1).unwrap_or("");
    assert!(
        cgroup.contains("/uid_2001/job_") && below_step.len() == 64,
        "not a container in the step's cgroup: {cgroup}{}",
        native.report
    );
    assert_eq!(out.lines().last(), Some("67108864"), "{}", native.report);
    // Line by line what `srun jobdock run` gives, but the job's own cgroup path.
    let same = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.contains(":memory:"))
            .map(String::from)
            .collect()
    };
    assert_eq!(
        same(out),
        same(&by_hand.stdout),
        "{}{}",
        native.report,
        by_hand.report
    );
}

/// `srun -n 2`: the tasks run in the step's one container on the node (issue 14, as
/// `srun jobdock run` gives them), and srun reports each task's own exit code.
#[test]
fn srun_n2_runs_the_tasks_in_the_steps_container_each_with_its_own_exit_code() {
    if !spank_is_up() {
        return;
    }
    let out = srun(&[
        "-N1",
        "-n2",
        "--mem=64M",
        "--container-image",
        IMAGE,
        "sh",
        "-c",
        "echo task=$SLURM_PROCID $(grep :memory: /proc/self/cgroup); exit $((SLURM_PROCID + 3))",
    ])
    .run();
    out.code(4)
        .stderr_has("task 0: Exited with exit code 3")
        .stderr_has("task 1: Exited with exit code 4");
    let mut cgroups = Vec::new();
    for task in ["task=0 ", "task=1 "] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(task))
            .unwrap_or_else(|| panic!("no {task}{}", out.report));
        let container = line.split("/step_0/").nth(1).unwrap_or("");
        assert_eq!(
            container.len(),
            64,
            "not in a container: {line}{}",
            out.report
        );
        cgroups.push(container.to_string());
    }
    assert_eq!(
        cgroups[0], cgroups[1],
        "the step's tasks on one node share its container{}",
        out.report
    );
}

/// `--container-name` (issue 16.1): the job's container of that name on the node, made by the
/// first step that names it (under the job's cgroup, not the step's), joined by the later ones,
/// which find what the first left in it; another name is another container; another image is
/// refused, naming it; pyxis's flags other than `auto` are refused by srun. The containers live
/// until the job ends, and then its epilog removes them.
#[test]
fn container_name_keeps_the_jobs_container_for_its_later_steps() {
    if !spank_is_up() {
        return;
    }
    let data = alices_dir_with_marker("/scratch/jdalice", "named-marker");
    let (dir, script) = batch(&format!(
        "#!/bin/sh\n#SBATCH --mem=64M\n\
         srun --container-image={IMAGE} --container-name=work sh -c \
           'echo kept >/tmp/marker; echo \"first pidns=$(readlink /proc/self/ns/pid) $(grep :memory: /proc/self/cgroup)\"'\n\
         echo first=$?\n\
         srun --container-image={IMAGE} --container-name=work:auto sh -c \
           'echo \"second marker=$(cat /tmp/marker) pidns=$(readlink /proc/self/ns/pid)\"'\n\
         echo second=$?\n\
         srun --container-image={IMAGE} --container-name=work --container-mounts={data}:/data \
           sh -c 'ls /data 2>/dev/null || echo \"data absent\"'\n\
         srun --container-image={IMAGE} --container-name=other sh -c \
           'echo \"other marker=$(cat /tmp/marker 2>/dev/null || echo none)\"'\n\
         srun --container-image=jobdock-test/entrypoint --container-name=work true\n\
         echo mismatch=$?\n\
         srun --container-image={IMAGE} --container-name=work:exec true\n\
         echo flag=$?\n\
         srun sh -c 'SLURM_CLUSTER_NAME=made-up LSB_DOCKER_CONTAINER_NAME=forged \
           {INSTALLED} run --image {IMAGE} -- true'\n\
         echo forged=$?\n\
         echo steps-done\n\
         sleep 120\n",
        data = data.path().display()
    ));
    let output = dir.path().join("out");
    let job = submit(&script, &output, None);
    // A failing assertion must not leave the job holding the node for its two minutes.
    struct Cancel(String);
    impl Drop for Cancel {
        fn drop(&mut self) {
            let _ = TestJob::program("scancel", &[&self.0]).user(ALICE).run();
        }
    }
    let cancel = Cancel(job.clone());
    util::wait_until(
        &format!("job {job}'s steps in {}", output.display()),
        Duration::from_secs(120),
        || std::fs::read_to_string(&output).is_ok_and(|t| t.contains("steps-done")),
    );
    let text = std::fs::read_to_string(&output).unwrap();
    let line = |start: &str| -> &str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} line in:\n{text}"))
    };
    assert_eq!(line("first="), "first=0", "{text}");
    assert_eq!(line("second="), "second=0", "{text}");
    let first = line("first pidns=");
    let second = line("second marker=");
    assert!(second.starts_with("second marker=kept "), "{text}");
    let pidns = |l: &str| {
        l.split_whitespace()
            .find(|w| w.starts_with("pidns="))
            .unwrap_or("no pidns")
            .to_string()
    };
    assert_eq!(
        pidns(first),
        pidns(second),
        "the later step joined the first one's container:\n{text}"
    );
    // Under the job's cgroup, which outlives the step: .../job_<id>/<container id>.
    let container = first.split(&format!("/job_{job}/")).nth(1).unwrap_or("");
    assert_eq!(container.len(), 64, "not under the job's cgroup:\n{text}");
    assert_eq!(line("other marker="), "other marker=none", "{text}");
    // A later step's own mounts are not in it, and it says so.
    assert_eq!(line("data "), "data absent", "{text}");
    assert!(
        text.contains("keeps its mounts: /data of this step's are not mounted"),
        "{text}"
    );
    assert_ne!(line("mismatch="), "mismatch=0", "{text}");
    assert!(
        text.contains("it runs jobdock-test/busybox:latest, not jobdock-test/entrypoint:latest"),
        "{text}"
    );
    assert_ne!(line("flag="), "flag=0", "{text}");
    assert!(
        text.contains("--container-name: the flag \"exec\" is not supported"),
        "{text}"
    );
    // The named containers run on while the job does, and its end removes them, also the one
    // whose cluster label the user made up (SLURM_CLUSTER_NAME is the job's environment).
    assert_eq!(line("forged="), "forged=0", "{text}");
    assert_eq!(running_containers_of(&job).len(), 3, "{text}");
    drop(cancel);
    util::wait_until(
        &format!("job {job}'s named containers removed by its epilog"),
        Duration::from_secs(60),
        || containers_of(&job).is_empty(),
    );
}

/// `#SBATCH --container-image` (the shipped line has sbatch=1): the batch script itself runs in a
/// container, as the user, in the batch step's cgroup, with its arguments and exit code.
#[test]
fn sbatch_container_image_runs_the_batch_script_in_a_container() {
    if !spank_is_up() {
        return;
    }
    let (dir, script) = batch(&format!(
        "#!/bin/sh\n#SBATCH --mem=64M\n#SBATCH --container-image={IMAGE}\n\
         echo \"args=$*\"; id -un; grep :memory: /proc/self/cgroup; \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes; exit 7\n"
    ));
    let output = dir.path().join("out");
    let out = TestJob::program(
        "sbatch",
        &[
            "--wait",
            "-o",
            &output.display().to_string(),
            &script.display().to_string(),
            "one",
            "two",
        ],
    )
    .user(ALICE)
    .cwd(dir.path())
    .run();
    out.code(7);
    let text = std::fs::read_to_string(&output).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"args=one two"), "{text}{}", out.report);
    assert_eq!(lines.get(1), Some(&"jdalice"), "{text}");
    let container = lines
        .get(2)
        .and_then(|l| l.split("/step_batch/").nth(1))
        .unwrap_or("");
    assert_eq!(
        container.len(),
        64,
        "not in a container of the batch step: {text}"
    );
    assert_eq!(lines.get(3), Some(&"67108864"), "{text}");
}

/// `--container-mounts` is jobdock's LSB_DOCKER_VOLUMES: an allowed directory is mounted (read-only
/// when asked), one outside the site's policy is refused, naming the option, and nothing runs.
#[test]
fn container_mounts_are_held_to_the_site_policy() {
    if !spank_is_up() {
        return;
    }
    let data = alices_dir_with_marker("/scratch/jdalice", "scratch-marker");
    let mounts = format!("{}:/data:ro", data.path().display());
    let out = srun(&[
        "-n1",
        "--container-image",
        IMAGE,
        &format!("--container-mounts={mounts}"),
        "sh",
        "-c",
        "cat /data/marker; touch /data/new 2>/dev/null || echo read-only",
    ])
    .run();
    out.ok();
    assert_eq!(out.stdout, "scratch-marker\nread-only\n", "{}", out.report);
    for (mounts, rule) in [
        ("/etc:/x", "which jobs may never see"),
        ("/home/jdalice:/x", "outside the allowed roots"),
        ("relative:/x", "must be an absolute host path"),
    ] {
        let out = srun(&[
            "-n1",
            "--container-image",
            IMAGE,
            &format!("--container-mounts={mounts}"),
            "echo",
            "ran",
        ])
        .run();
        out.code(64)
            .stderr_has(&format!("--container-mounts={mounts:?}: "))
            .stderr_has(rule);
        assert!(!out.stdout.contains("ran"), "{}", out.report);
    }
}

/// The other options are jobdock's overrides too: the working directory, the home mount, the
/// variables that must reach the container (refused, naming the option, for one jobdock keeps out).
#[test]
fn container_options_map_onto_jobdocks_overrides() {
    if !spank_is_up() {
        return;
    }
    let home = alices_dir_with_marker(HOME, "home-marker");
    let marker = home.path().join("marker").display().to_string();
    let probe =
        format!("pwd; cat {marker} 2>/dev/null || echo no-home; echo \"FOO=$FOO BAR=$BAR\"");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "-n1",
            "--chdir=/scratch/jdalice",
            "--container-image",
            IMAGE,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["sh", "-c", &probe]);
        srun(&args)
            .env("FOO", "1")
            .env("BAR", "2")
            .env("LSB_DOCKER_PRESERVE_ENVIRONMENT", "false")
            .run()
    };
    let out = run(&[]);
    out.ok();
    assert_eq!(
        out.stdout, "/scratch/jdalice\nhome-marker\nFOO= BAR=\n",
        "{}",
        out.report
    );
    let out = run(&[
        "--no-container-mount-home",
        "--container-workdir=/etc",
        "--container-env=FOO",
    ]);
    out.ok();
    assert_eq!(out.stdout, "/etc\nno-home\nFOO=1 BAR=\n", "{}", out.report);
    let out = run(&["--container-env=FOO,PATH"]);
    out.code(64)
        .stderr_has("--container-env=\"FOO PATH\": PATH: it is never passed into a container");
}

/// What srun can tell before anything runs, it says, naming the option; the job never starts.
#[test]
fn option_errors_are_reported_by_srun_with_the_options_name() {
    if !spank_is_up() {
        return;
    }
    for (args, said) in [
        (
            &["--container-image="][..],
            "--container-image: must not be empty",
        ),
        (
            &["--container-image", IMAGE, "--container-mounts=/a b:/c"],
            "--container-mounts: a mount may not contain spaces",
        ),
        (
            &["--container-workdir=/tmp"],
            "the --container-* options need --container-image=IMAGE",
        ),
    ] {
        let mut argv = vec!["-n1"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["echo", "ran"]);
        let out = srun(&argv).run();
        assert_ne!(out.code, 0, "{}", out.report);
        out.stderr_has(said);
        assert!(
            !out.stdout.contains("ran") && !out.stderr.contains("allocated resources"),
            "the job started{}",
            out.report
        );
    }
}

/// A step without any of the options is Slurm's alone: the task itself in its task cgroup, not a
/// container (every other test of this file runs through the plugin's stack as well).
#[test]
fn steps_without_the_options_are_untouched() {
    if !spank_is_up() {
        return;
    }
    let out = srun(&[
        "-n1",
        "--mem=64M",
        "sh",
        "-c",
        "grep :memory: /proc/self/cgroup",
    ])
    .run();
    out.ok();
    let cgroup = out.stdout.trim();
    assert!(
        cgroup.ends_with("/step_0/task_0") || cgroup.ends_with("/step_0"),
        "{}",
        out.report
    );
}

/// `srun --help` lists every option, with the names users of Slurm container plugins know.
#[test]
fn srun_help_lists_the_options() {
    if !spank_is_up() {
        return;
    }
    let out = srun(&["--help"]).run();
    out.ok();
    for option in [
        "--container-image=IMAGE",
        "--container-mounts=SRC:DST[:ro],...",
        "--container-workdir=PATH",
        "--container-env=NAME,...",
        "--container-entrypoint",
        "--no-container-entrypoint",
        "--container-mount-home",
        "--no-container-mount-home",
        "--container-name=NAME",
    ] {
        out.stdout_has(option);
    }
}

/// A cancelled job's container is removed; the plugin's slurm_spank_job_epilog ran `jobdock
/// cleanup` for the job (slurmd's log says so), next to the shipped Epilog.
#[test]
fn a_cancelled_container_job_leaves_nothing_after_the_plugins_epilog() {
    if !spank_is_up() {
        return;
    }
    let (_dir, script) = batch(&format!(
        "#!/bin/sh\n#SBATCH --mem=64M\n#SBATCH --container-image={IMAGE}\nsleep 300\n"
    ));
    let job = submit(&script, Path::new("/dev/null"), None);
    util::wait_until(
        &format!("job {job}'s container"),
        Duration::from_secs(60),
        || !containers_of(&job).is_empty(),
    );
    TestJob::program("scancel", &["--signal=KILL", "--full", &job])
        .user(ALICE)
        .run()
        .ok();
    let said = format!("jobdock: job_epilog: job {job}: ");
    util::wait_until(
        &format!("job {job}'s containers gone and the plugin's epilog in {SLURMD_LOG}"),
        Duration::from_secs(60),
        || {
            containers_of(&job).is_empty()
                && std::fs::read_to_string(SLURMD_LOG).is_ok_and(|l| l.contains(&said))
        },
    );
    let log = std::fs::read_to_string(SLURMD_LOG).unwrap();
    let line = log.lines().find(|l| l.contains(&said)).unwrap();
    assert!(line.contains(&format!("cleanup --job {job} ok")), "{line}");
}

/// A panic inside the plugin (its test build panics on demand) fails what it was part of, cleanly:
/// srun's option parsing, or the task (with exit code 1, reported by slurmstepd, which goes on);
/// slurmstepd as root before the tasks (user_init) fails the launch. The node stays up and the
/// next container step runs.
#[test]
fn a_panic_in_the_plugin_fails_the_step_not_slurmstepd() {
    if !spank_is_up() {
        return;
    }
    let out = srun(&["-n1", "--jobdock-test-panic=option", "echo", "ran"]).run();
    assert_ne!(out.code, 0, "{}", out.report);
    out.stderr_has("jobdock: option: internal error (a panic, caught)")
        .stderr_has("Invalid --jobdock-test-panic argument");
    let out = srun(&["-n1", "--jobdock-test-panic=task_init", "echo", "ran"]).run();
    out.code(1)
        .stderr_has("jobdock: task_init: internal error (a panic, caught); failing it")
        .stderr_has("task 0: Exited with exit code 1");
    assert!(!out.stdout.contains("ran"), "{}", out.report);
    let out = srun(&["-n1", "--jobdock-test-panic=user_init", "echo", "ran"]).run();
    out.stderr_has("jobdock: user_init: internal error (a panic, caught)")
        .stderr_has("launch failed");
    assert!(!out.stdout.contains("ran"), "{}", out.report);
    assert!(cluster_is_up(), "the node went down");
    srun(&["-n1", "--container-image", IMAGE, "echo", "after"])
        .run()
        .ok()
        .stdout_has("after");
}

/// The built plugin exports what Slurm's loader reads and the hooks, nothing named `init` or
/// `fini` (the loader would call them), and says it is for 22.05: a copy that claims another
/// Slurm, on a `required` line, fails srun before anything runs.
#[test]
fn the_plugin_is_refused_by_another_slurm_version_and_then_nothing_runs() {
    if !spank_is_up() {
        return;
    }
    let nm = std::process::Command::new("nm")
        .args(["-D", "--defined-only", SPANK_SO])
        .output()
        .unwrap();
    let symbols: Vec<(u64, String)> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let addr = u64::from_str_radix(w.next()?, 16).ok()?;
            Some((addr, w.nth(1)?.to_string()))
        })
        .collect();
    let mut names: Vec<&str> = symbols.iter().map(|(_, n)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "plugin_name",
            "plugin_type",
            "plugin_version",
            "slurm_spank_init",
            "slurm_spank_init_post_opt",
            "slurm_spank_job_epilog",
            "slurm_spank_task_init",
            "slurm_spank_user_init",
            "spank_plugin_version"
        ]
    );
    // plugin_version's file offset: its address in .rodata, as readelf maps it.
    let addr = symbols
        .iter()
        .find(|(_, n)| n == "plugin_version")
        .unwrap()
        .0;
    let readelf = std::process::Command::new("readelf")
        .args(["-SW", SPANK_SO])
        .output()
        .unwrap();
    let sections = String::from_utf8_lossy(&readelf.stdout).into_owned();
    let (start, offset) = sections
        .lines()
        .find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = w.iter().position(|x| *x == ".rodata")?;
            Some((
                u64::from_str_radix(w.get(at + 2)?, 16).ok()?,
                u64::from_str_radix(w.get(at + 3)?, 16).ok()?,
            ))
        })
        .unwrap();
    let at = usize::try_from(addr - start + offset).unwrap();
    let mut so = std::fs::read(SPANK_SO).unwrap();
    assert_eq!(
        so[at..at + 4],
        ((22u32 << 16) | (5 << 8)).to_le_bytes(),
        "22.05"
    );
    so[at..at + 4].copy_from_slice(&((23u32 << 16) | (2 << 8)).to_le_bytes());

    let dir = util::trusted_tempdir();
    let patched = dir.path().join("jobdock_spank.so");
    std::fs::write(&patched, &so).unwrap();
    let plugstack = dir.path().join("plugstack.conf");
    std::fs::write(&plugstack, format!("required {}\n", patched.display())).unwrap();
    let conf: String = std::fs::read_to_string("/etc/slurm/slurm.conf")
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("PlugStackConfig"))
        .map(|l| format!("{l}\n"))
        .collect();
    let slurm_conf = dir.path().join("slurm.conf");
    std::fs::write(
        &slurm_conf,
        format!("{conf}PlugStackConfig={}\n", plugstack.display()),
    )
    .unwrap();
    for f in [&patched, &plugstack, &slurm_conf] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = srun(&["-n1", "--container-image", IMAGE, "echo", "ran"])
        .env("SLURM_CONF", &slurm_conf.display().to_string())
        .run();
    out.code(1)
        .stderr_has("Incompatible Slurm plugin")
        .stderr_has("version (23.02.0)")
        .stderr_has("Plug-in initialization failed");
    assert!(!out.stdout.contains("ran"), "{}", out.report);
}

/// An option's value from the environment, as Slurm defines it for SPANK options
/// (`SLURM_SPANK__SLURM_SPANK_OPTION_<plugin>_<option>`), is the option.
#[test]
fn container_image_from_the_environment_as_slurm_defines_it() {
    if !spank_is_up() {
        return;
    }
    let out = srun(&["-n1", "sh", "-c", "grep :memory: /proc/self/cgroup"])
        .env(
            "SLURM_SPANK__SLURM_SPANK_OPTION_jobdock_container_image",
            IMAGE,
        )
        .run();
    out.ok();
    let container = out.stdout.trim().split("/step_0/").nth(1).unwrap_or("");
    assert_eq!(container.len(), 64, "not in a container{}", out.report);
}

/// contrib/install.sh installs the built plugin (it builds nothing) where the plugstack line it
/// prints names it, under the PREFIX, root's and not writable by anyone else; a SPANK_PLUGIN that
/// is not there fails the install. Staged under DESTDIR: the node's own files are not touched.
#[test]
fn install_sh_installs_the_built_plugin_where_the_plugstack_line_names_it() {
    use std::os::unix::fs::MetadataExt;
    if !require(
        "root (install.sh installs setuid root)",
        nix::unistd::geteuid().is_root(),
    ) {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/install.sh");
    let root = util::trusted_tempdir();
    std::fs::create_dir_all(root.path().join("etc/slurm")).unwrap();
    // Any file stands for the build: install.sh copies it as it is.
    let built = root.path().join("libjobdock_spank.so");
    std::fs::write(&built, b"\x7fELF a plugin").unwrap();
    let install = |plugin: &Path| {
        TestJob::program(script, &[util::BIN])
            .env("DESTDIR", &root.path().display().to_string())
            .env("PREFIX", "/opt/jobdock")
            .env("SPANK_PLUGIN", &plugin.display().to_string())
            .run()
    };
    let out = install(&built);
    out.ok().stdout_has(
        "required /opt/jobdock/lib/jobdock/jobdock_spank.so jobdock=/opt/jobdock/bin/jobdock enforce=0 sbatch=1",
    );
    let so = root.path().join("opt/jobdock/lib/jobdock/jobdock_spank.so");
    assert_eq!(
        std::fs::read(&so).unwrap(),
        b"\x7fELF a plugin",
        "{}",
        out.report
    );
    let meta = std::fs::metadata(&so).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, 0o644)
    );
    let dir = std::fs::metadata(so.parent().unwrap()).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o7777), (0, 0o755));
    install(&root.path().join("missing.so"))
        .code(1)
        .stderr_has("missing.so: no such file");
}

// ---- issue 16: the site's settings, on a cluster that contains every step ----------------------

/// scripts/slurm-testbed.sh's fourth cluster, `jobdock-enforce`: one node whose plugstack (its
/// own, PlugStackConfig) is the package's plugin line with these settings in place of the shipped
/// ones. Its jobs have an extern step (PrologFlags=Contain).
const ENFORCE_CONF: &str = "/etc/slurm-enforce/slurm.conf";
const ENFORCE_PLUGSTACK: &str = "/etc/slurm-enforce/plugstack.conf";
const ENFORCE_CLUSTER: &str = "jobdock-enforce";
const ENFORCE_SETTINGS: &str = "enforce=1 sbatch=0 default_image=jobdock-test/busybox:latest";
/// An image other than the default: busybox with the MPI suite's programs, of which `/hello` is
/// one that busybox lacks (scripts/slurm-testbed.sh builds it).
const OTHER_IMAGE: &str = "jobdock-test/mpi";

/// Whether the enforce cluster accepts jobs and runs the package's plugin with its settings.
fn enforce_cluster_is_up() -> bool {
    if !cluster_with_conf_is_up(Some(ENFORCE_CONF)) || !util::bed_is_up(&[IMAGE, OTHER_IMAGE]) {
        return false;
    }
    let shipped = std::fs::read_to_string(PACKAGE_PLUGSTACK).unwrap_or_default();
    let line = shipped
        .lines()
        .find(|l| l.starts_with("required "))
        .unwrap_or("(no required line in the package's plugstack.conf)");
    let mut want: Vec<&str> = line
        .split_whitespace()
        .filter(|w| {
            !["enforce=", "sbatch=", "default_image="]
                .iter()
                .any(|k| w.starts_with(k))
        })
        .collect();
    want.push(ENFORCE_SETTINGS);
    let conf = std::fs::read_to_string(ENFORCE_PLUGSTACK).unwrap_or_default();
    require(
        &format!(
            "{ENFORCE_PLUGSTACK} with the package's plugin line and {ENFORCE_SETTINGS} (scripts/slurm-testbed.sh up)"
        ),
        conf.lines().any(|l| l == want.join(" ")),
    )
}

/// `srun ARGS` as jdalice on the enforce cluster.
fn enforce_srun(args: &[&str]) -> TestJob {
    srun(args).env("SLURM_CONF", ENFORCE_CONF)
}

/// One line, `where job=.. uid=.. cg=.. limit=.. pidns=.. init=.. hello=yes|no srun=yes|no`: the
/// task's job, uid, memory cgroup and its limit, its PID namespace and the program of its PID 1
/// (a container's is docker's init; Slurm makes no PID namespace), whether it has the MPI image's
/// `/hello`, whether Slurm's `srun` is there (the host's). No single quotes: it goes inside
/// `sh -c '...'`. (Not /.dockerenv: this test host's own root has one.)
const WHERE: &str = "echo where job=$SLURM_JOB_ID uid=$(id -u) \
     cg=$(grep :memory: /proc/self/cgroup | cut -d: -f3) \
     limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) \
     pidns=$(readlink /proc/self/ns/pid) init=$(tr \"\\0\" \" \" </proc/1/cmdline | cut -d\" \" -f1) \
     hello=$(test -e /hello && echo yes || echo no) \
     srun=$(command -v srun >/dev/null && echo yes || echo no)";

/// docker's init, PID 1 of every container jobdock makes.
const DOCKER_INIT: &str = "/sbin/docker-init";

/// The PID namespace of this test, the host's.
fn host_pidns() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .unwrap()
        .display()
        .to_string()
}

/// The `key=value` words of the `where` lines in `text`, in order.
fn whereabouts(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    text.lines()
        .filter_map(|l| l.strip_prefix("where "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// dockerd's own account of the containers the enforce cluster's jobs start: `docker events` for
/// its cluster label, from before a test's first job on. A step's container lives only as long
/// as the step, so nothing after the job (`docker ps`) could count them.
struct ContainerEvents {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
}

/// A container dockerd started, by its labels and the image reference it was created with.
#[derive(Debug)]
struct Started {
    id: String,
    image: String,
    uid: String,
    step: String,
}

impl ContainerEvents {
    fn watch() -> ContainerEvents {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        // --since replays what dockerd saw from now to when this subscribes: nothing is missed.
        let child = std::process::Command::new("docker")
            .args([
                "events",
                "--since",
                &format!("{}.{:09}", now.as_secs(), now.subsec_nanos()),
                "--filter",
                "type=container",
                "--filter",
                &format!("label=jobdock.cluster={ENFORCE_CLUSTER}"),
                "--format",
                "{{json .}}",
            ])
            .stdout(log.reopen().unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker events runs");
        ContainerEvents { child, log }
    }

    /// The containers of job `job` that dockerd started, once it has destroyed each of them
    /// (failing the test if one outlives its job by a minute).
    fn of_job(&self, job: &str) -> Vec<Started> {
        let mut started = Vec::new();
        util::wait_until(
            &format!("dockerd to destroy job {job}'s containers"),
            Duration::from_secs(60),
            || {
                let mut destroyed = Vec::new();
                started.clear();
                let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
                for event in text.lines() {
                    let Ok(e) = serde_json::from_str::<serde_json::Value>(event) else {
                        continue;
                    };
                    let label = |k: &str| e["Actor"]["Attributes"][k].as_str().unwrap_or("");
                    if label("jobdock.job") != job {
                        continue;
                    }
                    let id = e["Actor"]["ID"].as_str().unwrap_or("").to_string();
                    match e["Action"].as_str() {
                        Some("start") => started.push(Started {
                            id,
                            image: label("image").into(),
                            uid: label("jobdock.uid").into(),
                            step: label("jobdock.step").into(),
                        }),
                        Some("destroy") => destroyed.push(id),
                        _ => {}
                    }
                }
                !started.is_empty() && started.iter().all(|c| destroyed.contains(&c.id))
            },
        );
        assert!(containers_of(job).is_empty(), "job {job}'s containers left");
        started
    }
}

impl Drop for ContainerEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The id of the image a reference names, by the docker CLI.
fn image_id(reference: &str) -> String {
    let out = util::docker(&["image", "inspect", "-f", "{{.Id}}", reference]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// enforce=1 with default_image: a bare `srun` runs in a container of the default image, as the
/// user, below the step's cgroup and held to the job's memory; `--container-image` picks another
/// image. Each job's one container is the step's (its extern step has none), and is gone after.
#[test]
fn enforce_runs_a_bare_step_in_a_container_of_the_default_image() {
    if !enforce_cluster_is_up() {
        return;
    }
    let events = ContainerEvents::watch();
    let bare = enforce_srun(&["-N1", "-n1", "--mem=64M", "sh", "-c", WHERE]).run();
    bare.ok();
    let other = enforce_srun(&[
        "-N1",
        "-n1",
        "--mem=64M",
        &format!("--container-image={OTHER_IMAGE}"),
        "sh",
        "-c",
        WHERE,
    ])
    .run();
    other.ok();
    for (out, image, hello) in [(&bare, IMAGE, "no"), (&other, OTHER_IMAGE, "yes")] {
        let found = whereabouts(&out.stdout);
        let [task] = &found[..] else {
            out.fail("not one task's line")
        };
        assert_eq!(task["uid"], "2001", "{}", out.report);
        // In a container of the image (a PID namespace of its own, docker's init as PID 1; no
        // srun, which is the host's), held to the job's 64M.
        assert_ne!(task["pidns"], host_pidns(), "{}", out.report);
        assert_eq!(
            (&task["init"][..], &task["hello"][..], &task["srun"][..]),
            (DOCKER_INIT, hello, "no"),
            "{}",
            out.report
        );
        assert_eq!(task["limit"], "67108864", "{}", out.report);
        let job = &task["job"];
        let started = events.of_job(job);
        let [container] = &started[..] else {
            out.fail(&format!(
                "dockerd started {started:?} for job {job}: not the step's one container"
            ))
        };
        assert_eq!(image_id(&container.image), image_id(image), "{container:?}");
        assert_eq!((&container.uid[..], &container.step[..]), ("2001", "0.0"));
        // The task's cgroup is that container's, below the step's (a bare task is in .../task_0).
        assert!(
            task["cg"].ends_with(&format!("/uid_2001/job_{job}/step_0/{}", container.id)),
            "not in the container dockerd started, below job {job}'s step: {}{}",
            task["cg"],
            out.report
        );
    }
}

/// `srun /usr/bin/jobdock run --image IMG -- cmd` (the plugstack line's very jobdock= path) is a
/// container already: the plugin leaves the task as it is, and it runs once, in one container of
/// IMG whose init runs cmd, not in a container of the default image around it (which has no
/// jobdock). Any other jobdock task is a program like any other, run in the default image:
/// `srun jobdock run` (the plugin sees the word `jobdock`; slurmstepd looks it up on PATH only
/// after) and a task that calls /usr/bin/jobdock itself.
#[test]
fn enforce_passes_srun_of_the_sites_jobdock_run_through_untouched() {
    if !enforce_cluster_is_up() {
        return;
    }
    let events = ContainerEvents::watch();
    let steps = format!(
        "echo job=$SLURM_JOB_ID; \
         srun {INSTALLED} run --image {OTHER_IMAGE} -- sh -c '{WHERE}; echo pid1=$(tr \"\\0\" \" \" </proc/1/cmdline)'; \
         echo direct=$?; \
         srun jobdock run --image {OTHER_IMAGE} -- true; echo by-name=$?; \
         srun sh -c '{INSTALLED} run --image {OTHER_IMAGE} -- true'; echo called=$?"
    );
    // salloc's own command runs here, on the submitting host: the job id for the three steps.
    let out = TestJob::program("salloc", &["-N1", "-n1", "--mem=64M", "sh", "-c", &steps])
        .user(ALICE)
        .cwd(HOME)
        .env("SLURM_CONF", ENFORCE_CONF)
        .run();
    out.ok();
    let said = |key: &str| -> String {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| out.fail(&format!("no {key}= line")))
            .to_string()
    };
    let job = said("job");
    assert_eq!(said("direct"), "0", "{}", out.report);
    let found = whereabouts(&out.stdout);
    let [task] = &found[..] else {
        out.fail("not one task's line")
    };
    assert_ne!(task["pidns"], host_pidns(), "{}", out.report);
    assert_eq!(
        (&task["uid"][..], &task["init"][..], &task["hello"][..]),
        ("2001", DOCKER_INIT, "yes"),
        "not in a container of {OTHER_IMAGE}{}",
        out.report
    );
    // The container's PID 1, docker's init, runs the step's own command (through jobdock's output
    // shim), not another jobdock.
    let init = said("pid1");
    assert!(
        init.starts_with("/sbin/docker-init -- /bin/sh -c ")
            && init.contains(" jobdock sh -c echo where "),
        "{init}{}",
        out.report
    );
    assert_eq!(said("by-name"), "127", "{}", out.report);
    assert_eq!(said("called"), "127", "{}", out.report);
    out.stderr_has("jobdock: jobdock: not found in image jobdock-test/busybox:latest")
        .stderr_has(&format!("{INSTALLED}: not found"));
    let started = events.of_job(&job);
    let direct: Vec<&Started> = started.iter().filter(|c| c.step == "0.0").collect();
    let [container] = &direct[..] else {
        out.fail(&format!(
            "dockerd started {started:?} for job {job}: not one container for step 0"
        ))
    };
    assert_eq!(image_id(&container.image), image_id(OTHER_IMAGE));
    assert!(
        task["cg"].ends_with(&format!("/job_{job}/step_0/{}", container.id)),
        "{}{}",
        task["cg"],
        out.report
    );
    for wrapped in started.iter().filter(|c| c.step != "0.0") {
        assert_eq!(image_id(&wrapped.image), image_id(IMAGE), "{wrapped:?}");
    }
}

/// sbatch=0: sbatch and salloc do not know the options (the plugin offers them to srun alone),
/// and the batch script runs as Slurm runs it, on the host in the batch step's cgroup (where srun
/// is), while its srun steps run in containers of the default image (enforce=1). The job's one
/// container is its step's: none for the batch script, none for the extern step.
#[test]
fn enforce_with_sbatch_0_runs_the_batch_script_bare_and_its_steps_in_containers() {
    if !enforce_cluster_is_up() {
        return;
    }
    let option = format!("--container-image={OTHER_IMAGE}");
    for (program, args) in [
        ("sbatch", [&option[..], "--wrap", "true"].as_slice()),
        ("salloc", &[&option[..], "true"]),
    ] {
        let out = TestJob::program(program, args)
            .user(ALICE)
            .cwd(HOME)
            .env("SLURM_CONF", ENFORCE_CONF)
            .run();
        assert_ne!(out.code, 0, "{}", out.report);
        out.stderr_has(&format!("{program}: unrecognized option '{option}'"));
        assert!(
            out.stdout.trim().is_empty(),
            "a job was submitted{}",
            out.report
        );
    }
    let events = ContainerEvents::watch();
    let (dir, script) = batch(&format!(
        "#!/bin/sh\n#SBATCH --mem=64M\n{WHERE}\nsrun sh -c '{WHERE}'\necho step=$?\n"
    ));
    let output = dir.path().join("out");
    let out = TestJob::program(
        "sbatch",
        &[
            "--wait",
            "-o",
            &output.display().to_string(),
            &script.display().to_string(),
        ],
    )
    .user(ALICE)
    .cwd(dir.path())
    .env("SLURM_CONF", ENFORCE_CONF)
    .run();
    out.ok();
    let text = std::fs::read_to_string(&output).unwrap();
    let found = whereabouts(&text);
    let [script, step] = &found[..] else {
        out.fail(&format!("not two lines in {text}"))
    };
    let job = &script["job"];
    assert!(text.contains("step=0"), "{text}");
    assert_eq!(script["uid"], "2001", "{text}");
    assert!(
        script["pidns"] == host_pidns() && script["init"] != DOCKER_INIT && script["srun"] == "yes",
        "the batch script is not on the host: {text}"
    );
    assert!(
        [
            format!("/job_{job}/step_batch"),
            format!("/job_{job}/step_batch/task_0")
        ]
        .iter()
        .any(|end| script["cg"].ends_with(end)),
        "not job {job}'s batch step cgroup: {text}"
    );
    assert!(
        step["pidns"] != host_pidns() && step["init"] == DOCKER_INIT && step["srun"] == "no",
        "the batch script's srun step is not in a container: {text}"
    );
    assert_eq!((&step["job"], &step["uid"][..]), (job, "2001"), "{text}");
    let started = events.of_job(job);
    let [container] = &started[..] else {
        out.fail(&format!(
            "dockerd started {started:?} for job {job}: not its srun step's one container"
        ))
    };
    assert_eq!(image_id(&container.image), image_id(IMAGE), "{container:?}");
    assert!(
        step["cg"].ends_with(&format!("/job_{job}/step_0/{}", container.id)),
        "{text}"
    );
}
