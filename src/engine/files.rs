//! jobdock's own files on the host: the state directory, a job's staging directory (synthesized
//! passwd and group, the LSF job's script), cidfiles and pull locks. Everything is created by root with `O_EXCL` and
//! without following symlinks, in directories no user can write, so a user can neither prepare
//! nor race them. Nothing here decides what the files contain.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::plan::ContainerPlan;

#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {reason}", path.display())]
pub struct FileError {
    /// What the path is: its config key (`engine.state_dir`) when the site config names it.
    pub what: &'static str,
    pub path: PathBuf,
    pub reason: String,
    /// The write ran into the file size limit jobdock's caller set (`ulimit -f`), which root
    /// could not lift: the caller's doing, not the node's.
    pub callers_limit: bool,
}

fn fail(what: &'static str, path: &Path, reason: impl ToString) -> FileError {
    FileError {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
        callers_limit: false,
    }
}

/// A failed write, telling the caller's file size limit from the node's problems.
fn write_failed(what: &'static str, path: &Path, e: std::io::Error) -> FileError {
    if e.raw_os_error() == Some(nix::errno::Errno::EFBIG as i32) {
        return FileError {
            callers_limit: true,
            ..fail(
                what,
                path,
                format!(
                    "{e}: the file size limit jobdock was started with (`ulimit -f`) is too small"
                ),
            )
        };
    }
    fail(what, path, e)
}

/// Makes sure `dir` is a directory only root can write: created 0700 if missing; refused if it is
/// a symlink, not a directory, not owned by root, or writable by group or others. Another job may
/// remove an empty shared directory (`mounts/`) between the creation and the check: then again.
pub(super) fn ensure_private_dir(what: &'static str, dir: &Path) -> Result<(), FileError> {
    for attempt in 0.. {
        match DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(what, dir, e)),
        }
        match crate::trust::check(dir, crate::trust::Expect::Dir, crate::trust::Above::Nothing) {
            Ok(()) => return Ok(()),
            Err(crate::trust::NotRootsAlone::Unreadable { .. })
                if attempt < 3 && std::fs::symlink_metadata(dir).is_err() =>
            {
                continue;
            }
            Err(e) => {
                // The walker's words, less the path, which `fail` puts first.
                let text = e.to_string();
                let reason = text
                    .strip_prefix(&format!("{} ", dir.display()))
                    .or_else(|| text.strip_prefix(&format!("{}: ", dir.display())))
                    .unwrap_or(&text)
                    .to_string();
                return Err(fail(what, dir, reason));
            }
        }
    }
    unreachable!("the loop returns")
}

/// Creates `path` with `contents`, mode exactly `mode`: fails if anything exists there, and never
/// follows a symlink.
pub(super) fn write_new(
    what: &'static str,
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), FileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .mode(mode)
        .open(path)
        .map_err(|e| fail(what, path, e))?;
    // The umask may have taken bits away; the container's user must be able to read these.
    file.set_permissions(Permissions::from_mode(mode))
        .and_then(|()| file.write_all(contents))
        .map_err(|e| write_failed(what, path, e))
}

/// The process that made a file of jobdock's: whose it is and whether it is still at work. A pid
/// alone could be reused; with its start time it names one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Creator {
    pub uid: u32,
    pub pid: u32,
    /// In clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start: u64,
}

impl Creator {
    /// This jobdock, working for the user `uid`.
    pub(super) fn this_process(uid: u32) -> Creator {
        Creator::of(uid, std::process::id())
    }

    /// The running process `pid`, working for the user `uid`.
    pub(super) fn of(uid: u32, pid: u32) -> Creator {
        Creator {
            uid,
            pid,
            start: process_state(pid).map_or(0, |(_, start)| start),
        }
    }

    /// Whether the process that wrote this still runs.
    pub(super) fn alive(&self) -> bool {
        process_state(self.pid).is_some_and(|(state, start)| state != 'Z' && start == self.start)
    }

    /// Whether it is stopped (SIGSTOP, a debugger): it runs, but does nothing.
    pub(super) fn stopped(&self) -> bool {
        process_state(self.pid)
            .is_some_and(|(state, start)| matches!(state, 'T' | 't') && start == self.start)
    }

    pub(super) fn line(&self) -> String {
        format!("{} {} {}\n", self.uid, self.pid, self.start)
    }

    fn parse(text: &str) -> Option<Creator> {
        let mut words = text.split_ascii_whitespace().map(str::parse::<u64>);
        let (uid, pid, start) = (
            words.next()?.ok()?,
            words.next()?.ok()?,
            words.next()?.ok()?,
        );
        Some(Creator {
            uid: u32::try_from(uid).ok()?,
            pid: u32::try_from(pid).ok()?,
            start,
        })
    }
}

/// A process's state letter and start time, from `/proc/<pid>/stat`.
fn process_state(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The name of the file in a staging directory that says whose it is.
const OWNER: &str = "owner";

/// Who made the staging directory `dir`, if it says so.
pub(super) fn staging_creator(dir: &Path) -> Option<Creator> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(dir.join(OWNER))
        .ok()?;
    let mut text = String::new();
    Read::by_ref(&mut file)
        .take(256)
        .read_to_string(&mut text)
        .ok()?;
    Creator::parse(&text)
}

/// The job's staging directory with its synthesized passwd and group files. The engine removes it
/// with `remove` (to report a failure); dropping it removes it too, so no early return leaks it.
#[derive(Debug)]
pub(super) struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// Writes `plan`'s passwd and group into its staging directory under `state_dir`.
    pub(super) fn create(plan: &ContainerPlan, state_dir: &Path) -> Result<Staging, FileError> {
        ensure_private_dir("engine.state_dir", state_dir)?;
        let dir = &plan.staging.dir;
        if dir.parent() != Some(state_dir) {
            return Err(fail(
                "staging directory",
                dir,
                format!("is not directly in {}", state_dir.display()),
            ));
        }
        DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail("staging directory", dir, e))?;
        let staging = Staging { dir: dir.clone() };
        // First, so that whatever happens next, `jobdock cleanup` knows whose it is.
        write_new(
            "staging file",
            &dir.join(OWNER),
            Creator::this_process(plan.user.0).line().as_bytes(),
            0o600,
        )?;
        write_new(
            "staging file",
            &plan.staging.passwd,
            plan.passwd.as_bytes(),
            0o644,
        )?;
        write_new(
            "staging file",
            &plan.staging.group,
            plan.group.as_bytes(),
            0o644,
        )?;
        // A step container's agent socket: the job user's alone (the agent runs as the user).
        if let Some(agent_dir) = &plan.staging.agent_dir {
            DirBuilder::new()
                .mode(0o700)
                .create(agent_dir)
                .map_err(|e| fail("agent directory", agent_dir, e))?;
            nix::unistd::chown(
                agent_dir,
                Some(nix::unistd::Uid::from_raw(plan.user.0)),
                Some(nix::unistd::Gid::from_raw(plan.user.1)),
            )
            .map_err(|e| fail("agent directory", agent_dir, e))?;
        }
        if let (Some(dir), Some(sshd)) = (
            &plan.staging.ssh_dir,
            plan.step.as_ref().and_then(|s| s.sshd.as_ref()),
        ) {
            write_ssh_files(dir, sshd, plan.user)?;
        }
        // The user's own command: in a directory only root can enter on the host, readable in
        // the container (where only the job user is).
        if let (Some(path), Some(text)) = (&plan.staging.script, &plan.script) {
            write_new("staging file", path, text.as_bytes(), 0o644)?;
        }
        if let Some(fifos) = &plan.staging.fifos {
            super::fifo::make(fifos, plan.user.0, plan.user.1)?;
        }
        Ok(staging)
    }

    /// Hands the directory to `creator` (a named container's init, which outlives this jobdock):
    /// kept while that runs, swept once it has gone (`cleanup::sweep_stale`), and not removed
    /// when this jobdock ends. The job's cleanup removes it with the container.
    pub(super) fn hand_over(self, creator: Creator) -> Result<(), FileError> {
        let next = self.dir.join(format!("{OWNER}.next"));
        write_new("staging file", &next, creator.line().as_bytes(), 0o600)?;
        std::fs::rename(&next, self.dir.join(OWNER))
            .map_err(|e| fail("staging file", &self.dir.join(OWNER), e))?;
        std::mem::forget(self);
        Ok(())
    }

    /// Removes the staging directory; gone already is fine.
    pub(super) fn remove(self) -> Result<(), FileError> {
        let dir = self.dir.clone();
        std::mem::forget(self);
        remove_dir(&dir)
    }
}

/// The virtual cluster's files (`crate::sshd`) in `dir`, the job user's (sshd, running as the
/// user, reads its host key; `StrictModes` wants them the user's and private), keys derived from
/// the site secret, which only this process (root) reads.
fn write_ssh_files(
    dir: &Path,
    sshd: &crate::plan::SshdPlan,
    (uid, gid): (u32, u32),
) -> Result<(), FileError> {
    use crate::sshd;
    let secret =
        sshd::read_secret(&sshd.secret).map_err(|e| fail("mpi.sshd_secret", &sshd.secret, e))?;
    let keys = sshd::Keys::derive(&secret, &sshd.key_context);
    let comment = sshd.host_key_alias.as_str();
    DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail("ssh directory", dir, e))?;
    let files = [
        (
            sshd::SSHD_CONFIG,
            sshd::sshd_config(sshd.port, &sshd.user),
            0o600,
        ),
        (
            sshd::SSH_CONFIG,
            sshd::ssh_config(&sshd.nodes, &sshd.user, comment),
            0o600,
        ),
        (sshd::HOSTFILE, sshd::hostfile(&sshd.nodes), 0o644),
        (
            sshd::USER_KEY,
            sshd::private_file(&keys.user, comment),
            0o600,
        ),
        (
            sshd::HOST_KEY,
            sshd::private_file(&keys.host, comment),
            0o600,
        ),
        (
            sshd::AUTHORIZED_KEYS,
            sshd::public_line(&keys.user, comment),
            0o600,
        ),
        (
            sshd::KNOWN_HOSTS,
            format!("{comment} {}", sshd::public_line(&keys.host, comment)),
            0o600,
        ),
    ];
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(uid),
        nix::unistd::Gid::from_raw(gid),
    );
    for (name, text, mode) in files {
        let path = dir.join(name);
        write_new("ssh file", &path, text.as_bytes(), mode)?;
        nix::unistd::chown(&path, Some(uid), Some(gid)).map_err(|e| fail("ssh file", &path, e))?;
    }
    nix::unistd::chown(dir, Some(uid), Some(gid)).map_err(|e| fail("ssh directory", dir, e))?;
    Ok(())
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Only reached when `remove` was not called (an early return or a panic).
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn remove_dir(dir: &Path) -> Result<(), FileError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(fail("staging directory", dir, e)),
        _ => Ok(()),
    }
}

pub(super) fn remove_file(what: &'static str, path: &Path) -> Result<(), FileError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(fail(what, path, e)),
        _ => Ok(()),
    }
}

/// The cidfile for container `name` in `dir`.
pub(super) fn cidfile_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.cid"))
}

/// Writes the container id to `<dir>/<name>.cid`, as `docker run --cidfile` does (no newline).
/// The state directory is made private if it is `dir`; another directory must already exist and
/// is used with `O_EXCL|O_NOFOLLOW` only.
pub(super) fn write_cidfile(
    dir: &Path,
    state_dir: &Path,
    name: &str,
    id: &str,
) -> Result<PathBuf, FileError> {
    if dir == state_dir {
        ensure_private_dir("engine.state_dir", dir)?;
    } else {
        let meta =
            std::fs::symlink_metadata(dir).map_err(|e| fail("engine.cidfile_dir", dir, e))?;
        if !meta.is_dir() {
            return Err(fail("engine.cidfile_dir", dir, "is not a directory"));
        }
    }
    let path = cidfile_path(dir, name);
    write_new("cidfile", &path, id.as_bytes(), 0o644)?;
    Ok(path)
}

/// The directory of the pull locks under the state directory.
pub(super) const LOCKS: &str = "locks";

/// An exclusive `flock` on a file under `<state_dir>/locks/` that names its holder; removed and
/// released on drop.
#[derive(Debug)]
pub(super) struct Lock {
    path: PathBuf,
    file: std::sync::Arc<nix::fcntl::Flock<File>>,
}

impl Lock {
    /// Tells waiters the holder is at work: the lock file's modification time is its heartbeat.
    pub(super) fn beat(&self) {
        let now = nix::sys::time::TimeSpec::UTIME_NOW;
        if let Err(e) = nix::sys::stat::futimens(&**self.file, &now, &now) {
            tracing::debug!("lock file {}: {e}", self.path.display());
        }
    }

    /// A handle that can beat from a task of its own.
    pub(super) fn heart(&self) -> Lock {
        Lock {
            path: self.path.clone(),
            file: self.file.clone(),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Only the holder removes the file, while it still holds it; a waiter that opened it
        // meanwhile sees it is gone once it gets the lock, and tries again (`try_lock`).
        if std::sync::Arc::strong_count(&self.file) == 1 {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The holder of a lock another process has: who, and when it last beat.
#[derive(Debug)]
pub(super) struct Held {
    pub holder: Option<Creator>,
    pub beat: Option<std::time::SystemTime>,
}

/// Opens (creating if needed) the lock file `<state_dir>/locks/<name>` and tries to lock it;
/// `Err(Held)` when another process holds it. The holder's pid is written into the file.
pub(super) fn try_lock(state_dir: &Path, name: &str) -> Result<Result<Lock, Held>, FileError> {
    ensure_private_dir("engine.state_dir", state_dir)?;
    let dir = state_dir.join(LOCKS);
    ensure_private_dir("lock directory", &dir)?;
    let path = dir.join(name);
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .mode(0o600)
            .open(&path)
            .map_err(|e| fail("lock file", &path, e))?;
        let lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        {
            Ok(lock) => lock,
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => return Ok(Err(held(&file))),
            Err((_, e)) => return Err(fail("lock file", &path, e)),
        };
        // The last holder may have removed the file between our open and our lock.
        let ours = lock.metadata().map_err(|e| fail("lock file", &path, e))?;
        match std::fs::symlink_metadata(&path) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {}
            _ => continue,
        }
        let line = Creator::this_process(0).line();
        let written = lock
            .set_len(0)
            .and_then(|()| (&*lock).write_all(line.as_bytes()));
        written.map_err(|e| write_failed("lock file", &path, e))?;
        return Ok(Ok(Lock {
            path,
            file: std::sync::Arc::new(lock),
        }));
    }
}

fn held(file: &File) -> Held {
    let mut text = String::new();
    let _ = Read::by_ref(&mut &*file)
        .take(256)
        .read_to_string(&mut text);
    Held {
        holder: Creator::parse(&text),
        beat: file.metadata().and_then(|m| m.modified()).ok(),
    }
}

/// Removes the lock files nobody holds (their holder was killed). One that is taken meanwhile is
/// left alone: it is removed while locked, as the holder would.
pub(super) fn remove_unheld_locks(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir.join(LOCKS)) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.ends_with(".lock") {
            continue;
        }
        if let Ok(Ok(lock)) = try_lock(state_dir, &name) {
            drop(lock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_tmp() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), Permissions::from_mode(0o700)).unwrap();
        t
    }

    #[test]
    #[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
    fn state_dir_is_created_private_and_unsafe_ones_are_refused() {
        crate::needs_root();
        let t = private_tmp();
        let fresh = t.path().join("state");
        ensure_private_dir("engine.state_dir", &fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        ensure_private_dir("engine.state_dir", &fresh).unwrap();

        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o777)).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        let file = t.path().join("file");
        std::fs::write(&file, "").unwrap();
        let users = t.path().join("users");
        std::fs::create_dir(&users).unwrap();
        nix::unistd::chown(&users, Some(nix::unistd::Uid::from_raw(2001)), None).unwrap();
        let cases = [
            (open, "writable by group or others"),
            (link, "symlink"),
            (file, "not a directory"),
            (users, "owned by uid 2001"),
        ];
        for (path, want) in cases {
            let e = ensure_private_dir("engine.state_dir", &path).unwrap_err();
            assert!(e.to_string().contains(want), "{}: {e}", path.display());
            assert!(e.to_string().contains("engine.state_dir"), "{e}");
        }
    }

    #[test]
    fn new_files_never_replace_or_follow_anything() {
        let t = private_tmp();
        let target = t.path().join("target");
        std::fs::write(&target, "precious").unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write_new("test", &link, b"x", 0o644).is_err());
        assert!(write_new("test", &target, b"x", 0o644).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");

        let fresh = t.path().join("fresh");
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let written = write_new("test", &fresh, b"data", 0o644);
        nix::sys::stat::umask(old);
        written.unwrap();
        assert_eq!(std::fs::read(&fresh).unwrap(), b"data");
        let mode = std::fs::metadata(&fresh).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o644, "the umask must not make passwd unreadable");
    }

    #[test]
    #[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
    fn a_second_lock_waits_for_the_first() {
        crate::needs_root();
        let t = private_tmp();
        let first = try_lock(t.path(), "image.lock").unwrap().unwrap();
        let held = try_lock(t.path(), "image.lock").unwrap().unwrap_err();
        assert_eq!(held.holder.map(|h| h.pid), Some(std::process::id()));
        assert!(held.holder.unwrap().alive() && !held.holder.unwrap().stopped());
        assert!(held.beat.is_some());
        assert!(try_lock(t.path(), "other.lock").unwrap().is_ok());
        let path = t.path().join("locks/image.lock");
        assert!(path.exists());
        drop(first);
        assert!(!path.exists(), "the holder removes its lock file");
        assert!(try_lock(t.path(), "image.lock").unwrap().is_ok());
        assert!(!path.exists());
    }
}
