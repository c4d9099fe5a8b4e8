//! Health checks, keepalived-style: a probe per backend every interval (TCP connect or HTTP GET
//! with an expected status), and a rise/fall counter that turns probe results into up/down
//! transitions, so one lost probe does not flap a backend.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, Result, bail};
use http_body_util::Empty;
use hyper::{Request, body::Bytes, header::HOST};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

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

/// Rise/fall bookkeeping for one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
}

/// A change of a backend's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

impl Health {
    /// Backends start up, as in keepalived: a restarted director serves at once, and a dead
    /// backend is taken out after `fall` failed probes.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            up: true,
            streak: 0,
        }
    }

    #[must_use]
    pub const fn is_up(&self) -> bool {
        self.up
    }

    /// Records one probe result; returns the transition it completes, if any.
    pub fn record(&mut self, success: bool, rise: u32, fall: u32) -> Option<Transition> {
        if success == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { fall } else { rise };
        if self.streak < needed {
            return None;
        }
        self.up = success;
        self.streak = 0;
        Some(if success {
            Transition::Up
        } else {
            Transition::Down
        })
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs one probe against `target`; `Ok(())` means healthy, the error says why not.
pub async fn probe(check: &HealthCheckConfig, target: SocketAddr) -> Result<()> {
    let attempt = async {
        match check.kind {
            CheckKind::None => Ok(()),
            CheckKind::Tcp => TcpStream::connect(target)
                .await
                .map(drop)
                .context("TCP connect failed"),
            CheckKind::Http => http_status_ok(check, target).await,
        }
    };
    tokio::time::timeout(check.timeout(), attempt)
        .await
        .with_context(|| format!("no answer within {} ms", check.timeout_ms))?
}

async fn http_status_ok(check: &HealthCheckConfig, target: SocketAddr) -> Result<()> {
    let stream = TcpStream::connect(target)
        .await
        .context("TCP connect failed")?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake failed")?;
    tokio::spawn(connection);
    let request = Request::get(check.path.as_str())
        .header(HOST, target.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender
        .send_request(request)
        .await
        .context("HTTP request failed")?;
    let status = response.status().as_u16();
    if status != check.expect_status {
        bail!("HTTP status {status}, expected {}", check.expect_status);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_does_not_flap_and_fall_failures_take_it_down() {
        let mut h = Health::new();
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(
            h.record(true, 2, 3),
            None,
            "a success resets the failure streak"
        );
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), Some(Transition::Down));
        assert!(!h.is_up());
        assert_eq!(h.record(false, 2, 3), None);
    }

    #[test]
    fn rise_successes_bring_it_back() {
        let mut h = Health::new();
        assert_eq!(h.record(false, 2, 1), Some(Transition::Down));
        assert_eq!(h.record(true, 2, 1), None);
        assert_eq!(
            h.record(false, 2, 1),
            None,
            "a failure resets the success streak"
        );
        assert_eq!(h.record(true, 2, 1), None);
        assert_eq!(h.record(true, 2, 1), Some(Transition::Up));
        assert!(h.is_up());
    }

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

    #[tokio::test]
    async fn tcp_probe_sees_a_listener_and_its_absence() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let check = HealthCheckConfig::default();
        probe(&check, addr).await.unwrap();
        drop(listener);
        assert!(probe(&check, addr).await.is_err());
    }

    #[tokio::test]
    async fn http_probe_checks_the_status() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                let reply =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let check = HealthCheckConfig {
            kind: CheckKind::Http,
            ..HealthCheckConfig::default()
        };
        probe(&check, addr).await.unwrap();
        let err = probe(&check, addr).await.unwrap_err();
        assert!(format!("{err:#}").contains("HTTP status 503"), "{err:#}");
    }
}
