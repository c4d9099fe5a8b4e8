//! Backend states follow the config: new backends get an id (and fresh counters), removed
//! ones are marked leaving, weights, egress and MACs follow.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::{Context as _, Result, ensure};
use lb_common::MAX_BACKENDS_PER_SERVICE;

use super::{
    health::Health,
    state::{BackendState, Egress, ServiceState},
};
use crate::{
    config::{BackendConfig, ServiceConfig, egress_for},
    dataplane::Dataplane,
    net::addr::addr_of,
    net::netlink::{InterfaceInfo, NeighbourMacs},
};

/// Checks, before anything is written, that a service's new backends can get ids: during the
/// change, backends being removed still hold theirs (their flows are moved only once the new
/// table is live), so current and new backends together must fit the id range.
pub fn check_ids(current: Option<&ServiceState>, config: &ServiceConfig) -> Result<()> {
    let held = current.map_or(0, |s| s.ids_in_use().len());
    let new = config
        .backends
        .iter()
        .filter(|b| current.is_none_or(|s| !s.backends.contains_key(&b.address)))
        .count();
    ensure!(
        held + new <= MAX_BACKENDS_PER_SERVICE as usize,
        "service {}: this change adds {new} backend(s) while {held} hold backend ids until it is \
         complete, more than the {MAX_BACKENDS_PER_SERVICE} a service has: remove backends in one \
         change and add the new ones in the next",
        config.id()
    );
    Ok(())
}

/// Brings a service's backend states in line with its config: new backends get the lowest
/// free id (and fresh counters), removed ones are marked leaving, weights and MACs follow.
pub fn update(
    service: &mut ServiceState,
    config: &ServiceConfig,
    interfaces: &[InterfaceInfo],
    neighbours: &NeighbourMacs,
    dataplane: &mut Dataplane,
    changes: &mut Vec<String>,
) -> Result<()> {
    let name = config.id();
    let wanted: BTreeMap<IpAddr, &BackendConfig> =
        config.backends.iter().map(|b| (b.address, b)).collect();
    for (address, backend) in &mut service.backends {
        if !wanted.contains_key(address) {
            backend.leaving = true;
            changes.push(format!("service {name}: backend {address} removed"));
        }
    }
    let addresses: Vec<_> = interfaces.iter().map(InterfaceInfo::addresses).collect();
    for (address, wanted) in &wanted {
        let configured_mac = wanted.mac.map(|m| m.into_array());
        // Validation made sure every backend has one.
        let egress = egress_for(wanted, &addresses)
            .and_then(|a| interfaces.iter().find(|i| i.name == a.name))
            .map(Egress::of)
            .context("a backend without an egress interface passed validation")?;
        if let Some(backend) = service.backends.get_mut(address) {
            // Removed by a change whose table is not published yet, and added back: it stays,
            // with its id.
            if std::mem::replace(&mut backend.leaving, false) {
                changes.push(format!(
                    "service {name}: backend {address} added back (weight {})",
                    wanted.weight
                ));
            }
            if backend.egress != egress {
                changes.push(format!(
                    "service {name}: backend {address} moves to interface {}",
                    egress.ifindex
                ));
                backend.egress = egress;
                backend.neighbour_mac = neighbours
                    .get(&(egress.ifindex, *address))
                    .copied()
                    .flatten();
            }
            if backend.weight != wanted.weight {
                changes.push(format!(
                    "service {name}: backend {address} weight {} -> {}",
                    backend.weight, wanted.weight
                ));
                backend.weight = wanted.weight;
            }
            backend.configured_mac = configured_mac;
            continue;
        }
        let used: BTreeSet<u32> = service.ids_in_use();
        let id = (0..MAX_BACKENDS_PER_SERVICE)
            .find(|i| !used.contains(i))
            .with_context(|| format!("service {name}: no backend id left for {address}"))?;
        dataplane.claim_backend(service.id, id, addr_of(*address))?;
        service.backends.insert(
            *address,
            BackendState {
                id,
                egress,
                weight: wanted.weight,
                configured_mac,
                neighbour_mac: neighbours
                    .get(&(egress.ifindex, *address))
                    .copied()
                    .flatten(),
                health: Health::new(),
                leaving: false,
                published: None,
            },
        );
        changes.push(format!(
            "service {name}: backend {address} added (weight {})",
            wanted.weight
        ));
    }
    Ok(())
}
