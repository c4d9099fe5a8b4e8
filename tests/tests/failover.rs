//! Director failover with real keepalived (VRRP over unicast, no virtual MAC; seed 004) in two
//! director namespaces on the DR testbed: both run `drlb run --standby`, keepalived's notify
//! scripts run `drlb vip activate|deactivate`. Stopping the active director's keepalived makes
//! the standby take over: the client's neighbour entry for the VIP moves to the new director's
//! MAC within seconds (its gratuitous ARP: a burst, then a repeat), and long-lived TCP
//! connections keep working, each on its real server (both directors build the same Maglev
//! table). Then the first director takes over again (keepalived preempts).
//!
//! Needs root and keepalived: run with `cargo xtask test`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use tests::{
    bpffs::Bpffs,
    drlb::{drlb_in, start_drlb, stats_in},
    echo::{assert_all_kept, connect},
    extra::{Drive, ExtraDirector, Keepalived},
    netns::{Netns, poll_until, wait_for},
    require_root,
    testbed::{
        IFNAME, TCP_ECHO_PORT, TestServer, Testbed, VIP, arping_reply_macs, frame_source_mac,
    },
};

const CONNECTIONS: usize = 20;
/// "Within a few seconds": from stopping keepalived to the client's entry holding the new MAC.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Becoming MASTER takes keepalived 3 advertisement intervals and a skew at start.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// The MAC the client's neighbour table holds for the VIP, if any.
fn client_vip_mac(bed: &Testbed) -> Option<String> {
    let line = bed.client.ns.ip(&["neigh", "show", VIP, "dev", IFNAME]);
    let mut words = line.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_ascii_lowercase)
}

/// The time of a `tcpdump` line (`05:27:15.690090 ...`) in seconds since midnight.
fn seconds_of_day(line: &str) -> Option<f64> {
    let (h, rest) = line.split_once(':')?;
    let (m, rest) = rest.split_once(':')?;
    let s: f64 = rest.split_whitespace().next()?.parse().ok()?;
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s)
}

fn state_of(ns: &Netns, state: &Path) -> String {
    stats_in(ns, state)["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn packets(stats: &serde_json::Value) -> u64 {
    stats["services"][0]["packets"].as_u64().unwrap_or(0)
}

#[test]
#[ignore = "needs root and keepalived: run with cargo xtask test"]
fn the_standby_takes_over_with_keepalived_and_connections_survive() {
    require_root();
    let mut bed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
    let second = ExtraDirector::plug(&bed.switch, "director2", "198.18.0.3", "02:d1:00:00:00:03");
    let (state_a, state_b) = (bed.new_state_dir(false), bed.new_state_dir(false));
    let (a, b) = (&bed.director, &second.host);
    let backends = bed.backends_toml();
    let config = bed.write_config(
        "pair.toml",
        &format!(
            "[director]\ninterface = \"{IFNAME}\"\n\n[[service]]\nvip = \"{VIP}\"\nport = {TCP_ECHO_PORT}\n\
             protocol = \"tcp\"\n{backends}"
        ),
    );
    let logs = bed.scratch.path().to_owned();
    let mut drlb_a = start_drlb(&a.ns, "drlb-a", &config, &state_a, &["--standby"], &logs);
    let mut drlb_b = start_drlb(&b.ns, "drlb-b", &config, &state_b, &["--standby"], &logs);
    for (ns, state, name) in [(&a.ns, &state_a, "a"), (&b.ns, &state_b, "b")] {
        assert_eq!(
            state_of(ns, state),
            "standby",
            "director {name} starts as standby"
        );
        wait_for(
            &format!("director {name}'s backends to be active"),
            Duration::from_secs(15),
            || {
                let stats = stats_in(ns, state);
                let backends = stats["services"][0]["backends"].as_array()?.clone();
                (backends.len() == 3
                    && backends
                        .iter()
                        .all(|b| b["state"] == "active" && b["health"] == "up"))
                .then_some(())
            },
        );
    }
    let arping = bed.arping_vip(2);
    assert!(
        arping_reply_macs(&arping.stdout).is_empty(),
        "two standby directors must not answer ARP for the VIP: {}",
        arping.describe()
    );

    let keepalived = |name: &str, priority, own: &str, peer: &str, state: &Path| Keepalived {
        router_id: format!("drlb_{name}"),
        interface: IFNAME.to_owned(),
        priority,
        own_ip: own.to_owned(),
        peer_ip: peer.to_owned(),
        track_drlb: None,
        drive: Drive::NotifyScripts {
            drlb: std::fs::canonicalize(tests::drlb_binary()).expect("the drlb binary"),
            state_dir: state.to_owned(),
        },
    };
    let keepalived_a = keepalived("a", 150, a.ip, b.ip, &state_a);
    let keepalived_b = keepalived("b", 100, b.ip, a.ip, &state_b);
    let mut vrrp_a = keepalived_a.start(&a.ns, "keepalived-a", &logs);
    wait_for(
        "director a to become active (keepalived MASTER)",
        ELECTION_TIMEOUT,
        || (state_of(&a.ns, &state_a) == "active").then_some(()),
    );
    let vrrp_b = keepalived_b.start(&b.ns, "keepalived-b", &logs);
    vrrp_b.expect_output(
        "Entering BACKUP STATE",
        ELECTION_TIMEOUT,
        "keepalived b did not enter BACKUP",
    );
    assert_eq!(
        state_of(&b.ns, &state_b),
        "standby",
        "b stays standby while a is MASTER"
    );

    let mut connections = connect(&bed.client.ns, CONNECTIONS);
    assert_eq!(
        client_vip_mac(&bed).as_deref(),
        Some(a.mac.as_str()),
        "the client resolved the VIP to a"
    );
    let (through_a, through_b) = (
        packets(&stats_in(&a.ns, &state_a)),
        packets(&stats_in(&b.ns, &state_b)),
    );
    assert!(
        through_a >= 3 * CONNECTIONS as u64,
        "a forwarded the connections: {through_a} packets"
    );
    assert_eq!(through_b, 0, "the standby forwarded nothing");

    // Failover: a's keepalived stops (a priority-0 advertisement, then its notify_stop).
    let capture = bed.capture(
        &bed.client,
        &format!("arp and src host {VIP}"),
        "tcpdump-garp",
    );
    let stopped = Instant::now();
    let status = vrrp_a.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "keepalived a: {}", vrrp_a.describe());
    let moved = wait_for(
        "the client's neighbour entry for the VIP to move to b",
        TAKEOVER_TIMEOUT,
        || (client_vip_mac(&bed).as_deref() == Some(b.mac.as_str())).then_some(stopped.elapsed()),
    );
    println!("the client's entry for the VIP moved to b {moved:?} after keepalived a was stopped");
    assert_eq!(state_of(&b.ns, &state_b), "active");
    wait_for(
        "a to be deactivated by its notify_stop",
        Duration::from_secs(5),
        || (state_of(&a.ns, &state_a) == "standby").then_some(()),
    );
    assert_all_kept(&mut connections, "the failover to b");
    let after_b = packets(&stats_in(&b.ns, &state_b));
    assert!(
        after_b >= CONNECTIONS as u64,
        "b forwards the established connections: {after_b} packets"
    );
    let fresh = connect(&bed.client.ns, 5);
    assert_eq!(fresh.len(), 5, "new connections through b");
    let arping = bed.arping_vip(2);
    assert_eq!(
        arping_reply_macs(&arping.stdout),
        [b.mac.clone(), b.mac.clone()],
        "{}",
        arping.describe()
    );

    // b's announcement: a burst at once, and the same burst again seconds later.
    std::thread::sleep(Duration::from_secs(7).saturating_sub(stopped.elapsed()));
    let frames = capture.stop();
    let announcement = format!("Request who-has {VIP} tell {VIP}");
    let garp_times: Vec<f64> = frames
        .iter()
        .filter(|l| {
            frame_source_mac(l).as_deref() == Some(b.mac.as_str()) && l.contains(&announcement)
        })
        .filter_map(|l| seconds_of_day(l))
        .collect();
    let spread = garp_times
        .last()
        .zip(garp_times.first())
        .map(|(l, f)| l - f);
    assert!(
        garp_times.len() >= 10 && spread.is_some_and(|s| s >= 4.0),
        "b's gratuitous ARP: {} frames over {spread:?} s, not two bursts of 5 seconds apart:\n{}",
        garp_times.len(),
        frames.join("\n")
    );

    // Failback: a's keepalived comes back with the higher priority and preempts.
    let _vrrp_a = keepalived_a.start(&a.ns, "keepalived-a2", &logs);
    wait_for(
        "the client's entry for the VIP to move back to a",
        ELECTION_TIMEOUT,
        || (client_vip_mac(&bed).as_deref() == Some(a.mac.as_str())).then_some(()),
    );
    wait_for(
        "b to be deactivated by its notify_backup",
        Duration::from_secs(5),
        || (state_of(&b.ns, &state_b) == "standby").then_some(()),
    );
    assert_eq!(state_of(&a.ns, &state_a), "active");
    assert_all_kept(&mut connections, "the failback to a");
    let log_b = drlb_b.stderr();
    assert!(
        log_b.contains("VIPs announced with gratuitous ARP"),
        "{log_b}"
    );
    for (name, drlb) in [("a", &drlb_a), ("b", &drlb_b)] {
        let log = drlb.stderr();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("VIP c")).collect();
        println!("drlb {name}'s conflict lines:\n{}", lines.join("\n"));
    }
    for (name, drlb) in [("a", &mut drlb_a), ("b", &mut drlb_b)] {
        assert!(
            drlb.try_status().is_none(),
            "drlb {name} died: {}",
            drlb.describe()
        );
    }
    let doctor = drlb_in(&b.ns, &state_b, &["doctor"]);
    assert!(
        doctor.success() && doctor.stdout.contains(&format!("answered by {}", a.mac)),
        "doctor on the standby names the active director: {}",
        doctor.describe()
    );
}

/// docs/keepalived.md, "When drlb stops or dies": keepalived tracks drlb (a `track_script`
/// running `drlb stats`), so
/// when drlb is killed on the master its keepalived enters FAULT and hands over; `notify_fault`
/// runs `drlb vip deactivate`, which, with no daemon to ask, makes the pinned data plane (still
/// forwarding) a standby itself. Only the new master answers ARP, and the connections continue
/// on their real servers through it.
#[test]
#[ignore = "needs root and keepalived: run with cargo xtask test"]
fn killing_drlb_on_the_master_hands_over_and_silences_its_data_plane() {
    require_root();
    let mut bed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
    let second = ExtraDirector::plug(&bed.switch, "director2", "198.18.0.3", "02:d1:00:00:00:03");
    let (state_a, state_b) = (bed.new_state_dir(false), bed.new_state_dir(false));
    let bpffs = Bpffs::mount(bed.scratch.path().join("bpffs"));
    let (a, b) = (&bed.director, &second.host);
    let backends = bed.backends_toml();
    let config = |name: &str| {
        bed.write_config(
            &format!("{name}.toml"),
            &format!(
                "[director]\ninterface = \"{IFNAME}\"\npin_dir = \"{}\"\n\n[[service]]\n\
                 vip = \"{VIP}\"\nport = {TCP_ECHO_PORT}\nprotocol = \"tcp\"\n{backends}",
                bpffs.path().join(name).display()
            ),
        )
    };
    let (config_a, config_b) = (config("a"), config("b"));
    let logs = bed.scratch.path().to_owned();
    let mut drlb_a = start_drlb(&a.ns, "drlb-a", &config_a, &state_a, &["--standby"], &logs);
    let _drlb_b = start_drlb(&b.ns, "drlb-b", &config_b, &state_b, &["--standby"], &logs);
    let drlb = std::fs::canonicalize(tests::drlb_binary()).expect("the drlb binary");
    let keepalived = |name: &str, priority, own: &str, peer: &str, state: &Path| Keepalived {
        router_id: format!("drlb_{name}"),
        interface: IFNAME.to_owned(),
        priority,
        own_ip: own.to_owned(),
        peer_ip: peer.to_owned(),
        track_drlb: Some(format!(
            "{} stats --state-dir {}",
            drlb.display(),
            state.display()
        )),
        drive: Drive::NotifyScripts {
            drlb: drlb.clone(),
            state_dir: state.to_owned(),
        },
    };
    let vrrp_a = keepalived("a", 150, a.ip, b.ip, &state_a).start(&a.ns, "keepalived-a", &logs);
    let active = poll_until(ELECTION_TIMEOUT, Duration::from_millis(100), || {
        (state_of(&a.ns, &state_a) == "active").then_some(())
    });
    assert!(
        active.is_some(),
        "director a did not become active: {}",
        vrrp_a.describe()
    );
    let _vrrp_b = keepalived("b", 100, b.ip, a.ip, &state_b).start(&b.ns, "keepalived-b", &logs);
    wait_for(
        "the backends to be up on b",
        Duration::from_secs(15),
        || {
            let stats = stats_in(&b.ns, &state_b);
            let backends = stats["services"][0]["backends"].as_array()?.clone();
            backends
                .iter()
                .all(|b| b["state"] == "active" && b["health"] == "up")
                .then_some(())
        },
    );
    let mut connections = connect(&bed.client.ns, CONNECTIONS);
    assert_eq!(client_vip_mac(&bed).as_deref(), Some(a.mac.as_str()));

    // drlb on the master dies; its data plane goes on forwarding (pinned) until keepalived's
    // notify_fault silences it.
    drlb_a.stop(libc::SIGKILL, Duration::from_secs(10));
    vrrp_a.expect_output(
        "Entering FAULT STATE",
        ELECTION_TIMEOUT,
        "keepalived a did not notice that drlb died",
    );
    wait_for(
        "b to become active and the client to move to it",
        ELECTION_TIMEOUT,
        || {
            (state_of(&b.ns, &state_b) == "active"
                && client_vip_mac(&bed).as_deref() == Some(b.mac.as_str()))
            .then_some(())
        },
    );
    let arping = bed.arping_vip(2);
    assert_eq!(
        arping_reply_macs(&arping.stdout),
        [b.mac.clone(), b.mac.clone()],
        "only the new master answers ARP: a's data plane was made a standby: {}",
        arping.describe()
    );
    assert!(
        a.ns.ip(&["link", "show", "dev", IFNAME]).contains("xdp"),
        "a's data plane stays attached (pinned) when drlb dies"
    );
    assert_all_kept(&mut connections, "drlb killed on the master");
}
