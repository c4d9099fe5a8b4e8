//! The program's ICMP and fragment paths through BPF_PROG_TEST_RUN: ICMP errors about a service
//! flow relayed to the flow's backend, echo requests to a VIP answered in place, later
//! fragments following their first, orphans dropped and counted. Frames come from
//! `tests::packet`; the expected echo reply is built from scratch there (checksums by
//! etherparse), not derived from the request.

use std::net::Ipv4Addr;

use aya::Ebpf;
use lb_common::{
    Backend, Counter, Event, SERVICE_FLAG_STANDBY, ServiceKey, TABLE_BANKS, VIP_FLAG_ACTIVE,
    VIP_FLAG_LOCAL, Verdict, Vip, ipv4_mapped,
};
use lb_userspace::{
    dataplane::loader::MapSizes,
    dataplane::{Dataplane, TableLayout},
    maglev::{self, WeightedBackend},
};
use tests::model::XdpAction;
use tests::packet::{
    AFTER_MACS, CLIENT_IP, CLIENT_PORT, DIRECTOR_MAC, ETH_DST_MAC, ETH_SRC_MAC, INACTIVE_VIP,
    IcmpError, Ipv4Flow, Ipv4Frame, OTHER_HOST_MAC, backend_mac, icmp_echo_reply,
    icmp_echo_request, icmp_error, with_fragment, with_ip_id, with_total_len,
};

const TABLE_SIZE: u32 = 251;
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5060;
const TCP_SERVICE_ID: u32 = 0;
const UDP_SERVICE_ID: u32 = 1;
const BACKENDS: u8 = 4;
/// The path MTU a router names in "fragmentation needed".
const PATH_MTU: u16 = 1280;
/// An ICMP error quotes the whole offending packet (as Linux does, up to 576 bytes).
const QUOTE_ALL: usize = usize::MAX;
/// Where a 1500-byte MTU's second fragment starts, in 8-byte units.
const SECOND_FRAGMENT_UNITS: u16 = 185;
const DATAGRAM_ID: u16 = 0x4242;
const IPV4_HEADER_LEN: usize = 20;
const ICMP_HEADER_LEN: usize = 8;
/// What an ICMP error must quote past the IP header (RFC 792): the ports are in it.
const QUOTED_PORTS_LEN: usize = 8;
/// Client ports of the flows a test spreads over the backends.
const FLOWS: std::ops::Range<u16> = 40_000..40_064;

struct Director {
    ebpf: Ebpf,
    dataplane: Dataplane,
}

fn key(port: u16, protocol: u8) -> ServiceKey {
    ServiceKey {
        addr: ipv4_mapped(tests::packet::VIP.octets()),
        port_be: port.to_be(),
        protocol,
        _pad: 0,
    }
}

impl Director {
    /// A TCP and a UDP service on the VIP, each with `BACKENDS` backends on the test-run
    /// interface, and an inactive VIP.
    fn new() -> Self {
        let sizes = MapSizes {
            maglev_entries: lb_common::MAX_SERVICES * TABLE_BANKS * TABLE_SIZE,
            flow_table_size: 4096,
            ..MapSizes::default()
        };
        let (ebpf, mut dataplane) = tests::program::load_with_vip(sizes, tests::packet::VIP);
        dataplane
            .set_vip(ipv4_mapped(INACTIVE_VIP.octets()), Vip { flags: 0 })
            .expect("adding the inactive VIP");
        let mut director = Self { ebpf, dataplane };
        for (id, port, protocol) in [
            (TCP_SERVICE_ID, TCP_PORT, lb_common::IPPROTO_TCP),
            (UDP_SERVICE_ID, UDP_PORT, lb_common::IPPROTO_UDP),
        ] {
            director.publish(id, key(port, protocol), 0);
        }
        director
    }

    fn publish(&mut self, id: u32, key: ServiceKey, flags: u32) {
        let weighted: Vec<WeightedBackend> = (0..BACKENDS)
            .map(|n| WeightedBackend {
                address: Ipv4Addr::new(198, 18, 0, 10 + n).into(),
                weight: 1,
            })
            .collect();
        for n in 0..BACKENDS {
            let backend = Backend {
                dst_mac: backend_mac(n),
                src_mac: DIRECTOR_MAC,
                ifindex: tests::program::TEST_RUN_IFINDEX,
                vlan: lb_common::NO_VLAN,
            };
            self.dataplane
                .set_backend(id, u32::from(n), &backend)
                .expect("publishing a backend");
        }
        let table = maglev::build_table(&weighted, TABLE_SIZE);
        let layout = TableLayout {
            service_id: id,
            base: id * TABLE_BANKS * TABLE_SIZE,
            size: TABLE_SIZE,
            flags,
        };
        self.dataplane
            .publish_table(&key, layout, &table)
            .expect("publishing the table");
    }

    fn run(&mut self, frame: &[u8]) -> (XdpAction, Vec<u8>) {
        let (action, output) = tests::program::run_frame(&mut self.ebpf, frame);
        let action = XdpAction::from_return_value(action).expect("an XDP action");
        (action, output)
    }

    /// Runs the frame and returns what it did and the one verdict counter that moved.
    fn judge(&mut self, frame: &[u8]) -> (XdpAction, Vec<u8>, Verdict) {
        let before = self.verdicts();
        let (action, output) = self.run(frame);
        let after = self.verdicts();
        let moved: Vec<Verdict> = Verdict::ALL
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| b != a)
            .map(|(v, _)| *v)
            .collect();
        assert_eq!(
            moved.len(),
            1,
            "exactly one verdict counter moves: {moved:?}"
        );
        let (b, a) = (before[moved[0] as usize], after[moved[0] as usize]);
        assert_eq!(a.packets - b.packets, 1, "one packet");
        assert_eq!(a.bytes - b.bytes, frame.len() as u64, "the frame's bytes");
        (action, output, moved[0])
    }

    fn verdicts(&self) -> Vec<Counter> {
        Verdict::ALL
            .iter()
            .map(|&v| {
                self.dataplane
                    .verdict_counter(v)
                    .expect("a verdict counter")
            })
            .collect()
    }

    fn event(&self, event: Event) -> u64 {
        self.dataplane
            .event_counter(event)
            .expect("an event counter")
            .packets
    }

    /// The backend MAC a client frame was forwarded to.
    fn forwarded_to(&mut self, frame: &[u8]) -> [u8; 6] {
        let (action, output, verdict) = self.judge(frame);
        assert_eq!((action, verdict), (XdpAction::Tx, Verdict::Tx), "forwarded");
        assert_eq!(
            output[AFTER_MACS..],
            frame[AFTER_MACS..],
            "only the MACs change"
        );
        assert_eq!(output[ETH_SRC_MAC], DIRECTOR_MAC);
        output[ETH_DST_MAC].try_into().expect("6 bytes")
    }
}

/// What the real server sends back on the client's flow: VIP:port -> client.
fn server_reply(flow: Ipv4Flow) -> Vec<u8> {
    Ipv4Frame::new(Ipv4Flow {
        saddr: flow.daddr,
        daddr: flow.saddr,
        sport: flow.dport,
        dport: flow.sport,
        ..flow
    })
    .payload(&[0; 1400])
    .build()
}

fn frag_needed(flow: Ipv4Flow) -> Vec<u8> {
    icmp_error(
        IcmpError::FragmentationNeeded {
            next_hop_mtu: PATH_MTU,
        },
        flow.daddr,
        &server_reply(flow),
        QUOTE_ALL,
    )
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn icmp_errors_about_a_flow_reach_the_flows_backend() {
    tests::require_root();
    let mut director = Director::new();
    let mut macs = std::collections::BTreeSet::new();
    for port in FLOWS {
        let flow = Ipv4Flow::tcp(CLIENT_IP, port, tests::packet::VIP, TCP_PORT);
        // Before the flow exists: the backend Maglev gives it; nothing is remembered, so the
        // flow's first packet is still a new connection.
        let error = frag_needed(flow);
        let relayed = director.forwarded_to(&error);
        let connections = director
            .dataplane
            .service_counter(TCP_SERVICE_ID)
            .expect("counter");
        let client_mac = director.forwarded_to(&Ipv4Frame::new(flow).build());
        let after = director
            .dataplane
            .service_counter(TCP_SERVICE_ID)
            .expect("counter");
        assert_eq!(
            after.connections,
            connections.connections + 1,
            "the relay made no flow"
        );
        assert_eq!(
            relayed, client_mac,
            "port {port}: the error goes to the flow's backend"
        );
        // With the flow remembered, after the table changed: still the flow's backend.
        for kind in [IcmpError::TimeExceeded, IcmpError::PortUnreachable] {
            let error = icmp_error(kind, flow.daddr, &server_reply(flow), 8);
            assert_eq!(director.forwarded_to(&error), client_mac, "{kind:?}");
        }
        macs.insert(client_mac);
    }
    assert!(macs.len() > 1, "the flows reach several backends: {macs:?}");
    // 64 flows, three errors each.
    assert_eq!(director.event(Event::IcmpRelay), 3 * FLOWS.len() as u64);
    // A flow remembered before its backend... a UDP flow too.
    let udp = Ipv4Flow::udp(CLIENT_IP, CLIENT_PORT, tests::packet::VIP, UDP_PORT);
    let mac = director.forwarded_to(&Ipv4Frame::new(udp).build());
    assert_eq!(director.forwarded_to(&frag_needed(udp)), mac);
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn icmp_errors_quoting_no_service_are_not_relayed() {
    tests::require_root();
    let mut director = Director::new();
    let vip = tests::packet::VIP;
    let unserved = Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, vip, TCP_PORT + 1);
    let other_vip = Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, INACTIVE_VIP, TCP_PORT);
    let served = Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, vip, TCP_PORT);
    let cases = [
        ("quotes a port without service", frag_needed(unserved)),
        (
            "quotes a packet from another address than the VIP it is sent to",
            icmp_error(
                IcmpError::FragmentationNeeded {
                    next_hop_mtu: PATH_MTU,
                },
                vip,
                &server_reply(other_vip),
                QUOTE_ALL,
            ),
        ),
        (
            "quotes only 4 bytes past the IP header (RFC 792 wants 8)",
            icmp_error(IcmpError::PortUnreachable, vip, &server_reply(served), 4),
        ),
        (
            "quotes a later fragment (no ports)",
            icmp_error(
                IcmpError::TimeExceeded,
                vip,
                &with_fragment(&server_reply(served), false, SECOND_FRAGMENT_UNITS),
                QUOTE_ALL,
            ),
        ),
    ];
    for (context, frame) in &cases {
        let (action, _, verdict) = director.judge(frame);
        assert_eq!(
            (action, verdict),
            (XdpAction::Drop, Verdict::DropNoService),
            "{context}: no service's, the VIP not local"
        );
    }
    director
        .dataplane
        .set_vip(
            ipv4_mapped(vip.octets()),
            Vip {
                flags: VIP_FLAG_ACTIVE | VIP_FLAG_LOCAL,
            },
        )
        .expect("marking the VIP local");
    for (context, frame) in &cases {
        let (action, output, verdict) = director.judge(frame);
        assert_eq!(
            (action, verdict),
            (XdpAction::Pass, Verdict::Pass),
            "{context}: local"
        );
        assert_eq!(&output, frame, "{context}: passed unchanged");
    }
    assert_eq!(director.event(Event::IcmpRelay), 0);
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_standby_relays_no_icmp_error_and_answers_no_ping() {
    tests::require_root();
    let mut director = Director::new();
    director.publish(
        TCP_SERVICE_ID,
        key(TCP_PORT, lb_common::IPPROTO_TCP),
        u32::from(SERVICE_FLAG_STANDBY),
    );
    let flow = Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, tests::packet::VIP, TCP_PORT);
    let (action, _, verdict) = director.judge(&frag_needed(flow));
    assert_eq!((action, verdict), (XdpAction::Drop, Verdict::DropStandby));
    let (action, _, verdict) = director.judge(&icmp_echo_request(CLIENT_IP, INACTIVE_VIP));
    assert_eq!(
        (action, verdict),
        (XdpAction::Drop, Verdict::DropStandby),
        "a standby VIP's ping is not answered"
    );
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn echo_requests_to_an_active_vip_are_answered_in_place() {
    tests::require_root();
    let mut director = Director::new();
    let vip = tests::packet::VIP;
    let request = icmp_echo_request(CLIENT_IP, vip);
    let (action, output, verdict) = director.judge(&request);
    assert_eq!((action, verdict), (XdpAction::Tx, Verdict::EchoReply));
    assert_eq!(
        output,
        icmp_echo_reply(CLIENT_IP, vip),
        "the reply, byte for byte, checksums included"
    );
    let reply = etherparse::SlicedPacket::from_ethernet(&output).expect("a parseable reply");
    let Some(etherparse::NetSlice::Ipv4(ip)) = reply.net else {
        panic!("an IPv4 reply");
    };
    assert_eq!(
        ip.header().to_header().calc_header_checksum(),
        ip.header().header_checksum()
    );
    // Local VIPs are answered too (decided: the program answers for every active VIP).
    director
        .dataplane
        .set_vip(
            ipv4_mapped(vip.octets()),
            Vip {
                flags: VIP_FLAG_ACTIVE | VIP_FLAG_LOCAL,
            },
        )
        .expect("marking the VIP local");
    assert_eq!(director.judge(&request).2, Verdict::EchoReply);
    // Only requests sent to our MAC.
    let mut elsewhere = request.clone();
    elsewhere[ETH_DST_MAC].copy_from_slice(&OTHER_HOST_MAC);
    let (action, output, verdict) = director.judge(&elsewhere);
    assert_eq!((action, verdict), (XdpAction::Pass, Verdict::Pass));
    assert_eq!(output, elsewhere);
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn truncated_icmp_is_never_answered_or_relayed() {
    tests::require_root();
    let mut director = Director::new();
    let flow = Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, tests::packet::VIP, TCP_PORT);
    // Each frame, and from how many IP bytes on the program acts on it: an echo request needs
    // its 8-byte ICMP header; an error the quoted IP header and 8 bytes of it.
    let cases = [
        (
            icmp_echo_request(CLIENT_IP, tests::packet::VIP),
            IPV4_HEADER_LEN + ICMP_HEADER_LEN,
            Verdict::EchoReply,
        ),
        (
            frag_needed(flow),
            IPV4_HEADER_LEN + ICMP_HEADER_LEN + IPV4_HEADER_LEN + QUOTED_PORTS_LEN,
            Verdict::Tx,
        ),
    ];
    for (frame, acted_on_from, acted) in cases {
        let ip_offset = tests::packet::ipv4_header_offset(&frame);
        let total = frame.len() - ip_offset;
        for len in 0..total {
            // The frame cut: its IPv4 total length claims more than there is.
            let cut = &frame[..ip_offset + len];
            let (action, _, verdict) = director.judge(&pad(cut));
            assert_eq!(
                (action, verdict),
                (XdpAction::Drop, Verdict::DropMalformed),
                "{acted:?} frame cut to {len} IP bytes"
            );
            if len < IPV4_HEADER_LEN {
                continue;
            }
            // The IP packet cut consistently (its total length says so too).
            let consistent = with_total_len(cut, u16::try_from(len).expect("fits"));
            let (action, _, verdict) = director.judge(&consistent);
            let expected = if len < acted_on_from {
                (XdpAction::Drop, Verdict::DropNoService)
            } else {
                (XdpAction::Tx, acted)
            };
            assert_eq!(
                (action, verdict),
                expected,
                "{acted:?}: a {len}-byte IP packet"
            );
        }
    }
}

/// Frames shorter than an Ethernet header are refused by BPF_PROG_TEST_RUN: pad them with
/// zeros, which the IPv4 header's total length then disowns.
fn pad(frame: &[u8]) -> Vec<u8> {
    let mut padded = frame.to_vec();
    padded.resize(padded.len().max(tests::packet::ETH_HEADER_LEN), 0);
    padded
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn later_fragments_follow_their_first_and_orphans_are_counted() {
    tests::require_root();
    let mut director = Director::new();
    let mut macs = std::collections::BTreeSet::new();
    for (n, port) in FLOWS.enumerate() {
        let id = DATAGRAM_ID + u16::try_from(n).expect("small");
        let flow = Ipv4Flow::udp(CLIENT_IP, port, tests::packet::VIP, UDP_PORT);
        let whole = Ipv4Frame::new(flow).payload(&[7; 1600]).build();
        let first = with_ip_id(&with_fragment(&whole, true, 0), id);
        let later = with_fragment(&first, false, SECOND_FRAGMENT_UNITS);
        let mac = director.forwarded_to(&first);
        assert_eq!(director.forwarded_to(&later), mac, "datagram {id}");
        assert_eq!(director.forwarded_to(&later), mac, "a duplicate of it");
        assert_eq!(
            director.forwarded_to(&whole),
            mac,
            "the flow's whole packets"
        );
        macs.insert(mac);
        let orphan = with_ip_id(&later, id.wrapping_add(0x1000));
        let (action, _, verdict) = director.judge(&orphan);
        assert_eq!(
            (action, verdict),
            (XdpAction::Drop, Verdict::DropFragmentOrphan)
        );
    }
    assert!(macs.len() > 1, "the datagrams reach several backends");
    assert_eq!(
        director.event(Event::FragmentForward),
        2 * FLOWS.len() as u64
    );
    // The service replaced (a new generation): its datagrams' later fragments are dropped.
    let id = DATAGRAM_ID;
    let flow = Ipv4Flow::udp(CLIENT_IP, FLOWS.start, tests::packet::VIP, UDP_PORT);
    let whole = Ipv4Frame::new(flow).payload(&[7; 1600]).build();
    let later = with_fragment(&with_ip_id(&whole, id), false, SECOND_FRAGMENT_UNITS);
    let udp_key = key(UDP_PORT, lb_common::IPPROTO_UDP);
    director
        .dataplane
        .remove_service(&udp_key, UDP_SERVICE_ID)
        .expect("removing the UDP service");
    director.publish(UDP_SERVICE_ID, udp_key, 0);
    let (action, _, verdict) = director.judge(&later);
    assert_eq!((action, verdict), (XdpAction::Drop, Verdict::DropFragment));
}
