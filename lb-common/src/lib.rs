//! Types and constants shared by the XDP program (`lb-ebpf`) and userspace (`lb-userspace`).
//!
//! Every map key and value is `#[repr(C)]`, `Copy`, free of implicit padding (checked by the
//! `bytemuck::Pod` derive) and has its size asserted below, so both sides agree byte for byte.
//! Fields holding network-order values say so in their name (`_be`) or type (`[u8; N]`).
#![no_std]

pub mod bench;
pub mod conflict;
pub mod hash;
mod verdict;

use bytemuck::{Pod, Zeroable};
pub use verdict::Verdict;

/// Most services (VIP, port, protocol) a director serves.
pub const MAX_SERVICES: u32 = 64;
/// Most backends one service may have.
pub const MAX_BACKENDS_PER_SERVICE: u32 = 1024;
/// Entries of the `BACKENDS` map and of the per-backend counters: one per service and backend id.
pub const BACKEND_SLOTS: u32 = MAX_SERVICES * MAX_BACKENDS_PER_SERVICE;
/// Each service has two banks of Maglev table: userspace fills the idle bank, then flips
/// [`Service::bank`] with one map update, so the program never sees a half-written table.
pub const TABLE_BANKS: u32 = 2;
/// Maglev table size (a prime) when a service does not set one.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// Default entries of the `MAGLEV` array: every service at the default size, both banks.
/// Userspace resizes the array at load when the configured services need more.
pub const DEFAULT_MAGLEV_ENTRIES: u32 = MAX_SERVICES * TABLE_BANKS * DEFAULT_TABLE_SIZE;
/// Default capacity of the flow table.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;
/// Most interfaces a director attaches to.
pub const MAX_INTERFACES: u32 = 64;

/// IP protocol numbers the director balances.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Map names, as declared in the XDP program and looked up by userspace.
pub mod map_names {
    pub const SERVICES: &str = "SERVICES";
    pub const BACKENDS: &str = "BACKENDS";
    pub const MAGLEV: &str = "MAGLEV";
    pub const FLOWS: &str = "FLOWS";
    pub const VIPS: &str = "VIPS";
    pub const INTERFACES: &str = "INTERFACES";
    pub const EGRESS: &str = "EGRESS";
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
    /// Index of the service: selects its backends and its counters.
    pub id: u32,
    /// Which of the [`TABLE_BANKS`] banks of its Maglev table is live.
    pub bank: u32,
    /// First `MAGLEV` entry of the service's region (both banks: `TABLE_BANKS * table_size`).
    pub table_base: u32,
    /// Entries of one bank (a prime); 0 means "no backend in the table: drop new flows".
    pub table_size: u32,
    /// [`SERVICE_FLAG_SOURCE_HASH`], [`SERVICE_FLAG_STANDBY`].
    pub flags: u32,
}

/// Schedule by the client address alone (IPVS `sh`): a client keeps its backend across
/// connections. Without it, the whole 5-tuple is hashed.
pub const SERVICE_FLAG_SOURCE_HASH: u32 = 1;
/// The director is a standby (`drlb run --standby`, `drlb vip deactivate`): the service's
/// traffic is dropped and counted (`drop_standby`), not forwarded. Carried in the `Service`
/// value the program reads anyway, so the forwarding path needs no second lookup.
pub const SERVICE_FLAG_STANDBY: u32 = 2;

/// Value of the `BACKENDS` hash map, keyed by [`backend_index`]: where frames for a backend go.
/// A backend that must not receive traffic (removed, unhealthy, MAC unknown) has no entry, so
/// flows pinned to it are rescheduled; a drained one keeps its entry but leaves the table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Backend {
    /// The backend's MAC: the new destination MAC of the frame.
    pub dst_mac: [u8; 6],
    /// The egress interface's MAC: the new source MAC of the frame.
    pub src_mac: [u8; 6],
    /// The egress interface. Equal to the ingress interface, the frame leaves with XDP_TX;
    /// else it is redirected through the `EGRESS` devmap.
    pub ifindex: u32,
}

/// Key of the `FLOWS` LRU map: an IPv4 5-tuple as on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport_be: u16,
    pub dport_be: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

/// Value of the `FLOWS` map: the backend a flow was given.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowEntry {
    /// The service's id when the flow was scheduled: a flow never follows an id that another
    /// service has taken over since.
    pub service: u32,
    /// The [`backend_index`] of the backend.
    pub backend: u32,
}

/// Value of the `VIPS` hash map, keyed by [`Addr`]: the addresses the program answers ARP for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Vip {
    /// [`VIP_FLAG_ACTIVE`] and future flags.
    pub flags: u32,
}

/// The program answers ARP for the VIP. Cleared on a standby director, whose services carry
/// [`SERVICE_FLAG_STANDBY`] at the same time so it forwards nothing either.
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

/// Key in `BACKENDS` and index in `BACKEND_COUNTERS` of a service's backend. Backend ids are
/// stable while the backend exists; Maglev table entries hold them.
#[inline(always)]
#[must_use]
pub const fn backend_index(service_id: u32, backend_id: u32) -> u32 {
    service_id * MAX_BACKENDS_PER_SERVICE + backend_id
}

/// Index in `MAGLEV` of a slot of the live bank of a service's table.
#[inline(always)]
#[must_use]
pub const fn table_index(service: &Service, slot: u32) -> u32 {
    service.table_base + service.bank * service.table_size + slot
}

// The layout both sides rely on.
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(core::mem::size_of::<Service>() == 20);
const _: () = assert!(core::mem::size_of::<Backend>() == 16);
const _: () = assert!(core::mem::align_of::<Backend>() == 4);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);
const _: () = assert!(core::mem::size_of::<FlowEntry>() == 8);
const _: () = assert!(core::mem::size_of::<Vip>() == 4);
const _: () = assert!(core::mem::size_of::<Interface>() == 8);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () =
    assert!(backend_index(MAX_SERVICES - 1, MAX_BACKENDS_PER_SERVICE - 1) == BACKEND_SLOTS - 1);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], Copy and has no padding (bytemuck::Pod derive checks it).
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowEntry {}
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
    fn backend_indices_of_neighbouring_services_do_not_overlap() {
        assert_eq!(
            backend_index(0, MAX_BACKENDS_PER_SERVICE - 1) + 1,
            backend_index(1, 0)
        );
    }

    #[test]
    fn table_banks_of_a_service_are_adjacent_and_disjoint() {
        let mut s = Service {
            id: 0,
            bank: 0,
            table_base: 100,
            table_size: 7,
            flags: 0,
        };
        assert_eq!((table_index(&s, 0), table_index(&s, 6)), (100, 106));
        s.bank = 1;
        assert_eq!((table_index(&s, 0), table_index(&s, 6)), (107, 113));
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
