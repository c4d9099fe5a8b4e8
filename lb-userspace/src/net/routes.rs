//! Route health injection on the kernel's side (docs/bgp.md): a TUN device that lives exactly
//! as long as drlb (the kernel removes it, and every route through it, when drlb's last file
//! descriptor closes: on exit, SIGKILL or a crash), and `VIP/32 dev <that device>` routes
//! (`VIP/128` for an IPv6 VIP) in a routing table of their own, which BIRD's `kernel` protocol
//! learns and exports to BGP.

use std::{
    collections::BTreeSet,
    fs::{File, OpenOptions},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
};

use anyhow::{Context as _, Result, bail};
use futures::TryStreamExt as _;
use rtnetlink::{
    LinkUnspec, RouteMessageBuilder,
    packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope},
};

use super::netlink::Netlink;

/// The routing protocol number drlb's routes carry (`ip route show proto 200`, BIRD's
/// `krt_source = 200`): it tells them apart from any other route in the table. Linux leaves
/// numbers above `RTPROT_STATIC` (4) to user space; 200 is unassigned in iproute2's list.
pub const ROUTE_PROTOCOL: u8 = 200;
/// Every VIP is announced as a host route: /32 for IPv4, /128 for IPv6.
const HOST_PREFIX_V4: u8 = 32;
const HOST_PREFIX_V6: u8 = 128;

/// The host route's prefix length for `vip`'s family.
#[must_use]
pub const fn host_prefix(vip: IpAddr) -> u8 {
    match vip {
        IpAddr::V4(_) => HOST_PREFIX_V4,
        IpAddr::V6(_) => HOST_PREFIX_V6,
    }
}
const TUN_PATH: &str = "/dev/net/tun";

/// The device the VIP routes point at. Dropping it (or drlb's death) deletes the device and
/// its routes.
pub struct AnnounceDevice {
    /// Holds the device: the kernel deletes it when this closes.
    _tun: File,
    pub name: String,
    pub ifindex: u32,
}

impl AnnounceDevice {
    /// Creates the TUN device `name` (refused if it exists: another drlb's, or a leftover
    /// persistent one) and sets it up.
    pub async fn create(netlink: &Netlink, name: &str) -> Result<Self> {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .open(TUN_PATH)
            .with_context(|| {
                format!("cannot open {TUN_PATH} for the announce device: is the tun module loaded?")
            })?;
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= request.ifr_name.len() {
            bail!("the announce device name {name:?} is too long for Linux");
        }
        for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        // A layer-3 device without packet headers; EXCL: never take over an existing one.
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the flags fit in the 16-bit ifr_flags"
        )]
        let flags = (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_TUN_EXCL) as libc::c_short;
        request.ifr_ifru.ifru_flags = flags;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
        let result = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &raw mut request) };
        if result < 0 {
            let error = std::io::Error::last_os_error();
            return Err(error).with_context(|| {
                format!(
                    "cannot create the announce device {name}: a device of that name exists (another \
                     drlb in this network namespace, or a leftover: `ip link del {name}`), or give \
                     another name in [director] announce = {{ device = \"...\" }}"
                )
            });
        }
        let info = netlink.link_index(name).await?;
        netlink
            .handle()
            .link()
            .set(LinkUnspec::new_with_index(info).up().build())
            .execute()
            .await
            .with_context(|| format!("cannot set the announce device {name} up"))?;
        Ok(Self {
            _tun: tun,
            name: name.to_owned(),
            ifindex: info,
        })
    }
}

/// The routes drlb keeps in `table` through `device`.
pub struct VipRoutes<'a> {
    pub netlink: &'a Netlink,
    pub device: &'a AnnounceDevice,
    pub table: u32,
}

impl VipRoutes<'_> {
    fn route(&self, vip: IpAddr) -> RouteMessage {
        match vip {
            IpAddr::V4(v4) => self.finish(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(v4, HOST_PREFIX_V4)
                    .scope(RouteScope::Link),
            ),
            // IPv6 routes have no scope (the kernel keeps them universe).
            IpAddr::V6(v6) => self.finish(
                RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(v6, HOST_PREFIX_V6),
            ),
        }
    }

    /// What every VIP route has, of either family: drlb's device, table and protocol.
    fn finish<T>(&self, builder: RouteMessageBuilder<T>) -> RouteMessage {
        builder
            .output_interface(self.device.ifindex)
            .table_id(self.table)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build()
    }

    /// Adds (or keeps) the route of `vip`.
    pub async fn add(&self, vip: IpAddr) -> Result<()> {
        self.netlink
            .handle()
            .route()
            .add(self.route(vip))
            .replace()
            .execute()
            .await
            .with_context(|| {
                format!(
                    "adding the route {vip}/{} dev {} table {} failed",
                    host_prefix(vip),
                    self.device.name,
                    self.table
                )
            })
    }

    /// Removes the route of `vip`.
    pub async fn remove(&self, vip: IpAddr) -> Result<()> {
        self.netlink
            .handle()
            .route()
            .del(self.route(vip))
            .execute()
            .await
            .with_context(|| {
                format!(
                    "removing the route {vip}/{} dev {} table {} failed",
                    host_prefix(vip),
                    self.device.name,
                    self.table
                )
            })
    }

    /// The VIPs whose routes are in the table now (drlb's protocol, through its device).
    pub async fn present(&self) -> Result<BTreeSet<IpAddr>> {
        let mut present = BTreeSet::new();
        for (family, query) in [
            ("IPv4", RouteMessageBuilder::<Ipv4Addr>::new().build()),
            ("IPv6", RouteMessageBuilder::<Ipv6Addr>::new().build()),
        ] {
            self.present_of(query, &mut present)
                .await
                .with_context(|| format!("listing the {family} routes failed"))?;
        }
        Ok(present)
    }

    /// Adds to `present` the VIPs of drlb's routes that `query` lists (one family).
    async fn present_of(&self, query: RouteMessage, present: &mut BTreeSet<IpAddr>) -> Result<()> {
        let mut routes = self.netlink.handle().route().get(query).execute();
        while let Some(route) = routes.try_next().await? {
            if route.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
                || table_of(&route) != self.table
            {
                continue;
            }
            let through_device = route
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == self.device.ifindex));
            let destination = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(addr)) => Some(IpAddr::V4(*addr)),
                RouteAttribute::Destination(RouteAddress::Inet6(addr)) => Some(IpAddr::V6(*addr)),
                _ => None,
            });
            if let (true, Some(vip)) = (through_device, destination)
                && route.header.destination_prefix_length == host_prefix(vip)
            {
                present.insert(vip);
            }
        }
        Ok(())
    }
}

/// A route's table: the header's byte, or the attribute for tables above 255.
fn table_of(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or_else(|| u32::from(route.header.table))
}
