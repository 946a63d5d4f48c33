//! The only place where the process (its environment, ids, files, terminal) meets the planner and
//! the engine. Reads a snapshot once, plans, then prints or runs; maps every failure to one exit
//! code from `exit`.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::cli::{Cli, Command, JobArgs};
use crate::config::{self, ConfigError, SiteConfig};
use crate::engine::{self, Blame, EngineError};
use crate::exit;
use crate::identity::{self, Caller, IdentityError};
use crate::job::{self, Env, JobError};
use crate::plan::{self, ContainerPlan, PlanError, Request, Snapshot};
use crate::probe::AsUser;

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
    Internal(String),
}

impl AppError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) => exit::CONFIG,
            // NSS not answering is the node's fault, not the job's.
            AppError::Identity(IdentityError::Lookup { .. }) => exit::INFRASTRUCTURE,
            AppError::ConfigNotRoot
            | AppError::Job(_)
            | AppError::Identity(_)
            | AppError::Plan(_) => exit::REFUSED,
            AppError::Engine(e) => match e.blame() {
                Blame::Infrastructure => exit::INFRASTRUCTURE,
                Blame::Refused => exit::REFUSED,
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
    let env = env_snapshot();
    let level = cli
        .log_level
        .as_deref()
        .and_then(crate::policy::parse_level_name)
        .or_else(|| {
            let s = crate::policy::setting(&env, "RUN_LOGLEVEL")
                .ok()
                .flatten()?;
            crate::policy::parse_log_level(&s).ok()
        })
        .unwrap_or(tracing::Level::WARN);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(nix::unistd::isatty(std::io::stderr()).unwrap_or(false))
        .init();
    if let Some(l) = cli
        .log_level
        .as_deref()
        .filter(|l| crate::policy::parse_level_name(l).is_none())
    {
        eprintln!("jobdock: --log-level {l:?}: must be error, warn, info, debug or trace");
        return exit::REFUSED;
    }

    let result = match cli.command {
        Command::CheckConfig { path } => return check_config(path.as_deref()),
        Command::Plan { job, json } => prepare(&job, env).map(|p| {
            print_plan(&p.plan, json);
            0
        }),
        Command::Run(job) => prepare(&job, env).and_then(run),
        Command::Cleanup { config, job } => cleanup(config, &env, &job),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jobdock: {e}");
            e.exit_code()
        }
    }
}

fn check_config(path: Option<&Path>) -> u8 {
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
    // A draft may live anywhere; installed, it must be root's alone.
    if let Err(reason) = config::trust::check_root_owned(path) {
        println!(
            "{}: warning: jobdock would refuse to use this file: {reason}",
            path.display()
        );
    }
    code
}

/// A plan with what running it needs besides: the site config and the job user's probe.
struct Prepared {
    config: SiteConfig,
    plan: ContainerPlan,
    probe: AsUser,
    home: PathBuf,
}

/// Runs a prepared job; its exit code is jobdock's.
fn run(p: Prepared) -> Result<u8, AppError> {
    tracing::debug!("plan:\n{}", plan::render::docker_run_text(&p.plan));
    // Read as the job user, here: the probe forks, which must happen before the engine's threads.
    let auth = (p.plan.pull != config::PullPolicy::Never)
        .then(|| engine::auth::read(&p.probe, &p.home, &p.plan.image))
        .flatten();
    let outcome = engine::execute(&p.plan, &p.config.engine, auth)?;
    for message in &outcome.messages {
        eprintln!("jobdock: {message}");
    }
    Ok(outcome.code)
}

/// `jobdock cleanup`: every container and file of one job.
fn cleanup(config: Option<PathBuf>, env: &Env, job: &str) -> Result<u8, AppError> {
    let caller = Caller {
        real_uid: nix::unistd::getuid().as_raw(),
        real_gid: nix::unistd::getgid().as_raw(),
    };
    let config = load_config(config, env, caller)?;
    let report = engine::cleanup(&config.engine, job, caller.real_uid)?;
    println!(
        "jobdock cleanup: job {job}: removed {} container(s) and {} file(s)",
        report.containers.len(),
        report.files.len()
    );
    Ok(0)
}

/// Snapshot, config, job context, identity, plan: everything before the engine.
fn prepare(args: &JobArgs, env: Env) -> Result<Prepared, AppError> {
    let caller = Caller {
        real_uid: nix::unistd::getuid().as_raw(),
        real_gid: nix::unistd::getgid().as_raw(),
    };
    let config = load_config(args.config.clone(), &env, caller)?;
    let snap = Snapshot {
        cwd: std::env::current_dir().ok(),
        caller,
        pid: std::process::id(),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        host_cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        stdin_is_tty: nix::unistd::isatty(std::io::stdin()).unwrap_or(false),
        token: random_token()
            .map_err(|e| AppError::Internal(format!("reading /dev/urandom: {e}")))?,
        env,
    };
    let ctx = job::from_env(&snap.env, snap.cwd.clone())?;
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
    let req = Request {
        image: args.image.clone(),
        command: args.command.clone(),
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

/// The site config: `--config` or `JOBDOCK_CONFIG` for a root caller, the default path otherwise.
fn load_config(flag: Option<PathBuf>, env: &Env, caller: Caller) -> Result<SiteConfig, AppError> {
    let chosen = flag.map(|p| (p, "--config")).or(env
        .get("JOBDOCK_CONFIG")
        .map(|p| (PathBuf::from(p), "JOBDOCK_CONFIG")));
    match chosen {
        Some((path, _)) if caller.is_root() => Ok(SiteConfig::load(&path, true)?),
        Some((_, "--config")) => Err(AppError::ConfigNotRoot),
        Some((path, var)) => {
            tracing::warn!(
                "{var}={}: ignored, only root may choose the site config",
                path.display()
            );
            Ok(SiteConfig::load(Path::new(config::DEFAULT_PATH), false)?)
        }
        None => Ok(SiteConfig::load(Path::new(config::DEFAULT_PATH), false)?),
    }
}

fn print_plan(plan: &ContainerPlan, json: bool) {
    if json {
        let value = serde_json::json!({
            "image": plan.image.to_string(),
            "pull": plan.pull,
            "name": plan.name,
            "labels": plan.labels,
            "passwd": plan.passwd,
            "group": plan.group,
            "staging": plan.staging,
            "notes": plan.notes,
            "create": crate::engine::body::create_json(plan),
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

/// The process environment, UTF-8 entries only (others are not passed on and cannot configure
/// jobdock).
fn env_snapshot() -> Env {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 12];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
