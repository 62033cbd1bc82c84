//! Builders for tests. Keys are made from a single repeated byte so tests
//! can name them (`pk(2)` is the public key of peer 2).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::model::*;
use crate::ownership::ROUTE_PROTOCOL;
use crate::plan::DEFAULT_WIREGUARD_MTU;

pub fn name(s: &str) -> IfaceName {
    s.parse().unwrap()
}

pub fn owner(s: &str) -> OwnerRef {
    s.parse().unwrap()
}

pub fn sk(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

pub fn pk(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub fn nets(list: &[&str]) -> BTreeSet<IpNet> {
    list.iter().map(|s| net(s)).collect()
}

pub fn peer(allowed: &[&str]) -> PeerConfig {
    PeerConfig {
        allowed_ips: nets(allowed),
        ..Default::default()
    }
}

impl DesiredDevice {
    /// A device owned by `owner` with private key `sk(1)` and nothing else.
    pub fn test(owner_ref: &str) -> Self {
        DesiredDevice {
            owner: owner(owner_ref),
            private_key: sk(1),
            listen_port: None,
            addresses: BTreeSet::new(),
            mtu: None,
            peers: BTreeMap::new(),
            forwarding: false,
        }
    }
    pub fn with_address(mut self, a: &str) -> Self {
        self.addresses.insert(net(a));
        self
    }
    pub fn with_port(mut self, port: u16) -> Self {
        self.listen_port = Some(port);
        self
    }
    pub fn with_mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
    pub fn with_peer(mut self, key: PublicKey, config: PeerConfig) -> Self {
        self.peers.insert(key, config);
        self
    }
    pub fn forwarding(mut self) -> Self {
        self.forwarding = true;
        self
    }
}

impl DesiredNode {
    pub fn with_device(mut self, n: &str, d: DesiredDevice) -> Self {
        self.devices.insert(name(n), d);
        self
    }
    pub fn with_route(
        mut self,
        dst: &str,
        dev: &str,
        via: Option<&str>,
        metric: Option<u32>,
    ) -> Self {
        self.routes.insert(
            RouteKey::new(TABLE_MAIN, net(dst)),
            DesiredRoute {
                device: name(dev),
                via: via.map(|v| v.parse().unwrap()),
                metric,
            },
        );
        self
    }
}

/// A foreign link of the given kind.
pub fn foreign_link(kind: &str) -> ObservedDevice {
    ObservedDevice {
        ownership: Ownership::Foreign,
        mark: None,
        kind: LinkKind::Other(kind.into()),
        up: true,
        mtu: 1500,
        addresses: BTreeSet::new(),
        wireguard: None,
        forwarding: ObservedForwarding::default(),
    }
}

pub fn route_id(dst: &str, metric: u32) -> RouteId {
    RouteId {
        table: TABLE_MAIN,
        destination: net(dst),
        metric,
    }
}

pub fn foreign_route(protocol: u8, dev: Option<&str>) -> ObservedRoute {
    ObservedRoute {
        ownership: Ownership::Foreign,
        protocol,
        device: dev.map(name),
        via: None,
    }
}

pub fn owned_route(dev: &str, via: Option<&str>) -> ObservedRoute {
    ObservedRoute {
        ownership: Ownership::Owned,
        protocol: ROUTE_PROTOCOL,
        device: Some(name(dev)),
        via: via.map(|v| v.parse().unwrap()),
    }
}

/// What an observation of a node that already matches `desired` looks like
/// (forwarding knobs present and off unless desired; no foreign objects).
pub fn converged(desired: &DesiredNode) -> ObservedNode {
    let devices = desired
        .devices
        .iter()
        .map(|(name, d)| (name.clone(), converged_device(d)))
        .collect();
    let routes = desired
        .routes
        .iter()
        .map(|(key, r)| {
            let id = RouteId {
                table: key.table,
                destination: key.destination.trunc(),
                metric: effective_metric(&key.destination, r.metric),
            };
            let route = ObservedRoute {
                ownership: Ownership::Owned,
                protocol: ROUTE_PROTOCOL,
                device: Some(r.device.clone()),
                via: r.via,
            };
            (id, route)
        })
        .collect();
    ObservedNode {
        devices,
        routes,
        forwarding: ObservedForwarding {
            ipv4: Some(desired.forwarding.ipv4),
            ipv6: Some(desired.forwarding.ipv6),
        },
    }
}

fn converged_device(d: &DesiredDevice) -> ObservedDevice {
    let peers: BTreeMap<_, _> = d
        .peers
        .iter()
        .map(|(key, p)| {
            let config = PeerConfig {
                endpoint: p.endpoint,
                allowed_ips: canonical_allowed_ips(&p.allowed_ips),
                persistent_keepalive: p.persistent_keepalive.filter(|k| *k != 0),
                preshared_key: p.preshared_key.clone(),
            };
            let peer = ObservedPeer {
                config,
                stats: Default::default(),
            };
            (*key, peer)
        })
        .collect();
    ObservedDevice {
        ownership: Ownership::Owned,
        mark: Some(d.owner.clone()),
        kind: LinkKind::Wireguard,
        up: true,
        mtu: d.mtu.unwrap_or(DEFAULT_WIREGUARD_MTU),
        addresses: d.addresses.clone(),
        wireguard: Some(ObservedWireguard {
            private_key: Some(d.private_key.clone()),
            public_key: Some(d.private_key.public_key()),
            listen_port: Some(d.listen_port.unwrap_or(51820)),
            peers,
        }),
        forwarding: ObservedForwarding {
            ipv4: Some(d.forwarding),
            ipv6: Some(d.forwarding),
        },
    }
}
