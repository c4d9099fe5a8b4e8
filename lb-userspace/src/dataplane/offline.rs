//! Changes to a pinned data plane while no daemon runs: only what failover needs when drlb is
//! gone (keepalived's notify script making this director a standby), with the same atomic
//! stores, in the same order, as the daemon's `set_active(false)`.

use anyhow::{Context as _, Result};
use aya::maps::MapData;
use lb_common::{SERVICE_FLAG_STANDBY, ServiceState, VIP_FLAG_ACTIVE, map_names};

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
