//! Director failover: a pair of directors of which only the active one answers ARP for the
//! VIPs and forwards their traffic. Who is active is decided outside drlb, by keepalived (VRRP
//! over unicast, no virtual MAC: docs/keepalived.md), in one of two ways (`[director]
//! active_when`):
//!
//! - `"vip-assigned"`: per VIP, active while the VIP is an address of one of the director's
//!   interfaces (keepalived's `virtual_ipaddress` adds it on the master and removes it on the
//!   backup). The daemon follows the kernel's address events (`net::netlink::AddressEvents`)
//!   and switches at once; no notify script, no state file.
//! - `"always"` (the default): active unless told otherwise; keepalived's notify scripts run
//!   `drlb vip activate` and `drlb vip deactivate`; `drlb run --standby` starts deactivated.
//!
//! A VIP that is an address of the director is "local" in both modes: the program passes its
//! non-service traffic to the stack, and while the VIP is standby drops ARP requests for it,
//! so the kernel cannot answer them and draw traffic a standby drops (`drop_arp_standby`).
//!
//! On activation the director sends gratuitous ARP (an unsolicited Neighbor Advertisement
//! for an IPv6 VIP) as keepalived does for its own VIPs: a burst at once and the same burst
//! again a few seconds later, so that clients and gateways
//! move to its MAC at once, and those that missed the first burst with the second. Flows keep
//! their real server across the switch because both directors build the same Maglev table
//! from the same backends (the new one has no flow entries, and needs none).
//!
//! The last state asked for is recorded in the state directory, so a daemon (re)started with
//! `--standby` while keepalived holds MASTER starts active: keepalived notifies only on
//! transitions and would not tell it again.

use std::{
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::{config::ActiveWhen, director::Controller, net::arp::ArpSocket, net::garp};

/// The file in the state directory that records `active` or `standby`.
pub const STATE_FILE: &str = "vip-state";
/// Gratuitous ARP frames per VIP and burst (keepalived's `garp_master_repeat` default).
pub const BURST_FRAMES: u32 = 5;
/// The second burst follows the first after this long (keepalived's `garp_master_delay`).
pub const REPEAT_AFTER: Duration = Duration::from_secs(5);

#[must_use]
pub fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

/// Records the state asked for (written to a temporary file, then renamed into place).
pub fn record(state_dir: &Path, active: bool) -> Result<()> {
    fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let path = state_file(state_dir);
    let temporary = state_dir.join(format!(".{STATE_FILE}.{}", std::process::id()));
    fs::write(&temporary, if active { "active\n" } else { "standby\n" })
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    fs::rename(&temporary, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// The recorded state: `Some(true)` for active, `Some(false)` for standby, `None` if none.
pub fn recorded(state_dir: &Path) -> Result<Option<bool>> {
    let path = state_file(state_dir);
    match fs::read_to_string(&path) {
        Ok(text) => match text.trim() {
            "active" => Ok(Some(true)),
            "standby" => Ok(Some(false)),
            other => bail!(
                "{} holds {other:?}, not `active` or `standby`: remove it or run `drlb vip activate|deactivate`",
                path.display()
            ),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Whether `drlb run` starts active: always without `--standby`; with it, only when the last
/// recorded request was an activation.
#[must_use]
pub fn starts_active(standby: bool, recorded: Option<bool>) -> bool {
    !standby || recorded == Some(true)
}

/// `drlb run --standby` is for `active_when = "always"`: with `"vip-assigned"` the addresses
/// decide, and a standby start would contradict them.
pub fn check_standby_option(standby: bool, active_when: ActiveWhen) -> Result<()> {
    if standby && active_when == ActiveWhen::VipAssigned {
        bail!(
            "--standby and active_when = \"vip-assigned\" contradict each other: with vip-assigned, drlb \
             is active for a VIP exactly while the VIP is an address of one of its interfaces (keepalived's \
             virtual_ipaddress); drop --standby, or set active_when = \"always\" to be switched by \
             `drlb vip activate|deactivate`"
        );
    }
    Ok(())
}

/// Logs, at start-up, which VIPs are addresses of the director and which VIPs it is active
/// for; loud about a standby VIP the kernel holds.
pub fn log_vips(director: &Controller) {
    let mode = director.config().director.active_when;
    for (vip, active, local) in director.vip_states() {
        match (active, local) {
            (true, true) => info!(
                %vip, active_when = %mode,
                "VIP is an address of this director: its services are forwarded from XDP, other traffic to it (ping, ssh, other ports) goes to the stack"
            ),
            (true, false) => {
                info!(%vip, active_when = %mode, "VIP active (not an address of this director: traffic to it that is no service is dropped, drop_no_service)")
            }
            (false, true) => warn!(
                %vip, active_when = %mode,
                "VIP is an address of this director, which is its standby: ARP requests for it are dropped before the kernel sees them (drop_arp_standby), its service traffic too (drop_standby)"
            ),
            (false, false) => info!(%vip, active_when = %mode, "VIP standby"),
        }
    }
}

/// When the frames of an activation's announcement go out, from the activation on: one burst
/// at once, the same burst again after [`REPEAT_AFTER`].
#[must_use]
pub fn announcement_schedule() -> Vec<(Duration, u32)> {
    vec![(Duration::ZERO, BURST_FRAMES), (REPEAT_AFTER, BURST_FRAMES)]
}

/// Sends the announcements of the latest activation; a deactivation (or a newer activation)
/// cancels the bursts not sent yet, so a standby never announces itself.
#[derive(Default)]
pub struct Announcer {
    task: Option<JoinHandle<()>>,
}

impl Announcer {
    /// Announces `vips` on each of `interfaces` (ifindex, MAC): the program answers ARP for
    /// them on every interface it runs on.
    pub fn start(&mut self, interfaces: Vec<(u32, [u8; 6])>, vips: Vec<IpAddr>) {
        self.stop();
        self.task = Some(tokio::spawn(async move {
            let socket = match ArpSocket::sender(0) {
                Ok(socket) => socket,
                Err(e) => return warn!("VIPs not announced: {e:#}"),
            };
            let mut elapsed = Duration::ZERO;
            for (at, frames) in announcement_schedule() {
                tokio::time::sleep(at.saturating_sub(elapsed)).await;
                elapsed = at;
                for vip in &vips {
                    for (ifindex, mac) in &interfaces {
                        for _ in 0..frames {
                            let sent = garp::announcement(*mac, *vip)
                                .and_then(|frame| socket.send_on(*ifindex, &frame));
                            if let Err(e) = sent {
                                warn!(%vip, ifindex, "announcing the VIP (gratuitous ARP, or unsolicited NA for IPv6) failed: {e:#}");
                            }
                        }
                    }
                }
                info!(
                    ?vips,
                    frames, "VIPs announced with gratuitous ARP (unsolicited NA for IPv6)"
                );
            }
        }));
    }

    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_state_round_trips_and_garbage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("drlb-failover-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(recorded(&dir).unwrap(), None, "nothing recorded yet");
        record(&dir, true).unwrap();
        assert_eq!(recorded(&dir).unwrap(), Some(true));
        record(&dir, false).unwrap();
        assert_eq!(recorded(&dir).unwrap(), Some(false));
        fs::write(state_file(&dir), "maybe").unwrap();
        let error = recorded(&dir).unwrap_err().to_string();
        assert!(error.contains("not `active` or `standby`"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn standby_starts_deactivated_unless_an_activation_was_recorded() {
        assert!(starts_active(false, None));
        assert!(
            starts_active(false, Some(false)),
            "without --standby the record is ignored"
        );
        assert!(!starts_active(true, None));
        assert!(!starts_active(true, Some(false)));
        assert!(starts_active(true, Some(true)));
    }

    #[test]
    fn standby_is_refused_when_the_addresses_decide() {
        check_standby_option(true, ActiveWhen::Always).unwrap();
        check_standby_option(false, ActiveWhen::VipAssigned).unwrap();
        let error = check_standby_option(true, ActiveWhen::VipAssigned)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("drop --standby") && error.contains("vip-assigned"),
            "{error}"
        );
    }

    #[test]
    fn announcements_are_a_burst_then_a_repeat() {
        let schedule = announcement_schedule();
        assert_eq!(schedule.len(), 2);
        assert_eq!(schedule[0], (Duration::ZERO, BURST_FRAMES));
        assert_eq!(schedule[1].1, BURST_FRAMES);
        assert!(
            schedule[1].0 >= Duration::from_secs(2),
            "the repeat comes seconds later"
        );
    }
}
