//! The plan as the equivalent `docker run` command, one option per line with the reason for it,
//! for humans (`jobdock plan`, DEBUG logs). jobdock never runs this: it talks to the Engine API.

use super::{ContainerPlan, Hardening, MountPlan, PortPlan, Staging, Ulimit};

/// One line of the rendering: the words of an option and why it is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub words: Vec<String>,
    pub why: String,
}

/// The `docker run` argv, grouped by option, in a stable order.
pub fn docker_run(plan: &ContainerPlan) -> Vec<Line> {
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
        name,
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
        cgroup_parent_why,
        ulimits,
        tty,
        log_level: _,
        notes: _,
        pins: _,
        step,
    } = plan;
    let mut out = Vec::new();
    let mut line = |words: Vec<String>, why: &str| {
        out.push(Line {
            words,
            why: why.to_string(),
        })
    };
    let w = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    line(
        w(&["docker", "run"]),
        "jobdock makes the same request through the Engine API",
    );
    line(
        vec!["--name".into(), name.clone()],
        if step.is_some() {
            "one per job step per node: cluster, job, step, node, uid; the step's tasks join it"
        } else {
            "unique per run: scheduler, job id, jobdock's pid"
        },
    );
    for (k, v) in labels {
        line(
            vec!["--label".into(), format!("{k}={v}")],
            "found again by `jobdock cleanup --job`",
        );
    }
    line(
        vec!["--user".into(), format!("{}:{}", user.0, user.1)],
        "the job user, numeric: never root, never resolved in the image",
    );
    for g in group_add {
        line(
            vec!["--group-add".into(), g.to_string()],
            "supplementary group from the host's NSS",
        );
    }
    line(
        vec!["--cap-drop".into(), cap_drop.to_string()],
        "drop every capability...",
    );
    for c in cap_add {
        line(
            vec!["--cap-add".into(), c.docker_name()],
            "...but the site's allowlist (security.cap_add)",
        );
    }
    for s in security_opt {
        let why = if s == "no-new-privileges" {
            "setuid binaries and file capabilities grant nothing"
        } else {
            "SELinux label (security.selinux_labels)"
        };
        line(vec!["--security-opt".into(), s.clone()], why);
    }
    if *privileged {
        line(w(&["--privileged"]), "never: HARDENING says so");
    }
    if *init {
        line(
            w(&["--init"]),
            "a real PID 1 reaps zombies and passes signals on",
        );
    }
    if *healthcheck == "NONE" {
        line(
            w(&["--no-healthcheck"]),
            "dockerd runs no process in the container but the job (an image's HEALTHCHECK would)",
        );
    }
    line(
        vec!["--restart".into(), restart.to_string()],
        "started once, as checked: a restart resolves the user again in the changed image",
    );
    line(
        vec!["--log-driver".into(), log_driver.to_string()],
        "the scheduler captures output; json logs would fill the node's disk",
    );
    line(
        vec!["--hostname".into(), hostname.clone()],
        "the execution host's name",
    );
    for MountPlan {
        source,
        target,
        readonly,
        why,
    } in mounts
    {
        let mut spec = format!(
            "type=bind,source={},target={}",
            source.display(),
            target.display()
        );
        if *readonly {
            spec.push_str(",readonly");
        }
        line(vec!["--mount".into(), spec], why);
    }
    if let Some(dir) = working_dir {
        line(
            vec!["--workdir".into(), dir.display().to_string()],
            "where the job was submitted (or LSB_DOCKER_WORKDIR)",
        );
    }
    line(
        vec!["--memory".into(), memory.bytes().to_string()],
        "the job's memory allocation (or limits.memory)",
    );
    line(
        vec!["--memory-swap".into(), memory.bytes().to_string()],
        "equal to --memory: no swap",
    );
    if let Some(n) = nano_cpus {
        line(
            vec!["--cpus".into(), format!("{}", *n as f64 / 1e9)],
            "the job's CPU allocation",
        );
    }
    if let Some(cpus) = cpuset_cpus {
        line(
            vec!["--cpuset-cpus".into(), cpus.clone()],
            "the CPUs the scheduler bound the job to",
        );
    }
    line(
        vec!["--pids-limit".into(), pids_limit.to_string()],
        "no fork bomb takes the node (limits.pids)",
    );
    for d in devices {
        line(
            vec!["--device".into(), format!("{0}:{0}:rwm", d.display())],
            "site device (devices.paths)",
        );
    }
    for Ulimit { name, soft, hard } in ulimits {
        let why = if *name == "memlock" && !devices.is_empty() {
            "device jobs pin memory for RDMA (devices.memlock)"
        } else {
            "the job's own limit, as the scheduler set it"
        };
        line(
            vec!["--ulimit".into(), format!("{name}={soft}:{hard}")],
            why,
        );
    }
    if !gpus.is_empty() {
        line(
            vec!["--gpus".into(), format!("\"device={}\"", gpus.join(","))],
            "only the GPUs the scheduler allocated",
        );
    }
    line(
        vec!["--network".into(), network.clone()],
        "network mode (LSB_DOCKER_NETWORK or network.default)",
    );
    line(
        vec!["--ipc".into(), ipc.clone()],
        "IPC mode (LSB_DOCKER_IPC or ipc.default)",
    );
    if let Some(s) = shm_size {
        line(
            vec!["--shm-size".into(), s.bytes().to_string()],
            "LSB_DOCKER_SHM_SIZE",
        );
    }
    for (target, options) in super::tmpfs(*tmp_tmpfs) {
        line(
            vec!["--tmpfs".into(), format!("{target}:{options}")],
            "the job has no tmpdir of its own: /tmp is a tmpfs of limits.tmp_size",
        );
    }
    for PortPlan {
        host,
        container,
        protocol,
    } in ports
    {
        let range = |r: &(u16, u16)| {
            if r.0 == r.1 {
                r.0.to_string()
            } else {
                format!("{}-{}", r.0, r.1)
            }
        };
        line(
            vec![
                "--publish".into(),
                format!("{}:{}/{protocol}", range(host), range(container)),
            ],
            "LSB_DOCKER_PORTS within ports.range",
        );
    }
    for h in extra_hosts {
        line(
            vec!["--add-host".into(), h.clone()],
            "LSB_DOCKER_ADD_HOST(_FILE)",
        );
    }
    if let Some(c) = cgroup_parent {
        line(vec!["--cgroup-parent".into(), c.clone()], cgroup_parent_why);
    }
    line(w(&["--interactive"]), "the job reads jobdock's stdin");
    if *tty {
        line(w(&["--tty"]), "stdin is a terminal: an interactive job");
    }
    for (k, v) in env {
        line(vec!["--env".into(), format!("{k}={v}")], "");
    }
    // `--entrypoint` takes one word: the entrypoint's others go first among the arguments, as
    // dockerd joins them (Entrypoint then Cmd).
    let mut entrypoint_args: &[String] = &[];
    match entrypoint {
        None => {}
        Some(e) if e.is_empty() => line(w(&["--entrypoint", ""]), "run exactly the job's command"),
        Some(e) => {
            line(
                vec!["--entrypoint".into(), e[0].clone()],
                "entrypoint for the job's command",
            );
            entrypoint_args = &e[1..];
        }
    }
    line(vec![image.to_string()], "the image");
    if !entrypoint_args.is_empty() {
        line(
            entrypoint_args.to_vec(),
            "the entrypoint's arguments: the output FIFOs' wrapper (engine.output)",
        );
    }
    if let Some(cmd) = cmd {
        line(cmd.clone(), "the job's command");
    }
    out
}

/// The rendering as text: quoted words, aligned comments.
pub fn docker_run_text(plan: &ContainerPlan) -> String {
    let lines = docker_run(plan);
    let quoted: Vec<String> = lines.iter().map(|l| shell_words::join(&l.words)).collect();
    let width = quoted
        .iter()
        .map(String::len)
        .filter(|&n| n < 70)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (i, (q, l)) in quoted.iter().zip(&lines).enumerate() {
        let indent = if i == 0 { "" } else { "    " };
        if l.why.is_empty() {
            out.push_str(&format!("{indent}{q}\n"));
        } else {
            out.push_str(&format!("{indent}{q:width$}  # {}\n", l.why));
        }
    }
    out
}
