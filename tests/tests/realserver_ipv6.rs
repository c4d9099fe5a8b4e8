//! `drlb realserver setup | check | teardown` for an IPv6 VIP, against the kernel: the VIP on lo
//! as /128, and what answers neighbour solicitations for it.
//!
//! Tried here first and now asserted: Linux answers a neighbour solicitation only for the
//! addresses of the interface it arrives on, so a real server holding the VIP on lo stays
//! silent about it with no setting at all (IPv6 has no "ARP problem"). A proxy NDP entry for
//! the VIP asks the kernel to answer for it (with forwarding and proxy_ndp on): `check` names
//! such an entry with its fix.
//!
//! Needs root: run with `cargo xtask test`.

use std::time::Duration;

use tests::{
    drlb::drlb_plain,
    netns::{Netns, Scratch, Switch},
    require_root,
};

const VIP: &str = "2001:2::100";
const CLIENT: &str = "2001:2::1";
const SERVER: &str = "2001:2::11";
const PREFIX: &str = "64";
const IFNAME: &str = "eth0";
const CLIENT_MAC: &str = "02:d1:00:00:06:01";
const SERVER_MAC: &str = "02:d1:00:00:06:11";
/// The switch side of the veths carries IPv4 addresses only for `Switch::connect`'s sake.
const CLIENT_V4: &str = "198.18.6.1/24";
const SERVER_V4: &str = "198.18.6.11/24";
/// ndisc6: solicitations per query and how long to wait for each answer (ms).
const NDISC_TRIES: &str = "2";
const NDISC_WAIT_MS: &str = "500";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// A namespace with IPv6 on (`Netns::create` turns it off) plugged into `switch`.
fn ipv6_host(switch: &Switch, role: &str, mac: &str, v4: &str, v6: &str) -> Netns {
    let ns = Netns::create(role);
    for key in [
        "net.ipv6.conf.all.disable_ipv6",
        "net.ipv6.conf.default.disable_ipv6",
    ] {
        ns.sysctl(key, "0");
    }
    switch.connect(&ns, &format!("p-{role}"), IFNAME, mac, v4);
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{v6}/{PREFIX}"),
        "dev",
        IFNAME,
        "nodad",
    ]);
    ns
}

/// The MAC that answers a neighbour solicitation for `target` from `client`, if any.
fn neighbour_answer(client: &Netns, target: &str) -> Option<String> {
    let ran = client.exec(
        &[
            "ndisc6",
            "-q",
            "-r",
            NDISC_TRIES,
            "-w",
            NDISC_WAIT_MS,
            target,
            IFNAME,
        ],
        COMMAND_TIMEOUT,
    );
    ran.success().then(|| ran.stdout.trim().to_lowercase())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn an_ipv6_vip_on_lo_is_never_advertised_and_check_names_a_proxy_entry_that_would() {
    require_root();
    let switch = Switch::create();
    let client = ipv6_host(&switch, "client6", CLIENT_MAC, CLIENT_V4, CLIENT);
    let server = ipv6_host(&switch, "rs6", SERVER_MAC, SERVER_V4, SERVER);
    let scratch = Scratch::create();
    let state_dir = scratch.path().display().to_string();

    // The control: the server answers for its own address.
    assert_eq!(
        neighbour_answer(&client, SERVER).as_deref(),
        Some(SERVER_MAC),
        "the server answers neighbour solicitations for its own address"
    );
    let before = drlb_plain(&server, &["realserver", "check", "--vip", VIP]);
    assert!(
        !before.success(),
        "check passes before setup: {}",
        before.describe()
    );
    assert!(
        before.stdout.contains("is not on lo"),
        "{}",
        before.describe()
    );

    let arp_before = server.sysctl_value("net.ipv4.conf.all.arp_ignore");
    let setup = drlb_plain(
        &server,
        &[
            "realserver",
            "setup",
            "--vip",
            VIP,
            "--interface",
            IFNAME,
            "--state-dir",
            &state_dir,
        ],
    );
    assert!(setup.success(), "setup failed: {}", setup.describe());
    let on_lo = server.ip(&["-6", "-o", "addr", "show", "dev", "lo"]);
    assert!(
        on_lo.contains(&format!("{VIP}/128")) && !on_lo.contains("tentative"),
        "the VIP is on lo as /128 and usable at once: {on_lo}"
    );
    assert_eq!(
        server.sysctl_value("net.ipv4.conf.all.arp_ignore"),
        arp_before,
        "an IPv6-only setup leaves the ARP sysctls alone"
    );
    let check = drlb_plain(&server, &["realserver", "check", "--vip", VIP]);
    assert!(check.success(), "check after setup: {}", check.describe());
    assert_eq!(
        neighbour_answer(&client, VIP),
        None,
        "the real server answered a neighbour solicitation for the VIP on lo"
    );

    // A proxy entry for the VIP (which, with forwarding and proxy_ndp on, asks the kernel to
    // answer for it): check names it with its fix.
    server.ip(&["-6", "neigh", "add", "proxy", VIP, "dev", IFNAME]);
    let proxied = drlb_plain(&server, &["realserver", "check", "--vip", VIP]);
    assert!(
        !proxied.success(),
        "check passes with a proxy entry: {}",
        proxied.describe()
    );
    assert!(
        proxied
            .stdout
            .contains(&format!("ip -6 neigh del proxy {VIP} dev {IFNAME}")),
        "check names the fix: {}",
        proxied.describe()
    );
    server.ip(&["-6", "neigh", "del", "proxy", VIP, "dev", IFNAME]);

    let teardown = drlb_plain(
        &server,
        &[
            "realserver",
            "teardown",
            "--vip",
            VIP,
            "--interface",
            IFNAME,
            "--state-dir",
            &state_dir,
        ],
    );
    assert!(
        teardown.success(),
        "teardown failed: {}",
        teardown.describe()
    );
    let on_lo = server.ip(&["-6", "-o", "addr", "show", "dev", "lo"]);
    assert!(!on_lo.contains(VIP), "teardown left the VIP on lo: {on_lo}");
}
