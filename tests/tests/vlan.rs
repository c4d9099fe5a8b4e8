//! A director on a VLAN trunk: a switch with one bridge per VLAN, the client on VLAN 100, the real
//! servers on VLAN 200 (and, for their direct replies, on VLAN 100 too), a host on VLAN 300,
//! and the director's eth0 a trunk port carrying all three. drlb runs two-armed on eth0.100 and
//! eth0.200: it attaches to eth0 and serves the VIP on VLAN 100 from the backends on VLAN 200,
//! rewriting the tag in place (XDP_TX out of the same trunk); VLAN 300 passes untouched.
//!
//! ```text
//!   client eth0 ── p-client ── bridge vlan100 ── p-dir.100 ┐
//!   rsN    eth1 ── p-rsN-c  ──┘                             │
//!   rsN    eth0 ── p-rsN    ── bridge vlan200 ── p-dir.200 ├ p-dir (the trunk port) ── eth0
//!   other  eth0 ── p-other  ── bridge vlan300 ── p-dir.300 ┘     director: eth0.100,
//!                                                                  eth0.200, eth0.300
//! ```
//!
//! (The switch is built from 802.1Q devices rather than a VLAN-filtering bridge so that the
//! test needs one kernel feature, CONFIG_VLAN_8021Q, which it checks first.)
//!
//! Needs root: run with `cargo xtask test` (or `cargo test --release -p tests --test vlan --
//! --include-ignored --test-threads=1` as root after `cargo build --release -p lb-userspace`).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use tests::{
    drlb::{start_drlb, stats_in},
    netns::{Capture, Netns, PassProgram, Process, Scratch, Switch, plug_into_bridge},
    require_root,
    testbed::http_get,
};

const CLIENT_VLAN: u16 = 100;
const BACKEND_VLAN: u16 = 200;
const OTHER_VLAN: u16 = 300;
const VIP: &str = "198.18.100.100";
const PORT: u16 = 8080;
const CLIENT_CIDR: &str = "198.18.100.2/24";
const OTHER_CIDR: &str = "198.18.30.2/24";
/// The director's address on VLAN 300, which is not drlb's: the stack answers it.
const DIRECTOR_OTHER_IP: &str = "198.18.30.10";
const REQUESTS: usize = 30;
const DIRECTOR_PORT: &str = "p-dir";
const DIRECTOR_MAC: &str = "02:d1:00:00:00:10";

/// One real server: its addresses on VLAN 200 (the backend address) and VLAN 100 (replies).
struct RealServer {
    name: &'static str,
    backend_cidr: &'static str,
    client_side_cidr: &'static str,
}

const REAL_SERVERS: [RealServer; 2] = [
    RealServer {
        name: "rs1",
        backend_cidr: "198.18.200.11/24",
        client_side_cidr: "198.18.100.11/24",
    },
    RealServer {
        name: "rs2",
        backend_cidr: "198.18.200.12/24",
        client_side_cidr: "198.18.100.12/24",
    },
];

fn ip_of(cidr: &str) -> &str {
    cidr.split('/').next().expect("address/prefix")
}

struct Trunk {
    // Dropped in this order: processes, the pass program, namespaces, files.
    _servers: Vec<Process>,
    _pass: PassProgram,
    client: Netns,
    other: Netns,
    director: Netns,
    _real_servers: Vec<Netns>,
    switch: Switch,
    scratch: Scratch,
}

/// The switch's bridge of one VLAN.
fn bridge_of(vlan: u16) -> String {
    format!("vlan{vlan}")
}

/// Plugs `host`'s `ifname` into the switch as an access port of `vlan` (untagged).
fn access_port(
    switch: &Switch,
    host: &Netns,
    port: &str,
    ifname: &str,
    mac: &str,
    cidr: &str,
    vlan: u16,
) {
    plug_into_bridge(&switch.ns, &bridge_of(vlan), host, port, ifname, mac, cidr);
    // Frames leave with complete checksums, as on a wire.
    host.checksum_in_software(ifname);
}

/// Where the kernel's 802.1Q support shows itself once loaded.
const VLAN_PROC: &str = "/proc/net/vlan/config";

/// VLAN devices need the kernel's 802.1Q support (CONFIG_VLAN_8021Q, the `8021q` module). A
/// kernel without it cannot run this test: it fails saying so, it is never skipped.
fn require_8021q() {
    let _ = std::process::Command::new("modprobe")
        .arg("8021q")
        .stderr(std::process::Stdio::null())
        .status();
    assert!(
        std::path::Path::new(VLAN_PROC).exists(),
        "this kernel has no 802.1Q VLAN support ({VLAN_PROC} is missing after `modprobe 8021q`): \
         VLAN devices cannot be made; run this test on a kernel built with CONFIG_VLAN_8021Q"
    );
}

impl Trunk {
    fn new() -> Self {
        require_root();
        require_8021q();
        let scratch = Scratch::create();
        let switch = Switch::create();
        for vlan in [CLIENT_VLAN, BACKEND_VLAN, OTHER_VLAN] {
            switch.add_bridge(&bridge_of(vlan));
        }

        let client = Netns::create("client");
        access_port(
            &switch,
            &client,
            "p-client",
            "eth0",
            "02:d1:64:00:00:02",
            CLIENT_CIDR,
            CLIENT_VLAN,
        );
        let other = Netns::create("other");
        access_port(
            &switch,
            &other,
            "p-other",
            "eth0",
            "02:d1:1e:00:00:02",
            OTHER_CIDR,
            OTHER_VLAN,
        );

        let director = Netns::create("director");
        switch.ns.ip(&[
            "link",
            "add",
            DIRECTOR_PORT,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            director.name(),
        ]);
        switch.ns.ip(&["link", "set", DIRECTOR_PORT, "up"]);
        director.ip(&["link", "set", "eth0", "address", DIRECTOR_MAC]);
        director.ip(&["link", "set", "eth0", "up"]);
        for vlan in [CLIENT_VLAN, BACKEND_VLAN, OTHER_VLAN] {
            let vid = vlan.to_string();
            // The switch's trunk port: one 802.1Q device per VLAN in that VLAN's bridge.
            let port = format!("{DIRECTOR_PORT}.{vlan}");
            switch.ns.ip(&[
                "link",
                "add",
                "link",
                DIRECTOR_PORT,
                "name",
                &port,
                "type",
                "vlan",
                "id",
                &vid,
            ]);
            switch
                .ns
                .ip(&["link", "set", &port, "master", &bridge_of(vlan), "up"]);
            let name = format!("eth0.{vlan}");
            director.ip(&[
                "link", "add", "link", "eth0", "name", &name, "type", "vlan", "id", &vid,
            ]);
            let cidr = match vlan {
                CLIENT_VLAN => "198.18.100.10/24",
                BACKEND_VLAN => "198.18.200.10/24",
                _ => "198.18.30.10/24",
            };
            director.ip(&["addr", "add", cidr, "dev", &name]);
            director.ip(&["link", "set", &name, "up"]);
        }
        // The switch port is the wire: tags travel in the frame (a veth would otherwise hand
        // them over beside it, where XDP cannot see them). And veth delivers what the director
        // sends with XDP_TX only to a peer that runs XDP.
        switch
            .ns
            .run(&["ethtool", "-K", DIRECTOR_PORT, "txvlan", "off"]);
        let pass = PassProgram::attach(&switch.ns, DIRECTOR_PORT);

        let mut real_servers = Vec::new();
        let mut servers = Vec::new();
        for (n, rs) in REAL_SERVERS.iter().enumerate() {
            let ns = Netns::create(rs.name);
            access_port(
                &switch,
                &ns,
                &format!("p-{}", rs.name),
                "eth0",
                &format!("02:d1:c8:00:00:1{n}"),
                rs.backend_cidr,
                BACKEND_VLAN,
            );
            access_port(
                &switch,
                &ns,
                &format!("p-{}-c", rs.name),
                "eth1",
                &format!("02:d1:64:00:00:1{n}"),
                rs.client_side_cidr,
                CLIENT_VLAN,
            );
            ns.ip(&["link", "set", "lo", "up"]);
            ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
            ns.set_dr_arp_sysctls(&["eth0", "eth1"]);
            // Requests arrive on eth0, replies leave by eth1.
            for conf in ["all", "default", "eth0", "eth1"] {
                ns.sysctl(&format!("net.ipv4.conf.{conf}.rp_filter"), "0");
            }
            let argv = [
                env!("CARGO_BIN_EXE_drlb-testsrv"),
                "http",
                "--listen",
                &format!("{VIP}:{PORT}"),
                "--listen",
                &format!("{}:{PORT}", ip_of(rs.backend_cidr)),
                "--name",
                rs.name,
            ];
            servers.push(ns.spawn(&format!("{}-http", rs.name), &argv, scratch.path()));
            real_servers.push(ns);
        }
        Self {
            _servers: servers,
            _pass: pass,
            client,
            other,
            director,
            _real_servers: real_servers,
            switch,
            scratch,
        }
    }

    fn config(&self) -> PathBuf {
        let mut text = format!(
            "[director]\ninterfaces = [\"eth0.{CLIENT_VLAN}\", \"eth0.{BACKEND_VLAN}\"]\nxdp_mode = \"native\"\n\n\
             [[service]]\nvip = \"{VIP}\"\nport = {PORT}\nprotocol = \"tcp\"\n"
        );
        for rs in &REAL_SERVERS {
            text += &format!(
                "\n[[service.backend]]\naddress = \"{}\"\n",
                ip_of(rs.backend_cidr)
            );
        }
        self.scratch.write("drlb.toml", &text)
    }
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_director_on_a_trunk_serves_vlan_100_from_vlan_200_and_passes_vlan_300() {
    let trunk = Trunk::new();
    let state = trunk.scratch.subdir("state", 0o700);
    let mut drlb = start_drlb(
        &trunk.director,
        "drlb",
        &trunk.config(),
        &state,
        &[],
        trunk.scratch.path(),
    );

    let tagged_for_backends = Capture::start(
        &trunk.switch.ns,
        DIRECTOR_PORT,
        &format!("vlan {BACKEND_VLAN} and dst host {VIP} and tcp dst port {PORT}"),
        "tcpdump-vlan200",
        trunk.scratch.path(),
    );
    let url = format!("http://{VIP}:{PORT}/");
    let mut served = BTreeMap::<String, usize>::new();
    for n in 0..REQUESTS {
        let reply = http_get(&trunk.client, &url)
            .unwrap_or_else(|e| panic!("request {n} to the VIP on VLAN 100 failed: {e}"));
        let server = reply
            .server()
            .unwrap_or_else(|| panic!("request {n}: not a test server's 200: {reply:?}"));
        *served.entry(server.to_owned()).or_default() += 1;
    }
    assert_eq!(
        served.keys().map(String::as_str).collect::<Vec<_>>(),
        ["rs1", "rs2"],
        "both backends on VLAN 200 serve: {served:?}"
    );
    let retagged = tagged_for_backends.stop();
    assert!(
        retagged.len() >= 3 * REQUESTS,
        "the client's frames leave the director tagged for VLAN 200: {retagged:?}"
    );

    let stats = stats_in(&trunk.director, &state);
    let verdicts = &stats["verdicts"];
    assert!(
        verdicts["tx"]["packets"].as_u64() >= Some(3 * REQUESTS as u64),
        "out of the same trunk with XDP_TX: {verdicts}"
    );
    assert_eq!(
        stats["services"][0]["backends"][0]["interface"], "eth0.200",
        "{stats}"
    );
    // veth strips tags on receive by default (rx-vlan-offload): drlb turned that off.
    assert!(
        drlb.stderr().contains("rx VLAN offload turned off"),
        "drlb says so: {}",
        drlb.describe()
    );
    let features = trunk.director.run(&["ethtool", "-k", "eth0"]);
    assert!(features.contains("rx-vlan-offload: off"), "{features}");

    // VLAN 300 is not drlb's: the director's own address there answers through the stack, and
    // nobody answers ARP for the VIP there.
    let _ = trunk
        .other
        .exec(
            &["ping", "-c", "2", "-W", "2", DIRECTOR_OTHER_IP],
            Duration::from_secs(10),
        )
        .expect_success();
    let arping = trunk.other.exec(
        &["arping", "-c", "2", "-w", "3", "-I", "eth0", VIP],
        Duration::from_secs(10),
    );
    assert!(
        !arping.success(),
        "no ARP answer for the VIP on VLAN 300: {}",
        arping.describe()
    );
    drlb.stop(libc::SIGTERM, Duration::from_secs(10));
}

/// A VLAN device and an untagged interface cannot be served together: the program cannot add
/// or remove a tag in place, so `drlb run` refuses the config and says why.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_mix_of_vlan_and_untagged_interfaces_is_refused() {
    let trunk = Trunk::new();
    let config = trunk.scratch.write(
        "mixed.toml",
        &format!(
            "[director]\ninterfaces = [\"eth0.{CLIENT_VLAN}\", \"eth0\"]\n\n\
             [[service]]\nvip = \"{VIP}\"\nport = {PORT}\nprotocol = \"tcp\"\n\n\
             [[service.backend]]\naddress = \"198.18.100.11\"\n"
        ),
    );
    let state = trunk.scratch.subdir("state", 0o700);
    let ran = trunk.director.exec(
        &[
            tests::drlb_binary().as_os_str(),
            "run".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
        ],
        Duration::from_secs(20),
    );
    assert!(!ran.success(), "{}", ran.describe());
    assert!(
        ran.stderr
            .contains("mixes VLAN devices (eth0.100) with untagged interfaces (eth0)"),
        "{}",
        ran.describe()
    );
    let links = trunk.director.ip(&["link", "show", "eth0"]);
    assert!(!links.contains("prog/xdp"), "nothing attached: {links}");
    let _ = &trunk.client;
}
