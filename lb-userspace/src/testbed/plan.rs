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
/// The interface of every host, facing the bridge.
pub const HOST_IFNAME: &str = "eth0";
/// The bridge, inside the switch namespace.
pub const BRIDGE: &str = "br0";
/// The switch-side port of a host's veth: `p-ROLE` (fits 15 bytes for rs1..rs50).
pub fn port_name(role: &str) -> String {
    format!("p-{role}")
}

/// The testbed's one L2 network (inside 198.18.0.0/15, the benchmarking range).
const NETWORK: [u8; 3] = [198, 18, 0];
const PREFIX_LEN: u8 = 24;
const CLIENT_HOST: u8 = 1;
const DIRECTOR_HOST: u8 = 2;
/// rsK gets FIRST_SERVER_HOST + K.
const FIRST_SERVER_HOST: u8 = 10;
const VIP_HOST: u8 = 100;
/// Locally administered, unicast MACs: `02:d1:00:00:00:HOST` (the host byte of the address).
const MAC_PREFIX: [u8; 5] = [0x02, 0xd1, 0, 0, 0];
/// The generated config's services.
pub const TCP_PORT: u16 = 80;
pub const UDP_PORT: u16 = 5353;

const CLIENT: &str = "client";
const DIRECTOR: &str = "director";
const SWITCH: &str = "switch";
const SERVER_ROLE_PREFIX: &str = "rs";

/// One host of the testbed: its namespace holds [`HOST_IFNAME`] with this address and MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub role: String,
    pub netns: String,
    pub address: Ipv4Addr,
    pub mac: MacAddr6,
}

impl Host {
    fn new(name: &str, role: &str, host: u8) -> Self {
        let [a, b, c] = NETWORK;
        let [m0, m1, m2, m3, m4] = MAC_PREFIX;
        Self {
            role: role.to_owned(),
            netns: netns_name(name, role),
            address: Ipv4Addr::new(a, b, c, host),
            mac: MacAddr6::new(m0, m1, m2, m3, m4, host),
        }
    }

    /// `ADDRESS/PREFIX` for `ip addr add`.
    #[must_use]
    pub fn cidr(&self) -> String {
        format!("{}/{PREFIX_LEN}", self.address)
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
    pub fn new(name: &str, servers: u32, config: Option<&Config>) -> Result<Self> {
        validate_name(name)?;
        if !(1..=MAX_SERVERS).contains(&servers) {
            bail!("--servers must be between 1 and {MAX_SERVERS}, not {servers}");
        }
        let servers: Vec<Host> = (1..=servers)
            .map(|k| {
                let host = FIRST_SERVER_HOST + u8::try_from(k).expect("at most MAX_SERVERS");
                Host::new(name, &format!("{SERVER_ROLE_PREFIX}{k}"), host)
            })
            .collect();
        let services = match config {
            Some(config) => config
                .services
                .iter()
                .map(|s| Service {
                    vip: s.vip,
                    port: s.port,
                    protocol: s.protocol,
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
            .then(|| generate_config(&services, &servers));
        Ok(Self {
            name: name.to_owned(),
            switch_netns: netns_name(name, SWITCH),
            client: Host::new(name, CLIENT, CLIENT_HOST),
            director: Host::new(name, DIRECTOR, DIRECTOR_HOST),
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
        let host = |h: &Host| json!({"netns": h.netns, "address": h.address, "mac": h.mac.to_string().to_ascii_lowercase()});
        json!({
            "name": self.name,
            "vip": self.vips[0],
            "client": {"netns": self.client.netns, "address": self.client.address},
            "director": host(&self.director),
            "servers": self.servers.iter().map(host).collect::<Vec<_>>(),
            "services": self.services.iter().map(|s| json!({
                "vip": s.vip, "port": s.port, "protocol": s.protocol.to_string(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The config `drlb run` gets unless the user gives one: each service over all real servers.
fn generate_config(services: &[Service], servers: &[Host]) -> String {
    let backends: String = servers
        .iter()
        .map(|rs| format!("[[service.backend]]\naddress = \"{}\"\n", rs.address))
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
    format!("[director]\ninterface = \"{HOST_IFNAME}\"\nxdp_mode = \"native\"\n{services}")
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
        let plan = Plan::new("ci", 2, None).expect("a valid plan");
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
    }

    #[test]
    fn server_counts_are_bounded() {
        assert!(Plan::new("ci", 0, None).is_err());
        assert!(Plan::new("ci", MAX_SERVERS + 1, None).is_err());
        assert!(Plan::new("ci", MAX_SERVERS, None).is_ok());
    }
}
