//! Types and constants of the benchmark programs (`lb-ebpf/src/bench.rs`): the traffic
//! generator, the counting sink and the trivial reflector. drlb itself never uses them; the
//! dataplane benchmark (`cargo xtask bench`) loads them from the same object.
//!
//! The generator runs under BPF_PROG_TEST_RUN in live-frames mode: the kernel hands it a
//! template frame (built by userspace) and sends whatever it returns with XDP_TX. Pages are
//! recycled with whatever the last program wrote into them (a director rewrites the MACs), so
//! the generator writes every field it depends on, for every frame: both MACs, the source
//! address and port of the frame's flow, and the two checksums those change.

/// Name of the traffic generator program.
pub const GENERATOR_PROGRAM: &str = "drlb_bench_gen";
/// Name of the counting sink: counts frames by destination MAC, then drops them.
pub const SINK_PROGRAM: &str = "drlb_bench_sink";
/// Name of the trivial reflector: sets the destination MAC to [`REFLECTOR_DST_MAC`], XDP_TX.
pub const REFLECTOR_PROGRAM: &str = "drlb_bench_reflect";

/// The floor programs: each does only what a new flow's memory needs (look the frame's
/// [`crate::FlowKey`] up, miss, remember a [`crate::FlowEntry`] for it) in one kind of map, so
/// that the benchmark can set drlb's new-flow cost beside what the kernel's map alone costs.
/// Each returns [`FLOOR_INSERTED`] when the key was new and is now in its map,
/// [`FLOOR_FOUND`] when it was there already, XDP_ABORTED when the insert failed or the frame
/// is not an IPv4 TCP/UDP one without options.
pub mod floor {
    /// An LRU hash with BPF_F_NO_COMMON_LRU: drlb's `FLOWS` as it is.
    pub const LRU_PROGRAM: &str = "drlb_bench_floor_lru";
    pub const LRU_MAP: &str = "BENCH_FLOOR_LRU";
    /// An LRU hash with one LRU list shared by the CPUs (flags 0).
    pub const LRU_COMMON_PROGRAM: &str = "drlb_bench_floor_lru_common";
    pub const LRU_COMMON_MAP: &str = "BENCH_FLOOR_LRU_COMMON";
    /// An LRU hash with per-CPU values.
    pub const LRU_PERCPU_PROGRAM: &str = "drlb_bench_floor_lru_percpu";
    pub const LRU_PERCPU_MAP: &str = "BENCH_FLOOR_LRU_PERCPU";
    /// A plain (preallocated) hash: what a flow table aged by userspace would be.
    pub const HASH_PROGRAM: &str = "drlb_bench_floor_hash";
    pub const HASH_MAP: &str = "BENCH_FLOOR_HASH";
    /// A direct-mapped array of [`FlowSlot`]s: slot = [`direct_mapped_slot`], one write.
    pub const DIRECT_PROGRAM: &str = "drlb_bench_floor_direct";
    pub const DIRECT_MAP: &str = "BENCH_FLOOR_DIRECT";
    /// The direct-mapped array's entries minus one (a power of two minus one), a read-only
    /// global the loader sets to match the size it gives the array.
    pub const DIRECT_MASK_GLOBAL: &str = "BENCH_FLOOR_DIRECT_MASK";

    /// Entries every floor map is declared with. The generator and the sink load the same
    /// object, and every map of an object is created when it loads: the floor maps stay this
    /// small there, and only the instance the cost measurement loads gets a flow table's size.
    pub const DECLARED_ENTRIES: u32 = 1024;
    /// The direct-mapped array's mask as declared (for [`DECLARED_ENTRIES`] entries).
    pub const DECLARED_DIRECT_MASK: u32 = DECLARED_ENTRIES - 1;

    /// XDP_TX: the key was new and is now remembered (as drlb forwards a new flow).
    pub const FLOOR_INSERTED: u32 = 3;
    /// XDP_PASS: the key was there already (the frame's flow is not new to this map).
    pub const FLOOR_FOUND: u32 = 2;

    /// One entry of the direct-mapped array: the flow it holds and that flow's entry.
    #[repr(C, align(8))]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
    pub struct FlowSlot {
        pub key: crate::FlowKey,
        pub entry: crate::FlowEntry,
    }

    const _: () = assert!(core::mem::size_of::<FlowSlot>() == 24);
    const _: () = assert!(DECLARED_ENTRIES.is_power_of_two());

    #[cfg(feature = "user")]
    // SAFETY: #[repr(C)], Copy, no padding (the bytemuck::Pod derive checks it).
    unsafe impl aya::Pod for FlowSlot {}

    /// The direct-mapped array's slot of a flow: its hash's low bits (`mask` = entries - 1).
    #[inline(always)]
    #[must_use]
    pub const fn direct_mapped_slot(hash: u32, mask: u32) -> u32 {
        hash & mask
    }

    /// Entries of the direct-mapped array for a flow table of `flows`: the largest power of
    /// two not above it (a mask must select the slot), at least 1.
    #[must_use]
    pub const fn direct_mapped_entries(flows: u32) -> u32 {
        if flows <= 1 {
            1
        } else {
            1 << (31 - flows.leading_zeros())
        }
    }
}

/// Map names of the benchmark programs.
pub mod map_names {
    pub const GENERATOR_CONFIG: &str = "BENCH_GEN_CONFIG";
    pub const GENERATOR_SEQUENCE: &str = "BENCH_GEN_SEQUENCE";
    pub const SINK_COUNTERS: &str = "BENCH_SINK_COUNTERS";
}

/// The first five bytes of every benchmark backend's MAC; the sixth is the backend's number.
pub const BACKEND_MAC_PREFIX: [u8; 5] = [0x02, 0xb0, 0x0d, 0x00, 0x00];
/// Backends the sink counts one by one (numbers `0..MAX_BACKENDS`).
pub const MAX_BACKENDS: u32 = 16;
/// The sink's counter for frames to any other MAC (ARP, gratuitous ARP, strays).
pub const SINK_OTHER: u32 = MAX_BACKENDS;
/// Entries of the sink's counter array.
pub const SINK_SLOTS: u32 = MAX_BACKENDS + 1;

/// The MAC of benchmark backend `n`.
#[inline(always)]
#[must_use]
pub const fn backend_mac(n: u8) -> [u8; 6] {
    let [a, b, c, d, e] = BACKEND_MAC_PREFIX;
    [a, b, c, d, e, n]
}

/// Where the trivial reflector sends every frame: backend 0.
pub const REFLECTOR_DST_MAC: [u8; 6] = backend_mac(0);

/// Flows that share one source port: flow `n` has the source address `saddr_base + n % 65536`
/// and the source port `sport_base + n / 65536`.
pub const FLOWS_PER_SOURCE_PORT: u32 = 1 << 16;
/// Most distinct flows the generator makes (256 source ports' worth).
pub const MAX_FLOWS: u32 = 256 * FLOWS_PER_SOURCE_PORT;

/// Offsets in the generator's template frame: Ethernet, IPv4 without options, TCP or UDP.
pub const IPV4_OFFSET: usize = 14;
pub const L4_OFFSET: usize = IPV4_OFFSET + 20;
/// The same for an IPv6 template (no extension headers): the flow's source address (32 bits,
/// as for IPv4) goes in the last 4 bytes of the IPv6 source address.
pub const IPV6_OFFSET: usize = 14;
pub const IPV6_SADDR_LOW_OFFSET: usize = IPV6_OFFSET + 8 + 12;
pub const L4_OFFSET_V6: usize = IPV6_OFFSET + 40;

/// The one entry of `BENCH_GEN_CONFIG`: what the generator writes into each frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GeneratorConfig {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Distinct flows, 1 to [`MAX_FLOWS`]: frame `k` of a run belongs to flow `k % flows`.
    pub flows: u32,
    /// Flow 0's source address, host order, with its low 16 bits zero.
    pub saddr_base: u32,
    /// Flow 0's source port.
    pub sport_base: u16,
    /// [`crate::IPPROTO_TCP`] or [`crate::IPPROTO_UDP`]: where the L4 checksum is.
    pub protocol: u8,
    /// 1: the template is IPv6 (the source goes at [`IPV6_SADDR_LOW_OFFSET`], L4 at
    /// [`L4_OFFSET_V6`], no IP checksum); 0: IPv4.
    pub ipv6: u8,
    /// One's-complement sum (unfolded) of the template's IPv4 header, as big-endian 16-bit
    /// words, with the checksum and the source address's low 16 bits taken as zero (IPv6: 0).
    pub ip_sum: u32,
    /// The same for the TCP/UDP checksum: pseudo-header, L4 header and payload, with the
    /// checksum, the source address's low 16 bits and the source port taken as zero.
    pub l4_sum: u32,
}

/// The source address (host order) and port of flow `n`.
#[inline(always)]
#[must_use]
pub const fn flow_source(config: &GeneratorConfig, n: u32) -> (u32, u16) {
    (
        config.saddr_base | (n % FLOWS_PER_SOURCE_PORT),
        config.sport_base + (n / FLOWS_PER_SOURCE_PORT) as u16,
    )
}

/// Folds a one's-complement sum of 16-bit words into 16 bits.
#[inline(always)]
#[must_use]
pub const fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The IPv4 header checksum of flow `n`'s frame (host order; write it big-endian).
#[inline(always)]
#[must_use]
pub const fn ipv4_checksum(config: &GeneratorConfig, saddr: u32) -> u16 {
    !fold(config.ip_sum + (saddr & 0xffff))
}

/// The TCP or UDP checksum of a frame with this source address and port (host order). UDP
/// sends a computed 0 as 0xffff (0 means "no checksum").
#[inline(always)]
#[must_use]
pub const fn l4_checksum(config: &GeneratorConfig, saddr: u32, sport: u16) -> u16 {
    let sum = !fold(config.l4_sum + (saddr & 0xffff) + sport as u32);
    if sum == 0 && config.protocol == crate::IPPROTO_UDP {
        0xffff
    } else {
        sum
    }
}

const _: () = assert!(core::mem::size_of::<GeneratorConfig>() == 32);
const _: () = assert!(SINK_OTHER < SINK_SLOTS);
const _: () = assert!(MAX_BACKENDS <= 256);
// The highest flow's source port still fits: sport_base is at most u16::MAX - 255.
const _: () = assert!(MAX_FLOWS / FLOWS_PER_SOURCE_PORT <= 256);

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], Copy, no padding (the bytemuck::Pod derive checks it).
unsafe impl aya::Pod for GeneratorConfig {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IPPROTO_TCP, IPPROTO_UDP};

    fn config(flows: u32, protocol: u8) -> GeneratorConfig {
        GeneratorConfig {
            dst_mac: [0; 6],
            src_mac: [0; 6],
            flows,
            saddr_base: 0xc613_0000,
            sport_base: 10_000,
            protocol,
            ipv6: 0,
            ip_sum: 0,
            l4_sum: 0,
        }
    }

    #[test]
    fn flows_differ_in_address_then_port() {
        let c = config(1 << 20, IPPROTO_TCP);
        assert_eq!(flow_source(&c, 0), (0xc613_0000, 10_000));
        assert_eq!(flow_source(&c, 0xffff), (0xc613_ffff, 10_000));
        assert_eq!(flow_source(&c, 0x1_0000), (0xc613_0000, 10_001));
        assert_eq!(flow_source(&c, MAX_FLOWS - 1), (0xc613_ffff, 10_255));
    }

    #[test]
    fn direct_mapped_array_is_a_power_of_two_within_the_table() {
        use floor::{direct_mapped_entries, direct_mapped_slot};
        assert_eq!(direct_mapped_entries(0), 1);
        assert_eq!(direct_mapped_entries(1), 1);
        assert_eq!(direct_mapped_entries(1 << 21), 1 << 21);
        assert_eq!(direct_mapped_entries((1 << 21) + 1), 1 << 21);
        assert_eq!(direct_mapped_entries(3_000_000), 1 << 21);
        assert_eq!(direct_mapped_entries(u32::MAX), 1 << 31);
        assert_eq!(direct_mapped_slot(0xdead_beef, (1 << 21) - 1), 0x0d_beef);
    }

    #[test]
    fn fold_carries_twice() {
        assert_eq!(fold(0x0001_ffff), 0x0001);
        assert_eq!(fold(0xffff_ffff), 0xffff);
    }

    #[test]
    fn udp_never_sends_a_zero_checksum() {
        // A sum that folds to 0xffff complements to 0.
        let mut c = config(1, IPPROTO_UDP);
        c.l4_sum = 0xffff;
        assert_eq!(l4_checksum(&c, 0, 0), 0xffff);
        c.protocol = IPPROTO_TCP;
        assert_eq!(l4_checksum(&c, 0, 0), 0);
    }
}
