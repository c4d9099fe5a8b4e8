//! Per-CPU counters: no atomics needed, userspace sums the CPUs.

use aya_ebpf::maps::PerCpuArray;
use lb_common::{Counter, Event, Verdict};

use crate::maps::{BACKEND_COUNTERS, EVENT_COUNTERS, SERVICE_COUNTERS, VERDICT_COUNTERS};

#[inline(always)]
fn add(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: the pointer is to this CPU's element of the map, which only this CPU writes
        // while this program runs (it cannot be preempted).
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count_verdict(verdict: Verdict, bytes: u64) {
    add(&VERDICT_COUNTERS, verdict as u32, bytes);
}

#[inline(always)]
pub fn count_event(event: Event) {
    add(&EVENT_COUNTERS, event as u32, 0);
}

#[inline(always)]
pub fn count_forwarded(service_id: u32, backend_index: u32, bytes: u64) {
    add(&SERVICE_COUNTERS, service_id, bytes);
    add(&BACKEND_COUNTERS, backend_index, bytes);
}
