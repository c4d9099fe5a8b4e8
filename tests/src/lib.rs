//! Test support for drlb: packet builders for program tests, and a netns/veth topology builder
//! whose guards always remove what they created. Used by the tests in `tests/tests/`, by the
//! demo (`cargo xtask demo`) and by the dataplane benchmark (`bench`, `cargo xtask bench`).

pub mod bench;
pub mod bpffs;
pub mod cli_testbed;
pub mod drlb;
pub mod echo;
pub mod extra;
pub mod fuzz;
pub mod model;
pub mod model_ndp;
pub mod ndp_frames;
pub mod netns;
pub mod packet;
pub mod program;
pub mod testbed;

use std::path::PathBuf;

/// The `drlb` binary under test: `$DRLB_BIN` (set by `cargo xtask test`), else the release build.
#[must_use]
pub fn drlb_binary() -> PathBuf {
    std::env::var_os("DRLB_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/drlb"),
        PathBuf::from,
    )
}

/// Panics unless running as root: the privileged tests load BPF programs and create network
/// namespaces. They are `#[ignore]`d so a plain `cargo test` lists them as not run, and
/// `cargo xtask test` runs them with `--include-ignored`.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root: run it with `cargo xtask test`"
    );
}
