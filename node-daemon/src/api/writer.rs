//! Writing status patches without letting one write hold up another.
//!
//! [`StatusWriter::submit`] takes a whole [`StatusReport`] and queues what is [`due`] (latest
//! wins: a status superseded before its turn is never sent); up to [`WRITE_CONCURRENCY`]
//! patches are in flight at once, at most one per object so that an older status can never
//! land after a newer one. [`StatusWriter::finished`] is awaited beside the report loop's
//! other events: when a write returns, the next queued one starts at once, without waiting
//! for the rest of its batch or for a new report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use kwire_crds::v1alpha1::{Interface, Peer, Route};
use serde_json::{Value, json};

use super::desired::ObjectKey;
use super::report::{ObjectStatus, StatusReport, due};

/// Status patches in flight at once.
pub const WRITE_CONCURRENCY: usize = 8;
/// A failed write is not tried again sooner than this (the API server is likely busy or
/// down; the next report after it retries).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The kinds this node writes status for, in the order their writes go first: a Peer's
/// first handshake is what people wait for, an Interface's peer count is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Peer,
    Interface,
    Route,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Peer => "Peer",
            Kind::Interface => "Interface",
            Kind::Route => "Route",
        }
    }
}

/// The field manager of the daemon on `node`.
pub fn field_manager(node: &str) -> String {
    format!("kwire-node-{node}")
}

pub type Target = (Kind, ObjectKey);
type Outcome = (Target, ObjectStatus, Result<(), String>);
/// Sends one status; the error is said in the log.
pub type Sender = Arc<dyn Fn(Target, ObjectStatus) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// Writes status patches (see the module docs).
pub struct StatusWriter {
    send: Sender,
    /// What was last written, and when.
    written: BTreeMap<Target, (ObjectStatus, Instant)>,
    /// Due and not written yet; an object in flight may have its next status here.
    queued: BTreeMap<Target, ObjectStatus>,
    in_flight: BTreeSet<Target>,
    /// Objects whose last write failed, and when they may be tried again.
    retry_at: BTreeMap<Target, Instant>,
    writes: FuturesUnordered<BoxFuture<'static, Outcome>>,
}

impl StatusWriter {
    /// Writes by server-side apply under the field manager of the daemon on `node`.
    pub fn new(client: Client, node: &str) -> Self {
        let params = PatchParams::apply(&field_manager(node)).force();
        Self::with_sender(Arc::new(move |target, status| {
            Box::pin(patch_status(client.clone(), params.clone(), target, status))
        }))
    }

    fn with_sender(send: Sender) -> Self {
        Self {
            send,
            written: BTreeMap::new(),
            queued: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            retry_at: BTreeMap::new(),
            writes: FuturesUnordered::new(),
        }
    }

    /// Queues what `report` says has changed, except the objects in `held` (see
    /// [`super::report::held_peers`] and [`super::report::held_members`]), and starts
    /// writing; returns how many objects are queued or in flight.
    pub fn submit(&mut self, report: &StatusReport, held: &BTreeSet<Target>) -> usize {
        let reported = |(kind, key): &Target| {
            match kind {
                Kind::Interface => &report.interfaces,
                Kind::Peer => &report.peers,
                Kind::Route => &report.routes,
            }
            .contains_key(key)
        };
        // Forget objects this node no longer reports on (deleted, or moved elsewhere): one
        // created again under the same name gets its status written afresh.
        self.written.retain(|target, _| reported(target));
        self.queued.retain(|target, _| reported(target));
        let now = Instant::now();
        self.retry_at
            .retain(|target, at| reported(target) && *at > now);
        for (kind, statuses) in [
            (Kind::Peer, &report.peers),
            (Kind::Interface, &report.interfaces),
            (Kind::Route, &report.routes),
        ] {
            for (key, status) in statuses {
                let target = (kind, key.clone());
                if held.contains(&target) {
                    continue;
                }
                if self.retry_at.contains_key(&target) {
                    continue;
                }
                if self.is_due(&target, status) {
                    self.queued.insert(target, status.clone());
                } else {
                    // Back to what is written: an older queued status must not go out.
                    self.queued.remove(&target);
                }
            }
        }
        self.start_writes();
        self.queued.len() + self.in_flight.len()
    }

    /// Whether `status` is worth writing over what was last written for `target`.
    fn is_due(&self, target: &Target, status: &ObjectStatus) -> bool {
        let last = self
            .written
            .get(target)
            .map(|(last, at)| (last, at.elapsed()));
        due(last, status)
    }

    /// When the earliest failed write may be tried again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retry_at.values().min().copied()
    }

    /// Waits until a write in flight returns and records it; never returns while none is in
    /// flight. Returns whether it succeeded.
    pub async fn finished(&mut self) -> bool {
        let Some(((kind, key), status, result)) = self.writes.next().await else {
            return std::future::pending().await;
        };
        let target = (kind, key);
        self.in_flight.remove(&target);
        let ok = match result {
            Ok(()) => {
                self.written.insert(target, (status, Instant::now()));
                true
            }
            Err(e) => {
                let (kind, (namespace, name)) = &target;
                tracing::warn!(kind = kind.name(), %namespace, %name, error = %e, "status write failed; will retry");
                self.retry_at
                    .insert(target.clone(), Instant::now() + RETRY_AFTER);
                // The next report after the pause queues it again.
                self.queued.remove(&target);
                false
            }
        };
        self.start_writes();
        ok
    }

    /// Starts queued writes up to [`WRITE_CONCURRENCY`], one per object, Peers first.
    fn start_writes(&mut self) {
        if self.in_flight.len() >= WRITE_CONCURRENCY {
            return;
        }
        let startable: Vec<Target> = self
            .queued
            .keys()
            .filter(|target| !self.in_flight.contains(*target))
            .take(WRITE_CONCURRENCY - self.in_flight.len())
            .cloned()
            .collect();
        for target in startable {
            let Some(status) = self.queued.remove(&target) else {
                continue;
            };
            // Written meanwhile by the write that just returned.
            if !self.is_due(&target, &status) {
                continue;
            }
            self.in_flight.insert(target.clone());
            self.writes.push((self.send)(target, status));
        }
    }
}

fn merge(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut out = x.clone();
            for (k, v) in y {
                let merged = out
                    .get(k)
                    .map_or_else(|| v.clone(), |existing| merge(existing, v));
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, b) => b.clone(),
    }
}

/// One status patch (server-side apply); hands its inputs back with the result.
async fn patch_status(
    client: Client,
    params: PatchParams,
    target: Target,
    status: ObjectStatus,
) -> Outcome {
    let (kind, (namespace, name)) = &target;
    let body = json!({
        "apiVersion": "kwire.dev/v1alpha1",
        "kind": kind.name(),
        "status": merge(&status.significant, &status.counters),
    });
    let patch = Patch::Apply(&body);
    let result = match kind {
        Kind::Interface => Api::<Interface>::namespaced(client, namespace)
            .patch_status(name, &params, &patch)
            .await
            .map(drop),
        Kind::Peer => Api::<Peer>::namespaced(client, namespace)
            .patch_status(name, &params, &patch)
            .await
            .map(drop),
        Kind::Route => Api::<Route>::namespaced(client, namespace)
            .patch_status(name, &params, &patch)
            .await
            .map(drop),
    };
    (target, status, result.map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::oneshot;

    /// The writes sent so far, each with the means to finish it.
    type Sent = Arc<Mutex<Vec<(Target, ObjectStatus, Option<oneshot::Sender<bool>>)>>>;

    /// A writer whose every write waits until the test finishes it with [`finish`].
    fn writer() -> (StatusWriter, Sent) {
        let sent: Sent = Arc::default();
        let log = sent.clone();
        let writer = StatusWriter::with_sender(Arc::new(move |target: Target, status| {
            let (done, wait) = oneshot::channel();
            log.lock()
                .unwrap()
                .push((target.clone(), status.clone(), Some(done)));
            Box::pin(async move {
                let ok = wait.await.unwrap_or(false);
                (
                    target,
                    status,
                    if ok { Ok(()) } else { Err("refused".into()) },
                )
            })
        }));
        (writer, sent)
    }

    /// Finishes the `n`th write sent and lets the writer take note of it.
    async fn finish(writer: &mut StatusWriter, sent: &Sent, n: usize, ok: bool) {
        let done = sent.lock().unwrap()[n].2.take().expect("finished twice");
        done.send(ok).unwrap();
        assert_eq!(writer.finished().await, ok);
    }

    fn sent_names(sent: &Sent) -> Vec<String> {
        sent.lock()
            .unwrap()
            .iter()
            .map(|((kind, (_, name)), status, _)| {
                format!("{} {name} {}", kind.name(), status.significant["v"])
            })
            .collect()
    }

    fn status(v: u32) -> ObjectStatus {
        ObjectStatus {
            significant: json!({"v": v}),
            counters: json!({}),
        }
    }

    fn key(name: &str) -> ObjectKey {
        ("ns".to_string(), name.to_string())
    }

    fn peers(list: &[(&str, u32)]) -> StatusReport {
        StatusReport {
            peers: list.iter().map(|(n, v)| (key(n), status(*v))).collect(),
            ..StatusReport::default()
        }
    }

    #[tokio::test]
    async fn a_newer_status_waits_for_the_write_in_flight_and_a_superseded_one_is_never_sent() {
        let (mut writer, sent) = writer();
        let none = BTreeSet::new();
        writer.submit(&peers(&[("p", 1)]), &none);
        writer.submit(&peers(&[("p", 2)]), &none);
        writer.submit(&peers(&[("p", 3)]), &none);
        assert_eq!(
            sent_names(&sent),
            ["Peer p 1"],
            "one write per object at a time"
        );
        finish(&mut writer, &sent, 0, true).await;
        assert_eq!(sent_names(&sent), ["Peer p 1", "Peer p 3"]);
        finish(&mut writer, &sent, 1, true).await;
        assert_eq!(writer.submit(&peers(&[("p", 3)]), &none), 0, "nothing new");
    }

    #[tokio::test]
    async fn a_status_back_to_what_is_being_written_drops_the_queued_one() {
        let (mut writer, sent) = writer();
        let none = BTreeSet::new();
        writer.submit(&peers(&[("p", 1)]), &none);
        writer.submit(&peers(&[("p", 2)]), &none);
        writer.submit(&peers(&[("p", 1)]), &none);
        finish(&mut writer, &sent, 0, true).await;
        assert_eq!(sent_names(&sent), ["Peer p 1"]);
    }

    #[tokio::test]
    async fn another_object_does_not_wait_for_a_slow_write() {
        let (mut writer, sent) = writer();
        let none = BTreeSet::new();
        writer.submit(&peers(&[("p", 1)]), &none);
        writer.submit(&peers(&[("p", 1), ("q", 1)]), &none);
        assert_eq!(sent_names(&sent), ["Peer p 1", "Peer q 1"]);
    }

    #[tokio::test]
    async fn peers_go_first_and_no_more_than_the_concurrency_is_in_flight() {
        let (mut writer, sent) = writer();
        let mut report = peers(&[("p", 1), ("q", 1)]);
        for i in 0..10 {
            report.interfaces.insert(key(&format!("i{i}")), status(1));
        }
        assert_eq!(writer.submit(&report, &BTreeSet::new()), 12);
        let names = sent_names(&sent);
        assert_eq!(names.len(), WRITE_CONCURRENCY);
        assert_eq!(names[..2], ["Peer p 1", "Peer q 1"]);
        finish(&mut writer, &sent, 0, true).await;
        assert_eq!(
            sent_names(&sent).len(),
            WRITE_CONCURRENCY + 1,
            "the next one starts"
        );
    }

    #[tokio::test]
    async fn a_held_peer_is_not_written_until_it_is_released() {
        let (mut writer, sent) = writer();
        let held = [(Kind::Peer, key("p"))].into();
        writer.submit(&peers(&[("p", 1), ("q", 1)]), &held);
        assert_eq!(sent_names(&sent), ["Peer q 1"]);
        writer.submit(&peers(&[("p", 2), ("q", 1)]), &BTreeSet::new());
        assert_eq!(sent_names(&sent), ["Peer q 1", "Peer p 2"]);
    }

    #[tokio::test]
    async fn a_failed_write_waits_before_it_is_tried_again() {
        let (mut writer, sent) = writer();
        let none = BTreeSet::new();
        writer.submit(&peers(&[("p", 1)]), &none);
        let before = Instant::now();
        finish(&mut writer, &sent, 0, false).await;
        let retry = writer.next_retry().expect("a retry time");
        assert!(retry >= before + RETRY_AFTER);
        assert_eq!(writer.submit(&peers(&[("p", 1)]), &none), 0, "not yet");
        assert_eq!(sent_names(&sent).len(), 1);
    }

    #[tokio::test]
    async fn an_object_no_longer_reported_is_forgotten_and_written_afresh_when_it_returns() {
        let (mut writer, sent) = writer();
        let none = BTreeSet::new();
        writer.submit(&peers(&[("p", 1)]), &none);
        finish(&mut writer, &sent, 0, true).await;
        writer.submit(&peers(&[]), &none);
        writer.submit(&peers(&[("p", 1)]), &none);
        assert_eq!(sent_names(&sent), ["Peer p 1", "Peer p 1"]);
    }

    #[test]
    fn counters_merge_into_the_significant_part() {
        let merged = merge(
            &json!({"remoteEnd": {"node": "b", "configured": true}}),
            &json!({"remoteEnd": {"transfer": {"rxBytes": 1}}}),
        );
        assert_eq!(
            merged,
            json!({"remoteEnd": {"node": "b", "configured": true, "transfer": {"rxBytes": 1}}})
        );
    }
}
