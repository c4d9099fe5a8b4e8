//! The control socket: a Unix stream socket in the state directory; one JSON request line in,
//! one JSON response line out.
//!
//! Who may do what: root everything; members of the optional control group (`[director]
//! control_group`) read-only requests (`drlb stats`); nobody else anything. The socket is
//! created under a restrictive umask (never open to others, not even for a moment), then
//! given mode 0660 and the control group (0600, root's, without one). Each connection's peer
//! is checked again by its credentials (SO_PEERCRED): the file mode is not the only gate.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};
use tracing::warn;

use crate::{
    accounts::{group_id, groups_of},
    director::Change,
    report::stats::StatsReport,
};

pub const SOCKET_NAME: &str = "drlb.sock";
/// The socket's mode without a control group: root's only.
const SOCKET_MODE_ROOT_ONLY: u32 = 0o600;
/// With a control group: root and the group (which the peer check limits to reading).
const SOCKET_MODE_GROUP: u32 = 0o660;
/// The umask the socket is created under: nothing for the group or others, whatever the
/// process's umask is; the mode is widened to the group's once the group owns the socket.
const PRIVATE_UMASK: libc::mode_t = 0o177;
/// The user id that may change things.
const ROOT_UID: u32 = 0;
/// How many supplementary groups of a user are looked at first (more: looked up again).
/// A client that sends no request within this time is dropped, so it cannot stall the daemon.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request line read: far more than any request needs, and a client cannot make
/// the daemon buffer more.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Stats,
    /// Apply a change to the running configuration.
    Change {
        change: Change,
    },
    /// Apply several changes as one, in order (refused whole if one is refused).
    Changes {
        changes: Vec<Change>,
    },
    /// Answer ARP for the VIPs and forward their traffic (`drlb vip activate`).
    Activate,
    /// Become a standby: no ARP answers, no forwarding (`drlb vip deactivate`).
    Deactivate,
}

impl Request {
    /// Whether the request only reads: what members of the control group may send.
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        match self {
            Self::Stats => true,
            Self::Change { .. } | Self::Changes { .. } | Self::Activate | Self::Deactivate => false,
        }
    }

    /// What the request is called in messages.
    fn name(&self) -> &'static str {
        match self {
            Self::Stats => "stats",
            Self::Change { .. } => "a change",
            Self::Changes { .. } => "changes",
            Self::Activate => "vip activate",
            Self::Deactivate => "vip deactivate",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    Stats(StatsReport),
    /// The change was applied (and is live in the data plane); one line per effect.
    Applied(Vec<String>),
    Error(String),
}

#[must_use]
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// What a peer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Root: every request.
    Full,
    /// A member of the control group: read-only requests.
    ReadOnly,
    /// Anyone else: nothing.
    Denied,
}

/// The access of a peer with this uid and (primary) gid. `groups_of` lists a uid's
/// supplementary groups from the user database; it is asked only when needed.
pub fn access(
    uid: u32,
    gid: u32,
    control_group: Option<u32>,
    groups_of: impl FnOnce(u32) -> Vec<u32>,
) -> Access {
    if uid == ROOT_UID {
        return Access::Full;
    }
    match control_group {
        Some(group) if gid == group || groups_of(uid).contains(&group) => Access::ReadOnly,
        _ => Access::Denied,
    }
}

/// The control group: its name (for messages) and id.
#[derive(Clone, Debug)]
struct ControlGroup {
    name: String,
    gid: u32,
}

/// Binds the control socket under a temporary name; [`Bound::publish`] renames it into place
/// once the daemon is ready, so the socket's existence means "ready". Fails if another daemon
/// answers on the socket already.
pub struct Bound {
    pub listener: UnixListener,
    temporary: PathBuf,
    path: PathBuf,
    group: Option<ControlGroup>,
}

/// `group`: the control group (`[director] control_group`), whose members may read.
pub async fn bind(state_dir: &Path, group: Option<&str>) -> Result<Bound> {
    let group = group
        .map(|name| {
            Ok::<_, anyhow::Error>(ControlGroup {
                name: name.to_owned(),
                gid: group_id(name)?,
            })
        })
        .transpose()?;
    fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let path = socket_path(state_dir);
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            bail!(
                "another drlb daemon is running with state directory {} (stop it, or give this one its own --state-dir)",
                state_dir.display()
            );
        }
        fs::remove_file(&path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let temporary = state_dir.join(format!(".{SOCKET_NAME}.{}", std::process::id()));
    let _ = fs::remove_file(&temporary);
    let listener = {
        let _umask = Umask::set(PRIVATE_UMASK);
        UnixListener::bind(&temporary)
            .with_context(|| format!("cannot bind the control socket {}", temporary.display()))?
    };
    let bound = Bound {
        listener,
        temporary,
        path,
        group,
    };
    // Removed on error by Bound's drop.
    let mode = match &bound.group {
        Some(group) => {
            std::os::unix::fs::chown(&bound.temporary, None, Some(group.gid)).with_context(
                || {
                    format!(
                        "cannot give the control socket {} to group {}",
                        bound.temporary.display(),
                        group.name
                    )
                },
            )?;
            SOCKET_MODE_GROUP
        }
        None => SOCKET_MODE_ROOT_ONLY,
    };
    fs::set_permissions(&bound.temporary, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", bound.temporary.display()))?;
    Ok(bound)
}

/// The process umask, restored on drop. The umask is process-wide: the daemon binds before it
/// starts anything that creates files, so nothing else is created under it meanwhile.
struct Umask(libc::mode_t);

impl Umask {
    fn set(mask: libc::mode_t) -> Self {
        // SAFETY: umask has no preconditions and cannot fail.
        Self(unsafe { libc::umask(mask) })
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as in `set`.
        unsafe { libc::umask(self.0) };
    }
}

impl Bound {
    /// Reads one request from a client and checks that the client may send it: a refused
    /// request is an error starting with "permission denied", and nothing is done.
    pub async fn read_request(&self, stream: &mut UnixStream) -> Result<Request> {
        let peer = stream
            .peer_cred()
            .context("cannot tell who is connected to the control socket (SO_PEERCRED)")?;
        let (uid, gid) = (peer.uid(), peer.gid());
        let access = access(uid, gid, self.group.as_ref().map(|g| g.gid), groups_of);
        let group_hint = match &self.group {
            Some(group) => format!("members of group {} may read (drlb stats)", group.name),
            None => "set [director] control_group to let a group read (drlb stats)".to_owned(),
        };
        // Read before refusing: a client still writing its request when the socket closes
        // would see a broken pipe instead of the answer.
        let line = read_line(stream).await?;
        if access == Access::Denied {
            warn!(uid, gid, pid = ?peer.pid(), "control: connection refused: neither root nor in the control group");
            bail!(
                "permission denied: uid {uid} may not use drlb's control socket: root may; {group_hint}"
            );
        }
        let request: Request = serde_json::from_str(&line).context("malformed request")?;
        if access == Access::ReadOnly && !request.is_read_only() {
            warn!(uid, gid, pid = ?peer.pid(), request = request.name(), "control: request refused: read-only peer");
            bail!(
                "permission denied: {} needs root (uid {uid} is in the control group, which may only read)",
                request.name()
            );
        }
        Ok(request)
    }

    pub fn publish(&self) -> Result<()> {
        fs::rename(&self.temporary, &self.path)
            .with_context(|| format!("cannot create the control socket {}", self.path.display()))
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.temporary);
        let _ = fs::remove_file(&self.path);
    }
}

/// Reads a client's request line, bounded in time and size (see [`Bound::read_request`]).
async fn read_line(stream: &mut UnixStream) -> Result<String> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream).take(MAX_REQUEST_BYTES);
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .context("the client sent no request in time")??;
    if reader.limit() == 0 && !line.ends_with('\n') {
        bail!("the request is longer than {MAX_REQUEST_BYTES} bytes");
    }
    Ok(line)
}

pub async fn write_response(stream: &mut UnixStream, response: &Response) -> Result<()> {
    let mut line = serde_json::to_string(response)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    Ok(())
}

/// Sends `request` to the daemon of `state_dir` and returns its response.
pub async fn call(state_dir: &Path, request: &Request) -> Result<Response> {
    let path = socket_path(state_dir);
    let mut stream = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "no drlb daemon answers on {} (is `drlb run` running with this --state-dir?)",
            path.display()
        )
    })?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    let mut reply = String::new();
    tokio::time::timeout(
        REQUEST_TIMEOUT * 2,
        BufReader::new(&mut stream).read_line(&mut reply),
    )
    .await
    .context("the daemon did not answer in time")??;
    serde_json::from_str(&reply).context("the daemon's answer is not valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: u32 = 1234;
    const USER: u32 = 1000;
    const OTHER_GROUP: u32 = 1000;

    fn never(_: u32) -> Vec<u32> {
        panic!("the supplementary groups were not needed")
    }

    #[test]
    fn a_batch_of_changes_reads_as_the_readme_writes_it() {
        let line = r#"{"command":"changes","changes":[{"change":"backend-set-weight","service":{"protocol":"tcp","vip":"198.18.0.100","port":8080},"address":"198.18.0.11","weight":0}]}"#;
        let request: Request = serde_json::from_str(line).unwrap();
        let Request::Changes { changes } = &request else {
            panic!("{request:?}");
        };
        assert!(matches!(
            changes.as_slice(),
            [Change::BackendSetWeight { weight: 0, .. }]
        ));
        assert!(
            !request.is_read_only(),
            "a control group member may not send it"
        );
        assert!(
            include_str!("../../../README.md").contains(line),
            "the README shows this line"
        );
    }

    #[test]
    fn root_may_do_everything_with_or_without_a_control_group() {
        assert_eq!(access(ROOT_UID, 0, None, never), Access::Full);
        assert_eq!(
            access(ROOT_UID, OTHER_GROUP, Some(GROUP), never),
            Access::Full
        );
    }

    #[test]
    fn members_of_the_control_group_may_read_by_primary_or_supplementary_group() {
        assert_eq!(access(USER, GROUP, Some(GROUP), never), Access::ReadOnly);
        let member = |uid| {
            assert_eq!(uid, USER);
            vec![OTHER_GROUP, GROUP]
        };
        assert_eq!(
            access(USER, OTHER_GROUP, Some(GROUP), member),
            Access::ReadOnly
        );
    }

    #[test]
    fn everyone_else_is_denied() {
        let not_member = |_| vec![OTHER_GROUP];
        assert_eq!(
            access(USER, OTHER_GROUP, Some(GROUP), not_member),
            Access::Denied
        );
        assert_eq!(
            access(USER, GROUP, None, never),
            Access::Denied,
            "no control group"
        );
    }

    #[test]
    fn only_stats_is_read_only() {
        assert!(Request::Stats.is_read_only());
        for request in [Request::Activate, Request::Deactivate] {
            assert!(!request.is_read_only(), "{request:?}");
        }
    }

    #[tokio::test]
    async fn a_request_line_is_bounded_in_size() {
        let (mut daemon, mut client) = UnixStream::pair().expect("a socket pair");
        let long = vec![b'x'; usize::try_from(MAX_REQUEST_BYTES).expect("small") + 1];
        let writer = tokio::spawn(async move {
            // The daemon stops reading at the bound: the rest may never be taken.
            let _ = client.write_all(&long).await;
            client
        });
        let error = read_line(&mut daemon).await.expect_err("too long");
        assert!(format!("{error:#}").contains("longer than"), "{error:#}");
        drop(daemon);
        let _ = writer.await;

        let (mut daemon, mut client) = UnixStream::pair().expect("a socket pair");
        client
            .write_all(b"{\"command\":\"stats\"}\n")
            .await
            .expect("sent");
        let line = read_line(&mut daemon).await.expect("a request line");
        assert!(
            matches!(serde_json::from_str(&line), Ok(Request::Stats)),
            "{line}"
        );
    }

    #[test]
    fn groups_come_from_the_user_database() {
        // root's primary group is 0 on every Linux system.
        assert!(
            groups_of(ROOT_UID).contains(&0),
            "{:?}",
            groups_of(ROOT_UID)
        );
        assert_eq!(group_id("root").expect("group root"), 0);
        let error = group_id("drlb-no-such-group").expect_err("no such group");
        assert!(
            format!("{error:#}").contains("groupadd drlb-no-such-group"),
            "{error:#}"
        );
    }
}
