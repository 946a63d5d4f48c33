//! What runs in the container: the user's argv, their staged script or the LSF job file through
//! `/bin/sh`, or the image's own entrypoint (raw mode). Decides nothing else.

use crate::job::{Env, JobContext};
use crate::overrides::{self, Refusal, Setting};

use super::{PlanError, Request, SCRIPT_TARGET};

/// The command word with which LSF submits an entrypoint-only image (both IBM spellings).
pub(super) const PLACE_HOLDERS: &[&str] = &["LSB_DOCKER_PLACE_HOLDER", "LSB_DOCKER_PLACEHOLDER"];

/// The container's entrypoint and command, as the create body takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// `None`: the image's entrypoint (raw mode); `Some([])`: none at all.
    pub entrypoint: Option<Vec<String>>,
    /// `None`: the image's command.
    pub cmd: Option<Vec<String>>,
}

/// The command, from the request (argv, or the staged script), else the LSF job file, with
/// `LSB_DOCKER_ENTRYPOINT` and raw mode (`LSB_DOCKER_RUN_RAW_ARGS`, or the place-holder word).
pub(super) fn command(req: &Request, ctx: &JobContext, env: &Env) -> Result<Command, PlanError> {
    let get = |suffix: &str| overrides::setting(env, suffix);
    let entrypoint_override = get("ENTRYPOINT")?.map(|s| entrypoint(&s)).transpose()?;
    let raw = match get("RUN_RAW_ARGS")? {
        Some(s) => overrides::parse_bool(&s)?,
        None => false,
    } || (req.command.len() == 1 && PLACE_HOLDERS.contains(&req.command[0].as_str()));
    let (entrypoint, cmd) = if raw {
        let cmd = match req.command.as_slice() {
            [] => None,
            [word] if PLACE_HOLDERS.contains(&word.as_str()) => None,
            argv => Some(argv.to_vec()),
        };
        (entrypoint_override.map(|e| vec![e]), cmd)
    } else if !req.command.is_empty() {
        (
            Some(entrypoint_override.into_iter().collect()),
            Some(req.command.clone()),
        )
    } else if req.script.is_some() {
        let ep = entrypoint_override.unwrap_or_else(|| "/bin/sh".to_string());
        (Some(vec![ep]), Some(vec![SCRIPT_TARGET.to_string()]))
    } else if let Some(script) = &ctx.job_file {
        let ep = entrypoint_override.unwrap_or_else(|| "/bin/sh".to_string());
        (Some(vec![ep]), Some(vec![script.display().to_string()]))
    } else {
        return Err(PlanError::NoCommand);
    };
    Ok(Command { entrypoint, cmd })
}

/// `LSB_DOCKER_ENTRYPOINT`: one program path.
fn entrypoint(s: &Setting) -> Result<String, Refusal> {
    let e = s.value.trim();
    if e.is_empty() || e.len() > 4096 || e.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(s.refuse("must be one program path without spaces (e.g. /bin/bash)"));
    }
    Ok(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::env_of;

    fn v(words: &[&str]) -> Option<Vec<String>> {
        Some(words.iter().map(|w| w.to_string()).collect())
    }

    #[test]
    fn the_command_in_each_form() {
        let lsf = JobContext {
            job_file: Some("/home/alice/.lsbatch/1700000000.212".into()),
            ..Default::default()
        };
        let argv = |words: &[&str]| Request {
            command: words.iter().map(|w| w.to_string()).collect(),
            ..Default::default()
        };
        let script = Request {
            script: Some("echo hi\n".into()),
            ..Default::default()
        };
        // (name, request, context, env, entrypoint, cmd)
        let cases: Vec<(
            &str,
            Request,
            &JobContext,
            Env,
            Option<Vec<String>>,
            Option<Vec<String>>,
        )> = vec![
            (
                "argv resets the image's entrypoint",
                argv(&["id", "-u"]),
                &lsf,
                Env::new(),
                v(&[]),
                v(&["id", "-u"]),
            ),
            (
                "argv with LSB_DOCKER_ENTRYPOINT",
                argv(&["-c", "true"]),
                &lsf,
                env_of(&[("LSB_DOCKER_ENTRYPOINT", "/bin/bash")]),
                v(&["/bin/bash"]),
                v(&["-c", "true"]),
            ),
            (
                "the staged script through /bin/sh",
                script,
                &lsf,
                Env::new(),
                v(&["/bin/sh"]),
                v(&[SCRIPT_TARGET]),
            ),
            (
                "the LSF job file through /bin/sh",
                Request::default(),
                &lsf,
                Env::new(),
                v(&["/bin/sh"]),
                v(&["/home/alice/.lsbatch/1700000000.212"]),
            ),
            (
                "the place-holder word: the image's own",
                argv(&["LSB_DOCKER_PLACE_HOLDER"]),
                &lsf,
                Env::new(),
                None,
                None,
            ),
            (
                "raw mode keeps the image's entrypoint",
                argv(&["serve", "--port", "8080"]),
                &lsf,
                env_of(&[("LSF_DOCKER_RUN_RAW_ARGS", "1")]),
                None,
                v(&["serve", "--port", "8080"]),
            ),
        ];
        for (name, req, ctx, env, entrypoint, cmd) in cases {
            let got = command(&req, ctx, &env).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, Command { entrypoint, cmd }, "{name}");
        }
    }

    #[test]
    fn refusals() {
        let none = command(&Request::default(), &JobContext::default(), &Env::new());
        assert!(matches!(none, Err(PlanError::NoCommand)));
        for bad in ["", "/bin/sh -c", "a\nb"] {
            let env = env_of(&[("LSB_DOCKER_ENTRYPOINT", bad)]);
            let req = Request {
                command: vec!["true".into()],
                ..Default::default()
            };
            let err = command(&req, &JobContext::default(), &env).unwrap_err();
            assert!(
                err.to_string().contains("LSB_DOCKER_ENTRYPOINT"),
                "{bad:?}: {err}"
            );
        }
    }
}
