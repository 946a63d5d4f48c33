//! Slurm for real: the one-node cluster of scripts/slurm-testbed.sh runs jobs as jdalice that call
//! the installed setuid jobdock, in job steps and batch scripts. The container joins the step's
//! cgroup and is held to the job's memory; the shipped epilog removes what a cancelled job left.

use crate::util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{ALICE, INSTALLED, TestJob, containers_of, require};

const IMAGE: &str = "jobdock-test/busybox";
const HOME: &str = ALICE.home;

fn cluster_is_up() -> bool {
    cluster_with_conf_is_up(None)
}

/// Whether the cluster `conf` (a slurm.conf; `None`: the default one) accepts jobs.
fn cluster_with_conf_is_up(conf: Option<&str>) -> bool {
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
fn srun(args: &[&str]) -> TestJob {
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
        "id -un; grep :memory: /proc/self/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
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
fn batch(script: &str) -> (tempfile::TempDir, std::path::PathBuf) {
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
        .any(|l| l.starts_with("Epilog ") && l.contains("contrib/slurm/epilog"));
    if !require(
        "Epilog=contrib/slurm/epilog in slurm.conf (scripts/slurm-testbed.sh up)",
        configured,
    ) {
        return;
    }
    let (dir, script) = batch(&format!(
        "#!/bin/sh\n#SBATCH --mem=64M\n{INSTALLED} run --image {IMAGE} -- sleep 300\n"
    ));
    let out = TestJob::program(
        "sbatch",
        &[
            "--parsable",
            "-o",
            "/dev/null",
            &script.display().to_string(),
        ],
    )
    .user(ALICE)
    .cwd(dir.path())
    .run();
    out.ok();
    let job = out.stdout.trim().split(';').next().unwrap().to_string();
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
