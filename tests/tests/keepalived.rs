//! keepalived drives drlb with nothing but `virtual_ipaddress` (issue 12, "Follow the VIP
//! address"): two director namespaces on the DR testbed, each with real keepalived (unicast
//! VRRP peers, no virtual MAC, no notify script) and drlb with `active_when = "vip-assigned"`.
//! keepalived adds the VIP to the master's eth0 and removes it from the backup; drlb follows
//! the kernel's address events. Stopping the master's keepalived moves the VIP, the client's
//! neighbour entry and 20 long-lived TCP connections to the other director, each connection
//! still on its real server (both directors build the same Maglev table).
//!
//! Needs root and keepalived: run with `cargo xtask test`.

use std::{path::Path, time::Duration};

use tests::{
    drlb::{drlb_in, start_drlb, stats_in},
    echo::{assert_all_kept, connect},
    extra::{Drive, ExtraDirector, Keepalived},
    netns::{Netns, wait_for},
    require_root,
    testbed::{IFNAME, TCP_ECHO_PORT, TestServer, Testbed, VIP, arping_reply_macs},
};

const CONNECTIONS: usize = 20;
/// Becoming MASTER takes keepalived 3 advertisement intervals and a skew at start.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(15);
/// From stopping the master's keepalived to the client's entry holding the other MAC.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long drlb may take to follow an address change (it follows the event at once).
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(5);

/// The MAC the client's neighbour table holds for the VIP, if any.
fn client_vip_mac(bed: &Testbed) -> Option<String> {
    let line = bed.client.ns.ip(&["neigh", "show", VIP, "dev", IFNAME]);
    let mut words = line.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_ascii_lowercase)
}

fn state_of(ns: &Netns, state: &Path) -> String {
    stats_in(ns, state)["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn holds_vip(ns: &Netns) -> bool {
    ns.ip(&["-4", "addr", "show", "dev", IFNAME])
        .contains(&format!("inet {VIP}/32"))
}

fn packets(stats: &serde_json::Value) -> u64 {
    stats["services"][0]["packets"].as_u64().unwrap_or(0)
}

#[test]
#[ignore = "needs root and keepalived: run with cargo xtask test"]
fn keepalived_virtual_ipaddress_alone_moves_the_director_and_connections_survive() {
    require_root();
    let mut bed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
    let second = ExtraDirector::plug(&bed.switch, "director2", "198.18.0.3", "02:d1:00:00:00:03");
    let (state_a, state_b) = (bed.new_state_dir(false), bed.new_state_dir(false));
    let (a, b) = (&bed.director, &second.host);
    let backends = bed.backends_toml();
    let config = bed.write_config(
        "follow.toml",
        &format!(
            "[director]\ninterface = \"{IFNAME}\"\nactive_when = \"vip-assigned\"\n\n[[service]]\n\
             vip = \"{VIP}\"\nport = {TCP_ECHO_PORT}\nprotocol = \"tcp\"\n{backends}"
        ),
    );
    let logs = bed.scratch.path().to_owned();
    let mut drlb_a = start_drlb(&a.ns, "drlb-a", &config, &state_a, &[], &logs);
    let mut drlb_b = start_drlb(&b.ns, "drlb-b", &config, &state_b, &[], &logs);
    for (ns, state, name) in [(&a.ns, &state_a, "a"), (&b.ns, &state_b, "b")] {
        assert_eq!(
            state_of(ns, state),
            "standby",
            "director {name} does not hold the VIP: standby"
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
    let refused = drlb_in(&a.ns, &state_a, &["vip", "activate"]);
    assert!(
        !refused.success() && refused.stderr.contains("vip-assigned"),
        "`drlb vip activate` is refused while the addresses decide: {}",
        refused.describe()
    );
    assert_eq!(state_of(&a.ns, &state_a), "standby");

    let keepalived = |name: &str, priority, own: &str, peer: &str| Keepalived {
        router_id: format!("drlb_{name}"),
        interface: IFNAME.to_owned(),
        priority,
        own_ip: own.to_owned(),
        peer_ip: peer.to_owned(),
        track_drlb: None,
        drive: Drive::VirtualIpaddress {
            vip: VIP.to_owned(),
        },
    };
    let keepalived_a = keepalived("a", 150, a.ip, b.ip);
    let keepalived_b = keepalived("b", 100, b.ip, a.ip);
    let text = keepalived_a.config();
    assert!(
        text.contains("virtual_ipaddress") && !text.contains("notify") && !text.contains("vmac"),
        "keepalived as users run it: {text}"
    );
    let mut vrrp_a = keepalived_a.start(&a.ns, "keepalived-a", &logs);
    wait_for(
        "director a to hold the VIP and be active (keepalived MASTER)",
        ELECTION_TIMEOUT,
        || (holds_vip(&a.ns) && state_of(&a.ns, &state_a) == "active").then_some(()),
    );
    let vrrp_b = keepalived_b.start(&b.ns, "keepalived-b", &logs);
    vrrp_b.expect_output(
        "Entering BACKUP STATE",
        ELECTION_TIMEOUT,
        "keepalived b did not enter BACKUP",
    );
    assert!(!holds_vip(&b.ns), "the backup does not hold the VIP");
    assert_eq!(state_of(&b.ns, &state_b), "standby");
    let stats_a = stats_in(&a.ns, &state_a);
    assert_eq!(
        stats_a["vips"],
        serde_json::json!([{"vip": VIP, "active": true, "local": true}]),
        "{stats_a}"
    );

    let mut connections = connect(&bed.client.ns, CONNECTIONS);
    let servers: std::collections::BTreeSet<&str> =
        connections.iter().map(|c| c.served_by.as_str()).collect();
    assert!(
        servers.len() > 1,
        "the connections are spread over the real servers: {servers:?}"
    );
    assert_eq!(
        client_vip_mac(&bed).as_deref(),
        Some(a.mac.as_str()),
        "the client resolved the VIP to a"
    );
    assert!(
        packets(&stats_in(&a.ns, &state_a)) >= 3 * CONNECTIONS as u64,
        "a forwards the connections"
    );
    assert_eq!(packets(&stats_in(&b.ns, &state_b)), 0, "b forwards nothing");

    // Failover: a's keepalived stops (it removes the VIP and sends a priority-0 advert).
    let status = vrrp_a.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "keepalived a: {}", vrrp_a.describe());
    wait_for("b to hold the VIP and be active", TAKEOVER_TIMEOUT, || {
        (holds_vip(&b.ns) && state_of(&b.ns, &state_b) == "active").then_some(())
    });
    wait_for(
        "a to follow the VIP's removal to standby",
        FOLLOW_TIMEOUT,
        || (!holds_vip(&a.ns) && state_of(&a.ns, &state_a) == "standby").then_some(()),
    );
    wait_for(
        "the client's neighbour entry for the VIP to move to b",
        TAKEOVER_TIMEOUT,
        || (client_vip_mac(&bed).as_deref() == Some(b.mac.as_str())).then_some(()),
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
        "only b answers ARP for the VIP: {}",
        arping.describe()
    );
    let log_b = drlb_b.stderr();
    assert!(
        log_b.contains("address change: VIP") && log_b.contains("VIPs announced"),
        "b followed the address and announced it: {log_b}"
    );
    for (name, drlb) in [("a", &mut drlb_a), ("b", &mut drlb_b)] {
        assert!(
            drlb.try_status().is_none(),
            "drlb {name} died: {}",
            drlb.describe()
        );
    }
}
