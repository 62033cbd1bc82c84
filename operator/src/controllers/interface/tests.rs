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
use crate::keys::PrivateKey;
use crate::reasons;
use crate::secrets::{PlannedSecret, private_key_secret};
use crate::status::{Status, needs_patch};
use crate::world::World;

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
    KeyObservation::Generated {
        name: "a-wg0-private-key".into(),
        secret,
        fresh,
    }
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
    assert_eq!(plan.events.len(), 1);
    assert!(plan.events[0].note.contains(PUBLIC));
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
            reasons::KEY_FROM_SECRET,
            "the private key is in Secret a-wg0-private-key"
        )
    );
    assert!(plan.events.is_empty());
    assert_no_private_key(&plan);
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
    let SecretAction::Adopt { name, owner } = &plan.secret else {
        panic!("{:?}", plan.secret)
    };
    assert_eq!(
        (name.as_str(), owner.uid.as_str()),
        ("a-wg0-private-key", "uid-a-wg0")
    );
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
    }
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
