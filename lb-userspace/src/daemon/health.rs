//! Health probes, keepalived-style: a TCP connect or an HTTP GET with an expected status, run
//! per backend every interval by the daemon. Their results go to
//! [`crate::director::health::Health`], which decides up and down.

use std::{
    net::{IpAddr, SocketAddr},
    thread::JoinHandle,
};

use anyhow::{Context as _, Result, bail};
use http_body_util::Empty;
use hyper::{Request, body::Bytes, header::HOST};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    task::JoinSet,
};

use crate::config::{
    ServiceId,
    health_check::{CheckKind, HealthCheckConfig},
};

/// A health probe's result, sent from the probes' thread to the daemon's loop.
pub struct HealthResult {
    pub service: ServiceId,
    pub backend: IpAddr,
    pub result: Result<()>,
}

/// What to probe: (service, backend, check, target), from `Controller::health_targets`.
pub type Target = (ServiceId, IpAddr, HealthCheckConfig, SocketAddr);

/// The probes, on a thread (and runtime) of their own: however long the daemon's loop spends
/// on a change or a table, no probe starts late or times out for it. Results go to the loop
/// through a bounded channel (a full one makes probes wait, never drops a result).
pub struct Prober {
    targets: Option<watch::Sender<Vec<Target>>>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    /// Starts the thread, probing nothing until [`Prober::check`].
    pub fn spawn(results: mpsc::Sender<HealthResult>) -> Result<Self> {
        let (targets, mut wanted) = watch::channel(Vec::new());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("creating the health checks' runtime failed")?;
        let thread = std::thread::Builder::new()
            .name("drlb-health".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    loop {
                        let targets = wanted.borrow_and_update().clone();
                        let mut probes = start(targets, &results);
                        // Replaced whole when the targets change; ends with the sender.
                        if wanted.changed().await.is_err() {
                            probes.abort_all();
                            return;
                        }
                        probes.abort_all();
                    }
                });
            })
            .context("starting the health checks' thread failed")?;
        Ok(Self {
            targets: Some(targets),
            thread: Some(thread),
        })
    }

    /// Probes `targets` from now on (every probe restarts: a change may have changed checks).
    pub fn check(&self, targets: Vec<Target>) {
        if let Some(sender) = &self.targets {
            sender.send_replace(targets);
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.targets = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One task per target, each probing every interval.
fn start(targets: Vec<Target>, results: &mpsc::Sender<HealthResult>) -> JoinSet<()> {
    let mut probes = JoinSet::new();
    for (service, backend, check, target) in targets {
        let results = results.clone();
        probes.spawn(async move {
            let mut interval = tokio::time::interval(check.interval());
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let result = probe(&check, target).await;
                if results
                    .send(HealthResult {
                        service,
                        backend,
                        result,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    probes
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

    /// The probes run on the prober's own thread: they go on while the thread that owns the
    /// results (the daemon's loop) runs no runtime at all, as during a long publish.
    #[test]
    fn probes_go_on_while_the_loop_is_busy() {
        /// Results to see; a bound on the wait (not a speed requirement).
        const WANTED: usize = 3;
        const GIVE_UP: std::time::Duration = std::time::Duration::from_secs(20);
        const POLL: std::time::Duration = std::time::Duration::from_millis(10);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let (sender, mut results) = mpsc::channel(WANTED);
        let prober = Prober::spawn(sender).unwrap();
        let check = HealthCheckConfig {
            interval_ms: 10,
            ..HealthCheckConfig::default()
        };
        let service: ServiceId = "tcp/198.18.0.100:80".parse().unwrap();
        prober.check(vec![(service, target.ip(), check, target)]);
        // This thread only sleeps (blocked, as on a grace period) and looks.
        let started = std::time::Instant::now();
        let mut seen = Vec::new();
        while seen.len() < WANTED && started.elapsed() < GIVE_UP {
            std::thread::sleep(POLL);
            while let Ok(result) = results.try_recv() {
                seen.push(result);
            }
        }
        assert!(seen.len() >= WANTED, "{} results", seen.len());
        assert!(
            seen.iter()
                .all(|r| r.result.is_ok() && r.service == service)
        );
        drop(prober);
        drop(listener);
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

    /// An IPv6 backend is probed at `[address]:port`, TCP and HTTP alike.
    #[tokio::test]
    async fn ipv6_backends_are_probed_too() {
        let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.is_ipv6());
        probe(&HealthCheckConfig::default(), addr).await.unwrap();
        http_probe_checks_the_status_at("[::1]:0").await;
        drop(listener);
        assert!(probe(&HealthCheckConfig::default(), addr).await.is_err());
    }

    #[tokio::test]
    async fn http_probe_checks_the_status() {
        http_probe_checks_the_status_at("127.0.0.1:0").await;
    }

    /// An HTTP server at `bind` answers 200, then 503: the probe passes, then fails.
    async fn http_probe_checks_the_status_at(bind: &str) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
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
