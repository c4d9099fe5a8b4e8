//! The pinned data plane: where a director's maps and XDP links live on a bpffs, so that they
//! outlive `drlb run` (restarts, upgrades, crashes) until `drlb down` removes them.
//!
//! ```text
//! PIN_DIR/layout-N/maps/NAME            every map the program and the daemon share
//! PIN_DIR/layout-N/links/IFINDEX-MODE   the XDP link on each director interface
//! PIN_DIR/layout-N/peers/IFINDEX        the pass program's link on a veth peer
//! ```
//!
//! `N` is [`LAYOUT_VERSION`]: what the words in the maps mean. A binary finds only its own
//! version's directory; another version's is refused with the way out (`drlb down`), never
//! guessed at. Each pinned map is also checked against the program this binary carries (type,
//! key and value sizes, flags) before anything uses it.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::maps::MapData;
use lb_common::{conflict, map_names};

use super::loader::EBPF_OBJECT;

/// What the pinned words mean. Bump it with any change to a pinned map's type, key, value,
/// flags or the meaning of its contents (the check of sizes against the program catches most,
/// not all, such changes).
pub const LAYOUT_VERSION: u32 = 8;

/// The program's maps kept across restarts: all of them (the log ring buffer and the
/// read-only data belong to one loaded program and are not shared).
pub const PROGRAM_MAPS: &[&str] = &[
    map_names::SERVICES,
    map_names::SERVICE_STATES,
    map_names::SERVICE_KEYS,
    map_names::TABLES,
    map_names::MAGLEV,
    map_names::BACKENDS,
    map_names::EGRESS_SLOTS,
    map_names::FLOWS,
    map_names::VIPS,
    map_names::VIP_STATES,
    map_names::VIP_FILTER,
    map_names::VIP_SLOTS,
    map_names::VIP_ADDRS,
    map_names::INTERFACES,
    map_names::EGRESS,
    map_names::SERVICE_COUNTERS,
    map_names::BACKEND_COUNTERS,
    map_names::VERDICT_COUNTERS,
    map_names::EVENT_COUNTERS,
    map_names::FRAGMENTS,
    conflict::MAP_NAME,
    map_names::FLOWS6,
    map_names::FRAGMENTS6,
];

/// Maps whose size the config decides (the others have the program's fixed size).
const SIZED_BY_CONFIG: &[&str] = &[
    map_names::SERVICES,
    map_names::SERVICE_STATES,
    map_names::SERVICE_KEYS,
    map_names::TABLES,
    map_names::MAGLEV,
    map_names::BACKENDS,
    map_names::FLOWS,
    map_names::FLOWS6,
    map_names::VIPS,
    map_names::VIP_STATES,
    map_names::VIP_ADDRS,
    map_names::INTERFACES,
    map_names::SERVICE_COUNTERS,
    map_names::BACKEND_COUNTERS,
];

/// Map flags the kernel sets on its own (BPF_F_RDONLY_PROG on device maps), not from the object.
const KERNEL_SET_FLAGS: u32 = 1 << 7;

/// `statfs` magic of a bpffs (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs is mounted by convention; drlb mounts it there if nothing is.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// The default `pin_dir` lies under this directory.
const DEFAULT_PARENT: &str = "/sys/fs/bpf/drlb";
/// In the state directory: the pin directory in use, for `drlb down` and `drlb vip deactivate`.
const POINTER_FILE: &str = "pin-dir";

/// A director's pin directory.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

/// The default pin directory of the director whose state directory is `state_dir`: one per
/// state directory, as each director on a host has its own. The name is the path's parts
/// joined by `-` (a `-` within a part doubled, so that distinct paths get distinct names).
#[must_use]
pub fn default_pin_dir(state_dir: &Path) -> PathBuf {
    let state_dir = fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    let name: Vec<String> = state_dir
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(part) => Some(part.to_string_lossy().replace('-', "--")),
            _ => None,
        })
        .collect();
    let name = if name.is_empty() {
        "root".to_owned()
    } else {
        name.join("-")
    };
    Path::new(DEFAULT_PARENT).join(name)
}

/// Whether `path` lies on a bpffs.
fn is_bpffs(path: &Path) -> Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} is not a valid path", path.display()))?;
    // SAFETY: statfs fills the zeroed struct; the path is a valid C string.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c_path.as_ptr(), &raw mut stat) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, u32 or i32 elsewhere
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts bpffs at [`BPFFS_ROOT`] unless one is there.
fn mount_default_bpffs() -> Result<()> {
    let root = Path::new(BPFFS_ROOT);
    if is_bpffs(root).unwrap_or(false) {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| {
        format!("no bpffs at {BPFFS_ROOT}, and mounting one there failed: mount it (`mount -t bpf bpf {BPFFS_ROOT}`) or set [director] pin_dir")
    })
}

/// Whether this process shares the mount namespace of PID 1: a bpffs mounted in a private one
/// (as `ip netns exec` makes for /sys) vanishes with it, pins and all.
fn in_init_mount_namespace() -> bool {
    match (
        fs::read_link("/proc/self/ns/mnt"),
        fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(mine), Ok(init)) => mine == init,
        _ => true,
    }
}

impl PinDir {
    /// The pin directory at `root`, which must lie on a bpffs (for the default, drlb mounts one
    /// at /sys/fs/bpf if none is there). Refuses a directory that holds another layout version.
    pub fn open(root: &Path, is_default: bool) -> Result<Self> {
        if is_default {
            mount_default_bpffs()?;
        }
        fs::create_dir_all(root)
            .with_context(|| format!("creating the pin directory {} failed", root.display()))?;
        ensure!(
            is_bpffs(root)?,
            "pin_dir {} is not on a bpffs: pinned maps and links can only live there; mount one \
             (`mount -t bpf bpf DIR`) and set [director] pin_dir to a directory in it",
            root.display()
        );
        if root.starts_with("/sys") && !in_init_mount_namespace() {
            tracing::warn!(
                pin_dir = %root.display(),
                "drlb runs in a private mount namespace (as under `ip netns exec`), where /sys is \
                 its own: pins there vanish when drlb exits, and the data plane with them; set \
                 [director] pin_dir to a bpffs mounted from the root mount namespace, outside /sys"
            );
        }
        let dir = Self {
            root: root.to_owned(),
        };
        if let Some(other) = dir.other_layouts()?.first() {
            bail!(
                "{} holds a data plane of layout {other}, which this drlb (layout {LAYOUT_VERSION}) \
                 cannot read: run `drlb down` with the drlb that made it (or remove the directory \
                 {}), then start drlb again; the flow table is lost",
                root.display(),
                root.join(format!("layout-{other}")).display()
            );
        }
        for sub in [dir.maps_dir(), dir.links_dir(), dir.peers_dir()] {
            fs::create_dir_all(&sub)
                .with_context(|| format!("creating {} failed", sub.display()))?;
        }
        Ok(dir)
    }

    /// The pin directory at `root` if one is there (for `drlb down`): no checks, no creation.
    #[must_use]
    pub fn existing(root: &Path) -> Option<Self> {
        root.is_dir().then(|| Self {
            root: root.to_owned(),
        })
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn layout_dir(&self) -> PathBuf {
        self.root.join(format!("layout-{LAYOUT_VERSION}"))
    }

    /// Where the maps (and the daemon's records) are pinned.
    #[must_use]
    pub fn maps_dir(&self) -> PathBuf {
        self.layout_dir().join("maps")
    }

    fn links_dir(&self) -> PathBuf {
        self.layout_dir().join("links")
    }

    fn peers_dir(&self) -> PathBuf {
        self.layout_dir().join("peers")
    }

    /// Where the map `name` is pinned.
    #[must_use]
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Where the XDP link on `ifindex`, attached in `mode` (`native`, `generic`), is pinned.
    #[must_use]
    pub fn link_path(&self, ifindex: u32, mode: &str) -> PathBuf {
        self.links_dir().join(format!("{ifindex}-{mode}"))
    }

    /// The XDP link pinned for `ifindex`, and the mode it was attached in.
    #[must_use]
    pub fn find_link(&self, ifindex: u32) -> Option<(PathBuf, String)> {
        self.pinned_links()
            .ok()?
            .into_iter()
            .find(|(i, _, _)| *i == ifindex)
            .map(|(_, mode, path)| (path, mode))
    }

    /// Where the pass program's link on the veth peer `ifindex` is pinned.
    #[must_use]
    pub fn peer_path(&self, ifindex: u32) -> PathBuf {
        self.peers_dir().join(ifindex.to_string())
    }

    /// The pinned XDP links: (ifindex, mode, path).
    pub fn pinned_links(&self) -> Result<Vec<(u32, String, PathBuf)>> {
        Ok(numbered_entries(&self.links_dir())?
            .into_iter()
            .map(|(ifindex, mode, path)| (ifindex, mode.unwrap_or_default(), path))
            .collect())
    }

    /// Other layout versions present.
    fn other_layouts(&self) -> Result<Vec<u32>> {
        let mut versions = Vec::new();
        for entry in
            fs::read_dir(&self.root).with_context(|| format!("reading {}", self.root.display()))?
        {
            let name = entry?.file_name();
            if let Some(v) = name
                .to_str()
                .and_then(|n| n.strip_prefix("layout-"))
                .and_then(|v| v.parse::<u32>().ok())
                && v != LAYOUT_VERSION
            {
                versions.push(v);
            }
        }
        Ok(versions)
    }

    /// Whether a data plane is pinned here (then drlb adopts it).
    #[must_use]
    pub fn holds_maps(&self) -> bool {
        PROGRAM_MAPS.iter().any(|name| self.map_path(name).exists())
    }

    /// The entries of every pinned map, after checking that each is the map this binary's
    /// program declares (type, key and value sizes, flags; and the size of those the config
    /// does not decide). Any missing or different map is refused with the way out.
    pub fn pinned_entries(&self) -> Result<BTreeMap<&'static str, u32>> {
        let object = aya_obj::Object::parse(EBPF_OBJECT)
            .context("parsing the embedded eBPF object failed")?;
        let mut entries = BTreeMap::new();
        for &name in PROGRAM_MAPS {
            let path = self.map_path(name);
            let expected = object
                .maps
                .get(name)
                .with_context(|| format!("the eBPF object has no map {name}"))?;
            let map = MapData::from_pin(&path).with_context(|| {
                format!(
                    "the pinned data plane in {} lacks map {name}: run `drlb down` and start drlb again (the flow table is lost)",
                    self.root.display()
                )
            })?;
            let info = map
                .info()
                .with_context(|| format!("reading the info of {name}"))?;
            let found = (
                info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
                info.key_size(),
                info.value_size(),
                info.map_flags() & !KERNEL_SET_FLAGS,
            );
            let wanted = (
                expected.map_type(),
                expected.key_size(),
                expected.value_size(),
                expected.map_flags(),
            );
            let fixed_size_differs =
                !SIZED_BY_CONFIG.contains(&name) && info.max_entries() != expected.max_entries();
            if found != wanted || fixed_size_differs {
                bail!(
                    "the pinned map {name} in {} is not the one this drlb's program uses \
                     (type, key, value, flags {found:?}, {} entries; wanted {wanted:?}, {} entries): \
                     it was made by another drlb; run `drlb down` and start drlb again (the flow table is lost)",
                    self.root.display(),
                    info.max_entries(),
                    expected.max_entries()
                );
            }
            entries.insert(name, info.max_entries());
        }
        Ok(entries)
    }

    /// Records in the state directory which pin directory this director uses.
    pub fn record_in(&self, state_dir: &Path) -> Result<()> {
        let path = state_dir.join(POINTER_FILE);
        let tmp = state_dir.join(format!("{POINTER_FILE}.tmp"));
        fs::write(&tmp, self.root.as_os_str().as_bytes())
            .and_then(|()| fs::rename(&tmp, &path))
            .with_context(|| format!("writing {} failed", path.display()))
    }

    /// The pin directory recorded in `state_dir`, else the default for it.
    #[must_use]
    pub fn recorded_or_default(state_dir: &Path) -> PathBuf {
        fs::read(state_dir.join(POINTER_FILE))
            .ok()
            .map(|bytes| PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
            .unwrap_or_else(|| default_pin_dir(state_dir))
    }

    /// Detaches every pinned link and removes every pin and directory (`drlb down`). Returns
    /// what it removed, one line each.
    pub fn remove(self, state_dir: Option<&Path>) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for entry in
            fs::read_dir(&self.root).with_context(|| format!("reading {}", self.root.display()))?
        {
            let layout = entry?.path();
            if !layout.is_dir() {
                continue;
            }
            for kind in ["links", "peers"] {
                let dir = layout.join(kind);
                for (ifindex, _, path) in numbered_entries(&dir).unwrap_or_default() {
                    // Unpinning drops the last reference: the kernel detaches the program.
                    fs::remove_file(&path)
                        .with_context(|| format!("removing {} failed", path.display()))?;
                    removed.push(format!(
                        "detached the XDP link of ifindex {ifindex} ({kind})"
                    ));
                }
            }
            let maps = layout.join("maps");
            if let Ok(names) = fs::read_dir(&maps) {
                for name in names {
                    let path = name?.path();
                    fs::remove_file(&path)
                        .with_context(|| format!("removing {} failed", path.display()))?;
                }
                removed.push(format!("removed the pinned maps in {}", maps.display()));
            }
            fs::remove_dir_all(&layout)
                .with_context(|| format!("removing {} failed", layout.display()))?;
        }
        fs::remove_dir(&self.root)
            .with_context(|| format!("removing {} failed", self.root.display()))?;
        if let Some(state_dir) = state_dir {
            let _ = fs::remove_file(state_dir.join(POINTER_FILE));
        }
        Ok(removed)
    }
}

/// A data plane pinned by a start that has not completed: removed again (links detached, pins
/// gone) if the start fails, unless [`Provisional::keep`] was called.
pub struct Provisional<'a> {
    pins: Option<&'a PinDir>,
}

impl<'a> Provisional<'a> {
    /// `fresh`: the pins were made by this start (not adopted).
    #[must_use]
    pub fn new(pins: &'a PinDir, fresh: bool) -> Self {
        Self {
            pins: fresh.then_some(pins),
        }
    }

    /// The start completed: the pins stay.
    pub fn keep(&mut self) {
        self.pins = None;
    }
}

impl Drop for Provisional<'_> {
    fn drop(&mut self) {
        if let Some(pins) = self.pins.take() {
            match pins.clone().remove(None) {
                Ok(_) => {
                    tracing::info!(pin_dir = %pins.root().display(), "the start failed: nothing is left pinned")
                }
                Err(e) => tracing::warn!(
                    "the start failed, and removing what it pinned failed too ({e:#}): run `drlb down`"
                ),
            }
        }
    }
}

/// The entries of `dir` named `IFINDEX` or `IFINDEX-SUFFIX`: (ifindex, suffix, path), sorted.
fn numbered_entries(dir: &Path) -> Result<Vec<(u32, Option<String>, PathBuf)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let (number, suffix) = match name.split_once('-') {
            Some((n, suffix)) => (n, Some(suffix.to_owned())),
            None => (name.as_str(), None),
        };
        if let Ok(ifindex) = number.parse() {
            entries.push((ifindex, suffix, entry.path()));
        }
    }
    entries.sort_unstable();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_directory_has_its_own_default_pin_directory() {
        assert_eq!(
            default_pin_dir(Path::new("/run/drlb")),
            Path::new("/sys/fs/bpf/drlb/run-drlb")
        );
        assert_eq!(
            default_pin_dir(Path::new("/nonexistent/drlb-a/")),
            Path::new("/sys/fs/bpf/drlb/nonexistent-drlb--a")
        );
        assert_ne!(
            default_pin_dir(Path::new("/run/drlb-a")),
            default_pin_dir(Path::new("/run/drlb/a"))
        );
    }

    #[test]
    fn every_program_map_is_pinned() {
        let object = aya_obj::Object::parse(EBPF_OBJECT).unwrap();
        let mut declared: Vec<&str> = object
            .maps
            .keys()
            .map(String::as_str)
            .filter(|n| !n.starts_with('.') && *n != "AYA_LOGS")
            .collect();
        declared.sort_unstable();
        let mut pinned = PROGRAM_MAPS.to_vec();
        pinned.sort_unstable();
        assert_eq!(
            declared, pinned,
            "a map of the program is not in PROGRAM_MAPS"
        );
        for name in SIZED_BY_CONFIG {
            assert!(PROGRAM_MAPS.contains(name));
        }
    }
}
