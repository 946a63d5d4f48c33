//! Who the job user is, decided only from what the user cannot forge (the kernel's real uid, or a
//! root caller's word), with groups from the host's NSS; and the minimal `/etc/passwd` and
//! `/etc/group` the container gets. Lookups go through the `UserDb` seam; everything else is pure.

use std::path::PathBuf;

use crate::job::{Env, JobContext};

mod nss;
mod synth;

pub use nss::Nss;
pub use synth::{group_file, passwd_file};

/// Ids at or above 2^31 are refused: they overflow signed parsers in runtimes (CVE-2024-40635 and
/// friends) and no sane directory hands them out.
pub const MAX_ID: u32 = (1 << 31) - 1;

/// nobody's uid and nogroup's gid (the synthesized files name them so).
pub const NOBODY: u32 = 65534;

/// A passwd entry as NSS returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// The host's user and group database (NSS), behind a seam so tests can use a fake.
pub trait UserDb {
    fn user_by_uid(&self, uid: u32) -> Result<Option<PasswdEntry>, NssError>;
    fn user_by_name(&self, name: &str) -> Result<Option<PasswdEntry>, NssError>;
    /// All groups of the user, as `getgrouplist(3)` returns them (the primary gid included).
    fn group_list(&self, name: &str, gid: u32) -> Result<Vec<u32>, NssError>;
    fn group_name(&self, gid: u32) -> Result<Option<String>, NssError>;
}

/// Why the user or group database did not answer (an entry that does not exist is `Ok(None)`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NssError {
    /// The lookup failed: NSS's errno (EIO, EAGAIN from an unreachable directory, ...).
    #[error("{0}")]
    Errno(nix::errno::Errno),
    /// A name no C library call can take.
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
}

/// The ids of the process that runs jobdock, as the kernel reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub real_uid: u32,
    pub real_gid: u32,
}

impl Caller {
    /// This process's real ids: who ran jobdock, whatever its effective ids (setuid) are.
    pub fn current() -> Caller {
        Caller {
            real_uid: nix::unistd::getuid().as_raw(),
            real_gid: nix::unistd::getgid().as_raw(),
        }
    }

    pub fn is_root(self) -> bool {
        self.real_uid == 0
    }
}

/// The job user, resolved and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
    /// The name of the primary group, if it has a safe one.
    pub group: Option<String>,
    /// Supplementary groups (primary excluded), sorted, with their names where safe to write.
    pub groups: Vec<(u32, Option<String>)>,
}

/// Where the identity claim came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    RealUid,
    UserFlag(String),
    Variable(&'static str, String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("--user {0}: only root may run a job as another user (you are uid {1})")]
    NotRoot(String, u32),
    #[error("running as root: name the job user with --user (or SLURM_JOB_UID / SUDO_UID)")]
    NoUser,
    #[error("{0}: no such user")]
    NoSuchUser(String),
    #[error("{source_}: {reason}")]
    Unusable { source_: String, reason: String },
    #[error(
        "cannot look up {what}: {reason} (jobdock does not run a job without the user's groups)"
    )]
    Lookup { what: String, reason: String },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::RealUid => write!(f, "the calling user"),
            Source::UserFlag(u) => write!(f, "--user {u}"),
            Source::Variable(name, v) => write!(f, "{name}={v}"),
        }
    }
}

/// Decides who the job user is. A non-root caller is always itself, whatever `--user` or the
/// environment claim; a root caller names the user with `--user`, else the scheduler's
/// `SLURM_JOB_UID`, else `SUDO_UID`.
pub fn resolve(
    caller: Caller,
    user_flag: Option<&str>,
    ctx: &JobContext,
    env: &Env,
    db: &dyn UserDb,
) -> Result<Identity, IdentityError> {
    let lookup_err = |what: String| {
        move |reason: NssError| IdentityError::Lookup {
            what: what.clone(),
            reason: reason.to_string(),
        }
    };
    let (source, entry, gid) = if !caller.is_root() {
        let me = db
            .user_by_uid(caller.real_uid)
            .map_err(lookup_err(format!("uid {}", caller.real_uid)))?
            .ok_or_else(|| IdentityError::Lookup {
                what: format!("uid {}", caller.real_uid),
                reason: "no passwd entry".into(),
            })?;
        if let Some(claimed) = user_flag {
            let same = claimed == me.name || claimed.parse::<u32>().ok() == Some(me.uid);
            if !same {
                return Err(IdentityError::NotRoot(claimed.into(), caller.real_uid));
            }
        }
        (Source::RealUid, me, caller.real_gid)
    } else {
        let (source, entry) = if let Some(claimed) = user_flag {
            let source = Source::UserFlag(claimed.into());
            let entry = if !claimed.is_empty() && claimed.bytes().all(|b| b.is_ascii_digit()) {
                let uid = parse_id(claimed, &source)?;
                db.user_by_uid(uid)
                    .map_err(lookup_err(format!("uid {uid}")))?
            } else {
                db.user_by_name(claimed)
                    .map_err(lookup_err(format!("user {claimed}")))?
            };
            (
                source.clone(),
                entry.ok_or_else(|| IdentityError::NoSuchUser(source.to_string()))?,
            )
        } else {
            let (name, value) = match (ctx.scheduler_uid, env.get("SUDO_UID")) {
                (Some(uid), _) => ("SLURM_JOB_UID", uid.to_string()),
                (None, Some(v)) => ("SUDO_UID", v.clone()),
                (None, None) => return Err(IdentityError::NoUser),
            };
            let source = Source::Variable(name, value.clone());
            let uid = parse_id(&value, &source)?;
            let entry = db
                .user_by_uid(uid)
                .map_err(lookup_err(format!("uid {uid}")))?;
            (
                source.clone(),
                entry.ok_or_else(|| IdentityError::NoSuchUser(source.to_string()))?,
            )
        };
        let gid = entry.gid;
        (source, entry, gid)
    };
    let unusable = |reason: String| IdentityError::Unusable {
        source_: source.to_string(),
        reason,
    };

    check_id("uid", entry.uid).map_err(unusable)?;
    check_id("gid", gid).map_err(unusable)?;
    if !synth::safe_user_name(&entry.name) {
        return Err(unusable(format!(
            "user name {:?} cannot be written safely to /etc/passwd",
            entry.name
        )));
    }
    if !synth::safe_home(&entry.home) {
        return Err(unusable(format!(
            "home directory {:?} is not a clean absolute path",
            entry.home
        )));
    }

    let mut gids = db
        .group_list(&entry.name, gid)
        .map_err(lookup_err(format!("the groups of {}", entry.name)))?;
    gids.sort_unstable();
    gids.dedup();
    let mut groups = Vec::new();
    for g in gids.into_iter().filter(|&g| g != gid) {
        check_id("supplementary gid", g).map_err(unusable)?;
        let name = db.group_name(g).map_err(lookup_err(format!("group {g}")))?;
        groups.push((g, name.filter(|n| synth::safe_group_name(n))));
    }
    let group = db
        .group_name(gid)
        .map_err(lookup_err(format!("group {gid}")))?
        .filter(|n| synth::safe_group_name(n));
    Ok(Identity {
        uid: entry.uid,
        gid,
        name: entry.name,
        home: entry.home,
        group,
        groups,
    })
}

fn parse_id(text: &str, source: &Source) -> Result<u32, IdentityError> {
    let unusable = |reason: &str| IdentityError::Unusable {
        source_: source.to_string(),
        reason: reason.into(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unusable("not a numeric id"));
    }
    text.parse::<u32>()
        .map_err(|_| unusable("id out of range (must be below 2^31)"))
}

fn check_id(what: &str, id: u32) -> Result<(), String> {
    match id {
        0 => Err(format!("{what} 0 (root) may never run a job")),
        id if id > MAX_ID => Err(format!("{what} {id} is 2^31 or above")),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::collections::BTreeMap;

    /// An in-memory user database: alice (2001, groups 3001 jdproj, 3002 jdshared), bob (2002).
    #[derive(Clone, Default)]
    pub(crate) struct FakeDb {
        pub users: Vec<PasswdEntry>,
        pub groups: BTreeMap<u32, String>,
        pub memberships: BTreeMap<String, Vec<u32>>,
        pub fail: Option<&'static str>,
    }

    impl FakeDb {
        pub(crate) fn site() -> FakeDb {
            let user = |name: &str, uid, gid| PasswdEntry {
                name: name.into(),
                uid,
                gid,
                home: format!("/home/{name}").into(),
            };
            FakeDb {
                users: vec![
                    user("alice", 2001, 2001),
                    user("bob", 2002, 2002),
                    user("root", 0, 0),
                    user("big", 3_000_000_000, 2001),
                ],
                groups: [
                    (2001, "alice"),
                    (2002, "bob"),
                    (3001, "jdproj"),
                    (3002, "jdshared"),
                    (0, "root"),
                ]
                .into_iter()
                .map(|(g, n)| (g, n.to_string()))
                .collect(),
                memberships: [
                    ("alice", vec![2001, 3001, 3002]),
                    ("bob", vec![2002, 3002]),
                    ("root", vec![0]),
                    ("big", vec![2001]),
                ]
                .into_iter()
                .map(|(n, g)| (n.to_string(), g))
                .collect(),
                fail: None,
            }
        }
    }

    impl UserDb for FakeDb {
        fn user_by_uid(&self, uid: u32) -> Result<Option<PasswdEntry>, NssError> {
            Ok(self.users.iter().find(|u| u.uid == uid).cloned())
        }
        fn user_by_name(&self, name: &str) -> Result<Option<PasswdEntry>, NssError> {
            Ok(self.users.iter().find(|u| u.name == name).cloned())
        }
        fn group_list(&self, name: &str, gid: u32) -> Result<Vec<u32>, NssError> {
            if self.fail == Some("group_list") {
                // What glibc reports when sssd does not answer.
                return Err(NssError::Errno(nix::errno::Errno::EAGAIN));
            }
            let mut g = self.memberships.get(name).cloned().unwrap_or_default();
            g.push(gid);
            Ok(g)
        }
        fn group_name(&self, gid: u32) -> Result<Option<String>, NssError> {
            Ok(self.groups.get(&gid).cloned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeDb;
    use super::*;
    use crate::job::env_of;

    const ROOT: Caller = Caller {
        real_uid: 0,
        real_gid: 0,
    };
    const ALICE: Caller = Caller {
        real_uid: 2001,
        real_gid: 2001,
    };

    fn slurm_ctx(uid: Option<u32>) -> JobContext {
        JobContext {
            scheduler_uid: uid,
            ..Default::default()
        }
    }

    #[test]
    fn a_non_root_caller_is_always_itself() {
        let db = FakeDb::site();
        // Every claim the environment can make about someone else is ignored.
        let env = env_of(&[
            ("SUDO_UID", "2002"),
            ("USER", "bob"),
            ("LOGNAME", "bob"),
            ("SLURM_JOB_UID", "2002"),
        ]);
        let id = resolve(ALICE, None, &slurm_ctx(Some(2002)), &env, &db).unwrap();
        assert_eq!((id.uid, id.gid, id.name.as_str()), (2001, 2001, "alice"));
        assert_eq!(
            id.groups,
            [
                (3001, Some("jdproj".into())),
                (3002, Some("jdshared".into()))
            ]
        );
        assert_eq!(id.group.as_deref(), Some("alice"));
    }

    #[test]
    fn a_non_root_caller_cannot_claim_another_user_with_the_flag() {
        let db = FakeDb::site();
        for claim in ["bob", "2002", "root", "0"] {
            let err = resolve(ALICE, Some(claim), &slurm_ctx(None), &Env::new(), &db).unwrap_err();
            assert_eq!(err, IdentityError::NotRoot(claim.into(), 2001), "{claim}");
        }
        // Naming oneself is fine.
        for claim in ["alice", "2001"] {
            assert_eq!(
                resolve(ALICE, Some(claim), &slurm_ctx(None), &Env::new(), &db)
                    .unwrap()
                    .uid,
                2001
            );
        }
    }

    #[test]
    fn a_non_root_caller_keeps_its_real_gid() {
        // newgrp / sg: the real gid is the one the kernel gives the process.
        let db = FakeDb::site();
        let id = resolve(
            Caller {
                real_uid: 2001,
                real_gid: 3001,
            },
            None,
            &slurm_ctx(None),
            &Env::new(),
            &db,
        )
        .unwrap();
        assert_eq!(id.gid, 3001);
        assert_eq!(
            id.groups.iter().map(|g| g.0).collect::<Vec<_>>(),
            [2001, 3002]
        );
    }

    #[test]
    fn root_names_the_user_in_order_flag_scheduler_sudo() {
        let db = FakeDb::site();
        let sudo = env_of(&[("SUDO_UID", "2002")]);
        let cases: &[(&str, Option<&str>, Option<u32>, &Env, u32)] = &[
            ("--user name", Some("bob"), Some(2001), &sudo, 2002),
            ("--user uid", Some("2001"), None, &sudo, 2001),
            ("SLURM_JOB_UID over SUDO_UID", None, Some(2001), &sudo, 2001),
            ("SUDO_UID", None, None, &sudo, 2002),
        ];
        for (name, flag, sched, env, want) in cases {
            let id = resolve(ROOT, *flag, &slurm_ctx(*sched), env, &db)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(id.uid, *want, "{name}");
            assert_eq!(
                id.gid, *want,
                "{name}: root callers get the passwd primary gid"
            );
        }
    }

    #[test]
    fn refusals() {
        let db = FakeDb::site();
        let mut failing = FakeDb::site();
        failing.fail = Some("group_list");
        let cases: &[(
            &str,
            Caller,
            Option<&str>,
            Option<u32>,
            &[(&str, &str)],
            &FakeDb,
            &str,
        )] = &[
            (
                "root without a user",
                ROOT,
                None,
                None,
                &[],
                &db,
                "name the job user",
            ),
            ("root as root", ROOT, Some("root"), None, &[], &db, "uid 0"),
            ("uid 0 by number", ROOT, Some("0"), None, &[], &db, "uid 0"),
            ("SLURM_JOB_UID=0", ROOT, None, Some(0), &[], &db, "uid 0"),
            (
                "SUDO_UID root",
                ROOT,
                None,
                None,
                &[("SUDO_UID", "0")],
                &db,
                "uid 0",
            ),
            (
                "SUDO_UID junk",
                ROOT,
                None,
                None,
                &[("SUDO_UID", "12a")],
                &db,
                "not a numeric id",
            ),
            (
                "SUDO_UID overflow",
                ROOT,
                None,
                None,
                &[("SUDO_UID", "99999999999")],
                &db,
                "out of range",
            ),
            ("id above 2^31", ROOT, Some("big"), None, &[], &db, "2^31"),
            (
                "unknown name",
                ROOT,
                Some("mallory"),
                None,
                &[],
                &db,
                "no such user",
            ),
            (
                "unknown uid",
                ROOT,
                Some("4242"),
                None,
                &[],
                &db,
                "no such user",
            ),
            (
                "NSS down: fail closed",
                ROOT,
                Some("alice"),
                None,
                &[],
                &failing,
                "does not run a job without",
            ),
            (
                "non-root without passwd entry",
                Caller {
                    real_uid: 4242,
                    real_gid: 4242,
                },
                None,
                None,
                &[],
                &db,
                "no passwd entry",
            ),
            (
                "non-root caller with gid 0",
                Caller {
                    real_uid: 2001,
                    real_gid: 0,
                },
                None,
                None,
                &[],
                &db,
                "gid 0",
            ),
        ];
        for (name, caller, flag, sched, env, db, want) in cases {
            let err = resolve(*caller, *flag, &slurm_ctx(*sched), &env_of(env), *db)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn supplementary_gid_zero_is_refused() {
        let mut db = FakeDb::site();
        db.memberships.get_mut("alice").unwrap().push(0);
        let err = resolve(ALICE, None, &slurm_ctx(None), &Env::new(), &db)
            .unwrap_err()
            .to_string();
        assert!(err.contains("supplementary gid 0"), "{err}");
    }

    #[test]
    fn hostile_names_are_refused_or_left_out_of_the_group_file() {
        let mut db = FakeDb::site();
        db.users.push(PasswdEntry {
            name: "eve\nroot::0:0::/:/bin/sh".into(),
            uid: 2005,
            gid: 2005,
            home: "/home/eve".into(),
        });
        db.users.push(PasswdEntry {
            name: "+nis".into(),
            uid: 2006,
            gid: 2006,
            home: "/home/nis".into(),
        });
        db.users.push(PasswdEntry {
            name: "dan".into(),
            uid: 2007,
            gid: 2007,
            home: "/home/dan:/bin/sh".into(),
        });
        for uid in ["2005", "2006", "2007"] {
            let err = resolve(ROOT, Some(uid), &slurm_ctx(None), &Env::new(), &db)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("cannot be written safely") || err.contains("not a clean"),
                "{uid}: {err}"
            );
        }
        db.groups.insert(3001, "evil:x:0:alice".into());
        let id = resolve(ALICE, None, &slurm_ctx(None), &Env::new(), &db).unwrap();
        assert_eq!(
            id.groups[0],
            (3001, None),
            "the gid is kept, the unwritable name is not"
        );
    }
}
