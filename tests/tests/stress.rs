//! Maps changed under the program's feet. One thread, on one CPU, rewrites two services'
//! backends (their MACs), tables and standby flags as fast as it can, while this thread, on the
//! other CPU, runs frames of both services through BPF_PROG_TEST_RUN: no frame may ever leave
//! with a MAC that is not a backend of its own service, or with another source MAC than ours.
//!
//! `STRESS_FRAMES` sets the number of frames (default [`DEFAULT_FRAMES`]).
//!
//! On this host (preempt=none) the old data plane, whose program read hash-map values through
//! pointers while their elements were recycled by updates, passes too: its window is a few
//! instructions. `cargo xtask vm-test` also runs this test in QEMU guests, where the reading
//! vCPU stalls whenever the host schedules its thread out; there the old data plane (b4c1029,
//! with this file) sent frames to the other service's backends within 35,000 frames on 6.1 and
//! 6.12, and today's passes a million.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use aya::programs::{TestRun as _, TestRunOptions};
use lb_common::{Backend, SERVICE_FLAG_STANDBY, ServiceKey, TABLE_BANKS, ipv4_mapped};
use lb_userspace::dataplane::{
    Dataplane, TableLayout,
    loader::{self, MapSizes},
};
use tests::bench::generator::pin_to_cpu;
use tests::packet::{CLIENT_IP, DIRECTOR_MAC, Ipv4Flow, Ipv4Frame, Transport, VIP};

const DEFAULT_FRAMES: u64 = 1_000_000;
const TEST_RUN_IFINDEX: u32 = 1;
const XDP_TX: u32 = 3;
const TABLE_SIZE: u32 = 251;
/// Backend ids each service uses.
const BACKENDS: u32 = 4;
/// MACs each service's backends take turns with: the first byte after 02 names the service.
const MAC_POOL: u8 = 8;
/// Client ports per service: flows are remembered, then rescheduled as backends change.
const FLOWS_PER_SERVICE: u16 = 4096;
const FIRST_CLIENT_PORT: u16 = 10_000;
/// Every this many rounds a service turns standby for one round; every this many a backend
/// leaves for one round.
const STANDBY_EVERY: u64 = 3;
const REMOVE_EVERY: u64 = 5;
/// The changes must have kept coming while the frames ran: at least this many rounds.
const MIN_ROUNDS: u64 = 20;
const RUNNER_CPU: usize = 0;
const FLIPPER_CPU: usize = 1;

struct StressService {
    id: u32,
    port: u16,
    /// 0x0a or 0x0b: the second byte of its backends' MACs.
    tag: u8,
}

const SERVICES: [StressService; 2] = [
    StressService {
        id: 0,
        port: 7000,
        tag: 0x0a,
    },
    StressService {
        id: 1,
        port: 7001,
        tag: 0x0b,
    },
];

impl StressService {
    fn key(&self) -> ServiceKey {
        ServiceKey {
            addr: ipv4_mapped(VIP.octets()),
            port_be: self.port.to_be(),
            protocol: Transport::Udp.protocol(),
            _pad: 0,
        }
    }

    fn layout(&self, flags: u32) -> TableLayout {
        TableLayout {
            service_id: self.id,
            base: self.id * TABLE_BANKS * TABLE_SIZE,
            size: TABLE_SIZE,
            flags,
        }
    }

    fn mac(&self, n: u8) -> [u8; 6] {
        [0x02, self.tag, 0, 0, 0, n % MAC_POOL]
    }

    fn owns(&self, mac: [u8; 6]) -> bool {
        mac[..5] == [0x02, self.tag, 0, 0, 0] && mac[5] < MAC_POOL
    }

    /// Round `round` of changes: new MACs, a new table over a subset, sometimes standby or a
    /// backend gone.
    fn change(&self, dataplane: &mut Dataplane, round: u64) {
        let turn = u8::try_from(round % u64::from(MAC_POOL)).expect("small");
        for backend in 0..BACKENDS {
            let n = u8::try_from(backend).expect("small") + turn;
            let entry = Backend {
                dst_mac: self.mac(n),
                src_mac: DIRECTOR_MAC,
                ifindex: TEST_RUN_IFINDEX,
                vlan: lb_common::NO_VLAN,
            };
            dataplane
                .set_backend(self.id, backend, &entry)
                .expect("writing a backend");
        }
        let first = u32::try_from(round % u64::from(BACKENDS)).expect("small");
        let table: Vec<u32> = (0..TABLE_SIZE)
            .map(|slot| (first + slot % 2) % BACKENDS)
            .collect();
        let standby = round.is_multiple_of(STANDBY_EVERY);
        let flags = if standby {
            u32::from(SERVICE_FLAG_STANDBY)
        } else {
            0
        };
        dataplane
            .publish_table(&self.key(), self.layout(flags), &table)
            .expect("publishing a table");
        if round.is_multiple_of(REMOVE_EVERY) {
            dataplane
                .remove_backend(self.id, (first + 1) % BACKENDS)
                .expect("removing a backend");
        }
    }
}

fn frames_to_run() -> u64 {
    std::env::var("STRESS_FRAMES")
        .ok()
        .map_or(DEFAULT_FRAMES, |v| {
            v.parse().expect("STRESS_FRAMES is a number")
        })
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn no_frame_reaches_another_services_backend_while_the_maps_change() {
    tests::require_root();
    let (mut ebpf, mut dataplane) = tests::program::load_with_vip(
        MapSizes {
            maglev_entries: 4 * TABLE_BANKS * TABLE_SIZE,
            flow_table_size: 65_536,
            ..MapSizes::default()
        },
        VIP,
    );
    for service in &SERVICES {
        service.change(&mut dataplane, 1);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let flipper = {
        let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
        thread::spawn(move || {
            pin_to_cpu(FLIPPER_CPU);
            let mut round = 2;
            while !stop.load(Ordering::Relaxed) {
                for service in &SERVICES {
                    service.change(&mut dataplane, round);
                }
                rounds.fetch_add(1, Ordering::Relaxed);
                round += 1;
            }
        })
    };

    pin_to_cpu(RUNNER_CPU);
    let frames: Vec<Vec<Vec<u8>>> = SERVICES
        .iter()
        .map(|s| {
            (0..FLOWS_PER_SERVICE)
                .map(|i| {
                    Ipv4Frame::new(Ipv4Flow::udp(CLIENT_IP, FIRST_CLIENT_PORT + i, VIP, s.port))
                        .build()
                })
                .collect()
        })
        .collect();
    let program = loader::program(&mut ebpf).expect("the XDP program");
    let total = frames_to_run();
    let mut output = vec![0u8; 512];
    let mut forwarded = [0u64; 2];
    for i in 0..total {
        let which = usize::try_from(i % 2).expect("small");
        let flow = usize::try_from((i / 2) % u64::from(FLOWS_PER_SERVICE)).expect("small");
        let frame = &frames[which][flow];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut output),
                ..TestRunOptions::new()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e:?}"));
        if result.return_value != XDP_TX {
            continue;
        }
        let service = &SERVICES[which];
        let dst: [u8; 6] = output[..6].try_into().expect("six bytes");
        assert!(
            service.owns(dst),
            "frame {i} of service {} (port {}) left with MAC {dst:02x?}, not one of its backends' \
             (after {} rounds of changes)",
            service.id,
            service.port,
            rounds.load(Ordering::Relaxed)
        );
        assert_eq!(
            output[6..12],
            DIRECTOR_MAC,
            "frame {i}: the source MAC is ours"
        );
        forwarded[which] += 1;
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().expect("the changing thread");
    let rounds = rounds.load(Ordering::Relaxed);
    println!(
        "{total} frames checked, {} and {} forwarded, during {rounds} rounds of changes",
        forwarded[0], forwarded[1]
    );
    assert!(
        rounds >= MIN_ROUNDS,
        "only {rounds} rounds of changes ran during the frames: the test proved little"
    );
    for (service, count) in SERVICES.iter().zip(forwarded) {
        assert!(
            count > total / 8,
            "service {}: only {count} of {total} frames forwarded: the checks proved little",
            service.id
        );
    }
    // Frames are fast; give the last grace period a moment before the maps go.
    thread::sleep(Duration::from_millis(1));
}
