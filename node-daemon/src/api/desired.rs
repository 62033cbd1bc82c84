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
use kwire_mesh::members::mesh_identity;
use kwire_mesh::{Expansion, PeerLink, members};

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
    /// The generated Interfaces of the Meshes this node is a member of (every member's,
    /// this node's included): the far ends of the members' peers.
    pub mesh_members: Vec<&'a Interface>,
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
    /// Peers with an entry on a device of this node, and on which side; also those whose
    /// entry cannot be configured yet (see `peer_problems`), so that the node reports on the
    /// side it holds.
    pub peer_sides: BTreeMap<ObjectKey, PeerSide>,
    /// The device and public key of each configured Peer's entry on this node (its local
    /// end's when this node holds both).
    pub peer_entries: BTreeMap<ObjectKey, (IfaceName, PublicKey)>,
    /// The remote end's entry of Peers whose two Interfaces are both on this node: the node
    /// reports both ends, `Ready`/`Connected` from the local one and `remoteEnd` from this.
    pub remote_ends_here: BTreeMap<ObjectKey, (IfaceName, PublicKey)>,
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
    let mesh_routes = add_mesh_peers(objects, &mut out);
    add_routes(objects, &mut out);
    for (key, route) in mesh_routes {
        // A Route object to the same destination keeps its route.
        out.desired.routes.entry(key).or_insert(route);
    }
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
                    // The remote node of an unresolved Peer reports its remote end, never
                    // the conditions the local node owns.
                    out.peer_sides.entry(key.clone()).or_insert(side);
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
    // Both ends on this node: the local end (added first) says what the node reports.
    if entry.side == PeerSide::Remote && out.peer_sides.get(key) == Some(&PeerSide::Local) {
        out.remote_ends_here
            .insert(key.clone(), (entry.device, entry.public_key));
        return;
    }
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
    let public_key: PublicKey = public_key
        .parse()
        .map_err(|e| Problem::new("InvalidPublicKey", format!("the remote public key {e}")))?;
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

/// The peers of this node's Mesh members, derived from the members' generated Interfaces
/// (decision 0010, "How a member sees the others"), with the link rules of `kwire-mesh`:
/// each Interface of the same Mesh (same label and controlling Mesh uid, so a hand-written
/// Interface carrying the label is ignored) is read back into a member
/// ([`kwire_mesh::members::member_of`]: role, location, primary hub, announced prefixes from
/// its labels and annotations, endpoint from its `status.endpoint`), and
/// [`Expansion::from_members`] gives this member's links, as the operator's expansion does.
///
/// Each link becomes a peer: the member's `status.publicKey`, the link's endpoint, and as
/// allowed IPs the host prefixes of the members it carries (their `status.addresses`), the
/// mesh networks' CIDRs (from this member's own addresses and their prefix length) when it
/// carries the networks, and the announced prefixes it carries. A standby link (a spoke's
/// link to a hub that is not its primary one) has no allowed IPs: key and endpoint only. A
/// member whose key, addresses or endpoint are not known yet is left out until they are;
/// nothing else waits. The entries go into the same [`DesiredDevice::peers`] as Peer
/// objects' and are applied by the same diff; a key a Peer object configures keeps the
/// Peer's entry.
///
/// Returns the routes of the announced prefixes that go through this node's mesh peers:
/// through the member's device, added after the Route objects' (which win a clash).
fn add_mesh_peers(
    objects: &NodeObjects<'_>,
    out: &mut Translation,
) -> Vec<(RouteKey, DesiredRoute)> {
    let mut routes = Vec::new();
    let mut members: Vec<&Interface> = objects
        .mesh_members
        .iter()
        .copied()
        .filter(|i| !is_deleted(*i))
        .collect();
    members.sort_by_key(|i| key_of(*i));
    for local in &objects.interfaces {
        let Some(mesh) = mesh_identity(local) else {
            continue;
        };
        let key = key_of(*local);
        let Some(device) = out.devices.get(&key).cloned() else {
            continue;
        };
        if out.retained.contains(&device) {
            continue;
        }
        let Some(settings) = members::device_of(local) else {
            continue;
        };
        let Some(own_addresses) = out
            .desired
            .devices
            .get(&device)
            .map(|d| d.addresses.clone())
        else {
            continue;
        };
        let topology = members::topology_of(local);
        let same_mesh: BTreeMap<String, &Interface> = members
            .iter()
            .copied()
            .filter(|i| key_of(*i) != key && mesh_identity(i).as_ref() == Some(&mesh))
            .chain([*local])
            .map(|i| (i.name_any(), i))
            .collect();
        let endpoints: BTreeMap<&str, SocketAddr> = same_mesh
            .iter()
            .filter_map(|(name, i)| {
                let text = i.status.as_ref()?.endpoint.as_deref()?;
                Some((name.as_str(), resolve_endpoint(text, objects).ok()?))
            })
            .collect();
        let records = same_mesh
            .iter()
            .filter_map(|(name, i)| {
                let endpoint = endpoints.get(name.as_str()).map(SocketAddr::ip);
                members::member_of(i, topology, endpoint)
            })
            .collect();
        let view = Expansion::from_members(&mesh.1, topology, settings, records);
        let Some(links) = view.links(&local.name_any()) else {
            continue;
        };
        let addresses: BTreeMap<String, Vec<IpAddr>> = same_mesh
            .iter()
            .map(|(name, i)| (name.clone(), member_addresses(i)))
            .collect();
        let network_cidrs: Vec<IpNet> = own_addresses.iter().map(IpNet::trunc).collect();
        let mut configured = Vec::new();
        for link in links {
            let Some(member) = same_mesh.get(&link.member) else {
                continue;
            };
            let Some((public_key, config)) = mesh_peer(&link, member, &addresses, &network_cidrs)
            else {
                continue;
            };
            let Some(desired) = out.desired.devices.get_mut(&device) else {
                continue;
            };
            desired.peers.entry(public_key).or_insert(config);
            configured.push(link);
        }
        for prefix in view.routes(&configured) {
            let route = DesiredRoute {
                device: device.clone(),
                via: None,
                metric: None,
            };
            routes.push((RouteKey::new(MAIN_TABLE, prefix), route));
        }
    }
    routes
}

/// A member's addresses, from its `status.addresses`.
fn member_addresses(member: &Interface) -> Vec<IpAddr> {
    member
        .status
        .iter()
        .flat_map(|s| &s.addresses)
        .filter_map(|a| a.parse::<IpNet>().ok())
        .map(|a| a.addr())
        .collect()
}

/// The peer entry of a link to another member, once its key, endpoint and addresses are
/// known.
fn mesh_peer(
    link: &PeerLink,
    member: &Interface,
    addresses: &BTreeMap<String, Vec<IpAddr>>,
    network_cidrs: &[IpNet],
) -> Option<(PublicKey, PeerConfig)> {
    let status = member.status.as_ref()?;
    let public_key: PublicKey = status.public_key.as_deref()?.parse().ok()?;
    if addresses.get(&link.member).is_none_or(Vec::is_empty) {
        return None;
    }
    let allowed_ips = Expansion::allowed_ips(link, addresses, network_cidrs)
        .into_iter()
        .collect();
    Some((
        public_key,
        PeerConfig {
            endpoint: Some(link.endpoint?),
            allowed_ips,
            persistent_keepalive: link.persistent_keepalive.filter(|s| *s > 0),
            preshared_key: None,
        },
    ))
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

#[cfg(test)]
mod tests {
    use kwire_crds::manifest::{KwireObject, parse_manifests};
    use kwire_crds::v1alpha1::{InterfaceStatus, PeerStatus, ResolvedPeer};

    use super::*;

    const RELAY: &str = include_str!("../../../examples/seed/relay.yaml");
    const NS: &str = "seed";

    fn key(n: u8) -> PrivateKey {
        let mut bytes = [n; 32];
        bytes[0] &= 248;
        bytes[31] = (bytes[31] & 127) | 64;
        PrivateKey::from_bytes(bytes)
    }

    fn public(n: u8) -> String {
        key(n).public_key().to_base64()
    }

    /// The seed's relay as the API would hold it once the operator resolved every Peer.
    fn relay() -> (Vec<Interface>, Vec<Peer>, Vec<Route>) {
        let (mut interfaces, mut peers, mut routes) = (Vec::new(), Vec::new(), Vec::new());
        for object in parse_manifests(RELAY).unwrap() {
            match object {
                KwireObject::Interface(mut i) => {
                    i.metadata.namespace = Some(NS.into());
                    i.status = Some(InterfaceStatus {
                        addresses: i
                            .spec
                            .addresses
                            .iter()
                            .flatten()
                            .map(ToString::to_string)
                            .collect(),
                        private_key_secret: Some(format!("{}-key", i.name_any())),
                        ..InterfaceStatus::default()
                    });
                    interfaces.push(*i);
                }
                KwireObject::Peer(mut p) => {
                    p.metadata.namespace = Some(NS.into());
                    let (local, remote, remote_ep, local_ep) = match p.name_any().as_str() {
                        "a-to-b" => (1, 2, "10.211.55.11:22222", "10.211.55.10:11111"),
                        _ => (3, 4, "10.211.55.12:33333", "10.211.55.11:23333"),
                    };
                    p.status = Some(PeerStatus {
                        resolved: Some(ResolvedPeer {
                            public_key: Some(public(remote)),
                            endpoint: Some(remote_ep.into()),
                            allowed_ips: p
                                .spec
                                .allowed_ips
                                .iter()
                                .flatten()
                                .map(ToString::to_string)
                                .collect(),
                            local_public_key: Some(public(local)),
                            local_endpoint: Some(local_ep.into()),
                            remote_allowed_ips: p
                                .spec
                                .remote_allowed_ips
                                .iter()
                                .flatten()
                                .map(ToString::to_string)
                                .collect(),
                            persistent_keepalive: Some(15),
                            ..ResolvedPeer::default()
                        }),
                        ..PeerStatus::default()
                    });
                    peers.push(*p);
                }
                KwireObject::Route(mut r) => {
                    r.metadata.namespace = Some(NS.into());
                    routes.push(*r);
                }
                _ => {}
            }
        }
        (interfaces, peers, routes)
    }

    fn keys_of(interfaces: &[&Interface]) -> BTreeMap<ObjectKey, KeyLookup<PrivateKey>> {
        let numbers = [
            ("a-wg0-client", 1),
            ("b-wg0-server", 2),
            ("b-wg1-client", 3),
            ("c-wg0-server", 4),
        ];
        interfaces
            .iter()
            .map(|i| {
                let n = numbers
                    .iter()
                    .find(|(name, _)| *name == i.name_any())
                    .unwrap()
                    .1;
                ((NS.to_string(), i.name_any()), Ok(key(n)))
            })
            .collect()
    }

    fn on_node<'a>(
        node: &str,
        all: &'a (Vec<Interface>, Vec<Peer>, Vec<Route>),
    ) -> NodeObjects<'a> {
        let interfaces: Vec<&Interface> = all
            .0
            .iter()
            .filter(|i| i.spec.node_name.as_str() == node)
            .collect();
        NodeObjects {
            private_keys: keys_of(&interfaces),
            interfaces,
            peers: all.1.iter().collect(),
            routes: all.2.iter().collect(),
            ..NodeObjects::default()
        }
    }

    fn dev(name: &str) -> IfaceName {
        IfaceName::new(name).unwrap()
    }

    #[test]
    fn node_b_of_the_seed_relays_between_its_two_devices() {
        let all = relay();
        let t = translate(&on_node("b", &all));
        assert!(
            t.interface_problems.is_empty() && t.peer_problems.is_empty(),
            "{t:?}"
        );
        let d = &t.desired;
        assert_eq!(
            d.devices.keys().cloned().collect::<Vec<_>>(),
            [dev("wg0-server"), dev("wg1-client")]
        );
        assert!(d.forwarding.ipv4 && !d.forwarding.ipv6);

        // B holds the remote end of a-to-b: A's key, A's endpoint, what B accepts from A.
        let server = &d.devices[&dev("wg0-server")];
        assert!(server.forwarding);
        assert_eq!(server.listen_port, Some(22222));
        let from_a = &server.peers[&key(1).public_key()];
        assert_eq!(from_a.endpoint, Some("10.211.55.10:11111".parse().unwrap()));
        assert_eq!(from_a.allowed_ips, ["10.1.0.1/32".parse().unwrap()].into());
        assert_eq!(from_a.persistent_keepalive, Some(15));

        // B holds the local end of b-to-c: C's key and endpoint, C's address.
        let client = &d.devices[&dev("wg1-client")];
        let to_c = &client.peers[&key(4).public_key()];
        assert_eq!(to_c.endpoint, Some("10.211.55.12:33333".parse().unwrap()));
        assert_eq!(to_c.allowed_ips, ["10.2.0.2/32".parse().unwrap()].into());
        assert!(d.routes.is_empty(), "B has no Route of its own");
        assert_eq!(
            t.peer_sides[&(NS.into(), "a-to-b".into())],
            PeerSide::Remote
        );
        assert_eq!(t.peer_sides[&(NS.into(), "b-to-c".into())], PeerSide::Local);
    }

    #[test]
    fn node_a_routes_c_network_through_its_device_with_b_allowing_it() {
        let all = relay();
        let t = translate(&on_node("a", &all));
        let d = &t.desired;
        let to_b = &d.devices[&dev("wg0-client")].peers[&key(2).public_key()];
        assert_eq!(
            to_b.allowed_ips,
            [
                "10.1.0.2/32".parse().unwrap(),
                "10.2.0.0/24".parse().unwrap()
            ]
            .into()
        );
        let route = &d.routes[&RouteKey::new(MAIN_TABLE, "10.2.0.0/24".parse().unwrap())];
        assert_eq!(route.device, dev("wg0-client"));
        assert_eq!(route.via, Some("10.1.0.2".parse().unwrap()));
        assert!(!d.forwarding.ipv4, "A does not relay");
    }

    #[test]
    fn a_peer_with_both_ends_on_this_node_is_reported_from_its_local_end() {
        let mut all = relay();
        all.0
            .iter_mut()
            .find(|i| i.name_any() == "a-wg0-client")
            .unwrap()
            .spec
            .node_name = "b".parse().unwrap();
        let t = translate(&on_node("b", &all));
        let link = (NS.to_string(), "a-to-b".to_string());
        assert!(t.peer_problems.is_empty(), "{t:?}");
        assert_eq!(t.peer_sides[&link], PeerSide::Local);
        assert_eq!(
            t.peer_entries[&link],
            (dev("wg0-client"), key(2).public_key())
        );
        assert_eq!(
            t.remote_ends_here[&link],
            (dev("wg0-server"), key(1).public_key())
        );
        // Both devices have their end of the link.
        let d = &t.desired.devices;
        assert!(
            d[&dev("wg0-client")]
                .peers
                .contains_key(&key(2).public_key())
        );
        assert!(
            d[&dev("wg0-server")]
                .peers
                .contains_key(&key(1).public_key())
        );
    }

    #[test]
    fn a_missing_key_retains_that_device_and_disturbs_no_other() {
        let all = relay();
        let mut objects = on_node("b", &all);
        objects.private_keys.insert(
            (NS.into(), "b-wg0-server".into()),
            Err(Problem::new(
                "KeyUnavailable",
                "cannot use key of Secret seed/b-wg0-server-key",
            )),
        );
        let t = translate(&objects);
        assert_eq!(t.retained, [dev("wg0-server")].into());
        assert_eq!(t.desired.retained, t.retained);
        assert!(!t.desired.devices.contains_key(&dev("wg0-server")));
        assert_eq!(
            t.interface_problems[&(NS.into(), "b-wg0-server".into())].reason,
            "KeyUnavailable"
        );
        assert!(
            t.desired.devices[&dev("wg1-client")]
                .peers
                .contains_key(&key(4).public_key())
        );
    }

    #[test]
    fn an_unresolved_peer_waits_for_the_operator_without_touching_the_device() {
        let mut all = relay();
        all.1
            .iter_mut()
            .find(|p| p.name_any() == "b-to-c")
            .unwrap()
            .status = None;
        let t = translate(&on_node("b", &all));
        assert_eq!(
            t.peer_problems[&(NS.into(), "b-to-c".into())].reason,
            "WaitingForOperator"
        );
        let client = &t.desired.devices[&dev("wg1-client")];
        assert!(client.peers.is_empty());
        assert_eq!(client.addresses, ["10.2.0.1/24".parse().unwrap()].into());
        assert_eq!(t.peer_sides[&(NS.into(), "b-to-c".into())], PeerSide::Local);
    }

    #[test]
    fn the_remote_node_of_an_unresolved_peer_holds_its_remote_side() {
        let mut all = relay();
        all.1
            .iter_mut()
            .find(|p| p.name_any() == "b-to-c")
            .unwrap()
            .status = None;
        let t = translate(&on_node("c", &all));
        let key = (NS.to_string(), "b-to-c".to_string());
        assert_eq!(t.peer_problems[&key].reason, "WaitingForOperator");
        assert_eq!(t.peer_sides[&key], PeerSide::Remote);
        assert!(!t.peer_entries.contains_key(&key));
    }

    #[test]
    fn a_resolved_public_key_that_is_not_a_key_says_what_is_wrong() {
        let mut all = relay();
        let resolved = all
            .1
            .iter_mut()
            .find(|p| p.name_any() == "b-to-c")
            .and_then(|p| p.status.as_mut())
            .and_then(|s| s.resolved.as_mut())
            .unwrap();
        resolved.public_key = Some("c2hvcnQ=".into());
        let t = translate(&on_node("b", &all));
        let problem = &t.peer_problems[&(NS.to_string(), "b-to-c".to_string())];
        assert_eq!(problem.reason, "InvalidPublicKey");
        assert!(
            problem
                .message
                .starts_with("the remote public key decodes to 5 bytes instead of 32"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn two_routes_to_the_same_destination_conflict_and_the_first_wins() {
        let mut all = relay();
        let mut twin = all.2[0].clone();
        twin.metadata.name = Some("z-duplicate".into());
        all.2.push(twin);
        let t = translate(&on_node("a", &all));
        assert_eq!(t.desired.routes.len(), 1);
        assert_eq!(
            t.route_problems[&(NS.into(), "z-duplicate".into())].reason,
            "RouteConflict"
        );
    }

    #[test]
    fn an_unresolvable_dns_endpoint_is_reported_on_its_peer() {
        let mut all = relay();
        let peer = all.1.iter_mut().find(|p| p.name_any() == "b-to-c").unwrap();
        peer.status
            .as_mut()
            .unwrap()
            .resolved
            .as_mut()
            .unwrap()
            .endpoint = Some("c.invalid:33333".into());
        let t = translate(&on_node("b", &all));
        assert_eq!(
            t.peer_problems[&(NS.into(), "b-to-c".into())].reason,
            "EndpointUnresolvable"
        );
        let mut objects = on_node("b", &all);
        objects.resolved_hosts.insert(
            "c.invalid:33333".into(),
            "10.211.55.12:33333".parse().unwrap(),
        );
        assert!(translate(&objects).peer_problems.is_empty());
    }

    #[test]
    fn a_deleted_interface_is_no_longer_desired() {
        let mut all = relay();
        let a = all
            .0
            .iter_mut()
            .find(|i| i.name_any() == "a-wg0-client")
            .unwrap();
        a.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Default::default(),
        ));
        let t = translate(&on_node("a", &all));
        assert!(
            t.desired.devices.is_empty() && t.desired.routes.is_empty() && t.retained.is_empty()
        );
    }

    /// A generated member Interface of Mesh `mesh` (uid `uid-<mesh>`) on `node`, with the
    /// status the operator writes once key `n`, an address and the endpoint are known.
    fn member(mesh: &str, node: &str, n: u8, address: Option<&str>) -> Interface {
        let name = kwire_mesh::names::member_name(mesh, node);
        let mut i: Interface = serde_json::from_value(serde_json::json!({
            "apiVersion": "kwire.dev/v1alpha1",
            "kind": "Interface",
            "metadata": {
                "name": name, "namespace": NS,
                "labels": {"kwire.dev/mesh": mesh, "kwire.dev/mesh-role": "member"},
                "ownerReferences": [{"apiVersion": "kwire.dev/v1alpha1", "kind": "Mesh",
                    "name": mesh, "uid": format!("uid-{mesh}"), "controller": true}],
            },
            "spec": {"nodeName": node, "deviceName": "wgmesh", "listenPort": 51820,
                     "networks": [{"name": "overlay"}]},
        }))
        .unwrap();
        i.status = Some(InterfaceStatus {
            public_key: Some(public(n)),
            addresses: address.map(|a| vec![a.to_string()]).unwrap_or_default(),
            endpoint: Some(format!("10.211.55.{}:51820", 10 + n)),
            private_key_secret: Some(format!("{name}-key")),
            ..InterfaceStatus::default()
        });
        i
    }

    #[test]
    fn a_full_mesh_member_peers_with_every_other_member_of_its_mesh() {
        let a = member("overlay", "a", 1, Some("10.9.0.1/24"));
        let b = member("overlay", "b", 2, Some("10.9.0.2/24"));
        let c = member("overlay", "c", 3, Some("10.9.0.3/24"));
        let d_waiting = member("overlay", "d", 4, None);
        let other_mesh = member("other", "e", 5, Some("10.9.0.5/24"));
        let mut hand_written = member("overlay", "f", 6, Some("10.9.0.6/24"));
        hand_written.metadata.owner_references = None;
        let objects = NodeObjects {
            interfaces: vec![&a],
            private_keys: [((NS.to_string(), a.name_any()), Ok(key(1)))].into(),
            mesh_members: vec![&a, &b, &c, &d_waiting, &other_mesh, &hand_written],
            ..NodeObjects::default()
        };
        let t = translate(&objects);
        assert!(t.interface_problems.is_empty(), "{t:?}");
        let device = &t.desired.devices[&dev("wgmesh")];
        let peers: Vec<(PublicKey, Vec<IpNet>)> = device
            .peers
            .iter()
            .map(|(k, p)| (*k, p.allowed_ips.iter().copied().collect()))
            .collect();
        let mut want = vec![
            (key(2).public_key(), vec!["10.9.0.2/32".parse().unwrap()]),
            (key(3).public_key(), vec!["10.9.0.3/32".parse().unwrap()]),
        ];
        want.sort_by_key(|(k, _)| *k);
        assert_eq!(peers, want);
        assert_eq!(
            device.peers[&key(2).public_key()].endpoint,
            Some("10.211.55.12:51820".parse().unwrap())
        );
        // No Peer object is involved, so none is reported.
        assert!(t.peer_sides.is_empty() && t.peer_problems.is_empty());
        assert_eq!(
            device.peers[&key(2).public_key()].persistent_keepalive,
            None
        );

        // The keepalive the Mesh asks for, from this member's annotation.
        let mut a_keepalive = a.clone();
        a_keepalive
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("kwire.dev/mesh-persistent-keepalive".into(), "25".into());
        let objects = NodeObjects {
            interfaces: vec![&a_keepalive],
            private_keys: [((NS.to_string(), a.name_any()), Ok(key(1)))].into(),
            mesh_members: vec![&a_keepalive, &b],
            ..NodeObjects::default()
        };
        let t = translate(&objects);
        let peer = &t.desired.devices[&dev("wgmesh")].peers[&key(2).public_key()];
        assert_eq!(peer.persistent_keepalive, Some(25));
    }

    /// `member` with a role, labels and annotations of a topology other than FullMesh, and
    /// forwarding as the operator generates it for hubs, gateways and announcers.
    fn as_role(
        mut i: Interface,
        role: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Interface {
        let l = i.metadata.labels.get_or_insert_default();
        l.insert("kwire.dev/mesh-role".into(), role.into());
        l.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let a = i.metadata.annotations.get_or_insert_default();
        a.extend(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let announces = a.contains_key("kwire.dev/mesh-announce");
        i.spec.forwarding = (matches!(role, "hub" | "gateway") || announces).then_some(true);
        i
    }

    /// The translation for the member `local` among `all`, with its key `n`.
    fn translate_member(local: &Interface, n: u8, all: &[&Interface]) -> Translation {
        let objects = NodeObjects {
            interfaces: vec![local],
            private_keys: [((NS.to_string(), local.name_any()), Ok(key(n)))].into(),
            mesh_members: all.to_vec(),
            ..NodeObjects::default()
        };
        let t = translate(&objects);
        assert!(t.interface_problems.is_empty(), "{t:?}");
        t
    }

    /// Each peer of the mesh device: its key, allowed IPs and endpoint.
    fn mesh_peers(t: &Translation) -> BTreeMap<PublicKey, (Vec<String>, Option<SocketAddr>)> {
        t.desired.devices[&dev("wgmesh")]
            .peers
            .iter()
            .map(|(k, p)| {
                let allowed = p.allowed_ips.iter().map(ToString::to_string).collect();
                (*k, (allowed, p.endpoint))
            })
            .collect()
    }

    fn ep(n: u8) -> Option<SocketAddr> {
        Some(format!("10.211.55.{}:51820", 10 + n).parse().unwrap())
    }

    #[test]
    fn in_locations_members_reach_other_locations_through_their_gateway() {
        let locations = [("kwire.dev/mesh-topology", "Locations")];
        let zone = |z| [("kwire.dev/mesh-location", z)];
        let a1 = as_role(
            member("overlay", "a1", 1, Some("10.9.0.1/24")),
            "gateway",
            &zone("a"),
            &locations,
        );
        let a2 = as_role(
            member("overlay", "a2", 2, Some("10.9.0.2/24")),
            "member",
            &zone("a"),
            &locations,
        );
        // b1 is reached by the other gateways on another address than its endpoint.
        let b1 = as_role(
            member("overlay", "b1", 3, Some("10.9.0.3/24")),
            "gateway",
            &zone("b"),
            &[
                locations[0],
                ("kwire.dev/mesh-gateway-endpoint", "203.0.113.3"),
            ],
        );
        let b2 = as_role(
            member("overlay", "b2", 4, Some("10.9.0.4/24")),
            "member",
            &zone("b"),
            &[locations[0], ("kwire.dev/mesh-announce", "192.168.20.0/24")],
        );
        let all = [&a1, &a2, &b1, &b2];
        let lan: IpNet = "192.168.20.0/24".parse().unwrap();

        // A member that is not its location's gateway: its local member directly, the
        // rest (the mesh network and the other location's prefixes) through its gateway.
        let t = translate_member(&a2, 2, &all);
        let want = BTreeMap::from([(
            key(1).public_key(),
            (vec!["10.9.0.0/24".into(), "192.168.20.0/24".into()], ep(1)),
        )]);
        assert_eq!(mesh_peers(&t), want);
        let route = &t.desired.routes[&RouteKey::new(MAIN_TABLE, lan)];
        assert_eq!((route.device.clone(), route.via), (dev("wgmesh"), None));
        assert!(!t.desired.forwarding.ipv4, "a2 does not forward");

        // Its gateway: a2 directly, and the other location (its members' addresses and
        // prefixes) through b1's gateway address.
        let t = translate_member(&a1, 1, &all);
        let want = BTreeMap::from([
            (key(2).public_key(), (vec!["10.9.0.2/32".into()], ep(2))),
            (
                key(3).public_key(),
                (
                    vec![
                        "10.9.0.3/32".into(),
                        "10.9.0.4/32".into(),
                        "192.168.20.0/24".into(),
                    ],
                    Some("203.0.113.3:51820".parse().unwrap()),
                ),
            ),
        ]);
        assert_eq!(mesh_peers(&t), want);
        assert!(
            t.desired
                .routes
                .contains_key(&RouteKey::new(MAIN_TABLE, lan))
        );
        assert!(t.desired.forwarding.ipv4, "a gateway forwards");

        // The announcer: its own prefix is not routed into the mesh, and it forwards.
        let t = translate_member(&b2, 4, &all);
        assert!(t.desired.routes.is_empty(), "{:?}", t.desired.routes);
        assert!(t.desired.forwarding.ipv4);
        let peers = mesh_peers(&t);
        assert_eq!(peers[&key(3).public_key()].0, ["10.9.0.0/24"]);
        assert_eq!(
            peers[&key(3).public_key()].1,
            ep(3),
            "b1's endpoint inside b"
        );

        // A Route object to the same destination keeps its own route.
        let route: Route = serde_json::from_value(serde_json::json!({
            "apiVersion": "kwire.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": "lan", "namespace": NS},
            "spec": {"interface": a2.name_any(), "destination": "192.168.20.0/24",
                     "via": "10.9.0.1", "metric": 7},
        }))
        .unwrap();
        let mut objects = NodeObjects {
            interfaces: vec![&a2],
            private_keys: [((NS.to_string(), a2.name_any()), Ok(key(2)))].into(),
            mesh_members: all.to_vec(),
            ..NodeObjects::default()
        };
        objects.routes = vec![&route];
        let t = translate(&objects);
        assert_eq!(
            t.desired.routes[&RouteKey::new(MAIN_TABLE, lan)].metric,
            Some(7)
        );
    }

    #[test]
    fn a_spoke_sends_everything_to_its_primary_hub_and_keeps_the_other_on_standby() {
        let topology = ("kwire.dev/mesh-topology", "HubAndSpoke");
        let h1 = as_role(
            member("overlay", "h1", 1, Some("10.9.0.1/24")),
            "hub",
            &[],
            &[topology],
        );
        let h2 = as_role(
            member("overlay", "h2", 2, Some("10.9.0.2/24")),
            "hub",
            &[],
            &[topology],
        );
        let s1 = as_role(
            member("overlay", "s1", 3, Some("10.9.0.3/24")),
            "spoke",
            &[],
            &[topology, ("kwire.dev/mesh-primary-hub", "h1")],
        );
        let s2 = as_role(
            member("overlay", "s2", 4, Some("10.9.0.4/24")),
            "spoke",
            &[],
            &[
                topology,
                ("kwire.dev/mesh-primary-hub", "h2"),
                ("kwire.dev/mesh-announce", "192.168.40.0/24"),
            ],
        );
        let all = [&h1, &h2, &s1, &s2];

        // s1: the mesh network and the other members' prefixes through h1; h2 configured
        // with key and endpoint only, so that a failover only moves allowed IPs.
        let t = translate_member(&s1, 3, &all);
        let want = BTreeMap::from([
            (
                key(1).public_key(),
                (vec!["10.9.0.0/24".into(), "192.168.40.0/24".into()], ep(1)),
            ),
            (key(2).public_key(), (vec![], ep(2))),
        ]);
        assert_eq!(mesh_peers(&t), want);
        assert!(t.desired.routes.contains_key(&RouteKey::new(
            MAIN_TABLE,
            "192.168.40.0/24".parse().unwrap()
        )));
        assert!(!t.desired.forwarding.ipv4, "a spoke does not forward");

        // h1: its own spoke directly, the other hub with the spokes behind it, the other
        // hub's spoke on standby.
        let t = translate_member(&h1, 1, &all);
        let want = BTreeMap::from([
            (
                key(2).public_key(),
                (
                    vec![
                        "10.9.0.2/32".into(),
                        "10.9.0.4/32".into(),
                        "192.168.40.0/24".into(),
                    ],
                    ep(2),
                ),
            ),
            (key(3).public_key(), (vec!["10.9.0.3/32".into()], ep(3))),
            (key(4).public_key(), (vec![], ep(4))),
        ]);
        assert_eq!(mesh_peers(&t), want);
        assert!(t.desired.forwarding.ipv4, "a hub forwards");

        // A hub whose key is not known yet is left out; the rest is configured.
        let mut h2_waiting = h2.clone();
        h2_waiting.status.as_mut().unwrap().public_key = None;
        let t = translate_member(&s1, 3, &[&h1, &h2_waiting, &s1, &s2]);
        assert_eq!(mesh_peers(&t).len(), 1);
    }

    #[test]
    fn translation_never_prints_a_private_key() {
        let all = relay();
        let t = translate(&on_node("b", &all));
        let printed = format!("{t:?}");
        for n in 1..=4 {
            let secret = key(n).to_base64();
            assert!(!printed.contains(secret.as_str()));
        }
    }
}
