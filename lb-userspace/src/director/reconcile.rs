//! The order of map writes that keeps every reference the program follows valid.

use std::{net::Ipv4Addr, time::Instant};

use anyhow::{Context as _, Result};
use lb_common::Backend;
use tracing::info;

use super::state::ServiceState;
use crate::{
    config::health_check::OnFailure,
    dataplane::Dataplane,
    maglev::{self, WeightedBackend},
};

/// Writes a service's state to the maps, in the order that keeps every reference valid:
/// backends it may use, then its table, then the removal of backends it may no longer use.
pub fn reconcile(service: &mut ServiceState, dataplane: &mut Dataplane) -> Result<()> {
    // A failed backend of a draining service stays in BACKENDS (its flows continue) but, like
    // every backend that is not usable, leaves the table.
    let drain = service.config.health_check().on_failure == OnFailure::Drain;
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
    let inputs: Vec<(Ipv4Addr, u32, u32)> = service
        .backends
        .iter()
        .filter(|(_, b)| b.usable() && b.weight > 0)
        .map(|(address, b)| (*address, b.weight, b.id))
        .collect();
    if service.table_inputs.as_ref() != Some(&inputs)
        || service.published_layout != Some(service.layout)
    {
        let started = Instant::now();
        let weighted: Vec<WeightedBackend> = inputs
            .iter()
            .map(|&(address, weight, _)| WeightedBackend { address, weight })
            .collect();
        let table: Vec<u32> = maglev::build_table(&weighted, service.layout.size)
            .into_iter()
            .map(|i| inputs[i as usize].2)
            .collect();
        dataplane
            .publish_table(&service.key, service.layout, &table)
            .with_context(|| {
                format!(
                    "publishing the table of service {} failed",
                    service.config.id()
                )
            })?;
        service.publishes.count += 1;
        service.publishes.nanos += u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        info!(service = %service.config.id(), backends = inputs.len(), "table published");
        service.table_inputs = Some(inputs);
        service.published_layout = Some(service.layout);
    }
    for backend in service.backends.values_mut() {
        if !backend.keeps_flows(drain) && backend.published.take().is_some() {
            dataplane.remove_backend(service.id, backend.id)?;
        }
    }
    Ok(())
}
