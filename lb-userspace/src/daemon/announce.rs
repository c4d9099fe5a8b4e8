//! Route health injection (`[director] announce`, docs/bgp.md): the VIPs this director can
//! serve ([`Controller::servable_vips`]: active, with a usable backend) are kept as
//! `VIP/32 dev <announce device>` routes (`VIP/128` for IPv6) in the configured table, which the director's BIRD
//! learns and announces by BGP. A VIP's route goes as soon as it cannot be served (standby, no
//! usable backend), all of them when drlb stops (removed first, then the device goes), and,
//! when drlb dies, with the device the kernel deletes as its last descriptor closes.

use std::{collections::BTreeSet, net::IpAddr};

use anyhow::Result;
use tracing::{info, warn};

use crate::{
    config::AnnounceConfig,
    director::Controller,
    net::{
        netlink::Netlink,
        routes::{AnnounceDevice, ROUTE_PROTOCOL, VipRoutes},
    },
};

/// What the routes should change: VIPs to add and to remove.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RouteChanges {
    pub add: Vec<IpAddr>,
    pub remove: Vec<IpAddr>,
}

/// From the routes present to the routes wanted. Pure.
#[must_use]
pub fn route_changes(present: &BTreeSet<IpAddr>, wanted: &BTreeSet<IpAddr>) -> RouteChanges {
    RouteChanges {
        add: wanted.difference(present).copied().collect(),
        remove: present.difference(wanted).copied().collect(),
    }
}

/// The announce device and the routes drlb believes it holds.
pub struct RouteAnnouncer {
    device: AnnounceDevice,
    table: u32,
    /// The VIPs routed now (as last written successfully).
    announced: BTreeSet<IpAddr>,
}

impl RouteAnnouncer {
    /// Creates the announce device; no route yet.
    pub async fn create(netlink: &Netlink, config: &AnnounceConfig) -> Result<Self> {
        let device = AnnounceDevice::create(netlink, &config.device).await?;
        info!(
            device = %device.name,
            table = config.table,
            protocol = ROUTE_PROTOCOL,
            "announcing servable VIPs as routes in table {} (for BIRD)",
            config.table
        );
        Ok(Self {
            device,
            table: config.table,
            announced: BTreeSet::new(),
        })
    }

    /// The VIPs routed now.
    #[must_use]
    pub const fn announced(&self) -> &BTreeSet<IpAddr> {
        &self.announced
    }

    /// Makes the table hold exactly `wanted`. Each route that cannot be written is logged
    /// and tried again on the next call (the daemon calls after every event and every tick).
    pub async fn sync(&mut self, netlink: &Netlink, wanted: &BTreeSet<IpAddr>) {
        if *wanted == self.announced {
            return;
        }
        let routes = VipRoutes {
            netlink,
            device: &self.device,
            table: self.table,
        };
        // What is really there (someone may have deleted a route by hand).
        let present = match routes.present().await {
            Ok(present) => present,
            Err(e) => return warn!("announce: {e:#}"),
        };
        let changes = route_changes(&present, wanted);
        // Withdrawals first: a VIP that cannot be served must go at once.
        for vip in changes.remove {
            match routes.remove(vip).await {
                Ok(()) => {
                    info!(%vip, "VIP withdrawn: its route is removed from table {}", self.table)
                }
                Err(e) => warn!("announce: {e:#}"),
            }
        }
        for vip in changes.add {
            match routes.add(vip).await {
                Ok(()) => info!(%vip, "VIP announced: route added to table {}", self.table),
                Err(e) => warn!("announce: {e:#}"),
            }
        }
        match routes.present().await {
            Ok(present) => self.announced = present,
            Err(e) => warn!("announce: {e:#}"),
        }
    }

    /// Keeps the routes to what `director` can serve.
    pub async fn follow(&mut self, netlink: &Netlink, director: &Controller) {
        self.sync(netlink, &director.servable_vips()).await;
    }

    /// Withdraws every VIP (drlb stops: no health checks follow, so nothing may stay
    /// announced); the device goes when `self` is dropped.
    pub async fn withdraw_all(mut self, netlink: &Netlink) {
        self.sync(netlink, &BTreeSet::new()).await;
        info!(device = %self.device.name, "every VIP withdrawn; the announce device goes with drlb");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(vips: &[u8]) -> BTreeSet<IpAddr> {
        vips.iter()
            .map(|v| IpAddr::from([198, 18, 3, *v]))
            .collect()
    }

    #[test]
    fn both_families_are_host_routes_changed_alike() {
        let v6: IpAddr = "2001:2::100".parse().unwrap();
        let v4: IpAddr = "198.18.0.100".parse().unwrap();
        assert_eq!(
            (
                crate::net::routes::host_prefix(v4),
                crate::net::routes::host_prefix(v6)
            ),
            (32, 128)
        );
        let changes = route_changes(&BTreeSet::from([v4]), &BTreeSet::from([v6]));
        assert_eq!(
            changes,
            RouteChanges {
                add: vec![v6],
                remove: vec![v4],
            }
        );
    }

    #[test]
    fn changes_add_the_missing_and_remove_the_unwanted() {
        let changes = route_changes(&set(&[1, 2]), &set(&[2, 3]));
        assert_eq!(
            changes,
            RouteChanges {
                add: set(&[3]).into_iter().collect(),
                remove: set(&[1]).into_iter().collect(),
            }
        );
        assert_eq!(
            route_changes(&set(&[1]), &set(&[1])),
            RouteChanges::default()
        );
        assert_eq!(
            route_changes(&set(&[1, 2]), &BTreeSet::new()).remove,
            set(&[1, 2]).into_iter().collect::<Vec<_>>()
        );
    }
}
