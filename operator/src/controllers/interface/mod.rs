//! The Interface controller: ensures the key (generated Secret, user Secret, or nothing for
//! `NodeLocal`), publishes addresses, endpoint and public key in status, and the
//! `KeyReady`, `AddressAllocated` and `TopologyValid` conditions.

mod plan;
#[cfg(test)]
mod tests;

pub use plan::{InterfacePlan, KeyObservation, plan_interface};

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use kwire_crds::v1alpha1::{Interface, KeyMode};

use super::{apply_secret, finish, get_secret, namespace};
use crate::context::Context;
use crate::error::Error;
use crate::keys::PrivateKey;
use crate::secrets::{PRIVATE_KEY_DATA, private_key_secret_name};
use crate::status::{apply_status, needs_patch};
use crate::topology;

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
    let name = private_key_secret_name(&interface.name_any());
    let secret = get_secret(ctx, &ns, &name).await?;
    let fresh = match secret {
        Some(_) => None,
        None => Some(PrivateKey::generate().map_err(|source| Error::GenerateKey {
            kind: "Interface",
            namespace: ns.clone(),
            name: interface.name_any(),
            source: Box::new(source),
        })?),
    };
    Ok(KeyObservation::Generated {
        name,
        secret,
        fresh,
    })
}

/// Secrets first, then status, then Events.
pub async fn apply_interface(
    interface: &Interface,
    plan: InterfacePlan,
    ctx: &Context,
) -> Result<(), Error> {
    let ns = namespace(interface, "Interface")?;
    apply_secret(ctx, &ns, &plan.secret).await?;
    let patch = needs_patch(interface.status.as_ref(), &plan.status);
    if patch {
        let api = Api::<Interface>::namespaced(ctx.client.clone(), &ns);
        apply_status(&api, interface, &plan.status)
            .await
            .map_err(|source| Error::PatchStatus {
                kind: "Interface",
                namespace: ns.clone(),
                name: interface.name_any(),
                source: Box::new(source),
            })?;
    }
    ctx.metrics.patched(CONTROLLER, patch);
    let reference = interface.object_ref(&());
    for event in plan.events {
        ctx.events.publish(&reference, event).await;
    }
    Ok(())
}

/// Reconciles one Interface.
pub async fn reconcile(interface: Arc<Interface>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = async {
        let key = observe_key(&interface, &ctx).await?;
        let world = ctx.stores.world();
        let findings = topology::check(&world);
        let plan = plan_interface(&interface, &world, key, &findings, &ctx.clock.now());
        apply_interface(&interface, plan, &ctx).await?;
        Ok(Action::requeue(ctx.config.resync))
    }
    .await;
    finish(CONTROLLER, interface.as_ref(), &ctx, result)
}
