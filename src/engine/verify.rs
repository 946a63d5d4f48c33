//! Trust, but verify: that what dockerd made is what the plan asked for, checked after create
//! (before the job runs) and again once it runs. After create: the container's stored config
//! (identity, capabilities, namespaces, mounts, devices, limits) equals the plan, and every mount
//! source the user's probe checked still names the same file. After start: the job's credentials
//! as the host's `/proc` shows them, and the directories the container really got. Nothing here
//! decides or repairs anything: a difference is an error, and the engine removes the container.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::engine::EngineError;
use crate::engine::daemon::{ContainerFile, Daemon, DeviceSeen, Effective, MountSeen, PathKind};
use crate::engine::mountns::{self, Placement};
use crate::plan::{ContainerPlan, MountPlan};
use crate::probe::FileId;
use crate::units::Capability;

/// The host as the engine sees it (as root): behind a seam so the checks can be tested with a fake.
/// Paths are jobdock's (its mount namespace: what the user sees, and the probe checked) unless a
/// method says they are dockerd's; the two differ under Slurm's job_container/tmpfs (`mountns`).
pub(super) trait Host {
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

/// Directories of kernel interfaces a job's working directory must never be in (an image's
/// `WORKDIR /proc/self/fd/7` is the runc escape CVE-2024-21626).
const KERNEL_DIRS: &[&str] = &["/proc", "/sys", "/dev"];

/// After create, before start: the container dockerd stored is `plan` (as dockerd got it: with its
/// staged mount sources), the mount sources the user's probe checked (`checked`'s) still name the
/// same files, and so do the staging mounts. `Err` leaves the container to be removed.
pub(super) async fn created<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    checked: &ContainerPlan,
    id: &str,
    host: &dyn Host,
) -> Result<(), EngineError> {
    #[cfg(debug_assertions)]
    test_delay().await;
    let state = d
        .inspect(id)
        .await
        .map_err(|e| EngineError::daemon("inspecting the created container", e))?;
    let differences = compare(plan, &state.effective);
    if !differences.is_empty() {
        return Err(EngineError::Tampered {
            when: "as created",
            differences,
        });
    }
    if plan.working_dir.is_none()
        && let Some(dir) = KERNEL_DIRS
            .iter()
            .find(|k| Path::new(&state.effective.working_dir).starts_with(k))
    {
        return Err(EngineError::ImageRefused {
            image: plan.image.to_string(),
            reason: format!(
                "its WORKDIR {} is under {dir}; a job may not start in the kernel's interfaces",
                state.effective.working_dir
            ),
        });
    }
    image_agrees(d, plan, &state.effective.image).await?;
    // The user's paths: a swap since the check gains nothing (the container gets the pinned
    // directory), but it is refused as what it is.
    for (source, pin) in &checked.pins {
        match host.stat(source) {
            Ok(now) if now == *pin => {}
            Ok(now) => {
                return Err(EngineError::MountChanged {
                    path: source.clone(),
                    reason: format!(
                        "it names another file than when jobdock checked it ({now}, was {pin}): \
                         was it replaced, or a symlink swapped in?"
                    ),
                });
            }
            Err(e) => {
                return Err(EngineError::MountChanged {
                    path: source.clone(),
                    reason: format!("it is gone since jobdock checked it ({e})"),
                });
            }
        }
    }
    // What dockerd will mount: the staging mounts as dockerd sees them, in its mount namespace.
    for (staged, pin) in plan
        .pins
        .iter()
        .filter(|(s, _)| !checked.pins.contains_key(*s))
    {
        match host.daemon_stat(staged) {
            Ok(now) if now == *pin => {}
            seen => {
                let seen = seen.map_or_else(|e| e.to_string(), |s| s.to_string());
                return Err(EngineError::MountNamespace {
                    reason: format!(
                        "dockerd sees {seen} at the staging mount {}, not the checked directory \
                         ({pin}): is jobdock in another mount namespace (Slurm's \
                         job_container/tmpfs) that it could not stage into?",
                        staged.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Debug builds only: waits `JOBDOCK_TEST_DELAY_BEFORE_VERIFY_MS` (at most 30 s) between create and
/// the checks, so that tests can swap a mount source in that window deterministically. Release
/// builds have no such variable.
#[cfg(debug_assertions)]
async fn test_delay() {
    if let Some(ms) = std::env::var("JOBDOCK_TEST_DELAY_BEFORE_VERIFY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(30_000))).await;
    }
}

/// Largest image `/etc/group` jobdock reads.
const MAX_GROUP_FILE: u64 = 1 << 20;

/// What the image itself holds, read from an inert container of it (the job's own shows
/// jobdock's mounts, and dockerd mounts them to answer): its mount points (`mount_points_agree`)
/// and its `/etc/group` (`groups_agree`).
async fn image_agrees<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    image: &str,
) -> Result<(), EngineError> {
    let inert = d
        .create_inert(image, &format!("{}-image", plan.name), &plan.labels)
        .await
        .map_err(|e| EngineError::daemon("creating a container to read the image's files", e))?;
    let checked = async {
        mount_points_agree(d, plan, &inert).await?;
        groups_agree(d, plan, &inert).await
    }
    .await;
    if let Err(e) = crate::engine::run::remove_container(d, &inert).await {
        tracing::warn!("removing the image-reading container {inert}: {e}");
    }
    checked
}

/// The files dockerd itself mounts into every container (runc creates each where the image's
/// path leads, unless a planned mount is there already).
const DAEMON_FILES: &[&str] = &["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

/// What a planned mount needs at its target in the image.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    Directory,
    File,
    /// A site mount: jobdock does not know which.
    Either,
}

/// No mount may make the engine create anything on the host (issue 11.2), and the plan cannot see
/// the image: runc follows the image's symlinks when it makes a mount point, so a volume at
/// `/data` in an image where `/data -> /etc` lands on the container's `/etc`, and runc then makes
/// `/etc/hosts` (and the others) in the user's host directory, as root. So every component of
/// every planned target must be, in the image, a directory or nothing (runc then makes it in the
/// container's own layer), never a symlink, and the target itself of the kind that is mounted
/// there; and dockerd's own files must not lead into a planned mount. Refuses otherwise (64).
async fn mount_points_agree<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    inert: &str,
) -> Result<(), EngineError> {
    let refuse = |reason: String| EngineError::ImageRefused {
        image: plan.image.to_string(),
        reason,
    };
    let mut kinds = std::collections::BTreeMap::new();
    for m in &plan.mounts {
        let needs = if plan.pins.contains_key(&m.source) {
            Needs::Directory
        } else if [&plan.staging.passwd, &plan.staging.group]
            .into_iter()
            .chain(plan.staging.script.as_ref())
            .any(|f| *f == m.source)
        {
            Needs::File
        } else {
            Needs::Either
        };
        let parts: Vec<_> = m.target.iter().skip(1).collect();
        let mut at = PathBuf::from("/");
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            let last = i + 1 == parts.len();
            let kind = stat_cached(d, inert, &at, &mut kinds).await?;
            let target = m.target.display();
            let here = at.display();
            match (kind, needs) {
                // Missing: runc makes it, and all below it, in the container's own layer.
                (None, _) => break,
                (Some(PathKind::Symlink(to)), _) => {
                    return Err(refuse(format!(
                        "{here} is a symbolic link to {to} in the image, on the way to the \
                         mount at {target}: the mount would land where it points (and the \
                         engine could create files in the host directory mounted there); use \
                         an image without it, or another destination"
                    )));
                }
                (Some(PathKind::Directory), _) if !last => {}
                (Some(PathKind::Directory), Needs::Directory | Needs::Either)
                | (Some(PathKind::Regular), Needs::File | Needs::Either)
                    if last => {}
                (Some(kind), _) => {
                    let what = if last && needs == Needs::File {
                        "a file"
                    } else {
                        "a directory"
                    };
                    return Err(refuse(format!(
                        "{here} is {} in the image, where the mount at {target} needs {what}",
                        describe(&kind)
                    )));
                }
            }
        }
    }
    for file in DAEMON_FILES {
        if plan.mounts.iter().any(|m| m.target == Path::new(file)) {
            continue;
        }
        let Some(leads_to) = resolve_in_image(d, inert, Path::new(file), &mut kinds).await? else {
            continue; // a symlink loop: runc fails to start the container, which creates nothing
        };
        if let Some(m) = plan.mounts.iter().find(|m| leads_to.starts_with(&m.target)) {
            return Err(refuse(format!(
                "its {file} leads to {} (through a symbolic link), inside the mount at {}: the \
                 engine would create it in the host directory mounted there",
                leads_to.display(),
                m.target.display()
            )));
        }
    }
    Ok(())
}

fn describe(kind: &PathKind) -> &'static str {
    match kind {
        PathKind::Directory => "a directory",
        PathKind::Regular => "a regular file",
        PathKind::Symlink(_) => "a symbolic link",
        PathKind::Other => "neither a directory nor a regular file (or its symlinks loop)",
    }
}

/// `stat_path` of the inert container, each path asked once.
async fn stat_cached<D: Daemon>(
    d: &D,
    inert: &str,
    path: &Path,
    kinds: &mut std::collections::BTreeMap<PathBuf, Option<PathKind>>,
) -> Result<Option<PathKind>, EngineError> {
    if let Some(kind) = kinds.get(path) {
        return Ok(kind.clone());
    }
    let kind = d
        .stat_path(inert, &path.display().to_string())
        .await
        .map_err(|e| EngineError::daemon("reading the image's mount points", e))?;
    kinds.insert(path.to_path_buf(), kind.clone());
    Ok(kind)
}

/// Where `path` leads in the image, every symlink followed inside its root as runc does (a missing
/// part, and all after it, taken as it is); `None` if its symlinks loop (more than 40).
async fn resolve_in_image<D: Daemon>(
    d: &D,
    inert: &str,
    path: &Path,
    kinds: &mut std::collections::BTreeMap<PathBuf, Option<PathKind>>,
) -> Result<Option<PathBuf>, EngineError> {
    use std::path::Component;
    let mut todo: std::collections::VecDeque<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut at = PathBuf::from("/");
    let mut links = 0;
    let mut missing = false;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&part);
        let kind = if missing {
            None
        } else {
            stat_cached(d, inert, &next, kinds).await?
        };
        match kind {
            Some(PathKind::Symlink(to)) => {
                links += 1;
                if links > 40 {
                    return Ok(None);
                }
                let to = Path::new(&to);
                if to.is_absolute() {
                    at = PathBuf::from("/");
                }
                for c in to.components().rev() {
                    match c {
                        Component::Normal(p) => todo.push_front(p.to_os_string()),
                        Component::ParentDir => todo.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            None => {
                missing = true;
                at = next;
            }
            Some(_) => at = next,
        }
    }
    Ok(Some(at))
}

/// dockerd resolves each `GroupAdd` entry in the *image's* `/etc/group` (not the one jobdock mounts
/// over it), by name before number: a group *named* `3001` with gid 0 turns the job's group 3001
/// into root's group. Refuses an image whose group file would change any of the job's gids.
async fn groups_agree<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    inert: &str,
) -> Result<(), EngineError> {
    if plan.group_add.is_empty() {
        return Ok(());
    }
    let read = read_following_links(d, inert, "/etc/group").await;
    let refuse = |reason: String| EngineError::ImageRefused {
        image: plan.image.to_string(),
        reason,
    };
    let text = match read.map_err(|e| EngineError::daemon("reading the image's /etc/group", e))? {
        None => return Ok(()),
        Some(ContainerFile::Regular(bytes)) => bytes,
        Some(ContainerFile::TooLarge) => {
            return Err(refuse(format!(
                "its /etc/group is larger than {MAX_GROUP_FILE} bytes; jobdock cannot check \
                 which groups dockerd would give the job"
            )));
        }
        Some(ContainerFile::Symlink(_) | ContainerFile::NotRegular) => {
            return Err(refuse(
                "its /etc/group is not a regular file (or a chain of symlinks to one); jobdock \
                 cannot check which groups dockerd would give the job"
                    .into(),
            ));
        }
    };
    match conflicting_group(&text, &plan.group_add) {
        None => Ok(()),
        Some((gid, name, other)) => Err(refuse(format!(
            "its /etc/group has a group named {name:?} with gid {other}: dockerd would give the \
             job gid {other} instead of its group {gid}"
        ))),
    }
}

/// `read_file`, following symlinks (as dockerd does when it resolves a path in the container, all
/// inside the container's root) up to 8 times.
async fn read_following_links<D: Daemon>(
    d: &D,
    id: &str,
    path: &str,
) -> Result<Option<ContainerFile>, crate::engine::DaemonError> {
    let mut path = std::path::PathBuf::from(path);
    for _ in 0..8 {
        let text = path.display().to_string();
        match d.read_file(id, &text, MAX_GROUP_FILE).await? {
            Some(ContainerFile::Symlink(target)) => {
                let base = path.parent().unwrap_or(Path::new("/")).to_path_buf();
                path = clean(&base.join(target));
            }
            other => return Ok(other),
        }
    }
    Ok(Some(ContainerFile::NotRegular))
}

/// `/etc/../x/./y` -> `/x/y`, lexically, never above `/` (a container's root is its `/`).
fn clean(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The first of `gids` that a group file names as another group, as runc's parser reads it
/// (lines trimmed, `#` comments, a gid that does not parse is 0): `(gid, name, its gid)`.
fn conflicting_group(text: &[u8], gids: &[u32]) -> Option<(u32, String, i64)> {
    for line in text.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let mut fields = line.split(|&b| b == b':');
        let name = fields.next().unwrap_or_default();
        let gid_field = fields.nth(1).unwrap_or_default();
        let other: i64 = std::str::from_utf8(gid_field)
            .ok()
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        if let Some(&gid) = gids
            .iter()
            .find(|g| name == g.to_string().as_bytes() && i64::from(**g) != other)
        {
            return Some((gid, String::from_utf8_lossy(name).into_owned(), other));
        }
    }
    None
}

/// After start: the job's init runs with exactly the plan's ids, groups and capabilities, with
/// no-new-privileges, and sees at each mount point the directory the user's probe checked. A job
/// that has already ended cannot be checked (and can no longer be stopped); that is logged.
pub(super) async fn started<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    id: &str,
    host: &dyn Host,
) -> Result<(), EngineError> {
    let state = d
        .inspect(id)
        .await
        .map_err(|e| EngineError::daemon("inspecting the started container", e))?;
    if !state.running || state.pid == 0 {
        tracing::debug!("the job ended before its credentials could be checked");
        return Ok(());
    }
    let pid = state.pid;
    let status = match host.status(pid) {
        Ok(text) => text,
        // ENOENT, or ESRCH from a process that is exiting.
        Err(_) if !host.alive(pid) => {
            tracing::debug!("the job (pid {pid}) ended before its credentials could be checked");
            return Ok(());
        }
        Err(e) => {
            return Err(EngineError::Internal(format!(
                "reading /proc/{pid}/status: {e}"
            )));
        }
    };
    let mut differences = check_status(plan, &status);
    let mut swapped = None;
    for m in &plan.mounts {
        let Some(pin) = plan.pins.get(&m.source) else {
            continue;
        };
        match host.stat_in_root(pid, &m.target) {
            Ok(seen) if seen == *pin => {}
            seen => {
                let seen = seen.map_or_else(|e| e.to_string(), |s| s.to_string());
                // The host path changed: the user's doing. Unchanged: the container got something
                // else from the same path (another mount namespace, a rewritten request).
                if host.daemon_stat(&m.source).ok() != Some(*pin) {
                    swapped.get_or_insert((m.source.clone(), seen));
                } else {
                    differences.push(format!(
                        "{} shows {seen}, not {} ({pin}): does jobdock run in dockerd's mount \
                         namespace?",
                        m.target.display(),
                        m.source.display()
                    ));
                }
            }
        }
    }
    if differences.is_empty() && swapped.is_none() {
        return Ok(());
    }
    // Evidence against the job holds only if it was read from the job: still running as that
    // pid (not a reused one) and not exiting (an exiting process has no root to look into).
    let again = d
        .inspect(id)
        .await
        .map_err(|e| EngineError::daemon("inspecting the started container", e))?;
    if !again.running || again.pid != pid || !host.alive(pid) {
        tracing::debug!("the job ended while its credentials were checked");
        return Ok(());
    }
    if let Some((path, seen)) = swapped {
        return Err(EngineError::MountChanged {
            path,
            reason: format!("the container got another directory ({seen}); it was swapped"),
        });
    }
    if !differences.is_empty() {
        return Err(EngineError::Tampered {
            when: "running",
            differences,
        });
    }
    Ok(())
}

/// Every field of the stored container that differs from the plan, described.
pub(super) fn compare(plan: &ContainerPlan, e: &Effective) -> Vec<String> {
    let mut out = Vec::new();
    let mut same =
        |what: &str, seen: &dyn std::fmt::Debug, want: &dyn std::fmt::Debug, ok: bool| {
            if !ok {
                out.push(format!("{what} is {seen:?}, the plan says {want:?}"));
            }
        };
    let user = format!("{}:{}", plan.user.0, plan.user.1);
    same("User", &e.user, &user, e.user == user);
    if let Some(dir) = &plan.working_dir {
        let want = dir.display().to_string();
        same("WorkingDir", &e.working_dir, &want, e.working_dir == want);
    }
    let groups: BTreeSet<String> = plan.group_add.iter().map(u32::to_string).collect();
    let seen: BTreeSet<String> = e.group_add.iter().cloned().collect();
    same(
        "GroupAdd",
        &e.group_add,
        &groups,
        seen == groups && e.group_add.len() == groups.len(),
    );
    let caps: BTreeSet<String> = plan.cap_add.iter().map(|c| c.docker_name()).collect();
    let seen: Result<BTreeSet<String>, String> = e.cap_add.iter().map(|c| cap_name(c)).collect();
    same("CapAdd", &e.cap_add, &caps, seen.as_ref() == Ok(&caps));
    let crate::plan::Hardening {
        cap_drop,
        privileged,
        init,
        log_driver,
        healthcheck,
        restart,
    } = plan.hardening;
    let drop_all = e.cap_drop.len() == 1 && e.cap_drop[0].eq_ignore_ascii_case(cap_drop);
    same("CapDrop", &e.cap_drop, &[cap_drop], drop_all);
    same(
        "Privileged",
        &e.privileged,
        &privileged,
        e.privileged == privileged,
    );
    same("Init", &e.init, &init, e.init == init);
    same(
        "LogConfig.Type",
        &e.log_driver,
        &log_driver,
        e.log_driver == log_driver,
    );
    let opts: BTreeSet<&String> = plan.security_opt.iter().collect();
    let seen: BTreeSet<&String> = e.security_opt.iter().collect();
    same(
        "SecurityOpt",
        &e.security_opt,
        &plan.security_opt,
        seen == opts && e.security_opt.len() == opts.len(),
    );
    same("PidMode", &e.pid_mode, &"", e.pid_mode.is_empty());
    same("UsernsMode", &e.userns_mode, &"", e.userns_mode.is_empty());
    same("UTSMode", &e.uts_mode, &"", e.uts_mode.is_empty());
    same("IpcMode", &e.ipc_mode, &plan.ipc, e.ipc_mode == plan.ipc);
    same(
        "NetworkMode",
        &e.network_mode,
        &plan.network,
        e.network_mode == plan.network,
    );
    let parent = plan.cgroup_parent.clone().unwrap_or_default();
    same(
        "CgroupParent",
        &e.cgroup_parent,
        &parent,
        e.cgroup_parent == parent,
    );
    let none: &[String] = &[];
    same("Binds", &e.binds, &none, e.binds.is_empty());
    same(
        "VolumesFrom",
        &e.volumes_from,
        &none,
        e.volumes_from.is_empty(),
    );
    same(
        "DeviceCgroupRules",
        &e.device_cgroup_rules,
        &none,
        e.device_cgroup_rules.is_empty(),
    );
    same("Sysctls", &e.sysctls, &none, e.sysctls.is_empty());
    same(
        "MaskedPaths",
        &e.masked_paths,
        &"dockerd's defaults",
        !e.masked_paths.is_empty(),
    );
    same(
        "ReadonlyPaths",
        &e.readonly_paths,
        &"dockerd's defaults (with /proc/sys)",
        e.readonly_paths.iter().any(|p| p == "/proc/sys"),
    );
    same("OomScoreAdj", &e.oom_score_adj, &0, e.oom_score_adj >= 0);
    same(
        "OomKillDisable",
        &e.oom_kill_disable,
        &false,
        !e.oom_kill_disable,
    );
    let memory = plan.memory.api();
    same("Memory", &e.memory, &memory, e.memory == memory);
    same(
        "MemorySwap",
        &e.memory_swap,
        &memory,
        e.memory_swap == memory,
    );
    same(
        "PidsLimit",
        &e.pids_limit,
        &plan.pids_limit,
        e.pids_limit == plan.pids_limit,
    );
    let ulimits: BTreeSet<(String, i64, i64)> = plan
        .ulimits
        .iter()
        .map(|u| (u.name.to_string(), u.soft, u.hard))
        .collect();
    let seen: BTreeSet<(String, i64, i64)> = e.ulimits.iter().cloned().collect();
    same(
        "Ulimits",
        &e.ulimits,
        &ulimits,
        seen == ulimits && e.ulimits.len() == ulimits.len(),
    );
    let devices: BTreeSet<DeviceSeen> = plan
        .devices
        .iter()
        .map(|d| DeviceSeen {
            on_host: d.display().to_string(),
            in_container: d.display().to_string(),
            permissions: "rwm".into(),
        })
        .collect();
    let seen: BTreeSet<DeviceSeen> = e.devices.iter().cloned().collect();
    same(
        "Devices",
        &e.devices,
        &devices,
        seen == devices && e.devices.len() == devices.len(),
    );
    let requests: Vec<Vec<String>> = if plan.gpus.is_empty() {
        Vec::new()
    } else {
        vec![plan.gpus.clone()]
    };
    same(
        "DeviceRequests",
        &e.device_requests,
        &requests,
        e.device_requests == requests,
    );
    // No process but the job's own may ever start in the container (HARDENING says why).
    let check = [healthcheck.to_string()];
    same(
        "Healthcheck.Test",
        &e.healthcheck,
        &check,
        e.healthcheck == check,
    );
    // dockerd stores an empty name for its default, which is no restart as well.
    let restart_ok =
        e.restart_policy == restart || (restart == "no" && e.restart_policy.is_empty());
    same("RestartPolicy", &e.restart_policy, &restart, restart_ok);
    out.extend(compare_mounts(&plan.mounts, &e.mounts));
    out
}

/// The container's mounts are exactly the plan's binds (source, target, read-only, private
/// propagation), plus any anonymous volume the image declares (a fresh directory of dockerd's:
/// nothing of the host's).
fn compare_mounts(plan: &[MountPlan], seen: &[MountSeen]) -> Vec<String> {
    let mut out = Vec::new();
    let mut wanted: Vec<&MountPlan> = plan.iter().collect();
    for m in seen {
        match m.typ.as_str() {
            "bind" => {
                let found = wanted.iter().position(|p| {
                    p.source.display().to_string() == m.source
                        && p.target.display().to_string() == m.destination
                        && p.readonly != m.rw
                });
                match found {
                    Some(i) => {
                        wanted.remove(i);
                        if m.propagation != "rprivate" {
                            out.push(format!(
                                "mount {} has propagation {:?}, the plan says \"rprivate\"",
                                m.destination, m.propagation
                            ));
                        }
                    }
                    None => out.push(format!(
                        "mount {} -> {} ({}) is not in the plan",
                        m.source,
                        m.destination,
                        if m.rw { "rw" } else { "ro" }
                    )),
                }
            }
            "volume" if !plan.iter().any(|p| p.target == Path::new(&m.destination)) => {}
            other => out.push(format!(
                "mount {} of type {other:?} ({}) is not in the plan",
                m.destination, m.source
            )),
        }
    }
    for p in wanted {
        out.push(format!(
            "mount {} -> {} is missing",
            p.source.display(),
            p.target.display()
        ));
    }
    out
}

/// `CAP_SYS_NICE`, `SYS_NICE` or `sys_nice` as dockerd's canonical `CAP_SYS_NICE`; unknown names
/// are an error (they cannot be compared).
fn cap_name(name: &str) -> Result<String, String> {
    name.parse::<Capability>().map(|c| c.docker_name())
}

/// The bit of `c` in a `/proc/<pid>/status` capability mask (the enum is in kernel order).
fn cap_bit(c: Capability) -> u64 {
    1 << (c as u32)
}

/// Every credential of the job's init (from `/proc/<pid>/status`) that the plan does not allow.
pub(super) fn check_status(plan: &ContainerPlan, status: &str) -> Vec<String> {
    let mut out = Vec::new();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let numbers = |name: &str| -> Option<Vec<u64>> {
        field(name)?
            .split_whitespace()
            .map(|n| n.parse().ok())
            .collect()
    };
    let (uid, gid) = (u64::from(plan.user.0), u64::from(plan.user.1));
    for (name, want) in [("Uid", uid), ("Gid", gid)] {
        match numbers(name) {
            Some(ids) if ids.len() == 4 && ids.iter().all(|&i| i == want) => {}
            other => out.push(format!(
                "the job's {name} (real, effective, saved, fs) is {other:?}, the plan says {want}"
            )),
        }
    }
    let planned: BTreeSet<u64> = plan.group_add.iter().map(|&g| u64::from(g)).collect();
    match numbers("Groups") {
        Some(groups) => {
            let groups: BTreeSet<u64> = groups.into_iter().collect();
            let extra: Vec<&u64> = groups
                .iter()
                .filter(|g| **g != gid && !planned.contains(g))
                .collect();
            let missing: Vec<&u64> = planned.difference(&groups).collect();
            if !extra.is_empty() || !missing.is_empty() {
                out.push(format!(
                    "the job's groups are {groups:?}, the plan says {planned:?} (extra {extra:?}, \
                     missing {missing:?})"
                ));
            }
        }
        None => out.push("the job's Groups are unreadable".into()),
    }
    let allowed = plan.cap_add.iter().fold(0u64, |m, &c| m | cap_bit(c));
    for name in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let mask = field(name).and_then(|v| u64::from_str_radix(v, 16).ok());
        let ok = match (name, mask) {
            ("CapBnd", Some(m)) => m == allowed,
            (_, Some(m)) => m & !allowed == 0,
            (_, None) => false,
        };
        if !ok {
            out.push(format!(
                "the job's {name} is {}, the allowlist is {allowed:016x}",
                mask.map_or("unreadable".to_string(), |m| format!("{m:016x}"))
            ));
        }
    }
    if plan.security_opt.iter().any(|o| o == "no-new-privileges")
        && field("NoNewPrivs") != Some("1")
    {
        out.push(format!(
            "the job's NoNewPrivs is {:?}, the plan says 1",
            field("NoNewPrivs")
        ));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
