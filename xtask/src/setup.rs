//! `cargo xtask setup`: installs, idempotently, everything the build, tests, demo and
//! benchmarks need.
//! Each step first checks whether its work is already done and says what it did.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::run;

/// Debian packages used by the tests, the demo and the benchmarks, with the command each
/// provides, so a present tool is never reinstalled.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),             // netns, veth, bridges
    ("tcpdump", "tcpdump"),         // asserting what crosses which interface
    ("iputils-arping", "arping"),   // ARP probes of the VIP
    ("ndisc6", "ndisc6"),           // neighbour solicitations for an IPv6 VIP
    ("iputils-ping", "ping"),       // ICMP to the director
    ("curl", "curl"),               // the HTTP client of the end-to-end tests
    ("ethtool", "ethtool"),         // interface statistics
    ("procps", "sysctl"),           // real-server ARP sysctls
    ("nftables", "nft"),            // the nftables DR row of the dataplane benchmark
    ("ipvsadm", "ipvsadm"),         // its IPVS row, on kernels that have IPVS
    ("keepalived", "keepalived"),   // VRRP for the director failover test
    ("bird2", "bird"),              // BGP with ECMP in the scale-out test (tests/tests/ecmp.rs)
    ("hping3", "hping3"),           // the SYN flood of the flood test
    ("systemd", "systemd-analyze"), // checking drlb's unit
    ("prometheus", "promtool"),     // `promtool check metrics` in the metrics test
    // cargo xtask vm-test: the guests' initramfs (QEMU itself: BACKPORTS_PACKAGES)
    ("busybox-static", "busybox"), // the guest's shell and tools (static: runs before any library)
    ("cpio", "cpio"),              // packs the initramfs
    ("xz-utils", "xz"),            // unpacks 6.12's modules
];

/// Debian packages installed from bookworm-backports, with the command each provides: the
/// image's qemu-utils comes from there, and plain bookworm's QEMU would replace it.
const BACKPORTS_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "qemu-system-x86_64"), // cargo xtask vm-test boots kernels under TCG
];
const BACKPORTS_SUITE: &str = "bookworm-backports";
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";
/// The same mirror and key as Debian's own bookworm entry.
const BACKPORTS_SOURCE_TEXT: &str = "Types: deb\n\
    URIs: http://deb.debian.org/debian\n\
    Suites: bookworm-backports\n\
    Components: main\n\
    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

/// The toolchain the eBPF crate builds with (unpinned on purpose: a dated nightly may not be
/// downloadable on a fresh machine).
const EBPF_TOOLCHAIN: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn install() -> Result<()> {
    apt_packages()?;
    backports_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    println!("setup: done");
    Ok(())
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, tool)| !on_path(tool))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        println!("setup: Debian packages present");
        return Ok(());
    }
    println!("setup: installing Debian packages {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update failed: setup needs root and access to the Debian mirror")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn backports_packages() -> Result<()> {
    let missing: Vec<&str> = BACKPORTS_PACKAGES
        .iter()
        .filter(|(_, tool)| !on_path(tool))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        println!("setup: {BACKPORTS_SUITE} packages present");
        return Ok(());
    }
    if !std::path::Path::new(BACKPORTS_SOURCE).exists() {
        println!("setup: adding {BACKPORTS_SUITE} to apt's sources ({BACKPORTS_SOURCE})");
        fs::write(BACKPORTS_SOURCE, BACKPORTS_SOURCE_TEXT)
            .with_context(|| format!("cannot write {BACKPORTS_SOURCE}: setup needs root"))?;
    }
    println!(
        "setup: installing {} from {BACKPORTS_SUITE}",
        missing.join(" ")
    );
    run(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update failed: setup needs root and access to the Debian mirror")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(["-t", BACKPORTS_SUITE])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|dir| dir.join(tool).is_file())
    })
}

fn nightly_rust_src() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if toolchains.lines().any(|l| l.starts_with(EBPF_TOOLCHAIN)) {
        // `component add` is a no-op when rust-src is already there.
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ]))
    } else {
        println!("setup: installing the {EBPF_TOOLCHAIN} toolchain with rust-src");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            EBPF_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
    }
}

/// bpf-linker links against the nightly toolchain's own libLLVM, so its LLVM always matches the
/// rustc that produces the bitcode, and no system LLVM is needed.
fn bpf_linker() -> Result<()> {
    if let Ok(version) = output(Command::new("bpf-linker").arg("--version")) {
        println!("setup: {} present", version.trim());
        return Ok(());
    }
    let sysroot = PathBuf::from(
        output(Command::new("rustc").args([&format!("+{EBPF_TOOLCHAIN}"), "--print", "sysroot"]))?
            .trim(),
    );
    let lib_dir = sysroot.join("lib");
    let llvm_lib = find_llvm_dylib(&lib_dir)?;
    let llvm_major = llvm_major_version()?;
    println!(
        "setup: installing bpf-linker {BPF_LINKER_VERSION} against {llvm_lib} (LLVM {llvm_major})"
    );
    let lib_dir = lib_dir.display();
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major},no-llvm-linking"),
        ])
        .env(
            "RUSTFLAGS",
            format!("-L {lib_dir} -l dylib={llvm_lib} -C link-arg=-Wl,-rpath,{lib_dir}"),
        ))
    .context("installing bpf-linker failed")
}

/// The name (for `-l dylib=`) of the toolchain's libLLVM, e.g. `LLVM-22-rust-1.97.0-nightly`.
fn find_llvm_dylib(lib_dir: &std::path::Path) -> Result<String> {
    let entries =
        fs::read_dir(lib_dir).with_context(|| format!("reading {}", lib_dir.display()))?;
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_prefix("lib").and_then(|n| n.strip_suffix(".so"))
            && stem.starts_with("LLVM-")
        {
            return Ok(stem.to_owned());
        }
    }
    bail!(
        "no libLLVM-*.so in {}: reinstall the {EBPF_TOOLCHAIN} toolchain (`rustup toolchain install {EBPF_TOOLCHAIN}`)",
        lib_dir.display()
    )
}

fn llvm_major_version() -> Result<String> {
    let verbose = output(Command::new("rustc").args([&format!("+{EBPF_TOOLCHAIN}"), "-vV"]))?;
    verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .map(str::to_owned)
        .context("rustc -vV printed no LLVM version")
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
