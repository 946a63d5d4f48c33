//! The seam between jobdock and dockerd: the few Engine API calls a job needs, as a trait with
//! jobdock's own types. `docker.rs` implements it with bollard; tests use a recording fake that
//! fails at any step. Nothing here talks to a daemon.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::AsyncWrite;

use crate::engine::auth::RegistryAuth;
use crate::image::ImageRef;
use crate::plan::ContainerPlan;

/// What went wrong talking to dockerd, classified for the decisions the engine makes (retry,
/// ignore a missing container, report a name conflict).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DaemonError {
    pub kind: ErrorKind,
    /// The daemon's own message (or the transport's), without bollard's wrapping.
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The socket is missing or refuses connections.
    Unreachable,
    /// No answer within the request timeout.
    Timeout,
    /// HTTP 404: no such container or image.
    NotFound,
    /// HTTP 409: name in use, container not running, removal in progress.
    Conflict,
    /// Any other HTTP error status.
    Status(u16),
    /// An error reported inside a 200 OK stream (pull progress) or a broken stream.
    Stream,
    Other,
}

impl DaemonError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        DaemonError {
            kind,
            message: message.into(),
        }
    }
}

/// One piece of the job's output, as dockerd demultiplexed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Chunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

pub(super) type Output = Pin<Box<dyn Stream<Item = Result<Chunk, DaemonError>> + Send>>;
pub(super) type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// The job's streams: its stdout and stderr (a TTY job's console arrives as stdout), and its stdin.
pub(super) struct Attached {
    pub output: Output,
    pub input: Input,
}

/// The parts of `GET /containers/{id}/json` the engine looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ContainerState {
    pub running: bool,
    pub paused: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
    /// The daemon's error for the container, e.g. when the runtime could not start it.
    pub error: String,
    /// The host pid of the container's first process (its init) while it runs; 0 otherwise.
    pub pid: u32,
    /// The container's `PATH` (the image's, as jobdock never sets it); empty when unset.
    pub path: String,
    /// The container as dockerd made it, for `verify` to compare with the plan.
    pub effective: Effective,
}

/// What dockerd recorded for a container: the security-relevant fields of its config as stored
/// (after any daemon default, or an authorization plugin, had its say), spelled as the API does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Effective {
    /// The image's id (`sha256:...`).
    pub image: String,
    pub user: String,
    pub working_dir: String,
    pub group_add: Vec<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub security_opt: Vec<String>,
    pub pid_mode: String,
    pub userns_mode: String,
    pub uts_mode: String,
    pub ipc_mode: String,
    pub network_mode: String,
    pub cgroup_parent: String,
    pub binds: Vec<String>,
    pub volumes_from: Vec<String>,
    /// The mounts the container will really get (the inspect's top-level `Mounts`).
    pub mounts: Vec<MountSeen>,
    /// `HostConfig.Tmpfs`: target and options (not in the top-level `Mounts`).
    pub tmpfs: BTreeMap<String, String>,
    pub devices: Vec<DeviceSeen>,
    pub device_cgroup_rules: Vec<String>,
    /// Device ids of each device request (GPUs).
    pub device_requests: Vec<Vec<String>>,
    pub sysctls: BTreeMap<String, String>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub oom_score_adj: i64,
    pub oom_kill_disable: bool,
    pub memory: i64,
    pub memory_swap: i64,
    pub pids_limit: i64,
    /// `HostConfig.Init`: docker-init as PID 1.
    pub init: bool,
    /// `HostConfig.LogConfig.Type`.
    pub log_driver: String,
    /// `Config.Healthcheck.Test`: `["NONE"]` when the image's health check is off.
    pub healthcheck: Vec<String>,
    /// `HostConfig.RestartPolicy.Name` (`"no"`, or empty for dockerd's default, also no restart).
    pub restart_policy: String,
    /// `HostConfig.Ulimits` as (name, soft, hard).
    pub ulimits: Vec<(String, i64, i64)>,
}

/// One entry of the inspect's `Mounts`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct MountSeen {
    /// `bind`, `volume`, `tmpfs`, ...
    pub typ: String,
    pub source: String,
    pub destination: String,
    pub rw: bool,
    pub propagation: String,
}

/// A file read out of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ContainerFile {
    Regular(Vec<u8>),
    /// Larger than the limit the caller gave.
    TooLarge,
    /// A symlink, to this target.
    Symlink(String),
    /// A directory, device, ...
    NotRegular,
}

/// What a path in a container's file system is (`HEAD /containers/{id}/archive`: dockerd follows
/// the symlinks on the way, inside the container's root, but not a final one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PathKind {
    Directory,
    Regular,
    /// A symlink, to this target.
    Symlink(String),
    /// A device, socket or pipe; or a path dockerd cannot resolve (its symlinks loop).
    Other,
}

/// One entry of `HostConfig.Devices`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct DeviceSeen {
    pub on_host: String,
    pub in_container: String,
    pub permissions: String,
}

/// A container found by label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Found {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// One line of pull progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Progress {
    pub layer: Option<String>,
    pub status: String,
    pub current: Option<u64>,
    pub total: Option<u64>,
}

/// An image on the node, as `GET /images/{name}/json` describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LocalImage {
    /// `sha256:...`
    pub id: String,
    /// `repository@sha256:...` for each registry manifest it was pulled (or pushed) as; empty for
    /// an image built or loaded on the node.
    pub repo_digests: Vec<String>,
    /// The image's own `ENTRYPOINT` (empty: none).
    pub entrypoint: Vec<String>,
}

/// The Engine API calls jobdock makes. `async fn` without `Send` bounds is fine: the engine runs
/// on a current-thread runtime and never moves the daemon into a spawned task.
pub(super) trait Daemon {
    /// `image` if it is on the node (`GET /images/{name}/json`): never contacts a registry.
    async fn image_exists(&self, image: &ImageRef) -> Result<Option<LocalImage>, DaemonError>;
    /// Asks the registry, through dockerd and with `auth` (or none), for the manifest `image`
    /// names (`GET /distribution/{name}/json`); returns its digest. An error means the registry
    /// did not give it (refused, unknown) or could not be asked.
    async fn registry_manifest(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, DaemonError>;
    /// Pulls exactly `image` (its tag or digest, never all tags), reporting progress; an error
    /// inside the progress stream is an error.
    async fn pull(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), DaemonError>;
    /// Creates the container named `plan.name`; returns its id.
    async fn create(&self, plan: &ContainerPlan) -> Result<String, DaemonError>;
    /// Whether `path` exists in the (created, not yet started) container's file system.
    async fn path_exists(&self, id: &str, path: &str) -> Result<bool, DaemonError>;
    /// Creates a container of image `image` (an id) that is never started: no mounts, no network,
    /// a command that does not exist. It only serves to read the image's own files (`read_file`
    /// of the job's container would see jobdock's mounts). Labelled `labels`, so `jobdock
    /// cleanup` finds it if jobdock dies before removing it.
    async fn create_inert(
        &self,
        image: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, DaemonError>;
    /// The file at `path` in the (created, not yet started) container's file system, as the
    /// container would see it (with its mounts), without following a final symlink; `None` if
    /// there is none. At most `max` bytes are read.
    async fn read_file(
        &self,
        id: &str,
        path: &str,
        max: u64,
    ) -> Result<Option<ContainerFile>, DaemonError>;
    /// What `path` is in the container's file system (`None`: nothing), without following a
    /// final symlink and without reading any content. On a container with mounts dockerd mounts
    /// them to answer: ask a container without any (`create_inert`).
    async fn stat_path(&self, id: &str, path: &str) -> Result<Option<PathKind>, DaemonError>;
    /// Attaches stdin, stdout and stderr (stream only, no logs).
    async fn attach(&self, id: &str) -> Result<Attached, DaemonError>;
    async fn start(&self, id: &str) -> Result<(), DaemonError>;
    /// Waits until the container is not running; returns its exit status.
    async fn wait(&self, id: &str) -> Result<i64, DaemonError>;
    /// Sends `signal` (e.g. `SIGTERM`) to the container's init.
    async fn kill(&self, id: &str, signal: &str) -> Result<(), DaemonError>;
    async fn pause(&self, id: &str) -> Result<(), DaemonError>;
    async fn unpause(&self, id: &str) -> Result<(), DaemonError>;
    async fn resize(&self, id: &str, rows: u16, cols: u16) -> Result<(), DaemonError>;
    async fn inspect(&self, id: &str) -> Result<ContainerState, DaemonError>;
    /// Whether dockerd logged an `oom` event for the container in the last minute, waiting up to
    /// `late` for one still on its way. dockerd 20.10 sets `State.OOMKilled` only when the
    /// kernel's OOM notice reaches it before the exit does; one that arrives after is only logged
    /// as an event (moby's libcontainerd keeps the flag from the event order).
    async fn oom_event(&self, id: &str, late: Duration) -> Result<bool, DaemonError>;
    /// Removes the container in any state, with its anonymous volumes (`force=true&v=true`).
    async fn remove(&self, id: &str) -> Result<(), DaemonError>;
    /// Every container, in any state, with label `key=value`.
    async fn list_by_label(&self, key: &str, value: &str) -> Result<Vec<Found>, DaemonError>;
    /// Every image on the node (`GET /images/json`).
    async fn list_images(&self) -> Result<Vec<crate::engine::images::NodeImage>, DaemonError>;
    /// The image ids of every container, in any state.
    async fn images_in_use(&self) -> Result<std::collections::BTreeSet<String>, DaemonError>;
    /// Removes image `id` and its tags, never by force: dockerd refuses one a container uses.
    async fn remove_image(&self, id: &str) -> Result<(), DaemonError>;
}

/// Attempts to remove a container whose removal is already in progress.
const REMOVE_ATTEMPTS: u32 = 3;

/// Force-removes a container; one that is already gone is fine.
pub(super) async fn remove_container<D: Daemon>(d: &D, target: &str) -> Result<(), DaemonError> {
    let mut attempt = 1;
    loop {
        match d.remove(target).await {
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            // "removal of container ... is already in progress"
            Err(e) if e.kind == ErrorKind::Conflict && attempt < REMOVE_ATTEMPTS => {
                tracing::debug!("removing {target}: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}
