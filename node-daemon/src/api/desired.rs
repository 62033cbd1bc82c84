//! From the API objects that concern this node to the [`DesiredNode`] the planner takes.
//!
//! Pure: keys, Secrets and DNS answers are looked up by the caller ([`super::source`]) and
//! passed in, so that every case here is a plain unit test.
//!
//! What cannot be configured yet (a key Secret not readable, a peer the operator has not
//! resolved) becomes a [`Problem`] on its object and disturbs nothing else. A device whose
//! Interface exists but cannot be configured right now is *retained*: left as it is in the
//! kernel, never torn down because of a transient gap.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use kube::ResourceExt;
use kwire_crds::v1alpha1::{Interface, KeyMode, MAIN_TABLE, Peer, Route};

use crate::model::{
    DesiredDevice, DesiredNode, DesiredRoute, IfaceName, OwnerRef, PeerConfig, PresharedKey,
    PrivateKey, PublicKey, RouteKey,
};

/// Why an object is not (fully) configured on this node; becomes a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// CamelCase reason for the condition.
    pub reason: &'static str,
    /// What is wrong and what to do, naming the objects; never key bytes.
    pub message: String,
}

impl Problem {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// `namespace/name` of an API object.
pub type ObjectKey = (String, String);

/// A key the caller could not produce, with the reason to report.
pub type KeyLookup<K> = Result<K, Problem>;

/// Everything [`translate`] needs.
#[derive(Debug, Default)]
pub struct NodeObjects<'a> {
    /// The Interfaces whose `spec.nodeName` is this node.
    pub interfaces: Vec<&'a Interface>,
    /// Peers and Routes of the namespaces those Interfaces live in (others are ignored).
    pub peers: Vec<&'a Peer>,
    pub routes: Vec<&'a Route>,
    /// The private key of each Interface, by `namespace/name`.
    pub private_keys: BTreeMap<ObjectKey, KeyLookup<PrivateKey>>,
    /// The pre-shared key of each Peer that has one, by `namespace/name`.
    pub preshared_keys: BTreeMap<ObjectKey, KeyLookup<PresharedKey>>,
    /// Answers for endpoint host names (`host:port` → address), looked up by the caller.
    pub resolved_hosts: BTreeMap<String, SocketAddr>,
}

/// The outcome of [`translate`].
#[derive(Debug, Default)]
pub struct Translation {
    pub desired: DesiredNode,
    /// Devices to leave exactly as they are (their Interface exists but is not configurable now).
    pub retained: BTreeSet<IfaceName>,
    /// Which device each Interface maps to on this node.
    pub devices: BTreeMap<ObjectKey, IfaceName>,
    pub interface_problems: BTreeMap<ObjectKey, Problem>,
    pub peer_problems: BTreeMap<ObjectKey, Problem>,
    pub route_problems: BTreeMap<ObjectKey, Problem>,
    /// Peers configured on a device of this node, and on which side.
    pub peer_sides: BTreeMap<ObjectKey, PeerSide>,
    /// The device and public key of each configured Peer's entry on this node.
    pub peer_entries: BTreeMap<ObjectKey, (IfaceName, PublicKey)>,
    /// The kernel identity of each configured Route.
    pub route_keys: BTreeMap<ObjectKey, RouteKey>,
}

/// Which end of a Peer this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerSide {
    /// The node of `spec.interface`.
    Local,
    /// The node of `spec.remote.interface` (in-cluster links).
    Remote,
}

fn key_of<K: kube::Resource>(object: &K) -> ObjectKey {
    (object.namespace().unwrap_or_default(), object.name_any())
}

fn is_deleted<K: kube::Resource>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_some()
}

/// Builds the node's desired state. Deterministic: the same objects give the same result.
pub fn translate(objects: &NodeObjects<'_>) -> Translation {
    let mut out = Translation::default();
    let mut interfaces: Vec<&Interface> = objects.interfaces.clone();
    interfaces.sort_by_key(|i| key_of(*i));

    for interface in interfaces {
        let key = key_of(interface);
        if is_deleted(interface) {
            continue;
        }
        let name = interface.device_name();
        let device_name = match IfaceName::new(&name) {
            Ok(n) => n,
            Err(e) => {
                out.interface_problems
                    .insert(key, Problem::new("InvalidDeviceName", e.to_string()));
                continue;
            }
        };
        if let Some((other, _)) = out.devices.iter().find(|(_, d)| **d == device_name) {
            let message = format!(
                "device {device_name} is already configured by Interface {}/{} on this node: give one of them another spec.deviceName",
                other.0, other.1
            );
            out.interface_problems
                .insert(key, Problem::new("DeviceNameConflict", message));
            continue;
        }
        out.devices.insert(key.clone(), device_name.clone());
        match desired_device(interface, &key, objects) {
            Ok(device) => {
                out.desired.devices.insert(device_name, device);
            }
            Err(problem) => {
                out.retained.insert(device_name);
                out.interface_problems.insert(key, problem);
            }
        }
    }

    add_peers(objects, &mut out);
    add_routes(objects, &mut out);
    set_node_forwarding(&mut out.desired);
    out.desired.retained = out.retained.clone();
    out
}

fn desired_device(
    interface: &Interface,
    key: &ObjectKey,
    objects: &NodeObjects<'_>,
) -> Result<DesiredDevice, Problem> {
    let owner =
        OwnerRef::new(&key.0, &key.1).map_err(|e| Problem::new("InvalidName", e.to_string()))?;
    let private_key = match objects.private_keys.get(key) {
        Some(Ok(k)) => k.clone(),
        Some(Err(problem)) => return Err(problem.clone()),
        None => {
            let waiting = match interface.spec.key_mode.unwrap_or_default() {
                KeyMode::NodeLocal => "the node-local key has not been created yet",
                KeyMode::Secret => {
                    "the operator has not generated the key Secret yet (status.privateKeySecret is empty)"
                }
            };
            return Err(Problem::new("WaitingForKey", waiting));
        }
    };
    let written: Vec<String> = interface
        .spec
        .addresses
        .iter()
        .flatten()
        .map(|a| a.to_string())
        .collect();
    let sources = if written.is_empty() {
        interface
            .status
            .as_ref()
            .map(|s| s.addresses.clone())
            .unwrap_or_default()
    } else {
        written
    };
    if sources.is_empty() {
        return Err(Problem::new(
            "WaitingForAddress",
            "no address yet: the operator has not allocated one from spec.networks",
        ));
    }
    let addresses = sources
        .iter()
        .map(|a| a.parse::<IpNet>())
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|e| {
            Problem::new(
                "InvalidAddress",
                format!("an address of the Interface does not parse: {e}"),
            )
        })?;
    Ok(DesiredDevice {
        owner,
        private_key,
        listen_port: Some(interface.spec.listen_port),
        addresses,
        mtu: interface.spec.mtu.map(u32::from),
        peers: BTreeMap::new(),
        forwarding: interface.spec.forwarding.unwrap_or(false),
    })
}

/// The peer entry a Peer object asks for on this node's device, and on which side.
struct Entry {
    device: IfaceName,
    side: PeerSide,
    public_key: PublicKey,
    config: PeerConfig,
}

fn add_peers(objects: &NodeObjects<'_>, out: &mut Translation) {
    let mut peers: Vec<&Peer> = objects.peers.clone();
    peers.sort_by_key(|p| key_of(*p));
    for peer in peers {
        if is_deleted(peer) {
            continue;
        }
        let key = key_of(peer);
        let local = out
            .devices
            .get(&(key.0.clone(), peer.spec.interface.to_string()))
            .cloned();
        let remote = peer
            .spec
            .remote
            .interface
            .as_ref()
            .and_then(|r| out.devices.get(&(key.0.clone(), r.to_string())).cloned());
        for (device, side) in [(local, PeerSide::Local), (remote, PeerSide::Remote)] {
            let Some(device) = device else { continue };
            if out.retained.contains(&device) {
                continue;
            }
            match peer_entry(peer, &key, device, side, objects) {
                Ok(entry) => insert_entry(out, &key, entry),
                Err(problem) => {
                    out.peer_problems.insert(key.clone(), problem);
                }
            }
        }
    }
}

fn insert_entry(out: &mut Translation, key: &ObjectKey, entry: Entry) {
    let Some(device) = out.desired.devices.get_mut(&entry.device) else {
        return;
    };
    if device.peers.contains_key(&entry.public_key) {
        out.peer_problems.insert(
            key.clone(),
            Problem::new(
                "DuplicatePeer",
                format!(
                    "device {} already has a peer with public key {}: another Peer object configures the same remote",
                    entry.device, entry.public_key
                ),
            ),
        );
        return;
    }
    device.peers.insert(entry.public_key, entry.config);
    out.peer_sides.insert(key.clone(), entry.side);
    out.peer_entries
        .insert(key.clone(), (entry.device, entry.public_key));
}

fn peer_entry(
    peer: &Peer,
    key: &ObjectKey,
    device: IfaceName,
    side: PeerSide,
    objects: &NodeObjects<'_>,
) -> Result<Entry, Problem> {
    let resolved = peer.status.as_ref().and_then(|s| s.resolved.as_ref());
    let external = peer.spec.remote.public_key.as_ref();
    let (public_key, endpoint, allowed) = match side {
        PeerSide::Local => {
            let public_key = external
                .map(|k| k.to_string())
                .or_else(|| resolved.and_then(|r| r.public_key.clone()));
            let endpoint = match (
                &peer.spec.remote.endpoint,
                resolved.and_then(|r| r.endpoint.clone()),
            ) {
                (_, Some(resolved)) => Some(resolved),
                (Some(ep), None) => Some(ep.to_socket_string(0)),
                (None, None) => None,
            };
            let allowed = match resolved {
                Some(r) if !r.allowed_ips.is_empty() => r.allowed_ips.clone(),
                _ if external.is_some() => peer
                    .spec
                    .allowed_ips
                    .iter()
                    .flatten()
                    .map(|p| p.to_string())
                    .collect(),
                _ => Vec::new(),
            };
            (public_key, endpoint, allowed)
        }
        PeerSide::Remote => (
            resolved.and_then(|r| r.local_public_key.clone()),
            resolved.and_then(|r| r.local_endpoint.clone()),
            resolved
                .map(|r| r.remote_allowed_ips.clone())
                .unwrap_or_default(),
        ),
    };
    let Some(public_key) = public_key else {
        return Err(Problem::new(
            "WaitingForOperator",
            "the remote public key is not resolved yet (status.resolved): is kwire-operator running?",
        ));
    };
    let public_key: PublicKey = public_key.parse().map_err(|_| {
        Problem::new(
            "InvalidPublicKey",
            "the remote public key is not 32 bytes of base64",
        )
    })?;
    let endpoint = match endpoint {
        None => None,
        Some(text) => Some(resolve_endpoint(&text, objects)?),
    };
    let allowed_ips = allowed
        .iter()
        .map(|a| a.parse::<IpNet>().map(|n| n.trunc()))
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|e| {
            Problem::new(
                "InvalidAllowedIPs",
                format!("an allowed IP does not parse: {e}"),
            )
        })?;
    let preshared_key = match objects.preshared_keys.get(key) {
        None => None,
        Some(Ok(psk)) => Some(psk.clone()),
        Some(Err(problem)) => return Err(problem.clone()),
    };
    let persistent_keepalive = peer
        .spec
        .persistent_keepalive
        .or_else(|| resolved.and_then(|r| r.persistent_keepalive))
        .filter(|k| *k > 0);
    Ok(Entry {
        device,
        side,
        public_key,
        config: PeerConfig {
            endpoint,
            allowed_ips,
            persistent_keepalive,
            preshared_key,
        },
    })
}

fn resolve_endpoint(text: &str, objects: &NodeObjects<'_>) -> Result<SocketAddr, Problem> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    objects.resolved_hosts.get(text).copied().ok_or_else(|| {
        Problem::new(
            "EndpointUnresolvable",
            format!("endpoint {text} does not resolve to an address from this node"),
        )
    })
}

fn add_routes(objects: &NodeObjects<'_>, out: &mut Translation) {
    let mut routes: Vec<&Route> = objects.routes.clone();
    routes.sort_by_key(|r| key_of(*r));
    let mut claimed: BTreeMap<RouteKey, ObjectKey> = BTreeMap::new();
    for route in routes {
        if is_deleted(route) {
            continue;
        }
        let key = key_of(route);
        let Some(device) = out
            .devices
            .get(&(key.0.clone(), route.spec.interface.to_string()))
            .cloned()
        else {
            continue;
        };
        if out.retained.contains(&device) {
            continue;
        }
        let (Ok(destination), via) = (
            route.spec.destination.net(),
            route.spec.via.as_ref().map(|v| v.addr()),
        ) else {
            out.route_problems.insert(
                key,
                Problem::new("InvalidRoute", "spec.destination does not parse"),
            );
            continue;
        };
        let via: Option<IpAddr> = match via {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => {
                out.route_problems
                    .insert(key, Problem::new("InvalidRoute", "spec.via does not parse"));
                continue;
            }
        };
        let route_key = RouteKey::new(route.spec.table.unwrap_or(MAIN_TABLE), destination);
        if let Some(first) = claimed.get(&route_key) {
            let message = format!(
                "Route {}/{} already sends {destination} (table {}) on this node: delete one of them",
                first.0, first.1, route_key.table
            );
            out.route_problems
                .insert(key, Problem::new("RouteConflict", message));
            continue;
        }
        claimed.insert(route_key, key.clone());
        out.route_keys.insert(key, route_key);
        out.desired.routes.insert(
            route_key,
            DesiredRoute {
                device,
                via,
                metric: route.spec.metric,
            },
        );
    }
}

/// Relaying needs the node-wide switch of each family a forwarding device carries.
fn set_node_forwarding(desired: &mut DesiredNode) {
    for device in desired.devices.values().filter(|d| d.forwarding) {
        for address in &device.addresses {
            match address {
                IpNet::V4(_) => desired.forwarding.ipv4 = true,
                IpNet::V6(_) => desired.forwarding.ipv6 = true,
            }
        }
    }
}
