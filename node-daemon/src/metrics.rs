//! What the daemon tells Prometheus and the kubelet, served on `--metrics-addr`:
//!
//! - `GET /metrics`: counters (reconciles, steps, kernel writes, errors), the last
//!   reconcile (steps, writes, duration, conflicts), and per WireGuard peer the
//!   latest handshake, its age and the bytes received and sent, as of the last
//!   full observation (the resync period bounds how old they are);
//! - `GET /healthz`: 200 while the reconcile loop turns; 503 when it has not
//!   come round for [`Metrics::stall_after`] (a wedged kernel or wireguard-go call);
//! - `GET /readyz`: 200 once the desired state is known and the first reconcile
//!   completed (the kernel was read and the plan applied). A step that failed for
//!   one object is that object's condition, not the daemon's unreadiness: one bad
//!   Interface must not hold a rollout of the whole DaemonSet.
//!
//! Anything else is a 404. Nothing here carries key material: peers are labelled
//! with their public key.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::model::ObservedNode;

#[derive(Debug)]
pub struct Metrics {
    pub reconciles_full: AtomicU64,
    pub reconciles_delta: AtomicU64,
    pub steps_applied: AtomicU64,
    pub kernel_writes: AtomicU64,
    pub apply_errors: AtomicU64,
    pub observe_errors: AtomicU64,
    pub last_plan_steps: AtomicU64,
    pub conflicts: AtomicU64,
    /// Kernel writes of the most recent reconcile.
    pub last_reconcile_writes: AtomicU64,
    /// Failed steps of the most recent reconcile.
    pub last_reconcile_errors: AtomicU64,
    /// Duration of the most recent reconcile, in microseconds.
    pub last_reconcile_micros: AtomicU64,
    /// Set once the first reconcile completed; never cleared.
    pub ready: AtomicBool,
    /// Milliseconds since [`process_start`] when the loop last came round.
    heartbeat_millis: AtomicU64,
    /// `/healthz` fails after this long without a heartbeat, in milliseconds.
    stall_after_millis: AtomicU64,
    /// The last full observation, for the per-peer metrics.
    observed: Mutex<Option<(Arc<ObservedNode>, SystemTime)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles_full: AtomicU64::new(0),
            reconciles_delta: AtomicU64::new(0),
            steps_applied: AtomicU64::new(0),
            kernel_writes: AtomicU64::new(0),
            apply_errors: AtomicU64::new(0),
            observe_errors: AtomicU64::new(0),
            last_plan_steps: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            last_reconcile_writes: AtomicU64::new(0),
            last_reconcile_errors: AtomicU64::new(0),
            last_reconcile_micros: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            heartbeat_millis: AtomicU64::new(since_start(Instant::now())),
            stall_after_millis: AtomicU64::new(120_000),
            observed: Mutex::new(None),
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

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// The reconcile loop came round.
    pub fn beat(&self) {
        self.heartbeat_millis
            .store(since_start(Instant::now()), Relaxed);
    }

    /// How long the loop may go without a heartbeat before `/healthz` fails. The
    /// loop comes round at least once per resync period, so a few periods is generous.
    pub fn set_stall_after(&self, after: Duration) {
        self.stall_after_millis
            .store(after.as_millis() as u64, Relaxed);
    }

    pub fn stall_after(&self) -> Duration {
        Duration::from_millis(self.stall_after_millis.load(Relaxed))
    }

    /// Time since the last heartbeat.
    pub fn since_heartbeat(&self) -> Duration {
        let now = since_start(Instant::now());
        Duration::from_millis(now.saturating_sub(self.heartbeat_millis.load(Relaxed)))
    }

    /// Keeps the last full observation for the per-peer metrics.
    pub fn set_observed(&self, observed: Arc<ObservedNode>, at: SystemTime) {
        *self.observed.lock().unwrap_or_else(|e| e.into_inner()) = Some((observed, at));
    }

    /// `/healthz`: `Err(why)` when the loop has stalled.
    pub fn health(&self) -> Result<(), String> {
        let quiet = self.since_heartbeat();
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
        if self.ready.load(Relaxed) {
            Ok(())
        } else {
            Err("waiting for the desired state and the first reconcile".into())
        }
    }

    /// The Prometheus text exposition, with peer ages computed at `now`.
    pub fn render_at(&self, now: SystemTime) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP kwire_node_reconciles_total Reconciles, by whether the kernel was observed in full.\n\
             # TYPE kwire_node_reconciles_total counter\n\
             kwire_node_reconciles_total{{mode=\"full\"}} {}\n\
             kwire_node_reconciles_total{{mode=\"delta\"}} {}",
            self.reconciles_full.load(Relaxed),
            self.reconciles_delta.load(Relaxed)
        );
        let mut emit = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        let n = |v: &AtomicU64| v.load(Relaxed).to_string();
        emit(
            "kwire_node_steps_applied_total",
            "counter",
            "Plan steps applied successfully.",
            n(&self.steps_applied),
        );
        emit(
            "kwire_node_kernel_writes_total",
            "counter",
            "Kernel writes attempted (netlink changes, WireGuard configuration requests, sysctls, processes).",
            n(&self.kernel_writes),
        );
        emit(
            "kwire_node_apply_errors_total",
            "counter",
            "Plan steps that failed.",
            n(&self.apply_errors),
        );
        emit(
            "kwire_node_observe_errors_total",
            "counter",
            "Kernel observations that failed.",
            n(&self.observe_errors),
        );
        emit(
            "kwire_node_last_plan_steps",
            "gauge",
            "Steps in the most recent plan.",
            n(&self.last_plan_steps),
        );
        emit(
            "kwire_node_last_reconcile_writes",
            "gauge",
            "Kernel writes of the most recent reconcile (0 on a converged node).",
            n(&self.last_reconcile_writes),
        );
        emit(
            "kwire_node_last_reconcile_errors",
            "gauge",
            "Failed steps in the most recent reconcile.",
            n(&self.last_reconcile_errors),
        );
        emit(
            "kwire_node_last_reconcile_duration_seconds",
            "gauge",
            "How long the most recent reconcile took.",
            format!(
                "{:.6}",
                self.last_reconcile_micros.load(Relaxed) as f64 / 1e6
            ),
        );
        emit(
            "kwire_node_conflicts",
            "gauge",
            "Desired objects blocked by foreign kernel state in the most recent plan.",
            n(&self.conflicts),
        );
        emit(
            "kwire_node_ready",
            "gauge",
            "1 once the first reconcile completed.",
            u8::from(self.ready.load(Relaxed)).to_string(),
        );
        emit(
            "kwire_node_seconds_since_loop_heartbeat",
            "gauge",
            "Seconds since the reconcile loop last came round.",
            format!("{:.3}", self.since_heartbeat().as_secs_f64()),
        );
        self.render_peers(&mut out, now);
        out
    }

    pub fn render(&self) -> String {
        self.render_at(SystemTime::now())
    }

    fn render_peers(&self, out: &mut String, now: SystemTime) {
        let observed = self
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let families = [
            (
                "kwire_node_peer_latest_handshake_seconds",
                "gauge",
                "Unix time of the peer's latest handshake (0: none yet).",
            ),
            (
                "kwire_node_peer_handshake_age_seconds",
                "gauge",
                "Seconds since the peer's latest handshake; absent before the first one.",
            ),
            (
                "kwire_node_peer_receive_bytes_total",
                "counter",
                "Bytes received from the peer.",
            ),
            (
                "kwire_node_peer_transmit_bytes_total",
                "counter",
                "Bytes sent to the peer.",
            ),
        ];
        let mut lines: [String; 4] = Default::default();
        let mut at_secs = 0.0;
        if let Some((node, at)) = &observed {
            at_secs = unix_secs(*at);
            for (device, d) in node.owned_devices() {
                let Some(wg) = &d.wireguard else { continue };
                for (key, peer) in &wg.peers {
                    let labels = format!(
                        "{{device=\"{}\",public_key=\"{}\"}}",
                        label(device.as_str()),
                        label(&key.to_base64())
                    );
                    let handshake = peer.stats.last_handshake;
                    let _ = writeln!(
                        lines[0],
                        "{}{labels} {:.3}",
                        families[0].0,
                        handshake.map_or(0.0, unix_secs)
                    );
                    if let Some(h) = handshake {
                        let age = now.duration_since(h).unwrap_or_default();
                        let _ = writeln!(
                            lines[1],
                            "{}{labels} {:.3}",
                            families[1].0,
                            age.as_secs_f64()
                        );
                    }
                    let _ = writeln!(
                        lines[2],
                        "{}{labels} {}",
                        families[2].0, peer.stats.rx_bytes
                    );
                    let _ = writeln!(
                        lines[3],
                        "{}{labels} {}",
                        families[3].0, peer.stats.tx_bytes
                    );
                }
            }
        }
        for ((name, kind, help), body) in families.iter().zip(lines) {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            out.push_str(&body);
        }
        let _ = writeln!(
            out,
            "# HELP kwire_node_peer_stats_timestamp_seconds Unix time of the observation the peer metrics come from.\n\
             # TYPE kwire_node_peer_stats_timestamp_seconds gauge\n\
             kwire_node_peer_stats_timestamp_seconds {at_secs:.3}"
        );
    }
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The answer to one request: status code, reason phrase, content type, body.
pub fn respond(metrics: &Metrics, path: &str) -> (u16, &'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/metrics" => (
            200,
            "OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" | "/livez" => match metrics.health() {
            Ok(()) => (200, "OK", TEXT, "ok\n".into()),
            Err(why) => (503, "Service Unavailable", TEXT, format!("{why}\n")),
        },
        "/readyz" => match metrics.readiness() {
            Ok(()) => (200, "OK", TEXT, "ready\n".into()),
            Err(why) => (503, "Service Unavailable", TEXT, format!("{why}\n")),
        },
        _ => (
            404,
            "Not Found",
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// The path of an HTTP request line (`GET /metrics?x HTTP/1.1` → `/metrics`).
fn request_path(head: &str) -> Option<&str> {
    let mut parts = head.lines().next()?.split_whitespace();
    let _method = parts.next()?;
    let target = parts.next()?;
    Some(target.split(['?', '#']).next().unwrap_or(target))
}

/// Serves [`respond`] over plain HTTP/1.1 until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            let read_head = async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), read_head).await;
            let head = String::from_utf8_lossy(&head);
            let (code, phrase, content_type, body) = match request_path(&head) {
                Some(path) => respond(&metrics, path),
                None => (
                    400,
                    "Bad Request",
                    "text/plain; charset=utf-8",
                    "bad request\n".into(),
                ),
            };
            let response = format!(
                "HTTP/1.1 {code} {phrase}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::model::{DesiredDevice, DesiredNode, PeerStats};

    #[test]
    fn metrics_render_in_the_prometheus_text_format() {
        let m = Metrics::default();
        m.kernel_writes.store(7, Relaxed);
        m.reconciles_delta.store(2, Relaxed);
        let text = m.render();
        assert!(
            text.contains("kwire_node_kernel_writes_total 7\n"),
            "{text}"
        );
        assert!(
            text.contains("kwire_node_reconciles_total{mode=\"delta\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE kwire_node_conflicts gauge\n"),
            "{text}"
        );
        assert!(text.contains("kwire_node_ready 0\n"), "{text}");
    }

    #[test]
    fn every_peer_of_an_owned_device_gets_its_handshake_age_and_bytes() {
        let desired = DesiredNode::default().with_device(
            "wg0",
            DesiredDevice::test("a/x")
                .with_peer(pk(2), peer(&["10.1.0.2/32"]))
                .with_peer(pk(3), peer(&["10.1.0.3/32"])),
        );
        let mut node = crate::sim::converged(&desired);
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
            format!("kwire_node_peer_handshake_age_seconds{two} 42.000\n"),
            format!("kwire_node_peer_latest_handshake_seconds{two} 1800000000.000\n"),
            format!("kwire_node_peer_latest_handshake_seconds{three} 0.000\n"),
            format!("kwire_node_peer_receive_bytes_total{two} 1234\n"),
            format!("kwire_node_peer_transmit_bytes_total{two} 5678\n"),
            format!("kwire_node_peer_receive_bytes_total{three} 0\n"),
        ] {
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains(&format!("kwire_node_peer_handshake_age_seconds{three}")),
            "no age before the first handshake"
        );
    }

    #[test]
    fn readyz_waits_for_the_first_reconcile_and_healthz_for_a_stalled_loop() {
        let m = Metrics::default();
        assert_eq!(respond(&m, "/readyz").0, 503);
        m.ready.store(true, Relaxed);
        assert_eq!(respond(&m, "/readyz").0, 200);
        assert_eq!(respond(&m, "/healthz").0, 200);
        m.set_stall_after(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        let (code, _, _, body) = respond(&m, "/healthz");
        assert_eq!(code, 503);
        assert!(body.contains("has not come round"), "{body}");
        m.beat();
        m.set_stall_after(Duration::from_secs(60));
        assert_eq!(respond(&m, "/healthz").0, 200);
        assert_eq!(respond(&m, "/nope").0, 404);
        assert_eq!(respond(&m, "/metrics").0, 200);
    }

    #[test]
    fn request_paths_drop_the_query() {
        assert_eq!(request_path("GET /metrics HTTP/1.1\r\n"), Some("/metrics"));
        assert_eq!(
            request_path("GET /readyz?verbose HTTP/1.1"),
            Some("/readyz")
        );
        assert_eq!(request_path(""), None);
    }
}
