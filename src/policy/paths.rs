//! Which host paths may ever be mounted and which container paths may be mount targets. Lexical
//! checks only: resolving paths on the host (as the job user) is the probe's job.

use std::path::{Component, Path, PathBuf};

/// Host paths no job may see, whatever the config says: the host's own configuration, kernel
/// interfaces, devices, runtime state and the container engine's sockets and storage.
const SENSITIVE: &[&str] = &[
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/run",
    "/boot",
    "/root",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/jobdock",
];

/// Under these not even an admin's site mount may reach: they are the keys to the engine or the
/// kernel. (Admins may mount single files under `/etc` such as `nsswitch.conf`, or `/dev/log`.)
const NEVER: &[&str] = &[
    "/proc",
    "/sys",
    "/boot",
    "/root",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/docker",
    "/var/run/docker",
    "/run/containerd",
    "/var/run/containerd",
    "/run/jobdock",
    "/var/lib/jobdock",
    "/etc/jobdock",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/sudoers.d",
];

/// Who asks for a host path, and so how strictly it is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// A path a user or the job's environment names (volumes, cwd, tmpdir, allowed roots): nothing
    /// at, under or above a sensitive path.
    UserPath,
    /// A mount written by root in the site config: not a sensitive directory itself or anything
    /// above one, and nothing under [`NEVER`].
    SiteMount,
}

/// `a//b/./c/` -> `/a/b/c`, lexically. `..` is kept (and refused by the checks).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => out.push(".."),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn lexically_clean(path: &Path) -> Result<PathBuf, String> {
    let text = path.to_string_lossy();
    if !path.is_absolute() {
        return Err(format!("{text:?} is not an absolute path"));
    }
    if text.chars().any(|c| c.is_control()) {
        return Err(format!("{text:?} contains a control character"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{text:?} contains \"..\""));
    }
    Ok(normalize(path))
}

/// Checks a host path for mounting; `Err` says why not, naming the path.
pub fn check_host_path(path: &Path, strictness: Strictness) -> Result<(), String> {
    let path = lexically_clean(path)?;
    let shown = path.display();
    if path == Path::new("/") {
        return Err(format!("{shown} is the host's root directory"));
    }
    for s in SENSITIVE.iter().map(Path::new) {
        let at_or_under = path.starts_with(s);
        let above = s.starts_with(&path);
        let refused = match strictness {
            Strictness::UserPath => at_or_under || above,
            Strictness::SiteMount => above,
        };
        if refused {
            return Err(format!(
                "{shown} is or contains {}, which jobs may never see",
                s.display()
            ));
        }
    }
    if let Some(s) = NEVER.iter().map(Path::new).find(|s| path.starts_with(s)) {
        return Err(format!(
            "{shown} is under {}, which jobs may never see",
            s.display()
        ));
    }
    Ok(())
}

/// Checks a path inside the container as a mount target.
pub fn check_container_target(path: &Path) -> Result<PathBuf, String> {
    let path = lexically_clean(path)?;
    let shown = path.display();
    if path == Path::new("/") {
        return Err(format!("{shown}: cannot mount over the container's root"));
    }
    for s in ["/proc", "/sys", "/dev"] {
        if path.starts_with(s) {
            return Err(format!("{shown} is under {s}, which the runtime owns"));
        }
    }
    for owned in ["/etc/passwd", "/etc/group"] {
        if path == Path::new(owned) {
            return Err(format!(
                "{shown} is synthesized by jobdock and cannot be replaced"
            ));
        }
    }
    Ok(path)
}

/// True if `path` is `root` or below it, component-wise (`/gpfs2` is not under `/gpfs`).
pub fn is_under(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_paths() {
        let cases = [
            ("/gpfs/lab", true),
            ("/scratch", true),
            ("/home/alice", true),
            ("/", false),
            ("/etc", false),
            ("/etc/ssl", false),
            ("/var", false),
            ("/var/lib", false),
            ("/var/lib/docker/overlay2", false),
            ("/run/docker.sock", false),
            ("/var/run", false),
            ("/proc/1/root", false),
            ("/sys/fs/cgroup", false),
            ("/dev/shm", false),
            ("/root/.ssh", false),
            ("/boot", false),
            ("gpfs/lab", false),
            ("/gpfs/../etc", false),
            ("/gpfs/lab\n/etc", false),
            ("//etc//", false),
            ("/etcetera", true),
            ("/var/tmp", true),
        ];
        for (path, ok) in cases {
            assert_eq!(
                check_host_path(Path::new(path), Strictness::UserPath).is_ok(),
                ok,
                "{path}"
            );
        }
    }

    #[test]
    fn site_mounts_may_reach_single_files_but_never_the_engine() {
        let cases = [
            ("/etc/nsswitch.conf", true),
            ("/var/lib/sss/pipes", true),
            ("/dev/log", true),
            ("/opt/lsf", true),
            ("/etc", false),
            ("/", false),
            ("/var", false),
            ("/var/run/docker.sock", false),
            ("/run/containerd/containerd.sock", false),
            ("/etc/shadow", false),
            ("/etc/jobdock/wrapper.toml", false),
            ("/proc/sys", false),
        ];
        for (path, ok) in cases {
            assert_eq!(
                check_host_path(Path::new(path), Strictness::SiteMount).is_ok(),
                ok,
                "{path}"
            );
        }
    }

    #[test]
    fn container_targets() {
        let cases = [
            ("/data", true),
            ("/etc/nsswitch.conf", true),
            ("/", false),
            ("/proc/sys", false),
            ("/dev/shm", false),
            ("/etc/passwd", false),
            ("/etc//group", false),
            ("data", false),
            ("/data/../proc", false),
        ];
        for (path, ok) in cases {
            assert_eq!(
                check_container_target(Path::new(path)).is_ok(),
                ok,
                "{path}"
            );
        }
    }
}
