//! The tiny HTTP server for probes and metrics: `/healthz`, `/readyz`, `/metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What the probes read.
#[derive(Clone, Default)]
pub struct Health {
    /// Stores synced and controllers running.
    pub ready: Arc<AtomicBool>,
    /// Standing by for the leader lease (ready too: a standby replica is healthy).
    pub standby: Arc<AtomicBool>,
    /// Why the process is no longer healthy: a long-lived task ended. Once set, `/healthz`
    /// fails (the process exits too; this covers the time it takes).
    failed: Arc<Mutex<Option<String>>>,
}

impl Health {
    /// Marks the process unhealthy for good; the first reason is kept.
    pub fn fail(&self, reason: impl Into<String>) {
        let mut failed = self.failed.lock().expect("health lock");
        if failed.is_none() {
            *failed = Some(reason.into());
        }
        self.ready.store(false, Ordering::SeqCst);
        self.standby.store(false, Ordering::SeqCst);
    }

    /// Why the process is unhealthy, if it is.
    pub fn failed(&self) -> Option<String> {
        self.failed.lock().expect("health lock").clone()
    }
}

/// The response to a GET of `path`.
pub fn respond(path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    };
    match path {
        "/healthz" => match health.failed() {
            None => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Some(reason) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{reason}\n"),
            ),
        },
        "/readyz" => {
            if health.ready.load(Ordering::SeqCst) || health.standby.load(Ordering::SeqCst) {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "stores not synced yet\n".into(),
                )
            }
        }
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// How long to wait after a failed `accept` (e.g. out of file descriptors) before the next.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Serves for good; returns only if the address cannot be bound. A failed `accept` (out of
/// file descriptors, a connection reset before it was accepted) is logged and the next one
/// follows, so the probes do not go dark for good on a passing error.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, health: Health) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting a probe connection failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let response = respond(request.uri().path(), &metrics, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "probe connection failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_sync_or_standby_and_health_is_ok_until_something_fails() {
        let (m, h) = (Metrics::default(), Health::default());
        assert_eq!(respond("/healthz", &m, &h).status(), StatusCode::OK);
        assert_eq!(
            respond("/readyz", &m, &h).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.standby.store(true, Ordering::SeqCst);
        assert_eq!(respond("/readyz", &m, &h).status(), StatusCode::OK);
        h.standby.store(false, Ordering::SeqCst);
        h.ready.store(true, Ordering::SeqCst);
        assert_eq!(respond("/readyz", &m, &h).status(), StatusCode::OK);
        assert_eq!(respond("/metrics", &m, &h).status(), StatusCode::OK);
        assert_eq!(respond("/nope", &m, &h).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_failed_process_fails_its_liveness_and_readiness_probes_and_says_why() {
        let (m, h) = (Metrics::default(), Health::default());
        h.ready.store(true, Ordering::SeqCst);
        h.fail("the router task panicked");
        h.fail("a later reason");
        let healthz = respond("/healthz", &m, &h);
        assert_eq!(healthz.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            h.failed().as_deref(),
            Some("the router task panicked"),
            "the first reason stays"
        );
        assert_eq!(
            respond("/readyz", &m, &h).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
