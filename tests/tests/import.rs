//! `drlb import keepalived|ipvsadm` as users run it: on the sample configurations Debian's
//! keepalived package ships (with --convert-to-dr: they are mostly NAT), on the project's own DR
//! fixtures (tests/fixtures/import/), exit statuses 0 / 1 / 2, and (as root) an imported
//! config driving a real director whose translated HTTP health checks take a dead server out.
//!
//! Run: `cargo test --release -p tests --test import` (the root test with `cargo xtask test
//! import`). Needs the drlb binary (`cargo build --release`) and keepalived's samples
//! (`cargo xtask setup` installs keepalived).

use std::{
    collections::BTreeSet,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use lb_userspace::config::{ActiveWhen, Config, Protocol, Scheduler, health_check::CheckKind};
use tests::{
    drlb_binary,
    echo::{assert_all_kept, connect},
    netns::wait_for,
    require_root,
    testbed::{IFNAME, TestServer, Testbed, VIP, vip_url},
};

/// Where Debian's keepalived package puts its sample configurations.
const SAMPLES: &str = "/usr/share/doc/keepalived/samples";
/// How long health checks get to bring every backend up or take a dead one down.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests through the VIP after a server died; all must reach the live ones.
const REQUESTS: u32 = 30;
/// Long-lived connections to the echo service in the drain test.
const CONNECTIONS: usize = 30;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/import")
}

struct Imported {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Imported {
    /// The output, parsed and validated by drlb's own config parser.
    #[track_caller]
    fn config(&self) -> Config {
        Config::parse(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "the import's output is not a valid drlb config: {e:#}\n{}",
                self.stdout
            )
        })
    }

    /// `tcp 198.18.0.100:80` for each service of the output.
    fn services(&self) -> BTreeSet<String> {
        self.config()
            .services
            .iter()
            .map(|s| s.id().to_string())
            .collect()
    }
}

fn drlb_import(args: &[&str], stdin: Option<&str>) -> Imported {
    let mut child = Command::new(drlb_binary())
        .arg("import")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (build it with cargo build --release): {e}",
                drlb_binary().display()
            )
        });
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(text.as_bytes())
            .expect("writing drlb's stdin");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("waiting for drlb import");
    Imported {
        code: status
            .code()
            .unwrap_or_else(|| panic!("drlb import died: {status}")),
        stdout: String::from_utf8(stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(stderr).expect("UTF-8 stderr"),
    }
}

/// What each Debian sample must give with --convert-to-dr: its exit status and services. A
/// service is there when it is DR-translatable: NAT with every real server on the virtual
/// port, an IPv4 VIP and real servers, TCP or UDP, not a fwmark.
const SAMPLE_EXPECTATIONS: &[(&str, i32, &[&str])] = &[
    // SSL_GET becomes a TCP check (a note, not a loss).
    (
        "keepalived.conf.HTTP_GET.port",
        0,
        &["tcp 192.168.200.100:443"],
    ),
    // IPv6 VIP and real server.
    ("keepalived.conf.IPv6", 1, &[]),
    // PING_CHECK cannot be done: the UDP service has no check.
    ("keepalived.conf.PING_CHECK", 1, &["udp 10.10.10.2:1358"]),
    // Real servers with different SMTP_CHECK timeouts: one check per service.
    ("keepalived.conf.SMTP_CHECK", 1, &["tcp 192.168.200.100:25"]),
    (
        "keepalived.conf.SSL_GET",
        0,
        &["tcp 192.168.200.100:443", "tcp 192.168.200.100:80"],
    ),
    ("keepalived.conf.UDP_CHECK", 1, &["udp 10.10.10.2:1358"]),
    ("keepalived.conf.conditional_conf", 0, &[]),
    ("keepalived.conf.fwmark", 1, &[]),
    ("keepalived.conf.inhibit", 0, &["tcp 10.10.10.2:1358"]),
    ("keepalived.conf.misc_check", 1, &["tcp 10.10.10.2:1358"]),
    (
        "keepalived.conf.misc_check_arg",
        1,
        &["tcp 10.10.10.2:1358"],
    ),
    // Real servers on 8080 behind port 80: DR cannot map ports.
    ("keepalived.conf.quorum", 1, &[]),
    // sorry_server has no equivalent.
    ("keepalived.conf.sample", 1, &["tcp 10.10.10.2:1358"]),
    (
        "keepalived.conf.status_code",
        0,
        &["tcp 192.168.200.100:443"],
    ),
    ("keepalived.conf.track_interface", 0, &[]),
    // Only the member on the real servers' port 1358 converts (and loses the real server that
    // is its own VIP); the fwmark members are left out.
    (
        "keepalived.conf.virtual_server_group",
        1,
        &["tcp 192.168.200.1:1358"],
    ),
    (
        "keepalived.conf.virtualhost",
        0,
        &["tcp 192.168.200.100:80"],
    ),
    ("keepalived.conf.vrrp", 0, &[]),
    ("keepalived.conf.vrrp.localcheck", 0, &[]),
    (
        "keepalived.conf.vrrp.lvs_syncd",
        0,
        &["tcp 192.168.200.19:80"],
    ),
    ("keepalived.conf.vrrp.routes", 0, &[]),
    ("keepalived.conf.vrrp.rules", 0, &[]),
    ("keepalived.conf.vrrp.scripts", 0, &[]),
    ("keepalived.conf.vrrp.static_ipaddress", 0, &[]),
    ("keepalived.conf.vrrp.sync", 0, &[]),
];

/// The keepalived configurations among the samples (the folder also holds a shell script and
/// a gzipped notify script, which are not configurations).
fn sample_configs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(SAMPLES)
        .unwrap_or_else(|e| {
            panic!("cannot list {SAMPLES} ({e}): install keepalived with `cargo xtask setup`")
        })
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("keepalived.conf."))
        })
        .collect();
    files.sort();
    files
}

/// The line numbers of `virtual_server` statements, found by a plain scan (not the importer's
/// parser): the first word of a line, outside comments.
fn virtual_server_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.split_whitespace().next() == Some("virtual_server"))
        .map(|(index, _)| index + 1)
        .collect()
}

#[test]
fn debian_samples_import_with_every_dr_service_and_the_rest_explained() {
    let files = sample_configs();
    assert!(
        files.len() >= SAMPLE_EXPECTATIONS.len(),
        "{SAMPLES} holds {} keepalived configs; expected {}",
        files.len(),
        SAMPLE_EXPECTATIONS.len()
    );
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).expect("a name");
        let path = file.to_str().expect("a UTF-8 path");
        let &(_, code, services) = SAMPLE_EXPECTATIONS
            .iter()
            .find(|(n, _, _)| *n == name)
            .unwrap_or_else(|| {
                panic!("{name} is a new sample: add what it must give to SAMPLE_EXPECTATIONS")
            });
        let imported = drlb_import(&["keepalived", "--convert-to-dr", path], None);
        let context = format!(
            "{name}\n--- stdout\n{}\n--- stderr\n{}",
            imported.stdout, imported.stderr
        );
        assert_eq!(imported.code, code, "exit status of {context}");
        let expected: BTreeSet<String> = services.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(imported.services(), expected, "services of {context}");
        // Every diagnostic names its file and line; "left out" ones exist exactly when the
        // exit status is 1.
        for line in imported.stderr.lines().filter(|l| !l.starts_with("drlb:")) {
            let located = line.starts_with(&format!("{path}:"));
            let general = line.starts_with("note: ");
            assert!(
                located || general,
                "a diagnostic without its line: {line:?}\n{context}"
            );
        }
        let left_out = imported.stderr.contains(": left out: ");
        assert_eq!(
            left_out,
            code == 1,
            "left-out lines vs exit status: {context}"
        );
        // Every virtual_server statement is in the output or explained on stderr.
        let text = std::fs::read_to_string(file).expect("the sample");
        for line in virtual_server_lines(&text) {
            let at = format!("{path}:{line}");
            assert!(
                imported.stdout.contains(&format!("({at})"))
                    || imported.stderr.contains(&format!("{at}: ")),
                "virtual_server at {at} is neither translated nor explained:\n{context}"
            );
        }
    }
}

#[test]
fn nat_samples_are_refused_without_convert_to_dr() {
    let path = format!("{SAMPLES}/keepalived.conf.inhibit");
    let imported = drlb_import(&["keepalived", &path], None);
    assert_eq!(imported.code, 1, "{}", imported.stderr);
    assert!(imported.services().is_empty(), "{}", imported.stdout);
    assert!(
        imported.stderr.contains(&format!(
            "{path}:13: left out: virtual_server 10.10.10.2 1358: lb_kind NAT: drlb forwards by direct routing (DR) only; pass --convert-to-dr"
        )),
        "{}",
        imported.stderr
    );
    let converted = drlb_import(&["keepalived", "--convert-to-dr", &path], None);
    assert!(
        converted.stdout.contains("on_failure = \"drain\""),
        "inhibit_on_failure drains: {}",
        converted.stdout
    );
    assert!(
        converted
            .stdout
            .contains("drlb realserver setup --vip 10.10.10.2")
    );
}

#[test]
fn the_projects_dr_config_translates_completely() {
    let path = fixtures().join("keepalived/keepalived.conf");
    let imported = drlb_import(&["keepalived", path.to_str().expect("UTF-8")], None);
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    let config = imported.config();
    assert_eq!(config.director.interface_names(), ["eth0"]);
    // keepalived's vrrp_instance holds the VIP: drlb follows it.
    assert_eq!(config.director.active_when, ActiveWhen::VipAssigned);
    let web = config
        .services
        .iter()
        .find(|s| s.port == 8080)
        .expect("the web service");
    assert_eq!(
        (web.protocol, web.scheduler),
        (Protocol::Tcp, Scheduler::Maglev)
    );
    let check = web.health_check.clone().expect("a translated check");
    assert_eq!(
        (
            check.kind,
            check.path.as_str(),
            check.expect_status,
            check.interval_ms,
            check.timeout_ms,
            check.fall
        ),
        (CheckKind::Http, "/health", 200, 1000, 500, 2)
    );
    let weights: Vec<(String, u32)> = web
        .backends
        .iter()
        .map(|b| (b.address.to_string(), b.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("198.18.0.11".to_owned(), 1),
            ("198.18.0.12".to_owned(), 1),
            ("198.18.0.13".to_owned(), 2)
        ]
    );
    let dns = config
        .services
        .iter()
        .find(|s| s.port == 5353)
        .expect("the UDP service, from the second included file");
    assert_eq!(
        (dns.protocol, dns.scheduler),
        (Protocol::Udp, Scheduler::SourceHash)
    );
    assert_eq!(
        dns.health_check.as_ref().map(|c| c.kind),
        Some(CheckKind::None)
    );
}

#[test]
fn ipvsadm_save_output_is_read_from_a_file_or_stdin() {
    let rules = fixtures().join("ipvsadm.rules");
    let from_file = drlb_import(&["ipvsadm", rules.to_str().expect("UTF-8")], None);
    assert_eq!(from_file.code, 0, "{}", from_file.stderr);
    let text = std::fs::read_to_string(&rules).expect("the fixture");
    let from_stdin = drlb_import(&["ipvsadm", "--interface", "ens3", "-"], Some(&text));
    assert_eq!(from_stdin.code, 0, "{}", from_stdin.stderr);
    assert_eq!(from_file.services(), from_stdin.services());
    assert_eq!(
        from_file.services(),
        BTreeSet::from([
            "tcp 198.18.0.100:8080".to_owned(),
            "udp 198.18.0.100:5353".to_owned()
        ])
    );
    assert_eq!(from_stdin.config().director.interface_names(), ["ens3"]);
    assert!(from_stdin.stdout.contains("(<stdin>:2)"));
    // A masquerading real server is left out as a whole service, and said so.
    let nat = drlb_import(
        &["ipvsadm"],
        Some("-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:80 -r 198.18.0.11:80 -m -w 1\n"),
    );
    assert_eq!(nat.code, 1);
    assert!(
        nat.stderr.contains("<stdin>:1: left out: "),
        "{}",
        nat.stderr
    );
    assert!(nat.services().is_empty());
}

#[test]
fn unreadable_input_exits_2_and_prints_nothing() {
    for args in [
        ["keepalived", "/nonexistent/keepalived.conf"],
        ["ipvsadm", "/nonexistent/ipvsadm.rules"],
    ] {
        let imported = drlb_import(&args, None);
        assert_eq!(imported.code, 2, "{args:?}: {}", imported.stderr);
        assert!(imported.stdout.is_empty());
        assert!(
            imported.stderr.contains("cannot read /nonexistent/"),
            "{}",
            imported.stderr
        );
    }
}

/// The imported fixture runs a director: active once it holds the VIP (as keepalived's
/// virtual_ipaddress makes it), its HTTP health checks (translated from HTTP_GET) bring every
/// backend up, traffic reaches the real servers, and a server whose HTTP service dies is taken
/// out.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn an_imported_config_drives_a_director() {
    require_root();
    let path = fixtures().join("keepalived/keepalived.conf");
    let imported = drlb_import(&["keepalived", path.to_str().expect("UTF-8")], None);
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    let mut bed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
    assert!(imported.stdout.contains("active_when = \"vip-assigned\""));
    let config = bed.write_config("imported.toml", &imported.stdout);
    let state = bed.start_drlb_with(&config);
    // What keepalived's virtual_ipaddress does on the VRRP master: drlb follows it and becomes
    // active for the VIP.
    bed.director
        .ns
        .ip(&["addr", "add", &format!("{VIP}/32"), "dev", IFNAME]);
    let health = |bed: &Testbed| -> Vec<(String, String)> {
        let stats = bed.stats_json(&state);
        stats["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["port"] == 8080)
            .flat_map(|s| s["backends"].as_array().cloned().unwrap_or_default())
            .map(|b| {
                (
                    b["address"].as_str().unwrap_or_default().to_owned(),
                    b["health"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    wait_for("every backend healthy", HEALTH_TIMEOUT, || {
        let h = health(&bed);
        (h.len() == 3 && h.iter().all(|(_, state)| state == "up")).then_some(())
    });
    bed.stop_service("rs3", "http");
    wait_for("rs3 taken out by its HTTP check", HEALTH_TIMEOUT, || {
        health(&bed)
            .iter()
            .any(|(address, state)| address == "198.18.0.13" && state == "down")
            .then_some(())
    });
    for n in 1..=REQUESTS {
        let reply = bed
            .http_get(&vip_url())
            .unwrap_or_else(|e| panic!("request {n} through the VIP failed: {e}"));
        let server = reply.server().unwrap_or_default().to_owned();
        assert!(
            server == "rs1" || server == "rs2",
            "request {n} was served by {server:?}, not a live server: {reply:?}"
        );
    }
}

/// keepalived's inhibit_on_failure, imported, drains: when rs3's HTTP service (what its check
/// probes) dies, the echo connections rs3 already serves keep going to it, and new ones avoid
/// it. (Removed instead, they would move to rs1/rs2 and be reset there.)
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn inhibit_on_failure_keeps_established_connections_of_a_failed_server() {
    require_root();
    let real_server = |address: &str| {
        format!(
            "  real_server {address} 9000 {{\n    inhibit_on_failure\n    HTTP_GET {{\n      connect_port 8080\n      url {{\n        path /\n      }}\n      connect_timeout 0.2\n      retry 1\n    }}\n  }}\n"
        )
    };
    let keepalived = format!(
        "virtual_server 198.18.0.100 9000 {{\n  delay_loop 0.3\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n{}{}{}}}\n",
        real_server("198.18.0.11"),
        real_server("198.18.0.12"),
        real_server("198.18.0.13")
    );
    let mut bed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
    let source = bed.write_config("keepalived.conf", &keepalived);
    let imported = drlb_import(
        &[
            "keepalived",
            "--interface",
            "eth0",
            source.to_str().expect("UTF-8"),
        ],
        None,
    );
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    assert!(
        imported.stdout.contains("on_failure = \"drain\""),
        "{}",
        imported.stdout
    );
    let config = bed.write_config("imported.toml", &imported.stdout);
    let state = bed.start_drlb_with(&config);
    let backend_health = |bed: &Testbed, address: &str| -> String {
        let stats = bed.stats_json(&state);
        stats["services"][0]["backends"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["address"] == address))
            .map(|b| b["health"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    for address in ["198.18.0.11", "198.18.0.12", "198.18.0.13"] {
        wait_for(&format!("{address} healthy"), HEALTH_TIMEOUT, || {
            (backend_health(&bed, address) == "up").then_some(())
        });
    }
    let mut connections = connect(&bed.client.ns, CONNECTIONS);
    assert!(
        connections.iter().any(|c| c.served_by == "rs3"),
        "no connection reached rs3 before its failure"
    );
    bed.stop_service("rs3", "http");
    wait_for("rs3 down by its HTTP check", HEALTH_TIMEOUT, || {
        (backend_health(&bed, "198.18.0.13") == "down").then_some(())
    });
    assert_all_kept(&mut connections, "rs3 failed its check (drained)");
    let fresh = connect(&bed.client.ns, CONNECTIONS);
    assert!(
        fresh.iter().all(|c| c.served_by != "rs3"),
        "a new connection went to the failed rs3"
    );
}
