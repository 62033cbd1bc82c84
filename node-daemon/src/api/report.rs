//! From what the node observes to the status of Interfaces, Peers and Routes.
//!
//! [`StatusReport::build`] is pure: it takes the translation, the last observation and
//! the plan's conflicts and returns the status each object should have from this node.
//! [`due`] says which of those to write: only what a person would notice right away, such
//! as a condition or a first handshake; changed counters at most every [`COUNTER_INTERVAL`].
//! [`super::writer`] writes them by server-side apply under this node's field manager, so
//! two nodes never overwrite each other.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use kwire_crds::v1alpha1::Interface;
use kwire_crds::v1alpha1::condition;
use kwire_mesh::api::STATUS_NAMES_CAP;
use kwire_mesh::health::{PeerState, member_peers_status};
use kwire_mesh::members::mesh_identity;
use serde_json::{Value, json};

use super::desired::{ObjectKey, PeerSide, Translation};
use crate::model::{LinkKind, ObservedNode, Ownership, PublicKey};
use crate::plan::{Conflict, device_mtu};
use crate::run::StepFailure;
use crate::run::followup::PeerEntry;

/// After this long without a new handshake WireGuard rejects the session's keys
/// (`REJECT_AFTER_TIME`), so the link is no longer connected.
pub const STALE_AFTER: Duration = Duration::from_secs(180);
/// How long a configured peer may go without its first handshake before it is reported
/// `NeverHandshaked` rather than `Connecting`.
pub const FIRST_HANDSHAKE_GRACE: Duration = Duration::from_secs(60);
/// Counters alone cause at most one write per object per this period.
pub const COUNTER_INTERVAL: Duration = Duration::from_secs(30);
/// How long the status of a peer entry this daemon has just configured waits for its first
/// handshake before it is written without one. The daemon looks again 10, 25 and 50 ms after
/// a change (see [`crate::run::followup`]) and on a LAN the handshake is done by the first
/// look, so the Peer gets one patch saying `Ready` and `Connected` instead of a `Connecting`
/// one that the `Connected` one then queues behind.
pub const FIRST_HANDSHAKE_HOLD: Duration = Duration::from_millis(60);

/// A status for one object: the part that matters at once, and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectStatus {
    /// Conditions and configuration; a change is written at once.
    pub significant: Value,
    /// Handshake times and byte counters; written at most every [`COUNTER_INTERVAL`].
    pub counters: Value,
}

#[derive(Debug, Default)]
pub struct StatusReport {
    pub interfaces: BTreeMap<ObjectKey, ObjectStatus>,
    pub peers: BTreeMap<ObjectKey, ObjectStatus>,
    pub routes: BTreeMap<ObjectKey, ObjectStatus>,
}

/// What the reporter needs about one object from the API (generation, current conditions).
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub generation: Option<i64>,
    pub conditions: Vec<Condition>,
    /// Peers: the MTU the remote end's node reports (`status.remoteEnd.mtu`).
    pub remote_mtu: Option<u32>,
}

pub struct ReportInput<'a> {
    pub node: &'a str,
    pub translation: &'a Translation,
    pub observed: Option<&'a ObservedNode>,
    /// Peer entries created after `observed` was taken: configured, no handshake or
    /// traffic yet, whatever `observed` says (see [`crate::run::NodeStatus::fresh_peers`]).
    pub fresh: &'a BTreeSet<PeerEntry>,
    pub conflicts: &'a [Conflict],
    pub errors: &'a [StepFailure],
    pub now: SystemTime,
    /// When each peer entry was first configured by this daemon (for the handshake grace).
    pub configured_since: &'a BTreeMap<ObjectKey, SystemTime>,
    pub interfaces: &'a BTreeMap<ObjectKey, Seen>,
    pub peers: &'a BTreeMap<ObjectKey, Seen>,
    pub routes: &'a BTreeMap<ObjectKey, Seen>,
}

fn condition_json(
    seen: &Seen,
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: SystemTime,
) -> Value {
    let status_text = if status { "True" } else { "False" };
    let since = seen
        .conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == status_text)
        .map(|c| c.last_transition_time.0.to_string())
        .unwrap_or_else(|| timestamp(now));
    json!({
        "type": kind,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": seen.generation,
    })
}

fn timestamp(t: SystemTime) -> String {
    Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl StatusReport {
    pub fn build(input: &ReportInput<'_>) -> Self {
        let mut report = Self::default();
        for (key, seen) in input.interfaces {
            let device = input.translation.devices.get(key);
            let observed = device.and_then(|d| input.observed.and_then(|o| o.devices.get(d)));
            let conflict = device.and_then(|d| {
                input.conflicts.iter().find(
                    |c| matches!(c, Conflict::InterfaceNameTaken { device, .. } if device == d),
                )
            });
            // The failed steps of this device (route steps belong to their Route),
            // and node-wide ones, which concern every device.
            let failures: Vec<&StepFailure> = input
                .errors
                .iter()
                .filter(|f| {
                    f.route.is_none() && (f.device.is_none() || f.device.as_ref() == device)
                })
                .collect();
            let (ready, reason, message) =
                if let Some(problem) = input.translation.interface_problems.get(key) {
                    (false, problem.reason, problem.message.clone())
                } else if let Some(c) = conflict {
                    (
                        false,
                        condition::CONFLICT,
                        format!("{c} (kwire never changes a link it did not create)"),
                    )
                } else if observed.is_none() {
                    (
                        false,
                        "Pending",
                        "the device is not configured yet".to_string(),
                    )
                } else if let Some(first) = failures.first() {
                    let messages: Vec<&str> = failures.iter().map(|f| f.message.as_str()).collect();
                    (false, first.reason, messages.join("; "))
                } else {
                    (
                        true,
                        "Configured",
                        format!(
                            "device {} is configured on node {}",
                            device.map(ToString::to_string).unwrap_or_default(),
                            input.node
                        ),
                    )
                };
            let wireguard = observed.and_then(|o| o.wireguard.as_ref());
            // Why the device has its MTU: what the planner decided it from.
            let mtu_source = device
                .and_then(|d| input.translation.desired.devices.get(d))
                .zip(input.observed)
                .map(|(want, node)| device_mtu(want, node).source.to_string());
            let significant = json!({
                "conditions": [condition_json(seen, condition::READY, ready, reason, &message, input.now)],
                "device": {
                    "backend": observed.map(|o| match o.kind { LinkKind::Wireguard => "kernel", _ => "userspace" }),
                    "listenPort": wireguard.and_then(|w| w.listen_port),
                    "publicKey": wireguard.and_then(|w| w.public_key).map(|k| k.to_base64()),
                    "peers": wireguard.map(|w| w.peers.len()),
                    "mtu": observed.map(|o| o.mtu),
                    "mtuSource": observed.and(mtu_source),
                    "observedGeneration": seen.generation,
                },
            });
            report.interfaces.insert(
                key.clone(),
                ObjectStatus {
                    significant: strip_nulls(significant),
                    counters: json!({}),
                },
            );
        }

        for (key, seen) in input.peers {
            let Some(side) = input.translation.peer_sides.get(key).copied().or_else(|| {
                input
                    .translation
                    .peer_problems
                    .contains_key(key)
                    .then_some(PeerSide::Local)
            }) else {
                continue;
            };
            let stats = peer_stats(input, key);
            match side {
                PeerSide::Local => {
                    let (ready, reason, message) = match input.translation.peer_problems.get(key) {
                        Some(p) => (false, p.reason, p.message.clone()),
                        None if stats.is_some() => (
                            true,
                            "Configured",
                            format!("configured on node {}", input.node),
                        ),
                        None => (
                            false,
                            "Pending",
                            "the peer is not configured on the device yet".to_string(),
                        ),
                    };
                    let since = input.configured_since.get(key).copied();
                    let (connected, c_reason, c_message) = connectivity(
                        stats.as_ref().and_then(|s| s.handshake),
                        stats.as_ref().map(|s| s.tx),
                        since,
                        input.now,
                    );
                    let local_mtu = input
                        .translation
                        .peer_entries
                        .get(key)
                        .and_then(|entry| entry_mtu(input, entry));
                    let remote_here = input.translation.remote_ends_here.get(key);
                    let remote_mtu = match remote_here {
                        Some(entry) => entry_mtu(input, entry),
                        None => seen.remote_mtu,
                    };
                    let mut conditions = vec![
                        condition_json(seen, condition::READY, ready, reason, &message, input.now),
                        condition_json(
                            seen,
                            condition::CONNECTED,
                            connected,
                            c_reason,
                            &c_message,
                            input.now,
                        ),
                    ];
                    if let Some((same, m_reason, m_message)) = mtus_match(local_mtu, remote_mtu) {
                        conditions.push(condition_json(
                            seen,
                            condition::MTUS_MATCH,
                            same,
                            m_reason,
                            &m_message,
                            input.now,
                        ));
                    }
                    let mut significant = json!({
                        "conditions": conditions,
                        "endpointSeen": stats.as_ref().and_then(|s| s.endpoint.clone()),
                        "mtu": local_mtu,
                    });
                    let mut counters = json!({
                        "latestHandshake": stats.as_ref().and_then(|s| s.handshake).map(timestamp),
                        "transfer": stats.as_ref().map(|s| json!({"rxBytes": s.rx, "txBytes": s.tx})),
                    });
                    if let Some(entry) = remote_here {
                        let (end, end_counters) = remote_end(
                            input.node,
                            entry_stats(input, entry).as_ref(),
                            entry_mtu(input, entry),
                        );
                        significant["remoteEnd"] = end;
                        counters["remoteEnd"] = end_counters;
                    }
                    report.peers.insert(
                        key.clone(),
                        ObjectStatus {
                            significant: strip_nulls(significant),
                            counters: strip_nulls(counters),
                        },
                    );
                }
                PeerSide::Remote => {
                    let mtu = input
                        .translation
                        .peer_entries
                        .get(key)
                        .and_then(|entry| entry_mtu(input, entry));
                    let (end, end_counters) = remote_end(input.node, stats.as_ref(), mtu);
                    let significant = json!({ "remoteEnd": end });
                    let counters = json!({ "remoteEnd": end_counters });
                    report.peers.insert(
                        key.clone(),
                        ObjectStatus {
                            significant: strip_nulls(significant),
                            counters: strip_nulls(counters),
                        },
                    );
                }
            }
        }

        for (key, seen) in input.routes {
            let problem = input
                .translation
                .route_problems
                .get(key)
                .map(|p| (p.reason, p.message.clone()));
            let Some((ready, reason, message)) =
                problem.map(|(r, m)| (false, r, m)).or_else(|| {
                    let route = input.translation.route_keys.get(key)?;
                    let conflict = input.conflicts.iter().find(|c| match c {
                        Conflict::RouteTaken { key, .. }
                        | Conflict::RouteDeviceUnavailable { key, .. } => key == route,
                        Conflict::InterfaceNameTaken { .. } => false,
                    });
                    let failure = input
                        .errors
                        .iter()
                        .find(|f| f.route.as_ref() == Some(route));
                    let installed = input.observed.is_some_and(|o| {
                        o.routes.iter().any(|(id, r)| {
                            id.table == route.table
                                && id.destination == route.destination
                                && r.ownership == Ownership::Owned
                        })
                    });
                    Some(match (conflict, failure) {
                        (Some(c), _) => (
                            false,
                            c.reason(),
                            format!("{c}: kwire never replaces a route it did not create"),
                        ),
                        (None, Some(f)) => (false, f.reason, f.message.clone()),
                        (None, None) if installed => (
                            true,
                            "Installed",
                            format!("installed on node {}", input.node),
                        ),
                        (None, None) => (
                            false,
                            "Pending",
                            "the route is not installed yet".to_string(),
                        ),
                    })
                })
            else {
                continue;
            };
            let significant = json!({ "conditions": [condition_json(seen, condition::READY, ready, reason, &message, input.now)] });
            report.routes.insert(
                key.clone(),
                ObjectStatus {
                    significant,
                    counters: json!({}),
                },
            );
        }
        report
    }
}

/// How a member's device sees one mesh peer, by the same rules as a Peer's `Connected`
/// condition ([`connectivity`]): a handshake within [`STALE_AFTER`] is connected; none yet
/// is connecting for [`FIRST_HANDSHAKE_GRACE`] after the peer was first wanted, then stale.
pub fn mesh_peer_state(
    handshake: Option<SystemTime>,
    wanted_since: Option<SystemTime>,
    now: SystemTime,
) -> PeerState {
    match handshake {
        Some(at) if now.duration_since(at).unwrap_or_default() <= STALE_AFTER => {
            PeerState::Connected
        }
        Some(_) => PeerState::Stale,
        None => {
            let waited = wanted_since
                .and_then(|s| now.duration_since(s).ok())
                .unwrap_or_default();
            if waited < FIRST_HANDSHAKE_GRACE {
                PeerState::Connecting
            } else {
                PeerState::Stale
            }
        }
    }
}

/// Adds `status.mesh` (`kwire_mesh::api::MemberPeersStatus`) to the report of every generated member
/// Interface of this node (`locals`) that the report covers: the other live members of its
/// Mesh (`members`, from the Mesh member watches) that its device is told to have as peers,
/// each counted as connected, connecting or stale; and `departed`, the members being
/// deleted whose key its device, as observed, no longer has (the operator waits for those
/// before it lets a leaver go, decision 0010). `wanted_since` says when each peer entry was
/// first wanted (for the grace of a first handshake). Counts and capped names only, in a
/// fixed order: an unchanged device gives an unchanged status, so nothing is written.
pub fn add_mesh_status(
    report: &mut StatusReport,
    input: &ReportInput<'_>,
    locals: &[&Interface],
    members: &[&Interface],
    wanted_since: &BTreeMap<PeerEntry, SystemTime>,
) {
    for local in locals {
        // Every role reports (member, hub, spoke, gateway): a leaver is released only once
        // every other member, whatever its role, confirmed it dropped it.
        if local.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(mesh) = mesh_identity(local) else {
            continue;
        };
        let key = (local.namespace().unwrap_or_default(), local.name_any());
        let Some(device) = input.translation.devices.get(&key) else {
            continue;
        };
        let Some(status) = report.interfaces.get_mut(&key) else {
            continue;
        };
        let wanted = input
            .translation
            .desired
            .devices
            .get(device)
            .map(|d| &d.peers);
        // The device as observed; `None` until it exists.
        let observed = input
            .observed
            .and_then(|o| o.devices.get(device))
            .and_then(|d| d.wireguard.as_ref());
        let mut peers: Vec<(String, PeerState)> = Vec::new();
        let mut departed: Vec<String> = Vec::new();
        for other in members {
            if mesh_identity(other).as_ref() != Some(&mesh) || other.name_any() == key.1 {
                continue;
            }
            let public_key: Option<PublicKey> = other
                .status
                .as_ref()
                .and_then(|s| s.public_key.as_deref())
                .and_then(|k| k.parse().ok());
            if other.metadata.deletion_timestamp.is_some() {
                let dropped = observed
                    .is_some_and(|wg| public_key.is_none_or(|k| !wg.peers.contains_key(&k)));
                if dropped {
                    departed.push(other.name_any());
                }
                continue;
            }
            let Some(public_key) = public_key.filter(|k| wanted.is_some_and(|w| w.contains_key(k)))
            else {
                continue;
            };
            let entry = (device.clone(), public_key);
            let handshake = if input.fresh.contains(&entry) {
                None
            } else {
                observed
                    .and_then(|wg| wg.peers.get(&public_key))
                    .and_then(|p| p.stats.last_handshake)
            };
            let state = mesh_peer_state(handshake, wanted_since.get(&entry).copied(), input.now);
            peers.push((other.spec.node_name.to_string(), state));
        }
        let mut summary = member_peers_status(peers.iter().map(|(n, s)| (n.as_str(), *s)));
        departed.sort_unstable();
        departed.truncate(STATUS_NAMES_CAP);
        summary.departed = departed;
        status.significant["mesh"] =
            serde_json::to_value(&summary).expect("a MemberPeersStatus serializes");
    }
}

/// `status.remoteEnd` from the node of a Peer's remote end: what matters at once, and
/// counters.
fn remote_end(node: &str, stats: Option<&Stats>, mtu: Option<u32>) -> (Value, Value) {
    (
        json!({ "node": node, "configured": stats.is_some(), "mtu": mtu }),
        json!({
            "latestHandshake": stats.and_then(|s| s.handshake).map(timestamp),
            "transfer": stats.map(|s| json!({"rxBytes": s.rx, "txBytes": s.tx})),
        }),
    )
}

/// The `MTUsMatch` condition of a Peer from the MTUs of its two devices: `None` (no
/// condition) until both are known.
pub fn mtus_match(local: Option<u32>, remote: Option<u32>) -> Option<(bool, &'static str, String)> {
    let (local, remote) = (local?, remote?);
    Some(if local == remote {
        (true, "SameMTU", format!("both ends use MTU {local}"))
    } else {
        let smaller = local.min(remote);
        (
            false,
            "MTUMismatch",
            format!(
                "the local device has MTU {local} and the remote device {remote}: packets of up to {} bytes from the side with the larger MTU may not fit the other side's path and are fragmented or dropped. Set spec.mtu: {smaller} on both Interfaces, or give both nodes' underlay links the same MTU (without spec.mtu each end uses its underlay's MTU minus 80; status.device.mtuSource on each Interface says which link)",
                local.max(remote)
            ),
        )
    })
}

/// The MTU of the device of a peer entry, as observed.
fn entry_mtu(input: &ReportInput<'_>, entry: &PeerEntry) -> Option<u32> {
    input
        .observed?
        .devices
        .get(&entry.0)
        .map(|d| d.mtu)
        .filter(|m| *m > 0)
}

struct Stats {
    handshake: Option<SystemTime>,
    rx: u64,
    tx: u64,
    endpoint: Option<String>,
}

fn peer_stats(input: &ReportInput<'_>, key: &ObjectKey) -> Option<Stats> {
    entry_stats(input, input.translation.peer_entries.get(key)?)
}

fn entry_stats(input: &ReportInput<'_>, entry: &PeerEntry) -> Option<Stats> {
    if input.fresh.contains(entry) {
        return Some(Stats {
            handshake: None,
            rx: 0,
            tx: 0,
            endpoint: None,
        });
    }
    let observed = input.observed?;
    let (device, public_key) = entry;
    let peer = observed
        .devices
        .get(device)?
        .wireguard
        .as_ref()?
        .peers
        .get(public_key)?;
    Some(Stats {
        handshake: peer.stats.last_handshake,
        rx: peer.stats.rx_bytes,
        tx: peer.stats.tx_bytes,
        endpoint: peer.config.endpoint.map(|e| e.to_string()),
    })
}

/// The Peers whose status is not written yet: their entry on this node was configured less
/// than [`FIRST_HANDSHAKE_HOLD`] ago (`configured_at`: when this daemon configured it) and
/// has no handshake yet. Returns them and when the earliest of those waits ends.
pub fn held_peers(
    input: &ReportInput<'_>,
    configured_at: &BTreeMap<PeerEntry, Instant>,
    now: Instant,
) -> (BTreeSet<ObjectKey>, Option<Instant>) {
    let mut held = BTreeSet::new();
    let mut until: Option<Instant> = None;
    for (key, entry) in &input.translation.peer_entries {
        let Some(end) = configured_at
            .get(entry)
            .map(|at| *at + FIRST_HANDSHAKE_HOLD)
        else {
            continue;
        };
        let handshake = peer_stats(input, key).and_then(|s| s.handshake);
        if now < end && handshake.is_none() {
            held.insert(key.clone());
            until = Some(until.map_or(end, |u| u.min(end)));
        }
    }
    (held, until)
}

/// The generated member Interfaces whose status is not written yet, as a new Peer's
/// ([`held_peers`]): a peer entry was added to the member's device less than
/// [`FIRST_HANDSHAKE_HOLD`] ago (`configured_at`) and has no handshake yet. Without it a
/// join would make every member write twice, its new peer `connecting` and a moment later
/// `connected`. Only Interfaces that report `status.mesh`. Returns them and when the
/// earliest of those waits ends.
pub fn held_members(
    report: &StatusReport,
    input: &ReportInput<'_>,
    configured_at: &BTreeMap<PeerEntry, Instant>,
    now: Instant,
) -> (BTreeSet<ObjectKey>, Option<Instant>) {
    let mut held = BTreeSet::new();
    let mut until: Option<Instant> = None;
    for (key, status) in &report.interfaces {
        if status.significant.get("mesh").is_none() {
            continue;
        }
        let Some(device) = input.translation.devices.get(key) else {
            continue;
        };
        let first = configured_at
            .iter()
            .filter(|(entry, at)| {
                &entry.0 == device
                    && now < **at + FIRST_HANDSHAKE_HOLD
                    && entry_stats(input, entry)
                        .and_then(|s| s.handshake)
                        .is_none()
            })
            .map(|(_, at)| *at + FIRST_HANDSHAKE_HOLD)
            .min();
        if let Some(end) = first {
            held.insert(key.clone());
            until = Some(until.map_or(end, |u| u.min(end)));
        }
    }
    (held, until)
}

/// The `Connected` condition from the latest handshake and the bytes sent to the peer.
pub fn connectivity(
    handshake: Option<SystemTime>,
    sent: Option<u64>,
    configured_since: Option<SystemTime>,
    now: SystemTime,
) -> (bool, &'static str, String) {
    match handshake {
        Some(at) => {
            let age = now.duration_since(at).unwrap_or_default();
            if age <= STALE_AFTER {
                (
                    true,
                    "Connected",
                    format!("latest handshake {}s ago", age.as_secs()),
                )
            } else {
                (
                    false,
                    "Stale",
                    format!(
                        "no handshake for {}s (WireGuard drops a session after {}s without one): is the remote up and its endpoint reachable?",
                        age.as_secs(),
                        STALE_AFTER.as_secs()
                    ),
                )
            }
        }
        None => {
            let waited = configured_since
                .and_then(|s| now.duration_since(s).ok())
                .unwrap_or_default();
            if waited < FIRST_HANDSHAKE_GRACE {
                (
                    false,
                    "Connecting",
                    "waiting for the first handshake".to_string(),
                )
            } else if sent == Some(0) {
                // WireGuard only shakes hands when it has something to send.
                (
                    false,
                    "Idle",
                    "nothing was sent to the peer yet, so no handshake was attempted: send traffic, or set spec.persistentKeepalive to keep the link up".to_string(),
                )
            } else {
                (
                    false,
                    "NeverHandshaked",
                    format!(
                        "no handshake in {}s since the peer was configured: check the remote's endpoint, port and public key, and that UDP reaches it",
                        waited.as_secs()
                    ),
                )
            }
        }
    }
}

fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// Whether `new` holds a field (at any depth) that `old` does not: e.g. the first
/// `latestHandshake` of a link.
fn has_new_field(old: &Value, new: &Value) -> bool {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => n
            .iter()
            .any(|(k, v)| o.get(k).is_none_or(|ov| has_new_field(ov, v))),
        (_, Value::Object(n)) => !n.is_empty(),
        _ => false,
    }
}

/// Whether `new` must be written, given what was written last and how long ago: at once
/// when something significant changed or a counter appeared (a first handshake is news,
/// its tenth refresh is not); changed counters at most every [`COUNTER_INTERVAL`].
pub fn due(last: Option<(&ObjectStatus, Duration)>, new: &ObjectStatus) -> bool {
    match last {
        None => true,
        Some((last, _)) if last.significant != new.significant => true,
        Some((last, age)) => {
            last.counters != new.counters
                && (age >= COUNTER_INTERVAL || has_new_field(&last.counters, &new.counters))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn a_handshake_within_reject_after_time_is_connected() {
        let (ok, reason, _) = connectivity(Some(at(0)), Some(1), Some(at(0)), at(179));
        assert!(ok);
        assert_eq!(reason, "Connected");
    }

    #[test]
    fn a_handshake_older_than_reject_after_time_is_stale() {
        let (ok, reason, message) = connectivity(Some(at(0)), Some(1), Some(at(0)), at(181));
        assert!(!ok);
        assert_eq!(reason, "Stale");
        assert!(message.contains("181s"));
    }

    #[test]
    fn no_handshake_is_connecting_then_never_handshaked() {
        assert_eq!(
            connectivity(None, Some(148), Some(at(0)), at(30)).1,
            "Connecting"
        );
        let (ok, reason, message) = connectivity(None, Some(148), Some(at(0)), at(61));
        assert!(!ok);
        assert_eq!(reason, "NeverHandshaked");
        assert!(message.contains("endpoint"));
    }

    #[test]
    fn a_peer_nothing_was_sent_to_is_idle_rather_than_unreachable() {
        assert_eq!(
            connectivity(None, Some(0), Some(at(0)), at(30)).1,
            "Connecting"
        );
        let (ok, reason, message) = connectivity(None, Some(0), Some(at(0)), at(61));
        assert!(!ok);
        assert_eq!(reason, "Idle");
        assert!(message.contains("persistentKeepalive"), "{message}");
    }

    #[test]
    fn a_first_handshake_is_written_at_once_and_later_counters_only_every_interval() {
        let status = |counters: Value| ObjectStatus {
            significant: json!({"remoteEnd": {"node": "b", "configured": true}}),
            counters,
        };
        let configured = status(json!({"remoteEnd": {"transfer": {"rxBytes": 0, "txBytes": 0}}}));
        let shaken = status(json!({"remoteEnd": {
            "latestHandshake": "2027-01-15T08:00:00Z",
            "transfer": {"rxBytes": 92, "txBytes": 148},
        }}));
        let later = status(json!({"remoteEnd": {
            "latestHandshake": "2027-01-15T08:02:00Z",
            "transfer": {"rxBytes": 9200, "txBytes": 14800},
        }}));
        let soon = Duration::from_secs(1);
        assert!(due(None, &configured));
        assert!(!due(Some((&configured, soon)), &configured));
        assert!(due(Some((&configured, soon)), &shaken), "first handshake");
        assert!(!due(Some((&shaken, soon)), &later), "only counters moved");
        assert!(due(Some((&shaken, COUNTER_INTERVAL)), &later));
        let mut flipped = shaken.clone();
        flipped.significant = json!({"remoteEnd": {"node": "b", "configured": false}});
        assert!(due(Some((&shaken, soon)), &flipped));
    }

    /// A generated Interface of Mesh `overlay` (controller uid `uid`) on `node`, with the
    /// public key `[key; 32]` when `key` is set, deleted when `deleting`.
    fn member(name: &str, node: &str, uid: &str, key: Option<u8>, deleting: bool) -> Interface {
        use crate::model::PublicKey;
        let mut i: Interface = serde_json::from_value(json!({
            "apiVersion": "kwire.dev/v1alpha1",
            "kind": "Interface",
            "metadata": {
                "name": name,
                "namespace": "ns",
                "labels": {"kwire.dev/mesh": "overlay", "kwire.dev/mesh-role": "member"},
                "ownerReferences": [{"apiVersion": "kwire.dev/v1alpha1", "kind": "Mesh",
                    "name": "overlay", "uid": uid, "controller": true}],
            },
            "spec": {"nodeName": node, "listenPort": 51820},
        }))
        .unwrap();
        if deleting {
            i.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
            );
        }
        if let Some(k) = key {
            i.status = Some(kwire_crds::v1alpha1::InterfaceStatus {
                public_key: Some(PublicKey::from_bytes([k; 32]).to_base64()),
                ..Default::default()
            });
        }
        i
    }

    #[test]
    fn a_member_reports_its_mesh_peers_by_state_and_the_leavers_its_device_dropped() {
        use crate::model::{
            DesiredDevice, DesiredNode, IfaceName, PeerConfig, PrivateKey, PublicKey,
        };
        let device = IfaceName::new("wgmesh").unwrap();
        let key = |k: u8| PublicKey::from_bytes([k; 32]);
        // The device is told to have b, c, d and f (f is still on it: being deleted, not
        // dropped yet).
        let mut wanted = DesiredDevice {
            owner: "ns/m-a".parse().unwrap(),
            private_key: PrivateKey::from_bytes([1; 32]),
            listen_port: Some(51820),
            addresses: Default::default(),
            mtu: None,
            peers: Default::default(),
            forwarding: false,
        };
        for k in [2, 3, 4, 6] {
            wanted.peers.insert(key(k), PeerConfig::default());
        }
        let mut desired = DesiredNode::default();
        desired.devices.insert(device.clone(), wanted);
        let mut observed = crate::fixtures::converged(&desired);
        let now = at(1000);
        let wg = observed
            .devices
            .get_mut(&device)
            .unwrap()
            .wireguard
            .as_mut()
            .unwrap();
        wg.peers.get_mut(&key(2)).unwrap().stats.last_handshake = Some(at(990));
        wg.peers.get_mut(&key(4)).unwrap().stats.last_handshake = Some(at(500));
        let mut translation = Translation {
            desired,
            ..Translation::default()
        };
        let local_key = ("ns".to_string(), "m-a".to_string());
        translation
            .devices
            .insert(local_key.clone(), device.clone());
        let local = member("m-a", "a", "uid", Some(1), false);
        let mut members = vec![
            member("m-a", "a", "uid", Some(1), false),
            member("m-b", "b", "uid", Some(2), false),
            // Wanted 30 s ago, no handshake yet.
            member("m-c", "c", "uid", Some(3), false),
            // Its latest handshake is 500 s old.
            member("m-d", "d", "uid", Some(4), false),
            // Leaving: gone from the device, so acknowledged.
            member("m-e", "e", "uid", Some(5), true),
            // Leaving, still on the device: not yet.
            member("m-f", "f", "uid", Some(6), true),
            // Leaving without ever having had a key: never a peer.
            member("m-g", "g", "uid", None, true),
            // Another Mesh of the same label (an earlier incarnation): ignored.
            member("m-x", "x", "old-uid", Some(9), false),
            // No key yet: not a peer yet.
            member("m-h", "h", "uid", None, false),
        ];
        let since: BTreeMap<PeerEntry, SystemTime> = [
            ((device.clone(), key(2)), at(0)),
            ((device.clone(), key(3)), at(970)),
            ((device.clone(), key(4)), at(0)),
        ]
        .into();
        // `status.mesh` as `local`'s daemon reports it (`Null` when it writes none).
        let build = |local: &Interface, members: &[Interface], observed: Option<&ObservedNode>| {
            let input = ReportInput {
                node: "a",
                translation: &translation,
                observed,
                fresh: &BTreeSet::new(),
                conflicts: &[],
                errors: &[],
                now,
                configured_since: &BTreeMap::new(),
                interfaces: &BTreeMap::new(),
                peers: &BTreeMap::new(),
                routes: &BTreeMap::new(),
            };
            let mut report = StatusReport::default();
            report.interfaces.insert(
                local_key.clone(),
                ObjectStatus {
                    significant: json!({}),
                    counters: json!({}),
                },
            );
            let members: Vec<&Interface> = members.iter().collect();
            add_mesh_status(&mut report, &input, &[local], &members, &since);
            report.interfaces[&local_key].significant["mesh"].clone()
        };
        let mesh = build(&local, &members, Some(&observed));
        assert_eq!(
            mesh,
            json!({"peers": 3, "connected": 1, "connecting": 1, "stale": 1,
                   "unhealthy": ["d", "c"], "departed": ["m-e", "m-g"]})
        );
        // The same members in another order give the same status (nothing to write).
        members.reverse();
        assert_eq!(build(&local, &members, Some(&observed)), mesh);
        // A gateway, hub or spoke reports the same way as a member: the operator waits for
        // every role's confirmation before it lets a leaver go.
        for role in ["gateway", "hub", "spoke"] {
            let mut other_role = local.clone();
            other_role
                .labels_mut()
                .insert("kwire.dev/mesh-role".into(), role.into());
            assert_eq!(
                build(&other_role, &members, Some(&observed)),
                mesh,
                "{role}"
            );
        }
        // Before the device is observed, no leaver is acknowledged.
        assert!(build(&local, &members, None).get("departed").is_none());
        // An Interface that is not a generated member gets no `status.mesh`.
        let mut hand_written = local.clone();
        hand_written.metadata.owner_references = None;
        assert!(build(&hand_written, &members, Some(&observed)).is_null());
    }

    #[test]
    fn a_member_waits_for_its_new_mesh_peers_first_handshake_like_a_peer() {
        use crate::model::{IfaceName, PublicKey};
        let device = IfaceName::new("wgmesh").unwrap();
        let peer = PublicKey::from_bytes([2; 32]);
        let key = ("ns".to_string(), "m-a".to_string());
        let mut translation = Translation::default();
        translation.devices.insert(key.clone(), device.clone());
        let report = |mesh: bool| {
            let mut r = StatusReport::default();
            let significant = if mesh {
                json!({"mesh": {"peers": 1}})
            } else {
                json!({})
            };
            r.interfaces.insert(
                key.clone(),
                ObjectStatus {
                    significant,
                    counters: json!({}),
                },
            );
            r
        };
        let t0 = Instant::now();
        let configured_at: BTreeMap<PeerEntry, Instant> = [((device.clone(), peer), t0)].into();
        let held = |handshake: Option<SystemTime>, mesh: bool, now: Instant| {
            let observed = observed_with_peer("wgmesh", 1, peer, handshake);
            let input = ReportInput {
                node: "a",
                translation: &translation,
                observed: Some(&observed),
                fresh: &BTreeSet::new(),
                conflicts: &[],
                errors: &[],
                now: at(0),
                configured_since: &BTreeMap::new(),
                interfaces: &BTreeMap::new(),
                peers: &BTreeMap::new(),
                routes: &BTreeMap::new(),
            };
            held_members(&report(mesh), &input, &configured_at, now)
        };
        let soon = t0 + Duration::from_millis(10);
        assert_eq!(
            held(None, true, soon),
            ([key.clone()].into(), Some(t0 + FIRST_HANDSHAKE_HOLD))
        );
        assert!(held(Some(at(0)), true, soon).0.is_empty(), "shook hands");
        assert!(
            held(None, true, t0 + FIRST_HANDSHAKE_HOLD).0.is_empty(),
            "waited long enough"
        );
        assert!(held(None, false, soon).0.is_empty(), "not a mesh member");
    }

    #[test]
    fn a_mesh_peer_is_connecting_within_the_grace_then_stale() {
        assert_eq!(
            mesh_peer_state(Some(at(0)), None, at(180)),
            PeerState::Connected
        );
        assert_eq!(
            mesh_peer_state(Some(at(0)), None, at(181)),
            PeerState::Stale
        );
        assert_eq!(
            mesh_peer_state(None, Some(at(0)), at(59)),
            PeerState::Connecting
        );
        assert_eq!(mesh_peer_state(None, Some(at(0)), at(60)), PeerState::Stale);
    }

    /// An observation of device `name` (private key `[own; 32]`, port `own`) with one peer,
    /// `peer`, whose latest handshake is `handshake`.
    fn observed_with_peer(
        name: &str,
        own: u8,
        peer: crate::model::PublicKey,
        handshake: Option<SystemTime>,
    ) -> ObservedNode {
        use crate::model::{DesiredDevice, DesiredNode, IfaceName, PeerConfig, PrivateKey};
        let device = IfaceName::new(name).unwrap();
        let mut wanted = DesiredDevice {
            owner: format!("ns/{name}").parse().unwrap(),
            private_key: PrivateKey::from_bytes([own; 32]),
            listen_port: Some(own.into()),
            addresses: Default::default(),
            mtu: None,
            peers: Default::default(),
            forwarding: false,
        };
        wanted.peers.insert(peer, PeerConfig::default());
        let mut desired = DesiredNode::default();
        desired.devices.insert(device.clone(), wanted);
        let mut observed = crate::fixtures::converged(&desired);
        observed
            .devices
            .get_mut(&device)
            .unwrap()
            .wireguard
            .as_mut()
            .unwrap()
            .peers
            .get_mut(&peer)
            .unwrap()
            .stats
            .last_handshake = handshake;
        observed
    }

    /// A node with one local Peer `ns/a-to-b` on wg0, and an observation of it with
    /// `handshake` as its latest handshake.
    fn one_local_peer(
        handshake: Option<SystemTime>,
    ) -> (Translation, ObservedNode, ObjectKey, PeerEntry) {
        use crate::model::{IfaceName, PublicKey};
        let key = ("ns".to_string(), "a-to-b".to_string());
        let device = IfaceName::new("wg0").unwrap();
        let remote = PublicKey::from_bytes([2; 32]);
        let mut translation = Translation::default();
        translation.peer_sides.insert(key.clone(), PeerSide::Local);
        translation
            .peer_entries
            .insert(key.clone(), (device.clone(), remote));
        let observed = observed_with_peer("wg0", 1, remote, handshake);
        (translation, observed, key, (device, remote))
    }

    #[test]
    fn a_peer_entry_created_after_the_observation_is_configured_and_not_connected_yet() {
        // The observation shows a handshake: the Peer's previous incarnation's.
        let (translation, observed, key, entry) = one_local_peer(Some(at(0)));
        let peers: BTreeMap<ObjectKey, Seen> = [(key.clone(), Seen::default())].into();
        let build = |fresh: &BTreeSet<PeerEntry>| {
            StatusReport::build(&ReportInput {
                node: "a",
                translation: &translation,
                observed: Some(&observed),
                fresh,
                conflicts: &[],
                errors: &[],
                now: at(1),
                configured_since: &BTreeMap::new(),
                interfaces: &BTreeMap::new(),
                peers: &peers,
                routes: &BTreeMap::new(),
            })
        };
        let reasons = |report: &StatusReport| -> Vec<String> {
            report.peers[&key].significant["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["reason"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            reasons(&build(&BTreeSet::new())),
            ["Configured", "Connected"]
        );
        let recreated = [entry].into();
        assert_eq!(reasons(&build(&recreated)), ["Configured", "Connecting"]);
    }

    #[test]
    fn a_node_holding_both_ends_of_a_peer_reports_its_conditions_and_its_remote_end() {
        use crate::model::{IfaceName, PublicKey};
        let (mut translation, mut observed, key, _) = one_local_peer(Some(at(0)));
        // The remote end: device wg1 on this node too, with the local end's key as its peer.
        let far = IfaceName::new("wg1").unwrap();
        let near_key = PublicKey::from_bytes([7; 32]);
        observed
            .devices
            .extend(observed_with_peer("wg1", 2, near_key, Some(at(0))).devices);
        translation
            .remote_ends_here
            .insert(key.clone(), (far, near_key));
        let peers: BTreeMap<ObjectKey, Seen> = [(key.clone(), Seen::default())].into();
        let report = StatusReport::build(&ReportInput {
            node: "a",
            translation: &translation,
            observed: Some(&observed),
            fresh: &BTreeSet::new(),
            conflicts: &[],
            errors: &[],
            now: at(1),
            configured_since: &BTreeMap::new(),
            interfaces: &BTreeMap::new(),
            peers: &peers,
            routes: &BTreeMap::new(),
        });
        let status = &report.peers[&key];
        let reasons: Vec<&str> = status.significant["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["reason"].as_str().unwrap())
            .collect();
        assert_eq!(reasons, ["Configured", "Connected", "SameMTU"]);
        assert_eq!(
            status.significant["remoteEnd"],
            json!({"node": "a", "configured": true, "mtu": 1420})
        );
        assert_eq!(status.significant["mtu"], 1420);
        let mtu = &status.significant["conditions"][2];
        assert_eq!(
            (mtu["type"].as_str(), mtu["status"].as_str()),
            (Some("MTUsMatch"), Some("True")),
            "both ends are on this node and both are known: {mtu}"
        );
        assert!(status.counters["remoteEnd"]["latestHandshake"].is_string());
    }

    #[test]
    fn a_just_configured_peer_waits_for_its_first_handshake_but_no_longer_than_the_hold() {
        let (translation, no_handshake, key, entry) = one_local_peer(None);
        let (_, handshake, _, _) = one_local_peer(Some(at(0)));
        let peers: BTreeMap<ObjectKey, Seen> = [(key.clone(), Seen::default())].into();
        let not_fresh = BTreeSet::new();
        let fresh: BTreeSet<PeerEntry> = [entry.clone()].into();
        let (none_since, no_objects) = (BTreeMap::new(), BTreeMap::new());
        let input = |observed, fresh| ReportInput {
            node: "a",
            translation: &translation,
            observed: Some(observed),
            fresh,
            conflicts: &[],
            errors: &[],
            now: at(1),
            configured_since: &none_since,
            interfaces: &no_objects,
            peers: &peers,
            routes: &no_objects,
        };
        let t0 = Instant::now();
        let soon = t0 + Duration::from_millis(10);
        let configured_at: BTreeMap<PeerEntry, Instant> = [(entry, t0)].into();
        let held = |observed, fresh, now| held_peers(&input(observed, fresh), &configured_at, now);

        let waiting = [key.clone()].into();
        let end = Some(t0 + FIRST_HANDSHAKE_HOLD);
        assert_eq!(held(&no_handshake, &not_fresh, soon), (waiting, end));
        assert_eq!(
            held(&handshake, &not_fresh, soon),
            (BTreeSet::new(), None),
            "the handshake came: written at once"
        );
        assert_eq!(
            held(&handshake, &fresh, soon).0,
            [key].into(),
            "a handshake observed before the entry was configured is not its own"
        );
        assert_eq!(
            held(&no_handshake, &not_fresh, t0 + FIRST_HANDSHAKE_HOLD),
            (BTreeSet::new(), None),
            "the hold is over: written without a handshake"
        );
        assert_eq!(
            held_peers(&input(&no_handshake, &not_fresh), &BTreeMap::new(), soon),
            (BTreeSet::new(), None),
            "an entry this daemon did not just configure (found at start) is never held"
        );
    }

    #[test]
    fn the_remote_node_of_an_unresolved_peer_writes_no_condition() {
        use super::super::desired::Problem;
        let key = ("ns".to_string(), "a-to-b".to_string());
        let mut translation = Translation::default();
        translation.peer_problems.insert(
            key.clone(),
            Problem {
                reason: "WaitingForOperator",
                message: "not resolved yet".into(),
            },
        );
        translation.peer_sides.insert(key.clone(), PeerSide::Remote);
        let peers: BTreeMap<ObjectKey, Seen> = [(key.clone(), Seen::default())].into();
        let report = StatusReport::build(&ReportInput {
            node: "b",
            translation: &translation,
            observed: None,
            fresh: &BTreeSet::new(),
            conflicts: &[],
            errors: &[],
            now: at(0),
            configured_since: &BTreeMap::new(),
            interfaces: &BTreeMap::new(),
            peers: &peers,
            routes: &BTreeMap::new(),
        });
        assert_eq!(
            report.peers[&key].significant,
            json!({"remoteEnd": {"node": "b", "configured": false}})
        );
    }

    #[test]
    fn an_mtu_mismatch_is_reported_only_when_both_ends_are_known_and_differ() {
        assert_eq!(mtus_match(None, Some(1420)), None);
        assert_eq!(mtus_match(Some(1420), None), None);
        let (same, reason, message) = mtus_match(Some(1420), Some(1420)).unwrap();
        assert!(same);
        assert_eq!(reason, "SameMTU");
        assert!(message.contains("1420"), "{message}");
        let (same, reason, message) = mtus_match(Some(1420), Some(1320)).unwrap();
        assert!(!same);
        assert_eq!(reason, "MTUMismatch");
        for part in [
            "MTU 1420",
            "remote device 1320",
            "spec.mtu: 1320",
            "mtuSource",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
    }

    /// The local side's report of `ns/a-to-b` when the remote end's node reported
    /// `remote_mtu` (the local device has the converged fixture's 1420).
    fn local_report_with_remote_mtu(remote_mtu: Option<u32>) -> ObjectStatus {
        let (translation, observed, key, _) = one_local_peer(Some(at(0)));
        let peers: BTreeMap<ObjectKey, Seen> = [(
            key.clone(),
            Seen {
                remote_mtu,
                ..Seen::default()
            },
        )]
        .into();
        let mut report = StatusReport::build(&ReportInput {
            node: "a",
            translation: &translation,
            observed: Some(&observed),
            fresh: &BTreeSet::new(),
            conflicts: &[],
            errors: &[],
            now: at(1),
            configured_since: &BTreeMap::new(),
            interfaces: &BTreeMap::new(),
            peers: &peers,
            routes: &BTreeMap::new(),
        });
        report.peers.remove(&key).unwrap()
    }

    #[test]
    fn the_local_side_sets_mtus_match_from_the_mtu_the_remote_end_reported() {
        let types = |s: &ObjectStatus| -> Vec<String> {
            s.significant["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["type"].as_str().unwrap().to_string())
                .collect()
        };
        let unknown = local_report_with_remote_mtu(None);
        assert_eq!(
            types(&unknown),
            ["Ready", "Connected"],
            "no condition while unknown"
        );
        assert_eq!(unknown.significant["mtu"], 1420);

        let differ = local_report_with_remote_mtu(Some(1320));
        let c = &differ.significant["conditions"][2];
        assert_eq!(c["type"], "MTUsMatch");
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "MTUMismatch");
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("MTU 1420 and the remote device 1320")
        );
        // Ready and Connected are not affected: the link works, its large packets may not.
        assert_eq!(differ.significant["conditions"][0]["status"], "True");
        assert_eq!(differ.significant["conditions"][1]["status"], "True");

        let same = local_report_with_remote_mtu(Some(1420));
        assert_eq!(same.significant["conditions"][2]["status"], "True");
    }

    #[test]
    fn the_remote_end_reports_its_device_mtu_and_the_interface_its_mtu_and_where_it_comes_from() {
        use crate::model::{DesiredDevice, DesiredNode, IfaceName, PublicKey};
        let key = ("ns".to_string(), "a-to-b".to_string());
        let device = IfaceName::new("wg1").unwrap();
        let near = PublicKey::from_bytes([7; 32]);
        let mut translation = Translation::default();
        translation.peer_sides.insert(key.clone(), PeerSide::Remote);
        translation
            .peer_entries
            .insert(key.clone(), (device.clone(), near));
        let iface = ("ns".to_string(), "b".to_string());
        translation.devices.insert(iface.clone(), device.clone());
        let mut observed = observed_with_peer("wg1", 2, near, Some(at(0)));
        observed.devices.get_mut(&device).unwrap().mtu = 1320;
        // The desired device: no spec.mtu, and a default route through a 1400 link.
        let mut desired = DesiredNode::default();
        desired
            .devices
            .insert(device.clone(), DesiredDevice::test("ns/b"));
        translation.desired = desired;
        let mut eth0 = crate::fixtures::foreign_link("veth");
        eth0.mtu = 1400;
        observed
            .devices
            .insert(IfaceName::new("eth0").unwrap(), eth0);
        observed.routes.insert(
            crate::fixtures::route_id("0.0.0.0/0", 0),
            crate::fixtures::foreign_route(3, Some("eth0")),
        );
        let peers: BTreeMap<ObjectKey, Seen> = [(key.clone(), Seen::default())].into();
        let interfaces: BTreeMap<ObjectKey, Seen> = [(iface.clone(), Seen::default())].into();
        let report = StatusReport::build(&ReportInput {
            node: "b",
            translation: &translation,
            observed: Some(&observed),
            fresh: &BTreeSet::new(),
            conflicts: &[],
            errors: &[],
            now: at(1),
            configured_since: &BTreeMap::new(),
            interfaces: &interfaces,
            peers: &peers,
            routes: &BTreeMap::new(),
        });
        assert_eq!(
            report.peers[&key].significant,
            json!({"remoteEnd": {"node": "b", "configured": true, "mtu": 1320}})
        );
        let device_status = &report.interfaces[&iface].significant["device"];
        assert_eq!(device_status["mtu"], 1320);
        assert_eq!(
            device_status["mtuSource"],
            "eth0 (MTU 1400, the link of the default route) minus 80"
        );
    }

    #[test]
    fn nulls_are_dropped_so_a_patch_never_claims_an_absent_field() {
        let v = strip_nulls(json!({"a": null, "b": {"c": null, "d": 1}, "e": [{"f": null}]}));
        assert_eq!(v, json!({"b": {"d": 1}, "e": [{}]}));
    }

    #[test]
    fn a_failed_step_marks_only_its_own_interface_and_route() {
        use crate::model::{DesiredDevice, DesiredNode, IfaceName, RouteKey};
        let key = |n: &str| ("ns".to_string(), n.to_string());
        let dev = |n: &str| IfaceName::new(n).unwrap();
        let mut translation = Translation::default();
        translation.devices.insert(key("good"), dev("wg0"));
        translation.devices.insert(key("busy"), dev("wg1"));
        let route = RouteKey::new(254, "10.9.0.0/24".parse().unwrap());
        translation.route_keys.insert(key("r"), route);
        let mut desired = DesiredNode::default();
        for (name, owner) in [("wg0", "ns/good"), ("wg1", "ns/busy")] {
            desired.devices.insert(
                dev(name),
                DesiredDevice {
                    owner: owner.parse().unwrap(),
                    private_key: crate::model::PrivateKey::from_bytes([1; 32]),
                    listen_port: Some(1),
                    addresses: Default::default(),
                    mtu: None,
                    peers: Default::default(),
                    forwarding: false,
                },
            );
        }
        let observed = crate::fixtures::converged(&desired);
        let errors = vec![
            StepFailure {
                device: Some(dev("wg1")),
                route: None,
                reason: "ListenPortInUse",
                message: "~ wg1: set listen port 1: configuring WireGuard failed: Address in use"
                    .into(),
            },
            StepFailure {
                device: Some(dev("wg0")),
                route: Some(route),
                reason: "KernelRefused",
                message: "+ route 10.9.0.0/24: Network unreachable".into(),
            },
        ];
        let seen: BTreeMap<ObjectKey, Seen> = [key("good"), key("busy")]
            .into_iter()
            .map(|k| (k, Seen::default()))
            .collect();
        let routes: BTreeMap<ObjectKey, Seen> = [(key("r"), Seen::default())].into();
        let report = StatusReport::build(&ReportInput {
            node: "n1",
            translation: &translation,
            observed: Some(&observed),
            fresh: &BTreeSet::new(),
            conflicts: &[],
            errors: &errors,
            now: at(0),
            configured_since: &BTreeMap::new(),
            interfaces: &seen,
            peers: &BTreeMap::new(),
            routes: &routes,
        });
        let ready = |s: &ObjectStatus| s.significant["conditions"][0].clone();
        let good = ready(&report.interfaces[&key("good")]);
        assert_eq!(
            (good["status"].as_str(), good["reason"].as_str()),
            (Some("True"), Some("Configured"))
        );
        let busy = ready(&report.interfaces[&key("busy")]);
        assert_eq!(
            (busy["status"].as_str(), busy["reason"].as_str()),
            (Some("False"), Some("ListenPortInUse"))
        );
        assert!(busy["message"].as_str().unwrap().contains("Address in use"));
        let r = &report.routes[&key("r")].significant["conditions"][0];
        assert_eq!(
            (r["status"].as_str(), r["reason"].as_str()),
            (Some("False"), Some("KernelRefused"))
        );
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let seen = Seen {
            generation: Some(2),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Configured".into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-01-01T00:00:00Z".parse().unwrap(),
                ),
                observed_generation: Some(1),
            }],
            remote_mtu: None,
        };
        let kept = condition_json(&seen, "Ready", true, "Configured", "ok", at(0));
        assert_eq!(kept["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(kept["observedGeneration"], 2);
        let flipped = condition_json(&seen, "Ready", false, "Conflict", "no", at(0));
        assert_ne!(flipped["lastTransitionTime"], "2026-01-01T00:00:00Z");
    }
}
