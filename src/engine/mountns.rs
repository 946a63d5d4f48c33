//! jobdock in another mount namespace than dockerd. Slurm's `job_container/tmpfs` runs each job in
//! a mount namespace of its own (a private /tmp and /dev/shm): a staging mount jobdock made there
//! would exist only in the job's namespace, and dockerd, which mounts sources by path in its own,
//! would give the container the empty directory under it. So when the namespaces differ, staging
//! mounts are made in dockerd's: the pinned directory, opened in the job's namespace (what the
//! user sees and the probe checked), is cloned as a detached mount (`open_tree`), made nosuid and
//! nodev (`mount_setattr`), and attached at the staging path by a forked, single-threaded child
//! that joined dockerd's namespace (`setns` fails in a multi-threaded process). Detaching happens
//! there too, and what dockerd sees is read through its root (`/proc/<pid>/root`).
//!
//! This module only finds dockerd's namespace and acts in it; what is mounted is the plan's, and
//! whether it is what was checked is `verify`'s.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::probe::FileId;

/// Which process dockerd is: the peer of its socket (`SO_PEERCRED`: the process that listens on
/// it; with systemd's socket activation, that is pid 1, whose namespace dockerd then shares).
pub fn daemon_pid(socket: &Path) -> io::Result<u32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    let peer = getsockopt(&stream, PeerCredentials)?;
    // 0: the peer is in a pid namespace jobdock cannot see into.
    match u32::try_from(peer.pid()) {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(io::Error::other(
            "its process is in another pid namespace than jobdock",
        )),
    }
}

/// `/proc/<pid>/ns/mnt` (`self` for jobdock's), held open: it is that namespace for as long as
/// the descriptor lives, whatever becomes of the process.
fn open_namespace(pid: &str) -> io::Result<OwnedFd> {
    use nix::fcntl::{OFlag, open};
    Ok(open(
        format!("/proc/{pid}/ns/mnt").as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?)
}

fn identity(fd: &OwnedFd) -> io::Result<FileId> {
    Ok(FileId::of(&nix::sys::stat::fstat(fd)?))
}

/// Whether jobdock shares `pid`'s mount namespace (`jobdock doctor`).
pub fn shares_namespace_with(pid: u32) -> io::Result<bool> {
    let own = identity(&open_namespace("self")?)?;
    Ok(own == identity(&open_namespace(&pid.to_string())?)?)
}

/// Whether this kernel has the calls staging in another namespace needs: `open_tree` and
/// `move_mount` (Linux 5.2) and `mount_setattr` (5.12). Asked with an invalid descriptor, a call
/// that exists fails with `EBADF` (or `EINVAL`), one that does not with `ENOSYS`.
pub fn new_mount_api() -> Result<(), String> {
    let empty = c"";
    for (name, number) in [
        ("open_tree", libc::SYS_open_tree),
        ("move_mount", libc::SYS_move_mount),
        ("mount_setattr", libc::SYS_mount_setattr),
    ] {
        // SAFETY: every call is given descriptor -1 and a valid empty string (and a null
        // `mount_attr` of size 0): the kernel rejects them before touching anything.
        let rc = unsafe {
            match number {
                libc::SYS_move_mount => libc::syscall(
                    number,
                    -1,
                    empty.as_ptr(),
                    -1,
                    empty.as_ptr(),
                    libc::MOVE_MOUNT_F_EMPTY_PATH,
                ),
                libc::SYS_mount_setattr => libc::syscall(
                    number,
                    -1,
                    empty.as_ptr(),
                    libc::AT_EMPTY_PATH,
                    std::ptr::null::<libc::mount_attr>(),
                    0usize,
                ),
                _ => libc::syscall(number, -1, empty.as_ptr(), libc::AT_EMPTY_PATH),
            }
        };
        if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            return Err(format!(
                "this kernel has no {name} (Linux 5.12 has all it needs)"
            ));
        }
    }
    Ok(())
}

/// Where the staging mounts must be made, decided from what was found: jobdock's own mount
/// namespace, dockerd's, and whether this kernel can mount into another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// One namespace: a mount jobdock makes is one dockerd sees.
    Shared,
    /// dockerd's is another one: mounts for dockerd are made in it.
    Separate,
}

/// The decision, pure: an unknown namespace on either side, or another namespace without the
/// calls to mount into it, is a refusal (with why); no guess is made where a wrong one would give
/// a job another directory than the one checked.
pub(super) fn decide(
    own: Result<FileId, String>,
    daemon: Result<FileId, String>,
    api: Result<(), String>,
) -> Result<Mode, String> {
    let own = own.map_err(|e| format!("cannot read jobdock's own mount namespace: {e}"))?;
    let daemon = daemon.map_err(|e| format!("cannot read dockerd's mount namespace: {e}"))?;
    if own == daemon {
        return Ok(Mode::Shared);
    }
    api.map_err(|e| {
        format!(
            "jobdock runs in another mount namespace than dockerd (Slurm's \
             job_container/tmpfs?), and cannot make its mounts in dockerd's: {e}"
        )
    })?;
    Ok(Mode::Separate)
}

/// Where dockerd mounts, as found for the dockerd at `socket`.
pub(super) enum Placement {
    Shared,
    Separate(DaemonNamespace),
}

/// Finds dockerd's process and mount namespace, and decides (see `decide`).
pub(super) fn locate(socket: &Path) -> Result<Placement, String> {
    let pid = daemon_pid(socket).map_err(|e| {
        format!(
            "cannot tell which process dockerd is ({}): {e}",
            socket.display()
        )
    })?;
    let ns = open_namespace(&pid.to_string()).map_err(|e| format!("pid {pid}: {e}"));
    let own = open_namespace("self")
        .and_then(|fd| identity(&fd))
        .map_err(|e| e.to_string());
    let theirs = ns
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|fd| identity(fd).map_err(|e| format!("pid {pid}: {e}")));
    let api = match (&own, &theirs) {
        (Ok(a), Ok(b)) if a != b => new_mount_api(),
        _ => Ok(()),
    };
    match decide(own, theirs, api)? {
        Mode::Shared => Ok(Placement::Shared),
        Mode::Separate => {
            use nix::fcntl::{OFlag, open};
            let root = open(
                format!("/proc/{pid}/root").as_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| format!("cannot open dockerd's root (pid {pid}): {e}"))?;
            tracing::debug!("dockerd (pid {pid}) is in another mount namespace: staging there");
            Ok(Placement::Separate(DaemonNamespace { pid, ns: ns?, root }))
        }
    }
}

/// dockerd's mount namespace and root, held open.
pub(super) struct DaemonNamespace {
    pub pid: u32,
    ns: OwnedFd,
    root: OwnedFd,
}

/// What a child does in dockerd's namespace.
enum Act<'a> {
    /// `move_mount` of a detached tree onto a path.
    Attach { tree: RawFd, at: &'a CStr },
    /// `umount2(MNT_DETACH)`.
    Detach { at: &'a CStr },
}

/// A child's exit code for a failed `setns`: this plus the errno.
const SETNS_FAILED: i32 = 128;

impl DaemonNamespace {
    /// Mounts the directory `dir` (a descriptor opened in jobdock's namespace), with what is
    /// mounted below it, at `at` in dockerd's namespace, nosuid and nodev (the other flags as
    /// the directory's mount has them: a read-only one stays read-only) and private.
    pub(super) fn attach(&self, dir: &OwnedFd, at: &Path) -> io::Result<()> {
        let tree = clone_tree(dir)?;
        restrict(&tree)?;
        let at = c_path(at)?;
        self.act(Act::Attach {
            tree: tree.as_raw_fd(),
            at: &at,
        })
    }

    /// Detaches the mount at `at` in dockerd's namespace (`EINVAL` if there is none).
    pub(super) fn detach(&self, at: &Path) -> io::Result<()> {
        let at = c_path(at)?;
        self.act(Act::Detach { at: &at })
    }

    /// dockerd's root (`/proc/<pid>/root`, opened once): paths resolved beneath it are dockerd's.
    pub(super) fn root(&self) -> &OwnedFd {
        &self.root
    }

    /// Runs `act` in a forked child that joined dockerd's namespace.
    fn act(&self, act: Act<'_>) -> io::Result<()> {
        use nix::sys::wait::{WaitStatus, waitpid};
        use nix::unistd::{ForkResult, fork};
        let ns = self.ns.as_raw_fd();
        // SAFETY: between fork and _exit the child makes only raw system calls (setns,
        // move_mount or umount2) and reads errno, all async-signal-safe: it takes no lock and
        // allocates nothing, so the parent's other threads (the runtime, the stdin reader)
        // cannot leave it deadlocked. Its arguments were all prepared before the fork.
        match unsafe { fork() }? {
            // SAFETY: this is the forked child, `ns` and `act`'s descriptors and strings are
            // the parent's, still open and valid in the child's copy of its memory.
            ForkResult::Child => unsafe { libc::_exit(in_child(ns, &act)) },
            ForkResult::Parent { child } => loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                    Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
                    Ok(WaitStatus::Exited(_, code)) if code >= SETNS_FAILED => {
                        let e = io::Error::from_raw_os_error(code - SETNS_FAILED);
                        return Err(io::Error::other(format!(
                            "joining dockerd's mount namespace (pid {}): {e}",
                            self.pid
                        )));
                    }
                    Ok(WaitStatus::Exited(_, errno)) => {
                        return Err(io::Error::from_raw_os_error(errno));
                    }
                    Ok(other) => {
                        return Err(io::Error::other(format!(
                            "the child acting in dockerd's mount namespace ended: {other:?}"
                        )));
                    }
                }
            },
        }
    }
}

/// The forked child's work; returns its exit code. Async-signal-safe calls only.
///
/// # Safety
/// Call only in a child of `fork`, with `ns` and the descriptors and strings of `act` valid.
unsafe fn in_child(ns: RawFd, act: &Act<'_>) -> i32 {
    // SAFETY: errno is thread-local and this thread is the child's only one.
    let errno = || unsafe { *libc::__errno_location() }.clamp(1, 127);
    // SAFETY: `ns` is an open namespace descriptor; the child is single-threaded.
    if unsafe { libc::setns(ns, libc::CLONE_NEWNS) } != 0 {
        return SETNS_FAILED + errno();
    }
    let rc = match act {
        // SAFETY: `tree` is a detached mount's descriptor and `at` a valid C string; the empty
        // string is the path MOVE_MOUNT_F_EMPTY_PATH asks for.
        Act::Attach { tree, at } => unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                *tree,
                c"".as_ptr(),
                libc::AT_FDCWD,
                at.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            )
        },
        // SAFETY: `at` is a valid C string.
        Act::Detach { at } => i64::from(unsafe { libc::umount2(at.as_ptr(), libc::MNT_DETACH) }),
    };
    if rc != 0 { errno() } else { 0 }
}

/// A detached copy of the mount tree at `dir` (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`): a
/// recursive bind mount of exactly the directory the descriptor names, attached nowhere yet.
fn clone_tree(dir: &OwnedFd) -> io::Result<OwnedFd> {
    let flags = libc::OPEN_TREE_CLONE
        | libc::OPEN_TREE_CLOEXEC
        | libc::AT_RECURSIVE as libc::c_uint
        | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: a valid descriptor, a valid empty string, and flags the kernel checks.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), c"".as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd =
        RawFd::try_from(fd).map_err(|_| io::Error::other("open_tree: descriptor out of range"))?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// nosuid and nodev on every mount of a detached tree, which is made private: no setuid program
/// and no device node of the user's directories does anything in the job, and mounts made on the
/// copy reach no other namespace.
fn restrict(tree: &OwnedFd) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: a valid descriptor, a valid empty string, and a `mount_attr` of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FileId = FileId {
        dev: 4,
        ino: 4026531832,
    };
    const B: FileId = FileId {
        dev: 4,
        ino: 4026532179,
    };

    #[test]
    fn staging_is_made_where_dockerd_mounts_or_refused() {
        let no_api = || Err("this kernel has no open_tree".to_string());
        let cases: [(
            &str,
            Result<FileId, String>,
            Result<FileId, String>,
            Result<(), String>,
            Result<Mode, &str>,
        ); 6] = [
            ("one namespace", Ok(A), Ok(A), Ok(()), Ok(Mode::Shared)),
            (
                "one namespace, an old kernel is fine",
                Ok(A),
                Ok(A),
                no_api(),
                Ok(Mode::Shared),
            ),
            (
                "job_container/tmpfs",
                Ok(A),
                Ok(B),
                Ok(()),
                Ok(Mode::Separate),
            ),
            (
                "another namespace and no way in",
                Ok(A),
                Ok(B),
                no_api(),
                Err("job_container/tmpfs"),
            ),
            (
                "dockerd's unknown",
                Ok(A),
                Err("EACCES".into()),
                Ok(()),
                Err("dockerd's mount namespace"),
            ),
            (
                "jobdock's unknown",
                Err("ENOENT".into()),
                Ok(A),
                Ok(()),
                Err("jobdock's own"),
            ),
        ];
        for (name, own, daemon, api, want) in cases {
            match (decide(own, daemon, api), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{name}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{name}: {got}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn this_kernel_can_mount_into_another_namespace() {
        // The test bed's kernel (6.x) has every call; the probe must not mistake EBADF for ENOSYS.
        assert_eq!(new_mount_api(), Ok(()));
    }
}
