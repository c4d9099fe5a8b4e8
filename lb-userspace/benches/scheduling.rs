//! Benchmarks of backend scheduling (run by `cargo xtask bench`; `cargo bench -p lb-userspace
//! --bench scheduling` directly):
//!
//! 1. Maglev table build time for 65537 and 655373 entries with 10, 100 and 1000 backends,
//!    next to a baseline measured in the same run: filling a table of the same size with
//!    `slot % backends` (the cheapest possible table), so the ratio says what consistency costs.
//! 2. Backend changes per second the daemon's `Controller::apply` achieves (weight changes on a
//!    service of 100 backends: config diff, Maglev rebuild, map writes), against the kernel
//!    with a freshly loaded program. Needs root; skipped, and said so, otherwise.
//!
//! 3. Publishing a whole 655373-entry table whose every entry changes (the map writes and the
//!    grace period of `Dataplane::publish_table`, no Maglev build), next to writing the same
//!    entries into a plain `Vec` (the cost of touching that memory at all).
//!
//! Prints a markdown table. Times are medians of a few runs.

use std::{
    hint::black_box,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use lb_common::{IPPROTO_UDP, ServiceKey, ipv4_mapped};
use lb_userspace::{
    config::Config,
    dataplane::{Dataplane, TableLayout, loader},
    director::{Controller, map_sizes},
    maglev::{WeightedBackend, build_table},
    net::netlink::InterfaceInfo,
};

const TABLE_SIZES: [u32; 2] = [65_537, 655_373];
const BACKEND_COUNTS: [u32; 3] = [10, 100, 1000];
const RUNS: usize = 5;
const CHANGE_BACKENDS: u32 = 100;
const CHANGES: u32 = 200;

fn main() {
    println!("## Maglev table build (median of {RUNS} runs)\n");
    println!("| table size | backends | Maglev build | baseline (slot % n) | ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for size in TABLE_SIZES {
        for n in BACKEND_COUNTS {
            let backends = backends(n);
            let maglev = median(|| {
                black_box(build_table(black_box(&backends), size));
            });
            let baseline = median(|| {
                black_box((0..size).map(|slot| slot % n).collect::<Vec<u32>>());
            });
            println!(
                "| {size} | {n} | {} | {} | {:.1}x |",
                ms(maglev),
                ms(baseline),
                maglev.as_secs_f64() / baseline.as_secs_f64()
            );
        }
    }
    println!();
    changes_per_second();
}

fn backends(n: u32) -> Vec<WeightedBackend> {
    (0..n)
        .map(|i| WeightedBackend {
            address: Ipv4Addr::from(0xc612_0000 + 10 + i),
            weight: 1 + i % 3,
        })
        .collect()
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Weight changes applied through `Controller::apply`, against real maps.
fn changes_per_second() {
    println!("## Backend changes applied by the daemon\n");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: loading the XDP program needs root (run `cargo xtask bench` as root)\n");
        return;
    }
    let mut text = String::from(
        "[director]\ninterface = \"bench0\"\n[[service]]\nvip = \"198.18.0.100\"\nport = 80\nprotocol = \"udp\"\n",
    );
    for i in 0..CHANGE_BACKENDS {
        let mac = format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256);
        text += &format!(
            "[[service.backend]]\naddress = \"198.18.{}.{}\"\nmac = \"{mac}\"\n",
            1 + i / 250,
            1 + i % 250
        );
    }
    let config = Config::parse(&text).expect("bench config");
    let interface = InterfaceInfo {
        name: "bench0".into(),
        ifindex: 1,
        mac: [2, 0, 0, 0, 0, 1],
        ipv4: vec![(Ipv4Addr::new(198, 18, 0, 1), 15)],
        kind: None,
        veth_peer: None,
        vlan: None,
    };
    let mut ebpf = loader::load(map_sizes(&config)).expect("loading the XDP program");
    let dataplane = Dataplane::take_from(&mut ebpf).expect("maps");
    let mut director = Controller::new(&config, vec![interface], dataplane).expect("director");
    director.apply(config.clone()).expect("initial config");
    // Baseline in the same run: re-applying an unchanged config (validation and diff only).
    let start = Instant::now();
    for _ in 0..CHANGES {
        director.apply(config.clone()).expect("unchanged config");
    }
    let unchanged = start.elapsed() / CHANGES;
    let start = Instant::now();
    for i in 0..CHANGES {
        let mut changed = config.clone();
        let backend = &mut changed.services[0].backends[(i % CHANGE_BACKENDS) as usize];
        backend.weight = 1 + (i / CHANGE_BACKENDS + 1) % 4;
        director.apply(changed).expect("weight change");
    }
    let per_change = start.elapsed() / CHANGES;
    println!("| what | time per apply | per second |");
    println!("|---|---:|---:|");
    println!(
        "| unchanged config (baseline: validate + diff) | {} | {:.0} |",
        ms(unchanged),
        1.0 / unchanged.as_secs_f64()
    );
    println!(
        "| one weight change, {CHANGE_BACKENDS} backends, table 65537 | {} | {:.0} |",
        ms(per_change),
        1.0 / per_change.as_secs_f64()
    );
    println!(
        "\nratio change/baseline: {:.1}x\n",
        per_change.as_secs_f64() / unchanged.as_secs_f64()
    );
    drop(director);
    full_table_publish();
}

/// A whole 655373-entry table written through `Dataplane::publish_table`, every entry changed.
fn full_table_publish() {
    const SIZE: u32 = 655_373;
    let text = format!(
        "[director]\ninterface = \"bench0\"\n[[service]]\nvip = \"198.18.0.100\"\nport = 80\n\
         protocol = \"udp\"\ntable_size = {SIZE}\n"
    );
    let config = Config::parse(&text).expect("bench config");
    let mut ebpf = loader::load(map_sizes(&config)).expect("loading the XDP program");
    let mut dataplane = Dataplane::take_from(&mut ebpf).expect("maps");
    let key = ServiceKey {
        addr: ipv4_mapped([198, 18, 0, 100]),
        port_be: 80_u16.to_be(),
        protocol: IPPROTO_UDP,
        _pad: 0,
    };
    let layout = TableLayout {
        service_id: 0,
        base: 0,
        size: SIZE,
        flags: 0,
    };
    // Two tables that differ in every entry, published in turn.
    let tables: [Vec<u32>; 2] = [
        (0..SIZE).map(|i| i % 100).collect(),
        (0..SIZE).map(|i| (i + 1) % 100).collect(),
    ];
    let mut round = 0;
    let publish = median(|| {
        dataplane
            .publish_table(&key, layout, &tables[round % 2])
            .expect("publishing");
        round += 1;
    });
    let mut plain = vec![0_u32; SIZE as usize];
    let mut round = 0;
    let baseline = median(|| {
        plain.copy_from_slice(&tables[round % 2]);
        black_box(&plain);
        round += 1;
    });
    println!("## A whole table published\n");
    println!("| what | time | baseline (copy into a Vec) | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| {SIZE}-entry table, every entry changed | {} | {} | {:.1}x |\n",
        ms(publish),
        ms(baseline),
        publish.as_secs_f64() / baseline.as_secs_f64()
    );
}
