//! drlb's control plane: configuration, loading the XDP program, writing its maps, the daemon
//! and the CLI. The `drlb` binary (main.rs) is a thin wrapper around [`cli::main`].
//!
//! Modules by role (each says what it owns and what it may not touch):
//! - [`config`]: the file's schema and validation, egress choice. Pure.
//! - [`director`]: the desired state and how a change becomes map writes.
//! - [`dataplane`]: everything that touches BPF: loading, attaching, typed map access.
//! - [`daemon`]: the run loop and what it drives (control socket, health checks, failover,
//!   conflict monitor).
//! - [`net`]: the wire and the kernel: netlink, ARP frames and sockets, MAC formatting.
//! - [`report`]: what `drlb stats` shows, built from plain data.
//! - [`accounts`]: users and groups from the user database (the control socket's group).
//! - [`maglev`]: the weighted Maglev table, a pure function both [`config`] and [`director`] use.
//! - [`realserver`], [`doctor`]: tools run on other hosts or on demand.
//! - [`import`]: `drlb import keepalived|ipvsadm`, a drlb.toml from an IPVS setup. Pure.
//! - [`testbed`]: `drlb testbed up|down`, a throw-away netns testbed for users' CI.

pub mod accounts;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod director;
pub mod doctor;
pub mod import;
pub mod maglev;
pub mod net;
pub mod realserver;
pub mod report;
pub mod testbed;
