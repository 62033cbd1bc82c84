//! Looking again soon after a change.
//!
//! A new peer's first handshake, and the state of what an apply just created, are only
//! known from an observation, and the periodic resync may be half a minute away: `Connected`
//! would lag by up to the resync period. So after a reconcile that changed the kernel the
//! loop observes again (a full reconcile, which also verifies the apply) at growing
//! intervals ([`OFFSETS`]) until every peer the change added or updated has had a
//! handshake, or the schedule ends. WireGuard retries a lost handshake initiation after
//! 5 s (`REKEY_TIMEOUT`), so the schedule reaches just past that.
//!
//! Crossed first initiations: kwire configures both ends of a link at about the same time,
//! and with a keepalive each end starts a handshake as soon as it has the peer. When the two
//! initiations are in flight at once (the ends were configured less than a one-way delay
//! apart), each end answers the other's and forgets its own, both wait for a confirmation
//! that never comes, and WireGuard only tries again after `REKEY_TIMEOUT` (5 s): the link
//! comes up 5 s late. Each end then shows an initiation received and an initiation and a
//! response sent (the response to its own initiation is dropped unattributed: it answers an
//! initiation the end has replaced), and no handshake. An ordinary first handshake passes
//! through the same counts on the end whose own initiation was dropped, for one round trip,
//! until the first data packet confirms the session; so an entry still in that state
//! [`CROSSED_AFTER`] after it was configured, far longer than a round trip in a cluster, is
//! taken for crossed. The end with the lower public key (exactly one of the two) removes and
//! re-adds the entry ([`crate::plan::restart_peers`]), which starts one fresh initiation
//! that the other end answers. (Should a link's round trip be longer, the restart costs
//! one more round trip, nothing else.)
//!
//! Each look costs a full observation, which grows with the node (about 130 ms for a device
//! of 10,000 peers): a check never starts sooner than [`COST_FACTOR`] times the last full
//! reconcile's duration after the previous one ended, so that during the few seconds after a
//! change looking again takes at most about a fifth of the daemon's time however large the
//! node is (a small node, observed in a few milliseconds, keeps the schedule).
//!
//! Everything here is pure; the loop in [`super::run`] keeps one [`Followup`] and the
//! clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{IfaceName, ObservedNode, PublicKey};
use crate::plan::{Plan, Step};

/// When to look again, counted from the change.
pub const OFFSETS: [Duration; 10] = [
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
    Duration::from_millis(3200),
    Duration::from_millis(6400),
];

/// An entry is only taken for crossed initiations this long after it was configured.
pub const CROSSED_AFTER: Duration = Duration::from_millis(100);

/// A handshake initiation: what each end of crossed first initiations has received, at least.
pub const INITIATION_BYTES: u64 = 148;
/// An initiation and a response (92 bytes): what each end of crossed first initiations has
/// sent, at least.
pub const INITIATION_AND_RESPONSE_BYTES: u64 = INITIATION_BYTES + 92;

/// A check starts at least this many times the last full reconcile's duration after the
/// previous check ended.
pub const COST_FACTOR: u32 = 4;

/// A peer entry on a device.
pub type PeerEntry = (IfaceName, PublicKey);

/// The peer entries a plan adds or changes, or starts a handshake with.
pub fn upserted_peers(plan: &Plan) -> BTreeSet<PeerEntry> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::UpsertPeer { device, peer, .. } | Step::StartHandshake { device, peer, .. } => {
                Some((device.clone(), *peer))
            }
            _ => None,
        })
        .collect()
}

/// The peer entries a plan creates: upserts of a peer that `before` (the state the plan was
/// made against) does not have, or onto a device the plan (re)creates. Statistics observed
/// before such an entry existed belong to an earlier entry with the same key (a Peer deleted
/// and created again), never to this one.
pub fn added_peers(plan: &Plan, before: &ObservedNode) -> BTreeSet<PeerEntry> {
    let mut created: BTreeSet<&IfaceName> = BTreeSet::new();
    let mut out = BTreeSet::new();
    for step in &plan.steps {
        match step {
            Step::CreateDevice { device, .. } => {
                created.insert(device);
            }
            Step::UpsertPeer { device, peer, .. } => {
                let existed = !created.contains(device)
                    && before
                        .devices
                        .get(device)
                        .and_then(|d| d.wireguard.as_ref())
                        .is_some_and(|w| w.peers.contains_key(peer));
                if !existed {
                    out.insert((device.clone(), *peer));
                }
            }
            _ => {}
        }
    }
    out
}

/// The checks after a change (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followup {
    /// When the last change was applied; [`OFFSETS`] count from here.
    since: Instant,
    /// The index in [`OFFSETS`] of the next check.
    next: usize,
    /// Peers whose first handshake has not been observed yet, and when each was configured.
    awaited: BTreeMap<PeerEntry, Instant>,
    /// Entries restarted after crossed initiations (once each).
    restarted: BTreeSet<PeerEntry>,
}

impl Followup {
    /// After a reconcile at `now` that applied `plan`.
    pub fn after(plan: &Plan, now: Instant) -> Self {
        let mut f = Self {
            since: now,
            next: 0,
            awaited: BTreeMap::new(),
            restarted: BTreeSet::new(),
        };
        f.changed(plan, now);
        f
    }

    /// Another change at `now`: the schedule starts again, for its peers too.
    pub fn changed(&mut self, plan: &Plan, now: Instant) {
        self.since = now;
        self.next = 0;
        self.awaited
            .extend(upserted_peers(plan).into_iter().map(|e| (e, now)));
    }

    /// An observation (taken before any step of the reconcile that made it): peers that
    /// have had a handshake, or that are gone, are no longer awaited.
    pub fn observed(&mut self, observed: &ObservedNode) {
        self.awaited.retain(|(device, key), _| {
            observed
                .devices
                .get(device)
                .and_then(|d| d.wireguard.as_ref())
                .and_then(|w| w.peers.get(key))
                .is_some_and(|p| p.stats.last_handshake.is_none())
        });
    }

    /// A check was started.
    pub fn checking(&mut self) {
        self.next += 1;
    }

    pub fn awaited(&self) -> BTreeSet<PeerEntry> {
        self.awaited.keys().cloned().collect()
    }

    /// The awaited entries that `observed` (taken at `now`) shows stuck after crossed
    /// initiations, and that this end restarts: no handshake, an initiation received and an
    /// initiation and a response sent, [`CROSSED_AFTER`] since configured, this device's
    /// public key the lower, not restarted before.
    pub fn crossed(&self, observed: &ObservedNode, now: Instant) -> BTreeSet<PeerEntry> {
        self.awaited
            .iter()
            .filter(|(entry, since)| {
                now.saturating_duration_since(**since) >= CROSSED_AFTER
                    && !self.restarted.contains(*entry)
            })
            .filter(|((device, key), _)| {
                let Some(wg) = observed
                    .devices
                    .get(device)
                    .and_then(|d| d.wireguard.as_ref())
                else {
                    return false;
                };
                let lower = wg.public_key.is_some_and(|own| own < *key);
                wg.peers.get(key).is_some_and(|p| {
                    lower
                        && p.stats.last_handshake.is_none()
                        && p.stats.rx_bytes >= INITIATION_BYTES
                        && p.stats.tx_bytes >= INITIATION_AND_RESPONSE_BYTES
                })
            })
            .map(|(entry, _)| entry.clone())
            .collect()
    }

    /// `entries` were restarted at `now`: awaited afresh on a new schedule, never restarted
    /// again.
    pub fn restarting(&mut self, entries: &BTreeSet<PeerEntry>, now: Instant) {
        self.since = now;
        self.next = 0;
        for entry in entries {
            self.awaited.insert(entry.clone(), now);
            self.restarted.insert(entry.clone());
        }
    }

    /// When to check next, or `None` when done: after at least one check, once no peer is
    /// awaited; in any case at the end of the schedule. `last_full` is the end and duration
    /// of the last full reconcile.
    pub fn next_check(&self, last_full: Option<(Instant, Duration)>) -> Option<Instant> {
        if self.next >= OFFSETS.len() || (self.next > 0 && self.awaited.is_empty()) {
            return None;
        }
        let at = self.since + OFFSETS[self.next];
        Some(match last_full {
            Some((ended, took)) => at.max(ended + took * COST_FACTOR),
            None => at,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::fixtures::*;
    use crate::kernel_model;
    use crate::model::{DesiredDevice, DesiredNode, ObservedPeer, PeerStats};
    use crate::plan::plan;

    fn with_peers(peers: &[u8]) -> DesiredNode {
        let mut device = DesiredDevice::test("a/x").with_address("10.1.0.1/24");
        for p in peers {
            device = device.with_peer(pk(*p), peer(&[&format!("10.1.0.{p}/32")]));
        }
        DesiredNode::default().with_device("wg0", device)
    }

    fn handshake(node: &mut ObservedNode, p: u8) {
        node.devices
            .get_mut(&name("wg0"))
            .unwrap()
            .wireguard
            .as_mut()
            .unwrap()
            .peers
            .get_mut(&pk(p))
            .unwrap()
            .stats = PeerStats {
            last_handshake: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            ..PeerStats::default()
        };
    }

    #[test]
    fn a_new_peer_is_added_and_a_changed_one_only_upserted() {
        let before = converged(&with_peers(&[2]));
        let mut want = with_peers(&[2, 3]);
        want.devices
            .get_mut(&name("wg0"))
            .unwrap()
            .peers
            .get_mut(&pk(2))
            .unwrap()
            .persistent_keepalive = Some(25);
        let p = plan(&want, &before);
        let entry = |n| (name("wg0"), pk(n));
        assert_eq!(upserted_peers(&p), [entry(2), entry(3)].into());
        assert_eq!(added_peers(&p, &before), [entry(3)].into());
    }

    #[test]
    fn every_peer_of_a_created_device_is_added() {
        let p = plan(&with_peers(&[2, 3]), &ObservedNode::default());
        assert_eq!(added_peers(&p, &ObservedNode::default()).len(), 2);
        // Recreated (its WireGuard configuration is unreachable): the old statistics are gone.
        let mut broken = converged(&with_peers(&[2, 3]));
        let stale_peers = broken.devices[&name("wg0")]
            .wireguard
            .as_ref()
            .unwrap()
            .peers
            .clone();
        assert_eq!(stale_peers.len(), 2);
        broken.devices.get_mut(&name("wg0")).unwrap().wireguard = None;
        let p = plan(&with_peers(&[2, 3]), &broken);
        assert!(
            p.steps
                .iter()
                .any(|s| matches!(s, Step::CreateDevice { .. }))
        );
        assert_eq!(added_peers(&p, &broken).len(), 2);
    }

    #[test]
    fn checks_follow_the_schedule_until_every_new_peer_has_shaken_hands() {
        let t0 = Instant::now();
        let before = converged(&with_peers(&[]));
        let p = plan(&with_peers(&[2, 3]), &before);
        let mut f = Followup::after(&p, t0);
        assert_eq!(f.next_check(None), Some(t0 + OFFSETS[0]));
        let mut seen = before.clone();
        kernel_model::apply_steps(&mut seen, &p.steps).unwrap();
        f.checking();
        f.observed(&seen);
        assert_eq!(f.awaited().len(), 2);
        assert_eq!(f.next_check(None), Some(t0 + OFFSETS[1]));
        handshake(&mut seen, 2);
        f.checking();
        f.observed(&seen);
        assert_eq!(f.awaited(), [(name("wg0"), pk(3))].into());
        handshake(&mut seen, 3);
        f.checking();
        f.observed(&seen);
        assert_eq!(f.next_check(None), None, "every new peer has shaken hands");
    }

    #[test]
    fn a_change_without_peers_is_looked_at_once() {
        let mut want = with_peers(&[]);
        let before = converged(&want);
        want.devices
            .get_mut(&name("wg0"))
            .unwrap()
            .addresses
            .insert(net("10.1.0.9/24"));
        let t0 = Instant::now();
        let mut f = Followup::after(&plan(&want, &before), t0);
        assert!(f.next_check(None).is_some());
        f.checking();
        assert_eq!(f.next_check(None), None);
    }

    #[test]
    fn a_peer_that_never_shakes_hands_is_given_up_at_the_end_of_the_schedule() {
        let t0 = Instant::now();
        let before = converged(&with_peers(&[]));
        let p = plan(&with_peers(&[2]), &before);
        let mut seen = before.clone();
        kernel_model::apply_steps(&mut seen, &p.steps).unwrap();
        let mut f = Followup::after(&p, t0);
        let mut checks = Vec::new();
        while let Some(at) = f.next_check(None) {
            checks.push(at - t0);
            f.checking();
            f.observed(&seen);
        }
        assert_eq!(checks, OFFSETS.to_vec());
    }

    #[test]
    fn a_peer_removed_meanwhile_is_no_longer_awaited() {
        let before = converged(&with_peers(&[]));
        let p = plan(&with_peers(&[2]), &before);
        let mut f = Followup::after(&p, Instant::now());
        f.checking();
        f.observed(&before);
        assert!(f.awaited().is_empty());
    }

    #[test]
    fn another_change_restarts_the_schedule_and_adds_its_peers() {
        let t0 = Instant::now();
        let before = converged(&with_peers(&[]));
        let mut f = Followup::after(&plan(&with_peers(&[2]), &before), t0);
        for _ in 0..4 {
            f.checking();
        }
        let t1 = t0 + Duration::from_secs(1);
        let mut middle = before.clone();
        middle
            .devices
            .get_mut(&name("wg0"))
            .unwrap()
            .wireguard
            .as_mut()
            .unwrap()
            .peers
            .insert(pk(2), ObservedPeer::default());
        f.changed(&plan(&with_peers(&[2, 3]), &middle), t1);
        assert_eq!(f.next_check(None), Some(t1 + OFFSETS[0]));
        assert_eq!(f.awaited().len(), 2);
    }

    #[test]
    fn an_expensive_observation_spaces_the_checks_out() {
        let t0 = Instant::now();
        let p = plan(&with_peers(&[2]), &ObservedNode::default());
        let f = Followup::after(&p, t0);
        let took = Duration::from_millis(130);
        assert_eq!(
            f.next_check(Some((t0, took))),
            Some(t0 + took * COST_FACTOR)
        );
        // A cheap one does not delay the schedule.
        assert_eq!(
            f.next_check(Some((t0, Duration::from_micros(100)))),
            Some(t0 + OFFSETS[0])
        );
    }
}

#[cfg(test)]
mod crossed_tests {
    use super::*;
    use crate::fixtures::*;
    use crate::kernel_model;
    use crate::model::{DesiredDevice, DesiredNode, PeerStats};
    use crate::plan::plan;

    /// A node whose wg0 has just got peer `p`, and the followup of that change at `t0`.
    fn after_adding(p: PublicKey, t0: Instant) -> (ObservedNode, Followup) {
        let want = |peers: &[PublicKey]| {
            let mut d = DesiredDevice::test("a/x").with_address("10.1.0.1/24");
            for key in peers {
                d = d.with_peer(*key, peer(&["10.1.0.2/32"]));
            }
            DesiredNode::default().with_device("wg0", d)
        };
        let before = converged(&want(&[]));
        let change = plan(&want(&[p]), &before);
        let mut after = before;
        kernel_model::apply_steps(&mut after, &change.steps).unwrap();
        (after, Followup::after(&change, t0))
    }

    fn set_stats(node: &mut ObservedNode, p: PublicKey, rx: u64, tx: u64) {
        node.devices
            .get_mut(&name("wg0"))
            .unwrap()
            .wireguard
            .as_mut()
            .unwrap()
            .peers
            .get_mut(&p)
            .unwrap()
            .stats = PeerStats {
            last_handshake: None,
            rx_bytes: rx,
            tx_bytes: tx,
        };
    }

    /// A peer key above (`true`) or below this test device's own public key.
    fn key_beside_own(above: bool) -> PublicKey {
        let own = sk(1).public_key();
        (0..=255u8)
            .map(pk)
            .find(|k| (*k > own) == above && *k != own)
            .unwrap()
    }

    #[test]
    fn crossed_initiations_are_restarted_by_the_end_with_the_lower_key_once() {
        let t0 = Instant::now();
        let higher = key_beside_own(true);
        let (mut seen, mut f) = after_adding(higher, t0);
        // What wireguard-go shows on both ends.
        set_stats(&mut seen, higher, 148, 240);
        let entry = (name("wg0"), higher);
        assert!(
            f.crossed(&seen, t0 + CROSSED_AFTER / 2).is_empty(),
            "a normal exchange may still be completing"
        );
        let later = t0 + CROSSED_AFTER;
        assert_eq!(f.crossed(&seen, later), [entry.clone()].into());
        f.restarting(&[entry].into(), later);
        assert_eq!(f.next_check(None), Some(later + OFFSETS[0]));
        assert!(f.crossed(&seen, later + CROSSED_AFTER * 10).is_empty());
    }

    #[test]
    fn the_end_with_the_higher_key_waits_for_the_other_to_restart() {
        let t0 = Instant::now();
        let lower = key_beside_own(false);
        let (mut seen, f) = after_adding(lower, t0);
        set_stats(&mut seen, lower, 148, 240);
        assert!(f.crossed(&seen, t0 + CROSSED_AFTER * 2).is_empty());
    }

    #[test]
    fn an_ordinary_first_handshake_in_progress_is_not_crossed() {
        let t0 = Instant::now();
        let higher = key_beside_own(true);
        let (mut seen, f) = after_adding(higher, t0);
        // Initiator waiting for the response; responder waiting for the first data; nothing
        // yet.
        for (rx, tx) in [(0, 148), (148, 92), (0, 0)] {
            set_stats(&mut seen, higher, rx, tx);
            assert!(f.crossed(&seen, t0 + CROSSED_AFTER * 2).is_empty());
        }
    }
}
