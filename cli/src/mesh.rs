//! Meshes in files, for `kwire lint`, `plan` and `graph`: expanded over a node list with
//! `kwire_mesh::expand`, checked with `kwire_mesh::check`, and what they would generate
//! (one Interface per member, and each member's peers) worked out offline.
//!
//! This shows what a Mesh would create; it creates nothing. In a cluster the operator and
//! the node daemons act on the same expansion (decision 0010), keeping the gateways and
//! primary hubs they already elected.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt as _;
use kwire_crds::manifest::KwireObject;
use kwire_crds::v1alpha1::Interface;
use kwire_mesh::check::{self, ExistingObject, Finding, OtherDevice};
use kwire_mesh::generate::{member_interface_spec, member_labels};
use kwire_mesh::world::{World, ns_of};
use kwire_mesh::{Decisions, Expansion, Mesh, MeshNode, expand};
use serde_json::Value;

use crate::manifests::{Document, ReadError, read_documents};

/// Whether a document is a Mesh (`kwire.dev/v1alpha1`, kind `Mesh`).
pub fn is_mesh(document: &Document) -> bool {
    document.is_kwire() && document.kind() == Some("Mesh")
}

/// The Mesh schema with its CEL rules, built once.
fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(kwire_mesh::api::schema)
}

/// What the API server would say of a Mesh document once the kind is installed: its CEL
/// rules (as an update of `old` when given), then whether it fits the type.
pub fn validate(document: &Document, old: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> =
        match kube_cel::Validator::new().validate(schema(), &document.value, old) {
            Ok(()) => Vec::new(),
            Err(e) => e.into_vec().iter().map(ToString::to_string).collect(),
        };
    if let Err(e) = to_mesh(document) {
        out.push(e);
    }
    out
}

/// A document as a typed Mesh; the error says why it does not fit the type.
pub fn to_mesh(document: &Document) -> Result<Mesh, String> {
    serde_json::from_value(document.value.clone()).map_err(|e| e.to_string())
}

/// A node list file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeListError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(
        "{location}: {label} is not a v1 Node: a node list (--node-list) holds only Nodes, e.g. the output of kubectl get nodes -o yaml"
    )]
    NotANode { location: String, label: String },
    #[error("{location}: {label} does not read as a v1 Node: {message}")]
    Invalid {
        location: String,
        label: String,
        message: String,
    },
}

/// The Nodes of node list files: `kind: List` (as `kubectl get nodes -o yaml` prints),
/// multi-document YAML or JSON, each item a v1 Node.
pub fn read_nodes(paths: &[PathBuf]) -> Result<Vec<MeshNode>, NodeListError> {
    nodes_of_documents(&read_documents(paths)?)
}

/// The Nodes of a node list's documents (see [`read_nodes`]).
pub fn nodes_of_documents(documents: &[Document]) -> Result<Vec<MeshNode>, NodeListError> {
    documents
        .iter()
        .map(|d| {
            let is_node = d.kind() == Some("Node")
                && d.value.get("apiVersion").and_then(Value::as_str) == Some("v1");
            if !is_node {
                return Err(NodeListError::NotANode {
                    location: d.location(),
                    label: d.label(),
                });
            }
            serde_json::from_value::<Node>(d.value.clone())
                .map(|n| MeshNode::from_node(&n))
                .map_err(|e| NodeListError::Invalid {
                    location: d.location(),
                    label: d.label(),
                    message: e.to_string(),
                })
        })
        .collect()
}

/// The Node documents among manifests (the node list when `--node-list` is not given).
pub fn nodes_in_manifests(documents: &[Document]) -> Vec<MeshNode> {
    documents
        .iter()
        .filter(|d| d.kind() == Some("Node"))
        .filter_map(|d| serde_json::from_value::<Node>(d.value.clone()).ok())
        .map(|n| MeshNode::from_node(&n))
        .collect()
}

/// One Mesh of the files, expanded over the node list.
#[derive(Clone, Debug)]
pub struct Expanded {
    pub namespace: String,
    pub name: String,
    pub mesh: Mesh,
    pub expansion: Expansion,
}

/// A problem of one Mesh, as lint prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshProblem {
    pub namespace: String,
    /// The Mesh's name.
    pub mesh: String,
    pub reason: String,
    pub message: String,
}

/// The reason of a Mesh that cannot be expanded at all.
pub const EXPAND_FAILED: &str = "CannotExpand";
/// The reason of a Mesh checked without any node.
pub const NO_NODE_LIST: &str = "NoNodeList";

/// Expands every Mesh over `nodes` (no decisions recorded: as on a first apply). Meshes
/// that cannot be expanded come back as problems.
pub fn expand_all(meshes: &[Mesh], nodes: &[MeshNode]) -> (Vec<Expanded>, Vec<MeshProblem>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for m in meshes {
        let (namespace, name) = (ns_of(m), m.name_any());
        match expand(&name, &m.spec, nodes, &Decisions::default()) {
            Ok(expansion) => out.push(Expanded {
                namespace,
                name,
                mesh: m.clone(),
                expansion,
            }),
            Err(e) => problems.push(MeshProblem {
                namespace,
                mesh: name,
                reason: EXPAND_FAILED.into(),
                message: e.to_string(),
            }),
        }
    }
    (out, problems)
}

/// The CIDRs of a Mesh's networks that the files give (Networks in its namespace with
/// `spec.cidr`).
fn network_cidrs(e: &Expanded, objects: &[KwireObject]) -> Vec<IpNet> {
    e.expansion
        .device
        .networks
        .iter()
        .filter_map(|name| {
            objects.iter().find_map(|o| match o {
                KwireObject::Network(n)
                    if ns_of(n.as_ref()) == e.namespace && n.name_any() == *name =>
                {
                    n.spec.cidr.as_ref().and_then(|c| c.as_str().parse().ok())
                }
                _ => None,
            })
        })
        .collect()
}

/// The Mesh a finding of several Meshes is reported on: the second one it names (the
/// first usually has its own copy of the finding the other way round, or is a
/// hand-written object), else the first.
fn mesh_of(finding: &Finding) -> Option<String> {
    fn in_owner(owner: &str) -> Option<String> {
        let rest = &owner[owner.find("Mesh ")? + 5..];
        Some(rest.split(' ').next().unwrap_or(rest).to_string())
    }
    match finding {
        Finding::NoMembers { mesh }
        | Finding::NoHub { mesh, .. }
        | Finding::NoGateway { mesh, .. }
        | Finding::NoAddress { mesh, .. }
        | Finding::NameTaken { mesh, .. } => Some(mesh.clone()),
        Finding::NameCollision { second_mesh, .. } => Some(second_mesh.clone()),
        Finding::DeviceClash { first, second, .. } | Finding::PortClash { first, second, .. } => {
            in_owner(second).or_else(|| in_owner(first))
        }
        Finding::OverlappingPrefixes {
            first_owner,
            second_owner,
            ..
        } => in_owner(second_owner).or_else(|| in_owner(first_owner)),
    }
}

/// `kwire_mesh::check` over the Meshes of the files: each on its own (with its networks'
/// CIDRs when the files give them), between Meshes and the hand-written Interfaces (device
/// names, ports, announced prefixes) and the generated names against the Interfaces of the
/// files.
pub fn check_all(expanded: &[Expanded], objects: &[KwireObject]) -> Vec<MeshProblem> {
    let interfaces: Vec<&Interface> = objects
        .iter()
        .filter_map(|o| match o {
            KwireObject::Interface(i) => Some(i.as_ref()),
            _ => None,
        })
        .collect();
    let namespace_of: BTreeMap<&str, &str> = expanded
        .iter()
        .map(|e| (e.name.as_str(), e.namespace.as_str()))
        .collect();
    let mut out = Vec::new();
    let mut push = |namespace: &str, mesh: String, f: &Finding| {
        out.push(MeshProblem {
            namespace: namespace.to_string(),
            mesh,
            reason: f.reason().to_string(),
            message: f.to_string(),
        });
    };
    for e in expanded {
        let mut found = check::check_mesh(&e.expansion, &network_cidrs(e, objects));
        let existing: Vec<ExistingObject> = interfaces
            .iter()
            .filter(|i| ns_of(**i) == e.namespace)
            .map(|i| ExistingObject {
                kind: "Interface".into(),
                name: i.name_any(),
                owner_mesh: i
                    .owner_references()
                    .iter()
                    .find(|r| r.kind == "Mesh" && r.controller == Some(true))
                    .map(|r| r.name.clone()),
            })
            .collect();
        found.extend(check::check_names(&e.expansion, &existing));
        for f in &found {
            push(&e.namespace, e.name.clone(), f);
        }
    }
    let others: Vec<OtherDevice> = interfaces
        .iter()
        .map(|i| OtherDevice {
            owner: format!("Interface {}", i.name_any()),
            node: i.spec.node_name.to_string(),
            device: i.device_name(),
            listen_port: i.spec.listen_port,
        })
        .collect();
    let expansions: Vec<&Expansion> = expanded.iter().map(|e| &e.expansion).collect();
    for f in check::check_meshes(&expansions, &others) {
        let Some(mesh) = mesh_of(&f) else { continue };
        let namespace = namespace_of.get(mesh.as_str()).copied().unwrap_or_default();
        push(namespace, mesh, &f);
    }
    out
}

/// A member's generated Interface as the files would have it: name, namespace, labels and
/// spec (no owner reference: a Mesh read from a file has no uid).
pub fn member_interface(e: &Expanded, member: &kwire_mesh::Member) -> Interface {
    let mut i = Interface::new(&member.name, member_interface_spec(&e.expansion, member));
    i.metadata.namespace = Some(e.namespace.clone());
    i.metadata.labels = Some(member_labels(&e.expansion, member));
    i
}

/// One peer of a member, worked out offline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedPeer {
    pub member: String,
    pub node: String,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<IpNet>,
    pub keepalive: Option<u16>,
    pub standby: bool,
}

/// One member: its generated Interface, its predicted addresses, its peers and routes.
#[derive(Clone, Debug)]
pub struct PlannedMember {
    pub interface: Interface,
    pub role: &'static str,
    pub location: Option<String>,
    pub primary_hub: Option<String>,
    pub addresses: Vec<IpNet>,
    pub peers: Vec<PlannedPeer>,
    pub routes: Vec<IpNet>,
}

/// What one Mesh would generate.
#[derive(Clone, Debug)]
pub struct PlannedMesh {
    pub namespace: String,
    pub name: String,
    pub topology: String,
    pub device: String,
    pub listen_port: u16,
    pub members: Vec<PlannedMember>,
    pub notes: Vec<String>,
}

/// Every Mesh's members, addresses (predicted with the operator's allocator over the
/// Networks of the files, beside the hand-written Interfaces that share them) and peers.
pub fn plan_meshes(expanded: &[Expanded], objects: &[KwireObject]) -> Vec<PlannedMesh> {
    let generated: Vec<Vec<Interface>> = expanded
        .iter()
        .map(|e| {
            e.expansion
                .members
                .iter()
                .map(|m| member_interface(e, m))
                .collect()
        })
        .collect();
    let mut all = objects.to_vec();
    all.extend(
        generated
            .iter()
            .flatten()
            .map(|i| KwireObject::Interface(Box::new(i.clone()))),
    );
    let world = World::from_manifests(&all);
    expanded
        .iter()
        .zip(&generated)
        .map(|(e, interfaces)| {
            let addresses: BTreeMap<String, Vec<IpNet>> = interfaces
                .iter()
                .map(|i| (i.name_any(), world.addresses_or_predicted(i)))
                .collect();
            let hosts: BTreeMap<String, Vec<IpAddr>> = addresses
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().map(IpNet::addr).collect()))
                .collect();
            let cidrs = network_cidrs(e, objects);
            let mut notes = Vec::new();
            let known: Vec<&String> = e
                .expansion
                .device
                .networks
                .iter()
                .filter(|n| world.network(&e.namespace, n).is_some())
                .collect();
            if known.len() < e.expansion.device.networks.len() {
                notes.push(format!(
                    "Mesh {}: spec.networks names Networks the files do not hold, so members' addresses from them are not shown: add the Network manifests to -f",
                    e.name
                ));
            }
            let members = e
                .expansion
                .members
                .iter()
                .zip(interfaces)
                .map(|(m, i)| {
                    let links = e.expansion.links(&m.name).unwrap_or_default();
                    let peers = links
                        .iter()
                        .map(|l| PlannedPeer {
                            member: l.member.clone(),
                            node: l.node.clone(),
                            endpoint: l.endpoint.map(|s| s.to_string()),
                            allowed_ips: Expansion::allowed_ips(l, &hosts, &cidrs),
                            keepalive: l.persistent_keepalive,
                            standby: l.is_standby(),
                        })
                        .collect();
                    PlannedMember {
                        interface: i.clone(),
                        role: m.role.as_str(),
                        location: m.location.clone(),
                        primary_hub: m.primary_hub.clone(),
                        addresses: addresses.get(&m.name).cloned().unwrap_or_default(),
                        peers,
                        routes: e.expansion.routes(&links),
                    }
                })
                .collect();
            PlannedMesh {
                namespace: e.namespace.clone(),
                name: e.name.clone(),
                topology: format!("{:?}", e.expansion.topology),
                device: e.expansion.device.device_name.to_string(),
                listen_port: e.expansion.device.listen_port,
                members,
                notes,
            }
        })
        .collect()
}

/// One section per Mesh: each generated Interface with its node, role, addresses and
/// forwarding, then its peers (endpoint, allowed IPs, keepalive) and routes. Only the
/// members on `node`, when given.
pub fn render_plan(meshes: &[PlannedMesh], node: Option<&str>) -> String {
    let mut out = String::new();
    for (n, m) in meshes.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let shown: Vec<&PlannedMember> = m
            .members
            .iter()
            .filter(|p| node.is_none_or(|n| p.interface.spec.node_name.as_str() == n))
            .collect();
        let members = match m.members.len() {
            1 => "1 member".to_string(),
            k => format!("{k} members"),
        };
        out.push_str(&format!(
            "mesh {}/{} ({}, {members}, device {} port {}): would generate\n",
            m.namespace, m.name, m.topology, m.device, m.listen_port
        ));
        for p in shown {
            let i = &p.interface;
            let mut what = vec![format!("role {}", p.role)];
            if let Some(l) = &p.location {
                what.push(format!("location {l}"));
            }
            if let Some(h) = &p.primary_hub {
                what.push(format!("primary hub {h}"));
            }
            if p.addresses.is_empty() {
                what.push("no address".into());
            } else {
                what.push(format!(
                    "address {}",
                    p.addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if i.spec.forwarding == Some(true) {
                what.push("forwarding".into());
            }
            out.push_str(&format!(
                "  + Interface {} on node {}: {}\n",
                i.name_any(),
                i.spec.node_name,
                what.join(", ")
            ));
            for peer in &p.peers {
                let mut line = format!("      peer {} (node {})", peer.member, peer.node);
                if let Some(e) = &peer.endpoint {
                    line.push_str(&format!(" endpoint {e}"));
                }
                if peer.standby {
                    line.push_str(" standby (no allowed-ips)");
                } else if peer.allowed_ips.is_empty() {
                    line.push_str(" allowed-ips none yet");
                } else {
                    line.push_str(&format!(
                        " allowed-ips {}",
                        peer.allowed_ips
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    ));
                }
                if let Some(k) = peer.keepalive {
                    line.push_str(&format!(" keepalive {k}"));
                }
                out.push_str(&line);
                out.push('\n');
            }
            for r in &p.routes {
                out.push_str(&format!("      route {r} dev {}\n", m.device));
            }
        }
        for note in &m.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
    }
    out
}

/// The Meshes among documents that fit the type (lint reports the others).
pub fn meshes_of(documents: &[Document]) -> Vec<Mesh> {
    let mut out: Vec<(String, String, Mesh)> = Vec::new();
    for d in documents.iter().filter(|d| is_mesh(d)) {
        if let Ok(m) = to_mesh(d) {
            let key = (ns_of(&m), m.name_any());
            out.retain(|(ns, name, _)| (ns, name) != (&key.0, &key.1));
            out.push((key.0, key.1, m));
        }
    }
    out.into_iter().map(|(_, _, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::{default_namespace, parse_documents};

    const NODES: &str = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata: {name: a, labels: {mesh: 'yes', role: hub}}
  status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}
- apiVersion: v1
  kind: Node
  metadata: {name: b, labels: {mesh: 'yes'}}
  status: {addresses: [{type: InternalIP, address: 10.0.0.2}]}
- apiVersion: v1
  kind: Node
  metadata: {name: c, labels: {mesh: 'yes'}}
  status: {addresses: [{type: InternalIP, address: 10.0.0.3}]}
";

    const MESH: &str = "\
apiVersion: kwire.dev/v1alpha1
kind: Network
metadata: {name: overlay}
spec: {cidr: 10.50.0.0/24}
---
apiVersion: kwire.dev/v1alpha1
kind: Mesh
metadata: {name: overlay}
spec:
  nodeSelector: {matchLabels: {mesh: 'yes'}}
  networks: [{name: overlay}]
  device: {persistentKeepalive: 25}
";

    fn docs(text: &str) -> Vec<Document> {
        let mut d = parse_documents("m.yaml", text).unwrap();
        default_namespace(&mut d, "net");
        d
    }

    fn nodes() -> Vec<MeshNode> {
        nodes_of_documents(&parse_documents("nodes.yaml", NODES).unwrap()).unwrap()
    }

    fn objects(d: &[Document]) -> Vec<KwireObject> {
        crate::manifests::objects(d)
    }

    #[test]
    fn a_node_list_holds_only_nodes() {
        assert_eq!(nodes().len(), 3);
        let err = nodes_of_documents(
            &parse_documents(
                "n.yaml",
                "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
            )
            .unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "n.yaml#1: Secret/s is not a v1 Node: a node list (--node-list) holds only Nodes, e.g. the output of kubectl get nodes -o yaml"
        );
    }

    #[test]
    fn a_full_mesh_plans_one_interface_per_node_and_every_other_member_as_peer() {
        let d = docs(MESH);
        let (expanded, problems) = expand_all(&meshes_of(&d), &nodes());
        assert!(problems.is_empty(), "{problems:?}");
        assert!(check_all(&expanded, &objects(&d)).is_empty());
        let planned = plan_meshes(&expanded, &objects(&d));
        let text = render_plan(&planned, Some("b"));
        let a = kwire_mesh::names::member_name("overlay", "a");
        let b = kwire_mesh::names::member_name("overlay", "b");
        let c = kwire_mesh::names::member_name("overlay", "c");
        assert_eq!(
            text,
            format!(
                "mesh net/overlay (FullMesh, 3 members, device overlay port 51820): would generate
  + Interface {b} on node b: role member, address 10.50.0.2/24
      peer {a} (node a) endpoint 10.0.0.1:51820 allowed-ips 10.50.0.1/32 keepalive 25
      peer {c} (node c) endpoint 10.0.0.3:51820 allowed-ips 10.50.0.3/32 keepalive 25
"
            )
        );
    }

    #[test]
    fn a_hub_and_spoke_without_hub_is_a_problem_on_the_mesh() {
        let text = MESH.replace(
            "  networks:",
            "  topology: {type: HubAndSpoke, hubAndSpoke: {hubSelector: {matchLabels: {role: none}}}}\n  networks:",
        );
        let d = docs(&text);
        let (expanded, _) = expand_all(&meshes_of(&d), &nodes());
        let problems = check_all(&expanded, &objects(&d));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].mesh, "overlay");
        assert_eq!(problems[0].reason, "NoHub");
        assert!(
            problems[0]
                .message
                .contains("label at least one selected node as a hub")
        );
    }

    #[test]
    fn a_hand_written_interface_on_the_same_port_or_name_is_reported() {
        let b = kwire_mesh::names::member_name("overlay", "b");
        let text = format!(
            "{MESH}---\napiVersion: kwire.dev/v1alpha1\nkind: Interface\nmetadata: {{name: {b}}}\nspec: {{nodeName: a, deviceName: wg0, listenPort: 51820, addresses: [10.9.0.1/24]}}\n"
        );
        let d = docs(&text);
        let (expanded, _) = expand_all(&meshes_of(&d), &nodes());
        let reasons: Vec<String> = check_all(&expanded, &objects(&d))
            .into_iter()
            .map(|p| format!("{}: {}", p.mesh, p.reason))
            .collect();
        assert_eq!(reasons, ["overlay: NameTaken", "overlay: PortClash"]);
    }

    #[test]
    fn the_schema_rules_apply_to_mesh_documents() {
        let text = MESH.replace(
            "  networks:",
            "  topology: {type: HubAndSpoke}\n  networks:",
        );
        let d = docs(&text);
        let found = validate(&d[1], None);
        assert!(found.iter().any(|p| p.contains("hubAndSpoke")), "{found:?}");
    }
}
