//! The container's bind mounts: jobdock's own files, the user's home, the job's working
//! directory, LSF spool, PMIx directory and tmpdir, the site's mounts and the user's volumes, each
//! resolved as the user, then held to one layout rule (`paths::check_layout`): no mount makes the
//! engine create anything on the host. Also where the job starts (its working directory).

use std::path::{Path, PathBuf};

use crate::config::SiteConfig;
use crate::identity::Identity;
use crate::job::{Env, JobContext};
use crate::overrides::paths::{self, Strictness};
use crate::overrides::{self, Refusal, Setting};
use crate::probe::{HostProbe, Kind, ProbeError, Resolved};
use crate::units::ByteSize;

use super::{MountPlan, PlanError, SCRIPT_TARGET, Staging};

/// The mounts and the working directory they imply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mounts {
    /// In the order the engine should make them; checked by `paths::check_layout`.
    pub mounts: Vec<MountPlan>,
    /// Where the job starts: `LSB_DOCKER_WORKDIR`, else the job's working directory.
    pub working_dir: Option<PathBuf>,
    /// The job's tmpdir when it lies under `/tmp`: it is the container's `/tmp` only, and values
    /// naming it are rewritten to `/tmp` (see `environment`).
    pub tmp_inside_tmp: Option<PathBuf>,
    /// A job without a tmpdir of its own gets a tmpfs of this size (`limits.tmp_size`) as its
    /// `/tmp`, not the image's, which would fill the node's docker disk without bound.
    pub tmp_tmpfs: Option<ByteSize>,
}

/// Every mount of the job, resolved through `probe` (as the user). What is left out, and why,
/// goes to `notes`. `cmd` is the container's command: the LSF spool is mounted when it is the job
/// file.
#[allow(clippy::too_many_arguments)]
pub(super) fn mounts(
    config: &SiteConfig,
    ctx: &JobContext,
    who: &Identity,
    env: &Env,
    staging: &Staging,
    cmd: Option<&Vec<String>>,
    probe: &dyn HostProbe,
    notes: &mut Vec<String>,
) -> Result<Mounts, PlanError> {
    let get = |suffix: &str| overrides::setting(env, suffix);
    // Mounts: identity files, home, working directory, job spool, job tmpdir, site, user volumes.
    let mut mounts = vec![
        MountPlan {
            source: staging.passwd.clone(),
            target: "/etc/passwd".into(),
            readonly: true,
            why: "synthesized passwd: root, nobody and the job user".into(),
        },
        MountPlan {
            source: staging.group.clone(),
            target: "/etc/group".into(),
            readonly: true,
            why: "synthesized group: the user's groups by name".into(),
        },
    ];
    if let Some(script) = &staging.script {
        mounts.push(MountPlan {
            source: script.clone(),
            target: SCRIPT_TARGET.into(),
            readonly: true,
            why: "the user's command, exactly as submitted".into(),
        });
    }
    if let Some(fifos) = &staging.fifos {
        for (source, target, which) in [
            (&fifos.stdout, super::FIFO_STDOUT, "stdout"),
            (&fifos.stderr, super::FIFO_STDERR, "stderr"),
        ] {
            mounts.push(MountPlan {
                source: source.clone(),
                target: target.into(),
                readonly: false,
                why: format!("the job's {which}: a FIFO jobdock reads (engine.output)"),
            });
        }
    }
    let jobdock_mounts = mounts.len();
    // The job's tmpdir is its /tmp. At its own path too, unless that path is under /tmp: the
    // engine would create that mount point inside the tmpdir itself, as root; there /tmp shows it.
    let tmp = match &ctx.tmpdir {
        Some(tmp) => match job_tmpdir(probe, tmp, who.uid) {
            Ok(real) => Some((paths::normalize(tmp), real)),
            // Nothing where the scheduler's convention would put one: the site has none.
            Err(reason) if ctx.tmpdir_by_convention && reason.is_not_found() => {
                tracing::debug!("no job tmpdir at {}: {reason}", tmp.display());
                None
            }
            Err(reason) => {
                notes.push(format!(
                    "job tmpdir {} not mounted: {reason}",
                    tmp.display()
                ));
                None
            }
        },
        // No tmpdir of the job's own: a /tmp that belongs to the job's user (the node's is
        // everyone's) is the job's private one (Slurm's job_container/tmpfs gives each job one in
        // the job's mount namespace, pam_namespace each user), and is the container's /tmp.
        None => private_tmp(probe, who.uid).map(|real| (PathBuf::from("/tmp"), real)),
    };
    let tmp_inside_tmp = tmp
        .as_ref()
        .filter(|(path, _)| paths::is_under(path, Path::new("/tmp")))
        .map(|(path, _)| path.clone());
    // LSB_DOCKER_MOUNT_HOME (srun --[no-]container-mount-home) narrows the site's choice, never
    // widens it: a site that mounts no homes mounts none.
    let home = match get("MOUNT_HOME")? {
        Some(s) => match (overrides::parse_bool(&s)?, config.mounts.home) {
            (true, false) => {
                return Err(s
                    .refuse("this site mounts no home directories (mounts.home = false)")
                    .into());
            }
            (wanted, _) => wanted,
        },
        None => config.mounts.home,
    };
    if home {
        match user_dir(probe, &who.home) {
            Ok(real) => mounts.push(MountPlan {
                source: real,
                target: who.home.clone(),
                readonly: false,
                why: "the user's home directory".into(),
            }),
            Err(reason) => notes.push(format!(
                "home directory {} not mounted: {reason}",
                who.home.display()
            )),
        }
    }
    // Where the working directory is in a tmpdir shown only as /tmp: its path below the tmpdir.
    let in_tmp = |dir: &Path| {
        tmp_inside_tmp.as_ref().and_then(|t| {
            paths::normalize(dir)
                .strip_prefix(t)
                .ok()
                .map(Path::to_path_buf)
        })
    };
    let work_dir = match ctx.work_dir.as_ref().map(|dir| (dir, in_tmp(dir))) {
        // In a tmpdir shown only as /tmp: the same directory, there.
        Some((dir, Some(rest))) => {
            user_dir(probe, dir).map_err(|reason| PlanError::Path {
                what: "working directory",
                path: dir.display().to_string(),
                reason,
            })?;
            Some(paths::normalize(&Path::new("/tmp").join(rest)))
        }
        Some((dir, None)) => {
            let real = user_dir(probe, dir).map_err(|reason| PlanError::Path {
                what: "working directory",
                path: dir.display().to_string(),
                reason,
            })?;
            add_unless_covered(
                &mut mounts,
                real,
                paths::normalize(dir),
                false,
                "the job's working directory",
            );
            Some(paths::normalize(dir))
        }
        None => None,
    };
    if let (Some(script), Some(cmd)) = (&ctx.job_file, cmd)
        && cmd.first().map(String::as_str) == Some(&script.display().to_string())
        && let Some(spool) = script.parent()
    {
        let real = user_dir(probe, spool).map_err(|reason| PlanError::Path {
            what: "LSF job spool directory",
            path: spool.display().to_string(),
            reason,
        })?;
        add_unless_covered(
            &mut mounts,
            real,
            spool.to_path_buf(),
            true,
            "the LSF job file's directory",
        );
    }
    // PMIx (Slurm's MPI plugin) talks to its server through a directory of the step.
    if let Some(pmix) = env.get("PMIX_SERVER_TMPDIR").filter(|p| p.starts_with('/')) {
        let in_tmp =
            tmp.is_some() && paths::is_under(&paths::normalize(Path::new(pmix)), Path::new("/tmp"));
        match user_dir(probe, Path::new(pmix)) {
            // Inside the tmpdir's /tmp the engine would create its mount point in the tmpdir.
            Ok(_) if in_tmp => notes.push(format!(
                "PMIX_SERVER_TMPDIR {pmix} not mounted: it is under /tmp, which is the job's tmpdir"
            )),
            Ok(real) => add_unless_covered(
                &mut mounts,
                real,
                paths::normalize(Path::new(pmix)),
                false,
                "the step's PMIx server directory",
            ),
            Err(reason) => notes.push(format!("PMIX_SERVER_TMPDIR {pmix} not mounted: {reason}")),
        }
    }
    // ... and its clients keep their session files (OpenMPI's session directory: without it
    // MPI_Init fails in orte/util/session_dir.c) in the directory it made for the step's tasks.
    if let Some(dir) = pmix_client_dir(env, who.uid, probe) {
        let in_tmp = tmp.is_some() && paths::is_under(&dir, Path::new("/tmp"));
        match job_tmpdir(probe, &dir, who.uid) {
            Ok(_) if in_tmp => notes.push(format!(
                "the step's PMIx client directory {} not mounted: it is under /tmp, which is the job's tmpdir",
                dir.display()
            )),
            Ok(real) => add_unless_covered(
                &mut mounts,
                real,
                dir,
                false,
                "the step's PMIx client directory (PMIX_NSDIR)",
            ),
            Err(reason) => notes.push(format!(
                "the step's PMIx client directory {} not mounted: {reason}",
                dir.display()
            )),
        }
    }
    if let Some((path, real)) = &tmp {
        mounts.push(MountPlan {
            source: real.clone(),
            target: "/tmp".into(),
            readonly: false,
            why: "the job's private tmpdir as /tmp".into(),
        });
        if tmp_inside_tmp.is_none() {
            mounts.push(MountPlan {
                source: real.clone(),
                target: path.clone(),
                readonly: false,
                why: "the job's tmpdir at its own path".into(),
            });
        }
    }
    let job_mounts = mounts.len();
    for m in &config.mounts.site {
        let target = m.target.clone().unwrap_or_else(|| m.source.clone());
        mounts.push(MountPlan {
            source: m.source.clone(),
            target,
            readonly: m.readonly,
            why: "site mount (wrapper.toml)".into(),
        });
    }
    let mut targets = std::collections::BTreeSet::new();
    for m in &mounts {
        if !targets.insert(m.target.clone()) {
            return Err(PlanError::Path {
                what: "mount target",
                path: m.target.display().to_string(),
                reason: format!("mounted twice ({}); check mounts.site", m.why),
            });
        }
    }
    let site_mounts = mounts.len();
    let volumes = get("VOLUMES")?;
    if let Some(s) = &volumes {
        for v in overrides::parse_volumes(s)? {
            let m = volume(s, &v, config, probe)?;
            if !targets.insert(m.target.clone()) {
                return Err(s
                    .refuse(format!(
                        "{} is already mounted; choose another destination",
                        m.target.display()
                    ))
                    .into());
            }
            mounts.push(m);
        }
    }

    let mounts = checked_layout(
        mounts,
        [jobdock_mounts, job_mounts, site_mounts],
        volumes.as_ref(),
    )?;

    let working_dir = match get("WORKDIR")? {
        Some(s) => Some(workdir(&s)?),
        None => work_dir,
    };

    let tmp_tmpfs =
        (!mounts.iter().any(|m| m.target == Path::new("/tmp"))).then_some(config.limits.tmp_size);
    Ok(Mounts {
        mounts,
        working_dir,
        tmp_inside_tmp,
        tmp_tmpfs,
    })
}

/// Resolves a directory the job names, as the user, refusing sensitive host paths.
fn user_dir(probe: &dyn HostProbe, dir: &Path) -> Result<PathBuf, String> {
    resolve_user_dir(probe, dir)
        .map(|real| real.path)
        .map_err(String::from)
}

/// `user_dir`'s check, with what the probe found (the owner, for `job_tmpdir`) and why not.
fn resolve_user_dir(probe: &dyn HostProbe, dir: &Path) -> Result<Resolved, ProbeError> {
    paths::check_host_path(dir, Strictness::UserPath)?;
    let real = probe.resolve(dir)?;
    if real.kind != Kind::Dir {
        return Err(ProbeError::other("not a directory"));
    }
    paths::check_host_path(&real.path, Strictness::UserPath)
        .map_err(|e| ProbeError::other(format!("resolves to {}: {e}", real.path.display())))?;
    Ok(real)
}

/// The job's tmpdir: a directory the user reaches, as `user_dir`, and owns (a directory named
/// like a job's, made by someone else before the job, would otherwise become the job's /tmp).
fn job_tmpdir(probe: &dyn HostProbe, dir: &Path, uid: u32) -> Result<PathBuf, ProbeError> {
    let real = resolve_user_dir(probe, dir)?;
    match real.owner {
        Some(owner) if owner != uid => Err(ProbeError::other(format!(
            "owned by uid {owner}, not by the job's user (uid {uid})"
        ))),
        _ => Ok(real.path),
    }
}

/// `/tmp` as the user sees it, if it is a directory of their own (not a symlink to one).
fn private_tmp(probe: &dyn HostProbe, uid: u32) -> Option<PathBuf> {
    let real = probe.resolve(Path::new("/tmp")).ok()?;
    (real.kind == Kind::Dir && real.path == Path::new("/tmp") && real.owner == Some(uid))
        .then_some(real.path)
}

/// Adds an identity-style mount unless an earlier mount already shows the same directory there.
/// Where Slurm's PMIx plugin (mpi/pmix) made the step's client directory, which it names to the
/// clients as PMIX_NSDIR: `<base>/spmix_appdir_<uid>_<job>.<step>` for `PMIX_NAMESPACE`
/// `slurm.pmix.<job>.<step>`, where `<base>` is `SLURM_PMIX_TMPDIR`, else `PMIxCliTmpDirBase` in
/// the mpi.conf beside `SLURM_CONF`, else that slurm.conf's `TmpFS` (`%n`: `SLURMD_NODENAME`),
/// else `/tmp`. The files are read as the user; the directory must be the user's (`job_tmpdir`),
/// so a base the user names can only show them their own directory.
fn pmix_client_dir(env: &Env, uid: u32, probe: &dyn HostProbe) -> Option<PathBuf> {
    let (job, step) = env
        .get("PMIX_NAMESPACE")?
        .strip_prefix("slurm.pmix.")?
        .split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(job) || !digits(step) {
        return None;
    }
    let conf_value = |file: &Path, key: &str| -> Option<String> {
        let text = probe.read_file(file, 1 << 20).ok()?;
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim().to_string())
    };
    let slurm_conf = env
        .get("SLURM_CONF")
        .filter(|c| c.starts_with('/'))
        .map(PathBuf::from);
    let base = env
        .get("SLURM_PMIX_TMPDIR")
        .cloned()
        .or_else(|| {
            let conf = slurm_conf.as_ref()?;
            conf_value(&conf.with_file_name("mpi.conf"), "PMIxCliTmpDirBase")
        })
        .or_else(|| {
            let tmp_fs = conf_value(slurm_conf.as_ref()?, "TmpFS")?;
            let node = env.get("SLURMD_NODENAME").map_or("", String::as_str);
            Some(tmp_fs.replace("%n", node))
        })
        .unwrap_or_else(|| "/tmp".to_string());
    let base = paths::normalize(Path::new(&base));
    base.is_absolute()
        .then(|| base.join(format!("spmix_appdir_{uid}_{job}.{step}")))
}

fn add_unless_covered(
    mounts: &mut Vec<MountPlan>,
    source: PathBuf,
    target: PathBuf,
    readonly: bool,
    why: &str,
) {
    let covered = mounts.iter().any(|m| {
        m.source == m.target
            && source == target
            && paths::is_under(&source, &m.source)
            && (!m.readonly || readonly)
    });
    if !covered {
        mounts.push(MountPlan {
            source,
            target,
            readonly,
            why: why.into(),
        });
    }
}

/// The final mount list: identity mounts another identity mount already shows dropped, then
/// held to `paths::check_layout`. `ends` are where jobdock's, the job's and the site's mounts end
/// (the user's volumes follow); a refused volume is reported against `volumes`.
fn checked_layout(
    mounts: Vec<MountPlan>,
    ends: [usize; 3],
    volumes: Option<&Setting>,
) -> Result<Vec<MountPlan>, PlanError> {
    use paths::MountKind;
    let kind = |i: usize| match i {
        i if i < ends[0] => MountKind::Jobdock,
        i if i < ends[1] => MountKind::Job,
        i if i < ends[2] => MountKind::Site,
        _ => MountKind::Volume,
    };
    let identity = |m: &MountPlan| m.source == m.target;
    let covered = |i: usize, b: &MountPlan| {
        matches!(kind(i), MountKind::Job | MountKind::Volume)
            && identity(b)
            && mounts.iter().enumerate().any(|(j, a)| {
                j != i
                    && identity(a)
                    && a.target != b.target
                    && paths::is_under(&b.target, &a.target)
                    && (!a.readonly || b.readonly)
            })
    };
    let (mounts, kinds): (Vec<MountPlan>, Vec<MountKind>) = mounts
        .iter()
        .enumerate()
        .filter(|(i, m)| !covered(*i, m))
        .map(|(i, m)| (m.clone(), kind(i)))
        .unzip();
    let placed: Vec<paths::Placed<'_>> = mounts
        .iter()
        .zip(&kinds)
        .map(|(m, &kind)| paths::Placed {
            source: &m.source,
            target: &m.target,
            kind,
        })
        .collect();
    if let Err(e) = paths::check_layout(&placed) {
        let m = &mounts[e.index];
        return Err(match (kinds[e.index], volumes) {
            (MountKind::Volume, Some(s)) => s.refuse(e.reason).into(),
            _ => PlanError::Path {
                what: "mount target",
                path: m.target.display().to_string(),
                reason: format!("{}: {}", m.why, e.reason),
            },
        });
    }
    Ok(mounts)
}

fn volume(
    s: &Setting,
    v: &overrides::VolumeRequest,
    config: &SiteConfig,
    probe: &dyn HostProbe,
) -> Result<MountPlan, PlanError> {
    let shown = v.source.display();
    if config.mounts.allowed_roots.is_empty() {
        return Err(s
            .refuse("this site allows no user volumes (mounts.allowed_roots is empty)")
            .into());
    }
    let target = paths::check_container_target(&v.target).map_err(|e| s.refuse(e))?;
    paths::check_host_path(&v.source, Strictness::UserPath).map_err(|e| s.refuse(e))?;
    let real = probe.resolve(&v.source).map_err(|e| s.refuse(e))?;
    if real.kind != Kind::Dir {
        return Err(s
            .refuse(format!(
                "{shown} is not a directory (only directories may be mounted)"
            ))
            .into());
    }
    // A root may itself be a symlink (/scratch -> /lustre/scratch): accept its real path too.
    let under_root = config.mounts.allowed_roots.iter().any(|root| {
        paths::is_under(&real.path, root)
            || probe
                .resolve(root)
                .is_ok_and(|r| paths::is_under(&real.path, &r.path))
    });
    if !under_root {
        let roots: Vec<String> = config
            .mounts
            .allowed_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        return Err(s
            .refuse(format!(
                "{shown} resolves to {}, outside the allowed roots ({})",
                real.path.display(),
                roots.join(", ")
            ))
            .into());
    }
    paths::check_host_path(&real.path, Strictness::UserPath).map_err(|e| s.refuse(e))?;
    Ok(MountPlan {
        source: real.path,
        target,
        readonly: v.readonly,
        why: format!("user volume ({})", s.var),
    })
}

fn workdir(s: &Setting) -> Result<PathBuf, Refusal> {
    let p = Path::new(s.value.trim());
    let clean = paths::check_container_target(p).or_else(|e| {
        if p == Path::new("/") {
            Ok(p.to_path_buf())
        } else {
            Err(e)
        }
    });
    match clean {
        Ok(p) if !p.starts_with("/proc") && !p.starts_with("/sys") => Ok(p),
        Ok(p) => Err(s.refuse(format!("{} is under /proc or /sys", p.display()))),
        Err(e) => Err(s.refuse(e)),
    }
}
