//! Health probes, keepalived-style: a TCP connect or an HTTP GET with an expected status, run
//! per backend every interval by the daemon. Their results go to
//! [`crate::director::health::Health`], which decides up and down.

use std::net::SocketAddr;

use anyhow::{Context as _, Result, bail};
use http_body_util::Empty;
use hyper::{Request, body::Bytes, header::HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::health_check::{CheckKind, HealthCheckConfig};

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
