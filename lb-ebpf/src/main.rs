//! drlb's XDP program: LVS-DR forwarding (IPv4 and IPv6) and ARP answering for VIPs.
//!
//! The entry point only dispatches; each step is a small module: [`parse`] (bounds-checked header
//! access, IPv4 and IPv6 with its extension headers), [`family`] (what differs between IPv4
//! and IPv6; every step below is written once over it), [`arp`] (answer ARP for a VIP), [`ndp`]
//! (answer IPv6 neighbour solicitations for a VIP), [`conflict`] (count ARP and NDP frames that
//! claim a VIP for another MAC), [`select`] (service, flow table and Maglev lookup), [`checksum`] (the veth
//! checksum trap, on new flows), [`icmp`] (relay ICMP errors about a service flow to its
//! backend, answer echo requests to a VIP), [`fragment`] (later fragments follow their first),
//! [`forward`] (is the frame ours; rewrite the MACs, XDP_TX or
//! redirect) and [`stats`] (per-CPU counters). Every path ends in one [`Verdict`], which is
//! counted and turned into an XDP action in one place. `parse` lives in the crate's library,
//! shared with the benchmark's object; `maps` declares every map.
#![no_std]
#![no_main]

mod arp;
mod checksum;
mod conflict;
mod family;
mod forward;
mod fragment;
mod icmp;
mod maps;
mod ndp;
mod select;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::error;
use lb_common::{Event, SERVICE_FLAG_STANDBY, VIP_FLAG_LOCAL, Verdict};
use lb_ebpf::parse::{self, Flow, Ipv6, L3, Unroutable};

use crate::{family::Family, icmp::IcmpFamily};

/// Frags-aware (`xdp.frags`): it may run on interfaces whose MTU exceeds a page, and reads and
/// writes only headers, which lie in the first buffer.
#[xdp(frags)]
pub fn drlb(ctx: XdpContext) -> u32 {
    // The first buffer's length: the whole frame but for a multi-buffer one, whose length the
    // forwarding path learns from its IP header (a helper call per frame would cost more).
    let mut frame_len = (ctx.data_end() - ctx.data()) as u64;
    let verdict = process(&ctx, &mut frame_len);
    if verdict == Verdict::Aborted {
        error!(&ctx, "drlb: impossible state, frame aborted");
    }
    stats::count_verdict(verdict, frame_len);
    xdp_action_of(verdict)
}

#[inline(always)]
fn process(ctx: &XdpContext, frame_len: &mut u64) -> Verdict {
    let eth = match parse::ethernet(ctx) {
        Ok(eth) => eth,
        Err(verdict) => return verdict,
    };
    match eth.l3 {
        L3::Arp(offset) => answer_arp(ctx, offset, eth.vlan),
        L3::Ipv4(offset) => forward_ipv4(ctx, offset, eth.vlan, frame_len),
        L3::Ipv6(offset) => {
            // Neighbour discovery for a VIP first; everything else takes the forwarding path.
            if let Some(verdict) = answer_ndp(ctx, offset, eth.vlan) {
                return verdict;
            }
            forward_ipv6(ctx, offset, eth.vlan, frame_len)
        }
        L3::Other => Verdict::Pass,
    }
}

/// IPv6's path, in BPF subprograms of their own: 16-byte addresses and keys need more stack
/// than one frame holds (the verifier allows 512 bytes for a chain of calls), and the
/// verifier checks each on its own. The parsed packet lives in the entry point's frame; the
/// parser and each handler run in frames of their own, one at a time, each beside the entry
/// point's.
#[inline(always)]
fn forward_ipv6(ctx: &XdpContext, offset: usize, vlan: u16, frame_len: &mut u64) -> Verdict {
    match &parse_ipv6(ctx, offset) {
        Ok(flow) => forward_flow_ipv6(ctx, flow, vlan, frame_len),
        Err(why @ Unroutable::Fragment { .. }) => follow_ipv6(ctx, why, vlan, *frame_len),
        Err(why @ Unroutable::Icmp { .. }) => icmp_ipv6(ctx, why, offset, vlan),
        Err(why) => unroutable(ctx, *why, offset, vlan, *frame_len),
    }
}

#[inline(never)]
fn parse_ipv6(ctx: &XdpContext, offset: usize) -> Result<Flow<Ipv6>, Unroutable<Ipv6>> {
    parse::ipv6_flow(ctx, offset)
}

#[inline(never)]
fn forward_flow_ipv6(
    ctx: &XdpContext,
    flow: &Flow<Ipv6>,
    vlan: u16,
    frame_len: &mut u64,
) -> Verdict {
    forward_flow(ctx, flow, vlan, frame_len)
}

/// `why` is a later fragment.
#[inline(never)]
fn follow_ipv6(ctx: &XdpContext, why: &Unroutable<Ipv6>, vlan: u16, frame_len: u64) -> Verdict {
    match *why {
        Unroutable::Fragment { daddr, key } => fragment::follow(ctx, daddr, key, vlan, frame_len),
        _ => Verdict::Aborted,
    }
}

/// `why` is an ICMPv6 message.
#[inline(never)]
fn icmp_ipv6(ctx: &XdpContext, why: &Unroutable<Ipv6>, offset: usize, vlan: u16) -> Verdict {
    match *why {
        Unroutable::Icmp {
            daddr,
            l4_offset,
            l4_len,
        } => icmp_to_vip(ctx, offset, daddr, vlan, l4_offset, l4_len),
        _ => Verdict::Aborted,
    }
}

/// ARP: conflicts noted, requests for a VIP answered. Inlined (as a BPF subprogram it cost
/// about 20 ns per request); its frame is small.
#[inline(always)]
fn answer_arp(ctx: &XdpContext, offset: usize, vlan: u16) -> Verdict {
    conflict::note(ctx, offset, vlan);
    arp::answer_request(ctx, offset, vlan)
}

/// Neighbour discovery (`ndp`), in a BPF subprogram of its own: the verifier bounds a chain of
/// frames at 512 bytes, and the entry point's frame (ARP inlined) with this one's fits
/// because `ndp` keeps addresses and MACs in words (see `ndp::handle`).
#[inline(never)]
fn answer_ndp(ctx: &XdpContext, offset: usize, vlan: u16) -> Option<Verdict> {
    ndp::handle(ctx, offset, vlan)
}

/// IPv4's path, the packet's IP header at `offset`: a BPF subprogram of its own (a call costs
/// about 8 ns per packet). Inlined, its locals (the ICMP relay's most) would be in the entry
/// point's frame, which every chain of calls starts with, and the chain through IPv6's ICMP
/// subprogram would pass the verifier's 512 bytes (528).
#[inline(never)]
fn forward_ipv4(ctx: &XdpContext, offset: usize, vlan: u16, frame_len: &mut u64) -> Verdict {
    match parse::ipv4_flow(ctx, offset) {
        Ok(flow) => forward_flow(ctx, &flow, vlan, frame_len),
        Err(why) => unroutable(ctx, why, offset, vlan, *frame_len),
    }
}

/// A packet without a flow, of either family: see [`Unroutable`].
#[inline(always)]
fn unroutable<A: IcmpFamily>(
    ctx: &XdpContext,
    why: Unroutable<A>,
    offset: usize,
    vlan: u16,
    frame_len: u64,
) -> Verdict {
    match why {
        Unroutable::NotBalanced { daddr } => no_service(ctx, daddr, vlan),
        Unroutable::Fragment { daddr, key } => fragment::follow(ctx, daddr, key, vlan, frame_len),
        Unroutable::Icmp {
            daddr,
            l4_offset,
            l4_len,
        } => icmp_to_vip(ctx, offset, daddr, vlan, l4_offset, l4_len),
        // Without a complete L4 header we must not forward, but only traffic for a VIP, sent to
        // us, is ours to judge: the rest goes to the stack, which applies its own checks.
        Unroutable::Truncated { daddr } => drop_if_ours(ctx, daddr, vlan, Verdict::DropMalformed),
        Unroutable::Malformed => Verdict::DropMalformed,
    }
}

/// An ICMP (ICMPv6) message to `daddr`: see `icmp`; not a VIP: the stack's.
#[inline(always)]
fn icmp_to_vip<A: IcmpFamily>(
    ctx: &XdpContext,
    offset: usize,
    daddr: A,
    vlan: u16,
    l4_offset: usize,
    l4_len: usize,
) -> Verdict {
    let Some(flags) = maps::vip_flags(daddr) else {
        return Verdict::Pass;
    };
    icmp::handle(ctx, offset, daddr, flags, vlan, l4_offset, l4_len)
        .unwrap_or_else(|| not_served(ctx, flags, vlan))
}

/// A TCP/UDP packet of either family: to its service's backend, if it has one.
#[inline(always)]
fn forward_flow<A: Family>(
    ctx: &XdpContext,
    flow: &Flow<A>,
    vlan: u16,
    frame_len: &mut u64,
) -> Verdict {
    // A jumbo frame's packet lies beyond its first buffer (Ethernet padding: within it).
    let packet_end = (flow.l4_offset + usize::from(flow.l4_len)) as u64;
    if packet_end > *frame_len {
        *frame_len = packet_end;
    }
    // Neither a VIP nor a service's address (the filter holds both): the stack's, decided
    // by one array read, before any hash lookup.
    if !maps::maybe_vip(flow.daddr) {
        return Verdict::Pass;
    }
    let Some((service, remembered)) = select::lookup(flow) else {
        return no_service(ctx, flow.daddr, vlan);
    };
    let interface = match forward::ours(ctx, vlan) {
        Ok(interface) => interface,
        Err(verdict) => return verdict,
    };
    // A standby director forwards nothing (see SERVICE_FLAG_STANDBY).
    if service.state.flags & SERVICE_FLAG_STANDBY != 0 {
        return Verdict::DropStandby;
    }
    let chosen = match remembered {
        Some(chosen) => chosen,
        None => match select::schedule_and_remember(service, flow) {
            Ok(chosen) => chosen,
            Err(verdict) => return verdict,
        },
    };
    if chosen.new {
        checksum::note_unfinished(ctx, flow, &interface);
    }
    if let Some(id) = flow.first_fragment_id {
        fragment::remember(&flow.fragment(id), service, &chosen);
    }
    let verdict = forward::to_backend(ctx, chosen.backend, vlan);
    if matches!(verdict, Verdict::Tx | Verdict::Redirect) {
        stats::count_forwarded(service.id, chosen.index, *frame_len, chosen.new);
        if maps::is_variant() {
            stats::count_event(Event::VariantForward);
        }
    }
    verdict
}

/// `verdict` for a packet to a VIP sent to our MAC, `Pass` for any other.
#[inline(always)]
fn drop_if_ours<A: Family>(ctx: &XdpContext, daddr: A, vlan: u16, verdict: Verdict) -> Verdict {
    if !maps::is_vip(daddr) {
        return Verdict::Pass;
    }
    match forward::ours(ctx, vlan) {
        Ok(_) => verdict,
        Err(not_ours) => not_ours,
    }
}

/// A packet that is no service's: the stack's, unless it is addressed to a VIP the director
/// does not hold as an address (then nobody here owns it: dropped rather than routed on),
/// sent to our MAC.
#[inline(always)]
fn no_service<A: Family>(ctx: &XdpContext, daddr: A, vlan: u16) -> Verdict {
    match maps::vip_flags(daddr) {
        Some(flags) => not_served(ctx, flags, vlan),
        None => Verdict::Pass,
    }
}

/// `no_service` for a VIP whose flags are `flags`.
#[inline(always)]
fn not_served(ctx: &XdpContext, flags: u32, vlan: u16) -> Verdict {
    if flags & VIP_FLAG_LOCAL != 0 {
        return Verdict::Pass;
    }
    match forward::ours(ctx, vlan) {
        Ok(_) => Verdict::DropNoService,
        Err(not_ours) => not_ours,
    }
}

#[inline(always)]
const fn xdp_action_of(verdict: Verdict) -> u32 {
    match verdict {
        Verdict::Tx | Verdict::ArpReply | Verdict::EchoReply | Verdict::NdpReply => {
            xdp_action::XDP_TX
        }
        Verdict::Redirect => xdp_action::XDP_REDIRECT,
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::DropMalformed
        | Verdict::DropFragment
        | Verdict::DropNoBackend
        | Verdict::DropNoEgress
        | Verdict::DropStandby
        | Verdict::DropNoService
        | Verdict::DropArpStandby
        | Verdict::DropFragmentOrphan
        | Verdict::DropNdpStandby => xdp_action::XDP_DROP,
        Verdict::Aborted => xdp_action::XDP_ABORTED,
    }
}

lb_ebpf::object_boilerplate!();
