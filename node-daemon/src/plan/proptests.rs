//! Properties of the planner over generated desired and observed nodes.
//!
//! The generators draw from small pools (three device names, five keys, a few
//! prefixes) so that desired and observed states overlap often. AllowedIPs
//! are drawn per public key, so no two peers of a device share a prefix (the
//! planner's documented assumption; see `validate`).

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;

use super::*;
use crate::fixtures::*;
use crate::kernel_model::{apply_step, apply_steps};
use crate::model::*;
use crate::ownership::ROUTE_PROTOCOL;

const DEVICES: [&str; 3] = ["wg0", "wg1", "wg2"];

fn device_name() -> impl Strategy<Value = IfaceName> {
    prop::sample::select(&DEVICES[..]).prop_map(name)
}

fn public_key() -> impl Strategy<Value = PublicKey> {
    (1u8..=5).prop_map(pk)
}

fn allowed_ips_for(key: PublicKey) -> impl Strategy<Value = BTreeSet<ipnet::IpNet>> {
    let k = key.as_bytes()[0];
    let pool = vec![
        net(&format!("10.{k}.0.0/24")),
        net(&format!("10.{k}.1.0/24")),
        net(&format!("fd0{k}::/64")),
    ];
    prop::sample::subsequence(pool, 0..=3).prop_map(|v| v.into_iter().collect())
}

fn endpoint() -> impl Strategy<Value = std::net::SocketAddr> {
    prop::sample::select(vec![
        "192.168.9.1:51820",
        "192.168.9.2:51821",
        "[fd99::1]:51820",
    ])
    .prop_map(|s| s.parse().unwrap())
}

fn peer_config(key: PublicKey) -> impl Strategy<Value = PeerConfig> {
    (
        option::of(endpoint()),
        allowed_ips_for(key),
        option::of(prop::sample::select(vec![0u16, 15, 25])),
        option::of((1u8..=2).prop_map(|n| PresharedKey::from_bytes([n; 32]))),
    )
        .prop_map(
            |(endpoint, allowed_ips, persistent_keepalive, preshared_key)| PeerConfig {
                endpoint,
                allowed_ips,
                persistent_keepalive,
                preshared_key,
            },
        )
}

fn peers() -> impl Strategy<Value = BTreeMap<PublicKey, PeerConfig>> {
    btree_set(public_key(), 0..4).prop_flat_map(|keys| {
        let strategies: Vec<_> = keys
            .into_iter()
            .map(|k| peer_config(k).prop_map(move |c| (k, c)))
            .collect();
        strategies.prop_map(|v| v.into_iter().collect())
    })
}

fn addresses() -> impl Strategy<Value = BTreeSet<ipnet::IpNet>> {
    prop::sample::subsequence(
        vec![
            net("10.100.0.1/24"),
            net("10.100.1.1/24"),
            net("fd64::1/64"),
        ],
        0..=3,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn owner_ref() -> impl Strategy<Value = OwnerRef> {
    prop::sample::select(vec!["default/a", "default/b", "team/c"]).prop_map(owner)
}

fn desired_device() -> impl Strategy<Value = DesiredDevice> {
    (
        owner_ref(),
        (1u8..=3).prop_map(sk),
        option::of(prop::sample::select(vec![51820u16, 51821])),
        addresses(),
        option::of(prop::sample::select(vec![1380u32, 1420])),
        peers(),
        any::<bool>(),
    )
        .prop_map(
            |(owner, private_key, listen_port, addresses, mtu, peers, forwarding)| DesiredDevice {
                owner,
                private_key,
                listen_port,
                addresses,
                mtu,
                peers,
                forwarding,
            },
        )
}

fn destination() -> impl Strategy<Value = ipnet::IpNet> {
    prop::sample::select(vec!["10.50.0.0/24", "10.51.0.0/24", "fd50::/64"]).prop_map(net)
}

fn via_for(dst: ipnet::IpNet) -> impl Strategy<Value = Option<std::net::IpAddr>> {
    let v: std::net::IpAddr = match dst {
        ipnet::IpNet::V4(_) => "10.100.0.2".parse().unwrap(),
        ipnet::IpNet::V6(_) => "fd64::2".parse().unwrap(),
    };
    option::of(Just(v))
}

fn desired_node() -> impl Strategy<Value = DesiredNode> {
    (
        btree_map(device_name(), desired_device(), 0..=3),
        vec(
            destination().prop_flat_map(|dst| {
                (
                    Just(dst),
                    device_name(),
                    via_for(dst),
                    option::of(prop::sample::select(vec![0u32, 100])),
                )
            }),
            0..3,
        ),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(devices, routes, ipv4, ipv6)| {
            let routes = routes
                .into_iter()
                // Only routes to desired devices, as `validate` requires.
                .filter(|(_, dev, _, _)| devices.contains_key(dev))
                .map(|(dst, device, via, metric)| {
                    (
                        RouteKey::new(TABLE_MAIN, dst),
                        DesiredRoute {
                            device,
                            via,
                            metric,
                        },
                    )
                })
                .collect();
            DesiredNode {
                devices,
                routes,
                forwarding: NodeForwarding { ipv4, ipv6 },
                ..DesiredNode::default()
            }
        })
}

fn observed_peers() -> impl Strategy<Value = BTreeMap<PublicKey, ObservedPeer>> {
    peers().prop_map(|m| {
        m.into_iter()
            .map(|(k, mut config)| {
                config.persistent_keepalive = config.persistent_keepalive.filter(|k| *k != 0);
                (
                    k,
                    ObservedPeer {
                        config,
                        stats: Default::default(),
                    },
                )
            })
            .collect()
    })
}

fn forwarding_knobs() -> impl Strategy<Value = ObservedForwarding> {
    (option::of(any::<bool>()), option::of(any::<bool>()))
        .prop_map(|(ipv4, ipv6)| ObservedForwarding { ipv4, ipv6 })
}

fn observed_device() -> impl Strategy<Value = ObservedDevice> {
    let owned = (
        option::of(owner_ref()),
        any::<bool>(),
        prop::sample::select(vec![1280u32, 1380, 1420]),
        addresses(),
        option::of((
            option::of((1u8..=3).prop_map(sk)),
            option::of(prop::sample::select(vec![51820u16, 40000])),
            observed_peers(),
        )),
        forwarding_knobs(),
        any::<bool>(),
    )
        .prop_map(
            |(mark, up, mtu, addresses, wg, forwarding, tun)| ObservedDevice {
                ownership: Ownership::Owned,
                mark,
                kind: if tun {
                    LinkKind::Tun
                } else {
                    LinkKind::Wireguard
                },
                up,
                mtu,
                addresses,
                wireguard: wg.map(|(private_key, listen_port, peers)| ObservedWireguard {
                    public_key: private_key.as_ref().map(PrivateKey::public_key),
                    private_key,
                    listen_port,
                    peers,
                }),
                forwarding,
            },
        );
    let foreign = prop::sample::select(vec!["dummy", "wireguard", "veth"]).prop_map(foreign_link);
    prop_oneof![3 => owned, 1 => foreign]
}

fn observed_node() -> impl Strategy<Value = ObservedNode> {
    let route = (
        destination(),
        prop::sample::select(vec![0u32, 50, 100, 1024]),
        prop_oneof![
            (
                device_name(),
                option::of(Just("10.100.0.2".parse().unwrap()))
            )
                .prop_map(|(dev, via)| ObservedRoute {
                    ownership: Ownership::Owned,
                    protocol: ROUTE_PROTOCOL,
                    device: Some(dev),
                    via,
                }),
            // Foreign routes live on the foreign uplink, never on a kwire device.
            prop::sample::select(vec![2u8, 4, 80]).prop_map(|p| foreign_route(p, Some("eth0"))),
        ],
    );
    // The underlay: eth0 (maybe with a default route) and eth1 (maybe with a route to
    // some of the endpoints), of various MTUs.
    let underlay = (
        prop::sample::select(vec![1280u32, 1500, 9000]),
        prop::sample::select(vec![1400u32, 1500, 65536]),
        option::of(prop::sample::select(vec!["0.0.0.0/0", "::/0"])),
        option::of(prop::sample::select(vec![
            "192.168.9.0/24",
            "192.168.9.2/32",
            "fd99::/64",
        ])),
    );
    (
        btree_map(device_name(), observed_device(), 0..=3),
        vec(route, 0..4),
        forwarding_knobs(),
        underlay,
    )
        .prop_map(|(mut devices, routes, forwarding, underlay)| {
            let (eth0_mtu, eth1_mtu, default_route, endpoint_route) = underlay;
            let mut eth0 = foreign_link("veth");
            eth0.mtu = eth0_mtu;
            devices.insert(name("eth0"), eth0);
            let mut eth1 = foreign_link("vlan");
            eth1.mtu = eth1_mtu;
            devices.insert(name("eth1"), eth1);
            let mut routes: BTreeMap<RouteId, ObservedRoute> = routes
                .into_iter()
                .map(|(dst, metric, r)| {
                    let id = RouteId {
                        table: TABLE_MAIN,
                        destination: dst,
                        metric: effective_metric(&dst, Some(metric)),
                    };
                    (id, r)
                })
                .collect();
            for (dst, link) in [(default_route, "eth0"), (endpoint_route, "eth1")] {
                if let Some(dst) = dst {
                    routes.insert(route_id(dst, 0), foreign_route(3, Some(link)));
                }
            }
            ObservedNode {
                devices,
                routes,
                forwarding,
            }
        })
}

/// Applies every step to a copy of `observed`, failing on a step the model rejects.
fn simulate(observed: &ObservedNode, plan: &Plan) -> Result<ObservedNode, TestCaseError> {
    let mut node = observed.clone();
    for step in &plan.steps {
        apply_step(&mut node, step)
            .map_err(|e| TestCaseError::fail(format!("step {step} rejected: {e}")))?;
    }
    Ok(node)
}

/// The parts of `node` that `desired` specifies match it, for every device and
/// route the plan did not report as a conflict.
fn check_matches(desired: &DesiredNode, node: &ObservedNode, plan: &Plan) {
    let conflicted = conflicted_devices(plan);
    for (name, want) in &desired.devices {
        if conflicted.contains(name) {
            assert_eq!(node.devices[name].ownership, Ownership::Foreign);
            continue;
        }
        let have = &node.devices[name];
        let wg = have.wireguard.as_ref().unwrap();
        assert_eq!(have.mark.as_ref(), Some(&want.owner));
        assert!(have.up);
        assert_eq!(have.addresses, want.addresses);
        assert_eq!(wg.private_key.as_ref(), Some(&want.private_key));
        // The desired MTU, or the underlay's minus WireGuard's overhead (the underlay is
        // the node's own links, which no plan changes).
        let mtu = device_mtu(want, node);
        assert_eq!(have.mtu, mtu.mtu, "{name}: {:?}", mtu.source);
        if let Some(m) = want.mtu {
            assert_eq!(mtu.mtu, m);
        }
        if let Some(port) = want.listen_port {
            assert_eq!(wg.listen_port, Some(port));
        }
        assert_eq!(
            wg.peers.keys().collect::<Vec<_>>(),
            want.peers.keys().collect::<Vec<_>>()
        );
        for (key, p) in &want.peers {
            let got = &wg.peers[key].config;
            assert_eq!(got.allowed_ips, canonical_allowed_ips(&p.allowed_ips));
            assert_eq!(
                got.persistent_keepalive,
                p.persistent_keepalive.filter(|k| *k != 0)
            );
            assert_eq!(got.preshared_key, p.preshared_key);
            if p.endpoint.is_some() {
                assert_eq!(got.endpoint, p.endpoint);
            }
        }
    }
    for (key, route) in &desired.routes {
        let taken = plan.conflicts.iter().any(|c| match c {
            Conflict::RouteTaken { key: k, .. }
            | Conflict::RouteDeviceUnavailable { key: k, .. } => k == key,
            Conflict::InterfaceNameTaken { .. } => false,
        });
        if taken {
            continue;
        }
        let id = RouteId {
            table: key.table,
            destination: key.destination,
            metric: effective_metric(&key.destination, route.metric),
        };
        let got = &node.routes[&id];
        assert_eq!(got.ownership, Ownership::Owned);
        assert_eq!(got.device.as_ref(), Some(&route.device));
        assert_eq!(got.via, route.via);
    }
    // No owned device or route that is not desired survives.
    for (name, _) in node.owned_devices() {
        assert!(desired.devices.contains_key(name), "stray device {name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn applying_the_plan_to_a_model_of_the_node_yields_the_desired_state_and_replans_to_nothing(
        d in desired_node(), o in observed_node()
    ) {
        let p = plan(&d, &o);
        let after = simulate(&o, &p)?;
        check_matches(&d, &after, &p);
        let again = plan(&d, &after);
        prop_assert!(again.steps.is_empty(), "replan not empty:\n{}", again);
        prop_assert_eq!(again.conflicts, p.conflicts);
    }

    #[test]
    fn replaying_a_whole_plan_at_once_equals_replaying_it_step_by_step(
        d in desired_node(), o in observed_node()
    ) {
        let p = plan(&d, &o);
        let one_by_one = simulate(&o, &p)?;
        let mut at_once = o.clone();
        prop_assert!(apply_steps(&mut at_once, &p.steps).is_ok());
        prop_assert_eq!(at_once, one_by_one);
    }

    #[test]
    fn a_node_that_already_matches_plans_no_steps(d in desired_node()) {
        prop_assert_eq!(plan(&d, &converged(&d)), Plan::default());
    }

    #[test]
    fn the_same_inputs_always_give_the_same_plan(d in desired_node(), o in observed_node()) {
        prop_assert_eq!(plan(&d, &o), plan(&d, &o));
    }

    #[test]
    fn no_step_targets_a_foreign_object(d in desired_node(), o in observed_node()) {
        let p = plan(&d, &o);
        for step in &p.steps {
            let route_step = matches!(
                step,
                Step::AddRoute { .. } | Step::ReplaceRoute { .. } | Step::RemoveRoute { .. }
            );
            if let Some(dev) = step.device().filter(|_| !route_step) {
                let foreign = o.devices.get(dev).is_some_and(|x| x.ownership == Ownership::Foreign);
                prop_assert!(!foreign, "{} targets foreign device {}", step, dev);
            }
            match step {
                Step::AddRoute { id, .. } | Step::ReplaceRoute { id, .. } | Step::RemoveRoute { id, .. } => {
                    let foreign = o.routes.get(id).is_some_and(|r| r.ownership == Ownership::Foreign);
                    prop_assert!(!foreign, "{} targets a foreign route", step);
                }
                _ => {}
            }
        }
        // And the model agrees: every foreign object is still there, unchanged.
        let after = simulate(&o, &p)?;
        for (name, dev) in o.devices.iter().filter(|(_, x)| x.ownership == Ownership::Foreign) {
            prop_assert_eq!(after.devices.get(name), Some(dev));
        }
        for (id, r) in o.routes.iter().filter(|(_, r)| r.ownership == Ownership::Foreign) {
            prop_assert_eq!(after.routes.get(id), Some(r));
        }
    }

    #[test]
    fn a_change_to_one_peer_yields_steps_for_that_peer_only(
        d in desired_node(),
        pick in any::<prop::sample::Index>(),
        new_cfg in (1u8..=5).prop_flat_map(|k| peer_config(pk(k))),
        rekey in any::<bool>(),
    ) {
        let candidates: Vec<(IfaceName, PublicKey)> = d
            .devices
            .iter()
            .flat_map(|(n, dev)| dev.peers.keys().map(move |k| (n.clone(), *k)))
            .collect();
        prop_assume!(!candidates.is_empty());
        let (dev, key) = pick.get(&candidates).clone();
        let mut changed = d.clone();
        let peers = &mut changed.devices.get_mut(&dev).unwrap().peers;
        let old = peers.remove(&key).unwrap();
        // Keep the peer's own AllowedIPs pool so prefixes stay disjoint.
        let mut cfg = PeerConfig { allowed_ips: old.allowed_ips.clone(), ..new_cfg };
        let new_key = if rekey {
            (1u8..=9).map(|n| pk(n + 100)).find(|k| !peers.contains_key(k)).unwrap()
        } else {
            key
        };
        if !rekey {
            cfg.allowed_ips = old.allowed_ips.clone();
        }
        peers.insert(new_key, cfg);
        let p = plan(&changed, &converged(&d));
        for step in &p.steps {
            match step {
                Step::UpsertPeer { device, peer, .. } | Step::RemovePeer { device, peer } => {
                    prop_assert_eq!(device, &dev);
                    prop_assert!(*peer == key || *peer == new_key, "{}", step);
                }
                // A new key for the same addresses, with no keepalive, starts its handshake.
                Step::StartHandshake { device, peer, keepalive: 0 } => {
                    prop_assert_eq!(device, &dev);
                    prop_assert!(rekey && *peer == new_key, "{}", step);
                    prop_assert!(changed.devices[&dev].peers[&new_key].persistent_keepalive.unwrap_or(0) == 0);
                }
                other => prop_assert!(false, "unexpected step {}", other),
            }
        }
    }
}
