//! What the XDP program decided for a frame: the index of its per-CPU verdict counter.

/// Every outcome of the program, including each reason to drop. `#[repr(u32)]` because the
/// value indexes the `VERDICT_COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded to a backend out of the ingress interface (XDP_TX).
    Tx = 0,
    /// Forwarded to a backend out of another interface (XDP_REDIRECT).
    Redirect = 1,
    /// Not service traffic: handed to the director's own stack untouched (XDP_PASS).
    Pass = 2,
    /// An ARP request for a VIP, answered in place (XDP_TX).
    ArpReply = 3,
    /// Truncated or inconsistent headers on a frame that could be service traffic (XDP_DROP).
    DropMalformed = 4,
    /// A later IP fragment to a VIP whose first fragment was seen, but whose service has since
    /// been removed or replaced (XDP_DROP): the datagram can no longer be delivered whole.
    DropFragment = 5,
    /// Service traffic while the service has no usable backend (XDP_DROP).
    DropNoBackend = 6,
    /// The chosen backend sits behind an interface this program cannot send to (XDP_DROP).
    DropNoEgress = 7,
    /// An impossible state, e.g. a map entry userspace always writes was missing (XDP_ABORTED).
    Aborted = 8,
    /// Service traffic reaching a standby director (XDP_DROP): some neighbour cache still
    /// holds this director's MAC for the VIP. Dropped rather than passed: the stack does not
    /// own the VIP and, with forwarding on, would route it on to the active director.
    DropStandby = 9,
    /// Traffic to a VIP that is no service of it (another port or protocol, ping), sent to
    /// our MAC, while the VIP is not an address of the director (XDP_DROP): the stack does
    /// not own it and, with forwarding on, would route it on. A VIP that is one of the
    /// director's addresses (`VIP_FLAG_LOCAL`) passes such traffic to the stack instead.
    DropNoService = 10,
    /// An ARP request for a VIP while the director is its standby and the VIP is one of its
    /// addresses (XDP_DROP): the kernel would answer it and draw the VIP's traffic, which a
    /// standby drops. Dropped before the kernel sees it.
    DropArpStandby = 11,
    /// An ICMP echo request to an active VIP, sent to our MAC, answered in place (XDP_TX).
    EchoReply = 12,
    /// A later IP fragment (offset > 0) to a VIP whose first fragment was not seen, or has
    /// been forgotten (XDP_DROP): its ports, hence its backend, are unknown.
    DropFragmentOrphan = 13,
    /// An IPv6 Neighbor Solicitation for an active VIP, answered in place with the Neighbor
    /// Advertisement (XDP_TX): the IPv6 counterpart of `ArpReply`.
    NdpReply = 14,
    /// A Neighbor Solicitation for a VIP while the director is its standby and the VIP is one
    /// of its addresses (XDP_DROP): as `DropArpStandby`, the kernel must not answer it.
    DropNdpStandby = 15,
}

impl Verdict {
    /// Number of verdicts: the size of the `VERDICT_COUNTERS` array.
    pub const COUNT: u32 = 16;

    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::Tx,
        Self::Redirect,
        Self::Pass,
        Self::ArpReply,
        Self::DropMalformed,
        Self::DropFragment,
        Self::DropNoBackend,
        Self::DropNoEgress,
        Self::Aborted,
        Self::DropStandby,
        Self::DropNoService,
        Self::DropArpStandby,
        Self::EchoReply,
        Self::DropFragmentOrphan,
        Self::NdpReply,
        Self::DropNdpStandby,
    ];

    /// Stable name used in `drlb stats`, its JSON and metrics.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tx => "tx",
            Self::Redirect => "redirect",
            Self::Pass => "pass",
            Self::ArpReply => "arp_reply",
            Self::DropMalformed => "drop_malformed",
            Self::DropFragment => "drop_fragment",
            Self::DropNoBackend => "drop_no_backend",
            Self::DropNoEgress => "drop_no_egress",
            Self::Aborted => "aborted",
            Self::DropStandby => "drop_standby",
            Self::DropNoService => "drop_no_service",
            Self::DropArpStandby => "drop_arp_standby",
            Self::EchoReply => "echo_reply",
            Self::DropFragmentOrphan => "drop_fragment_orphan",
            Self::NdpReply => "ndp_reply",
            Self::DropNdpStandby => "drop_ndp_standby",
        }
    }
}

/// What the program notices beside a frame's verdict, counted per CPU in `EVENT_COUNTERS`
/// (the frame's verdict is counted as well, unchanged).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new flow's first frame, on an interface that checks them, carries an unfinished
    /// TCP/UDP checksum (the pseudo-header sum a sender with tx offload leaves for the NIC).
    BadChecksum = 0,
    /// A frame forwarded by a test variant of the program (loaded with
    /// `DRLB_TEST_PROGRAM_VARIANT` set): shows that an in-place upgrade swapped the program in.
    /// The branch is pruned by the verifier in the production program (the variant is 0 there).
    VariantForward = 1,
    /// An ICMP error to a VIP (destination unreachable, including "fragmentation needed" for
    /// path-MTU discovery, or time exceeded) quoting a service flow, relayed to the flow's
    /// backend (the frame's verdict is its `tx` or `redirect`).
    IcmpRelay = 2,
    /// A later fragment of a datagram forwarded to the backend of its first fragment.
    FragmentForward = 3,
}

impl Event {
    /// Number of events: the size of the `EVENT_COUNTERS` array.
    pub const COUNT: u32 = 4;

    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::BadChecksum,
        Self::VariantForward,
        Self::IcmpRelay,
        Self::FragmentForward,
    ];

    /// Stable name used in `drlb stats`, its JSON and metrics.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::BadChecksum => "bad_checksum",
            Self::VariantForward => "variant_forward",
            Self::IcmpRelay => "icmp_relay",
            Self::FragmentForward => "fragment_forward",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_verdict_at_its_own_index() {
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i, "{v:?}");
        }
    }
}
