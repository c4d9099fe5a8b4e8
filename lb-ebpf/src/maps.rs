//! Every map of the program, sized by lb-common's constants (userspace resizes `MAGLEV`,
//! `FLOWS` and `INTERFACES` at load). Userspace fills the lookup maps and reads the counters;
//! the program writes only the flow table and the counters.
//!
//! What userspace changes while the program runs lives in arrays of single words, mapped into
//! userspace (BPF_F_MMAPABLE) and stored there atomically: see lb-common's "How the maps stay
//! consistent" for the rules both sides follow.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_COMMON_LRU},
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray},
};
use lb_common::{
    Addr, AddrWords, BACKEND_SLOTS, Counter, DEFAULT_FLOW_TABLE_SIZE, DEFAULT_INTERFACE_SLOTS,
    DEFAULT_MAGLEV_ENTRIES, EgressSlot, Event, FlowEntry, FlowKey, FlowKey6, ForwardCounter,
    FragmentKey, FragmentKey6, Interface, MAGLEV_BLOCK, MAX_FRAGMENTED_DATAGRAMS, MAX_INTERFACES,
    MAX_SERVICES, MAX_VIPS, MaglevBlock, ServiceKey, ServiceKeyWords, TABLE_BANKS,
    VIP_FILTER_WORDS, VIP_SLOT_COUNT, Verdict,
    conflict::{ArpConflict, ArpConflictKey, MAX_ARP_CONFLICTS},
    interface_slot, maglev_blocks, vip_of_slot_word,
};

use crate::family::Family;

/// (VIP, port, protocol) -> service id. Set when the service is added, never updated.
#[map]
pub static SERVICES: HashMap<ServiceKey, u32> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Service id -> its key's `ServiceKeyWords`: written before the id is made live for the key,
/// unchanged while it is. A flow-table hit checks that the id it names is the packet's
/// service (the LRU may recycle an entry under its reader).
#[map]
pub static SERVICE_KEYS: Array<ServiceKeyWords> = Array::with_max_entries(MAX_SERVICES, 0);

/// Service id -> `ServiceState` word (live bank, flags, generation).
#[map]
pub static SERVICE_STATES: Array<u64> = Array::with_max_entries(MAX_SERVICES, BPF_F_MMAPABLE);

/// `table_desc_index(service id, bank)` -> `TableDesc` word (where that bank lies in MAGLEV).
#[map]
pub static TABLES: Array<u64> = Array::with_max_entries(MAX_SERVICES * TABLE_BANKS, BPF_F_MMAPABLE);

/// The Maglev tables of all services, two banks each: slot -> backend id, in blocks of
/// `MAGLEV_BLOCK` slots (see `maglev_slot`).
#[map]
pub static MAGLEV: Array<MaglevBlock> =
    Array::with_max_entries(maglev_blocks(DEFAULT_MAGLEV_ENTRIES), BPF_F_MMAPABLE);

/// `backend_index(service id, backend id)` -> `BackendEntry` word (MAC, egress slot, usable).
#[map]
pub static BACKENDS: Array<u64> = Array::with_max_entries(BACKEND_SLOTS, BPF_F_MMAPABLE);

/// Egress slot -> the interface and source MAC of frames leaving by it. Written once per slot.
#[map]
pub static EGRESS_SLOTS: Array<EgressSlot> = Array::with_max_entries(MAX_INTERFACES, 0);

/// 5-tuple -> the backend the flow was given, so established flows keep their backend when
/// the table changes. One hash table shared by all CPUs, so a flow whose packets arrive on
/// several CPUs still has one backend; BPF_F_NO_COMMON_LRU gives each CPU its own LRU list, so
/// CPUs never contend on a shared one (eviction then works within each CPU's share; userspace
/// sizes the map for that).
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowEntry> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, BPF_F_NO_COMMON_LRU);

/// (source, destination, IP id, protocol) of a fragmented datagram -> the backend its first
/// fragment was given (`FlowEntry`: backend index, service generation), so its later
/// fragments, which carry no ports, follow it. Bounded by LRU eviction; one list shared by the
/// CPUs, since a datagram's fragments may arrive on several.
#[map]
pub static FRAGMENTS: LruHashMap<FragmentKey, FlowEntry> =
    LruHashMap::with_max_entries(MAX_FRAGMENTED_DATAGRAMS, 0);

/// IPv6 5-tuple -> the backend the flow was given: `FLOWS` for IPv6 (a map of its own so
/// that IPv4's key stays 16 bytes). Sized and flagged as `FLOWS`.
#[map]
pub static FLOWS6: LruHashMap<FlowKey6, FlowEntry> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, BPF_F_NO_COMMON_LRU);

/// (source, destination, Fragment header id) of a fragmented IPv6 datagram -> the backend
/// its first fragment was given: `FRAGMENTS` for IPv6.
#[map]
pub static FRAGMENTS6: LruHashMap<FragmentKey6, FlowEntry> =
    LruHashMap::with_max_entries(MAX_FRAGMENTED_DATAGRAMS, 0);

/// Sender MAC -> ARP frames claiming a VIP for that MAC (see `conflict.rs`). LRU, so bounded;
/// per CPU, so counting needs no atomics (userspace sums the CPUs).
#[map]
pub static ARP_CONFLICTS: LruPerCpuHashMap<ArpConflictKey, ArpConflict> =
    LruPerCpuHashMap::with_max_entries(MAX_ARP_CONFLICTS, 0);

/// VIP -> its id in `VIP_STATES`. Set when the VIP is added, never updated.
#[map]
pub static VIPS: HashMap<Addr, u32> = HashMap::with_max_entries(MAX_VIPS, 0);

/// VIP id -> `VIP_FLAG_*` word (active: ARP answered; local: an address of the director).
#[map]
pub static VIP_STATES: Array<u32> = Array::with_max_entries(MAX_VIPS, BPF_F_MMAPABLE);

/// A bitmap over hashes of addresses (`vip_filter_bit`, `vip_filter_bit_v6`), a bit set for
/// every VIP and every service's address (see `lb_common::VIP_FILTER_WORDS`); userspace stores
/// each word atomically.
#[map]
pub static VIP_FILTER: Array<u64> = Array::with_max_entries(VIP_FILTER_WORDS, BPF_F_MMAPABLE);

/// `VIP_FILTER` bit -> `vip_slot_word` of one VIP with that bit, or `NO_VIP_SLOT` if no VIP
/// has it (see `lb_common::VIP_SLOT_COUNT`): a VIP is found by array reads, not a hash lookup.
#[map]
pub static VIP_SLOTS: Array<u32> = Array::with_max_entries(VIP_SLOT_COUNT, BPF_F_MMAPABLE);

/// VIP id -> its address's `AddrWords`: written before a `VIPS` key or `VIP_SLOTS` word names
/// the id, unchanged while one does.
#[map]
pub static VIP_ADDRS: Array<AddrWords> = Array::with_max_entries(MAX_VIPS, 0);

/// `interface_slot(ifindex, VLAN id, entries - 1)` -> the interface the program serves there
/// (its ifindex, VLAN id and MAC).
/// An array, so the check that a frame is addressed to us costs no hash lookup; userspace
/// sizes it (a power of two) so that its interfaces do not collide. Written before attaching.
#[map]
pub static INTERFACES: Array<Interface> = Array::with_max_entries(DEFAULT_INTERFACE_SLOTS, 0);

/// ifindex -> the same ifindex: the interfaces frames may be redirected to (a devmap is what
/// `bpf_redirect_map` needs; its entries are the director's interfaces).
#[map]
pub static EGRESS: DevMapHash = DevMapHash::with_max_entries(MAX_INTERFACES, 0);

/// Service id -> packets, bytes and new connections forwarded.
#[map]
pub static SERVICE_COUNTERS: PerCpuArray<ForwardCounter> =
    PerCpuArray::with_max_entries(MAX_SERVICES, 0);

/// `backend_index(service id, backend id)` -> packets, bytes and new connections forwarded.
#[map]
pub static BACKEND_COUNTERS: PerCpuArray<ForwardCounter> =
    PerCpuArray::with_max_entries(BACKEND_SLOTS, 0);

#[map]
pub static VERDICT_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(Verdict::COUNT, 0);

#[map]
pub static EVENT_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Event::COUNT, 0);

/// Entries of `INTERFACES` minus one (userspace sets it at load to match the map's size).
#[unsafe(no_mangle)]
static INTERFACE_SLOT_MASK: u32 = DEFAULT_INTERFACE_SLOTS - 1;

/// 0, or a test variant's number (see `Event::VariantForward`). Read-only data: the verifier
/// knows its value and prunes what depends on it.
#[unsafe(no_mangle)]
static PROGRAM_VARIANT: u32 = 0;

/// Not 0: ICMP errors are not relayed (test-only, to show what path-MTU discovery does
/// without the relay). Read-only data: the verifier prunes the relay's check when it is 0.
#[unsafe(no_mangle)]
static ICMP_RELAY_OFF: u32 = 0;

/// Whether the ICMP error relay is on (always, but in a test that turned it off).
#[inline(always)]
pub fn icmp_relay_on() -> bool {
    // SAFETY: a plain read of a constant the loader may have overridden (rodata).
    unsafe { core::ptr::read_volatile(&raw const ICMP_RELAY_OFF) == 0 }
}

/// Whether this program was loaded as a test variant.
#[inline(always)]
pub fn is_variant() -> bool {
    // SAFETY: a plain read of a constant the loader may have overridden (rodata).
    unsafe { core::ptr::read_volatile(&raw const PROGRAM_VARIANT) != 0 }
}

/// The `INTERFACES` entry of (`ifindex`, `vlan`), if the program serves that interface.
#[inline(always)]
pub fn interface(ifindex: u32, vlan: u16) -> Option<Interface> {
    // SAFETY: a plain read of a constant the loader may have overridden (rodata).
    let mask = unsafe { core::ptr::read_volatile(&raw const INTERFACE_SLOT_MASK) };
    let entry = INTERFACES.get(interface_slot(ifindex, vlan, mask))?;
    (entry.ifindex == ifindex && entry.vlan == vlan).then_some(*entry)
}

/// One word of an array that userspace stores atomically, read with one load.
#[inline(always)]
pub fn load_u64(map: &Array<u64>, index: u32) -> Option<u64> {
    let ptr = map.get_ptr(index)?;
    // SAFETY: the pointer is into the map's value memory, 8-byte aligned, and the map outlives
    // the program run; a volatile read is one 64-bit load, never split.
    Some(unsafe { core::ptr::read_volatile(ptr) })
}

#[inline(always)]
pub fn load_u32(map: &Array<u32>, index: u32) -> Option<u32> {
    let ptr = map.get_ptr(index)?;
    // SAFETY: as in `load_u64`, for a 4-byte aligned word.
    Some(unsafe { core::ptr::read_volatile(ptr) })
}

/// Whether `addr` may be a VIP or a service's address: false is certain (its `VIP_FILTER` bit
/// is clear), true needs the `VIPS` (or `SERVICES`) lookup.
#[inline(always)]
pub fn maybe_vip<A: Family>(addr: A) -> bool {
    has_filter_bit(addr.filter_bit())
}

#[inline(always)]
fn has_filter_bit(bit: u32) -> bool {
    load_u64(&VIP_FILTER, bit / 64).is_some_and(|word| word & (1 << (bit % 64)) != 0)
}

/// Whether `addr` is a VIP (in any state).
#[inline(always)]
pub fn is_vip<A: Family>(addr: A) -> bool {
    vip_id(addr).is_some()
}

/// The `VIP_STATES` word of `addr` if it is a VIP, read with one load.
#[inline(always)]
pub fn vip_flags<A: Family>(addr: A) -> Option<u32> {
    load_u32(&VIP_STATES, vip_id(addr)?)
}

/// The id of VIP `addr`, if it is one: its filter bit, then the VIP in that bit's slot, all
/// array reads; `VIPS` is looked up only if another VIP holds the slot (they share the bit).
#[inline(always)]
fn vip_id<A: Family>(addr: A) -> Option<u32> {
    let bit = addr.filter_bit();
    if !has_filter_bit(bit) {
        return None;
    }
    // No VIP has the bit: the address's bit is set for a service's address, not a VIP.
    let holder = vip_of_slot_word(load_u32(&VIP_SLOTS, bit)?)?;
    if holds_address(holder, addr) {
        return Some(holder);
    }
    let id = addr.with_vip_key(|key| VIPS.get_ptr(key))?;
    // SAFETY: the value is a u32 set at insert and never updated; read once.
    Some(unsafe { core::ptr::read_volatile(id) })
}

/// Whether VIP `id`'s `VIP_ADDRS` words are `addr`'s (see the map).
#[inline(always)]
fn holds_address<A: Family>(id: u32, addr: A) -> bool {
    VIP_ADDRS
        .get_ptr(id)
        .is_some_and(|stored| holds_words(stored, addr.addr_words()))
}

/// Whether the `N` words of an array element (`stored`, from `get_ptr`) are `words`, each
/// read once: for values userspace writes only while no reader can be looking at them (see
/// `VIP_ADDRS`, `SERVICE_KEYS`).
#[inline(always)]
pub fn holds_words<const N: usize>(stored: *const [u64; N], words: [u64; N]) -> bool {
    let stored = stored.cast::<u64>();
    (0..N).all(|i| {
        // SAFETY: `stored` points into a map's value memory, 8-aligned, N words long.
        unsafe { core::ptr::read_volatile(stored.add(i)) == words[i] }
    })
}

/// Slot `index` of the `MAGLEV` array (a backend id), read with one load.
#[inline(always)]
pub fn maglev_slot(index: u32) -> Option<u32> {
    let block = MAGLEV.get_ptr(index / MAGLEV_BLOCK)?;
    let lane = (index % MAGLEV_BLOCK) as usize;
    // SAFETY: lane < MAGLEV_BLOCK, so the word lies within the block, which lies in the map's
    // memory; u32-aligned.
    Some(unsafe { core::ptr::read_volatile(block.cast::<u32>().add(lane)) })
}
