//! The XDP program as the kernel runs it, through BPF_PROG_TEST_RUN.
//!
//! Each test loads its own program instance (the maps belong to it), configures it through
//! `Dataplane` as the daemon does, and feeds it frames from `tests::packet`. Most cases are
//! fixture tables in the style of Katran's BPF tests: a description, an input frame, the expected
//! XDP action, what the output frame must be, and the one verdict counter the frame adds to.
//! Targeted tests cover what a table cannot: counters over many runs, selection over many flows,
//! every truncation of a frame, and the bank flip.
//!
//! Without `ctx_in`, BPF_PROG_TEST_RUN runs the program as if the frame arrived on loopback
//! (ifindex 1), so that is the interface registered and the one the backends sit behind.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
    ops::Range,
};

use aya::{
    Ebpf,
    programs::{ProgramError, TestRun, TestRunOptions},
};
use etherparse::{Ipv4Header, SingleVlanHeader, TcpHeader};
use lb_common::{
    Backend, Counter, Event, FlowEntry, FlowKey, ForwardCounter, MAX_SERVICES, NO_VLAN,
    SERVICE_FLAG_SOURCE_HASH, Service, ServiceKey, TABLE_BANKS, VIP_FLAG_ACTIVE, VIP_FLAG_LOCAL,
    Verdict, Vip, backend_index, hash::flow_hash_v4, hash::source_hash_v4, ipv4_mapped,
    vip_filter_bit,
};
use lb_userspace::{
    dataplane::loader::{self, MapSizes},
    dataplane::{Dataplane, TableLayout},
    maglev::{self, WeightedBackend},
};
use tests::model::XdpAction;
use tests::packet::{
    AFTER_MACS, Arp, BROADCAST_MAC, CLIENT_IP, CLIENT_IPV6, CLIENT_PORT, DIRECTOR_IP, DIRECTOR_MAC,
    ETH_DST_MAC, ETH_HEADER_LEN, ETH_SRC_MAC, INACTIVE_VIP, IcmpError, Ipv4Flow, Ipv4Frame,
    MIN_FRAME_LEN, MULTICAST_MAC, OTHER_HOST_MAC, OTHER_IP, OUTER_VLAN_ID, ROUTER_ALERT_OPTION,
    ROUTER_IP, ROUTER_MAC, Transport, VIP, VIP_IPV6, VLAN_ID, backend_mac, icmp_error, ipv6_udp,
    pad_to_min_frame, truncated, with_fragment, with_ihl, with_total_len, with_unfinished_checksum,
};

/// The ifindex BPF_PROG_TEST_RUN reports as ingress without `ctx_in`: loopback.
const TEST_RUN_IFINDEX: u32 = 1;
/// An interface the program is not running on.
const OTHER_IFINDEX: u32 = 2;
/// Room in the output buffer beyond the input: a program that wrongly grew the frame shows up
/// as a wrong output instead of an ENOSPC from the kernel.
const OUTPUT_SLACK: usize = 256;

/// A small prime Maglev table: fast to publish, enough slots for a handful of backends.
const TABLE_SIZE: u32 = 251;
const TEST_FLOW_TABLE_SIZE: u32 = 4096;
/// Backend `n` has the address 198.18.0.(FIRST_BACKEND_HOST + n).
const FIRST_BACKEND_HOST: u8 = 10;

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5060;
const NO_BACKEND_PORT: u16 = 8081;
const NO_EGRESS_PORT: u16 = 8082;
/// A port on the VIP without any service.
const UNSERVED_PORT: u16 = 9999;

const TCP_SERVICE_ID: u32 = 0;
const UDP_SERVICE_ID: u32 = 1;
const NO_BACKEND_SERVICE_ID: u32 = 2;
const NO_EGRESS_SERVICE_ID: u32 = 3;
/// Backend numbers (MAC and counter index) of each service.
const TCP_BACKENDS: Range<u8> = 0..3;
const UDP_BACKENDS: Range<u8> = 3..5;
const NO_EGRESS_BACKEND: u8 = 5;

/// Where the second fragment of a packet split for a 1500-byte MTU starts: 1480 bytes, in the
/// 8-byte units of the fragment offset field.
const SECOND_FRAGMENT_OFFSET_UNITS: u16 = 185;
/// Header sizes for building inconsistent IPv4 lengths.
const IPV4_MIN_HEADER_LEN: u16 = Ipv4Header::MIN_LEN_U16;
const TCP_MIN_HEADER_LEN: u16 = TcpHeader::MIN_LEN as u16;
/// A frame that ends in the middle of its VLAN tag.
const HALF_A_VLAN_TAG: usize = SingleVlanHeader::LEN / 2;
const IHL_BELOW_MINIMUM: u8 = 4;
const IHL_MAX: u8 = 15;

/// What one run of the program returned.
struct Run {
    action: XdpAction,
    output: Vec<u8>,
}

/// A backend as the tests know it: its id (table entries and counters), its address (which
/// the Maglev table is built from), and where its frames go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TestBackend {
    id: u32,
    address: Ipv4Addr,
    weight: u32,
    dst_mac: [u8; 6],
    ifindex: u32,
    /// The VLAN of the trunk it is on, `NO_VLAN` for an untagged interface.
    vlan: u16,
}

impl TestBackend {
    /// The program's BACKENDS entry for it.
    fn entry(&self) -> Backend {
        Backend {
            dst_mac: self.dst_mac,
            src_mac: DIRECTOR_MAC,
            ifindex: self.ifindex,
            vlan: self.vlan,
        }
    }
}

/// A service as published to the program.
struct ServiceSpec {
    id: u32,
    key: ServiceKey,
    flags: u32,
    backends: Vec<TestBackend>,
}

/// Where a service's table lives: services side by side, in id order.
fn layout(service: &ServiceSpec) -> TableLayout {
    TableLayout {
        service_id: service.id,
        base: service.id * TABLE_BANKS * TABLE_SIZE,
        size: TABLE_SIZE,
        flags: service.flags,
    }
}

/// The SERVICES entry of a service with backends in its table (bank 0).
fn layout_entry(service: &ServiceSpec) -> Service {
    let layout = layout(service);
    Service {
        id: layout.service_id,
        bank: 0,
        table_base: layout.base,
        table_size: layout.size,
        flags: layout.flags,
    }
}

fn service_key(addr: Ipv4Addr, port: u16, transport: Transport) -> ServiceKey {
    ServiceKey {
        addr: ipv4_mapped(addr.octets()),
        port_be: port.to_be(),
        protocol: transport.protocol(),
        _pad: 0,
    }
}

/// Backend number `n`, on the link the test frames arrive on.
fn backend(n: u8) -> TestBackend {
    TestBackend {
        id: u32::from(n),
        address: Ipv4Addr::new(198, 18, 0, FIRST_BACKEND_HOST + n),
        weight: 1,
        dst_mac: backend_mac(n),
        ifindex: TEST_RUN_IFINDEX,
        vlan: NO_VLAN,
    }
}

fn backends(numbers: Range<u8>) -> Vec<TestBackend> {
    numbers.map(backend).collect()
}

fn tcp_service() -> ServiceSpec {
    ServiceSpec {
        id: TCP_SERVICE_ID,
        key: service_key(VIP, TCP_PORT, Transport::Tcp),
        flags: 0,
        backends: backends(TCP_BACKENDS),
    }
}

fn udp_service() -> ServiceSpec {
    ServiceSpec {
        id: UDP_SERVICE_ID,
        key: service_key(VIP, UDP_PORT, Transport::Udp),
        flags: 0,
        backends: backends(UDP_BACKENDS),
    }
}

/// The services of the fixture tables: two that forward, one with no backend and one whose only
/// backend sits behind an interface the program does not run on.
fn standard_services() -> Vec<ServiceSpec> {
    vec![
        tcp_service(),
        udp_service(),
        ServiceSpec {
            id: NO_BACKEND_SERVICE_ID,
            key: service_key(VIP, NO_BACKEND_PORT, Transport::Tcp),
            flags: 0,
            backends: vec![],
        },
        ServiceSpec {
            id: NO_EGRESS_SERVICE_ID,
            key: service_key(VIP, NO_EGRESS_PORT, Transport::Tcp),
            flags: 0,
            backends: vec![TestBackend {
                ifindex: OTHER_IFINDEX,
                ..backend(NO_EGRESS_BACKEND)
            }],
        },
    ]
}

const TCP_FLOW: Ipv4Flow = Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, VIP, TCP_PORT);
const UDP_FLOW: Ipv4Flow = Ipv4Flow::udp(CLIENT_IP, CLIENT_PORT, VIP, UDP_PORT);

/// The Maglev table userspace publishes for these backends: backend ids by slot.
fn maglev_table(backends: &[TestBackend]) -> Vec<u32> {
    let weighted: Vec<WeightedBackend> = backends
        .iter()
        .map(|b| WeightedBackend {
            address: b.address.into(),
            weight: b.weight,
        })
        .collect();
    maglev::build_table(&weighted, TABLE_SIZE)
        .into_iter()
        .map(|i| backends[i as usize].id)
        .collect()
}

/// The backend the program must pick for a new flow: the flow hash's slot of the Maglev table.
fn predicted_backend(flow: &Ipv4Flow, backends: &[TestBackend]) -> TestBackend {
    let hash = flow_hash_v4(
        flow.saddr.to_bits(),
        flow.daddr.to_bits(),
        flow.sport,
        flow.dport,
        flow.transport.protocol(),
    );
    let id = maglev_table(backends)[usize::try_from(hash % TABLE_SIZE).expect("fits")];
    *backends
        .iter()
        .find(|b| b.id == id)
        .expect("the table names a backend of the list")
}

/// A loaded program instance and its maps.
struct Director {
    ebpf: Ebpf,
    dataplane: Dataplane,
    /// Backend ids in BACKENDS, by service id.
    published: HashMap<u32, Vec<u32>>,
}

impl Director {
    /// A fresh program that knows its interface and the active VIP, and has no service.
    fn load() -> Self {
        let sizes = MapSizes {
            maglev_entries: MAX_SERVICES * TABLE_BANKS * TABLE_SIZE,
            flow_table_size: TEST_FLOW_TABLE_SIZE,
            ..MapSizes::default()
        };
        let (ebpf, dataplane) = tests::program::load_with_vip(sizes, VIP);
        Self {
            ebpf,
            dataplane,
            published: HashMap::new(),
        }
    }

    /// The configuration of the fixture tables: [`standard_services`] and an inactive VIP.
    fn with_standard_services() -> Self {
        let mut director = Self::load();
        director
            .dataplane
            .set_vip(ipv4_mapped(INACTIVE_VIP.octets()), Vip { flags: 0 })
            .expect("adding the inactive VIP");
        for service in standard_services() {
            director.publish(&service);
        }
        director
    }

    /// Publishes a service as the daemon does: its backends, then its table, then the removal
    /// of backends it no longer has.
    fn publish(&mut self, service: &ServiceSpec) {
        let context = |e: anyhow::Error| panic!("publishing service {}: {e:#}", service.id);
        for b in &service.backends {
            self.dataplane
                .set_backend(service.id, b.id, &b.entry())
                .unwrap_or_else(context);
        }
        let in_table: Vec<TestBackend> = service
            .backends
            .iter()
            .filter(|b| b.weight > 0)
            .copied()
            .collect();
        let table = if in_table.is_empty() {
            Vec::new()
        } else {
            maglev_table(&in_table)
        };
        self.dataplane
            .publish_table(&service.key, layout(service), &table)
            .unwrap_or_else(context);
        let now: Vec<u32> = service.backends.iter().map(|b| b.id).collect();
        let before = self
            .published
            .insert(service.id, now.clone())
            .unwrap_or_default();
        for gone in before.into_iter().filter(|id| !now.contains(id)) {
            self.dataplane
                .remove_backend(service.id, gone)
                .unwrap_or_else(context);
        }
    }

    fn service(&self, key: &ServiceKey) -> Service {
        self.dataplane
            .service(key)
            .expect("reading SERVICES")
            .expect("the service is published")
    }

    fn try_run(&mut self, frame: &[u8]) -> Result<Run, ProgramError> {
        let program = loader::program(&mut self.ebpf).expect("the XDP program");
        let mut output = vec![0; frame.len() + OUTPUT_SLACK];
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut output),
            ..TestRunOptions::new()
        })?;
        output.truncate(usize::try_from(result.data_size_out).expect("fits"));
        Ok(Run {
            action: XdpAction::from_return_value(result.return_value)
                .unwrap_or_else(|| panic!("{} is not an XDP action", result.return_value)),
            output,
        })
    }

    fn run(&mut self, frame: &[u8]) -> Run {
        self.try_run(frame).unwrap_or_else(|e| {
            panic!(
                "BPF_PROG_TEST_RUN failed on a {}-byte frame: {e:?}",
                frame.len()
            )
        })
    }

    fn verdict_counter(&self, verdict: Verdict) -> Counter {
        self.dataplane
            .verdict_counter(verdict)
            .unwrap_or_else(|e| panic!("reading the {} counter: {e:#}", verdict.name()))
    }

    fn verdict_counters(&self) -> Vec<Counter> {
        Verdict::ALL
            .iter()
            .map(|&v| self.verdict_counter(v))
            .collect()
    }

    fn service_counter(&self, id: u32) -> ForwardCounter {
        self.dataplane
            .service_counter(id)
            .expect("reading a service counter")
    }

    fn backend_counter(&self, service_id: u32, backend: &TestBackend) -> ForwardCounter {
        self.dataplane
            .backend_counter(service_id, backend.id)
            .expect("reading a backend counter")
    }
}

/// `packets` frames of `frame_len` bytes each.
fn counted(packets: u64, frame_len: usize) -> Counter {
    Counter {
        packets,
        bytes: packets * u64::try_from(frame_len).expect("fits"),
    }
}

/// `packets` forwarded frames of `frame_len` bytes each, of `connections` new flows.
fn forward_counted(packets: u64, frame_len: usize, connections: u64) -> ForwardCounter {
    ForwardCounter {
        packets,
        bytes: packets * u64::try_from(frame_len).expect("fits"),
        connections,
    }
}

fn added(before: Counter, after: Counter) -> Counter {
    Counter {
        packets: after.packets - before.packets,
        bytes: after.bytes - before.bytes,
    }
}

/// Checks an XDP_TX'd service frame: only the MACs changed, to the backend's and the director's.
fn assert_forwarded(context: &str, input: &[u8], output: &[u8], backend: &TestBackend) {
    assert_eq!(
        output.len(),
        input.len(),
        "{context}: the frame keeps its length"
    );
    assert_eq!(
        output[ETH_DST_MAC], backend.dst_mac,
        "{context}: destination MAC is the backend's"
    );
    assert_eq!(
        output[ETH_SRC_MAC], DIRECTOR_MAC,
        "{context}: source MAC is the director's"
    );
    assert_eq!(
        output[AFTER_MACS..],
        input[AFTER_MACS..],
        "{context}: every byte after the MACs is unchanged"
    );
}

/// What the output frame of a fixture must be.
enum Output {
    /// Byte for byte the input (XDP_PASS).
    Unchanged,
    /// The input with its MACs rewritten for this backend.
    ForwardedTo(TestBackend),
    /// Exactly these bytes (an ARP reply).
    Exactly(Vec<u8>),
    /// Not checked: the frame is dropped.
    Dropped,
}

struct Fixture {
    description: &'static str,
    input: Vec<u8>,
    action: XdpAction,
    output: Output,
    /// The one verdict counter the frame adds a packet and its bytes to.
    verdict: Verdict,
}

fn forwarded(description: &'static str, input: Vec<u8>, backend: TestBackend) -> Fixture {
    Fixture {
        description,
        input,
        action: XdpAction::Tx,
        output: Output::ForwardedTo(backend),
        verdict: Verdict::Tx,
    }
}

fn passed(description: &'static str, input: Vec<u8>) -> Fixture {
    Fixture {
        description,
        input,
        action: XdpAction::Pass,
        output: Output::Unchanged,
        verdict: Verdict::Pass,
    }
}

fn answered(description: &'static str, input: Vec<u8>, reply: Vec<u8>) -> Fixture {
    Fixture {
        description,
        input,
        action: XdpAction::Tx,
        output: Output::Exactly(reply),
        verdict: Verdict::ArpReply,
    }
}

fn dropped(description: &'static str, input: Vec<u8>, verdict: Verdict) -> Fixture {
    Fixture {
        description,
        input,
        action: XdpAction::Drop,
        output: Output::Dropped,
        verdict,
    }
}

/// Runs each fixture once and checks its action, its output and that exactly its verdict
/// counter moved, by one packet of the frame's length.
fn run_fixtures(director: &mut Director, fixtures: &[Fixture]) {
    for fixture in fixtures {
        let context = fixture.description;
        let before = director.verdict_counters();
        let run = director.run(&fixture.input);
        assert_eq!(run.action, fixture.action, "{context}: XDP action");
        match &fixture.output {
            Output::Unchanged => assert_eq!(
                run.output, fixture.input,
                "{context}: the frame is passed unchanged"
            ),
            Output::ForwardedTo(backend) => {
                assert_forwarded(context, &fixture.input, &run.output, backend)
            }
            Output::Exactly(expected) => {
                assert_eq!(&run.output, expected, "{context}: output frame")
            }
            Output::Dropped => {}
        }
        let after = director.verdict_counters();
        for ((verdict, before), after) in Verdict::ALL.iter().zip(before).zip(after) {
            let expected = if *verdict == fixture.verdict {
                counted(1, fixture.input.len())
            } else {
                Counter::default()
            };
            assert_eq!(
                added(before, after),
                expected,
                "{context}: the {} counter",
                verdict.name()
            );
        }
    }
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn service_traffic_is_sent_to_the_predicted_backend() {
    tests::require_root();
    let tcp = tcp_service().backends;
    let udp = udp_service().backends;
    let tcp_backend = predicted_backend(&TCP_FLOW, &tcp);
    let udp_backend = predicted_backend(&UDP_FLOW, &udp);
    let short_udp = Ipv4Frame::new(UDP_FLOW).payload(b"x").build();
    assert!(
        short_udp.len() < MIN_FRAME_LEN,
        "the UDP frame needs padding"
    );
    let padded_udp = pad_to_min_frame(short_udp);
    let fixtures = [
        forwarded(
            "TCP to the TCP service",
            Ipv4Frame::new(TCP_FLOW).build(),
            tcp_backend,
        ),
        forwarded(
            "UDP to the UDP service",
            Ipv4Frame::new(UDP_FLOW).build(),
            udp_backend,
        ),
        forwarded(
            "TCP segment without payload",
            Ipv4Frame::new(TCP_FLOW).payload(&[]).build(),
            tcp_backend,
        ),
        // Only VLANs configured are served (see `vlan_trunks_are_served_by_tag`).
        passed(
            "802.1Q-tagged TCP on a VLAN the director does not serve",
            Ipv4Frame::new(TCP_FLOW).vlan(VLAN_ID).build(),
        ),
        passed(
            "QinQ double-tagged TCP: a provider's frame, never served",
            Ipv4Frame::new(TCP_FLOW)
                .double_vlan(OUTER_VLAN_ID, VLAN_ID)
                .build(),
        ),
        forwarded(
            "TCP over IPv4 with options (IHL 6)",
            Ipv4Frame::new(TCP_FLOW)
                .ipv4_options(&ROUTER_ALERT_OPTION)
                .build(),
            tcp_backend,
        ),
        forwarded(
            "60-byte padded UDP frame (IP total length < frame length)",
            padded_udp,
            udp_backend,
        ),
    ];
    run_fixtures(&mut Director::with_standard_services(), &fixtures);
}

/// Traffic that is no service's: to a VIP it is the director's stack's only when the VIP is
/// one of the director's addresses (`VIP_FLAG_LOCAL`); to a VIP that is not, it is dropped and
/// counted (`drop_no_service`), never routed on. Traffic to other addresses always passes.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn non_service_traffic_passes_unchanged() {
    tests::require_root();
    let to_vips = || {
        [
            (
                "TCP to the VIP on a port without service",
                Ipv4Frame::new(TCP_FLOW.with_dport(UNSERVED_PORT)).build(),
            ),
            (
                "UDP to the TCP service's port: the protocol is part of the service",
                Ipv4Frame::new(Ipv4Flow::udp(CLIENT_IP, CLIENT_PORT, VIP, TCP_PORT)).build(),
            ),
            (
                "ICMP error to the VIP quoting no service's packet",
                icmp_error(
                    IcmpError::PortUnreachable,
                    VIP,
                    &Ipv4Frame::new(Ipv4Flow::tcp(VIP, UNSERVED_PORT, CLIENT_IP, CLIENT_PORT))
                        .build(),
                    usize::MAX,
                ),
            ),
            (
                "TCP to an inactive VIP that has no service",
                Ipv4Frame::new(Ipv4Flow::tcp(
                    CLIENT_IP,
                    CLIENT_PORT,
                    INACTIVE_VIP,
                    TCP_PORT,
                ))
                .build(),
            ),
        ]
    };
    let elsewhere = [
        passed(
            "TCP to the director's own address on the service port",
            Ipv4Frame::new(Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, DIRECTOR_IP, TCP_PORT)).build(),
        ),
        passed(
            "UDP over IPv6",
            ipv6_udp(CLIENT_IPV6, CLIENT_PORT, VIP_IPV6, UDP_PORT),
        ),
    ];
    let mut director = Director::with_standard_services();
    run_fixtures(&mut director, &elsewhere);
    let not_local: Vec<Fixture> = to_vips()
        .into_iter()
        .map(|(description, frame)| dropped(description, frame, Verdict::DropNoService))
        .collect();
    run_fixtures(&mut director, &not_local);
    for (vip, flags) in [
        (VIP, VIP_FLAG_ACTIVE | VIP_FLAG_LOCAL),
        (INACTIVE_VIP, VIP_FLAG_LOCAL),
    ] {
        director
            .dataplane
            .set_vip(ipv4_mapped(vip.octets()), Vip { flags })
            .expect("marking the VIP local");
    }
    let local: Vec<Fixture> = to_vips()
        .into_iter()
        .map(|(description, frame)| passed(description, frame))
        .collect();
    run_fixtures(&mut director, &local);
    run_fixtures(&mut director, &elsewhere);
}

/// The veth checksum trap: on an interface that checks them, a new flow's first frame with an
/// unfinished TCP/UDP checksum is counted (`bad_checksum`) and still forwarded unchanged; a
/// flow-table hit, a finished checksum, or an interface that does not check, count nothing.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn unfinished_checksums_of_new_flows_are_counted_on_interfaces_that_check() {
    tests::require_root();
    let mut director = Director::with_standard_services();
    let unfinished_udp = with_unfinished_checksum(&Ipv4Frame::new(UDP_FLOW).build());
    let unfinished_tcp =
        with_unfinished_checksum(&Ipv4Frame::new(TCP_FLOW.with_sport(CLIENT_PORT + 1)).build());
    let bad = |director: &Director| {
        director
            .dataplane
            .event_counter(Event::BadChecksum)
            .expect("reading EVENT_COUNTERS")
            .packets
    };
    // Not checked on this interface yet: nothing counted.
    assert_eq!(director.run(&unfinished_udp).action, XdpAction::Tx);
    assert_eq!(
        bad(&director),
        0,
        "an interface that does not check counts nothing"
    );

    director
        .dataplane
        .check_checksums_on(TEST_RUN_IFINDEX, lb_common::NO_VLAN)
        .expect("checking checksums on the test-run interface");
    let new_udp =
        with_unfinished_checksum(&Ipv4Frame::new(UDP_FLOW.with_sport(CLIENT_PORT + 2)).build());
    let run = director.run(&new_udp);
    assert_eq!(run.action, XdpAction::Tx, "still forwarded");
    assert_eq!(
        run.output[AFTER_MACS..],
        new_udp[AFTER_MACS..],
        "and unchanged past the MACs"
    );
    assert_eq!(
        bad(&director),
        1,
        "a new UDP flow with an unfinished checksum"
    );
    director.run(&new_udp);
    assert_eq!(bad(&director), 1, "a flow-table hit is not looked at");
    director.run(&unfinished_tcp);
    assert_eq!(
        bad(&director),
        2,
        "a new TCP flow with an unfinished checksum"
    );
    director.run(&Ipv4Frame::new(UDP_FLOW.with_sport(CLIENT_PORT + 3)).build());
    director.run(&Ipv4Frame::new(TCP_FLOW.with_sport(CLIENT_PORT + 4)).build());
    assert_eq!(bad(&director), 2, "finished checksums count nothing");
}

/// Frames for a service that were not sent to the director's MAC (flooded by a bridge as
/// unknown unicast, seen in promiscuous mode, multicast) are someone else's: passed untouched,
/// never forwarded, so two active directors cannot bounce them between each other. The same
/// for ARP requests for the VIP sent to another host's MAC, and for fragments to the VIP.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn frames_not_sent_to_our_mac_are_left_alone() {
    tests::require_root();
    let to = |dst_mac, flow| Ipv4Frame {
        dst_mac,
        ..Ipv4Frame::new(flow)
    };
    let fixtures = [
        passed(
            "UDP to the service flooded to another host's MAC",
            to(OTHER_HOST_MAC, UDP_FLOW).build(),
        ),
        passed(
            "TCP to the service sent to another host's MAC",
            to(OTHER_HOST_MAC, TCP_FLOW).build(),
        ),
        passed(
            "UDP to the service sent to the broadcast MAC",
            to(BROADCAST_MAC, UDP_FLOW).build(),
        ),
        passed(
            "UDP to the service sent to a multicast MAC",
            to(MULTICAST_MAC, UDP_FLOW).build(),
        ),
        passed(
            "a fragment to the VIP sent to another host's MAC",
            with_fragment(&to(OTHER_HOST_MAC, UDP_FLOW).build(), true, 0),
        ),
        passed(
            "ARP request for the VIP sent to another host's MAC",
            Arp {
                eth_dst: OTHER_HOST_MAC,
                ..Arp::request(ROUTER_MAC, ROUTER_IP, VIP)
            }
            .build(),
        ),
        // The same frames sent to us are ours.
        forwarded(
            "UDP to the service sent to us",
            to(DIRECTOR_MAC, UDP_FLOW).build(),
            predicted_backend(&UDP_FLOW, &udp_service().backends),
        ),
    ];
    run_fixtures(&mut Director::with_standard_services(), &fixtures);
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn arp_requests_for_an_active_vip_are_answered_and_the_rest_passes() {
    tests::require_root();
    let request = Arp::request(ROUTER_MAC, ROUTER_IP, VIP);
    // Built independently of the request: what the director must answer.
    let reply = Arp::reply(DIRECTOR_MAC, VIP, ROUTER_MAC, ROUTER_IP);
    let fixtures = [
        answered("ARP request for the VIP", request.build(), reply.build()),
        answered(
            "unicast ARP request for the VIP (a cache refresh)",
            Arp {
                eth_dst: DIRECTOR_MAC,
                ..request.clone()
            }
            .build(),
            reply.build(),
        ),
        answered(
            "padded ARP request: the reply keeps the frame length",
            pad_to_min_frame(request.build()),
            pad_to_min_frame(reply.build()),
        ),
        passed(
            "802.1Q-tagged ARP request on a VLAN the director does not serve",
            Arp {
                vlan: Some(VLAN_ID),
                ..request.clone()
            }
            .build(),
        ),
        passed(
            "ARP request for another address",
            Arp::request(ROUTER_MAC, ROUTER_IP, OTHER_IP).build(),
        ),
        passed(
            "ARP request for the director's own address",
            Arp::request(ROUTER_MAC, ROUTER_IP, DIRECTOR_IP).build(),
        ),
        passed(
            "gratuitous ARP for the VIP from another host",
            Arp::request(OTHER_HOST_MAC, VIP, VIP).build(),
        ),
        passed(
            "ARP reply addressed to the VIP",
            Arp::reply(ROUTER_MAC, ROUTER_IP, DIRECTOR_MAC, VIP).build(),
        ),
        passed(
            "ARP reply announcing the VIP from another host",
            Arp::reply(OTHER_HOST_MAC, VIP, ROUTER_MAC, ROUTER_IP).build(),
        ),
        passed(
            "ARP request from a multicast sender MAC",
            Arp {
                eth_src: MULTICAST_MAC,
                sender_mac: MULTICAST_MAC,
                ..request.clone()
            }
            .build(),
        ),
        passed(
            "ARP request whose ARP sender MAC alone is multicast",
            Arp {
                sender_mac: MULTICAST_MAC,
                ..request.clone()
            }
            .build(),
        ),
        passed(
            "ARP request for an inactive VIP",
            Arp::request(ROUTER_MAC, ROUTER_IP, INACTIVE_VIP).build(),
        ),
    ];
    run_fixtures(&mut Director::with_standard_services(), &fixtures);
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn malformed_and_undeliverable_frames_are_not_sent() {
    tests::require_root();
    let frame = Ipv4Frame::new(TCP_FLOW).build();
    let ip_len = u16::try_from(frame.len() - ETH_HEADER_LEN).expect("small frame");
    let to_director =
        Ipv4Frame::new(Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, DIRECTOR_IP, TCP_PORT)).build();
    let short_of_tcp_header = IPV4_MIN_HEADER_LEN + TCP_MIN_HEADER_LEN - 1;
    let tagged = Ipv4Frame::new(TCP_FLOW).vlan(VLAN_ID).build();
    let fixtures = [
        dropped(
            "IHL below 5",
            with_ihl(&frame, IHL_BELOW_MINIMUM),
            Verdict::DropMalformed,
        ),
        dropped("IHL 0", with_ihl(&frame, 0), Verdict::DropMalformed),
        dropped(
            "IHL 15: header longer than the packet",
            with_ihl(&frame, IHL_MAX),
            Verdict::DropMalformed,
        ),
        dropped(
            "IPv4 total length beyond the frame",
            with_total_len(&frame, ip_len + 1),
            Verdict::DropMalformed,
        ),
        dropped(
            "IPv4 total length below the header length",
            with_total_len(&frame, IPV4_MIN_HEADER_LEN - 1),
            Verdict::DropMalformed,
        ),
        dropped(
            "IPv4 total length cuts the TCP header short",
            with_total_len(&frame, short_of_tcp_header),
            Verdict::DropMalformed,
        ),
        dropped(
            "802.1Q tag cut short",
            truncated(&tagged, ETH_HEADER_LEN + HALF_A_VLAN_TAG),
            Verdict::DropMalformed,
        ),
        dropped(
            "middle fragment (MF set, offset) to the VIP, its first not seen",
            with_fragment(&frame, true, SECOND_FRAGMENT_OFFSET_UNITS),
            Verdict::DropFragmentOrphan,
        ),
        dropped(
            "last fragment (offset, MF clear) to the VIP, its first not seen",
            with_fragment(&frame, false, SECOND_FRAGMENT_OFFSET_UNITS),
            Verdict::DropFragmentOrphan,
        ),
        passed(
            "first fragment to a non-VIP address",
            with_fragment(&to_director, true, 0),
        ),
        passed(
            "TCP header cut short, to a non-VIP address: the stack judges it",
            with_total_len(&to_director, short_of_tcp_header),
        ),
        dropped(
            "TCP to a service with zero backends",
            Ipv4Frame::new(TCP_FLOW.with_dport(NO_BACKEND_PORT)).build(),
            Verdict::DropNoBackend,
        ),
        dropped(
            "TCP to a service whose backend is behind another interface",
            Ipv4Frame::new(TCP_FLOW.with_dport(NO_EGRESS_PORT)).build(),
            Verdict::DropNoEgress,
        ),
    ];
    run_fixtures(&mut Director::with_standard_services(), &fixtures);
}

fn is_einval(error: &ProgramError) -> bool {
    matches!(error, ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EINVAL))
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn no_prefix_of_a_service_frame_is_sent() {
    tests::require_root();
    let mut director = Director::with_standard_services();
    let frame = Ipv4Frame::new(TCP_FLOW).build();
    assert_eq!(
        director.run(&frame).action,
        XdpAction::Tx,
        "the whole frame is forwarded"
    );
    for len in 0..frame.len() {
        let prefix = truncated(&frame, len);
        let before = director.verdict_counters();
        let result = director.try_run(&prefix);
        if len < ETH_HEADER_LEN {
            // The kernel refuses (EINVAL) to run an XDP program on less than an Ethernet header,
            // so such a frame never reaches the program, let alone the wire.
            let error = result
                .err()
                .unwrap_or_else(|| panic!("{len}-byte frame: the kernel ran the program"));
            assert!(
                is_einval(&error),
                "{len}-byte frame: expected EINVAL, got {error:?}"
            );
            assert_eq!(
                director.verdict_counters(),
                before,
                "{len}-byte frame: nothing counted"
            );
            continue;
        }
        let run =
            result.unwrap_or_else(|e| panic!("{len}-byte frame: BPF_PROG_TEST_RUN failed: {e:?}"));
        // Every prefix claims an IPv4 packet it does not hold in full: malformed, for a VIP.
        assert_eq!(
            run.action,
            XdpAction::Drop,
            "{len}-byte prefix of a {}-byte frame",
            frame.len()
        );
        let malformed = Verdict::DropMalformed as usize;
        assert_eq!(
            added(
                before[malformed],
                director.verdict_counter(Verdict::DropMalformed)
            ),
            counted(1, len),
            "{len}-byte prefix: counted as malformed"
        );
    }
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn counters_hold_exactly_the_forwarded_packets_and_bytes() {
    tests::require_root();
    const RUNS: u64 = 5;
    let mut director = Director::with_standard_services();
    let backends = tcp_service().backends;
    let chosen = predicted_backend(&TCP_FLOW, &backends);
    let frame = Ipv4Frame::new(TCP_FLOW).build();
    for run in 0..RUNS {
        let output = director.run(&frame);
        assert_eq!(output.action, XdpAction::Tx, "run {run}");
        assert_forwarded(&format!("run {run}"), &frame, &output.output, &chosen);
    }
    let expected = counted(RUNS, frame.len());
    // One flow: one new connection, however many of its packets (the later ones hit the flow
    // table).
    let expected_forwarded = forward_counted(RUNS, frame.len(), 1);
    assert_eq!(
        director.service_counter(TCP_SERVICE_ID),
        expected_forwarded,
        "TCP service counter"
    );
    for backend in &backends {
        let want = if backend.id == chosen.id {
            expected_forwarded
        } else {
            ForwardCounter::default()
        };
        assert_eq!(
            director.backend_counter(TCP_SERVICE_ID, backend),
            want,
            "counter of backend {}",
            backend.id
        );
    }
    assert_eq!(
        director.service_counter(UDP_SERVICE_ID),
        ForwardCounter::default(),
        "UDP service counter"
    );
    for verdict in Verdict::ALL {
        let want = if verdict == Verdict::Tx {
            expected
        } else {
            Counter::default()
        };
        assert_eq!(
            director.verdict_counter(verdict),
            want,
            "the {} counter",
            verdict.name()
        );
    }
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn flows_spread_over_the_backends_and_their_counters() {
    tests::require_root();
    const FLOWS: u16 = 64;
    let mut director = Director::with_standard_services();
    let backends = udp_service().backends;
    let mut expected = vec![ForwardCounter::default(); backends.len()];
    let mut total = ForwardCounter::default();
    for sport in CLIENT_PORT..CLIENT_PORT + FLOWS {
        let flow = UDP_FLOW.with_sport(sport);
        // Frames of different lengths, so the byte counts tell the flows apart.
        let frame = Ipv4Frame::new(flow)
            .payload(&vec![0; usize::from(sport - CLIENT_PORT)])
            .build();
        let chosen = predicted_backend(&flow, &backends);
        let run = director.run(&frame);
        assert_eq!(run.action, XdpAction::Tx, "flow from port {sport}");
        assert_forwarded(
            &format!("flow from port {sport}"),
            &frame,
            &run.output,
            &chosen,
        );
        let position = backends
            .iter()
            .position(|b| b.id == chosen.id)
            .expect("a published backend");
        for counter in [&mut expected[position], &mut total] {
            counter.packets += 1;
            counter.bytes += frame.len() as u64;
            // Every flow is new: one connection each.
            counter.connections += 1;
        }
    }
    for (backend, want) in backends.iter().zip(&expected) {
        assert!(
            want.packets > 0,
            "no flow reached backend {}: {expected:?}",
            backend.id
        );
        assert_eq!(
            director.backend_counter(UDP_SERVICE_ID, backend),
            *want,
            "counter of backend {}",
            backend.id
        );
    }
    assert_eq!(
        director.service_counter(UDP_SERVICE_ID),
        total,
        "UDP service counter"
    );
    assert_eq!(
        director.verdict_counter(Verdict::Tx),
        Counter {
            packets: total.packets,
            bytes: total.bytes
        },
        "tx counter"
    );
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn several_tcp_flows_reach_every_backend() {
    tests::require_root();
    const FLOWS: u16 = 32;
    let mut director = Director::with_standard_services();
    let backends = tcp_service().backends;
    let mut reached = BTreeSet::new();
    for sport in CLIENT_PORT..CLIENT_PORT + FLOWS {
        let flow = TCP_FLOW.with_sport(sport);
        let frame = Ipv4Frame::new(flow).build();
        let chosen = predicted_backend(&flow, &backends);
        let run = director.run(&frame);
        assert_eq!(run.action, XdpAction::Tx, "flow from port {sport}");
        assert_forwarded(
            &format!("flow from port {sport}"),
            &frame,
            &run.output,
            &chosen,
        );
        reached.insert(chosen.id);
    }
    assert_eq!(
        reached.len(),
        backends.len(),
        "{FLOWS} flows reached backends {reached:?}"
    );
}

/// Sends one frame of each flow and checks that it reaches the backend predicted from `backends`.
fn assert_selection_follows(director: &mut Director, context: &str, backends: &[TestBackend]) {
    const FLOWS: u16 = 16;
    for sport in CLIENT_PORT..CLIENT_PORT + FLOWS {
        let flow = TCP_FLOW.with_sport(sport);
        let frame = Ipv4Frame::new(flow).build();
        let run = director.run(&frame);
        assert_eq!(
            run.action,
            XdpAction::Tx,
            "{context}, flow from port {sport}"
        );
        let chosen = predicted_backend(&flow, backends);
        assert_forwarded(
            &format!("{context}, flow from port {sport}"),
            &frame,
            &run.output,
            &chosen,
        );
    }
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn publishing_a_new_backend_list_flips_the_bank() {
    tests::require_root();
    let mut director = Director::load();
    let mut service = tcp_service();
    let key = service.key;
    // Disjoint lists, so a frame sent from the stale bank is recognisable by its MAC.
    let first = backends(0..2);
    let second = backends(2..5);

    for (round, (list, bank)) in [(&first, 0), (&second, 1), (&first, 0)]
        .into_iter()
        .enumerate()
    {
        service.backends = list.clone();
        director.publish(&service);
        let live = director.service(&key);
        assert_eq!(
            live,
            Service {
                bank,
                ..layout_entry(&service)
            },
            "publish {round}: the banks alternate"
        );
        assert_selection_follows(&mut director, &format!("publish {round}"), list);
    }
}

/// Sends one frame of each flow and returns the backend each went to (by destination MAC).
fn send_flows(director: &mut Director, flows: &[Ipv4Flow], backends: &[TestBackend]) -> Vec<u32> {
    flows
        .iter()
        .map(|flow| {
            let run = director.run(&Ipv4Frame::new(*flow).build());
            assert_eq!(run.action, XdpAction::Tx, "flow from port {}", flow.sport);
            backends
                .iter()
                .find(|b| run.output[ETH_DST_MAC] == b.dst_mac)
                .unwrap_or_else(|| panic!("flow from port {} went to an unknown MAC", flow.sport))
                .id
        })
        .collect()
}

fn tcp_flows(ports: Range<u16>) -> Vec<Ipv4Flow> {
    ports.map(|p| TCP_FLOW.with_sport(p)).collect()
}

/// Flows established before a backend is added keep their backend, although the new table
/// sends some of them elsewhere; new flows follow the new table.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn established_flows_keep_their_backend_when_a_backend_is_added() {
    tests::require_root();
    const FLOWS: u16 = 64;
    let mut director = Director::load();
    let mut service = tcp_service();
    director.publish(&service);
    let established = tcp_flows(CLIENT_PORT..CLIENT_PORT + FLOWS);
    let before = send_flows(&mut director, &established, &backends(0..4));

    service.backends = backends(0..4);
    director.publish(&service);
    let moved_by_table = established
        .iter()
        .zip(&before)
        .filter(|(flow, id)| predicted_backend(flow, &service.backends).id != **id)
        .count();
    assert!(
        moved_by_table > 0,
        "the new table must move some flows, or this test shows nothing"
    );
    assert_eq!(
        send_flows(&mut director, &established, &service.backends),
        before,
        "established flows stay"
    );

    let fresh = tcp_flows(CLIENT_PORT + FLOWS..CLIENT_PORT + 2 * FLOWS);
    let expected: Vec<u32> = fresh
        .iter()
        .map(|f| predicted_backend(f, &service.backends).id)
        .collect();
    assert_eq!(
        send_flows(&mut director, &fresh, &service.backends),
        expected,
        "new flows follow the new table"
    );
    assert!(expected.contains(&3), "the added backend gets new flows");
}

/// Flows of a removed backend are scheduled again; the other flows stay where they are.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn flows_of_a_removed_backend_move_and_the_others_stay() {
    tests::require_root();
    const FLOWS: u16 = 64;
    let mut director = Director::load();
    let mut service = tcp_service();
    director.publish(&service);
    let flows = tcp_flows(CLIENT_PORT..CLIENT_PORT + FLOWS);
    let before = send_flows(&mut director, &flows, &service.backends);
    let removed = 2;
    assert!(
        before.contains(&removed),
        "some flows must be on the backend that goes"
    );

    service.backends = backends(0..2);
    director.publish(&service);
    let after = send_flows(&mut director, &flows, &backends(0..3));
    for ((flow, was), now) in flows.iter().zip(&before).zip(&after) {
        if *was == removed {
            assert_eq!(
                *now,
                predicted_backend(flow, &service.backends).id,
                "flow from port {} rescheduled",
                flow.sport
            );
        } else {
            assert_eq!(now, was, "flow from port {} keeps its backend", flow.sport);
        }
    }
}

/// Weight 0 drains: the backend keeps its established flows but gets no new one.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_drained_backend_keeps_its_flows_and_gets_no_new_ones() {
    tests::require_root();
    const FLOWS: u16 = 64;
    let mut director = Director::load();
    let mut service = tcp_service();
    director.publish(&service);
    let established = tcp_flows(CLIENT_PORT..CLIENT_PORT + FLOWS);
    let before = send_flows(&mut director, &established, &service.backends);
    let drained = 1;
    assert!(
        before.contains(&drained),
        "some flows must be on the drained backend"
    );

    service.backends[usize::try_from(drained).expect("small")].weight = 0;
    director.publish(&service);
    assert_eq!(
        send_flows(&mut director, &established, &service.backends),
        before,
        "established flows stay"
    );
    let fresh = tcp_flows(CLIENT_PORT + FLOWS..CLIENT_PORT + 4 * FLOWS);
    assert!(
        !send_flows(&mut director, &fresh, &service.backends).contains(&drained),
        "no new flow goes to the drained backend"
    );
}

/// Any packet of a flow, not only a SYN, creates its flow entry (so flows survive a failover
/// from another director), naming the service and the backend.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn any_packet_creates_the_flow_entry() {
    tests::require_root();
    let mut director = Director::with_standard_services();
    let frame = Ipv4Frame::new(TCP_FLOW).build();
    let tcp = etherparse::SlicedPacket::from_ethernet(&frame).expect("a valid frame");
    let Some(etherparse::TransportSlice::Tcp(tcp)) = tcp.transport else {
        panic!("a TCP frame")
    };
    assert!(
        !tcp.syn() && !tcp.ack(),
        "the test frame is a bare TCP segment, not a SYN"
    );
    let key = FlowKey {
        saddr: CLIENT_IP.octets(),
        daddr: VIP.octets(),
        sport_be: CLIENT_PORT.to_be(),
        dport_be: TCP_PORT.to_be(),
        protocol: lb_common::IPPROTO_TCP,
        _pad: [0; 3],
    };
    assert_eq!(director.dataplane.flow(&key).expect("reading FLOWS"), None);
    director.run(&frame);
    let chosen = predicted_backend(&TCP_FLOW, &tcp_service().backends);
    let entry: FlowEntry = director
        .dataplane
        .flow(&key)
        .expect("reading FLOWS")
        .expect("a flow entry for the first packet");
    assert_eq!(entry.backend, backend_index(TCP_SERVICE_ID, chosen.id));
    assert_eq!(entry.service_id(), TCP_SERVICE_ID);
    assert_ne!(entry.generation, 0, "generations start at 1");
}

/// Source-hash scheduling: every connection of a client goes to one backend, while different
/// clients spread.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn source_hash_keeps_a_client_on_one_backend() {
    tests::require_root();
    const CLIENTS: u8 = 32;
    const PORTS_PER_CLIENT: u16 = 16;
    let mut director = Director::load();
    let service = ServiceSpec {
        flags: u32::from(SERVICE_FLAG_SOURCE_HASH),
        ..tcp_service()
    };
    director.publish(&service);
    let mut used = BTreeSet::new();
    for client in 0..CLIENTS {
        let saddr = Ipv4Addr::new(198, 19, 1, client);
        let flows: Vec<Ipv4Flow> = (0..PORTS_PER_CLIENT)
            .map(|i| Ipv4Flow {
                saddr,
                ..TCP_FLOW.with_sport(CLIENT_PORT + i)
            })
            .collect();
        let chosen = send_flows(&mut director, &flows, &service.backends);
        assert!(
            chosen.iter().all(|id| *id == chosen[0]),
            "client {saddr}: one backend for all its ports: {chosen:?}"
        );
        let slot = source_hash_v4(saddr.to_bits()) % TABLE_SIZE;
        assert_eq!(
            chosen[0],
            maglev_table(&service.backends)[slot as usize],
            "client {saddr}: the table's choice"
        );
        used.insert(chosen[0]);
    }
    assert_eq!(
        used.len(),
        service.backends.len(),
        "clients spread over every backend"
    );
}

/// A backend behind another interface of the director: the frame is redirected there through
/// the EGRESS devmap, with the same MAC rewrite, and counted as a redirect. Runs in a namespace
/// of its own, whose veth is the egress (BPF_PROG_TEST_RUN only returns the verdict; nothing
/// is sent).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn backends_behind_another_interface_are_redirected() {
    tests::require_root();
    let ns = tests::netns::Netns::create("prog-redirect");
    ns.ip(&[
        "link", "add", "egress0", "type", "veth", "peer", "name", "egress1",
    ]);
    ns.ip(&["link", "set", "egress0", "up"]);
    tests::netns::in_netns(&ns, || {
        let name = std::ffi::CString::new("egress0").expect("a C string");
        // SAFETY: a valid NUL-terminated name; answered for this thread's namespace.
        let egress = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(egress, 0, "egress0 exists in the test's namespace");
        let mut director = Director::load();
        director
            .dataplane
            .set_egress(egress)
            .expect("writing EGRESS");
        let mut service = tcp_service();
        for b in &mut service.backends {
            b.ifindex = egress;
        }
        director.publish(&service);
        let frame = Ipv4Frame::new(TCP_FLOW).build();
        let run = director.run(&frame);
        assert_eq!(run.action, XdpAction::Redirect);
        let chosen = predicted_backend(&TCP_FLOW, &service.backends);
        assert_forwarded("redirected frame", &frame, &run.output, &chosen);
        assert_eq!(
            director.verdict_counter(Verdict::Redirect),
            counted(1, frame.len())
        );
        assert_eq!(director.verdict_counter(Verdict::Tx), Counter::default());
        assert_eq!(
            director.backend_counter(TCP_SERVICE_ID, &chosen),
            forward_counted(1, frame.len(), 1)
        );
    });
}

/// `flow_table_size` means flows per online CPU times online CPUs: with BPF_F_NO_COMMON_LRU the
/// kernel gives every *possible* CPU an equal share of the map and a CPU evicts only within its
/// own, so one CPU must hold `flow_table_size / online` flows without evicting any. Where as many
/// CPUs are possible as online (this host) that held before the map was sized from the possible
/// CPUs too; vm-test's guests have more possible than online (`-smp 2,maxcpus=4`), where the
/// old sizing held only half of the share.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn one_cpu_holds_its_share_of_the_configured_flow_table() {
    tests::require_root();
    /// BPF_PROG_TEST_RUN runs the program on the caller's CPU: every flow lands in one share.
    const RUN_CPU: usize = 0;
    tests::bench::generator::pin_to_cpu(RUN_CPU);
    let (online, possible) = loader::cpus().expect("the host's CPUs");
    let share = u16::try_from(TEST_FLOW_TABLE_SIZE / online).expect("a share fits the port range");
    let mut director = Director::with_standard_services();
    let ports = CLIENT_PORT..CLIENT_PORT + share;
    for sport in ports.clone() {
        let run = director.run(&Ipv4Frame::new(UDP_FLOW.with_sport(sport)).build());
        assert_eq!(run.action, XdpAction::Tx, "flow from port {sport}");
    }
    let evicted: Vec<u16> = ports
        .filter(|&sport| {
            let key = FlowKey {
                saddr: CLIENT_IP.octets(),
                daddr: VIP.octets(),
                sport_be: sport.to_be(),
                dport_be: UDP_PORT.to_be(),
                protocol: lb_common::IPPROTO_UDP,
                _pad: [0; 3],
            };
            director
                .dataplane
                .flow(&key)
                .expect("reading FLOWS")
                .is_none()
        })
        .collect();
    assert!(
        evicted.is_empty(),
        "{} of the {share} flows of one CPU were evicted from a table of {TEST_FLOW_TABLE_SIZE} \
         flows ({online} CPUs online of {possible} possible)",
        evicted.len()
    );
}

/// The VLAN the trunk's backends are on (the clients' is `VLAN_ID`).
const BACKEND_VLAN_ID: u16 = 200;
/// A VLAN on the trunk the director does not serve.
const UNSERVED_VLAN_ID: u16 = 300;
/// Where the 802.1Q tag's TCI lies, and its priority (PCP) bits.
const TCI_AT: Range<usize> = 14..16;
const PCP_BITS: u16 = 0xe000;
const VID_BITS: u16 = 0x0fff;
/// PCP 5 (video, say), which a forwarded frame must keep.
const PRIORITY_5: u16 = 5 << 13;

/// A trunk: the test-run interface carries VLANs `VLAN_ID` (clients) and `BACKEND_VLAN_ID`
/// (backends), both served, beside its untagged frames.
fn trunk_director(backends: &[TestBackend]) -> Director {
    let mut director = Director::load();
    for vlan in [VLAN_ID, BACKEND_VLAN_ID] {
        director
            .dataplane
            .set_interface(TEST_RUN_IFINDEX, vlan, DIRECTOR_MAC)
            .expect("registering a VLAN of the trunk");
    }
    director.publish(&ServiceSpec {
        backends: backends.to_vec(),
        ..tcp_service()
    });
    director
}

fn tci(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[TCI_AT.start], frame[TCI_AT.start + 1]])
}

fn with_tci(frame: &[u8], tci: u16) -> Vec<u8> {
    let mut frame = frame.to_vec();
    frame[TCI_AT].copy_from_slice(&tci.to_be_bytes());
    frame
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn vlan_trunks_are_served_by_tag() {
    tests::require_root();
    let on_backend_vlan: Vec<TestBackend> = backends(TCP_BACKENDS)
        .into_iter()
        .map(|b| TestBackend {
            vlan: BACKEND_VLAN_ID,
            ..b
        })
        .collect();
    let backend = predicted_backend(&TCP_FLOW, &on_backend_vlan);
    let mut director = trunk_director(&on_backend_vlan);

    // A client's frame on VLAN 100 leaves for the backend on VLAN 200: the MACs and the tag's
    // VLAN id change, its priority stays, nothing else moves.
    let tagged = Ipv4Frame::new(TCP_FLOW).vlan(VLAN_ID).build();
    let input = with_tci(&tagged, PRIORITY_5 | VLAN_ID);
    let run = director.run(&input);
    assert_eq!(run.action, XdpAction::Tx, "sent back out of the trunk");
    assert_eq!(run.output.len(), input.len(), "the frame keeps its length");
    assert_eq!(run.output[ETH_DST_MAC], backend.dst_mac);
    assert_eq!(run.output[ETH_SRC_MAC], DIRECTOR_MAC);
    assert_eq!(
        tci(&run.output) & VID_BITS,
        BACKEND_VLAN_ID,
        "the backend's VLAN"
    );
    assert_eq!(tci(&run.output) & PCP_BITS, PRIORITY_5, "priority kept");
    assert_eq!(
        run.output[TCI_AT.end..],
        input[TCI_AT.end..],
        "every byte after the tag is unchanged"
    );
    assert_eq!(
        director.backend_counter(TCP_SERVICE_ID, &backend).packets,
        1,
        "counted for the backend"
    );

    let request = Arp {
        vlan: Some(VLAN_ID),
        ..Arp::request(ROUTER_MAC, ROUTER_IP, VIP)
    };
    let reply = Arp {
        vlan: Some(VLAN_ID),
        ..Arp::reply(DIRECTOR_MAC, VIP, ROUTER_MAC, ROUTER_IP)
    };
    let fixtures = [
        answered(
            "802.1Q-tagged ARP request for the VIP: the reply keeps the tag",
            request.build(),
            reply.build(),
        ),
        passed(
            "ARP request for the VIP on a VLAN not served",
            Arp {
                vlan: Some(UNSERVED_VLAN_ID),
                ..request.clone()
            }
            .build(),
        ),
        passed(
            "TCP to the service on a VLAN not served: untouched",
            Ipv4Frame::new(TCP_FLOW).vlan(UNSERVED_VLAN_ID).build(),
        ),
        passed(
            "QinQ with a served VLAN outside: not served",
            Ipv4Frame::new(TCP_FLOW)
                .double_vlan(VLAN_ID, BACKEND_VLAN_ID)
                .build(),
        ),
        // The untagged interface is served too, but a tag cannot be added in place.
        dropped(
            "untagged TCP for a backend on a VLAN: no egress without growing the frame",
            Ipv4Frame::new(TCP_FLOW).build(),
            Verdict::DropNoEgress,
        ),
    ];
    run_fixtures(&mut director, &fixtures);

    // A backend on the clients' own VLAN: the tag is kept as it is.
    let same_vlan: Vec<TestBackend> = backends(TCP_BACKENDS)
        .into_iter()
        .map(|b| TestBackend { vlan: VLAN_ID, ..b })
        .collect();
    let mut director = trunk_director(&same_vlan);
    run_fixtures(
        &mut director,
        &[forwarded(
            "802.1Q-tagged TCP for a backend on the same VLAN: the tag is kept",
            tagged.clone(),
            predicted_backend(&TCP_FLOW, &same_vlan),
        )],
    );
}

/// Longer than a page: BPF_PROG_TEST_RUN hands the frags-aware program such a frame in several
/// buffers, as a driver does a jumbo frame.
const JUMBO_PAYLOAD_LEN: usize = 8960 - 20;

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn jumbo_frames_in_several_buffers_are_forwarded_whole() {
    tests::require_root();
    let mut director = Director::with_standard_services();
    let payload = vec![0x5a; JUMBO_PAYLOAD_LEN];
    let frame = Ipv4Frame::new(TCP_FLOW).payload(&payload).build();
    let backend = predicted_backend(&TCP_FLOW, &tcp_service().backends);
    let before = director.verdict_counter(Verdict::Tx);
    let run = director.run(&frame);
    assert_eq!(run.action, XdpAction::Tx);
    assert_forwarded("a 9014-byte TCP frame", &frame, &run.output, &backend);
    assert_eq!(
        added(before, director.verdict_counter(Verdict::Tx)),
        counted(1, frame.len()),
        "counted with its whole length, every buffer"
    );
}

/// An address in 198.18.0.0/16 other than `addr` and `not` whose `VIP_FILTER` bit (and so
/// `VIP_SLOTS` slot) is `addr`'s.
fn sharing_filter_bit(addr: Ipv4Addr, not: Option<Ipv4Addr>) -> Ipv4Addr {
    let bit = vip_filter_bit(addr.octets());
    (1..=u16::MAX)
        .map(|i| {
            let [hi, lo] = i.to_be_bytes();
            Ipv4Addr::new(198, 18, hi, lo)
        })
        .find(|a| *a != addr && Some(*a) != not && vip_filter_bit(a.octets()) == bit)
        .expect("4096 bits: 198.18.0.0/16 holds addresses sharing each")
}

/// A VIP is found by its filter bit's slot, which names one VIP: one that shares the bit with
/// the slot's holder is found in `VIPS`, and when the holder goes, it takes the slot over.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn vips_sharing_a_filter_bit_are_each_answered_whichever_holds_the_slot() {
    tests::require_root();
    let mut director = Director::load();
    let twin = sharing_filter_bit(VIP, None);
    let no_vip = sharing_filter_bit(VIP, Some(twin));
    let active = Vip {
        flags: VIP_FLAG_ACTIVE,
    };
    director
        .dataplane
        .set_vip(ipv4_mapped(twin.octets()), active)
        .expect("adding the twin VIP");
    let request = |ip: Ipv4Addr| Arp::request(ROUTER_MAC, ROUTER_IP, ip).build();
    let reply = |ip: Ipv4Addr| Arp::reply(DIRECTOR_MAC, ip, ROUTER_MAC, ROUTER_IP).build();
    let both = [
        answered("the VIP holding the slot", request(VIP), reply(VIP)),
        answered("its twin, found in VIPS", request(twin), reply(twin)),
        passed(
            "an address sharing their bit that is no VIP",
            request(no_vip),
        ),
    ];
    run_fixtures(&mut director, &both);
    director
        .dataplane
        .remove_vip(&ipv4_mapped(VIP.octets()))
        .expect("removing the VIP");
    run_fixtures(
        &mut director,
        &[
            passed("the removed VIP", request(VIP)),
            answered("the twin, now holding the slot", request(twin), reply(twin)),
            passed("the address that is no VIP", request(no_vip)),
        ],
    );
    // Back with its old (lower) id, the VIP takes the slot back.
    director
        .dataplane
        .set_vip(ipv4_mapped(VIP.octets()), active)
        .expect("adding the VIP again");
    run_fixtures(&mut director, &both);
}

/// A service address that is no VIP (the daemon always adds one; the data plane must not
/// depend on it): the program checks its VIP filter before any lookup, so the filter must hold
/// service addresses too.
const SERVICE_ADDRESS_NO_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_service_on_an_address_that_is_no_vip_is_served_until_removed() {
    tests::require_root();
    let mut director = Director::load();
    let service = ServiceSpec {
        key: service_key(SERVICE_ADDRESS_NO_VIP, TCP_PORT, Transport::Tcp),
        ..tcp_service()
    };
    director.publish(&service);
    let flow = Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, SERVICE_ADDRESS_NO_VIP, TCP_PORT);
    let frame = Ipv4Frame::new(flow).build();
    run_fixtures(
        &mut director,
        &[forwarded(
            "TCP to a service whose address is no VIP",
            frame.clone(),
            predicted_backend(&flow, &service.backends),
        )],
    );
    director
        .dataplane
        .remove_service(&service.key, service.id)
        .expect("removing the service");
    run_fixtures(
        &mut director,
        &[passed(
            "the same flow once the service is gone: not a VIP, the stack's",
            frame,
        )],
    );
}

/// A flow-table hit names its service by id and generation, not by its key: a flow remembered
/// for a removed service is not sent to the service that got its id next.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_flow_of_a_removed_service_never_reaches_the_next_holder_of_its_id() {
    tests::require_root();
    let mut director = Director::load();
    let first = tcp_service();
    director.publish(&first);
    let frame = Ipv4Frame::new(TCP_FLOW).build();
    run_fixtures(
        &mut director,
        &[forwarded(
            "the flow, remembered for the first service",
            frame.clone(),
            predicted_backend(&TCP_FLOW, &first.backends),
        )],
    );
    director
        .dataplane
        .remove_service(&first.key, first.id)
        .expect("removing the first service");
    let next = ServiceSpec {
        key: service_key(VIP, UNSERVED_PORT, Transport::Tcp),
        backends: backends(UDP_BACKENDS),
        ..tcp_service()
    };
    director.publish(&next);
    assert_eq!(director.service(&next.key).id, first.id, "the id is reused");
    run_fixtures(
        &mut director,
        &[
            dropped(
                "the first service's flow: to the VIP, no service any more",
                frame,
                Verdict::DropNoService,
            ),
            forwarded(
                "the next holder's own traffic",
                Ipv4Frame::new(TCP_FLOW.with_dport(UNSERVED_PORT)).build(),
                predicted_backend(&TCP_FLOW.with_dport(UNSERVED_PORT), &next.backends),
            ),
        ],
    );
}

/// The LRU flow table may recycle an entry while a run reads it: the run then sees another
/// flow's entry. One naming a live service of the right generation, but another service,
/// must not take the packet there: the hit checks the service's key (`SERVICE_KEYS`).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_flow_entry_naming_another_service_is_not_followed() {
    tests::require_root();
    let mut director = Director::with_standard_services();
    let udp = udp_service();
    let udp_backend = predicted_backend(&UDP_FLOW, &udp.backends);
    run_fixtures(
        &mut director,
        &[forwarded(
            "UDP, remembering its flow",
            Ipv4Frame::new(UDP_FLOW).build(),
            udp_backend,
        )],
    );
    let udp_key = FlowKey {
        saddr: CLIENT_IP.octets(),
        daddr: VIP.octets(),
        sport_be: CLIENT_PORT.to_be(),
        dport_be: UDP_PORT.to_be(),
        protocol: lb_common::IPPROTO_UDP,
        _pad: [0; 3],
    };
    let udp_entry = director
        .dataplane
        .flow(&udp_key)
        .expect("reading FLOWS")
        .expect("the UDP flow's entry");
    // The TCP flow's entry, as a recycled element would show it: the UDP flow's.
    let tcp_key = FlowKey {
        dport_be: TCP_PORT.to_be(),
        protocol: lb_common::IPPROTO_TCP,
        ..udp_key
    };
    director
        .dataplane
        .set_flow(&tcp_key, udp_entry)
        .expect("writing FLOWS");
    run_fixtures(
        &mut director,
        &[forwarded(
            "TCP whose flow entry names the UDP service: scheduled by its own",
            Ipv4Frame::new(TCP_FLOW).build(),
            predicted_backend(&TCP_FLOW, &tcp_service().backends),
        )],
    );
}
