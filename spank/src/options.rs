//! The srun/sbatch options, with the names users of Slurm container plugins know, and their
//! values. Only well-formedness is checked here (not empty, no control characters, bounded):
//! what a value may mean is jobdock's to decide, which refuses it under the option's name.

/// One option as Slurm registers it (`struct spank_option`).
#[derive(Clone, Copy, Debug)]
// Read by ffi.rs, which test builds and the test-hooks build leave out or do not use.
#[cfg_attr(any(test, feature = "test-hooks"), allow(dead_code))]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    /// The argument's one-word description; `None`: a flag.
    pub(crate) arginfo: Option<&'static str>,
    pub(crate) usage: &'static str,
    pub(crate) opt: Opt,
}

/// Which option a callback is for (its `val`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opt {
    Image = 1,
    Mounts,
    Workdir,
    Env,
    Entrypoint,
    NoEntrypoint,
    MountHome,
    NoMountHome,
    Name,
}

impl Opt {
    pub(crate) fn from_val(val: i32) -> Option<Opt> {
        OPTIONS.iter().map(|s| s.opt).find(|o| *o as i32 == val)
    }
}

/// Every option.
pub(crate) const OPTIONS: &[Spec] = &[
    Spec {
        name: "container-image",
        arginfo: Some("IMAGE"),
        usage: "[jobdock] run each task in a container of IMAGE (jobdock run --image)",
        opt: Opt::Image,
    },
    Spec {
        name: "container-mounts",
        arginfo: Some("SRC:DST[:ro],..."),
        usage: "[jobdock] bind mounts, held to the site's policy (LSB_DOCKER_VOLUMES)",
        opt: Opt::Mounts,
    },
    Spec {
        name: "container-workdir",
        arginfo: Some("PATH"),
        usage: "[jobdock] working directory inside the container (LSB_DOCKER_WORKDIR)",
        opt: Opt::Workdir,
    },
    Spec {
        name: "container-env",
        arginfo: Some("NAME,..."),
        usage: "[jobdock] variables that must reach the container with the job's value (LSB_DOCKER_ENV)",
        opt: Opt::Env,
    },
    Spec {
        name: "container-entrypoint",
        arginfo: None,
        usage: "[jobdock] run the image's entrypoint with the command as its arguments",
        opt: Opt::Entrypoint,
    },
    Spec {
        name: "no-container-entrypoint",
        arginfo: None,
        usage: "[jobdock] run the command itself, not the image's entrypoint (the default)",
        opt: Opt::NoEntrypoint,
    },
    Spec {
        name: "container-mount-home",
        arginfo: None,
        usage: "[jobdock] mount the home directory (where the site does)",
        opt: Opt::MountHome,
    },
    Spec {
        name: "no-container-mount-home",
        arginfo: None,
        usage: "[jobdock] do not mount the home directory",
        opt: Opt::NoMountHome,
    },
    Spec {
        name: "container-name",
        arginfo: Some("NAME"),
        usage: "[jobdock] run in the job's container NAME on the node: made by the first step that names it, kept for the later ones until the job ends (LSB_DOCKER_CONTAINER_NAME)",
        opt: Opt::Name,
    },
];

/// The options a step was given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Values {
    pub(crate) image: Option<String>,
    pub(crate) mounts: Option<String>,
    pub(crate) workdir: Option<String>,
    pub(crate) env: Option<String>,
    pub(crate) entrypoint: Option<bool>,
    pub(crate) mount_home: Option<bool>,
    pub(crate) name: Option<String>,
}

impl Values {
    pub(crate) fn any(&self) -> bool {
        *self != Values::default()
    }
}

/// The longest value taken: longer ones are no image, path or list anyone means.
pub(crate) const MAX_VALUE: usize = 16 * 1024;

/// A value must say something and be one line of text.
pub(crate) fn check_value(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what}: must not be empty"));
    }
    if value.len() > MAX_VALUE {
        return Err(format!("{what}: longer than {MAX_VALUE} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what}: contains a control character"));
    }
    Ok(())
}

/// Records option `opt` with `arg` (`None` for a flag). `Err` names the option.
pub(crate) fn set(values: &mut Values, opt: Opt, arg: Option<&str>) -> Result<(), String> {
    let spec = OPTIONS
        .iter()
        .find(|s| s.opt == opt)
        .ok_or("unknown option")?;
    let shown = format!("--{}", spec.name);
    let text = || -> Result<String, String> {
        let value = arg.ok_or_else(|| format!("{shown}: needs a value"))?;
        check_value(&shown, value)?;
        Ok(value.to_string())
    };
    match opt {
        Opt::Image => values.image = Some(text()?),
        Opt::Mounts => {
            let value = text()?;
            // jobdock's list is space-separated: a space inside one mount would split it in two.
            if value.contains(char::is_whitespace) {
                return Err(format!("{shown}: a mount may not contain spaces"));
            }
            values.mounts = Some(value);
        }
        Opt::Workdir => values.workdir = Some(text()?),
        Opt::Env => {
            let value = text()?;
            if value.contains(char::is_whitespace) {
                return Err(format!(
                    "{shown}: names are separated by commas, not spaces"
                ));
            }
            values.env = Some(value);
        }
        Opt::Entrypoint => values.entrypoint = Some(true),
        Opt::NoEntrypoint => values.entrypoint = Some(false),
        Opt::MountHome => values.mount_home = Some(true),
        Opt::NoMountHome => values.mount_home = Some(false),
        Opt::Name => {
            let value = text()?;
            // pyxis's `NAME:flag`: `auto` is what jobdock does; the others it does not.
            let name = match value.rsplit_once(':') {
                None => value,
                Some((name, "auto")) => name.to_string(),
                Some((_, flag)) => {
                    return Err(format!(
                        "{shown}: the flag {flag:?} is not supported (NAME or NAME:auto: made \
                         by the first step that names it, joined by the later ones)"
                    ));
                }
            };
            values.name = Some(name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_table_is_consistent() {
        for (i, spec) in OPTIONS.iter().enumerate() {
            // SPANK_OPTION_MAXLEN in spank.h.
            assert!(spec.name.len() <= 75, "{}", spec.name);
            assert_eq!(Opt::from_val(spec.opt as i32), Some(spec.opt));
            assert!(
                OPTIONS[i + 1..]
                    .iter()
                    .all(|o| o.name != spec.name && o.opt != spec.opt),
                "{} twice",
                spec.name
            );
        }
        assert_eq!(Opt::from_val(0), None);
        assert_eq!(Opt::from_val(99), None);
    }

    #[test]
    fn values_are_recorded_or_refused_naming_the_option() {
        let mut v = Values::default();
        assert!(!v.any());
        set(&mut v, Opt::Image, Some("jobdock-test/busybox")).unwrap();
        set(
            &mut v,
            Opt::Mounts,
            Some("/scratch/a:/data:ro,/scratch/b:/b"),
        )
        .unwrap();
        set(&mut v, Opt::NoEntrypoint, None).unwrap();
        set(&mut v, Opt::MountHome, None).unwrap();
        set(&mut v, Opt::NoMountHome, None).unwrap();
        assert!(v.any());
        assert_eq!(v.image.as_deref(), Some("jobdock-test/busybox"));
        assert_eq!(v.entrypoint, Some(false));
        assert_eq!(v.mount_home, Some(false), "the last one given wins");
        set(&mut v, Opt::Name, Some("work:auto")).unwrap();
        assert_eq!(v.name.as_deref(), Some("work"));
        set(&mut v, Opt::Name, Some("work2")).unwrap();
        assert_eq!(v.name.as_deref(), Some("work2"));
        let long = "x".repeat(MAX_VALUE + 1);
        for (opt, arg, want) in [
            (Opt::Image, Some(""), "--container-image: must not be empty"),
            (Opt::Image, None, "--container-image: needs a value"),
            (
                Opt::Image,
                Some("a\nb"),
                "--container-image: contains a control character",
            ),
            (
                Opt::Workdir,
                Some(long.as_str()),
                "--container-workdir: longer than",
            ),
            (
                Opt::Mounts,
                Some("/a b:/c"),
                "--container-mounts: a mount may not contain spaces",
            ),
            (
                Opt::Env,
                Some("A B"),
                "--container-env: names are separated by commas",
            ),
            (
                Opt::Name,
                Some("work:exec"),
                "--container-name: the flag \"exec\" is not supported",
            ),
        ] {
            let err = set(&mut Values::default(), opt, arg).unwrap_err();
            assert!(err.starts_with(want), "{opt:?} {arg:?}: {err}");
        }
    }
}
