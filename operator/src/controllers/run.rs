//! Wiring: one watch per kind feeds a reflector store (the world every controller reads)
//! and a router that turns each change into reconcile requests through [`triggers`]; each
//! controller is a kube-runtime `applier` on its queue.
//!
//! Why `applier` rather than four `Controller`s: a `Controller` owns the watch of its
//! kind, so four Controllers with `watches()` on each other's kinds would open each watch
//! up to five times; shared streams that would avoid this are behind kube's unstable
//! features and do not carry deletions, which the allocator needs to release addresses.
//! `applier` is the engine under `Controller` (scheduling, no concurrent reconciles of one
//! object, error-policy requeues); here it is fed by one watch per kind.
//!
//! Nothing is reconciled before every store has completed its first list: planning from a
//! partial view could release addresses of Interfaces not listed yet.
//!
//! Topology findings span the whole world, so they are not computed per reconcile: one
//! task recomputes them after changes (coalesced over [`FINDINGS_DEBOUNCE`]) and enqueues
//! every object whose findings changed; reconciles read the latest ones from the context.
//! Triggers ([`triggers`]) therefore only follow direct data dependencies.
//!
//! The router, the findings task and the controllers run until shutdown. If one of them
//! ends or panics, the others would go on from frozen state behind a green `/healthz`; so
//! [`run`] fails the health probe and returns [`RunError::TaskEnded`], and the process
//! exits for a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::{FutureExt, Stream, StreamExt, stream::BoxStream};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, applier, watcher};
use kube::{Client, Resource, ResourceExt};
use kwire_crds::v1alpha1::{Interface, Mesh, Network, Peer, Route};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::triggers::{Changed, Key, Triggers, triggers};
use super::{error_policy, interface, mesh, mesh_leave, network, peer, route};
use crate::context::{Config, Context, Events, Stores};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::secrets::managed_selector;
use crate::status::SystemClock;
use crate::topology::{self, Finding, ObjectKind};
use crate::world::World;

/// How the operator runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Watch kwire objects and Secrets in this namespace only (Nodes are always cluster-wide).
    pub namespace: Option<String>,
    pub config: Config,
    /// The reporting instance of Events (e.g. the pod name).
    pub instance: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("a reflector store was dropped before it became ready")]
    StoreDropped,
    /// A task that runs until shutdown stopped; the operator exits so that it is restarted
    /// with fresh state rather than serve frozen state.
    #[error(
        "the {task} task {how}; exiting so that the operator restarts rather than work from frozen state"
    )]
    TaskEnded { task: &'static str, how: String },
}

impl RunError {
    /// The error for task `task` that ended with `result` (a panic or a plain return).
    fn ended(task: &'static str, result: Result<(), tokio::task::JoinError>) -> Self {
        RunError::TaskEnded {
            task,
            how: match result {
                Ok(()) => "ended".into(),
                Err(error) => join_failure(error),
            },
        }
    }
}

/// What a failed join says: the panic message, or that the task was cancelled.
fn join_failure(error: tokio::task::JoinError) -> String {
    if !error.is_panic() {
        return "was cancelled".into();
    }
    let payload = error.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text payload".into());
    format!("panicked: {message}")
}

fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One change on one watch: whether it is part of an initial list, and what changed.
enum Change {
    Network(Box<watcher::Event<Network>>),
    Interface(Box<watcher::Event<Interface>>),
    Peer(Box<watcher::Event<Peer>>),
    Route(Box<watcher::Event<Route>>),
    Node(Box<watcher::Event<Node>>),
    Secret(Box<watcher::Event<PartialObjectMeta<Secret>>>),
    Mesh(Box<watcher::Event<Mesh>>),
}

fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    wrap: fn(watcher::Event<K>) -> Change,
) -> (Store<K>, BoxStream<'static, Result<Change, watcher::Error>>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff())
        .map(move |e| e.map(wrap))
        .boxed();
    (reader, stream)
}

/// Reconciles of one kind that run at once. A reconcile mostly waits on the API server; 16
/// keeps as many requests in flight as the bench's plain client (4 left the API server idle
/// half the time at a cold start: 2.6× the plain client's time at 400 Interfaces, see
/// docs/performance.md).
pub const RECONCILES_IN_FLIGHT: u16 = 16;

/// How long the findings task waits for more changes before recomputing.
pub const FINDINGS_DEBOUNCE: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Queues {
    networks: UnboundedSender<ObjectRef<Network>>,
    interfaces: UnboundedSender<ObjectRef<Interface>>,
    peers: UnboundedSender<ObjectRef<Peer>>,
    routes: UnboundedSender<ObjectRef<Route>>,
    meshes: UnboundedSender<ObjectRef<Mesh>>,
    /// Leaving Mesh members' Interfaces ([`mesh_leave`]).
    leaving: UnboundedSender<ObjectRef<Interface>>,
}

fn send<K: Resource<DynamicType = ()>>(queue: &UnboundedSender<ObjectRef<K>>, (ns, name): &Key) {
    // A closed queue means shutdown: nothing left to do with the request.
    let _ = queue.unbounded_send(ObjectRef::new(name).within(ns));
}

fn self_key<K: ResourceExt>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The object of a change and whether it comes from an initial list.
fn object<K>(event: &watcher::Event<K>) -> Option<(&K, bool)> {
    match event {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) => Some((o, false)),
        watcher::Event::InitApply(o) => Some((o, true)),
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// What one change asks for: the objects to reconcile. Objects of an initial list only ask
/// for themselves (everything is listed, so everything gets reconciled); later changes ask
/// for their relations too, looked up in `world` (called at most once per batch).
fn route_change(change: &Change, world: &mut impl FnMut() -> Arc<World>) -> Triggers {
    let changed = match change {
        Change::Network(e) => object(e).map(|(o, init)| (Changed::Network(o), init)),
        Change::Interface(e) => object(e).map(|(o, init)| (Changed::Interface(o), init)),
        Change::Peer(e) => object(e).map(|(o, init)| (Changed::Peer(o), init)),
        Change::Route(e) => object(e).map(|(o, init)| (Changed::Route(o), init)),
        Change::Node(e) => object(e).map(|(o, init)| {
            (
                Changed::Node(o.metadata.name.as_deref().unwrap_or_default()),
                init,
            )
        }),
        Change::Secret(e) => object(e).map(|(o, init)| (Changed::Secret(&o.metadata), init)),
        // Meshes are routed by `mesh_triggers`; nothing else depends on them.
        Change::Mesh(_) => None,
    };
    let Some((changed, init)) = changed else {
        return Triggers::default();
    };
    if !init {
        return triggers(changed, &world());
    }
    let mut t = Triggers::default();
    match changed {
        Changed::Network(o) => {
            t.networks.insert(self_key(o));
        }
        Changed::Interface(o) => {
            t.interfaces.insert(self_key(o));
        }
        Changed::Peer(o) => {
            t.peers.insert(self_key(o));
        }
        Changed::Route(o) => {
            t.routes.insert(self_key(o));
        }
        Changed::Node(_) | Changed::Secret(_) => {}
    }
    t
}

/// The Meshes to reconcile after one change: a Mesh itself; every Mesh after a Node change
/// that passed the Node filter (an address, a label or pod CIDRs changed: which Nodes are
/// selected and what their members look like); the controlling Mesh of a generated
/// Interface (its readiness counts in the Mesh's status, and one deleted by hand is made
/// again).
fn mesh_triggers(change: &Change, meshes: &Store<Mesh>) -> BTreeSet<Key> {
    let mut out = BTreeSet::new();
    match change {
        Change::Mesh(e) => {
            if let Some((m, _)) = object(e) {
                out.insert(self_key(m));
            }
        }
        Change::Node(e) if object(e).is_some() => {
            out.extend(meshes.state().iter().map(|m| self_key(m.as_ref())));
        }
        Change::Interface(e) => {
            if let Some(key) = object(e).and_then(|(i, _)| mesh::controlling_mesh(i)) {
                out.insert(key);
            }
        }
        _ => {}
    }
    out
}

/// The Meshes whose leaving members ([`mesh_leave`]) a change concerns: a Mesh's own
/// change (deleted: they go at once), and any change of one of its generated Interfaces (a
/// member's `status.mesh.departed`, or a leaver itself).
fn leave_triggers(change: &Change) -> Option<Key> {
    match change {
        Change::Mesh(e) => object(e).map(|(m, _)| self_key(m)),
        Change::Interface(e) => object(e).and_then(|(i, _)| mesh::controlling_mesh(i)),
        _ => None,
    }
}

/// The shortest time between two routed batches: during a burst each object is requested
/// once per window however many changes touched it, and never later than the window's end.
/// (The applier's own debounce would postpone an object as long as requests keep coming,
/// which starves a Network whose Interfaces keep changing.) The first change after a quiet
/// window is routed at once ([`coalesce_delay`]): a single new Peer is not held back.
pub const COALESCE: Duration = Duration::from_millis(100);

/// How long a change that arrives `since_last_batch` after the last routed batch (`None`:
/// none yet) waits, gathering more, before it is routed.
pub fn coalesce_delay(since_last_batch: Option<Duration>) -> Duration {
    since_last_batch.map_or(Duration::ZERO, |since| COALESCE.saturating_sub(since))
}

/// Routes a batch of changes: one world for all of them, and each object requested once
/// however many changes touched it.
fn route_batch(
    batch: Vec<Result<Change, watcher::Error>>,
    stores: &Stores,
    queues: &Queues,
    world_changed: &Notify,
) {
    // Every event of these watches has changed a store (an initial list replaces it whole
    // at its end): the next world is built anew, and findings may change.
    let topology = batch
        .iter()
        .any(|c| matches!(c, Ok(c) if !matches!(c, Change::Secret(_) | Change::Mesh(_))));
    if topology {
        stores.changed();
    }
    let mut cached: Option<Arc<World>> = None;
    let mut world = || cached.get_or_insert_with(|| stores.world()).clone();
    let mut all = Triggers::default();
    let mut meshes = BTreeSet::new();
    let mut leaving_meshes = BTreeSet::new();
    for change in batch {
        match change {
            Ok(change) => {
                meshes.extend(mesh_triggers(&change, &stores.meshes));
                leaving_meshes.extend(leave_triggers(&change));
                let t = route_change(&change, &mut world);
                all.networks.extend(t.networks);
                all.interfaces.extend(t.interfaces);
                all.peers.extend(t.peers);
                all.routes.extend(t.routes);
            }
            Err(error) => tracing::warn!(%error, "watch failed; retrying with backoff"),
        }
    }
    all.networks.iter().for_each(|k| send(&queues.networks, k));
    all.interfaces
        .iter()
        .for_each(|k| send(&queues.interfaces, k));
    all.peers.iter().for_each(|k| send(&queues.peers, k));
    all.routes.iter().for_each(|k| send(&queues.routes, k));
    meshes.iter().for_each(|k| send(&queues.meshes, k));
    mesh_leave::leaving_members(&leaving_meshes, &stores.interfaces.state())
        .iter()
        .for_each(|k| send(&queues.leaving, k));
    if topology {
        world_changed.notify_one();
    }
}

/// The objects whose findings differ between `old` and `new` (both sorted, as
/// [`topology::check`] returns them).
pub fn changed_findings(old: &[Finding], new: &[Finding]) -> BTreeSet<(ObjectKind, Key)> {
    fn by_object(findings: &[Finding]) -> BTreeMap<(ObjectKind, Key), Vec<&Finding>> {
        let mut out: BTreeMap<(ObjectKind, Key), Vec<&Finding>> = BTreeMap::new();
        for f in findings {
            out.entry((f.kind, (f.namespace.clone(), f.name.clone())))
                .or_default()
                .push(f);
        }
        out
    }
    let (old, new) = (by_object(old), by_object(new));
    old.keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// The topology check ([`topology::check`]; tests inject a failing one).
type Check = fn(&World) -> Vec<Finding>;

/// Keeps `ctx.findings` current: recomputes them after changes and reconciles the objects
/// whose findings changed. Returns only if a check fails, saying how.
async fn keep_findings(
    ctx: Arc<Context>,
    changed: Arc<Notify>,
    queues: Queues,
    check: Check,
) -> String {
    loop {
        changed.notified().await;
        tokio::time::sleep(FINDINGS_DEBOUNCE).await;
        let world = ctx.stores.world();
        let new = match tokio::task::spawn_blocking(move || check(&world)).await {
            Ok(new) => new,
            Err(error) => return format!("stopped: the topology check {}", join_failure(error)),
        };
        ctx.metrics.topology_checks.inc();
        let old = ctx.findings.replace(new);
        let new = ctx.findings.get();
        for (kind, key) in changed_findings(&old, &new) {
            match kind {
                ObjectKind::Interface => send(&queues.interfaces, &key),
                ObjectKind::Peer => send(&queues.peers, &key),
                ObjectKind::Route => send(&queues.routes, &key),
            }
        }
    }
}

fn log_result<K: Resource, E: std::fmt::Display>(
    controller: &'static str,
) -> impl FnMut(Result<(ObjectRef<K>, kube::runtime::controller::Action), E>) -> std::future::Ready<()>
where
    K::DynamicType: std::fmt::Debug,
{
    move |result| {
        match result {
            Ok((obj, _)) => tracing::debug!(controller, object = %obj, "reconciled"),
            Err(error) => tracing::debug!(controller, %error, "reconcile did not complete"),
        }
        std::future::ready(())
    }
}

fn queue<K: Resource<DynamicType = ()>>(
    rx: futures::channel::mpsc::UnboundedReceiver<ObjectRef<K>>,
) -> impl Stream<Item = Result<ObjectRef<K>, Infallible>> {
    rx.map(Ok)
}

/// Runs every controller until `shutdown` completes. `health.ready` turns true once the
/// stores are synced and the controllers run. If a task ends before shutdown, `health`
/// fails and [`RunError::TaskEnded`] says which and how.
pub async fn run(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    run_reporting(
        client,
        options,
        metrics,
        health,
        shutdown,
        Faults::default(),
    )
    .await
}

/// [`run_with`], then the end in `health`: not ready any more, and failed if a task ended.
async fn run_reporting(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
    faults: Faults,
) -> Result<(), RunError> {
    let result = run_with(client, options, metrics, &health, shutdown, faults).await;
    health.ready.store(false, Ordering::SeqCst);
    if let Err(error) = &result {
        health.fail(error.to_string());
    }
    result
}

async fn run_with(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    health: &Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
    faults: Faults,
) -> Result<(), RunError> {
    let ns = &options.namespace;
    let all = watcher::Config::default();
    let (networks, s1) = reflect(scoped::<Network>(&client, ns), all.clone(), |e| {
        Change::Network(Box::new(e))
    });
    let (interfaces, s2) = reflect(scoped::<Interface>(&client, ns), all.clone(), |e| {
        Change::Interface(Box::new(e))
    });
    let (peers, s3) = reflect(scoped::<Peer>(&client, ns), all.clone(), |e| {
        Change::Peer(Box::new(e))
    });
    let (routes, s4) = reflect(scoped::<Route>(&client, ns), all.clone(), |e| {
        Change::Route(Box::new(e))
    });
    let (meshes, s7) = reflect(scoped::<Mesh>(&client, ns), all.clone(), |e| {
        Change::Mesh(Box::new(e))
    });
    // Nodes: stored trimmed to what kwire reads, routed only when that changed (see
    // `nodes`): kubelets' heartbeats reconcile nothing.
    let (nodes, nodes_writer) = reflector::store();
    let mut node_filter = super::nodes::NodeFilter::default();
    let s5 = reflector::reflector(
        nodes_writer,
        watcher(Api::<Node>::all(client.clone()), all)
            .default_backoff()
            .modify(super::nodes::trim),
    )
    .filter(move |e| {
        let admit = e.as_ref().map_or(true, |e| node_filter.admit(e));
        std::future::ready(admit)
    })
    .map(|e| e.map(|e| Change::Node(Box::new(e))))
    .boxed();
    // `Api<PartialObjectMeta<_>>` makes metadata-only requests: key material never
    // crosses this watch.
    let secrets: Api<PartialObjectMeta<Secret>> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (secrets_store, secrets_writer) = reflector::store();
    let s6 = reflector::reflector(
        secrets_writer,
        watcher(
            secrets,
            watcher::Config::default().labels(&managed_selector()),
        )
        .default_backoff(),
    )
    .map(|e| e.map(|e| Change::Secret(Box::new(e))))
    .boxed();
    let stores = Stores::new(
        networks,
        interfaces,
        peers,
        routes,
        nodes,
        secrets_store,
        meshes,
    );

    let (net_tx, net_rx) = unbounded();
    let (if_tx, if_rx) = unbounded();
    let (peer_tx, peer_rx) = unbounded();
    let (route_tx, route_rx) = unbounded();
    let (mesh_tx, mesh_rx) = unbounded();
    let (leave_tx, leave_rx) = unbounded();
    let queues = Queues {
        networks: net_tx,
        interfaces: if_tx,
        peers: peer_tx,
        routes: route_tx,
        meshes: mesh_tx,
        leaving: leave_tx,
    };
    let router_stores = stores.clone();
    let world_changed = Arc::new(Notify::new());
    let router_changed = world_changed.clone();
    let findings_queues = queues.clone();
    let mut router = tokio::spawn(faults.router(async move {
        let mut batches =
            futures::stream::select_all([s1, s2, s3, s4, s5, s6, s7]).ready_chunks(1024);
        let mut last_batch: Option<tokio::time::Instant> = None;
        while let Some(mut batch) = batches.next().await {
            let wait = coalesce_delay(last_batch.map(|at| at.elapsed()));
            // Reading on through the window, not sleeping: each reflector updates its store
            // as its stream is read, so a reconcile during the window sees current objects,
            // its own last write included (else it would wait for the window's end, and
            // retry, before it could plan). Only routing waits.
            if !wait.is_zero() {
                let until = tokio::time::Instant::now() + wait;
                while let Ok(Some(more)) = tokio::time::timeout_at(until, batches.next()).await {
                    batch.extend(more);
                }
            }
            while let Some(Some(more)) = batches.next().now_or_never() {
                batch.extend(more);
            }
            route_batch(batch, &router_stores, &queues, &router_changed);
            last_batch = Some(tokio::time::Instant::now());
        }
    }));

    tracing::info!("waiting for the first list of every watched kind");
    stores
        .wait_until_ready()
        .await
        .map_err(|_| RunError::StoreDropped)?;
    health.ready.store(true, Ordering::SeqCst);
    tracing::info!("stores synced; controllers start");
    faults.synced();

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: crate::status::FIELD_MANAGER.into(),
            instance: options.instance.clone(),
        },
    );
    let ctx = Arc::new(Context::new(
        client,
        stores.clone(),
        options.config.clone(),
        Arc::new(SystemClock),
        Events::Kube(recorder),
        metrics,
    ));
    // The first findings before the first reconcile, so that no object is called valid
    // only to be called invalid a moment later.
    let world = stores.world();
    let first = tokio::task::spawn_blocking(move || topology::check(&world))
        .await
        .map_err(|error| {
            router.abort();
            RunError::TaskEnded {
                task: "first topology check",
                how: join_failure(error),
            }
        })?;
    ctx.metrics.topology_checks.inc();
    ctx.findings.replace(first);
    let mut findings_task = tokio::spawn(keep_findings(
        ctx.clone(),
        world_changed,
        findings_queues,
        faults.check(),
    ));
    // No debounce here: the router gathers requests (see `COALESCE`).
    let config = kube::runtime::controller::Config::default().concurrency(RECONCILES_IN_FLIGHT);
    let networks = applier(
        |o, c| Box::pin(network::reconcile(o, c)),
        error_policy::<Network>,
        ctx.clone(),
        stores.networks.clone(),
        queue(net_rx),
        config.clone(),
    )
    .for_each(log_result("network"));
    let interfaces = applier(
        |o, c| Box::pin(interface::reconcile(o, c)),
        error_policy::<Interface>,
        ctx.clone(),
        stores.interfaces.clone(),
        queue(if_rx),
        config.clone(),
    )
    .for_each(log_result("interface"));
    let peers = applier(
        |o, c| Box::pin(peer::reconcile(o, c)),
        error_policy::<Peer>,
        ctx.clone(),
        stores.peers.clone(),
        queue(peer_rx),
        config.clone(),
    )
    .for_each(log_result("peer"));
    let routes = applier(
        |o, c| Box::pin(route::reconcile(o, c)),
        error_policy::<Route>,
        ctx.clone(),
        stores.routes.clone(),
        queue(route_rx),
        config.clone(),
    )
    .for_each(log_result("route"));
    let meshes = applier(
        |o, c| Box::pin(mesh::reconcile(o, c)),
        error_policy::<Mesh>,
        ctx.clone(),
        stores.meshes.clone(),
        queue(mesh_rx),
        config.clone(),
    )
    .for_each(log_result("mesh"));
    let leaving = applier(
        |o, c| Box::pin(mesh_leave::reconcile(o, c)),
        error_policy::<Interface>,
        ctx.clone(),
        stores.interfaces.clone(),
        queue(leave_rx),
        config,
    )
    .for_each(log_result("mesh-leave"));

    let controllers = async {
        futures::join!(networks, interfaces, peers, routes, meshes, leaving);
    };
    // Every task runs until shutdown: one that ends first ends the run.
    let ended = tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            None
        }
        () = controllers => Some(RunError::TaskEnded {
            task: "controllers",
            how: "ended (their queues closed)".into(),
        }),
        result = &mut router => Some(RunError::ended("router", result)),
        result = &mut findings_task => Some(match result {
            Ok(how) => RunError::TaskEnded { task: "findings", how },
            Err(error) => RunError::TaskEnded { task: "findings", how: join_failure(error) },
        }),
    };
    router.abort();
    findings_task.abort();
    match ended {
        None => Ok(()),
        Some(error) => {
            tracing::error!(%error, "a long-lived task stopped");
            Err(error)
        }
    }
}

/// Failures a test injects into the tasks of [`run`]. Production builds have an empty
/// type whose hooks change nothing ([`Faults`] under `cfg(test)` is the other one).
#[cfg(not(test))]
#[derive(Clone, Copy, Default)]
struct Faults {}

#[cfg(not(test))]
impl Faults {
    fn router<F>(&self, router: F) -> F {
        router
    }

    fn check(&self) -> Check {
        topology::check
    }

    fn synced(&self) {}
}

#[cfg(test)]
#[derive(Clone, Default)]
struct Faults {
    /// The router panics once the stores are synced.
    router_panics: bool,
    /// The findings task's topology check panics (the first check, before the
    /// controllers start, is not affected).
    check_panics: bool,
    synced: Arc<Notify>,
}

#[cfg(test)]
impl Faults {
    fn router<F>(&self, router: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (panics, synced) = (self.router_panics, self.synced.clone());
        async move {
            if !panics {
                return router.await;
            }
            tokio::select! {
                () = router => {}
                () = synced.notified() => panic!("injected failure in the router"),
            }
        }
    }

    fn check(&self) -> Check {
        if self.check_panics {
            |_| panic!("injected failure in the topology check")
        } else {
            topology::check
        }
    }

    fn synced(&self) {
        self.synced.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the operator as the binary does, against the fake API server, with `faults`,
    /// until a task ends or `shutdown`; `None` if it still ran after a minute.
    async fn run_faulty(
        faults: Faults,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (Option<Result<(), RunError>>, Health) {
        let health = Health::default();
        let run = run_reporting(
            crate::fake_api::client(),
            Options::default(),
            Arc::new(Metrics::default()),
            health.clone(),
            shutdown,
            faults,
        );
        let result = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .ok();
        (result, health)
    }

    fn healthz(health: &Health) -> hyper::StatusCode {
        crate::http::respond("/healthz", &Metrics::default(), health).status()
    }

    #[tokio::test]
    async fn a_router_that_panics_ends_the_run_and_fails_the_probe() {
        let faults = Faults {
            router_panics: true,
            ..Faults::default()
        };
        let (result, health) = run_faulty(faults, std::future::pending()).await;
        let Some(Err(RunError::TaskEnded { task, how })) = result else {
            panic!("the run went on without its router: {result:?}");
        };
        assert_eq!(task, "router");
        assert_eq!(how, "panicked: injected failure in the router");
        assert_eq!(healthz(&health), hyper::StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            health
                .failed()
                .is_some_and(|why| why.starts_with("the router task panicked")),
            "{:?}",
            health.failed()
        );
    }

    #[tokio::test]
    async fn a_findings_task_whose_check_panics_ends_the_run_and_fails_the_probe() {
        let faults = Faults {
            check_panics: true,
            ..Faults::default()
        };
        let (result, health) = run_faulty(faults, std::future::pending()).await;
        let Some(Err(RunError::TaskEnded { task, how })) = result else {
            panic!("the run went on without its findings task: {result:?}");
        };
        assert_eq!(task, "findings");
        assert_eq!(
            how,
            "stopped: the topology check panicked: injected failure in the topology check"
        );
        assert_eq!(healthz(&health), hyper::StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_shutdown_after_the_stores_synced_is_no_failure() {
        let faults = Faults::default();
        let synced = faults.synced.clone();
        let (result, health) = run_faulty(faults, async move { synced.notified().await }).await;
        assert!(matches!(result, Some(Ok(()))), "{result:?}");
        assert_eq!(healthz(&health), hyper::StatusCode::OK);
        assert!(!health.ready.load(Ordering::SeqCst));
    }

    fn finding(kind: ObjectKind, name: &str, reason: &'static str) -> Finding {
        Finding {
            kind,
            namespace: "ns".into(),
            name: name.into(),
            condition_type: "TopologyValid",
            reason,
            message: format!("{name} {reason}"),
        }
    }

    #[test]
    fn meshes_follow_their_own_changes_node_changes_and_their_generated_interfaces() {
        let mesh: Mesh = serde_json::from_value(serde_json::json!({
            "apiVersion": "kwire.dev/v1alpha1", "kind": "Mesh",
            "metadata": {"name": "overlay", "namespace": "net", "uid": "u1"},
            "spec": {"nodeSelector": {}, "networks": [{"name": "v4"}]},
        }))
        .unwrap();
        let (meshes, mut writer) = reflector::store::<Mesh>();
        writer.apply_watcher_event(&watcher::Event::Apply(mesh.clone()));
        let key = ("net".to_string(), "overlay".to_string());

        let on_mesh = Change::Mesh(Box::new(watcher::Event::Apply(mesh)));
        assert_eq!(mesh_triggers(&on_mesh, &meshes), [key.clone()].into());

        let node: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "a"}})).unwrap();
        let on_node = Change::Node(Box::new(watcher::Event::Apply(node)));
        assert_eq!(mesh_triggers(&on_node, &meshes), [key.clone()].into());

        let interface = |owner: Option<&str>| -> Interface {
            let mut v = serde_json::json!({
                "apiVersion": "kwire.dev/v1alpha1", "kind": "Interface",
                "metadata": {"name": "x", "namespace": "net"},
                "spec": {"nodeName": "a", "addresses": ["10.0.0.1/24"]},
            });
            if let Some(kind) = owner {
                v["metadata"]["ownerReferences"] = serde_json::json!([{
                    "apiVersion": "kwire.dev/v1alpha1", "kind": kind, "name": "overlay",
                    "uid": "u1", "controller": true,
                }]);
            }
            serde_json::from_value(v).unwrap()
        };
        let generated =
            Change::Interface(Box::new(watcher::Event::Delete(interface(Some("Mesh")))));
        assert_eq!(mesh_triggers(&generated, &meshes), [key].into());
        for other in [interface(None), interface(Some("Deployment"))] {
            let change = Change::Interface(Box::new(watcher::Event::Apply(other)));
            assert!(mesh_triggers(&change, &meshes).is_empty());
        }
    }

    #[test]
    fn a_change_after_a_quiet_window_is_routed_at_once_and_a_burst_is_gathered() {
        assert_eq!(coalesce_delay(None), Duration::ZERO);
        assert_eq!(coalesce_delay(Some(COALESCE * 3)), Duration::ZERO);
        assert_eq!(coalesce_delay(Some(COALESCE)), Duration::ZERO);
        assert_eq!(
            coalesce_delay(Some(Duration::from_millis(30))),
            COALESCE - Duration::from_millis(30)
        );
        assert_eq!(coalesce_delay(Some(Duration::ZERO)), COALESCE);
    }

    #[test]
    fn only_objects_whose_findings_changed_are_reconciled_again() {
        let old = vec![
            finding(ObjectKind::Interface, "gone", "A"),
            finding(ObjectKind::Peer, "changed", "A"),
            finding(ObjectKind::Route, "same", "A"),
        ];
        let new = vec![
            finding(ObjectKind::Interface, "new", "A"),
            finding(ObjectKind::Peer, "changed", "B"),
            finding(ObjectKind::Route, "same", "A"),
        ];
        let changed = changed_findings(&old, &new);
        let names: Vec<(ObjectKind, &str)> =
            changed.iter().map(|(k, (_, n))| (*k, n.as_str())).collect();
        assert_eq!(
            names,
            [
                (ObjectKind::Interface, "gone"),
                (ObjectKind::Interface, "new"),
                (ObjectKind::Peer, "changed"),
            ]
        );
        assert!(changed_findings(&new, &new).is_empty());
    }
}
