//! The pinned data plane outlives the daemon (issue 16): while a client keeps 50 long-lived TCP
//! connections (some on a backend drained before) and a steady stream of UDP requests through
//! the director, drlb is stopped with SIGTERM for 5 s and started again, killed with SIGKILL
//! and started again, replaced by a program that differs (a test variant), and started with a
//! changed config. After each: no connection broken or moved, no UDP request lost, counters
//! continuous. Then `drlb down` leaves nothing attached or pinned; a pinned layout drlb cannot
//! read is refused with the way out.
//!
//! The pins live on a bpffs mounted from the test's (the root) mount namespace in its scratch
//! directory (see `tests::bpffs`).

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tests::{
    bpffs::Bpffs,
    drlb::start_drlb_with_env,
    echo::{self, Connection},
    netns::{Netns, in_netns, wait_for},
    require_root,
    testbed::{IFNAME, TCP_ECHO_PORT, TestServer, Testbed, UDP_PORT, VIP},
};

/// Long-lived connections kept through every restart.
const CONNECTIONS: usize = 50;
/// The UDP stream: one request every this often, each from a fresh socket.
const UDP_GAP: Duration = Duration::from_millis(20);
const UDP_TIMEOUT: Duration = Duration::from_secs(1);
/// Bounds of one stream (a restart cycle takes well under this).
const UDP_MAX_REQUESTS: u32 = 3000;
const UDP_MAX_TIME: Duration = Duration::from_secs(60);
/// How long drlb stays stopped in the SIGTERM cycle.
const STOPPED_FOR: Duration = Duration::from_secs(5);

/// Counts UDP requests to the VIP, answered and not, from the client until stopped.
struct UdpStream {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<(u32, Vec<String>)>,
}

impl UdpStream {
    fn start(client: &Netns) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let name = client.name().to_owned();
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            in_netns(&Netns::existing(&name), move || {
                let to: SocketAddr = format!("{VIP}:{UDP_PORT}").parse().expect("VIP");
                let started = Instant::now();
                let (mut sent, mut lost) = (0, Vec::new());
                while !flag.load(Ordering::Relaxed)
                    && sent < UDP_MAX_REQUESTS
                    && started.elapsed() < UDP_MAX_TIME
                {
                    sent += 1;
                    if let Err(e) = udp_request(to, sent) {
                        lost.push(format!("request {sent}: {e}"));
                    }
                    thread::sleep(UDP_GAP);
                }
                (sent, lost)
            })
        });
        Self { stop, thread }
    }

    /// Stops the stream; panics if a request was lost. Returns how many were sent.
    #[track_caller]
    fn finish(self, during: &str) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, lost) = self.thread.join().expect("the UDP stream's thread");
        assert!(
            lost.is_empty(),
            "during {during}: {} of {sent} UDP requests lost: {lost:?}",
            lost.len()
        );
        assert!(sent > 10, "during {during}: only {sent} UDP requests sent");
        sent
    }
}

fn udp_request(to: SocketAddr, n: u32) -> Result<(), String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    socket.connect(to).map_err(|e| format!("connect: {e}"))?;
    socket
        .set_read_timeout(Some(UDP_TIMEOUT))
        .map_err(|e| format!("timeout: {e}"))?;
    let payload = format!("request {n}");
    socket
        .send(payload.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = [0_u8; 512];
    let len = socket
        .recv(&mut reply)
        .map_err(|e| format!("no reply: {e}"))?;
    let reply = String::from_utf8_lossy(&reply[..len]);
    reply
        .ends_with(&payload)
        .then_some(())
        .ok_or_else(|| format!("unexpected reply {reply:?}"))
}

fn config(bed: &Testbed, pin_dir: &Path, weights: &[u32]) -> String {
    let backends: String = bed
        .real_servers
        .iter()
        .zip(weights)
        .map(|(rs, w)| {
            format!(
                "[[service.backend]]\naddress = \"{}\"\nweight = {w}\n",
                rs.ip
            )
        })
        .collect();
    format!(
        "[director]\ninterface = \"{IFNAME}\"\npin_dir = \"{}\"\n\n\
         [[service]]\nvip = \"{VIP}\"\nport = {TCP_ECHO_PORT}\nprotocol = \"tcp\"\n{backends}\n\
         [[service]]\nvip = \"{VIP}\"\nport = {UDP_PORT}\nprotocol = \"udp\"\n{backends}",
        pin_dir.display()
    )
}

/// Packets the echo service's counter shows.
fn echo_packets(bed: &Testbed, state: &Path) -> u64 {
    let stats = bed.stats_json(state);
    stats["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["port"] == TCP_ECHO_PORT))
        .and_then(|s| s["packets"].as_u64())
        .unwrap_or_else(|| panic!("no packet count for the echo service in {stats}"))
}

/// The echo service's counter went on from `before` (not reset); returns its value now.
#[track_caller]
fn continuous(bed: &Testbed, state: &Path, before: u64, after: &str) -> u64 {
    let now = echo_packets(bed, state);
    assert!(
        now > before,
        "after {after}: the echo service counts {now} packets, {before} before: counters must continue"
    );
    now
}

/// Waits until every backend of every service is up, with the weights of `weights`.
fn wait_ready(bed: &Testbed, state: &Path, weights: &[u32]) {
    wait_for("drlb's backends to be up", Duration::from_secs(20), || {
        let stats = bed.stats_json(state);
        let services = stats["services"].as_array()?.clone();
        services
            .iter()
            .all(|s| {
                s["backends"].as_array().is_some_and(|b| {
                    b.len() == weights.len()
                        && b.iter()
                            .all(|b| b["health"] == "up" || b["health"] == "unchecked")
                        && b.iter().map(|b| b["weight"].as_u64()).collect::<Vec<_>>()
                            == weights
                                .iter()
                                .map(|w| Some(u64::from(*w)))
                                .collect::<Vec<_>>()
                })
            })
            .then_some(())
    });
}

/// Whether an XDP program is attached to the director's interface.
fn xdp_attached(bed: &Testbed) -> bool {
    bed.director
        .ns
        .ip(&["link", "show", "dev", IFNAME])
        .contains("xdp")
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn the_data_plane_forwards_across_restarts_kills_upgrades_and_config_changes() {
    require_root();
    let mut bed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
    let bpffs = Bpffs::mount(bed.scratch.path().join("bpffs"));
    let pin_dir = bpffs.path().join("director");
    let state = bed.new_state_dir(false);
    let logs = bed.scratch.path().to_owned();
    let mut weights = vec![1, 1, 1];
    let config_path = bed.write_config("drlb.toml", &config(&bed, &pin_dir, &weights));
    let start = |bed: &Testbed, label: &str, env: &[&str]| {
        start_drlb_with_env(
            &bed.director.ns,
            label,
            &config_path,
            &state,
            &[],
            &logs,
            env,
        )
    };
    let mut drlb = start(&bed, "drlb-1", &[]);
    wait_ready(&bed, &state, &weights);
    let mut connections: Vec<Connection> = echo::connect(&bed.client.ns, CONNECTIONS);

    // Drain the server of the first connection (in the config, so every restart keeps it).
    let drained = connections[0].served_by.clone();
    let drained_index = bed
        .real_servers
        .iter()
        .position(|rs| rs.name == drained)
        .expect("a real server answered");
    weights[drained_index] = 0;
    bed.write_config("drlb.toml", &config(&bed, &pin_dir, &weights));
    drlb.signal(libc::SIGHUP);
    wait_ready(&bed, &state, &weights);
    echo::assert_all_kept(&mut connections, "draining");
    let mut packets = echo_packets(&bed, &state);

    // 1. SIGTERM, 5 s without a daemon, start again.
    let udp = UdpStream::start(&bed.client.ns);
    assert!(drlb.stop(libc::SIGTERM, Duration::from_secs(10)).success());
    assert!(
        xdp_attached(&bed),
        "the program stays attached when drlb stops"
    );
    thread::sleep(STOPPED_FOR);
    echo::assert_all_kept(&mut connections, "SIGTERM, while no daemon runs");
    drlb = start(&bed, "drlb-2", &[]);
    udp.finish("SIGTERM, 5 s stopped, start");
    echo::assert_all_kept(&mut connections, "SIGTERM, 5 s stopped, start");
    packets = continuous(&bed, &state, packets, "SIGTERM, 5 s stopped, start");

    // 2. SIGKILL, start again.
    let udp = UdpStream::start(&bed.client.ns);
    drlb.stop(libc::SIGKILL, Duration::from_secs(10));
    thread::sleep(Duration::from_secs(1));
    drlb = start(&bed, "drlb-3", &[]);
    udp.finish("SIGKILL and start");
    echo::assert_all_kept(&mut connections, "SIGKILL and start");
    packets = continuous(&bed, &state, packets, "SIGKILL and start");

    // 3. An upgrade: a program that differs (it also counts what it forwards as an event),
    //    swapped into the running links.
    let udp = UdpStream::start(&bed.client.ns);
    assert!(drlb.stop(libc::SIGTERM, Duration::from_secs(10)).success());
    drlb = start(&bed, "drlb-4", &["DRLB_TEST_PROGRAM_VARIANT=1"]);
    udp.finish("an upgrade");
    echo::assert_all_kept(&mut connections, "an upgrade");
    packets = continuous(&bed, &state, packets, "an upgrade");
    let variant = bed.stats_json(&state)["events"]["variant_forward"]["packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        variant > 0,
        "the upgraded program does not run: it forwarded nothing since the upgrade"
    );

    // 4. A changed config: another server's weight, read at start.
    let reweighted = (drained_index + 1) % weights.len();
    weights[reweighted] = 3;
    bed.write_config("drlb.toml", &config(&bed, &pin_dir, &weights));
    let udp = UdpStream::start(&bed.client.ns);
    assert!(drlb.stop(libc::SIGTERM, Duration::from_secs(10)).success());
    drlb = start(&bed, "drlb-5", &[]);
    wait_ready(&bed, &state, &weights);
    udp.finish("a start with a changed config");
    echo::assert_all_kept(&mut connections, "a start with a changed config");
    continuous(&bed, &state, packets, "a start with a changed config");
    assert!(
        connections.iter().any(|c| c.served_by == drained),
        "no connection was on the drained backend"
    );

    // `drlb down`: refused while drlb runs, then removes everything.
    let refused = bed.drlb_in(&state, &["down"]);
    assert!(
        !refused.success() && refused.stderr.contains("stop it first"),
        "`drlb down` while drlb runs: {}",
        refused.describe()
    );
    assert!(drlb.stop(libc::SIGTERM, Duration::from_secs(10)).success());
    let removed = bed.drlb_in(&state, &["down"]).expect_success();
    assert!(removed.contains("detached"), "`drlb down` said: {removed}");
    assert!(!xdp_attached(&bed), "`drlb down` left a program attached");
    assert!(!pin_dir.exists(), "`drlb down` left {}", pin_dir.display());
    let again = bed.drlb_in(&state, &["down"]).expect_success();
    assert!(
        again.contains("nothing is pinned"),
        "a second `drlb down`: {again}"
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_pinned_data_plane_of_another_layout_is_refused_with_the_way_out() {
    require_root();
    let mut bed = Testbed::new(TestServer::binary(env!("CARGO_BIN_EXE_drlb-testsrv")));
    let bpffs = Bpffs::mount(bed.scratch.path().join("bpffs"));
    let pin_dir = bpffs.path().join("director");
    std::fs::create_dir_all(pin_dir.join("layout-999")).expect("an old layout's directory");
    let config_path = bed.write_config("drlb.toml", &config(&bed, &pin_dir, &[1, 1, 1]));
    let ran = bed.run_drlb_to_refusal(&config_path, None);
    assert!(
        !ran.success() && ran.stderr.contains("layout 999") && ran.stderr.contains("drlb down"),
        "drlb must refuse a layout it cannot read, naming `drlb down`: {}",
        ran.describe()
    );
    assert!(!xdp_attached(&bed), "a refused start attached a program");

    // A pin_dir that is not on a bpffs is refused too.
    let not_bpffs = bed.scratch.subdir("not-bpffs", 0o755);
    let config_path = bed.write_config("plain.toml", &config(&bed, &not_bpffs, &[1, 1, 1]));
    let ran = bed.run_drlb_to_refusal(&config_path, None);
    assert!(
        !ran.success() && ran.stderr.contains("not on a bpffs"),
        "drlb must refuse a pin_dir off bpffs: {}",
        ran.describe()
    );
}
