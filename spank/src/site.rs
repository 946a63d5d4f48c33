//! The site's settings: the plugstack.conf arguments after the plugin's path (root-owned, as
//! plugstack.conf is). Anything unknown is refused, so a misspelt `enforce` fails every job
//! loudly instead of letting steps run uncontained.

/// What the plugstack line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Site {
    /// The setuid jobdock the tasks exec.
    pub(crate) jobdock: String,
    /// Every step (but the extern and interactive ones) in a container.
    pub(crate) enforce: bool,
    /// The image of a step that names none.
    pub(crate) default_image: Option<String>,
    /// The options in sbatch/salloc too, and the batch step in a container.
    pub(crate) sbatch: bool,
}

pub(crate) const DEFAULT_JOBDOCK: &str = "/usr/local/bin/jobdock";

/// Parses `key=value` words: `jobdock=PATH`, `enforce=BOOL`, `default_image=IMAGE`,
/// `sbatch=BOOL`.
pub(crate) fn parse(args: &[String]) -> Result<Site, String> {
    let mut site = Site {
        jobdock: DEFAULT_JOBDOCK.into(),
        enforce: false,
        default_image: None,
        sbatch: false,
    };
    for arg in args {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(format!(
                "plugstack argument {arg:?} is not KEY=VALUE (jobdock=, enforce=, default_image=, sbatch=)"
            ));
        };
        let flag = || match value {
            "1" | "yes" | "true" => Ok(true),
            "0" | "no" | "false" => Ok(false),
            _ => Err(format!(
                "plugstack argument {key}={value:?}: must be 1 or 0"
            )),
        };
        match key {
            "jobdock" => {
                if !value.starts_with('/') || value.contains(|c: char| c.is_control()) {
                    return Err(format!(
                        "plugstack argument jobdock={value:?}: must be an absolute path"
                    ));
                }
                site.jobdock = value.into();
            }
            "enforce" => site.enforce = flag()?,
            "sbatch" => site.sbatch = flag()?,
            "default_image" => {
                crate::options::check_value("default_image", value)?;
                site.default_image = Some(value.into());
            }
            _ => {
                return Err(format!(
                    "unknown plugstack argument {key:?} (jobdock=, enforce=, default_image=, sbatch=)"
                ));
            }
        }
    }
    Ok(site)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn plugstack_arguments() {
        let site = parse(&[]).unwrap();
        assert_eq!(site.jobdock, DEFAULT_JOBDOCK);
        assert!(!site.enforce && !site.sbatch && site.default_image.is_none());
        let site = parse(&words(
            "jobdock=/opt/jd/bin/jobdock enforce=1 sbatch=yes default_image=alpine",
        ))
        .unwrap();
        assert_eq!(site.jobdock, "/opt/jd/bin/jobdock");
        assert!(site.enforce && site.sbatch);
        assert_eq!(site.default_image.as_deref(), Some("alpine"));
        for (bad, want) in [
            ("enforce", "not KEY=VALUE"),
            ("enforce=maybe", "must be 1 or 0"),
            ("enforced=1", "unknown plugstack argument"),
            ("jobdock=jobdock", "absolute path"),
            ("default_image=", "default_image: must not be empty"),
        ] {
            let err = parse(&words(bad)).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
