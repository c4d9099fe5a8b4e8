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

/// Hash of an IPv6 5-tuple. Addresses are four numeric (host order) words each, most
/// significant first, as `u32::from_be_bytes` reads them off the wire.
#[inline(always)]
#[must_use]
pub const fn flow_hash_v6(
    saddr: [u32; 4],
    daddr: [u32; 4],
    sport: u16,
    dport: u16,
    protocol: u8,
) -> u32 {
    let mut h = FLOW_HASH_SEED;
    h = mix(h, saddr[0]);
    h = mix(h, saddr[1]);
    h = mix(h, saddr[2]);
    h = mix(h, saddr[3]);
    h = mix(h, daddr[0]);
    h = mix(h, daddr[1]);
    h = mix(h, daddr[2]);
    h = mix(h, daddr[3]);
    h = mix(h, ((sport as u32) << 16) | dport as u32);
    h = mix(h, protocol as u32);
    finish(h)
}

/// Hash of an IPv6 client address alone, for source-hash scheduling.
#[inline(always)]
#[must_use]
pub const fn source_hash_v6(saddr: [u32; 4]) -> u32 {
    let mut h = FLOW_HASH_SEED;
    h = mix(h, saddr[0]);
    h = mix(h, saddr[1]);
    h = mix(h, saddr[2]);
    h = mix(h, saddr[3]);
    finish(h)
}

/// An IPv6 address as on the wire, as the four words [`flow_hash_v6`] takes.
#[inline(always)]
#[must_use]
pub const fn ipv6_words(addr: [u8; 16]) -> [u32; 4] {
    let mut words = [0; 4];
    let mut i = 0;
    while i < words.len() {
        let at = i * 4;
        words[i] = u32::from_be_bytes([addr[at], addr[at + 1], addr[at + 2], addr[at + 3]]);
        i += 1;
    }
    words
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
    fn ipv6_hash_is_fixed_across_builds_and_hosts() {
        // As above: the value directors of every version must agree on.
        let client = ipv6_words([0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let vip = ipv6_words([0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(flow_hash_v6(client, vip, 40000, 8080, 6), 0x5136_59d8);
        assert_eq!(source_hash_v6(client), 0x9466_697b);
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

        #[test]
        fn every_ipv6_word_changes_the_hash(s in any::<[u32; 4]>(), d in any::<[u32; 4]>(), i in 0usize..4) {
            let h = flow_hash_v6(s, d, 1, 2, 6);
            let mut s2 = s;
            s2[i] ^= 1;
            let mut d2 = d;
            d2[i] ^= 1;
            prop_assert_ne!(h, flow_hash_v6(s2, d, 1, 2, 6));
            prop_assert_ne!(h, flow_hash_v6(s, d2, 1, 2, 6));
        }
    }
}
