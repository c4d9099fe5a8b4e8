//! The order of map writes that keeps every reference the program follows valid.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use lb_common::Backend;
use tracing::info;

use super::{publish, state::ServiceState};
use crate::{
    config::health_check::OnFailure,
    dataplane::Dataplane,
    maglev::{self, WeightedBackend},
};

/// Writes a service's state to the maps, in the order that keeps every reference valid:
/// backends it may use, then its table, then the removal of backends it may no longer use.
pub fn reconcile(service: &mut ServiceState, dataplane: &mut Dataplane) -> Result<()> {
    stage(service, dataplane)?;
    if service.needs_publish() {
        let started = Instant::now();
        let inputs = service.wanted_inputs();
        let table = build(&inputs, service.layout.size);
        publish(
            service,
            dataplane,
            inputs,
            &table,
            publish::next_sequence(),
            started,
        )?;
    }
    clear_unused(service, dataplane)
}

/// The first step of [`reconcile`], all a change does at once when tables are published later
/// (`Controller::defer_publishes`): the `BACKENDS` words of backends that keep their flows,
/// which the next table may name.
pub fn stage(service: &mut ServiceState, dataplane: &mut Dataplane) -> Result<()> {
    // A failed backend of a draining service stays in BACKENDS (its flows continue) but, like
    // every backend that is not usable, leaves the table.
    let drain = drains(service);
    for backend in service.backends.values_mut() {
        let wanted = backend.keeps_flows(drain).then(|| Backend {
            dst_mac: backend.mac().expect("backends that keep flows have a MAC"),
            src_mac: backend.egress.mac,
            ifindex: backend.egress.xdp_ifindex,
            vlan: backend.egress.vlan,
        });
        if let Some(entry) = wanted.filter(|w| Some(*w) != backend.published) {
            dataplane.set_backend(service.id, backend.id, &entry)?;
            backend.published = Some(entry);
        }
    }
    Ok(())
}

fn drains(service: &ServiceState) -> bool {
    service.config.health_check().on_failure == OnFailure::Drain
}

/// The table of backend ids for `inputs` (from [`ServiceState::wanted_inputs`]): a pure
/// function, run on any thread.
#[must_use]
pub fn build(inputs: &[(IpAddr, u32, u32)], size: u32) -> Vec<u32> {
    let weighted: Vec<WeightedBackend> = inputs
        .iter()
        .map(|&(address, weight, _)| WeightedBackend { address, weight })
        .collect();
    maglev::build_table(&weighted, size)
        .into_iter()
        .map(|i| inputs[i as usize].2)
        .collect()
}

/// Makes `table`, built from `inputs`, the service's live table, and remembers it (with the
/// publish `sequence` of the state it was built from). `started`: when its build began, for
/// the time a publish takes.
pub fn publish(
    service: &mut ServiceState,
    dataplane: &mut Dataplane,
    inputs: Vec<(IpAddr, u32, u32)>,
    table: &[u32],
    sequence: u64,
    started: Instant,
) -> Result<()> {
    // Unknown while written: a failed write leaves the service needing a publish.
    service.table_inputs = None;
    dataplane
        .publish_table(&service.key, service.layout, table)
        .with_context(|| {
            format!(
                "publishing the table of service {} failed",
                service.config.id()
            )
        })?;
    let took: Duration = started.elapsed();
    service.publishes.count += 1;
    service.publishes.nanos += u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    info!(service = %service.config.id(), backends = inputs.len(), "table published");
    service.table_inputs = Some(inputs);
    service.published_layout = Some(service.layout);
    service.published_sequence = sequence;
    Ok(())
}

/// The last step of [`reconcile`]: clears the `BACKENDS` words of backends that may no longer
/// be used and that the live table does not name (their flows are scheduled again).
pub fn clear_unused(service: &mut ServiceState, dataplane: &mut Dataplane) -> Result<()> {
    let drain = drains(service);
    let named = |id: u32, inputs: &Option<Vec<(IpAddr, u32, u32)>>| {
        inputs
            .as_ref()
            .is_some_and(|inputs| inputs.iter().any(|&(_, _, i)| i == id))
    };
    for backend in service.backends.values_mut() {
        if !backend.keeps_flows(drain)
            && backend.published.is_some()
            && !named(backend.id, &service.table_inputs)
        {
            dataplane.remove_backend(service.id, backend.id)?;
            // Only once written: a failed write leaves it to clear again.
            backend.published = None;
        }
    }
    Ok(())
}
