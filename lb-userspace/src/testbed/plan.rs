//! What a testbed is made of: namespace names, addresses, MACs, the generated config and the
//! JSON description `up` prints. Pure: no commands run here.

use std::net::Ipv4Addr;

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

/// One interface of a host: its address and MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nic {
    pub address: Ipv4Addr,
    pub mac: MacAddr6,
}

impl Nic {
    fn new(network: [u8; 3], mac_prefix: [u8; 5], host: u8) -> Self {
        let [a, b, c] = network;
        let [m0, m1, m2, m3, m4] = mac_prefix;
        Self {
            address: Ipv4Addr::new(a, b, c, host),
            mac: MacAddr6::new(m0, m1, m2, m3, m4, host),
        }
    }

    /// `ADDRESS/PREFIX` for `ip addr add`.
    #[must_use]
    pub fn cidr(&self) -> String {
        format!("{}/{PREFIX_LEN}", self.address)
    }

    /// The MAC as `ip` takes it and the JSON shows it: lower case.
    #[must_use]
    pub fn mac_text(&self) -> String {
        self.mac.to_string().to_ascii_lowercase()
    }

    fn describe(&self) -> Value {
        json!({"address": self.address, "mac": self.mac_text()})
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
    fn new(name: &str, role: &str, host: u8, two_armed: bool) -> Self {
        Self {
            role: role.to_owned(),
            netns: netns_name(name, role),
            nic: Nic::new(NETWORK, MAC_PREFIX, host),
            backend_nic: two_armed.then(|| Nic::new(BACKEND_NETWORK, BACKEND_MAC_PREFIX, host)),
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
    pub vip: Ipv4Addr,
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
    pub client: Host,
    pub director: Host,
    pub servers: Vec<Host>,
    /// The VIPs the real servers hold: those of the services.
    pub vips: Vec<Ipv4Addr>,
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
    /// The testbed `name` with `servers` real servers and, unless `config` is given, a generated
    /// config balancing TCP port 80 and UDP port 5353 of the default VIP over all of them.
    pub fn new(name: &str, servers: u32, two_armed: bool, config: Option<&Config>) -> Result<Self> {
        validate_name(name)?;
        if !(1..=MAX_SERVERS).contains(&servers) {
            bail!("--servers must be between 1 and {MAX_SERVERS}, not {servers}");
        }
        let servers: Vec<Host> = (1..=servers)
            .map(|k| {
                let host = FIRST_SERVER_HOST + u8::try_from(k).expect("at most MAX_SERVERS");
                Host::new(name, &format!("{SERVER_ROLE_PREFIX}{k}"), host, two_armed)
            })
            .collect();
        let services = match config {
            Some(config) => config
                .services
                .iter()
                // The testbed's plan is IPv4 (helper v6e2e adds IPv6).
                .filter_map(|s| match s.vip {
                    std::net::IpAddr::V4(vip) => Some(Service {
                        vip,
                        port: s.port,
                        protocol: s.protocol,
                    }),
                    std::net::IpAddr::V6(_) => None,
                })
                .collect(),
            None => vec![
                Service {
                    vip: default_vip(),
                    port: TCP_PORT,
                    protocol: Protocol::Tcp,
                },
                Service {
                    vip: default_vip(),
                    port: UDP_PORT,
                    protocol: Protocol::Udp,
                },
            ],
        };
        let mut vips: Vec<Ipv4Addr> = services.iter().map(|s| s.vip).collect();
        vips.sort_unstable();
        vips.dedup();
        if vips.is_empty() {
            vips.push(default_vip());
        }
        let generated_config = config
            .is_none()
            .then(|| generate_config(&services, &servers, two_armed));
        Ok(Self {
            name: name.to_owned(),
            switch_netns: netns_name(name, SWITCH),
            two_armed,
            client: Host::new(name, CLIENT, CLIENT_HOST, false),
            director: Host::new(name, DIRECTOR, DIRECTOR_HOST, two_armed),
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

    /// The one JSON object `up` prints.
    #[must_use]
    pub fn describe(&self) -> Value {
        json!({
            "name": self.name,
            "vip": self.vips[0],
            "two_armed": self.two_armed,
            "client": {"netns": self.client.netns, "address": self.client.nic.address},
            "director": self.director.describe(),
            "servers": self.servers.iter().map(Host::describe).collect::<Vec<_>>(),
            "services": self.services.iter().map(|s| json!({
                "vip": s.vip, "port": s.port, "protocol": s.protocol.to_string(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The config `drlb run` gets unless the user gives one: each service over all real servers
/// (two-armed: the program runs on both interfaces, the servers are reached on the second).
fn generate_config(services: &[Service], servers: &[Host], two_armed: bool) -> String {
    let backends: String = servers
        .iter()
        .map(|rs| {
            format!(
                "[[service.backend]]\naddress = \"{}\"\n",
                rs.forwarding_nic().address
            )
        })
        .collect();
    let services: String = services
        .iter()
        .map(|s| {
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
        let plan = Plan::new("ci", 2, false, None).expect("a valid plan");
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
    }

    #[test]
    fn two_armed_the_servers_are_reached_on_the_backend_network() {
        let plan = Plan::new("ci", 2, true, None).expect("a valid plan");
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
        assert!(Plan::new("ci", 0, false, None).is_err());
        assert!(Plan::new("ci", MAX_SERVERS + 1, false, None).is_err());
        assert!(Plan::new("ci", MAX_SERVERS, false, None).is_ok());
    }
}
