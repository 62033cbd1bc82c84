//! Generated keys and their rotation; pure.
//!
//! An Interface with a generated key has one or more key Secrets, numbered by generation
//! (`<name>-private-key`, then `<name>-private-key-1`, …). The newest one holds the key
//! peers must use (`status.publicKey`); `status.privateKeySecret` names the one the device
//! uses. Both are the same except in the middle of a rotation, which goes:
//!
//! 1. **Announced**: a new Secret is created and its public key published in
//!    `status.publicKey`, while `status.privateKeySecret` still names the previous key. The
//!    Peer controller resolves the new key into every in-cluster Peer, so the node daemons
//!    at the far ends replace their peer entry for this device first. The device itself
//!    keeps its previous key, and its other links are untouched.
//! 2. **Switched**: once every in-cluster Peer of the Interface carries the new key (in the
//!    operator's own Peer store, written just before and read as it is now, not as the last
//!    world had it; `peersUpdatedAt` records when) and [`SWITCH_SETTLE`] has passed,
//!    `status.privateKeySecret` names the new Secret and the node daemon of this
//!    Interface's node sets the new private key and at once starts a handshake with every
//!    peer, which the far ends, already switched, answer. A far end that switches later
//!    starts its own handshake when it replaces the entry. Traffic on this device's links
//!    pauses from the far end's switch to this one: about 100 ms here
//!    (tests/tests/key_rotation.rs).
//! 3. **Completed**: the node daemon reports the new public key on the device; the Secrets
//!    of older keys are deleted (the one just replaced is kept until then).
//!
//! External peers cannot be switched by kwire: their Peers get a `RotationPending`
//! condition (see the Peer controller). Everything here is derived from the Secrets (which
//! generation is newest, which request it answered, when it was made) and
//! `status.privateKeySecret`, so a restarted operator continues a rotation where it was.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::ResourceExt;
use kwire_crds::v1alpha1::{
    Interface, KeyRotationPhase, KeyRotationStatus, Peer, ROTATE_KEY_ANNOTATION, condition,
};

use crate::context::EventSpec;
use crate::controllers::SecretAction;
use crate::reasons;
use crate::secrets::{
    self, ANNOTATION_ROTATION_REQUEST, LABEL_INTERFACE, PRIVATE_KEY_SECRET_TYPE, ReadProblem,
    owned_by, owner_reference,
};
use crate::status::DesiredCondition;
use crate::world::{World, ns_of};
use kwire_crds::keys::{PrivateKey, PublicKey};

/// How soon to look again while a rotation waits for its Peers (they also trigger a
/// reconcile when they change; this is the safety net).
pub const ROTATION_POLL: Duration = Duration::from_secs(5);

/// How long the device waits after every in-cluster Peer carries the new key before it
/// switches. Traffic on the device's links pauses from a far end's switch to the device's,
/// so about this long plus a status write. The order no longer decides whether the link
/// comes back (whichever end switches last starts a handshake that the other answers: the
/// device after its switch, a far end when it replaces the entry); the margin keeps the two
/// ends from starting their handshakes within one network delay of each other, where both
/// initiations would cross and WireGuard would wait 5 s.
pub const SWITCH_SETTLE: Duration = Duration::from_millis(50);

/// Right after the new key is announced, the operator's own Peer controller writes it into
/// the Peers within milliseconds; the Interface looks at its Peer store this often for
/// [`PEER_POLL_FOR`] rather than wait for the Peers' watch events, which the router gathers
/// for up to 100 ms (`COALESCE`): every millisecond here is a millisecond the link waits
/// after its far ends switched. Polling reads the in-memory store and writes nothing while
/// the status stays the same.
pub const PEER_POLL: Duration = Duration::from_millis(10);
pub const PEER_POLL_FOR: Duration = Duration::from_secs(3);

/// How soon to look again while a rotation that started at `started` waits for its Peers.
fn waiting_poll(started: Option<&Time>, now: &Time) -> Duration {
    let young = started.is_some_and(|s| {
        Duration::try_from(now.0.duration_since(s.0)).is_ok_and(|d| d < PEER_POLL_FOR)
    });
    if young { PEER_POLL } else { ROTATION_POLL }
}

/// Rotation times are stored to the second: a scheduled rotation is looked at this long
/// after its due second.
pub const DUE_MARGIN: Duration = Duration::from_millis(100);

/// One of the operator's private key Secrets of an Interface, read: its metadata and type,
/// and the public key of the private key it holds. The private key itself is not kept, so
/// that a `KeySecret` can be cached.
#[derive(Clone, Debug)]
pub struct KeySecret {
    pub generation: u32,
    /// The Secret without its data.
    pub secret: Secret,
    /// The public key of the key under `privateKey`, or why there is none.
    pub public_key: Result<PublicKey, ReadProblem>,
}

impl KeySecret {
    /// Reads a key Secret: derives the public key and drops the data.
    pub fn read(generation: u32, mut secret: Secret) -> Self {
        let public_key = secrets::read_private_key(&secret, secrets::PRIVATE_KEY_DATA)
            .map(|private| private.public_key());
        secret.data = None;
        secret.string_data = None;
        KeySecret {
            generation,
            secret,
            public_key,
        }
    }
}

/// An older key Secret, known by name and UID only (to be deleted once unused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OldKeySecret {
    pub generation: u32,
    pub name: String,
    pub uid: String,
}

/// What the Interface controller observed about a generated key.
#[derive(Debug, Default)]
pub struct GeneratedKeys {
    /// The newest key Secret of the Interface (`None`: no key yet).
    pub newest: Option<KeySecret>,
    /// The older key Secret that `status.privateKeySecret` names (in the middle of a rotation).
    pub in_use: Option<KeySecret>,
    /// The other, older key Secrets of the Interface.
    pub older: Vec<OldKeySecret>,
    /// A freshly generated key, used only when a Secret is created now.
    pub fresh: Option<PrivateKey>,
    /// While a rotation is in progress: the Peers as the Peer store has them now (the plan
    /// picks those of the Interface's namespace). The world is rebuilt once per routed batch (up to 100 ms
    /// behind), and the device's switch waits on these Peers.
    pub current_peers: Option<Vec<Arc<Peer>>>,
}

/// The key part of an Interface plan.
#[derive(Debug)]
pub struct KeyPlan {
    pub condition: DesiredCondition,
    /// What peers configure (`status.publicKey`).
    pub public_key: Option<PublicKey>,
    /// The Secret the device uses (`status.privateKeySecret`).
    pub secret_name: Option<String>,
    pub action: SecretAction,
    /// Secrets of older keys to delete once the status no longer names them.
    pub delete: Vec<OldKeySecret>,
    pub rotation: Option<KeyRotationStatus>,
    pub events: Vec<EventSpec>,
    /// Look again this soon (a rotation in progress, or the next scheduled one).
    pub requeue: Option<Duration>,
}

impl KeyPlan {
    pub fn failed(reason: &str, message: String) -> Self {
        KeyPlan {
            condition: DesiredCondition::failed(condition::KEY_READY, reason, message),
            public_key: None,
            secret_name: None,
            action: SecretAction::None,
            delete: Vec::new(),
            rotation: None,
            events: Vec::new(),
            requeue: None,
        }
    }

    /// A key the operator generated, in Secret `secret_name`. The same words when the key
    /// was just made and when it is read back, so that reading it back writes nothing.
    fn generated(public_key: PublicKey, secret_name: String) -> Self {
        Self::ok(
            reasons::KEY_GENERATED,
            format!("kwire generated the key pair; the private key is in Secret {secret_name}"),
            public_key,
            secret_name,
        )
    }

    fn ok(reason: &str, message: String, public_key: PublicKey, secret_name: String) -> Self {
        KeyPlan {
            condition: DesiredCondition::ok(condition::KEY_READY, reason, message),
            public_key: Some(public_key),
            secret_name: Some(secret_name),
            ..KeyPlan::failed("", String::new())
        }
    }
}

/// The value of the `kwire.dev/rotate-key` annotation, if set.
pub fn rotation_request(interface: &Interface) -> Option<&str> {
    interface
        .annotations()
        .get(ROTATE_KEY_ANNOTATION)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn add(time: &Time, duration: Duration) -> Option<Time> {
    time.0.checked_add(duration).ok().map(Time)
}

fn until(now: &Time, at: &Time) -> Duration {
    Duration::try_from(at.0.duration_since(now.0)).unwrap_or(Duration::ZERO)
}

/// A key Secret checked: ours, readable, with its public key.
struct Valid<'a> {
    generation: u32,
    name: String,
    secret: &'a Secret,
    public_key: PublicKey,
}

#[expect(
    clippy::result_large_err,
    reason = "the error is the plan to carry out, made once per reconcile"
)]
fn validate<'a>(interface: &Interface, key: &'a KeySecret) -> Result<Valid<'a>, KeyPlan> {
    let name = interface.name_any();
    let secret_name = key.secret.name_any();
    if !secrets::is_generated_for(&key.secret, PRIVATE_KEY_SECRET_TYPE, LABEL_INTERFACE, &name) {
        return Err(KeyPlan::failed(
            reasons::KEY_SECRET_NAME_CONFLICT,
            format!(
                "Secret {secret_name} exists but was not generated by kwire for Interface {name}, so kwire leaves it alone: delete or rename it to have a key generated, or set spec.privateKeySecretRef: {{name: {secret_name}}} to use the key it holds"
            ),
        ));
    }
    match key.public_key.clone() {
        Ok(public_key) => Ok(Valid {
            generation: key.generation,
            name: secret_name,
            secret: &key.secret,
            public_key,
        }),
        Err(problem) => {
            let problem = match problem {
                ReadProblem::Missing => format!("has no key {}", secrets::PRIVATE_KEY_DATA),
                ReadProblem::Invalid(e) => {
                    format!("holds a {} that {e}", secrets::PRIVATE_KEY_DATA)
                }
            };
            Err(KeyPlan::failed(
                reasons::KEY_INVALID,
                format!(
                    "Secret {secret_name} {problem}; kwire never regenerates an existing key: delete Secret {secret_name} to have a new key generated"
                ),
            ))
        }
    }
}

/// In-cluster Peers of the Interface whose resolved status still gives its far end another
/// key than `key` for this Interface.
fn peers_not_carrying(
    interface: &Interface,
    world: &World,
    current: Option<&[Arc<Peer>]>,
    key: &PublicKey,
) -> Vec<String> {
    let ns = ns_of(interface);
    let name = interface.name_any();
    let key = key.to_base64();
    let peers: Box<dyn Iterator<Item = &Arc<Peer>>> = match current {
        Some(peers) => Box::new(peers.iter().filter(|p| ns_of(p.as_ref()) == ns)),
        None => Box::new(world.peers_linking(&ns, &name)),
    };
    let mut waiting: Vec<String> = peers
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let resolved = p.status.as_ref().and_then(|s| s.resolved.as_ref());
            let stale = |k: Option<&String>| k.is_some_and(|k| *k != key);
            let remote = p.spec.remote.interface.as_ref().map(|r| r.as_str());
            let as_local = p.spec.interface.as_str() == name
                && remote.is_some()
                && stale(resolved.and_then(|r| r.local_public_key.as_ref()));
            let as_remote = remote == Some(name.as_str())
                && stale(resolved.and_then(|r| r.public_key.as_ref()));
            as_local || as_remote
        })
        .map(|p| p.name_any())
        .collect();
    waiting.sort();
    waiting
}

/// Why a rotation is due now, if it is.
fn due(
    interface: &Interface,
    newest: &Valid<'_>,
    now: &Time,
) -> (Option<&'static str>, Option<Time>) {
    let next = interface
        .spec
        .key_rotation
        .as_ref()
        .and_then(|r| r.period())
        .and_then(|period| add(newest.secret.metadata.creation_timestamp.as_ref()?, period));
    let answered = newest
        .secret
        .annotations()
        .get(ANNOTATION_ROTATION_REQUEST)
        .map(String::as_str);
    if let Some(request) = rotation_request(interface)
        && Some(request) != answered
    {
        return (Some(reasons::ROTATION_REQUESTED), next);
    }
    match &next {
        Some(at) if at.0 <= now.0 => (Some(reasons::ROTATION_SCHEDULED), next),
        _ => (None, next),
    }
}

/// Plans a generated key: create the first one, adopt one left by an earlier Interface of
/// the same name, and run rotations (see the module docs).
pub fn plan_generated(
    interface: &Interface,
    world: &World,
    keys: GeneratedKeys,
    now: &Time,
) -> KeyPlan {
    let name = interface.name_any();
    let previous = interface
        .status
        .as_ref()
        .and_then(|s| s.key_rotation.clone())
        .unwrap_or_default();
    let GeneratedKeys {
        newest,
        in_use,
        older,
        fresh,
        current_peers,
    } = keys;
    let Some(newest) = newest else {
        let Some(fresh) = fresh else {
            return KeyPlan::failed(
                reasons::KEY_PENDING,
                format!("the key of Interface {name} is being generated"),
            );
        };
        let public_key = fresh.public_key();
        let planned =
            secrets::private_key_secret_at(interface, &fresh, 0, rotation_request(interface));
        let secret_name = planned.0.name_any();
        let next = interface
            .spec
            .key_rotation
            .as_ref()
            .and_then(|r| r.period())
            .and_then(|p| add(now, p));
        return KeyPlan {
            action: SecretAction::Create(Box::new(planned)),
            rotation: Some(KeyRotationStatus {
                current_fingerprint: Some(public_key.prefix()),
                next_rotation_at: next,
                last_request: rotation_request(interface).map(str::to_string),
                ..KeyRotationStatus::default()
            }),
            // No Event: `KeyReady` says it (reason `KeyGenerated`, with the Secret's name),
            // and an Event per Interface was a quarter of a cold start's writes.
            ..KeyPlan::generated(public_key, secret_name)
        };
    };
    let newest = match validate(interface, &newest) {
        Ok(v) => v,
        Err(failed) => return failed,
    };
    // The key the device uses: the one the status names while a rotation is in progress.
    let in_use = in_use
        .as_ref()
        .filter(|k| k.generation < newest.generation)
        .and_then(|k| validate(interface, k).ok());

    let uid = interface.metadata.uid.as_deref().unwrap_or_default();
    let (action, mut events) = match owner_reference(interface) {
        Some(owner) if !owned_by(newest.secret, uid) => (
            SecretAction::Adopt {
                name: newest.name.clone(),
                owner,
                replaces: secrets::other_controllers(newest.secret, uid),
            },
            vec![EventSpec::normal(
                reasons::EVENT_SECRET_ADOPTED,
                "AdoptKeySecret",
                format!(
                    "kept the key pair in Secret {}, left by an earlier Interface {name}",
                    newest.name
                ),
            )],
        ),
        _ => (SecretAction::None, Vec::new()),
    };
    let device_key = interface
        .status
        .as_ref()
        .and_then(|s| s.device.as_ref())
        .and_then(|d| d.public_key.as_deref())
        .and_then(|k| PublicKey::from_base64(k).ok());
    let (due, next_rotation_at) = due(interface, &newest, now);
    let request = rotation_request(interface).map(str::to_string);

    if let Some(current) = in_use {
        // Announced: the peers switch first, then the device.
        let waiting = peers_not_carrying(
            interface,
            world,
            current_peers.as_deref(),
            &newest.public_key,
        );
        let settled = previous.peers_updated_at.as_ref().map(|since| {
            let waited = now.0.duration_since(since.0);
            (
                waited >= SWITCH_SETTLE.try_into().unwrap_or_default(),
                SWITCH_SETTLE.saturating_sub(Duration::try_from(waited).unwrap_or_default()),
            )
        });
        if waiting.is_empty() && !matches!(settled, Some((true, _))) {
            // Every Peer carries the key: give the far ends a moment to apply it.
            return KeyPlan {
                action,
                rotation: Some(KeyRotationStatus {
                    phase: Some(KeyRotationPhase::Announced),
                    current_fingerprint: Some(current.public_key.prefix()),
                    next_fingerprint: Some(newest.public_key.prefix()),
                    peers_updated_at: previous.peers_updated_at.clone().or(Some(MicroTime(now.0))),
                    next_rotation_at,
                    ..previous
                }),
                events,
                requeue: Some(settled.map_or(SWITCH_SETTLE, |(_, left)| left)),
                ..KeyPlan::ok(
                    reasons::KEY_ROTATING,
                    format!(
                        "rotating: every in-cluster Peer carries the new public key {}; the device switches to it from Secret {} in a moment",
                        newest.public_key, current.name
                    ),
                    newest.public_key,
                    current.name,
                )
            };
        }
        if waiting.is_empty() {
            events.push(EventSpec::normal(
                reasons::EVENT_KEY_ROTATED,
                "RotateKey",
                format!(
                    "every in-cluster Peer carries the new public key {}: the device now uses it (Secret {}), replacing {}",
                    newest.public_key, newest.name, current.public_key
                ),
            ));
            return KeyPlan {
                action,
                rotation: Some(KeyRotationStatus {
                    phase: Some(KeyRotationPhase::Switched),
                    current_fingerprint: Some(newest.public_key.prefix()),
                    previous_fingerprint: Some(current.public_key.prefix()),
                    next_fingerprint: None,
                    peers_updated_at: None,
                    rotated_at: Some(now.clone()),
                    next_rotation_at,
                    ..previous
                }),
                events,
                requeue: None,
                ..KeyPlan::generated(newest.public_key, newest.name.clone())
            };
        }
        let poll = waiting_poll(previous.started_at.as_ref(), now);
        return KeyPlan {
            action,
            rotation: Some(KeyRotationStatus {
                phase: Some(KeyRotationPhase::Announced),
                current_fingerprint: Some(current.public_key.prefix()),
                next_fingerprint: Some(newest.public_key.prefix()),
                peers_updated_at: None,
                next_rotation_at,
                ..previous
            }),
            events,
            requeue: Some(poll),
            ..KeyPlan::ok(
                reasons::KEY_ROTATING,
                format!(
                    "rotating: the new public key {} is announced; the device keeps the key in Secret {} until Peers {} carry the new one",
                    newest.public_key,
                    current.name,
                    waiting.join(", ")
                ),
                newest.public_key,
                current.name,
            )
        };
    }

    // Stable: the device uses the newest key.
    let landed = device_key.is_none_or(|k| k == newest.public_key);
    if let (Some(trigger), true, Some(fresh)) = (due, landed, fresh) {
        let generation = newest.generation + 1;
        let planned =
            secrets::private_key_secret_at(interface, &fresh, generation, request.as_deref());
        let next_name = planned.0.name_any();
        let next_key = fresh.public_key();
        let why = if trigger == reasons::ROTATION_REQUESTED {
            format!(
                "annotation {ROTATE_KEY_ANNOTATION} is {:?}",
                request.as_deref().unwrap_or_default()
            )
        } else {
            format!(
                "spec.keyRotation.every is {}",
                interface
                    .spec
                    .key_rotation
                    .as_ref()
                    .map(|r| r.every.as_str())
                    .unwrap_or_default()
            )
        };
        events.push(EventSpec::normal(
            reasons::EVENT_KEY_ROTATION_STARTED,
            "RotateKey",
            format!(
                "{why}: generated a new key pair with public key {next_key} (Secret {next_name}) to replace {}; the far ends of the in-cluster links switch to it first, then this device",
                newest.public_key
            ),
        ));
        return KeyPlan {
            // An adoption waits: the new Secret is owned by this Interface anyway.
            action: SecretAction::Create(Box::new(planned)),
            rotation: Some(KeyRotationStatus {
                phase: Some(KeyRotationPhase::Announced),
                current_fingerprint: Some(newest.public_key.prefix()),
                next_fingerprint: Some(next_key.prefix()),
                started_at: Some(now.clone()),
                trigger: Some(trigger.to_string()),
                last_request: request.or(previous.last_request.clone()),
                next_rotation_at: None,
                ..previous
            }),
            events,
            requeue: Some(ROTATION_POLL),
            ..KeyPlan::ok(
                reasons::KEY_ROTATING,
                format!(
                    "rotating: the new public key {next_key} is announced; the device keeps the key in Secret {} until every in-cluster Peer carries the new one",
                    newest.name
                ),
                next_key,
                newest.name.clone(),
            )
        };
    }

    let phase = match previous.phase {
        Some(KeyRotationPhase::Announced | KeyRotationPhase::Switched)
            if device_key == Some(newest.public_key) =>
        {
            Some(KeyRotationPhase::Completed)
        }
        Some(KeyRotationPhase::Announced) => Some(KeyRotationPhase::Switched),
        other => other,
    };
    // Older keys go once nothing can need them: all but the one just replaced at once,
    // that one when the device reports the new key.
    let delete = older
        .into_iter()
        .filter(|o| {
            o.generation + 1 < newest.generation
                || (o.generation < newest.generation && device_key == Some(newest.public_key))
        })
        .collect();
    let requeue = match (&next_rotation_at, due) {
        // Due but waiting for the device to report the current key: look again later.
        (_, Some(_)) => Some(ROTATION_POLL.max(Duration::from_secs(30))),
        // Times are stored to the second: wake up just after the due one.
        (Some(at), None) => Some(until(now, at) + DUE_MARGIN),
        (None, None) => None,
    };
    KeyPlan {
        action,
        delete,
        rotation: Some(KeyRotationStatus {
            phase,
            current_fingerprint: Some(newest.public_key.prefix()),
            next_fingerprint: None,
            next_rotation_at,
            ..previous
        }),
        events,
        requeue,
        ..KeyPlan::generated(newest.public_key, newest.name.clone())
    }
}
