//! Per-CPU counters: no atomics needed, userspace sums the CPUs.

use aya_ebpf::maps::PerCpuArray;
use lb_common::{Counter, Event, ForwardCounter, Verdict};

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

/// A forwarded frame, of a connection scheduled now when `new` (a flow-table miss).
#[inline(always)]
pub fn count_forwarded(service_id: u32, backend_index: u32, bytes: u64, new: bool) {
    add_forwarded(&SERVICE_COUNTERS, service_id, bytes, new);
    add_forwarded(&BACKEND_COUNTERS, backend_index, bytes, new);
}

#[inline(always)]
fn add_forwarded(map: &PerCpuArray<ForwardCounter>, index: u32, bytes: u64, new: bool) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: as in `add`: this CPU's element, written only by this CPU.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
            // A branch, not `+= new as u64`: a flow-table hit then stores nothing more.
            if new {
                (*counter).connections += 1;
            }
        }
    }
}
