//! The XDP program's IPv6 path as the kernel runs it, through BPF_PROG_TEST_RUN: TCP and UDP
//! to an IPv6 VIP forwarded to the Maglev backend with only the MACs changed, the flow table
//! (`FLOWS6`), extension headers walked and left as they are, fragments (`FRAGMENTS6`), ICMPv6
//! echo and errors, truncated frames, a VLAN trunk, source hashing and the checksum trap.
//!
//! The program before IPv6 support passed every IPv6 frame (XDP_PASS): every test here that
//! expects a forward, an echo reply or a drop fails on it.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::Ebpf;
use lb_common::{
    Backend, Event, FlowKey6, MAX_SERVICES, NO_VLAN, SERVICE_FLAG_SOURCE_HASH, ServiceKey,
    TABLE_BANKS, VIP_FLAG_ACTIVE, Verdict, Vip, backend_index,
    hash::{flow_hash_v6, ipv6_words, source_hash_v6},
};
use lb_userspace::{
    dataplane::loader::MapSizes,
    dataplane::{Dataplane, TableLayout},
    maglev::{self, WeightedBackend},
};
use tests::{
    model::XdpAction,
    packet::{
        AFTER_MACS, CLIENT_IPV6, CLIENT_PORT, DIRECTOR_MAC, ETH_DST_MAC, ETH_HEADER_LEN,
        ETH_SRC_MAC, INACTIVE_VIP_IPV6, IPV6_HEADER_LEN, Icmpv6Error, Ipv6Flow, Ipv6Frame,
        OTHER_HOST_MAC, OTHER_IPV6, Transport, VIP_IPV6, VLAN_ID, backend_mac, icmpv6_echo_reply,
        icmpv6_echo_request, icmpv6_error, ipv6_header_offset, with_ipv6_payload_len,
        with_unfinished_checksum_v6,
    },
    program::{TEST_RUN_IFINDEX, run_frame},
};

const TABLE_SIZE: u32 = 251;
const TEST_FLOW_TABLE_SIZE: u32 = 4096;
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5060;
const SOURCE_HASH_PORT: u16 = 8443;
const TCP_SERVICE_ID: u32 = 0;
const UDP_SERVICE_ID: u32 = 1;
const SOURCE_HASH_SERVICE_ID: u32 = 2;
/// An IPv4 service beside the IPv6 ones.
const IPV4_SERVICE_ID: u32 = 3;
const BACKENDS: u8 = 3;
/// Flows tried where a test needs several (every backend reached, a table change).
const FLOWS: u16 = 64;
/// The second fragment of a datagram split for a 1280-byte MTU, in 8-byte units.
const SECOND_FRAGMENT_UNITS: u16 = 154;
const DATAGRAM_ID: u32 = 0x0bad_cafe;
/// The MTU a router names in Packet Too Big (IPv6's minimum).
const PATH_MTU: u32 = 1280;
/// ICMPv6 neighbour solicitation: left to the stack (or to the NDP answerer).
const ICMPV6_NEIGHBOUR_SOLICITATION: u8 = 135;

fn tcp_flow() -> Ipv6Flow {
    Ipv6Flow::tcp(CLIENT_IPV6, CLIENT_PORT, VIP_IPV6, TCP_PORT)
}

fn udp_flow() -> Ipv6Flow {
    Ipv6Flow::udp(CLIENT_IPV6, CLIENT_PORT, VIP_IPV6, UDP_PORT)
}

fn service_key(daddr: Ipv6Addr, port: u16, transport: Transport) -> ServiceKey {
    ServiceKey {
        addr: daddr.octets(),
        port_be: port.to_be(),
        protocol: transport.protocol(),
        _pad: 0,
    }
}

/// Backend ids `ids` by Maglev slot; Maglev places backends by an address, any distinct ones do.
fn maglev_table(ids: &[u32]) -> Vec<u32> {
    let weighted: Vec<WeightedBackend> = ids
        .iter()
        .map(|&id| WeightedBackend {
            address: Ipv4Addr::new(198, 18, 1, u8::try_from(id).expect("small")).into(),
            weight: 1,
        })
        .collect();
    maglev::build_table(&weighted, TABLE_SIZE)
        .into_iter()
        .map(|i| ids[i as usize])
        .collect()
}

/// The backend id the table of `ids` gives a new flow (5-tuple hash, or the client's alone).
fn predicted(flow: &Ipv6Flow, ids: &[u32], source_hash: bool) -> u32 {
    let hash = if source_hash {
        source_hash_v6(ipv6_words(flow.saddr.octets()))
    } else {
        flow_hash_v6(
            ipv6_words(flow.saddr.octets()),
            ipv6_words(flow.daddr.octets()),
            flow.sport,
            flow.dport,
            flow.transport.protocol(),
        )
    };
    maglev_table(ids)[usize::try_from(hash % TABLE_SIZE).expect("fits")]
}

struct Director {
    ebpf: Ebpf,
    dataplane: Dataplane,
}

impl Director {
    /// A program that knows the test-run interface, the active IPv6 VIP and the inactive one,
    /// with a TCP, a UDP and a source-hash TCP service of backends 0..BACKENDS.
    fn load() -> Self {
        let sizes = MapSizes {
            maglev_entries: MAX_SERVICES * TABLE_BANKS * TABLE_SIZE,
            flow_table_size: TEST_FLOW_TABLE_SIZE,
            ..MapSizes::default()
        };
        let (ebpf, mut dataplane) = tests::program::load_maps(sizes);
        dataplane
            .set_interface(TEST_RUN_IFINDEX, NO_VLAN, DIRECTOR_MAC)
            .expect("registering the test-run interface");
        let active = Vip {
            flags: VIP_FLAG_ACTIVE,
        };
        dataplane
            .set_vip(VIP_IPV6.octets(), active)
            .expect("adding the IPv6 VIP");
        dataplane
            .set_vip(INACTIVE_VIP_IPV6.octets(), Vip { flags: 0 })
            .expect("adding the inactive IPv6 VIP");
        let mut director = Self { ebpf, dataplane };
        let all: Vec<u32> = (0..u32::from(BACKENDS)).collect();
        director.publish(TCP_SERVICE_ID, tcp_key(), 0, &all, NO_VLAN);
        director.publish(
            UDP_SERVICE_ID,
            service_key(VIP_IPV6, UDP_PORT, Transport::Udp),
            0,
            &all,
            NO_VLAN,
        );
        director.publish(
            SOURCE_HASH_SERVICE_ID,
            service_key(VIP_IPV6, SOURCE_HASH_PORT, Transport::Tcp),
            u32::from(SERVICE_FLAG_SOURCE_HASH),
            &all,
            NO_VLAN,
        );
        director
    }

    /// Publishes a service with backends `ids` (MAC `backend_mac(id)`, on `vlan`), as the
    /// daemon does: backends, then the table.
    fn publish(&mut self, id: u32, key: ServiceKey, flags: u32, ids: &[u32], vlan: u16) {
        for &backend in ids {
            let entry = Backend {
                dst_mac: backend_mac(u8::try_from(backend).expect("small")),
                src_mac: DIRECTOR_MAC,
                ifindex: TEST_RUN_IFINDEX,
                vlan,
            };
            self.dataplane
                .set_backend(id, backend, &entry)
                .expect("adding a backend");
        }
        let layout = TableLayout {
            service_id: id,
            base: id * TABLE_BANKS * TABLE_SIZE,
            size: TABLE_SIZE,
            flags,
        };
        self.dataplane
            .publish_table(&key, layout, &maglev_table(ids))
            .expect("publishing the table");
    }

    fn run(&mut self, frame: &[u8]) -> (XdpAction, Vec<u8>) {
        let (action, output) = run_frame(&mut self.ebpf, frame);
        let action = XdpAction::from_return_value(action).expect("an XDP action");
        (action, output)
    }

    fn verdict_packets(&self, verdict: Verdict) -> u64 {
        self.dataplane
            .verdict_counter(verdict)
            .expect("reading VERDICT_COUNTERS")
            .packets
    }

    fn event_packets(&self, event: Event) -> u64 {
        self.dataplane
            .event_counter(event)
            .expect("reading EVENT_COUNTERS")
            .packets
    }

    /// Runs `frame` and checks it was counted as `verdict` (and no other verdict).
    fn expect(&mut self, context: &str, frame: &[u8], verdict: Verdict) -> Vec<u8> {
        let before: Vec<u64> = Verdict::ALL
            .iter()
            .map(|&v| self.verdict_packets(v))
            .collect();
        let (action, output) = self.run(frame);
        assert_eq!(action, XdpAction::of(verdict), "{context}: XDP action");
        for (v, before) in Verdict::ALL.iter().zip(before) {
            let moved = self.verdict_packets(*v) - before;
            assert_eq!(
                moved,
                u64::from(*v == verdict),
                "{context}: {} counter",
                v.name()
            );
        }
        output
    }

    fn flow_backend(&self, flow: &Ipv6Flow) -> Option<u32> {
        let key = FlowKey6 {
            saddr: flow.saddr.octets(),
            daddr: flow.daddr.octets(),
            sport_be: flow.sport.to_be(),
            dport_be: flow.dport.to_be(),
            protocol: flow.transport.protocol(),
            _pad: [0; 3],
        };
        self.dataplane
            .flow6(&key)
            .expect("reading FLOWS6")
            .map(|entry| entry.backend)
    }
}

fn tcp_key() -> ServiceKey {
    service_key(VIP_IPV6, TCP_PORT, Transport::Tcp)
}

/// Checks a forwarded frame: only the MACs changed, to backend `id`'s and the director's.
fn assert_forwarded(context: &str, input: &[u8], output: &[u8], id: u32) {
    assert_eq!(output.len(), input.len(), "{context}: length kept");
    assert_eq!(
        output[ETH_DST_MAC],
        backend_mac(u8::try_from(id).expect("small")),
        "{context}: to backend {id}"
    );
    assert_eq!(output[ETH_SRC_MAC], DIRECTOR_MAC, "{context}: from us");
    assert_eq!(
        output[AFTER_MACS..],
        input[AFTER_MACS..],
        "{context}: nothing changed past the MACs"
    );
}

fn all_backends() -> Vec<u32> {
    (0..u32::from(BACKENDS)).collect()
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn tcp_and_udp_over_ipv6_go_to_the_maglev_backend_and_are_remembered() {
    tests::require_root();
    let mut director = Director::load();
    let mut reached = std::collections::BTreeSet::new();
    for n in 0..FLOWS {
        for flow in [
            tcp_flow().with_sport(CLIENT_PORT + n),
            udp_flow().with_sport(CLIENT_PORT + n),
        ] {
            let frame = Ipv6Frame::new(flow).build();
            let want = predicted(&flow, &all_backends(), false);
            let output = director.expect("a new flow", &frame, Verdict::Tx);
            assert_forwarded(&format!("{flow:?}"), &frame, &output, want);
            let service = if flow.transport == Transport::Tcp {
                TCP_SERVICE_ID
            } else {
                UDP_SERVICE_ID
            };
            assert_eq!(
                director.flow_backend(&flow),
                Some(backend_index(service, want)),
                "FLOWS6 remembers {flow:?}"
            );
            reached.insert(want);
        }
    }
    assert_eq!(
        reached.len(),
        usize::from(BACKENDS),
        "every backend gets flows"
    );
    let counter = director
        .dataplane
        .service_counter(TCP_SERVICE_ID)
        .expect("reading SERVICE_COUNTERS");
    assert_eq!(counter.packets, u64::from(FLOWS));
    assert_eq!(counter.connections, u64::from(FLOWS));
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn an_ipv6_flow_keeps_its_backend_when_the_table_changes() {
    tests::require_root();
    let mut director = Director::load();
    let flows: Vec<Ipv6Flow> = (0..FLOWS)
        .map(|n| tcp_flow().with_sport(CLIENT_PORT + n))
        .collect();
    let before: Vec<u32> = flows
        .iter()
        .map(|f| predicted(f, &all_backends(), false))
        .collect();
    for flow in &flows {
        director.expect("first packet", &Ipv6Frame::new(*flow).build(), Verdict::Tx);
    }
    // A fourth backend: the table moves some flows to it, the flow table keeps them.
    let grown: Vec<u32> = (0..=u32::from(BACKENDS)).collect();
    director.publish(TCP_SERVICE_ID, tcp_key(), 0, &grown, NO_VLAN);
    let moved = flows
        .iter()
        .zip(&before)
        .filter(|(f, b)| predicted(f, &grown, false) != **b)
        .count();
    assert!(
        moved > 0,
        "the table change moves some flows (else the test shows nothing)"
    );
    for (flow, backend) in flows.iter().zip(&before) {
        let frame = Ipv6Frame::new(*flow).build();
        let output = director.expect("established flow", &frame, Verdict::Tx);
        assert_forwarded(&format!("{flow:?}"), &frame, &output, *backend);
    }
    let new_flow = tcp_flow().with_sport(CLIENT_PORT + FLOWS);
    let frame = Ipv6Frame::new(new_flow).build();
    let output = director.expect("new flow", &frame, Verdict::Tx);
    assert_forwarded(
        "new flow",
        &frame,
        &output,
        predicted(&new_flow, &grown, false),
    );
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn extension_headers_are_walked_and_left_as_they_are() {
    tests::require_root();
    let mut director = Director::load();
    let flow = tcp_flow();
    let want = predicted(&flow, &all_backends(), false);
    let with_headers = [
        ("hop-by-hop", Ipv6Frame::new(flow).hop_by_hop()),
        (
            "destination options",
            Ipv6Frame::new(flow).destination_options(),
        ),
        ("routing", Ipv6Frame::new(flow).routing(false)),
        (
            "hop-by-hop, destination options, routing",
            Ipv6Frame::new(flow)
                .hop_by_hop()
                .destination_options()
                .routing(false),
        ),
        (
            "four headers (the bound)",
            Ipv6Frame::new(flow)
                .hop_by_hop()
                .destination_options()
                .routing(true),
        ),
        (
            "an atomic fragment (offset 0, no more fragments)",
            Ipv6Frame::new(flow).fragment(0, false, DATAGRAM_ID),
        ),
    ];
    for (context, frame) in with_headers {
        let frame = frame.build();
        let output = director.expect(context, &frame, Verdict::Tx);
        assert_forwarded(context, &frame, &output, want);
    }
    let five = Ipv6Frame::new(flow)
        .hop_by_hop()
        .destination_options()
        .routing(true)
        .fragment(0, false, DATAGRAM_ID);
    director.expect(
        "five extension headers, to a VIP, sent to us",
        &five.build(),
        Verdict::DropMalformed,
    );
    let mut elsewhere = five.clone();
    elsewhere.flow.daddr = OTHER_IPV6;
    director.expect(
        "five extension headers to no VIP: the stack's",
        &elsewhere.build(),
        Verdict::Pass,
    );
    let mut other_mac = five;
    other_mac.dst_mac = OTHER_HOST_MAC;
    director.expect(
        "five extension headers, sent to another MAC",
        &other_mac.build(),
        Verdict::Pass,
    );
}

/// A Routing header with segments left makes the VIP a waypoint: the packet is no service's
/// (its 5-tuple names another destination's flow), so it is not balanced. To a VIP the
/// director does not hold, sent to us, it is dropped as any other non-service packet to it;
/// with none left, it is an ordinary service packet.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_routing_header_with_segments_left_is_not_balanced() {
    tests::require_root();
    let mut director = Director::load();
    let flow = tcp_flow();
    let via = Ipv6Frame::new(flow).routing_via(OTHER_IPV6).build();
    director.expect(
        "to the VIP with a segment left",
        &via,
        Verdict::DropNoService,
    );
    let mut elsewhere = Ipv6Frame::new(flow).routing_via(VIP_IPV6);
    elsewhere.flow.daddr = OTHER_IPV6;
    director.expect(
        "to another address with the VIP as the next segment: the stack's",
        &elsewhere.build(),
        Verdict::Pass,
    );
    let done = Ipv6Frame::new(flow).routing(false).build();
    let output = director.expect("no segment left", &done, Verdict::Tx);
    assert_forwarded(
        "no segment left",
        &done,
        &output,
        predicted(&flow, &all_backends(), false),
    );
}

/// Every prefix of a frame (from a whole Ethernet header on), and the frame with a payload
/// length beyond it, is passed or dropped as malformed, never sent anywhere.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn truncated_ipv6_is_never_forwarded() {
    tests::require_root();
    let mut director = Director::load();
    let frames = [
        Ipv6Frame::new(tcp_flow()).build(),
        Ipv6Frame::new(udp_flow()).build(),
        Ipv6Frame::new(tcp_flow())
            .hop_by_hop()
            .destination_options()
            .routing(true)
            .build(),
        Ipv6Frame::new(tcp_flow())
            .fragment(0, true, DATAGRAM_ID)
            .build(),
        icmpv6_echo_request(CLIENT_IPV6, VIP_IPV6),
    ];
    for frame in frames {
        for len in ETH_HEADER_LEN..frame.len() {
            let (action, _) = director.run(&frame[..len]);
            assert!(
                matches!(action, XdpAction::Pass | XdpAction::Drop),
                "{len} of {} bytes: {action:?}",
                frame.len()
            );
        }
        let payload_len = u16::try_from(frame.len() - ipv6_header_offset(&frame) - IPV6_HEADER_LEN)
            .expect("fits");
        let (action, _) = director.run(&with_ipv6_payload_len(&frame, payload_len + 1));
        assert_eq!(action, XdpAction::Drop, "a payload length beyond the frame");
    }
    let runs = Verdict::ALL
        .iter()
        .filter(|v| matches!(v, Verdict::Tx | Verdict::Redirect | Verdict::EchoReply))
        .map(|&v| director.verdict_packets(v))
        .sum::<u64>();
    assert_eq!(runs, 0, "nothing truncated was sent");
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn later_fragments_follow_their_first_and_orphans_are_dropped() {
    tests::require_root();
    let mut director = Director::load();
    let flow = tcp_flow();
    let want = predicted(&flow, &all_backends(), false);
    let first = Ipv6Frame::new(flow).fragment(0, true, DATAGRAM_ID).build();
    let later = Ipv6Frame::new(flow)
        .fragment(SECOND_FRAGMENT_UNITS, false, DATAGRAM_ID)
        .build();
    let orphan = Ipv6Frame::new(flow)
        .fragment(SECOND_FRAGMENT_UNITS, false, DATAGRAM_ID + 1)
        .build();
    director.expect(
        "a later fragment first",
        &orphan,
        Verdict::DropFragmentOrphan,
    );
    let output = director.expect("first fragment", &first, Verdict::Tx);
    assert_forwarded("first fragment", &first, &output, want);
    // The table now sends new flows elsewhere; the datagram stays with its first fragment.
    let others: Vec<u32> = all_backends().into_iter().filter(|b| *b != want).collect();
    director.publish(TCP_SERVICE_ID, tcp_key(), 0, &others, NO_VLAN);
    let output = director.expect("later fragment", &later, Verdict::Tx);
    assert_forwarded("later fragment", &later, &output, want);
    assert_eq!(director.event_packets(Event::FragmentForward), 1);
    let mut to_other = Ipv6Frame::new(flow).fragment(SECOND_FRAGMENT_UNITS, false, DATAGRAM_ID);
    to_other.flow.daddr = OTHER_IPV6;
    director.expect("a fragment to no VIP", &to_other.build(), Verdict::Pass);
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn echo_requests_to_an_ipv6_vip_are_answered_and_neighbour_discovery_passes() {
    tests::require_root();
    let mut director = Director::load();
    let request = icmpv6_echo_request(CLIENT_IPV6, VIP_IPV6);
    let reply = director.expect("echo request", &request, Verdict::EchoReply);
    // Built from scratch by etherparse, checksum over the pseudo-header included.
    assert_eq!(reply, icmpv6_echo_reply(CLIENT_IPV6, VIP_IPV6));
    director.expect(
        "echo request to a standby VIP",
        &icmpv6_echo_request(CLIENT_IPV6, INACTIVE_VIP_IPV6),
        Verdict::DropStandby,
    );
    director.expect(
        "echo request to no VIP",
        &icmpv6_echo_request(CLIENT_IPV6, OTHER_IPV6),
        Verdict::Pass,
    );
    // A neighbour solicitation unicast to the VIP (reachability): never this path's.
    let mut solicitation = icmpv6_echo_request(CLIENT_IPV6, VIP_IPV6);
    solicitation[ETH_HEADER_LEN + IPV6_HEADER_LEN] = ICMPV6_NEIGHBOUR_SOLICITATION;
    director.expect("neighbour solicitation", &solicitation, Verdict::Pass);
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn icmpv6_errors_about_a_service_flow_go_to_its_backend() {
    tests::require_root();
    let mut director = Director::load();
    let flow = tcp_flow();
    let want = predicted(&flow, &all_backends(), false);
    let reply = Ipv6Frame::new(Ipv6Flow::tcp(VIP_IPV6, TCP_PORT, CLIENT_IPV6, CLIENT_PORT)).build();
    for kind in [
        Icmpv6Error::PacketTooBig { mtu: PATH_MTU },
        Icmpv6Error::AddressUnreachable,
        Icmpv6Error::TimeExceeded,
    ] {
        let error = icmpv6_error(kind, VIP_IPV6, &reply, usize::MAX);
        let output = director.expect(&format!("{kind:?}"), &error, Verdict::Tx);
        assert_forwarded(&format!("{kind:?}"), &error, &output, want);
    }
    assert_eq!(director.event_packets(Event::IcmpRelay), 3);
    assert_eq!(
        director.flow_backend(&flow),
        None,
        "an error starts no flow"
    );
    let short = icmpv6_error(
        Icmpv6Error::PacketTooBig { mtu: PATH_MTU },
        VIP_IPV6,
        &reply,
        IPV6_HEADER_LEN,
    );
    director.expect("a quote without ports", &short, Verdict::DropNoService);
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn source_hash_keeps_an_ipv6_client_on_one_backend() {
    tests::require_root();
    let mut director = Director::load();
    let first = Ipv6Flow::tcp(CLIENT_IPV6, CLIENT_PORT, VIP_IPV6, SOURCE_HASH_PORT);
    let want = predicted(&first, &all_backends(), true);
    for n in 0..FLOWS {
        let frame = Ipv6Frame::new(first.with_sport(CLIENT_PORT + n)).build();
        let output = director.expect("source hash", &frame, Verdict::Tx);
        assert_forwarded("source hash", &frame, &output, want);
    }
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn ipv6_on_a_vlan_trunk_keeps_its_tag() {
    tests::require_root();
    let mut director = Director::load();
    director
        .dataplane
        .set_interface(TEST_RUN_IFINDEX, VLAN_ID, DIRECTOR_MAC)
        .expect("registering the VLAN");
    let key = service_key(VIP_IPV6, TCP_PORT + 1, Transport::Tcp);
    let ids = all_backends();
    director.publish(SOURCE_HASH_SERVICE_ID + 1, key, 0, &ids, VLAN_ID);
    let flow = Ipv6Flow::tcp(CLIENT_IPV6, CLIENT_PORT, VIP_IPV6, TCP_PORT + 1);
    let frame = Ipv6Frame::new(flow).vlan(VLAN_ID).build();
    let output = director.expect("tagged IPv6", &frame, Verdict::Tx);
    assert_forwarded(
        "tagged IPv6",
        &frame,
        &output,
        predicted(&flow, &ids, false),
    );
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn unfinished_ipv6_checksums_of_new_flows_are_counted() {
    tests::require_root();
    let mut director = Director::load();
    director
        .dataplane
        .check_checksums_on(TEST_RUN_IFINDEX, NO_VLAN)
        .expect("checking checksums on the test-run interface");
    let bad = |d: &Director| d.event_packets(Event::BadChecksum);
    let udp = with_unfinished_checksum_v6(&Ipv6Frame::new(udp_flow()).build());
    director.expect("unfinished UDP", &udp, Verdict::Tx);
    assert_eq!(bad(&director), 1);
    director.expect("the same flow again", &udp, Verdict::Tx);
    assert_eq!(bad(&director), 1, "a flow-table hit is not looked at");
    let tcp = with_unfinished_checksum_v6(&Ipv6Frame::new(tcp_flow()).build());
    director.expect("unfinished TCP", &tcp, Verdict::Tx);
    assert_eq!(bad(&director), 2);
    let fine = Ipv6Frame::new(tcp_flow().with_sport(CLIENT_PORT + 1)).build();
    director.expect("finished TCP", &fine, Verdict::Tx);
    assert_eq!(bad(&director), 2, "finished checksums count nothing");
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_packet_to_an_ipv4_mapped_address_never_reaches_the_ipv4_service() {
    tests::require_root();
    let mut director = Director::load();
    // An IPv4 service, keyed (as userspace keys it) by its VIP's IPv4-mapped form.
    let ipv4_vip = Ipv4Addr::new(198, 18, 0, 100);
    director.publish(
        IPV4_SERVICE_ID,
        service_key(ipv4_vip.to_ipv6_mapped(), TCP_PORT, Transport::Tcp),
        0,
        &all_backends(),
        NO_VLAN,
    );
    let flow = Ipv6Flow::tcp(
        CLIENT_IPV6,
        CLIENT_PORT,
        ipv4_vip.to_ipv6_mapped(),
        TCP_PORT,
    );
    let frame = Ipv6Frame::new(flow).build();
    let output = director.expect(
        "an IPv6 packet to ::ffff:198.18.0.100 (never on the wire, RFC 4291 2.5.5.2)",
        &frame,
        Verdict::DropMalformed,
    );
    assert_eq!(output, frame, "left as it was");
    assert_eq!(
        director.flow_backend(&flow),
        None,
        "no IPv6 flow remembered"
    );
}
