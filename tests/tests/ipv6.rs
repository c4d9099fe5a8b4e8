//! IPv6 end to end (issue 11) on the dual-stack DR testbed (`Testbed::dual_stack`): HTTP and
//! UDP through an IPv6 VIP reach every real server and the replies bypass the director; the
//! director's MAC alone answers neighbour solicitations for the VIP; a dual-stack config serves
//! the same services on both families; and the failover of an IPv6 VIP between two directors
//! moves the client's neighbour entry with the new active director's unsolicited neighbour
//! advertisements.
//!
//! Needs root (and keepalived for the failover): run with `cargo xtask test`.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use tests::{
    drlb::{start_drlb, stats_in},
    echo::{assert_all_kept, connect_to},
    extra::{Drive, ExtraDirector, Keepalived},
    netns::{Capture, Netns, wait_for},
    require_root,
    testbed::{
        HTTP_PORT, Host, IFNAME, PREFIX_LEN6, TCP_ECHO_PORT, TestServer, Testbed, UDP_PORT, VIP,
        VIP6, frame_source_mac, socket_text, vip_url, vip6_url,
    },
};

/// Requests (and datagrams) per VIP and protocol: with three real servers, each is all but
/// certain to get some (the test fails naming the one that got none).
const REQUESTS: u32 = 30;
/// How long drlb's health checks may take to call every backend up.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(15);
/// ndisc6: solicitations per query and how long to wait for answers to each (ms).
const NDISC_TRIES: &str = "3";
const NDISC_WAIT_MS: &str = "500";
const NDISC_TIMEOUT: Duration = Duration::from_secs(15);
/// A Neighbor Advertisement: ICMPv6 type 136, right after the fixed IPv6 header (tcpdump's
/// `icmp6` with no extension headers, which neither side sends).
const NEIGHBOR_ADVERTISEMENTS: &str = "icmp6 and ip6[40] == 136";
/// ICMPv6 echo request: its type, right after the fixed IPv6 header (a ping without extension
/// headers).
const ECHO_REQUEST: u8 = 128;
const CONNECTIONS: usize = 10;
/// From stopping the active director's keepalived to the client's entry holding the new MAC.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Becoming MASTER takes keepalived 3 advertisement intervals and a skew at start.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(15);

fn dual_stack_testbed() -> Testbed {
    Testbed::dual_stack(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")))
}

/// Starts drlb with a config holding the TCP and UDP services on each of `vips` and waits until
/// its health checks have every backend up.
fn start_drlb_on(bed: &mut Testbed, vips: &[&str]) -> std::path::PathBuf {
    let config = bed.write_config("drlb.toml", &bed.config_on(vips));
    let state = bed.start_drlb_with(&config);
    wait_until_healthy(&bed.director.ns, &state, 2 * vips.len());
    state
}

/// Waits until drlb in `ns` has `services` services, every backend up (or, UDP, unchecked).
fn wait_until_healthy(ns: &Netns, state: &Path, services: usize) {
    wait_for(
        "drlb's health checks to call every backend up",
        HEALTHY_TIMEOUT,
        || {
            let stats = stats_in(ns, state);
            let listed = stats["services"].as_array()?;
            let up = listed.iter().all(|s| {
                s["backends"].as_array().is_some_and(|backends| {
                    backends.len() == 3
                        && backends
                            .iter()
                            .all(|b| b["health"] == "up" || b["health"] == "unchecked")
                })
            });
            (listed.len() == services && up).then_some(())
        },
    );
}

/// HTTP requests to `url` from the client, a new connection each: which server answered how
/// often. Panics on a failed request.
fn http_round(bed: &Testbed, url: &str) -> BTreeMap<String, u32> {
    let mut served = BTreeMap::new();
    for n in 1..=REQUESTS {
        let reply = bed
            .http_get(url)
            .unwrap_or_else(|e| panic!("request {n} to {url} failed: {e}"));
        let server = reply
            .server()
            .unwrap_or_else(|| panic!("request {n} to {url}: unexpected reply {reply:?}"));
        *served.entry(server.to_owned()).or_default() += 1;
    }
    served
}

/// UDP datagrams to `to` from the client, a new source port each: which server answered how
/// often. Panics when one got no reply.
fn udp_round(bed: &Testbed, to: &str) -> BTreeMap<String, u32> {
    let ran = bed.udp_client(to, REQUESTS);
    assert!(ran.success(), "datagrams to {to}: {}", ran.describe());
    let mut served = BTreeMap::new();
    for reply in ran.stdout.lines() {
        let (server, _) = reply
            .split_once(' ')
            .unwrap_or_else(|| panic!("unexpected reply {reply:?} from {to}"));
        *served.entry(server.to_owned()).or_default() += 1;
    }
    served
}

#[track_caller]
fn assert_every_server(bed: &Testbed, served: &BTreeMap<String, u32>, what: &str) {
    let total: u32 = served.values().sum();
    assert_eq!(total, REQUESTS, "{what}: {served:?}");
    for rs in &bed.real_servers {
        assert!(
            served.get(rs.name).copied().unwrap_or(0) > 0,
            "{what}: {} got nothing: {served:?}",
            rs.name
        );
    }
}

/// The MAC the client's neighbour table holds for `address`, if any.
fn client_neighbour_mac(client: &Host, address: &str) -> Option<String> {
    let line = client
        .ns
        .ip(&["-6", "neigh", "show", address, "dev", IFNAME]);
    let mut words = line.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_ascii_lowercase)
}

fn capture(bed: &Testbed, host: &Host, filter: &str, label: &str) -> Capture {
    bed.capture(host, filter, label)
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn curl_and_udp_through_an_ipv6_vip_reach_every_server_and_replies_bypass_the_director() {
    require_root();
    let mut bed = dual_stack_testbed();
    let state = start_drlb_on(&mut bed, &[VIP6]);
    // Every frame from the VIP is a reply: none may cross the director. The client's echo
    // requests to the director's own address are the director capture's positive control.
    let from_vip = format!("ip6 and src host {VIP6} and (tcp or udp)");
    let director_ip6 = bed.director.ip6.expect("a dual-stack director");
    let director_filter = format!(
        "({from_vip}) or (icmp6 and dst host {director_ip6} and ip6[40] == {ECHO_REQUEST})"
    );
    let on_director = capture(&bed, &bed.director, &director_filter, "tcpdump-director");
    let on_client = capture(&bed, &bed.client, &from_vip, "tcpdump-client");

    let ping = bed.client.ns.exec(
        &[
            "ping",
            "-6",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            director_ip6,
        ],
        Duration::from_secs(15),
    );
    assert!(
        ping.success(),
        "the client cannot ping the director's IPv6 address: {}",
        ping.describe()
    );
    let http = http_round(&bed, &vip6_url());
    assert_every_server(&bed, &http, "HTTP through the IPv6 VIP");
    let udp = udp_round(&bed, &socket_text(VIP6, UDP_PORT));
    assert_every_server(&bed, &udp, "UDP through the IPv6 VIP");

    let (director_frames, client_frames) = (on_director.stop(), on_client.stop());
    let (pings, replies): (Vec<_>, Vec<_>) = director_frames
        .iter()
        .partition(|line| line.contains("ICMP6, echo request"));
    assert!(
        !pings.is_empty(),
        "the director capture saw none of the client's pings (is it capturing?):\n{}",
        director_frames.join("\n")
    );
    assert!(
        replies.is_empty(),
        "replies crossed the director:\n{}",
        replies
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !client_frames.is_empty(),
        "the client's capture saw no replies at all"
    );
    for line in &client_frames {
        let mac = frame_source_mac(line).unwrap_or_default();
        assert!(
            bed.real_server_with_mac(&mac).is_some(),
            "a reply came from {mac}, not from a real server: {line}"
        );
    }
    let stats = stats_in(&bed.director.ns, &state);
    let forwarded: u64 = stats["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["vip"] == VIP6)
        .map(|s| s["packets"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        forwarded >= u64::from(2 * REQUESTS),
        "drlb counts the requests it forwarded on the IPv6 VIP: {forwarded} packets in {stats}"
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn neighbour_solicitations_for_the_ipv6_vip_are_answered_by_the_director_alone() {
    require_root();
    let mut bed = dual_stack_testbed();
    let _state = start_drlb_on(&mut bed, &[VIP6]);
    let advertisements = capture(
        &bed,
        &bed.client,
        NEIGHBOR_ADVERTISEMENTS,
        "tcpdump-client-na",
    );
    let ndisc = bed.client.ns.exec(
        &[
            "ndisc6",
            "-q",
            "-m",
            "-r",
            NDISC_TRIES,
            "-w",
            NDISC_WAIT_MS,
            VIP6,
            IFNAME,
        ],
        NDISC_TIMEOUT,
    );
    let frames = advertisements.stop();
    assert!(
        ndisc.success(),
        "no answer to a neighbour solicitation for {VIP6}: {}",
        ndisc.describe()
    );
    let answers: Vec<String> = ndisc
        .stdout
        .lines()
        .map(|l| l.trim().to_ascii_lowercase())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        !answers.is_empty() && answers.iter().all(|mac| *mac == bed.director.mac),
        "ndisc6 heard {answers:?}, not the director's {} alone",
        bed.director.mac
    );
    // The wire, not only ndisc6: every advertisement the client received for the VIP came
    // from the director (a real server answering would show here).
    let for_vip: Vec<&String> = frames.iter().filter(|l| l.contains(VIP6)).collect();
    assert!(
        !for_vip.is_empty(),
        "the capture saw no advertisement for {VIP6}:\n{}",
        frames.join("\n")
    );
    for line in &for_vip {
        assert_eq!(
            frame_source_mac(line).as_deref(),
            Some(bed.director.mac.as_str()),
            "an advertisement for the VIP from another host than the director: {line}"
        );
    }
    // And the client's stack resolves the VIP to the director when it talks to it.
    let reply = bed
        .http_get(&vip6_url())
        .expect("HTTP through the IPv6 VIP");
    assert!(reply.server().is_some(), "{reply:?}");
    assert_eq!(
        client_neighbour_mac(&bed.client, VIP6).as_deref(),
        Some(bed.director.mac.as_str()),
        "the client's neighbour entry for the VIP"
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_dual_stack_config_serves_the_same_services_on_both_families() {
    require_root();
    let mut bed = dual_stack_testbed();
    let state = start_drlb_on(&mut bed, &[VIP, VIP6]);
    for (url, family) in [(vip_url(), "IPv4"), (vip6_url(), "IPv6")] {
        let http = http_round(&bed, &url);
        assert_every_server(&bed, &http, &format!("HTTP through the {family} VIP"));
    }
    for vip in [VIP, VIP6] {
        let udp = udp_round(&bed, &socket_text(vip, UDP_PORT));
        assert_every_server(&bed, &udp, &format!("UDP through {vip}"));
    }
    let stats = stats_in(&bed.director.ns, &state);
    for vip in [VIP, VIP6] {
        for port in [HTTP_PORT, UDP_PORT] {
            let service = stats["services"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["vip"] == vip && s["port"] == port)
                .unwrap_or_else(|| panic!("no service {vip} port {port} in {stats}"));
            assert!(
                service["packets"].as_u64().unwrap_or(0) >= u64::from(REQUESTS),
                "{vip} port {port} forwarded too little: {service}"
            );
        }
    }
}

/// The failover test (tests/tests/failover.rs) with an IPv6 VIP: keepalived (VRRP over IPv4
/// unicast) drives two standby directors with notify scripts; when the active one's keepalived
/// stops, the other's unsolicited neighbour advertisements move the client's entry for the
/// IPv6 VIP to its MAC, and the long-lived connections keep their real servers.
#[test]
#[ignore = "needs root and keepalived: run with cargo xtask test"]
fn an_ipv6_vip_fails_over_with_unsolicited_neighbour_advertisements() {
    require_root();
    let mut bed = dual_stack_testbed();
    let second = ExtraDirector::plug(&bed.switch, "director2", "198.18.0.3", "02:d1:00:00:00:03");
    second.host.ns.enable_ipv6(&[IFNAME]);
    second
        .host
        .ns
        .add_address6(IFNAME, &format!("2001:2::3/{PREFIX_LEN6}"));
    let (state_a, state_b) = (bed.new_state_dir(false), bed.new_state_dir(false));
    let (a, b) = (&bed.director, &second.host);
    let config = bed.write_config(
        "pair.toml",
        &format!(
            "[director]\ninterface = \"{IFNAME}\"\n{}",
            bed.service_toml(VIP6, TCP_ECHO_PORT, "tcp")
        ),
    );
    let logs = bed.scratch.path().to_owned();
    let _drlb_a = start_drlb(&a.ns, "drlb-a", &config, &state_a, &["--standby"], &logs);
    let _drlb_b = start_drlb(&b.ns, "drlb-b", &config, &state_b, &["--standby"], &logs);
    for (ns, state) in [(&a.ns, &state_a), (&b.ns, &state_b)] {
        wait_until_healthy(ns, state, 1);
    }
    let state_of = |ns: &Netns, state: &Path| {
        stats_in(ns, state)["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let drlb = std::fs::canonicalize(tests::drlb_binary()).expect("the drlb binary");
    let keepalived = |name: &str, priority, own: &str, peer: &str, state: &Path| Keepalived {
        router_id: format!("drlb_{name}"),
        interface: IFNAME.to_owned(),
        priority,
        own_ip: own.to_owned(),
        peer_ip: peer.to_owned(),
        track_drlb: None,
        drive: Drive::NotifyScripts {
            drlb: drlb.clone(),
            state_dir: state.to_owned(),
        },
    };
    let mut vrrp_a = keepalived("a", 150, a.ip, b.ip, &state_a).start(&a.ns, "keepalived-a", &logs);
    wait_for(
        "director a to become active (keepalived MASTER)",
        ELECTION_TIMEOUT,
        || (state_of(&a.ns, &state_a) == "active").then_some(()),
    );
    let vrrp_b = keepalived("b", 100, b.ip, a.ip, &state_b).start(&b.ns, "keepalived-b", &logs);
    vrrp_b.expect_output(
        "Entering BACKUP STATE",
        ELECTION_TIMEOUT,
        "keepalived b did not enter BACKUP",
    );

    let vip6: SocketAddr = socket_text(VIP6, TCP_ECHO_PORT)
        .parse()
        .expect("the IPv6 VIP's echo port");
    let mut connections = connect_to(&bed.client.ns, vip6, CONNECTIONS);
    assert_eq!(
        client_neighbour_mac(&bed.client, VIP6).as_deref(),
        Some(a.mac.as_str()),
        "the client resolved the IPv6 VIP to a"
    );

    let announced = capture(&bed, &bed.client, NEIGHBOR_ADVERTISEMENTS, "tcpdump-na");
    let status = vrrp_a.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "keepalived a: {}", vrrp_a.describe());
    wait_for(
        "the client's neighbour entry for the IPv6 VIP to move to b",
        TAKEOVER_TIMEOUT,
        || {
            (client_neighbour_mac(&bed.client, VIP6).as_deref() == Some(b.mac.as_str()))
                .then_some(())
        },
    );
    let frames = announced.stop();
    assert!(
        frames.iter().any(|l| {
            frame_source_mac(l).as_deref() == Some(b.mac.as_str()) && l.contains(VIP6)
        }),
        "b sent no neighbour advertisement for the VIP:\n{}",
        frames.join("\n")
    );
    assert_eq!(state_of(&b.ns, &state_b), "active");
    assert_all_kept(&mut connections, "the failover of the IPv6 VIP to b");
    let fresh = connect_to(&bed.client.ns, vip6, 3);
    assert_eq!(fresh.len(), 3, "new connections through b");
}
