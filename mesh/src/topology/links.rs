//! Checks of what the peer entries on each device allow: Routes, relays, overlaps.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;
use kube_core::ResourceExt;
use kwire_crds::v1alpha1::Interface;

use super::{Finding, ObjectKind, covers, list, overlaps};
use crate::reasons;
use crate::resolve::allowed_ips;
use crate::world::{World, ns_of};

/// One peer entry as configured on one device.
pub(super) struct Entry<'a> {
    pub peer: String,
    /// The Peer field that adds prefixes on this side.
    pub field: &'static str,
    /// The device at the other end (`None` for an external peer).
    pub remote: Option<&'a Arc<Interface>>,
    /// The other end, for messages and for telling duplicates apart.
    pub remote_label: String,
    pub allowed: Vec<IpNet>,
}

/// The peer entries of every device, by (namespace, Interface name).
pub(super) struct Sides<'a> {
    by_interface: BTreeMap<(String, String), Vec<Entry<'a>>>,
}

fn extra(list: &Option<Vec<kwire_crds::names::IpPrefix>>) -> Vec<IpNet> {
    list.iter().flatten().filter_map(|p| p.net().ok()).collect()
}

impl<'a> Sides<'a> {
    pub fn of(world: &'a World) -> Self {
        let mut by_interface: BTreeMap<(String, String), Vec<Entry<'a>>> = BTreeMap::new();
        for p in &world.peers {
            let ns = ns_of(p.as_ref());
            let Some(local) = world.interface(&ns, p.spec.interface.as_str()) else {
                continue;
            };
            let remote = p
                .spec
                .remote
                .interface
                .as_ref()
                .and_then(|r| world.interface(&ns, r.as_str()));
            if let Some(key) = &p.spec.remote.public_key {
                by_interface
                    .entry((ns.clone(), local.name_any()))
                    .or_default()
                    .push(Entry {
                        peer: p.name_any(),
                        field: "spec.allowedIPs",
                        remote: None,
                        remote_label: format!("external peer {}", key.prefix()),
                        allowed: allowed_ips(&[], &extra(&p.spec.allowed_ips)),
                    });
                continue;
            }
            let Some(remote) = remote else { continue };
            if remote.name_any() == local.name_any() {
                continue;
            }
            by_interface
                .entry((ns.clone(), local.name_any()))
                .or_default()
                .push(Entry {
                    peer: p.name_any(),
                    field: "spec.allowedIPs",
                    remote: Some(remote),
                    remote_label: format!("Interface {}", remote.name_any()),
                    allowed: allowed_ips(
                        &world.addresses_or_predicted(remote),
                        &extra(&p.spec.allowed_ips),
                    ),
                });
            by_interface
                .entry((ns.clone(), remote.name_any()))
                .or_default()
                .push(Entry {
                    peer: p.name_any(),
                    field: "spec.remoteAllowedIPs",
                    remote: Some(local),
                    remote_label: format!("Interface {}", local.name_any()),
                    allowed: allowed_ips(
                        &world.addresses_or_predicted(local),
                        &extra(&p.spec.remote_allowed_ips),
                    ),
                });
        }
        Sides { by_interface }
    }

    pub fn on(&self, namespace: &str, interface: &str) -> &[Entry<'a>] {
        self.by_interface
            .get(&(namespace.to_string(), interface.to_string()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

fn peer_finding(ns: &str, peer: &str, reason: &'static str, message: String) -> Finding {
    Finding::new(ObjectKind::Peer, ns, peer, reason, message)
}

/// Same prefix from two Peers on one device; two Peers to the same remote.
pub(super) fn check_peer_entries(world: &World, sides: &Sides<'_>, out: &mut Vec<Finding>) {
    for i in &world.interfaces {
        let (ns, name) = (ns_of(i.as_ref()), i.name_any());
        let entries = sides.on(&ns, &name);
        let mut by_prefix: BTreeMap<IpNet, Vec<&str>> = BTreeMap::new();
        let mut by_remote: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for e in entries {
            for p in &e.allowed {
                by_prefix.entry(*p).or_default().push(&e.peer);
            }
            by_remote.entry(&e.remote_label).or_default().push(&e.peer);
        }
        for (prefix, mut peers) in by_prefix {
            peers.sort_unstable();
            peers.dedup();
            if peers.len() < 2 {
                continue;
            }
            for p in &peers {
                out.push(peer_finding(
                    &ns,
                    p,
                    reasons::OVERLAPPING_ALLOWED_IPS,
                    format!(
                        "Peers {} all put {prefix} in the AllowedIPs of Interface {name}: WireGuard keeps a prefix on one peer only and silently moves it to the one configured last, so traffic for {prefix} goes to an arbitrary peer: keep {prefix} in one of them",
                        peers.join(", ")
                    ),
                ));
            }
        }
        for (remote, mut peers) in by_remote {
            peers.sort_unstable();
            peers.dedup();
            if peers.len() < 2 {
                continue;
            }
            for p in &peers {
                out.push(peer_finding(
                    &ns,
                    p,
                    reasons::DUPLICATE_PEER,
                    format!(
                        "Peers {} all link Interface {name} to {remote}: a device has one entry per public key, so they overwrite each other: delete all but one",
                        peers.join(", ")
                    ),
                ));
            }
        }
    }
}

/// Interfaces of the namespace whose addresses fall in `destination`, for messages.
fn targets(world: &World, ns: &str, destination: IpNet) -> String {
    let mut names: Vec<String> = world
        .interfaces
        .iter()
        .filter(|i| ns_of(i.as_ref()) == ns)
        .filter(|i| {
            world
                .addresses_or_predicted(i)
                .iter()
                .any(|a| destination.contains(&a.addr()))
        })
        .map(|i| format!("Interface {} on node {}", i.name_any(), i.spec.node_name))
        .collect();
    names.sort();
    if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    }
}

/// Whether the remote device's node can deliver or forward towards `destination`.
fn leads_to(world: &World, sides: &Sides<'_>, remote: &Interface, destination: IpNet) -> bool {
    world
        .interfaces_on_node(remote.spec.node_name.as_str())
        .any(|i| {
            world
                .addresses_or_predicted(i)
                .iter()
                .any(|a| overlaps(a.trunc(), destination))
                || sides
                    .on(&ns_of(i.as_ref()), &i.name_any())
                    .iter()
                    .any(|e| e.allowed.iter().any(|p| overlaps(*p, destination)))
        })
}

pub(super) fn check_routes(world: &World, sides: &Sides<'_>, out: &mut Vec<Finding>) {
    for r in &world.routes {
        let (ns, name) = (ns_of(r.as_ref()), r.name_any());
        let Some(iface) = world.interface(&ns, r.spec.interface.as_str()) else {
            continue;
        };
        let Ok(destination) = r.spec.destination.net() else {
            continue;
        };
        let (dev, node) = (iface.name_any(), iface.spec.node_name.as_str());
        let via = r.spec.via.as_ref().and_then(|v| v.addr().ok());

        let own = world.addresses_or_predicted(iface);
        if let Some(via) = via
            && !own.is_empty()
            && !own.iter().any(|a| a.trunc().contains(&via))
        {
            let networks: Vec<IpNet> = own.iter().map(IpNet::trunc).collect();
            out.push(Finding::new(
                ObjectKind::Route,
                &ns,
                &name,
                reasons::VIA_NOT_ON_LINK,
                format!(
                    "Route {name} goes via {via}, which is outside every network of Interface {dev} ({}), so the kernel rejects the route: use a next hop inside {}, or leave spec.via unset",
                    list(&networks),
                    list(&networks)
                ),
            ));
        }

        let entries = sides.on(&ns, &dev);
        let all: Vec<IpNet> = entries.iter().flat_map(|e| e.allowed.clone()).collect();
        if covers(&all, destination) {
            continue;
        }
        let reach = targets(world, &ns, destination);
        let message = if entries.is_empty() {
            format!(
                "Route {name} sends {destination} into Interface {dev} on node {node}, but {dev} has no Peers, so WireGuard drops the packets and node {node} cannot reach {destination}{reach}: create a Peer on {dev} whose allowedIPs include {destination}"
            )
        } else {
            let allowed: Vec<String> = entries
                .iter()
                .map(|e| format!("Peer {} allows {}", e.peer, list(&e.allowed)))
                .collect();
            let suggestion = via
                .and_then(|v| {
                    entries
                        .iter()
                        .find(|e| e.allowed.iter().any(|p| p.contains(&v)))
                })
                .or_else(|| {
                    entries.iter().find(|e| {
                        e.remote
                            .is_some_and(|remote| leads_to(world, sides, remote, destination))
                    })
                })
                .or(if entries.len() == 1 {
                    entries.first()
                } else {
                    None
                });
            let fix = match suggestion {
                Some(e) => format!("add {destination} to {} of Peer {}", e.field, e.peer),
                None => format!(
                    "add {destination} to the allowedIPs of the Peer of {dev} that leads there"
                ),
            };
            format!(
                "Route {name} sends {destination} into Interface {dev} on node {node}, but no Peer of {dev} allows all of {destination} ({}), so WireGuard drops these packets and node {node} cannot reach {destination}{reach}: {fix}",
                allowed.join("; ")
            )
        };
        out.push(Finding::new(
            ObjectKind::Route,
            &ns,
            &name,
            reasons::ROUTE_NOT_COVERED,
            message,
        ));
    }
}

/// Whether `prefix` is only addresses of the node itself (delivered locally, not relayed).
fn local_to_node(world: &World, node: &str, prefix: IpNet) -> bool {
    prefix.prefix_len() == prefix.max_prefix_len()
        && world.interfaces_on_node(node).any(|i| {
            world
                .addresses_or_predicted(i)
                .iter()
                .any(|a| a.addr() == prefix.addr())
        })
}

/// A relay needs forwarding on the device traffic enters and on the one it leaves by.
pub(super) fn check_relays(world: &World, sides: &Sides<'_>, out: &mut Vec<Finding>) {
    for i in &world.interfaces {
        let (ns, dev) = (ns_of(i.as_ref()), i.name_any());
        for e in sides.on(&ns, &dev) {
            let Some(relay) = e.remote else { continue };
            let relay_node = relay.spec.node_name.as_str();
            for prefix in &e.allowed {
                if local_to_node(world, relay_node, *prefix) {
                    continue;
                }
                let reach = targets(world, &ns, *prefix);
                let mut off: Vec<(&Interface, String)> = Vec::new();
                if relay.spec.forwarding != Some(true) {
                    off.push((relay, String::new()));
                }
                for exit in world.interfaces_on_node(relay_node) {
                    if exit.name_any() == relay.name_any() && ns_of(exit.as_ref()) == ns {
                        continue;
                    }
                    let leads = world
                        .addresses_or_predicted(exit)
                        .iter()
                        .any(|a| overlaps(a.trunc(), *prefix))
                        || sides
                            .on(&ns_of(exit.as_ref()), &exit.name_any())
                            .iter()
                            .any(|x| x.allowed.iter().any(|p| overlaps(*p, *prefix)));
                    if leads && exit.spec.forwarding != Some(true) {
                        off.push((
                            exit,
                            format!(" and on out of Interface {}", exit.name_any()),
                        ));
                    }
                }
                for (stopped, path) in off {
                    let stopped_name = stopped.name_any();
                    out.push(peer_finding(
                        &ns,
                        &e.peer,
                        reasons::RELAY_NOT_FORWARDING,
                        format!(
                            "Peer {} sends {prefix} from Interface {dev} (node {}) through Interface {} on node {relay_node}{path}, but {stopped_name} has forwarding off, so node {relay_node} drops the relayed packets and {dev} cannot reach {prefix}{reach}: set spec.forwarding: true on Interface {stopped_name}",
                            e.peer,
                            i.spec.node_name,
                            relay.name_any(),
                        ),
                    ));
                    out.push(Finding::new(
                        ObjectKind::Interface,
                        &ns_of(stopped),
                        &stopped_name,
                        reasons::RELAY_NOT_FORWARDING,
                        format!(
                            "Interface {stopped_name} on node {relay_node} has forwarding off, but Peer {} relays {prefix} from Interface {dev} (node {}) through it, so those packets are dropped: set spec.forwarding: true on Interface {stopped_name}",
                            e.peer, i.spec.node_name,
                        ),
                    ));
                }
            }
        }
    }
}
