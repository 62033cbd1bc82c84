//! The Route controller: writes `TopologyValid` only (the node daemon installs the route and
//! owns `Ready`).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use kwire_crds::v1alpha1::{Route, RouteStatus};

use super::{condition_events, finish, namespace};
use crate::context::{Context, EventSpec};
use crate::error::Error;
use crate::status::{apply_status, merge_conditions, needs_patch};
use crate::topology::{Finding, ObjectKind, condition_for};
use crate::world::ns_of;

pub const CONTROLLER: &str = "route";

/// The operator's part of a Route's status, and Events for new problems.
pub fn plan_route(
    route: &Route,
    findings: &[Finding],
    now: &Time,
) -> (RouteStatus, Vec<EventSpec>) {
    let desired = [condition_for(
        findings,
        ObjectKind::Route,
        &ns_of(route),
        &route.name_any(),
    )];
    let previous = route
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = route.metadata.generation;
    (
        RouteStatus {
            observed_generation: generation,
            conditions: merge_conditions(previous, &desired, generation, now),
        },
        condition_events(previous, &desired),
    )
}

/// Reconciles one Route.
pub async fn reconcile(route: Arc<Route>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = async {
        let ns = namespace(route.as_ref(), "Route")?;
        let findings = ctx.findings.get();
        let (status, events) = plan_route(&route, &findings, &ctx.clock.now());
        let patch = needs_patch(route.status.as_ref(), &status);
        if patch {
            let api = Api::<Route>::namespaced(ctx.client.clone(), &ns);
            apply_status(&api, route.as_ref(), &status)
                .await
                .map_err(|source| Error::PatchStatus {
                    kind: "Route",
                    namespace: ns.clone(),
                    name: route.name_any(),
                    source: Box::new(source),
                })?;
        }
        ctx.metrics.patched(CONTROLLER, patch);
        let reference = route.object_ref(&());
        for event in events {
            ctx.events.publish(&reference, event).await;
        }
        Ok(Action::requeue(ctx.config.resync))
    }
    .await;
    finish(CONTROLLER, route.as_ref(), &ctx, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn a_route_gets_topology_valid_from_the_findings_about_it() {
        let w = world(
            vec![],
            vec![interface("a", "n", &["10.0.0.1/24"])],
            vec![],
            vec![route("r", "a", "10.5.0.0/16", None)],
            None,
        );
        let findings = crate::topology::check(&w);
        let now = Time(Timestamp::UNIX_EPOCH);
        let (status, events) = plan_route(&w.routes[0], &findings, &now);
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(
            status.conditions[0].reason,
            crate::reasons::ROUTE_NOT_COVERED
        );
        assert_eq!(events.len(), 1);
        let ok = route("ok", "a", "10.0.0.0/24", None);
        let (status, events) = plan_route(&ok, &findings, &now);
        assert_eq!(status.conditions[0].status, "True");
        assert!(events.is_empty());
    }
}
