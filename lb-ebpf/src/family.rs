//! What differs between IPv4 and IPv6 on the forwarding path, and nothing else: the keys the
//! address takes part in (`SERVICES`, `VIPS`, the flow table, the fragment map: IPv4 keeps its
//! 16-byte `FlowKey` in `FLOWS`, IPv6 has `FLOWS6` and `FRAGMENTS6`), its `VIP_FILTER` bit, the
//! flow and source hashes, and the addresses' part of the checksum pseudo-header. Every step of
//! the path (`select`, `fragment`, `checksum`, `icmp`'s relay, `forward`) is written once over
//! [`Family`]; the compiler makes one copy per family, so neither pays for the other.
//!
//! IPv6 keys are built as arrays of words and handed to the maps as their key types: built
//! from bytes, each of an address's 16 bytes would take a register (and an 8-byte stack slot
//! across every helper call), more stack than a BPF frame has.

use lb_common::{
    Addr, AddrWords, FlowEntry, FlowKey, FlowKey6, FragmentKey, FragmentKey6, ServiceKey,
    ServiceKeyWords,
    hash::{flow_hash_v4, flow_hash_v6, source_hash_v4, source_hash_v6},
    ipv4_mapped, vip_filter_bit,
};
use lb_ebpf::parse::{Flow, Fragment, Ipv6, ipv6_words};

use crate::maps::{FLOWS, FLOWS6, FRAGMENTS, FRAGMENTS6};

const WORD_BITS: u32 = 16;
const WORD_MASK: u32 = 0xffff;

/// An address family, implemented by its address type.
pub trait Family: Copy {
    /// `f` of the address as `VIPS` keys it (IPv4: its IPv4-mapped form).
    fn with_vip_key<R>(self, f: impl FnOnce(&Addr) -> R) -> R;
    /// `f` of the `SERVICES` key of (this address, port, protocol).
    fn with_service_key<R>(self, port: u16, protocol: u8, f: impl FnOnce(&ServiceKey) -> R) -> R;
    /// The `SERVICE_KEYS` words of (this address, port, protocol) (see
    /// `lb_common::service_key_words`): the address's words, then port and protocol.
    #[inline(always)]
    fn service_key_words(self, port: u16, protocol: u8) -> ServiceKeyWords {
        let [a, b] = self.addr_words();
        let [p0, p1] = port.to_be_bytes();
        [a, b, tail_word([p0, p1, protocol, 0, 0])]
    }
    /// The address as `VIP_ADDRS` and `SERVICE_KEYS` hold it (see `lb_common::addr_words`;
    /// IPv4: mapped).
    fn addr_words(self) -> AddrWords;
    /// Its `VIP_FILTER` bit.
    fn filter_bit(self) -> u32;
    /// The hash a new flow is scheduled by: the 5-tuple, or the client alone (source hash).
    fn flow_hash(flow: &Flow<Self>) -> u32;
    fn source_hash(saddr: Self) -> u32;
    /// The flow table's key (built once per packet: it is looked up, then maybe inserted).
    type FlowKey;
    fn flow_key(flow: &Flow<Self>) -> Self::FlowKey;
    /// The flow table's entry for the flow, read once.
    fn remembered(key: &Self::FlowKey) -> Option<FlowEntry>;
    /// Remembers the flow's backend (a full table evicts its least recently used flow; a
    /// failed insert only means the next packet is scheduled again).
    fn remember(key: &Self::FlowKey, entry: FlowEntry);
    /// The backend a datagram's first fragment went to, read once.
    fn fragment_of(key: &Fragment<Self>) -> Option<FlowEntry>;
    /// Remembers where a datagram's first fragment went (a failed insert only orphans the
    /// later fragments, which are then counted).
    fn remember_fragment(key: &Fragment<Self>, entry: FlowEntry);
    /// The unfolded one's-complement sum of the source and destination addresses' 16-bit
    /// words, as the TCP/UDP pseudo-header holds them.
    fn address_sum(flow: &Flow<Self>) -> u32;
}

/// One `FlowEntry` behind a map pointer, read whole, once: it is one aligned u64, so an entry
/// the LRU recycles under us is seen whole, as another flow's entry, which the callers' checks
/// (service id, generation) reject.
#[inline(always)]
fn read_entry(entry: *const FlowEntry) -> FlowEntry {
    // SAFETY: the pointer is into the map's value memory, 8-aligned (FlowEntry's alignment).
    unsafe { core::ptr::read_volatile(entry) }
}

#[inline(always)]
fn word_sum(word: u32) -> u32 {
    (word >> WORD_BITS) + (word & WORD_MASK)
}

impl Family for [u8; 4] {
    #[inline(always)]
    fn with_vip_key<R>(self, f: impl FnOnce(&Addr) -> R) -> R {
        f(&ipv4_mapped(self))
    }

    #[inline(always)]
    fn with_service_key<R>(self, port: u16, protocol: u8, f: impl FnOnce(&ServiceKey) -> R) -> R {
        f(&ServiceKey {
            addr: ipv4_mapped(self),
            port_be: port.to_be(),
            protocol,
            _pad: 0,
        })
    }

    #[inline(always)]
    fn addr_words(self) -> AddrWords {
        let [a, b, c, d] = self;
        // The IPv4-mapped form: ten zero bytes, two 0xff, the address.
        [0, u64::from_ne_bytes([0, 0, 0xff, 0xff, a, b, c, d])]
    }

    #[inline(always)]
    fn filter_bit(self) -> u32 {
        vip_filter_bit(self)
    }

    #[inline(always)]
    fn flow_hash(flow: &Flow<Self>) -> u32 {
        flow_hash_v4(
            u32::from_be_bytes(flow.saddr),
            u32::from_be_bytes(flow.daddr),
            flow.sport,
            flow.dport,
            flow.protocol,
        )
    }

    #[inline(always)]
    fn source_hash(saddr: Self) -> u32 {
        source_hash_v4(u32::from_be_bytes(saddr))
    }

    type FlowKey = FlowKey;

    #[inline(always)]
    fn flow_key(flow: &Flow<Self>) -> FlowKey {
        FlowKey {
            saddr: flow.saddr,
            daddr: flow.daddr,
            sport_be: flow.sport.to_be(),
            dport_be: flow.dport.to_be(),
            protocol: flow.protocol,
            _pad: [0; 3],
        }
    }

    #[inline(always)]
    fn remembered(key: &FlowKey) -> Option<FlowEntry> {
        FLOWS.get_ptr(key).map(read_entry)
    }

    #[inline(always)]
    fn remember(key: &FlowKey, entry: FlowEntry) {
        let _ = FLOWS.insert(key, entry, 0);
    }

    #[inline(always)]
    fn fragment_of(key: &Fragment<Self>) -> Option<FlowEntry> {
        FRAGMENTS.get_ptr(fragment_key(key)).map(read_entry)
    }

    #[inline(always)]
    fn remember_fragment(key: &Fragment<Self>, entry: FlowEntry) {
        let _ = FRAGMENTS.insert(fragment_key(key), entry, 0);
    }

    #[inline(always)]
    fn address_sum(flow: &Flow<Self>) -> u32 {
        word_sum(u32::from_be_bytes(flow.saddr)) + word_sum(u32::from_be_bytes(flow.daddr))
    }
}

#[inline(always)]
fn fragment_key(key: &Fragment<[u8; 4]>) -> FragmentKey {
    FragmentKey {
        saddr: key.saddr,
        daddr: key.daddr,
        // IPv4's 16-bit id lies in the first two bytes, as on the wire.
        id_be: u16::from_ne_bytes([key.id[0], key.id[1]]),
        protocol: key.protocol,
        _pad: 0,
    }
}

/// Words whose bytes are a key of type `K` (and maybe unused bytes after it), 8-aligned.
#[repr(C, align(8))]
pub struct KeyWords<const N: usize>([u64; N]);

impl<const N: usize> KeyWords<N> {
    /// The words as the key they spell.
    #[inline(always)]
    fn as_key<K>(&self) -> &K {
        const {
            assert!(core::mem::size_of::<K>() <= N * 8);
            assert!(core::mem::align_of::<K>() <= 8);
        }
        // SAFETY: the words cover all of a K (checked above), are aligned for it, and every
        // key type is plain bytes (Pod).
        unsafe { &*self.0.as_ptr().cast::<K>() }
    }
}

/// A word of key bytes, zero-padded.
#[inline(always)]
fn tail_word(bytes: [u8; 5]) -> u64 {
    let [a, b, c, d, e] = bytes;
    u64::from_ne_bytes([a, b, c, d, e, 0, 0, 0])
}

/// `FlowKey6`: source, destination, ports and protocol (then 3 bytes of padding).
type FlowKey6Words = KeyWords<5>;
const _: () = assert!(core::mem::size_of::<FlowKey6>() == 5 * 8);
/// `FragmentKey6`: source, destination, id (36 bytes).
const _: () = assert!(core::mem::size_of::<FragmentKey6>() <= 5 * 8);
/// `ServiceKey`: address, port, protocol, padding (20 bytes).
const _: () = assert!(core::mem::size_of::<ServiceKey>() <= 3 * 8);

impl Family for Ipv6 {
    #[inline(always)]
    fn with_vip_key<R>(self, f: impl FnOnce(&Addr) -> R) -> R {
        f(KeyWords(self).as_key())
    }

    #[inline(always)]
    fn with_service_key<R>(self, port: u16, protocol: u8, f: impl FnOnce(&ServiceKey) -> R) -> R {
        let [p0, p1] = port.to_be_bytes();
        let key = KeyWords([self[0], self[1], tail_word([p0, p1, protocol, 0, 0])]);
        f(key.as_key())
    }

    #[inline(always)]
    fn addr_words(self) -> AddrWords {
        self
    }

    /// `lb_common::vip_filter_bit_v6`: the four big-endian words folded, hashed as IPv4's.
    #[inline(always)]
    fn filter_bit(self) -> u32 {
        let [a, b, c, d] = ipv6_words(self);
        vip_filter_bit((a ^ b ^ c ^ d).to_be_bytes())
    }

    #[inline(always)]
    fn flow_hash(flow: &Flow<Self>) -> u32 {
        flow_hash_v6(
            ipv6_words(flow.saddr),
            ipv6_words(flow.daddr),
            flow.sport,
            flow.dport,
            flow.protocol,
        )
    }

    #[inline(always)]
    fn source_hash(saddr: Self) -> u32 {
        source_hash_v6(ipv6_words(saddr))
    }

    type FlowKey = FlowKey6Words;

    #[inline(always)]
    fn flow_key(flow: &Flow<Self>) -> FlowKey6Words {
        let [s0, s1] = flow.sport.to_be_bytes();
        let [d0, d1] = flow.dport.to_be_bytes();
        KeyWords([
            flow.saddr[0],
            flow.saddr[1],
            flow.daddr[0],
            flow.daddr[1],
            tail_word([s0, s1, d0, d1, flow.protocol]),
        ])
    }

    #[inline(always)]
    fn remembered(key: &FlowKey6Words) -> Option<FlowEntry> {
        FLOWS6.get_ptr(key.as_key::<FlowKey6>()).map(read_entry)
    }

    #[inline(always)]
    fn remember(key: &FlowKey6Words, entry: FlowEntry) {
        let _ = FLOWS6.insert(key.as_key::<FlowKey6>(), entry, 0);
    }

    #[inline(always)]
    fn fragment_of(key: &Fragment<Self>) -> Option<FlowEntry> {
        FRAGMENTS6
            .get_ptr(fragment_key6(key).as_key::<FragmentKey6>())
            .map(read_entry)
    }

    #[inline(always)]
    fn remember_fragment(key: &Fragment<Self>, entry: FlowEntry) {
        let _ = FRAGMENTS6.insert(fragment_key6(key).as_key::<FragmentKey6>(), entry, 0);
    }

    #[inline(always)]
    fn address_sum(flow: &Flow<Self>) -> u32 {
        let [s0, s1, s2, s3] = ipv6_words(flow.saddr);
        let [d0, d1, d2, d3] = ipv6_words(flow.daddr);
        word_sum(s0)
            + word_sum(s1)
            + word_sum(s2)
            + word_sum(s3)
            + word_sum(d0)
            + word_sum(d1)
            + word_sum(d2)
            + word_sum(d3)
    }
}

#[inline(always)]
fn fragment_key6(key: &Fragment<Ipv6>) -> KeyWords<5> {
    let [a, b, c, d] = key.id;
    KeyWords([
        key.saddr[0],
        key.saddr[1],
        key.daddr[0],
        key.daddr[1],
        tail_word([a, b, c, d, 0]),
    ])
}
