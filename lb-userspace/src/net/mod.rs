//! The wire and the kernel: rtnetlink ([`netlink`]: interfaces, addresses, neighbours), ARP
//! frames and packet sockets ([`arp`]), gratuitous ARP ([`garp`]), MAC formatting ([`mac`]), the routes that announce VIPs
//! ([`routes`]), rx VLAN offload ([`ethtool`]). Knows nothing of services.

pub mod addr;
pub mod arp;
pub mod ethtool;
pub mod garp;
pub mod mac;
pub mod netlink;
pub mod routes;
