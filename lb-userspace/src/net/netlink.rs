//! What drlb asks the kernel over rtnetlink: the director's interface (index, MAC, addresses),
//! the backends' MACs from the neighbour table (IPv4 and IPv6), and (`AddressEvents`) word of
//! every address added or removed, to follow VIPs that keepalived moves.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _, channel::mpsc::UnboundedReceiver};
use rtnetlink::{
    Handle, MulticastGroup,
    packet_core::NetlinkMessage,
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags, AddressMessage},
        link::{InfoData, InfoVlan, LinkAttribute, LinkInfo, LinkMessage, VlanProtocol},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourState},
    },
    sys::SocketAddr,
};

use crate::config::InterfaceAddresses;

/// The link kind of a veth, as netlink names it.
pub const VETH: &str = "veth";
/// The link kind of a VLAN device (`ip link add link eth0 name eth0.100 type vlan id 100`).
pub const VLAN: &str = "vlan";

/// Neighbour entries by (ifindex, address): `Some(mac)` when usable, `None` when present
/// without one.
pub type NeighbourMacs = HashMap<(u32, IpAddr), Option<[u8; 6]>>;

/// The director's interface as drlb needs it.
#[derive(Clone, Debug)]
pub struct InterfaceInfo {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// (address, prefix length) of each IPv6 address, link-local ones included.
    pub ipv6: Vec<(Ipv6Addr, u8)>,
    /// The link kind (`veth`, `bridge`, ...) for virtual interfaces; `None` for hardware.
    pub kind: Option<String>,
    /// For a veth (or a VLAN on a veth): its peer.
    pub veth_peer: Option<VethPeer>,
    /// For a VLAN device: the trunk it is on. The program runs on the parent and serves the
    /// VLAN's frames there by their tag.
    pub vlan: Option<VlanOf>,
}

/// A VLAN device's place on its trunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanOf {
    /// The parent device's ifindex: where the program is attached.
    pub parent: u32,
    /// The 802.1Q VLAN id.
    pub id: u16,
}

/// The other end of a veth pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VethPeer {
    /// Its ifindex, in its own network namespace.
    pub ifindex: u32,
    /// Whether it is in this network namespace (then drlb can attach to it).
    pub same_namespace: bool,
}

impl InterfaceInfo {
    /// A veth, whose local senders may leave TCP/UDP checksums unfinished.
    #[must_use]
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some(VETH)
    }

    /// Where the program runs for this interface: the parent of a VLAN, else itself.
    #[must_use]
    pub fn xdp_ifindex(&self) -> u32 {
        self.vlan.map_or(self.ifindex, |vlan| vlan.parent)
    }

    /// The VLAN id of the interface's frames, `NO_VLAN` for an untagged interface.
    #[must_use]
    pub fn vlan_id(&self) -> u16 {
        self.vlan.map_or(lb_common::NO_VLAN, |vlan| vlan.id)
    }

    #[must_use]
    pub fn addresses(&self) -> InterfaceAddresses {
        InterfaceAddresses {
            name: self.name.clone(),
            addresses: self
                .ipv4
                .iter()
                .map(|(a, len)| (IpAddr::V4(*a), *len))
                .chain(
                    self.ipv6
                        .iter()
                        .filter(|(a, _)| !a.is_unicast_link_local())
                        .map(|(a, len)| (IpAddr::V6(*a), *len)),
                )
                .collect(),
        }
    }
}

pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a netlink connection, served by a task on the current tokio runtime.
    pub fn connect() -> Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("could not open a netlink socket")?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The link named `name` in this namespace, if there is one.
    async fn link_named(&self, name: &str) -> Result<Option<LinkMessage>> {
        self.handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await
            .with_context(|| format!("looking up interface {name} failed"))
    }

    pub async fn interface(&self, name: &str) -> Result<InterfaceInfo> {
        let link = self
            .link_named(name)
            .await
            .ok()
            .flatten()
            .with_context(|| {
                format!("interface {name} does not exist in this network namespace (see `ip link`)")
            })?;
        let ifindex = link.header.index;
        let mac = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
                _ => None,
            })
            .with_context(|| {
                format!(
                    "interface {name} has no Ethernet MAC address: drlb needs an Ethernet interface"
                )
            })?;
        let (mut ipv4, mut ipv6) = (Vec::new(), Vec::new());
        let mut addresses = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute();
        while let Some(message) = addresses
            .try_next()
            .await
            .with_context(|| format!("listing the addresses of {name} failed"))?
        {
            for attribute in &message.attributes {
                match attribute {
                    AddressAttribute::Address(IpAddr::V4(addr)) => {
                        ipv4.push((*addr, message.header.prefix_len));
                    }
                    AddressAttribute::Address(IpAddr::V6(addr)) => {
                        ipv6.push((*addr, message.header.prefix_len));
                    }
                    _ => {}
                }
            }
        }
        let kind = link_kind(&link);
        let mut veth_peer = veth_peer_of(&link, kind.as_deref());
        let mut vlan = None;
        if kind.as_deref() == Some(VLAN) {
            let (of, parent) = self.vlan_of(name, &link).await?;
            veth_peer = veth_peer_of(&parent, link_kind(&parent).as_deref());
            vlan = Some(of);
        }
        Ok(InterfaceInfo {
            name: name.to_owned(),
            ifindex,
            mac,
            ipv4,
            ipv6,
            kind,
            veth_peer,
            vlan,
        })
    }

    /// The trunk of the VLAN device `name` (`link`), and the parent's link.
    async fn vlan_of(&self, name: &str, link: &LinkMessage) -> Result<(VlanOf, LinkMessage)> {
        let vlan_info = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Vlan(vlan)) => Some(vlan.clone()),
                _ => None,
            }),
            _ => None,
        });
        let vlan_info =
            vlan_info.with_context(|| format!("the kernel did not describe VLAN device {name}"))?;
        let id = vlan_info
            .iter()
            .find_map(|i| match i {
                InfoVlan::Id(id) => Some(*id),
                _ => None,
            })
            .with_context(|| format!("VLAN device {name} has no VLAN id"))?;
        if vlan_info
            .iter()
            .any(|i| matches!(i, InfoVlan::Protocol(p) if *p != VlanProtocol::Ieee8021Q))
        {
            bail!(
                "{name} is an 802.1ad (QinQ) VLAN: drlb serves 802.1Q VLANs only; configure the \
                 802.1Q VLAN device instead"
            );
        }
        let in_other_namespace = link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)));
        let parent = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Link(parent) => Some(*parent),
                _ => None,
            })
            .filter(|_| !in_other_namespace)
            .with_context(|| {
                format!(
                    "the parent device of VLAN {name} is not in this network namespace: drlb \
                     attaches to the parent, so it must run where the parent is"
                )
            })?;
        let parent_link = self
            .handle
            .link()
            .get()
            .match_index(parent)
            .execute()
            .try_next()
            .await
            .ok()
            .flatten()
            .with_context(|| {
                format!("the parent device of VLAN {name} (ifindex {parent}) is gone")
            })?;
        if link_kind(&parent_link).as_deref() == Some(VLAN) {
            bail!(
                "{name} is a VLAN on a VLAN (QinQ): drlb serves one 802.1Q tag; configure a \
                 VLAN device on the physical trunk"
            );
        }
        Ok((VlanOf { parent, id }, parent_link))
    }

    /// The addresses (IPv4 and IPv6) of the interfaces `ifindexes`, as the kernel holds them now.
    pub async fn ip_addresses(&self, ifindexes: &[u32]) -> Result<BTreeSet<IpAddr>> {
        let mut found = BTreeSet::new();
        let mut addresses = self.handle.address().get().execute();
        while let Some(message) = addresses
            .try_next()
            .await
            .context("listing the director's addresses failed")?
        {
            if !ifindexes.contains(&message.header.index) || !is_held(&message) {
                continue;
            }
            for attribute in &message.attributes {
                // IFA_LOCAL is the address itself (IFA_ADDRESS is the peer's on a point-to-point
                // link, and the same address elsewhere).
                if let AddressAttribute::Local(addr) | AddressAttribute::Address(addr) = attribute {
                    found.insert(*addr);
                }
            }
        }
        Ok(found)
    }

    /// The rtnetlink handle, for requests made elsewhere in `net` (routes).
    pub(super) const fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The index of the interface `name` of this namespace.
    pub async fn link_index(&self, name: &str) -> Result<u32> {
        let link = self
            .link_named(name)
            .await?
            .with_context(|| format!("no interface {name} in this network namespace"))?;
        Ok(link.header.index)
    }

    /// The name of the interface `ifindex` of this namespace.
    pub async fn link_name(&self, ifindex: u32) -> Result<String> {
        let link = self
            .handle
            .link()
            .get()
            .match_index(ifindex)
            .execute()
            .try_next()
            .await?
            .with_context(|| format!("no interface with index {ifindex}"))?;
        link.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            })
            .with_context(|| format!("interface {ifindex} has no name"))
    }

    /// The IPv4 and IPv6 neighbour entries on the interfaces `ifindexes`: a MAC where the entry holds a usable one,
    /// `None` where it is being resolved or failed to resolve.
    pub async fn neighbour_macs(&self, ifindexes: &[u32]) -> Result<NeighbourMacs> {
        let mut macs = HashMap::new();
        let mut neighbours = self.handle.neighbours().get().execute();
        while let Some(message) = neighbours
            .try_next()
            .await
            .context("listing the neighbour table failed")?
        {
            let usable = matches!(
                message.header.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
            );
            let ifindex = message.header.ifindex;
            if !ifindexes.contains(&ifindex) {
                continue;
            }
            let mut addr = None;
            let mut mac = None;
            for attribute in &message.attributes {
                match attribute {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        addr = Some(IpAddr::V4(*a));
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        addr = Some(IpAddr::V6(*a));
                    }
                    NeighbourAttribute::LinkLayerAddress(l) => {
                        mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                    }
                    _ => {}
                }
            }
            if let Some(addr) = addr {
                macs.insert((ifindex, addr), mac.filter(|_| usable));
            }
        }
        Ok(macs)
    }

    /// Marks the neighbour entry of `addr` "managed": the kernel resolves it now if it has to
    /// and keeps it resolved from then on, although the XDP path never confirms it. An entry
    /// that already holds a MAC keeps it. (Linux 5.16 and later.)
    pub async fn keep_resolved(&self, ifindex: u32, addr: IpAddr) -> Result<()> {
        let mut request = self
            .handle
            .neighbours()
            .add(ifindex, addr)
            .state(NeighbourState::None)
            .replace();
        request
            .message_mut()
            .attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) => bail!(
                "could not ask the kernel to resolve backend {addr} (managed neighbour entry): {e}"
            ),
        }
    }
}

/// The link kind (`veth`, `vlan`, ...) of a virtual interface.
fn link_kind(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

/// The peer of a veth `link`.
fn veth_peer_of(link: &LinkMessage, kind: Option<&str>) -> Option<VethPeer> {
    let peer = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(peer) => Some(*peer),
        _ => None,
    });
    // IFLA_LINK_NETNSID is only present when the peer lives in another namespace.
    let elsewhere = link
        .attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)));
    peer.filter(|_| kind == Some(VETH)).map(|ifindex| VethPeer {
        ifindex,
        same_namespace: !elsewhere,
    })
}

/// The kernel's address events (RTNLGRP_IPV4_IFADDR and RTNLGRP_IPV6_IFADDR), on a netlink
/// socket of their own.
/// Subscribe before reading the addresses, so no change falls between the two.
pub struct AddressEvents {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
}

impl AddressEvents {
    /// Joins the group; the socket is served by a task on the current tokio runtime.
    pub fn subscribe() -> Result<Self> {
        let (connection, _handle, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .context(
            "could not subscribe to the kernel's address events (netlink RTNLGRP_IPV4_IFADDR \
                 and RTNLGRP_IPV6_IFADDR)",
        )?;
        tokio::spawn(connection);
        Ok(Self { messages })
    }

    /// Waits until some address was added or removed, then takes every event already
    /// queued with it (one re-read of the addresses covers them all). `None`: the socket closed.
    pub async fn changed(&mut self) -> Option<()> {
        self.messages.next().await?;
        while self.messages.try_recv().is_ok() {}
        Some(())
    }
}

/// Whether the interface holds the address of `message`: an IPv6 address still in duplicate
/// address detection (tentative) or that failed it (dadfailed) is not used by the kernel, so
/// it does not make the director the VIP's holder (`active_when = "vip-assigned"`). The kernel
/// announces the end of DAD with another RTM_NEWADDR, which `AddressEvents` follows.
fn is_held(message: &AddressMessage) -> bool {
    // IFA_FLAGS holds all 32 bits; the header's byte only the low 8 (older kernels: only it).
    let flags = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            AddressAttribute::Flags(flags) => Some(*flags),
            _ => None,
        })
        .unwrap_or_else(|| AddressFlags::from_bits_retain(message.header.flags.bits().into()));
    !flags.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed)
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::address::AddressHeaderFlags;

    use super::*;

    fn message(header: AddressHeaderFlags, attribute: Option<AddressFlags>) -> AddressMessage {
        let mut message = AddressMessage::default();
        message.header.flags = header;
        message
            .attributes
            .extend(attribute.map(AddressAttribute::Flags));
        message
    }

    #[test]
    fn tentative_and_dad_failed_addresses_are_not_held() {
        assert!(is_held(&message(AddressHeaderFlags::Permanent, None)));
        assert!(is_held(&message(
            AddressHeaderFlags::Permanent,
            Some(AddressFlags::Permanent | AddressFlags::Nodad)
        )));
        assert!(!is_held(&message(AddressHeaderFlags::Tentative, None)));
        assert!(!is_held(&message(
            AddressHeaderFlags::Tentative,
            Some(AddressFlags::Tentative)
        )));
        assert!(!is_held(&message(
            AddressHeaderFlags::empty(),
            Some(AddressFlags::Dadfailed | AddressFlags::Tentative)
        )));
        // IFA_FLAGS, when present, is the whole truth.
        assert!(is_held(&message(
            AddressHeaderFlags::Tentative,
            Some(AddressFlags::Permanent)
        )));
    }

    /// Validation and egress see IPv4 and global IPv6 prefixes; link-local ones are on every
    /// interface and reach nothing in particular.
    #[test]
    fn interface_addresses_leave_link_local_prefixes_out() {
        let interface = InterfaceInfo {
            name: "eth0".into(),
            ifindex: 2,
            mac: [2, 0, 0, 0, 0, 2],
            ipv4: vec![("198.18.0.2".parse().unwrap(), 24)],
            ipv6: vec![
                ("fe80::2".parse().unwrap(), 64),
                ("2001:2::2".parse().unwrap(), 64),
            ],
            kind: None,
            veth_peer: None,
            vlan: None,
        };
        let addresses = interface.addresses().addresses;
        assert_eq!(
            addresses,
            [
                ("198.18.0.2".parse().unwrap(), 24),
                ("2001:2::2".parse().unwrap(), 64)
            ]
        );
    }
}
