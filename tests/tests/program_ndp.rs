//! Neighbour discovery for IPv6 VIPs in the XDP program, through BPF_PROG_TEST_RUN: Neighbor
//! Solicitations for an active VIP answered in place with the Neighbor Advertisement (compared
//! byte for byte with one built by etherparse, `tests::ndp_frames`), everything RFC 4861 says
//! not to answer passed, a standby VIP the director holds dropped, and advertisements or
//! solicitations claiming a VIP for another MAC counted in `ARP_CONFLICTS`.
//!
//! Frames arrive as if on loopback (ifindex 1), registered with the director's MAC.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
};

use aya::Ebpf;
use lb_common::{NO_VLAN, VIP_FLAG_ACTIVE, VIP_FLAG_LOCAL, Verdict, Vip};
use lb_userspace::{
    daemon::conflict::{ConflictMap, Seen},
    dataplane::{Dataplane, loader::MapSizes},
};
use tests::{
    ndp_frames::{
        IPV6_HEADER_LEN, NdpFrame, OPTION_NONCE, OPTION_SOURCE_LLA, OPTION_UNIT, checksum_ok,
        lla_option, multicast_mac, solicited_node, with_bad_checksum,
    },
    packet::{
        DIRECTOR_MAC, ETH_HEADER_LEN, MULTICAST_MAC, OTHER_HOST_MAC, ROUTER_MAC, VIP, VIP_IPV6,
        VLAN_ID, truncated,
    },
    program::TEST_RUN_IFINDEX,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const VLAN_TAG_LEN: usize = 4;
const ROUTER_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0x1);
/// A real server's address and MAC.
const BACKEND_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0x10);
const BACKEND_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x01, 0x10];
/// A VIP whose director is its standby (not an address of it), and one that is.
const STANDBY_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0x101);
const STANDBY_LOCAL_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0x102);
/// No VIP, but its solicited-node group is the VIP's (the same last 3 bytes).
const SAME_GROUP_ADDR: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0x99, 0, 0x100);
const OTHER_ADDR: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0x200);
/// The random bytes of a DAD nonce option (RFC 7527).
const NONCE: [u8; 6] = [1, 2, 3, 4, 5, 6];

/// A loaded program with the test-run interface (untagged, or on `VLAN_ID`) and the VIPs.
struct Bed {
    ebpf: Ebpf,
    dataplane: Dataplane,
    conflicts: ConflictMap,
}

impl Bed {
    fn load(vlan: u16) -> Self {
        let (mut ebpf, mut dataplane) = tests::program::load_maps(MapSizes::default());
        let conflicts = ConflictMap::take_from(&mut ebpf).expect("taking ARP_CONFLICTS");
        dataplane
            .set_interface(TEST_RUN_IFINDEX, vlan, DIRECTOR_MAC)
            .expect("registering the test-run interface");
        // The IPv4 VIP too, which VIPS holds under its IPv4-mapped address.
        for (vip, flags) in [
            (VIP_IPV6, VIP_FLAG_ACTIVE),
            (STANDBY_VIP, 0),
            (STANDBY_LOCAL_VIP, VIP_FLAG_LOCAL),
            (VIP.to_ipv6_mapped(), VIP_FLAG_ACTIVE),
        ] {
            dataplane
                .set_vip(vip.octets(), Vip { flags })
                .expect("adding a VIP");
        }
        Self {
            ebpf,
            dataplane,
            conflicts,
        }
    }

    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        tests::program::run_frame(&mut self.ebpf, frame)
    }

    fn verdicts(&self) -> BTreeMap<&'static str, u64> {
        Verdict::ALL
            .iter()
            .map(|&v| {
                let counter = self.dataplane.verdict_counter(v).expect("a counter");
                (v.name(), counter.packets)
            })
            .collect()
    }

    fn conflicts(&self) -> BTreeMap<[u8; 6], Seen> {
        self.conflicts
            .read()
            .expect("reading ARP_CONFLICTS")
            .into_iter()
            .map(|s| (s.mac, s))
            .collect()
    }
}

const REPLY: bool = true;
const REQUEST: bool = false;

/// What a frame must do.
struct Fixture {
    description: &'static str,
    input: Vec<u8>,
    action: u32,
    /// `None`: the output must be the input.
    output: Option<Vec<u8>>,
    verdict: Verdict,
    /// The MAC whose conflict entry the frame adds to, the VIP it claims, and whether as a
    /// reply (else a request).
    conflict: Option<([u8; 6], Ipv6Addr, bool)>,
}

fn passed(description: &'static str, frame: &NdpFrame) -> Fixture {
    passed_bytes(description, frame.build())
}

fn passed_bytes(description: &'static str, input: Vec<u8>) -> Fixture {
    Fixture {
        description,
        input,
        action: XDP_PASS,
        output: None,
        verdict: Verdict::Pass,
        conflict: None,
    }
}

fn answered(description: &'static str, frame: &NdpFrame, answer: &NdpFrame) -> Fixture {
    Fixture {
        action: XDP_TX,
        output: Some(answer.build()),
        verdict: Verdict::NdpReply,
        ..passed(description, frame)
    }
}

impl Fixture {
    fn claiming(self, mac: [u8; 6], vip: Ipv6Addr, is_reply: bool) -> Self {
        Self {
            conflict: Some((mac, vip, is_reply)),
            ..self
        }
    }
}

/// Runs each fixture and checks its action, output (and, when answered, the checksum as
/// etherparse computes it), that exactly its verdict counter moved, and that exactly its
/// conflict entry (if any) grew, by one frame of the right kind.
fn run_fixtures(bed: &mut Bed, fixtures: &[Fixture]) {
    for f in fixtures {
        let context = f.description;
        let (verdicts, conflicts) = (bed.verdicts(), bed.conflicts());
        let (action, output) = bed.run(&f.input);
        assert_eq!(action, f.action, "{context}: XDP action");
        assert_eq!(
            &output,
            f.output.as_ref().unwrap_or(&f.input),
            "{context}: output frame"
        );
        if action == XDP_TX {
            assert!(checksum_ok(&output), "{context}: the ICMPv6 checksum");
        }
        for (name, after) in bed.verdicts() {
            let expected = u64::from(name == f.verdict.name());
            assert_eq!(
                after - verdicts[name],
                expected,
                "{context}: the {name} counter"
            );
        }
        let mut grown = Vec::new();
        for (mac, seen) in bed.conflicts() {
            let before = conflicts.get(&mac);
            let requests = seen.requests - before.map_or(0, |b| b.requests);
            let replies = seen.replies - before.map_or(0, |b| b.replies);
            let IpAddr::V6(vip) = seen.last_vip else {
                panic!("{context}: {mac:02x?} claims an IPv4 VIP");
            };
            match (requests, replies) {
                (0, 0) => {}
                (1, 0) => grown.push((mac, vip, REQUEST)),
                (0, 1) => grown.push((mac, vip, REPLY)),
                other => panic!("{context}: {mac:02x?} grew by {other:?}"),
            }
        }
        assert_eq!(
            grown,
            f.conflict.into_iter().collect::<Vec<_>>(),
            "{context}: conflict entries"
        );
    }
}

/// The solicitation the fixtures vary: the router asking for the VIP, to its group.
fn router_asks() -> NdpFrame {
    NdpFrame::solicitation(ROUTER_MAC, ROUTER_IPV6, VIP_IPV6)
}

fn director_answers() -> NdpFrame {
    NdpFrame::answer(DIRECTOR_MAC, VIP_IPV6, ROUTER_MAC, ROUTER_IPV6)
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn solicitations_for_an_active_vip_are_answered_and_nothing_else_is() {
    tests::require_root();
    let mut bed = Bed::load(NO_VLAN);
    let with_nonce = NdpFrame {
        options: [
            lla_option(OPTION_SOURCE_LLA, ROUTER_MAC),
            [&[OPTION_NONCE, 1][..], &NONCE].concat(),
        ]
        .concat(),
        ..router_asks()
    };
    let zero_length_option = NdpFrame {
        options: vec![OPTION_SOURCE_LLA, 0, 0, 0, 0, 0, 0, 0],
        ..router_asks()
    };
    let too_many_options = NdpFrame {
        options: [OPTION_NONCE, 9]
            .into_iter()
            .chain(std::iter::repeat_n(0, 9 * OPTION_UNIT - 2))
            .collect(),
        ..router_asks()
    };
    let icmp_at = ETH_HEADER_LEN + IPV6_HEADER_LEN;
    let fixtures = [
        answered(
            "to the VIP's solicited-node group, with the source link-layer address option",
            &router_asks(),
            &director_answers(),
        ),
        answered(
            "unicast to the VIP at our MAC, without options: the frame grows",
            &NdpFrame::unicast_solicitation(ROUTER_MAC, ROUTER_IPV6, VIP_IPV6, DIRECTOR_MAC),
            &director_answers(),
        ),
        answered(
            "with a nonce option besides: the frame shrinks",
            &with_nonce,
            &director_answers(),
        ),
        answered(
            "from a real server, which is asked no differently",
            &NdpFrame::solicitation(BACKEND_MAC, BACKEND_IPV6, VIP_IPV6),
            &NdpFrame::answer(DIRECTOR_MAC, VIP_IPV6, BACKEND_MAC, BACKEND_IPV6),
        ),
        passed(
            "hop limit 254: it crossed a router (RFC 4861 7.1.1)",
            &NdpFrame {
                hop_limit: 254,
                ..router_asks()
            },
        ),
        passed_bytes(
            "a bad ICMPv6 checksum",
            with_bad_checksum(&router_asks().build(), icmp_at),
        ),
        passed("an option of length 0", &zero_length_option),
        passed(
            "more options than the program reads: left to the stack",
            &too_many_options,
        ),
        passed(
            "for an address that is no VIP",
            &NdpFrame::solicitation(ROUTER_MAC, ROUTER_IPV6, OTHER_ADDR),
        ),
        passed(
            "for the IPv4 VIP's IPv4-mapped address, which is no IPv6 address",
            &NdpFrame::solicitation(ROUTER_MAC, ROUTER_IPV6, VIP.to_ipv6_mapped()),
        ),
        passed(
            "for a no-VIP address in the VIP's solicited-node group",
            &NdpFrame::solicitation(ROUTER_MAC, ROUTER_IPV6, SAME_GROUP_ADDR),
        ),
        passed(
            "for a standby VIP",
            &NdpFrame::solicitation(ROUTER_MAC, ROUTER_IPV6, STANDBY_VIP),
        ),
        Fixture {
            action: XDP_DROP,
            verdict: Verdict::DropNdpStandby,
            ..passed(
                "for a standby VIP that is an address of the director: the kernel must not answer",
                &NdpFrame::solicitation(ROUTER_MAC, ROUTER_IPV6, STANDBY_LOCAL_VIP),
            )
        },
        passed(
            "for the VIP, sent to another address's group",
            &NdpFrame {
                destination: solicited_node(OTHER_ADDR),
                eth_dst: multicast_mac(solicited_node(OTHER_ADDR)),
                ..router_asks()
            },
        ),
        passed(
            "to the VIP's group at the IPv6 layer, another group's MAC",
            &NdpFrame {
                eth_dst: multicast_mac(solicited_node(OTHER_ADDR)),
                ..router_asks()
            },
        ),
        passed(
            "unicast to the VIP at another host's MAC",
            &NdpFrame::unicast_solicitation(ROUTER_MAC, ROUTER_IPV6, VIP_IPV6, OTHER_HOST_MAC),
        ),
        passed(
            "from a group MAC",
            &NdpFrame {
                eth_src: MULTICAST_MAC,
                ..router_asks()
            },
        ),
        passed(
            "a DAD probe for the VIP: not answered, another host is about to take the VIP",
            &NdpFrame::dad_probe(OTHER_HOST_MAC, VIP_IPV6),
        )
        .claiming(OTHER_HOST_MAC, VIP_IPV6, REQUEST),
        passed(
            "a real server soliciting from the VIP",
            &NdpFrame::solicitation(BACKEND_MAC, VIP_IPV6, ROUTER_IPV6),
        )
        .claiming(BACKEND_MAC, VIP_IPV6, REQUEST),
        passed(
            "a real server advertising the VIP",
            &NdpFrame::advertisement(BACKEND_MAC, VIP_IPV6, ROUTER_MAC, ROUTER_IPV6, true),
        )
        .claiming(BACKEND_MAC, VIP_IPV6, REPLY),
        passed(
            "an advertisement whose target link-layer address alone is another host's",
            &NdpFrame {
                eth_src: OTHER_HOST_MAC,
                ..NdpFrame::advertisement(BACKEND_MAC, VIP_IPV6, ROUTER_MAC, ROUTER_IPV6, true)
            },
        )
        .claiming(BACKEND_MAC, VIP_IPV6, REPLY),
        passed(
            "an unsolicited advertisement of a standby VIP without the option: the frame's MAC",
            &NdpFrame {
                options: Vec::new(),
                ..NdpFrame::advertisement(
                    OTHER_HOST_MAC,
                    STANDBY_VIP,
                    multicast_mac(tests::ndp_frames::ALL_NODES),
                    tests::ndp_frames::ALL_NODES,
                    false,
                )
            },
        )
        .claiming(OTHER_HOST_MAC, STANDBY_VIP, REPLY),
        passed(
            "the director's own advertisement of the VIP is no conflict",
            &director_answers(),
        ),
        passed(
            "an advertisement of the IPv4 VIP's IPv4-mapped address is invalid: no conflict",
            &NdpFrame::advertisement(
                BACKEND_MAC,
                VIP.to_ipv6_mapped(),
                ROUTER_MAC,
                ROUTER_IPV6,
                true,
            ),
        ),
        passed(
            "an advertisement of another address is no conflict",
            &NdpFrame::advertisement(BACKEND_MAC, OTHER_ADDR, ROUTER_MAC, ROUTER_IPV6, true),
        ),
        passed(
            "an advertisement with hop limit 254 is invalid: no conflict",
            &NdpFrame {
                hop_limit: 254,
                ..NdpFrame::advertisement(BACKEND_MAC, VIP_IPV6, ROUTER_MAC, ROUTER_IPV6, true)
            },
        ),
    ];
    run_fixtures(&mut bed, &fixtures);
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_tagged_solicitation_is_answered_with_its_tag_on_the_vlan_served_only() {
    tests::require_root();
    let mut bed = Bed::load(VLAN_ID);
    let tagged = |frame: NdpFrame| NdpFrame {
        vlan: Some(VLAN_ID),
        ..frame
    };
    let fixtures = [
        answered(
            "tagged with the VLAN served",
            &tagged(router_asks()),
            &tagged(director_answers()),
        ),
        answered(
            "tagged, unicast, without options",
            &tagged(NdpFrame::unicast_solicitation(
                ROUTER_MAC,
                ROUTER_IPV6,
                VIP_IPV6,
                DIRECTOR_MAC,
            )),
            &tagged(director_answers()),
        ),
        passed("untagged on the trunk: another network", &router_asks()),
        passed(
            "a real server advertising the VIP untagged on the trunk: not watched",
            &NdpFrame::advertisement(BACKEND_MAC, VIP_IPV6, ROUTER_MAC, ROUTER_IPV6, true),
        ),
        passed(
            "a real server advertising the VIP on the VLAN served",
            &tagged(NdpFrame::advertisement(
                BACKEND_MAC,
                VIP_IPV6,
                ROUTER_MAC,
                ROUTER_IPV6,
                true,
            )),
        )
        .claiming(BACKEND_MAC, VIP_IPV6, REPLY),
    ];
    run_fixtures(&mut bed, &fixtures);
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_solicitation_cut_short_anywhere_is_never_answered() {
    tests::require_root();
    for frame in [
        router_asks(),
        NdpFrame {
            vlan: Some(VLAN_ID),
            ..router_asks()
        },
    ] {
        // A bed serving the frame's VLAN, so that the whole frame is answered and every cut
        // of it is a frame the director would answer but for its length.
        let mut bed = Bed::load(frame.vlan.unwrap_or(NO_VLAN));
        let whole = frame.build();
        let (action, _) = bed.run(&whole);
        assert_eq!(action, XDP_TX, "the whole frame is answered");
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        for len in ETH_HEADER_LEN..whole.len() {
            let cut = truncated(&whole, len);
            let (action, output) = bed.run(&cut);
            let tag = if frame.vlan.is_some() {
                VLAN_TAG_LEN
            } else {
                0
            };
            let context = format!("{len} of {} bytes (tag: {tag})", whole.len());
            assert_ne!(action, XDP_TX, "{context}: answered");
            assert_eq!(output, cut, "{context}: changed");
        }
    }
}
