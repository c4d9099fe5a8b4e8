//! Benchmarks of backend scheduling (run by `cargo xtask bench`; `cargo bench -p lb-userspace
//! --bench scheduling` directly):
//!
//! 1. Maglev table build time for 65537 and 655373 entries with 10, 100 and 1000 backends,
//!    next to a baseline measured in the same run: filling a table of the same size with
//!    `slot % backends` (the cheapest possible table), so the ratio says what consistency costs.
//! 2. Backend changes per second the daemon's `Controller::apply` achieves (weight changes on a
//!    service of 100 backends: config diff, Maglev rebuild, map writes), against the kernel
//!    with a freshly loaded program. Needs root; skipped, and said so, otherwise. Two ways,
//!    in the same run: each change published by `apply` itself (how drlb worked before, the
//!    baseline), and the daemon's way: `Change::edit` + `apply` with publishes deferred, the
//!    table builds and grace periods on `publish::Builder`'s thread and the results published
//!    by `Controller::finish` as they come, as `drlb run`'s loop does. "accepted/s" counts
//!    changes taken (model and `BACKENDS` written); "published/s" counts them until the last
//!    one is live in the data plane (its table published, nothing left pending).
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
    director::{Change, Controller, map_sizes, publish},
    maglev::{WeightedBackend, build_table},
    net::netlink::InterfaceInfo,
};

const TABLE_SIZES: [u32; 2] = [65_537, 655_373];
const BACKEND_COUNTS: [u32; 3] = [10, 100, 1000];
const RUNS: usize = 5;
const CHANGE_BACKENDS: u32 = 100;
const CHANGES: u32 = 200;
/// Weight changes sent one by one the daemon's way (deferred publishes).
const DEFERRED_CHANGES: u32 = 10_000;

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
            address: Ipv4Addr::from(0xc612_0000 + 10 + i).into(),
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
        ipv6: Vec::new(),
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
    let deferred = deferred_changes(&mut director, &config);
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
        "| daemon's way, {DEFERRED_CHANGES} changes: accepted | {} | {:.0} |",
        ms(deferred.accepted / DEFERRED_CHANGES),
        f64::from(DEFERRED_CHANGES) / deferred.accepted.as_secs_f64()
    );
    println!(
        "| daemon's way, {DEFERRED_CHANGES} changes: published (until the last is live) | {} | {:.0} |",
        ms(deferred.published / DEFERRED_CHANGES),
        f64::from(DEFERRED_CHANGES) / deferred.published.as_secs_f64()
    );
    println!(
        "\nratio change/baseline: {:.1}x; the daemon's way published {DEFERRED_CHANGES} changes \
         in {} tables, {:.1}x the rate of one publish per change\n",
        per_change.as_secs_f64() / unchanged.as_secs_f64(),
        deferred.tables,
        per_change.as_secs_f64() * f64::from(DEFERRED_CHANGES) / deferred.published.as_secs_f64()
    );
    println!(
        "time from a change taken to it live: median {}, longest {}\n",
        ms(deferred.latency_median),
        ms(deferred.latency_max)
    );
    drop(director);
    full_table_publish();
}

/// What [`deferred_changes`] measured.
struct Deferred {
    accepted: Duration,
    published: Duration,
    tables: u64,
    /// From a change taken to the change live: median and longest.
    latency_median: Duration,
    latency_max: Duration,
}

/// `DEFERRED_CHANGES` weight changes, one request at a time, as the daemon takes them from
/// the control socket (`Change::edit` of the config in force, then `apply`), with publishes
/// deferred and run as `drlb run`'s loop runs them; timed until every change is live.
fn deferred_changes(director: &mut Controller, config: &Config) -> Deferred {
    let service = config.services[0].id();
    let tables_before: u64 = director.services().map(|(_, s)| s.publishes.count).sum();
    director.defer_publishes();
    let mut builder = publish::Builder::spawn().expect("table builder");
    let mut out = 0_usize;
    // Per change: when it was taken and its mark (`Controller::is_live`); `latencies` gets
    // each change's time until live, in order.
    let mut taken: Vec<(Instant, u64)> = Vec::with_capacity(DEFERRED_CHANGES as usize);
    let mut latencies: Vec<Duration> = Vec::with_capacity(DEFERRED_CHANGES as usize);
    let note_live =
        |director: &Controller, taken: &[(Instant, u64)], latencies: &mut Vec<Duration>| {
            let now = Instant::now();
            while let Some(&(at, mark)) = taken.get(latencies.len()) {
                if !director.is_live(mark) {
                    break;
                }
                latencies.push(now - at);
            }
        };
    let pump = |director: &mut Controller,
                builder: &mut publish::Builder,
                out: &mut usize,
                taken: &[(Instant, u64)],
                latencies: &mut Vec<Duration>| {
        while let Some(built) = builder.try_next() {
            *out -= 1;
            director.finish(built).expect("publishing");
            note_live(director, taken, latencies);
        }
        for job in director.jobs().expect("jobs") {
            *out += 1;
            builder.submit(job).expect("submitting");
        }
    };
    let start = Instant::now();
    for i in 0..DEFERRED_CHANGES {
        let backend = &config.services[0].backends[(i % CHANGE_BACKENDS) as usize];
        let change = Change::BackendSetWeight {
            service,
            address: backend.address,
            weight: 1 + (i / CHANGE_BACKENDS + 2) % 4,
        };
        let new = change.edit(director.config()).expect("editing");
        director.apply(new).expect("weight change");
        taken.push((Instant::now(), director.change_mark()));
        pump(director, &mut builder, &mut out, &taken, &mut latencies);
    }
    let accepted = start.elapsed();
    while out > 0 || director.unpublished() > 0 {
        if out > 0 {
            let built = builder.wait_next().expect("the builder runs");
            out -= 1;
            director.finish(built).expect("publishing");
            note_live(director, &taken, &mut latencies);
        }
        pump(director, &mut builder, &mut out, &taken, &mut latencies);
    }
    let published = start.elapsed();
    note_live(director, &taken, &mut latencies);
    assert_eq!(latencies.len(), taken.len(), "every change is live");
    let tables_after: u64 = director.services().map(|(_, s)| s.publishes.count).sum();
    latencies.sort();
    Deferred {
        accepted,
        published,
        tables: tables_after - tables_before,
        latency_median: latencies[latencies.len() / 2],
        latency_max: latencies[latencies.len() - 1],
    }
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
