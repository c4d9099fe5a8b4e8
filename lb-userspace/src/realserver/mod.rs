//! `drlb realserver setup | check | teardown`, run on a real server: the VIPs on `lo` as /32
//! (IPv6: /128, without duplicate address detection) and the ARP sysctls that keep the host
//! quiet about IPv4 VIPs (the LVS-DR "ARP problem"). IPv6 has no such problem: Linux answers
//! a neighbour solicitation only for the addresses of the interface it arrives on (see
//! `judge::ndp_findings`), so an IPv6 VIP needs no sysctl, only the absence of a proxy entry.
//!
//! A real server must accept packets for the VIP (so it holds it, on `lo`), must never answer
//! ARP for it (else neighbours send VIP traffic straight to it, bypassing the director) and
//! must never use it as the sender address of its own ARP requests (else the gateway learns
//! its MAC for the VIP). Linux decides both per interface from the *maximum* of
//! `net.ipv4.conf.all.X` and `net.ipv4.conf.<interface>.X`:
//!
//! - `arp_ignore`, on the interface the request arrives on: 1 (or 2) answers only for
//!   addresses configured on that interface, so not for the VIP on `lo`;
//! - `arp_announce`, on the interface the request leaves by: 2 always picks that interface's
//!   own address as sender.
//!
//! The values of `lo` itself are never consulted for ARP on another interface; `setup` sets
//! them too, as the LVS documentation asks, and `check` does not require them.
//!
//! [`judge`] computes every problem from a [`Snapshot`] of the values and addresses: a pure
//! function with host tests. `host` reads and writes the kernel's state (addresses through
//! rtnetlink, sysctls through /proc/sys), `persist` what `--persist` leaves behind; this
//! module runs the commands.

mod host;
mod judge;
mod persist;

use std::{fs, io, net::IpAddr, path::Path};

use anyhow::{Context as _, Result, bail};
use rtnetlink::{LinkUnspec, packet_route::address::AddressHeaderFlags};

use self::host::*;
pub use self::{host::check, judge::*, persist::*};

/// The values that solve the ARP problem.
pub const WANT_ARP_IGNORE: i64 = 1;
pub const WANT_ARP_ANNOUNCE: i64 = 2;
const LOOPBACK: &str = "lo";
/// A VIP on lo is one address: /32, or /128 for IPv6.
const HOST_PREFIX_V4: u8 = 32;
const HOST_PREFIX_V6: u8 = 128;
const ALL: &str = "all";
/// What `--persist` writes, relative to the root (`/` unless told otherwise).
pub const SYSCTL_FILE: &str = "etc/sysctl.d/90-drlb-realserver.conf";
pub const UNIT_NAME: &str = "drlb-realserver.service";
pub const UNIT_DIR: &str = "etc/systemd/system";
/// `systemctl enable` as a file: the unit's link in the target's wants directory.
pub const UNIT_WANTS_DIR: &str = "etc/systemd/system/multi-user.target.wants";
/// The values the first `setup` replaced, which `teardown` restores: in the state directory,
/// or with `--persist` in [`PERSISTENT_RECORD_DIR`].
pub const RECORD_FILE: &str = "realserver.json";
/// With `--persist`, where the record lives, relative to the root: a reboot keeps it, unlike
/// the state directory (`/run`), so a teardown after reboots still restores the values from
/// before the first setup, not those the boot unit found.
pub const PERSISTENT_RECORD_DIR: &str = "var/lib/drlb";
/// Where `--persist` installs the binary the boot unit runs, relative to the root: root's,
/// writable by root only (not wherever drlb happened to be run from).
pub const INSTALLED_BINARY: &str = "usr/local/sbin/drlb";
const INSTALLED_BINARY_MODE: u32 = 0o755;
/// Directories created for the installed binary: writable by root only.
const INSTALLED_DIR_MODE: u32 = 0o755;
/// Mode bits that let others than the owner write.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// The sticky bit: in such a directory only an entry's owner may rename or remove it.
const STICKY: u32 = 0o1000;
const ROOT_UID: u32 = 0;
const ROOT_GID: u32 = 0;

pub struct SetupOptions<'a> {
    pub vips: &'a [IpAddr],
    pub interface: Option<&'a str>,
    /// Write the sysctl.d file and the systemd unit (under `root`).
    pub persist: bool,
    pub root: &'a Path,
    /// Where the values replaced by the first setup are recorded for teardown.
    pub state_dir: &'a Path,
}

/// `drlb realserver setup`: idempotent. The sysctls first, then the VIPs, so the host never
/// holds a VIP while it may still answer ARP for it. Returns what it did, line by line.
pub async fn setup(options: &SetupOptions<'_>) -> Result<Vec<String>> {
    require_root("setup")?;
    let host = Host::read().await?;
    let interface = host.interface(options.interface)?;
    for (a, _) in &host.addresses {
        if options.vips.contains(&a.address) && a.interface != LOOPBACK {
            bail!(
                "VIP {} is on {}: a real server holds it on lo only (there it answers ARP for it whatever \
                 the sysctls say); remove it with `ip addr del {}/{} dev {}`, then run setup again",
                a.address,
                a.interface,
                a.address,
                a.prefix,
                a.interface
            );
        }
    }
    let mut done = Vec::new();
    let paths = PersistPaths::under(options.root);
    // The ARP sysctls concern IPv4 VIPs only; an IPv6-only real server keeps its own.
    if options.vips.iter().any(IpAddr::is_ipv4) {
        record_before_setup(&paths, options, &interface, &mut done)?;
        let wanted = ArpConf {
            arp_ignore: WANT_ARP_IGNORE,
            arp_announce: WANT_ARP_ANNOUNCE,
        };
        for conf in [ALL, LOOPBACK, interface.as_str()] {
            write_conf(conf, wanted, &mut done)?;
        }
    }
    let lo = host.index_of(LOOPBACK)?;
    if !host.links.get(&lo).is_some_and(|l| l.up) {
        host.handle
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .context("bringing lo up failed")?;
        done.push("lo brought up".to_owned());
    }
    for vip in options.vips {
        let full = host_prefix(*vip);
        let on_lo = host.on_lo(*vip);
        if on_lo.iter().any(|(a, _)| a.prefix == full) {
            done.push(format!("{vip}/{full} on lo already"));
            continue;
        }
        host.remove(&on_lo, &format!(" (not /{full})"), &mut done)
            .await?;
        let mut add = host.handle.address().add(lo, *vip, full);
        if vip.is_ipv6() {
            // Usable at once: no tentative phase (lo runs no duplicate address detection
            // anyway, but say so rather than depend on it).
            add.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        add.execute()
            .await
            .with_context(|| format!("adding {vip}/{full} to lo failed"))?;
        done.push(format!("{vip}/{full} added to lo"));
    }
    if options.persist {
        install_binary(&paths.binary, &mut done)?;
        write_file(&paths.sysctl, &sysctl_file_text(&interface), &mut done)?;
        write_file(
            &paths.unit,
            &unit_text(&paths.binary, &interface, options.vips),
            &mut done,
        )?;
        enable_unit(&paths, &mut done)?;
        done.push(
            "persisted: run `systemctl daemon-reload` to let systemd see the unit now".to_owned(),
        );
    }
    Ok(done)
}

pub struct TeardownOptions<'a> {
    pub vips: &'a [IpAddr],
    pub interface: Option<&'a str>,
    pub root: &'a Path,
    pub state_dir: &'a Path,
}

/// `drlb realserver teardown`: the VIPs off lo, the persisted files removed, and the ARP
/// sysctls as they were before setup (kernel defaults without a record) once no other
/// address but 127/8 is left on lo.
pub async fn teardown(options: &TeardownOptions<'_>) -> Result<Vec<String>> {
    require_root("teardown")?;
    let host = Host::read().await?;
    let mut done = Vec::new();
    for vip in options.vips {
        let on_lo = host.on_lo(*vip);
        if on_lo.is_empty() {
            done.push(format!("{vip} not on lo already"));
        }
        host.remove(&on_lo, "", &mut done).await?;
    }
    let paths = PersistPaths::under(options.root);
    for path in [&paths.wants_link, &paths.unit, &paths.sysctl] {
        match fs::remove_file(path) {
            Ok(()) => done.push(format!("{} removed", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }
    let others: Vec<String> = host
        .addresses
        .iter()
        .filter(|(a, _)| {
            a.interface == LOOPBACK
                && !a.address.is_loopback()
                && !options.vips.contains(&a.address)
        })
        .map(|(a, _)| format!("{}/{}", a.address, a.prefix))
        .collect();
    if !others.is_empty() {
        done.push(format!(
            "ARP settings kept: lo still holds {} (tear those down too to restore them)",
            others.join(", ")
        ));
        return Ok(done);
    }
    let records = paths.records(options.state_dir);
    let record = match read_record(&records)? {
        Some((path, record)) => {
            done.push(format!(
                "restoring the settings from before setup (recorded in {})",
                path.display()
            ));
            record
        }
        None => {
            let interface = host.interface(options.interface)?;
            done.push(format!(
                "no record of the settings before setup in {} or {}: restoring the kernel defaults",
                records[0].display(),
                records[1].display()
            ));
            [ALL, LOOPBACK, interface.as_str()]
                .iter()
                .map(|c| ((*c).to_owned(), ArpConf::default()))
                .collect()
        }
    };
    for (conf, values) in &record {
        if host.index_of(conf).is_ok() || conf == ALL {
            write_conf(conf, *values, &mut done)?;
        }
    }
    for path in &records {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", path.display()));
            }
            _ => {}
        }
    }
    if paths.binary.exists() {
        done.push(format!(
            "{} kept (remove it if nothing else runs it)",
            paths.binary.display()
        ));
    }
    Ok(done)
}

pub(super) fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "drlb realserver {what} changes addresses and sysctls: run it as root (e.g. with sudo)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    use std::net::{Ipv4Addr, Ipv6Addr};

    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
    const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100));

    fn address(interface: &str, address: &str, prefix: u8) -> Address {
        Address {
            interface: interface.to_owned(),
            address: address.parse().unwrap(),
            prefix,
        }
    }

    fn good() -> Snapshot {
        Snapshot {
            interface: "eth0".to_owned(),
            all: ArpConf {
                arp_ignore: 1,
                arp_announce: 2,
            },
            on_interface: ArpConf {
                arp_ignore: 1,
                arp_announce: 2,
            },
            loopback_up: true,
            addresses: vec![
                address("lo", "127.0.0.1", 8),
                address("lo", "198.18.0.100", 32),
                address("eth0", "198.18.0.11", 24),
            ],
            ndp_proxies: vec![],
        }
    }

    /// An IPv6-only real server: the VIP on lo as /128, and no sysctl of its own set.
    fn good_v6() -> Snapshot {
        Snapshot {
            all: ArpConf::default(),
            on_interface: ArpConf::default(),
            addresses: vec![
                address("lo", "::1", 128),
                address("lo", "2001:2::100", 128),
                address("eth0", "2001:2::11", 64),
                address("eth0", "fe80::1", 64),
            ],
            ..good()
        }
    }

    #[test]
    fn an_ipv6_vip_needs_no_arp_sysctl_only_lo_and_no_proxy_entry() {
        let findings = judge(&good_v6(), &[VIP6]);
        assert!(findings.iter().all(|f| !f.is_problem()), "{findings:#?}");
        assert_eq!(
            findings.len(),
            2,
            "the VIP on lo and the absence of a proxy entry, no ARP sysctl: {findings:#?}"
        );
    }

    #[test]
    fn ipv6_vip_problems_name_their_fix() {
        let problems_v6 = |snapshot: &Snapshot| -> Vec<Finding> {
            judge(snapshot, &[VIP6])
                .into_iter()
                .filter(Finding::is_problem)
                .collect()
        };
        let mut missing = good_v6();
        missing.addresses.retain(|a| a.address != VIP6);
        let found = problems_v6(&missing);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("ip addr add 2001:2::100/128 dev lo")
        );

        let mut wide = good_v6();
        wide.addresses[1].prefix = 64;
        let found = problems_v6(&wide);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].what.contains("not /128"), "{found:#?}");

        let mut proxied = good_v6();
        proxied.ndp_proxies.push(NdpProxy {
            address: "2001:2::100".parse().unwrap(),
            interface: "eth0".to_owned(),
        });
        let found = problems_v6(&proxied);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(
            found[0].fix.as_deref(),
            Some("ip -6 neigh del proxy 2001:2::100 dev eth0")
        );

        let mut elsewhere = good_v6();
        elsewhere.addresses.push(address("eth0", "2001:2::100", 64));
        let found = problems_v6(&elsewhere);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].what.contains("neighbour solicitations"),
            "{found:#?}"
        );
    }

    #[test]
    fn ipv6_link_local_addresses_do_not_make_an_interface_face_the_director() {
        let addresses = vec![
            address("lo", "::1", 128),
            address("eth0", "fe80::1", 64),
            address("eth1", "fe80::2", 64),
            address("eth1", "2001:2::11", 64),
        ];
        assert_eq!(facing_interface(None, &addresses).unwrap(), "eth1");
    }

    #[test]
    fn a_mixed_server_checks_arp_for_its_ipv4_vip() {
        let mut snapshot = good();
        snapshot.addresses.push(address("lo", "2001:2::100", 128));
        let findings = judge(&snapshot, &[VIP, VIP6]);
        assert!(findings.iter().all(|f| !f.is_problem()), "{findings:#?}");
        assert_eq!(
            findings.len(),
            5,
            "two VIPs, the proxy check, two sysctls: {findings:#?}"
        );
    }

    fn problems(snapshot: &Snapshot) -> Vec<Finding> {
        judge(snapshot, &[VIP])
            .into_iter()
            .filter(Finding::is_problem)
            .collect()
    }

    #[track_caller]
    fn one_problem(snapshot: &Snapshot, what: &str, fix: &str) {
        let found = problems(snapshot);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].what.contains(what),
            "{:?} lacks {what:?}",
            found[0].what
        );
        let got = found[0].fix.as_deref().unwrap();
        assert!(got.contains(fix), "{got:?} lacks {fix:?}");
    }

    #[test]
    fn a_set_up_real_server_has_no_problem() {
        let findings = judge(&good(), &[VIP]);
        assert!(findings.iter().all(|f| !f.is_problem()), "{findings:#?}");
        assert_eq!(
            findings.len(),
            3,
            "the VIP and both sysctls are reported: {findings:#?}"
        );
    }

    #[test]
    fn the_effective_value_is_the_maximum_of_all_and_the_interface() {
        for (all, own) in [(1, 0), (0, 1), (2, 0), (1, 2)] {
            let mut s = good();
            s.all.arp_ignore = all;
            s.on_interface.arp_ignore = own;
            assert!(
                problems(&s).is_empty(),
                "all={all} eth0={own}: {:#?}",
                problems(&s)
            );
        }
        for (all, own) in [(2, 0), (0, 2)] {
            let mut s = good();
            s.all.arp_announce = all;
            s.on_interface.arp_announce = own;
            assert!(problems(&s).is_empty(), "announce all={all} eth0={own}");
        }
    }

    #[test]
    fn arp_ignore_zero_on_both_is_named_with_its_values_and_fix() {
        let mut s = good();
        s.all.arp_ignore = 0;
        s.on_interface.arp_ignore = 0;
        one_problem(
            &s,
            "arp_ignore on eth0 is wrong, effective 0 = max(net.ipv4.conf.all.arp_ignore=0, net.ipv4.conf.eth0.arp_ignore=0)",
            "sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1",
        );
    }

    #[test]
    fn arp_ignore_values_that_still_answer_or_answer_nothing_are_problems() {
        for (value, why) in [
            (3, "scope host"),
            (5, "like 0"),
            (8, "not even for this host's own address"),
        ] {
            let mut s = good();
            s.on_interface.arp_ignore = value;
            one_problem(&s, why, "arp_ignore=1");
        }
    }

    #[test]
    fn arp_announce_below_or_above_two_is_a_problem() {
        for (all, own, why) in [
            (0, 0, "carry the VIP as sender"),
            (1, 1, "in the target's subnet"),
            (2, 3, "like 0"),
        ] {
            let mut s = good();
            s.all.arp_announce = all;
            s.on_interface.arp_announce = own;
            one_problem(&s, why, "net.ipv4.conf.eth0.arp_announce=2");
        }
    }

    #[test]
    fn lo_values_are_not_required() {
        // The snapshot has no lo values at all: the kernel never consults them for ARP on eth0.
        assert!(problems(&good()).is_empty());
    }

    #[test]
    fn vip_problems_name_their_fix() {
        let mut missing = good();
        missing.addresses.retain(|a| a.address != VIP);
        one_problem(
            &missing,
            "VIP 198.18.0.100 is not on lo",
            "ip addr add 198.18.0.100/32 dev lo",
        );

        let mut wide = good();
        wide.addresses[1].prefix = 24;
        one_problem(
            &wide,
            "on lo as /24, not /32",
            "ip addr del 198.18.0.100/24 dev lo && ip addr add 198.18.0.100/32 dev lo",
        );

        let mut on_eth = good();
        on_eth.addresses.push(address("eth0", "198.18.0.100", 32));
        one_problem(
            &on_eth,
            "also on eth0",
            "ip addr del 198.18.0.100/32 dev eth0",
        );

        let mut down = good();
        down.loopback_up = false;
        one_problem(&down, "lo is down", "ip link set lo up");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut s = good();
        s.all = ArpConf::default();
        s.on_interface = ArpConf::default();
        s.addresses.retain(|a| a.address != VIP);
        let found = problems(&s);
        assert_eq!(found.len(), 3, "{found:#?}");
        let text = render(&judge(&s, &[VIP]));
        assert_eq!(text.matches("PROBLEM").count(), 3, "{text}");
        assert!(
            text.contains("drlb realserver setup --interface eth0 --vip 198.18.0.100"),
            "{text}"
        );
    }

    #[test]
    fn the_facing_interface_is_the_default_routes_or_the_only_candidate() {
        let addresses = [
            address("lo", "127.0.0.1", 8),
            address("eth0", "198.18.0.11", 24),
        ];
        assert_eq!(
            facing_interface(Some("bond0"), &addresses).unwrap(),
            "bond0"
        );
        assert_eq!(facing_interface(None, &addresses).unwrap(), "eth0");
        let two = [
            address("eth0", "198.18.0.11", 24),
            address("eth1", "198.19.0.11", 24),
        ];
        let error = facing_interface(None, &two).unwrap_err().to_string();
        assert!(
            error.contains("eth0, eth1") && error.contains("--interface"),
            "{error}"
        );
        assert!(facing_interface(None, &addresses[..1]).is_err());
    }

    #[test]
    fn the_sysctl_file_sets_all_lo_and_the_interface() {
        let text = sysctl_file_text("eth0");
        for conf in ["all", "lo", "eth0"] {
            assert!(
                text.contains(&format!("net.ipv4.conf.{conf}.arp_ignore = 1\n")),
                "{text}"
            );
            assert!(
                text.contains(&format!("net.ipv4.conf.{conf}.arp_announce = 2\n")),
                "{text}"
            );
        }
        let vlan = sysctl_file_text("eth0.100");
        assert!(
            vlan.contains("net/ipv4/conf/eth0.100/arp_ignore = 1\n"),
            "{vlan}"
        );
    }

    #[test]
    fn a_binary_others_could_replace_is_refused_with_the_fix() {
        let dir = std::env::temp_dir().join(format!("drlb-realserver-test-{}", std::process::id()));
        let open_dir = dir.join("open");
        fs::create_dir_all(&open_dir).unwrap();
        // World-writable without the sticky bit: anyone may replace the entries.
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
        let binary = open_dir.join("drlb");
        fs::write(&binary, "").unwrap();
        let error = format!("{:#}", only_root_may_change(&binary).unwrap_err());
        let _ = fs::remove_dir_all(&dir);
        assert!(error.contains("writable by others than root"), "{error}");
        assert!(error.contains("chmod go-w"), "{error}");
    }

    #[test]
    fn the_unit_reapplies_everything_after_the_network_is_up() {
        let text = unit_text(
            Path::new("/usr/local/bin/drlb"),
            "eth0",
            &[VIP, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 101))],
        );
        assert!(text.contains(
            "ExecStart=/usr/local/bin/drlb realserver setup --interface eth0 --vip 198.18.0.100 --vip 198.18.0.101\n"
        ), "{text}");
        assert!(text.contains("After=network-online.target"), "{text}");
        assert!(
            text.contains("Type=oneshot") && text.contains("WantedBy=multi-user.target"),
            "{text}"
        );
        assert!(
            !text.contains("ExecStop"),
            "stopping must not undo the persisted setup: {text}"
        );
    }
}
