//! The reconcile loop.
//!
//! Two paths, as in Calico's `inSyncWireguard` and kilo's resync:
//! - **delta**: when the desired state changes, plan against the state kwire
//!   believes the kernel is in (the last observation with the applied steps
//!   replayed on [`crate::kernel_model`]), without reading the kernel back;
//! - **full**: observe the kernel, plan, apply. Runs at start (which is how a
//!   restarted daemon adopts what is there, without recreating anything),
//!   every resync period (which corrects drift: a kwire route deleted by hand
//!   comes back, a peer added by hand to a kwire device goes away), after any
//!   error (with capped backoff), and on kernel events about kwire's objects
//!   (a link removed, e.g. because wireguard-go died; a kwire route removed).
//!
//! After a reconcile that changed the kernel, the loop looks again soon, at growing
//! intervals, until every new or changed peer has had a handshake ([`followup`]): that is
//! how `Connected` follows a new peer's first handshake within tens of milliseconds rather
//! than at the next resync.
//!
//! Guarantees:
//! - while the desired state is `None` (not yet known) nothing is planned or
//!   written; a desired source that stops updating (API unreachable) leaves
//!   the last desired state in force and never tears anything down;
//! - an unchanged desired state on a converged node makes zero kernel writes;
//! - stopping the loop (SIGTERM) leaves the data plane as it is.

pub mod events;
pub mod followup;
pub mod initiator;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use futures::StreamExt;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::LinkAttribute;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::apply::{ApplyError, ApplyReport, Dataplane, apply};
use crate::kernel_model;
use crate::metrics::Metrics;
use crate::model::{DesiredNode, IfaceName, ObservedNode, RouteKey};
use crate::observe::ObserveError;
use crate::ownership::route_protocol;
use crate::plan::{Conflict, Plan, plan};
pub use events::{KernelEvents, Pending};
use followup::{Followup, PeerEntry, added_peers};

/// Something happened in the kernel that may concern kwire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// A link was deleted.
    LinkRemoved(IfaceName),
    /// A route with kwire's protocol was deleted.
    RouteRemoved,
    /// A wireguard-go process started by this daemon exited.
    UserspaceExited(IfaceName),
}

/// How the loop paces itself.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Period of the full resync.
    pub resync_period: Duration,
    /// First retry delay after an error; doubles up to `max_retry`.
    pub min_retry: Duration,
    pub max_retry: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            resync_period: Duration::from_secs(30),
            min_retry: Duration::from_millis(500),
            max_retry: Duration::from_secs(30),
        }
    }
}

/// Which path a reconcile took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Full,
    Delta,
}

/// The result of one reconcile.
#[derive(Debug)]
pub struct Outcome {
    pub mode: Mode,
    pub plan: Plan,
    pub report: ApplyReport,
    /// What the full path observed, before applying the plan (`None` on the delta path).
    pub observed: Option<Arc<ObservedNode>>,
}

/// What the node reports, for the status writer of the API side.
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    /// The last full observation (handshakes, counters, public keys).
    pub observed: Option<Arc<ObservedNode>>,
    pub observed_at: Option<SystemTime>,
    /// Peer entries created (by reconciles whose every step succeeded) since `observed` was
    /// taken: they are configured, and have had no handshake or traffic as far as kwire
    /// knows, whatever `observed` says about an earlier entry with the same key (a Peer
    /// deleted and created again). The next observation tells.
    pub fresh_peers: BTreeSet<PeerEntry>,
    pub conflicts: Vec<Conflict>,
    /// The steps that failed in the last reconcile.
    pub errors: Vec<StepFailure>,
}

/// A step that failed, for the status of the object it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// The device the step was for (`None`: node-wide, e.g. `all` forwarding).
    pub device: Option<IfaceName>,
    /// The route, for route steps: the failure belongs to the Route object.
    pub route: Option<RouteKey>,
    /// A condition reason, e.g. `ListenPortInUse`.
    pub reason: &'static str,
    /// The step, the error and a hint; redacted like every step display.
    pub message: String,
}

impl From<&ApplyError> for StepFailure {
    fn from(e: &ApplyError) -> Self {
        let mut message = e.to_string();
        if let Some(hint) = e.source.hint() {
            message.push_str(": ");
            message.push_str(hint);
        }
        Self {
            device: e.device.clone(),
            route: e.route,
            reason: e.source.reason(),
            message,
        }
    }
}

/// Observe/plan/apply against one dataplane, remembering the state after the
/// last successful apply for the delta path.
pub struct Reconciler<D> {
    dataplane: D,
    last: Option<ObservedNode>,
    /// New entries whose keepalive waits for their first handshake ([`initiator`]); only
    /// in [`run`], whose follow-up looks again to release them (a one-shot reconcile
    /// configures everything at once).
    holds: Option<initiator::Holds>,
    metrics: Arc<Metrics>,
    status: watch::Sender<NodeStatus>,
}

impl<D: Dataplane> Reconciler<D> {
    pub fn new(dataplane: D, metrics: Arc<Metrics>) -> Self {
        Self {
            dataplane,
            last: None,
            holds: None,
            metrics,
            status: watch::Sender::new(NodeStatus::default()),
        }
    }

    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Status updates after every reconcile.
    pub fn subscribe(&self) -> watch::Receiver<NodeStatus> {
        self.status.subscribe()
    }

    /// Plans against a fresh observation, without applying.
    pub async fn dry_run(&mut self, desired: &DesiredNode) -> Result<Plan, ObserveError> {
        let observed = self.dataplane.observe().await?;
        Ok(plan(desired, &observed))
    }

    /// Full path: observe, plan, apply.
    pub async fn reconcile_full(&mut self, desired: &DesiredNode) -> Result<Outcome, ObserveError> {
        let began = StdInstant::now();
        let observed = match self.dataplane.observe().await {
            Ok(o) => o,
            Err(e) => {
                self.metrics.observe_errors.inc();
                self.last = None;
                return Err(e);
            }
        };
        self.metrics.reconciles_full.inc();
        let snapshot = Arc::new(observed.clone());
        Ok(self
            .plan_and_apply(desired, observed, Mode::Full, Some(snapshot), began)
            .await)
    }

    /// Delta path: plan against the remembered state; falls back to the full
    /// path when there is none (at start, after an error).
    pub async fn reconcile_delta(
        &mut self,
        desired: &DesiredNode,
    ) -> Result<Outcome, ObserveError> {
        match self.last.take() {
            Some(last) => {
                self.metrics.reconciles_delta.inc();
                Ok(self
                    .plan_and_apply(desired, last, Mode::Delta, None, StdInstant::now())
                    .await)
            }
            None => self.reconcile_full(desired).await,
        }
    }

    async fn plan_and_apply(
        &mut self,
        desired: &DesiredNode,
        mut state: ObservedNode,
        mode: Mode,
        snapshot: Option<Arc<ObservedNode>>,
        began: StdInstant,
    ) -> Outcome {
        let plan = match &mut self.holds {
            Some(holds) => holds.apply(plan(desired, &state), &state, Instant::now()),
            None => plan(desired, &state),
        };
        for conflict in &plan.conflicts {
            tracing::warn!(reason = conflict.reason(), "{conflict}");
        }
        let added = added_peers(&plan, &state);
        let report = apply(&plan, &mut self.dataplane).await;
        let m = &self.metrics;
        m.last_plan_steps.set(plan.steps.len() as u64);
        m.conflicts.set(plan.conflicts.len() as u64);
        m.steps_applied.inc_by(report.applied as u64);
        m.kernel_writes.inc_by(report.writes);
        m.apply_errors.inc_by(report.errors.len() as u64);
        m.last_reconcile_writes.set(report.writes);
        m.last_reconcile_errors.set(report.errors.len() as u64);
        m.last_reconcile_seconds.set(began.elapsed().as_secs_f64());
        m.set_ready();
        if let Some(snapshot) = &snapshot {
            self.metrics
                .set_observed(snapshot.clone(), SystemTime::now());
        }
        tracing::info!(
            mode = ?mode,
            steps = plan.steps.len(),
            applied = report.applied,
            errors = report.errors.len(),
            conflicts = plan.conflicts.len(),
            writes = report.writes,
            "reconciled"
        );
        // Remember the state only when every step is known to have landed.
        self.last = if report.is_success() {
            kernel_model::apply_steps(&mut state, &plan.steps)
                .ok()
                .map(|()| state)
        } else {
            None
        };
        let success = report.is_success();
        let errors = report.errors.iter().map(StepFailure::from).collect();
        let conflicts = plan.conflicts.clone();
        self.status.send_modify(|s| {
            if let Some(snapshot) = &snapshot {
                s.observed = Some(snapshot.clone());
                s.observed_at = Some(SystemTime::now());
                s.fresh_peers.clear();
            }
            if success {
                s.fresh_peers.extend(added);
            }
            s.conflicts = conflicts;
            s.errors = errors;
        });
        Outcome {
            mode,
            plan,
            report,
            observed: snapshot,
        }
    }

    /// Removes and re-adds peer entries stuck after crossed first initiations (see
    /// [`followup`]), with their desired configuration.
    pub async fn restart_peers(
        &mut self,
        desired: &DesiredNode,
        entries: &BTreeSet<PeerEntry>,
    ) -> ApplyReport {
        let plan = crate::plan::restart_peers(desired, entries);
        if plan.is_empty() {
            return ApplyReport::default();
        }
        tracing::info!(
            peers = entries.len(),
            "restarting the first handshake of peers whose initiations crossed"
        );
        let report = apply(&plan, &mut self.dataplane).await;
        self.metrics.kernel_writes.inc_by(report.writes);
        self.metrics.apply_errors.inc_by(report.errors.len() as u64);
        let success = report.is_success();
        self.last = match (self.last.take(), success) {
            (Some(mut last), true) => kernel_model::apply_steps(&mut last, &plan.steps)
                .ok()
                .map(|()| last),
            _ => None,
        };
        if success {
            self.status
                .send_modify(|s| s.fresh_peers.extend(entries.iter().cloned()));
        }
        report
    }

    /// Whether kernel events concern an object kwire has or wants.
    fn concerns(&self, pending: &Pending, desired: Option<&DesiredNode>) -> bool {
        pending.concerns(|name| {
            desired.is_some_and(|d| d.devices.contains_key(name))
                || self
                    .last
                    .as_ref()
                    .is_some_and(|l| l.devices.contains_key(name))
        })
    }
}

/// Runs the loop until `shutdown` completes and hands the reconciler back.
/// See the module docs.
pub async fn run<D: Dataplane>(
    mut reconciler: Reconciler<D>,
    mut desired: watch::Receiver<Option<DesiredNode>>,
    events: KernelEvents,
    config: RunConfig,
    shutdown: impl Future<Output = ()>,
) -> Reconciler<D> {
    tokio::pin!(shutdown);
    reconciler
        .holds
        .get_or_insert_with(initiator::Holds::default);
    let mut need_full = true;
    let mut dirty = true;
    let mut retry_delay = config.min_retry;
    let mut retry_at: Option<Instant> = None;
    let mut next_resync = Instant::now() + config.resync_period;
    let mut desired_open = true;
    // Looking again soon after a change (see `followup`), and the last full reconcile's end
    // and duration, which paces it.
    let mut followup: Option<Followup> = None;
    let mut last_full: Option<(Instant, Duration)> = None;

    reconciler.metrics.set_stall_after(
        (config.resync_period * 3).max(Duration::from_secs(60)) + config.max_retry,
    );
    loop {
        reconciler.metrics.beat();
        let current = desired.borrow_and_update().clone();
        if let Some(want) = current.as_ref().filter(|_| need_full || dirty) {
            let began = Instant::now();
            let result = if need_full {
                reconciler.reconcile_full(want).await
            } else {
                reconciler.reconcile_delta(want).await
            };
            let mut restart_ok = true;
            if let Ok(outcome) = &result {
                let now = Instant::now();
                if outcome.mode == Mode::Full {
                    last_full = Some((now, now - began));
                }
                if let (Some(f), Some(seen)) = (&mut followup, &outcome.observed) {
                    f.observed(seen);
                    let crossed = f.crossed(seen, now);
                    if !crossed.is_empty() {
                        let restarted = reconciler.restart_peers(want, &crossed).await;
                        f.restarting(&crossed, Instant::now());
                        restart_ok = restarted.is_success();
                    }
                }
                // A failed reconcile is retried after a backoff instead.
                if outcome.report.applied > 0 && outcome.report.is_success() {
                    match &mut followup {
                        Some(f) => f.changed(&outcome.plan, now),
                        None => followup = Some(Followup::after(&outcome.plan, now)),
                    }
                }
            }
            let ok = restart_ok
                && match &result {
                    Ok(outcome) => outcome.report.is_success(),
                    Err(e) => {
                        tracing::warn!(error = %e, "observing the kernel failed");
                        false
                    }
                };
            if ok {
                need_full = false;
                retry_at = None;
                retry_delay = config.min_retry;
            } else {
                need_full = true;
                retry_at = Some(Instant::now() + retry_delay);
                tracing::info!(retry_in = ?retry_delay, "will retry with a full reconcile");
                retry_delay = (retry_delay * 2).min(config.max_retry);
            }
            dirty = false;
            if matches!(
                result,
                Ok(Outcome {
                    mode: Mode::Full,
                    ..
                })
            ) {
                next_resync = Instant::now() + config.resync_period;
            }
        }

        // While a retry is pending the backoff decides when to look again.
        let check_at = match &followup {
            Some(_) if retry_at.is_some() => None,
            Some(f) => {
                let at = f.next_check(last_full);
                if at.is_none() {
                    followup = None;
                }
                at
            }
            None => None,
        };

        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("stopping; the data plane is left as it is");
                return reconciler;
            }
            changed = desired.changed(), if desired_open => {
                if changed.is_err() {
                    tracing::info!("desired state source closed; keeping the last desired state");
                    desired_open = false;
                } else {
                    dirty = true;
                }
            }
            mut pending = events.next() => {
                // A burst rarely ends with its first event: look a moment later, once.
                tokio::time::sleep(Duration::from_millis(50)).await;
                pending.merge(events.take());
                if reconciler.concerns(&pending, current.as_ref()) {
                    tracing::info!(
                        links_removed = pending.links_removed.len(),
                        route_removed = pending.route_removed,
                        userspace_exited = pending.userspace_exited.len(),
                        more = pending.overflowed,
                        "kernel events; full reconcile"
                    );
                    need_full = true;
                }
            }
            () = tokio::time::sleep_until(next_resync) => {
                need_full = true;
                next_resync = Instant::now() + config.resync_period;
            }
            () = sleep_until_opt(retry_at), if retry_at.is_some() => {
                need_full = true;
                retry_at = None;
            }
            () = sleep_until_opt(check_at), if check_at.is_some() => {
                need_full = true;
                if let Some(f) = &mut followup {
                    f.checking();
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Why the kernel monitor stopped (it never should).
#[derive(Debug, thiserror::Error)]
pub enum KernelMonitorError {
    #[error("the rtnetlink event connection ended")]
    ConnectionEnded,
    #[error("the rtnetlink event stream ended")]
    StreamEnded,
}

/// Watches rtnetlink for deleted links and deleted kwire routes, and reports them on
/// `events`. The returned future runs until the netlink socket fails; the daemon runs it
/// as a long-lived task.
pub fn kernel_monitor(
    events: KernelEvents,
) -> std::io::Result<impl Future<Output = Result<(), KernelMonitorError>> + Send + 'static> {
    use rtnetlink::MulticastGroup;
    let (connection, handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])?;
    let watch = async move {
        while let Some((msg, _)) = messages.next().await {
            let event = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => link
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        LinkAttribute::IfName(n) => IfaceName::new(n.clone()).ok(),
                        _ => None,
                    })
                    .map(KernelEvent::LinkRemoved),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(route))
                    if u8::from(route.header.protocol) == route_protocol() =>
                {
                    Some(KernelEvent::RouteRemoved)
                }
                _ => None,
            };
            if let Some(event) = event {
                events.send(event);
            }
        }
    };
    Ok(async move {
        // The handle keeps the connection's request side open.
        let _handle = handle;
        tokio::select! {
            () = connection => Err(KernelMonitorError::ConnectionEnded),
            () = watch => Err(KernelMonitorError::StreamEnded),
        }
    })
}

#[cfg(test)]
mod tests;
