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
    pub job_file: Option<PathBuf>,
    /// Where the job runs: the container's working directory, mounted at the same path.
    pub work_dir: Option<PathBuf>,
    /// The job's private temporary directory, mounted at `/tmp`.
    pub tmpdir: Option<PathBuf>,
    /// The tmpdir is where the scheduler's convention puts one (LSF's `/tmp/<jobid>.tmpdir`),
    /// not one a variable names: that there is none there is no news.
    pub tmpdir_by_convention: bool,
    /// CPUs allocated to the job on this node.
    pub cpus: Option<u32>,
    /// Memory allocated to the job on this node, in bytes.
    pub memory: Option<u64>,
    /// GPUs allocated to the job, by the host's (global) ids.
    pub gpus: Vec<String>,
    /// The job's user as the scheduler states it (`SLURM_JOB_UID`); trusted only from a root caller.
    pub scheduler_uid: Option<u32>,
    /// jobdock really runs in this job: its cgroup is the job's (or a root caller vouches for the
    /// environment). Only then do the job's cgroup, CPU set and allocation count (`confirm`).
    pub confirmed: bool,
    /// What `confirm` set aside from the environment, and why: for the user.
    pub notes: Vec<String>,
    /// Where this task stands in a parallel step (Slurm: cluster, node, step, tasks on this
    /// node). These variables only decide which of the user's own step containers a task joins
    /// and how long it lives; the job itself is still the cgroup's (`confirm`).
    pub parallel: Option<Parallel>,
}

/// A task of a parallel job step, as the scheduler describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parallel {
    /// `SLURM_CLUSTER_NAME`: one dockerd may serve nodes of several clusters.
    pub cluster: String,
    /// `SLURMD_NODENAME`: one host may run several nodes (multiple slurmd).
    pub node: String,
    /// The step alone (`0`), without the task.
    pub step: String,
    /// The step's tasks on this node (`SLURM_STEP_TASKS_PER_NODE` at `SLURM_NODEID`).
    pub local_tasks: u32,
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
    #[error(
        "the environment says this is an {claimed} job, but jobdock runs in {real} job {job}'s cgroup: unset the {claimed} variables"
    )]
    OtherScheduler {
        claimed: &'static str,
        real: &'static str,
        job: String,
    },
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

/// Checks the job the environment names against the one jobdock's cgroup belongs to, which the
/// scheduler made and the user cannot forge (`SLURM_JOB_ID` and `LSB_JOBID` are only variables).
/// - In a job's cgroup, that job is the job: its id replaces whatever the environment says, and
///   an allocation stated for another job (or none) is set aside; the cgroup's limits hold.
/// - In no job's cgroup, a non-root caller's job variables name no job jobdock can confirm: the
///   id still labels the container (LSF's POST_EXEC finds it by that), but no allocation, GPU or
///   cgroup of the environment's counts, and the site's limits hold.
/// - A root caller (a prolog, an execution driver) vouches for the environment it passes.
pub fn confirm(
    mut ctx: JobContext,
    cgroup: Option<&cgroup::JobCgroup>,
    caller_is_root: bool,
) -> Result<JobContext, JobError> {
    let from_cgroup = cgroup.and_then(cgroup::JobCgroup::job);
    let Some(real) = from_cgroup else {
        ctx.confirmed = ctx.scheduler() != Scheduler::None && caller_is_root;
        if ctx.scheduler() != Scheduler::None && !ctx.confirmed {
            let claimed = set_aside_allocation(&mut ctx);
            if !claimed.is_empty() {
                ctx.notes.push(format!(
                    "jobdock does not run in the cgroup of {} job {}: {}the site's limits apply",
                    ctx.scheduler().name(),
                    ctx.job_id.as_deref().unwrap_or("?"),
                    claimed
                ));
            }
        }
        return Ok(ctx);
    };
    match ctx.scheduler() {
        Scheduler::None => {
            ctx.notes.push(format!(
                "no job variables, but jobdock runs in {} job {}'s cgroup: the container is that job's",
                real.scheduler.name(),
                real.job_id
            ));
        }
        s if s != real.scheduler => {
            return Err(JobError::OtherScheduler {
                claimed: s.name(),
                real: real.scheduler.name(),
                job: real.job_id,
            });
        }
        _ if ctx.job_id.as_deref() != Some(real.job_id.as_str()) => {
            let claimed = set_aside_allocation(&mut ctx);
            ctx.notes.push(format!(
                "the environment names job {}, but jobdock runs in job {}'s cgroup: the container \
                 is job {}'s; {}",
                ctx.job_id.as_deref().unwrap_or("?"),
                real.job_id,
                real.job_id,
                if claimed.is_empty() {
                    "its cgroup's limits apply".to_string()
                } else {
                    format!("{claimed}its cgroup's limits apply")
                }
            ));
        }
        _ => {}
    }
    ctx.scheduler = Some(real.scheduler);
    ctx.job_id = Some(real.job_id);
    ctx.array_index = real.array_index.or(ctx.array_index);
    ctx.confirmed = true;
    Ok(ctx)
}

/// Drops what the environment states that could give the job more than the site's defaults:
/// memory above `limits.memory`, and GPUs. (A CPU count only ever limits: without one the job
/// may use every CPU its CPU set allows.) Says what was dropped (`"... ignored; "`).
fn set_aside_allocation(ctx: &mut JobContext) -> String {
    let mut dropped = Vec::new();
    if ctx.memory.take().is_some() {
        dropped.push("memory");
    }
    if !std::mem::take(&mut ctx.gpus).is_empty() {
        dropped.push("GPUs");
    }
    if dropped.is_empty() {
        String::new()
    } else {
        format!("the {} it states are ignored; ", dropped.join(", "))
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

    /// The job is the one the cgroup names, whatever the environment says (issue 11.6).
    #[test]
    fn the_cgroup_not_the_environment_names_the_job() {
        let slurm_cg =
            cgroup::JobCgroup::parse("4:memory:/slurm_vm/uid_2001/job_42/step_0/task_0\n");
        let session_cg = cgroup::JobCgroup::parse("4:memory:/user.slice/user-2001.slice\n");
        let job42 = [
            ("SLURM_JOB_ID", "42"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_MEM_PER_NODE", "64"),
            ("SLURM_CPUS_ON_NODE", "2"),
            ("SLURM_STEP_GPUS", "1"),
        ];
        let forged = [
            ("SLURM_JOB_ID", "7"),
            ("SLURM_MEM_PER_NODE", "1048576"),
            ("SLURM_STEP_GPUS", "0,1"),
        ];
        // (name, env, cgroup, root caller, want: scheduler, job id, confirmed, memory, gpus, note)
        type Want = (
            Scheduler,
            Option<&'static str>,
            bool,
            Option<u64>,
            usize,
            &'static str,
        );
        let cases: Vec<(
            &str,
            &[(&str, &str)],
            &Option<cgroup::JobCgroup>,
            bool,
            Want,
        )> = vec![
            (
                "the job's own variables in its cgroup",
                &job42,
                &slurm_cg,
                false,
                (Scheduler::Slurm, Some("42"), true, Some(64 << 20), 1, ""),
            ),
            (
                "variables unset in a job: the job still",
                &[],
                &slurm_cg,
                false,
                (
                    Scheduler::Slurm,
                    Some("42"),
                    true,
                    None,
                    0,
                    "no job variables",
                ),
            ),
            (
                "another job's id and allocation in a job: this job, no allocation",
                &forged,
                &slurm_cg,
                false,
                (Scheduler::Slurm, Some("42"), true, None, 0, "names job 7"),
            ),
            (
                "a forged job outside any: labelled, but nothing of it counts",
                &forged,
                &session_cg,
                false,
                (
                    Scheduler::Slurm,
                    Some("7"),
                    false,
                    None,
                    0,
                    "memory, GPUs it states are ignored",
                ),
            ),
            (
                "no cgroup at all",
                &forged,
                &None,
                false,
                (
                    Scheduler::Slurm,
                    Some("7"),
                    false,
                    None,
                    0,
                    "does not run in the cgroup",
                ),
            ),
            (
                "an LSF job without cgroup tracking: its id labels, its slots limit, no note",
                &[("LSB_JOBID", "212"), ("LSB_DJOB_NUMPROC", "2")],
                &None,
                false,
                (Scheduler::Lsf, Some("212"), false, None, 0, ""),
            ),
            (
                "a root caller (prolog) vouches for the environment",
                &forged,
                &None,
                true,
                (Scheduler::Slurm, Some("7"), true, Some(1 << 40), 2, ""),
            ),
            (
                "outside a job, nothing claimed",
                &[],
                &session_cg,
                false,
                (Scheduler::None, None, false, None, 0, ""),
            ),
        ];
        for (name, env, cg, root, want) in cases {
            let ctx = confirm(from_env(&env_of(env), None).unwrap(), cg.as_ref(), root).unwrap();
            let (scheduler, id, confirmed, memory, gpus, note) = want;
            assert_eq!(ctx.scheduler(), scheduler, "{name}");
            assert_eq!(ctx.job_id.as_deref(), id, "{name}");
            assert_eq!(ctx.confirmed, confirmed, "{name}");
            assert_eq!(ctx.memory, memory, "{name}");
            assert_eq!(ctx.gpus.len(), gpus, "{name}");
            if note.is_empty() {
                assert!(ctx.notes.is_empty(), "{name}: {:?}", ctx.notes);
            } else {
                assert!(
                    ctx.notes.iter().any(|n| n.contains(note)),
                    "{name}: {:?}",
                    ctx.notes
                );
            }
        }
        // An LSF environment in a Slurm job's cgroup is refused, naming both.
        let lsf = env_of(&[("LSB_JOBID", "212")]);
        let err = confirm(from_env(&lsf, None).unwrap(), slurm_cg.as_ref(), false).unwrap_err();
        assert!(err.to_string().contains("slurm job 42"), "{err}");
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
