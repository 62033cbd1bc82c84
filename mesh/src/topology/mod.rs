//! Topology checks: what only a view of all objects can see.
//!
//! [`check`] is pure and works on any [`World`], so the operator runs it against its
//! reflector stores and a CLI runs it against manifests. Every [`Finding`] names the object
//! that carries it (an Interface, Peer or Route, under the `TopologyValid` condition), a
//! CamelCase reason, and a message that names the objects involved and the fix.
//!
//! The checks:
//! - a Route whose destination no Peer of its Interface allows (WireGuard drops the packets);
//! - a Route whose `via` is outside every network of its Interface (the kernel rejects it);
//! - a relay whose middle Interface (or the Interface it leaves by) does not forward;
//! - two Peers putting the same prefix on one Interface (WireGuard keeps it on one only),
//!   and two Peers linking one Interface to the same remote;
//! - overlapping networks or equal addresses on one node, equal addresses in a namespace;
//! - two Interfaces on one node with the same listen port or device name;
//! - references to missing Interfaces, Networks and (when Nodes are known) Nodes.
//!
//! Addresses not yet allocated are predicted with the allocator, so manifests that use
//! Networks can be checked before anything is applied.

mod links;
mod nodes;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;

use ipnet::IpNet;
use kwire_crds::v1alpha1::condition::TOPOLOGY_VALID;

use crate::condition::DesiredCondition;
use crate::reasons;
use crate::world::World;

/// The kinds that carry a `TopologyValid` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Interface,
    Peer,
    Route,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Interface => "Interface",
            ObjectKind::Peer => "Peer",
            ObjectKind::Route => "Route",
        })
    }
}

/// One problem, attached to one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    /// Always `TopologyValid`.
    pub condition_type: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Finding {
    fn new(
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        reason: &'static str,
        message: String,
    ) -> Self {
        Finding {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            condition_type: TOPOLOGY_VALID,
            reason,
            message,
        }
    }

    /// Whether the finding is about this object.
    pub fn is_about(&self, kind: ObjectKind, namespace: &str, name: &str) -> bool {
        self.kind == kind && self.namespace == namespace && self.name == name
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = if self.namespace.is_empty() {
            String::new()
        } else {
            format!("{}/", self.namespace)
        };
        write!(
            f,
            "{} {ns}{}: {} {}: {}",
            self.kind, self.name, self.condition_type, self.reason, self.message
        )
    }
}

/// Every finding of the world, sorted and without duplicates.
pub fn check(world: &World) -> Vec<Finding> {
    let mut findings = Vec::new();
    nodes::check_references(world, &mut findings);
    nodes::check_nodes(world, &mut findings);
    nodes::check_duplicate_addresses(world, &mut findings);
    let sides = links::Sides::of(world);
    links::check_peer_entries(world, &sides, &mut findings);
    links::check_routes(world, &sides, &mut findings);
    links::check_relays(world, &sides, &mut findings);
    findings
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The `TopologyValid` condition of one object, from the findings about it.
pub fn condition_for(
    findings: &[Finding],
    kind: ObjectKind,
    namespace: &str,
    name: &str,
) -> DesiredCondition {
    let mine: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.is_about(kind, namespace, name))
        .collect();
    match mine.first() {
        None => DesiredCondition::ok(
            TOPOLOGY_VALID,
            reasons::TOPOLOGY_VALID,
            format!("no topology problem found around {kind} {name}"),
        ),
        Some(first) => DesiredCondition::failed(
            TOPOLOGY_VALID,
            first.reason,
            mine.iter()
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// Whether the union of `prefixes` covers all of `destination`.
pub fn covers(prefixes: &[IpNet], destination: IpNet) -> bool {
    if prefixes.iter().any(|p| p.contains(&destination)) {
        return true;
    }
    let inside: Vec<IpNet> = prefixes
        .iter()
        .filter(|p| destination.contains(*p))
        .copied()
        .collect();
    IpNet::aggregate(&inside) == vec![destination]
}

/// Whether two networks share an address.
pub fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn list(nets: &[IpNet]) -> String {
    if nets.is_empty() {
        return "nothing".to_string();
    }
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
