//! drlb's control plane: configuration, loading the XDP program, writing its maps, the daemon
//! and the CLI. The `drlb` binary (main.rs) is a thin wrapper around [`cli::main`].

pub mod arping;
pub mod cli;
pub mod config;
pub mod conflict;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod director;
pub mod doctor;
pub mod failover;
pub mod garp;
pub mod health;
pub mod loader;
pub mod maglev;
pub mod netlink;
pub mod realserver;
pub mod stats;
