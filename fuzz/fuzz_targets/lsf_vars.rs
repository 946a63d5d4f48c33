//! What LSF hands jobdock: the job's `LSB_*` variables, the esub's parm file and `-a` string, and
//! the job file the starter reads the user's command from. Any values either give a job context
//! whose ids and paths are safe to put in a container name, label and mount, or a refusal that
//! names the variable.
#![no_main]
use jobdock::esub::{docker_method, parse_parm_file};
use jobdock::job::lsf;
use libfuzzer_sys::fuzz_target;

mod job_context;

const NAMES: &[&str] = &[
    "LSB_JOBID",
    "LSB_JOBINDEX",
    "LSB_JOBINDEX_END",
    "LSB_JOBNAME",
    "LSB_JOBFILENAME",
    "LSB_JOB_EXECUSER",
    "LSB_JOB_TMPDIR",
    "LSB_DJOB_NUMPROC",
    "LSB_MAX_NUM_PROCESSORS",
    "LSB_MCPU_HOSTS",
    "LSB_HOSTS",
    "LSB_EFFECTIVE_RSRCREQ",
    "LSB_CONTAINER_IMAGE",
    "LSB_QUEUE",
    "LSB_ACCT_FILE",
    "LSB_TRAPSIGS",
    "LSB_EXIT_PRE_ABORT",
    "LSB_JOBEXIT_STAT",
    "LSB_SUB_ADDITIONAL",
    "CUDA_VISIBLE_DEVICES",
    "PWD",
];

fuzz_target!(
    |input: (String, Vec<(u8, String)>, String, String, String)| {
        let (job_id, vars, parm_file, job_file, starter) = input;
        if let Err(e) = job_context::from_vars("LSB_JOBID", job_id, NAMES, vars) {
            assert!(e.to_string().contains("LSB_") || e.to_string().contains('='));
        }

        let parm = parse_parm_file(&parm_file);
        if let Some(additional) = parm.get("LSB_SUB_ADDITIONAL") {
            let _ = docker_method(additional);
        }
        let _ = docker_method(&parm_file);
        let _ = lsf::user_command(&job_file, &starter);
    }
);
