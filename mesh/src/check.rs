//! Checks of expanded Meshes, for `kwire lint` and the Mesh's `TopologyValid` condition.
//! Each finding says what is wrong and what to do.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::api::TopologyType;
use crate::expand::{Expansion, Role};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Works, but probably not as meant.
    Warning,
    /// Some members cannot reach others, or objects would clash.
    Error,
}

/// One problem with one or more Meshes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Finding {
    #[error(
        "Mesh {mesh}: spec.nodeSelector selects no node: label the nodes to link, or fix the selector"
    )]
    NoMembers { mesh: String },

    #[error(
        "Mesh {mesh}: no member matches spec.topology.hubAndSpoke.hubSelector, so the {spokes} spokes reach nothing: label at least one selected node as a hub"
    )]
    NoHub { mesh: String, spokes: usize },

    #[error(
        "Mesh {mesh}: location {location} ({members} members) has no member that can be its gateway{why}, so it is cut off from the other locations: {fix}"
    )]
    NoGateway {
        mesh: String,
        location: String,
        members: usize,
        why: &'static str,
        fix: &'static str,
    },

    #[error(
        "Mesh {mesh}: node {node} has no InternalIP or ExternalIP, so no member can reach it first (it can only answer peers it contacts itself): give the Node an address"
    )]
    NoAddress { mesh: String, node: String },

    #[error(
        "node {node}: Meshes {first} and {second} both want device {device}: set a different spec.device.deviceName in one of them"
    )]
    DeviceClash {
        node: String,
        device: String,
        first: String,
        second: String,
    },

    #[error(
        "node {node}: {first} and {second} both listen on UDP port {port}: set a different spec.device.listenPort in the Mesh"
    )]
    PortClash {
        node: String,
        port: u16,
        first: String,
        second: String,
    },

    #[error(
        "{first_owner} announces {first} and {second_owner} announces {second}, which overlap: members would route part of this traffic to either one; announce disjoint prefixes"
    )]
    OverlappingPrefixes {
        first_owner: String,
        first: IpNet,
        second_owner: String,
        second: IpNet,
    },

    #[error(
        "Mesh {mesh}: the Interface {name} it generates for node {node} would replace an existing {kind} of that name that the Mesh does not own: rename or delete that object"
    )]
    NameTaken {
        mesh: String,
        node: String,
        name: String,
        kind: String,
    },

    #[error(
        "Meshes {first_mesh} and {second_mesh} generate the same Interface name {name} (for nodes {first_node} and {second_node}): rename one of the Meshes"
    )]
    NameCollision {
        name: String,
        first_mesh: String,
        first_node: String,
        second_mesh: String,
        second_node: String,
    },
}

impl Finding {
    pub fn severity(&self) -> Severity {
        match self {
            Finding::NoMembers { .. } | Finding::NoAddress { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// The reason of the `TopologyValid` condition when this is the first finding.
    pub fn reason(&self) -> &'static str {
        match self {
            Finding::NoMembers { .. } => "NoMembers",
            Finding::NoHub { .. } => "NoHub",
            Finding::NoGateway { .. } => "NoGateway",
            Finding::NoAddress { .. } => "NoAddress",
            Finding::DeviceClash { .. } => "DeviceClash",
            Finding::PortClash { .. } => "PortClash",
            Finding::OverlappingPrefixes { .. } => "OverlappingPrefixes",
            Finding::NameTaken { .. } => "NameTaken",
            Finding::NameCollision { .. } => "NameCollision",
        }
    }
}

/// Problems of one Mesh on its own: no members, no hub, a location without a possible
/// gateway (only when there are several locations), members without an address, members'
/// announced prefixes that overlap each other or the mesh's networks (`network_cidrs`, when
/// known).
pub fn check_mesh(expansion: &Expansion, network_cidrs: &[IpNet]) -> Vec<Finding> {
    let mesh = &expansion.mesh;
    let mut out = Vec::new();
    if expansion.members.is_empty() {
        out.push(Finding::NoMembers { mesh: mesh.clone() });
        return out;
    }
    if expansion.topology == TopologyType::HubAndSpoke
        && !expansion.members.iter().any(|m| m.role == Role::Hub)
    {
        out.push(Finding::NoHub {
            mesh: mesh.clone(),
            spokes: expansion.members.len(),
        });
    }
    if expansion.locations.len() > 1 {
        for l in expansion.locations.iter().filter(|l| l.gateway.is_none()) {
            out.push(Finding::NoGateway {
                mesh: mesh.clone(),
                location: l.name.clone(),
                members: l.members.len(),
                why: if l.eligible == 0 {
                    " (none matches spec.topology.locations.gatewaySelector and has an address of the type spec.topology.locations.gatewayAddress)"
                } else {
                    ""
                },
                fix: "give one of its Nodes an address of the gateway address type (or change spec.topology.locations.gatewayAddress), and make sure spec.topology.locations.gatewaySelector selects it",
            });
        }
    }
    for m in expansion.members.iter().filter(|m| m.endpoint.is_none()) {
        out.push(Finding::NoAddress {
            mesh: mesh.clone(),
            node: m.node.clone(),
        });
    }
    let mut owned: Vec<(String, IpNet)> = Vec::new();
    for cidr in network_cidrs {
        owned.push((format!("Mesh {mesh} (its network)"), cidr.trunc()));
    }
    for m in &expansion.members {
        for p in &m.announced {
            owned.push((format!("node {} in Mesh {mesh}", m.node), *p));
        }
    }
    overlaps(&owned, &mut out);
    out
}

/// A WireGuard device that is not part of the Meshes checked (a hand-written Interface).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherDevice {
    /// How a finding names it, e.g. `Interface b-wg0-server`.
    pub owner: String,
    pub node: String,
    pub device: String,
    pub listen_port: u16,
}

/// Problems between Meshes, and between Meshes and other devices: two devices on one node
/// with the same name or port, two Meshes generating the same Interface name, and prefixes
/// announced in two Meshes that share a node (that node would route them both ways).
pub fn check_meshes(expansions: &[&Expansion], others: &[OtherDevice]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut by_node: BTreeMap<&str, Vec<OtherDevice>> = BTreeMap::new();
    for o in others {
        by_node.entry(o.node.as_str()).or_default().push(o.clone());
    }
    for e in expansions {
        for m in &e.members {
            by_node
                .entry(m.node.as_str())
                .or_default()
                .push(OtherDevice {
                    owner: format!("Mesh {}", e.mesh),
                    node: m.node.clone(),
                    device: e.device.device_name.to_string(),
                    listen_port: e.device.listen_port,
                });
        }
    }
    for (node, devices) in &by_node {
        for (i, a) in devices.iter().enumerate() {
            for b in &devices[i + 1..] {
                if a.device == b.device {
                    out.push(Finding::DeviceClash {
                        node: node.to_string(),
                        device: a.device.clone(),
                        first: a.owner.clone(),
                        second: b.owner.clone(),
                    });
                }
                if a.listen_port == b.listen_port {
                    out.push(Finding::PortClash {
                        node: node.to_string(),
                        port: a.listen_port,
                        first: a.owner.clone(),
                        second: b.owner.clone(),
                    });
                }
            }
        }
    }

    let mut names: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for e in expansions {
        for m in &e.members {
            if let Some((mesh, node)) = names.insert(&m.name, (&e.mesh, &m.node))
                && (mesh, node) != (e.mesh.as_str(), m.node.as_str())
            {
                out.push(Finding::NameCollision {
                    name: m.name.clone(),
                    first_mesh: mesh.to_string(),
                    first_node: node.to_string(),
                    second_mesh: e.mesh.clone(),
                    second_node: m.node.clone(),
                });
            }
        }
    }

    for (i, a) in expansions.iter().enumerate() {
        for b in &expansions[i + 1..] {
            let shared: Vec<&str> = a
                .members
                .iter()
                .filter(|m| b.member_on(&m.node).is_some())
                .map(|m| m.node.as_str())
                .collect();
            let announced = |e: &'_ Expansion| -> Vec<(String, String, IpNet)> {
                e.members
                    .iter()
                    .flat_map(|m| {
                        let owner = format!("node {} in Mesh {}", m.node, e.mesh);
                        m.announced
                            .iter()
                            .map(move |p| (m.node.clone(), owner.clone(), *p))
                    })
                    .collect()
            };
            let (left, right) = (announced(a), announced(b));
            for (ln, lo, lp) in &left {
                for (rn, ro, rp) in &right {
                    // A node in both meshes routes the two prefixes through two devices,
                    // unless it announces them itself (a node announcing its own pod CIDR
                    // in both meshes routes neither).
                    let routed_twice = if ln == rn {
                        shared.iter().any(|n| n != ln)
                    } else {
                        !shared.is_empty()
                    };
                    if routed_twice && (lp.contains(rp) || rp.contains(lp)) {
                        out.push(Finding::OverlappingPrefixes {
                            first_owner: lo.clone(),
                            first: *lp,
                            second_owner: ro.clone(),
                            second: *rp,
                        });
                    }
                }
            }
        }
    }
    out
}

/// An object that exists under a name a Mesh may generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingObject {
    /// `Interface`, or another kind that shares the name space in a check.
    pub kind: String,
    pub name: String,
    /// The Mesh that controls it (its controller owner reference), if any.
    pub owner_mesh: Option<String>,
}

/// Generated names that are taken by objects this Mesh does not own: the operator must
/// never take over a user's object.
pub fn check_names(expansion: &Expansion, existing: &[ExistingObject]) -> Vec<Finding> {
    existing
        .iter()
        .filter(|o| o.owner_mesh.as_deref() != Some(expansion.mesh.as_str()))
        .filter_map(|o| {
            expansion.member(&o.name).map(|m| Finding::NameTaken {
                mesh: expansion.mesh.clone(),
                node: m.node.clone(),
                name: o.name.clone(),
                kind: o.kind.clone(),
            })
        })
        .collect()
}

fn overlaps(owned: &[(String, IpNet)], out: &mut Vec<Finding>) {
    for (i, (ao, a)) in owned.iter().enumerate() {
        for (bo, b) in &owned[i + 1..] {
            if ao != bo && (a.contains(b) || b.contains(a)) {
                out.push(Finding::OverlappingPrefixes {
                    first_owner: ao.clone(),
                    first: *a,
                    second_owner: bo.clone(),
                    second: *b,
                });
            }
        }
    }
}
