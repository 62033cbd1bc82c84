//! The real dataplane: rtnetlink for links, addresses and routes;
//! wireguard-control for WireGuard configuration; `/proc/sys` for forwarding;
//! the [`Supervisor`] for wireguard-go.
//!
//! wireguard-control's `DeviceUpdate` and `PeerConfigBuilder` derive a `Debug`
//! that prints keys: they are built inside [`wireguard_update`] and
//! handed straight to the blocking call, never logged or returned.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope, RouteType};
use rtnetlink::{AddressMessageBuilder, LinkUnspec, LinkWireguard, RouteMessageBuilder};
use wireguard_control::{Backend, DeviceUpdate, Key, PeerConfigBuilder};

use super::{Dataplane, DataplaneError};
use crate::backend::WireguardBackend;
use crate::model::{IfaceName, LinkKind, ObservedNode, RouteId};
use crate::observe::{ObserveError, forwarding_path, observe_kernel};
use crate::ownership::{OwnedDevices, StateFile, StateFileError, device_alias, route_protocol};
use crate::plan::{ForwardingScope, Step, keepalives_to_turn_off};
use crate::run::KernelEvents;
use crate::userspace::{Supervisor, socket_answers};

/// Why [`KernelDataplane::repair_state_file`] could not rebuild or write the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateRepairError {
    #[error("rebuilding the state file from the kernel: {0}")]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Write(#[from] StateFileError),
}

/// Settings of the [`KernelDataplane`].
#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// How new devices are created.
    pub backend: WireguardBackend,
    pub state_file: PathBuf,
    /// Normally `/proc/sys`.
    pub sysctl_root: PathBuf,
    /// The wireguard-go binary, for the userspace backend.
    pub wireguard_go: PathBuf,
}

/// The kernel of this network namespace.
pub struct KernelDataplane {
    handle: rtnetlink::Handle,
    backend: WireguardBackend,
    state: StateFile,
    sysctl_root: PathBuf,
    supervisor: Supervisor,
    kinds: BTreeMap<IfaceName, LinkKind>,
    writes: u64,
}

const EEXIST: i32 = nix::libc::EEXIST;
const ENOENT: i32 = nix::libc::ENOENT;
const ESRCH: i32 = nix::libc::ESRCH;
const ENODEV: i32 = nix::libc::ENODEV;
const EADDRNOTAVAIL: i32 = nix::libc::EADDRNOTAVAIL;

/// The positive errno of a netlink error, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn kernel_err(e: rtnetlink::Error) -> DataplaneError {
    DataplaneError::Kernel(e.to_string())
}

/// Treats the listed errnos as success.
fn tolerate(result: Result<(), rtnetlink::Error>, ok: &[i32]) -> Result<(), DataplaneError> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if errno(&e).is_some_and(|n| ok.contains(&n)) => Ok(()),
        Err(e) => Err(kernel_err(e)),
    }
}

impl KernelDataplane {
    /// `handle` must belong to a running rtnetlink connection (see [`connect`]).
    /// Process exits of wireguard-go are reported on `events`. A state file that cannot
    /// be read or parsed is logged and rebuilt from the kernel at the first observation
    /// (see [`crate::ownership`]); [`KernelDataplane::repair_state_file`] writes it back.
    pub fn new(
        handle: rtnetlink::Handle,
        config: KernelConfig,
        events: Option<KernelEvents>,
    ) -> Self {
        Self {
            handle,
            backend: config.backend,
            state: StateFile::load_or_rebuild(config.state_file),
            sysctl_root: config.sysctl_root,
            supervisor: Supervisor::new(config.wireguard_go, events),
            kinds: BTreeMap::new(),
            writes: 0,
        }
    }

    /// When the state file could not be loaded: rebuilds the record from the kernel and
    /// writes the file. Returns whether it wrote. Not for a dry run, which writes nothing.
    /// A failure is not fatal: the record is rebuilt by the next observation anyway and
    /// written with the next change.
    pub async fn repair_state_file(&mut self) -> Result<bool, StateRepairError> {
        if self.state.needs_rebuild() {
            self.observe().await?;
        }
        let wrote = self.state.save_if_unsaved()?;
        if wrote {
            tracing::info!(file = %self.state.path().display(), devices = self.state.devices().names().count(),
                "rebuilt the state file from the kernel");
        }
        Ok(wrote)
    }

    /// Leaves wireguard-go to the wireguard host watching `dir` (see
    /// [`crate::userspace::host`]) instead of starting it as a child.
    pub fn with_wireguard_host(mut self, dir: impl Into<PathBuf>) -> Self {
        self.supervisor = self.supervisor.with_host(dir);
        self
    }

    pub fn backend(&self) -> WireguardBackend {
        self.backend
    }

    /// PIDs of the wireguard-go processes this daemon started.
    pub fn userspace_pids(&self) -> BTreeMap<IfaceName, u32> {
        self.supervisor.pids()
    }

    async fn link(&mut self, name: &IfaceName) -> Result<(u32, LinkKind), DataplaneError> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name.as_str())
            .execute()
            .try_next()
            .await;
        match found {
            Ok(Some(msg)) => {
                let raw = crate::observe::RawLink::from_message(&msg);
                self.kinds.insert(name.clone(), raw.kind.clone());
                Ok((raw.index, raw.kind))
            }
            Ok(None) => Err(DataplaneError::NoSuchDevice(name.clone())),
            Err(e) if errno(&e) == Some(ENODEV) => Err(DataplaneError::NoSuchDevice(name.clone())),
            Err(e) => Err(kernel_err(e)),
        }
    }

    async fn index(&mut self, name: &IfaceName) -> Result<u32, DataplaneError> {
        Ok(self.link(name).await?.0)
    }

    async fn wireguard_backend(&mut self, name: &IfaceName) -> Result<Backend, DataplaneError> {
        let kind = match self.kinds.get(name) {
            Some(k) => k.clone(),
            None => self.link(name).await?.1,
        };
        match kind {
            LinkKind::Wireguard => Ok(Backend::Kernel),
            LinkKind::Tun => {
                // wireguard-control would start an unsupervised wireguard-go if
                // nothing answered; refuse instead and let a resync recreate.
                if socket_answers(name) {
                    Ok(Backend::Userspace)
                } else {
                    Err(DataplaneError::NoSuchDevice(name.clone()))
                }
            }
            LinkKind::Other(k) => Err(DataplaneError::Userspace(format!(
                "{name} is a {k} link, not WireGuard"
            ))),
        }
    }

    /// Sends WireGuard steps of one device as one request.
    async fn configure_wireguard(&mut self, steps: &[Step]) -> Result<(), DataplaneError> {
        let Some(name) = steps.first().and_then(Step::device).cloned() else {
            return Ok(());
        };
        let backend = self.wireguard_backend(&name).await?;
        let steps = steps.to_vec();
        self.writes += 1;
        let result = match backend {
            Backend::Userspace => {
                tokio::task::spawn_blocking(move || crate::uapi::set(&name, &steps)).await
            }
            _ => {
                let iface =
                    crate::observe::wg_interface_name(&name).map_err(DataplaneError::Wireguard)?;
                tokio::task::spawn_blocking(move || {
                    wireguard_update(&steps).apply(&iface, backend)?;
                    match wireguard_restore(&steps) {
                        Some(restore) => restore.apply(&iface, backend),
                        None => Ok(()),
                    }
                })
                .await
            }
        };
        result
            .map_err(|e| DataplaneError::Wireguard(io::Error::other(e.to_string())))?
            .map_err(DataplaneError::Wireguard)
    }

    async fn change_link(
        &mut self,
        name: &IfaceName,
        build: impl FnOnce(
            rtnetlink::LinkMessageBuilder<LinkUnspec>,
        ) -> rtnetlink::LinkMessageBuilder<LinkUnspec>,
    ) -> Result<(), DataplaneError> {
        let index = self.index(name).await?;
        let msg = build(LinkUnspec::new_with_index(index)).build();
        self.writes += 1;
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(kernel_err)
    }

    async fn create_device(&mut self, name: &IfaceName) -> Result<(), DataplaneError> {
        match self.link(name).await {
            Ok(_) => return Err(DataplaneError::DeviceExists(name.clone())),
            Err(DataplaneError::NoSuchDevice(_)) => {}
            Err(e) => return Err(e),
        }
        self.writes += 1;
        match self.backend {
            WireguardBackend::Kernel => {
                let result = self
                    .handle
                    .link()
                    .add(LinkWireguard::new(name.as_str()).build())
                    .execute()
                    .await;
                match result {
                    Err(e) if errno(&e) == Some(EEXIST) => {
                        return Err(DataplaneError::DeviceExists(name.clone()));
                    }
                    other => other.map_err(kernel_err)?,
                }
                self.kinds.insert(name.clone(), LinkKind::Wireguard);
            }
            WireguardBackend::Userspace => {
                self.supervisor.start(name).await?;
                self.kinds.insert(name.clone(), LinkKind::Tun);
            }
        }
        Ok(())
    }

    async fn delete_device(&mut self, name: &IfaceName) -> Result<(), DataplaneError> {
        self.supervisor.stop(name).await;
        match self.index(name).await {
            Ok(index) => {
                self.writes += 1;
                tolerate(self.handle.link().del(index).execute().await, &[ENODEV])?;
            }
            Err(DataplaneError::NoSuchDevice(_)) => {}
            Err(e) => return Err(e),
        }
        self.kinds.remove(name);
        self.state.forget(name)?;
        Ok(())
    }

    async fn address(
        &mut self,
        name: &IfaceName,
        address: &IpNet,
        add: bool,
    ) -> Result<(), DataplaneError> {
        let index = self.index(name).await?;
        self.writes += 1;
        if add {
            let result = self
                .handle
                .address()
                .add(index, address.addr(), address.prefix_len())
                .execute()
                .await;
            tolerate(result, &[EEXIST])
        } else {
            let msg = match address.addr() {
                IpAddr::V4(ip) => AddressMessageBuilder::<Ipv4Addr>::new()
                    .index(index)
                    .address(ip, address.prefix_len())
                    .build(),
                IpAddr::V6(ip) => AddressMessageBuilder::<Ipv6Addr>::new()
                    .index(index)
                    .address(ip, address.prefix_len())
                    .build(),
            };
            let result = self.handle.address().del(msg).execute().await;
            tolerate(result, &[EADDRNOTAVAIL, ENOENT, ENODEV])
        }
    }

    /// The request for a route step; `indices` caches link indices within one batch.
    async fn route_request(
        &mut self,
        step: &Step,
        indices: &mut BTreeMap<IfaceName, u32>,
    ) -> Result<RouteRequest, DataplaneError> {
        match step {
            Step::AddRoute { id, route } | Step::ReplaceRoute { id, route } => {
                let index = match indices.get(&route.device) {
                    Some(i) => *i,
                    None => {
                        let i = self.index(&route.device).await?;
                        indices.insert(route.device.clone(), i);
                        i
                    }
                };
                let mut builder =
                    route_builder(id)?
                        .output_interface(index)
                        .scope(if route.via.is_some() {
                            RouteScope::Universe
                        } else {
                            RouteScope::Link
                        });
                if let Some(via) = route.via {
                    builder = builder
                        .gateway(via)
                        .map_err(|e| DataplaneError::Kernel(e.to_string()))?;
                }
                Ok(RouteRequest::Add {
                    message: builder.build(),
                    replace: matches!(step, Step::ReplaceRoute { .. }),
                })
            }
            Step::RemoveRoute { id, .. } => {
                // Scope "nowhere" and type "unspec" match any route, like `ip route
                // del`; the protocol makes the kernel skip every route that is not kwire's.
                Ok(RouteRequest::Remove(
                    route_builder(id)?
                        .scope(RouteScope::NoWhere)
                        .kind(RouteType::Unspec)
                        .build(),
                ))
            }
            other => Err(DataplaneError::Kernel(format!(
                "{} is not a route step",
                other.kind()
            ))),
        }
    }

    /// Route steps, pipelined: up to [`ROUTE_PIPELINE_DEPTH`] requests in flight.
    async fn routes(&mut self, steps: &[Step]) -> Vec<Result<(), DataplaneError>> {
        let mut indices = BTreeMap::new();
        let mut requests = Vec::with_capacity(steps.len());
        for step in steps {
            let request = self.route_request(step, &mut indices).await;
            if request.is_ok() {
                self.writes += 1;
            }
            requests.push(request);
        }
        let handle = self.handle.clone();
        futures::stream::iter(requests.into_iter().map(|request| {
            let handle = handle.clone();
            async move { request?.send(handle).await }
        }))
        .buffered(ROUTE_PIPELINE_DEPTH)
        .collect()
        .await
    }

    fn enable_forwarding(&mut self, step: &Step) -> Result<(), DataplaneError> {
        let Step::EnableForwarding { scope, family } = step else {
            return Ok(());
        };
        let device = match scope {
            ForwardingScope::All => None,
            ForwardingScope::Device(d) => Some(d),
        };
        let path = forwarding_path(&self.sysctl_root, *family, device);
        self.writes += 1;
        match std::fs::write(&path, "1\n") {
            Ok(()) => Ok(()),
            // No such knob (IPv6 disabled): nothing to enable.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DataplaneError::Sysctl { path, source }),
        }
    }
}

/// A route message with kwire's protocol, keyed like [`RouteId`].
fn route_builder(id: &RouteId) -> Result<RouteMessageBuilder<IpAddr>, DataplaneError> {
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(id.destination.addr(), id.destination.prefix_len())
        .map_err(|e| DataplaneError::Kernel(e.to_string()))?
        .table_id(id.table)
        .protocol(RouteProtocol::from(route_protocol()))
        .priority(id.metric))
}

fn key(bytes: &[u8; 32]) -> Key {
    Key(*bytes)
}

/// The wireguard-control request for WireGuard steps of one device.
fn wireguard_update(steps: &[Step]) -> DeviceUpdate {
    let mut update = DeviceUpdate::new();
    for step in steps {
        update = match step {
            Step::SetPrivateKey { key: k, .. } => update.set_private_key(key(k.expose_secret())),
            Step::SetListenPort { port, .. } => update.set_listen_port(*port),
            Step::RemovePeer { peer, .. } => update.remove_peer_by_key(&key(peer.as_bytes())),
            Step::UpsertPeer { peer, change, .. } => {
                let mut p = PeerConfigBuilder::new(&key(peer.as_bytes()));
                if let Some(endpoint) = change.endpoint {
                    p = p.set_endpoint(endpoint);
                }
                if let Some(ips) = &change.allowed_ips {
                    p = p.replace_allowed_ips();
                    for ip in ips {
                        p = p.add_allowed_ip(ip.addr(), ip.prefix_len());
                    }
                }
                if let Some(k) = change.persistent_keepalive {
                    p = p.set_persistent_keepalive_interval(k);
                }
                match &change.preshared_key {
                    Some(Some(psk)) => p = p.set_preshared_key(key(psk.expose_secret())),
                    Some(None) => p = p.unset_preshared_key(),
                    None => {}
                }
                update.add_peer(p)
            }
            // Off, then on (two entries for the peer in one request, applied in order): the
            // kernel sends a keepalive when a peer's keepalive is turned on, and with no
            // session that keepalive starts a handshake.
            Step::StartHandshake {
                peer, keepalive, ..
            } => {
                let k = key(peer.as_bytes());
                update
                    .add_peer(PeerConfigBuilder::new(&k).set_persistent_keepalive_interval(0))
                    .add_peer(
                        PeerConfigBuilder::new(&k)
                            .set_persistent_keepalive_interval((*keepalive).max(1)),
                    )
            }
            _ => update,
        };
    }
    update
}

/// The request that turns the keepalive off again for peers that [`Step::StartHandshake`]
/// started with a keepalive of 0; `None` when there are none.
fn wireguard_restore(steps: &[Step]) -> Option<DeviceUpdate> {
    let mut peers = keepalives_to_turn_off(steps).peekable();
    peers.peek()?;
    Some(peers.fold(DeviceUpdate::new(), |update, peer| {
        update.add_peer(
            PeerConfigBuilder::new(&key(peer.as_bytes())).set_persistent_keepalive_interval(0),
        )
    }))
}

/// A route request, ready to send.
enum RouteRequest {
    Add {
        message: rtnetlink::packet_route::route::RouteMessage,
        replace: bool,
    },
    Remove(rtnetlink::packet_route::route::RouteMessage),
}

impl RouteRequest {
    async fn send(self, handle: rtnetlink::Handle) -> Result<(), DataplaneError> {
        match self {
            RouteRequest::Add {
                message,
                replace: true,
            } => handle
                .route()
                .add(message)
                .replace()
                .execute()
                .await
                .map_err(kernel_err),
            RouteRequest::Add {
                message,
                replace: false,
            } => tolerate(handle.route().add(message).execute().await, &[EEXIST]),
            RouteRequest::Remove(message) => tolerate(
                handle.route().del(message).execute().await,
                &[ESRCH, ENOENT],
            ),
        }
    }
}

/// How many route requests are in flight at once.
const ROUTE_PIPELINE_DEPTH: usize = 128;

impl Dataplane for KernelDataplane {
    async fn observe(&mut self) -> Result<ObservedNode, ObserveError> {
        let node = observe_kernel(&self.handle, self.state.devices(), &self.sysctl_root).await?;
        if self.state.needs_rebuild() {
            self.state.rebuild(&OwnedDevices::marked(&node));
        }
        self.kinds = node
            .devices
            .iter()
            .map(|(n, d)| (n.clone(), d.kind.clone()))
            .collect();
        Ok(node)
    }

    async fn execute(&mut self, step: &Step) -> Result<(), DataplaneError> {
        match step {
            Step::CreateDevice { device, owner } => {
                // Recorded first: a crash before the mark must not leave a
                // link that looks foreign on restart.
                self.state.record(device, owner)?;
                self.create_device(device).await
            }
            Step::MarkDevice { device, owner } => {
                let alias = device_alias(owner);
                self.change_link(device, |b| b.alias(alias)).await
            }
            Step::SetMtu { device, mtu } => {
                let mtu = *mtu;
                self.change_link(device, |b| b.mtu(mtu)).await
            }
            Step::SetUp { device } => self.change_link(device, |b| b.up()).await,
            Step::SetPrivateKey { .. }
            | Step::SetListenPort { .. }
            | Step::UpsertPeer { .. }
            | Step::RemovePeer { .. }
            | Step::StartHandshake { .. } => {
                self.configure_wireguard(std::slice::from_ref(step)).await
            }
            Step::AddAddress { device, address } => self.address(device, address, true).await,
            Step::RemoveAddress { device, address } => self.address(device, address, false).await,
            Step::AddRoute { .. } | Step::ReplaceRoute { .. } | Step::RemoveRoute { .. } => self
                .routes(std::slice::from_ref(step))
                .await
                .pop()
                .unwrap_or(Ok(())),
            Step::EnableForwarding { .. } => self.enable_forwarding(step),
            Step::DeleteDevice { device } => self.delete_device(device).await,
        }
    }

    async fn execute_wireguard(&mut self, steps: &[Step]) -> Result<(), (usize, DataplaneError)> {
        match self.configure_wireguard(steps).await {
            Ok(()) => Ok(()),
            Err(e) if steps.len() == 1 => Err((0, e)),
            Err(e) => {
                // Find the step that failed: the request may have been applied up to
                // it; every step is idempotent, so the ones before are simply repeated.
                tracing::debug!(error = %e, steps = steps.len(), "a batched WireGuard request failed; retrying step by step");
                for (i, step) in steps.iter().enumerate() {
                    self.configure_wireguard(std::slice::from_ref(step))
                        .await
                        .map_err(|e| (i, e))?;
                }
                Ok(())
            }
        }
    }

    async fn execute_routes(&mut self, steps: &[Step]) -> Vec<Result<(), DataplaneError>> {
        self.routes(steps).await
    }

    fn writes(&self) -> u64 {
        self.writes
    }
}

/// Opens an rtnetlink connection and runs it on the current tokio runtime.
pub fn connect() -> io::Result<rtnetlink::Handle> {
    let (handle, connection) = connection()?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Opens an rtnetlink connection: its handle, and the task that carries its messages
/// (which must run as long as the handle is used; the daemon supervises it).
pub fn connection() -> io::Result<(
    rtnetlink::Handle,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    Ok((handle, connection))
}
