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
        for line in text.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if !path.starts_with('/') {
                continue;
            }
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

    /// The file holding the memory limit, under the cgroup mount `root` (`/sys/fs/cgroup`).
    pub fn memory_limit_file(&self, root: &Path) -> PathBuf {
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        match self.version {
            CgroupVersion::V1 => root.join("memory").join(rel).join("memory.limit_in_bytes"),
            CgroupVersion::V2 => root.join(rel).join("memory.max"),
        }
    }

    /// The container's cgroup parent for dockerd's cgroup driver, or why there is none.
    /// cgroupfs takes the path itself; systemd takes only a slice name (`a-b.slice`).
    pub fn docker_parent(&self, driver: &str) -> Result<String, String> {
        let path = self.path.to_string_lossy();
        if path == "/" {
            return Err("jobdock runs in the root cgroup".into());
        }
        match driver {
            "cgroupfs" => Ok(path.into_owned()),
            "systemd" => match self.path.file_name().and_then(|n| n.to_str()) {
                Some(slice) if slice.ends_with(".slice") => Ok(slice.to_string()),
                _ => Err(format!(
                    "{path} is not a systemd slice, which dockerd's systemd cgroup driver requires"
                )),
            },
            other => Err(format!("unknown cgroup driver {other:?}")),
        }
    }
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

    #[test]
    fn slurm_step_on_cgroup_v1() {
        let text = "12:pids:/slurm/uid_2001/job_5/step_0\n11:memory:/slurm/uid_2001/job_5/step_0\n\
                    4:cpuset:/slurm/uid_2001/job_5/step_0\n1:name=systemd:/\n0::/\n";
        let cg = JobCgroup::parse(text).unwrap();
        assert_eq!(
            cg,
            JobCgroup {
                path: "/slurm/uid_2001/job_5/step_0".into(),
                version: CgroupVersion::V1
            }
        );
        assert_eq!(
            cg.memory_limit_file(Path::new("/sys/fs/cgroup")),
            PathBuf::from(
                "/sys/fs/cgroup/memory/slurm/uid_2001/job_5/step_0/memory.limit_in_bytes"
            )
        );
        assert_eq!(
            cg.docker_parent("cgroupfs").unwrap(),
            "/slurm/uid_2001/job_5/step_0"
        );
        assert!(cg.docker_parent("systemd").is_err());
    }

    #[test]
    fn unified_hierarchy() {
        let cg = JobCgroup::parse("0::/system.slice/slurmstepd.scope/job_7/step_0/user/task_0\n")
            .unwrap();
        assert_eq!(cg.version, CgroupVersion::V2);
        assert_eq!(
            cg.memory_limit_file(Path::new("/sys/fs/cgroup")),
            PathBuf::from(
                "/sys/fs/cgroup/system.slice/slurmstepd.scope/job_7/step_0/user/task_0/memory.max"
            )
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
