//! The control plane of a dual-stack config (issue 11), in network namespaces: one service on
//! each family, and what drlb does for the IPv6 one without forwarding a frame. At start-up it
//! announces the IPv6 VIP with an unsolicited Neighbor Advertisement (a client's stale entry
//! moves to the director's MAC), resolves the IPv6 backend's MAC through a managed neighbour
//! entry, health-checks it at `[address]:port`, keeps the VIP as a `/128` route in the
//! announce table, lists it as ipvsadm does, takes run-time changes written
//! `tcp/[2001:2::100]:80` (and refuses a backend of the other family, changing nothing),
//! follows IPv6 address events (the VIP on the director is local, but not once it failed
//! duplicate address detection), and withdraws the route
//! when it stops. Forwarding IPv6 is the data plane's (tests of helper
//! v6e2e).
//!
//! ```text
//!  client 2001:2::1 ─┐
//!  director 2001:2::2 ─ switch (one bridge), 198.18.0.0/24 and 2001:2::/64 on it
//!  rs 2001:2::11 ────┘   (and 198.18.0.11: the IPv4 service's backend)
//! ```
//!
//! Needs root: run with `cargo xtask test` (or `cargo test --release -p tests --test
//! dual_stack_control -- --include-ignored` as root after `cargo build --release -p
//! lb-userspace`).

use std::time::Duration;

use tests::{
    drlb::{drlb_in, start_drlb, stats_in},
    netns::{Netns, Process, Scratch, Switch, wait_for},
    require_root,
};

const CLIENT: (&str, &str, &str) = ("02:d6:00:00:00:01", "198.18.0.1/24", "2001:2::1/64");
const DIRECTOR: (&str, &str, &str) = ("02:d6:00:00:00:02", "198.18.0.2/24", "2001:2::2/64");
const RS: (&str, &str, &str) = ("02:d6:00:00:00:11", "198.18.0.11/24", "2001:2::11/64");
const IFNAME: &str = "eth0";
const VIP4: &str = "198.18.0.100";
const VIP6: &str = "2001:2::100";
const RS6: &str = "2001:2::11";
const RS4: &str = "198.18.0.11";
/// A second address of the real server, added as a backend at run time.
const RS6_SECOND: &str = "2001:2::12";
const PORT: u16 = 80;
const ANNOUNCE_TABLE: &str = "100";
/// The MAC the client believes the VIP is at before drlb announces it.
const STALE_MAC: &str = "02:d6:00:00:00:55";
/// From start-up: the announcement, the neighbour's resolution, `rise` probes (2 at 1 s).
const SETTLE: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// After an address's DAD failed, time for the daemon to have handled every address event.
const DAD_EVENT_SETTLE: Duration = Duration::from_secs(1);

/// IPv6 on in `ns` (the test namespaces start with it off) and on its `eth0`, with `address`
/// there (no duplicate address detection: it would hold the address tentative a while).
fn enable_ipv6(ns: &Netns, address: &str) {
    for conf in ["all", "default", IFNAME] {
        ns.sysctl(&format!("net.ipv6.conf.{conf}.disable_ipv6"), "0");
    }
    ns.ip(&["addr", "add", address, "dev", IFNAME, "nodad"]);
}

fn host(switch: &Switch, role: &str, (mac, v4, v6): (&str, &str, &str)) -> Netns {
    let ns = Netns::create(role);
    switch.connect(&ns, &format!("p-{role}"), IFNAME, mac, v4);
    enable_ipv6(&ns, v6);
    ns
}

/// The neighbour entry of `address` in `ns` (`ip -6 neigh show`), or "" if none.
fn neighbour(ns: &Netns, address: &str) -> String {
    ns.ip(&["-6", "neigh", "show", address])
}

/// The backend `address` of the service on `vip` in `drlb stats --json`.
fn backend(stats: &serde_json::Value, vip: &str, address: &str) -> Option<serde_json::Value> {
    stats["services"]
        .as_array()?
        .iter()
        .find(|s| s["vip"] == vip)?["backends"]
        .as_array()?
        .iter()
        .find(|b| b["address"] == address)
        .cloned()
}

fn config(scratch: &Scratch) -> std::path::PathBuf {
    let text = format!(
        "[director]\ninterface = \"{IFNAME}\"\nannounce = {{ table = {ANNOUNCE_TABLE} }}\n\n\
         [[service]]\nvip = \"{VIP4}\"\nport = {PORT}\nprotocol = \"tcp\"\n\n\
         [[service.backend]]\naddress = \"{RS4}\"\n\n\
         [[service]]\nvip = \"{VIP6}\"\nport = {PORT}\nprotocol = \"tcp\"\n\n\
         [[service.backend]]\naddress = \"{RS6}\"\n"
    );
    scratch.write("drlb.toml", &text)
}

/// `drlb-testsrv http` on the real server's own addresses, for the health checks.
fn serve(rs: &Netns, scratch: &Scratch) -> Process {
    let mut argv = vec![env!("CARGO_BIN_EXE_drlb-testsrv").to_owned(), "http".into()];
    for address in [format!("{RS4}:{PORT}"), format!("[{RS6}]:{PORT}")] {
        argv.extend(["--listen".to_owned(), address]);
    }
    argv.extend(["--name".to_owned(), "rs".to_owned()]);
    rs.spawn("rs-http", &argv, scratch.path())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn an_ipv6_service_is_announced_resolved_checked_routed_listed_and_changed() {
    require_root();
    let scratch = Scratch::create();
    let switch = Switch::create();
    let client = host(&switch, "client", CLIENT);
    let director = host(&switch, "director", DIRECTOR);
    let rs = host(&switch, "rs", RS);
    let _server = serve(&rs, &scratch);
    client.ip(&[
        "-6", "neigh", "replace", VIP6, "lladdr", STALE_MAC, "dev", IFNAME, "nud", "stale",
    ]);
    let state = scratch.subdir("state", 0o700);
    let mut drlb = start_drlb(
        &director,
        "drlb",
        &config(&scratch),
        &state,
        &[],
        scratch.path(),
    );

    // The unsolicited NA moved the client's entry to the director's MAC.
    wait_for(
        "the client's entry for the VIP at the director's MAC",
        SETTLE,
        || neighbour(&client, VIP6).contains(DIRECTOR.0).then_some(()),
    );
    // The IPv6 backend: MAC from a managed neighbour entry, up after its TCP probes.
    let up = wait_for("the IPv6 backend resolved and up", SETTLE, || {
        let stats = stats_in(&director, &state);
        let b = backend(&stats, VIP6, RS6)?;
        (b["mac"] == RS.0 && b["health"] == "up" && b["state"] == "active").then_some(b)
    });
    assert_eq!(up["interface"], IFNAME, "{up}");
    let entry = neighbour(&director, RS6);
    assert!(entry.contains("managed") && entry.contains(RS.0), "{entry}");
    // Both VIPs as host routes in the announce table.
    wait_for("the IPv6 VIP's /128 route", SETTLE, || {
        director
            .ip(&["-6", "route", "show", "table", ANNOUNCE_TABLE])
            .contains(&format!("{VIP6} dev drlb-vips proto 200"))
            .then_some(())
    });
    let v4_routes = director.ip(&["route", "show", "table", ANNOUNCE_TABLE]);
    assert!(v4_routes.contains(VIP4), "{v4_routes}");
    // ipvsadm's layout: IPv4 first, IPv6 in brackets.
    let list = drlb_in(&director, &state, &["list"]).expect_success();
    let v4_line = list.find(&format!("TCP  {VIP4}:{PORT} mh"));
    let v6_line = list.find(&format!("TCP  [{VIP6}]:{PORT} mh"));
    assert!(
        matches!((v4_line, v6_line), (Some(a), Some(b)) if a < b),
        "{list}"
    );
    assert!(list.contains(&format!("  -> [{RS6}]:{PORT} ")), "{list}");

    // Run-time changes name the service with brackets; a backend of the other family is
    // refused and nothing changes.
    let service = format!("tcp/[{VIP6}]:{PORT}");
    rs.ip(&[
        "addr",
        "add",
        &format!("{RS6_SECOND}/64"),
        "dev",
        IFNAME,
        "nodad",
    ]);
    let added = drlb_in(
        &director,
        &state,
        &[
            "backend",
            "add",
            "--service",
            &service,
            "--address",
            RS6_SECOND,
        ],
    )
    .expect_success();
    assert!(
        added.contains(&format!("backend {RS6_SECOND} added")),
        "{added}"
    );
    let refused = drlb_in(
        &director,
        &state,
        &["backend", "add", "--service", &service, "--address", RS4],
    );
    assert!(!refused.success(), "{}", refused.describe());
    assert!(
        refused.stderr.contains("share a family")
            && refused.stderr.contains(&service.replace('/', " ")),
        "{}",
        refused.describe()
    );
    let unbracketed = drlb_in(
        &director,
        &state,
        &[
            "backend",
            "remove",
            "--service",
            &format!("tcp/{VIP6}:{PORT}"),
            "--address",
            RS6,
        ],
    );
    assert!(
        !unbracketed.success() && unbracketed.stderr.contains("tcp/[2001:db8::100]:8080"),
        "{}",
        unbracketed.describe()
    );
    let stats = stats_in(&director, &state);
    assert!(backend(&stats, VIP6, RS6_SECOND).is_some(), "{stats}");
    assert!(backend(&stats, VIP6, RS4).is_none(), "{stats}");
    assert!(backend(&stats, VIP6, RS6).is_some(), "{stats}");

    // The IPv6 VIP added to the director (as keepalived would): an address event makes it
    // local (VIP_FLAG_LOCAL), its removal not.
    let vip_local = |stats: &serde_json::Value| {
        stats["vips"]
            .as_array()
            .and_then(|vips| vips.iter().find(|v| v["vip"] == VIP6))
            .and_then(|v| v["local"].as_bool())
    };
    assert_eq!(vip_local(&stats), Some(false), "{stats}");
    let vip6_host = format!("{VIP6}/128");
    director.ip(&["addr", "add", &vip6_host, "dev", IFNAME, "nodad"]);
    wait_for("the IPv6 VIP local after its address event", SETTLE, || {
        (vip_local(&stats_in(&director, &state)) == Some(true)).then_some(())
    });
    director.ip(&["addr", "del", &vip6_host, "dev", IFNAME]);
    wait_for("the IPv6 VIP no longer local", SETTLE, || {
        (vip_local(&stats_in(&director, &state)) == Some(false)).then_some(())
    });
    // Added with duplicate address detection while another host holds it: the kernel marks
    // it dadfailed and never uses it, so it is no address of the director (it counted as one).
    client.ip(&["addr", "add", &vip6_host, "dev", IFNAME, "nodad"]);
    director.ip(&["addr", "add", &vip6_host, "dev", IFNAME]);
    wait_for("the director's copy of the VIP to fail DAD", SETTLE, || {
        director
            .ip(&["-6", "addr", "show", "dev", IFNAME])
            .contains("dadfailed")
            .then_some(())
    });
    // The add's address event came a DAD round (1 s) before the failure: long handled.
    std::thread::sleep(DAD_EVENT_SETTLE);
    let stats = stats_in(&director, &state);
    assert_eq!(vip_local(&stats), Some(false), "a dadfailed VIP: {stats}");
    director.ip(&["addr", "del", &vip6_host, "dev", IFNAME]);
    client.ip(&["addr", "del", &vip6_host, "dev", IFNAME]);

    // Stopped: the routes go.
    drlb.stop(libc::SIGTERM, STOP_TIMEOUT);
    let left = director.ip(&["-6", "route", "show", "table", ANNOUNCE_TABLE]);
    assert!(!left.contains(VIP6), "{left}");
}
