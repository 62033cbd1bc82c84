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

/// One kind of request to the API server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: &'static str,
    /// The resource, with its subresource (`interfaces/status`).
    pub resource: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests sent to the API server (counted as they leave; watches once per connection).
    pub api_requests: Family<RequestLabels, Counter>,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub failures: Family<ErrorLabels, Counter>,
    pub status_patches: Family<ControllerLabels, Counter>,
    pub status_patches_skipped: Family<ControllerLabels, Counter>,
    /// Status writes held back while the object waits on the operator's own work.
    pub status_holds: Family<ControllerLabels, Counter>,
    pub leader: Gauge,
    /// Topology checks of the whole world (one task, after changes).
    pub topology_checks: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kwire_operator");
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API server, by verb and resource",
            api_requests.clone(),
        );
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let status_patches = Family::<ControllerLabels, Counter>::default();
        let status_patches_skipped = Family::<ControllerLabels, Counter>::default();
        let status_holds = Family::<ControllerLabels, Counter>::default();
        let leader = Gauge::default();
        let topology_checks = Counter::default();
        registry.register(
            "topology_checks",
            "Topology checks of every object, run after changes",
            topology_checks.clone(),
        );
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
            "status_holds",
            "Status writes held back because the object only waited on the operator's own next write (a key, an address)",
            status_holds.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controllers",
            leader.clone(),
        );
        Metrics {
            registry,
            api_requests,
            reconciles,
            failures,
            status_patches,
            status_patches_skipped,
            status_holds,
            leader,
            topology_checks,
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

    /// Counts one request to the API server.
    pub fn request(&self, method: &http::Method, uri: &http::Uri) {
        let (verb, resource) = classify_request(method, uri);
        self.api_requests
            .get_or_create(&RequestLabels { verb, resource })
            .inc();
    }

    /// Counts one status write held back (see `controllers::waiting`).
    pub fn held(&self, controller: &'static str) {
        self.status_holds
            .get_or_create(&ControllerLabels { controller })
            .inc();
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

/// The verb and resource of a request to the API server, from its method and path
/// (`/api/v1/namespaces/ns/secrets/name`, `/apis/kwire.dev/v1alpha1/interfaces?watch=true`).
pub fn classify_request(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // Skip `api/<version>` or `apis/<group>/<version>`, then `namespaces/<ns>` if present.
    let rest: &[&str] = match segments.first() {
        Some(&"api") => segments.get(2..).unwrap_or_default(),
        Some(&"apis") => segments.get(3..).unwrap_or_default(),
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named) = match rest {
        [] => ("other".to_string(), false),
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_verb_and_resource() {
        let cases = [
            (
                "GET",
                "/api/v1/namespaces/ns/secrets/a-private-key",
                ("get", "secrets"),
            ),
            (
                "GET",
                "/api/v1/nodes?watch=true&resourceVersion=5",
                ("watch", "nodes"),
            ),
            (
                "GET",
                "/apis/kwire.dev/v1alpha1/interfaces?limit=500",
                ("list", "interfaces"),
            ),
            (
                "POST",
                "/api/v1/namespaces/ns/secrets",
                ("create", "secrets"),
            ),
            (
                "PATCH",
                "/apis/kwire.dev/v1alpha1/namespaces/ns/peers/a-to-b/status?fieldManager=x",
                ("patch", "peers/status"),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/ns/secrets/x",
                ("delete", "secrets"),
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/ns/events",
                ("create", "events"),
            ),
        ];
        for (method, uri, (verb, resource)) in cases {
            let got = classify_request(&method.parse().unwrap(), &uri.parse().unwrap());
            assert_eq!(got, (verb, resource.to_string()), "{method} {uri}");
        }
    }

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
