//! The pure heart of the node daemon: `plan(&DesiredNode, &ObservedNode) -> Plan`.
//!
//! Guarantees (each one is a unit or property test below):
//! - pure: no clock, no I/O, no environment; the same inputs give the same plan;
//! - deterministic order: route removals; then for each device no longer
//!   desired, its peers and the device; then each desired device in name order
//!   (create, mark, MTU, key, port, peer removals, peer upserts, address
//!   removals, address additions, up, forwarding); then node forwarding; then
//!   route additions and replacements (routes need their device up);
//! - nothing [`Ownership::Foreign`] is ever the target of a step: a desired
//!   device whose name a foreign link holds, or a desired route whose slot a
//!   foreign route holds, becomes a [`Conflict`] and gets no steps;
//! - per-key minimal deltas: peers are never replaced wholesale, a peer's
//!   AllowedIPs are replaced only when that peer's set changed, a new public
//!   key is a removal and an addition, MTU/up/port are set only when they differ;
//! - a device without a desired MTU gets the underlay's MTU minus WireGuard's overhead,
//!   decided from the observation ([`mtu`]); an unset port is left as the kernel chose it;
//! - a converged node plans to no steps at all.
//!
//! Assumptions: the desired state passed [`crate::validate::validate`] (in
//! particular, no two peers of one device share an AllowedIPs prefix, which the
//! kernel could not represent).

mod device;
mod display;
mod mtu;
mod routes;
mod step;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

pub use mtu::{
    MAX_DEFAULT_MTU, MIN_DEFAULT_MTU, MtuChoice, MtuSource, WIREGUARD_OVERHEAD, device_mtu,
};
pub use step::{
    Conflict, DEFAULT_WIREGUARD_MTU, ForwardingScope, IpFamily, PeerChange, RouteTarget, Step,
    fresh_device, keepalives_to_turn_off,
};

use crate::model::{DesiredNode, IfaceName, ObservedNode, Ownership, PublicKey};

/// The ordered steps that take the observed node to the desired one, plus the
/// desired objects that cannot be reconciled because something foreign is in
/// the way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub conflicts: Vec<Conflict>,
}

impl Plan {
    /// No steps to take (conflicts may remain).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Computes the steps from `observed` to `desired`. See the module docs.
pub fn plan(desired: &DesiredNode, observed: &ObservedNode) -> Plan {
    let mut plan = Plan::default();

    // Which desired devices can be worked on, and which must be rebuilt.
    let mut available = BTreeSet::new();
    let mut recreate = BTreeSet::new();
    for (name, want) in &desired.devices {
        match observed.devices.get(name) {
            Some(have) if have.ownership == Ownership::Foreign => {
                plan.conflicts.push(Conflict::InterfaceNameTaken {
                    device: name.clone(),
                    owner: want.owner.clone(),
                    kind: have.kind.clone(),
                });
            }
            Some(have) if have.wireguard.is_none() || !have.kind.is_wireguard_capable() => {
                recreate.insert(name.clone());
                available.insert(name.clone());
            }
            _ => {
                available.insert(name.clone());
            }
        }
    }

    let route_plan = routes::plan_routes(desired, observed, &available, &recreate);
    plan.steps.extend(route_plan.removals);
    plan.conflicts.extend(route_plan.conflicts);

    for (name, have) in observed.owned_devices() {
        if !desired.devices.contains_key(name) && !desired.retained.contains(name) {
            device::plan_delete(name, have, &mut plan.steps);
        }
    }

    for (name, want) in &desired.devices {
        if !available.contains(name) {
            continue;
        }
        let have = observed.devices.get(name);
        let mtu = device_mtu(want, observed).mtu;
        if recreate.contains(name) {
            plan.steps.push(Step::DeleteDevice {
                device: name.clone(),
            });
            device::plan_device(name, want, None, mtu, &mut plan.steps);
        } else {
            device::plan_device(name, want, have, mtu, &mut plan.steps);
        }
    }

    device::plan_node_forwarding(desired, observed, &mut plan.steps);
    plan.steps.extend(route_plan.additions);
    plan
}

/// Removes and re-adds each of `entries` (device, peer) with its desired configuration, in
/// that order, so that the device batches them into one request: the entry gets a fresh
/// handshake state and, with a keepalive, starts a handshake at once. This is the way out
/// of crossed first initiations (see [`crate::run::followup`]); entries that are not
/// desired are left alone.
pub fn restart_peers(desired: &DesiredNode, entries: &BTreeSet<(IfaceName, PublicKey)>) -> Plan {
    let mut plan = Plan::default();
    for (device, peer) in entries {
        let Some(config) = desired.devices.get(device).and_then(|d| d.peers.get(peer)) else {
            continue;
        };
        plan.steps.push(Step::RemovePeer {
            device: device.clone(),
            peer: *peer,
        });
        plan.steps.push(Step::UpsertPeer {
            device: device.clone(),
            peer: *peer,
            change: device::new_peer(config),
        });
    }
    plan
}

/// The names of the desired devices that a plan could not reconcile.
pub fn conflicted_devices(plan: &Plan) -> BTreeSet<IfaceName> {
    plan.conflicts
        .iter()
        .filter_map(|c| match c {
            Conflict::InterfaceNameTaken { device, .. } => Some(device.clone()),
            _ => None,
        })
        .collect()
}
