//! What Slurm hands jobdock: the job's `SLURM_*` variables and the cgroup the step runs in. Any
//! values either give a job context whose ids and paths are safe to put in a container name,
//! label and mount, or a refusal that names the variable; any `/proc/self/cgroup` text gives a
//! cgroup parent that stays a plain absolute path.
#![no_main]
use jobdock::job::cgroup::JobCgroup;
use libfuzzer_sys::fuzz_target;

mod job_context;

const NAMES: &[&str] = &[
    "SLURM_JOB_ID",
    "SLURM_JOBID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_STEP_ID",
    "SLURM_STEPID",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_NTASKS",
    "SLURM_CPUS_ON_NODE",
    "SLURM_MEM_PER_CPU",
    "SLURM_MEM_PER_NODE",
    "SLURM_JOB_GPUS",
    "SLURM_STEP_GPUS",
    "SLURM_JOB_UID",
    "SLURM_JOB_GID",
    "SLURM_JOB_USER",
    "SLURM_JOB_WORK_DIR",
    "SLURM_SUBMIT_DIR",
    "SLURM_TMPDIR",
    "SLURM_SCRIPT_CONTEXT",
    "SLURM_JOB_NODELIST",
    "CUDA_VISIBLE_DEVICES",
];

fuzz_target!(|input: (String, Vec<(u8, String)>, String, String)| {
    let (job_id, vars, proc_cgroup, driver) = input;
    if let Err(e) = job_context::from_vars("SLURM_JOB_ID", job_id, NAMES, vars) {
        assert!(e.to_string().contains("SLURM"));
    }

    if let Some(cgroup) = JobCgroup::parse(&proc_cgroup) {
        let parent = cgroup.parent_path();
        assert!(parent.is_absolute(), "{parent:?}");
        let _ = cgroup.docker_parent(&driver);
    }
});
