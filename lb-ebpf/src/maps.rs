//! Every map of the program, sized by lb-common's constants. Userspace fills the lookup maps
//! and reads the counters; the program only writes counters.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use lb_common::{
    Addr, BACKEND_COUNTER_SLOTS, BACKEND_SLOTS, Backend, Counter, Interface, MAX_INTERFACES, MAX_SERVICES, Service,
    ServiceKey, Verdict, Vip,
};

/// (VIP, port, protocol) -> service.
#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Backends of every service, two banks each (see `lb_common::backend_slot`).
#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(BACKEND_SLOTS, 0);

/// VIP -> flags: the addresses the program answers ARP for.
#[map]
pub static VIPS: HashMap<Addr, Vip> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// ifindex -> the interface's MAC, for the interfaces the program is attached to.
#[map]
pub static INTERFACES: HashMap<u32, Interface> = HashMap::with_max_entries(MAX_INTERFACES, 0);

#[map]
pub static SERVICE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static BACKEND_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(BACKEND_COUNTER_SLOTS, 0);

#[map]
pub static VERDICT_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Verdict::COUNT, 0);
