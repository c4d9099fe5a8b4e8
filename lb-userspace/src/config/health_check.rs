//! `[service.health_check]`: what to probe, how often, and how many results make a transition.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const DEFAULT_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
const DEFAULT_HTTP_STATUS: u16 = 200;

/// `[service.health_check]` in the config.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default)]
    pub kind: CheckKind,
    /// Port to probe; the service's port when absent.
    pub port: Option<u16>,
    /// For `http`: the path requested.
    #[serde(default = "default_path")]
    pub path: String,
    /// For `http`: the status that means healthy.
    #[serde(default = "default_status")]
    pub expect_status: u16,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Consecutive successes that bring a down backend up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// What a backend that fails its check loses: its flows too (`remove`), or only new flows
    /// (`drain`, as keepalived's inhibit_on_failure).
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// What happens to a backend that its health check takes down.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Out of the table and of the backend map: its flows move to the other backends.
    #[default]
    Remove,
    /// Out of the table only: no new flows, established ones continue (IPVS weight 0).
    Drain,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            kind: CheckKind::default(),
            port: None,
            path: default_path(),
            expect_status: DEFAULT_HTTP_STATUS,
            interval_ms: DEFAULT_INTERVAL_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            on_failure: OnFailure::Remove,
        }
    }
}

fn default_path() -> String {
    "/".to_owned()
}
const fn default_status() -> u16 {
    DEFAULT_HTTP_STATUS
}
const fn default_interval() -> u64 {
    DEFAULT_INTERVAL_MS
}
const fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}
const fn default_rise() -> u32 {
    DEFAULT_RISE
}
const fn default_fall() -> u32 {
    DEFAULT_FALL
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connection to the backend's port is accepted.
    #[default]
    Tcp,
    /// An HTTP/1.1 GET answers with the expected status.
    Http,
    /// No checks: every backend counts as up.
    None,
}

impl HealthCheckConfig {
    /// Problems with the values, each as a sentence.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.kind == CheckKind::None {
            return problems;
        }
        if self.interval_ms == 0 || self.timeout_ms == 0 {
            problems.push("health_check interval_ms and timeout_ms must be positive".to_owned());
        }
        if self.timeout_ms > self.interval_ms {
            problems.push(format!(
                "health_check timeout_ms ({}) is longer than interval_ms ({}): probes would overlap",
                self.timeout_ms, self.interval_ms
            ));
        }
        if self.rise == 0 || self.fall == 0 {
            problems.push("health_check rise and fall must be at least 1".to_owned());
        }
        if self.port == Some(0) {
            problems.push("health_check port 0 is not a valid port".to_owned());
        }
        if self.kind == CheckKind::Http && !self.path.starts_with('/') {
            problems.push(format!(
                "health_check path {:?} must start with /",
                self.path
            ));
        }
        if !(100..=599).contains(&self.expect_status) {
            problems.push(format!(
                "health_check expect_status {} is not an HTTP status",
                self.expect_status
            ));
        }
        problems
    }

    #[must_use]
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_are_named() {
        let ok = HealthCheckConfig::default();
        assert!(ok.problems().is_empty());
        let bad = HealthCheckConfig {
            timeout_ms: 5_000,
            rise: 0,
            expect_status: 42,
            ..ok.clone()
        };
        let problems = bad.problems().join("\n");
        assert!(
            problems.contains("longer than interval_ms")
                && problems.contains("rise and fall")
                && problems.contains("not an HTTP status")
        );
        let http = HealthCheckConfig {
            kind: CheckKind::Http,
            path: "health".into(),
            ..ok
        };
        assert!(http.problems()[0].contains("must start with /"));
    }
}
