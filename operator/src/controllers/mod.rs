//! One controller per kind. Each follows observe → plan → apply:
//! - observe reads what the stores do not hold (Secrets, a fresh Network) and makes the
//!   one impure input a plan may need (a freshly generated key);
//! - `plan_*` is pure: (object, world, observations, findings, now) → a plan of Secrets to
//!   create or adopt, the operator's part of the status, and Events;
//! - apply creates Secrets first, then the status (server-side apply, skipped when only
//!   timestamps would change), then publishes Events.

pub mod interface;
pub mod mesh;
pub mod mesh_leave;
pub mod network;
pub mod nodes;
pub mod peer;
pub mod route;
pub mod run;
pub mod triggers;
pub mod waiting;

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
    /// Add this ownerReference to an existing generated Secret (its owner was re-created),
    /// removing the controller references of the earlier objects of the same name
    /// (`replaces`, by uid): an object has one controller, so adding a second one is
    /// refused (422) until the garbage collector deletes the Secret.
    Adopt {
        name: String,
        owner: OwnerReference,
        replaces: Vec<String>,
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

/// Whether to write a status whose plan asks (`wants`) to hold it back, counting holds in
/// the metrics; a plan that does not ask ends the object's hold.
pub(crate) fn hold_status(
    ctx: &Context,
    controller: &'static str,
    kind: &'static str,
    (ns, name): (&str, &str),
    wants: bool,
) -> waiting::Hold {
    if !wants {
        ctx.holds.release(kind, ns, name);
        return waiting::Hold::Write;
    }
    let hold = ctx.holds.hold(kind, ns, name, std::time::Instant::now());
    if matches!(hold, waiting::Hold::Wait(_)) {
        ctx.metrics.held(controller);
    }
    hold
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

/// Executes a [`SecretAction`]; returns the Secret it created, as the API server stored it.
pub(crate) async fn apply_secret(
    ctx: &Context,
    namespace: &str,
    action: &SecretAction,
) -> Result<Option<Secret>, Error> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    match action {
        SecretAction::None => Ok(None),
        SecretAction::Create(planned) => {
            let secret = &planned.0;
            api.create(&PostParams::default(), secret)
                .await
                .map(Some)
                .map_err(|source| {
                    if matches!(&source, kube::Error::Api(s) if s.code == 409) {
                        // Not in the store of the operator's Secrets: someone else's, or
                        // not seen yet. The next observation reads it (retried soon).
                        ctx.secret_conflicts.record(namespace, &secret.name_any());
                    }
                    Error::CreateSecret {
                        namespace: namespace.to_string(),
                        name: secret.name_any(),
                        source: Box::new(source),
                    }
                })
        }
        SecretAction::Adopt {
            name,
            owner,
            replaces,
        } => api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Strategic(adopt_patch(owner, replaces)),
            )
            .await
            .map(|_| None)
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
    let streak = ctx.failed(&failure_key(obj.as_ref()));
    let (attempt, delay) = (
        streak.attempt,
        crate::error::retry_delay(error.retry(), streak.attempt),
    );
    // A cache a moment behind the API is routine (right after our own writes, at start):
    // it is worth a warning only when it lasts.
    if error.worth_a_warning(streak.failing_for) {
        tracing::warn!(%error, attempt, failing_for = ?streak.failing_for, retry_in = ?delay, "reconcile failed");
    } else {
        tracing::debug!(%error, attempt, retry_in = ?delay, "reconcile waits for the cache");
    }
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::merge_conditions;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    /// A clock a test moves forward.
    #[derive(Default)]
    struct TestClock(std::sync::Mutex<i64>);

    impl TestClock {
        fn advance(&self, seconds: i64) {
            *self.0.lock().unwrap() += seconds;
        }
    }

    impl crate::status::Clock for TestClock {
        fn now(&self) -> Time {
            let at = Timestamp::from_second(1_800_000_000).unwrap();
            Time(at + SignedDuration::from_secs(*self.0.lock().unwrap()))
        }
    }

    /// A context on empty stores and the fake API server, with `clock`.
    fn context(clock: Arc<TestClock>) -> Arc<Context> {
        use kube::runtime::reflector::store;
        let stores = crate::context::Stores::new(
            store().0,
            store().0,
            store().0,
            store().0,
            store().0,
            store().0,
            store().0,
        );
        Arc::new(Context::new(
            crate::fake_api::client(),
            stores,
            crate::context::Config::default(),
            clock,
            crate::context::Events::Recorded(Default::default()),
            Arc::new(crate::metrics::Metrics::default()),
        ))
    }

    /// What `f` logs, as text lines.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8_lossy(&lines.0.lock().unwrap()).into_owned()
    }

    /// At start, an Interface is often asked for again (its new key Secret, its Network's
    /// allocation) right after the operator wrote its status and before the watch brought
    /// that write into the cache. That is no problem, and the object is in the API: no
    /// warning, and nothing claiming otherwise. Only a cache that stays behind is warned
    /// about.
    #[tokio::test]
    async fn a_cache_a_moment_behind_our_own_write_is_no_warning_and_one_that_stays_behind_is() {
        let clock = Arc::new(TestClock::default());
        let ctx = context(clock.clone());
        let mut interface = crate::fixtures::interface("b-wg1-client", "b", &["10.0.0.1/24"]);
        interface.metadata.resource_version = Some("10".into());
        ctx.written
            .wrote(interface.metadata.uid.as_deref(), Some("12"));
        let interface = Arc::new(interface);

        let error = interface::reconcile(interface.clone(), ctx.clone())
            .await
            .expect_err("a copy older than our write is not planned from");
        let log = logged(|| {
            error_policy(interface.clone(), &error, ctx.clone());
        });
        assert!(!log.contains("WARN"), "a warning at once:\n{log}");
        assert!(!log.contains("no longer in the API"), "{log}");
        assert!(
            log.contains("resourceVersion 10") && log.contains("resourceVersion 12"),
            "the debug line says what is awaited:\n{log}"
        );

        // Still behind ten seconds later: now it is worth a warning.
        clock.advance(10);
        let error = interface::reconcile(interface.clone(), ctx.clone())
            .await
            .expect_err("still behind");
        let log = logged(|| {
            error_policy(interface.clone(), &error, ctx.clone());
        });
        assert!(log.contains("WARN"), "no warning for a stuck cache:\n{log}");
        assert!(!log.contains("no longer in the API"), "{log}");

        // Caught up: the next stale copy starts afresh, without a warning.
        ctx.succeeded("Interface/wg/b-wg1-client");
        ctx.written
            .wrote(interface.metadata.uid.as_deref(), Some("14"));
        let error = interface::reconcile(interface.clone(), ctx.clone())
            .await
            .expect_err("behind again");
        let log = logged(|| {
            error_policy(interface.clone(), &error, ctx.clone());
        });
        assert!(!log.contains("WARN"), "{log}");
    }

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
