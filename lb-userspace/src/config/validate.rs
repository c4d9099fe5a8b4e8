//! Validation: [`Config::validate`] checks the file on its own, [`Config::validate_for_interfaces`]
//! against the director's interfaces. Every problem is reported at once, each with its fix.

use std::{collections::HashSet, net::IpAddr};

use anyhow::{Result, bail};
use lb_common::{MAX_BACKENDS_PER_SERVICE, MAX_INTERFACES, MAX_SERVICES};

use super::{
    Config, MAX_WEIGHT, MIN_FLOW_TABLE_SIZE,
    egress::{InterfaceAddresses, egress_for, network},
};
use crate::maglev::check_table_size;

/// The VLAN trunks drlb can serve, given each configured interface's name and whether it is a
/// VLAN device: all of them VLANs, or none. Between two VLANs the program rewrites the tag's id
/// in place; from an untagged interface to a VLAN (or back) it would have to grow or shrink the
/// frame, which it does not do.
pub fn check_vlan_mix(interfaces: &[(String, bool)]) -> Result<()> {
    let vlans: Vec<&str> = interfaces
        .iter()
        .filter(|(_, vlan)| *vlan)
        .map(|(name, _)| name.as_str())
        .collect();
    let untagged: Vec<&str> = interfaces
        .iter()
        .filter(|(_, vlan)| !*vlan)
        .map(|(name, _)| name.as_str())
        .collect();
    if !vlans.is_empty() && !untagged.is_empty() {
        bail!(
            "[director] interfaces mixes VLAN devices ({}) with untagged interfaces ({}): drlb \
             forwards between VLANs by rewriting the tag, and cannot add or remove one; list \
             only VLAN devices (e.g. a VLAN for the untagged network too) or only untagged \
             interfaces",
            vlans.join(", "),
            untagged.join(", ")
        );
    }
    Ok(())
}

impl Config {
    /// Checks what can be checked without looking at the host. Reports every problem at once.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let interfaces = self.director.interface_names();
        match (&self.director.interface, self.director.interfaces.is_empty()) {
            (None, true) => problems.push(
                "[director] names no interface: set interface = \"eth0\" or interfaces = [\"eth7\", \"eth8\"]"
                    .to_owned(),
            ),
            (Some(_), false) => problems
                .push("[director] has both interface and interfaces: use one of them".to_owned()),
            _ => {}
        }
        if interfaces.iter().any(|i| i.trim().is_empty()) {
            problems.push("[director] names an empty interface".to_owned());
        }
        if interfaces.iter().collect::<HashSet<_>>().len() != interfaces.len() {
            problems.push("[director] names an interface twice".to_owned());
        }
        if interfaces.len() > MAX_INTERFACES as usize {
            problems.push(format!(
                "[director] names {} interfaces; drlb supports at most {MAX_INTERFACES}",
                interfaces.len()
            ));
        }
        if self.director.flow_table_size < MIN_FLOW_TABLE_SIZE {
            problems.push(format!(
                "[director] flow_table_size {} is too small (at least {MIN_FLOW_TABLE_SIZE})",
                self.director.flow_table_size
            ));
        }
        // The one host lookup here: a group name is checked where it is read.
        if let Some(group) = &self.director.control_group
            && let Err(e) = crate::accounts::group_id(group)
        {
            problems.push(format!("[director] control_group: {e:#}"));
        }
        if let Some(address) = self.director.metrics
            && address.port() == 0
        {
            problems.push(format!(
                "[director] metrics = \"{address}\" has no port: give one, e.g. \"127.0.0.1:9917\""
            ));
        }
        if let Some(announce) = &self.director.announce {
            problems.extend(announce_problems(announce));
        }
        if self.services.len() > MAX_SERVICES as usize {
            problems.push(format!(
                "{} services configured; drlb supports at most {MAX_SERVICES}",
                self.services.len()
            ));
        }
        let mut seen_services = HashSet::new();
        for service in &self.services {
            let name = service.name();
            if !seen_services.insert((service.vip, service.port, service.protocol)) {
                problems.push(format!("service {name} is configured twice"));
            }
            if service.port == 0 {
                problems.push(format!(
                    "service {name}: port 0 is not a valid service port"
                ));
            }
            if let Some(why) = unusable_unicast(service.vip) {
                problems.push(format!("service {name}: the VIP {} {why}", service.vip));
            }
            if let Err(e) = check_table_size(service.table_size) {
                problems.push(format!("service {name}: {e}"));
            }
            for problem in service.health_check().problems() {
                problems.push(format!("service {name}: {problem}"));
            }
            if service.backends.len() > MAX_BACKENDS_PER_SERVICE as usize {
                problems.push(format!(
                    "service {name} has {} backends; at most {MAX_BACKENDS_PER_SERVICE} are supported",
                    service.backends.len()
                ));
            }
            let mut seen_backends = HashSet::new();
            for backend in &service.backends {
                let address = backend.address;
                if !seen_backends.insert(address) {
                    problems.push(format!("service {name}: backend {address} is listed twice"));
                }
                if let Some(why) = unusable_unicast(address) {
                    problems.push(format!("service {name}: backend address {address} {why}"));
                }
                if let Some(name) = backend
                    .interface
                    .as_ref()
                    .filter(|name| !interfaces.contains(name))
                {
                    problems.push(format!(
                        "service {name_}: backend {address} names interface {name}, which is not one of the director's ({})",
                        interfaces.join(", "),
                        name_ = service.name()
                    ));
                }
                if address.is_ipv4() != service.vip.is_ipv4() {
                    problems.push(format!(
                        "service {name}: backend {address} is {} and the VIP {} is {}: a \
                         service's VIP and backends share a family (configure the other \
                         family's backends under a service of its own, with a VIP of that family)",
                        family(address),
                        service.vip,
                        family(service.vip)
                    ));
                }
                if address == service.vip {
                    problems.push(format!(
                        "service {name}: backend {address} is the VIP itself"
                    ));
                }
                if backend.weight > MAX_WEIGHT {
                    problems.push(format!(
                        "service {name}: backend {address} has weight {}; the largest is {MAX_WEIGHT}",
                        backend.weight
                    ));
                }
                if let Some(mac) = backend.mac.filter(|m| m.is_nil() || m.is_multicast()) {
                    problems.push(format!("service {name}: backend {address} has mac {mac}, which is not a unicast MAC"));
                }
            }
        }
        report(problems)
    }

    /// Checks the config against the director's interfaces: every backend must be reachable at
    /// layer 2 (on a connected subnet of one of them, or on the interface it names), and no
    /// backend may be one of the director's own addresses. A VIP may be one (as on an IPVS
    /// director, or added by keepalived): see [`Config::local_vips`].
    pub fn validate_for_interfaces(&self, interfaces: &[InterfaceAddresses]) -> Result<()> {
        let mut problems = Vec::new();
        let owner = |a: IpAddr| {
            interfaces
                .iter()
                .find(|i| i.addresses.iter().any(|(addr, _)| *addr == a))
        };
        // The connected subnets of the backend's family.
        let subnets = |of: IpAddr| {
            interfaces
                .iter()
                .flat_map(|i| {
                    i.addresses
                        .iter()
                        .filter(move |(addr, _)| addr.is_ipv4() == of.is_ipv4())
                        .map(move |(addr, len)| {
                            format!("{}/{len} on {}", network(*addr, *len), i.name)
                        })
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        for service in &self.services {
            let name = service.name();
            for backend in &service.backends {
                let address = backend.address;
                if let Some(interface) = owner(address) {
                    problems.push(format!(
                        "service {name}: backend {address} is an address of the director's {}",
                        interface.name
                    ));
                } else if egress_for(backend, interfaces).is_none() {
                    let subnets = subnets(address);
                    problems.push(format!(
                        "service {name}: backend {address} is not on a directly connected subnet of the director ({}); \
                         direct routing needs every real server on one of the director's L2 networks \
                         (or name its interface with `interface = ...`)",
                        if subnets.is_empty() {
                            if address.is_ipv4() { "it has no IPv4 address" } else { "it has no global IPv6 address" }
                        } else {
                            &subnets
                        }
                    ));
                }
            }
        }
        report(problems)
    }
}

impl Config {
    /// The VIPs that are addresses of the director's interfaces, with the interface holding
    /// each: the program takes their service traffic before the stack and passes the rest to it.
    #[must_use]
    pub fn local_vips(&self, interfaces: &[InterfaceAddresses]) -> Vec<(IpAddr, String)> {
        let vips: std::collections::BTreeSet<IpAddr> =
            self.services.iter().map(|s| s.vip).collect();
        vips.into_iter()
            .filter_map(|vip| {
                let owner = interfaces
                    .iter()
                    .find(|i| i.addresses.iter().any(|(addr, _)| *addr == vip))?;
                Some((vip, owner.name.clone()))
            })
            .collect()
    }
}

fn report(problems: Vec<String>) -> Result<()> {
    match problems.as_slice() {
        [] => Ok(()),
        [one] => bail!("{one}"),
        many => bail!(
            "{} problems in the config:\n  - {}",
            many.len(),
            many.join("\n  - ")
        ),
    }
}

/// "IPv4" or "IPv6", for messages.
const fn family(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// Why an address cannot be a VIP or a backend, if it cannot.
fn unusable_unicast(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) if v4.is_broadcast() => Some("is the broadcast address"),
        IpAddr::V4(v4) if v4.is_unspecified() => Some("is unspecified (0.0.0.0)"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("is unspecified (::)"),
        // The data plane keys IPv4 by its mapped form: one address, one way to write it.
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("is an IPv4-mapped IPv6 address: write the IPv4 address itself")
        }
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(
            "is a link-local address (fe80::/10), which no prefix routes: use a global address",
        ),
        _ if addr.is_multicast() => Some("is a multicast address"),
        _ if addr.is_loopback() => Some("is a loopback address"),
        _ => None,
    }
}

/// Routing tables a VIP route must not go into: unspecified, and the kernel's own (default,
/// main, local), which would route the VIPs on this host.
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];
/// The longest interface name Linux accepts (IFNAMSIZ less the NUL).
const MAX_IFNAME: usize = 15;

fn announce_problems(announce: &super::AnnounceConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if RESERVED_TABLES.contains(&announce.table) {
        problems.push(format!(
            "[director] announce: table {} is reserved (0, or the kernel's default, main or local \
             table): give a table of its own that only the routing daemon reads, e.g. table = 100",
            announce.table
        ));
    }
    let device = &announce.device;
    if device.is_empty()
        || device.len() > MAX_IFNAME
        || device.contains(['/', ':'])
        || device.chars().any(char::is_whitespace)
        || device == "."
        || device == ".."
    {
        problems.push(format!(
            "[director] announce: device {device:?} is not a valid interface name (1 to \
             {MAX_IFNAME} characters, no '/', ':' or spaces)"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::check_vlan_mix;

    fn named(list: &[(&str, bool)]) -> Vec<(String, bool)> {
        list.iter().map(|&(n, v)| (n.to_owned(), v)).collect()
    }

    #[test]
    fn vlans_and_untagged_interfaces_do_not_mix() {
        assert!(check_vlan_mix(&named(&[("eth0.100", true), ("eth0.200", true)])).is_ok());
        assert!(check_vlan_mix(&named(&[("eth7", false), ("eth8", false)])).is_ok());
        let error = check_vlan_mix(&named(&[("eth0.100", true), ("eth1", false)]))
            .expect_err("a VLAN and an untagged interface")
            .to_string();
        assert!(
            error.contains("eth0.100") && error.contains("eth1") && error.contains("cannot add"),
            "{error}"
        );
    }
}
