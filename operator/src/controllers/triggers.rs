//! Which objects to reconcile when something changes: a pure function of the change and
//! the world. Only direct data dependencies are followed (an Interface's key, addresses
//! and endpoint feed the Peers that link it, a Network's allocations feed its Interfaces,
//! a Peer's resolved keys feed a key rotation of its ends, a Node's address feeds the
//! endpoints of its Interfaces). Topology findings, which can tie any object to any other,
//! are recomputed by one task that reconciles exactly the objects whose findings changed
//! (see [`super::run`]); anything else is caught by the periodic resync.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kwire_crds::v1alpha1::{Interface, KeyRotationPhase, Network, Peer, Route};

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
    /// Peers that link one of `interfaces` (as local or remote end).
    fn peers_of(&mut self, world: &World, interfaces: &BTreeSet<Key>) {
        for (ns, name) in interfaces {
            for p in world.peers_linking(ns, name) {
                self.peers.insert(key(ns, &p.name_any()));
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
        Changed::Interface(i) => {
            // Its own status (rotation), its Networks (allocation), the Peers that link it
            // (keys, addresses, endpoint).
            let ns = ns_of(i);
            let me = key(&ns, &i.name_any());
            t.interfaces.insert(me.clone());
            for n in i.spec.networks.iter().flatten() {
                t.networks.insert(key(&ns, n.name.as_str()));
            }
            t.peers_of(world, &BTreeSet::from([me]));
        }
        Changed::Peer(p) => {
            // Itself, and its ends while they rotate a key: a rotation waits for the Peers
            // to carry the new key.
            let ns = ns_of(p);
            t.peers.insert(key(&ns, &p.name_any()));
            let ends = std::iter::once(p.spec.interface.as_str())
                .chain(p.spec.remote.interface.as_ref().map(|r| r.as_str()));
            for end in ends {
                let rotating = world.interface(&ns, end).is_some_and(|i| {
                    i.status
                        .as_ref()
                        .and_then(|s| s.key_rotation.as_ref())
                        .is_some_and(|r| r.phase == Some(KeyRotationPhase::Announced))
                });
                if rotating {
                    t.interfaces.insert(key(&ns, end));
                }
            }
        }
        Changed::Route(r) => {
            t.routes.insert(key(&ns_of(r), &r.name_any()));
        }
        Changed::Node(node) => {
            // Endpoints: the Interfaces on the node and the Peers that link them.
            let on_node: BTreeSet<Key> = world
                .interfaces_on_node(node)
                .map(|i| key(&ns_of(i.as_ref()), &i.name_any()))
                .collect();
            t.peers_of(world, &on_node);
            t.interfaces.extend(on_node);
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
    fn an_interface_change_reaches_itself_its_networks_and_the_peers_that_link_it() {
        let w = relay();
        let b = w.interface("", "b-wg0-server").unwrap().clone();
        let t = triggers(Changed::Interface(&b), &w);
        assert_eq!(names(&t.networks), ["link-ab"]);
        assert_eq!(names(&t.interfaces), ["b-wg0-server"]);
        assert_eq!(names(&t.peers), ["a-to-b"]);
        assert!(t.routes.is_empty(), "topology is the findings task's job");
    }

    #[test]
    fn a_peer_change_reaches_itself_and_the_ends_that_rotate_a_key() {
        let objects =
            parse_manifests(include_str!("../../../examples/seed/relay-networks.yaml")).unwrap();
        let mut w = World::from_manifests(&objects);
        let p = w
            .peers
            .iter()
            .find(|p| p.name_any() == "a-to-b")
            .unwrap()
            .clone();
        let t = triggers(Changed::Peer(&p), &w);
        assert_eq!(names(&t.peers), ["a-to-b"]);
        assert!(t.interfaces.is_empty() && t.routes.is_empty() && t.networks.is_empty());
        // b rotates its key: it waits for this Peer to carry the new one.
        let mut interfaces = w.interfaces.clone();
        for i in &mut interfaces {
            if i.name_any() == "b-wg0-server" {
                let mut b = Interface::clone(i);
                b.status.get_or_insert_with(Default::default).key_rotation =
                    Some(kwire_crds::v1alpha1::KeyRotationStatus {
                        phase: Some(KeyRotationPhase::Announced),
                        ..Default::default()
                    });
                *i = std::sync::Arc::new(b);
            }
        }
        w = World::new(
            w.networks.clone(),
            interfaces,
            w.peers.clone(),
            w.routes.clone(),
            None,
        );
        let t = triggers(Changed::Peer(&p), &w);
        assert_eq!(names(&t.interfaces), ["b-wg0-server"]);
    }

    #[test]
    fn a_route_change_reaches_only_the_route() {
        let w = relay();
        let t = triggers(Changed::Route(&w.routes[0]), &w);
        assert_eq!(t.routes.len(), 1);
        assert!(t.interfaces.is_empty() && t.peers.is_empty() && t.networks.is_empty());
    }

    #[test]
    fn a_node_change_reaches_the_interfaces_on_it_and_the_peers_that_link_them() {
        let w = relay();
        let t = triggers(Changed::Node("c"), &w);
        assert_eq!(names(&t.interfaces), ["c-wg0-server"]);
        assert_eq!(names(&t.peers), ["b-to-c"]);
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
