//! The common model both readers produce (virtual services as IPVS sees them), and its
//! translation to drlb services: schedulers, persistence, forwarding methods, backends.

use std::{collections::HashMap, net::IpAddr};

use lb_common::MAX_SERVICES;

use super::{Diagnostic, Location, Options};
use crate::config::{
    BackendConfig, Config, MAX_WEIGHT, Protocol, Scheduler, ServiceConfig, ServiceId,
    health_check::HealthCheckConfig,
};

/// The interface written when nothing names one.
pub const FALLBACK_INTERFACE: &str = "eth0";

/// What a reader found.
#[derive(Clone, Debug, Default)]
pub struct Lvs {
    pub services: Vec<VirtualService>,
    /// The first VRRP instance's interface and where it was found.
    pub interface: Option<(String, Location)>,
    /// Addresses VRRP instances hold (`virtual_ipaddress`), with the instance's name and place.
    pub vrrp_addresses: Vec<(IpAddr, String)>,
}

/// IPVS forwarding methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarding {
    /// Direct routing (`lb_kind DR`, `ipvsadm -g`): what drlb does.
    Dr,
    /// Masquerading (`lb_kind NAT`, `ipvsadm -m`).
    Nat,
    /// IP-in-IP tunnelling (`lb_kind TUN`, `ipvsadm -i`).
    Tun,
}

impl Forwarding {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Dr => "DR",
            Self::Nat => "NAT",
            Self::Tun => "TUN",
        }
    }
}

/// One IPVS virtual service with an address and port.
#[derive(Clone, Debug)]
pub struct VirtualService {
    pub at: Location,
    /// The statement as written, e.g. `virtual_server 198.18.0.100 80`.
    pub origin: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// The IPVS scheduler and where it was set.
    pub algo: Option<(String, Location)>,
    /// `persistence_timeout` / `-p` in seconds.
    pub persistence: Option<(u32, Location)>,
    pub forwarding: Forwarding,
    /// None: drlb's default check.
    pub health_check: Option<HealthCheckConfig>,
    /// Comments for `[service.health_check]`: where it came from, what is approximated.
    pub health_comments: Vec<String>,
    /// Further comments for the service.
    pub comments: Vec<String>,
    pub real_servers: Vec<RealServer>,
}

#[derive(Clone, Debug)]
pub struct RealServer {
    pub at: Location,
    /// The statement or line as written.
    pub origin: String,
    pub address: IpAddr,
    pub port: Option<u16>,
    pub weight: u32,
    /// Overrides the service's method.
    pub forwarding: Option<Forwarding>,
    pub comments: Vec<String>,
}

/// `[director]` of the output.
#[derive(Clone, Debug)]
pub struct Director {
    pub interface: String,
    pub comment: String,
    /// `active_when = "vip-assigned"`, and why, when keepalived's VRRP holds the VIPs.
    pub vip_assigned: Option<String>,
}

/// A translated service, with the comments the output carries.
#[derive(Clone, Debug)]
pub struct Imported {
    pub service: ServiceConfig,
    pub comments: Vec<String>,
    pub health_comments: Vec<String>,
    /// One list per backend of `service.backends`.
    pub backend_comments: Vec<Vec<String>>,
}

#[must_use]
pub fn director(lvs: &Lvs, options: &Options, diagnostics: &mut Vec<Diagnostic>) -> Director {
    if let Some(interface) = &options.interface {
        return Director {
            interface: interface.clone(),
            comment: "from --interface".to_owned(),
            vip_assigned: None,
        };
    }
    if let Some((interface, at)) = &lvs.interface {
        return Director {
            interface: interface.clone(),
            comment: format!("the interface of the first vrrp_instance ({at})"),
            vip_assigned: None,
        };
    }
    if !lvs.services.is_empty() {
        diagnostics.push(Diagnostic {
            at: None,
            severity: super::Severity::Note,
            message: format!(
                "no vrrp_instance names an interface: [director] interface is {FALLBACK_INTERFACE}; set it (or pass --interface)"
            ),
        });
    }
    Director {
        interface: FALLBACK_INTERFACE.to_owned(),
        comment: "SET THIS to the interface where VIP traffic arrives (nothing named one)"
            .to_owned(),
        vip_assigned: None,
    }
}

/// When keepalived's VRRP holds the services' VIPs (`virtual_ipaddress`), drlb follows the
/// address (`active_when = "vip-assigned"`): VRRP then decides which director forwards, with no
/// notify scripts. VIPs no VRRP instance holds would never be active then: each is noted.
pub fn follow_vrrp(
    lvs: &Lvs,
    services: &[Imported],
    director: &mut Director,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let held = |vip: IpAddr| lvs.vrrp_addresses.iter().find(|(a, _)| *a == vip);
    let Some((vip, instance)) = services.iter().find_map(|s| held(s.service.vip)) else {
        return;
    };
    director.vip_assigned = Some(format!(
        "{instance} holds {vip} (virtual_ipaddress): drlb is active for a VIP while this director holds it (docs/keepalived.md)"
    ));
    let mut noted = std::collections::BTreeSet::new();
    for imported in services {
        let vip = imported.service.vip;
        if held(vip).is_none() && noted.insert(vip) {
            diagnostics.push(Diagnostic {
                at: None,
                severity: super::Severity::Note,
                message: format!(
                    "VIP {vip} is in no vrrp_instance's virtual_ipaddress: with active_when = \"vip-assigned\" this director is never active for it; add it there"
                ),
            });
        }
    }
}

/// How an IPVS scheduler maps to drlb's, and what the output says about it.
#[must_use]
pub fn scheduler_for(algo: &str) -> (Scheduler, Mapping) {
    match algo {
        "rr" | "wrr" | "lc" | "wlc" | "mh" => (
            Scheduler::Maglev,
            Mapping::Exact(
                "maglev: weighted consistent hashing of each flow; a flow keeps its backend",
            ),
        ),
        "sh" => (
            Scheduler::SourceHash,
            Mapping::Exact("source-hash: a client address keeps its backend"),
        ),
        "dh" | "lblc" | "lblcr" => (
            Scheduler::Maglev,
            Mapping::Approximate(
                "destination-locality scheduling has no drlb equivalent: maglev with the weights",
            ),
        ),
        "sed" | "nq" | "fo" | "ovf" | "twos" => (
            Scheduler::Maglev,
            Mapping::Approximate(
                "drlb does not schedule on connection counts or overflow: maglev with the weights",
            ),
        ),
        _ => (
            Scheduler::Maglev,
            Mapping::Approximate("an unknown IPVS scheduler: maglev with the weights"),
        ),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// The usual translation: a comment in the output says what it became.
    Exact(&'static str),
    /// The nearest equivalent: a comment, and a note on stderr.
    Approximate(&'static str),
}

/// Translates every service; duplicates and services past drlb's limit are left out.
#[must_use]
pub fn services(
    lvs: &Lvs,
    director: &Director,
    options: &Options,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Imported> {
    let mut seen: HashMap<ServiceId, Location> = HashMap::new();
    let mut out = Vec::new();
    for vs in &lvs.services {
        let Some(imported) = service(vs, director, options, diagnostics) else {
            continue;
        };
        let id = imported.service.id();
        if let Some(first) = seen.get(&id) {
            diagnostics.push(Diagnostic::left_out(
                &vs.at,
                format!("{}: service {id} is already defined at {first}", vs.origin),
            ));
            continue;
        }
        if out.len() >= MAX_SERVICES as usize {
            diagnostics.push(Diagnostic::left_out(
                &vs.at,
                format!(
                    "{}: drlb supports at most {MAX_SERVICES} services",
                    vs.origin
                ),
            ));
            continue;
        }
        seen.insert(id, vs.at.clone());
        out.push(imported);
    }
    out
}

fn service(
    vs: &VirtualService,
    director: &Director,
    options: &Options,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Imported> {
    let origin = &vs.origin;
    let mut comments = vec![format!("{origin} ({})", vs.at)];
    comments.extend(vs.comments.iter().cloned());

    // Forwarding: drlb only routes directly, so the real servers must accept the VIP as is.
    let methods: Vec<Forwarding> = vs
        .real_servers
        .iter()
        .map(|rs| rs.forwarding.unwrap_or(vs.forwarding))
        .chain((vs.real_servers.is_empty()).then_some(vs.forwarding))
        .collect();
    if let Some(other) = methods.iter().find(|m| **m != Forwarding::Dr) {
        if !options.convert_to_dr {
            diagnostics.push(Diagnostic::left_out(
                &vs.at,
                format!(
                    "{origin}: lb_kind {}: drlb forwards by direct routing (DR) only; pass --convert-to-dr if the real servers can serve the VIP on the same port (`drlb realserver setup --vip {}` on each)",
                    other.name(),
                    vs.vip
                ),
            ));
            return None;
        }
        if let Some(rs) = vs
            .real_servers
            .iter()
            .find(|rs| rs.port.is_some_and(|p| p != vs.port))
        {
            diagnostics.push(Diagnostic::left_out(
                &vs.at,
                format!(
                    "{origin}: lb_kind {} cannot become DR: real server {}:{} ({}) listens on another port than the virtual port {} (DR cannot map ports)",
                    other.name(),
                    rs.address,
                    rs.port.unwrap_or(vs.port),
                    rs.at,
                    vs.port
                ),
            ));
            return None;
        }
        comments.push(format!(
            "lb_kind {} converted to DR (--convert-to-dr): every real server needs the VIP on lo and quiet ARP (`drlb realserver setup --vip {}`) and must be on a network the director reaches at layer 2",
            other.name(),
            vs.vip
        ));
    }

    let (mut scheduler, mut algo_comment) = (Scheduler::Maglev, None);
    if let Some((algo, at)) = &vs.algo {
        let (chosen, mapping) = scheduler_for(algo);
        scheduler = chosen;
        match mapping {
            Mapping::Exact(why) => algo_comment = Some(format!("lb_algo {algo} -> {why}")),
            Mapping::Approximate(why) => {
                diagnostics.push(Diagnostic::note(at, format!("lb_algo {algo}: {why}")));
                algo_comment = Some(format!("lb_algo {algo} -> {why}"));
            }
        }
    }
    if let Some((timeout, at)) = &vs.persistence {
        scheduler = Scheduler::SourceHash;
        let message = format!(
            "persistence_timeout {timeout} -> source-hash: a client keeps its real server as long as the real servers do not change (drlb has no persistence timeout){}",
            vs.algo
                .as_ref()
                .filter(|(algo, _)| algo != "sh")
                .map(|(algo, _)| format!("; replaces lb_algo {algo}"))
                .unwrap_or_default()
        );
        diagnostics.push(Diagnostic::note(at, message.clone()));
        algo_comment = Some(message);
    }
    comments.extend(algo_comment);

    let mut backends = Vec::new();
    let mut backend_comments = Vec::new();
    for rs in &vs.real_servers {
        if let Some(why) = unusable_backend(rs, vs, &backends) {
            diagnostics.push(Diagnostic::left_out(
                &rs.at,
                format!("real server {} of {origin}: {why}", rs.address),
            ));
            continue;
        }
        let mut these = vec![format!("{} ({})", rs.origin, rs.at)];
        if rs.forwarding.unwrap_or(vs.forwarding) == Forwarding::Dr
            && let Some(port) = rs.port.filter(|p| *p != vs.port)
        {
            diagnostics.push(Diagnostic::note(
                &rs.at,
                format!(
                    "real server {}:{port} of {origin}: DR does not map ports; it gets the virtual port {}",
                    rs.address, vs.port
                ),
            ));
            these.push(format!("port {port} ignored: DR keeps the virtual port"));
        }
        these.extend(rs.comments.iter().cloned());
        backends.push(BackendConfig {
            address: rs.address,
            weight: rs.weight,
            interface: None,
            mac: None,
        });
        backend_comments.push(these);
    }

    let service = ServiceConfig {
        vip: vs.vip,
        port: vs.port,
        protocol: vs.protocol,
        scheduler,
        table_size: lb_common::DEFAULT_TABLE_SIZE,
        health_check: vs.health_check.clone(),
        backends,
    };
    // Whatever drlb would still refuse leaves the service out, with drlb's own reason.
    if let Err(e) = validate_alone(&service, &director.interface) {
        diagnostics.push(Diagnostic::left_out(
            &vs.at,
            format!("{origin}: drlb would refuse it: {e:#}"),
        ));
        return None;
    }
    Some(Imported {
        service,
        comments,
        health_comments: vs.health_comments.clone(),
        backend_comments,
    })
}

/// Why a real server cannot be a backend of the service, if it cannot.
fn unusable_backend(
    rs: &RealServer,
    vs: &VirtualService,
    taken: &[BackendConfig],
) -> Option<String> {
    let address = rs.address;
    if address == vs.vip {
        Some("it is the VIP itself".to_owned())
    } else if taken.iter().any(|b| b.address == address) {
        Some(
            "it is listed twice (drlb backends are addresses; DR keeps the virtual port)"
                .to_owned(),
        )
    } else if address.is_ipv4() != vs.vip.is_ipv4() {
        Some(format!(
            "it is {} and the VIP is not: a drlb service's backends share its VIP's family",
            if address.is_ipv4() { "IPv4" } else { "IPv6" }
        ))
    } else if address.is_unspecified()
        || matches!(address, IpAddr::V4(v4) if v4.is_broadcast())
        || address.is_multicast()
        || address.is_loopback()
    {
        Some("not a unicast address a director can forward to".to_owned())
    } else if rs.weight > MAX_WEIGHT {
        Some(format!("weight {} is above {MAX_WEIGHT}", rs.weight))
    } else {
        None
    }
}

/// Validates a config holding only this service, as `drlb run` would.
fn validate_alone(service: &ServiceConfig, interface: &str) -> anyhow::Result<()> {
    // Parsed from text so that [director]'s defaults stay drlb's own.
    let mut config: Config = toml::from_str(&format!(
        "[director]\ninterface = {}\n",
        toml::Value::String(interface.to_owned())
    ))?;
    config.services.push(service.clone());
    config.validate()
}
