//! What is checked is what is mounted. dockerd mounts a bind source by its path, as root, when the
//! container starts, and a user who owns any part of that path can swap a directory for a symlink
//! after jobdock checked it. So jobdock does not give dockerd the user's path: before create it
//! opens each user-resolved source again (as root, refusing any symlink on the way), requires it
//! to be the very directory the user's probe pinned (device and inode), bind-mounts that open
//! directory onto a staging path only root can reach, and gives dockerd the staging path. Once the
//! container has started it holds its own mounts, and the staging mounts are detached.
//!
//! The staging mounts are made, checked and detached where dockerd sees them: in its mount
//! namespace, which is not jobdock's when the scheduler runs each job in one of its own (Slurm's
//! job_container/tmpfs; `mountns`). The source is always opened where jobdock is, which is what
//! the user sees and the probe checked.
//!
//! Staging mounts live in `<state_dir>/mounts/<name>.<token>/m<N>`, outside the job's staging
//! directory, which is removed recursively: nothing here ever removes a directory recursively, so
//! a mount left behind (jobdock killed) can never lead to deleting the user's files. They are only
//! detached and `rmdir`ed, here or by `jobdock cleanup`.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::engine::EngineError;
use crate::engine::files::{self, FileError};
use crate::engine::host::{BindError, Host};
use crate::plan::ContainerPlan;

/// The directory under the state directory that holds staging mounts.
pub(super) const MOUNTS: &str = "mounts";

/// A plan whose pinned mount sources are staged; detaches them when released or dropped.
pub(super) struct Staged<'h> {
    host: &'h dyn Host,
    /// The plan as dockerd gets it: pinned sources replaced by their staging paths (and `pins`
    /// keyed by those).
    pub plan: ContainerPlan,
    dir: Option<PathBuf>,
    mounted: Vec<PathBuf>,
}

/// Where each pinned mount source of `plan` is staged: mount index -> staging path. Pure, so
/// `jobdock plan --json` shows the very create body dockerd will get.
pub fn staging_paths(plan: &ContainerPlan, state_dir: &Path) -> BTreeMap<usize, PathBuf> {
    let Some(name) = plan.staging.dir.file_name() else {
        return BTreeMap::new();
    };
    let dir = state_dir.join(MOUNTS).join(name);
    plan.mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| plan.pins.contains_key(&m.source))
        .map(|(i, _)| (i, dir.join(format!("m{i}"))))
        .collect()
}

/// `plan` as dockerd gets it: pinned sources replaced by their staging paths.
pub fn as_staged(plan: &ContainerPlan, state_dir: &Path) -> ContainerPlan {
    let mut staged = plan.clone();
    for (i, at) in staging_paths(plan, state_dir) {
        staged.mounts[i].source = at;
    }
    staged
}

/// Stages every pinned mount source of `plan` (see the module documentation).
pub(super) fn stage<'h>(
    plan: &ContainerPlan,
    state_dir: &Path,
    host: &'h dyn Host,
) -> Result<Staged<'h>, EngineError> {
    let mut staged = Staged {
        host,
        plan: plan.clone(),
        dir: None,
        mounted: Vec::new(),
    };
    if plan.pins.is_empty() {
        return Ok(staged);
    }
    let parent = state_dir.join(MOUNTS);
    let name = plan
        .staging
        .dir
        .file_name()
        .ok_or_else(|| EngineError::Internal("the staging directory has no name".into()))?;
    let dir = parent.join(name);
    make_dir(state_dir, &parent, &dir)?;
    staged.dir = Some(dir.clone());
    let mut pins = BTreeMap::new();
    let paths = staging_paths(plan, state_dir);
    for (i, m) in staged.plan.mounts.iter_mut().enumerate() {
        let (Some(pin), Some(at)) = (plan.pins.get(&m.source), paths.get(&i)) else {
            continue;
        };
        let at = at.clone();
        std::fs::create_dir(&at).map_err(|e| file_error(&at, e))?;
        match host.bind_pinned(&m.source, *pin, &at) {
            Ok(()) => staged.mounted.push(at.clone()),
            Err(BindError::Changed(reason)) => {
                return Err(EngineError::MountChanged {
                    path: m.source.clone(),
                    reason,
                });
            }
            Err(BindError::Namespace(reason)) => {
                return Err(EngineError::MountNamespace { reason });
            }
            Err(BindError::Failed(reason)) => {
                return Err(EngineError::Internal(format!(
                    "staging the mount of {} at {}: {reason}",
                    m.source.display(),
                    at.display()
                )));
            }
        }
        pins.insert(at.clone(), *pin);
        m.source = at;
    }
    staged.plan.pins = pins;
    Ok(staged)
}

/// `<state_dir>/mounts` (root's, 0700) and the job's directory in it. Another job may remove an
/// empty `mounts` between the two steps: then try again.
fn make_dir(state_dir: &Path, parent: &Path, dir: &Path) -> Result<(), EngineError> {
    files::ensure_private_dir("engine.state_dir", state_dir)?;
    for attempt in 0.. {
        files::ensure_private_dir("staging mounts directory", parent)?;
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() == ErrorKind::NotFound && attempt < 3 => continue,
            result => return result.map_err(|e| file_error(dir, e).into()),
        }
    }
    unreachable!("the loop returns")
}

fn file_error(path: &Path, e: std::io::Error) -> FileError {
    FileError {
        what: "staging mount",
        path: path.to_path_buf(),
        reason: e.to_string(),
        callers_limit: false,
    }
}

impl Staged<'_> {
    /// Detaches the staging mounts and removes their (then empty) directories; `mounts` too if
    /// no other job uses it. Never recursive. Safe to call twice.
    pub(super) fn release(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        for at in self.mounted.drain(..) {
            if let Err(e) = self.host.unbind(&at) {
                problems.push(format!("detaching {}: {e}", at.display()));
            }
        }
        if let Some(dir) = self.dir.take() {
            problems.extend(remove_empty(&dir));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!("staging mounts: {e}");
        }
    }
}

/// Removes `dir`'s subdirectories and `dir` with `rmdir` (a mount point still in use makes that
/// fail, which is reported: its contents are never touched), then its parent if it is empty.
pub(super) fn remove_empty(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if let Err(e) = std::fs::remove_dir(entry.path()) {
                problems.push(format!("{}: {e}", entry.path().display()));
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            problems.push(format!("{}: {e}", dir.display()));
        }
        _ => {
            // Shared with other jobs: gone only when none uses it.
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
    problems
}

/// `jobdock cleanup`: detaches and removes the staging mounts a killed jobdock left behind, of the
/// jobs whose directory names `ours` accepts. Returns what it removed and what it could not.
pub(super) fn clean(
    state_dir: &Path,
    ours: &dyn Fn(&str) -> bool,
    host: &dyn Host,
) -> (Vec<PathBuf>, Vec<String>) {
    let (mut removed, mut problems) = (Vec::new(), Vec::new());
    let parent = state_dir.join(MOUNTS);
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return (removed, problems);
    };
    for entry in entries.flatten() {
        let Ok(file) = entry.file_name().into_string() else {
            continue;
        };
        if !ours(&file) {
            continue;
        }
        let dir = entry.path();
        if let Ok(mounts) = std::fs::read_dir(&dir) {
            for m in mounts.flatten() {
                // Not mounted (EINVAL) is fine: then it is only a directory.
                if let Err(e) = host.unbind(&m.path())
                    && e.kind() != ErrorKind::InvalidInput
                {
                    problems.push(format!("detaching {}: {e}", m.path().display()));
                }
            }
        }
        let failed = remove_empty(&dir);
        if failed.is_empty() {
            removed.push(dir);
        }
        problems.extend(failed);
    }
    (removed, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::host::RealHost;
    use crate::probe::FileId;

    fn id(path: &Path) -> FileId {
        FileId::of(&nix::sys::stat::stat(path).unwrap())
    }

    /// A plan-like value: one pinned source mounted at /data.
    fn plan_for(source: &Path, pin: FileId, staging_dir: &Path) -> ContainerPlan {
        let mut plan = crate::engine::verify::tests::plan();
        plan.staging.dir = staging_dir.to_path_buf();
        plan.mounts.retain(|m| !plan.pins.contains_key(&m.source));
        plan.mounts.push(crate::plan::MountPlan {
            source: source.to_path_buf(),
            target: "/data".into(),
            readonly: false,
            why: "test".into(),
        });
        plan.pins = BTreeMap::from([(source.to_path_buf(), pin)]);
        plan
    }

    #[test]
    #[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
    fn the_staged_path_shows_the_pinned_directory_whatever_the_path_becomes() {
        crate::needs_root();
        let host = RealHost::shared();
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        let data = t.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("mine"), "mine").unwrap();
        let plan = plan_for(&data, id(&data), &state.join("jobdock-x-1.token"));
        let mut staged = stage(&plan, &state, &host).unwrap();
        let at = state
            .join(MOUNTS)
            .join("jobdock-x-1.token")
            .join(format!("m{}", plan.mounts.len() - 1));
        assert_eq!(staged.plan.mounts.last().unwrap().source, at);
        assert_eq!(staged.plan.pins[&at], id(&data));
        // The user swaps the checked directory for a symlink to /etc: the staged path still shows
        // the directory that was checked.
        std::fs::rename(&data, t.path().join("moved")).unwrap();
        std::os::unix::fs::symlink("/etc", &data).unwrap();
        assert_eq!(std::fs::read_to_string(at.join("mine")).unwrap(), "mine");
        assert!(!at.join("passwd").exists());
        staged.release().unwrap();
        assert!(!state.join(MOUNTS).exists(), "staging directories left");
        assert_eq!(
            std::fs::read_to_string(t.path().join("moved/mine")).unwrap(),
            "mine",
            "the user's files are untouched"
        );
    }

    #[test]
    #[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
    fn a_source_that_is_not_what_was_checked_is_not_staged() {
        crate::needs_root();
        let host = RealHost::shared();
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        let data = t.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let pin = id(&data);
        let other = t.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let plan = plan_for(&data, pin, &state.join("jobdock-x-2.token"));
        // Replaced by another directory, by a symlink to the very same one, or gone.
        std::fs::rename(&data, t.path().join("checked")).unwrap();
        std::fs::rename(&other, &data).unwrap();
        let e = stage(&plan, &state, &host).err().unwrap();
        assert!(e.to_string().contains("another file"), "{e}");
        std::fs::remove_dir(&data).unwrap();
        std::os::unix::fs::symlink(t.path().join("checked"), &data).unwrap();
        let e = stage(&plan, &state, &host).err().unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(e.blame(), crate::engine::Blame::BadRequest);
        std::fs::remove_file(&data).unwrap();
        let e = stage(&plan, &state, &host).err().unwrap();
        assert!(e.to_string().contains("No such file"), "{e}");
        assert!(!state.join(MOUNTS).exists(), "staging directories left");
    }

    #[test]
    #[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
    fn cleanup_detaches_what_a_killed_jobdock_left_and_never_deletes_through_it() {
        crate::needs_root();
        let host = RealHost::shared();
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        let data = t.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("precious"), "x").unwrap();
        let plan = plan_for(&data, id(&data), &state.join("jobdock-x-3.token"));
        let staged = stage(&plan, &state, &host).unwrap();
        std::mem::forget(staged); // jobdock killed: nothing released
        let ours = |f: &str| f.starts_with("jobdock-x-3.");
        let (removed, problems) = clean(&state, &ours, &host);
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(removed.len(), 1);
        assert!(
            data.join("precious").exists(),
            "the user's file was deleted"
        );
        assert!(!state.join(MOUNTS).exists());
        // Another job's are not touched.
        let plan = plan_for(&data, id(&data), &state.join("jobdock-x-4.token"));
        let mut staged = stage(&plan, &state, &host).unwrap();
        let (removed, _) = clean(&state, &ours, &host);
        assert!(removed.is_empty());
        staged.release().unwrap();
    }
}
