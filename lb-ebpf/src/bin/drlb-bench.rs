//! Benchmark-only programs in an object of their own, never loaded by drlb (`cargo xtask bench`
//! loads them): a traffic generator for BPF_PROG_TEST_RUN's live-frames mode, a sink that
//! counts delivered frames by destination MAC, and the trivial reflector that measures what the
//! testbed itself can forward. Their types and constants are in `lb_common::bench`.

#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_F_NO_COMMON_LRU, xdp_action},
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    FlowEntry, FlowKey, IPPROTO_TCP,
    bench::{
        BACKEND_MAC_PREFIX, GeneratorConfig, IPV4_OFFSET, IPV6_SADDR_LOW_OFFSET, L4_OFFSET,
        L4_OFFSET_V6, MAX_BACKENDS, REFLECTOR_DST_MAC, SINK_OTHER, SINK_SLOTS,
        floor::{
            DECLARED_DIRECT_MASK, DECLARED_ENTRIES, FLOOR_FOUND, FLOOR_INSERTED, FlowSlot,
            direct_mapped_slot,
        },
        flow_source, ipv4_checksum, l4_checksum,
    },
    hash::flow_hash_v4,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

use lb_ebpf::parse::ptr_at;

/// What the generator writes into each frame (one entry, written by userspace before a run).
#[map]
static BENCH_GEN_CONFIG: Array<GeneratorConfig> = Array::with_max_entries(1, 0);

/// The number of the next frame's flow, per CPU (a live-frames run stays on one CPU).
/// Userspace zeroes it before a run, so every run starts with flow 0.
#[map]
static BENCH_GEN_SEQUENCE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Frames the sink saw, per backend number and [`SINK_OTHER`].
#[map]
static BENCH_SINK_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SINK_SLOTS, 0);

/// Turns the template frame into the next flow's frame and sends it (XDP_TX).
#[xdp]
pub fn drlb_bench_gen(ctx: XdpContext) -> u32 {
    generate(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

#[inline(always)]
fn generate(ctx: &XdpContext) -> Option<u32> {
    let config = BENCH_GEN_CONFIG.get(0)?;
    let sequence = BENCH_GEN_SEQUENCE.get_ptr_mut(0)?;
    // SAFETY: this CPU's element, which only this program on this CPU writes, and it cannot be
    // preempted.
    let flow = unsafe {
        let flow = *sequence;
        *sequence = if flow + 1 >= config.flows {
            0
        } else {
            flow + 1
        };
        flow
    };
    let (saddr, sport) = flow_source(config, flow);
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked the bounds; the fields written have alignment 1.
    unsafe {
        (*eth).dst_addr = config.dst_mac;
        (*eth).src_addr = config.src_mac;
    }
    let l4_offset = if config.ipv6 == 0 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, IPV4_OFFSET)?;
        // SAFETY: as above.
        unsafe {
            (*ip).src_addr = saddr.to_be_bytes();
            (*ip).check = ipv4_checksum(config, saddr).to_be_bytes();
        }
        L4_OFFSET
    } else {
        // IPv6 has no header checksum: only the source address's last 4 bytes change.
        let source_low: *mut [u8; 4] = ptr_at(ctx, IPV6_SADDR_LOW_OFFSET)?;
        // SAFETY: as above.
        unsafe { *source_low = saddr.to_be_bytes() };
        L4_OFFSET_V6
    };
    let check = l4_checksum(config, saddr, sport).to_be_bytes();
    if config.protocol == IPPROTO_TCP {
        let tcp: *mut TcpHdr = ptr_at(ctx, l4_offset)?;
        // SAFETY: as above.
        unsafe {
            (*tcp).source = sport.to_be_bytes();
            (*tcp).check = check;
        }
    } else {
        let udp: *mut UdpHdr = ptr_at(ctx, l4_offset)?;
        // SAFETY: as above.
        unsafe {
            (*udp).src = sport.to_be_bytes();
            (*udp).check = check;
        }
    }
    Some(xdp_action::XDP_TX)
}

/// Counts the frame under its destination backend (or [`SINK_OTHER`]) and drops it.
#[xdp]
pub fn drlb_bench_sink(ctx: XdpContext) -> u32 {
    let slot = match ptr_at::<EthHdr>(&ctx, 0) {
        // SAFETY: ptr_at checked the bounds; a MAC has alignment 1.
        Some(eth) => backend_slot(unsafe { &(*eth).dst_addr }),
        None => SINK_OTHER,
    };
    if let Some(counter) = BENCH_SINK_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: this CPU's element; see `generate`.
        unsafe { *counter += 1 };
    }
    xdp_action::XDP_DROP
}

/// The backend number of a benchmark backend's MAC, else [`SINK_OTHER`].
#[inline(always)]
fn backend_slot(mac: &[u8; 6]) -> u32 {
    let p = BACKEND_MAC_PREFIX;
    let number = u32::from(mac[5]);
    if mac[0] == p[0]
        && mac[1] == p[1]
        && mac[2] == p[2]
        && mac[3] == p[3]
        && mac[4] == p[4]
        && number < MAX_BACKENDS
    {
        number
    } else {
        SINK_OTHER
    }
}

/// The limit of the testbed: rewrites only the destination MAC (to backend 0) and sends the
/// frame back with XDP_TX, as a director that did no work at all would.
#[xdp]
pub fn drlb_bench_reflect(ctx: XdpContext) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(&ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: ptr_at checked the bounds; a MAC has alignment 1.
    unsafe { (*eth).dst_addr = REFLECTOR_DST_MAC };
    xdp_action::XDP_TX
}

// The floor maps: declared small (see `floor::DECLARED_ENTRIES`), resized by the cost
// measurement's own instance of the object to the benchmark's flow table.

/// drlb's `FLOWS` as it is: an LRU hash whose CPUs each have their own LRU list.
#[map]
static BENCH_FLOOR_LRU: LruHashMap<FlowKey, FlowEntry> =
    LruHashMap::with_max_entries(DECLARED_ENTRIES, BPF_F_NO_COMMON_LRU);

/// The same with one LRU list for all CPUs.
#[map]
static BENCH_FLOOR_LRU_COMMON: LruHashMap<FlowKey, FlowEntry> =
    LruHashMap::with_max_entries(DECLARED_ENTRIES, 0);

/// An LRU hash with per-CPU values.
#[map]
static BENCH_FLOOR_LRU_PERCPU: LruPerCpuHashMap<FlowKey, FlowEntry> =
    LruPerCpuHashMap::with_max_entries(DECLARED_ENTRIES, 0);

/// A plain hash, preallocated (no BPF_F_NO_PREALLOC): no LRU list, eviction left to userspace.
#[map]
static BENCH_FLOOR_HASH: HashMap<FlowKey, FlowEntry> =
    HashMap::with_max_entries(DECLARED_ENTRIES, 0);

/// A direct-mapped array: a flow's slot is its hash's low bits; a new flow overwrites the slot.
#[map]
static BENCH_FLOOR_DIRECT: Array<FlowSlot> = Array::with_max_entries(DECLARED_ENTRIES, 0);

/// `BENCH_FLOOR_DIRECT`'s entries minus one; the loader sets it with the array's size.
#[unsafe(no_mangle)]
static BENCH_FLOOR_DIRECT_MASK: u32 = DECLARED_DIRECT_MASK;

/// What every floor remembers: the value's content costs nothing, only its size (drlb's).
const FLOOR_ENTRY: FlowEntry = FlowEntry {
    backend: 0,
    generation: 0,
};

/// The frame's flow key, as drlb builds it for an IPv4 TCP/UDP packet, read at the fixed
/// offsets of the benchmark's frames (no VLAN tag, no IP options). drlb's own parsing checks
/// more; a floor does only what the map needs.
#[inline(always)]
fn frame_flow_key(ctx: &XdpContext) -> Option<FlowKey> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, IPV4_OFFSET)?;
    let ports: *const [[u8; 2]; 2] = ptr_at(ctx, L4_OFFSET)?;
    // SAFETY: ptr_at checked the bounds; the fields read have alignment 1.
    unsafe {
        Some(FlowKey {
            saddr: (*ip).src_addr,
            daddr: (*ip).dst_addr,
            // The wire's bytes, as drlb keeps them (network order).
            sport_be: u16::from_ne_bytes((*ports)[0]),
            dport_be: u16::from_ne_bytes((*ports)[1]),
            protocol: (*ip).proto,
            _pad: [0; 3],
        })
    }
}

/// A floor on a hash map: look the frame's key up; on a miss, insert it (flags 0, as drlb).
#[inline(always)]
fn floor_hash(
    ctx: &XdpContext,
    found: impl Fn(&FlowKey) -> bool,
    insert: impl Fn(&FlowKey) -> bool,
) -> u32 {
    let Some(key) = frame_flow_key(ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    if found(&key) {
        FLOOR_FOUND
    } else if insert(&key) {
        FLOOR_INSERTED
    } else {
        xdp_action::XDP_ABORTED
    }
}

#[xdp]
pub fn drlb_bench_floor_lru(ctx: XdpContext) -> u32 {
    floor_hash(
        &ctx,
        |key| BENCH_FLOOR_LRU.get_ptr(key).is_some(),
        |key| BENCH_FLOOR_LRU.insert(key, &FLOOR_ENTRY, 0).is_ok(),
    )
}

#[xdp]
pub fn drlb_bench_floor_lru_common(ctx: XdpContext) -> u32 {
    floor_hash(
        &ctx,
        |key| BENCH_FLOOR_LRU_COMMON.get_ptr(key).is_some(),
        |key| BENCH_FLOOR_LRU_COMMON.insert(key, &FLOOR_ENTRY, 0).is_ok(),
    )
}

#[xdp]
pub fn drlb_bench_floor_lru_percpu(ctx: XdpContext) -> u32 {
    floor_hash(
        &ctx,
        |key| BENCH_FLOOR_LRU_PERCPU.get_ptr(key).is_some(),
        |key| BENCH_FLOOR_LRU_PERCPU.insert(key, &FLOOR_ENTRY, 0).is_ok(),
    )
}

#[xdp]
pub fn drlb_bench_floor_hash(ctx: XdpContext) -> u32 {
    floor_hash(
        &ctx,
        |key| BENCH_FLOOR_HASH.get_ptr(key).is_some(),
        |key| BENCH_FLOOR_HASH.insert(key, &FLOOR_ENTRY, 0).is_ok(),
    )
}

/// The direct-mapped floor: hash the key (drlb's flow hash), read the slot's key (a cache's
/// lookup: the same cache line as the write), and on a different key write key and entry.
#[xdp]
pub fn drlb_bench_floor_direct(ctx: XdpContext) -> u32 {
    let Some(key) = frame_flow_key(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    let hash = flow_hash_v4(
        u32::from_be_bytes(key.saddr),
        u32::from_be_bytes(key.daddr),
        u16::from_be(key.sport_be),
        u16::from_be(key.dport_be),
        key.protocol,
    );
    // SAFETY: a plain read of a constant the loader may have overridden (rodata).
    let mask = unsafe { core::ptr::read_volatile(&raw const BENCH_FLOOR_DIRECT_MASK) };
    let Some(slot) = BENCH_FLOOR_DIRECT.get_ptr_mut(direct_mapped_slot(hash, mask)) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: an element of the array; a benchmark run is the only writer.
    unsafe {
        if (*slot).key == key {
            return FLOOR_FOUND;
        }
        *slot = FlowSlot {
            key,
            entry: FLOOR_ENTRY,
        };
    }
    FLOOR_INSERTED
}

lb_ebpf::object_boilerplate!();
