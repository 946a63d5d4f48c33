//! LSF adapter: the variables LSF sets for a job (see research/lsf_observed.md) -> `JobContext`.

use std::path::PathBuf;

use super::{
    Env, JobContext, JobError, Scheduler, abs_path, bad, gpu_list, number, private_tmpdir,
};

pub fn context(env: &Env, cwd: Option<PathBuf>) -> Result<JobContext, JobError> {
    let id: u64 = number(env, "LSB_JOBID")?.ok_or_else(|| bad("LSB_JOBID", "", "must be set"))?;
    // LSB_JOBINDEX=0 means "not an array element".
    let index: Option<u32> = number(env, "LSB_JOBINDEX")?.filter(|&i| i != 0);
    let job_id = match index {
        Some(i) => format!("{id}[{i}]"),
        None => id.to_string(),
    };
    let work_dir = abs_path(env, "LS_EXECCWD")?
        .or(abs_path(env, "LS_SUBCWD")?)
        .or(cwd);
    let named = abs_path(env, "__LSF_JOB_TMPDIR__")?.or(private_tmpdir(abs_path(env, "TMPDIR")?));
    let tmpdir_by_convention = named.is_none();
    let tmpdir = match named {
        Some(dir) => Some(dir),
        // LSB_JOB_TMPDIR (lsf.conf) is the base the job's own directory is made in; without it
        // LSF (and OpenLava) makes it in /tmp. TMPDIR is set only with LSB_SET_TMPDIR=y, and a
        // setuid jobdock never sees it (glibc removes it): the name is LSF's convention.
        None => {
            let base = abs_path(env, "LSB_JOB_TMPDIR")?.unwrap_or_else(|| PathBuf::from("/tmp"));
            let name = match index {
                Some(i) => format!("{id}_{i}.tmpdir"),
                None => format!("{id}.tmpdir"),
            };
            Some(base.join(name))
        }
    };
    Ok(JobContext {
        scheduler: Some(Scheduler::Lsf),
        job_id: Some(job_id),
        array_index: index,
        step: None,
        job_file: abs_path(env, "LSB_JOBFILENAME")?,
        work_dir,
        tmpdir: private_tmpdir(tmpdir),
        tmpdir_by_convention,
        cpus: slots(env)?,
        memory: None,
        gpus: gpu_list(env, "CUDA_VISIBLE_DEVICES")?,
        scheduler_uid: None,
        confirmed: false,
        notes: Vec::new(),
        parallel: None,
    })
}

/// Slots on this host: the first entry of `LSB_MCPU_HOSTS` ("host n host n "), which is the
/// execution host for a job starter, else `LSB_DJOB_NUMPROC`.
fn slots(env: &Env) -> Result<Option<u32>, JobError> {
    if let Some(hosts) = env.get("LSB_MCPU_HOSTS") {
        let words: Vec<&str> = hosts.split_whitespace().collect();
        if words.len() >= 2 && words.len().is_multiple_of(2) {
            return words[1]
                .parse()
                .map(Some)
                .map_err(|_| bad("LSB_MCPU_HOSTS", hosts, "must be \"host n host n ...\""));
        }
        return Err(bad(
            "LSB_MCPU_HOSTS",
            hosts,
            "must be \"host n host n ...\"",
        ));
    }
    number(env, "LSB_DJOB_NUMPROC")
}

#[cfg(test)]
mod tests {
    use super::super::{env_of, from_env};
    use super::*;

    /// The environment of `bsub -q docker 'echo hello'` as OpenLava hands it to a job starter.
    fn observed() -> Vec<(&'static str, &'static str)> {
        vec![
            ("LSB_ACCT_FILE", "/tmp/.1700000000.212.acct"),
            ("LSB_DJOB_NUMPROC", "1"),
            ("LSB_EFFECTIVE_RSRCREQ", ""),
            ("LSB_EXIT_PRE_ABORT", "99"),
            ("LSB_HOSTS", "vm"),
            ("LSB_JOBEXIT_STAT", "0"),
            ("LSB_JOBFILENAME", "/home/alice/.lsbatch/1700000000.212"),
            ("LSB_JOBID", "212"),
            ("LSB_JOBINDEX", "0"),
            ("LSB_JOBNAME", "echo hello"),
            ("LSB_JOB_EXECUSER", "alice"),
            ("LSB_MAX_NUM_PROCESSORS", "1"),
            ("LSB_MCPU_HOSTS", "vm 1 "),
            ("LSB_QUEUE", "docker"),
            ("LSB_TRAPSIGS", "trap # 15 10 12 2 1"),
            ("LS_EXEC_T", "START"),
            ("LS_JOBPID", "4242"),
            ("LS_SUBCWD", "/home/alice/work"),
            ("HOME", "/home/alice"),
            ("USER", "alice"),
        ]
    }

    fn with(overrides: &[(&'static str, &'static str)]) -> Env {
        let mut pairs = observed();
        for (k, v) in overrides {
            pairs.retain(|(name, _)| name != k);
            if !v.is_empty() || *k == "LSB_EFFECTIVE_RSRCREQ" {
                pairs.push((k, v));
            }
        }
        env_of(&pairs)
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            env: Env,
            want_id: &'static str,
            want_index: Option<u32>,
            want_cpus: Option<u32>,
            want_tmp: Option<&'static str>,
            want_gpus: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "plain job: LSF's default tmpdir, which OpenLava makes without a variable",
                env: with(&[]),
                want_id: "212",
                want_index: None,
                want_cpus: Some(1),
                want_tmp: Some("/tmp/212.tmpdir"),
                want_gpus: &[],
            },
            Case {
                name: "array element",
                env: with(&[
                    ("LSB_JOBINDEX", "3"),
                    ("LSB_JOBINDEX_END", "3"),
                    ("LSB_JOBNAME", "arr[1-3]"),
                    ("LSB_JOBFILENAME", "/home/alice/.lsbatch/1700000000.212.3"),
                ]),
                want_id: "212[3]",
                want_index: Some(3),
                want_cpus: Some(1),
                want_tmp: Some("/tmp/212_3.tmpdir"),
                want_gpus: &[],
            },
            Case {
                name: "-n 2 on one host",
                env: with(&[
                    ("LSB_HOSTS", "vm vm"),
                    ("LSB_MCPU_HOSTS", "vm 2 "),
                    ("LSB_MAX_NUM_PROCESSORS", "2"),
                    ("LSB_DJOB_NUMPROC", "2"),
                ]),
                want_id: "212",
                want_index: None,
                want_cpus: Some(2),
                want_tmp: Some("/tmp/212.tmpdir"),
                want_gpus: &[],
            },
            Case {
                name: "LSF 10 job tmpdir and GPUs",
                env: with(&[
                    ("__LSF_JOB_TMPDIR__", "/tmp/212.tmpdir"),
                    ("TMPDIR", "/tmp/212.tmpdir"),
                    ("CUDA_VISIBLE_DEVICES", "1,3"),
                ]),
                want_id: "212",
                want_index: None,
                want_cpus: Some(1),
                want_tmp: Some("/tmp/212.tmpdir"),
                want_gpus: &["1", "3"],
            },
            Case {
                name: "TMPDIR=/tmp is the node's, not the job's: the job's own in it",
                env: with(&[("TMPDIR", "/tmp")]),
                want_id: "212",
                want_index: None,
                want_cpus: Some(1),
                want_tmp: Some("/tmp/212.tmpdir"),
                want_gpus: &[],
            },
            Case {
                name: "LSB_JOB_TMPDIR is the base, not the job's directory",
                env: with(&[("LSB_JOB_TMPDIR", "/scratch/lsftmp")]),
                want_id: "212",
                want_index: None,
                want_cpus: Some(1),
                want_tmp: Some("/scratch/lsftmp/212.tmpdir"),
                want_gpus: &[],
            },
            Case {
                name: "an array element's directory in the base",
                env: with(&[("LSB_JOB_TMPDIR", "/scratch/lsftmp"), ("LSB_JOBINDEX", "7")]),
                want_id: "212[7]",
                want_index: Some(7),
                want_cpus: Some(1),
                want_tmp: Some("/scratch/lsftmp/212_7.tmpdir"),
                want_gpus: &[],
            },
            Case {
                name: "LSB_SET_TMPDIR=y: TMPDIR is the job's",
                env: with(&[
                    ("LSB_JOB_TMPDIR", "/scratch/lsftmp"),
                    ("TMPDIR", "/scratch/lsftmp/212.tmpdir"),
                ]),
                want_id: "212",
                want_index: None,
                want_cpus: Some(1),
                want_tmp: Some("/scratch/lsftmp/212.tmpdir"),
                want_gpus: &[],
            },
        ];
        for c in cases {
            let ctx = from_env(&c.env, Some("/somewhere".into()))
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(ctx.scheduler(), Scheduler::Lsf, "{}", c.name);
            assert_eq!(ctx.job_id.as_deref(), Some(c.want_id), "{}", c.name);
            assert_eq!(ctx.array_index, c.want_index, "{}", c.name);
            assert_eq!(ctx.cpus, c.want_cpus, "{}", c.name);
            assert_eq!(
                ctx.tmpdir.as_deref(),
                c.want_tmp.map(std::path::Path::new),
                "{}",
                c.name
            );
            assert_eq!(ctx.gpus, c.want_gpus, "{}", c.name);
            assert_eq!(ctx.work_dir, Some("/home/alice/work".into()), "{}", c.name);
            assert_eq!(
                ctx.job_file
                    .as_ref()
                    .map(|p| p.starts_with("/home/alice/.lsbatch")),
                Some(true),
                "{}",
                c.name
            );
            assert_eq!(
                ctx.scheduler_uid, None,
                "LSF variables never name the user: {}",
                c.name
            );
        }
    }

    #[test]
    fn hostile_values_are_refused_with_the_variable_named() {
        let cases = [
            ("LSB_JOBID", "212; rm -rf /"),
            ("LSB_JOBID", "-1"),
            ("LSB_JOBINDEX", "x"),
            ("LSB_JOBFILENAME", "relative/file"),
            ("LS_SUBCWD", "../../etc"),
            ("LSB_MCPU_HOSTS", "vm"),
            ("CUDA_VISIBLE_DEVICES", "0,all;1"),
        ];
        for (name, value) in cases {
            let err = from_env(&with(&[(name, value)]), None)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(name), "{name}={value:?}: {err}");
        }
    }
}

/// The JOB_STARTER line jobdock ships for LSF (contrib/lsf), for a jobdock installed at
/// `binary`. LSF splices it in front of the user's command on one line of the job script: `exec`
/// replaces the job shell with jobdock before the `;` lets anything else on that line run, so no
/// part of the job runs on the host, and jobdock reads the user's exact command from the job file.
/// (A trailing `#` would do the same, but LSF-family config readers cut every line at `#`, quotes
/// or not.)
pub fn starter(binary: &std::path::Path) -> String {
    format!("exec {} lsf-starter;", binary.display())
}

/// Why a job file does not give the user's command: LSF did not write it as jobdock expects, or
/// jobdock is not the JOB_STARTER it ran (both the site's to fix).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobFileError {
    #[error("no \"# LSBATCH: User input\" line")]
    NoUserInput,
    #[error("no \"# LSBATCH: End user input\" line")]
    NoEndOfUserInput,
    #[error(
        "LSB_JOB_STARTER is not set: jobdock lsf-starter must be the queue's or application's \
         JOB_STARTER"
    )]
    NoStarter,
    #[error("the job file's user input does not start with the JOB_STARTER {starter:?}")]
    NotStarted { starter: String },
}

/// Recovers exactly what the user submitted from an LSF job file: the lines between
/// `# LSBATCH: User input` and `# LSBATCH: End user input`, without the JOB_STARTER prefix LSF
/// spliced in front of the first command (`starter`, from `LSB_JOB_STARTER`) and without the
/// `ExitStat=$?` / `wait` lines LSF appends.
pub fn user_command(job_file: &str, starter: &str) -> Result<String, JobFileError> {
    let lines: Vec<&str> = job_file.lines().collect();
    let begin = lines
        .iter()
        .position(|l| l.trim_end() == "# LSBATCH: User input")
        .ok_or(JobFileError::NoUserInput)?;
    let end = lines[begin..]
        .iter()
        .position(|l| l.trim_end() == "# LSBATCH: End user input")
        .map(|i| begin + i)
        .ok_or(JobFileError::NoEndOfUserInput)?;
    let mut section: Vec<String> = lines[begin + 1..end]
        .iter()
        .map(|l| l.to_string())
        .collect();
    if section.len() >= 2
        && section[section.len() - 2] == "ExitStat=$?"
        && section[section.len() - 1] == "wait"
    {
        section.truncate(section.len() - 2);
    }
    let starter = starter.trim();
    if starter.is_empty() {
        return Err(JobFileError::NoStarter);
    }
    let first = section
        .iter()
        .position(|l| l.starts_with(starter))
        .ok_or_else(|| JobFileError::NotStarted {
            starter: starter.to_string(),
        })?;
    let rest = &section[first][starter.len()..];
    section[first] = rest.strip_prefix(' ').unwrap_or(rest).to_string();
    let mut text = section.join("\n");
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod starter_tests {
    use super::*;

    /// The starter line of contrib/install.sh's jobdock.
    const STARTER: &str = "exec /usr/local/bin/jobdock lsf-starter;";

    #[test]
    fn the_starter_line_names_the_installed_binary() {
        assert_eq!(
            starter(std::path::Path::new("/usr/local/bin/jobdock")),
            STARTER
        );
        assert_eq!(
            starter(std::path::Path::new("/usr/bin/jobdock")),
            "exec /usr/bin/jobdock lsf-starter;"
        );
    }

    /// A job file as OpenLava writes it (research/lsf_observed.md), with `input` as the user input.
    fn job_file(input: &str) -> String {
        format!(
            "#! /bin/sh\n\n$LSB_TRAPSIGS\n$LSB_RCP1\n$LSB_RCP2\n$LSB_RCP3\n# LSBATCH: User input\n{input}\nExitStat=$?\nwait\n\
             # LSBATCH: End user input\ntrue\nexit `expr $? \"|\" $ExitStat`\n"
        )
    }

    #[test]
    fn the_users_exact_text_comes_back() {
        let cases = [
            ("cd /data; make | tee log", "cd /data; make | tee log\n"),
            (
                "for i in 1 2; do echo $i; done",
                "for i in 1 2; do echo $i; done\n",
            ),
            ("echo 'a  b' \"$HOME\"", "echo 'a  b' \"$HOME\"\n"),
            (
                "#BSUB -q docker\nset -e\ncd /gpfs/lab\n./run.sh > out 2>&1",
                "#BSUB -q docker\nset -e\ncd /gpfs/lab\n./run.sh > out 2>&1\n",
            ),
            ("", "\n"),
        ];
        for (input, want) in cases {
            let file = job_file(&format!("{STARTER} {input}"));
            assert_eq!(user_command(&file, STARTER).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn the_starter_may_sit_before_a_later_line() {
        let file = job_file(&format!("# a comment LSF left alone\n{STARTER} hostname"));
        assert_eq!(
            user_command(&file, STARTER).unwrap(),
            "# a comment LSF left alone\nhostname\n"
        );
    }

    #[test]
    fn refusals() {
        let plain = job_file("echo hello");
        let unterminated = "# LSBATCH: User input\nexec x\n";
        let cases = [
            (
                plain.as_str(),
                STARTER,
                JobFileError::NotStarted {
                    starter: STARTER.into(),
                },
                "does not start with the JOB_STARTER",
            ),
            (
                plain.as_str(),
                "",
                JobFileError::NoStarter,
                "LSB_JOB_STARTER is not set",
            ),
            (
                "#! /bin/sh\necho hi\n",
                STARTER,
                JobFileError::NoUserInput,
                "User input",
            ),
            (
                unterminated,
                "exec x",
                JobFileError::NoEndOfUserInput,
                "End user input",
            ),
        ];
        for (file, starter, want, words) in cases {
            let e = user_command(file, starter).unwrap_err();
            assert_eq!(e, want, "{file:?}");
            assert!(e.to_string().contains(words), "{e}");
        }
    }
}
