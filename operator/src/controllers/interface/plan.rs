//! The Interface plan: key, addresses, endpoint, topology; pure.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kwire_crds::v1alpha1::{Interface, InterfaceStatus, condition};

use crate::context::EventSpec;
use crate::controllers::{SecretAction, condition_events};
use crate::ipam;
use crate::keys::{PrivateKey, PublicKey};
use crate::reasons;
use crate::resolve::interface_endpoint;
use crate::secrets::{
    self, LABEL_INTERFACE, PRIVATE_KEY_SECRET_TYPE, ReadProblem, owned_by, owner_reference,
};
use crate::status::{DesiredCondition, merge_conditions};
use crate::topology::{Finding, ObjectKind, condition_for};
use crate::world::{World, ns_of};

/// What the Interface controller observed about the private key.
#[derive(Debug)]
pub enum KeyObservation {
    /// `keyMode: NodeLocal`: the key never leaves the node; the operator touches nothing.
    NodeLocal,
    /// `spec.privateKeySecretRef`: a user's Secret, read and never modified.
    UserSecret {
        name: String,
        data_key: String,
        secret: Option<Secret>,
    },
    /// The operator's Secret. `fresh` is a newly generated key, present exactly when the
    /// Secret does not exist.
    Generated {
        name: String,
        secret: Option<Secret>,
        fresh: Option<PrivateKey>,
    },
}

/// What to do for one Interface.
#[derive(Debug)]
pub struct InterfacePlan {
    pub secret: SecretAction,
    /// The operator's part of the status.
    pub status: InterfaceStatus,
    pub events: Vec<EventSpec>,
}

struct KeyPlan {
    condition: DesiredCondition,
    public_key: Option<PublicKey>,
    secret_name: Option<String>,
    action: SecretAction,
    events: Vec<EventSpec>,
}

fn key_plan(interface: &Interface, key: KeyObservation) -> KeyPlan {
    let name = interface.name_any();
    let ns = ns_of(interface);
    let failed = |reason: &str, message: String| KeyPlan {
        condition: DesiredCondition::failed(condition::KEY_READY, reason, message),
        public_key: None,
        secret_name: None,
        action: SecretAction::None,
        events: Vec::new(),
    };
    match key {
        KeyObservation::NodeLocal => {
            let node = &interface.spec.node_name;
            let reported = interface
                .status
                .as_ref()
                .and_then(|s| s.device.as_ref())
                .and_then(|d| d.public_key.as_deref())
                .and_then(|k| PublicKey::from_base64(k).ok());
            match reported {
                Some(public_key) => KeyPlan {
                    condition: DesiredCondition::ok(
                        condition::KEY_READY,
                        reasons::KEY_NODE_LOCAL,
                        format!(
                            "the private key stays on node {node}; its public key is the one the node daemon reports"
                        ),
                    ),
                    public_key: Some(public_key),
                    secret_name: None,
                    action: SecretAction::None,
                    events: Vec::new(),
                },
                None => failed(
                    reasons::KEY_NODE_LOCAL_PENDING,
                    format!(
                        "keyMode is NodeLocal: waiting for the node daemon on node {node} to generate the key and report its public key in status.device.publicKey; check that the daemon runs on {node}"
                    ),
                ),
            }
        }
        KeyObservation::UserSecret {
            name: secret_name,
            data_key,
            secret,
        } => {
            let Some(secret) = secret else {
                return failed(
                    reasons::KEY_SECRET_NOT_FOUND,
                    format!(
                        "Secret {secret_name} named in spec.privateKeySecretRef of Interface {name} does not exist in namespace {ns}: create it, e.g. kubectl create secret generic {secret_name} -n {ns} --from-literal={data_key}=\"$(wg genkey)\""
                    ),
                );
            };
            match secrets::read_private_key(&secret, &data_key) {
                Ok(private) => KeyPlan {
                    condition: DesiredCondition::ok(
                        condition::KEY_READY,
                        reasons::KEY_USER_SUPPLIED,
                        format!(
                            "the private key is the user-supplied one in Secret {secret_name}, key {data_key}"
                        ),
                    ),
                    public_key: Some(private.public_key()),
                    secret_name: Some(secret_name),
                    action: SecretAction::None,
                    events: Vec::new(),
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
            }
        }
        KeyObservation::Generated {
            name: secret_name,
            secret,
            fresh,
        } => match (secret, fresh) {
            (None, Some(fresh)) => {
                let public_key = fresh.public_key();
                KeyPlan {
                    condition: DesiredCondition::ok(
                        condition::KEY_READY,
                        reasons::KEY_GENERATED,
                        format!("generated a key pair; the private key is in Secret {secret_name}"),
                    ),
                    public_key: Some(public_key),
                    secret_name: Some(secret_name.clone()),
                    action: SecretAction::Create(Box::new(secrets::private_key_secret(
                        interface, &fresh,
                    ))),
                    events: vec![EventSpec::normal(
                        reasons::EVENT_KEY_GENERATED,
                        "GenerateKey",
                        format!(
                            "generated a WireGuard key pair with public key {public_key}; the private key is in Secret {secret_name}"
                        ),
                    )],
                }
            }
            (None, None) => failed(
                reasons::KEY_PENDING,
                format!("the key of Interface {name} is being generated"),
            ),
            (Some(secret), _) => {
                if !secrets::is_generated_for(
                    &secret,
                    PRIVATE_KEY_SECRET_TYPE,
                    LABEL_INTERFACE,
                    &name,
                ) {
                    return failed(
                        reasons::KEY_SECRET_NAME_CONFLICT,
                        format!(
                            "Secret {secret_name} exists but was not generated by kwire for Interface {name}, so kwire leaves it alone: delete or rename it to have a key generated, or set spec.privateKeySecretRef: {{name: {secret_name}}} to use the key it holds"
                        ),
                    );
                }
                match secrets::read_private_key(&secret, secrets::PRIVATE_KEY_DATA) {
                    Ok(private) => {
                        let uid = interface.metadata.uid.as_deref().unwrap_or_default();
                        let adopt = !owned_by(&secret, uid);
                        let (action, events) = match owner_reference(interface) {
                            Some(owner) if adopt => (
                                SecretAction::Adopt {
                                    name: secret_name.clone(),
                                    owner,
                                },
                                vec![EventSpec::normal(
                                    reasons::EVENT_SECRET_ADOPTED,
                                    "AdoptKeySecret",
                                    format!(
                                        "kept the key pair in Secret {secret_name}, left by an earlier Interface {name}"
                                    ),
                                )],
                            ),
                            _ => (SecretAction::None, Vec::new()),
                        };
                        KeyPlan {
                            condition: DesiredCondition::ok(
                                condition::KEY_READY,
                                reasons::KEY_FROM_SECRET,
                                format!("the private key is in Secret {secret_name}"),
                            ),
                            public_key: Some(private.public_key()),
                            secret_name: Some(secret_name),
                            action,
                            events,
                        }
                    }
                    Err(problem) => {
                        let problem = match problem {
                            ReadProblem::Missing => {
                                format!("has no key {}", secrets::PRIVATE_KEY_DATA)
                            }
                            ReadProblem::Invalid(e) => {
                                format!("holds a {} that {e}", secrets::PRIVATE_KEY_DATA)
                            }
                        };
                        failed(
                            reasons::KEY_INVALID,
                            format!(
                                "Secret {secret_name} {problem}; kwire never regenerates an existing key: delete Secret {secret_name} to have a new key generated"
                            ),
                        )
                    }
                }
            }
        },
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
    let key = key_plan(interface, key);
    let (addresses, address_condition) = address_plan(interface, world);
    let topology = condition_for(
        findings,
        ObjectKind::Interface,
        &ns_of(interface),
        &interface.name_any(),
    );
    let desired = [key.condition, address_condition, topology];
    let previous = interface
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = interface.metadata.generation;
    let mut events = key.events;
    events.extend(condition_events(previous, &desired));
    InterfacePlan {
        secret: key.action,
        status: InterfaceStatus {
            observed_generation: generation,
            conditions: merge_conditions(previous, &desired, generation, now),
            public_key: key.public_key.map(|k| k.to_base64()),
            public_key_prefix: key.public_key.map(|k| k.prefix()),
            private_key_secret: key.secret_name,
            addresses,
            endpoint: interface_endpoint(interface, world).ok(),
            device: None,
        },
        events,
    }
}
