//! What the scheduler says about the job, in one scheduler-neutral `JobContext`. The adapters
//! (`lsf`, `slurm`) only read a snapshot of the environment: no I/O, nothing downstream asks which
//! scheduler it was except to label and name the container.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub mod cgroup;
pub mod lsf;
pub mod slurm;

/// A snapshot of the process environment (UTF-8 entries only).
pub type Env = BTreeMap<String, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    Lsf,
    Slurm,
    /// Run by hand or by a site script outside any job.
    None,
}

impl Scheduler {
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Lsf => "lsf",
            Scheduler::Slurm => "slurm",
            Scheduler::None => "none",
        }
    }
}

/// Everything jobdock needs to know about the job, whichever scheduler started it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobContext {
    pub scheduler: Option<Scheduler>,
    /// The job id as the scheduler's own commands name it: `212`, `212[3]` (LSF array element),
    /// `4567` (Slurm). `None` outside a job.
    pub job_id: Option<String>,
    pub array_index: Option<u32>,
    /// Distinguishes several jobdock runs of one job (Slurm step and task): `0.1`.
    pub step: Option<String>,
    /// The LSF job file (`LSB_JOBFILENAME`), run through `/bin/sh` when no command is given.
    pub script: Option<PathBuf>,
    /// Where the job runs: the container's working directory, mounted at the same path.
    pub work_dir: Option<PathBuf>,
    /// The job's private temporary directory, mounted at `/tmp`.
    pub tmpdir: Option<PathBuf>,
    /// CPUs allocated to the job on this node.
    pub cpus: Option<u32>,
    /// Memory allocated to the job on this node, in bytes.
    pub memory: Option<u64>,
    /// GPUs allocated to the job, by the host's (global) ids.
    pub gpus: Vec<String>,
    /// The job's user as the scheduler states it (`SLURM_JOB_UID`); trusted only from a root caller.
    pub scheduler_uid: Option<u32>,
}

impl JobContext {
    pub fn scheduler(&self) -> Scheduler {
        self.scheduler.unwrap_or(Scheduler::None)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JobError {
    #[error("{name}={value:?}: {reason}")]
    BadVariable {
        name: String,
        value: String,
        reason: String,
    },
    #[error(
        "both LSB_JOBID and SLURM_JOB_ID are set: one was inherited from another job's environment; unset it"
    )]
    TwoSchedulers,
}

/// Reads the job context from the environment snapshot; `cwd` is the process's working directory.
pub fn from_env(env: &Env, cwd: Option<PathBuf>) -> Result<JobContext, JobError> {
    match (
        env.contains_key("LSB_JOBID"),
        env.contains_key("SLURM_JOB_ID") || env.contains_key("SLURM_JOBID"),
    ) {
        (true, true) => Err(JobError::TwoSchedulers),
        (true, false) => lsf::context(env, cwd),
        (false, true) => slurm::context(env, cwd),
        (false, false) => Ok(JobContext {
            scheduler: Some(Scheduler::None),
            work_dir: cwd,
            ..Default::default()
        }),
    }
}

/// Reads a variable that must be a non-negative integer, if present.
pub(crate) fn number<T: std::str::FromStr>(env: &Env, name: &str) -> Result<Option<T>, JobError> {
    match env.get(name) {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v
            .parse()
            .map(Some)
            .map_err(|_| bad(name, v, "number out of range")),
        Some(v) => Err(bad(name, v, "must be a non-negative integer")),
    }
}

/// Reads a variable that must be an absolute path, if present and non-empty.
pub(crate) fn abs_path(env: &Env, name: &str) -> Result<Option<PathBuf>, JobError> {
    match env.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) if v.starts_with('/') && !v.contains(['\n', '\0']) => Ok(Some(PathBuf::from(v))),
        Some(v) => Err(bad(name, v, "must be an absolute path")),
    }
}

/// Most GPUs one job may be given (the largest nodes have 8 or 16).
pub const MAX_GPUS: usize = 64;

/// A comma-separated list of GPU ids, if present: decimal indices (`0,1`) or UUIDs
/// (`GPU-8f6c2b5e-...`, `MIG-...`), each once. Anything else (`all`, `none`, `void`, `-1`) would
/// be taken by the engine as an allocation of its own (`DeviceIDs ["all"]`), and is refused.
pub(crate) fn gpu_list(env: &Env, name: &str) -> Result<Vec<String>, JobError> {
    let Some(v) = env.get(name) else {
        return Ok(Vec::new());
    };
    let mut ids: Vec<String> = Vec::new();
    for id in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !gpu_id(id) {
            return Err(bad(
                name,
                v,
                &format!(
                    "{id:?} is not a GPU id: the allocation must be decimal indices (0,1) or \
                     UUIDs (GPU-..., MIG-...)"
                ),
            ));
        }
        if ids.iter().any(|seen| seen.eq_ignore_ascii_case(id)) {
            return Err(bad(name, v, &format!("GPU {id} is named twice")));
        }
        ids.push(id.to_string());
    }
    if ids.len() > MAX_GPUS {
        return Err(bad(
            name,
            v,
            &format!("more than the {MAX_GPUS} GPUs a job may have (MAX_GPUS)"),
        ));
    }
    Ok(ids)
}

/// `0`, `12` (no sign, no leading zero), `GPU-<uuid>`, `MIG-<uuid>` (8-4-4-4-12 hex digits).
fn gpu_id(id: &str) -> bool {
    let index = !id.is_empty()
        && id.len() <= 4
        && id.bytes().all(|b| b.is_ascii_digit())
        && (id == "0" || !id.starts_with('0'));
    let uuid = |u: &str| {
        let groups: Vec<&str> = u.split('-').collect();
        groups.len() == 5
            && groups
                .iter()
                .zip([8, 4, 4, 4, 12])
                .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    index
        || id
            .strip_prefix("GPU-")
            .or_else(|| id.strip_prefix("MIG-"))
            .is_some_and(uuid)
}

pub(crate) fn bad(name: &str, value: &str, reason: &str) -> JobError {
    JobError::BadVariable {
        name: name.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// A temporary directory is the job's own only if it is not the node's shared one.
pub(crate) fn private_tmpdir(dir: Option<PathBuf>) -> Option<PathBuf> {
    dir.filter(|d| {
        !["/tmp", "/var/tmp", "/dev/shm"]
            .iter()
            .any(|shared| d == std::path::Path::new(shared))
    })
}

#[cfg(test)]
pub(crate) fn env_of(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_job_the_context_is_the_cwd() {
        let ctx = from_env(&Env::new(), Some("/home/alice".into())).unwrap();
        assert_eq!(ctx.scheduler(), Scheduler::None);
        assert_eq!(ctx.job_id, None);
        assert_eq!(ctx.work_dir, Some("/home/alice".into()));
    }

    /// Issue 11 item 10: only real device ids, each once.
    #[test]
    fn gpu_selectors() {
        let uuid = "GPU-8f6c2b5e-1d2c-4a3b-9e8f-0123456789ab";
        let mig = "MIG-0a1b2c3d-4e5f-6789-abcd-ef0123456789";
        let ok: &[(&str, &[&str])] = &[
            ("0", &["0"]),
            ("0,1,7", &["0", "1", "7"]),
            (" 2 , 3 ", &["2", "3"]),
            ("", &[]),
            (uuid, &[uuid]),
            (&format!("{uuid},{mig}"), &[uuid, mig]),
        ];
        for (value, want) in ok {
            let env = env_of(&[("G", value)]);
            assert_eq!(gpu_list(&env, "G").unwrap(), *want, "{value}");
        }
        for (value, words) in [
            ("all", "\"all\" is not a GPU id"),
            ("none", "not a GPU id"),
            ("void", "not a GPU id"),
            ("-1", "not a GPU id"),
            ("NoDevFiles", "not a GPU id"),
            ("0,all", "not a GPU id"),
            ("01", "not a GPU id"),
            ("+1", "not a GPU id"),
            ("12345", "not a GPU id"),
            ("GPU-all", "not a GPU id"),
            ("GPU-8f6c2b5e", "not a GPU id"),
            ("/dev/nvidia0", "not a GPU id"),
            ("0,0", "GPU 0 is named twice"),
            ("1,2,1", "named twice"),
            (&format!("{uuid},{}", uuid.to_uppercase()), "named twice"),
        ] {
            let env = env_of(&[("G", value)]);
            let err = gpu_list(&env, "G").unwrap_err().to_string();
            assert!(
                err.starts_with("G=") && err.contains(words),
                "{value}: {err}"
            );
        }
        let many: Vec<String> = (0..65).map(|i| i.to_string()).collect();
        let env = env_of(&[("G", &many.join(","))]);
        assert!(
            gpu_list(&env, "G")
                .unwrap_err()
                .to_string()
                .contains("MAX_GPUS")
        );
    }

    #[test]
    fn two_schedulers_at_once_is_refused() {
        let env = env_of(&[("LSB_JOBID", "1"), ("SLURM_JOB_ID", "2")]);
        assert_eq!(from_env(&env, None), Err(JobError::TwoSchedulers));
    }
}
