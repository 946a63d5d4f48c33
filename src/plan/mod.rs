//! The container plan: a plain value holding every decision about the job's container, built from
//! a snapshot of the process, the site config, the job context and the user's identity. The only
//! access to the host is through the `HostProbe` seam (as the job user); no clock, no environment
//! read here, no daemon. Everything a security reviewer cares about is decided in `build`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{OutputPath, PullPolicy, SiteConfig};
use crate::identity::{self, Caller, Identity};
use crate::image::ImageRef;
use crate::job::cgroup::JobCgroup;
use crate::job::{Env, JobContext};
use crate::overrides::{self, Refusal};
use crate::probe::{FileId, HostProbe, Recording};
use crate::units::{ByteSize, Capability};

mod command;
mod environment;
mod limits;
mod mounts;
mod network;
pub mod render;

pub use command::Command;
pub use environment::{MAX_ENV_BYTES, MAX_USER_FILES};
pub use limits::{Devices, Limits};
pub use mounts::Mounts;
pub use network::{MAX_EXTRA_HOSTS, Network};

/// What jobdock read from the process and the OS once, before planning.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub env: Env,
    pub cwd: Option<PathBuf>,
    pub caller: Caller,
    pub pid: u32,
    pub hostname: String,
    pub host_cpus: u32,
    pub stdin_is_tty: bool,
    /// A random token that makes the job's staging directory name unpredictable.
    pub token: String,
    /// The cgroup jobdock runs in (the scheduler's job cgroup inside a job).
    pub cgroup: Option<JobCgroup>,
    /// That cgroup's memory limit, if it has one.
    pub cgroup_memory_limit: Option<u64>,
    /// The CPUs jobdock may run on (`0-3,8`), when fewer than the host's: under Slurm, the
    /// task's own binding.
    pub cpus_allowed: Option<String>,
    /// The CPUs of jobdock's cpuset cgroup, when fewer than the host's: under Slurm, all of the
    /// step's tasks' on this node.
    pub cgroup_cpus: Option<String>,
    /// jobdock's own resource limits, for each of [`ULIMITS`]: the job's, as the scheduler (or
    /// the user's shell) set them. Read once, before planning.
    pub rlimits: Vec<Ulimit>,
    /// The jobdock binary on the host, mounted read-only as a step container's agent; `None`: no
    /// step containers.
    pub exe: Option<OwnBinary>,
}

/// jobdock's own binary on the host (`/proc/self/exe`) and the shared objects the running process
/// has mapped (`/proc/self/maps`: its dynamic loader, libc, libgcc_s), which a step container gets
/// beside it, read-only, so that its agent runs in any image, also one without the host's glibc
/// (a static busybox, alpine's musl). The tasks the agent starts run the image's own programs
/// and libraries: the loader is named on the agent's command line, never in the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnBinary {
    pub path: PathBuf,
    pub libraries: Vec<PathBuf>,
}

impl OwnBinary {
    /// The dynamic loader among the libraries (`ld-linux-x86-64.so.2`, `ld-linux-aarch64.so.1`,
    /// `ld64.so.2`); `None` for a static build, which runs by itself.
    fn loader(&self) -> Option<&Path> {
        self.libraries.iter().map(PathBuf::as_path).find(|l| {
            l.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ld-linux") || n.starts_with("ld64.so"))
        })
    }
}

/// The resource limits a job's container gets from the job itself, by Docker's names.
pub const ULIMITS: &[&str] = &["core", "memlock", "nofile", "nproc", "stack"];

/// One resource limit (`--ulimit NAME=SOFT:HARD`); -1 is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Ulimit {
    pub name: &'static str,
    pub soft: i64,
    pub hard: i64,
}

/// What the command line asked for.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub image: Option<String>,
    pub command: Vec<String>,
    /// The user's exact command text, recovered from an LSF job file by `lsf-starter`: staged as
    /// a script and run through `/bin/sh` in the container.
    pub script: Option<String>,
}

/// A bind mount in the plan. `why` explains it in `jobdock plan`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MountPlan {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
    pub why: String,
}

/// Where the synthesized files are written before the container is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Staging {
    pub dir: PathBuf,
    pub passwd: PathBuf,
    pub group: PathBuf,
    /// The staged job script, when there is one (`ContainerPlan::script`).
    pub script: Option<PathBuf>,
    /// A step container's agent directory (its socket), owned by the job user, mode 0700.
    pub agent_dir: Option<PathBuf>,
    /// The FIFOs the job's stdout and stderr go to (`engine.output = "fifo"`), made by the engine.
    pub fifos: Option<Fifos>,
    /// The virtual cluster's ssh files (`StepPlan::sshd`), the job user's, mode 0700.
    pub ssh_dir: Option<PathBuf>,
}

/// The job's output FIFOs in the staging directory, mounted at [`FIFO_STDOUT`] and
/// [`FIFO_STDERR`]; the command is run through [`FIFO_WRAPPER`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fifos {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// Where the job's stdout FIFO appears inside the container.
pub const FIFO_STDOUT: &str = "/dev/jobdock/stdout";
/// Where the job's stderr FIFO appears inside the container.
pub const FIFO_STDERR: &str = "/dev/jobdock/stderr";
/// What runs the job's command with its stdout and stderr on the FIFOs: the entrypoint is this
/// followed by the job's own entrypoint, and the command is the job's.
pub const FIFO_WRAPPER: [&str; 4] = [
    "/bin/sh",
    "-c",
    "exec >/dev/jobdock/stdout 2>/dev/jobdock/stderr && exec \"$@\"",
    "jobdock",
];

/// Where a staged job script appears inside the container.
pub const SCRIPT_TARGET: &str = "/.jobdock/job.sh";

/// In a step container's environment: the names of the variables jobdock set in it (a comma
/// between each), which the agent takes out of its own before it adds each task's.
pub const TASK_ENV_NAMES: &str = "JOBDOCK_TASK_ENV_NAMES";

/// Where jobdock's own binary appears in a step container, run as its agent (`jobdock agent`).
pub const AGENT_TARGET: &str = "/.jobdock/agent";
/// Where the shared objects of jobdock's binary appear in a step container ([`OwnBinary`]).
pub const AGENT_LIB_TARGET: &str = "/.jobdock/lib";
/// Where the agent's directory appears in a step container; its socket is [`AGENT_SOCKET`].
pub const AGENT_DIR_TARGET: &str = "/.jobdock/run";
pub const AGENT_SOCKET: &str = "agent.sock";

/// One container per job step per node (issue 14): the first task of the step on the node
/// creates it, with jobdock's agent as its command; every task (the first too) hands the agent
/// its own argv, environment, working directory and stdio, and gets its exit status back.
///
/// A container the job's tasks name (`LSB_DOCKER_CONTAINER_NAME`, srun's `--container-name`) is
/// the same, shared by every step of the job that names it on the node: made by the first, kept
/// running (with whatever its tasks left in it) until the job ends and its epilog removes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepPlan {
    pub cluster: String,
    pub node: String,
    /// The step's tasks on this node: the agent ends when that many have come and gone. `None`:
    /// a named container, kept for the job's later steps.
    pub local_tasks: Option<u32>,
    /// This task, as the agent runs it.
    pub task: TaskPlan,
    /// The job's virtual cluster: the container's sshd (a named container's alone).
    pub sshd: Option<SshdPlan>,
}

/// The per-job sshd of a job's named container (`LSB_DOCKER_SSHD`), and the ssh files of the
/// job's virtual cluster (`crate::sshd`), written by the engine in [`Staging::ssh_dir`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SshdPlan {
    /// This node's sshd's port.
    pub port: u16,
    /// Every node of the job, this one too, with its slots and its sshd's port.
    pub nodes: Vec<crate::sshd::Node>,
    /// The job user's name (sshd's `AllowUsers`, ssh's `User`).
    pub user: String,
    /// The one name ssh knows the job's host key by, whatever the node.
    pub host_key_alias: String,
    /// What the job's keys are derived from: scheduler, cluster, job and uid.
    pub key_context: String,
    /// The site secret they are derived with (`mpi.sshd_secret`).
    pub secret: PathBuf,
}

/// Who shares a step container: the tasks of one step on the node, or every step of the job
/// that names it (`LSB_DOCKER_CONTAINER_NAME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shared<'c> {
    Step(&'c crate::job::Parallel),
    Named(&'c crate::job::Parallel, &'c str),
}

impl<'c> Shared<'c> {
    fn parallel(self) -> &'c crate::job::Parallel {
        match self {
            Shared::Step(p) | Shared::Named(p, _) => p,
        }
    }
}

/// A task the agent runs in its step container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TaskPlan {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// `None`: the container's working directory.
    pub cwd: Option<PathBuf>,
    /// The CPUs the scheduler bound the task to (`0-3,8`), which it keeps in the container;
    /// `None`: the container's.
    #[serde(default)]
    pub cpus: Option<String>,
}

/// A published port range, already checked against `ports.range`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortPlan {
    pub host: (u16, u16),
    pub container: (u16, u16),
    pub protocol: &'static str,
}

/// What every job container is, whatever the job: one value that the create body, the `docker run`
/// rendering and the post-create check all read (each destructures it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hardening {
    /// Capabilities dropped before the site's allowlist is added back.
    pub cap_drop: &'static str,
    pub privileged: bool,
    /// A real PID 1 (docker-init) that reaps zombies and passes signals on.
    pub init: bool,
    /// The log driver: the scheduler captures output; json logs would fill dockerd's disk.
    pub log_driver: &'static str,
    /// `Healthcheck.Test`: no image HEALTHCHECK, which dockerd would exec in the container with
    /// the job's groups resolved by name in its current `/etc/group`.
    pub healthcheck: &'static str,
    /// `RestartPolicy.Name`: started once, as checked; a restart resolves the user again in the
    /// changed image.
    pub restart: &'static str,
}

/// The hardening of every job container.
pub const HARDENING: Hardening = Hardening {
    cap_drop: "ALL",
    privileged: false,
    init: true,
    log_driver: "none",
    healthcheck: "NONE",
    restart: "no",
};

/// Every decision about the job's container. Both renderings (the `docker run` line and the Engine
/// API create body) destructure this without `..`, so a new field must be rendered by both.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerPlan {
    /// What every job container is ([`HARDENING`]).
    pub hardening: Hardening,
    /// The image the user named (`--image`, `LSB_CONTAINER_IMAGE`, `JOBDOCK_IMAGE`), allowed by
    /// `images.allowed_registries`.
    pub image: ImageRef,
    /// When to pull it (`engine.pull`).
    pub pull: PullPolicy,
    /// The container's name: scheduler, job and jobdock's pid (unique on the node).
    pub name: String,
    /// `jobdock.job`, `jobdock.uid`, `jobdock.scheduler`, `jobdock.step`: how cleanup finds it.
    pub labels: BTreeMap<String, String>,
    /// The synthesized `/etc/passwd`: root, nobody and the job user.
    pub passwd: String,
    /// The synthesized `/etc/group`: the user's groups by name.
    pub group: String,
    /// The job script to stage (`Request::script`).
    pub script: Option<String>,
    /// Where the synthesized files are written before create.
    pub staging: Staging,
    /// The execution host's name.
    pub hostname: String,
    /// Numeric `uid:gid`: names would be resolved in the image's own files.
    pub user: (u32, u32),
    /// The user's supplementary gids from the host's NSS, as numbers.
    pub group_add: Vec<u32>,
    /// `None`: the image's entrypoint (raw mode); `Some([])`: none at all.
    pub entrypoint: Option<Vec<String>>,
    /// `None`: the image's command.
    pub cmd: Option<Vec<String>>,
    /// The container's whole environment (`environment`).
    pub env: BTreeMap<String, String>,
    /// Where the job starts; `None`: the image's `WORKDIR` (checked after create).
    pub working_dir: Option<PathBuf>,
    /// Every bind mount, checked as the user and against the layout rule (`mounts`).
    pub mounts: Vec<MountPlan>,
    /// The capabilities left after dropping all (`security.cap_add`).
    pub cap_add: Vec<Capability>,
    /// `no-new-privileges` and the site's SELinux labels.
    pub security_opt: Vec<String>,
    /// Host device nodes the container gets at the same paths (`devices.paths`).
    pub devices: Vec<PathBuf>,
    /// GPUs by the host's ids (a confirmed job's allocation only).
    pub gpus: Vec<String>,
    /// The memory limit, also the memory+swap limit (no swap).
    pub memory: ByteSize,
    /// CPU time as nanoCPUs: the job's CPU count, at most the host's.
    pub nano_cpus: Option<i64>,
    /// The CPUs the job may use (its scheduler affinity).
    pub cpuset_cpus: Option<String>,
    /// Most processes the container may have (`limits.pids`).
    pub pids_limit: i64,
    /// `/dev/shm`'s size (`LSB_DOCKER_SHM_SIZE`); `None`: dockerd's 64 MiB.
    pub shm_size: Option<ByteSize>,
    /// A tmpfs of this size is the container's `/tmp` (`limits.tmp_size`), for a job without a
    /// tmpdir of its own; see `tmpfs`.
    pub tmp_tmpfs: Option<ByteSize>,
    /// The network mode (`network.allowed`).
    pub network: String,
    /// The IPC mode (`ipc.allowed`).
    pub ipc: String,
    /// Published ports within `ports.range`.
    pub ports: Vec<PortPlan>,
    /// `HOST:IP` entries for the container's `/etc/hosts`.
    pub extra_hosts: Vec<String>,
    /// The cgroup the container goes under, and why: the job's own, or one the user chose.
    pub cgroup_parent: Option<String>,
    /// Why the container goes under `cgroup_parent` (for `jobdock plan`).
    pub cgroup_parent_why: String,
    /// The container's resource limits: the job's own soft and hard limits for each of
    /// [`ULIMITS`] (without them dockerd gives the container its own, e.g. 20000 open files),
    /// except memlock, unlimited when the job gets devices (RDMA pins memory). Sorted by name.
    pub ulimits: Vec<Ulimit>,
    /// Whether the job gets a terminal (jobdock's stdin is one: `bsub -Is`, `srun --pty`).
    pub tty: bool,
    /// Level requested through LSB_DOCKER_RUN_LOGLEVEL (jobdock's own logging).
    pub log_level: Option<tracing::Level>,
    /// Things the user should know: what was left out and why.
    pub notes: Vec<String>,
    /// What each mount source the user's probe resolved named then (device and inode): the engine
    /// mounts exactly these files, or refuses to run (`engine::pin`).
    pub pins: BTreeMap<PathBuf, FileId>,
    /// A step container's task (the container itself runs the agent); `None`: the container is
    /// this task's alone.
    pub step: Option<StepPlan>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "no image: give --image, or set LSB_CONTAINER_IMAGE (bsub -a 'docker(IMAGE)') or JOBDOCK_IMAGE"
    )]
    NoImage,
    #[error("{source_}: {reason}")]
    Image { source_: String, reason: String },
    #[error("no command: give one after `--`, or run inside an LSF job (LSB_JOBFILENAME)")]
    NoCommand,
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{what} {path}: {reason}")]
    Path {
        what: &'static str,
        path: String,
        reason: String,
    },
}

/// Builds the plan from its parts, each decided by one function (command, mounts, environment,
/// network, devices, limits). `probe` answers questions about host paths as the job user; every
/// path it resolved is pinned (`pins`), so the engine mounts exactly what was checked.
pub fn build(
    req: &Request,
    snap: &Snapshot,
    config: &SiteConfig,
    ctx: &JobContext,
    who: &Identity,
    probe: &dyn HostProbe,
) -> Result<ContainerPlan, PlanError> {
    let env = &snap.env;
    overrides::check_names(env)?;
    let mut notes = ctx.notes.clone();
    let recording = Recording::new(probe);
    let probe: &dyn HostProbe = &recording;

    let image = image(req, env, config)?;
    let Command { entrypoint, cmd } = command::command(req, ctx, env)?;
    let named = container_name_override(env, config, ctx, snap, entrypoint.as_ref(), cmd.as_ref())?;
    let sshd = sshd_request(env, config, ctx, named.as_ref(), who)?;
    let parallel = match &named {
        Some((p, n)) => Some(Shared::Named(p, n)),
        None => {
            step_container(config, ctx, snap, entrypoint.as_ref(), cmd.as_ref()).map(Shared::Step)
        }
    };
    let name = match parallel {
        Some(shared) => step_container_name(shared, ctx, who),
        None => container_name(ctx, who, snap.pid),
    };
    let mut labels = labels(ctx, who, snap.pid);
    if let Some(p) = &ctx.parallel {
        labels.insert("jobdock.cluster".into(), p.cluster.clone());
        labels.insert("jobdock.node".into(), p.node.clone());
    }
    match parallel {
        Some(Shared::Step(p)) => {
            labels.insert("jobdock.step".into(), p.step.clone());
        }
        Some(Shared::Named(_, n)) => {
            // Every step of the job that names it shares it: no one step's.
            labels.remove("jobdock.step");
            labels.insert("jobdock.name".into(), n.to_string());
            labels.insert("jobdock.image".into(), image.to_string());
            if let Some(sshd) = &sshd {
                labels.insert("jobdock.sshd".into(), sshd.port.to_string());
            }
        }
        None => {}
    }
    if parallel.is_some() {
        labels.insert("jobdock.agent".into(), "1".into());
    }
    // A terminal's output stays a terminal's (attach); raw mode has no command jobdock can wrap;
    // a step container's tasks hand its agent their own stdio.
    let fifos = config.engine.output == OutputPath::Fifo
        && !snap.stdin_is_tty
        && entrypoint.is_some()
        && cmd.is_some()
        && parallel.is_none();
    let mut staging = staging(config, &name, &snap.token, req, fifos);
    if parallel.is_some() {
        staging.agent_dir = Some(staging.dir.join("run"));
    }
    if sshd.is_some() {
        staging.ssh_dir = Some(staging.dir.join("ssh"));
    }
    let entrypoint = entrypoint.map(|e| {
        if fifos {
            FIFO_WRAPPER
                .iter()
                .map(ToString::to_string)
                .chain(e)
                .collect()
        } else {
            e
        }
    });
    let Mounts {
        mut mounts,
        working_dir,
        tmp_inside_tmp,
        tmp_tmpfs,
    } = mounts::mounts(
        config,
        ctx,
        who,
        env,
        &staging,
        cmd.as_ref(),
        probe,
        &mut notes,
    )?;
    let mut container_env = environment::environment(
        env,
        &image,
        config,
        ctx,
        who,
        tmp_inside_tmp.as_deref(),
        probe,
    )?;
    let Network {
        mut network,
        ipc,
        ports,
        extra_hosts,
    } = network::network(env, config, probe)?;
    if sshd.is_some() && network != "host" {
        // The nodes' containers reach each other's sshd at the hosts' own addresses.
        let why = match overrides::setting(env, "NETWORK")? {
            Some(s) => Some(s.refuse(
                "a virtual cluster (LSB_DOCKER_SSHD) needs the host network: its sshd listens on \
                 the node's own addresses",
            )),
            None if !config.network.allowed.iter().any(|n| n == "host") => {
                let s = overrides::setting(env, "SSHD")?.expect("sshd was asked for");
                Some(s.refuse(
                    "a virtual cluster needs the host network, which this site does not allow \
                     (network.allowed)",
                ))
            }
            None => None,
        };
        if let Some(refusal) = why {
            return Err(refusal.into());
        }
        notes.push("a virtual cluster (LSB_DOCKER_SSHD): network host".into());
        network = "host".into();
    }
    // Slurm's PMIx server listens on the host's loopback only.
    if env.contains_key("PMIX_NAMESPACE") && overrides::setting(env, "NETWORK")?.is_none() {
        match &config.mpi.pmix_network {
            Some(n) if *n != network => {
                notes.push(format!(
                    "a PMIx step: network {n} (mpi.pmix_network), so that it reaches the PMIx server"
                ));
                network = n.clone();
            }
            Some(_) => {}
            None if network != "host" => notes.push(format!(
                "a PMIx step on network {network}: Slurm's PMIx server listens on the host's \
                 loopback, which the job cannot reach (the site may set mpi.pmix_network = \"host\")"
            )),
            None => {}
        }
    }
    let Devices { devices, gpus } = limits::devices(config, ctx, probe);
    let Limits {
        memory,
        nano_cpus,
        cpuset_cpus,
        pids_limit,
        shm_size,
        ulimits,
        cgroup_parent,
        cgroup_parent_why,
    } = limits::limits(
        env,
        snap,
        config,
        ctx,
        !devices.is_empty(),
        match parallel {
            None => limits::Scope::Task,
            Some(Shared::Step(_)) => limits::Scope::Step,
            Some(Shared::Named(..)) => limits::Scope::Job,
        },
        &mut notes,
    )?;
    let log_level = overrides::setting(env, "RUN_LOGLEVEL")?
        .map(|s| overrides::parse_log_level(&s))
        .transpose()?;

    // A step container runs the agent; this task's own command goes to it over its socket.
    let (entrypoint, cmd, shm_size, step) = match (parallel, &snap.exe, &staging.agent_dir) {
        (Some(shared), Some(exe), Some(agent_dir)) => {
            let p = shared.parallel();
            let local_tasks = match shared {
                Shared::Step(p) => Some(p.local_tasks),
                Shared::Named(..) => None,
            };
            for (k, v) in &config.mpi.env {
                container_env.entry(k.clone()).or_insert_with(|| v.clone());
            }
            if sshd.is_some() {
                for (k, v) in crate::sshd::mpi_env() {
                    container_env.entry(k.to_string()).or_insert(v);
                }
            }
            let argv: Vec<String> = entrypoint
                .iter()
                .flatten()
                .chain(cmd.iter().flatten())
                .cloned()
                .collect();
            mounts.push(MountPlan {
                source: exe.path.clone(),
                target: AGENT_TARGET.into(),
                readonly: true,
                why: "jobdock's step agent: runs the step's tasks on this node".into(),
            });
            let lib_dir = Path::new(AGENT_LIB_TARGET);
            let mut named = std::collections::BTreeSet::new();
            for lib in &exe.libraries {
                if let Some(name) = lib.file_name().filter(|n| named.insert(n.to_owned())) {
                    mounts.push(MountPlan {
                        source: lib.clone(),
                        target: lib_dir.join(name),
                        readonly: true,
                        why: "a shared object of jobdock's step agent (the host's)".into(),
                    });
                }
            }
            let mut agent = Vec::new();
            if let Some(name) = exe.loader().and_then(Path::file_name) {
                agent.extend([
                    lib_dir.join(name).display().to_string(),
                    "--library-path".to_string(),
                    AGENT_LIB_TARGET.to_string(),
                ]);
            }
            agent.extend([AGENT_TARGET.to_string(), "agent".to_string()]);
            mounts.push(MountPlan {
                source: agent_dir.clone(),
                target: AGENT_DIR_TARGET.into(),
                readonly: false,
                why: "the step agent's socket (the job user's, mode 0700)".into(),
            });
            let socket = format!("{AGENT_DIR_TARGET}/{AGENT_SOCKET}");
            let mut agent_args = vec![
                "--tasks".to_string(),
                // 0: until the container is removed.
                local_tasks.unwrap_or(0).to_string(),
                "--socket".to_string(),
                socket,
            ];
            if let (Some(s), Some(dir)) = (&sshd, &staging.ssh_dir) {
                mounts.push(MountPlan {
                    source: dir.clone(),
                    target: crate::sshd::SSH_TARGET.into(),
                    readonly: true,
                    why: "the virtual cluster's ssh keys and files (the job user's, mode 0700)"
                        .into(),
                });
                agent_args.extend(["--sshd".to_string(), s.port.to_string()]);
            }
            (
                Some(agent),
                Some(agent_args),
                shm_size.or(config.mpi.shm_size),
                Some(StepPlan {
                    cluster: p.cluster.clone(),
                    node: p.node.clone(),
                    local_tasks,
                    task: TaskPlan {
                        argv,
                        env: container_env.clone(),
                        cwd: working_dir.clone(),
                        cpus: snap.cpus_allowed.clone().filter(|_| ctx.confirmed),
                    },
                    sshd,
                }),
            )
        }
        _ => (entrypoint, cmd, shm_size, None),
    };
    // The agent's environment is the image's with the first task's over it: the names jobdock
    // set, so that each task gets the image's (PATH, ...) with its own over it, and nothing of
    // the first task's.
    if step.is_some() {
        let names: Vec<&str> = container_env.keys().map(String::as_str).collect();
        let names = names.join(",");
        container_env.insert(TASK_ENV_NAMES.to_string(), names);
    }

    let pins = recording
        .pins(mounts.iter().map(|m| m.source.as_path()))
        .map_err(|source| PlanError::Path {
            what: "mount source",
            path: source.display().to_string(),
            reason: "changed while jobdock checked it; try again".into(),
        })?;
    Ok(ContainerPlan {
        hardening: HARDENING,
        image,
        pull: pull_policy(env, config)?,
        name,
        labels,
        passwd: identity::passwd_file(who),
        group: identity::group_file(who),
        script: req.script.clone(),
        staging,
        hostname: snap.hostname.clone(),
        user: (who.uid, who.gid),
        group_add: who.groups.iter().map(|g| g.0).collect(),
        entrypoint,
        cmd,
        env: container_env,
        working_dir,
        mounts,
        cap_add: config.security.cap_add.clone(),
        security_opt: security_opt(config),
        ulimits,
        devices,
        gpus,
        memory,
        nano_cpus,
        cpuset_cpus,
        pids_limit,
        shm_size,
        tmp_tmpfs,
        network,
        ipc,
        ports,
        extra_hosts,
        cgroup_parent,
        cgroup_parent_why,
        tty: snap.stdin_is_tty,
        log_level,
        notes,
        pins,
        step,
    })
}

/// `LSB_DOCKER_PULL`, one of `engine.pull_choices`; else the site's `engine.pull`.
fn pull_policy(env: &Env, config: &SiteConfig) -> Result<PullPolicy, PlanError> {
    let Some(s) = overrides::setting(env, "PULL")? else {
        return Ok(config.engine.pull);
    };
    let allowed = || {
        let names: Vec<&str> = config
            .engine
            .pull_choices
            .iter()
            .map(|p| p.name())
            .collect();
        if names.is_empty() {
            "this site lets users choose none (engine.pull_choices)".to_string()
        } else {
            format!(
                "this site lets users choose {} (engine.pull_choices)",
                names.join(", ")
            )
        }
    };
    let wanted = s.value.trim().to_ascii_lowercase();
    match PullPolicy::ALL.into_iter().find(|p| p.name() == wanted) {
        Some(p) if config.engine.pull_choices.contains(&p) => Ok(p),
        Some(_) => Err(s.refuse(allowed()).into()),
        None => Err(s
            .refuse(format!(
                "must be missing, newer, always or never; {}",
                allowed()
            ))
            .into()),
    }
}

/// The container's tmpfs mounts (HostConfig.Tmpfs, which unlike a tmpfs in Mounts may allow
/// exec: jobs build and run programs in /tmp), by target: a world-writable sticky `/tmp` of
/// `tmp_tmpfs`'s size, without setuid programs or devices.
pub fn tmpfs(tmp_tmpfs: Option<ByteSize>) -> BTreeMap<String, String> {
    tmp_tmpfs
        .map(|size| {
            (
                "/tmp".to_string(),
                format!("rw,exec,nosuid,nodev,size={},mode=1777", size.bytes()),
            )
        })
        .into_iter()
        .collect()
}

/// The step this task's container is shared with, if it is: a confirmed Slurm job (the job is
/// its cgroup's, so no one else's container has its name), a numbered step with more than one
/// task on this node, a command jobdock knows (not the image's entrypoint), no terminal.
fn step_container<'c>(
    config: &SiteConfig,
    ctx: &'c JobContext,
    snap: &Snapshot,
    entrypoint: Option<&Vec<String>>,
    cmd: Option<&Vec<String>>,
) -> Option<&'c crate::job::Parallel> {
    let p = ctx.parallel.as_ref()?;
    let known_command = entrypoint.is_some() && cmd.is_some_and(|c| !c.is_empty());
    (config.mpi.step_container
        && ctx.confirmed
        && ctx.scheduler() == crate::job::Scheduler::Slurm
        && p.local_tasks > 1
        && known_command
        && !snap.stdin_is_tty
        && snap.exe.is_some())
    .then_some(p)
}

/// `jobdock-slurm-<cluster>-<job>.<step>-<node>-u<uid>`, or `...-<job>-named-<NAME>-<node>-u<uid>`:
/// the same for every task that shares it on the node, so the first create wins and the others
/// join; the uid keeps a user from taking another's name.
fn step_container_name(shared: Shared, ctx: &JobContext, who: &Identity) -> String {
    let job = ctx.job_id.as_deref().unwrap_or("none");
    let p = shared.parallel();
    let scope = match shared {
        Shared::Step(p) => format!("{job}.{}", p.step),
        Shared::Named(_, name) => format!("{job}-named-{name}"),
    };
    format!(
        "jobdock-slurm-{}-{scope}-{}-u{}",
        p.cluster, p.node, who.uid
    )
}

/// The container the task names (`LSB_DOCKER_CONTAINER_NAME`), with the step it is in: only a
/// task of a numbered step of a confirmed Slurm job, with a command jobdock knows and no
/// terminal (what any step container needs), and a name of 1 to 64 letters, digits, `.`, `-`
/// or `_`.
fn container_name_override<'c>(
    env: &Env,
    config: &SiteConfig,
    ctx: &'c JobContext,
    snap: &Snapshot,
    entrypoint: Option<&Vec<String>>,
    cmd: Option<&Vec<String>>,
) -> Result<Option<(&'c crate::job::Parallel, String)>, PlanError> {
    let Some(setting) = overrides::setting(env, "CONTAINER_NAME")? else {
        return Ok(None);
    };
    let name = &setting.value;
    if name.is_empty()
        || name.len() > 64
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(setting
            .refuse(
                "must be 1 to 64 letters, digits, '.', '-' or '_', starting with a letter or digit",
            )
            .into());
    }
    let why_not = match &ctx.parallel {
        _ if !config.mpi.step_container => {
            Some("this site has no step containers (mpi.step_container)")
        }
        None => Some("a named container is for the tasks of a Slurm job step (srun)"),
        Some(_) if !ctx.confirmed || ctx.scheduler() != crate::job::Scheduler::Slurm => Some(
            "a named container is for the tasks of a Slurm job step, and this process is not in one's cgroup",
        ),
        Some(_) if entrypoint.is_none() || cmd.is_none_or(|c| c.is_empty()) => {
            Some("a named container runs a command, not the image's entrypoint (raw mode)")
        }
        Some(_) if snap.stdin_is_tty => {
            Some("a named container's tasks have no terminal (srun --pty)")
        }
        Some(_) if snap.exe.is_none() => {
            Some("jobdock's own binary could not be found to run as its agent")
        }
        Some(_) => None,
    };
    if let Some(why) = why_not {
        return Err(setting.refuse(why).into());
    }
    let parallel = ctx.parallel.as_ref().expect("checked above");
    Ok(Some((parallel, setting.value)))
}

/// The job's virtual cluster (`LSB_DOCKER_SSHD=true`): for a named container of a Slurm job,
/// where the site gives its sshds ports (`mpi.sshd_ports`). The nodes, their slots and this
/// node's place come from the job's variables, which the user could set: they shape only the
/// user's own containers' files and which of the site's ports this sshd takes (as any program of
/// the user's on the node could). The keys are the confirmed job's and the real uid's.
fn sshd_request(
    env: &Env,
    config: &SiteConfig,
    ctx: &JobContext,
    named: Option<&(&crate::job::Parallel, String)>,
    who: &Identity,
) -> Result<Option<SshdPlan>, PlanError> {
    let Some(setting) = overrides::setting(env, "SSHD")? else {
        return Ok(None);
    };
    if !overrides::parse_bool(&setting)? {
        return Ok(None);
    }
    let Some(range) = config.mpi.sshd_ports else {
        return Err(setting
            .refuse("this site has no virtual clusters (mpi.sshd_ports)")
            .into());
    };
    let Some((p, _)) = named else {
        return Err(setting
            .refuse(
                "the sshd runs in the job's named container: set LSB_DOCKER_CONTAINER_NAME \
                 (srun --container-name) too",
            )
            .into());
    };
    let job = ctx.job_id.as_deref().unwrap_or("none");
    let nodes = crate::job::slurm::job_nodes(env).map_err(|e| setting.refuse(e.to_string()))?;
    let Some(index) = nodes.iter().position(|(n, _)| *n == p.node) else {
        return Err(setting
            .refuse(format!(
                "this node, {} (SLURMD_NODENAME), is not in the job's SLURM_JOB_NODELIST",
                p.node
            ))
            .into());
    };
    let ports = crate::sshd::ports(range, &format!("{}/{job}", p.cluster), nodes.len())
        .map_err(|e| setting.refuse(e))?;
    let nodes: Vec<crate::sshd::Node> = nodes
        .into_iter()
        .zip(ports)
        .map(|((name, slots), port)| crate::sshd::Node { name, slots, port })
        .collect();
    Ok(Some(SshdPlan {
        port: nodes[index].port,
        nodes,
        user: who.name.clone(),
        host_key_alias: format!("jobdock-{}-{job}", p.cluster),
        key_context: format!("slurm\0{}\0{job}\0{}", p.cluster, who.uid),
        secret: config.mpi.sshd_secret.clone(),
    }))
}

/// `no-new-privileges` always, and the site's SELinux labels.
fn security_opt(config: &SiteConfig) -> Vec<String> {
    let mut opts = vec!["no-new-privileges".to_string()];
    opts.extend(
        config
            .security
            .selinux_labels
            .iter()
            .map(|l| format!("label={l}")),
    );
    opts
}

/// What finds the container again: its job (or `pid-N` outside one), its user's uid, scheduler
/// and step. The uid is the job user's as jobdock established it, so cleanup can trust it.
fn labels(ctx: &JobContext, who: &Identity, pid: u32) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(
        "jobdock.job".to_string(),
        ctx.job_id.clone().unwrap_or_else(|| format!("pid-{pid}")),
    );
    labels.insert("jobdock.uid".to_string(), who.uid.to_string());
    labels.insert(
        "jobdock.scheduler".to_string(),
        ctx.scheduler().name().to_string(),
    );
    if let Some(step) = &ctx.step {
        labels.insert("jobdock.step".to_string(), step.clone());
    }
    labels
}

/// The job's staging directory in the state directory, named by the container and a random
/// token (unpredictable), and the files in it.
fn staging(config: &SiteConfig, name: &str, token: &str, req: &Request, fifos: bool) -> Staging {
    let dir = config.engine.state_dir.join(format!("{name}.{token}"));
    Staging {
        passwd: dir.join("passwd"),
        group: dir.join("group"),
        script: req.script.as_ref().map(|_| dir.join("job.sh")),
        agent_dir: None,
        ssh_dir: None,
        fifos: fifos.then(|| Fifos {
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
        }),
        dir,
    }
}

impl ContainerPlan {
    /// This plan with the job's output through attach instead of its FIFOs (for an image without
    /// `/bin/sh`, which the FIFO wrapper needs); the same plan if it has none.
    pub fn without_fifos(&self) -> ContainerPlan {
        let mut plan = self.clone();
        let Some(fifos) = plan.staging.fifos.take() else {
            return plan;
        };
        plan.mounts
            .retain(|m| m.source != fifos.stdout && m.source != fifos.stderr);
        if let Some(e) = plan.entrypoint.as_mut() {
            e.drain(..FIFO_WRAPPER.len().min(e.len()));
        }
        plan
    }
}

fn image(req: &Request, env: &Env, config: &SiteConfig) -> Result<ImageRef, PlanError> {
    let (source, text) = if let Some(i) = &req.image {
        ("--image".to_string(), i.clone())
    } else if let Some(i) = env.get("LSB_CONTAINER_IMAGE") {
        ("LSB_CONTAINER_IMAGE".to_string(), i.clone())
    } else if let Some(i) = env.get("JOBDOCK_IMAGE") {
        ("JOBDOCK_IMAGE".to_string(), i.clone())
    } else {
        return Err(PlanError::NoImage);
    };
    let source_ = format!("{source} {text:?}");
    let image = ImageRef::parse(&text).map_err(|reason| PlanError::Image {
        source_: source_.clone(),
        reason: reason.to_string(),
    })?;
    let allowed = &config.images.allowed_registries;
    if !config.images.allows(image.registry()) {
        return Err(PlanError::Image {
            source_,
            reason: format!(
                "registry {} is not allowed here (images.allowed_registries: {})",
                image.registry(),
                allowed.join(", ")
            ),
        });
    }
    Ok(image)
}

/// `jobdock-<scheduler>-<job>-<pid>`: unique among concurrent runs on the node, recognisable in
/// `docker ps`, and never reused by a requeued job (a new jobdock has a new pid).
fn container_name(ctx: &JobContext, who: &Identity, pid: u32) -> String {
    match (&ctx.job_id, ctx.array_index) {
        (Some(job), Some(index)) => {
            let base = job.split('[').next().unwrap_or(job);
            format!("jobdock-{}-{base}.{index}-{pid}", ctx.scheduler().name())
        }
        (Some(job), None) => format!("jobdock-{}-{job}-{pid}", ctx.scheduler().name()),
        (None, _) => format!("jobdock-u{}-{pid}", who.uid),
    }
}

#[cfg(test)]
pub(crate) mod tests;
