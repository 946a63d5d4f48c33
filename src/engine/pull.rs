//! Getting the job's image onto the node under the site's pull policy: `missing` never contacts a
//! registry for an image that is present; concurrent jobs needing the same missing image share
//! one pull through a node-local lock, which no stopped or stuck holder can keep from the others;
//! transient registry failures are retried a bounded number of times with backoff. Progress is
//! shown on a terminal and logged sparingly otherwise. Nothing the user controls runs here (their
//! credentials were read before): only their stderr, which may block, and then the heartbeat
//! stops and nobody waits.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::PullPolicy;
use crate::engine::EngineError;
use crate::engine::auth::RegistryAuth;
use crate::engine::daemon::{Daemon, DaemonError, ErrorKind, LocalImage, Progress};
use crate::engine::files;
use crate::image::ImageRef;
use crate::units::ByteSize;

/// Pull attempts before giving up on a transient failure.
const ATTEMPTS: u32 = 4;
/// The first backoff; doubled after each failed attempt (2 s, 4 s, 8 s).
pub(super) const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// How often waiting for another job's pull is polled.
const LOCK_POLL: Duration = Duration::from_millis(200);
/// How often the holder of a pull lock shows it is at work.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A holder that has not shown it is at work for this long is stuck.
const STALE: Duration = Duration::from_secs(15);
/// How often a pull in progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(15);

pub(super) struct PullSettings<'a> {
    pub policy: PullPolicy,
    pub auth: Option<&'a RegistryAuth>,
    /// Where the lock files live (`<state_dir>/locks/`).
    pub state_dir: &'a Path,
    /// Bounds the whole pull, waiting for another job's pull included.
    pub timeout: Duration,
    /// Show a live progress line (stderr is a terminal).
    pub live: bool,
    /// Backoff before the first retry (tests shorten it).
    pub backoff: Duration,
}

/// Makes sure `image` is on the node, pulling it if the policy says so; returns it as it is there.
pub(super) async fn ensure_image<D: Daemon>(
    d: &D,
    image: &ImageRef,
    s: &PullSettings<'_>,
) -> Result<LocalImage, EngineError> {
    let local = || async {
        d.image_exists(image)
            .await
            .map_err(|source| EngineError::daemon("looking for the image", source))
    };
    match s.policy {
        PullPolicy::Never => {
            return local().await?.ok_or_else(|| EngineError::ImageMissing {
                image: image.to_string(),
            });
        }
        PullPolicy::Missing => {
            if let Some(found) = local().await? {
                return Ok(found);
            }
        }
        PullPolicy::Newer => {
            if let Some(found) = local().await?
                && current(d, image, &found, s).await
            {
                return Ok(found);
            }
        }
        PullPolicy::Always => {}
    }
    let deadline = Instant::now() + s.timeout;
    let lock = match lock(d, image, s, deadline).await? {
        Locked::Ours(lock) => Some(lock),
        Locked::Present(found) => return Ok(found),
        Locked::Without => None,
    };
    if s.policy == PullPolicy::Missing
        && lock.is_some()
        && let Some(found) = local().await?
    {
        tracing::info!("{image} was pulled by another job meanwhile");
        return Ok(found);
    }
    // The holder's heartbeat, for as long as it pulls: a task of its own on this thread, so it
    // stops when jobdock cannot go on (stopped, or blocked writing to its stderr).
    let heart = lock.as_ref().map(|l| {
        let heart = l.heart();
        AbortOnDrop(tokio::spawn(async move {
            let mut every = tokio::time::interval(HEARTBEAT);
            loop {
                every.tick().await;
                heart.beat();
            }
        }))
    });
    pull_with_retries(d, image, s, deadline).await?;
    drop(heart);
    drop(lock);
    local().await?.ok_or_else(|| EngineError::Pull {
        image: image.to_string(),
        reason: "the pull succeeded, but the image is not on the node".into(),
    })
}

/// Policy `newer`: whether the image on the node is the manifest its tag names in the registry now
/// (one manifest request, no layers). An image named by digest always is. A registry that cannot
/// be asked leaves the node's image, with a warning: a job is not failed for a check of freshness.
async fn current<D: Daemon>(
    d: &D,
    image: &ImageRef,
    local: &LocalImage,
    s: &PullSettings<'_>,
) -> bool {
    if image.digest.is_some() {
        return true;
    }
    match d.registry_manifest(image, s.auth).await {
        Ok(digest) => {
            let on_node = local.repo_digests.iter().any(|r| {
                ImageRef::parse(r)
                    .is_ok_and(|r| r.same_repository(image) && r.digest.as_ref() == Some(&digest))
            });
            if on_node {
                tracing::info!("{image} on the node is the registry's {digest}");
                true
            } else {
                crate::logging::notice(&format!(
                    "{image}: the registry's tag names {digest} now, not the image on this node"
                ));
                false
            }
        }
        Err(e) => {
            tracing::warn!(
                "{image}: could not ask the registry whether the tag changed ({e}); running the \
                 image on this node"
            );
            true
        }
    }
}

/// How the wait for the node-wide pull lock ended.
enum Locked {
    /// This job pulls.
    Ours(files::Lock),
    /// The image arrived meanwhile (policy `missing`).
    Present(LocalImage),
    /// The holder is stopped or stuck, or the image is present and must be pulled again
    /// (`always`): pull without the lock. dockerd shares the layers of concurrent pulls.
    Without,
}

/// Takes the node-wide lock for `image`, waiting for another job's pull until `deadline` — but
/// never for an image that is on the node, nor for a holder that is stopped or has not shown a
/// sign of life for `STALE`.
async fn lock<D: Daemon>(
    d: &D,
    image: &ImageRef,
    s: &PullSettings<'_>,
    deadline: Instant,
) -> Result<Locked, EngineError> {
    let name = format!("pull-{:016x}.lock", fnv1a(image.to_string().as_bytes()));
    let mut told = false;
    loop {
        let held = match files::try_lock(s.state_dir, &name)? {
            Ok(lock) => return Ok(Locked::Ours(lock)),
            Err(held) => held,
        };
        if let Some(found) = d
            .image_exists(image)
            .await
            .map_err(|source| EngineError::daemon("looking for the image", source))?
        {
            if s.policy == PullPolicy::Missing {
                tracing::info!("{image} was pulled by another job meanwhile");
                return Ok(Locked::Present(found));
            }
            return Ok(Locked::Without);
        }
        if let Some(why) = stuck(&held) {
            tracing::warn!("another job's pull of {image} {why}; pulling without waiting for it");
            return Ok(Locked::Without);
        }
        if !told {
            tracing::info!("waiting for another job's pull of {image}");
            told = true;
        }
        if Instant::now() + LOCK_POLL > deadline {
            return Err(EngineError::Pull {
                image: image.to_string(),
                reason: format!(
                    "another job's pull did not finish within {}s (engine.pull_timeout_secs)",
                    s.timeout.as_secs()
                ),
            });
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

/// Why the holder of a pull lock is not worth waiting for, if it is not.
fn stuck(held: &files::Held) -> Option<String> {
    if let Some(holder) = held.holder.filter(files::Creator::stopped) {
        return Some(format!("is stopped (pid {})", holder.pid));
    }
    let age = held
        .beat
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())?;
    (age > STALE).then(|| format!("has shown no progress for {}s", age.as_secs()))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn pull_with_retries<D: Daemon>(
    d: &D,
    image: &ImageRef,
    s: &PullSettings<'_>,
    deadline: Instant,
) -> Result<(), EngineError> {
    let failed = |reason: String| EngineError::Pull {
        image: image.to_string(),
        reason,
    };
    let mut backoff = s.backoff;
    for attempt in 1..=ATTEMPTS {
        let mut shown = Shown::new(image, s.live);
        let mut update = |p: &Progress| shown.update(p);
        let result = tokio::time::timeout_at(deadline, d.pull(image, s.auth, &mut update)).await;
        shown.finish(matches!(result, Ok(Ok(()))));
        match result {
            Ok(Ok(())) => return Ok(()),
            Err(_) => {
                return Err(failed(format!(
                    "not done within {}s (engine.pull_timeout_secs)",
                    s.timeout.as_secs()
                )));
            }
            Ok(Err(e)) if attempt < ATTEMPTS && transient(&e) => {
                // dockerd reports a registry's 429 as a message, without its Retry-After header,
                // so the backoff is jobdock's own.
                if Instant::now() + backoff > deadline {
                    return Err(failed(e.message));
                }
                tracing::warn!(
                    "pulling {image} failed ({e}); retry {attempt} of {} in {}s",
                    ATTEMPTS - 1,
                    backoff.as_secs()
                );
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Ok(Err(e)) if rejected_by_registry(&e) => {
                return Err(EngineError::PullRejected {
                    image: image.to_string(),
                    reason: e.message,
                });
            }
            Ok(Err(e)) => return Err(failed(e.message)),
        }
    }
    unreachable!("the last attempt returns")
}

/// Whether the registry rejected the pull for something the job names: an image or tag it does
/// not have, a reference it cannot parse, credentials it does not accept. Retrying, or requeueing
/// the job on another node, fails the same way.
pub(super) fn rejected_by_registry(e: &DaemonError) -> bool {
    let m = e.message.to_ascii_lowercase();
    [
        "manifest unknown",
        "name unknown",
        "unauthorized",
        "denied",
        "repository does not exist",
        "invalid reference",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Whether a failed pull may succeed if tried again: rate limits, server errors, timeouts and
/// dropped connections, but not a missing image, rejected credentials or a full disk.
pub(super) fn transient(e: &DaemonError) -> bool {
    let m = e.message.to_ascii_lowercase();
    let permanent = [
        "not found",
        "manifest unknown",
        "unauthorized",
        "denied",
        "no space left",
        "invalid reference",
    ];
    if permanent.iter().any(|p| m.contains(p)) {
        return false;
    }
    let passing = [
        "toomanyrequests",
        "too many requests",
        " 429",
        " 500",
        " 502",
        " 503",
        " 504",
        "timeout",
        "timed out",
        "connection reset",
        "connection refused",
        "unexpected eof",
        "tls handshake",
    ];
    match e.kind {
        ErrorKind::Status(429) | ErrorKind::Timeout => true,
        ErrorKind::Status(code) if (500..600).contains(&code) => true,
        ErrorKind::Stream => passing.iter().any(|p| m.contains(p)),
        _ => false,
    }
}

/// FNV-1a: a stable name for an image's lock file, the same in every jobdock build.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// What the user sees of a pull, so a long one never looks like a hung job: a line when it
/// starts and one when it ends (with the digest and the time), at the default level; between
/// them, on a terminal a bar per layer (bytes of bytes, then "already exists", "extracting" or
/// "done"), otherwise a summary line every `LOG_EVERY`.
struct Shown<'a> {
    image: &'a ImageRef,
    live: bool,
    started: Instant,
    last: Instant,
    layers: BTreeMap<String, Layer>,
    /// The manifest digest dockerd reports at the end (`Digest: sha256:...`).
    digest: Option<String>,
    /// The terminal's bars, one per layer (live only).
    bars: BTreeMap<String, indicatif::ProgressBar>,
    multi: Option<indicatif::MultiProgress>,
}

/// One layer of a pull, as dockerd last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Layer {
    current: u64,
    total: u64,
    finished: bool,
    /// What is happening to it, as the bar says.
    doing: &'static str,
}

impl<'a> Shown<'a> {
    fn new(image: &'a ImageRef, live: bool) -> Self {
        crate::logging::notice(&format!("pulling {image}"));
        let now = Instant::now();
        Shown {
            image,
            live,
            started: now,
            last: now,
            layers: BTreeMap::new(),
            digest: None,
            bars: BTreeMap::new(),
            multi: live.then(|| {
                indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
            }),
        }
    }

    fn update(&mut self, p: &Progress) {
        if let Some(digest) = p.status.strip_prefix("Digest: ") {
            self.digest = Some(digest.trim().to_string());
        }
        // "Pulling from <repo>" and digest lines carry an id too, but are not layers.
        let doing = match p.status.as_str() {
            "Pulling fs layer" | "Waiting" => "waiting",
            "Downloading" => "downloading",
            "Verifying Checksum" | "Download complete" => "downloaded",
            "Extracting" => "extracting",
            "Pull complete" => "done",
            "Already exists" => "already exists",
            _ => "",
        };
        if let Some(layer) = p.layer.as_ref().filter(|_| !doing.is_empty()) {
            let entry = self.layers.entry(layer.clone()).or_default();
            entry.doing = doing;
            match doing {
                // Extraction reports its own bytes of the same layer: shown, not added.
                "downloading" | "extracting" => {
                    entry.current = p.current.unwrap_or(entry.current);
                    entry.total = p.total.unwrap_or(entry.total);
                }
                "downloaded" => entry.current = entry.total,
                "done" | "already exists" => {
                    entry.current = entry.total;
                    entry.finished = true;
                }
                _ => {}
            }
            if self.live {
                self.draw(layer);
            }
        }
        if !self.live && self.last.elapsed() >= LOG_EVERY {
            self.last = Instant::now();
            crate::logging::notice(&format!("pulling {}: {}", self.image, self.summary()));
        }
    }

    fn summary(&self) -> String {
        let done = self.layers.values().filter(|l| l.finished).count();
        let (current, total) = self.layers.values().fold((0u64, 0u64), |(c, t), l| {
            (c.saturating_add(l.current), t.saturating_add(l.total))
        });
        format!(
            "{done}/{} layers, {} of {}",
            self.layers.len(),
            ByteSize::shown(current),
            ByteSize::shown(total)
        )
    }

    /// Redraws `layer`'s bar, creating it on the layer's first event.
    fn draw(&mut self, layer: &str) {
        let (Some(multi), Some(l)) = (&self.multi, self.layers.get(layer)) else {
            return;
        };
        let bar = self.bars.entry(layer.to_string()).or_insert_with(|| {
            let style = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar = multi.add(indicatif::ProgressBar::new(0).with_style(style));
            let repository = self.image.repository();
            bar.set_prefix(format!(
                "{} {}",
                repository.rsplit('/').next().unwrap_or_default(),
                layer.chars().take(12).collect::<String>()
            ));
            bar
        });
        bar.set_length(l.total);
        bar.set_position(l.current);
        if l.finished {
            if !bar.is_finished() {
                bar.finish_with_message(l.doing);
            }
        } else {
            bar.set_message(l.doing);
        }
    }

    /// Closes the bars and says how the pull ended (`ok`: it did).
    fn finish(&mut self, ok: bool) {
        for bar in self.bars.values() {
            bar.finish();
        }
        if ok {
            let total = self
                .layers
                .values()
                .filter(|l| l.doing != "already exists")
                .fold(0u64, |t, l| t.saturating_add(l.total));
            crate::logging::notice(&format!(
                "pulled {}{} in {:.1}s ({} downloaded)",
                self.image,
                self.digest
                    .as_ref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default(),
                self.started.elapsed().as_secs_f64(),
                ByteSize::shown(total)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_told_from_permanent_ones() {
        let cases = [
            ("rate limit status", ErrorKind::Status(429), "x", true),
            ("server error", ErrorKind::Status(503), "bad gateway", true),
            ("request timeout", ErrorKind::Timeout, "Timeout error", true),
            (
                "rate limit in stream",
                ErrorKind::Stream,
                "toomanyrequests: You have reached your pull rate limit",
                true,
            ),
            (
                "registry 503 in stream",
                ErrorKind::Stream,
                "received unexpected HTTP status: 503 Service Unavailable",
                true,
            ),
            (
                "reset",
                ErrorKind::Stream,
                "read: connection reset by peer",
                true,
            ),
            (
                "missing image as 500",
                ErrorKind::Status(500),
                "manifest unknown: manifest unknown",
                false,
            ),
            (
                "not found",
                ErrorKind::NotFound,
                "pull access denied for x, repository does not exist",
                false,
            ),
            (
                "denied",
                ErrorKind::Status(500),
                "unauthorized: authentication required",
                false,
            ),
            (
                "disk",
                ErrorKind::Stream,
                "write /var/lib/docker/x: no space left on device",
                false,
            ),
            (
                "daemon gone",
                ErrorKind::Unreachable,
                "connection refused",
                false,
            ),
            (
                "other stream error",
                ErrorKind::Stream,
                "invalid tar header",
                false,
            ),
        ];
        for (name, kind, message, want) in cases {
            assert_eq!(transient(&DaemonError::new(kind, message)), want, "{name}");
        }
    }

    /// The registry's rejections that are the job's to fix, as dockerd 20.10 words them.
    #[test]
    fn refusals_of_the_job_are_told_from_the_nodes_trouble() {
        let cases = [
            (
                "manifest for 127.0.0.1:5000/x:1 not found: manifest unknown: manifest unknown",
                true,
            ),
            (
                "pull access denied for x, repository does not exist or may require 'docker login'",
                true,
            ),
            ("unauthorized: authentication required", true),
            ("name unknown: repository name not known to registry", true),
            ("invalid reference format", true),
            (
                "toomanyrequests: You have reached your pull rate limit",
                false,
            ),
            ("write /var/lib/docker/x: no space left on device", false),
            ("dial tcp: lookup registry.example: no such host", false),
            (
                "received unexpected HTTP status: 503 Service Unavailable",
                false,
            ),
        ];
        for (message, want) in cases {
            let e = DaemonError::new(ErrorKind::Stream, message);
            assert_eq!(rejected_by_registry(&e), want, "{message}");
        }
    }

    #[test]
    fn lock_names_are_stable_and_distinct() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_ne!(fnv1a(b"alpine:latest"), fnv1a(b"alpine:3.19"));
    }

    #[test]
    fn progress_adds_up_layers() {
        let image = ImageRef::parse("x").unwrap();
        let mut shown = Shown::new(&image, false);
        let p = |layer: &str, status: &str, current, total| Progress {
            layer: Some(layer.into()),
            status: status.into(),
            current,
            total,
        };
        shown.update(&p("a", "Pulling fs layer", None, None));
        shown.update(&p("b", "Already exists", None, None));
        shown.update(&p("a", "Downloading", Some(1024), Some(4096)));
        assert_eq!(shown.summary(), "1/2 layers, 1.0 KiB of 4.0 KiB");
        shown.update(&p("a", "Pull complete", None, None));
        assert_eq!(shown.summary(), "2/2 layers, 4.0 KiB of 4.0 KiB");
    }

    #[test]
    fn a_terminal_gets_a_bar_per_layer() {
        let image = ImageRef::parse("x").unwrap();
        let mut shown = Shown::new(&image, true);
        shown.multi = Some(indicatif::MultiProgress::with_draw_target(
            indicatif::ProgressDrawTarget::hidden(),
        ));
        let p = |layer: &str, status: &str, current, total| Progress {
            layer: Some(layer.into()),
            status: status.into(),
            current,
            total,
        };
        shown.update(&p("latest", "Pulling from lab/x", None, None));
        shown.update(&p("aaaa", "Downloading", Some(1024), Some(4096)));
        shown.update(&p("bbbb", "Downloading", Some(10), Some(20)));
        assert_eq!(
            shown.bars.keys().collect::<Vec<_>>(),
            ["aaaa", "bbbb"],
            "no bar for the repository line"
        );
        assert_eq!(
            (shown.bars["aaaa"].position(), shown.bars["aaaa"].length()),
            (1024, Some(4096))
        );
        assert_eq!(
            shown.bars["aaaa"].prefix(),
            "x aaaa",
            "the bar names the image"
        );
        shown.update(&p("aaaa", "Extracting", Some(512), Some(4096)));
        assert_eq!(shown.bars["aaaa"].message(), "extracting");
        assert_eq!(shown.bars["aaaa"].position(), 512);
        shown.update(&p("aaaa", "Pull complete", None, None));
        assert!(shown.bars["aaaa"].is_finished() && !shown.bars["bbbb"].is_finished());
        assert_eq!(shown.bars["aaaa"].position(), 4096);
        assert_eq!(shown.bars["aaaa"].message(), "done");
        // A layer the node has: said so, not `0 B/0 B done`.
        shown.update(&p("cccc", "Already exists", None, None));
        assert!(shown.bars["cccc"].is_finished());
        assert_eq!(shown.bars["cccc"].message(), "already exists");
        shown.update(&Progress {
            layer: None,
            status: "Digest: sha256:abc".into(),
            current: None,
            total: None,
        });
        assert_eq!(shown.digest.as_deref(), Some("sha256:abc"));
    }
}
