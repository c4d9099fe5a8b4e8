//! drlb's control plane: configuration, loading the XDP program, writing its maps, the daemon
//! and the CLI. The `drlb` binary (main.rs) is a thin wrapper around [`cli::main`].

pub mod config;
pub mod dataplane;
pub mod loader;
