//! VIP conflicts on the director: other MACs claiming a VIP in ARP, or for an IPv6 VIP in
//! neighbour discovery (see `lb_common::conflict`).
//!
//! The XDP program counts them per offending MAC; this module reads the counts, names the
//! backend that owns each MAC (from what the director knows of its backends), logs increases
//! (rate-limited per MAC) and reports them in `drlb stats`.
//!
//! In a switched network the director only sees broadcast ARP and what is addressed to it, so
//! it would never see a real server answering a *client's* ARP request for the VIP. The daemon
//! therefore asks, every [`PROBE_INTERVAL`], "who has VIP? tell <the director's address>"
//! (what `arping` does): a real server with `arp_ignore` too low answers it, to the director,
//! and the program counts that reply. A real server whose `arp_announce` is too low shows up
//! by itself: its requests carry the VIP as sender and are broadcast.
//!
//! For IPv6 VIPs the program counts Neighbor Advertisements for the VIP from another MAC as
//! replies, and Neighbor Solicitations from the VIP (or DAD probes for it) as requests; the
//! daemon's probe solicits each IPv6 VIP from the interface's link-local address, so that
//! another host advertising it answers the director.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{MapData, MapError, PerCpuHashMap},
};
use lb_common::conflict::{ArpConflict, ArpConflictKey, MAP_NAME, MAX_ARP_CONFLICTS};
use tracing::{info, warn};

use crate::{
    net::{addr::ip_of, arp, mac::format_mac, ndp_probe},
    report::conflicts::ArpConflictStats,
};

/// How often the daemon asks the link who answers for each VIP.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// A MAC's conflicts are logged at most this often (the first time at once).
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// MACs that are not backends' the log limiter remembers at most: forged ARP from random MACs
/// must not grow the daemon's memory. Four times what the program's map holds, so that a
/// normal churn of MACs within one [`LOG_INTERVAL`] fits.
pub const MAX_LOGGED_MACS: usize = 4 * MAX_ARP_CONFLICTS as usize;

/// One offending MAC, its counts summed over the CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub mac: [u8; 6],
    pub requests: u64,
    pub replies: u64,
    /// CLOCK_MONOTONIC nanoseconds of the last frame.
    pub last_seen_ns: u64,
    pub last_vip: IpAddr,
}

impl Seen {
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.requests + self.replies
    }
}

/// Adds up one MAC's per-CPU values; the last-seen fields come from the CPU that saw it last.
#[must_use]
pub fn sum_cpus(mac: [u8; 6], values: &[ArpConflict]) -> Seen {
    let latest = values
        .iter()
        .max_by_key(|v| v.last_seen_ns)
        .copied()
        .unwrap_or_default();
    Seen {
        mac,
        requests: values.iter().map(|v| v.requests).sum(),
        replies: values.iter().map(|v| v.replies).sum(),
        last_seen_ns: latest.last_seen_ns,
        last_vip: ip_of(latest.last_vip),
    }
}

/// The program's `ARP_CONFLICTS` map.
pub struct ConflictMap {
    map: PerCpuHashMap<MapData, ArpConflictKey, ArpConflict>,
}

impl ConflictMap {
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self> {
        let map = ebpf
            .take_map(MAP_NAME)
            .with_context(|| format!("the eBPF object has no map {MAP_NAME}"))?;
        Ok(Self {
            map: PerCpuHashMap::try_from(map)
                .with_context(|| format!("map {MAP_NAME} has an unexpected type"))?,
        })
    }

    /// Every MAC in the map, ordered by MAC.
    pub fn read(&self) -> Result<Vec<Seen>> {
        let keys = self
            .map
            .keys()
            .map(|key| key.map(|k| k.mac).context("listing ARP_CONFLICTS failed"));
        collect_seen(keys, |mac| {
            let key = ArpConflictKey { mac, _pad: [0; 2] };
            match self.map.get(&key, 0) {
                Ok(values) => Ok(Some(sum_cpus(mac, &values))),
                // Evicted (LRU) between listing and reading: gone, nothing to report.
                Err(MapError::KeyNotFound) => Ok(None),
                Err(e) => Err(e).context("reading ARP_CONFLICTS failed"),
            }
        })
    }
}

/// Reads at most [`MAX_ARP_CONFLICTS`] keys, once each, ordered by MAC. While forged ARP
/// churns the LRU map, the key being listed may be evicted, and the kernel then lists again
/// from the first key: without a bound, the listing could go on (and grow) as long as the
/// flood does.
fn collect_seen(
    keys: impl Iterator<Item = Result<[u8; 6]>>,
    mut read: impl FnMut([u8; 6]) -> Result<Option<Seen>>,
) -> Result<Vec<Seen>> {
    let mut seen = Vec::new();
    let mut listed = HashSet::new();
    for mac in keys.take(MAX_ARP_CONFLICTS as usize) {
        let mac = mac?;
        if listed.insert(mac)
            && let Some(s) = read(mac)?
        {
            seen.push(s);
        }
    }
    seen.sort_by_key(|s| s.mac);
    Ok(seen)
}

/// The backend whose MAC this is, if any.
#[must_use]
pub fn owner(mac: [u8; 6], backends: &[(IpAddr, [u8; 6])]) -> Option<IpAddr> {
    backends.iter().find(|(_, m)| *m == mac).map(|(a, _)| *a)
}

/// What the director knows that names a MAC and judges a conflict.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Whether this director answers ARP for its VIPs (not a standby).
    pub active: bool,
    /// (address, MAC) of every backend whose MAC is known, of both families: a real server
    /// claims a VIP with the one MAC, whichever family its backend address is.
    pub backends: Vec<(IpAddr, [u8; 6])>,
}

/// The explanation of a conflict: who claims the VIP, why it matters and the fix.
#[must_use]
pub fn explain(seen: &Seen, context: &Context) -> String {
    let vip = seen.last_vip;
    if vip.is_ipv6() {
        return explain_ndp(seen, vip, context);
    }
    match owner(seen.mac, &context.backends) {
        Some(backend) => {
            let mut why = Vec::new();
            if seen.replies > 0 {
                why.push("answers ARP for the VIP (arp_ignore too low)");
            }
            if seen.requests > 0 {
                why.push("sends ARP requests with the VIP as sender (arp_announce too low)");
            }
            format!(
                "backend {backend} {}: neighbours may send VIP traffic straight to it, bypassing the director; \
                 on {backend} run `drlb realserver setup --vip {vip}` (or set net.ipv4.conf.all.arp_ignore=1 and \
                 net.ipv4.conf.all.arp_announce=2) and check with `drlb realserver check --vip {vip}`",
                why.join(" and ")
            )
        }
        None if context.active && seen.replies == 0 => format!(
            "a host that is not a backend announced {vip} (gratuitous ARP) while this director is active: \
             normally a director taking over, just before this one is deactivated; if both stay active, the \
             other answers this director's probes and shows replies here (check keepalived on both)"
        ),
        None if context.active => format!(
            "a host that is not a backend answers ARP for {vip} while this director is active: another director \
             that is active too (check keepalived on both) or a host holding the VIP on an interface that \
             answers ARP"
        ),
        None => format!(
            "{vip} is claimed by a host that is not a backend while this director is standby: normally the \
             active director"
        ),
    }
}

/// [`explain`] for an IPv6 VIP, claimed in neighbour discovery.
fn explain_ndp(seen: &Seen, vip: IpAddr, context: &Context) -> String {
    match owner(seen.mac, &context.backends) {
        Some(backend) => {
            let mut why = Vec::new();
            if seen.replies > 0 {
                why.push("advertises the VIP in neighbour discovery (the VIP is on an interface that answers NDP)");
            }
            if seen.requests > 0 {
                why.push("sends neighbour solicitations from the VIP, or DAD probes for it");
            }
            format!(
                "backend {backend} {}: neighbours may send VIP traffic straight to it, bypassing the director; \
                 on {backend} run `drlb realserver setup --vip {vip}` (the VIP on lo as /128 with nodad) and \
                 check with `drlb realserver check --vip {vip}`",
                why.join(" and ")
            )
        }
        None if context.active && seen.replies == 0 => format!(
            "a host that is not a backend solicited from or probed for {vip} (DAD) while this director is \
             active: another host is configuring the VIP, normally a director taking over"
        ),
        None if context.active => format!(
            "a host that is not a backend advertises {vip} (neighbour advertisement) while this director is \
             active: another director that is active too (check keepalived on both) or a host holding the \
             VIP on an interface that answers NDP"
        ),
        None => format!(
            "{vip} is claimed by a host that is not a backend while this director is standby: normally the \
             active director"
        ),
    }
}

/// Frames added to a MAC's counts since it was last logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Added {
    pub requests: u64,
    pub replies: u64,
}

impl Added {
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.requests + self.replies
    }
}

/// Whether new frames need attention (a warning): a backend claiming a VIP always does; a host
/// that is not a backend does when it *answers* for the VIP while this director is active.
/// A mere announcement from another host is normally a director taking over, which reaches
/// the old active director a moment before keepalived deactivates it; and on a standby, the
/// active director answering its probes is how it should be.
#[must_use]
pub fn is_problem(seen: &Seen, added: Added, context: &Context) -> bool {
    owner(seen.mac, &context.backends).is_some() || (context.active && added.replies > 0)
}

/// Decides which MACs to log now: those whose counts grew since they were last logged, if that
/// was at least [`LOG_INTERVAL`] ago, or at once if they now need attention and the last line
/// did not. Returns each with what was added since the last log and whether it is a problem.
///
/// Bounded although fed from the network: a MAC is forgotten once it has left the program's
/// map and was last logged at least [`LOG_INTERVAL`] ago, and at most [`MAX_LOGGED_MACS`]
/// MACs are remembered besides the backends' (which the config bounds). MACs beyond that are
/// not logged one by one but summed up by [`LogLimiter::overflow_due`].
#[derive(Default)]
pub struct LogLimiter {
    /// When each MAC was last logged, its counts then, and whether that line was a problem.
    logged: HashMap<[u8; 6], (Instant, Seen, bool)>,
    /// The most MACs left unlogged for want of room in one call since the last summary.
    skipped: usize,
    /// When the last summary of unlogged MACs was due.
    last_summary: Option<Instant>,
}

impl LogLimiter {
    pub fn due(
        &mut self,
        seen: &[Seen],
        now: Instant,
        context: &Context,
    ) -> Vec<(Seen, Added, bool)> {
        self.forget_quiet(seen, now);
        let backends: HashSet<[u8; 6]> = context.backends.iter().map(|(_, mac)| *mac).collect();
        let mut skipped = 0;
        let mut due = Vec::new();
        for s in seen {
            let last = self.logged.get(&s.mac).copied();
            // Counts below the logged ones: the entry was evicted and came back.
            let restarted =
                last.is_some_and(|(_, l, _)| s.requests < l.requests || s.replies < l.replies);
            let added = match last {
                Some((_, l, _)) if !restarted => Added {
                    requests: s.requests - l.requests,
                    replies: s.replies - l.replies,
                },
                _ => Added {
                    requests: s.requests,
                    replies: s.replies,
                },
            };
            if added.frames() == 0 {
                continue;
            }
            let problem = is_problem(s, added, context);
            let quiet = last.is_none_or(|(at, _, _)| now.duration_since(at) >= LOG_INTERVAL);
            let escalated = problem && last.is_some_and(|(_, _, was_problem)| !was_problem);
            if !(quiet || escalated) {
                continue;
            }
            let full = self.logged.len() >= MAX_LOGGED_MACS;
            if last.is_none() && full && !backends.contains(&s.mac) {
                skipped += 1;
                continue;
            }
            due.push((*s, added, problem));
            self.logged.insert(s.mac, (now, *s, problem));
        }
        self.skipped = self.skipped.max(skipped);
        due
    }

    /// Forgets the MACs that left the program's map and were last logged at least
    /// [`LOG_INTERVAL`] ago: if one comes back, its counts start again and it is logged at
    /// once, as the rate limit would allow anyway. MACs still in the map are kept, so that
    /// unchanged counts are not logged again.
    fn forget_quiet(&mut self, seen: &[Seen], now: Instant) {
        let present: HashSet<[u8; 6]> = seen.iter().map(|s| s.mac).collect();
        self.logged.retain(|mac, (at, _, _)| {
            present.contains(mac) || now.duration_since(*at) < LOG_INTERVAL
        });
    }

    /// How many MACs (at least) went unlogged for want of room since the last summary, at most
    /// once per [`LOG_INTERVAL`]; `None` when there is nothing to say yet.
    pub fn overflow_due(&mut self, now: Instant) -> Option<usize> {
        let recent = self
            .last_summary
            .is_some_and(|at| now.duration_since(at) < LOG_INTERVAL);
        if self.skipped == 0 || recent {
            return None;
        }
        self.last_summary = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

/// The daemon's side: reads the map, logs, probes the VIPs, reports.
pub struct Monitor {
    map: ConflictMap,
    limiter: LogLimiter,
    prober: Option<arp::ArpSocket>,
    next_probe: Instant,
}

impl Monitor {
    #[must_use]
    pub fn new(map: ConflictMap) -> Self {
        let prober = match arp::ArpSocket::sender(0) {
            Ok(socket) => Some(socket),
            Err(e) => {
                warn!("VIPs will not be probed for conflicts: {e:#}");
                None
            }
        };
        Self {
            map,
            limiter: LogLimiter::default(),
            prober,
            next_probe: Instant::now(),
        }
    }

    /// Called about once a second: probes the VIPs when due, then logs new conflicts.
    pub fn tick(&mut self, context: &Context, probe: &Probe) {
        let now = Instant::now();
        if now >= self.next_probe {
            self.next_probe = now + PROBE_INTERVAL;
            if let Some(socket) = &self.prober {
                for (vip, ifindex, frame) in probe.frames() {
                    if let Err(e) = socket.send_on(ifindex, &frame) {
                        warn!(%vip, ifindex, "conflict probe failed: {e:#}");
                    }
                }
            }
        }
        let seen = match self.map.read() {
            Ok(seen) => seen,
            Err(e) => return warn!("reading the ARP conflict counters failed: {e:#}"),
        };
        for (s, added, problem) in self.limiter.due(&seen, now, context) {
            let mac = format_mac(s.mac);
            let explanation = explain(&s, context);
            let (new_requests, new_replies) = (added.requests, added.replies);
            if problem {
                warn!(%mac, vip = %s.last_vip, new_requests, new_replies, "VIP conflict: {explanation}");
            } else {
                info!(%mac, vip = %s.last_vip, new_requests, new_replies, "VIP claimed elsewhere: {explanation}");
            }
        }
        if let Some(skipped) = self.limiter.overflow_due(now) {
            warn!(
                "ARP or NDP frames claiming a VIP came from more MACs than the log follows ({MAX_LOGGED_MACS}): \
                 at least {skipped} MACs were not logged one by one (forged ARP on the link?); \
                 `drlb stats` lists what the program counts"
            );
        }
    }

    /// The conflicts for `drlb stats`.
    pub fn report(&self, context: &Context) -> Result<Vec<ArpConflictStats>> {
        let now_ns = monotonic_ns();
        Ok(self
            .map
            .read()?
            .iter()
            .map(|s| ArpConflictStats {
                mac: format_mac(s.mac),
                backend: owner(s.mac, &context.backends).map(|a| a.to_string()),
                requests: s.requests,
                replies: s.replies,
                vip: s.last_vip.to_string(),
                last_seen_secs_ago: now_ns.saturating_sub(s.last_seen_ns) / 1_000_000_000,
                explanation: explain(s, context),
            })
            .collect())
    }
}

/// What the periodic probe sends: on each of the director's interfaces (the program answers
/// ARP on all of them, and a VIP may be claimed on any of their links), from its MAC and
/// address there, for each VIP.
#[derive(Clone, Debug)]
pub struct Probe {
    pub from: Vec<ProbeFrom>,
    pub vips: Vec<Ipv4Addr>,
    /// IPv6 VIPs, solicited (neighbour discovery) from each interface's EUI-64 link-local
    /// address: a host advertising one answers the director, and the program counts that.
    pub vips6: Vec<Ipv6Addr>,
}

impl Probe {
    /// Every probe frame: (VIP, interface to send it on, frame).
    #[must_use]
    pub fn frames(&self) -> Vec<(IpAddr, u32, Vec<u8>)> {
        let mut frames = Vec::new();
        for from in &self.from {
            for vip in &self.vips {
                let frame = arp::request(from.mac, from.sender_ip, *vip);
                frames.push((IpAddr::V4(*vip), from.ifindex, frame));
            }
            let source = ndp_probe::link_local(from.mac);
            for vip in &self.vips6 {
                match ndp_probe::solicitation(from.mac, source, *vip) {
                    Ok(frame) => frames.push((IpAddr::V6(*vip), from.ifindex, frame)),
                    Err(e) => warn!(%vip, "conflict probe not built: {e:#}"),
                }
            }
        }
        frames
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ProbeFrom {
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// The director's own address on the interface (0.0.0.0 if it has none).
    pub sender_ip: Ipv4Addr,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain old data; all-zero is a valid value.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::conflicts::render;

    const RS_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x12];
    const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
    const RS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);
    /// An IPv6-only real server, with a MAC of its own.
    const RS6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x12));
    const RS6_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x62];

    fn seen(mac: [u8; 6], requests: u64, replies: u64) -> Seen {
        Seen {
            mac,
            requests,
            replies,
            last_seen_ns: 1,
            last_vip: VIP,
        }
    }

    fn context(active: bool) -> Context {
        Context {
            active,
            backends: vec![
                (Ipv4Addr::new(198, 18, 0, 11).into(), [2, 0, 0, 0, 0, 0x11]),
                (RS.into(), RS_MAC),
                (RS6, RS6_MAC),
            ],
        }
    }

    #[test]
    fn per_cpu_values_add_up_and_the_latest_cpu_names_the_vip() {
        let cpu = |requests, replies, at, vip: [u8; 4]| ArpConflict {
            requests,
            replies,
            last_seen_ns: at,
            last_vip: lb_common::ipv4_mapped(vip),
        };
        let s = sum_cpus(
            RS_MAC,
            &[
                cpu(1, 2, 50, [198, 18, 0, 100]),
                cpu(0, 3, 70, [198, 18, 0, 101]),
                ArpConflict::default(),
            ],
        );
        assert_eq!((s.requests, s.replies, s.frames()), (1, 5, 6));
        assert_eq!(
            (s.last_seen_ns, s.last_vip),
            (70, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 101)))
        );
        // An IPv6 VIP is its own 16 bytes.
        let v6: Ipv6Addr = "2001:2::100".parse().expect("an address");
        let s = sum_cpus(
            RS_MAC,
            &[ArpConflict {
                replies: 1,
                last_seen_ns: 1,
                last_vip: v6.octets(),
                ..ArpConflict::default()
            }],
        );
        assert_eq!(s.last_vip, IpAddr::V6(v6));
    }

    #[test]
    fn an_ipv6_vip_is_explained_in_terms_of_neighbour_discovery() {
        let v6: IpAddr = "2001:2::100".parse().expect("an address");
        let answering = Seen {
            last_vip: v6,
            ..seen(RS_MAC, 1, 2)
        };
        let text = explain(&answering, &context(true));
        assert!(
            text.contains("backend 198.18.0.12 advertises the VIP in neighbour discovery"),
            "{text}"
        );
        assert!(
            text.contains("neighbour solicitations from the VIP"),
            "{text}"
        );
        assert!(
            text.contains("run `drlb realserver setup --vip 2001:2::100`"),
            "{text}"
        );
        assert!(!text.contains("arp_ignore"), "{text}");
        let other = Seen {
            last_vip: v6,
            ..seen(OTHER_MAC, 0, 1)
        };
        assert!(explain(&other, &context(true)).contains("another director that is active too"));
        let probing = Seen {
            last_vip: v6,
            ..seen(OTHER_MAC, 1, 0)
        };
        assert!(explain(&probing, &context(true)).contains("(DAD)"));
    }

    #[test]
    fn a_backends_mac_is_named_with_the_fix_and_is_always_a_problem() {
        let answering = seen(RS_MAC, 0, 4);
        for active in [true, false] {
            let text = explain(&answering, &context(active));
            assert!(
                text.contains("backend 198.18.0.12 answers ARP for the VIP (arp_ignore too low)"),
                "{text}"
            );
            assert!(
                text.contains("on 198.18.0.12 run `drlb realserver setup --vip 198.18.0.100`"),
                "{text}"
            );
            assert!(!text.contains("arp_announce too low"), "{text}");
            let (replied, asked) = (
                Added {
                    requests: 0,
                    replies: 1,
                },
                Added {
                    requests: 1,
                    replies: 0,
                },
            );
            assert!(is_problem(&answering, replied, &context(active)));
            assert!(
                is_problem(&answering, asked, &context(active)),
                "a backend, whatever it sent"
            );
        }
        let asking = seen(RS_MAC, 2, 0);
        let text = explain(&asking, &context(true));
        assert!(
            text.contains("with the VIP as sender (arp_announce too low)"),
            "{text}"
        );
        assert!(!text.contains("arp_ignore too low"), "{text}");
    }

    #[test]
    fn an_ipv6_backend_advertising_an_ipv6_vip_is_named_with_its_fix() {
        let vip6: IpAddr = "2001:2::100".parse().unwrap();
        let advertising = Seen {
            last_vip: vip6,
            ..seen(RS6_MAC, 0, 1)
        };
        assert_eq!(owner(RS6_MAC, &context(true).backends), Some(RS6));
        let text = explain(&advertising, &context(true));
        assert!(
            text.contains("backend 2001:2::12 advertises the VIP"),
            "{text}"
        );
        assert!(
            text.contains("drlb realserver setup --vip 2001:2::100"),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_mac_is_a_problem_only_when_it_answers_while_active() {
        let answering = seen(OTHER_MAC, 0, 1);
        let (replied, announced) = (
            Added {
                requests: 0,
                replies: 1,
            },
            Added {
                requests: 5,
                replies: 0,
            },
        );
        assert_eq!(owner(OTHER_MAC, &context(true).backends), None);
        assert!(is_problem(&answering, replied, &context(true)));
        assert!(
            explain(&answering, &context(true)).contains("another director that is active too")
        );
        assert!(
            !is_problem(&answering, replied, &context(false)),
            "on a standby: the active director"
        );
        assert!(explain(&answering, &context(false)).contains("normally the active director"));
        // A takeover announcement reaching the old active director: not (yet) a problem.
        let announcing = seen(OTHER_MAC, 5, 0);
        assert!(!is_problem(&announcing, announced, &context(true)));
        assert!(explain(&announcing, &context(true)).contains("normally a director taking over"));
    }

    #[test]
    fn logs_are_limited_per_mac_and_carry_what_was_added() {
        let mut limiter = LogLimiter::default();
        let active = context(true);
        let t0 = Instant::now();
        let logged = |due: Vec<(Seen, Added, bool)>| {
            due.into_iter()
                .map(|(s, a, problem)| (s.mac, a.requests, a.replies, problem))
                .collect::<Vec<_>>()
        };
        let first = limiter.due(&[seen(RS_MAC, 0, 3), seen(OTHER_MAC, 1, 0)], t0, &active);
        assert_eq!(
            logged(first),
            [(RS_MAC, 0, 3, true), (OTHER_MAC, 1, 0, false)]
        );
        // More frames soon after: not yet.
        let soon = t0 + Duration::from_secs(5);
        assert!(limiter.due(&[seen(RS_MAC, 0, 9)], soon, &active).is_empty());
        // ...unless they turn an announcement into a problem: the unknown host now answers.
        let escalated = limiter.due(&[seen(OTHER_MAC, 1, 1)], soon, &active);
        assert_eq!(logged(escalated), [(OTHER_MAC, 0, 1, true)]);
        // After the interval: what was added since the last log line.
        let later = limiter.due(
            &[seen(RS_MAC, 0, 9), seen(OTHER_MAC, 1, 1)],
            t0 + LOG_INTERVAL,
            &active,
        );
        assert_eq!(logged(later), [(RS_MAC, 0, 6, true)]);
        // Nothing new: nothing logged, however long it has been.
        assert!(
            limiter
                .due(&[seen(RS_MAC, 0, 9)], t0 + 10 * LOG_INTERVAL, &active)
                .is_empty()
        );
        // Evicted and seen again (counts restarted below the logged ones): logged again.
        let back = limiter.due(&[seen(RS_MAC, 0, 2)], t0 + 11 * LOG_INTERVAL, &active);
        assert_eq!(logged(back), [(RS_MAC, 0, 2, true)]);
    }

    #[test]
    fn a_flood_of_forged_macs_keeps_the_limiter_bounded_and_per_mac_limits_working() {
        const FLOOD_MACS: usize = 100_000;
        const NEW_MACS_PER_TICK: usize = 1000;
        // What the program's LRU map holds at a time: the most recent MACs.
        let window = MAX_ARP_CONFLICTS as usize - 1;
        let forged = |i: usize| {
            let b = u32::try_from(i).expect("small").to_be_bytes();
            [0x02, 0xff, b[0], b[1], b[2], b[3]]
        };
        let active = context(true);
        let bound = MAX_LOGGED_MACS + active.backends.len();
        let mut limiter = LogLimiter::default();
        let t0 = Instant::now();
        let ticks = FLOOD_MACS / NEW_MACS_PER_TICK;
        let mut backend_logged = Vec::new();
        let mut summaries = Vec::new();
        for tick in 0..ticks {
            let now = t0 + Duration::from_secs(u64::try_from(tick).expect("small"));
            let newest = (tick + 1) * NEW_MACS_PER_TICK;
            let mut map: Vec<Seen> = (newest.saturating_sub(window)..newest)
                .map(|i| seen(forged(i), 1, 0))
                .collect();
            // A backend answering for the VIP all along, among the forged MACs.
            map.push(seen(RS_MAC, 0, u64::try_from(tick).expect("small") + 1));
            map.sort_by_key(|s| s.mac);
            for (s, _, _) in limiter.due(&map, now, &active) {
                if s.mac == RS_MAC {
                    backend_logged.push(tick);
                }
            }
            if let Some(skipped) = limiter.overflow_due(now) {
                assert!(skipped > 0, "tick {tick}: a summary of nothing");
                summaries.push(tick);
            }
            assert!(
                limiter.logged.len() <= bound,
                "tick {tick}: the limiter remembers {} MACs, more than {bound}",
                limiter.logged.len()
            );
        }
        let interval_ticks = usize::try_from(LOG_INTERVAL.as_secs()).expect("small");
        assert_eq!(
            backend_logged,
            [0, interval_ticks],
            "the backend is logged at once, then once per LOG_INTERVAL, flood or not"
        );
        assert_eq!(
            summaries,
            [
                MAX_LOGGED_MACS / NEW_MACS_PER_TICK,
                MAX_LOGGED_MACS / NEW_MACS_PER_TICK + interval_ticks
            ],
            "MACs beyond the bound are summed up in one line per LOG_INTERVAL"
        );
        // The flood stops: its MACs leave the map and, once quiet, the limiter.
        let after = t0 + Duration::from_secs(u64::try_from(ticks).expect("small")) + LOG_INTERVAL;
        let rs_now = seen(RS_MAC, 0, u64::try_from(ticks).expect("small"));
        let last = limiter.due(&[rs_now], after, &active);
        assert!(last.iter().all(|(s, _, _)| s.mac == RS_MAC), "{last:?}");
        assert_eq!(
            limiter.logged.len(),
            1,
            "only the backend that is still in the map"
        );
    }

    #[test]
    fn a_listing_that_keeps_restarting_is_bounded_and_lists_each_mac_once() {
        // Evictions make the kernel list from the first key again, over and over.
        let restarting = [RS_MAC, OTHER_MAC].into_iter().cycle().map(Ok);
        let mut reads = 0;
        let seen = collect_seen(restarting, |mac| {
            reads += 1;
            Ok(Some(seen(mac, 1, 0)))
        })
        .expect("listed");
        assert_eq!(
            seen.iter().map(|s| s.mac).collect::<Vec<_>>(),
            [RS_MAC, OTHER_MAC],
            "each MAC once, ordered"
        );
        assert_eq!(reads, 2, "each MAC is read once");
    }

    #[test]
    fn probes_ask_for_every_vip_of_both_families_on_every_interface() {
        let mac = [0x02, 0, 0, 0, 0, 0x02];
        let vip6: Ipv6Addr = "2001:2::100".parse().expect("an address");
        let probe = Probe {
            from: vec![
                ProbeFrom {
                    ifindex: 3,
                    mac,
                    sender_ip: Ipv4Addr::new(198, 18, 0, 2),
                },
                ProbeFrom {
                    ifindex: 4,
                    mac,
                    sender_ip: Ipv4Addr::UNSPECIFIED,
                },
            ],
            vips: vec![Ipv4Addr::new(198, 18, 0, 100)],
            vips6: vec![vip6],
        };
        let frames = probe.frames();
        let asked: Vec<(IpAddr, u32)> = frames.iter().map(|(v, i, _)| (*v, *i)).collect();
        assert_eq!(
            asked,
            [
                (VIP, 3),
                (IpAddr::V6(vip6), 3),
                (VIP, 4),
                (IpAddr::V6(vip6), 4)
            ]
        );
        let ns = &frames[1].2;
        assert_eq!(
            *ns,
            ndp_probe::solicitation(mac, ndp_probe::link_local(mac), vip6).expect("built"),
            "a solicitation from the link-local address"
        );
    }

    #[test]
    fn the_stats_section_names_mac_backend_and_fix() {
        let stats = ArpConflictStats {
            mac: format_mac(RS_MAC),
            backend: Some(RS.to_string()),
            requests: 0,
            replies: 4,
            vip: VIP.to_string(),
            last_seen_secs_ago: 2,
            explanation: explain(&seen(RS_MAC, 0, 4), &context(true)),
        };
        let text = render(&[stats]);
        assert!(
            text.contains("02:00:00:00:00:12   198.18.0.12     198.18.0.100"),
            "{text}"
        );
        assert!(text.contains("drlb realserver setup"), "{text}");
        assert_eq!(render(&[]), "");
    }
}
