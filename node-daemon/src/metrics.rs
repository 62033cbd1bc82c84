//! A handful of counters in the Prometheus text format, served on
//! `--metrics-addr` at any path.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles_full: AtomicU64,
    pub reconciles_delta: AtomicU64,
    pub steps_applied: AtomicU64,
    pub kernel_writes: AtomicU64,
    pub apply_errors: AtomicU64,
    pub observe_errors: AtomicU64,
    pub last_plan_steps: AtomicU64,
    pub conflicts: AtomicU64,
}

impl Metrics {
    /// The Prometheus text exposition of all counters.
    pub fn render(&self) -> String {
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
        let mut emit = |name: &str, kind: &str, help: &str, labels: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{labels} {}", v.load(Relaxed));
        };
        emit(
            "kwire_node_steps_applied_total",
            "counter",
            "Plan steps applied successfully.",
            "",
            &self.steps_applied,
        );
        emit(
            "kwire_node_kernel_writes_total",
            "counter",
            "Kernel writes attempted (netlink changes, WireGuard configuration, sysctls, processes).",
            "",
            &self.kernel_writes,
        );
        emit(
            "kwire_node_apply_errors_total",
            "counter",
            "Plan steps that failed.",
            "",
            &self.apply_errors,
        );
        emit(
            "kwire_node_observe_errors_total",
            "counter",
            "Kernel observations that failed.",
            "",
            &self.observe_errors,
        );
        emit(
            "kwire_node_last_plan_steps",
            "gauge",
            "Steps in the most recent plan.",
            "",
            &self.last_plan_steps,
        );
        emit(
            "kwire_node_conflicts",
            "gauge",
            "Desired objects blocked by foreign kernel state in the most recent plan.",
            "",
            &self.conflicts,
        );
        out
    }
}

/// Serves [`Metrics::render`] over plain HTTP until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            // The request itself does not matter; read what was sent.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf))
                .await;
            let body = metrics.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
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
    }
}
