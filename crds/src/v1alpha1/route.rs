//! `Route`: a route on the node of an Interface (the seed's `ip route add … via B`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Conditions;
use crate::names::{IpAddress, IpPrefix, ObjectName};
use crate::schema::CelRule;

/// A route through a WireGuard device, on that device's node.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kwire.dev",
    version = "v1alpha1",
    kind = "Route",
    namespaced,
    status = "RouteStatus",
    shortname = "wgroute",
    category = "kwire",
    selectable = ".spec.interface",
    printcolumn = r#"{"name":"Interface","type":"string","jsonPath":".spec.interface"}"#,
    printcolumn = r#"{"name":"Destination","type":"string","jsonPath":".spec.destination"}"#,
    printcolumn = r#"{"name":"Via","type":"string","jsonPath":".spec.via"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// The Interface (in this namespace) whose device the route goes through. Immutable.
    pub interface: ObjectName,
    /// The destination network, e.g. `10.2.0.0/24`.
    pub destination: IpPrefix,
    /// Next hop, of the destination's IP family (`ip route add … via 10.1.0.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<IpAddress>,
    /// Route metric (priority); lower wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    /// Routing table number (default: main, 254). 0 and 255 (local) are not allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub table: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
}

/// The default routing table.
pub const MAIN_TABLE: u32 = 254;

pub(crate) const RULES: &[(&[&str], CelRule)] = &[
    (
        &["spec"],
        CelRule::new(
            "!has(self.via) || !isIP(self.via) || !isCIDR(self.destination) || ip(self.via).family() == cidr(self.destination).ip().family()",
            "spec.via must be of the same IP family as spec.destination",
        )
        .at(".via"),
    ),
    (
        &["spec"],
        CelRule::new(
            "!has(self.table) || self.table != 255",
            "spec.table 255 is the kernel's local table; use main (254, the default) or a table of your own",
        )
        .at(".table"),
    ),
    (
        &["spec", "interface"],
        CelRule::new(
            "self == oldSelf",
            "spec.interface is immutable: create a new Route for another Interface",
        ),
    ),
];
