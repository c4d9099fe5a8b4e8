//! Floors of a new flow's cost: programs of the bench object that do only the map work a new
//! flow needs (look the frame's flow key up, miss, remember an entry) in one kind of map each,
//! sized like the benchmark's flow table. Timed with the single-run method beside drlb's new
//! flow (see `cost`), they say how much of drlb's cost the kernel's map alone takes.
//!
//! Each kind gets an instance of the bench object of its own, whose floor map alone is resized
//! (every other floor map keeps its small declared size): a vm-test guest has no memory for
//! several flow-table-sized maps beside drlb's, so one kind is loaded, measured and dropped at
//! a time. Where even one does not fit beside drlb's (a guest: drlb's two flow tables take
//! most of its memory), the floors get the largest power of two that does ([`table_size`]);
//! their rows say the size.

use std::ops::Range;

use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use lb_common::bench::floor::{self, FlowSlot, direct_mapped_entries};
use lb_userspace::dataplane::loader::{self, BENCH_OBJECT};

/// Bytes per entry of a preallocated (LRU) hash of flow keys, rounded up from the kernel's
/// layout: a 48-byte element header, the 16-byte key, the 8-byte value (or, per-CPU, the
/// pointer to the values) and a 16-byte bucket.
const HASH_BYTES_PER_ENTRY: u64 = 128;
/// A per-CPU hash's values: one [`lb_common::FlowEntry`] per possible CPU, per entry.
const PER_CPU_VALUE_BYTES: u64 = 8;
/// One floor map may take at most this share (1/n) of the memory available when the floors
/// start: the kernel frees a dropped map asynchronously, so the previous kind's may still
/// hold its memory while the next is made.
const AVAILABLE_MEMORY_SHARE: u64 = 2;
/// The smallest flow table a floor is given (as declared in the object).
const MIN_TABLE_SIZE: u32 = floor::DECLARED_ENTRIES;

/// The map a floor program inserts into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Floor {
    /// drlb's `FLOWS` as it is: an LRU hash, BPF_F_NO_COMMON_LRU.
    LruNoCommon,
    /// An LRU hash with one LRU list for all CPUs.
    LruCommon,
    /// An LRU hash with per-CPU values.
    LruPerCpu,
    /// A plain preallocated hash (eviction would be userspace's).
    Hash,
    /// A direct-mapped array indexed by the flow hash.
    DirectMapped,
}

impl Floor {
    pub const ALL: [Self; 5] = [
        Self::LruNoCommon,
        Self::LruCommon,
        Self::LruPerCpu,
        Self::Hash,
        Self::DirectMapped,
    ];

    #[must_use]
    pub const fn program(self) -> &'static str {
        match self {
            Self::LruNoCommon => floor::LRU_PROGRAM,
            Self::LruCommon => floor::LRU_COMMON_PROGRAM,
            Self::LruPerCpu => floor::LRU_PERCPU_PROGRAM,
            Self::Hash => floor::HASH_PROGRAM,
            Self::DirectMapped => floor::DIRECT_PROGRAM,
        }
    }

    #[must_use]
    pub const fn map(self) -> &'static str {
        match self {
            Self::LruNoCommon => floor::LRU_MAP,
            Self::LruCommon => floor::LRU_COMMON_MAP,
            Self::LruPerCpu => floor::LRU_PERCPU_MAP,
            Self::Hash => floor::HASH_MAP,
            Self::DirectMapped => floor::DIRECT_MAP,
        }
    }

    const fn kind(self) -> &'static str {
        match self {
            Self::LruNoCommon => "LRU hash (no common LRU, as drlb's)",
            Self::LruCommon => "LRU hash (common LRU)",
            Self::LruPerCpu => "per-CPU LRU hash",
            Self::Hash => "plain hash (preallocated)",
            Self::DirectMapped => "direct-mapped array (flow hash, one write)",
        }
    }

    /// Entries of this kind's map for a flow table of `flow_table_size`: the same, but the
    /// direct-mapped array's, a power of two no larger.
    #[must_use]
    pub const fn entries(self, flow_table_size: u32) -> u32 {
        match self {
            Self::DirectMapped => direct_mapped_entries(flow_table_size),
            _ => flow_table_size,
        }
    }

    /// The row's name in the program-cost table.
    #[must_use]
    pub fn what(self, flow_table_size: u32) -> String {
        format!(
            "floor: new-flow insert, {}, {} entries",
            self.kind(),
            entries_label(self.entries(flow_table_size))
        )
    }
}

/// Entries of the control floors: a table that stays in the CPU's caches (an LRU hash of it
/// takes about 1.4 MB), so that the difference to the same kind at the flow table's size is
/// what the size costs (cache and TLB misses), and the rest what the map's code costs.
pub const CACHE_RESIDENT_TABLE: u32 = 1 << 14;
/// The kinds measured again on [`CACHE_RESIDENT_TABLE`]: drlb's own and the cheapest.
pub const CACHE_RESIDENT_KINDS: [Floor; 2] = [Floor::LruNoCommon, Floor::DirectMapped];

/// The floors measured, one phase each: every kind on a flow table of `table` entries, then
/// the control kinds on [`CACHE_RESIDENT_TABLE`] (where `table` is larger).
#[must_use]
pub fn phases(table: u32) -> Vec<(Floor, u32)> {
    let controls = CACHE_RESIDENT_KINDS
        .iter()
        .filter(|_| table > CACHE_RESIDENT_TABLE)
        .map(|&f| (f, CACHE_RESIDENT_TABLE));
    Floor::ALL
        .iter()
        .map(|&f| (f, table))
        .chain(controls)
        .collect()
}

/// The flow table the floors are sized for: `flow_table_size` (drlb's), unless the largest
/// floor map of that size would take more than its share of `available` bytes; then the
/// largest power of two below it that fits (at least [`MIN_TABLE_SIZE`]).
#[must_use]
pub fn table_size(flow_table_size: u32, available: u64, possible_cpus: u32) -> u32 {
    let per_entry = (HASH_BYTES_PER_ENTRY + PER_CPU_VALUE_BYTES * u64::from(possible_cpus))
        .max(size_of::<FlowSlot>() as u64);
    let budget = available / AVAILABLE_MEMORY_SHARE;
    let fits = |entries: u32| u64::from(entries) * per_entry <= budget;
    if fits(flow_table_size) {
        return flow_table_size;
    }
    let mut entries = direct_mapped_entries(flow_table_size);
    while entries > MIN_TABLE_SIZE && !fits(entries) {
        entries /= 2;
    }
    entries.max(MIN_TABLE_SIZE)
}

/// [`table_size`] for this machine now: its available memory, its possible CPUs.
#[must_use]
pub fn table_size_here(flow_table_size: u32) -> u32 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let available = mem_available(&meminfo).unwrap_or(u64::MAX);
    let possible = loader::cpus().map_or(1, |(_, possible)| possible);
    table_size(flow_table_size, available, possible)
}

/// `MemAvailable` of /proc/meminfo, in bytes.
#[must_use]
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// `2Mi`, `1Ki`, `1000`: map sizes are powers of two, which decimal labels would round.
#[must_use]
pub fn entries_label(entries: u32) -> String {
    const KI: u32 = 1 << 10;
    const MI: u32 = 1 << 20;
    match entries {
        n if n >= MI && n % MI == 0 => format!("{}Mi", n / MI),
        n if n >= KI && n % KI == 0 => format!("{}Ki", n / KI),
        n => n.to_string(),
    }
}

/// The single runs of `phase` (of `phases`): consecutive, near-equal shares of `0..runs`, so
/// that the phases together make every run once.
#[must_use]
pub fn phase_runs(runs: u32, phase: usize, phases: usize) -> Range<u32> {
    let share =
        |p: usize| u32::try_from(u64::from(runs) * p as u64 / phases.max(1) as u64).unwrap_or(runs);
    share(phase)..share(phase + 1)
}

/// One floor program, loaded with its map at its flow-table size. Dropping it frees the map.
pub struct FloorProgram {
    floor: Floor,
    ebpf: Ebpf,
}

impl FloorProgram {
    /// Loads the bench object with `floor`'s map sized for `flow_table_size` flows, and its
    /// program (verified, unattached).
    #[must_use]
    pub fn load(floor: Floor, flow_table_size: u32) -> Self {
        let entries = floor.entries(flow_table_size);
        let mask = direct_mapped_entries(flow_table_size) - 1;
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(floor.map(), entries);
        if floor == Floor::DirectMapped {
            loader.override_global(floor::DIRECT_MASK_GLOBAL, &mask, true);
        }
        let ebpf = loader.load(BENCH_OBJECT).unwrap_or_else(|e| {
            panic!(
                "creating the bench object's maps with {} of {entries} entries: {e}",
                floor.map()
            )
        });
        let mut program = Self { floor, ebpf };
        program
            .xdp()
            .load()
            .unwrap_or_else(|e| panic!("the kernel refused {}: {e}", floor.program()));
        program
    }

    #[must_use]
    pub const fn floor(&self) -> Floor {
        self.floor
    }

    pub fn xdp(&mut self) -> &mut Xdp {
        let name = self.floor.program();
        self.ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("the bench object has no program {name}"))
            .try_into()
            .unwrap_or_else(|e| panic!("{name} is not an XDP program: {e}"))
    }

    /// One run on `frame`: the XDP action ([`floor::FLOOR_INSERTED`] for a new flow) and the
    /// kernel's time for it in ns.
    pub fn run(&mut self, frame: &[u8]) -> (u32, f64) {
        let result = self
            .xdp()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..TestRunOptions::new()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {:?} failed: {e}", self.floor));
        (result.return_value, result.duration.as_nanos() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_name_the_map_and_its_size() {
        assert_eq!(
            Floor::LruNoCommon.what(1 << 21),
            "floor: new-flow insert, LRU hash (no common LRU, as drlb's), 2Mi entries"
        );
        assert_eq!(
            Floor::DirectMapped.what(3_000_000),
            "floor: new-flow insert, direct-mapped array (flow hash, one write), 2Mi entries"
        );
        assert_eq!(entries_label(1 << 22), "4Mi");
        assert_eq!(entries_label(1024), "1Ki");
        assert_eq!(entries_label(1000), "1000");
    }

    #[test]
    fn floors_get_the_flow_table_where_memory_allows() {
        const GIB: u64 = 1 << 30;
        // The bench host: 2 CPUs, 20 GiB available: drlb's 2Mi table.
        assert_eq!(table_size(1 << 21, 20 * GIB, 2), 1 << 21);
        assert_eq!(table_size(3_000, 20 * GIB, 2), 3_000);
        // A guest: 4 possible CPUs (160 bytes an entry), 400 MiB available: 200 MiB a map.
        assert_eq!(table_size(1 << 22, 400 << 20, 4), 1 << 20);
        // Never below the declared size.
        assert_eq!(table_size(1 << 22, 0, 4), MIN_TABLE_SIZE);
    }

    #[test]
    fn every_kind_at_the_table_size_then_the_controls() {
        let p = phases(1 << 21);
        assert_eq!(p.len(), Floor::ALL.len() + CACHE_RESIDENT_KINDS.len());
        assert!(p[..Floor::ALL.len()].iter().all(|&(_, n)| n == 1 << 21));
        assert_eq!(
            p[Floor::ALL.len()],
            (Floor::LruNoCommon, CACHE_RESIDENT_TABLE)
        );
        assert_eq!(phases(CACHE_RESIDENT_TABLE).len(), Floor::ALL.len());
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let meminfo = "MemTotal:       24683520 kB\nMemFree:        13187072 kB\n\
                       MemAvailable:   24101888 kB\nBuffers:          123 kB\n";
        assert_eq!(mem_available(meminfo), Some(24_101_888 * 1024));
        assert_eq!(mem_available("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn every_floor_has_its_own_program_and_map() {
        let mut names: Vec<&str> = Floor::ALL
            .iter()
            .flat_map(|f| [f.program(), f.map()])
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 2 * Floor::ALL.len());
    }

    #[test]
    fn phases_share_the_runs_out() {
        let phases = Floor::ALL.len();
        let all: Vec<u32> = (0..phases)
            .flat_map(|p| phase_runs(2_000, p, phases))
            .collect();
        assert_eq!(all, (0..2_000).collect::<Vec<_>>());
        assert_eq!(phase_runs(2_000, 0, phases), 0..400);
        assert_eq!(phase_runs(7, 4, phases), 5..7);
        assert!(phase_runs(3, 0, phases).is_empty());
    }
}
