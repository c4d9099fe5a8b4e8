//! Which of the director's interfaces reaches a backend: the one it names, else the one whose
//! connected subnet (IPv4, or global IPv6 prefix) holds its address.

use std::net::IpAddr;

use super::BackendConfig;

/// What the director's interface looks like, as far as validation needs to know.
#[derive(Clone, Debug)]
pub struct InterfaceAddresses {
    pub name: String,
    /// (address, prefix length) of each IPv4 address and global IPv6 address on the
    /// interface (link-local IPv6 prefixes are on every interface: they choose none).
    pub addresses: Vec<(IpAddr, u8)>,
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
        .flat_map(|i| i.addresses.iter().map(move |(addr, len)| (i, *addr, *len)))
        .filter(|(_, addr, len)| contains(*addr, *len, backend.address))
        .max_by_key(|(_, _, len)| *len)
        .map(|(i, _, _)| i)
}

/// An address as a number of `bits` bits (32 or 128), so both families share the arithmetic.
fn bits_of(addr: IpAddr) -> (u128, u32) {
    match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), u32::BITS),
        IpAddr::V6(v6) => (u128::from(v6), u128::BITS),
    }
}

/// The mask of a `prefix_len` prefix of a `bits`-bit address.
fn mask(prefix_len: u8, bits: u32) -> u128 {
    let all = u128::MAX >> (u128::BITS - bits);
    let host_bits = bits - u32::from(prefix_len).min(bits);
    all.checked_shl(host_bits).unwrap_or(0) & all
}

/// The network of `addr/prefix_len`.
#[must_use]
pub fn network(addr: IpAddr, prefix_len: u8) -> IpAddr {
    let (value, bits) = bits_of(addr);
    let net = value & mask(prefix_len, bits);
    match addr {
        IpAddr::V4(_) => IpAddr::from(u32::try_from(net).unwrap_or(0).to_be_bytes()),
        IpAddr::V6(_) => IpAddr::from(net.to_be_bytes()),
    }
}

/// Whether `addr` is in `net_addr/prefix_len` (never across families).
pub(super) fn contains(net_addr: IpAddr, prefix_len: u8, addr: IpAddr) -> bool {
    let ((net, bits), (value, other_bits)) = (bits_of(net_addr), bits_of(addr));
    bits == other_bits && (net ^ value) & mask(prefix_len, bits) == 0
}
