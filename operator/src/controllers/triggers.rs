//! Which objects to reconcile when something changes: a pure function of the change and
//! the world. The relations are the direct ones (references, shared nodes, shared
//! Interfaces); anything further is caught by the periodic resync.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kwire_crds::v1alpha1::{Interface, Network, Peer, Route};

use crate::world::{World, ns_of};

/// A namespace and a name.
pub type Key = (String, String);

/// The objects to reconcile, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Triggers {
    pub networks: BTreeSet<Key>,
    pub interfaces: BTreeSet<Key>,
    pub peers: BTreeSet<Key>,
    pub routes: BTreeSet<Key>,
}

/// A change seen on a watch (an object created, updated or deleted).
#[derive(Clone, Copy, Debug)]
pub enum Changed<'a> {
    Network(&'a Network),
    Interface(&'a Interface),
    Peer(&'a Peer),
    Route(&'a Route),
    /// A Node, by name.
    Node(&'a str),
    /// One of the operator's Secrets, by its metadata (its owner is what to reconcile).
    Secret(&'a ObjectMeta),
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

impl Triggers {
    fn interface_and_neighbours(&mut self, world: &World, interface: &Interface) {
        let ns = ns_of(interface);
        let name = interface.name_any();
        let node = interface.spec.node_name.as_str();
        self.interfaces.insert(key(&ns, &name));
        for n in interface.spec.networks.iter().flatten() {
            self.networks.insert(key(&ns, n.name.as_str()));
        }
        // Interfaces sharing the node: ports, device names, overlaps, relays.
        let on_node: BTreeSet<Key> = world
            .interfaces_on_node(node)
            .map(|i| key(&ns_of(i.as_ref()), &i.name_any()))
            .collect();
        self.interfaces.extend(on_node.iter().cloned());
        // Peers touching this Interface or its node, and what they link to.
        for p in &world.peers {
            let pns = ns_of(p.as_ref());
            let local = key(&pns, p.spec.interface.as_str());
            let remote = p
                .spec
                .remote
                .interface
                .as_ref()
                .map(|r| key(&pns, r.as_str()));
            let touches = |k: &Key| *k == key(&ns, &name) || on_node.contains(k);
            if touches(&local) || remote.as_ref().is_some_and(touches) {
                self.peers.insert(key(&pns, &p.name_any()));
                self.interfaces.insert(local.clone());
                if let Some(remote) = remote {
                    self.interfaces.insert(remote);
                }
            }
        }
        self.routes_on_interfaces(world);
    }

    fn routes_on_interfaces(&mut self, world: &World) {
        for r in &world.routes {
            let on = key(&ns_of(r.as_ref()), r.spec.interface.as_str());
            if self.interfaces.contains(&on) {
                self.routes.insert(key(&ns_of(r.as_ref()), &r.name_any()));
            }
        }
    }
}

/// The objects to reconcile after `changed`.
pub fn triggers(changed: Changed<'_>, world: &World) -> Triggers {
    let mut t = Triggers::default();
    match changed {
        Changed::Network(n) => {
            let (ns, name) = (ns_of(n), n.name_any());
            t.networks.insert(key(&ns, &name));
            for i in &world.interfaces {
                let uses = i
                    .spec
                    .networks
                    .iter()
                    .flatten()
                    .any(|x| x.name.as_str() == name);
                if uses && ns_of(i.as_ref()) == ns {
                    t.interfaces.insert(key(&ns, &i.name_any()));
                }
            }
            // A Network gone or changed may free pool space for Networks still waiting.
            for other in &world.networks {
                if crate::ipam::network_cidr(other).is_none() {
                    t.networks
                        .insert(key(&ns_of(other.as_ref()), &other.name_any()));
                }
            }
        }
        Changed::Interface(i) => t.interface_and_neighbours(world, i),
        Changed::Peer(p) => {
            let ns = ns_of(p);
            t.peers.insert(key(&ns, &p.name_any()));
            let ends: Vec<String> = std::iter::once(p.spec.interface.to_string())
                .chain(p.spec.remote.interface.iter().map(ToString::to_string))
                .collect();
            for end in &ends {
                if let Some(i) = world.interface(&ns, end) {
                    for n in world.interfaces_on_node(i.spec.node_name.as_str()) {
                        t.interfaces.insert(key(&ns_of(n.as_ref()), &n.name_any()));
                    }
                }
                t.interfaces.insert(key(&ns, end));
            }
            // Peers sharing an Interface with this one: overlaps and duplicates.
            for other in &world.peers {
                if ns_of(other.as_ref()) != ns {
                    continue;
                }
                let shares = std::iter::once(other.spec.interface.as_str())
                    .chain(other.spec.remote.interface.as_ref().map(|r| r.as_str()))
                    .any(|e| ends.iter().any(|x| x == e));
                if shares {
                    t.peers.insert(key(&ns, &other.name_any()));
                }
            }
            t.routes_on_interfaces(world);
        }
        Changed::Route(r) => {
            t.routes.insert(key(&ns_of(r), &r.name_any()));
        }
        Changed::Node(node) => {
            let on_node: Vec<_> = world.interfaces_on_node(node).cloned().collect();
            for i in on_node {
                t.interface_and_neighbours(world, &i);
            }
        }
        Changed::Secret(meta) => {
            let ns = meta.namespace.clone().unwrap_or_default();
            for owner in meta.owner_references.iter().flatten() {
                match owner.kind.as_str() {
                    "Interface" => {
                        t.interfaces.insert(key(&ns, &owner.name));
                    }
                    "Peer" => {
                        t.peers.insert(key(&ns, &owner.name));
                    }
                    _ => {}
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kwire_crds::manifest::parse_manifests;

    fn names(set: &BTreeSet<Key>) -> Vec<&str> {
        set.iter().map(|(_, n)| n.as_str()).collect()
    }

    fn relay() -> World {
        let objects =
            parse_manifests(include_str!("../../../examples/seed/relay-networks.yaml")).unwrap();
        World::from_manifests(&objects)
    }

    #[test]
    fn a_network_change_reaches_the_interfaces_that_use_it() {
        let w = relay();
        let t = triggers(Changed::Network(&w.networks[0]), &w);
        assert_eq!(names(&t.networks), ["link-ab"]);
        assert_eq!(names(&t.interfaces), ["a-wg0-client", "b-wg0-server"]);
    }

    #[test]
    fn an_interface_change_reaches_its_networks_node_neighbours_peers_and_routes() {
        let w = relay();
        let b = w.interface("", "b-wg0-server").unwrap().clone();
        let t = triggers(Changed::Interface(&b), &w);
        assert_eq!(names(&t.networks), ["link-ab"]);
        assert_eq!(
            names(&t.interfaces),
            [
                "a-wg0-client",
                "b-wg0-server",
                "b-wg1-client",
                "c-wg0-server"
            ]
        );
        assert_eq!(names(&t.peers), ["a-to-b", "b-to-c"]);
        assert_eq!(names(&t.routes), ["a-to-c-network", "c-to-a-network"]);
    }

    #[test]
    fn a_peer_change_reaches_both_ends_their_nodes_and_peers_sharing_an_end() {
        let w = relay();
        let p = w
            .peers
            .iter()
            .find(|p| p.name_any() == "a-to-b")
            .unwrap()
            .clone();
        let t = triggers(Changed::Peer(&p), &w);
        assert_eq!(names(&t.peers), ["a-to-b"]);
        assert_eq!(
            names(&t.interfaces),
            ["a-wg0-client", "b-wg0-server", "b-wg1-client"]
        );
        assert_eq!(names(&t.routes), ["a-to-c-network"]);
    }

    #[test]
    fn a_route_change_reaches_only_the_route() {
        let w = relay();
        let t = triggers(Changed::Route(&w.routes[0]), &w);
        assert_eq!(t.routes.len(), 1);
        assert!(t.interfaces.is_empty() && t.peers.is_empty() && t.networks.is_empty());
    }

    #[test]
    fn a_node_change_reaches_the_interfaces_on_it() {
        let w = relay();
        let t = triggers(Changed::Node("c"), &w);
        assert!(t.interfaces.contains(&key("", "c-wg0-server")));
        assert!(t.peers.contains(&key("", "b-to-c")));
    }

    #[test]
    fn a_secret_change_reaches_its_owner() {
        let meta = ObjectMeta {
            namespace: Some(NS.into()),
            owner_references: Some(vec![OwnerReference {
                kind: "Interface".into(),
                name: "a-wg0".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let t = triggers(Changed::Secret(&meta), &World::default());
        assert_eq!(t.interfaces, BTreeSet::from([key(NS, "a-wg0")]));
    }

    #[test]
    fn a_deleted_network_wakes_networks_still_waiting_for_a_pool_cidr() {
        let w = world(
            vec![
                network("fixed", "10.0.0.0/24"),
                network_carved("waiting", 24),
            ],
            vec![],
            vec![],
            vec![],
            None,
        );
        let t = triggers(Changed::Network(&w.networks[0]), &w);
        assert_eq!(names(&t.networks), ["fixed", "waiting"]);
    }
}
