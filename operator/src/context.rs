//! What every reconcile gets: the client, the read-only stores (the "world"), the clock,
//! where Events go, metrics, and the configuration.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kwire_crds::v1alpha1::{Interface, Mesh, Network, Peer, Route};

use crate::controllers::interface::KeySecret;
use crate::ipam::Pool;
use crate::metrics::Metrics;
use crate::status::Clock;
use crate::topology::Finding;
use crate::world::{NodeInfo, World};

/// The reflector stores every controller reads.
#[derive(Clone)]
pub struct Stores {
    pub networks: Store<Network>,
    pub interfaces: Store<Interface>,
    pub peers: Store<Peer>,
    pub routes: Store<Route>,
    pub nodes: Store<Node>,
    /// The metadata of the Secrets the operator made (label `app.kubernetes.io/managed-by`).
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub meshes: Store<Mesh>,
    version: Arc<AtomicU64>,
    cached: Arc<Mutex<Option<CachedWorld>>>,
}

/// A built [`World`] and the store version it was built from.
type CachedWorld = (u64, Arc<World>);

impl Stores {
    /// The stores, with a world cache that [`Stores::changed`] invalidates.
    pub fn new(
        networks: Store<Network>,
        interfaces: Store<Interface>,
        peers: Store<Peer>,
        routes: Store<Route>,
        nodes: Store<Node>,
        secrets: Store<PartialObjectMeta<Secret>>,
        meshes: Store<Mesh>,
    ) -> Self {
        Stores {
            networks,
            interfaces,
            peers,
            routes,
            nodes,
            secrets,
            meshes,
            version: Arc::new(AtomicU64::new(0)),
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// The Interfaces of one namespace, as the store holds them now.
    pub fn interfaces_in(&self, namespace: &str) -> Vec<Arc<Interface>> {
        self.interfaces
            .state()
            .into_iter()
            .filter(|i| i.metadata.namespace.as_deref() == Some(namespace))
            .collect()
    }

    /// Records that a store changed (call after the store was written): the next
    /// [`Stores::world`] is built anew.
    pub fn changed(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    /// A snapshot for the planners: built once per change of the stores and shared by the
    /// reconciles in between (it is immutable).
    pub fn world(&self) -> Arc<World> {
        let version = self.version.load(Ordering::SeqCst);
        if let Some((v, world)) = self.cached.lock().expect("world cache lock").as_ref()
            && *v == version
        {
            return world.clone();
        }
        let world = Arc::new(self.build_world());
        *self.cached.lock().expect("world cache lock") = Some((version, world.clone()));
        world
    }

    fn build_world(&self) -> World {
        World::new(
            self.networks.state(),
            self.interfaces.state(),
            self.peers.state(),
            self.routes.state(),
            Some(
                self.nodes
                    .state()
                    .iter()
                    .map(|n| NodeInfo::from_node(n))
                    .collect(),
            ),
        )
    }

    /// Waits until every store has completed its first list.
    pub async fn wait_until_ready(
        &self,
    ) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        self.networks.wait_until_ready().await?;
        self.interfaces.wait_until_ready().await?;
        self.peers.wait_until_ready().await?;
        self.routes.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.meshes.wait_until_ready().await?;
        self.secrets.wait_until_ready().await
    }

    /// The private key Secrets the operator made for Interface `namespace/name`, by
    /// generation (oldest first).
    pub fn key_secrets(
        &self,
        namespace: &str,
        name: &str,
    ) -> Vec<(u32, Arc<PartialObjectMeta<Secret>>)> {
        let mut found: Vec<(u32, Arc<PartialObjectMeta<Secret>>)> = self
            .secrets
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .filter_map(|s| crate::secrets::is_key_secret_of(&s.metadata, name).map(|g| (g, s)))
            .collect();
        found.sort_by_key(|(g, _)| *g);
        found
    }
}

/// Install-time settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address pools for Networks with `prefixLength`.
    pub pools: Vec<Pool>,
    /// How often every object is reconciled without a trigger (the safety net).
    pub resync: Duration,
    /// `persistentKeepalive` for Peers that set none (`None`: WireGuard's default, off).
    pub default_keepalive: Option<u16>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pools: Vec::new(),
            resync: Duration::from_secs(300),
            default_keepalive: None,
        }
    }
}

/// An Event to publish, without the object it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    pub warning: bool,
    pub reason: String,
    pub action: String,
    pub note: String,
}

impl EventSpec {
    pub fn normal(reason: &str, action: &str, note: impl Into<String>) -> Self {
        EventSpec {
            warning: false,
            reason: reason.into(),
            action: action.into(),
            note: note.into(),
        }
    }

    pub fn warning(reason: &str, action: &str, note: impl Into<String>) -> Self {
        EventSpec {
            warning: true,
            ..EventSpec::normal(reason, action, note)
        }
    }
}

/// Where Events go: the API server, or (in unit tests) a list.
pub enum Events {
    Kube(Recorder),
    #[cfg(test)]
    Recorded(Mutex<Vec<(ObjectReference, EventSpec)>>),
}

impl Events {
    /// Publishes an Event. Failures are logged, never returned: an Event is best effort.
    pub async fn publish(&self, regarding: &ObjectReference, event: EventSpec) {
        match self {
            Events::Kube(recorder) => {
                let mut note = event.note.clone();
                if note.len() > 1000 {
                    let mut end = 997;
                    while !note.is_char_boundary(end) {
                        end -= 1;
                    }
                    note = format!("{}...", &note[..end]);
                }
                let published = recorder
                    .publish(
                        &Event {
                            type_: if event.warning {
                                EventType::Warning
                            } else {
                                EventType::Normal
                            },
                            reason: event.reason.clone(),
                            note: Some(note),
                            action: event.action.clone(),
                            secondary: None,
                        },
                        regarding,
                    )
                    .await;
                if let Err(error) = published {
                    tracing::warn!(%error, reason = %event.reason, "could not publish an Event");
                }
            }
            #[cfg(test)]
            Events::Recorded(list) => list
                .lock()
                .expect("events lock")
                .push((regarding.clone(), event)),
        }
    }
}

/// The latest topology findings. One task computes them from the stores (at most a few
/// times per second, whatever the number of reconciles) and reconciles every object whose
/// findings change; reconciles read them from here.
#[derive(Default)]
pub struct Findings {
    current: std::sync::RwLock<Arc<Vec<Finding>>>,
}

impl Findings {
    pub fn get(&self) -> Arc<Vec<Finding>> {
        self.current.read().expect("findings lock").clone()
    }

    /// Replaces the findings and returns the previous ones.
    pub fn replace(&self, findings: Vec<Finding>) -> Arc<Vec<Finding>> {
        std::mem::replace(
            &mut *self.current.write().expect("findings lock"),
            Arc::new(findings),
        )
    }
}

/// Key Secrets already read, by UID and resourceVersion. Only public keys and metadata are
/// kept (see [`KeySecret`]); the cache is pruned when it outgrows the Secrets the operator
/// knows of.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (String, KeySecret)>>,
}

impl KeyCache {
    pub fn get(&self, uid: &str, resource_version: &str) -> Option<KeySecret> {
        let entries = self.entries.lock().expect("key cache lock");
        entries
            .get(uid)
            .filter(|(rv, _)| rv == resource_version)
            .map(|(_, key)| key.clone())
    }

    /// Whether a key Secret `namespace/name` was read or created by this process.
    pub fn knows(&self, namespace: &str, name: &str) -> bool {
        let entries = self.entries.lock().expect("key cache lock");
        entries.values().any(|(_, key)| {
            key.secret.metadata.namespace.as_deref() == Some(namespace)
                && key.secret.metadata.name.as_deref() == Some(name)
        })
    }

    /// Keeps `key`; drops everything when there are more entries than twice `live()`.
    pub fn put(&self, key: &KeySecret, live: impl FnOnce() -> usize) {
        let (Some(uid), Some(rv)) = (
            key.secret.metadata.uid.clone(),
            key.secret.metadata.resource_version.clone(),
        ) else {
            return;
        };
        let mut entries = self.entries.lock().expect("key cache lock");
        if entries.len() > 2 * live() + 16 {
            entries.clear();
        }
        entries.insert(uid, (rv, key.clone()));
    }
}

/// Secrets whose creation found one of the same name: the key observation reads such a name
/// from the API server instead of assuming, from the store of the operator's own Secrets,
/// that it is free.
#[derive(Debug, Default)]
pub struct SecretConflicts(Mutex<std::collections::HashSet<(String, String)>>);

impl SecretConflicts {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<(String, String)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, namespace: &str, name: &str) {
        self.set().insert((namespace.to_string(), name.to_string()));
    }

    pub fn seen(&self, namespace: &str, name: &str) -> bool {
        self.set()
            .contains(&(namespace.to_string(), name.to_string()))
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        let mut set = self.set();
        if !set.is_empty() {
            set.remove(&(namespace.to_string(), name.to_string()));
        }
    }
}

/// Failures of one object in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Streak {
    /// How many (1 for the first).
    pub attempt: u32,
    /// Since the first of them (by the context's clock).
    pub failing_for: Duration,
}

/// The context of every reconcile.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// The latest topology findings.
    pub findings: Arc<Findings>,
    /// Key Secrets already read.
    pub key_cache: KeyCache,
    /// CIDRs carved in this process, by Network UID: covers the moment between a carve and
    /// the Network's status showing it in the store.
    pub(crate) carved: tokio::sync::Mutex<BTreeMap<String, IpNet>>,
    /// Consecutive failures by object, for backoff, and when the first of them happened.
    failures: Mutex<HashMap<String, (u32, Timestamp)>>,
    /// The versions of the Interfaces and Networks whose status the operator applied last.
    pub written: crate::written::WrittenVersions,
    /// Secrets the operator tried to create and found already there (namespace, name).
    pub secret_conflicts: SecretConflicts,
    /// Objects whose waiting status is held back (see `controllers::waiting`).
    pub holds: crate::controllers::waiting::Holds,
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        config: Config,
        clock: Arc<dyn Clock>,
        events: Events,
        metrics: Arc<Metrics>,
    ) -> Self {
        Context {
            client,
            stores,
            config,
            clock,
            events,
            metrics,
            findings: Arc::new(Findings::default()),
            key_cache: KeyCache::default(),
            carved: tokio::sync::Mutex::new(BTreeMap::new()),
            failures: Mutex::new(HashMap::new()),
            written: crate::written::WrittenVersions::default(),
            secret_conflicts: SecretConflicts::default(),
            holds: crate::controllers::waiting::Holds::default(),
        }
    }

    /// Counts one more failure of `key` and returns the streak it extends.
    pub fn failed(&self, key: &str) -> Streak {
        let now = self.clock.now().0;
        let mut failures = self.failures.lock().expect("failures lock");
        let (count, since) = failures.entry(key.to_string()).or_insert((0, now));
        *count = count.saturating_add(1);
        Streak {
            attempt: *count,
            failing_for: Duration::try_from(now.duration_since(*since)).unwrap_or_default(),
        }
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }
}
