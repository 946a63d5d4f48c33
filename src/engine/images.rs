//! The node's images and their lifecycle (`jobdock images`, `jobdock prune`): jobdock records
//! when a job last ran each image (`<state_dir>/images/<id>`, its mtime), and the site's
//! `[images]` policy says which of those may go. Images no job of jobdock's ran (the admin's own)
//! and images any container uses are never removed. The choice is pure (`choose`); the daemon
//! only lists and removes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::units::ByteSize;

/// An image on the node, as `GET /images/json` lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeImage {
    /// `sha256:...`
    pub id: String,
    pub tags: Vec<String>,
    pub size: u64,
}

/// What the site allows prune to remove (`[images]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrunePolicy {
    /// An image no job has run for this long goes (`prune_after_days`).
    pub unused_for: Duration,
    /// While the node's images take more than this, the least recently run go (`prune_budget`).
    pub budget: Option<ByteSize>,
}

/// One image prune removes, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub image: NodeImage,
    pub why: String,
}

/// What became of a removal prune chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pruned {
    Removed,
    /// `--dry-run`: nothing was removed.
    WouldRemove,
    /// A container took it since the listing, and dockerd kept it.
    InUse,
    /// dockerd could not remove it: why.
    Failed(String),
}

/// What `jobdock images` shows of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub image: NodeImage,
    /// When a job of jobdock's last ran it; `None`: never.
    pub last_run: Option<SystemTime>,
    pub in_use: bool,
}

/// The images prune removes, oldest last run first: those no job has run for
/// `policy.unused_for`, then, while the node is over `policy.budget`, the least recently run.
/// Never one a container uses, nor one no job of jobdock's ran.
pub fn choose(
    images: &[NodeImage],
    in_use: &BTreeSet<String>,
    last_run: &BTreeMap<String, SystemTime>,
    now: SystemTime,
    policy: &PrunePolicy,
) -> Vec<Removal> {
    let mut candidates: Vec<(&NodeImage, SystemTime)> = images
        .iter()
        .filter(|i| !in_use.contains(&i.id))
        .filter_map(|i| last_run.get(&i.id).map(|t| (i, *t)))
        .collect();
    candidates.sort_by_key(|(i, t)| (*t, i.id.clone()));
    let mut total: u64 = images.iter().map(|i| i.size).sum();
    let mut out = Vec::new();
    for (image, last) in candidates {
        let idle = now.duration_since(last).unwrap_or_default();
        let why = if idle >= policy.unused_for {
            format!(
                "no job has run it for {} days (images.prune_after_days = {})",
                idle.as_secs() / 86_400,
                policy.unused_for.as_secs() / 86_400
            )
        } else if let Some(budget) = policy.budget.filter(|b| total > b.bytes()) {
            format!(
                "the node's images take {}, more than images.prune_budget = {budget}; it is the \
                 least recently run",
                ByteSize::shown(total)
            )
        } else {
            continue;
        };
        total = total.saturating_sub(image.size);
        out.push(Removal {
            image: image.clone(),
            why,
        });
    }
    out
}

/// Every image with its last run and whether a container uses it, by tag.
pub fn listing(
    images: &[NodeImage],
    in_use: &BTreeSet<String>,
    last_run: &BTreeMap<String, SystemTime>,
) -> Vec<Listed> {
    let mut out: Vec<Listed> = images
        .iter()
        .map(|i| Listed {
            image: i.clone(),
            last_run: last_run.get(&i.id).copied(),
            in_use: in_use.contains(&i.id),
        })
        .collect();
    out.sort_by(|a, b| {
        a.image
            .tags
            .cmp(&b.image.tags)
            .then(a.image.id.cmp(&b.image.id))
    });
    out
}

/// Where jobdock records the runs of each image: `<state_dir>/images/`.
pub(super) fn records_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("images")
}

/// The record file of image `id` (`sha256:<hex>`); `None` for an id that is not one.
pub(super) fn record_path(state_dir: &Path, id: &str) -> Option<PathBuf> {
    let hex = id.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| records_dir(state_dir).join(hex))
}

/// Notes that a job runs image `id` now. A failure costs only the record (prune then keeps the
/// image, as one no job ran).
pub(super) fn record_run(state_dir: &Path, id: &str) {
    let Some(path) = record_path(state_dir, id) else {
        return;
    };
    let noted = std::fs::create_dir_all(records_dir(state_dir))
        .and_then(|()| std::fs::File::create(&path))
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = noted {
        tracing::debug!("recording the run of {id} in {}: {e}", path.display());
    }
}

/// Every recorded run: image id to when a job last ran it.
pub(super) fn last_runs(state_dir: &Path) -> BTreeMap<String, SystemTime> {
    let Ok(entries) = std::fs::read_dir(records_dir(state_dir)) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = format!("sha256:{name}");
            record_path(state_dir, &id)?;
            Some((id, e.metadata().ok()?.modified().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn image(n: u8, size_mib: u64) -> NodeImage {
        NodeImage {
            id: format!(
                "sha256:{}",
                format!("{n:x}")
                    .repeat(64)
                    .chars()
                    .take(64)
                    .collect::<String>()
            ),
            tags: vec![format!("lab/img{n}:latest")],
            size: size_mib * ByteSize::MIB,
        }
    }

    #[test]
    fn prune_removes_what_the_policy_names_and_never_what_is_used_or_unknown() {
        let now = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let images = [
            image(1, 100),
            image(2, 100),
            image(3, 100),
            image(4, 100),
            image(5, 100),
        ];
        let runs = BTreeMap::from([
            (images[0].id.clone(), now - 40 * DAY), // idle: goes
            (images[1].id.clone(), now - 45 * DAY), // idle, but a container uses it
            (images[2].id.clone(), now - 2 * DAY),  // recent
            (images[3].id.clone(), now - DAY),      // recent
                                                    // images[4]: no job of jobdock's ran it
        ]);
        let in_use = BTreeSet::from([images[1].id.clone()]);
        let policy = PrunePolicy {
            unused_for: 30 * DAY,
            budget: None,
        };
        let gone = choose(&images, &in_use, &runs, now, &policy);
        assert_eq!(gone.len(), 1, "{gone:?}");
        assert_eq!(gone[0].image, images[0]);
        assert!(gone[0].why.contains("40 days"), "{}", gone[0].why);

        // 500 MiB over a 350 MiB budget: the idle one, then the least recently run, until under.
        let budget = PrunePolicy {
            unused_for: 30 * DAY,
            budget: Some(ByteSize::exact(350 * ByteSize::MIB)),
        };
        let gone: Vec<NodeImage> = choose(&images, &in_use, &runs, now, &budget)
            .into_iter()
            .map(|r| r.image)
            .collect();
        assert_eq!(gone, [images[0].clone(), images[2].clone()]);
        // Never below what is used and unknown, however small the budget.
        let tiny = PrunePolicy {
            unused_for: 30 * DAY,
            budget: Some(ByteSize::exact(ByteSize::MIB)),
        };
        let gone = choose(&images, &in_use, &runs, now, &tiny);
        assert!(
            gone.iter()
                .all(|r| r.image != images[1] && r.image != images[4]),
            "{gone:?}"
        );
        assert_eq!(gone.len(), 3);
    }

    /// `jobdock prune` through the daemon: a dry run removes nothing; a real one removes what
    /// `choose` names, with its record, and keeps what a container uses.
    #[tokio::test]
    async fn prune_removes_through_the_daemon_and_forgets_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let (old, used) = (image(1, 10), image(2, 10));
        let mut d = crate::engine::fake::FakeDaemon::default();
        d.node_images = vec![old.clone(), used.clone()];
        d.in_use = BTreeSet::from([used.id.clone()]);
        for i in [&old, &used] {
            record_run(dir.path(), &i.id);
            let f = std::fs::File::options()
                .write(true)
                .open(record_path(dir.path(), &i.id).unwrap())
                .unwrap();
            f.set_modified(SystemTime::now() - 60 * DAY).unwrap();
        }
        let policy = PrunePolicy {
            unused_for: 30 * DAY,
            budget: None,
        };
        let dry = super::super::prune_with(&d, dir.path(), &policy, true)
            .await
            .unwrap();
        assert_eq!(dry.len(), 1);
        assert_eq!((&dry[0].0.image, &dry[0].1), (&old, &Pruned::WouldRemove));
        assert!(d.removed_images.borrow().is_empty());

        let done = super::super::prune_with(&d, dir.path(), &policy, false)
            .await
            .unwrap();
        assert_eq!((&done[0].0.image, &done[0].1), (&old, &Pruned::Removed));
        assert_eq!(
            d.removed_images.borrow().as_slice(),
            std::slice::from_ref(&old.id)
        );
        assert_eq!(
            last_runs(dir.path()).keys().collect::<Vec<_>>(),
            [&used.id],
            "the removed image's record is gone, the used one's kept"
        );
    }

    #[test]
    fn runs_are_recorded_per_image_id_only() {
        let dir = tempfile::tempdir().unwrap();
        let id = image(7, 1).id;
        record_run(dir.path(), &id);
        record_run(dir.path(), "sha256:../../etc/passwd");
        record_run(dir.path(), "lab/img:latest");
        let runs = last_runs(dir.path());
        assert_eq!(runs.keys().collect::<Vec<_>>(), [&id]);
        let names: Vec<_> = std::fs::read_dir(records_dir(dir.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }
}
