//! Properties of the expansion over random node lists and topologies.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use kwire_mesh::api::{MeshTopology, NodeAddressType, TopologyType};
use kwire_mesh::{Decisions, Expansion, MeshNode, PeerLink, Role, expand};
use proptest::prelude::*;
use support::*;

/// A node drawn at random: selected or not, in one of three zones or none, a hub or not,
/// with or without each kind of address.
fn arb_node(i: usize) -> impl Strategy<Value = MeshNode> {
    (
        prop::bool::weighted(0.85),
        0..4u8,
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.5),
        prop::sample::select(vec!["a", "m", "z"]),
    )
        .prop_map(move |(selected, zone, hub, internal, external, prefix)| {
            let mut pairs = vec![("mesh", if selected { "yes" } else { "no" })];
            let zone_name = ["z0", "z1", "z2"].get(zone as usize).copied();
            if let Some(z) = zone_name {
                pairs.push(("zone", z));
            }
            if hub {
                pairs.push(("hub", "yes"));
            }
            let mut n = node(&format!("{prefix}{i}"), i as u8 + 1, &pairs);
            if !internal {
                n.internal.clear();
            }
            if external {
                n.external = vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, i as u8 + 1))];
            }
            n
        })
}

fn arb_nodes(max: usize) -> impl Strategy<Value = Vec<MeshNode>> {
    (1..=max).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
}

fn arb_topology() -> impl Strategy<Value = MeshTopology> {
    prop_oneof![
        Just(full_mesh()),
        Just(hub_and_spoke()),
        Just(locations(None)),
        Just(locations(Some(NodeAddressType::ExternalIP))),
    ]
}

fn links_by_member(e: &Expansion) -> BTreeMap<String, Vec<PeerLink>> {
    e.members
        .iter()
        .map(|m| (m.name.clone(), e.links(&m.name).unwrap()))
        .collect()
}

/// Whether every member should reach every other: a hub exists, or every location has a
/// gateway (or there is only one location).
fn connected(e: &Expansion) -> bool {
    match e.topology {
        TopologyType::FullMesh => true,
        TopologyType::HubAndSpoke => e.members.iter().any(|m| m.role == Role::Hub),
        TopologyType::Locations => {
            e.locations.len() <= 1 || e.locations.iter().all(|l| l.gateway.is_some())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// O(N): one member (one generated Interface) per selected node, and nothing else.
    #[test]
    fn one_member_per_selected_node(nodes in arb_nodes(14), topology in arb_topology()) {
        let e = expand("m", &spec(topology), &nodes, &Decisions::default()).unwrap();
        let selected: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.labels.get("mesh").map(String::as_str) == Some("yes"))
            .map(|n| n.name.as_str())
            .collect();
        let members: BTreeSet<&str> = e.members.iter().map(|m| m.node.as_str()).collect();
        prop_assert_eq!(members, selected);
        let names: BTreeSet<&str> = e.members.iter().map(|m| m.name.as_str()).collect();
        prop_assert_eq!(names.len(), e.members.len(), "generated names are unique");
    }

    /// a peers with b exactly when b peers with a, and both sides agree on standby.
    #[test]
    fn peers_are_symmetric(nodes in arb_nodes(14), topology in arb_topology()) {
        let e = expand("m", &spec(topology), &nodes, &Decisions::default()).unwrap();
        let all = links_by_member(&e);
        for (a, links) in &all {
            for l in links {
                prop_assert_ne!(&l.member, a, "no member peers with itself");
                let back = all[&l.member].iter().find(|r| &r.member == a);
                prop_assert!(back.is_some(), "{} peers {} but not back", a, l.member);
                prop_assert_eq!(back.unwrap().is_standby(), l.is_standby());
            }
        }
    }

    #[test]
    fn full_mesh_connects_every_pair(nodes in arb_nodes(14)) {
        let e = expand("m", &spec(full_mesh()), &nodes, &Decisions::default()).unwrap();
        for m in &e.members {
            let peers: BTreeSet<String> =
                e.links(&m.name).unwrap().into_iter().map(|l| l.member).collect();
            let others: BTreeSet<String> =
                e.members.iter().filter(|o| o.name != m.name).map(|o| o.name.clone()).collect();
            prop_assert_eq!(peers, others);
        }
    }

    /// A member of location X peers directly only with members of X, or, if it is X's
    /// gateway, with the other locations' gateways.
    #[test]
    fn locations_peer_inside_or_gateway_to_gateway(nodes in arb_nodes(14)) {
        let e = expand("m", &spec(locations(None)), &nodes, &Decisions::default()).unwrap();
        for m in &e.members {
            for l in e.links(&m.name).unwrap() {
                let p = e.member(&l.member).unwrap();
                let same = p.location == m.location;
                let gateways = m.role == Role::Gateway && p.role == Role::Gateway;
                prop_assert!(same || gateways, "{} ({:?}) peers {} ({:?})", m.node, m.location, p.node, p.location);
            }
        }
        for loc in &e.locations {
            let gateways = loc.members.iter().filter(|n| e.member(n).unwrap().role == Role::Gateway);
            prop_assert!(gateways.count() <= 1, "one gateway per location");
        }
    }

    /// Every member reaches every other member's addresses (IPv4 and IPv6) and announced
    /// prefixes, with WireGuard's rules: longest allowed-IP match to send, source check on
    /// receive, forwarding on the members in between; no device has a prefix on two peers.
    #[test]
    fn every_pair_has_a_path(nodes in arb_nodes(10), topology in arb_topology()) {
        let e = expand("m", &spec(topology), &nodes, &Decisions::default()).unwrap();
        let t = tables(&e);
        if !connected(&e) {
            return Ok(());
        }
        let addrs = addresses(&e);
        for a in &e.members {
            for b in e.members.iter().filter(|b| b.name != a.name) {
                for (src, dst) in addrs[&a.name].iter().zip(&addrs[&b.name]) {
                    let path = walk(&e, &t, &a.name, *src, *dst, &b.name)
                        .map_err(TestCaseError::fail)?;
                    prop_assert!(path.len() <= 4, "at most three hops: {:?}", path);
                    if e.topology == TopologyType::FullMesh {
                        prop_assert_eq!(path.len(), 2, "direct");
                    }
                }
                for prefix in &b.announced {
                    let inside = prefix.hosts().next().unwrap();
                    walk(&e, &t, &a.name, addrs[&a.name][0], inside, &b.name)
                        .map_err(TestCaseError::fail)?;
                    let links = e.links(&a.name).unwrap();
                    prop_assert!(e.routes(&links).contains(prefix), "{} routes {}", a.node, prefix);
                }
            }
        }
    }

    /// Same input in any order, same expansion and same links.
    #[test]
    fn node_order_does_not_matter(
        nodes in arb_nodes(12),
        topology in arb_topology(),
        seed in any::<u64>(),
    ) {
        let mut shuffled = nodes.clone();
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let e1 = expand("m", &spec(topology.clone()), &nodes, &Decisions::default()).unwrap();
        let e2 = expand("m", &spec(topology), &shuffled, &Decisions::default()).unwrap();
        prop_assert_eq!(&e1, &e2);
        prop_assert_eq!(links_by_member(&e1), links_by_member(&e2));
    }

    /// A join is hitless: with the recorded decisions, no existing link goes away or loses
    /// anything it carried, and no gateway or primary hub changes. In a full mesh, the
    /// existing members' peer lists gain exactly the new member and nothing else changes.
    #[test]
    fn joins_only_add(nodes in arb_nodes(12), extra in arb_node(40), topology in arb_topology()) {
        let mut extra = extra;
        extra.labels.insert("mesh".into(), "yes".into());
        let before = expand("m", &spec(topology.clone()), &nodes, &Decisions::default()).unwrap();
        let mut grown = nodes.clone();
        grown.push(extra.clone());
        let after = expand("m", &spec(topology), &grown, &before.decisions()).unwrap();

        let (d1, d2) = (before.decisions(), after.decisions());
        for (location, gateway) in &d1.gateways {
            prop_assert_eq!(d2.gateways.get(location), Some(gateway), "gateway of {} kept", location);
        }
        for (spoke, hub) in &d1.primary_hubs {
            prop_assert_eq!(d2.primary_hubs.get(spoke), Some(hub), "primary hub of {} kept", spoke);
        }
        let new_name = after.member_on(&extra.name).unwrap().name.clone();
        for m in &before.members {
            let old = before.links(&m.name).unwrap();
            let new = after.links(&m.name).unwrap();
            for l1 in &old {
                let l2 = new.iter().find(|l| l.member == l1.member);
                prop_assert!(l2.is_some(), "{} lost its link to {}", m.node, l1.node);
                let l2 = l2.unwrap();
                prop_assert_eq!(l2.endpoint, l1.endpoint);
                prop_assert_eq!(l2.networks, l1.networks);
                prop_assert!(l1.hosts.iter().all(|h| l2.hosts.contains(h)));
                prop_assert!(l1.prefixes.iter().all(|p| l2.prefixes.contains(p)));
            }
            if after.topology == TopologyType::FullMesh {
                let mut expected = old.clone();
                expected.extend(new.iter().filter(|l| l.member == new_name).cloned());
                expected.sort_by(|a, b| a.node.cmp(&b.node));
                prop_assert_eq!(&new, &expected);
                prop_assert_eq!(new.len(), old.len() + 1);
            }
        }
    }

    /// A member that leaves moves no other location's gateway and no other spoke's hub.
    #[test]
    fn leaves_keep_the_other_decisions(nodes in arb_nodes(12), pick in any::<prop::sample::Index>(), topology in arb_topology()) {
        let before = expand("m", &spec(topology.clone()), &nodes, &Decisions::default()).unwrap();
        prop_assume!(!before.members.is_empty());
        let gone = pick.get(&before.members).node.clone();
        let rest: Vec<MeshNode> = nodes.iter().filter(|n| n.name != gone).cloned().collect();
        let after = expand("m", &spec(topology), &rest, &before.decisions()).unwrap();
        let (d1, d2) = (before.decisions(), after.decisions());
        for (location, gateway) in d1.gateways.iter().filter(|(_, g)| **g != gone) {
            prop_assert_eq!(d2.gateways.get(location), Some(gateway));
        }
        for (spoke, hub) in d1.primary_hubs.iter().filter(|(s, h)| **s != gone && **h != gone) {
            prop_assert_eq!(d2.primary_hubs.get(spoke), Some(hub));
        }
        prop_assert!(after.member_on(&gone).is_none());
        for m in &after.members {
            prop_assert!(after.links(&m.name).unwrap().iter().all(|l| l.node != gone));
        }
    }

    /// What a node daemon computes from the generated Interfaces (labels, annotations,
    /// spec, and the endpoints of their status) is what the expansion says: every member's
    /// links, in any topology, with keepalive and announced prefixes, after a join with the
    /// recorded decisions too.
    #[test]
    fn links_from_the_generated_interfaces_are_the_expansions(
        nodes in arb_nodes(12),
        topology in arb_topology(),
        keepalive in prop::option::of(0..30u16),
        extra in arb_node(40),
    ) {
        use kwire_mesh::generate::member_interface;
        use kwire_mesh::members::{device_of, member_of, topology_of};
        let mut s = spec(topology);
        s.device.device_name = Some("wgmesh".parse().unwrap());
        s.device.persistent_keepalive = keepalive;
        let first = expand("m", &s, &nodes, &Decisions::default()).unwrap();
        let mut grown = nodes.clone();
        grown.push(extra);
        let e = expand("m", &s, &grown, &first.decisions()).unwrap();
        let mut mesh = kwire_mesh::Mesh::new("m", s);
        mesh.metadata.uid = Some("uid".into());
        let interfaces: Vec<_> = e
            .members
            .iter()
            .map(|m| (member_interface(&mesh, &e, m).unwrap(), m.endpoint))
            .collect();
        for (local, _) in &interfaces {
            let topology = topology_of(local);
            let read = interfaces
                .iter()
                .map(|(i, endpoint)| member_of(i, topology, *endpoint).unwrap())
                .collect();
            let view = Expansion::from_members("m", topology, device_of(local).unwrap(), read);
            let name = local.metadata.name.as_deref().unwrap();
            prop_assert_eq!(view.links(name), e.links(name));
            // The same member record, but for the gateway endpoint, which only gateways say.
            let mut expected = e.member(name).unwrap().clone();
            if expected.role != Role::Gateway {
                expected.gateway_endpoint = None;
            }
            prop_assert_eq!(view.member(name), Some(&expected));
        }
    }
}
