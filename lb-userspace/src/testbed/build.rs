//! `drlb testbed up`: builds the namespaces, makes the real servers LVS-DR real servers (with
//! `drlb realserver setup`, run by this very binary inside each), attaches the pass program to
//! the director's veth peer and starts `drlb run` on the director. On any failure it removes
//! what it made.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Child,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use tracing::info;

use super::{
    director_state_dir,
    plan::{
        BACKEND_BRIDGE, BACKEND_IFNAME, BRIDGE, HOST_IFNAME, Host, Nic, Plan, Shape,
        backend_port_name, port_name,
    },
    shell, state_dir, teardown,
};
use crate::{config::Config, daemon::control};

/// How long `drlb run` may take to open its control socket.
const DRLB_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the pass program's holder may take to attach it.
const PASS_READY_TIMEOUT: Duration = Duration::from_secs(10);
const CONFIG_FILE: &str = "drlb.toml";
const DRLB_LOG: &str = "drlb.log";
const PASS_LOG: &str = "pass.log";
/// The last lines of a log a failure message shows.
const LOG_TAIL_LINES: usize = 20;
/// Mode of the state directory: the control socket's own mode decides who may use it.
const STATE_ROOT_MODE: u32 = 0o755;

pub struct UpOptions<'a> {
    pub name: &'a str,
    pub servers: u32,
    /// The real servers reached on a second bridge, as in the seed's testbed.
    pub two_armed: bool,
    /// IPv6 addresses (2001:2::/64) beside the IPv4 ones, and an IPv6 VIP.
    pub ipv6: bool,
    /// The director's config instead of the generated one; its interface must be `eth0`.
    pub config: Option<&'a Path>,
}

/// Builds testbed `name` and returns its description (the JSON `up` prints). Fails, removing
/// nothing, when the testbed exists already; on any later failure removes what it made.
pub fn up(options: &UpOptions) -> Result<Plan> {
    let config = options
        .config
        .map(|path| Config::load(path).map(|c| (path, c)))
        .transpose()?;
    let shape = Shape {
        servers: options.servers,
        two_armed: options.two_armed,
        ipv6: options.ipv6,
    };
    let plan = Plan::new(options.name, shape, config.as_ref().map(|(_, c)| c))?;
    refuse_existing(&plan)?;
    let state = claim_state_dir(&plan.name)?;
    let config_path = match &config {
        Some((path, _)) => fs::canonicalize(path)
            .with_context(|| format!("cannot resolve the path {}", path.display()))?,
        None => state.join(CONFIG_FILE),
    };
    match build(&plan, &state, &config_path) {
        Ok(()) => Ok(plan),
        Err(e) => {
            let cleaned = teardown::down(&plan.name).map_or_else(
                |c| {
                    format!(
                        "; cleaning up failed too ({c:#}): run `drlb testbed down --name {}`",
                        plan.name
                    )
                },
                |_| "; everything it made was removed".to_owned(),
            );
            Err(e.context(format!(
                "`drlb testbed up --name {}` failed{cleaned}",
                plan.name
            )))
        }
    }
}

/// Fails when any part of the testbed exists: `up` twice must not take over (or, on its own
/// failure, remove) a testbed someone is using.
fn refuse_existing(plan: &Plan) -> Result<()> {
    let existing = shell::namespaces().context("cannot list the network namespaces")?;
    let clash = plan
        .namespaces()
        .into_iter()
        .find(|ns| existing.contains(ns));
    let state = state_dir(&plan.name);
    if let Some(what) = clash.or_else(|| state.exists().then(|| state.display().to_string())) {
        bail!(
            "testbed {:?} exists already ({what}): use it, or remove it first with \
             `drlb testbed down --name {}`",
            plan.name,
            plan.name
        );
    }
    Ok(())
}

/// Creates the state directory; failing if another `up` of the same name just did.
fn claim_state_dir(name: &str) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let state = state_dir(name);
    let root = state.parent().expect("the state directory has a parent");
    fs::create_dir_all(root)
        .with_context(|| format!("cannot create {} (needs root)", root.display()))?;
    fs::set_permissions(root, fs::Permissions::from_mode(STATE_ROOT_MODE))
        .with_context(|| format!("cannot set the mode of {}", root.display()))?;
    fs::DirBuilder::new()
        .mode(STATE_ROOT_MODE)
        .create(&state)
        .with_context(|| {
            format!(
                "cannot create {}: if testbed {name:?} exists, remove it first with \
                 `drlb testbed down --name {name}`",
                state.display()
            )
        })?;
    Ok(state)
}

fn build(plan: &Plan, state: &Path, config_path: &Path) -> Result<()> {
    let drlb = std::env::current_exe().context("cannot find the drlb binary itself")?;
    create_switch(&plan.switch_netns, plan.two_armed)?;
    for host in plan.hosts() {
        plug_host(&plan.switch_netns, host, plan.ipv6)
            .with_context(|| format!("setting up the {} namespace {}", host.role, host.netns))?;
    }
    hold_pass_program(plan, &drlb, state)?;
    for server in &plan.servers {
        make_real_server(plan, server, &drlb, state)?;
    }
    if let Some(text) = &plan.generated_config {
        fs::write(config_path, text)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
    }
    start_drlb(plan, &drlb, state, config_path)
}

/// A new namespace with `lo` up. Without `ipv6`, IPv6 is off (no router solicitations in
/// users' captures); with it, IPv6 is on without duplicate address detection, so that every
/// address (the link-local ones too) is usable at once, and without router advertisements.
fn create_netns(netns: &str, ipv6: bool) -> Result<()> {
    shell::ip(&["netns", "add", netns])
        .with_context(|| format!("cannot create the namespace {netns} (needs root)"))?;
    shell::ip_in(netns, &["link", "set", "lo", "up"])?;
    let sysctls: &[(&str, &str)] = if ipv6 {
        &[
            ("net.ipv6.conf.all.disable_ipv6", "0"),
            ("net.ipv6.conf.default.disable_ipv6", "0"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.all.accept_ra", "0"),
            ("net.ipv6.conf.default.accept_ra", "0"),
        ]
    } else {
        &[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ]
    };
    for (key, value) in sysctls {
        if ipv6 {
            shell::run(&mut shell::in_netns(
                netns,
                Path::new("sysctl"),
                &["-q", "-w", &format!("{key}={value}")],
            ))
            .context("--ipv6 needs a kernel with IPv6")?;
        } else {
            // -e: a kernel without IPv6 has no such keys, which is just as good.
            shell::run(&mut shell::in_netns(
                netns,
                Path::new("sysctl"),
                &["-q", "-e", "-w", &format!("{key}={value}")],
            ))?;
        }
    }
    Ok(())
}

/// The switch: a namespace of its own holding the bridge(s) (no STP, forwarding at once).
fn create_switch(netns: &str, two_armed: bool) -> Result<()> {
    // The bridge forwards IPv6 frames without IPv6 of its own.
    create_netns(netns, false)?;
    let bridges: &[&str] = if two_armed {
        &[BRIDGE, BACKEND_BRIDGE]
    } else {
        &[BRIDGE]
    };
    for bridge in bridges {
        shell::ip_in(
            netns,
            &[
                "link",
                "add",
                bridge,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ],
        )?;
        shell::ip_in(netns, &["link", "set", bridge, "up"])
            .with_context(|| format!("cannot bring the bridge {bridge} up"))?;
    }
    Ok(())
}

/// A host's namespace, plugged into the bridge (two-armed, also into the backend bridge).
fn plug_host(switch: &str, host: &Host, ipv6: bool) -> Result<()> {
    create_netns(&host.netns, ipv6)?;
    plug(
        switch,
        BRIDGE,
        &port_name(&host.role),
        host,
        HOST_IFNAME,
        host.nic,
    )?;
    if let Some(nic) = host.backend_nic {
        plug(
            switch,
            BACKEND_BRIDGE,
            &backend_port_name(&host.role),
            host,
            BACKEND_IFNAME,
            nic,
        )?;
    }
    Ok(())
}

/// `ifname` of `host` with `nic`'s address and MAC, a veth whose peer `port` is on `bridge`.
fn plug(switch: &str, bridge: &str, port: &str, host: &Host, ifname: &str, nic: Nic) -> Result<()> {
    shell::ip_in(
        switch,
        &[
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            &host.netns,
        ],
    )?;
    shell::ip_in(switch, &["link", "set", port, "master", bridge, "up"])?;
    shell::ip_in(
        &host.netns,
        &["link", "set", ifname, "address", &nic.mac_text()],
    )?;
    shell::ip_in(&host.netns, &["addr", "add", &nic.cidr(), "dev", ifname])?;
    if let Some(cidr6) = nic.cidr6() {
        shell::ip_in(
            &host.netns,
            &["-6", "addr", "add", &cidr6, "dev", ifname, "nodad"],
        )?;
    }
    shell::ip_in(&host.netns, &["link", "set", ifname, "up"])?;
    // A veth leaves TCP/UDP checksums to "the NIC" (CHECKSUM_PARTIAL); XDP sees raw frames
    // without that note, so a frame the director forwards would arrive with a wrong checksum.
    shell::run(&mut shell::in_netns(
        &host.netns,
        Path::new("ethtool"),
        &["-K", ifname, "tx", "off"],
    ))
    .context("cannot turn tx checksum offload off (is ethtool installed? `cargo xtask setup`)")?;
    Ok(())
}

/// veth delivers what the director sends with XDP only to a peer that runs XDP; the peers are
/// in the switch namespace, where `drlb run` cannot reach them, so a detached `drlb testbed
/// hold-pass` attaches the pass program there and keeps it attached until `down` stops it.
fn hold_pass_program(plan: &Plan, drlb: &Path, state: &Path) -> Result<()> {
    let mut ports = vec![port_name(&plan.director.role)];
    if plan.director.backend_nic.is_some() {
        ports.push(backend_port_name(&plan.director.role));
    }
    let mut args = vec!["testbed", "hold-pass"];
    for port in &ports {
        args.extend(["--interface", port.as_str()]);
    }
    let mut holder = shell::spawn_detached(
        &mut shell::in_netns(&plan.switch_netns, drlb, &args),
        &state.join(PASS_LOG),
    )?;
    let attached = || {
        ports.iter().all(|port| {
            shell::ip_in(&plan.switch_netns, &["link", "show", "dev", port])
                .is_ok_and(|text| text.contains("xdp"))
        })
    };
    wait_ready(
        &mut holder,
        PASS_READY_TIMEOUT,
        attached,
        &state.join(PASS_LOG),
    )
    .context("attaching the pass program to the director's veth peer failed")
}

/// `drlb realserver setup` inside the server's namespace: the VIPs on lo, ARP kept quiet (an
/// IPv6 VIP on lo needs nothing more: Linux answers neighbour solicitations only for addresses
/// of the interface they arrive on).
fn make_real_server(plan: &Plan, server: &Host, drlb: &Path, state: &Path) -> Result<()> {
    let server_state = state.join(&server.role);
    let server_state = server_state
        .to_str()
        .context("the state directory's path is not UTF-8")?;
    let vips: Vec<String> = plan.vips.iter().map(ToString::to_string).collect();
    let mut args = vec!["realserver", "setup", "--interface", HOST_IFNAME];
    args.extend(["--state-dir", server_state]);
    for vip in &vips {
        args.extend(["--vip", vip.as_str()]);
    }
    shell::run(&mut shell::in_netns(&server.netns, drlb, &args))
        .with_context(|| format!("making {} an LVS-DR real server failed", server.netns))?;
    if server.backend_nic.is_some() {
        // Requests arrive on the backend interface, replies leave by the client-side one: a
        // reverse-path filter would drop the requests (the seed's server runs without one).
        for conf in ["all", "default", HOST_IFNAME, BACKEND_IFNAME] {
            let key = format!("net.ipv4.conf.{conf}.rp_filter=0");
            shell::run(&mut shell::in_netns(
                &server.netns,
                Path::new("sysctl"),
                &["-q", "-w", &key],
            ))?;
        }
    }
    Ok(())
}

/// `drlb run` on the director, detached, logging to the state directory; waits for its socket.
fn start_drlb(plan: &Plan, drlb: &Path, state: &Path, config_path: &Path) -> Result<()> {
    let director_state = director_state_dir(state);
    let (config, director_state_text) = (
        config_path
            .to_str()
            .context("the config's path is not UTF-8")?,
        director_state
            .to_str()
            .context("the state directory's path is not UTF-8")?,
    );
    let log = state.join(DRLB_LOG);
    let mut daemon = shell::spawn_detached(
        &mut shell::in_netns(
            &plan.director.netns,
            drlb,
            &[
                "run",
                "--config",
                config,
                "--state-dir",
                director_state_text,
            ],
        ),
        &log,
    )?;
    let socket = control::socket_path(&director_state);
    wait_ready(&mut daemon, DRLB_READY_TIMEOUT, || socket.exists(), &log)
        .context("drlb run on the director did not become ready")?;
    info!(socket = %socket.display(), log = %log.display(), "drlb is running on the director");
    Ok(())
}

/// Waits until `ready`, failing early (with the log's tail) when `child` exits.
fn wait_ready(
    child: &mut Child,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
    log: &Path,
) -> Result<()> {
    let mut exited = None;
    let became_ready = shell::wait_until(timeout, || {
        exited = child.try_wait().ok().flatten();
        exited.is_none() && ready()
    });
    if became_ready {
        return Ok(());
    }
    let tail = log_tail(log);
    match exited {
        Some(status) => bail!(
            "it exited ({status}); the end of {}:\n{tail}",
            log.display()
        ),
        None => bail!(
            "not ready after {timeout:?}; the end of {}:\n{tail}",
            log.display()
        ),
    }
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// `drlb testbed hold-pass`: attaches the pass program to `interfaces` of the current
/// namespace and keeps it attached until SIGTERM or SIGINT.
pub async fn hold_pass(interfaces: &[String]) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut attached = Vec::new();
    for interface in interfaces {
        let path = format!("/sys/class/net/{interface}/ifindex");
        let ifindex: u32 = fs::read_to_string(&path)
            .with_context(|| format!("no interface {interface} here ({path})"))?
            .trim()
            .parse()
            .with_context(|| format!("{path} holds no interface index"))?;
        attached.push(crate::dataplane::loader::attach_pass_program(ifindex)?);
        info!(interface, "pass program attached; holding it until SIGTERM");
    }
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
