//! One end starts the first handshake.
//!
//! kwire configures both ends of a new link from the same Peer update, within milliseconds
//! of each other, and a peer entry created with a keepalive starts a handshake at once.
//! When the two initiations are in flight together they cross: each end answers the other's
//! and forgets its own, and WireGuard tries again only after 5 s. That happened in about
//! half of the runs of `kwire-e2e-bench` (the follow-up's restart, [`super::followup`],
//! then cost 100 ms each time).
//!
//! So of two ends, the one with the lower public key (the same rule the follow-up uses to
//! pick the end that restarts) creates its entry with its keepalive and starts at once; the
//! other creates the entry without a keepalive and sets it when its first handshake is
//! seen, or [`HOLD`] after creating it, whichever comes first. Should the starting end's
//! initiation have been lost (it was configured first, and its initiation reached the other
//! end before that end had the entry), the other end starts [`HOLD`] later, and the first
//! end, which has the entry by then, answers. A far end that is not kwire (an external peer)
//! only sees the keepalive [`HOLD`] late.
//!
//! [`Holds::apply`] is a pure rewrite of a plan; the reconciler keeps the [`Holds`] and the
//! clock. Entries restarted by the follow-up are not held (one end restarts).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::followup::PeerEntry;
use crate::model::{ObservedNode, PublicKey};
use crate::plan::{Plan, Step};

/// How long the end with the higher public key holds its keepalive on a new entry at most.
/// Far longer than a round trip in a cluster (so the other end's initiation, if it could
/// land, has landed), and short enough that a lost one costs little.
pub const HOLD: Duration = Duration::from_millis(20);

/// The entries whose keepalive is held, and since when.
#[derive(Debug, Default)]
pub struct Holds {
    since: BTreeMap<PeerEntry, Instant>,
}

impl Holds {
    /// Whether any keepalive is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }

    /// Rewrites `plan`, made at `now` against `before`: new entries of the higher-keyed end
    /// are created without their keepalive, and a held keepalive is not set until the
    /// entry's first handshake shows in `before` or [`HOLD`] has passed.
    pub fn apply(&mut self, mut plan: Plan, before: &ObservedNode, now: Instant) -> Plan {
        self.since.retain(|(device, peer), since| {
            let handshake = before
                .devices
                .get(device)
                .and_then(|d| d.wireguard.as_ref())
                .and_then(|w| w.peers.get(peer))
                .is_some_and(|p| p.stats.last_handshake.is_some());
            !handshake && now.saturating_duration_since(*since) < HOLD
        });
        // The key each device has after this plan.
        let mut own: BTreeMap<crate::model::IfaceName, PublicKey> = before
            .devices
            .iter()
            .filter_map(|(n, d)| Some((n.clone(), d.wireguard.as_ref()?.public_key?)))
            .collect();
        for step in &plan.steps {
            if let Step::SetPrivateKey { device, key } = step {
                own.insert(device.clone(), key.public_key());
            }
        }
        let mut held_now = Vec::new();
        for step in &mut plan.steps {
            let Step::UpsertPeer {
                device,
                peer,
                change,
            } = step
            else {
                continue;
            };
            let entry = (device.clone(), *peer);
            let with_keepalive = change.persistent_keepalive.is_some_and(|k| k != 0);
            if change.create && with_keepalive && own.get(device).is_some_and(|key| key > peer) {
                change.persistent_keepalive = None;
                held_now.push(entry);
            } else if with_keepalive && self.since.contains_key(&entry) {
                change.persistent_keepalive = None;
            }
        }
        plan.steps.retain(|s| match s {
            Step::UpsertPeer { change, .. } => !change.is_empty(),
            _ => true,
        });
        for entry in held_now {
            self.since.insert(entry, now);
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::fixtures::*;
    use crate::kernel_model;
    use crate::model::{DesiredDevice, DesiredNode, PeerConfig};
    use crate::plan::plan;

    /// A node whose wg0 has key `own` and one peer `other` with a keepalive of 25 s.
    fn node(own: u8, other: u8) -> DesiredNode {
        let mut device = DesiredDevice::test("a/x").with_address("10.1.0.1/24");
        device.private_key = sk(own);
        DesiredNode::default().with_device(
            "wg0",
            device.with_peer(
                pk_of(other),
                PeerConfig {
                    persistent_keepalive: Some(25),
                    ..peer(&["10.1.0.2/32"])
                },
            ),
        )
    }

    /// The public key of [`sk`]`(n)`, so that key order can be chosen.
    fn pk_of(n: u8) -> PublicKey {
        sk(n).public_key()
    }

    fn keepalive_of(plan: &Plan) -> Vec<Option<u16>> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::UpsertPeer { change, .. } => Some(change.persistent_keepalive),
                _ => None,
            })
            .collect()
    }

    /// Two keys, ordered: (lower, higher).
    fn ordered() -> (u8, u8) {
        if pk_of(1) < pk_of(2) { (1, 2) } else { (2, 1) }
    }

    #[test]
    fn the_lower_key_starts_at_once_and_the_higher_holds_its_keepalive() {
        let (low, high) = ordered();
        let t0 = Instant::now();
        // The lower end: unchanged.
        let mut holds = Holds::default();
        let empty = ObservedNode::default();
        let p = holds.apply(plan(&node(low, high), &empty), &empty, t0);
        assert_eq!(keepalive_of(&p), vec![Some(25)]);
        assert!(holds.is_empty());
        // The higher end: created without keepalive, held.
        let desired = node(high, low);
        let first = holds.apply(plan(&desired, &empty), &empty, t0);
        assert_eq!(keepalive_of(&first), vec![None]);
        assert!(!holds.is_empty());
        let mut state = ObservedNode::default();
        kernel_model::apply_steps(&mut state, &first.steps).unwrap();
        // Within the hold and no handshake: nothing to do (the keepalive step is dropped).
        let again = holds.apply(plan(&desired, &state), &state, t0 + HOLD / 2);
        assert!(again.steps.is_empty(), "{:?}", again.steps);
        // After the hold: the keepalive is set, which starts a handshake.
        let late = holds.apply(plan(&desired, &state), &state, t0 + HOLD);
        assert_eq!(keepalive_of(&late), vec![Some(25)]);
        assert!(holds.is_empty());
    }

    #[test]
    fn a_first_handshake_releases_the_keepalive_before_the_hold_ends() {
        let (low, high) = ordered();
        let t0 = Instant::now();
        let mut holds = Holds::default();
        let desired = node(high, low);
        let empty = ObservedNode::default();
        let first = holds.apply(plan(&desired, &empty), &empty, t0);
        let mut state = ObservedNode::default();
        kernel_model::apply_steps(&mut state, &first.steps).unwrap();
        state
            .devices
            .get_mut(&name("wg0"))
            .unwrap()
            .wireguard
            .as_mut()
            .unwrap()
            .peers
            .get_mut(&pk_of(low))
            .unwrap()
            .stats
            .last_handshake = Some(SystemTime::now());
        let p = holds.apply(
            plan(&desired, &state),
            &state,
            t0 + Duration::from_millis(1),
        );
        assert_eq!(keepalive_of(&p), vec![Some(25)]);
        assert!(holds.is_empty());
    }

    #[test]
    fn entries_without_keepalive_and_changes_to_existing_entries_are_not_held() {
        let (low, high) = ordered();
        let t0 = Instant::now();
        let mut holds = Holds::default();
        let mut desired = node(high, low);
        let empty = ObservedNode::default();
        // Without a keepalive nothing starts a handshake: nothing to hold.
        desired
            .devices
            .get_mut(&name("wg0"))
            .unwrap()
            .peers
            .get_mut(&pk_of(low))
            .unwrap()
            .persistent_keepalive = None;
        let p = holds.apply(plan(&desired, &empty), &empty, t0);
        assert_eq!(keepalive_of(&p), vec![None]);
        assert!(holds.is_empty());
        // An existing entry whose keepalive is turned on gets it at once.
        let mut state = ObservedNode::default();
        kernel_model::apply_steps(&mut state, &p.steps).unwrap();
        let on = node(high, low);
        let p = holds.apply(plan(&on, &state), &state, t0);
        assert_eq!(keepalive_of(&p), vec![Some(25)]);
    }
}
