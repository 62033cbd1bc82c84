//! The Node watch. kwire reads a Node's name, its `InternalIP` and `ExternalIP` addresses
//! ([`NodeInfo`]), and for Meshes its labels and pod CIDRs ([`MeshNode`]), nothing else. Kubelets update their Node all the time (heartbeat
//! conditions, images, allocatable), and each update used to rebuild the world, re-run the
//! topology check and reconcile every Interface on the node and every Peer linking them.
//! So:
//!
//! - the stored copy keeps only what kwire reads ([`trim`]): the operator's memory grows
//!   with the number of Nodes, not with the images each one lists;
//! - an event reaches the router only when what kwire reads changed ([`NodeFilter`]): a
//!   heartbeat reconciles nothing and writes nothing, a new address reconciles exactly the
//!   objects whose endpoints depend on it, and a new label re-expands the Meshes.
//!
//! kube-runtime's `predicate_filter` does the second on a stream of objects; here the
//! router needs the watch's events (an initial list, deletions), so the filter is a few
//! lines over events with the same idea: a hash of the fields kwire reads, per object.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::watcher;

use kwire_mesh::MeshNode;

use crate::world::NodeInfo;

/// Keeps only what the operator reads of a Node (and what a store needs to key and order
/// it): name, uid, resourceVersion, deletion, labels (Mesh selectors), the pod CIDRs (Mesh
/// announcements) and the addresses.
pub fn trim(node: &mut Node) {
    let meta = std::mem::take(&mut node.metadata);
    node.metadata = ObjectMeta {
        name: meta.name,
        uid: meta.uid,
        resource_version: meta.resource_version,
        deletion_timestamp: meta.deletion_timestamp,
        labels: meta.labels,
        ..ObjectMeta::default()
    };
    node.spec = node.spec.take().and_then(|spec| {
        (spec.pod_cidr.is_some() || spec.pod_cidrs.is_some()).then_some(NodeSpec {
            pod_cidr: spec.pod_cidr,
            pod_cidrs: spec.pod_cidrs,
            ..NodeSpec::default()
        })
    });
    let addresses = node.status.take().and_then(|s| s.addresses);
    node.status = addresses.map(|addresses| NodeStatus {
        addresses: Some(addresses),
        ..NodeStatus::default()
    });
}

/// A hash of what kwire reads of a Node: addresses (endpoints), labels (Mesh selectors)
/// and pod CIDRs (Mesh announcements). Kubelet heartbeats change none of them.
pub fn digest(node: &Node) -> u64 {
    let info = NodeInfo::from_node(node);
    let mesh = MeshNode::from_node(node);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&info.name, &info.internal, &info.external).hash(&mut hasher);
    (&mesh.labels, &mesh.pod_cidrs).hash(&mut hasher);
    hasher.finish()
}

/// Passes on the Node events that change what kwire reads (see the module docs).
#[derive(Debug, Default)]
pub struct NodeFilter {
    seen: HashMap<String, u64>,
}

impl NodeFilter {
    /// Whether `event` is to be routed. Everything of an initial list passes (a re-list
    /// after a lost watch may follow missed changes); an update passes only when its
    /// [`digest`] differs from the last one passed for that Node; a deletion always passes.
    pub fn admit(&mut self, event: &watcher::Event<Node>) -> bool {
        match event {
            watcher::Event::Init => {
                self.seen.clear();
                true
            }
            watcher::Event::InitApply(node) => {
                self.seen.insert(node.name_any(), digest(node));
                true
            }
            watcher::Event::InitDone => true,
            watcher::Event::Apply(node) => {
                let d = digest(node);
                self.seen.insert(node.name_any(), d) != Some(d)
            }
            watcher::Event::Delete(node) => {
                self.seen.remove(&node.name_any());
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Node as a kubelet keeps it: addresses, plus what changes at every heartbeat.
    fn node(name: &str, internal: &str, beat: u32) -> Node {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "uid": format!("uid-{name}"),
                "resourceVersion": format!("{beat}"),
                "labels": {"kubernetes.io/hostname": name},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}],
            },
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": internal},
                    {"type": "Hostname", "address": name},
                ],
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "lastHeartbeatTime": format!("2026-12-04T10:00:{:02}Z", beat % 60),
                    "lastTransitionTime": "2026-12-04T09:00:00Z",
                }],
                "allocatable": {"cpu": "2", "memory": format!("{}Ki", 24_000_000 + beat)},
                "images": [{"names": [format!("registry.example/app:{beat}")], "sizeBytes": 1000}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn heartbeats_pass_nothing_and_an_address_change_passes() {
        let mut filter = NodeFilter::default();
        assert!(filter.admit(&watcher::Event::Init));
        assert!(filter.admit(&watcher::Event::InitApply(node("a", "10.0.0.1", 0))));
        assert!(filter.admit(&watcher::Event::InitDone));
        for beat in 1..=30 {
            assert!(
                !filter.admit(&watcher::Event::Apply(node("a", "10.0.0.1", beat))),
                "heartbeat {beat}"
            );
        }
        assert!(filter.admit(&watcher::Event::Apply(node("a", "10.0.0.9", 31))));
        assert!(!filter.admit(&watcher::Event::Apply(node("a", "10.0.0.9", 32))));
        // A new label (a Mesh's selector may now match) passes once.
        let mut labelled = node("a", "10.0.0.9", 33);
        labelled
            .metadata
            .labels
            .get_or_insert_default()
            .insert("kwire.dev/mesh".into(), "overlay".into());
        assert!(filter.admit(&watcher::Event::Apply(labelled.clone())));
        labelled.metadata.resource_version = Some("34".into());
        assert!(!filter.admit(&watcher::Event::Apply(labelled)));
        assert!(filter.admit(&watcher::Event::Apply(node("a", "10.0.0.9", 35))));
        // A Node first seen after the initial list passes once.
        assert!(filter.admit(&watcher::Event::Apply(node("b", "10.0.0.2", 1))));
        assert!(!filter.admit(&watcher::Event::Apply(node("b", "10.0.0.2", 2))));
        // Deleted and created again: both pass.
        assert!(filter.admit(&watcher::Event::Delete(node("b", "10.0.0.2", 3))));
        assert!(filter.admit(&watcher::Event::Apply(node("b", "10.0.0.2", 4))));
        // A re-list passes whole, and starts over.
        assert!(filter.admit(&watcher::Event::Init));
        assert!(filter.admit(&watcher::Event::InitApply(node("a", "10.0.0.9", 40))));
        assert!(filter.admit(&watcher::Event::InitDone));
        assert!(!filter.admit(&watcher::Event::Apply(node("a", "10.0.0.9", 41))));
    }

    #[test]
    fn a_trimmed_node_keeps_what_kwire_reads_and_nothing_else() {
        let full = node("a", "10.0.0.1", 7);
        let mut trimmed = full.clone();
        trim(&mut trimmed);
        assert_eq!(NodeInfo::from_node(&trimmed), NodeInfo::from_node(&full));
        assert_eq!(digest(&trimmed), digest(&full));
        assert_eq!(trimmed.metadata.name.as_deref(), Some("a"));
        assert_eq!(trimmed.metadata.uid.as_deref(), Some("uid-a"));
        assert_eq!(trimmed.metadata.resource_version.as_deref(), Some("7"));
        assert!(
            trimmed.metadata.annotations.is_none() && trimmed.metadata.managed_fields.is_none()
        );
        assert_eq!(MeshNode::from_node(&trimmed), MeshNode::from_node(&full));
        let spec = trimmed.spec.as_ref().unwrap();
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.244.1.0/24"));
        assert!(spec.provider_id.is_none() && spec.taints.is_none());
        let status = trimmed.status.unwrap();
        assert!(status.conditions.is_none() && status.images.is_none());
        assert!(status.allocatable.is_none());
        assert_eq!(status.addresses.unwrap().len(), 2);
        // A Node without status stays without.
        let mut bare: Node = serde_json::from_value(json!({"metadata": {"name": "b"}})).unwrap();
        trim(&mut bare);
        assert!(bare.status.is_none());
    }

    #[test]
    fn the_digest_is_the_addresses_kwire_reads_in_their_order() {
        let a = node("a", "10.0.0.1", 1);
        let mut reordered = a.clone();
        reordered
            .status
            .as_mut()
            .unwrap()
            .addresses
            .as_mut()
            .unwrap()
            .reverse();
        // The Hostname address is not read: only the order among read ones counts.
        assert_eq!(digest(&a), digest(&reordered));
        assert_ne!(digest(&a), digest(&node("a", "10.0.0.2", 1)));
        assert_ne!(digest(&a), digest(&node("b", "10.0.0.1", 1)));
    }
}
