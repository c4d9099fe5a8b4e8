//! Changes to a pinned data plane while no daemon runs: only what failover needs when drlb is
//! gone (keepalived's notify script making this director a standby), with the same atomic
//! stores, in the same order, as the daemon's `set_active(false)`; and reading the published
//! tables back ([`published_tables`]).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, Map, MapData};
use lb_common::{
    BackendEntry, MAGLEV_BLOCK, MaglevBlock, SERVICE_FLAG_STANDBY, ServiceKey, ServiceState,
    TableDesc, VIP_FLAG_ACTIVE, backend_index, map_names, table_desc_index, table_index,
};

use super::{mmap::Mapped, pins::PinDir};

/// What [`deactivate`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deactivated {
    pub vips: u32,
    pub services: u32,
}

/// Makes the pinned data plane a standby: no ARP answers for its VIPs (first), then no
/// forwarding of their services' traffic (dropped and counted as `drop_standby`).
pub fn deactivate(pins: &PinDir) -> Result<Deactivated> {
    // The maps must be this drlb's before any word is written.
    pins.pinned_entries()?;
    let open = |name: &str, value_size: usize| -> Result<(MapData, Mapped)> {
        let data = MapData::from_pin(pins.map_path(name))
            .with_context(|| format!("opening the pinned map {name}"))?;
        let mapped = Mapped::new(&data, name, value_size)?;
        Ok((data, mapped))
    };
    let (_vip_map, vip_states) = open(map_names::VIP_STATES, size_of::<u32>())?;
    let (_service_map, service_states) = open(map_names::SERVICE_STATES, size_of::<u64>())?;
    let mut done = Deactivated::default();
    for id in 0..vip_states.entries() {
        let flags = vip_states.load_u32(id)?;
        if flags & VIP_FLAG_ACTIVE != 0 {
            vip_states.store_u32(id, flags & !VIP_FLAG_ACTIVE)?;
            done.vips += 1;
        }
    }
    for id in 0..service_states.entries() {
        let mut state = ServiceState::unpack(service_states.load_u64(id)?);
        if state.is_live() && state.flags & SERVICE_FLAG_STANDBY == 0 {
            state.flags |= SERVICE_FLAG_STANDBY;
            service_states.store_u64(id, state.pack())?;
            done.services += 1;
        }
    }
    Ok(done)
}

/// A service as [`published_tables`] names it: address (IPv4-mapped), port, protocol number.
pub type PublishedKey = (lb_common::Addr, u16, u8);

/// The live Maglev table of every live service of a pinned data plane, each slot as the MAC
/// of the backend it sends new flows to (`None`: a backend whose entry is not usable). Read
/// from the maps the program reads, so that directors' tables can be compared where backend
/// ids differ (docs/bgp.md: same backends and weights, same table). Writes nothing.
/// Keyed by (address, port, protocol) of the service.
pub fn published_tables(pins: &PinDir) -> Result<BTreeMap<PublishedKey, Vec<Option<[u8; 6]>>>> {
    pins.pinned_entries()?;
    let open = |name: &str| -> Result<MapData> {
        MapData::from_pin(pins.map_path(name))
            .with_context(|| format!("opening the pinned map {name}"))
    };
    let mapped =
        |data: &MapData, name: &str, value_size: usize| Mapped::new(data, name, value_size);
    let services: HashMap<MapData, ServiceKey, u32> =
        HashMap::try_from(Map::HashMap(open(map_names::SERVICES)?))
            .context("map SERVICES has an unexpected type")?;
    let u64_size = size_of::<u64>();
    let state_map = open(map_names::SERVICE_STATES)?;
    let states = mapped(&state_map, map_names::SERVICE_STATES, u64_size)?;
    let table_map = open(map_names::TABLES)?;
    let tables = mapped(&table_map, map_names::TABLES, u64_size)?;
    let maglev_map = open(map_names::MAGLEV)?;
    let maglev = mapped(&maglev_map, map_names::MAGLEV, size_of::<MaglevBlock>())?;
    let backend_map = open(map_names::BACKENDS)?;
    let backends = mapped(&backend_map, map_names::BACKENDS, u64_size)?;
    let mut published = BTreeMap::new();
    for item in services.iter() {
        let (key, id) = item.context("reading SERVICES failed")?;
        let state = ServiceState::unpack(states.load_u64(id)?);
        if !state.is_live() {
            continue;
        }
        let desc = TableDesc::unpack(tables.load_u64(table_desc_index(id, state.bank))?);
        let slots = (0..desc.size)
            .map(|slot| {
                let index = table_index(desc, slot);
                let backend_id =
                    maglev.load_lane(index / MAGLEV_BLOCK, (index % MAGLEV_BLOCK) as usize)?;
                let entry = BackendEntry::unpack(backends.load_u64(backend_index(id, backend_id))?);
                Ok(entry.is_usable().then_some(entry.mac))
            })
            .collect::<Result<Vec<_>>>()?;
        published.insert((key.addr, u16::from_be(key.port_be), key.protocol), slots);
    }
    Ok(published)
}
