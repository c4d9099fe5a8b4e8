//! ICMP and fragments through a real director (netns, real clients and servers):
//!
//! - Path-MTU discovery: a client two routers away, behind a 1280-byte link between the
//!   routers (the client keeps MTU 1500, so its MSS does not shrink and the servers send
//!   1500-byte segments with DF). The router before that link sends "fragmentation needed" to
//!   the VIP; only the director's relay gets it to the real server. A 1 MB download completes
//!   with the relay and stalls without it (the daemon started with `DRLB_TEST_NO_ICMP_RELAY`).
//! - Ping to the VIP: answered by the active director, not by a standby.
//! - A 4000-byte UDP datagram, fragmented by the client, reaches one backend whole and its
//!   echo returns; a later fragment sent before its first is dropped and counted.
//!
//! ```text
//!  far (198.19.2.2) ── r1 ══ 1280 ══ r2 = the testbed's client (198.18.0.1) ── bridge
//!                    198.19.2.1  198.19.1.2/.1                          director, rs1..rs3
//! ```

use std::{net::UdpSocket, time::Duration};

use lb_userspace::net::arp::ArpSocket;
use serde_json::Value;
use tests::{
    netns::{Netns, ifindex_in_current_netns, in_netns},
    packet::{Ipv4Flow, Ipv4Frame, with_fragment, with_ip_id},
    require_root,
    testbed::{HTTP_PORT, IFNAME, TestServer, Testbed, UDP_PORT, VIP},
};

/// The link between the two routers.
const NARROW_MTU: &str = "1280";
/// What the client downloads: enough full-size segments that none gets through by luck.
const DOWNLOAD_BYTES: usize = 1 << 20;
/// With the relay, the download takes well under a second; this only bounds a failure.
const DOWNLOAD_TIMEOUT_SECS: &str = "20";
/// Without the relay, the download must still be stuck after this long (curl gives up).
const STALL_SECS: &str = "6";
/// The routed client and its link.
const FAR_IP: &str = "198.19.2.2";
const FAR_NET: &str = "198.19.2.0/24";
const FAR_GATEWAY: &str = "198.19.2.1";
/// The routers' link: r2 (the testbed's client) and r1.
const R2_LINK_IP: &str = "198.19.1.1";
const R1_LINK_IP: &str = "198.19.1.2";
const LINK_PREFIX: &str = "/24";
const CLIENTS_NET: &str = "198.19.0.0/16";
const TESTBED_NET: &str = "198.18.0.0/24";
const TESTBED_GATEWAY: &str = "198.18.0.1";
/// The datagram the client fragments (the link's MTU is 1500).
const DATAGRAM_BYTES: usize = 4000;
const DATAGRAMS: u16 = 12;
const UDP_TIMEOUT: Duration = Duration::from_secs(3);
/// A later fragment's offset, in 8-byte units (1480 bytes), and a datagram id of our own.
const SECOND_FRAGMENT_UNITS: u16 = 185;
const RAW_DATAGRAM_ID: u16 = 0x7777;
const RAW_CLIENT_PORT: u16 = 45_000;

fn counter(stats: &Value, group: &str, name: &str) -> u64 {
    stats[group][name]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no {group}.{name} in {stats:#}"))
}

/// The far client and the router between it and the testbed's client, which becomes the
/// second router; both namespaces are deleted on drop (declared after the testbed, so first).
struct Routed {
    far: Netns,
    _r1: Netns,
}

fn route_far_client(bed: &Testbed) -> Routed {
    let r2 = &bed.client.ns;
    let r1 = Netns::create("r1");
    let far = Netns::create("far");
    r2.ip(&[
        "link",
        "add",
        "to-r1",
        "type",
        "veth",
        "peer",
        "name",
        "to-r2",
        "netns",
        r1.name(),
    ]);
    r1.ip(&[
        "link",
        "add",
        "to-far",
        "type",
        "veth",
        "peer",
        "name",
        IFNAME,
        "netns",
        far.name(),
    ]);
    for (ns, ifname, cidr, mtu) in [
        (
            r2,
            "to-r1",
            format!("{R2_LINK_IP}{LINK_PREFIX}"),
            NARROW_MTU,
        ),
        (
            &r1,
            "to-r2",
            format!("{R1_LINK_IP}{LINK_PREFIX}"),
            NARROW_MTU,
        ),
        (&r1, "to-far", format!("{FAR_GATEWAY}{LINK_PREFIX}"), "1500"),
        (&far, IFNAME, format!("{FAR_IP}{LINK_PREFIX}"), "1500"),
    ] {
        ns.ip(&["link", "set", ifname, "mtu", mtu, "up"]);
        ns.ip(&["addr", "add", &cidr, "dev", ifname]);
        // As on every testbed host: checksums finished before the "wire".
        ns.checksum_in_software(ifname);
    }
    far.ip(&["route", "add", "default", "via", FAR_GATEWAY]);
    r1.ip(&["route", "add", TESTBED_NET, "via", R2_LINK_IP]);
    r2.ip(&["route", "add", FAR_NET, "via", R1_LINK_IP]);
    for router in [r2, &r1] {
        router.sysctl("net.ipv4.ip_forward", "1");
    }
    for rs in &bed.real_servers {
        rs.ns
            .ip(&["route", "add", CLIENTS_NET, "via", TESTBED_GATEWAY]);
    }
    Routed { far, _r1: r1 }
}

/// `curl` of DOWNLOAD_BYTES from the VIP on the far client, within `max_time` seconds:
/// the bytes received, or why not.
fn download(far: &Netns, max_time: &str) -> Result<usize, String> {
    let url = format!("http://{VIP}:{HTTP_PORT}/bytes/{DOWNLOAD_BYTES}");
    let ran = far.exec(
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "--max-time",
            max_time,
            &url,
        ],
        Duration::from_secs(max_time.parse::<u64>().expect("seconds") + 10),
    );
    if ran.success() {
        ran.stdout
            .trim()
            .parse()
            .map_err(|e| format!("curl's size {:?}: {e}", ran.stdout))
    } else {
        Err(ran.describe())
    }
}

#[test]
#[ignore = "needs root, BPF and network namespaces: run with cargo xtask test"]
fn path_mtu_discovery_works_through_the_director_only_with_the_relay() {
    require_root();
    let mut bed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
    let routed = route_far_client(&bed);

    // Without the relay: the servers never learn the path MTU; their full-size segments
    // die at r2, and the download stalls until curl gives up.
    let config = bed.write_config("drlb.toml", &bed.default_config());
    let state = bed.new_state_dir(false);
    let mut no_relay = tests::drlb::start_drlb_with_env(
        &bed.director.ns,
        "drlb-no-relay",
        &config,
        &state,
        &[],
        bed.scratch.path(),
        &[&format!(
            "{}=1",
            lb_userspace::dataplane::loader::ICMP_RELAY_OFF_ENV
        )],
    );
    let stalled = download(&routed.far, STALL_SECS);
    assert!(
        stalled.is_err(),
        "without the relay the download completed ({stalled:?}): the test would prove nothing"
    );
    let stats = tests::drlb::stats_in(&bed.director.ns, &state);
    assert!(
        counter(&stats, "verdicts", "drop_no_service") > 0,
        "r2's 'fragmentation needed' reached the director and was dropped: {stats:#}"
    );
    assert_eq!(counter(&stats, "events", "icmp_relay"), 0, "{stats:#}");
    no_relay.stop(libc::SIGTERM, Duration::from_secs(10));

    // With it: a new daemon (the first one's pins went with it: `ip netns exec` gives each
    // daemon a private /sys).
    let state = bed.start_drlb();
    let downloaded = download(&routed.far, DOWNLOAD_TIMEOUT_SECS);
    assert_eq!(
        downloaded,
        Ok(DOWNLOAD_BYTES),
        "the 1 MB download through the VIP, over the 1280-byte link"
    );
    let stats = bed.stats_json(&state);
    assert!(
        counter(&stats, "events", "icmp_relay") > 0,
        "the relay carried r2's 'fragmentation needed': {stats:#}"
    );
    drop(routed);
}

#[test]
#[ignore = "needs root, BPF and network namespaces: run with cargo xtask test"]
fn ping_to_the_vip_is_answered_by_the_active_director_only() {
    require_root();
    let mut bed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
    let state = bed.start_drlb();
    let ping = |count: &str| {
        bed.client.ns.exec(
            &["ping", "-n", "-c", count, "-W", "1", "-w", "5", VIP],
            Duration::from_secs(15),
        )
    };
    let answered = ping("3");
    assert!(
        answered.success(),
        "ping to the VIP: {}",
        answered.describe()
    );
    let stats = bed.stats_json(&state);
    assert!(counter(&stats, "verdicts", "echo_reply") >= 3, "{stats:#}");

    let _ = bed.drlb_in(&state, &["vip", "deactivate"]).expect_success();
    let standby_before = counter(&bed.stats_json(&state), "verdicts", "drop_standby");
    let unanswered = ping("2");
    assert!(
        !unanswered.success(),
        "a standby answered ping: {}",
        unanswered.describe()
    );
    let stats = bed.stats_json(&state);
    assert!(
        counter(&stats, "verdicts", "drop_standby") > standby_before,
        "the client still sends to the director's MAC, which drops as standby: {stats:#}"
    );
}

#[test]
#[ignore = "needs root, BPF and network namespaces: run with cargo xtask test"]
fn fragmented_udp_reaches_one_backend_whole() {
    require_root();
    let mut bed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
    let state = bed.start_drlb();
    let names: Vec<String> = bed
        .real_servers
        .iter()
        .map(|rs| rs.name.to_owned())
        .collect();
    let echoes = in_netns(&bed.client.ns, move || {
        (0..DATAGRAMS)
            .map(|n| {
                let payload: String = format!("{n:04} ")
                    .chars()
                    .chain(std::iter::repeat('d'))
                    .take(DATAGRAM_BYTES)
                    .collect();
                let socket = UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
                socket
                    .set_read_timeout(Some(UDP_TIMEOUT))
                    .expect("a timeout");
                socket
                    .send_to(payload.as_bytes(), format!("{VIP}:{UDP_PORT}"))
                    .expect("sending the datagram");
                let mut buf = vec![0; 2 * DATAGRAM_BYTES];
                let reply = socket
                    .recv(&mut buf)
                    .map(|len| String::from_utf8_lossy(&buf[..len]).into_owned());
                (payload, reply)
            })
            .collect::<Vec<_>>()
    });
    for (payload, reply) in &echoes {
        let reply = reply
            .as_ref()
            .unwrap_or_else(|e| panic!("no echo of datagram {}: {e}", &payload[..4]));
        let (name, echoed) = reply.split_once(' ').expect("NAME PAYLOAD");
        assert!(names.iter().any(|n| n == name), "echoed by {name}");
        assert!(
            echoed == payload,
            "the datagram reached {name} whole and came back"
        );
    }
    let stats = bed.stats_json(&state);
    let followed = counter(&stats, "events", "fragment_forward");
    // 4000 bytes at MTU 1500: three fragments, two of them later ones.
    assert!(
        followed >= 2 * u64::from(DATAGRAMS),
        "every later fragment followed its first: {stats:#}"
    );

    // A later fragment sent before its first: dropped and counted; then the first goes
    // through, and the later one, sent again, follows it.
    let orphans = counter(&stats, "verdicts", "drop_fragment_orphan");
    let mut frame = Ipv4Frame::new(Ipv4Flow::udp(
        bed.client.ip.parse().expect("the client's address"),
        RAW_CLIENT_PORT,
        VIP.parse().expect("the VIP"),
        UDP_PORT,
    ));
    frame.src_mac = mac_bytes(&bed.client.mac);
    frame.dst_mac = mac_bytes(&bed.director.mac);
    let whole = with_ip_id(&frame.build(), RAW_DATAGRAM_ID);
    let first = with_fragment(&whole, true, 0);
    let later = with_fragment(&whole, false, SECOND_FRAGMENT_UNITS);
    let send = |frames: Vec<Vec<u8>>| {
        in_netns(&bed.client.ns, move || {
            let ifindex = ifindex_in_current_netns(IFNAME).expect("the client's eth0");
            let socket = ArpSocket::sender(ifindex).expect("a packet socket");
            for frame in &frames {
                socket.send(frame).expect("sending a fragment");
            }
        });
    };
    let wait_for_stats = |what: &str, check: &dyn Fn(&Value) -> bool| {
        tests::netns::poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
            let stats = bed.stats_json(&state);
            check(&stats).then_some(stats)
        })
        .unwrap_or_else(|| panic!("{what}: {:#}", bed.stats_json(&state)))
    };
    send(vec![later.clone()]);
    let stats = wait_for_stats("the fragment sent before its first is counted", &|stats| {
        counter(stats, "verdicts", "drop_fragment_orphan") > orphans
    });
    assert_eq!(
        counter(&stats, "verdicts", "drop_fragment_orphan"),
        orphans + 1,
        "one orphan: {stats:#}"
    );
    assert_eq!(counter(&stats, "events", "fragment_forward"), followed);
    send(vec![first, later]);
    wait_for_stats(
        "the later fragment, sent again after its first, follows it",
        &|stats| counter(stats, "events", "fragment_forward") == followed + 1,
    );
}

fn mac_bytes(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("a hex octet"))
        .collect();
    bytes.try_into().expect("six octets")
}
