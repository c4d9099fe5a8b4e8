//! VIP conflicts seen on the wire: ARP frames whose sender IP is a VIP but whose sender MAC is
//! not the director's, and their IPv6 counterparts (Neighbor Advertisements for a VIP from
//! another MAC, Neighbor Solicitations from a VIP or DAD probes for one). A real server with `arp_ignore` too low answers for the VIP; one with
//! `arp_announce` too low asks with the VIP as sender (LVS's "ARP problem"); another director
//! claims it while active. Either way neighbours may learn another MAC for the VIP.
//!
//! The program counts such frames per offending MAC in a per-CPU LRU hash (bounded: a flood of
//! forged MACs evicts old entries, it cannot grow the map; per CPU: no atomics); the daemon
//! sums the CPUs, names the backend that owns each MAC, and logs. Counting never changes the
//! frame's verdict.

use bytemuck::{Pod, Zeroable};

use crate::Addr;

/// Name of the map, as declared in the XDP program.
pub const MAP_NAME: &str = "ARP_CONFLICTS";
/// Offending MACs remembered (least recently seen evicted first).
pub const MAX_ARP_CONFLICTS: u32 = 1024;

/// Key of `ARP_CONFLICTS`: the ARP sender MAC (the one neighbours would learn).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ArpConflictKey {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Value of `ARP_CONFLICTS`, one per CPU: userspace adds the counters up and takes the last-seen
/// fields from the CPU that saw the MAC last.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ArpConflict {
    /// ARP requests with a VIP as sender address (`arp_announce` too low, or an announcement);
    /// Neighbor Solicitations from a VIP, or DAD probes for one.
    pub requests: u64,
    /// ARP replies with a VIP as sender address (`arp_ignore` too low, or another director);
    /// Neighbor Advertisements for a VIP.
    pub replies: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last such frame.
    pub last_seen_ns: u64,
    /// The VIP the last such frame claimed, as an [`Addr`] (IPv4 mapped).
    pub last_vip: Addr,
}

const _: () = assert!(core::mem::size_of::<ArpConflictKey>() == 8);
const _: () = assert!(core::mem::size_of::<ArpConflict>() == 40);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy and no padding (bytemuck::Pod derive checks it).
    unsafe impl aya::Pod for super::ArpConflictKey {}
    unsafe impl aya::Pod for super::ArpConflict {}
}
