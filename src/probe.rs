//! The filesystem behind a seam: what the planner needs to know about host paths. The real probe
//! answers every question about a user-named path *as the job user* (in a child process that has
//! dropped to the user's uid, gid and groups), so jobdock never reveals or mounts anything the user
//! could not reach without it.

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Dir,
    File,
    Other,
}

/// A file's identity on the host (`st_dev`, `st_ino`): what a path named when it was checked, so
/// the engine can tell whether the same path names something else later (a directory swapped for
/// a symlink between the check and the container's start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "device {} inode {}", self.dev, self.ino)
    }
}

impl FileId {
    pub fn of(stat: &nix::sys::stat::FileStat) -> FileId {
        FileId {
            dev: stat.st_dev,
            ino: stat.st_ino,
        }
    }
}

/// A host path resolved as the job user: symlinks followed, `..` gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub path: PathBuf,
    pub kind: Kind,
    /// What `path` named when it was resolved, reached without following any symlink; `None` when
    /// the probe only judges text (the esub on the submission host).
    pub id: Option<FileId>,
    /// Its owner's uid; `None` when the probe only judges text.
    pub owner: Option<u32>,
}

/// Why a probe could not answer, with the words for the user (`path: reason`) and the kind a
/// caller may act on: a path that does not exist is no news where nothing was promised there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    pub kind: ProbeErrorKind,
    pub message: String,
}

/// What went wrong, as far as a caller cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum ProbeErrorKind {
    /// Nothing is there (ENOENT).
    NotFound,
    /// The user may not reach it (EACCES, EPERM).
    Denied,
    /// Anything else: not a directory, a symlink on the way, too large, the probe itself failed.
    Other,
}

impl ProbeError {
    /// `what: io error`, of the kind the error is.
    pub fn io(what: impl std::fmt::Display, e: &std::io::Error) -> ProbeError {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ProbeErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ProbeErrorKind::Denied,
            _ => ProbeErrorKind::Other,
        };
        ProbeError {
            kind,
            message: format!("{what}: {e}"),
        }
    }

    pub fn other(message: impl Into<String>) -> ProbeError {
        ProbeError {
            kind: ProbeErrorKind::Other,
            message: message.into(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ProbeErrorKind::NotFound
    }
}

impl From<ProbeError> for String {
    fn from(e: ProbeError) -> String {
        e.message
    }
}

impl From<String> for ProbeError {
    fn from(message: String) -> ProbeError {
        ProbeError::other(message)
    }
}

pub trait HostProbe {
    /// Resolves `path` as the job user; `Err` if the user cannot reach it.
    fn resolve(&self, path: &Path) -> Result<Resolved, ProbeError>;
    /// Reads a regular file as the job user, refusing anything larger than `max` bytes.
    fn read_file(&self, path: &Path, max: u64) -> Result<String, ProbeError>;
    /// Host device nodes matching a glob from the site config (`/dev/infiniband/*`).
    fn devices(&self, glob: &str) -> Vec<PathBuf>;
}

/// A probe that remembers what each path resolved to, so that the plan can pin every mount source
/// to the file the user's probe saw there ([`Resolved::id`]). A real path seen twice as two
/// different files changed while jobdock was checking it, and is refused.
pub struct Recording<'a> {
    inner: &'a dyn HostProbe,
    seen: std::cell::RefCell<std::collections::BTreeMap<PathBuf, Seen>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    As(Option<FileId>),
    Changed,
}

impl<'a> Recording<'a> {
    pub fn new(inner: &'a dyn HostProbe) -> Self {
        Recording {
            inner,
            seen: Default::default(),
        }
    }

    /// The identity each of `sources` had when resolved, for those that were resolved (jobdock's
    /// own files and site mounts are not); `Err` is a source that changed while being checked.
    pub fn pins<'p>(
        &self,
        sources: impl IntoIterator<Item = &'p Path>,
    ) -> Result<std::collections::BTreeMap<PathBuf, FileId>, PathBuf> {
        let seen = self.seen.borrow();
        let mut pins = std::collections::BTreeMap::new();
        for source in sources {
            match seen.get(source) {
                Some(Seen::As(Some(id))) => {
                    pins.insert(source.to_path_buf(), *id);
                }
                Some(Seen::Changed) => return Err(source.to_path_buf()),
                Some(Seen::As(None)) | None => {}
            }
        }
        Ok(pins)
    }
}

impl HostProbe for Recording<'_> {
    fn resolve(&self, path: &Path) -> Result<Resolved, ProbeError> {
        let r = self.inner.resolve(path)?;
        let mut seen = self.seen.borrow_mut();
        let now = match seen.get(&r.path) {
            None => Seen::As(r.id),
            Some(&before) if before == Seen::As(r.id) => before,
            Some(_) => Seen::Changed,
        };
        seen.insert(r.path.clone(), now);
        Ok(r)
    }

    fn read_file(&self, path: &Path, max: u64) -> Result<String, ProbeError> {
        self.inner.read_file(path, max)
    }

    fn devices(&self, glob: &str) -> Vec<PathBuf> {
        self.inner.devices(glob)
    }
}

/// The real probe: as the job user when jobdock holds root, directly otherwise.
pub struct AsUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl AsUser {
    /// Runs `f` with the job user's credentials. When jobdock is not root it already *is* the
    /// user (identity comes from the real uid), so `f` runs in-process.
    fn run<T: Serialize + DeserializeOwned>(
        &self,
        f: impl FnOnce() -> Result<T, ProbeError>,
    ) -> Result<T, ProbeError> {
        if !nix::unistd::geteuid().is_root() {
            return f();
        }
        as_user(self.uid, self.gid, &self.groups, f)
    }
}

impl HostProbe for AsUser {
    fn resolve(&self, path: &Path) -> Result<Resolved, ProbeError> {
        self.run(|| resolve_here(path))
    }

    fn read_file(&self, path: &Path, max: u64) -> Result<String, ProbeError> {
        self.run(|| read_here(path, max))
    }

    fn devices(&self, glob: &str) -> Vec<PathBuf> {
        expand_glob(glob)
            .into_iter()
            .filter(|p| {
                std::fs::metadata(p).is_ok_and(|m| {
                    m.file_type().is_char_device() || m.file_type().is_block_device()
                })
            })
            .collect()
    }
}

fn resolve_here(path: &Path) -> Result<Resolved, ProbeError> {
    use nix::sys::stat::SFlag;
    let canonical = std::fs::canonicalize(path).map_err(|e| ProbeError::io(path.display(), &e))?;
    // The real path has no symlink in it; open it again refusing any, so that what is described
    // (kind, identity) is what that path names, not what a symlink swapped in meanwhile points to.
    let fd = open_no_symlinks(&canonical).map_err(|e| format!("{}: {e}", path.display()))?;
    let stat = nix::sys::stat::fstat(&fd).map_err(|e| format!("{}: {e}", path.display()))?;
    let kind = match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFREG => Kind::File,
        _ => Kind::Other,
    };
    if kind == Kind::Dir {
        // Mounting needs the user to be able to enter it, not just see it.
        nix::unistd::access(&canonical, nix::unistd::AccessFlags::X_OK).map_err(|e| {
            ProbeError::io(
                format_args!("{}: cannot enter", path.display()),
                &std::io::Error::from(e),
            )
        })?;
    }
    Ok(Resolved {
        path: canonical,
        kind,
        id: Some(FileId::of(&stat)),
        owner: Some(stat.st_uid),
    })
}

/// Opens `path` (absolute, without `.` or `..`) with `O_PATH`, one component at a time, failing if
/// any component is a symbolic link: the file reached is the one the path names literally.
pub fn open_no_symlinks(path: &Path) -> Result<std::os::fd::OwnedFd, String> {
    use nix::fcntl::{OFlag, open, openat};
    use nix::sys::stat::{Mode, SFlag};
    use std::path::Component;

    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd =
        open("/", flags | OFlag::O_DIRECTORY, Mode::empty()).map_err(|e| format!("/: {e}"))?;
    let mut walked = PathBuf::from("/");
    for c in path.components() {
        let name = match c {
            Component::RootDir => continue,
            Component::Normal(name) => name,
            other => return Err(format!("{other:?} in a path that must be clean")),
        };
        walked.push(name);
        fd = openat(&fd, name, flags, Mode::empty())
            .map_err(|e| format!("{}: {e}", walked.display()))?;
        let stat = nix::sys::stat::fstat(&fd).map_err(|e| format!("{}: {e}", walked.display()))?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
            return Err(format!(
                "{} is now a symbolic link (the path changed while jobdock checked it)",
                walked.display()
            ));
        }
    }
    Ok(fd)
}

fn read_here(path: &Path, max: u64) -> Result<String, ProbeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display();
    // O_NONBLOCK: a FIFO must not hang jobdock; it is refused below as not a regular file.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::O_NONBLOCK)
        .open(path)
        .map_err(|e| ProbeError::io(&shown, &e))?;
    let meta = file.metadata().map_err(|e| ProbeError::io(&shown, &e))?;
    if !meta.is_file() {
        return Err(ProbeError::other(format!("{shown}: not a regular file")));
    }
    if meta.len() > max {
        return Err(ProbeError::other(format!(
            "{shown}: larger than {max} bytes"
        )));
    }
    let mut text = String::new();
    Read::by_ref(&mut file)
        .take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| ProbeError::io(&shown, &e))?;
    if text.len() as u64 > max {
        return Err(ProbeError::other(format!(
            "{shown}: larger than {max} bytes"
        )));
    }
    Ok(text)
}

mod libc_flags {
    pub(super) const O_NONBLOCK: i32 = nix::fcntl::OFlag::O_NONBLOCK.bits();
}

/// A device glob of the site config (`devices.paths`), in the `glob` crate's syntax: `*`, `?` and
/// `[...]` classes, each within one path component, as device paths want (`/dev/infiniband/*`
/// is the devices in that directory, not below it). `**` is refused rather than read as `*`.
#[derive(Clone, Debug)]
pub struct DeviceGlob(glob::Pattern);

/// Why a text is not a [`DeviceGlob`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceGlobError {
    #[error(
        "`**` is not a glob jobdock knows for devices (`*`, `?` and `[...]` match within one path \
         component)"
    )]
    Recursive,
    #[error("`{{...}}` alternatives are not a glob jobdock knows for devices: list each glob")]
    Braces,
    #[error("not a glob: {msg} at character {pos}")]
    Syntax { pos: usize, msg: &'static str },
}

/// How device globs match: case matters, `*`, `?` and `[...]` never match a `/`, and a leading
/// `.` is matched like any other character (as the hand-written wildcard did).
const DEVICE_MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl DeviceGlob {
    pub fn parse(text: &str) -> Result<DeviceGlob, DeviceGlobError> {
        if text.contains("**") {
            return Err(DeviceGlobError::Recursive);
        }
        if text.contains(['{', '}']) {
            return Err(DeviceGlobError::Braces);
        }
        glob::Pattern::new(text)
            .map(DeviceGlob)
            .map_err(|e| DeviceGlobError::Syntax {
                pos: e.pos,
                msg: e.msg,
            })
    }

    /// Whether the glob matches `path` (the site config's check against forbidden devices).
    pub fn matches(&self, path: &str) -> bool {
        self.0.matches_with(path, DEVICE_MATCH)
    }

    /// The existing paths the glob matches, in sorted order: the directories are read one
    /// component at a time, so only what the glob can reach is listed.
    pub fn expand(&self) -> Vec<PathBuf> {
        let mut found = vec![PathBuf::from("/")];
        for part in self.0.as_str().split('/').filter(|p| !p.is_empty()) {
            // A component alone is a pattern unless a class spans a `/`, which matches nothing.
            let Ok(component) = glob::Pattern::new(part) else {
                return Vec::new();
            };
            let mut next = Vec::new();
            for dir in found {
                if glob::Pattern::escape(part) == part {
                    let p = dir.join(part);
                    if std::fs::symlink_metadata(&p).is_ok() {
                        next.push(p);
                    }
                    continue;
                }
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| component.matches_with(n, DEVICE_MATCH))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| dir.join(n)));
            }
            found = next;
        }
        found.retain(|p| p.to_str().is_some_and(|p| self.matches(p)));
        found
    }
}

/// The paths `glob` names, as [`DeviceGlob::expand`]; nothing for a text that is not one (the
/// site config refuses those).
pub fn expand_glob(glob: &str) -> Vec<PathBuf> {
    DeviceGlob::parse(glob).map_or_else(|_| Vec::new(), |g| g.expand())
}

/// Runs `f` in a forked child that has dropped to `uid`/`gid`/`groups`, and returns its result.
/// jobdock calls this before it starts any thread (planning precedes the async runtime), which is
/// what makes `fork` safe here.
fn as_user<T: Serialize + DeserializeOwned>(
    uid: u32,
    gid: u32,
    groups: &[u32],
    f: impl FnOnce() -> Result<T, ProbeError>,
) -> Result<T, ProbeError> {
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, Gid, Uid, fork, setgroups, setresgid, setresuid};

    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: no other thread exists while planning (see above); the child only makes syscalls,
    // runs `f` (plain file system calls) and exits with `_exit`.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(read_end);
            let gids: Vec<Gid> = groups.iter().copied().map(Gid::from_raw).collect();
            let dropped = setgroups(&gids)
                .and_then(|_| setresgid(Gid::from_raw(gid), Gid::from_raw(gid), Gid::from_raw(gid)))
                .and_then(|_| {
                    setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(uid))
                });
            let result: Result<T, ProbeError> = match dropped {
                Ok(()) => f(),
                Err(e) => Err(ProbeError::other(format!(
                    "cannot switch to uid {uid}: {e}"
                ))),
            };
            let mut out = std::fs::File::from(write_end);
            let ok = serde_json::to_writer(&mut out, &result).is_ok() && out.flush().is_ok();
            // SAFETY: _exit skips atexit handlers and destructors that belong to the parent.
            unsafe { nix::libc::_exit(if ok { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut buf = Vec::new();
            let read = std::fs::File::from(read_end).read_to_end(&mut buf);
            let status = waitpid(child, None).map_err(|e| format!("waitpid: {e}"))?;
            read.map_err(|e| format!("reading from the probe: {e}"))?;
            if status != WaitStatus::Exited(child, 0) {
                return Err(format!("the probe running as uid {uid} failed: {status:?}").into());
            }
            serde_json::from_slice(&buf).map_err(|e| format!("probe answer: {e}"))?
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::collections::BTreeMap;

    /// A file system described by a table: path -> what the user sees there.
    #[derive(Default)]
    pub(crate) struct FakeProbe {
        pub paths: BTreeMap<PathBuf, Resolved>,
        pub files: BTreeMap<PathBuf, String>,
        pub devices: BTreeMap<String, Vec<PathBuf>>,
    }

    impl FakeProbe {
        /// The identity the fake gives the file at (real) path `path`: the same for every path
        /// that resolves there, different for different real paths.
        pub(crate) fn id_of(path: &str) -> FileId {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            path.hash(&mut h);
            FileId {
                dev: 42,
                ino: h.finish(),
            }
        }
        pub(crate) fn dir(mut self, path: &str) -> Self {
            self.paths.insert(
                path.into(),
                Resolved {
                    path: path.into(),
                    kind: Kind::Dir,
                    id: Some(Self::id_of(path)),
                    owner: None,
                },
            );
            self
        }
        /// A directory owned by `uid` (other fake paths have no owner to check).
        pub(crate) fn dir_owned_by(mut self, path: &str, uid: u32) -> Self {
            self = self.dir(path);
            if let Some(r) = self.paths.get_mut(std::path::Path::new(path)) {
                r.owner = Some(uid);
            }
            self
        }
        pub(crate) fn link(mut self, path: &str, target: &str, kind: Kind) -> Self {
            self.paths.insert(
                path.into(),
                Resolved {
                    path: target.into(),
                    kind,
                    id: Some(Self::id_of(target)),
                    owner: None,
                },
            );
            self
        }
        pub(crate) fn file(mut self, path: &str, text: &str) -> Self {
            self.paths.insert(
                path.into(),
                Resolved {
                    path: path.into(),
                    kind: Kind::File,
                    id: Some(Self::id_of(path)),
                    owner: None,
                },
            );
            self.files.insert(path.into(), text.into());
            self
        }
    }

    impl HostProbe for FakeProbe {
        fn resolve(&self, path: &Path) -> Result<Resolved, ProbeError> {
            self.paths.get(path).cloned().ok_or_else(|| ProbeError {
                kind: ProbeErrorKind::NotFound,
                message: format!("{}: No such file or directory", path.display()),
            })
        }
        fn read_file(&self, path: &Path, max: u64) -> Result<String, ProbeError> {
            let text = self
                .files
                .get(path)
                .ok_or_else(|| format!("{}: not a regular file", path.display()))?;
            if text.len() as u64 > max {
                return Err(format!("{}: larger than {max} bytes", path.display()).into());
            }
            Ok(text.clone())
        }
        fn devices(&self, glob: &str) -> Vec<PathBuf> {
            self.devices.get(glob).cloned().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller acts on the kind, never on the message's words (auth.rs once matched "No such
    /// file or directory"; the planner's tmpdir check too).
    #[test]
    fn errors_say_their_kind() {
        let missing = resolve_here(Path::new("/nonexistent/jobdock-probe")).unwrap_err();
        assert_eq!(missing.kind, ProbeErrorKind::NotFound, "{missing}");
        assert!(
            missing.message.starts_with("/nonexistent/jobdock-probe: "),
            "{missing}"
        );
        let denied = ProbeError::io(
            "/x",
            &std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert_eq!(denied.kind, ProbeErrorKind::Denied);
        let not_file = read_here(Path::new("/"), 10).unwrap_err();
        assert_eq!(not_file.kind, ProbeErrorKind::Other, "{not_file}");
        // Through the forked probe, the kind survives the trip.
        let here = AsUser {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            groups: Vec::new(),
        };
        let e = here
            .resolve(Path::new("/nonexistent/jobdock-probe"))
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    #[test]
    fn device_globs_match_within_one_component() {
        let cases = [
            ("/dev/infiniband/uverbs*", "/dev/infiniband/uverbs0", true),
            ("/dev/infiniband/*", "/dev/infiniband/rdma_cm", true),
            ("/dev/infiniband/umad?", "/dev/infiniband/umad0", true),
            ("/dev/infiniband/umad?", "/dev/infiniband/umad10", false),
            ("/dev/infiniband/uverbs*", "/dev/infiniband/issm0", false),
            ("/dev/nvidia[0-9]", "/dev/nvidia3", true),
            ("/dev/nvidia[0-9]", "/dev/nvidiactl", false),
            ("/dev/nvidia[!0-9]*", "/dev/nvidiactl", true),
            ("/dev/sd[ab]", "/dev/sda", true),
            ("/dev/sd[ab]", "/dev/sdc", false),
            // `*` and `?` never cross a `/`: `/dev/*` is not every device below /dev.
            ("/dev/*", "/dev/mem", true),
            ("/dev/*", "/dev/cpu/0/msr", false),
            ("/dev/cpu/*", "/dev/cpu/0/msr", false),
            ("/dev/cpu/?/msr", "/dev/cpu/0/msr", true),
            ("/dev/a?b", "/dev/a/b", false),
            ("/dev/a[/]b", "/dev/a/b", false),
            ("/dev/NULL", "/dev/null", false),
            ("/dev/*", "/dev/.hidden", true),
        ];
        for (glob, path, want) in cases {
            let g = DeviceGlob::parse(glob).unwrap();
            assert_eq!(g.matches(path), want, "{glob} ~ {path}");
        }
    }

    #[test]
    fn device_globs_refuse_what_they_would_misread() {
        let cases = [
            ("/dev/**", DeviceGlobError::Recursive),
            ("/dev/**/x", DeviceGlobError::Recursive),
            ("/dev/a**", DeviceGlobError::Recursive),
            ("/dev/{sda,sdb}", DeviceGlobError::Braces),
        ];
        for (glob, want) in cases {
            assert_eq!(DeviceGlob::parse(glob).unwrap_err(), want, "{glob}");
        }
        for glob in ["/dev/sd[a", "/dev/sd[]"] {
            assert!(
                matches!(DeviceGlob::parse(glob), Err(DeviceGlobError::Syntax { .. })),
                "{glob}"
            );
        }
        assert!(expand_glob("/dev/**").is_empty());
    }

    #[test]
    fn glob_finds_real_devices_only() {
        let probe = AsUser {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        let found = probe.devices("/dev/nul?");
        assert_eq!(found, [PathBuf::from("/dev/null")]);
        assert_eq!(probe.devices("/dev/[n]ull"), [PathBuf::from("/dev/null")]);
        assert_eq!(
            probe.devices("/dev/[uz]ero"),
            [PathBuf::from("/dev/zero")],
            "a class matches one character of the set"
        );
        assert!(probe.devices("/dev/no-such-dir/*").is_empty());
    }

    #[test]
    fn reads_refuse_non_regular_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "A=1\n").unwrap();
        assert_eq!(read_here(&f, 100).unwrap(), "A=1\n");
        assert!(
            read_here(&f, 2)
                .unwrap_err()
                .message
                .contains("larger than")
        );
        assert!(read_here(dir.path(), 100).is_err());
        assert!(
            read_here(Path::new("/dev/null"), 100)
                .unwrap_err()
                .message
                .contains("not a regular file")
        );
    }

    #[test]
    fn resolve_follows_symlinks_to_the_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let r = resolve_here(&link).unwrap();
        assert_eq!(r.path, std::fs::canonicalize(&real).unwrap());
        assert_eq!(r.kind, Kind::Dir);
    }

    #[test]
    fn resolving_pins_what_the_real_path_names() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let want = FileId::of(&nix::sys::stat::stat(&real).unwrap());
        assert_eq!(resolve_here(&link).unwrap().id, Some(want));
        assert_eq!(resolve_here(&real).unwrap().id, Some(want));
    }

    #[test]
    fn opening_without_symlinks_refuses_any_on_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("l")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a/etc")).unwrap();
        assert!(open_no_symlinks(&root.join("a/b")).is_ok());
        for path in ["l/b", "a/etc", "l"] {
            let e = open_no_symlinks(&root.join(path)).unwrap_err();
            assert!(e.contains("is now a symbolic link"), "{path}: {e}");
        }
        assert!(open_no_symlinks(&root.join("a/../a/b")).is_err());
        assert!(open_no_symlinks(&root.join("nope")).is_err());
    }

    /// A probe whose answer for a path changes between two questions: the path was swapped
    /// while jobdock was checking it.
    struct Flipping(std::cell::Cell<u64>);

    impl HostProbe for Flipping {
        fn resolve(&self, path: &Path) -> Result<Resolved, ProbeError> {
            self.0.set(self.0.get() + 1);
            Ok(Resolved {
                path: path.to_path_buf(),
                kind: Kind::Dir,
                id: Some(FileId {
                    dev: 1,
                    ino: self.0.get(),
                }),
                owner: None,
            })
        }
        fn read_file(&self, _: &Path, _: u64) -> Result<String, ProbeError> {
            Err(ProbeError::other("no"))
        }
        fn devices(&self, _: &str) -> Vec<PathBuf> {
            Vec::new()
        }
    }

    #[test]
    fn a_path_seen_as_two_files_is_never_pinned() {
        let flipping = Flipping(Default::default());
        let recording = Recording::new(&flipping);
        let (a, b) = (Path::new("/gpfs/a"), Path::new("/gpfs/b"));
        recording.resolve(a).unwrap();
        recording.resolve(b).unwrap();
        let pins = recording.pins([a, b, Path::new("/run/jobdock/x")]).unwrap();
        assert_eq!(pins.len(), 2, "{pins:?}");
        recording.resolve(a).unwrap();
        assert_eq!(recording.pins([b]).unwrap().len(), 1);
        assert_eq!(recording.pins([a, b]), Err(a.to_path_buf()));
    }
}
