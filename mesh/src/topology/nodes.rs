//! Checks of references, and of what shares a node or a namespace.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use kube_core::ResourceExt;
use kwire_crds::v1alpha1::Interface;

use super::{Finding, ObjectKind, overlaps};
use crate::reasons;
use crate::world::{NodeLookup, World, ns_of};

/// `name`, or `namespace/name` when the other side is in another namespace.
fn shown(i: &Interface, from_ns: &str) -> String {
    let ns = ns_of(i);
    if ns == from_ns {
        i.name_any()
    } else {
        format!("{ns}/{}", i.name_any())
    }
}

pub(super) fn check_references(world: &World, out: &mut Vec<Finding>) {
    for p in &world.peers {
        let (ns, name) = (ns_of(p.as_ref()), p.name_any());
        let local = p.spec.interface.as_str();
        if world.interface(&ns, local).is_none() {
            out.push(Finding::new(
                ObjectKind::Peer,
                &ns,
                &name,
                reasons::INTERFACE_NOT_FOUND,
                format!(
                    "Peer {name} belongs to Interface {local}, which does not exist: create Interface {local}, or recreate the Peer with an existing spec.interface"
                ),
            ));
        }
        if let Some(remote) = &p.spec.remote.interface
            && world.interface(&ns, remote.as_str()).is_none()
        {
            out.push(Finding::new(
                ObjectKind::Peer,
                &ns,
                &name,
                reasons::INTERFACE_NOT_FOUND,
                format!(
                    "Peer {name} links to Interface {remote}, which does not exist: create Interface {remote}, or fix spec.remote.interface"
                ),
            ));
        }
    }
    for r in &world.routes {
        let (ns, name) = (ns_of(r.as_ref()), r.name_any());
        let iface = r.spec.interface.as_str();
        if world.interface(&ns, iface).is_none() {
            out.push(Finding::new(
                ObjectKind::Route,
                &ns,
                &name,
                reasons::INTERFACE_NOT_FOUND,
                format!(
                    "Route {name} goes through Interface {iface}, which does not exist: create Interface {iface}, or recreate the Route with an existing spec.interface"
                ),
            ));
        }
    }
    for i in &world.interfaces {
        let (ns, name) = (ns_of(i.as_ref()), i.name_any());
        for n in i.spec.networks.iter().flatten() {
            if world.network(&ns, n.name.as_str()).is_none() {
                out.push(Finding::new(
                    ObjectKind::Interface,
                    &ns,
                    &name,
                    reasons::NETWORK_NOT_FOUND,
                    format!(
                        "Interface {name} takes its address from Network {}, which does not exist: create Network {}, or fix spec.networks",
                        n.name, n.name
                    ),
                ));
            }
        }
        let node = i.spec.node_name.as_str();
        if world.node(node) == NodeLookup::Missing {
            out.push(Finding::new(
                ObjectKind::Interface,
                &ns,
                &name,
                reasons::NODE_MISSING,
                format!(
                    "Interface {name} is on Node {node}, which does not exist: recreate the Interface with the name of an existing Node in spec.nodeName"
                ),
            ));
        }
    }
}

/// Interfaces that share a node: ports, device names, overlapping networks.
pub(super) fn check_nodes(world: &World, out: &mut Vec<Finding>) {
    let mut by_node: BTreeMap<&str, Vec<&Arc<Interface>>> = BTreeMap::new();
    for i in &world.interfaces {
        by_node
            .entry(i.spec.node_name.as_str())
            .or_default()
            .push(i);
    }
    for (node, interfaces) in by_node {
        for (n, a) in interfaces.iter().enumerate() {
            for b in &interfaces[n + 1..] {
                check_pair(world, node, a, b, out);
            }
        }
    }
}

fn push_both(
    out: &mut Vec<Finding>,
    a: &Interface,
    b: &Interface,
    reason: &'static str,
    message: impl Fn(&Interface, &Interface) -> String,
) {
    for (this, other) in [(a, b), (b, a)] {
        out.push(Finding::new(
            ObjectKind::Interface,
            &ns_of(this),
            &this.name_any(),
            reason,
            message(this, other),
        ));
    }
}

fn check_pair(world: &World, node: &str, a: &Interface, b: &Interface, out: &mut Vec<Finding>) {
    if a.spec.listen_port == b.spec.listen_port {
        let port = a.spec.listen_port;
        push_both(out, a, b, reasons::LISTEN_PORT_CONFLICT, |this, other| {
            format!(
                "Interfaces {} and {} on node {node} both listen on UDP port {port}, so only one device can come up: give one of them another spec.listenPort",
                this.name_any(),
                shown(other, &ns_of(this))
            )
        });
    }
    if a.device_name() == b.device_name() {
        let device = a.device_name();
        push_both(out, a, b, reasons::DEVICE_NAME_CONFLICT, |this, other| {
            format!(
                "Interfaces {} and {} on node {node} both name their device {device}, so they would configure one device: set another spec.deviceName on one of them",
                this.name_any(),
                shown(other, &ns_of(this))
            )
        });
    }
    let same_ns = ns_of(a) == ns_of(b);
    for x in world.addresses_or_predicted(a) {
        for y in world.addresses_or_predicted(b) {
            if x.addr() == y.addr() {
                // Equal addresses in one namespace are reported by the namespace check.
                if !same_ns {
                    push_both(out, a, b, reasons::DUPLICATE_ADDRESS, |this, other| {
                        format!(
                            "Interfaces {} and {} on node {node} both use address {}: change the address of one of them",
                            this.name_any(),
                            shown(other, &ns_of(this)),
                            x.addr()
                        )
                    });
                }
            } else if overlaps(x.trunc(), y.trunc()) {
                for (this, mine, other, theirs) in [(a, x, b, y), (b, y, a, x)] {
                    out.push(Finding::new(
                        ObjectKind::Interface,
                        &ns_of(this),
                        &this.name_any(),
                        reasons::OVERLAPPING_ADDRESSES,
                        format!(
                            "Interfaces {} ({mine}) and {} ({theirs}) on node {node} have overlapping networks, so the kernel cannot tell which device a packet for {} belongs to: put them in separate networks",
                            this.name_any(),
                            shown(other, &ns_of(this)),
                            if mine.prefix_len() >= theirs.prefix_len() { mine.trunc() } else { theirs.trunc() },
                        ),
                    ));
                }
            }
        }
    }
}

/// Two Interfaces of one namespace with the same address, wherever they are.
pub(super) fn check_duplicate_addresses(world: &World, out: &mut Vec<Finding>) {
    let mut holders: BTreeMap<(String, IpAddr), Vec<&Arc<Interface>>> = BTreeMap::new();
    for i in &world.interfaces {
        for a in world.addresses_or_predicted(i) {
            holders
                .entry((ns_of(i.as_ref()), a.addr()))
                .or_default()
                .push(i);
        }
    }
    for ((ns, addr), interfaces) in holders {
        if interfaces.len() < 2 {
            continue;
        }
        let names: Vec<String> = interfaces.iter().map(|i| i.name_any()).collect();
        for i in &interfaces {
            let me = i.name_any();
            let others: Vec<&str> = names
                .iter()
                .filter(|n| **n != me)
                .map(String::as_str)
                .collect();
            out.push(Finding::new(
                ObjectKind::Interface,
                &ns,
                &me,
                reasons::DUPLICATE_ADDRESS,
                format!(
                    "Interface {me} uses address {addr}, which Interface {} also uses: give each Interface its own address (or let a Network allocate them)",
                    others.join(", ")
                ),
            ));
        }
    }
}
