//! What a task becomes: untouched, or `jobdock run --image=IMAGE [--script=FILE] -- argv` with the
//! options as jobdock's overrides in its environment. Pure: the step, argv and environment come
//! in as slurmstepd gave them; nothing here decides what a value may mean.

use crate::options::Values;
use crate::site::Site;

/// slurm.h's special step ids.
pub(crate) const EXTERN_STEP: u32 = 0xffff_fffc;
pub(crate) const BATCH_STEP: u32 = 0xffff_fffb;
pub(crate) const INTERACTIVE_STEP: u32 = 0xffff_fffa;

/// The overrides the options set, by jobdock's suffix (LSB_DOCKER_<suffix>).
const OVERRIDES: &[&str] = &[
    "VOLUMES",
    "WORKDIR",
    "ENV",
    "RUN_RAW_ARGS",
    "MOUNT_HOME",
    "CONTAINER_NAME",
];

/// The program to exec and its argv and environment (`NAME=value` entries).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Exec {
    pub(crate) program: String,
    pub(crate) argv: Vec<Vec<u8>>,
    pub(crate) env: Vec<Vec<u8>>,
}

/// The image a step runs in, if it runs in one: `--container-image`, else the site's default when
/// the site enforces containers or another container option was given. `Err` when a container is
/// due but no image is known, naming what to give.
pub(crate) fn image<'a>(site: &'a Site, values: &'a Values) -> Result<Option<&'a str>, String> {
    if let Some(image) = &values.image {
        return Ok(Some(image));
    }
    if !(site.enforce || values.any()) {
        return Ok(None);
    }
    match &site.default_image {
        Some(image) => Ok(Some(image)),
        None if site.enforce => {
            Err("this site runs every step in a container: give --container-image=IMAGE".into())
        }
        None => Err("the --container-* options need --container-image=IMAGE".into()),
    }
}

/// The task's command, or `None` to leave it to Slurm.
pub(crate) fn command(
    site: &Site,
    values: &Values,
    step: u32,
    argv: &[Vec<u8>],
    env: &[Vec<u8>],
) -> Result<Option<Exec>, String> {
    let batch = match step {
        EXTERN_STEP | INTERACTIVE_STEP => return Ok(None),
        BATCH_STEP if !site.sbatch => return Ok(None),
        BATCH_STEP => true,
        _ => false,
    };
    // Under `enforce`, a task that is the site's jobdock running a job (`srun /usr/bin/jobdock
    // run ...`) is in a container already and runs as it is. Only `run` and only the site's own
    // path, as given: jobdock's other commands (its agent runs tasks on the host) and any other
    // file named jobdock are programs like any other.
    if site.enforce
        && !values.any()
        && argv.first().map(Vec::as_slice) == Some(site.jobdock.as_bytes())
        && argv.get(1).map(Vec::as_slice) == Some(b"run".as_slice())
    {
        return Ok(None);
    }
    let Some(image) = image(site, values)? else {
        return Ok(None);
    };
    let Some((first, rest)) = argv.split_first() else {
        return Err("the task has no command".into());
    };
    // `--image=VALUE` in one word: a value that starts with `-` stays a value (which jobdock
    // then refuses as no image), never a flag.
    let mut out: Vec<Vec<u8>> = vec![
        b"jobdock".to_vec(),
        b"run".to_vec(),
        format!("--image={image}").into_bytes(),
    ];
    if batch {
        // The batch script is a file in slurmd's spool, which the container does not see:
        // jobdock reads it as the user and stages it.
        out.push([b"--script=".as_slice(), first].concat());
        out.push(b"--".to_vec());
    } else {
        out.push(b"--".to_vec());
        out.push(first.clone());
    }
    out.extend(rest.iter().cloned());

    let set: Vec<(&str, String)> = [
        (
            "VOLUMES",
            values.mounts.as_ref().map(|m| m.replace(',', " ")),
        ),
        ("WORKDIR", values.workdir.clone()),
        ("ENV", values.env.as_ref().map(|e| e.replace(',', " "))),
        ("RUN_RAW_ARGS", values.entrypoint.map(|b| b.to_string())),
        ("MOUNT_HOME", values.mount_home.map(|b| b.to_string())),
        ("CONTAINER_NAME", values.name.clone()),
    ]
    .into_iter()
    .filter_map(|(suffix, value)| value.map(|v| (suffix, v)))
    .collect();
    // An option beats the same override in the environment, as a flag beats a variable; the
    // marker lets jobdock name the option in its errors.
    let replaced = |entry: &[u8]| {
        let name = entry.split(|&b| b == b'=').next().unwrap_or(entry);
        name == b"JOBDOCK_SPANK_OPTIONS"
            || set.iter().any(|(suffix, _)| {
                [b"LSB_DOCKER_".as_slice(), b"LSF_DOCKER_"]
                    .iter()
                    .any(|p| name.strip_prefix(*p) == Some(suffix.as_bytes()))
            })
    };
    let mut env: Vec<Vec<u8>> = env.iter().filter(|e| !replaced(e)).cloned().collect();
    for (suffix, value) in &set {
        env.push(format!("LSB_DOCKER_{suffix}={value}").into_bytes());
    }
    if !set.is_empty() {
        let names: Vec<&str> = set.iter().map(|(s, _)| *s).collect();
        env.push(format!("JOBDOCK_SPANK_OPTIONS={}", names.join(" ")).into_bytes());
    }
    debug_assert!(set.iter().all(|(s, _)| OVERRIDES.contains(s)));
    Ok(Some(Exec {
        program: site.jobdock.clone(),
        argv: out,
        env,
    }))
}

/// glibc's type of an `RLIMIT_*` number.
pub(crate) type Resource = libc::__rlimit_resource_t;

/// The resource limits srun propagated (`SLURM_RLIMIT_<NAME>=[U]<soft>`), which slurmstepd
/// applies after task_init, right before its own exec: by resource number, the soft limit.
pub(crate) fn propagated_limits(env: &[Vec<u8>]) -> Vec<(Resource, u64)> {
    const NAMES: &[(&str, Resource)] = &[
        ("CPU", libc::RLIMIT_CPU),
        ("FSIZE", libc::RLIMIT_FSIZE),
        ("DATA", libc::RLIMIT_DATA),
        ("STACK", libc::RLIMIT_STACK),
        ("CORE", libc::RLIMIT_CORE),
        ("RSS", libc::RLIMIT_RSS),
        ("NPROC", libc::RLIMIT_NPROC),
        ("NOFILE", libc::RLIMIT_NOFILE),
        ("MEMLOCK", libc::RLIMIT_MEMLOCK),
        ("AS", libc::RLIMIT_AS),
    ];
    let mut out = Vec::new();
    for entry in env {
        let Ok(entry) = std::str::from_utf8(entry) else {
            continue;
        };
        let Some((name, value)) = entry
            .strip_prefix("SLURM_RLIMIT_")
            .and_then(|e| e.split_once('='))
        else {
            continue;
        };
        let Some((_, resource)) = NAMES.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        if let Ok(limit) = value.strip_prefix('U').unwrap_or(value).parse::<u64>() {
            out.push((*resource, limit));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Opt, set};

    fn site() -> Site {
        crate::site::parse(&[]).unwrap()
    }

    fn bytes(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn text(words: &[Vec<u8>]) -> Vec<String> {
        words
            .iter()
            .map(|w| String::from_utf8(w.clone()).unwrap())
            .collect()
    }

    #[test]
    fn steps_without_options_are_left_to_slurm() {
        let argv = bytes(&["id"]);
        for step in [0, 7, BATCH_STEP, EXTERN_STEP, INTERACTIVE_STEP] {
            assert_eq!(
                command(&site(), &Values::default(), step, &argv, &[]),
                Ok(None)
            );
        }
    }

    #[test]
    fn a_task_becomes_jobdock_run_with_its_argv_as_words() {
        let mut v = Values::default();
        set(&mut v, Opt::Image, Some("busybox")).unwrap();
        set(&mut v, Opt::Mounts, Some("/s/a:/a:ro,/s/b")).unwrap();
        set(&mut v, Opt::NoMountHome, None).unwrap();
        set(&mut v, Opt::Entrypoint, None).unwrap();
        set(&mut v, Opt::Name, Some("work")).unwrap();
        let argv = bytes(&["sh", "-c", "echo $HOME; id"]);
        let env = bytes(&[
            "SLURM_JOB_ID=5",
            "LSF_DOCKER_VOLUMES=/elsewhere",
            "LSB_DOCKER_NETWORK=none",
            "JOBDOCK_SPANK_OPTIONS=forged",
        ]);
        let exec = command(&site(), &v, 0, &argv, &env).unwrap().unwrap();
        assert_eq!(exec.program, "/usr/local/bin/jobdock");
        assert_eq!(
            text(&exec.argv),
            [
                "jobdock",
                "run",
                "--image=busybox",
                "--",
                "sh",
                "-c",
                "echo $HOME; id"
            ]
        );
        assert_eq!(
            text(&exec.env),
            [
                "SLURM_JOB_ID=5",
                "LSB_DOCKER_NETWORK=none",
                "LSB_DOCKER_VOLUMES=/s/a:/a:ro /s/b",
                "LSB_DOCKER_RUN_RAW_ARGS=true",
                "LSB_DOCKER_MOUNT_HOME=false",
                "LSB_DOCKER_CONTAINER_NAME=work",
                "JOBDOCK_SPANK_OPTIONS=VOLUMES RUN_RAW_ARGS MOUNT_HOME CONTAINER_NAME",
            ]
        );
    }

    #[test]
    fn batch_steps_only_where_the_site_enables_them() {
        let mut v = Values::default();
        set(&mut v, Opt::Image, Some("busybox")).unwrap();
        let argv = bytes(&["/var/spool/slurmd/job00042/slurm_script", "arg"]);
        assert_eq!(command(&site(), &v, BATCH_STEP, &argv, &[]), Ok(None));
        let sbatch = Site {
            sbatch: true,
            ..site()
        };
        let exec = command(&sbatch, &v, BATCH_STEP, &argv, &[])
            .unwrap()
            .unwrap();
        assert_eq!(
            text(&exec.argv),
            [
                "jobdock",
                "run",
                "--image=busybox",
                "--script=/var/spool/slurmd/job00042/slurm_script",
                "--",
                "arg"
            ]
        );
        for step in [EXTERN_STEP, INTERACTIVE_STEP] {
            assert_eq!(command(&sbatch, &v, step, &argv, &[]), Ok(None));
        }
    }

    #[test]
    fn enforce_and_default_images() {
        let argv = bytes(&["id"]);
        let enforce = Site {
            enforce: true,
            ..site()
        };
        let err = command(&enforce, &Values::default(), 0, &argv, &[]).unwrap_err();
        assert!(err.contains("give --container-image"), "{err}");
        let mut mounts_only = Values::default();
        set(&mut mounts_only, Opt::Workdir, Some("/w")).unwrap();
        let err = command(&site(), &mounts_only, 0, &argv, &[]).unwrap_err();
        assert!(err.contains("need --container-image"), "{err}");
        let default = Site {
            enforce: true,
            default_image: Some("site/base".into()),
            ..site()
        };
        let exec = command(&default, &Values::default(), 0, &argv, &[])
            .unwrap()
            .unwrap();
        assert_eq!(text(&exec.argv)[2], "--image=site/base");
        // A value that looks like a flag stays one word: jobdock refuses it as an image.
        let mut flag = Values::default();
        set(&mut flag, Opt::Image, Some("--config=/tmp/x")).unwrap();
        let exec = command(&site(), &flag, 0, &argv, &[]).unwrap().unwrap();
        assert_eq!(
            text(&exec.argv)[2..],
            ["--image=--config=/tmp/x", "--", "id"]
        );
        assert!(exec.env.is_empty());
        assert_eq!(
            command(&default, &Values::default(), EXTERN_STEP, &argv, &[]),
            Ok(None)
        );
        // `srun /usr/local/bin/jobdock run ...` is a container already; its other commands, a
        // jobdock found on PATH (slurmstepd's lookup, not this plugin's) and one given options
        // are wrapped.
        let run = bytes(&["/usr/local/bin/jobdock", "run", "--image", "x", "--", "id"]);
        assert_eq!(
            command(&default, &Values::default(), 0, &run, &[]),
            Ok(None)
        );
        for argv in [
            bytes(&["/usr/local/bin/jobdock", "agent", "--tasks", "1"]),
            bytes(&["jobdock", "run", "--", "id"]),
            bytes(&["/home/u/jobdock", "run", "--", "id"]),
        ] {
            let exec = command(&default, &Values::default(), 0, &argv, &[]).unwrap();
            assert!(exec.is_some(), "{argv:?} not wrapped");
        }
        assert!(
            command(&default, &mounts_only, 0, &run, &[])
                .unwrap()
                .is_some()
        );
        assert!(
            command(&site(), &Values::default(), 0, &argv, &[])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn rlimits_as_srun_propagates_them() {
        let env = bytes(&[
            "SLURM_RLIMIT_NOFILE=1024",
            "SLURM_RLIMIT_CORE=U0",
            "SLURM_RLIMIT_BOGUS=1",
            "SLURM_RLIMIT_STACK=x",
            "PATH=/bin",
        ]);
        assert_eq!(
            propagated_limits(&env),
            [(libc::RLIMIT_NOFILE, 1024), (libc::RLIMIT_CORE, 0)]
        );
    }
}
