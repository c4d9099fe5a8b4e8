//! Running under systemd: readiness and watchdog notifications (`Type=notify`, `WatchdogSec`),
//! and the director's unit, which `drlb install-unit` installs.
//!
//! Every notification is a no-op outside systemd (no `NOTIFY_SOCKET`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};
use sd_notify::NotifyState;
use tracing::warn;

/// Where the unit is installed.
pub const UNIT_PATH: &str = "/etc/systemd/system/drlb.service";
/// The binary the unit runs (a root-owned copy, as for the real-server unit).
pub const INSTALLED_BINARY: &str = "/usr/local/sbin/drlb";

/// The daemon is serving: its data plane is attached and its control socket answers.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// The daemon's loop is alive; sent at every tick when systemd asked for a watchdog.
pub fn watchdog() {
    if sd_notify::watchdog_enabled().is_some() {
        notify(&[NotifyState::Watchdog]);
    }
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!("notifying systemd failed: {e}");
    }
}

/// The director's unit for `binary`, `config` and `state_dir`.
#[must_use]
pub fn unit(binary: &Path, config: &Path, state_dir: &Path) -> String {
    format!(
        "\
[Unit]
Description=drlb XDP direct-routing load balancer (director)
Documentation=https://github.com/drlb/drlb
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={binary} run --config {config} --state-dir {state_dir}
ExecReload=/bin/kill -HUP $MAINPID
# The loop reports every second; a daemon stuck for 10 s is restarted. The data plane it left
# pinned forwards meanwhile, and the new daemon adopts it.
WatchdogSec=10s
Restart=on-failure
RestartSec=1s
# Stopping drlb leaves the data plane forwarding on its last state; `drlb down` removes it.
KillMode=mixed
TimeoutStopSec=15s
LimitMEMLOCK=infinity

[Install]
WantedBy=multi-user.target
",
        binary = binary.display(),
        config = config.display(),
        state_dir = state_dir.display()
    )
}

/// `drlb install-unit`: installs a root-owned copy of this binary and the unit; returns what
/// it did, one line each.
pub fn install(config: &Path, state_dir: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let binary = PathBuf::from(INSTALLED_BINARY);
    crate::realserver::install_binary(&binary, &mut done)?;
    let text = unit(&binary, config, state_dir);
    let partial = format!("{UNIT_PATH}.drlb-partial");
    fs::write(&partial, &text)
        .and_then(|()| fs::rename(&partial, UNIT_PATH))
        .with_context(|| format!("writing {UNIT_PATH} failed (needs root)"))?;
    done.push(format!("{UNIT_PATH} written"));
    match Command::new("systemctl").arg("daemon-reload").status() {
        Ok(status) if status.success() => done.push("systemctl daemon-reload done".to_owned()),
        _ => done.push(
            "systemd is not running here: run `systemctl daemon-reload` where it is".to_owned(),
        ),
    }
    done.push("start it with `systemctl enable --now drlb`".to_owned());
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_drlb_with_its_config_and_state_directory() {
        let unit = unit(
            Path::new("/usr/local/sbin/drlb"),
            Path::new("/etc/drlb/drlb.toml"),
            Path::new("/run/drlb"),
        );
        assert!(unit.contains(
            "ExecStart=/usr/local/sbin/drlb run --config /etc/drlb/drlb.toml --state-dir /run/drlb\n"
        ));
        for line in [
            "Type=notify",
            "WatchdogSec=10s",
            "Restart=on-failure",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ] {
            assert!(unit.contains(line), "{line} missing");
        }
    }
}
