//! The benchmark's two namespaces and what runs on the director's interface: the trivial
//! reflector, the `drlb` daemon, nftables DR, or kernel IPVS in DR mode. Each contender is a
//! guard that removes itself when dropped; the namespaces go last, with whatever is left.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use lb_common::bench::{REFLECTOR_PROGRAM, backend_mac};

use super::{
    BACKENDS, DIRECTOR_IF, DIRECTOR_IP, DIRECTOR_IP6, DIRECTOR_MAC, DIRECTOR_PREFIX_LEN,
    DIRECTOR_PREFIX_LEN6, GENERATOR_IF, GENERATOR_MAC, Protocol, VIP, VIP6,
    generator::{Generator, attach_bench_program},
    mac_text,
};
use crate::{
    drlb::start_drlb,
    netns::{Netns, PassProgram, Process, Scratch},
};

/// How long `drlb run` gets to become ready.
/// How long drlb gets to exit after SIGTERM.
const DRLB_STOP_TIMEOUT: Duration = Duration::from_secs(10);
const NFT_TABLE: &str = "drlb_bench";
/// The seed of nftables' jhash (any fixed value: the spread must not change between runs).
const NFT_JHASH_SEED: u32 = 0x6472_6c62;

/// The generator and director namespaces joined by a veth pair, with the generator and sink
/// loaded. Fields drop in order: programs before the namespaces they are attached in.
pub struct Testbed {
    pub generator: Generator,
    pub generator_ns: Netns,
    pub director_ns: Netns,
    pub scratch: Scratch,
}

impl Testbed {
    #[must_use]
    pub fn new() -> Self {
        let scratch = Scratch::create();
        let generator_ns = Netns::create("bench-gen");
        let director_ns = Netns::create("bench-dir");
        // The IPv6 streams' backends are on the director's IPv6 network (and IPVS forwards
        // IPv6 through the director's stack).
        director_ns.enable_ipv6(&[]);
        generator_ns.ip(&[
            "link",
            "add",
            GENERATOR_IF,
            "address",
            &mac_text(GENERATOR_MAC),
            "type",
            "veth",
            "peer",
            "name",
            DIRECTOR_IF,
            "address",
            &mac_text(DIRECTOR_MAC),
            "netns",
            director_ns.name(),
        ]);
        director_ns.ip(&[
            "addr",
            "add",
            &format!("{DIRECTOR_IP}/{DIRECTOR_PREFIX_LEN}"),
            "dev",
            DIRECTOR_IF,
        ]);
        director_ns.add_address6(
            DIRECTOR_IF,
            &format!("{DIRECTOR_IP6}/{DIRECTOR_PREFIX_LEN6}"),
        );
        for (ns, ifname) in [(&generator_ns, GENERATOR_IF), (&director_ns, DIRECTOR_IF)] {
            ns.ip(&["link", "set", ifname, "up"]);
            // A director forwards packet by packet: no GRO merging of the stack's path (the
            // nftables and IPVS rows), and the XDP rows never see it anyway.
            ns.run(&["ethtool", "-K", ifname, "gro", "off"]);
        }
        let generator = Generator::load(&generator_ns, GENERATOR_IF);
        Self {
            generator,
            generator_ns,
            director_ns,
            scratch,
        }
    }

    /// The trivial reflector on d0: the testbed's limit.
    #[must_use]
    pub fn attach_reflector(&self) -> aya::Ebpf {
        attach_bench_program(&self.director_ns, DIRECTOR_IF, REFLECTOR_PROGRAM)
    }

    /// Starts `drlb run` on d0 with the benchmark config and waits until it is ready.
    #[must_use]
    pub fn start_drlb(&self, flow_table_size: u32, run: u32) -> Drlb {
        let config = self
            .scratch
            .write(&format!("drlb-{run}.toml"), &drlb_config(flow_table_size));
        let state = self.scratch.subdir(&format!("state-{run}"), 0o755);
        let label = format!("drlb-{run}");
        let process = start_drlb(
            &self.director_ns,
            &label,
            &config,
            &state,
            &[],
            self.scratch.path(),
        );
        Drlb { process, state }
    }

    /// nftables DR on d0 (and the XDP_PASS program d0 needs to receive live frames at all).
    #[must_use]
    pub fn install_nftables(&self) -> Nftables {
        let pass = PassProgram::attach(&self.director_ns, DIRECTOR_IF);
        let ruleset = nft_ruleset();
        let path = self.scratch.write("nftables.nft", &ruleset);
        self.director_ns
            .run(&["nft".as_ref(), "-f".as_ref(), path.as_os_str()]);
        Nftables {
            _pass: pass,
            ns_name: self.director_ns.name().to_owned(),
        }
    }

    /// Whether this kernel has IPVS, checked in the director namespace (`/proc/net/ip_vs`
    /// appears once the module is loaded; `modprobe` is tried first where it exists).
    #[must_use]
    pub fn ipvs_available(&self) -> bool {
        let _ = self
            .director_ns
            .exec(&["modprobe", "-q", "ip_vs"], Duration::from_secs(10));
        self.director_ns
            .exec(&["test", "-e", "/proc/net/ip_vs"], Duration::from_secs(10))
            .success()
    }

    /// Kernel IPVS in DR mode on the director: the VIPs on d0, a virtual service per protocol
    /// (IPv4 and IPv6) with the eight real servers (`-g`, the Maglev-hash scheduler `mh`),
    /// static neighbour entries for their MACs, and the XDP_PASS program so d0 receives live
    /// frames.
    /// Returns an error text if any step fails (the caller reports it and goes on).
    pub fn install_ipvs(&self) -> Result<Ipvs, String> {
        let ns = &self.director_ns;
        // The guard first: a step that fails leaves nothing behind (a VIP left on d0 would
        // stop the next drlb from starting).
        let ipvs = Ipvs {
            _pass: PassProgram::attach(ns, DIRECTOR_IF),
            ns_name: ns.name().to_owned(),
        };
        let mut commands: Vec<Vec<String>> = vec![
            argv(&[
                "ip",
                "addr",
                "add",
                &format!("{VIP}/32"),
                "dev",
                DIRECTOR_IF,
            ]),
            argv(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{VIP6}/128"),
                "dev",
                DIRECTOR_IF,
                "nodad",
            ]),
            // Segments of established connections (no SYN seen) may create a connection.
            argv(&["sysctl", "-q", "-w", "net.ipv4.vs.sloppy_tcp=1"]),
            argv(&["sysctl", "-q", "-w", "net.ipv4.vs.conntrack=0"]),
        ];
        for n in 0..BACKENDS {
            for address in [Protocol::Udp.backend(n), Protocol::Udp6.backend(n)] {
                commands.push(argv(&[
                    "ip",
                    "neigh",
                    "replace",
                    &address.to_string(),
                    "lladdr",
                    &mac_text(backend_mac(n)),
                    "nud",
                    "permanent",
                    "dev",
                    DIRECTOR_IF,
                ]));
            }
        }
        for protocol in Protocol::ALL {
            let flag = match protocol.number() {
                lb_common::IPPROTO_TCP => "-t",
                _ => "-u",
            };
            let service = SocketAddr::new(protocol.vip(), protocol.port()).to_string();
            commands.push(argv(&["ipvsadm", "-A", flag, &service, "-s", "mh"]));
            for n in 0..BACKENDS {
                let real = SocketAddr::new(protocol.backend(n), protocol.port()).to_string();
                commands.push(argv(&[
                    "ipvsadm", "-a", flag, &service, "-r", &real, "-g", "-w", "1",
                ]));
            }
        }
        for command in &commands {
            let ran = ns.exec(command, Duration::from_secs(10));
            if !ran.success() {
                return Err(ran.describe());
            }
        }
        Ok(ipvs)
    }
}

impl Default for Testbed {
    fn default() -> Self {
        Self::new()
    }
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// The benchmark's drlb config: one VIP, a TCP and a UDP service, eight backends each with an
/// explicit MAC (they are not hosts: the sink counts their frames), no health checks.
#[must_use]
pub fn drlb_config(flow_table_size: u32) -> String {
    let mut text = format!(
        "[director]\ninterface = \"{DIRECTOR_IF}\"\nxdp_mode = \"native\"\n\
         flow_table_size = {flow_table_size}\n"
    );
    for protocol in Protocol::ALL {
        text += &format!(
            "\n[[service]]\nvip = \"{}\"\nport = {}\nprotocol = \"{}\"\n\
             [service.health_check]\nkind = \"none\"\n",
            protocol.vip(),
            protocol.port(),
            protocol.keyword()
        );
        for n in 0..BACKENDS {
            text += &format!(
                "[[service.backend]]\naddress = \"{}\"\nmac = \"{}\"\n",
                protocol.backend(n),
                mac_text(backend_mac(n))
            );
        }
    }
    text
}

/// nftables DR as nftables-based balancers do it in DSR mode: in the netdev ingress hook,
/// `jhash` of the 5-tuple picks one of the backends' MACs, the source MAC becomes the
/// director's, and the frame goes straight back out of d0 (`fwd`).
#[must_use]
pub fn nft_ruleset() -> String {
    let macs: Vec<String> = (0..BACKENDS)
        .map(|n| format!("{n} : {}", mac_text(backend_mac(n))))
        .collect();
    let macs = macs.join(", ");
    let rules: Vec<String> = Protocol::ALL
        .iter()
        .map(|p| {
            let (l3, l4, vip) = (p.network_keyword(), p.keyword(), p.vip());
            format!(
                "    {l3} daddr {vip} {l4} dport {port} ether saddr set {director} \
                 ether daddr set jhash {l3} saddr . {l4} sport . {l3} daddr . {l4} dport \
                 mod {BACKENDS} seed {NFT_JHASH_SEED:#x} map {{ {macs} }} fwd to \"{DIRECTOR_IF}\"",
                port = p.port(),
                director = mac_text(DIRECTOR_MAC),
            )
        })
        .collect();
    format!(
        "table netdev {NFT_TABLE} {{\n  chain ingress {{\n    type filter hook ingress device \
         \"{DIRECTOR_IF}\" priority 0; policy accept;\n{}\n  }}\n}}\n",
        rules.join("\n")
    )
}

/// A running `drlb run`; stopped (SIGTERM) when dropped.
pub struct Drlb {
    process: Process,
    pub state: PathBuf,
}

impl Drlb {
    /// Stops the daemon and checks that it exited cleanly.
    pub fn stop(mut self) {
        let status = self.process.stop(libc::SIGTERM, DRLB_STOP_TIMEOUT);
        assert!(status.success(), "drlb failed: {}", self.process.describe());
    }
}

/// The nftables table and the XDP_PASS program on d0; both removed on drop.
pub struct Nftables {
    _pass: PassProgram,
    ns_name: String,
}

impl Drop for Nftables {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name,
                "nft",
                "delete",
                "table",
                "netdev",
                NFT_TABLE,
            ])
            .output();
    }
}

/// The IPVS services, the VIP and the XDP_PASS program on d0; removed on drop.
pub struct Ipvs {
    _pass: PassProgram,
    ns_name: String,
}

impl Drop for Ipvs {
    fn drop(&mut self) {
        let exec = |args: &[&str]| {
            let _ = std::process::Command::new("ip")
                .args(["netns", "exec", &self.ns_name])
                .args(args)
                .output();
        };
        exec(&["ipvsadm", "-C"]);
        exec(&[
            "ip",
            "addr",
            "del",
            &format!("{VIP}/32"),
            "dev",
            DIRECTOR_IF,
        ]);
        exec(&[
            "ip",
            "-6",
            "addr",
            "del",
            &format!("{VIP6}/128"),
            "dev",
            DIRECTOR_IF,
        ]);
    }
}
