use super::*;
use crate::fixtures::*;
use serde_json::json;

fn resolved_pair() -> World {
    world(
        vec![],
        vec![
            with_key(interface("a", "node-a", &["10.1.0.1/24"]), KEY_A),
            with_key(
                interface("b", "node-b", &["10.1.0.2/24", "fd00:1::2/64"]),
                KEY_B,
            ),
        ],
        vec![],
        vec![],
        Some(vec![
            node("node-a", &["192.168.0.1"], &["203.0.113.1"]),
            node("node-b", &[], &["2001:db8::b"]),
        ]),
    )
}

#[test]
fn an_in_cluster_link_resolves_both_ends_from_the_interfaces_and_nodes() {
    let w = resolved_pair();
    let p = patch_spec(
        peer("a-b", "a", "b"),
        json!({"allowedIPs": ["10.2.0.0/24", "10.1.0.2/32"], "remoteAllowedIPs": ["10.9.0.0/16"], "persistentKeepalive": 15}),
    );
    let r = resolve_peer(&p, &w, &PskState::None);
    assert_eq!(
        r.condition.status,
        crate::condition::Status::True,
        "{:?}",
        r.condition
    );
    assert_eq!(r.remote_name.as_deref(), Some("b"));
    assert_eq!(
        r.resolved,
        ResolvedPeer {
            public_key: Some(KEY_B.into()),
            endpoint: Some("[2001:db8::b]:51820".into()),
            allowed_ips: vec![
                "10.1.0.2/32".into(),
                "10.2.0.0/24".into(),
                "fd00:1::2/128".into()
            ],
            local_node: Some("node-a".into()),
            remote_node: Some("node-b".into()),
            local_public_key: Some(KEY_A.into()),
            local_endpoint: Some("192.168.0.1:51820".into()),
            remote_allowed_ips: vec!["10.1.0.1/32".into(), "10.9.0.0/16".into()],
            persistent_keepalive: Some(15),
            preshared_key_secret: None,
        }
    );
}

#[test]
fn endpoints_prefer_the_spec_override_then_internal_then_external_addresses() {
    let w = resolved_pair();
    let cases = [
        (
            json!({"endpoint": {"host": "vpn.example.com"}}),
            "vpn.example.com:51820",
        ),
        (
            json!({"endpoint": {"host": "198.51.100.7", "port": 4500}}),
            "198.51.100.7:4500",
        ),
        (
            json!({"endpoint": {"host": "2001:db8::7"}}),
            "[2001:db8::7]:51820",
        ),
        (json!({"nodeName": "node-a"}), "192.168.0.1:51820"),
        (
            json!({"nodeName": "node-b", "listenPort": 33333}),
            "[2001:db8::b]:33333",
        ),
    ];
    for (patch, expected) in cases {
        let i = patch_spec(interface("x", "node-a", &["10.0.0.1/24"]), patch.clone());
        assert_eq!(interface_endpoint(&i, &w).unwrap(), expected, "{patch}");
    }
}

#[test]
fn missing_pieces_give_resolved_false_with_a_reason_naming_the_object_and_the_fix() {
    let nodes = Some(vec![
        node("node-a", &["192.168.0.1"], &[]),
        node("bare", &[], &[]),
    ]);
    let cases: Vec<(World, Peer, &str, &[&str])> = vec![
        (
            world(
                vec![],
                vec![with_key(interface("a", "node-a", &["10.1.0.1/24"]), KEY_A)],
                vec![],
                vec![],
                nodes.clone(),
            ),
            peer("p", "a", "ghost"),
            reasons::REMOTE_INTERFACE_NOT_FOUND,
            &["Interface ghost", "does not exist", "spec.remote.interface"],
        ),
        (
            world(vec![], vec![], vec![], vec![], nodes.clone()),
            peer("p", "ghost", "other"),
            reasons::LOCAL_INTERFACE_NOT_FOUND,
            &["Interface ghost", "create Interface ghost"],
        ),
        (
            world(
                vec![],
                vec![
                    with_key(interface("a", "node-a", &["10.1.0.1/24"]), KEY_A),
                    interface("b", "node-a", &["10.1.0.2/24"]),
                ],
                vec![],
                vec![],
                nodes.clone(),
            ),
            peer("p", "a", "b"),
            reasons::REMOTE_KEY_PENDING,
            &["Interface b has no public key yet", "KeyReady"],
        ),
        (
            world(
                vec![],
                vec![
                    interface("a", "node-a", &["10.1.0.1/24"]),
                    with_key(interface("b", "node-a", &["10.1.0.2/24"]), KEY_B),
                ],
                vec![],
                vec![],
                nodes.clone(),
            ),
            peer("p", "a", "b"),
            reasons::LOCAL_KEY_PENDING,
            &["local Interface a"],
        ),
        (
            world(
                vec![],
                vec![
                    with_key(interface("a", "node-a", &["10.1.0.1/24"]), KEY_A),
                    with_key(interface("b", "bare", &["10.1.0.2/24"]), KEY_B),
                ],
                vec![],
                vec![],
                nodes.clone(),
            ),
            peer("p", "a", "b"),
            reasons::NODE_ADDRESS_MISSING,
            &[
                "Node bare has no InternalIP or ExternalIP",
                "set spec.endpoint on Interface b",
            ],
        ),
        (
            world(
                vec![],
                vec![
                    with_key(interface("a", "node-a", &["10.1.0.1/24"]), KEY_A),
                    with_key(interface("b", "gone", &["10.1.0.2/24"]), KEY_B),
                ],
                vec![],
                vec![],
                nodes.clone(),
            ),
            peer("p", "a", "b"),
            reasons::NODE_NOT_FOUND,
            &["Node gone, which does not exist"],
        ),
        (
            world(
                vec![],
                vec![
                    with_key(interface("a", "node-a", &["10.1.0.1/24"]), KEY_A),
                    with_key(interface_in("b", "node-a", "net", None), KEY_B),
                ],
                vec![],
                vec![],
                nodes.clone(),
            ),
            peer("p", "a", "b"),
            reasons::REMOTE_ADDRESS_PENDING,
            &["Interface b has no address yet", "AddressAllocated"],
        ),
        (
            world(
                vec![],
                vec![with_key(interface("a", "node-a", &["10.1.0.1/24"]), KEY_A)],
                vec![],
                vec![],
                nodes.clone(),
            ),
            peer("p", "a", "a"),
            reasons::SELF_PEER,
            &["to itself"],
        ),
    ];
    for (w, p, reason, fragments) in cases {
        let r = resolve_peer(&p, &w, &PskState::None);
        assert_eq!(r.condition.status, crate::condition::Status::False);
        assert_eq!(r.condition.reason, reason, "{}", r.condition.message);
        for f in fragments {
            assert!(
                r.condition.message.contains(f),
                "{f:?} not in {:?}",
                r.condition.message
            );
        }
    }
}

#[test]
fn what_can_be_resolved_is_filled_in_even_when_something_is_missing() {
    let w = world(
        vec![],
        vec![
            with_key(interface("a", "node-a", &["10.1.0.1/24"]), KEY_A),
            interface("b", "node-a", &["10.1.0.2/24"]),
        ],
        vec![],
        vec![],
        Some(vec![node("node-a", &["192.168.0.1"], &[])]),
    );
    let r = resolve_peer(&peer("p", "a", "b"), &w, &PskState::None);
    assert_eq!(r.resolved.public_key, None);
    assert_eq!(r.resolved.allowed_ips, ["10.1.0.2/32"]);
    assert_eq!(r.resolved.local_public_key.as_deref(), Some(KEY_A));
}

#[test]
fn an_external_peer_takes_key_and_endpoint_from_the_spec() {
    let w = resolved_pair();
    let p = patch_spec(
        external_peer("laptop", "a", KEY_EXTERNAL, Some(("2001:db8::99", 51000))),
        json!({"allowedIPs": ["10.4.0.2/32", "10.4.0.2/32"]}),
    );
    let r = resolve_peer(
        &p,
        &w,
        &PskState::Ready {
            secret: "laptop-psk".into(),
        },
    );
    assert!(r.condition.is_true(), "{:?}", r.condition);
    assert_eq!(r.remote_name.as_deref(), Some("external:OgbUF/E2"));
    assert_eq!(r.resolved.public_key.as_deref(), Some(KEY_EXTERNAL));
    assert_eq!(r.resolved.endpoint.as_deref(), Some("[2001:db8::99]:51000"));
    assert_eq!(r.resolved.allowed_ips, ["10.4.0.2/32"]);
    assert_eq!(r.resolved.remote_node, None);
    assert_eq!(
        r.resolved.preshared_key_secret.as_deref(),
        Some("laptop-psk")
    );
}

#[test]
fn a_roaming_external_peer_has_no_endpoint_and_still_resolves() {
    let w = resolved_pair();
    let r = resolve_peer(
        &external_peer("roamer", "a", KEY_EXTERNAL, None),
        &w,
        &PskState::None,
    );
    assert!(r.condition.is_true());
    assert_eq!(r.resolved.endpoint, None);
}

#[test]
fn a_preshared_key_problem_is_reported_in_resolved() {
    let w = resolved_pair();
    let psk = PskState::Problem {
        reason: reasons::PRESHARED_KEY_SECRET_NOT_FOUND,
        message: "Secret s not found".into(),
    };
    let r = resolve_peer(&peer("p", "a", "b"), &w, &psk);
    assert_eq!(r.condition.reason, reasons::PRESHARED_KEY_SECRET_NOT_FOUND);
}

#[test]
fn allowed_ips_are_host_prefixes_plus_extras_deduplicated_and_sorted() {
    let nets = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<IpNet>>();
    assert_eq!(
        allowed_ips(
            &nets(&["fd00::2/64", "10.1.0.2/24"]),
            &nets(&["10.0.0.0/8", "10.1.0.2/32"])
        ),
        nets(&["10.0.0.0/8", "10.1.0.2/32", "fd00::2/128"])
    );
}
