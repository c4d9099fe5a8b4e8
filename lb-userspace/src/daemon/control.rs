//! The control socket: a Unix stream socket in the state directory; one JSON request line in,
//! one JSON response line out. Only root can connect (mode 0600).

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};

use crate::{director::Change, report::stats::StatsReport};

pub const SOCKET_NAME: &str = "drlb.sock";
const SOCKET_MODE: u32 = 0o600;
/// A client that sends no request within this time is dropped, so it cannot stall the daemon.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Stats,
    /// Apply a change to the running configuration.
    Change {
        change: Change,
    },
    /// Answer ARP for the VIPs and forward their traffic (`drlb vip activate`).
    Activate,
    /// Become a standby: no ARP answers, no forwarding (`drlb vip deactivate`).
    Deactivate,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    Stats(StatsReport),
    /// The change was applied; one line per effect.
    Applied(Vec<String>),
    Error(String),
}

#[must_use]
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Binds the control socket under a temporary name; [`Bound::publish`] renames it into place
/// once the daemon is ready, so the socket's existence means "ready". Fails if another daemon
/// answers on the socket already.
pub struct Bound {
    pub listener: UnixListener,
    temporary: PathBuf,
    path: PathBuf,
}

pub async fn bind(state_dir: &Path) -> Result<Bound> {
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
    let listener = UnixListener::bind(&temporary)
        .with_context(|| format!("cannot bind the control socket {}", temporary.display()))?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(SOCKET_MODE))?;
    Ok(Bound {
        listener,
        temporary,
        path,
    })
}

impl Bound {
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

/// Reads one request from a client.
pub async fn read_request(stream: &mut UnixStream) -> Result<Request> {
    let mut line = String::new();
    tokio::time::timeout(REQUEST_TIMEOUT, BufReader::new(stream).read_line(&mut line))
        .await
        .context("the client sent no request in time")??;
    serde_json::from_str(&line).context("malformed request")
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
