//! The generator's template frame and the checksum sums it needs (`lb_common::bench`).
//!
//! The template is flow 0's frame with valid checksums. The generator changes only the MACs,
//! the low 16 bits of the source address, the source port and the two checksums; it computes
//! the checksums from the partial sums here plus the fields it varies. The tests below prove
//! that this gives the same bytes as building each flow's frame from scratch.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use lb_common::bench::{GeneratorConfig, IPV4_OFFSET, L4_OFFSET, MAX_FLOWS, flow_source};

use super::Protocol;

/// Flow 0's source address: the generator's flows come from 198.19.0.0/16 (and more ports).
pub const SOURCE_BASE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);
/// Flow 0's source port.
pub const SOURCE_PORT_BASE: u16 = 10_000;
const TTL: u8 = 64;
const TCP_SEQUENCE: u32 = 1;
const TCP_ACKNOWLEDGMENT: u32 = 1;
const TCP_WINDOW: u16 = 64_240;
/// Smallest frame the generator sends: Ethernet, IPv4 and TCP headers (UDP needs less).
pub const MIN_FRAME_LEN: usize = L4_OFFSET + 20;
/// Largest frame: a standard Ethernet MTU's worth.
pub const MAX_FRAME_LEN: usize = 1514;

/// IPv4 header fields, relative to the header.
const IPV4_CHECKSUM: usize = 10;
const IPV4_SADDR_LOW: usize = 14;
const IPV4_HEADER_LEN: usize = 20;
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
    pub vip: Ipv4Addr,
    pub port: u16,
}

/// Flow `n`'s frame, built from scratch with valid checksums.
#[must_use]
pub fn frame(stream: &Stream, n: u32) -> Vec<u8> {
    assert!(
        (MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&stream.frame_len),
        "frame length {} outside {MIN_FRAME_LEN}..={MAX_FRAME_LEN}",
        stream.frame_len
    );
    let (saddr, sport) = flow_source(&config_for(stream, 0, 0), n);
    let ip = PacketBuilder::ethernet2(stream.src_mac, stream.dst_mac).ipv4(
        Ipv4Addr::from(saddr).octets(),
        stream.vip.octets(),
        TTL,
    );
    let mut frame = Vec::with_capacity(stream.frame_len);
    match stream.protocol {
        Protocol::Tcp => {
            let step = ip
                .tcp(sport, stream.port, TCP_SEQUENCE, TCP_WINDOW)
                .ack(TCP_ACKNOWLEDGMENT);
            let payload = vec![0; stream.frame_len - L4_OFFSET - 20];
            step.write_to_vec(&mut frame, &payload)
        }
        Protocol::Udp => {
            let step = ip.udp(sport, stream.port);
            let payload = vec![0; stream.frame_len - L4_OFFSET - 8];
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
    let ip = &frame[IPV4_OFFSET..IPV4_OFFSET + IPV4_HEADER_LEN];
    let l4 = &frame[L4_OFFSET..];
    // Zero what the generator varies or computes, then sum.
    let mut ip_fixed = ip.to_vec();
    ip_fixed[IPV4_CHECKSUM..IPV4_CHECKSUM + 2].fill(0);
    ip_fixed[IPV4_SADDR_LOW..IPV4_SADDR_LOW + 2].fill(0);
    let ip_sum = sum_words(&ip_fixed);
    let mut l4_fixed = l4.to_vec();
    let checksum_at = match stream.protocol {
        Protocol::Tcp => TCP_CHECKSUM,
        Protocol::Udp => UDP_CHECKSUM,
    };
    l4_fixed[checksum_at..checksum_at + 2].fill(0);
    l4_fixed[L4_SPORT..L4_SPORT + 2].fill(0);
    let l4_len = u32::try_from(l4.len()).expect("a frame is short");
    // Pseudo-header: source (high half only, see above), destination, protocol, L4 length.
    let pseudo = sum_words(&ip_fixed[12..20]) + u32::from(stream.protocol.number()) + l4_len;
    let l4_sum = pseudo + sum_words(&l4_fixed);
    (frame, config_for(stream, ip_sum, l4_sum))
}

fn config_for(stream: &Stream, ip_sum: u32, l4_sum: u32) -> GeneratorConfig {
    GeneratorConfig {
        dst_mac: stream.dst_mac,
        src_mac: stream.src_mac,
        flows: stream.flows,
        saddr_base: u32::from(SOURCE_BASE),
        sport_base: SOURCE_PORT_BASE,
        protocol: stream.protocol.number(),
        _pad: 0,
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

    /// What the generator does to the template for flow `n` (lb-ebpf/src/bench.rs).
    fn generated(template: &[u8], config: &GeneratorConfig, n: u32, protocol: Protocol) -> Vec<u8> {
        let mut frame = template.to_vec();
        let (saddr, sport) = flow_source(config, n);
        frame[0..6].copy_from_slice(&config.dst_mac);
        frame[6..12].copy_from_slice(&config.src_mac);
        frame[IPV4_OFFSET + 12..IPV4_OFFSET + 16].copy_from_slice(&saddr.to_be_bytes());
        frame[IPV4_OFFSET + IPV4_CHECKSUM..IPV4_OFFSET + IPV4_CHECKSUM + 2]
            .copy_from_slice(&ipv4_checksum(config, saddr).to_be_bytes());
        frame[L4_OFFSET..L4_OFFSET + 2].copy_from_slice(&sport.to_be_bytes());
        let at = L4_OFFSET
            + match protocol {
                Protocol::Tcp => TCP_CHECKSUM,
                Protocol::Udp => UDP_CHECKSUM,
            };
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
            vip: Ipv4Addr::new(198, 18, 0, 100),
            port: 8080,
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
