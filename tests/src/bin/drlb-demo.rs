//! `cargo xtask demo`: drlb balancing real HTTP and UDP traffic on a throw-away testbed.
//!
//! Builds the LVS-DR testbed with the product's own `drlb testbed up` (namespaces, a bridge,
//! veth pairs, `drlb run` on the director), starts HTTP and UDP test servers on the real servers,
//! sends HTTP requests and UDP datagrams to the VIP and to the IPv6 VIP beside it (the testbed
//! is dual-stack: `--ipv6`) from the client, shows which real server answered each and where
//! the replies went, prints `drlb stats`, then removes everything with
//! `drlb testbed down` (also when the demo fails). Exits non-zero if a real server got no
//! traffic or a reply crossed the director. Needs root; `DRLB_BIN` names the drlb binary.
//!
//! The test servers are this binary too (`drlb-demo testsrv ...`), so nothing else needs building.

#[path = "drlb-testsrv.rs"]
mod testsrv;

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use clap::Parser as _;
use lb_userspace::testbed::plan::{HOST_IFNAME, TCP_PORT, UDP_PORT};
use tests::{
    cli_testbed::{CliHost, CliTestbed},
    netns::{Capture, Process, Scratch, wait_for},
    testbed::{TestServer, frame_source_mac, http_get, socket_text},
};

const HTTP_REQUESTS: u32 = 30;
const UDP_DATAGRAMS: u32 = 30;
/// How long a test server may take to answer on its own address, and drlb's health check to
/// call it up.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Each datagram waits this long for its reply.
const UDP_REPLY_TIMEOUT_MS: &str = "2000";
/// The UDP client's bound: a reply timeout per datagram and some slack.
const UDP_ROUND_TIMEOUT: Duration = Duration::from_secs(10 + 2 * UDP_DATAGRAMS as u64);

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
    let name = format!("demo-{}", std::process::id());

    heading(&format!(
        "Building the testbed: drlb testbed up --name {name}"
    ));
    // Declared first so it drops last: `drlb testbed down` runs after the servers and captures
    // below are stopped, also when the demo panics.
    let testbed = CliTestbed::up(&name, &["--ipv6"]);
    let vip = testbed.vip.clone();
    let Some(vip6) = testbed.vip6.clone() else {
        println!("FAILED: drlb testbed up --ipv6 described no IPv6 VIP");
        return ExitCode::FAILURE;
    };
    println!(
        "Network namespaces joined by a bridge; each host has {HOST_IFNAME} on 198.18.0.0/24 and"
    );
    println!("2001:2::/64:");
    println!("{}", describe(&testbed));
    println!("The real servers hold the VIP {vip} on lo (arp_ignore=1, arp_announce=2), so they");
    println!("accept its traffic but never answer ARP for it, and the IPv6 VIP {vip6} (Linux");
    println!(
        "answers neighbour solicitations only for addresses of the interface they arrive on)."
    );
    println!("The director has neither VIP.");
    let config = std::fs::read_to_string(testbed.state_dir.join("drlb.toml")).unwrap_or_default();
    println!(
        "drlb runs on the director with the generated config:\n{}",
        indent(&config)
    );
    println!("Its XDP program on the director's {HOST_IFNAME} answers ARP for {vip} and neighbour");
    println!("solicitations for {vip6}, and forwards each frame for a service to a real server by");
    println!("rewriting only the MACs.");

    heading("Starting the test servers on the real servers");
    let logs = Scratch::create();
    let servers = start_servers(&testbed, &test_server, &[&vip, &vip6], &logs);
    println!(
        "Each runs an HTTP server on port {TCP_PORT} and a UDP echo on port {UDP_PORT}, on both"
    );
    println!("VIPs.");
    wait_for_servers(&testbed, &test_server);
    println!("Each answers on its own address, and drlb's health checks call them up.");

    // Who sends the replies (TCP/UDP from a VIP)? Only the real servers should. The director
    // sends neighbour advertisements from the IPv6 VIP (ICMPv6): those are its job.
    let vip_frames =
        format!("(tcp or udp) and ((ip and src host {vip}) or (ip6 and src host {vip6}))");
    let capture = |host: &CliHost, label: &str| {
        Capture::start(&host.ns, HOST_IFNAME, &vip_frames, label, logs.path())
    };
    let on_director = capture(&testbed.director, "demo-tcpdump-director");
    let on_client = capture(&testbed.client, "demo-tcpdump-client");

    let rounds: Vec<Round> = [vip.as_str(), vip6.as_str()]
        .into_iter()
        .map(|vip| traffic(&testbed, &test_server, vip, &mut problems))
        .collect();

    heading("Where the replies went");
    let director_frames = on_director.stop();
    let client_frames = on_client.stop();
    println!(
        "TCP/UDP frames from a VIP seen on the director's {HOST_IFNAME}: {}",
        director_frames.len()
    );
    println!(
        "TCP/UDP frames from a VIP seen on the client's {HOST_IFNAME}:   {}, by source MAC:",
        client_frames.len()
    );
    let mut by_mac: BTreeMap<String, u32> = BTreeMap::new();
    for line in &client_frames {
        *by_mac
            .entry(frame_source_mac(line).unwrap_or_else(|| "?".into()))
            .or_default() += 1;
    }
    for (mac, frames) in &by_mac {
        let sender = testbed.server_with_mac(mac).map_or_else(
            || {
                if *mac == testbed.director.mac {
                    "the director!"
                } else {
                    "unknown!"
                }
            },
            |rs| rs.role.as_str(),
        );
        println!("  {mac} ({sender}): {frames}");
    }
    if !director_frames.is_empty()
        || by_mac
            .keys()
            .any(|mac| testbed.server_with_mac(mac).is_none())
    {
        problems.push("replies crossed the director or came from an unknown MAC".to_owned());
    }

    heading(&format!(
        "drlb stats (ip netns exec {} drlb stats --state-dir {})",
        testbed.director.ns.name(),
        testbed.director_state_dir().display()
    ));
    let stats = testbed.drlb_on_director(&["stats"]);
    if stats.success() {
        println!("{}", stats.stdout.trim_end());
    } else {
        problems.push(format!("drlb stats failed: {}", stats.describe()));
    }

    heading("drlb's log on the director");
    println!("{}", indent(&testbed.drlb_log()));

    heading("Result");
    for round in &rounds {
        println!("Through {}:", round.vip);
        println!("  HTTP requests served:   {}", summary(&round.http));
        println!("  UDP datagrams answered: {}", summary(&round.udp));
        for rs in &testbed.servers {
            if round.http[&rs.role] == 0 || round.udp[&rs.role] == 0 {
                problems.push(format!(
                    "{} served nothing over HTTP or UDP through {}",
                    rs.role, round.vip
                ));
            }
        }
    }
    drop(servers);
    drop(testbed);
    let left = namespaces_of(&name);
    if left.is_empty() {
        println!("The testbed is removed (drlb testbed down --name {name}).");
    } else {
        problems.push(format!("drlb testbed down left namespaces: {left:?}"));
    }
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

/// What the real servers answered through one VIP.
struct Round {
    vip: String,
    http: BTreeMap<String, u32>,
    udp: BTreeMap<String, u32>,
}

/// HTTP requests and UDP datagrams from the client through `vip`, each answer shown.
fn traffic(
    testbed: &CliTestbed,
    test_server: &TestServer,
    vip: &str,
    problems: &mut Vec<String>,
) -> Round {
    let url = format!("http://{}/", socket_text(vip, TCP_PORT));
    heading(&format!(
        "{HTTP_REQUESTS} HTTP requests from the client to {url}, a new connection each"
    ));
    let mut http = zero_per_real_server(testbed);
    for n in 1..=HTTP_REQUESTS {
        let outcome = match http_get(&testbed.client.ns, &url) {
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

    let to = socket_text(vip, UDP_PORT);
    heading(&format!(
        "{UDP_DATAGRAMS} UDP datagrams to {to}, a new source port each"
    ));
    let mut udp = zero_per_real_server(testbed);
    let round = udp_client(testbed, test_server, &to, UDP_DATAGRAMS);
    for reply in round.stdout.lines() {
        if let Some((server, _)) = reply.split_once(' ') {
            *udp.entry(server.to_owned()).or_default() += 1;
        }
    }
    if !round.success() {
        problems.push(format!(
            "some datagrams to {to} got no reply: {}",
            round.describe()
        ));
    }
    println!("answered by {}", summary(&udp));
    Round {
        vip: vip.to_owned(),
        http,
        udp,
    }
}

/// One line per host: role, namespace, addresses, MAC.
fn describe(testbed: &CliTestbed) -> String {
    std::iter::once(&testbed.client)
        .chain(std::iter::once(&testbed.director))
        .chain(&testbed.servers)
        .map(|host| {
            format!(
                "  {:<9} {:<28} {:<13} {:<12} {}",
                host.role,
                host.ns.name(),
                host.address,
                host.address6.as_deref().unwrap_or("-"),
                host.mac
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// HTTP and UDP echo on each real server, on the VIPs (what the client reaches) and on its own
/// addresses (to check it is up without drlb).
fn start_servers(
    testbed: &CliTestbed,
    test_server: &TestServer,
    vips: &[&str],
    logs: &Scratch,
) -> Vec<Process> {
    let mut servers = Vec::new();
    for rs in &testbed.servers {
        for (mode, port) in [("http", TCP_PORT), ("udp-echo", UDP_PORT)] {
            let addresses = vips
                .iter()
                .copied()
                .chain([rs.address.as_str()])
                .chain(rs.address6.as_deref());
            let listen: Vec<String> = addresses.map(|a| socket_text(a, port)).collect();
            let mut args = vec![mode];
            for on in &listen {
                args.extend(["--listen", on.as_str()]);
            }
            args.extend(["--name", &rs.role]);
            let argv = test_server.command(args);
            servers.push(
                rs.ns
                    .spawn(&format!("{}-{mode}", rs.role), &argv, logs.path()),
            );
        }
    }
    servers
}

/// Waits until each real server answers HTTP and UDP on its own address, and drlb's health
/// checks have every TCP backend up (before that drlb may not send them requests).
fn wait_for_servers(testbed: &CliTestbed, test_server: &TestServer) {
    for rs in &testbed.servers {
        for address in std::iter::once(&rs.address).chain(&rs.address6) {
            let url = format!("http://{}/", socket_text(address, TCP_PORT));
            wait_for(
                &format!("{}'s HTTP server at {url}", rs.role),
                READY_TIMEOUT,
                || {
                    let reply = http_get(&testbed.client.ns, &url).ok()?;
                    (reply.server() == Some(rs.role.as_str())).then_some(())
                },
            );
            let to = socket_text(address, UDP_PORT);
            let expected = format!("{} request 1", rs.role);
            wait_for(
                &format!("{}'s UDP echo at {to}", rs.role),
                READY_TIMEOUT,
                || {
                    let ran = udp_client(testbed, test_server, &to, 1);
                    (ran.success() && ran.stdout.trim() == expected).then_some(())
                },
            );
        }
    }
    wait_for(
        "drlb's health checks to call every backend up",
        READY_TIMEOUT,
        || {
            let ran = testbed.drlb_on_director(&["stats", "--json"]);
            let stats: serde_json::Value = serde_json::from_str(&ran.stdout).ok()?;
            let backends = stats["services"]
                .as_array()?
                .iter()
                .flat_map(|s| s["backends"].as_array().into_iter().flatten());
            let mut healths = backends.map(|b| b["health"].as_str().unwrap_or_default());
            healths.all(|h| h == "up" || h == "unchecked").then_some(())
        },
    );
}

/// `drlb-demo testsrv udp-client --to TO --count COUNT` from the client; each datagram from a
/// new source port.
fn udp_client(
    testbed: &CliTestbed,
    test_server: &TestServer,
    to: &str,
    count: u32,
) -> tests::netns::Ran {
    let count = count.to_string();
    let argv = test_server.command([
        "udp-client",
        "--to",
        to,
        "--count",
        &count,
        "--timeout-ms",
        UDP_REPLY_TIMEOUT_MS,
    ]);
    testbed.client.ns.exec(&argv, UDP_ROUND_TIMEOUT)
}

/// The namespaces of testbed `name` still there.
fn namespaces_of(name: &str) -> Vec<String> {
    let prefix = format!("drlbtb-{name}-");
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

fn zero_per_real_server(testbed: &CliTestbed) -> BTreeMap<String, u32> {
    testbed
        .servers
        .iter()
        .map(|rs| (rs.role.clone(), 0))
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
