//! Builds the XDP program (crate lb-ebpf) with the nightly toolchain and bpf-linker, so that
//! `cargo build` yields a `drlb` binary with the eBPF object embedded.

use std::path::Path;

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let workspace = Path::new(&manifest_dir)
        .parent()
        .context("lb-userspace has no parent dir")?;
    // The program also compiles lb-common's types and hash.
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("lb-common/src").display()
    );
    if which("bpf-linker").is_none() {
        bail!(
            "bpf-linker is not on PATH: run `cargo xtask setup` (it installs bpf-linker and the nightly rust-src)"
        );
    }
    let ebpf_dir = workspace.join("lb-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("workspace path is not UTF-8")?;
    let package = aya_build::Package {
        name: "lb-ebpf",
        root_dir: ebpf_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
        .context("building the XDP program failed: see the warnings above; `cargo xtask setup` installs its toolchain")
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}
