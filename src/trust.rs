//! "Root's alone": a file or directory that steers a root process (the site config, the setuid
//! binary, jobdock's state directory) must be owned by root and writable by nobody else, and so
//! must every directory above it, or whoever can write there decides what jobs may do (the checks
//! Sarus makes of its config). One walker for every such check; it reads metadata and nothing else.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a path is not root's alone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotRootsAlone {
    #[error("{}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{} is owned by uid {uid}, not root", path.display())]
    Owner { path: PathBuf, uid: u32 },
    #[error("{} is writable by group or others (mode {mode:o})", path.display())]
    Writable { path: PathBuf, mode: u32 },
    #[error("{} is {what}", path.display())]
    Kind { path: PathBuf, what: &'static str },
}

/// What the checked path must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    File,
    Dir,
}

/// How far up the check goes, and what protects a writable directory on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Above {
    /// Only the path itself (a directory jobdock made, whose parent was checked on its own).
    Nothing,
    /// Every directory up to `/`, none writable by group or others.
    Strict,
    /// Every directory up to `/`; a sticky one (`/tmp`) protects a root-owned entry in it too.
    StickyProtects,
}

/// Checks that `path` (its real path: symlinks followed, except that `path` itself may not be one
/// when `above` is `Nothing`) is `expect` and root's alone, and that so is every directory above
/// it as `above` says.
pub fn check(path: &Path, expect: Expect, above: Above) -> Result<(), NotRootsAlone> {
    let unreadable = |p: &Path, e: std::io::Error| NotRootsAlone::Unreadable {
        path: p.to_path_buf(),
        reason: e.to_string(),
    };
    let real = if above == Above::Nothing {
        let meta = std::fs::symlink_metadata(path).map_err(|e| unreadable(path, e))?;
        if meta.file_type().is_symlink() {
            return Err(NotRootsAlone::Kind {
                path: path.to_path_buf(),
                what: "a symlink; it must be a real directory",
            });
        }
        path.to_path_buf()
    } else {
        std::fs::canonicalize(path).map_err(|e| unreadable(path, e))?
    };
    let meta = std::fs::metadata(&real).map_err(|e| unreadable(&real, e))?;
    match expect {
        Expect::File if !meta.is_file() => {
            return Err(NotRootsAlone::Kind {
                path: real,
                what: "not a regular file",
            });
        }
        Expect::Dir if !meta.is_dir() => {
            return Err(NotRootsAlone::Kind {
                path: real,
                what: "not a directory",
            });
        }
        _ => {}
    }
    let mut current = Some(real.as_path());
    let mut first = true;
    while let Some(p) = current {
        let meta = std::fs::metadata(p).map_err(|e| unreadable(p, e))?;
        let sticky = !first && above == Above::StickyProtects && meta.mode() & 0o1000 != 0;
        if meta.uid() != 0 {
            return Err(NotRootsAlone::Owner {
                path: p.to_path_buf(),
                uid: meta.uid(),
            });
        }
        if meta.mode() & 0o022 != 0 && !sticky {
            return Err(NotRootsAlone::Writable {
                path: p.to_path_buf(),
                mode: meta.mode() & 0o7777,
            });
        }
        if above == Above::Nothing {
            break;
        }
        first = false;
        current = p.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A root-owned 0755 directory to test in (tests run as root in CI; as another user every
    /// path below is that user's, which the walker must refuse all the same).
    fn base() -> tempfile::TempDir {
        let base = Path::new("/var/lib/jobdock-tests");
        let _ = std::fs::create_dir_all(base);
        let _ = std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755));
        let dir = tempfile::tempdir_in(base)
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn each_way_of_not_being_roots_alone_is_named() {
        let root = nix::unistd::geteuid().is_root();
        let dir = base();
        let file = dir.path().join("wrapper.toml");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        if root {
            assert_eq!(check(&file, Expect::File, Above::Strict), Ok(()));
            assert_eq!(check(dir.path(), Expect::Dir, Above::Nothing), Ok(()));
        } else {
            assert!(matches!(
                check(&file, Expect::File, Above::Strict),
                Err(NotRootsAlone::Owner { .. })
            ));
        }
        assert!(matches!(
            check(&file, Expect::Dir, Above::Strict),
            Err(NotRootsAlone::Kind { .. })
        ));
        assert!(matches!(
            check(&dir.path().join("missing"), Expect::File, Above::Strict),
            Err(NotRootsAlone::Unreadable { .. })
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(matches!(
            check(&link, Expect::Dir, Above::Nothing),
            Err(NotRootsAlone::Kind { .. })
        ));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            check(&file, Expect::File, Above::Strict),
            Err(NotRootsAlone::Writable { mode: 0o666, .. }) | Err(NotRootsAlone::Owner { .. })
        ));
    }

    /// /tmp is 1777: it protects a root-owned file in it for the setuid binary's check, never for
    /// the config's.
    #[test]
    #[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
    fn a_sticky_directory_protects_only_where_allowed() {
        crate::needs_root();
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("jobdock");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check(&file, Expect::File, Above::StickyProtects), Ok(()));
        assert!(matches!(
            check(&file, Expect::File, Above::Strict),
            Err(NotRootsAlone::Writable { mode: 0o1777, .. })
        ));
    }
}
