//! An object with one program that passes every frame, and no maps. drlb attaches it to a veth
//! that must receive frames another interface sends with XDP_TX or a redirect: veth only
//! delivers those to a peer that runs XDP (has NAPI enabled).
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// Frags-aware, so that a veth peer at a jumbo MTU takes it too.
#[xdp(frags)]
pub fn drlb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

lb_ebpf::object_boilerplate!();
