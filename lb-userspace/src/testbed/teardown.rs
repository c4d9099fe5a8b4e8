//! `drlb testbed down`: stops every process in the testbed's namespaces (drlb first, so that
//! it detaches its program cleanly), deletes the namespaces and the state directory. Works on
//! a half-made testbed and on none at all.

use std::{fs, io, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    plan::{self, is_testbed_netns},
    shell, state_dir,
};

/// How long drlb gets to detach and exit after SIGTERM before it is killed.
const DRLB_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long other processes (the user's servers) get after SIGTERM.
const OTHERS_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Removes testbed `name`: returns what it removed (empty when nothing was there).
pub fn down(name: &str) -> Result<Vec<String>> {
    plan::validate_name(name)?;
    let mut removed = Vec::new();
    let mut namespaces: Vec<String> = shell::namespaces()
        .context("cannot list the network namespaces")?
        .into_iter()
        .filter(|ns| is_testbed_netns(name, ns))
        .collect();
    // The director's first: drlb detaches from its interface and removes its socket on SIGTERM.
    let director = plan::netns_name(name, "director");
    namespaces.sort_by_key(|ns| *ns != director);
    for netns in &namespaces {
        let timeout = if *netns == director {
            DRLB_STOP_TIMEOUT
        } else {
            OTHERS_STOP_TIMEOUT
        };
        stop_processes(netns, timeout)?;
    }
    for netns in &namespaces {
        shell::ip(&["netns", "del", netns])
            .with_context(|| format!("cannot delete the namespace {netns}"))?;
        removed.push(format!("namespace {netns}"));
    }
    let state = state_dir(name);
    match fs::remove_dir_all(&state) {
        Ok(()) => removed.push(format!("directory {}", state.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot remove {}", state.display()));
        }
    }
    Ok(removed)
}

/// SIGTERM to every process in `netns`, SIGKILL to those still there after `timeout`: a
/// namespace with a process in it would outlive `ip netns del`.
fn stop_processes(netns: &str, timeout: Duration) -> Result<()> {
    let pids = shell::pids_in(netns)
        .with_context(|| format!("cannot list the processes in the namespace {netns}"))?;
    for &pid in &pids {
        shell::signal(pid, libc::SIGTERM);
    }
    if !shell::wait_until(timeout, || !pids.iter().any(|&p| shell::alive(p))) {
        for &pid in &pids {
            shell::signal(pid, libc::SIGKILL);
        }
    }
    Ok(())
}
