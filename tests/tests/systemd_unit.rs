//! The director's systemd unit (`drlb install-unit --print`) is one systemd accepts:
//! `systemd-analyze verify` reads it with the real drlb binary as ExecStart.

use std::{process::Command, time::Duration};

use tests::netns::{Scratch, run_bounded};

#[test]
fn systemd_analyze_verifies_the_directors_unit() {
    let scratch = Scratch::create();
    let printed = run_bounded(
        Command::new(tests::drlb_binary()).args([
            "install-unit",
            "--print",
            "--config",
            "/etc/drlb/drlb.toml",
        ]),
        Duration::from_secs(10),
    )
    .expect_success();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=",
        "Restart=on-failure",
    ] {
        assert!(printed.contains(line), "the unit lacks {line}:\n{printed}");
    }
    let unit = scratch.write("drlb.service", &printed);
    let ran = run_bounded(
        Command::new("systemd-analyze").arg("verify").arg(&unit),
        Duration::from_secs(30),
    );
    // verify exits 0 but prints what it finds wrong; anything about our unit is a failure.
    let said = format!("{}{}", ran.stdout, ran.stderr);
    let about_ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("drlb.service"))
        .collect();
    assert!(
        ran.success() && about_ours.is_empty(),
        "systemd-analyze verify rejects the unit: {}",
        ran.describe()
    );
}
