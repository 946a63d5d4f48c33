//! Shared by `lsf_vars` and `slurm_vars`: what any job context the adapters accept must hold.

use jobdock::job::JobContext;

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
    for path in [&ctx.script, &ctx.work_dir, &ctx.tmpdir]
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
