//! Loading drlb's program for BPF_PROG_TEST_RUN tests. Without `ctx_in`, a test run counts as
//! arriving on loopback, so that is the interface registered.

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions},
};
use lb_common::{VIP_FLAG_ACTIVE, Vip, ipv4_mapped};
use lb_userspace::dataplane::{
    Dataplane,
    loader::{self, MapSizes},
};

use crate::packet::DIRECTOR_MAC;

/// Room in a test run's output buffer beyond the input frame: a program that wrongly grew the
/// frame shows up as a wrong output instead of an ENOSPC from the kernel.
const OUTPUT_SLACK: usize = 256;

/// Runs `frame` through drlb's program in `ebpf` once: (XDP return value, output frame).
#[must_use]
pub fn run_frame(ebpf: &mut Ebpf, frame: &[u8]) -> (u32, Vec<u8>) {
    let program = loader::program(ebpf).expect("the XDP program");
    let mut output = vec![0; frame.len() + OUTPUT_SLACK];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut output),
            ..TestRunOptions::new()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {} bytes: {e:?}", frame.len()));
    output.truncate(usize::try_from(result.data_size_out).expect("fits"));
    (result.return_value, output)
}

/// The ifindex BPF_PROG_TEST_RUN reports as ingress without `ctx_in`: loopback.
pub const TEST_RUN_IFINDEX: u32 = 1;

/// A freshly loaded program (verified, not attached) and its maps, empty.
#[must_use]
pub fn load_maps(sizes: MapSizes) -> (Ebpf, Dataplane) {
    let mut ebpf = loader::load(sizes).expect("loading the XDP program");
    // Before borrowing the program: take_from moves the maps out of the Ebpf.
    let dataplane = Dataplane::take_from(&mut ebpf).expect("taking the program's maps");
    (ebpf, dataplane)
}

/// A freshly loaded program whose maps know the test-run interface (the director's MAC) and
/// `vip`, active.
#[must_use]
pub fn load_with_vip(sizes: MapSizes, vip: Ipv4Addr) -> (Ebpf, Dataplane) {
    let (ebpf, mut dataplane) = load_maps(sizes);
    dataplane
        .set_interface(TEST_RUN_IFINDEX, lb_common::NO_VLAN, DIRECTOR_MAC)
        .expect("registering the test-run interface");
    dataplane
        .set_vip(
            ipv4_mapped(vip.octets()),
            Vip {
                flags: VIP_FLAG_ACTIVE,
            },
        )
        .expect("adding the VIP");
    (ebpf, dataplane)
}
