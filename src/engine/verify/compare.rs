//! The pure comparisons behind the checks: what dockerd stored against the plan, a process's
//! `/proc/<pid>/status` against the planned credentials, an image's group file against the job's
//! gids. Text and values in, differences out: no daemon, no host.

use std::collections::BTreeSet;
use std::path::Path;

use crate::engine::daemon::{DeviceSeen, Effective, MountSeen};
use crate::plan::{ContainerPlan, MountPlan};
use crate::units::Capability;

/// `/etc/../x/./y` -> `/x/y`, lexically, never above `/` (a container's root is its `/`).
pub(super) fn clean(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The first of `gids` that a group file names as another group, as runc's parser reads it
/// (lines trimmed, `#` comments, a gid that does not parse is 0): `(gid, name, its gid)`.
pub(super) fn conflicting_group(text: &[u8], gids: &[u32]) -> Option<(u32, String, i64)> {
    for line in text.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let mut fields = line.split(|&b| b == b':');
        let name = fields.next().unwrap_or_default();
        let gid_field = fields.nth(1).unwrap_or_default();
        let other: i64 = std::str::from_utf8(gid_field)
            .ok()
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        if let Some(&gid) = gids
            .iter()
            .find(|g| name == g.to_string().as_bytes() && i64::from(**g) != other)
        {
            return Some((gid, String::from_utf8_lossy(name).into_owned(), other));
        }
    }
    None
}

/// Every field of the stored container that differs from the plan, described.
pub(crate) fn compare(plan: &ContainerPlan, e: &Effective) -> Vec<String> {
    let mut out = Vec::new();
    let mut same =
        |what: &str, seen: &dyn std::fmt::Debug, want: &dyn std::fmt::Debug, ok: bool| {
            if !ok {
                out.push(format!("{what} is {seen:?}, the plan says {want:?}"));
            }
        };
    let user = format!("{}:{}", plan.user.0, plan.user.1);
    same("User", &e.user, &user, e.user == user);
    if let Some(dir) = &plan.working_dir {
        let want = dir.display().to_string();
        same("WorkingDir", &e.working_dir, &want, e.working_dir == want);
    }
    let groups: BTreeSet<String> = plan.group_add.iter().map(u32::to_string).collect();
    let seen: BTreeSet<String> = e.group_add.iter().cloned().collect();
    same(
        "GroupAdd",
        &e.group_add,
        &groups,
        seen == groups && e.group_add.len() == groups.len(),
    );
    let caps: BTreeSet<String> = plan.cap_add.iter().map(|c| c.docker_name()).collect();
    let seen: Result<BTreeSet<String>, String> = e.cap_add.iter().map(|c| cap_name(c)).collect();
    same("CapAdd", &e.cap_add, &caps, seen.as_ref() == Ok(&caps));
    let crate::plan::Hardening {
        cap_drop,
        privileged,
        init,
        log_driver,
        healthcheck,
        restart,
    } = plan.hardening;
    let drop_all = e.cap_drop.len() == 1 && e.cap_drop[0].eq_ignore_ascii_case(cap_drop);
    same("CapDrop", &e.cap_drop, &[cap_drop], drop_all);
    same(
        "Privileged",
        &e.privileged,
        &privileged,
        e.privileged == privileged,
    );
    same("Init", &e.init, &init, e.init == init);
    same(
        "LogConfig.Type",
        &e.log_driver,
        &log_driver,
        e.log_driver == log_driver,
    );
    let opts: BTreeSet<&String> = plan.security_opt.iter().collect();
    let seen: BTreeSet<&String> = e.security_opt.iter().collect();
    same(
        "SecurityOpt",
        &e.security_opt,
        &plan.security_opt,
        seen == opts && e.security_opt.len() == opts.len(),
    );
    same("PidMode", &e.pid_mode, &"", e.pid_mode.is_empty());
    same("UsernsMode", &e.userns_mode, &"", e.userns_mode.is_empty());
    same("UTSMode", &e.uts_mode, &"", e.uts_mode.is_empty());
    same("IpcMode", &e.ipc_mode, &plan.ipc, e.ipc_mode == plan.ipc);
    same(
        "NetworkMode",
        &e.network_mode,
        &plan.network,
        e.network_mode == plan.network,
    );
    let parent = plan.cgroup_parent.clone().unwrap_or_default();
    same(
        "CgroupParent",
        &e.cgroup_parent,
        &parent,
        e.cgroup_parent == parent,
    );
    let none: &[String] = &[];
    same("Binds", &e.binds, &none, e.binds.is_empty());
    same(
        "VolumesFrom",
        &e.volumes_from,
        &none,
        e.volumes_from.is_empty(),
    );
    same(
        "DeviceCgroupRules",
        &e.device_cgroup_rules,
        &none,
        e.device_cgroup_rules.is_empty(),
    );
    same("Sysctls", &e.sysctls, &none, e.sysctls.is_empty());
    same(
        "MaskedPaths",
        &e.masked_paths,
        &"dockerd's defaults",
        !e.masked_paths.is_empty(),
    );
    same(
        "ReadonlyPaths",
        &e.readonly_paths,
        &"dockerd's defaults (with /proc/sys)",
        e.readonly_paths.iter().any(|p| p == "/proc/sys"),
    );
    same("OomScoreAdj", &e.oom_score_adj, &0, e.oom_score_adj >= 0);
    same(
        "OomKillDisable",
        &e.oom_kill_disable,
        &false,
        !e.oom_kill_disable,
    );
    let memory = plan.memory.api();
    same("Memory", &e.memory, &memory, e.memory == memory);
    same(
        "MemorySwap",
        &e.memory_swap,
        &memory,
        e.memory_swap == memory,
    );
    same(
        "PidsLimit",
        &e.pids_limit,
        &plan.pids_limit,
        e.pids_limit == plan.pids_limit,
    );
    let ulimits: BTreeSet<(String, i64, i64)> = plan
        .ulimits
        .iter()
        .map(|u| (u.name.to_string(), u.soft, u.hard))
        .collect();
    let seen: BTreeSet<(String, i64, i64)> = e.ulimits.iter().cloned().collect();
    same(
        "Ulimits",
        &e.ulimits,
        &ulimits,
        seen == ulimits && e.ulimits.len() == ulimits.len(),
    );
    let devices: BTreeSet<DeviceSeen> = plan
        .devices
        .iter()
        .map(|d| DeviceSeen {
            on_host: d.display().to_string(),
            in_container: d.display().to_string(),
            permissions: "rwm".into(),
        })
        .collect();
    let seen: BTreeSet<DeviceSeen> = e.devices.iter().cloned().collect();
    same(
        "Devices",
        &e.devices,
        &devices,
        seen == devices && e.devices.len() == devices.len(),
    );
    let requests: Vec<Vec<String>> = if plan.gpus.is_empty() {
        Vec::new()
    } else {
        vec![plan.gpus.clone()]
    };
    same(
        "DeviceRequests",
        &e.device_requests,
        &requests,
        e.device_requests == requests,
    );
    // No process but the job's own may ever start in the container (HARDENING says why).
    let check = [healthcheck.to_string()];
    same(
        "Healthcheck.Test",
        &e.healthcheck,
        &check,
        e.healthcheck == check,
    );
    // dockerd stores an empty name for its default, which is no restart as well.
    let restart_ok =
        e.restart_policy == restart || (restart == "no" && e.restart_policy.is_empty());
    same("RestartPolicy", &e.restart_policy, &restart, restart_ok);
    let tmpfs = crate::plan::tmpfs(plan.tmp_tmpfs);
    same("Tmpfs", &e.tmpfs, &tmpfs, e.tmpfs == tmpfs);
    out.extend(compare_mounts(&plan.mounts, &e.mounts));
    out
}

/// The container's mounts are exactly the plan's binds (source, target, read-only, private
/// propagation), plus any anonymous volume the image declares (a fresh directory of dockerd's:
/// nothing of the host's).
pub(super) fn compare_mounts(plan: &[MountPlan], seen: &[MountSeen]) -> Vec<String> {
    let mut out = Vec::new();
    let mut wanted: Vec<&MountPlan> = plan.iter().collect();
    for m in seen {
        match m.typ.as_str() {
            "bind" => {
                let found = wanted.iter().position(|p| {
                    p.source.display().to_string() == m.source
                        && p.target.display().to_string() == m.destination
                        && p.readonly != m.rw
                });
                match found {
                    Some(i) => {
                        wanted.remove(i);
                        if m.propagation != "rprivate" {
                            out.push(format!(
                                "mount {} has propagation {:?}, the plan says \"rprivate\"",
                                m.destination, m.propagation
                            ));
                        }
                    }
                    None => out.push(format!(
                        "mount {} -> {} ({}) is not in the plan",
                        m.source,
                        m.destination,
                        if m.rw { "rw" } else { "ro" }
                    )),
                }
            }
            "volume" if !plan.iter().any(|p| p.target == Path::new(&m.destination)) => {}
            other => out.push(format!(
                "mount {} of type {other:?} ({}) is not in the plan",
                m.destination, m.source
            )),
        }
    }
    for p in wanted {
        out.push(format!(
            "mount {} -> {} is missing",
            p.source.display(),
            p.target.display()
        ));
    }
    out
}

/// `CAP_SYS_NICE`, `SYS_NICE` or `sys_nice` as dockerd's canonical `CAP_SYS_NICE`; unknown names
/// are an error (they cannot be compared).
pub(super) fn cap_name(name: &str) -> Result<String, String> {
    name.parse::<Capability>().map(|c| c.docker_name())
}

/// The bit of `c` in a `/proc/<pid>/status` capability mask (the enum is in kernel order).
pub(super) fn cap_bit(c: Capability) -> u64 {
    1 << (c as u32)
}

/// Every credential of the job's init (from `/proc/<pid>/status`) that the plan does not allow.
pub(crate) fn check_status(plan: &ContainerPlan, status: &str) -> Vec<String> {
    let mut out = Vec::new();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let numbers = |name: &str| -> Option<Vec<u64>> {
        field(name)?
            .split_whitespace()
            .map(|n| n.parse().ok())
            .collect()
    };
    let (uid, gid) = (u64::from(plan.user.0), u64::from(plan.user.1));
    for (name, want) in [("Uid", uid), ("Gid", gid)] {
        match numbers(name) {
            Some(ids) if ids.len() == 4 && ids.iter().all(|&i| i == want) => {}
            other => out.push(format!(
                "the job's {name} (real, effective, saved, fs) is {other:?}, the plan says {want}"
            )),
        }
    }
    let planned: BTreeSet<u64> = plan.group_add.iter().map(|&g| u64::from(g)).collect();
    match numbers("Groups") {
        Some(groups) => {
            let groups: BTreeSet<u64> = groups.into_iter().collect();
            let extra: Vec<&u64> = groups
                .iter()
                .filter(|g| **g != gid && !planned.contains(g))
                .collect();
            let missing: Vec<&u64> = planned.difference(&groups).collect();
            if !extra.is_empty() || !missing.is_empty() {
                out.push(format!(
                    "the job's groups are {groups:?}, the plan says {planned:?} (extra {extra:?}, \
                     missing {missing:?})"
                ));
            }
        }
        None => out.push("the job's Groups are unreadable".into()),
    }
    let allowed = plan.cap_add.iter().fold(0u64, |m, &c| m | cap_bit(c));
    for name in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let mask = field(name).and_then(|v| u64::from_str_radix(v, 16).ok());
        let ok = match (name, mask) {
            ("CapBnd", Some(m)) => m == allowed,
            (_, Some(m)) => m & !allowed == 0,
            (_, None) => false,
        };
        if !ok {
            out.push(format!(
                "the job's {name} is {}, the allowlist is {allowed:016x}",
                mask.map_or("unreadable".to_string(), |m| format!("{m:016x}"))
            ));
        }
    }
    if plan.security_opt.iter().any(|o| o == "no-new-privileges")
        && field("NoNewPrivs") != Some("1")
    {
        out.push(format!(
            "the job's NoNewPrivs is {:?}, the plan says 1",
            field("NoNewPrivs")
        ));
    }
    out
}
