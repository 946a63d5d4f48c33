//! The plan as the Engine API's `POST /containers/create` body (bollard's models). One of the two
//! renderings of a plan; it destructures the plan exhaustively, like `plan::render`.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, HealthConfig, HostConfig,
    HostConfigLogConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum, MountType,
    PortBinding, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};

use crate::plan::{ContainerPlan, HARDENING, Hardening, MountPlan, PortPlan, Staging, Ulimit};
use crate::units::ByteSize;

/// The create body for `plan`. Everything dockerd could default to something unsafe is explicit.
pub fn create_body(plan: &ContainerPlan) -> ContainerCreateBody {
    let ContainerPlan {
        hardening:
            Hardening {
                cap_drop,
                privileged,
                init,
                log_driver,
                healthcheck,
                restart,
            },
        image,
        pull: _,
        name: _,
        labels,
        passwd: _,
        group: _,
        script: _,
        staging:
            Staging {
                dir: _,
                passwd: _,
                group: _,
                script: _,
                agent_dir: _,
                ssh_dir: _,
                fifos: _,
            },
        hostname,
        user,
        group_add,
        entrypoint,
        cmd,
        env,
        working_dir,
        mounts,
        cap_add,
        security_opt,
        devices,
        gpus,
        memory,
        nano_cpus,
        cpuset_cpus,
        pids_limit,
        shm_size,
        tmp_tmpfs,
        network,
        ipc,
        ports,
        extra_hosts,
        cgroup_parent,
        cgroup_parent_why: _,
        ulimits,
        tty,
        log_level: _,
        notes: _,
        pins: _,
        // The container runs the agent (entrypoint, cmd, mounts); the task goes to its socket.
        step: _,
    } = plan;

    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for PortPlan {
        host,
        container,
        protocol,
    } in ports
    {
        for offset in 0..=(container.1 - container.0) {
            let key = format!("{}/{protocol}", container.0 + offset);
            exposed.push(key.clone());
            let binding = PortBinding {
                host_ip: None,
                host_port: Some((host.0 + offset).to_string()),
            };
            bindings.insert(key, Some(vec![binding]));
        }
    }

    let host_config = HostConfig {
        mounts: Some(
            mounts
                .iter()
                .map(
                    |MountPlan {
                         source,
                         target,
                         readonly,
                         why: _,
                     }| Mount {
                        target: Some(target.display().to_string()),
                        source: Some(source.display().to_string()),
                        typ: Some(MountType::BIND),
                        read_only: Some(*readonly),
                        bind_options: Some(MountBindOptions {
                            propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )
                .collect(),
        ),
        group_add: Some(group_add.iter().map(u32::to_string).collect()),
        cap_drop: Some(vec![cap_drop.to_string()]),
        cap_add: Some(cap_add.iter().map(|c| c.docker_name()).collect()),
        security_opt: Some(security_opt.clone()),
        privileged: Some(*privileged),
        // Empty modes are dockerd's private defaults; spelled out so nothing inherits host ones.
        pid_mode: Some(String::new()),
        userns_mode: Some(String::new()),
        uts_mode: Some(String::new()),
        init: Some(*init),
        log_config: Some(HostConfigLogConfig {
            typ: Some(log_driver.to_string()),
            config: None,
        }),
        memory: Some(memory.api()),
        memory_swap: Some(memory.api()),
        nano_cpus: *nano_cpus,
        cpuset_cpus: cpuset_cpus.clone(),
        pids_limit: Some(*pids_limit),
        devices: Some(
            devices
                .iter()
                .map(|d| DeviceMapping {
                    path_on_host: Some(d.display().to_string()),
                    path_in_container: Some(d.display().to_string()),
                    cgroup_permissions: Some("rwm".into()),
                })
                .collect(),
        ),
        device_requests: (!gpus.is_empty()).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: None,
                device_ids: Some(gpus.clone()),
                capabilities: Some(vec![vec!["gpu".into()]]),
                options: None,
            }]
        }),
        ulimits: (!ulimits.is_empty()).then(|| {
            ulimits
                .iter()
                .map(|Ulimit { name, soft, hard }| ResourcesUlimits {
                    name: Some((*name).into()),
                    soft: Some(*soft),
                    hard: Some(*hard),
                })
                .collect()
        }),
        network_mode: Some(network.clone()),
        ipc_mode: Some(ipc.clone()),
        shm_size: shm_size.map(ByteSize::api),
        tmpfs: Some(crate::plan::tmpfs(*tmp_tmpfs))
            .filter(|t| !t.is_empty())
            .map(|t| t.into_iter().collect()),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        extra_hosts: (!extra_hosts.is_empty()).then(|| extra_hosts.clone()),
        cgroup_parent: cgroup_parent.clone(),
        auto_remove: Some(false),
        // A restart would start the job again with the user and groups dockerd resolves then, in
        // a root filesystem the job has had the time to change: one start, checked, only.
        restart_policy: Some(RestartPolicy {
            name: Some(
                restart
                    .parse::<RestartPolicyNameEnum>()
                    .expect("HARDENING.restart is a restart policy's name"),
            ),
            maximum_retry_count: None,
        }),
        readonly_rootfs: Some(false),
        ..Default::default()
    };

    ContainerCreateBody {
        image: Some(image.to_string()),
        hostname: Some(hostname.clone()),
        user: Some(format!("{}:{}", user.0, user.1)),
        entrypoint: entrypoint.clone(),
        cmd: cmd.clone(),
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: working_dir.as_ref().map(|d| d.display().to_string()),
        labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        // An image's HEALTHCHECK is a process dockerd execs in the container for its whole life,
        // with groups resolved *by name* in the container's current /etc/group, which the job can
        // change after start: no health checks at all.
        healthcheck: Some(HealthConfig {
            test: Some(vec![healthcheck.to_string()]),
            ..Default::default()
        }),
        tty: Some(*tty),
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The body of the never-started container jobdock reads an image's own files from
/// (`Daemon::create_inert`): no mounts, no network, a command that does not exist, and, should
/// anything start it all the same, the hardening of a job's container as nobody (so that the
/// authorization plugin, which cannot know it is never started, holds it to the same policy).
pub fn inert_body(image: &str, labels: &BTreeMap<String, String>) -> ContainerCreateBody {
    let nobody = crate::identity::NOBODY;
    ContainerCreateBody {
        image: Some(image.to_string()),
        // Never started; an image without a command could not even be created without one.
        entrypoint: Some(vec!["/jobdock-never-runs".into()]),
        cmd: Some(Vec::new()),
        user: Some(format!("{nobody}:{nobody}")),
        network_disabled: Some(true),
        labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        healthcheck: Some(HealthConfig {
            test: Some(vec![HARDENING.healthcheck.to_string()]),
            ..Default::default()
        }),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            log_config: Some(HostConfigLogConfig {
                typ: Some(HARDENING.log_driver.into()),
                config: None,
            }),
            cap_drop: Some(vec![HARDENING.cap_drop.into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            privileged: Some(HARDENING.privileged),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The create body as JSON with sorted keys (stable for golden files and `jobdock plan --json`).
pub fn create_json(plan: &ContainerPlan) -> serde_json::Value {
    serde_json::to_value(create_body(plan)).expect("bollard models always serialize")
}
