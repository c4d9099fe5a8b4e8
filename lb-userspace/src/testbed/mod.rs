//! `drlb testbed up | down`: a throw-away LVS-DR testbed in network namespaces, for users'
//! CI pipelines (test your service behind drlb without a lab).
//!
//! Owns the namespaces named `drlbtb-NAME-*` (a client, a director, real servers `rs1`...
//! and a `switch` holding the bridge), the processes it starts in them (`drlb run` on the
//! director, the pass program's holder on the switch) and the state directory
//! `/run/drlb-testbed/NAME/` (config, logs, the daemon's control socket). It never touches
//! the root namespace's interfaces, addresses or routes.
//!
//! [`plan`] decides names and addresses (pure), [`shell`] runs `ip`/`ethtool` and the detached
//! processes, [`build`] makes a testbed, [`teardown`] removes one, also a half-made one.

mod build;
pub mod plan;
mod shell;
mod teardown;

use std::path::{Path, PathBuf};

pub use self::{
    build::{UpOptions, hold_pass, up},
    plan::{Plan, validate_name},
    teardown::down,
};

/// Where each testbed's state directory lives: `STATE_ROOT/NAME`.
pub const STATE_ROOT: &str = "/run/drlb-testbed";

/// The state directory of testbed `name`.
#[must_use]
pub fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// The state directory `drlb run` uses (its control socket), inside the testbed's.
#[must_use]
pub fn director_state_dir(testbed_state: &Path) -> PathBuf {
    testbed_state.join("director")
}
