use serde_json::json;

use super::*;
use crate::fixtures::*;
use kwire_crds::manifest::{KwireObject, parse_manifests};

const RELAY: &str = include_str!("../../../examples/seed/relay.yaml");
const RELAY_NETWORKS: &str = include_str!("../../../examples/seed/relay-networks.yaml");

fn objects(text: &str) -> Vec<KwireObject> {
    parse_manifests(text).unwrap()
}

/// Applies a spec patch to the object named `name`.
fn edit(mut objects: Vec<KwireObject>, name: &str, patch: serde_json::Value) -> Vec<KwireObject> {
    for o in &mut objects {
        if o.name() != Some(name) {
            continue;
        }
        *o = match o.clone() {
            KwireObject::Interface(i) => KwireObject::Interface(patch_spec(i, patch.clone())),
            KwireObject::Peer(p) => KwireObject::Peer(patch_spec(p, patch.clone())),
            KwireObject::Route(r) => KwireObject::Route(patch_spec(r, patch.clone())),
            KwireObject::Network(n) => KwireObject::Network(patch_spec(n, patch.clone())),
            other => other,
        };
    }
    objects
}

fn findings(objects: &[KwireObject]) -> Vec<Finding> {
    check(&World::from_manifests(objects))
}

fn about<'a>(findings: &'a [Finding], kind: ObjectKind, name: &str) -> Vec<&'a Finding> {
    findings
        .iter()
        .filter(|f| f.kind == kind && f.name == name)
        .collect()
}

#[test]
fn every_example_manifest_has_no_findings() {
    for (file, text) in [
        ("relay.yaml", RELAY),
        ("relay-networks.yaml", RELAY_NETWORKS),
        (
            "two-hosts.yaml",
            include_str!("../../../examples/seed/two-hosts.yaml"),
        ),
        (
            "external-peer.yaml",
            include_str!("../../../examples/external-peer.yaml"),
        ),
        ("dual-stack.yaml", DUAL_STACK),
    ] {
        let found = findings(&objects(text));
        assert!(found.is_empty(), "{file}: {found:#?}");
    }
}

const DUAL_STACK: &str = include_str!("../../../examples/dual-stack.yaml");

#[test]
fn without_its_allowed_ips_the_dual_stack_example_routes_a_v6_network_its_peer_drops() {
    // examples/dual-stack.yaml routes fd00:30::/64 into east-wg0; with the default
    // AllowedIPs (west's addresses only) on Peer east-west, WireGuard would drop those packets.
    let found = findings(&edit(
        objects(DUAL_STACK),
        "east-west",
        json!({"allowedIPs": null}),
    ));
    let route = about(&found, ObjectKind::Route, "east-to-west-v6-services");
    assert_eq!(route.len(), 1, "{found:#?}");
    assert!(
        route[0]
            .message
            .ends_with("add fd00:30::/64 to spec.allowedIPs of Peer east-west")
    );
}

#[test]
fn with_b_not_forwarding_the_finding_explains_why_a_cannot_reach_c() {
    let objects = edit(
        edit(objects(RELAY), "b-wg0-server", json!({"forwarding": null})),
        "b-wg1-client",
        json!({"forwarding": false}),
    );
    let found = findings(&objects);
    let on_a_to_b: Vec<&str> = about(&found, ObjectKind::Peer, "a-to-b")
        .iter()
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(
        on_a_to_b,
        [
            "Peer a-to-b sends 10.2.0.0/24 from Interface a-wg0-client (node a) through Interface b-wg0-server on node b and on out of Interface b-wg1-client, but b-wg1-client has forwarding off, so node b drops the relayed packets and a-wg0-client cannot reach 10.2.0.0/24 (Interface b-wg1-client on node b, Interface c-wg0-server on node c): set spec.forwarding: true on Interface b-wg1-client",
            "Peer a-to-b sends 10.2.0.0/24 from Interface a-wg0-client (node a) through Interface b-wg0-server on node b, but b-wg0-server has forwarding off, so node b drops the relayed packets and a-wg0-client cannot reach 10.2.0.0/24 (Interface b-wg1-client on node b, Interface c-wg0-server on node c): set spec.forwarding: true on Interface b-wg0-server",
        ]
    );
    assert!(
        found
            .iter()
            .all(|f| f.reason == reasons::RELAY_NOT_FORWARDING)
    );
    // The way back (C to A through B) is reported on the other Peer, and both B devices say why.
    assert!(!about(&found, ObjectKind::Peer, "b-to-c").is_empty());
    assert!(!about(&found, ObjectKind::Interface, "b-wg0-server").is_empty());
    assert!(!about(&found, ObjectKind::Interface, "b-wg1-client").is_empty());
    assert!(about(&found, ObjectKind::Interface, "a-wg0-client").is_empty());
}

#[test]
fn with_a_missing_c_network_in_allowed_ips_the_route_explains_why_a_cannot_reach_c() {
    let objects = edit(
        objects(RELAY),
        "a-to-b",
        json!({"allowedIPs": ["10.1.0.2/32"]}),
    );
    let found = findings(&objects);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].kind, ObjectKind::Route);
    assert_eq!(found[0].name, "a-to-c-network");
    assert_eq!(found[0].reason, reasons::ROUTE_NOT_COVERED);
    assert_eq!(
        found[0].message,
        "Route a-to-c-network sends 10.2.0.0/24 into Interface a-wg0-client on node a, but no Peer of a-wg0-client allows all of 10.2.0.0/24 (Peer a-to-b allows 10.1.0.2/32), so WireGuard drops these packets and node a cannot reach 10.2.0.0/24 (Interface b-wg1-client on node b, Interface c-wg0-server on node c): add 10.2.0.0/24 to spec.allowedIPs of Peer a-to-b"
    );
}

#[test]
fn with_c_missing_a_network_the_fix_names_remote_allowed_ips() {
    let objects = edit(
        objects(RELAY_NETWORKS),
        "b-to-c",
        json!({"remoteAllowedIPs": null}),
    );
    let found = findings(&objects);
    let route = about(&found, ObjectKind::Route, "c-to-a-network");
    assert_eq!(route.len(), 1, "{found:#?}");
    assert!(
        route[0]
            .message
            .ends_with("add 10.1.0.0/24 to spec.remoteAllowedIPs of Peer b-to-c"),
        "{}",
        route[0].message
    );
}

#[test]
fn a_route_is_covered_by_the_union_of_the_peers_of_its_interface() {
    let w = world(
        vec![],
        vec![
            interface("hub", "n1", &["10.0.0.1/24"]),
            interface("s1", "n2", &["10.0.0.2/24"]),
            interface("s2", "n3", &["10.0.0.3/24"]),
        ],
        vec![
            patch_spec(
                peer("p1", "hub", "s1"),
                json!({"allowedIPs": ["10.8.0.0/25"]}),
            ),
            patch_spec(
                peer("p2", "hub", "s2"),
                json!({"allowedIPs": ["10.8.0.128/25"]}),
            ),
        ],
        vec![route("r", "hub", "10.8.0.0/24", None)],
        None,
    );
    let found = check(&w);
    assert!(
        about(&found, ObjectKind::Route, "r").is_empty(),
        "{found:#?}"
    );
}

#[test]
fn a_route_via_a_next_hop_outside_the_interface_networks_is_reported() {
    let w = world(
        vec![],
        vec![
            interface("a", "n1", &["10.0.0.1/24"]),
            patch_spec(
                interface("b", "n2", &["10.0.0.2/24"]),
                json!({"forwarding": true}),
            ),
        ],
        vec![patch_spec(
            peer("p", "a", "b"),
            json!({"allowedIPs": ["10.5.0.0/16"]}),
        )],
        vec![route("r", "a", "10.5.0.0/16", Some("10.9.9.9"))],
        None,
    );
    let found = check(&w);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].reason, reasons::VIA_NOT_ON_LINK);
    assert!(
        found[0]
            .message
            .contains("use a next hop inside 10.0.0.0/24")
    );
}

#[test]
fn a_route_on_an_interface_without_peers_says_to_create_one() {
    let w = world(
        vec![],
        vec![interface("a", "n1", &["10.0.0.1/24"])],
        vec![],
        vec![route("r", "a", "10.5.0.0/16", None)],
        None,
    );
    let found = check(&w);
    assert!(
        found[0].message.contains("a has no Peers"),
        "{}",
        found[0].message
    );
}

#[test]
fn two_peers_putting_one_prefix_on_an_interface_are_both_reported() {
    let w = world(
        vec![],
        vec![
            interface("hub", "n1", &["10.0.0.1/24"]),
            patch_spec(
                interface("s1", "n2", &["10.0.0.2/24"]),
                json!({"forwarding": true}),
            ),
            patch_spec(
                interface("s2", "n3", &["10.0.0.3/24"]),
                json!({"forwarding": true}),
            ),
        ],
        vec![
            patch_spec(
                peer("p1", "hub", "s1"),
                json!({"allowedIPs": ["10.8.0.0/24"]}),
            ),
            patch_spec(
                peer("p2", "hub", "s2"),
                json!({"allowedIPs": ["10.8.0.0/24"]}),
            ),
        ],
        vec![],
        None,
    );
    let found = check(&w);
    assert_eq!(found.len(), 2, "{found:#?}");
    for f in &found {
        assert_eq!(f.reason, reasons::OVERLAPPING_ALLOWED_IPS);
        assert!(
            f.message
                .starts_with("Peers p1, p2 all put 10.8.0.0/24 in the AllowedIPs of Interface hub")
        );
    }
}

#[test]
fn two_peers_linking_the_same_pair_of_interfaces_are_duplicates() {
    let w = world(
        vec![],
        vec![
            interface("a", "n1", &["10.0.0.1/24"]),
            interface("b", "n2", &["10.0.0.2/24"]),
        ],
        vec![peer("ab", "a", "b"), peer("ba", "b", "a")],
        vec![],
        None,
    );
    let reasons: Vec<_> = check(&w)
        .iter()
        .map(|f| (f.name.clone(), f.reason))
        .collect();
    assert!(
        reasons.contains(&("ab".into(), reasons::DUPLICATE_PEER)),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("ba".into(), reasons::DUPLICATE_PEER)),
        "{reasons:?}"
    );
}

#[test]
fn interfaces_sharing_a_node_must_differ_in_port_device_and_network() {
    let a = patch_spec(
        interface("a", "n1", &["10.0.0.1/24"]),
        json!({"deviceName": "wg0"}),
    );
    let b = patch_spec(
        interface("b", "n1", &["10.0.0.5/25"]),
        json!({"deviceName": "wg0"}),
    );
    let found = check(&world(vec![], vec![a, b], vec![], vec![], None));
    let mut got: Vec<(&str, &str)> = found.iter().map(|f| (f.name.as_str(), f.reason)).collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("a", reasons::DEVICE_NAME_CONFLICT),
            ("a", reasons::LISTEN_PORT_CONFLICT),
            ("a", reasons::OVERLAPPING_ADDRESSES),
            ("b", reasons::DEVICE_NAME_CONFLICT),
            ("b", reasons::LISTEN_PORT_CONFLICT),
            ("b", reasons::OVERLAPPING_ADDRESSES),
        ]
    );
    let overlap = found
        .iter()
        .find(|f| f.name == "a" && f.reason == reasons::OVERLAPPING_ADDRESSES)
        .unwrap();
    assert_eq!(
        overlap.message,
        "Interfaces a (10.0.0.1/24) and b (10.0.0.5/25) on node n1 have overlapping networks, so the kernel cannot tell which device a packet for 10.0.0.0/25 belongs to: put them in separate networks"
    );
}

#[test]
fn the_same_address_twice_in_a_namespace_is_reported_on_both_interfaces() {
    let w = world(
        vec![],
        vec![
            interface("a", "n1", &["10.0.0.1/24"]),
            interface("b", "n2", &["10.0.0.1/24"]),
        ],
        vec![],
        vec![],
        None,
    );
    let found = check(&w);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(
        found[0].message,
        "Interface a uses address 10.0.0.1, which Interface b also uses: give each Interface its own address (or let a Network allocate them)"
    );
}

#[test]
fn an_address_written_by_hand_inside_a_network_cannot_collide_with_an_allocation() {
    let w = world(
        vec![network("net", "10.0.0.0/24")],
        vec![
            interface("manual", "n1", &["10.0.0.1/24"]),
            interface_in("auto", "n2", "net", None),
        ],
        vec![],
        vec![],
        None,
    );
    assert!(check(&w).is_empty(), "{:#?}", check(&w));
}

#[test]
fn references_to_missing_objects_are_reported_on_the_referring_object() {
    let w = world(
        vec![],
        vec![interface_in("a", "ghost-node", "ghost-net", None)],
        vec![peer("p", "ghost-local", "ghost-remote")],
        vec![route("r", "ghost-if", "10.0.0.0/8", None)],
        Some(vec![node("n1", &["192.168.0.1"], &[])]),
    );
    let got: Vec<String> = check(&w)
        .iter()
        .map(|f| format!("{} {} {}", f.kind, f.name, f.reason))
        .collect();
    assert_eq!(
        got,
        [
            "Interface a NetworkNotFound",
            "Interface a NodeNotFound",
            "Peer p InterfaceNotFound",
            "Peer p InterfaceNotFound",
            "Route r InterfaceNotFound",
        ]
    );
}

#[test]
fn nodes_are_not_reported_missing_when_nodes_are_unknown() {
    let w = world(
        vec![],
        vec![interface("a", "anywhere", &["10.0.0.1/24"])],
        vec![],
        vec![],
        None,
    );
    assert!(check(&w).is_empty());
}

#[test]
fn the_topology_condition_is_true_without_findings_and_carries_every_message_otherwise() {
    let f = |m: &str| {
        Finding::new(
            ObjectKind::Route,
            "ns",
            "r",
            reasons::ROUTE_NOT_COVERED,
            m.into(),
        )
    };
    let findings = vec![f("one"), f("two")];
    let c = condition_for(&findings, ObjectKind::Route, "ns", "r");
    assert!(!c.is_true());
    assert_eq!(c.reason, reasons::ROUTE_NOT_COVERED);
    assert_eq!(c.message, "one; two");
    let ok = condition_for(&findings, ObjectKind::Route, "ns", "other");
    assert!(ok.is_true());
    assert_eq!(ok.type_, "TopologyValid");
}

#[test]
fn coverage_is_by_the_union_of_prefixes() {
    let n = |s: &str| -> IpNet { s.parse().unwrap() };
    let cases: &[(&[&str], &str, bool)] = &[
        (&["10.0.0.0/8"], "10.2.0.0/24", true),
        (&["10.2.0.0/25", "10.2.0.128/25"], "10.2.0.0/24", true),
        (&["10.2.0.0/25"], "10.2.0.0/24", false),
        (&["0.0.0.0/0"], "10.2.0.0/24", true),
        (&["::/0"], "10.2.0.0/24", false),
        (&[], "10.2.0.0/24", false),
        (&["10.2.0.0/24"], "10.2.0.0/24", true),
    ];
    for (prefixes, destination, expected) in cases {
        let prefixes: Vec<IpNet> = prefixes.iter().map(|p| n(p)).collect();
        assert_eq!(
            covers(&prefixes, n(destination)),
            *expected,
            "{prefixes:?} {destination}"
        );
    }
}
