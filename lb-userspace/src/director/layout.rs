//! Where each service lives in the maps: its id, its region of the `MAGLEV` array, its flags,
//! and the map sizes a config needs.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result};
use lb_common::{
    DEFAULT_TABLE_SIZE, MAX_SERVICES, SERVICE_FLAG_SOURCE_HASH, SERVICE_FLAG_STANDBY,
    SPARE_SERVICES, TABLE_BANKS,
};

use super::state::ServiceState;
use crate::{
    config::{Config, MIN_FLOW_TABLE_SIZE, Scheduler, ServiceConfig, ServiceId},
    dataplane::{TableLayout, loader::MapSizes},
};

/// The map sizes a config needs: room for its services and [`SPARE_SERVICES`] more that may be
/// added at run time (their tables at the default size), no more: memory follows the config.
#[must_use]
pub fn map_sizes(config: &Config) -> MapSizes {
    let configured_services = u32::try_from(config.services.len()).unwrap_or(u32::MAX);
    let services = configured_services
        .saturating_add(SPARE_SERVICES)
        .min(MAX_SERVICES);
    let configured: u64 = config
        .services
        .iter()
        .map(|s| u64::from(TABLE_BANKS) * u64::from(s.table_size))
        .sum();
    let spare = u64::from(services.saturating_sub(configured_services))
        * u64::from(TABLE_BANKS)
        * u64::from(DEFAULT_TABLE_SIZE);
    let maglev_entries = u32::try_from(configured + spare).unwrap_or(u32::MAX);
    // The IPv6 flow table costs as much memory again (more: its key is 40 bytes): full size
    // only for a config with IPv6 services. One that gains its first IPv6 service at run time
    // has a small IPv6 table until the data plane is made anew (`drlb down`, start).
    let has_ipv6 = config.services.iter().any(|s| s.vip.is_ipv6());
    MapSizes {
        maglev_entries,
        flow_table_size: config.director.flow_table_size,
        ipv6_flow_table_size: if has_ipv6 {
            config.director.flow_table_size
        } else {
            MIN_FLOW_TABLE_SIZE
        },
        services,
        ..MapSizes::default()
    }
}

/// Assigns each wanted service an id and a table region, keeping those of services that
/// stay (unless their table size changes). Fails, before anything changed, when the
/// `MAGLEV` array has no room.
pub fn plan(
    current: &BTreeMap<ServiceId, ServiceState>,
    capacity: u32,
    service_capacity: u32,
    active: &dyn Fn(std::net::IpAddr) -> bool,
    wanted: &BTreeMap<ServiceId, &ServiceConfig>,
) -> Result<BTreeMap<ServiceId, TableLayout>> {
    let mut used_ids: BTreeSet<u32> = BTreeSet::new();
    let mut regions: Vec<(u32, u32)> = Vec::new();
    let mut layouts = BTreeMap::new();
    // Regions of every current service stay reserved until the change is complete (a
    // resized table is written next to its old one).
    for service in current.values() {
        regions.push((service.layout.base, TABLE_BANKS * service.layout.size));
    }
    for (id, config) in wanted {
        if let Some(current) = current.get(id) {
            used_ids.insert(current.id);
            if current.layout.size == config.table_size {
                layouts.insert(
                    *id,
                    TableLayout {
                        flags: service_flags(config.scheduler, active(config.vip)),
                        ..current.layout
                    },
                );
            }
        }
    }
    for (id, config) in wanted {
        if layouts.contains_key(id) {
            continue;
        }
        let service_id = match current.get(id) {
            Some(current) => current.id,
            None => {
                let free = (0..service_capacity)
                    .find(|i| !used_ids.contains(i))
                    .with_context(|| {
                        format!(
                            "no room for service {id}: drlb was started with room for \
                             {service_capacity} services (those of its config and \
                             {SPARE_SERVICES} more); stop drlb, run `drlb down` and start it \
                             again to size its maps for the new config (the flow table is \
                             lost); nothing changed"
                        )
                    })?;
                used_ids.insert(free);
                free
            }
        };
        let len = TABLE_BANKS * config.table_size;
        let base = first_fit(&regions, len, capacity).with_context(|| {
                format!(
                    "no room for the table of service {id} ({len} entries) in the Maglev table memory ({} entries): \
                     stop drlb, run `drlb down` and start it again to size it for the new config (the flow table is lost); nothing changed",
                    capacity
                )
            })?;
        regions.push((base, len));
        layouts.insert(
            *id,
            TableLayout {
                service_id,
                base,
                size: config.table_size,
                flags: service_flags(config.scheduler, active(config.vip)),
            },
        );
    }
    Ok(layouts)
}

/// The `Service` flags of a service: its scheduler's, and `SERVICE_FLAG_STANDBY` while this
/// director is a standby for its VIP.
#[must_use]
pub const fn service_flags(scheduler: Scheduler, active: bool) -> u32 {
    scheduler_flags(scheduler)
        | if active {
            0
        } else {
            SERVICE_FLAG_STANDBY as u32
        }
}

const fn scheduler_flags(scheduler: Scheduler) -> u32 {
    match scheduler {
        Scheduler::Maglev => 0,
        Scheduler::SourceHash => SERVICE_FLAG_SOURCE_HASH as u32,
    }
}

/// The lowest base where `len` entries fit between the `used` (base, len) regions.
fn first_fit(used: &[(u32, u32)], len: u32, capacity: u32) -> Option<u32> {
    let mut used = used.to_vec();
    used.sort_unstable();
    let mut base = 0u32;
    for (start, size) in used {
        if start >= base && start - base >= len {
            return Some(base);
        }
        base = base.max(start + size);
    }
    (capacity.checked_sub(base)? >= len).then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::director::test_support::{WEB, config};

    #[test]
    fn first_fit_finds_gaps_and_the_end() {
        assert_eq!(first_fit(&[], 10, 100), Some(0));
        assert_eq!(first_fit(&[(0, 10), (30, 10)], 20, 100), Some(10));
        assert_eq!(first_fit(&[(0, 10), (30, 10)], 21, 100), Some(40));
        assert_eq!(first_fit(&[(0, 10), (30, 10)], 61, 100), None);
    }

    #[test]
    fn map_sizes_follow_the_config_with_room_for_spare_services() {
        let c = config(WEB);
        let sizes = map_sizes(&c);
        assert_eq!(sizes.services, 1 + SPARE_SERVICES);
        assert_eq!(
            sizes.ipv6_flow_table_size, MIN_FLOW_TABLE_SIZE,
            "no IPv6 service: a small IPv6 flow table"
        );
        let web6 = "[[service]]\nvip = \"2001:2::100\"\nport = 80\nprotocol = \"tcp\"\n\
                    [[service.backend]]\naddress = \"2001:2::11\"\n";
        let dual = config(&format!("{WEB}{web6}"));
        assert_eq!(
            map_sizes(&dual).ipv6_flow_table_size,
            dual.director.flow_table_size,
            "an IPv6 service: the IPv6 flow table as large as IPv4's"
        );
        assert_eq!(
            sizes.maglev_entries,
            (1 + SPARE_SERVICES) * 2 * DEFAULT_TABLE_SIZE
        );
        let big = config(&WEB.replace(
            "protocol = \"tcp\"",
            "protocol = \"tcp\"\ntable_size = 655373",
        ));
        assert_eq!(
            map_sizes(&big).maglev_entries,
            2 * 655_373 + SPARE_SERVICES * 2 * DEFAULT_TABLE_SIZE,
        );
    }
}
