//! What a testbed is made of: namespace names, addresses, MACs, the generated config and the
//! JSON description `up` prints. Pure: no commands run here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Result, bail};
use macaddr::MacAddr6;
use serde_json::{Value, json};

use crate::config::{Config, Protocol};

/// Every namespace of a testbed starts with this, then the testbed's name.
pub const NETNS_PREFIX: &str = "drlbtb-";
/// Longest testbed name: keeps namespace names, log names and messages short.
pub const MAX_NAME_LEN: usize = 16;
pub const MAX_SERVERS: u32 = 50;
pub const DEFAULT_SERVERS: u32 = 3;
/// The interface of every host, facing the (client) bridge.
pub const HOST_IFNAME: &str = "eth0";
/// Two-armed: the director's and the real servers' interface facing the backend bridge.
pub const BACKEND_IFNAME: &str = "eth1";
/// The bridge, inside the switch namespace.
pub const BRIDGE: &str = "br0";
/// Two-armed: the second bridge, between the director and the real servers (the seed's br_lvs).
pub const BACKEND_BRIDGE: &str = "br1";

/// The switch-side port of a host's veth on [`BRIDGE`]: `p-ROLE` (< 16 bytes for rs1..rs50).
#[must_use]
pub fn port_name(role: &str) -> String {
    format!("p-{role}")
}

/// The switch-side port of a host's veth on [`BACKEND_BRIDGE`]: `b-ROLE`.
#[must_use]
pub fn backend_port_name(role: &str) -> String {
    format!("b-{role}")
}

/// The testbed's L2 network (inside 198.18.0.0/15, the benchmarking range).
const NETWORK: [u8; 3] = [198, 18, 0];
/// Two-armed: the network between the director and the real servers.
const BACKEND_NETWORK: [u8; 3] = [198, 18, 88];
const PREFIX_LEN: u8 = 24;
/// With `--ipv6`: the same L2 network's IPv6 prefix (inside 2001:2::/48, the IPv6 benchmarking
/// range) and, two-armed, the backend network's.
const NETWORK6: [u16; 4] = [0x2001, 2, 0, 0];
const BACKEND_NETWORK6: [u16; 4] = [0x2001, 2, 0, 0x88];
const PREFIX_LEN6: u8 = 64;
const CLIENT_HOST: u8 = 1;
const DIRECTOR_HOST: u8 = 2;
/// rsK gets FIRST_SERVER_HOST + K.
const FIRST_SERVER_HOST: u8 = 10;
const VIP_HOST: u8 = 100;
/// Locally administered, unicast MACs: `02:d1:00:00:00:HOST` (the host byte of the address),
/// `02:d1:88:00:00:HOST` on the backend network.
const MAC_PREFIX: [u8; 5] = [0x02, 0xd1, 0, 0, 0];
const BACKEND_MAC_PREFIX: [u8; 5] = [0x02, 0xd1, 0x88, 0, 0];
/// The generated config's services.
pub const TCP_PORT: u16 = 80;
pub const UDP_PORT: u16 = 5353;

const CLIENT: &str = "client";
const DIRECTOR: &str = "director";
const SWITCH: &str = "switch";
const SERVER_ROLE_PREFIX: &str = "rs";

/// The IPv6 address of host number `host` in `network`: the IPv4 host number's decimal digits
/// read as hex, so that 198.18.0.11 and 2001:2::11 are the same host (the numbers are < 256,
/// so their digits always make a valid 16-bit group).
fn address6(network: [u16; 4], host: u8) -> Ipv6Addr {
    let [a, b, c, d] = network;
    let group = u16::from_str_radix(&host.to_string(), 16).expect("at most 3 decimal digits");
    Ipv6Addr::new(a, b, c, d, 0, 0, 0, group)
}

/// One interface of a host: its address(es) and MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nic {
    pub address: Ipv4Addr,
    /// With `--ipv6`.
    pub address6: Option<Ipv6Addr>,
    pub mac: MacAddr6,
}

impl Nic {
    fn new(network: [u8; 3], network6: Option<[u16; 4]>, mac_prefix: [u8; 5], host: u8) -> Self {
        let [a, b, c] = network;
        let [m0, m1, m2, m3, m4] = mac_prefix;
        Self {
            address: Ipv4Addr::new(a, b, c, host),
            address6: network6.map(|n| address6(n, host)),
            mac: MacAddr6::new(m0, m1, m2, m3, m4, host),
        }
    }

    /// `ADDRESS/PREFIX` for `ip addr add`.
    #[must_use]
    pub fn cidr(&self) -> String {
        format!("{}/{PREFIX_LEN}", self.address)
    }

    /// The IPv6 `ADDRESS/PREFIX` for `ip -6 addr add`, with `--ipv6`.
    #[must_use]
    pub fn cidr6(&self) -> Option<String> {
        self.address6.map(|a| format!("{a}/{PREFIX_LEN6}"))
    }

    /// The address a backend of a service on `vip` has: of the VIP's family.
    fn address_for(&self, vip: IpAddr) -> Option<IpAddr> {
        match vip {
            IpAddr::V4(_) => Some(self.address.into()),
            IpAddr::V6(_) => self.address6.map(Into::into),
        }
    }

    /// The MAC as `ip` takes it and the JSON shows it: lower case.
    #[must_use]
    pub fn mac_text(&self) -> String {
        self.mac.to_string().to_ascii_lowercase()
    }

    fn describe(&self) -> Value {
        let mut value = json!({"address": self.address, "mac": self.mac_text()});
        if let Some(address6) = self.address6 {
            value["address6"] = json!(address6);
        }
        value
    }
}

/// One host of the testbed: its namespace holds [`HOST_IFNAME`] on [`BRIDGE`] and, two-armed,
/// [`BACKEND_IFNAME`] on [`BACKEND_BRIDGE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub role: String,
    pub netns: String,
    pub nic: Nic,
    pub backend_nic: Option<Nic>,
}

impl Host {
    fn new(name: &str, role: &str, host: u8, two_armed: bool, ipv6: bool) -> Self {
        Self {
            role: role.to_owned(),
            netns: netns_name(name, role),
            nic: Nic::new(NETWORK, ipv6.then_some(NETWORK6), MAC_PREFIX, host),
            backend_nic: two_armed.then(|| {
                Nic::new(
                    BACKEND_NETWORK,
                    ipv6.then_some(BACKEND_NETWORK6),
                    BACKEND_MAC_PREFIX,
                    host,
                )
            }),
        }
    }

    /// The interface the director forwards to (a real server) or from (the director).
    #[must_use]
    pub fn forwarding_nic(&self) -> Nic {
        self.backend_nic.unwrap_or(self.nic)
    }

    /// Netns, address and MAC; two-armed, `address` and `mac` are those on the backend
    /// network (where the director sends), `client_side` those on the client's.
    fn describe(&self) -> Value {
        let mut value = self.forwarding_nic().describe();
        value["netns"] = json!(self.netns);
        if self.backend_nic.is_some() {
            value["client_side"] = self.nic.describe();
        }
        value
    }
}

/// A service as the JSON shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

/// The whole testbed.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub switch_netns: String,
    /// The director reaches the real servers on a second bridge (the seed's two-armed testbed).
    pub two_armed: bool,
    /// Every host has an IPv6 address too, the real servers an IPv6 VIP.
    pub ipv6: bool,
    pub client: Host,
    pub director: Host,
    pub servers: Vec<Host>,
    /// The VIPs the real servers hold: those of the services (IPv4 first).
    pub vips: Vec<IpAddr>,
    pub services: Vec<Service>,
    /// The config to write for `drlb run`, unless the user gave one.
    pub generated_config: Option<String>,
}

/// The default VIP (the generated config's).
#[must_use]
pub fn default_vip() -> Ipv4Addr {
    let [a, b, c] = NETWORK;
    Ipv4Addr::new(a, b, c, VIP_HOST)
}

/// The default IPv6 VIP (the generated config's with `--ipv6`): 2001:2::100.
#[must_use]
pub fn default_vip6() -> Ipv6Addr {
    address6(NETWORK6, VIP_HOST)
}

/// What a testbed is made of, as `drlb testbed up` takes it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shape {
    pub servers: u32,
    /// The real servers reached on a second bridge.
    pub two_armed: bool,
    /// IPv6 addresses beside the IPv4 ones, and an IPv6 VIP.
    pub ipv6: bool,
}

/// `drlbtb-NAME-ROLE`.
#[must_use]
pub fn netns_name(name: &str, role: &str) -> String {
    format!("{NETNS_PREFIX}{name}-{role}")
}

/// Whether `netns` is one of testbed `name`'s namespaces (and not of a testbed whose name
/// merely starts with `name-`).
#[must_use]
pub fn is_testbed_netns(name: &str, netns: &str) -> bool {
    let Some(role) = netns
        .strip_prefix(NETNS_PREFIX)
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix('-'))
    else {
        return false;
    };
    [CLIENT, DIRECTOR, SWITCH].contains(&role)
        || role
            .strip_prefix(SERVER_ROLE_PREFIX)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A testbed name: 1 to [`MAX_NAME_LEN`] of `[a-z0-9-]`, not starting or ending with `-`.
pub fn validate_name(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        bail!("the testbed name must be 1 to {MAX_NAME_LEN} characters long, not {name:?}");
    }
    if !name.chars().all(allowed) || name.starts_with('-') || name.ends_with('-') {
        bail!(
            "the testbed name {name:?} may only hold a-z, 0-9 and '-' (not first or last): \
             it becomes part of namespace and file names"
        );
    }
    Ok(())
}

impl Plan {
    /// The testbed `name` with `shape.servers` real servers and, unless `config` is given, a
    /// generated config balancing TCP port 80 and UDP port 5353 of the default VIP (with IPv6,
    /// also of the default IPv6 VIP) over all of them.
    pub fn new(name: &str, shape: Shape, config: Option<&Config>) -> Result<Self> {
        let Shape {
            servers,
            two_armed,
            ipv6,
        } = shape;
        validate_name(name)?;
        if !(1..=MAX_SERVERS).contains(&servers) {
            bail!("--servers must be between 1 and {MAX_SERVERS}, not {servers}");
        }
        let servers: Vec<Host> = (1..=servers)
            .map(|k| {
                let host = FIRST_SERVER_HOST + u8::try_from(k).expect("at most MAX_SERVERS");
                Host::new(
                    name,
                    &format!("{SERVER_ROLE_PREFIX}{k}"),
                    host,
                    two_armed,
                    ipv6,
                )
            })
            .collect();
        let services: Vec<Service> = match config {
            Some(config) => config
                .services
                .iter()
                .map(|s| Service {
                    vip: s.vip,
                    port: s.port,
                    protocol: s.protocol,
                })
                .collect(),
            None => {
                let v6 = ipv6.then(|| IpAddr::from(default_vip6()));
                [Some(IpAddr::from(default_vip())), v6]
                    .into_iter()
                    .flatten()
                    .flat_map(|vip| {
                        [(TCP_PORT, Protocol::Tcp), (UDP_PORT, Protocol::Udp)].map(
                            |(port, protocol)| Service {
                                vip,
                                port,
                                protocol,
                            },
                        )
                    })
                    .collect()
            }
        };
        if let Some(s) = services.iter().find(|s| s.vip.is_ipv6() && !ipv6) {
            bail!(
                "the config has a service on the IPv6 VIP {} but the testbed has no IPv6: \
                 add --ipv6",
                s.vip
            );
        }
        // IPv4 first (IpAddr orders V4 before V6): `vip` in the JSON stays an IPv4 one.
        let mut vips: Vec<IpAddr> = services.iter().map(|s| s.vip).collect();
        vips.sort_unstable();
        vips.dedup();
        if !vips.iter().any(IpAddr::is_ipv4) {
            vips.insert(0, default_vip().into());
        }
        if ipv6 && !vips.iter().any(IpAddr::is_ipv6) {
            vips.push(default_vip6().into());
        }
        let generated_config = config
            .is_none()
            .then(|| generate_config(&services, &servers, two_armed));
        Ok(Self {
            name: name.to_owned(),
            switch_netns: netns_name(name, SWITCH),
            two_armed,
            ipv6,
            client: Host::new(name, CLIENT, CLIENT_HOST, false, ipv6),
            director: Host::new(name, DIRECTOR, DIRECTOR_HOST, two_armed, ipv6),
            servers,
            vips,
            services,
            generated_config,
        })
    }

    /// Client, director and real servers.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        [&self.client, &self.director]
            .into_iter()
            .chain(&self.servers)
    }

    /// Every namespace, the switch first (the others plug into it).
    #[must_use]
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.switch_netns.clone())
            .chain(self.hosts().map(|h| h.netns.clone()))
            .collect()
    }

    /// The first IPv4 VIP (there always is one).
    #[must_use]
    pub fn vip(&self) -> IpAddr {
        self.vips[0]
    }

    /// The first IPv6 VIP, with `--ipv6`.
    #[must_use]
    pub fn vip6(&self) -> Option<IpAddr> {
        self.vips.iter().copied().find(IpAddr::is_ipv6)
    }

    /// The one JSON object `up` prints; with `--ipv6` it also has `vip6` and each host's
    /// `address6`.
    #[must_use]
    pub fn describe(&self) -> Value {
        let mut client = json!({"netns": self.client.netns, "address": self.client.nic.address});
        if let Some(address6) = self.client.nic.address6 {
            client["address6"] = json!(address6);
        }
        let mut value = json!({
            "name": self.name,
            "vip": self.vip(),
            "two_armed": self.two_armed,
            "ipv6": self.ipv6,
            "client": client,
            "director": self.director.describe(),
            "servers": self.servers.iter().map(Host::describe).collect::<Vec<_>>(),
            "services": self.services.iter().map(|s| json!({
                "vip": s.vip, "port": s.port, "protocol": s.protocol.to_string(),
            })).collect::<Vec<_>>(),
        });
        if let Some(vip6) = self.vip6() {
            value["vip6"] = json!(vip6);
        }
        value
    }
}

/// The config `drlb run` gets unless the user gives one: each service over all real servers
/// (two-armed: the program runs on both interfaces, the servers are reached on the second).
fn generate_config(services: &[Service], servers: &[Host], two_armed: bool) -> String {
    let services: String = services
        .iter()
        .map(|s| {
            // The backends of the VIP's family (the plan gives every host both with --ipv6).
            let backends: String = servers
                .iter()
                .filter_map(|rs| rs.forwarding_nic().address_for(s.vip))
                .map(|address| format!("[[service.backend]]\naddress = \"{address}\"\n"))
                .collect();
            format!(
                "\n[[service]]\nvip = \"{}\"\nport = {}\nprotocol = \"{}\"\n{backends}",
                s.vip, s.port, s.protocol
            )
        })
        .collect();
    let interfaces = if two_armed {
        format!("interfaces = [\"{HOST_IFNAME}\", \"{BACKEND_IFNAME}\"]")
    } else {
        format!("interface = \"{HOST_IFNAME}\"")
    };
    format!("[director]\n{interfaces}\nxdp_mode = \"native\"\n{services}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(servers: u32, two_armed: bool, ipv6: bool) -> Shape {
        Shape {
            servers,
            two_armed,
            ipv6,
        }
    }

    #[test]
    fn names_are_checked() {
        for good in ["ci", "a", "ci-1234", "0123456789abcdef"] {
            validate_name(good).unwrap_or_else(|e| panic!("{good:?} refused: {e:#}"));
        }
        for bad in [
            "",
            "CI",
            "ci_1",
            "-ci",
            "ci-",
            "a/b",
            "0123456789abcdefg",
            "ci x",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn namespaces_of_a_testbed_are_told_from_those_of_a_longer_name() {
        assert!(is_testbed_netns("ci", "drlbtb-ci-client"));
        assert!(is_testbed_netns("ci", "drlbtb-ci-rs12"));
        assert!(is_testbed_netns("ci", "drlbtb-ci-switch"));
        assert!(!is_testbed_netns("ci", "drlbtb-ci-x-client"));
        assert!(!is_testbed_netns("ci", "drlbtb-ci-rs"));
        assert!(!is_testbed_netns("ci", "drlbtb-cix-client"));
        assert!(!is_testbed_netns("ci", "drlb-ci-client"));
    }

    #[test]
    fn the_generated_plan_balances_tcp_and_udp_over_every_server() {
        let plan = Plan::new("ci", shape(2, false, false), None).expect("a valid plan");
        let config = Config::parse(plan.generated_config.as_deref().expect("generated"))
            .expect("the generated config is valid");
        assert_eq!(config.services.len(), 2);
        assert!(config.services.iter().all(|s| s.backends.len() == 2));
        let json = plan.describe();
        assert_eq!(json["vip"], "198.18.0.100");
        assert_eq!(json["servers"][1]["netns"], "drlbtb-ci-rs2");
        assert_eq!(json["servers"][1]["address"], "198.18.0.12");
        assert_eq!(json["servers"][1]["mac"], "02:d1:00:00:00:0c");
        assert_eq!(json["services"][1]["protocol"], "udp");
        assert_eq!(plan.namespaces().len(), 5);
        assert!(json["servers"][1].get("client_side").is_none());
        assert!(json.get("vip6").is_none() && json["servers"][1].get("address6").is_none());
    }

    #[test]
    fn with_ipv6_every_host_has_an_ipv6_address_and_the_ipv6_vip_has_both_services() {
        let plan = Plan::new("ci", shape(2, false, true), None).expect("a valid plan");
        let config = Config::parse(plan.generated_config.as_deref().expect("generated"))
            .expect("the generated config is valid");
        assert_eq!(config.services.len(), 4);
        let vip6: IpAddr = "2001:2::100".parse().expect("an address");
        let on_vip6: Vec<_> = config.services.iter().filter(|s| s.vip == vip6).collect();
        assert_eq!(on_vip6.len(), 2, "TCP and UDP on the IPv6 VIP");
        for service in on_vip6 {
            let backends: Vec<String> = service
                .backends
                .iter()
                .map(|b| b.address.to_string())
                .collect();
            assert_eq!(backends, ["2001:2::11", "2001:2::12"]);
        }
        let json = plan.describe();
        assert_eq!(json["vip"], "198.18.0.100");
        assert_eq!(json["vip6"], "2001:2::100");
        assert_eq!(json["ipv6"], true);
        assert_eq!(json["client"]["address6"], "2001:2::1");
        assert_eq!(json["director"]["address6"], "2001:2::2");
        assert_eq!(json["servers"][1]["address"], "198.18.0.12");
        assert_eq!(json["servers"][1]["address6"], "2001:2::12");
        assert_eq!(json["services"][2]["vip"], "2001:2::100");
        assert_eq!(plan.vips, [IpAddr::from(default_vip()), vip6]);
        assert_eq!(
            plan.servers[0].nic.cidr6().as_deref(),
            Some("2001:2::11/64")
        );
    }

    #[test]
    fn with_ipv6_two_armed_the_servers_are_reached_on_the_ipv6_backend_network() {
        let plan = Plan::new("ci", shape(1, true, true), None).expect("a valid plan");
        let config = Config::parse(plan.generated_config.as_deref().expect("generated"))
            .expect("the generated config is valid");
        assert_eq!(
            config.services[2].backends[0].address.to_string(),
            "2001:2:0:88::11"
        );
        let json = plan.describe();
        assert_eq!(json["servers"][0]["address6"], "2001:2:0:88::11");
        assert_eq!(json["servers"][0]["client_side"]["address6"], "2001:2::11");
    }

    #[test]
    fn an_ipv6_service_in_a_given_config_needs_ipv6() {
        let config = Config::parse(
            "[director]\ninterface = \"eth0\"\n\n[[service]]\nvip = \"2001:2::100\"\nport = 80\n\
             protocol = \"tcp\"\n[[service.backend]]\naddress = \"2001:2::11\"\n",
        )
        .expect("a valid IPv6 config");
        let refused = Plan::new("ci", shape(1, false, false), Some(&config))
            .expect_err("an IPv6 service without --ipv6");
        assert!(format!("{refused:#}").contains("--ipv6"), "{refused:#}");
        let plan = Plan::new("ci", shape(1, false, true), Some(&config)).expect("with --ipv6");
        assert_eq!(plan.generated_config, None);
        assert_eq!(plan.describe()["vip6"], "2001:2::100");
        assert_eq!(plan.describe()["vip"], "198.18.0.100");
    }

    #[test]
    fn ipv6_addresses_repeat_the_ipv4_host_numbers() {
        assert_eq!(address6(NETWORK6, 1).to_string(), "2001:2::1");
        assert_eq!(address6(NETWORK6, 60).to_string(), "2001:2::60");
        assert_eq!(address6(NETWORK6, 100).to_string(), "2001:2::100");
        assert_eq!(address6(NETWORK6, u8::MAX).to_string(), "2001:2::255");
    }

    #[test]
    fn two_armed_the_servers_are_reached_on_the_backend_network() {
        let plan = Plan::new("ci", shape(2, true, false), None).expect("a valid plan");
        let config = Config::parse(plan.generated_config.as_deref().expect("generated"))
            .expect("the generated config is valid");
        assert_eq!(config.director.interface_names(), ["eth0", "eth1"]);
        assert_eq!(
            config.services[0].backends[1].address,
            Ipv4Addr::new(198, 18, 88, 12)
        );
        let json = plan.describe();
        assert_eq!(json["servers"][1]["address"], "198.18.88.12");
        assert_eq!(json["servers"][1]["mac"], "02:d1:88:00:00:0c");
        assert_eq!(json["servers"][1]["client_side"]["address"], "198.18.0.12");
        assert_eq!(json["director"]["client_side"]["address"], "198.18.0.2");
        assert!(plan.client.backend_nic.is_none());
    }

    #[test]
    fn server_counts_are_bounded() {
        assert!(Plan::new("ci", shape(0, false, false), None).is_err());
        assert!(Plan::new("ci", shape(MAX_SERVERS + 1, false, false), None).is_err());
        assert!(Plan::new("ci", shape(MAX_SERVERS, false, false), None).is_ok());
    }
}
