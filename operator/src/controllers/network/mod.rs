//! The Network controller: decides the CIDR (explicit, or carved from a pool), runs the
//! allocator against the live Interfaces and records the allocations in status, with the
//! `Ready` and `Conflict` conditions and Events for allocations, releases and conflicts.
//!
//! The Network is planned from the store unless the store has not yet seen the operator's
//! own last write to it ([`crate::written`]); then it is read fresh from the API server
//! (allocating from an older copy could hand out an address twice). Carving is serialized
//! in this process.

mod plan;
#[cfg(test)]
mod tests;

pub use plan::{CidrDecision, NetworkPlan, Regarding, decide_cidr, plan_network};

use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use kwire_crds::v1alpha1::{Interface, Network};

use super::{finish, namespace};
use crate::context::Context;
use crate::error::Error;
use crate::ipam;
use crate::status::{apply_status, needs_patch};

pub const CONTROLLER: &str = "network";

/// The CIDRs of every other Network (any namespace: pools are cluster-wide), plus what this
/// process carved and the stores may not show yet.
fn taken(
    ctx: &Context,
    me: &Network,
    carved: &std::collections::BTreeMap<String, IpNet>,
) -> Vec<IpNet> {
    let my_uid = me.metadata.uid.clone().unwrap_or_default();
    let mut taken: Vec<IpNet> = ctx
        .stores
        .networks
        .state()
        .iter()
        .filter(|n| n.metadata.uid.as_deref() != Some(my_uid.as_str()))
        .filter_map(|n| ipam::network_cidr(n))
        .collect();
    taken.extend(
        carved
            .iter()
            .filter(|(uid, _)| **uid != my_uid)
            .map(|(_, c)| *c),
    );
    taken
}

/// Reconciles one Network.
pub async fn reconcile(network: Arc<Network>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = async {
        let ns = namespace(network.as_ref(), "Network")?;
        let name = network.name_any();
        let api = Api::<Network>::namespaced(ctx.client.clone(), &ns);
        let behind = ctx.written.behind(
            network.metadata.uid.as_deref(),
            network.metadata.resource_version.as_deref(),
        );
        let fresh = match behind {
            None => network.as_ref().clone(),
            Some(_) => api.get(&name).await.map_err(|source| Error::Read {
                kind: "Network",
                namespace: ns.clone(),
                name: name.clone(),
                source: Box::new(source),
            })?,
        };
        let uid = fresh.metadata.uid.clone().unwrap_or_default();
        let decision = if fresh.spec.cidr.is_some() {
            decide_cidr(&fresh, &ctx.config.pools, &[], None)
        } else {
            let mut carved = ctx.carved.lock().await;
            let live: std::collections::BTreeSet<String> = ctx
                .stores
                .networks
                .state()
                .iter()
                .filter_map(|n| n.metadata.uid.clone())
                .collect();
            carved.retain(|uid, _| live.contains(uid));
            let decision = decide_cidr(
                &fresh,
                &ctx.config.pools,
                &taken(&ctx, &fresh, &carved),
                carved.get(&uid).copied(),
            );
            if let CidrDecision::Ready {
                cidr,
                carved_now: true,
                ..
            } = &decision
            {
                carved.insert(uid.clone(), *cidr);
            }
            decision
        };
        let interfaces: Vec<Arc<Interface>> = ctx.stores.interfaces.state();
        let plan = plan_network(&fresh, &interfaces, &decision, &ctx.clock.now());
        let patch = needs_patch(fresh.status.as_ref(), &plan.status);
        if patch {
            let applied = apply_status(&api, &fresh, &plan.status)
                .await
                .map_err(|source| Error::PatchStatus {
                    kind: "Network",
                    namespace: ns.clone(),
                    name: name.clone(),
                    source: Box::new(source),
                })?;
            ctx.written.wrote(
                applied.metadata.uid.as_deref(),
                applied.metadata.resource_version.as_deref(),
            );
        }
        ctx.metrics.patched(CONTROLLER, patch);
        for (regarding, event) in plan.events {
            let reference = match regarding {
                Regarding::Network => fresh.object_ref(&()),
                Regarding::Interface(interface) => interface_ref(&ctx, &ns, &interface),
            };
            ctx.events.publish(&reference, event).await;
        }
        Ok(Action::requeue(ctx.config.resync))
    }
    .await;
    finish(CONTROLLER, network.as_ref(), &ctx, result)
}

fn interface_ref(ctx: &Context, ns: &str, name: &str) -> ObjectReference {
    let key = kube::runtime::reflector::ObjectRef::<Interface>::new(name).within(ns);
    match ctx.stores.interfaces.get(&key) {
        Some(i) => i.object_ref(&()),
        None => ObjectReference {
            api_version: Some(Interface::api_version(&()).into_owned()),
            kind: Some(Interface::kind(&()).into_owned()),
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            ..ObjectReference::default()
        },
    }
}
