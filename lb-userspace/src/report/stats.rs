//! The counters report: built from the controller's state and the maps' counters, sent over the control socket,
//! printed by `drlb stats` as a table or as JSON.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Result;
use lb_common::{Event, Verdict};
use serde::{Deserialize, Serialize};

use crate::{
    config::{Scheduler, health_check::CheckKind},
    director::Controller,
    net::mac::format_mac,
};

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
    /// `active` (answers ARP for the VIPs and forwards) or `standby`; with
    /// `active_when = "vip-assigned"` also `partly active` (some VIPs).
    #[serde(default)]
    pub state: String,
    /// Each VIP: active or not, and whether it is an address of the director.
    #[serde(default)]
    pub vips: Vec<VipStats>,
    /// Other MACs seen claiming a VIP in ARP (see conflict.rs).
    #[serde(default)]
    pub arp_conflicts: Vec<super::conflicts::ArpConflictStats>,
    /// How many flows the flow table can really hold.
    #[serde(default)]
    pub flow_table: Option<FlowTableStats>,
    /// What the program noticed beside the verdicts (`bad_checksum`, `icmp_relay`, ...).
    #[serde(default)]
    pub events: BTreeMap<String, Count>,
    /// Whether the director answers ARP and neighbour solicitations for its active VIPs
    /// (`arp = true`, the default); false where the VIPs are routed to it and nobody on its
    /// segment may answer for them. An older daemon does not say: it always answered.
    #[serde(default = "answers_arp_by_default")]
    pub answers_arp: bool,
}

const fn answers_arp_by_default() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipStats {
    pub vip: std::net::IpAddr,
    /// ARP answered and services forwarded.
    pub active: bool,
    /// An address of one of the director's interfaces (other traffic to it goes to the stack).
    pub local: bool,
}

/// What to tell about frames with unfinished checksums on `interfaces` (the veths drlb checks).
#[must_use]
pub fn bad_checksum_advice(interfaces: &[String]) -> String {
    format!(
        "frames of new flows arrive on {} with unfinished TCP/UDP checksums: their sender's veth \
         has tx checksum offload on, and XDP forwards them as they are, so the real servers drop \
         them. Fix it on the sender (`ethtool -K <sender's veth> tx off`), or run drlb with \
         xdp_mode = \"generic\" (the stack finishes the checksums before generic XDP sees them)",
        interfaces.join(", ")
    )
}

/// The flow table's size as the kernel applies it: with a per-CPU LRU each CPU evicts within
/// its own share, so the table holds `per_cpu` flows on each online CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTableStats {
    /// `flow_table_size` of the config.
    pub configured: u32,
    /// Flows the table can hold: `per_cpu` times the online CPUs.
    pub capacity: u64,
    pub per_cpu: u64,
    pub online_cpus: u32,
    pub possible_cpus: u32,
}

impl FlowTableStats {
    /// The flow table created for `configured` flows on this host.
    pub fn of_this_host(configured: u32) -> anyhow::Result<Self> {
        use crate::dataplane::loader::{cpus, flow_capacity, flow_map_entries};
        let (online_cpus, possible_cpus) = cpus()?;
        let entries = flow_map_entries(configured, online_cpus, possible_cpus);
        let capacity = flow_capacity(entries, online_cpus, possible_cpus);
        Ok(Self {
            configured,
            capacity,
            per_cpu: capacity / u64::from(online_cpus.max(1)),
            online_cpus,
            possible_cpus,
        })
    }
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
    /// New connections: flows the program scheduled (flow-table misses it forwarded).
    #[serde(default)]
    pub connections: u64,
    /// Per second over the daemon's last rate interval (see `report::rate`).
    #[serde(default)]
    pub rate: Rate,
    /// Maglev tables published for the service since it was added, and the time they took.
    #[serde(default)]
    pub table_publishes: u64,
    #[serde(default)]
    pub table_publish_nanos: u64,
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
    /// New connections scheduled to it (see `ServiceStats::connections`).
    #[serde(default)]
    pub connections: u64,
    #[serde(default)]
    pub rate: Rate,
}

/// Rates as IPVS's estimator gives them: new connections, packets and bytes per second, in
/// and out. A DR director never sees the replies, so `out_*` stay 0 (as in IPVS's DR mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub cps: u64,
    pub in_pps: u64,
    pub out_pps: u64,
    pub in_bps: u64,
    pub out_bps: u64,
}

/// The counters and states of `controller`; `interfaces` says how the program is attached to
/// each interface.
pub fn build(controller: &Controller, interfaces: Vec<InterfaceStats>) -> Result<StatsReport> {
    let mut services = Vec::new();
    for (id, s) in controller.services() {
        let total = controller.dataplane().service_counter(s.id)?;
        let checked = s.config.health_check().kind != CheckKind::None;
        let mut backends = Vec::new();
        // A removed backend stays in the model until the table without it is live: the
        // config in force has it no more.
        for (address, b) in s.backends.iter().filter(|(_, b)| !b.leaving) {
            let count = controller.dataplane().backend_counter(s.id, b.id)?;
            backends.push(BackendStats {
                address: address.to_string(),
                interface: controller
                    .interfaces()
                    .iter()
                    .find(|i| i.ifindex == b.egress.ifindex)
                    .map_or_else(String::new, |i| i.name.clone()),
                weight: b.weight,
                mac: b.mac().map(format_mac),
                state: b.state().to_owned(),
                health: if !checked {
                    "unchecked"
                } else if b.health.is_up() {
                    "up"
                } else {
                    "down"
                }
                .to_owned(),
                packets: count.packets,
                bytes: count.bytes,
                connections: count.connections,
                rate: Rate::default(),
            });
        }
        services.push(ServiceStats {
            vip: id.vip.to_string(),
            port: id.port,
            protocol: id.protocol.to_string(),
            scheduler: match s.config.scheduler {
                Scheduler::Maglev => "maglev",
                Scheduler::SourceHash => "source-hash",
            }
            .to_owned(),
            packets: total.packets,
            bytes: total.bytes,
            connections: total.connections,
            rate: Rate::default(),
            table_publishes: s.publishes.count,
            table_publish_nanos: s.publishes.nanos,
            backends,
        });
    }
    let mut verdicts = BTreeMap::new();
    for verdict in Verdict::ALL {
        verdicts.insert(
            verdict.name().to_owned(),
            Count::from(controller.dataplane().verdict_counter(verdict)?),
        );
    }
    let mut events = BTreeMap::new();
    for event in Event::ALL {
        events.insert(
            event.name().to_owned(),
            Count::from(controller.dataplane().event_counter(event)?),
        );
    }
    Ok(StatsReport {
        interfaces,
        services,
        verdicts,
        state: controller.state_name().to_owned(),
        vips: controller
            .vip_states()
            .into_iter()
            .map(|(vip, active, local)| VipStats { vip, active, local })
            .collect(),
        arp_conflicts: Vec::new(),
        flow_table: None,
        events,
        answers_arp: controller.config().director.arp,
    })
}

impl StatsReport {
    /// Frames of new flows seen with unfinished checksums (the veth checksum trap).
    #[must_use]
    pub fn bad_checksums(&self) -> u64 {
        self.events
            .get(Event::BadChecksum.name())
            .map_or(0, |c| c.packets)
    }

    /// The human-readable table of `drlb stats`.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "director {}", self.state);
        for v in &self.vips {
            let _ = writeln!(
                out,
                "vip {} {}{}",
                v.vip,
                if v.active { "active" } else { "standby" },
                if v.local {
                    " (an address of this director)"
                } else {
                    ""
                }
            );
        }
        for i in &self.interfaces {
            let _ = writeln!(out, "interface {} {} (XDP {})", i.name, i.mac, i.xdp_mode);
        }
        if self.bad_checksums() > 0 {
            let _ = writeln!(
                out,
                "bad_checksum: {} frames of new flows with unfinished checksums (see `drlb doctor`)",
                self.bad_checksums()
            );
        }
        if let Some(f) = &self.flow_table {
            let _ = writeln!(
                out,
                "flow table holds {} flows ({} per CPU, {} CPUs online of {} possible)",
                f.capacity, f.per_cpu, f.online_cpus, f.possible_cpus
            );
        }
        for s in &self.services {
            let _ = writeln!(
                out,
                "\nservice {} {} ({})  {} packets  {} bytes",
                s.protocol,
                with_port(&s.vip, s.port),
                s.scheduler,
                s.packets,
                s.bytes
            );
            // Wide enough for the longest address (IPv6 ones may be long).
            let width = s
                .backends
                .iter()
                .map(|b| b.address.len())
                .max()
                .unwrap_or(0)
                .max(BACKEND_COLUMN);
            let _ = writeln!(
                out,
                "  {:<width$} {:<9} {:>6} {:<18} {:<8} {:<9} {:>12} {:>14}",
                "backend", "via", "weight", "mac", "state", "health", "packets", "bytes"
            );
            for b in &s.backends {
                let _ = writeln!(
                    out,
                    "  {:<width$} {:<9} {:>6} {:<18} {:<8} {:<9} {:>12} {:>14}",
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
        out + &super::conflicts::render(&self.arp_conflicts)
    }
}

/// The backend column's least width in `drlb stats` (an IPv4 address and a space).
const BACKEND_COLUMN: usize = 16;

/// `address:port` as ipvsadm and `SocketAddr` write it: an IPv6 address in brackets
/// (`[2001:2::100]:80`), so the port cannot be read as part of it.
#[must_use]
pub fn with_port(address: &str, port: u16) -> String {
    address.parse::<std::net::IpAddr>().map_or_else(
        |_| format!("{address}:{port}"),
        |ip| std::net::SocketAddr::new(ip, port).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::with_port;

    #[test]
    fn ipv6_addresses_are_bracketed_before_their_port() {
        assert_eq!(with_port("198.18.0.100", 80), "198.18.0.100:80");
        assert_eq!(with_port("2001:2::100", 80), "[2001:2::100]:80");
        assert_eq!(with_port("not an address", 80), "not an address:80");
    }
}
