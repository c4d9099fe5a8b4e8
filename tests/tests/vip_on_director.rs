//! The seed's LVS-DR testbed exactly as written (shared/seeds/001): the director's client-side
//! interface *is* the VIP (`eth7: 192.168.7.33`), as on an IPVS director.
//!
//!     client eth0 ──┐                       ┌── eth7 (the VIP)  director  eth8 ──┐
//!                   br_e ──────────────────┤                                   br_lvs
//!     rs1   eth14 ──┘                                                          └── eth12 rs1
//!
//! Addresses: the project's tests use 198.18.0.0/15 only, so the seed's subnets are mapped
//! one to one, host part kept: 192.168.7.0/24 -> 198.18.7.0/24 (client .2, VIP .33 on the
//! director's eth7, rs1's eth14 .99) and 192.168.88.0/24 -> 198.18.88.0/24 (director's eth8
//! .10, rs1's eth12 .20). Interface names, bridges, port 8000 and rs1's sysctls as in the seed.
//!
//! drlb answers ARP for the VIP and forwards the service (port 8000) to rs1 from XDP, before
//! the director's stack sees it; rs1 answers the client directly; everything else sent to the
//! VIP (ping, another TCP port) reaches the director's own stack.
//!
//! Needs root: run with `cargo xtask test`.

use std::{path::PathBuf, time::Duration};

use tests::{
    drlb::drlb_in,
    drlb::{start_drlb, stats_in},
    netns::{Capture, Netns, PassProgram, Process, Scratch, Switch},
    testbed::{arping_reply_macs, frame_source_mac},
};

const VIP: &str = "198.18.7.33";
const PORT: u16 = 8000;
/// A port of the director's own stack on the VIP: no service of drlb's.
const DIRECTOR_PORT: u16 = 2222;
const BR_E: &str = "br_e";
const BR_LVS: &str = "br_lvs";
const REQUESTS: usize = 20;
const PINGS: &str = "3";
const CURL_TIMEOUT: Duration = Duration::from_secs(10);
const ARPINGS: &str = "2";

/// One interface of a host: name, address/prefix, MAC.
struct Nic {
    name: &'static str,
    cidr: &'static str,
    mac: &'static str,
}

impl Nic {
    fn ip(&self) -> &'static str {
        self.cidr.split('/').next().expect("address/prefix")
    }
}

const CLIENT: Nic = Nic {
    name: "eth0",
    cidr: "198.18.7.2/24",
    mac: "02:d1:07:00:00:02",
};
/// The seed's `eth7:192.168.7.33`: the VIP is the interface's address.
const DIRECTOR_E: Nic = Nic {
    name: "eth7",
    cidr: "198.18.7.33/24",
    mac: "02:d1:07:00:00:33",
};
const DIRECTOR_LVS: Nic = Nic {
    name: "eth8",
    cidr: "198.18.88.10/24",
    mac: "02:d1:88:00:00:10",
};
const RS1_E: Nic = Nic {
    name: "eth14",
    cidr: "198.18.7.99/24",
    mac: "02:d1:07:00:00:99",
};
const RS1_LVS: Nic = Nic {
    name: "eth12",
    cidr: "198.18.88.20/24",
    mac: "02:d1:88:00:00:20",
};

/// The seed's topology; everything is removed on drop (processes first, then namespaces).
struct Seed {
    processes: Vec<Process>,
    _pass: Vec<PassProgram>,
    client: Netns,
    director: Netns,
    rs1: Netns,
    _switch: Switch,
    scratch: Scratch,
}

fn plug(switch: &Switch, bridge: &str, host: &Netns, nic: &Nic, port: &str) {
    switch.connect_to(bridge, host, port, nic.name, nic.mac, nic.cidr);
    // Frames leave with complete checksums, as on a wire (XDP forwards them as they are).
    host.checksum_in_software(nic.name);
}

/// `drlb-testsrv http` answering with `name` on each `listen` address.
fn serve_http(ns: &Netns, name: &str, listen: &[String], scratch: &Scratch) -> Process {
    let mut argv = vec![env!("CARGO_BIN_EXE_drlb-testsrv").to_owned(), "http".into()];
    for address in listen {
        argv.extend(["--listen".to_owned(), address.clone()]);
    }
    argv.extend(["--name".to_owned(), name.to_owned()]);
    ns.spawn(&format!("{name}-http"), &argv, scratch.path())
}

impl Seed {
    fn new() -> Self {
        tests::require_root();
        let scratch = Scratch::create();
        let switch = Switch::create();
        switch.add_bridge(BR_E);
        switch.add_bridge(BR_LVS);
        let client = Netns::create("client");
        let director = Netns::create("director");
        let rs1 = Netns::create("rs1");
        plug(&switch, BR_E, &client, &CLIENT, "p-client");
        plug(&switch, BR_E, &director, &DIRECTOR_E, "p-dir-e");
        plug(&switch, BR_LVS, &director, &DIRECTOR_LVS, "p-dir-lvs");
        plug(&switch, BR_E, &rs1, &RS1_E, "p-rs1-e");
        plug(&switch, BR_LVS, &rs1, &RS1_LVS, "p-rs1-lvs");
        // The seed's real server: `ifconfig lo:0 VIP netmask 255.255.255.255`, eth14's
        // arp_ignore = 1 and arp_announce = 2, rp_filter 0 (requests arrive on eth12, replies
        // leave by eth14).
        rs1.ip(&["link", "set", "lo", "up"]);
        rs1.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        rs1.set_dr_arp_sysctls(&[RS1_E.name]);
        for conf in ["all", "default", RS1_E.name, RS1_LVS.name] {
            rs1.sysctl(&format!("net.ipv4.conf.{conf}.rp_filter"), "0");
        }
        let processes = vec![
            // On its own address too, for drlb's health check.
            serve_http(
                &rs1,
                "rs1",
                &[format!("{VIP}:{PORT}"), format!("{}:{PORT}", RS1_LVS.ip())],
                &scratch,
            ),
            // The director's own service on the VIP, which drlb must leave to its stack.
            serve_http(
                &director,
                "director",
                &[format!("{VIP}:{DIRECTOR_PORT}")],
                &scratch,
            ),
        ];
        // veth hands frames sent with XDP_TX or a redirect only to a peer that runs XDP.
        let pass = vec![
            PassProgram::attach(&switch.ns, "p-dir-e"),
            PassProgram::attach(&switch.ns, "p-dir-lvs"),
        ];
        Self {
            processes,
            _pass: pass,
            client,
            director,
            rs1,
            _switch: switch,
            scratch,
        }
    }

    /// `arping -c COUNT` from the client to the VIP: the MACs that answered.
    fn arping(&self, count: &str) -> Vec<String> {
        let ran = self.client.exec(
            &["arping", "-c", count, "-w", "3", "-I", CLIENT.name, VIP],
            CURL_TIMEOUT,
        );
        arping_reply_macs(&ran.stdout)
    }

    fn config(&self) -> PathBuf {
        let text = format!(
            "[director]\ninterfaces = [\"{}\", \"{}\"]\n\n[[service]]\nvip = \"{VIP}\"\nport = {PORT}\n\
             protocol = \"tcp\"\n\n[[service.backend]]\naddress = \"{}\"\n",
            DIRECTOR_E.name,
            DIRECTOR_LVS.name,
            RS1_LVS.ip()
        );
        self.scratch.write("drlb.toml", &text)
    }

    /// `curl` from the client; the name of the server that answered.
    fn get(&self, port: u16) -> String {
        let url = format!("http://{VIP}:{port}/");
        self.client
            .exec(&["curl", "-sS", "--max-time", "5", &url], CURL_TIMEOUT)
            .expect_success()
            .trim()
            .to_owned()
    }
}

fn verdict(stats: &serde_json::Value, name: &str) -> u64 {
    stats["verdicts"][name]["packets"].as_u64().unwrap_or(0)
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn the_seeds_director_holds_the_vip_and_serves_it() {
    let mut seed = Seed::new();
    let state = seed.scratch.subdir("state", 0o700);
    let config = seed.config();
    let mut drlb = start_drlb(
        &seed.director,
        "drlb",
        &config,
        &state,
        &[],
        seed.scratch.path(),
    );
    let log = drlb.stderr();
    assert!(
        log.contains("VIP is an address of this director") && log.contains(VIP),
        "drlb logs at start-up which VIPs are local: {log}"
    );
    let stats = stats_in(&seed.director, &state);
    assert_eq!(
        stats["vips"],
        serde_json::json!([{"vip": VIP, "active": true, "local": true}]),
        "{stats}"
    );
    assert_eq!(
        seed.arping(ARPINGS),
        [DIRECTOR_E.mac, DIRECTOR_E.mac],
        "one answer per request, the program's: the kernel never sees the request"
    );

    let service = format!("tcp port {PORT}");
    let at_client = Capture::start(
        &seed.client,
        CLIENT.name,
        &service,
        "tcpdump-client",
        seed.scratch.path(),
    );
    let from_vip = format!("src host {VIP} and tcp port {PORT}");
    let at_director: Vec<Capture> = [DIRECTOR_E.name, DIRECTOR_LVS.name]
        .iter()
        .map(|nic| {
            Capture::start(
                &seed.director,
                nic,
                &from_vip,
                &format!("tcpdump-director-{nic}"),
                seed.scratch.path(),
            )
        })
        .collect();
    let at_rs1_lvs = Capture::start(
        &seed.rs1,
        RS1_LVS.name,
        &service,
        "tcpdump-rs1-lvs",
        seed.scratch.path(),
    );
    for i in 0..REQUESTS {
        assert_eq!(seed.get(PORT), "rs1", "request {i} through the VIP");
    }
    // The director's own stack: another port on the VIP, and ping.
    assert_eq!(
        seed.get(DIRECTOR_PORT),
        "director",
        "a port that is no service reaches the director's stack"
    );
    let ping = seed.client.exec(
        &["ping", "-c", PINGS, "-i", "0.2", "-W", "2", VIP],
        CURL_TIMEOUT,
    );
    assert!(ping.success(), "ping to the VIP: {}", ping.describe());

    let client_frames = at_client.stop();
    let replies: Vec<&String> = client_frames
        .iter()
        .filter(|l| l.contains(&format!("{VIP}.{PORT} > ")))
        .collect();
    assert!(
        replies.len() >= 3 * REQUESTS,
        "the client got the replies: {client_frames:#?}"
    );
    assert!(
        replies
            .iter()
            .all(|l| frame_source_mac(l).as_deref() == Some(RS1_E.mac)),
        "every reply comes straight from rs1's eth14: {replies:#?}"
    );
    let requests_at_client = client_frames
        .iter()
        .filter(|l| l.contains(&format!(" > {VIP}.{PORT}:")))
        .count();
    assert!(requests_at_client >= 3 * REQUESTS, "{client_frames:#?}");
    let at_rs1 = at_rs1_lvs.stop();
    let syns_at_rs1 = at_rs1
        .iter()
        .filter(|l| {
            l.contains(&format!(" > {VIP}.{PORT}:"))
                && l.contains("Flags [S]")
                && frame_source_mac(l).as_deref() == Some(DIRECTOR_LVS.mac)
        })
        .count();
    assert_eq!(
        syns_at_rs1, REQUESTS,
        "every SYN reached rs1's eth12 from the director's eth8: {at_rs1:#?}"
    );
    for (capture, nic) in at_director
        .into_iter()
        .zip([DIRECTOR_E.name, DIRECTOR_LVS.name])
    {
        let frames = capture.stop();
        assert!(
            frames.is_empty(),
            "no reply crosses the director's {nic}: {frames:#?}"
        );
    }

    let stats = stats_in(&seed.director, &state);
    assert!(
        verdict(&stats, "redirect") >= 3 * REQUESTS as u64,
        "service traffic forwarded from XDP: {stats}"
    );
    assert!(
        verdict(&stats, "arp_reply") >= 1,
        "the program answered ARP for the VIP: {stats}"
    );
    assert!(
        verdict(&stats, "pass") >= 3 + 3,
        "ping and the other port went to the stack: {stats}"
    );
    for dropped in ["drop_no_service", "drop_standby", "drop_arp_standby"] {
        assert_eq!(verdict(&stats, dropped), 0, "{dropped}: {stats}");
    }
    let status = drlb.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "drlb: {}", drlb.describe());
    seed.processes.clear();
}

/// A standby whose kernel holds the VIP (here `drlb run --standby` with the seed's eth7) must
/// not let the kernel answer ARP for it: the program drops the requests (`drop_arp_standby`),
/// and drlb warns at start-up. `drlb vip activate` brings the answers back, the program's.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_standby_holding_the_vip_keeps_its_kernel_from_answering_arp() {
    let mut seed = Seed::new();
    assert_eq!(
        seed.arping("1"),
        [DIRECTOR_E.mac],
        "without drlb the director's kernel answers ARP for its address"
    );
    let state = seed.scratch.subdir("state", 0o700);
    let config = seed.config();
    let mut drlb = start_drlb(
        &seed.director,
        "drlb",
        &config,
        &state,
        &["--standby"],
        seed.scratch.path(),
    );
    let log = drlb.stderr();
    assert!(
        log.contains("which is its standby") && log.contains("drop_arp_standby"),
        "drlb warns about a standby VIP its kernel holds: {log}"
    );
    assert!(
        seed.arping(ARPINGS).is_empty(),
        "nobody answers ARP for the VIP while the director is its standby"
    );
    let stats = stats_in(&seed.director, &state);
    assert_eq!(stats["state"], "standby", "{stats}");
    assert!(
        verdict(&stats, "drop_arp_standby") >= 2,
        "the requests were dropped before the kernel: {stats}"
    );
    assert_eq!(verdict(&stats, "arp_reply"), 0, "{stats}");

    let activated = drlb_in(&seed.director, &state, &["vip", "activate"]).expect_success();
    assert!(activated.contains("director active"), "{activated}");
    assert_eq!(
        seed.arping(ARPINGS),
        [DIRECTOR_E.mac, DIRECTOR_E.mac],
        "active: the program answers"
    );
    assert_eq!(seed.get(PORT), "rs1", "and forwards");
    let status = drlb.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "drlb: {}", drlb.describe());
    seed.processes.clear();
}
