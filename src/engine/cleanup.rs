//! `jobdock cleanup --job ID`, for epilogs and LSF's post-exec: removes every container labelled
//! with the job, in any state (a never-started "Created" one too), and the job's cidfiles and
//! staging directories. A user's cleanup acts on their own only (anyone may label a container with
//! any job id), and reveals nothing of the others. Safe to run twice and when there is nothing to
//! remove. Every cleanup also sweeps what killed jobdocks of any job left behind.

use std::path::{Path, PathBuf};

use crate::engine::EngineError;
use crate::engine::daemon::Daemon;
use crate::engine::daemon::remove_container;
use crate::engine::files;
use crate::engine::{host, pin};
use crate::job::Scheduler;
use crate::job::cgroup::{CgroupVersion, JobCgroup};

pub(super) struct Dirs<'a> {
    pub state_dir: &'a Path,
    pub cidfile_dir: &'a Path,
    /// Where staging mounts are detached (in dockerd's mount namespace).
    pub host: &'a dyn host::Host,
}

/// What a cleanup removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub containers: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// How many times cleanup lists a job's containers, until none of the caller's is left.
const CLEANUP_ROUNDS: u32 = 5;

/// `cluster`: the Slurm cluster whose job it is (`SLURM_CLUSTER_NAME` of an epilog): one dockerd
/// may serve nodes of several clusters, whose job ids are their own, so a container labelled
/// with another cluster (`jobdock.cluster`) is another job's.
pub(super) async fn clean_job<D: Daemon>(
    d: &D,
    job: &str,
    cluster: Option<&str>,
    caller_uid: u32,
    dirs: &Dirs<'_>,
) -> Result<Report, EngineError> {
    check_job_id(job)?;
    let mut report = Report::default();
    let mut problems = Vec::new();
    let mut names = Vec::new();
    let mut others = 0;
    // A jobdock killed while dockerd was creating its container: the container is listed before
    // its creation is done, a removal then finds no such container, and the creation completes
    // after. So list again until nothing of the caller's is left (a few rounds, briefly).
    for round in 0..CLEANUP_ROUNDS {
        let found = d
            .list_by_label("jobdock.job", job)
            .await
            .map_err(|e| EngineError::daemon("listing the job's containers", e))?;
        others = 0;
        let mut removed_any = false;
        for c in found {
            if let (Some(mine), Some(its)) = (cluster, c.labels.get("jobdock.cluster"))
                && mine != its
                && !in_slurm_job_cgroup(d, &c.id, job).await
            {
                others += 1;
                continue;
            }
            let owner = c.labels.get("jobdock.uid").map(String::as_str);
            // Anyone can label a container with any job id; a user's cleanup acts on theirs
            // only, and says nothing about the others (root's, the epilog's, removes them all).
            if caller_uid != 0 && owner != Some(caller_uid.to_string().as_str()) {
                others += 1;
                continue;
            }
            removed_any = true;
            match remove_container(d, &c.id).await {
                Ok(()) if !names.contains(&c.name) => report.containers.push(c.name.clone()),
                Ok(()) => {}
                Err(e) => problems.push(format!("container {}: {e}", c.name)),
            }
            if !names.contains(&c.name) {
                names.push(c.name);
            }
        }
        if !removed_any || !problems.is_empty() {
            break;
        }
        if round + 1 < CLEANUP_ROUNDS {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    if others > 0 {
        tracing::debug!(
            "{others} container(s) labelled with job {job} are not the caller's or another cluster's"
        );
    }

    // The job's staging directories: of its containers, and (a jobdock killed before its
    // container existed) those that say they are the caller's; root's are all of the job's.
    let of_container = |file: &str| names.iter().any(|n| file.starts_with(&format!("{n}.")));
    let mut claimed = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dirs.state_dir) {
        for entry in entries.flatten() {
            let Ok(file) = entry.file_name().into_string() else {
                continue;
            };
            let callers = || {
                caller_uid == 0
                    || files::staging_creator(&entry.path()).is_some_and(|c| c.uid == caller_uid)
            };
            if !file.ends_with(".cid") && file_of_job(&file, job) && callers() {
                claimed.push(file);
            }
        }
    }
    let ours = |file: &str| {
        of_container(file)
            || claimed.iter().any(|c| c == file)
            || (caller_uid == 0 && file_of_job(file, job))
    };
    let mut dirs_seen = vec![dirs.state_dir];
    if dirs.cidfile_dir != dirs.state_dir {
        dirs_seen.push(dirs.cidfile_dir);
    }
    for dir in dirs_seen {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(file) = entry.file_name().into_string() else {
                continue;
            };
            if !ours(&file) {
                continue;
            }
            let path = entry.path();
            let removed = if file.ends_with(".cid") {
                files::remove_file("cidfile", &path)
            } else {
                files::remove_dir(&path)
            };
            match removed {
                Ok(()) => report.files.push(path),
                Err(e) => problems.push(e.to_string()),
            }
        }
    }

    // Staging mounts of a jobdock killed between staging and start: detached, never followed.
    let (unmounted, failed) = pin::clean(dirs.state_dir, &ours, dirs.host);
    report.files.extend(unmounted);
    problems.extend(failed);
    sweep_stale(dirs.state_dir, dirs.host);

    if !problems.is_empty() {
        return Err(EngineError::CleanupFailed { problems });
    }
    Ok(report)
}

/// Removes what killed jobdocks of any job left in the state directory: staging directories
/// whose creator is dead (and their staging mounts), and pull locks nobody holds. Safe while
/// other jobs run: a live creator's directory and a held lock are left alone. Failures are only
/// logged; the next sweep tries again.
pub(super) fn sweep_stale(state_dir: &Path, host: &dyn host::Host) {
    let mut dead = Vec::new();
    if let Ok(entries) = std::fs::read_dir(state_dir) {
        for entry in entries.flatten() {
            let Ok(file) = entry.file_name().into_string() else {
                continue;
            };
            if !file.starts_with("jobdock-") || file.ends_with(".cid") {
                continue;
            }
            if files::staging_creator(&entry.path()).is_some_and(|c| !c.alive()) {
                match files::remove_dir(&entry.path()) {
                    Ok(()) => tracing::info!("removed {}: its jobdock is gone", file),
                    Err(e) => tracing::warn!("{e}"),
                }
                dead.push(file);
            }
        }
    }
    if !dead.is_empty() {
        let (_, failed) = pin::clean(state_dir, &|f| dead.iter().any(|d| d == f), host);
        for problem in failed {
            tracing::warn!("{problem}");
        }
    }
    files::remove_unheld_locks(state_dir);
}

/// Whether container `id` lives in a Slurm cgroup of job `job` (`/slurm.../job_<job>/...`, which
/// jobdock, as root, took from the kernel): then it is this job's on this node, whatever cluster
/// its label names. The label comes from the job's `SLURM_CLUSTER_NAME`, which the user can set:
/// a job's named container labelled with a made-up cluster must not outlive its epilog.
async fn in_slurm_job_cgroup<D: Daemon>(d: &D, id: &str, job: &str) -> bool {
    let Ok(state) = d.inspect(id).await else {
        return false;
    };
    // What job a path names does not depend on the hierarchy's version.
    let parent = JobCgroup {
        path: state.effective.cgroup_parent.into(),
        version: CgroupVersion::V1,
    };
    parent
        .job()
        .is_some_and(|j| j.scheduler == Scheduler::Slurm && j.job_id == job)
}

/// A job id as jobdock labels it: `212`, `212[3]`, `4567`, `pid-123`.
fn check_job_id(job: &str) -> Result<(), EngineError> {
    let ok = !job.is_empty()
        && job.len() <= 64
        && job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"[]-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadJobId {
            job: job.to_string(),
            reason: "not a job id (letters, digits, [ ] - _ . only)",
        })
    }
}

/// Whether a file in the state or cidfile directory belongs to job `job`, by the container name it
/// starts with (plan's `container_name`): `jobdock-lsf-212-4321.<token>` for job 212,
/// `jobdock-lsf-212.3-4321.cid` for LSF array element `212[3]`, `jobdock-slurm-4567.3-4321...`
/// for a Slurm array task of job 4567, `jobdock-u2001-4321...` for `pid-4321`.
fn file_of_job(file: &str, job: &str) -> bool {
    let Some((head, tail)) = file
        .strip_prefix("jobdock-")
        .and_then(|rest| rest.rsplit_once('-'))
    else {
        return false;
    };
    let Some((pid, _suffix)) = tail.split_once('.') else {
        return false;
    };
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    if let Some(wanted) = job.strip_prefix("pid-") {
        return head.starts_with('u') && pid == wanted;
    }
    let Some((scheduler, job_part)) = head.split_once('-') else {
        return false;
    };
    let lsf_array = job
        .strip_suffix(']')
        .and_then(|j| j.split_once('['))
        .map(|(base, index)| format!("{base}.{index}"));
    match scheduler {
        "lsf" => job_part == lsf_array.as_deref().unwrap_or(job),
        "slurm" => {
            job_part == job
                || job_part
                    .strip_prefix(job)
                    .and_then(|r| r.strip_prefix('.'))
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::daemon::Found;
    use crate::engine::fake::FakeDaemon;

    /// One test's state directory (also its cidfile directory) and host seam.
    struct Node {
        dir: tempfile::TempDir,
        host: crate::engine::fake::FakeHost,
    }

    impl Node {
        fn new() -> Node {
            Node {
                dir: tempfile::tempdir().unwrap(),
                host: crate::engine::fake::FakeHost::default(),
            }
        }

        fn dirs(&self) -> Dirs<'_> {
            Dirs {
                state_dir: self.dir.path(),
                cidfile_dir: self.dir.path(),
                host: &self.host,
            }
        }
    }

    /// A container of job 212 of `uid`, as dockerd lists it.
    fn found(id: &str, name: &str, uid: &str) -> Found {
        Found {
            id: id.into(),
            name: name.into(),
            labels: [("jobdock.job", "212"), ("jobdock.uid", uid)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_users_cleanup_removes_their_containers_only_and_succeeds() {
        let node = Node::new();
        let dirs = node.dirs();
        let found = |id: &str, uid: &str| found(id, &format!("jobdock-lsf-212-{id}"), uid);
        let mut d = FakeDaemon::default();
        d.containers = vec![found("1", "2002"), found("2", "2001"), found("3", "2002")];
        let report = clean_job(&d, "212", None, 2002, &dirs).await.unwrap();
        assert_eq!(
            report.containers,
            ["jobdock-lsf-212-1", "jobdock-lsf-212-3"]
        );
        let removed: Vec<String> = d
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("remove"))
            .collect();
        assert_eq!(removed, ["remove 1", "remove 3"], "jdalice's is left alone");

        let mut d = FakeDaemon::default();
        d.containers = vec![found("2", "2001")];
        let report = clean_job(&d, "212", None, 2002, &dirs).await.unwrap();
        assert!(
            report.containers.is_empty(),
            "nothing of hers, and no error"
        );
        let report = clean_job(&d, "212", None, 0, &dirs).await.unwrap();
        assert_eq!(report.containers, ["jobdock-lsf-212-2"], "root removes all");
    }

    /// Two clusters' nodes on one dockerd: the epilog of one cluster's job 212 leaves the other
    /// cluster's job 212 alone; without a cluster (LSF, an older Slurm) it removes them all.
    #[tokio::test]
    async fn a_clusters_cleanup_leaves_another_clusters_job_of_the_same_id() {
        let node = Node::new();
        let dirs = node.dirs();
        let on = |id: &str, cluster: &str| {
            let mut f = found(
                id,
                &format!("jobdock-slurm-{cluster}-212.0-n1-u2001"),
                "2001",
            );
            f.labels.insert("jobdock.cluster".into(), cluster.into());
            f
        };
        let mut d = FakeDaemon::default();
        d.containers = vec![
            on("1", "a"),
            on("2", "b"),
            found("3", "jobdock-slurm-212-9", "2001"),
        ];
        let report = clean_job(&d, "212", Some("a"), 0, &dirs).await.unwrap();
        assert_eq!(
            report.containers,
            ["jobdock-slurm-a-212.0-n1-u2001", "jobdock-slurm-212-9"]
        );
        let mut d = FakeDaemon::default();
        d.containers = vec![on("1", "a"), on("2", "b")];
        let report = clean_job(&d, "212", None, 0, &dirs).await.unwrap();
        assert_eq!(report.containers.len(), 2);
        // The cluster label is the job's SLURM_CLUSTER_NAME, which its user can set: a container
        // in this job's Slurm cgroup is this job's, whatever its label says.
        let mut d = FakeDaemon::default();
        d.containers = vec![on("1", "a"), on("2", "made-up")];
        d.tamper = Some(|e| e.cgroup_parent = "/slurm_n1/uid_2001/job_212".into());
        let report = clean_job(&d, "212", Some("a"), 0, &dirs).await.unwrap();
        assert_eq!(report.containers.len(), 2, "{:?}", report.containers);
        d.tamper = Some(|e| e.cgroup_parent = "/slurm_n1/uid_2001/job_2120".into());
        d.containers = vec![on("2", "made-up")];
        let report = clean_job(&d, "212", Some("a"), 0, &dirs).await.unwrap();
        assert!(report.containers.is_empty(), "another job's cgroup");
    }

    /// A jobdock killed while dockerd was creating its container: the container is listed, its
    /// removal finds no such container (creation not done), then it exists. Cleanup lists again
    /// and removes it (it happened under the full suite's load).
    #[tokio::test(start_paused = true)]
    async fn a_container_whose_creation_ends_after_its_removal_is_removed_too() {
        let node = Node::new();
        let dirs = node.dirs();
        let mut d = FakeDaemon::default();
        d.containers = vec![found("1", "jobdock-lsf-212-77", "2001")];
        d.created_late.borrow_mut().push("1".into());
        let report = clean_job(&d, "212", None, 0, &dirs).await.unwrap();
        assert_eq!(report.containers, ["jobdock-lsf-212-77"]);
        let removes = d.calls().iter().filter(|c| c.starts_with("remove")).count();
        assert_eq!(removes, 2, "removed again once it existed");
        assert_eq!(*d.removed.borrow(), ["1"]);
    }

    #[tokio::test]
    async fn a_user_claims_the_staging_that_says_it_is_theirs() {
        let node = Node::new();
        let dirs = node.dirs();
        // A live jobdock's (this test's), of jdalice, with no container yet.
        let staging = node.dir.path().join("jobdock-lsf-212-4321.0a1b");
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(
            staging.join("owner"),
            files::Creator::this_process(2001).line(),
        )
        .unwrap();
        let d = FakeDaemon::default();
        let report = clean_job(&d, "212", None, 2002, &dirs).await.unwrap();
        assert!(report.files.is_empty() && staging.exists(), "not jdbob's");
        let report = clean_job(&d, "212", None, 2001, &dirs).await.unwrap();
        assert_eq!(report.files, std::slice::from_ref(&staging));
        assert!(!staging.exists());
    }

    #[test]
    fn files_are_matched_to_their_job_by_name() {
        let cases = [
            ("jobdock-lsf-212-4321.0a1b2c", "212", true),
            ("jobdock-lsf-212-4321.cid", "212", true),
            ("jobdock-lsf-2120-4321.cid", "212", false),
            ("jobdock-lsf-21-4321.cid", "212", false),
            ("jobdock-lsf-212.3-4321.cid", "212[3]", true),
            ("jobdock-lsf-212.3-4321.cid", "212", false),
            ("jobdock-lsf-212-4321.cid", "212[3]", false),
            ("jobdock-slurm-4567-99.ab", "4567", true),
            ("jobdock-slurm-4567.3-99.ab", "4567", true),
            ("jobdock-slurm-45678-99.ab", "4567", false),
            ("jobdock-slurm-4567-99.ab", "212", false),
            ("jobdock-u2001-4321.ab", "pid-4321", true),
            ("jobdock-u2001-4321.ab", "pid-432", false),
            ("jobdock-lsf-212-4321.ab", "pid-4321", false),
            ("locks", "212", false),
            ("jobdock-lsf-212-x.cid", "212", false),
            ("other-lsf-212-4321.cid", "212", false),
        ];
        for (file, job, want) in cases {
            assert_eq!(file_of_job(file, job), want, "{file} for {job}");
        }
    }

    #[test]
    fn job_ids_are_checked() {
        for good in ["212", "212[3]", "4567", "pid-4321"] {
            assert!(check_job_id(good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "a b", "x=y", "*", &"1".repeat(65)] {
            assert!(check_job_id(bad).is_err(), "{bad:?}");
        }
    }
}
