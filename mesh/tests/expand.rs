//! The expansion on small, hand-checked meshes.

mod support;

use std::net::IpAddr;

use kwire_crds::names::{IpPrefix, ObjectName};
use kwire_mesh::api::{Announce, NodeAddressType, NodePrefixes};
use kwire_mesh::{Decisions, ExpandError, Role, expand};
use support::*;

fn names(links: &[kwire_mesh::PeerLink]) -> Vec<String> {
    links.iter().map(|l| l.node.clone()).collect()
}

#[test]
fn full_mesh_links_every_selected_node_with_every_other() {
    let nodes = vec![
        node("a", 1, &[("mesh", "yes")]),
        node("b", 2, &[("mesh", "yes")]),
        node("c", 3, &[("mesh", "yes")]),
        node("d", 4, &[("mesh", "no")]),
    ];
    let e = expand("overlay", &spec(full_mesh()), &nodes, &Decisions::default()).unwrap();
    assert_eq!(e.members.len(), 3, "d is not selected");
    let a = e.member_on("a").unwrap();
    assert_eq!(a.role, Role::Member);
    assert!(
        a.forwarding,
        "a announces its pod CIDR, so it forwards to its pods"
    );
    let links = e.links(&a.name).unwrap();
    assert_eq!(names(&links), ["b", "c"]);
    let b = &links[0];
    assert_eq!(b.hosts, vec![e.member_on("b").unwrap().name.clone()]);
    assert!(!b.networks);
    assert_eq!(b.prefixes, vec!["10.244.2.0/24".parse().unwrap()]);
    assert_eq!(b.endpoint, Some("192.168.0.2:51820".parse().unwrap()));
    assert_eq!(
        e.routes(&links),
        vec![
            "10.244.2.0/24".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap()
        ]
    );
    let addrs = addresses(&e);
    let allowed = kwire_mesh::Expansion::allowed_ips(b, &addrs, &network_cidrs());
    let shown: Vec<String> = allowed.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["10.100.0.2/32", "10.244.2.0/24", "fd00:100::2/128"]);
}

#[test]
fn hub_and_spoke_sends_everything_through_the_primary_hub_and_keeps_other_hubs_on_standby() {
    let nodes = vec![
        node("h1", 1, &[("mesh", "yes"), ("hub", "yes")]),
        node("h2", 2, &[("mesh", "yes"), ("hub", "yes")]),
        node("s1", 3, &[("mesh", "yes")]),
        node("s2", 4, &[("mesh", "yes")]),
        node("s3", 5, &[("mesh", "yes")]),
    ];
    let decisions = Decisions {
        primary_hubs: [("s1".into(), "h1".into()), ("s2".into(), "h2".into())].into(),
        ..Default::default()
    };
    let e = expand("m", &spec(hub_and_spoke()), &nodes, &decisions).unwrap();
    let s1 = e.member_on("s1").unwrap();
    assert_eq!(s1.role, Role::Spoke);
    assert_eq!(
        s1.primary_hub.as_deref(),
        Some("h1"),
        "recorded choice kept"
    );
    assert_eq!(
        e.member_on("s2").unwrap().primary_hub.as_deref(),
        Some("h2")
    );
    assert!(e.member_on("s3").unwrap().primary_hub.is_some());
    assert!(e.member_on("h1").unwrap().forwarding);

    let links = e.links(&s1.name).unwrap();
    assert_eq!(names(&links), ["h1", "h2"], "spokes peer with hubs only");
    assert!(
        links[0].networks,
        "the primary hub carries the mesh networks"
    );
    assert_eq!(
        links[0].prefixes.len(),
        4,
        "and every other member's pod CIDR"
    );
    assert!(links[1].is_standby());

    let h1 = e.links(&e.member_on("h1").unwrap().name).unwrap();
    assert_eq!(
        names(&h1),
        ["h2", "s1", "s2", "s3"],
        "hubs peer with everyone"
    );
    let to_h2 = &h1[0];
    assert!(
        to_h2.hosts.contains(&e.member_on("s2").unwrap().name),
        "h2's spokes are behind h2"
    );

    let t = tables(&e);
    let addrs = addresses(&e);
    let s2 = e.member_on("s2").unwrap();
    let path = walk(
        &e,
        &t,
        &s1.name,
        addrs[&s1.name][0],
        addrs[&s2.name][0],
        &s2.name,
    )
    .unwrap();
    let hops: Vec<&str> = path
        .iter()
        .map(|m| e.member(m).unwrap().node.as_str())
        .collect();
    assert_eq!(hops, ["s1", "h1", "h2", "s2"]);
}

#[test]
fn locations_mesh_inside_and_link_through_gateways() {
    let nodes = vec![
        node("a1", 1, &[("mesh", "yes"), ("zone", "a")]),
        node("a2", 2, &[("mesh", "yes"), ("zone", "a")]),
        node("a3", 3, &[("mesh", "yes"), ("zone", "a")]),
        node("b1", 4, &[("mesh", "yes"), ("zone", "b")]),
        node("b2", 5, &[("mesh", "yes"), ("zone", "b")]),
        node("b3", 6, &[("mesh", "yes"), ("zone", "b")]),
    ];
    let e = expand("m", &spec(locations(None)), &nodes, &Decisions::default()).unwrap();
    assert_eq!(e.locations.len(), 2);
    let gw_a = e.member_on("a1").unwrap();
    assert_eq!(
        gw_a.role,
        Role::Gateway,
        "first eligible by name without a record"
    );
    assert_eq!(e.member_on("a2").unwrap().role, Role::Member);
    assert_eq!(names(&e.links(&gw_a.name).unwrap()), ["a2", "a3", "b1"]);
    let a2 = e.links(&e.member_on("a2").unwrap().name).unwrap();
    assert_eq!(
        names(&a2),
        ["a1", "a3"],
        "non-gateways stay in their location"
    );
    assert!(a2[0].networks, "the gateway carries the rest of the mesh");
    assert_eq!(a2[0].prefixes.len(), 4, "a1's and b1..b3's pod CIDRs");

    let t = tables(&e);
    let addrs = addresses(&e);
    let (from, to) = (e.member_on("a2").unwrap(), e.member_on("b3").unwrap());
    let path = walk(
        &e,
        &t,
        &from.name,
        addrs[&from.name][1],
        addrs[&to.name][1],
        &to.name,
    )
    .unwrap();
    let hops: Vec<&str> = path
        .iter()
        .map(|m| e.member(m).unwrap().node.as_str())
        .collect();
    assert_eq!(
        hops,
        ["a2", "a1", "b1", "b3"],
        "over IPv6 too, through both gateways"
    );
}

#[test]
fn gateways_need_an_address_of_the_chosen_type_and_stay_while_they_qualify() {
    let mut nodes = vec![
        node("a1", 1, &[("mesh", "yes"), ("zone", "a")]),
        node("a2", 2, &[("mesh", "yes"), ("zone", "a")]),
        node("b1", 3, &[("mesh", "yes"), ("zone", "b")]),
    ];
    nodes[1].external = vec!["203.0.113.2".parse().unwrap()];
    let topo = locations(Some(NodeAddressType::ExternalIP));
    let e = expand("m", &spec(topo.clone()), &nodes, &Decisions::default()).unwrap();
    assert_eq!(
        e.member_on("a2").unwrap().role,
        Role::Gateway,
        "only a2 has an ExternalIP"
    );
    assert_eq!(e.locations[1].gateway, None, "b has no possible gateway");

    // b1 gets an ExternalIP; a new node that sorts first joins a: a2 stays the gateway.
    nodes[2].external = vec!["203.0.113.3".parse().unwrap()];
    let mut a0 = node("a0", 9, &[("mesh", "yes"), ("zone", "a")]);
    a0.external = vec!["203.0.113.9".parse().unwrap()];
    nodes.push(a0);
    let e2 = expand("m", &spec(topo.clone()), &nodes, &e.decisions()).unwrap();
    assert_eq!(e2.member_on("a2").unwrap().role, Role::Gateway);
    assert_eq!(e2.member_on("b1").unwrap().role, Role::Gateway);
    let link = e2
        .links(&e2.member_on("a2").unwrap().name)
        .unwrap()
        .into_iter()
        .find(|l| l.node == "b1")
        .unwrap();
    assert_eq!(
        link.endpoint.map(|s| s.ip()),
        Some("203.0.113.3".parse::<IpAddr>().unwrap()),
        "gateways reach each other on the chosen address type"
    );
    let local = e2
        .links(&e2.member_on("a0").unwrap().name)
        .unwrap()
        .into_iter()
        .find(|l| l.node == "a2")
        .unwrap();
    assert_eq!(
        local.endpoint.map(|s| s.ip()),
        Some("192.168.0.2".parse::<IpAddr>().unwrap())
    );

    // The gateway leaves: the next eligible member by name takes over.
    nodes.retain(|n| n.name != "a2");
    let e3 = expand("m", &spec(topo), &nodes, &e2.decisions()).unwrap();
    assert_eq!(e3.member_on("a0").unwrap().role, Role::Gateway);
}

#[test]
fn a_node_without_the_location_label_is_a_location_of_its_own() {
    let nodes = vec![
        node("a1", 1, &[("mesh", "yes"), ("zone", "a")]),
        node("lonely", 2, &[("mesh", "yes")]),
    ];
    let e = expand("m", &spec(locations(None)), &nodes, &Decisions::default()).unwrap();
    let lonely = e.member_on("lonely").unwrap();
    assert_eq!(lonely.location.as_deref(), Some("node:lonely"));
    assert_eq!(lonely.role, Role::Gateway);
    assert_eq!(names(&e.links(&lonely.name).unwrap()), ["a1"]);
}

#[test]
fn announced_prefixes_of_named_nodes_are_routed_to_them() {
    let mut s = spec(full_mesh());
    s.announce = Some(Announce {
        pod_cidrs: None,
        prefixes: Some(vec![NodePrefixes {
            node_name: ObjectName::new_unchecked("b"),
            cidrs: vec![IpPrefix::new_unchecked("192.168.10.0/24")],
        }]),
    });
    let nodes = vec![
        node("a", 1, &[("mesh", "yes")]),
        node("b", 2, &[("mesh", "yes")]),
    ];
    let e = expand("m", &s, &nodes, &Decisions::default()).unwrap();
    assert!(!e.member_on("a").unwrap().forwarding, "a announces nothing");
    assert!(e.member_on("b").unwrap().forwarding);
    let links = e.links(&e.member_on("a").unwrap().name).unwrap();
    assert_eq!(e.routes(&links), vec!["192.168.10.0/24".parse().unwrap()]);
}

#[test]
fn bad_input_from_files_is_an_error_that_says_what_to_do() {
    let nodes = vec![
        node("a", 1, &[("mesh", "yes")]),
        node("a", 2, &[("mesh", "yes")]),
    ];
    let err = expand("m", &spec(full_mesh()), &nodes, &Decisions::default()).unwrap_err();
    assert_eq!(err, ExpandError::DuplicateNode { node: "a".into() });
    assert!(err.to_string().contains("give each Node once"));

    let err = expand(
        "a-very-long-mesh-name",
        &spec(full_mesh()),
        &[],
        &Decisions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("set spec.device.deviceName"),
        "{err}"
    );
}

#[test]
fn the_generated_interface_is_owned_by_the_mesh_and_labelled() {
    use kwire_mesh::api::Mesh;
    use kwire_mesh::generate::{member_interface, member_interface_spec};
    let nodes = vec![
        node("a1", 1, &[("mesh", "yes"), ("zone", "a")]),
        node("b1", 2, &[("mesh", "yes"), ("zone", "b")]),
    ];
    let s = spec(locations(None));
    let e = expand("overlay", &s, &nodes, &Decisions::default()).unwrap();
    let member = e.member_on("a1").unwrap();
    let interface_spec = member_interface_spec(&e, member);
    assert_eq!(interface_spec.node_name.as_str(), "a1");
    assert_eq!(
        interface_spec.device_name.as_ref().unwrap().as_str(),
        "overlay"
    );
    assert_eq!(interface_spec.forwarding, Some(true));
    assert_eq!(interface_spec.networks.as_ref().unwrap().len(), 2);

    let mut mesh = Mesh::new("overlay", s.clone());
    mesh.metadata.namespace = Some("net".into());
    assert!(
        member_interface(&mesh, &e, member).is_none(),
        "no uid: read from a file"
    );
    mesh.metadata.uid = Some("1234".into());
    let object = member_interface(&mesh, &e, member).unwrap();
    assert_eq!(object.metadata.name.as_deref(), Some(member.name.as_str()));
    assert_eq!(object.metadata.namespace.as_deref(), Some("net"));
    let owner = &object.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Mesh", "1234"));
    assert_eq!(owner.controller, Some(true));
    let labels = object.metadata.labels.unwrap();
    assert_eq!(labels["kwire.dev/mesh"], "overlay");
    assert_eq!(labels["kwire.dev/mesh-role"], "gateway");
    assert_eq!(labels["kwire.dev/mesh-location"], "a");
    let annotations = object.metadata.annotations.unwrap();
    assert!(
        !annotations.contains_key("kwire.dev/mesh-persistent-keepalive"),
        "no keepalive asked"
    );
    // What the members' daemons need besides the labels: the topology and the prefixes.
    assert_eq!(annotations["kwire.dev/mesh-topology"], "Locations");
    assert_eq!(annotations["kwire.dev/mesh-announce"], "10.244.1.0/24");

    let mut with_keepalive = s.clone();
    with_keepalive.device.persistent_keepalive = Some(25);
    let e = expand("overlay", &with_keepalive, &nodes, &Decisions::default()).unwrap();
    let object = member_interface(&mesh, &e, e.member_on("a1").unwrap()).unwrap();
    assert_eq!(
        object.metadata.annotations.unwrap()["kwire.dev/mesh-persistent-keepalive"],
        "25"
    );
}
