//! The generator's fallback where the kernel refuses BPF_PROG_TEST_RUN's live-frames mode
//! (some hardened kernels answer EPERM before the run starts, for any program and frame):
//! the same frames, written from userspace and sent through an AF_PACKET socket on g0.
//!
//! Frame `k` of a run is flow `k % flows`, patched into the template exactly as the XDP
//! generator does it (the test below checks that against frames built from scratch). The
//! socket bypasses the qdisc: each frame goes straight to veth's xmit, which hands it to d0's
//! XDP in the same softirq, on the same CPU, as live frames do. Syscalls and skbs make this
//! slower per frame than live frames, so its rates are comparable with each other (rows of the
//! same report), not with reports made with live frames.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use lb_common::{
    IPPROTO_TCP,
    bench::{
        GeneratorConfig, IPV4_OFFSET, IPV6_SADDR_LOW_OFFSET, L4_OFFSET, L4_OFFSET_V6, flow_source,
        ipv4_checksum, l4_checksum,
    },
};

/// IPv4 header fields, relative to the header.
const IPV4_CHECKSUM: usize = 10;
const IPV4_SADDR: usize = 12;
/// TCP/UDP checksum fields, relative to the L4 header (the source port is at 0).
const TCP_CHECKSUM: usize = 16;
const UDP_CHECKSUM: usize = 6;

/// Writes flow `n`'s source address, source port and checksums into `frame`, a copy of the
/// template: what the XDP generator does to each frame (lb-ebpf/src/bin/drlb-bench.rs).
pub fn write_flow(frame: &mut [u8], config: &GeneratorConfig, n: u32) {
    let (saddr, sport) = flow_source(config, n);
    let l4 = if config.ipv6 == 0 {
        let ip = IPV4_OFFSET;
        frame[ip + IPV4_SADDR..ip + IPV4_SADDR + 4].copy_from_slice(&saddr.to_be_bytes());
        frame[ip + IPV4_CHECKSUM..ip + IPV4_CHECKSUM + 2]
            .copy_from_slice(&ipv4_checksum(config, saddr).to_be_bytes());
        L4_OFFSET
    } else {
        frame[IPV6_SADDR_LOW_OFFSET..IPV6_SADDR_LOW_OFFSET + 4]
            .copy_from_slice(&saddr.to_be_bytes());
        L4_OFFSET_V6
    };
    frame[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
    let at = l4
        + if config.protocol == IPPROTO_TCP {
            TCP_CHECKSUM
        } else {
            UDP_CHECKSUM
        };
    frame[at..at + 2].copy_from_slice(&l4_checksum(config, saddr, sport).to_be_bytes());
}

/// A raw AF_PACKET socket bound to one interface, sending only (protocol 0: it receives
/// nothing).
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens the socket on `ifindex` of the calling thread's network namespace (the socket
    /// stays in that namespace wherever it is used from).
    pub fn open(ifindex: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_ll is valid; the fields set are plain integers.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = i32::try_from(ifindex).expect("an ifindex fits i32");
        // SAFETY: the address is a valid sockaddr_ll of the length given.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&address).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error());
        }
        // Straight to the driver: veth has no queue to gain from, and the qdisc layer would
        // only add cost per frame.
        let on: libc::c_int = 1;
        // SAFETY: the option value is a c_int of the length given.
        let set = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                std::ptr::from_ref(&on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Offers every frame of `frames` to the interface, in order, with as few syscalls as the
    /// kernel allows. A frame the interface refuses (ENOBUFS: veth's ring toward d0 is full)
    /// is lost, like a live frame whose redirect fails: the sink's count shows it. Returns how
    /// many were lost that way.
    pub fn send(&self, frames: &mut [Vec<u8>]) -> u64 {
        let mut iovecs: Vec<libc::iovec> = frames
            .iter_mut()
            .map(|f| libc::iovec {
                iov_base: f.as_mut_ptr().cast(),
                iov_len: f.len(),
            })
            .collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iov| {
                // SAFETY: a zeroed msghdr (no address, no control data) is valid.
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                header.msg_iov = std::ptr::from_mut(iov);
                header.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: header,
                    msg_len: 0,
                }
            })
            .collect();
        let mut done = 0;
        let mut lost = 0;
        while done < messages.len() {
            let left = u32::try_from(messages.len() - done).expect("a batch is small");
            // SAFETY: the headers point at iovecs and frames that outlive the call.
            let n = unsafe {
                libc::sendmmsg(self.fd.as_raw_fd(), messages[done..].as_mut_ptr(), left, 0)
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::ENOBUFS | libc::EAGAIN) => {
                        done += 1;
                        lost += 1;
                    }
                    Some(libc::EINTR) => {}
                    _ => panic!("sending frames on the generator's packet socket: {error}"),
                }
            } else {
                done += usize::try_from(n).expect("sendmmsg counts up");
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{
        Protocol,
        frames::{MIN_FRAME_LEN, MIN_FRAME_LEN_V6, Stream, frame, template},
    };

    #[test]
    fn written_flows_equal_frames_built_from_scratch() {
        for protocol in Protocol::ALL {
            let min = if protocol.is_ipv6() {
                MIN_FRAME_LEN_V6
            } else {
                MIN_FRAME_LEN
            };
            for frame_len in [min, 75, 1514] {
                let stream = Stream {
                    protocol,
                    flows: lb_common::bench::MAX_FLOWS,
                    frame_len,
                    src_mac: [2, 0, 0, 0, 0, 1],
                    dst_mac: [2, 0, 0, 0, 0, 2],
                    vip: protocol.vip(),
                    port: protocol.port(),
                };
                let (template, config) = template(&stream);
                // One buffer reused from flow to flow, as the sender does.
                let mut buffer = template.clone();
                for n in [0, 1, 0xfffe, 0xffff, 0x1_0000, 999_999, stream.flows - 1, 3] {
                    write_flow(&mut buffer, &config, n);
                    assert_eq!(
                        buffer,
                        frame(&stream, n),
                        "{protocol:?}, {frame_len} bytes, flow {n}"
                    );
                }
            }
        }
    }
}
