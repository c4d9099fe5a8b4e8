//! The commands a testbed is built with: `ip` and `ethtool` (bounded in time, failures with the
//! command line and its stderr), detached background processes, and signals.

use std::{
    fs::File,
    io::Read as _,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// How long `ip`, `ethtool` or a short drlb command may take before it counts as hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a wait looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// `cmd` as a line to paste into a shell, for messages.
fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion (killed after [`COMMAND_TIMEOUT`]) and returns its stdout; a
/// failure names the command and what it printed on stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let line = command_line(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("cannot start `{line}`: is it installed (`cargo xtask setup`)?")
        })?;
    // Read both pipes on threads, so that a chatty command cannot block on a full pipe.
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let status = wait_bounded(&mut child, COMMAND_TIMEOUT);
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => bail!("`{line}` failed ({status}): {}", stderr.trim()),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{line}` did not finish within {COMMAND_TIMEOUT:?} and was killed")
        }
    }
}

/// Waits up to `timeout` for `child` to exit.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            _ => return None,
        }
    }
}

/// `ip ARGS...` in the root namespace (only `ip netns add|del|list|pids`).
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// `ip -n NETNS ARGS...`.
pub fn ip_in(netns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(["-n", netns]).args(args))
}

/// A command running `program args...` inside `netns` (`ip netns exec`, which execs the
/// program itself: a spawned child's pid is the program's).
pub fn in_netns(netns: &str, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).arg(program).args(args);
    cmd
}

/// Starts `cmd` detached: its own process group (a Ctrl-C of the caller's shell does not reach
/// it), stdin from /dev/null, stdout and stderr to `log`. It outlives this process.
pub fn spawn_detached(cmd: &mut Command, log: &Path) -> Result<Child> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("cannot reopen {}", log.display()))?;
    let line = command_line(cmd);
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))
}

/// The namespaces that exist (`ip netns list`).
pub fn namespaces() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The processes inside `netns` (`ip netns pids`).
pub fn pids_in(netns: &str) -> Result<Vec<i32>> {
    Ok(ip(&["netns", "pids", netns])?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Sends `signal` to `pid`; a process that is gone already is fine.
pub fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; a stale pid is at worst ESRCH.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Whether `pid` still exists (a zombie counts as gone: it holds no namespace).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name in parentheses, which may hold spaces.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// Polls `check` until it is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL_INTERVAL);
    }
}
