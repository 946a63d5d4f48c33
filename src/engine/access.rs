//! Private images stay private. dockerd keeps one image store for the whole node, so once one
//! user has pulled an image with their registry credentials, anyone could name it. Before a job
//! runs an image that came from a registry (it has `RepoDigests`), jobdock asks that registry,
//! through dockerd and as the job user (their own credentials or none), for the very manifest the
//! local image was pulled as, and runs the container from that digest: what runs is what the
//! registry confirmed. An image built or loaded on the node (no `RepoDigests`) needs no check.
//!
//! Verdicts are cached in `<state_dir>/access/` (root's alone): a digest the registry gives to
//! anyone is public for `PUBLIC_TTL`, so public images cost nothing after the first job; one it
//! gives only with a user's credentials is that user's for `USER_TTL`. Refusals are never cached.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::engine::EngineError;
use crate::engine::auth::Credentials;
use crate::engine::daemon::{Daemon, DaemonError, ErrorKind, LocalImage};
use crate::engine::files;
use crate::image::ImageRef;

/// How long a digest that a registry gave without credentials counts as public.
pub(super) const PUBLIC_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a digest that a registry gave a user with their credentials stays theirs.
pub(super) const USER_TTL: Duration = Duration::from_secs(5 * 60);
/// The cache's directory under the state directory.
const DIR: &str = "access";

pub(super) struct AccessSettings<'a> {
    /// The job user's uid.
    pub uid: u32,
    pub credentials: &'a Credentials,
    /// Where the verdicts are kept (`<state_dir>/access/`).
    pub state_dir: &'a Path,
}

/// What a registry said about one of the image's digests.
enum Answer {
    Gives,
    Rejects(String),
    Unreachable(String),
}

/// Checks that the job user may have `local` (the image `image` names on this node). Returns the
/// digest reference the registry confirmed, which the container must be created from, or `None`
/// for an image that came from no registry.
pub(super) async fn check<D: Daemon>(
    d: &D,
    image: &ImageRef,
    local: &LocalImage,
    s: &AccessSettings<'_>,
) -> Result<Option<ImageRef>, EngineError> {
    let mut candidates: Vec<ImageRef> = local
        .repo_digests
        .iter()
        .filter_map(|r| match ImageRef::parse(r) {
            Ok(r) if r.digest.is_some() => Some(r),
            _ => {
                tracing::warn!("image {image}: ignoring the repo digest {r:?}");
                None
            }
        })
        .collect();
    if candidates.is_empty() {
        if !local.repo_digests.is_empty() {
            return Err(EngineError::Internal(format!(
                "image {image}: none of its repo digests {:?} can be read",
                local.repo_digests
            )));
        }
        return Ok(None);
    }
    // The repository the user named first: it is the one they expect to be asked.
    candidates.sort_by_key(|c| c.repository() != image.repository());
    let cache = Cache::new(s.state_dir);
    let now = SystemTime::now();
    if let Some(hit) = candidates.iter().find(|c| {
        cache.fresh(&public_key(c), PUBLIC_TTL, now)
            || cache.fresh(&user_key(s.uid, c), USER_TTL, now)
    }) {
        return Ok(Some(hit.clone()));
    }
    let mut rejected = Vec::new();
    let mut unreachable = Vec::new();
    for candidate in &candidates {
        match ask(d, candidate, None).await {
            Answer::Gives => {
                cache.record(&public_key(candidate), now);
                return Ok(Some(candidate.clone()));
            }
            Answer::Unreachable(why) => {
                unreachable.push((candidate.registry().to_string(), why));
                continue;
            }
            Answer::Rejects(why) => {
                let Some(auth) = s.credentials.for_registry(candidate.registry()) else {
                    rejected.push((candidate.registry().to_string(), why));
                    continue;
                };
                match ask(d, candidate, Some(auth)).await {
                    Answer::Gives => {
                        cache.record(&user_key(s.uid, candidate), now);
                        return Ok(Some(candidate.clone()));
                    }
                    Answer::Rejects(why) => rejected.push((candidate.registry().to_string(), why)),
                    Answer::Unreachable(why) => {
                        unreachable.push((candidate.registry().to_string(), why));
                    }
                }
            }
        }
    }
    if let Some((registry, reason)) = unreachable.into_iter().next() {
        return Err(EngineError::AccessUnknown {
            image: image.to_string(),
            registry,
            reason,
        });
    }
    let (registry, reason) = rejected
        .into_iter()
        .next()
        .expect("every candidate was rejected or unreachable");
    Err(EngineError::PrivateImage {
        image: image.to_string(),
        registry,
        uid: s.uid,
        reason,
    })
}

async fn ask<D: Daemon>(
    d: &D,
    candidate: &ImageRef,
    auth: Option<&crate::engine::auth::RegistryAuth>,
) -> Answer {
    match d.registry_manifest(candidate, auth).await {
        Ok(digest) if Some(&digest) == candidate.digest.as_ref() => Answer::Gives,
        Ok(digest) => Answer::Rejects(format!(
            "it answered with the manifest {digest}, not {}",
            candidate.digest.as_deref().unwrap_or("?")
        )),
        Err(e) if rejection(&e) => Answer::Rejects(e.message),
        Err(e) => Answer::Unreachable(e.message),
    }
}

/// Whether the registry's answer says no (to these credentials, or to anyone) rather than that
/// it could not be asked. dockerd reports a missing login as a 500 "no basic auth credentials".
pub(super) fn rejection(e: &DaemonError) -> bool {
    if matches!(
        e.kind,
        ErrorKind::NotFound | ErrorKind::Status(401) | ErrorKind::Status(403)
    ) {
        return true;
    }
    let m = e.message.to_ascii_lowercase();
    [
        "unauthorized",
        "denied",
        "no basic auth credentials",
        "authentication required",
        "manifest unknown",
        "not found",
        "name unknown",
    ]
    .iter()
    .any(|p| m.contains(p))
}

fn digest_name(r: &ImageRef) -> String {
    r.digest.as_deref().unwrap_or("none").replace(':', "-")
}

fn public_key(r: &ImageRef) -> String {
    format!("public-{}", digest_name(r))
}

fn user_key(uid: u32, r: &ImageRef) -> String {
    format!("u{uid}-{}", digest_name(r))
}

/// Verdicts as empty files whose modification time is when they were given.
struct Cache {
    dir: PathBuf,
}

impl Cache {
    fn new(state_dir: &Path) -> Cache {
        Cache {
            dir: state_dir.join(DIR),
        }
    }

    fn fresh(&self, key: &str, ttl: Duration, now: SystemTime) -> bool {
        let Ok(meta) = std::fs::symlink_metadata(self.dir.join(key)) else {
            return false;
        };
        meta.is_file() && meta.modified().is_ok_and(|t| fresh(t, ttl, now))
    }

    /// Records a verdict and removes the expired ones, so that the directory stays small.
    /// Failures only cost a later check again.
    fn record(&self, key: &str, now: SystemTime) {
        if let Err(e) = files::ensure_private_dir("access cache", &self.dir) {
            tracing::warn!("{e}");
            return;
        }
        let path = self.dir.join(key);
        let _ = files::remove_file("access cache entry", &path);
        if let Err(e) = files::write_new("access cache entry", &path, b"", 0o600) {
            tracing::debug!("{e}");
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let ttl_of = if name.to_string_lossy().starts_with("public-") {
                PUBLIC_TTL
            } else {
                USER_TTL
            };
            let expired = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| !fresh(t, ttl_of, now));
            if expired {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Given at `at`, still valid at `now` (a verdict from the future, after a clock step, is not).
fn fresh(at: SystemTime, ttl: Duration, now: SystemTime) -> bool {
    match now.duration_since(at) {
        Ok(age) => age < ttl,
        Err(ahead) => ahead.duration() < Duration::from_secs(5),
    }
}

#[cfg(test)]
mod tests;
