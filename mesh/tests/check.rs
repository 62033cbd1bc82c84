//! The lint checks: each finding names the problem and what to do.

mod support;

use kwire_crds::names::DeviceName;
use kwire_mesh::api::NodeAddressType;
use kwire_mesh::check::{
    ExistingObject, Finding, OtherDevice, Severity, check_mesh, check_meshes, check_names,
};
use kwire_mesh::{Decisions, expand};
use support::*;

#[test]
fn a_hub_and_spoke_mesh_without_a_hub_is_an_error() {
    let nodes = vec![
        node("a", 1, &[("mesh", "yes")]),
        node("b", 2, &[("mesh", "yes")]),
    ];
    let e = expand("m", &spec(hub_and_spoke()), &nodes, &Decisions::default()).unwrap();
    let findings = check_mesh(&e, &[]);
    assert_eq!(
        findings,
        vec![Finding::NoHub {
            mesh: "m".into(),
            spokes: 2
        }]
    );
    assert_eq!(findings[0].severity(), Severity::Error);
    assert_eq!(findings[0].reason(), "NoHub");
    assert!(
        findings[0]
            .to_string()
            .contains("label at least one selected node as a hub")
    );

    let nodes = vec![
        node("a", 1, &[("mesh", "yes"), ("hub", "yes")]),
        node("b", 2, &[("mesh", "yes")]),
    ];
    let e = expand("m", &spec(hub_and_spoke()), &nodes, &Decisions::default()).unwrap();
    assert_eq!(check_mesh(&e, &[]), vec![]);
}

#[test]
fn a_location_without_a_possible_gateway_is_an_error_only_with_several_locations() {
    let nodes = vec![
        node("a1", 1, &[("mesh", "yes"), ("zone", "a")]),
        node("b1", 2, &[("mesh", "yes"), ("zone", "b")]),
    ];
    let topo = locations(Some(NodeAddressType::ExternalIP));
    let e = expand("m", &spec(topo.clone()), &nodes, &Decisions::default()).unwrap();
    let findings = check_mesh(&e, &[]);
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert!(matches!(&findings[0], Finding::NoGateway { location, .. } if location == "a"));
    let text = findings[0].to_string();
    assert!(text.contains("gatewayAddress"), "{text}");
    assert!(text.contains("cut off from the other locations"), "{text}");

    let one_location = expand("m", &spec(topo), &nodes[..1], &Decisions::default()).unwrap();
    assert_eq!(
        check_mesh(&one_location, &[]),
        vec![],
        "one location needs no gateway"
    );
}

#[test]
fn an_empty_mesh_and_a_member_without_address_are_warnings() {
    let e = expand(
        "m",
        &spec(full_mesh()),
        &[node("a", 1, &[])],
        &Decisions::default(),
    )
    .unwrap();
    let f = check_mesh(&e, &[]);
    assert_eq!(f, vec![Finding::NoMembers { mesh: "m".into() }]);
    assert_eq!(f[0].severity(), Severity::Warning);

    let mut a = node("a", 1, &[("mesh", "yes")]);
    a.internal.clear();
    let e = expand("m", &spec(full_mesh()), &[a], &Decisions::default()).unwrap();
    assert_eq!(
        check_mesh(&e, &[]),
        vec![Finding::NoAddress {
            mesh: "m".into(),
            node: "a".into()
        }]
    );
}

#[test]
fn overlapping_announced_prefixes_are_found_within_a_mesh_and_against_its_networks() {
    let mut a = node("a", 1, &[("mesh", "yes")]);
    let mut b = node("b", 2, &[("mesh", "yes")]);
    a.pod_cidrs = vec!["10.244.0.0/16".parse().unwrap()];
    b.pod_cidrs = vec!["10.244.2.0/24".parse().unwrap()];
    let e = expand("m", &spec(full_mesh()), &[a, b], &Decisions::default()).unwrap();
    let f = check_mesh(&e, &[]);
    assert_eq!(f.len(), 1, "{f:?}");
    let text = f[0].to_string();
    assert!(
        text.contains("node a in Mesh m announces 10.244.0.0/16"),
        "{text}"
    );
    assert!(text.contains("announce disjoint prefixes"), "{text}");

    let c = node("c", 3, &[("mesh", "yes")]);
    let e = expand("m", &spec(full_mesh()), &[c], &Decisions::default()).unwrap();
    let f = check_mesh(&e, &["10.244.0.0/14".parse().unwrap()]);
    assert!(
        matches!(&f[..], [Finding::OverlappingPrefixes { .. }]),
        "{f:?}"
    );
}

#[test]
fn two_meshes_on_one_node_clash_on_device_name_or_port() {
    let nodes = vec![
        node("a", 1, &[("mesh", "yes")]),
        node("b", 2, &[("mesh", "yes")]),
    ];
    let first = expand("one", &spec(full_mesh()), &nodes, &Decisions::default()).unwrap();
    let mut s = spec(full_mesh());
    s.device.device_name = Some(DeviceName::parse("one").unwrap());
    s.device.listen_port = 51821;
    let second = expand("two", &s, &nodes[1..], &Decisions::default()).unwrap();
    let f = check_meshes(&[&first, &second], &[]);
    assert_eq!(
        f,
        vec![Finding::DeviceClash {
            node: "b".into(),
            device: "one".into(),
            first: "Mesh one".into(),
            second: "Mesh two".into(),
        }]
    );
    assert!(
        f[0].to_string()
            .contains("set a different spec.device.deviceName")
    );

    let hand_written = OtherDevice {
        owner: "Interface b-wg0".into(),
        node: "b".into(),
        device: "wg0".into(),
        listen_port: 51820,
    };
    let f = check_meshes(&[&first], &[hand_written]);
    assert!(
        matches!(&f[..], [Finding::PortClash { node, port: 51820, .. }] if node == "b"),
        "{f:?}"
    );
    assert!(
        f[0].to_string().contains("Interface b-wg0 and Mesh one"),
        "{}",
        f[0]
    );
}

#[test]
fn prefixes_of_two_meshes_that_share_a_node_must_not_overlap() {
    let a = node("a", 1, &[("mesh", "yes")]);
    let b = node("b", 2, &[("mesh", "yes")]);
    let mut c = node("c", 3, &[("mesh", "yes")]);
    c.pod_cidrs = vec!["10.244.1.0/24".parse().unwrap()]; // a's pod CIDR
    let one = expand(
        "one",
        &spec(full_mesh()),
        &[a.clone(), b.clone()],
        &Decisions::default(),
    )
    .unwrap();
    let mut s = spec(full_mesh());
    s.device.device_name = Some(DeviceName::parse("two").unwrap());
    s.device.listen_port = 51821;
    let two = expand("two", &s, &[b, c.clone()], &Decisions::default()).unwrap();
    let f = check_meshes(&[&one, &two], &[]);
    assert!(
        matches!(&f[..], [Finding::OverlappingPrefixes { .. }]),
        "{f:?}"
    );
    // Only b, which announces 10.244.2.0/24 itself, is in both meshes: nobody routes it twice.
    assert!(
        !f.iter().any(|f| f.to_string().contains("10.244.2.0/24")),
        "{f:?}"
    );
    // Disjoint node sets: b is not in the second mesh any more, so no node sees both.
    let apart = expand("two", &s, &[c], &Decisions::default()).unwrap();
    assert_eq!(check_meshes(&[&one, &apart], &[]), vec![]);
    // Both a and b in both meshes: a routes b's pod CIDR through both devices.
    let same_nodes = expand(
        "two",
        &s,
        &[a, node("b", 2, &[("mesh", "yes")])],
        &Decisions::default(),
    )
    .unwrap();
    let f = check_meshes(&[&one, &same_nodes], &[]);
    assert!(
        f.iter().any(|f| f
            .to_string()
            .contains("node b in Mesh one announces 10.244.2.0/24")),
        "{f:?}"
    );
}

#[test]
fn a_generated_name_taken_by_an_object_the_mesh_does_not_own_is_an_error() {
    let nodes = vec![node("a", 1, &[("mesh", "yes")])];
    let e = expand("m", &spec(full_mesh()), &nodes, &Decisions::default()).unwrap();
    let name = e.members[0].name.clone();
    let user = ExistingObject {
        kind: "Interface".into(),
        name: name.clone(),
        owner_mesh: None,
    };
    let f = check_names(&e, &[user]);
    assert!(
        matches!(&f[..], [Finding::NameTaken { node, .. }] if node == "a"),
        "{f:?}"
    );
    assert!(f[0].to_string().contains("rename or delete that object"));
    let ours = ExistingObject {
        kind: "Interface".into(),
        name,
        owner_mesh: Some("m".into()),
    };
    assert_eq!(
        check_names(&e, &[ours]),
        vec![],
        "its own member is not a clash"
    );
    let unrelated = ExistingObject {
        kind: "Interface".into(),
        name: "a-wg0".into(),
        owner_mesh: None,
    };
    assert_eq!(check_names(&e, &[unrelated]), vec![]);
}
