//! Types shared by several kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::{EndpointHost, ObjectName};

/// Where a WireGuard peer can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// IP address (IPv4 or IPv6, without brackets) or DNS name.
    pub host: EndpointHost,
    /// UDP port. On an Interface it defaults to `listenPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

impl Endpoint {
    /// `host:port`, with brackets around an IPv6 host as WireGuard writes it.
    pub fn to_socket_string(&self, default_port: u16) -> String {
        let port = self.port.unwrap_or(default_port);
        if self.host.as_str().contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

/// A key of a Secret in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the namespace of the object that refers to it.
    pub name: ObjectName,
    /// Key inside the Secret's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// Conditions in the Kubernetes shape, as a list map keyed by `type` so that
/// each writer (operator, node daemon) owns its own entries under server-side apply.
pub type Conditions = Vec<Condition>;

/// Condition types and reasons, gathered so that writers and readers agree on spelling.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const CONNECTED: &str = "Connected";
    pub const CONFLICT: &str = "Conflict";
    pub const RESOLVED: &str = "Resolved";
    pub const KEY_READY: &str = "KeyReady";
    pub const ADDRESS_ALLOCATED: &str = "AddressAllocated";
    pub const TOPOLOGY_VALID: &str = "TopologyValid";
    /// On a Peer to an external peer: the local Interface's key was rotated and the far
    /// side, which kwire cannot configure, has not been seen using the new key yet.
    pub const ROTATION_PENDING: &str = "RotationPending";
    /// On a Peer whose two ends both report their device's MTU: `True` when they are the
    /// same; `False` (reason `MTUMismatch`) when they differ, as packets of the side with the
    /// larger MTU may not fit the path of the other.
    pub const MTUS_MATCH: &str = "MTUsMatch";
}
