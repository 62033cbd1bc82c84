//! Prometheus metrics, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub failures: Family<ErrorLabels, Counter>,
    pub status_patches: Family<ControllerLabels, Counter>,
    pub status_patches_skipped: Family<ControllerLabels, Counter>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kwire_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let status_patches = Family::<ControllerLabels, Counter>::default();
        let status_patches_skipped = Family::<ControllerLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error",
            failures.clone(),
        );
        registry.register(
            "status_patches",
            "Status patches sent",
            status_patches.clone(),
        );
        registry.register(
            "status_patches_skipped",
            "Status patches skipped because nothing but timestamps would change",
            status_patches_skipped.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controllers",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            status_patches,
            status_patches_skipped,
            leader,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn patched(&self, controller: &'static str, sent: bool) {
        let labels = ControllerLabels { controller };
        if sent {
            self.status_patches.get_or_create(&labels).inc();
        } else {
            self.status_patches_skipped.get_or_create(&labels).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_the_operator_prefix() {
        let m = Metrics::default();
        m.reconciles
            .get_or_create(&ControllerLabels {
                controller: "interface",
            })
            .inc();
        m.patched("interface", false);
        let text = m.encode();
        assert!(
            text.contains("kwire_operator_reconciles_total{controller=\"interface\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "kwire_operator_status_patches_skipped_total{controller=\"interface\"} 1"
            ),
            "{text}"
        );
    }
}
