//! `jobdock doctor`: is this node fit to run jobs? What the node is (facts read by `app` and the
//! engine) is judged here, purely, one finding per check, so every rule has a table-driven test.
//! Nothing here reads the system or changes it.

use std::path::PathBuf;

/// How a finding weighs: a failure means jobs will fail or be less safe than the site thinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    pub fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One check's verdict: `check` names it, `detail` says what was found and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub check: &'static str,
    pub detail: String,
}

/// What dockerd says of itself (`GET /version`, `GET /info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Daemon {
    pub version: String,
    pub api_version: String,
    /// `Components`: name and version (`runc`, `containerd`, `docker-init`).
    pub components: Vec<(String, String)>,
    pub cgroup_driver: String,
    pub cgroup_version: String,
}

/// dockerd as a process on this node (found through the socket's peer credentials).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonProcess {
    pub pid: u32,
    /// Whether it shares jobdock's mount namespace (`/proc/<pid>/ns/mnt`).
    pub same_mount_namespace: bool,
    /// Why this kernel cannot let jobdock mount into dockerd's namespace from another one
    /// (`open_tree`, `move_mount`, `mount_setattr`); `None`: it can.
    pub mount_api_missing: Option<String>,
    /// Its hard RLIMIT_MEMLOCK (`None`: unlimited).
    pub memlock_hard: Option<u64>,
    /// Whether it holds CAP_SYS_RESOURCE (it may raise a container's limits past its own).
    pub cap_sys_resource: bool,
}

/// Everything the doctor judges, read once.
#[derive(Clone, Debug)]
pub struct Facts {
    /// The site config: `Err` with every problem.
    pub config: Result<(), Vec<String>>,
    /// The installed binary: its path, and why a setuid run would refuse it (or that it is not
    /// setuid root).
    pub binary: (PathBuf, Result<(), String>),
    pub daemon: Result<Daemon, String>,
    pub process: Option<DaemonProcess>,
    /// What the config's `engine.cgroup_driver` says.
    pub configured_cgroup_driver: String,
    /// `mounts.allowed_roots` and whether each exists as a directory.
    pub allowed_roots: Vec<(PathBuf, bool)>,
    /// `devices.paths` globs and how many devices each matches.
    pub device_globs: Vec<(String, usize)>,
    /// `devices.memlock` in bytes (`None`: unlimited).
    pub device_memlock: Option<u64>,
    /// With `logging.audit = "syslog"`: the socket, and whether something listens on it.
    pub audit_socket: Option<(PathBuf, Result<(), String>)>,
}

/// The findings, one per check, in a stable order.
pub fn judge(f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut say = |level, check, detail: String| {
        out.push(Finding {
            level,
            check,
            detail,
        })
    };
    match &f.config {
        Ok(()) => say(Level::Ok, "site config", "valid and root's alone".into()),
        Err(problems) => say(Level::Fail, "site config", problems.join("; ")),
    }
    match &f.binary.1 {
        Ok(()) => say(
            Level::Ok,
            "binary",
            format!("{} is setuid root and root's alone", f.binary.0.display()),
        ),
        Err(why) => say(Level::Fail, "binary", why.clone()),
    }
    let daemon = match &f.daemon {
        Ok(d) => {
            say(
                Level::Ok,
                "dockerd",
                format!("Docker {} (API {}) answers", d.version, d.api_version),
            );
            d
        }
        Err(why) => {
            say(Level::Fail, "dockerd", why.clone());
            return out;
        }
    };
    for (name, version) in &daemon.components {
        if let Some((level, detail)) = runtime_advice(name, version) {
            say(level, "runtime", detail);
        }
    }
    if f.configured_cgroup_driver == daemon.cgroup_driver {
        say(
            Level::Ok,
            "cgroup driver",
            format!(
                "{} (cgroup v{}), as engine.cgroup_driver says",
                daemon.cgroup_driver, daemon.cgroup_version
            ),
        );
    } else {
        say(
            Level::Fail,
            "cgroup driver",
            format!(
                "dockerd uses {:?} but engine.cgroup_driver is {:?}: containers cannot join their \
                 jobs' cgroups",
                daemon.cgroup_driver, f.configured_cgroup_driver
            ),
        );
    }
    match &f.process {
        None => say(
            Level::Warn,
            "dockerd process",
            "could not identify dockerd's process from its socket".into(),
        ),
        Some(p) => {
            if p.same_mount_namespace {
                say(
                    Level::Ok,
                    "mount namespace",
                    format!("jobdock and dockerd (pid {}) share one", p.pid),
                );
            } else {
                match &p.mount_api_missing {
                    None => say(
                        Level::Ok,
                        "mount namespace",
                        format!(
                            "jobdock runs in another mount namespace than dockerd (pid {}, \
                             Slurm's job_container/tmpfs?) and stages its mounts in dockerd's",
                            p.pid
                        ),
                    ),
                    Some(e) => say(
                        Level::Fail,
                        "mount namespace",
                        format!(
                            "jobdock runs in another mount namespace than dockerd (pid {}, \
                             Slurm's job_container/tmpfs?) and cannot stage its mounts in \
                             dockerd's ({e}): every job with a home or volume is refused",
                            p.pid
                        ),
                    ),
                }
            }
            let devices = f.device_globs.iter().any(|(_, n)| *n > 0);
            let asked = match f.device_memlock {
                None => "\"unlimited\"".to_string(),
                Some(n) => format!("{:?}", crate::config::size_text(n)),
            };
            match (devices, p.memlock_hard, p.cap_sys_resource) {
                (false, _, _) => say(
                    Level::Ok,
                    "memlock",
                    "no device matches devices.paths here: jobs keep their own locked-memory limit"
                        .into(),
                ),
                (true, None, _) | (true, _, true) => say(
                    Level::Ok,
                    "memlock",
                    format!("dockerd can give device jobs devices.memlock = {asked}"),
                ),
                (true, Some(hard), false) if f.device_memlock.is_some_and(|n| n <= hard) => say(
                    Level::Ok,
                    "memlock",
                    format!(
                        "devices.memlock = {asked} is within dockerd's own hard limit ({hard} bytes)"
                    ),
                ),
                (true, Some(hard), false) => say(
                    Level::Fail,
                    "memlock",
                    format!(
                        "device jobs get devices.memlock = {asked}, but dockerd's own hard limit is \
                         {hard} bytes and it lacks CAP_SYS_RESOURCE: such jobs fail to start (exit \
                         78); set devices.memlock to at most {:?} or give dockerd CAP_SYS_RESOURCE",
                        crate::config::size_text(hard)
                    ),
                ),
            }
        }
    }
    for (root, exists) in &f.allowed_roots {
        if !exists {
            say(
                Level::Warn,
                "allowed roots",
                format!(
                    "mounts.allowed_roots names {}, which is not a directory here",
                    root.display()
                ),
            );
        }
    }
    for (glob, n) in &f.device_globs {
        let (level, detail) = if *n == 0 {
            (
                Level::Warn,
                format!("devices.paths {glob:?} matches no device here"),
            )
        } else {
            (
                Level::Ok,
                format!("devices.paths {glob:?} matches {n} device(s)"),
            )
        };
        say(level, "devices", detail);
    }
    match &f.audit_socket {
        Some((socket, Ok(()))) => say(
            Level::Ok,
            "audit",
            format!("job records go to syslog at {}", socket.display()),
        ),
        Some((socket, Err(why))) => say(
            Level::Fail,
            "audit",
            format!(
                "job records cannot reach syslog at {} (logging.syslog_socket): {why}; they are \
                 lost until a syslog daemon listens there",
                socket.display()
            ),
        ),
        None => {}
    }
    out
}

/// The known runtime holes a node's version has: (level, what and why).
fn runtime_advice(name: &str, version: &str) -> Option<(Level, String)> {
    if name != "runc" {
        return None;
    }
    let Some(v) = RuncVersion::parse(version) else {
        return Some((
            Level::Warn,
            format!("runc {version:?}: cannot tell which fixes it has"),
        ));
    };
    // (fixed in, CVE, what it is, how jobdock stands)
    const HOLES: &[((u32, u32, u32), &str, &str)] = &[
        (
            (1, 1, 12),
            "CVE-2024-21626",
            "a working directory in /proc/self/fd escapes to the host (jobdock refuses such \
             working directories, in the plan and after create)",
        ),
        (
            (1, 1, 14),
            "CVE-2024-45310",
            "a symlink race while runc creates mount points makes root-owned files at any host \
             path (jobdock refuses the mounts that hand a job this: volume targets over system \
             directories and nested targets)",
        ),
    ];
    let open: Vec<String> = HOLES
        .iter()
        .filter(|(fixed, _, _)| v.before(*fixed))
        .map(|(fixed, cve, what)| {
            format!(
                "{cve} (fixed in {}.{}.{}): {what}",
                fixed.0, fixed.1, fixed.2
            )
        })
        .collect();
    Some(if open.is_empty() {
        (
            Level::Ok,
            format!("runc {version}: none of the holes jobdock knows of"),
        )
    } else {
        (
            Level::Warn,
            format!(
                "runc {version} lacks fixes, unless the distribution backported them: {}; \
                 upgrade runc",
                open.join("; ")
            ),
        )
    })
}

/// `1.1.5+deb12u1`, `v1.2.0-rc.2`, `1.1.14`: the numbers, and whether it is a pre-release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RuncVersion {
    number: (u32, u32, u32),
    pre_release: bool,
}

impl RuncVersion {
    fn parse(text: &str) -> Option<RuncVersion> {
        let t = text.trim().trim_start_matches('v');
        let end = t.find(['-', '+', '~']).unwrap_or(t.len());
        let mut parts = t[..end].split('.').map(|p| p.parse::<u32>().ok());
        let number = (
            parts.next()??,
            parts.next()??,
            parts.next().flatten().unwrap_or(0),
        );
        Some(RuncVersion {
            number,
            pre_release: t[end..].starts_with('-') || t[end..].starts_with('~'),
        })
    }

    /// Whether this version predates `fixed` (a pre-release of the fixed version does too; the
    /// 1.2 line took fixes in its release candidates, which counts as after the 1.1 ones).
    fn before(self, fixed: (u32, u32, u32)) -> bool {
        if self.number.0 != fixed.0 || self.number.1 != fixed.1 {
            return self.number < fixed;
        }
        self.number < fixed || (self.number == fixed && self.pre_release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_versions() {
        let cases = [
            ("1.1.5+deb12u1", Some(((1, 1, 5), false))),
            ("v1.2.0-rc.2", Some(((1, 2, 0), true))),
            ("1.1.14", Some(((1, 1, 14), false))),
            ("1.3", Some(((1, 3, 0), false))),
            ("1.1.12~rc1", Some(((1, 1, 12), true))),
            ("unknown", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = RuncVersion::parse(text).map(|v| (v.number, v.pre_release));
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn runtime_holes_by_version() {
        let cases = [
            (
                "1.1.5+deb12u1",
                Level::Warn,
                &["CVE-2024-21626", "CVE-2024-45310"][..],
            ),
            ("1.1.12", Level::Warn, &["CVE-2024-45310"]),
            ("1.1.14", Level::Ok, &[]),
            ("1.2.0", Level::Ok, &[]),
            ("1.1.14-rc.1", Level::Warn, &["CVE-2024-45310"]),
            ("weird", Level::Warn, &["cannot tell"]),
        ];
        for (version, level, has) in cases {
            let (got, detail) = runtime_advice("runc", version).unwrap();
            assert_eq!(got, level, "{version}: {detail}");
            for want in has {
                assert!(detail.contains(want), "{version}: {detail}");
            }
            if level == Level::Ok {
                assert!(!detail.contains("CVE"), "{version}: {detail}");
            }
        }
        assert_eq!(runtime_advice("containerd", "1.6.20"), None);
    }

    fn healthy() -> Facts {
        Facts {
            config: Ok(()),
            binary: ("/usr/local/bin/jobdock".into(), Ok(())),
            daemon: Ok(Daemon {
                version: "20.10.24".into(),
                api_version: "1.41".into(),
                components: vec![("runc".into(), "1.1.14".into())],
                cgroup_driver: "cgroupfs".into(),
                cgroup_version: "1".into(),
            }),
            process: Some(DaemonProcess {
                pid: 7,
                same_mount_namespace: true,
                mount_api_missing: None,
                memlock_hard: None,
                cap_sys_resource: true,
            }),
            configured_cgroup_driver: "cgroupfs".into(),
            allowed_roots: vec![("/gpfs".into(), true)],
            device_globs: vec![("/dev/infiniband/*".into(), 2)],
            device_memlock: None,
            audit_socket: Some(("/dev/log".into(), Ok(()))),
        }
    }

    /// Issue 18.1: records that cannot reach syslog are the node's fault, named with the key.
    #[test]
    fn an_audit_socket_nobody_listens_on_fails() {
        let mut f = healthy();
        assert!(
            judge(&f)
                .iter()
                .any(|x| x.check == "audit" && x.level == Level::Ok)
        );
        f.audit_socket = Some((
            "/dev/log".into(),
            Err("No such file or directory (os error 2)".into()),
        ));
        let found = judge(&f);
        let audit = found.iter().find(|x| x.check == "audit").unwrap();
        assert_eq!(audit.level, Level::Fail);
        assert!(audit.detail.contains("logging.syslog_socket"), "{audit:?}");
        f.audit_socket = None;
        assert!(!judge(&f).iter().any(|x| x.check == "audit"));
    }

    /// Issue 12.8: a devices.memlock within dockerd's own limit passes without CAP_SYS_RESOURCE.
    #[test]
    fn memlock_within_dockerds_limit_passes() {
        let mut f = healthy();
        let p = f.process.as_mut().unwrap();
        p.memlock_hard = Some(8 << 20);
        p.cap_sys_resource = false;
        f.device_memlock = Some(8 << 20);
        let found = judge(&f);
        assert!(
            found
                .iter()
                .any(|x| x.check == "memlock" && x.level == Level::Ok && x.detail.contains("8m")),
            "{found:?}"
        );
        f.device_globs[0].1 = 0;
        f.device_memlock = None;
        let found = judge(&f);
        assert!(
            found
                .iter()
                .any(|x| x.check == "memlock" && x.level == Level::Ok),
            "no devices, no memlock problem: {found:?}"
        );
    }

    #[test]
    fn each_problem_is_found_by_its_check() {
        assert!(
            judge(&healthy()).iter().all(|f| f.level == Level::Ok),
            "{:?}",
            judge(&healthy())
        );
        let cases: Vec<(&str, Level, &str, fn(&mut Facts))> = vec![
            ("site config", Level::Fail, "owner", |f| {
                f.config = Err(vec!["owner uid 1000".into()])
            }),
            ("binary", Level::Fail, "not setuid", |f| {
                f.binary.1 = Err("not setuid".into())
            }),
            ("dockerd", Level::Fail, "no socket", |f| {
                f.daemon = Err("no socket".into())
            }),
            ("runtime", Level::Warn, "CVE-2024-45310", |f| {
                f.daemon.as_mut().unwrap().components[0].1 = "1.1.5+deb12u1".into()
            }),
            ("cgroup driver", Level::Fail, "systemd", |f| {
                f.configured_cgroup_driver = "systemd".into()
            }),
            (
                "mount namespace",
                Level::Ok,
                "stages its mounts in dockerd's",
                |f| f.process.as_mut().unwrap().same_mount_namespace = false,
            ),
            ("mount namespace", Level::Fail, "job_container/tmpfs", |f| {
                let p = f.process.as_mut().unwrap();
                p.same_mount_namespace = false;
                p.mount_api_missing = Some("this kernel has no open_tree".into());
            }),
            ("memlock", Level::Fail, "at most \"8m\"", |f| {
                let p = f.process.as_mut().unwrap();
                p.memlock_hard = Some(8 << 20);
                p.cap_sys_resource = false;
            }),
            ("memlock", Level::Fail, "devices.memlock = \"9m\"", |f| {
                let p = f.process.as_mut().unwrap();
                p.memlock_hard = Some(8 << 20);
                p.cap_sys_resource = false;
                f.device_memlock = Some(9 << 20);
            }),
            ("allowed roots", Level::Warn, "/scratch", |f| {
                f.allowed_roots.push(("/scratch".into(), false))
            }),
            ("devices", Level::Warn, "matches no device", |f| {
                f.device_globs[0].1 = 0
            }),
        ];
        for (check, level, detail, break_it) in cases {
            let mut f = healthy();
            break_it(&mut f);
            let found = judge(&f);
            assert!(
                found
                    .iter()
                    .any(|x| x.check == check && x.level == level && x.detail.contains(detail)),
                "{check}: {found:?}"
            );
        }
    }
}
