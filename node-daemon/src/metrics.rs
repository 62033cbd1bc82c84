//! What the daemon tells Prometheus and the kubelet, served on `--metrics-addr` with
//! hyper, the metrics kept and encoded by prometheus-client (as the operator does):
//!
//! - `GET /metrics`: counters (reconciles, steps, kernel writes, errors), the last
//!   reconcile (steps, writes, duration, conflicts), and per WireGuard peer the
//!   latest handshake, its age and the bytes received and sent, as of the last
//!   full observation (the resync period bounds how old they are), in the
//!   OpenMetrics text format;
//! - `GET /healthz`: 200 while the reconcile loop turns; 503 when it has not
//!   come round for [`Metrics::stall_after`] (a wedged kernel or wireguard-go call), or
//!   once a long-lived task has ended ([`Metrics::fail`], [`crate::tasks`]);
//! - `GET /readyz`: 200 once the desired state is known and the first reconcile
//!   completed (the kernel was read and the plan applied). A step that failed for
//!   one object is that object's condition, not the daemon's unreadiness: one bad
//!   Interface must not hold a rollout of the whole DaemonSet.
//!
//! `HEAD` is answered like `GET` without a body; any other method is a 405, any other
//! path a 404. A connection gets [`HEADER_TIMEOUT`] to send its request and
//! [`CONNECTION_TIMEOUT`] in all; an `accept` that fails (out of file descriptors, say)
//! is logged and the server goes on. Nothing here carries key material: peers are
//! labelled with their public key.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::model::ObservedNode;

/// How long a connection may take to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may stay open in all, answer included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause after a failed `accept`, so that a lasting failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A count as a gauge (prometheus-client's default gauge is signed).
type CountGauge = Gauge<u64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

/// A watch event: the kind of its object, and whether the object concerns this node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    kind: &'static str,
    /// `this`: the object is this node's (an Interface on it, a Peer or Route of one);
    /// `other`: it is another node's, and the daemon had no need to receive it.
    node: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    device: String,
    public_key: String,
}

/// What the loop and the scrapes share besides the registered metrics.
#[derive(Debug)]
struct Live {
    /// Milliseconds since [`process_start`] when the loop last came round.
    heartbeat_millis: AtomicU64,
    /// `/healthz` fails after this long without a heartbeat, in milliseconds.
    stall_after_millis: AtomicU64,
    /// The last full observation, for the per-peer metrics.
    observed: Mutex<Option<(Arc<ObservedNode>, SystemTime)>>,
    /// Why the daemon is broken for good (a long-lived task ended), once it is.
    failed: Mutex<Option<String>>,
}

impl Live {
    fn since_heartbeat(&self) -> Duration {
        let now = since_start(Instant::now());
        Duration::from_millis(now.saturating_sub(self.heartbeat_millis.load(Relaxed)))
    }
}

/// The daemon's metrics (prefix `kwire_node_`) and what its probes read.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    live: Arc<Live>,
    pub reconciles_full: Counter,
    pub reconciles_delta: Counter,
    pub steps_applied: Counter,
    pub kernel_writes: Counter,
    pub apply_errors: Counter,
    pub observe_errors: Counter,
    pub last_plan_steps: CountGauge,
    pub conflicts: CountGauge,
    /// Kernel writes of the most recent reconcile.
    pub last_reconcile_writes: CountGauge,
    /// Failed steps of the most recent reconcile.
    pub last_reconcile_errors: CountGauge,
    /// Duration of the most recent reconcile, in seconds.
    pub last_reconcile_seconds: Gauge<f64, AtomicU64>,
    /// 1 once the first reconcile completed; never cleared.
    ready: CountGauge,
    /// Objects received on the API watches (see [`Metrics::watch_event`]).
    watch_events: Family<WatchLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kwire_node");
        let reconciles = Family::<ModeLabels, Counter>::default();
        let reconciles_full = reconciles
            .get_or_create(&ModeLabels { mode: "full" })
            .clone();
        let reconciles_delta = reconciles
            .get_or_create(&ModeLabels { mode: "delta" })
            .clone();
        registry.register(
            "reconciles",
            "Reconciles, by whether the kernel was observed in full",
            reconciles,
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let steps_applied = counter(
            &mut registry,
            "steps_applied",
            "Plan steps applied successfully",
        );
        let kernel_writes = counter(
            &mut registry,
            "kernel_writes",
            "Kernel writes attempted (netlink changes, WireGuard configuration requests, sysctls, processes)",
        );
        let apply_errors = counter(&mut registry, "apply_errors", "Plan steps that failed");
        let observe_errors = counter(
            &mut registry,
            "observe_errors",
            "Kernel observations that failed",
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = CountGauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let last_plan_steps = gauge(
            &mut registry,
            "last_plan_steps",
            "Steps in the most recent plan",
        );
        let last_reconcile_writes = gauge(
            &mut registry,
            "last_reconcile_writes",
            "Kernel writes of the most recent reconcile (0 on a converged node)",
        );
        let last_reconcile_errors = gauge(
            &mut registry,
            "last_reconcile_errors",
            "Failed steps in the most recent reconcile",
        );
        let last_reconcile_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_reconcile_duration_seconds",
            "How long the most recent reconcile took",
            last_reconcile_seconds.clone(),
        );
        let conflicts = gauge(
            &mut registry,
            "conflicts",
            "Desired objects blocked by foreign kernel state in the most recent plan",
        );
        let ready = gauge(
            &mut registry,
            "ready",
            "1 once the first reconcile completed",
        );
        let watch_events = Family::<WatchLabels, Counter>::default();
        registry.register(
            "watch_events",
            "Objects received on the API watches (listed, added, changed, deleted), by kind and by whether they concern this node",
            watch_events.clone(),
        );
        let live = Arc::new(Live {
            heartbeat_millis: AtomicU64::new(since_start(Instant::now())),
            stall_after_millis: AtomicU64::new(120_000),
            observed: Mutex::new(None),
            failed: Mutex::new(None),
        });
        registry.register_collector(Box::new(HeartbeatCollector(live.clone())));
        Self {
            registry,
            live,
            reconciles_full,
            reconciles_delta,
            steps_applied,
            kernel_writes,
            apply_errors,
            observe_errors,
            last_plan_steps,
            conflicts,
            last_reconcile_writes,
            last_reconcile_errors,
            last_reconcile_seconds,
            ready,
            watch_events,
        }
    }
}

/// The instant the first [`Metrics`] was made; heartbeats are counted from it.
fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn since_start(at: Instant) -> u64 {
    at.saturating_duration_since(process_start()).as_millis() as u64
}

impl Metrics {
    /// The reconcile loop came round.
    pub fn beat(&self) {
        self.live
            .heartbeat_millis
            .store(since_start(Instant::now()), Relaxed);
    }

    /// How long the loop may go without a heartbeat before `/healthz` fails. The
    /// loop comes round at least once per resync period, so a few periods is generous.
    pub fn set_stall_after(&self, after: Duration) {
        self.live
            .stall_after_millis
            .store(after.as_millis() as u64, Relaxed);
    }

    pub fn stall_after(&self) -> Duration {
        Duration::from_millis(self.live.stall_after_millis.load(Relaxed))
    }

    /// Time since the last heartbeat.
    pub fn since_heartbeat(&self) -> Duration {
        self.live.since_heartbeat()
    }

    /// Keeps the last full observation for the per-peer metrics.
    pub fn set_observed(&self, observed: Arc<ObservedNode>, at: SystemTime) {
        *self.live.observed.lock().unwrap_or_else(|e| e.into_inner()) = Some((observed, at));
    }

    /// One object of `kind` came on a watch (in a list, or as an added, changed or
    /// deleted object); `this_node` says whether it concerns this node.
    pub fn watch_event(&self, kind: &'static str, this_node: bool) {
        let node = if this_node { "this" } else { "other" };
        self.watch_events
            .get_or_create(&WatchLabels { kind, node })
            .inc();
    }

    /// Objects of `kind` received so far that concern this node or not.
    pub fn watch_events(&self, kind: &'static str, this_node: bool) -> u64 {
        let node = if this_node { "this" } else { "other" };
        self.watch_events
            .get_or_create(&WatchLabels { kind, node })
            .get()
    }

    /// The first reconcile completed.
    pub fn set_ready(&self) {
        self.ready.set(1);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.get() == 1
    }

    /// Fails `/healthz` for good: a part of the daemon that must run as long as it does
    /// has ended (see [`crate::tasks`]). The first reason is kept.
    pub fn fail(&self, why: String) {
        self.live
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
    }

    /// `/healthz`: `Err(why)` when a long-lived task ended or the loop has stalled.
    pub fn health(&self) -> Result<(), String> {
        self.health_after(self.since_heartbeat())
    }

    /// [`Metrics::health`] when the loop last came round `quiet` ago.
    fn health_after(&self, quiet: Duration) -> Result<(), String> {
        if let Some(why) = self
            .live
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Err(why.clone());
        }
        if quiet > self.stall_after() {
            Err(format!(
                "the reconcile loop has not come round for {}s",
                quiet.as_secs()
            ))
        } else {
            Ok(())
        }
    }

    /// `/readyz`: `Err(why)` until the first reconcile completed.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_ready() {
            Ok(())
        } else {
            Err("waiting for the desired state and the first reconcile".into())
        }
    }

    /// The OpenMetrics text exposition, with peer ages computed at `now`.
    pub fn render_at(&self, now: SystemTime) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        // The per-peer families depend on the moment of the scrape: they come from a
        // registry made for it.
        let mut peers = Registry::with_prefix("kwire_node");
        peers.register_collector(Box::new(PeerCollector {
            live: self.live.clone(),
            now,
        }));
        let mut out = String::new();
        let encoded = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &peers))
            .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            out.clear();
        }
        out
    }

    pub fn render(&self) -> String {
        self.render_at(SystemTime::now())
    }
}

/// `kwire_node_seconds_since_loop_heartbeat`, computed at each scrape.
#[derive(Debug)]
struct HeartbeatCollector(Arc<Live>);

impl Collector for HeartbeatCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(self.0.since_heartbeat().as_secs_f64());
        let metric = encoder.encode_descriptor(
            "seconds_since_loop_heartbeat",
            "Seconds since the reconcile loop last came round.",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// The per-peer families, from the last full observation, with ages at `now`.
#[derive(Debug)]
struct PeerCollector {
    live: Arc<Live>,
    now: SystemTime,
}

impl Collector for PeerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let observed = self
            .live
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        struct Row {
            labels: PeerLabels,
            handshake: Option<SystemTime>,
            rx: u64,
            tx: u64,
        }
        let mut rows = Vec::new();
        if let Some((node, _)) = &observed {
            for (device, d) in node.owned_devices() {
                let Some(wg) = &d.wireguard else { continue };
                for (key, peer) in &wg.peers {
                    rows.push(Row {
                        labels: PeerLabels {
                            device: device.to_string(),
                            public_key: key.to_base64(),
                        },
                        handshake: peer.stats.last_handshake,
                        rx: peer.stats.rx_bytes,
                        tx: peer.stats.tx_bytes,
                    });
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "peer_latest_handshake_seconds",
            "Unix time of the peer's latest handshake (0: none yet).",
            None,
            MetricType::Gauge,
        )?;
        for row in &rows {
            let value = row.handshake.map_or(0.0, unix_secs);
            ConstGauge::new(value).encode(family.encode_family(&row.labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "peer_handshake_age_seconds",
            "Seconds since the peer's latest handshake; absent before the first one.",
            None,
            MetricType::Gauge,
        )?;
        for row in &rows {
            if let Some(h) = row.handshake {
                let age = self.now.duration_since(h).unwrap_or_default();
                ConstGauge::new(age.as_secs_f64()).encode(family.encode_family(&row.labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "peer_receive_bytes",
            "Bytes received from the peer.",
            None,
            MetricType::Counter,
        )?;
        for row in &rows {
            ConstCounter::new(row.rx).encode(family.encode_family(&row.labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "peer_transmit_bytes",
            "Bytes sent to the peer.",
            None,
            MetricType::Counter,
        )?;
        for row in &rows {
            ConstCounter::new(row.tx).encode(family.encode_family(&row.labels)?)?;
        }
        let at = ConstGauge::new(observed.as_ref().map_or(0.0, |(_, at)| unix_secs(*at)));
        let metric = encoder.encode_descriptor(
            "peer_stats_timestamp_seconds",
            "Unix time of the observation the peer metrics come from.",
            None,
            at.metric_type(),
        )?;
        at.encode(metric)
    }
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The answer to a request for `path` with `method`.
pub fn respond(metrics: &Metrics, method: &Method, path: &str) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET and HEAD\n".into(),
        );
        response.headers_mut().insert(
            "allow",
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
    }
    match path {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" | "/livez" => match metrics.health() {
            Ok(()) => reply(StatusCode::OK, TEXT, "ok\n".into()),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        "/readyz" => match metrics.readiness() {
            Ok(()) => reply(StatusCode::OK, TEXT, "ready\n".into()),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Where connections come from: a TCP listener, or a fake in tests.
pub trait Accept {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&mut self) -> std::io::Result<Self::Stream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// Binds `addr` and serves [`respond`] on it. Returns only if binding fails.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<Infallible> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(serve_connections(listener, metrics).await)
}

/// Serves every connection `listener` accepts, each on a task of its own, forever: a
/// failed `accept` is logged and tried again after a short pause.
pub async fn serve_connections(mut listener: impl Accept, metrics: Arc<Metrics>) -> Infallible {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting a metrics connection failed; going on");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = respond(&metrics, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "metrics connection failed"),
                Err(_) => tracing::debug!("metrics connection timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
    use tokio::sync::mpsc;

    use super::*;
    use crate::fixtures::*;
    use crate::model::{DesiredDevice, DesiredNode, PeerStats};

    #[test]
    fn watch_events_are_counted_by_kind_and_by_node() {
        let m = Metrics::default();
        m.watch_event("Peer", true);
        m.watch_event("Peer", true);
        m.watch_event("Route", false);
        assert_eq!(m.watch_events("Peer", true), 2);
        assert_eq!(m.watch_events("Route", false), 1);
        assert_eq!(m.watch_events("Route", true), 0);
        let text = m.render();
        for line in [
            "kwire_node_watch_events_total{kind=\"Peer\",node=\"this\"} 2\n",
            "kwire_node_watch_events_total{kind=\"Route\",node=\"other\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn metrics_render_in_the_openmetrics_text_format_with_the_node_prefix() {
        let m = Metrics::default();
        m.kernel_writes.inc_by(7);
        m.reconciles_delta.inc_by(2);
        let text = m.render();
        for line in [
            "kwire_node_kernel_writes_total 7\n",
            "kwire_node_reconciles_total{mode=\"delta\"} 2\n",
            "kwire_node_reconciles_total{mode=\"full\"} 0\n",
            "# TYPE kwire_node_conflicts gauge\n",
            "# TYPE kwire_node_kernel_writes counter\n",
            "kwire_node_ready 0\n",
            "# TYPE kwire_node_seconds_since_loop_heartbeat gauge\n",
            "kwire_node_peer_stats_timestamp_seconds 0.0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    }

    #[test]
    fn every_peer_of_an_owned_device_gets_its_handshake_age_and_bytes() {
        let desired = DesiredNode::default().with_device(
            "wg0",
            DesiredDevice::test("a/x")
                .with_peer(pk(2), peer(&["10.1.0.2/32"]))
                .with_peer(pk(3), peer(&["10.1.0.3/32"])),
        );
        let mut node = crate::fixtures::converged(&desired);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let wg = node
            .devices
            .get_mut(&name("wg0"))
            .unwrap()
            .wireguard
            .as_mut()
            .unwrap();
        wg.peers.get_mut(&pk(2)).unwrap().stats = PeerStats {
            last_handshake: Some(at),
            rx_bytes: 1234,
            tx_bytes: 5678,
        };
        let m = Metrics::default();
        m.set_observed(Arc::new(node), at);
        let text = m.render_at(at + Duration::from_secs(42));
        let two = format!("{{device=\"wg0\",public_key=\"{}\"}}", pk(2));
        let three = format!("{{device=\"wg0\",public_key=\"{}\"}}", pk(3));
        for line in [
            format!("kwire_node_peer_handshake_age_seconds{two} 42.0\n"),
            format!("kwire_node_peer_latest_handshake_seconds{two} 1800000000.0\n"),
            format!("kwire_node_peer_latest_handshake_seconds{three} 0.0\n"),
            format!("kwire_node_peer_receive_bytes_total{two} 1234\n"),
            format!("kwire_node_peer_transmit_bytes_total{two} 5678\n"),
            format!("kwire_node_peer_receive_bytes_total{three} 0\n"),
            "kwire_node_peer_stats_timestamp_seconds 1800000000.0\n".to_string(),
        ] {
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains(&format!("kwire_node_peer_handshake_age_seconds{three}")),
            "no age before the first handshake"
        );
    }

    fn status(m: &Metrics, method: Method, path: &str) -> StatusCode {
        respond(m, &method, path).status()
    }

    #[test]
    fn readyz_waits_for_the_first_reconcile_and_healthz_for_a_stalled_loop() {
        let m = Metrics::default();
        assert_eq!(status(&m, Method::GET, "/readyz"), 503);
        m.set_ready();
        assert_eq!(status(&m, Method::GET, "/readyz"), 200);
        assert_eq!(status(&m, Method::GET, "/healthz"), 200);
        let why = m.health_after(Duration::from_secs(121)).unwrap_err();
        assert!(why.contains("has not come round for 121s"), "{why}");
        assert!(m.health_after(Duration::from_secs(119)).is_ok());
        m.beat();
        m.set_stall_after(Duration::from_secs(60));
        assert_eq!(status(&m, Method::GET, "/healthz"), 200);
        assert_eq!(status(&m, Method::GET, "/nope"), 404);
        assert_eq!(status(&m, Method::GET, "/metrics"), 200);
    }

    #[test]
    fn only_get_and_head_are_allowed() {
        let m = Metrics::default();
        assert_eq!(status(&m, Method::HEAD, "/metrics"), 200);
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let response = respond(&m, &method, "/metrics");
            assert_eq!(response.status(), 405, "{method}");
            assert_eq!(response.headers()["allow"], "GET, HEAD");
        }
    }

    /// Connections handed over a channel; an `Err` stands for a failed `accept`.
    struct FakeListener(mpsc::UnboundedReceiver<std::io::Result<DuplexStream>>);

    impl Accept for FakeListener {
        type Stream = DuplexStream;
        async fn accept(&mut self) -> std::io::Result<DuplexStream> {
            match self.0.recv().await {
                Some(next) => next,
                None => std::future::pending().await,
            }
        }
    }

    async fn exchange(
        connections: &mpsc::UnboundedSender<std::io::Result<DuplexStream>>,
        request: &str,
    ) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        connections.send(Ok(server)).unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        String::from_utf8(answer).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_server_outlives_failed_accepts_and_refuses_other_methods() {
        let (connections, rx) = mpsc::unbounded_channel();
        let m = Arc::new(Metrics::default());
        let server = tokio::spawn(serve_connections(FakeListener(rx), m));
        for _ in 0..3 {
            connections
                .send(Err(std::io::Error::from_raw_os_error(nix::libc::EMFILE)))
                .unwrap();
        }
        let answer = exchange(
            &connections,
            "POST /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        assert!(answer.contains("allow: GET, HEAD"), "{answer}");
        let answer = exchange(
            &connections,
            "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
        let answer = exchange(
            &connections,
            "HEAD /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n"), "no body for HEAD: {answer}");
        assert!(!server.is_finished());
        server.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_closed() {
        let (connections, rx) = mpsc::unbounded_channel();
        let server = tokio::spawn(serve_connections(
            FakeListener(rx),
            Arc::new(Metrics::default()),
        ));
        let (mut client, server_side) = tokio::io::duplex(1024);
        connections.send(Ok(server_side)).unwrap();
        // Half a request head, then silence: the server hangs up (the paused clock
        // runs ahead to its header timeout).
        client.write_all(b"GET /metrics HTT").await.unwrap();
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        assert!(
            !String::from_utf8_lossy(&answer).contains("200 OK"),
            "{answer:?}"
        );
        server.abort();
    }
}
