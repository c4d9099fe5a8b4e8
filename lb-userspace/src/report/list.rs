//! `drlb list`: the report in `ipvsadm -Ln`'s layout (plain, `--stats`, `--rate`, `--exact`),
//! column for column, so scripts and eyes that read ipvsadm keep working. Pure.
//!
//! The formats are ipvsadm 1.31's (`print_title`, `print_service_entry`, `print_largenum` in
//! ipvsadm.c): services sorted by protocol, address and port, backends by address.

use std::{fmt::Write as _, net::IpAddr};

use super::stats::{BackendStats, ServiceStats, StatsReport, with_port};

/// The IPVS version the header names: the listing format drlb reproduces (ipvsadm prints the
/// kernel's, 1.2.1 on every kernel since 2.6.28).
pub const IPVS_VERSION: &str = "1.2.1";
/// ipvsadm's widths: the service column, and the backend address column.
const SERVICE_WIDTH: usize = 33;
const BACKEND_WIDTH: usize = 28;
/// What `Forward` says for direct routing.
const FORWARD_ROUTE: &str = "Route";
/// `print_largenum`: below this a number is printed whole, above in K, M, G or T.
const LARGE_THRESHOLDS: [(u64, u64, char); 4] = [
    (1_000_000_000, 1_000, 'K'),
    (100_000_000_000, 1_000_000, 'M'),
    (100_000_000_000_000, 1_000_000_000, 'G'),
    (u64::MAX, 1_000_000_000_000, 'T'),
];
const WHOLE_BELOW: u64 = 100_000_000;

/// Which columns, as ipvsadm's options choose them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Columns {
    /// `ipvsadm -Ln`: scheduler, forward, weight, ActiveConn, InActConn.
    Plain,
    /// `--stats`: Conns, InPkts, OutPkts, InBytes, OutBytes.
    Stats,
    /// `--rate`: CPS, InPPS, OutPPS, InBPS, OutBPS.
    Rate,
}

/// `report` as `ipvsadm -Ln` prints it; `exact` as `--exact` (no K/M/G suffixes).
#[must_use]
pub fn render(report: &StatsReport, columns: Columns, exact: bool) -> String {
    let mut out = String::new();
    let size = report.flow_table.map_or(0, |f| f.capacity);
    let _ = writeln!(
        out,
        "IP Virtual Server version {IPVS_VERSION} (size={size})"
    );
    out.push_str(&title(columns));
    let mut services: Vec<&ServiceStats> = report.services.iter().collect();
    services.sort_by_key(|s| (protocol_number(&s.protocol), address(&s.vip), s.port));
    for s in services {
        let name = truncated(
            format!(
                "{}  {}",
                s.protocol.to_uppercase(),
                with_port(&s.vip, s.port)
            ),
            SERVICE_WIDTH,
        );
        match columns {
            Columns::Plain => {
                let _ = writeln!(out, "{name} {}", scheduler_name(&s.scheduler));
            }
            Columns::Stats => {
                let _ = write!(out, "{name:<SERVICE_WIDTH$}");
                for n in [s.connections, s.packets, 0, s.bytes, 0] {
                    out.push_str(&large(n, exact));
                }
                out.push('\n');
            }
            Columns::Rate => {
                let _ = write!(out, "{name:<SERVICE_WIDTH$}");
                let r = s.rate;
                for n in [r.cps, r.in_pps, r.out_pps, r.in_bps, r.out_bps] {
                    out.push_str(&large(n, exact));
                }
                out.push('\n');
            }
        }
        let mut backends: Vec<&BackendStats> = s.backends.iter().collect();
        backends.sort_by_key(|b| address(&b.address));
        for b in backends {
            let name = truncated(with_port(&b.address, s.port), BACKEND_WIDTH);
            match columns {
                Columns::Plain => {
                    // drlb keeps no connection state: see `drlb list --help`.
                    let (active, inactive) = (0, 0);
                    let _ = writeln!(
                        out,
                        "  -> {name:<BACKEND_WIDTH$} {FORWARD_ROUTE:<7} {:<6} {active:<10} {inactive:<10}",
                        effective_weight(b)
                    );
                }
                Columns::Stats => {
                    let _ = write!(out, "  -> {name:<BACKEND_WIDTH$}");
                    for n in [b.connections, b.packets, 0, b.bytes, 0] {
                        out.push_str(&large(n, exact));
                    }
                    out.push('\n');
                }
                Columns::Rate => {
                    let r = b.rate;
                    let _ = write!(
                        out,
                        "  -> {name:<BACKEND_WIDTH$} {:>8} {:>8} {:>8}",
                        r.cps, r.in_pps, r.out_pps
                    );
                    out.push_str(&large(r.in_bps, exact));
                    out.push_str(&large(r.out_bps, exact));
                    out.push('\n');
                }
            }
        }
    }
    out
}

fn title(columns: Columns) -> String {
    let stats_title = |names: [&str; 5]| {
        let mut line = format!("{:<SERVICE_WIDTH$}", "Prot LocalAddress:Port");
        for n in names {
            let _ = write!(line, " {n:>8}");
        }
        line + "\n  -> RemoteAddress:Port\n"
    };
    match columns {
        Columns::Plain => "Prot LocalAddress:Port Scheduler Flags\n  \
                           -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
            .to_owned(),
        Columns::Stats => stats_title(["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]),
        Columns::Rate => stats_title(["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]),
    }
}

/// ipvsadm's `print_largenum`: 9 columns, whole below 100 million, else K/M/G/T; `exact`
/// prints every digit (at least 9 columns, one more than the digits).
fn large(n: u64, exact: bool) -> String {
    if exact {
        let digits = n.to_string();
        let width = if digits.len() <= 8 {
            9
        } else {
            digits.len() + 1
        };
        return format!("{digits:>width$}");
    }
    if n < WHOLE_BELOW {
        return format!("{n:>9}");
    }
    let (_, divisor, suffix) = LARGE_THRESHOLDS
        .iter()
        .copied()
        .find(|(below, _, _)| n < *below)
        .unwrap_or(LARGE_THRESHOLDS[LARGE_THRESHOLDS.len() - 1]);
    format!("{:>8}{suffix}", n / divisor)
}

/// IPVS's names: `mh` (Maglev hashing) and `sh` (source hashing).
fn scheduler_name(scheduler: &str) -> &str {
    match scheduler {
        "maglev" => "mh",
        "source-hash" => "sh",
        other => other,
    }
}

/// The weight IPVS would show: a backend that gets no traffic (down, MAC unknown) has weight
/// 0, as keepalived's `inhibit_on_failure` sets it.
fn effective_weight(b: &BackendStats) -> u32 {
    match b.state.as_str() {
        "active" | "drained" => b.weight,
        _ => 0,
    }
}

fn protocol_number(protocol: &str) -> u8 {
    match protocol {
        "tcp" => lb_common::IPPROTO_TCP,
        "udp" => lb_common::IPPROTO_UDP,
        _ => u8::MAX,
    }
}

/// For sorting as libipvs does: IPv4 before IPv6 (by address family), each by address;
/// unreadable text last.
fn address(text: &str) -> IpAddr {
    text.parse().unwrap_or(IpAddr::from([0xff_u8; 16]))
}

/// ipvsadm cuts names at the column's width.
fn truncated(mut text: String, width: usize) -> String {
    text.truncate(width);
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::stats::{FlowTableStats, Rate};

    fn backend(address: &str, weight: u32, state: &str, connections: u64) -> BackendStats {
        BackendStats {
            address: address.into(),
            interface: "eth0".into(),
            weight,
            mac: None,
            state: state.into(),
            health: "up".into(),
            packets: connections * 10,
            bytes: connections * 1000,
            connections,
            rate: Rate {
                cps: connections,
                in_pps: connections * 10,
                out_pps: 0,
                in_bps: connections * 1000,
                out_bps: 0,
            },
        }
    }

    fn service(
        protocol: &str,
        port: u16,
        scheduler: &str,
        backends: Vec<BackendStats>,
    ) -> ServiceStats {
        let connections = backends.iter().map(|b| b.connections).sum();
        ServiceStats {
            vip: "198.18.0.100".into(),
            port,
            protocol: protocol.into(),
            scheduler: scheduler.into(),
            packets: backends.iter().map(|b| b.packets).sum(),
            bytes: backends.iter().map(|b| b.bytes).sum(),
            connections,
            rate: Rate {
                cps: connections,
                in_pps: 0,
                out_pps: 0,
                in_bps: 123_456_789_012,
                out_bps: 0,
            },
            table_publishes: 1,
            table_publish_nanos: 1,
            backends,
        }
    }

    fn report() -> StatsReport {
        StatsReport {
            interfaces: Vec::new(),
            // Out of order on purpose: ipvsadm sorts.
            services: vec![
                service(
                    "udp",
                    53,
                    "source-hash",
                    vec![backend("198.18.0.13", 1, "down", 0)],
                ),
                service(
                    "tcp",
                    8080,
                    "maglev",
                    vec![
                        backend("198.18.0.12", 2, "active", 7),
                        backend("198.18.0.11", 1, "active", 12_000_000),
                        backend("198.18.0.9", 0, "drained", 1),
                    ],
                ),
            ],
            verdicts: BTreeMap::new(),
            state: "active".into(),
            vips: Vec::new(),
            arp_conflicts: Vec::new(),
            flow_table: Some(FlowTableStats {
                configured: 1 << 20,
                capacity: 1 << 20,
                per_cpu: 1 << 19,
                online_cpus: 2,
                possible_cpus: 2,
            }),
            events: BTreeMap::new(),
            answers_arp: true,
        }
    }

    /// ipvsadm writes IPv6 as `[address]:port` (libipvs `addrport_to_anyname`) and lists
    /// IPv4 services before IPv6 ones (by address family).
    #[test]
    fn ipv6_services_are_bracketed_and_listed_after_ipv4() {
        let mut report = report();
        let mut v6 = service(
            "tcp",
            80,
            "maglev",
            vec![
                backend("2001:2::12", 1, "active", 0),
                backend("2001:2::11", 1, "active", 0),
            ],
        );
        v6.vip = "2001:2::100".into();
        report.services.insert(0, v6);
        let text = render(&report, Columns::Plain, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[3], "TCP  198.18.0.100:8080 mh");
        assert_eq!(lines[7], "TCP  [2001:2::100]:80 mh");
        assert_eq!(
            lines[8],
            format!(
                "  -> {:<28} Route   1      0          0         ",
                "[2001:2::11]:80"
            )
        );
        assert_eq!(lines[9].split_whitespace().nth(1), Some("[2001:2::12]:80"));
    }

    #[test]
    fn plain_listing_is_ipvsadm_ln() {
        let want = "\
IP Virtual Server version 1.2.1 (size=1048576)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  198.18.0.100:8080 mh
  -> 198.18.0.9:8080              Route   0      0          0         
  -> 198.18.0.11:8080             Route   1      0          0         
  -> 198.18.0.12:8080             Route   2      0          0         
UDP  198.18.0.100:53 sh
  -> 198.18.0.13:53               Route   0      0          0         
";
        assert_eq!(render(&report(), Columns::Plain, false), want);
    }

    #[test]
    fn stats_listing_is_ipvsadm_ln_stats() {
        let want = "\
IP Virtual Server version 1.2.1 (size=1048576)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  198.18.0.100:8080            12000008  120000K        0   12000M        0
  -> 198.18.0.9:8080                     1       10        0     1000        0
  -> 198.18.0.11:8080             12000000  120000K        0   12000M        0
  -> 198.18.0.12:8080                    7       70        0     7000        0
UDP  198.18.0.100:53                     0        0        0        0        0
  -> 198.18.0.13:53                      0        0        0        0        0
";
        assert_eq!(render(&report(), Columns::Stats, false), want);
    }

    #[test]
    fn rate_listing_is_ipvsadm_ln_rate() {
        let want = "\
IP Virtual Server version 1.2.1 (size=1048576)
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  198.18.0.100:8080            12000008        0        0     123G        0
  -> 198.18.0.9:8080                     1       10        0     1000        0
  -> 198.18.0.11:8080             12000000 120000000        0   12000M        0
  -> 198.18.0.12:8080                    7       70        0     7000        0
UDP  198.18.0.100:53                     0        0        0     123G        0
  -> 198.18.0.13:53                      0        0        0        0        0
";
        assert_eq!(render(&report(), Columns::Rate, false), want);
    }

    #[test]
    fn exact_prints_every_digit() {
        let text = render(&report(), Columns::Stats, true);
        assert!(
            text.contains("TCP  198.18.0.100:8080            12000008 120000080        0 12000008000        0\n"),
            "{text}"
        );
    }

    #[test]
    fn large_numbers_take_ipvsadm_suffixes() {
        assert_eq!(large(99_999_999, false), " 99999999");
        assert_eq!(large(100_000_000, false), "  100000K");
        assert_eq!(large(999_999_999, false), "  999999K");
        assert_eq!(large(1_000_000_000, false), "    1000M");
        assert_eq!(large(100_000_000_000, false), "     100G");
        assert_eq!(large(u64::MAX, false), "18446744T");
    }
}
