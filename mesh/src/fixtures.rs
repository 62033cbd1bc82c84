//! Test builders for the API types (`cfg(test)`, or the `testing` feature for other crates' tests).

use std::sync::Arc;

use kwire_crds::v1alpha1::{Interface, Network, Peer, Route};
use serde_json::{Value, json};

use crate::world::{NodeInfo, World};

pub const NS: &str = "wg";

fn object<T: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> T {
    serde_json::from_value(json!({
        "apiVersion": "kwire.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1},
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("fixture {kind} {name}: {e}"))
}

/// An Interface on `node` with hand-written `addresses` and the default port.
pub fn interface(name: &str, node: &str, addresses: &[&str]) -> Interface {
    object(
        "Interface",
        name,
        json!({"nodeName": node, "addresses": addresses, "listenPort": 51820}),
    )
}

/// An Interface taking its address from `network`.
pub fn interface_in(name: &str, node: &str, network: &str, host_index: Option<u32>) -> Interface {
    let mut entry = json!({"name": network});
    if let Some(h) = host_index {
        entry["hostIndex"] = json!(h);
    }
    object(
        "Interface",
        name,
        json!({"nodeName": node, "networks": [entry], "listenPort": 51820}),
    )
}

pub fn network(name: &str, cidr: &str) -> Network {
    object("Network", name, json!({"cidr": cidr}))
}

pub fn network_carved(name: &str, prefix_length: u8) -> Network {
    object("Network", name, json!({"prefixLength": prefix_length}))
}

/// An in-cluster Peer from `local` to `remote`.
pub fn peer(name: &str, local: &str, remote: &str) -> Peer {
    object(
        "Peer",
        name,
        json!({"interface": local, "remote": {"interface": remote}}),
    )
}

pub fn external_peer(name: &str, local: &str, key: &str, endpoint: Option<(&str, u16)>) -> Peer {
    let mut remote = json!({"publicKey": key});
    if let Some((host, port)) = endpoint {
        remote["endpoint"] = json!({"host": host, "port": port});
    }
    object("Peer", name, json!({"interface": local, "remote": remote}))
}

pub fn route(name: &str, interface: &str, destination: &str, via: Option<&str>) -> Route {
    let mut spec = json!({"interface": interface, "destination": destination});
    if let Some(via) = via {
        spec["via"] = json!(via);
    }
    object("Route", name, spec)
}

pub fn node(name: &str, internal: &[&str], external: &[&str]) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        internal: internal.iter().map(ToString::to_string).collect(),
        external: external.iter().map(ToString::to_string).collect(),
    }
}

/// Sets `status.publicKey` (and the prefix) as the Interface controller would.
pub fn with_key(mut interface: Interface, key: &str) -> Interface {
    let status = interface.status.get_or_insert_with(Default::default);
    status.public_key = Some(key.into());
    status.public_key_prefix = Some(key[..8].into());
    interface
}

/// Edits the spec through JSON, for the odd field the builders do not cover.
pub fn patch_spec<T>(object: T, patch: Value) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut value = serde_json::to_value(&object).unwrap();
    if let (Some(spec), Some(patch)) = (value["spec"].as_object_mut(), patch.as_object()) {
        for (k, v) in patch {
            if v.is_null() {
                spec.remove(k);
            } else {
                spec.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(value).unwrap()
}

/// A world of the given objects.
pub fn world(
    networks: Vec<Network>,
    interfaces: Vec<Interface>,
    peers: Vec<Peer>,
    routes: Vec<Route>,
    nodes: Option<Vec<NodeInfo>>,
) -> World {
    World::new(
        networks.into_iter().map(Arc::new).collect(),
        interfaces.into_iter().map(Arc::new).collect(),
        peers.into_iter().map(Arc::new).collect(),
        routes.into_iter().map(Arc::new).collect(),
        nodes,
    )
}

pub const KEY_A: &str = "d7n3aHWXo8ES1G6Z4qZ6/fhPmKWjCGIl6piHhsMntQ0=";
pub const KEY_B: &str = "L+V9o0fNYkMVKNqsX7spBzD/9oSvxM/C7ZCZX1jLO3Q=";
pub const KEY_EXTERNAL: &str = "OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=";
