//! The LVS-DR "ARP problem" end to end, on the netns testbed (see `tests::testbed`):
//!
//! - `drlb realserver setup` turns a fresh namespace into a real server that works through the
//!   director; `drlb realserver check` agrees with the kernel: it passes while the host stays
//!   silent about the VIP, and fails, naming the sysctls, once the host answers ARP for it.
//! - A misconfigured real server is reported by the director as a VIP conflict naming the
//!   backend and its MAC (stats, log), and `drlb doctor` names it with the fix.
//! - `setup --persist` survives a reboot: `teardown` afterwards restores the settings the host
//!   had before the first setup, and the boot unit runs a root-owned binary.
//!
//! Needs root: run with `cargo xtask test`.

use std::{os::unix::fs::MetadataExt as _, path::Path, time::Duration};

use serde_json::Value;
use tests::{
    drlb::drlb_plain,
    extra::plug_host,
    netns::{Netns, Scratch, poll_until, wait_for},
    require_root,
    testbed::{HTTP_PORT, Host, IFNAME, TestServer, Testbed, VIP, arping_reply_macs, vip_url},
};

const RS4_IP: &str = "198.18.0.14";
const RS4_MAC: &str = "02:d1:00:00:00:14";
/// The real server of the reboot test, alone in its namespace.
const REBOOTED_IP: &str = "198.18.0.21";
/// Where `setup --persist` installs the binary the boot unit runs, under its root.
const INSTALLED_DRLB: &str = "usr/local/sbin/drlb";
/// Where `setup --persist` records the settings it replaced, under its root.
const PERSISTENT_RECORD: &str = "var/lib/drlb/realserver.json";
/// How long the director may take to notice a conflict (it probes every 5 s).
const CONFLICT_TIMEOUT: Duration = Duration::from_secs(15);

fn testbed() -> Testbed {
    require_root();
    Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")))
}

/// The MACs that answer `arping` for the VIP from the client (2 requests).
fn vip_answerers(bed: &Testbed) -> Vec<String> {
    let mut macs = arping_reply_macs(&bed.arping_vip(2).stdout);
    macs.sort();
    macs.dedup();
    macs
}

/// `drlb realserver check` on `host`: (passed, output).
fn check(host: &Host) -> (bool, String) {
    let ran = drlb_plain(&host.ns, &["realserver", "check", "--vip", VIP]);
    (ran.success(), format!("{}{}", ran.stdout, ran.stderr))
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn realserver_setup_makes_a_fresh_host_a_working_real_server_and_check_agrees_with_the_kernel() {
    let mut bed = testbed();
    let rs4 = plug_host(&bed.switch, "rs4", RS4_IP, RS4_MAC);
    // On the wildcard address: before setup the VIP is no address of rs4 to bind to.
    let server = TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv"));
    let mut argv = server.argv.clone();
    argv.extend(["http", "--listen", "0.0.0.0:8080", "--name", "rs4"].map(Into::into));
    let _http = rs4.ns.spawn("rs4-http", &argv, bed.scratch.path());
    let config = bed.write_config(
        "rs4.toml",
        &format!(
            "[director]\ninterface = \"{IFNAME}\"\n\n[[service]]\nvip = \"{VIP}\"\nport = {HTTP_PORT}\n\
             protocol = \"tcp\"\n[[service.backend]]\naddress = \"{RS4_IP}\"\n"
        ),
    );
    let state = bed.start_drlb_with(&config);
    wait_for(
        "rs4 to be an active backend",
        Duration::from_secs(10),
        || {
            let stats = bed.stats_json(&state);
            (stats["services"][0]["backends"][0]["state"] == "active").then_some(())
        },
    );

    // A fresh host drops what the director sends it: the VIP is no address of its own.
    assert!(
        bed.http_get(&vip_url()).is_err(),
        "HTTP through the VIP worked before rs4 was set up as a real server"
    );
    let (passed, output) = check(&rs4);
    assert!(!passed, "check passed on a fresh host:\n{output}");
    for cause in [
        "is not on lo",
        "arp_ignore on eth0 is wrong",
        "arp_announce on eth0 is wrong",
    ] {
        assert!(
            output.contains(cause),
            "check does not say {cause:?}:\n{output}"
        );
    }

    let root = bed.scratch.subdir("rs4-root", 0o755);
    let record = bed.scratch.subdir("rs4-state", 0o755);
    let (root_arg, record_arg) = (root.display().to_string(), record.display().to_string());
    let setup = [
        "realserver",
        "setup",
        "--vip",
        VIP,
        "--persist",
        "--root",
        &root_arg,
        "--state-dir",
        &record_arg,
    ];
    let first = drlb_plain(&rs4.ns, &setup).expect_success();
    assert!(first.contains(&format!("{VIP}/32 added to lo")), "{first}");
    assert_persisted(&root);
    let again = drlb_plain(&rs4.ns, &setup).expect_success();
    assert!(
        again.contains(&format!("{VIP}/32 on lo already")),
        "setup is idempotent: {again}"
    );

    for n in 1..=5 {
        let reply = bed
            .http_get(&vip_url())
            .unwrap_or_else(|e| panic!("HTTP request {n} through the VIP after setup: {e}"));
        assert_eq!(reply.server(), Some("rs4"), "request {n}: {reply:?}");
    }
    let (passed, output) = check(&rs4);
    assert!(passed, "check fails on a set-up real server:\n{output}");
    assert_eq!(
        vip_answerers(&bed),
        [bed.director.mac.clone()],
        "only the director answers ARP for the VIP"
    );

    // The kernel uses max(all, eth0): one of the two at 0 keeps the host silent, and check
    // agrees; both at 0 make it answer, and check fails naming both. Either order.
    for (first, second) in [("eth0", "all"), ("all", "eth0")] {
        let key = |conf: &str| format!("net.ipv4.conf.{conf}.arp_ignore");
        rs4.ns.sysctl(&key(first), "0");
        let (passed, output) = check(&rs4);
        assert!(
            passed,
            "{first}.arp_ignore=0 alone leaves the effective value 1, yet check fails:\n{output}"
        );
        assert_eq!(
            vip_answerers(&bed),
            [bed.director.mac.clone()],
            "{first}=0 alone: rs4 must stay silent"
        );

        rs4.ns.sysctl(&key(second), "0");
        let (passed, output) = check(&rs4);
        assert!(
            !passed,
            "check passes with all and eth0 arp_ignore at 0:\n{output}"
        );
        for cause in [
            "arp_ignore on eth0 is wrong, effective 0",
            "net.ipv4.conf.all.arp_ignore=0",
            "net.ipv4.conf.eth0.arp_ignore=0",
            "fix: sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1",
        ] {
            assert!(
                output.contains(cause),
                "check does not say {cause:?}:\n{output}"
            );
        }
        assert!(
            !output.contains("arp_announce on eth0 is wrong"),
            "only arp_ignore is wrong:\n{output}"
        );
        let answerers = vip_answerers(&bed);
        assert!(
            answerers.contains(&rs4.mac),
            "with both at 0 the kernel answers ARP for the VIP, as check says; answerers: {answerers:?}"
        );
        rs4.ns.sysctl(&key(first), "1");
        rs4.ns.sysctl(&key(second), "1");
        assert!(check(&rs4).0, "restored");
    }

    // Teardown undoes it all.
    let teardown = [
        "realserver",
        "teardown",
        "--vip",
        VIP,
        "--root",
        &root_arg,
        "--state-dir",
        &record_arg,
    ];
    let undone = drlb_plain(&rs4.ns, &teardown).expect_success();
    assert!(
        undone.contains(&format!("{VIP}/32 removed from lo")),
        "{undone}"
    );
    let lo = rs4.ns.ip(&["-4", "addr", "show", "dev", "lo"]);
    assert!(!lo.contains(VIP), "the VIP is still on lo:\n{lo}");
    for conf in ["all", "lo", "eth0"] {
        for (key, was) in [("arp_ignore", "0"), ("arp_announce", "0")] {
            assert_eq!(
                rs4.ns.sysctl_value(&format!("net.ipv4.conf.{conf}.{key}")),
                was,
                "{conf}.{key} restored"
            );
        }
    }
    for file in [
        "etc/sysctl.d/90-drlb-realserver.conf",
        "etc/systemd/system/drlb-realserver.service",
    ] {
        assert!(!root.join(file).exists(), "{file} was not removed");
    }
}

/// What `setup --persist` wrote under `root`.
fn assert_persisted(root: &Path) {
    let sysctl = std::fs::read_to_string(root.join("etc/sysctl.d/90-drlb-realserver.conf"))
        .expect("the sysctl.d file");
    for conf in ["all", "lo", "eth0"] {
        assert!(
            sysctl.contains(&format!("net.ipv4.conf.{conf}.arp_ignore = 1\n")),
            "{sysctl}"
        );
        assert!(
            sysctl.contains(&format!("net.ipv4.conf.{conf}.arp_announce = 2\n")),
            "{sysctl}"
        );
    }
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/drlb-realserver.service"))
        .expect("the unit");
    let exec = format!(
        "ExecStart={} realserver setup --interface eth0 --vip {VIP}\n",
        root.join(INSTALLED_DRLB).display()
    );
    assert!(unit.contains(&exec), "{unit}\nlacks {exec}");
    assert!(unit.contains("After=network-online.target"), "{unit}");
    let link = std::fs::read_link(
        root.join("etc/systemd/system/multi-user.target.wants/drlb-realserver.service"),
    )
    .expect("the unit is enabled");
    assert_eq!(link, Path::new("../drlb-realserver.service"));
}

/// The `arp_conflicts` entry of `mac`, if any.
fn conflict<'a>(stats: &'a Value, mac: &str) -> Option<&'a Value> {
    stats["arp_conflicts"].as_array()?.iter().find(|c| {
        c["mac"]
            .as_str()
            .is_some_and(|m| m.eq_ignore_ascii_case(mac))
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_real_server_answering_arp_for_the_vip_is_reported_by_the_director_and_named_by_doctor() {
    let mut bed = testbed();
    let (rs1, rs2, rs3) = (
        &bed.real_servers[0],
        &bed.real_servers[1],
        &bed.real_servers[2],
    );
    let (rs1_mac, rs2_mac, rs3_mac) = (rs1.mac.clone(), rs2.mac.clone(), rs3.mac.clone());
    // rs2 answers ARP for the VIP on lo (the classic mistake: arp_ignore left at 0).
    rs2.ns.sysctl("net.ipv4.conf.all.arp_ignore", "0");
    rs2.ns.sysctl("net.ipv4.conf.eth0.arp_ignore", "0");
    let state = bed.start_drlb();

    let entry = wait_for(
        "the director to report rs2's conflict",
        CONFLICT_TIMEOUT,
        || {
            let stats = bed.stats_json(&state);
            conflict(&stats, &rs2_mac)
                .filter(|c| c["replies"].as_u64() > Some(0))
                .cloned()
        },
    );
    assert_eq!(
        entry["backend"], "198.18.0.12",
        "the conflict names the backend: {entry:#}"
    );
    assert_eq!(entry["vip"], VIP, "{entry:#}");
    assert!(
        entry["explanation"]
            .as_str()
            .unwrap_or_default()
            .contains("arp_ignore too low"),
        "{entry:#}"
    );
    // The daemon logs what it reads once a second; stats read the map at once.
    let logged = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        bed.drlb()
            .stderr()
            .lines()
            .find(|l| l.contains("VIP conflict") && l.to_lowercase().contains(&rs2_mac))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| {
        panic!(
            "no VIP conflict logged for {rs2_mac}:\n{}",
            bed.drlb().stderr()
        )
    });
    assert!(logged.contains("backend 198.18.0.12"), "{logged}");
    let table = bed.drlb_in(&state, &["stats"]).expect_success();
    assert!(
        table.contains("ARP conflicts") && table.contains(&rs2_mac),
        "{table}"
    );

    // The director answers ARP for the VIP as before (the client hears rs2 as well).
    let before = bed.stats_json(&state)["verdicts"]["arp_reply"]["packets"].as_u64();
    let answerers = vip_answerers(&bed);
    assert!(
        answerers.contains(&bed.director.mac) && answerers.contains(&rs2_mac),
        "{answerers:?}"
    );
    let after = bed.stats_json(&state)["verdicts"]["arp_reply"]["packets"].as_u64();
    assert!(
        after > before,
        "the director answered the client's requests: {before:?} -> {after:?}"
    );

    let doctor = bed.drlb_in(&state, &["doctor"]);
    assert!(!doctor.success(), "doctor must fail: {}", doctor.describe());
    let named = format!("backend 198.18.0.12 ({rs2_mac}) answers ARP for the VIP");
    assert!(
        doctor.stdout.contains(&named),
        "doctor does not say {named:?}: {}",
        doctor.describe()
    );
    assert!(
        doctor
            .stdout
            .contains(&format!("drlb realserver setup --vip {VIP}")),
        "doctor gives no fix: {}",
        doctor.describe()
    );
    for good in [&rs1_mac, &rs3_mac] {
        assert!(
            !doctor.stdout.contains(good.as_str()),
            "doctor names a correct real server: {}",
            doctor.describe()
        );
    }
    let stats = bed.stats_json(&state);
    assert!(
        conflict(&stats, &rs1_mac).is_none() && conflict(&stats, &rs3_mac).is_none(),
        "{stats:#}"
    );

    // The fix doctor gives works.
    let record = bed.scratch.subdir("rs2-state", 0o755);
    let rs2 = &bed.real_servers[1];
    let fixed = drlb_plain(
        &rs2.ns,
        &[
            "realserver",
            "setup",
            "--vip",
            VIP,
            "--state-dir",
            &record.display().to_string(),
        ],
    )
    .expect_success();
    assert!(
        fixed.contains("net.ipv4.conf.all.arp_ignore = 1 (was 0)"),
        "{fixed}"
    );
    let doctor = bed.drlb_in(&state, &["doctor"]);
    assert!(
        doctor.success(),
        "doctor still fails after the fix: {}",
        doctor.describe()
    );
    assert_eq!(vip_answerers(&bed), [bed.director.mac.clone()]);

    // rs3 sends ARP requests with the VIP as sender (arp_announce left at 0, seed 002): seen
    // by the director without any probe, and named by doctor.
    let rs3 = &bed.real_servers[2];
    rs3.ns.sysctl("net.ipv4.conf.all.arp_announce", "0");
    rs3.ns.sysctl("net.ipv4.conf.eth0.arp_announce", "0");
    rs3.ns.ip(&["neigh", "flush", "dev", IFNAME]);
    wait_for("an HTTP reply from rs3", Duration::from_secs(60), || {
        let reply = bed.http_get(&vip_url()).ok()?;
        (reply.server() == Some("rs3")).then_some(())
    });
    let entry = wait_for(
        "the director to report rs3's requests",
        CONFLICT_TIMEOUT,
        || {
            let stats = bed.stats_json(&state);
            conflict(&stats, &rs3_mac)
                .filter(|c| c["requests"].as_u64() > Some(0))
                .cloned()
        },
    );
    assert_eq!(entry["backend"], "198.18.0.13", "{entry:#}");
    let doctor = bed.drlb_in(&state, &["doctor"]);
    assert!(!doctor.success(), "{}", doctor.describe());
    assert!(
        doctor
            .stdout
            .contains(&format!("backend 198.18.0.13 ({rs3_mac}) sent"))
            && doctor.stdout.contains("arp_announce is too low"),
        "{}",
        doctor.describe()
    );
    assert!(
        bed.drlb().try_status().is_none(),
        "drlb died: {}",
        bed.drlb().describe()
    );
}

/// `net.ipv4.conf.<conf>.<key>` and the value the host had before the first setup: not the
/// kernel defaults, so that restoring those would show.
const ORIGINAL_ARP_SETTINGS: [(&str, &str, &str); 6] = [
    ("all", "arp_ignore", "0"),
    ("all", "arp_announce", "1"),
    ("lo", "arp_ignore", "0"),
    ("lo", "arp_announce", "0"),
    (IFNAME, "arp_ignore", "0"),
    (IFNAME, "arp_announce", "1"),
];

/// The `ExecStart=` command line of the unit `setup --persist` wrote under `root`.
fn unit_exec_start(root: &Path) -> Vec<String> {
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/drlb-realserver.service"))
        .expect("the unit");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in the unit:\n{unit}"));
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn after_a_reboot_teardown_restores_the_settings_from_before_setup_and_the_unit_runs_a_root_owned_binary()
 {
    require_root();
    let scratch = Scratch::create();
    let ns = Netns::create("rs-reboot");
    // A veth with both ends in the namespace: the kernel here has no dummy interfaces.
    ns.ip(&[
        "link",
        "add",
        IFNAME,
        "type",
        "veth",
        "peer",
        "name",
        "eth0-peer",
    ]);
    ns.ip(&["link", "set", "eth0-peer", "up"]);
    ns.ip(&["addr", "add", &format!("{REBOOTED_IP}/24"), "dev", IFNAME]);
    ns.ip(&["link", "set", IFNAME, "up"]);
    ns.ip(&["link", "set", "lo", "up"]);
    let key = |conf: &str, name: &str| format!("net.ipv4.conf.{conf}.{name}");
    for (conf, name, value) in ORIGINAL_ARP_SETTINGS {
        ns.sysctl(&key(conf, name), value);
    }
    let root = scratch.subdir("root", 0o755);
    let run_before = scratch.subdir("run-before-reboot", 0o755);
    let arg = |p: &Path| p.display().to_string();
    let set_up = drlb_plain(
        &ns,
        &[
            "realserver",
            "setup",
            "--vip",
            VIP,
            "--interface",
            IFNAME,
            "--persist",
            "--root",
            &arg(&root),
            "--state-dir",
            &arg(&run_before),
        ],
    )
    .expect_success();
    assert!(
        set_up.contains("kept across reboots") || set_up.contains(PERSISTENT_RECORD),
        "the record is kept where a reboot keeps it: {set_up}"
    );

    // The reboot: addresses and /run are gone, and systemd-sysctl applied the sysctl.d file.
    ns.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
    let sysctl_file = root.join("etc/sysctl.d/90-drlb-realserver.conf");
    ns.run(&["sysctl", "-q", "-p", &arg(&sysctl_file)]);
    let run_after = scratch.subdir("run-after-reboot", 0o755);
    // Then the boot unit runs setup again (with the test's root, and the fresh /run).
    let mut boot = unit_exec_start(&root);
    boot.extend(["--root".to_owned(), arg(&root)]);
    boot.extend(["--state-dir".to_owned(), arg(&run_after)]);
    let booted = ns.exec(&boot, Duration::from_secs(15)).expect_success();
    assert!(
        booted.contains(&format!("{VIP}/32 added to lo")),
        "{booted}"
    );

    let undone = drlb_plain(
        &ns,
        &[
            "realserver",
            "teardown",
            "--vip",
            VIP,
            "--interface",
            IFNAME,
            "--root",
            &arg(&root),
            "--state-dir",
            &arg(&run_after),
        ],
    )
    .expect_success();
    for (conf, name, value) in ORIGINAL_ARP_SETTINGS {
        assert_eq!(
            ns.sysctl_value(&key(conf, name)),
            value,
            "{} after setup --persist, a reboot and teardown (teardown said:\n{undone})",
            key(conf, name)
        );
    }

    // The unit runs a copy of drlb at a root-owned path that only root may write.
    let binary = Path::new(&boot[0]);
    assert_eq!(binary, root.join(INSTALLED_DRLB), "the unit's binary");
    let meta = std::fs::metadata(binary).expect("the installed binary");
    assert_eq!(meta.uid(), 0, "{} is root's", binary.display());
    assert_eq!(
        meta.mode() & 0o022,
        0,
        "{} is writable by group or others",
        binary.display()
    );
}
