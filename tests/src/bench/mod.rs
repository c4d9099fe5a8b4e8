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
pub mod frames;
pub mod generator;
pub mod report;
pub mod svg;
pub mod topology;

use std::{fmt, net::Ipv4Addr};

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

/// Backend `n`'s address: 198.18.0.11 and up.
#[must_use]
pub const fn backend_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 11 + n)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP segments of established connections (ACK set, no handshake): the flow table path.
    Tcp,
    Udp,
}

impl Protocol {
    pub const ALL: [Self; 2] = [Self::Tcp, Self::Udp];

    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }

    /// The service port of the VIP for this protocol.
    #[must_use]
    pub const fn port(self) -> u16 {
        match self {
            Self::Tcp => TCP_PORT,
            Self::Udp => UDP_PORT,
        }
    }

    /// As nftables and drlb's config spell it.
    #[must_use]
    pub const fn keyword(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP-like",
            Self::Udp => "UDP",
        })
    }
}

/// `02:b0:0d:00:00:01`
#[must_use]
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}
