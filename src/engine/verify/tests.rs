//! The checks against the plan, one mismatch at a time: what dockerd stored (as an authorization
//! plugin or a daemon default could change it), mount sources swapped after the user's probe
//! checked them, and the started job's credentials; and through `run`, that each failure stops the
//! job before it starts (or kills it), removes the container, and lets none of its output out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::compare::*;
use super::*;
use crate::config::{PullPolicy, SiteConfig};
use crate::engine::daemon::ContainerFile;
use crate::engine::daemon::{DeviceSeen, Effective, MountSeen};
use crate::engine::fake::{FakeDaemon, FakeHost, ID, SharedBuf, chunk_out, lsf_plan, stored};
use crate::engine::pull::PullSettings;
use crate::engine::run::{Io, Settings, run};
use crate::engine::signals::Sig;
use crate::engine::{Blame, Outcome};
use crate::job::JobContext;
use crate::plan::Request;
use crate::probe::FileId;
use crate::probe::fake::FakeProbe;
use crate::units::Capability;

const DATA: &str = "/gpfs/lab/data";

/// A plan with a user volume, a device and a GPU: every kind of field the checks compare.
fn plan_in(state_dir: &Path) -> ContainerPlan {
    let mut config = SiteConfig::default();
    config.engine.state_dir = state_dir.to_path_buf();
    config.mounts.allowed_roots = vec!["/gpfs".into()];
    // The fake daemon has no FIFOs to write to: output through attach (the FIFOs' own tests are
    // the engine module's, on the real dockerd).
    config.engine.output = crate::config::OutputPath::Attach;
    config.devices.paths = vec!["/dev/infiniband/*".into()];
    let ctx = JobContext {
        gpus: vec!["3".into()],
        work_dir: Some("/home/jdalice".into()),
        ..Default::default()
    };
    let req = Request {
        image: Some("jobdock-test/busybox".into()),
        command: vec!["id".into()],
        script: None,
    };
    let mut probe = FakeProbe::default()
        .dir("/home/jdalice")
        .dir("/gpfs")
        .dir(DATA);
    probe.devices.insert(
        "/dev/infiniband/*".into(),
        vec!["/dev/infiniband/uverbs0".into()],
    );
    lsf_plan(
        &config,
        &[("LSB_DOCKER_VOLUMES", "/gpfs/lab/data:/data:ro")],
        vec![(3001, Some("jdproj".into())), (3002, None)],
        ctx,
        &req,
        &probe,
    )
}

pub(crate) fn plan() -> ContainerPlan {
    plan_in(Path::new("/run/jobdock"))
}

/// `/proc/<pid>/status` of a job that runs exactly as `plan` says (Docker lists the primary gid
/// among the groups).
fn good_status(plan: &ContainerPlan) -> String {
    let caps = plan.cap_add.iter().fold(0u64, |m, &c| m | cap_bit(c));
    let groups: Vec<String> = std::iter::once(plan.user.1)
        .chain(plan.group_add.iter().copied())
        .map(|g| g.to_string())
        .collect();
    format!(
        "Name:\tsleep\nUid:\t2001\t2001\t2001\t2001\nGid:\t2001\t2001\t2001\t2001\n\
         Groups:\t{} \nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
         CapEff:\t0000000000000000\nCapBnd:\t{caps:016x}\nCapAmb:\t0000000000000000\n\
         NoNewPrivs:\t1\nSeccomp:\t2\n",
        groups.join(" ")
    )
}

/// The host where nothing changed since the plan: every pinned source names its pinned file, and
/// the container sees it at its target.
fn honest_host(plan: &ContainerPlan) -> FakeHost {
    let mut host = FakeHost {
        stats: plan.pins.clone().into(),
        status: Some(good_status(plan)),
        ..Default::default()
    };
    for m in &plan.mounts {
        if let Some(pin) = plan.pins.get(&m.source) {
            host.in_root.insert(m.target.clone(), *pin);
        }
    }
    host
}

#[test]
fn the_plan_pins_every_user_resolved_source_and_nothing_else() {
    let p = plan();
    let pinned: Vec<&Path> = p.pins.keys().map(PathBuf::as_path).collect();
    assert_eq!(pinned, [Path::new(DATA), Path::new("/home/jdalice")]);
    assert_eq!(p.pins[Path::new(DATA)], FakeProbe::id_of(DATA));
}

#[test]
fn capability_bits_are_the_kernels() {
    assert_eq!(cap_bit(Capability::CHOWN), 1);
    assert_eq!(cap_bit(Capability::KILL), 1 << 5);
    assert_eq!(cap_bit(Capability::SYS_ADMIN), 1 << 21);
    assert_eq!(cap_bit(Capability::SYS_NICE), 1 << 23);
    assert_eq!(cap_bit(Capability::CHECKPOINT_RESTORE), 1 << 40);
}

#[test]
fn what_dockerd_stores_for_the_plan_passes() {
    let p = plan();
    assert_eq!(compare(&p, &stored(&p)), Vec::<String>::new());
    // Docker's own spellings of the same thing pass too.
    let mut e = stored(&p);
    e.cap_add = e.cap_add.iter().map(|c| c.replace("CAP_", "")).collect();
    e.cap_drop = vec!["all".into()];
    e.cap_add.reverse();
    e.mounts.reverse();
    assert_eq!(compare(&p, &e), Vec::<String>::new());
    // An anonymous volume the image declares is dockerd's own directory, not the host's.
    e.mounts.push(MountSeen {
        typ: "volume".into(),
        source: "/var/lib/docker/volumes/0123/_data".into(),
        destination: "/var/cache/app".into(),
        rw: true,
        propagation: String::new(),
    });
    assert_eq!(compare(&p, &e), Vec::<String>::new());
    assert_eq!(check_status(&p, &good_status(&p)), Vec::<String>::new());
}

/// Each change an authorization plugin or a daemon default could make, and the field it names.
#[test]
fn every_change_to_the_stored_container_is_found() {
    let p = plan();
    fn bind(source: &str, destination: &str, rw: bool) -> MountSeen {
        MountSeen {
            typ: "bind".into(),
            source: source.into(),
            destination: destination.into(),
            rw,
            propagation: "rprivate".into(),
        }
    }
    fn t(f: fn(&mut Effective)) -> fn(&mut Effective) {
        f
    }
    let cases: Vec<(&str, fn(&mut Effective))> = vec![
        ("User", t(|e| e.user = "0:0".into())),
        ("User", t(|e| e.user = "2001".into())),
        ("User", t(|e| e.user = "jdalice:jdalice".into())),
        (
            "WorkingDir",
            t(|e| e.working_dir = "/proc/self/fd/7".into()),
        ),
        ("GroupAdd", t(|e| e.group_add.push("0".into()))),
        ("GroupAdd", t(|e| e.group_add.push("docker".into()))),
        (
            "GroupAdd",
            t(|e| {
                e.group_add.pop();
            }),
        ),
        ("GroupAdd", t(|e| e.group_add.push("3001".into()))),
        ("CapAdd", t(|e| e.cap_add.push("CAP_SYS_ADMIN".into()))),
        ("CapAdd", t(|e| e.cap_add.push("ALL".into()))),
        ("CapAdd", t(|e| e.cap_add.push("CAP_NO_SUCH".into()))),
        ("CapDrop", t(|e| e.cap_drop.clear())),
        ("CapDrop", t(|e| e.cap_drop = vec!["NET_RAW".into()])),
        ("Privileged", t(|e| e.privileged = true)),
        ("Init", t(|e| e.init = false)),
        ("LogConfig.Type", t(|e| e.log_driver = "json-file".into())),
        ("SecurityOpt", t(|e| e.security_opt.clear())),
        (
            "SecurityOpt",
            t(|e| e.security_opt.push("no-new-privileges=false".into())),
        ),
        (
            "SecurityOpt",
            t(|e| e.security_opt.push("seccomp=unconfined".into())),
        ),
        (
            "SecurityOpt",
            t(|e| e.security_opt.push("apparmor:unconfined".into())),
        ),
        (
            "SecurityOpt",
            t(|e| e.security_opt.push("label=disable".into())),
        ),
        (
            "SecurityOpt",
            t(|e| e.security_opt.push("systempaths=unconfined".into())),
        ),
        (
            "SecurityOpt",
            t(|e| e.security_opt.push("no-new-privileges".into())),
        ),
        ("PidMode", t(|e| e.pid_mode = "host".into())),
        ("PidMode", t(|e| e.pid_mode = "container:victim".into())),
        ("UsernsMode", t(|e| e.userns_mode = "host".into())),
        ("UTSMode", t(|e| e.uts_mode = "host".into())),
        ("IpcMode", t(|e| e.ipc_mode = "host".into())),
        ("IpcMode", t(|e| e.ipc_mode = "container:victim".into())),
        ("NetworkMode", t(|e| e.network_mode = "host".into())),
        (
            "NetworkMode",
            t(|e| e.network_mode = "container:victim".into()),
        ),
        (
            "CgroupParent",
            t(|e| e.cgroup_parent = "/lsf/other_job".into()),
        ),
        ("Binds", t(|e| e.binds = vec!["/:/host".into()])),
        ("VolumesFrom", t(|e| e.volumes_from = vec!["victim".into()])),
        (
            "DeviceCgroupRules",
            t(|e| e.device_cgroup_rules = vec!["b 8:* rwm".into()]),
        ),
        (
            "Sysctls",
            t(|e| {
                e.sysctls
                    .insert("kernel.shm_rmid_forced".into(), "0".into());
            }),
        ),
        ("MaskedPaths", t(|e| e.masked_paths.clear())),
        ("ReadonlyPaths", t(|e| e.readonly_paths.clear())),
        ("OomScoreAdj", t(|e| e.oom_score_adj = -1000)),
        ("OomKillDisable", t(|e| e.oom_kill_disable = true)),
        ("Memory", t(|e| e.memory = 0)),
        ("MemorySwap", t(|e| e.memory_swap = -1)),
        ("PidsLimit", t(|e| e.pids_limit = -1)),
        // The image's own HEALTHCHECK, or none said at all (dockerd then runs the image's).
        (
            "Healthcheck.Test",
            t(|e| e.healthcheck = vec!["CMD-SHELL".into(), "id".into()]),
        ),
        ("Healthcheck.Test", t(|e| e.healthcheck.clear())),
        ("RestartPolicy", t(|e| e.restart_policy = "always".into())),
        (
            "RestartPolicy",
            t(|e| e.restart_policy = "on-failure".into()),
        ),
        ("Ulimits", t(|e| e.ulimits.clear())),
        ("Ulimits", t(|e| e.ulimits[0].2 = 7)),
        ("Ulimits", t(|e| e.ulimits.push(("rtprio".into(), 99, 99)))),
        (
            "Devices",
            t(|e| {
                e.devices.push(DeviceSeen {
                    on_host: "/dev/sda".into(),
                    in_container: "/dev/sda".into(),
                    permissions: "rwm".into(),
                })
            }),
        ),
        (
            "Devices",
            t(|e| e.devices[0].in_container = "/dev/mem".into()),
        ),
        ("Devices", t(|e| e.devices.clear())),
        ("DeviceRequests", t(|e| e.device_requests = vec![vec![]])),
        (
            "DeviceRequests",
            t(|e| e.device_requests[0].push("0".into())),
        ),
        (
            "mount /etc -> /host (rw) is not in the plan",
            t(|e| e.mounts.push(bind("/etc", "/host", true))),
        ),
        (
            "mount /var/run/docker.sock -> /var/run/docker.sock (rw) is not in the plan",
            t(|e| {
                e.mounts
                    .push(bind("/var/run/docker.sock", "/var/run/docker.sock", true))
            }),
        ),
        (
            "mount /gpfs/lab/data -> /data (rw) is not in the plan",
            t(|e| {
                for m in e.mounts.iter_mut().filter(|m| m.destination == "/data") {
                    m.rw = true;
                }
            }),
        ),
        (
            "mount /etc -> /data (ro) is not in the plan",
            t(|e| {
                for m in e.mounts.iter_mut().filter(|m| m.destination == "/data") {
                    m.source = "/etc".into();
                }
            }),
        ),
        (
            "propagation \"rshared\"",
            t(|e| {
                for m in e.mounts.iter_mut().filter(|m| m.destination == "/data") {
                    m.propagation = "rshared".into();
                }
            }),
        ),
        (
            "mount /gpfs/lab/data -> /data is missing",
            t(|e| e.mounts.retain(|m| m.destination != "/data")),
        ),
        (
            "passwd -> /etc/passwd is missing",
            t(|e| e.mounts.retain(|m| m.destination != "/etc/passwd")),
        ),
        (
            "of type \"volume\"",
            t(|e| {
                for m in e.mounts.iter_mut().filter(|m| m.destination == "/data") {
                    m.typ = "volume".into();
                }
            }),
        ),
        (
            "Tmpfs is",
            t(|e| {
                e.tmpfs
                    .insert("/tmp".into(), "rw,exec,size=1073741824,mode=1777".into());
            }),
        ),
        (
            "of type \"tmpfs\"",
            t(|e| {
                e.mounts.push(MountSeen {
                    typ: "tmpfs".into(),
                    destination: "/x".into(),
                    ..Default::default()
                })
            }),
        ),
    ];
    let count = cases.len();
    for (want, tamper) in cases {
        let mut e = stored(&p);
        tamper(&mut e);
        let found = compare(&p, &e);
        assert!(
            found.iter().any(|f| f.contains(want)),
            "{want}: found {found:?}"
        );
    }
    assert!(count >= 50, "{count} cases");
}

#[test]
fn every_credential_the_plan_does_not_allow_is_found() {
    let p = plan();
    let good = good_status(&p);
    let sys_admin = format!("{:016x}", cap_bit(Capability::SYS_ADMIN));
    let cases: Vec<(&str, String, &str)> = vec![
        ("Uid:", "Uid:\t2001\t0\t2001\t2001".into(), "the job's Uid"),
        ("Uid:", "Uid:\t2001\t2001\t0\t2001".into(), "the job's Uid"),
        ("Uid:", "Uid:\t0\t0\t0\t0".into(), "the job's Uid"),
        ("Gid:", "Gid:\t2001\t2001\t2001\t0".into(), "the job's Gid"),
        ("Groups:", "Groups:\t0 2001 3001 3002".into(), "extra [0]"),
        ("Groups:", "Groups:\t2001 3001".into(), "missing [3002]"),
        ("Groups:", "Groups:\tx".into(), "Groups are unreadable"),
        ("CapEff:", format!("CapEff:\t{sys_admin}"), "CapEff"),
        ("CapPrm:", "CapPrm:\t0000000000000001\n".into(), ""),
        ("CapPrm:", format!("CapPrm:\t{sys_admin}"), "CapPrm"),
        ("CapInh:", format!("CapInh:\t{sys_admin}"), "CapInh"),
        ("CapAmb:", format!("CapAmb:\t{sys_admin}"), "CapAmb"),
        ("CapBnd:", "CapBnd:\t000001ffffffffff".into(), "CapBnd"),
        ("CapBnd:", "CapBnd:\t0000000000000000".into(), "CapBnd"),
        ("NoNewPrivs:", "NoNewPrivs:\t0".into(), "NoNewPrivs"),
        ("NoNewPrivs:", String::new(), "NoNewPrivs"),
    ];
    for (field, line, want) in cases {
        let status: String = good
            .lines()
            .map(|l| {
                if l.starts_with(field) {
                    line.as_str()
                } else {
                    l
                }
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let found = check_status(&p, &status);
        if want.is_empty() {
            // CHOWN is in the allowlist: permitted, so not a finding.
            assert_eq!(found, Vec::<String>::new(), "{line}");
        } else {
            assert!(
                found.len() == 1 && found[0].contains(want),
                "{line}: {found:?}"
            );
        }
    }
}

// ------------------------------------------------------------------- through the engine --

struct Ran {
    result: Result<Outcome, EngineError>,
    calls: Vec<String>,
    stdout: Vec<u8>,
}

/// Runs `plan`; a job that is still running after 300 ms gets a TERM (passed on to the fake).
async fn run_on(d: &FakeDaemon, plan: &ContainerPlan, host: &FakeHost) -> Ran {
    let state = plan.staging.dir.parent().unwrap().to_path_buf();
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
        host,
    };
    let (sig_tx, mut sig_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = sig_tx.send(Sig::Term).await;
        std::future::pending::<()>().await;
    });
    let (_in_tx, in_rx) = mpsc::channel(1);
    let stdout = SharedBuf::default();
    let io = Io {
        stdout: Box::new(stdout.clone()),
        stderr: Box::new(SharedBuf::default()),
        stdout_pipe: None,
        stdin: in_rx,
        terminal: None,
    };
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
    }
}

/// A root-owned private state dir (the engine refuses others), or `None` when not root.
fn state_dir() -> tempfile::TempDir {
    crate::needs_root();
    tempfile::tempdir().unwrap()
}

fn names(calls: &[String]) -> Vec<&str> {
    calls.iter().map(|c| c.split(' ').next().unwrap()).collect()
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn an_honest_daemon_and_host_run_the_job() {
    let dir = state_dir();
    let p = plan_in(&dir.path().join("state"));
    let mut d = FakeDaemon::default();
    d.output = vec![chunk_out("ran\n")];
    // Still running when checked; it ends with the TERM.
    d.exit = None;
    let ran = run_on(&d, &p, &honest_host(&p)).await;
    assert_eq!(ran.result.unwrap().code, 143);
    assert_eq!(ran.stdout, b"ran\n");
    assert_eq!(
        names(&ran.calls),
        [
            "image_exists",
            "create",
            "inspect",
            "create_inert",
            // /etc, /home and /gpfs: not in the fake image, so nothing below them is asked.
            "stat_path",
            "stat_path",
            "stat_path",
            "read_file",
            "attach",
            "start",
            "inspect",
            // The image-reading container goes while the job starts.
            "remove",
            "wait",
            "kill",
            "inspect",
            "remove"
        ]
    );
}

/// dockerd made something else than was asked: the job never starts, the container is removed,
/// and it is the node's problem (75), not the job's.
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_container_changed_by_the_daemon_is_removed_before_it_starts() {
    let dir = state_dir();
    let p = plan_in(&dir.path().join("state"));
    let tampers: [(fn(&mut Effective), &str); 3] = [
        (|e| e.privileged = true, "Privileged is true"),
        (|e| e.user = "0:0".into(), "User is \"0:0\""),
        (
            |e| e.binds = vec!["/var/run/docker.sock:/var/run/docker.sock".into()],
            "Binds",
        ),
    ];
    for (tamper, want) in tampers {
        let mut d = FakeDaemon::default();
        d.tamper = Some(tamper);
        let ran = run_on(&d, &p, &honest_host(&p)).await;
        let e = ran.result.unwrap_err();
        assert_eq!(e.blame(), Blame::Infrastructure, "{e}");
        let text = e.to_string();
        assert!(
            text.contains("did not make the container jobdock asked for") && text.contains(want),
            "{text}"
        );
        let calls = names(&ran.calls);
        assert!(!calls.contains(&"start"), "{calls:?}");
        assert_eq!(ran.calls.last().unwrap(), &format!("remove {ID}"));
    }
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn an_image_workdir_under_proc_is_refused_when_the_plan_sets_none() {
    let dir = state_dir();
    let mut p = plan_in(&dir.path().join("state"));
    p.working_dir = None;
    for workdir in ["/proc/self/fd/7", "/proc", "/sys/kernel", "/dev/shm"] {
        let mut d = FakeDaemon::default();
        // The image's WORKDIR, which dockerd uses when the create request has none.
        d.tamper = Some(match workdir {
            "/proc/self/fd/7" => |e| e.working_dir = "/proc/self/fd/7".into(),
            "/proc" => |e| e.working_dir = "/proc".into(),
            "/sys/kernel" => |e| e.working_dir = "/sys/kernel".into(),
            _ => |e| e.working_dir = "/dev/shm".into(),
        });
        let ran = run_on(&d, &p, &honest_host(&p)).await;
        let e = ran.result.unwrap_err();
        assert_eq!(e.blame(), Blame::BadRequest, "{e}");
        assert!(e.to_string().contains(&format!("WORKDIR {workdir}")), "{e}");
        assert!(!names(&ran.calls).contains(&"start"));
        assert!(names(&ran.calls).contains(&"remove"));
    }
    // A harmless one is the image's business.
    let mut d = FakeDaemon::default();
    d.tamper = Some(|e| e.working_dir = "/work".into());
    let ran = run_on(&d, &p, &honest_host(&p)).await;
    assert!(ran.result.is_ok(), "{:?}", ran.result);
}

/// The race this closes: a directory the user's probe checked is replaced (by a symlink to /etc,
/// or anything else) between the plan and the start. Before it is staged: nothing is created.
/// After (dockerd already has the pinned directory, so the swap gains nothing): refused all the
/// same, before start, and the container removed. Both are refusals of the job (64).
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_mount_source_swapped_after_the_check_stops_the_job_before_it_starts() {
    let dir = state_dir();
    let p = plan_in(&dir.path().join("state"));
    let etc = FileId { dev: 42, ino: 1 };
    for now in [Some(etc), None] {
        let host = honest_host(&p);
        match now {
            Some(id) => host.stats.borrow_mut().insert(DATA.into(), id),
            None => host.stats.borrow_mut().remove(Path::new(DATA)),
        };
        let d = FakeDaemon::default();
        let ran = run_on(&d, &p, &host).await;
        let e = ran.result.unwrap_err();
        assert_eq!(e.blame(), Blame::BadRequest, "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("mount source {DATA}:")) && text.contains("not run"),
            "{text}"
        );
        assert!(!names(&ran.calls).contains(&"create"), "{:?}", ran.calls);
        assert!(host.staged.borrow().is_empty(), "a staging mount was left");
    }

    let mut host = honest_host(&p);
    host.swap_after_bind = Some((DATA.into(), etc));
    let d = FakeDaemon::default();
    let ran = run_on(&d, &p, &host).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.blame(), Blame::BadRequest, "{e}");
    assert!(e.to_string().contains("was it replaced"), "{e}");
    assert!(!names(&ran.calls).contains(&"start"), "{:?}", ran.calls);
    assert_eq!(ran.calls.last().unwrap(), &format!("remove {ID}"));
    assert!(host.staged.borrow().is_empty(), "a staging mount was left");
}

/// dockerd never sees the user's path, only the staging mount of the directory checked; the
/// staging mounts are gone once the job runs, and nothing is left in the state directory.
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn dockerd_gets_the_pinned_directory_not_the_users_path() {
    let dir = state_dir();
    let state = dir.path().join("state");
    let p = plan_in(&state);
    let host = honest_host(&p);
    let mut d = FakeDaemon::default();
    d.exit = None;
    let ran = run_on(&d, &p, &host).await;
    assert_eq!(ran.result.unwrap().code, 143);
    let created = d.created_plan().unwrap();
    let sources: Vec<&Path> = created.mounts.iter().map(|m| m.source.as_path()).collect();
    assert!(!sources.contains(&Path::new(DATA)), "{sources:?}");
    let data = created
        .mounts
        .iter()
        .find(|m| m.target == Path::new("/data"))
        .unwrap();
    assert!(data.source.starts_with(state.join("mounts")), "{data:?}");
    assert_eq!(created.pins[&data.source], p.pins[Path::new(DATA)]);
    assert!(host.staged.borrow().is_empty(), "staging mounts left");
    assert!(!state.join("mounts").exists());
}

/// After start: the job runs with credentials the plan does not allow (a runtime that ignored
/// part of the request). It is killed and removed, and nothing it printed is passed on.
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_job_running_with_other_credentials_is_killed_and_its_output_dropped() {
    let dir = state_dir();
    let p = plan_in(&dir.path().join("state"));
    let mut host = honest_host(&p);
    host.status = Some(good_status(&p).replace("NoNewPrivs:\t1", "NoNewPrivs:\t0"));
    let mut d = FakeDaemon::default();
    d.output = vec![chunk_out("secret\n")];
    d.exit = None;
    let ran = run_on(&d, &p, &host).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.blame(), Blame::Infrastructure, "{e}");
    assert!(e.to_string().contains("NoNewPrivs"), "{e}");
    let calls = names(&ran.calls);
    let started = calls.iter().position(|c| *c == "start").unwrap();
    assert!(calls[started..].contains(&"remove"), "{calls:?}");
    assert!(!calls.contains(&"wait"), "{calls:?}");
    assert_eq!(ran.stdout, b"", "the job's output must not get out");
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_container_that_got_another_directory_is_killed() {
    let dir = state_dir();
    let p = plan_in(&dir.path().join("state"));
    let etc = FileId { dev: 42, ino: 1 };
    // The host path still names the checked directory, the container has another one: not the
    // user's doing (another mount namespace, a rewritten request).
    let mut host = honest_host(&p);
    host.in_root.insert("/data".into(), etc);
    let mut d = FakeDaemon::default();
    d.exit = None;
    let e = run_on(&d, &p, &host).await.result.unwrap_err();
    assert_eq!(e.blame(), Blame::Infrastructure, "{e}");
    assert!(e.to_string().contains("mount namespace"), "{e}");
    assert!(d.calls().last().unwrap().starts_with("remove"));
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_job_that_ended_before_the_check_is_not_a_failure() {
    let dir = state_dir();
    let p = plan_in(&dir.path().join("state"));
    let mut host = honest_host(&p);
    host.status = None;
    let mut d = FakeDaemon::default();
    d.output = vec![chunk_out("done\n")];
    d.exit = Some(0);
    let ran = run_on(&d, &p, &host).await;
    assert_eq!(ran.result.unwrap().code, 0);
    assert_eq!(ran.stdout, b"done\n");
}

#[test]
fn image_groups_named_like_the_jobs_gids_are_found() {
    let gids = [3001, 3002];
    let cases: [(&str, Option<(u32, &str, i64)>); 9] = [
        ("root:x:0:\njdproj:x:3001:alice\n", None),
        ("3001:x:3001:\n", None),
        ("3001:x:0:jdalice\n", Some((3001, "3001", 0))),
        ("root:x:0:\n  3002:x:6:  \n", Some((3002, "3002", 6))),
        ("3001:x:3002:\n", Some((3001, "3001", 3002))),
        // runc reads a gid it cannot parse as 0.
        ("3001:x:zero:\n", Some((3001, "3001", 0))),
        ("3001:x\n", Some((3001, "3001", 0))),
        ("# 3001:x:0:\n", None),
        ("30011:x:0:\n03001:x:0:\n", None),
    ];
    for (text, want) in cases {
        let found = conflicting_group(text.as_bytes(), &gids);
        let found = found.as_ref().map(|(g, n, o)| (*g, n.as_str(), *o));
        assert_eq!(found, want, "{text:?}");
    }
}

/// A hostile image's /etc/group would give the job root's group for one of its own (dockerd reads
/// the image's file, not the one jobdock mounts): refused before start, as a refusal of the job.
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn an_image_group_file_that_would_remap_the_jobs_groups_is_refused() {
    let dir = state_dir();
    let p = plan_in(&dir.path().join("state"));
    let files = [
        (
            ContainerFile::Regular(b"root:x:0:\n3001:x:0:jdalice\n".to_vec()),
            "group named \"3001\" with gid 0",
        ),
        (ContainerFile::NotRegular, "not a regular file"),
        (
            ContainerFile::Symlink("/etc/group".into()),
            "chain of symlinks",
        ),
        (ContainerFile::TooLarge, "larger than"),
    ];
    for (file, want) in files {
        let mut d = FakeDaemon::default();
        d.image_files.insert("/etc/group", file);
        let ran = run_on(&d, &p, &honest_host(&p)).await;
        let e = ran.result.unwrap_err();
        assert_eq!(e.blame(), Blame::BadRequest, "{e}");
        assert!(e.to_string().contains(want), "{e}");
        assert!(!names(&ran.calls).contains(&"start"), "{:?}", ran.calls);
        // Both the inert container and the job's are removed.
        assert!(
            ran.calls
                .contains(&format!("remove {}", crate::engine::fake::INERT))
        );
        assert_eq!(ran.calls.last().unwrap(), &format!("remove {ID}"));
    }
    // A symlink is followed, inside the container.
    let mut d = FakeDaemon::default();
    d.image_files
        .insert("/etc/group", ContainerFile::Symlink("../data/grp".into()));
    d.image_files
        .insert("/data/grp", ContainerFile::Regular(b"3002:x:0:\n".to_vec()));
    let e = run_on(&d, &p, &honest_host(&p)).await.result.unwrap_err();
    assert!(e.to_string().contains("named \"3002\" with gid 0"), "{e}");
    // An ordinary one, or none at all, is fine.
    let mut d = FakeDaemon::default();
    d.image_files.insert(
        "/etc/group",
        ContainerFile::Regular(b"root:x:0:\nusers:x:100:\n".to_vec()),
    );
    assert!(run_on(&d, &p, &honest_host(&p)).await.result.is_ok());
}

// ---- issue 12.4: private mount namespaces ------------------------------------------------------

/// The staging mounts of `p` (with its state directory), as `pin` names them.
fn staging_paths_of(p: &ContainerPlan) -> Vec<PathBuf> {
    let state = p.staging.dir.parent().unwrap();
    crate::engine::pin::staging_paths(p, state)
        .into_values()
        .collect()
}

/// The bug of issue 12.4: the staging mounts exist where jobdock is (a job's private mount
/// namespace) but dockerd sees the empty directories under them. Caught after create, before the
/// job can run with an empty home however quickly it would end; the node's problem (78).
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_staging_mount_dockerd_does_not_see_stops_the_job_before_it_starts() {
    let dir = state_dir();
    let p = plan_in(&dir.path().join("state"));
    let empty = FileId { dev: 7, ino: 99 };
    let mut host = honest_host(&p);
    let staged = staging_paths_of(&p);
    assert_eq!(staged.len(), 2, "{staged:?}");
    for at in &staged {
        host.daemon_sees.insert(at.clone(), empty);
    }
    let mut d = FakeDaemon::default();
    d.exit = Some(0);
    let ran = run_on(&d, &p, &host).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.blame(), Blame::Config, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("job_container/tmpfs") && text.contains("not run"),
        "{text}"
    );
    let calls = names(&ran.calls);
    assert!(calls.contains(&"create"), "{calls:?}");
    assert!(!calls.contains(&"start"), "{calls:?}");
    assert_eq!(ran.calls.last().unwrap(), &format!("remove {ID}"));
    // Detached where they were made, all of them.
    let mut unbound = host.unbound.borrow().clone();
    unbound.sort();
    assert_eq!(unbound, staged);
}

/// Where jobdock cannot mount into dockerd's namespace (a kernel without open_tree, dockerd's
/// namespace unknown), nothing is created: refused before create, for the admin (78).
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_daemon_namespace_jobdock_cannot_reach_is_refused_before_create() {
    let dir = state_dir();
    let p = plan_in(&dir.path().join("state"));
    let mut host = honest_host(&p);
    host.namespace_error = Some(
        crate::engine::mountns::decide(
            Ok(FileId { dev: 4, ino: 1 }),
            Ok(FileId { dev: 4, ino: 2 }),
            Err("this kernel has no open_tree".into()),
        )
        .unwrap_err(),
    );
    let d = FakeDaemon::default();
    let ran = run_on(&d, &p, &host).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.blame(), Blame::Config, "{e}");
    assert!(
        e.to_string().contains("job_container/tmpfs") && e.to_string().contains("open_tree"),
        "{e}"
    );
    assert!(!names(&ran.calls).contains(&"create"), "{:?}", ran.calls);
    assert!(host.staged.borrow().is_empty(), "a staging mount was left");
}

/// The identity files go to dockerd by path: a staging directory that is another directory in
/// dockerd's namespace (a state_dir in the job's private /tmp) is refused before create.
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_staging_directory_that_is_another_one_to_dockerd_is_refused_before_create() {
    let dir = state_dir();
    let p = plan_in(&dir.path().join("state"));
    let mut host = honest_host(&p);
    host.daemon_sees
        .insert(p.staging.dir.clone(), FileId { dev: 9, ino: 9 });
    let d = FakeDaemon::default();
    let ran = run_on(&d, &p, &host).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.blame(), Blame::Config, "{e}");
    assert!(e.to_string().contains("engine.state_dir"), "{e}");
    assert!(!names(&ran.calls).contains(&"create"), "{:?}", ran.calls);
}

// ---- issue 11.2: image symlinks at mount targets -------------------------------------------------

/// An image whose paths would turn a planned mount into one somewhere else (and make runc create
/// files in the user's host directory): refused after create, before start and before the
/// entrypoint check (dockerd mounts the container's mounts to answer that one), naming the image,
/// the target and the symlink; both containers removed.
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn an_image_symlink_at_a_mount_point_is_refused_before_start() {
    use crate::engine::daemon::PathKind::{Directory, Regular, Symlink};
    let dir = state_dir();
    let mut p = plan_in(&dir.path().join("state"));
    p.entrypoint = Some(vec!["/bin/sh".into()]);
    type Image = Vec<(&'static str, crate::engine::daemon::PathKind)>;
    let cases: [(&str, Image, &[&str]); 7] = [
        (
            "the volume's target is a symlink to /etc",
            vec![("/data", Symlink("/etc".into()))],
            &["/data is a symbolic link to /etc", "mount at /data"],
        ),
        (
            "/etc itself, on the way to /etc/passwd",
            vec![("/etc", Symlink("/data".into()))],
            &["/etc is a symbolic link to /data", "mount at /etc/passwd"],
        ),
        (
            "a directory above the home",
            vec![("/home", Symlink("gpfs".into()))],
            &["/home is a symbolic link to gpfs", "mount at /home/jdalice"],
        ),
        (
            "a file where a directory is mounted",
            vec![("/data", Regular)],
            &["/data is a regular file", "needs a directory"],
        ),
        (
            "a directory where a file is mounted",
            vec![("/etc", Directory), ("/etc/passwd", Directory)],
            &["/etc/passwd is a directory", "needs a file"],
        ),
        (
            "a file on the way",
            vec![("/home", Regular)],
            &["/home is a regular file", "needs a directory"],
        ),
        (
            "dockerd's /etc/hosts leading into the volume",
            vec![
                ("/etc", Directory),
                ("/etc/hosts", Symlink("../data/hosts".into())),
            ],
            &[
                "/etc/hosts leads to /data/hosts",
                "inside the mount at /data",
            ],
        ),
    ];
    for (name, image, want) in cases {
        let mut d = FakeDaemon::default();
        d.image_paths = image.into_iter().collect();
        let ran = run_on(&d, &p, &honest_host(&p)).await;
        let e = ran.result.unwrap_err();
        assert_eq!(e.blame(), Blame::BadRequest, "{name}: {e}");
        let text = e.to_string();
        assert!(
            text.starts_with("image jobdock-test/busybox"),
            "{name}: {text}"
        );
        for w in want {
            assert!(text.contains(w), "{name}: {text}");
        }
        let calls = names(&ran.calls);
        assert!(!calls.contains(&"start"), "{name}: {calls:?}");
        assert!(!calls.contains(&"path_exists"), "{name}: {calls:?}");
        assert!(
            ran.calls
                .contains(&format!("remove {}", crate::engine::fake::INERT)),
            "{name}: {calls:?}"
        );
        assert_eq!(ran.calls.last().unwrap(), &format!("remove {ID}"), "{name}");
    }
}

/// What an ordinary image has at the mount points passes, each path asked once, and a symlink of
/// dockerd's own files that leads elsewhere (`/etc/resolv.conf -> ../run/...`) is the image's
/// business.
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn ordinary_mount_points_pass_and_each_path_is_asked_once() {
    use crate::engine::daemon::PathKind::{Directory, Regular, Symlink};
    let dir = state_dir();
    let p = plan_in(&dir.path().join("state"));
    let mut d = FakeDaemon::default();
    d.image_paths = [
        ("/etc", Directory),
        ("/etc/passwd", Regular),
        ("/etc/group", Regular),
        ("/etc/hosts", Regular),
        (
            "/etc/resolv.conf",
            Symlink("../run/systemd/resolve/stub-resolv.conf".into()),
        ),
        ("/run", Directory),
        ("/home", Directory),
        ("/data", Directory),
    ]
    .into_iter()
    .collect();
    let ran = run_on(&d, &p, &honest_host(&p)).await;
    assert!(ran.result.is_ok(), "{:?}", ran.result);
    let asked: Vec<&String> = ran
        .calls
        .iter()
        .filter(|c| c.starts_with("stat_path"))
        .collect();
    let unique: std::collections::BTreeSet<&&String> = asked.iter().collect();
    assert_eq!(asked.len(), unique.len(), "{asked:?}");
    assert!(asked.contains(&&"stat_path /etc".to_string()), "{asked:?}");
    // Nothing below a missing directory is asked.
    assert!(
        !asked
            .iter()
            .any(|c| c.starts_with("stat_path /run/systemd/")),
        "{asked:?}"
    );
}

// ---- issue 15.1: image verdicts kept per image id -------------------------------------------------

fn full_id_a(e: &mut Effective) {
    e.image = format!("sha256:{}", "a".repeat(64));
}

fn full_id_b(e: &mut Effective) {
    e.image = format!("sha256:{}", "b".repeat(64));
}

/// A pass of the image checks is kept for the image id the container got: the next job of that
/// id reads nothing from the image, one of another id does; a refusal is not kept; and the
/// image-reading container is removed after the job's start.
#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_passed_image_check_is_kept_for_its_image_id_and_a_refusal_is_not() {
    let dir = state_dir();
    let p = plan_in(&dir.path().join("state"));
    let hostile = ContainerFile::Regular(b"3001:x:0:\n".to_vec());
    let run_with = |tamper: fn(&mut Effective), group: Option<ContainerFile>| {
        let mut d = FakeDaemon::default();
        d.tamper = Some(tamper);
        if let Some(g) = group {
            d.image_files.insert("/etc/group", g);
        }
        d
    };
    // Refused: nothing kept, so the same image is read (and refused) again.
    for _ in 0..2 {
        let d = run_with(full_id_a, Some(hostile.clone()));
        let ran = run_on(&d, &p, &honest_host(&p)).await;
        assert!(ran.result.is_err());
        assert!(
            names(&ran.calls).contains(&"create_inert"),
            "{:?}",
            ran.calls
        );
    }
    // Passed: read once, then not again for that id; another id is read.
    let d = run_with(full_id_a, None);
    let ran = run_on(&d, &p, &honest_host(&p)).await;
    assert!(ran.result.is_ok(), "{:?}", ran.result);
    let calls = names(&ran.calls);
    let at = |c: &str| calls.iter().position(|n| *n == c).unwrap();
    let inert_removed = ran
        .calls
        .iter()
        .position(|c| *c == format!("remove {}", crate::engine::fake::INERT))
        .unwrap();
    assert!(at("start") < inert_removed, "{:?}", ran.calls);
    for _ in 0..2 {
        let d = run_with(full_id_a, None);
        let ran = run_on(&d, &p, &honest_host(&p)).await;
        assert!(ran.result.is_ok(), "{:?}", ran.result);
        let calls = names(&ran.calls);
        assert!(!calls.contains(&"create_inert"), "{calls:?}");
        assert!(!calls.contains(&"stat_path") && !calls.contains(&"read_file"));
    }
    // The kept pass is not the hostile image's, though it has the same mounts and groups.
    let d = run_with(full_id_b, Some(hostile));
    let ran = run_on(&d, &p, &honest_host(&p)).await;
    assert!(ran.result.is_err());
    assert!(names(&ran.calls).contains(&"create_inert"));
    // Nor the key of a job with other groups.
    let mut other = p.clone();
    other.group_add.push(4242);
    let d = run_with(full_id_a, None);
    let ran = run_on(&d, &other, &honest_host(&other)).await;
    assert!(
        names(&ran.calls).contains(&"create_inert"),
        "{:?}",
        ran.calls
    );
}
