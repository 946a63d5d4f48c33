//! The container's environment: the job's own (when preserved; the scheduler's variables always),
//! the user's env files, then the values jobdock owns (identity, tmpdir, GPUs) and the site's
//! `env.set`, within `MAX_ENV_BYTES`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::SiteConfig;
use crate::identity::Identity;
use crate::job::{Env, JobContext};
use crate::overrides::paths;
use crate::overrides::{self, Refusal, Setting, env as envpolicy};
use crate::probe::HostProbe;

use super::PlanError;

/// Largest env file or add-host file jobdock reads.
pub(super) const MAX_USER_FILE: u64 = 64 * 1024;

/// Most names one `LSB_DOCKER_ENV` may list.
pub(super) const MAX_ENV_NAMES: usize = 256;

/// Most files one `LSB_DOCKER_ENV_FILE` or `LSB_DOCKER_ADD_HOST_FILE` may name.
pub const MAX_USER_FILES: usize = 16;

/// Largest environment a container gets, in bytes (`NAME=value` and its NUL, for every variable:
/// the job's preserved environment, env files and jobdock's own). The kernel refuses an `exec`
/// whose arguments and environment exceed a quarter of the stack limit (2 MiB at the usual 8 MiB)
/// with E2BIG; this leaves the command line room, and keeps dockerd's stored config small.
pub const MAX_ENV_BYTES: usize = 256 * 1024;

/// The container's environment. Env files are read through `probe` (as the user);
/// `tmp_inside_tmp` is the job's tmpdir when the container shows it only as `/tmp`; `image`
/// goes in front of the user's prompt (`PS1`).
pub(super) fn environment(
    env: &Env,
    image: &crate::image::ImageRef,
    config: &SiteConfig,
    ctx: &JobContext,
    who: &Identity,
    tmp_inside_tmp: Option<&Path>,
    probe: &dyn HostProbe,
) -> Result<BTreeMap<String, String>, PlanError> {
    let get = |suffix: &str| overrides::setting(env, suffix);
    // Environment: the job's (if preserved), the user's env files, then the values jobdock owns.
    let preserve = match get("PRESERVE_ENVIRONMENT")? {
        Some(s) => overrides::parse_bool(&s)?,
        None => true,
    };
    let mut container_env = BTreeMap::new();
    // Without the job's environment, the scheduler's own variables still go in: MPI launchers
    // and tools inside the job read them.
    let scheduler_var = |k: &str| {
        ["SLURM_", "SLURMD_", "PMIX_", "PMI_", "LSB_", "LS_"]
            .iter()
            .any(|p| k.starts_with(p))
    };
    for (k, v) in env.iter().filter(|(k, v)| {
        (preserve || scheduler_var(k)) && envpolicy::preserved(k, v, &config.env.drop)
    }) {
        container_env.insert(k.clone(), v.clone());
    }
    // LSB_DOCKER_ENV (srun --container-env): names that must reach the container with the job's
    // value, also when the rest of its environment is not preserved; one jobdock would not pass is
    // refused rather than silently missing.
    if let Some(s) = get("ENV")? {
        let names: Vec<&str> = s
            .value
            .split([' ', ','])
            .filter(|n| !n.is_empty())
            .collect();
        if names.len() > MAX_ENV_NAMES {
            return Err(s
                .refuse(format!(
                    "{} names, more than the {MAX_ENV_NAMES} one variable may list (MAX_ENV_NAMES)",
                    names.len()
                ))
                .into());
        }
        for name in names {
            let Some(value) = env.get(name) else {
                return Err(s
                    .refuse(format!("{name} is not set in the job's environment"))
                    .into());
            };
            if !envpolicy::valid_name(name) {
                return Err(s
                    .refuse(format!("{name:?} is not a valid variable name"))
                    .into());
            }
            if !envpolicy::preserved(name, value, &config.env.drop) {
                let why = if config.env.drop.iter().any(|d| d == name) {
                    "the site keeps it out of containers (env.drop)"
                } else if envpolicy::OWNED.contains(&name) {
                    "it is set by jobdock for each job"
                } else {
                    "it is never passed into a container (the host's own, or jobdock's)"
                };
                return Err(s.refuse(format!("{name}: {why}")).into());
            }
            container_env.insert(name.to_string(), value.clone());
        }
    }
    let env_files = get("ENV_FILE")?;
    if let Some(s) = &env_files {
        for file in user_files(s)? {
            let path = Path::new(file);
            let text = probe
                .read_file(path, MAX_USER_FILE)
                .map_err(|e| s.refuse(e))?;
            container_env.extend(envpolicy::parse_env_file(&text, file).map_err(|e| s.refuse(e))?);
        }
    }
    // The job's tmpdir is /tmp in the container (and, under /tmp, only there).
    if let Some(t) = tmp_inside_tmp {
        for v in container_env.values_mut() {
            if Path::new(v.as_str()) == t {
                *v = "/tmp".into();
            }
        }
    }
    // A prompt that says where the user is: a shell in the container looks like the node's.
    if let Some(ps1) = container_env.get_mut("PS1") {
        *ps1 = format!("({image}) {ps1}");
    }
    container_env.insert("HOME".into(), who.home.display().to_string());
    container_env.insert("USER".into(), who.name.clone());
    container_env.insert("LOGNAME".into(), who.name.clone());
    container_env.insert("TMPDIR".into(), "/tmp".into());
    if !ctx.gpus.is_empty() {
        let visible: Vec<String> = (0..ctx.gpus.len()).map(|i| i.to_string()).collect();
        container_env.insert("CUDA_VISIBLE_DEVICES".into(), visible.join(","));
    }
    container_env.extend(config.env.set.clone());
    let env_bytes: usize = container_env
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum();
    if env_bytes > MAX_ENV_BYTES {
        let rule = format!(
            "the container's environment would be {env_bytes} bytes (the job's preserved \
             environment and the env files), more than the {MAX_ENV_BYTES} a job may have \
             (MAX_ENV_BYTES)"
        );
        return Err(match &env_files {
            Some(s) => s.refuse(rule).into(),
            None => PlanError::Path {
                what: "job environment",
                path: format!("of {} variables", container_env.len()),
                reason: format!(
                    "{rule}; unset large variables, or set LSB_DOCKER_PRESERVE_ENVIRONMENT=false"
                ),
            },
        });
    }

    Ok(container_env)
}

/// The files a `*_FILE` variable names: absolute, each once (lexically), at most
/// `MAX_USER_FILES`.
pub(super) fn user_files(s: &Setting) -> Result<Vec<&str>, Refusal> {
    let mut seen = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    for file in s.value.split_whitespace() {
        if !file.starts_with('/') {
            return Err(s.refuse(format!("{file:?} is not an absolute path")));
        }
        if !seen.insert(paths::normalize(Path::new(file))) {
            return Err(s.refuse(format!("{file} is named twice")));
        }
        files.push(file);
    }
    if files.len() > MAX_USER_FILES {
        return Err(s.refuse(format!(
            "{} files, more than the {MAX_USER_FILES} one variable may name (MAX_USER_FILES)",
            files.len()
        )));
    }
    Ok(files)
}
