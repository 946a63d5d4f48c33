//! One job from start to end: stage the identity files, get the image, create the container, write
//! the cidfile, attach, start, stream its output, forward signals, wait, explain how it ended — and
//! on every path remove the container, the cidfile and the staging directory.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::engine::access;
use crate::engine::cleanup;
use crate::engine::daemon::remove_container;
use crate::engine::daemon::{
    Attached, Chunk, ContainerState, Daemon, DaemonError, ErrorKind, Input, Output,
};
use crate::engine::fifo::Splice;
use crate::engine::files::{self, Staging};
use crate::engine::host;
use crate::engine::pin;
use crate::engine::pull::{self, PullSettings};
use crate::engine::rlimit;
use crate::engine::signals::Sig;
use crate::engine::tty;
use crate::engine::verify;
use crate::engine::{EngineError, Outcome};
use crate::exit;
use crate::plan::ContainerPlan;

/// How long the job's output may stay silent after it exited before jobdock stops waiting for the
/// rest (dockerd closes the stream when the job's stdout and stderr close; this is a safety net).
const DRAIN_IDLE: Duration = Duration::from_secs(30);

/// How long a job killed by SIGKILL waits for an `oom` event that dockerd has not logged yet (the
/// kernel's notice travels from the shim through containerd apart from the exit).
const LATE_OOM_EVENT: Duration = Duration::from_millis(300);

pub(super) struct Settings<'a> {
    pub pull: PullSettings<'a>,
    /// Whether the job's user may have the image.
    pub access: access::AccessSettings<'a>,
    pub state_dir: &'a Path,
    pub cidfile_dir: &'a Path,
    /// Between forwarding a stop signal and killing the job.
    pub grace: Duration,
    /// The host, for checking the container against the plan before and after start.
    pub host: &'a dyn host::Host,
}

/// Where the job's streams go and come from.
pub(super) struct Io {
    pub stdout: Box<dyn AsyncWrite + Send + Unpin>,
    pub stderr: Box<dyn AsyncWrite + Send + Unpin>,
    /// `stdout` once more, when it is a pipe (`fifo::splice_target`): the job's stdout FIFO is
    /// spliced into it.
    pub stdout_pipe: Option<std::os::fd::OwnedFd>,
    /// The job's input in chunks; the channel closing is the input's end.
    pub stdin: mpsc::Receiver<Vec<u8>>,
    /// An interactive job's terminal: raw mode while the job runs, and its size.
    pub terminal: Option<std::io::Stdin>,
}

/// What the engine created and must remove.
#[derive(Debug, Default)]
pub(super) enum Container {
    #[default]
    None,
    /// A create request was sent; if its answer never arrived the container may exist by name.
    Creating,
    Created(String),
}

#[derive(Debug, Default)]
pub(super) struct Leftovers {
    /// Made once the image is there: a jobdock killed while it pulls leaves nothing behind.
    pub staging: Option<Staging>,
    pub container: Container,
    /// The container the image's files were read from (`verify::created`), until it is removed.
    pub inert: Option<String>,
    pub cidfile: Option<PathBuf>,
}

/// Runs `plan` to the end and removes everything it made, whatever happened.
pub(super) async fn run<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    s: &Settings<'_>,
    signals: &mut mpsc::Receiver<Sig>,
    io: Io,
) -> Result<Outcome, EngineError> {
    // A state directory the site must fix is reported before anything is done.
    files::ensure_private_dir("engine.state_dir", s.state_dir)?;
    if plan.step.is_some() {
        return crate::engine::step::run(d, plan, s, signals).await;
    }
    let mut leftovers = Leftovers::default();
    let result = run_job(d, plan, s, signals, io, &mut leftovers).await;
    let cleaned = clean_up(d, plan, leftovers).await;
    with_cleanup(result, cleaned)
}

/// A job's result with what cleaning up after it said: a cleanup failure is a message of a job
/// that ran, or reported beside the error of one that did not.
pub(super) fn with_cleanup(
    result: Result<Outcome, EngineError>,
    cleaned: Result<(), String>,
) -> Result<Outcome, EngineError> {
    match (result, cleaned) {
        (result, Ok(())) => result,
        (Ok(mut outcome), Err(cleanup)) => {
            outcome.messages.push(cleanup);
            Ok(outcome)
        }
        (Err(run), Err(cleanup)) => Err(EngineError::AndCleanup {
            run: Box::new(run),
            cleanup,
        }),
    }
}

async fn run_job<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    s: &Settings<'_>,
    signals: &mut mpsc::Receiver<Sig>,
    io: Io,
    leftovers: &mut Leftovers,
) -> Result<Outcome, EngineError> {
    // Until the job runs, a stop signal abandons the setup (the cleanup still runs).
    let started = tokio::select! {
        started = start(d, plan, s, leftovers) => started?,
        signal = stop_requested(signals) => return Err(EngineError::Interrupted { signal }),
    };
    let image = started.image.clone();
    let mut outcome = supervise(d, plan, s, started, signals, io).await?;
    outcome.image = image;
    Ok(outcome)
}

/// A job that runs: its container, its streams, and the image it was made of.
pub(super) struct Started {
    pub id: String,
    pub attached: Attached,
    /// The image id or confirmed digest the container was made of.
    pub image: String,
    /// The job's output FIFOs (`engine.output = "fifo"`), opened.
    pub fifos: Option<super::fifo::Opened>,
}

/// Waits for a signal that asks jobdock to stop; the others mean nothing before the job runs.
pub(super) async fn stop_requested(signals: &mut mpsc::Receiver<Sig>) -> Sig {
    loop {
        match signals.recv().await {
            Some(sig) if sig.stops() => return sig,
            Some(sig) => tracing::info!("{}: ignored, the job has not started", sig.name()),
            None => std::future::pending().await,
        }
    }
}

pub(super) async fn start<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    s: &Settings<'_>,
    leftovers: &mut Leftovers,
) -> Result<Started, EngineError> {
    let local = pull::ensure_image(d, &plan.image, &s.pull).await?;
    let confirmed = access::check(d, &plan.image, &local, &s.access).await?;
    // When a job last ran it: what `jobdock prune` judges the image by.
    super::images::record_run(s.state_dir, &local.id);
    let ran = confirmed
        .as_ref()
        .map_or_else(|| local.id.clone(), ToString::to_string);
    if plan.entrypoint.is_some() && !local.entrypoint.is_empty() {
        crate::logging::notice(&format!(
            "the image's ENTRYPOINT {:?} is not run, jobdock runs the command itself; \
             LSB_DOCKER_RUN_RAW_ARGS=true runs the image's entrypoint with it",
            local.entrypoint
        ));
    }

    cleanup::sweep_stale(s.state_dir, s.host);
    leftovers.staging = Some(Staging::create(plan, s.state_dir)?);
    // dockerd gets the identity files by path: the directory holding them must be this one to
    // dockerd too (under job_container/tmpfs, a state_dir in the job's private /tmp would not be).
    same_to_daemon(s.host, &plan.staging.dir)?;
    // dockerd gets the user's checked directories by pinned mounts, not by their paths.
    let mut staged = pin::stage(plan, s.state_dir, s.host)?;
    // The container is made of the very manifest the registry confirmed for the user, whatever
    // the tag names by now.
    if let Some(confirmed) = confirmed {
        staged.plan.image = confirmed;
    }
    let mut id = create_checked(d, &staged.plan, plan, s, leftovers).await?;
    // The FIFO wrapper needs the image's /bin/sh (asked of the job's container: its mounts were
    // just checked). Without it the job's output goes through attach: the container is made again.
    let attach_plan;
    let mut plan = plan;
    if plan.staging.fifos.is_some() && !program_exists(d, &id, "/bin/sh").await? {
        tracing::info!(
            "the image has no /bin/sh for the output FIFOs; the output goes through attach"
        );
        discard(d, leftovers).await;
        attach_plan = plan.without_fifos();
        plan = &attach_plan;
        staged.plan = staged.plan.without_fifos();
        id = create_checked(d, &staged.plan, plan, s, leftovers).await?;
    }
    // Only now: dockerd mounts the container's mounts to answer this, following the image's
    // symlinks, which `created` has just ruled out at every mount point.
    let program = plan
        .entrypoint
        .as_ref()
        .and_then(|e| e.first())
        .filter(|p| p.starts_with('/'));
    if let Some(program) = program
        && !program_exists(d, &id, program).await?
    {
        return Err(EngineError::NoProgram {
            image: plan.image.to_string(),
            program: program.clone(),
        });
    }
    // Opened before the job starts, so no job can open the other end first, and checked.
    let fifos = match &plan.staging.fifos {
        Some(f) => Some(super::fifo::open(f, plan.user.0)?),
        None => None,
    };

    let attached = d
        .attach(&id)
        .await
        .map_err(|e| EngineError::daemon("attaching to the container", e))?;
    // The image-reading container guards nothing once the job's exists: it goes while the job
    // starts, off the start's path.
    let inert = leftovers.inert.take();
    let (started, ()) = tokio::join!(
        async {
            d.start(&id).await.map_err(|e| start_error(e, plan))?;
            // Until this passes, the job's output waits in the attach stream: a job that fails it
            // is removed, and nothing it printed reaches anyone.
            verify::started(d, &staged.plan, &id, s.host).await
        },
        async {
            if let Some(inert) = &inert {
                verify::remove_inert(d, inert).await;
            }
        }
    );
    started?;
    // The container holds its own mounts now.
    if let Err(e) = staged.release() {
        tracing::warn!("staging mounts: {e}");
    }
    Ok(Started {
        id,
        attached,
        image: ran,
        fifos,
    })
}

/// Creates the container of `staged` (`plan` with its staged mount sources), writes the cidfile
/// and checks the container against the plan (`verify::created`).
async fn create_checked<D: Daemon>(
    d: &D,
    staged: &ContainerPlan,
    plan: &ContainerPlan,
    s: &Settings<'_>,
    leftovers: &mut Leftovers,
) -> Result<String, EngineError> {
    leftovers.container = Container::Creating;
    let id = match d.create(staged).await {
        Ok(id) => id,
        Err(e) if e.kind == ErrorKind::Conflict => {
            // Not ours: the name includes jobdock's pid, so something else holds it.
            leftovers.container = Container::None;
            return Err(EngineError::NameInUse {
                name: plan.name.clone(),
                message: e.message,
            });
        }
        Err(e) => return Err(EngineError::daemon("creating the container", e)),
    };
    leftovers.container = Container::Created(id.clone());
    leftovers.cidfile = Some(files::write_cidfile(
        s.cidfile_dir,
        s.state_dir,
        &plan.name,
        &id,
    )?);
    leftovers.inert = verify::created(d, staged, plan, &id, s.host, s.state_dir).await?;
    Ok(id)
}

/// Removes what `create_checked` made, before it is made again.
async fn discard<D: Daemon>(d: &D, leftovers: &mut Leftovers) {
    if let Some(inert) = leftovers.inert.take() {
        verify::remove_inert(d, &inert).await;
    }
    if let Container::Created(id) = std::mem::take(&mut leftovers.container)
        && let Err(e) = remove_container(d, &id).await
    {
        tracing::warn!("removing the container {id} to make it again: {e}");
        leftovers.container = Container::Created(id);
    }
    if let Some(cidfile) = leftovers.cidfile.take()
        && let Err(e) = files::remove_file("cidfile", &cidfile)
    {
        tracing::warn!("{e}");
    }
}

/// Whether `program` is in the container `id` (its image, and the mounts).
async fn program_exists<D: Daemon>(d: &D, id: &str, program: &str) -> Result<bool, EngineError> {
    d.path_exists(id, program)
        .await
        .map_err(|e| EngineError::daemon("looking for the entrypoint in the image", e))
}

/// `dir` is the very directory to dockerd (in its mount namespace) that it is to jobdock.
fn same_to_daemon(host: &dyn host::Host, dir: &Path) -> Result<(), EngineError> {
    let here = host.stat(dir);
    let there = host.daemon_stat(dir);
    if here.as_ref().ok() == there.as_ref().ok() {
        return Ok(());
    }
    let reason = match there {
        Err(e) => format!(
            "cannot see the job's staging directory {} as dockerd does: {e}",
            dir.display()
        ),
        Ok(seen) => format!(
            "the job's staging directory {} is another directory to dockerd ({seen}); \
             engine.state_dir must be the same directory in dockerd's mount namespace",
            dir.display()
        ),
    };
    Err(EngineError::MountNamespace { reason })
}

/// A failed start, explained: the runtime's exec errors are the job's command, not the node; a
/// resource limit dockerd may not grant is the site's.
fn start_error(e: DaemonError, plan: &ContainerPlan) -> EngineError {
    if let Some(limit) = rlimit::not_granted(&e.message, plan) {
        return EngineError::Rlimit(Box::new(limit));
    }
    let m = e.message.to_ascii_lowercase();
    let exec = m.contains("exec");
    if exec && (m.contains("executable file not found") || m.contains("no such file or directory"))
    {
        EngineError::CommandNotFound { message: e.message }
    } else if exec && m.contains("permission denied") {
        EngineError::NotExecutable { message: e.message }
    } else {
        EngineError::daemon("starting the container", e)
    }
}

/// The running job: streams in both directions, signals passed on, until it exits.
async fn supervise<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    s: &Settings<'_>,
    started: Started,
    signals: &mut mpsc::Receiver<Sig>,
    io: Io,
) -> Result<Outcome, EngineError> {
    let Started {
        id,
        attached,
        fifos,
        image: _,
    } = started;
    let id = id.as_str();
    let Io {
        stdout,
        stderr,
        stdout_pipe,
        stdin,
        terminal,
    } = io;
    let terminal = terminal.as_ref().filter(|_| plan.tty);
    let _raw = terminal.and_then(|t| match tty::RawMode::enter(t.as_fd()) {
        Ok(raw) => Some(raw),
        Err(e) => {
            tracing::warn!("cannot put the terminal in raw mode: {e}");
            None
        }
    });
    let resize = || async {
        if let Some((rows, cols)) = terminal.and_then(tty::size)
            && let Err(e) = d.resize(id, rows, cols).await
        {
            tracing::debug!("resizing the job's terminal: {e}");
        }
    };
    resize().await;

    let Attached { output, input } = attached;
    // Through FIFOs, the attach stream still carries what is written before the wrapper has
    // redirected (docker-init's own errors); the program the wrapper execs is the job's command.
    let (output, spliced, writers, wrapped) = match fifos {
        Some(f) => {
            let (fifo_output, spliced, writers) = f.into_output(stdout_pipe);
            let output = Box::pin(futures_util::stream::select(output, fifo_output));
            (output as Output, spliced, writers, wrapped_program(plan))
        }
        None => (output, None, Vec::new(), None),
    };
    let pumping = Arc::new(Pumping::default());
    let (status_tx, status_rx) = tokio::sync::oneshot::channel();
    let mut pump = tokio::spawn(pump_output(
        Source { output, spliced },
        stdout,
        stderr,
        pumping.clone(),
        status_rx,
        wrapped,
    ));
    let feeder = AbortOnDrop(tokio::spawn(feed_input(stdin, input, !plan.tty)));

    let wait = d.wait(id);
    tokio::pin!(wait);
    let mut grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut stopped_by: Option<Sig> = None;
    let mut killed = false;
    let mut paused = false;
    let mut pump_done = false;
    let mut exec_failed = None;
    let mut piped_out = false;
    let status = loop {
        tokio::select! {
            status = &mut wait => {
                break status.map_err(|e| EngineError::daemon("waiting for the job", e))?;
            }
            pumped = &mut pump, if !pump_done => {
                pump_done = true;
                exec_failed = joined(pumped)
                    .map_err(|e| EngineError::daemon("reading the job's output", e))?;
            }
            Some(sig) = signals.recv() => match sig {
                Sig::Winch => resize().await,
                Sig::Tstp if !paused => {
                    paused = quietly(d.pause(id).await, "pausing the job");
                }
                Sig::Cont if paused => {
                    paused = !quietly(d.unpause(id).await, "resuming the job");
                }
                Sig::Tstp | Sig::Cont => {}
                sig => {
                    // A paused job cannot act on a signal; resume it first.
                    if paused && sig.stops() {
                        paused = !quietly(d.unpause(id).await, "resuming the job");
                    }
                    quietly(d.kill(id, sig.name()).await, "passing on a signal");
                    if sig.stops() && grace.is_none() && !killed {
                        stopped_by = Some(sig);
                        grace = Some(Box::pin(tokio::time::sleep(s.grace)));
                    }
                }
            },
            () = pumping.broken_pipe.notified(), if !piped_out => {
                // What a shell does to a writer whose reader went away (`jobdock run yes | head`).
                piped_out = true;
                quietly(d.kill(id, "SIGPIPE").await, "passing on SIGPIPE");
            }
            () = async { grace.as_mut().expect("guarded").await }, if grace.is_some() => {
                grace = None;
                killed = true;
                quietly(d.kill(id, "SIGKILL").await, "killing the job");
            }
        }
    };
    drop(feeder);
    // The job is gone, and with it every writer of its FIFOs but jobdock: what is in them is the
    // rest of its output, and then they end.
    drop(writers);
    // A pump holding what may be docker-init's report of a failed exec needs the status.
    let _ = status_tx.send(status);
    if !pump_done {
        exec_failed = drain(&mut pump, &pumping.activity).await;
    }
    let mut state = match d.inspect(id).await {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::warn!("inspecting the finished job: {e}");
            None
        }
    };
    // A SIGKILL jobdock did not send, without dockerd's OOM flag: the kernel's OOM notice may
    // have reached dockerd after the exit, which only its event log then records.
    if let Some(s) = state
        .as_mut()
        .filter(|s| status == 137 && !killed && !s.oom_killed)
    {
        match d.oom_event(id, LATE_OOM_EVENT).await {
            Ok(seen) => s.oom_killed = seen,
            Err(e) => tracing::warn!("asking dockerd whether the job ran out of memory: {e}"),
        }
    }
    Ok(outcome(
        plan,
        s.grace,
        status,
        state,
        exec_failed,
        stopped_by.filter(|_| killed),
    ))
}

/// How the job ended, as an exit code and what the user should be told.
fn outcome(
    plan: &ContainerPlan,
    grace: Duration,
    status: i64,
    state: Option<ContainerState>,
    exec_failed: Option<ExecFailure>,
    killed_after: Option<Sig>,
) -> Outcome {
    let code = exit::from_job(status, None);
    let mut messages = Vec::new();
    if let Some(f) = exec_failed {
        let path = state
            .as_ref()
            .map(|s| s.path.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("unset");
        messages.push(if f.reason == "Permission denied" {
            format!(
                "{}: not executable in image {} (PATH={path})",
                f.program, plan.image
            )
        } else if f.program.contains('/') {
            format!("{}: not found in image {}", f.program, plan.image)
        } else {
            format!(
                "{}: not found in image {} (PATH={path}); is it installed there, or elsewhere \
                 on another PATH (give its full path)?",
                f.program, plan.image
            )
        });
    }
    if state.is_some_and(|s| s.oom_killed) {
        messages.push(if code == 137 {
            format!("killed: out of memory (limit {})", plan.memory)
        } else {
            format!(
                "a process of the job was killed: out of memory (limit {})",
                plan.memory
            )
        });
    }
    if let Some(sig) = killed_after {
        messages.push(format!(
            "killed: the job was still running {}s after {} (engine.grace_period_secs)",
            grace.as_secs(),
            sig.name()
        ));
    }
    Outcome {
        code,
        messages,
        image: String::new(),
    }
}

/// A daemon call whose failure is reported but changes nothing (the job may have just exited).
fn quietly(result: Result<(), DaemonError>, what: &str) -> bool {
    match result {
        Ok(()) => true,
        Err(e) if e.kind == ErrorKind::Conflict => {
            tracing::debug!("{what}: {e}");
            false
        }
        Err(e) => {
            tracing::warn!("{what}: {e}");
            false
        }
    }
}

/// What the output pump tells the supervisor while it runs.
#[derive(Default)]
pub(super) struct Pumping {
    /// Counts chunks read and written: a pump that makes progress.
    activity: AtomicU64,
    /// Notified when a reader of jobdock's output went away (EPIPE).
    broken_pipe: Notify,
}

/// The job's output: chunks read (from attach, and the FIFOs), and its stdout FIFO when that is
/// spliced into jobdock's stdout instead.
pub(super) struct Source {
    pub output: Output,
    pub spliced: Option<Splice>,
}

/// What the pump has next: a chunk, or bytes in the spliced stdout FIFO.
enum Piece {
    Chunk(Chunk),
    Spliceable,
}

/// Copies the job's output to jobdock's stdout and stderr, one chunk at a time: the next chunk is
/// read only once the last one is handed to the writer, so a slow reader slows the job instead of
/// filling jobdock's memory. Output nobody can receive any more is discarded, so the job never
/// blocks. A stream is flushed only when the other one has something to write, which keeps their
/// order on a shared terminal without waiting for every chunk to be written (BENCHMARKS.md).
/// A spliced stdout FIFO is a stdout chunk of its own: moved when it holds bytes, by as much as
/// jobdock's stdout takes at once.
///
/// When the job's very first output is docker-init's report that it could not exec the command
/// (`[FATAL tini (7)] exec python3 failed: No such file or directory`), that line is held until
/// the job's status is known: with 127 or 126 it is replaced by jobdock's own explanation (the
/// `ExecFailure` returned); otherwise the job printed it itself and it is written as it came.
pub(super) async fn pump_output(
    source: Source,
    stdout: Box<dyn AsyncWrite + Send + Unpin>,
    stderr: Box<dyn AsyncWrite + Send + Unpin>,
    pumping: Arc<Pumping>,
    status: tokio::sync::oneshot::Receiver<i64>,
    wrapped: Option<String>,
) -> Result<Option<ExecFailure>, DaemonError> {
    let Source {
        mut output,
        mut spliced,
    } = source;
    let mut stdout = Sink::new("stdout", stdout);
    let mut stderr = Sink::new("stderr", stderr);
    let mut first = FirstLine::Open(Vec::new());
    let mut output_ended = false;
    loop {
        let piece = tokio::select! {
            chunk = output.next(), if !output_ended => match chunk {
                Some(Ok(chunk)) => Piece::Chunk(chunk),
                Some(Err(e)) => {
                    // What was gathered of the first line is the job's: written before giving up.
                    if let FirstLine::Open(line) | FirstLine::Held(line, _) = &first {
                        stderr.write(line, &pumping).await;
                    }
                    return Err(e);
                }
                None => {
                    output_ended = true;
                    continue;
                }
            },
            held = spliceable(spliced.as_ref()), if spliced.is_some() => {
                if held.map_err(|e| fifo_error(&e))? {
                    Piece::Spliceable
                } else {
                    spliced = None;
                    continue;
                }
            },
            else => break,
        };
        pumping.activity.fetch_add(1, Ordering::Relaxed);
        let piece = match (std::mem::replace(&mut first, FirstLine::Done), piece) {
            // docker-init writes its report in three writes, which dockerd may deliver as three
            // chunks: the job's first stderr is gathered to its first newline while it may be one.
            (FirstLine::Open(mut line), Piece::Chunk(Chunk::Stderr(bytes))) => {
                line.extend_from_slice(&bytes);
                match ExecFailure::gathered(&line, wrapped.as_deref()) {
                    Gathered::Failure(failure) => {
                        first = FirstLine::Held(line, failure);
                        continue;
                    }
                    Gathered::MayBe => {
                        first = FirstLine::Open(line);
                        continue;
                    }
                    Gathered::Not => Piece::Chunk(Chunk::Stderr(line.into())),
                }
            }
            (FirstLine::Open(line) | FirstLine::Held(line, _), piece) => {
                stderr.write(&line, &pumping).await;
                piece
            }
            (FirstLine::Done, piece) => piece,
        };
        match piece {
            Piece::Chunk(Chunk::Stdout(bytes)) => {
                stderr.flush(&pumping).await;
                stdout.write(&bytes, &pumping).await;
            }
            Piece::Chunk(Chunk::Stderr(bytes)) => {
                stdout.flush(&pumping).await;
                stderr.write(&bytes, &pumping).await;
            }
            Piece::Spliceable => {
                stderr.flush(&pumping).await;
                let from = spliced.as_ref().expect("a piece of it");
                if !stdout.splice(from, &pumping).await {
                    // Discarding: the rest is read as chunks, which the sink drops.
                    let rest = spliced.take().expect("a piece of it").into_chunks();
                    output = if output_ended {
                        rest
                    } else {
                        Box::pin(futures_util::stream::select(output, rest))
                    };
                    output_ended = false;
                }
            }
        }
        pumping.activity.fetch_add(1, Ordering::Relaxed);
    }
    let mut explained = None;
    match first {
        FirstLine::Held(line, failure) => match status.await {
            Ok(126 | 127) => explained = Some(failure),
            _ => stderr.write(&line, &pumping).await,
        },
        FirstLine::Open(line) => stderr.write(&line, &pumping).await,
        FirstLine::Done => {}
    }
    stdout.flush(&pumping).await;
    stderr.flush(&pumping).await;
    Ok(explained)
}

/// Whether the spliced stdout FIFO holds bytes (`false`: it ended); `spliced` is there.
async fn spliceable(spliced: Option<&Splice>) -> std::io::Result<bool> {
    match spliced {
        Some(s) => s.ready().await,
        None => std::future::pending().await,
    }
}

fn fifo_error(e: &std::io::Error) -> DaemonError {
    DaemonError::new(
        ErrorKind::Other,
        format!("reading the job's output FIFO: {e}"),
    )
}

/// The program the FIFO wrapper execs: the job's own entrypoint's, else its command's.
fn wrapped_program(plan: &ContainerPlan) -> Option<String> {
    let own = plan
        .entrypoint
        .as_ref()?
        .get(crate::plan::FIFO_WRAPPER.len()..)?;
    own.first()
        .or_else(|| plan.cmd.as_ref().and_then(|c| c.first()))
        .cloned()
}

/// The job's first stderr while it may be docker-init's report of a failed exec: gathered, held
/// as one, or neither (written as it came).
enum FirstLine {
    Open(Vec<u8>),
    Held(Vec<u8>, ExecFailure),
    Done,
}

/// What the job's first stderr gathered so far is.
enum Gathered {
    Failure(ExecFailure),
    MayBe,
    Not,
}

/// docker-init (tini) could not exec the job's command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ExecFailure {
    pub program: String,
    /// strerror's text: `No such file or directory`, `Permission denied`, ...
    pub reason: String,
}

impl ExecFailure {
    /// Whether `line`, the job's first stderr so far, is a report of a failed exec (one line and
    /// nothing else), may still become one (the start of one, without its newline), or is not.
    fn gathered(line: &[u8], wrapped: Option<&str>) -> Gathered {
        /// docker-init's report is one short line; longer first output is the job's.
        const LONGEST: usize = 4096;
        let may_start = |prefix: &[u8]| line.starts_with(prefix) || prefix.starts_with(line);
        match line.iter().position(|&b| b == b'\n') {
            Some(end) if end + 1 == line.len() => ExecFailure::parse(line)
                .or_else(|| wrapped.and_then(|p| ExecFailure::parse_sh(line, p)))
                .map_or(Gathered::Not, Gathered::Failure),
            None if line.len() < LONGEST
                && (may_start(b"[FATAL tini (")
                    || wrapped.is_some() && may_start(b"jobdock: ")) =>
            {
                Gathered::MayBe
            }
            _ => Gathered::Not,
        }
    }

    /// `[FATAL tini (N)] exec PROGRAM failed: REASON\n`: one line and nothing else.
    fn parse(bytes: &[u8]) -> Option<ExecFailure> {
        let line = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
        let rest = line.strip_prefix("[FATAL tini (")?;
        let (pid, rest) = rest.split_once(")] exec ")?;
        let (program, reason) = rest.rsplit_once(" failed: ")?;
        let plain = |s: &str| !s.is_empty() && !s.contains(['\n', '\r']);
        (pid.bytes().all(|b| b.is_ascii_digit()) && plain(program) && plain(reason)).then(|| {
            ExecFailure {
                program: program.to_string(),
                reason: reason.to_string(),
            }
        })
    }

    /// The FIFO wrapper's `sh` could not exec `program`, as one line on the job's stderr:
    /// `jobdock: exec: line 0: PROGRAM: not found` (busybox), `jobdock: 1: exec: PROGRAM: not
    /// found` (dash), `jobdock: line 0: exec: PROGRAM: not found` (bash); or `Permission denied`.
    fn parse_sh(bytes: &[u8], program: &str) -> Option<ExecFailure> {
        let line = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
        let rest = line.strip_prefix("jobdock: ")?;
        if line.contains('\n') || !rest.contains("exec: ") {
            return None;
        }
        let reason = [
            ("not found", "No such file or directory"),
            ("Permission denied", "Permission denied"),
        ]
        .into_iter()
        .find(|(said, _)| rest.ends_with(&format!(": {program}: {said}")))?
        .1;
        Some(ExecFailure {
            program: program.to_string(),
            reason: reason.to_string(),
        })
    }
}

/// One of jobdock's output streams; after a write error it discards.
struct Sink {
    name: &'static str,
    writer: Option<Box<dyn AsyncWrite + Send + Unpin>>,
}

impl Sink {
    fn new(name: &'static str, writer: Box<dyn AsyncWrite + Send + Unpin>) -> Self {
        Sink {
            name,
            writer: Some(writer),
        }
    }

    async fn write(&mut self, bytes: &[u8], pumping: &Pumping) {
        if let Some(w) = self.writer.as_mut() {
            let written = w.write_all(bytes).await;
            self.check(written, pumping);
        }
    }

    async fn flush(&mut self, pumping: &Pumping) {
        if let Some(w) = self.writer.as_mut() {
            let flushed = w.flush().await;
            self.check(flushed, pumping);
        }
    }

    /// Splices bytes from `from` into this stream, after what was written to it; `false` once it
    /// discards (then `from` is the caller's to drain).
    async fn splice(&mut self, from: &Splice, pumping: &Pumping) -> bool {
        self.flush(pumping).await;
        if self.writer.is_none() {
            return false;
        }
        let moved = from.move_some().await.map(drop);
        self.check(moved, pumping);
        self.writer.is_some()
    }

    fn check(&mut self, result: std::io::Result<()>, pumping: &Pumping) {
        let Err(e) = result else {
            return;
        };
        self.writer = None;
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            tracing::debug!("the reader of jobdock's {} went away", self.name);
            pumping.broken_pipe.notify_one();
        } else {
            tracing::warn!("writing the job's {}: {e}; discarding the rest", self.name);
        }
    }
}

/// Copies jobdock's input to the job until it ends, then closes the job's stdin (so `cat` ends)
/// if `close` says so. A TTY job's is left open: for a TTY, dockerd ends the attached output when
/// stdin closes, and the rest of the job's output would be lost.
async fn feed_input(mut stdin: mpsc::Receiver<Vec<u8>>, mut input: Input, close: bool) {
    while let Some(chunk) = stdin.recv().await {
        if let Err(e) = input.write_all(&chunk).await {
            tracing::debug!("writing to the job's stdin: {e}");
            return;
        }
    }
    if !close {
        return std::future::pending().await;
    }
    if let Err(e) = input.shutdown().await {
        tracing::debug!("closing the job's stdin: {e}");
    }
}

type Pumped = Result<Option<ExecFailure>, DaemonError>;

/// Waits for the rest of the output of a job that exited, as long as it keeps coming.
async fn drain(pump: &mut JoinHandle<Pumped>, activity: &AtomicU64) -> Option<ExecFailure> {
    loop {
        let before = activity.load(Ordering::Relaxed);
        match tokio::time::timeout(DRAIN_IDLE, &mut *pump).await {
            Ok(pumped) => {
                return joined(pumped).unwrap_or_else(|e| {
                    tracing::warn!("the job's output after it exited: {e}");
                    None
                });
            }
            Err(_) if activity.load(Ordering::Relaxed) == before => {
                pump.abort();
                tracing::warn!(
                    "the job's output did not end within {}s of its exit; the rest is lost",
                    DRAIN_IDLE.as_secs()
                );
                return None;
            }
            Err(_) => {}
        }
    }
}

fn joined(pumped: Result<Pumped, tokio::task::JoinError>) -> Pumped {
    pumped.unwrap_or_else(|e| Err(DaemonError::new(ErrorKind::Other, e.to_string())))
}

/// Aborts a task when dropped: the stdin feeder must not outlive the job.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes the container (by id, or by name if its create request was never answered), the
/// cidfile and the staging directory; every failure is collected, none stops the others.
pub(super) async fn clean_up<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    leftovers: Leftovers,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let target = match &leftovers.container {
        Container::None => None,
        Container::Creating => Some(plan.name.as_str()),
        Container::Created(id) => Some(id.as_str()),
    };
    if let Some(target) = target
        && let Err(e) = remove_container(d, target).await
    {
        let job = plan.labels.get("jobdock.job").map_or("ID", String::as_str);
        problems.push(format!(
            "container {} was not removed ({e}); `jobdock cleanup --job {job}` removes it",
            plan.name
        ));
    }
    if let Some(inert) = &leftovers.inert {
        verify::remove_inert(d, inert).await;
    }
    if let Some(cidfile) = &leftovers.cidfile
        && let Err(e) = files::remove_file("cidfile", cidfile)
    {
        problems.push(e.to_string());
    }
    if let Some(staging) = leftovers.staging
        && let Err(e) = staging.remove()
    {
        problems.push(e.to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests;
