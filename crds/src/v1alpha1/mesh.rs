//! `Mesh`: one object that links every selected node (issue 15). The operator expands it
//! into one generated Interface per member; the expansion itself is in crate `kwire-mesh`,
//! which re-exports these types as `kwire_mesh::api` (see
//! `docs/decisions/0010-mesh-kind.md`).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Conditions;
use super::interface::{DEFAULT_LISTEN_PORT, KeyMode, KeyRotation};
use crate::names::{DeviceName, IpPrefix, ObjectName};
use crate::schema::CelRule;

/// The node label that names a node's location when `spec.topology.locations.label` is unset.
pub const DEFAULT_LOCATION_LABEL: &str = "topology.kubernetes.io/zone";

/// How many names a capped list in a status holds at most.
pub const STATUS_NAMES_CAP: usize = 16;

/// A set of nodes linked by WireGuard as one overlay: every node the `nodeSelector` selects
/// becomes a member with one generated Interface, owned by this Mesh, and the members peer
/// with each other as the `topology` says. For N nodes the API holds N generated Interfaces
/// and no Peer objects: each node daemon derives its peers from the members.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kwire.dev",
    version = "v1alpha1",
    kind = "Mesh",
    namespaced,
    status = "MeshStatus",
    shortname = "wgmesh",
    category = "kwire",
    printcolumn = r#"{"name":"Topology","type":"string","jsonPath":".spec.topology.type"}"#,
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".status.members"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyMembers"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"TopologyValid\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"TopologyValid\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MeshSpec {
    /// The Nodes that are members, by their labels. `{}` selects every Node. A Node that
    /// starts matching joins the mesh; one that stops matching, or is deleted, leaves it.
    pub node_selector: NodeSelector,

    /// How the members peer. Default: `{type: FullMesh}`.
    #[serde(default)]
    pub topology: MeshTopology,

    /// The Networks (in this namespace) each member takes an address from, one per IP
    /// family for dual stack, as `Interface.spec.networks`.
    #[schemars(length(min = 1, max = 2), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub networks: Vec<MeshNetwork>,

    /// The WireGuard device every member gets.
    #[serde(default)]
    pub device: MeshDevice,

    /// Prefixes members announce besides their own addresses; every other member routes
    /// them to the announcing member through the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<Announce>,
}

/// A label selector over Nodes, as `metav1.LabelSelector` with bounded sizes: a Node is
/// selected when it has every `matchLabels` entry and meets every `matchExpressions` item.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    /// Labels a Node must carry with exactly these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 32))]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Further requirements on a Node's labels; all must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub match_expressions: Option<Vec<SelectorRequirement>>,
}

/// One requirement on a label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectorRequirement {
    /// The label key, e.g. `kubernetes.io/os`.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// The values for `In` and `NotIn` (at least one); none for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub values: Option<Vec<String>>,
}

/// How a requirement compares a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    /// The label is set to one of `values`.
    In,
    /// The label is unset, or set to none of `values`.
    NotIn,
    /// The label is set.
    Exists,
    /// The label is unset.
    DoesNotExist,
}

/// The shape of the links between members.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshTopology {
    /// `FullMesh` (default): every member peers with every other member.
    /// `HubAndSpoke`: hubs peer with every member and forward; spokes reach everything
    /// through a hub. `Locations`: members of one location peer with each other, and one
    /// gateway per location links to the other locations' gateways and forwards.
    #[serde(rename = "type", default)]
    pub type_: TopologyType,
    /// With `type: HubAndSpoke`: which members are hubs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_and_spoke: Option<HubAndSpoke>,
    /// With `type: Locations`: where a node's location comes from and which nodes may be
    /// gateways. Optional; every field has a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<Locations>,
}

/// The three topologies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TopologyType {
    /// Every member peers with every other member.
    #[default]
    FullMesh,
    /// Hubs peer with everyone; spokes peer only with hubs.
    HubAndSpoke,
    /// Full mesh inside a location, gateways between locations.
    Locations,
}

/// Hubs of a `HubAndSpoke` mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HubAndSpoke {
    /// The members that are hubs, by their Node's labels (a hub must also match
    /// `spec.nodeSelector`). Every other member is a spoke.
    pub hub_selector: NodeSelector,
}

/// Locations of a `Locations` mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Locations {
    /// The Node label whose value names the node's location. Default:
    /// `topology.kubernetes.io/zone`. A node without the label is a location of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 317))]
    pub label: Option<String>,
    /// The nodes that may be elected gateway of their location (default: any member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_selector: Option<NodeSelector>,
    /// The Node address gateways reach each other on: `InternalIP` (default; locations are
    /// zones of one network) or `ExternalIP` (locations are sites linked over the Internet).
    /// A node without such an address cannot be a gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_address: Option<NodeAddressType>,
}

/// A type of Node address (`status.addresses[].type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum NodeAddressType {
    #[default]
    InternalIP,
    ExternalIP,
}

/// A Network members take an address from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshNetwork {
    /// Name of a Network in this namespace.
    pub name: ObjectName,
}

/// The device of every member: the fields of the generated Interfaces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshDevice {
    /// The kernel name of the device on every member. Defaults to the Mesh's name, which
    /// must then be 15 characters or fewer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<DeviceName>,
    /// UDP port WireGuard listens on, on every member.
    #[serde(default = "default_listen_port")]
    #[schemars(range(min = 1, max = 65535), default = "default_listen_port")]
    pub listen_port: u16,
    /// MTU of the devices; unset, as for an Interface: the underlay's MTU minus 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1280, max = 9000))]
    pub mtu: Option<u16>,
    /// Seconds between keepalive packets on every link, 0 (off) to 65535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub persistent_keepalive: Option<u16>,
    /// Where members' private keys live: `Secret` (default, generated by the operator) or
    /// `NodeLocal` (generated on the node, never leaves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_mode: Option<KeyMode>,
    /// Replace every member's generated key on a schedule, as `Interface.spec.keyRotation`
    /// (each member counts from its own key's creation). Only with `keyMode: Secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<KeyRotation>,
}

impl Default for MeshDevice {
    fn default() -> Self {
        Self {
            device_name: None,
            listen_port: DEFAULT_LISTEN_PORT,
            mtu: None,
            persistent_keepalive: None,
            key_mode: None,
            key_rotation: None,
        }
    }
}

fn default_listen_port() -> u16 {
    DEFAULT_LISTEN_PORT
}

/// What members announce besides their addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Announce {
    /// Each member announces its Node's `spec.podCIDRs`, so pods of one member reach pods
    /// of the others through the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "podCIDRs")]
    pub pod_cidrs: Option<bool>,
    /// Prefixes announced by named nodes (a network behind a node, like the seed's LANs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["nodeName"]))]
    pub prefixes: Option<Vec<NodePrefixes>>,
}

/// The prefixes one node announces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePrefixes {
    /// The Node; ignored while it is not a member.
    pub node_name: ObjectName,
    /// The networks behind it, e.g. `192.168.10.0/24`.
    #[schemars(length(min = 1, max = 16), extend("x-kubernetes-list-type" = "set"))]
    pub cidrs: Vec<IpPrefix>,
}

/// What the operator reports about a Mesh. Bounded whatever the number of members: counts,
/// capped name lists, one entry per location.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `TopologyValid` (hubs, gateways, clashes, overlaps: what `kwire lint` checks) and
    /// `Ready` (every member's Interface is `Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
    /// Selected nodes, which is the number of generated Interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u32>,
    /// Members whose Interface is `Ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_members: Option<u32>,
    /// Up to 16 nodes whose member is not `Ready`, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub unready_members: Vec<String>,
    /// `Locations` meshes: each location's gateway. This is the record that keeps an
    /// election sticky: a gateway is replaced only when it leaves the mesh or its location.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub locations: Vec<LocationStatus>,
}

/// One location of a `Locations` mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocationStatus {
    /// The location label's value, or `node:<name>` for a node without the label.
    pub name: String,
    /// How many members it has.
    pub members: u32,
    /// The node elected gateway; unset while no member can be one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// One member's view of its peers, bounded: what the member's node daemon reports on the
/// member's generated Interface (`status.mesh`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberPeersStatus {
    /// Peers configured on the device.
    pub peers: u32,
    /// Peers with a recent handshake.
    pub connected: u32,
    /// Peers never seen, still within the grace period of a new link.
    pub connecting: u32,
    /// Peers seen once whose latest handshake is too old.
    pub stale: u32,
    /// Up to 16 member names (their nodes) among the stale and connecting peers, stale
    /// first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub unhealthy: Vec<String>,
    /// Up to 16 generated Interfaces of leaving members (being deleted) that this member's
    /// device no longer has as peers, in name order. The operator lets a leaver go, and its
    /// addresses back to their Networks, once every other member lists it here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub departed: Vec<String>,
}

/// Rules that span fields, placed on `spec` or on the object.
pub(crate) const RULES: &[(&[&str], CelRule)] = &[
    (
        &["spec", "topology"],
        CelRule::new(
            "has(self.hubAndSpoke) == (has(self.type) && self.type == 'HubAndSpoke')",
            "spec.topology.hubAndSpoke (its hubSelector) is set exactly when spec.topology.type is HubAndSpoke",
        )
        .at(".hubAndSpoke"),
    ),
    (
        &["spec", "topology"],
        CelRule::new(
            "!has(self.locations) || (has(self.type) && self.type == 'Locations')",
            "spec.topology.locations is only for spec.topology.type Locations",
        )
        .at(".locations"),
    ),
    (
        &["spec", "device"],
        CelRule::new(
            "!has(self.keyRotation) || !has(self.keyMode) || self.keyMode == 'Secret'",
            "spec.device.keyRotation rotates keys the operator generates: it cannot be used with keyMode NodeLocal",
        )
        .at(".keyRotation"),
    ),
    (
        &["spec", "device", "keyRotation", "every"],
        CelRule::new(
            "self.matches('^([0-9]{1,6}[hms])+$') && duration(self) >= duration('1m')",
            "must be a duration of at least 1m in hours, minutes and seconds, e.g. 720h (30 days) or 1h30m",
        ),
    ),
    (
        &[],
        CelRule::new(
            "(has(self.spec.device) && has(self.spec.device.deviceName)) || size(self.metadata.name) <= 15",
            "metadata.name is longer than 15 characters, so it cannot be the members' device name: set spec.device.deviceName (e.g. wgmesh)",
        )
        .at(".spec.device.deviceName"),
    ),
];

/// The rule on every selector requirement (`matchExpressions` items of each selector).
pub const REQUIREMENT_RULE: CelRule = CelRule::new(
    "(self.operator == 'In' || self.operator == 'NotIn') ? (has(self.values) && size(self.values) > 0) : !has(self.values)",
    "In and NotIn need at least one value in values; Exists and DoesNotExist take no values",
);

/// Where the selectors sit in the schema, each with `matchExpressions` under it.
pub(crate) const SELECTOR_PATHS: &[&[&str]] = &[
    &["spec", "nodeSelector"],
    &["spec", "topology", "hubAndSpoke", "hubSelector"],
    &["spec", "topology", "locations", "gatewaySelector"],
];

impl MeshSpec {
    /// The location label in effect.
    pub fn location_label(&self) -> &str {
        self.topology
            .locations
            .as_ref()
            .and_then(|l| l.label.as_deref())
            .unwrap_or(DEFAULT_LOCATION_LABEL)
    }
}
