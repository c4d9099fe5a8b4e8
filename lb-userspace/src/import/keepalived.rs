//! keepalived's LVS part (`virtual_server`, `virtual_server_group`, `real_server`, checkers) to
//! the common model. What keepalived keeps doing (VRRP, global_defs, scripts) is not drlb's and
//! is passed over; the first `vrrp_instance`'s `interface` becomes the director's.
//! Settings are inherited as keepalived does: virtual server -> real server -> checker.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use lb_common::MAX_SERVICES;

use super::{
    Diagnostic, Location,
    parser::Node,
    translate::{Forwarding, Lvs, RealServer, VirtualService},
};
use crate::config::{
    Protocol,
    health_check::{CheckKind, HealthCheckConfig, OnFailure},
};

/// keepalived's defaults (keepalived.conf(5)): checks every 60 s, 5 s connect timeout, one
/// retry (three for DNS_CHECK), persistence 6 minutes.
const DEFAULT_DELAY_LOOP_S: f64 = 60.0;
const DEFAULT_CONNECT_TIMEOUT_S: f64 = 5.0;
const DEFAULT_RETRY: u32 = 1;
const DEFAULT_DNS_RETRY: u32 = 3;
const DEFAULT_PERSISTENCE_S: u32 = 360;
const DEFAULT_WEIGHT: u32 = 1;
const MS_PER_S: f64 = 1000.0;
/// keepalived takes a server back after one good check.
const KEEPALIVED_RISE: u32 = 1;
/// The status drlb's HTTP check expects when keepalived accepts a range (2xx by default).
const HTTP_OK: u16 = 200;

/// Reads the LVS part of a keepalived configuration.
#[must_use]
pub fn read(nodes: &[Node], diagnostics: &mut Vec<Diagnostic>) -> Lvs {
    let mut lvs = Lvs::default();
    let groups: HashMap<&str, &Node> = nodes
        .iter()
        .filter(|n| n.keyword == "virtual_server_group" && n.condition.is_none())
        .filter_map(|n| n.args.first().map(|name| (name.as_str(), n)))
        .collect();
    for node in nodes {
        match node.keyword.as_str() {
            "vrrp_instance" if node.condition.is_none() => {
                if lvs.interface.is_none() {
                    lvs.interface = node
                        .children()
                        .iter()
                        .find(|c| c.keyword == "interface" && c.condition.is_none())
                        .and_then(|c| Some((c.args.first()?.clone(), c.at.clone())));
                }
                lvs.vrrp_addresses.extend(vrrp_addresses(node));
            }
            "virtual_server" | "virtual_server_group" if node.condition.is_some() => {
                diagnostics.push(conditional(node));
            }
            "virtual_server" => virtual_server(node, &groups, &mut lvs, diagnostics),
            _ => {}
        }
    }
    lvs
}

/// The addresses (IPv4 and IPv6) of a vrrp_instance's `virtual_ipaddress` block
/// (`ADDR[/LEN] [dev X]...`), and of its `virtual_ipaddress_excluded` block: a dual-stack
/// instance lists one family there (keepalived refuses both in one block), and adds and removes
/// those addresses with its state all the same.
fn vrrp_addresses(instance: &Node) -> Vec<(IpAddr, String)> {
    let name = format!(
        "vrrp_instance {} ({})",
        instance.args.first().map_or("", String::as_str),
        instance.at
    );
    instance
        .children()
        .iter()
        .filter(|c| {
            matches!(
                c.keyword.as_str(),
                "virtual_ipaddress" | "virtual_ipaddress_excluded"
            ) && c.condition.is_none()
        })
        .flat_map(Node::children)
        .filter(|entry| entry.condition.is_none())
        .filter_map(|entry| {
            let address = entry.keyword.split('/').next()?;
            Some((address.parse().ok()?, name.clone()))
        })
        .collect()
}

fn conditional(node: &Node) -> Diagnostic {
    Diagnostic::left_out(
        &node.at,
        format!(
            "`{}` depends on keepalived's config id ({}): pass --config-id ID (keepalived's -i) to decide it",
            node.text(),
            node.condition.as_deref().unwrap_or_default()
        ),
    )
}

/// A virtual server's own settings, read once for all its addresses.
struct Settings {
    algo: Option<(String, Location)>,
    forwarding: Forwarding,
    persistence: Option<(u32, Location)>,
    protocol: Protocol,
    inherited: Inherited,
    comments: Vec<String>,
}

/// What a virtual server passes to its real servers and they to their checkers.
#[derive(Clone, Default)]
struct Inherited {
    delay_loop: Option<f64>,
    connect_timeout: Option<f64>,
    retry: Option<u32>,
    inhibit_on_failure: bool,
    virtualhost: Option<String>,
}

impl Inherited {
    /// Reads a timer or inherited flag; false when `node` is not one.
    fn read(&mut self, node: &Node, diagnostics: &mut Vec<Diagnostic>) -> bool {
        match node.keyword.as_str() {
            "delay_loop" => self.delay_loop = timer(node, diagnostics).or(self.delay_loop),
            "connect_timeout" => {
                self.connect_timeout = timer(node, diagnostics).or(self.connect_timeout);
            }
            "retry" | "nb_get_retry" | "nb_sock_retry" => {
                self.retry = number(node, diagnostics).or(self.retry);
            }
            "inhibit_on_failure" => self.inhibit_on_failure = boolean(node),
            "virtualhost" => self.virtualhost = node.args.first().cloned(),
            // They change when probes run, not what decides a server's health.
            "delay_before_retry" | "warmup" | "alpha" | "log_all_failures" | "smtp_alert"
            | "snmp_name" => {}
            _ => return false,
        }
        true
    }
}

fn virtual_server(
    node: &Node,
    groups: &HashMap<&str, &Node>,
    lvs: &mut Lvs,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let origin = node.text();
    if node.block.is_none() {
        diagnostics.push(Diagnostic::left_out(
            &node.at,
            format!("`{origin}` has no block {{ ... }}"),
        ));
        return;
    }
    // (address, port, where, what) for each address the service listens on.
    let endpoints: Vec<(IpAddr, Option<u16>, Location, String)> = match node
        .args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["fwmark", ..] => {
            diagnostics.push(Diagnostic::left_out(
                &node.at,
                format!("`{origin}`: {FWMARK_WHY}"),
            ));
            return;
        }
        ["group", name] => match groups.get(name) {
            Some(group) => group_members(group, &origin, diagnostics),
            None => {
                diagnostics.push(Diagnostic::left_out(
                    &node.at,
                    format!("`{origin}`: there is no virtual_server_group {name}"),
                ));
                return;
            }
        },
        [address, rest @ ..] if rest.len() <= 1 => match endpoint(address, rest.first().copied()) {
            Ok((ip, port)) => vec![(ip, port, node.at.clone(), origin.clone())],
            Err(why) => {
                diagnostics.push(Diagnostic::left_out(&node.at, format!("`{origin}`: {why}")));
                return;
            }
        },
        _ => {
            diagnostics.push(Diagnostic::left_out(
                &node.at,
                format!("`{origin}`: expected virtual_server IP PORT, fwmark N or group NAME"),
            ));
            return;
        }
    };
    let Some(settings) = settings(node, diagnostics) else {
        return;
    };
    let real_servers: Vec<(RealServer, Vec<Checker>)> = node
        .children()
        .iter()
        .filter(|c| c.keyword == "real_server" && c.condition.is_none())
        .filter_map(|c| real_server(c, &settings, diagnostics))
        .collect();
    for (ip, port, at, origin) in endpoints {
        let vip = ip;
        let Some(port) = port else {
            diagnostics.push(Diagnostic::left_out(
                &at,
                format!("`{origin}`: no port (a service on every port); drlb services have one port each"),
            ));
            continue;
        };
        let (health_check, health_comments) =
            service_check(&real_servers, port, &origin, diagnostics);
        lvs.services.push(VirtualService {
            at: node.at.clone(),
            origin: if at == node.at {
                origin
            } else {
                format!("{} member {origin} ({at})", node.text())
            },
            vip,
            port,
            protocol: settings.protocol,
            algo: settings.algo.clone(),
            persistence: settings.persistence.clone(),
            forwarding: settings.forwarding,
            health_check,
            health_comments,
            comments: settings.comments.clone(),
            real_servers: real_servers.iter().map(|(rs, _)| rs.clone()).collect(),
        });
    }
}

const FWMARK_WHY: &str = "fwmark services match packets that iptables/nftables marked; drlb matches VIP, port and protocol: write a service per VIP and port instead";

/// `IP [PORT]`.
fn endpoint(address: &str, port: Option<&str>) -> Result<(IpAddr, Option<u16>), String> {
    let ip: IpAddr = address
        .parse()
        .map_err(|_| format!("{address:?} is not an IP address"))?;
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{p:?} is not a port"))
        })
        .transpose()?;
    Ok((ip, port))
}

/// The addresses of a virtual_server_group: `IP [PORT]`, ranges `A.B.C.D-E`,
/// `A.B.C.D-A.B.C.E`, `A.B.C.D/NN`; `fwmark N` members are left out.
fn group_members(
    group: &Node,
    origin: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<(IpAddr, Option<u16>, Location, String)> {
    let mut members = Vec::new();
    for member in group.children() {
        let text = member.text();
        if member.condition.is_some() {
            diagnostics.push(conditional(member));
            continue;
        }
        if member.keyword == "fwmark" {
            diagnostics.push(Diagnostic::left_out(
                &member.at,
                format!("`{origin}` member `{text}`: {FWMARK_WHY}"),
            ));
            continue;
        }
        let port = member.args.first().map(String::as_str);
        let addresses = match address_range(&member.keyword) {
            Ok(addresses) => addresses,
            Err(why) => {
                diagnostics.push(Diagnostic::left_out(
                    &member.at,
                    format!("`{origin}` member `{text}`: {why}"),
                ));
                continue;
            }
        };
        for address in addresses {
            match endpoint(&address.to_string(), port) {
                Ok((ip, port)) => members.push((
                    ip,
                    port,
                    member.at.clone(),
                    format!(
                        "{address} {}",
                        port.map(|p| p.to_string()).unwrap_or_default()
                    )
                    .trim()
                    .to_owned(),
                )),
                Err(why) => diagnostics.push(Diagnostic::left_out(
                    &member.at,
                    format!("`{origin}` member `{text}`: {why}"),
                )),
            }
        }
    }
    members
}

/// The addresses a group member names. An IPv6 member is one address (an IPv6 range is
/// refused).
fn address_range(text: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let too_many =
        |n: u64| format!("a range of {n} addresses; drlb supports at most {MAX_SERVICES} services");
    let (first, last) = if let Some((base, len)) = text.split_once('/') {
        let base: Ipv4Addr = base
            .parse()
            .map_err(|_| format!("{text:?} is not an IPv4 address range"))?;
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{text:?} has no valid prefix length"))?;
        let size = 1u64 << (32 - len);
        let first = u32::from(base) & (u32::MAX.checked_shl(32 - len).unwrap_or(0));
        (u64::from(first), u64::from(first) + size - 1)
    } else if let Some((start, end)) = text.split_once('-') {
        let start: Ipv4Addr = start.parse().map_err(|_| {
            format!("{text:?} is not an address range (IPv6 ranges are not supported)")
        })?;
        let end: Ipv4Addr = match end.parse::<u8>() {
            Ok(last_octet) => {
                let [a, b, c, _] = start.octets();
                Ipv4Addr::new(a, b, c, last_octet)
            }
            Err(_) => end
                .parse()
                .map_err(|_| format!("{text:?} is not an address range"))?,
        };
        (u64::from(u32::from(start)), u64::from(u32::from(end)))
    } else {
        return Err(format!("{text:?} is not an IP address or range"));
    };
    if last < first {
        return Err(format!("{text:?} ends before it starts"));
    }
    let count = last - first + 1;
    if count > u64::from(MAX_SERVICES) {
        return Err(too_many(count));
    }
    Ok((first..=last)
        .map(|a| IpAddr::V4(Ipv4Addr::from(u32::try_from(a).unwrap_or(u32::MAX))))
        .collect())
}

/// The virtual server's own keywords. None when the service cannot be translated at all.
fn settings(node: &Node, diagnostics: &mut Vec<Diagnostic>) -> Option<Settings> {
    let origin = node.text();
    let mut settings = Settings {
        algo: None,
        // keepalived's default forwarding method is NAT (keepalived.conf(5), lvs_method).
        forwarding: Forwarding::Nat,
        persistence: None,
        protocol: Protocol::Tcp,
        inherited: Inherited::default(),
        comments: Vec::new(),
    };
    let mut ok = true;
    if !node
        .children()
        .iter()
        .any(|c| matches!(c.keyword.as_str(), "lb_kind" | "lvs_method"))
    {
        diagnostics.push(Diagnostic::note(
            &node.at,
            format!("`{origin}` sets no lb_kind: keepalived's default is NAT"),
        ));
    }
    for child in node.children() {
        if child.condition.is_some() {
            diagnostics.push(conditional(child));
            continue;
        }
        if settings.inherited.read(child, diagnostics) {
            continue;
        }
        let first = child.args.first().map(String::as_str);
        let text = child.text();
        let mut left_out = |why: &str| {
            diagnostics.push(Diagnostic::left_out(
                &child.at,
                format!("`{text}` in `{origin}`: {why}"),
            ));
        };
        match child.keyword.as_str() {
            "real_server" => {}
            "lb_algo" | "lvs_sched" => {
                settings.algo = first.map(|a| (a.to_owned(), child.at.clone()));
            }
            "lb_kind" | "lvs_method" => match forwarding(first) {
                Some(method) => settings.forwarding = method,
                None => {
                    left_out("an unknown forwarding method");
                    ok = false;
                }
            },
            "persistence_timeout" => {
                let timeout = match first {
                    None => Some(DEFAULT_PERSISTENCE_S),
                    Some(t) => t.parse().ok(),
                };
                match timeout {
                    Some(0) => {}
                    Some(t) => settings.persistence = Some((t, child.at.clone())),
                    None => left_out("not a number of seconds"),
                }
            }
            "protocol" => match first.map(str::to_ascii_uppercase).as_deref() {
                Some("TCP") => settings.protocol = Protocol::Tcp,
                Some("UDP") => settings.protocol = Protocol::Udp,
                _ => {
                    left_out("drlb balances TCP and UDP only");
                    ok = false;
                }
            },
            "persistence_granularity" => diagnostics.push(Diagnostic::note(
                &child.at,
                format!("`{text}`: drlb's source-hash keeps each client address (/32), not a whole network"),
            )),
            "persistence_engine" => left_out("drlb has no persistence engines (SIP)"),
            "quorum" | "hysteresis" | "quorum_up" | "quorum_down" => {
                left_out("drlb has no quorum: a service forwards while any backend is up");
            }
            "sorry_server" => left_out(
                "drlb has no sorry server: with every backend down the service drops its traffic",
            ),
            "sorry_server_inhibit" | "sorry_server_lvs_method" | "ip_family" | "omega" => {}
            "ops" => left_out("one-packet scheduling: drlb schedules UDP per flow"),
            "ha_suspend" => diagnostics.push(Diagnostic::note(
                &child.at,
                format!("`{text}`: drlb checks its backends also while standby"),
            )),
            "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback" | "mh-port"
            | "mh-fallback" | "hashed" => diagnostics.push(Diagnostic::note(
                &child.at,
                format!("`{text}`: drlb has no scheduler flags; ignored"),
            )),
            _ => left_out("an unknown keyword (keepalived would warn too)"),
        }
    }
    ok.then_some(settings)
}

fn forwarding(method: Option<&str>) -> Option<Forwarding> {
    match method?.to_ascii_uppercase().as_str() {
        "DR" => Some(Forwarding::Dr),
        "NAT" => Some(Forwarding::Nat),
        "TUN" => Some(Forwarding::Tun),
        _ => None,
    }
}

/// A checker of a real server, translated as far as drlb can.
#[derive(Clone, Debug)]
struct Checker {
    at: Location,
    /// None: drlb cannot do this check (left out, reported).
    check: Option<HealthCheckConfig>,
    /// What stands in when drlb cannot do the check: a TCP connect for TCP services (with
    /// keepalived's timers), none for UDP services.
    fallback: HealthCheckConfig,
    /// The port probed when the checker does not say (the real server's).
    connect_port: Option<u16>,
    comments: Vec<String>,
}

fn real_server(
    node: &Node,
    settings: &Settings,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(RealServer, Vec<Checker>)> {
    let text = node.text();
    let (address, port) = match endpoint(
        node.args.first().map_or("", String::as_str),
        node.args.get(1).map(String::as_str),
    ) {
        Ok((address, port)) => (address, port),
        Err(why) => {
            diagnostics.push(Diagnostic::left_out(&node.at, format!("`{text}`: {why}")));
            return None;
        }
    };
    let mut rs = RealServer {
        at: node.at.clone(),
        origin: text.clone(),
        address,
        port,
        weight: DEFAULT_WEIGHT,
        forwarding: None,
        comments: Vec::new(),
    };
    let mut inherited = settings.inherited.clone();
    let mut checkers = Vec::new();
    // Checkers inherit what the real server sets anywhere in its block, so read settings first.
    for child in node.children() {
        if child.condition.is_some() {
            diagnostics.push(conditional(child));
            continue;
        }
        if inherited.read(child, diagnostics) {
            continue;
        }
        let child_text = child.text();
        match child.keyword.as_str() {
            "weight" => match child.args.first().and_then(|w| w.parse().ok()) {
                Some(weight) => rs.weight = weight,
                None => diagnostics.push(Diagnostic::left_out(
                    &child.at,
                    format!("`{child_text}` in `{text}`: not a weight; the backend gets weight {DEFAULT_WEIGHT}"),
                )),
            },
            "lvs_method" | "lb_kind" => match forwarding(child.args.first().map(String::as_str)) {
                Some(method) => rs.forwarding = Some(method),
                None => {
                    diagnostics.push(Diagnostic::left_out(
                        &child.at,
                        format!("`{child_text}` in `{text}`: an unknown forwarding method"),
                    ));
                    return None;
                }
            },
            "notify_up" | "notify_down" => diagnostics.push(Diagnostic::left_out(
                &child.at,
                format!("`{child_text}`: drlb runs no scripts on health changes (its log says BACKEND UP/DOWN)"),
            )),
            "uthreshold" | "lthreshold" => diagnostics.push(Diagnostic::left_out(
                &child.at,
                format!("`{child_text}`: drlb has no connection limits per backend"),
            )),
            kind if kind.ends_with("_CHECK") || kind == "HTTP_GET" || kind == "SSL_GET" => {}
            _ => diagnostics.push(Diagnostic::left_out(
                &child.at,
                format!("`{child_text}` in `{text}`: an unknown keyword (keepalived would warn too)"),
            )),
        }
    }
    for child in node.children() {
        let kind = child.keyword.as_str();
        if child.condition.is_none()
            && (kind.ends_with("_CHECK") || kind == "HTTP_GET" || kind == "SSL_GET")
        {
            checkers.push(checker(
                child,
                &rs,
                &inherited,
                settings.protocol,
                diagnostics,
            ));
        }
    }
    // inhibit_on_failure is the real server's; drlb's on_failure is the service's check's, so
    // it goes with the check (real servers that differ are reported there).
    if inherited.inhibit_on_failure {
        for checker in &mut checkers {
            for check in checker.check.iter_mut().chain([&mut checker.fallback]) {
                if check.kind != CheckKind::None {
                    check.on_failure = OnFailure::Drain;
                }
            }
            checker.comments.push(INHIBIT_COMMENT.to_owned());
        }
    }
    Some((rs, checkers))
}

const INHIBIT_COMMENT: &str = "inhibit_on_failure -> on_failure = \"drain\": a failed backend gets no new flows, its established ones continue (keepalived's weight 0)";

/// Translates one checker block. Reports what it cannot translate.
fn checker(
    node: &Node,
    rs: &RealServer,
    parent: &Inherited,
    protocol: Protocol,
    diagnostics: &mut Vec<Diagnostic>,
) -> Checker {
    let kind = node.keyword.as_str();
    let mut inherited = parent.clone();
    let mut connect_port = rs.port;
    let mut comments = vec![format!(
        "{kind} of real_server {} ({})",
        rs.address, node.at
    )];
    let mut urls = Vec::new();
    for child in node.children() {
        if child.condition.is_some() {
            diagnostics.push(conditional(child));
            continue;
        }
        if inherited.read(child, diagnostics) {
            continue;
        }
        let text = child.text();
        let first = child.args.first().map(String::as_str);
        match child.keyword.as_str() {
            "connect_port" => match first.and_then(|p| p.parse::<u16>().ok()) {
                Some(port) => connect_port = Some(port),
                None => diagnostics.push(Diagnostic::left_out(
                    &child.at,
                    format!("`{text}`: not a port"),
                )),
            },
            "connect_ip" if first != Some(&rs.address.to_string()) => {
                diagnostics.push(Diagnostic::note(
                    &child.at,
                    format!(
                        "`{text}`: drlb probes the backend's own address {}",
                        rs.address
                    ),
                ));
            }
            "bindto" | "bind_if" | "bind_port" | "fwmark" => diagnostics.push(Diagnostic::note(
                &child.at,
                format!("`{text}`: drlb's probes leave from the director's own address; ignored"),
            )),
            "url" => urls.push(child),
            "host" => diagnostics.push(Diagnostic::note(
                &child.at,
                "SMTP_CHECK host blocks: drlb probes only the real server",
            )),
            // Protocol details of checks drlb replaces or cannot do: reported with the checker.
            "connect_ip" | "http_protocol" | "fast_recovery" | "enable_sni" | "helo_name"
            | "misc_path" | "misc_timeout" | "misc_dynamic" | "user" | "type" | "name"
            | "require_reply" | "payload" | "min_reply_length" | "max_reply_length"
            | "ping_interval" | "file" | "bfd_name" | "track_file" | "weight" => {}
            _ => diagnostics.push(Diagnostic::note(
                &child.at,
                format!("`{text}` in {kind}: an unknown keyword; ignored"),
            )),
        }
    }
    let retry = inherited.retry.unwrap_or(if kind == "DNS_CHECK" {
        DEFAULT_DNS_RETRY
    } else {
        DEFAULT_RETRY
    });
    let interval_s = inherited.delay_loop.unwrap_or(DEFAULT_DELAY_LOOP_S);
    let timeout_s = inherited
        .connect_timeout
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT_S);
    let interval_ms = seconds_to_ms(interval_s);
    let mut timeout_ms = seconds_to_ms(timeout_s);
    comments.push(format!(
        "delay_loop {interval_s} s -> interval_ms; connect_timeout {timeout_s} s -> timeout_ms; retry {retry} -> fall {} (retry + 1 failed probes); rise {KEEPALIVED_RISE} as in keepalived",
        retry.saturating_add(1)
    ));
    if timeout_ms > interval_ms {
        diagnostics.push(Diagnostic::note(
            &node.at,
            format!("{kind}: connect_timeout {timeout_s} s is longer than delay_loop {interval_s} s; drlb's probes may not overlap, so timeout_ms is {interval_ms}"),
        ));
        timeout_ms = interval_ms;
    }
    let base = HealthCheckConfig {
        kind: CheckKind::Tcp,
        port: None,
        interval_ms,
        timeout_ms,
        rise: KEEPALIVED_RISE,
        fall: retry.saturating_add(1),
        ..HealthCheckConfig::default()
    };
    let nearest_tcp = |why: &str, diagnostics: &mut Vec<Diagnostic>, comments: &mut Vec<String>| {
        let message = format!("{kind} -> a TCP connect check to the same port: {why}");
        diagnostics.push(Diagnostic::note(&node.at, message.clone()));
        comments.push(message);
        Some(base.clone())
    };
    let check = match kind {
        "TCP_CHECK" => Some(base.clone()),
        "HTTP_GET" => Some(http(
            &urls,
            &inherited,
            base.clone(),
            &mut comments,
            diagnostics,
        )),
        "SSL_GET" => nearest_tcp("drlb's checks do not speak TLS", diagnostics, &mut comments),
        "SMTP_CHECK" => nearest_tcp(
            "drlb's checks do not speak SMTP",
            diagnostics,
            &mut comments,
        ),
        "DNS_CHECK" if protocol == Protocol::Tcp => {
            nearest_tcp("drlb's checks do not speak DNS", diagnostics, &mut comments)
        }
        _ => {
            let why = match kind {
                "MISC_CHECK" => "drlb runs no check scripts",
                "UDP_CHECK" | "DNS_CHECK" => "drlb cannot probe UDP",
                "PING_CHECK" => "drlb does not ping",
                "FILE_CHECK" => "drlb does not watch files",
                "BFD_CHECK" => "drlb does not speak BFD",
                _ => "an unknown checker",
            };
            diagnostics.push(Diagnostic::left_out(
                &node.at,
                format!(
                    "{kind} of real_server {}: {why}; {}",
                    rs.address,
                    match protocol {
                        Protocol::Tcp => "drlb probes the port with a TCP connect instead",
                        Protocol::Udp =>
                            "the service has no health check (every backend counts as up)",
                    }
                ),
            ));
            None
        }
    };
    let fallback = match protocol {
        Protocol::Tcp => base,
        Protocol::Udp => HealthCheckConfig {
            kind: CheckKind::None,
            ..HealthCheckConfig::default()
        },
    };
    Checker {
        at: node.at.clone(),
        check,
        fallback,
        connect_port,
        comments,
    }
}

/// HTTP_GET: the first url's path and status. drlb checks one path for one status.
fn http(
    urls: &[&Node],
    inherited: &Inherited,
    base: HealthCheckConfig,
    comments: &mut Vec<String>,
    diagnostics: &mut Vec<Diagnostic>,
) -> HealthCheckConfig {
    let mut check = HealthCheckConfig {
        kind: CheckKind::Http,
        expect_status: HTTP_OK,
        ..base
    };
    if let Some(host) = &inherited.virtualhost {
        comments.push(format!("virtualhost {host}: drlb's probes do not send it"));
    }
    let Some((url, others)) = urls.split_first() else {
        comments.push("no url: drlb requests / and expects 200".to_owned());
        return check;
    };
    for other in others {
        diagnostics.push(Diagnostic::note(
            &other.at,
            "a second url: drlb checks one path per service (the first)",
        ));
    }
    let mut status_given = false;
    for child in url.children() {
        let text = child.text();
        match child.keyword.as_str() {
            "path" => {
                if let Some(path) = child.args.first() {
                    check.path.clone_from(path);
                }
            }
            "status_code" => {
                status_given = true;
                match child.args.as_slice() {
                    [one] if one.parse::<u16>().is_ok() => {
                        check.expect_status = one.parse().unwrap_or(HTTP_OK);
                    }
                    codes => {
                        let first = codes
                            .first()
                            .and_then(|c| c.split('-').next())
                            .and_then(|c| c.parse::<u16>().ok());
                        if !codes.iter().any(|c| status_in(c, HTTP_OK))
                            && let Some(first) = first
                        {
                            check.expect_status = first;
                        }
                        diagnostics.push(Diagnostic::note(
                            &child.at,
                            format!("`{text}`: drlb expects one status: {}", check.expect_status),
                        ));
                    }
                }
            }
            "digest" => diagnostics.push(Diagnostic::note(
                &child.at,
                "digest: drlb checks the status, not the body's MD5",
            )),
            "regex" | "regex_no_match" | "regex_options" | "regex_stack" | "regex_min_offset"
            | "regex_max_offset" => diagnostics.push(Diagnostic::note(
                &child.at,
                format!("`{text}`: drlb checks the status, not the body"),
            )),
            "virtualhost" => comments.push(format!("{text}: drlb's probes do not send it")),
            _ => diagnostics.push(Diagnostic::note(
                &child.at,
                format!("`{text}` in url: an unknown keyword; ignored"),
            )),
        }
    }
    if !status_given {
        comments.push("no status_code: keepalived accepts any 2xx, drlb expects 200".to_owned());
    }
    check
}

/// Whether `code` is in a status_code item (`200` or `200-299`).
fn status_in(item: &str, code: u16) -> bool {
    match item.split_once('-') {
        Some((low, high)) => match (low.parse::<u16>(), high.parse::<u16>()) {
            (Ok(low), Ok(high)) => (low..=high).contains(&code),
            _ => false,
        },
        None => item.parse() == Ok(code),
    }
}

/// Longest timer written, in milliseconds (about 49 days): far past any sensible check, and
/// within TOML's integers.
const MAX_TIMER_MS: u64 = u32::MAX as u64;

/// keepalived timers are seconds with fractions; drlb's are milliseconds (1 to MAX_TIMER_MS).
fn seconds_to_ms(seconds: f64) -> u64 {
    // A saturating float-to-int cast, then bounded.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = (seconds * MS_PER_S).round() as u64;
    ms.clamp(1, MAX_TIMER_MS)
}

/// The service's one health check from its real servers' checkers, per virtual port.
fn service_check(
    real_servers: &[(RealServer, Vec<Checker>)],
    vs_port: u16,
    origin: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> (Option<HealthCheckConfig>, Vec<String>) {
    let mut chosen: Option<(HealthCheckConfig, Vec<String>, &RealServer)> = None;
    for (rs, checkers) in real_servers {
        let (check, comments) = rs_check(checkers, vs_port, diagnostics);
        match &chosen {
            None => chosen = Some((check, comments, rs)),
            Some((first, _, first_rs)) if *first != check => {
                diagnostics.push(Diagnostic::left_out(
                    &rs.at,
                    format!(
                        "the health check of real_server {} in `{origin}` differs from that of {} ({}): drlb has one check per service and uses the first",
                        rs.address, first_rs.address, first_rs.at
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    match chosen {
        Some((check, comments, _)) => (Some(check), comments),
        None => (None, Vec::new()),
    }
}

/// One real server's check: its first checker drlb can do (keepalived requires all to pass).
fn rs_check(
    checkers: &[Checker],
    vs_port: u16,
    diagnostics: &mut Vec<Diagnostic>,
) -> (HealthCheckConfig, Vec<String>) {
    let for_port = |checker: &Checker, check: &HealthCheckConfig| HealthCheckConfig {
        port: checker.connect_port.filter(|p| *p != vs_port),
        ..check.clone()
    };
    let usable: Vec<(&Checker, HealthCheckConfig)> = checkers
        .iter()
        .filter_map(|c| c.check.as_ref().map(|check| (c, for_port(c, check))))
        .collect();
    if let Some(((first, check), rest)) = usable.split_first() {
        for (other, other_check) in rest {
            if other_check != check {
                diagnostics.push(Diagnostic::left_out(
                    &other.at,
                    "a second checker that checks something else: drlb runs one check per service (the first)",
                ));
            }
        }
        return (check.clone(), first.comments.clone());
    }
    // Checkers drlb cannot do were reported; TCP services fall back to a connect check.
    if let Some(checker) = checkers.first() {
        let mut comments = checker.comments.clone();
        comments.push("in place of a check drlb cannot do (see stderr)".to_owned());
        return (for_port(checker, &checker.fallback), comments);
    }
    (
        HealthCheckConfig {
            kind: CheckKind::None,
            ..HealthCheckConfig::default()
        },
        vec!["no checker in keepalived: every backend counts as up".to_owned()],
    )
}

fn timer(node: &Node, diagnostics: &mut Vec<Diagnostic>) -> Option<f64> {
    let value = node
        .args
        .first()
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t >= 0.0);
    if value.is_none() {
        diagnostics.push(Diagnostic::note(
            &node.at,
            format!("`{}`: not a time in seconds; ignored", node.text()),
        ));
    }
    value
}

fn number(node: &Node, diagnostics: &mut Vec<Diagnostic>) -> Option<u32> {
    let value = node.args.first().and_then(|n| n.parse().ok());
    if value.is_none() {
        diagnostics.push(Diagnostic::note(
            &node.at,
            format!("`{}`: not a number; ignored", node.text()),
        ));
    }
    value
}

/// keepalived's <BOOL>: a bare keyword is true.
fn boolean(node: &Node) -> bool {
    !matches!(
        node.args.first().map(|a| a.to_ascii_lowercase()).as_deref(),
        Some("off" | "false" | "no")
    )
}
