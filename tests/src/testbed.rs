//! The LVS-DR testbed shared by the end-to-end tests and the demo.
//!
//! ```text
//!                    switch namespace: bridge br0
//!       ┌──────────────┬──────────────┼──────────────┬──────────────┐
//!    p-client     p-director        p-rs1          p-rs2          p-rs3
//!       │       (pass XDP prog)       │              │              │
//!  client eth0   director eth0     rs1 eth0       rs2 eth0       rs3 eth0
//!  198.18.0.1    198.18.0.2        198.18.0.11    198.18.0.12    198.18.0.13
//!                (drlb, no VIP)    lo: the VIP 198.18.0.100/32 on every real server
//! ```
//!
//! Each real server is configured as an LVS-DR real server (the VIP on `lo`, `arp_ignore=1` and
//! `arp_announce=2` on `all`, `lo` and `eth0`) and runs `drlb-testsrv`: HTTP on port 8080 and a
//! UDP echo on 5353, both on the VIP and on its own address. The director's switch-side veth
//! peer runs the pass-everything XDP program, without which veth drops what the director sends
//! with XDP_TX, and every host's eth0 computes checksums in software, as a physical NIC would
//! before the wire (see [`Netns::checksum_in_software`]). Every namespace, process and file
//! goes away when the [`Testbed`] is dropped.
//!
//! [`Testbed::dual_stack`] builds the same with IPv6 too: every host also has 2001:2::HOST/64 on
//! eth0 (the IPv4 host number's digits: 2001:2::1, ::2, ::11, ...; no DAD), the real servers
//! also hold [`VIP6`] on lo as /128, and their services listen on both VIPs and both addresses.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::ExitStatus,
    time::Duration,
};

use crate::netns::{Capture, Netns, PassProgram, Process, Ran, Scratch, Switch, wait_for};

pub const VIP: &str = "198.18.0.100";
/// The IPv6 VIP of a [`Testbed::dual_stack`] testbed.
pub const VIP6: &str = "2001:2::100";
/// The IPv6 prefix length of every host's eth0 in a dual-stack testbed.
pub const PREFIX_LEN6: u8 = 64;
pub const HTTP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;
/// Each real server's line echo (long-lived TCP connections), on the VIP and its own address.
pub const TCP_ECHO_PORT: u16 = 9000;
/// The interface every host has on the switch.
pub const IFNAME: &str = "eth0";
/// How long `drlb run` gets to become ready (or to give up on bad input).
pub use crate::drlb::DRLB_TIMEOUT;
/// `nobody`: the unprivileged user of the non-root checks.
pub const NOBODY: u32 = 65534;

/// `http://198.18.0.100:8080/`
#[must_use]
pub fn vip_url() -> String {
    format!("http://{VIP}:{HTTP_PORT}/")
}

/// `http://[2001:2::100]:8080/`
#[must_use]
pub fn vip6_url() -> String {
    format!("http://[{VIP6}]:{HTTP_PORT}/")
}

/// `ADDRESS:PORT`, an IPv6 address in brackets.
#[must_use]
pub fn socket_text(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// A host plugged into the switch.
pub struct Host {
    /// `client`, `director`, `rs1`, ...
    pub name: &'static str,
    pub ns: Netns,
    /// Its address on `eth0`.
    pub ip: &'static str,
    /// Its IPv6 address on `eth0`, in a dual-stack testbed.
    pub ip6: Option<&'static str>,
    /// Its MAC on `eth0`, lower case.
    pub mac: String,
}

/// How to start the test servers: `drlb-testsrv`, or a binary embedding it behind a subcommand.
#[derive(Clone, Debug)]
pub struct TestServer {
    pub argv: Vec<OsString>,
}

impl TestServer {
    /// The `drlb-testsrv` binary at `path`; integration tests know it as
    /// `env!("CARGO_BIN_EXE_drlb-testsrv")`.
    #[must_use]
    pub fn binary(path: impl Into<OsString>) -> Self {
        Self {
            argv: vec![path.into()],
        }
    }

    /// The argv running the test server with `args` (e.g. `http --listen ...`).
    #[must_use]
    pub fn command<'a>(&self, args: impl IntoIterator<Item = &'a str>) -> Vec<OsString> {
        self.argv
            .iter()
            .cloned()
            .chain(args.into_iter().map(OsString::from))
            .collect()
    }
}

/// A parsed HTTP reply as curl saw it.
#[derive(Debug)]
pub struct HttpReply {
    /// `HTTP/1.1 200 OK`
    pub status_line: String,
    /// The `X-Served-By` header's value, if present.
    pub served_by_header: Option<String>,
    pub body: String,
}

impl HttpReply {
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.status_line.split_whitespace().nth(1) == Some("200")
    }

    /// The real server that answered, when the reply is a consistent 200 from the test server.
    #[must_use]
    pub fn server(&self) -> Option<&str> {
        let body = self.body.trim_end();
        (self.is_ok() && self.served_by_header.as_deref() == Some(body)).then_some(body)
    }
}

pub struct Testbed {
    // Fields drop in declaration order: processes first (a namespace with processes in it lives
    // on after `ip netns del`), then the XDP program, then the namespaces, then the files.
    drlb: Option<Process>,
    /// The real servers' services, by (server, mode).
    servers: Vec<((&'static str, &'static str), Process)>,
    _pass: PassProgram,
    pub client: Host,
    pub director: Host,
    pub real_servers: Vec<Host>,
    pub switch: Switch,
    pub scratch: Scratch,
    test_server: TestServer,
    drlb_binary: PathBuf,
    state_dirs: u32,
    /// Built by [`Testbed::dual_stack`].
    pub ipv6: bool,
}

impl Testbed {
    /// Builds the topology and starts the real servers' services; returns once each answers
    /// HTTP and UDP on its own address. drlb is not started (see [`Testbed::start_drlb`]).
    #[must_use]
    pub fn new(test_server: TestServer) -> Self {
        Self::build(test_server, false)
    }

    /// [`Testbed::new`] with IPv6 too: every host also has an IPv6 address, the real servers
    /// also hold [`VIP6`] and their services listen on it.
    #[must_use]
    pub fn dual_stack(test_server: TestServer) -> Self {
        Self::build(test_server, true)
    }

    fn build(test_server: TestServer, ipv6: bool) -> Self {
        let scratch = Scratch::create();
        let switch = Switch::create();
        let v6 = |ip6: &'static str| ipv6.then_some(ip6);
        let client = plug(
            &switch,
            "client",
            "198.18.0.1",
            "02:d1:00:00:00:01",
            v6("2001:2::1"),
        );
        let director = plug(
            &switch,
            "director",
            "198.18.0.2",
            "02:d1:00:00:00:02",
            v6("2001:2::2"),
        );
        let real_servers: Vec<Host> = [
            ("rs1", "198.18.0.11", "02:d1:00:00:00:11", "2001:2::11"),
            ("rs2", "198.18.0.12", "02:d1:00:00:00:12", "2001:2::12"),
            ("rs3", "198.18.0.13", "02:d1:00:00:00:13", "2001:2::13"),
        ]
        .into_iter()
        .map(|(name, ip, mac, ip6)| {
            let host = plug(&switch, name, ip, mac, v6(ip6));
            make_real_server(&host);
            host
        })
        .collect();
        let pass = PassProgram::attach(&switch.ns, &port_name(director.name));
        let servers = real_servers
            .iter()
            .flat_map(|rs| start_services(rs, &test_server, scratch.path()))
            .collect();
        let testbed = Self {
            drlb: None,
            servers,
            _pass: pass,
            client,
            director,
            real_servers,
            switch,
            scratch,
            test_server,
            drlb_binary: crate::drlb_binary(),
            state_dirs: 0,
            ipv6,
        };
        testbed.wait_for_services();
        testbed
    }

    fn wait_for_services(&self) {
        let timeout = Duration::from_secs(10);
        for rs in &self.real_servers {
            for ip in std::iter::once(rs.ip).chain(rs.ip6) {
                let url = format!("http://{}/", socket_text(ip, HTTP_PORT));
                wait_for(
                    &format!("{}'s HTTP server at {url}", rs.name),
                    timeout,
                    || {
                        let reply = self.http_get(&url).ok()?;
                        (reply.server() == Some(rs.name)).then_some(())
                    },
                );
                let to = socket_text(ip, UDP_PORT);
                let expected = format!("{} request 1", rs.name);
                wait_for(&format!("{}'s UDP echo at {to}", rs.name), timeout, || {
                    let ran = self.udp_client(&to, 1);
                    (ran.success() && ran.stdout.trim() == expected).then_some(())
                });
            }
        }
    }

    /// Stops one service (`http`, `udp-echo` or `tcp-echo`) of a real server, as a crash would.
    pub fn stop_service(&mut self, rs: &str, mode: &str) {
        let index = self
            .servers
            .iter()
            .position(|((name, m), _)| *name == rs && *m == mode)
            .unwrap_or_else(|| panic!("{rs} runs no {mode} service"));
        let (_, mut process) = self.servers.remove(index);
        process.stop(libc::SIGKILL, Duration::from_secs(5));
    }

    /// The real server with this MAC, if any.
    #[must_use]
    pub fn real_server_with_mac(&self, mac: &str) -> Option<&Host> {
        self.real_servers
            .iter()
            .find(|rs| rs.mac.eq_ignore_ascii_case(mac))
    }

    /// Hosts, namespaces, addresses and MACs: for messages and the demo.
    #[must_use]
    pub fn describe(&self) -> String {
        std::iter::once(&self.client)
            .chain(std::iter::once(&self.director))
            .chain(&self.real_servers)
            .map(|h| {
                format!(
                    "  {:<9} {:<12} {}  (netns {})",
                    h.name,
                    h.ip,
                    h.mac,
                    h.ns.name()
                )
            })
            .chain(std::iter::once(format!(
                "  {:<9} bridge {}              (netns {})",
                "switch",
                crate::netns::BRIDGE,
                self.switch.ns.name()
            )))
            .collect::<Vec<_>>()
            .join("\n")
    }

    // -----------------------------------------------------------------------------------------
    // drlb

    /// `[[service.backend]]` entries for rs1..rs3, weight 1.
    #[must_use]
    pub fn backends_toml(&self) -> String {
        self.real_servers
            .iter()
            .map(|rs| format!("[[service.backend]]\naddress = \"{}\"\n", rs.ip))
            .collect()
    }

    /// `[[service.backend]]` entries for rs1..rs3's IPv6 addresses (dual-stack testbed).
    #[must_use]
    pub fn backends6_toml(&self) -> String {
        self.real_servers
            .iter()
            .map(|rs| {
                let ip6 = rs.ip6.expect("a dual-stack testbed");
                format!("[[service.backend]]\naddress = \"{ip6}\"\n")
            })
            .collect()
    }

    /// A `[[service]]` on `vip` (either family) over rs1..rs3's addresses of its family.
    #[must_use]
    pub fn service_toml(&self, vip: &str, port: u16, protocol: &str) -> String {
        let backends = if vip.contains(':') {
            self.backends6_toml()
        } else {
            self.backends_toml()
        };
        format!(
            "\n[[service]]\nvip = \"{vip}\"\nport = {port}\nprotocol = \"{protocol}\"\n{backends}"
        )
    }

    /// A config with tcp VIP:8080 and udp VIP:5353 on each of `vips`, each over rs1..rs3.
    #[must_use]
    pub fn config_on(&self, vips: &[&str]) -> String {
        let services: String = vips
            .iter()
            .flat_map(|vip| {
                [
                    self.service_toml(vip, HTTP_PORT, "tcp"),
                    self.service_toml(vip, UDP_PORT, "udp"),
                ]
            })
            .collect();
        format!("[director]\ninterface = \"{IFNAME}\"\nxdp_mode = \"native\"\n{services}")
    }

    /// The standard config: tcp VIP:8080 and udp VIP:5353, each balanced over rs1..rs3.
    #[must_use]
    pub fn default_config(&self) -> String {
        let backends = self.backends_toml();
        format!(
            "[director]\ninterface = \"{IFNAME}\"\nxdp_mode = \"native\"\n\n\
             [[service]]\nvip = \"{VIP}\"\nport = {HTTP_PORT}\nprotocol = \"tcp\"\n{backends}\n\
             [[service]]\nvip = \"{VIP}\"\nport = {UDP_PORT}\nprotocol = \"udp\"\n{backends}"
        )
    }

    /// Writes a config file into the scratch directory (readable by everyone).
    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        self.scratch.write(name, text)
    }

    /// A fresh, empty state directory; world-writable (sticky) when `for_anyone`, so that an
    /// unprivileged drlb fails for lack of privileges, not for lack of a place to write.
    pub fn new_state_dir(&mut self, for_anyone: bool) -> PathBuf {
        self.state_dirs += 1;
        self.scratch.subdir(
            &format!("state{}", self.state_dirs),
            if for_anyone { 0o1777 } else { 0o755 },
        )
    }

    /// `drlb ARGS...` as an argv.
    #[must_use]
    pub fn drlb_argv(&self, args: &[&std::ffi::OsStr]) -> Vec<OsString> {
        std::iter::once(self.drlb_binary.clone().into_os_string())
            .chain(args.iter().map(|a| a.to_os_string()))
            .collect()
    }

    /// Starts `drlb run` with the standard config in the director namespace and waits until it
    /// is ready (`drlb stats` succeeds). Returns the state directory.
    pub fn start_drlb(&mut self) -> PathBuf {
        let config = self.write_config("drlb.toml", &self.default_config());
        self.start_drlb_with(&config)
    }

    /// Starts `drlb run --config CONFIG` in the director namespace and waits until it is ready.
    pub fn start_drlb_with(&mut self, config: &Path) -> PathBuf {
        assert!(self.drlb.is_none(), "drlb is already running");
        let state = self.new_state_dir(false);
        let logs = self.scratch.path().to_owned();
        self.drlb = Some(crate::drlb::start_drlb(
            &self.director.ns,
            "drlb",
            config,
            &state,
            &[],
            &logs,
        ));
        state
    }

    /// The running drlb (panics if none was started).
    pub fn drlb(&mut self) -> &mut Process {
        self.drlb.as_mut().expect("drlb was not started")
    }

    /// Sends `signal` to drlb and returns its exit status (panics if it does not exit in 10 s).
    pub fn stop_drlb(&mut self, signal: libc::c_int) -> ExitStatus {
        self.drlb().stop(signal, Duration::from_secs(10))
    }

    /// Runs `drlb ARGS... --state-dir STATE` in the director namespace (bounded).
    #[must_use]
    pub fn drlb_in(&self, state: &Path, args: &[&str]) -> Ran {
        crate::drlb::drlb_in(&self.director.ns, state, args)
    }

    /// `drlb stats --json`, parsed.
    #[must_use]
    pub fn stats_json(&self, state: &Path) -> serde_json::Value {
        crate::drlb::stats_in(&self.director.ns, state)
    }

    /// `drlb run --config CONFIG` expected to refuse to start: runs it (as `user` when given,
    /// through setpriv) and returns what it did. Panics if it is still running after
    /// [`DRLB_TIMEOUT`] (it is then killed).
    pub fn run_drlb_to_refusal(&mut self, config: &Path, user: Option<u32>) -> Ran {
        let state = self.new_state_dir(user.is_some());
        let mut argv: Vec<OsString> = match user {
            Some(uid) => [
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ]
            .map(OsString::from)
            .into(),
            None => Vec::new(),
        };
        argv.extend(self.drlb_argv(&[
            "run".as_ref(),
            "--config".as_ref(),
            config.as_ref(),
            "--state-dir".as_ref(),
            state.as_ref(),
        ]));
        self.director.ns.exec(&argv, DRLB_TIMEOUT)
    }

    /// Whether `ip link show` in the director namespace shows an XDP program.
    #[must_use]
    pub fn xdp_attached_to_director(&self) -> bool {
        self.director.ns.links().contains("xdp")
    }

    // -----------------------------------------------------------------------------------------
    // Traffic from the client

    /// One GET from the client with curl (a new connection), bounded to 5 s.
    pub fn http_get(&self, url: &str) -> Result<HttpReply, String> {
        http_get(&self.client.ns, url)
    }

    /// `drlb-testsrv udp-client --to TO --count COUNT` from the client; each datagram from a new
    /// source port and waits at most 2 s for its reply.
    #[must_use]
    pub fn udp_client(&self, to: &str, count: u32) -> Ran {
        let count_text = count.to_string();
        let argv = self.test_server.command([
            "udp-client",
            "--to",
            to,
            "--count",
            &count_text,
            "--timeout-ms",
            "2000",
        ]);
        self.client
            .ns
            .exec(&argv, Duration::from_secs(10 + 2 * u64::from(count)))
    }

    /// `arping -c COUNT -w 5 -I eth0 VIP` from the client.
    #[must_use]
    pub fn arping_vip(&self, count: u32) -> Ran {
        self.client.ns.exec(
            &[
                "arping",
                "-c",
                &count.to_string(),
                "-w",
                "5",
                "-I",
                IFNAME,
                VIP,
            ],
            Duration::from_secs(15),
        )
    }

    /// Starts a tcpdump on `host`'s eth0 (lines: `-n -e`, see [`frame_source_mac`]).
    #[must_use]
    pub fn capture(&self, host: &Host, filter: &str, label: &str) -> Capture {
        Capture::start(&host.ns, IFNAME, filter, label, self.scratch.path())
    }
}

/// The switch-side port name of a host.
fn port_name(host: &str) -> String {
    format!("p-{host}")
}

/// A new namespace for `name`, plugged into the switch as eth0 with `ip`/24 and `mac` (and,
/// given `ip6`, IPv6 on with `ip6`/64).
fn plug(
    switch: &Switch,
    name: &'static str,
    ip: &'static str,
    mac: &str,
    ip6: Option<&'static str>,
) -> Host {
    let ns = Netns::create(name);
    if ip6.is_some() {
        ns.enable_ipv6(&[]);
    }
    switch.connect(&ns, &port_name(name), IFNAME, mac, &format!("{ip}/24"));
    if let Some(ip6) = ip6 {
        ns.add_address6(IFNAME, &format!("{ip6}/{PREFIX_LEN6}"));
    }
    ns.checksum_in_software(IFNAME);
    let mac = ns.mac(IFNAME);
    Host {
        name,
        ns,
        ip,
        ip6,
        mac,
    }
}

/// LVS-DR real-server setup: the VIP on lo as /32, and ARP kept quiet about it; dual-stack, also
/// the IPv6 VIP on lo as /128 (nothing else: Linux answers neighbour solicitations only for the
/// addresses of the interface they arrive on).
fn make_real_server(rs: &Host) {
    rs.ns.set_dr_arp_sysctls(&[IFNAME]);
    rs.ns
        .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    if rs.ip6.is_some() {
        rs.ns.add_address6("lo", &format!("{VIP6}/128"));
    }
}

/// HTTP and UDP echo on the VIP and on the real server's own address.
fn start_services(
    rs: &Host,
    test_server: &TestServer,
    logs: &Path,
) -> [((&'static str, &'static str), Process); 3] {
    let serve = |mode: &'static str, port: u16| {
        let mut addresses = vec![VIP, rs.ip];
        if let Some(ip6) = rs.ip6 {
            addresses.extend([VIP6, ip6]);
        }
        let listen: Vec<String> = addresses.iter().map(|a| socket_text(a, port)).collect();
        let mut args = vec![mode];
        for on in &listen {
            args.extend(["--listen", on.as_str()]);
        }
        args.extend(["--name", rs.name]);
        let argv = test_server.command(args);
        (
            (rs.name, mode),
            rs.ns.spawn(&format!("{}-{mode}", rs.name), &argv, logs),
        )
    };
    [
        serve("http", HTTP_PORT),
        serve("udp-echo", UDP_PORT),
        serve("tcp-echo", TCP_ECHO_PORT),
    ]
}

/// One GET from `ns` with curl (a new connection), bounded to 5 s.
pub fn http_get(ns: &Netns, url: &str) -> Result<HttpReply, String> {
    let ran = ns.exec(
        // --globoff: an IPv6 URL's brackets are the address's, not a curl range.
        &["curl", "-sS", "--globoff", "-i", "--max-time", "5", url],
        Duration::from_secs(10),
    );
    if !ran.success() {
        return Err(ran.describe());
    }
    parse_http(&ran.stdout).ok_or_else(|| format!("curl printed no HTTP reply: {}", ran.describe()))
}

/// Splits `curl -i` output into status line, X-Served-By and body.
fn parse_http(text: &str) -> Option<HttpReply> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status_line = lines.next()?.trim().to_owned();
    let served_by_header = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("x-served-by"))
        .map(|(_, value)| value.trim().to_owned());
    Some(HttpReply {
        status_line,
        served_by_header,
        body: body.to_owned(),
    })
}

/// The source MAC of a `tcpdump -e` line (`12:00:00.000000 02:d1:00:00:00:11 > 02:d1:...`).
#[must_use]
pub fn frame_source_mac(line: &str) -> Option<String> {
    as_mac(line.split_whitespace().nth(1)?)
}

/// The destination MAC of a `tcpdump -e` line (`... 02:d1:00:00:00:11 > 02:d1:00:00:00:01, ...`).
#[must_use]
pub fn frame_destination_mac(line: &str) -> Option<String> {
    as_mac(line.split_whitespace().nth(3)?.trim_end_matches(','))
}

fn as_mac(text: &str) -> Option<String> {
    let octets: Vec<&str> = text.split(':').collect();
    let is_mac = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && u8::from_str_radix(o, 16).is_ok());
    is_mac.then(|| text.to_ascii_lowercase())
}

/// The MACs in `arping` reply lines (`Unicast reply from 198.18.0.100 [02:D1:00:00:00:02]  0.6ms`).
#[must_use]
pub fn arping_reply_macs(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_ascii_lowercase()))
        .collect()
}
