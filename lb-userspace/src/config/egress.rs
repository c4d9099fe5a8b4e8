//! Which of the director's interfaces reaches a backend: the one it names, else the one whose
//! connected subnet holds its address.

use std::net::Ipv4Addr;

use super::BackendConfig;

/// What the director's interface looks like, as far as validation needs to know.
#[derive(Clone, Debug)]
pub struct InterfaceAddresses {
    pub name: String,
    /// (address, prefix length) of each IPv4 address on the interface.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
}

/// The director's interface that reaches `backend`: the one it names, else the one whose
/// connected subnet holds its address (the most specific, if several do).
#[must_use]
pub fn egress_for<'a>(
    backend: &BackendConfig,
    interfaces: &'a [InterfaceAddresses],
) -> Option<&'a InterfaceAddresses> {
    if let Some(name) = &backend.interface {
        return interfaces.iter().find(|i| &i.name == name);
    }
    interfaces
        .iter()
        .flat_map(|i| i.ipv4.iter().map(move |(addr, len)| (i, *addr, *len)))
        .filter(|(_, addr, len)| contains(*addr, *len, backend.address))
        .max_by_key(|(_, _, len)| *len)
        .map(|(i, _, _)| i)
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

pub fn network(addr: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) & mask(prefix_len))
}

pub(super) fn contains(net_addr: Ipv4Addr, prefix_len: u8, addr: Ipv4Addr) -> bool {
    (u32::from(net_addr) ^ u32::from(addr)) & mask(prefix_len) == 0
}
