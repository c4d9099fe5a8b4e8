//! Noticing VIP conflicts: frames claiming a VIP for a MAC that is not the director's are
//! counted per offending MAC in `ARP_CONFLICTS` (see `lb_common::conflict`). For IPv4, ARP
//! requests or replies whose sender IP is a VIP; for IPv6 (from `ndp`), Neighbor
//! Advertisements whose target is a VIP (counted as replies), and Neighbor Solicitations from a
//! VIP or DAD probes for one (counted as requests). Only counted: the frame's verdict, and what
//! the director answers, are decided exactly as without this module.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, programs::XdpContext};
use lb_common::{
    conflict::{ArpConflict, ArpConflictKey},
    ipv4_mapped,
};
use network_types::arp::ArpHdr;

use crate::{
    arp::{ARP_OP_REPLY, ARP_OP_REQUEST, is_ethernet_ipv4},
    maps::{ARP_CONFLICTS, interface, is_vip},
    parse::{Ipv6, ipv6, ipv6_wire, ptr_at},
};

/// A MAC as one word: its 6 bytes first in memory, then 2 zero bytes (one register rather
/// than six).
pub type MacWord = u64;
/// A [`MacWord`]'s bits that hold the MAC.
pub const MAC_WORD_MASK: MacWord = u64::from_ne_bytes([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);

#[inline(always)]
pub fn mac_word(mac: [u8; 6]) -> MacWord {
    let [a, b, c, d, e, f] = mac;
    u64::from_ne_bytes([a, b, c, d, e, f, 0, 0])
}

/// Counts the ARP packet at `offset`, on VLAN `vlan`, if it claims a VIP for another MAC than
/// the director's.
#[inline(always)]
pub fn note(ctx: &XdpContext, offset: usize, vlan: u16) {
    let Some(arp) = ptr_at::<ArpHdr>(ctx, offset) else {
        return;
    };
    // SAFETY: ptr_at checked the bounds; read only.
    let arp = unsafe { &*arp };
    if !is_ethernet_ipv4(arp) {
        return;
    }
    let is_reply = match u16::from_be_bytes(arp.oper) {
        ARP_OP_REQUEST => false,
        ARP_OP_REPLY => true,
        _ => return,
    };
    let (sender_mac, vip) = (arp.sha, arp.spa);
    if !is_vip(vip) {
        return; // the common case: ARP about anything but a VIP
    }
    note_claim(
        ctx,
        vlan,
        mac_word(sender_mac),
        ipv6(&ipv4_mapped(vip)),
        is_reply,
    );
}

/// Counts a frame received on VLAN `vlan` in which `mac` claims the VIP `vip` (IPv4 mapped), as
/// a reply (an answer for the VIP) or a request, unless `mac` is the director's.
#[inline(always)]
pub fn note_claim(ctx: &XdpContext, vlan: u16, mac: MacWord, vip: Ipv6, is_reply: bool) {
    // A VLAN of the trunk the director does not serve (or untagged frames on a trunk) is
    // another network: its ARP and NDP are not watched.
    let Some(interface) = interface(ctx.ingress_ifindex() as u32, vlan) else {
        return;
    };
    if mac_word(interface.mac) == mac {
        return; // our own frame, e.g. looped back by a switch
    }
    let [a, b, c, d, e, f, ..] = mac.to_ne_bytes();
    let key = ArpConflictKey {
        mac: [a, b, c, d, e, f],
        _pad: [0; 2],
    };
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(entry) = ARP_CONFLICTS.get_ptr_mut(key) {
        add(entry, is_reply, now, vip);
        return;
    }
    let first = ArpConflict {
        requests: u64::from(!is_reply),
        replies: u64::from(is_reply),
        last_seen_ns: now,
        last_vip: ipv6_wire(vip),
    };
    // Another CPU may have created the entry meanwhile: then add to this CPU's value of it.
    if ARP_CONFLICTS
        .insert(key, first, u64::from(BPF_NOEXIST))
        .is_err()
        && let Some(entry) = ARP_CONFLICTS.get_ptr_mut(key)
    {
        add(entry, is_reply, now, vip);
    }
}

#[inline(always)]
fn add(entry: *mut ArpConflict, is_reply: bool, now: u64, vip: Ipv6) {
    // SAFETY: `entry` is this CPU's value of a per-CPU map entry, which only this CPU writes
    // while this program runs (it cannot be preempted).
    unsafe {
        if is_reply {
            (*entry).replies += 1;
        } else {
            (*entry).requests += 1;
        }
        (*entry).last_seen_ns = now;
        (*entry).last_vip = ipv6_wire(vip);
    }
}
