//! The nodes a Mesh is expanded over: what the expansion needs of a Kubernetes Node.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;

use crate::api::NodeAddressType;

/// A Node as the expansion sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `InternalIP` addresses, in the order the Node lists them.
    pub internal: Vec<IpAddr>,
    /// `ExternalIP` addresses, in the order the Node lists them.
    pub external: Vec<IpAddr>,
    /// `spec.podCIDRs` (or `spec.podCIDR` when the list is unset).
    pub pod_cidrs: Vec<IpNet>,
}

impl MeshNode {
    /// What the expansion needs of a Node. Addresses and pod CIDRs that do not parse are
    /// left out (the API server checks both, so only hand-written files have such values).
    pub fn from_node(node: &Node) -> Self {
        let mut out = MeshNode {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            ..Default::default()
        };
        for a in node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
        {
            let Ok(ip) = a.address.parse::<IpAddr>() else {
                continue;
            };
            match a.type_.as_str() {
                "InternalIP" => out.internal.push(ip),
                "ExternalIP" => out.external.push(ip),
                _ => {}
            }
        }
        if let Some(spec) = &node.spec {
            let cidrs = match (&spec.pod_cidrs, &spec.pod_cidr) {
                (Some(list), _) if !list.is_empty() => list.clone(),
                (_, Some(one)) => vec![one.clone()],
                _ => Vec::new(),
            };
            out.pod_cidrs = cidrs.iter().filter_map(|c| c.parse().ok()).collect();
        }
        out
    }

    /// The address other members reach this node on: the first `InternalIP`, else the first
    /// `ExternalIP` (as for Interfaces: kwire links nodes of one cluster).
    pub fn endpoint_host(&self) -> Option<IpAddr> {
        self.internal.first().or(self.external.first()).copied()
    }

    /// The first address of the given type.
    pub fn address(&self, kind: NodeAddressType) -> Option<IpAddr> {
        match kind {
            NodeAddressType::InternalIP => self.internal.first().copied(),
            NodeAddressType::ExternalIP => self.external.first().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn a_node_gives_its_labels_addresses_and_pod_cidrs() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("a".into()),
                labels: Some([("zone".to_string(), "z1".to_string())].into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some("10.244.1.0/24".into()),
                pod_cidrs: Some(vec!["10.244.1.0/24".into(), "fd00:244:1::/64".into()]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: "a".into(),
                    },
                    NodeAddress {
                        type_: "ExternalIP".into(),
                        address: "203.0.113.1".into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "10.0.0.1".into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "not an ip".into(),
                    },
                ]),
                ..Default::default()
            }),
        };
        let n = MeshNode::from_node(&node);
        assert_eq!(n.name, "a");
        assert_eq!(n.labels["zone"], "z1");
        assert_eq!(n.internal, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(n.external, vec!["203.0.113.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(n.pod_cidrs.len(), 2);
        assert_eq!(n.endpoint_host(), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            n.address(NodeAddressType::ExternalIP),
            Some("203.0.113.1".parse().unwrap())
        );

        let only_old_field = Node {
            spec: Some(NodeSpec {
                pod_cidr: Some("10.244.2.0/24".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            MeshNode::from_node(&only_old_field).pod_cidrs,
            vec!["10.244.2.0/24".parse::<IpNet>().unwrap()]
        );
    }
}
