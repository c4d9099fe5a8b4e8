//! IP addresses as the data plane keys them ([`lb_common::Addr`]): an IPv4 address in its
//! IPv4-mapped form, an IPv6 address as its own 16 bytes. Every conversion goes through here.

use std::net::{IpAddr, Ipv6Addr};

use lb_common::{Addr, ipv4_mapped};

/// The data plane's key of `ip`.
#[must_use]
pub const fn addr_of(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address a data plane key stands for: an IPv4-mapped key is the IPv4 address.
#[must_use]
pub fn ip_of(addr: Addr) -> IpAddr {
    Ipv6Addr::from(addr).to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_round_trip_and_ipv4_is_mapped() {
        let v4: IpAddr = "198.18.0.100".parse().unwrap();
        let v6: IpAddr = "2001:2::100".parse().unwrap();
        assert_eq!(addr_of(v4), ipv4_mapped([198, 18, 0, 100]));
        assert_eq!(addr_of(v6)[..2], [0x20, 0x01]);
        assert_eq!(ip_of(addr_of(v4)), v4);
        assert_eq!(ip_of(addr_of(v6)), v6);
    }
}
