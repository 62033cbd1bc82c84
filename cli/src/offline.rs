//! What the operator would write into `status`, worked out from manifests alone.
//!
//! From files there is no operator and no cluster, so this fills in what it would resolve,
//! with its own pure functions where they are public:
//! - addresses: `spec.addresses`, else what the operator's allocator would hand out
//!   ([`World::addresses_or_predicted`]);
//! - public keys: `status.publicKey` when the manifests carry it (objects exported with
//!   `kubectl get -o yaml`), else a placeholder key, printed as `<public key of NAME>`
//!   ([`Placeholders::redact`]); private and pre-shared keys are never known here;
//! - endpoints: `spec.endpoint`, else the node's address when a `Node` manifest or
//!   `--node-ip` gives it ([`resolve::socket_string`]), else none (the peer waits to be
//!   contacted, and a note says so);
//! - each Peer's `status.resolved` with the operator's [`resolve::resolve_peer`], unless the
//!   manifests already carry it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::ResourceExt as _;
use kwire_crds::keys::PublicKey;
use kwire_crds::manifest::KwireObject;
use kwire_crds::v1alpha1::{Interface, InterfaceStatus, KeyMode, Network, Peer, PeerStatus, Route};
use kwire_mesh::reasons;
use kwire_mesh::resolve::{self, PskState};
use kwire_mesh::world::{NodeInfo, World, ns_of};

/// Placeholder keys and the label each one stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placeholders {
    entries: Vec<(String, String)>,
}

/// The first bytes of every placeholder key, so that one is never mistaken for a real key.
const MARK: [u8; 8] = *b"kwire-pl";

impl Placeholders {
    /// A new placeholder public key (base64) standing for `label`.
    pub fn add(&mut self, label: String) -> String {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&MARK);
        bytes[8..16].copy_from_slice(&(self.entries.len() as u64 + 1).to_be_bytes());
        let key = PublicKey::from_bytes(bytes).to_base64();
        self.entries.push((key.clone(), label));
        key
    }

    /// Whether `key` is one of the placeholders.
    pub fn is_placeholder(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    /// `text` with every placeholder key replaced by its label.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (key, label) in &self.entries {
            out = out.replace(key, label);
        }
        out
    }

    /// The label of `key` if it is a placeholder, else the key itself.
    pub fn show(&self, key: &str) -> String {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map_or_else(|| key.to_string(), |(_, label)| label.clone())
    }
}

/// The objects with the status the operator would give them.
#[derive(Clone, Debug, Default)]
pub struct Offline {
    pub networks: Vec<Network>,
    pub interfaces: Vec<Interface>,
    pub peers: Vec<Peer>,
    pub routes: Vec<Route>,
    pub keys: Placeholders,
    /// What could not be resolved from the files, one sentence each.
    pub notes: Vec<String>,
    /// Endpoints that need a node address the files do not give.
    pub missing_endpoints: BTreeSet<MissingEndpoint>,
}

/// An Interface whose endpoint is unknown offline, and the node whose peer entry needs it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MissingEndpoint {
    /// The node of the Interface, whose address is unknown.
    pub node: String,
    pub interface: String,
    /// The node that configures a peer entry towards it.
    pub needed_on: String,
}

impl Offline {
    /// The nodes that host an Interface, sorted.
    pub fn nodes(&self) -> Vec<String> {
        self.interfaces
            .iter()
            .map(|i| i.spec.node_name.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// What could not be resolved, for the given nodes' plans: the general notes, then one
    /// sentence per node whose address is needed by one of them.
    pub fn notes_for(&self, nodes: &[String]) -> Vec<String> {
        let mut by_node: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for m in &self.missing_endpoints {
            if nodes.contains(&m.needed_on) {
                by_node.entry(&m.node).or_default().insert(&m.interface);
            }
        }
        let mut out = self.notes.clone();
        for (node, interfaces) in by_node {
            out.push(format!(
                "the address of node {node} is not known offline, so peer entries towards {} get no endpoint (they wait to be contacted): add --node-ip {node}=ADDRESS, a Node manifest, or spec.endpoint",
                interfaces.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        out
    }

    pub fn interface(&self, namespace: &str, name: &str) -> Option<&Interface> {
        self.interfaces
            .iter()
            .find(|i| ns_of(*i) == namespace && i.name_any() == name)
    }
}

/// Where peers reach an Interface, if the files tell: `spec.endpoint`, else the node's
/// first address (as the operator's `interface_endpoint` does), else `None`.
pub fn endpoint_of(interface: &Interface, nodes: &BTreeMap<String, NodeInfo>) -> Option<String> {
    let port = interface.spec.listen_port;
    if let Some(endpoint) = &interface.spec.endpoint {
        return Some(endpoint.to_socket_string(port));
    }
    nodes
        .get(interface.spec.node_name.as_str())
        .and_then(NodeInfo::endpoint_host)
        .map(|host| resolve::socket_string(host, port))
}

fn psk_state(peer: &Peer) -> PskState {
    let Some(psk) = &peer.spec.preshared_key else {
        return PskState::None;
    };
    let secret = match &psk.secret_ref {
        Some(r) => r.name.to_string(),
        None => format!("{}-preshared-key", peer.name_any()),
    };
    PskState::Ready { secret }
}

/// Resolves the objects as the operator would (see the module docs).
pub fn resolve_offline(objects: &[KwireObject], nodes: &[NodeInfo]) -> Offline {
    let nodes: BTreeMap<String, NodeInfo> =
        nodes.iter().map(|n| (n.name.clone(), n.clone())).collect();
    let world = World::from_manifests(objects);
    let mut keys = Placeholders::default();
    let mut notes = Vec::new();

    let mut interfaces = Vec::new();
    for original in &world.interfaces {
        let mut i = Interface::clone(original);
        let name = i.name_any();
        let mut status = i.status.clone().unwrap_or_default();
        if status.addresses.is_empty() {
            status.addresses = world
                .addresses_or_predicted(original)
                .iter()
                .map(ToString::to_string)
                .collect();
        }
        if status.public_key.is_none() {
            status.public_key = status.device.as_ref().and_then(|d| d.public_key.clone());
        }
        if status.public_key.is_none() {
            status.public_key = Some(keys.add(format!("<public key of {name}>")));
        }
        if status.private_key_secret.is_none() && i.spec.key_mode != Some(KeyMode::NodeLocal) {
            status.private_key_secret = Some(match &i.spec.private_key_secret_ref {
                Some(r) => r.name.to_string(),
                None => format!("{name}-private-key"),
            });
        }
        if status.endpoint.is_none() {
            status.endpoint = endpoint_of(&i, &nodes);
        }
        i.status = Some(InterfaceStatus { ..status });
        interfaces.push(Arc::new(i));
    }

    let resolved_world = World::new(
        world.networks.clone(),
        interfaces.clone(),
        world.peers.clone(),
        world.routes.clone(),
        None,
    );
    let endpoints: BTreeMap<(String, String), Option<String>> = interfaces
        .iter()
        .map(|i| {
            let endpoint = i.status.as_ref().and_then(|s| s.endpoint.clone());
            ((ns_of(i.as_ref()), i.name_any()), endpoint)
        })
        .collect();
    let endpoint = |ns: &str, name: &str| endpoints.get(&(ns.to_string(), name.to_string()));

    let mut missing_endpoints = BTreeSet::new();
    let mut peers = Vec::new();
    for original in &world.peers {
        let mut p = Peer::clone(original);
        let ns = ns_of(&p);
        let known = p
            .status
            .as_ref()
            .and_then(|s| s.resolved.as_ref())
            .is_some();
        if !known {
            let resolution = resolve::resolve_peer(&p, &resolved_world, &psk_state(&p));
            let mut resolved = resolution.resolved;
            if let Some(remote) = &p.spec.remote.interface {
                if resolved.endpoint.is_none() {
                    resolved.endpoint = endpoint(&ns, remote.as_str()).cloned().flatten();
                }
                if resolved.local_endpoint.is_none() {
                    resolved.local_endpoint =
                        endpoint(&ns, p.spec.interface.as_str()).cloned().flatten();
                }
                let local_node = resolved.local_node.clone().unwrap_or_default();
                let remote_node = resolved.remote_node.clone().unwrap_or_default();
                for (side, node, ep, needed_on) in [
                    (
                        remote.as_str(),
                        &remote_node,
                        &resolved.endpoint,
                        &local_node,
                    ),
                    (
                        p.spec.interface.as_str(),
                        &local_node,
                        &resolved.local_endpoint,
                        &remote_node,
                    ),
                ] {
                    if ep.is_none() && !node.is_empty() {
                        missing_endpoints.insert(MissingEndpoint {
                            node: node.clone(),
                            interface: side.to_string(),
                            needed_on: needed_on.clone(),
                        });
                    }
                }
            }
            let condition = resolution.condition;
            if !condition.is_true() && condition.reason != reasons::NODE_ADDRESS_UNKNOWN {
                notes.push(format!(
                    "Peer {}: {}: {}",
                    p.name_any(),
                    condition.reason,
                    condition.message
                ));
            }
            p.status = Some(PeerStatus {
                remote_name: resolution.remote_name,
                resolved: Some(resolved),
                ..p.status.clone().unwrap_or_default()
            });
        }
        peers.push(p);
    }
    Offline {
        networks: world.networks.iter().map(|n| Network::clone(n)).collect(),
        interfaces: interfaces.iter().map(|i| Interface::clone(i)).collect(),
        peers,
        routes: world.routes.iter().map(|r| Route::clone(r)).collect(),
        keys,
        notes,
        missing_endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kwire_crds::manifest::parse_manifests;

    const RELAY: &str = include_str!("../../examples/seed/relay.yaml");
    const RELAY_NETWORKS: &str = include_str!("../../examples/seed/relay-networks.yaml");

    fn node(name: &str, ip: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            internal: vec![ip.into()],
            external: vec![],
        }
    }

    #[test]
    fn peers_of_the_relay_resolve_with_placeholder_keys_and_node_addresses() {
        let objects = parse_manifests(RELAY).unwrap();
        let off = resolve_offline(
            &objects,
            &[
                node("a", "10.211.55.10"),
                node("b", "10.211.55.11"),
                node("c", "10.211.55.12"),
            ],
        );
        assert!(off.notes_for(&off.nodes()).is_empty(), "{:?}", off.notes);
        let a_to_b = off.peers.iter().find(|p| p.name_any() == "a-to-b").unwrap();
        let r = a_to_b.status.as_ref().unwrap().resolved.as_ref().unwrap();
        assert_eq!(r.endpoint.as_deref(), Some("10.211.55.11:22222"));
        assert_eq!(r.local_endpoint.as_deref(), Some("10.211.55.10:11111"));
        assert_eq!(r.allowed_ips, ["10.1.0.2/32", "10.2.0.0/24"]);
        assert_eq!(r.remote_allowed_ips, ["10.1.0.1/32"]);
        assert_eq!(
            off.keys.show(r.public_key.as_deref().unwrap()),
            "<public key of b-wg0-server>"
        );
        assert!(
            off.keys
                .is_placeholder(r.local_public_key.as_deref().unwrap())
        );
    }

    #[test]
    fn without_node_addresses_a_note_says_which_endpoints_are_missing() {
        let off = resolve_offline(&parse_manifests(RELAY).unwrap(), &[]);
        assert!(off.notes.is_empty(), "{:?}", off.notes);
        let all = off.notes_for(&off.nodes());
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all[1].starts_with("the address of node b is not known offline"));
        assert!(all[1].contains("towards b-wg0-server, b-wg1-client"));
        // Node b's plan needs the addresses of a and c, not its own.
        let for_b = off.notes_for(&["b".to_string()]);
        assert_eq!(for_b.len(), 2, "{for_b:?}");
        assert!(for_b[0].contains("node a") && for_b[1].contains("node c"));
    }

    #[test]
    fn allocated_addresses_are_predicted_with_the_operators_allocator() {
        let off = resolve_offline(&parse_manifests(RELAY_NETWORKS).unwrap(), &[]);
        let addresses: Vec<(String, Vec<String>)> = off
            .interfaces
            .iter()
            .map(|i| (i.name_any(), i.status.clone().unwrap().addresses))
            .collect();
        assert!(
            addresses.contains(&("b-wg1-client".into(), vec!["10.2.0.1/24".into()])),
            "{addresses:?}"
        );
    }

    #[test]
    fn placeholders_are_replaced_by_their_labels() {
        let mut keys = Placeholders::default();
        let k = keys.add("<public key of x>".into());
        assert_eq!(k.len(), 44);
        assert_eq!(
            keys.redact(&format!("peer {k} added")),
            "peer <public key of x> added"
        );
        assert_eq!(keys.show("other"), "other");
    }
}
