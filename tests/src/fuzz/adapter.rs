//! The one place that writes a [`State`] into the program's maps. The model knows nothing of
//! the map layout; when the layout changes, only [`load_state`] changes with it.

use anyhow::{Context as _, Result, bail, ensure};
use lb_common::{
    Addr, Backend, MAX_BACKENDS_PER_SERVICE, MAX_SERVICES, SERVICE_FLAG_SOURCE_HASH,
    SERVICE_FLAG_STANDBY, ServiceKey, TABLE_BANKS, VIP_FLAG_ACTIVE, VIP_FLAG_LOCAL, Vip,
    ipv4_mapped,
};
use lb_userspace::dataplane::{Dataplane, TableLayout};

use crate::model::{ServiceState, State};

/// The longest table a fuzzed service may have: each service owns a fixed region of
/// `TABLE_BANKS * MAX_TABLE_LEN` entries of MAGLEV.
pub const MAX_TABLE_LEN: u32 = 31;
/// Entries of MAGLEV that hold every service's region.
pub const MAGLEV_ENTRIES: u32 = MAX_SERVICES * TABLE_BANKS * MAX_TABLE_LEN;

fn key(service: &ServiceState) -> ServiceKey {
    ServiceKey {
        addr: addr(service.vip),
        port_be: service.port.to_be(),
        protocol: service.protocol,
        _pad: 0,
    }
}

/// An address as the maps key it: IPv4 mapped, IPv6 as is.
fn addr(ip: std::net::IpAddr) -> Addr {
    match ip {
        std::net::IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

fn layout(service: &ServiceState) -> Result<TableLayout> {
    let len = u32::try_from(service.table.len()).context("a table length fits u32")?;
    ensure!(
        len <= MAX_TABLE_LEN,
        "service {} has a {len}-entry table; the adapter holds at most {MAX_TABLE_LEN}",
        service.id
    );
    let flags = u32::from(
        if service.source_hash {
            SERVICE_FLAG_SOURCE_HASH
        } else {
            0
        } | if service.standby {
            SERVICE_FLAG_STANDBY
        } else {
            0
        },
    );
    Ok(TableLayout {
        service_id: service.id,
        base: service.id * TABLE_BANKS * MAX_TABLE_LEN,
        // An empty table publishes table_size 0; the region's size is then irrelevant.
        size: if len == 0 { MAX_TABLE_LEN } else { len },
        flags,
    })
}

/// Makes the program's maps hold `state`, given that they hold `previous` (`None`: freshly
/// loaded, empty maps). In the daemon's order: backends a table needs, then the table, then
/// the removal of backends nobody may use.
pub fn load_state(
    dataplane: &mut Dataplane,
    previous: Option<&State>,
    state: &State,
) -> Result<()> {
    let empty = State::default();
    let previous = previous.unwrap_or(&empty);
    for (&ifindex, &mac) in &state.interfaces {
        if previous.interfaces.get(&ifindex) != Some(&mac) {
            dataplane.set_interface(ifindex, lb_common::NO_VLAN, mac)?;
        }
    }
    for &ifindex in &state.egress_ifindexes {
        if !previous.egress_ifindexes.contains(&ifindex) {
            dataplane.set_egress(ifindex)?;
        }
    }
    if previous
        .interfaces
        .keys()
        .any(|i| !state.interfaces.contains_key(i))
        || !previous.egress_ifindexes.is_subset(&state.egress_ifindexes)
    {
        bail!("the adapter cannot remove interfaces: keep them for the whole run");
    }
    for (&vip, &active) in &state.vips {
        let local = state.local_vips.contains(&vip);
        if previous.vips.get(&vip) != Some(&active) || previous.local_vips.contains(&vip) != local {
            let flags =
                if active { VIP_FLAG_ACTIVE } else { 0 } | if local { VIP_FLAG_LOCAL } else { 0 };
            dataplane.set_vip(addr(vip), Vip { flags })?;
        }
    }
    for vip in previous.vips.keys().filter(|v| !state.vips.contains_key(v)) {
        dataplane.remove_vip(&addr(*vip))?;
    }
    // Removals first: a service added again under its old key must not be removed after.
    // Only entries that exist are removed (deleting a missing key is an error).
    let kept = |old: &ServiceState| {
        state
            .services
            .iter()
            .any(|s| s.id == old.id && key(s) == key(old))
    };
    for old in previous.services.iter().filter(|old| !kept(old)) {
        dataplane.remove_service(&key(old), old.id)?;
        for id in present_backends(old) {
            dataplane.remove_backend(old.id, id)?;
        }
    }
    for service in &state.services {
        ensure!(
            service.id < MAX_SERVICES,
            "service id {} is too large",
            service.id
        );
        for (&id, target) in &service.backends {
            ensure!(
                id < MAX_BACKENDS_PER_SERVICE,
                "backend id {id} is too large"
            );
            if let Some(t) = target {
                let backend = Backend {
                    dst_mac: t.dst_mac,
                    src_mac: t.src_mac,
                    ifindex: t.ifindex,
                    vlan: lb_common::NO_VLAN,
                };
                dataplane.set_backend(service.id, id, &backend)?;
            }
        }
        dataplane
            .publish_table(&key(service), layout(service)?, &service.table)
            .with_context(|| format!("publishing service {}", service.id))?;
        let before = previous
            .services
            .iter()
            .find(|old| old.id == service.id && kept(old));
        let now: Vec<u32> = present_backends(service).collect();
        for id in before.into_iter().flat_map(present_backends) {
            if !now.contains(&id) {
                dataplane.remove_backend(service.id, id)?;
            }
        }
    }
    Ok(())
}

/// The ids of a service's backends that have a BACKENDS entry.
fn present_backends(service: &ServiceState) -> impl Iterator<Item = u32> + '_ {
    service
        .backends
        .iter()
        .filter(|(_, target)| target.is_some())
        .map(|(&id, _)| id)
}
