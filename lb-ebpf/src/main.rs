//! drlb's XDP program: LVS-DR forwarding and ARP answering for VIPs.
//!
//! The entry point only dispatches; each step is a small module: [`parse`] (bounds-checked header
//! access), [`arp`] (answer ARP for a VIP), [`ndp`] (answer IPv6 neighbour solicitations for
//! a VIP), [`conflict`] (count ARP and NDP frames that claim a VIP for another MAC), [`select`] (service, flow table and Maglev lookup), [`checksum`] (the veth
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
use lb_ebpf::parse::{self, L3};

/// Frags-aware (`xdp.frags`): it may run on interfaces whose MTU exceeds a page, and reads and
/// writes only headers, which lie in the first buffer.
#[xdp(frags)]
pub fn drlb(ctx: XdpContext) -> u32 {
    // The first buffer's length: the whole frame but for a multi-buffer one, whose length the
    // forwarding path learns from its IPv4 header (a helper call per frame would cost more).
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
        L3::Arp(offset) => {
            conflict::note(ctx, offset, eth.vlan);
            arp::answer_request(ctx, offset, eth.vlan)
        }
        L3::Ipv4(offset) => forward_ipv4(ctx, offset, eth.vlan, frame_len),
        L3::Ipv6(offset) => {
            if let Some(verdict) = ndp::handle(ctx, offset, eth.vlan) {
                return verdict;
            }
            Verdict::Pass
        }
        L3::Other => Verdict::Pass,
    }
}

#[inline(always)]
fn forward_ipv4(ctx: &XdpContext, offset: usize, vlan: u16, frame_len: &mut u64) -> Verdict {
    let flow = match parse::ipv4_flow(ctx, offset) {
        Ok(flow) => flow,
        Err(parse::Unroutable::NotBalanced { daddr }) => return no_service(ctx, daddr, vlan),
        Err(parse::Unroutable::Fragment { daddr, key }) => {
            return fragment::follow(ctx, daddr, key, vlan, *frame_len);
        }
        Err(parse::Unroutable::Icmp {
            daddr,
            l4_offset,
            l4_len,
        }) => {
            let Some(flags) = maps::vip_flags(daddr) else {
                return Verdict::Pass;
            };
            return icmp::handle(ctx, offset, daddr, flags, vlan, l4_offset, l4_len)
                .unwrap_or_else(|| not_served(ctx, flags, vlan));
        }
        // Without a complete L4 header we must not forward, but only traffic for a VIP, sent to
        // us, is ours to judge: the rest goes to the stack, which applies its own checks.
        Err(parse::Unroutable::Truncated { daddr }) => {
            return drop_if_ours(ctx, daddr, vlan, Verdict::DropMalformed);
        }
        Err(parse::Unroutable::Malformed) => return Verdict::DropMalformed,
    };
    // A jumbo frame's packet lies beyond its first buffer (Ethernet padding: within it).
    let packet_end = (flow.l4_offset + usize::from(flow.l4_len)) as u64;
    if packet_end > *frame_len {
        *frame_len = packet_end;
    }
    let Some(service) = select::service(&flow) else {
        return no_service(ctx, flow.daddr_octets, vlan);
    };
    let interface = match forward::ours(ctx, vlan) {
        Ok(interface) => interface,
        Err(verdict) => return verdict,
    };
    // A standby director forwards nothing (see SERVICE_FLAG_STANDBY).
    if service.state.flags & SERVICE_FLAG_STANDBY != 0 {
        return Verdict::DropStandby;
    }
    let chosen = match select::backend(service, &flow) {
        Ok(chosen) => chosen,
        Err(verdict) => return verdict,
    };
    if chosen.new {
        checksum::note_unfinished(ctx, &flow, &interface);
    }
    if let Some(id_be) = flow.first_fragment_id {
        fragment::remember(flow.fragment_key(id_be), service, &chosen);
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
fn drop_if_ours(ctx: &XdpContext, daddr: [u8; 4], vlan: u16, verdict: Verdict) -> Verdict {
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
fn no_service(ctx: &XdpContext, daddr: [u8; 4], vlan: u16) -> Verdict {
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
