//! The plugin's decision, pure: one API request (method, URI as dockerd gave it, headers, body)
//! and who sent it, against the site config, gives allowed or a denial that names the action, the
//! field and the rule. Default deny: a route not listed here, a body not understood exactly, a
//! value outside the policy, all refused. No I/O: the server (`authz::server`) reads the
//! request, looks the user up and logs.
//!
//! A create is held to the invariants of every jobdock plan: `plan::HARDENING` (CapDrop ALL,
//! not privileged, logging and health checks off, no restart), a numeric non-root user and
//! groups, `security.cap_add`, no-new-privileges, the private namespaces, binds only from
//! jobdock's state directory (where `engine::pin` stages every mount) or `mounts.site`, devices
//! only from `devices.paths` (matched by `probe::glob_matches`), no sysctls, dockerd's masked
//! paths, and the cgroup-parent rule of `config::cgroup_parent_problem`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::authz::body::{self, CreateBody, DeviceMapping, DeviceRequest, HostConfig};
use crate::config::{AuthzAction, SiteConfig};
use crate::plan::HARDENING;
use crate::units::Capability;

/// The oldest Engine API a request may name (Docker 20.10 speaks 1.41; below 1.24 a start may
/// carry a HostConfig that replaces the checked one).
pub const MIN_API: (u32, u32) = (1, 40);

/// Who dockerd says sent the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// No user: the unix socket (only root reaches it on a jobdock node), or a listener without
    /// TLS client certificates.
    Unnamed,
    /// A TLS client certificate's CN, resolved to a local user by the server.
    Tls(TlsUser),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsUser {
    pub name: String,
    /// `None`: no such local user (refused).
    pub ids: Option<UserIds>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
    /// Every group the user is in, the primary one included.
    pub groups: BTreeSet<u32>,
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Unnamed => f.write_str("(unix socket, no user)"),
            Who::Tls(u) => write!(f, "TLS user {:?}", u.name),
        }
    }
}

/// One API request as dockerd passes it to the plugin.
#[derive(Clone, Debug, Default)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    /// `RequestUri`: verbatim, maybe versioned, not percent-decoded.
    pub uri: &'a str,
    /// `RequestHeaders`, as dockerd gives them (one value per name).
    pub headers: BTreeMap<String, String>,
    /// `RequestBody`, decoded from base64; `None` when dockerd sent none.
    pub body: Option<&'a [u8]>,
}

/// Why a request is refused: which action, which field, which rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub action: String,
    pub field: String,
    pub rule: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.action, self.field, self.rule)
    }
}

fn deny(action: &str, field: &str, rule: impl Into<String>) -> Denial {
    Denial {
        action: action.into(),
        field: field.into(),
        rule: rule.into(),
    }
}

/// An allowed request: its action, and the container it acts on (for the owner check of TLS
/// users, which needs the daemon and so is the server's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    pub action: String,
    pub container: Option<String>,
}

/// The site config, as the plugin needs it.
#[derive(Clone, Debug)]
pub struct Policy {
    state_dir: PathBuf,
    /// `mounts.site`: (source, read-only).
    site_mounts: Vec<(PathBuf, bool)>,
    cap_add: BTreeSet<Capability>,
    security_opt: BTreeSet<String>,
    device_globs: Vec<String>,
    networks: Vec<String>,
    ipc: Vec<String>,
    ports: Option<(u16, u16)>,
    shm_size_max: i64,
    /// `limits.tmp_size`: the largest tmpfs /tmp jobdock gives a job.
    tmp_size_max: u64,
    allow: Vec<AuthzAction>,
    tls_users: bool,
    images: crate::config::Images,
}

impl Policy {
    /// A create's tmpfs mounts: none, or jobdock's `/tmp` (`plan::tmpfs`) of at most
    /// `limits.tmp_size`, with exactly its options (exec, but neither setuid nor devices).
    fn tmpfs_allowed(&self, tmpfs: &body::StrictMap<String>) -> Result<(), String> {
        match tmpfs.0.as_slice() {
            [] => Ok(()),
            [(target, options)] if target == "/tmp" => {
                let size = options
                    .strip_prefix("rw,exec,nosuid,nodev,size=")
                    .and_then(|o| o.strip_suffix(",mode=1777"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|n| *n > 0);
                let planned = size.and_then(crate::units::ByteSize::new).map(|b| {
                    crate::plan::tmpfs(Some(b))
                        .get("/tmp")
                        .cloned()
                        .unwrap_or_default()
                });
                match (size, planned) {
                    (Some(n), Some(p)) if p == *options && n <= self.tmp_size_max => Ok(()),
                    (Some(n), Some(p)) if p == *options => Err(format!(
                        "/tmp of {n} bytes is more than limits.tmp_size ({})",
                        self.tmp_size_max
                    )),
                    _ => Err(format!(
                        "/tmp {options:?} is not jobdock's (rw,exec,nosuid,nodev,size=N,mode=1777)"
                    )),
                }
            }
            _ => Err("only jobdock's /tmp may be a tmpfs".into()),
        }
    }

    pub fn new(c: &SiteConfig) -> Policy {
        Policy {
            state_dir: c.engine.state_dir.clone(),
            site_mounts: c
                .mounts
                .site
                .iter()
                .map(|m| (m.source.clone(), m.readonly))
                .collect(),
            cap_add: c.security.cap_add.iter().copied().collect(),
            security_opt: c
                .security
                .selinux_labels
                .iter()
                .map(|l| format!("label={l}"))
                .collect(),
            device_globs: c.devices.paths.clone(),
            networks: c.network.allowed.clone(),
            ipc: c.ipc.allowed.clone(),
            ports: c.ports.range,
            shm_size_max: c.limits.shm_size_max.api(),
            tmp_size_max: c.limits.tmp_size.bytes(),
            allow: c.authz.allow.clone(),
            tls_users: c.authz.tls_users,
            images: c.images.clone(),
        }
    }

    /// The decision on one request.
    pub fn decide(&self, who: &Who, req: &ApiRequest<'_>) -> Result<Allowed, Denial> {
        if let Who::Tls(u) = who {
            if !self.tls_users {
                return Err(deny(
                    "request",
                    "User",
                    format!(
                        "dockerd names the TLS user {:?}, and authz.tls_users is off",
                        u.name
                    ),
                ));
            }
            match &u.ids {
                None => {
                    return Err(deny(
                        "request",
                        "User",
                        format!("the TLS user {:?} is not a user of this node", u.name),
                    ));
                }
                Some(ids) if ids.uid == 0 => {
                    return Err(deny(
                        "request",
                        "User",
                        format!(
                            "the TLS user {:?} is root: no certificate speaks for root",
                            u.name
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let route = Route::parse(req.method, req.uri)?;
        self.route(who, req, &route)
    }

    fn allowed(&self, a: AuthzAction) -> bool {
        self.allow.contains(&a)
    }

    fn route(&self, who: &Who, req: &ApiRequest<'_>, r: &Route) -> Result<Allowed, Denial> {
        let s: Vec<&str> = r.segments.iter().map(String::as_str).collect();
        let m = r.method.as_str();
        let read = m == "GET" || m == "HEAD";
        let ok = |action: &str, container: Option<&str>| Allowed {
            action: action.into(),
            container: container.map(str::to_string),
        };
        // (action, queries allowed, a body expected, container it acts on)
        let (action, queries, container): (&str, &[&str], Option<&str>) = match (m, s.as_slice()) {
            // Read-only inspection.
            ("GET" | "HEAD", ["_ping"]) => ("ping", &[], None),
            ("GET", ["version"]) => ("version", &[], None),
            ("GET", ["info"]) => ("info", &[], None),
            ("GET", ["events"]) => ("events", &["since", "until", "filters"], None),
            ("GET", ["system", "df"]) => ("system_df", &[], None),
            ("GET", ["containers", "json"]) => (
                "container_list",
                &["all", "limit", "size", "filters", "since", "before"],
                None,
            ),
            ("GET", ["containers", id, "json"]) => ("container_inspect", &["size"], Some(*id)),
            ("GET", ["containers", id, "top"]) => ("container_top", &["ps_args"], Some(*id)),
            ("GET", ["containers", id, "changes"]) => ("container_changes", &[], Some(*id)),
            ("GET", ["containers", id, "stats"]) => {
                ("container_stats", &["stream", "one-shot"], Some(*id))
            }
            ("GET", ["containers", id, "logs"]) => (
                "container_logs",
                &[
                    "follow",
                    "stdout",
                    "stderr",
                    "since",
                    "until",
                    "timestamps",
                    "tail",
                    "details",
                ],
                Some(*id),
            ),
            ("GET" | "HEAD", ["containers", id, "archive"]) => {
                ("container_archive_read", &["path"], Some(*id))
            }
            ("GET", ["images", "json"]) => {
                ("image_list", &["all", "filters", "digests", "filter"], None)
            }
            ("GET", ["images", name @ .., "json"]) if !name.is_empty() => {
                ("image_inspect", &[], None)
            }
            ("GET", ["images", name @ .., "history"]) if !name.is_empty() => {
                ("image_history", &[], None)
            }
            ("GET", ["distribution", name @ .., "json"]) if !name.is_empty() => {
                ("distribution_inspect", &[], None)
            }
            ("GET", ["networks"]) => ("network_list", &["filters"], None),
            ("GET", ["networks", _]) => ("network_inspect", &["verbose", "scope"], None),
            ("GET", ["volumes"]) => ("volume_list", &["filters"], None),
            ("GET", ["volumes", _]) => ("volume_inspect", &[], None),
            ("GET", ["plugins"]) => ("plugin_list", &["filters"], None),

            // What jobdock does to run a job.
            ("POST", ["containers", "create"]) => {
                query(r, "container_create", &["name", "platform"])?;
                self.create(who, req)?;
                return Ok(ok("container_create", None));
            }
            ("POST", ["containers", id, "start"]) => {
                ("container_start", &["detachKeys"], Some(*id))
            }
            ("POST", ["containers", id, "attach"]) => (
                "container_attach",
                &["stream", "stdin", "stdout", "stderr", "logs", "detachKeys"],
                Some(*id),
            ),
            ("POST", ["containers", id, "wait"]) => ("container_wait", &["condition"], Some(*id)),
            ("POST", ["containers", id, "kill"]) => ("container_kill", &["signal"], Some(*id)),
            ("POST", ["containers", id, "stop"]) => ("container_stop", &["t"], Some(*id)),
            ("POST", ["containers", id, "resize"]) => ("container_resize", &["h", "w"], Some(*id)),
            ("POST", ["containers", id, "pause"]) => ("container_pause", &[], Some(*id)),
            ("POST", ["containers", id, "unpause"]) => ("container_unpause", &[], Some(*id)),
            ("DELETE", ["containers", id]) => {
                ("container_delete", &["v", "force", "link"], Some(*id))
            }
            ("POST", ["images", "create"]) => {
                // A pull. `fromSrc` imports a tarball (from the body or a URL) as an image.
                if r.query.iter().any(|(k, _)| k == "fromSrc") && !self.allowed(AuthzAction::Images)
                {
                    return Err(deny(
                        "image_create",
                        "fromSrc",
                        "importing an image is not a pull; refused unless authz.allow has \"images\"",
                    ));
                }
                let name = r
                    .query
                    .iter()
                    .find(|(k, _)| k == "fromImage")
                    .map(|(_, v)| v.as_str());
                if let Some(name) = name {
                    self.image("image_pull", "fromImage", name)?;
                }
                (
                    "image_pull",
                    if self.allowed(AuthzAction::Images) {
                        &[
                            "fromImage",
                            "tag",
                            "platform",
                            "fromSrc",
                            "repo",
                            "message",
                            "changes",
                        ]
                    } else {
                        &["fromImage", "tag", "platform"]
                    },
                    None,
                )
            }

            // Refused unless the site allows them.
            ("POST", ["containers", id, "exec"]) => {
                self.require(AuthzAction::Exec, "container_exec")?;
                query(r, "container_exec", &[])?;
                self.exec(who, req)?;
                return Ok(ok("container_exec", Some(id)));
            }
            ("POST", ["exec", _, "start" | "resize"]) | ("GET", ["exec", _, "json"]) => {
                self.require(AuthzAction::Exec, "exec")?;
                return Ok(ok("exec", None));
            }
            ("POST", ["containers", id, "update"]) => {
                self.require(AuthzAction::Update, "container_update")?;
                query(r, "container_update", &[])?;
                let b: body::UpdateBody = self.body("container_update", req)?;
                self.resources(
                    "container_update",
                    b.devices.as_deref(),
                    b.device_cgroup_rules.as_deref(),
                    b.device_requests.as_deref(),
                    b.cgroup_parent.as_deref(),
                    b.oom_kill_disable,
                )?;
                restart_policy("container_update", b.restart_policy.as_ref())?;
                return Ok(ok("container_update", Some(id)));
            }
            ("POST", ["build" | "session", ..]) => {
                self.require(AuthzAction::Build, "build")?;
                return Ok(ok("build", None));
            }
            (_, ["plugins", ..]) if !read => {
                self.require(AuthzAction::Plugins, "plugin")?;
                return Ok(ok("plugin", None));
            }
            (
                _,
                [
                    "swarm" | "services" | "nodes" | "tasks" | "secrets" | "configs",
                    ..,
                ],
            ) => {
                self.require(AuthzAction::Swarm, "swarm")?;
                return Ok(ok("swarm", None));
            }
            ("POST", ["volumes", "create"]) => {
                self.require(AuthzAction::VolumeCreate, "volume_create")?;
                let b: body::VolumeBody = self.body("volume_create", req)?;
                if !matches!(b.driver.as_deref(), None | Some("" | "local")) {
                    return Err(deny(
                        "volume_create",
                        "Driver",
                        "only the local driver (a fresh directory of dockerd's)",
                    ));
                }
                if b.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
                    return Err(deny(
                        "volume_create",
                        "DriverOpts",
                        "driver options mount host paths or devices (type=none,o=bind is a host \
                         bind); refused",
                    ));
                }
                return Ok(ok("volume_create", None));
            }
            ("DELETE", ["volumes", _]) | ("POST", ["volumes", "prune"]) => {
                self.require(AuthzAction::VolumeCreate, "volume_remove")?;
                return Ok(ok("volume_remove", None));
            }
            ("POST", ["networks", "create" | "prune"])
            | ("POST", ["networks", _, "connect" | "disconnect"])
            | ("DELETE", ["networks", _]) => {
                self.require(AuthzAction::NetworkCreate, "network")?;
                return Ok(ok("network", None));
            }
            ("POST", ["images", "load"])
            | ("POST", ["images", .., "tag" | "push"])
            | ("POST", ["images", "prune"])
            | ("DELETE", ["images", ..]) => {
                self.require(AuthzAction::Images, "image")?;
                return Ok(ok("image", None));
            }
            _ => {
                return Err(deny(
                    "request",
                    &format!("{} {}", r.method, r.path),
                    "not an action jobdock takes nor read-only inspection (default deny)",
                ));
            }
        };
        query(r, action, queries)?;
        no_body(action, req)?;
        Ok(ok(action, container))
    }

    /// An image from a registry jobs may use (`images.allowed_registries`), or a local image by
    /// its id (jobdock reads an image's files from a container of its id).
    fn image(&self, action: &str, field: &str, name: &str) -> Result<(), Denial> {
        let is_id = name
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if is_id || self.images.allowed_registries.is_empty() {
            return Ok(());
        }
        match crate::image::ImageRef::parse(name) {
            Ok(image) if self.images.allows(image.registry()) => Ok(()),
            Ok(image) => Err(deny(
                action,
                field,
                format!(
                    "registry {} is not in images.allowed_registries",
                    image.registry()
                ),
            )),
            Err(e) => Err(deny(action, field, format!("{name:?}: {e}"))),
        }
    }

    fn require(&self, a: AuthzAction, action: &str) -> Result<(), Denial> {
        if self.allowed(a) {
            Ok(())
        } else {
            Err(deny(
                action,
                "route",
                format!(
                    "refused unless the site allows it (authz.allow has no {:?})",
                    a.name()
                ),
            ))
        }
    }

    /// The body of a body-bearing request, decoded strictly; a missing body is refused (dockerd
    /// forwards none for bodies of 1 MiB or more, or not sent as JSON).
    fn body<T: serde::de::DeserializeOwned>(
        &self,
        action: &str,
        req: &ApiRequest<'_>,
    ) -> Result<T, Denial> {
        let bytes = req.body.filter(|b| !b.is_empty()).ok_or_else(|| {
            deny(
                action,
                "body",
                "the request has a body dockerd did not pass on (1 MiB or more, or not \
                 application/json): the plugin cannot see it, so refused",
            )
        })?;
        body::decode(bytes).map_err(|e| {
            deny(
                action,
                if e.path.is_empty() { "body" } else { &e.path },
                e.message,
            )
        })
    }

    fn create(&self, who: &Who, req: &ApiRequest<'_>) -> Result<(), Denial> {
        const A: &str = "container_create";
        let b: CreateBody = self.body(A, req)?;
        let no = |field: &str, rule: &str| Err(deny(A, field, rule));

        self.image(A, "Image", b.image.as_deref().unwrap_or_default())?;
        let (uid, gid) = numeric_user(A, "User", b.user.as_deref())?;
        let groups: Vec<u32> = b
            .host_config
            .as_ref()
            .and_then(|h| h.group_add.as_ref())
            .into_iter()
            .flatten()
            .map(|g| numeric_id(A, "HostConfig.GroupAdd", g))
            .collect::<Result<_, _>>()?;
        self.own_ids(A, who, uid, gid, &groups)?;

        let healthcheck = b.healthcheck.as_ref().and_then(|h| h.test.as_deref());
        if healthcheck != Some(&[HARDENING.healthcheck.to_string()][..]) {
            return no(
                "Healthcheck.Test",
                "must be [\"NONE\"]: dockerd would exec an image's HEALTHCHECK in the container",
            );
        }
        let Some(h) = &b.host_config else {
            return no(
                "HostConfig",
                "missing: every create must say CapDrop ALL, no-new-privileges and logging off",
            );
        };
        // One endpoint at most, the container's own network, with nothing set (the CLI's).
        let mode = h.network_mode.as_deref().unwrap_or_default();
        for (name, e) in b
            .networking_config
            .iter()
            .filter_map(|n| n.endpoints_config.as_ref())
            .flat_map(|e| &e.0)
        {
            if name != mode && !(name == "default" && mode.is_empty()) || !e.is_empty() {
                return no(
                    "NetworkingConfig.EndpointsConfig",
                    "must be empty or the NetworkMode's own endpoint with nothing set",
                );
            }
        }
        // Anonymous volumes (`Volumes`) are dockerd's fresh directories, as for jobdock's jobs.
        self.host_config(who, h)
    }

    fn host_config(&self, who: &Who, h: &HostConfig) -> Result<(), Denial> {
        const A: &str = "container_create";
        let no = |field: &str, rule: String| Err(deny(A, field, rule));
        if h.privileged == Some(true) {
            return no("HostConfig.Privileged", "must be false".into());
        }
        let drop = h.cap_drop.as_ref().map(|c| c.0.as_slice()).unwrap_or(&[]);
        if !drop
            .iter()
            .any(|c| c.eq_ignore_ascii_case(HARDENING.cap_drop))
        {
            return no(
                "HostConfig.CapDrop",
                format!("must include {:?}", HARDENING.cap_drop),
            );
        }
        for c in h.cap_add.iter().flat_map(|c| &c.0) {
            match c.parse::<Capability>() {
                Ok(cap) if self.cap_add.contains(&cap) => {}
                Ok(cap) => {
                    return no(
                        "HostConfig.CapAdd",
                        format!("{cap} is not in the site's allowlist (security.cap_add)"),
                    );
                }
                Err(_) => {
                    return no(
                        "HostConfig.CapAdd",
                        format!("{c:?} is not a capability the policy allows (security.cap_add)"),
                    );
                }
            }
        }
        let mut nnp = false;
        for o in h.security_opt.iter().flatten() {
            if matches!(
                o.as_str(),
                "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
            ) {
                nnp = true;
            } else if !self.security_opt.contains(o) {
                return no(
                    "HostConfig.SecurityOpt",
                    format!(
                        "{o:?} is not no-new-privileges or a site label (security.selinux_labels)"
                    ),
                );
            }
        }
        if !nnp {
            return no(
                "HostConfig.SecurityOpt",
                "must include no-new-privileges".into(),
            );
        }
        for (field, mode) in [
            ("HostConfig.PidMode", &h.pid_mode),
            ("HostConfig.UsernsMode", &h.userns_mode),
            ("HostConfig.UTSMode", &h.uts_mode),
            ("HostConfig.Cgroup", &h.cgroup),
            ("HostConfig.VolumeDriver", &h.volume_driver),
        ] {
            if mode.as_deref().is_some_and(|m| !m.is_empty()) {
                return no(
                    field,
                    format!(
                        "{:?}: must be empty (the container's own namespace, no driver)",
                        mode.as_deref().unwrap_or_default()
                    ),
                );
            }
        }
        if !matches!(h.cgroupns_mode.as_deref(), None | Some("" | "private")) {
            return no(
                "HostConfig.CgroupnsMode",
                "must be private (or empty)".into(),
            );
        }
        let network = match h.network_mode.as_deref() {
            None | Some("" | "default") => "bridge",
            Some(n) => n,
        };
        if !self.networks.iter().any(|n| n == network) {
            return no(
                "HostConfig.NetworkMode",
                format!("{network:?} is not in network.allowed"),
            );
        }
        let ipc = match h.ipc_mode.as_deref() {
            None | Some("") => "private",
            Some(i) => i,
        };
        if !self.ipc.iter().any(|i| i == ipc) {
            return no(
                "HostConfig.IpcMode",
                format!("{ipc:?} is not in ipc.allowed"),
            );
        }
        let log = h.log_config.as_ref();
        if log.and_then(|l| l.typ.as_deref()) != Some(HARDENING.log_driver) {
            return no(
                "HostConfig.LogConfig.Type",
                format!("must be {:?}", HARDENING.log_driver),
            );
        }
        if log
            .and_then(|l| l.config.as_ref())
            .is_some_and(|c| !c.is_empty())
        {
            return no("HostConfig.LogConfig.Config", "must be empty".into());
        }
        restart_policy(A, h.restart_policy.as_ref())?;
        for (field, empty) in [
            (
                "HostConfig.Binds",
                h.binds.as_ref().is_none_or(Vec::is_empty),
            ),
            (
                "HostConfig.VolumesFrom",
                h.volumes_from.as_ref().is_none_or(Vec::is_empty),
            ),
            (
                "HostConfig.Links",
                h.links.as_ref().is_none_or(Vec::is_empty),
            ),
            (
                "HostConfig.Sysctls",
                h.sysctls.as_ref().is_none_or(body::StrictMap::is_empty),
            ),
            (
                "HostConfig.StorageOpt",
                h.storage_opt.as_ref().is_none_or(body::StrictMap::is_empty),
            ),
        ] {
            if !empty {
                let what = match field {
                    "HostConfig.Binds" => {
                        let first = h
                            .binds
                            .as_ref()
                            .and_then(|b| b.first())
                            .map_or("", |b| b.split(':').next().unwrap_or_default());
                        format!(
                            "must be empty (source {first:?}): jobdock mounts with \
                             HostConfig.Mounts, from its staging directory only"
                        )
                    }
                    _ => "must be empty".into(),
                };
                return no(field, what);
            }
        }
        for (field, paths) in [
            ("HostConfig.MaskedPaths", &h.masked_paths),
            ("HostConfig.ReadonlyPaths", &h.readonly_paths),
        ] {
            if paths.is_some() {
                return no(
                    field,
                    "must be absent: dockerd's defaults keep /proc and /sys masked".into(),
                );
            }
        }
        if let Some(tmpfs) = &h.tmpfs
            && let Err(rule) = self.tmpfs_allowed(tmpfs)
        {
            return no("HostConfig.Tmpfs", rule);
        }
        if h.publish_all_ports == Some(true) {
            return no(
                "HostConfig.PublishAllPorts",
                "must be false: host ports only from ports.range".into(),
            );
        }
        if h.oom_score_adj.is_some_and(|o| o < 0) {
            return no("HostConfig.OomScoreAdj", "must not be negative".into());
        }
        if !matches!(h.runtime.as_deref(), None | Some("" | "runc")) {
            return no("HostConfig.Runtime", "must be runc (or empty)".into());
        }
        if !matches!(h.isolation.as_deref(), None | Some("" | "default")) {
            return no("HostConfig.Isolation", "must be empty".into());
        }
        if h.shm_size.is_some_and(|s| s > self.shm_size_max) {
            return no(
                "HostConfig.ShmSize",
                format!(
                    "more than limits.shm_size_max ({} bytes)",
                    self.shm_size_max
                ),
            );
        }
        for (port, bindings) in h.port_bindings.iter().flat_map(|p| &p.0) {
            for b in bindings.iter().flatten() {
                let host: Option<u16> = b.host_port.as_deref().and_then(|p| p.parse().ok());
                let inside =
                    matches!((host, self.ports), (Some(p), Some((lo, hi))) if p >= lo && p <= hi);
                if !inside {
                    return no(
                        "HostConfig.PortBindings",
                        format!(
                            "{port} -> host port {:?} is outside ports.range",
                            b.host_port.as_deref().unwrap_or_default()
                        ),
                    );
                }
            }
        }
        self.resources(
            A,
            h.devices.as_deref(),
            h.device_cgroup_rules.as_deref(),
            h.device_requests.as_deref(),
            h.cgroup_parent.as_deref(),
            h.oom_kill_disable,
        )?;
        for (i, m) in h.mounts.iter().flatten().enumerate() {
            self.mount(who, i, m)?;
        }
        Ok(())
    }

    /// The resources a create and an update share that matter: devices, cgroup rules, GPUs, the
    /// cgroup parent and the OOM killer.
    fn resources(
        &self,
        a: &str,
        devices: Option<&[DeviceMapping]>,
        rules: Option<&[String]>,
        requests: Option<&[DeviceRequest]>,
        cgroup_parent: Option<&str>,
        oom_kill_disable: Option<bool>,
    ) -> Result<(), Denial> {
        for d in devices.unwrap_or_default() {
            let host = d.path_on_host.as_deref().unwrap_or_default();
            if !self
                .device_globs
                .iter()
                .any(|g| crate::probe::DeviceGlob::parse(g).is_ok_and(|g| g.matches(host)))
                || !plain_absolute(host)
            {
                return Err(deny(
                    a,
                    "HostConfig.Devices",
                    format!("{host:?} is not in devices.paths"),
                ));
            }
            if d.path_in_container.as_deref().is_some_and(|c| c != host) {
                return Err(deny(
                    a,
                    "HostConfig.Devices",
                    format!("{host:?} must appear at its own path"),
                ));
            }
            let perms = d.cgroup_permissions.as_deref().unwrap_or_default();
            if !perms.chars().all(|c| "rwm".contains(c)) {
                return Err(deny(
                    a,
                    "HostConfig.Devices",
                    format!("{host:?}: permissions {perms:?} are not of rwm"),
                ));
            }
        }
        if rules.is_some_and(|r| !r.is_empty()) {
            return Err(deny(
                a,
                "HostConfig.DeviceCgroupRules",
                "must be empty: devices only from devices.paths",
            ));
        }
        for r in requests.unwrap_or_default() {
            // jobdock's shape: the nvidia driver, the GPUs by id, nothing else.
            let ok = r.driver.as_deref() == Some("nvidia")
                && r.count.unwrap_or(0) == 0
                && r.device_ids.as_ref().is_some_and(|d| !d.is_empty())
                && r.capabilities.as_deref() == Some(&[vec!["gpu".to_string()]][..])
                && r.options.as_ref().is_none_or(body::StrictMap::is_empty);
            if !ok {
                return Err(deny(
                    a,
                    "HostConfig.DeviceRequests",
                    "only GPUs by id (driver nvidia, capability gpu, no count or options)",
                ));
            }
        }
        if let Some(p) = cgroup_parent.filter(|p| !p.is_empty())
            && let Some(reason) = crate::config::cgroup_parent_problem(p)
        {
            return Err(deny(a, "HostConfig.CgroupParent", reason));
        }
        if oom_kill_disable == Some(true) {
            return Err(deny(a, "HostConfig.OomKillDisable", "must be false"));
        }
        Ok(())
    }

    /// A mount: a private bind from jobdock's state directory (a job's staged file or mount;
    /// not for a TLS user) or a site mount, read-only if the site says so.
    fn mount(&self, who: &Who, i: usize, m: &body::Mount) -> Result<(), Denial> {
        const A: &str = "container_create";
        let field = format!("HostConfig.Mounts[{i}]");
        let no = |rule: String| Err(deny(A, &field, rule));
        if m.typ.as_deref() != Some("bind") {
            return no(format!(
                "type {:?}: only binds (a volume's driver may bind any host path)",
                m.typ.as_deref().unwrap_or_default()
            ));
        }
        if m.volume_options.is_some() || m.tmpfs_options.is_some() {
            return no("a bind has no volume or tmpfs options".into());
        }
        let source = m.source.as_deref().unwrap_or_default();
        if !plain_absolute(source) {
            return no(format!(
                "source {source:?} is not a plain absolute path (no ., .. or //)"
            ));
        }
        let clean_source = Path::new(source);
        let staged = clean_source
            .strip_prefix(&self.state_dir)
            .is_ok_and(|rest| rest.components().count() >= 2);
        let site = self
            .site_mounts
            .iter()
            .find(|(s, _)| s == clean_source)
            .map(|(_, ro)| *ro);
        match (staged, site) {
            // What is staged there are other jobs' directories, reachable only through the
            // checks jobdock made for their users.
            (true, _) if matches!(who, Who::Tls(_)) => {
                return no(format!(
                    "source {source:?}: a TLS user's container gets no binds from jobdock's \
                     staging directory (only mounts.site)"
                ));
            }
            (true, _) => {}
            (false, Some(true)) if m.read_only != Some(true) => {
                return no(format!(
                    "site mount {source} must be read-only (mounts.site)"
                ));
            }
            (false, Some(_)) => {}
            (false, None) => {
                return no(format!(
                    "source {source:?} is neither in jobdock's staging directory ({}) nor a site \
                     mount (mounts.site)",
                    self.state_dir.display()
                ));
            }
        }
        let propagation = m
            .bind_options
            .as_ref()
            .and_then(|b| b.propagation.as_deref());
        if !matches!(propagation, None | Some("" | "rprivate" | "private")) {
            return no(format!(
                "propagation {:?}: must be private",
                propagation.unwrap_or_default()
            ));
        }
        Ok(())
    }

    fn exec(&self, who: &Who, req: &ApiRequest<'_>) -> Result<(), Denial> {
        const A: &str = "container_exec";
        let b: body::ExecBody = self.body(A, req)?;
        if b.privileged == Some(true) {
            return Err(deny(A, "Privileged", "must be false"));
        }
        let (uid, gid) = numeric_user(A, "User", b.user.as_deref())?;
        self.own_ids(A, who, uid, gid, &[])
    }

    /// A TLS user may only run as themself, with their own groups.
    fn own_ids(
        &self,
        a: &str,
        who: &Who,
        uid: u32,
        gid: u32,
        groups: &[u32],
    ) -> Result<(), Denial> {
        let Who::Tls(TlsUser {
            name,
            ids: Some(ids),
        }) = who
        else {
            return Ok(());
        };
        if uid != ids.uid {
            return Err(deny(
                a,
                "User",
                format!("uid {uid} is not the TLS user {name:?}'s ({})", ids.uid),
            ));
        }
        for g in std::iter::once(&gid).chain(groups) {
            if !ids.groups.contains(g) {
                return Err(deny(
                    a,
                    if *g == gid {
                        "User"
                    } else {
                        "HostConfig.GroupAdd"
                    },
                    format!("gid {g} is not a group of the TLS user {name:?}"),
                ));
            }
        }
        Ok(())
    }

    /// For the server's owner check: may `who` act on a container whose `Config.User` is `user`?
    pub fn owns(who: &Who, action: &str, user: &str) -> Result<(), Denial> {
        let Who::Tls(TlsUser {
            name,
            ids: Some(ids),
        }) = who
        else {
            return Ok(());
        };
        let uid = user.split(':').next().and_then(|u| u.parse::<u32>().ok());
        if uid == Some(ids.uid) {
            Ok(())
        } else {
            Err(deny(
                action,
                "container",
                format!(
                    "it runs as {user:?}, not as the TLS user {name:?} (uid {})",
                    ids.uid
                ),
            ))
        }
    }
}

fn restart_policy(a: &str, r: Option<&body::RestartPolicy>) -> Result<(), Denial> {
    let name = r.and_then(|r| r.name.as_deref()).unwrap_or_default();
    if name.is_empty() || name == HARDENING.restart {
        Ok(())
    } else {
        Err(deny(
            a,
            "HostConfig.RestartPolicy.Name",
            format!(
                "{name:?}: must be {:?} (started once, as checked)",
                HARDENING.restart
            ),
        ))
    }
}

/// `uid:gid`, both numeric (a name is resolved in the image's own files) and not root's.
fn numeric_user(a: &str, field: &str, user: Option<&str>) -> Result<(u32, u32), Denial> {
    let user = user.unwrap_or_default();
    let Some((u, g)) = user.split_once(':') else {
        return Err(deny(
            a,
            field,
            format!(
                "{user:?} must be numeric uid:gid (a name or a lone uid is resolved in the image)"
            ),
        ));
    };
    Ok((numeric_id(a, field, u)?, numeric_id(a, field, g)?))
}

/// A decimal id, as written (no sign, no leading zero), not 0.
fn numeric_id(a: &str, field: &str, id: &str) -> Result<u32, Denial> {
    let plain = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !id.starts_with('0');
    match id.parse::<u32>() {
        Ok(n) if plain => Ok(n),
        _ if id == "0" => Err(deny(a, field, "id 0 is root's: refused")),
        _ => Err(deny(
            a,
            field,
            format!("{id:?} is not a numeric, non-root id (names are resolved in the image)"),
        )),
    }
}

/// An absolute path written plainly: no empty, `.` or `..` component, no trailing slash (what
/// it names is what it says, lexically).
fn plain_absolute(path: &str) -> bool {
    path == "/"
        || path.len() > 1
            && path.starts_with('/')
            && path[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Refuses a query key not in `allowed`.
fn query(r: &Route, action: &str, allowed: &[&str]) -> Result<(), Denial> {
    match r.query.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some((k, _)) => Err(deny(
            action,
            &format!("query {k:?}"),
            "not a parameter the policy knows for this route",
        )),
    }
}

/// A request that must have no body has none: none passed on, and no header announcing one.
fn no_body(action: &str, req: &ApiRequest<'_>) -> Result<(), Denial> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    let announced =
        header("Transfer-Encoding").is_some() || header("Content-Length").is_some_and(|l| l != "0");
    if req.body.is_some_and(|b| !b.is_empty()) || announced {
        return Err(deny(
            action,
            "body",
            "this route takes no body (a pre-1.24 start's HostConfig, for one); refused",
        ));
    }
    Ok(())
}

/// A request's route as dockerd's router sees it: the path percent-decoded, the version prefix
/// removed (and checked), split into segments; the query decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: String,
    /// The decoded path without the version prefix, e.g. `/containers/create`.
    pub path: String,
    pub segments: Vec<String>,
    pub version: Option<(u32, u32)>,
    pub query: Vec<(String, String)>,
}

impl Route {
    pub fn parse(method: &str, uri: &str) -> Result<Route, Denial> {
        let bad = |rule: String| Err(deny("request", "RequestUri", rule));
        if !matches!(method, "GET" | "HEAD" | "POST" | "PUT" | "DELETE") {
            return Err(deny(
                "request",
                "RequestMethod",
                format!("{method:?} is not a method the policy knows"),
            ));
        }
        if uri.contains('#') {
            return bad(format!("{uri:?} has a fragment"));
        }
        let (raw_path, raw_query) = uri.split_once('?').unwrap_or((uri, ""));
        let decoded = match percent_encoding::percent_decode_str(raw_path).decode_utf8() {
            Ok(d) => d.into_owned(),
            Err(_) => return bad(format!("{uri:?} decodes to something not UTF-8")),
        };
        if decoded.contains('%') {
            return bad(format!(
                "{uri:?} is percent-encoded twice (the router decodes once)"
            ));
        }
        if !decoded.starts_with('/') || decoded.bytes().any(|b| !b.is_ascii_graphic()) {
            return bad(format!(
                "{uri:?}: the path must start with / and hold only printable ASCII"
            ));
        }
        let mut segments: Vec<String> = decoded[1..].split('/').map(str::to_string).collect();
        if segments
            .iter()
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return bad(format!(
                "{uri:?} has an empty, . or .. segment (the router would clean it)"
            ));
        }
        let mut version = None;
        if let Some(v) = segments[0].strip_prefix('v')
            && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        {
            let parsed = v
                .split_once('.')
                .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
                .filter(|_| v.matches('.').count() == 1);
            match parsed {
                Some(ver) if ver >= MIN_API => version = Some(ver),
                Some((a, b)) => {
                    return bad(format!(
                        "API version {a}.{b} is older than {}.{} (an old API's start may replace \
                         the checked HostConfig)",
                        MIN_API.0, MIN_API.1
                    ));
                }
                None => return bad(format!("{:?} is not an API version", segments[0])),
            }
            segments.remove(0);
            if segments.is_empty() {
                return bad(format!("{uri:?} names no route"));
            }
        }
        let mut query: Vec<(String, String)> = Vec::new();
        if !raw_query.is_empty() {
            if raw_query.contains(';') {
                return bad(
                    "the query holds ';' (Go refuses it, other parsers split on it)".into(),
                );
            }
            for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let dec = |s: &str| {
                    percent_encoding::percent_decode_str(&s.replace('+', " "))
                        .decode_utf8()
                        .map(|c| c.into_owned())
                };
                let (Ok(k), Ok(v)) = (dec(k), dec(v)) else {
                    return bad(format!("query {pair:?} decodes to something not UTF-8"));
                };
                if query.iter().any(|(seen, _)| *seen == k) {
                    return bad(format!(
                        "query key {k:?} occurs twice (which one counts depends on the parser)"
                    ));
                }
                query.push((k, v));
            }
        }
        Ok(Route {
            method: method.to_string(),
            path: format!("/{}", segments.join("/")),
            segments,
            version,
            query,
        })
    }
}
