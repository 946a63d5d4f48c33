//! The `Daemon` seam implemented with bollard: the only file that makes Engine API calls. Connects
//! to the configured socket with a bounded wait, negotiates the API version down to the daemon's,
//! and turns bollard's errors into `DaemonError` kinds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    AttachContainerOptions, ContainerArchiveInfoOptions, CreateContainerOptions,
    CreateImageOptions, KillContainerOptions, ListContainersOptions, RemoveContainerOptions,
    ResizeContainerTTYOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::engine::EngineError;
use crate::engine::auth::RegistryAuth;
use crate::engine::body;
use crate::engine::daemon::{
    Attached, Chunk, ContainerState, Daemon, DaemonError, ErrorKind, Found, Progress,
};
use crate::image::ImageRef;
use crate::plan::ContainerPlan;

/// The oldest Engine API jobdock talks to: every field of the create body (Init, Mounts,
/// DeviceRequests, ...) is understood from 1.41 (Docker 20.10) on. An older daemon would silently
/// ignore hardening it does not know.
pub const MIN_API: (usize, usize) = (1, 41);

/// Bounds every request until the daemon's response headers arrive (streams run unbounded).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The first pause between connection attempts; doubled up to 5 s.
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// Bounds one connection attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Docker {
    api: bollard::Docker,
}

/// Connects to dockerd at `socket`, retrying with backoff for up to `wait` (a daemon being
/// restarted comes back within seconds), and negotiates the API version.
pub async fn connect(socket: &Path, wait: Duration) -> Result<Docker, EngineError> {
    let started = Instant::now();
    let unreachable = |reason: String| EngineError::Unreachable {
        socket: socket.to_path_buf(),
        waited: started.elapsed().as_secs(),
        reason,
    };
    let path = socket
        .to_str()
        .ok_or_else(|| unreachable("the path is not UTF-8".into()))?;
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
            Ok(Err(e)) if denied(&e) => return Err(unreachable(describe(&e))),
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

impl Daemon for Docker {
    async fn image_exists(&self, image: &ImageRef) -> Result<bool, DaemonError> {
        match self.api.inspect_image(&image.to_string()).await {
            Ok(_) => Ok(true),
            Err(e) => match daemon_error(e) {
                e if e.kind == ErrorKind::NotFound => Ok(false),
                e => Err(e),
            },
        }
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
        Ok(ContainerState {
            running: state.running.unwrap_or(false),
            paused: state.paused.unwrap_or(false),
            exit_code: state.exit_code.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.unwrap_or_default(),
        })
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
