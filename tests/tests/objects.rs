//! What loading each XDP object allocates: drlb's maps sized from its config, and the veth
//! peer's pass program with no maps at all (it once loaded the whole object: about 90 MB of
//! flow table and 33 MB of Maglev table per veth peer).

use aya::{EbpfLoader, maps::Map};
use lb_common::{
    MAX_BACKENDS_PER_SERVICE, SPARE_SERVICES,
    bench::floor::{DECLARED_ENTRIES, FLOOR_FOUND, FLOOR_INSERTED},
    map_names,
};
use lb_userspace::{
    config::Config,
    dataplane::loader::{self, BENCH_OBJECT, PASS_OBJECT},
    director::map_sizes,
};
use tests::bench::{
    DIRECTOR_MAC, GENERATOR_MAC, Protocol, VIP,
    floors::{Floor, FloorProgram},
    frames::{Stream, frame},
};

/// A flow table for the floor programs' test: small, and not a power of two (the
/// direct-mapped array gets the power of two below it).
const FLOOR_TEST_FLOWS: u32 = 3000;

const TWO_SERVICES: &str = r#"
[director]
interface = "lo"
flow_table_size = 4096

[[service]]
vip = "198.18.0.100"
port = 80
protocol = "tcp"
table_size = 251

[[service.backend]]
address = "198.18.0.10"

[[service]]
vip = "198.18.0.100"
port = 53
protocol = "udp"
table_size = 251

[[service.backend]]
address = "198.18.0.10"
"#;

/// Entries of a map of a loaded object.
fn max_entries(map: &Map) -> u32 {
    let data = match map {
        Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuLruHashMap(d) => d,
        other => panic!("unexpected map type {other:?}"),
    };
    data.info().expect("map info").max_entries()
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn the_pass_program_object_has_no_maps() {
    tests::require_root();
    let ebpf = EbpfLoader::new()
        .load(PASS_OBJECT)
        .expect("loading the pass object");
    let maps: Vec<&str> = ebpf.maps().map(|(name, _)| name).collect();
    assert!(maps.is_empty(), "the pass object creates maps: {maps:?}");
    let bench = EbpfLoader::new()
        .load(BENCH_OBJECT)
        .expect("loading the bench object");
    let bench_maps: Vec<&str> = bench.maps().map(|(name, _)| name).collect();
    for drlbs in [
        map_names::FLOWS,
        map_names::FLOWS6,
        map_names::FRAGMENTS6,
        map_names::MAGLEV,
        map_names::BACKENDS,
    ] {
        assert!(
            !bench_maps.contains(&drlbs),
            "the bench object creates drlb's map {drlbs}: {bench_maps:?}"
        );
    }
}

/// The bench object is loaded for the generator and the sink too: its floor maps are small
/// there. Each floor program passes the verifier, remembers a new flow once and finds it again
/// (so the benchmark's single runs, one per new flow, time an insert each).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn the_floor_programs_insert_a_new_flow_once_into_small_declared_maps() {
    tests::require_root();
    let bench = EbpfLoader::new()
        .load(BENCH_OBJECT)
        .expect("loading the bench object");
    for floor in Floor::ALL {
        let map = bench
            .map(floor.map())
            .unwrap_or_else(|| panic!("the bench object has no map {}", floor.map()));
        assert_eq!(
            max_entries(map),
            DECLARED_ENTRIES,
            "{floor:?}'s declared size"
        );
    }
    drop(bench);
    let stream = Stream {
        protocol: Protocol::Tcp,
        flows: 2,
        frame_len: 64,
        src_mac: GENERATOR_MAC,
        dst_mac: DIRECTOR_MAC,
        vip: VIP.into(),
        port: Protocol::Tcp.port(),
    };
    for floor in Floor::ALL {
        let mut program = FloorProgram::load(floor, FLOOR_TEST_FLOWS);
        let (first, second) = (frame(&stream, 0), frame(&stream, 1));
        assert_eq!(
            program.run(&first).0,
            FLOOR_INSERTED,
            "{floor:?}: a new flow"
        );
        assert_eq!(
            program.run(&first).0,
            FLOOR_FOUND,
            "{floor:?}: the same flow"
        );
        assert_eq!(
            program.run(&second).0,
            FLOOR_INSERTED,
            "{floor:?}: another flow"
        );
    }
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn drlbs_maps_are_sized_from_the_config() {
    tests::require_root();
    let config = Config::parse(TWO_SERVICES).expect("the test config");
    let sizes = map_sizes(&config);
    let ebpf = loader::load(sizes).expect("loading drlb's object");
    let services = 2 + SPARE_SERVICES;
    for (name, expected) in [
        (map_names::SERVICE_STATES, services),
        (map_names::SERVICE_COUNTERS, services),
        (map_names::BACKENDS, services * MAX_BACKENDS_PER_SERVICE),
        (
            map_names::BACKEND_COUNTERS,
            services * MAX_BACKENDS_PER_SERVICE,
        ),
        (map_names::VIP_STATES, services),
    ] {
        let map = ebpf
            .map(name)
            .unwrap_or_else(|| panic!("drlb's object has no map {name}"));
        assert_eq!(max_entries(map), expected, "entries of {name}");
    }
    let (online, possible) = loader::cpus().expect("the host's CPUs");
    let flows = max_entries(ebpf.map(map_names::FLOWS).expect("the flow table"));
    assert!(
        loader::flow_capacity(flows, online, possible) >= 4096,
        "FLOWS holds the configured 4096 flows on the {online} online CPUs ({flows} entries, {possible} possible CPUs)"
    );
    // No IPv6 service: the IPv6 flow table is the smallest; with one, as large as IPv4's.
    let flows6 = max_entries(ebpf.map(map_names::FLOWS6).expect("the IPv6 flow table"));
    assert!(
        flows6 < flows,
        "an IPv4-only config gets a small FLOWS6 ({flows6} entries, FLOWS {flows})"
    );
    let dual = Config::parse(&format!("{TWO_SERVICES}{IPV6_SERVICE}")).expect("the dual config");
    let ebpf = loader::load(map_sizes(&dual)).expect("loading drlb's object");
    let flows6 = max_entries(ebpf.map(map_names::FLOWS6).expect("the IPv6 flow table"));
    assert!(
        loader::flow_capacity(flows6, online, possible) >= 4096,
        "FLOWS6 holds the configured 4096 flows on the {online} online CPUs ({flows6} entries, {possible} possible CPUs)"
    );
}

/// An IPv6 service, to add to `TWO_SERVICES`.
const IPV6_SERVICE: &str = "
[[service]]
vip = \"2001:2::100\"
port = 80
protocol = \"tcp\"
[[service.backend]]
address = \"2001:2::11\"
";
