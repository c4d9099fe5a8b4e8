//! The one ethtool setting drlb changes: rx VLAN offload. A NIC that strips the 802.1Q tag on
//! receive hands XDP the frame without it, so the program could not tell a trunk's VLANs
//! apart; drlb turns the offload off on the parent of every VLAN it serves (the stack inserts
//! no tag, so nothing else changes). The legacy flags calls (ETHTOOL_GFLAGS/SFLAGS) map
//! `ETH_FLAG_RXVLAN` to the `rx-vlan-hw-parse` feature, with no feature-name lookup.

use anyhow::{Result, bail};

const ETHTOOL_GFLAGS: u32 = 0x0000_0025;
const ETHTOOL_SFLAGS: u32 = 0x0000_0026;
/// `rx-vlan-hw-parse` (NETIF_F_HW_VLAN_CTAG_RX) in the legacy flags word.
const ETH_FLAG_RXVLAN: u32 = 1 << 8;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` as SIOCETHTOOL reads it: the name, then a pointer to the command.
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    /// ifreq's union is larger than the pointer.
    _rest: [u8; 16],
}

fn call(interface: &str, value: &mut EthtoolValue) -> std::io::Result<()> {
    let mut request = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: value,
        _rest: [0; 16],
    };
    let bytes = interface.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (to, from) in request.name.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    // SAFETY: a datagram socket only for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCETHTOOL reads the name and the command through the pointer, both ours and
    // alive for the call.
    let done = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &raw mut request) };
    let error = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if done < 0 { Err(error) } else { Ok(()) }
}

/// Whether `interface` strips VLAN tags on receive (rx-vlan-offload).
pub fn rx_vlan_offload(interface: &str) -> Result<bool> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    match call(interface, &mut value) {
        Ok(()) => Ok(value.data & ETH_FLAG_RXVLAN != 0),
        Err(e) => bail!("reading the offload flags of {interface} (ETHTOOL_GFLAGS) failed: {e}"),
    }
}

/// Turns rx-vlan-offload off on `interface`; returns whether it was on.
pub fn disable_rx_vlan_offload(interface: &str) -> Result<bool> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    if let Err(e) = call(interface, &mut value) {
        bail!("reading the offload flags of {interface} (ETHTOOL_GFLAGS) failed: {e}");
    }
    if value.data & ETH_FLAG_RXVLAN == 0 {
        return Ok(false);
    }
    let mut set = EthtoolValue {
        cmd: ETHTOOL_SFLAGS,
        data: value.data & !ETH_FLAG_RXVLAN,
    };
    if let Err(e) = call(interface, &mut set) {
        bail!(
            "turning rx VLAN offload off on {interface} failed ({e}): XDP would not see the VLAN \
             tags; try `ethtool -K {interface} rxvlan off`"
        );
    }
    Ok(true)
}
