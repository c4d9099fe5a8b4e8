//! The configuration file (`drlb.toml`): its schema (here), validation (`validate`) and egress
//! choice (`egress`). Pure functions, host-tested; nothing here touches the host.
//!
//! Validation happens in two steps, both before anything is loaded into the kernel:
//! [`Config::validate`] checks the file on its own, [`Config::validate_for_interfaces`] checks
//! it against the director's interface (its addresses and connected subnets).

mod egress;
pub mod health_check;
mod validate;

pub use egress::{InterfaceAddresses, egress_for};
pub use validate::check_vlan_mix;

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use lb_common::{DEFAULT_FLOW_TABLE_SIZE, DEFAULT_TABLE_SIZE, IPPROTO_TCP, IPPROTO_UDP};
use macaddr::MacAddr6;

use self::health_check::{CheckKind, HealthCheckConfig};
use serde::Deserialize;

/// Largest backend weight (as in IPVS).
pub const MAX_WEIGHT: u32 = 65_535;
const DEFAULT_WEIGHT: u32 = 1;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub director: DirectorConfig,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DirectorConfig {
    /// The one interface where VIP traffic arrives and backends are reached.
    #[serde(default)]
    pub interface: Option<String>,
    /// Or several: a two-armed director receives VIP traffic on one network and reaches
    /// (some of) its backends on another. The program runs on each.
    #[serde(default)]
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// Capacity of the flow table (flows that keep their backend across table changes).
    #[serde(default = "default_flow_table_size")]
    pub flow_table_size: u32,
    /// A group whose members may use the control socket for read-only requests (`drlb
    /// stats`); without it only root may use it. Changes always need root.
    #[serde(default)]
    pub control_group: Option<String>,
    /// When this director is active for a VIP (answers ARP for it and forwards its traffic).
    #[serde(default)]
    pub active_when: ActiveWhen,
    /// Where the data plane (maps and XDP links) is pinned, on a bpffs, so that it outlives
    /// drlb. Default: /sys/fs/bpf/drlb/<a name derived from the state directory>.
    #[serde(default)]
    pub pin_dir: Option<std::path::PathBuf>,
    /// Where to serve Prometheus metrics (GET /metrics), e.g. "127.0.0.1:9917"; none if unset.
    /// Read at start-up only.
    #[serde(default)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Route health injection (docs/bgp.md): keep each VIP this director can serve as a route
    /// in a kernel routing table that a routing daemon (BIRD) announces. None if unset.
    #[serde(default)]
    pub announce: Option<AnnounceConfig>,
    /// Answer ARP for the VIPs (and announce them with gratuitous ARP). `false` where the VIPs
    /// are routed to the director (ECMP behind a router): no one on its segment may ARP for them.
    #[serde(default = "default_arp")]
    pub arp: bool,
}

const fn default_arp() -> bool {
    true
}

/// `[director] announce = { table = 100 }`: where drlb keeps the routes of the VIPs it can
/// serve (docs/bgp.md).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AnnounceConfig {
    /// The kernel routing table (1-252) holding one `VIP/32` route per announced VIP; only
    /// the routing daemon reads it (no `ip rule` points at it).
    pub table: u32,
    /// The device the routes point at: created by drlb and gone with it, so a dead drlb's
    /// routes go too. Default `drlb-vips`.
    #[serde(default = "default_announce_device")]
    pub device: String,
}

/// The default name of the announce device.
pub const DEFAULT_ANNOUNCE_DEVICE: &str = "drlb-vips";

fn default_announce_device() -> String {
    DEFAULT_ANNOUNCE_DEVICE.to_owned()
}

/// Who decides whether the director is active for a VIP.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ActiveWhen {
    /// Active unless told otherwise: `drlb run --standby`, `drlb vip activate|deactivate`
    /// (keepalived's notify scripts), for all VIPs at once.
    #[default]
    Always,
    /// Per VIP: active while the VIP is an address of one of the director's interfaces (as
    /// keepalived's `virtual_ipaddress` adds it on the VRRP master), standby otherwise,
    /// following the kernel's address events.
    VipAssigned,
}

impl fmt::Display for ActiveWhen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Always => "always",
            Self::VipAssigned => "vip-assigned",
        })
    }
}

const fn default_flow_table_size() -> u32 {
    DEFAULT_FLOW_TABLE_SIZE
}

/// Smallest flow table accepted: every CPU gets its own share of it for eviction.
pub const MIN_FLOW_TABLE_SIZE: u32 = 1024;

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver: fast; fails on an interface whose driver lacks XDP.
    #[default]
    Native,
    /// On the generic (skb) path: any interface, much slower.
    Generic,
    /// Native where the driver supports it, generic elsewhere.
    Auto,
}

impl DirectorConfig {
    /// The director's interfaces, from `interface` or `interfaces`.
    #[must_use]
    pub fn interface_names(&self) -> Vec<String> {
        self.interface
            .iter()
            .chain(&self.interfaces)
            .cloned()
            .collect()
    }
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// IPv4 or IPv6; its backends are of the same family.
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default)]
    pub scheduler: Scheduler,
    /// Entries of the service's Maglev table: a prime, about 100 × the backend count or more.
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    /// Absent: TCP connect checks for TCP services, none for UDP services.
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
}

const fn default_table_size() -> u32 {
    DEFAULT_TABLE_SIZE
}

#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduler {
    /// Weighted Maglev over the hash of the 5-tuple.
    #[default]
    Maglev,
    /// Weighted Maglev over the hash of the client address: a client keeps its backend.
    SourceHash,
}

#[derive(
    Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }

    /// The protocol of an IP protocol number, if drlb balances it.
    #[must_use]
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            IPPROTO_TCP => Some(Self::Tcp),
            IPPROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub address: IpAddr,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The director's interface that reaches the backend; by default the one with a connected
    /// subnet holding its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Overrides the MAC found in the kernel's neighbour table.
    #[serde(
        default,
        deserialize_with = "mac_from_text",
        serialize_with = "mac_to_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub mac: Option<MacAddr6>,
}

/// MACs are written as text (`02:00:00:00:00:12`); macaddr's own serde form is a byte array.
fn mac_to_text<S: serde::Serializer>(
    mac: &Option<MacAddr6>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match mac {
        Some(mac) => serializer.serialize_some(&mac.to_string().to_lowercase()),
        None => serializer.serialize_none(),
    }
}

fn mac_from_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<MacAddr6>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid MAC address {text:?}: {e}")))
}

const fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl ServiceConfig {
    /// How the service is named in messages and stats, e.g. `tcp 198.18.0.100:8080`.
    #[must_use]
    pub fn name(&self) -> String {
        self.id().to_string()
    }

    #[must_use]
    pub fn id(&self) -> ServiceId {
        ServiceId {
            protocol: self.protocol,
            vip: self.vip,
            port: self.port,
        }
    }

    /// The health check in force: the configured one, else TCP connect for TCP services and
    /// none for UDP services (a UDP port cannot be probed without knowing its protocol).
    #[must_use]
    pub fn health_check(&self) -> HealthCheckConfig {
        self.health_check
            .clone()
            .unwrap_or_else(|| HealthCheckConfig {
                kind: match self.protocol {
                    Protocol::Tcp => CheckKind::Tcp,
                    Protocol::Udp => CheckKind::None,
                },
                ..HealthCheckConfig::default()
            })
    }
}

/// What identifies a service: protocol, VIP and port. Written `tcp/198.18.0.100:8080` (IPv6:
/// `tcp/[2001:2::100]:8080`) on the command line; shown as `tcp 198.18.0.100:8080`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize,
)]
pub struct ServiceId {
    pub protocol: Protocol,
    pub vip: IpAddr,
    pub port: u16,
}

impl ServiceId {
    /// `VIP:port`, IPv6 in brackets (`[2001:2::100]:80`).
    #[must_use]
    pub const fn socket(&self) -> SocketAddr {
        SocketAddr::new(self.vip, self.port)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, self.socket())
    }
}

impl std::str::FromStr for ServiceId {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let usage = || {
            format!(
                "{s:?} is not a service: write it as PROTOCOL/VIP:PORT, e.g. tcp/198.18.0.100:8080 \
                 or, for an IPv6 VIP, tcp/[2001:db8::100]:8080"
            )
        };
        let (protocol, rest) = s.split_once('/').with_context(usage)?;
        let protocol = match protocol {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => bail!("{}", usage()),
        };
        let addr: SocketAddr = rest.parse().with_context(usage)?;
        Ok(Self {
            protocol,
            vip: addr.ip(),
            port: addr.port(),
        })
    }
}

impl Config {
    /// Parses and validates a config file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).context("the config is not valid drlb TOML")?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::{
        egress::{contains, network},
        *,
    };

    const GOOD: &str = r#"
        [director]
        interface = "eth0"

        [[service]]
        vip = "198.18.0.100"
        port = 8080
        protocol = "tcp"

        [[service.backend]]
        address = "198.18.0.11"

        [[service.backend]]
        address = "198.18.0.12"
        weight = 3
        mac = "02:00:00:00:00:12"

        [[service]]
        vip = "198.18.0.100"
        port = 5353
        protocol = "udp"
    "#;

    fn eth0() -> InterfaceAddresses {
        InterfaceAddresses {
            name: "eth0".into(),
            addresses: vec![("198.18.0.2".parse().unwrap(), 24)],
        }
    }

    fn error_of(text: &str) -> String {
        format!(
            "{:#}",
            Config::parse(text).expect_err("config should be refused")
        )
    }

    #[test]
    fn parses_the_documented_shape_with_defaults() {
        let config = Config::parse(GOOD).unwrap();
        assert_eq!(config.director.interface_names(), ["eth0"]);
        assert_eq!(config.director.xdp_mode, XdpMode::Native);
        assert_eq!(config.services.len(), 2);
        let web = &config.services[0];
        assert_eq!(
            (web.vip, web.port, web.protocol),
            ("198.18.0.100".parse().unwrap(), 8080, Protocol::Tcp)
        );
        assert_eq!(web.backends[0].weight, 1);
        assert_eq!(web.backends[0].mac, None);
        assert_eq!(web.backends[1].weight, 3);
        assert_eq!(
            web.backends[1].mac,
            Some("02:00:00:00:00:12".parse().unwrap())
        );
        assert!(config.services[1].backends.is_empty());
        config.validate_for_interfaces(&[eth0()]).unwrap();
    }

    #[test]
    fn generic_mode_on_request() {
        let config = Config::parse(&GOOD.replace(
            "interface = \"eth0\"",
            "interface = \"eth0\"\nxdp_mode = \"generic\"",
        ))
        .unwrap();
        assert_eq!(config.director.xdp_mode, XdpMode::Generic);
    }

    #[test]
    fn announce_and_arp_are_off_by_default_and_parsed_when_set() {
        let config = Config::parse(GOOD).unwrap();
        assert_eq!(
            (config.director.announce, config.director.arp),
            (None, true)
        );
        let config = Config::parse(&GOOD.replace(
            "interface = \"eth0\"",
            "interface = \"eth0\"\narp = false\nannounce = { table = 100 }",
        ))
        .unwrap();
        assert!(!config.director.arp);
        assert_eq!(
            config.director.announce,
            Some(AnnounceConfig {
                table: 100,
                device: DEFAULT_ANNOUNCE_DEVICE.to_owned()
            })
        );
    }

    #[test]
    fn announce_refuses_the_kernels_tables_and_bad_device_names() {
        let with = |announce: &str| {
            GOOD.replace(
                "interface = \"eth0\"",
                &format!("interface = \"eth0\"\nannounce = {announce}"),
            )
        };
        for table in [0, 253, 254, 255] {
            let err = error_of(&with(&format!("{{ table = {table} }}")));
            assert!(err.contains(&format!("table {table} is reserved")), "{err}");
        }
        for device in ["", "a-name-too-long-for-linux", "a/b", "a b"] {
            let err = error_of(&with(&format!("{{ table = 100, device = \"{device}\" }}")));
            assert!(err.contains("is not a valid interface name"), "{err}");
        }
        Config::parse(&with("{ table = 252, device = \"vips0\" }")).unwrap();
    }

    #[test]
    fn the_control_group_must_exist() {
        let with = |group: &str| {
            GOOD.replace(
                "interface = \"eth0\"",
                &format!("interface = \"eth0\"\ncontrol_group = \"{group}\""),
            )
        };
        // The group root exists on every Linux system.
        let config = Config::parse(&with("root")).unwrap();
        assert_eq!(config.director.control_group.as_deref(), Some("root"));
        assert_eq!(Config::parse(GOOD).unwrap().director.control_group, None);
        let err = error_of(&with("drlb-no-such-group"));
        assert!(
            err.contains("[director] control_group: there is no group drlb-no-such-group"),
            "{err}"
        );
    }

    #[test]
    fn metrics_address_is_optional_and_checked() {
        let with = |address: &str| {
            GOOD.replace(
                "interface = \"eth0\"",
                &format!("interface = \"eth0\"\nmetrics = \"{address}\""),
            )
        };
        assert_eq!(Config::parse(GOOD).unwrap().director.metrics, None);
        assert_eq!(
            Config::parse(&with("127.0.0.1:9917"))
                .unwrap()
                .director
                .metrics,
            Some("127.0.0.1:9917".parse().unwrap())
        );
        let err = error_of(&with("localhost"));
        assert!(err.contains("invalid socket address"), "{err}");
        let err = error_of(&with("127.0.0.1:0"));
        assert!(
            err.contains("[director] metrics = \"127.0.0.1:0\" has no port"),
            "{err}"
        );
    }

    #[test]
    fn malformed_toml_is_refused_with_its_location() {
        let err = error_of("[director\ninterface = \"eth0\"");
        assert!(
            err.contains("not valid drlb TOML") && err.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_values_are_refused() {
        assert!(
            error_of(&GOOD.replace("port = 8080", "port = 8080\nprot = 1"))
                .contains("unknown field `prot`")
        );
        assert!(error_of(&GOOD.replace("\"tcp\"", "\"sctp\"")).contains("unknown variant `sctp`"));
        assert!(
            error_of(&GOOD.replace(
                "interface = \"eth0\"",
                "interface = \"eth0\"\nxdp_mode = \"fast\""
            ))
            .contains("unknown variant `fast`")
        );
    }

    #[test]
    fn invalid_addresses_and_ports_are_refused() {
        assert!(
            error_of(&GOOD.replace("198.18.0.11", "198.18.0.300")).contains("invalid IP address")
        );
        assert!(error_of(&GOOD.replace("8080", "70000")).contains("invalid value"));
        assert!(error_of(&GOOD.replace("8080", "0")).contains("port 0"));
        assert!(error_of(&GOOD.replace("198.18.0.11", "224.0.0.1")).contains("multicast"));
        assert!(
            error_of(&GOOD.replacen("vip = \"198.18.0.100\"", "vip = \"0.0.0.0\"", 1))
                .contains("unspecified")
        );
        assert!(
            error_of(&GOOD.replace("02:00:00:00:00:12", "01:00:5e:00:00:01"))
                .contains("not a unicast MAC")
        );
        assert!(error_of(&GOOD.replace("02:00:00:00:00:12", "zz")).contains("mac"));
    }

    #[test]
    fn duplicates_are_refused() {
        let twice = GOOD.replace(
            "port = 5353\n        protocol = \"udp\"",
            "port = 8080\n        protocol = \"tcp\"",
        );
        assert!(error_of(&twice).contains("service tcp 198.18.0.100:8080 is configured twice"));
        let same_backend = GOOD.replace("198.18.0.12", "198.18.0.11");
        assert!(error_of(&same_backend).contains("backend 198.18.0.11 is listed twice"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = error_of(
            &GOOD
                .replace("8080", "0")
                .replace("weight = 3", "weight = 70000"),
        );
        assert!(
            err.contains("2 problems") && err.contains("port 0") && err.contains("weight 70000"),
            "{err}"
        );
    }

    #[test]
    fn backends_off_the_connected_subnets_are_refused() {
        let config = Config::parse(&GOOD.replace("198.18.0.12", "198.19.0.12")).unwrap();
        let err = format!(
            "{:#}",
            config.validate_for_interfaces(&[eth0()]).unwrap_err()
        );
        assert!(
            err.contains(
                "198.19.0.12 is not on a directly connected subnet of the director (198.18.0.0/24 on eth0)"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_backend_that_is_the_directors_own_address_is_refused() {
        let config = Config::parse(&GOOD.replace("198.18.0.11", "198.18.0.2")).unwrap();
        assert!(
            format!(
                "{:#}",
                config.validate_for_interfaces(&[eth0()]).unwrap_err()
            )
            .contains("address of the director")
        );
    }

    /// The seed's director (shared/seeds/001, 192.168.7.x mapped to 198.18.7.x): its
    /// client-side interface's only address is the VIP, the real server is on the other arm.
    #[test]
    fn a_vip_that_is_the_directors_own_address_is_accepted_and_named() {
        let config = Config::parse(
            r#"
            [director]
            interfaces = ["eth7", "eth8"]

            [[service]]
            vip = "198.18.7.33"
            port = 8000
            protocol = "tcp"

            [[service.backend]]
            address = "198.18.88.20"

            [[service]]
            vip = "198.18.7.34"
            port = 8000
            protocol = "tcp"
            "#,
        )
        .unwrap();
        let interfaces = [
            InterfaceAddresses {
                name: "eth7".into(),
                addresses: vec![("198.18.7.33".parse().unwrap(), 24)],
            },
            InterfaceAddresses {
                name: "eth8".into(),
                addresses: vec![("198.18.88.10".parse().unwrap(), 24)],
            },
        ];
        config.validate_for_interfaces(&interfaces).unwrap();
        assert_eq!(
            config.local_vips(&interfaces),
            [("198.18.7.33".parse().unwrap(), "eth7".to_owned())],
            "the VIP on eth7 is local, the other one is not"
        );
        let mut on_eth0 = eth0();
        on_eth0
            .addresses
            .push(("198.18.0.100".parse().unwrap(), 32));
        let good = Config::parse(GOOD).unwrap();
        good.validate_for_interfaces(&[on_eth0.clone()]).unwrap();
        assert_eq!(good.local_vips(&[on_eth0]).len(), 1);
        assert!(good.local_vips(&[eth0()]).is_empty());
    }

    #[test]
    fn active_when_is_always_unless_vip_assigned_is_asked_for() {
        assert_eq!(
            Config::parse(GOOD).unwrap().director.active_when,
            ActiveWhen::Always
        );
        let with = |value: &str| {
            GOOD.replace(
                "interface = \"eth0\"",
                &format!("interface = \"eth0\"\nactive_when = \"{value}\""),
            )
        };
        assert_eq!(
            Config::parse(&with("vip-assigned"))
                .unwrap()
                .director
                .active_when,
            ActiveWhen::VipAssigned
        );
        assert_eq!(
            Config::parse(&with("always")).unwrap().director.active_when,
            ActiveWhen::Always
        );
        let err = error_of(&with("vip_assigned"));
        assert!(
            err.contains("unknown variant") && err.contains("vip-assigned"),
            "{err}"
        );
    }

    fn two_armed() -> [InterfaceAddresses; 2] {
        [
            InterfaceAddresses {
                name: "eth7".into(),
                addresses: vec![("198.18.7.10".parse().unwrap(), 24)],
            },
            InterfaceAddresses {
                name: "eth8".into(),
                addresses: vec![
                    ("198.18.88.10".parse().unwrap(), 24),
                    ("198.18.0.10".parse().unwrap(), 16),
                ],
            },
        ]
    }

    fn backend(address: &str, interface: Option<&str>) -> BackendConfig {
        BackendConfig {
            address: address.parse().unwrap(),
            weight: 1,
            interface: interface.map(Into::into),
            mac: None,
        }
    }

    #[test]
    fn egress_is_the_named_interface_else_the_most_specific_connected_subnet() {
        let ifs = two_armed();
        assert_eq!(
            egress_for(&backend("198.18.7.20", None), &ifs)
                .unwrap()
                .name,
            "eth7"
        );
        assert_eq!(
            egress_for(&backend("198.18.88.20", None), &ifs)
                .unwrap()
                .name,
            "eth8"
        );
        // 198.18.7.20 is also in eth8's 198.18.0.0/16: the /24 on eth7 is more specific.
        assert_eq!(
            egress_for(&backend("198.18.7.20", None), &ifs)
                .unwrap()
                .name,
            "eth7"
        );
        assert_eq!(
            egress_for(&backend("198.18.7.20", Some("eth8")), &ifs)
                .unwrap()
                .name,
            "eth8"
        );
        assert!(egress_for(&backend("198.20.0.1", None), &ifs).is_none());
    }

    #[test]
    fn interfaces_are_named_once_either_way() {
        let two = GOOD.replace("interface = \"eth0\"", "interfaces = [\"eth7\", \"eth8\"]");
        assert_eq!(
            Config::parse(&two).unwrap().director.interface_names(),
            ["eth7", "eth8"]
        );
        let both = GOOD.replace(
            "interface = \"eth0\"",
            "interface = \"eth0\"\ninterfaces = [\"eth7\"]",
        );
        assert!(error_of(&both).contains("both interface and interfaces"));
        let none = GOOD.replace("interface = \"eth0\"", "");
        assert!(error_of(&none).contains("names no interface"));
        let twice = GOOD.replace("interface = \"eth0\"", "interfaces = [\"eth7\", \"eth7\"]");
        assert!(error_of(&twice).contains("names an interface twice"));
        let unknown = GOOD.replace(
            "address = \"198.18.0.11\"",
            "address = \"198.18.0.11\"\ninterface = \"eth9\"",
        );
        assert!(
            error_of(&unknown)
                .contains("names interface eth9, which is not one of the director's (eth0)")
        );
    }

    #[test]
    fn a_backend_on_the_second_arm_passes_and_one_on_neither_is_refused() {
        let text = GOOD.replace("interface = \"eth0\"", "interfaces = [\"eth7\", \"eth8\"]");
        let ok = Config::parse(
            &text
                .replace("198.18.0.11", "198.18.88.20")
                .replace("198.18.0.12", "198.18.7.20"),
        )
        .unwrap();
        ok.validate_for_interfaces(&two_armed()).unwrap();
        let off = Config::parse(&text.replace("198.18.0.11", "198.20.0.1")).unwrap();
        let err = format!(
            "{:#}",
            off.validate_for_interfaces(&two_armed()).unwrap_err()
        );
        assert!(
            err.contains("198.20.0.1 is not on a directly connected subnet")
                && err.contains("198.18.88.0/24 on eth8"),
            "{err}"
        );
    }

    const DUAL_STACK: &str = r#"
        [director]
        interface = "eth0"

        [[service]]
        vip = "198.18.0.100"
        port = 80
        protocol = "tcp"

        [[service.backend]]
        address = "198.18.0.11"

        [[service]]
        vip = "2001:2::100"
        port = 80
        protocol = "tcp"

        [[service.backend]]
        address = "2001:2::11"

        [[service.backend]]
        address = "2001:2::12"
        weight = 2
    "#;

    fn dual_stack_eth0() -> InterfaceAddresses {
        InterfaceAddresses {
            name: "eth0".into(),
            addresses: vec![
                ("198.18.0.2".parse().unwrap(), 24),
                ("2001:2::2".parse().unwrap(), 64),
            ],
        }
    }

    #[test]
    fn the_same_service_on_both_families() {
        let config = Config::parse(DUAL_STACK).unwrap();
        let names: Vec<String> = config.services.iter().map(ServiceConfig::name).collect();
        assert_eq!(names, ["tcp 198.18.0.100:80", "tcp [2001:2::100]:80"]);
        assert_eq!(config.services[1].backends[1].weight, 2);
        config
            .validate_for_interfaces(&[dual_stack_eth0()])
            .unwrap();
        // Without a global IPv6 prefix on eth0, its IPv6 backends are off-link.
        let err = format!(
            "{:#}",
            config.validate_for_interfaces(&[eth0()]).unwrap_err()
        );
        assert!(
            err.contains("2001:2::11 is not on a directly connected subnet")
                && err.contains("it has no global IPv6 address"),
            "{err}"
        );
    }

    #[test]
    fn a_service_and_its_backends_share_a_family() {
        let err = error_of(&DUAL_STACK.replace("2001:2::12", "198.18.0.12"));
        assert!(
            err.contains(
                "service tcp [2001:2::100]:80: backend 198.18.0.12 is IPv4 and the VIP 2001:2::100 is IPv6"
            ),
            "{err}"
        );
        let err = error_of(&DUAL_STACK.replace("198.18.0.11", "2001:2::13"));
        assert!(
            err.contains("backend 2001:2::13 is IPv6 and the VIP 198.18.0.100 is IPv4"),
            "{err}"
        );
    }

    #[test]
    fn ipv6_addresses_no_one_can_serve_are_refused() {
        for (address, why) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("ff02::1", "multicast"),
            ("fe80::11", "link-local"),
            ("::ffff:198.18.0.11", "IPv4-mapped"),
        ] {
            let err = error_of(&DUAL_STACK.replace("2001:2::11", address));
            assert!(err.contains(why), "{address}: {err}");
        }
        let err = error_of(&DUAL_STACK.replace("2001:2::100", "fe80::100"));
        assert!(err.contains("the VIP fe80::100 is a link-local"), "{err}");
        // Duplicates are found however they are written.
        let err = error_of(&DUAL_STACK.replace("2001:2::12", "2001:2:0:0::11"));
        assert!(err.contains("backend 2001:2::11 is listed twice"), "{err}");
        let err = error_of(&DUAL_STACK.replace("2001:2::11", "2001:2::100"));
        assert!(err.contains("is the VIP itself"), "{err}");
    }

    #[test]
    fn ipv6_backends_go_out_of_the_interface_with_their_prefix() {
        let ifs = [
            InterfaceAddresses {
                name: "eth7".into(),
                addresses: vec![
                    ("198.18.7.10".parse().unwrap(), 24),
                    ("2001:2:0:7::10".parse().unwrap(), 64),
                ],
            },
            InterfaceAddresses {
                name: "eth8".into(),
                addresses: vec![
                    ("2001:2::10".parse().unwrap(), 48),
                    ("198.18.88.10".parse().unwrap(), 24),
                ],
            },
        ];
        let via = |address: &str| egress_for(&backend(address, None), &ifs).map(|i| i.name.clone());
        assert_eq!(
            via("2001:2:0:7::20").as_deref(),
            Some("eth7"),
            "the /64 beats the /48"
        );
        assert_eq!(via("2001:2:0:88::20").as_deref(), Some("eth8"));
        assert_eq!(via("2001:3::20"), None);
        assert_eq!(via("198.18.88.20").as_deref(), Some("eth8"));
    }

    #[test]
    fn an_ipv6_vip_on_the_director_is_local() {
        let config = Config::parse(DUAL_STACK).unwrap();
        let mut eth0 = dual_stack_eth0();
        assert!(config.local_vips(&[eth0.clone()]).is_empty());
        eth0.addresses.push(("2001:2::100".parse().unwrap(), 128));
        assert_eq!(
            config.local_vips(&[eth0]),
            [("2001:2::100".parse().unwrap(), "eth0".to_owned())]
        );
    }

    #[test]
    fn services_are_written_with_brackets_for_ipv6() {
        let id: ServiceId = "tcp/[2001:2::100]:80".parse().unwrap();
        assert_eq!(id.vip, "2001:2::100".parse::<IpAddr>().unwrap());
        assert_eq!(id.to_string(), "tcp [2001:2::100]:80");
        assert_eq!(
            "udp/198.18.0.100:53"
                .parse::<ServiceId>()
                .unwrap()
                .to_string(),
            "udp 198.18.0.100:53"
        );
        let err = format!(
            "{:#}",
            "tcp/2001:2::100:80".parse::<ServiceId>().unwrap_err()
        );
        assert!(err.contains("tcp/[2001:db8::100]:8080"), "{err}");
    }

    #[test]
    fn prefix_arithmetic() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(contains(a("198.18.0.2"), 24, a("198.18.0.255")));
        assert!(!contains(a("198.18.0.2"), 24, a("198.18.1.1")));
        assert!(contains(a("198.18.0.2"), 0, a("1.2.3.4")));
        assert!(contains(a("198.18.0.2"), 32, a("198.18.0.2")));
        assert!(!contains(a("198.18.0.2"), 32, a("198.18.0.3")));
        assert_eq!(network(a("198.18.0.77"), 25), a("198.18.0.0"));
        assert_eq!(network(a("198.18.0.77"), 0), a("0.0.0.0"));
        assert!(contains(a("2001:2::2"), 64, a("2001:2::ffff:1")));
        assert!(!contains(a("2001:2::2"), 64, a("2001:2:0:1::1")));
        assert!(contains(a("2001:2::2"), 0, a("fd00::1")));
        assert!(contains(a("2001:2::2"), 128, a("2001:2::2")));
        assert!(!contains(a("2001:2::2"), 128, a("2001:2::3")));
        assert_eq!(network(a("2001:2:0:1:ffff::7"), 64), a("2001:2:0:1::"));
        assert_eq!(network(a("2001:2::7"), 0), a("::"));
        // Never across families, whatever the prefix.
        assert!(!contains(a("0.0.0.0"), 0, a("::1")));
        assert!(!contains(a("::"), 0, a("198.18.0.1")));
    }
}
