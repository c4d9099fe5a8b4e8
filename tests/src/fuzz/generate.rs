//! What the fuzzer feeds the program: the director's state (and changes to it) and frames.
//!
//! The state is a small fixed world of interfaces, VIPs and services, chosen so that every
//! path of the program is reachable: active and standby services, maglev and source hash,
//! drained, removed and no-MAC backends, a service without backends, backends behind another
//! interface and behind an interface the program cannot send to. Frames are valid frames of
//! every kind from `tests::packet`, often mutated a few bytes at a time or truncated, and
//! random bytes; clients come from a small pool so that flows recur and meet the flow table.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use etherparse::ArpOperation;
use lb_common::{IPPROTO_TCP, IPPROTO_UDP};

use super::{adapter::MAX_TABLE_LEN, rng::Rng};
use crate::{
    model::{BROADCAST, BackendTarget, Mac, ServiceState, State},
    ndp_frames::{
        ALL_NODES, NdpFrame, OPTION_NONCE, OPTION_SOURCE_LLA, OPTION_TARGET_LLA, lla_option,
        multicast_mac,
    },
    packet::{
        Arp, DIRECTOR_IP, INACTIVE_VIP, INACTIVE_VIP_IPV6, IcmpError, Icmpv6Error, Ipv4Flow,
        Ipv4Frame, Ipv6Flow, Ipv6Frame, MIN_FRAME_LEN, MULTICAST_MAC, OTHER_HOST_MAC, OTHER_IP,
        OTHER_IPV6, OUTER_VLAN_ID, ROUTER_IP, ROUTER_IPV6, ROUTER_MAC, VIP, VIP_IPV6, VLAN_ID,
        backend_mac, icmp_echo_request, icmp_error, icmpv6_echo_request, icmpv6_error,
        with_fragment, with_ip_id,
    },
};

/// Interfaces of the fuzz namespace, created with these ifindexes (`fuzz::Namespace`), so that
/// a fixture's state means the same on replay. Loopback always has ifindex 1.
pub const LOOPBACK_IFINDEX: u32 = 1;
pub const IF_A: u32 = 11;
pub const IF_B: u32 = 12;
/// Exists and is an egress, but the program is not "attached" to it (no INTERFACES entry).
pub const IF_UNREGISTERED: u32 = 13;
/// The interfaces to create, as veth pairs (this kernel has no dummy driver): (name, ifindex,
/// peer name, peer ifindex). Peers are never used; their ifindexes are fixed so that they do
/// not take one of the others'.
pub const INTERFACES: [(&str, u32, &str, u32); 3] = [
    ("fz-a", IF_A, "fz-a-peer", 21),
    ("fz-b", IF_B, "fz-b-peer", 22),
    ("fz-c", IF_UNREGISTERED, "fz-c-peer", 23),
];
/// An ifindex no interface has: a backend behind it cannot be sent to.
const NO_SUCH_IFINDEX: u32 = 14;
const LOOPBACK_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x0f, 0x01];
const IF_A_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x0f, 0x0a];
const IF_B_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x0f, 0x0b];
/// Where frames arrive, by weight: mostly a registered interface.
const INGRESSES: [u32; 4] = [IF_A, IF_B, LOOPBACK_IFINDEX, IF_UNREGISTERED];
const INGRESS_WEIGHTS: [usize; 4] = [60, 20, 15, 5];

/// A second active VIP, which may be removed and added again.
const VIP2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 102);
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5060;
const NO_BACKEND_PORT: u16 = 8081;
const STANDBY_PORT: u16 = 8082;
const VIP2_PORT: u16 = 80;
const DNS_PORT: u16 = 53;
const UNSERVED_PORT: u16 = 9999;
const PORTS: [u16; 7] = [
    TCP_PORT,
    UDP_PORT,
    NO_BACKEND_PORT,
    STANDBY_PORT,
    VIP2_PORT,
    DNS_PORT,
    UNSERVED_PORT,
];
const DESTINATIONS: [Ipv4Addr; 5] = [VIP, VIP, VIP2, INACTIVE_VIP, OTHER_IP];
/// A second IPv6 VIP, an address of the director (its other traffic is the stack's).
const VIP6_LOCAL: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0x102);
/// ... and the IPv4 VIP's IPv4-mapped form, which keys the IPv4 services.
const DESTINATIONS_V6: [Ipv6Addr; 6] = [
    VIP_IPV6,
    VIP_IPV6,
    VIP6_LOCAL,
    INACTIVE_VIP_IPV6,
    OTHER_IPV6,
    VIP.to_ipv6_mapped(),
];

/// Clients: a few addresses and ports, so flows come back and meet the flow table.
const CLIENTS: u8 = 8;
const CLIENT_PORTS: u16 = 8;
const FIRST_CLIENT_PORT: u16 = 40_000;
/// Backend ids a state change may use.
const BACKEND_IDS: u32 = 12;
/// Table lengths a state change may choose (primes, like Maglev's, and a degenerate 1).
const TABLE_LENS: [usize; 5] = [1, 7, 13, 29, MAX_TABLE_LEN as usize];
const SERVICE_IDS: u32 = 64;

/// Frame kinds and their weights in the mix.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Ipv4Service,
    Fragment,
    ArpRequest,
    ArpReply,
    Icmp,
    Ipv6,
    Icmpv6,
    Ndp,
    RandomBytes,
}
const KINDS: [(Kind, usize); 9] = [
    (Kind::Ipv4Service, 40),
    (Kind::Fragment, 6),
    (Kind::ArpRequest, 14),
    (Kind::ArpReply, 5),
    (Kind::Icmp, 4),
    (Kind::Ipv6, 20),
    (Kind::Icmpv6, 4),
    (Kind::Ndp, 6),
    (Kind::RandomBytes, 12),
];

/// Per mille of frames that are mutated, truncated, padded; of frames that start a sweep of
/// every truncation of one valid frame.
const MUTATE_PER_MILLE: usize = 400;
const TRUNCATE_PER_MILLE: usize = 120;
const PAD_PER_MILLE: usize = 80;
const SWEEP_PER_MILLE: usize = 2;
const PER_MILLE: usize = 1000;
/// Per mille of TCP/UDP frames addressed to one of the state's services.
const SERVICE_PER_MILLE: usize = 650;
/// Bytes changed by one mutation.
const MAX_EDITS: usize = 4;
/// Edits land in the headers most of the time: this many leading bytes.
const HEADER_BYTES: usize = 64;
/// Values that steer parsers: ether types, IPv4 version/IHL, protocols, flag bits.
/// IPv6: its ether type's bytes, version 6, extension header numbers, ICMPv6 and its types.
const INTERESTING_BYTES: [u8; 27] = [
    0x00, 0xff, 0x08, 0x06, 0x81, 0x88, 0xa8, 0x45, 0x46, 0x4f, 0x40, 0x20, 0x01, 0x02, 0x11, 0x3f,
    0x86, 0xdd, 0x60, 0x2b, 0x2c, 0x3c, 0x3a, 0x80, 0x81, 0x87, 0x06,
];
const MAX_RANDOM_LEN: usize = 96;
const MAX_PAYLOAD: usize = 48;
/// IPv4 options: whole 4-byte words, up to the 40 bytes an IHL of 15 allows.
const MAX_OPTION_WORDS: usize = 10;
const NOP_OPTION: u8 = 0x01;
/// A fragment offset in 8-byte units (1480 bytes: the second fragment at a 1500 MTU).
const SECOND_FRAGMENT_UNITS: u16 = 185;
/// IP ids of fragmented datagrams.
const DATAGRAM_IDS: [u16; 3] = [0, 1, 0x1234];
/// What an ICMP error quotes past the IP header: RFC 792's 8 bytes, or all there is.
const QUOTED_RFC792: usize = 8;
const QUOTED_WHOLE: usize = usize::MAX;
/// The next-hop MTU a "fragmentation needed" names.
const PATH_MTU: u16 = 1280;
/// IPv6 fragment ids (32 bits) of fragmented datagrams.
const DATAGRAM_IDS_V6: [u32; 3] = [0, 1, 0x1234_5678];
/// ICMPv6 neighbour discovery types (the program leaves them to the stack).
const ICMPV6_NDP_TYPES: [u8; 5] = [133, 134, 135, 136, 137];
/// Where the ICMPv6 type lies in an untagged frame without extension headers.
const ICMPV6_TYPE_AT: usize = 14 + 40;

/// An IPv6 address that is no VIP, in the VIP's solicited-node group.
const SAME_GROUP_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0x99, 0, 0x100);

/// The fuzz world's interfaces, VIPs and services as a director starts with them.
#[must_use]
pub fn initial_state() -> State {
    let here = |n: u8, ifindex: u32, src_mac: Mac| {
        Some(BackendTarget {
            dst_mac: backend_mac(n),
            src_mac,
            ifindex,
        })
    };
    let service = |id: u32, vip: IpAddr, port: u16, protocol: u8| ServiceState {
        id,
        vip,
        port,
        protocol,
        source_hash: false,
        standby: false,
        table: Vec::new(),
        backends: BTreeMap::new(),
    };
    // Backend 4 of the TCP service is drained: in BACKENDS, not in the table.
    let tcp = ServiceState {
        table: striped(&[0, 1, 2, 3], 13),
        backends: BTreeMap::from([
            (0, here(0, IF_A, IF_A_MAC)),
            (1, here(1, IF_A, IF_A_MAC)),
            (2, here(2, IF_B, IF_B_MAC)),
            (3, here(3, LOOPBACK_IFINDEX, LOOPBACK_MAC)),
            (4, here(4, IF_A, IF_A_MAC)),
        ]),
        ..service(0, VIP.into(), TCP_PORT, IPPROTO_TCP)
    };
    let udp = ServiceState {
        source_hash: true,
        table: striped(&[0, 1, 2], 7),
        backends: BTreeMap::from([
            (0, here(5, IF_A, IF_A_MAC)),
            (1, here(6, IF_B, IF_B_MAC)),
            (2, here(7, IF_A, IF_A_MAC)),
        ]),
        ..service(1, VIP.into(), UDP_PORT, IPPROTO_UDP)
    };
    let standby = ServiceState {
        standby: true,
        table: striped(&[0], 7),
        backends: BTreeMap::from([(0, here(8, IF_A, IF_A_MAC))]),
        ..service(3, VIP.into(), STANDBY_PORT, IPPROTO_TCP)
    };
    // Backend 2 sits behind an interface the program cannot send to; backend 3 has no MAC.
    let vip2 = ServiceState {
        table: striped(
            &[0, 1, 2, 3],
            usize::try_from(MAX_TABLE_LEN).expect("small"),
        ),
        backends: BTreeMap::from([
            (0, here(9, IF_A, IF_A_MAC)),
            (1, here(10, IF_UNREGISTERED, IF_A_MAC)),
            (2, here(11, NO_SUCH_IFINDEX, IF_A_MAC)),
            (3, None),
        ]),
        ..service(4, VIP2.into(), VIP2_PORT, IPPROTO_TCP)
    };
    let on_inactive_vip = ServiceState {
        standby: true,
        table: striped(&[0], 7),
        backends: BTreeMap::from([(0, here(12, IF_A, IF_A_MAC))]),
        ..service(5, INACTIVE_VIP.into(), DNS_PORT, IPPROTO_UDP)
    };
    // A service whose address is no VIP (userspace never does this; the data path allows it).
    let not_a_vip = ServiceState {
        table: striped(&[0], 7),
        backends: BTreeMap::from([(0, here(13, IF_A, IF_A_MAC))]),
        ..service(6, OTHER_IP.into(), TCP_PORT, IPPROTO_TCP)
    };
    // IPv6: a Maglev TCP service, a source-hash UDP one, a standby one, one without backends.
    let tcp6 = ServiceState {
        table: striped(&[0, 1, 2], 13),
        backends: BTreeMap::from([
            (0, here(14, IF_A, IF_A_MAC)),
            (1, here(15, IF_B, IF_B_MAC)),
            (2, here(16, IF_A, IF_A_MAC)),
        ]),
        ..service(7, VIP_IPV6.into(), TCP_PORT, IPPROTO_TCP)
    };
    let udp6 = ServiceState {
        source_hash: true,
        table: striped(&[0, 1], 7),
        backends: BTreeMap::from([
            (0, here(17, IF_A, IF_A_MAC)),
            (1, here(18, LOOPBACK_IFINDEX, LOOPBACK_MAC)),
        ]),
        ..service(8, VIP_IPV6.into(), UDP_PORT, IPPROTO_UDP)
    };
    let standby6 = ServiceState {
        standby: true,
        table: striped(&[0], 7),
        backends: BTreeMap::from([(0, here(19, IF_A, IF_A_MAC))]),
        ..service(9, INACTIVE_VIP_IPV6.into(), TCP_PORT, IPPROTO_TCP)
    };
    let local6 = ServiceState {
        table: striped(&[0], 7),
        backends: BTreeMap::from([(0, here(20, IF_B, IF_B_MAC))]),
        ..service(10, VIP6_LOCAL.into(), VIP2_PORT, IPPROTO_TCP)
    };
    State {
        interfaces: BTreeMap::from([
            (LOOPBACK_IFINDEX, LOOPBACK_MAC),
            (IF_A, IF_A_MAC),
            (IF_B, IF_B_MAC),
        ]),
        egress_ifindexes: BTreeSet::from([IF_A, IF_B, IF_UNREGISTERED]),
        vips: BTreeMap::from([
            (VIP.into(), true),
            (VIP2.into(), true),
            (INACTIVE_VIP.into(), false),
            (VIP_IPV6.into(), true),
            (VIP6_LOCAL.into(), true),
            (INACTIVE_VIP_IPV6.into(), false),
        ]),
        // VIP2 and VIP6_LOCAL are also addresses of the director (their other traffic is the
        // stack's).
        local_vips: BTreeSet::from([VIP2.into(), VIP6_LOCAL.into()]),
        services: vec![
            tcp,
            udp,
            service(2, VIP.into(), NO_BACKEND_PORT, IPPROTO_TCP),
            standby,
            vip2,
            on_inactive_vip,
            not_a_vip,
            tcp6,
            udp6,
            standby6,
            service(11, VIP_IPV6.into(), NO_BACKEND_PORT, IPPROTO_TCP),
            local6,
        ],
    }
}

/// `ids` repeated over `len` slots.
fn striped(ids: &[u32], len: usize) -> Vec<u32> {
    ids.iter().copied().cycle().take(len).collect()
}

/// A random change to the state, of the kinds a director sees: failover, backends leaving,
/// returning, drained or moved, tables republished, services replaced, VIPs toggled.
/// Returns what changed, for the log.
pub fn change_state(rng: &mut Rng, state: &mut State) -> String {
    let index = rng.below(state.services.len());
    let used_ids: BTreeSet<u32> = state.services.iter().map(|s| s.id).collect();
    let service = &mut state.services[index];
    let id = u32::try_from(rng.below(BACKEND_IDS as usize)).expect("small");
    match rng.below(9) {
        0 => {
            service.standby = !service.standby;
            format!("service {}: standby = {}", service.id, service.standby)
        }
        1 => {
            // Removed from BACKENDS only: the table may still name it.
            service.backends.insert(id, None);
            format!("service {}: backend {id} unusable, table kept", service.id)
        }
        2 => {
            service.backends.remove(&id);
            let usable = usable_ids(service);
            service.table = random_table(rng, &usable);
            format!(
                "service {}: backend {id} removed, table {:?}",
                service.id, service.table
            )
        }
        3 => {
            let target = random_target(rng, state_interfaces(&state.interfaces));
            let service = &mut state.services[index];
            service.backends.insert(id, Some(target));
            format!("service {}: backend {id} -> {target:?}", service.id)
        }
        4 => {
            // Drained: keeps its entry, leaves the table.
            let usable: Vec<u32> = usable_ids(service)
                .into_iter()
                .filter(|&b| b != id)
                .collect();
            service.table = random_table(rng, &usable);
            format!(
                "service {}: backend {id} drained, table {:?}",
                service.id, service.table
            )
        }
        5 => {
            // Any ids, usable or not, as a buggy or racing userspace might publish.
            let ids: Vec<u32> = (0..BACKEND_IDS).collect();
            service.table = if rng.chance(1, 4) {
                Vec::new()
            } else {
                random_table(rng, &ids)
            };
            format!("service {}: table {:?}", service.id, service.table)
        }
        6 => {
            let Some(new_id) = (0..SERVICE_IDS).find(|i| !used_ids.contains(i) && rng.chance(1, 4))
            else {
                return "no free service id this time".to_owned();
            };
            let old = service.id;
            service.id = new_id;
            format!("service {old} replaced by service {new_id} at the same address")
        }
        7 => {
            service.source_hash = !service.source_hash;
            format!(
                "service {}: source hash = {}",
                service.id, service.source_hash
            )
        }
        _ => {
            let vip: IpAddr = rng.pick(&[
                VIP.into(),
                VIP2.into(),
                INACTIVE_VIP.into(),
                VIP_IPV6.into(),
                VIP6_LOCAL.into(),
                INACTIVE_VIP_IPV6.into(),
            ]);
            if rng.chance(1, 3) {
                // An address added to or removed from the director (keepalived, by hand).
                let local = !state.local_vips.remove(&vip);
                if local {
                    state.local_vips.insert(vip);
                }
                return format!("VIP {vip} local = {local}");
            }
            if (vip == IpAddr::V4(VIP2) || vip == IpAddr::V6(VIP6_LOCAL)) && rng.chance(1, 2) {
                if state.vips.remove(&vip).is_none() {
                    state.vips.insert(vip, true);
                }
                return format!("VIP {vip} present = {}", state.vips.contains_key(&vip));
            }
            let active = state.vips.entry(vip).or_insert(false);
            *active = !*active;
            format!("VIP {vip} active = {active}")
        }
    }
}

fn state_interfaces(interfaces: &BTreeMap<u32, Mac>) -> Vec<(u32, Mac)> {
    interfaces.iter().map(|(&i, &m)| (i, m)).collect()
}

fn usable_ids(service: &ServiceState) -> Vec<u32> {
    service
        .backends
        .iter()
        .filter(|(_, t)| t.is_some())
        .map(|(&id, _)| id)
        .collect()
}

/// A table of a random length over `ids` (empty when there are none).
fn random_table(rng: &mut Rng, ids: &[u32]) -> Vec<u32> {
    if ids.is_empty() {
        return Vec::new();
    }
    let len = rng.pick(&TABLE_LENS);
    (0..len).map(|_| rng.pick(ids)).collect()
}

fn random_target(rng: &mut Rng, interfaces: Vec<(u32, Mac)>) -> BackendTarget {
    let (ifindex, src_mac) = if rng.chance(1, 8) {
        (rng.pick(&[IF_UNREGISTERED, NO_SUCH_IFINDEX]), IF_A_MAC)
    } else {
        rng.pick(&interfaces)
    };
    BackendTarget {
        dst_mac: backend_mac(rng.byte()),
        src_mac,
        ifindex,
    }
}

/// One frame to run and the interface it arrives on.
#[derive(Clone, Debug)]
pub struct Input {
    pub ingress_ifindex: u32,
    pub frame: Vec<u8>,
}

/// Frames from a seeded PRNG.
pub struct FrameSource {
    rng: Rng,
    /// Frames already decided (a sweep of truncations).
    queued: VecDeque<Input>,
}

impl FrameSource {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            queued: VecDeque::new(),
        }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// The next frame, for a director whose interfaces are `state.interfaces`.
    pub fn next(&mut self, state: &State) -> Input {
        if let Some(input) = self.queued.pop_front() {
            return input;
        }
        let rng = &mut self.rng;
        let ingress_ifindex = INGRESSES[rng.weighted(&INGRESS_WEIGHTS)];
        let our_mac = state
            .interfaces
            .get(&ingress_ifindex)
            .copied()
            .unwrap_or(OTHER_HOST_MAC);
        let kind = KINDS[rng.weighted(&KINDS.map(|(_, w)| w))].0;
        let valid = valid_frame(rng, kind, our_mac, state);
        if rng.chance(SWEEP_PER_MILLE, PER_MILLE) {
            // Every truncation of a valid frame, 0 bytes to all of it.
            self.queued = (0..=valid.len())
                .map(|len| Input {
                    ingress_ifindex,
                    frame: valid[..len].to_vec(),
                })
                .collect();
            return self.queued.pop_front().expect("a sweep has frames");
        }
        let mut frame = valid;
        if rng.chance(MUTATE_PER_MILLE, PER_MILLE) {
            mutate(rng, &mut frame);
        }
        if rng.chance(TRUNCATE_PER_MILLE, PER_MILLE) && !frame.is_empty() {
            frame.truncate(rng.below(frame.len()));
        }
        if rng.chance(PAD_PER_MILLE, PER_MILLE) && frame.len() < MIN_FRAME_LEN {
            frame.resize(MIN_FRAME_LEN, 0);
        }
        Input {
            ingress_ifindex,
            frame,
        }
    }
}

/// A destination MAC: mostly the ingress interface's, else broadcast, multicast or another.
fn destination_mac(rng: &mut Rng, our_mac: Mac) -> Mac {
    match rng.below(10) {
        0 => BROADCAST,
        1 => MULTICAST_MAC,
        2 => OTHER_HOST_MAC,
        3 => rng.pick(&[LOOPBACK_MAC, IF_A_MAC, IF_B_MAC]),
        _ => our_mac,
    }
}

fn client(rng: &mut Rng) -> (Ipv4Addr, u16) {
    let host = u8::try_from(rng.below(CLIENTS.into())).expect("small") + 1;
    let port = FIRST_CLIENT_PORT + u16::try_from(rng.below(CLIENT_PORTS.into())).expect("small");
    (Ipv4Addr::new(198, 19, 0, host), port)
}

fn valid_frame(rng: &mut Rng, kind: Kind, our_mac: Mac, state: &State) -> Vec<u8> {
    match kind {
        Kind::Ipv4Service => ipv4_frame(rng, our_mac, state),
        Kind::Fragment => {
            let frame = ipv4_parts(rng, our_mac, state).build();
            let (more, offset) = rng.pick(&[(true, 0), (false, SECOND_FRAGMENT_UNITS), (true, 1)]);
            // A few datagram ids, so later fragments often meet a first one.
            with_ip_id(
                &with_fragment(&frame, more, offset),
                rng.pick(&DATAGRAM_IDS),
            )
        }
        Kind::ArpRequest | Kind::ArpReply => arp_frame(rng, kind, our_mac),
        Kind::Icmp => icmp_frame(rng, our_mac, state),
        Kind::Ipv6 => ipv6_frame(rng, our_mac, state),
        Kind::Icmpv6 => icmpv6_frame(rng, our_mac, state),
        Kind::Ndp => ndp_frame(rng, our_mac),
        Kind::RandomBytes => {
            let mut frame: Vec<u8> = (0..rng.below(MAX_RANDOM_LEN)).map(|_| rng.byte()).collect();
            // Often an ether type the program looks behind, so random bytes reach the parsers.
            if frame.len() > 14 && rng.chance(2, 3) {
                let ether_type: u16 = rng.pick(&[0x0800, 0x0806, 0x8100, 0x88a8, 0x86dd]);
                frame[12..14].copy_from_slice(&ether_type.to_be_bytes());
            }
            frame
        }
    }
}

/// A TCP or UDP frame: mostly to one of the state's services, else to any destination and port.
fn ipv4_parts(rng: &mut Rng, our_mac: Mac, state: &State) -> Ipv4Frame {
    let (saddr, sport) = client(rng);
    let services: Vec<(Ipv4Addr, &ServiceState)> = state
        .services
        .iter()
        .filter_map(|s| match s.vip {
            IpAddr::V4(vip) => Some((vip, s)),
            IpAddr::V6(_) => None,
        })
        .collect();
    if rng.chance(SERVICE_PER_MILLE, PER_MILLE) && !services.is_empty() {
        let (vip, service) = services[rng.below(services.len())];
        let flow = if service.protocol == IPPROTO_UDP {
            Ipv4Flow::udp(saddr, sport, vip, service.port)
        } else {
            Ipv4Flow::tcp(saddr, sport, vip, service.port)
        };
        return ipv4_details(rng, Ipv4Frame::new(flow), our_mac);
    }
    let daddr = rng.pick(&DESTINATIONS);
    let dport = rng.pick(&PORTS);
    let flow = if rng.chance(1, 2) {
        Ipv4Flow::tcp(saddr, sport, daddr, dport)
    } else {
        Ipv4Flow::udp(saddr, sport, daddr, dport)
    };
    ipv4_details(rng, Ipv4Frame::new(flow), our_mac)
}

/// Destination MAC, payload and IPv4 options.
fn ipv4_details(rng: &mut Rng, mut frame: Ipv4Frame, our_mac: Mac) -> Ipv4Frame {
    frame.dst_mac = destination_mac(rng, our_mac);
    frame.payload = (0..rng.below(MAX_PAYLOAD)).map(|_| rng.byte()).collect();
    if rng.chance(1, 6) {
        let words = rng.in_range(1..MAX_OPTION_WORDS + 1);
        frame.ipv4_options = vec![NOP_OPTION; words * 4];
    }
    frame
}

fn ipv4_frame(rng: &mut Rng, our_mac: Mac, state: &State) -> Vec<u8> {
    let frame = ipv4_parts(rng, our_mac, state);
    match rng.below(8) {
        0 => frame.vlan(VLAN_ID).build(),
        1 => frame.double_vlan(OUTER_VLAN_ID, VLAN_ID).build(),
        _ => frame.build(),
    }
}

fn client_v6(rng: &mut Rng) -> (Ipv6Addr, u16) {
    let host = u16::try_from(rng.below(CLIENTS.into())).expect("small") + 1;
    let port = FIRST_CLIENT_PORT + u16::try_from(rng.below(CLIENT_PORTS.into())).expect("small");
    (Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0xc, host), port)
}

/// An IPv6 TCP or UDP frame: mostly to one of the state's IPv6 services, else to any IPv6
/// destination and port; with extension headers (up to one more than the program walks) and
/// fragment headers (first, later, atomic) some of the time.
fn ipv6_parts(rng: &mut Rng, our_mac: Mac, state: &State) -> Ipv6Frame {
    let (saddr, sport) = client_v6(rng);
    let services: Vec<(Ipv6Addr, &ServiceState)> = state
        .services
        .iter()
        .filter_map(|s| match s.vip {
            IpAddr::V6(vip) => Some((vip, s)),
            IpAddr::V4(_) => None,
        })
        .collect();
    let (daddr, dport, udp) = if rng.chance(SERVICE_PER_MILLE, PER_MILLE) && !services.is_empty() {
        let (vip, service) = services[rng.below(services.len())];
        (vip, service.port, service.protocol == IPPROTO_UDP)
    } else {
        (
            rng.pick(&DESTINATIONS_V6),
            rng.pick(&PORTS),
            rng.chance(1, 2),
        )
    };
    let flow = if udp {
        Ipv6Flow::udp(saddr, sport, daddr, dport)
    } else {
        Ipv6Flow::tcp(saddr, sport, daddr, dport)
    };
    let mut frame = Ipv6Frame::new(flow);
    frame.dst_mac = destination_mac(rng, our_mac);
    frame.payload = (0..rng.below(MAX_PAYLOAD)).map(|_| rng.byte()).collect();
    if rng.chance(1, 4) {
        frame = frame.hop_by_hop();
    }
    if rng.chance(1, 6) {
        frame = frame.destination_options();
    }
    if rng.chance(1, 6) {
        frame = frame.routing(rng.chance(1, 2));
    } else if rng.chance(1, 12) {
        // A segment left: the destination is a waypoint (not balanced).
        frame = frame.routing_via(rng.pick(&DESTINATIONS_V6));
    }
    if rng.chance(1, 4) {
        let (offset, more) = rng.pick(&[
            (0, true),
            (SECOND_FRAGMENT_UNITS, false),
            (0, false),
            (1, true),
        ]);
        frame = frame.fragment(offset, more, rng.pick(&DATAGRAM_IDS_V6));
    }
    frame
}

fn ipv6_frame(rng: &mut Rng, our_mac: Mac, state: &State) -> Vec<u8> {
    let frame = ipv6_parts(rng, our_mac, state);
    match rng.below(8) {
        0 => frame.vlan(VLAN_ID).build(),
        _ => frame.build(),
    }
}

/// An ICMPv6 echo request to any IPv6 destination (sometimes turned into neighbour discovery),
/// or an ICMPv6 error about a TCP/UDP packet sent by an IPv6 VIP, quoted whole or cut short.
fn icmpv6_frame(rng: &mut Rng, our_mac: Mac, state: &State) -> Vec<u8> {
    let mut frame = if rng.chance(1, 3) {
        let mut frame = icmpv6_echo_request(ROUTER_IPV6, rng.pick(&DESTINATIONS_V6));
        if rng.chance(1, 4) {
            frame[ICMPV6_TYPE_AT] = rng.pick(&ICMPV6_NDP_TYPES);
        }
        frame
    } else {
        let request = ipv6_parts(rng, our_mac, state);
        let flow = request.flow;
        let reply = Ipv6Frame::new(Ipv6Flow {
            saddr: flow.daddr,
            daddr: flow.saddr,
            sport: flow.dport,
            dport: flow.sport,
            ..flow
        })
        .payload(&request.payload)
        .build();
        let kind = rng.pick(&[
            Icmpv6Error::PacketTooBig {
                mtu: u32::from(PATH_MTU),
            },
            Icmpv6Error::AddressUnreachable,
            Icmpv6Error::TimeExceeded,
        ]);
        let cut_short = rng.below(IPV6_QUOTE_WITH_PORTS);
        let quoted = rng.pick(&[IPV6_QUOTE_WITH_PORTS, QUOTED_WHOLE, cut_short]);
        icmpv6_error(kind, flow.daddr, &reply, quoted)
    };
    frame[0..6].copy_from_slice(&destination_mac(rng, our_mac));
    frame
}

/// An IPv6 header and the 8 bytes after it: what an ICMPv6 error must quote to be relayed.
const IPV6_QUOTE_WITH_PORTS: usize = 48;

/// An echo request to any destination, or an ICMP error about a TCP/UDP packet sent by a VIP
/// (mostly a service's reply, so that it quotes a service flow), quoted whole or cut short.
fn icmp_frame(rng: &mut Rng, our_mac: Mac, state: &State) -> Vec<u8> {
    let mut frame = if rng.chance(1, 3) {
        icmp_echo_request(ROUTER_IP, rng.pick(&DESTINATIONS))
    } else {
        // A client's packet reversed: what the real server sent to the client.
        let request = ipv4_parts(rng, our_mac, state);
        let flow = request.flow;
        let reply = Ipv4Frame::new(Ipv4Flow {
            saddr: flow.daddr,
            daddr: flow.saddr,
            sport: flow.dport,
            dport: flow.sport,
            ..flow
        })
        .payload(&request.payload)
        .build();
        let kind = rng.pick(&[
            IcmpError::FragmentationNeeded {
                next_hop_mtu: PATH_MTU,
            },
            IcmpError::PortUnreachable,
            IcmpError::TimeExceeded,
        ]);
        let cut_short = rng.below(QUOTED_RFC792);
        let quoted = rng.pick(&[QUOTED_RFC792, QUOTED_WHOLE, cut_short]);
        icmp_error(kind, flow.daddr, &reply, quoted)
    };
    frame[0..6].copy_from_slice(&destination_mac(rng, our_mac));
    frame
}

fn arp_frame(rng: &mut Rng, kind: Kind, our_mac: Mac) -> Vec<u8> {
    let sender_mac = rng.pick(&[
        ROUTER_MAC,
        ROUTER_MAC,
        OTHER_HOST_MAC,
        MULTICAST_MAC,
        our_mac,
    ]);
    let sender_ip = rng.pick(&[ROUTER_IP, ROUTER_IP, DIRECTOR_IP, VIP, VIP2]);
    let target_ip = rng.pick(&[VIP, VIP, VIP2, INACTIVE_VIP, OTHER_IP]);
    let mut arp = Arp::request(sender_mac, sender_ip, target_ip);
    if matches!(kind, Kind::ArpReply) {
        arp.operation = ArpOperation::REPLY;
        arp.target_mac = our_mac;
    }
    arp.eth_dst = if rng.chance(2, 3) {
        BROADCAST
    } else {
        destination_mac(rng, our_mac)
    };
    if rng.chance(1, 8) {
        arp.vlan = Some(VLAN_ID);
    }
    arp.build()
}

/// A Neighbor Solicitation (mostly) or Advertisement: for the IPv6 VIPs and other addresses,
/// to the target's group, to an address at our MAC or another, from hosts, real servers using
/// the VIP, DAD probes; with the options hosts send, hop limits routers leave, sometimes tagged.
fn ndp_frame(rng: &mut Rng, our_mac: Mac) -> Vec<u8> {
    let target = rng.pick(&[
        VIP_IPV6,
        VIP_IPV6,
        INACTIVE_VIP_IPV6,
        VIP6_LOCAL,
        ROUTER_IPV6,
        SAME_GROUP_IPV6,
    ]);
    let sender_mac = rng.pick(&[
        ROUTER_MAC,
        ROUTER_MAC,
        OTHER_HOST_MAC,
        MULTICAST_MAC,
        our_mac,
    ]);
    let mut frame = if rng.chance(1, 5) {
        let destination = rng.pick(&[ROUTER_IPV6, ALL_NODES]);
        let dst_mac = if destination == ALL_NODES {
            multicast_mac(ALL_NODES)
        } else {
            destination_mac(rng, our_mac)
        };
        NdpFrame::advertisement(sender_mac, target, dst_mac, destination, rng.chance(1, 2))
    } else {
        let source = rng.pick(&[ROUTER_IPV6, ROUTER_IPV6, Ipv6Addr::UNSPECIFIED, VIP_IPV6]);
        let ns = NdpFrame::solicitation(sender_mac, source, target);
        match rng.below(4) {
            0 => NdpFrame::unicast_solicitation(
                sender_mac,
                source,
                target,
                destination_mac(rng, our_mac),
            ),
            1 => NdpFrame {
                destination: rng.pick(&[target, SAME_GROUP_IPV6, ALL_NODES]),
                eth_dst: destination_mac(rng, our_mac),
                ..ns
            },
            _ => ns,
        }
    };
    match rng.below(6) {
        0 => frame.options.clear(),
        1 => {
            frame.options.push(OPTION_NONCE);
            frame.options.push(1);
            frame.options.extend((0..6).map(|_| rng.byte()));
        }
        2 => {
            // Options of any kind and length, up to a few more units than the program reads.
            frame.options = (0..rng.below(11))
                .flat_map(|_| {
                    let kind = rng.pick(&[OPTION_SOURCE_LLA, OPTION_TARGET_LLA, OPTION_NONCE]);
                    lla_option(kind, ROUTER_MAC)
                })
                .collect();
            if rng.chance(1, 4) && !frame.options.is_empty() {
                frame.options[1] = rng.pick(&[0, 2, 3]);
            }
        }
        _ => {}
    }
    if rng.chance(1, 8) {
        frame.hop_limit = rng.pick(&[0, 1, 64, 254]);
    }
    if rng.chance(1, 8) {
        frame.vlan = Some(VLAN_ID);
    }
    frame.build()
}

/// Changes a few bytes: to random or parser-steering values, or flips one bit.
fn mutate(rng: &mut Rng, frame: &mut [u8]) {
    if frame.is_empty() {
        return;
    }
    for _ in 0..rng.in_range(1..MAX_EDITS + 1) {
        let at = if rng.chance(4, 5) {
            rng.below(frame.len().min(HEADER_BYTES))
        } else {
            rng.below(frame.len())
        };
        frame[at] = match rng.below(3) {
            0 => rng.byte(),
            1 => rng.pick(&INTERESTING_BYTES),
            _ => frame[at] ^ (1 << rng.below(8)),
        };
    }
}

/// The state in a few lines, for difference reports.
#[must_use]
pub fn summary(state: &State) -> String {
    let services: Vec<String> = state
        .services
        .iter()
        .map(|s| {
            format!(
                "#{} {}:{}/{}{}{} table {:?} backends {:?}",
                s.id,
                s.vip,
                s.port,
                s.protocol,
                if s.source_hash { " sh" } else { "" },
                if s.standby { " standby" } else { "" },
                s.table,
                s.backends
                    .iter()
                    .map(|(id, t)| (id, t.map(|t| (t.dst_mac[5], t.ifindex))))
                    .collect::<Vec<_>>()
            )
        })
        .collect();
    format!(
        "interfaces {:?}; egress {:?}; vips {:?} (local {:?}); services:\n  {}",
        state.interfaces.keys().collect::<Vec<_>>(),
        state.egress_ifindexes,
        state.vips,
        state.local_vips,
        services.join("\n  ")
    )
}
