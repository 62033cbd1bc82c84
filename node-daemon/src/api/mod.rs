//! The Kubernetes side of the node daemon: what this node should have ([`source`],
//! [`desired`]) and what it reports back ([`report`]).

pub mod desired;
pub mod report;
pub mod source;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kube::{Client, ResourceExt as _};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::model::DesiredNode;
use crate::run::NodeStatus;
use crate::run::followup::PeerEntry;
use desired::{ObjectKey, Translation};
use report::{ReportInput, Seen, StatusReport, add_mesh_status, held_members, held_peers};
use source::Source;
use writer::{Kind, StatusWriter, Target};

/// How the API side is set up.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub node_name: String,
    /// Folder of node-local keys (`keyMode: NodeLocal`).
    pub key_dir: PathBuf,
    /// How often the desired state is rebuilt even without a watch event (keys, DNS).
    pub resync_period: Duration,
    /// Where the watches count the objects they receive.
    pub metrics: Arc<Metrics>,
}

/// Why [`drive`] stopped before its shutdown. Each of these leaves the node without
/// updates or without status reports, so the daemon treats it as fatal (see
/// [`crate::tasks`]).
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("the status report task ended (its reconciler is gone)")]
    ReportEnded,
    #[error("the status report task failed: {0}")]
    ReportFailed(String),
    #[error("the watch of {what} ended{}", .panic.as_ref().map(|p| format!(": {p}")).unwrap_or_default())]
    WatchEnded {
        what: &'static str,
        panic: Option<String>,
    },
}

/// Feeds the reconciler with the desired state and writes status from what it observes.
/// Runs until `shutdown` resolves (`Ok`), or until one of its own tasks (the status
/// reports, the watches) ends, which is an error: the daemon must not go on with frozen
/// state. An unreachable API server only delays updates.
///
/// Status is written by a task of its own ([`report`]): a slow status write never holds up
/// the next desired state, and a rebuild (which reads key Secrets) never holds up a status
/// write.
pub async fn drive(
    client: Client,
    config: ApiConfig,
    desired_tx: watch::Sender<Option<DesiredNode>>,
    status_rx: watch::Receiver<NodeStatus>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DriveError> {
    tokio::pin!(shutdown);
    let (source, mut watches) = Source::start(
        client.clone(),
        &config.node_name,
        config.key_dir.clone(),
        config.metrics.clone(),
    )
    .await;
    tracing::info!(node = %config.node_name, "watching this node's Interfaces and their Peers and Routes");
    let (translation_tx, translation_rx) =
        watch::channel(Arc::new(rebuild(&source, &desired_tx, true).await));
    let mut reporting = AbortOnDrop(tokio::spawn(report(
        client,
        config.node_name.clone(),
        source.clone(),
        translation_rx,
        status_rx,
        config.resync_period,
    )));
    let mut tick = tokio::time::interval(config.resync_period);
    tick.reset();
    loop {
        // Key Secrets are read again on the periodic rebuild only (see `source`).
        let reread_keys = tokio::select! {
            () = &mut shutdown => return Ok(()),
            ended = &mut reporting.0 => {
                return Err(match ended {
                    Ok(()) => DriveError::ReportEnded,
                    Err(e) => DriveError::ReportFailed(e.to_string()),
                });
            }
            (what, panic) = watches.ended() => return Err(DriveError::WatchEnded { what, panic }),
            () = source.changed() => false,
            _ = tick.tick() => true,
        };
        let translation = rebuild(&source, &desired_tx, reread_keys).await;
        translation_tx.send_replace(Arc::new(translation));
    }
}

/// Aborts its task when dropped (when [`drive`] returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes status after every new translation, every new observation and every
/// `resync_period`; returns when the reconciler is gone. The writes themselves run beside
/// this loop ([`StatusWriter`]): a new observation is reported while earlier patches are
/// still on their way.
async fn report(
    client: Client,
    node_name: String,
    source: Source,
    mut translations: watch::Receiver<Arc<Translation>>,
    mut status_rx: watch::Receiver<NodeStatus>,
    resync_period: Duration,
) {
    let mut writer = StatusWriter::new(client, &node_name);
    let mut configured_since: BTreeMap<ObjectKey, SystemTime> = BTreeMap::new();
    // When this daemon configured each peer entry it added (for the first-handshake hold).
    let mut configured_at: BTreeMap<PeerEntry, Instant> = BTreeMap::new();
    // When each peer entry of the desired devices was first wanted (the first-handshake
    // grace of mesh peers, which have no Peer object to key `configured_since` by).
    let mut wanted_since: BTreeMap<PeerEntry, SystemTime> = BTreeMap::new();
    // The next moment a held status or a failed write is due again.
    let mut wake: Option<Instant> = None;
    let mut tick = tokio::time::interval(resync_period);
    loop {
        let wake_at = wake.map(tokio::time::Instant::from_std);
        tokio::select! {
            changed = translations.changed() => if changed.is_err() { return },
            changed = status_rx.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
            () = async { tokio::time::sleep_until(wake_at.unwrap_or_else(tokio::time::Instant::now)).await }, if wake_at.is_some() => {}
            ok = writer.finished() => {
                if !ok {
                    wake = [wake, writer.next_retry()].into_iter().flatten().min();
                }
                continue;
            }
        }
        #[cfg(test)]
        fail_points::report(&node_name);
        let translation = translations.borrow_and_update().clone();
        let now = SystemTime::now();
        configured_since.retain(|k, _| translation.peer_entries.contains_key(k));
        for key in translation.peer_entries.keys() {
            configured_since.entry(key.clone()).or_insert(now);
        }
        let wanted: BTreeSet<PeerEntry> = translation
            .desired
            .devices
            .iter()
            .flat_map(|(device, d)| d.peers.keys().map(|k| (device.clone(), *k)))
            .collect();
        wanted_since.retain(|entry, _| wanted.contains(entry));
        let status = status_rx.borrow_and_update().clone();
        let instant = Instant::now();
        // Peers' entries and mesh peers' (both are wanted peers of a device).
        let entries: BTreeSet<&PeerEntry> = translation.peer_entries.values().collect();
        configured_at.retain(|entry, _| entries.contains(entry) || wanted.contains(entry));
        for entry in wanted {
            wanted_since.entry(entry).or_insert(now);
        }
        for entry in &status.fresh_peers {
            configured_at.entry(entry.clone()).or_insert(instant);
        }
        let (interfaces, peers, routes) = source.seen(&translation);
        let input = ReportInput {
            node: &node_name,
            translation: &translation,
            observed: status.observed.as_deref(),
            fresh: &status.fresh_peers,
            conflicts: &status.conflicts,
            errors: &status.errors,
            now,
            configured_since: &configured_since,
            interfaces: &interfaces,
            peers: &peers,
            routes: &routes,
        };
        let mut report = StatusReport::build(&input);
        let (locals, members) = (source.interfaces_state(), source.mesh_members_state());
        add_mesh_status(
            &mut report,
            &input,
            &locals.iter().map(Arc::as_ref).collect::<Vec<_>>(),
            &members.iter().map(Arc::as_ref).collect::<Vec<_>>(),
            &wanted_since,
        );
        let (held, held_until) = held_peers(&input, &configured_at, instant);
        let (members_held, members_until) = held_members(&report, &input, &configured_at, instant);
        let held: BTreeSet<Target> = held
            .into_iter()
            .map(|k| (Kind::Peer, k))
            .chain(members_held.into_iter().map(|k| (Kind::Interface, k)))
            .collect();
        writer.submit(&report, &held);
        wake = [held_until, members_until, writer.next_retry()]
            .into_iter()
            .flatten()
            .min();
    }
}

async fn rebuild(
    source: &Source,
    desired_tx: &watch::Sender<Option<DesiredNode>>,
    reread_keys: bool,
) -> Translation {
    let translation = source.snapshot(reread_keys).await;
    for (key, problem) in &translation.interface_problems {
        tracing::info!(namespace = %key.0, interface = %key.1, reason = problem.reason, "{}", problem.message);
    }
    let desired = translation.desired.clone();
    desired_tx.send_if_modified(|current| {
        if current.as_ref() == Some(&desired) {
            false
        } else {
            *current = Some(desired);
            true
        }
    });
    translation
}

impl Source {
    /// Generation and conditions of the objects this node reports on.
    pub fn seen(
        &self,
        translation: &Translation,
    ) -> (
        BTreeMap<ObjectKey, Seen>,
        BTreeMap<ObjectKey, Seen>,
        BTreeMap<ObjectKey, Seen>,
    ) {
        fn seen_of<K: kube::Resource>(
            object: &K,
            conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
        ) -> (ObjectKey, Seen) {
            (
                (object.namespace().unwrap_or_default(), object.name_any()),
                Seen {
                    generation: object.meta().generation,
                    conditions,
                    remote_mtu: None,
                },
            )
        }
        let interfaces = self
            .interfaces_state()
            .iter()
            .map(|i| {
                seen_of(
                    i.as_ref(),
                    i.status
                        .as_ref()
                        .map(|s| s.conditions.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let peers = self
            .peers_state()
            .iter()
            .map(|p| {
                let (key, mut seen) = seen_of(
                    p.as_ref(),
                    p.status
                        .as_ref()
                        .map(|s| s.conditions.clone())
                        .unwrap_or_default(),
                );
                seen.remote_mtu = p
                    .status
                    .as_ref()
                    .and_then(|s| s.remote_end.as_ref())
                    .and_then(|e| e.mtu);
                (key, seen)
            })
            .filter(|(k, _)| {
                translation.peer_sides.contains_key(k) || translation.peer_problems.contains_key(k)
            })
            .collect();
        let routes = self
            .routes_state()
            .iter()
            .map(|r| {
                seen_of(
                    r.as_ref(),
                    r.status
                        .as_ref()
                        .map(|s| s.conditions.clone())
                        .unwrap_or_default(),
                )
            })
            .filter(|(k, _)| {
                translation.route_keys.contains_key(k) || translation.route_problems.contains_key(k)
            })
            .collect();
        (interfaces, peers, routes)
    }
}

/// Failures the tests inject into the status report task, by node name.
#[cfg(test)]
pub(crate) mod fail_points {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    static PANIC_IN_REPORT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

    /// The next round of the report task of `node` panics.
    pub fn panic_in_report(node: &str) {
        PANIC_IN_REPORT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string());
    }

    pub(super) fn report(node: &str) {
        let fail = PANIC_IN_REPORT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
        if fail {
            panic!("injected failure in the status report task of {node}");
        }
    }
}

#[cfg(test)]
mod tests;
