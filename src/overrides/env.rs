//! Which environment variables a container gets: the job's own (when preserved), the user's env
//! files, and the values jobdock owns. Pure: env files arrive as text, read as the user.

use std::collections::BTreeMap;

/// `[A-Za-z_][A-Za-z0-9_]*`: a name every shell and runtime agrees on.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 256
}

/// Variables jobdock sets itself or that select devices in GPU runtimes: never taken from the
/// job's environment or an env file.
pub const OWNED: &[&str] = &[
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "HOSTNAME",
    "PWD",
    "OLDPWD",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "NVIDIA_REQUIRE_CUDA",
    "ROCR_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "HIP_VISIBLE_DEVICES",
];

/// Variables of the host's software stack that would break the image's own (its `PATH`, its
/// libraries) or that only make sense to jobdock.
const HOST_ONLY: &[&str] = &[
    "PATH",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "LD_AUDIT",
    "LSB_INTERACTIVE",
    // The shell's last command: jobdock's own path.
    "_",
];
const HOST_ONLY_PREFIXES: &[&str] = &[
    "BASH_FUNC_",
    "JOBDOCK_",
    "LSB_DOCKER_",
    "LSF_DOCKER_",
    "SUDO_",
];

/// Whether a variable of the job's environment is passed into the container when preserving it.
pub fn preserved(name: &str, value: &str, site_drop: &[String]) -> bool {
    valid_name(name)
        && !value.contains(['\n', '\r', '\0'])
        && !OWNED.contains(&name)
        && !HOST_ONLY.contains(&name)
        && !HOST_ONLY_PREFIXES.iter().any(|p| name.starts_with(p))
        && !site_drop.iter().any(|d| d == name)
}

/// Parses an env file as the docker CLI does, minus its one dangerous feature: a bare `NAME` line
/// would copy the value from jobdock's own (root) environment, so it is refused.
pub fn parse_env_file(text: &str, file: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        let at = || format!("{file}:{}", n + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "{}: {line:?} has no value (write NAME=value)",
                at()
            ));
        };
        if !valid_name(name) {
            return Err(format!("{}: {name:?} is not a valid variable name", at()));
        }
        if OWNED.contains(&name) {
            return Err(format!(
                "{}: {name} is set by jobdock and cannot be overridden",
                at()
            ));
        }
        if value.contains(['\0', '\r']) {
            return Err(format!(
                "{}: the value of {name} contains a control character",
                at()
            ));
        }
        out.insert(name.to_string(), value.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["A", "_x", "PATH2", "a_b_C"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "BASH_FUNC_x%%", "Ä"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn preserving_the_job_environment() {
        let cases = [
            ("OMP_NUM_THREADS", "4", true),
            ("LSB_JOBID", "212", true),
            ("SLURM_JOB_ID", "1", true),
            ("HOSTNAME", "login1", false),
            ("LSB_INTERACTIVE", "Y", false),
            ("_", "/usr/local/bin/jobdock", false),
            ("BASH_FUNC_module%%", "() { x; }", false),
            ("BASH_FUNC_module", "() { x; }", false),
            ("MULTI", "a\nb", false),
            ("HOME", "/root", false),
            ("USER", "root", false),
            ("NVIDIA_VISIBLE_DEVICES", "all", false),
            ("CUDA_VISIBLE_DEVICES", "0,1,2,3", false),
            ("PATH", "/usr/bin", false),
            ("LD_PRELOAD", "/tmp/x.so", false),
            ("LSB_DOCKER_VOLUMES", "/gpfs", false),
            ("JOBDOCK_CONFIG", "/tmp/x", false),
            ("SUDO_UID", "0", false),
            ("SITE_SECRET", "x", false),
        ];
        let drop = vec!["SITE_SECRET".to_string()];
        for (name, value, want) in cases {
            assert_eq!(preserved(name, value, &drop), want, "{name}");
        }
    }

    #[test]
    fn env_files() {
        let ok =
            parse_env_file("# comment\n\n  A=1\nB=\"quoted stays\"\nC=\nD=x=y\n", "f").unwrap();
        assert_eq!(ok["A"], "1");
        assert_eq!(ok["B"], "\"quoted stays\"");
        assert_eq!(ok["C"], "");
        assert_eq!(ok["D"], "x=y");
        let cases = [
            ("AWS_SECRET_ACCESS_KEY\n", "has no value"),
            ("1A=x\n", "not a valid variable name"),
            ("A B=x\n", "not a valid variable name"),
            ("HOME=/root\n", "set by jobdock"),
            ("NVIDIA_VISIBLE_DEVICES=all\n", "set by jobdock"),
            ("A=x\rB=y\n", "control character"),
        ];
        for (text, want) in cases {
            let err = parse_env_file(text, "/gpfs/env").unwrap_err();
            assert!(
                err.contains(want) && err.starts_with("/gpfs/env:1"),
                "{text:?}: {err}"
            );
        }
    }
}
