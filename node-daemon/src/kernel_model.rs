//! The model of the kernel that the run loop's delta path replays: what each [`Step`]
//! does to the kernel, applied to an [`ObservedNode`].
//!
//! The delta path keeps "the kernel after the last apply" by replaying the applied steps
//! on the last observation here, instead of reading a 10k-peer device back
//! ([`crate::run`]). Tests use the same model: the fake dataplane of the unit tests is
//! this model plus counters and failure injection, and the property tests check that
//! applying a plan to the observed node yields the desired node.
//!
//! The model follows the kernel where it matters to planning: a new link is what
//! [`fresh_device`] says (down, unmarked, WireGuard's default MTU); deleting a link takes
//! its routes with it; an AllowedIPs prefix belongs to at most one peer of a device
//! (adding it to one peer takes it from another); a route removal carrying kwire's
//! protocol never removes a foreign route.
//!
//! Dependencies go one way: this module replays the plan's [`Step`]s, and the planner
//! knows nothing of it.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::model::{
    IfaceName, ObservedDevice, ObservedNode, ObservedRoute, ObservedWireguard, Ownership,
    PublicKey, RouteId,
};
use crate::ownership::ROUTE_PROTOCOL;
use crate::plan::{ForwardingScope, IpFamily, PeerChange, Step, fresh_device};

/// Why the model refused a step (the kernel would have returned an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("device {0} already exists")]
    DeviceExists(IfaceName),
    #[error("device {0} does not exist")]
    NoDevice(IfaceName),
    #[error("route {0} is held by a foreign route")]
    RouteExists(RouteId),
    #[error("device {0} has no peer {1}")]
    NoPeer(IfaceName, PublicKey),
}

/// Applies one step to the model.
pub fn apply_step(node: &mut ObservedNode, step: &Step) -> Result<(), ModelError> {
    match step {
        Step::CreateDevice { device: name, .. } => {
            if node.devices.contains_key(name) {
                return Err(ModelError::DeviceExists(name.clone()));
            }
            node.devices.insert(name.clone(), fresh_device());
        }
        Step::MarkDevice {
            device: name,
            owner,
        } => {
            let d = device(node, name)?;
            d.mark = Some(owner.clone());
            d.ownership = Ownership::Owned;
        }
        Step::SetPrivateKey { device: name, key } => {
            let wg = wg(device(node, name)?);
            wg.private_key = Some(key.clone());
            wg.public_key = Some(key.public_key());
        }
        Step::SetListenPort { device: name, port } => {
            wg(device(node, name)?).listen_port = Some(*port);
        }
        Step::UpsertPeer {
            device: name,
            peer,
            change,
        } => {
            let wg = wg(device(node, name)?);
            if let Some(ips) = &change.allowed_ips {
                for (key, other) in wg.peers.iter_mut() {
                    if key != peer {
                        other.config.allowed_ips.retain(|ip| !ips.contains(ip));
                    }
                }
            }
            upsert_fields(wg, peer, change);
        }
        Step::RemovePeer { device: name, peer } => {
            wg(device(node, name)?).peers.remove(peer);
        }
        // A handshake starts and the keepalive ends as `keepalive`; nothing else changes.
        // (On a real device a request for a peer that does not exist would create one; the
        // planner never asks for that.)
        Step::StartHandshake {
            device: name,
            peer,
            keepalive,
        } => match wg(device(node, name)?).peers.get_mut(peer) {
            Some(p) => p.config.persistent_keepalive = (*keepalive != 0).then_some(*keepalive),
            None => return Err(ModelError::NoPeer(name.clone(), *peer)),
        },
        Step::AddAddress {
            device: name,
            address,
        } => {
            device(node, name)?.addresses.insert(*address);
        }
        Step::RemoveAddress {
            device: name,
            address,
        } => {
            device(node, name)?.addresses.remove(address);
        }
        Step::SetMtu { device: name, mtu } => device(node, name)?.mtu = *mtu,
        Step::SetUp { device: name } => device(node, name)?.up = true,
        Step::AddRoute { id, route } | Step::ReplaceRoute { id, route } => {
            if !node.devices.contains_key(&route.device) {
                return Err(ModelError::NoDevice(route.device.clone()));
            }
            match node.routes.get(id) {
                Some(r) if r.ownership == Ownership::Foreign => {
                    return Err(ModelError::RouteExists(*id));
                }
                Some(_) if matches!(step, Step::AddRoute { .. }) => {
                    // EEXIST on one of our own routes counts as success.
                }
                _ => {
                    node.routes.insert(
                        *id,
                        ObservedRoute {
                            ownership: Ownership::Owned,
                            protocol: ROUTE_PROTOCOL,
                            device: Some(route.device.clone()),
                            via: route.via,
                        },
                    );
                }
            }
        }
        Step::RemoveRoute { id, .. } => {
            if node
                .routes
                .get(id)
                .is_some_and(|r| r.ownership == Ownership::Owned)
            {
                node.routes.remove(id);
            }
        }
        Step::EnableForwarding { scope, family } => {
            let knobs = match scope {
                ForwardingScope::All => &mut node.forwarding,
                ForwardingScope::Device(name) => &mut device(node, name)?.forwarding,
            };
            let knob = match family {
                IpFamily::V4 => &mut knobs.ipv4,
                IpFamily::V6 => &mut knobs.ipv6,
            };
            if knob.is_some() {
                *knob = Some(true);
            }
        }
        Step::DeleteDevice { device: name } => {
            node.devices.remove(name);
            node.routes.retain(|_, r| r.device.as_ref() != Some(name));
        }
    }
    Ok(())
}

/// The fields of an upsert, once the prefixes it claims were taken from other peers.
fn upsert_fields(wg: &mut ObservedWireguard, peer: &PublicKey, change: &PeerChange) {
    let p = wg.peers.entry(*peer).or_default();
    if let Some(e) = change.endpoint {
        p.config.endpoint = Some(e);
    }
    if let Some(ips) = &change.allowed_ips {
        p.config.allowed_ips = ips.clone();
    }
    if let Some(k) = change.persistent_keepalive {
        p.config.persistent_keepalive = (k != 0).then_some(k);
    }
    if let Some(psk) = &change.preshared_key {
        p.config.preshared_key = psk.clone();
    }
}

/// Applies `steps` in order with the same result as [`apply_step`] on each, but in
/// O(steps · log peers): which peers hold each AllowedIPs prefix is indexed once per
/// device instead of scanning every peer for every upsert (quadratic for the 10,000
/// upserts that set up a big device).
pub fn apply_steps(node: &mut ObservedNode, steps: &[Step]) -> Result<(), ModelError> {
    type Holders = BTreeMap<IpNet, BTreeSet<PublicKey>>;
    let mut index: BTreeMap<IfaceName, Holders> = BTreeMap::new();
    for step in steps {
        match step {
            Step::UpsertPeer {
                device: name,
                peer,
                change,
            } => {
                let wg = wg(device(node, name)?);
                if let Some(ips) = &change.allowed_ips {
                    let holders = index.entry(name.clone()).or_insert_with(|| {
                        let mut h = Holders::new();
                        for (key, p) in &wg.peers {
                            for ip in &p.config.allowed_ips {
                                h.entry(*ip).or_default().insert(*key);
                            }
                        }
                        h
                    });
                    if let Some(old) = wg.peers.get(peer) {
                        for ip in &old.config.allowed_ips {
                            if let Some(keys) = holders.get_mut(ip) {
                                keys.remove(peer);
                            }
                        }
                    }
                    for ip in ips {
                        let keys = holders.entry(*ip).or_default();
                        for other in std::mem::take(keys) {
                            if let Some(o) = wg.peers.get_mut(&other) {
                                o.config.allowed_ips.remove(ip);
                            }
                        }
                        keys.insert(*peer);
                    }
                }
                upsert_fields(wg, peer, change);
            }
            Step::RemovePeer { device: name, peer } => {
                if let (Some(holders), Some(old)) = (
                    index.get_mut(name),
                    node.devices
                        .get(name)
                        .and_then(|d| d.wireguard.as_ref())
                        .and_then(|w| w.peers.get(peer)),
                ) {
                    for ip in &old.config.allowed_ips {
                        if let Some(keys) = holders.get_mut(ip) {
                            keys.remove(peer);
                        }
                    }
                }
                apply_step(node, step)?;
            }
            Step::CreateDevice { device: name, .. } | Step::DeleteDevice { device: name } => {
                index.remove(name);
                apply_step(node, step)?;
            }
            _ => apply_step(node, step)?,
        }
    }
    Ok(())
}

fn device<'a>(
    node: &'a mut ObservedNode,
    name: &IfaceName,
) -> Result<&'a mut ObservedDevice, ModelError> {
    node.devices
        .get_mut(name)
        .ok_or_else(|| ModelError::NoDevice(name.clone()))
}

fn wg(d: &mut ObservedDevice) -> &mut ObservedWireguard {
    d.wireguard.get_or_insert_with(Default::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::model::{DesiredDevice, DesiredNode};

    fn upsert(peer: u8, ips: &[&str]) -> Step {
        Step::UpsertPeer {
            device: name("wg0"),
            peer: pk(peer),
            change: PeerChange {
                create: true,
                allowed_ips: Some(nets(ips)),
                ..PeerChange::default()
            },
        }
    }

    #[test]
    fn a_batch_moves_prefixes_between_peers_like_the_steps_one_by_one() {
        let desired = DesiredNode::default().with_device(
            "wg0",
            DesiredDevice::test("a/x")
                .with_peer(pk(2), peer(&["10.0.2.0/24", "10.9.0.0/16"]))
                .with_peer(pk(3), peer(&["10.0.3.0/24"])),
        );
        let start = converged(&desired);
        let steps = vec![
            upsert(4, &["10.9.0.0/16", "10.0.4.0/24"]),
            Step::RemovePeer {
                device: name("wg0"),
                peer: pk(3),
            },
            upsert(2, &["10.0.3.0/24"]),
            upsert(5, &["10.0.2.0/24", "10.0.4.0/24"]),
        ];
        let mut one_by_one = start.clone();
        for step in &steps {
            apply_step(&mut one_by_one, step).unwrap();
        }
        let mut at_once = start;
        apply_steps(&mut at_once, &steps).unwrap();
        assert_eq!(at_once, one_by_one);
        let peers = &at_once.devices[&name("wg0")]
            .wireguard
            .as_ref()
            .unwrap()
            .peers;
        assert_eq!(peers[&pk(2)].config.allowed_ips, nets(&["10.0.3.0/24"]));
        assert_eq!(peers[&pk(4)].config.allowed_ips, nets(&["10.9.0.0/16"]));
        assert_eq!(
            peers[&pk(5)].config.allowed_ips,
            nets(&["10.0.2.0/24", "10.0.4.0/24"])
        );
        assert!(!peers.contains_key(&pk(3)));
    }
}
