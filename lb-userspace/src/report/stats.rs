//! The counters report: built by the daemon from the maps, sent over the control socket,
//! printed by `drlb stats` as a table or as JSON.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

/// A MAC as drlb prints it everywhere: lower-case, colon-separated.
#[must_use]
pub fn format_mac(mac: [u8; 6]) -> String {
    macaddr::MacAddr6::from(mac).to_string().to_lowercase()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl From<lb_common::Counter> for Count {
    fn from(c: lb_common::Counter) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// The interfaces the program is attached to.
    pub interfaces: Vec<InterfaceStats>,
    pub services: Vec<ServiceStats>,
    /// Frames per verdict of the XDP program (`tx`, `pass`, `arp_reply`, `drop_*`, ...).
    pub verdicts: BTreeMap<String, Count>,
    /// `active` (answers ARP for the VIPs and forwards) or `standby`.
    #[serde(default)]
    pub state: String,
    /// Other MACs seen claiming a VIP in ARP (see conflict.rs).
    #[serde(default)]
    pub arp_conflicts: Vec<crate::daemon::conflict::ArpConflictStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStats {
    pub name: String,
    pub mac: String,
    /// The XDP mode the program got on it: `native` or `generic`.
    pub xdp_mode: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub vip: String,
    pub port: u16,
    pub protocol: String,
    /// `maglev` or `source-hash`.
    pub scheduler: String,
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStats {
    pub address: String,
    /// The director's interface its frames leave by.
    pub interface: String,
    pub weight: u32,
    /// The MAC frames are sent to; `null` while it is unknown.
    pub mac: Option<String>,
    /// `active`; `drained` (weight 0: no new flows, established ones continue); `no-mac`
    /// (left out: its MAC is unknown); `down` (failed its health check).
    pub state: String,
    /// `up`, `down` or `unchecked`.
    pub health: String,
    pub packets: u64,
    pub bytes: u64,
}

impl StatsReport {
    /// The human-readable table of `drlb stats`.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "director {}", self.state);
        for i in &self.interfaces {
            let _ = writeln!(out, "interface {} {} (XDP {})", i.name, i.mac, i.xdp_mode);
        }
        for s in &self.services {
            let _ = writeln!(
                out,
                "\nservice {} {}:{} ({})  {} packets  {} bytes",
                s.protocol, s.vip, s.port, s.scheduler, s.packets, s.bytes
            );
            let _ = writeln!(
                out,
                "  {:<16} {:<9} {:>6} {:<18} {:<8} {:<9} {:>12} {:>14}",
                "backend", "via", "weight", "mac", "state", "health", "packets", "bytes"
            );
            for b in &s.backends {
                let _ = writeln!(
                    out,
                    "  {:<16} {:<9} {:>6} {:<18} {:<8} {:<9} {:>12} {:>14}",
                    b.address,
                    b.interface,
                    b.weight,
                    b.mac.as_deref().unwrap_or("-"),
                    b.state,
                    b.health,
                    b.packets,
                    b.bytes
                );
            }
        }
        let _ = writeln!(out, "\nverdicts");
        for verdict in lb_common::Verdict::ALL {
            let c = self
                .verdicts
                .get(verdict.name())
                .copied()
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<18} {:>12} packets {:>14} bytes",
                verdict.name(),
                c.packets,
                c.bytes
            );
        }
        out + &crate::daemon::conflict::render(&self.arp_conflicts)
    }
}
