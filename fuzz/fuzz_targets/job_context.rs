//! Shared by `lsf_vars` and `slurm_vars`: a job environment from fuzzed input, and what any job
//! context the adapters accept must hold.

use jobdock::job::{self, Env, JobContext, JobError};

/// The adapters' view of a job whose `id_var` is `job_id` and whose other variables are `vars`,
/// each named by its index into `names`. An accepted context is checked before it is returned.
pub fn from_vars(
    id_var: &str,
    job_id: String,
    names: &[&str],
    vars: Vec<(u8, String)>,
) -> Result<JobContext, JobError> {
    let mut env = Env::new();
    env.insert(id_var.into(), job_id);
    for (which, value) in vars {
        env.insert(names[which as usize % names.len()].into(), value);
    }
    let ctx = job::from_env(&env, Some("/home/alice".into()))?;
    check(&ctx);
    Ok(ctx)
}

/// Ids go into container names and labels, paths into mounts: both must be plain.
pub fn check(ctx: &JobContext) {
    for id in [&ctx.job_id, &ctx.step].into_iter().flatten() {
        assert!(
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"[]._-".contains(&b)),
            "{id:?}"
        );
    }
    for path in [&ctx.job_file, &ctx.work_dir, &ctx.tmpdir]
        .into_iter()
        .flatten()
    {
        let text = path.to_str().unwrap();
        assert!(
            text.starts_with('/') && !text.contains(['\0', '\n']),
            "{text:?}"
        );
    }
}
