//! Rates for `drlb list --rate` and the report: the daemon samples the counters every
//! [`RATE_INTERVAL`] (as IPVS's estimator does, every 2 s) and a rate is the difference between
//! the last two samples divided by the time between them. Unlike IPVS there is no smoothing:
//! the figure is the mean of the last whole interval. Pure: the caller passes the time.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::stats::{Rate, StatsReport};

/// How often the daemon samples the counters for the rates (IPVS's estimator: 2 s).
pub const RATE_INTERVAL: Duration = Duration::from_secs(2);

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// A service (`TCP 198.18.0.100:80`) or one of its backends.
type Key = (String, Option<String>);

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    connections: u64,
    packets: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    totals: HashMap<Key, Totals>,
}

/// The last sample of the counters and the rates of the last interval.
#[derive(Debug)]
pub struct Estimator {
    interval: Duration,
    last: Option<Sample>,
    rates: HashMap<Key, Rate>,
}

impl Estimator {
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            rates: HashMap::new(),
        }
    }

    /// Samples `report`'s counters when `interval` has passed since the last sample (or there
    /// is none), and then computes the rates of the interval that ended.
    pub fn observe(&mut self, now: Instant, report: &StatsReport) {
        if let Some(last) = &self.last
            && now.saturating_duration_since(last.at) < self.interval
        {
            return;
        }
        let totals = totals(report);
        if let Some(last) = &self.last {
            let elapsed = now.saturating_duration_since(last.at).as_nanos().max(1);
            self.rates = totals
                .iter()
                .map(|(key, now)| {
                    let before = last.totals.get(key).copied().unwrap_or_default();
                    // A counter that went back (an id given to a new service or backend
                    // starts at 0) gives 0, not a wrapped difference.
                    let per_second = |now: u64, before: u64| {
                        let delta = u128::from(now.saturating_sub(before));
                        u64::try_from(delta * NANOS_PER_SECOND / elapsed).unwrap_or(u64::MAX)
                    };
                    let rate = Rate {
                        cps: per_second(now.connections, before.connections),
                        in_pps: per_second(now.packets, before.packets),
                        out_pps: 0,
                        in_bps: per_second(now.bytes, before.bytes),
                        out_bps: 0,
                    };
                    (key.clone(), rate)
                })
                .collect();
        }
        self.last = Some(Sample { at: now, totals });
    }

    /// Writes the last interval's rates into `report` (0 for what was not in both samples).
    pub fn fill(&self, report: &mut StatsReport) {
        for s in &mut report.services {
            let service = service_key(&s.protocol, &s.vip, s.port);
            s.rate = self.rate(&(service.clone(), None));
            for b in &mut s.backends {
                b.rate = self.rate(&(service.clone(), Some(b.address.clone())));
            }
        }
    }

    fn rate(&self, key: &Key) -> Rate {
        self.rates.get(key).copied().unwrap_or_default()
    }
}

fn service_key(protocol: &str, vip: &str, port: u16) -> String {
    format!("{protocol} {vip}:{port}")
}

fn totals(report: &StatsReport) -> HashMap<Key, Totals> {
    let mut totals = HashMap::new();
    for s in &report.services {
        let service = service_key(&s.protocol, &s.vip, s.port);
        totals.insert(
            (service.clone(), None),
            Totals {
                connections: s.connections,
                packets: s.packets,
                bytes: s.bytes,
            },
        );
        for b in &s.backends {
            totals.insert(
                (service.clone(), Some(b.address.clone())),
                Totals {
                    connections: b.connections,
                    packets: b.packets,
                    bytes: b.bytes,
                },
            );
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::stats::{BackendStats, ServiceStats};

    fn report(connections: u64, packets: u64, bytes: u64) -> StatsReport {
        StatsReport {
            interfaces: Vec::new(),
            services: vec![ServiceStats {
                vip: "198.18.0.100".into(),
                port: 80,
                protocol: "tcp".into(),
                scheduler: "maglev".into(),
                packets,
                bytes,
                connections,
                rate: Rate::default(),
                table_publishes: 1,
                table_publish_nanos: 1,
                backends: vec![BackendStats {
                    address: "198.18.0.11".into(),
                    interface: "eth0".into(),
                    weight: 1,
                    mac: None,
                    state: "active".into(),
                    health: "up".into(),
                    packets: packets / 2,
                    bytes: bytes / 2,
                    connections: connections / 2,
                    rate: Rate::default(),
                }],
            }],
            verdicts: std::collections::BTreeMap::new(),
            state: "active".into(),
            vips: Vec::new(),
            arp_conflicts: Vec::new(),
            flow_table: None,
            events: std::collections::BTreeMap::new(),
            answers_arp: true,
        }
    }

    #[test]
    fn rates_are_the_difference_of_two_samples_per_second() {
        let start = Instant::now();
        let mut e = Estimator::new(RATE_INTERVAL);
        e.observe(start, &report(0, 0, 0));
        let mut r = report(20, 4000, 400_000);
        e.fill(&mut r);
        assert_eq!(
            r.services[0].rate,
            Rate::default(),
            "one sample: no rate yet"
        );
        e.observe(start + RATE_INTERVAL, &r);
        e.fill(&mut r);
        let want = Rate {
            cps: 10,
            in_pps: 2000,
            out_pps: 0,
            in_bps: 200_000,
            out_bps: 0,
        };
        assert_eq!(r.services[0].rate, want);
        assert_eq!(
            r.services[0].backends[0].rate,
            Rate {
                cps: 5,
                in_pps: 1000,
                out_pps: 0,
                in_bps: 100_000,
                out_bps: 0
            }
        );
    }

    #[test]
    fn a_sample_before_the_interval_ends_is_not_taken() {
        let start = Instant::now();
        let mut e = Estimator::new(RATE_INTERVAL);
        e.observe(start, &report(0, 0, 0));
        e.observe(start + RATE_INTERVAL, &report(2, 2, 2));
        // Half an interval later, far more traffic: ignored until the interval is over.
        e.observe(start + RATE_INTERVAL * 3 / 2, &report(1000, 1000, 1000));
        let mut r = report(0, 0, 0);
        e.fill(&mut r);
        assert_eq!(r.services[0].rate.cps, 1);
    }

    #[test]
    fn a_counter_that_went_back_gives_zero() {
        let start = Instant::now();
        let mut e = Estimator::new(RATE_INTERVAL);
        e.observe(start, &report(100, 100, 100));
        e.observe(start + RATE_INTERVAL, &report(0, 0, 0));
        let mut r = report(0, 0, 0);
        e.fill(&mut r);
        assert_eq!(r.services[0].rate, Rate::default());
    }
}
