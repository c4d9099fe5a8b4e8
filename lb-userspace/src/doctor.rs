//! `drlb doctor`, run on the director next to its daemon: asks the link who answers ARP for
//! each VIP (what `arping -I IF VIP` shows) and names every other MAC that does, which backend
//! it is and what to run there. Also reports backends the daemon has seen sending ARP requests
//! with a VIP as sender (`arp_announce` too low), which no probe can provoke.
//!
//! The director's own answers come from its XDP program for frames arriving from the wire, so
//! its own probe is never answered by itself: on an active director the right result is
//! silence from everyone else; on a standby, exactly one answer, from the active director.
//!
//! IPv6 VIPs are probed the same way with Neighbor Solicitations (what `ndisc6 VIP IF` shows),
//! from the interface's EUI-64 link-local address: the program answers them from XDP, and a
//! real server holding the VIP on `lo` answers none (Linux answers solicitations only for
//! addresses of the interface they arrive on), so any other advertiser is named the same way.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use macaddr::MacAddr6;

use crate::{
    daemon::control::{self, Request, Response},
    net::arp::{self, ArpSocket, Reply},
    net::mac::format_mac,
    net::ndp_probe::{self, Advert},
    net::netlink::Netlink,
    report::conflicts::ArpConflictStats,
    report::stats::{StatsReport, bad_checksum_advice},
};

/// Gap between the probes of one VIP.
const PROBE_GAP: Duration = Duration::from_millis(200);
/// Daemon-seen requests with a VIP as sender older than this are history, not findings.
const RECENT_SECS: u64 = 300;

pub struct Options<'a> {
    pub state_dir: &'a Path,
    /// ARP requests per VIP.
    pub count: u32,
    /// How long to wait for answers after the last request.
    pub wait: Duration,
}

/// One line of the diagnosis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub problem: bool,
    pub text: String,
}

impl Finding {
    fn ok(text: String) -> Self {
        Self {
            problem: false,
            text,
        }
    }

    fn problem(text: String) -> Self {
        Self {
            problem: true,
            text,
        }
    }
}

/// What the director knows, from its daemon and its interfaces.
#[derive(Clone, Debug)]
pub struct Director {
    /// The MACs of the director's interfaces: its own answers are no conflict.
    pub macs: Vec<[u8; 6]>,
    pub active: bool,
    /// Whether it answers ARP and NDP for its active VIPs (`arp = false`: the VIPs are routed
    /// to it, and no host on the link may answer for them, itself included).
    pub answers_arp: bool,
    /// (address, MAC) of each backend whose MAC is known.
    pub backends: Vec<(IpAddr, [u8; 6])>,
    pub conflicts: Vec<ArpConflictStats>,
}

/// How a VIP is claimed on the link: ARP (IPv4) or neighbour discovery (IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Arp,
    Ndp,
}

impl Protocol {
    const fn name(self) -> &'static str {
        match self {
            Self::Arp => "ARP",
            Self::Ndp => "NDP (neighbour solicitations)",
        }
    }

    /// What `drlb realserver setup` sets for a VIP of this family.
    const fn realserver_fix(self) -> &'static str {
        match self {
            Self::Arp => "sets arp_ignore=1, arp_announce=2",
            Self::Ndp => {
                "puts the VIP on lo as /128 with nodad, where Linux answers no solicitation for it"
            }
        }
    }
}

/// The findings for one VIP from the replies its probes got.
#[must_use]
pub fn diagnose_vip(vip: Ipv4Addr, replies: &[Reply], director: &Director) -> Vec<Finding> {
    let claimants = replies
        .iter()
        .filter(|r| r.sender_ip == vip)
        .map(|r| r.sender_mac);
    diagnose_claims(IpAddr::V4(vip), claimants, director, Protocol::Arp)
}

/// The findings for one IPv6 VIP from the advertisements its solicitations got.
#[must_use]
pub fn diagnose_vip6(vip: Ipv6Addr, adverts: &[Advert], director: &Director) -> Vec<Finding> {
    let claimants = adverts.iter().filter(|a| a.target == vip).map(|a| a.mac);
    diagnose_claims(IpAddr::V6(vip), claimants, director, Protocol::Ndp)
}

/// The findings for `vip` from the MACs that answered a probe for it, one per answer.
fn diagnose_claims(
    vip: IpAddr,
    claimants: impl Iterator<Item = [u8; 6]>,
    director: &Director,
    protocol: Protocol,
) -> Vec<Finding> {
    let what = protocol.name();
    let mut answering: BTreeMap<[u8; 6], u32> = BTreeMap::new();
    for mac in claimants.filter(|mac| !director.macs.contains(mac)) {
        *answering.entry(mac).or_default() += 1;
    }
    let mut findings = Vec::new();
    let mut unknown = Vec::new();
    for (mac, count) in &answering {
        let shown = format_mac(*mac);
        match director.backends.iter().find(|(_, m)| m == mac) {
            Some((backend, _)) => findings.push(Finding::problem(format!(
                "{vip}: backend {backend} ({shown}) answers {what} for the VIP ({count} replies): clients and the \
                 gateway may send VIP traffic straight to it, bypassing the director. On {backend} run \
                 `drlb realserver setup --vip {vip}` ({}), then `drlb realserver check --vip {vip}`",
                protocol.realserver_fix()
            ))),
            None => unknown.push((shown, *count)),
        }
    }
    let list = |u: &[(String, u32)]| {
        u.iter()
            .map(|(m, c)| format!("{m} ({c} replies)"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !director.answers_arp {
        match unknown.as_slice() {
            [] if answering.is_empty() => findings.push(Finding::ok(format!(
                "{vip}: nobody answers {what} for it, as it should be: this director runs with \
                 arp = false (the VIP is routed to it)"
            ))),
            // Only backends answered: each is named above with its fix.
            [] => {}
            u => findings.push(Finding::problem(format!(
                "{vip}: {} answer(s) {what} for it although the VIP is routed to this director \
                 (arp = false): hosts on this link that resolve it send its traffic there instead \
                 of by the route. Remove the VIP from that host, or if it is another director, \
                 set arp = false there too",
                list(u)
            ))),
        }
        return findings;
    }
    match (director.active, unknown.as_slice()) {
        (true, []) if answering.is_empty() => findings.push(Finding::ok(format!(
            "{vip}: no other host answers {what} for it (this active director answers it from XDP)"
        ))),
        (true, []) => {}
        (true, u) => findings.push(Finding::problem(format!(
            "{vip}: {} answer(s) {what} for it although this director is active and is no backend: another \
             director active too (check keepalived on both), or a host holding the VIP on an interface \
             that answers {what}",
            list(u)
        ))),
        (false, [(mac, _)]) => findings.push(Finding::ok(format!(
            "{vip}: answered by {mac} (this director is standby: that is the active director)"
        ))),
        (false, []) => findings.push(Finding::problem(format!(
            "{vip}: nobody answers {what} for it and this director is standby: no director is active \
             (is keepalived running on the peer? `drlb vip activate` on the one that should be)"
        ))),
        (false, u) => findings.push(Finding::problem(format!(
            "{vip}: several hosts that are not backends answer {what} for it: {}; only one director may be active",
            list(u)
        ))),
    }
    findings
}

/// Backends the daemon saw recently sending ARP requests with a VIP as sender.
#[must_use]
pub fn diagnose_requests(director: &Director) -> Vec<Finding> {
    director
        .conflicts
        .iter()
        .filter(|c| c.backend.is_some() && c.requests > 0 && c.last_seen_secs_ago <= RECENT_SECS)
        .map(|c| {
            let backend = c.backend.as_deref().unwrap_or_default();
            if c.vip.parse::<Ipv6Addr>().is_ok() {
                return Finding::problem(format!(
                    "{}: backend {backend} ({}) sent {} neighbour solicitation(s) from the VIP, or DAD probes for it \
                     (last {} s ago): neighbours may learn its MAC for the VIP. On {backend} run \
                     `drlb realserver setup --vip {}` (the VIP on lo as /128 with nodad)",
                    c.vip, c.mac, c.requests, c.last_seen_secs_ago, c.vip
                ));
            }
            Finding::problem(format!(
                "{}: backend {backend} ({}) sent {} ARP request(s) with the VIP as sender address (last {} s ago): \
                 its arp_announce is too low and the gateway may learn its MAC for the VIP. On {backend} run \
                 `drlb realserver setup --vip {}`",
                c.vip, c.mac, c.requests, c.last_seen_secs_ago, c.vip
            ))
        })
        .collect()
}

/// `drlb doctor`: the findings for every VIP of the daemon of `state_dir`. Every VIP is
/// probed on every interface of the director (the program answers ARP on all of them), from
/// the director's address there.
pub async fn run(options: &Options<'_>) -> Result<Vec<Finding>> {
    let report = match control::call(options.state_dir, &Request::Stats).await? {
        Response::Stats(report) => report,
        Response::Error(e) => bail!("{e}"),
        other => bail!("the daemon gave an unexpected answer: {other:?}"),
    };
    let netlink = Netlink::connect()?;
    let mut probes = Vec::new();
    for name in report.interfaces.iter().map(|i| &i.name) {
        let interface = netlink.interface(name).await?;
        let sender_ip = interface
            .ipv4
            .first()
            .map_or(Ipv4Addr::UNSPECIFIED, |(a, _)| *a);
        let socket = ArpSocket::open(interface.ifindex)?;
        probes.push((interface, sender_ip, socket));
    }
    let mut trunks = Vec::new();
    for (interface, _, _) in &probes {
        if let Some(vlan) = interface.vlan {
            let parent = netlink.link_name(vlan.parent).await?;
            let offload = crate::net::ethtool::rx_vlan_offload(&parent)?;
            trunks.push((interface.name.clone(), parent, offload));
        }
    }
    let director = director_of(&report, probes.iter().map(|(i, _, _)| i.mac).collect());
    let (vips, vips6) = vips(&report);
    let mut findings = vec![Finding::ok(format!(
        "director {}{} ({}): probing each VIP with {} ARP request(s) or neighbour solicitation(s) on {}",
        if director.active { "active" } else { "standby" },
        if director.answers_arp {
            ""
        } else {
            ", arp = false"
        },
        director
            .macs
            .iter()
            .map(|m| format_mac(*m))
            .collect::<Vec<_>>()
            .join(", "),
        options.count,
        probes
            .iter()
            .map(|(i, ip, _)| format!("{} from {ip}", i.name))
            .collect::<Vec<_>>()
            .join(", ")
    ))];
    for round in 0..options.count {
        if round > 0 {
            std::thread::sleep(PROBE_GAP);
        }
        for (interface, sender_ip, socket) in &probes {
            for vip in &vips {
                socket
                    .send(&arp::request(interface.mac, *sender_ip, *vip))
                    .with_context(|| format!("probing {vip} on {}", interface.name))?;
            }
        }
    }
    // Replies wait in each socket's queue: one deadline for all of them.
    let deadline = Instant::now() + options.wait;
    let mut replies = Vec::new();
    for (_, _, socket) in &probes {
        replies.extend(socket.replies_until(deadline)?);
    }
    for vip in vips {
        findings.extend(diagnose_vip(vip, &replies, &director));
    }
    if !vips6.is_empty() {
        let adverts = probe_ndp(&probes, &vips6, options)?;
        for vip in vips6 {
            findings.extend(diagnose_vip6(vip, &adverts, &director));
        }
    }
    findings.extend(diagnose_requests(&director));
    findings.extend(diagnose_checksums(&report));
    findings.extend(diagnose_vlan_offload(&trunks));
    Ok(findings)
}

/// Solicits every IPv6 VIP on every interface, from its link-local address, `options.count`
/// times, and reads the advertisements until `options.wait` after the last.
fn probe_ndp(
    probes: &[(crate::net::netlink::InterfaceInfo, Ipv4Addr, ArpSocket)],
    vips: &[Ipv6Addr],
    options: &Options<'_>,
) -> Result<Vec<Advert>> {
    let mut sockets = Vec::new();
    for (interface, _, _) in probes {
        let socket = ArpSocket::open_for(interface.ifindex, libc::ETH_P_IPV6 as u16)
            .with_context(|| format!("opening an NDP probe socket on {}", interface.name))?;
        sockets.push((interface, socket));
    }
    for round in 0..options.count {
        if round > 0 {
            std::thread::sleep(PROBE_GAP);
        }
        for (interface, socket) in &sockets {
            let source = ndp_probe::link_local(interface.mac);
            for vip in vips {
                socket
                    .send(&ndp_probe::solicitation(interface.mac, source, *vip)?)
                    .with_context(|| format!("soliciting {vip} on {}", interface.name))?;
            }
        }
    }
    let deadline = Instant::now() + options.wait;
    let mut adverts = Vec::new();
    for (_, socket) in &sockets {
        adverts.extend(socket.frames_until(deadline, ndp_probe::parse_advert)?);
    }
    Ok(adverts)
}

/// The trunks of the VLANs served, as (VLAN device, parent, rx VLAN offload on): with the
/// offload on, the NIC strips the tags before XDP sees them, and the program cannot tell the
/// VLANs apart (`drlb run` turns it off at attach; something may have turned it back on).
#[must_use]
pub fn diagnose_vlan_offload(trunks: &[(String, String, bool)]) -> Vec<Finding> {
    trunks
        .iter()
        .map(|(vlan, parent, offload)| {
            if *offload {
                Finding::problem(format!(
                    "rx VLAN offload is on on {parent}, the trunk of {vlan}: the NIC strips the \
                     tags before XDP sees them, so {vlan}'s traffic is not served; turn it off \
                     (`ethtool -K {parent} rxvlan off`) or restart drlb, which does"
                ))
            } else {
                Finding::ok(format!(
                    "rx VLAN offload is off on {parent}, the trunk of {vlan}: XDP sees the tags"
                ))
            }
        })
        .collect()
}

/// The veth checksum trap, from the daemon's counters.
#[must_use]
pub fn diagnose_checksums(report: &StatsReport) -> Vec<Finding> {
    if report.bad_checksums() == 0 {
        return Vec::new();
    }
    let interfaces: Vec<String> = report.interfaces.iter().map(|i| i.name.clone()).collect();
    vec![Finding::problem(format!(
        "{} {}",
        report.bad_checksums(),
        bad_checksum_advice(&interfaces)
    ))]
}

fn director_of(report: &StatsReport, macs: Vec<[u8; 6]>) -> Director {
    let mut backends: Vec<(IpAddr, [u8; 6])> = report
        .services
        .iter()
        .flat_map(|s| &s.backends)
        .filter_map(|b| {
            let mac: MacAddr6 = b.mac.as_deref()?.parse().ok()?;
            Some((b.address.parse().ok()?, mac.into_array()))
        })
        .collect();
    backends.sort_unstable();
    backends.dedup();
    Director {
        macs,
        active: report.state != "standby",
        answers_arp: report.answers_arp,
        backends,
        conflicts: report.arp_conflicts.clone(),
    }
}

/// The VIPs of the report's services: IPv4, IPv6 (written bare or in brackets).
fn vips(report: &StatsReport) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    split_vips(report.services.iter().map(|s| s.vip.as_str()))
}

/// `vips` by family, each sorted and without duplicates; what is no address is left out.
fn split_vips<'a>(vips_shown: impl Iterator<Item = &'a str>) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let mut vips = Vec::new();
    let mut vips6 = Vec::new();
    for vip in vips_shown {
        match vip.trim_matches(['[', ']']).parse() {
            Ok(IpAddr::V4(vip)) => vips.push(vip),
            Ok(IpAddr::V6(vip)) => vips6.push(vip),
            Err(_) => {}
        }
    }
    vips.sort_unstable();
    vips.dedup();
    vips6.sort_unstable();
    vips6.dedup();
    (vips, vips6)
}

/// The text `drlb doctor` prints.
#[must_use]
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = writeln!(
            out,
            "{}  {}",
            if f.problem { "PROBLEM" } else { "ok     " },
            f.text
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
    const OWN: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const RS2: [u8; 6] = [2, 0, 0, 0, 0, 0x12];
    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 3];
    const STRANGER: [u8; 6] = [2, 0, 0, 0, 0, 0x99];

    fn director(active: bool) -> Director {
        Director {
            macs: vec![OWN],
            active,
            answers_arp: true,
            backends: vec![
                (Ipv4Addr::new(198, 18, 0, 11).into(), [2, 0, 0, 0, 0, 0x11]),
                (Ipv4Addr::new(198, 18, 0, 12).into(), RS2),
            ],
            conflicts: Vec::new(),
        }
    }

    fn reply(mac: [u8; 6]) -> Reply {
        Reply {
            sender_mac: mac,
            sender_ip: VIP,
        }
    }

    fn problems(findings: &[Finding]) -> Vec<&str> {
        findings
            .iter()
            .filter(|f| f.problem)
            .map(|f| f.text.as_str())
            .collect()
    }

    #[test]
    fn rx_vlan_offload_on_a_trunk_is_a_problem() {
        let on = diagnose_vlan_offload(&[("eth0.100".into(), "eth0".into(), true)]);
        assert_eq!(problems(&on).len(), 1);
        assert!(on[0].text.contains("ethtool -K eth0 rxvlan off"), "{on:?}");
        let off = diagnose_vlan_offload(&[("eth0.100".into(), "eth0".into(), false)]);
        assert!(problems(&off).is_empty() && off.len() == 1, "{off:?}");
    }

    #[test]
    fn silence_is_right_for_an_active_director() {
        let findings = diagnose_vip(VIP, &[], &director(true));
        assert!(problems(&findings).is_empty(), "{findings:?}");
        // Replies for other addresses and our own MAC do not count.
        let other = Reply {
            sender_mac: STRANGER,
            sender_ip: Ipv4Addr::new(198, 18, 0, 1),
        };
        assert!(problems(&diagnose_vip(VIP, &[other, reply(OWN)], &director(true))).is_empty());
    }

    #[test]
    fn a_backend_answering_is_named_with_its_fix_in_any_state() {
        for active in [true, false] {
            let findings = diagnose_vip(
                VIP,
                &[reply(RS2), reply(RS2), reply(PEER)],
                &director(active),
            );
            let found = problems(&findings);
            let rs2 = found
                .iter()
                .find(|t| t.contains("backend 198.18.0.12 (02:00:00:00:00:12)"))
                .unwrap_or_else(|| panic!("rs2 not named: {findings:?}"));
            assert!(rs2.contains("2 replies"), "{rs2}");
            assert!(
                rs2.contains("drlb realserver setup --vip 198.18.0.100"),
                "{rs2}"
            );
        }
    }

    /// `arp = false`: the VIP is routed to the director, which answers no ARP for it, so
    /// silence is right in either state and any answer is a problem.
    #[test]
    fn with_arp_off_silence_is_right_and_any_answer_is_a_problem() {
        for active in [true, false] {
            let routed = Director {
                answers_arp: false,
                ..director(active)
            };
            let quiet = diagnose_vip(VIP, &[reply(OWN)], &routed);
            assert!(problems(&quiet).is_empty(), "{quiet:?}");
            assert!(quiet[0].text.contains("arp = false"), "{quiet:?}");
            let stranger = diagnose_vip(VIP, &[reply(STRANGER), reply(PEER)], &routed);
            assert_eq!(problems(&stranger).len(), 1, "{stranger:?}");
            assert!(
                problems(&stranger)[0].contains("routed to this director"),
                "{stranger:?}"
            );
            let backend = diagnose_vip(VIP, &[reply(RS2)], &routed);
            assert_eq!(problems(&backend).len(), 1, "{backend:?}");
            assert!(
                problems(&backend)[0].contains("backend 198.18.0.12"),
                "{backend:?}"
            );
        }
    }

    #[test]
    fn strangers_are_a_problem_for_an_active_director_and_the_peer_for_a_standby() {
        let active = diagnose_vip(VIP, &[reply(STRANGER)], &director(true));
        assert!(
            problems(&active)[0].contains("another director active too"),
            "{active:?}"
        );
        let standby = diagnose_vip(VIP, &[reply(PEER)], &director(false));
        assert!(problems(&standby).is_empty(), "{standby:?}");
        assert!(standby[0].text.contains("that is the active director"));
        let nobody = diagnose_vip(VIP, &[], &director(false));
        assert!(
            problems(&nobody)[0].contains("no director is active"),
            "{nobody:?}"
        );
        let two = diagnose_vip(VIP, &[reply(PEER), reply(STRANGER)], &director(false));
        assert!(
            problems(&two)[0].contains("only one director may be active"),
            "{two:?}"
        );
    }

    #[test]
    fn ipv6_vips_are_diagnosed_from_neighbour_advertisements() {
        let vip6: Ipv6Addr = "2001:2::100".parse().expect("an address");
        let advert = |mac| Advert { mac, target: vip6 };
        let quiet = diagnose_vip6(vip6, &[advert(OWN)], &director(true));
        assert!(problems(&quiet).is_empty(), "{quiet:?}");
        assert!(
            quiet[0].text.contains("no other host answers NDP"),
            "{quiet:?}"
        );
        let other_target = Advert {
            mac: STRANGER,
            target: "2001:2::1".parse().expect("an address"),
        };
        assert!(problems(&diagnose_vip6(vip6, &[other_target], &director(true))).is_empty());
        let found = diagnose_vip6(vip6, &[advert(RS2), advert(STRANGER)], &director(true));
        let found = problems(&found);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("backend 198.18.0.12 (02:00:00:00:00:12) answers NDP")
                && found[0].contains("drlb realserver setup --vip 2001:2::100")
                && found[0].contains("on lo as /128 with nodad"),
            "{found:?}"
        );
        assert!(
            found[1].contains("another director active too"),
            "{found:?}"
        );
        let standby = diagnose_vip6(vip6, &[advert(PEER)], &director(false));
        assert!(problems(&standby).is_empty(), "{standby:?}");
    }

    #[test]
    fn vips_of_both_families_are_told_apart() {
        let (v4, v6) = split_vips(
            [
                "198.18.0.100",
                "[2001:2::100]",
                "2001:2::100",
                "198.18.0.100",
                "nonsense",
            ]
            .into_iter(),
        );
        assert_eq!(v4, [VIP]);
        assert_eq!(v6, ["2001:2::100".parse::<Ipv6Addr>().expect("an address")]);
    }

    #[test]
    fn recent_requests_from_a_backend_with_the_vip_as_sender_are_reported() {
        let seen = |backend: Option<&str>, requests, ago| ArpConflictStats {
            mac: format_mac(RS2),
            backend: backend.map(str::to_owned),
            requests,
            replies: 0,
            vip: VIP.to_string(),
            last_seen_secs_ago: ago,
            explanation: String::new(),
        };
        let mut d = director(true);
        d.conflicts = vec![
            seen(Some("198.18.0.12"), 3, 10),
            seen(Some("198.18.0.12"), 0, 10),
            seen(None, 3, 10),
            seen(Some("198.18.0.12"), 3, RECENT_SECS + 1),
        ];
        let found = diagnose_requests(&d);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].text.contains("arp_announce is too low"),
            "{found:?}"
        );
    }
}
