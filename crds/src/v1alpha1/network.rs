//! `Network`: an address space that Interfaces take addresses from.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Conditions;
use crate::names::{IpPrefix, ObjectName};
use crate::schema::CelRule;

/// An address space for WireGuard interfaces, such as the seed's per-link
/// `10.1.0.0/24`: either an explicit `cidr`, or a `prefixLength` that the operator
/// carves out of the address pools configured at install time.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kwire.dev",
    version = "v1alpha1",
    kind = "Network",
    namespaced,
    status = "NetworkStatus",
    shortname = "wgnet",
    category = "kwire",
    printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".status.cidr"}"#,
    printcolumn = r#"{"name":"Allocated","type":"integer","jsonPath":".status.allocated"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// The network, written by hand, e.g. `10.1.0.0/24` or `fd00:1::/64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<IpPrefix>,

    /// Size of a network to carve from an install-time pool (e.g. 24 for a /24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 128))]
    pub prefix_length: Option<u8>,

    /// Which install-time pool to carve from (default: the first pool of the IP family).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<ObjectName>,

    /// The IP family to carve, `IPv4` (default) or `IPv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family: Option<IpFamily>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IpFamily {
    #[default]
    IPv4,
    IPv6,
}

/// The network in use and who holds which address.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
    /// The CIDR in use (the spec's, or the one carved from a pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// How many addresses are allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<u32>,
    /// Every allocation, so that a restarted operator reproduces the same state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["address"]))]
    pub allocations: Vec<Allocation>,
}

/// One address held by one Interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// The address with the network's prefix length, e.g. `10.1.0.1/24`.
    pub address: String,
    /// The Interface that holds it.
    pub interface: String,
    /// The holder's UID, so that a re-created Interface of the same name is a new holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

pub(crate) const RULES: &[(&[&str], CelRule)] = &[
    (
        &["spec"],
        CelRule::new(
            "has(self.cidr) != has(self.prefixLength)",
            "set exactly one of spec.cidr (e.g. 10.1.0.0/24) or spec.prefixLength (e.g. 24, carved from an install-time pool)",
        ),
    ),
    (
        &["spec"],
        CelRule::new(
            "!has(self.cidr) || (!has(self.pool) && !has(self.ipFamily))",
            "spec.pool and spec.ipFamily choose where spec.prefixLength is carved from; they cannot be used with spec.cidr",
        ),
    ),
    (
        &["spec"],
        CelRule::new(
            "!has(self.prefixLength) || self.prefixLength <= 32 || (has(self.ipFamily) && self.ipFamily == 'IPv6')",
            "spec.prefixLength above 32 needs spec.ipFamily: IPv6",
        )
        .at(".prefixLength"),
    ),
    (
        &["spec", "cidr"],
        CelRule::new(
            "self == oldSelf",
            "spec.cidr is immutable while addresses are allocated from it: create a new Network instead",
        ),
    ),
    (
        &["spec", "prefixLength"],
        CelRule::new(
            "self == oldSelf",
            "spec.prefixLength is immutable while addresses are allocated from it: create a new Network instead",
        ),
    ),
    // The rules above only run when both versions have the field; this one stops a Network
    // from trading one kind of subnet for the other, which would move every address in it.
    (
        &["spec"],
        CelRule::new(
            "has(self.cidr) == has(oldSelf.cidr)",
            "a Network cannot switch between spec.cidr and spec.prefixLength: create a new Network instead",
        ),
    ),
];
