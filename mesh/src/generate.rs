//! The Interface generated for a member: owned by the Mesh, labelled, with the mesh's
//! device settings. Pure: the operator applies it, `kwire plan` prints it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::Resource;
use kwire_crds::names::ObjectName;
use kwire_crds::v1alpha1::{Interface, InterfaceSpec, NetworkAllocation};

use crate::api::Mesh;
use crate::api::TopologyType;
use crate::expand::{Expansion, Member, Role, own_location};
use crate::names::{
    ANNOTATION_ANNOUNCE, ANNOTATION_GATEWAY_ENDPOINT, ANNOTATION_KEEPALIVE, ANNOTATION_PRIMARY_HUB,
    ANNOTATION_TOPOLOGY, LABEL_LOCATION, LABEL_MESH, LABEL_ROLE, label_value,
};

/// The finalizer of every generated Interface: a leaver's Interface stays (and with it its
/// addresses in their Networks) until every other member's node daemon reports that its
/// device dropped it, or a timeout; the operator then removes it (decision 0010).
pub const MEMBER_FINALIZER: &str = "kwire.dev/mesh-member";

/// The labels of a member's generated Interface: its Mesh, its role and, in a `Locations`
/// mesh, its location (unless it is a location of its own, `node:<name>`, which is not a
/// label value: no label then, and readers take the member's node).
pub fn member_labels(expansion: &Expansion, member: &Member) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_MESH.to_string(), label_value(&expansion.mesh)),
        (LABEL_ROLE.to_string(), member.role.as_str().to_string()),
    ]);
    if let Some(location) = &member.location
        && *location != own_location(&member.node)
    {
        labels.insert(LABEL_LOCATION.to_string(), label_value(location));
    }
    labels
}

/// The annotations of a member's generated Interface: what its node daemon and the other
/// members' daemons need besides the labels, since they do not read Nodes or the Mesh
/// (decision 0010). Each only when it applies: the keepalive of its peers (0 is off), the
/// topology (not for `FullMesh`), a spoke's primary hub, the announced prefixes, and a
/// gateway's gateway address when it is not its endpoint's. `None` when there is none.
pub fn member_annotations(
    expansion: &Expansion,
    member: &Member,
) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(seconds) = expansion.device.persistent_keepalive.filter(|s| *s > 0) {
        out.insert(ANNOTATION_KEEPALIVE.to_string(), seconds.to_string());
    }
    let topology = match expansion.topology {
        TopologyType::FullMesh => None,
        TopologyType::HubAndSpoke => Some("HubAndSpoke"),
        TopologyType::Locations => Some("Locations"),
    };
    if let Some(t) = topology {
        out.insert(ANNOTATION_TOPOLOGY.to_string(), t.to_string());
    }
    if let Some(hub) = &member.primary_hub {
        out.insert(ANNOTATION_PRIMARY_HUB.to_string(), hub.clone());
    }
    if !member.announced.is_empty() {
        let list: Vec<String> = member.announced.iter().map(ToString::to_string).collect();
        out.insert(ANNOTATION_ANNOUNCE.to_string(), list.join(","));
    }
    if member.role == Role::Gateway
        && let Some(address) = member
            .gateway_endpoint
            .filter(|a| Some(*a) != member.endpoint)
    {
        out.insert(ANNOTATION_GATEWAY_ENDPOINT.to_string(), address.to_string());
    }
    (!out.is_empty()).then_some(out)
}

/// The spec of a member's Interface. Its endpoint is left to the default (the Node's
/// address): mesh peers take their endpoints from the expansion's links.
pub fn member_interface_spec(expansion: &Expansion, member: &Member) -> InterfaceSpec {
    let d = &expansion.device;
    InterfaceSpec {
        node_name: ObjectName::new_unchecked(member.node.clone()),
        device_name: Some(d.device_name.clone()),
        listen_port: d.listen_port,
        addresses: None,
        networks: Some(
            d.networks
                .iter()
                .map(|n| NetworkAllocation {
                    name: ObjectName::new_unchecked(n.clone()),
                    host_index: None,
                })
                .collect(),
        ),
        mtu: d.mtu,
        endpoint: None,
        forwarding: member.forwarding.then_some(true),
        key_mode: d.key_mode,
        private_key_secret_ref: None,
        key_rotation: d.key_rotation.clone(),
    }
}

/// The whole Interface of a member of `mesh`: in the Mesh's namespace, controlled by it
/// (owner reference with `controller: true`, so GitOps tools show it as the Mesh's child
/// and the garbage collector deletes it with the Mesh), with [`MEMBER_FINALIZER`]. `None`
/// when the Mesh has no uid yet (it was read from a file, not from the API server).
pub fn member_interface(mesh: &Mesh, expansion: &Expansion, member: &Member) -> Option<Interface> {
    let owner = mesh.controller_owner_ref(&())?;
    let mut object = Interface::new(&member.name, member_interface_spec(expansion, member));
    object.metadata = ObjectMeta {
        name: Some(member.name.clone()),
        namespace: mesh.metadata.namespace.clone(),
        labels: Some(member_labels(expansion, member)),
        annotations: member_annotations(expansion, member),
        owner_references: Some(vec![owner]),
        finalizers: Some(vec![MEMBER_FINALIZER.to_string()]),
        ..Default::default()
    };
    Some(object)
}
