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

/// The container's own system directories: no directory of the job or the user is mounted at or
/// under them. A host directory over the image's `/usr` or `/lib` replaces its programs; over
/// `/etc` or `/run` the engine then creates its own mount points (`/etc/hosts`, ...) in it, as
/// root, on the host (and races a symlink swapped in while it does: runc CVE-2024-45310).
pub const SYSTEM_DIRS: &[&str] = &[
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/run",
    "/.jobdock",
];

/// Where dockerd itself mounts files in every container: nothing may be mounted above them.
pub const ENGINE_TARGETS: &[&str] = &[
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/dev/shm",
];

/// Who put a mount in the plan, which decides the rules it is held to and who is blamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MountKind {
    /// jobdock's own files (synthesized passwd and group, the job script), at fixed targets.
    Jobdock,
    /// Written by root in the site config (`mounts.site`).
    Site,
    /// The job's own directories (home, working directory, LSF spool, PMIx, tmpdir).
    Job,
    /// A user volume (`LSB_DOCKER_VOLUMES`).
    Volume,
}

/// One mount of the final list, as the layout rule sees it.
#[derive(Clone, Copy, Debug)]
pub struct Placed<'a> {
    pub source: &'a Path,
    pub target: &'a Path,
    pub kind: MountKind,
}

/// A broken layout rule: which mount (its index in the list) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutError {
    pub index: usize,
    pub reason: String,
}

/// Checks the final mount list: no target twice, no job or user directory at or under the
/// container's [`SYSTEM_DIRS`], and no mount inside another (nor above dockerd's own
/// [`ENGINE_TARGETS`]). The engine mounts the outer one first and then creates the inner mount
/// point in it, on the host, as root, wherever that host directory is, and whoever may not write
/// there. Identity mounts already shown by an outer identity mount must have been dropped before.
/// The mount blamed is the one the user chose most directly (volume, then job, site, jobdock).
pub fn check_layout(mounts: &[Placed<'_>]) -> Result<(), LayoutError> {
    let mut order: Vec<usize> = (0..mounts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(mounts[i].kind));
    for i in order {
        let m = &mounts[i];
        let shown = m.target.display();
        if m.target == Path::new("/") {
            return Err(LayoutError {
                index: i,
                reason: format!("{shown} is the container's root"),
            });
        }
        if matches!(m.kind, MountKind::Job | MountKind::Volume)
            && let Some(dir) = SYSTEM_DIRS.iter().find(|d| m.target.starts_with(d))
        {
            return Err(LayoutError {
                index: i,
                reason: format!(
                    "{shown} is at or under {dir}, a system directory of the container; only \
                     directories elsewhere (/home, /gpfs, /scratch, /data, ...) can be mounted"
                ),
            });
        }
        for e in ENGINE_TARGETS.iter().map(Path::new) {
            if e != m.target && e.starts_with(m.target) {
                return Err(LayoutError {
                    index: i,
                    reason: format!(
                        "{shown} would hold {}, which the engine mounts itself: it would create \
                         that file in {} on the host",
                        e.display(),
                        m.source.display()
                    ),
                });
            }
        }
    }
    for (i, inner) in mounts.iter().enumerate() {
        for (j, outer) in mounts.iter().enumerate() {
            if i == j {
                continue;
            }
            let blame = match inner.kind.cmp(&outer.kind) {
                std::cmp::Ordering::Greater => i,
                std::cmp::Ordering::Less => j,
                std::cmp::Ordering::Equal => i.max(j),
            };
            if inner.target == outer.target {
                return Err(LayoutError {
                    index: blame,
                    reason: format!("{} is mounted twice", inner.target.display()),
                });
            }
            if inner.target.starts_with(outer.target) {
                return Err(LayoutError {
                    index: blame,
                    reason: format!(
                        "{} would be mounted inside {} (from {}): the engine would create the \
                         mount point in that host directory; choose a destination outside every \
                         other mount",
                        inner.target.display(),
                        outer.target.display(),
                        outer.source.display()
                    ),
                });
            }
        }
    }
    Ok(())
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

    /// `(name, mounts as (source, target, kind), Ok or (blamed index, words of the reason))`.
    #[test]
    fn mount_layouts() {
        use MountKind::{Job, Jobdock, Site, Volume};
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str, MountKind)],
            Result<(), (usize, &'static str)>,
        );
        const IDS: [(&str, &str, MountKind); 2] = [
            ("/run/jobdock/x/passwd", "/etc/passwd", Jobdock),
            ("/run/jobdock/x/group", "/etc/group", Jobdock),
        ];
        let cases: &[Case] = &[
            (
                "a normal LSF job",
                &[
                    IDS[0],
                    IDS[1],
                    ("/run/jobdock/x/job.sh", "/.jobdock/job.sh", Jobdock),
                    ("/home/a", "/home/a", Job),
                    ("/tmp/1.tmpdir", "/tmp", Job),
                    ("/opt/lsf", "/opt/lsf", Site),
                    ("/etc/nsswitch.conf", "/etc/nsswitch.conf", Site),
                    ("/gpfs/a", "/data", Volume),
                    ("/scratch/a", "/scratch/a", Volume),
                ],
                Ok(()),
            ),
            (
                "cwd /usr",
                &[IDS[0], ("/usr", "/usr", Job)],
                Err((1, "under /usr, a system directory")),
            ),
            (
                "cwd /usr/local/src",
                &[("/usr/local/src", "/usr/local/src", Job)],
                Err((0, "under /usr")),
            ),
            (
                "volume over /etc",
                &[IDS[0], ("/scratch/a", "/etc", Volume)],
                Err((1, "under /etc")),
            ),
            (
                "volume over /lib64",
                &[("/scratch/a", "/lib64", Volume)],
                Err((0, "/lib64")),
            ),
            (
                "volume over /run",
                &[("/scratch/a", "/run/x", Volume)],
                Err((0, "/run")),
            ),
            (
                "volume over /.jobdock",
                &[("/scratch/a", "/.jobdock", Volume)],
                Err((0, "/.jobdock")),
            ),
            (
                "volume at /",
                &[IDS[0], ("/scratch/a", "/", Volume)],
                Err((1, "container's root")),
            ),
            (
                "a site mount at / (passwd inside it)",
                &[IDS[0], ("/opt/root", "/", Site)],
                Err((1, "container's root")),
            ),
            (
                "a site mount above dockerd's /etc/hosts",
                &[("/opt/etc", "/etc", Site)],
                Err((0, "/etc/hosts")),
            ),
            (
                "a site mount at /etc/hosts itself replaces dockerd's",
                &[("/etc/hosts", "/etc/hosts", Site)],
                Ok(()),
            ),
            (
                "volume inside the cwd mount",
                &[("/usr2", "/usr2", Job), ("/gpfs/a", "/usr2/x", Volume)],
                Err((1, "inside /usr2 (from /usr2)")),
            ),
            (
                "volume inside another volume",
                &[("/gpfs/a", "/data", Volume), ("/gpfs/b", "/data/b", Volume)],
                Err((1, "/data/b would be mounted inside /data")),
            ),
            (
                "volume that holds another volume",
                &[("/gpfs/b", "/data/b", Volume), ("/gpfs/a", "/data", Volume)],
                Err((1, "/data/b would be mounted inside /data")),
            ),
            (
                "volume inside home",
                &[
                    ("/home/a", "/home/a", Job),
                    ("/gpfs/a", "/home/a/x", Volume),
                ],
                Err((1, "inside /home/a")),
            ),
            (
                "volume above home: the home's mount point in the volume",
                &[("/home/a", "/home/a", Job), ("/gpfs/a", "/home", Volume)],
                Err((1, "/home/a would be mounted inside /home (from /gpfs/a)")),
            ),
            (
                "volume inside a site mount",
                &[
                    ("/opt/lsf", "/opt/lsf", Site),
                    ("/gpfs/a", "/opt/lsf/x", Volume),
                ],
                Err((1, "inside /opt/lsf")),
            ),
            (
                "volume at the tmpdir's /tmp",
                &[("/tmp/1.tmpdir", "/tmp", Job), ("/gpfs/a", "/tmp", Volume)],
                Err((1, "mounted twice")),
            ),
            (
                "volume under the tmpdir's /tmp",
                &[
                    ("/tmp/1.tmpdir", "/tmp", Job),
                    ("/gpfs/a", "/tmp/x", Volume),
                ],
                Err((1, "inside /tmp (from /tmp/1.tmpdir)")),
            ),
            (
                "the tmpdir's own path inside its /tmp",
                &[
                    ("/tmp/1.tmpdir", "/tmp", Job),
                    ("/tmp/1.tmpdir", "/tmp/1.tmpdir", Job),
                ],
                Err((1, "inside /tmp")),
            ),
            (
                "a site mount inside a site mount",
                &[("/opt/a", "/opt/a", Site), ("/opt/b", "/opt/a/b", Site)],
                Err((1, "inside /opt/a")),
            ),
            (
                "siblings and prefixes that are not parents",
                &[("/gpfs/a", "/data", Volume), ("/gpfs/b", "/data2", Volume)],
                Ok(()),
            ),
        ];
        for (name, mounts, want) in cases {
            let placed: Vec<Placed<'_>> = mounts
                .iter()
                .map(|(source, target, kind)| Placed {
                    source: Path::new(source),
                    target: Path::new(target),
                    kind: *kind,
                })
                .collect();
            match (check_layout(&placed), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err((index, words))) => {
                    assert_eq!(e.index, *index, "{name}: {}", e.reason);
                    assert!(e.reason.contains(words), "{name}: {}", e.reason);
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
