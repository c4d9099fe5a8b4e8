//! Several active directors behind ECMP, VIPs announced through BIRD (issue 15, docs/bgp.md).
//!
//! ```text
//!  client 198.18.2.2 ── eth1 router 198.18.0.254 (BIRD, merge paths, L4 multipath hash)
//!                              │ eth0
//!                    switch: the directors' LAN 198.18.0.0/24
//!     ┌──────────────┬─────────┴────┬──────────────┬─────────────────────────┐
//!  director1      director2      director3      rs1..rs3 (.11-.13), rs4 (.14)
//!  198.18.0.2     198.18.0.3     198.18.0.4     VIP on lo, default via the router
//!  drlb + BIRD    drlb + BIRD    drlb + BIRD
//! ```
//!
//! Each director runs drlb with `arp = false` and `announce = { table = 100 }` and the BIRD of
//! docs/bgp.md (read from there, so the docs hold the configs tested). The router's BIRD
//! merges the three directors' routes into one multipath route. Real TCP: long-lived
//! connections to the real servers' line echo, which names the server on every answer.
//!
//! Needs root and bird2: run with `cargo xtask test`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use lb_userspace::dataplane::{
    offline::{PublishedKey, published_tables},
    pins::PinDir,
};
use tests::{
    bpffs::Bpffs,
    drlb::{drlb_in, start_drlb, stats_in},
    echo::{Connection, ask, connect},
    extra::{ExtraDirector, plug_host},
    netns::{Netns, Process, poll_until, wait_for},
    require_root,
    testbed::{Host, IFNAME, TCP_ECHO_PORT, TestServer, Testbed, VIP, arping_reply_macs},
};

const DOCS: &str = include_str!("../../docs/bgp.md");
/// The director whose address the docs' director config carries.
const DOCS_DIRECTOR: &str = "198.18.0.2";
const ROUTER_IP: &str = "198.18.0.254";
const ROUTER_MAC: &str = "02:d1:00:00:00:fe";
/// The client's subnet behind the router.
const ROUTER_CLIENT_SIDE: &str = "198.18.2.1/24";
const CLIENT_IP: &str = "198.18.2.2/24";
const CLIENT_GATEWAY: &str = "198.18.2.1";
const ROUTER_CLIENT_IF: &str = "eth1";
const RS4: (&str, &str) = ("198.18.0.14", "02:d1:00:00:00:14");
/// `announce = { table = ... }` of the directors, as in docs/bgp.md.
const ANNOUNCE_TABLE: &str = "100";
/// Long-lived connections of the failover scenarios (as the issue asks).
const CONNECTIONS: usize = 60;
/// From start-up to BGP sessions up and the VIP announced by every director.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// BGP hold time (3 s in docs/bgp.md) plus BIRD's kernel scan and the router's update.
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(10);
/// Health checks: 1 s interval, fall 3 (drlb's defaults), plus a margin.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(15);
/// At most 1/10 of a table's slots of healthy backends may change when one of four
/// backends leaves (Maglev moves that backend's quarter, and a few percent besides).
const MAX_DISTURBED_DIVISOR: usize = 10;
const POLL: Duration = Duration::from_millis(200);

/// The fenced block following `marker` in docs/bgp.md.
fn docs_block(marker: &str) -> String {
    let after = DOCS
        .split_once(marker)
        .unwrap_or_else(|| panic!("docs/bgp.md has no {marker:?}"))
        .1;
    let body = after
        .split_once("```\n")
        .expect("a fenced block after the marker")
        .1;
    body.split_once("```")
        .expect("the fenced block ends")
        .0
        .to_owned()
}

/// One director: its namespace (borrowed from the bed or an extra director), state, config.
struct Director {
    name: &'static str,
    ip: &'static str,
    state: PathBuf,
    pin_dir: PathBuf,
    config: PathBuf,
}

/// The topology of the issue. Fields drop in order: processes, then namespaces, then files.
struct Ecmp {
    drlbs: Vec<Option<Process>>,
    birds: Vec<Option<Process>>,
    router_bird: Process,
    _rs4_echo: Process,
    extra: Vec<ExtraDirector>,
    _rs4: Host,
    client: Netns,
    router: Host,
    directors: Vec<Director>,
    _bpffs: Bpffs,
    bed: Testbed,
}

impl Ecmp {
    fn new() -> Self {
        require_root();
        let mut bed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
        let logs = bed.scratch.path().to_owned();
        let extra = vec![
            ExtraDirector::plug(&bed.switch, "director2", "198.18.0.3", "02:d1:00:00:00:03"),
            ExtraDirector::plug(&bed.switch, "director3", "198.18.0.4", "02:d1:00:00:00:04"),
        ];
        // The fourth real server: LVS-DR, like the testbed's three.
        let rs4 = plug_host(&bed.switch, "rs4", RS4.0, RS4.1);
        rs4.ns.set_dr_arp_sysctls(&[IFNAME]);
        rs4.ns
            .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        let argv = TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")).command([
            "tcp-echo",
            "--listen",
            &format!("{VIP}:{TCP_ECHO_PORT}"),
            "--listen",
            &format!("{}:{TCP_ECHO_PORT}", RS4.0),
            "--name",
            "rs4",
        ]);
        let rs4_echo = rs4.ns.spawn("rs4-tcp-echo", &argv, &logs);

        // The router: on the LAN, and on the client's subnet; replies of every real server go
        // through it (LVS-DR: straight to the client).
        let router = plug_host(&bed.switch, "router", ROUTER_IP, ROUTER_MAC);
        let client = Netns::create("client2");
        router.ns.ip(&[
            "link",
            "add",
            ROUTER_CLIENT_IF,
            "type",
            "veth",
            "peer",
            "name",
            IFNAME,
            "netns",
            client.name(),
        ]);
        router
            .ns
            .ip(&["addr", "add", ROUTER_CLIENT_SIDE, "dev", ROUTER_CLIENT_IF]);
        router.ns.ip(&["link", "set", ROUTER_CLIENT_IF, "up"]);
        client.ip(&["addr", "add", CLIENT_IP, "dev", IFNAME]);
        client.ip(&["link", "set", IFNAME, "up"]);
        client.ip(&["route", "add", "default", "via", CLIENT_GATEWAY]);
        client.checksum_in_software(IFNAME);
        router.ns.sysctl("net.ipv4.ip_forward", "1");
        // Layer-4 multipath hash: a client's connections spread over the directors.
        router.ns.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
        for rs in bed.real_servers.iter().chain([&rs4]) {
            rs.ns.ip(&["route", "add", "default", "via", ROUTER_IP]);
        }
        let router_conf =
            bed.write_config("bird-router.conf", &docs_block("ecmp.rs: router bird.conf"));
        let router_bird = spawn_bird(&router.ns, "bird-router", &router_conf, &logs);

        let bpffs = Bpffs::mount(bed.scratch.path().join("bpffs"));
        let backends: Vec<String> = bed
            .real_servers
            .iter()
            .map(|rs| rs.ip.to_owned())
            .chain([RS4.0.to_owned()])
            .collect();
        let mut directors = Vec::new();
        for (i, (name, ip)) in [
            ("director1", "198.18.0.2"),
            ("director2", "198.18.0.3"),
            ("director3", "198.18.0.4"),
        ]
        .into_iter()
        .enumerate()
        {
            let state = bed.new_state_dir(false);
            let pin_dir = bpffs.path().join(name);
            // Each director lists the backends in another order: the tables must not care.
            let mut order = backends.clone();
            order.rotate_left(i);
            if i == 2 {
                order.reverse();
            }
            let config = bed.write_config(&format!("{name}.toml"), &drlb_config(&pin_dir, &order));
            directors.push(Director {
                name,
                ip,
                state,
                pin_dir,
                config,
            });
        }
        let mut ecmp = Self {
            drlbs: Vec::new(),
            birds: Vec::new(),
            router_bird,
            _rs4_echo: rs4_echo,
            extra,
            _rs4: rs4,
            client,
            router,
            directors,
            _bpffs: bpffs,
            bed,
        };
        for i in 0..ecmp.directors.len() {
            let drlb = ecmp.start_drlb(i);
            ecmp.drlbs.push(Some(drlb));
            let bird = ecmp.start_bird(i);
            ecmp.birds.push(Some(bird));
        }
        ecmp.wait_for_next_hops(&ecmp.director_ips(&[0, 1, 2]), CONVERGE_TIMEOUT);
        ecmp
    }

    fn ns(&self, i: usize) -> &Netns {
        match i {
            0 => &self.bed.director.ns,
            _ => &self.extra[i - 1].host.ns,
        }
    }

    fn logs(&self) -> PathBuf {
        self.bed.scratch.path().to_owned()
    }

    fn start_drlb(&self, i: usize) -> Process {
        let d = &self.directors[i];
        start_drlb(
            self.ns(i),
            &format!("drlb-{}", d.name),
            &d.config,
            &d.state,
            &[],
            &self.logs(),
        )
    }

    fn start_bird(&self, i: usize) -> Process {
        let d = &self.directors[i];
        let text = docs_block("ecmp.rs: director bird.conf")
            .replace(
                &format!("router id {DOCS_DIRECTOR};"),
                &format!("router id {};", d.ip),
            )
            .replace(
                &format!("local {DOCS_DIRECTOR} as"),
                &format!("local {} as", d.ip),
            );
        assert!(text.contains(d.ip), "the director's address in {text}");
        let conf = self
            .bed
            .write_config(&format!("bird-{}.conf", d.name), &text);
        spawn_bird(self.ns(i), &format!("bird-{}", d.name), &conf, &self.logs())
    }

    fn director_ips(&self, which: &[usize]) -> BTreeSet<String> {
        which
            .iter()
            .map(|i| self.directors[*i].ip.to_owned())
            .collect()
    }

    /// The router's next hops for the VIP (none when no director announces it).
    fn next_hops(&self) -> BTreeSet<String> {
        let routes = self.router.ns.ip(&[
            "route",
            "show",
            "exact",
            &format!("{VIP}/32"),
            "proto",
            "bird",
        ]);
        let words: Vec<&str> = routes.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_owned())
            .collect()
    }

    #[track_caller]
    fn wait_for_next_hops(&self, expected: &BTreeSet<String>, timeout: Duration) {
        let reached = poll_until(timeout, POLL, || {
            (self.next_hops() == *expected).then_some(())
        });
        assert!(
            reached.is_some(),
            "timed out after {timeout:?} waiting for the router's route to {VIP} to have the next \
             hops {expected:?}; it has {:?}\n{}",
            self.next_hops(),
            self.describe()
        );
    }

    /// The VIPs drlb routes in its announce table.
    fn announced(&self, i: usize) -> String {
        self.ns(i)
            .ip(&["route", "show", "table", ANNOUNCE_TABLE])
            .trim()
            .to_owned()
    }

    fn connections_of(&self, i: usize) -> u64 {
        let stats = stats_in(self.ns(i), &self.directors[i].state);
        stats["services"][0]["connections"].as_u64().unwrap_or(0)
    }

    /// The published table of each running director's data plane, slots as MACs.
    fn tables(&self, which: &[usize]) -> Vec<BTreeMap<PublishedKey, Vec<Option<[u8; 6]>>>> {
        which
            .iter()
            .map(|i| {
                let d = &self.directors[*i];
                let pins = PinDir::existing(&d.pin_dir).unwrap_or_else(|| {
                    panic!("{}: nothing pinned in {}", d.name, d.pin_dir.display())
                });
                published_tables(&pins).unwrap_or_else(|e| panic!("{}: {e:#}", d.name))
            })
            .collect()
    }

    /// Waits until every director in `which` shows `backend` with `health`.
    #[track_caller]
    fn wait_for_health(&self, which: &[usize], backend: &str, health: &str) {
        for i in which {
            let d = &self.directors[*i];
            wait_for(
                &format!("{}: backend {backend} health {health}", d.name),
                HEALTH_TIMEOUT,
                || {
                    let stats = stats_in(self.ns(*i), &d.state);
                    stats["services"][0]["backends"]
                        .as_array()?
                        .iter()
                        .any(|b| b["address"] == backend && b["health"] == health)
                        .then_some(())
                },
            );
        }
    }

    /// The routes, and the logs of every BIRD and drlb, for a failure message.
    fn describe(&self) -> String {
        let mut text = format!("router routes:\n{}\n", self.router.ns.ip(&["route"]));
        for (i, d) in self.directors.iter().enumerate() {
            text += &format!("{} table {ANNOUNCE_TABLE}: {}\n", d.name, self.announced(i));
        }
        text += &self.router_bird.describe();
        for process in self.birds.iter().chain(&self.drlbs).flatten() {
            text += &process.describe();
        }
        text
    }
}

fn drlb_config(pin_dir: &Path, backends: &[String]) -> String {
    let backends: String = backends
        .iter()
        .map(|b| format!("[[service.backend]]\naddress = \"{b}\"\n"))
        .collect();
    format!(
        "[director]\ninterface = \"{IFNAME}\"\npin_dir = \"{}\"\narp = false\n\
         announce = {{ table = {ANNOUNCE_TABLE} }}\n\n\
         [[service]]\nvip = \"{VIP}\"\nport = {TCP_ECHO_PORT}\nprotocol = \"tcp\"\n{backends}",
        pin_dir.display()
    )
}

/// BIRD in the foreground in `ns`, logging to stderr, its control socket beside its config.
fn spawn_bird(ns: &Netns, label: &str, conf: &Path, logs: &Path) -> Process {
    let socket = logs.join(format!("{label}.ctl"));
    let argv = [
        "bird".as_ref(),
        "-f".as_ref(),
        "-c".as_ref(),
        conf.as_os_str(),
        "-s".as_ref(),
        socket.as_os_str(),
    ];
    ns.spawn(label, &argv, logs)
}

/// Every connection still answers from the server it was opened on, except those on `lost`.
#[track_caller]
fn assert_kept_except(connections: &mut [Connection], lost: Option<&str>, after: &str) {
    for (i, c) in connections.iter_mut().enumerate() {
        if Some(c.served_by.as_str()) == lost {
            continue;
        }
        match ask(&mut c.stream) {
            Ok(name) => assert_eq!(name, c.served_by, "after {after}: connection {i} moved"),
            Err(e) => panic!(
                "after {after}: connection {i} (on {}) broke: {e}",
                c.served_by
            ),
        }
    }
}

fn servers(connections: &[Connection]) -> BTreeSet<String> {
    connections.iter().map(|c| c.served_by.clone()).collect()
}

#[test]
#[ignore = "needs root and bird2: run with cargo xtask test"]
fn three_directors_announce_the_vip_share_new_connections_and_publish_one_table() {
    let ecmp = Ecmp::new();
    for i in 0..3 {
        let announced = ecmp.announced(i);
        assert!(
            announced.contains(&format!("{VIP} dev drlb-vips proto 200 scope link")),
            "{}: {announced}",
            ecmp.directors[i].name
        );
    }
    let before: Vec<u64> = (0..3).map(|i| ecmp.connections_of(i)).collect();
    let connections = connect(&ecmp.client, CONNECTIONS);
    let after: Vec<u64> = (0..3).map(|i| ecmp.connections_of(i)).collect();
    for i in 0..3 {
        assert!(
            after[i] > before[i],
            "{} got none of {CONNECTIONS} new connections: {before:?} -> {after:?}\n{}",
            ecmp.directors[i].name,
            ecmp.describe()
        );
    }
    assert_eq!(
        after.iter().sum::<u64>() - before.iter().sum::<u64>(),
        CONNECTIONS as u64,
        "each connection was scheduled by one director"
    );
    assert_eq!(
        servers(&connections).len(),
        4,
        "spread over the four real servers"
    );

    // Same backends in three orders, three hosts, three sets of backend ids: one table.
    let tables = ecmp.tables(&[0, 1, 2]);
    assert_eq!(tables[0].len(), 1, "one service");
    assert!(
        tables[0]
            .values()
            .next()
            .unwrap()
            .iter()
            .all(Option::is_some),
        "every slot names a usable backend"
    );
    assert_eq!(
        tables[0], tables[1],
        "director1 and director2 publish the same table"
    );
    assert_eq!(
        tables[0], tables[2],
        "director1 and director3 publish the same table"
    );

    // arp = false: the VIP is routed; no director (nor real server) answers ARP for it.
    let arping = ecmp.bed.arping_vip(2);
    assert_eq!(
        arping_reply_macs(&arping.stdout),
        Vec::<String>::new(),
        "nobody answers ARP for a routed VIP: {}",
        arping.describe()
    );
    // And `drlb doctor` takes that silence for what it is, not for a missing active director.
    let doctor = drlb_in(ecmp.ns(0), &ecmp.directors[0].state, &["doctor"]);
    assert!(
        doctor.success()
            && doctor.stdout.contains("as it should be")
            && doctor.stdout.contains("arp = false"),
        "doctor on a routed director: {}",
        doctor.describe()
    );
}

#[test]
#[ignore = "needs root and bird2: run with cargo xtask test"]
fn a_killed_and_a_stopped_director_withdraw_and_every_connection_keeps_its_server() {
    let mut ecmp = Ecmp::new();
    let mut connections = connect(&ecmp.client, CONNECTIONS);
    assert_eq!(servers(&connections).len(), 4);
    let on = |ecmp: &Ecmp, i: usize| ecmp.connections_of(i);
    assert!(
        (0..3).all(|i| on(&ecmp, i) > 0),
        "all three directors carry connections"
    );

    let scheduled_by_others = |ecmp: &Ecmp| on(ecmp, 0) + on(ecmp, 1);
    let before_kill = scheduled_by_others(&ecmp);
    // director3 dies: SIGKILL of drlb and of its BIRD. Its data plane stays (pinned), but the
    // router drops it after the BGP hold time; its flows move to the others.
    for process in [&mut ecmp.drlbs[2], &mut ecmp.birds[2]] {
        let mut process = process.take().expect("running");
        process.stop(libc::SIGKILL, Duration::from_secs(5));
    }
    ecmp.wait_for_next_hops(&ecmp.director_ips(&[0, 1]), WITHDRAW_TIMEOUT);
    assert_eq!(
        ecmp.announced(2),
        "",
        "director3's route went with its drlb (the device is gone)"
    );
    assert_kept_except(&mut connections, None, "director3 was killed");
    assert!(
        scheduled_by_others(&ecmp) > before_kill,
        "director3's flows reached director1 and director2 (flow-table misses, scheduled by \
         the same table)"
    );

    // director2 stops cleanly (its BIRD stays up): drlb withdraws the VIP, then `drlb down`.
    let mut drlb2 = ecmp.drlbs[1].take().expect("running");
    let status = drlb2.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "drlb director2: {}", drlb2.describe());
    assert!(
        drlb2.stderr().contains("every VIP withdrawn"),
        "{}",
        drlb2.describe()
    );
    let before_stop = on(&ecmp, 0);
    ecmp.wait_for_next_hops(&ecmp.director_ips(&[0]), WITHDRAW_TIMEOUT);
    assert_kept_except(&mut connections, None, "director2 stopped");
    assert!(
        on(&ecmp, 0) > before_stop,
        "director2's flows reached director1"
    );
    let down = drlb_in(ecmp.ns(1), &ecmp.directors[1].state, &["down"]);
    assert!(down.success(), "drlb down: {}", down.describe());
    assert_kept_except(&mut connections, None, "director2's drlb down");
    assert!(
        ecmp.birds[1]
            .as_mut()
            .expect("running")
            .try_status()
            .is_none(),
        "director2's BIRD runs on"
    );
    let before_fresh = on(&ecmp, 0);
    let _fresh = connect(&ecmp.client, 5);
    assert_eq!(
        on(&ecmp, 0),
        before_fresh + 5,
        "new connections through director1 alone"
    );
}

#[test]
#[ignore = "needs root and bird2: run with cargo xtask test"]
fn a_backend_failing_everywhere_changes_every_table_alike_and_only_its_flows_move() {
    let mut ecmp = Ecmp::new();
    let mut connections = connect(&ecmp.client, CONNECTIONS);
    let before = ecmp.tables(&[0, 1, 2]);
    let failing = ecmp.bed.real_servers[1].name.to_owned();
    let failing_mac: [u8; 6] = mac_bytes(&ecmp.bed.real_servers[1].mac);
    let failing_ip = ecmp.bed.real_servers[1].ip;
    ecmp.bed.stop_service(&failing, "tcp-echo");
    ecmp.wait_for_health(&[0, 1, 2], failing_ip, "down");
    let after = ecmp.tables(&[0, 1, 2]);
    assert_eq!(after[0], after[1], "one table after the failure (1, 2)");
    assert_eq!(after[0], after[2], "one table after the failure (1, 3)");
    let (old, new) = (
        before[0].values().next().unwrap(),
        after[0].values().next().unwrap(),
    );
    let (mut moved, mut disturbed) = (0, 0);
    for (slot, (o, n)) in old.iter().zip(new).enumerate() {
        if *o == Some(failing_mac) {
            assert_ne!(
                *n,
                Some(failing_mac),
                "slot {slot} still names the failed backend"
            );
            moved += 1;
        } else if o != n {
            disturbed += 1;
        }
    }
    assert!(moved > 0, "the failed backend had slots");
    // Maglev's minimal disruption: besides the failed backend's slots, only a few others
    // change (their flows keep their backend through the flow tables anyway).
    assert!(
        disturbed * MAX_DISTURBED_DIVISOR <= old.len(),
        "{disturbed} of {} slots of healthy backends changed ({moved} were the failed one's)",
        old.len()
    );
    // Only the failed backend's connections are lost; all others keep their server, on
    // whichever director ECMP sends them to.
    assert_kept_except(
        &mut connections,
        Some(&failing),
        "a backend failed everywhere",
    );
    let fresh = connect(&ecmp.client, 20);
    assert!(
        !servers(&fresh).contains(&failing),
        "no new connection goes to the failed backend"
    );
    assert_eq!(
        ecmp.next_hops(),
        ecmp.director_ips(&[0, 1, 2]),
        "still announced by all"
    );
}

#[test]
#[ignore = "needs root and bird2: run with cargo xtask test"]
fn a_director_without_a_usable_backend_withdraws_and_the_others_serve() {
    let ecmp = Ecmp::new();
    let d3 = ecmp.ns(2);
    // director3 loses its way to the backends as its health checks see it (the data plane
    // does not use these routes): every backend fails there, and only there.
    let backends: Vec<&str> = ecmp
        .bed
        .real_servers
        .iter()
        .map(|rs| rs.ip)
        .chain([RS4.0])
        .collect();
    for backend in &backends {
        d3.ip(&["route", "add", "prohibit", &format!("{backend}/32")]);
    }
    for backend in &backends {
        ecmp.wait_for_health(&[2], backend, "down");
    }
    ecmp.wait_for_next_hops(&ecmp.director_ips(&[0, 1]), WITHDRAW_TIMEOUT);
    assert_eq!(ecmp.announced(2), "", "director3 withdrew the VIP");
    for i in [0, 1] {
        assert!(
            !ecmp.announced(i).is_empty(),
            "{} announces",
            ecmp.directors[i].name
        );
    }
    let before = ecmp.connections_of(2);
    let fresh = connect(&ecmp.client, 30);
    assert_eq!(
        servers(&fresh).len(),
        4,
        "director1 and director2 serve all four real servers"
    );
    assert_eq!(
        ecmp.connections_of(2),
        before,
        "director3 got no new connection"
    );

    // Its backends come back: it announces the VIP again.
    for backend in &backends {
        d3.ip(&["route", "del", "prohibit", &format!("{backend}/32")]);
    }
    ecmp.wait_for_next_hops(&ecmp.director_ips(&[0, 1, 2]), CONVERGE_TIMEOUT);

    // A standby serves nothing: `drlb vip deactivate` withdraws, `activate` announces again.
    let state = &ecmp.directors[2].state;
    let out = drlb_in(d3, state, &["vip", "deactivate"]).expect_success();
    assert!(out.contains("standby"), "{out}");
    ecmp.wait_for_next_hops(&ecmp.director_ips(&[0, 1]), WITHDRAW_TIMEOUT);
    let out = drlb_in(d3, state, &["vip", "activate"]).expect_success();
    assert!(out.contains("active"), "{out}");
    ecmp.wait_for_next_hops(&ecmp.director_ips(&[0, 1, 2]), CONVERGE_TIMEOUT);
}

fn mac_bytes(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("a MAC"))
        .collect();
    bytes.try_into().expect("six bytes")
}
