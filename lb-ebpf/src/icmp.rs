//! ICMP and ICMPv6 to a VIP. Errors about a service flow are relayed to the flow's backend: a
//! router on the path from a real server to a client sends "fragmentation needed" (IPv6:
//! "packet too big"; path-MTU discovery) or "time exceeded" to the VIP, the source of the reply
//! that did not fit, and only the real server can act on it. Echo requests to an active VIP are
//! answered in place, so the VIP can be pinged as on an IPVS director. Anything else is no
//! service's (`main.rs` judges it), but neighbour discovery (ICMPv6 133..=137), which is the
//! stack's (or `ndp`'s) to answer: it passes.
//!
//! Both families share the steps; [`IcmpFamily`] says what differs (types, the IP header's
//! turn-around for a reply, where the quoted packet's ports lie).

use aya_ebpf::programs::XdpContext;
use lb_common::{
    ECHO_REPLY_TTL, Event, IPPROTO_TCP, IPPROTO_UDP, SERVICE_FLAG_STANDBY, VIP_FLAG_ACTIVE, Verdict,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    checksum::replace_word,
    family::Family,
    forward::{self, MAC_GROUP_BIT},
    maps,
    parse::{Flow, IPV6_VERSION, Ipv6, ipv6, ptr_at},
    select, stats,
};

/// Type, code, checksum and 4 bytes that depend on the type (echo: id and sequence); the same
/// in ICMP and ICMPv6.
const ICMP_HEADER_LEN: usize = 8;
const ICMP_ECHO_CODE: u8 = 0;
/// Where the checksum lies in the ICMP header.
const ICMP_CHECKSUM_AT: usize = 2;
/// An error quotes the offending packet's IP header and at least its first 8 bytes (RFC 792;
/// ICMPv6 as much as fits), which hold TCP's and UDP's ports.
const QUOTED_L4_LEN: usize = 8;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const IPV4_VERSION: u8 = 4;
/// The fragment offset in the host-order flags/offset field: a quoted later fragment carries
/// no ports.
const IPV4_OFFSET_MASK: u16 = 0x1fff;

const ICMPV6_DEST_UNREACHABLE: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
/// Neighbour discovery (router solicitation and advertisement, neighbour solicitation and
/// advertisement, redirect): never this module's.
const ICMPV6_NDP: core::ops::RangeInclusive<u8> = 133..=137;

/// What ICMP and ICMPv6 do differently.
pub trait IcmpFamily: Family {
    const ECHO_REQUEST: u8;
    const ECHO_REPLY: u8;
    /// An error type that quotes a packet and is relayed.
    fn is_relayed_error(kind: u8) -> bool;
    /// Types left to the stack whatever the VIP (IPv6's neighbour discovery).
    fn is_passed(kind: u8) -> bool;
    /// The family's IP header.
    type IpHeader;
    /// Where the ICMP header of an echo request is, if the request is answered: its reply is
    /// the request turned around, which only works when nothing lies between the IP and ICMP
    /// headers. IPv6 computes it from `ip_offset`, so the verifier sees both headers' checks
    /// on one packet pointer (older verifiers cannot relate two separately computed offsets).
    fn echo_icmp_offset(ip_offset: usize, l4_offset: usize) -> Option<usize>;
    /// Turns the IP header around for a reply: addresses swapped, TTL (hop limit) reset, the
    /// header checksum (IPv4) updated.
    fn turn_around(ip: &mut Self::IpHeader);
    /// The flow a quoted packet (at `quoted_offset`, `quoted_len` bytes of the error after its
    /// header) answers, if it is a whole TCP/UDP packet from `vip` with its ports: its
    /// reverse, client -> VIP:port.
    fn quoted_flow(
        ctx: &XdpContext,
        vip: Self,
        quoted_offset: usize,
        quoted_len: usize,
    ) -> Option<Flow<Self>>;
}

impl IcmpFamily for [u8; 4] {
    const ECHO_REQUEST: u8 = ICMP_ECHO_REQUEST;
    const ECHO_REPLY: u8 = ICMP_ECHO_REPLY;

    #[inline(always)]
    fn is_relayed_error(kind: u8) -> bool {
        matches!(kind, ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED)
    }

    #[inline(always)]
    fn is_passed(_kind: u8) -> bool {
        false
    }

    type IpHeader = Ipv4Hdr;

    #[inline(always)]
    fn echo_icmp_offset(_ip_offset: usize, l4_offset: usize) -> Option<usize> {
        Some(l4_offset) // IPv4 options are turned around with the header
    }

    #[inline(always)]
    fn turn_around(ip: &mut Ipv4Hdr) {
        core::mem::swap(&mut ip.src_addr, &mut ip.dst_addr);
        let old = u16::from_be_bytes([ip.ttl, ip.proto]);
        ip.ttl = ECHO_REPLY_TTL;
        let new = u16::from_be_bytes([ip.ttl, ip.proto]);
        ip.check = replace_word(u16::from_be_bytes(ip.check), old, new).to_be_bytes();
    }

    #[inline(always)]
    fn quoted_flow(
        ctx: &XdpContext,
        vip: Self,
        quoted_offset: usize,
        quoted_len: usize,
    ) -> Option<Flow<Self>> {
        let quoted = ptr_at::<Ipv4Hdr>(ctx, quoted_offset)?;
        // SAFETY: ptr_at checked the bounds; Ipv4Hdr has alignment 1.
        let quoted = unsafe { &*quoted };
        let header_len = usize::from(quoted.vihl & 0x0f) * 4;
        if quoted.vihl >> 4 != IPV4_VERSION
            || header_len < Ipv4Hdr::LEN
            || u16::from_be_bytes(quoted.frags) & IPV4_OFFSET_MASK != 0
            || !matches!(quoted.proto, IPPROTO_TCP | IPPROTO_UDP)
            || quoted.src_addr != vip
            || header_len + QUOTED_L4_LEN > quoted_len
        {
            return None;
        }
        reversed(
            ctx,
            quoted.dst_addr,
            vip,
            quoted.proto,
            quoted_offset + header_len,
        )
    }
}

impl IcmpFamily for Ipv6 {
    const ECHO_REQUEST: u8 = ICMPV6_ECHO_REQUEST;
    const ECHO_REPLY: u8 = ICMPV6_ECHO_REPLY;

    #[inline(always)]
    fn is_relayed_error(kind: u8) -> bool {
        matches!(
            kind,
            ICMPV6_DEST_UNREACHABLE | ICMPV6_PACKET_TOO_BIG | ICMPV6_TIME_EXCEEDED
        )
    }

    #[inline(always)]
    fn is_passed(kind: u8) -> bool {
        ICMPV6_NDP.contains(&kind)
    }

    type IpHeader = Ipv6Hdr;

    #[inline(always)]
    fn echo_icmp_offset(ip_offset: usize, l4_offset: usize) -> Option<usize> {
        // Extension headers (a routing header above all) would need turning around too.
        let right_after = ip_offset + Ipv6Hdr::LEN;
        (l4_offset == right_after).then_some(right_after)
    }

    #[inline(always)]
    fn turn_around(ip: &mut Ipv6Hdr) {
        // IPv6 has no header checksum; ICMPv6's pseudo-header sum does not change when the
        // addresses swap.
        core::mem::swap(&mut ip.src_addr, &mut ip.dst_addr);
        ip.hop_limit = ECHO_REPLY_TTL;
    }

    /// The quoted packet's TCP/UDP header must follow its fixed header directly: extension
    /// headers in a quote are not walked (a reply from a real server carries none).
    #[inline(always)]
    fn quoted_flow(
        ctx: &XdpContext,
        vip: Self,
        quoted_offset: usize,
        quoted_len: usize,
    ) -> Option<Flow<Self>> {
        let quoted = ptr_at::<Ipv6Hdr>(ctx, quoted_offset)?;
        // SAFETY: ptr_at checked the bounds; Ipv6Hdr has alignment 1.
        let quoted = unsafe { &*quoted };
        if quoted.vcf[0] >> 4 != IPV6_VERSION
            || !matches!(quoted.next_hdr, IPPROTO_TCP | IPPROTO_UDP)
            || ipv6(&quoted.src_addr) != vip
            || Ipv6Hdr::LEN + QUOTED_L4_LEN > quoted_len
        {
            return None;
        }
        reversed(
            ctx,
            ipv6(&quoted.dst_addr),
            vip,
            quoted.next_hdr,
            quoted_offset + Ipv6Hdr::LEN,
        )
    }
}

/// The flow client -> VIP:port that a quoted packet VIP:port -> client, whose ports lie at
/// `ports_offset`, answers.
#[inline(always)]
fn reversed<A: Family>(
    ctx: &XdpContext,
    client: A,
    vip: A,
    protocol: u8,
    ports_offset: usize,
) -> Option<Flow<A>> {
    let ports = ptr_at::<[u8; 4]>(ctx, ports_offset)?;
    // SAFETY: ptr_at checked the bounds; alignment 1.
    let ports = unsafe { *ports };
    Some(Flow {
        saddr: client,
        daddr: vip,
        sport: u16::from_be_bytes([ports[2], ports[3]]),
        dport: u16::from_be_bytes([ports[0], ports[1]]),
        protocol,
        l4_offset: 0,
        l4_len: 0,
        first_fragment_id: None,
    })
}

/// The verdict for an ICMP message (not a fragment) to the VIP `daddr`, whose `VIP_STATES`
/// flags are `vip_flags`, or `None` when it is neither an echo request nor an error quoting a
/// service flow: no service's.
#[inline(always)]
pub fn handle<A: IcmpFamily>(
    ctx: &XdpContext,
    ip_offset: usize,
    daddr: A,
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
    if A::is_passed(kind) {
        return Some(Verdict::Pass);
    }
    if kind == A::ECHO_REQUEST && code == ICMP_ECHO_CODE {
        let l4_offset = A::echo_icmp_offset(ip_offset, l4_offset)?;
        return echo::<A>(ctx, eth, vip_flags, vlan, ip_offset, l4_offset);
    }
    if A::is_relayed_error(kind) && maps::icmp_relay_on() {
        return relay(ctx, daddr, vlan, l4_offset, l4_len);
    }
    None
}

/// Turns the echo request into its reply in place: MACs and addresses swapped, type
/// [`IcmpFamily::ECHO_REPLY`], TTL (hop limit) reset, checksums updated for the words that
/// changed (swapping two words of a sum leaves it unchanged). Only for requests sent to our
/// MAC from a unicast one; a standby does not answer (`drop_standby`).
///
/// A VIP that is also a director address (`VIP_FLAG_LOCAL`) is answered here too, as its
/// stack would: same reply, one less trip, and the answer follows the active/standby state
/// rather than who holds the address.
#[inline(always)]
fn echo<A: IcmpFamily>(
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
    // Both headers are checked before anything is written.
    let ip = ptr_at::<A::IpHeader>(ctx, ip_offset)?;
    let icmp = ptr_at::<[u8; ICMP_HEADER_LEN]>(ctx, l4_offset)?;
    // SAFETY: ptr_at checked every header's bounds; all fields have alignment 1.
    unsafe {
        A::turn_around(&mut *ip);
        (*eth).dst_addr = requester_mac;
        (*eth).src_addr = interface.mac;
        let icmp = &mut *icmp;
        let old = u16::from_be_bytes([icmp[0], icmp[1]]);
        icmp[0] = A::ECHO_REPLY;
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
fn relay<A: IcmpFamily>(
    ctx: &XdpContext,
    daddr: A,
    vlan: u16,
    l4_offset: usize,
    l4_len: usize,
) -> Option<Verdict> {
    let flow = A::quoted_flow(
        ctx,
        daddr,
        l4_offset + ICMP_HEADER_LEN,
        l4_len - ICMP_HEADER_LEN,
    )?;
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
