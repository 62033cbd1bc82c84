//! A Mesh as its members' node daemons see it: read back from the members' generated
//! Interfaces (their labels, annotations and spec), never from the Nodes or the Mesh
//! (decision 0010, "How a member sees the others").
//!
//! The operator writes into each generated Interface what the link rules need
//! ([`crate::generate`]): the role and location (labels), the topology, a spoke's primary
//! hub, the announced prefixes and a gateway's gateway address (annotations). [`member_of`]
//! turns one Interface back into a [`Member`], and [`Expansion::from_members`] builds the
//! same links [`crate::expand()`] does from those members, so the topology rules exist once.
//! Only the endpoint comes from elsewhere: the Interface's `status.endpoint`, which the
//! caller resolves.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube_core::ResourceExt;
use kwire_crds::v1alpha1::Interface;

use crate::api::TopologyType;
use crate::expand::{DeviceSettings, Member, Role, own_location};
use crate::names::{
    ANNOTATION_ANNOUNCE, ANNOTATION_GATEWAY_ENDPOINT, ANNOTATION_KEEPALIVE, ANNOTATION_PRIMARY_HUB,
    ANNOTATION_TOPOLOGY, LABEL_LOCATION, LABEL_MESH, LABEL_ROLE,
};

/// The owner reference of the Mesh that controls `interface` (`controller: true`), if any.
pub fn mesh_controller(interface: &Interface) -> Option<&OwnerReference> {
    interface
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Mesh")
}

/// Which Mesh a generated Interface belongs to: (namespace, `kwire.dev/mesh` label, uid of
/// its controlling Mesh). Two Interfaces are members of the same Mesh when these are equal;
/// a hand-written Interface carrying the label has no controlling Mesh, so `None`.
pub fn mesh_identity(interface: &Interface) -> Option<(String, String, String)> {
    let label = interface.labels().get(LABEL_MESH)?;
    let owner = mesh_controller(interface)?;
    Some((
        interface.namespace().unwrap_or_default(),
        label.clone(),
        owner.uid.clone(),
    ))
}

/// The topology a generated Interface says its Mesh has (no annotation: `FullMesh`).
pub fn topology_of(interface: &Interface) -> TopologyType {
    match interface
        .annotations()
        .get(ANNOTATION_TOPOLOGY)
        .map(String::as_str)
    {
        Some("HubAndSpoke") => TopologyType::HubAndSpoke,
        Some("Locations") => TopologyType::Locations,
        _ => TopologyType::FullMesh,
    }
}

/// The device settings of a member, from its generated Interface: device name, port, MTU,
/// keys, networks, and the keepalive annotation. `None` when the Interface names no device
/// (a generated one always does).
pub fn device_of(interface: &Interface) -> Option<DeviceSettings> {
    let spec = &interface.spec;
    Some(DeviceSettings {
        device_name: spec.device_name.clone()?,
        listen_port: spec.listen_port,
        mtu: spec.mtu,
        persistent_keepalive: interface
            .annotations()
            .get(ANNOTATION_KEEPALIVE)
            .and_then(|s| s.parse().ok()),
        key_mode: spec.key_mode,
        key_rotation: spec.key_rotation.clone(),
        networks: spec
            .networks
            .iter()
            .flatten()
            .map(|n| n.name.to_string())
            .collect(),
    })
}

/// The member a generated Interface stands for, in a mesh of `topology`, reached on
/// `endpoint` (its `status.endpoint`'s address, resolved by the caller). `None` when the
/// Interface has no name or no known role label.
pub fn member_of(
    interface: &Interface,
    topology: TopologyType,
    endpoint: Option<IpAddr>,
) -> Option<Member> {
    let labels = interface.labels();
    let annotations = interface.annotations();
    let role = Role::parse(labels.get(LABEL_ROLE)?)?;
    let node = interface.spec.node_name.to_string();
    let location = (topology == TopologyType::Locations).then(|| {
        labels
            .get(LABEL_LOCATION)
            .cloned()
            .unwrap_or_else(|| own_location(&node))
    });
    let primary_hub = (role == Role::Spoke)
        .then(|| annotations.get(ANNOTATION_PRIMARY_HUB).cloned())
        .flatten();
    let announced: BTreeSet<IpNet> = annotations
        .get(ANNOTATION_ANNOUNCE)
        .into_iter()
        .flat_map(|list| list.split(','))
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let gateway_endpoint = (role == Role::Gateway)
        .then(|| {
            annotations
                .get(ANNOTATION_GATEWAY_ENDPOINT)
                .and_then(|a| a.parse().ok())
                .or(endpoint)
        })
        .flatten();
    Some(Member {
        name: interface.metadata.name.clone()?,
        node,
        role,
        location,
        primary_hub,
        forwarding: interface.spec.forwarding == Some(true),
        announced: announced.into_iter().collect(),
        endpoint,
        gateway_endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Mesh, MeshSpec};
    use crate::expand::{Decisions, Expansion, expand};
    use crate::generate::member_interface;
    use crate::node::MeshNode;
    use serde_json::json;

    fn node(name: &str, i: u8, zone: Option<&str>) -> MeshNode {
        MeshNode {
            name: name.into(),
            labels: zone
                .map(|z| [("zone".to_string(), z.to_string())].into())
                .unwrap_or_default(),
            internal: vec![IpAddr::from([192, 168, 0, i])],
            external: vec![IpAddr::from([203, 0, 113, i])],
            pod_cidrs: vec![format!("10.244.{i}.0/24").parse().unwrap()],
        }
    }

    #[test]
    fn a_gateway_reads_back_with_its_location_prefixes_and_gateway_address() {
        let spec: MeshSpec = serde_json::from_value(json!({
            "nodeSelector": {},
            "topology": {"type": "Locations",
                         "locations": {"label": "zone", "gatewayAddress": "ExternalIP"}},
            "networks": [{"name": "v4"}],
            "device": {"deviceName": "wgmesh", "persistentKeepalive": 25},
            "announce": {"podCIDRs": true},
        }))
        .unwrap();
        let nodes = [
            node("a1", 1, Some("a")),
            node("a2", 2, Some("a")),
            node("lone", 3, None),
        ];
        let e = expand("overlay", &spec, &nodes, &Decisions::default()).unwrap();
        let mut mesh = Mesh::new("overlay", spec);
        mesh.metadata.uid = Some("uid".into());
        let interfaces: Vec<Interface> = e
            .members
            .iter()
            .map(|m| member_interface(&mesh, &e, m).unwrap())
            .collect();
        let a1 = &interfaces[0];
        assert_eq!(topology_of(a1), TopologyType::Locations);
        assert_eq!(
            a1.annotations()[ANNOTATION_GATEWAY_ENDPOINT],
            "203.0.113.1",
            "the gateway address is not the endpoint's"
        );
        assert_eq!(a1.annotations()[ANNOTATION_ANNOUNCE], "10.244.1.0/24");
        // A location of its own is no label value: no label, and the reader takes the node.
        assert!(!interfaces[2].labels().contains_key(LABEL_LOCATION));

        let read: Vec<Member> = interfaces
            .iter()
            .zip(&e.members)
            .map(|(i, m)| member_of(i, topology_of(i), m.endpoint).unwrap())
            .collect();
        let gateway = &read[0];
        assert_eq!(gateway.role, Role::Gateway);
        assert_eq!(gateway.location.as_deref(), Some("a"));
        assert_eq!(
            gateway.gateway_endpoint,
            Some(IpAddr::from([203, 0, 113, 1]))
        );
        assert_eq!(read[1].gateway_endpoint, None, "only gateways say theirs");
        assert_eq!(read[2].location.as_deref(), Some("node:lone"));
        assert_eq!(device_of(a1).unwrap(), e.device);

        let view =
            Expansion::from_members("overlay", TopologyType::Locations, e.device.clone(), read);
        for m in &e.members {
            assert_eq!(view.links(&m.name), e.links(&m.name), "{}", m.node);
        }
    }

    #[test]
    fn an_interface_without_a_role_is_no_member() {
        let spec: MeshSpec =
            serde_json::from_value(json!({"nodeSelector": {}, "networks": [{"name": "v4"}],
                                          "device": {"deviceName": "wgmesh"}}))
            .unwrap();
        let e = expand(
            "overlay",
            &spec,
            &[node("a", 1, None)],
            &Decisions::default(),
        )
        .unwrap();
        let mut mesh = Mesh::new("overlay", spec);
        mesh.metadata.uid = Some("uid".into());
        let mut i = member_interface(&mesh, &e, &e.members[0]).unwrap();
        assert_eq!(topology_of(&i), TopologyType::FullMesh);
        assert!(member_of(&i, TopologyType::FullMesh, None).is_some());
        i.metadata.labels.as_mut().unwrap().remove(LABEL_ROLE);
        assert!(member_of(&i, TopologyType::FullMesh, None).is_none());
    }
}
