//! Resolving a Peer: the two peer entries (one per device) that the node daemons configure.
//!
//! Pure: reads only the [`World`] and what the caller observed about the pre-shared key.
//! Whatever can be resolved is filled in even when something is missing; the `Resolved`
//! condition then says `False`, with a reason and a message naming the object and the fix.

use std::collections::BTreeSet;

use ipnet::IpNet;
use kube_core::ResourceExt;
use kwire_crds::v1alpha1::{Interface, KeyMode, Peer, ResolvedPeer, condition};

use crate::condition::DesiredCondition;
use crate::reasons;
use crate::world::{NodeLookup, World, host_prefix, ns_of};

/// What the Peer controller observed about the pre-shared key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PskState {
    /// The Peer uses none.
    None,
    /// The key is in this Secret.
    Ready { secret: String },
    /// The key cannot be used yet (missing or invalid Secret).
    Problem {
        reason: &'static str,
        message: String,
    },
}

/// Something the resolution could not find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub reason: &'static str,
    pub message: String,
}

/// The resolved entries, the remote's display name, and the `Resolved` condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    pub remote_name: Option<String>,
    pub resolved: ResolvedPeer,
    pub condition: DesiredCondition,
}

/// `host:port`, with brackets around an IPv6 host.
pub fn socket_string(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Where peers reach an Interface: `spec.endpoint` (port defaults to `listenPort`), else
/// the Node's first InternalIP, else its first ExternalIP, with `listenPort`.
pub fn interface_endpoint(interface: &Interface, world: &World) -> Result<String, Missing> {
    let port = interface.spec.listen_port;
    if let Some(endpoint) = &interface.spec.endpoint {
        return Ok(endpoint.to_socket_string(port));
    }
    let name = interface.name_any();
    let node = interface.spec.node_name.as_str();
    match world.node(node) {
        NodeLookup::Known(info) => match info.endpoint_host() {
            Some(host) => Ok(socket_string(host, port)),
            None => Err(Missing {
                reason: reasons::NODE_ADDRESS_MISSING,
                message: format!(
                    "Node {node} has no InternalIP or ExternalIP address, so peers cannot reach Interface {name}: set spec.endpoint on Interface {name} (e.g. {{host: 192.0.2.10}})"
                ),
            }),
        },
        NodeLookup::Missing => Err(Missing {
            reason: reasons::NODE_NOT_FOUND,
            message: format!(
                "Interface {name} is on Node {node}, which does not exist: recreate the Interface with an existing spec.nodeName, or set spec.endpoint"
            ),
        }),
        NodeLookup::Unknown => Err(Missing {
            reason: reasons::NODE_ADDRESS_UNKNOWN,
            message: format!(
                "the address of Node {node} is not known here, so the endpoint of Interface {name} cannot be resolved: set spec.endpoint on Interface {name}"
            ),
        }),
    }
}

fn key_pending(interface: &Interface, side: &str) -> Missing {
    let name = interface.name_any();
    let node_local = interface.spec.key_mode == Some(KeyMode::NodeLocal);
    Missing {
        reason: if side == "local" {
            reasons::LOCAL_KEY_PENDING
        } else {
            reasons::REMOTE_KEY_PENDING
        },
        message: if node_local {
            format!(
                "the {side} Interface {name} has no public key yet: it uses keyMode NodeLocal, so the node daemon on Node {} reports it once it has generated the key; check that the daemon runs there",
                interface.spec.node_name
            )
        } else {
            format!(
                "the {side} Interface {name} has no public key yet: see its KeyReady condition (kubectl describe interface {name})"
            )
        },
    }
}

fn address_pending(interface: &Interface, side: &str) -> Missing {
    let name = interface.name_any();
    Missing {
        reason: if side == "local" {
            reasons::LOCAL_ADDRESS_PENDING
        } else {
            reasons::REMOTE_ADDRESS_PENDING
        },
        message: format!(
            "the {side} Interface {name} has no address yet: see its AddressAllocated condition (kubectl describe interface {name})"
        ),
    }
}

/// Host prefixes of `addresses` plus `extra`, deduplicated and sorted.
pub fn allowed_ips(addresses: &[IpNet], extra: &[IpNet]) -> Vec<IpNet> {
    addresses
        .iter()
        .map(|a| host_prefix(a.addr()))
        .chain(extra.iter().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn strings(nets: &[IpNet]) -> Vec<String> {
    nets.iter().map(ToString::to_string).collect()
}

fn prefixes(list: &Option<Vec<kwire_crds::names::IpPrefix>>) -> Vec<IpNet> {
    list.iter().flatten().filter_map(|p| p.net().ok()).collect()
}

/// Resolves one Peer against the world.
pub fn resolve_peer(peer: &Peer, world: &World, psk: &PskState) -> Resolution {
    let ns = ns_of(peer);
    let name = peer.name_any();
    let mut problems: Vec<Missing> = Vec::new();
    let mut resolved = ResolvedPeer {
        persistent_keepalive: peer.spec.persistent_keepalive,
        ..ResolvedPeer::default()
    };
    match psk {
        PskState::None => {}
        PskState::Ready { secret } => resolved.preshared_key_secret = Some(secret.clone()),
        PskState::Problem { reason, message } => problems.push(Missing {
            reason,
            message: message.clone(),
        }),
    }

    let local_name = peer.spec.interface.as_str();
    let local = world.interface(&ns, local_name);
    let remote_name;
    match local {
        None => problems.insert(
            0,
            Missing {
                reason: reasons::LOCAL_INTERFACE_NOT_FOUND,
                message: format!(
                    "Peer {name} belongs to Interface {local_name}, which does not exist in namespace {ns}: create Interface {local_name}, or recreate the Peer with an existing spec.interface"
                ),
            },
        ),
        Some(local) => {
            resolved.local_node = Some(local.spec.node_name.to_string());
            resolved.local_public_key = local.status.as_ref().and_then(|s| s.public_key.clone());
            match interface_endpoint(local, world) {
                Ok(e) => resolved.local_endpoint = Some(e),
                Err(m) if peer.spec.remote.interface.is_some() => problems.push(m),
                Err(_) => {}
            }
        }
    }

    if let Some(remote_key) = &peer.spec.remote.public_key {
        // An external peer: everything it needs is in the spec.
        remote_name = Some(format!("external:{}", remote_key.prefix()));
        resolved.public_key = Some(remote_key.to_string());
        resolved.endpoint = peer
            .spec
            .remote
            .endpoint
            .as_ref()
            .map(|e| e.to_socket_string(0));
        resolved.allowed_ips = strings(&allowed_ips(&[], &prefixes(&peer.spec.allowed_ips)));
    } else {
        let remote_ref = peer
            .spec
            .remote
            .interface
            .as_ref()
            .map(|r| r.as_str())
            .unwrap_or_default();
        remote_name = Some(remote_ref.to_string());
        // Missing objects come first, the local Interface before the remote one.
        let first = usize::from(local.is_none());
        match world.interface(&ns, remote_ref) {
            None => problems.insert(
                first,
                Missing {
                    reason: reasons::REMOTE_INTERFACE_NOT_FOUND,
                    message: format!(
                        "Peer {name} links to Interface {remote_ref}, which does not exist in namespace {ns}: create Interface {remote_ref}, or fix spec.remote.interface"
                    ),
                },
            ),
            Some(_) if remote_ref == local_name => problems.insert(
                first,
                Missing {
                    reason: reasons::SELF_PEER,
                    message: format!(
                        "Peer {name} links Interface {local_name} to itself: set spec.remote.interface to another Interface"
                    ),
                },
            ),
            Some(remote) => {
                resolved.remote_node = Some(remote.spec.node_name.to_string());
                resolved.public_key = remote.status.as_ref().and_then(|s| s.public_key.clone());
                if resolved.public_key.is_none() {
                    problems.push(key_pending(remote, "remote"));
                }
                match interface_endpoint(remote, world) {
                    Ok(e) => resolved.endpoint = Some(e),
                    Err(m) => problems.push(m),
                }
                let remote_addresses = world.addresses(remote);
                if remote_addresses.is_empty() {
                    problems.push(address_pending(remote, "remote"));
                }
                resolved.allowed_ips = strings(&allowed_ips(
                    &remote_addresses,
                    &prefixes(&peer.spec.allowed_ips),
                ));
                if let Some(local) = local {
                    if resolved.local_public_key.is_none() {
                        problems.push(key_pending(local, "local"));
                    }
                    let local_addresses = world.addresses(local);
                    if local_addresses.is_empty() {
                        problems.push(address_pending(local, "local"));
                    }
                    resolved.remote_allowed_ips = strings(&allowed_ips(
                        &local_addresses,
                        &prefixes(&peer.spec.remote_allowed_ips),
                    ));
                }
            }
        }
    }

    let condition = match problems.first() {
        None => DesiredCondition::ok(
            condition::RESOLVED,
            reasons::RESOLVED,
            match (&resolved.remote_node, &remote_name) {
                (Some(node), Some(remote)) => format!(
                    "{local_name} (node {}) and {remote} (node {node}) are resolved",
                    resolved.local_node.as_deref().unwrap_or("?")
                ),
                (_, Some(remote)) => format!("{local_name} and {remote} are resolved"),
                _ => "resolved".to_string(),
            },
        ),
        Some(first) => DesiredCondition::failed(
            condition::RESOLVED,
            first.reason,
            problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    Resolution {
        remote_name,
        resolved,
        condition,
    }
}

#[cfg(test)]
mod tests;
