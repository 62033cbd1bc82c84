//! The Peer controller: resolves both ends of a link into `status.resolved` (what the node
//! daemons configure), keeps a generated pre-shared key in a Secret owned by the Peer, and
//! writes the `Resolved` and `TopologyValid` conditions.

mod plan;
#[cfg(test)]
mod tests;

pub use plan::{PeerPlan, PskObservation, plan_peer};

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use kwire_crds::v1alpha1::Peer;

use super::waiting::Hold;
use super::{apply_secret, finish, get_secret, hold_status, namespace};
use crate::context::Context;
use crate::error::Error;
use crate::secrets::{PRESHARED_KEY_DATA, preshared_key_secret_name};
use crate::status::{apply_status, needs_patch};
use kwire_crds::keys::PresharedKey;

pub const CONTROLLER: &str = "peer";

/// Reads the pre-shared key's Secret, generating a key when the operator's is absent.
pub async fn observe_psk(peer: &Peer, ctx: &Context) -> Result<PskObservation, Error> {
    let ns = namespace(peer, "Peer")?;
    let Some(psk) = &peer.spec.preshared_key else {
        return Ok(PskObservation::None);
    };
    if let Some(reference) = &psk.secret_ref {
        let name = reference.name.to_string();
        return Ok(PskObservation::UserSecret {
            secret: get_secret(ctx, &ns, &name).await?,
            data_key: reference
                .key
                .clone()
                .unwrap_or_else(|| PRESHARED_KEY_DATA.to_string()),
            name,
        });
    }
    if psk.generate != Some(true) {
        return Ok(PskObservation::None);
    }
    let name = preshared_key_secret_name(&peer.name_any());
    let secret = get_secret(ctx, &ns, &name).await?;
    let fresh = match secret {
        Some(_) => None,
        None => Some(
            PresharedKey::generate().map_err(|source| Error::GenerateKey {
                kind: "Peer",
                namespace: ns.clone(),
                name: peer.name_any(),
                source: Box::new(source),
            })?,
        ),
    };
    Ok(PskObservation::Generated {
        name,
        secret,
        fresh,
    })
}

/// Reconciles one Peer.
pub async fn reconcile(peer: Arc<Peer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = async {
        let ns = namespace(peer.as_ref(), "Peer")?;
        let psk = observe_psk(&peer, &ctx).await?;
        let world = ctx.stores.world();
        let findings = ctx.findings.get();
        let mut plan = plan_peer(&peer, &world, psk, &findings, &ctx.clock.now());
        if let Some(resolved) = plan.status.resolved.as_mut()
            && resolved.persistent_keepalive.is_none()
        {
            resolved.persistent_keepalive = ctx.config.default_keepalive;
        }
        apply_secret(&ctx, &ns, &plan.secret).await?;
        let name = peer.name_any();
        let hold = hold_status(&ctx, CONTROLLER, "Peer", (&ns, &name), plan.hold);
        let patch = hold == Hold::Write && needs_patch(peer.status.as_ref(), &plan.status);
        if patch {
            let api = Api::<Peer>::namespaced(ctx.client.clone(), &ns);
            apply_status(&api, peer.as_ref(), &plan.status)
                .await
                .map_err(|source| Error::PatchStatus {
                    kind: "Peer",
                    namespace: ns.clone(),
                    name: peer.name_any(),
                    source: Box::new(source),
                })?;
        }
        if hold == Hold::Write {
            ctx.metrics.patched(CONTROLLER, patch);
        }
        let reference = peer.object_ref(&());
        for event in plan.events {
            ctx.events.publish(&reference, event).await;
        }
        Ok(Action::requeue(match hold {
            Hold::Wait(left) => left.min(ctx.config.resync),
            Hold::Write => ctx.config.resync,
        }))
    }
    .await;
    finish(CONTROLLER, peer.as_ref(), &ctx, result)
}
