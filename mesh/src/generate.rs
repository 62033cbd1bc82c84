//! The Interface generated for a member: owned by the Mesh, labelled, with the mesh's
//! device settings. Pure: the operator applies it, `kwire plan` prints it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::Resource;
use kwire_crds::names::ObjectName;
use kwire_crds::v1alpha1::{Interface, InterfaceSpec, NetworkAllocation};

use crate::api::Mesh;
use crate::expand::{Expansion, Member};
use crate::names::{ANNOTATION_KEEPALIVE, LABEL_LOCATION, LABEL_MESH, LABEL_ROLE, label_value};

/// The finalizer of every generated Interface: a leaver's Interface stays (and with it its
/// addresses in their Networks) until every other member's node daemon reports that its
/// device dropped it, or a timeout; the operator then removes it (decision 0010).
pub const MEMBER_FINALIZER: &str = "kwire.dev/mesh-member";

/// The labels of a member's generated Interface: its Mesh, its role and, in a `Locations`
/// mesh, its location.
pub fn member_labels(expansion: &Expansion, member: &Member) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_MESH.to_string(), label_value(&expansion.mesh)),
        (LABEL_ROLE.to_string(), member.role.as_str().to_string()),
    ]);
    if let Some(location) = &member.location {
        labels.insert(LABEL_LOCATION.to_string(), label_value(location));
    }
    labels
}

/// The annotations of a member's generated Interface: the keepalive of its peers, when the
/// Mesh sets one (0 is off: no annotation).
pub fn member_annotations(expansion: &Expansion) -> Option<BTreeMap<String, String>> {
    let seconds = expansion.device.persistent_keepalive.filter(|s| *s > 0)?;
    Some(BTreeMap::from([(
        ANNOTATION_KEEPALIVE.to_string(),
        seconds.to_string(),
    )]))
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
        annotations: member_annotations(expansion),
        owner_references: Some(vec![owner]),
        finalizers: Some(vec![MEMBER_FINALIZER.to_string()]),
        ..Default::default()
    };
    Some(object)
}
