//! `drlb realserver setup | check | teardown`, run on a real server: the VIPs on `lo` as /32
//! and the ARP sysctls that keep the host quiet about them (the LVS-DR "ARP problem").
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
//! function with host tests. The rest reads and writes the kernel's state: addresses through
//! rtnetlink, sysctls through /proc/sys.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs, io,
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkUnspec, RouteMessageBuilder,
    packet_route::{
        address::{AddressAttribute, AddressMessage},
        link::{LinkAttribute, LinkFlags},
        route::RouteAttribute,
    },
};
use serde::{Deserialize, Serialize};

/// The values that solve the ARP problem.
pub const WANT_ARP_IGNORE: i64 = 1;
pub const WANT_ARP_ANNOUNCE: i64 = 2;
const LOOPBACK: &str = "lo";
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

/// The two ARP sysctls of one `net.ipv4.conf.<name>` directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArpConf {
    pub arp_ignore: i64,
    pub arp_announce: i64,
}

/// An IPv4 address and the interface it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

/// What the checks look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The interface facing the director (and the clients' gateway).
    pub interface: String,
    pub all: ArpConf,
    pub on_interface: ArpConf,
    pub loopback_up: bool,
    /// Every IPv4 address of the host.
    pub addresses: Vec<Address>,
}

/// One result of a check: fine, or a problem with the commands that fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub what: String,
    /// `None` when all is well.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(what: String) -> Self {
        Self { what, fix: None }
    }

    fn problem(what: String, fix: String) -> Self {
        Self {
            what,
            fix: Some(fix),
        }
    }

    #[must_use]
    pub fn is_problem(&self) -> bool {
        self.fix.is_some()
    }
}

/// What is wrong with an effective `arp_ignore` value, if anything (net/ipv4/arp.c, arp_ignore()).
fn arp_ignore_problem(value: i64) -> Option<&'static str> {
    match value {
        1 | 2 => None,
        0 => Some("the kernel answers ARP for every local address, the VIP on lo included"),
        3 => Some(
            "3 only keeps quiet about addresses of scope host, and the VIP has scope global: it is answered",
        ),
        8 => Some(
            "8 answers no ARP request at all, not even for this host's own address, so the director cannot reach it",
        ),
        _ => Some("the kernel treats this value like 0 and answers ARP for the VIP"),
    }
}

/// What is wrong with an effective `arp_announce` value, if anything (arp.c, arp_solicit()).
fn arp_announce_problem(value: i64) -> Option<&'static str> {
    match value {
        2 => None,
        0 => Some(
            "ARP requests for replies sent from the VIP carry the VIP as sender: the gateway learns this host's MAC for it",
        ),
        1 => Some(
            "1 still uses the VIP as sender whenever it is in the target's subnet, as it usually is",
        ),
        _ => Some("the kernel treats this value like 0: ARP requests may carry the VIP as sender"),
    }
}

/// Every check of a real server for `vips`, in order; the problems carry their fix.
#[must_use]
pub fn judge(snapshot: &Snapshot, vips: &[Ipv4Addr]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let interface = &snapshot.interface;
    let setup = format!(
        "drlb realserver setup --interface {interface} {}",
        vips.iter()
            .map(|v| format!("--vip {v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !snapshot.loopback_up {
        findings.push(Finding::problem(
            "lo is down: the kernel does not treat the VIPs on it as local".to_owned(),
            format!("ip link set lo up   (or: {setup})"),
        ));
    }
    for vip in vips {
        let on_lo: Vec<&Address> = snapshot
            .addresses
            .iter()
            .filter(|a| a.address == *vip && a.interface == LOOPBACK)
            .collect();
        match on_lo.as_slice() {
            [] => findings.push(Finding::problem(
                format!(
                    "VIP {vip} is not on lo: the director's frames for it are dropped here (not a local address)"
                ),
                format!("ip addr add {vip}/32 dev lo   (or: {setup})"),
            )),
            [a] if a.prefix == 32 => findings.push(Finding::ok(format!("VIP {vip}/32 on lo"))),
            [a, ..] => findings.push(Finding::problem(
                format!(
                    "VIP {vip} is on lo as /{}, not /32: every address of {vip}/{} becomes local to this host, \
                     which then cannot reach the gateway or clients in that range",
                    a.prefix, a.prefix
                ),
                format!(
                    "ip addr del {vip}/{} dev lo && ip addr add {vip}/32 dev lo",
                    a.prefix
                ),
            )),
        }
        for a in snapshot
            .addresses
            .iter()
            .filter(|a| a.address == *vip && a.interface != LOOPBACK)
        {
            findings.push(Finding::problem(
                format!(
                    "VIP {vip} is also on {}: the host answers ARP for it there whatever arp_ignore says",
                    a.interface
                ),
                format!("ip addr del {vip}/{} dev {}", a.prefix, a.interface),
            ));
        }
    }
    let conf = [
        (
            "arp_ignore",
            snapshot.all.arp_ignore,
            snapshot.on_interface.arp_ignore,
            WANT_ARP_IGNORE,
            arp_ignore_problem as fn(i64) -> Option<&'static str>,
            "answers ARP only for its own addresses",
        ),
        (
            "arp_announce",
            snapshot.all.arp_announce,
            snapshot.on_interface.arp_announce,
            WANT_ARP_ANNOUNCE,
            arp_announce_problem,
            "uses its own address as ARP sender",
        ),
    ];
    for (key, all, own, want, problem, good) in conf {
        let effective = all.max(own);
        let values = format!(
            "effective {effective} = max(net.ipv4.conf.all.{key}={all}, net.ipv4.conf.{interface}.{key}={own})"
        );
        match problem(effective) {
            None => findings.push(Finding::ok(format!(
                "{key} on {interface}: {values}: {interface} {good}"
            ))),
            Some(why) => findings.push(Finding::problem(
                format!("{key} on {interface} is wrong, {values}: {why}"),
                format!(
                    "sysctl -w net.ipv4.conf.all.{key}={want} net.ipv4.conf.{}.{key}={want}   (or: {setup})",
                    sysctl_name(interface)
                ),
            )),
        }
    }
    findings
}

/// An interface name as a dotted sysctl key component: dots in the name become slashes.
fn sysctl_name(interface: &str) -> String {
    interface.replace('.', "/")
}

/// The interface that faces the director when none is named: the default route's, else the
/// only interface with an IPv4 address other than lo.
pub fn facing_interface(default_route: Option<&str>, addresses: &[Address]) -> Result<String> {
    if let Some(interface) = default_route {
        return Ok(interface.to_owned());
    }
    let mut candidates: Vec<&str> = addresses
        .iter()
        .filter(|a| a.interface != LOOPBACK)
        .map(|a| a.interface.as_str())
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    match candidates.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!(
            "no interface with an IPv4 address besides lo: name the one facing the director with --interface"
        ),
        many => bail!(
            "no default route and several interfaces ({}): name the one facing the director with --interface",
            many.join(", ")
        ),
    }
}

/// The sysctl.d file of `--persist`.
#[must_use]
pub fn sysctl_file_text(interface: &str) -> String {
    let mut text = String::from(
        "# Written by `drlb realserver setup --persist`; `drlb realserver teardown` removes it.\n\
         # LVS-DR real server: never answer ARP for the VIPs on lo, never send them as ARP sender.\n",
    );
    for conf in [ALL, LOOPBACK, interface] {
        // sysctl.d takes slash-separated keys for names that contain dots (VLANs: eth0.100).
        let key = |k: &str| {
            if conf.contains('.') {
                format!("net/ipv4/conf/{conf}/{k}")
            } else {
                format!("net.ipv4.conf.{conf}.{k}")
            }
        };
        let _ = writeln!(text, "{} = {WANT_ARP_IGNORE}", key("arp_ignore"));
        let _ = writeln!(text, "{} = {WANT_ARP_ANNOUNCE}", key("arp_announce"));
    }
    text
}

/// The systemd unit of `--persist`: at boot, after the network managers (which may reset the
/// ARP sysctls of `lo` and the interface when they bring them up), it applies everything again.
#[must_use]
pub fn unit_text(drlb: &Path, interface: &str, vips: &[Ipv4Addr]) -> String {
    let vips: String = vips.iter().map(|v| format!(" --vip {v}")).collect();
    format!(
        "# Written by `drlb realserver setup --persist`; `drlb realserver teardown` removes it.\n\
         [Unit]\n\
         Description=drlb LVS-DR real server: VIPs on lo, ARP kept quiet about them\n\
         # After systemd-sysctl and the network managers, which may reset conf/lo and conf/{interface}\n\
         # when they bring the interfaces up.\n\
         Wants=network-online.target\n\
         After=network-online.target systemd-sysctl.service systemd-networkd.service NetworkManager.service\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart={} realserver setup --interface {interface}{vips}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        drlb.display()
    )
}

/// Sysctl values by conf name (`all`, `lo`, the interface), as recorded before `setup`.
pub type Record = BTreeMap<String, ArpConf>;

// ---------------------------------------------------------------------------------------------
// Reading and writing the kernel's state

fn sysctl_path(conf: &str, key: &str) -> PathBuf {
    Path::new("/proc/sys/net/ipv4/conf").join(conf).join(key)
}

fn read_sysctl(conf: &str, key: &str) -> Result<i64> {
    let path = sysctl_path(conf, key);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (does interface {conf} exist?)",
            path.display()
        )
    })?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds {text:?}, not a number", path.display()))
}

fn read_conf(conf: &str) -> Result<ArpConf> {
    Ok(ArpConf {
        arp_ignore: read_sysctl(conf, "arp_ignore")?,
        arp_announce: read_sysctl(conf, "arp_announce")?,
    })
}

/// Writes one sysctl unless it holds `value` already; says what it did.
fn write_sysctl(conf: &str, key: &str, value: i64, done: &mut Vec<String>) -> Result<()> {
    let old = read_sysctl(conf, key)?;
    let name = format!("net.ipv4.conf.{}.{key}", sysctl_name(conf));
    if old == value {
        done.push(format!("{name} = {value} already"));
        return Ok(());
    }
    let path = sysctl_path(conf, key);
    fs::write(&path, format!("{value}\n"))
        .with_context(|| format!("cannot write {} (needs root)", path.display()))?;
    done.push(format!("{name} = {value} (was {old})"));
    Ok(())
}

fn write_conf(conf: &str, values: ArpConf, done: &mut Vec<String>) -> Result<()> {
    write_sysctl(conf, "arp_ignore", values.arp_ignore, done)?;
    write_sysctl(conf, "arp_announce", values.arp_announce, done)
}

struct Link {
    name: String,
    up: bool,
}

/// The host's interfaces, addresses and default route, over rtnetlink.
struct Host {
    handle: Handle,
    links: BTreeMap<u32, Link>,
    /// Each address with the message that deletes it.
    addresses: Vec<(Address, AddressMessage)>,
    default_route: Option<String>,
}

impl Host {
    /// The addresses `vip` has on lo (any prefix length).
    fn on_lo(&self, vip: Ipv4Addr) -> Vec<&(Address, AddressMessage)> {
        self.addresses
            .iter()
            .filter(|(a, _)| a.address == vip && a.interface == LOOPBACK)
            .collect()
    }

    /// Deletes these addresses; each deletion is noted in `done` (with `why` after it).
    async fn remove(
        &self,
        addresses: &[&(Address, AddressMessage)],
        why: &str,
        done: &mut Vec<String>,
    ) -> Result<()> {
        for (a, message) in addresses {
            self.handle
                .address()
                .del(message.clone())
                .execute()
                .await
                .with_context(|| format!("removing {}/{} from lo failed", a.address, a.prefix))?;
            done.push(format!("{}/{} removed from lo{why}", a.address, a.prefix));
        }
        Ok(())
    }

    async fn read() -> Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("could not open a netlink socket")?;
        tokio::spawn(connection);
        let mut links = BTreeMap::new();
        let mut stream = handle.link().get().execute();
        while let Some(link) = stream
            .try_next()
            .await
            .context("listing interfaces failed")?
        {
            let name = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            });
            if let Some(name) = name {
                let up = link.header.flags.contains(LinkFlags::Up);
                links.insert(link.header.index, Link { name, up });
            }
        }
        let mut addresses = Vec::new();
        let mut stream = handle.address().get().execute();
        while let Some(message) = stream
            .try_next()
            .await
            .context("listing addresses failed")?
        {
            let Some(link) = links.get(&message.header.index) else {
                continue;
            };
            for attribute in &message.attributes {
                if let AddressAttribute::Local(IpAddr::V4(address)) = attribute {
                    addresses.push((
                        Address {
                            interface: link.name.clone(),
                            address: *address,
                            prefix: message.header.prefix_len,
                        },
                        message.clone(),
                    ));
                }
            }
        }
        let mut default_route = None;
        let mut stream = handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(route) = stream.try_next().await.context("listing routes failed")? {
            if route.header.destination_prefix_length != 0 || default_route.is_some() {
                continue;
            }
            default_route = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(index) => links.get(index).map(|l| l.name.clone()),
                _ => None,
            });
        }
        Ok(Self {
            handle,
            links,
            addresses,
            default_route,
        })
    }

    fn plain_addresses(&self) -> Vec<Address> {
        self.addresses.iter().map(|(a, _)| a.clone()).collect()
    }

    fn index_of(&self, name: &str) -> Result<u32> {
        self.links
            .iter()
            .find(|(_, l)| l.name == name)
            .map(|(i, _)| *i)
            .with_context(|| format!("there is no interface {name} (see `ip link`)"))
    }

    fn interface(&self, named: Option<&str>) -> Result<String> {
        let interface = match named {
            Some(name) => name.to_owned(),
            None => facing_interface(self.default_route.as_deref(), &self.plain_addresses())?,
        };
        self.index_of(&interface)?;
        Ok(interface)
    }

    fn snapshot(&self, interface: &str) -> Result<Snapshot> {
        Ok(Snapshot {
            interface: interface.to_owned(),
            all: read_conf(ALL)?,
            on_interface: read_conf(interface)?,
            loopback_up: self.links.values().any(|l| l.name == LOOPBACK && l.up),
            addresses: self.plain_addresses(),
        })
    }
}

/// `drlb realserver check`: every finding; fails when any is a problem.
pub async fn check(vips: &[Ipv4Addr], interface: Option<&str>) -> Result<Vec<Finding>> {
    let host = Host::read().await?;
    let interface = host.interface(interface)?;
    Ok(judge(&host.snapshot(&interface)?, vips))
}

/// Where `--persist` writes, under a root directory (`/` in production).
#[derive(Clone, Debug)]
pub struct PersistPaths {
    pub sysctl: PathBuf,
    pub unit: PathBuf,
    pub wants_link: PathBuf,
    /// The record of the values before the first setup, kept across reboots.
    pub record: PathBuf,
    /// The binary the unit runs.
    pub binary: PathBuf,
}

impl PersistPaths {
    #[must_use]
    pub fn under(root: &Path) -> Self {
        Self {
            sysctl: root.join(SYSCTL_FILE),
            unit: root.join(UNIT_DIR).join(UNIT_NAME),
            wants_link: root.join(UNIT_WANTS_DIR).join(UNIT_NAME),
            record: root.join(PERSISTENT_RECORD_DIR).join(RECORD_FILE),
            binary: root.join(INSTALLED_BINARY),
        }
    }

    /// The records teardown restores from, the persistent one first: it holds the values from
    /// before the first setup, whatever setups ran since (at boot, or without --persist).
    fn records(&self, state_dir: &Path) -> [PathBuf; 2] {
        [self.record.clone(), state_dir.join(RECORD_FILE)]
    }
}

/// The first record found among `paths`, with its path.
fn read_record(paths: &[PathBuf]) -> Result<Option<(PathBuf, Record)>> {
    for path in paths {
        match fs::read_to_string(path) {
            Ok(text) => {
                let record = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{} is not a drlb record (remove it, and check the ARP settings by hand)",
                        path.display()
                    )
                })?;
                return Ok(Some((path.clone(), record)));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(None)
}

fn write_record(path: &Path, record: &Record) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(path, serde_json::to_string_pretty(record)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Records the values `setup` is about to replace, unless a record exists: the first record
/// wins, so a setup run again (by the boot unit, after systemd-sysctl applied drlb's values)
/// never records drlb's own values as the ones to restore. With `--persist` the record is
/// kept where a reboot keeps it; one already in the state directory moves there.
fn record_before_setup(
    paths: &PersistPaths,
    options: &SetupOptions<'_>,
    interface: &str,
    done: &mut Vec<String>,
) -> Result<()> {
    let records = paths.records(options.state_dir);
    let existing = read_record(&records)?;
    let target = if options.persist {
        &paths.record
    } else {
        &records[1]
    };
    match existing {
        Some((path, _)) if path == paths.record || !options.persist => {}
        Some((path, record)) => {
            write_record(target, &record)?;
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            done.push(format!(
                "moved the record of the previous ARP settings to {} (kept across reboots)",
                target.display()
            ));
        }
        None => {
            let record: Record = [ALL, LOOPBACK, interface]
                .iter()
                .map(|c| Ok(((*c).to_owned(), read_conf(c)?)))
                .collect::<Result<_>>()?;
            write_record(target, &record)?;
            done.push(format!(
                "recorded the previous ARP settings in {} (for teardown)",
                target.display()
            ));
        }
    }
    Ok(())
}

/// Installs the running binary at `target` for the boot unit: root's, mode 0755, in
/// directories only root may change; the unit never runs a file others could replace.
fn install_binary(target: &Path, done: &mut Vec<String>) -> Result<()> {
    let current = std::env::current_exe().context("cannot tell where the drlb binary is")?;
    let dir = target
        .parent()
        .context("the installed binary's path has no directory")?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(INSTALLED_DIR_MODE)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    only_root_may_change(dir)?;
    let contents = fs::read(&current)
        .with_context(|| format!("cannot read the running binary {}", current.display()))?;
    if fs::read(target).is_ok_and(|installed| installed == contents) {
        done.push(format!("{} up to date", target.display()));
    } else {
        // Written aside and renamed over: a unit starting meanwhile runs the old file or the
        // new one, never half of one.
        let partial = dir.join(format!(".drlb.{}", std::process::id()));
        let _ = fs::remove_file(&partial);
        fs::write(&partial, &contents)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::os::unix::fs::chown(&partial, Some(ROOT_UID), Some(ROOT_GID))
            .with_context(|| format!("cannot give {} to root", partial.display()))?;
        fs::set_permissions(&partial, fs::Permissions::from_mode(INSTALLED_BINARY_MODE))
            .with_context(|| format!("cannot chmod {}", partial.display()))?;
        fs::rename(&partial, target)
            .with_context(|| format!("cannot install {}", target.display()))?;
        done.push(format!(
            "{} installed (a copy of {}) for the boot unit",
            target.display(),
            current.display()
        ));
    }
    only_root_may_change(target)
}

/// Fails unless `path` and every directory above it are root's and writable by root only (a
/// world-writable directory with the sticky bit, like /tmp, protects root's entries too).
fn only_root_may_change(path: &Path) -> Result<()> {
    for p in path.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        let meta = fs::metadata(p).with_context(|| format!("cannot inspect {}", p.display()))?;
        let mode = meta.mode();
        let protected = p != path && mode & STICKY != 0;
        if meta.uid() != ROOT_UID || (mode & WRITABLE_BY_OTHERS != 0 && !protected) {
            bail!(
                "{} is not root's or is writable by others than root (owner uid {}, mode {:o}): the \
                 boot unit would run {}, which they could replace; make it root's and writable by \
                 root only (`chown root:root {p}; chmod go-w {p}`), then run setup again",
                p.display(),
                meta.uid(),
                mode & 0o7777,
                path.display(),
                p = p.display()
            );
        }
    }
    Ok(())
}

pub struct SetupOptions<'a> {
    pub vips: &'a [Ipv4Addr],
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
    record_before_setup(&paths, options, &interface, &mut done)?;
    let wanted = ArpConf {
        arp_ignore: WANT_ARP_IGNORE,
        arp_announce: WANT_ARP_ANNOUNCE,
    };
    for conf in [ALL, LOOPBACK, interface.as_str()] {
        write_conf(conf, wanted, &mut done)?;
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
        let on_lo = host.on_lo(*vip);
        if on_lo.iter().any(|(a, _)| a.prefix == 32) {
            done.push(format!("{vip}/32 on lo already"));
            continue;
        }
        host.remove(&on_lo, " (not /32)", &mut done).await?;
        host.handle
            .address()
            .add(lo, IpAddr::V4(*vip), 32)
            .execute()
            .await
            .with_context(|| format!("adding {vip}/32 to lo failed"))?;
        done.push(format!("{vip}/32 added to lo"));
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

fn write_file(path: &Path, text: &str, done: &mut Vec<String>) -> Result<()> {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        done.push(format!("{} up to date", path.display()));
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    done.push(format!("{} written", path.display()));
    Ok(())
}

/// What `systemctl enable` does for a unit wanted by multi-user.target: a symlink.
fn enable_unit(paths: &PersistPaths, done: &mut Vec<String>) -> Result<()> {
    let target = Path::new("..").join(UNIT_NAME);
    if fs::read_link(&paths.wants_link).is_ok_and(|t| t == target) {
        done.push(format!("{} enabled already", UNIT_NAME));
        return Ok(());
    }
    let dir = paths.wants_link.parent().expect("has a parent");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _ = fs::remove_file(&paths.wants_link);
    std::os::unix::fs::symlink(&target, &paths.wants_link)
        .with_context(|| format!("cannot create {}", paths.wants_link.display()))?;
    done.push(format!(
        "{UNIT_NAME} enabled ({})",
        paths.wants_link.display()
    ));
    Ok(())
}

pub struct TeardownOptions<'a> {
    pub vips: &'a [Ipv4Addr],
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

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "drlb realserver {what} changes addresses and sysctls: run it as root (e.g. with sudo)"
        );
    }
    Ok(())
}

/// The text `drlb realserver check` prints.
#[must_use]
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        match &f.fix {
            None => {
                let _ = writeln!(out, "ok       {}", f.what);
            }
            Some(fix) => {
                let _ = writeln!(out, "PROBLEM  {}\n         fix: {fix}", f.what);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

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
        }
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
            &[VIP, Ipv4Addr::new(198, 18, 0, 101)],
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
