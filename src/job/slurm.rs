//! Slurm adapter: the variables of a job step, batch step or prolog/epilog -> `JobContext`.
//! (research/slurm_hpc.md §5.2 lists what exists where.)

use std::path::PathBuf;

use super::{
    Env, JobContext, JobError, Parallel, Scheduler, abs_path, bad, gpu_list, number, private_tmpdir,
};

const MIB: u64 = 1024 * 1024;

pub fn context(env: &Env, cwd: Option<PathBuf>) -> Result<JobContext, JobError> {
    let id: u64 = match number(env, "SLURM_JOB_ID")? {
        Some(id) => id,
        None => {
            number(env, "SLURM_JOBID")?.ok_or_else(|| bad("SLURM_JOB_ID", "", "must be set"))?
        }
    };
    let step = match (step_id(env)?, number::<u32>(env, "SLURM_PROCID")?) {
        (Some(step), Some(task)) => Some(format!("{step}.{task}")),
        (Some(step), None) => Some(step),
        (None, _) => None,
    };
    // In a step the process's cwd is where the task runs; a prolog only has the job's work dir.
    let work_dir = if step.is_some() {
        cwd.or(abs_path(env, "SLURM_SUBMIT_DIR")?)
    } else {
        abs_path(env, "SLURM_JOB_WORK_DIR")?
            .or(abs_path(env, "SLURM_SUBMIT_DIR")?)
            .or(cwd)
    };
    let cpus: Option<u32> = number(env, "SLURM_CPUS_ON_NODE")?;
    let memory = match (
        mem(env, "SLURM_MEM_PER_NODE")?,
        mem(env, "SLURM_MEM_PER_CPU")?,
    ) {
        (Some(node), _) => Some(node),
        (None, Some(per_cpu)) => Some(
            per_cpu
                .checked_mul(u64::from(cpus.unwrap_or(1)))
                .filter(|&b| b <= crate::units::ByteSize::MAX)
                .ok_or_else(|| {
                    bad(
                        "SLURM_MEM_PER_CPU",
                        env.get("SLURM_MEM_PER_CPU").map_or("", String::as_str),
                        "times SLURM_CPUS_ON_NODE is more than Docker can take (8 EiB)",
                    )
                })?,
        ),
        (None, None) => None,
    };
    let gpus = match gpu_list(env, "SLURM_STEP_GPUS")? {
        step_gpus if !step_gpus.is_empty() => step_gpus,
        _ => gpu_list(env, "SLURM_JOB_GPUS")?,
    };
    Ok(JobContext {
        scheduler: Some(Scheduler::Slurm),
        job_id: Some(id.to_string()),
        array_index: number(env, "SLURM_ARRAY_TASK_ID")?,
        step,
        job_file: None,
        work_dir,
        tmpdir: private_tmpdir(abs_path(env, "SLURM_TMPDIR")?.or(abs_path(env, "TMPDIR")?)),
        cpus,
        memory,
        gpus,
        scheduler_uid: number(env, "SLURM_JOB_UID")?,
        tmpdir_by_convention: false,
        confirmed: false,
        notes: Vec::new(),
        parallel: parallel(env, step_id(env)?)?,
    })
}

/// The task's place in a parallel step; `None` outside a numbered step, or when Slurm does not
/// say (an older Slurm without `SLURM_CLUSTER_NAME`).
fn parallel(env: &Env, step: Option<String>) -> Result<Option<Parallel>, JobError> {
    let Some(step) = step.filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else {
        return Ok(None);
    };
    let (Some(cluster), Some(node), Some(per_node)) = (
        env.get("SLURM_CLUSTER_NAME"),
        env.get("SLURMD_NODENAME"),
        env.get("SLURM_STEP_TASKS_PER_NODE"),
    ) else {
        return Ok(None);
    };
    for (name, value) in [("SLURM_CLUSTER_NAME", cluster), ("SLURMD_NODENAME", node)] {
        if value.is_empty()
            || value.len() > 64
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            || value.starts_with(['.', '-'])
        {
            return Err(bad(
                name,
                value,
                "must be 1 to 64 letters, digits, '.', '-' or '_' (it names the step's container)",
            ));
        }
    }
    let node_id: usize = number(env, "SLURM_NODEID")?.unwrap_or(0);
    let counts = tasks_per_node(per_node).ok_or_else(|| {
        bad(
            "SLURM_STEP_TASKS_PER_NODE",
            per_node,
            "must be Slurm's list of counts, like 2(x3),1",
        )
    })?;
    let local_tasks = *counts.get(node_id).ok_or_else(|| {
        bad(
            "SLURM_NODEID",
            &node_id.to_string(),
            "is beyond the nodes SLURM_STEP_TASKS_PER_NODE counts",
        )
    })?;
    Ok(Some(Parallel {
        cluster: cluster.clone(),
        node: node.clone(),
        step,
        local_tasks,
    }))
}

/// The job's nodes with their CPUs (`SLURM_JOB_NODELIST`, `SLURM_JOB_CPUS_PER_NODE`), in
/// Slurm's order: the hostfile of a job's virtual cluster. (The user may set these; they only
/// shape the user's own containers' files.)
pub fn job_nodes(env: &Env) -> Result<Vec<(String, u32)>, JobError> {
    let get = |name: &'static str| {
        env.get(name)
            .map(String::as_str)
            .ok_or_else(|| bad(name, "", "is not set (a Slurm job sets it)"))
    };
    let (list, cpus) = (get("SLURM_JOB_NODELIST")?, get("SLURM_JOB_CPUS_PER_NODE")?);
    let names = expand_hostlist(list).map_err(|reason| bad("SLURM_JOB_NODELIST", list, &reason))?;
    let counts = tasks_per_node(cpus).ok_or_else(|| {
        bad(
            "SLURM_JOB_CPUS_PER_NODE",
            cpus,
            "must be Slurm's list of counts, like 2(x3),1",
        )
    })?;
    if counts.len() != names.len() {
        return Err(bad(
            "SLURM_JOB_CPUS_PER_NODE",
            cpus,
            &format!(
                "counts {} nodes, SLURM_JOB_NODELIST names {}",
                counts.len(),
                names.len()
            ),
        ));
    }
    Ok(names.into_iter().zip(counts).collect())
}

/// Most nodes a host list may name.
const MAX_NODES: usize = 65536;

/// Slurm's host list (`n[1-3,07],gpu[01-02]x[1-2]`) as its names, in order: ranges keep their
/// zero padding; several bracketed parts multiply. Names as `SLURMD_NODENAME` allows.
fn expand_hostlist(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for item in split_top(text)? {
        let mut partial = vec![String::new()];
        let mut rest = item;
        while !rest.is_empty() {
            let (literal, tail) = rest.split_at(rest.find('[').unwrap_or(rest.len()));
            for p in &mut partial {
                p.push_str(literal);
            }
            if tail.is_empty() {
                break;
            }
            let close = tail.find(']').ok_or("a '[' without its ']'")?;
            let choices = ranges(&tail[1..close])?;
            if partial.len() * choices.len() + names.len() > MAX_NODES {
                return Err(format!("more than {MAX_NODES} nodes"));
            }
            partial = partial
                .iter()
                .flat_map(|p| choices.iter().map(move |c| format!("{p}{c}")))
                .collect();
            rest = &tail[close + 1..];
        }
        for name in partial {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                || name.starts_with(['.', '-'])
            {
                return Err(format!("{name:?} is not a node name"));
            }
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err("names no node".into());
    }
    Ok(names)
}

/// The list's items: split at the commas outside brackets.
fn split_top(text: &str) -> Result<Vec<&str>, String> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err("nested '['".into()),
            ']' if depth == 1 => depth = 0,
            ']' => return Err("a ']' without its '['".into()),
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("a '[' without its ']'".into());
    }
    items.push(&text[start..]);
    Ok(items)
}

/// `1-3,07` -> `1 2 3 07`; a range's width is its first bound's (`01-10`: `01` ... `10`).
fn ranges(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(format!(
                "[{text}]: {part:?} is not a number or a range of them"
            ));
        }
        let (a, b): (u32, u32) = (lo.parse().expect("digits"), hi.parse().expect("digits"));
        if a > b || (b - a) as usize >= MAX_NODES {
            return Err(format!(
                "[{text}]: {part:?} is not a range of at most {MAX_NODES}"
            ));
        }
        out.extend((a..=b).map(|n| format!("{n:0width$}", width = lo.len())));
    }
    Ok(out)
}

/// `2(x3),1` -> `[2, 2, 2, 1]`; at most 65536 nodes, at most 65536 tasks per node.
fn tasks_per_node(text: &str) -> Option<Vec<u32>> {
    let mut counts = Vec::new();
    for part in text.split(',') {
        let (n, times) = match part.split_once("(x") {
            Some((n, rest)) => (n, rest.strip_suffix(')')?.parse::<usize>().ok()?),
            None => (part, 1),
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u32 = n.parse().ok().filter(|&n| (1..=65536).contains(&n))?;
        if times == 0 || counts.len() + times > 65536 {
            return None;
        }
        counts.extend(std::iter::repeat_n(n, times));
    }
    Some(counts)
}

/// The step id: a number, or the names Slurm gives its special steps.
fn step_id(env: &Env) -> Result<Option<String>, JobError> {
    let Some(v) = env.get("SLURM_STEP_ID").or(env.get("SLURM_STEPID")) else {
        return Ok(None);
    };
    let ok = v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty()
        || ["batch", "extern", "interactive"].contains(&v.as_str());
    if ok {
        Ok(Some(v.clone()))
    } else {
        Err(bad("SLURM_STEP_ID", v, "must be a step number"))
    }
}

/// Slurm's memory variables are MiB, optionally with a unit suffix (`4096`, `4G`).
fn mem(env: &Env, name: &str) -> Result<Option<u64>, JobError> {
    let Some(v) = env.get(name) else {
        return Ok(None);
    };
    let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| bad(name, v, "must be a size in MiB"))?;
    let factor = match unit {
        "" | "M" => MIB,
        "K" => 1024,
        "G" => 1024 * MIB,
        "T" => 1024 * 1024 * MIB,
        _ => return Err(bad(name, v, "must be a size in MiB")),
    };
    let bytes = n
        .checked_mul(factor)
        .filter(|&b| b <= crate::units::ByteSize::MAX)
        .ok_or_else(|| bad(name, v, "is more than Docker can take (8 EiB)"))?;
    Ok(Some(bytes).filter(|&b| b > 0))
}

#[cfg(test)]
mod tests {
    use super::super::{env_of, from_env};
    use super::*;

    #[test]
    fn tasks_per_node_lists() {
        for (text, want) in [
            ("2(x2)", Some(vec![2, 2])),
            ("3,1", Some(vec![3, 1])),
            ("2(x3),1", Some(vec![2, 2, 2, 1])),
            ("4", Some(vec![4])),
            ("", None),
            ("0", None),
            ("2(x0)", None),
            ("2(x2", None),
            ("x", None),
            ("-1", None),
            ("2(x99999999)", None),
        ] {
            assert_eq!(tasks_per_node(text), want, "{text:?}");
        }
    }

    #[test]
    fn a_parallel_step_says_where_the_task_is() {
        let mut vars = step();
        vars.extend([
            ("SLURM_CLUSTER_NAME", "jobdock-mpi"),
            ("SLURMD_NODENAME", "n2"),
            ("SLURM_STEP_TASKS_PER_NODE", "3,2"),
            ("SLURM_NODEID", "1"),
        ]);
        let ctx = from_env(&env_of(&vars), None).unwrap();
        assert_eq!(
            ctx.parallel,
            Some(Parallel {
                cluster: "jobdock-mpi".into(),
                node: "n2".into(),
                step: "0".into(),
                local_tasks: 2,
            })
        );
        for (name, value) in [
            ("SLURM_CLUSTER_NAME", "../x"),
            ("SLURMD_NODENAME", "a/b"),
            ("SLURMD_NODENAME", ""),
            ("SLURM_STEP_TASKS_PER_NODE", "2(x"),
            ("SLURM_NODEID", "7"),
        ] {
            let mut bad_vars = vars.clone();
            bad_vars.retain(|(k, _)| *k != name);
            bad_vars.push((name, value));
            let err = from_env(&env_of(&bad_vars), None).unwrap_err().to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }

    /// `srun -n1 -c2 --mem=2G jobdock run ...` inside `sbatch`: a job step's environment.
    fn step() -> Vec<(&'static str, &'static str)> {
        vec![
            ("SLURM_JOB_ID", "4567"),
            ("SLURM_JOBID", "4567"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_STEPID", "0"),
            ("SLURM_PROCID", "0"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_NODEID", "0"),
            ("SLURM_CPUS_ON_NODE", "2"),
            ("SLURM_MEM_PER_NODE", "2048"),
            ("SLURM_SUBMIT_DIR", "/home/alice/work"),
            ("SLURM_JOB_NODELIST", "node1"),
            ("SLURMD_NODENAME", "node1"),
            ("SLURM_NTASKS", "1"),
            ("HOME", "/home/alice"),
        ]
    }

    /// The environment slurmd gives a Prolog/Epilog (as root).
    fn prolog() -> Vec<(&'static str, &'static str)> {
        vec![
            ("SLURM_JOB_ID", "4567"),
            ("SLURM_JOB_UID", "2001"),
            ("SLURM_JOB_GID", "2001"),
            ("SLURM_JOB_USER", "alice"),
            ("SLURM_JOB_WORK_DIR", "/home/alice/work"),
            ("SLURM_JOB_GPUS", "2,3"),
            ("SLURM_SCRIPT_CONTEXT", "prolog_slurmd"),
            ("SLURMD_NODENAME", "node1"),
        ]
    }

    fn edit(
        mut pairs: Vec<(&'static str, &'static str)>,
        set: &[(&'static str, &'static str)],
        unset: &[&str],
    ) -> Env {
        pairs.retain(|(k, _)| !unset.contains(k) && !set.iter().any(|(s, _)| s == k));
        pairs.extend_from_slice(set);
        env_of(&pairs)
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            env: Env,
            cwd: &'static str,
            want: (
                Option<&'static str>,
                Option<u32>,
                Option<u64>,
                &'static [&'static str],
                &'static str,
                Option<u32>,
            ),
        }
        let g = 1024 * MIB;
        let cases = [
            Case {
                name: "job step",
                env: edit(step(), &[], &[]),
                cwd: "/home/alice/work/sub",
                want: (
                    Some("0.0"),
                    Some(2),
                    Some(2 * g),
                    &[],
                    "/home/alice/work/sub",
                    None,
                ),
            },
            Case {
                name: "mem per cpu",
                env: edit(
                    step(),
                    &[("SLURM_MEM_PER_CPU", "1024")],
                    &["SLURM_MEM_PER_NODE"],
                ),
                cwd: "/x",
                want: (Some("0.0"), Some(2), Some(2 * g), &[], "/x", None),
            },
            Case {
                name: "no memory requested",
                env: edit(step(), &[], &["SLURM_MEM_PER_NODE"]),
                cwd: "/x",
                want: (Some("0.0"), Some(2), None, &[], "/x", None),
            },
            Case {
                name: "batch step",
                env: edit(
                    step(),
                    &[("SLURM_STEP_ID", "batch"), ("SLURM_STEPID", "batch")],
                    &["SLURM_PROCID"],
                ),
                cwd: "/x",
                want: (Some("batch"), Some(2), Some(2 * g), &[], "/x", None),
            },
            Case {
                name: "step GPUs win over job GPUs",
                env: edit(
                    step(),
                    &[("SLURM_STEP_GPUS", "1"), ("SLURM_JOB_GPUS", "0,1")],
                    &[],
                ),
                cwd: "/x",
                want: (Some("0.0"), Some(2), Some(2 * g), &["1"], "/x", None),
            },
            Case {
                name: "prolog",
                env: edit(prolog(), &[], &[]),
                cwd: "/var/spool/slurmd",
                want: (
                    None,
                    None,
                    None,
                    &["2", "3"],
                    "/home/alice/work",
                    Some(2001),
                ),
            },
            Case {
                name: "old spelling SLURM_JOBID only",
                env: edit(step(), &[], &["SLURM_JOB_ID"]),
                cwd: "/x",
                want: (Some("0.0"), Some(2), Some(2 * g), &[], "/x", None),
            },
        ];
        for c in cases {
            let ctx =
                from_env(&c.env, Some(c.cwd.into())).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let (step, cpus, memory, gpus, work_dir, uid) = c.want;
            assert_eq!(ctx.scheduler(), Scheduler::Slurm, "{}", c.name);
            assert_eq!(ctx.job_id.as_deref(), Some("4567"), "{}", c.name);
            assert_eq!(ctx.step.as_deref(), step, "{}", c.name);
            assert_eq!(ctx.cpus, cpus, "{}", c.name);
            assert_eq!(ctx.memory, memory, "{}", c.name);
            assert_eq!(ctx.gpus, gpus, "{}", c.name);
            assert_eq!(ctx.work_dir, Some(work_dir.into()), "{}", c.name);
            assert_eq!(ctx.scheduler_uid, uid, "{}", c.name);
        }
    }

    #[test]
    fn a_host_list_expands_in_slurms_order_with_its_padding() {
        let names = |t: &str| expand_hostlist(t);
        assert_eq!(names("n1").unwrap(), ["n1"]);
        assert_eq!(names("n[1-2]").unwrap(), ["n1", "n2"]);
        assert_eq!(
            names("node[08-10,12],gpu1").unwrap(),
            ["node08", "node09", "node10", "node12", "gpu1"]
        );
        assert_eq!(
            names("r[1-2]n[1-2]").unwrap(),
            ["r1n1", "r1n2", "r2n1", "r2n2"]
        );
        for bad in [
            "",
            "n[1-",
            "n]1",
            "n[[1]]",
            "n[2-1]",
            "n[a]",
            "n[1-99999999]",
            "../x",
            "n[1],",
        ] {
            assert!(names(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_jobs_nodes_have_their_cpus_and_bad_lists_name_the_variable() {
        let env = env_of(&[
            ("SLURM_JOB_NODELIST", "n[1-2],m7"),
            ("SLURM_JOB_CPUS_PER_NODE", "2(x2),4"),
        ]);
        assert_eq!(
            job_nodes(&env).unwrap(),
            [
                ("n1".to_string(), 2),
                ("n2".to_string(), 2),
                ("m7".to_string(), 4)
            ]
        );
        for (name, value, why) in [
            ("SLURM_JOB_NODELIST", "n[1-", "without its"),
            ("SLURM_JOB_CPUS_PER_NODE", "2", "counts 1 nodes"),
            ("SLURM_JOB_CPUS_PER_NODE", "x", "list of counts"),
        ] {
            let mut bad = env.clone();
            bad.insert(name.to_string(), value.to_string());
            let e = job_nodes(&bad).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(why), "{e}");
        }
        let mut unset = env.clone();
        unset.remove("SLURM_JOB_NODELIST");
        assert!(
            job_nodes(&unset)
                .unwrap_err()
                .to_string()
                .contains("SLURM_JOB_NODELIST")
        );
    }

    #[test]
    fn hostile_values_are_refused_with_the_variable_named() {
        let cases = [
            ("SLURM_JOB_ID", "4567 --privileged"),
            ("SLURM_STEP_ID", "0;id"),
            ("SLURM_MEM_PER_NODE", "lots"),
            // u64::MAX MiB once wrapped to "Memory": -1, no limit at all (issue 12.7).
            ("SLURM_MEM_PER_NODE", "18446744073709551615"),
            ("SLURM_MEM_PER_NODE", "8796093022208"),
            ("SLURM_MEM_PER_NODE", "9000000T"),
            ("SLURM_CPUS_ON_NODE", "-2"),
            ("SLURM_JOB_UID", "0x0"),
            ("SLURM_STEP_GPUS", "all,/dev/sda"),
        ];
        for (name, value) in cases {
            let err = from_env(&edit(step(), &[(name, value)], &[]), None)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(name), "{name}={value:?}: {err}");
        }
        // The largest that fits: 8 EiB less a MiB.
        let ctx = from_env(
            &edit(step(), &[("SLURM_MEM_PER_NODE", "8796093022207")], &[]),
            None,
        )
        .unwrap();
        assert_eq!(ctx.memory, Some(8796093022207 << 20));
    }

    #[test]
    fn sizes_never_wrap_in_the_create_body() {
        use crate::units::ByteSize;
        // No ByteSize holds more than the API carries, so none renders as -1.
        assert_eq!(ByteSize::new(u64::MAX), None);
        assert_eq!(
            ByteSize::new(ByteSize::MAX).map(ByteSize::api),
            Some(i64::MAX)
        );
        assert!(std::panic::catch_unwind(|| ByteSize::exact(u64::MAX)).is_err());
        assert!("9000000t".parse::<crate::units::ByteSize>().is_err());
    }
}
