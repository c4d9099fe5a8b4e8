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
pub use verdict::{Event, Verdict};

/// Most services (VIP, port, protocol) a director serves.
pub const MAX_SERVICES: u32 = 64;
/// Services a director can add at run time beyond those of its config, without a restart: the
/// per-service maps are sized for the config's services plus these (at most [`MAX_SERVICES`]).
pub const SPARE_SERVICES: u32 = 8;
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
/// Maglev entries (backend ids) per element of the `MAGLEV` array. The kernel stores array
/// elements at an 8-byte stride, so one u32 per element would waste half the memory; a block of
/// them wastes none. Slot `i` of the array is lane `i % MAGLEV_BLOCK` of element `i / MAGLEV_BLOCK`.
pub const MAGLEV_BLOCK: u32 = 16;
/// A `MAGLEV` element.
pub type MaglevBlock = [u32; MAGLEV_BLOCK as usize];
/// Elements of the `MAGLEV` array that hold `slots` entries.
#[must_use]
pub const fn maglev_blocks(slots: u32) -> u32 {
    slots.div_ceil(MAGLEV_BLOCK)
}
/// Default capacity of the flow table.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;
/// Most interfaces a director attaches to.
pub const MAX_INTERFACES: u32 = 64;
/// Entries of the `INTERFACES` array unless the loader needs more to keep the director's
/// interfaces apart (it is indexed by `ifindex & (entries - 1)`).
pub const DEFAULT_INTERFACE_SLOTS: u32 = 256;
/// The VLAN id of an interface that is not a VLAN (untagged frames). 802.1Q's VID 0 means
/// "priority tag only", so no VLAN device has it.
pub const NO_VLAN: u16 = 0;
/// The VID bits of an 802.1Q tag's TCI (the rest are priority and DEI).
pub const VLAN_VID_MASK: u16 = 0x0fff;
/// An odd multiplier that spreads VLAN ids over the `INTERFACES` index (see [`interface_slot`]).
const VLAN_SLOT_MULTIPLIER: u32 = 0x9e37_79b1;

/// The `INTERFACES` entry of (ifindex, VLAN id): for an untagged interface `ifindex & mask`, as
/// before VLANs; a VLAN on a trunk is the parent's ifindex mixed with the VLAN id. Userspace
/// sizes the array so that the director's interfaces fall into distinct entries.
#[inline(always)]
#[must_use]
pub const fn interface_slot(ifindex: u32, vlan: u16, mask: u32) -> u32 {
    (ifindex ^ (vlan as u32).wrapping_mul(VLAN_SLOT_MULTIPLIER)) & mask
}
/// The loader's override of the program's `INTERFACES` index mask.
pub const INTERFACE_SLOT_MASK_GLOBAL: &str = "INTERFACE_SLOT_MASK";
/// The loader's override of the program's variant: 0 in production; tests of in-place upgrades
/// load a program that differs (see `Event::VariantForward`).
pub const PROGRAM_VARIANT_GLOBAL: &str = "PROGRAM_VARIANT";

/// IP protocol numbers the director balances.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// ICMP, whose echo requests to a VIP the program answers and whose errors about a service
/// flow it relays to the flow's backend (and ICMPv6, which also carries neighbour discovery).
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Datagrams whose first fragment's backend the `FRAGMENTS` (IPv4) and `FRAGMENTS6` (IPv6)
/// LRU maps each remember (all CPUs share
/// it: a datagram's fragments may arrive on several). Fragments of one datagram arrive within
/// milliseconds, so a few thousand in flight is plenty; older ones are evicted.
pub const MAX_FRAGMENTED_DATAGRAMS: u32 = 4096;
/// The TTL of the echo replies the program builds for a VIP (Linux's default `ip_default_ttl`).
pub const ECHO_REPLY_TTL: u8 = 64;
/// Name of the read-only global that turns the ICMP error relay off (test-only, see
/// `ICMP_RELAY_OFF_ENV` in the loader): 0 relays, anything else does not.
pub const ICMP_RELAY_OFF_GLOBAL: &str = "ICMP_RELAY_OFF";

/// Map names, as declared in the XDP program and looked up by userspace.
pub mod map_names {
    pub const SERVICES: &str = "SERVICES";
    pub const SERVICE_KEYS: &str = "SERVICE_KEYS";
    pub const SERVICE_STATES: &str = "SERVICE_STATES";
    pub const TABLES: &str = "TABLES";
    pub const BACKENDS: &str = "BACKENDS";
    pub const EGRESS_SLOTS: &str = "EGRESS_SLOTS";
    pub const MAGLEV: &str = "MAGLEV";
    pub const FLOWS: &str = "FLOWS";
    pub const VIPS: &str = "VIPS";
    pub const VIP_STATES: &str = "VIP_STATES";
    pub const VIP_FILTER: &str = "VIP_FILTER";
    pub const VIP_SLOTS: &str = "VIP_SLOTS";
    pub const VIP_ADDRS: &str = "VIP_ADDRS";
    pub const INTERFACES: &str = "INTERFACES";
    pub const EGRESS: &str = "EGRESS";
    pub const SERVICE_COUNTERS: &str = "SERVICE_COUNTERS";
    pub const BACKEND_COUNTERS: &str = "BACKEND_COUNTERS";
    pub const VERDICT_COUNTERS: &str = "VERDICT_COUNTERS";
    pub const EVENT_COUNTERS: &str = "EVENT_COUNTERS";
    pub const FRAGMENTS: &str = "FRAGMENTS";
    pub const FLOWS6: &str = "FLOWS6";
    pub const FRAGMENTS6: &str = "FRAGMENTS6";
}
/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "drlb";
/// Name of the program that passes every frame (for veth peers that must receive XDP_TX'd frames).
pub const PASS_PROGRAM_NAME: &str = "drlb_pass";

/// An IP address as 16 bytes: IPv6 as is, IPv4 as an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`), so one key type serves both families. Network byte order.
pub type Addr = [u8; 16];

/// Extension headers the program walks before TCP/UDP/ICMPv6 must have been reached (a bound
/// the verifier can see; farther, the packet is malformed to it). RFC 8200's recommended order
/// has at most hop-by-hop, destination options, routing, fragment (and destination options
/// again, which real traffic to a service does not carry).
pub const MAX_IPV6_EXTENSION_HEADERS: usize = 4;
/// No offset in a frame the program's parser reads lies beyond this: it bounds the variable
/// offsets of the extension-header walk for the verifier (far beyond any first buffer's
/// headers); a header beyond it counts as truncated.
pub const MAX_HEADER_OFFSET: usize = 0x1fff;

/// Bytes before the IPv4 address in its IPv4-mapped form.
pub const IPV4_MAPPED_PREFIX_LEN: usize = 12;

/// The IPv4-mapped form of an IPv4 address given as its four network-order bytes.
#[inline(always)]
#[must_use]
pub const fn ipv4_mapped(octets: [u8; 4]) -> Addr {
    let [a, b, c, d] = octets;
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
}

// How the maps stay consistent while the program reads them
// ----------------------------------------------------------
// Every value the program reads and userspace changes while it runs is one aligned 64- or
// 32-bit word in an array (SERVICE_STATES, TABLES, BACKENDS, VIP_STATES, MAGLEV), written by
// userspace with one atomic store through a memory mapping (BPF_F_MMAPABLE) and read by the
// program with one load: a reader sees the old word or the new one, never a mix. Hash maps
// (SERVICES, VIPS) only map a key to an id, set when the key is inserted and never updated; an
// element deleted may be reused by the kernel at once, so userspace waits for an RCU grace
// period (every running program has finished) after deleting keys and before inserting
// others, and before it rewrites a Maglev bank or table descriptor the program may still read.
// SERVICE_KEYS (three words per service id) is written only while its id is not live, before
// the id's state word makes it live; the program compares it only for an id found live.
// VIP_ADDRS (two words per VIP id) likewise is written only while no `VIPS` key and no
// `VIP_SLOTS` word names its id (a reused id after a grace period), before either does.

/// Key of the `SERVICES` hash map: what a packet is addressed to. Its value is the service's
/// id (a `u32`), fixed for as long as the key exists.
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

/// A [`ServiceKey`] as three native-endian words (`SERVICE_KEYS`, indexed by service id): the
/// address's 16 bytes, then the port as on the wire, the protocol and five zero bytes. A
/// flow-table hit names its service by id; comparing the packet's words with these makes
/// sure the id is of the packet's service even if the LRU recycled the entry under the reader.
pub type ServiceKeyWords = [u64; 3];

/// The [`ServiceKeyWords`] of `key`.
#[inline(always)]
#[must_use]
pub const fn service_key_words(key: &ServiceKey) -> ServiceKeyWords {
    let [a, b] = addr_words(&key.addr);
    let [p0, p1] = key.port_be.to_ne_bytes();
    [
        a,
        b,
        u64::from_ne_bytes([p0, p1, key.protocol, 0, 0, 0, 0, 0]),
    ]
}

/// A service's mutable state, one `u64` of `SERVICE_STATES` (indexed by service id): which
/// bank of its table is live, its flags, and its generation. Changed with one atomic store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceState {
    /// Counts the services that had this id: a flow remembered for an earlier holder of the id
    /// does not match, and is scheduled again.
    pub generation: u32,
    /// [`SERVICE_FLAG_LIVE`], [`SERVICE_FLAG_SOURCE_HASH`], [`SERVICE_FLAG_STANDBY`].
    pub flags: u8,
    /// Which of the [`TABLE_BANKS`] banks (and `TABLES` entries) is live.
    pub bank: u8,
}

impl ServiceState {
    #[inline(always)]
    #[must_use]
    pub const fn pack(self) -> u64 {
        self.generation as u64 | (self.flags as u64) << 32 | (self.bank as u64) << 40
    }

    #[inline(always)]
    #[must_use]
    pub const fn unpack(word: u64) -> Self {
        Self {
            generation: word as u32,
            flags: (word >> 32) as u8,
            bank: (word >> 40) as u8 & (TABLE_BANKS as u8 - 1),
        }
    }

    #[inline(always)]
    #[must_use]
    pub const fn is_live(self) -> bool {
        self.flags & SERVICE_FLAG_LIVE != 0
    }
}

/// The id holds a service (else the slot is free and its packets are passed).
pub const SERVICE_FLAG_LIVE: u8 = 1;
/// Schedule by the client address alone (IPVS `sh`): a client keeps its backend across
/// connections. Without it, the whole 5-tuple is hashed.
pub const SERVICE_FLAG_SOURCE_HASH: u8 = 2;
/// The director is a standby (`drlb run --standby`, `drlb vip deactivate`): the service's
/// traffic is dropped and counted (`drop_standby`), not forwarded.
pub const SERVICE_FLAG_STANDBY: u8 = 4;

/// Where one bank of a service's Maglev table lies in `MAGLEV`: one `u64` of `TABLES`, indexed
/// by [`table_desc_index`]. Written before the bank goes live, never while it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableDesc {
    /// First `MAGLEV` entry of the bank.
    pub base: u32,
    /// Entries (a prime); 0: no backend in the table, new flows are dropped.
    pub size: u32,
}

impl TableDesc {
    #[inline(always)]
    #[must_use]
    pub const fn pack(self) -> u64 {
        self.base as u64 | (self.size as u64) << 32
    }

    #[inline(always)]
    #[must_use]
    pub const fn unpack(word: u64) -> Self {
        Self {
            base: word as u32,
            size: (word >> 32) as u32,
        }
    }
}

/// Index in `TABLES` of a bank of a service's table.
#[inline(always)]
#[must_use]
pub const fn table_desc_index(service_id: u32, bank: u8) -> u32 {
    service_id * TABLE_BANKS + bank as u32
}

/// Where frames for a backend go, one `u64` of `BACKENDS` (indexed by [`backend_index`]):
/// the backend's MAC and the egress slot, so one atomic store replaces it whole. 0 means "no
/// usable backend here": flows pinned to it are scheduled again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendEntry {
    /// The backend's MAC: the new destination MAC of the frame.
    pub mac: [u8; 6],
    /// Index in `EGRESS_SLOTS` of the interface the frame leaves by.
    pub egress_slot: u8,
    /// [`BACKEND_FLAG_USABLE`].
    pub flags: u8,
}

impl BackendEntry {
    #[inline(always)]
    #[must_use]
    pub const fn pack(self) -> u64 {
        let [a, b, c, d, e, f] = self.mac;
        u64::from_le_bytes([a, b, c, d, e, f, self.egress_slot, self.flags])
    }

    #[inline(always)]
    #[must_use]
    pub const fn unpack(word: u64) -> Self {
        let [a, b, c, d, e, f, egress_slot, flags] = word.to_le_bytes();
        Self {
            mac: [a, b, c, d, e, f],
            egress_slot,
            flags,
        }
    }

    #[inline(always)]
    #[must_use]
    pub const fn is_usable(self) -> bool {
        self.flags & BACKEND_FLAG_USABLE != 0
    }
}

/// The entry holds a backend that may receive traffic.
pub const BACKEND_FLAG_USABLE: u8 = 1;

/// Value of `EGRESS_SLOTS`: an interface frames may leave by, and the source MAC they get. A
/// slot is written once, before any backend names it, and never changed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EgressSlot {
    /// The egress interface. Equal to the ingress interface, the frame leaves with XDP_TX;
    /// else it is redirected through the `EGRESS` devmap.
    pub ifindex: u32,
    /// The interface's MAC: the new source MAC of the frame.
    pub mac: [u8; 6],
    /// For a VLAN on a trunk (`ifindex` is then the parent's): its id, which becomes the VID
    /// of the frame's tag; [`NO_VLAN`] for an untagged interface.
    pub vlan: u16,
}

/// A backend as userspace describes it; the data plane stores it as a [`BackendEntry`] and an
/// [`EgressSlot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The backend's MAC: the new destination MAC of the frame.
    pub dst_mac: [u8; 6],
    /// The egress interface's MAC: the new source MAC of the frame.
    pub src_mac: [u8; 6],
    /// The egress interface (the parent, for a VLAN).
    pub ifindex: u32,
    /// The egress VLAN id, [`NO_VLAN`] for an untagged interface.
    pub vlan: u16,
}

/// A service as the program sees it, assembled from `SERVICES`, `SERVICE_STATES` and `TABLES`
/// (for userspace and tests; the program reads the words one by one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    pub id: u32,
    pub bank: u32,
    /// First `MAGLEV` entry of the live bank's region (both banks: `TABLE_BANKS * table_size`).
    pub table_base: u32,
    /// Entries of one bank (a prime); 0 means "no backend in the table: drop new flows".
    pub table_size: u32,
    /// `SERVICE_FLAG_*` except [`SERVICE_FLAG_LIVE`].
    pub flags: u32,
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

/// Key of the `FLOWS6` LRU map: an IPv6 5-tuple as on the wire. IPv6 flows have a map of their
/// own so that IPv4's key stays 16 bytes (the key is hashed and compared on every hit); the
/// value is the same [`FlowEntry`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey6 {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport_be: u16,
    pub dport_be: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

/// Value of the `FLOWS` map: the backend a flow was given. 8-aligned and read by the program
/// as one word, so a flow entry the kernel recycles under a reader is seen whole or not at all.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowEntry {
    /// The [`backend_index`] of the backend; its service id is `backend / MAX_BACKENDS_PER_SERVICE`.
    pub backend: u32,
    /// The service's [`ServiceState::generation`] when the flow was scheduled.
    pub generation: u32,
}

impl FlowEntry {
    #[inline(always)]
    #[must_use]
    pub const fn service_id(self) -> u32 {
        self.backend / MAX_BACKENDS_PER_SERVICE
    }
}

/// Key of the `FRAGMENTS` LRU map: what identifies an IPv4 datagram's fragments (RFC 791:
/// source, destination, identification, protocol), as on the wire. IPv6 fragments have
/// [`FragmentKey6`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FragmentKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub id_be: u16,
    pub protocol: u8,
    pub _pad: u8,
}

/// Key of the `FRAGMENTS6` LRU map: what identifies an IPv6 datagram's fragments (RFC 8200:
/// source, destination and the Fragment header's 32-bit identification), as on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FragmentKey6 {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub id_be: [u8; 4],
}

/// VIP flags, one `u32` of `VIP_STATES` (indexed by the VIP's id, the value of `VIPS`).
/// [`VIP_FLAG_ACTIVE`]: the program answers ARP (IPv6: neighbour solicitations) for the VIP.
/// Cleared on a standby director,
/// whose services carry [`SERVICE_FLAG_STANDBY`] at the same time so it forwards nothing either.
pub const VIP_FLAG_ACTIVE: u32 = 1;
/// The VIP is also an address of one of the director's interfaces (as on an IPVS director, or
/// added by keepalived's `virtual_ipaddress`): traffic to it that is no service goes to the
/// director's stack (else it is dropped, `drop_no_service`), and while the VIP is standby the
/// program drops ARP requests (`drop_arp_standby`) and neighbour solicitations
/// (`drop_ndp_standby`) for it, so the kernel cannot answer them.
pub const VIP_FLAG_LOCAL: u32 = 2;
/// Most VIPs (every service may have its own).
pub const MAX_VIPS: u32 = MAX_SERVICES;

/// Words of the `VIP_FILTER` bitmap (64 bits each): a bit per hash of an address ([`vip_filter_bit`],
/// [`vip_filter_bit_v6`]), set for every VIP and every service's address. A clear bit says
/// "neither" with one array load, so a packet that is nobody's service skips every hash
/// lookup; a set bit is only a maybe.
pub const VIP_FILTER_WORDS: u32 = 64;
const VIP_FILTER_BITS_LOG2: u32 = 12;
const _: () = assert!(VIP_FILTER_WORDS * 64 == 1 << VIP_FILTER_BITS_LOG2);

/// The `VIP_FILTER` bit of an IPv4 address (as on the wire): a multiplicative hash's top bits.
#[inline(always)]
#[must_use]
pub const fn vip_filter_bit(addr: [u8; 4]) -> u32 {
    u32::from_be_bytes(addr).wrapping_mul(0x9e37_79b1) >> (32 - VIP_FILTER_BITS_LOG2)
}

/// The `VIP_FILTER` bit of an IPv6 address (as on the wire): its four words folded into one,
/// then hashed as an IPv4 address is.
#[inline(always)]
#[must_use]
pub const fn vip_filter_bit_v6(addr: [u8; 16]) -> u32 {
    let [a, b, c, d] = hash::ipv6_words(addr);
    vip_filter_bit((a ^ b ^ c ^ d).to_be_bytes())
}

/// The `VIP_FILTER` bit of a VIP in either family ([`Addr`]: IPv4 mapped), as the program
/// computes it for the packet's family.
#[must_use]
pub const fn vip_filter_bit_of(addr: Addr) -> u32 {
    let mapped = ipv4_mapped([0; 4]);
    let mut i = 0;
    while i < IPV4_MAPPED_PREFIX_LEN {
        if addr[i] != mapped[i] {
            return vip_filter_bit_v6(addr);
        }
        i += 1;
    }
    vip_filter_bit([addr[12], addr[13], addr[14], addr[15]])
}

/// Entries of `VIP_SLOTS`: one per `VIP_FILTER` bit. Slot `b` names one VIP whose address
/// has filter bit `b` (userspace picks the one of lowest id), so most VIPs are found by
/// array reads alone; a VIP that shares its bit with the slot's holder is found in `VIPS`.
pub const VIP_SLOT_COUNT: u32 = VIP_FILTER_WORDS * 64;
/// A `VIP_SLOTS` word that names no VIP: no VIP has that filter bit.
pub const NO_VIP_SLOT: u32 = 0;

/// The `VIP_SLOTS` word naming VIP `id` (ids are below [`MAX_VIPS`], so it never overflows).
#[inline(always)]
#[must_use]
pub const fn vip_slot_word(id: u32) -> u32 {
    id + 1
}

/// The VIP id a `VIP_SLOTS` word names, if any.
#[inline(always)]
#[must_use]
pub const fn vip_of_slot_word(word: u32) -> Option<u32> {
    word.checked_sub(1)
}

/// An [`Addr`] as two native-endian words, its bytes in order: `VIP_ADDRS` (indexed by VIP
/// id) holds VIPs so, and the program compares a packet's address with its slot holder's in
/// two loads.
pub type AddrWords = [u64; 2];

/// The [`AddrWords`] of `addr`.
#[inline(always)]
#[must_use]
pub const fn addr_words(addr: &Addr) -> AddrWords {
    let a = addr;
    [
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    ]
}

/// Userspace's view of a `VIP_STATES` word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vip {
    pub flags: u32,
}

/// Value of the `INTERFACES` array, at [`interface_slot`]: an interface the program serves, a
/// device it is attached to or a VLAN on such a device (a trunk). Written before the program
/// is attached, never after.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Interface {
    /// 0 in an unused entry (no interface has ifindex 0). For a VLAN, the parent's.
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// [`INTERFACE_FLAG_CHECK_CHECKSUMS`].
    pub flags: u8,
    pub _pad: u8,
    /// The VLAN id whose tagged frames are this interface's; [`NO_VLAN`]: untagged frames.
    pub vlan: u16,
    pub _pad2: [u8; 2],
}

/// New flows arriving on the interface have their TCP/UDP checksum looked at: on veth, a
/// sender with tx checksum offload on leaves it unfinished, and XDP forwards it so, to real
/// servers that drop it. Such frames are counted ([`Event::BadChecksum`]), not changed.
pub const INTERFACE_FLAG_CHECK_CHECKSUMS: u8 = 1;

/// A packet and byte counter; kept per CPU, summed by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// The counter of a service or a backend: packets and bytes forwarded, and new connections
/// (flows the program scheduled, i.e. flow-table misses it forwarded: a new 5-tuple, or a flow
/// scheduled again because its backend left or its entry was evicted). Kept per CPU, summed
/// by userspace. `connections` is only touched on a flow-table miss, so a hit costs what a
/// [`Counter`] costs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ForwardCounter {
    pub packets: u64,
    pub bytes: u64,
    pub connections: u64,
}

/// Index in `BACKENDS` and `BACKEND_COUNTERS` of a service's backend. Backend ids are
/// stable while the backend exists, below [`MAX_BACKENDS_PER_SERVICE`]; Maglev table entries
/// hold them.
#[inline(always)]
#[must_use]
pub const fn backend_index(service_id: u32, backend_id: u32) -> u32 {
    service_id * MAX_BACKENDS_PER_SERVICE + backend_id
}

/// Index in `MAGLEV` of a slot of a bank described by `desc`.
#[inline(always)]
#[must_use]
pub const fn table_index(desc: TableDesc, slot: u32) -> u32 {
    desc.base + slot
}

// The layout both sides rely on.
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(core::mem::size_of::<EgressSlot>() == 12);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);
const _: () = assert!(core::mem::size_of::<FlowEntry>() == 8);
const _: () = assert!(core::mem::size_of::<FragmentKey>() == 12);
const _: () = assert!(core::mem::size_of::<FlowKey6>() == 40);
const _: () = assert!(core::mem::size_of::<FragmentKey6>() == 36);
const _: () = assert!(core::mem::align_of::<FlowEntry>() == 8);
const _: () = assert!(core::mem::size_of::<Interface>() == 16);
const _: () = assert!(DEFAULT_INTERFACE_SLOTS.is_power_of_two());
const _: () = assert!(interface_slot(5, NO_VLAN, 255) == 5);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(core::mem::size_of::<ForwardCounter>() == 24);
const _: () = assert!(MAX_BACKENDS_PER_SERVICE.is_power_of_two());
const _: () = assert!(TABLE_BANKS.is_power_of_two());
const _: () = assert!(MAGLEV_BLOCK.is_power_of_two());
const _: () =
    assert!(backend_index(MAX_SERVICES - 1, MAX_BACKENDS_PER_SERVICE - 1) == BACKEND_SLOTS - 1);
// Every interface can have its own egress slot, and a slot number fits a BackendEntry's byte.
const _: () = assert!(MAX_INTERFACES <= u8::MAX as u32 + 1);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], Copy and has no padding (bytemuck::Pod derive checks it).
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::EgressSlot {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowEntry {}
    unsafe impl aya::Pod for super::FragmentKey {}
    unsafe impl aya::Pod for super::FlowKey6 {}
    unsafe impl aya::Pod for super::FragmentKey6 {}
    unsafe impl aya::Pod for super::Interface {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::ForwardCounter {}
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
    fn vip_filter_bit_of_follows_the_family() {
        let v4 = [198, 18, 0, 100];
        assert_eq!(vip_filter_bit_of(ipv4_mapped(v4)), vip_filter_bit(v4));
        let v6 = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00];
        assert_eq!(vip_filter_bit_of(v6), vip_filter_bit_v6(v6));
        assert!(vip_filter_bit_v6(v6) < VIP_FILTER_WORDS * 64);
    }

    #[test]
    fn backend_indices_of_neighbouring_services_do_not_overlap() {
        assert_eq!(
            backend_index(0, MAX_BACKENDS_PER_SERVICE - 1) + 1,
            backend_index(1, 0)
        );
    }

    #[test]
    fn packed_words_round_trip() {
        let state = ServiceState {
            generation: 0xdead_beef,
            flags: SERVICE_FLAG_LIVE | SERVICE_FLAG_STANDBY,
            bank: 1,
        };
        assert_eq!(ServiceState::unpack(state.pack()), state);
        let desc = TableDesc {
            base: 131_074,
            size: 65_537,
        };
        assert_eq!(TableDesc::unpack(desc.pack()), desc);
        let backend = BackendEntry {
            mac: [2, 0, 0, 0, 1, 7],
            egress_slot: 63,
            flags: BACKEND_FLAG_USABLE,
        };
        assert_eq!(BackendEntry::unpack(backend.pack()), backend);
        assert!(!BackendEntry::unpack(0).is_usable());
        assert!(!ServiceState::unpack(0).is_live());
    }

    #[test]
    fn a_flow_entry_names_its_service() {
        let entry = FlowEntry {
            backend: backend_index(5, MAX_BACKENDS_PER_SERVICE - 1),
            generation: 1,
        };
        assert_eq!(entry.service_id(), 5);
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
