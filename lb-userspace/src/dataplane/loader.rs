//! Loading the embedded XDP program into the kernel and attaching it to interfaces.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use lb_common::{
    DEFAULT_FLOW_TABLE_SIZE, DEFAULT_INTERFACE_SLOTS, DEFAULT_MAGLEV_ENTRIES,
    ICMP_RELAY_OFF_GLOBAL, INTERFACE_SLOT_MASK_GLOBAL, MAX_BACKENDS_PER_SERVICE, MAX_SERVICES,
    PASS_PROGRAM_NAME, PROGRAM_NAME, PROGRAM_VARIANT_GLOBAL, TABLE_BANKS, interface_slot,
    maglev_blocks, map_names,
};
use tracing::warn;

use super::pins::PinDir;

/// Tests of in-place upgrades set it to load a program that differs (see
/// `Event::VariantForward`); unset in production.
pub const PROGRAM_VARIANT_ENV: &str = "DRLB_TEST_PROGRAM_VARIANT";
/// Set (to anything) by a test to load a program that does not relay ICMP errors to backends,
/// to show that path-MTU discovery through the director stalls without the relay; unset in
/// production.
pub const ICMP_RELAY_OFF_ENV: &str = "DRLB_TEST_NO_ICMP_RELAY";

/// The director's XDP program and its maps, built by build.rs from the lb-ebpf crate.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drlb"));
/// The pass-everything program, alone in its object (no maps: loading it costs no memory).
pub static PASS_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drlb-pass"));
/// The benchmark's programs (generator, sink, reflector); drlb itself never loads them.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drlb-bench"));

/// Sizes of the maps that depend on the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Entries (slots) of the `MAGLEV` array (all services' tables, both banks).
    pub maglev_entries: u32,
    /// Flows the table must hold: `flow_table_size` of the config (see [`flow_map_entries`]).
    pub flow_table_size: u32,
    /// Flows the IPv6 table (`FLOWS6`) must hold: see `director::map_sizes`.
    pub ipv6_flow_table_size: u32,
    /// Entries of the `INTERFACES` array, a power of two (see [`interface_slots`]).
    pub interface_slots: u32,
    /// Services the per-service maps (and their backends' maps and counters) have room for.
    pub services: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            maglev_entries: DEFAULT_MAGLEV_ENTRIES,
            flow_table_size: DEFAULT_FLOW_TABLE_SIZE,
            ipv6_flow_table_size: DEFAULT_FLOW_TABLE_SIZE,
            interface_slots: DEFAULT_INTERFACE_SLOTS,
            services: MAX_SERVICES,
        }
    }
}

/// Largest `INTERFACES` array the loader will make (12 bytes an entry).
const MAX_INTERFACE_SLOTS: u32 = 1 << 20;

/// The smallest power of two, at least the default, at which the director's interfaces
/// ((ifindex, VLAN id), the parent's ifindex for a VLAN) fall into distinct `INTERFACES`
/// entries ([`interface_slot`]).
pub fn interface_slots(interfaces: &[(u32, u16)]) -> Result<u32> {
    let mut slots = DEFAULT_INTERFACE_SLOTS;
    while slots <= MAX_INTERFACE_SLOTS {
        let mut seen: Vec<u32> = interfaces
            .iter()
            .map(|&(ifindex, vlan)| interface_slot(ifindex, vlan, slots - 1))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() == interfaces.len() {
            return Ok(slots);
        }
        slots *= 2;
    }
    anyhow::bail!(
        "interfaces {interfaces:?} cannot be told apart in {MAX_INTERFACE_SLOTS} INTERFACES entries"
    )
}

/// CPUs as a sysfs CPU list counts them (`0-3,8-11` is 8).
fn count_cpus(list: &str) -> Option<u32> {
    list.trim().split(',').try_fold(0, |total, range| {
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let cpu = range.parse::<u32>().ok()?;
                (cpu, cpu)
            }
        };
        Some(total + last.checked_sub(first)? + 1)
    })
}

/// (online, possible) CPUs of this host.
pub fn cpus() -> Result<(u32, u32)> {
    let read = |what: &str| -> Result<u32> {
        let path = format!("/sys/devices/system/cpu/{what}");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        count_cpus(&text).with_context(|| format!("{path} is not a CPU list: {text:?}"))
    };
    Ok((read("online")?, read("possible")?))
}

/// Entries to create the `FLOWS` map with so that it holds `flows` flows on `online` CPUs.
/// With BPF_F_NO_COMMON_LRU the kernel gives every *possible* CPU `entries / possible` of them,
/// and a CPU only ever evicts within its own share: a host with 128 possible and 8 online CPUs
/// would otherwise keep 1/16 of what the config asks for.
#[must_use]
pub fn flow_map_entries(flows: u32, online: u32, possible: u32) -> u32 {
    let (online, possible) = (online.max(1), possible.max(online.max(1)));
    let per_cpu = flows.div_ceil(online);
    per_cpu.saturating_mul(possible)
}

/// Flows the `FLOWS` map created with `entries` can hold on `online` CPUs (each CPU its share).
#[must_use]
pub fn flow_capacity(entries: u32, online: u32, possible: u32) -> u64 {
    u64::from(entries / possible.max(1)) * u64::from(online)
}

/// The entries of each map whose size the config decides.
pub fn map_entries(sizes: MapSizes) -> Result<BTreeMap<&'static str, u32>> {
    let (online, possible) = cpus()?;
    let services = sizes.services.clamp(1, MAX_SERVICES);
    let backends = services * MAX_BACKENDS_PER_SERVICE;
    Ok(BTreeMap::from([
        (map_names::SERVICES, services),
        (map_names::SERVICE_STATES, services),
        (map_names::SERVICE_KEYS, services),
        (map_names::SERVICE_COUNTERS, services),
        (map_names::TABLES, services * TABLE_BANKS),
        (map_names::BACKENDS, backends),
        (map_names::BACKEND_COUNTERS, backends),
        // Every service may have its own VIP.
        (map_names::VIPS, services),
        (map_names::VIP_STATES, services),
        (map_names::VIP_ADDRS, services),
        (map_names::MAGLEV, maglev_blocks(sizes.maglev_entries)),
        (
            map_names::FLOWS,
            flow_map_entries(sizes.flow_table_size, online, possible),
        ),
        // IPv6 flows have a table of their own (a 40-byte key).
        (
            map_names::FLOWS6,
            flow_map_entries(sizes.ipv6_flow_table_size, online, possible),
        ),
        (map_names::INTERFACES, sizes.interface_slots),
    ]))
}

/// Loads fresh maps and the program into the kernel (verified, not yet attached), pinning
/// nothing: the maps live as long as the returned object or a program using them.
pub fn load(sizes: MapSizes) -> Result<Ebpf> {
    load_with(&map_entries(sizes)?, None)
}

/// Loads the program with the maps pinned in `pins`: those found there are used as they are
/// (after checking each is the map this program declares, see [`PinDir::pinned_entries`]),
/// the others are created for `sizes` and pinned. Returns whether a data plane was adopted.
pub fn load_pinned(sizes: MapSizes, pins: &PinDir) -> Result<(Ebpf, bool)> {
    if pins.holds_maps() {
        let pinned = pins.pinned_entries()?;
        let wanted = map_entries(sizes)?;
        if pinned.get(map_names::FLOWS) != wanted.get(map_names::FLOWS) {
            warn!(
                "the pinned flow table keeps its size; a new flow_table_size takes effect after `drlb down` and a start (the flow table is lost)"
            );
        }
        return Ok((load_with(&pinned, Some(pins))?, true));
    }
    Ok((load_with(&map_entries(sizes)?, Some(pins))?, false))
}

fn load_with(entries: &BTreeMap<&'static str, u32>, pins: Option<&PinDir>) -> Result<Ebpf> {
    let interface_slots = entries
        .get(map_names::INTERFACES)
        .copied()
        .unwrap_or(DEFAULT_INTERFACE_SLOTS);
    let mask = interface_slots - 1;
    let variant: u32 = match std::env::var(PROGRAM_VARIANT_ENV) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{PROGRAM_VARIANT_ENV}={value:?} is not a number"))?,
        Err(_) => 0,
    };
    let icmp_relay_off = u32::from(std::env::var_os(ICMP_RELAY_OFF_ENV).is_some());
    if icmp_relay_off != 0 {
        warn!("{ICMP_RELAY_OFF_ENV} is set: ICMP errors are not relayed to backends (test only)");
    }
    let mut loader = EbpfLoader::new();
    for (&name, &max_entries) in entries {
        loader.map_max_entries(name, max_entries);
    }
    let paths: Vec<(&str, std::path::PathBuf)> = pins
        .map(|pins| {
            super::pins::PROGRAM_MAPS
                .iter()
                .map(|&name| (name, pins.map_path(name)))
                .collect()
        })
        .unwrap_or_default();
    for &(name, ref path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .override_global(INTERFACE_SLOT_MASK_GLOBAL, &mask, true)
        .override_global(PROGRAM_VARIANT_GLOBAL, &variant, true)
        .override_global(ICMP_RELAY_OFF_GLOBAL, &icmp_relay_off, true)
        .load(EBPF_OBJECT)
        .context("could not create the BPF maps: drlb needs root (CAP_BPF and CAP_NET_ADMIN)")?;
    program(&mut ebpf)?.load().context(
        "the kernel refused the XDP program (drlb needs root and a kernel with XDP support)",
    )?;
    Ok(ebpf)
}

/// The XDP program of a loaded object.
pub fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    xdp_program(ebpf, PROGRAM_NAME)
}

pub fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .with_context(|| format!("the eBPF object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

/// Attaches the pass-everything program (natively) to `ifindex` of the current network
/// namespace: veth delivers frames sent with XDP_TX or a redirect only to a peer running XDP.
/// The program stays attached while the returned object lives.
pub fn attach_pass_program(ifindex: u32) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .load(PASS_OBJECT)
        .context("could not load the pass program's object (needs root)")?;
    let program = xdp_program(&mut ebpf, PASS_PROGRAM_NAME)?;
    program
        .load()
        .context("the kernel refused the pass program")?;
    program
        .attach_to_if_index(ifindex, XdpMode::Driver)
        .with_context(|| {
            format!("attaching {PASS_PROGRAM_NAME} natively to ifindex {ifindex} failed")
        })?;
    Ok(ebpf)
}

/// Attaches the pass-everything program to the veth peer `ifindex` with a link pinned in
/// `pins`, so it stays when drlb exits. Returns false when a pinned link is already in place
/// there (an earlier drlb's).
pub fn attach_pass_program_pinned(ifindex: u32, pins: &PinDir) -> Result<bool> {
    let path = pins.peer_path(ifindex);
    let mut ebpf = EbpfLoader::new()
        .load(PASS_OBJECT)
        .context("could not load the pass program's object (needs root)")?;
    let program = xdp_program(&mut ebpf, PASS_PROGRAM_NAME)?;
    program
        .load()
        .context("the kernel refused the pass program")?;
    let id = match program.attach_to_if_index(ifindex, XdpMode::Driver) {
        Ok(id) => id,
        // Busy with the link pinned by an earlier drlb: it stays.
        Err(_) if path.exists() => return Ok(false),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("attaching {PASS_PROGRAM_NAME} natively to ifindex {ifindex} failed")
            });
        }
    };
    // A pin left for a device that is gone (the peer was made again) is stale.
    let _ = std::fs::remove_file(&path);
    pin_link(program.take_link(id)?, &path)?;
    Ok(true)
}

/// Pins an XDP link so it outlives this process (closing our descriptor keeps it attached).
fn pin_link(link: XdpLink, path: &std::path::Path) -> Result<()> {
    let Ok(link) = FdLink::try_from(link) else {
        bail!(
            "the kernel attached XDP through netlink, not a BPF link (Linux 5.9+ has them): drlb cannot pin it"
        );
    };
    link.pin(path)
        .with_context(|| format!("pinning the XDP link at {} failed", path.display()))?;
    Ok(())
}

/// How the program came to run on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attached {
    /// Attached afresh.
    New,
    /// Swapped into the link an earlier drlb pinned (`bpf_link_update`, atomic: every frame
    /// meets either program), in the mode that link was made with (named).
    Replaced(String),
}

/// Attaches the program to `ifindex` through a link pinned in `pins`: replaces the program of
/// a link pinned there by an earlier drlb (atomically), else attaches in `mode` and pins.
pub fn attach_pinned(
    ebpf: &mut Ebpf,
    interface: &str,
    ifindex: u32,
    mode: AttachMode,
    pins: &PinDir,
) -> Result<Attached> {
    if let Some((path, pinned_mode)) = pins.find_link(ifindex) {
        match replace_in_link(ebpf, &path) {
            Ok(()) => return Ok(Attached::Replaced(pinned_mode)),
            Err(e) => {
                warn!(%interface, "the pinned XDP link of {interface} could not take the new program ({e:#}); it is stale (the interface was made again?): attaching afresh");
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing the stale pin {}", path.display()))?;
            }
        }
    }
    let id = attach(ebpf, interface, ifindex, mode)?;
    pin_link(
        program(ebpf)?.take_link(id)?,
        &pins.link_path(ifindex, mode.name()),
    )?;
    Ok(Attached::New)
}

/// Puts this object's program into the pinned link at `path`.
fn replace_in_link(ebpf: &mut Ebpf, path: &std::path::Path) -> Result<()> {
    let link = FdLink::from(PinnedLink::from_pin(path).context("opening the pinned link")?);
    let link = XdpLink::try_from(link).context("the pinned link is not an XDP link")?;
    let program = program(ebpf)?;
    let id = program
        .attach_to_link(link)
        .context("bpf_link_update failed")?;
    // Our descriptor closes; the pin keeps the link and, through it, the program.
    drop(program.take_link(id)?);
    Ok(())
}

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (XDP_FLAGS_DRV_MODE): fast; the NIC driver must support XDP.
    Native,
    /// On the generic (skb) path: works on any interface, much slower.
    Generic,
}

impl AttachMode {
    /// As `drlb stats` shows it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }

    fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }
}

/// Attaches the program to `ifindex`. The link lives as long as the returned id's program
/// (dropping the `Ebpf` detaches it).
pub fn attach(
    ebpf: &mut Ebpf,
    interface: &str,
    ifindex: u32,
    mode: AttachMode,
) -> Result<XdpLinkId> {
    let attached = program(ebpf)?.attach_to_if_index(ifindex, mode.xdp_mode());
    if let Err(e) = &attached
        && caused_by_mtu(e)
    {
        let mtu = interface_mtu(interface)
            .map_or_else(|| "its MTU".to_owned(), |m| format!("its MTU {m}"));
        bail!(
            "attaching in {} XDP mode to {interface} failed with ERANGE: {mtu} is too large for XDP on \
             its driver (frames longer than a page need multi-buffer XDP, which drlb's program \
             supports but this driver does not); lower it (`ip link set {interface} mtu 1500`) \
             or use xdp_mode = \"generic\"",
            mode.name()
        );
    }
    attached.with_context(|| match mode {
        AttachMode::Native => format!(
            "attaching in native XDP mode to {interface} failed: its driver may lack XDP support, or another XDP \
             program is attached (`ip link show {interface}`); try xdp_mode = \"generic\""
        ),
        AttachMode::Generic => format!(
            "attaching in generic XDP mode to {interface} failed: is another XDP program attached (`ip link show {interface}`)?"
        ),
    })
}

/// Whether the kernel refused an attachment with ERANGE: the interface's MTU is larger than
/// XDP on its driver allows.
fn caused_by_mtu(error: &aya::programs::ProgramError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(libc::ERANGE)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The MTU of `interface` in this network namespace (SIOCGIFMTU), for error messages.
fn interface_mtu(interface: &str) -> Option<i32> {
    let name = std::ffi::CString::new(interface).ok()?;
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes_with_nul();
    if bytes.len() > request.ifr_name.len() {
        return None;
    }
    for (to, from) in request.ifr_name.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    // SAFETY: a datagram socket only for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: SIOCGIFMTU reads the name and writes ifru_mtu of the ifreq we own.
    let done = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &raw mut request) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    // SAFETY: the union is plain data, zeroed above; after a successful ioctl it holds the MTU.
    let mtu = unsafe { request.ifr_ifru.ifru_mtu };
    (done == 0).then_some(mtu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::NO_VLAN;

    #[test]
    fn sysfs_cpu_lists_are_counted() {
        assert_eq!(count_cpus("0-1\n"), Some(2));
        assert_eq!(count_cpus("0"), Some(1));
        assert_eq!(count_cpus("0-3,8-11"), Some(8));
        assert_eq!(count_cpus("0-127"), Some(128));
        assert_eq!(count_cpus("x"), None);
    }

    #[test]
    fn the_flow_table_holds_the_configured_flows_on_the_online_cpus() {
        // 8 of 128 possible CPUs online: every CPU's share must be flows / 8.
        let entries = flow_map_entries(65_536, 8, 128);
        assert_eq!(entries, 65_536 * 16);
        assert_eq!(flow_capacity(entries, 8, 128), 65_536);
        // All possible CPUs online: the map is as large as asked.
        assert_eq!(flow_map_entries(65_536, 2, 2), 65_536);
        assert_eq!(flow_capacity(65_536, 2, 2), 65_536);
    }

    #[test]
    fn interface_slots_keep_the_interfaces_apart() {
        assert_eq!(
            interface_slots(&[(1, NO_VLAN), (2, NO_VLAN), (3, NO_VLAN)]).unwrap(),
            DEFAULT_INTERFACE_SLOTS
        );
        // 5 and 261 share entry 5 of 256 entries.
        assert_eq!(
            interface_slots(&[(5, NO_VLAN), (261, NO_VLAN)]).unwrap(),
            2 * DEFAULT_INTERFACE_SLOTS
        );
        // The VLANs of one trunk share its ifindex and are told apart by their ids.
        let trunk = [(5, 100), (5, 200), (5, 300), (6, NO_VLAN)];
        let slots = interface_slots(&trunk).unwrap();
        let mut seen: Vec<u32> = trunk
            .iter()
            .map(|&(i, v)| interface_slot(i, v, slots - 1))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), trunk.len());
    }
}
