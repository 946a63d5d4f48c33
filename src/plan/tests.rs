//! Table-driven tests of the planner: every override's accepted and refused forms, the hardened
//! defaults, and the agreement of the two renderings.

use std::path::Path;

use super::*;
use crate::config::SiteConfig;
use crate::identity::fake::FakeDb;
use crate::job::{self, env_of};
use crate::overrides::env as envpolicy;
use crate::overrides::paths::{self, Strictness};
use crate::probe::Kind;
use crate::probe::fake::FakeProbe;

fn alice() -> Identity {
    identity::resolve(
        Caller {
            real_uid: 2001,
            real_gid: 2001,
        },
        None,
        &JobContext::default(),
        &Env::new(),
        &FakeDb::site(),
    )
    .unwrap()
}

/// The shipped example config (`wrapper.toml.example`).
/// The shipped example config, but with output through attach: these tests are about all but the
/// output path, whose own tests (`fifo_output_*`, the engine's FIFO tests) ask for the FIFOs.
pub(crate) fn site() -> SiteConfig {
    let mut site = SiteConfig::parse(include_str!("../../wrapper.toml.example")).unwrap();
    assert_eq!(
        site.engine.output,
        crate::config::OutputPath::Fifo,
        "the example's"
    );
    site.engine.output = crate::config::OutputPath::Attach;
    site
}

/// The host as alice sees it: her home, a project on GPFS, a job tmpdir, and some traps.
fn host() -> FakeProbe {
    let mut p = FakeProbe::default()
        .dir("/home/alice")
        .dir("/home/alice/work")
        .dir("/home/alice/.lsbatch")
        .dir("/gpfs")
        .dir("/gpfs/lab")
        .dir("/gpfs/lab/data")
        .dir("/scratch")
        .dir("/scratch/alice")
        .dir_owned_by("/tmp/212.tmpdir", 2001)
        .dir_owned_by("/tmp/213.tmpdir", 2002)
        .dir("/tmp/212.tmpdir/run")
        .dir("/scratch/alice/run")
        .dir("/usr")
        .dir("/usr/local/src")
        .dir("/opt/lsf")
        .link("/gpfs/lab/escape", "/etc", Kind::Dir)
        .link("/gpfs/lab/docker", "/var/lib/docker", Kind::Dir)
        .link("/gpfs/lab/to-scratch", "/scratch/alice", Kind::Dir)
        .link("/gpfs/lab/to-home", "/home/alice", Kind::Dir)
        .file("/gpfs/lab/file.txt", "x")
        .file(
            "/home/alice/env.list",
            "# mine\nOMP_NUM_THREADS=8\nMODEL=/gpfs/lab/model\n",
        )
        .file("/home/alice/bad.env", "HOME=/root\n")
        .file("/home/alice/bare.env", "AWS_SECRET_ACCESS_KEY\n")
        .file(
            "/home/alice/hosts",
            "db.example:10.0.0.5\n# comment\n\nlicense:10.0.0.6\n",
        )
        .file("/home/alice/badhosts", "db.example 10.0.0.5\n")
        // Slurm's PMIx client directories (spmix_appdir_<uid>_<job>.<step>) and the files that
        // say where they are.
        .file(
            "/etc/slurm/slurm.conf",
            "ClusterName=c\ntmpfs = /var/tmp/%n # per node\n",
        )
        .file("/etc/slurm-b/slurm.conf", "TmpFS=/var/tmp/%n\n")
        .file("/etc/slurm-b/mpi.conf", "PMIxCliTmpDirBase=/var/pmix\n")
        .dir_owned_by("/var/tmp/n1/spmix_appdir_2001_77.0", 2001)
        .dir_owned_by("/var/tmp/n1/spmix_appdir_2001_78.0", 2002)
        .dir_owned_by("/var/pmix/spmix_appdir_2001_77.0", 2001)
        .dir_owned_by("/gpfs/lab/spmix_appdir_2001_77.0", 2001)
        .dir_owned_by("/tmp/spmix_appdir_2001_77.0", 2001);
    p.devices.insert(
        "/dev/infiniband/*".into(),
        vec![
            "/dev/infiniband/rdma_cm".into(),
            "/dev/infiniband/uverbs0".into(),
        ],
    );
    p
}

/// A usual job's limits: open files 1024 of 1048576, processes and stack unlimited but for the
/// stack's soft 8 MiB, no core files unless asked for, 64 KiB of locked memory.
const JOB_RLIMITS: &[Ulimit] = &[
    Ulimit {
        name: "nofile",
        soft: 1024,
        hard: 1_048_576,
    },
    Ulimit {
        name: "nproc",
        soft: -1,
        hard: -1,
    },
    Ulimit {
        name: "stack",
        soft: 8 << 20,
        hard: -1,
    },
    Ulimit {
        name: "core",
        soft: 0,
        hard: -1,
    },
    Ulimit {
        name: "memlock",
        soft: 65536,
        hard: 65536,
    },
];

fn snap(env: &[(&str, &str)]) -> Snapshot {
    Snapshot {
        env: env_of(env),
        cwd: Some("/home/alice/work".into()),
        caller: Caller {
            real_uid: 2001,
            real_gid: 2001,
        },
        pid: 4242,
        hostname: "node1.cluster".into(),
        host_cpus: 64,
        stdin_is_tty: false,
        token: "0123456789abcdef01234567".into(),
        cgroup: job_cgroup(env),
        cgroup_memory_limit: None,
        cpus_allowed: None,
        cgroup_cpus: None,
        rlimits: JOB_RLIMITS.to_vec(),
        exe: Some(OwnBinary {
            path: "/usr/local/bin/jobdock".into(),
            libraries: vec![
                "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1".into(),
                "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into(),
            ],
        }),
    }
}

/// The cgroup the scheduler puts the job the environment names in (jobdock runs in its job).
fn job_cgroup(env: &[(&str, &str)]) -> Option<crate::job::cgroup::JobCgroup> {
    let var = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let line = match (var("SLURM_JOB_ID"), var("LSB_JOBID")) {
        (Some(id), None) => format!("4:memory:/slurm_vm/uid_2001/job_{id}/step_0/task_0\n"),
        (None, Some(id)) => format!(
            "4:memory:/lsf/cluster1/job.{id}.{}.1700000000\n",
            var("LSB_JOBINDEX").unwrap_or("0")
        ),
        _ => return None,
    };
    crate::job::cgroup::JobCgroup::parse(&line)
}

/// The job context as `app` makes it: the environment's, confirmed by the snapshot's cgroup.
fn context(s: &Snapshot) -> Result<JobContext, crate::job::JobError> {
    job::confirm(
        job::from_env(&s.env, s.cwd.clone())?,
        s.cgroup.as_ref(),
        s.caller.is_root(),
    )
}

const LSF_JOB: &[(&str, &str)] = &[
    ("LSB_JOBID", "212"),
    ("LSB_JOBINDEX", "0"),
    ("LSB_JOBFILENAME", "/home/alice/.lsbatch/1700000000.212"),
    ("LSB_MCPU_HOSTS", "node1 2 "),
    ("LS_SUBCWD", "/home/alice/work"),
    ("LSB_CONTAINER_IMAGE", "alpine"),
    ("HOME", "/home/alice"),
    ("USER", "alice"),
    ("__LSF_JOB_TMPDIR__", "/tmp/212.tmpdir"),
];

fn plan_with(env: &[(&str, &str)], command: &[&str]) -> Result<ContainerPlan, PlanError> {
    plan_cfg(&site(), env, command)
}

/// A plan for alice's LSF job 212 under `config`, with `env` over the usual job's variables (for
/// other modules' tests: `authz` checks that every plan's create body passes).
pub(crate) fn plan_cfg(
    config: &SiteConfig,
    env: &[(&str, &str)],
    command: &[&str],
) -> Result<ContainerPlan, PlanError> {
    let mut all: Vec<(&str, &str)> = LSF_JOB.to_vec();
    for (k, v) in env {
        all.retain(|(name, _)| name != k);
        all.push((k, v));
    }
    let snap = snap(&all);
    let ctx = context(&snap).unwrap();
    let req = Request {
        image: None,
        command: command.iter().map(|s| s.to_string()).collect(),
        script: None,
    };
    build(&req, &snap, config, &ctx, &alice(), &host())
}

#[test]
fn a_plain_lsf_job_is_hardened_by_default() {
    let p = plan_with(&[], &[]).unwrap();
    assert_eq!(p.image.to_string(), "alpine:latest");
    assert_eq!(p.user, (2001, 2001));
    assert_eq!(p.group_add, [3001, 3002]);
    assert_eq!(p.entrypoint, Some(vec!["/bin/sh".to_string()]));
    assert_eq!(
        p.cmd,
        Some(vec!["/home/alice/.lsbatch/1700000000.212".to_string()])
    );
    assert_eq!(p.working_dir, Some("/home/alice/work".into()));
    assert_eq!(p.hostname, "node1.cluster");
    assert_eq!(p.name, "jobdock-lsf-212-4242");
    assert_eq!(p.labels["jobdock.job"], "212");
    assert_eq!(p.labels["jobdock.uid"], "2001");
    assert_eq!(
        p.cap_add,
        Capability::DEFAULT_ALLOW
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(p.security_opt, ["no-new-privileges"]);
    assert_eq!(p.memory, ByteSize::exact(4 * ByteSize::GIB));
    assert_eq!(p.nano_cpus, Some(2_000_000_000));
    assert_eq!(p.pids_limit, 8192);
    assert_eq!(p.devices.len(), 2);
    // The job's own limits, but memlock unlimited: the job gets InfiniBand devices.
    let limit = |name: &str| {
        let u = p.ulimits.iter().find(|u| u.name == name).unwrap();
        (u.soft, u.hard)
    };
    let names: Vec<&str> = p.ulimits.iter().map(|u| u.name).collect();
    assert_eq!(names, ULIMITS);
    assert_eq!(limit("nofile"), (1024, 1_048_576));
    assert_eq!(limit("nproc"), (-1, -1));
    assert_eq!(limit("stack"), (8 << 20, -1));
    assert_eq!(limit("core"), (0, -1));
    assert_eq!(limit("memlock"), (-1, -1));
    assert_eq!(p.network, "bridge");
    assert_eq!(p.ipc, "private");
    assert_eq!(p.env["HOME"], "/home/alice");
    assert_eq!(p.env["TMPDIR"], "/tmp");
    assert_eq!(p.env["LSF_NIOS_JOBSTATUS_INTERVAL"], "1");
    assert_eq!(p.env["LSB_JOBID"], "212");
    assert_eq!(
        p.staging.dir,
        PathBuf::from("/run/jobdock/jobdock-lsf-212-4242.0123456789abcdef01234567")
    );
    let targets: Vec<&str> = p
        .mounts
        .iter()
        .map(|m| m.target.to_str().unwrap())
        .collect();
    // The working dir and job spool are inside the (read-write) home: not mounted twice. The
    // tmpdir /tmp/212.tmpdir is /tmp only: at its own path, inside itself, the engine would
    // create the mount point in it on the host (issue 11 item 2).
    assert_eq!(
        targets,
        ["/etc/passwd", "/etc/group", "/home/alice", "/tmp"]
    );
    assert_eq!(p.env["__LSF_JOB_TMPDIR__"], "/tmp");
    assert!(p.mounts[0].readonly && p.mounts[1].readonly);
    assert_eq!(
        p.cgroup_parent.as_deref(),
        Some("/lsf/cluster1/job.212.0.1700000000"),
        "the container joins the job's cgroup"
    );
    assert_eq!(p.cpuset_cpus, None);
    assert!(p.notes.is_empty(), "{:?}", p.notes);
}

#[test]
fn the_job_cgroup_decides_memory_and_cpus() {
    let build_with =
        |env: &[(&str, &str)], limit: Option<u64>, cpus: Option<&str>, cfg: &SiteConfig| {
            let mut s = snap(env);
            s.cgroup = crate::job::cgroup::JobCgroup::parse(
                "4:memory:/slurm_vm/uid_2001/job_5/step_0/task_0\n",
            );
            s.cgroup_memory_limit = limit;
            s.cpus_allowed = cpus.map(str::to_string);
            let ctx = context(&s).unwrap();
            let req = Request {
                image: Some("x".into()),
                command: vec!["true".into()],
                script: None,
            };
            build(&req, &s, cfg, &ctx, &alice(), &host()).unwrap()
        };
    let slurm = [("SLURM_JOB_ID", "5"), ("SLURM_STEP_ID", "0")];
    let gib = ByteSize::GIB;
    // No allocation in the environment: the cgroup's limit, not the site default.
    let p = build_with(&slurm, Some(10 * gib), Some("0-3"), &site());
    assert_eq!(p.memory, ByteSize::exact(10 * gib));
    assert_eq!(p.cpuset_cpus.as_deref(), Some("0-3"));
    assert_eq!(
        p.cgroup_parent.as_deref(),
        Some("/slurm_vm/uid_2001/job_5/step_0")
    );
    let line = render::docker_run(&p)
        .into_iter()
        .find(|l| l.words[0] == "--cgroup-parent")
        .unwrap();
    assert!(line.why.contains("the job's own cgroup"), "{}", line.why);
    // An allocation above the cgroup's limit (a forged variable) is capped by the cgroup.
    let forged = [
        ("SLURM_JOB_ID", "5"),
        ("SLURM_STEP_ID", "0"),
        ("SLURM_MEM_PER_NODE", "1048576"),
    ];
    assert_eq!(
        build_with(&forged, Some(2 * gib), None, &site()).memory,
        ByteSize::exact(2 * gib)
    );
    // Neither: the site default.
    assert_eq!(
        build_with(&slurm, None, None, &site()).memory,
        site().limits.memory
    );
    // A site may keep containers out of job cgroups; an admin-allowed CGROUP still wins.
    let mut off = site();
    off.engine.job_cgroup = false;
    assert_eq!(build_with(&slurm, None, None, &off).cgroup_parent, None);
    off.overrides.cgroup_parents = vec!["netcap".into()];
    let netcap = [("SLURM_JOB_ID", "5"), ("LSB_DOCKER_CGROUP", "netcap")];
    assert_eq!(
        build_with(&netcap, None, None, &off)
            .cgroup_parent
            .as_deref(),
        Some("netcap")
    );
    // With systemd's driver a non-slice cgroup cannot be joined: said, not silently dropped.
    let mut systemd = site();
    systemd.engine.cgroup_driver = "systemd".into();
    let p = build_with(&slurm, None, None, &systemd);
    assert_eq!(p.cgroup_parent, None);
    assert!(
        p.notes.iter().any(|n| n.contains("systemd slice")),
        "{:?}",
        p.notes
    );
}

#[test]
fn outside_a_job_the_container_stays_in_dockerds_cgroup() {
    let mut s = snap(&[("JOBDOCK_IMAGE", "x")]);
    s.cgroup_memory_limit = Some(1 << 30);
    s.cpus_allowed = Some("0".into());
    let ctx = context(&s).unwrap();
    let req = Request {
        image: None,
        command: vec!["true".into()],
        script: None,
    };
    let p = build(&req, &s, &site(), &ctx, &alice(), &host()).unwrap();
    assert_eq!(
        (p.cgroup_parent, p.cpuset_cpus, p.memory),
        (None, None, site().limits.memory)
    );
}

#[test]
fn an_lsf_starter_script_is_staged_and_run_through_sh() {
    let mut s = snap(LSF_JOB);
    s.env.remove("LSB_JOBFILENAME");
    let ctx = context(&s).unwrap();
    let text = "cd /gpfs/lab; make | tee log\n";
    let req = Request {
        image: None,
        command: vec![],
        script: Some(text.into()),
    };
    let p = build(&req, &s, &site(), &ctx, &alice(), &host()).unwrap();
    assert_eq!(p.script.as_deref(), Some(text));
    assert_eq!(p.entrypoint, Some(vec!["/bin/sh".to_string()]));
    assert_eq!(p.cmd, Some(vec![SCRIPT_TARGET.to_string()]));
    let staged = p.staging.script.clone().unwrap();
    assert_eq!(staged, p.staging.dir.join("job.sh"));
    let m = p
        .mounts
        .iter()
        .find(|m| m.target == Path::new(SCRIPT_TARGET))
        .unwrap();
    assert_eq!((&m.source, m.readonly), (&staged, true));
}

#[test]
fn the_create_body_pins_every_security_field() {
    let p = plan_with(&[], &["id"]).unwrap();
    let body = crate::engine::body::create_json(&p);
    let hc = &body["HostConfig"];
    assert_eq!(body["User"], "2001:2001");
    assert_eq!(
        body["Entrypoint"],
        serde_json::json!([]),
        "the image's entrypoint is reset"
    );
    assert_eq!(body["Cmd"], serde_json::json!(["id"]));
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(
        hc["CapAdd"],
        serde_json::json!([
            "CAP_CHOWN",
            "CAP_KILL",
            "CAP_SETPCAP",
            "CAP_IPC_LOCK",
            "CAP_SYS_NICE"
        ])
    );
    assert_eq!(hc["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
    assert_eq!(hc["GroupAdd"], serde_json::json!(["3001", "3002"]));
    assert_eq!(hc["PidMode"], "");
    assert_eq!(hc["UsernsMode"], "");
    assert_eq!(hc["Init"], true);
    assert_eq!(hc["LogConfig"]["Type"], "none");
    assert_eq!(
        body["Healthcheck"]["Test"],
        serde_json::json!(["NONE"]),
        "no image HEALTHCHECK: dockerd would exec it with groups resolved by name"
    );
    assert_eq!(hc["RestartPolicy"]["Name"], "no");
    assert_eq!(hc["Memory"], hc["MemorySwap"], "no swap");
    assert_eq!(hc["PidsLimit"], 8192);
    assert_eq!(
        hc["Ulimits"],
        serde_json::json!([
            {"Name": "core", "Soft": 0, "Hard": -1},
            {"Name": "memlock", "Soft": -1, "Hard": -1},
            {"Name": "nofile", "Soft": 1024, "Hard": 1_048_576},
            {"Name": "nproc", "Soft": -1, "Hard": -1},
            {"Name": "stack", "Soft": 8 << 20, "Hard": -1},
        ])
    );
    assert!(
        hc["Binds"].is_null(),
        "Binds would create missing sources as root"
    );
    for m in hc["Mounts"].as_array().unwrap() {
        assert_eq!(m["Type"], "bind");
        assert_eq!(m["BindOptions"]["Propagation"], "rprivate");
    }
}

#[test]
fn the_two_renderings_agree() {
    let p = plan_with(
        &[
            ("LSB_DOCKER_VOLUMES", "/gpfs/lab/data:/data:ro"),
            ("LSB_DOCKER_PORTS", "8001-8002:80-81"),
            ("LSB_DOCKER_ADD_HOST", "db:10.0.0.1"),
            ("LSB_DOCKER_SHM_SIZE", "1g"),
            ("SLURM_UNRELATED", "x"),
        ],
        &["sh", "-c", "echo 'a b'"],
    )
    .unwrap();
    let body = crate::engine::body::create_json(&p);
    let argv: Vec<Vec<String>> = render::docker_run(&p)
        .into_iter()
        .map(|l| l.words)
        .collect();
    let count = |opt: &str| argv.iter().filter(|w| w[0] == opt).count();
    let values = |opt: &str| {
        argv.iter()
            .filter(|w| w[0] == opt)
            .map(|w| w[1].clone())
            .collect::<Vec<_>>()
    };
    let hc = &body["HostConfig"];
    let len = |v: &serde_json::Value| v.as_array().map_or(0, Vec::len);
    assert_eq!(count("--mount"), len(&hc["Mounts"]));
    assert_eq!(count("--cap-add"), len(&hc["CapAdd"]));
    assert_eq!(count("--group-add"), len(&hc["GroupAdd"]));
    assert_eq!(count("--device"), len(&hc["Devices"]));
    assert_eq!(count("--env"), len(&body["Env"]));
    assert_eq!(count("--add-host"), len(&hc["ExtraHosts"]));
    assert_eq!(count("--label"), body["Labels"].as_object().unwrap().len());
    assert_eq!(values("--user"), [body["User"].as_str().unwrap()]);
    assert_eq!(values("--memory"), [hc["Memory"].to_string()]);
    assert_eq!(values("--shm-size"), [hc["ShmSize"].to_string()]);
    assert_eq!(values("--network"), [hc["NetworkMode"].as_str().unwrap()]);
    assert_eq!(values("--pids-limit"), [hc["PidsLimit"].to_string()]);
    assert_eq!(
        values("--restart"),
        [hc["RestartPolicy"]["Name"].as_str().unwrap()]
    );
    assert_eq!(count("--no-healthcheck"), 1);
    assert_eq!(body["Healthcheck"]["Test"], serde_json::json!(["NONE"]));
    let ulimits: Vec<String> = hc["Ulimits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            format!(
                "{}={}:{}",
                u["Name"].as_str().unwrap(),
                u["Soft"],
                u["Hard"]
            )
        })
        .collect();
    assert_eq!(values("--ulimit"), ulimits);
    assert_eq!(ulimits.len(), ULIMITS.len());
    assert_eq!(hc["PortBindings"].as_object().unwrap().len(), 2);
    for (m, spec) in hc["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(values("--mount"))
    {
        assert!(
            spec.contains(&format!("source={}", m["Source"].as_str().unwrap())),
            "{spec}"
        );
        assert_eq!(spec.ends_with(",readonly"), m["ReadOnly"] == true, "{spec}");
    }
    assert_eq!(argv.last().unwrap(), &["sh", "-c", "echo 'a b'"]);
    let text = render::docker_run_text(&p);
    assert!(
        text.contains("'echo '\\''a b'\\'''"),
        "the command is quoted for a shell:\n{text}"
    );
}

#[test]
fn slurm_step_plan() {
    let env = [
        ("SLURM_JOB_ID", "4567"),
        ("SLURM_STEP_ID", "0"),
        ("SLURM_PROCID", "1"),
        ("SLURM_CPUS_ON_NODE", "4"),
        ("SLURM_MEM_PER_NODE", "2048"),
        ("SLURM_STEP_GPUS", "2,3"),
        ("JOBDOCK_IMAGE", "127.0.0.1:5000/jobdock-test/busybox"),
    ];
    let snap = snap(&env);
    let ctx = context(&snap).unwrap();
    let req = Request {
        image: None,
        command: vec!["hostname".into()],
        script: None,
    };
    let p = build(&req, &snap, &site(), &ctx, &alice(), &host()).unwrap();
    assert_eq!(p.name, "jobdock-slurm-4567-4242");
    assert_eq!(p.labels["jobdock.job"], "4567");
    assert_eq!(p.labels["jobdock.step"], "0.1");
    assert_eq!(p.memory, ByteSize::exact(2 * ByteSize::GIB));
    assert_eq!(p.nano_cpus, Some(4_000_000_000));
    assert_eq!(p.gpus, ["2", "3"]);
    assert_eq!(p.env["CUDA_VISIBLE_DEVICES"], "0,1");
    let body = crate::engine::body::create_json(&p);
    assert_eq!(
        body["HostConfig"]["DeviceRequests"][0]["DeviceIDs"],
        serde_json::json!(["2", "3"])
    );
    assert_eq!(body["Image"], "127.0.0.1:5000/jobdock-test/busybox:latest");
}

/// A step container (issue 14) runs the host's jobdock as its agent, with the shared objects it
/// needs beside it and the host's loader named on its command line: so it runs in an image
/// without glibc (a static busybox, alpine), and nothing of the host's reaches the tasks'
/// environment.
#[test]
fn a_step_container_runs_its_agent_through_the_hosts_loader() {
    let env = [
        ("SLURM_JOB_ID", "4567"),
        ("SLURM_STEP_ID", "0"),
        ("SLURM_PROCID", "1"),
        ("SLURM_NODEID", "0"),
        ("SLURM_STEP_TASKS_PER_NODE", "2"),
        ("SLURM_CLUSTER_NAME", "c1"),
        ("SLURMD_NODENAME", "n1"),
        ("JOBDOCK_IMAGE", "jobdock-test/busybox"),
    ];
    let snap = snap(&env);
    let mut ctx = context(&snap).unwrap();
    ctx.confirmed = true;
    assert!(ctx.parallel.is_some(), "{ctx:?}");
    let req = Request {
        image: None,
        command: vec!["hostname".into()],
        script: None,
    };
    let p = build(&req, &snap, &site(), &ctx, &alice(), &host()).unwrap();
    assert!(p.step.is_some(), "not a step container");
    assert_eq!(
        p.entrypoint.as_deref().unwrap(),
        [
            "/.jobdock/lib/ld-linux-x86-64.so.2",
            "--library-path",
            "/.jobdock/lib",
            "/.jobdock/agent",
            "agent"
        ]
    );
    let ro: Vec<(&str, &str)> = p
        .mounts
        .iter()
        .filter(|m| m.target.starts_with("/.jobdock/") && m.readonly)
        .map(|m| (m.source.to_str().unwrap(), m.target.to_str().unwrap()))
        .collect();
    assert_eq!(
        ro,
        [
            ("/usr/local/bin/jobdock", "/.jobdock/agent"),
            (
                "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/.jobdock/lib/libgcc_s.so.1"
            ),
            (
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/.jobdock/lib/libc.so.6"
            ),
            (
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "/.jobdock/lib/ld-linux-x86-64.so.2"
            ),
        ]
    );
    assert!(!p.env.keys().any(|k| k.starts_with("LD_")), "{:?}", p.env);

    // The step's CPUs on the node for the container, the task's own binding for the task.
    let mut bound = snap.clone();
    bound.cpus_allowed = Some("1".into());
    bound.cgroup_cpus = Some("0-1".into());
    let p = build(&req, &bound, &site(), &ctx, &alice(), &host()).unwrap();
    assert_eq!(
        (p.cpuset_cpus.as_deref(), p.nano_cpus),
        (Some("0-1"), Some(2_000_000_000))
    );
    assert_eq!(p.step.unwrap().task.cpus.as_deref(), Some("1"));

    // A static jobdock runs by itself.
    let mut fixed = snap.clone();
    fixed.exe.as_mut().unwrap().libraries.clear();
    let p = build(&req, &fixed, &site(), &ctx, &alice(), &host()).unwrap();
    assert_eq!(
        p.entrypoint.as_deref().unwrap(),
        ["/.jobdock/agent", "agent"]
    );
}

/// Issue 16.1's `--container-name` (LSB_DOCKER_CONTAINER_NAME): the job's container of that name
/// on the node, the same for every step that names it (even a one-task step), kept for them
/// (agent `--tasks 0`), under the job's cgroup; labelled with its name and image, no one step's.
/// Refused, naming the variable, for a bad name and outside a confirmed Slurm step.
#[test]
fn a_named_container_is_the_jobs_for_every_step_that_names_it() {
    let env = |step: &'static str, name: &'static str| {
        vec![
            ("SLURM_JOB_ID", "4567"),
            ("SLURM_STEP_ID", step),
            ("SLURM_PROCID", "0"),
            ("SLURM_NODEID", "0"),
            ("SLURM_STEP_TASKS_PER_NODE", "1"),
            ("SLURM_CLUSTER_NAME", "c1"),
            ("SLURMD_NODENAME", "n1"),
            ("JOBDOCK_IMAGE", "jobdock-test/busybox"),
            ("LSB_DOCKER_CONTAINER_NAME", name),
        ]
    };
    let req = Request {
        image: None,
        command: vec!["hostname".into()],
        script: None,
    };
    let plan_of = |env: &[(&str, &str)], confirmed: bool| {
        let mut snap = snap(env);
        snap.cgroup = crate::job::cgroup::JobCgroup::parse(
            "4:memory:/slurm_n1/uid_2001/job_4567/step_3/task_0\n",
        );
        let mut ctx = context(&snap).unwrap();
        ctx.confirmed = confirmed;
        build(&req, &snap, &site(), &ctx, &alice(), &host())
    };
    let first = plan_of(&env("0", "work"), true).unwrap();
    let later = plan_of(&env("3", "work"), true).unwrap();
    assert_eq!(first.name, "jobdock-slurm-c1-4567-named-work-n1-u2001");
    assert_eq!(later.name, first.name, "every step that names it shares it");
    assert_eq!(first.labels["jobdock.name"], "work");
    assert_eq!(first.labels["jobdock.image"], "jobdock-test/busybox:latest");
    assert_eq!(first.labels["jobdock.agent"], "1");
    assert!(
        !first.labels.contains_key("jobdock.step"),
        "{:?}",
        first.labels
    );
    let step = first.step.as_ref().expect("a step container");
    assert_eq!(step.local_tasks, None, "kept for the job's later steps");
    assert_eq!(step.task.argv, ["hostname"]);
    let cmd = first.cmd.as_deref().unwrap();
    assert_eq!(&cmd[..2], ["--tasks", "0"]);
    assert_eq!(
        first.cgroup_parent.as_deref(),
        Some("/slurm_n1/uid_2001/job_4567"),
        "the job's cgroup, which outlives the step"
    );
    assert_ne!(plan_of(&env("0", "other"), true).unwrap().name, first.name);

    for (env, confirmed, want) in [
        (env("0", "a b"), true, "1 to 64 letters"),
        (env("0", "-x"), true, "1 to 64 letters"),
        (env("0", ""), true, "1 to 64 letters"),
        (env("0", "work"), false, "not in one's cgroup"),
        (env("batch", "work"), true, "tasks of a Slurm job step"),
    ] {
        let e = plan_of(&env, confirmed).unwrap_err().to_string();
        assert!(
            e.contains("LSB_DOCKER_CONTAINER_NAME") && e.contains(want),
            "{env:?} {confirmed}: {e}"
        );
    }
}

/// Issue 14.4, the seeds' virtual cluster (LSB_DOCKER_SSHD): the job's named container on each
/// node runs an sshd on its port, with the job's nodes in its files; what it needs is asked for.
#[test]
fn a_virtual_cluster_is_a_named_container_with_the_jobs_nodes_and_an_sshd() {
    let base = [
        ("SLURM_JOB_ID", "4567"),
        ("SLURM_STEP_ID", "0"),
        ("SLURM_PROCID", "0"),
        ("SLURM_NODEID", "1"),
        ("SLURM_STEP_TASKS_PER_NODE", "1(x2)"),
        ("SLURM_CLUSTER_NAME", "c1"),
        ("SLURMD_NODENAME", "n2"),
        ("SLURM_JOB_NODELIST", "n[1-2]"),
        ("SLURM_JOB_CPUS_PER_NODE", "2(x2)"),
        ("JOBDOCK_IMAGE", "jobdock-test/busybox"),
        ("LSB_DOCKER_CONTAINER_NAME", "vc"),
        ("LSB_DOCKER_SSHD", "yes"),
    ];
    let req = Request {
        image: None,
        command: vec!["true".into()],
        script: None,
    };
    let mut with_ports = site();
    with_ports.mpi.sshd_ports = Some((22000, 22009));
    let mut without = site();
    without.mpi.sshd_ports = None;
    let plan_of = |site: &SiteConfig, extra: &[(&str, &str)], drop: &[&str]| {
        let mut env: Vec<(&str, &str)> = base
            .iter()
            .copied()
            .filter(|(k, _)| !drop.contains(k) && !extra.iter().any(|(e, _)| e == k))
            .collect();
        env.extend(extra);
        let mut snap = snap(&env);
        snap.cgroup = crate::job::cgroup::JobCgroup::parse(
            "4:memory:/slurm_n2/uid_2001/job_4567/step_0/task_0\n",
        );
        let mut ctx = context(&snap).unwrap();
        ctx.confirmed = true;
        build(&req, &snap, site, &ctx, &alice(), &host())
    };
    let p = plan_of(&with_ports, &[], &[]).unwrap();
    let sshd = p.step.as_ref().unwrap().sshd.as_ref().expect("an sshd");
    let names: Vec<(&str, u32)> = sshd
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.slots))
        .collect();
    assert_eq!(names, [("n1", 2), ("n2", 2)]);
    assert_eq!(sshd.port, sshd.nodes[1].port, "this node's (n2's) port");
    assert_ne!(sshd.nodes[0].port, sshd.nodes[1].port);
    assert!(sshd.nodes.iter().all(|n| (22000..=22009).contains(&n.port)));
    assert_eq!(sshd.user, "alice");
    assert_eq!(
        sshd.key_context,
        ["slurm", "c1", "4567", "2001"].join("\0"),
        "the confirmed job's, the real uid's"
    );
    assert_eq!(
        p.network, "host",
        "the nodes' sshds are reached at the hosts' addresses"
    );
    assert_eq!(p.labels["jobdock.sshd"], sshd.port.to_string());
    let cmd = p.cmd.as_deref().unwrap();
    assert_eq!(
        &cmd[cmd.len() - 2..],
        ["--sshd".to_string(), sshd.port.to_string()]
    );
    let dir = p.staging.ssh_dir.as_ref().expect("an ssh directory");
    let mount = p.mounts.iter().find(|m| &m.source == dir).expect("mounted");
    assert!(mount.readonly && mount.target == Path::new(crate::sshd::SSH_TARGET));
    assert_eq!(p.env["OMPI_MCA_plm"], "rsh", "mpirun over ssh, not srun");
    assert_eq!(
        p.env["OMPI_MCA_orte_default_hostfile"],
        "/.jobdock/ssh/hostfile"
    );
    assert_eq!(
        p.step.as_ref().unwrap().task.env["OMPI_MCA_plm_rsh_args"],
        "-F /.jobdock/ssh/config"
    );
    // The job's own choice wins.
    let own = plan_of(&with_ports, &[("OMPI_MCA_plm_rsh_no_tree_spawn", "0")], &[]).unwrap();
    assert_eq!(own.env["OMPI_MCA_plm_rsh_no_tree_spawn"], "0");
    // Without LSB_DOCKER_SSHD (or with "no"): a named container without one.
    for p in [
        plan_of(&with_ports, &[], &["LSB_DOCKER_SSHD"]).unwrap(),
        plan_of(&with_ports, &[("LSB_DOCKER_SSHD", "no")], &[]).unwrap(),
    ] {
        assert!(p.step.as_ref().unwrap().sshd.is_none() && p.staging.ssh_dir.is_none());
        assert!(!p.labels.contains_key("jobdock.sshd") && !p.env.contains_key("OMPI_MCA_plm"));
    }

    let mut no_host = with_ports.clone();
    no_host.network.allowed.retain(|n| n != "host");
    for (site, extra, drop, want) in [
        (&without, &[][..], &[][..], "mpi.sshd_ports"),
        (
            &with_ports,
            &[][..],
            &["LSB_DOCKER_CONTAINER_NAME"][..],
            "LSB_DOCKER_CONTAINER_NAME",
        ),
        (
            &with_ports,
            &[("LSB_DOCKER_SSHD", "maybe")][..],
            &[][..],
            "LSB_DOCKER_SSHD",
        ),
        (
            &with_ports,
            &[("SLURMD_NODENAME", "n3")][..],
            &[][..],
            "not in the job's SLURM_JOB_NODELIST",
        ),
        (
            &with_ports,
            &[("SLURM_JOB_NODELIST", "n[1-")][..],
            &[][..],
            "SLURM_JOB_NODELIST",
        ),
        (
            &with_ports,
            &[][..],
            &["SLURM_JOB_CPUS_PER_NODE"][..],
            "SLURM_JOB_CPUS_PER_NODE",
        ),
        (
            &with_ports,
            &[("LSB_DOCKER_NETWORK", "bridge")][..],
            &[][..],
            "needs the host network",
        ),
        (&no_host, &[][..], &[][..], "network.allowed"),
    ] {
        let e = plan_of(site, extra, drop).unwrap_err().to_string();
        assert!(e.contains(want), "{extra:?} {drop:?}: {e}");
    }
    let mut tiny = with_ports.clone();
    tiny.mpi.sshd_ports = Some((22000, 22000));
    let e = plan_of(&tiny, &[], &[]).unwrap_err().to_string();
    assert!(
        e.contains("LSB_DOCKER_SSHD") && e.contains("2 nodes"),
        "{e}"
    );
}

#[test]
fn lsf_array_elements_get_distinct_names_and_the_job_id_label() {
    let p = plan_with(
        &[
            ("LSB_JOBINDEX", "7"),
            ("LSB_JOBFILENAME", "/home/alice/.lsbatch/1700000000.212.7"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(p.name, "jobdock-lsf-212.7-4242");
    assert_eq!(p.labels["jobdock.job"], "212[7]");
}

const LSB_JOB_WITHOUT_IMAGE: &[(&str, &str)] = &[
    ("LSB_JOBID", "212"),
    ("LSB_JOBINDEX", "0"),
    ("LS_SUBCWD", "/home/alice/work"),
];

#[test]
fn image_sources_in_order() {
    let cases: &[(&str, &[(&str, &str)], Option<&str>, Option<&str>)] = &[
        (
            "--image wins",
            &[("LSB_CONTAINER_IMAGE", "a"), ("JOBDOCK_IMAGE", "b")],
            Some("busybox:1"),
            Some("busybox:1"),
        ),
        (
            "then LSB_CONTAINER_IMAGE",
            &[("LSB_CONTAINER_IMAGE", "a"), ("JOBDOCK_IMAGE", "b")],
            None,
            Some("a:latest"),
        ),
        (
            "then JOBDOCK_IMAGE",
            &[("JOBDOCK_IMAGE", "b")],
            None,
            Some("b:latest"),
        ),
        ("no image", &[], None, None),
    ];
    for (name, env, flag, want) in cases {
        let mut all = LSB_JOB_WITHOUT_IMAGE.to_vec();
        all.extend_from_slice(env);
        let s = snap(&all);
        let ctx = context(&s).unwrap();
        let req = Request {
            image: flag.map(str::to_string),
            command: vec!["true".into()],
            script: None,
        };
        match (build(&req, &s, &site(), &ctx, &alice(), &host()), want) {
            (Ok(p), Some(want)) => assert_eq!(p.image.to_string(), *want, "{name}"),
            (Err(PlanError::NoImage), None) => {}
            (other, _) => panic!("{name}: {:?}", other.map(|p| p.image)),
        }
    }
}

#[test]
fn commands() {
    let raw = plan_with(
        &[("LSB_DOCKER_RUN_RAW_ARGS", "1")],
        &["LSB_DOCKER_PLACE_HOLDER"],
    )
    .unwrap();
    assert_eq!(
        (raw.entrypoint, raw.cmd),
        (None, None),
        "raw mode runs the image's own entrypoint and command"
    );
    let placeholder = plan_with(&[], &["LSB_DOCKER_PLACEHOLDER"]).unwrap();
    assert_eq!((placeholder.entrypoint, placeholder.cmd), (None, None));
    let raw_args = plan_with(&[("LSF_DOCKER_RUN_RAW_ARGS", "true")], &["--help"]).unwrap();
    assert_eq!(
        (raw_args.entrypoint, raw_args.cmd),
        (None, Some(vec!["--help".to_string()]))
    );
    let ep = plan_with(&[("LSB_DOCKER_ENTRYPOINT", "/bin/bash")], &[]).unwrap();
    assert_eq!(ep.entrypoint, Some(vec!["/bin/bash".to_string()]));
    assert_eq!(
        ep.cmd,
        Some(vec!["/home/alice/.lsbatch/1700000000.212".to_string()])
    );
    let snap = snap(&[("JOBDOCK_IMAGE", "x")]);
    let ctx = context(&snap).unwrap();
    let err = build(&Request::default(), &snap, &site(), &ctx, &alice(), &host()).unwrap_err();
    assert!(matches!(err, PlanError::NoCommand), "{err}");
}

/// Each override in an accepted form, with what it must produce.
#[test]
fn overrides_accepted() {
    let p = plan_with(
        &[
            (
                "LSB_DOCKER_VOLUMES",
                "/gpfs/lab/data:/data:ro /scratch/alice /gpfs/lab/to-scratch:/s2 /gpfs/lab:/lab:rw",
            ),
            ("LSB_DOCKER_NETWORK", "host"),
            ("LSF_DOCKER_IPC", "shareable"),
            ("LSB_DOCKER_SHM_SIZE", "16g"),
            ("LSB_DOCKER_WORKDIR", "/data"),
            ("LSB_DOCKER_ENV_FILE", "/home/alice/env.list"),
            ("LSB_DOCKER_ADD_HOST", "storage.example:199.36.153.4 v6:::1"),
            ("LSB_DOCKER_ADD_HOST_FILE", "/home/alice/hosts"),
            ("LSB_DOCKER_RUN_LOGLEVEL", "DEBUG"),
            ("LSB_DOCKER_PULL", "Newer"),
        ],
        &["true"],
    )
    .unwrap();
    assert_eq!(p.pull, crate::config::PullPolicy::Newer);
    let find = |t: &str| {
        p.mounts
            .iter()
            .find(|m| m.target == Path::new(t))
            .unwrap_or_else(|| panic!("no mount at {t}"))
    };
    assert!(find("/data").readonly);
    assert_eq!(find("/data").source, PathBuf::from("/gpfs/lab/data"));
    assert_eq!(
        find("/scratch/alice").source,
        PathBuf::from("/scratch/alice")
    );
    assert_eq!(
        find("/s2").source,
        PathBuf::from("/scratch/alice"),
        "a symlink inside the roots mounts its target"
    );
    assert!(!find("/lab").readonly);
    assert_eq!((p.network.as_str(), p.ipc.as_str()), ("host", "shareable"));
    assert_eq!(p.shm_size, Some(ByteSize::exact(16 * ByteSize::GIB)));
    assert_eq!(p.working_dir, Some("/data".into()));
    assert_eq!(p.env["OMP_NUM_THREADS"], "8");
    assert_eq!(
        p.extra_hosts,
        [
            "storage.example:199.36.153.4",
            "v6:::1",
            "db.example:10.0.0.5",
            "license:10.0.0.6"
        ]
    );
    assert_eq!(p.log_level, Some(tracing::Level::DEBUG));

    let ports = plan_with(&[("LSB_DOCKER_PORTS", "8001 8002:80/udp")], &["true"]).unwrap();
    assert_eq!(ports.ports.len(), 2);

    let mut cfg = site();
    cfg.overrides.cgroup_parents = vec!["netcap".into()];
    let cg = plan_cfg(&cfg, &[("LSB_DOCKER_CGROUP", "netcap")], &["true"]).unwrap();
    assert_eq!(cg.cgroup_parent.as_deref(), Some("netcap"));

    let bare = plan_with(
        &[
            ("LSB_DOCKER_PRESERVE_ENVIRONMENT", "false"),
            ("MY_VAR", "1"),
        ],
        &["true"],
    )
    .unwrap();
    assert!(!bare.env.contains_key("MY_VAR"));
    assert_eq!(
        bare.env["LSB_JOBID"], "212",
        "scheduler variables stay for MPI and tools"
    );
    assert_eq!(bare.env["USER"], "alice");
    let kept = plan_with(&[("MY_VAR", "1")], &["true"]).unwrap();
    assert_eq!(kept.env["MY_VAR"], "1");
}

/// LSB_DOCKER_MOUNT_HOME and LSB_DOCKER_ENV (srun --[no-]container-mount-home, --container-env):
/// the first narrows the site's home mount and never widens it, the second passes named variables
/// of the job's even without its environment, and refuses one jobdock would not pass, under the
/// option's name when the SPANK plugin set it.
#[test]
fn mount_home_and_named_variables() {
    let home = |p: &ContainerPlan| {
        p.mounts
            .iter()
            .any(|m| m.target == Path::new("/home/alice"))
    };
    assert!(home(&plan_with(&[], &["true"]).unwrap()));
    assert!(home(
        &plan_with(&[("LSB_DOCKER_MOUNT_HOME", "true")], &["true"]).unwrap()
    ));
    assert!(!home(
        &plan_with(&[("LSB_DOCKER_MOUNT_HOME", "false")], &["true"]).unwrap()
    ));
    let mut no_homes = site();
    no_homes.mounts.home = false;
    let err = plan_cfg(&no_homes, &[("LSB_DOCKER_MOUNT_HOME", "yes")], &["true"]).unwrap_err();
    assert!(
        err.to_string().contains("mounts no home directories"),
        "{err}"
    );
    let err = plan_cfg(
        &no_homes,
        &[
            ("LSB_DOCKER_MOUNT_HOME", "true"),
            ("JOBDOCK_SPANK_OPTIONS", "MOUNT_HOME"),
        ],
        &["true"],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--[no-]container-mount-home=\"true\""),
        "{err}"
    );
    assert!(!home(
        &plan_cfg(&no_homes, &[("LSB_DOCKER_MOUNT_HOME", "no")], &["true"]).unwrap()
    ));

    let named = plan_with(
        &[
            ("LSB_DOCKER_PRESERVE_ENVIRONMENT", "false"),
            ("LSB_DOCKER_ENV", "MY_VAR OTHER"),
            ("MY_VAR", "1"),
            ("OTHER", "2"),
            ("UNNAMED", "3"),
        ],
        &["true"],
    )
    .unwrap();
    assert_eq!(
        (named.env["MY_VAR"].as_str(), named.env["OTHER"].as_str()),
        ("1", "2")
    );
    assert!(!named.env.contains_key("UNNAMED"));
    let mut drops = site();
    drops.env.drop = vec!["SITE_SECRET".into()];
    for (names, want) in [
        ("PATH", "PATH: it is never passed"),
        ("HOME", "HOME: it is set by jobdock"),
        ("SITE_SECRET", "env.drop"),
        ("ABSENT", "ABSENT is not set in the job's environment"),
        ("BAD-NAME", "not set"),
    ] {
        let env = [
            ("LSB_DOCKER_ENV", names),
            ("JOBDOCK_SPANK_OPTIONS", "ENV"),
            ("SITE_SECRET", "x"),
            ("PATH", "/usr/bin"),
        ];
        let err = plan_cfg(&drops, &env, &["true"]).unwrap_err().to_string();
        assert!(
            err.starts_with("--container-env=") && err.contains(want),
            "{names}: {err}"
        );
    }
}

/// Hostile or invalid overrides: each is refused, naming the variable and the rule.
#[test]
fn overrides_refused() {
    let mut no_ports = site();
    no_ports.ports.range = None;
    let mut no_roots = site();
    no_roots.mounts.allowed_roots.clear();
    let cases: &[(&str, &str, &str, &SiteConfig)] = &[
        ("LSB_DOCKER_VOLUMES", "/etc:/etc2", "never see", &site()),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab/escape:/x",
            "resolves to /etc, outside the allowed roots",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab/docker:/x",
            "resolves to /var/lib/docker",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab/to-home:/x",
            "outside the allowed roots",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/home/alice:/x",
            "outside the allowed roots",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab/file.txt:/f",
            "not a directory",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/nope:/x",
            "No such file",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab/../../etc:/x",
            "..",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "myvolume:/x",
            "named volumes",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab:/x:Z",
            "only ro or rw",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab:/x:rshared",
            "only ro or rw",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab:/etc/passwd",
            "synthesized by jobdock",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab:/proc/sys",
            "runtime owns",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab:/",
            "container's root",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab:/x /gpfs/lab/data:/x",
            "already mounted",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab:/home/alice",
            "already mounted",
            &site(),
        ),
        (
            "LSB_DOCKER_VOLUMES",
            "/gpfs/lab",
            "allows no user volumes",
            &no_roots,
        ),
        (
            "LSB_DOCKER_NETWORK",
            "container:victim",
            "another container",
            &site(),
        ),
        ("LSB_DOCKER_NETWORK", "macvlan0", "must be one of", &site()),
        (
            "LSB_DOCKER_IPC",
            "container:victim",
            "another container",
            &site(),
        ),
        ("LSB_DOCKER_IPC", "none", "must be one of", &site()),
        ("LSB_DOCKER_SHM_SIZE", "17g", "shm_size_max", &site()),
        ("LSB_DOCKER_SHM_SIZE", "0", "between", &site()),
        ("LSB_DOCKER_SHM_SIZE", "lots", "not a size", &site()),
        (
            "LSB_DOCKER_ENTRYPOINT",
            "/bin/sh -c id",
            "without spaces",
            &site(),
        ),
        ("LSB_DOCKER_ENTRYPOINT", "", "without spaces", &site()),
        ("LSB_DOCKER_WORKDIR", "relative", "absolute", &site()),
        ("LSB_DOCKER_WORKDIR", "/proc/self", "runtime owns", &site()),
        (
            "LSB_DOCKER_ENV_FILE",
            "/etc/shadow",
            "not a regular file",
            &site(),
        ),
        ("LSB_DOCKER_ENV_FILE", "env.list", "absolute", &site()),
        (
            "LSB_DOCKER_ENV_FILE",
            "/home/alice/bad.env",
            "set by jobdock",
            &site(),
        ),
        (
            "LSB_DOCKER_ENV_FILE",
            "/home/alice/bare.env",
            "has no value",
            &site(),
        ),
        (
            "LSB_DOCKER_PRESERVE_ENVIRONMENT",
            "sometimes",
            "true or false",
            &site(),
        ),
        ("LSB_DOCKER_ADD_HOST", "evil", "HOST:IP", &site()),
        ("LSB_DOCKER_ADD_HOST", "h:not-an-ip", "not an IP", &site()),
        (
            "LSB_DOCKER_ADD_HOST_FILE",
            "/home/alice/badhosts",
            "badhosts:1",
            &site(),
        ),
        (
            "LSB_DOCKER_ADD_HOST_FILE",
            "/root/hosts",
            "not a regular file",
            &site(),
        ),
        ("LSB_DOCKER_PORTS", "80", "within 8000-8999", &site()),
        (
            "LSB_DOCKER_PORTS",
            "8001",
            "allows no published ports",
            &no_ports,
        ),
        ("LSB_DOCKER_PORTS", "8001:80:tcp", "is not PORT", &site()),
        ("LSB_DOCKER_PULL", "always", "engine.pull_choices", &site()),
        (
            "LSB_DOCKER_PULL",
            "sometimes",
            "must be missing, newer, always or never",
            &site(),
        ),
        (
            "LSB_DOCKER_RUN_LOGLEVEL",
            "LOUD",
            "critical, error, warning",
            &site(),
        ),
        (
            "LSB_DOCKER_RUN_RAW_ARGS",
            "perhaps",
            "true or false",
            &site(),
        ),
        ("LSB_DOCKER_CGROUP", "/", "no such cgroup parent", &site()),
        (
            "LSB_DOCKER_CGROUP",
            "docker",
            "no such cgroup parent",
            &site(),
        ),
    ];
    for (var, value, want, cfg) in cases {
        let err = plan_cfg(cfg, &[(var, value)], &["true"])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(var),
            "{var}={value:?}: the error must name the variable: {err}"
        );
        assert!(
            err.contains(want),
            "{var}={value:?}: want {want:?} in: {err}"
        );
        // The alias spelling is checked the same way.
        let alias = var.replace("LSB_DOCKER_", "LSF_DOCKER_");
        let err = plan_cfg(cfg, &[(&alias, value)], &["true"])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&alias) && err.contains(want),
            "{alias}={value:?}: {err}"
        );
    }
}

#[test]
fn ports_need_a_bridge() {
    let err = plan_with(
        &[("LSB_DOCKER_PORTS", "8001"), ("LSB_DOCKER_NETWORK", "host")],
        &["true"],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("network host"), "{err}");
}

#[test]
fn both_spellings_must_agree() {
    let err = plan_with(
        &[
            ("LSB_DOCKER_NETWORK", "host"),
            ("LSF_DOCKER_NETWORK", "bridge"),
        ],
        &["true"],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("LSF_DOCKER_NETWORK") && err.contains("set only one"),
        "{err}"
    );
    assert!(
        plan_with(
            &[
                ("LSB_DOCKER_NETWORK", "host"),
                ("LSF_DOCKER_NETWORK", "host")
            ],
            &["true"]
        )
        .is_ok()
    );
}

#[test]
fn the_environment_cannot_take_over_owned_values() {
    let p = plan_with(
        &[
            ("HOME", "/root"),
            ("USER", "root"),
            ("HOSTNAME", "login1"),
            ("LSB_INTERACTIVE", "Y"),
            ("BASH_FUNC_module%%", "() { eval x; }"),
            ("MULTI", "a\nb"),
            ("NVIDIA_VISIBLE_DEVICES", "all"),
            ("PATH", "/home/alice/bin:/usr/bin"),
        ],
        &["true"],
    )
    .unwrap();
    assert_eq!(p.env["HOME"], "/home/alice");
    assert_eq!(p.env["USER"], "alice");
    for gone in [
        "HOSTNAME",
        "LSB_INTERACTIVE",
        "BASH_FUNC_module%%",
        "MULTI",
        "NVIDIA_VISIBLE_DEVICES",
        "PATH",
    ] {
        assert!(!p.env.contains_key(gone), "{gone} passed in");
    }
}

#[test]
fn hostile_images_are_refused_naming_the_source() {
    for image in [
        "--privileged",
        "alpine&fromSrc=http://x/y.tar",
        "Alpine",
        "alpine latest",
        "a@sha256:zz",
    ] {
        let err = plan_with(&[("LSB_CONTAINER_IMAGE", image)], &["true"])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("LSB_CONTAINER_IMAGE"), "{image}: {err}");
    }
    let mut cfg = site();
    cfg.images.allowed_registries = vec!["registry.example.org".into()];
    let err = plan_cfg(&cfg, &[], &["true"]).unwrap_err().to_string();
    assert!(err.contains("docker.io is not allowed"), "{err}");
    assert!(
        plan_cfg(
            &cfg,
            &[("LSB_CONTAINER_IMAGE", "registry.example.org/lab/tool:1")],
            &["true"]
        )
        .is_ok()
    );
}

#[test]
fn sensitive_or_unreachable_job_directories() {
    let snap_in = |cwd: &str| {
        let mut s = snap(&[("JOBDOCK_IMAGE", "x")]);
        s.cwd = Some(cwd.into());
        s
    };
    for (cwd, want) in [
        ("/", "root directory"),
        ("/etc", "never see"),
        ("/var/lib/docker/volumes", "never see"),
        ("/nonexistent", "No such file"),
    ] {
        let s = snap_in(cwd);
        let ctx = context(&s).unwrap();
        let err = build(
            &Request {
                image: None,
                command: vec!["true".into()],
                script: None,
            },
            &s,
            &site(),
            &ctx,
            &alice(),
            &host(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("working directory") && err.contains(want),
            "{cwd}: {err}"
        );
    }
    // A missing home or tmpdir is a note, not a refusal.
    let mut id = alice();
    id.home = "/home/ghost".into();
    let s = snap(LSF_JOB);
    let ctx = context(&s).unwrap();
    let p = build(
        &Request {
            image: None,
            command: vec!["true".into()],
            script: None,
        },
        &s,
        &site(),
        &ctx,
        &id,
        &host(),
    )
    .unwrap();
    assert!(
        p.notes.iter().any(|n| n.contains("/home/ghost")),
        "{:?}",
        p.notes
    );
}

/// Issue 11 item 2: no mount makes the engine create its mount point in a host directory, and no
/// job or user directory lands on the container's system directories. `(name, cwd, volumes,
/// Ok(mount targets, working dir) or Err(words))`.
#[test]
fn no_mount_point_is_created_in_a_host_directory() {
    let mut cfg = site();
    cfg.mounts.site = vec![crate::config::SiteMount {
        source: "/opt/lsf".into(),
        target: None,
        readonly: false,
    }];
    type Want = Result<(&'static [&'static str], &'static str), &'static str>;
    const BASE: &[&str] = &[
        "/etc/passwd",
        "/etc/group",
        "/home/alice",
        "/tmp",
        "/opt/lsf",
    ];
    let cases: &[(&str, &str, &str, Want)] = &[
        (
            "a job in its home",
            "/home/alice/work",
            "",
            Ok((BASE, "/home/alice/work")),
        ),
        (
            "a job in its tmpdir's top works in /tmp",
            "/tmp/212.tmpdir",
            "",
            Ok((BASE, "/tmp")),
        ),
        (
            "a job in its tmpdir works there, as /tmp",
            "/tmp/212.tmpdir/run",
            "",
            Ok((BASE, "/tmp/run")),
        ),
        (
            "a job in a volume: the volume shows the working directory",
            "/scratch/alice/run",
            "/scratch/alice",
            Ok((
                &[
                    "/etc/passwd",
                    "/etc/group",
                    "/home/alice",
                    "/tmp",
                    "/opt/lsf",
                    "/scratch/alice",
                ],
                "/scratch/alice/run",
            )),
        ),
        (
            "cwd /usr",
            "/usr",
            "",
            Err("mount target /usr: the job's working directory: /usr is at or under /usr"),
        ),
        (
            "cwd under /usr",
            "/usr/local/src",
            "",
            Err("under /usr, a system directory"),
        ),
        (
            "cwd /usr and a volume into it",
            "/usr",
            "/gpfs/lab:/usr/x",
            Err("LSB_DOCKER_VOLUMES=\"/gpfs/lab:/usr/x\": /usr/x is at or under /usr"),
        ),
        (
            "a volume over /etc",
            "/home/alice/work",
            "/scratch/alice:/etc",
            Err("at or under /etc"),
        ),
        (
            "a volume over /usr",
            "/home/alice/work",
            "/scratch/alice:/usr",
            Err("at or under /usr"),
        ),
        (
            "a volume over /lib64",
            "/home/alice/work",
            "/scratch/alice:/lib64",
            Err("at or under /lib64"),
        ),
        (
            "a volume over /run",
            "/home/alice/work",
            "/scratch/alice:/run",
            Err("at or under /run"),
        ),
        (
            "a volume over /bin",
            "/home/alice/work",
            "/scratch/alice:/bin",
            Err("at or under /bin"),
        ),
        (
            "a volume at /",
            "/home/alice/work",
            "/scratch/alice:/",
            Err("container's root"),
        ),
        (
            "a volume over /.jobdock",
            "/home/alice/work",
            "/scratch/alice:/.jobdock",
            Err("at or under /.jobdock"),
        ),
        (
            "a volume inside another",
            "/home/alice/work",
            "/gpfs/lab:/data /scratch/alice:/data/s",
            Err("/data/s would be mounted inside /data (from /gpfs/lab)"),
        ),
        (
            "a volume inside the home",
            "/home/alice/work",
            "/gpfs/lab:/home/alice/lab",
            Err("/home/alice/lab would be mounted inside /home/alice"),
        ),
        (
            "a volume above the home",
            "/home/alice/work",
            "/gpfs/lab:/home",
            Err("/home/alice would be mounted inside /home (from /gpfs/lab)"),
        ),
        (
            "a volume inside the tmpdir's /tmp",
            "/home/alice/work",
            "/gpfs/lab:/tmp/lab",
            Err("/tmp/lab would be mounted inside /tmp (from /tmp/212.tmpdir)"),
        ),
        (
            "a volume inside a site mount",
            "/home/alice/work",
            "/gpfs/lab:/opt/lsf/lab",
            Err("/opt/lsf/lab would be mounted inside /opt/lsf"),
        ),
        (
            "a read-only volume does not show a read-write working directory",
            "/scratch/alice/run",
            "/scratch/alice:ro",
            Err("LSB_DOCKER_VOLUMES"),
        ),
    ];
    // An optional mount inside the tmpdir's /tmp is left out, with a note.
    let p = plan_cfg(
        &cfg,
        &[("PMIX_SERVER_TMPDIR", "/tmp/212.tmpdir/run")],
        &["true"],
    )
    .unwrap();
    assert!(
        p.mounts
            .iter()
            .filter(|m| m.target.starts_with("/tmp"))
            .count()
            == 1,
        "{:?}",
        p.mounts
    );
    assert!(
        p.notes.iter().any(|n| n.contains("PMIX_SERVER_TMPDIR")),
        "{:?}",
        p.notes
    );
    for (name, cwd, volumes, want) in cases {
        let mut env = vec![("LS_SUBCWD", *cwd)];
        if !volumes.is_empty() {
            env.push(("LSB_DOCKER_VOLUMES", *volumes));
        }
        match (plan_cfg(&cfg, &env, &["true"]), want) {
            (Ok(p), Ok((targets, workdir))) => {
                let got: Vec<&str> = p
                    .mounts
                    .iter()
                    .map(|m| m.target.to_str().unwrap())
                    .collect();
                assert_eq!(&got, targets, "{name}");
                assert_eq!(p.working_dir, Some(PathBuf::from(workdir)), "{name}");
            }
            (Err(e), Err(words)) => {
                assert!(e.to_string().contains(words), "{name}: {e}");
            }
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

/// Issue 11 item 7: totals per job, not only per file, and no file named twice. `(name, env,
/// None or Some((variable, words)))`; the host has hosts files of 200 entries and env files of
/// 60 KiB.
#[test]
fn totals_per_job_and_no_file_twice() {
    let mut probe = host();
    let hosts: String = (0..200)
        .map(|i| format!("h{i}:10.0.{}.{}\n", i / 250, i % 250))
        .collect();
    let big = format!("BIG={}\n", "x".repeat(60 * 1024));
    for n in 0..5 {
        probe = probe.file(&format!("/home/alice/hosts{n}"), &hosts).file(
            &format!("/home/alice/big{n}.env"),
            &big.replace("BIG", &format!("BIG{n}")),
        );
    }
    for n in 0..17 {
        probe = probe.file(&format!("/home/alice/e{n}.env"), &format!("E{n}=1\n"));
    }
    let seventeen: String = (0..17).map(|n| format!("/home/alice/e{n}.env ")).collect();
    let sixteen: String = (0..16).map(|n| format!("/home/alice/e{n}.env ")).collect();
    let four_big: String = (0..4).map(|n| format!("/home/alice/big{n}.env ")).collect();
    let five_big: String = (0..5).map(|n| format!("/home/alice/big{n}.env ")).collect();
    let preserved = "y".repeat(300 * 1024);
    let many_hosts: String = (0..257).map(|i| format!("h{i}:10.1.0.1 ")).collect();
    let (hf, ef, ah) = (
        "LSB_DOCKER_ADD_HOST_FILE",
        "LSB_DOCKER_ENV_FILE",
        "LSB_DOCKER_ADD_HOST",
    );
    let cases: Vec<(&str, Vec<(&str, &str)>, Option<(&str, &str)>)> = vec![
        ("one hosts file", vec![(hf, "/home/alice/hosts0")], None),
        (
            "the same hosts file twice",
            vec![(hf, "/home/alice/hosts0 /home/alice/hosts0")],
            Some((hf, "/home/alice/hosts0 is named twice")),
        ),
        (
            "the same file, spelled twice",
            vec![(hf, "/home/alice/hosts0 /home/alice//hosts0")],
            Some((hf, "named twice")),
        ),
        (
            "two hosts files: 400 entries",
            vec![(hf, "/home/alice/hosts0 /home/alice/hosts1")],
            Some((
                hf,
                "more than the 256 /etc/hosts entries a job may add (MAX_EXTRA_HOSTS",
            )),
        ),
        (
            "entries and a file together",
            vec![(ah, "a:10.0.0.1 b:10.0.0.2"), (hf, "/home/alice/hosts0")],
            None,
        ),
        (
            "257 entries",
            vec![(ah, &many_hosts)],
            Some((ah, "MAX_EXTRA_HOSTS")),
        ),
        ("sixteen env files", vec![(ef, &sixteen)], None),
        (
            "seventeen env files",
            vec![(ef, &seventeen)],
            Some((
                ef,
                "17 files, more than the 16 one variable may name (MAX_USER_FILES)",
            )),
        ),
        (
            "the same env file twice",
            vec![(ef, "/home/alice/env.list /home/alice/env.list")],
            Some((ef, "named twice")),
        ),
        ("four 60 KiB env files", vec![(ef, &four_big)], None),
        (
            "five 60 KiB env files",
            vec![(ef, &five_big)],
            Some((ef, "more than the 262144 a job may have (MAX_ENV_BYTES)")),
        ),
        (
            "a preserved environment too large",
            vec![("HUGE", &preserved)],
            Some(("job environment", "MAX_ENV_BYTES")),
        ),
        (
            "...which the job can leave behind",
            vec![
                ("HUGE", &preserved),
                ("LSB_DOCKER_PRESERVE_ENVIRONMENT", "false"),
            ],
            None,
        ),
    ];
    for (name, env, want) in cases {
        let mut all: Vec<(&str, &str)> = LSF_JOB.to_vec();
        all.extend(env.iter().copied());
        let snap = snap(&all);
        let ctx = job::from_env(&snap.env, snap.cwd.clone()).unwrap();
        let req = Request {
            image: None,
            command: vec!["true".into()],
            script: None,
        };
        match (build(&req, &snap, &site(), &ctx, &alice(), &probe), want) {
            (Ok(_), None) => {}
            (Err(e), Some((var, words))) => {
                let e = e.to_string();
                assert!(e.starts_with(var) && e.contains(words), "{name}: {e}");
            }
            (got, want) => panic!("{name}: got {:?}, want {want:?}", got.map(|p| p.env.len())),
        }
    }
}

/// Issue 11 item 10: the container gets the job's own limits (not dockerd's), one computation
/// with the device jobs' unlimited memlock. `(name, job limits, devices, want)`.
#[test]
fn the_job_keeps_its_own_resource_limits() {
    let u = |name: &'static str, soft: i64, hard: i64| Ulimit { name, soft, hard };
    use crate::config::Memlock;
    let unlimited = Some(Memlock::Unlimited);
    let cases: &[(&str, Vec<Ulimit>, Option<Memlock>, Vec<Ulimit>)] = &[
        (
            "a usual job, sorted by name",
            vec![
                u("nofile", 1024, 4096),
                u("core", 0, -1),
                u("memlock", 64, 64),
            ],
            None,
            vec![
                u("core", 0, -1),
                u("memlock", 64, 64),
                u("nofile", 1024, 4096),
            ],
        ),
        (
            "devices: memlock unlimited (the default), the rest the job's",
            vec![u("nofile", 1024, 4096), u("memlock", 64, 64)],
            unlimited,
            vec![u("memlock", -1, -1), u("nofile", 1024, 4096)],
        ),
        (
            "devices: memlock as devices.memlock says, even below the job's",
            vec![u("memlock", -1, -1)],
            Some(Memlock::Bytes(ByteSize::exact(8 << 20))),
            vec![u("memlock", 8 << 20, 8 << 20)],
        ),
        (
            "devices without a memlock limit read",
            vec![],
            unlimited,
            vec![u("memlock", -1, -1)],
        ),
        (
            "only the limits jobdock passes on",
            vec![u("rtprio", 99, 99), u("nproc", -1, -1)],
            None,
            vec![u("nproc", -1, -1)],
        ),
        ("nothing read, nothing set", vec![], None, vec![]),
    ];
    for (name, rlimits, device_memlock, want) in cases {
        assert_eq!(
            &super::limits::ulimits(rlimits, *device_memlock),
            want,
            "{name}"
        );
    }
    // Through the planner, with devices and devices.memlock = "8m", in both renderings.
    let mut cfg = site();
    cfg.devices.memlock = Memlock::Bytes(ByteSize::exact(8 << 20));
    let p = plan_cfg(&cfg, &[], &["true"]).unwrap();
    assert!(!p.devices.is_empty());
    let memlock = p.ulimits.iter().find(|u| u.name == "memlock").unwrap();
    assert_eq!((memlock.soft, memlock.hard), (8 << 20, 8 << 20));
    assert!(
        render::docker_run(&p)
            .iter()
            .any(|l| l.words == ["--ulimit", "memlock=8388608:8388608"]
                && l.why.contains("devices.memlock")),
        "{:?}",
        render::docker_run(&p)
    );
    // Through the planner, without devices: the job's memlock too, in both renderings.
    let mut cfg = site();
    cfg.devices.paths.clear();
    let p = plan_cfg(&cfg, &[], &["true"]).unwrap();
    assert_eq!(p.ulimits, super::limits::ulimits(JOB_RLIMITS, None));
    let shown: Vec<String> = render::docker_run(&p)
        .into_iter()
        .filter(|l| l.words[0] == "--ulimit")
        .map(|l| l.words[1].clone())
        .collect();
    assert_eq!(
        shown,
        [
            "core=0:-1",
            "memlock=65536:65536",
            "nofile=1024:1048576",
            "nproc=-1:-1",
            "stack=8388608:-1"
        ]
    );
}

#[test]
fn memory_from_the_allocation_else_the_site_default() {
    let mut cfg = site();
    cfg.limits.memory = ByteSize::exact(8 * ByteSize::GIB);
    assert_eq!(
        plan_cfg(&cfg, &[], &["true"]).unwrap().memory,
        ByteSize::exact(8 * ByteSize::GIB)
    );
    let s = snap(&[
        ("SLURM_JOB_ID", "1"),
        ("SLURM_MEM_PER_NODE", "1"),
        ("JOBDOCK_IMAGE", "x"),
    ]);
    let ctx = context(&s).unwrap();
    let err = build(
        &Request {
            image: None,
            command: vec!["true".into()],
            script: None,
        },
        &s,
        &cfg,
        &ctx,
        &alice(),
        &host(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("6 MiB"), "{err}");
}

/// What a hostile input must come to: a refusal naming the variable (or source) and the rule, or a
/// plan in which it is neutralized.
enum Want {
    Refused(&'static str, &'static str),
    Neutral(fn(&ContainerPlan) -> bool),
}

/// The host of `host()` with files the adversarial cases read as the user.
fn adversarial_host() -> FakeProbe {
    host()
        .file("/home/alice/nul.env", "A=x\0y\n")
        .file("/home/alice/gpu.env", "CUDA_VISIBLE_DEVICES=all\n")
        .file("/home/alice/user.env", "USER=root\n")
        .file("/home/alice/logname.env", "# ok\nLOGNAME=root\n")
        .file("/home/alice/huge.env", &"A=1\n".repeat(16 * 1024 + 1))
        .file("/home/alice/eq.env", "=x\n")
        .file("/home/alice/sneaky.hosts", "db:10.0.0.1 --privileged\n")
        .link("/home/alice/shadow-link", "/etc/shadow", Kind::File)
        .dir("/gpfs/lab/x")
}

/// Adversarial inputs beyond `overrides_refused` and the other tables above: image names that
/// smuggle syntax, env files and the preserved environment trying to take over what jobdock owns,
/// more spellings of volumes and the other overrides. Each is refused with its variable and rule,
/// or neutralized in the plan.
#[test]
fn adversarial_inputs_are_refused_or_neutralized() {
    use Want::{Neutral, Refused};
    let long = "a".repeat(256);
    let bad_digest = format!("alpine@sha256:{}", "g".repeat(64));
    let many = vec!["/gpfs/lab:/v"; 65]
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{v}{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let img = "LSB_CONTAINER_IMAGE";
    let vol = "LSB_DOCKER_VOLUMES";
    let envf = "LSB_DOCKER_ENV_FILE";
    let cases: Vec<(&str, &str, Want)> = vec![
        // Image names.
        (img, "alpine\n", Refused(img, "")),
        (img, "alpine:3;id", Refused(img, "")),
        (img, "http://evil/x", Refused(img, "")),
        (img, "../alpine", Refused(img, "")),
        (img, &bad_digest, Refused(img, "")),
        (img, &long, Refused(img, "")),
        (img, "evil.com:99999/x", Refused(img, "")),
        (img, "-h.example/x", Refused(img, "")),
        (img, "alpine:", Refused(img, "")),
        (img, "alpine?fromSrc=x", Refused(img, "")),
        (img, " alpine", Refused(img, "")),
        // The preserved environment never sets what jobdock owns or the host's loader.
        (
            "LD_PRELOAD",
            "/tmp/x.so",
            Neutral(|p| !p.env.contains_key("LD_PRELOAD")),
        ),
        (
            "LD_LIBRARY_PATH",
            "/tmp",
            Neutral(|p| !p.env.contains_key("LD_LIBRARY_PATH")),
        ),
        (
            "JOBDOCK_CONFIG",
            "/tmp/x",
            Neutral(|p| !p.env.contains_key("JOBDOCK_CONFIG")),
        ),
        (
            "SUDO_UID",
            "0",
            Neutral(|p| !p.env.contains_key("SUDO_UID")),
        ),
        (
            "NVIDIA_VISIBLE_DEVICES",
            "all",
            Neutral(|p| !p.env.contains_key("NVIDIA_VISIBLE_DEVICES")),
        ),
        ("TMPDIR", "/etc", Neutral(|p| p.env["TMPDIR"] == "/tmp")),
        ("LOGNAME", "root", Neutral(|p| p.env["LOGNAME"] == "alice")),
        // The prompt says the shell is in a container (issue 18.7).
        (
            "PS1",
            "\\u@\\h:\\w\\$ ",
            Neutral(|p| p.env["PS1"] == format!("({}) \\u@\\h:\\w\\$ ", p.image)),
        ),
        ("CR", "a\rb", Neutral(|p| !p.env.contains_key("CR"))),
        ("1BAD", "x", Neutral(|p| !p.env.contains_key("1BAD"))),
        ("A-B", "x", Neutral(|p| !p.env.contains_key("A-B"))),
        (
            "_",
            "/usr/local/bin/jobdock",
            Neutral(|p| !p.env.contains_key("_")),
        ),
        (
            "LSB_DOCKER_NETWORK",
            "host",
            Neutral(|p| p.env.keys().all(|k| !k.starts_with("LSB_DOCKER_"))),
        ),
        // Env files, read as the user.
        (
            envf,
            "/home/alice/nul.env",
            Refused(envf, "control character"),
        ),
        (envf, "/home/alice/gpu.env", Refused(envf, "set by jobdock")),
        (
            envf,
            "/home/alice/user.env",
            Refused(envf, "set by jobdock"),
        ),
        (
            envf,
            "/home/alice/logname.env",
            Refused(envf, "set by jobdock"),
        ),
        (
            envf,
            "/home/alice/huge.env",
            Refused(envf, "larger than 65536 bytes"),
        ),
        (
            envf,
            "/home/alice/eq.env",
            Refused(envf, "not a valid variable name"),
        ),
        (
            envf,
            "/home/alice/shadow-link",
            Refused(envf, "not a regular file"),
        ),
        (envf, "/home/alice", Refused(envf, "not a regular file")),
        (envf, "./env.list", Refused(envf, "absolute")),
        // Volume spellings.
        (vol, "/gpfs/lab:/x:ro,Z", Refused(vol, "only ro or rw")),
        (vol, "/gpfs/lab::/x", Refused(vol, "absolute path")),
        (vol, "/gpfs/lab:/x:ro:rw", Refused(vol, "SRC[:DST][:ro]")),
        (vol, "/gpfs/lab:/x:", Refused(vol, "only ro or rw")),
        (
            vol,
            &many,
            Refused(vol, "more than the 64 a job may mount (MAX_VOLUMES)"),
        ),
        (vol, "/gpfs/lab:/home/alice/../../etc", Refused(vol, "..")),
        (vol, "/gpfs/lab:/dev/shm", Refused(vol, "runtime owns")),
        (vol, "/gpfs/lab:/sys", Refused(vol, "runtime owns")),
        (
            vol,
            "/gpfs/lab:/etc/group",
            Refused(vol, "synthesized by jobdock"),
        ),
        (
            vol,
            "/gpfs/lab/x:/x /gpfs/lab/x:/x",
            Refused(vol, "already mounted"),
        ),
        (
            vol,
            "/gpfs/lab/./x:/x",
            Neutral(|p| {
                p.mounts
                    .iter()
                    .any(|m| m.source == Path::new("/gpfs/lab/x"))
            }),
        ),
        // The other overrides.
        (
            "LSB_DOCKER_WORKDIR",
            "/sys/kernel",
            Refused("LSB_DOCKER_WORKDIR", "runtime owns"),
        ),
        (
            "LSB_DOCKER_WORKDIR",
            "/proc",
            Refused("LSB_DOCKER_WORKDIR", "runtime owns"),
        ),
        (
            "LSB_DOCKER_WORKDIR",
            "/data/../proc",
            Refused("LSB_DOCKER_WORKDIR", ".."),
        ),
        (
            "LSB_DOCKER_ENTRYPOINT",
            "/bin/sh\n-c",
            Refused("LSB_DOCKER_ENTRYPOINT", "one program path"),
        ),
        (
            "LSB_DOCKER_ENTRYPOINT",
            "/bin/sh\t-c",
            Refused("LSB_DOCKER_ENTRYPOINT", "one program path"),
        ),
        (
            "LSB_DOCKER_ADD_HOST",
            "h:1.2.3.4 --privileged",
            Refused("LSB_DOCKER_ADD_HOST", "HOST:IP"),
        ),
        (
            "LSB_DOCKER_ADD_HOST_FILE",
            "/home/alice/sneaky.hosts",
            Refused("LSB_DOCKER_ADD_HOST_FILE", "not an IP address"),
        ),
        (
            "LSB_DOCKER_PORTS",
            "8990-9010",
            Refused("LSB_DOCKER_PORTS", "within 8000-8999"),
        ),
        (
            "LSB_DOCKER_PORTS",
            "0",
            Refused("LSB_DOCKER_PORTS", "is not PORT"),
        ),
        (
            "LSB_DOCKER_SHM_SIZE",
            "-1",
            Refused("LSB_DOCKER_SHM_SIZE", ""),
        ),
        (
            "LSB_DOCKER_SHM_SIZE",
            "1e9",
            Refused("LSB_DOCKER_SHM_SIZE", ""),
        ),
        (
            "LSB_DOCKER_CGROUP",
            "../..",
            Refused("LSB_DOCKER_CGROUP", "no such cgroup parent"),
        ),
        (
            "LSB_DOCKER_NETWORK",
            "HOST",
            Refused("LSB_DOCKER_NETWORK", "must be one of"),
        ),
        (
            "LSB_DOCKER_IPC",
            "container:victim ",
            Refused("LSB_DOCKER_IPC", "another container"),
        ),
        (
            "LSB_DOCKER_RUN_RAW_ARGS",
            "1; rm -rf /",
            Refused("LSB_DOCKER_RUN_RAW_ARGS", "true or false"),
        ),
        (
            "LSB_DOCKER_PRESERVE_ENVIRONMENT",
            "yes please",
            Refused("LSB_DOCKER_PRESERVE_ENVIRONMENT", "true or false"),
        ),
    ];
    let count = cases.len();
    let probe = adversarial_host();
    for (var, value, want) in cases {
        let mut env: Vec<(&str, &str)> = LSF_JOB.to_vec();
        env.retain(|(k, _)| *k != var);
        env.push((var, value));
        let s = snap(&env);
        let ctx = context(&s).unwrap();
        let req = Request {
            image: None,
            command: vec!["true".into()],
            script: None,
        };
        let planned = build(&req, &s, &site(), &ctx, &alice(), &probe);
        match (want, planned) {
            (Refused(prefix, rule), Err(e)) => {
                let e = e.to_string();
                assert!(
                    e.starts_with(prefix) && e.contains(rule),
                    "{var}={value:?}: want {prefix}...{rule:?}, got: {e}"
                );
            }
            (Neutral(ok), Ok(p)) => assert!(ok(&p), "{var}={value:?}: not neutralized"),
            (Refused(..), Ok(_)) => panic!("{var}={value:?}: accepted"),
            (Neutral(_), Err(e)) => panic!("{var}={value:?}: refused: {e}"),
        }
    }
    assert!(count >= 55, "{count} cases");
}

/// The identity reaches the plan only as numbers: names from the directory that could add a line
/// or a field to the synthesized files are left out of them, and dockerd never gets a name.
#[test]
fn the_identity_reaches_the_container_as_numbers_only() {
    let mut db = FakeDb::site();
    db.groups.insert(3001, "evil:x:0:alice".into());
    db.groups.insert(3002, "2001".into());
    let id = identity::resolve(
        Caller {
            real_uid: 2001,
            real_gid: 2001,
        },
        None,
        &JobContext::default(),
        &Env::new(),
        &db,
    )
    .unwrap();
    let s = snap(LSF_JOB);
    let ctx = context(&s).unwrap();
    let req = Request {
        image: None,
        command: vec!["id".into()],
        script: None,
    };
    let p = build(&req, &s, &site(), &ctx, &id, &host()).unwrap();
    let body = crate::engine::body::create_json(&p);
    assert_eq!(body["User"], "2001:2001");
    assert_eq!(
        body["HostConfig"]["GroupAdd"],
        serde_json::json!(["3001", "3002"])
    );
    assert!(!p.group.contains("evil"), "{}", p.group);
    assert_eq!(p.passwd.lines().count(), 3, "{}", p.passwd);
    for line in p.group.lines() {
        assert_eq!(line.split(':').count(), 4, "{line}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Strings users might put in an override: fragments of valid values, paths, and injection.
    fn hostile() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "/gpfs/lab",
            "/gpfs/lab/escape",
            "/gpfs/lab/docker",
            "/etc",
            "/",
            "/data",
            ":",
            ":ro",
            ":Z",
            " ",
            "..",
            "host",
            "container:x",
            "bridge",
            "16g",
            "99g",
            "8001",
            "80",
            "/home/alice/env.list",
            "/etc/shadow",
            "\n",
            "true",
            "$(id)",
            "--privileged",
            "/proc",
            "/var/run/docker.sock",
            "/scratch/alice",
            "-",
        ]);
        prop::collection::vec(pieces, 0..6).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

        /// Whatever the user sets, a plan that is produced never runs privileged, as root, with a
        /// capability outside the allowlist, in a host PID or user namespace, or with a bind
        /// source outside the allowed roots, the user's own directories and jobdock's files.
        #[test]
        fn invariants_hold_for_any_overrides(
            var in prop::sample::select(overrides::override_names().collect::<Vec<_>>()),
            alias in any::<bool>(),
            value in hostile(),
            var2 in prop::sample::select(overrides::override_names().collect::<Vec<_>>()),
            value2 in hostile(),
        ) {
            let prefix = if alias { "LSF_DOCKER_" } else { "LSB_DOCKER_" };
            let (k1, k2) = (format!("{prefix}{var}"), format!("LSB_DOCKER_{var2}"));
            let Ok(p) = plan_with(&[(&k1, &value), (&k2, &value2)], &["true"]) else { return Ok(()) };
            let body = crate::engine::body::create_json(&p);
            let hc = &body["HostConfig"];
            prop_assert_eq!(&hc["Privileged"], &serde_json::json!(false));
            prop_assert_eq!(&body["User"], &serde_json::json!("2001:2001"));
            prop_assert_eq!(&hc["CapDrop"], &serde_json::json!(["ALL"]));
            for cap in hc["CapAdd"].as_array().unwrap() {
                let cap: Capability = cap.as_str().unwrap().parse().unwrap();
                prop_assert!(Capability::DEFAULT_ALLOW.contains(&cap));
            }
            prop_assert!(hc["SecurityOpt"].as_array().unwrap().contains(&serde_json::json!("no-new-privileges")));
            prop_assert_eq!(&hc["PidMode"], &serde_json::json!(""));
            prop_assert_eq!(&hc["UsernsMode"], &serde_json::json!(""));
            prop_assert!(!hc["NetworkMode"].as_str().unwrap().starts_with("container:"));
            prop_assert!(!hc["IpcMode"].as_str().unwrap().starts_with("container:"));
            let allowed = ["/gpfs", "/scratch", "/home/alice", "/tmp/212.tmpdir", "/run/jobdock/"];
            for m in hc["Mounts"].as_array().unwrap() {
                let source = m["Source"].as_str().unwrap();
                prop_assert!(allowed.iter().any(|a| source.starts_with(a)), "bind source {}", source);
                let ours = source.starts_with("/run/jobdock/");
                prop_assert!(ours || paths::check_host_path(Path::new(source), Strictness::UserPath).is_ok(), "bind source {}", source);
            }
        }
    }

    /// Names and values the job's environment might hold: what jobdock owns, the host's loader,
    /// jobdock's own, invalid names, and injection in values.
    fn env_entry() -> impl Strategy<Value = (String, String)> {
        let names = prop::sample::select(vec![
            "HOME",
            "USER",
            "LOGNAME",
            "TMPDIR",
            "SHELL",
            "PATH",
            "LD_PRELOAD",
            "LD_AUDIT",
            "JOBDOCK_CONFIG",
            "LSB_DOCKER_VOLUMES",
            "LSF_DOCKER_NETWORK",
            "SUDO_UID",
            "BASH_FUNC_x%%",
            "NVIDIA_VISIBLE_DEVICES",
            "HOSTNAME",
            "_",
            "1A",
            "A=B",
            "A B",
            "OMP_NUM_THREADS",
            "MY_VAR",
            "LSB_JOBID_X",
        ]);
        let values = prop::sample::select(vec![
            "root",
            "/root",
            "/etc",
            "0",
            "all",
            "a\nb",
            "a\rb",
            "() { :; }",
            "/tmp/x.so",
            "",
            "$(id)",
            "x",
        ]);
        (names, values).prop_map(|(n, v)| (n.to_string(), v.to_string()))
    }

    /// Identities a directory service might return, sane or not.
    fn directory_entry() -> impl Strategy<Value = (u32, u32, Vec<u32>, String)> {
        let id = prop_oneof![1u32..70_000, Just(0u32), Just(1 << 31), Just(u32::MAX)];
        let name = prop::sample::select(vec![
            "alice",
            "2001",
            "root",
            "+nis",
            "-x",
            "a:b",
            "a\nb",
            "a b",
            "é",
            "x".repeat(300).leak(),
        ]);
        (
            id.clone(),
            id.clone(),
            prop::collection::vec(id, 0..6),
            name,
        )
            .prop_map(|(u, g, gs, n)| (u, g, gs, n.to_string()))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        /// Whatever the job's environment holds, the container's never takes over what jobdock
        /// owns, never gets the host's loader or jobdock's own variables, and every entry is one
        /// valid name with a one-line value.
        #[test]
        fn the_environment_never_takes_over_what_jobdock_owns(
            entries in prop::collection::vec(env_entry(), 0..8),
            preserve in any::<bool>(),
        ) {
            let mut env: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let keep = if preserve { "true" } else { "false" };
            env.push(("LSB_DOCKER_PRESERVE_ENVIRONMENT", keep));
            let mut all: Vec<(&str, &str)> = LSF_JOB.to_vec();
            all.retain(|(k, _)| !env.iter().any(|(n, _)| n == k));
            all.extend(env);
            let s = snap(&all);
            // A variable the scheduler adapter refuses (TMPDIR=root) is not a plan.
            let Ok(ctx) = context(&s) else { return Ok(()) };
            let req = Request { image: None, command: vec!["true".into()], script: None };
            let Ok(p) = build(&req, &s, &site(), &ctx, &alice(), &host()) else { return Ok(()) };
            prop_assert_eq!(&p.env["HOME"], "/home/alice");
            prop_assert_eq!(&p.env["USER"], "alice");
            prop_assert_eq!(&p.env["LOGNAME"], "alice");
            prop_assert_eq!(&p.env["TMPDIR"], "/tmp");
            for (k, v) in &p.env {
                prop_assert!(envpolicy::valid_name(k), "{}", k);
                prop_assert!(!v.contains(['\n', '\r', '\0']), "{}={:?}", k, v);
                for banned in ["PATH", "LD_PRELOAD", "LD_AUDIT", "SHELL", "HOSTNAME", "_", "NVIDIA_VISIBLE_DEVICES"] {
                    prop_assert_ne!(k.as_str(), banned);
                }
                for prefix in ["JOBDOCK_", "LSB_DOCKER_", "LSF_DOCKER_", "SUDO_", "BASH_FUNC_"] {
                    prop_assert!(!k.starts_with(prefix), "{}", k);
                }
            }
        }

        /// Whatever the directory says about a user, a plan is made only for ids in 1..2^31, the
        /// container gets them as numbers exactly, and the synthesized passwd and group have no
        /// line or field the entry could have added.
        #[test]
        fn the_identity_is_numeric_in_range_and_cannot_add_lines(
            (uid, gid, groups, name) in directory_entry(),
        ) {
            let mut db = FakeDb::default();
            db.users.push(identity::PasswdEntry { name: name.clone(), uid, gid, home: "/home/alice".into() });
            db.memberships.insert(name.clone(), groups.clone());
            for g in groups.iter().chain([&gid]) {
                db.groups.insert(*g, format!("g{g}"));
            }
            let caller = Caller { real_uid: uid, real_gid: gid };
            let Ok(id) = identity::resolve(caller, None, &JobContext::default(), &Env::new(), &db) else {
                return Ok(());
            };
            let s = snap(LSF_JOB);
            let ctx = context(&s).unwrap();
            let req = Request { image: None, command: vec!["id".into()], script: None };
            let Ok(p) = build(&req, &s, &site(), &ctx, &id, &host()) else { return Ok(()) };
            let body = crate::engine::body::create_json(&p);
            prop_assert_eq!(&body["User"], &serde_json::json!(format!("{uid}:{gid}")));
            prop_assert!(uid != 0 && gid != 0 && uid < (1 << 31) && gid < (1 << 31));
            let mut want: Vec<u32> = groups.iter().copied().filter(|g| *g != gid).collect();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(&p.group_add, &want);
            prop_assert!(p.group_add.iter().all(|g| *g != 0 && *g < (1 << 31)));
            prop_assert_eq!(p.passwd.lines().count(), 3);
            for line in p.passwd.lines() {
                prop_assert_eq!(line.split(':').count(), 7, "{:?}", line);
            }
            for line in p.group.lines() {
                prop_assert_eq!(line.split(':').count(), 4, "{:?}", line);
            }
        }
    }
}

/// A directory named like the job's tmpdir but made by someone else (before the job, in the
/// world-writable /tmp) is not the job's /tmp: it is left out, and the user told why.
#[test]
fn a_job_tmpdir_someone_else_owns_is_not_mounted() {
    let p = plan_with(
        &[("LSB_JOBID", "213"), ("__LSF_JOB_TMPDIR__", "")],
        &["true"],
    )
    .unwrap();
    assert!(
        !p.mounts.iter().any(|m| m.target == Path::new("/tmp")),
        "{:?}",
        p.mounts
    );
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("/tmp/213.tmpdir") && n.contains("owned by uid 2002")),
        "{:?}",
        p.notes
    );
    // None where the convention puts it: nothing to say (most sites have none).
    let p = plan_with(
        &[("LSB_JOBID", "214"), ("__LSF_JOB_TMPDIR__", "")],
        &["true"],
    )
    .unwrap();
    assert!(
        !p.notes.iter().any(|n| n.contains("tmpdir")),
        "{:?}",
        p.notes
    );
    // The job's own, derived from LSF's convention (no variable names it).
    let p = plan_with(&[("__LSF_JOB_TMPDIR__", "")], &["true"]).unwrap();
    assert!(
        p.mounts
            .iter()
            .any(|m| m.target == Path::new("/tmp") && m.source == Path::new("/tmp/212.tmpdir")),
        "{:?}",
        p.mounts
    );
}

// ---- issue 12.4: private mount namespaces ------------------------------------------------------

/// Slurm's job_container/tmpfs gives the job a private /tmp (the user's, 0700) in its own mount
/// namespace, and TMPDIR=/tmp: that /tmp, as the job sees it, is the container's /tmp, pinned
/// like every user-resolved source (so that the engine stages it where dockerd sees it). The
/// node's /tmp (root's) is not mounted, nor one that is a symlink to a directory of the user's.
#[test]
fn a_private_tmp_of_the_jobs_user_is_the_containers_tmp() {
    let env = [
        ("SLURM_JOB_ID", "4567"),
        ("SLURM_STEP_ID", "0"),
        ("TMPDIR", "/tmp"),
        ("JOBDOCK_IMAGE", "jobdock-test/busybox"),
    ];
    let snap = snap(&env);
    let ctx = context(&snap).unwrap();
    let req = Request {
        image: None,
        command: vec!["true".into()],
        script: None,
    };
    let tmp_mounts = |probe: &FakeProbe| {
        let p = build(&req, &snap, &site(), &ctx, &alice(), probe).unwrap();
        let mounts: Vec<(PathBuf, PathBuf)> = p
            .mounts
            .iter()
            .filter(|m| m.target.starts_with("/tmp") || m.source.starts_with("/tmp"))
            .map(|m| (m.source.clone(), m.target.clone()))
            .collect();
        (mounts, p)
    };
    let (mounts, p) = tmp_mounts(&host().dir_owned_by("/tmp", 2001));
    assert_eq!(mounts, [("/tmp".into(), "/tmp".into())], "{:?}", p.mounts);
    assert!(p.pins.contains_key(Path::new("/tmp")), "{:?}", p.pins);
    assert_eq!(p.env["TMPDIR"], "/tmp");
    for (name, probe) in [
        ("the node's /tmp", host().dir_owned_by("/tmp", 0)),
        ("another user's", host().dir_owned_by("/tmp", 2002)),
        (
            "a symlink to the user's",
            host().dir_owned_by("/scratch/alice/tmp", 2001).link(
                "/tmp",
                "/scratch/alice/tmp",
                Kind::Dir,
            ),
        ),
        ("none", host()),
    ] {
        let (mounts, p) = tmp_mounts(&probe);
        assert_eq!(mounts, [], "{name}");
        // Without a tmpdir of its own, the job's /tmp is a tmpfs of limits.tmp_size (18.7).
        assert_eq!(p.tmp_tmpfs, Some(site().limits.tmp_size), "{name}");
        assert_eq!(
            crate::plan::tmpfs(p.tmp_tmpfs)["/tmp"],
            "rw,exec,nosuid,nodev,size=1073741824,mode=1777"
        );
    }
    let (_, p) = tmp_mounts(&host().dir_owned_by("/tmp", 2001));
    assert_eq!(p.tmp_tmpfs, None, "the job's own /tmp is mounted there");
}

/// Slurm's PMIx plugin names its clients' directory (PMIX_NSDIR) to them only through the PMIx
/// server: jobdock finds it where the plugin makes it, and mounts it only when it is the user's.
#[test]
fn a_pmix_steps_client_directory_is_mounted_at_its_own_path_when_it_is_the_users() {
    let cases: &[(&str, &[(&str, &str)], Option<&str>, &str)] = &[
        (
            "TmpFS of SLURM_CONF, with %n",
            &[
                ("PMIX_NAMESPACE", "slurm.pmix.77.0"),
                ("SLURM_CONF", "/etc/slurm/slurm.conf"),
                ("SLURMD_NODENAME", "n1"),
            ],
            Some("/var/tmp/n1/spmix_appdir_2001_77.0"),
            "",
        ),
        (
            "PMIxCliTmpDirBase of the mpi.conf beside it",
            &[
                ("PMIX_NAMESPACE", "slurm.pmix.77.0"),
                ("SLURM_CONF", "/etc/slurm-b/slurm.conf"),
                ("SLURMD_NODENAME", "n1"),
            ],
            Some("/var/pmix/spmix_appdir_2001_77.0"),
            "",
        ),
        (
            "SLURM_PMIX_TMPDIR first",
            &[
                ("PMIX_NAMESPACE", "slurm.pmix.77.0"),
                ("SLURM_CONF", "/etc/slurm/slurm.conf"),
                ("SLURM_PMIX_TMPDIR", "/gpfs/lab"),
            ],
            Some("/gpfs/lab/spmix_appdir_2001_77.0"),
            "",
        ),
        (
            "another user's directory of that name",
            &[
                ("PMIX_NAMESPACE", "slurm.pmix.78.0"),
                ("SLURM_CONF", "/etc/slurm/slurm.conf"),
                ("SLURMD_NODENAME", "n1"),
            ],
            None,
            "owned by uid 2002",
        ),
        (
            "the default /tmp, which is the job's tmpdir here",
            &[("PMIX_NAMESPACE", "slurm.pmix.77.0")],
            None,
            "under /tmp, which is the job's tmpdir",
        ),
        (
            "not Slurm's namespace",
            &[
                ("PMIX_NAMESPACE", "prterun.77.0"),
                ("SLURM_CONF", "/etc/slurm/slurm.conf"),
                ("SLURMD_NODENAME", "n1"),
            ],
            None,
            "",
        ),
    ];
    for (name, env, want, note) in cases {
        let p = plan_cfg(&site(), env, &["true"]).unwrap();
        let got: Vec<&MountPlan> = p
            .mounts
            .iter()
            .filter(|m| m.why.contains("PMIx client"))
            .collect();
        match want {
            Some(dir) => {
                assert_eq!(got.len(), 1, "{name}: {:?}", p.mounts);
                assert_eq!(got[0].source, Path::new(dir), "{name}");
                assert_eq!(got[0].target, Path::new(dir), "{name}");
                assert!(!got[0].readonly, "{name}");
            }
            None => assert!(got.is_empty(), "{name}: {got:?}"),
        }
        let noted = p.notes.iter().filter(|n| n.contains("PMIx client")).count();
        if note.is_empty() {
            assert_eq!(noted, 0, "{name}: {:?}", p.notes);
        } else {
            assert!(
                p.notes
                    .iter()
                    .any(|n| n.contains("PMIx client") && n.contains(note)),
                "{name}: {:?}",
                p.notes
            );
        }
    }
}

// ---- issue 15.2: the output FIFOs ------------------------------------------------------------------

/// With `engine.output = "fifo"`, a batch job's command runs through the wrapper with two more
/// mounts from its staging directory; without them (`without_fifos`) it is exactly the plan
/// `"attach"` makes. A terminal's job and raw mode keep attach.
#[test]
fn fifo_output_wraps_the_command_and_adds_exactly_the_two_fifo_mounts() {
    let mut fifo = site();
    fifo.engine.output = crate::config::OutputPath::Fifo;
    for command in [&[][..], &["id", "-u"][..]] {
        let attach = plan_cfg(&site(), &[], command).unwrap();
        let p = plan_cfg(&fifo, &[], command).unwrap();
        let fifos = p.staging.fifos.clone().expect("fifos planned");
        assert_eq!(fifos.stdout, p.staging.dir.join("stdout"));
        assert_eq!(fifos.stderr, p.staging.dir.join("stderr"));
        let wrapper: Vec<String> = FIFO_WRAPPER.iter().map(ToString::to_string).collect();
        let mut want = wrapper.clone();
        want.extend(attach.entrypoint.clone().unwrap());
        assert_eq!(p.entrypoint, Some(want), "{command:?}");
        assert_eq!(p.cmd, attach.cmd);
        let added: Vec<(&Path, &Path, bool)> = p
            .mounts
            .iter()
            .filter(|m| !attach.mounts.contains(m))
            .map(|m| (m.source.as_path(), m.target.as_path(), m.readonly))
            .collect();
        assert_eq!(
            added,
            [
                (fifos.stdout.as_path(), Path::new(FIFO_STDOUT), false),
                (fifos.stderr.as_path(), Path::new(FIFO_STDERR), false),
            ]
        );
        assert_eq!(p.without_fifos(), attach, "{command:?}");
        // The docker run rendering names them too, as one exact argv.
        let text = render::docker_run_text(&p);
        assert!(text.contains("target=/dev/jobdock/stdout"), "{text}");
        assert!(text.contains("--entrypoint /bin/sh"), "{text}");
    }
    // Raw mode (the image's own entrypoint) and a terminal keep attach.
    let raw = plan_cfg(&fifo, &[("LSB_DOCKER_RUN_RAW_ARGS", "1")], &["serve"]).unwrap();
    assert_eq!(raw.staging.fifos, None);
    assert_eq!(raw.entrypoint, None);
    let mut all: Vec<(&str, &str)> = LSF_JOB.to_vec();
    all.retain(|(k, _)| *k != "LSB_CONTAINER_IMAGE");
    all.push(("LSB_CONTAINER_IMAGE", "alpine"));
    let mut tty = snap(&all);
    tty.stdin_is_tty = true;
    let ctx = context(&tty).unwrap();
    let req = Request {
        command: vec!["id".into()],
        ..Default::default()
    };
    let p = build(&req, &tty, &fifo, &ctx, &alice(), &host()).unwrap();
    assert_eq!(p.staging.fifos, None);
    assert!(
        !p.mounts
            .iter()
            .any(|m| m.target.starts_with("/dev/jobdock"))
    );
}
