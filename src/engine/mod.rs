//! Executes plans through the Docker Engine API. `body` is the only place that turns a plan into
//! bollard's models and `docker` the only place that calls the API; everything else talks to the
//! `Daemon` trait, so the run logic is tested against a recording fake as well as a real dockerd.
//! Nothing here decides what the container may do: that is in the plan.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use crate::config;
use crate::plan::ContainerPlan;

mod access;
pub mod auth;
pub mod body;
mod cleanup;
mod daemon;
mod docker;
mod fifo;
mod files;
mod host;
pub mod images;
mod mountns;
pub use mountns::{daemon_pid, new_mount_api, shares_namespace_with};
mod pin;
pub use pin::{as_staged, staging_paths};
mod pull;
pub mod rlimit;
mod run;
mod signals;
mod step;
mod tty;
mod verify;

#[cfg(test)]
mod fake;

pub use auth::{Credentials, RegistryAuth};
pub use cleanup::Report;
pub use daemon::DaemonError;
pub use files::FileError;

/// How a job that ran ended: the exit code for jobdock, and what to tell the user about it.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub code: u8,
    pub messages: Vec<String>,
    /// The image that ran: `repository@sha256:...` when its registry confirmed it for the user,
    /// else its local id (`sha256:...`). For the audit record.
    pub image: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach dockerd at {} (engine.socket; waited {waited}s): {reason}", socket.display())]
    Unreachable {
        socket: PathBuf,
        waited: u64,
        reason: String,
    },
    #[error(
        "dockerd at {} speaks Engine API {found}; jobdock needs {needed} (Docker 20.10) or newer",
        socket.display()
    )]
    TooOld {
        socket: PathBuf,
        found: String,
        needed: String,
    },
    #[error("image {image} is not on this node and engine.pull is \"never\"")]
    ImageMissing { image: String },
    #[error("pulling {image}: {reason}")]
    Pull { image: String, reason: String },
    #[error(
        "pulling {image}: the registry rejects it: {reason} (check the image's name and tag, and \
         your registry login)"
    )]
    PullRejected { image: String, reason: String },
    #[error(
        "jobdock may not use dockerd's socket {} ({reason}): it must be installed setuid root \
         (contrib/install.sh; a `cargo install` copy, or one on a nosuid file system, is not)",
        socket.display()
    )]
    SocketDenied { socket: PathBuf, reason: String },
    #[error(transparent)]
    Files(#[from] FileError),
    #[error("{what}: {source}")]
    Daemon {
        what: &'static str,
        source: DaemonError,
    },
    #[error(
        "container name {name} is taken ({message}): names hold jobdock's pid, so something else created it"
    )]
    NameInUse { name: String, message: String },
    #[error(
        "image {image} has no {program}, which the job needs (to run the LSF job file, or as LSB_DOCKER_ENTRYPOINT): use an image that has it, or raw mode (LSB_DOCKER_RUN_RAW_ARGS=1) to run the image's own entrypoint"
    )]
    NoProgram { image: String, program: String },
    #[error("the job's command was not found in the image: {message}")]
    CommandNotFound { message: String },
    #[error("the job's command cannot be executed: {message}")]
    NotExecutable { message: String },
    #[error("stopped by {} before the job started", signal.name())]
    Interrupted { signal: signals::Sig },
    #[error("{run}; and cleaning up failed too: {cleanup}")]
    AndCleanup {
        run: Box<EngineError>,
        cleanup: String,
    },
    #[error("--job {job:?}: {reason}")]
    BadJobId { job: String, reason: &'static str },
    #[error(
        "image {image} came from the registry {registry}, which does not give it to uid {uid} \
         ({reason}): a job may only run a private image that its user may pull; log in to \
         {registry} (`docker login`, which writes ~/.docker/config.json) as a user who may"
    )]
    PrivateImage {
        image: String,
        registry: String,
        uid: u32,
        reason: String,
    },
    #[error(
        "image {image}: cannot ask the registry {registry} whether the job's user may have it \
         ({reason}); it came from there, and a private image runs only for users it is confirmed for"
    )]
    AccessUnknown {
        image: String,
        registry: String,
        reason: String,
    },
    #[error("cleanup incomplete: {}", problems.join("; "))]
    CleanupFailed { problems: Vec<String> },
    #[error(
        "dockerd did not make the container jobdock asked for ({when}): {}; the job was stopped \
         before it could use it (a daemon default or an authorization plugin changing requests?)",
        differences.join("; ")
    )]
    Tampered {
        when: &'static str,
        differences: Vec<String>,
    },
    #[error("mount source {}: {reason}; the job was not run", path.display())]
    MountChanged { path: PathBuf, reason: String },
    #[error(
        "{reason}; the job was not run (jobdock stages its mounts where dockerd sees them, or \
         not at all)"
    )]
    MountNamespace { reason: String },
    #[error("image {image}: {reason}")]
    UnsafeImage { image: String, reason: String },
    #[error("{0}")]
    Rlimit(Box<rlimit::RlimitNotGranted>),
    #[error("step container {name}: {reason}; this task was not run in it")]
    StepRefused { name: String, reason: String },
    #[error("{reason}")]
    Agent { reason: String },
    #[error("exec: job {job}: {reason}")]
    ExecRefused { job: String, reason: String },
    #[error("{0}")]
    Internal(String),
}

/// What an engine error means for jobdock's exit code; `app` maps these to numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The node: daemon, registry, disk. Retrying elsewhere may work.
    Infrastructure,
    /// The request (refused by policy, or an image that fails a check): fix the job.
    BadRequest,
    /// The site config names a directory jobdock cannot use safely: the admin must fix it.
    Config,
    /// The job's command is missing from the image.
    NotFound,
    /// The job's command cannot be executed.
    NotExecutable,
    /// jobdock was told to stop by this signal.
    Signal(i32),
    /// A bug in jobdock.
    Internal,
}

impl EngineError {
    /// Adds dockerd's own hard limit to a limit it did not grant, for the advice.
    fn fill_granted(&mut self, socket: &std::path::Path) {
        match self {
            EngineError::Rlimit(r) => {
                if let Some(name) = r.name {
                    r.granted = rlimit::daemon_hard_limit(socket, name);
                }
            }
            EngineError::AndCleanup { run, .. } => run.fill_granted(socket),
            _ => {}
        }
    }

    pub(crate) fn daemon(what: &'static str, source: DaemonError) -> Self {
        EngineError::Daemon { what, source }
    }

    pub fn blame(&self) -> Blame {
        match self {
            EngineError::Unreachable { .. }
            | EngineError::TooOld { .. }
            | EngineError::ImageMissing { .. }
            | EngineError::Pull { .. }
            | EngineError::Daemon { .. }
            | EngineError::NameInUse { .. }
            | EngineError::CleanupFailed { .. }
            | EngineError::AccessUnknown { .. }
            | EngineError::Tampered { .. }
            | EngineError::Agent { .. } => Blame::Infrastructure,
            EngineError::StepRefused { .. } | EngineError::ExecRefused { .. } => Blame::BadRequest,
            EngineError::Files(e) if e.what.starts_with("engine.") => Blame::Config,
            EngineError::MountNamespace { .. } => Blame::Config,
            EngineError::SocketDenied { .. } => Blame::Config,
            EngineError::Files(e) if e.callers_limit => Blame::BadRequest,
            EngineError::Files(_) => Blame::Infrastructure,
            EngineError::NoProgram { .. } | EngineError::CommandNotFound { .. } => Blame::NotFound,
            EngineError::NotExecutable { .. } => Blame::NotExecutable,
            EngineError::Interrupted { signal } => Blame::Signal(signal.number()),
            EngineError::AndCleanup { run, .. } => run.blame(),
            EngineError::BadJobId { .. }
            | EngineError::PrivateImage { .. }
            | EngineError::MountChanged { .. }
            | EngineError::UnsafeImage { .. }
            | EngineError::PullRejected { .. } => Blame::BadRequest,
            // The job's limits are the site's (devices.memlock) or the node's (what the
            // scheduler gives jobs); dockerd's are the node's: the admin must fix either.
            EngineError::Rlimit(_) => Blame::Config,
            EngineError::Internal(_) => Blame::Internal,
        }
    }
}

/// Runs `plan` on the daemon `engine` names and returns how the job ended. Call it after every
/// fork-based probe (it starts threads); `credentials` were read as the job user beforehand.
pub fn execute(
    plan: &ContainerPlan,
    engine: &config::Engine,
    credentials: &Credentials,
) -> Result<Outcome, EngineError> {
    let live = nix::unistd::isatty(std::io::stderr()).unwrap_or(false);
    let auth = credentials.for_registry(plan.image.registry());
    files_unlimited();
    with_runtime(|| async {
        let mut signals = signals::listen()
            .map_err(|e| EngineError::Internal(format!("listening for signals: {e}")))?;
        let docker = tokio::select! {
            d = docker::connect(&engine.socket, Duration::from_secs(engine.connect_timeout_secs)) => d?,
            signal = run::stop_requested(&mut signals) => {
                return Err(EngineError::Interrupted { signal });
            }
        };
        let host = host::RealHost::new(&engine.socket);
        let settings = run::Settings {
            pull: pull::PullSettings {
                policy: plan.pull,
                auth,
                state_dir: &engine.state_dir,
                timeout: Duration::from_secs(engine.pull_timeout_secs),
                live,
                backoff: pull::FIRST_BACKOFF,
            },
            access: access::AccessSettings {
                uid: plan.user.0,
                credentials,
                state_dir: &engine.state_dir,
            },
            state_dir: &engine.state_dir,
            cidfile_dir: engine.cidfile_dir.as_ref().unwrap_or(&engine.state_dir),
            grace: Duration::from_secs(engine.grace_period_secs),
            host: &host,
        };
        let io = run::Io {
            stdout: Box::new(tokio::io::stdout()),
            stderr: Box::new(tokio::io::stderr()),
            stdout_pipe: fifo::splice_target(std::io::stdout().as_fd()),
            stdin: stdin_chunks(),
            terminal: plan.tty.then(std::io::stdin),
        };
        run::run(&docker, plan, &settings, &mut signals, io).await
    })
    .map_err(|mut e| {
        e.fill_granted(&engine.socket);
        e
    })
}

/// `jobdock exec`: runs `task` in the running step container of `job` on this node, if it is
/// `caller_uid`'s (root: anyone's), with jobdock's own stdio; its status is jobdock's.
pub fn exec(
    engine: &config::Engine,
    job: &str,
    caller_uid: u32,
    task: &crate::plan::TaskPlan,
) -> Result<Outcome, EngineError> {
    with_runtime(|| async {
        let mut signals = signals::listen()
            .map_err(|e| EngineError::Internal(format!("listening for signals: {e}")))?;
        let docker = docker::connect(
            &engine.socket,
            Duration::from_secs(engine.connect_timeout_secs),
        )
        .await?;
        step::exec(
            &docker,
            job,
            caller_uid,
            &engine.state_dir,
            task,
            &mut signals,
        )
        .await
    })
}

/// Removes every container of job `job` and its files (`jobdock cleanup`). A caller other than
/// root (`caller_uid`) may only remove containers labelled with their own uid.
/// `cluster`: the Slurm cluster of the job (see `cleanup::clean_job`).
pub fn cleanup(
    engine: &config::Engine,
    job: &str,
    cluster: Option<&str>,
    caller_uid: u32,
) -> Result<Report, EngineError> {
    files_unlimited();
    with_runtime(|| async {
        let docker = docker::connect(
            &engine.socket,
            Duration::from_secs(engine.connect_timeout_secs),
        )
        .await?;
        let host = host::RealHost::new(&engine.socket);
        let dirs = cleanup::Dirs {
            state_dir: &engine.state_dir,
            cidfile_dir: engine.cidfile_dir.as_ref().unwrap_or(&engine.state_dir),
            host: &host,
        };
        cleanup::clean_job(&docker, job, cluster, caller_uid, &dirs).await
    })
}

/// The node's images, with when a job of jobdock's last ran each and whether a container uses it
/// (`jobdock images`).
pub fn images(engine: &config::Engine) -> Result<Vec<images::Listed>, EngineError> {
    with_runtime(|| async {
        let docker = docker::connect(
            &engine.socket,
            Duration::from_secs(engine.connect_timeout_secs),
        )
        .await?;
        let (all, in_use) = node_images(&docker).await?;
        Ok(images::listing(
            &all,
            &in_use,
            &images::last_runs(&engine.state_dir),
        ))
    })
}

/// `jobdock prune`: removes the images the site's policy names (`images::choose`), or with
/// `dry_run` only says which. Each removal with dockerd's answer: one a container took since the
/// listing is refused by dockerd and kept.
pub fn prune(
    engine: &config::Engine,
    policy: &images::PrunePolicy,
    dry_run: bool,
) -> Result<Vec<(images::Removal, images::Pruned)>, EngineError> {
    with_runtime(|| async {
        let docker = docker::connect(
            &engine.socket,
            Duration::from_secs(engine.connect_timeout_secs),
        )
        .await?;
        prune_with(&docker, &engine.state_dir, policy, dry_run).await
    })
}

async fn prune_with<D: daemon::Daemon>(
    d: &D,
    state_dir: &std::path::Path,
    policy: &images::PrunePolicy,
    dry_run: bool,
) -> Result<Vec<(images::Removal, images::Pruned)>, EngineError> {
    let (all, in_use) = node_images(d).await?;
    let chosen = images::choose(
        &all,
        &in_use,
        &images::last_runs(state_dir),
        std::time::SystemTime::now(),
        policy,
    );
    let mut done = Vec::new();
    for removal in chosen {
        let result = if dry_run {
            images::Pruned::WouldRemove
        } else {
            match d.remove_image(&removal.image.id).await {
                Ok(()) => {
                    if let Some(record) = images::record_path(state_dir, &removal.image.id) {
                        let _ = std::fs::remove_file(record);
                    }
                    verify::forget(state_dir, &removal.image.id);
                    images::Pruned::Removed
                }
                Err(e) if e.kind == daemon::ErrorKind::Conflict => images::Pruned::InUse,
                Err(e) => images::Pruned::Failed(e.to_string()),
            }
        };
        done.push((removal, result));
    }
    Ok(done)
}

async fn node_images<D: daemon::Daemon>(
    d: &D,
) -> Result<(Vec<images::NodeImage>, std::collections::BTreeSet<String>), EngineError> {
    let all = d
        .list_images()
        .await
        .map_err(|e| EngineError::daemon("listing the node's images", e))?;
    let in_use = d
        .images_in_use()
        .await
        .map_err(|e| EngineError::daemon("listing the node's containers", e))?;
    Ok((all, in_use))
}

/// What dockerd at `engine.socket` says of itself (`jobdock doctor`); waits at most 5 s for it.
pub fn describe_daemon(engine: &config::Engine) -> Result<crate::doctor::Daemon, EngineError> {
    with_runtime(|| async {
        let docker = docker::connect(&engine.socket, Duration::from_secs(5)).await?;
        docker
            .describe_self()
            .await
            .map_err(|e| EngineError::daemon("asking dockerd for its version", e))
    })
}

/// A setuid jobdock inherits the caller's resource limits: `ulimit -f 0` would kill it with
/// SIGXFSZ halfway through writing its files, leaving them behind. Root lifts the file size limit
/// for itself (the container gets the job's own limits, which do not include this one); a write that still fails is then an
/// error that is cleaned up after, never a death.
fn files_unlimited() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    use nix::sys::signal::{SigHandler, Signal, signal};
    if let Err(e) = setrlimit(Resource::RLIMIT_FSIZE, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::debug!("lifting RLIMIT_FSIZE: {e}");
    }
    // SAFETY: ignoring a signal installs no handler code.
    if let Err(e) = unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) } {
        tracing::debug!("ignoring SIGXFSZ: {e}");
    }
}

/// Runs `f` on a single-threaded runtime. The runtime is not waited for at the end: the thread
/// reading stdin may be blocked in `read` forever, and everything that matters has finished.
fn with_runtime<F, T>(f: impl FnOnce() -> F) -> Result<T, EngineError>
where
    F: std::future::Future<Output = Result<T, EngineError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::Internal(format!("starting the async runtime: {e}")))?;
    let result = rt.block_on(f());
    rt.shutdown_background();
    result
}

/// jobdock's stdin in chunks, read on a thread of its own (a blocking read on a terminal or pipe
/// must not hold up the runtime). The channel holds one chunk: reading waits for the job.
fn stdin_chunks() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("reading stdin: {e}");
                    return;
                }
            }
        }
    });
    rx
}
