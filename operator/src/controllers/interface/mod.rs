//! The Interface controller: ensures the key (generated Secret, user Secret, or nothing for
//! `NodeLocal`), publishes addresses, endpoint and public key in status, and the
//! `KeyReady`, `AddressAllocated` and `TopologyValid` conditions.

mod plan;
pub mod rotation;
#[cfg(test)]
mod tests;

pub use plan::{InterfacePlan, KeyObservation, plan_interface};
pub use rotation::{GeneratedKeys, KeySecret, OldKeySecret};

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PartialObjectMeta, Preconditions};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use kwire_crds::v1alpha1::{Interface, KeyMode};

use super::waiting::Hold;
use super::{apply_secret, finish, get_secret, hold_status, namespace};
use crate::context::{Context, EventSpec};
use crate::error::Error;
use crate::reasons;
use crate::secrets::{PRIVATE_KEY_DATA, private_key_secret_name};
use crate::status::{apply_status, needs_patch};
use kwire_crds::keys::PrivateKey;

pub const CONTROLLER: &str = "interface";

/// Reads the Secret the key lives in, and generates a key if the operator's Secret is absent.
pub async fn observe_key(interface: &Interface, ctx: &Context) -> Result<KeyObservation, Error> {
    let ns = namespace(interface, "Interface")?;
    if interface.spec.key_mode == Some(KeyMode::NodeLocal) {
        return Ok(KeyObservation::NodeLocal);
    }
    if let Some(reference) = &interface.spec.private_key_secret_ref {
        let name = reference.name.to_string();
        return Ok(KeyObservation::UserSecret {
            secret: get_secret(ctx, &ns, &name).await?,
            data_key: reference
                .key
                .clone()
                .unwrap_or_else(|| PRIVATE_KEY_DATA.to_string()),
            name,
        });
    }
    let name = interface.name_any();
    let listed = ctx.stores.key_secrets(&ns, &name);
    // Key Secrets are immutable: one already read at this resourceVersion is not read again.
    let read_listed = |meta: Arc<PartialObjectMeta<Secret>>, generation: u32| {
        let ns = ns.clone();
        async move {
            let uid = meta.metadata.uid.clone().unwrap_or_default();
            let version = meta.metadata.resource_version.clone().unwrap_or_default();
            if let Some(hit) = ctx.key_cache.get(&uid, &version) {
                return Ok::<_, Error>(Some(hit));
            }
            let read = get_secret(ctx, &ns, &meta.name_any())
                .await?
                .map(|secret| KeySecret::read(generation, secret));
            if let Some(key) = &read {
                let live = || ctx.stores.secrets.state().len();
                ctx.key_cache.put(key, live);
            }
            Ok(read)
        }
    };
    let newest = match listed.last() {
        Some((generation, meta)) => match read_listed(meta.clone(), *generation).await? {
            Some(found) => Some(found),
            // Deleted since the store saw it: look again once the store has caught up.
            None => {
                return Err(Error::StaleStore {
                    kind: "Secret",
                    namespace: ns.clone(),
                    name: meta.name_any(),
                });
            }
        },
        // No key Secret of ours in the store. If this process never made or read one of
        // that name, the name is taken to be free and the plan creates it: no read before
        // every first key. A create that finds one there (not ours: a name conflict to
        // report) makes the name read from the API server from then on, as is one this
        // process made and the store does not show yet.
        None => {
            let first = private_key_secret_name(&name);
            if ctx.secret_conflicts.seen(&ns, &first) || ctx.key_cache.knows(&ns, &first) {
                get_secret(ctx, &ns, &first)
                    .await?
                    .map(|secret| KeySecret::read(0, secret))
            } else {
                None
            }
        }
    };
    if !listed.is_empty() {
        ctx.secret_conflicts
            .forget(&ns, &private_key_secret_name(&name));
    }
    let newest_generation = newest.as_ref().map(|k| k.generation);
    let named = interface
        .status
        .as_ref()
        .and_then(|s| s.private_key_secret.clone());
    let mut in_use = None;
    let mut older = Vec::new();
    for (generation, meta) in &listed {
        if Some(*generation) == newest_generation {
            continue;
        }
        if named.as_deref() == meta.metadata.name.as_deref() {
            in_use = read_listed(meta.clone(), *generation).await?;
        } else {
            older.push(OldKeySecret {
                generation: *generation,
                name: meta.name_any(),
                uid: meta.metadata.uid.clone().unwrap_or_default(),
            });
        }
    }
    let fresh = PrivateKey::generate().map_err(|source| Error::GenerateKey {
        kind: "Interface",
        namespace: ns.clone(),
        name: name.clone(),
        source: Box::new(source),
    })?;
    // A rotation in progress waits on the Peers: read them as they are now.
    let current_peers = in_use.is_some().then(|| ctx.stores.peers.state());
    Ok(KeyObservation::Generated(GeneratedKeys {
        newest,
        in_use,
        older,
        fresh: Some(fresh),
        current_peers,
    }))
}

/// Secrets first, then status (unless held, see [`super::waiting`]), then Events. Returns
/// the hold decision.
pub async fn apply_interface(
    interface: &Interface,
    plan: InterfacePlan,
    ctx: &Context,
) -> Result<Hold, Error> {
    let ns = namespace(interface, "Interface")?;
    if let Some(created) = apply_secret(ctx, &ns, &plan.secret).await?
        && let Some(generation) =
            crate::secrets::is_key_secret_of(&created.metadata, &interface.name_any())
    {
        // The next reconcile reads this key from the cache instead of the API server.
        let live = || ctx.stores.secrets.state().len();
        ctx.key_cache
            .put(&KeySecret::read(generation, created), live);
    }
    let name = interface.name_any();
    let hold = hold_status(ctx, CONTROLLER, "Interface", (&ns, &name), plan.hold);
    let patch = hold == Hold::Write && needs_patch(interface.status.as_ref(), &plan.status);
    if patch {
        let api = Api::<Interface>::namespaced(ctx.client.clone(), &ns);
        let applied = apply_status(&api, interface, &plan.status)
            .await
            .map_err(|source| Error::PatchStatus {
                kind: "Interface",
                namespace: ns.clone(),
                name: interface.name_any(),
                source: Box::new(source),
            })?;
        ctx.written.wrote(
            applied.metadata.uid.as_deref(),
            applied.metadata.resource_version.as_deref(),
        );
    }
    if hold == Hold::Write {
        ctx.metrics.patched(CONTROLLER, patch);
    }
    let reference = interface.object_ref(&());
    for event in plan.events {
        ctx.events.publish(&reference, event).await;
    }
    // Replaced keys go last, once the status no longer names them.
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    for old in &plan.delete {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(old.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match secrets.delete(&old.name, &params).await {
            Ok(_) => {
                ctx.events
                    .publish(
                        &reference,
                        EventSpec::normal(
                            reasons::EVENT_OLD_KEY_DELETED,
                            "DeleteKeySecret",
                            format!(
                                "deleted Secret {}, which held a key this Interface no longer uses",
                                old.name
                            ),
                        ),
                    )
                    .await;
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(source) => {
                return Err(Error::DeleteSecret {
                    namespace: ns.clone(),
                    name: old.name.clone(),
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(hold)
}

/// Reconciles one Interface.
pub async fn reconcile(interface: Arc<Interface>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = async {
        // Planning from a copy older than our own last write would undo parts of it.
        if let Some(behind) = ctx.written.behind(
            interface.metadata.uid.as_deref(),
            interface.metadata.resource_version.as_deref(),
        ) {
            return Err(Error::CacheBehindOwnWrite {
                kind: "Interface",
                namespace: namespace(interface.as_ref(), "Interface")?,
                name: interface.name_any(),
                cached: behind.cached,
                written: behind.written,
            });
        }
        let key = observe_key(&interface, &ctx).await?;
        let world = ctx.stores.world();
        let findings = ctx.findings.get();
        let planned_at = std::time::Instant::now();
        let plan = plan_interface(&interface, &world, key, &findings, &ctx.clock.now());
        let requeue = plan
            .requeue
            .map_or(ctx.config.resync, |r| r.min(ctx.config.resync));
        let requeue = match apply_interface(&interface, plan, &ctx).await? {
            Hold::Wait(left) => requeue.min(left),
            Hold::Write => requeue,
        };
        // The plan's delays count from its clock reading, not from the end of its writes
        // (a rotation's settle would otherwise grow by a status write).
        Ok(Action::requeue(
            requeue.saturating_sub(planned_at.elapsed()),
        ))
    }
    .await;
    finish(CONTROLLER, interface.as_ref(), &ctx, result)
}
