//! The filesystem behind a seam: what the planner needs to know about host paths. The real probe
//! answers every question about a user-named path *as the job user* (in a child process that has
//! dropped to the user's uid, gid and groups), so jobdock never reveals or mounts anything the user
//! could not reach without it.

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Dir,
    File,
    Other,
}

/// A host path resolved as the job user: symlinks followed, `..` gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub path: PathBuf,
    pub kind: Kind,
}

pub trait HostProbe {
    /// Resolves `path` as the job user; `Err` if the user cannot reach it.
    fn resolve(&self, path: &Path) -> Result<Resolved, String>;
    /// Reads a regular file as the job user, refusing anything larger than `max` bytes.
    fn read_file(&self, path: &Path, max: u64) -> Result<String, String>;
    /// Host device nodes matching a glob from the site config (`/dev/infiniband/*`).
    fn devices(&self, glob: &str) -> Vec<PathBuf>;
}

/// The real probe: as the job user when jobdock holds root, directly otherwise.
pub struct AsUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl AsUser {
    /// Runs `f` with the job user's credentials. When jobdock is not root it already *is* the
    /// user (identity comes from the real uid), so `f` runs in-process.
    fn run<T: Serialize + DeserializeOwned>(
        &self,
        f: impl FnOnce() -> Result<T, String>,
    ) -> Result<T, String> {
        if !nix::unistd::geteuid().is_root() {
            return f();
        }
        as_user(self.uid, self.gid, &self.groups, f)
    }
}

impl HostProbe for AsUser {
    fn resolve(&self, path: &Path) -> Result<Resolved, String> {
        self.run(|| resolve_here(path))
    }

    fn read_file(&self, path: &Path, max: u64) -> Result<String, String> {
        self.run(|| read_here(path, max))
    }

    fn devices(&self, glob: &str) -> Vec<PathBuf> {
        expand_glob(glob)
            .into_iter()
            .filter(|p| {
                std::fs::metadata(p).is_ok_and(|m| {
                    m.file_type().is_char_device() || m.file_type().is_block_device()
                })
            })
            .collect()
    }
}

fn resolve_here(path: &Path) -> Result<Resolved, String> {
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = std::fs::metadata(&canonical).map_err(|e| format!("{}: {e}", path.display()))?;
    let kind = if meta.is_dir() {
        Kind::Dir
    } else if meta.is_file() {
        Kind::File
    } else {
        Kind::Other
    };
    if kind == Kind::Dir {
        // Mounting needs the user to be able to enter it, not just see it.
        nix::unistd::access(&canonical, nix::unistd::AccessFlags::X_OK)
            .map_err(|e| format!("{}: cannot enter: {e}", path.display()))?;
    }
    Ok(Resolved {
        path: canonical,
        kind,
    })
}

fn read_here(path: &Path, max: u64) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display();
    // O_NONBLOCK: a FIFO must not hang jobdock; it is refused below as not a regular file.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    if meta.len() > max {
        return Err(format!("{shown}: larger than {max} bytes"));
    }
    let mut text = String::new();
    Read::by_ref(&mut file)
        .take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{shown}: {e}"))?;
    if text.len() as u64 > max {
        return Err(format!("{shown}: larger than {max} bytes"));
    }
    Ok(text)
}

mod libc_flags {
    pub const O_NONBLOCK: i32 = nix::fcntl::OFlag::O_NONBLOCK.bits();
}

/// Expands `*` and `?` in each component of an absolute glob, in sorted order.
pub fn expand_glob(glob: &str) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for part in glob.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for dir in found {
            if !part.contains(['*', '?']) {
                let p = dir.join(part);
                if std::fs::symlink_metadata(&p).is_ok() {
                    next.push(p);
                }
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            names.sort();
            next.extend(
                names
                    .into_iter()
                    .filter(|n| wildcard(part.as_bytes(), n.as_bytes()))
                    .map(|n| dir.join(n)),
            );
        }
        found = next;
    }
    found
}

fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard(&pattern[1..], name) || (!name.is_empty() && wildcard(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => wildcard(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Runs `f` in a forked child that has dropped to `uid`/`gid`/`groups`, and returns its result.
/// jobdock calls this before it starts any thread (planning precedes the async runtime), which is
/// what makes `fork` safe here.
fn as_user<T: Serialize + DeserializeOwned>(
    uid: u32,
    gid: u32,
    groups: &[u32],
    f: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, Gid, Uid, fork, setgroups, setresgid, setresuid};

    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: no other thread exists while planning (see above); the child only makes syscalls,
    // runs `f` (plain file system calls) and exits with `_exit`.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(read_end);
            let gids: Vec<Gid> = groups.iter().copied().map(Gid::from_raw).collect();
            let dropped = setgroups(&gids)
                .and_then(|_| setresgid(Gid::from_raw(gid), Gid::from_raw(gid), Gid::from_raw(gid)))
                .and_then(|_| {
                    setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(uid))
                });
            let result: Result<T, String> = match dropped {
                Ok(()) => f(),
                Err(e) => Err(format!("cannot switch to uid {uid}: {e}")),
            };
            let mut out = std::fs::File::from(write_end);
            let ok = serde_json::to_writer(&mut out, &result).is_ok() && out.flush().is_ok();
            // SAFETY: _exit skips atexit handlers and destructors that belong to the parent.
            unsafe { nix::libc::_exit(if ok { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut buf = Vec::new();
            let read = std::fs::File::from(read_end).read_to_end(&mut buf);
            let status = waitpid(child, None).map_err(|e| format!("waitpid: {e}"))?;
            read.map_err(|e| format!("reading from the probe: {e}"))?;
            if status != WaitStatus::Exited(child, 0) {
                return Err(format!("the probe running as uid {uid} failed: {status:?}"));
            }
            serde_json::from_slice(&buf).map_err(|e| format!("probe answer: {e}"))?
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::collections::BTreeMap;

    /// A file system described by a table: path -> what the user sees there.
    #[derive(Default)]
    pub struct FakeProbe {
        pub paths: BTreeMap<PathBuf, Resolved>,
        pub files: BTreeMap<PathBuf, String>,
        pub devices: BTreeMap<String, Vec<PathBuf>>,
    }

    impl FakeProbe {
        pub fn dir(mut self, path: &str) -> Self {
            self.paths.insert(
                path.into(),
                Resolved {
                    path: path.into(),
                    kind: Kind::Dir,
                },
            );
            self
        }
        pub fn link(mut self, path: &str, target: &str, kind: Kind) -> Self {
            self.paths.insert(
                path.into(),
                Resolved {
                    path: target.into(),
                    kind,
                },
            );
            self
        }
        pub fn file(mut self, path: &str, text: &str) -> Self {
            self.paths.insert(
                path.into(),
                Resolved {
                    path: path.into(),
                    kind: Kind::File,
                },
            );
            self.files.insert(path.into(), text.into());
            self
        }
    }

    impl HostProbe for FakeProbe {
        fn resolve(&self, path: &Path) -> Result<Resolved, String> {
            self.paths
                .get(path)
                .cloned()
                .ok_or_else(|| format!("{}: No such file or directory", path.display()))
        }
        fn read_file(&self, path: &Path, max: u64) -> Result<String, String> {
            let text = self
                .files
                .get(path)
                .ok_or_else(|| format!("{}: not a regular file", path.display()))?;
            if text.len() as u64 > max {
                return Err(format!("{}: larger than {max} bytes", path.display()));
            }
            Ok(text.clone())
        }
        fn devices(&self, glob: &str) -> Vec<PathBuf> {
            self.devices.get(glob).cloned().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard(b"uverbs*", b"uverbs0"));
        assert!(wildcard(b"*", b"rdma_cm"));
        assert!(wildcard(b"umad?", b"umad0"));
        assert!(!wildcard(b"umad?", b"umad10"));
        assert!(!wildcard(b"uverbs*", b"issm0"));
    }

    #[test]
    fn glob_finds_real_devices_only() {
        let probe = AsUser {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        let found = probe.devices("/dev/nul?");
        assert_eq!(found, [PathBuf::from("/dev/null")]);
        assert!(probe.devices("/dev/no-such-dir/*").is_empty());
    }

    #[test]
    fn reads_refuse_non_regular_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "A=1\n").unwrap();
        assert_eq!(read_here(&f, 100).unwrap(), "A=1\n");
        assert!(read_here(&f, 2).unwrap_err().contains("larger than"));
        assert!(read_here(dir.path(), 100).is_err());
        assert!(
            read_here(Path::new("/dev/null"), 100)
                .unwrap_err()
                .contains("not a regular file")
        );
    }

    #[test]
    fn resolve_follows_symlinks_to_the_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let r = resolve_here(&link).unwrap();
        assert_eq!(r.path, std::fs::canonicalize(&real).unwrap());
        assert_eq!(r.kind, Kind::Dir);
    }
}
