//! Every map of the program, sized by lb-common's constants (userspace resizes `MAGLEV` and
//! `FLOWS` at load). Userspace fills the lookup maps and reads the counters; the program writes
//! only the flow table and the counters.

use aya_ebpf::{
    bindings::BPF_F_NO_COMMON_LRU,
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray},
};
use lb_common::{
    Addr, BACKEND_SLOTS, Backend, Counter, DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAGLEV_ENTRIES,
    FlowEntry, FlowKey, Interface, MAX_INTERFACES, MAX_SERVICES, Service, ServiceKey, Verdict, Vip,
    conflict::{ArpConflict, ArpConflictKey, MAX_ARP_CONFLICTS},
};

/// (VIP, port, protocol) -> service.
#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// The Maglev tables of all services, two banks each (see `lb_common::table_index`): slot ->
/// backend id.
#[map]
pub static MAGLEV: Array<u32> = Array::with_max_entries(DEFAULT_MAGLEV_ENTRIES, 0);

/// `backend_index(service, backend id)` -> where to send the frame. A hash map, so that an
/// update replaces an entry atomically.
#[map]
pub static BACKENDS: HashMap<u32, Backend> = HashMap::with_max_entries(BACKEND_SLOTS, 0);

/// 5-tuple -> the backend the flow was given, so established flows keep their backend when
/// the table changes. One hash table shared by all CPUs, so a flow whose packets arrive on
/// several CPUs still has one backend; BPF_F_NO_COMMON_LRU gives each CPU its own LRU list, so
/// CPUs never contend on a shared one (eviction then works within each CPU's share).
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowEntry> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, BPF_F_NO_COMMON_LRU);

/// Sender MAC -> ARP frames claiming a VIP for that MAC (see `conflict.rs`). LRU, so bounded;
/// per CPU, so counting needs no atomics (userspace sums the CPUs).
#[map]
pub static ARP_CONFLICTS: LruPerCpuHashMap<ArpConflictKey, ArpConflict> =
    LruPerCpuHashMap::with_max_entries(MAX_ARP_CONFLICTS, 0);

/// VIP -> flags: the addresses the program answers ARP for.
#[map]
pub static VIPS: HashMap<Addr, Vip> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// ifindex -> the interface's MAC, for the interfaces the program is attached to.
#[map]
pub static INTERFACES: HashMap<u32, Interface> = HashMap::with_max_entries(MAX_INTERFACES, 0);

/// ifindex -> the same ifindex: the interfaces frames may be redirected to (a devmap is what
/// `bpf_redirect_map` needs; its entries are the director's interfaces).
#[map]
pub static EGRESS: DevMapHash = DevMapHash::with_max_entries(MAX_INTERFACES, 0);

#[map]
pub static SERVICE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static BACKEND_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(BACKEND_SLOTS, 0);

#[map]
pub static VERDICT_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(Verdict::COUNT, 0);
