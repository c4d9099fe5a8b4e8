//! The generator's template frame and the checksum sums it needs (`lb_common::bench`).
//!
//! The template is flow 0's frame with valid checksums. The generator changes only the MACs,
//! the low 16 bits of the source address, the source port and the two checksums; it computes
//! the checksums from the partial sums here plus the fields it varies. The tests below prove
//! that this gives the same bytes as building each flow's frame from scratch. IPv6 frames
//! (to an IPv6 VIP) vary the last 4 bytes of the source address instead, and have no IP
//! checksum.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;
use lb_common::bench::{
    GeneratorConfig, IPV4_OFFSET, IPV6_OFFSET, L4_OFFSET, L4_OFFSET_V6, MAX_FLOWS, flow_source,
};

use super::Protocol;

/// Flow 0's source address: the generator's flows come from 198.19.0.0/16 (and more ports).
pub const SOURCE_BASE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);
/// IPv6 flows come from 2001:2:19::/96, the last 32 bits those of the IPv4 flow.
pub const SOURCE_PREFIX6: [u16; 6] = [0x2001, 2, 0x19, 0, 0, 0];
/// Flow 0's source port.
pub const SOURCE_PORT_BASE: u16 = 10_000;
const TTL: u8 = 64;
const TCP_SEQUENCE: u32 = 1;
const TCP_ACKNOWLEDGMENT: u32 = 1;
const TCP_WINDOW: u16 = 64_240;
/// Smallest frame the generator sends: Ethernet, IPv4 and TCP headers (UDP needs less).
pub const MIN_FRAME_LEN: usize = L4_OFFSET + 20;
/// Smallest IPv6 frame: Ethernet, IPv6 and TCP headers.
pub const MIN_FRAME_LEN_V6: usize = L4_OFFSET_V6 + 20;
/// Largest frame: a standard Ethernet MTU's worth.
pub const MAX_FRAME_LEN: usize = 1514;

/// IPv4 header fields, relative to the header.
const IPV4_CHECKSUM: usize = 10;
const IPV4_SADDR_LOW: usize = 14;
const IPV4_HEADER_LEN: usize = 20;
/// IPv6 addresses, relative to the header.
const IPV6_ADDRESSES: std::ops::Range<usize> = 8..40;
/// The low 16 bits of the source address (what the generator varies within a port).
const IPV6_SADDR_LOW: usize = 8 + 14;
/// TCP/UDP fields, relative to the L4 header.
const L4_SPORT: usize = 0;
const TCP_CHECKSUM: usize = 16;
const UDP_CHECKSUM: usize = 6;

/// What one benchmark traffic stream looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    pub protocol: Protocol,
    pub flows: u32,
    /// Frame length as XDP sees it (no FCS).
    pub frame_len: usize,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// IPv4 or IPv6: the frames are of its family.
    pub vip: IpAddr,
    pub port: u16,
}

impl Stream {
    /// Where the TCP/UDP header starts.
    #[must_use]
    pub const fn l4_offset(&self) -> usize {
        if self.vip.is_ipv6() {
            L4_OFFSET_V6
        } else {
            L4_OFFSET
        }
    }

    /// The smallest frame of this family (with a TCP header).
    #[must_use]
    pub const fn min_frame_len(&self) -> usize {
        if self.vip.is_ipv6() {
            MIN_FRAME_LEN_V6
        } else {
            MIN_FRAME_LEN
        }
    }
}

/// The IPv6 source address of the flow whose IPv4-style source is `saddr`.
fn source6(saddr: u32) -> Ipv6Addr {
    let [a, b, c, d, e, f] = SOURCE_PREFIX6;
    let [g, h] = [(saddr >> 16) as u16, saddr as u16];
    Ipv6Addr::new(a, b, c, d, e, f, g, h)
}

/// Flow `n`'s frame, built from scratch with valid checksums.
#[must_use]
pub fn frame(stream: &Stream, n: u32) -> Vec<u8> {
    let min = stream.min_frame_len();
    assert!(
        (min..=MAX_FRAME_LEN).contains(&stream.frame_len),
        "frame length {} outside {min}..={MAX_FRAME_LEN}",
        stream.frame_len
    );
    let (saddr, sport) = flow_source(&config_for(stream, 0, 0), n);
    let ethernet = PacketBuilder::ethernet2(stream.src_mac, stream.dst_mac);
    let ip = match stream.vip {
        IpAddr::V4(vip) => ethernet.ipv4(Ipv4Addr::from(saddr).octets(), vip.octets(), TTL),
        IpAddr::V6(vip) => ethernet.ipv6(source6(saddr).octets(), vip.octets(), TTL),
    };
    let l4_offset = stream.l4_offset();
    let mut frame = Vec::with_capacity(stream.frame_len);
    match stream.protocol.number() {
        lb_common::IPPROTO_TCP => {
            let step = ip
                .tcp(sport, stream.port, TCP_SEQUENCE, TCP_WINDOW)
                .ack(TCP_ACKNOWLEDGMENT);
            let payload = vec![0; stream.frame_len - l4_offset - 20];
            step.write_to_vec(&mut frame, &payload)
        }
        _ => {
            let step = ip.udp(sport, stream.port);
            let payload = vec![0; stream.frame_len - l4_offset - 8];
            step.write_to_vec(&mut frame, &payload)
        }
    }
    .expect("etherparse writes any benchmark frame");
    assert_eq!(frame.len(), stream.frame_len);
    frame
}

/// The generator's template (flow 0) and its config.
#[must_use]
pub fn template(stream: &Stream) -> (Vec<u8>, GeneratorConfig) {
    assert!(
        (1..=MAX_FLOWS).contains(&stream.flows),
        "flows must be 1..={MAX_FLOWS}, not {}",
        stream.flows
    );
    let frame = frame(stream, 0);
    let l4 = &frame[stream.l4_offset()..];
    // Zero what the generator varies or computes, then sum.
    let (ip_sum, addresses) = if stream.vip.is_ipv6() {
        let ip = &frame[IPV6_OFFSET..L4_OFFSET_V6];
        let mut ip_fixed = ip.to_vec();
        ip_fixed[IPV6_SADDR_LOW..IPV6_SADDR_LOW + 2].fill(0);
        // No IP checksum; the pseudo-header has both addresses.
        (0, sum_words(&ip_fixed[IPV6_ADDRESSES]))
    } else {
        let ip = &frame[IPV4_OFFSET..IPV4_OFFSET + IPV4_HEADER_LEN];
        let mut ip_fixed = ip.to_vec();
        ip_fixed[IPV4_CHECKSUM..IPV4_CHECKSUM + 2].fill(0);
        ip_fixed[IPV4_SADDR_LOW..IPV4_SADDR_LOW + 2].fill(0);
        (sum_words(&ip_fixed), sum_words(&ip_fixed[12..20]))
    };
    let mut l4_fixed = l4.to_vec();
    let checksum_at = checksum_offset(stream.protocol);
    l4_fixed[checksum_at..checksum_at + 2].fill(0);
    l4_fixed[L4_SPORT..L4_SPORT + 2].fill(0);
    let l4_len = u32::try_from(l4.len()).expect("a frame is short");
    // Pseudo-header: the addresses (the source's low 16 bits zero, see above), protocol,
    // L4 length.
    let pseudo = addresses + u32::from(stream.protocol.number()) + l4_len;
    let l4_sum = pseudo + sum_words(&l4_fixed);
    (frame, config_for(stream, ip_sum, l4_sum))
}

/// Where the TCP or UDP checksum is in the L4 header.
const fn checksum_offset(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Tcp | Protocol::Tcp6 => TCP_CHECKSUM,
        Protocol::Udp | Protocol::Udp6 => UDP_CHECKSUM,
    }
}

fn config_for(stream: &Stream, ip_sum: u32, l4_sum: u32) -> GeneratorConfig {
    GeneratorConfig {
        dst_mac: stream.dst_mac,
        src_mac: stream.src_mac,
        flows: stream.flows,
        saddr_base: u32::from(SOURCE_BASE),
        sport_base: SOURCE_PORT_BASE,
        protocol: stream.protocol.number(),
        ipv6: u8::from(stream.vip.is_ipv6()),
        ip_sum,
        l4_sum,
    }
}

/// The one's-complement sum, unfolded, of `bytes` as big-endian 16-bit words (an odd last
/// byte is padded with zero).
fn sum_words(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

#[cfg(test)]
mod tests {
    use lb_common::bench::{ipv4_checksum, l4_checksum};

    use super::*;

    /// What the generator does to the template for flow `n` (lb-ebpf/src/bin/drlb-bench.rs).
    fn generated(template: &[u8], config: &GeneratorConfig, n: u32, protocol: Protocol) -> Vec<u8> {
        let mut frame = template.to_vec();
        let (saddr, sport) = flow_source(config, n);
        frame[0..6].copy_from_slice(&config.dst_mac);
        frame[6..12].copy_from_slice(&config.src_mac);
        let l4_offset = if config.ipv6 == 0 {
            frame[IPV4_OFFSET + 12..IPV4_OFFSET + 16].copy_from_slice(&saddr.to_be_bytes());
            frame[IPV4_OFFSET + IPV4_CHECKSUM..IPV4_OFFSET + IPV4_CHECKSUM + 2]
                .copy_from_slice(&ipv4_checksum(config, saddr).to_be_bytes());
            L4_OFFSET
        } else {
            let at = lb_common::bench::IPV6_SADDR_LOW_OFFSET;
            frame[at..at + 4].copy_from_slice(&saddr.to_be_bytes());
            L4_OFFSET_V6
        };
        frame[l4_offset..l4_offset + 2].copy_from_slice(&sport.to_be_bytes());
        let at = l4_offset + checksum_offset(protocol);
        frame[at..at + 2].copy_from_slice(&l4_checksum(config, saddr, sport).to_be_bytes());
        frame
    }

    fn stream(protocol: Protocol, frame_len: usize) -> Stream {
        Stream {
            protocol,
            flows: MAX_FLOWS,
            frame_len,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            vip: protocol.vip(),
            port: 8080,
        }
    }

    #[test]
    fn generated_ipv6_frames_equal_frames_built_from_scratch() {
        for protocol in [Protocol::Tcp6, Protocol::Udp6] {
            for len in [MIN_FRAME_LEN_V6, 75, 1514] {
                let s = stream(protocol, len);
                let (template, config) = template(&s);
                assert_eq!(config.ipv6, 1);
                for n in [0, 1, 0xfffe, 0xffff, 0x1_0000, 999_999, MAX_FLOWS - 1] {
                    let built = frame(&s, n);
                    assert_eq!(
                        generated(&template, &config, n, protocol),
                        built,
                        "{protocol:?}, {len} bytes, flow {n}"
                    );
                    // etherparse reads it back as IPv6 to the IPv6 VIP.
                    let sliced = etherparse::SlicedPacket::from_ethernet(&built)
                        .expect("a well-formed frame");
                    let Some(etherparse::NetSlice::Ipv6(ip)) = sliced.net else {
                        panic!("not IPv6: {sliced:?}");
                    };
                    assert_eq!(ip.header().destination_addr(), super::super::VIP6);
                }
            }
        }
    }

    #[test]
    fn generated_frames_equal_frames_built_from_scratch() {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            for len in [MIN_FRAME_LEN, 64, 65, 1514] {
                let s = stream(protocol, len);
                let (template, config) = template(&s);
                for n in [0, 1, 0xfffe, 0xffff, 0x1_0000, 999_999, MAX_FLOWS - 1] {
                    assert_eq!(
                        generated(&template, &config, n, protocol),
                        frame(&s, n),
                        "{protocol:?}, {len} bytes, flow {n}"
                    );
                }
            }
        }
    }
}
