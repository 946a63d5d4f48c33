//! A recording `Daemon` for tests (youki's `Syscall` double): it remembers every call in order and
//! fails the call named in `fail` (or every call with that name), so each step's failure path can
//! be checked for its error and its cleanup.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;

use crate::engine::auth::RegistryAuth;
use crate::engine::daemon::{
    Attached, Chunk, ContainerFile, ContainerState, Daemon, DaemonError, Effective, ErrorKind,
    Found, LocalImage, MountSeen, PathKind, Progress,
};
use crate::engine::host::{BindError, Host};
use crate::image::ImageRef;
use crate::plan::ContainerPlan;
use crate::probe::FileId;

pub(super) const ID: &str = "c0ffee";
/// The id of a container created only to read the image's files.
pub(super) const INERT: &str = "1e55";

/// The planner's inputs for LSF job 212 of jdalice (2001:2001, with `groups`), started by root on
/// `node1` with `env`, and the plan built from them: the fixture of the run and verify tests.
pub(super) fn lsf_plan(
    config: &crate::config::SiteConfig,
    env: &[(&str, &str)],
    groups: Vec<(u32, Option<String>)>,
    ctx: crate::job::JobContext,
    req: &crate::plan::Request,
    probe: &dyn crate::probe::HostProbe,
) -> ContainerPlan {
    let snap = crate::plan::Snapshot {
        env: crate::job::env_of(env),
        cwd: None,
        caller: crate::identity::Caller {
            real_uid: 0,
            real_gid: 0,
        },
        pid: 4321,
        hostname: "node1".into(),
        host_cpus: 2,
        stdin_is_tty: false,
        token: "0123456789abcdef01234567".into(),
        cgroup: None,
        cgroup_memory_limit: None,
        cpus_allowed: None,
        cgroup_cpus: None,
        rlimits: vec![crate::plan::Ulimit {
            name: "nofile",
            soft: 1024,
            hard: 4096,
        }],
        exe: None,
    };
    let ctx = crate::job::JobContext {
        job_id: Some("212".into()),
        scheduler: Some(crate::job::Scheduler::Lsf),
        ..ctx
    };
    let id = crate::identity::Identity {
        uid: 2001,
        gid: 2001,
        name: "jdalice".into(),
        home: "/home/jdalice".into(),
        group: Some("jdalice".into()),
        groups,
    };
    crate::plan::build(req, &snap, config, &ctx, &id, probe).unwrap()
}

pub(super) struct FakeDaemon {
    pub calls: RefCell<Vec<String>>,
    /// Calls (by name: "create", "start", ...) that fail, with the error they return.
    pub fail: BTreeMap<&'static str, DaemonError>,
    pub image_present: RefCell<bool>,
    /// The image's `RepoDigests` (none: built on the node).
    pub repo_digests: Vec<String>,
    /// What the registry answers for any of them, by the username asked with ("" for none);
    /// anyone else is refused ("unauthorized: authentication required").
    pub registry: BTreeMap<&'static str, Result<(), DaemonError>>,
    /// How long a pull takes (pulls in progress overlap in concurrent tests).
    pub pull_time: Duration,
    /// Output the job writes, in order.
    pub output: Vec<Chunk>,
    /// An error after the output (the daemon dying mid-stream).
    pub output_error: Option<DaemonError>,
    /// What the job's stdin received.
    pub stdin: SharedBuf,
    /// The job's exit status, or `None`: it runs until killed (exits 128+n on the first signal
    /// that ends it, like a shell; SIGKILL always).
    pub exit: Option<i64>,
    /// Signals that do not end the job (it traps them).
    pub trapped: Vec<&'static str>,
    pub oom_killed: bool,
    /// The node's images (`list_images`), those containers use, and those removed.
    pub node_images: Vec<crate::engine::images::NodeImage>,
    pub in_use: std::collections::BTreeSet<String>,
    pub removed_images: RefCell<Vec<String>>,
    /// The digest the registry says a tag names now (`registry_manifest` of a reference without
    /// a digest).
    pub tag_digest: Option<String>,
    /// An `oom` event logged for the job (one that reached dockerd after its exit, so
    /// `oom_killed` stays false).
    pub oom_event: bool,
    pub missing_paths: Vec<&'static str>,
    pub containers: Vec<Found>,
    /// Containers removed (`remove`): no longer listed, as with dockerd.
    pub removed: RefCell<Vec<String>>,
    /// Containers whose creation finishes only after the first removal of them (a jobdock killed
    /// while dockerd was still creating its container): listed again after it.
    pub created_late: RefCell<Vec<String>>,
    /// Files in the image (`read_file`), by path.
    pub image_files: BTreeMap<&'static str, ContainerFile>,
    /// What paths in the image are (`stat_path`); any other is missing.
    pub image_paths: BTreeMap<&'static str, PathKind>,
    /// Changes dockerd makes to what was asked (a daemon default, an authorization plugin).
    pub tamper: Option<fn(&mut Effective)>,
    /// The plan of the container created, as dockerd stores it.
    created: RefCell<Option<ContainerPlan>>,
    started: RefCell<bool>,
    ended: tokio::sync::watch::Sender<Option<i64>>,
}

/// The host pid of a fake job's init.
pub(super) const PID: u32 = 4242;

impl Default for FakeDaemon {
    fn default() -> Self {
        FakeDaemon {
            calls: RefCell::default(),
            fail: BTreeMap::new(),
            image_present: RefCell::new(true),
            repo_digests: Vec::new(),
            registry: BTreeMap::new(),
            pull_time: Duration::ZERO,
            output: Vec::new(),
            output_error: None,
            stdin: SharedBuf::default(),
            exit: Some(0),
            trapped: Vec::new(),
            oom_killed: false,
            oom_event: false,
            tag_digest: None,
            node_images: Vec::new(),
            in_use: std::collections::BTreeSet::new(),
            removed_images: RefCell::new(Vec::new()),
            missing_paths: Vec::new(),
            containers: Vec::new(),
            removed: RefCell::new(Vec::new()),
            created_late: RefCell::new(Vec::new()),
            image_files: BTreeMap::new(),
            image_paths: BTreeMap::new(),
            tamper: None,
            created: RefCell::new(None),
            started: RefCell::new(false),
            ended: tokio::sync::watch::channel(None).0,
        }
    }
}

impl FakeDaemon {
    pub(super) fn failing(step: &'static str, kind: ErrorKind, message: &str) -> Self {
        let mut d = FakeDaemon::default();
        d.fail.insert(step, DaemonError::new(kind, message));
        d
    }

    /// The plan of the container created, as dockerd got it.
    pub(super) fn created_plan(&self) -> Option<ContainerPlan> {
        self.created.borrow().clone()
    }

    pub(super) fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn call(&self, name: &'static str, detail: &str) -> Result<(), DaemonError> {
        let shown = if detail.is_empty() {
            name.to_string()
        } else {
            format!("{name} {detail}")
        };
        self.calls.borrow_mut().push(shown);
        match self.fail.get(name) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

fn signal_number(name: &str) -> i64 {
    match name {
        "SIGHUP" => 1,
        "SIGINT" => 2,
        "SIGQUIT" => 3,
        "SIGKILL" => 9,
        "SIGPIPE" => 13,
        "SIGUSR1" => 10,
        "SIGUSR2" => 12,
        "SIGTERM" => 15,
        _ => 0,
    }
}

impl Daemon for FakeDaemon {
    async fn image_exists(&self, image: &ImageRef) -> Result<Option<LocalImage>, DaemonError> {
        self.call("image_exists", &image.to_string())?;
        Ok(self.image_present.borrow().then(|| LocalImage {
            id: "sha256:0123".into(),
            repo_digests: self.repo_digests.clone(),
            entrypoint: Vec::new(),
        }))
    }

    async fn registry_manifest(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, DaemonError> {
        let who = auth.and_then(|a| a.username.clone()).unwrap_or_default();
        self.call("registry_manifest", format!("{image} {who}").trim_end())?;
        let answer = self.registry.get(who.as_str()).cloned().unwrap_or_else(|| {
            Err(DaemonError::new(
                ErrorKind::Status(401),
                "unauthorized: authentication required",
            ))
        });
        answer.map(|()| {
            image
                .digest
                .clone()
                .or_else(|| self.tag_digest.clone())
                .unwrap_or_default()
        })
    }

    async fn pull(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), DaemonError> {
        let who = auth.and_then(|a| a.username.clone()).unwrap_or_default();
        self.call("pull", format!("{image} {who}").trim_end())?;
        progress(&Progress {
            layer: Some("l1".into()),
            status: "Pull complete".into(),
            ..Default::default()
        });
        tokio::time::sleep(self.pull_time).await;
        *self.image_present.borrow_mut() = true;
        Ok(())
    }

    async fn create(&self, plan: &ContainerPlan) -> Result<String, DaemonError> {
        self.call("create", &plan.name)?;
        *self.created.borrow_mut() = Some(plan.clone());
        Ok(ID.into())
    }

    async fn path_exists(&self, _id: &str, path: &str) -> Result<bool, DaemonError> {
        self.call("path_exists", path)?;
        Ok(!self.missing_paths.contains(&path))
    }

    async fn create_inert(
        &self,
        _image: &str,
        name: &str,
        _labels: &BTreeMap<String, String>,
    ) -> Result<String, DaemonError> {
        self.call("create_inert", name)?;
        Ok(INERT.into())
    }

    async fn read_file(
        &self,
        _id: &str,
        path: &str,
        _max: u64,
    ) -> Result<Option<ContainerFile>, DaemonError> {
        self.call("read_file", path)?;
        Ok(self.image_files.get(path).cloned())
    }

    async fn stat_path(&self, _id: &str, path: &str) -> Result<Option<PathKind>, DaemonError> {
        self.call("stat_path", path)?;
        Ok(self.image_paths.get(path).cloned())
    }

    async fn attach(&self, _id: &str) -> Result<Attached, DaemonError> {
        self.call("attach", "")?;
        let mut items: Vec<Result<Chunk, DaemonError>> =
            self.output.iter().cloned().map(Ok).collect();
        items.extend(self.output_error.clone().map(Err));
        Ok(Attached {
            output: Box::pin(futures_util::stream::iter(items)),
            input: Box::pin(self.stdin.clone()),
        })
    }

    async fn start(&self, _id: &str) -> Result<(), DaemonError> {
        self.call("start", "")?;
        *self.started.borrow_mut() = true;
        if let Some(code) = self.exit {
            self.ended.send_replace(Some(code));
        }
        Ok(())
    }

    async fn wait(&self, _id: &str) -> Result<i64, DaemonError> {
        self.call("wait", "")?;
        let mut ended = self.ended.subscribe();
        let code = ended
            .wait_for(Option::is_some)
            .await
            .map_err(|e| DaemonError::new(ErrorKind::Stream, e.to_string()))?;
        Ok(code.expect("waited for Some"))
    }

    async fn kill(&self, _id: &str, signal: &str) -> Result<(), DaemonError> {
        self.call("kill", signal)?;
        if self.ended.borrow().is_some() {
            return Err(DaemonError::new(ErrorKind::Conflict, "is not running"));
        }
        if !self.trapped.contains(&signal) && signal_number(signal) > 0 {
            self.ended.send_replace(Some(128 + signal_number(signal)));
        }
        Ok(())
    }

    async fn pause(&self, _id: &str) -> Result<(), DaemonError> {
        self.call("pause", "")
    }

    async fn unpause(&self, _id: &str) -> Result<(), DaemonError> {
        self.call("unpause", "")
    }

    async fn resize(&self, _id: &str, rows: u16, cols: u16) -> Result<(), DaemonError> {
        self.call("resize", &format!("{rows}x{cols}"))
    }

    async fn inspect(&self, _id: &str) -> Result<ContainerState, DaemonError> {
        self.call("inspect", "")?;
        let mut effective = self
            .created
            .borrow()
            .as_ref()
            .map(stored)
            .unwrap_or_default();
        if let Some(tamper) = self.tamper {
            tamper(&mut effective);
        }
        let running = *self.started.borrow() && self.ended.borrow().is_none();
        Ok(ContainerState {
            running,
            pid: if running { PID } else { 0 },
            exit_code: self.ended.borrow().unwrap_or(0),
            oom_killed: self.oom_killed,
            path: "/usr/local/bin:/usr/bin:/bin".into(),
            effective,
            ..Default::default()
        })
    }

    async fn oom_event(&self, _id: &str, _late: Duration) -> Result<bool, DaemonError> {
        self.call("oom_event", "")?;
        Ok(self.oom_event)
    }

    async fn remove(&self, id: &str) -> Result<(), DaemonError> {
        self.call("remove", id)?;
        let mut late = self.created_late.borrow_mut();
        if let Some(i) = late.iter().position(|l| l == id) {
            // Not yet created when asked: dockerd answers "no such container", and creates it.
            late.remove(i);
            return Err(DaemonError::new(ErrorKind::NotFound, "No such container"));
        }
        self.removed.borrow_mut().push(id.to_string());
        Ok(())
    }

    async fn list_images(&self) -> Result<Vec<crate::engine::images::NodeImage>, DaemonError> {
        self.call("list_images", "")?;
        Ok(self
            .node_images
            .iter()
            .filter(|i| !self.removed_images.borrow().contains(&i.id))
            .cloned()
            .collect())
    }

    async fn images_in_use(&self) -> Result<std::collections::BTreeSet<String>, DaemonError> {
        self.call("images_in_use", "")?;
        Ok(self.in_use.clone())
    }

    async fn remove_image(&self, id: &str) -> Result<(), DaemonError> {
        self.call("remove_image", id)?;
        if self.in_use.contains(id) {
            return Err(DaemonError::new(
                ErrorKind::Conflict,
                "conflict: unable to delete (must be forced) - image is being used",
            ));
        }
        self.removed_images.borrow_mut().push(id.to_string());
        Ok(())
    }

    async fn list_by_label(&self, key: &str, value: &str) -> Result<Vec<Found>, DaemonError> {
        self.call("list_by_label", &format!("{key}={value}"))?;
        Ok(self
            .containers
            .iter()
            .filter(|c| c.labels.get(key).map(String::as_str) == Some(value))
            .filter(|c| !self.removed.borrow().contains(&c.id))
            .cloned()
            .collect())
    }
}

/// What dockerd stores for a container created from `plan`, as 20.10 reports it in an inspect.
pub(super) fn stored(plan: &ContainerPlan) -> Effective {
    // The create body, stored as dockerd 20.10 stores it and read back through the one mapping
    // the real inspect uses: a fake run fails when body.rs stops sending a field. dockerd adds its
    // own masked and read-only paths, the image's id, and reports mounts as it made them.
    let body = crate::engine::body::create_body(plan);
    let mut hc = body.host_config.clone().unwrap_or_default();
    hc.masked_paths = Some(vec!["/proc/kcore".into(), "/sys/firmware".into()]);
    hc.readonly_paths = Some(vec!["/proc/sys".into(), "/proc/sysrq-trigger".into()]);
    let mounts = hc
        .mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| MountSeen {
            typ: m.typ.map(|t| t.to_string()).unwrap_or_default(),
            source: m.source.unwrap_or_default(),
            destination: m.target.unwrap_or_default(),
            rw: !m.read_only.unwrap_or(false),
            propagation: m
                .bind_options
                .and_then(|b| b.propagation)
                .map_or_else(|| "rprivate".into(), |p| p.to_string()),
        })
        .collect();
    crate::engine::docker::effective(
        hc,
        crate::engine::docker::Seen {
            image: "sha256:0123".into(),
            user: body.user.clone().unwrap_or_default(),
            working_dir: body.working_dir.clone().unwrap_or_default(),
            healthcheck: body.healthcheck.and_then(|h| h.test).unwrap_or_default(),
            mounts,
        },
    )
}

/// The host as the fake job's: what paths name, the job's `/proc/<pid>/status`, and what the
/// container sees at its mount points. A missing entry is "No such file" (a job that has ended).
#[derive(Default)]
pub(super) struct FakeHost {
    pub stats: RefCell<BTreeMap<std::path::PathBuf, FileId>>,
    /// Once this path is staged, it names this file: a user swapping a directory once jobdock
    /// has pinned it.
    pub swap_after_bind: Option<(std::path::PathBuf, FileId)>,
    pub status: Option<String>,
    pub in_root: BTreeMap<std::path::PathBuf, FileId>,
    /// Staging mounts in place (where dockerd sees them): path -> what it shows.
    pub staged: RefCell<BTreeMap<std::path::PathBuf, FileId>>,
    /// What dockerd sees at a path where it differs from what jobdock sees (another mount
    /// namespace: a mount made only in jobdock's, a directory that is another one there).
    pub daemon_sees: BTreeMap<std::path::PathBuf, FileId>,
    /// Why staging where dockerd sees it is impossible (its namespace unknown or unreachable).
    pub namespace_error: Option<String>,
    /// Mounts detached, in order.
    pub unbound: RefCell<Vec<std::path::PathBuf>>,
}

impl Host for FakeHost {
    fn stat(&self, path: &std::path::Path) -> std::io::Result<FileId> {
        let staged = self.staged.borrow().get(path).copied();
        staged
            .or_else(|| self.stats.borrow().get(path).copied())
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }

    fn daemon_stat(&self, path: &std::path::Path) -> std::io::Result<FileId> {
        match self.daemon_sees.get(path) {
            Some(id) => Ok(*id),
            None => self.stat(path),
        }
    }

    fn status(&self, _pid: u32) -> std::io::Result<String> {
        self.status
            .clone()
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }

    fn stat_in_root(&self, _pid: u32, target: &std::path::Path) -> std::io::Result<FileId> {
        self.in_root
            .get(target)
            .copied()
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }

    fn alive(&self, _pid: u32) -> bool {
        self.status.is_some()
    }

    /// Mounts (in the fake's tables): `at` names what `source` does, if that is `pin`.
    fn bind_pinned(
        &self,
        source: &std::path::Path,
        pin: FileId,
        at: &std::path::Path,
    ) -> Result<(), BindError> {
        if let Some(e) = &self.namespace_error {
            return Err(BindError::Namespace(e.clone()));
        }
        let now = self.stats.borrow().get(source).copied();
        match now {
            Some(now) if now == pin => {
                self.staged.borrow_mut().insert(at.to_path_buf(), pin);
                if let Some((path, id)) = self.swap_after_bind.as_ref().filter(|(p, _)| p == source)
                {
                    self.stats.borrow_mut().insert(path.clone(), *id);
                }
                Ok(())
            }
            Some(now) => Err(BindError::Changed(format!("it names {now}, was {pin}"))),
            None => Err(BindError::Changed("No such file or directory".into())),
        }
    }

    fn unbind(&self, at: &std::path::Path) -> std::io::Result<()> {
        self.unbound.borrow_mut().push(at.to_path_buf());
        match self.staged.borrow_mut().remove(at) {
            Some(_) => Ok(()),
            None => Err(std::io::ErrorKind::InvalidInput.into()),
        }
    }
}

/// An `AsyncWrite` whose bytes a test can read afterwards.
#[derive(Clone, Default)]
pub(super) struct SharedBuf {
    pub bytes: Arc<Mutex<Vec<u8>>>,
    pub closed: Arc<Mutex<bool>>,
}

impl SharedBuf {
    pub(super) fn contents(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

impl AsyncWrite for SharedBuf {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.bytes.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        *self.closed.lock().unwrap() = true;
        Poll::Ready(Ok(()))
    }
}

pub(super) fn chunk_out(s: &str) -> Chunk {
    Chunk::Stdout(Bytes::copy_from_slice(s.as_bytes()))
}

pub(super) fn chunk_err(s: &str) -> Chunk {
    Chunk::Stderr(Bytes::copy_from_slice(s.as_bytes()))
}

/// An `AsyncWrite` whose reader went away.
pub(super) struct BrokenPipe;

impl AsyncWrite for BrokenPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
