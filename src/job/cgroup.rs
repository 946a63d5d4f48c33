//! The cgroup jobdock runs in, read from `/proc/self/cgroup` (cgroup v1 or v2). The scheduler puts
//! the job there; the container goes under it, so the job's memory limit, CPU set, freezer
//! (suspend) and accounting reach the container's processes. Parsing is pure; `app` reads the files.

use std::path::{Path, PathBuf};

/// Where the job's processes live, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobCgroup {
    /// The path below the hierarchy root: the memory controller's in v1, the unified one in v2.
    pub path: PathBuf,
    pub version: CgroupVersion,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl JobCgroup {
    /// Parses `/proc/self/cgroup`. In v1 the memory controller's line decides (it carries the
    /// limit); a v2-only host has the single `0::` line.
    pub fn parse(text: &str) -> Option<JobCgroup> {
        let mut unified = None;
        for (id, controllers, path) in entries(text) {
            if controllers.split(',').any(|c| c == "memory") {
                return Some(JobCgroup {
                    path: path.into(),
                    version: CgroupVersion::V1,
                });
            }
            if id == "0" && controllers.is_empty() {
                unified = Some(JobCgroup {
                    path: path.into(),
                    version: CgroupVersion::V2,
                });
            }
        }
        unified
    }

    /// The job's memory limit, read through `read` (a file's text) under the cgroup mount `root`.
    /// v1: `hierarchical_memory_limit` of `memory.stat`, since Slurm puts the limit on the step
    /// and the process sits in an unlimited `task_N` child; v2: the smallest `memory.max` from
    /// the cgroup up to the root.
    pub fn memory_limit(&self, root: &Path, read: impl Fn(&Path) -> Option<String>) -> Option<u64> {
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        match self.version {
            CgroupVersion::V1 => {
                let stat = read(&root.join("memory").join(rel).join("memory.stat"))?;
                let line = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("hierarchical_memory_limit "))?;
                parse_memory_limit(line)
            }
            CgroupVersion::V2 => rel
                .ancestors()
                .filter(|a| !a.as_os_str().is_empty())
                .filter_map(|a| {
                    read(&root.join(a).join("memory.max")).and_then(|t| parse_memory_limit(&t))
                })
                .min(),
        }
    }

    /// The cgroup to put the container under: the job's own, minus the per-task leaf Slurm's
    /// memory and devices controllers add (`.../step_0/task_0`). Runc would otherwise leave
    /// `task_N` directories that stop Slurm from removing the job's cgroups.
    pub fn parent_path(&self) -> PathBuf {
        let is_task = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("task_"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match (is_task, self.path.parent()) {
            (true, Some(parent)) => parent.to_path_buf(),
            _ => self.path.clone(),
        }
    }

    /// The container's cgroup parent for dockerd's cgroup driver, or why there is none.
    /// cgroupfs takes the path itself; systemd takes only a slice name (`a-b.slice`).
    pub fn docker_parent(&self, driver: &str) -> Result<String, String> {
        let parent = self.parent_path();
        let path = parent.to_string_lossy();
        if path == "/" {
            return Err("jobdock runs in the root cgroup".into());
        }
        match driver {
            "cgroupfs" => Ok(path.into_owned()),
            "systemd" => match parent.file_name().and_then(|n| n.to_str()) {
                Some(slice) if slice.ends_with(".slice") => Ok(slice.to_string()),
                _ => Err(format!(
                    "{path} is not a systemd slice, which dockerd's systemd cgroup driver requires"
                )),
            },
            other => Err(format!("unknown cgroup driver {other:?}")),
        }
    }
}

/// The `ID:CONTROLLERS:PATH` lines of a `/proc/<pid>/cgroup`, those with an absolute path.
fn entries(text: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    text.lines().filter_map(|line| {
        let mut fields = line.splitn(3, ':');
        let entry = (fields.next()?, fields.next()?, fields.next()?);
        entry.2.starts_with('/').then_some(entry)
    })
}

/// The CPUs of the cpuset cgroup of the process whose `/proc/<pid>/cgroup` is `text`, read through
/// `read` under the cgroup mount `root`: in v1 the cpuset controller's `cpuset.cpus`, in v2 the
/// unified cgroup's `cpuset.cpus.effective`. Under Slurm with `ConstrainCores` it is the step's
/// CPUs on this node, all of its tasks' together.
pub fn cpuset_cpus(
    text: &str,
    root: &Path,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<crate::units::CpuList> {
    let mut file = None;
    for (id, controllers, path) in entries(text) {
        let rel = path.strip_prefix('/').unwrap_or(path);
        if controllers.split(',').any(|c| c == "cpuset") {
            file = Some(root.join("cpuset").join(rel).join("cpuset.cpus"));
            break;
        }
        if id == "0" && controllers.is_empty() {
            file = Some(root.join(rel).join("cpuset.cpus.effective"));
        }
    }
    read(&file?)?.parse().ok()
}

/// The job a cgroup path says its processes belong to: the scheduler made it and put the job's
/// processes in it, and a user cannot move a process out of it, so unlike the environment it
/// cannot be forged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupJob {
    pub scheduler: super::Scheduler,
    /// The job id as the scheduler's commands name it (`4567`; LSF array elements `212[3]`).
    pub job_id: String,
    pub array_index: Option<u32>,
}

impl JobCgroup {
    /// The cgroup of the Slurm job this one is in (`.../job_<id>`, without the step below it),
    /// if it names one.
    pub fn slurm_job(&self) -> Option<JobCgroup> {
        let parts = self.parts();
        let at = (0..parts.len()).find(|&i| slurm_job_id(&parts[..i], parts[i]).is_some())?;
        let path: PathBuf = ["/"].iter().chain(&parts[..=at]).collect();
        Some(JobCgroup {
            path,
            version: self.version,
        })
    }

    /// The path's names, `/` and `.` left out.
    fn parts(&self) -> Vec<&str> {
        self.path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(p) => p.to_str(),
                _ => None,
            })
            .collect()
    }

    /// The scheduler's job this cgroup belongs to, if any. Slurm: `.../slurm[_<node>]/uid_<uid>/
    /// job_<id>/step_<step>/...` (v1) or `.../slurmstepd.scope/job_<id>/...` (v2). LSF's cgroup
    /// tracking: `.../lsf/<cluster>/job.<id>.<index>.<submit time>`.
    pub fn job(&self) -> Option<CgroupJob> {
        let parts = self.parts();
        for (i, part) in parts.iter().enumerate() {
            let above = &parts[..i];
            if let Some(id) = slurm_job_id(above, part) {
                return Some(CgroupJob {
                    scheduler: super::Scheduler::Slurm,
                    job_id: id.trim_start_matches('0').to_string(),
                    array_index: None,
                })
                .filter(|j| !j.job_id.is_empty());
            }
            if let Some(rest) = part.strip_prefix("job.")
                && above.contains(&"lsf")
            {
                let mut fields = rest.split('.');
                let (Some(id), Some(index)) = (fields.next(), fields.next()) else {
                    continue;
                };
                if !digits(id) || !digits(index) {
                    continue;
                }
                let index: u32 = index.parse().ok()?;
                return Some(CgroupJob {
                    scheduler: super::Scheduler::Lsf,
                    job_id: if index == 0 {
                        id.to_string()
                    } else {
                        format!("{id}[{index}]")
                    },
                    array_index: (index != 0).then_some(index),
                });
            }
        }
        None
    }
}

/// At most 20 digits: a job id or index as the schedulers write them.
fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The Slurm job id a path component `part` names (`job_<id>`, below a `slurm...` directory of
/// `above`).
fn slurm_job_id<'a>(above: &[&str], part: &'a str) -> Option<&'a str> {
    part.strip_prefix("job_")
        .filter(|id| digits(id) && above.iter().any(|p| p.starts_with("slurm")))
}

/// A memory limit file's content: bytes, or `None` for "max"/unlimited.
pub fn parse_memory_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    let n: u64 = t.parse().ok()?;
    // cgroup v1 reports "unlimited" as a page-rounded i64::MAX.
    (n < (1 << 62)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What helper runs on the Slurm test bed showed (Debian's Slurm 22.05, cgroup v1).
    #[test]
    fn slurm_step_on_cgroup_v1() {
        let text = "6:freezer:/slurm_vm/uid_2001/job_2/step_0\n5:devices:/slurm_vm/uid_2001/job_2/step_0/task_0\n\
                    4:memory:/slurm_vm/uid_2001/job_2/step_0/task_0\n3:cpuset:/slurm_vm/uid_2001/job_2/step_0\n\
                    1:name=systemd:/\n0::/\n";
        let cg = JobCgroup::parse(text).unwrap();
        assert_eq!(
            cg,
            JobCgroup {
                path: "/slurm_vm/uid_2001/job_2/step_0/task_0".into(),
                version: CgroupVersion::V1
            }
        );
        assert_eq!(
            cg.parent_path(),
            PathBuf::from("/slurm_vm/uid_2001/job_2/step_0")
        );
        assert_eq!(
            cg.docker_parent("cgroupfs").unwrap(),
            "/slurm_vm/uid_2001/job_2/step_0"
        );
        assert!(cg.docker_parent("systemd").is_err());
        let read = |p: &Path| {
            assert_eq!(
                p,
                Path::new(
                    "/sys/fs/cgroup/memory/slurm_vm/uid_2001/job_2/step_0/task_0/memory.stat"
                )
            );
            Some("cache 0\nhierarchical_memory_limit 67108864\nhierarchical_memsw_limit 9223372036854771712\n".to_string())
        };
        assert_eq!(
            cg.memory_limit(Path::new("/sys/fs/cgroup"), read),
            Some(64 << 20)
        );
        assert_eq!(
            cg.slurm_job().unwrap().path,
            PathBuf::from("/slurm_vm/uid_2001/job_2")
        );
        let batch =
            JobCgroup::parse("4:memory:/slurm_vm/uid_2001/job_3/step_batch/task_0\n").unwrap();
        assert_eq!(
            batch.parent_path(),
            PathBuf::from("/slurm_vm/uid_2001/job_3/step_batch")
        );
        let lsf = JobCgroup::parse("4:memory:/lsf/cluster1/job.212.4242.1700000000\n").unwrap();
        assert_eq!(
            lsf.parent_path(),
            PathBuf::from("/lsf/cluster1/job.212.4242.1700000000")
        );
    }

    #[test]
    fn the_job_a_cgroup_belongs_to() {
        use crate::job::Scheduler::{Lsf, Slurm};
        let job = |path: &str| {
            JobCgroup {
                path: path.into(),
                version: CgroupVersion::V1,
            }
            .job()
            .map(|j| (j.scheduler, j.job_id, j.array_index))
        };
        let cases: &[(&str, Option<(crate::job::Scheduler, &str, Option<u32>)>)] = &[
            (
                "/slurm_vm/uid_2001/job_2/step_0/task_0",
                Some((Slurm, "2", None)),
            ),
            (
                "/slurm/uid_2001/job_4567/step_batch/task_0",
                Some((Slurm, "4567", None)),
            ),
            (
                "/slurm_vm/uid_2001/job_9/step_extern",
                Some((Slurm, "9", None)),
            ),
            (
                "/system.slice/slurmstepd.scope/job_7/step_0/user/task_0",
                Some((Slurm, "7", None)),
            ),
            (
                "/lsf/cluster1/job.212.0.1700000000",
                Some((Lsf, "212", None)),
            ),
            (
                "/lsf/cluster1/job.212.3.1700000000",
                Some((Lsf, "212[3]", Some(3))),
            ),
            // Not a scheduler's: a user's own session, docker's, a lookalike outside slurm/lsf.
            ("/user.slice/user-2001.slice/session-3.scope", None),
            ("/docker/0123abcd", None),
            ("/job_5/step_0", None),
            ("/user.slice/job.212.0.1", None),
            ("/slurm_vm/uid_2001/job_/step_0", None),
            ("/slurm_vm/uid_2001/job_x1/step_0", None),
            ("/slurm_vm/uid_2001/job_000", None),
            ("/", None),
        ];
        for (path, want) in cases {
            let want = want.map(|(s, id, i)| (s, id.to_string(), i));
            assert_eq!(job(path), want, "{path}");
        }
    }

    /// A Slurm step's CPUs: the cpuset controller's cgroup (v1), the unified one's effective set
    /// (v2); nothing without a readable, valid list.
    #[test]
    fn the_cpus_of_the_cpuset_cgroup() {
        let root = Path::new("/sys/fs/cgroup");
        let v1 = "4:memory:/slurm_n1/uid_2001/job_9/step_0/task_1\n3:cpuset:/slurm_n1/uid_2001/job_9/step_0\n0::/\n";
        let read = |p: &Path| {
            (p == Path::new("/sys/fs/cgroup/cpuset/slurm_n1/uid_2001/job_9/step_0/cpuset.cpus"))
                .then(|| "0-1\n".to_string())
        };
        assert_eq!(
            cpuset_cpus(v1, root, read)
                .map(|c| c.to_string())
                .as_deref(),
            Some("0-1")
        );
        let v2 = "0::/system.slice/slurmstepd.scope/job_7/step_0/user/task_0\n";
        let read = |p: &Path| {
            (p == Path::new("/sys/fs/cgroup/system.slice/slurmstepd.scope/job_7/step_0/user/task_0/cpuset.cpus.effective"))
                .then(|| "2-3\n".to_string())
        };
        assert_eq!(
            cpuset_cpus(v2, root, read)
                .map(|c| c.to_string())
                .as_deref(),
            Some("2-3")
        );
        assert_eq!(cpuset_cpus(v1, root, |_| None), None);
        assert_eq!(cpuset_cpus(v1, root, |_| Some("\n".into())), None);
        assert_eq!(cpuset_cpus("garbage\n", root, |_| Some("0".into())), None);
    }

    #[test]
    fn unified_hierarchy() {
        let cg = JobCgroup::parse("0::/system.slice/slurmstepd.scope/job_7/step_0/user/task_0\n")
            .unwrap();
        assert_eq!(cg.version, CgroupVersion::V2);
        let read = |p: &Path| match p.to_str().unwrap() {
            "/sys/fs/cgroup/system.slice/slurmstepd.scope/job_7/memory.max" => {
                Some("1073741824\n".to_string())
            }
            "/sys/fs/cgroup/system.slice/slurmstepd.scope/job_7/step_0/memory.max" => {
                Some("2147483648\n".to_string())
            }
            _ => Some("max\n".to_string()),
        };
        assert_eq!(
            cg.memory_limit(Path::new("/sys/fs/cgroup"), read),
            Some(1 << 30)
        );
        let sliced = JobCgroup::parse("0::/user.slice/user-2001.slice\n").unwrap();
        assert_eq!(sliced.docker_parent("systemd").unwrap(), "user-2001.slice");
    }

    #[test]
    fn root_or_garbage() {
        assert_eq!(
            JobCgroup::parse("0::/\n")
                .unwrap()
                .docker_parent("cgroupfs")
                .unwrap_err(),
            "jobdock runs in the root cgroup"
        );
        assert_eq!(JobCgroup::parse("garbage"), None);
        assert_eq!(parse_memory_limit("68719476736\n"), Some(64 << 30));
        assert_eq!(parse_memory_limit("9223372036854771712"), None);
        assert_eq!(parse_memory_limit("max\n"), None);
    }
}
