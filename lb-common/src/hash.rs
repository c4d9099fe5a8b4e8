//! The flow hash: the same function runs in the XDP program and in userspace (tests, tools),
//! so which backend a flow gets is reproducible everywhere.
//!
//! MurmurHash3's 32-bit block and finalisation steps over the 5-tuple: a few multiplies and
//! rotates, cheap in BPF, with full avalanche so nearby addresses and ports spread evenly.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;
const ROUND_ADD: u32 = 0xe654_6b64;
const FMIX1: u32 = 0x85eb_ca6b;
const FMIX2: u32 = 0xc2b2_ae35;
/// Fixed seed: the hash must be the same on every director and across restarts.
pub const FLOW_HASH_SEED: u32 = 0x6472_6c62; // "drlb"

#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(ROUND_ADD)
}

#[inline(always)]
const fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(FMIX1);
    h ^= h >> 13;
    h = h.wrapping_mul(FMIX2);
    h ^ (h >> 16)
}

/// Hash of an IPv4 5-tuple. Addresses and ports are numeric (host order) values.
#[inline(always)]
#[must_use]
pub const fn flow_hash_v4(saddr: u32, daddr: u32, sport: u16, dport: u16, protocol: u8) -> u32 {
    let mut h = FLOW_HASH_SEED;
    h = mix(h, saddr);
    h = mix(h, daddr);
    h = mix(h, ((sport as u32) << 16) | dport as u32);
    h = mix(h, protocol as u32);
    finish(h)
}

/// Hash of a client address alone, for source-hash scheduling.
#[inline(always)]
#[must_use]
pub const fn source_hash_v4(saddr: u32) -> u32 {
    finish(mix(FLOW_HASH_SEED, saddr))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn hash_is_fixed_across_builds_and_hosts() {
        // Changing this value changes which backend every flow goes to after an upgrade, and
        // makes directors of different versions disagree: only ever do it on purpose.
        assert_eq!(
            flow_hash_v4(0xc612_0001, 0xc612_0064, 40000, 8080, 6),
            0x0493_8282
        );
    }

    #[test]
    fn consecutive_source_ports_spread_evenly_over_three_buckets() {
        let mut buckets = [0u32; 3];
        for port in 30000..60000u16 {
            buckets[(flow_hash_v4(0xc612_0001, 0xc612_0064, port, 80, 6) % 3) as usize] += 1;
        }
        for b in buckets {
            assert!((9_500..=10_500).contains(&b), "{buckets:?}");
        }
    }

    proptest! {
        #[test]
        fn every_field_changes_the_hash(s in any::<u32>(), d in any::<u32>(), sp in any::<u16>(), dp in any::<u16>()) {
            let h = flow_hash_v4(s, d, sp, dp, 6);
            prop_assert_ne!(h, flow_hash_v4(s ^ 1, d, sp, dp, 6));
            prop_assert_ne!(h, flow_hash_v4(s, d ^ 1, sp, dp, 6));
            prop_assert_ne!(h, flow_hash_v4(s, d, sp ^ 1, dp, 6));
            prop_assert_ne!(h, flow_hash_v4(s, d, sp, dp ^ 1, 6));
            prop_assert_ne!(h, flow_hash_v4(s, d, sp, dp, 17));
        }
    }
}
