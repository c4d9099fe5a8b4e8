//! The guest's initramfs: busybox-static, the kernel's modules in load order, Debian's own `ip`,
//! `ipvsadm`, `ethtool` and `tcpdump` with the shared libraries `ldd` lists, the project's
//! binaries, and the guest scripts from tests/vm/. The cloud kernels have no 9p, so everything
//! the guest runs is baked in.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::kernel::{Kernel, Unpacked, read_module};

/// Host tools copied into the guest's /usr/sbin (busybox's `ip` has no netns and no XDP, so
/// iproute2's comes first on the guest's PATH).
const HOST_TOOLS: &[&str] = &["ip", "ipvsadm", "ethtool", "tcpdump", "nft"];
/// Where the project's binaries go in the guest.
pub const GUEST_BIN_DIR: &str = "opt/drlb";
/// The guest scripts (`init`, `guest.sh`), relative to the workspace root.
const SCRIPTS_DIR: &str = "tests/vm";
const EXECUTABLE: u32 = 0o755;

/// A binary of the project to ship, and the name it gets in the guest's /opt/drlb.
pub struct Shipped {
    pub name: String,
    pub path: PathBuf,
}

/// Builds `out` (a gzip'd newc cpio archive) for `kernel` in the staging directory `stage`.
pub fn build(
    workspace: &Path,
    kernel: &Kernel,
    unpacked: &Unpacked,
    binaries: &[Shipped],
    stage: &Path,
    out: &Path,
) -> Result<()> {
    let _ = fs::remove_dir_all(stage);
    for dir in ["bin", "usr/sbin", "etc", "lib/modules", "vm", GUEST_BIN_DIR] {
        fs::create_dir_all(stage.join(dir))
            .with_context(|| format!("cannot create {}", stage.join(dir).display()))?;
    }
    let busybox = find_tool("busybox")?;
    ensure_static(&busybox)?;
    copy_file(&busybox, &stage.join("bin/busybox"))?;

    let mut needs_libraries = Vec::new();
    for tool in HOST_TOOLS {
        let path = find_tool(tool)?;
        copy_file(&path, &stage.join("usr/sbin").join(tool))?;
        needs_libraries.push(path);
    }
    for binary in binaries {
        copy_file(&binary.path, &stage.join(GUEST_BIN_DIR).join(&binary.name))?;
        needs_libraries.push(binary.path.clone());
    }
    for library in libraries(&needs_libraries)? {
        let inside = stage.join(library.strip_prefix("/").unwrap_or(&library));
        copy_file(&library, &inside)?;
    }

    // Modules as NN-name.ko, so that a plain glob lists them in load order.
    for (n, module) in unpacked.modules.iter().enumerate() {
        let name = module
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split(".ko").next())
            .context("module file without a name")?;
        let target = stage.join(format!("lib/modules/{n:02}-{name}.ko"));
        fs::write(&target, read_module(module)?)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }

    let scripts = workspace.join(SCRIPTS_DIR);
    for (from, to) in [("init", "init"), ("guest.sh", "vm/guest.sh")] {
        copy_file(&scripts.join(from), &stage.join(to))?;
        // The kernel execs /init: executable whatever the checkout's modes are.
        fs::set_permissions(stage.join(to), fs::Permissions::from_mode(EXECUTABLE))?;
    }
    fs::write(stage.join("vm/kernel"), format!("{}\n", kernel.label))?;
    // drlb and tcpdump look users and groups up; root is all the guest has.
    fs::write(stage.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    fs::write(stage.join("etc/group"), "root:x:0:\n")?;

    let command = format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        stage.display(),
        out.display()
    );
    crate::run(Command::new("sh").args(["-c", &command]))
        .with_context(|| format!("cannot pack the initramfs {}", out.display()))
}

/// `tool` on the PATH (or in /usr/sbin, /sbin), resolved through symlinks.
fn find_tool(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .with_context(|| format!("{tool} is not installed: run `cargo xtask setup`"))
}

/// busybox must be busybox-static: the guest runs it before any library is in place.
fn ensure_static(busybox: &Path) -> Result<()> {
    let out = Command::new("ldd").arg(busybox).output()?;
    if out.status.success() {
        bail!(
            "{} is dynamically linked: install busybox-static (`cargo xtask setup`)",
            busybox.display()
        );
    }
    Ok(())
}

/// The shared libraries (and the dynamic loader) `binaries` need, by absolute path.
fn libraries(binaries: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut all = std::collections::BTreeSet::new();
    for binary in binaries {
        let out = Command::new("ldd")
            .arg(binary)
            .output()
            .with_context(|| format!("could not run ldd on {}", binary.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("ldd {} failed: {text}", binary.display());
        }
        all.extend(ldd_paths(&text).map_err(|line| {
            anyhow::anyhow!("ldd {}: a library is missing: {line}", binary.display())
        })?);
    }
    Ok(all.into_iter().collect())
}

/// The absolute paths in `ldd` output; the offending line when a library is not found.
fn ldd_paths(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            return Err(line.trim().to_owned());
        }
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no path.
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// Copies the file `from` points to (following symlinks), executable bits kept.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    let mode = fs::metadata(from)?.permissions().mode();
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths_and_missing_ones_fail() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                    \tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            ldd_paths(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libbpf.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(ldd_paths("\tlibfoo.so.1 => not found\n").is_err());
    }
}
