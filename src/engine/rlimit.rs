//! A container that could not start because its resource limits are above what dockerd may
//! grant: runc (as dockerd's descendant) sets the container's rlimits, and without
//! CAP_SYS_RESOURCE it cannot raise a hard limit past its own. Recognizes runc's message, names
//! the limit and where it came from, and reads dockerd's own hard limit for the advice. Decides
//! nothing about what a job gets: that is the plan's.

use std::path::Path;

use crate::config;
use crate::plan::ContainerPlan;

/// The limits jobdock sets (or a site may meet), by runc's `RLIMIT_*` number: Docker's name,
/// what it limits (for a message), and its row in `/proc/<pid>/limits`.
const TYPES: &[(u32, &str, &str, &str)] = &[
    (3, "stack", "stack-size", "Max stack size"),
    (4, "core", "core-file-size", "Max core file size"),
    (6, "nproc", "process", "Max processes"),
    (7, "nofile", "open-files", "Max open files"),
    (8, "memlock", "locked-memory", "Max locked memory"),
];

/// A start that failed on a resource limit: what the job asked for and who chose it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RlimitNotGranted {
    /// runc's `RLIMIT_*` number.
    pub number: u32,
    /// Docker's name (`memlock`), if jobdock knows the number.
    pub name: Option<&'static str>,
    /// The (soft, hard) limit the plan asked for, if it set this one.
    pub requested: Option<(i64, i64)>,
    /// The config key that chose it and its value as written (`devices.memlock`, `"unlimited"`);
    /// `None`: it is the job's own limit, as the scheduler or the user's shell set it.
    pub key: Option<(&'static str, String)>,
    /// dockerd's own hard limit for it, if it could be read and is not unlimited.
    pub granted: Option<u64>,
    /// dockerd's message.
    pub message: String,
}

/// The `RLIMIT_*` number in runc's "error setting rlimit type 8: operation not permitted".
pub fn rlimit_type(message: &str) -> Option<u32> {
    let rest = &message[message.find("error setting rlimit type ")? + 26..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The limit dockerd could not grant a start of `plan`, if `message` says so.
pub fn not_granted(message: &str, plan: &ContainerPlan) -> Option<RlimitNotGranted> {
    let number = rlimit_type(message)?;
    let name = TYPES.iter().find(|t| t.0 == number).map(|t| t.1);
    let requested = name.and_then(|n| {
        plan.ulimits
            .iter()
            .find(|u| u.name == n)
            .map(|u| (u.soft, u.hard))
    });
    // A device job's locked memory is the site's devices.memlock (the plan's `ulimits`).
    let key = match (name, requested) {
        (Some("memlock"), Some((_, hard))) if !plan.devices.is_empty() => {
            let value = u64::try_from(hard).map_or("unlimited".into(), config::size_text);
            Some(("devices.memlock", format!("{value:?}")))
        }
        _ => None,
    };
    Some(RlimitNotGranted {
        number,
        name,
        requested,
        key,
        granted: None,
        message: message.to_string(),
    })
}

impl std::fmt::Display for RlimitNotGranted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = TYPES.iter().find(|t| t.0 == self.number).map_or_else(
            || format!("resource limit type {}", self.number),
            |t| format!("{} limit", t.2),
        );
        let memlock = self.name == Some("memlock");
        let amount = |n: u64| {
            if memlock {
                format!("{n} bytes")
            } else {
                n.to_string()
            }
        };
        let limit = |v: i64| match u64::try_from(v) {
            Ok(n) => amount(n),
            Err(_) => "unlimited".into(),
        };
        write!(f, "the job's {what} (")?;
        match (&self.key, self.requested, self.name) {
            (Some((key, value)), _, _) => write!(f, "{key} = {value}")?,
            (None, Some((soft, hard)), Some(name)) => write!(
                f,
                "{name} {}:{}, the job's own, as the scheduler or its shell set it",
                limit(soft),
                limit(hard)
            )?,
            (None, _, Some(name)) => write!(f, "{name}")?,
            (None, _, None) => write!(f, "not one jobdock sets")?,
        }
        write!(f, ") is above what dockerd may grant")?;
        match self.granted {
            Some(n) => write!(
                f,
                " (it lacks CAP_SYS_RESOURCE, and its own hard limit is {})",
                amount(n)
            )?,
            None => write!(
                f,
                " (it lacks CAP_SYS_RESOURCE, or the kernel refuses the value)"
            )?,
        }
        let most = match (self.granted, memlock) {
            (Some(n), true) => format!("at most {:?}", config::size_text(n)),
            (Some(n), false) => format!("at most {n}"),
            (None, _) => "at most dockerd's own hard limit (`jobdock doctor` shows it)".into(),
        };
        match &self.key {
            Some((key, _)) => write!(f, ": set {key} to {most}")?,
            None if self.name.is_some() => write!(
                f,
                ": lower the hard limit jobs get (limits.conf, the scheduler's limit \
                 propagation) to {most}"
            )?,
            None => {}
        }
        write!(
            f,
            "{} give dockerd CAP_SYS_RESOURCE (dockerd: {})",
            if self.name.is_some() { " or" } else { ":" },
            self.message
        )
    }
}

/// dockerd's hard limit for Docker's limit `name`, from its `/proc/<pid>/limits`: `None` if it
/// cannot be read or is unlimited.
pub fn daemon_hard_limit(socket: &Path, name: &str) -> Option<u64> {
    let pid = crate::engine::mountns::daemon_pid(socket).ok()?;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    hard_limit(&limits, name)?
}

/// The hard limit for Docker's limit `name` in `/proc/<pid>/limits` text: `Some(None)` if
/// unlimited, `None` if the row is missing.
pub fn hard_limit(limits: &str, name: &str) -> Option<Option<u64>> {
    let row = TYPES.iter().find(|t| t.1 == name)?.3;
    let hard = limits
        .lines()
        .find_map(|l| l.strip_prefix(row))?
        .split_whitespace()
        .nth(1)?;
    Some(hard.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Ulimit;

    /// What Docker 20.10 with runc 1.1 says when dockerd lacks CAP_SYS_RESOURCE (reproduced with
    /// `docker run --ulimit memlock=-1:-1` against a dockerd whose own hard limit is 8 MiB).
    const RUNC_MEMLOCK: &str = "failed to create shim task: OCI runtime create failed: runc create \
        failed: unable to start container process: error during container init: error setting \
        rlimits for ready process: error setting rlimit type 8: operation not permitted: unknown";

    #[test]
    fn runcs_message_names_the_limit_type() {
        let cases = [
            (RUNC_MEMLOCK, Some(8)),
            (
                "... error setting rlimit type 7: operation not permitted",
                Some(7),
            ),
            ("error setting rlimit type 12", Some(12)),
            ("error setting rlimits for ready process", None),
            ("exec: \"x\": executable file not found in $PATH", None),
            ("error setting rlimit type : x", None),
        ];
        for (message, want) in cases {
            assert_eq!(rlimit_type(message), want, "{message}");
        }
    }

    #[test]
    fn hard_limits_are_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max stack size            8388608              unlimited            bytes     \n\
                      Max core file size        0                    unlimited            bytes     \n\
                      Max processes             96549                96549                processes \n\
                      Max open files            20000                20000                files     \n\
                      Max locked memory         8388608              8388608              bytes     \n";
        let cases = [
            ("memlock", Some(Some(8 << 20))),
            ("nofile", Some(Some(20000))),
            ("nproc", Some(Some(96549))),
            ("stack", Some(None)),
            ("core", Some(None)),
            ("rtprio", None),
        ];
        for (name, want) in cases {
            assert_eq!(hard_limit(limits, name), want, "{name}");
        }
        assert_eq!(hard_limit("", "memlock"), None);
    }

    fn plan_with(devices: bool, ulimits: &[(&'static str, i64, i64)]) -> ContainerPlan {
        let mut p = crate::engine::fake::lsf_plan(
            &crate::config::SiteConfig::default(),
            &[],
            vec![],
            crate::job::JobContext::default(),
            &crate::plan::Request {
                image: Some("jobdock-test/busybox".into()),
                command: vec!["true".into()],
                script: None,
            },
            &crate::probe::fake::FakeProbe::default(),
        );
        if devices {
            p.devices = vec!["/dev/null".into()];
        }
        p.ulimits = ulimits
            .iter()
            .map(|&(name, soft, hard)| Ulimit { name, soft, hard })
            .collect();
        p
    }

    /// Issue 12.8: the error names the limit, who chose it (the key, or the job), what dockerd
    /// may grant, and both ways out. `(name, devices, ulimits, message, granted, wanted words)`.
    #[test]
    fn a_refused_limit_is_explained_with_its_key() {
        type Case<'a> = (
            &'a str,
            bool,
            &'a [(&'static str, i64, i64)],
            &'a str,
            Option<u64>,
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            (
                "device job, devices.memlock unlimited",
                true,
                &[("memlock", -1, -1)],
                RUNC_MEMLOCK,
                Some(8 << 20),
                &[
                    "locked-memory limit (devices.memlock = \"unlimited\")",
                    "its own hard limit is 8388608 bytes",
                    "set devices.memlock to at most \"8m\"",
                    "give dockerd CAP_SYS_RESOURCE",
                    "error setting rlimit type 8",
                ],
            ),
            (
                "device job, devices.memlock a size, dockerd's limit unknown",
                true,
                &[("memlock", 1 << 30, 1 << 30)],
                RUNC_MEMLOCK,
                None,
                &[
                    "(devices.memlock = \"1g\")",
                    "at most dockerd's own hard limit",
                    "CAP_SYS_RESOURCE",
                ],
            ),
            (
                "no devices: the job's own memlock",
                false,
                &[("memlock", -1, -1)],
                RUNC_MEMLOCK,
                Some(8 << 20),
                &[
                    "(memlock unlimited:unlimited, the job's own",
                    "lower the hard limit jobs get",
                    "at most \"8m\"",
                ],
            ),
            (
                "the job's open files",
                true,
                &[("memlock", -1, -1), ("nofile", 1024, 1 << 20)],
                "error setting rlimit type 7: operation not permitted",
                Some(20000),
                &[
                    "open-files limit (nofile 1024:1048576, the job's own",
                    "its own hard limit is 20000)",
                    "to at most 20000 or give dockerd CAP_SYS_RESOURCE",
                ],
            ),
            (
                "a type jobdock does not set",
                false,
                &[],
                "error setting rlimit type 9: operation not permitted",
                None,
                &[
                    "resource limit type 9 (not one jobdock sets)",
                    ": give dockerd",
                ],
            ),
        ];
        for (name, devices, ulimits, message, granted, words) in cases {
            let p = plan_with(*devices, ulimits);
            let mut r =
                not_granted(message, &p).unwrap_or_else(|| panic!("{name}: not recognized"));
            r.granted = *granted;
            let text = r.to_string();
            for w in *words {
                assert!(text.contains(w), "{name}: no {w:?} in {text}");
            }
            assert_eq!(
                r.key.is_some(),
                *devices && r.name == Some("memlock"),
                "{name}: {text}"
            );
        }
        assert_eq!(not_granted("no such image", &plan_with(true, &[])), None);
    }
}
