//! Debian's kernels: which ones, fetched with `apt-get download` and cached under target/vm/,
//! unpacked, and the modules the guest needs in the order they must be loaded.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::run;

/// A kernel the suite runs on: a label for the command line and reports, and the Debian package.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// `6.1`, `6.12`: what `--kernel` takes.
    pub label: &'static str,
    /// The binary package (its name holds the kernel's release, as `uname -r` prints it).
    pub package: &'static str,
    /// The kernel release: the directory name under /lib/modules and the vmlinuz suffix.
    pub release: &'static str,
}

/// Debian 12's own kernel (bookworm, bookworm-security) and the 6.12 that bookworm-security
/// also carries. Pinned so that a run is repeatable; to move on, pick the newest names from
/// `apt-cache search --names-only '^linux-image-6\.(1|12)\..*-cloud-amd64$'`. The cloud flavour
/// boots fastest and has every module the guest needs (veth, virtio_net, bridge, IPVS).
pub const KERNELS: &[Kernel] = &[
    Kernel {
        label: "6.1",
        package: "linux-image-6.1.0-57-cloud-amd64",
        release: "6.1.0-57-cloud-amd64",
    },
    Kernel {
        label: "6.12",
        package: "linux-image-6.12.118+deb12-cloud-amd64",
        release: "6.12.118+deb12-cloud-amd64",
    },
];

/// The modules the guest loads (their dependencies come first, found in the modules'
/// `.modinfo`): virtio NICs, veth, the bridge of the veth topology, IPVS with round robin (the
/// scenarios) and Maglev hashing (the benchmark's IPVS row), and the nftables expressions of
/// the benchmark's nftables row, and 802.1Q VLAN devices (the `vlan` part's trunk).
/// One the kernel has built in (`modules.builtin`: 6.12 builds virtio_pci in) is left out.
pub const ROOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "veth",
    "bridge",
    "ip_vs_rr",
    "ip_vs_mh",
    "nf_tables",
    "nft_hash",
    "nft_fwd_netdev",
    "8021q",
];

/// An unpacked kernel package.
pub struct Unpacked {
    pub vmlinuz: PathBuf,
    /// The module files to load, dependencies first.
    pub modules: Vec<PathBuf>,
}

/// Downloads `kernel`'s package into `cache` (once) and unpacks it (once).
pub fn fetch(kernel: &Kernel, cache: &Path) -> Result<Unpacked> {
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", debs.display()))?;
    let deb = match find_deb(&debs, kernel.package)? {
        Some(deb) => deb,
        None => {
            println!("vm-test: downloading {}", kernel.package);
            run(Command::new("apt-get")
                .args(["download", "-q", kernel.package])
                .current_dir(&debs))
            .with_context(|| {
                format!(
                    "cannot download the kernel package {} (for --kernel {}): check the Debian \
                     mirror in /etc/apt/sources.list.d (bookworm and bookworm-security) and run \
                     `apt-get update`; if the package left the archive, update KERNELS in \
                     xtask/src/vm/kernel.rs",
                    kernel.package, kernel.label
                )
            })?;
            find_deb(&debs, kernel.package)?
                .with_context(|| format!("apt-get download left no {}_*.deb", kernel.package))?
        }
    };
    let root = cache.join("kernels").join(kernel.release);
    let vmlinuz = root
        .join("boot")
        .join(format!("vmlinuz-{}", kernel.release));
    if !vmlinuz.is_file() {
        // Unpack into a fresh directory, then rename: an interrupted unpack leaves no half tree.
        let partial = cache
            .join("kernels")
            .join(format!("{}.partial", kernel.release));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))
            .with_context(|| format!("cannot unpack {}", deb.display()))?;
        let _ = fs::remove_dir_all(&root);
        fs::rename(&partial, &root)
            .with_context(|| format!("cannot move the unpacked kernel to {}", root.display()))?;
    }
    let module_dir = root.join("lib/modules").join(kernel.release);
    let modules = load_order(&module_dir, ROOT_MODULES)?;
    Ok(Unpacked { vmlinuz, modules })
}

/// The cached `PACKAGE_VERSION_amd64.deb`, if any.
fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// The module files for `roots` and everything they depend on, dependencies first.
fn load_order(module_dir: &Path, roots: &[&str]) -> Result<Vec<PathBuf>> {
    let files = module_files(module_dir)?;
    let builtin_list = module_dir.join("modules.builtin");
    let builtin: BTreeSet<String> = fs::read_to_string(&builtin_list)
        .with_context(|| format!("reading {}", builtin_list.display()))?
        .lines()
        .filter_map(|line| module_name(Path::new(line)))
        .collect();
    let mut depends = BTreeMap::new();
    let mut pending: Vec<String> = roots.iter().map(|r| (*r).to_owned()).collect();
    while let Some(name) = pending.pop() {
        if depends.contains_key(&name) || builtin.contains(&name) {
            continue;
        }
        let file = files.get(&name).with_context(|| {
            format!(
                "{} has no module {name}: is it built in, or renamed? (see ROOT_MODULES in \
                 xtask/src/vm/kernel.rs)",
                module_dir.display()
            )
        })?;
        let deps = modinfo_depends(&read_module(file)?);
        pending.extend(deps.iter().cloned());
        depends.insert(name, deps);
    }
    Ok(dependencies_first(&depends)?
        .into_iter()
        .map(|name| files[&name].clone())
        .collect())
}

/// Module name (with `_`, as the kernel spells it) ─► file, over the whole module tree.
fn module_files(module_dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![module_dir.join("kernel")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Some(name) = module_name(&path) {
                files.insert(name, path);
            }
        }
    }
    Ok(files)
}

/// `.../ip_vs_rr.ko` or `.../ip_vs_rr.ko.xz` ─► `ip_vs_rr`.
fn module_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".ko")
        .or_else(|| name.strip_suffix(".ko.xz"))?;
    Some(stem.replace('-', "_"))
}

/// A module's bytes, decompressed (6.12's are xz'd; busybox's insmod wants them plain).
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .with_context(|| format!("could not start xz for {}", path.display()))?;
        if !out.status.success() {
            bail!(
                "xz -dc {} failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out.stdout)
    } else {
        fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// The `depends=a,b` entry of a module's `.modinfo` section (NUL-separated `key=value`
/// strings), read straight from the file: the host has no modinfo.
fn modinfo_depends(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(start) = module.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &module[start + KEY.len()..];
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

/// The modules of `depends` (name ─► its dependencies) ordered so that each comes after all of
/// its dependencies; fails on a cycle.
fn dependencies_first(depends: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>> {
    let mut order = Vec::new();
    let mut placed = BTreeSet::new();
    while placed.len() < depends.len() {
        let ready: Vec<&String> = depends
            .iter()
            .filter(|(name, deps)| {
                !placed.contains(*name) && deps.iter().all(|d| placed.contains(d))
            })
            .map(|(name, _)| name)
            .collect();
        if ready.is_empty() {
            bail!("the modules' dependencies form a cycle: {depends:?}");
        }
        for name in ready {
            placed.insert(name.clone());
            order.push(name.clone());
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_is_read_from_modinfo_strings() {
        let blob = b"\x7fELF junk\0license=GPL\0depends=nf_conntrack,libcrc32c,nf-defrag-ipv6\0retpoline=Y\0";
        assert_eq!(
            modinfo_depends(blob),
            ["nf_conntrack", "libcrc32c", "nf_defrag_ipv6"]
        );
        assert!(modinfo_depends(b"\0depends=\0intree=Y\0").is_empty());
        assert!(modinfo_depends(b"no modinfo here").is_empty());
    }

    #[test]
    fn dependencies_come_first_and_cycles_are_refused() {
        let deps = |pairs: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
            pairs
                .iter()
                .map(|(n, d)| ((*n).to_owned(), d.iter().map(|s| (*s).to_owned()).collect()))
                .collect()
        };
        let order = dependencies_first(&deps(&[
            ("ip_vs_rr", &["ip_vs"]),
            ("ip_vs", &["nf_conntrack", "libcrc32c"]),
            ("nf_conntrack", &["libcrc32c"]),
            ("libcrc32c", &[]),
        ]))
        .unwrap();
        assert_eq!(order, ["libcrc32c", "nf_conntrack", "ip_vs", "ip_vs_rr"]);
        assert!(dependencies_first(&deps(&[("a", &["b"]), ("b", &["a"])])).is_err());
    }

    #[test]
    fn module_names_drop_the_suffix_and_use_underscores() {
        assert_eq!(
            module_name(Path::new("/m/kernel/net/ip_vs_rr.ko.xz")).as_deref(),
            Some("ip_vs_rr")
        );
        assert_eq!(
            module_name(Path::new("/m/virtio-net.ko")).as_deref(),
            Some("virtio_net")
        );
        assert_eq!(module_name(Path::new("/m/modules.order")), None);
    }
}
