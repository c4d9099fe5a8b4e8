//! The judgement: every problem with a real server's ARP settings, neighbour proxies and VIPs,
//! from a [`Snapshot`] of them. Pure functions, host-tested.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv6Addr},
};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::*;

/// The two ARP sysctls of one `net.ipv4.conf.<name>` directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArpConf {
    pub arp_ignore: i64,
    pub arp_announce: i64,
}

/// An address and the interface it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub interface: String,
    pub address: IpAddr,
    pub prefix: u8,
}

/// A proxy neighbour entry (`ip -6 neigh add proxy ADDRESS dev INTERFACE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NdpProxy {
    pub address: Ipv6Addr,
    pub interface: String,
}

/// The prefix length of a single address of `vip`'s family: /32 or /128.
#[must_use]
pub fn host_prefix(vip: IpAddr) -> u8 {
    match vip {
        IpAddr::V4(_) => HOST_PREFIX_V4,
        IpAddr::V6(_) => HOST_PREFIX_V6,
    }
}

/// What the checks look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The interface facing the director (and the clients' gateway).
    pub interface: String,
    pub all: ArpConf,
    pub on_interface: ArpConf,
    pub loopback_up: bool,
    /// Every IPv4 and IPv6 address of the host.
    pub addresses: Vec<Address>,
    /// Every proxy NDP entry of the host.
    pub ndp_proxies: Vec<NdpProxy>,
}

/// One result of a check: fine, or a problem with the commands that fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub what: String,
    /// `None` when all is well.
    pub fix: Option<String>,
}

impl Finding {
    pub(super) fn ok(what: String) -> Self {
        Self { what, fix: None }
    }

    pub(super) fn problem(what: String, fix: String) -> Self {
        Self {
            what,
            fix: Some(fix),
        }
    }

    #[must_use]
    pub fn is_problem(&self) -> bool {
        self.fix.is_some()
    }
}

/// What is wrong with an effective `arp_ignore` value, if anything (net/ipv4/arp.c, arp_ignore()).
pub(super) fn arp_ignore_problem(value: i64) -> Option<&'static str> {
    match value {
        1 | 2 => None,
        0 => Some("the kernel answers ARP for every local address, the VIP on lo included"),
        3 => Some(
            "3 only keeps quiet about addresses of scope host, and the VIP has scope global: it is answered",
        ),
        8 => Some(
            "8 answers no ARP request at all, not even for this host's own address, so the director cannot reach it",
        ),
        _ => Some("the kernel treats this value like 0 and answers ARP for the VIP"),
    }
}

/// What is wrong with an effective `arp_announce` value, if anything (arp.c, arp_solicit()).
pub(super) fn arp_announce_problem(value: i64) -> Option<&'static str> {
    match value {
        2 => None,
        0 => Some(
            "ARP requests for replies sent from the VIP carry the VIP as sender: the gateway learns this host's MAC for it",
        ),
        1 => Some(
            "1 still uses the VIP as sender whenever it is in the target's subnet, as it usually is",
        ),
        _ => Some("the kernel treats this value like 0: ARP requests may carry the VIP as sender"),
    }
}

/// Every check of a real server for `vips`, in order; the problems carry their fix.
#[must_use]
pub fn judge(snapshot: &Snapshot, vips: &[IpAddr]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let interface = &snapshot.interface;
    let setup = format!(
        "drlb realserver setup --interface {interface} {}",
        vips.iter()
            .map(|v| format!("--vip {v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !snapshot.loopback_up {
        findings.push(Finding::problem(
            "lo is down: the kernel does not treat the VIPs on it as local".to_owned(),
            format!("ip link set lo up   (or: {setup})"),
        ));
    }
    for vip in vips {
        let full = host_prefix(*vip);
        let on_lo: Vec<&Address> = snapshot
            .addresses
            .iter()
            .filter(|a| a.address == *vip && a.interface == LOOPBACK)
            .collect();
        match on_lo.as_slice() {
            [] => findings.push(Finding::problem(
                format!(
                    "VIP {vip} is not on lo: the director's frames for it are dropped here (not a local address)"
                ),
                format!("ip addr add {vip}/{full} dev lo   (or: {setup})"),
            )),
            [a] if a.prefix == full => {
                findings.push(Finding::ok(format!("VIP {vip}/{full} on lo")));
            }
            [a, ..] => findings.push(Finding::problem(
                format!(
                    "VIP {vip} is on lo as /{}, not /{full}: every address of {vip}/{} becomes local to this host, \
                     which then cannot reach the gateway or clients in that range",
                    a.prefix, a.prefix
                ),
                format!(
                    "ip addr del {vip}/{} dev lo && ip addr add {vip}/{full} dev lo",
                    a.prefix
                ),
            )),
        }
        for a in snapshot
            .addresses
            .iter()
            .filter(|a| a.address == *vip && a.interface != LOOPBACK)
        {
            let answers = match vip {
                IpAddr::V4(_) => "ARP for it there whatever arp_ignore says",
                IpAddr::V6(_) => "neighbour solicitations for it there",
            };
            findings.push(Finding::problem(
                format!(
                    "VIP {vip} is also on {}: the host answers {answers}",
                    a.interface
                ),
                format!("ip addr del {vip}/{} dev {}", a.prefix, a.interface),
            ));
        }
        if let IpAddr::V6(vip) = vip {
            findings.extend(ndp_findings(snapshot, *vip));
        }
    }
    // The ARP sysctls matter for IPv4 VIPs only: IPv6 has no counterpart to configure.
    if vips.iter().any(IpAddr::is_ipv4) {
        findings.extend(arp_findings(snapshot, &setup));
    }
    findings
}

/// Linux answers a neighbour solicitation only for an address of the interface it arrived on
/// (`ipv6_get_ifaddr` with `strict`: tried in namespaces, `ndisc6` for a VIP on lo of the
/// other end times out), so a VIP on lo needs no setting. A proxy NDP entry asks the kernel to
/// answer for an address (with forwarding and `proxy_ndp` on): none may name the VIP.
fn ndp_findings(snapshot: &Snapshot, vip: Ipv6Addr) -> Vec<Finding> {
    let proxies: Vec<Finding> = snapshot
        .ndp_proxies
        .iter()
        .filter(|p| p.address == vip)
        .map(|p| {
            Finding::problem(
                format!(
                    "a proxy NDP entry for VIP {vip} on {}: with forwarding and proxy_ndp on, the host would \
                     answer neighbour solicitations for it",
                    p.interface
                ),
                format!("ip -6 neigh del proxy {vip} dev {}", p.interface),
            )
        })
        .collect();
    if proxies.is_empty() {
        vec![Finding::ok(format!(
            "no proxy NDP entry for VIP {vip}: the host answers neighbour solicitations only for the \
             addresses of the interface they arrive on, never for the VIP on lo"
        ))]
    } else {
        proxies
    }
}

/// The effective `arp_ignore` and `arp_announce` of the interface facing the director.
fn arp_findings(snapshot: &Snapshot, setup: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let interface = &snapshot.interface;
    let conf = [
        (
            "arp_ignore",
            snapshot.all.arp_ignore,
            snapshot.on_interface.arp_ignore,
            WANT_ARP_IGNORE,
            arp_ignore_problem as fn(i64) -> Option<&'static str>,
            "answers ARP only for its own addresses",
        ),
        (
            "arp_announce",
            snapshot.all.arp_announce,
            snapshot.on_interface.arp_announce,
            WANT_ARP_ANNOUNCE,
            arp_announce_problem,
            "uses its own address as ARP sender",
        ),
    ];
    for (key, all, own, want, problem, good) in conf {
        let effective = all.max(own);
        let values = format!(
            "effective {effective} = max(net.ipv4.conf.all.{key}={all}, net.ipv4.conf.{interface}.{key}={own})"
        );
        match problem(effective) {
            None => findings.push(Finding::ok(format!(
                "{key} on {interface}: {values}: {interface} {good}"
            ))),
            Some(why) => findings.push(Finding::problem(
                format!("{key} on {interface} is wrong, {values}: {why}"),
                format!(
                    "sysctl -w net.ipv4.conf.all.{key}={want} net.ipv4.conf.{}.{key}={want}   (or: {setup})",
                    sysctl_name(interface)
                ),
            )),
        }
    }
    findings
}

/// An interface name as a dotted sysctl key component: dots in the name become slashes.
pub(super) fn sysctl_name(interface: &str) -> String {
    interface.replace('.', "/")
}

/// The interface that faces the director when none is named: the default route's, else the
/// only interface with an address other than lo (IPv6 link-local addresses, which every
/// interface has, do not count).
pub fn facing_interface(default_route: Option<&str>, addresses: &[Address]) -> Result<String> {
    if let Some(interface) = default_route {
        return Ok(interface.to_owned());
    }
    let mut candidates: Vec<&str> = addresses
        .iter()
        .filter(|a| a.interface != LOOPBACK)
        .filter(|a| !matches!(a.address, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .map(|a| a.interface.as_str())
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    match candidates.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!(
            "no interface with an address besides lo: name the one facing the director with --interface"
        ),
        many => bail!(
            "no default route and several interfaces ({}): name the one facing the director with --interface",
            many.join(", ")
        ),
    }
}

/// The text `drlb realserver check` prints.
#[must_use]
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        match &f.fix {
            None => {
                let _ = writeln!(out, "ok       {}", f.what);
            }
            Some(fix) => {
                let _ = writeln!(out, "PROBLEM  {}\n         fix: {fix}", f.what);
            }
        }
    }
    out
}
