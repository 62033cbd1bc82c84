use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::controllers::SecretAction;
use crate::fixtures::*;
use crate::reasons;
use crate::secrets::{PlannedSecret, preshared_key_secret};
use crate::status::needs_patch;
use crate::topology::{self, ObjectKind};
use crate::world::World;
use kwire_crds::keys::PresharedKey;

fn now(s: i64) -> Time {
    Time(Timestamp::from_second(s).unwrap())
}

fn pair() -> World {
    world(
        vec![],
        vec![
            with_key(interface("a", "node-a", &["10.1.0.1/24"]), KEY_A),
            with_key(interface("b", "node-b", &["10.1.0.2/24"]), KEY_B),
        ],
        vec![],
        vec![],
        Some(vec![
            node("node-a", &["192.168.0.1"], &[]),
            node("node-b", &["192.168.0.2"], &[]),
        ]),
    )
}

fn condition<'a>(plan: &'a PeerPlan, type_: &str) -> (&'a str, &'a str) {
    let c = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap();
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn a_resolved_link_writes_only_the_operators_fields() {
    let p = peer("a-b", "a", "b");
    let plan = plan_peer(&p, &pair(), PskObservation::None, &[], &now(1));
    assert_eq!(condition(&plan, "Resolved"), ("True", reasons::RESOLVED));
    assert_eq!(
        condition(&plan, "TopologyValid"),
        ("True", reasons::TOPOLOGY_VALID)
    );
    assert_eq!(plan.status.remote_name.as_deref(), Some("b"));
    assert_eq!(
        plan.status.resolved.as_ref().unwrap().endpoint.as_deref(),
        Some("192.168.0.2:51820")
    );
    let written = serde_json::to_value(&plan.status).unwrap();
    let mut fields: Vec<&str> = written
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["conditions", "observedGeneration", "remoteName", "resolved"]
    );
    assert_eq!(plan.secret, SecretAction::None);
    assert!(plan.events.is_empty());
}

#[test]
fn a_generated_preshared_key_goes_into_a_secret_owned_by_the_peer() {
    let p = patch_spec(
        peer("a-b", "a", "b"),
        json!({"presharedKey": {"generate": true}}),
    );
    let fresh = PresharedKey::generate().unwrap();
    let obs = PskObservation::Generated {
        name: "a-b-preshared-key".into(),
        secret: None,
        fresh: Some(fresh.clone()),
    };
    let plan = plan_peer(&p, &pair(), obs, &[], &now(1));
    let SecretAction::Create(planned) = &plan.secret else {
        panic!("{:?}", plan.secret)
    };
    let PlannedSecret(secret) = planned.as_ref();
    assert_eq!(secret.owner_references()[0].kind, "Peer");
    assert_eq!(
        plan.status
            .resolved
            .as_ref()
            .unwrap()
            .preshared_key_secret
            .as_deref(),
        Some("a-b-preshared-key")
    );
    assert_eq!(
        plan.events[0].reason,
        reasons::EVENT_PRESHARED_KEY_GENERATED
    );
    let everything = format!("{plan:?} {}", serde_json::to_string(&plan.status).unwrap());
    assert!(
        !everything.contains(fresh.to_base64().as_str()),
        "pre-shared key leaked"
    );

    let PlannedSecret(existing) = preshared_key_secret(&p, &fresh);
    let again = PskObservation::Generated {
        name: "a-b-preshared-key".into(),
        secret: Some(existing),
        fresh: None,
    };
    let plan = plan_peer(&p, &pair(), again, &[], &now(2));
    assert_eq!(plan.secret, SecretAction::None, "an existing key is kept");
    assert_eq!(condition(&plan, "Resolved").0, "True");
}

#[test]
fn a_missing_user_preshared_key_secret_makes_resolved_false() {
    let p = patch_spec(
        peer("a-b", "a", "b"),
        json!({"presharedKey": {"secretRef": {"name": "psk"}}}),
    );
    let obs = PskObservation::UserSecret {
        name: "psk".into(),
        data_key: "presharedKey".into(),
        secret: None,
    };
    let plan = plan_peer(&p, &pair(), obs, &[], &now(1));
    assert_eq!(
        condition(&plan, "Resolved"),
        ("False", reasons::PRESHARED_KEY_SECRET_NOT_FOUND)
    );
    assert_eq!(plan.events.len(), 1);
    assert!(plan.events[0].warning);
}

#[test]
fn topology_findings_about_the_peer_make_topology_valid_false() {
    let w = world(
        vec![],
        vec![
            interface("a", "n1", &["10.1.0.1/24"]),
            interface("b", "n2", &["10.1.0.2/24"]),
        ],
        vec![patch_spec(
            peer("a-b", "a", "b"),
            json!({"allowedIPs": ["10.9.0.0/16"]}),
        )],
        vec![],
        None,
    );
    let findings = topology::check(&w);
    assert!(findings.iter().any(|f| f.kind == ObjectKind::Peer));
    let plan = plan_peer(&w.peers[0], &w, PskObservation::None, &findings, &now(1));
    assert_eq!(
        condition(&plan, "TopologyValid"),
        ("False", reasons::RELAY_NOT_FORWARDING)
    );
}

#[test]
fn replanning_an_unchanged_peer_needs_no_patch() {
    let mut p = peer("a-b", "a", "b");
    let first = plan_peer(&p, &pair(), PskObservation::None, &[], &now(1));
    p.status = Some(first.status);
    let second = plan_peer(&p, &pair(), PskObservation::None, &[], &now(77));
    assert!(!needs_patch(p.status.as_ref(), &second.status));
}

fn rotated_world(phase: kwire_crds::v1alpha1::KeyRotationPhase) -> World {
    let mut a = with_key(interface("a", "node-a", &["10.1.0.1/24"]), KEY_A);
    let status = a.status.as_mut().unwrap();
    status.endpoint = Some("192.168.0.1:51820".into());
    status.addresses = vec!["10.1.0.1/24".into()];
    status.key_rotation = Some(kwire_crds::v1alpha1::KeyRotationStatus {
        phase: Some(phase),
        current_fingerprint: Some(KEY_A[..8].into()),
        previous_fingerprint: Some("OLDKEY00".into()),
        rotated_at: Some(now(100)),
        ..Default::default()
    });
    world(
        vec![],
        vec![a],
        vec![],
        vec![],
        Some(vec![node("node-a", &["192.168.0.1"], &[])]),
    )
}

#[test]
fn an_external_peer_is_rotation_pending_until_a_handshake_after_the_rotation() {
    use kwire_crds::v1alpha1::KeyRotationPhase;
    let mut p = external_peer("laptop", "a", KEY_EXTERNAL, None);
    let w = rotated_world(KeyRotationPhase::Switched);
    let plan = plan_peer(&p, &w, PskObservation::None, &[], &now(101));
    assert_eq!(
        condition(&plan, "RotationPending"),
        ("True", reasons::EXTERNAL_PEER_NOT_UPDATED)
    );
    let message = &plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "RotationPending")
        .unwrap()
        .message;
    assert!(
        message.contains("OLDKEY00") && message.contains(KEY_A),
        "{message}"
    );
    assert!(message.contains("allowed-ips 10.1.0.1/32"), "{message}");
    let warnings: Vec<_> = plan
        .events
        .iter()
        .filter(|e| e.reason == reasons::EVENT_ROTATION_PENDING)
        .collect();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].warning);
    // Once: the condition is already True.
    p.status = Some(plan.status.clone());
    let again = plan_peer(&p, &w, PskObservation::None, &[], &now(102));
    assert!(again.events.is_empty(), "{:?}", again.events);
    // A handshake before the rotation does not count; one after it clears the condition,
    // without a warning.
    p.status.as_mut().unwrap().latest_handshake = Some(now(90));
    let before = plan_peer(&p, &w, PskObservation::None, &[], &now(103));
    assert_eq!(condition(&before, "RotationPending").0, "True");
    p.status.as_mut().unwrap().latest_handshake = Some(now(120));
    let after = plan_peer(&p, &w, PskObservation::None, &[], &now(121));
    assert_eq!(
        condition(&after, "RotationPending"),
        ("False", reasons::HANDSHAKE_WITH_NEW_KEY)
    );
    assert!(after.events.is_empty(), "{:?}", after.events);
}

#[test]
fn in_cluster_peers_and_never_rotated_interfaces_have_no_rotation_condition() {
    let internal = plan_peer(
        &peer("a-b", "a", "b"),
        &pair(),
        PskObservation::None,
        &[],
        &now(1),
    );
    assert!(
        internal
            .status
            .conditions
            .iter()
            .all(|c| c.type_ != "RotationPending")
    );
    let external = plan_peer(
        &external_peer("laptop", "a", KEY_EXTERNAL, None),
        &pair(),
        PskObservation::None,
        &[],
        &now(1),
    );
    assert!(
        external
            .status
            .conditions
            .iter()
            .all(|c| c.type_ != "RotationPending")
    );
}

/// `pair()` with Interface `b` as `b` is made.
fn pair_with_b(b: kwire_crds::v1alpha1::Interface) -> World {
    world(
        vec![],
        vec![
            with_key(interface("a", "node-a", &["10.1.0.1/24"]), KEY_A),
            b,
        ],
        vec![],
        vec![],
        Some(vec![
            node("node-a", &["192.168.0.1"], &[]),
            node("node-b", &["192.168.0.2"], &[]),
        ]),
    )
}

fn key_ready(
    mut i: kwire_crds::v1alpha1::Interface,
    status: &str,
    reason: &str,
) -> kwire_crds::v1alpha1::Interface {
    let s = i.status.get_or_insert_with(Default::default);
    s.conditions = crate::status::merge_conditions(
        &[],
        &[crate::status::DesiredCondition::new(
            "KeyReady",
            if status == "True" {
                crate::status::Status::True
            } else {
                crate::status::Status::False
            },
            reason,
            "",
        )],
        None,
        &now(0),
    );
    i
}

#[test]
fn a_peer_waiting_for_a_key_the_operator_is_making_holds_its_status() {
    let p = peer("a-b", "a", "b");
    let fresh_b = interface("b", "node-b", &["10.1.0.2/24"]);
    let plan = plan_peer(
        &p,
        &pair_with_b(fresh_b.clone()),
        PskObservation::None,
        &[],
        &now(1),
    );
    assert_eq!(
        condition(&plan, "Resolved"),
        ("False", reasons::REMOTE_KEY_PENDING)
    );
    assert!(plan.hold, "b has no status yet: the operator is keying it");

    let generating = key_ready(fresh_b.clone(), "False", reasons::KEY_PENDING);
    let plan = plan_peer(
        &p,
        &pair_with_b(generating),
        PskObservation::None,
        &[],
        &now(1),
    );
    assert!(plan.hold);

    let missing = key_ready(fresh_b.clone(), "False", reasons::KEY_SECRET_NOT_FOUND);
    let plan = plan_peer(
        &p,
        &pair_with_b(missing),
        PskObservation::None,
        &[],
        &now(1),
    );
    assert_eq!(
        condition(&plan, "Resolved"),
        ("False", reasons::REMOTE_KEY_PENDING)
    );
    assert!(
        !plan.hold,
        "b's key has a problem the user must see: written at once"
    );

    let mut node_local = fresh_b.clone();
    node_local.spec.key_mode = Some(kwire_crds::v1alpha1::KeyMode::NodeLocal);
    let plan = plan_peer(
        &p,
        &pair_with_b(node_local),
        PskObservation::None,
        &[],
        &now(1),
    );
    assert!(
        !plan.hold,
        "a NodeLocal key waits on the node daemon, not the operator"
    );

    let plan = plan_peer(&p, &pair(), PskObservation::None, &[], &now(1));
    assert!(!plan.hold, "a resolved Peer is written");
}

#[test]
fn a_peer_that_was_resolved_is_never_held() {
    let p = peer("a-b", "a", "b");
    let resolved = plan_peer(&p, &pair(), PskObservation::None, &[], &now(1));
    let mut p = p;
    p.status = Some(resolved.status);
    let fresh_b = interface("b", "node-b", &["10.1.0.2/24"]);
    let plan = plan_peer(
        &p,
        &pair_with_b(fresh_b),
        PskObservation::None,
        &[],
        &now(2),
    );
    assert_eq!(
        condition(&plan, "Resolved"),
        ("False", reasons::REMOTE_KEY_PENDING)
    );
    assert!(
        !plan.hold,
        "a working link that loses an end says so at once"
    );
}
