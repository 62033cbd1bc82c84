//! Table-style tests of the planner: each builds a desired and an observed
//! node and compares the whole plan.

use super::*;
use crate::fixtures::*;
use crate::model::*;

fn wg0() -> IfaceName {
    name("wg0")
}

fn seed_device() -> DesiredDevice {
    DesiredDevice::test("default/a")
        .with_port(11111)
        .with_address("10.1.0.1/24")
        .with_peer(
            pk(2),
            PeerConfig {
                endpoint: Some("192.168.1.2:22222".parse().unwrap()),
                allowed_ips: nets(&["10.1.0.2/32", "10.2.0.0/24"]),
                persistent_keepalive: Some(15),
                preshared_key: None,
            },
        )
}

fn seed_node() -> DesiredNode {
    DesiredNode::default()
        .with_device("wg0", seed_device())
        .with_route("10.2.0.0/24", "wg0", Some("10.1.0.2"), None)
}

#[test]
fn an_empty_node_gets_the_device_created_configured_brought_up_then_routed() {
    let p = plan(&seed_node(), &ObservedNode::default());
    assert_eq!(
        p.steps,
        vec![
            Step::CreateDevice {
                device: wg0(),
                owner: owner("default/a")
            },
            Step::MarkDevice {
                device: wg0(),
                owner: owner("default/a")
            },
            Step::SetPrivateKey {
                device: wg0(),
                key: sk(1)
            },
            Step::SetListenPort {
                device: wg0(),
                port: 11111
            },
            Step::UpsertPeer {
                device: wg0(),
                peer: pk(2),
                change: PeerChange {
                    create: true,
                    endpoint: Some("192.168.1.2:22222".parse().unwrap()),
                    allowed_ips: Some(nets(&["10.1.0.2/32", "10.2.0.0/24"])),
                    persistent_keepalive: Some(15),
                    preshared_key: None,
                }
            },
            Step::AddAddress {
                device: wg0(),
                address: net("10.1.0.1/24")
            },
            Step::SetUp { device: wg0() },
            Step::AddRoute {
                id: route_id("10.2.0.0/24", 0),
                route: RouteTarget {
                    device: wg0(),
                    via: Some("10.1.0.2".parse().unwrap())
                }
            },
        ]
    );
    assert!(p.conflicts.is_empty());
}

#[test]
fn a_converged_node_plans_no_steps() {
    let d = seed_node();
    assert_eq!(plan(&d, &converged(&d)), Plan::default());
}

#[test]
fn the_plan_prints_redacted_and_readable() {
    let mut d = seed_node();
    d.devices
        .get_mut(&wg0())
        .unwrap()
        .peers
        .get_mut(&pk(2))
        .unwrap()
        .preshared_key = Some(PresharedKey::from_bytes([9; 32]));
    let text = plan(&d, &ObservedNode::default()).to_string();
    assert_eq!(
        text,
        "+ create device wg0 for default/a\n\
         ~ mark device wg0 as kwire:default/a\n\
         ~ wg0: set private key <redacted>\n\
         ~ wg0: set listen port 11111\n\
         + wg0: add peer AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI= endpoint 192.168.1.2:22222 \
         allowed-ips 10.1.0.2/32,10.2.0.0/24 keepalive 15 preshared-key <redacted>\n\
         + wg0: add address 10.1.0.1/24\n\
         ~ wg0: set up\n\
         + route 10.2.0.0/24 table main metric 0 via 10.1.0.2 dev wg0"
    );
    assert!(!format!("{:?}", plan(&d, &ObservedNode::default())).contains("CQkJ"));
    assert_eq!(Plan::default().to_string(), "no changes");
}

#[test]
fn a_foreign_link_holding_the_desired_name_is_a_conflict_and_gets_no_steps() {
    let d = seed_node();
    let mut o = ObservedNode::default();
    o.devices.insert(wg0(), foreign_link("dummy"));
    let p = plan(&d, &o);
    assert_eq!(p.steps, vec![]);
    assert_eq!(
        p.conflicts,
        vec![
            Conflict::InterfaceNameTaken {
                device: wg0(),
                owner: owner("default/a"),
                kind: LinkKind::Other("dummy".into())
            },
            Conflict::RouteDeviceUnavailable {
                key: RouteKey::new(TABLE_MAIN, net("10.2.0.0/24")),
                device: wg0()
            },
        ]
    );
    assert_eq!(p.conflicts[0].reason(), "InterfaceNameConflict");
    assert_eq!(conflicted_devices(&p), [wg0()].into());
}

#[test]
fn a_conflict_on_one_device_does_not_stop_another() {
    let d = DesiredNode::default()
        .with_device("wg0", DesiredDevice::test("a/x"))
        .with_device("wg1", DesiredDevice::test("a/y"));
    let mut o = converged(&DesiredNode::default().with_device("wg1", DesiredDevice::test("a/y")));
    o.devices.insert(wg0(), foreign_link("wireguard"));
    o.devices.get_mut(&name("wg1")).unwrap().up = false;
    let p = plan(&d, &o);
    assert_eq!(
        p.steps,
        vec![Step::SetUp {
            device: name("wg1")
        }]
    );
    assert_eq!(p.conflicts.len(), 1);
}

#[test]
fn an_owned_device_no_longer_desired_loses_routes_then_peers_then_itself() {
    let o = converged(&seed_node());
    let p = plan(&DesiredNode::default(), &o);
    assert_eq!(
        p.steps,
        vec![
            Step::RemoveRoute {
                id: route_id("10.2.0.0/24", 0),
                device: Some(wg0())
            },
            Step::RemovePeer {
                device: wg0(),
                peer: pk(2)
            },
            Step::DeleteDevice { device: wg0() },
        ]
    );
}

#[test]
fn foreign_links_and_routes_that_are_not_desired_are_left_alone() {
    let mut o = ObservedNode::default();
    o.devices.insert(name("eth0"), foreign_link("veth"));
    o.devices.insert(name("wg9"), {
        let mut l = foreign_link("wireguard");
        l.wireguard = Some(Default::default());
        l
    });
    o.routes
        .insert(route_id("10.9.0.0/24", 0), foreign_route(4, Some("eth0")));
    assert_eq!(plan(&DesiredNode::default(), &o), Plan::default());
}

#[test]
fn a_new_public_key_removes_the_old_peer_before_adding_the_new_one() {
    let old = seed_node();
    let mut new = seed_node();
    let dev = new.devices.get_mut(&wg0()).unwrap();
    let cfg = dev.peers.remove(&pk(2)).unwrap();
    dev.peers.insert(pk(3), cfg.clone());
    let p = plan(&new, &converged(&old));
    assert_eq!(
        p.steps,
        vec![
            Step::RemovePeer {
                device: wg0(),
                peer: pk(2)
            },
            Step::UpsertPeer {
                device: wg0(),
                peer: pk(3),
                change: PeerChange {
                    create: true,
                    endpoint: cfg.endpoint,
                    allowed_ips: Some(cfg.allowed_ips),
                    persistent_keepalive: Some(15),
                    preshared_key: None
                }
            },
        ]
    );
}

#[test]
fn a_new_key_without_keepalive_for_the_same_addresses_starts_its_handshake() {
    let quiet = |cfg: &PeerConfig| PeerConfig {
        persistent_keepalive: None,
        ..cfg.clone()
    };
    let mut old = seed_node();
    let dev = old.devices.get_mut(&wg0()).unwrap();
    let cfg = quiet(&dev.peers[&pk(2)]);
    dev.peers.insert(pk(2), cfg.clone());
    // The far end's key changes (2 -> 3); an unrelated peer (4) is added at the same time.
    let mut new = old.clone();
    let dev = new.devices.get_mut(&wg0()).unwrap();
    dev.peers.remove(&pk(2));
    dev.peers.insert(pk(3), cfg.clone());
    dev.peers.insert(pk(4), peer(&["10.4.0.0/24"]));
    let steps = plan(&new, &converged(&old)).steps;
    let started: Vec<_> = steps
        .iter()
        .filter_map(|s| match s {
            Step::StartHandshake {
                peer, keepalive, ..
            } => Some((*peer, *keepalive)),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![(pk(3), 0)], "{steps:?}");
    assert!(matches!(steps.last(), Some(Step::StartHandshake { .. })));
    // With a keepalive, creating the entry starts the handshake: nothing more is planned.
    let p = plan(&seed_node_with_peer(3), &converged(&seed_node()));
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s, Step::StartHandshake { .. })),
        "{:?}",
        p.steps
    );
}

fn seed_node_with_peer(key: u8) -> DesiredNode {
    let mut d = seed_node();
    let dev = d.devices.get_mut(&wg0()).unwrap();
    let cfg = dev.peers.remove(&pk(2)).unwrap();
    dev.peers.insert(pk(key), cfg);
    d
}

#[test]
fn a_changed_allowed_ips_set_replaces_only_that_peers_set() {
    let base = seed_node().with_device(
        "wg1",
        DesiredDevice::test("default/b").with_peer(pk(5), peer(&["10.5.0.0/24"])),
    );
    let mut d = base.clone();
    d.devices
        .get_mut(&wg0())
        .unwrap()
        .peers
        .get_mut(&pk(2))
        .unwrap()
        .allowed_ips = nets(&["10.1.0.2/32", "10.2.0.0/16"]);
    let p = plan(&d, &converged(&base));
    assert_eq!(
        p.steps,
        vec![Step::UpsertPeer {
            device: wg0(),
            peer: pk(2),
            change: PeerChange {
                allowed_ips: Some(nets(&["10.1.0.2/32", "10.2.0.0/16"])),
                ..Default::default()
            }
        }]
    );
}

#[test]
fn allowed_ips_with_host_bits_compare_equal_to_the_kernels_canonical_form() {
    let mut d = seed_node();
    d.devices
        .get_mut(&wg0())
        .unwrap()
        .peers
        .get_mut(&pk(2))
        .unwrap()
        .allowed_ips = nets(&["10.1.0.2/32", "10.2.0.7/24"]);
    assert_eq!(plan(&d, &converged(&seed_node())).steps, vec![]);
}

#[test]
fn a_changed_endpoint_updates_only_the_endpoint() {
    let mut d = seed_node();
    let e: std::net::SocketAddr = "192.168.1.3:22222".parse().unwrap();
    d.devices
        .get_mut(&wg0())
        .unwrap()
        .peers
        .get_mut(&pk(2))
        .unwrap()
        .endpoint = Some(e);
    assert_eq!(
        plan(&d, &converged(&seed_node())).steps,
        vec![Step::UpsertPeer {
            device: wg0(),
            peer: pk(2),
            change: PeerChange {
                endpoint: Some(e),
                ..Default::default()
            }
        }]
    );
}

#[test]
fn a_peer_without_a_desired_endpoint_keeps_the_endpoint_it_roamed_to() {
    let mut d = seed_node();
    d.devices
        .get_mut(&wg0())
        .unwrap()
        .peers
        .get_mut(&pk(2))
        .unwrap()
        .endpoint = None;
    assert_eq!(plan(&d, &converged(&seed_node())).steps, vec![]);
}

#[test]
fn turning_keepalive_off_writes_zero_and_dropping_the_preshared_key_clears_it() {
    let mut with = seed_node();
    with.devices
        .get_mut(&wg0())
        .unwrap()
        .peers
        .get_mut(&pk(2))
        .unwrap()
        .preshared_key = Some(PresharedKey::from_bytes([4; 32]));
    let mut without = seed_node();
    without
        .devices
        .get_mut(&wg0())
        .unwrap()
        .peers
        .get_mut(&pk(2))
        .unwrap()
        .persistent_keepalive = None;
    assert_eq!(
        plan(&without, &converged(&with)).steps,
        vec![Step::UpsertPeer {
            device: wg0(),
            peer: pk(2),
            change: PeerChange {
                persistent_keepalive: Some(0),
                preshared_key: Some(None),
                ..Default::default()
            }
        }]
    );
}

#[test]
fn a_zero_preshared_key_and_zero_keepalive_read_back_from_the_kernel_mean_none() {
    let d = seed_node();
    let mut o = converged(&d);
    let wg = o
        .devices
        .get_mut(&wg0())
        .unwrap()
        .wireguard
        .as_mut()
        .unwrap();
    let p = wg.peers.get_mut(&pk(2)).unwrap();
    p.config.preshared_key = Some(PresharedKey::from_bytes([0; 32]));
    let mut d2 = d.clone();
    d2.devices
        .get_mut(&wg0())
        .unwrap()
        .peers
        .get_mut(&pk(2))
        .unwrap()
        .persistent_keepalive = Some(0);
    p.config.persistent_keepalive = None;
    assert_eq!(plan(&d2, &o).steps, vec![]);
}

#[test]
fn a_peer_added_by_hand_to_a_kwire_device_is_removed() {
    let d = seed_node();
    let mut o = converged(&d);
    let wg = o
        .devices
        .get_mut(&wg0())
        .unwrap()
        .wireguard
        .as_mut()
        .unwrap();
    wg.peers.insert(pk(7), Default::default());
    assert_eq!(
        plan(&d, &o).steps,
        vec![Step::RemovePeer {
            device: wg0(),
            peer: pk(7)
        }]
    );
}

#[test]
fn an_owned_but_unmarked_device_from_the_state_file_is_marked_again() {
    let d = seed_node();
    let mut o = converged(&d);
    o.devices.get_mut(&wg0()).unwrap().mark = None;
    assert_eq!(
        plan(&d, &o).steps,
        vec![Step::MarkDevice {
            device: wg0(),
            owner: owner("default/a")
        }]
    );
}

#[test]
fn a_device_marked_for_another_owner_is_re_marked_not_recreated() {
    let d = seed_node();
    let mut o = converged(&d);
    o.devices.get_mut(&wg0()).unwrap().mark = Some(owner("other/x"));
    assert_eq!(
        plan(&d, &o).steps,
        vec![Step::MarkDevice {
            device: wg0(),
            owner: owner("default/a")
        }]
    );
}

#[test]
fn mtu_port_and_key_are_written_only_when_they_differ() {
    let d = DesiredNode::default().with_device(
        "wg0",
        DesiredDevice::test("a/b").with_mtu(1380).with_port(51820),
    );
    let mut o = converged(&d);
    assert_eq!(plan(&d, &o).steps, vec![]);
    let dev = o.devices.get_mut(&wg0()).unwrap();
    dev.mtu = 1420;
    let wg = dev.wireguard.as_mut().unwrap();
    wg.listen_port = Some(40000);
    wg.private_key = Some(sk(8));
    assert_eq!(
        plan(&d, &o).steps,
        vec![
            Step::SetMtu {
                device: wg0(),
                mtu: 1380
            },
            Step::SetPrivateKey {
                device: wg0(),
                key: sk(1)
            },
            Step::SetListenPort {
                device: wg0(),
                port: 51820
            },
        ]
    );
}

#[test]
fn a_new_key_on_a_keyed_device_starts_a_handshake_with_every_peer_after_the_peers() {
    let d = DesiredNode::default().with_device(
        "wg0",
        seed_device().with_peer(
            pk(3),
            PeerConfig {
                allowed_ips: nets(&["10.1.0.3/32"]),
                ..PeerConfig::default()
            },
        ),
    );
    let mut o = converged(&d);
    let wg = o
        .devices
        .get_mut(&wg0())
        .unwrap()
        .wireguard
        .as_mut()
        .unwrap();
    wg.private_key = Some(sk(8));
    // The peer of key 3 was added to the desired state at the same time.
    wg.peers.remove(&pk(3));
    let steps = plan(&d, &o).steps;
    assert_eq!(
        steps,
        vec![
            Step::SetPrivateKey {
                device: wg0(),
                key: sk(1)
            },
            Step::UpsertPeer {
                device: wg0(),
                peer: pk(3),
                change: PeerChange {
                    create: true,
                    allowed_ips: Some(nets(&["10.1.0.3/32"])),
                    ..PeerChange::default()
                },
            },
            Step::StartHandshake {
                device: wg0(),
                peer: pk(2),
                keepalive: 15
            },
            Step::StartHandshake {
                device: wg0(),
                peer: pk(3),
                keepalive: 0
            },
        ]
    );
    // The model ends where the desired state is: nothing more to do.
    let mut after = o.clone();
    crate::kernel_model::apply_steps(&mut after, &steps).unwrap();
    assert_eq!(plan(&d, &after).steps, vec![]);
}

#[test]
fn a_first_key_or_an_unchanged_key_starts_no_handshake() {
    let d = seed_node();
    let first = plan(&d, &ObservedNode::default()).steps;
    assert!(
        !first
            .iter()
            .any(|s| matches!(s, Step::StartHandshake { .. })),
        "{first:?}"
    );
    let mut o = converged(&d);
    // A peer's endpoint changes; the key does not.
    o.devices
        .get_mut(&wg0())
        .unwrap()
        .wireguard
        .as_mut()
        .unwrap()
        .peers
        .get_mut(&pk(2))
        .unwrap()
        .config
        .endpoint = Some("192.168.1.9:22222".parse().unwrap());
    let steps = plan(&d, &o).steps;
    assert!(
        !steps
            .iter()
            .any(|s| matches!(s, Step::StartHandshake { .. })),
        "{steps:?}"
    );
}

#[test]
fn no_desired_port_accepts_whatever_the_kernel_chose() {
    let d = DesiredNode::default().with_device("wg0", DesiredDevice::test("a/b"));
    let mut o = converged(&d);
    let dev = o.devices.get_mut(&wg0()).unwrap();
    dev.wireguard.as_mut().unwrap().listen_port = Some(34567);
    assert_eq!(plan(&d, &o).steps, vec![]);
}

/// `node` with a foreign link `link` of MTU `mtu` and a foreign route to `dst` through it.
fn with_underlay(
    mut node: ObservedNode,
    link: &str,
    mtu: u32,
    dst: &str,
    metric: u32,
) -> ObservedNode {
    let mut l = foreign_link("veth");
    l.mtu = mtu;
    node.devices.entry(name(link)).or_insert(l);
    node.routes
        .insert(route_id(dst, metric), foreign_route(2, Some(link)));
    node
}

fn mtu_of(d: &DesiredNode, o: &ObservedNode) -> MtuChoice {
    device_mtu(&d.devices[&wg0()], o)
}

#[test]
fn without_a_desired_mtu_a_device_gets_the_default_route_links_mtu_minus_80() {
    let d = DesiredNode::default().with_device("wg0", DesiredDevice::test("a/b"));
    let converged_node = converged(&d);
    // Nothing known about the underlay: WireGuard's 1420, which a converged device has.
    assert_eq!(
        mtu_of(&d, &converged_node).source,
        MtuSource::WireguardDefault
    );
    assert_eq!(plan(&d, &converged_node).steps, vec![]);

    // Two default routes (IPv4 on a jumbo link, IPv6 on a 1500 one): the smaller wins.
    let o = with_underlay(converged_node, "eth0", 9000, "0.0.0.0/0", 100);
    let o = with_underlay(o, "eth1", 1500, "::/0", 1024);
    assert_eq!(
        mtu_of(&d, &o),
        MtuChoice {
            mtu: 1420,
            source: MtuSource::DefaultRouteLink {
                link: name("eth1"),
                mtu: 1500
            }
        }
    );
    let o = with_underlay(
        with_underlay(converged(&d), "eth0", 9000, "0.0.0.0/0", 0),
        "lo",
        65536,
        "10.0.0.0/8",
        0,
    );
    assert_eq!(
        mtu_of(&d, &o).mtu,
        8920,
        "a route that is not a default route does not count"
    );
    assert_eq!(
        plan(&d, &o).steps,
        vec![Step::SetMtu {
            device: wg0(),
            mtu: 8920
        }]
    );

    // A device that had its MTU changed by hand is set back to the default.
    let mut o = converged(&d);
    o.devices.get_mut(&wg0()).unwrap().mtu = 1280;
    assert_eq!(
        plan(&d, &o).steps,
        vec![Step::SetMtu {
            device: wg0(),
            mtu: 1420
        }]
    );
}

#[test]
fn the_link_holding_the_route_to_the_peers_endpoints_comes_before_the_default_route() {
    let d = seed_node(); // one peer, endpoint 192.168.1.2
    let o = with_underlay(converged(&d), "eth0", 1500, "0.0.0.0/0", 0);
    let o = with_underlay(o, "vlan7", 1400, "192.168.0.0/16", 0);
    // A more specific route with a higher metric is still the one the kernel takes.
    let o = with_underlay(o, "ppp0", 1492, "192.168.1.0/24", 500);
    assert_eq!(
        mtu_of(&d, &o),
        MtuChoice {
            mtu: 1412,
            source: MtuSource::EndpointLink {
                link: name("ppp0"),
                mtu: 1492
            }
        }
    );
    // Among equal prefixes, the lowest metric.
    let o2 = with_underlay(o.clone(), "wlan0", 1300, "192.168.1.0/24", 600);
    assert_eq!(mtu_of(&d, &o2).mtu, 1412);
    let o3 = with_underlay(o, "wlan0", 1300, "192.168.1.0/24", 100);
    assert_eq!(
        mtu_of(&d, &o3).mtu,
        1280,
        "1300 - 80 is raised to IPv6's 1280"
    );
}

#[test]
fn routes_through_kwires_own_devices_never_size_the_underlay() {
    let d = seed_node();
    let o = with_underlay(converged(&d), "eth0", 1500, "0.0.0.0/0", 0);
    let mut o = with_underlay(o, "eth1", 9000, "192.168.0.0/16", 0);
    // A (foreign-protocol) route to the endpoint through the kwire device itself.
    o.routes
        .insert(route_id("192.168.1.2/32", 0), foreign_route(2, Some("wg0")));
    assert_eq!(mtu_of(&d, &o).mtu, 8920);
    // An endpoint nobody routes to (IPv6, with an IPv4 default route only) leaves the
    // default route to decide.
    let mut lost = d.clone();
    for p in lost.devices.get_mut(&wg0()).unwrap().peers.values_mut() {
        p.endpoint = Some("[fd00::1]:51820".parse().unwrap());
    }
    assert_eq!(
        mtu_of(&lost, &o).source,
        MtuSource::DefaultRouteLink {
            link: name("eth0"),
            mtu: 1500
        }
    );
}

#[test]
fn a_desired_mtu_wins_over_the_underlay() {
    let d = DesiredNode::default().with_device("wg0", DesiredDevice::test("a/b").with_mtu(1300));
    let o = with_underlay(converged(&d), "eth0", 9000, "0.0.0.0/0", 0);
    assert_eq!(
        mtu_of(&d, &o),
        MtuChoice {
            mtu: 1300,
            source: MtuSource::Desired
        }
    );
    assert_eq!(plan(&d, &o).steps, vec![]);
}

#[test]
fn a_device_that_was_set_down_is_brought_up_again() {
    let d = seed_node();
    let mut o = converged(&d);
    o.devices.get_mut(&wg0()).unwrap().up = false;
    assert_eq!(plan(&d, &o).steps, vec![Step::SetUp { device: wg0() }]);
}

#[test]
fn an_extra_address_is_removed_before_the_missing_one_is_added() {
    let d = seed_node();
    let mut o = converged(&d);
    let addrs = &mut o.devices.get_mut(&wg0()).unwrap().addresses;
    addrs.clear();
    addrs.insert(net("10.1.0.9/24"));
    assert_eq!(
        plan(&d, &o).steps,
        vec![
            Step::RemoveAddress {
                device: wg0(),
                address: net("10.1.0.9/24")
            },
            Step::AddAddress {
                device: wg0(),
                address: net("10.1.0.1/24")
            },
        ]
    );
}

#[test]
fn a_route_with_a_new_gateway_is_replaced_in_place() {
    let before = seed_node();
    let after = seed_node().with_route("10.2.0.0/24", "wg0", Some("10.1.0.3"), None);
    assert_eq!(
        plan(&after, &converged(&before)).steps,
        vec![Step::ReplaceRoute {
            id: route_id("10.2.0.0/24", 0),
            route: RouteTarget {
                device: wg0(),
                via: Some("10.1.0.3".parse().unwrap())
            }
        }]
    );
}

#[test]
fn a_route_with_a_new_metric_is_removed_first_and_added_last() {
    let before = seed_node();
    let after = seed_node().with_route("10.2.0.0/24", "wg0", Some("10.1.0.2"), Some(100));
    assert_eq!(
        plan(&after, &converged(&before)).steps,
        vec![
            Step::RemoveRoute {
                id: route_id("10.2.0.0/24", 0),
                device: Some(wg0())
            },
            Step::AddRoute {
                id: route_id("10.2.0.0/24", 100),
                route: RouteTarget {
                    device: wg0(),
                    via: Some("10.1.0.2".parse().unwrap())
                }
            },
        ]
    );
}

#[test]
fn a_foreign_route_in_the_same_table_destination_and_metric_is_a_conflict() {
    let d = seed_node();
    let mut o = converged(&d);
    o.routes
        .insert(route_id("10.2.0.0/24", 0), foreign_route(4, Some("eth0")));
    let p = plan(&d, &o);
    assert_eq!(p.steps, vec![]);
    assert_eq!(
        p.conflicts,
        vec![Conflict::RouteTaken {
            key: RouteKey::new(TABLE_MAIN, net("10.2.0.0/24")),
            metric: 0,
            protocol: 4
        }]
    );
}

#[test]
fn a_foreign_route_to_the_same_destination_with_another_metric_coexists() {
    let d = seed_node();
    let mut o = converged(&d);
    o.routes
        .insert(route_id("10.2.0.0/24", 50), foreign_route(4, Some("eth0")));
    assert_eq!(plan(&d, &o), Plan::default());
}

#[test]
fn a_kwire_route_nobody_wants_any_more_is_removed() {
    let d = seed_node();
    let mut o = converged(&d);
    o.routes
        .insert(route_id("10.7.0.0/24", 0), owned_route("wg0", None));
    assert_eq!(
        plan(&d, &o).steps,
        vec![Step::RemoveRoute {
            id: route_id("10.7.0.0/24", 0),
            device: Some(wg0())
        }]
    );
}

#[test]
fn a_kwire_route_deleted_by_hand_is_added_back() {
    let d = seed_node();
    let mut o = converged(&d);
    o.routes.clear();
    assert_eq!(plan(&d, &o).steps.len(), 1);
    assert!(matches!(plan(&d, &o).steps[0], Step::AddRoute { .. }));
}

#[test]
fn an_owned_device_whose_wireguard_state_cannot_be_read_is_recreated_with_its_routes() {
    let d = seed_node();
    let mut o = converged(&d);
    o.devices.get_mut(&wg0()).unwrap().wireguard = None;
    let p = plan(&d, &o);
    assert_eq!(p.steps[0], Step::DeleteDevice { device: wg0() });
    assert_eq!(
        p.steps[1],
        Step::CreateDevice {
            device: wg0(),
            owner: owner("default/a")
        }
    );
    assert!(matches!(p.steps.last(), Some(Step::AddRoute { .. })));
}

#[test]
fn forwarding_is_enabled_on_the_device_and_node_but_never_disabled() {
    let mut d = DesiredNode::default().with_device("wg0", DesiredDevice::test("a/b").forwarding());
    d.forwarding.ipv4 = true;
    let mut o = converged(&d);
    o.forwarding.ipv4 = Some(false);
    o.forwarding.ipv6 = Some(true);
    let dev = o.devices.get_mut(&wg0()).unwrap();
    dev.forwarding.ipv4 = Some(false);
    dev.forwarding.ipv6 = None;
    assert_eq!(
        plan(&d, &o).steps,
        vec![
            Step::EnableForwarding {
                scope: ForwardingScope::Device(wg0()),
                family: IpFamily::V4
            },
            Step::EnableForwarding {
                scope: ForwardingScope::All,
                family: IpFamily::V4
            },
        ]
    );
    // Not desired: left on.
    let off = DesiredNode::default().with_device("wg0", DesiredDevice::test("a/b"));
    let mut o = converged(&off);
    o.forwarding.ipv4 = Some(true);
    o.devices.get_mut(&wg0()).unwrap().forwarding.ipv4 = Some(true);
    assert_eq!(plan(&off, &o).steps, vec![]);
}

#[test]
fn a_route_to_an_undesired_device_is_reported_and_not_planned() {
    let d = DesiredNode::default().with_route("10.2.0.0/24", "wg5", None, None);
    let p = plan(&d, &ObservedNode::default());
    assert_eq!(p.steps, vec![]);
    assert_eq!(p.conflicts[0].reason(), "DeviceUnavailable");
}

#[test]
fn a_fresh_device_plan_matches_what_creation_leaves_behind() {
    // The create path plans against `fresh_device()`, which is also what the
    // model inserts for CreateDevice: the two must agree on the defaults.
    let dev = fresh_device();
    assert_eq!(dev.ownership, Ownership::Owned);
    assert!(!dev.up && dev.mark.is_none());
}

#[test]
fn a_retained_device_and_its_routes_are_left_alone_when_not_desired() {
    let seed = seed_node();
    let observed = converged(&seed);
    let mut desired = DesiredNode {
        retained: [wg0()].into(),
        ..DesiredNode::default()
    };
    assert_eq!(plan(&desired, &observed).steps, vec![]);
    desired.retained.clear();
    assert!(
        plan(&desired, &observed)
            .steps
            .iter()
            .any(|s| matches!(s, Step::DeleteDevice { .. })),
        "without retention the device is removed"
    );
}

#[test]
fn restarting_a_peer_removes_and_re_adds_it_with_its_desired_configuration() {
    let desired = seed_node();
    let entries = [(wg0(), pk(2)), (wg0(), pk(9)), (name("wg7"), pk(2))].into();
    let plan = restart_peers(&desired, &entries);
    let config = &desired.devices[&wg0()].peers[&pk(2)];
    assert_eq!(
        plan.steps,
        vec![
            Step::RemovePeer {
                device: wg0(),
                peer: pk(2)
            },
            Step::UpsertPeer {
                device: wg0(),
                peer: pk(2),
                change: PeerChange {
                    create: true,
                    endpoint: config.endpoint,
                    allowed_ips: Some(config.allowed_ips.clone()),
                    persistent_keepalive: config.persistent_keepalive,
                    preshared_key: None,
                },
            },
        ],
        "entries that are not desired are left alone"
    );
    // Replayed, the configuration is the same as before.
    let mut state = converged(&desired);
    let before = state.clone();
    crate::kernel_model::apply_steps(&mut state, &plan.steps).unwrap();
    assert_eq!(state, before);
}
