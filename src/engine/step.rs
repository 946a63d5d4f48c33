//! A task of a step container (issue 14; the design is in `crate::agent`): join the step's
//! container on this node if it runs, else create it exactly as `run` creates any container (the
//! create-name conflict decides a race: the loser joins), hand this task to its agent, pass on
//! signals, and exit with the task's status. The creator also waits for the container to end
//! (when the step's last local task has) and removes it with its files.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::agent::Status;
use crate::engine::daemon::{Daemon, ErrorKind, Found};
use crate::engine::files;
use crate::engine::run::{self, Container, Leftovers, Settings};
use crate::engine::signals::Sig;
use crate::engine::{EngineError, Outcome};
use crate::exit;
use crate::plan::{AGENT_DIR_TARGET, AGENT_SOCKET, ContainerPlan, TaskPlan};

/// How long a joining task waits for the step's container to run its agent (its creator may
/// still be verifying it).
const JOIN_WAIT: Duration = Duration::from_secs(60);

pub(super) async fn run<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    s: &Settings<'_>,
    signals: &mut mpsc::Receiver<Sig>,
) -> Result<Outcome, EngineError> {
    let task = &plan.step.as_ref().expect("a step plan").task;
    // Joining is the common case (every task but one per node): no pull, no staging.
    if find(d, plan).await?.is_some() {
        return join(d, plan, s.state_dir, task, signals).await;
    }
    let mut leftovers = Leftovers::default();
    let result = create_and_run(d, plan, s, task, signals, &mut leftovers).await;
    // The name is the step's, not this jobdock's: a create whose answer never came must not
    // make cleanup remove, by name, the container another task made (the epilog removes it).
    let created = matches!(leftovers.container, Container::Created(_));
    if !created {
        leftovers.container = Container::None;
    }
    // Another task of the step created it first: its name is taken (dockerd may not list a
    // container it is still creating), or it is there by now.
    let lost_race = matches!(result, Err(EngineError::NameInUse { .. }))
        || (result.is_err() && find(d, plan).await.is_ok_and(|f| f.is_some()));
    if !created && lost_race {
        let cleaned = run::clean_up(d, plan, leftovers).await;
        if let Err(e) = cleaned {
            tracing::warn!("{e}");
        }
        return join(d, plan, s.state_dir, task, signals).await;
    }
    let cleaned = run::clean_up(d, plan, leftovers).await;
    run::with_cleanup(result, cleaned)
}

async fn create_and_run<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    s: &Settings<'_>,
    task: &TaskPlan,
    signals: &mut mpsc::Receiver<Sig>,
    leftovers: &mut Leftovers,
) -> Result<Outcome, EngineError> {
    // A step container's tasks hand the agent their own stdio: it has no output FIFOs.
    let run::Started {
        id,
        attached,
        image,
        fifos: _,
    } = tokio::select! {
        started = run::start(d, plan, s, leftovers) => started?,
        signal = run::stop_requested(signals) => return Err(EngineError::Interrupted { signal }),
    };
    // The agent's own messages (the tasks' output goes to their own fds).
    let pumping = std::sync::Arc::new(run::Pumping::default());
    // No status to wait for: a docker-init failure line of the agent's is written as it came.
    let (_, no_status) = tokio::sync::oneshot::channel();
    let _pump = tokio::spawn(run::pump_output(
        run::Source {
            output: attached.output,
            spliced: None,
        },
        Box::new(tokio::io::stderr()),
        Box::new(tokio::io::stderr()),
        pumping,
        no_status,
        None,
    ));
    drop(attached.input);
    let named = plan.step.as_ref().is_some_and(|p| p.local_tasks.is_none());
    if named {
        // Kept for the job's later steps: its files go to its init, which outlives this jobdock.
        keep_for_the_job(d, &id, plan, leftovers).await?;
    }
    let mut outcome = join(d, plan, s.state_dir, task, signals).await;
    if let Ok(o) = &mut outcome {
        // What the registry confirmed, not only the local id the container has.
        o.image = image;
    }
    if outcome.is_err() {
        // This task could not run in it: nor will the others.
        let _ = d.kill(&id, "SIGKILL").await;
    } else if named {
        // The job's epilog removes it (`jobdock cleanup`), with its files.
        leftovers.container = Container::None;
        leftovers.cidfile = None;
        return outcome;
    }
    // The container ends when the step's last task on the node has; a stop signal ends it now.
    {
        let wait = d.wait(&id);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                Some(sig) = signals.recv() => if sig.stops() {
                    let _ = d.kill(&id, "SIGKILL").await;
                },
            }
        }
    }
    leftovers.container = Container::Created(id);
    outcome
}

/// A named container stays for the job's later steps: the staging directory it mounts is handed
/// to its init (so no sweep takes it while it runs, and this jobdock's end does not), and it is
/// no longer this jobdock's to remove, unless this task cannot run in it.
async fn keep_for_the_job<D: Daemon>(
    d: &D,
    id: &str,
    plan: &ContainerPlan,
    leftovers: &mut Leftovers,
) -> Result<(), EngineError> {
    let state = d
        .inspect(id)
        .await
        .map_err(|e| EngineError::daemon("inspecting the job's named container", e))?;
    if !state.running || state.pid == 0 {
        return Err(EngineError::Agent {
            reason: format!("the job's container {} ended as it started", plan.name),
        });
    }
    // The pid is dockerd's word: it must be a process of this very container.
    let of_container = std::fs::read_to_string(format!("/proc/{}/cgroup", state.pid))
        .is_ok_and(|c| c.contains(id));
    if !of_container {
        return Err(EngineError::Agent {
            reason: format!(
                "the job's container {}: its init (pid {}) is not in its cgroup",
                plan.name, state.pid
            ),
        });
    }
    if let Some(staging) = leftovers.staging.take() {
        staging.hand_over(files::Creator::of(plan.user.0, state.pid))?;
    }
    Ok(())
}

/// The step's container on this node, by its name (labels checked in `join`).
async fn find<D: Daemon>(d: &D, plan: &ContainerPlan) -> Result<Option<Found>, EngineError> {
    let job = plan.labels.get("jobdock.job").map_or("", String::as_str);
    let found = d
        .list_by_label("jobdock.job", job)
        .await
        .map_err(|e| EngineError::daemon("looking for the step's container", e))?;
    Ok(found.into_iter().find(|f| f.name == plan.name))
}

/// Hands `task` to the agent of the step's running container, and waits for its status.
async fn join<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    state_dir: &Path,
    task: &TaskPlan,
    signals: &mut mpsc::Receiver<Sig>,
) -> Result<Outcome, EngineError> {
    let (dir, image) = wait_for_agent(d, plan, state_dir).await?;
    let conn = connect_as(&dir, plan.user)?;
    send(conn, task, signals, image).await
}

/// Waits until the step's container runs, is this user's, job's, step's, cluster's and node's,
/// and its agent listens; returns the agent's directory on the host and the container's image.
async fn wait_for_agent<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    state_dir: &Path,
) -> Result<(PathBuf, String), EngineError> {
    let started = Instant::now();
    let refuse = |reason: String| EngineError::StepRefused {
        name: plan.name.clone(),
        reason,
    };
    let mut seen = false;
    loop {
        // dockerd holds the name of a container it is still creating before it lists it.
        let Some(found) = find(d, plan).await? else {
            if seen || started.elapsed() > JOIN_WAIT {
                return Err(EngineError::Agent {
                    reason: format!("the step's container {} went away", plan.name),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        seen = true;
        // A job's named container runs the image it was made of: another is not this task's.
        if let (Some(made), Some(wanted)) = (
            found.labels.get("jobdock.image"),
            plan.labels.get("jobdock.image"),
        ) && made != wanted
        {
            return Err(refuse(format!(
                "it runs {made}, not {wanted}: give the image it was made of, or another name"
            )));
        }
        // Made with or without the job's sshd: a task that says otherwise is not this one's.
        if found.labels.contains_key("jobdock.sshd") != plan.labels.contains_key("jobdock.sshd") {
            let (made, asked) = match found.labels.get("jobdock.sshd") {
                Some(_) => ("with", "does not ask for it"),
                None => ("without", "asks for it"),
            };
            return Err(refuse(format!(
                "it was made {made} the job's sshd (LSB_DOCKER_SSHD) and this task {asked}: \
                 give every step of the job the same LSB_DOCKER_SSHD, or another name"
            )));
        }
        for key in [
            "jobdock.uid",
            "jobdock.job",
            "jobdock.step",
            "jobdock.name",
            "jobdock.image",
            "jobdock.cluster",
            "jobdock.node",
            "jobdock.agent",
            "jobdock.sshd",
        ] {
            if found.labels.get(key) != plan.labels.get(key) {
                return Err(refuse(format!(
                    "its label {key} is {:?}, this task's {:?}",
                    found.labels.get(key),
                    plan.labels.get(key)
                )));
            }
        }
        let state = match d.inspect(&found.id).await {
            Ok(state) => state,
            // Listed while another task's create is not done: not there to inspect yet.
            Err(e) if e.kind == ErrorKind::NotFound && started.elapsed() < JOIN_WAIT => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => return Err(EngineError::daemon("inspecting the step's container", e)),
        };
        if state.running {
            let dir = agent_dir(&state.effective)
                .ok_or_else(|| refuse(format!("it has no {AGENT_DIR_TARGET} mount")))?;
            check_agent_dir(&dir, state_dir, plan.user.0).map_err(refuse)?;
            // As root, only whether it is there yet (connect_as checks it as the user).
            if std::fs::symlink_metadata(dir.join(AGENT_SOCKET))
                .is_ok_and(|m| m.file_type().is_socket())
            {
                warn_of_mounts_not_there(plan, &state.effective);
                return Ok((dir, state.effective.image));
            }
        } else if state.pid == 0
            && started.elapsed() > Duration::from_secs(1)
            && state.exit_code != 0
        {
            return Err(EngineError::Agent {
                reason: format!(
                    "the step's container {} has ended (exit {})",
                    plan.name, state.exit_code
                ),
            });
        }
        if started.elapsed() > JOIN_WAIT {
            return Err(EngineError::Agent {
                reason: format!(
                    "the step's container {} has no agent listening after {}s",
                    plan.name,
                    JOIN_WAIT.as_secs()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A job's named container keeps the mounts of the step that made it: a later step's own (its
/// `--container-mounts`) are not there, which the user is told, by target.
fn warn_of_mounts_not_there(plan: &ContainerPlan, effective: &crate::engine::daemon::Effective) {
    if plan.step.as_ref().is_none_or(|p| p.local_tasks.is_some()) {
        return;
    }
    let missing: Vec<String> = plan
        .mounts
        .iter()
        .map(|m| m.target.display().to_string())
        .filter(|t| !effective.mounts.iter().any(|m| &m.destination == t))
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            "the job's container {} was made by an earlier step and keeps its mounts: {} of \
             this step's are not mounted in it (another container name gets them)",
            plan.name,
            missing.join(", ")
        );
    }
}

/// The agent directory must be a staging directory of jobdock's (directly in the state
/// directory's child, which only root can enter); `connect_as` checks its owner and mode.
fn check_agent_dir(dir: &Path, state_dir: &Path, _uid: u32) -> Result<(), String> {
    let staging = dir.parent().filter(|p| p.parent() == Some(state_dir));
    if staging.is_none() || dir.file_name().is_none_or(|n| n != "run") {
        return Err(format!(
            "its agent directory {} is not a staging directory in {}",
            dir.display(),
            state_dir.display()
        ));
    }
    Ok(())
}

/// Connects to the agent's socket in `dir` with the job user's file system rights: the socket is
/// in a directory the user controls, so root's rights must not follow a link the user put there.
/// The directory itself is opened as root (the state directory is root's alone), not following a
/// link, and must be the user's, mode 0700; the socket is then reached through that descriptor.
fn connect_as(
    dir: &Path,
    (uid, gid): (u32, u32),
) -> Result<std::os::unix::net::UnixStream, EngineError> {
    use nix::fcntl::{OFlag, open};
    use nix::unistd::{Gid, Uid, setfsgid, setfsuid};
    let fail = |reason: String| EngineError::Agent {
        reason: format!("the step agent's directory {}: {reason}", dir.display()),
    };
    let fd = open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail(e.to_string()))?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| fail(e.to_string()))?;
    if st.st_uid != uid || st.st_mode & 0o7777 != 0o700 {
        return Err(fail(format!(
            "owner uid {} mode {:o}, not uid {uid}'s with mode 0700",
            st.st_uid,
            st.st_mode & 0o7777
        )));
    }
    let socket = format!(
        "/proc/self/fd/{}/{AGENT_SOCKET}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    );
    let old_gid = setfsgid(Gid::from_raw(gid));
    let old_uid = setfsuid(Uid::from_raw(uid));
    let conn = std::os::unix::net::UnixStream::connect(&socket);
    setfsuid(old_uid);
    setfsgid(old_gid);
    conn.map_err(|e| fail(format!("connecting to {AGENT_SOCKET}: {e}")))
}

/// Sends the task with jobdock's own stdio, passes on signals, returns the task's outcome.
async fn send(
    conn: std::os::unix::net::UnixStream,
    task: &TaskPlan,
    signals: &mut mpsc::Receiver<Sig>,
    image: String,
) -> Result<Outcome, EngineError> {
    let agent = |e: std::io::Error| EngineError::Agent {
        reason: format!("talking to the step agent: {e}"),
    };
    crate::agent::send_task(&conn, task).map_err(agent)?;
    conn.set_nonblocking(true).map_err(agent)?;
    let conn = tokio::net::UnixStream::from_std(conn).map_err(agent)?;
    let (read, mut write) = conn.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    let status = loop {
        tokio::select! {
            line = lines.next_line() => match line.map_err(agent)? {
                Some(line) => break serde_json::from_str::<Status>(&line).map_err(|e| EngineError::Agent {
                    reason: format!("the step agent's answer {line:?}: {e}"),
                })?,
                None => return Err(EngineError::Agent { reason: "the step agent went away".into() }),
            },
            Some(sig) = signals.recv() => {
                if sig != Sig::Winch {
                    let _ = write.write_all(&sig.number().to_be_bytes()).await;
                }
            }
        }
    };
    let mut messages = Vec::new();
    if let Some(e) = status.error {
        messages.push(format!("the task did not start: {e}"));
    }
    let code = exit::from_job(i64::from(status.code.unwrap_or(0)), status.signal);
    Ok(Outcome {
        code,
        messages,
        image,
    })
}

/// `jobdock exec`: `task` in the running step container of job `job` on this node that belongs to
/// `uid` (root: any); another user's job is refused.
pub(super) async fn exec<D: Daemon>(
    d: &D,
    job: &str,
    caller_uid: u32,
    state_dir: &Path,
    task: &TaskPlan,
    signals: &mut mpsc::Receiver<Sig>,
) -> Result<Outcome, EngineError> {
    let found = d
        .list_by_label("jobdock.job", job)
        .await
        .map_err(|e| EngineError::daemon("looking for the job's containers", e))?;
    let with_agent: Vec<&Found> = found
        .iter()
        .filter(|f| f.labels.get("jobdock.agent").map(String::as_str) == Some("1"))
        .collect();
    let mine: Vec<&&Found> = with_agent
        .iter()
        .filter(|f| caller_uid == 0 || f.labels.get("jobdock.uid") == Some(&caller_uid.to_string()))
        .collect();
    let Some(target) = mine.first() else {
        return Err(EngineError::ExecRefused {
            job: job.to_string(),
            reason: if found.is_empty() {
                "it has no container on this node".into()
            } else if with_agent.is_empty() {
                "its containers on this node are not step containers (only those run an agent to exec in)".into()
            } else {
                format!("it is not yours (uid {caller_uid})")
            },
        });
    };
    let uid: u32 = target
        .labels
        .get("jobdock.uid")
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| EngineError::Internal("a step container without jobdock.uid".into()))?;
    let state = d
        .inspect(&target.id)
        .await
        .map_err(|e| EngineError::daemon("inspecting the job's container", e))?;
    if !state.running {
        return Err(EngineError::ExecRefused {
            job: job.to_string(),
            reason: format!("its container {} is not running", target.name),
        });
    }
    let dir = agent_dir(&state.effective).ok_or_else(|| EngineError::ExecRefused {
        job: job.to_string(),
        reason: format!("its container {} has no agent", target.name),
    })?;
    check_agent_dir(&dir, state_dir, uid).map_err(|reason| EngineError::ExecRefused {
        job: job.to_string(),
        reason,
    })?;
    // The user's primary group does not matter here: the directory is the user's, mode 0700.
    let conn = connect_as(&dir, (uid, uid))?;
    send(conn, task, signals, state.effective.image).await
}

/// The host directory a step container has as its agent's ([`AGENT_DIR_TARGET`]).
fn agent_dir(effective: &crate::engine::daemon::Effective) -> Option<PathBuf> {
    effective
        .mounts
        .iter()
        .find(|m| m.destination == AGENT_DIR_TARGET)
        .map(|m| PathBuf::from(&m.source))
}
