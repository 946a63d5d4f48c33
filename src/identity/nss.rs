//! The host's NSS through reentrant libc calls (getpwuid_r, getpwnam_r, getgrgid_r,
//! getgrouplist). Never enumerates the user or group database.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User};

use super::{NssError, PasswdEntry, UserDb};

pub struct Nss;

fn entry(u: User) -> PasswdEntry {
    PasswdEntry {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
    }
}

impl UserDb for Nss {
    fn user_by_uid(&self, uid: u32) -> Result<Option<PasswdEntry>, NssError> {
        User::from_uid(Uid::from_raw(uid))
            .map(|u| u.map(entry))
            .map_err(NssError::Errno)
    }

    fn user_by_name(&self, name: &str) -> Result<Option<PasswdEntry>, NssError> {
        if name.contains('\0') {
            return Ok(None);
        }
        User::from_name(name)
            .map(|u| u.map(entry))
            .map_err(NssError::Errno)
    }

    fn group_list(&self, name: &str, gid: u32) -> Result<Vec<u32>, NssError> {
        let cname = CString::new(name).map_err(|_| NssError::Nul(name.to_string()))?;
        nix::unistd::getgrouplist(&cname, Gid::from_raw(gid))
            .map(|gids| gids.into_iter().map(Gid::as_raw).collect())
            .map_err(NssError::Errno)
    }

    fn group_name(&self, gid: u32) -> Result<Option<String>, NssError> {
        Group::from_gid(Gid::from_raw(gid))
            .map(|g| g.map(|g| g.name))
            .map_err(NssError::Errno)
    }
}
