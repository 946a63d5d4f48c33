//! The `Daemon` seam implemented with bollard: the only file that makes Engine API calls. Connects
//! to the configured socket with a bounded wait, negotiates the API version down to the daemon's,
//! and turns bollard's errors into `DaemonError` kinds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::HostConfig;
use bollard::query_parameters::{
    AttachContainerOptions, ContainerArchiveInfoOptions, CreateContainerOptions,
    CreateImageOptions, DownloadFromContainerOptions, EventsOptions, KillContainerOptions,
    ListContainersOptions, ListImagesOptions, RemoveContainerOptions, RemoveImageOptions,
    ResizeContainerTTYOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::engine::EngineError;
use crate::engine::auth::RegistryAuth;
use crate::engine::body;
use crate::engine::daemon::{
    Attached, Chunk, ContainerFile, ContainerState, Daemon, DaemonError, DeviceSeen, Effective,
    ErrorKind, Found, LocalImage, MountSeen, PathKind, Progress,
};
use crate::image::ImageRef;
use crate::plan::ContainerPlan;

/// The oldest Engine API jobdock talks to: every field of the create body (Init, Mounts,
/// DeviceRequests, ...) is understood from 1.41 (Docker 20.10) on. An older daemon would silently
/// ignore hardening it does not know.
pub(super) const MIN_API: (usize, usize) = (1, 41);

/// Bounds every request until the daemon's response headers arrive (streams run unbounded).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The first pause between connection attempts; doubled up to 5 s.
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// Bounds one connection attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Docker {
    api: bollard::Docker,
}

/// Connects to dockerd at `socket`, retrying with backoff for up to `wait` (a daemon being
/// restarted comes back within seconds), and negotiates the API version.
pub(super) async fn connect(socket: &Path, wait: Duration) -> Result<Docker, EngineError> {
    let started = Instant::now();
    let unreachable = |reason: String| EngineError::Unreachable {
        socket: socket.to_path_buf(),
        waited: started.elapsed().as_secs(),
        reason,
    };
    let path = socket
        .to_str()
        .ok_or_else(|| unreachable("the path is not UTF-8".into()))?;
    // Waiting does not give jobdock the right to use the socket: a copy without its setuid bit
    // is told so at once.
    if let Err(e) = tokio::net::UnixStream::connect(path).await
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        return Err(EngineError::SocketDenied {
            socket: socket.to_path_buf(),
            reason: e.to_string(),
        });
    }
    let mut delay = FIRST_DELAY;
    loop {
        let attempt = async {
            // No request yet: bollard only checks that the socket exists.
            let api = bollard::Docker::connect_with_unix(
                path,
                REQUEST_TIMEOUT.as_secs(),
                bollard::API_DEFAULT_VERSION,
            )?;
            match daemon_api_version(path).await? {
                Some(version) => {
                    bollard::Docker::connect_with_unix(path, REQUEST_TIMEOUT.as_secs(), &version)
                }
                None => api.negotiate_version().await,
            }
        };
        let limit = ATTEMPT_TIMEOUT
            .min(wait.saturating_sub(started.elapsed()))
            .max(Duration::from_millis(100));
        let reason = match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(api)) => return checked(api, socket),
            // Waiting does not give jobdock the right to use the socket.
            Ok(Err(e)) if denied(&e) => {
                return Err(EngineError::SocketDenied {
                    socket: socket.to_path_buf(),
                    reason: describe(&e),
                });
            }
            Ok(Err(e)) => describe(&e),
            Err(_) => format!("no answer within {:.1}s", limit.as_secs_f64()),
        };
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(unreachable(reason));
        }
        if delay == FIRST_DELAY {
            tracing::warn!(
                "dockerd at {} does not answer ({reason}); retrying for up to {}s",
                socket.display(),
                wait.as_secs()
            );
        }
        tokio::time::sleep(delay.min(left)).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The API version to speak: the daemon's own (the `Api-Version` header of `GET /_ping`), or
/// bollard's if that is older; `None` if the answer has no such header. bollard's
/// `negotiate_version` asks `GET /version` instead, for which dockerd 20.10 runs `runc --version`
/// and `docker-init --version`: about 12 ms of every job's start (BENCHMARKS.md).
async fn daemon_api_version(path: &str) -> std::io::Result<Option<bollard::ClientVersion>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::UnixStream::connect(path).await?;
    // HTTP/1.0: dockerd closes the connection after its answer.
    conn.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    conn.take(16 * 1024).read_to_end(&mut answer).await?;
    let Some((major_version, minor_version)) = api_version_header(&answer) else {
        return Ok(None);
    };
    let ours = *bollard::API_DEFAULT_VERSION;
    let older = (major_version, minor_version) < (ours.major_version, ours.minor_version);
    Ok(Some(if older {
        bollard::ClientVersion {
            major_version,
            minor_version,
        }
    } else {
        ours
    }))
}

/// The `Api-Version: 1.41` header of a successful HTTP answer.
fn api_version_header(answer: &[u8]) -> Option<(usize, usize)> {
    let head = std::str::from_utf8(answer).ok()?.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?;
    if !status.starts_with("HTTP/1.") || status.split(' ').nth(1) != Some("200") {
        return None;
    }
    let value = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let wanted = name.eq_ignore_ascii_case("api-version");
        wanted.then(|| value.trim())
    })?;
    let (major, minor) = value.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn checked(api: bollard::Docker, socket: &Path) -> Result<Docker, EngineError> {
    let v = api.client_version();
    if (v.major_version, v.minor_version) < MIN_API {
        return Err(EngineError::TooOld {
            socket: PathBuf::from(socket),
            found: format!("{}.{}", v.major_version, v.minor_version),
            needed: format!("{}.{}", MIN_API.0, MIN_API.1),
        });
    }
    tracing::debug!("dockerd API {}.{}", v.major_version, v.minor_version);
    Ok(Docker { api })
}

/// bollard's error as one line: the daemon's message, or for transport errors the cause at the
/// bottom of the chain (ECONNREFUSED, EACCES), which is what an admin can act on.
fn describe(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        BollardError::SocketNotFoundError(path) => format!("{path}: no such socket"),
        BollardError::HyperLegacyError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::IOError { .. } => {
            let mut cause: &dyn std::error::Error = e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            cause.to_string()
        }
        other => other.to_string(),
    }
}

/// Whether the socket refused jobdock for lack of permission (EACCES somewhere in the chain).
fn denied(e: &BollardError) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// How far back `oom_event` looks: the job has just ended, and dockerd keeps only its last 256
/// events in memory.
const OOM_LOOKBACK: Duration = Duration::from_secs(60);

fn daemon_error(e: BollardError) -> DaemonError {
    let kind = match &e {
        BollardError::DockerResponseServerError { status_code, .. } => match status_code {
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            code => ErrorKind::Status(*code),
        },
        BollardError::RequestTimeoutError => ErrorKind::Timeout,
        BollardError::SocketNotFoundError(_) => ErrorKind::Unreachable,
        BollardError::HyperResponseError { err }
            if err.is_closed() || err.is_incomplete_message() =>
        {
            ErrorKind::Stream
        }
        BollardError::HyperLegacyError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::IOError { .. } => ErrorKind::Unreachable,
        BollardError::DockerStreamError { .. } => ErrorKind::Stream,
        _ => ErrorKind::Other,
    };
    DaemonError::new(kind, describe(&e))
}

fn credentials(auth: &RegistryAuth) -> DockerCredentials {
    DockerCredentials {
        username: auth.username.clone(),
        password: auth.password.clone(),
        identitytoken: auth.identity_token.clone(),
        serveraddress: Some(auth.server.clone()),
        ..Default::default()
    }
}

/// Whether dockerd could not resolve a path in a container because its symlinks loop (dockerd
/// 20.10 answers 500 "evalSymlinksInScope: too many links in <its own path>").
fn symlink_loop(e: &DaemonError) -> bool {
    let m = e.message.to_ascii_lowercase();
    m.contains("too many links") || m.contains("too many levels of symbolic links")
}

/// A path's kind from the Go `os.FileMode` dockerd reports (type bits at the top).
fn path_kind(mode: u32, link_target: String) -> PathKind {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    // Append-only, exclusive and temporary (30, 29, 28) and the permission bits are no type.
    const OTHER_TYPES: u32 = (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19);
    if mode & SYMLINK != 0 {
        PathKind::Symlink(link_target)
    } else if mode & DIR != 0 {
        PathKind::Directory
    } else if mode & OTHER_TYPES != 0 {
        PathKind::Other
    } else {
        PathKind::Regular
    }
}

/// The first entry of a tar archive (what `GET /containers/{id}/archive` sends for one file).
fn first_entry(tar: &[u8], max: u64) -> ContainerFile {
    let Some(header) = tar.get(..512) else {
        return ContainerFile::NotRegular;
    };
    // ustar: size in octal at 124..136, type at 156 ('0' or NUL: a regular file).
    let size = std::str::from_utf8(&header[124..136])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u64::from_str_radix(s, 8).ok());
    match (header[156], size) {
        (b'2', _) => {
            let target = &header[157..257];
            let end = target.iter().position(|&b| b == 0).unwrap_or(target.len());
            ContainerFile::Symlink(String::from_utf8_lossy(&target[..end]).into_owned())
        }
        (b'0' | 0, Some(size)) if size > max => ContainerFile::TooLarge,
        (b'0' | 0, Some(size)) => match usize::try_from(size)
            .ok()
            .and_then(|n| tar.get(512..512 + n))
        {
            Some(body) => ContainerFile::Regular(body.to_vec()),
            None => ContainerFile::NotRegular,
        },
        _ => ContainerFile::NotRegular,
    }
}

/// What an inspect shows beside the host config: the image's id, the config's user, working
/// directory and health check, and the container's mounts as dockerd made them.
pub(super) struct Seen {
    pub image: String,
    pub user: String,
    pub working_dir: String,
    pub healthcheck: Vec<String>,
    pub mounts: Vec<MountSeen>,
}

/// The security-relevant fields of a container as dockerd stores them: its host config and what
/// `seen` adds. One mapping for the real inspect and the fake daemon's stored container.
pub(super) fn effective(hc: HostConfig, seen: Seen) -> Effective {
    Effective {
        image: seen.image,
        user: seen.user,
        working_dir: seen.working_dir,
        group_add: hc.group_add.unwrap_or_default(),
        cap_add: hc.cap_add.unwrap_or_default(),
        cap_drop: hc.cap_drop.unwrap_or_default(),
        privileged: hc.privileged.unwrap_or(false),
        security_opt: hc.security_opt.unwrap_or_default(),
        pid_mode: hc.pid_mode.unwrap_or_default(),
        userns_mode: hc.userns_mode.unwrap_or_default(),
        uts_mode: hc.uts_mode.unwrap_or_default(),
        ipc_mode: hc.ipc_mode.unwrap_or_default(),
        network_mode: hc.network_mode.unwrap_or_default(),
        cgroup_parent: hc.cgroup_parent.unwrap_or_default(),
        binds: hc.binds.unwrap_or_default(),
        volumes_from: hc.volumes_from.unwrap_or_default(),
        mounts: seen.mounts,
        tmpfs: hc.tmpfs.unwrap_or_default().into_iter().collect(),
        devices: hc
            .devices
            .unwrap_or_default()
            .into_iter()
            .map(|d| DeviceSeen {
                on_host: d.path_on_host.unwrap_or_default(),
                in_container: d.path_in_container.unwrap_or_default(),
                permissions: d.cgroup_permissions.unwrap_or_default(),
            })
            .collect(),
        device_cgroup_rules: hc.device_cgroup_rules.unwrap_or_default(),
        device_requests: hc
            .device_requests
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.device_ids.unwrap_or_default())
            .collect(),
        sysctls: hc.sysctls.unwrap_or_default().into_iter().collect(),
        masked_paths: hc.masked_paths.unwrap_or_default(),
        readonly_paths: hc.readonly_paths.unwrap_or_default(),
        oom_score_adj: hc.oom_score_adj.unwrap_or(0),
        oom_kill_disable: hc.oom_kill_disable.unwrap_or(false),
        memory: hc.memory.unwrap_or(0),
        memory_swap: hc.memory_swap.unwrap_or(0),
        pids_limit: hc.pids_limit.unwrap_or(0),
        healthcheck: seen.healthcheck,
        init: hc.init.unwrap_or(false),
        log_driver: hc
            .log_config
            .as_ref()
            .and_then(|l| l.typ.clone())
            .unwrap_or_default(),
        restart_policy: hc
            .restart_policy
            .and_then(|r| r.name)
            .map(|n| n.to_string())
            .unwrap_or_default(),
        ulimits: hc
            .ulimits
            .unwrap_or_default()
            .into_iter()
            .map(|u| {
                (
                    u.name.unwrap_or_default(),
                    u.soft.unwrap_or(0),
                    u.hard.unwrap_or(0),
                )
            })
            .collect(),
    }
}

impl Docker {
    /// What dockerd says of itself, for `jobdock doctor`.
    pub(super) async fn describe_self(&self) -> Result<crate::doctor::Daemon, DaemonError> {
        let version = self.api.version().await.map_err(daemon_error)?;
        let info = self.api.info().await.map_err(daemon_error)?;
        Ok(crate::doctor::Daemon {
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            components: version
                .components
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.name.to_lowercase(), c.version))
                .collect(),
            cgroup_driver: info
                .cgroup_driver
                .map(|d| d.to_string())
                .unwrap_or_default(),
            cgroup_version: info
                .cgroup_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
        })
    }
}

impl Daemon for Docker {
    async fn image_exists(&self, image: &ImageRef) -> Result<Option<LocalImage>, DaemonError> {
        match self.api.inspect_image(&image.to_string()).await {
            Ok(info) => Ok(Some(LocalImage {
                id: info.id.unwrap_or_default(),
                repo_digests: info.repo_digests.unwrap_or_default(),
                entrypoint: info.config.and_then(|c| c.entrypoint).unwrap_or_default(),
            })),
            Err(e) => match daemon_error(e) {
                e if e.kind == ErrorKind::NotFound => Ok(None),
                e => Err(e),
            },
        }
    }

    async fn registry_manifest(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, DaemonError> {
        let found = self
            .api
            .inspect_registry_image(&image.to_string(), auth.map(credentials))
            .await
            .map_err(daemon_error)?;
        found.descriptor.digest.ok_or_else(|| {
            DaemonError::new(ErrorKind::Other, "the registry's answer has no digest")
        })
    }

    async fn pull(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), DaemonError> {
        // fromImage without a tag would pull every tag; the plan always has a tag or a digest.
        let reference = image.digest.clone().or_else(|| image.tag.clone());
        let options = CreateImageOptions {
            from_image: Some(image.repository()),
            tag: Some(reference.unwrap_or_else(|| "latest".into())),
            ..Default::default()
        };
        let mut stream = self
            .api
            .create_image(Some(options), None, auth.map(credentials));
        while let Some(item) = stream.next().await {
            let info = item.map_err(daemon_error)?;
            let detail = info.progress_detail.unwrap_or_default();
            progress(&Progress {
                layer: info.id,
                status: info.status.unwrap_or_default(),
                current: detail.current.and_then(|c| u64::try_from(c).ok()),
                total: detail.total.and_then(|t| u64::try_from(t).ok()),
            });
        }
        Ok(())
    }

    async fn create(&self, plan: &ContainerPlan) -> Result<String, DaemonError> {
        let options = CreateContainerOptions {
            name: Some(plan.name.clone()),
            ..Default::default()
        };
        let created = self
            .api
            .create_container(Some(options), body::create_body(plan))
            .await
            .map_err(daemon_error)?;
        for warning in created.warnings {
            tracing::warn!("dockerd: {warning}");
        }
        Ok(created.id)
    }

    async fn path_exists(&self, id: &str, path: &str) -> Result<bool, DaemonError> {
        let options = ContainerArchiveInfoOptions {
            path: path.to_string(),
        };
        match self.api.get_container_archive_info(id, Some(options)).await {
            Ok(_) => Ok(true),
            Err(e) => match daemon_error(e) {
                e if e.kind == ErrorKind::NotFound => Ok(false),
                e => Err(e),
            },
        }
    }

    async fn stat_path(&self, id: &str, path: &str) -> Result<Option<PathKind>, DaemonError> {
        let options = ContainerArchiveInfoOptions {
            path: path.to_string(),
        };
        match self.api.get_container_archive_info(id, Some(options)).await {
            Ok(stat) => Ok(Some(path_kind(stat.file_mode, stat.link_target))),
            Err(e) => match daemon_error(e) {
                e if e.kind == ErrorKind::NotFound => Ok(None),
                e if symlink_loop(&e) => Ok(Some(PathKind::Other)),
                // An answer to HEAD has no body, so no reason: dockerd says why (a symlink loop,
                // which it reports with 500) to the same request as a GET, which fails as early
                // (before any of the file is sent; at most a few blocks are read if it does not).
                e if e.kind == ErrorKind::Status(500) && e.message.trim().is_empty() => {
                    Ok(self.read_file(id, path, 0).await?.map(|f| match f {
                        ContainerFile::Symlink(to) => PathKind::Symlink(to),
                        ContainerFile::Regular(_) | ContainerFile::TooLarge => PathKind::Regular,
                        ContainerFile::NotRegular => PathKind::Other,
                    }))
                }
                e => Err(e),
            },
        }
    }

    async fn create_inert(
        &self,
        image: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, DaemonError> {
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let body = body::inert_body(image, labels);
        let created = self
            .api
            .create_container(Some(options), body)
            .await
            .map_err(daemon_error)?;
        Ok(created.id)
    }

    async fn read_file(
        &self,
        id: &str,
        path: &str,
        max: u64,
    ) -> Result<Option<ContainerFile>, DaemonError> {
        let options = DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let mut stream = self.api.download_from_container(id, Some(options));
        let mut tar = Vec::new();
        // One header, the file, padding and the end-of-archive blocks.
        let limit = max.saturating_add(8 * 512);
        while let Some(chunk) = stream.next().await {
            match chunk.map_err(daemon_error) {
                Ok(bytes) => tar.extend_from_slice(&bytes),
                Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
                // The image's own doing, not the daemon's: the path does not lead to a file.
                Err(e) if symlink_loop(&e) => return Ok(Some(ContainerFile::NotRegular)),
                Err(e) => return Err(e),
            }
            if tar.len() as u64 > limit {
                return Ok(Some(ContainerFile::TooLarge));
            }
        }
        Ok(Some(first_entry(&tar, max)))
    }

    async fn attach(&self, id: &str) -> Result<Attached, DaemonError> {
        let options = AttachContainerOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            stream: true,
            logs: false,
            detach_keys: None,
        };
        let attached = self
            .api
            .attach_container(id, Some(options))
            .await
            .map_err(daemon_error)?;
        let output = attached.output.filter_map(|item| async move {
            match item {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Some(Ok(Chunk::Stdout(message)))
                }
                Ok(LogOutput::StdErr { message }) => Some(Ok(Chunk::Stderr(message))),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(daemon_error(e))),
            }
        });
        Ok(Attached {
            output: Box::pin(output),
            input: attached.input,
        })
    }

    async fn start(&self, id: &str) -> Result<(), DaemonError> {
        self.api
            .start_container(id, None)
            .await
            .map_err(daemon_error)
    }

    async fn wait(&self, id: &str) -> Result<i64, DaemonError> {
        // "not-running" after start: the container is never auto-removed, so a job that has
        // already exited is reported at once instead of being waited for forever.
        let options = WaitContainerOptions {
            condition: "not-running".into(),
        };
        let mut stream = self.api.wait_container(id, Some(options));
        match stream.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit status as an error; it is the job's status.
            Some(Err(BollardError::DockerContainerWaitError { error, code })) => {
                if !error.is_empty() {
                    tracing::warn!("dockerd: waiting for the job: {error}");
                }
                Ok(code)
            }
            Some(Err(e)) => Err(daemon_error(e)),
            None => Err(DaemonError::new(
                ErrorKind::Stream,
                "the wait ended without an exit status",
            )),
        }
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<(), DaemonError> {
        let options = KillContainerOptions {
            signal: signal.to_string(),
        };
        self.api
            .kill_container(id, Some(options))
            .await
            .map_err(daemon_error)
    }

    async fn pause(&self, id: &str) -> Result<(), DaemonError> {
        self.api.pause_container(id).await.map_err(daemon_error)
    }

    async fn unpause(&self, id: &str) -> Result<(), DaemonError> {
        self.api.unpause_container(id).await.map_err(daemon_error)
    }

    async fn resize(&self, id: &str, rows: u16, cols: u16) -> Result<(), DaemonError> {
        let options = ResizeContainerTTYOptions {
            h: i32::from(rows),
            w: i32::from(cols),
        };
        self.api
            .resize_container_tty(id, options)
            .await
            .map_err(daemon_error)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerState, DaemonError> {
        let info = self
            .api
            .inspect_container(id, None)
            .await
            .map_err(daemon_error)?;
        let state = info.state.unwrap_or_default();
        let config = info.config.unwrap_or_default();
        let path = config
            .env
            .iter()
            .flatten()
            .find_map(|v| v.strip_prefix("PATH="))
            .unwrap_or_default()
            .to_string();
        let hc = info.host_config.unwrap_or_default();
        let effective = effective(
            hc,
            Seen {
                image: info.image.unwrap_or_default(),
                user: config.user.unwrap_or_default(),
                working_dir: config.working_dir.unwrap_or_default(),
                healthcheck: config.healthcheck.and_then(|h| h.test).unwrap_or_default(),
                mounts: info
                    .mounts
                    .unwrap_or_default()
                    .into_iter()
                    .map(|m| MountSeen {
                        typ: m.typ.unwrap_or_default(),
                        source: m.source.unwrap_or_default(),
                        destination: m.destination.unwrap_or_default(),
                        rw: m.rw.unwrap_or(false),
                        propagation: m.propagation.unwrap_or_default(),
                    })
                    .collect(),
            },
        );
        Ok(ContainerState {
            running: state.running.unwrap_or(false),
            paused: state.paused.unwrap_or(false),
            exit_code: state.exit_code.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.unwrap_or_default(),
            pid: state.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            path,
            effective,
        })
    }

    async fn oom_event(&self, id: &str, late: Duration) -> Result<bool, DaemonError> {
        // Timestamps as dockerd parses them: seconds since the epoch, with nanoseconds.
        let stamp = |t: SystemTime| {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
        };
        let now = SystemTime::now();
        let options = EventsOptions {
            since: Some(stamp(now - OOM_LOOKBACK)),
            // The stream ends at `until`: events logged until then, late ones included.
            until: Some(stamp(now + late)),
            filters: Some(HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("container".to_string(), vec![id.to_string()]),
                ("event".to_string(), vec!["oom".to_string()]),
            ])),
        };
        let mut events = self.api.events(Some(options));
        match events.next().await {
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(daemon_error(e)),
            None => Ok(false),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), DaemonError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        self.api
            .remove_container(id, Some(options))
            .await
            .map_err(daemon_error)
    }

    async fn list_images(&self) -> Result<Vec<crate::engine::images::NodeImage>, DaemonError> {
        let listed = self
            .api
            .list_images(None::<ListImagesOptions>)
            .await
            .map_err(daemon_error)?;
        Ok(listed
            .into_iter()
            .map(|i| crate::engine::images::NodeImage {
                id: i.id,
                tags: i.repo_tags,
                size: u64::try_from(i.size).unwrap_or(0),
            })
            .collect())
    }

    async fn images_in_use(&self) -> Result<std::collections::BTreeSet<String>, DaemonError> {
        let options = ListContainersOptions {
            all: true,
            ..Default::default()
        };
        let found = self
            .api
            .list_containers(Some(options))
            .await
            .map_err(daemon_error)?;
        Ok(found.into_iter().filter_map(|c| c.image_id).collect())
    }

    async fn remove_image(&self, id: &str) -> Result<(), DaemonError> {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        self.api
            .remove_image(id, Some(options), None)
            .await
            .map(|_| ())
            .map_err(daemon_error)
    }

    async fn list_by_label(&self, key: &str, value: &str) -> Result<Vec<Found>, DaemonError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{key}={value}")])]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let found = self
            .api
            .list_containers(Some(options))
            .await
            .map_err(daemon_error)?;
        Ok(found
            .into_iter()
            .map(|c| Found {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(typ: u8, body: &[u8]) -> Vec<u8> {
        let mut header = vec![0u8; 512];
        header[..5].copy_from_slice(b"group");
        let size = format!("{:011o}\0", body.len());
        header[124..136].copy_from_slice(size.as_bytes());
        header[156] = typ;
        let mut out = header;
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
        out
    }

    #[test]
    fn a_symlink_loop_in_the_container_is_told_from_a_daemon_failure() {
        let cases = [
            (
                ErrorKind::Status(500),
                "evalSymlinksInScope: too many links in /var/lib/docker/overlay2/x/merged/etc/group",
                true,
            ),
            (
                ErrorKind::Status(500),
                "open /etc/group: too many levels of symbolic links",
                true,
            ),
            (ErrorKind::Status(500), "no space left on device", false),
            (ErrorKind::Unreachable, "connection refused", false),
        ];
        for (kind, message, want) in cases {
            assert_eq!(
                symlink_loop(&DaemonError::new(kind, message)),
                want,
                "{message}"
            );
        }
    }

    #[test]
    fn a_path_kind_is_read_from_gos_file_mode() {
        // As dockerd 20.10 reports them: /etc, /etc/passwd, a symlink to /etc, /dev/null.
        let cases = [
            (0x8000_01ed, "", PathKind::Directory),
            (0o644, "", PathKind::Regular),
            (0x0800_01ff, "/etc", PathKind::Symlink("/etc".into())),
            (0x0420_01b6, "", PathKind::Other),
            (0x0200_01a4, "", PathKind::Other),
        ];
        for (mode, target, want) in cases {
            assert_eq!(path_kind(mode, target.into()), want, "{mode:#x}");
        }
    }

    #[test]
    fn the_first_tar_entry_is_read_only_if_it_is_a_small_regular_file() {
        assert_eq!(
            first_entry(&tar(b'0', b"root:x:0:\n"), 100),
            ContainerFile::Regular(b"root:x:0:\n".to_vec())
        );
        assert_eq!(
            first_entry(&tar(b'0', &[b'x'; 101]), 100),
            ContainerFile::TooLarge
        );
        let mut link = tar(b'2', b"");
        link[157..166].copy_from_slice(b"../x/grp\0");
        assert_eq!(
            first_entry(&link, 100),
            ContainerFile::Symlink("../x/grp".into())
        );
        assert_eq!(first_entry(&tar(b'5', b""), 100), ContainerFile::NotRegular);
        assert_eq!(first_entry(b"short", 100), ContainerFile::NotRegular);
        let mut cut = tar(b'0', b"root:x:0:\n");
        cut.truncate(515);
        assert_eq!(first_entry(&cut, 100), ContainerFile::NotRegular);
    }
}

#[cfg(test)]
mod api_version_tests {
    use super::api_version_header;

    #[test]
    fn the_api_version_comes_from_a_successful_ping_only() {
        let cases: [(&str, &[u8], Option<(usize, usize)>); 5] = [
            (
                "dockerd 20.10",
                b"HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK",
                Some((1, 41)),
            ),
            (
                "lower case",
                b"HTTP/1.1 200 OK\r\napi-version:1.47\r\n\r\nOK",
                Some((1, 47)),
            ),
            (
                "no header: negotiate",
                b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK",
                None,
            ),
            (
                "refused",
                b"HTTP/1.0 403 Forbidden\r\nApi-Version: 1.41\r\n\r\n",
                None,
            ),
            (
                "header in the body",
                b"HTTP/1.0 200 OK\r\n\r\nApi-Version: 1.41\r\n",
                None,
            ),
        ];
        for (name, answer, want) in cases {
            assert_eq!(api_version_header(answer), want, "{name}");
        }
    }
}
