//! The dataplane benchmark (`cargo xtask bench`; the binary is `tests/benches/dataplane.rs`).
//!
//! ```text
//!   generator namespace                         director namespace
//!   ┌──────────────────────────────┐ veth pair ┌───────────────────────────────────────┐
//!   │ g0: drlb_bench_sink (counts  │◄─────────►│ d0: the contender                     │
//!   │     by destination MAC, drop)│           │   limit: drlb_bench_reflect (XDP_TX)  │
//!   │ drlb_bench_gen, run by       │           │   drlb:  `drlb run` (XDP_TX)          │
//!   │ BPF_PROG_TEST_RUN in live-   │           │   nftables DR: XDP_PASS + netdev      │
//!   │ frames mode, XDP_TX out g0   │           │     ingress jhash -> MAC, fwd to d0   │
//!   └──────────────────────────────┘           │   IPVS DR (when the kernel has it)    │
//!                                              └───────────────────────────────────────┘
//! ```
//!
//! Every frame the generator sends crosses to d0, where the contender picks a backend and
//! rewrites the destination MAC, and comes back to g0, where the sink counts it under that
//! backend. The generator, the contender and the sink run one after the other on the CPU the
//! generator is pinned to (veth runs the peer's NAPI from the sender's softirq), so frames
//! sent / generator wall time is the forwarding rate when every frame arrives; otherwise the
//! delivered count says what was lost.

pub mod cost;
pub mod floors;
pub mod frames;
pub mod generator;
pub mod packet_socket;
pub mod report;
pub mod svg;
pub mod topology;

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lb_common::{IPPROTO_TCP, IPPROTO_UDP};

/// The one VIP of the benchmark.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;
/// Real servers behind the VIP. They exist only as MACs: the sink counts their frames.
pub const BACKENDS: u8 = 8;
/// The generator's interface and MAC.
pub const GENERATOR_IF: &str = "g0";
pub const GENERATOR_MAC: [u8; 6] = [0x02, 0xb0, 0x0e, 0x00, 0x00, 0x01];
/// The director's interface, MAC and address (a /15, so backends and clients are on-link).
pub const DIRECTOR_IF: &str = "d0";
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0xb0, 0x0e, 0x00, 0x00, 0x02];
pub const DIRECTOR_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const DIRECTOR_PREFIX_LEN: u8 = 15;

/// The IPv6 VIP of the IPv6 streams, and the director's IPv6 address (a /64 with the backends).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
pub const DIRECTOR_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
pub const DIRECTOR_PREFIX_LEN6: u8 = 64;

/// Backend `n`'s address: 198.18.0.11 and up.
#[must_use]
pub const fn backend_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 11 + n)
}

/// Backend `n`'s IPv6 address: 2001:2::11 and up (the same MAC as its IPv4 one).
#[must_use]
pub const fn backend_ip6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x11 + n as u16)
}

/// What a stream carries: the transport protocol, over IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP segments of established connections (ACK set, no handshake): the flow table path.
    Tcp,
    Udp,
    /// The same over IPv6, to the IPv6 VIP.
    Tcp6,
    Udp6,
}

impl Protocol {
    pub const ALL: [Self; 4] = [Self::Tcp, Self::Udp, Self::Tcp6, Self::Udp6];

    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp | Self::Tcp6 => IPPROTO_TCP,
            Self::Udp | Self::Udp6 => IPPROTO_UDP,
        }
    }

    #[must_use]
    pub const fn is_ipv6(self) -> bool {
        matches!(self, Self::Tcp6 | Self::Udp6)
    }

    /// The service port of the VIP for this protocol.
    #[must_use]
    pub const fn port(self) -> u16 {
        match self {
            Self::Tcp | Self::Tcp6 => TCP_PORT,
            Self::Udp | Self::Udp6 => UDP_PORT,
        }
    }

    /// The VIP of the streams: [`VIP`] or [`VIP6`].
    #[must_use]
    pub const fn vip(self) -> IpAddr {
        if self.is_ipv6() {
            IpAddr::V6(VIP6)
        } else {
            IpAddr::V4(VIP)
        }
    }

    /// Backend `n`'s address of this protocol's family.
    #[must_use]
    pub const fn backend(self, n: u8) -> IpAddr {
        if self.is_ipv6() {
            IpAddr::V6(backend_ip6(n))
        } else {
            IpAddr::V4(backend_ip(n))
        }
    }

    /// As nftables and drlb's config spell it.
    #[must_use]
    pub const fn keyword(self) -> &'static str {
        match self {
            Self::Tcp | Self::Tcp6 => "tcp",
            Self::Udp | Self::Udp6 => "udp",
        }
    }

    /// nftables' network-layer keyword: `ip` or `ip6`.
    #[must_use]
    pub const fn network_keyword(self) -> &'static str {
        if self.is_ipv6() { "ip6" } else { "ip" }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP-like",
            Self::Udp => "UDP",
            Self::Tcp6 => "TCP-like IPv6",
            Self::Udp6 => "UDP IPv6",
        })
    }
}

/// `02:b0:0d:00:00:01`
#[must_use]
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}
