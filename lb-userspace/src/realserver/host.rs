//! Reading and writing the real server's state: addresses and routes through rtnetlink,
//! sysctls through /proc/sys.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressMessage},
        link::{LinkAttribute, LinkFlags},
        neighbour::{NeighbourAddress, NeighbourAttribute},
        route::RouteAttribute,
    },
};

use super::*;

// ---------------------------------------------------------------------------------------------
// Reading and writing the kernel's state

pub(super) fn sysctl_path(conf: &str, key: &str) -> PathBuf {
    Path::new("/proc/sys/net/ipv4/conf").join(conf).join(key)
}

pub(super) fn read_sysctl(conf: &str, key: &str) -> Result<i64> {
    let path = sysctl_path(conf, key);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (does interface {conf} exist?)",
            path.display()
        )
    })?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds {text:?}, not a number", path.display()))
}

pub(super) fn read_conf(conf: &str) -> Result<ArpConf> {
    Ok(ArpConf {
        arp_ignore: read_sysctl(conf, "arp_ignore")?,
        arp_announce: read_sysctl(conf, "arp_announce")?,
    })
}

/// Writes one sysctl unless it holds `value` already; says what it did.
pub(super) fn write_sysctl(
    conf: &str,
    key: &str,
    value: i64,
    done: &mut Vec<String>,
) -> Result<()> {
    let old = read_sysctl(conf, key)?;
    let name = format!("net.ipv4.conf.{}.{key}", sysctl_name(conf));
    if old == value {
        done.push(format!("{name} = {value} already"));
        return Ok(());
    }
    let path = sysctl_path(conf, key);
    fs::write(&path, format!("{value}\n"))
        .with_context(|| format!("cannot write {} (needs root)", path.display()))?;
    done.push(format!("{name} = {value} (was {old})"));
    Ok(())
}

pub(super) fn write_conf(conf: &str, values: ArpConf, done: &mut Vec<String>) -> Result<()> {
    write_sysctl(conf, "arp_ignore", values.arp_ignore, done)?;
    write_sysctl(conf, "arp_announce", values.arp_announce, done)
}

pub(super) struct Link {
    pub(super) name: String,
    pub(super) up: bool,
}

/// The host's interfaces, addresses and default route, over rtnetlink.
pub(super) struct Host {
    pub(super) handle: Handle,
    pub(super) links: BTreeMap<u32, Link>,
    /// Each address with the message that deletes it.
    pub(super) addresses: Vec<(Address, AddressMessage)>,
    pub(super) default_route: Option<String>,
    pub(super) ndp_proxies: Vec<NdpProxy>,
}

impl Host {
    /// The addresses `vip` has on lo (any prefix length).
    pub(super) fn on_lo(&self, vip: IpAddr) -> Vec<&(Address, AddressMessage)> {
        self.addresses
            .iter()
            .filter(|(a, _)| a.address == vip && a.interface == LOOPBACK)
            .collect()
    }

    /// Deletes these addresses; each deletion is noted in `done` (with `why` after it).
    pub(super) async fn remove(
        &self,
        addresses: &[&(Address, AddressMessage)],
        why: &str,
        done: &mut Vec<String>,
    ) -> Result<()> {
        for (a, message) in addresses {
            self.handle
                .address()
                .del(message.clone())
                .execute()
                .await
                .with_context(|| format!("removing {}/{} from lo failed", a.address, a.prefix))?;
            done.push(format!("{}/{} removed from lo{why}", a.address, a.prefix));
        }
        Ok(())
    }

    pub(super) async fn read() -> Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("could not open a netlink socket")?;
        tokio::spawn(connection);
        let mut links = BTreeMap::new();
        let mut stream = handle.link().get().execute();
        while let Some(link) = stream
            .try_next()
            .await
            .context("listing interfaces failed")?
        {
            let name = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            });
            if let Some(name) = name {
                let up = link.header.flags.contains(LinkFlags::Up);
                links.insert(link.header.index, Link { name, up });
            }
        }
        let mut addresses = Vec::new();
        let mut stream = handle.address().get().execute();
        while let Some(message) = stream
            .try_next()
            .await
            .context("listing addresses failed")?
        {
            let Some(link) = links.get(&message.header.index) else {
                continue;
            };
            for attribute in &message.attributes {
                // IPv4 reports its address as IFA_LOCAL; IPv6 as IFA_ADDRESS only.
                let address = match (attribute, message.header.family) {
                    (AddressAttribute::Local(address), AddressFamily::Inet)
                    | (AddressAttribute::Address(address), AddressFamily::Inet6) => Some(address),
                    _ => None,
                };
                if let Some(address) = address {
                    addresses.push((
                        Address {
                            interface: link.name.clone(),
                            address: *address,
                            prefix: message.header.prefix_len,
                        },
                        message.clone(),
                    ));
                }
            }
        }
        let mut default_route = None;
        let mut stream = handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(route) = stream.try_next().await.context("listing routes failed")? {
            if route.header.destination_prefix_length != 0 || default_route.is_some() {
                continue;
            }
            default_route = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(index) => links.get(index).map(|l| l.name.clone()),
                _ => None,
            });
        }
        let mut ndp_proxies = Vec::new();
        let mut stream = handle
            .neighbours()
            .get()
            .proxies()
            .set_address_family(AddressFamily::Inet6)
            .execute();
        while let Some(entry) = stream
            .try_next()
            .await
            .context("listing proxy neighbour entries failed")?
        {
            let Some(link) = links.get(&entry.header.ifindex) else {
                continue;
            };
            for attribute in &entry.attributes {
                if let NeighbourAttribute::Destination(NeighbourAddress::Inet6(address)) = attribute
                {
                    ndp_proxies.push(NdpProxy {
                        address: *address,
                        interface: link.name.clone(),
                    });
                }
            }
        }
        Ok(Self {
            handle,
            links,
            addresses,
            default_route,
            ndp_proxies,
        })
    }

    pub(super) fn plain_addresses(&self) -> Vec<Address> {
        self.addresses.iter().map(|(a, _)| a.clone()).collect()
    }

    pub(super) fn index_of(&self, name: &str) -> Result<u32> {
        self.links
            .iter()
            .find(|(_, l)| l.name == name)
            .map(|(i, _)| *i)
            .with_context(|| format!("there is no interface {name} (see `ip link`)"))
    }

    pub(super) fn interface(&self, named: Option<&str>) -> Result<String> {
        let interface = match named {
            Some(name) => name.to_owned(),
            None => facing_interface(self.default_route.as_deref(), &self.plain_addresses())?,
        };
        self.index_of(&interface)?;
        Ok(interface)
    }

    pub(super) fn snapshot(&self, interface: &str) -> Result<Snapshot> {
        Ok(Snapshot {
            interface: interface.to_owned(),
            all: read_conf(ALL)?,
            on_interface: read_conf(interface)?,
            loopback_up: self.links.values().any(|l| l.name == LOOPBACK && l.up),
            addresses: self.plain_addresses(),
            ndp_proxies: self.ndp_proxies.clone(),
        })
    }
}

/// `drlb realserver check`: every finding; fails when any is a problem.
pub async fn check(vips: &[IpAddr], interface: Option<&str>) -> Result<Vec<Finding>> {
    let host = Host::read().await?;
    let interface = host.interface(interface)?;
    Ok(judge(&host.snapshot(&interface)?, vips))
}
