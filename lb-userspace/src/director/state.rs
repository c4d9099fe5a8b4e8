//! What the controller tracks per service and per backend, beside the config: ids, egress, MACs,
//! health, and what the maps hold.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use lb_common::{Backend, ServiceKey};

use super::health::Health;
use crate::{
    config::{ServiceConfig, ServiceId},
    dataplane::{GraceToken, TableLayout},
    net::{addr::addr_of, netlink::InterfaceInfo},
};

/// The interface a backend's frames leave by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Egress {
    /// The interface itself (a VLAN device for a VLAN): where its neighbours are.
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// Where frames leave (the parent of a VLAN) and with which VLAN id.
    pub xdp_ifindex: u32,
    pub vlan: u16,
}

impl Egress {
    #[must_use]
    pub fn of(interface: &InterfaceInfo) -> Self {
        Self {
            ifindex: interface.ifindex,
            mac: interface.mac,
            xdp_ifindex: interface.xdp_ifindex(),
            vlan: interface.vlan_id(),
        }
    }
}

/// A backend as the daemon tracks it.
#[derive(Clone, Debug)]
pub struct BackendState {
    pub id: u32,
    pub egress: Egress,
    pub weight: u32,
    pub configured_mac: Option<[u8; 6]>,
    pub neighbour_mac: Option<[u8; 6]>,
    pub health: Health,
    /// Being removed: out of the table, then out of BACKENDS.
    pub leaving: bool,
    /// What BACKENDS holds for it.
    pub published: Option<Backend>,
}

impl BackendState {
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.configured_mac.or(self.neighbour_mac)
    }

    /// May receive traffic: known MAC, healthy, not leaving. (A drained backend is usable:
    /// its established flows continue.)
    pub fn usable(&self) -> bool {
        !self.leaving && self.health.is_up() && self.mac().is_some()
    }

    /// Keeps its backend-map entry, so its established flows continue: usable, or down while
    /// its service drains failed backends instead of removing them (`on_failure = "drain"`).
    pub fn keeps_flows(&self, drain_on_failure: bool) -> bool {
        self.usable() || (drain_on_failure && !self.leaving && self.mac().is_some())
    }

    pub fn state(&self) -> &'static str {
        if !self.health.is_up() {
            "down"
        } else if self.mac().is_none() {
            "no-mac"
        } else if self.weight == 0 {
            "drained"
        } else {
            "active"
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServiceState {
    pub id: u32,
    pub config: ServiceConfig,
    pub key: ServiceKey,
    pub layout: TableLayout,
    pub backends: BTreeMap<IpAddr, BackendState>,
    /// The (address, weight, id) list the live table was built from.
    pub table_inputs: Option<Vec<(IpAddr, u32, u32)>>,
    pub published_layout: Option<TableLayout>,
    /// Tables published for this service and the time they took (built and written).
    pub publishes: Publishes,
    /// Which holder of the service id this is (a service removed and added again is another):
    /// a table built for an earlier one is never published for this one.
    pub incarnation: u64,
    /// The publish sequence number (`director::publish::next_sequence`) of the live table: a
    /// table built from an older state is not published over it.
    pub published_sequence: u64,
    /// Ids of removed backends that no table names any more, freed once a grace period that
    /// began after the token has passed (a run may still read the bank that named them).
    pub releasing: Vec<(u32, GraceToken)>,
}

impl ServiceState {
    /// The (address, weight, id) list the service's table is to be built from now: usable
    /// backends with a weight.
    #[must_use]
    pub fn wanted_inputs(&self) -> Vec<(IpAddr, u32, u32)> {
        self.backends
            .iter()
            .filter(|(_, b)| b.usable() && b.weight > 0)
            .map(|(address, b)| (*address, b.weight, b.id))
            .collect()
    }

    /// Whether the live table differs from the one the model wants (inputs or layout).
    #[must_use]
    pub fn needs_publish(&self) -> bool {
        self.table_inputs.as_ref() != Some(&self.wanted_inputs())
            || self.published_layout != Some(self.layout)
    }

    /// Whether the live table lies in the region the model wants (same base and size): only
    /// then may a table be published later, by another thread's build.
    #[must_use]
    pub fn region_published(&self) -> bool {
        self.published_layout
            .is_some_and(|p| p.base == self.layout.base && p.size == self.layout.size)
    }

    /// Backend ids a new backend may not get: its backends' and those not freed yet.
    #[must_use]
    pub fn ids_in_use(&self) -> BTreeSet<u32> {
        self.backends
            .values()
            .map(|b| b.id)
            .chain(self.releasing.iter().map(|(id, _)| *id))
            .collect()
    }
}

/// How many tables a service published and how long they took, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Publishes {
    pub count: u64,
    pub nanos: u64,
}

pub fn service_key(id: &ServiceId) -> ServiceKey {
    ServiceKey {
        addr: addr_of(id.vip),
        port_be: id.port.to_be(),
        protocol: id.protocol.number(),
        _pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_states_name_why_a_backend_gets_no_new_flows() {
        let mut b = BackendState {
            egress: Egress {
                ifindex: 1,
                mac: [2, 0, 0, 0, 0, 2],
                xdp_ifindex: 1,
                vlan: lb_common::NO_VLAN,
            },
            id: 0,
            weight: 1,
            configured_mac: None,
            neighbour_mac: Some([2, 0, 0, 0, 0, 1]),
            health: Health::new(),
            leaving: false,
            published: None,
        };
        assert_eq!((b.state(), b.usable()), ("active", true));
        b.weight = 0;
        assert_eq!((b.state(), b.usable()), ("drained", true));
        b.neighbour_mac = None;
        assert_eq!((b.state(), b.usable()), ("no-mac", false));
        b.neighbour_mac = Some([2, 0, 0, 0, 0, 1]);
        b.health.record(false, 1, 1);
        assert_eq!((b.state(), b.usable()), ("down", false));
        // Down: its flows go unless the service drains failed backends.
        assert_eq!((b.keeps_flows(false), b.keeps_flows(true)), (false, true));
        b.leaving = true;
        assert!(!b.keeps_flows(true));
    }
}
