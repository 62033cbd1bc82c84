//! The Peer plan: the pre-shared key, the resolved entries, `Resolved` and `TopologyValid`; pure.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kwire_crds::v1alpha1::{KeyRotationPhase, Peer, PeerStatus, condition};

use crate::context::EventSpec;
use crate::controllers::{SecretAction, condition_events, waiting};
use crate::reasons;
use crate::resolve::{PskState, resolve_peer};
use crate::secrets::{
    self, LABEL_PEER, PRESHARED_KEY_SECRET_TYPE, ReadProblem, other_controllers, owned_by,
    owner_reference,
};
use crate::status::{DesiredCondition, merge_conditions};
use crate::topology::{Finding, ObjectKind, condition_for};
use crate::world::{World, ns_of};
use kwire_crds::keys::PresharedKey;

/// What the Peer controller observed about the pre-shared key.
#[derive(Debug)]
pub enum PskObservation {
    None,
    /// `presharedKey.generate`: the operator's Secret, and a fresh key exactly when it is absent.
    Generated {
        name: String,
        secret: Option<Secret>,
        fresh: Option<PresharedKey>,
    },
    /// `presharedKey.secretRef`: a user's Secret, read and never modified.
    UserSecret {
        name: String,
        data_key: String,
        secret: Option<Secret>,
    },
}

/// What to do for one Peer.
#[derive(Debug)]
pub struct PeerPlan {
    pub secret: SecretAction,
    pub status: PeerStatus,
    pub events: Vec<EventSpec>,
    /// The status only says the Peer waits for an Interface the operator is still
    /// preparing, and the Peer was never resolved: the write may be held (see
    /// [`crate::controllers::waiting`]).
    pub hold: bool,
}

/// Whether a Peer that is not resolved waits only on work the operator is doing: an end's
/// key or address it is still producing. A Peer that was resolved before is never held.
fn waits_on_operator(peer: &Peer, world: &World, resolved: &DesiredCondition) -> bool {
    if resolved.is_true() {
        return false;
    }
    let was_resolved = peer.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition::RESOLVED && c.status == "True")
    });
    if was_resolved {
        return false;
    }
    let ns = ns_of(peer);
    let local = world.interface(&ns, peer.spec.interface.as_str());
    let remote = peer
        .spec
        .remote
        .interface
        .as_ref()
        .and_then(|r| world.interface(&ns, r.as_str()));
    let (end, needs_key) = match resolved.reason.as_str() {
        reasons::LOCAL_KEY_PENDING => (local, true),
        reasons::REMOTE_KEY_PENDING => (remote, true),
        reasons::LOCAL_ADDRESS_PENDING => (local, false),
        reasons::REMOTE_ADDRESS_PENDING => (remote, false),
        _ => return false,
    };
    end.is_some_and(|i| {
        if needs_key {
            waiting::key_in_preparation(i)
        } else {
            waiting::address_in_preparation(i)
        }
    })
}

fn psk_plan(peer: &Peer, psk: PskObservation) -> (PskState, SecretAction, Vec<EventSpec>) {
    let name = peer.name_any();
    let problem = |reason, message| {
        (
            PskState::Problem { reason, message },
            SecretAction::None,
            Vec::new(),
        )
    };
    match psk {
        PskObservation::None => (PskState::None, SecretAction::None, Vec::new()),
        PskObservation::UserSecret {
            name: secret_name,
            data_key,
            secret,
        } => match secret {
            None => problem(
                reasons::PRESHARED_KEY_SECRET_NOT_FOUND,
                format!(
                    "Secret {secret_name} named in spec.presharedKey.secretRef of Peer {name} does not exist: create it, e.g. kubectl create secret generic {secret_name} --from-literal={data_key}=\"$(wg genpsk)\""
                ),
            ),
            Some(secret) => match secrets::read_preshared_key(&secret, &data_key) {
                Ok(_) => (
                    PskState::Ready {
                        secret: secret_name,
                    },
                    SecretAction::None,
                    Vec::new(),
                ),
                Err(ReadProblem::Missing) => problem(
                    reasons::PRESHARED_KEY_INVALID,
                    format!(
                        "Secret {secret_name} has no key {data_key}: add it (the output of wg genpsk), or set spec.presharedKey.secretRef.key"
                    ),
                ),
                Err(ReadProblem::Invalid(e)) => problem(
                    reasons::PRESHARED_KEY_INVALID,
                    format!(
                        "the value of {data_key} in Secret {secret_name} {e}: replace it with the output of wg genpsk"
                    ),
                ),
            },
        },
        PskObservation::Generated {
            name: secret_name,
            secret,
            fresh,
        } => match (secret, fresh) {
            (None, Some(fresh)) => (
                PskState::Ready {
                    secret: secret_name.clone(),
                },
                SecretAction::Create(Box::new(secrets::preshared_key_secret(peer, &fresh))),
                vec![EventSpec::normal(
                    reasons::EVENT_PRESHARED_KEY_GENERATED,
                    "GeneratePresharedKey",
                    format!("generated a pre-shared key in Secret {secret_name}"),
                )],
            ),
            (None, None) => problem(
                reasons::PRESHARED_KEY_PENDING,
                "the pre-shared key is being generated".into(),
            ),
            (Some(secret), _) => {
                if !secrets::is_generated_for(&secret, PRESHARED_KEY_SECRET_TYPE, LABEL_PEER, &name)
                {
                    return problem(
                        reasons::KEY_SECRET_NAME_CONFLICT,
                        format!(
                            "Secret {secret_name} exists but was not generated by kwire for Peer {name}, so kwire leaves it alone: delete or rename it, or use it through spec.presharedKey.secretRef"
                        ),
                    );
                }
                if let Err(e) = secrets::read_preshared_key(&secret, secrets::PRESHARED_KEY_DATA) {
                    let e = match e {
                        ReadProblem::Missing => "has no key presharedKey".to_string(),
                        ReadProblem::Invalid(e) => format!("holds a presharedKey that {e}"),
                    };
                    return problem(
                        reasons::PRESHARED_KEY_INVALID,
                        format!(
                            "Secret {secret_name} {e}; kwire never regenerates an existing key: delete Secret {secret_name} to have a new one generated"
                        ),
                    );
                }
                let uid = peer.metadata.uid.as_deref().unwrap_or_default();
                let action = match owner_reference(peer) {
                    Some(owner) if !owned_by(&secret, uid) => SecretAction::Adopt {
                        name: secret_name.clone(),
                        owner,
                        replaces: other_controllers(&secret, uid),
                    },
                    _ => SecretAction::None,
                };
                (
                    PskState::Ready {
                        secret: secret_name,
                    },
                    action,
                    Vec::new(),
                )
            }
        },
    }
}

/// For a Peer to an external peer: whether the far side, which kwire cannot configure,
/// still has to learn the local Interface's new key. `None` until that Interface's key has
/// been rotated at least once.
pub fn rotation_pending(peer: &Peer, world: &World) -> Option<DesiredCondition> {
    let external = peer.spec.remote.public_key.as_ref()?;
    let local = world.interface(&ns_of(peer), peer.spec.interface.as_str())?;
    let status = local.status.as_ref()?;
    let rotation = status.key_rotation.as_ref()?;
    let name = local.name_any();
    let new_key = status.public_key.as_deref().unwrap_or("?");
    let device = local.device_name();
    let endpoint = status.endpoint.as_deref().unwrap_or("<its endpoint>");
    let allowed = status.addresses.first().map_or_else(
        || "<its address>".to_string(),
        |a| {
            a.parse::<ipnet::IpNet>()
                .map(|n| crate::world::host_prefix(n.addr()).to_string())
                .unwrap_or_else(|_| a.clone())
        },
    );
    let instructions = |old: &str| {
        format!(
            "kwire cannot configure the external peer {} (Peer {}): on it, replace the peer whose public key starts with {old} by {new_key}, e.g. wg set <its device> peer {new_key} endpoint {endpoint} allowed-ips {allowed}, then remove the old one",
            external.prefix(),
            peer.name_any()
        )
    };
    match rotation.phase? {
        KeyRotationPhase::Announced => Some(DesiredCondition::ok(
            condition::ROTATION_PENDING,
            reasons::EXTERNAL_PEER_NOT_UPDATED,
            format!(
                "Interface {name} (device {device}) is replacing its key; its new public key is {new_key}: {}",
                instructions(rotation.current_fingerprint.as_deref().unwrap_or("?"))
            ),
        )),
        KeyRotationPhase::Switched | KeyRotationPhase::Completed => {
            let rotated = rotation.rotated_at.as_ref()?;
            let handshake = peer
                .status
                .as_ref()
                .and_then(|s| s.latest_handshake.as_ref());
            match handshake {
                Some(h) if h.0 >= rotated.0 => Some(DesiredCondition::failed(
                    condition::ROTATION_PENDING,
                    reasons::HANDSHAKE_WITH_NEW_KEY,
                    format!(
                        "the handshake at {} came after the key rotation of Interface {name} at {}: the external peer uses the new key",
                        h.0, rotated.0
                    ),
                )),
                _ => Some(DesiredCondition::ok(
                    condition::ROTATION_PENDING,
                    reasons::EXTERNAL_PEER_NOT_UPDATED,
                    format!(
                        "Interface {name} (device {device}) rotated its key at {}, and no handshake with the external peer has happened since: {}",
                        rotated.0,
                        instructions(rotation.previous_fingerprint.as_deref().unwrap_or("?"))
                    ),
                )),
            }
        }
    }
}

/// Plans one Peer.
pub fn plan_peer(
    peer: &Peer,
    world: &World,
    psk: PskObservation,
    findings: &[Finding],
    now: &Time,
) -> PeerPlan {
    let (psk_state, secret, mut events) = psk_plan(peer, psk);
    let resolution = resolve_peer(peer, world, &psk_state);
    let topology = condition_for(findings, ObjectKind::Peer, &ns_of(peer), &peer.name_any());
    let previous = peer
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let hold = waits_on_operator(peer, world, &resolution.condition);
    let mut desired = vec![resolution.condition, topology];
    events.extend(condition_events(previous, &desired));
    if let Some(pending) = rotation_pending(peer, world) {
        let was_pending = previous
            .iter()
            .any(|c| c.type_ == condition::ROTATION_PENDING && c.status == "True");
        if pending.is_true() && !was_pending {
            events.push(EventSpec::warning(
                reasons::EVENT_ROTATION_PENDING,
                "RotateKey",
                pending.message.clone(),
            ));
        }
        desired.push(pending);
    }
    let generation = peer.metadata.generation;
    PeerPlan {
        secret,
        status: PeerStatus {
            observed_generation: generation,
            conditions: merge_conditions(previous, &desired, generation, now),
            remote_name: resolution.remote_name,
            resolved: Some(resolution.resolved),
            ..PeerStatus::default()
        },
        events,
        hold,
    }
}
