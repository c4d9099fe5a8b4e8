//! A two-armed director, as in the seed's KVM testbed (shared/seeds/001): the client and the
//! VIP on bridge `br_e`, the director's DIP and the real server's RIP on bridge `br_lvs`, and the
//! real server answering the client through its own interface on `br_e`.
//!
//!     client eth0 ──┐                      ┌── eth7  director  eth8 ──┐
//!                   br_e ─────────────────┤                          br_lvs
//!     rs1   eth14 ──┘  (rs2 eth0, one-armed)                          └── eth12 rs1
//!
//! drlb runs on the director's eth7 and eth8: frames for the VIP arrive on eth7 and leave on
//! eth8 (a devmap redirect) for rs1, or on eth7 again (XDP_TX) for the one-armed rs2. The tests
//! assert what the seed's tcpdump trace shows, byte for byte, from pcap captures.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use pcap_file::pcap::PcapReader;
use tests::{
    drlb::{start_drlb, stats_in},
    netns::{Netns, PassProgram, Process, Scratch, Switch, plug_into_bridge, poll_until},
};

const VIP: &str = "198.18.7.33";
const PORT: u16 = 8000;
const BR_E: &str = "br_e";
const BR_LVS: &str = "br_lvs";
const CAPTURE_START: Duration = Duration::from_secs(10);
const REQUESTS: usize = 40;
const ETH_MACS: usize = 12;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// One interface of a host: name, address/prefix, MAC.
struct Nic {
    name: &'static str,
    cidr: &'static str,
    mac: &'static str,
}

impl Nic {
    fn ip(&self) -> &'static str {
        self.cidr.split('/').next().expect("address/prefix")
    }
}

const CLIENT: Nic = Nic {
    name: "eth0",
    cidr: "198.18.7.2/24",
    mac: "02:d1:07:00:00:02",
};
const DIRECTOR_E: Nic = Nic {
    name: "eth7",
    cidr: "198.18.7.10/24",
    mac: "02:d1:07:00:00:10",
};
const DIRECTOR_LVS: Nic = Nic {
    name: "eth8",
    cidr: "198.18.88.10/24",
    mac: "02:d1:88:00:00:10",
};
const RS1_E: Nic = Nic {
    name: "eth14",
    cidr: "198.18.7.99/24",
    mac: "02:d1:07:00:00:99",
};
const RS1_LVS: Nic = Nic {
    name: "eth12",
    cidr: "198.18.88.20/24",
    mac: "02:d1:88:00:00:20",
};
const RS2: Nic = Nic {
    name: "eth0",
    cidr: "198.18.7.98/24",
    mac: "02:d1:07:00:00:98",
};

/// The seed's topology; everything is removed on drop (processes first, then namespaces).
struct Seed {
    _processes: Vec<Process>,
    _pass: Vec<PassProgram>,
    client: Netns,
    director: Netns,
    rs1: Netns,
    rs2: Option<Netns>,
    _switch: Switch,
    scratch: Scratch,
}

fn plug(switch: &Switch, bridge: &str, host: &Netns, nic: &Nic, port: &str) {
    switch.connect_to(bridge, host, port, nic.name, nic.mac, nic.cidr);
    // Frames leave with complete checksums, as on a wire (XDP forwards them as they are).
    host.checksum_in_software(nic.name);
}

/// A real server: VIP on lo as /32, ARP kept quiet about it, and (two-armed: requests arrive
/// on one interface, replies leave by another) no reverse-path filter, as in the seed.
fn make_real_server(rs: &Netns, interfaces: &[&str]) {
    rs.ip(&["link", "set", "lo", "up"]);
    rs.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    rs.set_dr_arp_sysctls(interfaces);
    for conf in ["all", "default"].iter().chain(interfaces) {
        rs.sysctl(&format!("net.ipv4.conf.{conf}.rp_filter"), "0");
    }
}

fn serve_http(rs: &Netns, name: &str, own: &str, scratch: &Path) -> Process {
    let argv = [
        env!("CARGO_BIN_EXE_drlb-testsrv"),
        "http",
        "--listen",
        &format!("{VIP}:{PORT}"),
        "--listen",
        &format!("{own}:{PORT}"),
        "--name",
        name,
    ];
    rs.spawn(&format!("{name}-http"), &argv, scratch)
}

/// Where bridge br_lvs lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LvsBridge {
    /// In the switch namespace, with br_e: the test attaches the pass program to the director's
    /// switch port, as the owner of a peer in another namespace must.
    InSwitch,
    /// In the director's own namespace: drlb finds eth8's veth peer there and attaches the pass
    /// program to it by itself.
    InDirector,
}

/// Plugs `host` into a bridge that lives in `owner`: the veth's far end stays in `owner`.
fn plug_into(owner: &Netns, bridge: &str, host: &Netns, nic: &Nic, port: &str) {
    plug_into_bridge(owner, bridge, host, port, nic.name, nic.mac, nic.cidr);
    host.checksum_in_software(nic.name);
}

impl Seed {
    fn new(with_rs2: bool, lvs_bridge: LvsBridge) -> Self {
        tests::require_root();
        let scratch = Scratch::create();
        let switch = Switch::create();
        switch.add_bridge(BR_E);
        let client = Netns::create("client");
        let director = Netns::create("director");
        let rs1 = Netns::create("rs1");
        plug(&switch, BR_E, &client, &CLIENT, "p-client");
        plug(&switch, BR_E, &director, &DIRECTOR_E, "p-dir-e");
        plug(&switch, BR_E, &rs1, &RS1_E, "p-rs1-e");
        match lvs_bridge {
            LvsBridge::InSwitch => {
                switch.add_bridge(BR_LVS);
                plug(&switch, BR_LVS, &director, &DIRECTOR_LVS, "p-dir-lvs");
                plug(&switch, BR_LVS, &rs1, &RS1_LVS, "p-rs1-lvs");
            }
            LvsBridge::InDirector => {
                director.ip(&[
                    "link",
                    "add",
                    BR_LVS,
                    "type",
                    "bridge",
                    "stp_state",
                    "0",
                    "forward_delay",
                    "0",
                ]);
                director.ip(&["link", "set", BR_LVS, "up"]);
                director.ip(&[
                    "link",
                    "add",
                    DIRECTOR_LVS.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "p-dir-lvs",
                ]);
                director.ip(&["link", "set", "p-dir-lvs", "master", BR_LVS, "up"]);
                director.ip(&[
                    "link",
                    "set",
                    DIRECTOR_LVS.name,
                    "address",
                    DIRECTOR_LVS.mac,
                ]);
                director.ip(&["addr", "add", DIRECTOR_LVS.cidr, "dev", DIRECTOR_LVS.name]);
                director.ip(&["link", "set", DIRECTOR_LVS.name, "up"]);
                plug_into(&director, BR_LVS, &rs1, &RS1_LVS, "p-rs1-lvs");
            }
        }
        make_real_server(&rs1, &[RS1_E.name, RS1_LVS.name]);
        let mut processes = vec![serve_http(&rs1, "rs1", RS1_E.ip(), scratch.path())];
        let rs2 = with_rs2.then(|| {
            let rs2 = Netns::create("rs2");
            plug(&switch, BR_E, &rs2, &RS2, "p-rs2");
            make_real_server(&rs2, &[RS2.name]);
            processes.push(serve_http(&rs2, "rs2", RS2.ip(), scratch.path()));
            rs2
        });
        // veth hands frames sent with XDP_TX or a redirect only to a peer that runs XDP: the
        // switch ports of both director arms get the pass program.
        let mut pass = vec![PassProgram::attach(&switch.ns, "p-dir-e")];
        if lvs_bridge == LvsBridge::InSwitch {
            pass.push(PassProgram::attach(&switch.ns, "p-dir-lvs"));
        }
        Self {
            _processes: processes,
            _pass: pass,
            client,
            director,
            rs1,
            rs2,
            _switch: switch,
            scratch,
        }
    }

    fn config(&self, backends: &[&str]) -> PathBuf {
        self.config_in_mode(backends, "native")
    }

    fn config_in_mode(&self, backends: &[&str], xdp_mode: &str) -> PathBuf {
        let mut text = format!(
            "[director]\ninterfaces = [\"{}\", \"{}\"]\nxdp_mode = \"{xdp_mode}\"\n\n[[service]]\nvip = \"{VIP}\"\nport = {PORT}\nprotocol = \"tcp\"\n",
            DIRECTOR_E.name, DIRECTOR_LVS.name
        );
        for backend in backends {
            text += &format!("\n[[service.backend]]\naddress = \"{backend}\"\n");
        }
        self.scratch.write("drlb.toml", &text)
    }

    /// Starts drlb in the director namespace and waits until it answers `drlb stats`.
    fn start_drlb(&mut self, config: &Path) -> (Process, PathBuf) {
        let state = self.scratch.subdir("state", 0o700);
        let drlb = start_drlb(
            &self.director,
            "drlb",
            config,
            &state,
            &[],
            self.scratch.path(),
        );
        (drlb, state)
    }

    fn stats(&self, state: &Path) -> serde_json::Value {
        stats_in(&self.director, state)
    }

    /// `curl` from the client to the VIP; the name of the server that answered.
    fn request(&self) -> String {
        let url = format!("http://{VIP}:{PORT}/");
        self.client
            .exec(
                &["curl", "-sS", "--max-time", "5", &url],
                Duration::from_secs(10),
            )
            .expect_success()
            .trim()
            .to_owned()
    }
}

/// tcpdump writing a pcap file; the frames are read back when it stops.
struct PcapCapture {
    process: Process,
    path: PathBuf,
}

impl PcapCapture {
    fn start(ns: &Netns, ifname: &str, filter: &str, scratch: &Scratch) -> Self {
        let path = scratch.path().join(format!("{}-{ifname}.pcap", ns.name()));
        let argv = [
            "tcpdump",
            "-i",
            ifname,
            "-n",
            "-U",
            "--immediate-mode",
            "-w",
            path.to_str().expect("UTF-8"),
            filter,
        ];
        let process = ns.spawn(&format!("tcpdump-{ifname}"), &argv, scratch.path());
        let listening = poll_until(CAPTURE_START, Duration::from_millis(50), || {
            process.stderr().contains("listening on").then_some(())
        });
        assert!(
            listening.is_some(),
            "tcpdump did not start: {}",
            process.describe()
        );
        Self { process, path }
    }

    fn stop(mut self) -> Vec<Vec<u8>> {
        std::thread::sleep(Duration::from_millis(300));
        self.process.stop(libc::SIGINT, Duration::from_secs(10));
        let file = std::fs::File::open(&self.path).expect("the pcap file");
        let mut reader = PcapReader::new(file).expect("a pcap file");
        let mut frames = Vec::new();
        while let Some(packet) = reader.next_packet() {
            frames.push(packet.expect("a pcap record").data.into_owned());
        }
        frames
    }
}

/// A parsed TCP/IPv4 frame of the capture.
struct Segment {
    frame: Vec<u8>,
    dst_mac: String,
    src_mac: String,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    flags: u8,
}

fn segments(frames: Vec<Vec<u8>>) -> Vec<Segment> {
    frames
        .into_iter()
        .filter_map(|frame| {
            let packet = etherparse::SlicedPacket::from_ethernet(&frame).ok()?;
            let Some(etherparse::LinkSlice::Ethernet2(eth)) = &packet.link else {
                return None;
            };
            let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
                return None;
            };
            let Some(etherparse::TransportSlice::Tcp(tcp)) = &packet.transport else {
                return None;
            };
            let flags = (u8::from(tcp.syn()) * TCP_FLAG_SYN) | (u8::from(tcp.ack()) * TCP_FLAG_ACK);
            let (dst_mac, src_mac) = (mac(&eth.destination()), mac(&eth.source()));
            let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
            Some(Segment {
                dst_mac,
                src_mac,
                src,
                dst,
                flags,
                frame: frame.clone(),
            })
        })
        .collect()
}

fn mac(bytes: &[u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn vip() -> Ipv4Addr {
    VIP.parse().expect("VIP")
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_two_armed_director_forwards_as_the_seed_trace_shows() {
    let mut seed = Seed::new(false, LvsBridge::InSwitch);
    let config = seed.config(&[RS1_LVS.ip()]);
    let (mut drlb, state) = seed.start_drlb(&config);

    let tcp = format!("tcp port {PORT}");
    let at_client = PcapCapture::start(&seed.client, CLIENT.name, &tcp, &seed.scratch);
    let at_rs1_lvs = PcapCapture::start(&seed.rs1, RS1_LVS.name, &tcp, &seed.scratch);
    let at_rs1_e = PcapCapture::start(&seed.rs1, RS1_E.name, &tcp, &seed.scratch);
    let vip_or_icmp = format!("src host {VIP} or icmp");
    let at_director_e =
        PcapCapture::start(&seed.director, DIRECTOR_E.name, &vip_or_icmp, &seed.scratch);
    let at_director_lvs = PcapCapture::start(
        &seed.director,
        DIRECTOR_LVS.name,
        &vip_or_icmp,
        &seed.scratch,
    );
    for i in 0..REQUESTS {
        assert_eq!(seed.request(), "rs1", "request {i}");
    }
    // Proof that the director's captures work: they must see the client's ping.
    let _ = seed
        .client
        .exec(
            &["ping", "-c", "1", "-W", "2", DIRECTOR_E.ip()],
            Duration::from_secs(5),
        )
        .expect_success();
    let client = segments(at_client.stop());
    let rs1_lvs = segments(at_rs1_lvs.stop());
    let rs1_e = segments(at_rs1_e.stop());
    let director_e = at_director_e.stop();
    let director_lvs = at_director_lvs.stop();

    // [kvm send: br_e] the SYN goes to the director's MAC: the director answered ARP for the VIP.
    let syns: Vec<&Segment> = client
        .iter()
        .filter(|s| s.flags == TCP_FLAG_SYN && s.dst == vip())
        .collect();
    assert_eq!(syns.len(), REQUESTS, "one SYN per request at the client");
    assert!(
        syns.iter().all(|s| s.dst_mac == DIRECTOR_E.mac),
        "the client sends to the director's eth7 MAC"
    );
    // [lvs send: br_lvs] [server recv: br_lvs] the same frame, only the MACs changed.
    for syn in &syns {
        let received = rs1_lvs
            .iter()
            .find(|s| s.frame[ETH_MACS..] == syn.frame[ETH_MACS..])
            .unwrap_or_else(|| {
                panic!(
                    "a SYN the client sent never reached rs1's eth12 byte-identical after the MACs"
                )
            });
        assert_eq!(
            received.dst_mac, RS1_LVS.mac,
            "destination MAC: rs1's eth12"
        );
        assert_eq!(
            received.src_mac, DIRECTOR_LVS.mac,
            "source MAC: the director's eth8"
        );
    }
    // [server send: br_e] [kvm recv: br_e] the SYN-ACK leaves rs1 by eth14 from the VIP.
    let syn_ack = TCP_FLAG_SYN | TCP_FLAG_ACK;
    let sent: Vec<&Segment> = rs1_e.iter().filter(|s| s.flags == syn_ack).collect();
    assert_eq!(sent.len(), REQUESTS, "rs1 answers every SYN through eth14");
    assert!(
        sent.iter()
            .all(|s| s.src == vip() && s.src_mac == RS1_E.mac && s.dst_mac == CLIENT.mac)
    );
    let received: Vec<&Segment> = client.iter().filter(|s| s.flags == syn_ack).collect();
    assert_eq!(received.len(), REQUESTS, "the client gets every SYN-ACK");
    assert!(
        received
            .iter()
            .all(|s| s.src == vip() && s.src_mac == RS1_E.mac),
        "straight from rs1's eth14"
    );
    assert!(
        rs1_lvs.iter().all(|s| s.src != vip()),
        "rs1 sends nothing from the VIP on br_lvs"
    );
    // No reply crosses the director (its captures are live: they saw the ping).
    for (name, frames) in [("eth7", director_e), ("eth8", director_lvs)] {
        let from_vip = segments(frames.clone())
            .iter()
            .filter(|s| s.src == vip())
            .count();
        assert_eq!(from_vip, 0, "frames from the VIP on the director's {name}");
        if name == "eth7" {
            assert!(
                !frames.is_empty(),
                "the director's eth7 capture saw the ping"
            );
        }
    }

    let stats = seed.stats(&state);
    let verdicts = &stats["verdicts"];
    assert!(
        verdicts["redirect"]["packets"].as_u64() >= Some(3 * REQUESTS as u64),
        "{verdicts}"
    );
    assert_eq!(verdicts["tx"]["packets"], 0, "{verdicts}");
    let modes: Vec<&serde_json::Value> = stats["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .map(|i| &i["xdp_mode"])
        .collect();
    assert_eq!(modes, ["native", "native"], "{stats}");
    assert_eq!(
        stats["services"][0]["backends"][0]["interface"], "eth8",
        "{stats}"
    );
    drlb.stop(libc::SIGTERM, Duration::from_secs(10));
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn one_armed_and_two_armed_backends_serve_one_service() {
    let mut seed = Seed::new(true, LvsBridge::InSwitch);
    let config = seed.config(&[RS1_LVS.ip(), RS2.ip()]);
    let (mut drlb, state) = seed.start_drlb(&config);
    let vip_only = format!("src host {VIP}");
    let at_director_e =
        PcapCapture::start(&seed.director, DIRECTOR_E.name, &vip_only, &seed.scratch);
    let at_director_lvs =
        PcapCapture::start(&seed.director, DIRECTOR_LVS.name, &vip_only, &seed.scratch);
    let mut served = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..REQUESTS {
        *served.entry(seed.request()).or_default() += 1;
    }
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        ["rs1", "rs2"],
        "both backends serve: {served:?}"
    );
    assert!(
        at_director_e.stop().is_empty() && at_director_lvs.stop().is_empty(),
        "no reply crosses the director"
    );
    let stats = seed.stats(&state);
    let verdicts = &stats["verdicts"];
    assert!(
        verdicts["tx"]["packets"].as_u64() > Some(0),
        "rs2 is reached with XDP_TX: {verdicts}"
    );
    assert!(
        verdicts["redirect"]["packets"].as_u64() > Some(0),
        "rs1 is reached by redirect: {verdicts}"
    );
    let via: Vec<&serde_json::Value> = stats["services"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| &b["interface"])
        .collect();
    assert_eq!(
        via,
        ["eth7", "eth8"],
        "rs2 (198.18.7.98) by eth7, rs1 (198.18.88.20) by eth8: {stats}"
    );
    drlb.stop(libc::SIGTERM, Duration::from_secs(10));
    let _ = &seed.rs2;
}

/// With br_lvs in the director's namespace, drlb attaches the pass program to eth8's veth
/// peer by itself (without it, the redirected frames would be dropped: see the previous tests,
/// which must attach it to a peer in another namespace).
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn drlb_prepares_a_veth_peer_in_its_own_namespace() {
    let mut seed = Seed::new(false, LvsBridge::InDirector);
    let config = seed.config(&[RS1_LVS.ip()]);
    let (mut drlb, _state) = seed.start_drlb(&config);
    for i in 0..REQUESTS {
        assert_eq!(seed.request(), "rs1", "request {i}");
    }
    let links = seed.director.ip(&["link", "show", "p-dir-lvs"]);
    assert!(
        links.contains("prog/xdp"),
        "drlb attached a program to eth8's peer: {links}"
    );
    drlb.stop(libc::SIGTERM, Duration::from_secs(10));
    let links = seed.director.ip(&["link", "show", "p-dir-lvs"]);
    assert!(
        !links.contains("prog/xdp"),
        "and detached it when it stopped: {links}"
    );
    assert!(
        drlb.stderr()
            .contains("pass program attached to the veth peer"),
        "drlb says so: {}",
        drlb.describe()
    );
}

/// Generic (skb) mode, for NICs without native XDP, forwards the same way, and drlb reports
/// the mode each interface got.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn generic_mode_forwards_too_and_is_reported() {
    let mut seed = Seed::new(true, LvsBridge::InSwitch);
    let config = seed.config_in_mode(&[RS1_LVS.ip(), RS2.ip()], "generic");
    let (mut drlb, state) = seed.start_drlb(&config);
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..REQUESTS {
        served.insert(seed.request());
    }
    assert_eq!(served.into_iter().collect::<Vec<_>>(), ["rs1", "rs2"]);
    let stats = seed.stats(&state);
    let modes: Vec<&serde_json::Value> = stats["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .map(|i| &i["xdp_mode"])
        .collect();
    assert_eq!(modes, ["generic", "generic"], "{stats}");
    let links = seed.director.ip(&["link", "show", DIRECTOR_E.name]);
    assert!(
        links.contains("xdpgeneric"),
        "attached in generic mode: {links}"
    );
    drlb.stop(libc::SIGTERM, Duration::from_secs(10));
}
