//! ICMP to a VIP. Errors about a service flow are relayed to the flow's backend: a router on
//! the path from a real server to a client sends "fragmentation needed" (path-MTU discovery)
//! or "time exceeded" to the VIP, the source of the reply that did not fit, and only the real
//! server can act on it. Echo requests to an active VIP are answered in place, so the VIP can
//! be pinged as on an IPVS director. Anything else is no service's (`main.rs` judges it).
//!
//! IPv4 only; ICMPv6 "packet too big" and echo will take the same shape with their own types.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    ECHO_REPLY_TTL, Event, IPPROTO_TCP, IPPROTO_UDP, SERVICE_FLAG_STANDBY, VIP_FLAG_ACTIVE, Verdict,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    checksum::replace_word,
    forward::{self, MAC_GROUP_BIT},
    maps,
    parse::{Flow, ptr_at},
    select, stats,
};

/// Type, code, checksum and 4 bytes that depend on the type (echo: id and sequence).
const ICMP_HEADER_LEN: usize = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_ECHO_CODE: u8 = 0;
/// Where the checksum lies in the ICMP header.
const ICMP_CHECKSUM_AT: usize = 2;
/// An error quotes the offending packet's IP header and at least its first 8 bytes (RFC 792),
/// which hold TCP's and UDP's ports.
const QUOTED_L4_LEN: usize = 8;
const IPV4_VERSION: u8 = 4;
/// The fragment offset in the host-order flags/offset field: a quoted later fragment carries
/// no ports.
const IPV4_OFFSET_MASK: u16 = 0x1fff;

/// The verdict for an ICMP message (not a fragment) to the VIP `daddr`, whose `VIP_STATES`
/// flags are `vip_flags`, or `None` when it is neither an echo request nor an error quoting a
/// service flow: no service's.
#[inline(always)]
pub fn handle(
    ctx: &XdpContext,
    ip_offset: usize,
    daddr: [u8; 4],
    vip_flags: u32,
    vlan: u16,
    l4_offset: usize,
    l4_len: usize,
) -> Option<Verdict> {
    if l4_len < ICMP_HEADER_LEN {
        return None;
    }
    // The Ethernet header first: a check at a constant offset the verifier can follow (after
    // the variable-offset ones below, the compiler would drop it as implied).
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    let header: *const [u8; 2] = ptr_at(ctx, l4_offset)?;
    // SAFETY: ptr_at checked the bounds; read only.
    let [kind, code] = unsafe { *header };
    match kind {
        ICMP_ECHO_REQUEST if code == ICMP_ECHO_CODE => {
            echo(ctx, eth, vip_flags, vlan, ip_offset, l4_offset)
        }
        ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED if maps::icmp_relay_on() => {
            relay(ctx, daddr, vlan, l4_offset, l4_len)
        }
        _ => None,
    }
}

/// Turns the echo request into its reply in place: MACs and addresses swapped, type 0, TTL
/// reset, both checksums updated for the words that changed (swapping two words of a sum
/// leaves it unchanged). Only for requests sent to our MAC from a unicast one; a standby does
/// not answer (`drop_standby`).
///
/// A VIP that is also a director address (`VIP_FLAG_LOCAL`) is answered here too, as its
/// stack would: same reply, one less trip, and the answer follows the active/standby state
/// rather than who holds the address.
#[inline(always)]
fn echo(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    vip_flags: u32,
    vlan: u16,
    ip_offset: usize,
    l4_offset: usize,
) -> Option<Verdict> {
    // SAFETY: ptr_at checked the bounds; MACs have alignment 1.
    let requester_mac = unsafe { (*eth).src_addr };
    if requester_mac[0] & MAC_GROUP_BIT != 0 {
        return None;
    }
    let interface = match forward::ours(ctx, vlan) {
        Ok(interface) => interface,
        Err(verdict) => return Some(verdict),
    };
    if vip_flags & VIP_FLAG_ACTIVE == 0 {
        return Some(Verdict::DropStandby);
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, ip_offset)?;
    let icmp = ptr_at::<[u8; ICMP_HEADER_LEN]>(ctx, l4_offset)?;
    // SAFETY: ptr_at checked every header's bounds; all fields have alignment 1.
    unsafe {
        (*eth).dst_addr = requester_mac;
        (*eth).src_addr = interface.mac;
        let ip = &mut *ip;
        core::mem::swap(&mut ip.src_addr, &mut ip.dst_addr);
        let old = u16::from_be_bytes([ip.ttl, ip.proto]);
        ip.ttl = ECHO_REPLY_TTL;
        let new = u16::from_be_bytes([ip.ttl, ip.proto]);
        ip.check = replace_word(u16::from_be_bytes(ip.check), old, new).to_be_bytes();
        let icmp = &mut *icmp;
        let old = u16::from_be_bytes([icmp[0], icmp[1]]);
        icmp[0] = ICMP_ECHO_REPLY;
        let new = u16::from_be_bytes([icmp[0], icmp[1]]);
        let check = u16::from_be_bytes([icmp[ICMP_CHECKSUM_AT], icmp[ICMP_CHECKSUM_AT + 1]]);
        let check = replace_word(check, old, new).to_be_bytes();
        icmp[ICMP_CHECKSUM_AT] = check[0];
        icmp[ICMP_CHECKSUM_AT + 1] = check[1];
    }
    Some(Verdict::EchoReply)
}

/// An error to the VIP `daddr` quoting a packet the VIP sent (a service's reply from a real
/// server, source VIP:port): sent, unchanged but for the MACs, to the backend of the flow the
/// quoted packet answers (client -> VIP:port), found as for the client's packets, in the flow
/// table or the Maglev table, but not remembered (no flow starts here). `None` when the quote
/// is cut short, a later fragment, not TCP/UDP, not from this VIP, or of no service.
#[inline(always)]
fn relay(
    ctx: &XdpContext,
    daddr: [u8; 4],
    vlan: u16,
    l4_offset: usize,
    l4_len: usize,
) -> Option<Verdict> {
    let quoted_offset = l4_offset + ICMP_HEADER_LEN;
    let quoted = ptr_at::<Ipv4Hdr>(ctx, quoted_offset)?;
    // SAFETY: ptr_at checked the bounds; Ipv4Hdr has alignment 1.
    let quoted = unsafe { &*quoted };
    let header_len = usize::from(quoted.vihl & 0x0f) * 4;
    if quoted.vihl >> 4 != IPV4_VERSION
        || header_len < Ipv4Hdr::LEN
        || u16::from_be_bytes(quoted.frags) & IPV4_OFFSET_MASK != 0
        || !matches!(quoted.proto, IPPROTO_TCP | IPPROTO_UDP)
        || quoted.src_addr != daddr
        || ICMP_HEADER_LEN + header_len + QUOTED_L4_LEN > l4_len
    {
        return None;
    }
    let ports = ptr_at::<[u8; 4]>(ctx, quoted_offset + header_len)?;
    // SAFETY: as above.
    let ports = unsafe { *ports };
    // The quoted packet went VIP:port -> client: the flow is its reverse.
    let flow = Flow {
        daddr_octets: daddr,
        saddr: u32::from_be_bytes(quoted.dst_addr),
        daddr: u32::from_be_bytes(daddr),
        sport: u16::from_be_bytes([ports[2], ports[3]]),
        dport: u16::from_be_bytes([ports[0], ports[1]]),
        protocol: quoted.proto,
        l4_offset: 0,
        l4_len: 0,
        first_fragment_id: None,
    };
    let service = select::service(&flow)?;
    if let Err(verdict) = forward::ours(ctx, vlan) {
        return Some(verdict);
    }
    if service.state.flags & SERVICE_FLAG_STANDBY != 0 {
        return Some(Verdict::DropStandby);
    }
    let chosen = match select::backend_of(service, &flow) {
        Ok(chosen) => chosen,
        Err(verdict) => return Some(verdict),
    };
    let verdict = forward::to_backend(ctx, chosen.backend, vlan);
    if matches!(verdict, Verdict::Tx | Verdict::Redirect) {
        stats::count_event(Event::IcmpRelay);
    }
    Some(verdict)
}
