//! The daemon's `Controller` against real maps: changes that cannot be made are refused before
//! anything is written, and a change whose writes fail leaves neither the model nor the maps
//! half-changed. Frames are judged through BPF_PROG_TEST_RUN (as arriving on loopback,
//! ifindex 1, which is the interface registered here).

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions},
};
use lb_common::MAX_BACKENDS_PER_SERVICE;
use lb_userspace::{
    config::Config,
    dataplane::{
        Dataplane,
        loader::{self, MapSizes},
    },
    director::Controller,
    net::{mac::format_mac, netlink::InterfaceInfo},
    report::stats,
};
use tests::packet::{CLIENT_IP, CLIENT_PORT, DIRECTOR_IP, DIRECTOR_MAC, Ipv4Flow, Ipv4Frame};

const TEST_RUN_IFINDEX: u32 = 1;
const XDP_DROP: u32 = 1;
const XDP_TX: u32 = 3;
/// A /15 holds every backend address the tests need.
const DIRECTOR_PREFIX_LEN: u8 = 15;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The service with as many backends as a service may have.
const FULL_PORT: u16 = 8080;
/// Another service, whose traffic must never reach the first one's backends.
const OTHER_PORT: u16 = 8081;
const OTHER_BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xee, 0x01];
const TABLE_SIZE: u32 = 65_537;
/// Client source ports the checks send from (each a flow).
const PROBE_FLOWS: u16 = 64;

/// The MAC of backend `n` of the full service: 02:00:00:01:hi:lo.
fn full_backend_mac(n: u32) -> [u8; 6] {
    let [_, _, hi, lo] = n.to_be_bytes();
    [0x02, 0, 0, 0x01, hi, lo]
}

/// Backend `n` of the full service: 198.18.(4 + n / 256).(n % 256).
fn full_backend_address(n: u32) -> Ipv4Addr {
    let [_, _, hi, lo] = n.to_be_bytes();
    Ipv4Addr::new(198, 18, 4 + hi, lo)
}

fn backend_toml(address: Ipv4Addr, mac: &str) -> String {
    format!("[[service.backend]]\naddress = \"{address}\"\nmac = \"{mac}\"\n")
}

/// A config with the full service (backends `numbers`) and the other service.
fn config(numbers: impl Iterator<Item = u32>) -> Config {
    let mut text = format!(
        "[director]\ninterface = \"lo\"\nflow_table_size = 65536\n\n\
         [[service]]\nvip = \"{VIP}\"\nport = {FULL_PORT}\nprotocol = \"udp\"\ntable_size = {TABLE_SIZE}\n"
    );
    for n in numbers {
        let mac = format_mac(full_backend_mac(n));
        text += &backend_toml(full_backend_address(n), &mac);
    }
    text += &format!(
        "\n[[service]]\nvip = \"{VIP}\"\nport = {OTHER_PORT}\nprotocol = \"udp\"\ntable_size = 251\n"
    );
    text += &backend_toml(
        Ipv4Addr::new(198, 19, 0, 10),
        &format_mac(OTHER_BACKEND_MAC),
    );
    Config::parse(&text).expect("the test config")
}

struct Bed {
    ebpf: Ebpf,
    controller: Controller,
}

impl Bed {
    fn load(config: &Config) -> Self {
        let (ebpf, dataplane) = tests::program::load_maps(MapSizes {
            maglev_entries: 4 * TABLE_SIZE,
            flow_table_size: 65_536,
            ..MapSizes::default()
        });
        let interface = InterfaceInfo {
            name: "lo".to_owned(),
            ifindex: TEST_RUN_IFINDEX,
            mac: DIRECTOR_MAC,
            ipv4: vec![(DIRECTOR_IP, DIRECTOR_PREFIX_LEN)],
            kind: None,
            veth_peer: None,
            vlan: None,
        };
        let mut controller =
            Controller::new(config, vec![interface], dataplane).expect("creating the controller");
        controller
            .apply(config.clone())
            .expect("applying the test config");
        Self { ebpf, controller }
    }

    /// (XDP action, destination MAC out) of a UDP frame to `port` from client port `sport`.
    fn send(&mut self, port: u16, sport: u16) -> (u32, [u8; 6]) {
        let frame = Ipv4Frame::new(Ipv4Flow::udp(CLIENT_IP, sport, VIP, port)).build();
        let program = loader::program(&mut self.ebpf).expect("the XDP program");
        let mut output = vec![0; frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut output),
                ..TestRunOptions::new()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e:?}"));
        let mac: [u8; 6] = output[..6].try_into().expect("six bytes");
        (result.return_value, mac)
    }

    /// Where the probe flows of `port` go now: (action, MAC) per flow.
    fn destinations(&mut self, port: u16) -> Vec<(u32, [u8; 6])> {
        (0..PROBE_FLOWS)
            .map(|i| self.send(port, CLIENT_PORT + i))
            .collect()
    }

    fn state(&self) -> String {
        let mut report = stats::build(&self.controller, Vec::new()).expect("stats");
        // How many tables were published, and how long that took, is work done (a roll-back
        // publishes too), not the model.
        for s in &mut report.services {
            s.table_publishes = 0;
            s.table_publish_nanos = 0;
        }
        serde_json::to_string(&report.services).expect("JSON")
    }
}

/// A service with every backend id in use that swaps one backend for another in one change
/// would need an id past its range, which is the next service's first id: its traffic would
/// go to the new backend. The change must be refused whole, and both services stay as they were.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_change_needing_more_backend_ids_than_a_service_has_is_refused_whole() {
    tests::require_root();
    let full = config(0..MAX_BACKENDS_PER_SERVICE);
    let mut bed = Bed::load(&full);
    let other_before = bed.destinations(OTHER_PORT);
    assert!(
        other_before
            .iter()
            .all(|&d| d == (XDP_TX, OTHER_BACKEND_MAC)),
        "the other service reaches its backend: {other_before:?}"
    );
    let full_before = bed.destinations(FULL_PORT);
    let state_before = bed.state();

    // Backend 0 leaves and a new one (number 1024) arrives, in one change.
    let swapped = config(1..=MAX_BACKENDS_PER_SERVICE);
    let error = bed
        .controller
        .apply(swapped)
        .expect_err("a change that needs a 1025th backend id is refused");
    let message = format!("{error:#}");
    assert!(
        message.contains("remove backends in one change and add the new ones in the next"),
        "{message}"
    );
    assert_eq!(bed.state(), state_before, "the model is untouched");
    assert_eq!(
        bed.controller.config(),
        &full,
        "the config in force is the old one"
    );
    assert_eq!(
        bed.destinations(OTHER_PORT),
        other_before,
        "the other service is untouched"
    );
    assert_eq!(
        bed.destinations(FULL_PORT),
        full_before,
        "the full service is untouched"
    );

    // Done in two steps, as the message says, it works.
    bed.controller
        .apply(config(1..MAX_BACKENDS_PER_SERVICE))
        .expect("removing first");
    bed.controller
        .apply(config(1..=MAX_BACKENDS_PER_SERVICE))
        .expect("then adding");
    assert_eq!(
        bed.destinations(OTHER_PORT),
        other_before,
        "the other service is untouched"
    );
}

/// `set_active` and `apply` change the model only once every map write succeeded; a failed
/// write is rolled back, so `drlb stats` and the maps agree and the next attempt works.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_failed_map_write_is_rolled_back_and_never_remembered() {
    tests::require_root();
    let small = config(0..4);
    let mut bed = Bed::load(&small);
    let before = bed.destinations(FULL_PORT);
    assert!(
        before.iter().all(|&(action, _)| action == XDP_TX),
        "{before:?}"
    );

    // Deactivation fails at its first write, then at a later one: still active, still forwarding.
    for writes in [0, 1, 2] {
        bed.controller.dataplane_mut().fail_write_after(writes);
        bed.controller
            .set_active(false)
            .expect_err("the write fails");
        assert!(
            bed.controller.is_active(),
            "after a failed deactivation ({writes} writes allowed) the director is still active"
        );
        assert_eq!(
            bed.destinations(FULL_PORT),
            before,
            "and still forwards as before"
        );
    }
    // Without the failure it works, and is remembered.
    bed.controller.set_active(false).expect("deactivating");
    assert!(!bed.controller.is_active());
    assert!(
        bed.destinations(FULL_PORT)
            .iter()
            .all(|&(action, _)| action == XDP_DROP),
        "a standby drops"
    );
    bed.controller.set_active(true).expect("activating");

    // A change that fails half-way: the config, the model and the forwarding stay as before.
    let bigger = config(0..8);
    for writes in [3, 10, 40] {
        let state = bed.state();
        bed.controller.dataplane_mut().fail_write_after(writes);
        bed.controller
            .apply(bigger.clone())
            .expect_err("the change fails half-way");
        assert_eq!(
            bed.controller.config(),
            &small,
            "the old config is in force"
        );
        assert_eq!(bed.state(), state, "the model is the old one");
        assert_eq!(
            bed.destinations(FULL_PORT),
            before,
            "forwarding is the old one"
        );
    }
    bed.controller
        .apply(bigger)
        .expect("the change, without failures");
}

/// Removing a service the maps do not hold is not an error (aya reports the kernel's ENOENT
/// as a syscall error, which the removal once passed on).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn removing_a_service_that_is_not_there_succeeds() {
    tests::require_root();
    let mut ebpf = loader::load(MapSizes::default()).expect("loading the XDP program");
    let mut dataplane = Dataplane::take_from(&mut ebpf).expect("taking the maps");
    let key = lb_common::ServiceKey {
        addr: lb_common::ipv4_mapped(VIP.octets()),
        port_be: FULL_PORT.to_be(),
        protocol: lb_common::IPPROTO_UDP,
        _pad: 0,
    };
    dataplane
        .remove_service(&key, 0)
        .expect("removing a service that was never added");
}
