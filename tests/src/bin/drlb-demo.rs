//! `cargo xtask demo`: drlb balancing real HTTP and UDP traffic on a throw-away testbed.
//!
//! Builds the LVS-DR testbed (network namespaces, a bridge, veth pairs), starts drlb in the
//! director's namespace, sends HTTP requests and UDP datagrams to the VIP from the client, shows
//! which real server answered each and where the replies went, prints `drlb stats`, then removes
//! everything. Exits non-zero if a real server got no traffic or a reply crossed the director.
//! Needs root; `DRLB_BIN` names the drlb binary.
//!
//! The test servers are this binary too (`drlb-demo testsrv ...`), so nothing else needs building.

#[path = "drlb-testsrv.rs"]
mod testsrv;

use std::{collections::BTreeMap, process::ExitCode};

use clap::Parser as _;
use tests::testbed::{HTTP_PORT, TestServer, Testbed, UDP_PORT, VIP, frame_source_mac, vip_url};

const HTTP_REQUESTS: u32 = 30;
const UDP_DATAGRAMS: u32 = 30;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if std::env::args_os().nth(1).is_some_and(|a| a == "testsrv") {
        args.next();
        return testsrv::run(testsrv::Cli::parse_from(args));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("drlb-demo creates network namespaces and loads XDP programs: run it as root");
        eprintln!("(`sudo -E cargo xtask demo`)");
        return ExitCode::FAILURE;
    }
    demo()
}

fn demo() -> ExitCode {
    let me = std::env::current_exe().expect("the demo's own path");
    let test_server = TestServer {
        argv: vec![me.into_os_string(), "testsrv".into()],
    };
    let mut problems = Vec::new();

    heading("Building the testbed");
    println!("Network namespaces joined by a bridge; each host has eth0 on 198.18.0.0/24:");
    let mut testbed = Testbed::new(test_server);
    println!("{}", testbed.describe());
    println!("The real servers hold the VIP {VIP} on lo (arp_ignore=1, arp_announce=2), so they");
    println!("accept its traffic but never answer ARP for it. Each runs an HTTP server on port");
    println!("{HTTP_PORT} and a UDP echo on port {UDP_PORT}. The director does not have the VIP.");

    heading("Starting drlb in the director's namespace");
    let config = testbed.default_config();
    println!("Config:\n{}", indent(&config));
    let config_path = testbed.write_config("drlb.toml", &config);
    let state = testbed.start_drlb_with(&config_path);
    println!("drlb is ready: its XDP program on the director's eth0 answers ARP for {VIP} and");
    println!("forwards each frame for a service to a real server by rewriting only the MACs.");

    // Who sends the frames whose source is the VIP? Only the real servers should.
    let vip_frames = format!("ip and src host {VIP}");
    let on_director = testbed.capture(&testbed.director, &vip_frames, "demo-tcpdump-director");
    let on_client = testbed.capture(&testbed.client, &vip_frames, "demo-tcpdump-client");

    let url = vip_url();
    heading(&format!(
        "{HTTP_REQUESTS} HTTP requests from the client to {url}, a new connection each"
    ));
    let mut http = zero_per_real_server(&testbed);
    for n in 1..=HTTP_REQUESTS {
        let outcome = match testbed.http_get(&url) {
            Ok(reply) => match reply.server() {
                Some(server) => {
                    *http.entry(server.to_owned()).or_default() += 1;
                    format!("served by {server}")
                }
                None => format!("unexpected reply {reply:?}"),
            },
            Err(e) => format!("failed: {e}"),
        };
        println!("request {n:>2} → {outcome}");
    }

    heading(&format!(
        "{UDP_DATAGRAMS} UDP datagrams to {VIP}:{UDP_PORT}, a new source port each"
    ));
    let mut udp = zero_per_real_server(&testbed);
    let round = testbed.udp_client(&format!("{VIP}:{UDP_PORT}"), UDP_DATAGRAMS);
    for reply in round.stdout.lines() {
        if let Some((server, _)) = reply.split_once(' ') {
            *udp.entry(server.to_owned()).or_default() += 1;
        }
    }
    if !round.success() {
        problems.push(format!("some datagrams got no reply: {}", round.describe()));
    }
    println!("answered by {}", summary(&udp));

    heading("Where the replies went");
    let director_frames = on_director.stop();
    let client_frames = on_client.stop();
    println!(
        "Frames from the VIP seen on the director's eth0: {}",
        director_frames.len()
    );
    println!(
        "Frames from the VIP seen on the client's eth0:   {}, by source MAC:",
        client_frames.len()
    );
    let mut by_mac: BTreeMap<String, u32> = BTreeMap::new();
    for line in &client_frames {
        *by_mac
            .entry(frame_source_mac(line).unwrap_or_else(|| "?".into()))
            .or_default() += 1;
    }
    for (mac, frames) in &by_mac {
        let sender = testbed.real_server_with_mac(mac).map_or_else(
            || {
                if *mac == testbed.director.mac {
                    "the director!"
                } else {
                    "unknown!"
                }
            },
            |rs| rs.name,
        );
        println!("  {mac} ({sender}): {frames}");
    }
    if !director_frames.is_empty()
        || by_mac
            .keys()
            .any(|mac| testbed.real_server_with_mac(mac).is_none())
    {
        problems.push("replies crossed the director or came from an unknown MAC".to_owned());
    }

    heading("drlb stats");
    let stats = testbed.drlb_in(&state, &["stats"]);
    if stats.success() {
        println!("{}", stats.stdout.trim_end());
    } else {
        problems.push(format!("drlb stats failed: {}", stats.describe()));
    }

    heading("Stopping drlb with SIGTERM");
    let status = testbed.stop_drlb(libc::SIGTERM);
    println!(
        "drlb exited with {status}; its log:\n{}",
        indent(&testbed.drlb().stderr())
    );
    if !status.success() {
        problems.push(format!("drlb exited with {status} on SIGTERM"));
    }

    heading("Result");
    println!("HTTP requests served:   {}", summary(&http));
    println!("UDP datagrams answered: {}", summary(&udp));
    for rs in &testbed.real_servers {
        if http[rs.name] == 0 || udp[rs.name] == 0 {
            problems.push(format!("{} served nothing over HTTP or UDP", rs.name));
        }
    }
    drop(testbed);
    println!("The testbed is removed.");
    if problems.is_empty() {
        println!(
            "Every real server answered, straight to the client: only requests crossed the director."
        );
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            println!("FAILED: {problem}");
        }
        ExitCode::FAILURE
    }
}

fn zero_per_real_server(testbed: &Testbed) -> BTreeMap<String, u32> {
    testbed
        .real_servers
        .iter()
        .map(|rs| (rs.name.to_owned(), 0))
        .collect()
}

fn summary(counts: &BTreeMap<String, u32>) -> String {
    counts
        .iter()
        .map(|(server, n)| format!("{server} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn heading(text: &str) {
    println!("\n== {text}");
}

fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
