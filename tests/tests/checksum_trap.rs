//! The veth checksum trap, as a new user meets it: a client on a local veth left as created
//! (tx checksum offload on) sends TCP/UDP with unfinished checksums, native XDP forwards them as
//! they are, and the real servers drop them. The requests fail as they always did; now the log,
//! `drlb stats` and `drlb doctor` say why and how to fix it. With the fix, the requests work.

use std::time::Duration;

use tests::{
    netns::poll_until,
    require_root,
    testbed::{IFNAME, TestServer, Testbed, UDP_PORT, VIP, vip_url},
};

/// What the log, the stats table and doctor all say.
const ADVICE: &str = "unfinished TCP/UDP checksums";
const FIX: &str = "ethtool -K";
/// Requests tried while the trap is set: each is a new flow (a new client port).
const TRAPPED_REQUESTS: u32 = 3;
/// How long the daemon may take to log (it looks once a second).
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
#[ignore = "needs root, BPF and network namespaces: run with cargo xtask test"]
fn unfinished_checksums_from_a_veth_are_reported_with_the_fix() {
    require_root();
    let mut bed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
    // The client's veth as created: the testbed had turned its offload off.
    bed.client.ns.run(&["ethtool", "-K", IFNAME, "tx", "on"]);
    let state = bed.start_drlb();

    for i in 0..TRAPPED_REQUESTS {
        assert!(
            bed.http_get(&vip_url()).is_err(),
            "request {i} through the trap got an answer: the test would prove nothing"
        );
    }
    let udp = bed.udp_client(&format!("{VIP}:{UDP_PORT}"), 1);
    assert!(
        !udp.success(),
        "a UDP request through the trap got an answer: {}",
        udp.describe()
    );

    let stats = bed.stats_json(&state);
    let bad = stats["events"]["bad_checksum"]["packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        bad >= u64::from(TRAPPED_REQUESTS),
        "every trapped new flow is counted as bad_checksum: {stats:#}"
    );
    let table = bed.drlb_in(&state, &["stats"]).expect_success();
    assert!(
        table.contains("bad_checksum"),
        "the stats table says it:\n{table}"
    );
    let logged = poll_until(LOG_TIMEOUT, Duration::from_millis(100), || {
        bed.drlb()
            .stderr()
            .lines()
            .find(|l| l.contains(ADVICE))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("nothing logged about it:\n{}", bed.drlb().stderr()));
    assert!(
        logged.contains(IFNAME) && logged.contains(FIX) && logged.contains("generic"),
        "the log names the interface and both fixes: {logged}"
    );
    let logs = bed.drlb().stderr().matches(ADVICE).count();
    let doctor = bed.drlb_in(&state, &["doctor"]);
    assert!(!doctor.success(), "doctor must fail: {}", doctor.describe());
    assert!(
        doctor.stdout.contains(ADVICE) && doctor.stdout.contains(FIX),
        "doctor says why and how to fix it: {}",
        doctor.describe()
    );

    // The fix the message gives works.
    bed.client.ns.checksum_in_software(IFNAME);
    let reply = bed
        .http_get(&vip_url())
        .unwrap_or_else(|e| panic!("with the fix, the request is answered: {e}"));
    assert!(reply.is_ok(), "with the fix, HTTP works");
    assert_eq!(
        bed.drlb().stderr().matches(ADVICE).count(),
        logs,
        "the warning is logged once"
    );
}
