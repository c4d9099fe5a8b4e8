//! Types and constants shared by the XDP program (`lb-ebpf`) and userspace (`lb-userspace`).
//!
//! Every map key and value is `#[repr(C)]`, `Copy`, free of implicit padding (checked by the
//! `bytemuck::Pod` derive) and has its size asserted below, so both sides agree byte for byte.
//! Fields holding network-order values say so in their name (`_be`).
#![no_std]

pub mod hash;
mod verdict;

use bytemuck::{Pod, Zeroable};
pub use verdict::Verdict;

/// Most services (VIP, port, protocol) a director serves.
pub const MAX_SERVICES: u32 = 64;
/// Most backends one service may have.
pub const MAX_BACKENDS_PER_SERVICE: u32 = 256;
/// Each service has two banks of backend slots: userspace fills the idle bank, then flips
/// [`Service::bank`] with one map update, so the program never sees a half-written list.
pub const BACKEND_BANKS: u32 = 2;
/// Entries of the `BACKENDS` array: `MAX_SERVICES * BACKEND_BANKS * MAX_BACKENDS_PER_SERVICE`.
pub const BACKEND_SLOTS: u32 = MAX_SERVICES * BACKEND_BANKS * MAX_BACKENDS_PER_SERVICE;
/// Entries of the per-backend counter array (one per service and backend position).
pub const BACKEND_COUNTER_SLOTS: u32 = MAX_SERVICES * MAX_BACKENDS_PER_SERVICE;
/// Most interfaces a director attaches to.
pub const MAX_INTERFACES: u32 = 64;

/// IP protocol numbers the director balances.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Map names, as declared in the XDP program and looked up by userspace.
pub mod map_names {
    pub const SERVICES: &str = "SERVICES";
    pub const BACKENDS: &str = "BACKENDS";
    pub const VIPS: &str = "VIPS";
    pub const INTERFACES: &str = "INTERFACES";
    pub const SERVICE_COUNTERS: &str = "SERVICE_COUNTERS";
    pub const BACKEND_COUNTERS: &str = "BACKEND_COUNTERS";
    pub const VERDICT_COUNTERS: &str = "VERDICT_COUNTERS";
}
/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "drlb";
/// Name of the program that passes every frame (for veth peers that must receive XDP_TX'd frames).
pub const PASS_PROGRAM_NAME: &str = "drlb_pass";

/// An IP address as 16 bytes: IPv6 as is, IPv4 as an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`), so one key type serves both families. Network byte order.
pub type Addr = [u8; 16];

/// The IPv4-mapped form of an IPv4 address given as its four network-order bytes.
#[inline(always)]
#[must_use]
pub const fn ipv4_mapped(octets: [u8; 4]) -> Addr {
    let [a, b, c, d] = octets;
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
}

/// Key of the `SERVICES` hash map: what a packet is addressed to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ServiceKey {
    pub addr: Addr,
    /// Destination port as it appears on the wire.
    pub port_be: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub protocol: u8,
    pub _pad: u8,
}

/// Value of the `SERVICES` hash map. Replaced whole on every change (a hash-map update swaps the
/// element atomically), which is what makes the bank flip atomic.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Service {
    /// Index of the service: selects its rows in `BACKENDS` and its counters.
    pub id: u32,
    /// Which of the [`BACKEND_BANKS`] banks is live.
    pub bank: u32,
    /// How many slots of the live bank hold a backend; 0 means "drop: no backend".
    pub backend_count: u32,
}

/// Value of the `BACKENDS` array, at [`backend_slot`]`(service, bank, position)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Backend {
    /// The backend's MAC: the new destination MAC of the frame.
    pub dst_mac: [u8; 6],
    /// The egress interface's MAC: the new source MAC of the frame.
    pub src_mac: [u8; 6],
    /// The egress interface. Equal to the ingress interface, the frame leaves with XDP_TX.
    pub ifindex: u32,
    /// Index into `BACKEND_COUNTERS`, stable while the backend exists.
    pub counter: u32,
}

/// Value of the `VIPS` hash map, keyed by [`Addr`]: the addresses the program answers ARP for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Vip {
    /// [`VIP_FLAG_ACTIVE`] and future flags.
    pub flags: u32,
}

/// The program answers ARP for the VIP. (Forwarding does not look at it yet: a standby
/// director, which must not forward either, is future work.)
pub const VIP_FLAG_ACTIVE: u32 = 1;

/// Value of the `INTERFACES` hash map, keyed by ifindex: what the program needs to know about
/// an interface it is attached to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Interface {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// A packet and byte counter; kept per CPU, summed by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Index in `BACKENDS` of a service's backend position in a bank.
#[inline(always)]
#[must_use]
pub const fn backend_slot(service_id: u32, bank: u32, position: u32) -> u32 {
    (service_id * BACKEND_BANKS + bank) * MAX_BACKENDS_PER_SERVICE + position
}

/// Index in `BACKEND_COUNTERS` of a service's backend counter.
#[inline(always)]
#[must_use]
pub const fn backend_counter_slot(service_id: u32, counter: u32) -> u32 {
    service_id * MAX_BACKENDS_PER_SERVICE + counter
}

// The layout both sides rely on.
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(core::mem::size_of::<Service>() == 12);
const _: () = assert!(core::mem::size_of::<Backend>() == 20);
const _: () = assert!(core::mem::align_of::<Backend>() == 4);
const _: () = assert!(core::mem::size_of::<Vip>() == 4);
const _: () = assert!(core::mem::size_of::<Interface>() == 8);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(
    backend_slot(
        MAX_SERVICES - 1,
        BACKEND_BANKS - 1,
        MAX_BACKENDS_PER_SERVICE - 1
    ) == BACKEND_SLOTS - 1
);
const _: () = assert!(
    backend_counter_slot(MAX_SERVICES - 1, MAX_BACKENDS_PER_SERVICE - 1)
        == BACKEND_COUNTER_SLOTS - 1
);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], Copy and has no padding (bytemuck::Pod derive checks it).
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::Vip {}
    unsafe impl aya::Pod for super::Interface {}
    unsafe impl aya::Pod for super::Counter {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_places_the_address_last() {
        let a = ipv4_mapped([198, 18, 0, 100]);
        assert_eq!(&a[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&a[12..], &[198, 18, 0, 100]);
    }

    #[test]
    fn backend_slots_of_different_services_and_banks_never_overlap() {
        let mut seen = [false; BACKEND_SLOTS as usize];
        for service in 0..MAX_SERVICES {
            for bank in 0..BACKEND_BANKS {
                for pos in 0..MAX_BACKENDS_PER_SERVICE {
                    let slot = backend_slot(service, bank, pos) as usize;
                    assert!(!seen[slot], "slot {slot} used twice");
                    seen[slot] = true;
                }
            }
        }
    }

    #[test]
    fn service_key_bytes_follow_field_order() {
        let key = ServiceKey {
            addr: ipv4_mapped([1, 2, 3, 4]),
            port_be: 8080u16.to_be(),
            protocol: IPPROTO_TCP,
            _pad: 0,
        };
        let bytes = bytemuck::bytes_of(&key);
        assert_eq!(&bytes[12..16], &[1, 2, 3, 4]);
        assert_eq!(&bytes[16..18], &8080u16.to_be_bytes());
        assert_eq!(bytes[18], IPPROTO_TCP);
    }
}
