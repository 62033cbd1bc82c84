//! Conditions and status patches.
//!
//! The operator writes status only through server-side apply under the field manager
//! [`FIELD_MANAGER`], and only the fields and condition types it owns (see
//! `OPERATOR_CONDITIONS_*`); the node daemon owns the others under its own manager.
//!
//! Guarantees:
//! - `lastTransitionTime` changes only when a condition's `status` changes;
//! - the clock is injected ([`Clock`]), so plans are deterministic in tests;
//! - [`Normalize::without_timestamps`] lets callers skip a patch that would change
//!   nothing but timestamps.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use kwire_crds::v1alpha1::{
    InterfaceStatus, NetworkStatus, PeerStatus, RouteStatus, condition as types,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The field manager of every status patch the operator sends.
pub const FIELD_MANAGER: &str = "kwire-operator";

/// The Network's `Ready` condition. Networks have no node side, so the operator owns it
/// there (and only there: `Ready` on Interface and Peer belongs to the node daemon).
pub const NETWORK_READY: &str = types::READY;

/// A source of "now", injected so that plans are pure.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Time;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        Time(Timestamp::now())
    }
}

/// A clock stopped at one instant, for tests.
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub Timestamp);

#[cfg(test)]
impl Clock for FixedClock {
    fn now(&self) -> Time {
        Time(self.0)
    }
}

pub use kwire_mesh::condition::{DesiredCondition, Status};

/// The longest message the API server accepts in a condition.
const MAX_MESSAGE: usize = 32768;

fn bounded(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// Sets one condition in a list keyed by type: a new entry gets `now`; an existing
/// entry keeps its `lastTransitionTime` unless its status changes.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    desired: &DesiredCondition,
    generation: Option<i64>,
    now: &Time,
) {
    let transition = match conditions.iter().find(|c| c.type_ == desired.type_) {
        Some(old) if old.status == desired.status.as_str() => old.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: desired.type_.clone(),
        status: desired.status.as_str().to_string(),
        reason: desired.reason.clone(),
        message: bounded(&desired.message),
        observed_generation: generation,
        last_transition_time: transition,
    };
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(slot) => *slot = condition,
        None => conditions.push(condition),
    }
}

/// The conditions a writer sends: exactly `desired` (in that order), each keeping the
/// `lastTransitionTime` it had in `previous` when its status did not change. Conditions of
/// other writers in `previous` are not carried over: under server-side apply they stay
/// with their own manager.
pub fn merge_conditions(
    previous: &[Condition],
    desired: &[DesiredCondition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous
        .iter()
        .filter(|c| desired.iter().any(|d| d.type_ == c.type_))
        .cloned()
        .collect();
    for d in desired {
        set_condition(&mut out, d, generation, now);
    }
    out.sort_by_key(|c| desired.iter().position(|d| d.type_ == c.type_));
    out
}

/// The entries of `conditions` whose type is in `types`.
pub fn owned_conditions(conditions: &[Condition], types: &[&str]) -> Vec<Condition> {
    conditions
        .iter()
        .filter(|c| types.contains(&c.type_.as_str()))
        .cloned()
        .collect()
}

/// Two condition lists are the same if they hold the same entries by type, whatever
/// their order and `lastTransitionTime`.
pub fn conditions_eq_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            b.iter().any(|y| {
                x.type_ == y.type_
                    && x.status == y.status
                    && x.reason == y.reason
                    && x.message == y.message
                    && x.observed_generation == y.observed_generation
            })
        })
}

/// The epoch, standing in for every timestamp when statuses are compared.
fn epoch() -> Time {
    Time(Timestamp::UNIX_EPOCH)
}

/// The entries of `conditions` whose type is in `types`, sorted, with timestamps blanked:
/// equal lists mean a write would change nothing.
pub fn normalized_conditions(conditions: &[Condition], types: &[&str]) -> Vec<Condition> {
    normalized(conditions, types)
}

fn normalized(conditions: &[Condition], types: &[&str]) -> Vec<Condition> {
    let mut out = owned_conditions(conditions, types);
    for c in &mut out {
        c.last_transition_time = epoch();
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The operator's part of a status, with every timestamp blanked and conditions sorted,
/// so that `a.operator_view() == b.operator_view()` means a patch would change nothing.
pub trait Normalize: Sized {
    fn operator_view(&self) -> Self;
}

impl Normalize for InterfaceStatus {
    fn operator_view(&self) -> Self {
        InterfaceStatus {
            observed_generation: self.observed_generation,
            conditions: normalized(&self.conditions, OPERATOR_CONDITIONS_INTERFACE),
            public_key: self.public_key.clone(),
            public_key_prefix: self.public_key_prefix.clone(),
            private_key_secret: self.private_key_secret.clone(),
            addresses: self.addresses.clone(),
            endpoint: self.endpoint.clone(),
            device: None,
            mesh: None,
            key_rotation: self.key_rotation.clone(),
        }
    }
}

impl Normalize for NetworkStatus {
    fn operator_view(&self) -> Self {
        NetworkStatus {
            observed_generation: self.observed_generation,
            conditions: normalized(&self.conditions, OPERATOR_CONDITIONS_NETWORK),
            cidr: self.cidr.clone(),
            allocated: self.allocated,
            allocations: self.allocations.clone(),
        }
    }
}

impl Normalize for PeerStatus {
    fn operator_view(&self) -> Self {
        PeerStatus {
            observed_generation: self.observed_generation,
            conditions: normalized(&self.conditions, OPERATOR_CONDITIONS_PEER),
            remote_name: self.remote_name.clone(),
            resolved: self.resolved.clone(),
            ..PeerStatus::default()
        }
    }
}

impl Normalize for RouteStatus {
    fn operator_view(&self) -> Self {
        RouteStatus {
            observed_generation: self.observed_generation,
            conditions: normalized(&self.conditions, OPERATOR_CONDITIONS_ROUTE),
        }
    }
}

/// Condition types the operator owns on each kind.
pub const OPERATOR_CONDITIONS_INTERFACE: &[&str] = &[
    types::KEY_READY,
    types::ADDRESS_ALLOCATED,
    types::TOPOLOGY_VALID,
];
pub const OPERATOR_CONDITIONS_NETWORK: &[&str] = &[NETWORK_READY, types::CONFLICT];
pub const OPERATOR_CONDITIONS_PEER: &[&str] = &[
    types::RESOLVED,
    types::TOPOLOGY_VALID,
    types::ROTATION_PENDING,
];
pub const OPERATOR_CONDITIONS_ROUTE: &[&str] = &[types::TOPOLOGY_VALID];

/// Whether `desired` (the operator's part only) differs from what `current` holds,
/// ignoring timestamps.
pub fn needs_patch<S: Normalize + PartialEq>(current: Option<&S>, desired: &S) -> bool {
    match current {
        Some(current) => current.operator_view() != desired.operator_view(),
        None => true,
    }
}

/// The body of a server-side apply of `status` to an object of kind `K`.
pub fn status_apply_body<K>(status: &impl Serialize) -> serde_json::Value
where
    K: Resource<DynamicType = ()>,
{
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    })
}

/// Applies the operator's part of the status of `obj` (server-side apply, forced, on the
/// `status` subresource).
pub async fn apply_status<K>(api: &Api<K>, obj: &K, status: &impl Serialize) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(
        &obj.name_any(),
        &params,
        &Patch::Apply(status_apply_body::<K>(status)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use kwire_crds::v1alpha1::Interface;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn ready(status: Status, reason: &str) -> DesiredCondition {
        DesiredCondition::new(types::KEY_READY, status, reason, "m")
    }

    #[test]
    fn a_new_condition_gets_the_current_time() {
        let mut list = Vec::new();
        set_condition(
            &mut list,
            &ready(Status::True, "Generated"),
            Some(1),
            &at(10),
        );
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, at(10));
        assert_eq!(list[0].status, "True");
        assert_eq!(list[0].observed_generation, Some(1));
    }

    #[test]
    fn an_unchanged_status_keeps_its_transition_time_even_when_the_reason_changes() {
        let mut list = Vec::new();
        set_condition(
            &mut list,
            &ready(Status::True, "Generated"),
            Some(1),
            &at(10),
        );
        set_condition(
            &mut list,
            &ready(Status::True, "UserSupplied"),
            Some(2),
            &at(20),
        );
        assert_eq!(list[0].last_transition_time, at(10));
        assert_eq!(list[0].reason, "UserSupplied");
        assert_eq!(list[0].observed_generation, Some(2));
    }

    #[test]
    fn a_changed_status_moves_the_transition_time() {
        let mut list = Vec::new();
        set_condition(&mut list, &ready(Status::True, "Generated"), None, &at(10));
        set_condition(&mut list, &ready(Status::False, "Missing"), None, &at(20));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, at(20));
    }

    #[test]
    fn merging_drops_conditions_of_other_writers_and_keeps_the_desired_order() {
        let previous = vec![
            Condition {
                type_: types::READY.into(),
                status: "True".into(),
                reason: "Configured".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: at(1),
            },
            Condition {
                type_: types::TOPOLOGY_VALID.into(),
                status: "True".into(),
                reason: "Valid".into(),
                message: "m".into(),
                observed_generation: None,
                last_transition_time: at(2),
            },
        ];
        let desired = vec![
            ready(Status::True, "Generated"),
            DesiredCondition::ok(types::TOPOLOGY_VALID, "Valid", "m"),
        ];
        let merged = merge_conditions(&previous, &desired, None, &at(50));
        let kinds: Vec<_> = merged.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(kinds, [types::KEY_READY, types::TOPOLOGY_VALID]);
        assert_eq!(merged[0].last_transition_time, at(50));
        assert_eq!(merged[1].last_transition_time, at(2));
    }

    #[test]
    fn comparison_ignores_timestamps_and_order() {
        let a = merge_conditions(
            &[],
            &[
                ready(Status::True, "G"),
                DesiredCondition::ok(types::TOPOLOGY_VALID, "V", ""),
            ],
            None,
            &at(1),
        );
        let mut b = merge_conditions(
            &[],
            &[
                DesiredCondition::ok(types::TOPOLOGY_VALID, "V", ""),
                ready(Status::True, "G"),
            ],
            None,
            &at(99),
        );
        assert!(conditions_eq_ignoring_time(&a, &b));
        b[0].message = "other".into();
        assert!(!conditions_eq_ignoring_time(&a, &b));
    }

    #[test]
    fn a_status_differing_only_in_timestamps_and_node_fields_needs_no_patch() {
        let mut current = InterfaceStatus {
            conditions: merge_conditions(&[], &[ready(Status::True, "G")], Some(1), &at(1)),
            public_key: Some("k".into()),
            device: Some(Default::default()),
            ..Default::default()
        };
        current.conditions.push(Condition {
            type_: types::READY.into(),
            status: "False".into(),
            reason: "NodeSays".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: at(3),
        });
        let desired = InterfaceStatus {
            conditions: merge_conditions(&[], &[ready(Status::True, "G")], Some(1), &at(500)),
            public_key: Some("k".into()),
            ..Default::default()
        };
        assert!(!needs_patch(Some(&current), &desired));
        let changed = InterfaceStatus {
            public_key: Some("other".into()),
            ..desired.clone()
        };
        assert!(needs_patch(Some(&current), &changed));
        assert!(needs_patch(None, &desired));
    }

    #[test]
    fn the_apply_body_names_the_kind_and_carries_only_the_status() {
        let body = status_apply_body::<Interface>(&InterfaceStatus {
            endpoint: Some("192.0.2.1:51820".into()),
            ..Default::default()
        });
        assert_eq!(
            body,
            serde_json::json!({
                "apiVersion": "kwire.dev/v1alpha1",
                "kind": "Interface",
                "status": {"endpoint": "192.0.2.1:51820"}
            })
        );
    }

    #[test]
    fn long_messages_are_cut_to_what_the_api_server_accepts() {
        let long = "é".repeat(MAX_MESSAGE);
        let mut list = Vec::new();
        set_condition(
            &mut list,
            &DesiredCondition::ok("X", "R", long),
            None,
            &at(1),
        );
        assert!(list[0].message.len() <= MAX_MESSAGE);
        assert!(list[0].message.ends_with("..."));
    }
}
