//! The differential fuzzer (`tests::fuzz`): frames through BPF_PROG_TEST_RUN against the
//! reference model (`tests::model`), and every saved fixture replayed.
//!
//! The suite runs a short seeded run. `cargo xtask fuzz [--frames N] [--seed S]` runs this
//! same test with `FUZZ_FRAMES` and `FUZZ_SEED` set.

use lb_common::Verdict;
use tests::{
    fuzz::{self, Config, fixture},
    model::Options,
};

/// The rules the model holds the program to.
const OPTIONS: Options = Options {
    // The program forwards, and answers ARP, only for frames sent to the ingress interface's
    // MAC (ARP: or broadcast); the self-check holds the model to the opposite.
    require_our_dst_mac: true,
};
/// The suite's run: a few seconds.
const DEFAULT_FRAMES: u64 = 20_000;
const DEFAULT_SEED: u64 = 0x6472_6c62_6675_7a7a; // "drlbfuzz"
/// Differences the self-check waits for.
const NOTICED_DIFFERENCES: usize = 3;

fn from_env(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
    })
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test (or cargo xtask fuzz)"]
fn fuzz_run_finds_the_program_doing_what_the_model_says() {
    tests::require_root();
    let config = Config::new(
        from_env("FUZZ_FRAMES", DEFAULT_FRAMES),
        from_env("FUZZ_SEED", DEFAULT_SEED),
        OPTIONS,
    );
    let report = fuzz::run(&config).unwrap_or_else(|e| panic!("the fuzz run failed: {e:#}"));
    println!("{report}");
    // IPv6 frames reach the IPv6 path's outcomes, not only XDP_PASS.
    let ipv6 = |v: Verdict| report.ipv6_verdicts[v as usize];
    for verdict in [
        Verdict::Tx,
        Verdict::DropMalformed,
        Verdict::DropStandby,
        Verdict::DropNoService,
        Verdict::EchoReply,
        Verdict::Redirect,
        Verdict::DropFragmentOrphan,
        Verdict::NdpReply,
    ] {
        assert!(
            ipv6(verdict) > 0,
            "no IPv6 frame ended as {}: the run does not reach the IPv6 path",
            verdict.name()
        );
    }
    assert!(
        report.differences.is_empty(),
        "{} differences between the program and the model (printed above, kept as fixtures in \
         {}):\n{}",
        report.differences.len(),
        fixture::directory().display(),
        report
            .differences
            .iter()
            .map(ToString::to_string)
            .collect::<String>()
    );
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn fuzz_fixtures_all_replay_like_the_model() {
    tests::require_root();
    let dir = fixture::directory();
    let fixtures =
        fixture::load_all(&dir).unwrap_or_else(|e| panic!("reading the fixtures: {e:#}"));
    let mut failures = Vec::new();
    for (path, fixture) in &fixtures {
        match fuzz::replay(fixture, OPTIONS) {
            Ok(None) => {}
            Ok(Some(difference)) => failures.push(format!("{}:\n{difference}", path.display())),
            Err(e) => failures.push(format!("{}: {e:#}", path.display())),
        }
    }
    println!(
        "{} fixtures replayed from {}",
        fixtures.len(),
        dir.display()
    );
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ from the model:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

/// The fuzzer's own check: held to the other setting of a rule, the program must be seen to
/// differ from the model, and each difference must replay as one.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn fuzz_notices_a_rule_the_program_does_not_follow() {
    tests::require_root();
    let wrong = Options {
        require_our_dst_mac: !OPTIONS.require_our_dst_mac,
    };
    let config = Config {
        fixture_dir: None,
        max_differences: NOTICED_DIFFERENCES,
        ..Config::new(DEFAULT_FRAMES, DEFAULT_SEED, wrong)
    };
    let report = fuzz::run(&config).unwrap_or_else(|e| panic!("the fuzz run failed: {e:#}"));
    assert_eq!(
        report.differences.len(),
        NOTICED_DIFFERENCES,
        "a model that requires our destination MAC = {} must differ from the program:\n{report}",
        wrong.require_our_dst_mac
    );
    for difference in &report.differences {
        let replayed = fuzz::replay(&difference.fixture(), wrong)
            .unwrap_or_else(|e| panic!("replaying {difference}: {e:#}"));
        assert!(
            replayed.is_some(),
            "the difference did not replay:\n{difference}"
        );
        let agreed = fuzz::replay(&difference.fixture(), OPTIONS)
            .unwrap_or_else(|e| panic!("replaying {difference}: {e:#}"));
        assert!(
            agreed.is_none(),
            "with the right rule the frame must agree:\n{agreed:?}"
        );
    }
}
