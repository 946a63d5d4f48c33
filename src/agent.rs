//! The step agent (issue 14): `jobdock agent`, the command of a step container, running in it as
//! the job user. It runs each task of the step that a jobdock on the host hands it over its unix
//! socket, and ends when the step's tasks on the node have come and gone. It decides nothing about
//! the container: that was planned and checked before it started.
//!
//! Design: one container per job step per node. The first task's jobdock creates it (the
//! deterministic name decides the race; the losers join); every task's jobdock, the first's too,
//! connects to the agent's socket (in the job's staging directory, the user's, mode 0700), sends
//! its argv, environment and working directory with its own stdin, stdout and stderr as
//! SCM_RIGHTS, passes on the signals it gets, and exits with the status the agent reports. The
//! task's output goes straight to Slurm's pipes: no copy through jobdock, and a second task costs
//! a connect, not a container start. A task whose jobdock goes away (SIGKILL) is killed.
//!
//! Wire format: client -> agent: a u32 (big endian) length and that much JSON ([`TaskPlan`]), the
//! three fds attached to the first bytes; then 4-byte signal numbers. Agent -> client: one JSON
//! line, [`Status`].

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::plan::TaskPlan;
use crate::units::CpuList;

/// The largest request: a task's environment is at most `plan::MAX_ENV_BYTES`.
pub const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// How long the agent waits for a task that has not come while none runs: a task that died
/// before it could join must not keep the container forever (the epilog removes it anyway).
pub const IDLE: Duration = Duration::from_secs(120);

/// How a task ended, as the agent reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// The exit code; with `signal`, none.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The task could not be started: why (and `code` is 127 or 126).
    pub error: Option<String>,
}

#[derive(Default)]
struct Count {
    served: u32,
    active: u32,
    last: Option<Instant>,
}

/// Serves tasks on `socket` until `tasks` have come and gone (or none comes for [`IDLE`]); with
/// `tasks` 0 (a job's named container), until the container is removed. With `sshd`, the job's
/// virtual cluster: the image's sshd listens on that port before any task runs, and if it cannot,
/// every task is told why instead of running.
pub fn serve(socket: &Path, tasks: u32, sshd: Option<u16>) -> Result<(), String> {
    let broken: Option<Arc<str>> = sshd.and_then(|port| start_sshd(port).err()).map(Arc::from);
    let image_env = Arc::new(image_env(std::env::vars()));
    let _ = std::fs::remove_file(socket);
    let listener =
        UnixListener::bind(socket).map_err(|e| format!("binding {}: {e}", socket.display()))?;
    let own_uid = nix::unistd::getuid().as_raw();
    let count = Arc::new((Mutex::new(Count::default()), Condvar::new()));
    {
        let count = count.clone();
        std::thread::spawn(move || watch(&count, tasks));
    }
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        // Only the job user (its tasks' jobdock runs setuid root: euid 0) may hand in tasks.
        match nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(c) if c.uid() == own_uid || c.uid() == 0 => {}
            _ => continue,
        }
        {
            let mut c = count.0.lock().expect("no panics while held");
            c.served += 1;
            c.active += 1;
        }
        let count = count.clone();
        let (broken, image_env) = (broken.clone(), image_env.clone());
        std::thread::spawn(move || {
            if let Err(e) = task(conn, broken.as_deref(), &image_env) {
                eprintln!("jobdock agent: {e}");
            }
            let mut c = count.0.lock().expect("no panics while held");
            c.active -= 1;
            c.last = Some(Instant::now());
            count.1.notify_all();
        });
    }
    Ok(())
}

/// Ends the agent (and so the container) once every task has come and gone.
fn watch(count: &(Mutex<Count>, Condvar), tasks: u32) {
    if tasks == 0 {
        return;
    }
    let started = Instant::now();
    let mut c = count.0.lock().expect("no panics while held");
    loop {
        let idle_since = c.last.unwrap_or(started);
        if c.active == 0 && (c.served >= tasks || idle_since.elapsed() >= IDLE) {
            std::process::exit(0);
        }
        c = count
            .1
            .wait_timeout(c, Duration::from_secs(1))
            .expect("no panics while held")
            .0;
    }
}

/// How long the image's sshd has to listen.
const SSHD_START: Duration = Duration::from_secs(10);

/// Starts the image's sshd as the job user with the job's configuration (`crate::sshd`), and
/// waits until it listens: it writes its pid file once its socket is bound. The error says why it
/// does not (its log's end).
fn start_sshd(port: u16) -> Result<(), String> {
    use crate::sshd::{SSH_TARGET, SSHD_CONFIG, SSHD_LOG, SSHD_PATHS, SSHD_PID};
    let Some(program) = SSHD_PATHS.iter().find(|p| Path::new(p).is_file()) else {
        return Err(format!(
            "the job's virtual cluster (LSB_DOCKER_SSHD) needs an sshd in the image (openssh-server), \
             at one of {}",
            SSHD_PATHS.join(", ")
        ));
    };
    let _ = std::fs::remove_file(SSHD_PID);
    let mut child = std::process::Command::new(program)
        .args(["-D", "-f"])
        .arg(format!("{SSH_TARGET}/{SSHD_CONFIG}"))
        .args(["-E", SSHD_LOG])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {program}: {e}"))?;
    let log_end = || {
        let log = std::fs::read_to_string(SSHD_LOG).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    };
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the job's sshd ({program}, port {port}) ended ({status}): {}",
                log_end()
            ));
        }
        let pid = std::fs::read_to_string(SSHD_PID).unwrap_or_default();
        if pid.trim() == child.id().to_string() {
            // Reaped when it ends, so that it leaves no zombie behind.
            std::thread::spawn(move || child.wait());
            return Ok(());
        }
        if started.elapsed() > SSHD_START {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the job's sshd ({program}) did not listen on port {port} within {}s: {}",
                SSHD_START.as_secs(),
                log_end()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The image's environment: the agent's own without what jobdock set in it for the first task
/// (`plan::TASK_ENV_NAMES`).
fn image_env(own: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let own: Vec<(String, String)> = own.collect();
    let set: Vec<&str> = own
        .iter()
        .find(|(k, _)| k == crate::plan::TASK_ENV_NAMES)
        .map(|(_, v)| v.split(',').collect())
        .unwrap_or_default();
    own.iter()
        .filter(|(k, _)| k != crate::plan::TASK_ENV_NAMES && !set.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// One task: read it, run it, pass on signals, report how it ended (or, with `broken`, why it
/// cannot run). Its environment is the image's with its own over it.
fn task(
    mut conn: UnixStream,
    broken: Option<&str>,
    image_env: &[(String, String)],
) -> Result<(), String> {
    let (len, fds) = recv_header(&conn)?;
    if len > MAX_REQUEST {
        return Err(format!("a request of {len} bytes (at most {MAX_REQUEST})"));
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)
        .map_err(|e| format!("reading the task: {e}"))?;
    let task: TaskPlan =
        serde_json::from_slice(&body).map_err(|e| format!("the task is not JSON: {e}"))?;
    if let Some(why) = broken {
        return reply(&conn, &failed(1, why.to_string()));
    }
    let [stdin, stdout, stderr] = fds;
    let Some((program, args)) = task.argv.split_first() else {
        return reply(&conn, &failed(127, "an empty command".into()));
    };
    let mut command = std::process::Command::new(program);
    // No environment (`jobdock exec`): the container's, which is the agent's own.
    if !task.env.is_empty() {
        command
            .env_clear()
            .envs(image_env.iter().map(|(k, v)| (k, v)))
            .envs(&task.env);
    }
    command
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    if let Some(cwd) = &task.cwd {
        command.current_dir(cwd);
    }
    if let Some(cpus) = &task.cpus {
        bind(cpus);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
                126
            } else {
                127
            };
            return reply(&conn, &failed(code, format!("{program}: {e}")));
        }
    };
    let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    // Signals from the task's jobdock; its going away (EOF) kills the task. Not once the task
    // is reaped: its process group id may be another's by then.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut reader = conn.try_clone().map_err(|e| e.to_string())?;
    let reaped = done.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4];
        loop {
            let sig = match reader.read_exact(&mut buf) {
                Ok(()) => i32::from_be_bytes(buf),
                Err(_) => libc_sigkill(),
            };
            if reaped.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
                let _ = nix::sys::signal::killpg(group, sig);
            }
            if sig == libc_sigkill() {
                return;
            }
        }
    });
    // The task's other processes (its group) end with it; then it is reaped.
    while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitid(
        nix::sys::wait::Id::Pid(group),
        nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
    ) {}
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the task: {e}"))?;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    reply(
        &conn,
        &Status {
            code: status.code(),
            signal: status.signal(),
            error: None,
        },
    )?;
    let _ = conn.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// Binds this thread, and so the task it is about to fork, to the CPUs the scheduler bound the
/// task to, as far as the container has them; a task whose CPUs the container lacks keeps the
/// container's (a binding is placement, never a limit: the cgroup is).
fn bind(cpus: &str) {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    let this = nix::unistd::Pid::from_raw(0);
    let (Ok(list), Ok(own)) = (cpus.parse::<CpuList>(), sched_getaffinity(this)) else {
        eprintln!("jobdock agent: the task's CPUs {cpus:?} are not a CPU list; not bound");
        return;
    };
    let mut set = CpuSet::new();
    for &cpu in list.cpus() {
        if own.is_set(cpu).unwrap_or(false) {
            let _ = set.set(cpu);
        }
    }
    if (0..CpuSet::count()).any(|c| set.is_set(c).unwrap_or(false))
        && let Err(e) = sched_setaffinity(this, &set)
    {
        eprintln!("jobdock agent: binding the task to CPUs {cpus}: {e}");
    }
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

fn failed(code: i32, error: String) -> Status {
    Status {
        code: Some(code),
        signal: None,
        error: Some(error),
    }
}

fn reply(mut conn: &UnixStream, status: &Status) -> Result<(), String> {
    let mut line = serde_json::to_vec(status).expect("a status serializes");
    line.push(b'\n');
    conn.write_all(&line)
        .map_err(|e| format!("reporting the task's status: {e}"))
}

/// The request's length, with exactly three fds attached.
fn recv_header(conn: &UnixStream) -> Result<(usize, [OwnedFd; 3]), String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut len = [0u8; 4];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let mut iov = [std::io::IoSliceMut::new(&mut len)];
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receiving the task: {e}"))?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(rights) = c {
            // SAFETY: the kernel just gave us these descriptors; nothing else owns them.
            fds.extend(
                rights
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.bytes != 4 {
        return Err(format!("a request header of {} bytes, not 4", msg.bytes));
    }
    let fds: [OwnedFd; 3] = fds.try_into().map_err(|v: Vec<OwnedFd>| {
        format!("{} descriptors, not 3 (stdin, stdout, stderr)", v.len())
    })?;
    Ok((u32::from_be_bytes(len) as usize, fds))
}

/// Sends `task` with this process's stdin, stdout and stderr (the client side).
pub fn send_task(conn: &UnixStream, task: &TaskPlan) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let body = serde_json::to_vec(task).expect("a task serializes");
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| (l as usize) <= MAX_REQUEST)
        .ok_or_else(|| std::io::Error::other("the task's request is too large"))?
        .to_be_bytes();
    let fds = [0, 1, 2];
    let iov = [std::io::IoSlice::new(&len)];
    sendmsg::<()>(
        conn.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    (&*conn).write_all(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_gets_the_images_environment_without_the_first_tasks() {
        let own = [
            ("PATH", "/opt/conda/bin:/usr/bin"),
            ("LANG", "C.UTF-8"),
            ("SLURM_PROCID", "0"),
            ("PMIX_SERVER_URI", "step0"),
            (crate::plan::TASK_ENV_NAMES, "SLURM_PROCID,PMIX_SERVER_URI"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let env = image_env(own.into_iter());
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "LANG"]);
    }

    #[test]
    fn tasks_run_with_their_own_argv_env_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let s = socket.clone();
        // The agent exits the process when done; here it serves in a thread and is never done.
        std::thread::spawn(move || serve(&s, 1000, None));
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for (argv, want) in [
            (
                vec!["/bin/sh", "-c", "exit $CODE"],
                Status {
                    code: Some(7),
                    signal: None,
                    error: None,
                },
            ),
            (
                vec!["/bin/sh", "-c", "kill -TERM $$"],
                Status {
                    code: None,
                    signal: Some(15),
                    error: None,
                },
            ),
        ] {
            let conn = UnixStream::connect(&socket).unwrap();
            let task = TaskPlan {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                env: [("CODE".to_string(), "7".to_string())].into(),
                cwd: Some("/".into()),
                cpus: None,
            };
            send_task(&conn, &task).unwrap();
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(&conn), &mut line).unwrap();
            assert_eq!(
                serde_json::from_str::<Status>(&line).unwrap(),
                want,
                "{argv:?}"
            );
        }
        // A task keeps the CPU its scheduler bound it to (here: the last this test may use), and
        // one bound to CPUs the container lacks keeps the container's.
        let own = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
        let mine: Vec<usize> = (0..nix::sched::CpuSet::count())
            .filter(|&c| own.is_set(c).unwrap())
            .collect();
        let last = mine.last().unwrap().to_string();
        let all = CpuList::new(mine).unwrap().to_string();
        for (cpus, want) in [(last.as_str(), last.as_str()), ("8191", all.as_str())] {
            let conn = UnixStream::connect(&socket).unwrap();
            let script =
                format!("test \"$(grep Cpus_allowed_list /proc/self/status | cut -f2)\" = {want}");
            let task = TaskPlan {
                argv: vec!["/bin/sh".into(), "-c".into(), script],
                env: Default::default(),
                cwd: None,
                cpus: Some(cpus.to_string()),
            };
            send_task(&conn, &task).unwrap();
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(&conn), &mut line).unwrap();
            let status: Status = serde_json::from_str(&line).unwrap();
            assert_eq!(status.code, Some(0), "bound to {cpus}, want {want}");
        }

        let conn = UnixStream::connect(&socket).unwrap();
        let task = TaskPlan {
            argv: vec!["/no/such/program".into()],
            env: Default::default(),
            cwd: None,
            cpus: None,
        };
        send_task(&conn, &task).unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&conn), &mut line).unwrap();
        let status: Status = serde_json::from_str(&line).unwrap();
        assert_eq!(status.code, Some(127));
        assert!(status.error.unwrap().contains("/no/such/program"));
    }
}
