//! What `--persist` leaves on the host so a reboot keeps the setup: the sysctl.d file, the
//! systemd unit and the binary it runs, and the record of the values before the first setup.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs, io,
    net::IpAddr,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use super::*;

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
pub fn unit_text(drlb: &Path, interface: &str, vips: &[IpAddr]) -> String {
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
    pub(super) fn records(&self, state_dir: &Path) -> [PathBuf; 2] {
        [self.record.clone(), state_dir.join(RECORD_FILE)]
    }
}

/// The first record found among `paths`, with its path.
pub(super) fn read_record(paths: &[PathBuf]) -> Result<Option<(PathBuf, Record)>> {
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

pub(super) fn write_record(path: &Path, record: &Record) -> Result<()> {
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
pub(super) fn record_before_setup(
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
pub(crate) fn install_binary(target: &Path, done: &mut Vec<String>) -> Result<()> {
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
pub(super) fn only_root_may_change(path: &Path) -> Result<()> {
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

pub(super) fn write_file(path: &Path, text: &str, done: &mut Vec<String>) -> Result<()> {
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
pub(super) fn enable_unit(paths: &PersistPaths, done: &mut Vec<String>) -> Result<()> {
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
