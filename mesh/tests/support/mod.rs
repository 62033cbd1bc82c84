//! Builders for specs and nodes, and a packet walk over an expansion's allowed IPs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use kwire_crds::names::ObjectName;
use kwire_mesh::api::{
    Announce, HubAndSpoke, Locations, MeshDevice, MeshNetwork, MeshSpec, MeshTopology,
    NodeAddressType, NodeSelector, TopologyType,
};
use kwire_mesh::{Expansion, MeshNode};

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn select(pairs: &[(&str, &str)]) -> NodeSelector {
    NodeSelector {
        match_labels: Some(labels(pairs)),
        match_expressions: None,
    }
}

/// A node with InternalIP 192.168.0.<i>, pod CIDR 10.244.<i>.0/24 and the given labels.
pub fn node(name: &str, i: u8, pairs: &[(&str, &str)]) -> MeshNode {
    MeshNode {
        name: name.to_string(),
        labels: labels(pairs),
        internal: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 0, i))],
        external: vec![],
        pod_cidrs: vec![format!("10.244.{i}.0/24").parse().unwrap()],
    }
}

pub fn spec(topology: MeshTopology) -> MeshSpec {
    MeshSpec {
        node_selector: select(&[("mesh", "yes")]),
        topology,
        networks: vec![
            MeshNetwork {
                name: ObjectName::new_unchecked("overlay-v4"),
            },
            MeshNetwork {
                name: ObjectName::new_unchecked("overlay-v6"),
            },
        ],
        device: MeshDevice::default(),
        announce: Some(Announce {
            pod_cidrs: Some(true),
            prefixes: None,
        }),
    }
}

pub fn full_mesh() -> MeshTopology {
    MeshTopology::default()
}

pub fn hub_and_spoke() -> MeshTopology {
    MeshTopology {
        type_: TopologyType::HubAndSpoke,
        hub_and_spoke: Some(HubAndSpoke {
            hub_selector: select(&[("hub", "yes")]),
        }),
        locations: None,
    }
}

pub fn locations(gateway_address: Option<NodeAddressType>) -> MeshTopology {
    MeshTopology {
        type_: TopologyType::Locations,
        hub_and_spoke: None,
        locations: Some(Locations {
            label: Some("zone".into()),
            gateway_selector: None,
            gateway_address,
        }),
    }
}

/// The mesh networks of [`addresses`].
pub fn network_cidrs() -> Vec<IpNet> {
    vec![
        "10.100.0.0/16".parse().unwrap(),
        "fd00:100::/64".parse().unwrap(),
    ]
}

/// One address per family for each member, as an allocator would give them.
pub fn addresses(e: &Expansion) -> BTreeMap<String, Vec<IpAddr>> {
    e.members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let i = i as u16 + 1;
            let v4 = IpAddr::V4(Ipv4Addr::new(10, 100, (i >> 8) as u8, (i & 0xff) as u8));
            let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, i));
            (m.name.clone(), vec![v4, v6])
        })
        .collect()
}

/// Each member's WireGuard table: prefix → peer member name. Panics when a device would have
/// the same prefix on two peers (WireGuard would silently move it to the last one).
pub fn tables(e: &Expansion) -> BTreeMap<String, BTreeMap<IpNet, String>> {
    let addrs = addresses(e);
    let nets = network_cidrs();
    e.members
        .iter()
        .map(|m| {
            let mut table = BTreeMap::new();
            for link in e.links(&m.name).unwrap() {
                for ip in Expansion::allowed_ips(&link, &addrs, &nets) {
                    if let Some(other) = table.insert(ip, link.member.clone()) {
                        panic!("{}: {ip} on both {other} and {}", m.name, link.member);
                    }
                }
            }
            (m.name.clone(), table)
        })
        .collect()
}

fn lookup(table: &BTreeMap<IpNet, String>, ip: IpAddr) -> Option<&String> {
    table
        .iter()
        .filter(|(net, _)| net.contains(&ip))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, peer)| peer)
}

/// Walks a packet from member `from` (source address `src`) to `dst` as WireGuard does:
/// each device sends it to the peer whose allowed IPs match `dst` best, each receiving
/// device drops it unless `src` best matches the peer it came from, and a member that is not
/// the destination passes it on only if it forwards. Returns the members visited.
pub fn walk(
    e: &Expansion,
    tables: &BTreeMap<String, BTreeMap<IpNet, String>>,
    from: &str,
    src: IpAddr,
    dst: IpAddr,
    owner: &str,
) -> Result<Vec<String>, String> {
    let mut path = vec![from.to_string()];
    let mut cur = from.to_string();
    loop {
        if path.len() > 6 {
            return Err(format!("loop: {path:?}"));
        }
        let next = lookup(&tables[&cur], dst)
            .ok_or_else(|| format!("{cur} has no peer for {dst} (path {path:?})"))?
            .clone();
        let came_from = lookup(&tables[&next], src);
        if came_from != Some(&cur) {
            return Err(format!(
                "{next} drops {src} from {cur}: it expects it from {came_from:?} (path {path:?})"
            ));
        }
        path.push(next.clone());
        if next == owner {
            return Ok(path);
        }
        if !e.member(&next).unwrap().forwarding {
            return Err(format!("{next} does not forward (path {path:?})"));
        }
        cur = next;
    }
}
