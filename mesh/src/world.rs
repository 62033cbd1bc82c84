//! The read-only "world" the planners look at: every kwire object plus the Nodes.
//!
//! In the operator it is a snapshot of the reflector stores; offline (a CLI checking
//! manifests) it is built from parsed files, with `nodes: None` because Nodes are unknown
//! there. It is plain data: planners never do I/O through it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube_core::ResourceExt;
use kwire_crds::manifest::KwireObject;
use kwire_crds::v1alpha1::{Interface, Network, Peer, Route};

use crate::ipam;

/// The addresses of a Node that matter for endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// `InternalIP` addresses, in the order the Node lists them.
    pub internal: Vec<String>,
    /// `ExternalIP` addresses, in the order the Node lists them.
    pub external: Vec<String>,
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> Self {
        let mut info = NodeInfo {
            name: node.name_any(),
            ..Default::default()
        };
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten();
        for a in addresses {
            match a.type_.as_str() {
                "InternalIP" => info.internal.push(a.address.clone()),
                "ExternalIP" => info.external.push(a.address.clone()),
                _ => {}
            }
        }
        info
    }

    /// The host peers use to reach this node: the first `InternalIP`, else the first
    /// `ExternalIP`. Internal first because kwire links nodes of one cluster, which reach
    /// each other on their internal addresses; a node behind NAT sets
    /// `Interface.spec.endpoint` instead.
    pub fn endpoint_host(&self) -> Option<&str> {
        self.internal
            .first()
            .or_else(|| self.external.first())
            .map(String::as_str)
    }
}

/// What is known about a Node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeLookup<'a> {
    Known(&'a NodeInfo),
    /// Nodes are known and this one is not among them.
    Missing,
    /// Nodes are not known (offline).
    Unknown,
}

/// A snapshot of everything the planners read.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub networks: Vec<Arc<Network>>,
    pub interfaces: Vec<Arc<Interface>>,
    pub peers: Vec<Arc<Peer>>,
    pub routes: Vec<Arc<Route>>,
    /// `None` when Nodes are not known (offline checks).
    pub nodes: Option<BTreeMap<String, NodeInfo>>,
    interface_index: BTreeMap<(String, String), usize>,
    network_index: BTreeMap<(String, String), usize>,
    node_index: BTreeMap<String, Vec<usize>>,
    /// Addresses the allocator would give Interfaces that have none recorded yet, by
    /// (namespace, holder UID); computed on first use.
    predicted: OnceLock<BTreeMap<(String, String), Vec<IpNet>>>,
    /// The Peers that link each Interface (as local or remote end), by (namespace, name);
    /// computed on first use.
    peer_index: OnceLock<BTreeMap<(String, String), Vec<usize>>>,
}

/// The namespace of an object, `""` for objects read from files without one.
pub fn ns_of<K: ResourceExt>(obj: &K) -> String {
    obj.namespace().unwrap_or_default()
}

impl World {
    pub fn new(
        networks: Vec<Arc<Network>>,
        interfaces: Vec<Arc<Interface>>,
        peers: Vec<Arc<Peer>>,
        routes: Vec<Arc<Route>>,
        nodes: Option<Vec<NodeInfo>>,
    ) -> Self {
        let key = |ns: String, name: String| (ns, name);
        let interface_index = interfaces
            .iter()
            .enumerate()
            .map(|(i, o)| (key(ns_of(o.as_ref()), o.name_any()), i))
            .collect();
        let network_index = networks
            .iter()
            .enumerate()
            .map(|(i, o)| (key(ns_of(o.as_ref()), o.name_any()), i))
            .collect();
        let mut node_index: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, o) in interfaces.iter().enumerate() {
            node_index
                .entry(o.spec.node_name.to_string())
                .or_default()
                .push(i);
        }
        World {
            networks,
            interfaces,
            peers,
            routes,
            nodes: nodes.map(|n| n.into_iter().map(|n| (n.name.clone(), n)).collect()),
            interface_index,
            network_index,
            node_index,
            predicted: OnceLock::new(),
            peer_index: OnceLock::new(),
        }
    }

    /// A world of parsed manifests (no Nodes known).
    pub fn from_manifests(objects: &[KwireObject]) -> Self {
        let (mut networks, mut interfaces, mut peers, mut routes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for o in objects {
            match o {
                KwireObject::Network(n) => networks.push(Arc::new(Network::clone(n))),
                KwireObject::Interface(i) => interfaces.push(Arc::new(Interface::clone(i))),
                KwireObject::Peer(p) => peers.push(Arc::new(Peer::clone(p))),
                KwireObject::Route(r) => routes.push(Arc::new(Route::clone(r))),
                KwireObject::Other { .. } => {}
            }
        }
        World::new(networks, interfaces, peers, routes, None)
    }

    pub fn interface(&self, namespace: &str, name: &str) -> Option<&Arc<Interface>> {
        self.interface_index
            .get(&(namespace.to_string(), name.to_string()))
            .map(|i| &self.interfaces[*i])
    }

    pub fn network(&self, namespace: &str, name: &str) -> Option<&Arc<Network>> {
        self.network_index
            .get(&(namespace.to_string(), name.to_string()))
            .map(|i| &self.networks[*i])
    }

    pub fn node(&self, name: &str) -> NodeLookup<'_> {
        match &self.nodes {
            None => NodeLookup::Unknown,
            Some(nodes) => nodes
                .get(name)
                .map_or(NodeLookup::Missing, NodeLookup::Known),
        }
    }

    /// The addresses an Interface has for sure: written by hand, or recorded in its status
    /// after allocation. Empty while an allocation is pending.
    pub fn addresses(&self, interface: &Interface) -> Vec<IpNet> {
        if let Some(addresses) = &interface.spec.addresses {
            return addresses.iter().filter_map(|a| a.net().ok()).collect();
        }
        interface
            .status
            .as_ref()
            .map(|s| s.addresses.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// [`World::addresses`], or else what the allocator would give the Interface (for
    /// checking manifests before anything is applied).
    pub fn addresses_or_predicted(&self, interface: &Interface) -> Vec<IpNet> {
        let known = self.addresses(interface);
        if !known.is_empty() {
            return known;
        }
        self.predicted
            .get_or_init(|| self.predict_addresses())
            .get(&(ns_of(interface), ipam::holder_uid(interface)))
            .cloned()
            .unwrap_or_default()
    }

    /// The Peers that link Interface `namespace/name`, as its local or its remote end.
    pub fn peers_linking<'a>(
        &'a self,
        namespace: &str,
        name: &str,
    ) -> impl Iterator<Item = &'a Arc<Peer>> + 'a {
        self.peer_index
            .get_or_init(|| {
                let mut index: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
                for (i, p) in self.peers.iter().enumerate() {
                    let ns = ns_of(p.as_ref());
                    let local = p.spec.interface.to_string();
                    let remote = p.spec.remote.interface.as_ref().map(ToString::to_string);
                    if remote.as_deref() != Some(local.as_str())
                        && let Some(remote) = remote
                    {
                        index.entry((ns.clone(), remote)).or_default().push(i);
                    }
                    index.entry((ns, local)).or_default().push(i);
                }
                index
            })
            .get(&(namespace.to_string(), name.to_string()))
            .into_iter()
            .flatten()
            .map(|i| &self.peers[*i])
    }

    /// Interfaces on one node, of every namespace.
    pub fn interfaces_on_node<'a>(
        &'a self,
        node: &str,
    ) -> impl Iterator<Item = &'a Arc<Interface>> + 'a {
        self.node_index
            .get(node)
            .into_iter()
            .flatten()
            .map(|i| &self.interfaces[*i])
    }

    fn predict_addresses(&self) -> BTreeMap<(String, String), Vec<IpNet>> {
        let mut by_ns: BTreeMap<String, Vec<Arc<Interface>>> = BTreeMap::new();
        for i in &self.interfaces {
            by_ns.entry(ns_of(i.as_ref())).or_default().push(i.clone());
        }
        let mut predicted: BTreeMap<(String, String), Vec<IpNet>> = BTreeMap::new();
        for network in &self.networks {
            let ns = ns_of(network.as_ref());
            let Some(interfaces) = by_ns.get(&ns) else {
                continue;
            };
            let Some(outcome) = ipam::allocate_for_network(network, None, interfaces) else {
                continue;
            };
            for a in outcome.allocations {
                if let (Some(uid), Ok(addr)) = (a.uid, a.address.parse::<IpNet>()) {
                    predicted.entry((ns.clone(), uid)).or_default().push(addr);
                }
            }
        }
        predicted
    }
}

/// The host route (/32 or /128) of an address.
pub fn host_prefix(addr: IpAddr) -> IpNet {
    IpNet::from(addr)
}
