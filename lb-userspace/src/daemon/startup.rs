//! The steps of `drlb run` before it serves: attaching the program (with the veth peers' needs),
//! forwarding the program's log, resolving backends' MACs, announcing the VIPs.

use std::{net::IpAddr, time::Instant};

use anyhow::{Context as _, Result, bail};
use tracing::{info, warn};

use super::{ANNOUNCE_COUNT, ANNOUNCE_GAP, RESOLVE_POLL, STARTUP_RESOLVE_TIMEOUT};
use crate::{
    config::XdpMode,
    dataplane::{
        loader::{self, AttachMode, Attached},
        pins::PinDir,
    },
    director::Controller,
    net::{
        self,
        arp::ArpSocket,
        garp,
        netlink::{InterfaceInfo, NeighbourMacs, Netlink},
    },
};

/// veth hands frames sent with XDP_TX or a redirect only to a peer that runs XDP (its NAPI is
/// off otherwise), whatever runs on the veth itself. A peer in this namespace gets drlb's pass
/// program, pinned like the rest of the data plane; for a peer elsewhere drlb says what its
/// owner must do.
pub async fn prepare_veth_peers(netlink: &Netlink, interfaces: &[InterfaceInfo], pins: &PinDir) {
    for (n, interface) in interfaces.iter().enumerate() {
        let Some(peer) = interface.veth_peer else {
            continue;
        };
        // The VLANs of one trunk share its peer: prepared once.
        if interfaces[..n]
            .iter()
            .any(|i| i.xdp_ifindex() == interface.xdp_ifindex())
        {
            continue;
        }
        if !peer.same_namespace {
            warn!(
                interface = %interface.name,
                "a veth whose peer is in another network namespace: the frames drlb sends out of it \
                 arrive only if that peer runs an XDP program (an XDP_PASS one will do; see README)"
            );
            continue;
        }
        if interfaces.iter().any(|i| i.xdp_ifindex() == peer.ifindex) {
            continue; // drlb runs on the peer too
        }
        let name = netlink
            .link_name(peer.ifindex)
            .await
            .unwrap_or_else(|_| peer.ifindex.to_string());
        match loader::attach_pass_program_pinned(peer.ifindex, pins) {
            Ok(true) => {
                info!(interface = %interface.name, peer = %name, "pass program attached to the veth peer, so that it receives what drlb sends");
            }
            Ok(false) => {
                info!(interface = %interface.name, peer = %name, "the veth peer keeps the pass program an earlier drlb attached");
            }
            Err(e) => warn!(
                interface = %interface.name,
                peer = %name,
                "could not attach the pass program to the veth peer ({e:#}); unless the peer runs XDP already, \
                 frames drlb sends out of {} are dropped",
                interface.name
            ),
        }
    }
}

/// Attaches the program to one interface through a pinned link: into the link an earlier
/// drlb left (atomically replacing its program), else in the configured mode (`auto` falls back
/// from native to generic). Returns the mode it runs in.
pub fn attach(
    ebpf: &mut aya::Ebpf,
    interface: &InterfaceInfo,
    mode: XdpMode,
    pins: &PinDir,
) -> Result<String> {
    let (name, ifindex) = (&interface.name, interface.ifindex);
    let attach = |ebpf: &mut aya::Ebpf, mode: AttachMode| {
        loader::attach_pinned(ebpf, name, ifindex, mode, pins).map(|attached| match attached {
            Attached::New => {
                info!(interface = %name, mode = mode.name(), "XDP program attached");
                mode.name().to_owned()
            }
            Attached::Replaced(pinned) => {
                info!(interface = %name, mode = %pinned, "XDP program replaced in the running data plane (atomically)");
                pinned
            }
        })
    };
    match mode {
        XdpMode::Native => attach(ebpf, AttachMode::Native),
        XdpMode::Generic => attach(ebpf, AttachMode::Generic),
        XdpMode::Auto => attach(ebpf, AttachMode::Native).or_else(|e| {
            warn!(interface = %name, "native XDP refused ({e:#}); falling back to generic mode");
            attach(ebpf, AttachMode::Generic)
        }),
    }
}

/// The device the program is attached to for `interface`: itself, or the parent of a VLAN,
/// whose rx VLAN offload is then turned off (a NIC that strips tags on receive hides them from
/// XDP; the program needs them to tell the VLANs apart).
pub async fn device_of(netlink: &Netlink, interface: &InterfaceInfo) -> Result<InterfaceInfo> {
    let Some(vlan) = interface.vlan else {
        return Ok(interface.clone());
    };
    let name = netlink.link_name(vlan.parent).await.with_context(|| {
        format!(
            "the parent device of {} (ifindex {}) is gone",
            interface.name, vlan.parent
        )
    })?;
    if net::ethtool::disable_rx_vlan_offload(&name)? {
        info!(interface = %name, vlan = %interface.name, "rx VLAN offload turned off on the trunk, so that XDP sees the VLAN tags (`drlb doctor` reports it)");
    }
    Ok(InterfaceInfo {
        name,
        ifindex: vlan.parent,
        vlan: None,
        ..interface.clone()
    })
}

/// Detaches the data plane from interfaces it was pinned on that the config no longer lists.
pub fn detach_unlisted(pins: &PinDir, interfaces: &[InterfaceInfo]) -> Result<()> {
    for (ifindex, _, path) in pins.pinned_links()? {
        if !interfaces.iter().any(|i| i.xdp_ifindex() == ifindex) {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing {} failed", path.display()))?;
            info!(
                ifindex,
                "XDP program detached from an interface the config no longer lists"
            );
        }
    }
    Ok(())
}

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "drlb run needs root (it loads an XDP program and writes BPF maps): run it with sudo"
        );
    }
    Ok(())
}

/// Forwards the program's log records (aya-log) to our logger.
pub fn start_ebpf_logger(ebpf: &mut aya::Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(e) => return warn!("the XDP program's log cannot be read: {e}"),
    };
    // SAFETY: the logger owns its ring-buffer fd, which stays open and the same for as long as
    // the AsyncFd owns the logger.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut logger = match registered {
        Ok(logger) => logger,
        Err(e) => return warn!("the XDP program's log cannot be polled: {e}"),
    };
    tokio::spawn(async move {
        while let Ok(mut guard) = logger.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

/// Asks the kernel to resolve `wanted` and waits a little for the answers.
pub async fn resolve(
    netlink: &Netlink,
    ifindexes: &[u32],
    wanted: &[(u32, IpAddr)],
) -> Result<NeighbourMacs> {
    for &(ifindex, addr) in wanted {
        netlink.keep_resolved(ifindex, addr).await?;
    }
    let deadline = Instant::now() + STARTUP_RESOLVE_TIMEOUT;
    loop {
        let macs = netlink.neighbour_macs(ifindexes).await?;
        let all_known = wanted.iter().all(|a| matches!(macs.get(a), Some(Some(_))));
        if all_known || Instant::now() >= deadline {
            return Ok(macs);
        }
        tokio::time::sleep(RESOLVE_POLL).await;
    }
}

/// Announces every active VIP on every interface (the program answers ARP on all of them).
pub async fn announce_vips(director: &Controller) {
    if !director.config().director.arp {
        return info!(
            "arp = false: the VIPs are routed here, not announced with gratuitous ARP or unsolicited NA"
        );
    }
    let socket = match ArpSocket::sender(0) {
        Ok(socket) => socket,
        Err(e) => return warn!("VIPs not announced: {e:#}"),
    };
    for round in 0..ANNOUNCE_COUNT {
        if round > 0 {
            tokio::time::sleep(ANNOUNCE_GAP).await;
        }
        for vip in director.active_vips() {
            for interface in director.interfaces() {
                let sent = garp::announcement(interface.mac, vip)
                    .and_then(|frame| socket.send_on(interface.ifindex, &frame));
                if let Err(e) = sent {
                    warn!(%vip, interface = %interface.name, "announcing the VIP (gratuitous ARP, or unsolicited NA for IPv6) failed: {e:#}");
                }
            }
        }
    }
    info!(vips = ?director.active_vips(), "VIPs announced with gratuitous ARP (unsolicited NA for IPv6)");
}
