//! `jobdock esub`: LSF's submit-time hook. Turns `-a 'docker(IMAGE)'` into `LSB_CONTAINER_IMAGE`
//! and the application profile, and rejects a job whose `LSB_DOCKER_*` settings the site policy
//! would refuse, while the user is still at the terminal. Works with both dialects: LSF 10 runs
//! `esub.docker` with `LSB_SUB_ADDITIONAL` in the environment; older LSF-family schedulers run one
//! `esub` and write the `-a` string only to the parm file. Pure: the caller reads and writes files.

use std::path::{Path, PathBuf};

use crate::config::SiteConfig;
use crate::identity::Identity;
use crate::image::ImageRef;
use crate::job::{Env, JobContext, Scheduler};
use crate::plan::{self, Request, Snapshot};
use crate::probe::{HostProbe, Kind, Resolved};

/// What the esub asks LSF to change.
#[derive(Debug, PartialEq, Eq)]
pub struct Changes {
    /// Lines for `LSB_SUB_MODIFY_ENVFILE` (the job's environment).
    pub env: Vec<String>,
    /// Lines for `LSB_SUB_MODIFY_FILE` (the submission itself).
    pub submission: Vec<String>,
}

/// Reads `NAME="value"` and `NAME=number` lines of an LSF parm file. Values are unquoted;
/// LSF escapes an inner `"` as `\"`.
pub fn parse_parm_file(text: &str) -> Env {
    let mut out = Env::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\\\"", "\""),
            None => value.to_string(),
        };
        out.insert(name.trim().to_string(), value);
    }
    out
}

/// Why the esub rejects a job, as the user at the terminal reads it.
#[derive(Debug, thiserror::Error)]
pub enum EsubError {
    #[error("-a {method:?}: missing \")\"")]
    Unclosed { method: String },
    #[error(
        "-a {method:?}: no such method; did you mean docker(...)? (without it the job would run \
         outside any container)"
    )]
    Misspelt { method: String },
    #[error("-a docker needs an image: bsub -a 'docker(IMAGE)' ...")]
    NoImage,
    #[error(transparent)]
    Image(#[from] crate::image::ImageRefError),
    /// The execution host's planner would reject the job's settings.
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
}

/// The image named by a `docker(...)` method in the `-a` string, if the job asked for docker:
/// `docker(alpine)`, `docker(image=alpine)`; `Some(None)` for a bare `docker`.
pub fn docker_method(additional: &str) -> Result<Option<Option<String>>, EsubError> {
    for method in split_methods(additional) {
        let (name, args) = match method.split_once('(') {
            Some((name, rest)) => {
                let args = rest.strip_suffix(')').ok_or_else(|| EsubError::Unclosed {
                    method: method.to_string(),
                })?;
                (name.trim(), Some(args.trim()))
            }
            None => (method.trim(), None),
        };
        if name != "docker" {
            if close_to_docker(name) {
                return Err(EsubError::Misspelt {
                    method: method.to_string(),
                });
            }
            continue;
        }
        let image = match args {
            None | Some("") => None,
            Some(a) => Some(a.strip_prefix("image=").unwrap_or(a).trim().to_string()),
        };
        return Ok(Some(image));
    }
    Ok(None)
}

/// A method name one or two edits from `docker` (`dcoker`, `Docker`, `dokcer`, `docke`): a typo
/// that would run the job on the host. (`dockerish` and other real names are three or more away.)
fn close_to_docker(name: &str) -> bool {
    crate::overrides::edit_distance(name, "docker") <= 2
}

/// `-a "docker(alpine) other(x y)"` -> `docker(alpine)`, `other(x y)`: whitespace separates
/// methods except inside parentheses.
fn split_methods(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, None);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if c.is_whitespace() && depth == 0 => {
                if let Some(st) = start.take() {
                    out.push(&s[st..i]);
                }
                continue;
            }
            _ => {}
        }
        start.get_or_insert(i);
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

/// Where docker jobs go: LSF 10's application profile, or (schedulers without application
/// profiles, such as OpenLava) a queue whose JOB_STARTER is jobdock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    /// `LSB_SUB_APP_NAME`, written only in LSF 10's dialect (`LSB_SUB_ADDITIONAL` in the
    /// environment): OpenLava warns about the line on every bsub and ignores it.
    pub application: String,
    /// `LSB_SUB_QUEUE`, written only in the older dialect, when the site names a queue.
    pub queue: Option<String>,
}

/// Decides the esub's answer. `Ok(None)`: not a docker job, nothing to do. `Err`: reject the job
/// with this reason.
pub fn decide(
    env: &Env,
    parm: &Env,
    config: &SiteConfig,
    id: &Identity,
    cwd: Option<PathBuf>,
    routing: &Routing,
    probe: &dyn HostProbe,
) -> Result<Option<Changes>, EsubError> {
    // LSF 10 runs esub.<method> with the -a string in the environment; the older dialect runs one
    // esub and writes it only to the parm file. Only LSF 10 has application profiles.
    let lsf10 = env.contains_key("LSB_SUB_ADDITIONAL");
    let additional = env
        .get("LSB_SUB_ADDITIONAL")
        .or(parm.get("LSB_SUB_ADDITIONAL"))
        .map(String::as_str)
        .unwrap_or("");
    let Some(image) = docker_method(additional)? else {
        return Ok(None);
    };
    let image = match image.or_else(|| env.get("LSB_CONTAINER_IMAGE").cloned()) {
        Some(i) => ImageRef::parse(&i)?,
        None => return Err(EsubError::NoImage),
    };
    // Check the user's settings exactly as the execution host will, minus what only it can know.
    let ctx = JobContext {
        scheduler: Some(Scheduler::Lsf),
        job_id: Some("0".into()),
        work_dir: cwd.clone(),
        ..Default::default()
    };
    let snap = Snapshot {
        env: env.clone(),
        cwd,
        caller: crate::identity::Caller {
            real_uid: id.uid,
            real_gid: id.gid,
        },
        pid: std::process::id(),
        hostname: "submit".into(),
        host_cpus: 1,
        stdin_is_tty: false,
        token: "esub".into(),
        cgroup: None,
        cgroup_memory_limit: None,
        cpus_allowed: None,
        cgroup_cpus: None,
        rlimits: Vec::new(),
        exe: None,
    };
    let req = Request {
        image: Some(image.to_string()),
        command: vec!["true".into()],
        script: None,
    };
    plan::build(&req, &snap, config, &ctx, id, probe)?;
    Ok(Some(Changes {
        env: vec![format!("LSB_CONTAINER_IMAGE=\"{image}\"")],
        submission: if lsf10 {
            vec![format!("LSB_SUB_APP_NAME=\"{}\"", routing.application)]
        } else {
            routing
                .queue
                .iter()
                .map(|q| format!("LSB_SUB_QUEUE=\"{q}\""))
                .collect()
        },
    }))
}

/// The submission host's view of paths: the execution host's file systems may differ, so a path
/// is judged by its text alone (allowed roots, sensitive paths); files the user names are still
/// read, as the user that the esub runs as.
pub struct SubmitProbe;

impl HostProbe for SubmitProbe {
    fn resolve(&self, path: &Path) -> Result<Resolved, crate::probe::ProbeError> {
        Ok(Resolved {
            path: crate::overrides::paths::normalize(path),
            kind: Kind::Dir,
            id: None,
            owner: None,
        })
    }

    fn read_file(&self, path: &Path, max: u64) -> Result<String, crate::probe::ProbeError> {
        let caller = crate::identity::Caller::current();
        crate::probe::AsUser {
            uid: caller.real_uid,
            gid: caller.real_gid,
            groups: vec![],
        }
        .read_file(path, max)
    }

    fn devices(&self, _glob: &str) -> Vec<PathBuf> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::fake::FakeDb;
    use crate::identity::{Caller, resolve};
    use crate::job::env_of;

    fn alice() -> Identity {
        resolve(
            Caller {
                real_uid: 2001,
                real_gid: 2001,
            },
            None,
            &JobContext::default(),
            &Env::new(),
            &FakeDb::site(),
        )
        .unwrap()
    }

    fn site() -> SiteConfig {
        SiteConfig::parse("[mounts]\nallowed_roots = [\"/gpfs\"]\n").unwrap()
    }

    fn run(env: &[(&str, &str)], parm: &str) -> Result<Option<Changes>, EsubError> {
        decide(
            &env_of(env),
            &parse_parm_file(parm),
            &site(),
            &alice(),
            Some("/home/alice/work".into()),
            &Routing {
                application: "docker".into(),
                queue: Some("docker".into()),
            },
            &SubmitProbe,
        )
    }

    const PARM: &str =
        "LSB_SUB_QUEUE=\"docker\"\nLSB_SUB_OUT_FILE=\"/tmp/out.%J\"\nLSB_SUB_NUM_PROCESSORS=1\n";

    #[test]
    fn lsf10_dialect_reads_the_environment() {
        let c = run(&[("LSB_SUB_ADDITIONAL", "docker(alpine)")], PARM)
            .unwrap()
            .unwrap();
        assert_eq!(c.env, ["LSB_CONTAINER_IMAGE=\"alpine:latest\""]);
        assert_eq!(c.submission, ["LSB_SUB_APP_NAME=\"docker\""]);
    }

    #[test]
    fn openlava_dialect_reads_the_parm_file() {
        let parm =
            format!("{PARM}LSB_SUB_ADDITIONAL=\"docker(image=127.0.0.1:5000/lab/tool:2)\"\n");
        let c = run(&[], &parm).unwrap().unwrap();
        assert_eq!(c.env, ["LSB_CONTAINER_IMAGE=\"127.0.0.1:5000/lab/tool:2\""]);
        // No application profiles there: the queue, and no LSB_SUB_APP_NAME line to warn about.
        assert_eq!(c.submission, ["LSB_SUB_QUEUE=\"docker\""]);
    }

    /// `-a 'dcoker(img)'` would run the job on the host without a word: refused, naming it.
    #[test]
    fn a_misspelled_docker_method_is_refused() {
        for typo in [
            "dcoker(alpine)",
            "Docker(alpine)",
            "dokcer",
            "docke(alpine)",
            "dockr(x)",
        ] {
            let err = docker_method(typo).unwrap_err();
            assert!(matches!(err, EsubError::Misspelt { .. }), "{typo}: {err:?}");
            assert!(
                err.to_string().contains("did you mean docker"),
                "{typo}: {err}"
            );
        }
        for other in ["dockerish(x)", "gpu(num=2)", "openmp", "cuda(x)"] {
            assert_eq!(docker_method(other).unwrap(), None, "{other}");
        }
    }

    #[test]
    fn not_a_docker_job_is_left_alone() {
        assert_eq!(run(&[], PARM).unwrap(), None);
        assert_eq!(
            run(&[("LSB_SUB_ADDITIONAL", "dockerish(x) other")], PARM).unwrap(),
            None
        );
    }

    #[test]
    fn methods_with_spaces_and_several_methods() {
        assert_eq!(
            docker_method("gpu(num=2) docker(alpine)").unwrap(),
            Some(Some("alpine".into()))
        );
        assert_eq!(docker_method("docker").unwrap(), Some(None));
        assert!(matches!(
            docker_method("docker(alpine"),
            Err(EsubError::Unclosed { .. })
        ));
    }

    #[test]
    fn bad_settings_are_rejected_at_submit_time() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("LSB_SUB_ADDITIONAL", "docker(--privileged)")],
                "not a valid image reference",
            ),
            (&[("LSB_SUB_ADDITIONAL", "docker")], "needs an image"),
            (
                &[
                    ("LSB_SUB_ADDITIONAL", "docker(alpine)"),
                    ("LSB_DOCKER_VOLUMES", "/etc:/x"),
                ],
                "LSB_DOCKER_VOLUMES",
            ),
            (
                &[
                    ("LSB_SUB_ADDITIONAL", "docker(alpine)"),
                    ("LSF_DOCKER_NETWORK", "container:x"),
                ],
                "LSF_DOCKER_NETWORK",
            ),
            (
                &[
                    ("LSB_SUB_ADDITIONAL", "docker(alpine)"),
                    ("LSB_DOCKER_SHM_SIZE", "1t"),
                ],
                "shm_size_max",
            ),
            (
                &[
                    ("LSB_SUB_ADDITIONAL", "docker(alpine)"),
                    ("LSB_DOCKER_VOLUMES", "/scratch/x:/x"),
                ],
                "outside the allowed roots",
            ),
        ];
        for (env, want) in cases {
            let err = run(env, PARM).unwrap_err().to_string();
            assert!(err.contains(want), "{env:?}: {err}");
        }
        assert!(
            run(
                &[
                    ("LSB_SUB_ADDITIONAL", "docker(alpine)"),
                    ("LSB_DOCKER_VOLUMES", "/gpfs/lab:/lab:ro")
                ],
                PARM
            )
            .is_ok()
        );
    }

    #[test]
    fn parm_file_values() {
        let p = parse_parm_file("A=\"x y\"\nB=3\nC=\"say \\\"hi\\\"\"\ngarbage\n");
        assert_eq!(p["A"], "x y");
        assert_eq!(p["B"], "3");
        assert_eq!(p["C"], "say \"hi\"");
        assert_eq!(p.len(), 3);
    }
}
