//! The programs' own cost, in ns per packet, through BPF_PROG_TEST_RUN (no traffic, no veth).
//!
//! drlb is the real program with its maps written by the real `Director` code (the benchmark
//! config, interface = the loopback index BPF_PROG_TEST_RUN reports as ingress). Paths whose
//! frame runs the same way every time are timed with `repeat` loops: the reflector, a
//! flow-table hit, a non-service packet. Two paths change state on their first run, so a loop
//! would time something else from its second iteration on: a new flow (the loop's later
//! iterations hit the flow it inserted) and an ARP or NDP reply (the kernel does not restore
//! the frame between iterations, so the reply is what the next iteration sees). Those are timed one run
//! per call, each call with a fresh frame (a new flow each time), and the single-run overhead
//! (the timer and the call around the program) is removed by the same measurement of an empty
//! program: cost = median(single run) - median(single run of the empty program) + the empty
//! program's loop cost. The flow-table hit is also measured this way as a check of the method.
//!
//! Beside drlb's new flow, the floors (`floors`): the same single runs of programs that only
//! insert the frame's flow into one kind of map each, sized like drlb's flow table.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use lb_common::{
    DEFAULT_INTERFACE_SLOTS, MAX_SERVICES, NO_VLAN, PASS_PROGRAM_NAME, PROGRAM_NAME,
    VIP_FLAG_ACTIVE, Vip,
    bench::{REFLECTOR_PROGRAM, backend_mac},
};
use lb_userspace::{
    config::Config,
    dataplane::Dataplane,
    dataplane::loader::{self, BENCH_OBJECT, MapSizes, PASS_OBJECT},
    director::{Controller, map_sizes},
    net::netlink::InterfaceInfo,
};

use super::{
    BACKENDS, DIRECTOR_IF, DIRECTOR_IP, DIRECTOR_MAC, DIRECTOR_PREFIX_LEN, GENERATOR_MAC, Protocol,
    VIP,
    floors::{self, Floor, FloorProgram, phase_runs},
    frames::{Stream, frame},
    mac_text,
    topology::drlb_config,
};
use crate::{
    ndp_frames::NdpFrame,
    packet::{Arp, CLIENT_IPV6, Ipv6Flow, Ipv6Frame, VIP_IPV6},
};

/// The ingress ifindex BPF_PROG_TEST_RUN reports without `ctx_in`: loopback.
const TEST_RUN_IFINDEX: u32 = 1;
/// XDP actions (include/uapi/linux/bpf.h).
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
/// A UDP port on the director's own address that no service uses.
const NON_SERVICE_PORT: u16 = 9999;
/// The flows of the single-run measurements start here, clear of the loops' flow 0.
const FIRST_SINGLE_RUN_FLOW: u32 = 1_000;
/// The generator's IPv6 address, soliciting the IPv6 VIP.
const GENERATOR_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0x1);
/// The IPv6 hit path's program: one service, a small table, every backend the director's MAC
/// (as in `cost_config`, so every iteration of the loop is a hit).
const IPV6_SERVICE_ID: u32 = 0;
const IPV6_TABLE_SIZE: u32 = 251;
const IPV6_CLIENT_PORT: u16 = 40_000;
/// Map sizes of the program instance that answers the NS: as small as a program test's.
const NDP_INSTANCE_SIZES: MapSizes = MapSizes {
    maglev_entries: 1024,
    flow_table_size: 1024,
    ipv6_flow_table_size: 1024,
    interface_slots: DEFAULT_INTERFACE_SLOTS,
    services: MAX_SERVICES,
};

/// How a cost was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Average of a `repeat` loop.
    Loop,
    /// Median of single runs minus the empty program's single-run overhead.
    SingleRuns,
}

/// Which path a cost is of (the report finds its rows by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The trivial reflector: the baseline of the ratios.
    Reflector,
    Hit,
    NewFlow,
    /// drlb's new flow measured in the floors' phases, beside them.
    NewFlowBesideFloors,
    /// A floor of the new flow: the map work alone, in a map of this kind and size.
    Floor(Floor, u32),
    ArpReply,
    NdpAdvertisement,
    Ipv6Hit,
    NonService,
    /// The flow-table hit by the single-run method (the method's check).
    HitSingleRuns,
}

#[derive(Clone, Debug)]
pub struct Cost {
    pub path: Path,
    pub what: String,
    pub action: &'static str,
    pub ns: f64,
    pub method: Method,
    /// Iterations of the loop, or single runs whose median it is.
    pub runs: u32,
}

/// How many iterations each measurement gets.
#[derive(Clone, Copy, Debug)]
pub struct CostParams {
    pub loop_repeat: u32,
    pub single_runs: u32,
    pub flow_table_size: u32,
}

/// Every cost, the reflector first. Also returns the check of the single-run method: the
/// flow-table hit measured that way.
#[must_use]
pub fn measure(params: CostParams) -> (Vec<Cost>, Cost) {
    assert!(
        params.single_runs as usize >= Floor::ALL.len() + floors::CACHE_RESIDENT_KINDS.len(),
        "at least one single run per floor"
    );
    let mut reflector = load_bench(BENCH_OBJECT, REFLECTOR_PROGRAM);
    let mut empty = load_bench(PASS_OBJECT, PASS_PROGRAM_NAME);
    let config = Config::parse(&cost_config(params.flow_table_size)).expect("the bench config");
    let mut drlb = loader::load(map_sizes(&config)).expect("loading drlb");
    let interface = InterfaceInfo {
        name: DIRECTOR_IF.to_owned(),
        ifindex: TEST_RUN_IFINDEX,
        mac: DIRECTOR_MAC,
        ipv4: vec![(DIRECTOR_IP, DIRECTOR_PREFIX_LEN)],
        // The bench config's IPv6 services reach their backends here.
        ipv6: vec![(super::DIRECTOR_IP6, super::DIRECTOR_PREFIX_LEN6)],
        kind: None,
        veth_peer: None,
        vlan: None,
    };
    let dataplane = Dataplane::take_from(&mut drlb).expect("drlb's maps");
    let mut director = Controller::new(&config, vec![interface], dataplane).expect("the director");
    director.apply(config).expect("the bench config applies");

    let tcp = stream(Protocol::Tcp, VIP, Protocol::Tcp.port());
    let udp = stream(Protocol::Udp, VIP, Protocol::Udp.port());
    let non_service = stream(Protocol::Udp, DIRECTOR_IP, NON_SERVICE_PORT);
    let arp = Arp::request(GENERATOR_MAC, Ipv4Addr::new(198, 19, 0, 1), VIP).build();
    // The config has no IPv6 VIP: the NS is answered by a second instance of the program whose
    // maps hold the interface and an active IPv6 VIP (the same code, so the same cost). Its
    // maps are small: the NS path reads none of the sized ones, and a guest of vm-test has no
    // memory for a second full-sized flow table.
    let mut drlb_ndp = loader::load(NDP_INSTANCE_SIZES).expect("loading drlb for NDP");
    let mut ndp_maps = Dataplane::take_from(&mut drlb_ndp).expect("drlb's maps");
    ndp_maps
        .set_interface(TEST_RUN_IFINDEX, NO_VLAN, DIRECTOR_MAC)
        .expect("the test-run interface");
    ndp_maps
        .set_vip(
            VIP_IPV6.octets(),
            Vip {
                flags: VIP_FLAG_ACTIVE,
            },
        )
        .expect("the IPv6 VIP");
    let ns = NdpFrame::solicitation(GENERATOR_MAC, GENERATOR_IPV6, VIP_IPV6).build();
    let repeat = params.loop_repeat;

    let empty_loop = run_loop(
        xdp(&mut empty, PASS_PROGRAM_NAME),
        &frame(&udp, 0),
        repeat,
        XDP_PASS,
    );
    let reflector_loop = run_loop(
        xdp(&mut reflector, REFLECTOR_PROGRAM),
        &frame(&udp, 0),
        repeat,
        XDP_TX,
    );
    let program = xdp(&mut drlb, PROGRAM_NAME);
    let hit_loop = run_loop(program, &frame(&tcp, 0), repeat, XDP_TX);
    let pass_loop = run_loop(program, &frame(&non_service, 0), repeat, XDP_PASS);
    let ipv6_hit_loop = ipv6_hit_cost(repeat);

    // Single runs, interleaved so that drift hits every series alike.
    let (mut empty_once, mut new_once, mut hit_once, mut arp_once, mut ndp_once) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let empty_frame = frame(&udp, 0);
    for i in 0..params.single_runs {
        let fresh = frame(&tcp, FIRST_SINGLE_RUN_FLOW + i);
        empty_once.push(run_once(
            xdp(&mut empty, PASS_PROGRAM_NAME),
            &empty_frame,
            XDP_PASS,
        ));
        let program = xdp(&mut drlb, PROGRAM_NAME);
        new_once.push(run_once(program, &fresh, XDP_TX));
        hit_once.push(run_once(program, &fresh, XDP_TX));
        arp_once.push(run_once(program, &arp, XDP_TX));
        ndp_once.push(run_once(xdp(&mut drlb_ndp, PROGRAM_NAME), &ns, XDP_TX));
    }
    let overhead = median(&mut empty_once) - empty_loop;
    let single = |runs: &mut Vec<f64>| median(runs) - overhead;

    // The floors, after drlb's series: interleaving a floor's run with them raised drlb's new
    // flow by about 200 ns (the floor's run leaves the caches and TLB colder for drlb's).
    // One phase per floor, with that floor's program (and its flow-table-sized map) loaded for
    // the phase only. Each phase interleaves the empty program (its own overhead), drlb's new
    // flow and the floor, each floor run on the frame of drlb's new flow just before it (a flow
    // new to both maps): drlb's new flow beside the floors is measured as they are.
    let first_floor_flow = FIRST_SINGLE_RUN_FLOW + params.single_runs;
    let phases = floors::phases(floors::table_size_here(params.flow_table_size));
    let mut floor_once: Vec<(Floor, u32, f64, u32)> = Vec::new();
    let mut new_beside_floors = Vec::new();
    for (phase, &(floor, table)) in phases.iter().enumerate() {
        let mut floor_program = FloorProgram::load(floor, table);
        let (mut empty_runs, mut runs) = (Vec::new(), Vec::new());
        for i in phase_runs(params.single_runs, phase, phases.len()) {
            let fresh = frame(&tcp, first_floor_flow + i);
            empty_runs.push(run_once(
                xdp(&mut empty, PASS_PROGRAM_NAME),
                &empty_frame,
                XDP_PASS,
            ));
            new_beside_floors.push(run_once(xdp(&mut drlb, PROGRAM_NAME), &fresh, XDP_TX));
            let (action, ns) = floor_program.run(&fresh);
            assert_eq!(
                action,
                lb_common::bench::floor::FLOOR_INSERTED,
                "{floor:?}: the frame's flow was not inserted as a new one"
            );
            runs.push(ns);
        }
        let phase_overhead = median(&mut empty_runs) - empty_loop;
        let count = u32::try_from(runs.len()).unwrap_or(u32::MAX);
        floor_once.push((floor, table, median(&mut runs) - phase_overhead, count));
        // Each of drlb's runs less its own phase's overhead.
        let first = new_beside_floors.len() - runs.len();
        for ns in &mut new_beside_floors[first..] {
            *ns -= phase_overhead;
        }
        // Dropped before the next floor's map is made (a guest's memory holds one).
        drop(floor_program);
    }

    let row = |path: Path, what: &str, action, ns, method| Cost {
        path,
        what: what.to_owned(),
        action,
        ns,
        method,
        runs: match method {
            Method::Loop => repeat,
            Method::SingleRuns => params.single_runs,
        },
    };
    let mut costs = vec![
        row(
            Path::Reflector,
            "trivial reflector (limit)",
            "XDP_TX",
            reflector_loop,
            Method::Loop,
        ),
        row(
            Path::Hit,
            "drlb: flow-table hit",
            "XDP_TX",
            hit_loop,
            Method::Loop,
        ),
        row(
            Path::NewFlow,
            "drlb: new flow (Maglev + flow insert)",
            "XDP_TX",
            single(&mut new_once),
            Method::SingleRuns,
        ),
    ];
    // Right after drlb's new flow, which they are the floors of.
    costs.push(Cost {
        path: Path::NewFlowBesideFloors,
        what: "drlb: new flow, interleaved with the floors' runs".to_owned(),
        action: "XDP_TX",
        ns: median(&mut new_beside_floors),
        method: Method::SingleRuns,
        runs: u32::try_from(new_beside_floors.len()).unwrap_or(u32::MAX),
    });
    for (floor, table, ns, runs) in floor_once {
        costs.push(Cost {
            path: Path::Floor(floor, table),
            what: floor.what(table),
            action: "XDP_TX",
            ns,
            method: Method::SingleRuns,
            runs,
        });
    }
    costs.extend([
        row(
            Path::ArpReply,
            "drlb: ARP reply for the VIP",
            "XDP_TX",
            single(&mut arp_once),
            Method::SingleRuns,
        ),
        row(
            Path::NdpAdvertisement,
            "drlb: NDP advertisement for the IPv6 VIP",
            "XDP_TX",
            single(&mut ndp_once),
            Method::SingleRuns,
        ),
        row(
            Path::Ipv6Hit,
            "drlb: IPv6 flow-table hit",
            "XDP_TX",
            ipv6_hit_loop,
            Method::Loop,
        ),
        row(
            Path::NonService,
            "drlb: non-service packet",
            "XDP_PASS",
            pass_loop,
            Method::Loop,
        ),
    ]);
    let check = row(
        Path::HitSingleRuns,
        "drlb: flow-table hit (single runs, method check)",
        "XDP_TX",
        single(&mut hit_once),
        Method::SingleRuns,
    );
    (costs, check)
}

/// The IPv6 flow-table hit, on a program of its own whose maps are written directly (one IPv6
/// TCP service, its backends at the director's MAC): a `repeat` loop of a 64-byte-payload frame.
fn ipv6_hit_cost(repeat: u32) -> f64 {
    use lb_common::{Backend, MAX_SERVICES, ServiceKey, TABLE_BANKS, VIP_FLAG_ACTIVE, Vip};
    use lb_userspace::dataplane::{TableLayout, loader::MapSizes};

    // Small flow tables, as the NS instance's: a guest's memory holds the main instance too.
    let sizes = MapSizes {
        maglev_entries: MAX_SERVICES * TABLE_BANKS * IPV6_TABLE_SIZE,
        flow_table_size: NDP_INSTANCE_SIZES.flow_table_size,
        ipv6_flow_table_size: NDP_INSTANCE_SIZES.ipv6_flow_table_size,
        ..MapSizes::default()
    };
    let mut ebpf = loader::load(sizes).expect("loading drlb for the IPv6 hit");
    let mut dataplane = Dataplane::take_from(&mut ebpf).expect("drlb's maps");
    dataplane
        .set_interface(TEST_RUN_IFINDEX, lb_common::NO_VLAN, DIRECTOR_MAC)
        .expect("the test-run interface");
    let active = Vip {
        flags: VIP_FLAG_ACTIVE,
    };
    dataplane
        .set_vip(VIP_IPV6.octets(), active)
        .expect("the IPv6 VIP");
    let backend = Backend {
        dst_mac: DIRECTOR_MAC,
        src_mac: DIRECTOR_MAC,
        ifindex: TEST_RUN_IFINDEX,
        vlan: lb_common::NO_VLAN,
    };
    let ids: Vec<u32> = (0..u32::from(BACKENDS)).collect();
    for &id in &ids {
        dataplane
            .set_backend(IPV6_SERVICE_ID, id, &backend)
            .expect("a backend");
    }
    let key = ServiceKey {
        addr: VIP_IPV6.octets(),
        port_be: Protocol::Tcp.port().to_be(),
        protocol: lb_common::IPPROTO_TCP,
        _pad: 0,
    };
    let layout = TableLayout {
        service_id: IPV6_SERVICE_ID,
        base: 0,
        size: IPV6_TABLE_SIZE,
        flags: 0,
    };
    let table: Vec<u32> = (0..IPV6_TABLE_SIZE)
        .map(|slot| ids[slot as usize % ids.len()])
        .collect();
    dataplane
        .publish_table(&key, layout, &table)
        .expect("the IPv6 service");
    let mut frame = Ipv6Frame::new(Ipv6Flow::tcp(
        CLIENT_IPV6,
        IPV6_CLIENT_PORT,
        VIP_IPV6,
        Protocol::Tcp.port(),
    ));
    frame.src_mac = GENERATOR_MAC;
    frame.dst_mac = DIRECTOR_MAC;
    frame.payload = Vec::new();
    run_loop(xdp(&mut ebpf, PROGRAM_NAME), &frame.build(), repeat, XDP_TX)
}

/// The benchmark's drlb config, with every backend behind the director's own MAC. A repeat
/// loop runs the program again on the frame it rewrote, and drlb forwards only frames sent to
/// its MAC: so the rewritten frame is again one it forwards, and every iteration of the hit
/// loop is a flow-table hit (which MAC a backend has costs nothing).
fn cost_config(flow_table_size: u32) -> String {
    (0..BACKENDS).fold(drlb_config(flow_table_size), |text, n| {
        text.replace(&mac_text(backend_mac(n)), &mac_text(DIRECTOR_MAC))
    })
}

fn stream(protocol: Protocol, daddr: Ipv4Addr, port: u16) -> Stream {
    Stream {
        protocol,
        flows: 1,
        frame_len: 64,
        src_mac: GENERATOR_MAC,
        dst_mac: DIRECTOR_MAC,
        vip: daddr.into(),
        port,
    }
}

/// Loads program `name` of `object`, unattached.
fn load_bench(object: &[u8], name: &str) -> Ebpf {
    let mut ebpf = EbpfLoader::new()
        .load(object)
        .unwrap_or_else(|e| panic!("loading the object of {name}: {e}"));
    xdp(&mut ebpf, name)
        .load()
        .unwrap_or_else(|e| panic!("the kernel refused {name}: {e}"));
    ebpf
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut Xdp {
    ebpf.program_mut(name)
        .unwrap_or_else(|| panic!("the eBPF object has no program {name}"))
        .try_into()
        .unwrap_or_else(|e| panic!("{name} is not an XDP program: {e}"))
}

/// The kernel's average ns per iteration of a `repeat` loop.
fn run_loop(program: &Xdp, frame: &[u8], repeat: u32, expected: u32) -> f64 {
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e}"));
    assert_eq!(result.return_value, expected, "unexpected XDP action");
    result.duration.as_nanos() as f64
}

/// The kernel's time for one run.
fn run_once(program: &Xdp, frame: &[u8], expected: u32) -> f64 {
    run_loop(program, frame, 1, expected)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
