//! The report as Prometheus metrics (OpenMetrics text, by the prometheus-client crate), for
//! `[director] metrics`: a fresh registry is filled from one report per scrape, so every
//! figure of a scrape comes from the same moment. Pure: the daemon's metrics server
//! (`daemon/metrics.rs`) serves what this returns.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::stats::{BackendStats, ServiceStats, StatsReport};

/// The content type of what [`render`] returns.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of what [`render_text`] returns.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every name starts so.
const PREFIX: &str = "drlb";
/// What `drlb_backend_state` and `drlb_backend_health` can say (one series per value, 1 for
/// the current one, as Prometheus' enum convention has it).
const BACKEND_STATES: [&str; 4] = ["active", "drained", "no-mac", "down"];
const BACKEND_HEALTH: [&str; 3] = ["up", "down", "unchecked"];
const NANOS_PER_SECOND: f64 = 1e9;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    vip: String,
    port: u16,
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    vip: String,
    port: u16,
    protocol: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendValueLabels {
    vip: String,
    port: u16,
    protocol: String,
    backend: String,
    value: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConflictLabels {
    mac: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipLabels {
    vip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

type Counters<L> = Family<L, Counter>;
type Gauges<L> = Family<L, Gauge>;

/// The metrics of `report`, in the OpenMetrics text format.
#[must_use]
pub fn render(report: &StatsReport) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    let service_packets: Counters<ServiceLabels> = family(
        &mut registry,
        "service_packets",
        "Packets forwarded per service",
    );
    let service_bytes: Counters<ServiceLabels> = family(
        &mut registry,
        "service_bytes",
        "Bytes forwarded per service",
    );
    let service_connections: Counters<ServiceLabels> = family(
        &mut registry,
        "service_connections",
        "New connections per service (flow-table misses the program forwarded)",
    );
    let table_publishes: Counters<ServiceLabels> = family(
        &mut registry,
        "table_publishes",
        "Maglev tables published per service (built and written)",
    );
    let table_seconds = Family::<ServiceLabels, Counter<f64, AtomicU64>>::default();
    registry.register(
        "table_publish_seconds",
        "Time spent building and publishing the service's tables",
        table_seconds.clone(),
    );
    let backend_packets: Counters<BackendLabels> = family(
        &mut registry,
        "backend_packets",
        "Packets forwarded per backend",
    );
    let backend_bytes: Counters<BackendLabels> = family(
        &mut registry,
        "backend_bytes",
        "Bytes forwarded per backend",
    );
    let backend_connections: Counters<BackendLabels> = family(
        &mut registry,
        "backend_connections",
        "New connections scheduled to the backend",
    );
    let backend_weight: Gauges<BackendLabels> = family(
        &mut registry,
        "backend_weight",
        "The backend's configured weight",
    );
    let backend_state: Gauges<BackendValueLabels> = family(
        &mut registry,
        "backend_state",
        "1 for the backend's state (active, drained, no-mac, down)",
    );
    let backend_health: Gauges<BackendValueLabels> = family(
        &mut registry,
        "backend_health",
        "1 for the backend's health check result (up, down, unchecked)",
    );
    let verdict_packets: Counters<VerdictLabels> = family(
        &mut registry,
        "verdict_packets",
        "Frames the XDP program judged, per verdict",
    );
    let verdict_bytes: Counters<VerdictLabels> = family(
        &mut registry,
        "verdict_bytes",
        "Bytes of those frames, per verdict",
    );
    let events: Counters<NameLabels> = family(
        &mut registry,
        "events",
        "What the program noticed beside the verdicts (bad_checksum, icmp_relay, fragment_forward, ...)",
    );
    let active = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    registry.register(
        "director_active",
        "1 while this director answers ARP for all its VIPs and forwards, 0 otherwise",
        active.clone(),
    );
    let vip_active: Gauges<VipLabels> = family(
        &mut registry,
        "vip_active",
        "1 while this director answers ARP for the VIP and forwards its services",
    );
    let vip_local: Gauges<VipLabels> = family(
        &mut registry,
        "vip_local",
        "1 while the VIP is an address of one of the director's interfaces",
    );
    let conflict_frames: Counters<ConflictLabels> = family(
        &mut registry,
        "arp_conflict_frames",
        "ARP frames claiming a VIP for another MAC, per MAC and kind (request, reply)",
    );
    let conflict_macs = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    registry.register(
        "arp_conflict_macs",
        "Other MACs seen claiming a VIP",
        conflict_macs.clone(),
    );
    let flow_capacity = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    registry.register(
        "flow_table_capacity",
        "Flows the flow table can hold (per-CPU share times online CPUs)",
        flow_capacity.clone(),
    );
    let build: Gauges<VersionLabels> = family(&mut registry, "build_info", "drlb's version");

    for s in &report.services {
        let labels = service_labels(s);
        service_packets.get_or_create(&labels).inc_by(s.packets);
        service_bytes.get_or_create(&labels).inc_by(s.bytes);
        service_connections
            .get_or_create(&labels)
            .inc_by(s.connections);
        table_publishes
            .get_or_create(&labels)
            .inc_by(s.table_publishes);
        #[allow(clippy::cast_precision_loss)] // nanoseconds far below 2^52 s
        table_seconds
            .get_or_create(&labels)
            .inc_by(s.table_publish_nanos as f64 / NANOS_PER_SECOND);
        for b in &s.backends {
            let labels = backend_labels(s, b);
            backend_packets.get_or_create(&labels).inc_by(b.packets);
            backend_bytes.get_or_create(&labels).inc_by(b.bytes);
            backend_connections
                .get_or_create(&labels)
                .inc_by(b.connections);
            backend_weight
                .get_or_create(&labels)
                .set(i64::from(b.weight));
            for state in BACKEND_STATES {
                backend_state
                    .get_or_create(&with_value(&labels, state))
                    .set(i64::from(b.state == state));
            }
            for health in BACKEND_HEALTH {
                backend_health
                    .get_or_create(&with_value(&labels, health))
                    .set(i64::from(b.health == health));
            }
        }
    }
    for (verdict, count) in &report.verdicts {
        let labels = VerdictLabels {
            verdict: verdict.clone(),
        };
        verdict_packets.get_or_create(&labels).inc_by(count.packets);
        verdict_bytes.get_or_create(&labels).inc_by(count.bytes);
    }
    for (name, count) in &report.events {
        events
            .get_or_create(&NameLabels { name: name.clone() })
            .inc_by(count.packets);
    }
    active.set(i64::from(report.state == "active"));
    for v in &report.vips {
        let labels = VipLabels {
            vip: v.vip.to_string(),
        };
        vip_active.get_or_create(&labels).set(i64::from(v.active));
        vip_local.get_or_create(&labels).set(i64::from(v.local));
    }
    for c in &report.arp_conflicts {
        for (kind, n) in [("request", c.requests), ("reply", c.replies)] {
            conflict_frames
                .get_or_create(&ConflictLabels {
                    mac: c.mac.clone(),
                    kind: kind.to_owned(),
                })
                .inc_by(n);
        }
    }
    conflict_macs.set(i64::try_from(report.arp_conflicts.len()).unwrap_or(i64::MAX));
    if let Some(f) = report.flow_table {
        flow_capacity.set(i64::try_from(f.capacity).unwrap_or(i64::MAX));
    }
    build
        .get_or_create(&VersionLabels {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .set(1);

    let mut text = String::new();
    encode(&mut text, &registry).expect("writing into a String cannot fail");
    text
}

/// A family registered under `name` (without the prefix; counters get `_total`).
/// The metrics of `report` in Prometheus' older text format (0.0.4), for scrapers that do not
/// ask for OpenMetrics (`promtool check metrics`, curl).
#[must_use]
pub fn render_text(report: &StatsReport) -> String {
    to_text_format(&render(report))
}

/// Whether a scraper's `Accept` header asks for OpenMetrics (Prometheus does).
#[must_use]
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// OpenMetrics text as the 0.0.4 text format, for what `render` writes (counters and gauges;
/// no units, exemplars or `_created`): the older format names a counter's family by its
/// samples (`x_total`), not `x`, and has no `# EOF`.
fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let metadata = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match metadata {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn family<L, M>(registry: &mut Registry, name: &str, help: &str) -> Family<L, M>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Default
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let family = Family::<L, M>::default();
    registry.register(name, help, family.clone());
    family
}

fn service_labels(s: &ServiceStats) -> ServiceLabels {
    ServiceLabels {
        vip: s.vip.clone(),
        port: s.port,
        protocol: s.protocol.clone(),
    }
}

fn backend_labels(s: &ServiceStats, b: &BackendStats) -> BackendLabels {
    BackendLabels {
        vip: s.vip.clone(),
        port: s.port,
        protocol: s.protocol.clone(),
        backend: b.address.clone(),
    }
}

fn with_value(labels: &BackendLabels, value: &str) -> BackendValueLabels {
    BackendValueLabels {
        vip: labels.vip.clone(),
        port: labels.port,
        protocol: labels.protocol.clone(),
        backend: labels.backend.clone(),
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::stats::{Count, FlowTableStats, Rate, VipStats};

    fn report() -> StatsReport {
        StatsReport {
            interfaces: Vec::new(),
            services: vec![ServiceStats {
                vip: "198.18.0.100".into(),
                port: 8080,
                protocol: "tcp".into(),
                scheduler: "maglev".into(),
                packets: 30,
                bytes: 3000,
                connections: 3,
                rate: Rate::default(),
                table_publishes: 2,
                table_publish_nanos: 1_500_000,
                backends: vec![BackendStats {
                    address: "198.18.0.11".into(),
                    interface: "eth0".into(),
                    weight: 2,
                    mac: None,
                    state: "drained".into(),
                    health: "up".into(),
                    packets: 20,
                    bytes: 2000,
                    connections: 2,
                    rate: Rate::default(),
                }],
            }],
            verdicts: BTreeMap::from([(
                "tx".to_owned(),
                Count {
                    packets: 30,
                    bytes: 3000,
                },
            )]),
            state: "partly active".into(),
            vips: vec![
                VipStats {
                    vip: "198.18.0.100".parse().unwrap(),
                    active: true,
                    local: true,
                },
                VipStats {
                    vip: "198.18.0.101".parse().unwrap(),
                    active: false,
                    local: false,
                },
            ],
            arp_conflicts: Vec::new(),
            flow_table: Some(FlowTableStats {
                configured: 4096,
                capacity: 4096,
                per_cpu: 2048,
                online_cpus: 2,
                possible_cpus: 2,
            }),
            events: BTreeMap::new(),
            answers_arp: true,
        }
    }

    /// The sample lines (no comments), so the test reads what a scraper reads.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    /// IPv6 addresses are label values as they are written (no brackets: the port has its
    /// own label).
    #[test]
    fn ipv6_services_and_vips_are_labelled_by_their_addresses() {
        let mut report = report();
        report.services[0].vip = "2001:2::100".into();
        report.services[0].backends[0].address = "2001:2::11".into();
        report.vips[1].vip = "2001:2::100".parse().unwrap();
        let text = render(&report);
        let samples = samples(&text);
        for want in [
            r#"drlb_service_packets_total{vip="2001:2::100",port="8080",protocol="tcp"} 30"#,
            r#"drlb_backend_packets_total{vip="2001:2::100",port="8080",protocol="tcp",backend="2001:2::11"} 20"#,
            r#"drlb_vip_active{vip="2001:2::100"} 0"#,
        ] {
            assert!(samples.contains(&want), "{want} missing from:\n{text}");
        }
    }

    #[test]
    fn names_and_labels_follow_prometheus_conventions() {
        let text = render(&report());
        let samples = samples(&text);
        for want in [
            r#"drlb_service_packets_total{vip="198.18.0.100",port="8080",protocol="tcp"} 30"#,
            r#"drlb_service_bytes_total{vip="198.18.0.100",port="8080",protocol="tcp"} 3000"#,
            r#"drlb_service_connections_total{vip="198.18.0.100",port="8080",protocol="tcp"} 3"#,
            r#"drlb_table_publishes_total{vip="198.18.0.100",port="8080",protocol="tcp"} 2"#,
            r#"drlb_table_publish_seconds_total{vip="198.18.0.100",port="8080",protocol="tcp"} 0.0015"#,
            r#"drlb_backend_packets_total{vip="198.18.0.100",port="8080",protocol="tcp",backend="198.18.0.11"} 20"#,
            r#"drlb_backend_bytes_total{vip="198.18.0.100",port="8080",protocol="tcp",backend="198.18.0.11"} 2000"#,
            r#"drlb_backend_connections_total{vip="198.18.0.100",port="8080",protocol="tcp",backend="198.18.0.11"} 2"#,
            r#"drlb_backend_weight{vip="198.18.0.100",port="8080",protocol="tcp",backend="198.18.0.11"} 2"#,
            r#"drlb_backend_state{vip="198.18.0.100",port="8080",protocol="tcp",backend="198.18.0.11",value="drained"} 1"#,
            r#"drlb_backend_state{vip="198.18.0.100",port="8080",protocol="tcp",backend="198.18.0.11",value="active"} 0"#,
            r#"drlb_backend_health{vip="198.18.0.100",port="8080",protocol="tcp",backend="198.18.0.11",value="up"} 1"#,
            r#"drlb_verdict_packets_total{verdict="tx"} 30"#,
            r#"drlb_verdict_bytes_total{verdict="tx"} 3000"#,
            "drlb_director_active 0",
            r#"drlb_vip_active{vip="198.18.0.100"} 1"#,
            r#"drlb_vip_active{vip="198.18.0.101"} 0"#,
            r#"drlb_vip_local{vip="198.18.0.100"} 1"#,
            "drlb_arp_conflict_macs 0",
            "drlb_flow_table_capacity 4096",
            concat!(
                r#"drlb_build_info{version=""#,
                env!("CARGO_PKG_VERSION"),
                r#""} 1"#
            ),
        ] {
            assert!(samples.contains(&want), "{want} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE drlb_backend_packets counter\n"),
            "{text}"
        );
    }

    #[test]
    fn the_text_format_names_counter_families_by_their_samples() {
        let open = render(&report());
        let text = render_text(&report());
        // Series within a family come in no fixed order.
        let sorted = |text: &str| {
            let mut s: Vec<String> = samples(text).into_iter().map(str::to_owned).collect();
            s.sort();
            s
        };
        assert_eq!(sorted(&open), sorted(&text), "the same samples");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains(
                "# HELP drlb_backend_packets_total Packets forwarded per backend.\n\
                 # TYPE drlb_backend_packets_total counter\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE drlb_backend_weight gauge\n"),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_only_for_scrapers_that_ask() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
