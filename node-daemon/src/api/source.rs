//! What this node should have, read from the Kubernetes API.
//!
//! Reflectors keep this node's objects in memory, selected by the API server with field
//! selectors, so that the daemon neither receives nor holds the rest of the cluster: the
//! Interfaces of this node (`spec.nodeName`), the Peers with an end on it (the nodes the
//! operator resolved, `status.resolved.localNode` and `status.resolved.remoteNode`: two
//! watches, merged), and the Routes through its Interfaces (`spec.interface`, one watch per
//! Interface). An object whose selected field moves to another node comes as a deletion,
//! and what it configured goes. See docs/decisions/0009-node-scoped-watches.md. After
//! every change, and on every resync,
//! [`Source::snapshot`] gathers the keys and endpoint addresses the translation needs, and
//! [`desired::translate`] turns it all into a [`DesiredNode`].
//!
//! Guarantees: nothing is published before every reflector has listed once (a partial view
//! is never taken for "delete everything"); while the API server is unreachable the stores
//! keep the last complete view, and a key whose Secret cannot be read right now is the key
//! last read from it, so the node keeps its state. Only a Secret that is really gone (or
//! holds no usable key) makes its Interface `KeyUnavailable`.
//!
//! Key Secrets are not watched (the daemon may only read them): a snapshot after a watch
//! event reuses the key last read from a Secret it has read before, and the periodic one
//! ([`Source::snapshot`] with `reread_keys`) reads every Secret again. A watch event is
//! usually a status write of some Peer, which has nothing to do with keys, and reading the
//! Secrets again put an API round trip per Interface between a resolved Peer and its
//! configuration. Generated key Secrets never change (a rotation makes a new one, named in
//! the Interface's status, which is a new read); an edit of a user's Secret in place is
//! picked up by the next periodic snapshot, as it was when no event came.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use kwire_crds::keys::{KeyError, Zeroizing};
use kwire_crds::v1alpha1::{Interface, KeyMode, Peer, Route};
use tokio::sync::Notify;

use super::desired::{self, KeyLookup, NodeObjects, ObjectKey, Problem, Translation};
use crate::metrics::Metrics;
use crate::model::{PresharedKey, PrivateKey};

/// The data key of a private key in a kwire Secret (also the default for user Secrets).
pub const PRIVATE_KEY_DATA: &str = "privateKey";
/// The data key of a pre-shared key.
pub const PRESHARED_KEY_DATA: &str = "presharedKey";

/// A key's place: namespace, Secret, data key.
type KeyPlace = (String, String, String);

/// The reflectors of one node.
#[derive(Clone)]
pub struct Source {
    client: Client,
    interfaces: Store<Interface>,
    /// The Peers whose local end is on this node, and those whose remote end is (a Peer
    /// with both ends here is in both).
    peers_local: Store<Peer>,
    peers_remote: Store<Peer>,
    routes: Arc<RouteWatches>,
    /// The generated Interfaces of the Meshes this node is a member of.
    meshes: Arc<MeshWatches>,
    changed: Arc<Notify>,
    key_dir: PathBuf,
    /// The last keys read from Secrets, for API outages.
    last_private_keys: Arc<LastKeys<PrivateKey>>,
    last_preshared_keys: Arc<LastKeys<PresharedKey>>,
}

/// The field selector of the objects whose `field` is `node_name`.
fn on_node(field: &str, node_name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("{field}={node_name}"))
}

/// The last key read from each (namespace, Secret, data key). The keys are kwire's key types,
/// so a key replaced, forgotten or dropped with the map is wiped.
struct LastKeys<K>(Mutex<BTreeMap<KeyPlace, K>>);

impl<K> Default for LastKeys<K> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<K: Clone> LastKeys<K> {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<KeyPlace, K>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &KeyPlace) -> Option<K> {
        self.map().get(id).cloned()
    }

    fn put(&self, id: KeyPlace, key: K) {
        self.map().insert(id, key);
    }

    fn forget(&self, id: &KeyPlace) {
        self.map().remove(id);
    }
}

impl Source {
    /// Starts the reflectors and returns once each has listed. They run as the tasks of
    /// the returned [`Watches`] (and of the Route watches the source keeps), which must
    /// live as long as the source is used. Every object they receive is counted in
    /// `metrics`, as this node's or another's ([`concerns`]).
    ///
    /// Each watch selects this node's objects on the API server (see
    /// docs/decisions/0009-node-scoped-watches.md): Interfaces by `spec.nodeName`, Peers by
    /// the nodes the operator resolved (`status.resolved.localNode`, and
    /// `status.resolved.remoteNode`), Routes by `spec.interface`, one watch per Interface
    /// of this node.
    pub async fn start(
        client: Client,
        node_name: &str,
        key_dir: PathBuf,
        metrics: Arc<Metrics>,
    ) -> (Self, Watches) {
        let changed = Arc::new(Notify::new());
        let mut watches = Watches::default();
        // The classification against this node's Interfaces is a metric only: it never
        // decides what is configured.
        let (interfaces, interfaces_writer) = reflector::store();
        let node = node_name.to_string();
        watches.reflect(
            Watched::new(
                "Interfaces",
                Api::<Interface>::all(client.clone()),
                on_node("spec.nodeName", node_name),
            ),
            interfaces_writer,
            Counting::new(&metrics, "Interface", move |i: &Interface| {
                concerns::interface(i, &node)
            }),
            changed.clone(),
        );
        let mut peer_stores = Vec::new();
        for (what, field) in [
            ("Peers (local end)", "status.resolved.localNode"),
            ("Peers (remote end)", "status.resolved.remoteNode"),
        ] {
            let (node, mine) = (node_name.to_string(), interfaces.clone());
            let (store, writer) = reflector::store();
            watches.reflect(
                Watched::new(
                    what,
                    Api::<Peer>::all(client.clone()),
                    on_node(field, node_name),
                ),
                writer,
                Counting::new(&metrics, "Peer", move |p: &Peer| {
                    concerns::peer(p, &node, &mine)
                }),
                changed.clone(),
            );
            peer_stores.push(store);
        }
        let [peers_local, peers_remote] =
            <[Store<Peer>; 2]>::try_from(peer_stores).unwrap_or_else(|_| unreachable!());
        let mut ready = vec![
            interfaces.wait_until_ready().await,
            peers_local.wait_until_ready().await,
            peers_remote.wait_until_ready().await,
        ];
        // The Routes of the Interfaces listed: their watches list before anything is
        // published, so that a restarted daemon never takes a route not listed yet for one
        // to remove.
        let routes = Arc::new(RouteWatches {
            client: client.clone(),
            node: node_name.to_string(),
            metrics,
            changed: changed.clone(),
            mine: interfaces.clone(),
            watches: KeyedWatches::new("the Routes of Interface"),
        });
        for store in routes.sync(&interfaces.state()) {
            ready.push(store.wait_until_ready().await);
        }
        // The other members of this node's Meshes, also listed before anything is
        // published (a restarted member keeps its peers).
        let meshes = Arc::new(MeshWatches {
            client: client.clone(),
            node: node_name.to_string(),
            metrics: routes.metrics.clone(),
            changed: changed.clone(),
            watches: KeyedWatches::new("the members of Mesh"),
        });
        for store in meshes.sync(&interfaces.state()) {
            ready.push(store.wait_until_ready().await);
        }
        // The writer lives as long as its task; only a task that ended drops it, and
        // `Watches::ended` reports that (for the Route watches, the next sync restarts it).
        if ready.iter().any(Result::is_err) {
            tracing::warn!("a reflector stopped before it was ready");
        }
        let source = Self {
            client,
            interfaces,
            peers_local,
            peers_remote,
            routes,
            meshes,
            changed,
            key_dir,
            last_private_keys: Arc::default(),
            last_preshared_keys: Arc::default(),
        };
        (source, watches)
    }

    pub fn interfaces_state(&self) -> Vec<Arc<Interface>> {
        self.interfaces.state()
    }

    /// The Peers of this node, each once ([`merge_peers`]).
    pub fn peers_state(&self) -> Vec<Arc<Peer>> {
        merge_peers(self.peers_local.state(), self.peers_remote.state())
    }

    pub fn routes_state(&self) -> Vec<Arc<Route>> {
        self.routes.state()
    }

    /// The generated Interfaces of the Meshes this node is a member of (every member's).
    pub fn mesh_members_state(&self) -> Vec<Arc<Interface>> {
        self.meshes.state()
    }

    /// Resolves when any watched object changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Reads keys and resolves endpoints for the current objects, then translates them.
    /// Without `reread_keys`, a key already read from its Secret is not read again.
    pub async fn snapshot(&self, reread_keys: bool) -> Translation {
        let interfaces = self.interfaces.state();
        // Routes of an Interface that just appeared come with the next change, once its
        // watch has listed (its device is new: there is no route of it to keep meanwhile).
        drop(self.routes.sync(&interfaces));
        drop(self.meshes.sync(&interfaces));
        let mesh_members = self.meshes.state();
        let namespaces: BTreeSet<String> =
            interfaces.iter().filter_map(|i| i.namespace()).collect();
        let in_scope = |ns: Option<String>| ns.is_some_and(|ns| namespaces.contains(&ns));
        let peers: Vec<Arc<Peer>> = self
            .peers_state()
            .into_iter()
            .filter(|p| in_scope(p.namespace()))
            .collect();
        let routes: Vec<Arc<Route>> = self
            .routes_state()
            .into_iter()
            .filter(|r| in_scope(r.namespace()))
            .collect();

        let mut objects = NodeObjects {
            interfaces: interfaces.iter().map(Arc::as_ref).collect(),
            peers: peers.iter().map(Arc::as_ref).collect(),
            routes: routes.iter().map(Arc::as_ref).collect(),
            mesh_members: mesh_members.iter().map(Arc::as_ref).collect(),
            ..NodeObjects::default()
        };
        for interface in &interfaces {
            let key = (
                interface.namespace().unwrap_or_default(),
                interface.name_any(),
            );
            if let Some(lookup) = self.private_key(interface, reread_keys).await {
                objects.private_keys.insert(key, lookup);
            }
        }
        let local: BTreeSet<ObjectKey> = objects.private_keys.keys().cloned().collect();
        for peer in &peers {
            let ns = peer.namespace().unwrap_or_default();
            let on_this_node = local.contains(&(ns.clone(), peer.spec.interface.to_string()))
                || peer
                    .spec
                    .remote
                    .interface
                    .as_ref()
                    .is_some_and(|r| local.contains(&(ns.clone(), r.to_string())));
            if !on_this_node {
                continue;
            }
            if let Some(lookup) = self.preshared_key(peer, reread_keys).await {
                objects.preshared_keys.insert((ns, peer.name_any()), lookup);
            }
            for endpoint in endpoints_to_resolve(peer) {
                let first = tokio::net::lookup_host(endpoint.as_str())
                    .await
                    .ok()
                    .and_then(|mut a| a.next());
                if let Some(addr) = first {
                    objects.resolved_hosts.insert(endpoint, addr);
                }
            }
        }
        desired::translate(&objects)
    }

    async fn private_key(
        &self,
        interface: &Interface,
        reread: bool,
    ) -> Option<KeyLookup<PrivateKey>> {
        let ns = interface.namespace().unwrap_or_default();
        if interface.spec.key_mode == Some(KeyMode::NodeLocal) {
            return Some(node_local_key(&self.key_dir, &ns, &interface.name_any()));
        }
        let (secret, data_key) = match (
            &interface.spec.private_key_secret_ref,
            interface
                .status
                .as_ref()
                .and_then(|s| s.private_key_secret.clone()),
        ) {
            (Some(r), _) => (
                r.name.to_string(),
                r.key.clone().unwrap_or_else(|| PRIVATE_KEY_DATA.into()),
            ),
            (None, Some(generated)) => (generated, PRIVATE_KEY_DATA.into()),
            (None, None) => return None,
        };
        Some(
            self.secret_key(
                (ns, secret, data_key),
                reread,
                &self.last_private_keys,
                PrivateKey::from_secret_value,
            )
            .await,
        )
    }

    async fn preshared_key(&self, peer: &Peer, reread: bool) -> Option<KeyLookup<PresharedKey>> {
        let ns = peer.namespace().unwrap_or_default();
        let psk = peer.spec.preshared_key.as_ref()?;
        let (secret, data_key) = match (
            &psk.secret_ref,
            peer.status
                .as_ref()
                .and_then(|s| s.resolved.as_ref())
                .and_then(|r| r.preshared_key_secret.clone()),
        ) {
            (Some(r), _) => (
                r.name.to_string(),
                r.key.clone().unwrap_or_else(|| PRESHARED_KEY_DATA.into()),
            ),
            (None, Some(generated)) => (generated, PRESHARED_KEY_DATA.into()),
            (None, None) => {
                return Some(Err(Problem {
                    reason: "WaitingForOperator",
                    message: "the operator has not generated the pre-shared key Secret yet".into(),
                }));
            }
        };
        Some(
            self.secret_key(
                (ns, secret, data_key),
                reread,
                &self.last_preshared_keys,
                PresharedKey::from_secret_value,
            )
            .await,
        )
    }

    /// A key from a Secret, read with `parse` (the value is the base64 text `wg genkey`
    /// prints, or the raw bytes). Without `reread`, the key last read from the same place,
    /// if any.
    async fn secret_key<K: Clone>(
        &self,
        id: KeyPlace,
        reread: bool,
        last: &LastKeys<K>,
        parse: fn(&[u8]) -> Result<K, KeyError>,
    ) -> KeyLookup<K> {
        let (ns, name, data_key) = &id;
        let unavailable = |why: String| Problem {
            reason: "KeyUnavailable",
            message: format!("cannot use key {data_key:?} of Secret {ns}/{name}: {why}"),
        };
        if !reread && let Some(key) = last.get(&id) {
            return Ok(key);
        }
        let secret = match Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
        {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                last.forget(&id);
                return Err(unavailable("the Secret does not exist".into()));
            }
            Err(e) => {
                // An outage or a hiccup of the API server: keep using what was read last.
                if let Some(key) = last.get(&id) {
                    tracing::debug!(namespace = %ns, secret = %name, error = %e, "reading the Secret failed; using the key read before");
                    return Ok(key);
                }
                return Err(unavailable(format!("reading it failed ({e})")));
            }
        };
        match key_in_secret(&secret, data_key, parse) {
            Ok(key) => {
                last.put(id.clone(), key.clone());
                Ok(key)
            }
            Err(why) => {
                last.forget(&id);
                Err(unavailable(why))
            }
        }
    }
}

/// The key under `data_key` of a Secret, parsed where it is; else why there is none (never
/// quoting the value).
fn key_in_secret<K>(
    secret: &Secret,
    data_key: &str,
    parse: fn(&[u8]) -> Result<K, KeyError>,
) -> Result<K, String> {
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(data_key))
        .ok_or("the Secret has no such key")?;
    parse(&value.0).map_err(|e| format!("the value is not a WireGuard key: it {e}"))
}

/// What to do about a node-local key, decided from the result of reading its file.
#[derive(Debug)]
enum NodeLocalKey {
    Use(PrivateKey),
    /// The file does not exist: this is the Interface's first start on this node.
    Generate,
    /// The file exists (or may exist) but cannot be used: keep it, and the device as it is.
    Unavailable(String),
}

/// Only a file that is absent gets a new key. Any other failure (EIO, a permission error, a
/// file that does not hold a key) is reported: a new key would silently replace the one the
/// far ends know, and the old one could never be recovered.
fn node_local_key_action(read: std::io::Result<Vec<u8>>) -> NodeLocalKey {
    match read.map(Zeroizing::new) {
        Ok(text) => match PrivateKey::from_secret_value(&text) {
            Ok(key) => NodeLocalKey::Use(key),
            Err(e) => NodeLocalKey::Unavailable(format!(
                "the file does not hold a WireGuard key (it {e}); restore it from a backup, or \
                 delete it to have a new key generated (every peer then needs the new public key)"
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeLocalKey::Generate,
        Err(e) => NodeLocalKey::Unavailable(format!(
            "reading it failed ({e}); the file and the device are left as they are: fix the \
             file's permissions or the disk, no new key is generated"
        )),
    }
}

/// The node-local key of an Interface, created (mode 0600) when its file does not exist.
/// Any other failure is `KeyUnavailable`, which leaves the device as it is.
pub fn node_local_key(dir: &Path, namespace: &str, name: &str) -> KeyLookup<PrivateKey> {
    let path = dir.join(format!("{namespace}_{name}.key"));
    let failed = |why: String| Problem {
        reason: "KeyUnavailable",
        message: format!("node-local key {}: {why}", path.display()),
    };
    match node_local_key_action(std::fs::read(&path)) {
        NodeLocalKey::Use(key) => return Ok(key),
        NodeLocalKey::Unavailable(why) => return Err(failed(why)),
        NodeLocalKey::Generate => {}
    }
    // Clamped, as `wg genkey` does.
    let key = PrivateKey::generate().map_err(|e| failed(format!("no new key: {e}")))?;
    write_private_file(&path, &key).map_err(|e| failed(format!("cannot write it: {e}")))?;
    tracing::info!(file = %path.display(), "generated a node-local key");
    Ok(key)
}

fn write_private_file(path: &Path, key: &PrivateKey) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(key.to_base64().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(tmp, path)?;
    // The rename itself survives a power loss only once the folder is synced.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Endpoints given as DNS names, which the daemon resolves (again on every snapshot).
fn endpoints_to_resolve(peer: &Peer) -> Vec<String> {
    let resolved = peer.status.as_ref().and_then(|s| s.resolved.as_ref());
    let mut out: Vec<String> = [
        resolved.and_then(|r| r.endpoint.clone()),
        resolved.and_then(|r| r.local_endpoint.clone()),
    ]
    .into_iter()
    .flatten()
    .chain(
        peer.spec
            .remote
            .endpoint
            .as_ref()
            .map(|e| e.to_socket_string(0)),
    )
    .filter(|e| e.parse::<SocketAddr>().is_err())
    .collect();
    out.sort();
    out.dedup();
    out
}

/// Peers from the two watches, each once: a Peer with both ends on this node is in both,
/// and the two may briefly hold different versions of it (one watch ahead of the other);
/// the later version wins.
pub fn merge_peers(local: Vec<Arc<Peer>>, remote: Vec<Arc<Peer>>) -> Vec<Arc<Peer>> {
    use std::collections::btree_map::Entry;
    let version = |p: &Peer| {
        p.resource_version()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut by_key: BTreeMap<ObjectKey, Arc<Peer>> = BTreeMap::new();
    for peer in local.into_iter().chain(remote) {
        match by_key.entry((peer.namespace().unwrap_or_default(), peer.name_any())) {
            Entry::Vacant(e) => {
                e.insert(peer);
            }
            Entry::Occupied(mut e) => {
                if version(&peer) > version(e.get()) {
                    e.insert(peer);
                }
            }
        }
    }
    by_key.into_values().collect()
}

/// Watches of one kind, one per key (a namespace and a name), following a wanted set of keys:
/// a key that appears gets a watch, a key that goes stops its watch, and a watch whose task
/// ended is started again. Each task is aborted when its watch is dropped.
struct KeyedWatches<K: kube::Resource<DynamicType = ()> + 'static> {
    /// What the watches are of, for the warning when one ended (e.g. "the Routes of").
    what: &'static str,
    watches: Mutex<BTreeMap<ObjectKey, KeyedWatch<K>>>,
}

struct KeyedWatch<K: kube::Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    task: tokio::task::JoinHandle<()>,
}

impl<K: kube::Resource<DynamicType = ()> + 'static> Drop for KeyedWatch<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> KeyedWatches<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    fn new(what: &'static str) -> Self {
        Self {
            what,
            watches: Mutex::default(),
        }
    }

    fn watches(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectKey, KeyedWatch<K>>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One watch for each key of `wanted`, `start`ed into a new store's writer when missing
    /// (or its task ended); the watches of other keys stop. Returns the stores started.
    fn sync(
        &self,
        wanted: BTreeSet<ObjectKey>,
        mut start: impl FnMut(&ObjectKey, reflector::store::Writer<K>) -> tokio::task::JoinHandle<()>,
    ) -> Vec<Store<K>> {
        let mut watches = self.watches();
        watches.retain(|key, watch| {
            if watch.task.is_finished() {
                tracing::warn!(namespace = %key.0, name = %key.1, "the watch of {} {} ended; starting it again", self.what, key.1);
            }
            wanted.contains(key) && !watch.task.is_finished()
        });
        let mut started = Vec::new();
        for key in wanted {
            if watches.contains_key(&key) {
                continue;
            }
            let (store, writer) = reflector::store();
            let task = start(&key, writer);
            started.push(store.clone());
            watches.insert(key, KeyedWatch { store, task });
        }
        started
    }

    fn state(&self) -> Vec<Arc<K>> {
        self.watches()
            .values()
            .flat_map(|w| w.store.state())
            .collect()
    }
}

/// The Routes of this node: one watch per Interface of the node, of the Routes through it
/// (field `spec.interface`, in its namespace). A field selector cannot say "one of these
/// names", and a Route names its Interface, not its node.
struct RouteWatches {
    client: Client,
    node: String,
    metrics: Arc<Metrics>,
    changed: Arc<Notify>,
    /// This node's Interfaces, for the watch event metric.
    mine: Store<Interface>,
    watches: KeyedWatches<Route>,
}

impl RouteWatches {
    /// One watch for each of `interfaces`: starts those missing (and any whose task
    /// ended), stops those of Interfaces gone. Returns the stores of the watches started.
    fn sync(&self, interfaces: &[Arc<Interface>]) -> Vec<Store<Route>> {
        let wanted = interfaces
            .iter()
            .map(|i| (i.namespace().unwrap_or_default(), i.name_any()))
            .collect();
        self.watches.sync(wanted, |key, writer| {
            let (node, mine) = (self.node.clone(), self.mine.clone());
            tokio::spawn(watch_into(
                Watched::new(
                    "Routes",
                    Api::<Route>::namespaced(self.client.clone(), &key.0),
                    on_node("spec.interface", &key.1),
                ),
                writer,
                Counting::new(&self.metrics, "Route", move |r: &Route| {
                    concerns::route(r, &node, &mine)
                }),
                Wake::Always,
                self.changed.clone(),
            ))
        })
    }

    fn state(&self) -> Vec<Arc<Route>> {
        self.watches.state()
    }
}

/// The members of this node's Meshes: one watch per Mesh with a generated Interface on this
/// node, of the Interfaces carrying its `kwire.dev/mesh` label in its namespace (label
/// selector on the API server). A member needs every other member's key, addresses and
/// endpoint: O(N) objects per member, which a full mesh cannot avoid, and nothing of other
/// Meshes or of hand-written Interfaces. See decision 0010, "How a member sees the others".
struct MeshWatches {
    client: Client,
    node: String,
    metrics: Arc<Metrics>,
    changed: Arc<Notify>,
    /// By (namespace, `kwire.dev/mesh` label value).
    watches: KeyedWatches<Interface>,
}

impl MeshWatches {
    /// One watch per Mesh that `interfaces` (this node's) are generated for: starts those
    /// missing (and any whose task ended), stops those of Meshes this node left.
    fn sync(&self, interfaces: &[Arc<Interface>]) -> Vec<Store<Interface>> {
        let wanted = interfaces
            .iter()
            .filter(|i| i.owner_references().iter().any(|o| o.kind == "Mesh"))
            .filter_map(|i| {
                let label = i.labels().get(kwire_mesh::names::LABEL_MESH)?;
                Some((i.namespace().unwrap_or_default(), label.clone()))
            })
            .collect();
        self.watches.sync(wanted, |key, writer| {
            let node = self.node.clone();
            let selector = format!("{}={}", kwire_mesh::names::LABEL_MESH, key.1);
            tokio::spawn(watch_into(
                Watched::new(
                    "Mesh members",
                    Api::<Interface>::namespaced(self.client.clone(), &key.0),
                    watcher::Config::default().labels(&selector),
                ),
                writer,
                Counting::new(&self.metrics, "MeshMember", move |i: &Interface| {
                    concerns::interface(i, &node)
                }),
                Wake::on_change(mesh_member_digest),
                self.changed.clone(),
            ))
        })
    }

    fn state(&self) -> Vec<Arc<Interface>> {
        self.watches.state()
    }
}

/// Runs the watch of `watched` into `writer`: `changed` is notified on the events `wake`
/// lets through and every object received is counted by `counting`. Retries for ever.
async fn watch_into<K>(
    watched: Watched<K>,
    writer: reflector::store::Writer<K>,
    counting: Counting<K>,
    mut wake: Wake<K>,
    changed: Arc<Notify>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = watcher(watched.api, watched.config)
        .default_backoff()
        .reflect(writer);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                counting.count(&event);
                if wake.on(&event) {
                    changed.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(watch = watched.what, error = %e, "watch failed; retrying with backoff, keeping the last known objects")
            }
        }
    }
}

/// Which events of a watch wake the reconcile loop.
enum Wake<K> {
    /// Every event.
    Always,
    /// Only those that change what `digest` reads of an object (or delete it, or end a
    /// relist): the last digest of each object is kept by name.
    OnChange {
        digest: fn(&K) -> u64,
        seen: BTreeMap<(Option<String>, String), u64>,
    },
}

impl<K: kube::Resource> Wake<K> {
    fn on_change(digest: fn(&K) -> u64) -> Self {
        Wake::OnChange {
            digest,
            seen: BTreeMap::new(),
        }
    }

    /// Whether `event` should wake the loop.
    fn on(&mut self, event: &watcher::Event<K>) -> bool {
        let Wake::OnChange { digest, seen } = self else {
            return true;
        };
        let key = |o: &K| {
            (
                o.meta().namespace.clone(),
                o.meta().name.clone().unwrap_or_default(),
            )
        };
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                let value = digest(o);
                let changed = seen.insert(key(o), value) != Some(value);
                // During a relist, the end of it wakes the loop once.
                changed && matches!(event, watcher::Event::Apply(_))
            }
            watcher::Event::Delete(o) => {
                seen.remove(&key(o));
                true
            }
            watcher::Event::Init => false,
            watcher::Event::InitDone => true,
        }
    }
}

/// What of another member's generated Interface a node daemon's translation reads
/// ([`desired`]'s mesh peers and routes, the report's `status.mesh`): its metadata but the
/// resourceVersion and managed fields, its spec, and its key, addresses and endpoint. Its
/// other status (conditions, device, `status.mesh`), which every member rewrites as its
/// handshakes come and go, changes none of this node's peers, so it does not wake the loop:
/// without this, every member's status write woke all N daemons (O(N²) reconciles per
/// join, more at a cold start).
fn mesh_member_digest(interface: &Interface) -> u64 {
    use std::hash::{Hash, Hasher};
    let meta = &interface.metadata;
    let status = interface.status.as_ref();
    let relevant = serde_json::json!([
        meta.labels,
        meta.annotations,
        meta.owner_references,
        meta.deletion_timestamp,
        meta.uid,
        interface.spec,
        status.map(|s| (&s.public_key, &s.addresses, &s.endpoint)),
    ]);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    relevant.to_string().hash(&mut hasher);
    hasher.finish()
}

/// One watch: what it is called in errors, its API and its selectors.
struct Watched<K> {
    what: &'static str,
    api: Api<K>,
    config: watcher::Config,
}

impl<K> Watched<K> {
    fn new(what: &'static str, api: Api<K>, config: watcher::Config) -> Self {
        Self { what, api, config }
    }
}

/// Counts the objects a watch delivers, by whether they concern this node.
struct Counting<K> {
    metrics: Arc<Metrics>,
    kind: &'static str,
    this_node: Box<dyn Fn(&K) -> bool + Send + Sync>,
}

impl<K> Counting<K> {
    fn new(
        metrics: &Arc<Metrics>,
        kind: &'static str,
        this_node: impl Fn(&K) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            metrics: metrics.clone(),
            kind,
            this_node: Box::new(this_node),
        }
    }

    fn count(&self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) => {
                self.metrics.watch_event(self.kind, (self.this_node)(o));
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

/// Whether an object received on a watch concerns a node, for the watch event metric: an
/// Interface on the node; a Peer with an end on it; a Route through one of its Interfaces.
/// What the operator resolved says it (`status.resolved.localNode`/`remoteNode`); before
/// it has, the node's Interfaces (as the watch of Interfaces holds them now) do.
pub mod concerns {
    use kube::ResourceExt as _;
    use kube::runtime::reflector::{ObjectRef, Store};
    use kwire_crds::v1alpha1::{Interface, Peer, Route};

    pub fn interface(interface: &Interface, node: &str) -> bool {
        interface.spec.node_name.as_str() == node
    }

    fn is_mine(mine: &Store<Interface>, namespace: Option<String>, name: &str) -> bool {
        let reference = match namespace {
            Some(ns) => ObjectRef::new(name).within(&ns),
            None => ObjectRef::new(name),
        };
        mine.get(&reference).is_some()
    }

    pub fn peer(peer: &Peer, node: &str, mine: &Store<Interface>) -> bool {
        if let Some(resolved) = peer.status.as_ref().and_then(|s| s.resolved.as_ref()) {
            let ends = [&resolved.local_node, &resolved.remote_node];
            if ends.iter().any(|n| n.is_some()) {
                return ends.iter().any(|n| n.as_deref() == Some(node));
            }
        }
        std::iter::once(peer.spec.interface.as_str())
            .chain(peer.spec.remote.interface.as_ref().map(|r| r.as_str()))
            .any(|end| is_mine(mine, peer.namespace(), end))
    }

    pub fn route(route: &Route, _node: &str, mine: &Store<Interface>) -> bool {
        is_mine(mine, route.namespace(), route.spec.interface.as_str())
    }
}

/// The reflector tasks of a [`Source`]: they run until dropped (then they are aborted).
#[derive(Default)]
pub struct Watches {
    tasks: tokio::task::JoinSet<()>,
    names: BTreeMap<tokio::task::Id, &'static str>,
}

impl Watches {
    /// Starts a reflector of `watched` into `writer` ([`watch_into`]).
    fn reflect<K>(
        &mut self,
        watched: Watched<K>,
        writer: reflector::store::Writer<K>,
        counting: Counting<K>,
        changed: Arc<Notify>,
    ) where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let what = watched.what;
        let handle = self
            .tasks
            .spawn(watch_into(watched, writer, counting, Wake::Always, changed));
        self.names.insert(handle.id(), what);
    }

    /// Waits until a reflector ends (none should: a watch retries forever) and names it,
    /// with its panic message if it panicked.
    pub async fn ended(&mut self) -> (&'static str, Option<String>) {
        let Some(joined) = self.tasks.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (id, panic) = match joined {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), Some(e.to_string())),
        };
        (self.names.remove(&id).unwrap_or("a watch"), panic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mesh_member_wakes_the_loop_only_when_what_peers_are_made_of_changes() {
        let mut wake = Wake::on_change(mesh_member_digest);
        let mut member: Interface = object(serde_json::json!({
            "apiVersion": "kwire.dev/v1alpha1", "kind": "Interface",
            "metadata": {"name": "m-b", "namespace": "n", "resourceVersion": "1",
                "labels": {"kwire.dev/mesh": "overlay", "kwire.dev/mesh-role": "member"}},
            "spec": {"nodeName": "b", "listenPort": 51820},
            "status": {"publicKey": "k1", "addresses": ["10.60.0.2/24"],
                "endpoint": "10.211.55.11:51820"},
        }));
        // A relist wakes the loop once, at its end.
        assert!(!wake.on(&watcher::Event::Init));
        assert!(!wake.on(&watcher::Event::InitApply(member.clone())));
        assert!(wake.on(&watcher::Event::InitDone));
        // Its own status rewritten (conditions, device, how it sees its peers): nothing
        // of this node's peers changes.
        let status = member.status.as_mut().unwrap();
        status.mesh = Some(Default::default());
        status.conditions = vec![];
        member.metadata.resource_version = Some("2".into());
        assert!(!wake.on(&watcher::Event::Apply(member.clone())));
        // A new key, addresses, endpoint, label or annotation, a deletion: it does.
        member.status.as_mut().unwrap().public_key = Some("k2".into());
        assert!(wake.on(&watcher::Event::Apply(member.clone())));
        assert!(!wake.on(&watcher::Event::Apply(member.clone())));
        member
            .annotations_mut()
            .insert("kwire.dev/mesh-primary-hub".into(), "a".into());
        assert!(wake.on(&watcher::Event::Apply(member.clone())));
        member.status.as_mut().unwrap().endpoint = Some("10.211.55.12:51820".into());
        assert!(wake.on(&watcher::Event::Apply(member.clone())));
        assert!(wake.on(&watcher::Event::Delete(member.clone())));
        // Other watches wake on every event.
        assert!(Wake::<Interface>::Always.on(&watcher::Event::Apply(member)));
    }

    fn expect_unavailable(lookup: KeyLookup<PrivateKey>) -> Problem {
        match lookup {
            Ok(_) => panic!("expected KeyUnavailable, got a key"),
            Err(p) => p,
        }
    }

    fn object<K: serde::de::DeserializeOwned>(json: serde_json::Value) -> K {
        serde_json::from_value(json).expect("a valid object")
    }

    fn interface_on(name: &str, node: &str) -> Interface {
        object(serde_json::json!({
            "apiVersion": "kwire.dev/v1alpha1", "kind": "Interface",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"nodeName": node, "listenPort": 51820},
        }))
    }

    fn peer(name: &str, local: &str, remote: &str, resolved: serde_json::Value) -> Peer {
        object(serde_json::json!({
            "apiVersion": "kwire.dev/v1alpha1", "kind": "Peer",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"interface": local, "remote": {"interface": remote}},
            "status": {"resolved": resolved},
        }))
    }

    fn route(name: &str, interface: &str, status: serde_json::Value) -> Route {
        object(serde_json::json!({
            "apiVersion": "kwire.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"interface": interface, "destination": "10.9.0.0/24"},
            "status": status,
        }))
    }

    /// A store holding this node's Interfaces, as the watch of Interfaces fills it.
    fn mine(interfaces: &[Interface]) -> Store<Interface> {
        let (store, mut writer) = reflector::store();
        for i in interfaces {
            writer.apply_watcher_event(&watcher::Event::Apply(i.clone()));
        }
        store
    }

    #[test]
    fn an_object_concerns_a_node_by_its_interface_or_what_the_operator_resolved() {
        let here = mine(&[interface_on("wg0", "a")]);
        assert!(concerns::interface(&interface_on("wg0", "a"), "a"));
        assert!(!concerns::interface(&interface_on("wg1", "b"), "a"));
        let resolved = |l: &str, r: &str| serde_json::json!({"localNode": l, "remoteNode": r});
        // Resolved: the nodes the operator wrote decide, either end.
        assert!(concerns::peer(
            &peer("p", "x", "y", resolved("a", "b")),
            "a",
            &here
        ));
        assert!(concerns::peer(
            &peer("p", "x", "y", resolved("b", "a")),
            "a",
            &here
        ));
        assert!(!concerns::peer(
            &peer("p", "wg0", "y", resolved("b", "c")),
            "a",
            &here
        ));
        // Not resolved yet: this node's Interfaces decide.
        let unresolved = serde_json::json!({});
        assert!(concerns::peer(
            &peer("p", "wg0", "y", unresolved.clone()),
            "a",
            &here
        ));
        assert!(concerns::peer(
            &peer("p", "y", "wg0", unresolved.clone()),
            "a",
            &here
        ));
        assert!(!concerns::peer(
            &peer("p", "x", "y", unresolved),
            "a",
            &here
        ));
        assert!(concerns::route(
            &route("r", "wg0", serde_json::json!({})),
            "a",
            &here
        ));
        assert!(!concerns::route(
            &route("r", "wg9", serde_json::json!({})),
            "a",
            &here
        ));
    }

    fn versioned(mut p: Peer, version: &str, uid: &str) -> Arc<Peer> {
        p.metadata.resource_version = Some(version.into());
        p.metadata.uid = Some(uid.into());
        Arc::new(p)
    }

    #[test]
    fn a_peer_in_both_watches_is_taken_once_in_its_later_version() {
        let both = |v: &str| versioned(peer("both", "x", "y", serde_json::json!({})), v, "u1");
        let only_local = versioned(peer("l", "x", "y", serde_json::json!({})), "5", "u2");
        let only_remote = versioned(peer("r", "x", "y", serde_json::json!({})), "6", "u3");
        for (local, remote, kept) in [("7", "9", "9"), ("9", "7", "9"), ("8", "8", "8")] {
            let merged = merge_peers(
                vec![both(local), only_local.clone()],
                vec![only_remote.clone(), both(remote)],
            );
            let got: Vec<(String, String)> = merged
                .iter()
                .map(|p| (p.name_any(), p.resource_version().unwrap()))
                .collect();
            assert_eq!(
                got,
                [
                    ("both".to_string(), kept.to_string()),
                    ("l".into(), "5".into()),
                    ("r".into(), "6".into())
                ]
            );
        }
    }

    #[test]
    fn a_missing_key_file_gets_a_key_that_is_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = node_local_key(dir.path(), "ns", "wg0").unwrap();
        let again = node_local_key(dir.path(), "ns", "wg0").unwrap();
        assert_eq!(first.expose_secret(), again.expose_secret());
        // As `wg genkey` writes it: base64 and a newline, the key clamped.
        let text = std::fs::read_to_string(dir.path().join("ns_wg0.key")).unwrap();
        assert_eq!(text, format!("{}\n", first.to_base64().as_str()));
        let bytes = first.expose_secret();
        assert_eq!((bytes[0] & 7, bytes[31] & 0xc0), (0, 0x40));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("ns_wg0.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_key_file_that_cannot_be_read_is_kept_and_reported_not_replaced() {
        // A symbolic link to itself: reading fails with ELOOP (not "not found"), whoever runs
        // the test, while a rename over it would succeed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns_wg0.key");
        std::os::unix::fs::symlink(&path, &path).unwrap();
        let problem = expect_unavailable(node_local_key(dir.path(), "ns", "wg0"));
        assert_eq!(problem.reason, "KeyUnavailable");
        assert!(
            problem.message.contains("reading it failed"),
            "{}",
            problem.message
        );
        assert_eq!(
            std::fs::read_link(&path).unwrap(),
            path,
            "the file was replaced"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ns_wg0.key"], "no new key was written beside it");
    }

    #[test]
    fn a_key_file_without_a_key_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns_wg0.key");
        std::fs::write(&path, "not a key\n").unwrap();
        let problem = expect_unavailable(node_local_key(dir.path(), "ns", "wg0"));
        assert_eq!(problem.reason, "KeyUnavailable");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key\n");
    }

    #[test]
    fn only_an_absent_file_makes_a_new_key() {
        use std::io::{Error, ErrorKind};
        assert!(matches!(
            node_local_key_action(Err(Error::from(ErrorKind::NotFound))),
            NodeLocalKey::Generate
        ));
        for errno in [
            nix::libc::EIO,
            nix::libc::EACCES,
            nix::libc::EPERM,
            nix::libc::ELOOP,
        ] {
            assert!(
                matches!(
                    node_local_key_action(Err(Error::from_raw_os_error(errno))),
                    NodeLocalKey::Unavailable(_)
                ),
                "errno {errno}"
            );
        }
    }

    fn secret_with(value: &[u8]) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                PRIVATE_KEY_DATA.to_string(),
                k8s_openapi::ByteString(value.to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn a_key_in_a_secret_is_base64_text_or_the_raw_bytes() {
        // `wg genkey`, with the newline `kubectl create secret --from-file` keeps.
        let text = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n";
        let from_text = key_in_secret(
            &secret_with(text.as_bytes()),
            PRIVATE_KEY_DATA,
            PrivateKey::from_secret_value,
        )
        .unwrap();
        assert_eq!(
            from_text.public_key().to_base64(),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
        let from_bytes = key_in_secret(
            &secret_with(from_text.expose_secret()),
            PRIVATE_KEY_DATA,
            PrivateKey::from_secret_value,
        )
        .unwrap();
        assert_eq!(from_bytes, from_text);
    }

    #[test]
    fn a_secret_without_a_usable_key_says_what_is_wrong_and_never_shows_the_value() {
        let why = key_in_secret(
            &secret_with(b"c2VjcmV0LWJ1dC10b28tc2hvcnQ="),
            PRIVATE_KEY_DATA,
            PresharedKey::from_secret_value,
        )
        .unwrap_err();
        assert!(
            why.starts_with(
                "the value is not a WireGuard key: it decodes to 20 bytes instead of 32"
            ),
            "{why}"
        );
        assert!(!why.contains("c2VjcmV0"), "{why}");
        let why = key_in_secret(
            &secret_with(b"not a key"),
            "other",
            PresharedKey::from_secret_value,
        )
        .unwrap_err();
        assert_eq!(why, "the Secret has no such key");
    }
}
