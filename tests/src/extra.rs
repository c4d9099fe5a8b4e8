//! Hosts beyond the standard testbed (see `testbed`): a fresh host plugged into the switch, and
//! keepalived in a director's namespace, as guards.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use crate::{
    netns::{Netns, PassProgram, Process, Switch},
    testbed::{Host, IFNAME},
};

/// A new namespace plugged into the switch as `eth0` with `ip`/24 and `mac`, computing
/// checksums in software like every testbed host. Nothing else is configured: a fresh host.
#[must_use]
pub fn plug_host(switch: &Switch, name: &'static str, ip: &'static str, mac: &str) -> Host {
    let ns = Netns::create(name);
    switch.connect(&ns, &switch_port(name), IFNAME, mac, &format!("{ip}/24"));
    ns.checksum_in_software(IFNAME);
    let mac = ns.mac(IFNAME);
    Host {
        name,
        ns,
        ip,
        ip6: None,
        mac,
    }
}

/// The switch-side port of a host plugged by [`plug_host`] (the testbed's naming).
#[must_use]
pub fn switch_port(name: &str) -> String {
    format!("p-{name}")
}

/// A director plugged next to the testbed's: its switch port runs the pass program, without
/// which veth drops what it sends with XDP_TX. Drop order: the program, then the host.
pub struct ExtraDirector {
    _pass: PassProgram,
    pub host: Host,
}

impl ExtraDirector {
    #[must_use]
    pub fn plug(switch: &Switch, name: &'static str, ip: &'static str, mac: &str) -> Self {
        let host = plug_host(switch, name, ip, mac);
        let pass = PassProgram::attach(&switch.ns, &switch_port(name));
        Self { _pass: pass, host }
    }
}

/// A keepalived VRRP instance for a drlb director: unicast to its peer, no virtual MAC, and
/// one of the two ways of driving drlb ([`Drive`]).
pub struct Keepalived {
    pub router_id: String,
    pub interface: String,
    pub priority: u8,
    pub own_ip: String,
    pub peer_ip: String,
    pub drive: Drive,
    /// Track this director's drlb with this command (`drlb stats --state-dir ...`) as a
    /// `track_script` (not `track_process`: its process events are not available in a network
    /// namespace): keepalived enters FAULT when drlb stops answering.
    pub track_drlb: Option<String>,
}

/// How keepalived tells drlb which director is active.
pub enum Drive {
    /// No address of its own to manage; notify scripts run `drlb vip activate|deactivate`
    /// (drlb's `active_when = "always"`).
    NotifyScripts { drlb: PathBuf, state_dir: PathBuf },
    /// `virtual_ipaddress` only: keepalived adds the VIP (`/32`) to the master's interface and
    /// removes it on the backup; drlb follows the address (`active_when = "vip-assigned"`).
    VirtualIpaddress { vip: String },
}

impl Keepalived {
    /// The configuration text (docs/keepalived.md explains each line).
    #[must_use]
    pub fn config(&self) -> String {
        let (global, drive) = match &self.drive {
            Drive::NotifyScripts { drlb, state_dir } => {
                let (drlb, state) = (drlb.display(), state_dir.display());
                let activate = format!("{drlb} vip activate --state-dir {state}");
                let deactivate = format!("{drlb} vip deactivate --state-dir {state}");
                (
                    "    script_user root\n".to_owned(),
                    format!(
                        "    notify_master \"{activate}\"\n\
                         \x20   notify_backup \"{deactivate}\"\n\
                         \x20   notify_fault \"{deactivate}\"\n\
                         \x20   notify_stop \"{deactivate}\"\n"
                    ),
                )
            }
            Drive::VirtualIpaddress { vip } => (
                String::new(),
                format!(
                    "    virtual_ipaddress {{\n\
                     \x20       {vip}/32 dev {interface}\n\
                     \x20   }}\n",
                    interface = self.interface
                ),
            ),
        };
        let (track_def, track_use) = match &self.track_drlb {
            Some(command) => (
                format!(
                    "vrrp_script drlb_running {{\n\
                     \x20   script \"{command}\"\n\
                     \x20   interval 1\n\
                     \x20   timeout 2\n\
                     \x20   fall 2\n\
                     \x20   rise 1\n\
                     }}\n"
                ),
                "    track_script {\n        drlb_running\n    }\n".to_owned(),
            ),
            None => (String::new(), String::new()),
        };
        format!(
            "global_defs {{\n\
             \x20   router_id {router_id}\n\
             {global}\
             }}\n\
             {track_def}\
             vrrp_instance DRLB {{\n\
             \x20   state BACKUP\n\
             \x20   interface {interface}\n\
             \x20   virtual_router_id 51\n\
             \x20   priority {priority}\n\
             \x20   advert_int 1\n\
             \x20   unicast_src_ip {own}\n\
             \x20   unicast_peer {{\n\
             \x20       {peer}\n\
             \x20   }}\n\
             \x20   check_unicast_src\n\
             {track_use}\
             {drive}\
             }}\n",
            router_id = self.router_id,
            interface = self.interface,
            priority = self.priority,
            own = self.own_ip,
            peer = self.peer_ip,
        )
    }

    /// Writes the config into `dir` and starts keepalived in `ns` in the foreground (VRRP only),
    /// with its own config, pid files and console log.
    #[track_caller]
    pub fn start(&self, ns: &Netns, label: &str, dir: &Path) -> Process {
        let conf = dir.join(format!("{label}.conf"));
        std::fs::write(&conf, self.config())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
        let pid = |what: &str| dir.join(format!("{label}.{what}.pid"));
        let argv: Vec<OsString> = vec![
            "keepalived".into(),
            "--dont-fork".into(),
            "--log-console".into(),
            "--log-detail".into(),
            "--vrrp".into(),
            "--use-file".into(),
            conf.into_os_string(),
            "--pid".into(),
            pid("main").into_os_string(),
            "--vrrp_pid".into(),
            pid("vrrp").into_os_string(),
            "--checkers_pid".into(),
            pid("checkers").into_os_string(),
        ];
        ns.spawn(label, &argv, dir)
    }
}
