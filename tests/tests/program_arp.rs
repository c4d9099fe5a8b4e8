//! The XDP program's part in the ARP problem and in failover, through BPF_PROG_TEST_RUN:
//!
//! - VIP conflicts: ARP frames claiming a VIP for another MAC are counted per MAC in
//!   `ARP_CONFLICTS`, and nothing else changes: every verdict, every reply, every counter is
//!   what it was without conflict counting (`tests/tests/program.rs` checks the rest).
//! - Standby: the daemon's own `Controller::set_active(false)` makes the program stop answering
//!   ARP for the VIP *and* stop forwarding its traffic (dropped as `drop_standby`);
//!   `set_active(true)` brings both back.
//! - The VIP as an address of the director (`Controller::set_local`): its other traffic goes to
//!   the stack, and a standby drops ARP requests for it; with `active_when = "vip-assigned"`
//!   the address alone makes the director active or standby for the VIP.
//!
//! Frames arrive as if on loopback (ifindex 1), the interface the test director runs on.

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::Ebpf;
use lb_common::{Verdict, conflict::MAX_ARP_CONFLICTS};
use lb_userspace::{
    config::Config,
    daemon::conflict::{ConflictMap, Seen},
    dataplane::loader::MapSizes,
    director::Controller,
    net::netlink::InterfaceInfo,
};
use tests::packet::{
    AFTER_MACS, Arp, CLIENT_IP, CLIENT_PORT, DIRECTOR_IP, DIRECTOR_MAC, ETH_DST_MAC, ETH_SRC_MAC,
    Ipv4Flow, Ipv4Frame, OTHER_HOST_MAC, OTHER_IP, ROUTER_IP, ROUTER_MAC, VIP, VLAN_ID, truncated,
};

const TEST_RUN_IFINDEX: u32 = 1;
const PORT: u16 = 8080;
const TABLE_SIZE: u32 = 251;
/// The one backend: 198.18.0.10 at this MAC.
const BACKEND_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x01, 0x10];
const CONFIG: &str = r#"
[director]
interface = "lo"

[[service]]
vip = "198.18.0.100"
port = 8080
protocol = "tcp"
table_size = 251
health_check = { kind = "none" }

[[service.backend]]
address = "198.18.0.10"
mac = "02:00:00:00:01:10"
"#;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// A loaded program configured by the daemon's `Controller`, and its conflict map.
struct Bed {
    ebpf: Ebpf,
    director: Controller,
    conflicts: ConflictMap,
}

impl Bed {
    fn load() -> Self {
        Self::load_with(CONFIG)
    }

    fn load_with(config: &str) -> Self {
        let (mut ebpf, dataplane) = tests::program::load_maps(MapSizes {
            maglev_entries: 4 * TABLE_SIZE,
            flow_table_size: 4096,
            ..MapSizes::default()
        });
        let conflicts = ConflictMap::take_from(&mut ebpf).expect("taking ARP_CONFLICTS");
        let config = Config::parse(config).expect("the test config");
        let interface = InterfaceInfo {
            name: "lo".to_owned(),
            ifindex: TEST_RUN_IFINDEX,
            mac: DIRECTOR_MAC,
            ipv4: vec![(DIRECTOR_IP, 24)],
            ipv6: Vec::new(),
            kind: None,
            veth_peer: None,
            vlan: None,
        };
        let mut director =
            Controller::new(&config, vec![interface], dataplane).expect("creating the director");
        director.apply(config).expect("applying the test config");
        Self {
            ebpf,
            director,
            conflicts,
        }
    }

    /// (XDP action, output frame).
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        tests::program::run_frame(&mut self.ebpf, frame)
    }

    fn verdicts(&self) -> BTreeMap<&'static str, u64> {
        let report = lb_userspace::report::stats::build(&self.director, Vec::new()).expect("stats");
        Verdict::ALL
            .iter()
            .map(|v| (v.name(), report.verdicts[v.name()].packets))
            .collect()
    }

    fn conflicts(&self) -> BTreeMap<[u8; 6], Seen> {
        self.conflicts
            .read()
            .expect("reading ARP_CONFLICTS")
            .into_iter()
            .map(|s| (s.mac, s))
            .collect()
    }
}

/// What a frame must do.
struct Fixture {
    description: &'static str,
    input: Vec<u8>,
    action: u32,
    /// `None`: the output must be the input.
    output: Option<Vec<u8>>,
    verdict: Verdict,
    /// The MAC whose conflict entry the frame adds to, and whether as a reply (else a request).
    conflict: Option<([u8; 6], bool)>,
}

fn passed(description: &'static str, input: Vec<u8>, conflict: Option<([u8; 6], bool)>) -> Fixture {
    Fixture {
        description,
        input,
        action: XDP_PASS,
        output: None,
        verdict: Verdict::Pass,
        conflict,
    }
}

const REPLY: bool = true;
const REQUEST: bool = false;

/// Runs each fixture and checks its action, output, that exactly its verdict counter moved,
/// and that exactly its conflict entry (if any) grew, by one frame of the right kind.
fn run_fixtures(bed: &mut Bed, fixtures: &[Fixture]) {
    for f in fixtures {
        let context = f.description;
        let (verdicts, conflicts) = (bed.verdicts(), bed.conflicts());
        let (action, output) = bed.run(&f.input);
        assert_eq!(action, f.action, "{context}: XDP action");
        assert_eq!(
            &output,
            f.output.as_ref().unwrap_or(&f.input),
            "{context}: output frame"
        );
        for (name, after) in bed.verdicts() {
            let expected = u64::from(name == f.verdict.name());
            assert_eq!(
                after - verdicts[name],
                expected,
                "{context}: the {name} counter"
            );
        }
        let after = bed.conflicts();
        let mut grown: Vec<([u8; 6], bool)> = Vec::new();
        for (mac, seen) in &after {
            let before = conflicts.get(mac);
            let requests = seen.requests - before.map_or(0, |b| b.requests);
            let replies = seen.replies - before.map_or(0, |b| b.replies);
            match (requests, replies) {
                (0, 0) => {}
                (1, 0) => grown.push((*mac, REQUEST)),
                (0, 1) => grown.push((*mac, REPLY)),
                other => panic!("{context}: {mac:02x?} grew by {other:?}"),
            }
            if requests + replies > 0 {
                assert_eq!(seen.last_vip, VIP, "{context}: the claimed VIP");
                assert!(seen.last_seen_ns > 0, "{context}: last seen");
            }
        }
        assert_eq!(
            grown,
            f.conflict.into_iter().collect::<Vec<_>>(),
            "{context}: conflict entries"
        );
    }
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn arp_frames_claiming_a_vip_for_another_mac_are_counted_and_nothing_else_changes() {
    tests::require_root();
    let mut bed = Bed::load();
    let request_for_vip = Arp::request(ROUTER_MAC, ROUTER_IP, VIP);
    let reply_from_backend = Arp::reply(BACKEND_MAC, VIP, DIRECTOR_MAC, DIRECTOR_IP);
    let fixtures = [
        passed(
            "a backend answering ARP for the VIP (arp_ignore too low)",
            reply_from_backend.build(),
            Some((BACKEND_MAC, REPLY)),
        ),
        passed(
            "a backend asking with the VIP as sender (arp_announce too low)",
            Arp::request(BACKEND_MAC, VIP, ROUTER_IP).build(),
            Some((BACKEND_MAC, REQUEST)),
        ),
        passed(
            "gratuitous ARP for the VIP from another host",
            Arp::request(OTHER_HOST_MAC, VIP, VIP).build(),
            Some((OTHER_HOST_MAC, REQUEST)),
        ),
        passed(
            "an 802.1Q-tagged reply claiming the VIP on a VLAN not served: another network",
            Arp {
                vlan: Some(VLAN_ID),
                ..reply_from_backend.clone()
            }
            .build(),
            None,
        ),
        passed(
            "a reply claiming the VIP whose ARP sender MAC alone is another host's",
            Arp {
                sender_mac: OTHER_HOST_MAC,
                ..reply_from_backend.clone()
            }
            .build(),
            Some((OTHER_HOST_MAC, REPLY)),
        ),
        Fixture {
            description: "a request for the VIP is answered exactly as before, and is no conflict",
            input: request_for_vip.build(),
            action: XDP_TX,
            output: Some(Arp::reply(DIRECTOR_MAC, VIP, ROUTER_MAC, ROUTER_IP).build()),
            verdict: Verdict::ArpReply,
            conflict: None,
        },
        passed(
            "the director's own MAC claiming the VIP is no conflict",
            Arp::reply(DIRECTOR_MAC, VIP, ROUTER_MAC, ROUTER_IP).build(),
            None,
        ),
        passed(
            "a reply claiming another address is no conflict",
            Arp::reply(BACKEND_MAC, OTHER_IP, DIRECTOR_MAC, DIRECTOR_IP).build(),
            None,
        ),
        passed(
            "a request merely asking for the VIP is no conflict",
            Arp::request(BACKEND_MAC, Ipv4Addr::new(198, 18, 0, 10), VIP).build(),
            None,
        )
        .answered(Arp::reply(
            DIRECTOR_MAC,
            VIP,
            BACKEND_MAC,
            Ipv4Addr::new(198, 18, 0, 10),
        )),
        passed(
            "a truncated reply claiming the VIP is not read",
            truncated(&reply_from_backend.build(), 14 + 20),
            None,
        ),
    ];
    run_fixtures(&mut bed, &fixtures);
    let total = bed.conflicts();
    assert_eq!(
        (total[&BACKEND_MAC].requests, total[&BACKEND_MAC].replies),
        (1, 1),
        "the backend's totals: {total:?}"
    );
}

impl Fixture {
    /// The same frame, answered by the director with `reply`.
    fn answered(self, reply: Arp) -> Self {
        Self {
            action: XDP_TX,
            output: Some(reply.build()),
            verdict: Verdict::ArpReply,
            ..self
        }
    }
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn the_conflict_table_is_bounded() {
    tests::require_root();
    let mut bed = Bed::load();
    let count = MAX_ARP_CONFLICTS + 16;
    let mac = |n: u32| {
        let [_, a, b, c] = n.to_be_bytes();
        [0x02, 0xcc, 0x00, a, b, c]
    };
    for n in 0..count {
        let (action, _) = bed.run(&Arp::request(mac(n), VIP, ROUTER_IP).build());
        assert_eq!(action, XDP_PASS);
    }
    let table = bed.conflicts();
    assert!(
        table.len() <= MAX_ARP_CONFLICTS as usize,
        "{} entries in a table of {MAX_ARP_CONFLICTS}",
        table.len()
    );
    assert!(
        table.contains_key(&mac(count - 1)),
        "the MAC seen last is in the table"
    );
}

/// The TCP frame of the test flow, and whether the program forwarded it to the backend.
fn send_service_frame(bed: &mut Bed) -> (u32, Vec<u8>, Vec<u8>) {
    let frame = Ipv4Frame::new(Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, VIP, PORT)).build();
    let (action, output) = bed.run(&frame);
    (action, frame, output)
}

#[track_caller]
fn assert_active(bed: &mut Bed, context: &str) {
    let before = bed.verdicts();
    let (action, input, output) = send_service_frame(bed);
    assert_eq!(action, XDP_TX, "{context}: service traffic is forwarded");
    assert_eq!(
        output[ETH_DST_MAC], BACKEND_MAC,
        "{context}: to the backend"
    );
    assert_eq!(
        output[ETH_SRC_MAC], DIRECTOR_MAC,
        "{context}: from the director"
    );
    assert_eq!(
        output[AFTER_MACS..],
        input[AFTER_MACS..],
        "{context}: only the MACs change"
    );
    let (action, reply) = bed.run(&Arp::request(ROUTER_MAC, ROUTER_IP, VIP).build());
    assert_eq!(action, XDP_TX, "{context}: ARP for the VIP is answered");
    assert_eq!(
        reply,
        Arp::reply(DIRECTOR_MAC, VIP, ROUTER_MAC, ROUTER_IP).build()
    );
    let after = bed.verdicts();
    assert_eq!(
        (
            after["tx"] - before["tx"],
            after["arp_reply"] - before["arp_reply"]
        ),
        (1, 1),
        "{context}"
    );
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_standby_director_neither_answers_arp_nor_forwards_and_activation_restores_both() {
    tests::require_root();
    let mut bed = Bed::load();
    assert_active(&mut bed, "at start");

    let effects = bed.director.set_active(false).expect("deactivating");
    assert_eq!(effects.len(), 1, "{effects:?}");
    let before = bed.verdicts();
    let (action, _, _) = send_service_frame(&mut bed);
    assert_eq!(action, XDP_DROP, "a standby forwards nothing");
    let request = Arp::request(ROUTER_MAC, ROUTER_IP, VIP).build();
    let (action, output) = bed.run(&request);
    assert_eq!(
        (action, &output),
        (XDP_PASS, &request),
        "a standby answers no ARP for the VIP"
    );
    let after = bed.verdicts();
    assert_eq!(
        after["drop_standby"] - before["drop_standby"],
        1,
        "counted as drop_standby"
    );
    assert_eq!(after["tx"], before["tx"]);
    assert_eq!(after["arp_reply"], before["arp_reply"]);
    assert_eq!(
        lb_userspace::report::stats::build(&bed.director, Vec::new())
            .expect("stats")
            .state,
        "standby"
    );
    // Conflicts are counted in either state (the daemon judges them by the state).
    let (action, _) = bed.run(&Arp::reply(BACKEND_MAC, VIP, DIRECTOR_MAC, DIRECTOR_IP).build());
    assert_eq!(action, XDP_PASS);
    assert_eq!(bed.conflicts()[&BACKEND_MAC].replies, 1);
    assert!(
        bed.director.set_active(false).expect("again").is_empty(),
        "idempotent"
    );

    assert_eq!(bed.director.set_active(true).expect("activating").len(), 1);
    assert_active(&mut bed, "after activation");
    assert_eq!(
        lb_userspace::report::stats::build(&bed.director, Vec::new())
            .expect("stats")
            .state,
        "active"
    );
    // A change applied while standby keeps the director standby.
    bed.director.set_active(false).expect("deactivating");
    let config = Config::parse(&CONFIG.replace("8080", "8081")).expect("config");
    bed.director
        .apply(config.clone())
        .expect("applying a changed config");
    let frame = Ipv4Frame::new(Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, VIP, 8081)).build();
    assert_eq!(
        bed.run(&frame).0,
        XDP_DROP,
        "a service added while standby does not forward"
    );
    bed.director.set_active(true).expect("activating");
    assert_eq!(bed.run(&frame).0, XDP_TX, "and does once active");
}

/// (verdict counters after - before) of the frames `frames`, and their XDP actions.
fn run_counted(bed: &mut Bed, frames: &[&[u8]]) -> (Vec<u32>, BTreeMap<&'static str, u64>) {
    let before = bed.verdicts();
    let actions = frames.iter().map(|f| bed.run(f).0).collect();
    let after = bed.verdicts();
    let moved = after
        .iter()
        .map(|(name, n)| (*name, n - before[name]))
        .filter(|(_, n)| *n > 0)
        .collect();
    (actions, moved)
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_vip_that_is_a_director_address_keeps_its_other_traffic_and_a_standby_keeps_the_kernel_quiet() {
    tests::require_root();
    let mut bed = Bed::load();
    // ICMP that is neither ping (answered by the program, see program_icmp.rs) nor an error
    // about a service flow: an error quoting another port of the VIP.
    let not_a_service_reply =
        Ipv4Frame::new(Ipv4Flow::tcp(VIP, PORT + 1, CLIENT_IP, CLIENT_PORT)).build();
    let icmp = tests::packet::icmp_error(
        tests::packet::IcmpError::PortUnreachable,
        VIP,
        &not_a_service_reply,
        usize::MAX,
    );
    let ping = tests::packet::icmp_echo_request(CLIENT_IP, VIP);
    let other_port = Ipv4Frame::new(Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, VIP, PORT + 1)).build();
    let request = Arp::request(ROUTER_MAC, ROUTER_IP, VIP).build();

    let (actions, moved) = run_counted(&mut bed, &[&icmp, &other_port, &ping]);
    assert_eq!(
        actions,
        [XDP_DROP, XDP_DROP, XDP_TX],
        "not local: dropped; ping answered"
    );
    assert_eq!(
        moved,
        BTreeMap::from([("drop_no_service", 2), ("echo_reply", 1)])
    );

    let effects = bed
        .director
        .set_local([VIP.into(), DIRECTOR_IP.into()].into())
        .expect("the VIP becomes an address of the director");
    assert_eq!(effects.effects.len(), 1, "{effects:?}");
    assert!(effects.activated.is_empty(), "it was active already");
    let (actions, moved) = run_counted(&mut bed, &[&icmp, &other_port, &ping]);
    assert_eq!(
        actions,
        [XDP_PASS, XDP_PASS, XDP_TX],
        "local: the stack's, but ping, still answered by the program"
    );
    assert_eq!(moved, BTreeMap::from([("pass", 2), ("echo_reply", 1)]));
    assert_active(&mut bed, "active and local");

    bed.director.set_active(false).expect("deactivating");
    let (actions, moved) = run_counted(&mut bed, &[&request, &icmp, &ping]);
    assert_eq!(
        actions,
        [XDP_DROP, XDP_PASS, XDP_DROP],
        "a standby holding the VIP: ARP requests never reach the kernel; other ICMP still \
         does; ping is not answered, as on a standby without the address"
    );
    assert_eq!(
        moved,
        BTreeMap::from([("drop_arp_standby", 1), ("pass", 1), ("drop_standby", 1)])
    );
    bed.director
        .set_local([DIRECTOR_IP.into()].into())
        .expect("the address goes");
    let (actions, _) = run_counted(&mut bed, &[&request]);
    assert_eq!(
        actions,
        [XDP_PASS],
        "not local, standby: the kernel may see it"
    );
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn with_vip_assigned_the_address_alone_makes_the_director_active_or_standby() {
    tests::require_root();
    let config = CONFIG.replace(
        "interface = \"lo\"",
        "interface = \"lo\"\nactive_when = \"vip-assigned\"",
    );
    let mut bed = Bed::load_with(&config);
    let stats =
        |bed: &Bed| lb_userspace::report::stats::build(&bed.director, Vec::new()).expect("stats");
    assert_eq!(stats(&bed).state, "standby", "the VIP is no address yet");
    let (action, _, _) = send_service_frame(&mut bed);
    assert_eq!(action, XDP_DROP, "a standby forwards nothing");
    let refused = bed.director.set_active(true).expect_err("refused");
    assert!(
        format!("{refused:#}").contains("vip-assigned"),
        "{refused:#}"
    );
    assert_eq!(stats(&bed).state, "standby", "the refusal changed nothing");

    let switched = bed
        .director
        .set_local([VIP.into()].into())
        .expect("keepalived adds the VIP");
    assert_eq!(switched.activated, [VIP]);
    assert_active(&mut bed, "the VIP assigned");
    let report = stats(&bed);
    assert_eq!(report.state, "active");
    assert!(
        report.vips[0].active && report.vips[0].local,
        "{:?}",
        report.vips
    );

    let switched = bed
        .director
        .set_local([].into())
        .expect("keepalived removes the VIP");
    assert!(switched.activated.is_empty());
    assert_eq!(switched.effects.len(), 1, "{:?}", switched.effects);
    let before = bed.verdicts();
    let (action, _, _) = send_service_frame(&mut bed);
    let (arp, _) = bed.run(&Arp::request(ROUTER_MAC, ROUTER_IP, VIP).build());
    assert_eq!((action, arp), (XDP_DROP, XDP_PASS), "standby again");
    assert_eq!(bed.verdicts()["drop_standby"] - before["drop_standby"], 1);
    // A service added while the VIP is away stays standby; it forwards once the VIP returns.
    bed.director
        .apply(Config::parse(&config.replace("8080", "8081")).expect("config"))
        .expect("applying a changed config");
    let frame = Ipv4Frame::new(Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, VIP, 8081)).build();
    assert_eq!(bed.run(&frame).0, XDP_DROP);
    bed.director
        .set_local([VIP.into()].into())
        .expect("the VIP returns");
    assert_eq!(bed.run(&frame).0, XDP_TX);
}
