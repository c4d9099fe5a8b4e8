//! Benchmark-only programs in an object of their own, never loaded by drlb (`cargo xtask bench`
//! loads them): a traffic generator for BPF_PROG_TEST_RUN's live-frames mode, a sink that
//! counts delivered frames by destination MAC, and the trivial reflector that measures what the
//! testbed itself can forward. Their types and constants are in `lb_common::bench`.

#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    IPPROTO_TCP,
    bench::{
        BACKEND_MAC_PREFIX, GeneratorConfig, IPV4_OFFSET, IPV6_SADDR_LOW_OFFSET, L4_OFFSET,
        L4_OFFSET_V6, MAX_BACKENDS, REFLECTOR_DST_MAC, SINK_OTHER, SINK_SLOTS, flow_source,
        ipv4_checksum, l4_checksum,
    },
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

lb_ebpf::object_boilerplate!();
