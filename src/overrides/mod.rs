//! What users may ask for through `LSB_DOCKER_*` variables (`LSF_DOCKER_*` accepted as aliases),
//! parsed into typed requests. Checking them against the host (as the user) and the site policy
//! happens in the planner; everything here is pure text -> value.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::job::Env;

pub mod env;
pub mod paths;

/// Every override jobdock reads, by suffix. Any other `LSB_DOCKER_*`/`LSF_DOCKER_*` variable is
/// refused (`check_names`): a misspelt one (`LSB_DOCKER_VOLUME`) would otherwise run the job
/// without what it asked for. (`LSB_DOCKER_PLACE_HOLDER` is a command word, not a variable.)
pub const OVERRIDES: &[(&str, &str)] = &[
    (
        "VOLUMES",
        "bind mounts, SRC[:DST][:ro] separated by spaces, under the site's allowed roots",
    ),
    (
        "NETWORK",
        "network mode (bridge, host, none: as the site allows)",
    ),
    (
        "IPC",
        "IPC namespace mode (private, shareable: as the site allows)",
    ),
    (
        "SHM_SIZE",
        "size of /dev/shm (4g), at most the site's limits.shm_size_max",
    ),
    ("ENTRYPOINT", "the program that runs the command (one path)"),
    ("WORKDIR", "the working directory in the container"),
    (
        "ENV_FILE",
        "files of NAME=value lines for the container's environment",
    ),
    (
        "PRESERVE_ENVIRONMENT",
        "pass the job's environment into the container (default true)",
    ),
    (
        "ADD_HOST",
        "/etc/hosts entries HOST:IP, separated by spaces",
    ),
    ("ADD_HOST_FILE", "files of HOST:IP lines for /etc/hosts"),
    (
        "PORTS",
        "published ports (8001, 8001:80, 8001-8010/udp) within the site's ports.range",
    ),
    (
        "RUN_LOGLEVEL",
        "jobdock's verbosity: critical, error, warning, info, debug (prints the plan), trace",
    ),
    (
        "RUN_RAW_ARGS",
        "true: run the image's own entrypoint, with LSB_DOCKER_PLACE_HOLDER as the command",
    ),
    (
        "CGROUP",
        "cgroup parent, one of the site's overrides.cgroup_parents",
    ),
    (
        "PULL",
        "when to pull the image: missing, newer (the tag moved), always, never; as the site allows",
    ),
    (
        "MOUNT_HOME",
        "false: no home directory mount (true cannot add one where the site mounts none)",
    ),
    (
        "ENV",
        "names of variables to pass into the container (comma- or space-separated)",
    ),
    (
        "CONTAINER_NAME",
        "a Slurm job step's tasks run in the job's container of this name on the node, made by \
         the first step that names it and kept for the later ones until the job ends",
    ),
    (
        "SSHD",
        "true: the job's named container on each node runs an sshd as the user on a per-job port, \
         so that mpirun in one reaches the others over ssh (the job's virtual cluster)",
    ),
];

/// The names of `OVERRIDES`.
pub fn override_names() -> impl Iterator<Item = &'static str> {
    OVERRIDES.iter().map(|(name, _)| *name)
}

/// The variables users may set, for `--help` and the man page: one line each.
pub fn help_text() -> String {
    let mut text = String::from(
        "Variables (LSB_DOCKER_<X>; LSF_DOCKER_<X> is an alias), each checked against the site \
         policy in /etc/jobdock/wrapper.toml:\n",
    );
    for (name, about) in OVERRIDES {
        text.push_str(&format!("  LSB_DOCKER_{name:<21} {about}\n"));
    }
    text.push_str(
        "Any other LSB_DOCKER_* or LSF_DOCKER_* variable is refused (exit 64), naming the closest.",
    );
    text
}

/// The srun/sbatch options of the SPANK plugin (`spank/`), by the override each one sets. The
/// plugin lists the overrides it set in [`FROM_OPTIONS`], and a refusal of one names the option the
/// user typed instead of the variable. (A user who sets FROM_OPTIONS by hand changes only what the
/// error messages call a setting: every value is checked the same.)
pub const SPANK_OPTIONS: &[(&str, &str)] = &[
    ("VOLUMES", "--container-mounts"),
    ("WORKDIR", "--container-workdir"),
    ("ENV", "--container-env"),
    ("RUN_RAW_ARGS", "--[no-]container-entrypoint"),
    ("MOUNT_HOME", "--[no-]container-mount-home"),
    ("CONTAINER_NAME", "--container-name"),
];

/// Set by the SPANK plugin: the overrides (suffixes, space-separated) it set from srun options.
pub const FROM_OPTIONS: &str = "JOBDOCK_SPANK_OPTIONS";

/// IBM LSF's own docker settings that jobdock does not take: refused with what to do instead.
const NOT_TAKEN: &[(&str, &str)] = &[
    (
        "LOGIN_ONLY",
        "registry logins come from the user's ~/.docker/config.json",
    ),
    (
        "LOGIN_SERVER",
        "registry logins come from the user's ~/.docker/config.json",
    ),
    (
        "USERNAME",
        "registry logins come from the user's ~/.docker/config.json",
    ),
    (
        "PASSWORD",
        "registry logins come from the user's ~/.docker/config.json; never put a password in the environment",
    ),
    (
        "PASS_ENV",
        "the job's environment is passed unless LSB_DOCKER_PRESERVE_ENVIRONMENT=false",
    ),
    ("MOUNT_TMPDIR", "the job's tmpdir is always its /tmp"),
    (
        "IMAGE_AFFINITY",
        "that is a scheduling setting of LSF's, not jobdock's",
    ),
];

/// Refuses every `LSB_DOCKER_*`/`LSF_DOCKER_*` variable that is not an override jobdock reads,
/// naming the closest one: the job would otherwise run without what it asked for.
pub fn check_names(env: &Env) -> Result<(), Refusal> {
    for (var, value) in env {
        let Some(suffix) = var
            .strip_prefix("LSB_DOCKER_")
            .or_else(|| var.strip_prefix("LSF_DOCKER_"))
        else {
            continue;
        };
        if override_names().any(|o| o == suffix) {
            continue;
        }
        let prefix = &var[..var.len() - suffix.len()];
        let rule = match NOT_TAKEN.iter().find(|(name, _)| *name == suffix) {
            Some((_, instead)) => format!("jobdock does not take this LSF setting: {instead}"),
            None => {
                let closest = override_names()
                    .min_by_key(|o| edit_distance(suffix, o))
                    .filter(|o| edit_distance(suffix, o) <= 3);
                match closest {
                    Some(o) => format!("no such setting; did you mean {prefix}{o}?"),
                    None => format!(
                        "no such setting; the settings are {prefix}{}",
                        override_names()
                            .collect::<Vec<_>>()
                            .join(&format!(", {prefix}"))
                    ),
                }
            }
        };
        return Err(Refusal {
            var: var.clone(),
            value: value.clone(),
            rule,
        });
    }
    Ok(())
}

/// Optimal string alignment distance (insertions, deletions, substitutions, transpositions),
/// case-insensitive: how far a typo is from what was meant.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// A refused override: which variable, what it said, and the rule it broke.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}={value:?}: {rule}")]
pub struct Refusal {
    pub var: String,
    pub value: String,
    pub rule: String,
}

/// One override as the user set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The variable actually used (`LSB_DOCKER_X` or its alias `LSF_DOCKER_X`).
    pub var: String,
    pub value: String,
}

impl Setting {
    pub fn refuse(&self, rule: impl Into<String>) -> Refusal {
        Refusal {
            var: self.var.clone(),
            value: self.value.clone(),
            rule: rule.into(),
        }
    }
}

/// Looks up override `suffix` under both spellings; both set and different is refused.
pub fn setting(env: &Env, suffix: &str) -> Result<Option<Setting>, Refusal> {
    let canonical = format!("LSB_DOCKER_{suffix}");
    let alias = format!("LSF_DOCKER_{suffix}");
    match (env.get(&canonical), env.get(&alias)) {
        (Some(a), Some(b)) if a != b => Err(Refusal {
            var: canonical,
            value: a.clone(),
            rule: format!("{alias}={b:?} is also set and differs; set only one of them"),
        }),
        (Some(v), _) => Ok(Some(Setting {
            var: option_name(env, suffix).map_or(canonical, str::to_string),
            value: v.clone(),
        })),
        (None, Some(v)) => Ok(Some(Setting {
            var: alias,
            value: v.clone(),
        })),
        (None, None) => Ok(None),
    }
}

/// The srun option the SPANK plugin set override `suffix` from, if it did.
fn option_name(env: &Env, suffix: &str) -> Option<&'static str> {
    let set = env.get(FROM_OPTIONS)?;
    if !set.split_whitespace().any(|s| s == suffix) {
        return None;
    }
    SPANK_OPTIONS
        .iter()
        .find(|(s, _)| *s == suffix)
        .map(|(_, option)| *option)
}

/// `true`/`false` and the usual spellings; anything else is refused.
pub fn parse_bool(s: &Setting) -> Result<bool, Refusal> {
    match s.value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "y" | "on" => Ok(true),
        "0" | "false" | "no" | "n" | "off" | "" => Ok(false),
        _ => Err(s.refuse("must be true or false")),
    }
}

/// Most user volumes one job may ask for (`LSB_DOCKER_VOLUMES`).
pub const MAX_VOLUMES: usize = 64;

/// Most ports one job may publish (`LSB_DOCKER_PORTS`, ranges counted port by port): dockerd
/// keeps a proxy and rules per port, and no real job serves more than a handful.
pub const MAX_PORTS: u32 = 100;

/// One element of `LSB_DOCKER_VOLUMES`: `SRC[:DST][:ro|:rw]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeRequest {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

/// Space-separated `SRC[:DST][:ro|:rw]`. Only absolute host paths (a relative name would be a
/// named volume) and only `ro`/`rw`: relabelling (`z`, `Z`) and propagation options are refused.
pub fn parse_volumes(s: &Setting) -> Result<Vec<VolumeRequest>, Refusal> {
    let mut out = Vec::new();
    for item in s.value.split_whitespace() {
        let parts: Vec<&str> = item.split(':').collect();
        let (source, target, opts) = match parts.as_slice() {
            [src] => (*src, *src, None),
            [src, "ro" | "rw"] => (*src, *src, Some(parts[1])),
            [src, dst] => (*src, *dst, None),
            [src, dst, opt] => (*src, *dst, Some(*opt)),
            _ => return Err(s.refuse(format!("{item:?} must be SRC[:DST][:ro]"))),
        };
        if !source.starts_with('/') {
            return Err(s.refuse(format!("{source:?}: the source must be an absolute host path (named volumes are not allowed)")));
        }
        if !target.starts_with('/') {
            return Err(s.refuse(format!(
                "{target:?}: the destination must be an absolute path"
            )));
        }
        let readonly = match opts {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(o) => return Err(s.refuse(format!("option {o:?} is not allowed (only ro or rw)"))),
        };
        out.push(VolumeRequest {
            source: source.into(),
            target: target.into(),
            readonly,
        });
    }
    if out.len() > MAX_VOLUMES {
        return Err(s.refuse(format!(
            "{} volumes, more than the {MAX_VOLUMES} a job may mount (MAX_VOLUMES)",
            out.len()
        )));
    }
    Ok(out)
}

/// `host:ip` pairs (space-separated, or one per line in a file). IPv6 addresses are allowed after
/// the first colon, as `docker run --add-host` takes them.
pub fn parse_host_entry(item: &str) -> Result<String, String> {
    let (host, ip) = item
        .split_once(':')
        .ok_or_else(|| format!("{item:?} must be HOST:IP"))?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
        });
    if !host_ok {
        return Err(format!("{host:?} is not a host name"));
    }
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    Ok(format!("{host}:{ip}"))
}

/// A published port: host port(s), container port(s), protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRequest {
    pub host: (u16, u16),
    pub container: (u16, u16),
    pub protocol: &'static str,
}

/// `8001`, `8001:80`, `8001-8010`, `8001-8010:2001-2010`, each optionally `/tcp` or `/udp`.
pub fn parse_ports(s: &Setting) -> Result<Vec<PortRequest>, Refusal> {
    let range = |text: &str| -> Option<(u16, u16)> {
        let (a, b) = text.split_once('-').unwrap_or((text, text));
        let is_num = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
        if !is_num(a) || !is_num(b) {
            return None;
        }
        let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
        (a >= 1 && a <= b).then_some((a, b))
    };
    let mut out = Vec::new();
    for item in s.value.split_whitespace() {
        let (spec, protocol) = match item.rsplit_once('/') {
            Some((spec, "tcp")) => (spec, "tcp"),
            Some((spec, "udp")) => (spec, "udp"),
            Some(_) => return Err(s.refuse(format!("{item:?}: the protocol must be tcp or udp"))),
            None => (item, "tcp"),
        };
        let (host, container) = match spec.split_once(':') {
            Some((h, c)) => (range(h), range(c)),
            None => (range(spec), range(spec)),
        };
        let (Some(host), Some(container)) = (host, container) else {
            return Err(s.refuse(format!(
                "{item:?} is not PORT[-PORT][:PORT[-PORT]][/tcp|/udp]"
            )));
        };
        if host.1 - host.0 != container.1 - container.0 {
            return Err(s.refuse(format!(
                "{item:?}: host and container ranges differ in size"
            )));
        }
        let overlaps = |a: (u16, u16), b: (u16, u16)| a.0 <= b.1 && b.0 <= a.1;
        if let Some(other) = out.iter().find(|p: &&PortRequest| {
            p.protocol == protocol && (overlaps(p.host, host) || overlaps(p.container, container))
        }) {
            return Err(s.refuse(format!(
                "{item:?} publishes a host or container port of {}:{}/{protocol} again",
                shown_range(other.host),
                shown_range(other.container)
            )));
        }
        out.push(PortRequest {
            host,
            container,
            protocol,
        });
    }
    let total: u32 = out.iter().map(|p| u32::from(p.host.1 - p.host.0) + 1).sum();
    if total > MAX_PORTS {
        return Err(s.refuse(format!(
            "{total} ports, more than the {MAX_PORTS} a job may publish (MAX_PORTS)"
        )));
    }
    Ok(out)
}

/// `8001` or `8001-8010`.
fn shown_range(r: (u16, u16)) -> String {
    if r.0 == r.1 {
        r.0.to_string()
    } else {
        format!("{}-{}", r.0, r.1)
    }
}

/// `CRITICAL`, `ERROR`, `WARNING`, `INFO`, `DEBUG` (the RIS names) -> a tracing level.
pub fn parse_log_level(s: &Setting) -> Result<tracing::Level, Refusal> {
    parse_level_name(&s.value)
        .ok_or_else(|| s.refuse(format!("must be {}", crate::logging::LEVEL_NAMES)))
}

pub fn parse_level_name(text: &str) -> Option<tracing::Level> {
    match text.trim().to_ascii_uppercase().as_str() {
        "CRITICAL" | "ERROR" => Some(tracing::Level::ERROR),
        "WARNING" | "WARN" => Some(tracing::Level::WARN),
        "INFO" => Some(tracing::Level::INFO),
        "DEBUG" => Some(tracing::Level::DEBUG),
        "TRACE" => Some(tracing::Level::TRACE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A misspelt or unknown override names itself and the closest real one (issue 12.6).
    #[test]
    fn unknown_override_names_are_refused_with_the_closest() {
        let env = |k: &str| crate::job::env_of(&[(k, "x"), ("LSB_DOCKER_VOLUMES", "/a")]);
        let cases = [
            ("LSB_DOCKER_VOLUME", "did you mean LSB_DOCKER_VOLUMES?"),
            ("LSF_DOCKER_NETWROK", "did you mean LSF_DOCKER_NETWORK?"),
            ("LSB_DOCKER_SHMSIZE", "did you mean LSB_DOCKER_SHM_SIZE?"),
            (
                "LSB_DOCKER_PASSWORD",
                "never put a password in the environment",
            ),
            ("LSF_DOCKER_MOUNT_TMPDIR", "always its /tmp"),
            (
                "LSB_DOCKER_FROBNICATE",
                "the settings are LSB_DOCKER_VOLUMES, LSB_DOCKER_NETWORK",
            ),
        ];
        for (var, want) in cases {
            let e = check_names(&env(var)).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.rule.contains(want), "{var}: {e}");
        }
        for fine in [
            "LSB_DOCKER_VOLUMES",
            "LSF_DOCKER_IPC",
            "LSB_JOBID",
            "LSB_CONTAINER_IMAGE",
        ] {
            assert_eq!(check_names(&env(fine)), Ok(()), "{fine}");
        }
    }
    use crate::job::env_of;

    fn s(value: &str) -> Setting {
        Setting {
            var: "LSB_DOCKER_X".into(),
            value: value.into(),
        }
    }

    #[test]
    fn aliases() {
        let e = env_of(&[("LSF_DOCKER_NETWORK", "host")]);
        assert_eq!(
            setting(&e, "NETWORK").unwrap().unwrap().var,
            "LSF_DOCKER_NETWORK"
        );
        let e = env_of(&[
            ("LSF_DOCKER_NETWORK", "host"),
            ("LSB_DOCKER_NETWORK", "host"),
        ]);
        assert_eq!(
            setting(&e, "NETWORK").unwrap().unwrap().var,
            "LSB_DOCKER_NETWORK"
        );
        let e = env_of(&[
            ("LSF_DOCKER_NETWORK", "host"),
            ("LSB_DOCKER_NETWORK", "bridge"),
        ]);
        let err = setting(&e, "NETWORK").unwrap_err().to_string();
        assert!(
            err.contains("LSB_DOCKER_NETWORK") && err.contains("LSF_DOCKER_NETWORK"),
            "{err}"
        );
        assert_eq!(setting(&Env::new(), "NETWORK").unwrap(), None);
    }

    /// A value the SPANK plugin set from an srun option is refused under the option's name.
    #[test]
    fn settings_from_srun_options_are_named_by_the_option() {
        let e = env_of(&[
            ("LSB_DOCKER_VOLUMES", "/etc:/x"),
            ("LSB_DOCKER_WORKDIR", "/w"),
            (FROM_OPTIONS, "VOLUMES"),
        ]);
        assert_eq!(
            setting(&e, "VOLUMES").unwrap().unwrap().var,
            "--container-mounts"
        );
        assert_eq!(
            setting(&e, "WORKDIR").unwrap().unwrap().var,
            "LSB_DOCKER_WORKDIR"
        );
        for (suffix, _) in SPANK_OPTIONS {
            assert!(override_names().any(|o| o == *suffix), "{suffix}");
        }
    }

    #[test]
    fn volumes() {
        let v = parse_volumes(&s("/gpfs/a /gpfs/b:/data /gpfs/c:/ref:ro /gpfs/d:ro")).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(
            (v[0].target.to_str(), v[0].readonly),
            (Some("/gpfs/a"), false)
        );
        assert_eq!(v[1].target.to_str(), Some("/data"));
        assert!(v[2].readonly && v[3].readonly);
        assert_eq!(v[3].target.to_str(), Some("/gpfs/d"));
        for bad in [
            "data:/data",
            "/gpfs:data",
            "/gpfs:/d:Z",
            "/gpfs:/d:z",
            "/gpfs:/d:rshared",
            "/gpfs:/d:ro:x",
            "/gpfs:/d:ro,Z",
            "/gpfs::",
        ] {
            let err = parse_volumes(&s(bad)).unwrap_err();
            assert_eq!(err.var, "LSB_DOCKER_X", "{bad}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host_entry("db.example:10.0.0.1").unwrap(),
            "db.example:10.0.0.1"
        );
        assert_eq!(parse_host_entry("v6:::1").unwrap(), "v6:::1");
        for bad in [
            "noip",
            "a b:1.2.3.4",
            "-x:1.2.3.4",
            "h:1.2.3",
            "h:host-gateway",
            ":1.2.3.4",
            "h:1.2.3.4\n5",
        ] {
            assert!(parse_host_entry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports() {
        let p = parse_ports(&s("8001 8002:80 8003-8005 8006-8007:2001-2002/udp")).unwrap();
        assert_eq!(
            p[0],
            PortRequest {
                host: (8001, 8001),
                container: (8001, 8001),
                protocol: "tcp"
            }
        );
        assert_eq!(p[1].container, (80, 80));
        assert_eq!(p[2].host, (8003, 8005));
        assert_eq!(p[3].protocol, "udp");
        for bad in [
            "80:x",
            "8001/sctp",
            "8001-8000",
            "8001-8003:1-2",
            "0",
            "70000",
            "127.0.0.1:8001:80",
            "-1",
        ] {
            assert!(parse_ports(&s(bad)).is_err(), "{bad}");
        }
    }

    /// Issue 11 items 7 and 10: one job cannot publish the whole range, nor one port twice.
    #[test]
    fn port_totals_and_duplicates() {
        let cases = [
            ("8001-8100", None),
            (
                "8001-8050 8051-8100/udp 8001-8050/udp",
                Some("150 ports, more than the 100"),
            ),
            (
                "8000-8999",
                Some("1000 ports, more than the 100 a job may publish (MAX_PORTS)"),
            ),
            ("1-65535", Some("65535 ports")),
            (
                "8001 8001",
                Some("\"8001\" publishes a host or container port of 8001:8001/tcp again"),
            ),
            ("8001:80 8002:80", Some("again")),
            ("8001:80 8001:81", Some("again")),
            ("8001-8010 8005-8020", Some("again")),
            ("8001 8001/udp", None),
            ("8001:80 8002:81", None),
        ];
        for (value, want) in cases {
            match (parse_ports(&s(value)), want) {
                (Ok(_), None) => {}
                (Err(e), Some(words)) => {
                    assert!(e.to_string().contains(words), "{value}: {e}");
                }
                (got, want) => panic!("{value}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn bools_and_levels() {
        assert_eq!(parse_bool(&s("TRUE")), Ok(true));
        assert_eq!(parse_bool(&s("0")), Ok(false));
        assert!(parse_bool(&s("maybe")).is_err());
        assert_eq!(parse_log_level(&s("debug")), Ok(tracing::Level::DEBUG));
        assert_eq!(parse_log_level(&s("CRITICAL")), Ok(tracing::Level::ERROR));
        assert!(parse_log_level(&s("LOUD")).is_err());
    }
}
