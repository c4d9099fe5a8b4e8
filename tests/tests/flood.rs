//! Surviving a SYN flood (issue 10, item 5): 30 long-lived connections through the VIP keep
//! exchanging a line every ~2 s, each on its real server, while a flooder sends random-source
//! SYNs to the same service as fast as `hping3 --flood` goes, and a backend is added by SIGHUP
//! in the middle of the flood. The flood inserts far more new flows than the flow table holds
//! (65536), so it survives only because the LRU keeps the flows that are still referenced (the
//! kernel's BPF LRU evicts unreferenced entries first, and a spoofed SYN's entry is never looked
//! up again): a connection whose entry were evicted would be scheduled again by the new Maglev
//! table and reach another server, where it is reset (see `tests::echo`). "Still referenced"
//! has a horizon: by hand, at 50-60k SYNs/s, connections idle for ~10 s through the flood kept
//! their entries and connections idle for ~17 s lost them, so the 2 s rounds are well inside it.
//!
//! The flood targets the echo service itself (VIP:9000), so every SYN takes the program's
//! new-flow path (service lookup, flow-table miss, Maglev, flow insert, XDP_TX) and competes for
//! the very table that holds the connections' flows. The SYNs then reach the real servers,
//! whose echo listens on VIP:9000: the random sources are off-link and the real servers have no
//! route but their /24, so the kernel drops each SYN when it looks up the route for the
//! SYN-ACK, before any request socket, reply or ARP exists: no reply storm on the bridge, no
//! SYN backlog to fill.
//!
//! Rates are reported, not asserted (2 busy cores): hping3's count, the director's verdict
//! counters, the frames lost before the program, and the program's own cost per flooded frame
//! from the kernel's BPF run-time statistics (enabled only while the test holds them).
//!
//! Needs root and hping3: run with `cargo xtask test flood`.

use std::{
    os::fd::OwnedFd,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use tests::{
    echo::{Connection, assert_all_kept, connect},
    extra::{plug_host, switch_port},
    netns::{Netns, Process, wait_for},
    testbed::{IFNAME, TCP_ECHO_PORT, TestServer, Testbed, VIP},
};

const CONNECTIONS: usize = 30;
/// The table: far fewer entries than the flood inserts.
const FLOW_TABLE_SIZE: u32 = 65_536;
/// How long hping3 floods; `timeout` ends it with SIGINT, so it prints its count.
const FLOOD_TIME: Duration = Duration::from_secs(20);
/// If hping3 ignores the SIGINT, `timeout` kills it this long after.
const FLOOD_KILL_AFTER: Duration = Duration::from_secs(5);
/// Each connection exchanges a line this often during the flood.
const ROUND_INTERVAL: Duration = Duration::from_secs(2);
/// Generous for a flooded 2-core machine: a line may need several TCP retransmissions.
const FLOODED_IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the daemon may take to apply the SIGHUP while the machine is flooded.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The flooder: a host of its own on the switch, like the client.
const FLOODER_IP: &str = "198.18.0.3";
const FLOODER_MAC: &str = "02:d1:00:00:00:03";
/// The backends before the flood; the third is added during it.
const FIRST_BACKENDS: [&str; 2] = ["198.18.0.11", "198.18.0.12"];
const ADDED_BACKEND: &str = "198.18.0.13";
const ADDED_SERVER: &str = "rs3";
/// hping3 may end this much before the test's own clock says the flood is over (it started
/// first); an earlier exit is a failure.
const EARLY_EXIT_MARGIN: Duration = Duration::from_secs(1);
/// Rounds with the added backend, so that the change is tested under the flood, not after it.
const MIN_ROUNDS_AFTER_ADD: u32 = 2;
/// The flood must insert at least this many table-fulls of new flows, or it proves nothing.
const MIN_TABLE_TURNS: u64 = 2;

fn testbed() -> Testbed {
    tests::require_root();
    Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")))
}

/// The echo service over `backends`, with the flow table. No health check: a probe
/// timing out on a flooded machine would move flows for a reason other than the flow table.
fn config(backends: &[&str]) -> String {
    let mut text = format!(
        "[director]\ninterface = \"{IFNAME}\"\nflow_table_size = {FLOW_TABLE_SIZE}\n\n\
         [[service]]\nvip = \"{VIP}\"\nport = {TCP_ECHO_PORT}\nprotocol = \"tcp\"\n\n\
         [service.health_check]\nkind = \"none\"\n"
    );
    for address in backends {
        text += &format!("\n[[service.backend]]\naddress = \"{address}\"\n");
    }
    text
}

#[test]
#[ignore = "needs root and hping3: run with cargo xtask test"]
fn long_lived_connections_survive_a_syn_flood_and_a_backend_added_during_it() {
    let mut bed = testbed();
    let config_path = bed.write_config("flood.toml", &config(&FIRST_BACKENDS));
    let state = bed.start_drlb_with(&config_path);
    let flooder = plug_host(&bed.switch, "flooder", FLOODER_IP, FLOODER_MAC);

    let mut connections = connect(&bed.client.ns, CONNECTIONS);
    for c in &connections {
        for timeout in [
            c.stream.set_read_timeout(Some(FLOODED_IO_TIMEOUT)),
            c.stream.set_write_timeout(Some(FLOODED_IO_TIMEOUT)),
        ] {
            timeout.expect("setting a socket timeout");
        }
    }
    assert!(
        connections.iter().all(|c| c.served_by != ADDED_SERVER),
        "{ADDED_SERVER} is not a backend yet"
    );

    let _stats_enabled = enable_bpf_run_time_stats();
    let program = director_program_id(&bed.director.ns);
    let before = Snapshot::take(&bed, &flooder.ns, &state, program);
    let mut flood = start_flood(&flooder.ns, bed.scratch.path());
    let started = Instant::now();
    let rounds =
        exchange_during_flood(&mut bed, &config_path, &state, &mut connections, &mut flood);
    let status = flood
        .wait_timeout(FLOOD_TIME + FLOOD_KILL_AFTER + Duration::from_secs(5))
        .unwrap_or_else(|| panic!("hping3 outlived its timeout: {}", flood.describe()));
    let flood_time = started.elapsed();
    let after = Snapshot::take(&bed, &flooder.ns, &state, program);
    assert_all_kept(&mut connections, "the flood");

    let fresh = connect(&bed.client.ns, CONNECTIONS);
    assert!(
        fresh.iter().any(|c| c.served_by == ADDED_SERVER),
        "new connections reach the added {ADDED_SERVER}, so the table did change under the kept \
         connections"
    );

    // hping3 prints its closing statistics on stderr.
    let sent = hping3_sent(&flood.stderr());
    let report = Report {
        before,
        after,
        flood_time,
        sent,
        rounds,
    };
    println!("{}", report.render());
    println!("hping3 {status}: {}", flood.describe());
    let new_flows = report.delta(|s| s.tx);
    assert!(
        new_flows >= MIN_TABLE_TURNS * u64::from(FLOW_TABLE_SIZE),
        "the flood reached the director with only {new_flows} frames, less than {MIN_TABLE_TURNS} \
         flow tables of {FLOW_TABLE_SIZE}: it never forced evictions, so it proves nothing (is \
         the machine too busy? hping3: {})",
        flood.describe()
    );
}

/// `timeout -s INT 20 hping3 --flood --rand-source -S -p 9000 VIP` in the flooder, in the
/// background.
fn start_flood(flooder: &Netns, logs: &Path) -> Process {
    let seconds = |d: Duration| d.as_secs().to_string();
    flooder.spawn(
        "hping3",
        &[
            "timeout",
            "-s",
            "INT",
            "--kill-after",
            &seconds(FLOOD_KILL_AFTER),
            &seconds(FLOOD_TIME),
            "hping3",
            "--flood",
            "--rand-source",
            "-S",
            "-I",
            IFNAME,
            "-p",
            &TCP_ECHO_PORT.to_string(),
            VIP,
        ],
        logs,
    )
}

/// Asks every connection once per [`ROUND_INTERVAL`] while the flood lasts, and adds
/// [`ADDED_BACKEND`] by SIGHUP half way. Returns the number of rounds.
fn exchange_during_flood(
    bed: &mut Testbed,
    config_path: &Path,
    state: &Path,
    connections: &mut [Connection],
    flood: &mut Process,
) -> Rounds {
    let started = Instant::now();
    let mut rounds = Rounds::default();
    let mut added = false;
    while started.elapsed() < FLOOD_TIME {
        let round_start = Instant::now();
        assert!(
            flood.try_status().is_none() || started.elapsed() + EARLY_EXIT_MARGIN >= FLOOD_TIME,
            "hping3 stopped early: {}",
            flood.describe()
        );
        if !added && started.elapsed() >= FLOOD_TIME / 2 {
            let signalled = started.elapsed();
            add_backend(bed, config_path, state);
            added = true;
            println!(
                "SIGHUP adding {ADDED_BACKEND} {signalled:.1?} into the flood; active {:.1?} later",
                started.elapsed() - signalled
            );
        }
        let what = format!(
            "round {} of the flood ({:.1?} in, {ADDED_BACKEND} {})",
            rounds.before_add + rounds.after_add + 1,
            started.elapsed(),
            if added { "added" } else { "not added yet" }
        );
        assert_all_kept(connections, &what);
        if added {
            rounds.after_add += 1;
        } else {
            rounds.before_add += 1;
        }
        thread::sleep(ROUND_INTERVAL.saturating_sub(round_start.elapsed()));
    }
    assert!(
        added && rounds.after_add >= MIN_ROUNDS_AFTER_ADD,
        "the flood ended before {MIN_ROUNDS_AFTER_ADD} rounds with {ADDED_BACKEND}: {rounds:?}"
    );
    rounds
}

#[derive(Clone, Copy, Debug, Default)]
struct Rounds {
    before_add: u32,
    after_add: u32,
}

/// Rewrites the config with [`ADDED_BACKEND`], sends SIGHUP and waits until it is active.
fn add_backend(bed: &mut Testbed, config_path: &Path, state: &Path) {
    let all: Vec<&str> = FIRST_BACKENDS
        .iter()
        .copied()
        .chain([ADDED_BACKEND])
        .collect();
    std::fs::write(config_path, config(&all)).expect("rewriting the config");
    bed.drlb().signal(libc::SIGHUP);
    wait_for(
        &format!("{ADDED_BACKEND} active after SIGHUP during the flood"),
        CHANGE_TIMEOUT,
        || {
            let stats = bed.stats_json(state);
            let backends = stats["services"][0]["backends"].as_array()?.clone();
            backends
                .iter()
                .any(|b| b["address"] == ADDED_BACKEND && b["state"] == "active")
                .then_some(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Counters

/// Keeps the kernel's BPF run-time statistics on while held (BPF_ENABLE_STATS: reference
/// counted and global, off again when the last holder closes its descriptor).
fn enable_bpf_run_time_stats() -> OwnedFd {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .unwrap_or_else(|e| panic!("BPF_ENABLE_STATS failed (needs root and Linux 5.8+): {e}"))
}

/// The id of the XDP program attached to the director's interface (`ip -j link`).
fn director_program_id(director: &Netns) -> u32 {
    let json = director.ip(&["-j", "link", "show", "dev", IFNAME]);
    let links: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("`ip -j link show` printed invalid JSON ({e}): {json}"));
    let xdp = &links[0]["xdp"];
    xdp["prog"]["id"]
        .as_u64()
        .or_else(|| xdp["attached"][0]["prog"]["id"].as_u64())
        .and_then(|id| u32::try_from(id).ok())
        .unwrap_or_else(|| panic!("no XDP program on the director's {IFNAME}: {json}"))
}

/// (runs, total run time in ns) of a loaded program, from the kernel's statistics.
fn program_runs(id: u32) -> (u64, u64) {
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .unwrap_or_else(|| panic!("program {id} is no longer loaded: did drlb exit?"));
    let ns = u64::try_from(info.run_time().as_nanos()).expect("run time fits u64");
    (info.run_count(), ns)
}

/// Counters read before and after the flood.
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    tx: u64,
    drops: u64,
    service_packets: u64,
    program_runs: u64,
    program_ns: u64,
    /// Frames the switch could not hand to the director's interface (its receive ring full).
    lost_before_program: u64,
    /// Frames the flooder's interface sent (hping3's, and a few ARP).
    flooder_sent: u64,
    /// Frames all real servers sent: a reply storm to the random sources would show here.
    real_servers_sent: u64,
    /// The real servers' IP OutNoRoutes: SYNs dropped when the SYN-ACK found no route.
    real_servers_no_route: u64,
}

impl Snapshot {
    fn take(bed: &Testbed, flooder: &Netns, state: &Path, program: u32) -> Self {
        let stats = bed.stats_json(state);
        let verdicts = stats["verdicts"]
            .as_object()
            .unwrap_or_else(|| panic!("no verdicts in {stats}"));
        let packets = |v: &serde_json::Value| v["packets"].as_u64().unwrap_or(0);
        let (program_runs, program_ns) = program_runs(program);
        Self {
            tx: verdicts.get("tx").map_or(0, packets),
            drops: verdicts
                .iter()
                .filter(|(name, _)| name.starts_with("drop_"))
                .map(|(_, v)| packets(v))
                .sum(),
            service_packets: packets(&stats["services"][0]),
            program_runs,
            program_ns,
            lost_before_program: link_tx(&bed.switch.ns, &switch_port(bed.director.name)).dropped,
            flooder_sent: link_tx(flooder, IFNAME).packets,
            real_servers_sent: bed
                .real_servers
                .iter()
                .map(|rs| link_tx(&rs.ns, IFNAME).packets)
                .sum(),
            real_servers_no_route: bed
                .real_servers
                .iter()
                .map(|rs| ip_out_no_routes(&rs.ns))
                .sum(),
        }
    }
}

/// A link's transmit counters.
struct LinkTx {
    packets: u64,
    /// For a veth: frames its peer's receive ring refused.
    dropped: u64,
}

/// The transmit counters of a link (`ip -s -j link`).
fn link_tx(ns: &Netns, link: &str) -> LinkTx {
    let json = ns.ip(&["-s", "-j", "link", "show", "dev", link]);
    let links: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("`ip -s -j link show` printed invalid JSON ({e}): {json}"));
    let tx = &links[0]["stats64"]["tx"];
    let count = |name: &str| {
        tx[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no tx {name} count for {link}: {json}"))
    };
    LinkTx {
        packets: count("packets"),
        dropped: count("dropped"),
    }
}

/// The IP `OutNoRoutes` counter of a namespace (`/proc/net/snmp`: an `Ip:` header line, then
/// an `Ip:` value line).
fn ip_out_no_routes(ns: &Netns) -> u64 {
    const COUNTER: &str = "OutNoRoutes";
    let snmp = ns.run(&["cat", "/proc/net/snmp"]);
    let mut ip_lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip_lines.next(), ip_lines.next());
    names
        .zip(values)
        .and_then(|(names, values)| {
            let index = names.split_whitespace().position(|n| n == COUNTER)?;
            values.split_whitespace().nth(index)?.parse().ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no Ip {COUNTER} in /proc/net/snmp of {}:\n{snmp}",
                ns.name()
            )
        })
}

/// hping3's closing count (`N packets tramitted, ...`: hping3 spells it so).
fn hping3_sent(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .find(|l| l.contains("packets tramitted") || l.contains("packets transmitted"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct Report {
    before: Snapshot,
    after: Snapshot,
    flood_time: Duration,
    sent: Option<u64>,
    rounds: Rounds,
}

impl Report {
    fn delta(&self, field: impl Fn(&Snapshot) -> u64) -> u64 {
        field(&self.after).saturating_sub(field(&self.before))
    }

    fn rate(&self, frames: u64) -> f64 {
        frames as f64 / self.flood_time.as_secs_f64()
    }

    fn render(&self) -> String {
        let tx = self.delta(|s| s.tx);
        let runs = self.delta(|s| s.program_runs);
        let run_ns = self.delta(|s| s.program_ns);
        let sent = self.sent.map_or_else(
            || "hping3 printed no count".to_owned(),
            |n| format!("{n} frames, {:.0} frames/s", self.rate(n)),
        );
        format!(
            "SYN flood of {:.1?} (random sources, tcp {VIP}:{TCP_ECHO_PORT}), flow table \
             {FLOW_TABLE_SIZE}, {CONNECTIONS} connections kept through {} rounds before and {} \
             after adding {ADDED_BACKEND}\n\
             \x20 hping3 sent:                {sent}\n\
             \x20 flooder's eth0 sent:        {}\n\
             \x20 lost before the program:    {} (director's receive ring full)\n\
             \x20 program runs:               {runs}, {:.0} frames/s\n\
             \x20 director tx (forwarded):    {tx}, {:.0} frames/s\n\
             \x20 director drops:             {}\n\
             \x20 service packets:            {}\n\
             \x20 real servers sent:          {} frames (echo answers; no SYN-ACK storm)\n\
             \x20 real servers, no route:     {} (SYNs dropped: no route back for the SYN-ACK)\n\
             \x20 program cost per frame:     {:.0} ns (kernel BPF run-time statistics, \
             flooded new-flow path, table full and evicting)",
            self.flood_time,
            self.rounds.before_add,
            self.rounds.after_add,
            self.delta(|s| s.flooder_sent),
            self.delta(|s| s.lost_before_program),
            self.rate(runs),
            self.rate(tx),
            self.delta(|s| s.drops),
            self.delta(|s| s.service_packets),
            self.delta(|s| s.real_servers_sent),
            self.delta(|s| s.real_servers_no_route),
            if runs == 0 {
                f64::NAN
            } else {
                run_ns as f64 / runs as f64
            },
        )
    }
}
