//! End-to-end tests: the real `drlb` daemon on the LVS-DR netns testbed (see `tests::testbed`),
//! with real HTTP (curl) and UDP traffic from a client namespace.
//!
//! Needs root: run with `cargo xtask test` (or `cargo test --release -p tests --test e2e --
//! --include-ignored --test-threads=1` as root after `cargo build --release -p lb-userspace`).

use std::collections::BTreeMap;

use serde_json::Value;
use tests::{
    require_root,
    testbed::{
        HTTP_PORT, NOBODY, TestServer, Testbed, UDP_PORT, VIP, arping_reply_macs,
        frame_destination_mac, frame_source_mac, vip_url,
    },
};

const HTTP_REQUESTS: u32 = 60;
const UDP_DATAGRAMS: u32 = 30;

fn testbed() -> Testbed {
    require_root();
    Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")))
}

/// A zero count for every real server.
fn per_real_server(testbed: &Testbed) -> BTreeMap<&'static str, u32> {
    testbed.real_servers.iter().map(|rs| (rs.name, 0)).collect()
}

/// `HTTP_REQUESTS` GETs to the VIP, each a new connection; all must be answered by a real server.
fn http_round(testbed: &Testbed) -> BTreeMap<&'static str, u32> {
    let mut served = per_real_server(testbed);
    for n in 1..=HTTP_REQUESTS {
        let reply = testbed
            .http_get(&vip_url())
            .unwrap_or_else(|e| panic!("HTTP request {n} to {} failed: {e}", vip_url()));
        let server = reply
            .server()
            .unwrap_or_else(|| panic!("HTTP request {n}: not a test server's 200: {reply:?}"));
        *served
            .get_mut(server)
            .unwrap_or_else(|| panic!("request {n} served by unknown {server:?}")) += 1;
    }
    served
}

/// `UDP_DATAGRAMS` datagrams to the VIP, each from a new source port; all must be answered.
fn udp_round(testbed: &Testbed) -> BTreeMap<&'static str, u32> {
    let ran = testbed.udp_client(&format!("{VIP}:{UDP_PORT}"), UDP_DATAGRAMS);
    assert!(
        ran.success(),
        "the UDP round to the VIP lost datagrams: {}",
        ran.describe()
    );
    let mut served = per_real_server(testbed);
    for (i, line) in ran.stdout.lines().enumerate() {
        let (server, payload) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("odd UDP reply {line:?}"));
        assert_eq!(
            payload,
            format!("request {}", i + 1),
            "UDP reply {line:?} out of order: {}",
            ran.describe()
        );
        *served
            .get_mut(server)
            .unwrap_or_else(|| panic!("UDP reply from unknown {server:?}: {line:?}")) += 1;
    }
    assert_eq!(
        served.values().sum::<u32>(),
        UDP_DATAGRAMS,
        "replies missing: {}",
        ran.describe()
    );
    served
}

#[track_caller]
fn assert_every_real_server_served(what: &str, served: &BTreeMap<&'static str, u32>) {
    let idle: Vec<_> = served
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(rs, _)| *rs)
        .collect();
    assert!(
        idle.is_empty(),
        "{what}: {idle:?} served nothing (served: {served:?})"
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn the_testbed_reaches_real_servers_directly_and_without_drlb_nobody_answers_arp_for_the_vip() {
    let testbed = testbed();
    // Testbed::new already checked HTTP and UDP to each real server's own address.
    for rs in &testbed.real_servers {
        assert_eq!(
            rs.ns.sysctl_value("net.ipv4.conf.eth0.arp_ignore"),
            "1",
            "{}",
            rs.name
        );
        assert!(
            rs.ns
                .ip(&["-4", "addr", "show", "dev", "lo"])
                .contains(&format!("{VIP}/32")),
            "{}: no VIP on lo",
            rs.name
        );
    }
    let director_addrs = testbed.director.ns.ip(&["-4", "addr", "show"]);
    assert!(
        !director_addrs.contains(VIP),
        "the director must not hold the VIP:\n{director_addrs}"
    );

    // The real servers hold the VIP but must stay silent about it (arp_ignore=1).
    let arping = testbed.arping_vip(2);
    assert!(
        !arping.success() && arping_reply_macs(&arping.stdout).is_empty(),
        "without drlb nobody may answer ARP for the VIP: {}",
        arping.describe()
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn http_and_udp_reach_every_real_server_and_replies_bypass_the_director() {
    let mut testbed = testbed();
    let state = testbed.start_drlb();

    // On the director, a reply (source: the VIP) would be passed to its stack and captured; the
    // ICMP echoes to the director's own address are the capture's positive control.
    let director_filter = format!(
        "(ip and src host {VIP}) or (icmp and dst host {})",
        testbed.director.ip
    );
    let on_director = testbed.capture(&testbed.director, &director_filter, "tcpdump-director");
    let on_client = testbed.capture(
        &testbed.client,
        &format!("ip and src host {VIP}"),
        "tcpdump-client",
    );

    let ping = testbed.client.ns.exec(
        &[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            testbed.director.ip,
        ],
        std::time::Duration::from_secs(15),
    );
    assert!(
        ping.success(),
        "the client cannot ping the director: {}",
        ping.describe()
    );
    let http = http_round(&testbed);
    let udp = udp_round(&testbed);

    let director_frames = on_director.stop();
    let client_frames = on_client.stop();

    // a. Real traffic reaches all three real servers.
    assert_every_real_server_served("HTTP", &http);
    assert_every_real_server_served("UDP", &udp);

    // b. Replies never cross the director...
    let (pings, others): (Vec<_>, Vec<_>) = director_frames
        .iter()
        .partition(|l| l.contains(&format!("> {}: ICMP echo request", testbed.director.ip)));
    assert!(
        !pings.is_empty(),
        "the director capture saw none of the client's pings (is it capturing?): {}",
        excerpt(&director_frames)
    );
    assert!(
        others.is_empty(),
        "frames from the VIP reached the director (replies must go straight to the client): {}",
        excerpt(&others)
    );
    // ...and the client gets them straight from the real servers.
    assert!(
        !client_frames.is_empty(),
        "the client captured no frames from the VIP"
    );
    let mut reply_frames = per_real_server(&testbed);
    for line in &client_frames {
        let mac = frame_source_mac(line)
            .unwrap_or_else(|| panic!("no source MAC in tcpdump line {line:?}"));
        assert_ne!(
            mac, testbed.director.mac,
            "a reply from the VIP came from the director's MAC: {line}"
        );
        let rs = testbed
            .real_server_with_mac(&mac)
            .unwrap_or_else(|| panic!("a reply from the VIP came from unknown MAC {mac}: {line}"));
        *reply_frames.get_mut(rs.name).expect("a real server") += 1;
    }
    assert_every_real_server_served(
        "reply frames seen by the client (by source MAC)",
        &reply_frames,
    );

    // d. The counters agree with the traffic.
    let stats = testbed.stats_json(&state);
    let tcp = service(&stats, "tcp", HTTP_PORT);
    let udp_service = service(&stats, "udp", UDP_PORT);
    let tcp_to_backends = check_backends(&testbed, &stats, tcp);
    let udp_to_backends = check_backends(&testbed, &stats, udp_service);
    assert!(
        number(tcp, "packets") >= 3 * u64::from(HTTP_REQUESTS),
        "{HTTP_REQUESTS} connections are at least 3 packets each (SYN, ACK, request); stats:\n{stats:#}"
    );
    assert_eq!(
        number(udp_service, "packets"),
        u64::from(UDP_DATAGRAMS),
        "one packet per datagram; stats:\n{stats:#}"
    );
    let tx = number(&stats["verdicts"]["tx"], "packets");
    assert!(tx > 0, "verdict tx is 0; stats:\n{stats:#}");
    let flow_table = &stats["flow_table"];
    assert!(
        number(flow_table, "capacity") >= number(flow_table, "configured"),
        "the flow table holds what the config asks for; stats:\n{stats:#}"
    );
    assert!(
        tx >= tcp_to_backends + udp_to_backends,
        "every frame sent to a backend is an XDP_TX, yet tx ({tx}) < frames to backends ({}); stats:\n{stats:#}",
        tcp_to_backends + udp_to_backends
    );
    assert!(
        testbed.drlb().try_status().is_none(),
        "drlb died during the test: {}",
        testbed.drlb().describe()
    );
}

/// The number of captured lines and the first few of them, for messages.
fn excerpt(lines: &[impl AsRef<str>]) -> String {
    let first: Vec<&str> = lines.iter().take(10).map(AsRef::as_ref).collect();
    let more = lines.len().saturating_sub(first.len());
    format!(
        "{} frames:\n  {}{}",
        lines.len(),
        first.join("\n  "),
        if more > 0 {
            format!("\n  ... and {more} more")
        } else {
            String::new()
        }
    )
}

/// The service `protocol VIP:port` in `drlb stats --json`.
#[track_caller]
fn service<'a>(stats: &'a Value, protocol: &str, port: u16) -> &'a Value {
    stats["services"]
        .as_array()
        .unwrap_or_else(|| panic!("no \"services\" array in the stats:\n{stats:#}"))
        .iter()
        .find(|s| s["vip"] == VIP && s["port"] == port && s["protocol"] == protocol)
        .unwrap_or_else(|| panic!("no service {protocol} {VIP}:{port} in the stats:\n{stats:#}"))
}

#[track_caller]
fn number(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {value:#}"))
}

/// Each real server is a backend of `service` with its own MAC and some packets, and the
/// backends add up to the service. Returns the packets sent to the backends.
#[track_caller]
fn check_backends(testbed: &Testbed, stats: &Value, service: &Value) -> u64 {
    let name = format!(
        "{} {}:{}",
        service["protocol"], service["vip"], service["port"]
    );
    let backends = service["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no \"backends\" array:\n{stats:#}"));
    assert_eq!(
        backends.len(),
        testbed.real_servers.len(),
        "{name}: backends:\n{stats:#}"
    );
    for rs in &testbed.real_servers {
        let backend = backends
            .iter()
            .find(|b| b["address"] == rs.ip)
            .unwrap_or_else(|| panic!("{name}: no backend {} in the stats:\n{stats:#}", rs.ip));
        let mac = backend["mac"].as_str().unwrap_or_default();
        assert!(
            mac.eq_ignore_ascii_case(&rs.mac),
            "{name}: backend {} has MAC {mac:?}, {} has {}:\n{stats:#}",
            rs.ip,
            rs.name,
            rs.mac
        );
        assert!(
            number(backend, "packets") > 0,
            "{name}: backend {} ({}) counted no packets:\n{stats:#}",
            rs.ip,
            rs.name
        );
    }
    let sum = |key| backends.iter().map(|b| number(b, key)).sum::<u64>();
    assert_eq!(
        sum("packets"),
        number(service, "packets"),
        "{name}: backend packets do not add up:\n{stats:#}"
    );
    assert_eq!(
        sum("bytes"),
        number(service, "bytes"),
        "{name}: backend bytes do not add up:\n{stats:#}"
    );
    sum("packets")
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn the_director_alone_answers_arp_for_the_vip() {
    let mut testbed = testbed();
    // Started before drlb, to see its gratuitous ARP too.
    let capture = testbed.capture(
        &testbed.client,
        &format!("arp and src host {VIP}"),
        "tcpdump-arp",
    );
    testbed.start_drlb();
    let client = &testbed.client;
    client.ns.ip(&["neigh", "flush", "dev", "eth0"]);

    let arping = testbed.arping_vip(3);
    // The client's kernel resolves the VIP itself for a real connection.
    let reply = testbed
        .http_get(&vip_url())
        .unwrap_or_else(|e| panic!("HTTP to the VIP failed: {e}"));
    assert!(
        reply.server().is_some(),
        "not a real server's reply: {reply:?}"
    );
    let frames = capture.stop();

    let director_mac = &testbed.director.mac;
    assert!(
        arping.success(),
        "arping for the VIP got no reply: {}",
        arping.describe()
    );
    let macs = arping_reply_macs(&arping.stdout);
    assert!(
        !macs.is_empty(),
        "arping printed no reply: {}",
        arping.describe()
    );
    assert!(
        macs.iter().all(|m| m == director_mac),
        "ARP replies for the VIP from {macs:?}; only the director ({director_mac}) may answer"
    );

    assert!(
        frames
            .iter()
            .any(|l| frame_destination_mac(l).as_deref() == Some("ff:ff:ff:ff:ff:ff")),
        "drlb did not announce the VIP with a gratuitous (broadcast) ARP: {}",
        excerpt(&frames)
    );
    for line in &frames {
        assert_eq!(
            frame_source_mac(line).as_deref(),
            Some(director_mac.as_str()),
            "ARP frame for the VIP not sent by the director: {line}"
        );
        if line.contains(" is-at ") {
            assert!(
                line.contains(&format!("{VIP} is-at {director_mac}")),
                "ARP reply names another MAC for the VIP: {line}"
            );
        }
    }
    let neighbour = client.ns.ip(&["neigh", "show", VIP, "dev", "eth0"]);
    assert!(
        neighbour.contains(&format!("lladdr {director_mac}")),
        "the client's neighbour entry for the VIP is not the director's MAC ({director_mac}): {neighbour:?}"
    );
}

// e. Bad input: drlb refuses to start, names the problem, and attaches nothing.

/// Runs `drlb run` with `config` (as `user` when given) and checks it fails with a message
/// containing every one of `expected` (case-insensitively) and leaves no XDP program behind.
#[track_caller]
fn assert_refused(config: impl FnOnce(&Testbed) -> String, user: Option<u32>, expected: &[&str]) {
    let mut testbed = testbed();
    assert!(
        !testbed.xdp_attached_to_director(),
        "an XDP program is attached before the test:\n{}",
        testbed.director.ns.links()
    );
    // Not named *.toml: a message must name the problem, not merely echo the path.
    let path = testbed.write_config("drlb-config", &config(&testbed));
    let ran = testbed.run_drlb_to_refusal(&path, user);
    assert!(
        ran.status.code().is_some_and(|c| c != 0),
        "drlb should exit non-zero (not be killed by a signal): {}",
        ran.describe()
    );
    let message = ran.stderr.to_lowercase();
    for word in expected {
        assert!(
            message.contains(&word.to_lowercase()),
            "drlb's message should mention {word:?}: {}",
            ran.describe()
        );
    }
    println!(
        "drlb refused as expected ({}):\n{}",
        ran.status,
        ran.stderr.trim_end()
    );
    let links = testbed.director.ns.links();
    assert!(
        !links.contains("xdp"),
        "drlb failed but left an XDP program attached:\n{links}\n{}",
        ran.describe()
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn refuses_an_unknown_interface() {
    assert_refused(
        |t| {
            t.default_config()
                .replace("interface = \"eth0\"", "interface = \"nosuch0\"")
        },
        None,
        &["nosuch0", "interface"],
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn refuses_malformed_toml() {
    assert_refused(
        |t| t.default_config().replacen("[[service]]", "[[service]", 1),
        None,
        &["toml", "line"],
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn refuses_a_duplicate_service() {
    let duplicate = |t: &Testbed| {
        let config = t.default_config();
        let tcp_service = config
            .split("[[service]]")
            .nth(1)
            .expect("the config has a tcp service")
            .to_owned();
        format!("{config}\n[[service]]{tcp_service}")
    };
    assert_refused(duplicate, None, &[&format!("{VIP}:{HTTP_PORT}"), "twice"]);
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn refuses_a_backend_off_the_directors_subnet() {
    assert_refused(
        |t| t.default_config().replacen("198.18.0.13", "198.19.0.50", 1),
        None,
        &["198.19.0.50", "subnet"],
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn refuses_to_run_as_non_root() {
    assert_refused(Testbed::default_config, Some(NOBODY), &["root"]);
}

// f. Signals: a clean exit that detaches the program.

fn assert_signal_detaches(signal: libc::c_int) {
    let mut testbed = testbed();
    testbed.start_drlb();
    assert!(
        testbed.xdp_attached_to_director(),
        "drlb is ready but no XDP program shows:\n{}",
        testbed.director.ns.links()
    );
    let status = testbed.stop_drlb(signal);
    assert_eq!(
        status.code(),
        Some(0),
        "drlb should exit 0 on signal {signal}: {}",
        testbed.drlb().describe()
    );
    let links = testbed.director.ns.links();
    assert!(
        !links.contains("xdp"),
        "the XDP program is still attached after drlb exited:\n{links}"
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn sigterm_detaches_and_exits_zero() {
    assert_signal_detaches(libc::SIGTERM);
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn sigint_detaches_and_exits_zero() {
    assert_signal_detaches(libc::SIGINT);
}
