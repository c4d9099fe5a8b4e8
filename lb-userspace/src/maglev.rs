//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016), as a pure function.
//!
//! The table maps each of `size` slots (a prime) to a backend. Each backend walks its own
//! permutation of the slots, derived from its address only, and claims the next free slot of
//! its permutation when its turn comes. Weighted: every round each backend earns its weight in
//! credit and takes one turn per `max_weight` of credit, so shares follow weights.
//!
//! The result depends only on the set of (address, weight) pairs: backends are sorted by
//! address first, and the hash is lb-common's fixed-seed hash, so two directors with the same
//! backends build the same table, across restarts and hosts.

use std::net::IpAddr;

use lb_common::hash::{flow_hash_v4, flow_hash_v6, ipv6_words};

pub use lb_common::DEFAULT_TABLE_SIZE;

/// Seeds of the two permutation hashes (offset and skip); arbitrary but fixed forever.
const OFFSET_SEED: u16 = 0x6f66; // "of"
const SKIP_SEED: u16 = 0x736b; // "sk"

/// A backend as the table builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightedBackend {
    pub address: IpAddr,
    pub weight: u32,
}

/// Why a table size cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum TableSizeError {
    NotPrime(u32),
    TooSmall(u32),
}

impl std::fmt::Display for TableSizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotPrime(n) => write!(
                f,
                "Maglev table size {n} is not a prime (e.g. 65537 or 655373)"
            ),
            Self::TooSmall(n) => write!(
                f,
                "Maglev table size {n} is too small (at least {MIN_TABLE_SIZE})"
            ),
        }
    }
}

impl std::error::Error for TableSizeError {}

/// Smallest table size accepted: below it shares cannot follow weights usefully.
pub const MIN_TABLE_SIZE: u32 = 7;

pub fn check_table_size(size: u32) -> Result<(), TableSizeError> {
    if size < MIN_TABLE_SIZE {
        return Err(TableSizeError::TooSmall(size));
    }
    if !is_prime(size) {
        return Err(TableSizeError::NotPrime(size));
    }
    Ok(())
}

fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Builds the table: entry `i` is the index, in `backends`, of the backend that owns slot `i`.
/// Backends of weight 0 own no slot; with no weighted backend the table is empty.
///
/// # Panics
/// If `size` fails [`check_table_size`] (callers validate it first).
#[must_use]
pub fn build_table(backends: &[WeightedBackend], size: u32) -> Vec<u32> {
    check_table_size(size).expect("table size validated by the caller");
    // Order-independent: walk backends sorted by address, report indices into the input.
    let mut order: Vec<usize> = (0..backends.len())
        .filter(|&i| backends[i].weight > 0)
        .collect();
    if order.is_empty() {
        return Vec::new();
    }
    order.sort_by_key(|&i| backends[i].address);
    let max_weight = order
        .iter()
        .map(|&i| u64::from(backends[i].weight))
        .max()
        .unwrap_or(1);
    let mut permutations: Vec<Permutation> = order
        .iter()
        .map(|&i| Permutation::new(backends[i].address, size))
        .collect();
    let mut credit = vec![0u64; order.len()];
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0u32;
    while filled < size {
        for (k, &i) in order.iter().enumerate() {
            credit[k] += u64::from(backends[i].weight);
            while credit[k] >= max_weight && filled < size {
                credit[k] -= max_weight;
                // Claim the next free slot in this backend's permutation.
                loop {
                    let slot = permutations[k].next_slot();
                    if table[slot] == u32::MAX {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
            }
            if filled == size {
                break;
            }
        }
    }
    table
}

/// A backend's preference order over the slots: `offset + j * skip (mod size)`, which visits
/// every slot once because `size` is prime and `0 < skip < size`. Walked by adding `skip`
/// (one compare instead of a multiplication and a division per step: the build's hot loop).
struct Permutation {
    /// The slot the walk is at (`offset + j * skip mod size` after `j` steps).
    position: u64,
    skip: u64,
    size: u64,
}

impl Permutation {
    fn new(address: IpAddr, size: u32) -> Self {
        // The address hashed with a seed in the port's place (IPv4 as it always was, so the
        // tables of IPv4 backends stay what they were).
        let hash = |seed: u16| match address {
            IpAddr::V4(v4) => flow_hash_v4(u32::from(v4), 0, seed, 0, 0),
            IpAddr::V6(v6) => flow_hash_v6(ipv6_words(v6.octets()), [0; 4], seed, 0, 0),
        };
        let size = u64::from(size);
        let offset = u64::from(hash(OFFSET_SEED)) % size;
        let skip = u64::from(hash(SKIP_SEED)) % (size - 1) + 1;
        Self {
            position: offset,
            skip,
            size,
        }
    }

    /// The next slot of the walk.
    fn next_slot(&mut self) -> usize {
        let slot = self.position;
        // Both below `size`: one subtraction brings the sum back into range.
        let advanced = self.position + self.skip;
        self.position = if advanced >= self.size {
            advanced - self.size
        } else {
            advanced
        };
        usize::try_from(slot).expect("a slot of an in-memory table")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SIZE: u32 = DEFAULT_TABLE_SIZE;

    #[test]
    fn the_walk_is_the_closed_form_permutation() {
        // The table depends on `offset + j * skip mod size` and nothing else: walking by
        // addition must give exactly that sequence, or tables change across versions.
        for (address, size) in [
            ("198.18.0.11", 7),
            ("198.18.0.12", SIZE),
            ("10.1.2.3", 655_373),
            ("2001:2::11", SIZE),
            ("2001:2::12", 7),
        ] {
            let address: IpAddr = address.parse().unwrap();
            let mut walk = Permutation::new(address, size);
            let (offset, skip) = (walk.position, walk.skip);
            for j in 0..3 * u64::from(size).min(100_000) {
                let closed = (offset + j * skip) % u64::from(size);
                assert_eq!(
                    walk.next_slot() as u64,
                    closed,
                    "{address} size {size} step {j}"
                );
            }
        }
    }

    fn backends(n: usize, weight: impl Fn(usize) -> u32) -> Vec<WeightedBackend> {
        (0..n)
            .map(|i| WeightedBackend {
                address: IpAddr::from((0xc612_0000 + 10 + i as u32).to_be_bytes()),
                weight: weight(i),
            })
            .collect()
    }

    fn shares(table: &[u32], n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        for &b in table {
            counts[b as usize] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / table.len() as f64)
            .collect()
    }

    /// Fraction of slots whose backend (by address) differs between two tables.
    fn moved(
        a: &[u32],
        a_backends: &[WeightedBackend],
        b: &[u32],
        b_backends: &[WeightedBackend],
    ) -> f64 {
        let changed = a
            .iter()
            .zip(b)
            .filter(|(x, y)| a_backends[**x as usize].address != b_backends[**y as usize].address)
            .count();
        changed as f64 / a.len() as f64
    }

    #[test]
    fn sizes_must_be_prime_and_not_tiny() {
        assert_eq!(check_table_size(65_537), Ok(()));
        assert_eq!(check_table_size(655_373), Ok(()));
        assert_eq!(
            check_table_size(65_536),
            Err(TableSizeError::NotPrime(65_536))
        );
        assert_eq!(check_table_size(5), Err(TableSizeError::TooSmall(5)));
    }

    #[test]
    fn every_slot_is_owned_and_zero_weights_own_none() {
        let mut set = backends(5, |_| 1);
        set[2].weight = 0;
        let table = build_table(&set, SIZE);
        assert_eq!(table.len(), SIZE as usize);
        assert!(table.iter().all(|&b| b < 5 && b != 2));
        assert!(build_table(&backends(3, |_| 0), SIZE).is_empty());
        assert!(build_table(&[], SIZE).is_empty());
    }

    #[test]
    fn a_single_backend_owns_everything() {
        assert!(
            build_table(&backends(1, |_| 7), SIZE)
                .iter()
                .all(|&b| b == 0)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Equal weights: every share is within 1 percentage point of 1/N.
        #[test]
        fn equal_weights_share_evenly(n in 1usize..=64) {
            let table = build_table(&backends(n, |_| 1), SIZE);
            for share in shares(&table, n) {
                prop_assert!((share - 1.0 / n as f64).abs() <= 0.01, "share {share} for n={n}");
            }
        }

        /// Shares follow weights within 2 percentage points.
        #[test]
        fn shares_follow_weights(weights in prop::collection::vec(1u32..=100, 1..=20)) {
            let set: Vec<_> = backends(weights.len(), |i| weights[i]);
            let total: u32 = weights.iter().sum();
            let table = build_table(&set, SIZE);
            for (i, share) in shares(&table, set.len()).into_iter().enumerate() {
                let expected = f64::from(weights[i]) / f64::from(total);
                prop_assert!((share - expected).abs() <= 0.02, "backend {i}: share {share}, expected {expected}");
            }
        }

        /// The table depends on the set, not on the order it is given in.
        #[test]
        fn permuted_input_gives_the_same_table(n in 1usize..=30, seed in any::<u64>()) {
            let set = backends(n, |i| 1 + (i as u32 % 4));
            let mut shuffled = set.clone();
            // A deterministic shuffle driven by the seed.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let a = build_table(&set, SIZE);
            let b = build_table(&shuffled, SIZE);
            prop_assert_eq!(moved(&a, &set, &b, &shuffled), 0.0);
        }

        /// Removing one of N equal backends moves its own 1/N of the slots plus at most 1/N
        /// more: bound 2/N (Maglev trades perfect minimal disruption for balance; in practice
        /// the extra is a few percent of 1/N).
        #[test]
        fn removing_one_backend_moves_little(n in 3usize..=50, victim in any::<prop::sample::Index>()) {
            let set = backends(n, |_| 1);
            let victim = victim.index(n);
            let mut smaller = set.clone();
            smaller.remove(victim);
            let moved = moved(&build_table(&set, SIZE), &set, &build_table(&smaller, SIZE), &smaller);
            prop_assert!(moved <= 2.0 / n as f64, "moved {moved} of the table for n={n}");
        }

        /// Adding one backend to N moves at most 2/(N+1) of the slots.
        #[test]
        fn adding_one_backend_moves_little(n in 2usize..=50) {
            let set = backends(n, |_| 1);
            let bigger = backends(n + 1, |_| 1);
            let moved = moved(&build_table(&set, SIZE), &set, &build_table(&bigger, SIZE), &bigger);
            prop_assert!(moved <= 2.0 / (n + 1) as f64, "moved {moved} of the table for n={n}");
        }
    }
}
