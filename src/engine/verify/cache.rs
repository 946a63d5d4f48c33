//! The image checks' verdicts, kept per image id in root's state directory so that only a node's
//! first job of an image (and of a set of mount points and groups) pays for reading the image.
//! An image id is the digest of the image's config, which names its layers by the digests of
//! their contents: the files the checks read never change under one id. What the verdict depends
//! on besides the files is in the key: the planned mount targets and what each needs, the job's
//! groups, the size limit on the group file, and the jobdock version and commit (a check that
//! changes makes new keys). Only passes are kept; a refusal is checked again every time. An
//! entry is trusted only if it is a regular file owned by root and writable by nobody else, in the
//! root-only directory; anything else is ignored (and replaced when the check passes). This
//! module must not decide anything itself: it only remembers what the checks said.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// `<state_dir>/image-checks/<hex of the image id>`: one JSON line per key that passed.
const DIR: &str = "image-checks";

/// Most keys kept per image; the oldest go first.
const MAX_KEYS: usize = 64;

/// Largest entry file read.
const MAX_FILE: u64 = 1 << 20;

/// What a pass of the image checks is a pass for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Key {
    path: PathBuf,
    line: String,
}

impl Key {
    /// The key for image `id` (`sha256:<64 hex>`) with `mounts` (target and what it needs there,
    /// in any order) and `groups`; `None` for an id that is not a full image id (nothing is kept).
    pub(super) fn new(
        state_dir: &Path,
        id: &str,
        mounts: &[(PathBuf, &'static str)],
        groups: &[u32],
        group_file_limit: u64,
    ) -> Option<Key> {
        let path = entry_path(state_dir, id)?;
        let mut mounts: Vec<(String, &str)> = mounts
            .iter()
            .map(|(t, n)| (t.to_string_lossy().into_owned(), *n))
            .collect();
        mounts.sort();
        mounts.dedup();
        let mut groups = groups.to_vec();
        groups.sort_unstable();
        groups.dedup();
        let line = serde_json::json!({
            // The commit too: a build whose checks changed makes new keys.
            "jobdock": crate::cli::VERSION,
            "image": id,
            "group_file_limit": group_file_limit,
            "groups": groups,
            "mounts": mounts,
        })
        .to_string();
        Some(Key { path, line })
    }

    /// Whether a trusted entry says the checks passed for this key.
    pub(super) fn passed(&self) -> bool {
        match read_trusted(&self.path) {
            Ok(Some(text)) => text.lines().any(|l| l == self.line),
            Ok(None) => false,
            Err(reason) => {
                tracing::warn!(
                    "ignoring the image check cache entry {}: {reason}",
                    self.path.display()
                );
                false
            }
        }
    }

    /// Notes that the checks passed for this key. A failure costs only the next job a check.
    pub(super) fn record(&self) {
        if let Err(e) = self.write() {
            tracing::debug!("recording the image check in {}: {e}", self.path.display());
        }
    }

    fn write(&self) -> Result<(), String> {
        let dir = self.path.parent().expect("under the state dir");
        crate::engine::files::ensure_private_dir("engine.state_dir", dir)
            .map_err(|e| e.to_string())?;
        let old = read_trusted(&self.path).ok().flatten().unwrap_or_default();
        let mut lines: Vec<&str> = old
            .lines()
            .filter(|l| !l.is_empty() && *l != self.line)
            .collect();
        let skip = (lines.len() + 1).saturating_sub(MAX_KEYS);
        lines.drain(..skip);
        lines.push(&self.line);
        let mut text = lines.join("\n");
        text.push('\n');
        // Another job may write at the same time: each writes a file of its own and renames it
        // over the entry, so a reader sees one whole version (one of them may lose its line).
        let name = self.path.file_name().expect("a hex name").to_string_lossy();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                f.write_all(text.as_bytes())?;
                f.sync_data()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.to_string());
        }
        Ok(())
    }
}

/// Drops what is kept for image `id` (`jobdock prune` removed it: an image pulled again under
/// the same id is checked again).
pub(crate) fn forget(state_dir: &Path, id: &str) {
    if let Some(path) = entry_path(state_dir, id) {
        let _ = std::fs::remove_file(path);
    }
}

/// The entry of image `id` if it is a full image id (`sha256:` and 64 lowercase hex digits).
fn entry_path(state_dir: &Path, id: &str) -> Option<PathBuf> {
    let hex = id.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| state_dir.join(DIR).join(hex))
}

/// The entry at `path` if it is root's alone: `Ok(None)` if there is none, `Err` (why it is not
/// trusted) for one that is not a regular file, not root's, writable by others, or too large.
fn read_trusted(path: &Path) -> Result<Option<String>, String> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.uid() != 0 {
        return Err(format!("owned by uid {}, not root", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    if meta.len() > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    let mut text = String::new();
    file.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn mounts() -> Vec<(PathBuf, &'static str)> {
        vec![
            ("/etc/group".into(), "file"),
            ("/home/jdalice".into(), "directory"),
        ]
    }

    fn key(dir: &Path, id: &str, mounts: &[(PathBuf, &'static str)], groups: &[u32]) -> Key {
        Key::new(dir, id, mounts, groups, 1 << 20).unwrap()
    }

    #[test]
    fn only_a_full_image_id_has_a_key() {
        let dir = Path::new("/var/lib/jobdock");
        for id in [
            "sha256:0123",
            "busybox",
            &A.to_uppercase(),
            &format!("{A}0"),
            &A.replace("sha256:", "sha512:"),
            &A.replace('a', "/"),
        ] {
            assert_eq!(Key::new(dir, id, &mounts(), &[1], 1), None, "{id}");
        }
        assert!(Key::new(dir, A, &mounts(), &[1], 1).is_some());
    }

    #[test]
    fn the_key_holds_every_input_and_not_their_order() {
        let dir = Path::new("/s");
        let k = key(dir, A, &mounts(), &[3001, 3002]);
        let mut reversed = mounts();
        reversed.reverse();
        assert_eq!(k, key(dir, A, &reversed, &[3002, 3001, 3001]));
        let others = [
            key(dir, B, &mounts(), &[3001, 3002]),
            key(dir, A, &mounts()[..1], &[3001, 3002]),
            key(
                dir,
                A,
                &[
                    ("/etc/group".into(), "either"),
                    ("/home/jdalice".into(), "directory"),
                ],
                &[3001, 3002],
            ),
            key(dir, A, &mounts(), &[3001]),
            key(dir, A, &mounts(), &[3001, 3002, 0]),
            Key::new(dir, A, &mounts(), &[3001, 3002], 1 << 10).unwrap(),
        ];
        for other in others {
            assert_ne!(k.line, other.line);
        }
        assert!(k.line.contains(env!("CARGO_PKG_VERSION")), "{}", k.line);
    }

    /// Needs root (the entry must be root's).
    #[test]
    #[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
    fn a_recorded_pass_is_found_for_its_key_only_and_only_while_roots_alone() {
        crate::needs_root();
        let state = tempfile::tempdir().unwrap();
        let k = key(state.path(), A, &mounts(), &[3001]);
        assert!(!k.passed());
        k.record();
        assert!(k.passed());
        let entry = state.path().join(DIR).join(&A[7..]);
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600));
        // Another key of the same image, another image, and other groups: not passed.
        assert!(!key(state.path(), A, &mounts(), &[3001, 0]).passed());
        assert!(!key(state.path(), B, &mounts(), &[3001]).passed());
        // Both keys of one image are kept.
        let k2 = key(state.path(), A, &mounts()[..1], &[3001]);
        k2.record();
        assert!(k.passed() && k2.passed());
        // The entry of A copied to B's name does not pass B: the line names the image.
        std::fs::copy(&entry, state.path().join(DIR).join(&B[7..])).unwrap();
        assert!(!key(state.path(), B, &mounts(), &[3001]).passed());
        // Writable by others, or another owner: ignored.
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o620)).unwrap();
        assert!(!k.passed());
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(k.passed());
        std::os::unix::fs::chown(&entry, Some(2001), None).unwrap();
        assert!(!k.passed());
        // A pass recorded again replaces a distrusted entry with root's.
        k.record();
        assert!(k.passed());
        assert_eq!(std::fs::symlink_metadata(&entry).unwrap().uid(), 0);
        // A symlink to a root-owned file holding the line: ignored.
        let elsewhere = state.path().join("elsewhere");
        std::fs::copy(&entry, &elsewhere).unwrap();
        std::fs::remove_file(&entry).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
        assert!(!k.passed());
        // At most MAX_KEYS keys per image, the newest kept.
        std::fs::remove_file(&entry).unwrap();
        let max = u32::try_from(MAX_KEYS).unwrap();
        for g in 0..(max + 5) {
            key(state.path(), A, &mounts(), &[g]).record();
        }
        let text = std::fs::read_to_string(&entry).unwrap();
        assert_eq!(text.lines().count(), MAX_KEYS);
        assert!(key(state.path(), A, &mounts(), &[max + 4]).passed());
        assert!(!key(state.path(), A, &mounts(), &[0]).passed());
        // Nothing else is left in the directory.
        let names: Vec<_> = std::fs::read_dir(state.path().join(DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
