//! `ipvsadm-save -n` output to the common model: `-A` lines add virtual services, `-a` lines
//! their real servers (ipvsadm(8); long option names are accepted too).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use super::{
    Diagnostic, Location,
    translate::{Forwarding, Lvs, RealServer, VirtualService},
};
use crate::config::{
    Protocol,
    health_check::{CheckKind, HealthCheckConfig},
};

/// ipvsadm's default persistence timeout (`-p` without a value), in seconds.
const DEFAULT_PERSISTENCE_S: u32 = 300;
const DEFAULT_WEIGHT: u32 = 1;

/// Reads `ipvsadm-save -n` text; `name` names it in messages.
#[must_use]
pub fn read(text: &str, name: &str, diagnostics: &mut Vec<Diagnostic>) -> Lvs {
    let file: Arc<str> = name.into();
    let mut lvs = Lvs::default();
    // (protocol, "VIP:PORT" as written) -> index in lvs.services.
    let mut index: HashMap<(Protocol, SocketAddr), usize> = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let at = Location {
            file: file.clone(),
            line: u32::try_from(number + 1).unwrap_or(u32::MAX),
        };
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let result = match words[0] {
            "-A" | "--add-service" => {
                add_service(&words[1..], line, &at, &mut index, &mut lvs, diagnostics)
            }
            "-a" | "--add-server" => {
                add_server(&words[1..], line, &at, &index, &mut lvs, diagnostics)
            }
            _ => Err(
                "not an `ipvsadm-save -n` line (-A adds a service, -a a real server)".to_owned(),
            ),
        };
        if let Err(why) = result {
            diagnostics.push(Diagnostic::left_out(&at, format!("`{line}`: {why}")));
        }
    }
    lvs
}

/// The service a `-t|-u ADDR:PORT` option names.
fn service_of(words: &[&str]) -> Result<(Protocol, SocketAddr, usize), String> {
    for (i, word) in words.iter().enumerate() {
        let protocol = match *word {
            "-t" | "--tcp-service" => Protocol::Tcp,
            "-u" | "--udp-service" => Protocol::Udp,
            "-f" | "--fwmark-service" => {
                return Err("fwmark services match packets that iptables/nftables marked; drlb matches VIP, port and protocol: write a service per VIP and port instead".to_owned());
            }
            "--sctp-service" => return Err("drlb balances TCP and UDP only".to_owned()),
            _ => continue,
        };
        let address = words.get(i + 1).ok_or("the service address is missing")?;
        let address = socket_address(address)?;
        return Ok((protocol, address, i + 2));
    }
    Err("no -t or -u service".to_owned())
}

fn socket_address(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>().map_err(|_| {
        format!(
            "{text:?} is not ADDRESS:PORT in numbers (IPv6 as [2001:db8::1]:80; save with \
             `ipvsadm-save -n`)"
        )
    })
}

fn add_service(
    words: &[&str],
    line: &str,
    at: &Location,
    index: &mut HashMap<(Protocol, SocketAddr), usize>,
    lvs: &mut Lvs,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<(), String> {
    let (protocol, address, _) = service_of(words)?;
    let vip = address.ip();
    if address.port() == 0 {
        return Err(
            "port 0 (a service on every port); drlb services have one port each".to_owned(),
        );
    }
    let mut vs = VirtualService {
        at: at.clone(),
        origin: line.to_owned(),
        vip,
        port: address.port(),
        protocol,
        algo: None,
        persistence: None,
        forwarding: Forwarding::Dr,
        health_check: Some(HealthCheckConfig {
            kind: CheckKind::None,
            ..HealthCheckConfig::default()
        }),
        health_comments: vec![
            "ipvsadm has no health checks: every backend counts as up. Remove this table for drlb's TCP connect checks".to_owned(),
        ],
        comments: Vec::new(),
        real_servers: Vec::new(),
    };
    let mut words = words.iter().copied().peekable();
    while let Some(word) = words.next() {
        match word {
            "-t" | "--tcp-service" | "-u" | "--udp-service" => {
                words.next();
            }
            "-s" | "--scheduler" => {
                vs.algo = Some((
                    words.next().ok_or("-s names no scheduler")?.to_owned(),
                    at.clone(),
                ));
            }
            "-p" | "--persistent" => {
                let timeout = words
                    .next_if(|w| !w.starts_with('-'))
                    .map(|t| {
                        t.parse::<u32>()
                            .map_err(|_| format!("-p {t}: not a number of seconds"))
                    })
                    .transpose()?
                    .unwrap_or(DEFAULT_PERSISTENCE_S);
                vs.persistence = Some((timeout, at.clone()));
            }
            "-M" | "--netmask" => {
                let mask = words.next().unwrap_or_default();
                diagnostics.push(Diagnostic::note(
                    at,
                    format!("-M {mask}: drlb's source-hash keeps each client address (/32), not a whole network"),
                ));
            }
            "-b" | "--sched-flags" => {
                let flags = words.next().unwrap_or_default();
                diagnostics.push(Diagnostic::note(
                    at,
                    format!("-b {flags}: drlb has no scheduler flags; ignored"),
                ));
            }
            "-o" | "--ops" => {
                return Err("one-packet scheduling: drlb schedules UDP per flow".to_owned());
            }
            "--pe" => return Err("drlb has no persistence engines (SIP)".to_owned()),
            other => return Err(format!("{other}: an option drlb import does not know")),
        }
    }
    if let Some((timeout, _)) = &vs.persistence {
        vs.comments.push(format!("-p {timeout}"));
    }
    let key = (protocol, address);
    if index.contains_key(&key) {
        return Err("the service is added twice".to_owned());
    }
    index.insert(key, lvs.services.len());
    lvs.services.push(vs);
    Ok(())
}

fn add_server(
    words: &[&str],
    line: &str,
    at: &Location,
    index: &HashMap<(Protocol, SocketAddr), usize>,
    lvs: &mut Lvs,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<(), String> {
    let (protocol, address, _) = service_of(words)?;
    let &service = index
        .get(&(protocol, address))
        .ok_or("no -A line before it adds that service")?;
    let mut rs: Option<(IpAddr, Option<u16>)> = None;
    let (mut weight, mut forwarding) = (DEFAULT_WEIGHT, Forwarding::Dr);
    let mut words = words.iter().copied();
    while let Some(word) = words.next() {
        match word {
            "-t" | "--tcp-service" | "-u" | "--udp-service" => {
                words.next();
            }
            "-r" | "--real-server" => {
                let text = words.next().ok_or("-r names no real server")?;
                rs = Some(match text.parse::<SocketAddr>() {
                    Ok(address) => (address.ip(), Some(address.port())),
                    // A bare address, IPv6 with or without brackets.
                    Err(_) => (
                        text.trim_start_matches('[')
                            .trim_end_matches(']')
                            .parse::<IpAddr>()
                            .map_err(|_| {
                                format!(
                                    "{text:?} is not an ADDRESS[:PORT] in numbers (IPv6 as \
                                     [2001:db8::2]:80; save with `ipvsadm-save -n`)"
                                )
                            })?,
                        None,
                    ),
                });
            }
            "-g" | "--gatewaying" => forwarding = Forwarding::Dr,
            "-m" | "--masquerading" => forwarding = Forwarding::Nat,
            "-i" | "--ipip" => forwarding = Forwarding::Tun,
            "-w" | "--weight" => {
                let w = words.next().ok_or("-w names no weight")?;
                weight = w.parse().map_err(|_| format!("-w {w}: not a weight"))?;
            }
            "-x" | "--u-threshold" | "-y" | "--l-threshold" => {
                let value = words.next().unwrap_or_default();
                if value != "0" {
                    diagnostics.push(Diagnostic::left_out(
                        at,
                        format!("{word} {value}: drlb has no connection limits per backend"),
                    ));
                }
            }
            "--tun-type" | "--tun-port" | "--tun-nocsum" | "--tun-csum" | "--tun-remcsum" => {
                if word == "--tun-type" || word == "--tun-port" {
                    words.next();
                }
            }
            other => return Err(format!("{other}: an option drlb import does not know")),
        }
    }
    let (address, port) = rs.ok_or("no -r real server")?;
    lvs.services[service].real_servers.push(RealServer {
        at: at.clone(),
        origin: line.to_owned(),
        address,
        port: port.filter(|p| *p != 0),
        weight,
        forwarding: Some(forwarding),
        comments: Vec::new(),
    });
    Ok(())
}
