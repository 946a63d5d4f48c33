//! Whether a file that steers a root process can be trusted: it, and every directory above it,
//! must be owned by root and writable by nobody else (the checks Sarus makes of its config).
//! Otherwise whoever can write there decides what jobs may do.

use std::path::Path;

use crate::trust::{Above, Expect, NotRootsAlone};

/// `Err` names the first path that is not root-owned or is writable by group or others.
pub fn check_root_owned(path: &Path) -> Result<(), NotRootsAlone> {
    crate::trust::check(path, Expect::File, Above::Strict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    #[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
    fn root_owned_files_in_root_owned_dirs_are_trusted() {
        crate::needs_root();
        let base = Path::new("/var/lib/jobdock-tests");
        std::fs::create_dir_all(base).unwrap();
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("wrapper.toml");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(check_root_owned(&file), Ok(()));

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        let err = check_root_owned(&file).unwrap_err();
        assert!(matches!(err, NotRootsAlone::Writable { .. }), "{err:?}");
        assert!(err.to_string().contains("writable by group or others"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();

        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_root_owned(&file).unwrap_err();
        assert!(
            matches!(&err, NotRootsAlone::Writable { path, .. } if path == dir.path()),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&dir.path().display().to_string()),
            "{err}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

        nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(2001)), None).unwrap();
        let err = check_root_owned(&file).unwrap_err();
        assert!(
            matches!(err, NotRootsAlone::Owner { uid: 2001, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("owned by uid 2001"));
    }

    #[test]
    fn a_config_in_a_world_writable_dir_is_not_trusted() {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let file = dir.path().join("wrapper.toml");
        std::fs::write(&file, "").unwrap();
        // /tmp itself is world-writable (sticky or not): anyone could have swapped the file.
        assert!(check_root_owned(&file).is_err());
        let err = check_root_owned(Path::new("/nonexistent/wrapper.toml")).unwrap_err();
        assert!(matches!(err, NotRootsAlone::Unreadable { .. }), "{err:?}");
        assert!(err.to_string().contains("No such file"), "{err}");
    }
}
