//! The host as the engine sees it, as root: what paths name (in jobdock's mount namespace and in
//! dockerd's, which differ under Slurm's job_container/tmpfs), processes' status, and the bind
//! mounts `pin` makes. Behind the `Host` seam so that the engine's checks run against a fake;
//! this file decides nothing.

use std::io;
use std::path::{Path, PathBuf};

use crate::engine::mountns::{self, Placement};
use crate::probe::FileId;

/// The host as the engine sees it (as root): behind a seam so the checks can be tested with a fake.
/// Paths are jobdock's (its mount namespace: what the user sees, and the probe checked) unless a
/// method says they are dockerd's; the two differ under Slurm's job_container/tmpfs (`mountns`).
pub(super) trait Host {
    /// A pause between create and the checks, for tests that change a mount source in that
    /// window deterministically: none on a real host but a debug build's (see `RealHost`).
    fn pause_before_checks(&self) -> Option<std::time::Duration> {
        None
    }
    /// What `path` names now, following symlinks as dockerd does when it mounts it.
    fn stat(&self, path: &Path) -> io::Result<FileId>;
    /// What `path` names to dockerd: in its mount namespace (`stat` when jobdock shares it).
    fn daemon_stat(&self, path: &Path) -> io::Result<FileId>;
    /// `/proc/<pid>/status` of a host process.
    fn status(&self, pid: u32) -> io::Result<String>;
    /// What `target` names inside the root (and mount namespace) of process `pid`: the directory
    /// a container really got at a mount point. Symlinks are resolved inside that root.
    fn stat_in_root(&self, pid: u32, target: &Path) -> io::Result<FileId>;
    /// Whether process `pid` still runs (is not exiting, a zombie, or gone): only then is what was
    /// read about it evidence against it.
    fn alive(&self, pid: u32) -> bool;
    /// Bind-mounts the directory `source` names onto `at` where dockerd sees it (in its mount
    /// namespace), if it is (reached without any symlink) the file `pin`; see `pin`.
    fn bind_pinned(&self, source: &Path, pin: FileId, at: &Path) -> Result<(), BindError>;
    /// Detaches the mount at `at` in dockerd's mount namespace (`EINVAL` if there is none).
    fn unbind(&self, at: &Path) -> io::Result<()>;
}

/// Why `bind_pinned` did not mount.
#[derive(Debug)]
pub(super) enum BindError {
    /// The path no longer names what was checked: the user's doing.
    Changed(String),
    /// jobdock cannot mount where dockerd would see it (another mount namespace it cannot reach,
    /// or one it cannot identify): the node's setup, for the admin.
    Namespace(String),
    /// The mount itself failed.
    Failed(String),
}

/// The real host, for the dockerd listening on `socket`. Whether jobdock shares dockerd's mount
/// namespace is found out once, when first needed.
pub(super) struct RealHost {
    socket: PathBuf,
    placement: std::cell::OnceCell<Result<Placement, String>>,
}

impl RealHost {
    pub(super) fn new(socket: &Path) -> RealHost {
        RealHost {
            socket: socket.to_path_buf(),
            placement: std::cell::OnceCell::new(),
        }
    }

    /// A host known to share dockerd's mount namespace (tests of the mounts themselves).
    #[cfg(test)]
    pub(super) fn shared() -> RealHost {
        let host = RealHost::new(Path::new("/nonexistent"));
        let _ = host.placement.set(Ok(Placement::Shared));
        host
    }

    fn placement(&self) -> Result<&Placement, String> {
        self.placement
            .get_or_init(|| mountns::locate(&self.socket))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Host for RealHost {
    /// Debug builds only: `JOBDOCK_TEST_DELAY_BEFORE_VERIFY_MS` (at most 30 s), for the
    /// integration tests' swap of a mount source between create and the checks. A release build
    /// has no such variable.
    fn pause_before_checks(&self) -> Option<std::time::Duration> {
        if !cfg!(debug_assertions) {
            return None;
        }
        std::env::var("JOBDOCK_TEST_DELAY_BEFORE_VERIFY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| std::time::Duration::from_millis(ms.min(30_000)))
    }

    fn stat(&self, path: &Path) -> io::Result<FileId> {
        Ok(FileId::of(&nix::sys::stat::stat(path)?))
    }

    fn daemon_stat(&self, path: &Path) -> io::Result<FileId> {
        match self.placement().map_err(io::Error::other)? {
            Placement::Shared => self.stat(path),
            Placement::Separate(daemon) => stat_beneath(daemon.root(), path),
        }
    }

    fn status(&self, pid: u32) -> io::Result<String> {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
    }

    fn stat_in_root(&self, pid: u32, target: &Path) -> io::Result<FileId> {
        use nix::fcntl::{OFlag, open};
        use nix::sys::stat::Mode;
        let root = open(
            format!("/proc/{pid}/root").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        stat_beneath(&root, target)
    }

    fn alive(&self, pid: u32) -> bool {
        use nix::fcntl::{OFlag, open};
        // An exiting process loses its root before it becomes a zombie.
        let root = open(
            format!("/proc/{pid}/root").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        );
        let state = self.status(pid).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("State:"))
                .and_then(|v| v.trim().chars().next())
        });
        root.is_ok() && matches!(state, Some(c) if c != 'Z' && c != 'X')
    }

    fn bind_pinned(&self, source: &Path, pin: FileId, at: &Path) -> Result<(), BindError> {
        use nix::mount::{MsFlags, mount};
        use std::os::fd::AsRawFd;
        let placement = self.placement().map_err(BindError::Namespace)?;
        let fd = crate::probe::open_no_symlinks(source).map_err(BindError::Changed)?;
        let now = nix::sys::stat::fstat(&fd)
            .map(|s| FileId::of(&s))
            .map_err(|e| BindError::Failed(e.to_string()))?;
        if now != pin {
            return Err(BindError::Changed(format!(
                "it names another file than when jobdock checked it ({now}, was {pin})"
            )));
        }
        let daemon = match placement {
            Placement::Shared => None,
            Placement::Separate(daemon) => Some(daemon),
        };
        if let Some(daemon) = daemon {
            // The directory opened here, in the job's namespace, mounted in dockerd's.
            return daemon.attach(&fd, at).map_err(|e| {
                BindError::Failed(format!(
                    "in dockerd's mount namespace (pid {}): {e}",
                    daemon.pid
                ))
            });
        }
        // The open descriptor, not the path: what is mounted is what was checked.
        let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
        mount(
            Some(by_fd.as_str()),
            at,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| BindError::Failed(e.to_string()))?;
        // No setuid program and no device node of the user's directories does anything in the
        // job. A bind remount sets the mount's flags to exactly those given: keep the others the
        // mount already has (a read-only one stays read-only).
        let have = nix::sys::statvfs::statvfs(at).map_err(|e| BindError::Failed(e.to_string()))?;
        mount(
            None::<&str>,
            at,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | kept_flags(have.flags()),
            None::<&str>,
        )
        .map_err(|e| BindError::Failed(format!("remounting nosuid,nodev: {e}")))
    }

    fn unbind(&self, at: &Path) -> io::Result<()> {
        match self.placement().map_err(io::Error::other)? {
            Placement::Shared => Ok(nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH)?),
            Placement::Separate(daemon) => {
                let there = daemon.detach(at);
                // A namespace made after the mount (a later job's, cleaning up what a killed
                // jobdock left) holds a copy of it, which keeps the directory busy here.
                let here = nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH);
                match (there, here) {
                    (Err(e), Ok(())) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
                    (there, _) => there,
                }
            }
        }
    }
}

/// What `target` names beneath the directory `root` (a process's root: its mount namespace too),
/// symlinks resolved inside it.
fn stat_beneath(root: &std::os::fd::OwnedFd, target: &Path) -> io::Result<FileId> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    use nix::sys::stat::Mode;
    let relative = target.strip_prefix("/").unwrap_or(target);
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(root, relative, how) {
        Ok(fd) => fd,
        // Kernels before 5.6: walk without following any symlink (a symlink in the image on
        // the way to a mount point then fails the check rather than being trusted).
        Err(nix::errno::Errno::ENOSYS) => {
            let mut fd = root.try_clone()?;
            for part in relative.components() {
                fd = nix::fcntl::openat(
                    &fd,
                    part.as_os_str(),
                    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
            }
            fd
        }
        Err(e) => return Err(e.into()),
    };
    Ok(FileId::of(&nix::sys::stat::fstat(&fd)?))
}

/// The flags a staging mount gets: nosuid and nodev, and those of the mount it copies.
fn kept_flags(have: nix::sys::statvfs::FsFlags) -> nix::mount::MsFlags {
    use nix::mount::MsFlags;
    use nix::sys::statvfs::FsFlags;
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    for (fs, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if have.contains(fs) {
            flags |= ms;
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    #[test]
    fn staging_mounts_are_nosuid_nodev_and_keep_the_flags_they_copy() {
        use nix::mount::MsFlags;
        use nix::sys::statvfs::FsFlags;
        let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        let cases = [
            (FsFlags::empty(), base),
            (FsFlags::ST_RDONLY, base | MsFlags::MS_RDONLY),
            (
                FsFlags::ST_NOEXEC | FsFlags::ST_RELATIME,
                base | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME,
            ),
            (FsFlags::ST_NOSUID | FsFlags::ST_NODEV, base),
        ];
        for (have, want) in cases {
            assert_eq!(super::kept_flags(have), want, "{have:?}");
        }
    }
}
