//! Holding back a status that would only say "waiting for the operator's own next write".
//!
//! At a cold start every Peer is reconciled before its Interfaces have keys, and every
//! Interface before its Network has recorded its address. Writing those waiting states
//! (`RemoteKeyPending`, `AllocationPending`) costs one status write per object, which the
//! next write replaces a moment later: at 1,000 Interfaces and 5,000 Peers it was half of
//! all requests, and it slowed the writes that end the wait.
//!
//! So a plan says when its object waits only on work this operator is doing anyway (a key
//! it generates or reads, an address its Network controller records), and the controller
//! then skips the status write. The write that ends the wait triggers the object again
//! (see [`super::triggers`]). The hold is bounded: an object held for [`HOLD_LIMIT`] in this
//! process gets its waiting status written, so a wait that does not end (an operator
//! that cannot write, say) still explains itself. Only objects whose status never said
//! they were ready are held: a change to a working link is always written at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kwire_crds::v1alpha1::{Interface, KeyMode, condition};

use crate::reasons;

/// The longest an object's waiting status is held back.
pub const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// The condition `type_` of an Interface's status, if it has one.
fn interface_condition<'a>(
    interface: &'a Interface,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    interface
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the operator is still producing this Interface's public key: the key is the
/// operator's to make or read (not `NodeLocal`, which waits on the node daemon), and the
/// Interface's status does not yet say anything about it, or says it is being generated.
pub fn key_in_preparation(interface: &Interface) -> bool {
    if interface.spec.key_mode == Some(KeyMode::NodeLocal) {
        return false;
    }
    match interface_condition(interface, condition::KEY_READY) {
        None => true,
        Some(c) => c.reason == reasons::KEY_PENDING,
    }
}

/// Whether the operator is still producing this Interface's addresses: they are allocated
/// from Networks (not written in `spec.addresses`), and its status does not yet say
/// anything about them, or says an allocation is pending.
pub fn address_in_preparation(interface: &Interface) -> bool {
    if interface.spec.addresses.is_some() {
        return false;
    }
    match interface_condition(interface, condition::ADDRESS_ALLOCATED) {
        None => true,
        Some(c) => c.reason == reasons::ALLOCATION_PENDING,
    }
}

/// What to do with a status write a plan asked to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Skip the write; look again after this long at the latest.
    Wait(Duration),
    /// Write now: the hold's time is up.
    Write,
}

/// The decision for an object first held at `since` (`None`: not held before), at `now`.
pub fn decide(since: Option<Instant>, now: Instant, limit: Duration) -> Hold {
    let held = since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
    match limit.checked_sub(held) {
        Some(left) if !left.is_zero() => Hold::Wait(left),
        _ => Hold::Write,
    }
}

/// The objects whose waiting status is held, and since when (this process's clock).
#[derive(Debug, Default)]
pub struct Holds(Mutex<HashMap<(&'static str, String, String), Instant>>);

impl Holds {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(&'static str, String, String), Instant>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A plan of `kind` `ns/name` asks to hold its status: whether to.
    pub fn hold(&self, kind: &'static str, ns: &str, name: &str, now: Instant) -> Hold {
        let mut map = self.map();
        let key = (kind, ns.to_string(), name.to_string());
        let decision = decide(map.get(&key).copied(), now, HOLD_LIMIT);
        match decision {
            Hold::Wait(_) => {
                map.entry(key).or_insert(now);
            }
            Hold::Write => {
                map.remove(&key);
            }
        }
        decision
    }

    /// The object's plan no longer asks to hold (it is ready, or has a real problem).
    pub fn release(&self, kind: &'static str, ns: &str, name: &str) {
        let mut map = self.map();
        if !map.is_empty() {
            map.remove(&(kind, ns.to_string(), name.to_string()));
        }
    }

    /// How many objects are held now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use kwire_crds::v1alpha1::InterfaceStatus;
    use proptest::prelude::*;

    fn with_condition(mut i: Interface, type_: &str, status: &str, reason: &str) -> Interface {
        let status_ = i.status.get_or_insert_with(InterfaceStatus::default);
        status_
            .conditions
            .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                observed_generation: None,
            });
        i
    }

    fn generated() -> Interface {
        fixtures::interface_in("a", "n1", "net", None)
    }

    fn node_local() -> Interface {
        let mut i = fixtures::interface("a", "n1", &["10.0.0.1/24"]);
        i.spec.key_mode = Some(KeyMode::NodeLocal);
        i
    }

    #[test]
    fn an_interface_without_status_is_in_preparation_unless_its_key_or_address_comes_from_elsewhere()
     {
        let generated = generated();
        assert!(key_in_preparation(&generated));
        assert!(address_in_preparation(&generated));
        let local = node_local();
        assert!(
            !key_in_preparation(&local),
            "a NodeLocal key waits on the node daemon, not on the operator"
        );
        assert!(
            !address_in_preparation(&local),
            "addresses from spec need no allocation"
        );
    }

    #[test]
    fn only_pending_reasons_count_as_in_preparation() {
        let pending = with_condition(
            generated(),
            condition::KEY_READY,
            "False",
            reasons::KEY_PENDING,
        );
        assert!(key_in_preparation(&pending));
        let missing = with_condition(
            generated(),
            condition::KEY_READY,
            "False",
            reasons::KEY_SECRET_NOT_FOUND,
        );
        assert!(
            !key_in_preparation(&missing),
            "a missing Secret is a problem to show"
        );
        let allocating = with_condition(
            generated(),
            condition::ADDRESS_ALLOCATED,
            "False",
            reasons::ALLOCATION_PENDING,
        );
        assert!(address_in_preparation(&allocating));
        let no_network = with_condition(
            generated(),
            condition::ADDRESS_ALLOCATED,
            "False",
            reasons::NETWORK_NOT_FOUND,
        );
        assert!(!address_in_preparation(&no_network));
    }

    #[test]
    fn a_hold_ends_after_the_limit_and_starts_again_after_a_write() {
        let holds = Holds::default();
        let t0 = Instant::now();
        assert_eq!(holds.hold("Peer", "ns", "p", t0), Hold::Wait(HOLD_LIMIT));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            holds.hold("Peer", "ns", "p", later),
            Hold::Wait(HOLD_LIMIT - Duration::from_secs(10)),
            "the hold counts from the first time, not the last"
        );
        assert_eq!(holds.hold("Peer", "ns", "p", t0 + HOLD_LIMIT), Hold::Write);
        assert_eq!(holds.held(), 0, "a hold that ended is forgotten");
        holds.hold("Peer", "ns", "q", t0);
        holds.release("Peer", "ns", "q");
        assert_eq!(holds.held(), 0);
    }

    proptest! {
        #[test]
        fn a_hold_never_waits_past_the_limit(held_ms in 0u64..100_000, limit_ms in 0u64..60_000) {
            let t0 = Instant::now();
            let now = t0 + Duration::from_millis(held_ms);
            let limit = Duration::from_millis(limit_ms);
            match decide(Some(t0), now, limit) {
                Hold::Wait(left) => {
                    prop_assert!(!left.is_zero());
                    prop_assert_eq!(Duration::from_millis(held_ms) + left, limit);
                }
                Hold::Write => prop_assert!(held_ms >= limit_ms),
            }
        }
    }
}
