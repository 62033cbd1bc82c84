//! The expansion of a Mesh: which nodes are members, what role each has, and which peers
//! each member's device has, with what goes through each peer.
//!
//! Pure: the same spec, nodes and recorded decisions give the same expansion, whatever the
//! order of the nodes. Members are computed for the whole mesh (O(N)); the links of one
//! member are computed on demand ([`Expansion::links`], O(N)), so a node daemon only ever
//! builds its own member's peers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use kwire_crds::names::DeviceName;
use kwire_crds::v1alpha1::{KeyMode, KeyRotation};

use crate::api::{MeshSpec, TopologyType};
use crate::names::{member_name, stable_hash};
use crate::node::MeshNode;
use crate::selector::{CompiledSelector, SelectorError};

/// Why a Mesh cannot be expanded at all. The API server rejects the first two kinds of
/// input; they reach here from files (`kwire lint`, `kwire plan`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error(
        "Mesh {mesh}: the name is longer than 15 characters, so it cannot be the members' device name: set spec.device.deviceName (e.g. wgmesh)"
    )]
    NoDeviceName { mesh: String },
    #[error(
        "node {node} is listed twice in the node list: give each Node once (the expansion would depend on which copy comes first)"
    )]
    DuplicateNode { node: String },
}

/// What a member does in its mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `FullMesh`, or a member of a location that is not its gateway.
    Member,
    /// `HubAndSpoke`: peers with every member and forwards between spokes.
    Hub,
    /// `HubAndSpoke`: peers with the hubs only; reaches everything through its primary hub.
    Spoke,
    /// `Locations`: the location's elected gateway; links to the other gateways, forwards.
    Gateway,
}

impl Role {
    /// The value of the `kwire.dev/mesh-role` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Hub => "hub",
            Role::Spoke => "spoke",
            Role::Gateway => "gateway",
        }
    }

    /// The role a `kwire.dev/mesh-role` label names.
    pub fn parse(value: &str) -> Option<Role> {
        [Role::Member, Role::Hub, Role::Spoke, Role::Gateway]
            .into_iter()
            .find(|r| r.as_str() == value)
    }
}

/// Choices that must not change while their reason holds: each location's gateway and each
/// spoke's primary hub. The operator records them (`status.locations[].gateway` on the Mesh,
/// and on the generated Interfaces for hubs) and passes them back, so that an election is
/// sticky: a gateway or a primary hub is replaced only when it stops qualifying. Without a
/// record the choices are still deterministic: the first eligible node by name for a
/// gateway, rendezvous hashing for a primary hub.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// Location → the node that is its gateway.
    pub gateways: BTreeMap<String, String>,
    /// Spoke node → the hub node it sends everything through.
    pub primary_hubs: BTreeMap<String, String>,
}

/// The device settings every member shares, from `spec.device` and `spec.networks`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSettings {
    pub device_name: DeviceName,
    pub listen_port: u16,
    pub mtu: Option<u16>,
    pub persistent_keepalive: Option<u16>,
    pub key_mode: Option<KeyMode>,
    pub key_rotation: Option<KeyRotation>,
    /// Names of the Networks members take addresses from.
    pub networks: Vec<String>,
}

/// One selected node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The generated Interface's name (see [`member_name`]).
    pub name: String,
    pub node: String,
    pub role: Role,
    /// `Locations`: the member's location.
    pub location: Option<String>,
    /// `HubAndSpoke` spokes: the hub (node name) everything goes through; unset when the
    /// mesh has no hub.
    pub primary_hub: Option<String>,
    /// Whether the device forwards: hubs and gateways relay for others, and a member that
    /// announces prefixes passes their traffic on to the networks behind it.
    pub forwarding: bool,
    /// Prefixes the member announces (sorted, without duplicates).
    pub announced: Vec<IpNet>,
    /// Where the other members reach it: its first InternalIP, else its first ExternalIP.
    pub endpoint: Option<IpAddr>,
    /// `Locations`: where the other gateways reach it, if it can be a gateway.
    pub gateway_endpoint: Option<IpAddr>,
}

/// One peer entry on a member's device.
///
/// What goes through it is given by member (whose addresses are only known once allocated)
/// and by prefix: [`Expansion::allowed_ips`] turns it into the `AllowedIPs` list. A link
/// with nothing going through it is a standby link: configured with keys and endpoint, so
/// that a later change of primary hub only moves allowed IPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLink {
    /// The peer's member (generated Interface) name.
    pub member: String,
    pub node: String,
    /// Where to send to the peer; unset when its node has no usable address (the peer
    /// must then connect first).
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    /// Members whose own addresses go through this peer, one host prefix each.
    pub hosts: Vec<String>,
    /// The mesh's whole networks go through this peer, for every address no other peer of
    /// the device has more specifically (WireGuard picks the longest match).
    pub networks: bool,
    /// Announced prefixes that go through this peer.
    pub prefixes: Vec<IpNet>,
}

impl PeerLink {
    /// Whether nothing goes through the link (a spoke's link to a hub that is not its
    /// primary one, and the hub's side of it).
    pub fn is_standby(&self) -> bool {
        self.hosts.is_empty() && !self.networks && self.prefixes.is_empty()
    }
}

/// A location of a `Locations` mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub name: String,
    /// Member names, in node order.
    pub members: Vec<String>,
    /// The gateway's member name; unset when no member can be one.
    pub gateway: Option<String>,
    /// Members that could be the gateway (selected by the gateway selector and with an
    /// address of the gateway address type).
    pub eligible: usize,
}

/// A Mesh expanded over a list of nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expansion {
    pub mesh: String,
    pub topology: TopologyType,
    pub device: DeviceSettings,
    /// One per selected node, ordered by node name.
    pub members: Vec<Member>,
    /// `Locations`: every location with at least one member, ordered by name.
    pub locations: Vec<Location>,
    by_name: BTreeMap<String, usize>,
    location_of: Vec<usize>,
}

/// The location of a node without the location label: a location of its own. Label
/// values cannot contain `:`, so this never equals a real location.
pub fn own_location(node: &str) -> String {
    format!("node:{node}")
}

/// Expands the Mesh `mesh` with `spec` over `nodes` (any order), keeping the `decisions`
/// recorded earlier while they still qualify.
pub fn expand(
    mesh: &str,
    spec: &MeshSpec,
    nodes: &[MeshNode],
    decisions: &Decisions,
) -> Result<Expansion, ExpandError> {
    let device_name = match &spec.device.device_name {
        Some(d) => d.clone(),
        None => DeviceName::parse(mesh).map_err(|_| ExpandError::NoDeviceName {
            mesh: mesh.to_string(),
        })?,
    };
    let device = DeviceSettings {
        device_name,
        listen_port: spec.device.listen_port,
        mtu: spec.device.mtu,
        // 0 is off, as no keepalive.
        persistent_keepalive: spec.device.persistent_keepalive.filter(|s| *s > 0),
        key_mode: spec.device.key_mode,
        key_rotation: spec.device.key_rotation.clone(),
        networks: spec.networks.iter().map(|n| n.name.to_string()).collect(),
    };
    let node_selector = CompiledSelector::new(&spec.node_selector, "spec.nodeSelector")?;
    let hub_selector = match (&spec.topology.type_, &spec.topology.hub_and_spoke) {
        (TopologyType::HubAndSpoke, Some(h)) => Some(CompiledSelector::new(
            &h.hub_selector,
            "spec.topology.hubAndSpoke.hubSelector",
        )?),
        _ => None,
    };
    let locations_spec = spec.topology.locations.clone().unwrap_or_default();
    let gateway_selector = match &locations_spec.gateway_selector {
        Some(s) => Some(CompiledSelector::new(
            s,
            "spec.topology.locations.gatewaySelector",
        )?),
        None => None,
    };
    let gateway_address = locations_spec.gateway_address.unwrap_or_default();

    let mut sorted: Vec<&MeshNode> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = sorted.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(ExpandError::DuplicateNode {
            node: w[0].name.clone(),
        });
    }
    let selected: Vec<&MeshNode> = sorted
        .into_iter()
        .filter(|n| node_selector.matches(&n.labels))
        .collect();

    let announce = spec.announce.clone().unwrap_or_default();
    let extra: BTreeMap<&str, Vec<IpNet>> = announce
        .prefixes
        .iter()
        .flatten()
        .map(|p| {
            let cidrs = p.cidrs.iter().filter_map(|c| c.as_str().parse().ok());
            (p.node_name.as_str(), cidrs.collect())
        })
        .collect();

    let mut members: Vec<Member> = selected
        .iter()
        .map(|n| {
            let mut announced: BTreeSet<IpNet> = BTreeSet::new();
            if announce.pod_cidrs == Some(true) {
                announced.extend(n.pod_cidrs.iter().map(IpNet::trunc));
            }
            announced.extend(extra.get(n.name.as_str()).into_iter().flatten().copied());
            Member {
                name: member_name(mesh, &n.name),
                node: n.name.clone(),
                role: Role::Member,
                location: None,
                primary_hub: None,
                forwarding: false,
                announced: announced.into_iter().collect(),
                endpoint: n.endpoint_host(),
                gateway_endpoint: None,
            }
        })
        .collect();

    match spec.topology.type_ {
        TopologyType::FullMesh => {}
        TopologyType::HubAndSpoke => {
            let selector = hub_selector.as_ref();
            let hubs: Vec<usize> = (0..members.len())
                .filter(|&i| selector.is_some_and(|s| s.matches(&selected[i].labels)))
                .collect();
            for &h in &hubs {
                members[h].role = Role::Hub;
            }
            for i in 0..members.len() {
                if members[i].role == Role::Hub {
                    continue;
                }
                let node = members[i].node.clone();
                let recorded = decisions
                    .primary_hubs
                    .get(&node)
                    .filter(|hub| hubs.iter().any(|&h| &members[h].node == *hub));
                let primary = recorded.cloned().or_else(|| {
                    // Rendezvous hashing: adding a hub moves only the spokes that now rank
                    // it first; removing one moves only its own spokes.
                    hubs.iter()
                        .map(|&h| &members[h].node)
                        .max_by_key(|hub| (stable_hash(&[&node, hub]), std::cmp::Reverse(*hub)))
                        .cloned()
                });
                members[i].role = Role::Spoke;
                members[i].primary_hub = primary;
            }
        }
        TopologyType::Locations => {
            let label = spec.location_label();
            let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, n) in selected.iter().enumerate() {
                let name = n
                    .labels
                    .get(label)
                    .cloned()
                    .unwrap_or_else(|| own_location(&n.name));
                groups.entry(name).or_default().push(i);
            }
            for (name, idx) in groups {
                let eligible: Vec<usize> = idx
                    .iter()
                    .copied()
                    .filter(|&i| {
                        gateway_selector
                            .as_ref()
                            .is_none_or(|s| s.matches(&selected[i].labels))
                            && selected[i].address(gateway_address).is_some()
                    })
                    .collect();
                let recorded = decisions
                    .gateways
                    .get(&name)
                    .and_then(|node| eligible.iter().copied().find(|&i| &members[i].node == node));
                let gateway = recorded.or(eligible.first().copied());
                for &i in &idx {
                    members[i].location = Some(name.clone());
                    if eligible.contains(&i) {
                        members[i].gateway_endpoint = selected[i].address(gateway_address);
                    }
                }
                if let Some(g) = gateway {
                    members[g].role = Role::Gateway;
                }
            }
        }
    }
    for m in &mut members {
        m.forwarding = matches!(m.role, Role::Hub | Role::Gateway) || !m.announced.is_empty();
    }
    Ok(Expansion::from_members(
        mesh,
        spec.topology.type_,
        device,
        members,
    ))
}

impl Expansion {
    /// An expansion from members whose roles, locations, primary hubs and announced
    /// prefixes are already decided: [`expand`] ends here, and a node daemon builds its
    /// view of a Mesh here from the members' generated Interfaces
    /// ([`crate::members`]), so that both compute links with the same rules.
    ///
    /// In `Locations`, a member without a location is a location of its own; each location's
    /// gateway is its member with role [`Role::Gateway`], and `eligible` counts its members
    /// with a gateway endpoint (all that could be gateway in [`expand`]; in a daemon's view,
    /// where only gateways say theirs, the gateway). Other topologies have no locations.
    pub fn from_members(
        mesh: &str,
        topology: TopologyType,
        device: DeviceSettings,
        mut members: Vec<Member>,
    ) -> Expansion {
        members.sort_by(|a, b| a.node.cmp(&b.node).then_with(|| a.name.cmp(&b.name)));
        let mut locations = Vec::new();
        let mut location_of = vec![0; members.len()];
        if topology == TopologyType::Locations {
            let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, m) in members.iter_mut().enumerate() {
                let name = m
                    .location
                    .get_or_insert_with(|| own_location(&m.node))
                    .clone();
                groups.entry(name).or_default().push(i);
            }
            for (li, (name, idx)) in groups.into_iter().enumerate() {
                for &i in &idx {
                    location_of[i] = li;
                }
                locations.push(Location {
                    name,
                    members: idx.iter().map(|&i| members[i].name.clone()).collect(),
                    gateway: idx
                        .iter()
                        .find(|&&i| members[i].role == Role::Gateway)
                        .map(|&i| members[i].name.clone()),
                    eligible: idx
                        .iter()
                        .filter(|&&i| members[i].gateway_endpoint.is_some())
                        .count(),
                });
            }
        }
        let by_name = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        Expansion {
            mesh: mesh.to_string(),
            topology,
            device,
            members,
            locations,
            by_name,
            location_of,
        }
    }

    /// The member with this (generated Interface) name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.by_name.get(name).map(|&i| &self.members[i])
    }

    /// The member on this node.
    pub fn member_on(&self, node: &str) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.node.as_str().cmp(node))
            .ok()
            .map(|i| &self.members[i])
    }

    /// The decisions to record so that the next expansion keeps them.
    pub fn decisions(&self) -> Decisions {
        let mut d = Decisions::default();
        for l in &self.locations {
            if let Some(g) = l.gateway.as_deref().and_then(|g| self.member(g)) {
                d.gateways.insert(l.name.clone(), g.node.clone());
            }
        }
        for m in &self.members {
            if let Some(h) = &m.primary_hub {
                d.primary_hubs.insert(m.node.clone(), h.clone());
            }
        }
        d
    }

    /// The peers of the member named `member`, in node order; `None` for a name that is not
    /// a member.
    pub fn links(&self, member: &str) -> Option<Vec<PeerLink>> {
        self.by_name.get(member).map(|&i| self.links_of(i))
    }

    /// The prefixes to route through the member's device: every announced prefix that goes
    /// through one of its peers. (The mesh networks are on the device's own subnet.)
    pub fn routes(&self, links: &[PeerLink]) -> Vec<IpNet> {
        let set: BTreeSet<IpNet> = links
            .iter()
            .flat_map(|l| l.prefixes.iter().copied())
            .collect();
        set.into_iter().collect()
    }

    /// The `AllowedIPs` of a link: a host prefix for each address of the members in
    /// `hosts` (`addresses` maps member names to their allocated addresses; members without
    /// one yet are left out), the mesh networks' CIDRs when `networks`, and the prefixes.
    pub fn allowed_ips(
        link: &PeerLink,
        addresses: &BTreeMap<String, Vec<IpAddr>>,
        network_cidrs: &[IpNet],
    ) -> Vec<IpNet> {
        let mut out: BTreeSet<IpNet> = BTreeSet::new();
        for host in &link.hosts {
            out.extend(
                addresses
                    .get(host)
                    .into_iter()
                    .flatten()
                    .map(|a| IpNet::from(*a)),
            );
        }
        if link.networks {
            out.extend(network_cidrs.iter().map(IpNet::trunc));
        }
        out.extend(link.prefixes.iter().copied());
        out.into_iter().collect()
    }

    fn gateway_of(&self, location: usize) -> Option<usize> {
        self.locations[location]
            .gateway
            .as_deref()
            .and_then(|g| self.by_name.get(g).copied())
    }

    fn link(&self, from: usize, to: usize) -> PeerLink {
        let peer = &self.members[to];
        let across_locations = self.topology == TopologyType::Locations
            && self.members[from].role == Role::Gateway
            && peer.role == Role::Gateway
            && self.location_of[from] != self.location_of[to];
        let host = if across_locations {
            peer.gateway_endpoint
        } else {
            peer.endpoint
        };
        PeerLink {
            member: peer.name.clone(),
            node: peer.node.clone(),
            endpoint: host.map(|h| SocketAddr::new(h, self.device.listen_port)),
            persistent_keepalive: self.device.persistent_keepalive,
            hosts: Vec::new(),
            networks: false,
            prefixes: Vec::new(),
        }
    }

    /// A link that carries the given members' addresses and announced prefixes.
    fn direct(&self, from: usize, to: usize, carried: impl IntoIterator<Item = usize>) -> PeerLink {
        let mut link = self.link(from, to);
        let mut prefixes = BTreeSet::new();
        for c in carried {
            link.hosts.push(self.members[c].name.clone());
            prefixes.extend(self.members[c].announced.iter().copied());
        }
        link.prefixes = prefixes.into_iter().collect();
        link
    }

    /// A link that carries the whole mesh networks and the given members' prefixes.
    fn aggregate(
        &self,
        from: usize,
        to: usize,
        carried: impl IntoIterator<Item = usize>,
    ) -> PeerLink {
        let mut link = self.link(from, to);
        link.networks = true;
        let prefixes: BTreeSet<IpNet> = carried
            .into_iter()
            .flat_map(|c| self.members[c].announced.iter().copied())
            .collect();
        link.prefixes = prefixes.into_iter().collect();
        link
    }

    fn links_of(&self, i: usize) -> Vec<PeerLink> {
        let n = self.members.len();
        let others = (0..n).filter(move |&j| j != i);
        match self.topology {
            TopologyType::FullMesh => others.map(|j| self.direct(i, j, [j])).collect(),
            TopologyType::HubAndSpoke => {
                let primary_of = |j: usize| self.members[j].primary_hub.as_deref();
                let me = &self.members[i];
                match me.role {
                    Role::Hub => others
                        .map(|j| match self.members[j].role {
                            Role::Hub => {
                                let behind = (0..n).filter(|&s| {
                                    s == j || primary_of(s) == Some(self.members[j].node.as_str())
                                });
                                self.direct(i, j, behind)
                            }
                            _ if primary_of(j) == Some(me.node.as_str()) => self.direct(i, j, [j]),
                            _ => self.link(i, j),
                        })
                        .collect(),
                    _ => others
                        .filter(|&j| self.members[j].role == Role::Hub)
                        .map(|j| {
                            if primary_of(i) == Some(self.members[j].node.as_str()) {
                                self.aggregate(i, j, (0..n).filter(|&k| k != i))
                            } else {
                                self.link(i, j)
                            }
                        })
                        .collect(),
                }
            }
            TopologyType::Locations => {
                let here = self.location_of[i];
                let gateway = self.gateway_of(here);
                let mut links = Vec::new();
                for j in others {
                    if self.location_of[j] == here {
                        if Some(j) == gateway {
                            // Everything beyond the location goes through its gateway.
                            let remote = (0..n).filter(|&k| {
                                k == j
                                    || (self.location_of[k] != here
                                        && self.gateway_of(self.location_of[k]).is_some())
                            });
                            links.push(self.aggregate(i, j, remote));
                        } else {
                            links.push(self.direct(i, j, [j]));
                        }
                    } else if Some(i) == gateway && self.gateway_of(self.location_of[j]) == Some(j)
                    {
                        let there = self.location_of[j];
                        links.push(self.direct(
                            i,
                            j,
                            (0..n).filter(|&k| self.location_of[k] == there),
                        ));
                    }
                }
                links
            }
        }
    }
}
