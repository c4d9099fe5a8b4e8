//! The daemon's model of the director: the services and backends it should serve, what it
//! knows about each backend (MAC, health), and how that becomes map contents.
//!
//! Every change, from the config file (start, SIGHUP) or from the CLI, is a new [`Config`]
//! given to [`Controller::apply`]: it is validated and checked for room first, and refused whole
//! if anything is wrong, so no change is ever half-applied. Within a service, `reconcile`
//! orders the map writes so the program never follows a dangling reference: backends are added
//! before the table that names them, and removed after the table that stopped naming them.
//!
//! Files: [`controller`] (the [`Controller`]: config in force, interfaces, active or standby,
//! and `apply`), [`change`] (run-time changes as config edits), [`state`] (what is tracked per
//! service and backend), [`backends`] (backend ids and states follow the config), [`layout`]
//! (service ids, table regions, map sizes), `reconcile` (the order of map writes), [`health`]
//! (rise/fall). It writes maps only through [`crate::dataplane`] and never opens sockets.

pub mod backends;
pub mod change;
pub mod controller;
pub mod health;
pub mod layout;
pub mod publish;
mod reconcile;
pub mod state;

pub use change::{Change, edit_all};
pub use controller::{Controller, SMALL_IPV6_FLOW_TABLE, Switched};
pub use layout::map_sizes;

/// Configs for the host tests of this module's files.
#[cfg(test)]
mod test_support {
    use crate::config::Config;

    /// A config on interface eth0 with the services of `text`.
    pub fn config(text: &str) -> Config {
        Config::parse(&format!("[director]\ninterface = \"eth0\"\n{text}")).unwrap()
    }

    /// One TCP service with one backend.
    pub const WEB: &str = "[[service]]\nvip = \"198.18.0.100\"\nport = 80\nprotocol = \"tcp\"\n\
                           [[service.backend]]\naddress = \"198.18.0.11\"\n";
}
