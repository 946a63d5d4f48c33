//! Who may run an image that came from a registry, decided against the recording fake.

use super::*;
use crate::engine::Blame;
use crate::engine::auth::RegistryAuth;
use crate::engine::fake::FakeDaemon;

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const OTHER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// A private state dir (root-owned when the tests run as root, as the cache requires).
fn state() -> tempfile::TempDir {
    crate::needs_root();
    tempfile::tempdir().unwrap()
}

fn creds(user: &str, registry: &str) -> Credentials {
    Credentials::new(vec![RegistryAuth {
        server: registry.into(),
        username: Some(user.into()),
        password: Some("pw".into()),
        identity_token: None,
    }])
}

/// A node of the recording fake with an image and an access cache of its own: by default the
/// image `reg.example:5001/lab/secret:v1`, pulled from that registry by its digest.
struct Node {
    dir: tempfile::TempDir,
    d: FakeDaemon,
    image: ImageRef,
    local: LocalImage,
}

impl Node {
    fn new() -> Node {
        let mut d = FakeDaemon::default();
        d.repo_digests = vec![format!("reg.example:5001/lab/secret@{DIGEST}")];
        let local = LocalImage {
            id: "sha256:0123".into(),
            repo_digests: d.repo_digests.clone(),
            ..LocalImage::default()
        };
        Node {
            dir: state(),
            d,
            image: ImageRef::parse("reg.example:5001/lab/secret:v1").unwrap(),
            local,
        }
    }

    /// What the registry answers a request without credentials.
    fn anonymous(mut self, answer: Result<(), DaemonError>) -> Node {
        self.d.registry.insert("", answer);
        self
    }

    /// Whether `uid`, with `credentials`, may run the node's image.
    async fn check(
        &self,
        uid: u32,
        credentials: &Credentials,
    ) -> Result<Option<ImageRef>, EngineError> {
        let s = AccessSettings {
            uid,
            credentials,
            state_dir: self.dir.path(),
        };
        check(&self.d, &self.image, &self.local, &s).await
    }
}

/// dockerd's answer to a pull of a private image without credentials.
fn no_basic_auth() -> Result<(), DaemonError> {
    Err(DaemonError::new(
        ErrorKind::Status(500),
        "Get \"http://reg.example:5001/v2/lab/secret/manifests/x\": no basic auth credentials",
    ))
}

fn asked(d: &FakeDaemon) -> Vec<String> {
    d.calls()
        .into_iter()
        .filter(|c| c.starts_with("registry_manifest"))
        .collect()
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn an_image_from_no_registry_needs_no_check() {
    let mut node = Node::new();
    node.image = ImageRef::parse("built-here:1").unwrap();
    node.d.repo_digests.clear();
    node.local.repo_digests.clear();
    let got = node.check(2001, &Credentials::default()).await;
    assert_eq!(got.unwrap(), None);
    assert!(node.d.calls().is_empty(), "{:?}", node.d.calls());
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_public_image_is_asked_about_once_for_everyone() {
    let node = Node::new().anonymous(Ok(()));
    let got = node.check(2001, &Credentials::default()).await;
    let pinned = got.unwrap().unwrap();
    assert_eq!(
        pinned.to_string(),
        format!("reg.example:5001/lab/secret@{DIGEST}")
    );
    assert_eq!(asked(&node.d), [format!("registry_manifest {pinned}")]);
    // Another user, with credentials even: the node knows it is public.
    let bob = creds("bob", "reg.example:5001");
    let again = node.check(2002, &bob).await;
    assert_eq!(again.unwrap(), Some(pinned));
    assert_eq!(asked(&node.d).len(), 1, "{:?}", node.d.calls());
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_private_image_runs_only_for_users_the_registry_accepts() {
    let mut node = Node::new().anonymous(no_basic_auth());
    node.d.registry.insert("bob", Ok(()));
    let bob = creds("bob", "reg.example:5001");

    let got = node.check(2002, &bob).await;
    assert!(got.unwrap().is_some());
    assert_eq!(
        asked(&node.d),
        [
            format!("registry_manifest reg.example:5001/lab/secret@{DIGEST}"),
            format!("registry_manifest reg.example:5001/lab/secret@{DIGEST} bob"),
        ]
    );
    // Bob again within minutes: from the cache.
    let n = asked(&node.d).len();
    assert!(node.check(2002, &bob).await.unwrap().is_some());
    assert_eq!(asked(&node.d).len(), n);

    // Alice, without credentials, or with ones the registry refuses, or with bob's registry
    // credentials for another registry: refused, naming the image and the registry.
    let cases = [
        ("no credentials", Credentials::default()),
        ("wrong credentials", creds("alice", "reg.example:5001")),
        ("another registry's", creds("bob", "other.example")),
    ];
    for (name, credentials) in cases {
        let e = node.check(2001, &credentials).await.unwrap_err();
        assert_eq!(e.blame(), Blame::BadRequest, "{name}: {e}");
        let shown = e.to_string();
        assert!(
            shown.contains("reg.example:5001/lab/secret:v1")
                && shown.contains("registry reg.example:5001"),
            "{name}: {shown}"
        );
        assert!(!shown.contains("bob"), "{name}: {shown}");
    }
    // Nothing refused is remembered: bob's verdict is his alone.
    assert!(
        !node.dir.path().join("access").read_dir().unwrap().any(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.starts_with("public-") || name.starts_with("u2001-")
        })
    );
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_users_verdict_expires_after_minutes() {
    let mut node = Node::new();
    node.d.registry.insert("bob", Ok(()));
    let bob = creds("bob", "reg.example:5001");
    node.check(2002, &bob).await.unwrap();
    let entry = node
        .dir
        .path()
        .join("access")
        .join(format!("u2002-{}", DIGEST.replace(':', "-")));
    let old = SystemTime::now() - USER_TTL - Duration::from_secs(1);
    let old = nix::sys::time::TimeSpec::from_duration(
        old.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
    );
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &entry,
        &old,
        &old,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let n = asked(&node.d).len();
    node.check(2002, &bob).await.unwrap();
    assert_eq!(
        asked(&node.d).len(),
        n + 2,
        "asked again: {:?}",
        node.d.calls()
    );
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_registry_that_cannot_be_asked_fails_closed_as_the_nodes_problem() {
    let node = Node::new().anonymous(Err(DaemonError::new(
        ErrorKind::Status(500),
        "Get \"http://reg.example:5001/v2/\": dial tcp: connect: connection refused",
    )));
    let e = node.check(2001, &Credentials::default()).await.unwrap_err();
    assert_eq!(e.blame(), Blame::Infrastructure, "{e}");
    assert!(e.to_string().contains("connection refused"), "{e}");
    assert!(!node.dir.path().join("access").exists(), "nothing cached");
}

#[tokio::test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn the_registry_must_confirm_the_local_digest_itself() {
    // The tag exists and is public, but the local image is another manifest: the fake answers
    // with the digest asked for, so ask for one it gives under another name.
    let mut node = Node::new().anonymous(Ok(()));
    node.local.repo_digests = vec![
        format!("mirror.example/lab/secret@{OTHER}"),
        format!("reg.example:5001/lab/secret@{DIGEST}"),
    ];
    let got = node.check(2001, &Credentials::default()).await;
    // The repository the user named is asked first, by the digest the image has.
    assert_eq!(
        asked(&node.d)[0],
        format!("registry_manifest reg.example:5001/lab/secret@{DIGEST}")
    );
    assert_eq!(got.unwrap().unwrap().digest.as_deref(), Some(DIGEST));
}

#[test]
fn refusals_are_told_from_failures_to_ask() {
    let cases = [
        (
            ErrorKind::Status(401),
            "unauthorized: authentication required",
            true,
        ),
        (
            ErrorKind::Status(500),
            "Get \"http://r/v2/x\": no basic auth credentials",
            true,
        ),
        (
            ErrorKind::NotFound,
            "manifest unknown: manifest unknown",
            true,
        ),
        (
            ErrorKind::Status(500),
            "pull access denied for x, repository does not exist",
            true,
        ),
        (
            ErrorKind::Status(500),
            "dial tcp 127.0.0.1:5001: connect: connection refused",
            false,
        ),
        (ErrorKind::Timeout, "timed out", false),
        (ErrorKind::Status(502), "bad gateway", false),
    ];
    for (kind, message, want) in cases {
        assert_eq!(
            rejection(&DaemonError::new(kind, message)),
            want,
            "{message}"
        );
    }
}
