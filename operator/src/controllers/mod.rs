//! One controller per kind. Each follows observe → plan → apply:
//! - observe reads what the stores do not hold (Secrets, a fresh Network) and makes the
//!   one impure input a plan may need (a freshly generated key);
//! - `plan_*` is pure: (object, world, observations, findings, now) → a plan of Secrets to
//!   create or adopt, the operator's part of the status, and Events;
//! - apply creates Secrets first, then the status (server-side apply, skipped when only
//!   timestamps would change), then publishes Events.

pub mod interface;
pub mod network;
pub mod peer;
pub mod route;
pub mod run;
pub mod triggers;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::context::{Context, EventSpec};
use crate::error::Error;
use crate::metrics::{ControllerLabels, ErrorLabels};
use crate::secrets::{PlannedSecret, adopt_patch};
use crate::status::{DesiredCondition, Status};

/// What a plan does about a Secret holding key material.
#[derive(Clone, Debug, PartialEq)]
pub enum SecretAction {
    None,
    /// Create this Secret (never overwrite: a Secret that exists is kept).
    Create(Box<PlannedSecret>),
    /// Add this ownerReference to an existing generated Secret (its owner was re-created).
    Adopt {
        name: String,
        owner: OwnerReference,
    },
}

/// Warning Events for conditions that turn `False` or change their reason while `False`.
/// Waiting states (reasons ending in `Pending`, e.g. a key not generated yet) are normal
/// steps of convergence, not problems, and get no Event.
pub fn condition_events(previous: &[Condition], desired: &[DesiredCondition]) -> Vec<EventSpec> {
    desired
        .iter()
        .filter(|d| d.status == Status::False && !d.reason.ends_with("Pending"))
        .filter(|d| {
            !previous
                .iter()
                .any(|p| p.type_ == d.type_ && p.status == "False" && p.reason == d.reason)
        })
        .map(|d| EventSpec::warning(&d.reason, &d.type_, d.message.clone()))
        .collect()
}

/// The namespace of a namespaced object.
pub(crate) fn namespace<K: Resource>(obj: &K, kind: &'static str) -> Result<String, Error> {
    obj.meta().namespace.clone().ok_or(Error::MissingMetadata {
        kind,
        name: obj.meta().name.clone().unwrap_or_default(),
        field: "metadata.namespace",
    })
}

/// Reads a Secret, `None` when it does not exist.
pub(crate) async fn get_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, Error> {
    Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::Read {
            kind: "Secret",
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        })
}

/// Executes a [`SecretAction`].
pub(crate) async fn apply_secret(
    ctx: &Context,
    namespace: &str,
    action: &SecretAction,
) -> Result<(), Error> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    match action {
        SecretAction::None => Ok(()),
        SecretAction::Create(planned) => {
            let secret = &planned.0;
            api.create(&PostParams::default(), secret)
                .await
                .map(|_| ())
                .map_err(|source| Error::CreateSecret {
                    namespace: namespace.to_string(),
                    name: secret.name_any(),
                    source: Box::new(source),
                })
        }
        SecretAction::Adopt { name, owner } => api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Strategic(adopt_patch(owner)),
            )
            .await
            .map(|_| ())
            .map_err(|source| Error::AdoptSecret {
                namespace: namespace.to_string(),
                name: name.clone(),
                source: Box::new(source),
            }),
    }
}

/// A key for the failure counter.
fn failure_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Bookkeeping around every reconcile: metrics and the failure counter.
pub(crate) fn finish<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    obj: &K,
    ctx: &Context,
    result: Result<Action, Error>,
) -> Result<Action, Error> {
    ctx.metrics
        .reconciles
        .get_or_create(&ControllerLabels { controller })
        .inc();
    match &result {
        Ok(_) => ctx.succeeded(&failure_key(obj)),
        Err(error) => {
            ctx.metrics
                .failures
                .get_or_create(&ErrorLabels {
                    controller,
                    error: error.metric_label(),
                })
                .inc();
        }
    }
    result
}

/// The error policy of every controller: log, then retry as the error asks.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let attempt = ctx.failed(&failure_key(obj.as_ref()));
    let delay = crate::error::retry_delay(error.retry(), attempt);
    tracing::warn!(%error, attempt, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::merge_conditions;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn a_warning_is_published_once_when_a_condition_turns_false() {
        let now = Time(Timestamp::UNIX_EPOCH);
        let bad = DesiredCondition::failed("KeyReady", "SecretNotFound", "create it");
        let good = DesiredCondition::ok("KeyReady", "KeyGenerated", "fine");
        let events = condition_events(&[], std::slice::from_ref(&bad));
        assert_eq!(
            events,
            [EventSpec::warning(
                "SecretNotFound",
                "KeyReady",
                "create it"
            )]
        );
        let previous = merge_conditions(&[], std::slice::from_ref(&bad), None, &now);
        assert!(condition_events(&previous, std::slice::from_ref(&bad)).is_empty());
        assert!(condition_events(&previous, &[good]).is_empty());
        let other = DesiredCondition::failed("KeyReady", "InvalidPrivateKey", "fix it");
        assert_eq!(condition_events(&previous, &[other]).len(), 1);
        let waiting = DesiredCondition::failed("Resolved", "RemoteKeyPending", "soon");
        assert!(
            condition_events(&[], &[waiting]).is_empty(),
            "waiting is not a problem"
        );
    }
}
