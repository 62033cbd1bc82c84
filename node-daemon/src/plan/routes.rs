//! Route planning. kwire's routes are keyed by (table, destination); the
//! kernel's identity adds the metric, so a metric change is a removal of the
//! old route and an addition of the new one, while a change of `via` or device
//! replaces the route in place.

use std::collections::BTreeSet;

use super::{Conflict, RouteTarget, Step};
use crate::model::{DesiredNode, IfaceName, ObservedNode, Ownership, RouteId, effective_metric};

pub(super) struct RoutePlan {
    pub removals: Vec<Step>,
    pub additions: Vec<Step>,
    pub conflicts: Vec<Conflict>,
}

pub(super) fn plan_routes(
    desired: &DesiredNode,
    observed: &ObservedNode,
    available: &BTreeSet<IfaceName>,
    recreate: &BTreeSet<IfaceName>,
) -> RoutePlan {
    let mut out = RoutePlan {
        removals: Vec::new(),
        additions: Vec::new(),
        conflicts: Vec::new(),
    };
    let mut wanted = BTreeSet::new();

    for (key, route) in &desired.routes {
        if !available.contains(&route.device) {
            out.conflicts.push(Conflict::RouteDeviceUnavailable {
                key: *key,
                device: route.device.clone(),
            });
            continue;
        }
        let destination = key.destination.trunc();
        let id = RouteId {
            table: key.table,
            destination,
            metric: effective_metric(&destination, route.metric),
        };
        let target = RouteTarget {
            device: route.device.clone(),
            via: route.via,
        };
        // Owned routes on a device about to be recreated vanish with it.
        let present = observed.routes.get(&id).filter(|r| {
            !(r.ownership == Ownership::Owned
                && r.device.as_ref().is_some_and(|d| recreate.contains(d)))
        });
        match present {
            Some(r) if r.ownership == Ownership::Foreign => {
                out.conflicts.push(Conflict::RouteTaken {
                    key: *key,
                    metric: id.metric,
                    protocol: r.protocol,
                });
            }
            Some(r) => {
                wanted.insert(id);
                if r.device.as_ref() != Some(&target.device) || r.via != target.via {
                    out.additions.push(Step::ReplaceRoute { id, route: target });
                }
            }
            None => {
                wanted.insert(id);
                out.additions.push(Step::AddRoute { id, route: target });
            }
        }
    }

    for (id, route) in &observed.routes {
        let on_retained = route
            .device
            .as_ref()
            .is_some_and(|d| desired.retained.contains(d));
        if route.ownership == Ownership::Owned && !wanted.contains(id) && !on_retained {
            out.removals.push(Step::RemoveRoute {
                id: *id,
                device: route.device.clone(),
            });
        }
    }
    out
}
