//! The site configuration, `wrapper.toml`: schema, hardened built-in defaults, and validation that
//! reports every problem with its key. Reads one file; decides nothing about a particular job.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::overrides::paths::{self, Strictness};
use crate::units::{ByteSize, Capability};

pub mod trust;

/// Where the site config lives unless root says otherwise.
pub const DEFAULT_PATH: &str = "/etc/jobdock/wrapper.toml";

/// The validated site policy. Every field has a hardened default, so `SiteConfig::default()` is
/// what a node with no config file runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteConfig {
    pub engine: Engine,
    pub images: Images,
    pub mounts: Mounts,
    pub security: Security,
    pub devices: Devices,
    pub limits: Limits,
    pub network: ModeChoice,
    pub ipc: ModeChoice,
    pub ports: Ports,
    pub overrides: Overrides,
    pub env: EnvPolicy,
    pub logging: Logging,
    pub authz: Authz,
    pub mpi: Mpi,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Engine {
    /// The dockerd socket jobdock talks to.
    pub socket: PathBuf,
    pub pull: PullPolicy,
    /// The pull policies a user may choose with LSB_DOCKER_PULL (empty: the variable is refused).
    pub pull_choices: Vec<PullPolicy>,
    /// Seconds between forwarding a stop signal and killing the job (LSF's JOB_TERMINATE_INTERVAL).
    pub grace_period_secs: u64,
    /// Root-owned directory for per-job files (synthesized passwd/group, cidfile, locks).
    pub state_dir: PathBuf,
    /// Where `<container name>.cid` files go; `None`: `state_dir`.
    pub cidfile_dir: Option<PathBuf>,
    /// How long to wait for an unreachable dockerd (it may be restarting) before giving up.
    pub connect_timeout_secs: u64,
    /// Bounds a pull, waiting for another job's pull of the same image included.
    pub pull_timeout_secs: u64,
    /// Put the container in the job's own cgroup (where the scheduler put jobdock), so the job's
    /// limits, suspend and accounting reach it.
    pub job_cgroup: bool,
    /// dockerd's cgroup driver: `cgroupfs` or `systemd` (`docker info` shows it).
    pub cgroup_driver: String,
    /// How a batch job's stdout and stderr reach jobdock (a terminal's always go through attach).
    pub output: OutputPath,
}

/// `engine.output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputPath {
    /// Through dockerd's attach stream (the shim, dockerd and its framing carry every byte).
    Attach,
    /// Through two FIFOs jobdock owns, bind-mounted into the container, past the shim and dockerd
    /// (BENCHMARKS.md); needs `/bin/sh` in the image (without it, the job goes through attach).
    Fifo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Pull only when the image is not on the node.
    Missing,
    /// Ask the registry which manifest the tag names now (one manifest request, no layers) and
    /// pull when it is not the one on the node: a pushed `:latest` reaches the next job.
    Newer,
    /// Pull before every job.
    Always,
    /// Never pull: the image must be on the node.
    Never,
}

impl PullPolicy {
    pub const ALL: [PullPolicy; 4] = [
        PullPolicy::Missing,
        PullPolicy::Newer,
        PullPolicy::Always,
        PullPolicy::Never,
    ];

    /// As the config and LSB_DOCKER_PULL spell it.
    pub fn name(self) -> &'static str {
        match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Newer => "newer",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// Registries jobs may pull from (`docker.io`, `registry.example.org:5000`); empty: any.
    pub allowed_registries: Vec<String>,
    /// `jobdock prune` removes an image no job has run for this many days.
    pub prune_after_days: u64,
    /// `jobdock prune` removes the least recently run images while the node's take more.
    pub prune_budget: Option<ByteSize>,
}

impl Images {
    /// What `jobdock prune` may remove.
    pub fn prune_policy(&self) -> crate::engine::images::PrunePolicy {
        crate::engine::images::PrunePolicy {
            unused_for: std::time::Duration::from_secs(
                self.prune_after_days.saturating_mul(86_400),
            ),
            budget: self.prune_budget,
        }
    }
}

impl Images {
    /// Whether jobs may run images from `registry` (`docker.io`, `host:5000`).
    pub fn allows(&self, registry: &str) -> bool {
        self.allowed_registries.is_empty() || self.allowed_registries.iter().any(|r| r == registry)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mounts {
    /// Host directories under which users may bind their own volumes (LSB_DOCKER_VOLUMES).
    pub allowed_roots: Vec<PathBuf>,
    /// Mount the user's home directory at the same path.
    pub home: bool,
    /// Mounts every job gets, set by the admin.
    pub site: Vec<SiteMount>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteMount {
    pub source: PathBuf,
    #[serde(default)]
    pub target: Option<PathBuf>,
    #[serde(default)]
    pub readonly: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Security {
    pub cap_add: Vec<Capability>,
    /// SELinux label options, e.g. `user:user_u`, passed as `label=...`.
    pub selinux_labels: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Devices {
    /// Globs of host devices every job gets, e.g. `/dev/infiniband/*`: each one a valid
    /// [`DeviceGlob`](crate::probe::DeviceGlob) matching no dangerous device.
    pub paths: Vec<String>,
    /// The locked-memory limit (soft and hard) of a job that gets devices: RDMA pins memory.
    pub memlock: Memlock,
}

/// `devices.memlock`: `"unlimited"` or a size (`"64g"`, `65536`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memlock {
    Unlimited,
    Bytes(ByteSize),
}

impl Memlock {
    /// As dockerd takes an rlimit: -1 is unlimited.
    pub fn rlimit(self) -> i64 {
        match self {
            Memlock::Unlimited => -1,
            Memlock::Bytes(b) => b.api(),
        }
    }

    /// As the key would be written: `"unlimited"`, `"8m"`, `"65536"`.
    pub fn config_text(self) -> String {
        match self {
            Memlock::Unlimited => "unlimited".into(),
            Memlock::Bytes(b) => size_text(b.bytes()),
        }
    }
}

/// `n` bytes as a config size, exactly: `8m`, `64k`, `1000`.
pub fn size_text(n: u64) -> String {
    match n {
        0 => "0".into(),
        n if n % ByteSize::GIB == 0 => format!("{}g", n / ByteSize::GIB),
        n if n % ByteSize::MIB == 0 => format!("{}m", n / ByteSize::MIB),
        n if n % ByteSize::KIB == 0 => format!("{}k", n / ByteSize::KIB),
        n => n.to_string(),
    }
}

impl<'de> Deserialize<'de> for Memlock {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            // -1, as dockerd and `--ulimit` write unlimited.
            Raw::Number(-1) => Ok(Memlock::Unlimited),
            Raw::Number(n) => u64::try_from(n)
                .map(|n| Memlock::Bytes(ByteSize::exact(n)))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{n} is not \"unlimited\" (or -1) or a size (examples: 64g, 512m, 65536)"
                    ))
                }),
            Raw::Text(t) if t.trim().eq_ignore_ascii_case("unlimited") => Ok(Memlock::Unlimited),
            Raw::Text(t) => t.parse().map(Memlock::Bytes).map_err(|_| {
                serde::de::Error::custom(format!(
                    "{t:?} is not \"unlimited\" (or -1) or a size (examples: 64g, 512m, 65536)"
                ))
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Memory when the scheduler says nothing about the job's allocation.
    pub memory: ByteSize,
    pub pids: i64,
    /// The largest LSB_DOCKER_SHM_SIZE a user may ask for.
    pub shm_size_max: ByteSize,
    /// The size of the tmpfs that is the container's `/tmp` when the job has no tmpdir of its
    /// own (its pages count against the job's memory).
    pub tmp_size: ByteSize,
}

/// A namespace mode the user may choose (network, IPC), with the default.
#[derive(Clone, Debug, PartialEq)]
pub struct ModeChoice {
    pub default: String,
    pub allowed: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ports {
    /// Host ports users may publish (LSB_DOCKER_PORTS); `None`: publishing is refused.
    pub range: Option<(u16, u16)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Overrides {
    /// cgroup parents a user may name with LSB_DOCKER_CGROUP; empty: the variable is refused.
    pub cgroup_parents: Vec<String>,
}

/// `[authz]`: what `jobdock authz` (the Docker authorization plugin) lets dockerd do beyond
/// jobdock's own requests and read-only inspection.
#[derive(Clone, Debug, PartialEq)]
pub struct Authz {
    /// Request classes allowed besides jobdock's (`AuthzAction`); empty: none.
    pub allow: Vec<AuthzAction>,
    /// Accept requests dockerd names a TLS user for (its client certificate's CN): each is then
    /// held to that user's own uid and groups. Off: such requests are refused.
    pub tls_users: bool,
}

/// A class of Engine API requests jobdock never makes, refused by `jobdock authz` unless
/// `authz.allow` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthzAction {
    /// `POST /containers/{id}/exec` and `/exec/{id}/*` (each exec still as a numeric non-root
    /// user, never privileged).
    Exec,
    /// `POST /containers/{id}/update` (devices and restart policy still held to the policy).
    Update,
    /// `/build`, `/session`: an image build's RUN containers never reach the plugin.
    Build,
    /// Installing, enabling and configuring daemon plugins (`/plugins/...`).
    Plugins,
    /// Swarm mode: `/swarm`, `/services`, `/nodes`, `/tasks`, `/secrets`, `/configs`.
    Swarm,
    /// `POST /volumes/create`, removing and pruning volumes (never with driver options).
    VolumeCreate,
    /// Creating, connecting, removing and pruning networks.
    NetworkCreate,
    /// `POST /images/load`, `/images/create?fromSrc=`, tagging, pushing and removing images.
    Images,
}

impl AuthzAction {
    pub const ALL: &[AuthzAction] = &[
        AuthzAction::Exec,
        AuthzAction::Update,
        AuthzAction::Build,
        AuthzAction::Plugins,
        AuthzAction::Swarm,
        AuthzAction::VolumeCreate,
        AuthzAction::NetworkCreate,
        AuthzAction::Images,
    ];

    /// The name in `authz.allow`.
    pub fn name(self) -> &'static str {
        match self {
            AuthzAction::Exec => "exec",
            AuthzAction::Update => "update",
            AuthzAction::Build => "build",
            AuthzAction::Plugins => "plugins",
            AuthzAction::Swarm => "swarm",
            AuthzAction::VolumeCreate => "volume_create",
            AuthzAction::NetworkCreate => "network_create",
            AuthzAction::Images => "images",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EnvPolicy {
    /// Variables never passed into a container, beyond the ones jobdock always drops.
    pub drop: Vec<String>,
    /// Variables set in every container (e.g. `LSF_NIOS_JOBSTATUS_INTERVAL = "1"`).
    pub set: BTreeMap<String, String>,
}

/// `[logging]`: jobdock's own messages and its audit record (src/logging.rs).
#[derive(Clone, Debug, PartialEq)]
pub struct Logging {
    /// The level shown when the user asks for none (`--log-level`, LSB_DOCKER_RUN_LOGLEVEL).
    pub level: tracing::Level,
    pub format: LogFormat,
    /// Where the one-line record of each job goes.
    pub audit: AuditTarget,
    /// The syslog socket (`/dev/log`: journald's or rsyslog's).
    pub syslog_socket: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `jobdock: warning: ...`
    Short,
    /// `2026-12-01T22:52:01.123Z jobdock[1234]: warning: ...`
    Long,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditTarget {
    Syslog,
    Stderr,
    None,
}
/// Parallel jobs (issue 14): one container per job step per node, which the step's tasks join.
#[derive(Clone, Debug, PartialEq)]
pub struct Mpi {
    /// The tasks of a Slurm step on a node share one container (one IPC, /dev/shm and PID
    /// namespace, so MPI's shared-memory transport works); `false`: a container per task.
    pub step_container: bool,
    /// The network a PMIx step's container gets when the user asks for none: Slurm's PMIx
    /// server listens on the host's loopback, unreachable from a bridge network. `None` (the
    /// default): the site's usual default, and PMIx then fails with "Unreachable".
    pub pmix_network: Option<String>,
    /// `/dev/shm` of a step container when the user asks for no size (MPI puts its
    /// shared-memory segments there; dockerd's 64 MiB is too small for many ranks).
    pub shm_size: Option<ByteSize>,
    /// Variables set in a step container unless the job sets them: MPI defaults that work in a
    /// hardened container (no CMA/ptrace under Docker's seccomp and without CAP_SYS_PTRACE).
    pub env: BTreeMap<String, String>,
    /// The ports of the per-job sshd of a job's virtual cluster (`LSB_DOCKER_SSHD`); `None` (the
    /// default): no virtual clusters.
    pub sshd_ports: Option<(u16, u16)>,
    /// The secret the virtual cluster's keys are derived from: root's alone, the same on every
    /// node.
    pub sshd_secret: PathBuf,
}

/// OpenMPI's vader single-copy mechanism (CMA, process_vm_readv) is denied by Docker's seccomp
/// profile and needs ptrace rights jobdock's containers lack; UCX's CMA likewise.
pub const MPI_ENV_DEFAULTS: &[(&str, &str)] = &[
    ("OMPI_MCA_btl_vader_single_copy_mechanism", "none"),
    ("UCX_TLS", "sm,self,tcp"),
];

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            engine: Engine {
                socket: PathBuf::from("/var/run/docker.sock"),
                pull: PullPolicy::Missing,
                pull_choices: vec![PullPolicy::Missing, PullPolicy::Newer],
                grace_period_secs: 10,
                state_dir: PathBuf::from("/run/jobdock"),
                cidfile_dir: None,
                connect_timeout_secs: 60,
                pull_timeout_secs: 3600,
                job_cgroup: true,
                cgroup_driver: "cgroupfs".into(),
                output: OutputPath::Fifo,
            },
            images: Images {
                allowed_registries: Vec::new(),
                prune_after_days: 30,
                prune_budget: None,
            },
            mounts: Mounts {
                allowed_roots: Vec::new(),
                home: true,
                site: Vec::new(),
            },
            security: Security {
                cap_add: Capability::DEFAULT_ALLOW.to_vec(),
                selinux_labels: Vec::new(),
            },
            devices: Devices {
                paths: Vec::new(),
                memlock: Memlock::Unlimited,
            },
            limits: Limits {
                memory: ByteSize::exact(4 * ByteSize::GIB),
                pids: 8192,
                shm_size_max: ByteSize::exact(16 * ByteSize::GIB),
                tmp_size: ByteSize::exact(ByteSize::GIB),
            },
            network: ModeChoice {
                default: "bridge".into(),
                allowed: vec!["bridge".into(), "host".into(), "none".into()],
            },
            ipc: ModeChoice {
                default: "private".into(),
                allowed: vec!["private".into(), "shareable".into()],
            },
            ports: Ports { range: None },
            overrides: Overrides {
                cgroup_parents: Vec::new(),
            },
            env: EnvPolicy {
                drop: Vec::new(),
                set: BTreeMap::new(),
            },
            logging: Logging {
                level: tracing::Level::WARN,
                format: LogFormat::Short,
                audit: AuditTarget::Syslog,
                syslog_socket: PathBuf::from("/dev/log"),
            },
            authz: Authz {
                allow: Vec::new(),
                tls_users: false,
            },
            mpi: Mpi {
                step_container: true,
                pmix_network: None,
                shm_size: Some(ByteSize::exact(ByteSize::GIB)),
                env: MPI_ENV_DEFAULTS
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                sshd_ports: None,
                sshd_secret: PathBuf::from("/etc/jobdock/sshd.secret"),
            },
        }
    }
}

/// One thing wrong with a config, with the key it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read site config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("site config {path} is not trustworthy: {reason}")]
    Untrusted {
        path: PathBuf,
        reason: crate::trust::NotRootsAlone,
    },
    #[error("site config {path} is invalid: {}", join(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl SiteConfig {
    /// Reads and validates `path`. A missing file at the default path means the built-in defaults;
    /// a missing file that was named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<SiteConfig, ConfigError> {
        if !explicit && !path.exists() {
            return Ok(SiteConfig::default());
        }
        trust::check_root_owned(path).map_err(|reason| ConfigError::Untrusted {
            path: path.into(),
            reason,
        })?;
        SiteConfig::load_untrusted(path)
    }

    /// Reads and validates `path` without asking who could have written it (`check-config`).
    pub fn load_untrusted(path: &Path) -> Result<SiteConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        SiteConfig::parse(&text).map_err(|problems| ConfigError::Invalid {
            path: path.into(),
            problems,
        })
    }

    /// Parses and validates config text, collecting every problem rather than stopping at the first:
    /// a syntax error (with its line and column), then each key on its own, so one key of the
    /// wrong type hides no other problem.
    pub fn parse(text: &str) -> Result<SiteConfig, Vec<Problem>> {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| vec![toml_problem(text, &e)])?;
        let mut problems = Vec::new();
        let mut good = toml::Table::new();
        for (section, value) in doc {
            let entries: Vec<(Option<String>, toml::Value)> = match value {
                toml::Value::Table(t) => t.into_iter().map(|(k, v)| (Some(k), v)).collect(),
                other => vec![(None, other)],
            };
            for (key, value) in entries {
                let single = match &key {
                    Some(k) => toml::Table::from_iter([(
                        section.clone(),
                        toml::Value::Table(toml::Table::from_iter([(k.clone(), value.clone())])),
                    )]),
                    None => toml::Table::from_iter([(section.clone(), value.clone())]),
                };
                let mut unknown = Vec::new();
                match raw_from(single, &mut unknown) {
                    Ok(_) => {
                        if let Some(k) = key
                            && let toml::Value::Table(t) = good
                                .entry(section.clone())
                                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                        {
                            t.insert(k, value);
                        }
                    }
                    Err(problem) => problems.push(problem),
                }
                problems.extend(unknown.into_iter().map(|key| Problem {
                    key,
                    message: "unknown key".into(),
                }));
            }
        }
        let raw = raw_from(good, &mut Vec::new()).map_err(|p| vec![p])?;
        let config = raw.validate(&mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

/// The typed file from a table, noting keys it does not know; a type error names its key.
fn raw_from(table: toml::Table, unknown: &mut Vec<String>) -> Result<Raw, Problem> {
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let value = toml::Value::Table(table);
    let ignoring = serde_ignored::Deserializer::new(value, &mut record);
    serde_path_to_error::deserialize(ignoring).map_err(|e| Problem {
        key: e.path().to_string(),
        // The deserializer's message, without the "in `key`" line it appends.
        message: e
            .into_inner()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
    })
}

/// A syntax error, at its line and column (1-based) when toml says where.
fn toml_problem(text: &str, e: &toml::de::Error) -> Problem {
    let message = e.message().trim().to_string();
    let key = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}")
        }
        None => "(document)".into(),
    };
    Problem { key, message }
}

// The file as written: every key optional, unknown keys reported by serde_ignored.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Raw {
    engine: RawEngine,
    images: RawImages,
    mounts: RawMounts,
    security: RawSecurity,
    devices: RawDevices,
    limits: RawLimits,
    network: RawModeChoice,
    ipc: RawModeChoice,
    ports: RawPorts,
    overrides: RawOverrides,
    env: RawEnv,
    logging: RawLogging,
    authz: RawAuthz,
    mpi: RawMpi,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawMpi {
    step_container: Option<bool>,
    pmix_network: Option<String>,
    shm_size: Option<ByteSize>,
    env: Option<BTreeMap<String, String>>,
    sshd_ports: Option<String>,
    sshd_secret: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawEngine {
    socket: Option<PathBuf>,
    pull: Option<PullPolicy>,
    pull_choices: Option<Vec<PullPolicy>>,
    grace_period_secs: Option<u64>,
    state_dir: Option<PathBuf>,
    cidfile_dir: Option<PathBuf>,
    connect_timeout_secs: Option<u64>,
    pull_timeout_secs: Option<u64>,
    job_cgroup: Option<bool>,
    cgroup_driver: Option<String>,
    output: Option<OutputPath>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawImages {
    allowed_registries: Option<Vec<String>>,
    prune_after_days: Option<u64>,
    prune_budget: Option<ByteSize>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawMounts {
    allowed_roots: Option<Vec<PathBuf>>,
    home: Option<bool>,
    site: Option<Vec<SiteMount>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawSecurity {
    cap_add: Option<Vec<String>>,
    selinux_labels: Option<Vec<String>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawDevices {
    paths: Option<Vec<String>>,
    memlock: Option<Memlock>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawLimits {
    memory: Option<ByteSize>,
    pids: Option<i64>,
    shm_size_max: Option<ByteSize>,
    tmp_size: Option<ByteSize>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawModeChoice {
    default: Option<String>,
    allowed: Option<Vec<String>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawPorts {
    range: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawOverrides {
    cgroup_parents: Option<Vec<String>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawLogging {
    level: Option<String>,
    format: Option<LogFormat>,
    audit: Option<AuditTarget>,
    syslog_socket: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawAuthz {
    allow: Option<Vec<String>>,
    tls_users: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawEnv {
    drop: Option<Vec<String>>,
    set: Option<BTreeMap<String, String>>,
}

impl Raw {
    fn validate(self, problems: &mut Vec<Problem>) -> SiteConfig {
        let mut c = SiteConfig::default();
        let mut bad = |key: &str, message: String| {
            problems.push(Problem {
                key: key.into(),
                message,
            })
        };

        if let Some(socket) = self.engine.socket {
            if !socket.is_absolute() {
                bad(
                    "engine.socket",
                    format!("{} is not an absolute path", socket.display()),
                );
            }
            c.engine.socket = socket;
        }
        c.engine.pull = self.engine.pull.unwrap_or(c.engine.pull);
        c.engine.pull_choices = self.engine.pull_choices.unwrap_or(c.engine.pull_choices);
        if let Some(grace) = self.engine.grace_period_secs {
            if grace > 3600 {
                bad(
                    "engine.grace_period_secs",
                    format!("{grace} is more than an hour"),
                );
            }
            c.engine.grace_period_secs = grace;
        }
        c.engine.job_cgroup = self.engine.job_cgroup.unwrap_or(c.engine.job_cgroup);
        c.engine.output = self.engine.output.unwrap_or(c.engine.output);
        if let Some(driver) = self.engine.cgroup_driver {
            if driver != "cgroupfs" && driver != "systemd" {
                bad(
                    "engine.cgroup_driver",
                    format!("{driver:?} is not cgroupfs or systemd"),
                );
            }
            c.engine.cgroup_driver = driver;
        }
        if let Some(dir) = self.engine.state_dir {
            if !dir.is_absolute() || dir.parent().is_none() {
                bad(
                    "engine.state_dir",
                    format!("{} must be an absolute path below /", dir.display()),
                );
            }
            c.engine.state_dir = dir;
        }
        if let Some(dir) = self.engine.cidfile_dir {
            if !dir.is_absolute() || dir.parent().is_none() {
                bad(
                    "engine.cidfile_dir",
                    format!("{} must be an absolute path below /", dir.display()),
                );
            }
            c.engine.cidfile_dir = Some(dir);
        }
        for (key, value, slot) in [
            (
                "engine.connect_timeout_secs",
                self.engine.connect_timeout_secs,
                &mut c.engine.connect_timeout_secs,
            ),
            (
                "engine.pull_timeout_secs",
                self.engine.pull_timeout_secs,
                &mut c.engine.pull_timeout_secs,
            ),
        ] {
            match value {
                Some(0) => bad(key, "must be at least 1".into()),
                Some(secs) if secs > 86_400 => bad(key, format!("{secs} is more than a day")),
                Some(secs) => *slot = secs,
                None => {}
            }
        }

        if let Some(registries) = self.images.allowed_registries {
            for r in &registries {
                if r.is_empty() || r.contains(['/', ' ', '@']) {
                    bad(
                        "images.allowed_registries",
                        format!("{r:?} is not a registry host[:port]"),
                    );
                }
            }
            c.images.allowed_registries = registries;
        }
        match self.images.prune_after_days {
            Some(0) => bad(
                "images.prune_after_days",
                "must be at least 1 (an image a job ran today is kept)".into(),
            ),
            Some(days) if days > 36_500 => bad(
                "images.prune_after_days",
                format!("{days} is more than a hundred years"),
            ),
            Some(days) => c.images.prune_after_days = days,
            None => {}
        }
        c.images.prune_budget = self.images.prune_budget.or(c.images.prune_budget);

        if let Some(roots) = self.mounts.allowed_roots {
            for root in &roots {
                if let Err(e) = paths::check_host_path(root, Strictness::UserPath) {
                    bad("mounts.allowed_roots", e);
                }
            }
            c.mounts.allowed_roots = roots.iter().map(|r| paths::normalize(r)).collect();
        }
        c.mounts.home = self.mounts.home.unwrap_or(c.mounts.home);
        if let Some(site) = self.mounts.site {
            for (i, m) in site.iter().enumerate() {
                let key = format!("mounts.site[{i}]");
                if let Err(e) = paths::check_host_path(&m.source, Strictness::SiteMount) {
                    bad(&format!("{key}.source"), e);
                }
                let target = m.target.as_deref().unwrap_or(&m.source);
                if let Err(e) = paths::check_container_target(target) {
                    bad(&format!("{key}.target"), e);
                }
            }
            // The layout rule among the site's own mounts and jobdock's (every job has those).
            let targets: Vec<PathBuf> = site
                .iter()
                .map(|m| paths::normalize(m.target.as_deref().unwrap_or(&m.source)))
                .collect();
            let fixed = [Path::new("/etc/passwd"), Path::new("/etc/group")];
            let placed: Vec<paths::Placed<'_>> = fixed
                .iter()
                .map(|t| paths::Placed {
                    source: t,
                    target: t,
                    kind: paths::MountKind::Jobdock,
                })
                .chain(site.iter().zip(&targets).map(|(m, t)| paths::Placed {
                    source: &m.source,
                    target: t,
                    kind: paths::MountKind::Site,
                }))
                .collect();
            if let Err(e) = paths::check_layout(&placed) {
                let i = e.index.saturating_sub(fixed.len());
                bad(&format!("mounts.site[{i}].target"), e.reason);
            }
            c.mounts.site = site;
        }

        if let Some(caps) = self.security.cap_add {
            c.security.cap_add.clear();
            for name in caps {
                match name.parse::<Capability>() {
                    Ok(cap) if Capability::FORBIDDEN.contains(&cap) => bad(
                        "security.cap_add",
                        format!(
                            "{cap} lets a job bypass permissions or reach the kernel; jobdock never grants it"
                        ),
                    ),
                    Ok(cap) if !c.security.cap_add.contains(&cap) => c.security.cap_add.push(cap),
                    Ok(_) => {}
                    Err(e) => bad("security.cap_add", e),
                }
            }
            c.security.cap_add.sort();
        }
        if let Some(labels) = self.security.selinux_labels {
            for l in &labels {
                let ok = matches!(l.split_once(':'), Some((k, v)) if ["user", "role", "type", "level"].contains(&k)
                    && !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() && b != b','));
                if !ok {
                    bad(
                        "security.selinux_labels",
                        format!("{l:?} is not user:X, role:X, type:X or level:X"),
                    );
                } else if UNCONFINED_SELINUX_TYPES
                    .iter()
                    .any(|t| l.strip_prefix("type:") == Some(t))
                {
                    bad(
                        "security.selinux_labels",
                        format!("{l:?} is an unconfined domain: SELinux would not confine the job"),
                    );
                }
            }
            c.security.selinux_labels = labels;
        }

        if let Some(globs) = self.devices.paths {
            for g in &globs {
                if !g.starts_with("/dev/") || g.contains("..") {
                    bad(
                        "devices.paths",
                        format!("{g:?} must be a path or glob under /dev/"),
                    );
                    continue;
                }
                match crate::probe::DeviceGlob::parse(g) {
                    Err(e) => bad("devices.paths", format!("{g:?}: {e}")),
                    Ok(glob) => {
                        if let Some(danger) = DANGEROUS_DEVICES.iter().find(|d| glob.matches(d)) {
                            bad(
                                "devices.paths",
                                format!(
                                    "{g:?} matches {danger}: memory, kernel, I/O port and disk \
                                     devices give a job the node (name the devices, e.g. \
                                     /dev/infiniband/*)"
                                ),
                            );
                        }
                    }
                }
            }
            c.devices.paths = globs;
        }
        if let Some(memlock) = self.devices.memlock {
            if let Memlock::Bytes(b) = memlock
                && b.bytes() < 64 * ByteSize::KIB
            {
                bad(
                    "devices.memlock",
                    format!(
                        "{b} is below the kernel's default of 64 KiB: a device job could pin \
                         (register) almost no memory"
                    ),
                );
            }
            c.devices.memlock = memlock;
        }

        if let Some(memory) = self.limits.memory {
            if memory.bytes() < 6 * ByteSize::MIB {
                bad(
                    "limits.memory",
                    format!("{memory} is below Docker's minimum of 6 MiB"),
                );
            }
            c.limits.memory = memory;
        }
        if let Some(pids) = self.limits.pids {
            if pids < 16 {
                bad(
                    "limits.pids",
                    format!("{pids} is too small for any job (at least 16)"),
                );
            }
            c.limits.pids = pids;
        }
        c.limits.shm_size_max = self.limits.shm_size_max.unwrap_or(c.limits.shm_size_max);
        if let Some(tmp) = self.limits.tmp_size {
            if tmp.bytes() < ByteSize::MIB {
                bad(
                    "limits.tmp_size",
                    format!("{tmp} is too small for a /tmp (at least 1 MiB)"),
                );
            }
            c.limits.tmp_size = tmp;
        }

        validate_modes(
            "network",
            self.network,
            &mut c.network,
            &mut bad,
            &["bridge", "host", "none"],
        );
        validate_modes(
            "ipc",
            self.ipc,
            &mut c.ipc,
            &mut bad,
            &["private", "shareable", "host", "none"],
        );

        if let Some(b) = self.mpi.step_container {
            c.mpi.step_container = b;
        }
        if let Some(net) = self.mpi.pmix_network {
            if c.network.allowed.contains(&net) {
                c.mpi.pmix_network = Some(net);
            } else {
                bad(
                    "mpi.pmix_network",
                    format!(
                        "{net:?} is not one of network.allowed ({})",
                        c.network.allowed.join(", ")
                    ),
                );
            }
        }
        if let Some(size) = self.mpi.shm_size {
            if size > c.limits.shm_size_max {
                bad(
                    "mpi.shm_size",
                    format!(
                        "{size} is more than limits.shm_size_max ({})",
                        c.limits.shm_size_max
                    ),
                );
            }
            c.mpi.shm_size = Some(size);
        }
        if let Some(env) = self.mpi.env {
            for k in env.keys() {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    bad("mpi.env", format!("{k:?} is not a variable name"));
                }
            }
            c.mpi.env = env;
        }
        if let Some(range) = self.mpi.sshd_ports {
            match unprivileged_ports(&range, "22000-22999") {
                Ok(r) => c.mpi.sshd_ports = Some(r),
                Err(why) => bad("mpi.sshd_ports", why),
            }
        }
        if let Some(path) = self.mpi.sshd_secret {
            if path.is_absolute() {
                c.mpi.sshd_secret = path;
            } else {
                bad(
                    "mpi.sshd_secret",
                    format!("{} is not an absolute path", path.display()),
                );
            }
        }

        if let Some(range) = self.ports.range {
            match unprivileged_ports(&range, "8000-8999") {
                Ok(r) => c.ports.range = Some(r),
                Err(why) => bad("ports.range", why),
            }
        }

        if let Some(parents) = self.overrides.cgroup_parents {
            for p in &parents {
                if let Some(reason) = cgroup_parent_problem(p) {
                    bad("overrides.cgroup_parents", reason);
                }
            }
            c.overrides.cgroup_parents = parents;
        }

        if let Some(drop) = self.env.drop {
            c.env.drop = drop;
        }
        if let Some(set) = self.env.set {
            for (k, v) in &set {
                if !crate::overrides::env::valid_name(k) || v.contains(['\0', '\n']) {
                    bad(
                        &format!("env.set.{k}"),
                        "is not a valid NAME = \"value\" (no newline)".into(),
                    );
                } else if crate::overrides::env::OWNED.contains(&k.as_str()) {
                    bad(
                        &format!("env.set.{k}"),
                        "is set by jobdock for each job (the job's user, home, tmpdir, GPUs); \
                         a site value would replace it in every container"
                            .into(),
                    );
                }
            }
            c.env.set = set;
        }
        if let Some(level) = self.logging.level {
            match crate::overrides::parse_level_name(&level) {
                Some(l) => c.logging.level = l,
                None => bad(
                    "logging.level",
                    format!("{level:?} is not {}", crate::logging::LEVEL_NAMES),
                ),
            }
        }
        c.logging.format = self.logging.format.unwrap_or(c.logging.format);
        c.logging.audit = self.logging.audit.unwrap_or(c.logging.audit);
        if let Some(socket) = self.logging.syslog_socket {
            if !socket.is_absolute() {
                bad(
                    "logging.syslog_socket",
                    format!("{} is not an absolute path", socket.display()),
                );
            }
            c.logging.syslog_socket = socket;
        }
        if let Some(allow) = self.authz.allow {
            c.authz.allow.clear();
            for name in &allow {
                match AuthzAction::ALL.iter().find(|a| a.name() == name) {
                    Some(a) if !c.authz.allow.contains(a) => c.authz.allow.push(*a),
                    Some(_) => {}
                    None => bad(
                        "authz.allow",
                        format!(
                            "{name:?} is not one of {}",
                            AuthzAction::ALL
                                .iter()
                                .map(|a| a.name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                }
            }
            c.authz.allow.sort();
        }
        c.authz.tls_users = self.authz.tls_users.unwrap_or(c.authz.tls_users);
        c
    }
}

/// Why `p` may not be a container's cgroup parent, if it may not: not a plain cgroup name, or the
/// root cgroup (a container there escapes every job's limits). The rule for
/// `overrides.cgroup_parents` and for the parents `jobdock authz` lets a create name.
pub fn cgroup_parent_problem(p: &str) -> Option<String> {
    if p.is_empty()
        || p.contains("..")
        || !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    {
        Some(format!("{p:?} is not a plain cgroup name"))
    } else if p.split('/').all(|part| part.is_empty() || part == ".") {
        Some(format!(
            "{p:?} is the root cgroup: a job there escapes every job's limits"
        ))
    } else {
        None
    }
}

/// Devices no job may have: memory and I/O ports, the kernel log, CPU registers, disks (one of
/// each kind, for matching the site's globs against).
const DANGEROUS_DEVICES: &[&str] = &[
    "/dev/mem",
    "/dev/kmem",
    "/dev/port",
    "/dev/kmsg",
    "/dev/cpu/0/msr",
    "/dev/watchdog",
    "/dev/sda",
    "/dev/sda1",
    "/dev/vda",
    "/dev/xvda",
    "/dev/nvme0n1",
    "/dev/nvme0",
    "/dev/loop0",
    "/dev/loop-control",
    "/dev/dm-0",
    "/dev/md0",
    "/dev/sg0",
    "/dev/mapper/control",
    "/dev/disk/by-id/x",
];

/// SELinux domains that confine nothing (`spc_t`: "super privileged container").
const UNCONFINED_SELINUX_TYPES: &[&str] = &["spc_t", "unconfined_t", "kernel_t", "init_t"];

fn validate_modes(
    table: &str,
    raw: RawModeChoice,
    choice: &mut ModeChoice,
    bad: &mut impl FnMut(&str, String),
    known: &[&str],
) {
    if let Some(allowed) = raw.allowed {
        for mode in &allowed {
            if !known.contains(&mode.as_str()) {
                bad(
                    &format!("{table}.allowed"),
                    format!("{mode:?} is not one of {}", known.join(", ")),
                );
            }
        }
        choice.allowed = allowed;
    }
    if let Some(default) = raw.default {
        choice.default = default;
    }
    if !choice.allowed.contains(&choice.default) {
        bad(
            &format!("{table}.default"),
            format!("{:?} is not in {table}.allowed", choice.default),
        );
    }
}

/// A site's range of ports (`LOW-HIGH`, or one port), none below 1024; the error says why not,
/// with `example`.
fn unprivileged_ports(text: &str, example: &str) -> Result<(u16, u16), String> {
    match parse_port_range(text) {
        Some((lo, hi)) if lo >= 1024 => Ok((lo, hi)),
        Some(_) => Err(format!("{text:?} includes privileged ports below 1024")),
        None => Err(format!("{text:?} is not LOW-HIGH (e.g. {example})")),
    }
}

/// `8000-8999` or a single port.
pub fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_hardened_default() {
        assert_eq!(SiteConfig::parse("").unwrap(), SiteConfig::default());
        let d = SiteConfig::default();
        assert_eq!(d.limits.memory, ByteSize::exact(4 * ByteSize::GIB));
        assert_eq!(d.security.cap_add, Capability::DEFAULT_ALLOW);
        assert!(d.mounts.allowed_roots.is_empty());
        assert!(d.ports.range.is_none());
        assert!(d.overrides.cgroup_parents.is_empty());
    }

    #[test]
    fn the_shipped_example_is_valid_and_allows_gpfs_and_scratch() {
        let text = include_str!("../../wrapper.toml.example");
        let c = SiteConfig::parse(text).unwrap_or_else(|p| panic!("{}", join(&p)));
        assert_eq!(
            c.mounts.allowed_roots,
            [PathBuf::from("/gpfs"), PathBuf::from("/scratch")]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
            [engine]
            socket = "docker.sock"
            colour = "blue"
            [mounts]
            allowed_roots = ["/", "/gpfs", "/var/lib/docker/x"]
            [security]
            cap_add = ["SYS_ADMIN", "NOT_A_CAP", "KILL"]
            [network]
            allowed = ["bridge", "container:abc"]
            [limits]
            pids = 1
            [ports]
            range = "80-90"
            [bogus]
            x = 1
        "#;
        let problems = SiteConfig::parse(text).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for want in [
            "engine.colour",
            "bogus",
            "engine.socket",
            "mounts.allowed_roots",
            "security.cap_add",
            "network.allowed",
            "limits.pids",
            "ports.range",
        ] {
            assert!(
                keys.iter().any(|k| k.starts_with(want)),
                "no problem for {want}: {problems:?}"
            );
        }
        let roots: Vec<_> = problems
            .iter()
            .filter(|p| p.key == "mounts.allowed_roots")
            .collect();
        assert_eq!(
            roots.len(),
            2,
            "/ and /var/lib/docker/x are both refused: {roots:?}"
        );
        let caps: Vec<_> = problems
            .iter()
            .filter(|p| p.key == "security.cap_add")
            .collect();
        assert_eq!(
            caps.len(),
            2,
            "SYS_ADMIN forbidden, NOT_A_CAP unknown: {caps:?}"
        );
    }

    /// Issue 11 item 2: a site mount inside another, or above what jobdock and dockerd mount,
    /// would make the engine create mount points in a host directory.
    #[test]
    fn site_mounts_never_nest() {
        let cases = [
            (r#"{ source = "/opt/lsf" }, { source = "/opt/apps" }"#, None),
            (
                r#"{ source = "/opt/lsf" }, { source = "/opt/sw", target = "/opt/lsf/sw" }"#,
                Some(("mounts.site[1].target", "inside /opt/lsf")),
            ),
            (
                r#"{ source = "/opt/sw", target = "/opt/lsf/sw" }, { source = "/opt/lsf" }"#,
                Some(("mounts.site[1].target", "inside /opt/lsf")),
            ),
            (
                r#"{ source = "/opt/etc", target = "/etc" }"#,
                Some(("mounts.site[0].target", "/etc would hold /etc/hosts")),
            ),
            (r#"{ source = "/etc/hosts", readonly = true }"#, None),
        ];
        for (site, want) in cases {
            let text = format!("[mounts]\nsite = [{site}]\n");
            match (SiteConfig::parse(&text), want) {
                (Ok(_), None) => {}
                (Err(problems), Some((key, words))) => assert!(
                    problems
                        .iter()
                        .any(|p| p.key == key && p.to_string().contains(words)),
                    "{site}: {problems:?}"
                ),
                (got, want) => panic!("{site}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn engine_keys_are_checked() {
        let c = SiteConfig::parse(
            "[engine]\ncidfile_dir = \"/run/lsf-cids\"\nconnect_timeout_secs = 5\npull_timeout_secs = 60\n",
        )
        .unwrap();
        assert_eq!(c.engine.cidfile_dir, Some(PathBuf::from("/run/lsf-cids")));
        assert_eq!(
            (c.engine.connect_timeout_secs, c.engine.pull_timeout_secs),
            (5, 60)
        );
        let cases = [
            ("cidfile_dir = \"cids\"", "engine.cidfile_dir"),
            ("connect_timeout_secs = 0", "engine.connect_timeout_secs"),
            ("pull_timeout_secs = 100000", "engine.pull_timeout_secs"),
        ];
        for (line, key) in cases {
            let problems = SiteConfig::parse(&format!("[engine]\n{line}\n")).unwrap_err();
            assert_eq!(problems.len(), 1, "{line}: {problems:?}");
            assert_eq!(problems[0].key, key);
        }
    }

    /// Issue 12.8: the locked-memory limit of device jobs is the site's to choose.
    /// Device globs are the `glob` crate's, within one component: `[...]` classes are globs
    /// too, and `**` (once silently `*`) is refused, naming the key.
    #[test]
    fn device_globs_are_globs_within_one_component() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("/dev/infiniband/*", Ok(())),
            ("/dev/nvidia[0-9]", Ok(())),
            ("/dev/cpu/*", Ok(())),
            ("/dev/**", Err("`**` is not a glob jobdock knows")),
            (
                "/dev/infiniband/**",
                Err("`**` is not a glob jobdock knows"),
            ),
            ("/dev/{null,zero}", Err("alternatives are not a glob")),
            ("/dev/nvidia[0-9", Err("not a glob: invalid range pattern")),
            ("/etc/shadow", Err("must be a path or glob under /dev/")),
            ("/dev/../etc/x", Err("must be a path or glob under /dev/")),
            ("/dev/[m]em", Err("matches /dev/mem")),
            ("/dev/sd[a-z]", Err("matches /dev/sda")),
            ("/dev/*", Err("matches /dev/mem")),
        ];
        for (glob, want) in cases {
            let got = SiteConfig::parse(&format!("[devices]\npaths = [{glob:?}]\n"));
            match (got, want) {
                (Ok(c), Ok(())) => assert_eq!(c.devices.paths, [*glob]),
                (Err(problems), Err(words)) => {
                    assert_eq!(problems.len(), 1, "{glob}: {problems:?}");
                    assert_eq!(problems[0].key, "devices.paths", "{glob}");
                    assert!(problems[0].message.contains(words), "{glob}: {problems:?}");
                }
                (got, want) => panic!("{glob}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn devices_memlock_is_unlimited_or_a_size() {
        assert_eq!(SiteConfig::default().devices.memlock, Memlock::Unlimited);
        let cases: &[(&str, Result<Memlock, &str>)] = &[
            ("\"unlimited\"", Ok(Memlock::Unlimited)),
            ("\"Unlimited\"", Ok(Memlock::Unlimited)),
            ("-1", Ok(Memlock::Unlimited)),
            (
                "\"8m\"",
                Ok(Memlock::Bytes(ByteSize::exact(8 * ByteSize::MIB))),
            ),
            (
                "\"64g\"",
                Ok(Memlock::Bytes(ByteSize::exact(64 * ByteSize::GIB))),
            ),
            ("65536", Ok(Memlock::Bytes(ByteSize::exact(65536)))),
            ("\"lots\"", Err("is not \"unlimited\"")),
            ("-2", Err("is not \"unlimited\"")),
            ("\"4k\"", Err("below the kernel's default of 64 KiB")),
            ("0", Err("below the kernel's default of 64 KiB")),
            ("true", Err("")),
        ];
        for (value, want) in cases {
            let got = SiteConfig::parse(&format!("[devices]\nmemlock = {value}\n"));
            match (got, want) {
                (Ok(c), Ok(m)) => assert_eq!(c.devices.memlock, *m, "{value}"),
                (Err(problems), Err(words)) => {
                    assert_eq!(problems.len(), 1, "{value}: {problems:?}");
                    assert_eq!(problems[0].key, "devices.memlock", "{value}");
                    assert!(problems[0].message.contains(words), "{value}: {problems:?}");
                }
                (got, want) => panic!("{value}: got {got:?}, want {want:?}"),
            }
        }
        let cases = [
            (Memlock::Unlimited, "unlimited", -1),
            (Memlock::Bytes(ByteSize::exact(8 << 20)), "8m", 8 << 20),
            (Memlock::Bytes(ByteSize::exact(3 << 30)), "3g", 3 << 30),
            (Memlock::Bytes(ByteSize::exact(65536)), "64k", 65536),
            (Memlock::Bytes(ByteSize::exact(100_000)), "100000", 100_000),
        ];
        for (m, text, rlimit) in cases {
            assert_eq!((m.config_text().as_str(), m.rlimit()), (text, rlimit));
            assert_eq!(
                SiteConfig::parse(&format!("[devices]\nmemlock = \"{text}\"\n"))
                    .unwrap()
                    .devices
                    .memlock,
                m,
                "{text} reads back"
            );
        }
    }

    #[test]
    fn authz_keys_are_checked() {
        let c = SiteConfig::parse(
            "[authz]\nallow = [\"exec\", \"build\", \"exec\"]\ntls_users = true\n",
        )
        .unwrap();
        assert_eq!(c.authz.allow, [AuthzAction::Exec, AuthzAction::Build]);
        assert!(c.authz.tls_users);
        assert_eq!(SiteConfig::default().authz.allow, []);
        let cases = [
            (
                "allow = [\"privileged\"]",
                "authz.allow",
                "is not one of exec",
            ),
            ("allow = \"exec\"", "authz.allow", "invalid type"),
            ("tls_users = \"yes\"", "authz.tls_users", "invalid type"),
            ("listen = \"/tmp/x\"", "authz.listen", "unknown key"),
        ];
        for (line, key, words) in cases {
            let problems = SiteConfig::parse(&format!("[authz]\n{line}\n")).unwrap_err();
            assert_eq!(problems.len(), 1, "{line}: {problems:?}");
            assert_eq!(problems[0].key, key, "{line}");
            assert!(problems[0].message.contains(words), "{line}: {problems:?}");
        }
        let problems = SiteConfig::parse("[authz]\nallow = [\"exec\"\n").unwrap_err();
        assert!(
            problems[0].key.starts_with("line 2, column"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_virtual_clusters_ports_and_secret_are_checked() {
        let c =
            SiteConfig::parse("[mpi]\nsshd_ports = \"22000-22099\"\nsshd_secret = \"/etc/x\"\n")
                .unwrap();
        assert_eq!(c.mpi.sshd_ports, Some((22000, 22099)));
        assert_eq!(c.mpi.sshd_secret, PathBuf::from("/etc/x"));
        assert_eq!(SiteConfig::default().mpi.sshd_ports, None);
        for (line, words) in [
            ("sshd_ports = \"22-2000\"", "privileged"),
            ("sshd_ports = \"high\"", "not LOW-HIGH"),
            ("sshd_secret = \"secret\"", "not an absolute path"),
        ] {
            let problems = SiteConfig::parse(&format!("[mpi]\n{line}\n")).unwrap_err();
            assert_eq!(problems.len(), 1, "{line}: {problems:?}");
            assert!(
                problems[0].key.starts_with("mpi.sshd_"),
                "{line}: {problems:?}"
            );
            assert!(problems[0].message.contains(words), "{line}: {problems:?}");
        }
    }

    #[test]
    fn type_errors_name_their_key() {
        let problems = SiteConfig::parse("[limits]\nmemory = \"lots\"\n").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "limits.memory");
        assert!(problems[0].message.contains("not a size"), "{problems:?}");
        let problems = SiteConfig::parse("[engine]\npull = \"sometimes\"\n").unwrap_err();
        assert_eq!(problems[0].key, "engine.pull", "{problems:?}");
    }

    #[test]
    fn missing_default_file_means_defaults_but_missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("wrapper.toml");
        assert_eq!(
            SiteConfig::load(&missing, false).unwrap(),
            SiteConfig::default()
        );
        let err = SiteConfig::load(&missing, true).unwrap_err().to_string();
        assert!(err.contains("wrapper.toml"), "{err}");
    }
}
