//! End-to-end tests of backend scheduling on the DR testbed (client, director, rs1..rs3):
//! long-lived TCP connections survive backend changes made by SIGHUP and by the CLI, a health
//! check takes a dead server out, and new connections spread in proportion to weights.
//!
//! The long-lived connections go to each real server's line echo (`drlb-testsrv tcp-echo`),
//! which answers every line with the server's name: a connection that reaches another server
//! than the one it was opened on is reset there, so "still answers, with the same name" is
//! exactly "kept its backend".

use std::{collections::BTreeMap, path::Path, time::Duration};

use tests::{
    echo::{Connection, assert_all_kept, connect},
    netns::wait_for,
    testbed::{TCP_ECHO_PORT, TestServer, Testbed, VIP},
};

const CONNECTIONS: usize = 50;
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
const SERVICE: &str = "tcp/198.18.0.100:9000";
/// Fast health checks, so the test does not wait long for a verdict.
const HEALTH_CHECK: &str = "[service.health_check]\nkind = \"tcp\"\ninterval_ms = 300\ntimeout_ms = 200\nrise = 2\nfall = 2\n";

fn testbed() -> Testbed {
    tests::require_root();
    Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")))
}

/// A config with one TCP service on the echo port and these (real server address, weight).
fn config(backends: &[(&str, u32)]) -> String {
    let mut text = format!(
        "[director]\ninterface = \"eth0\"\n\n[[service]]\nvip = \"{VIP}\"\nport = {TCP_ECHO_PORT}\nprotocol = \"tcp\"\n{HEALTH_CHECK}"
    );
    for (address, weight) in backends {
        text += &format!("\n[[service.backend]]\naddress = \"{address}\"\nweight = {weight}\n");
    }
    text
}

fn count_by_server(connections: &[Connection]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for c in connections {
        *counts.entry(c.served_by.clone()).or_default() += 1;
    }
    counts
}

/// The stats JSON entry of a backend of the echo service.
fn backend_stats(bed: &Testbed, state: &Path, address: &str) -> serde_json::Value {
    let stats = bed.stats_json(state);
    let service = stats["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["port"] == TCP_ECHO_PORT))
        .unwrap_or_else(|| panic!("no echo service in {stats}"))
        .clone();
    service["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["address"] == address))
        .unwrap_or_else(|| panic!("no backend {address} in {service}"))
        .clone()
}

fn wait_for_backend(
    bed: &Testbed,
    state: &Path,
    address: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    wait_for(&format!("backend {address} {what}"), CHANGE_TIMEOUT, || {
        check(&backend_stats(bed, state, address)).then_some(())
    });
}

fn set_weight(bed: &Testbed, state: &Path, address: &str, weight: u32) {
    let _ = bed
        .drlb_in(
            state,
            &[
                "backend",
                "set-weight",
                "--service",
                SERVICE,
                "--address",
                address,
                "--weight",
                &weight.to_string(),
            ],
        )
        .expect_success();
}

fn reload(bed: &mut Testbed, config: &Path, text: &str) {
    std::fs::write(config, text).expect("rewriting the config");
    bed.drlb().signal(libc::SIGHUP);
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn long_lived_connections_survive_adding_draining_and_reweighting() {
    let mut bed = testbed();
    let config = bed.write_config(
        "echo.toml",
        &config(&[("198.18.0.11", 1), ("198.18.0.12", 1)]),
    );
    let state = bed.start_drlb_with(&config);
    let mut connections = connect(&bed.client.ns, CONNECTIONS);
    let spread = count_by_server(&connections);
    assert_eq!(
        spread.keys().collect::<Vec<_>>(),
        ["rs1", "rs2"],
        "both backends serve: {spread:?}"
    );

    // SIGHUP: add rs3.
    let three = config_text(1, 1, 1);
    reload(&mut bed, &config, &three);
    wait_for_backend(&bed, &state, "198.18.0.13", "active", |b| {
        b["state"] == "active"
    });
    assert_all_kept(&mut connections, "adding rs3 by SIGHUP");
    let fresh = connect(&bed.client.ns, CONNECTIONS);
    assert!(
        count_by_server(&fresh).contains_key("rs3"),
        "new connections reach the added rs3"
    );

    // CLI: drain rs1.
    set_weight(&bed, &state, "198.18.0.11", 0);
    wait_for_backend(&bed, &state, "198.18.0.11", "drained", |b| {
        b["state"] == "drained"
    });
    assert_all_kept(&mut connections, "draining rs1 by the CLI");
    let fresh = connect(&bed.client.ns, CONNECTIONS);
    assert!(
        !count_by_server(&fresh).contains_key("rs1"),
        "no new connection to the drained rs1: {:?}",
        count_by_server(&fresh)
    );
    assert!(
        count_by_server(&connections).contains_key("rs1"),
        "and yet rs1 keeps its established connections"
    );

    // SIGHUP: the file now drains rs1 too and reweights rs2.
    reload(&mut bed, &config, &config_text(0, 3, 1));
    wait_for_backend(&bed, &state, "198.18.0.12", "at weight 3", |b| {
        b["weight"] == 3
    });
    assert_all_kept(&mut connections, "reweighting rs2 by SIGHUP");

    // CLI: reweight rs3.
    set_weight(&bed, &state, "198.18.0.13", 2);
    wait_for_backend(&bed, &state, "198.18.0.13", "at weight 2", |b| {
        b["weight"] == 2
    });
    assert_all_kept(&mut connections, "reweighting rs3 by the CLI");

    // A refused change changes nothing.
    let refused = bed.drlb_in(
        &state,
        &[
            "backend",
            "set-weight",
            "--service",
            SERVICE,
            "--address",
            "198.18.0.99",
            "--weight",
            "1",
        ],
    );
    assert!(
        !refused.success() && refused.stderr.contains("has no backend 198.18.0.99"),
        "{}",
        refused.describe()
    );
    assert_all_kept(&mut connections, "a refused change");
}

/// The config of the echo service with rs1..rs3 at these weights.
fn config_text(rs1: u32, rs2: u32, rs3: u32) -> String {
    config(&[
        ("198.18.0.11", rs1),
        ("198.18.0.12", rs2),
        ("198.18.0.13", rs3),
    ])
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_dead_server_is_taken_out_by_its_health_check() {
    let mut bed = testbed();
    let config = bed.write_config("echo.toml", &config_text(1, 1, 1));
    let state = bed.start_drlb_with(&config);
    for address in ["198.18.0.11", "198.18.0.12", "198.18.0.13"] {
        wait_for_backend(&bed, &state, address, "healthy", |b| b["health"] == "up");
    }
    bed.stop_service("rs3", "tcp-echo");
    wait_for_backend(&bed, &state, "198.18.0.13", "down", |b| {
        b["health"] == "down" && b["state"] == "down"
    });
    let fresh = connect(&bed.client.ns, CONNECTIONS);
    let spread = count_by_server(&fresh);
    assert_eq!(
        spread.keys().collect::<Vec<_>>(),
        ["rs1", "rs2"],
        "new connections avoid the dead rs3: {spread:?}"
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn new_connections_spread_in_proportion_to_weights() {
    const SAMPLES: usize = 300;
    /// Allowed distance of each share from its weight's share: over 3 standard deviations of
    /// a binomial with SAMPLES draws at p = 1/2.
    const TOLERANCE: f64 = 0.1;
    let mut bed = testbed();
    let config = bed.write_config("echo.toml", &config_text(1, 2, 3));
    bed.start_drlb_with(&config);
    let connections = connect(&bed.client.ns, SAMPLES);
    let counts = count_by_server(&connections);
    for (name, weight) in [("rs1", 1.0), ("rs2", 2.0), ("rs3", 3.0)] {
        let share = *counts.get(name).unwrap_or(&0) as f64 / SAMPLES as f64;
        let expected = weight / 6.0;
        assert!(
            (share - expected).abs() <= TOLERANCE,
            "{name}: share {share:.3}, weight share {expected:.3}: {counts:?}"
        );
    }
}
