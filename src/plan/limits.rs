//! The container's limits and placement: memory (the job's allocation, its cgroup's limit or the
//! site's), CPUs, the CPU set, pids, `/dev/shm`, resource limits (the job's own), the cgroup it
//! goes under, and the devices it gets. Only a job jobdock really runs in (`ctx.confirmed`) lends
//! its cgroup, CPU set and allocation.

use std::path::PathBuf;

use crate::config::{self, SiteConfig};
use crate::job::{Env, JobContext};
use crate::overrides;
use crate::probe::HostProbe;
use crate::units::{ByteSize, CpuList};

use super::{PlanError, Snapshot, ULIMITS, Ulimit};

/// Devices and GPUs the container gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Devices {
    /// Host device nodes (`devices.paths`), at the same paths.
    pub devices: Vec<PathBuf>,
    /// GPUs the job was allocated, by the host's ids.
    pub gpus: Vec<String>,
}

/// The site's device globs, expanded through `probe`; the job's GPUs.
pub(super) fn devices(config: &SiteConfig, ctx: &JobContext, probe: &dyn HostProbe) -> Devices {
    let mut devices: Vec<PathBuf> = config
        .devices
        .paths
        .iter()
        .flat_map(|g| probe.devices(g))
        .collect();
    devices.sort();
    devices.dedup();
    Devices {
        devices,
        gpus: ctx.gpus.clone(),
    }
}

/// The limits part of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub memory: ByteSize,
    pub nano_cpus: Option<i64>,
    /// The CPUs the job may use (its scheduler affinity).
    pub cpuset_cpus: Option<String>,
    pub pids_limit: i64,
    pub shm_size: Option<ByteSize>,
    /// Sorted by name; see `ContainerPlan::ulimits`.
    pub ulimits: Vec<Ulimit>,
    pub cgroup_parent: Option<String>,
    /// Why the container goes under `cgroup_parent`.
    pub cgroup_parent_why: String,
}

/// Whose container it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// One task's.
    Task,
    /// A step's, shared by its tasks on this node.
    Step,
    /// The job's, named and kept for its later steps: it outlives the step that made it.
    Job,
}

/// The limits part. `has_devices`: the job gets devices (memlock is then `devices.memlock`).
/// What is left out, and why, goes to `notes`.
pub(super) fn limits(
    env: &Env,
    snap: &Snapshot,
    config: &SiteConfig,
    ctx: &JobContext,
    has_devices: bool,
    scope: Scope,
    notes: &mut Vec<String>,
) -> Result<Limits, PlanError> {
    let get = |suffix: &str| overrides::setting(env, suffix);
    let shm_size = match get("SHM_SIZE")? {
        Some(s) => {
            let size: ByteSize = s.value.parse().map_err(|e: String| s.refuse(e))?;
            if size.bytes() == 0 || size > config.limits.shm_size_max {
                return Err(s
                    .refuse(format!(
                        "must be between 1 byte and {} (limits.shm_size_max)",
                        config.limits.shm_size_max
                    ))
                    .into());
            }
            Some(size)
        }
        None => None,
    };

    let mut cgroup_parent_why = String::new();
    let cgroup_parent = match get("CGROUP")? {
        Some(s) if config.overrides.cgroup_parents.contains(&s.value) => {
            cgroup_parent_why = format!("{} (overrides.cgroup_parents)", s.var);
            Some(s.value.clone())
        }
        Some(s) => {
            return Err(s
                .refuse("this site allows no such cgroup parent (overrides.cgroup_parents)")
                .into());
        }
        None if config.engine.job_cgroup && ctx.confirmed => {
            // A named container outlives the step that makes it: under the job's cgroup, which
            // lives as long as the container may, not the step's, which Slurm removes.
            let cgroup = match (scope, &snap.cgroup) {
                (Scope::Job, Some(c)) => Some(c.slurm_job().ok_or_else(|| PlanError::Path {
                    what: "job cgroup",
                    path: c.path.display().to_string(),
                    reason:
                        "names no Slurm job_<id> for the job's named container to go under".into(),
                })?),
                (_, c) => c.clone(),
            };
            match cgroup
                .as_ref()
                .map(|c| c.docker_parent(&config.engine.cgroup_driver))
            {
                Some(Ok(parent)) => {
                    cgroup_parent_why =
                        "the job's own cgroup: its limits, suspend and accounting reach the \
                         container (engine.job_cgroup)"
                            .into();
                    Some(parent)
                }
                Some(Err(why)) => {
                    notes.push(format!("the container is not in the job's cgroup: {why}"));
                    None
                }
                None => {
                    notes.push("the container is not in the job's cgroup: /proc/self/cgroup was not readable".into());
                    None
                }
            }
        }
        None => None,
    };
    // A named container outlives the step that made it: without the job's cgroup nothing but
    // the epilog would hold it, nor its CPUs (it has no CPU set of its own).
    if scope == Scope::Job && cgroup_parent.is_none() {
        return Err(PlanError::Path {
            what: "job cgroup",
            path: snap
                .cgroup
                .as_ref()
                .map_or("unknown".into(), |c| c.path.display().to_string()),
            reason: format!(
                "a named container (LSB_DOCKER_CONTAINER_NAME) goes under the job's cgroup, and \
                 this one would not: {}",
                notes
                    .last()
                    .map_or("engine.job_cgroup is off", String::as_str)
            ),
        });
    }

    // The scheduler's allocation; else the job cgroup's limit; else the site default. Never more
    // than the job cgroup allows, whatever the environment says; and the job's cgroup and CPU set
    // only when jobdock really runs in the job (`job::confirm`).
    let in_job = ctx.confirmed;
    let cgroup_limit = snap.cgroup_memory_limit.filter(|_| in_job);
    let memory = match (ctx.memory, cgroup_limit) {
        (Some(bytes), Some(limit)) => bytes.min(limit),
        (Some(bytes), None) => bytes,
        (None, Some(limit)) => limit,
        (None, None) => config.limits.memory.bytes(),
    };
    if memory < 6 * ByteSize::MIB {
        return Err(PlanError::Path {
            what: "job memory allocation",
            path: ByteSize::exact(memory).to_string(),
            reason: "below Docker's minimum of 6 MiB".into(),
        });
    }
    // Every source is bounded (the job adapters and the cgroup's limit parser): the type says so.
    let memory = ByteSize::new(memory).unwrap_or(ByteSize::exact(ByteSize::MAX));
    // A task's container gets the CPUs the task is bound to. A step's container holds all of the
    // step's tasks on the node: the step's CPUs there (its cpuset cgroup), and each task keeps
    // its own binding inside (`TaskPlan::cpus`); else they would all share the first task's.
    // A named container, the job's, has the job's CPUs on the node: its cgroup's (unset, runc
    // gives a container its parent's CPU set).
    let (cpuset_cpus, cpus) = match scope {
        _ if !in_job => (None, ctx.cpus),
        Scope::Task => (snap.cpus_allowed.clone(), ctx.cpus),
        Scope::Step => match snap.cgroup_cpus.as_deref().map(str::parse::<CpuList>) {
            Some(Ok(step_cpus)) => (
                Some(step_cpus.to_string()),
                u32::try_from(step_cpus.count()).ok(),
            ),
            _ => (None, ctx.cpus),
        },
        Scope::Job => (None, ctx.cpus),
    };
    let nano_cpus = cpus.map(|c| c.clamp(1, snap.host_cpus.max(1)) as i64 * 1_000_000_000);

    Ok(Limits {
        memory,
        nano_cpus,
        cpuset_cpus,
        pids_limit: config.limits.pids,
        shm_size,
        ulimits: ulimits(&snap.rlimits, has_devices.then_some(config.devices.memlock)),
        cgroup_parent,
        cgroup_parent_why,
    })
}

/// The container's resource limits: the job's own (`rlimits`) for each of [`ULIMITS`], but for
/// a job with devices memlock is the site's `devices.memlock` (`device_memlock`).
pub(super) fn ulimits(rlimits: &[Ulimit], device_memlock: Option<config::Memlock>) -> Vec<Ulimit> {
    let devices = device_memlock.is_some();
    let mut out: Vec<Ulimit> = rlimits
        .iter()
        .filter(|u| ULIMITS.contains(&u.name) && !(devices && u.name == "memlock"))
        .copied()
        .collect();
    if let Some(memlock) = device_memlock {
        out.push(Ulimit {
            name: "memlock",
            soft: memlock.rlimit(),
            hard: memlock.rlimit(),
        });
    }
    out.sort_by_key(|u| u.name);
    out.dedup_by_key(|u| u.name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::env_of;

    fn snap() -> Snapshot {
        Snapshot {
            env: Env::new(),
            cwd: None,
            caller: crate::identity::Caller {
                real_uid: 2001,
                real_gid: 2001,
            },
            pid: 1,
            hostname: "node".into(),
            host_cpus: 8,
            stdin_is_tty: false,
            token: "t".into(),
            cgroup: crate::job::cgroup::JobCgroup::parse(
                "4:memory:/slurm_vm/uid_2001/job_5/step_0/task_0\n",
            ),
            cgroup_memory_limit: Some(2 * ByteSize::GIB),
            cpus_allowed: Some("0-1".into()),
            cgroup_cpus: None,
            rlimits: Vec::new(),
            exe: None,
        }
    }

    /// The job's allocation, its cgroup and CPU set count only for a confirmed job.
    #[test]
    fn a_confirmed_job_lends_its_cgroup_an_unconfirmed_one_nothing() {
        let site = SiteConfig::default();
        let confirmed = JobContext {
            memory: Some(ByteSize::GIB),
            cpus: Some(64),
            confirmed: true,
            ..Default::default()
        };
        let l = limits(
            &Env::new(),
            &snap(),
            &site,
            &confirmed,
            false,
            Scope::Task,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(l.memory, ByteSize::exact(ByteSize::GIB));
        assert_eq!(
            l.nano_cpus,
            Some(8_000_000_000),
            "clamped to the host's CPUs"
        );
        assert_eq!(l.cpuset_cpus.as_deref(), Some("0-1"));
        assert_eq!(
            l.cgroup_parent.as_deref(),
            Some("/slurm_vm/uid_2001/job_5/step_0")
        );
        assert!(l.cgroup_parent_why.contains("the job's own cgroup"));
        let unconfirmed = JobContext {
            confirmed: false,
            ..confirmed
        };
        let l = limits(
            &Env::new(),
            &snap(),
            &site,
            &unconfirmed,
            false,
            Scope::Task,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(l.cgroup_parent, None);
        assert_eq!(l.cpuset_cpus, None);
        assert_eq!(
            l.memory,
            ByteSize::exact(ByteSize::GIB),
            "its own claim, never above its cgroup's"
        );
    }

    /// Issue 14.7: a step's container gets the step's CPUs on the node (its cpuset cgroup), not
    /// the binding of the task that made it; a task's container keeps the task's binding.
    #[test]
    fn a_step_container_gets_the_steps_cpus_a_task_container_the_tasks_a_named_the_jobs() {
        let site = SiteConfig::default();
        let ctx = JobContext {
            cpus: Some(4),
            confirmed: true,
            ..Default::default()
        };
        let of = |s: &Snapshot, site: &SiteConfig, scope| {
            limits(&Env::new(), s, site, &ctx, false, scope, &mut Vec::new())
        };
        let mut s = snap();
        s.cpus_allowed = Some("1".into());
        // (scope, cgroup cpus, cpuset, nano cpus)
        for (scope, cgroup_cpus, cpuset, nano) in [
            (Scope::Step, Some("0-3"), Some("0-3"), 4),
            (Scope::Step, Some("2,5"), Some("2,5"), 2),
            // No cpuset of its own (not constrained): the host's, and the job's count.
            (Scope::Step, None, None, 4),
            (Scope::Task, Some("0-3"), Some("1"), 4),
            // The job's named container: its cgroup's CPU set, the job's count.
            (Scope::Job, Some("0-3"), None, 4),
        ] {
            s.cgroup_cpus = cgroup_cpus.map(str::to_string);
            let l = of(&s, &site, scope).unwrap();
            assert_eq!(
                (l.cpuset_cpus.as_deref(), l.nano_cpus),
                (cpuset, Some(nano * 1_000_000_000)),
                "{scope:?}, cgroup {cgroup_cpus:?}"
            );
        }
        // A named container goes under the job's cgroup, not the step's.
        let l = of(&s, &site, Scope::Job).unwrap();
        assert_eq!(l.cgroup_parent.as_deref(), Some("/slurm_vm/uid_2001/job_5"));
        s.cgroup = crate::job::cgroup::JobCgroup::parse("4:memory:/user.slice/user-2001.slice\n");
        let e = of(&s, &site, Scope::Job).unwrap_err().to_string();
        assert!(e.contains("job_<id>"), "{e}");
        // Nor without a job cgroup at all.
        let mut off = site.clone();
        off.engine.job_cgroup = false;
        let e = of(&snap(), &off, Scope::Job).unwrap_err().to_string();
        assert!(e.contains("engine.job_cgroup is off"), "{e}");
    }

    #[test]
    fn shm_size_and_cgroup_overrides_are_checked() {
        let site = SiteConfig::default();
        let ctx = JobContext::default();
        for (var, value, want) in [
            ("LSB_DOCKER_SHM_SIZE", "0", "limits.shm_size_max"),
            ("LSB_DOCKER_SHM_SIZE", "1t", "limits.shm_size_max"),
            ("LSB_DOCKER_CGROUP", "/", "overrides.cgroup_parents"),
        ] {
            let err = limits(
                &env_of(&[(var, value)]),
                &snap(),
                &site,
                &ctx,
                false,
                Scope::Task,
                &mut Vec::new(),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(var) && err.contains(want),
                "{var}={value}: {err}"
            );
        }
        let l = limits(
            &env_of(&[("LSB_DOCKER_SHM_SIZE", "1g")]),
            &snap(),
            &site,
            &ctx,
            false,
            Scope::Task,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(l.shm_size, Some(ByteSize::exact(ByteSize::GIB)));
    }
}
