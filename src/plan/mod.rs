//! The container plan: a plain value holding every decision about the job's container, built from
//! a snapshot of the process, the site config, the job context and the user's identity. The only
//! access to the host is through the `HostProbe` seam (as the job user); no clock, no environment
//! read here, no daemon. Everything a security reviewer cares about is decided in `build`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{self, PullPolicy, SiteConfig};
use crate::identity::{self, Caller, Identity};
use crate::image::ImageRef;
use crate::job::cgroup::JobCgroup;
use crate::job::{Env, JobContext};
use crate::policy::paths::{self, Strictness};
use crate::policy::{self, PortRequest, Refusal, Setting, env as envpolicy};
use crate::probe::{FileId, HostProbe, Kind, Recording};
use crate::units::{ByteSize, Capability};

pub mod render;

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
    /// The CPUs jobdock may run on (`0-3,8`), when fewer than the host's.
    pub cpus_allowed: Option<String>,
    /// jobdock's own resource limits, for each of [`ULIMITS`]: the job's, as the scheduler (or
    /// the user's shell) set them. Read once, before planning.
    pub rlimits: Vec<Ulimit>,
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
}

/// Where a staged job script appears inside the container.
pub const SCRIPT_TARGET: &str = "/.jobdock/job.sh";

/// A published port range, already checked against `ports.range`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortPlan {
    pub host: (u16, u16),
    pub container: (u16, u16),
    pub protocol: &'static str,
}

/// Every decision about the job's container. Both renderings (the `docker run` line and the Engine
/// API create body) destructure this without `..`, so a new field must be rendered by both.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerPlan {
    pub image: ImageRef,
    pub pull: PullPolicy,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub passwd: String,
    pub group: String,
    /// The job script to stage (`Request::script`).
    pub script: Option<String>,
    pub staging: Staging,
    pub hostname: String,
    /// Numeric `uid:gid`: names would be resolved in the image's own files.
    pub user: (u32, u32),
    pub group_add: Vec<u32>,
    /// `None`: the image's entrypoint (raw mode); `Some([])`: none at all.
    pub entrypoint: Option<Vec<String>>,
    /// `None`: the image's command.
    pub cmd: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    pub mounts: Vec<MountPlan>,
    pub cap_add: Vec<Capability>,
    pub security_opt: Vec<String>,
    pub devices: Vec<PathBuf>,
    pub gpus: Vec<String>,
    pub memory: ByteSize,
    pub nano_cpus: Option<i64>,
    /// The CPUs the job may use (its scheduler affinity).
    pub cpuset_cpus: Option<String>,
    pub pids_limit: i64,
    pub shm_size: Option<ByteSize>,
    pub network: String,
    pub ipc: String,
    pub ports: Vec<PortPlan>,
    pub extra_hosts: Vec<String>,
    /// The cgroup the container goes under, and why: the job's own, or one the user chose.
    pub cgroup_parent: Option<String>,
    pub cgroup_parent_why: String,
    /// The container's resource limits: the job's own soft and hard limits for each of
    /// [`ULIMITS`] (without them dockerd gives the container its own, e.g. 20000 open files),
    /// except memlock, unlimited when the job gets devices (RDMA pins memory). Sorted by name.
    pub ulimits: Vec<Ulimit>,
    pub tty: bool,
    /// Level requested through LSB_DOCKER_RUN_LOGLEVEL (jobdock's own logging).
    pub log_level: Option<tracing::Level>,
    /// Things the user should know: what was left out and why.
    pub notes: Vec<String>,
    /// What each mount source the user's probe resolved named then (device and inode): the engine
    /// mounts exactly these files, or refuses to run (`engine::pin`).
    pub pins: BTreeMap<PathBuf, FileId>,
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

/// The command word with which LSF submits an entrypoint-only image (both IBM spellings).
const PLACE_HOLDERS: &[&str] = &["LSB_DOCKER_PLACE_HOLDER", "LSB_DOCKER_PLACEHOLDER"];

/// Largest env file or add-host file jobdock reads.
const MAX_USER_FILE: u64 = 64 * 1024;

/// Most files one `LSB_DOCKER_ENV_FILE` or `LSB_DOCKER_ADD_HOST_FILE` may name.
pub const MAX_USER_FILES: usize = 16;

/// Largest environment a container gets, in bytes (`NAME=value` and its NUL, for every variable:
/// the job's preserved environment, env files and jobdock's own). The kernel refuses an `exec`
/// whose arguments and environment exceed a quarter of the stack limit (2 MiB at the usual 8 MiB)
/// with E2BIG; this leaves the command line room, and keeps dockerd's stored config small.
pub const MAX_ENV_BYTES: usize = 256 * 1024;

/// Most `/etc/hosts` entries one job may add (`LSB_DOCKER_ADD_HOST` and its files together).
pub const MAX_EXTRA_HOSTS: usize = 256;

/// Builds the plan. `probe` answers questions about host paths as the job user.
pub fn build(
    req: &Request,
    snap: &Snapshot,
    config: &SiteConfig,
    ctx: &JobContext,
    id: &Identity,
    probe: &dyn HostProbe,
) -> Result<ContainerPlan, PlanError> {
    let env = &snap.env;
    policy::check_names(env)?;
    let get = |suffix: &str| policy::setting(env, suffix);
    let mut notes = ctx.notes.clone();
    let recording = Recording::new(probe);
    let probe: &dyn HostProbe = &recording;

    let image = image(req, env, config)?;
    let name = container_name(ctx, id, snap.pid);
    let mut labels = BTreeMap::new();
    labels.insert(
        "jobdock.job".to_string(),
        ctx.job_id
            .clone()
            .unwrap_or_else(|| format!("pid-{}", snap.pid)),
    );
    labels.insert("jobdock.uid".to_string(), id.uid.to_string());
    labels.insert(
        "jobdock.scheduler".to_string(),
        ctx.scheduler().name().to_string(),
    );
    if let Some(step) = &ctx.step {
        labels.insert("jobdock.step".to_string(), step.clone());
    }

    let staging_dir = config
        .engine
        .state_dir
        .join(format!("{name}.{}", snap.token));
    let staging = Staging {
        passwd: staging_dir.join("passwd"),
        group: staging_dir.join("group"),
        script: req.script.as_ref().map(|_| staging_dir.join("job.sh")),
        dir: staging_dir,
    };

    // The command: the user's argv, their staged script or the LSF job file through /bin/sh, or
    // the image's own.
    let entrypoint_override = get("ENTRYPOINT")?.map(|s| entrypoint(&s)).transpose()?;
    let raw = match get("RUN_RAW_ARGS")? {
        Some(s) => policy::parse_bool(&s)?,
        None => false,
    } || (req.command.len() == 1 && PLACE_HOLDERS.contains(&req.command[0].as_str()));
    let (entrypoint, cmd) = if raw {
        let cmd = match req.command.as_slice() {
            [] => None,
            [word] if PLACE_HOLDERS.contains(&word.as_str()) => None,
            argv => Some(argv.to_vec()),
        };
        (entrypoint_override.map(|e| vec![e]), cmd)
    } else if !req.command.is_empty() {
        (
            Some(entrypoint_override.into_iter().collect()),
            Some(req.command.clone()),
        )
    } else if req.script.is_some() {
        let ep = entrypoint_override.unwrap_or_else(|| "/bin/sh".to_string());
        (Some(vec![ep]), Some(vec![SCRIPT_TARGET.to_string()]))
    } else if let Some(script) = &ctx.script {
        let ep = entrypoint_override.unwrap_or_else(|| "/bin/sh".to_string());
        (Some(vec![ep]), Some(vec![script.display().to_string()]))
    } else {
        return Err(PlanError::NoCommand);
    };

    // Mounts: identity files, home, working directory, job spool, job tmpdir, site, user volumes.
    let mut mounts = vec![
        MountPlan {
            source: staging.passwd.clone(),
            target: "/etc/passwd".into(),
            readonly: true,
            why: "synthesized passwd: root, nobody and the job user".into(),
        },
        MountPlan {
            source: staging.group.clone(),
            target: "/etc/group".into(),
            readonly: true,
            why: "synthesized group: the user's groups by name".into(),
        },
    ];
    if let Some(script) = &staging.script {
        mounts.push(MountPlan {
            source: script.clone(),
            target: SCRIPT_TARGET.into(),
            readonly: true,
            why: "the user's command, exactly as submitted".into(),
        });
    }
    let jobdock_mounts = mounts.len();
    // The job's tmpdir is its /tmp. At its own path too, unless that path is under /tmp: the
    // engine would create that mount point inside the tmpdir itself, as root; there /tmp shows it.
    let tmp = match &ctx.tmpdir {
        Some(tmp) => match job_tmpdir(probe, tmp, id.uid) {
            Ok(real) => Some((paths::normalize(tmp), real)),
            // Nothing where the scheduler's convention would put one: the site has none.
            Err(reason) if ctx.tmpdir_by_convention && reason.contains(ABSENT) => {
                tracing::debug!("no job tmpdir at {}: {reason}", tmp.display());
                None
            }
            Err(reason) => {
                notes.push(format!(
                    "job tmpdir {} not mounted: {reason}",
                    tmp.display()
                ));
                None
            }
        },
        // No tmpdir of the job's own: a /tmp that belongs to the job's user (the node's is
        // everyone's) is the job's private one (Slurm's job_container/tmpfs gives each job one in
        // the job's mount namespace, pam_namespace each user), and is the container's /tmp.
        None => private_tmp(probe, id.uid).map(|real| (PathBuf::from("/tmp"), real)),
    };
    let tmp_inside_tmp = tmp
        .as_ref()
        .filter(|(path, _)| paths::is_under(path, Path::new("/tmp")))
        .map(|(path, _)| path.clone());
    if config.mounts.home {
        match user_dir(probe, &id.home) {
            Ok(real) => mounts.push(MountPlan {
                source: real,
                target: id.home.clone(),
                readonly: false,
                why: "the user's home directory".into(),
            }),
            Err(reason) => notes.push(format!(
                "home directory {} not mounted: {reason}",
                id.home.display()
            )),
        }
    }
    // Where the working directory is in a tmpdir shown only as /tmp: its path below the tmpdir.
    let in_tmp = |dir: &Path| {
        tmp_inside_tmp.as_ref().and_then(|t| {
            paths::normalize(dir)
                .strip_prefix(t)
                .ok()
                .map(Path::to_path_buf)
        })
    };
    let work_dir = match ctx.work_dir.as_ref().map(|dir| (dir, in_tmp(dir))) {
        // In a tmpdir shown only as /tmp: the same directory, there.
        Some((dir, Some(rest))) => {
            user_dir(probe, dir).map_err(|reason| PlanError::Path {
                what: "working directory",
                path: dir.display().to_string(),
                reason,
            })?;
            Some(paths::normalize(&Path::new("/tmp").join(rest)))
        }
        Some((dir, None)) => {
            let real = user_dir(probe, dir).map_err(|reason| PlanError::Path {
                what: "working directory",
                path: dir.display().to_string(),
                reason,
            })?;
            add_unless_covered(
                &mut mounts,
                real,
                paths::normalize(dir),
                false,
                "the job's working directory",
            );
            Some(paths::normalize(dir))
        }
        None => None,
    };
    if let (Some(script), Some(cmd)) = (&ctx.script, &cmd)
        && cmd.first().map(String::as_str) == Some(&script.display().to_string())
        && let Some(spool) = script.parent()
    {
        let real = user_dir(probe, spool).map_err(|reason| PlanError::Path {
            what: "LSF job spool directory",
            path: spool.display().to_string(),
            reason,
        })?;
        add_unless_covered(
            &mut mounts,
            real,
            spool.to_path_buf(),
            true,
            "the LSF job file's directory",
        );
    }
    // PMIx (Slurm's MPI plugin) talks to its server through a directory of the step.
    if let Some(pmix) = env.get("PMIX_SERVER_TMPDIR").filter(|p| p.starts_with('/')) {
        let in_tmp =
            tmp.is_some() && paths::is_under(&paths::normalize(Path::new(pmix)), Path::new("/tmp"));
        match user_dir(probe, Path::new(pmix)) {
            // Inside the tmpdir's /tmp the engine would create its mount point in the tmpdir.
            Ok(_) if in_tmp => notes.push(format!(
                "PMIX_SERVER_TMPDIR {pmix} not mounted: it is under /tmp, which is the job's tmpdir"
            )),
            Ok(real) => add_unless_covered(
                &mut mounts,
                real,
                paths::normalize(Path::new(pmix)),
                false,
                "the step's PMIx server directory",
            ),
            Err(reason) => notes.push(format!("PMIX_SERVER_TMPDIR {pmix} not mounted: {reason}")),
        }
    }
    if let Some((path, real)) = &tmp {
        mounts.push(MountPlan {
            source: real.clone(),
            target: "/tmp".into(),
            readonly: false,
            why: "the job's private tmpdir as /tmp".into(),
        });
        if tmp_inside_tmp.is_none() {
            mounts.push(MountPlan {
                source: real.clone(),
                target: path.clone(),
                readonly: false,
                why: "the job's tmpdir at its own path".into(),
            });
        }
    }
    let job_mounts = mounts.len();
    for m in &config.mounts.site {
        let target = m.target.clone().unwrap_or_else(|| m.source.clone());
        mounts.push(MountPlan {
            source: m.source.clone(),
            target,
            readonly: m.readonly,
            why: "site mount (wrapper.toml)".into(),
        });
    }
    let mut targets = std::collections::BTreeSet::new();
    for m in &mounts {
        if !targets.insert(m.target.clone()) {
            return Err(PlanError::Path {
                what: "mount target",
                path: m.target.display().to_string(),
                reason: format!("mounted twice ({}); check mounts.site", m.why),
            });
        }
    }
    let site_mounts = mounts.len();
    let volumes = get("VOLUMES")?;
    if let Some(s) = &volumes {
        for v in policy::parse_volumes(s)? {
            let m = volume(s, &v, config, probe)?;
            if !targets.insert(m.target.clone()) {
                return Err(s
                    .refuse(format!(
                        "{} is already mounted; choose another destination",
                        m.target.display()
                    ))
                    .into());
            }
            mounts.push(m);
        }
    }

    let mounts = checked_layout(
        mounts,
        [jobdock_mounts, job_mounts, site_mounts],
        volumes.as_ref(),
    )?;

    let working_dir = match get("WORKDIR")? {
        Some(s) => Some(workdir(&s)?),
        None => work_dir,
    };

    // Environment: the job's (if preserved), the user's env files, then the values jobdock owns.
    let preserve = match get("PRESERVE_ENVIRONMENT")? {
        Some(s) => policy::parse_bool(&s)?,
        None => true,
    };
    let mut container_env = BTreeMap::new();
    // Without the job's environment, the scheduler's own variables still go in: MPI launchers
    // and tools inside the job read them.
    let scheduler_var = |k: &str| {
        ["SLURM_", "SLURMD_", "PMIX_", "PMI_", "LSB_", "LS_"]
            .iter()
            .any(|p| k.starts_with(p))
    };
    for (k, v) in env.iter().filter(|(k, v)| {
        (preserve || scheduler_var(k)) && envpolicy::preserved(k, v, &config.env.drop)
    }) {
        container_env.insert(k.clone(), v.clone());
    }
    let env_files = get("ENV_FILE")?;
    if let Some(s) = &env_files {
        for file in user_files(s)? {
            let path = Path::new(file);
            let text = probe
                .read_file(path, MAX_USER_FILE)
                .map_err(|e| s.refuse(e))?;
            container_env.extend(envpolicy::parse_env_file(&text, file).map_err(|e| s.refuse(e))?);
        }
    }
    // The job's tmpdir is /tmp in the container (and, under /tmp, only there).
    if let Some(t) = &tmp_inside_tmp {
        for v in container_env.values_mut() {
            if Path::new(v.as_str()) == t {
                *v = "/tmp".into();
            }
        }
    }
    container_env.insert("HOME".into(), id.home.display().to_string());
    container_env.insert("USER".into(), id.name.clone());
    container_env.insert("LOGNAME".into(), id.name.clone());
    container_env.insert("TMPDIR".into(), "/tmp".into());
    if !ctx.gpus.is_empty() {
        let visible: Vec<String> = (0..ctx.gpus.len()).map(|i| i.to_string()).collect();
        container_env.insert("CUDA_VISIBLE_DEVICES".into(), visible.join(","));
    }
    container_env.extend(config.env.set.clone());
    let env_bytes: usize = container_env
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum();
    if env_bytes > MAX_ENV_BYTES {
        let rule = format!(
            "the container's environment would be {env_bytes} bytes (the job's preserved \
             environment and the env files), more than the {MAX_ENV_BYTES} a job may have \
             (MAX_ENV_BYTES)"
        );
        return Err(match &env_files {
            Some(s) => s.refuse(rule).into(),
            None => PlanError::Path {
                what: "job environment",
                path: format!("of {} variables", container_env.len()),
                reason: format!(
                    "{rule}; unset large variables, or set LSB_DOCKER_PRESERVE_ENVIRONMENT=false"
                ),
            },
        });
    }

    let network = mode(get("NETWORK")?, &config.network, "network")?;
    let ipc = mode(get("IPC")?, &config.ipc, "ipc")?;

    let shm_size = match get("SHM_SIZE")? {
        Some(s) => {
            let size: ByteSize = s.value.parse().map_err(|e: String| s.refuse(e))?;
            if size.0 == 0 || size > config.limits.shm_size_max {
                return Err(s
                    .refuse(format!(
                        "must be between 1 byte and {} (limits.shm_size_max)",
                        config.limits.shm_size_max
                    ))
                    .into());
            }
            Some(size)
        }
        None => None,
    };

    let ports = match get("PORTS")? {
        Some(s) => ports(&s, config, &network)?,
        None => Vec::new(),
    };

    let mut extra_hosts = Vec::new();
    let too_many_hosts = |s: &Setting, n: usize| {
        s.refuse(format!(
            "more than the {MAX_EXTRA_HOSTS} /etc/hosts entries a job may add (MAX_EXTRA_HOSTS; \
             LSB_DOCKER_ADD_HOST and its files together): {n} so far"
        ))
    };
    if let Some(s) = get("ADD_HOST")? {
        for item in s.value.split_whitespace() {
            extra_hosts.push(policy::parse_host_entry(item).map_err(|e| s.refuse(e))?);
            if extra_hosts.len() > MAX_EXTRA_HOSTS {
                return Err(too_many_hosts(&s, extra_hosts.len()).into());
            }
        }
    }
    if let Some(s) = get("ADD_HOST_FILE")? {
        for file in user_files(&s)? {
            let text = probe
                .read_file(Path::new(file), MAX_USER_FILE)
                .map_err(|e| s.refuse(e))?;
            for (n, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            {
                let entry = policy::parse_host_entry(line.trim())
                    .map_err(|e| s.refuse(format!("{file}:{}: {e}", n + 1)))?;
                extra_hosts.push(entry);
                if extra_hosts.len() > MAX_EXTRA_HOSTS {
                    return Err(too_many_hosts(&s, extra_hosts.len()).into());
                }
            }
        }
    }

    let mut cgroup_parent_why = String::new();
    let cgroup_parent = match get("CGROUP")? {
        Some(s) if config.overrides.cgroup_parents.contains(&s.value) => {
            cgroup_parent_why = format!("{} (overrides.cgroup_parents)", s.var);
            Some(s.value.clone())
        }
        Some(s) => {
            return Err(s
                .refuse("this site allows no such cgroup parent (overrides.cgroup_parents)")
                .into());
        }
        None if config.engine.job_cgroup && ctx.confirmed => {
            match snap
                .cgroup
                .as_ref()
                .map(|c| c.docker_parent(&config.engine.cgroup_driver))
            {
                Some(Ok(parent)) => {
                    cgroup_parent_why =
                        "the job's own cgroup: its limits, suspend and accounting reach the \
                         container (engine.job_cgroup)"
                            .into();
                    Some(parent)
                }
                Some(Err(why)) => {
                    notes.push(format!("the container is not in the job's cgroup: {why}"));
                    None
                }
                None => {
                    notes.push("the container is not in the job's cgroup: /proc/self/cgroup was not readable".into());
                    None
                }
            }
        }
        None => None,
    };

    let log_level = get("RUN_LOGLEVEL")?
        .map(|s| policy::parse_log_level(&s))
        .transpose()?;

    let mut devices: Vec<PathBuf> = config
        .devices
        .paths
        .iter()
        .flat_map(|g| probe.devices(g))
        .collect();
    devices.sort();
    devices.dedup();

    // The scheduler's allocation; else the job cgroup's limit; else the site default. Never more
    // than the job cgroup allows, whatever the environment says; and the job's cgroup and CPU set
    // only when jobdock really runs in the job (`job::confirm`).
    let in_job = ctx.confirmed;
    let cgroup_limit = snap.cgroup_memory_limit.filter(|_| in_job);
    let memory = match (ctx.memory, cgroup_limit) {
        (Some(bytes), Some(limit)) => bytes.min(limit),
        (Some(bytes), None) => bytes,
        (None, Some(limit)) => limit,
        (None, None) => config.limits.memory.0,
    };
    if memory < 6 * ByteSize::MIB {
        return Err(PlanError::Path {
            what: "job memory allocation",
            path: ByteSize(memory).to_string(),
            reason: "below Docker's minimum of 6 MiB".into(),
        });
    }
    // Every source is bounded (the job adapters and the cgroup's limit parser): the type says so.
    let memory = ByteSize::new(memory).unwrap_or(ByteSize(ByteSize::MAX));
    let cpuset_cpus = snap.cpus_allowed.clone().filter(|_| in_job);
    let nano_cpus = ctx
        .cpus
        .map(|c| c.clamp(1, snap.host_cpus.max(1)) as i64 * 1_000_000_000);

    let mut security_opt = vec!["no-new-privileges".to_string()];
    security_opt.extend(
        config
            .security
            .selinux_labels
            .iter()
            .map(|l| format!("label={l}")),
    );

    let pins = recording
        .pins(mounts.iter().map(|m| m.source.as_path()))
        .map_err(|source| PlanError::Path {
            what: "mount source",
            path: source.display().to_string(),
            reason: "changed while jobdock checked it; try again".into(),
        })?;
    let passwd = identity::passwd_file(id);
    let group = identity::group_file(id);
    Ok(ContainerPlan {
        image,
        pull: config.engine.pull,
        name,
        labels,
        passwd,
        group,
        script: req.script.clone(),
        staging,
        hostname: snap.hostname.clone(),
        user: (id.uid, id.gid),
        group_add: id.groups.iter().map(|g| g.0).collect(),
        entrypoint,
        cmd,
        env: container_env,
        working_dir,
        mounts,
        cap_add: config.security.cap_add.clone(),
        security_opt,
        ulimits: ulimits(
            &snap.rlimits,
            (!devices.is_empty()).then_some(config.devices.memlock),
        ),
        devices,
        gpus: ctx.gpus.clone(),
        memory,
        nano_cpus,
        cpuset_cpus,
        pids_limit: config.limits.pids,
        shm_size,
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
    })
}

/// The container's resource limits: the job's own (`rlimits`) for each of [`ULIMITS`], but for
/// a job with devices memlock is the site's `devices.memlock` (`device_memlock`).
fn ulimits(rlimits: &[Ulimit], device_memlock: Option<config::Memlock>) -> Vec<Ulimit> {
    let devices = device_memlock.is_some();
    let mut out: Vec<Ulimit> = rlimits
        .iter()
        .filter(|u| ULIMITS.contains(&u.name) && !(devices && u.name == "memlock"))
        .copied()
        .collect();
    if let Some(memlock) = device_memlock {
        out.push(Ulimit {
            name: "memlock",
            soft: memlock.rlimit(),
            hard: memlock.rlimit(),
        });
    }
    out.sort_by_key(|u| u.name);
    out.dedup_by_key(|u| u.name);
    out
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
        reason,
    })?;
    let allowed = &config.images.allowed_registries;
    if !allowed.is_empty() && !allowed.iter().any(|r| r == image.registry()) {
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
fn container_name(ctx: &JobContext, id: &Identity, pid: u32) -> String {
    match (&ctx.job_id, ctx.array_index) {
        (Some(job), Some(index)) => {
            let base = job.split('[').next().unwrap_or(job);
            format!("jobdock-{}-{base}.{index}-{pid}", ctx.scheduler().name())
        }
        (Some(job), None) => format!("jobdock-{}-{job}-{pid}", ctx.scheduler().name()),
        (None, _) => format!("jobdock-u{}-{pid}", id.uid),
    }
}

/// Resolves a directory the job names, as the user, refusing sensitive host paths.
fn user_dir(probe: &dyn HostProbe, dir: &Path) -> Result<PathBuf, String> {
    paths::check_host_path(dir, Strictness::UserPath)?;
    let real = probe.resolve(dir)?;
    if real.kind != Kind::Dir {
        return Err("not a directory".into());
    }
    paths::check_host_path(&real.path, Strictness::UserPath)
        .map_err(|e| format!("resolves to {}: {e}", real.path.display()))?;
    Ok(real.path)
}

/// How a probe says a path does not exist (the OS's words for ENOENT).
const ABSENT: &str = "No such file or directory";

/// The job's tmpdir: a directory the user reaches, as `user_dir`, and owns (a directory named
/// like a job's, made by someone else before the job, would otherwise become the job's /tmp).
fn job_tmpdir(probe: &dyn HostProbe, dir: &Path, uid: u32) -> Result<PathBuf, String> {
    paths::check_host_path(dir, Strictness::UserPath)?;
    let real = probe.resolve(dir)?;
    if real.kind != Kind::Dir {
        return Err("not a directory".into());
    }
    paths::check_host_path(&real.path, Strictness::UserPath)
        .map_err(|e| format!("resolves to {}: {e}", real.path.display()))?;
    match real.owner {
        Some(owner) if owner != uid => Err(format!(
            "owned by uid {owner}, not by the job's user (uid {uid})"
        )),
        _ => Ok(real.path),
    }
}

/// `/tmp` as the user sees it, if it is a directory of their own (not a symlink to one).
fn private_tmp(probe: &dyn HostProbe, uid: u32) -> Option<PathBuf> {
    let real = probe.resolve(Path::new("/tmp")).ok()?;
    (real.kind == Kind::Dir && real.path == Path::new("/tmp") && real.owner == Some(uid))
        .then_some(real.path)
}

/// Adds an identity-style mount unless an earlier mount already shows the same directory there.
fn add_unless_covered(
    mounts: &mut Vec<MountPlan>,
    source: PathBuf,
    target: PathBuf,
    readonly: bool,
    why: &str,
) {
    let covered = mounts.iter().any(|m| {
        m.source == m.target
            && source == target
            && paths::is_under(&source, &m.source)
            && (!m.readonly || readonly)
    });
    if !covered {
        mounts.push(MountPlan {
            source,
            target,
            readonly,
            why: why.into(),
        });
    }
}

/// The final mount list: identity mounts another identity mount already shows dropped, then
/// held to `paths::check_layout`. `ends` are where jobdock's, the job's and the site's mounts end
/// (the user's volumes follow); a refused volume is reported against `volumes`.
fn checked_layout(
    mounts: Vec<MountPlan>,
    ends: [usize; 3],
    volumes: Option<&Setting>,
) -> Result<Vec<MountPlan>, PlanError> {
    use paths::MountKind;
    let kind = |i: usize| match i {
        i if i < ends[0] => MountKind::Jobdock,
        i if i < ends[1] => MountKind::Job,
        i if i < ends[2] => MountKind::Site,
        _ => MountKind::Volume,
    };
    let identity = |m: &MountPlan| m.source == m.target;
    let covered = |i: usize, b: &MountPlan| {
        matches!(kind(i), MountKind::Job | MountKind::Volume)
            && identity(b)
            && mounts.iter().enumerate().any(|(j, a)| {
                j != i
                    && identity(a)
                    && a.target != b.target
                    && paths::is_under(&b.target, &a.target)
                    && (!a.readonly || b.readonly)
            })
    };
    let (mounts, kinds): (Vec<MountPlan>, Vec<MountKind>) = mounts
        .iter()
        .enumerate()
        .filter(|(i, m)| !covered(*i, m))
        .map(|(i, m)| (m.clone(), kind(i)))
        .unzip();
    let placed: Vec<paths::Placed<'_>> = mounts
        .iter()
        .zip(&kinds)
        .map(|(m, &kind)| paths::Placed {
            source: &m.source,
            target: &m.target,
            kind,
        })
        .collect();
    if let Err(e) = paths::check_layout(&placed) {
        let m = &mounts[e.index];
        return Err(match (kinds[e.index], volumes) {
            (MountKind::Volume, Some(s)) => s.refuse(e.reason).into(),
            _ => PlanError::Path {
                what: "mount target",
                path: m.target.display().to_string(),
                reason: format!("{}: {}", m.why, e.reason),
            },
        });
    }
    Ok(mounts)
}

fn volume(
    s: &Setting,
    v: &policy::VolumeRequest,
    config: &SiteConfig,
    probe: &dyn HostProbe,
) -> Result<MountPlan, PlanError> {
    let shown = v.source.display();
    if config.mounts.allowed_roots.is_empty() {
        return Err(s
            .refuse("this site allows no user volumes (mounts.allowed_roots is empty)")
            .into());
    }
    let target = paths::check_container_target(&v.target).map_err(|e| s.refuse(e))?;
    paths::check_host_path(&v.source, Strictness::UserPath).map_err(|e| s.refuse(e))?;
    let real = probe.resolve(&v.source).map_err(|e| s.refuse(e))?;
    if real.kind != Kind::Dir {
        return Err(s
            .refuse(format!(
                "{shown} is not a directory (only directories may be mounted)"
            ))
            .into());
    }
    // A root may itself be a symlink (/scratch -> /lustre/scratch): accept its real path too.
    let under_root = config.mounts.allowed_roots.iter().any(|root| {
        paths::is_under(&real.path, root)
            || probe
                .resolve(root)
                .is_ok_and(|r| paths::is_under(&real.path, &r.path))
    });
    if !under_root {
        let roots: Vec<String> = config
            .mounts
            .allowed_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        return Err(s
            .refuse(format!(
                "{shown} resolves to {}, outside the allowed roots ({})",
                real.path.display(),
                roots.join(", ")
            ))
            .into());
    }
    paths::check_host_path(&real.path, Strictness::UserPath).map_err(|e| s.refuse(e))?;
    Ok(MountPlan {
        source: real.path,
        target,
        readonly: v.readonly,
        why: format!("user volume ({})", s.var),
    })
}

/// The files a `*_FILE` variable names: absolute, each once (lexically), at most
/// `MAX_USER_FILES`.
fn user_files(s: &Setting) -> Result<Vec<&str>, Refusal> {
    let mut seen = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    for file in s.value.split_whitespace() {
        if !file.starts_with('/') {
            return Err(s.refuse(format!("{file:?} is not an absolute path")));
        }
        if !seen.insert(paths::normalize(Path::new(file))) {
            return Err(s.refuse(format!("{file} is named twice")));
        }
        files.push(file);
    }
    if files.len() > MAX_USER_FILES {
        return Err(s.refuse(format!(
            "{} files, more than the {MAX_USER_FILES} one variable may name (MAX_USER_FILES)",
            files.len()
        )));
    }
    Ok(files)
}

fn entrypoint(s: &Setting) -> Result<String, Refusal> {
    let e = s.value.trim();
    if e.is_empty() || e.len() > 4096 || e.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(s.refuse("must be one program path without spaces (e.g. /bin/bash)"));
    }
    Ok(e.to_string())
}

fn workdir(s: &Setting) -> Result<PathBuf, Refusal> {
    let p = Path::new(s.value.trim());
    let clean = paths::check_container_target(p).or_else(|e| {
        if p == Path::new("/") {
            Ok(p.to_path_buf())
        } else {
            Err(e)
        }
    });
    match clean {
        Ok(p) if !p.starts_with("/proc") && !p.starts_with("/sys") => Ok(p),
        Ok(p) => Err(s.refuse(format!("{} is under /proc or /sys", p.display()))),
        Err(e) => Err(s.refuse(e)),
    }
}

fn mode(
    s: Option<Setting>,
    choice: &crate::config::ModeChoice,
    key: &str,
) -> Result<String, Refusal> {
    let Some(s) = s else {
        return Ok(choice.default.clone());
    };
    let v = s.value.trim();
    if v.starts_with("container:") {
        return Err(s.refuse("joining another container's namespace is never allowed"));
    }
    if choice.allowed.iter().any(|a| a == v) {
        Ok(v.to_string())
    } else {
        Err(s.refuse(format!(
            "must be one of {} ({key}.allowed)",
            choice.allowed.join(", ")
        )))
    }
}

fn ports(s: &Setting, config: &SiteConfig, network: &str) -> Result<Vec<PortPlan>, Refusal> {
    let Some((lo, hi)) = config.ports.range else {
        return Err(s.refuse("this site allows no published ports (ports.range is not set)"));
    };
    if network == "host" || network == "none" {
        return Err(s.refuse(format!("ports cannot be published with network {network}")));
    }
    policy::parse_ports(s)?
        .into_iter()
        .map(
            |PortRequest {
                 host,
                 container,
                 protocol,
             }| {
                if host.0 < lo || host.1 > hi {
                    return Err(
                        s.refuse(format!("host ports must be within {lo}-{hi} (ports.range)"))
                    );
                }
                Ok(PortPlan {
                    host,
                    container,
                    protocol,
                })
            },
        )
        .collect()
}

#[cfg(test)]
mod tests;
