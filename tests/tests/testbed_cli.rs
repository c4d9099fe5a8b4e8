//! `drlb testbed up|down` as users run it in CI: the example script (tests/ci-example.sh), that
//! `down` is idempotent, that `up` refuses an existing testbed and cleans up after a failure.
//!
//! Needs root: run with `cargo xtask test testbed`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use tests::{
    drlb_binary,
    netns::{Ran, run_bounded},
    require_root,
};

/// The example script builds a testbed, starts servers and loops over curl: all bounded.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
/// `up` waits for drlb (30 s at most), `down` for its processes to stop.
const DRLB_TESTBED_TIMEOUT: Duration = Duration::from_secs(90);
const STATE_ROOT: &str = "/run/drlb-testbed";

/// A testbed name no other run uses (parallel runs, parallel tests): `tb<pid><suffix>`.
fn unique_name(suffix: &str) -> String {
    format!("tb{}{suffix}", std::process::id())
}

/// Runs `drlb testbed down --name NAME` when dropped, so a failing test leaves nothing behind.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(drlb_binary())
            .args(["testbed", "down", "--name", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn drlb_testbed(args: &[&str]) -> Ran {
    run_bounded(
        Command::new(drlb_binary()).arg("testbed").args(args),
        DRLB_TESTBED_TIMEOUT,
    )
}

/// The namespaces of testbed `name` that exist.
fn namespaces_of(name: &str) -> Vec<String> {
    let prefix = format!("drlbtb-{name}-");
    run_bounded(
        Command::new("ip").args(["netns", "list"]),
        DRLB_TESTBED_TIMEOUT,
    )
    .expect_success()
    .lines()
    .filter_map(|l| l.split_whitespace().next())
    .filter(|ns| ns.starts_with(&prefix))
    .map(str::to_owned)
    .collect()
}

fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

#[track_caller]
fn assert_gone(name: &str) {
    let left = namespaces_of(name);
    assert!(
        left.is_empty(),
        "namespaces of testbed {name} remain: {left:?}"
    );
    assert!(
        !state_dir(name).exists(),
        "{} remains",
        state_dir(name).display()
    );
}

/// The example script's line for the IPv6 VIP when every server answered through it.
const ANSWERED_THROUGH_VIP6: &str = "answered through http://[2001:2::100]: ";

/// Runs tests/ci-example.sh on testbed `name` with `testbed_args` for `up`; it must say OK and
/// leave nothing behind.
fn run_ci_example(name: &str, testbed_args: &str) -> Ran {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci-example.sh");
    let ran = run_bounded(
        Command::new("bash")
            .arg(&script)
            .env("DRLB", drlb_binary())
            .env("TESTBED_NAME", name)
            .env("TESTBED_ARGS", testbed_args),
        SCRIPT_TIMEOUT,
    );
    assert!(ran.success(), "the CI example failed: {}", ran.describe());
    assert!(
        ran.stdout.contains("OK: every real server answered"),
        "the CI example did not say OK: {}",
        ran.describe()
    );
    assert_gone(name);
    ran
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn testbed_ci_example_script_reaches_every_server_through_the_vip() {
    require_root();
    let name = unique_name("ci");
    let _down = Down(name.clone());
    let ran = run_ci_example(&name, "");
    assert!(
        !ran.stdout.contains(ANSWERED_THROUGH_VIP6),
        "no IPv6 without --ipv6: {}",
        ran.describe()
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn testbed_two_armed_ci_example_reaches_every_server_through_the_vip() {
    require_root();
    let name = unique_name("two");
    let _down = Down(name.clone());
    let _ = run_ci_example(&name, "--two-armed --servers 2");
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn testbed_ipv6_ci_example_reaches_every_server_through_both_vips() {
    require_root();
    let name = unique_name("v6");
    let _down = Down(name.clone());
    let ran = run_ci_example(&name, "--ipv6 --servers 2");
    assert!(
        ran.stdout.contains(ANSWERED_THROUGH_VIP6),
        "the script did not go through the IPv6 VIP: {}",
        ran.describe()
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn testbed_ipv6_two_armed_ci_example_reaches_every_server_through_both_vips() {
    require_root();
    let name = unique_name("v6two");
    let _down = Down(name.clone());
    let ran = run_ci_example(&name, "--ipv6 --two-armed --servers 2");
    assert!(
        ran.stdout.contains(ANSWERED_THROUGH_VIP6),
        "the script did not go through the IPv6 VIP: {}",
        ran.describe()
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn testbed_down_is_idempotent_and_up_refuses_an_existing_one() {
    require_root();
    let name = unique_name("twice");
    let _down = Down(name.clone());

    let nothing = drlb_testbed(&["down", "--name", &name]);
    assert!(
        nothing.success(),
        "down of nothing failed: {}",
        nothing.describe()
    );

    let up = drlb_testbed(&["up", "--name", &name, "--servers", "2"]);
    let json = up.expect_success();
    let testbed: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("up printed no single JSON object ({e}): {json}"));
    assert_eq!(testbed["name"], name.as_str(), "{testbed}");
    assert_eq!(
        testbed["servers"].as_array().map(Vec::len),
        Some(2),
        "{testbed}"
    );
    let built = namespaces_of(&name);
    assert_eq!(
        built.len(),
        5,
        "switch, client, director, rs1, rs2: {built:?}"
    );

    let again = drlb_testbed(&["up", "--name", &name]);
    assert!(
        !again.success(),
        "a second up succeeded: {}",
        again.describe()
    );
    assert!(
        again.stderr.contains("exists already") && again.stdout.trim().is_empty(),
        "the second up should say the testbed exists, and print no JSON: {}",
        again.describe()
    );
    assert_eq!(
        namespaces_of(&name),
        built,
        "the failed second up must leave the first testbed alone"
    );
    let socket = state_dir(&name).join("director/drlb.sock");
    assert!(
        socket.exists(),
        "{} is gone after the second up",
        socket.display()
    );

    for round in 1..=2 {
        let down = drlb_testbed(&["down", "--name", &name]);
        assert!(down.success(), "down {round} failed: {}", down.describe());
        assert_gone(&name);
    }
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn testbed_up_that_fails_removes_what_it_made() {
    require_root();
    let name = unique_name("bad");
    let _down = Down(name.clone());
    let config = std::env::temp_dir().join(format!("{name}.toml"));
    // Valid TOML, but drlb run cannot start: the director has no such interface.
    std::fs::write(&config, "[director]\ninterface = \"nosuch0\"\n")
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
    let config_text = config.to_str().expect("a UTF-8 temp path");
    let up = drlb_testbed(&["up", "--name", &name, "--config", config_text]);
    let _ = std::fs::remove_file(&config);
    assert!(
        !up.success(),
        "up with a broken config succeeded: {}",
        up.describe()
    );
    assert!(
        up.stderr.contains("did not become ready") && up.stderr.contains("nosuch0"),
        "up should say drlb did not start, and why: {}",
        up.describe()
    );
    assert_gone(&name);
}
