//! The command line (clap derive). Every flag is documented here; nothing is decided here.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// `0.1.0 (v0.1.0-123-gabcdef012345)`: the release and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("JOBDOCK_COMMIT"), ")");

/// The command line jobdock parses, documents (`--help`, `jobdock man`) and completes: the derive
/// below, with the variables users may set after the help of `jobdock`, `run` and `plan`.
pub fn command() -> clap::Command {
    let variables = crate::overrides::help_text();
    Cli::command()
        .after_long_help(variables.clone())
        .mut_subcommand("run", |c| c.after_long_help(variables.clone()))
        .mut_subcommand("plan", |c| c.after_long_help(variables))
}

/// Run HPC batch jobs in hardened Docker containers, as the job's own user.
///
/// jobdock is called by the scheduler's hooks (LSF esub and job starter, Slurm job steps and
/// epilog) or by users inside their jobs. Users adjust the container only through documented
/// LSB_DOCKER_* variables, each checked against the site policy in /etc/jobdock/wrapper.toml.
#[derive(Debug, Parser)]
#[command(name = "jobdock", version = VERSION, propagate_version = true)]
pub struct Cli {
    /// Log verbosity: error, warn, info, debug or trace (also CRITICAL/WARNING as in
    /// LSB_DOCKER_RUN_LOGLEVEL). Default: warn.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the job in a container and exit with its exit code.
    Run(JobArgs),
    /// Show what `run` would do, touching nothing: no file written, no daemon contacted.
    Plan {
        #[command(flatten)]
        job: JobArgs,
        /// Print one JSON object (with `create`, the exact Engine API create body) instead of the
        /// equivalent `docker run` command.
        #[arg(long)]
        json: bool,
    },
    /// Remove every container of a job, in any state, and its files (for epilogs). Safe to run
    /// twice and when there is nothing to remove. Root may clean any job; others only their own.
    Cleanup {
        /// Site config to use instead of /etc/jobdock/wrapper.toml (root only; also
        /// JOBDOCK_CONFIG).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The job id, as in the container label jobdock.job: `212`, `212[3]` (LSF array
        /// element), `4567` (Slurm), or `pid-N` for a run outside a job. Default: the job this
        /// runs in (LSB_JOBID and LSB_JOBINDEX, or SLURM_JOB_ID), as in an LSF POST_EXEC.
        #[arg(long, value_name = "ID")]
        job: Option<String>,
    },
    /// LSF JOB_STARTER: run the job's exact command (read from its job file) in a container.
    /// Configure it as `JOB_STARTER = exec /usr/bin/jobdock lsf-starter;` with the installed
    /// path (the Debian package's /usr/bin, contrib/install.sh's /usr/local/bin; see
    /// contrib/lsf): `exec` keeps the shell from running any of the command itself.
    LsfStarter {
        /// Site config to use instead of /etc/jobdock/wrapper.toml (root only).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Words after the starter: LSF puts the command here when JOB_STARTER lacks the
        /// trailing `;`. They are refused (the site's error, 78): the shell has split them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        words: Vec<String>,
    },
    /// LSF esub: map `bsub -a 'docker(IMAGE)'` to LSB_CONTAINER_IMAGE and the application
    /// profile, and reject jobs whose LSB_DOCKER_* settings the site policy refuses.
    Esub {
        /// The application profile docker jobs go to (lsb.applications), on LSF 10, which runs
        /// esub.docker with LSB_SUB_ADDITIONAL in the environment.
        #[arg(long, value_name = "NAME", default_value = "docker")]
        application: String,
        /// The queue docker jobs go to on schedulers without application profiles (OpenLava and
        /// other single-esub LSF-family schedulers): its JOB_STARTER is jobdock (contrib/lsf).
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
    },
    /// Check this node, as root: the site config, the installed binary, dockerd (reachable, its
    /// cgroup driver, runtime versions with known holes, its mount namespace and memlock limit),
    /// the allowed roots and device globs. One line per check; exits 78 if any check fails.
    Doctor {
        /// Site config to use instead of /etc/jobdock/wrapper.toml.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Serve the Docker authorization plugin (as root, before dockerd starts: contrib/systemd):
    /// dockerd then asks it about every API call and refuses whatever is not one of jobdock's
    /// own requests or read-only inspection, whoever sends it (SECURITY.md). Denials are logged.
    /// SIGHUP reloads the site config.
    Authz {
        /// Site config to use instead of /etc/jobdock/wrapper.toml (its [authz] table and the
        /// policy jobdock plans with).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The unix socket to serve; dockerd finds a plugin named NAME at
        /// /run/docker/plugins/NAME.sock (`--authorization-plugin=NAME`).
        #[arg(long, value_name = "SOCKET", default_value = crate::authz::DEFAULT_SOCKET)]
        listen: PathBuf,
    },
    /// Run a command in your own running job's step container on this node (the container
    /// that `srun` tasks share), with your stdin, stdout and stderr; exits with its status.
    /// Another user's job is refused (64).
    Exec {
        /// The job id, as `squeue` shows it.
        #[arg(long, value_name = "ID")]
        job: String,
        /// Site config to use instead of /etc/jobdock/wrapper.toml (root only).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The command, after `--`. It gets the container's environment and working directory.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// The step container's agent (its command; not for users): runs the step's tasks that
    /// jobdock hands it on SOCKET, and ends when TASKS have come and gone (0: runs until the
    /// container is removed, for a job's named container).
    #[command(hide = true)]
    Agent {
        #[arg(long, value_name = "N")]
        tasks: u32,
        #[arg(long, value_name = "SOCKET")]
        socket: PathBuf,
        /// Runs the image's sshd on PORT first (the job's virtual cluster).
        #[arg(long, value_name = "PORT")]
        sshd: Option<u16>,
    },
    /// Validate a site config, reporting every problem with its key (syntax errors with line and
    /// column). Exits 78 if jobdock would refuse the file: invalid, or writable by anyone but
    /// root where it is.
    CheckConfig {
        /// Validate a draft only: do not ask who could write it where it is.
        #[arg(long)]
        draft: bool,
        /// The config to check (default: /etc/jobdock/wrapper.toml).
        path: Option<PathBuf>,
    },
    /// List the node's images, as root: size, when a job last ran each, whether a container uses it.
    Images {
        /// Site config to use instead of /etc/jobdock/wrapper.toml.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Remove the images the site's [images] policy names, as root (from an epilog or a timer):
    /// those no job has run for images.prune_after_days, then the least recently run while the
    /// node's images take more than images.prune_budget. Never one a container uses, nor one no
    /// job of jobdock's ran.
    Prune {
        /// Site config to use instead of /etc/jobdock/wrapper.toml.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Say what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the completion script for SHELL (bash, zsh, fish, elvish, powershell) on stdout,
    /// e.g. `jobdock completions bash > /usr/share/bash-completion/completions/jobdock`.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, e.g. `jobdock man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// Site config to use instead of /etc/jobdock/wrapper.toml (root only; also JOBDOCK_CONFIG).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The image to run. Default: LSB_CONTAINER_IMAGE (set by `bsub -a 'docker(IMAGE)'`), then
    /// JOBDOCK_IMAGE.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// The job user, by name or uid (root only). Default for root: SLURM_JOB_UID, then SUDO_UID.
    /// A non-root caller is always itself.
    #[arg(long, value_name = "NAME|UID")]
    pub user: Option<String>,

    /// Run FILE instead of a command: read as the job user (at most 1 MiB), copied into the
    /// container and run through its `#!` line (default /bin/sh), with COMMAND as its arguments.
    /// For Slurm batch scripts (the SPANK plugin's `#SBATCH --container-image`).
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,

    /// The command to run in the container. Without one, an LSF job runs its job file
    /// (LSB_JOBFILENAME) through /bin/sh.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        command().debug_assert();
    }

    /// Issue 18.4: `--help` lists every variable a user may set, and the version names a commit.
    #[test]
    fn long_help_lists_every_variable() {
        for name in [vec![], vec!["run"], vec!["plan"]] {
            let mut c = command();
            let mut c = name
                .iter()
                .fold(&mut c, |c, n| c.find_subcommand_mut(n).unwrap())
                .clone();
            let help = c.render_long_help().to_string();
            for var in crate::overrides::override_names() {
                assert!(
                    help.contains(&format!("LSB_DOCKER_{var} ")),
                    "{name:?}: no {var}"
                );
            }
        }
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")) && VERSION.ends_with(')'));
    }

    #[test]
    fn command_after_double_dash_keeps_its_flags() {
        let cli = Cli::parse_from([
            "jobdock", "run", "--image", "alpine", "--", "ls", "--user", "-l",
        ]);
        let Command::Run(job) = cli.command else {
            panic!()
        };
        assert_eq!(job.command, ["ls", "--user", "-l"]);
        assert_eq!(job.user, None);
    }
}
