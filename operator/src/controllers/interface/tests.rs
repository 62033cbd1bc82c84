use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kwire_crds::v1alpha1::{Allocation, NetworkStatus};
use serde_json::json;

use super::*;
use crate::controllers::SecretAction;
use crate::fixtures::*;
use crate::reasons;
use crate::secrets::{PlannedSecret, private_key_secret};
use crate::status::{Status, needs_patch};
use crate::world::World;
use kwire_crds::keys::PrivateKey;

const PRIVATE: &str = "uL05OyKCfPLVOdvOUsn5NJx1oRCuLZt/+9All5kZPVE=";
const PUBLIC: &str = "d7n3aHWXo8ES1G6Z4qZ6/fhPmKWjCGIl6piHhsMntQ0=";

fn now(s: i64) -> Time {
    Time(Timestamp::from_second(s).unwrap())
}

fn plain_world(interfaces: Vec<kwire_crds::v1alpha1::Interface>) -> World {
    world(
        vec![],
        interfaces,
        vec![],
        vec![],
        Some(vec![node("a", &["192.168.1.1"], &[])]),
    )
}

fn key() -> PrivateKey {
    PrivateKey::from_base64(PRIVATE).unwrap()
}

fn generated(secret: Option<Secret>, fresh: Option<PrivateKey>) -> KeyObservation {
    KeyObservation::Generated(GeneratedKeys {
        newest: secret.map(|secret| KeySecret::read(0, secret)),
        fresh,
        ..GeneratedKeys::default()
    })
}

fn user_secret(data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("mine".into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

fn key_condition(plan: &InterfacePlan) -> (&str, &str, &str) {
    let c = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "KeyReady")
        .unwrap();
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

/// Every place a plan could leak a private key: status, Events, the plan's Debug output.
fn assert_no_private_key(plan: &InterfacePlan) {
    let status = serde_json::to_string(&plan.status).unwrap();
    let shown = format!("{plan:?}");
    let events = format!("{:?}", plan.events);
    for text in [status, shown, events] {
        assert!(!text.contains(PRIVATE), "private key leaked: {text}");
    }
}

#[test]
fn a_missing_key_secret_is_created_with_the_fresh_key_and_its_public_key_is_published() {
    let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
    let plan = plan_interface(
        &iface,
        &plain_world(vec![iface.clone()]),
        generated(None, Some(key())),
        &[],
        &now(1),
    );
    let SecretAction::Create(planned) = &plan.secret else {
        panic!("{:?}", plan.secret)
    };
    let PlannedSecret(secret) = planned.as_ref();
    assert_eq!(secret.metadata.name.as_deref(), Some("a-wg0-private-key"));
    assert_eq!(plan.status.public_key.as_deref(), Some(PUBLIC));
    assert_eq!(plan.status.public_key_prefix.as_deref(), Some("d7n3aHWX"));
    assert_eq!(
        plan.status.private_key_secret.as_deref(),
        Some("a-wg0-private-key")
    );
    assert_eq!(key_condition(&plan).1, reasons::KEY_GENERATED);
    assert!(
        plan.events.is_empty(),
        "the first key is told by KeyReady, not by an Event: {:?}",
        plan.events
    );
    assert_no_private_key(&plan);
}

#[test]
fn an_existing_key_secret_is_never_regenerated_and_keeps_the_public_key() {
    let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
    let PlannedSecret(secret) = private_key_secret(&iface, &key());
    let plan = plan_interface(
        &iface,
        &plain_world(vec![iface.clone()]),
        generated(Some(secret), None),
        &[],
        &now(1),
    );
    assert_eq!(plan.secret, SecretAction::None);
    assert_eq!(plan.status.public_key.as_deref(), Some(PUBLIC));
    assert_eq!(
        key_condition(&plan),
        (
            "True",
            reasons::KEY_GENERATED,
            "kwire generated the key pair; the private key is in Secret a-wg0-private-key"
        )
    );
    assert!(plan.events.is_empty());
    assert_no_private_key(&plan);
}

#[test]
fn reading_back_a_key_just_generated_plans_the_status_already_written() {
    let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
    let world = plain_world(vec![iface.clone()]);
    let fresh = key();
    let first = plan_interface(
        &iface,
        &world,
        generated(None, Some(fresh.clone())),
        &[],
        &now(1),
    );
    let SecretAction::Create(planned) = &first.secret else {
        panic!("{:?}", first.secret)
    };
    let mut written = iface.clone();
    written.status = Some(first.status.clone());
    let again = plan_interface(
        &written,
        &world,
        generated(
            Some(planned.0.clone()),
            Some(PrivateKey::generate().unwrap()),
        ),
        &[],
        &now(2),
    );
    assert_eq!(again.secret, SecretAction::None);
    assert!(
        !needs_patch(written.status.as_ref(), &again.status),
        "the second reconcile would write again:\n{:?}\n{:?}",
        first.status,
        again.status
    );
}

#[test]
fn a_key_secret_left_by_an_earlier_interface_of_the_same_name_is_adopted() {
    let old = patch_meta_uid(interface("a-wg0", "a", &["10.0.0.1/24"]), "old-uid");
    let PlannedSecret(secret) = private_key_secret(&old, &key());
    let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
    let plan = plan_interface(
        &iface,
        &plain_world(vec![iface.clone()]),
        generated(Some(secret), None),
        &[],
        &now(1),
    );
    let SecretAction::Adopt {
        name,
        owner,
        replaces,
    } = &plan.secret
    else {
        panic!("{:?}", plan.secret)
    };
    assert_eq!(
        (name.as_str(), owner.uid.as_str()),
        ("a-wg0-private-key", "uid-a-wg0")
    );
    // The earlier Interface's controller reference is replaced, not joined by a second.
    assert_eq!(replaces, &["old-uid".to_string()]);
    assert_eq!(plan.status.public_key.as_deref(), Some(PUBLIC));
}

fn patch_meta_uid(
    mut i: kwire_crds::v1alpha1::Interface,
    uid: &str,
) -> kwire_crds::v1alpha1::Interface {
    i.metadata.uid = Some(uid.into());
    i
}

#[test]
fn a_foreign_secret_with_the_generated_name_is_left_alone_and_reported() {
    let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
    let foreign = user_secret(&[("privateKey", PRIVATE)]);
    let plan = plan_interface(
        &iface,
        &plain_world(vec![iface.clone()]),
        generated(Some(foreign), None),
        &[],
        &now(1),
    );
    assert_eq!(plan.secret, SecretAction::None);
    assert_eq!(plan.status.public_key, None);
    let (status, reason, message) = key_condition(&plan);
    assert_eq!(
        (status, reason),
        ("False", reasons::KEY_SECRET_NAME_CONFLICT)
    );
    assert!(message.contains("privateKeySecretRef"), "{message}");
    assert_eq!(plan.events[0].reason, reasons::KEY_SECRET_NAME_CONFLICT);
    assert!(plan.events[0].warning);
    assert_no_private_key(&plan);
}

#[test]
fn a_damaged_generated_secret_is_reported_not_replaced() {
    let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
    let PlannedSecret(mut secret) = private_key_secret(&iface, &key());
    secret.data = Some(BTreeMap::from([(
        "privateKey".into(),
        ByteString(b"c2hvcnQ=".to_vec()),
    )]));
    let plan = plan_interface(
        &iface,
        &plain_world(vec![iface.clone()]),
        generated(Some(secret), None),
        &[],
        &now(1),
    );
    assert_eq!(plan.secret, SecretAction::None);
    let (_, reason, message) = key_condition(&plan);
    assert_eq!(reason, reasons::KEY_INVALID);
    assert!(message.contains("never regenerates"), "{message}");
}

#[test]
fn user_supplied_keys_are_validated_and_never_modified() {
    let iface = patch_spec(
        interface("a-wg0", "a", &["10.0.0.1/24"]),
        json!({"privateKeySecretRef": {"name": "mine", "key": "wg"}}),
    );
    let w = plain_world(vec![iface.clone()]);
    let cases: Vec<(Option<Secret>, &str, Option<&str>)> = vec![
        (
            Some(user_secret(&[("wg", PRIVATE)])),
            reasons::KEY_USER_SUPPLIED,
            Some(PUBLIC),
        ),
        (None, reasons::KEY_SECRET_NOT_FOUND, None),
        (
            Some(user_secret(&[("other", PRIVATE)])),
            reasons::KEY_SECRET_KEY_MISSING,
            None,
        ),
        (
            Some(user_secret(&[("wg", "not-a-key")])),
            reasons::KEY_INVALID,
            None,
        ),
    ];
    for (secret, reason, public) in cases {
        let obs = KeyObservation::UserSecret {
            name: "mine".into(),
            data_key: "wg".into(),
            secret,
        };
        let plan = plan_interface(&iface, &w, obs, &[], &now(1));
        assert_eq!(
            plan.secret,
            SecretAction::None,
            "never touches a user's Secret"
        );
        assert_eq!(key_condition(&plan).1, reason);
        assert_eq!(plan.status.public_key.as_deref(), public);
        assert_no_private_key(&plan);
    }
}

#[test]
fn node_local_keys_take_the_public_key_the_daemon_reports() {
    let mut iface = patch_spec(
        interface("a-wg0", "a", &["10.0.0.1/24"]),
        json!({"keyMode": "NodeLocal"}),
    );
    let w = plain_world(vec![iface.clone()]);
    let pending = plan_interface(&iface, &w, KeyObservation::NodeLocal, &[], &now(1));
    assert_eq!(key_condition(&pending).1, reasons::KEY_NODE_LOCAL_PENDING);
    assert_eq!(pending.status.public_key, None);
    iface.status.get_or_insert_with(Default::default).device =
        Some(kwire_crds::v1alpha1::DeviceStatus {
            public_key: Some(PUBLIC.into()),
            ..Default::default()
        });
    let ready = plan_interface(&iface, &w, KeyObservation::NodeLocal, &[], &now(1));
    assert_eq!(key_condition(&ready).1, reasons::KEY_NODE_LOCAL);
    assert_eq!(ready.status.public_key.as_deref(), Some(PUBLIC));
    assert_eq!(ready.status.private_key_secret, None);
    assert_eq!(
        ready.status.device, None,
        "device belongs to the node daemon"
    );
}

fn address_condition(plan: &InterfacePlan) -> (&str, &str, &str) {
    let c = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "AddressAllocated")
        .unwrap();
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn network_with(allocations: &[(&str, &str, &str)]) -> kwire_crds::v1alpha1::Network {
    let mut n = network("link", "10.1.0.0/24");
    n.status = Some(NetworkStatus {
        cidr: Some("10.1.0.0/24".into()),
        allocations: allocations
            .iter()
            .map(|(a, i, u)| Allocation {
                address: a.to_string(),
                interface: i.to_string(),
                uid: Some(u.to_string()),
            })
            .collect(),
        ..Default::default()
    });
    n
}

#[test]
fn addresses_come_from_the_spec_or_from_the_networks_record() {
    let manual = interface("a-wg0", "a", &["10.0.0.1/24", "fd00::1/64"]);
    let w = plain_world(vec![manual.clone()]);
    let plan = plan_interface(&manual, &w, KeyObservation::NodeLocal, &[], &now(1));
    assert_eq!(plan.status.addresses, ["10.0.0.1/24", "fd00::1/64"]);
    assert_eq!(address_condition(&plan).1, reasons::ADDRESSES_FROM_SPEC);

    let auto = interface_in("b-wg0", "a", "link", Some(2));
    let w = world(
        vec![network_with(&[("10.1.0.2/24", "b-wg0", "uid-b-wg0")])],
        vec![auto.clone()],
        vec![],
        vec![],
        None,
    );
    let plan = plan_interface(&auto, &w, KeyObservation::NodeLocal, &[], &now(1));
    assert_eq!(plan.status.addresses, ["10.1.0.2/24"]);
    assert_eq!(
        address_condition(&plan),
        (
            "True",
            reasons::ADDRESS_ALLOCATED,
            "allocated 10.1.0.2/24 from Network link"
        )
    );
}

#[test]
fn a_missing_or_unready_network_or_a_conflict_is_explained() {
    let auto = interface_in("b-wg0", "a", "link", Some(2));
    let other = interface_in("c-wg0", "a", "link", Some(2));
    let cases = vec![
        (
            vec![],
            reasons::NETWORK_NOT_FOUND,
            "Network link does not exist",
        ),
        (
            vec![network_carved("link", 24)],
            reasons::NETWORK_NOT_READY,
            "Network link has no CIDR yet",
        ),
        (
            vec![network_with(&[])],
            reasons::ALLOCATION_PENDING,
            "waiting for Network link",
        ),
        (
            vec![network_with(&[("10.1.0.2/24", "c-wg0", "uid-c-wg0")])],
            "HostIndexConflict",
            "already held by Interface c-wg0",
        ),
    ];
    for (networks, reason, fragment) in cases {
        let w = world(
            networks,
            vec![auto.clone(), other.clone()],
            vec![],
            vec![],
            None,
        );
        let plan = plan_interface(&auto, &w, KeyObservation::NodeLocal, &[], &now(1));
        let (status, got, message) = address_condition(&plan);
        assert_eq!((status, got), ("False", reason), "{message}");
        assert!(message.contains(fragment), "{message}");
        assert!(plan.status.addresses.is_empty());
        assert_eq!(
            plan.hold,
            reason == reasons::ALLOCATION_PENDING,
            "only a wait for the Network's own next write is held ({reason})"
        );
    }
}

#[test]
fn an_interface_that_had_an_address_is_never_held() {
    let auto = interface_in("b-wg0", "a", "link", Some(2));
    let allocated = world(
        vec![network_with(&[("10.1.0.2/24", "b-wg0", "uid-b-wg0")])],
        vec![auto.clone()],
        vec![],
        vec![],
        None,
    );
    let plan = plan_interface(&auto, &allocated, KeyObservation::NodeLocal, &[], &now(1));
    assert!(!plan.hold);
    let mut had = auto.clone();
    had.status = Some(plan.status);
    let pending = world(
        vec![network_with(&[])],
        vec![had.clone()],
        vec![],
        vec![],
        None,
    );
    let plan = plan_interface(&had, &pending, KeyObservation::NodeLocal, &[], &now(2));
    assert_eq!(address_condition(&plan).1, reasons::ALLOCATION_PENDING);
    assert!(
        !plan.hold,
        "an Interface that loses its address says so at once"
    );
}

#[test]
fn the_endpoint_is_the_nodes_internal_address_and_the_listen_port() {
    let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
    let plan = plan_interface(
        &iface,
        &plain_world(vec![iface.clone()]),
        KeyObservation::NodeLocal,
        &[],
        &now(1),
    );
    assert_eq!(plan.status.endpoint.as_deref(), Some("192.168.1.1:51820"));
}

#[test]
fn planning_again_from_the_written_status_needs_no_patch_even_later() {
    let mut iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
    let w = plain_world(vec![iface.clone()]);
    let PlannedSecret(secret) = private_key_secret(&iface, &key());
    let first = plan_interface(
        &iface,
        &w,
        generated(Some(secret.clone()), None),
        &[],
        &now(1),
    );
    assert!(needs_patch(iface.status.as_ref(), &first.status));
    iface.status = Some(first.status.clone());
    let second = plan_interface(&iface, &w, generated(Some(secret), None), &[], &now(5000));
    assert!(!needs_patch(iface.status.as_ref(), &second.status));
    assert!(second.events.is_empty());
    assert!(
        second
            .status
            .conditions
            .iter()
            .all(|c| c.last_transition_time == now(1))
    );
    assert!(
        second
            .status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1))
    );
    let _ = Status::True;
}

// Key rotation.

const NEW_PRIVATE: &str = "YJ9zmoRhFMYJpn3OdmCZKBCjmeoOcbVztDbwUPSDVlY=";

fn new_key() -> PrivateKey {
    PrivateKey::from_base64(NEW_PRIVATE).unwrap()
}

fn key_secret(
    iface: &kwire_crds::v1alpha1::Interface,
    key: &PrivateKey,
    generation: u32,
    created: i64,
    request: Option<&str>,
) -> KeySecret {
    let PlannedSecret(mut secret) =
        crate::secrets::private_key_secret_at(iface, key, generation, request);
    secret.metadata.creation_timestamp = Some(now(created));
    secret.metadata.uid = Some(format!("secret-uid-{generation}"));
    KeySecret::read(generation, secret)
}

fn annotated(
    mut iface: kwire_crds::v1alpha1::Interface,
    value: &str,
) -> kwire_crds::v1alpha1::Interface {
    iface
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            kwire_crds::v1alpha1::ROTATE_KEY_ANNOTATION.into(),
            value.into(),
        );
    iface
}

fn rotation(plan: &InterfacePlan) -> kwire_crds::v1alpha1::KeyRotationStatus {
    plan.status.key_rotation.clone().unwrap_or_default()
}

fn with_device_key(
    mut iface: kwire_crds::v1alpha1::Interface,
    key: &PrivateKey,
) -> kwire_crds::v1alpha1::Interface {
    iface.status.get_or_insert_with(Default::default).device =
        Some(kwire_crds::v1alpha1::DeviceStatus {
            public_key: Some(key.public_key().to_base64()),
            ..Default::default()
        });
    iface
}

/// The seed's first link, with `a-wg0` on both sides of Peers: `a-to-b` (a local) and
/// `b-to-a` would be a duplicate, so `c-to-a` (a remote) stands for the other direction.
fn linked_world(
    iface: &kwire_crds::v1alpha1::Interface,
    a_key_seen_by_b: &str,
    a_key_seen_by_c: &str,
) -> World {
    let mut to_b = peer("a-to-b", "a-wg0", "b-wg0");
    to_b.status = Some(kwire_crds::v1alpha1::PeerStatus {
        resolved: Some(kwire_crds::v1alpha1::ResolvedPeer {
            local_public_key: Some(a_key_seen_by_b.into()),
            public_key: Some(KEY_B.into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut from_c = peer("c-to-a", "c-wg0", "a-wg0");
    from_c.status = Some(kwire_crds::v1alpha1::PeerStatus {
        resolved: Some(kwire_crds::v1alpha1::ResolvedPeer {
            public_key: Some(a_key_seen_by_c.into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    // An external peer never holds a rotation up.
    let mut external = external_peer("laptop", "a-wg0", KEY_EXTERNAL, None);
    external.status = Some(kwire_crds::v1alpha1::PeerStatus {
        resolved: Some(kwire_crds::v1alpha1::ResolvedPeer {
            local_public_key: Some(PUBLIC.into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    world(
        vec![],
        vec![
            iface.clone(),
            interface("b-wg0", "b", &["10.0.0.2/24"]),
            interface("c-wg0", "c", &["10.0.0.3/24"]),
        ],
        vec![to_b, from_c, external],
        vec![],
        Some(vec![
            node("a", &["192.168.1.1"], &[]),
            node("b", &["192.168.1.2"], &[]),
            node("c", &["192.168.1.3"], &[]),
        ]),
    )
}

#[test]
fn a_rotation_request_creates_the_next_key_and_announces_it_while_the_device_keeps_the_old_one() {
    let iface = annotated(interface("a-wg0", "a", &["10.0.0.1/24"]), "monday");
    let current = key_secret(&iface, &key(), 0, 100, None);
    let plan = plan_interface(
        &iface,
        &linked_world(&iface, PUBLIC, PUBLIC),
        KeyObservation::Generated(GeneratedKeys {
            newest: Some(current),
            fresh: Some(new_key()),
            ..GeneratedKeys::default()
        }),
        &[],
        &now(200),
    );
    let SecretAction::Create(planned) = &plan.secret else {
        panic!("{:?}", plan.secret)
    };
    let PlannedSecret(secret) = planned.as_ref();
    assert_eq!(secret.metadata.name.as_deref(), Some("a-wg0-private-key-1"));
    assert_eq!(
        secret.metadata.annotations.as_ref().unwrap()[crate::secrets::ANNOTATION_ROTATION_REQUEST],
        "monday"
    );
    let new_public = new_key().public_key();
    // Peers learn the new key; the device keeps the old one for now.
    assert_eq!(plan.status.public_key, Some(new_public.to_base64()));
    assert_eq!(
        plan.status.private_key_secret.as_deref(),
        Some("a-wg0-private-key")
    );
    let r = rotation(&plan);
    assert_eq!(
        r.phase,
        Some(kwire_crds::v1alpha1::KeyRotationPhase::Announced)
    );
    assert_eq!(r.current_fingerprint.as_deref(), Some("d7n3aHWX"));
    assert_eq!(r.next_fingerprint, Some(new_public.prefix()));
    assert_eq!(r.trigger.as_deref(), Some(reasons::ROTATION_REQUESTED));
    assert_eq!(r.last_request.as_deref(), Some("monday"));
    assert_eq!(r.started_at, Some(now(200)));
    assert_eq!(key_condition(&plan).1, reasons::KEY_ROTATING);
    assert_eq!(plan.events[0].reason, reasons::EVENT_KEY_ROTATION_STARTED);
    assert!(plan.requeue.is_some());
    assert_no_private_key(&plan);
    assert!(!format!("{plan:?}").contains(NEW_PRIVATE));
}

#[test]
fn the_device_switches_only_once_every_in_cluster_peer_carries_the_new_key() {
    let mut iface = annotated(interface("a-wg0", "a", &["10.0.0.1/24"]), "monday");
    let new_public = new_key().public_key().to_base64();
    iface.status = Some(kwire_crds::v1alpha1::InterfaceStatus {
        public_key: Some(new_public.clone()),
        private_key_secret: Some("a-wg0-private-key".into()),
        key_rotation: Some(kwire_crds::v1alpha1::KeyRotationStatus {
            phase: Some(kwire_crds::v1alpha1::KeyRotationPhase::Announced),
            started_at: Some(now(200)),
            trigger: Some(reasons::ROTATION_REQUESTED.into()),
            last_request: Some("monday".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let owner = iface.clone();
    let keys = || {
        KeyObservation::Generated(GeneratedKeys {
            newest: Some(key_secret(&owner, &new_key(), 1, 200, Some("monday"))),
            in_use: Some(key_secret(&owner, &key(), 0, 100, None)),
            fresh: Some(PrivateKey::generate().unwrap()),
            ..GeneratedKeys::default()
        })
    };
    // b still has the old key for a: wait.
    let waiting = plan_interface(
        &iface,
        &linked_world(&iface, PUBLIC, &new_public),
        keys(),
        &[],
        &now(201),
    );
    assert_eq!(waiting.secret, SecretAction::None);
    assert_eq!(
        waiting.status.private_key_secret.as_deref(),
        Some("a-wg0-private-key")
    );
    assert_eq!(
        waiting.status.public_key.as_deref(),
        Some(new_public.as_str())
    );
    let (status, reason, message) = key_condition(&waiting);
    assert_eq!((status, reason), ("True", reasons::KEY_ROTATING));
    assert!(message.contains("Peers a-to-b carry"), "{message}");
    assert!(!needs_patch(iface.status.as_ref(), &waiting.status) || waiting.events.is_empty());
    // Just after the announcement the Peer store is looked at again at once; later, slowly.
    assert_eq!(waiting.requeue, Some(super::rotation::PEER_POLL));
    let later = plan_interface(
        &iface,
        &linked_world(&iface, PUBLIC, &new_public),
        keys(),
        &[],
        &now(200 + super::rotation::PEER_POLL_FOR.as_secs() as i64),
    );
    assert_eq!(later.requeue, Some(super::rotation::ROTATION_POLL));

    // Both far ends carry it: the device waits a moment for their daemons, then switches.
    let both = linked_world(&iface, &new_public, &new_public);
    let settling = plan_interface(&iface, &both, keys(), &[], &now(202));
    assert_eq!(
        settling.status.private_key_secret.as_deref(),
        Some("a-wg0-private-key")
    );
    let r = rotation(&settling);
    assert_eq!(
        r.phase,
        Some(kwire_crds::v1alpha1::KeyRotationPhase::Announced)
    );
    assert_eq!(r.peers_updated_at.as_ref().map(|t| t.0), Some(now(202).0));
    assert_eq!(settling.requeue, Some(super::rotation::SWITCH_SETTLE));
    iface.status.as_mut().unwrap().key_rotation = Some(r);
    let switched = plan_interface(&iface, &both, keys(), &[], &now(203));
    assert_eq!(
        switched.status.private_key_secret.as_deref(),
        Some("a-wg0-private-key-1")
    );
    let r = rotation(&switched);
    assert_eq!(
        r.phase,
        Some(kwire_crds::v1alpha1::KeyRotationPhase::Switched)
    );
    assert_eq!(r.previous_fingerprint.as_deref(), Some("d7n3aHWX"));
    assert_eq!(r.current_fingerprint, Some(new_key().public_key().prefix()));
    assert_eq!(r.next_fingerprint, None);
    assert_eq!(r.peers_updated_at, None);
    assert_eq!(r.rotated_at, Some(now(203)));
    assert_eq!(r.started_at, Some(now(200)), "carried over");
    assert_eq!(switched.events.len(), 1);
    assert_eq!(switched.events[0].reason, reasons::EVENT_KEY_ROTATED);
    assert!(
        switched.delete.is_empty(),
        "the old key stays until the device reports the new one"
    );
    assert_no_private_key(&switched);
}

#[test]
fn a_rotation_reads_its_peers_as_the_store_has_them_now_not_as_the_world_had_them() {
    let mut iface = annotated(interface("a-wg0", "a", &["10.0.0.1/24"]), "monday");
    let new_public = new_key().public_key().to_base64();
    iface.status = Some(kwire_crds::v1alpha1::InterfaceStatus {
        public_key: Some(new_public.clone()),
        private_key_secret: Some("a-wg0-private-key".into()),
        key_rotation: Some(kwire_crds::v1alpha1::KeyRotationStatus {
            phase: Some(kwire_crds::v1alpha1::KeyRotationPhase::Announced),
            started_at: Some(now(200)),
            ..Default::default()
        }),
        ..Default::default()
    });
    let owner = iface.clone();
    let keys = |current: Option<Vec<std::sync::Arc<kwire_crds::v1alpha1::Peer>>>| {
        KeyObservation::Generated(GeneratedKeys {
            newest: Some(key_secret(&owner, &new_key(), 1, 200, Some("monday"))),
            in_use: Some(key_secret(&owner, &key(), 0, 100, None)),
            current_peers: current,
            ..GeneratedKeys::default()
        })
    };
    // The world was built before b's Peer got the new key; the store has it now.
    let stale = linked_world(&iface, PUBLIC, &new_public);
    let now_peers = linked_world(&iface, &new_public, &new_public).peers.clone();
    let from_world = plan_interface(&iface, &stale, keys(None), &[], &now(201));
    assert_eq!(rotation(&from_world).peers_updated_at, None);
    let from_store = plan_interface(&iface, &stale, keys(Some(now_peers)), &[], &now(201));
    assert_eq!(
        rotation(&from_store).peers_updated_at.map(|t| t.0),
        Some(now(201).0)
    );
    assert_eq!(from_store.requeue, Some(super::rotation::SWITCH_SETTLE));
}

#[test]
fn a_rotation_completes_when_the_device_reports_the_new_key_and_then_old_keys_go() {
    let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
    let mut switched = iface.clone();
    switched.status = Some(kwire_crds::v1alpha1::InterfaceStatus {
        private_key_secret: Some("a-wg0-private-key-2".into()),
        key_rotation: Some(kwire_crds::v1alpha1::KeyRotationStatus {
            phase: Some(kwire_crds::v1alpha1::KeyRotationPhase::Switched),
            rotated_at: Some(now(300)),
            ..Default::default()
        }),
        ..Default::default()
    });
    let older = vec![
        OldKeySecret {
            generation: 0,
            name: "a-wg0-private-key".into(),
            uid: "u0".into(),
        },
        OldKeySecret {
            generation: 1,
            name: "a-wg0-private-key-1".into(),
            uid: "u1".into(),
        },
    ];
    let observe = || {
        KeyObservation::Generated(GeneratedKeys {
            newest: Some(key_secret(&iface, &new_key(), 2, 300, None)),
            older: older.clone(),
            fresh: Some(PrivateKey::generate().unwrap()),
            ..GeneratedKeys::default()
        })
    };
    // The device still reports the previous key: the key before it goes, the previous stays.
    let still_old = with_device_key(switched.clone(), &key());
    let plan = plan_interface(&still_old, &plain_world(vec![]), observe(), &[], &now(301));
    assert_eq!(
        rotation(&plan).phase,
        Some(kwire_crds::v1alpha1::KeyRotationPhase::Switched)
    );
    let deleted: Vec<u32> = plan.delete.iter().map(|o| o.generation).collect();
    assert_eq!(deleted, [0]);
    // The device reports the new key: completed, and every older key goes.
    let landed = with_device_key(switched, &new_key());
    let plan = plan_interface(&landed, &plain_world(vec![]), observe(), &[], &now(330));
    assert_eq!(
        rotation(&plan).phase,
        Some(kwire_crds::v1alpha1::KeyRotationPhase::Completed)
    );
    let deleted: Vec<u32> = plan.delete.iter().map(|o| o.generation).collect();
    assert_eq!(deleted, [0, 1]);
    assert_eq!(
        plan.status.private_key_secret.as_deref(),
        Some("a-wg0-private-key-2")
    );
}

#[test]
fn a_schedule_rotates_the_key_when_it_is_old_enough_and_says_when_next() {
    let iface = patch_spec(
        interface("a-wg0", "a", &["10.0.0.1/24"]),
        json!({"keyRotation": {"every": "1h"}}),
    );
    let observe = || {
        KeyObservation::Generated(GeneratedKeys {
            newest: Some(key_secret(&iface, &key(), 0, 1000, None)),
            fresh: Some(new_key()),
            ..GeneratedKeys::default()
        })
    };
    let early = plan_interface(
        &iface,
        &plain_world(vec![]),
        observe(),
        &[],
        &now(1000 + 1800),
    );
    assert_eq!(early.secret, SecretAction::None);
    assert_eq!(rotation(&early).next_rotation_at, Some(now(1000 + 3600)));
    assert_eq!(
        early.requeue,
        Some(
            std::time::Duration::from_secs(1800)
                + crate::controllers::interface::rotation::DUE_MARGIN
        )
    );
    let due = plan_interface(
        &iface,
        &plain_world(vec![]),
        observe(),
        &[],
        &now(1000 + 3600),
    );
    assert!(matches!(due.secret, SecretAction::Create(_)));
    assert_eq!(
        rotation(&due).trigger.as_deref(),
        Some(reasons::ROTATION_SCHEDULED)
    );
}

#[test]
fn an_answered_request_or_a_device_still_on_an_older_key_starts_nothing() {
    let iface = annotated(interface("a-wg0", "a", &["10.0.0.1/24"]), "monday");
    let answered = key_secret(&iface, &new_key(), 1, 100, Some("monday"));
    let plan = plan_interface(
        &iface,
        &plain_world(vec![]),
        KeyObservation::Generated(GeneratedKeys {
            newest: Some(answered),
            fresh: Some(PrivateKey::generate().unwrap()),
            ..GeneratedKeys::default()
        }),
        &[],
        &now(200),
    );
    assert_eq!(plan.secret, SecretAction::None);
    assert_eq!(
        plan.status.public_key,
        Some(new_key().public_key().to_base64())
    );

    // A new request while the daemon still reports the key before: wait for it to land.
    let lagging = with_device_key(annotated(iface.clone(), "tuesday"), &key());
    let plan = plan_interface(
        &lagging,
        &plain_world(vec![]),
        KeyObservation::Generated(GeneratedKeys {
            newest: Some(key_secret(&iface, &new_key(), 1, 100, Some("monday"))),
            fresh: Some(PrivateKey::generate().unwrap()),
            ..GeneratedKeys::default()
        }),
        &[],
        &now(200),
    );
    assert_eq!(plan.secret, SecretAction::None);
    assert!(plan.requeue.is_some());
}

#[test]
fn a_rotation_planned_again_from_its_own_status_changes_nothing() {
    let mut iface = annotated(interface("a-wg0", "a", &["10.0.0.1/24"]), "monday");
    let w = plain_world(vec![]);
    let observe = |iface: &kwire_crds::v1alpha1::Interface| {
        KeyObservation::Generated(GeneratedKeys {
            newest: Some(key_secret(iface, &new_key(), 1, 100, Some("monday"))),
            fresh: Some(PrivateKey::generate().unwrap()),
            ..GeneratedKeys::default()
        })
    };
    let first = plan_interface(&iface, &w, observe(&iface), &[], &now(150));
    iface.status = Some(first.status.clone());
    let again = plan_interface(&iface, &w, observe(&iface), &[], &now(9000));
    assert!(!needs_patch(iface.status.as_ref(), &again.status));
    assert!(again.events.is_empty());
}

#[test]
fn keys_kwire_does_not_make_cannot_be_rotated_and_an_event_says_so_once() {
    let mut iface = annotated(
        patch_spec(
            interface("a-wg0", "a", &["10.0.0.1/24"]),
            json!({"keyMode": "NodeLocal"}),
        ),
        "now",
    );
    let w = plain_world(vec![iface.clone()]);
    let first = plan_interface(&iface, &w, KeyObservation::NodeLocal, &[], &now(1));
    assert!(
        first
            .events
            .iter()
            .any(|e| e.warning && e.reason == reasons::EVENT_KEY_ROTATION_UNSUPPORTED)
    );
    assert_eq!(rotation(&first).last_request.as_deref(), Some("now"));
    iface.status = Some(first.status);
    let second = plan_interface(&iface, &w, KeyObservation::NodeLocal, &[], &now(2));
    assert!(second.events.is_empty(), "{:?}", second.events);
}

#[test]
fn a_read_key_secret_keeps_the_public_key_and_drops_the_private_one() {
    let iface = interface("a-wg0", "a", &["10.0.0.1/24"]);
    let PlannedSecret(secret) = private_key_secret(&iface, &key());
    let read = KeySecret::read(0, secret);
    assert_eq!(read.public_key, Ok(key().public_key()));
    assert!(read.secret.data.is_none() && read.secret.string_data.is_none());
    assert!(!format!("{read:?}").contains(PRIVATE));
}
