//! Unix users and groups, from the user database: the control socket's group and who belongs
//! to it.

use anyhow::{Context as _, Result, bail};
use nix::unistd::{Gid, Group, Uid, User, getgrouplist};

/// The id of the group `name`.
pub fn group_id(name: &str) -> Result<u32> {
    match Group::from_name(name).with_context(|| format!("looking up group {name} failed"))? {
        Some(group) => Ok(group.gid.as_raw()),
        None => bail!(
            "there is no group {name}: create it (`groupadd {name}`) and add the users who may \
             read drlb's counters, or remove control_group from [director]"
        ),
    }
}

/// The groups `uid` belongs to in the user database (its primary group included); empty when
/// the user is unknown or the lookup fails (it then gets no group's rights).
#[must_use]
pub fn groups_of(uid: u32) -> Vec<u32> {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return Vec::new();
    };
    getgrouplist(&name, user.gid)
        .map(|groups| groups.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_default()
}
