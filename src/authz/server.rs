//! The plugin protocol on a unix socket (hyper on tokio): `/Plugin.Activate`,
//! `/AuthZPlugin.AuthZReq` (the decision) and `/AuthZPlugin.AuthZRes` (always allowed: it runs
//! after the side effect). Reads dockerd's message, resolves a TLS user through NSS, asks
//! `policy`, checks a TLS user owns the container acted on, logs every denial, and reloads the
//! site config on SIGHUP. Decides nothing itself; anything it cannot read is a denial.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;

use crate::authz::policy::{ApiRequest, Denial, Policy, TlsUser, UserIds, Who};
use crate::config::SiteConfig;

/// Where dockerd looks for a plugin named `jobdock` (`--authorization-plugin=jobdock`).
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/jobdock.sock";

/// dockerd passes bodies under 1 MiB, base64-encoded, inside a JSON message: at most this much.
const MAX_MESSAGE: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("--listen {}: {reason}", path.display())]
    Listen { path: PathBuf, reason: String },
    #[error("authz: {0}")]
    Runtime(String),
}

/// The site policy and where it comes from (for SIGHUP).
struct State {
    config_path: PathBuf,
    explicit: bool,
    policy: RwLock<Arc<Policy>>,
    /// dockerd's socket, for the owner of a container a TLS user acts on.
    engine_socket: RwLock<PathBuf>,
}

/// Serves the plugin on `listen` until killed. The config is read as jobdock reads it (root's
/// alone); a bad config at start is an error, at SIGHUP it is logged and the old one kept.
pub fn serve(config_path: &Path, explicit: bool, listen: &Path) -> Result<(), AuthzError> {
    let config = SiteConfig::load(config_path, explicit)?;
    let state = Arc::new(State {
        config_path: config_path.to_path_buf(),
        explicit,
        policy: RwLock::new(Arc::new(Policy::new(&config))),
        engine_socket: RwLock::new(config.engine.socket.clone()),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AuthzError::Runtime(format!("tokio: {e}")))?;
    runtime.block_on(async move {
        let listener = bind(listen)?;
        tracing::warn!(
            socket = %listen.display(),
            config = %config_path.display(),
            allow = ?config.authz.allow.iter().map(|a| a.name()).collect::<Vec<_>>(),
            tls_users = config.authz.tls_users,
            "authz: serving"
        );
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| AuthzError::Runtime(format!("SIGHUP: {e}")))?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!("authz: accept: {e}");
                            continue;
                        }
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(handle(&state, req).await) }
                        });
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                        {
                            tracing::debug!("authz: connection: {e}");
                        }
                    });
                }
                _ = hup.recv() => reload(&state),
            }
        }
    })
}

fn reload(state: &State) {
    match SiteConfig::load(&state.config_path, state.explicit) {
        Ok(c) => {
            *state.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Policy::new(&c));
            *state
                .engine_socket
                .write()
                .unwrap_or_else(|e| e.into_inner()) = c.engine.socket;
            tracing::warn!(config = %state.config_path.display(), "authz: SIGHUP: config reloaded");
        }
        Err(e) => tracing::error!("authz: SIGHUP: keeping the previous policy: {e}"),
    }
}

/// Binds `path` for root alone (mode 0600, made so: no moment when others could connect). A
/// socket file nothing answers on is a previous run's and is replaced; a live one is an error.
fn bind(path: &Path) -> Result<tokio::net::UnixListener, AuthzError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let fail = |reason: String| AuthzError::Listen {
        path: path.into(),
        reason,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(fail(
                "exists and is not a socket; refusing to replace it".into(),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(fail("another process already serves it".into()));
        }
        std::fs::remove_file(path).map_err(|e| fail(format!("removing the stale socket: {e}")))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| fail(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("chmod 0600: {e}")))?;
    Ok(listener)
}

/// dockerd's `authorization.Request` (moby pkg/authorization). Unknown keys are ignored: this
/// message is dockerd's own (it adds `RequestPeerCertificates` over TLS), and the client's part
/// of it, the body, is decoded strictly by `policy`.
#[derive(Debug, Default, Deserialize)]
struct PluginRequest {
    #[serde(rename = "User", default)]
    user: String,
    #[serde(rename = "UserAuthNMethod", default)]
    authn: String,
    #[serde(rename = "RequestMethod", default)]
    method: String,
    #[serde(rename = "RequestUri", default)]
    uri: String,
    #[serde(rename = "RequestBody", default)]
    body: Option<String>,
    #[serde(rename = "RequestHeaders", default)]
    headers: Option<BTreeMap<String, String>>,
}

async fn handle(state: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let bytes = match Limited::new(req.into_body(), MAX_MESSAGE).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply_deny(&format!("jobdock authz: unreadable message: {e}")),
    };
    match path.as_str() {
        "/Plugin.Activate" => json(StatusCode::OK, r#"{"Implements":["authz"]}"#.into()),
        "/AuthZPlugin.AuthZRes" => json(StatusCode::OK, r#"{"Allow":true}"#.into()),
        "/AuthZPlugin.AuthZReq" => {
            let decision = decide(state, &bytes).await;
            match decision {
                Ok(()) => json(StatusCode::OK, r#"{"Allow":true}"#.into()),
                Err(msg) => reply_deny(&msg),
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"Err":"not a plugin call"}"#.into(),
        ),
    }
}

/// The decision on one AuthZReq message; `Err` is the message the client sees.
async fn decide(state: &State, message: &[u8]) -> Result<(), String> {
    let m: PluginRequest = match serde_json::from_slice(message) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("authz: denied: dockerd's message is unreadable: {e}");
            return Err(format!("jobdock authz: unreadable AuthZReq: {e}"));
        }
    };
    let who = who(&m.user, &m.authn);
    let body = match m
        .body
        .as_deref()
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
    {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            let d = Denial {
                action: "request".into(),
                field: "RequestBody".into(),
                rule: format!("not base64: {e}"),
            };
            return Err(log_denial(&who, &m, &d));
        }
    };
    let req = ApiRequest {
        method: &m.method,
        uri: &m.uri,
        headers: m.headers.clone().unwrap_or_default(),
        body: body.as_deref(),
    };
    let policy = state
        .policy
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let allowed = policy
        .decide(&who, &req)
        .map_err(|d| log_denial(&who, &m, &d))?;
    if let (Who::Tls(_), Some(id)) = (&who, &allowed.container) {
        let socket = state
            .engine_socket
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let user = container_user(&socket, id).await.map_err(|reason| {
            log_denial(
                &who,
                &m,
                &Denial {
                    action: allowed.action.clone(),
                    field: "container".into(),
                    rule: format!("its owner cannot be read: {reason}"),
                },
            )
        })?;
        Policy::owns(&who, &allowed.action, &user).map_err(|d| log_denial(&who, &m, &d))?;
    }
    tracing::debug!(who = %who, method = %m.method, uri = %m.uri, action = %allowed.action, "authz: allowed");
    Ok(())
}

/// Logs a denial (who, what, why) and returns the client's message.
fn log_denial(who: &Who, m: &PluginRequest, d: &Denial) -> String {
    tracing::warn!(
        who = %who,
        method = %m.method,
        uri = %m.uri,
        action = %d.action,
        field = %d.field,
        rule = %d.rule,
        "authz: denied"
    );
    format!("jobdock authz: {d}")
}

/// The user dockerd names: none over the unix socket; a certificate's CN over TLS, looked up in
/// NSS (a CN that is no local user is kept as such, and refused by the policy).
fn who(user: &str, authn: &str) -> Who {
    if user.is_empty() {
        return Who::Unnamed;
    }
    let ids = (authn == "TLS")
        .then(|| nix::unistd::User::from_name(user).ok().flatten())
        .flatten()
        .and_then(|u| {
            let name = std::ffi::CString::new(user).ok()?;
            let groups: BTreeSet<u32> = nix::unistd::getgrouplist(&name, u.gid)
                .ok()?
                .into_iter()
                .map(|g| g.as_raw())
                .chain([u.gid.as_raw()])
                .collect();
            Some(UserIds {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                groups,
            })
        });
    Who::Tls(TlsUser {
        name: user.to_string(),
        ids,
    })
}

/// `Config.User` of container `id`, asked of dockerd (`GET /containers/{id}/json`; this request
/// reaches the plugin too, with no user, and is read-only inspection).
async fn container_user(socket: &Path, id: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    #[derive(Deserialize)]
    struct Inspect {
        #[serde(rename = "Config")]
        config: InspectConfig,
    }
    #[derive(Deserialize)]
    struct InspectConfig {
        #[serde(rename = "User", default)]
        user: String,
    }
    let id: String =
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).collect();
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    s.write_all(format!("GET /containers/{id}/json HTTP/1.0\r\nHost: docker\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.take(MAX_MESSAGE as u64)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    let inspect: Inspect = serde_json::from_str(body).map_err(|e| e.to_string())?;
    Ok(inspect.config.user)
}

fn reply_deny(msg: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "Allow": false, "Msg": msg }).to_string();
    json(StatusCode::OK, body)
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/vnd.docker.plugins.v1+json")
        .body(Full::new(Bytes::from(body)))
        .expect("a static response is valid")
}
