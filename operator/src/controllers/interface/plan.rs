//! The Interface plan: key, addresses, endpoint, topology; pure.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kwire_crds::v1alpha1::{
    Interface, InterfaceStatus, KeyRotationStatus, ROTATE_KEY_ANNOTATION, condition,
};

use super::rotation::{GeneratedKeys, KeyPlan, OldKeySecret, plan_generated, rotation_request};
use crate::context::EventSpec;
use crate::controllers::{SecretAction, condition_events};
use crate::ipam;
use crate::reasons;
use crate::resolve::interface_endpoint;
use crate::secrets::{self, ReadProblem};
use crate::status::{DesiredCondition, merge_conditions};
use crate::topology::{Finding, ObjectKind, condition_for};
use crate::world::{World, ns_of};
use kwire_crds::keys::PublicKey;

/// What the Interface controller observed about the private key.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per reconcile, never stored in bulk"
)]
pub enum KeyObservation {
    /// `keyMode: NodeLocal`: the key never leaves the node; the operator touches nothing.
    NodeLocal,
    /// `spec.privateKeySecretRef`: a user's Secret, read and never modified.
    UserSecret {
        name: String,
        data_key: String,
        secret: Option<Secret>,
    },
    /// The operator's Secrets (see [`super::rotation`]).
    Generated(GeneratedKeys),
}

/// What to do for one Interface.
#[derive(Debug)]
pub struct InterfacePlan {
    /// A Secret to create or adopt, before the status is written.
    pub secret: SecretAction,
    /// The operator's part of the status.
    pub status: InterfaceStatus,
    pub events: Vec<EventSpec>,
    /// Secrets of replaced keys to delete, after the status is written.
    pub delete: Vec<OldKeySecret>,
    /// Look again this soon rather than at the next resync (rotations).
    pub requeue: Option<Duration>,
    /// The status only says the Interface waits for its Network to record its address, and
    /// it never had one: the write may be held (see [`crate::controllers::waiting`]).
    pub hold: bool,
}

/// Keys the operator does not make cannot be rotated by it: an Event says so, once per
/// value of the request annotation.
fn unsupported_rotation(interface: &Interface, key: &mut KeyPlan, mode: &str) {
    let previous = interface
        .status
        .as_ref()
        .and_then(|s| s.key_rotation.as_ref())
        .and_then(|r| r.last_request.clone());
    let Some(request) = rotation_request(interface) else {
        key.rotation = previous.map(|last| KeyRotationStatus {
            last_request: Some(last),
            ..KeyRotationStatus::default()
        });
        return;
    };
    if previous.as_deref() != Some(request) {
        key.events.push(EventSpec::warning(
            reasons::EVENT_KEY_ROTATION_UNSUPPORTED,
            "RotateKey",
            format!(
                "annotation {ROTATE_KEY_ANNOTATION} asks for a key rotation, but {mode}: kwire only rotates keys it generates"
            ),
        ));
    }
    key.rotation = Some(KeyRotationStatus {
        last_request: Some(request.to_string()),
        ..KeyRotationStatus::default()
    });
}

fn key_plan(interface: &Interface, world: &World, key: KeyObservation, now: &Time) -> KeyPlan {
    let name = interface.name_any();
    let ns = ns_of(interface);
    let failed = KeyPlan::failed;
    match key {
        KeyObservation::NodeLocal => {
            let node = &interface.spec.node_name;
            let reported = interface
                .status
                .as_ref()
                .and_then(|s| s.device.as_ref())
                .and_then(|d| d.public_key.as_deref())
                .and_then(|k| PublicKey::from_base64(k).ok());
            let mut plan = match reported {
                Some(public_key) => KeyPlan {
                    condition: DesiredCondition::ok(
                        condition::KEY_READY,
                        reasons::KEY_NODE_LOCAL,
                        format!(
                            "the private key stays on node {node}; its public key is the one the node daemon reports"
                        ),
                    ),
                    public_key: Some(public_key),
                    ..failed("", String::new())
                },
                None => failed(
                    reasons::KEY_NODE_LOCAL_PENDING,
                    format!(
                        "keyMode is NodeLocal: waiting for the node daemon on node {node} to generate the key and report its public key in status.device.publicKey; check that the daemon runs on {node}"
                    ),
                ),
            };
            unsupported_rotation(
                interface,
                &mut plan,
                "the key is node-local (keyMode NodeLocal)",
            );
            plan
        }
        KeyObservation::UserSecret {
            name: secret_name,
            data_key,
            secret,
        } => {
            let mut plan = match secret {
                None => failed(
                    reasons::KEY_SECRET_NOT_FOUND,
                    format!(
                        "Secret {secret_name} named in spec.privateKeySecretRef of Interface {name} does not exist in namespace {ns}: create it, e.g. kubectl create secret generic {secret_name} -n {ns} --from-literal={data_key}=\"$(wg genkey)\""
                    ),
                ),
                Some(secret) => match secrets::read_private_key(&secret, &data_key) {
                    Ok(private) => KeyPlan {
                        condition: DesiredCondition::ok(
                            condition::KEY_READY,
                            reasons::KEY_USER_SUPPLIED,
                            format!(
                                "the private key is the user-supplied one in Secret {secret_name}, key {data_key}"
                            ),
                        ),
                        public_key: Some(private.public_key()),
                        secret_name: Some(secret_name.clone()),
                        ..failed("", String::new())
                    },
                    Err(ReadProblem::Missing) => failed(
                        reasons::KEY_SECRET_KEY_MISSING,
                        format!(
                            "Secret {secret_name} has no key {data_key}: add it (the output of wg genkey), or set spec.privateKeySecretRef.key to the key that holds the private key"
                        ),
                    ),
                    Err(ReadProblem::Invalid(problem)) => failed(
                        reasons::KEY_INVALID,
                        format!(
                            "the value of {data_key} in Secret {secret_name} {problem}: replace it with the output of wg genkey"
                        ),
                    ),
                },
            };
            unsupported_rotation(
                interface,
                &mut plan,
                &format!(
                    "the key is user-supplied (Secret {secret_name}; replace the key in it to rotate)"
                ),
            );
            plan
        }
        KeyObservation::Generated(keys) => plan_generated(interface, world, keys, now),
    }
}

/// The addresses of the Interface and the `AddressAllocated` condition.
fn address_plan(interface: &Interface, world: &World) -> (Vec<String>, DesiredCondition) {
    if let Some(addresses) = &interface.spec.addresses {
        return (
            addresses.iter().map(ToString::to_string).collect(),
            DesiredCondition::ok(
                condition::ADDRESS_ALLOCATED,
                reasons::ADDRESSES_FROM_SPEC,
                "the addresses are written in spec.addresses",
            ),
        );
    }
    let ns = ns_of(interface);
    let uid = ipam::holder_uid(interface);
    let mut addresses = Vec::new();
    let mut got = Vec::new();
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    for wanted in interface.spec.networks.iter().flatten() {
        let net = wanted.name.as_str();
        let Some(network) = world.network(&ns, net) else {
            problems.push((
                reasons::NETWORK_NOT_FOUND,
                format!("Network {net} does not exist in namespace {ns}: create it, or fix spec.networks"),
            ));
            continue;
        };
        let Some(cidr) = ipam::network_cidr(network) else {
            problems.push((
                reasons::NETWORK_NOT_READY,
                format!("Network {net} has no CIDR yet: see its Ready condition (kubectl describe network {net})"),
            ));
            continue;
        };
        let recorded = network.status.as_ref().and_then(|s| {
            s.allocations
                .iter()
                .find(|a| a.uid.as_deref() == Some(uid.as_str()))
        });
        if let Some(a) = recorded {
            addresses.push(a.address.clone());
            got.push(format!("{} from Network {net}", a.address));
        }
        // Why no address, or not the requested one: ask the allocator, which is pure.
        let outcome = ipam::allocate_for_network(network, Some(cidr), &world.interfaces);
        match outcome.as_ref().and_then(|o| o.errors.get(&uid)) {
            Some(error) => problems.push((error.reason(), error.to_string())),
            None if recorded.is_none() => problems.push((
                reasons::ALLOCATION_PENDING,
                format!("waiting for Network {net} to record an address for this Interface"),
            )),
            None => {}
        }
    }
    let condition = match problems.first() {
        None => DesiredCondition::ok(
            condition::ADDRESS_ALLOCATED,
            reasons::ADDRESS_ALLOCATED,
            format!("allocated {}", got.join(", ")),
        ),
        Some((reason, _)) => DesiredCondition::failed(
            condition::ADDRESS_ALLOCATED,
            reason,
            problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    (addresses, condition)
}

/// Plans one Interface.
pub fn plan_interface(
    interface: &Interface,
    world: &World,
    key: KeyObservation,
    findings: &[Finding],
    now: &Time,
) -> InterfacePlan {
    let key = key_plan(interface, world, key, now);
    let (addresses, address_condition) = address_plan(interface, world);
    let topology = condition_for(
        findings,
        ObjectKind::Interface,
        &ns_of(interface),
        &interface.name_any(),
    );
    let previous = interface
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let hold = address_condition.reason == reasons::ALLOCATION_PENDING
        && !previous
            .iter()
            .any(|c| c.type_ == condition::ADDRESS_ALLOCATED && c.status == "True");
    let desired = [key.condition, address_condition, topology];
    let generation = interface.metadata.generation;
    let mut events = key.events;
    events.extend(condition_events(previous, &desired));
    InterfacePlan {
        secret: key.action,
        delete: key.delete,
        requeue: key.requeue,
        hold,
        status: InterfaceStatus {
            observed_generation: generation,
            conditions: merge_conditions(previous, &desired, generation, now),
            public_key: key.public_key.map(|k| k.to_base64()),
            public_key_prefix: key.public_key.map(|k| k.prefix()),
            private_key_secret: key.secret_name,
            addresses,
            endpoint: interface_endpoint(interface, world).ok(),
            device: None,
            mesh: None,
            key_rotation: key.rotation,
        },
        events,
    }
}
