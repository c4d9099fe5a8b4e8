//! Running `drlb` in a network namespace: commands against a daemon's state directory, and a
//! daemon started as a guarded background process that is only returned once it is ready.

use std::{ffi::OsString, path::Path, time::Duration};

use crate::netns::{Netns, Process, Ran, poll_until};

/// How long a starting daemon may take to answer `drlb stats`.
pub const DRLB_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `drlb` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// `drlb ARGS... --state-dir STATE` in `ns`, bounded.
#[must_use]
pub fn drlb_in(ns: &Netns, state: &Path, args: &[&str]) -> Ran {
    let mut argv: Vec<OsString> = vec![crate::drlb_binary().into_os_string()];
    argv.extend(args.iter().map(OsString::from));
    argv.extend([OsString::from("--state-dir"), state.as_os_str().to_owned()]);
    ns.exec(&argv, COMMAND_TIMEOUT)
}

/// `drlb ARGS...` in `ns`, bounded, with no state directory added (e.g. `drlb realserver`).
#[must_use]
pub fn drlb_plain(ns: &Netns, args: &[&str]) -> Ran {
    let mut argv: Vec<OsString> = vec![crate::drlb_binary().into_os_string()];
    argv.extend(args.iter().map(OsString::from));
    ns.exec(&argv, COMMAND_TIMEOUT)
}

/// `drlb stats --json --state-dir STATE` in `ns`, parsed.
#[must_use]
pub fn stats_in(ns: &Netns, state: &Path) -> serde_json::Value {
    let out = drlb_in(ns, state, &["stats", "--json"]).expect_success();
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`drlb stats --json` printed invalid JSON ({e}):\n{out}"))
}

/// Starts `drlb run --config CONFIG --state-dir STATE EXTRA...` in `ns` and waits until it is
/// ready (`drlb stats` answers).
#[track_caller]
pub fn start_drlb(
    ns: &Netns,
    label: &str,
    config: &Path,
    state: &Path,
    extra: &[&str],
    logs: &Path,
) -> Process {
    start_drlb_with_env(ns, label, config, state, extra, logs, &[])
}

/// [`start_drlb`] with `VAR=value` settings in drlb's environment.
#[track_caller]
pub fn start_drlb_with_env(
    ns: &Netns,
    label: &str,
    config: &Path,
    state: &Path,
    extra: &[&str],
    logs: &Path,
    env: &[&str],
) -> Process {
    let mut argv: Vec<OsString> = vec!["env".into()];
    argv.extend(env.iter().map(OsString::from));
    argv.push(crate::drlb_binary().into_os_string());
    argv.extend(["run", "--config"].map(OsString::from));
    argv.push(config.as_os_str().to_owned());
    argv.push("--state-dir".into());
    argv.push(state.as_os_str().to_owned());
    argv.extend(extra.iter().map(OsString::from));
    let mut drlb = ns.spawn(label, &argv, logs);
    let ready = poll_until(DRLB_TIMEOUT, Duration::from_millis(100), || {
        if drlb.try_status().is_some() {
            return Some(false);
        }
        drlb_in(ns, state, &["stats"]).success().then_some(true)
    });
    match ready {
        Some(true) => drlb,
        Some(false) => panic!("{label} exited before it was ready: {}", drlb.describe()),
        None => panic!(
            "{label} was not ready within {DRLB_TIMEOUT:?}: {}",
            drlb.describe()
        ),
    }
}
