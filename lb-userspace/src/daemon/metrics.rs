//! The Prometheus endpoint of `drlb run` (`[director] metrics = "ADDRESS:PORT"`): GET /metrics
//! answers with the latest report the serving loop published (it refreshes it every tick, once
//! a second), so a scrape never waits for the loop and never touches the maps itself.
//! OpenMetrics for scrapers that ask for it (Prometheus does), the 0.0.4 text format otherwise.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use crate::report::{prometheus, stats::StatsReport};

/// The path scrapers ask for.
pub const METRICS_PATH: &str = "/metrics";
/// Scrapes served at once; more wait for their turn (a scraper is one or two Prometheus
/// servers, so this is only a bound against a misbehaving client).
const MAX_CONNECTIONS: usize = 16;
/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The latest report, published by the serving loop (`None` until the first tick).
pub type Snapshot = watch::Receiver<Option<Arc<StatsReport>>>;

/// Binds the metrics address (at start-up, before anything is attached: a taken port stops
/// drlb before it changes anything).
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| {
        format!(
            "cannot serve metrics on {address} ([director] metrics): choose a free address, or \
             stop what listens there"
        )
    })
}

/// Serves /metrics on `listener` from `snapshot` until the daemon exits.
pub fn spawn(listener: TcpListener, snapshot: Snapshot) -> JoinHandle<()> {
    if let Ok(address) = listener.local_addr() {
        info!(%address, "serving Prometheus metrics on http://{address}{METRICS_PATH}");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!("metrics: accepting a connection failed: {e}");
                    continue;
                }
            };
            let snapshot = snapshot.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = respond(&request, &snapshot);
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    debug!("metrics: a connection ended with {e}");
                }
                drop(permit);
            });
        }
    })
}

fn respond(request: &Request<Incoming>, snapshot: &Snapshot) -> Response<Full<Bytes>> {
    if request.uri().path() != METRICS_PATH {
        return plain(StatusCode::NOT_FOUND, "drlb serves GET /metrics\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let Some(report) = snapshot.borrow().clone() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "drlb is starting: no counters yet\n",
        );
    };
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok());
    let (body, content_type) = if prometheus::wants_openmetrics(accept) {
        (
            prometheus::render(&report),
            prometheus::OPENMETRICS_CONTENT_TYPE,
        )
    } else {
        (
            prometheus::render_text(&report),
            prometheus::TEXT_CONTENT_TYPE,
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
