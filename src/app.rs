//! The only place where the process (its environment, ids, files, terminal) meets the planner and
//! the engine. Reads a snapshot once, plans, then prints or runs; maps every failure to one exit
//! code from `exit`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cli::{Cli, Command, JobArgs};
use crate::config::{self, ConfigError, SiteConfig};
use crate::engine::{self, Blame, EngineError};
use crate::esub;
use crate::exit;
use crate::identity::{self, Caller, IdentityError};
use crate::job::cgroup::JobCgroup;
use crate::job::{self, Env, JobError};
use crate::logging;
use crate::plan::{self, ContainerPlan, PlanError, Request, Snapshot};
use crate::probe::{AsUser, HostProbe};
use crate::units::CpuList;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "--config: only root may choose the site config (it is {})",
        config::DEFAULT_PATH
    )]
    ConfigNotRoot,
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Untrusted(String),
    /// The scheduler's side is set up wrong (LSF's JOB_STARTER): the site must fix it.
    #[error("{0}")]
    Site(String),
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) => exit::CONFIG,
            // NSS not answering is the node's fault, not the job's.
            AppError::Identity(IdentityError::Lookup { .. }) => exit::INFRASTRUCTURE,
            AppError::Untrusted(_) | AppError::Site(_) => exit::CONFIG,
            AppError::ConfigNotRoot
            | AppError::BadRequest(_)
            | AppError::Job(_)
            | AppError::Identity(_)
            | AppError::Plan(_) => exit::BAD_REQUEST,
            AppError::Engine(e) => match e.blame() {
                Blame::Infrastructure => exit::INFRASTRUCTURE,
                Blame::BadRequest => exit::BAD_REQUEST,
                Blame::Config => exit::CONFIG,
                Blame::NotFound => exit::COMMAND_NOT_FOUND,
                Blame::NotExecutable => exit::COMMAND_NOT_EXECUTABLE,
                Blame::Signal(n) => exit::from_job(0, Some(n)),
                Blame::Internal => exit::INTERNAL,
            },
            AppError::Internal(_) => exit::INTERNAL,
        }
    }
}

/// Runs the command line; returns the process exit code.
pub fn main(cli: Cli) -> u8 {
    let started = Instant::now();
    let env = env_snapshot();
    let level = cli
        .log_level
        .as_deref()
        .and_then(crate::overrides::parse_level_name)
        .or_else(|| {
            let s = crate::overrides::setting(&env, "RUN_LOGLEVEL")
                .ok()
                .flatten()?;
            crate::overrides::parse_log_level(&s).ok()
        });
    logging::init(level);
    if let Some(l) = cli
        .log_level
        .as_deref()
        .filter(|l| crate::overrides::parse_level_name(l).is_none())
    {
        logging::say(&format!(
            "--log-level {l:?}: must be {}",
            logging::LEVEL_NAMES
        ));
        return exit::BAD_REQUEST;
    }

    let result = privileges(&cli.command).and_then(|()| match cli.command {
        Command::Agent {
            tasks,
            socket,
            sshd,
        } => crate::agent::serve(&socket, tasks, sshd)
            .map(|()| 0)
            .map_err(AppError::Internal),
        Command::Exec {
            job,
            config,
            command,
        } => exec(config, &env, &job, command),
        Command::CheckConfig { draft, path } => Ok(check_config(path.as_deref(), draft)),
        Command::Doctor { config } => doctor(config),
        Command::Authz { config, listen } => authz(config, &listen),
        Command::Plan { job, json } => prepare(&job, env, false).map(|p| {
            print_plan(&p.plan, &p.config, json);
            0
        }),
        Command::Run(job) => {
            let record = logging::AuditRecord::start("run", &env);
            audited(record, prepare(&job, env, false), started)
        }
        Command::LsfStarter { config, words } => lsf_starter(config, words, env, started),
        Command::Cleanup { config, job } => cleanup(config, &env, job),
        Command::Esub { application, queue } => {
            Ok(esub(&env, &esub::Routing { application, queue }))
        }
        Command::Images { config } => images(config, &env),
        Command::Prune { config, dry_run } => prune(config, &env, dry_run),
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut crate::cli::command(), "jobdock", &mut script);
            print_all(&script, "the completion script")
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(crate::cli::command())
                .render(&mut page)
                .map_err(|e| AppError::Internal(format!("rendering the manual page: {e}")))?;
            print_all(&page, "the manual page")
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            logging::say(&e.to_string());
            e.exit_code()
        }
    }
}

/// `jobdock images`: the node's images, one line each.
fn images(config: Option<PathBuf>, env: &Env) -> Result<u8, AppError> {
    let caller = Caller::current();
    if !caller.is_root() {
        return Err(AppError::BadRequest(
            "images: run it as root (the node's images are every user's)".into(),
        ));
    }
    let config = load_config(config, env, caller)?;
    let listed = engine::images(&config.engine)?;
    println!(
        "{:<20} {:>10}  {:<25} {:<6} TAGS",
        "IMAGE", "SIZE", "LAST RUN BY A JOB", "IN USE"
    );
    for l in listed {
        let size = crate::units::ByteSize::shown(l.image.size);
        let last = l
            .last_run
            .map_or_else(|| "never".to_string(), logging::utc_time);
        let short: String = l
            .image
            .id
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        let tags = if l.image.tags.is_empty() {
            "<none>".to_string()
        } else {
            l.image.tags.join(",")
        };
        println!(
            "{:<20} {size:>10}  {last:<25} {:<6} {tags}",
            format!("sha256:{short}"),
            if l.in_use { "yes" } else { "no" }
        );
    }
    Ok(0)
}

/// `jobdock prune`: removes what the site's policy names; 0 even when dockerd kept one a container
/// took meanwhile (it is said), 75 when dockerd failed otherwise.
fn prune(config: Option<PathBuf>, env: &Env, dry_run: bool) -> Result<u8, AppError> {
    let caller = Caller::current();
    if !caller.is_root() {
        return Err(AppError::BadRequest(
            "prune: run it as root (it removes the node's images)".into(),
        ));
    }
    let config = load_config(config, env, caller)?;
    let done = engine::prune(&config.engine, &config.images.prune_policy(), dry_run)?;
    let mut code = 0;
    for (removal, result) in &done {
        use engine::images::Pruned;
        let tags = removal.image.tags.join(",");
        match result {
            Pruned::WouldRemove => println!(
                "jobdock prune: would remove {} ({tags}): {}",
                removal.image.id, removal.why
            ),
            Pruned::Removed => println!(
                "jobdock prune: removed {} ({tags}): {}",
                removal.image.id, removal.why
            ),
            Pruned::InUse => println!(
                "jobdock prune: kept {} ({tags}): a container uses it now",
                removal.image.id
            ),
            Pruned::Failed(e) => {
                logging::say(&format!(
                    "prune: removing {} ({tags}): {e}",
                    removal.image.id
                ));
                code = exit::INFRASTRUCTURE;
            }
        }
    }
    if done.is_empty() {
        println!("jobdock prune: nothing to remove");
    }
    Ok(code)
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn print_all(bytes: &[u8], what: &str) -> Result<u8, AppError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(AppError::Internal(format!("writing {what}: {e}"))),
    }
}

fn check_config(path: Option<&Path>, draft: bool) -> u8 {
    let path = path.unwrap_or(Path::new(config::DEFAULT_PATH));
    let code = match SiteConfig::load_untrusted(path) {
        Ok(_) => {
            println!("{}: OK", path.display());
            0
        }
        Err(ConfigError::Invalid { path, problems }) => {
            for p in problems {
                println!("{}: {p}", path.display());
            }
            exit::CONFIG
        }
        Err(e) => {
            println!("{e}");
            exit::CONFIG
        }
    };
    // A draft may live anywhere (`--draft`); installed, it must be root's alone, or jobdock
    // does not trust it: that is a failure too.
    if draft {
        return code;
    }
    if let Err(reason) = config::trust::check_root_owned(path) {
        println!(
            "{}: jobdock does not trust this file: {reason}",
            path.display()
        );
        return exit::CONFIG;
    }
    code
}

/// `jobdock authz`: the authorization plugin, until killed.
fn authz(config_path: Option<PathBuf>, listen: &Path) -> Result<u8, AppError> {
    if !Caller::current().is_root() {
        return Err(AppError::BadRequest(
            "authz: run it as root (it serves dockerd; contrib/systemd/jobdock-authz.service)"
                .into(),
        ));
    }
    let explicit = config_path.is_some();
    let path = config_path.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    match crate::authz::serve(&path, explicit, listen) {
        Ok(()) => Ok(0),
        Err(crate::authz::AuthzError::Config(e)) => Err(AppError::Config(e)),
        Err(e) => Err(AppError::Site(e.to_string())),
    }
}

/// `jobdock doctor`: reads what the node is, has `doctor` judge it, prints one line per check.
fn doctor(config_path: Option<PathBuf>) -> Result<u8, AppError> {
    use crate::doctor::{Facts, Level};
    use std::os::unix::fs::MetadataExt;
    if !Caller::current().is_root() {
        return Err(AppError::BadRequest(
            "doctor: run it as root (it reads dockerd's process and the node's files)".into(),
        ));
    }
    let explicit = config_path.is_some();
    let path = config_path.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let loaded = SiteConfig::load(&path, explicit);
    let config = loaded.as_ref().cloned().unwrap_or_default();
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let binary = std::fs::metadata(&exe)
        .map_err(|e| format!("{}: {e}", exe.display()))
        .and_then(|m| {
            if m.uid() != 0 || m.mode() & 0o4000 == 0 {
                Err(format!(
                    "{} is not setuid root (owner uid {}, mode {:o}): users cannot run jobs through it; install it with contrib/install.sh",
                    exe.display(),
                    m.uid(),
                    m.mode() & 0o7777
                ))
            } else {
                check_own_binary()
            }
        });
    let process = daemon_process(&config.engine.socket);
    let facts = Facts {
        config: loaded
            .map(|_| ())
            .map_err(|e| vec![format!("{}: {e}", path.display())]),
        binary: (exe, binary),
        daemon: engine::describe_daemon(&config.engine).map_err(|e| e.to_string()),
        process,
        configured_cgroup_driver: config.engine.cgroup_driver.clone(),
        allowed_roots: config
            .mounts
            .allowed_roots
            .iter()
            .map(|r| (r.clone(), r.is_dir()))
            .collect(),
        device_globs: config
            .devices
            .paths
            .iter()
            .map(|g| (g.clone(), crate::probe::expand_glob(g).len()))
            .collect(),
        device_memlock: u64::try_from(config.devices.memlock.rlimit()).ok(),
        audit_socket: (config.logging.audit == config::AuditTarget::Syslog).then(|| {
            let socket = config.logging.syslog_socket.clone();
            let listening = std::os::unix::net::UnixDatagram::unbound()
                .and_then(|s| s.connect(&socket))
                .map_err(|e| e.to_string());
            (socket, listening)
        }),
    };
    let findings = crate::doctor::judge(&facts);
    for f in &findings {
        println!(
            "jobdock doctor: {:<4} {}: {}",
            f.level.word(),
            f.check,
            f.detail
        );
    }
    Ok(if findings.iter().any(|f| f.level == Level::Fail) {
        exit::CONFIG
    } else {
        0
    })
}

/// dockerd as a process: the peer of its socket, its mount namespace, memlock limit and
/// CAP_SYS_RESOURCE.
fn daemon_process(socket: &Path) -> Option<crate::doctor::DaemonProcess> {
    let pid = engine::daemon_pid(socket).ok()?;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let memlock_hard = engine::rlimit::hard_limit(&limits, "memlock").flatten();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    Some(crate::doctor::DaemonProcess {
        pid,
        same_mount_namespace: engine::shares_namespace_with(pid).unwrap_or(false),
        mount_api_missing: engine::new_mount_api().err(),
        memlock_hard,
        // CAP_SYS_RESOURCE is capability 24.
        cap_sys_resource: cap_eff & (1 << 24) != 0,
    })
}

/// jobdock installed setuid root runs with the caller's real uid and root's effective uid. It
/// keeps root only for the commands that talk to dockerd (and checks it was started from a binary
/// only root could have replaced); every other command drops to the caller at once.
fn privileges(command: &Command) -> Result<(), AppError> {
    use nix::unistd::{getegid, geteuid, getgid, getuid, setresgid, setresuid};
    let (ruid, euid) = (getuid(), geteuid());
    if !euid.is_root() || ruid.is_root() {
        return Ok(());
    }
    // Not dumpable: the caller may not ptrace or read the memory of a process holding root.
    nix::sys::prctl::set_dumpable(false).map_err(|e| AppError::Internal(format!("prctl: {e}")))?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    check_own_binary().map_err(AppError::Untrusted)?;
    match command {
        Command::Run(_)
        | Command::LsfStarter { .. }
        | Command::Cleanup { .. }
        | Command::Images { .. }
        | Command::Prune { .. }
        | Command::Exec { .. } => Ok(()),
        Command::Agent { .. }
        | Command::Plan { .. }
        | Command::CheckConfig { .. }
        | Command::Esub { .. }
        | Command::Doctor { .. }
        | Command::Completions { .. }
        | Command::Man
        | Command::Authz { .. } => {
            let (rgid, _) = (getgid(), getegid());
            setresgid(rgid, rgid, rgid)
                .and_then(|()| setresuid(ruid, ruid, ruid))
                .map_err(|e| AppError::Internal(format!("dropping root: {e}")))
        }
    }
}

/// The binary a setuid jobdock runs from, and every directory above it, must be root's alone
/// (a sticky directory such as /tmp protects a root-owned file in it as well).
fn check_own_binary() -> Result<(), String> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    crate::trust::check(
        &exe,
        crate::trust::Expect::File,
        crate::trust::Above::StickyProtects,
    )
    .map_err(|e| {
        format!(
            "not running setuid from {}: it is not root's alone: {e}",
            exe.display()
        )
    })
}

/// `jobdock lsf-starter`: the job's exact command from its LSF job file, run in a container.
fn lsf_starter(
    config: Option<PathBuf>,
    words: Vec<String>,
    env: Env,
    started: Instant,
) -> Result<u8, AppError> {
    if !words.is_empty() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| "jobdock".into());
        return Err(AppError::Site(format!(
            "lsf-starter was given the words {words:?}: the shell has already split the user's command; \
             JOB_STARTER must be `{}`",
            job::lsf::starter(&exe)
        )));
    }
    let args = JobArgs {
        config,
        image: None,
        user: None,
        script: None,
        command: Vec::new(),
    };
    let record = logging::AuditRecord::start("lsf-starter", &env);
    audited(record, prepare(&args, env, true), started)
}

/// A plan with what running it needs besides: the site config and the job user's probe.
struct Prepared {
    config: SiteConfig,
    plan: ContainerPlan,
    probe: AsUser,
    home: PathBuf,
}

/// Runs a prepared job (or reports why it could not be prepared); its exit code is jobdock's.
/// Either way one audit record says who ran what and how it ended.
fn audited(
    mut record: logging::AuditRecord,
    prepared: Result<Prepared, AppError>,
    started: Instant,
) -> Result<u8, AppError> {
    let result = prepared.and_then(|p| {
        describe(&mut record, &p.plan);
        run(p)
    });
    match &result {
        Ok(outcome) => {
            record.exit = outcome.code;
            record.digest.clone_from(&outcome.image);
            record.error = outcome.messages.join("; ");
        }
        Err(e) => {
            record.exit = e.exit_code();
            record.error = e.to_string();
            record.named();
        }
    }
    record.duration = started.elapsed();
    logging::audit(&record);
    result.map(|outcome| outcome.code)
}

/// What the audit record says of the plan.
fn describe(record: &mut logging::AuditRecord, plan: &ContainerPlan) {
    record.user = plan.env.get("USER").cloned().unwrap_or_default();
    record.uid = plan.user.0;
    record.job = plan.labels.get("jobdock.job").cloned().unwrap_or_default();
    record.image = plan.image.to_string();
    record.mounts = plan
        .mounts
        .iter()
        .map(|m| {
            let mode = if m.readonly { "ro" } else { "rw" };
            format!("{}:{}:{mode}", m.source.display(), m.target.display())
        })
        .collect();
    record.devices = plan
        .devices
        .iter()
        .map(|d| d.display().to_string())
        .chain(plan.gpus.iter().map(|g| format!("gpu:{g}")))
        .collect();
}

/// Runs a prepared job, telling the user what they should know of how it ended.
fn run(p: Prepared) -> Result<engine::Outcome, AppError> {
    tracing::debug!("plan:\n{}", plan::render::docker_run_text(&p.plan));
    // Read as the job user, here: the probe forks, which must happen before the engine's threads.
    // Needed whatever the pull policy: a private image runs only for users its registry accepts.
    let credentials = engine::auth::read(&p.probe, &p.home);
    let outcome = engine::execute(&p.plan, &p.config.engine, &credentials)?;
    for message in &outcome.messages {
        logging::say(message);
    }
    Ok(outcome)
}

/// `jobdock exec --job ID -- CMD`: CMD in the caller's own running step container of job ID.
fn exec(
    config: Option<PathBuf>,
    env: &Env,
    job: &str,
    command: Vec<String>,
) -> Result<u8, AppError> {
    let caller = Caller::current();
    let config = load_config(config, env, caller)?;
    // Only an id Slurm or LSF could have given: it is a label value in a daemon query.
    if job.is_empty()
        || job.len() > 64
        || !job
            .bytes()
            .all(|b| b.is_ascii_digit() || b"[]._".contains(&b))
    {
        return Err(AppError::BadRequest(format!(
            "exec: --job {job:?}: not a job id (digits, as in 4567 or 212[3])"
        )));
    }
    let task = plan::TaskPlan {
        argv: command,
        // Empty: the container's own environment (the agent's).
        env: Default::default(),
        cwd: None,
        cpus: None,
    };
    let outcome = engine::exec(&config.engine, job, caller.real_uid, &task)?;
    for message in &outcome.messages {
        logging::say(message);
    }
    Ok(outcome.code)
}

/// `jobdock cleanup`: every container and file of one job (by default, the job it runs in).
fn cleanup(config: Option<PathBuf>, env: &Env, job: Option<String>) -> Result<u8, AppError> {
    let caller = Caller::current();
    let config = load_config(config, env, caller)?;
    let job = match job {
        Some(job) => job,
        None => job::from_env(env, None)?.job_id.ok_or_else(|| {
            AppError::BadRequest(
                "cleanup: give --job ID, or run it inside the job (LSB_JOBID or SLURM_JOB_ID)"
                    .into(),
            )
        })?,
    };
    let job = job.as_str();
    // An epilog's: several clusters' nodes may share one dockerd, each with job ids of its own.
    let cluster = env.get("SLURM_CLUSTER_NAME").map(String::as_str);
    let report = engine::cleanup(&config.engine, job, cluster, caller.real_uid)?;
    println!(
        "jobdock cleanup: job {job}: removed {} container(s) and {} file(s)",
        report.containers.len(),
        report.files.len()
    );
    Ok(0)
}

/// `jobdock esub`: LSF's submit-time check, run as the submitting user. Exit 0 accepts the job;
/// `LSB_SUB_ABORT_VALUE` rejects it, with the reason on stderr for the user.
fn esub(env: &Env, routing: &esub::Routing) -> u8 {
    let abort = env
        .get("LSB_SUB_ABORT_VALUE")
        .and_then(|v| v.parse::<u8>().ok())
        .unwrap_or(97);
    match esub_changes(env, routing) {
        Ok(()) => 0,
        Err(message) => {
            logging::say(&format!("job rejected: {message}"));
            abort
        }
    }
}

fn esub_changes(env: &Env, routing: &esub::Routing) -> Result<(), String> {
    use std::io::Write;
    let caller = Caller::current();
    let parm = match env.get("LSB_SUB_PARM_FILE") {
        Some(path) => esub::parse_parm_file(
            &std::fs::read_to_string(path).map_err(|e| format!("LSB_SUB_PARM_FILE {path}: {e}"))?,
        ),
        None => Env::new(),
    };
    let config =
        SiteConfig::load(Path::new(config::DEFAULT_PATH), false).map_err(|e| e.to_string())?;
    let ctx = job::JobContext::default();
    let id =
        identity::resolve(caller, None, &ctx, env, &identity::Nss).map_err(|e| e.to_string())?;
    let cwd = std::env::current_dir().ok();
    let Some(changes) = esub::decide(env, &parm, &config, &id, cwd, routing, &esub::SubmitProbe)
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    for (var, lines) in [
        ("LSB_SUB_MODIFY_ENVFILE", &changes.env),
        ("LSB_SUB_MODIFY_FILE", &changes.submission),
    ] {
        let path = env
            .get(var)
            .ok_or_else(|| format!("{var} is not set: is this running as LSF's esub?"))?;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| format!("{var} {path}: {e}"))?;
        for line in lines {
            writeln!(file, "{line}").map_err(|e| format!("{var} {path}: {e}"))?;
        }
    }
    Ok(())
}

/// The job file LSF runs, read as the job user: at most this much.
const MAX_JOB_FILE: u64 = 1 << 20;

/// Snapshot, config, job context, identity, plan: everything before the engine. With
/// `lsf_starter`, the command is the user's text from the LSF job file.
fn prepare(args: &JobArgs, env: Env, lsf_starter: bool) -> Result<Prepared, AppError> {
    let caller = Caller::current();
    let config = load_config(args.config.clone(), &env, caller)?;
    let online = online_cpus();
    let snap = Snapshot {
        cwd: std::env::current_dir().ok(),
        caller,
        pid: std::process::id(),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        host_cpus: online
            .as_ref()
            .map(|c| u32::try_from(c.count()).unwrap_or(u32::MAX))
            .unwrap_or(1),
        stdin_is_tty: nix::unistd::isatty(std::io::stdin()).unwrap_or(false),
        token: random_token().map_err(|e| AppError::Internal(format!("getrandom: {e}")))?,
        cgroup: None,
        cgroup_memory_limit: None,
        cpus_allowed: cpus_allowed(online.as_ref()),
        cgroup_cpus: None,
        rlimits: rlimits(),
        exe: own_binary(),
        env,
    };
    let snap = with_cgroup(snap, online.as_ref());
    let ctx = job::confirm(
        job::from_env(&snap.env, snap.cwd.clone())?,
        snap.cgroup.as_ref(),
        caller.is_root(),
    )?;
    let id = identity::resolve(
        caller,
        args.user.as_deref(),
        &ctx,
        &snap.env,
        &identity::Nss,
    )?;
    tracing::info!(uid = id.uid, gid = id.gid, user = %id.name, groups = id.groups.len(), "job user");
    let probe = AsUser {
        uid: id.uid,
        gid: id.gid,
        groups: id.groups.iter().map(|g| g.0).chain([id.gid]).collect(),
    };
    let script = if lsf_starter {
        let file = ctx
            .job_file
            .as_ref()
            .ok_or_else(|| AppError::Site("lsf-starter: LSB_JOBFILENAME is not set".into()))?;
        let text = probe
            .read_file(file, MAX_JOB_FILE)
            .map_err(|e| AppError::BadRequest(format!("LSB_JOBFILENAME: {e}")))?;
        let starter = snap
            .env
            .get("LSB_JOB_STARTER")
            .map(String::as_str)
            .unwrap_or("");
        Some(
            job::lsf::user_command(&text, starter)
                .map_err(|e| AppError::Site(format!("{}: {e}", file.display())))?,
        )
    } else if let Some(file) = &args.script {
        let text = probe
            .read_file(file, MAX_JOB_FILE)
            .map_err(|e| AppError::BadRequest(format!("--script {}: {e}", file.display())))?;
        Some(text)
    } else {
        None
    };
    // A --script runs through its own #! line, with the command words as its arguments.
    let command = match (&args.script, &script) {
        (Some(_), Some(text)) => {
            let mut argv = interpreter(text);
            argv.push(plan::SCRIPT_TARGET.to_string());
            argv.extend(args.command.iter().cloned());
            argv
        }
        _ => args.command.clone(),
    };
    let req = Request {
        image: args.image.clone(),
        command,
        script,
    };
    let plan = plan::build(&req, &snap, &config, &ctx, &id, &probe)?;
    for note in &plan.notes {
        tracing::warn!("{note}");
    }
    Ok(Prepared {
        config,
        plan,
        home: id.home.clone(),
        probe,
    })
}

/// A script's interpreter as the kernel reads its `#!` line: the program and at most one
/// argument (the rest of the line); `/bin/sh` without one.
fn interpreter(script: &str) -> Vec<String> {
    let line = script.lines().next().unwrap_or("");
    let Some(rest) = line.strip_prefix("#!").map(str::trim) else {
        return vec!["/bin/sh".into()];
    };
    match rest.split_once([' ', '\t']) {
        _ if rest.is_empty() => vec!["/bin/sh".into()],
        Some((program, arg)) => vec![program.into(), arg.trim().into()],
        None => vec![rest.into()],
    }
}

/// The site config: `--config` or `JOBDOCK_CONFIG` for a root caller, the default path otherwise.
fn load_config(flag: Option<PathBuf>, env: &Env, caller: Caller) -> Result<SiteConfig, AppError> {
    let chosen = flag.map(|p| (p, "--config")).or(env
        .get("JOBDOCK_CONFIG")
        .map(|p| (PathBuf::from(p), "JOBDOCK_CONFIG")));
    let config = match chosen {
        Some((path, _)) if caller.is_root() => SiteConfig::load(&path, true)?,
        Some((_, "--config")) => return Err(AppError::ConfigNotRoot),
        Some((path, var)) => {
            tracing::warn!(
                "{var}={}: ignored, only root may choose the site config",
                path.display()
            );
            SiteConfig::load(Path::new(config::DEFAULT_PATH), false)?
        }
        None => SiteConfig::load(Path::new(config::DEFAULT_PATH), false)?,
    };
    logging::configure(&config.logging);
    Ok(config)
}

fn print_plan(plan: &ContainerPlan, config: &SiteConfig, json: bool) {
    if json {
        let staged = engine::staging_paths(plan, &config.engine.state_dir);
        let value = serde_json::json!({
            "image": plan.image.to_string(),
            "pull": plan.pull,
            "name": plan.name,
            "labels": plan.labels,
            "passwd": plan.passwd,
            "group": plan.group,
            "staging": plan.staging,
            // Each mount by its host path: `create` names the checked ones by their staging
            // mounts, which exist only while the job starts.
            "mounts": plan.mounts.iter().enumerate().map(|(i, m)| serde_json::json!({
                "source": m.source,
                "target": m.target,
                "readonly": m.readonly,
                "why": m.why,
                "staged_at": staged.get(&i),
            })).collect::<Vec<_>>(),
            "notes": plan.notes,
            // Exactly what `run` sends: checked directories appear at their staging mounts.
            "create": crate::engine::body::create_json(&engine::as_staged(plan, &config.engine.state_dir)),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON values serialize")
        );
    } else {
        print!("{}", plan::render::docker_run_text(plan));
        for note in &plan.notes {
            println!("# note: {note}");
        }
    }
}

/// Variables glibc removes from a setuid program's environment before `main` (its secure mode)
/// that are harmless in the job's container, which runs as the user with no-new-privileges:
/// jobdock takes them back from its initial environment, for the job only. (Not `LD_*`,
/// `GLIBC_TUNABLES` or `MALLOC_*`, which never reach a container.)
const SECURE_MODE_REMOVES: &[&str] = &[
    "TMPDIR",
    "TZDIR",
    "LOCPATH",
    "NLSPATH",
    "GCONV_PATH",
    "GETCONF_DIR",
    "RES_OPTIONS",
    "RESOLV_HOST_CONF",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "NIS_PATH",
];

/// The process environment, UTF-8 entries only (others are not passed on and cannot configure
/// jobdock), with what glibc's secure mode removed from it taken back (`SECURE_MODE_REMOVES`).
fn env_snapshot() -> Env {
    let mut env: Env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    // The strings exec placed stay where they were; glibc only unlinks them from `environ`.
    if let Ok(initial) = std::fs::read("/proc/self/environ") {
        for entry in initial.split(|&b| b == 0) {
            let Some((name, value)) = std::str::from_utf8(entry)
                .ok()
                .and_then(|e| e.split_once('='))
            else {
                continue;
            };
            if SECURE_MODE_REMOVES.contains(&name) && !env.contains_key(name) {
                env.insert(name.to_string(), value.to_string());
            }
        }
    }
    env
}

/// The cgroup jobdock runs in, its memory limit and its CPU set (when fewer than `online`), from
/// /proc and /sys.
fn with_cgroup(mut snap: Snapshot, online: Option<&CpuList>) -> Snapshot {
    let root = Path::new("/sys/fs/cgroup");
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    snap.cgroup = JobCgroup::parse(&text);
    snap.cgroup_cpus = job::cgroup::cpuset_cpus(&text, root, |p| std::fs::read_to_string(p).ok())
        .filter(|c| Some(c) != online)
        .map(|c| c.to_string());
    snap.cgroup_memory_limit = snap
        .cgroup
        .as_ref()
        .and_then(|c| c.memory_limit(root, |p| std::fs::read_to_string(p).ok()));
    snap
}

/// jobdock's own soft and hard limits for each of `plan::ULIMITS` (the job's: the kernel keeps
/// them across the setuid exec, but caps a stack soft limit above 8 MiB to 8 MiB). Unlimited is
/// -1, as dockerd takes it.
fn rlimits() -> Vec<plan::Ulimit> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    let value = |v: u64| {
        if v == RLIM_INFINITY {
            -1
        } else {
            i64::try_from(v).unwrap_or(-1)
        }
    };
    [
        ("core", Resource::RLIMIT_CORE),
        ("memlock", Resource::RLIMIT_MEMLOCK),
        ("nofile", Resource::RLIMIT_NOFILE),
        ("nproc", Resource::RLIMIT_NPROC),
        ("stack", Resource::RLIMIT_STACK),
    ]
    .into_iter()
    .filter_map(|(name, resource)| {
        let (soft, hard) = getrlimit(resource).ok()?;
        Some(plan::Ulimit {
            name,
            soft: value(soft),
            hard: value(hard),
        })
    })
    .collect()
}

/// The CPUs the scheduler bound jobdock to, as a cpuset list, if fewer than the host has
/// (`online`).
fn cpus_allowed(online: Option<&CpuList>) -> Option<String> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let cpus = CpuList::new(
        (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
    )?;
    (Some(&cpus) != online).then(|| cpus.to_string())
}

/// The host's online CPUs.
fn online_cpus() -> Option<CpuList> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()?
        .parse()
        .ok()
}

/// 96 random bits from the kernel (getrandom(2): no /dev/urandom to open, or to be missing).
fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// jobdock's own binary and the shared objects this process has mapped, for a step container's
/// agent (see [`plan::OwnBinary`]); `None` if /proc does not say.
fn own_binary() -> Option<plan::OwnBinary> {
    let path = std::fs::read_link("/proc/self/exe").ok()?;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let mut libraries: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path; a replaced file's path ends in " (deleted)".
        let Some(file) = line.split_whitespace().nth(5).map(Path::new) else {
            continue;
        };
        let shared_object = file
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(".so"));
        if file.is_absolute()
            && shared_object
            && !line.ends_with(" (deleted)")
            && file != path
            && !libraries.iter().any(|l| l == file)
        {
            libraries.push(file.to_path_buf());
        }
    }
    Some(plan::OwnBinary { path, libraries })
}

#[cfg(test)]
mod tests {
    /// A Slurm batch script (`--script`) runs through its own `#!` line, as the kernel reads it.
    #[test]
    fn script_interpreters() {
        let cases: &[(&str, &[&str])] = &[
            ("#!/bin/bash\necho", &["/bin/bash"]),
            ("#! /bin/sh -e\n", &["/bin/sh", "-e"]),
            (
                "#!/usr/bin/env python3 -u x\n",
                &["/usr/bin/env", "python3 -u x"],
            ),
            ("#!\n", &["/bin/sh"]),
            ("echo no shebang\n", &["/bin/sh"]),
            ("", &["/bin/sh"]),
        ];
        for (script, want) in cases {
            assert_eq!(super::interpreter(script), *want, "{script:?}");
        }
    }
}
