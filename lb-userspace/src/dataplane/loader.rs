//! Loading the embedded XDP program into the kernel and attaching it to interfaces.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use lb_common::{
    DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAGLEV_ENTRIES, PASS_PROGRAM_NAME, PROGRAM_NAME, map_names,
};

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
    /// Entries of the `MAGLEV` array (all services' tables, both banks).
    pub maglev_entries: u32,
    /// Capacity of the `FLOWS` LRU map.
    pub flow_table_size: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            maglev_entries: DEFAULT_MAGLEV_ENTRIES,
            flow_table_size: DEFAULT_FLOW_TABLE_SIZE,
        }
    }
}

/// Loads the maps and the program into the kernel (verified, not yet attached).
pub fn load(sizes: MapSizes) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(map_names::MAGLEV, sizes.maglev_entries)
        .map_max_entries(map_names::FLOWS, sizes.flow_table_size)
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

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (XDP_FLAGS_DRV_MODE): fast; the NIC driver must support XDP.
    Native,
    /// On the generic (skb) path: works on any interface, much slower.
    Generic,
}

impl AttachMode {
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
    program(ebpf)?.attach_to_if_index(ifindex, mode.xdp_mode()).with_context(|| match mode {
        AttachMode::Native => format!(
            "attaching in native XDP mode to {interface} failed: its driver may lack XDP support, or another XDP \
             program is attached (`ip link show {interface}`); try xdp_mode = \"generic\""
        ),
        AttachMode::Generic => format!(
            "attaching in generic XDP mode to {interface} failed: is another XDP program attached (`ip link show {interface}`)?"
        ),
    })
}

/// Detaches the program from the interface of `link`.
pub fn detach(ebpf: &mut Ebpf, link: XdpLinkId) -> Result<()> {
    program(ebpf)?
        .detach(link)
        .context("detaching the XDP program failed")
}
