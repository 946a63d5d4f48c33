//! Trust, but verify: that what dockerd made is what the plan asked for, checked after create
//! (before the job runs) and again once it runs. After create: the container's stored config
//! (identity, capabilities, namespaces, mounts, devices, limits) equals the plan, and every mount
//! source the user's probe checked still names the same file. After start: the job's credentials
//! as the host's `/proc` shows them, and the directories the container really got. Nothing here
//! decides or repairs anything: a difference is an error, and the engine removes the container.

use std::path::{Path, PathBuf};

use crate::engine::EngineError;
use crate::engine::daemon::{ContainerFile, Daemon, PathKind};
use crate::engine::host::Host;
use crate::plan::ContainerPlan;

/// Directories of kernel interfaces a job's working directory must never be in (an image's
/// `WORKDIR /proc/self/fd/7` is the runc escape CVE-2024-21626).
const KERNEL_DIRS: &[&str] = &["/proc", "/sys", "/dev"];

/// After create, before start: the container dockerd stored is `plan` (as dockerd got it: with its
/// staged mount sources), the mount sources the user's probe checked (`checked`'s) still name the
/// same files, and so do the staging mounts. `Err` leaves the container to be removed.
///
/// Returns the inert container the image's files were read from, if one was made: it guards
/// nothing, and the caller removes it once the job has started (or with the job's, on failure).
pub(super) async fn created<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    checked: &ContainerPlan,
    id: &str,
    host: &dyn Host,
    state_dir: &Path,
) -> Result<Option<String>, EngineError> {
    if let Some(pause) = host.pause_before_checks() {
        tokio::time::sleep(pause).await;
    }
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
        return Err(EngineError::UnsafeImage {
            image: plan.image.to_string(),
            reason: format!(
                "its WORKDIR {} is under {dir}; a job may not start in the kernel's interfaces",
                state.effective.working_dir
            ),
        });
    }
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
    // Last: what it returns must be removed by the caller.
    image_agrees(d, plan, &state.effective.image, state_dir).await
}

/// Largest image `/etc/group` jobdock reads.
const MAX_GROUP_FILE: u64 = 1 << 20;

/// What the image itself holds, read from an inert container of it (the job's own shows
/// jobdock's mounts, and dockerd mounts them to answer): its mount points (`mount_points_agree`)
/// and its `/etc/group` (`groups_agree`). A pass is kept per image id (`cache`), and a later job
/// with the same key reads nothing. Returns the inert container, if one was made, for the caller
/// to remove; on a refusal it is removed here.
async fn image_agrees<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    image: &str,
    state_dir: &Path,
) -> Result<Option<String>, EngineError> {
    let mounts: Vec<(PathBuf, &'static str)> = plan
        .mounts
        .iter()
        .map(|m| (m.target.clone(), needs_of(plan, &m.source).name()))
        .collect();
    let key = cache::Key::new(state_dir, image, &mounts, &plan.group_add, MAX_GROUP_FILE);
    if key.as_ref().is_some_and(cache::Key::passed) {
        tracing::debug!("the image {image} passed its checks for these mounts and groups before");
        return Ok(None);
    }
    let inert = d
        .create_inert(image, &format!("{}-image", plan.name), &plan.labels)
        .await
        .map_err(|e| EngineError::daemon("creating a container to read the image's files", e))?;
    let checked = async {
        mount_points_agree(d, plan, &inert).await?;
        groups_agree(d, plan, &inert).await
    }
    .await;
    match checked {
        Ok(()) => {
            if let Some(key) = key {
                key.record();
            }
            Ok(Some(inert))
        }
        Err(e) => {
            remove_inert(d, &inert).await;
            Err(e)
        }
    }
}

/// Removes the container `image_agrees` read the image from; a failure is only logged (its
/// labels let `jobdock cleanup` find it).
pub(super) async fn remove_inert<D: Daemon>(d: &D, inert: &str) {
    if let Err(e) = crate::engine::daemon::remove_container(d, inert).await {
        tracing::warn!("removing the image-reading container {inert}: {e}");
    }
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

impl Needs {
    /// As the check cache's key names it.
    fn name(self) -> &'static str {
        match self {
            Needs::Directory => "directory",
            Needs::File => "file",
            Needs::Either => "either",
        }
    }
}

/// What the mount of `source` needs at its target: a directory for the user's pinned ones, a file
/// for jobdock's staged files, either for a site's.
fn needs_of(plan: &ContainerPlan, source: &Path) -> Needs {
    if plan.pins.contains_key(source) {
        Needs::Directory
    } else if [&plan.staging.passwd, &plan.staging.group]
        .into_iter()
        .chain(plan.staging.script.as_ref())
        .chain(
            plan.staging
                .fifos
                .iter()
                .flat_map(|f| [&f.stdout, &f.stderr]),
        )
        .any(|f| f == source)
    {
        Needs::File
    } else {
        Needs::Either
    }
}

/// No mount may make the engine create anything on the host (issue 11.2), and the plan cannot see
/// the image: runc follows the image's symlinks when it makes a mount point, so a volume at
/// `/data` in an image where `/data -> /etc` lands on the container's `/etc`, and runc then makes
/// `/etc/hosts` (and the others) in the user's host directory, as root. So every component of
/// every planned target must be, in the image, a directory or nothing (runc then makes it in the
/// container's own layer), never a symlink, and the target itself of the kind that is mounted
/// there; and dockerd's own files must not lead into a planned mount. Fails otherwise (64).
async fn mount_points_agree<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    inert: &str,
) -> Result<(), EngineError> {
    let unsafe_image = |reason: String| EngineError::UnsafeImage {
        image: plan.image.to_string(),
        reason,
    };
    let mut kinds = std::collections::BTreeMap::new();
    for m in &plan.mounts {
        let needs = needs_of(plan, &m.source);
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
                    return Err(unsafe_image(format!(
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
                    return Err(unsafe_image(format!(
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
            return Err(unsafe_image(format!(
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
/// into root's group. Fails for an image whose group file would change any of the job's gids.
async fn groups_agree<D: Daemon>(
    d: &D,
    plan: &ContainerPlan,
    inert: &str,
) -> Result<(), EngineError> {
    if plan.group_add.is_empty() {
        return Ok(());
    }
    let read = read_following_links(d, inert, "/etc/group").await;
    let unsafe_image = |reason: String| EngineError::UnsafeImage {
        image: plan.image.to_string(),
        reason,
    };
    let text = match read.map_err(|e| EngineError::daemon("reading the image's /etc/group", e))? {
        None => return Ok(()),
        Some(ContainerFile::Regular(bytes)) => bytes,
        Some(ContainerFile::TooLarge) => {
            return Err(unsafe_image(format!(
                "its /etc/group is larger than {MAX_GROUP_FILE} bytes; jobdock cannot check \
                 which groups dockerd would give the job"
            )));
        }
        Some(ContainerFile::Symlink(_) | ContainerFile::NotRegular) => {
            return Err(unsafe_image(
                "its /etc/group is not a regular file (or a chain of symlinks to one); jobdock \
                 cannot check which groups dockerd would give the job"
                    .into(),
            ));
        }
    };
    match conflicting_group(&text, &plan.group_add) {
        None => Ok(()),
        Some((gid, name, other)) => Err(unsafe_image(format!(
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

mod cache;
mod compare;
pub(crate) use cache::forget;
pub(super) use compare::{check_status, compare};
use compare::{clean, conflicting_group};

#[cfg(test)]
pub(crate) mod tests;
