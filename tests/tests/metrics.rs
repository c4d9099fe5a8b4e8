//! Reading drlb the way IPVS users do, on the LVS-DR netns testbed (see `tests::testbed`): the
//! Prometheus endpoint scraped before and after real traffic and checked by Debian's
//! `promtool check metrics`, `drlb list` in ipvsadm's layout, and `--log-format json` logs.
//!
//! Needs root: run with `cargo xtask test` (or `cargo test --release -p tests --test metrics --
//! --include-ignored --test-threads=1` as root after `cargo build --release -p lb-userspace`).

use std::{
    collections::BTreeMap,
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use tests::{
    drlb::start_drlb,
    netns::{Netns, wait_for},
    require_root,
    testbed::{HTTP_PORT, TestServer, Testbed, UDP_PORT, VIP, vip_url},
};

/// Where the daemon serves metrics, inside the director's namespace.
const METRICS_ADDRESS: &str = "127.0.0.1:9917";
/// New TCP connections (one GET each) and UDP flows (one datagram each, new source port).
const HTTP_REQUESTS: u64 = 30;
const UDP_DATAGRAMS: u64 = 20;
/// Frames a client sends on a short HTTP connection at least: SYN, ACK, the request, FIN.
const MIN_FRAMES_PER_HTTP_CONNECTION: u64 = 4;
/// The daemon refreshes what it serves once a second; a scrape waits at most this long for
/// the traffic to show.
const SCRAPE_WAIT: Duration = Duration::from_secs(10);
/// `drlb list --rate` is read after each round of new connections until CPS shows them (the
/// daemon's rates are those of its last 2-second interval).
const RATE_ROUNDS: u32 = 40;
const RATE_REQUESTS_PER_ROUND: u32 = 5;
const CURL_TIMEOUT_SECS: &str = "5";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// The numbers after `prefix` on the line of `text` that starts with it.
fn columns(text: &str, prefix: &str) -> Vec<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{text}"));
    line[prefix.len()..]
        .split_whitespace()
        .map(|n| n.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// Samples of a scrape: `name{labels}` -> value.
type Samples = BTreeMap<String, f64>;

fn scrape(ns: &Netns, accept: Option<&str>) -> String {
    let url = format!("http://{METRICS_ADDRESS}/metrics");
    let mut argv = vec!["curl", "-sS", "--fail", "--max-time", CURL_TIMEOUT_SECS];
    if let Some(accept) = accept {
        argv.extend(["-H", accept]);
    }
    argv.push(&url);
    ns.exec(&argv, COMMAND_TIMEOUT).expect_success()
}

fn samples(text: &str) -> Samples {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("odd sample line {l:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|e| panic!("sample {l:?}: {e}"));
            (series.to_owned(), value)
        })
        .collect()
}

/// `promtool check metrics` on `text`: it must accept it without a complaint.
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: run `cargo xtask setup` (Debian package prometheus)");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics refused the scrape ({}):\n{}{}\n--- scrape:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn service_series(name: &str, port: u16, protocol: &str) -> String {
    format!("drlb_service_{name}_total{{vip=\"{VIP}\",port=\"{port}\",protocol=\"{protocol}\"}}")
}

fn value(samples: &Samples, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from the scrape: {samples:#?}"))
}

/// The sum of a backend metric over the service's backends.
fn backends_sum(samples: &Samples, name: &str, port: u16, protocol: &str) -> f64 {
    let prefix = format!(
        "drlb_backend_{name}_total{{vip=\"{VIP}\",port=\"{port}\",protocol=\"{protocol}\",backend="
    );
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, v)| v)
        .sum()
}

#[test]
#[ignore = "needs root and network namespaces: run with cargo xtask test"]
fn metrics_list_and_json_logs_follow_the_traffic() {
    require_root();
    let mut testbed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
    let config = testbed.default_config().replacen(
        "[director]\n",
        &format!("[director]\nmetrics = \"{METRICS_ADDRESS}\"\n"),
        1,
    );
    let config = testbed.write_config("drlb-metrics.toml", &config);
    let state = testbed.new_state_dir(false);
    // Declared after the testbed: dropped (stopped) before its namespaces go.
    let mut drlb = start_drlb(
        &testbed.director.ns,
        "drlb",
        &config,
        &state,
        &["--log-format", "json"],
        testbed.scratch.path(),
    );
    let director = &testbed.director.ns;
    let tcp_conns = service_series("connections", HTTP_PORT, "tcp");
    let udp_conns = service_series("connections", UDP_PORT, "udp");

    // Before: served once the first tick has run; valid for promtool.
    let before_text = wait_for("the first metrics", SCRAPE_WAIT, || {
        let text = scrape(director, None);
        text.contains(&tcp_conns).then_some(text)
    });
    promtool_accepts(&before_text);
    let before = samples(&before_text);

    for n in 1..=HTTP_REQUESTS {
        let reply = testbed
            .http_get(&vip_url())
            .unwrap_or_else(|e| panic!("HTTP request {n} to the VIP failed: {e}"));
        assert!(reply.server().is_some(), "request {n}: {reply:?}");
    }
    let ran = testbed.udp_client(
        &format!("{VIP}:{UDP_PORT}"),
        u32::try_from(UDP_DATAGRAMS).expect("small"),
    );
    assert!(ran.success(), "UDP round: {}", ran.describe());

    // After: the daemon's next tick shows every connection.
    let want_tcp = value(&before, &tcp_conns) + HTTP_REQUESTS as f64;
    let want_udp = value(&before, &udp_conns) + UDP_DATAGRAMS as f64;
    let after_text = wait_for("the traffic in the metrics", SCRAPE_WAIT, || {
        let text = scrape(director, None);
        let s = samples(&text);
        (s.get(&tcp_conns) == Some(&want_tcp) && s.get(&udp_conns) == Some(&want_udp))
            .then_some(text)
    });
    promtool_accepts(&after_text);
    let after = samples(&after_text);
    for (series, old) in &before {
        if series.contains("_total") {
            assert!(
                value(&after, series) >= *old,
                "counter {series} went back: {old} -> {}",
                value(&after, series)
            );
        }
    }
    let rose = |series: &str| value(&after, series) - value(&before, series);
    let tcp_packets = rose(&service_series("packets", HTTP_PORT, "tcp"));
    assert!(
        tcp_packets >= (HTTP_REQUESTS * MIN_FRAMES_PER_HTTP_CONNECTION) as f64,
        "{HTTP_REQUESTS} HTTP connections forwarded only {tcp_packets} frames"
    );
    assert!(
        rose(&service_series("bytes", HTTP_PORT, "tcp")) > tcp_packets,
        "bytes did not rise with the frames"
    );
    assert_eq!(
        rose(&service_series("packets", UDP_PORT, "udp")),
        UDP_DATAGRAMS as f64
    );
    for (port, protocol) in [(HTTP_PORT, "tcp"), (UDP_PORT, "udp")] {
        for name in ["packets", "bytes", "connections"] {
            assert_eq!(
                backends_sum(&after, name, port, protocol),
                value(&after, &service_series(name, port, protocol)),
                "the backends' {name} add up to their {protocol} service's"
            );
        }
    }
    assert!(value(&after, r#"drlb_verdict_packets_total{verdict="tx"}"#) > 0.0);
    assert_eq!(value(&after, "drlb_director_active"), 1.0);
    assert!(value(&after, "drlb_flow_table_capacity") > 0.0);
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("drlb_build_info{version=")),
        "no build info"
    );
    assert!(
        value(
            &after,
            &format!(
                "drlb_table_publishes_total{{vip=\"{VIP}\",port=\"{HTTP_PORT}\",protocol=\"tcp\"}}"
            )
        ) >= 1.0
    );
    let openmetrics = scrape(director, Some("Accept: application/openmetrics-text"));
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");

    // drlb list: ipvsadm's header, every service and backend, real Conns and InPkts.
    let plain = testbed.drlb_in(&state, &["list"]).expect_success();
    let mut lines = plain.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("IP Virtual Server version 1.2.1 (size=")),
        "{plain}"
    );
    assert_eq!(
        lines.next(),
        Some("Prot LocalAddress:Port Scheduler Flags"),
        "{plain}"
    );
    assert_eq!(
        lines.next(),
        Some("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"),
        "{plain}"
    );
    assert!(
        plain.contains(&format!("\nTCP  {VIP}:{HTTP_PORT} mh\n")),
        "{plain}"
    );
    assert!(
        plain.contains(&format!("\nUDP  {VIP}:{UDP_PORT} mh\n")),
        "{plain}"
    );
    let stats = testbed
        .drlb_in(&state, &["list", "--stats", "--exact"])
        .expect_success();
    let stats_columns = |prefix: &str| columns(&stats, prefix);
    let tcp = stats_columns(&format!("TCP  {VIP}:{HTTP_PORT}"));
    assert_eq!(
        tcp[0] as f64, want_tcp,
        "Conns of the TCP service:\n{stats}"
    );
    assert!(
        tcp[1] as f64 >= tcp_packets,
        "InPkts of the TCP service:\n{stats}"
    );
    let udp = stats_columns(&format!("UDP  {VIP}:{UDP_PORT}"));
    assert_eq!(
        udp[0] as f64, want_udp,
        "Conns of the UDP service:\n{stats}"
    );
    let mut backends_conns = 0;
    for rs in &testbed.real_servers {
        let backend = stats_columns(&format!("  -> {}:{HTTP_PORT}", rs.ip));
        backends_conns += backend[0];
        assert_eq!(backend.len(), 5, "{stats}");
        let backend_conns = value(
            &after,
            &format!(
                "drlb_backend_connections_total{{vip=\"{VIP}\",port=\"{HTTP_PORT}\",protocol=\"tcp\",backend=\"{}\"}}",
                rs.ip
            ),
        );
        assert_eq!(backend[0] as f64, backend_conns, "{} in:\n{stats}", rs.name);
    }
    assert_eq!(
        backends_conns, tcp[0],
        "the backends' Conns add up:\n{stats}"
    );
    // --rate: while connections keep arriving, an interval of the daemon's sampling holds
    // some, and CPS shows them.
    let tcp_service = format!("TCP  {VIP}:{HTTP_PORT}");
    let mut rate = String::new();
    for round in 1..=RATE_ROUNDS {
        for n in 1..=RATE_REQUESTS_PER_ROUND {
            testbed
                .http_get(&vip_url())
                .unwrap_or_else(|e| panic!("rate round {round}, request {n}: {e}"));
        }
        rate = testbed
            .drlb_in(&state, &["list", "--rate", "--exact"])
            .expect_success();
        if columns(&rate, &tcp_service)[0] > 0 {
            break;
        }
    }
    assert!(
        rate.contains("CPS    InPPS   OutPPS    InBPS   OutBPS"),
        "{rate}"
    );
    let tcp_rate = columns(&rate, &tcp_service);
    assert!(
        tcp_rate[0] > 0 && tcp_rate[1] > 0 && tcp_rate[3] > 0,
        "no CPS, InPPS or InBPS after {RATE_ROUNDS} rounds of connections:\n{rate}"
    );

    // --log-format json: every line a JSON object, the start-up among them.
    drlb.stop(libc::SIGTERM, COMMAND_TIMEOUT);
    let logs = drlb.stderr();
    let mut messages = Vec::new();
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:?}\n{logs}"));
        assert!(entry["level"].is_string(), "no level in {line:?}");
        messages.push(
            entry["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert!(
        messages.iter().any(|m| m == "drlb ready"),
        "no `drlb ready` in the JSON logs:\n{logs}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("serving Prometheus metrics")),
        "{logs}"
    );
}
