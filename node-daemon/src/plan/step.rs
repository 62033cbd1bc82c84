use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::model::{
    IfaceName, LinkKind, ObservedDevice, ObservedForwarding, ObservedWireguard, OwnerRef,
    Ownership, PresharedKey, PrivateKey, PublicKey, RouteId, RouteKey,
};

/// WireGuard's default MTU (kernel module and wireguard-go alike).
pub const DEFAULT_WIREGUARD_MTU: u32 = 1420;

/// What the kernel reports for a link right after [`Step::CreateDevice`]: down, unmarked,
/// with WireGuard's default MTU, no addresses, no WireGuard configuration and forwarding
/// off. The planner plans the rest of a new device against it, and the kernel model
/// ([`crate::kernel_model`]) creates it.
pub fn fresh_device() -> ObservedDevice {
    ObservedDevice {
        ownership: Ownership::Owned,
        mark: None,
        kind: LinkKind::Wireguard,
        up: false,
        mtu: DEFAULT_WIREGUARD_MTU,
        addresses: Default::default(),
        wireguard: Some(ObservedWireguard::default()),
        forwarding: ObservedForwarding {
            ipv4: Some(false),
            ipv6: Some(false),
        },
    }
}

/// One kernel change. `Display` is redacted and meant for people
/// (`kwire-node --dry-run`, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create an (unmarked) WireGuard link; the dataplane records it in the
    /// state file first. Always followed by [`Step::MarkDevice`].
    CreateDevice {
        device: IfaceName,
        owner: OwnerRef,
    },
    /// Write kwire's alias (`kwire:<namespace>/<name>`) on an owned link.
    MarkDevice {
        device: IfaceName,
        owner: OwnerRef,
    },
    SetPrivateKey {
        device: IfaceName,
        key: PrivateKey,
    },
    SetListenPort {
        device: IfaceName,
        port: u16,
    },
    /// Add a peer, or change only the listed fields of an existing one.
    UpsertPeer {
        device: IfaceName,
        peer: PublicKey,
        change: PeerChange,
    },
    RemovePeer {
        device: IfaceName,
        peer: PublicKey,
    },
    /// Start a handshake with a peer now, instead of on the next packet or after WireGuard's
    /// 5 s retry: turn its persistent keepalive off and on again, which makes WireGuard
    /// send a keepalive at once, and leave the keepalive at `keepalive` seconds (0: none).
    /// Planned after a device's private key changes (see [`super::device`]).
    StartHandshake {
        device: IfaceName,
        peer: PublicKey,
        keepalive: u16,
    },
    AddAddress {
        device: IfaceName,
        address: IpNet,
    },
    RemoveAddress {
        device: IfaceName,
        address: IpNet,
    },
    SetMtu {
        device: IfaceName,
        mtu: u32,
    },
    SetUp {
        device: IfaceName,
    },
    /// Add a route with kwire's protocol.
    AddRoute {
        id: RouteId,
        route: RouteTarget,
    },
    /// Change an owned route in place (same table, destination and metric).
    ReplaceRoute {
        id: RouteId,
        route: RouteTarget,
    },
    /// Remove an owned route; the request carries kwire's protocol, so the
    /// kernel itself refuses to remove anybody else's route.
    RemoveRoute {
        id: RouteId,
        device: Option<IfaceName>,
    },
    EnableForwarding {
        scope: ForwardingScope,
        family: IpFamily,
    },
    /// Delete an owned link (and, for wireguard-go, stop its process).
    DeleteDevice {
        device: IfaceName,
    },
}

impl Step {
    /// The device this step depends on: when a step for a device fails, the
    /// remaining steps for that device are skipped and the others go on.
    pub fn device(&self) -> Option<&IfaceName> {
        match self {
            Step::CreateDevice { device, .. }
            | Step::MarkDevice { device, .. }
            | Step::SetPrivateKey { device, .. }
            | Step::SetListenPort { device, .. }
            | Step::UpsertPeer { device, .. }
            | Step::RemovePeer { device, .. }
            | Step::StartHandshake { device, .. }
            | Step::AddAddress { device, .. }
            | Step::RemoveAddress { device, .. }
            | Step::SetMtu { device, .. }
            | Step::SetUp { device }
            | Step::DeleteDevice { device } => Some(device),
            Step::AddRoute { route, .. } | Step::ReplaceRoute { route, .. } => Some(&route.device),
            Step::RemoveRoute { device, .. } => device.as_ref(),
            Step::EnableForwarding { scope, .. } => match scope {
                ForwardingScope::Device(d) => Some(d),
                ForwardingScope::All => None,
            },
        }
    }

    /// The kwire identity (table, destination) of the route a route step is about.
    pub fn route_key(&self) -> Option<RouteKey> {
        match self {
            Step::AddRoute { id, .. }
            | Step::ReplaceRoute { id, .. }
            | Step::RemoveRoute { id, .. } => Some(RouteKey::new(id.table, id.destination)),
            _ => None,
        }
    }

    /// A short name of the kind of step, for metrics and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::CreateDevice { .. } => "CreateDevice",
            Step::MarkDevice { .. } => "MarkDevice",
            Step::SetPrivateKey { .. } => "SetPrivateKey",
            Step::SetListenPort { .. } => "SetListenPort",
            Step::UpsertPeer { .. } => "UpsertPeer",
            Step::RemovePeer { .. } => "RemovePeer",
            Step::StartHandshake { .. } => "StartHandshake",
            Step::AddAddress { .. } => "AddAddress",
            Step::RemoveAddress { .. } => "RemoveAddress",
            Step::SetMtu { .. } => "SetMtu",
            Step::SetUp { .. } => "SetUp",
            Step::AddRoute { .. } => "AddRoute",
            Step::ReplaceRoute { .. } => "ReplaceRoute",
            Step::RemoveRoute { .. } => "RemoveRoute",
            Step::EnableForwarding { .. } => "EnableForwarding",
            Step::DeleteDevice { .. } => "DeleteDevice",
        }
    }
}

/// The peers whose [`Step::StartHandshake`] among `steps` has a keepalive of 0: to send one
/// keepalive the request turns theirs on, so a second request must turn it off again.
pub fn keepalives_to_turn_off(steps: &[Step]) -> impl Iterator<Item = &PublicKey> {
    steps.iter().filter_map(|s| match s {
        Step::StartHandshake {
            peer, keepalive: 0, ..
        } => Some(peer),
        _ => None,
    })
}

/// The fields of a peer to write. `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerChange {
    /// The peer does not exist yet.
    pub create: bool,
    pub endpoint: Option<SocketAddr>,
    /// Replace this peer's AllowedIPs with exactly this set.
    pub allowed_ips: Option<BTreeSet<IpNet>>,
    /// `Some(0)` turns keepalive off.
    pub persistent_keepalive: Option<u16>,
    /// `Some(None)` clears the preshared key.
    pub preshared_key: Option<Option<PresharedKey>>,
}

impl PeerChange {
    pub fn is_empty(&self) -> bool {
        !self.create
            && self.endpoint.is_none()
            && self.allowed_ips.is_none()
            && self.persistent_keepalive.is_none()
            && self.preshared_key.is_none()
    }
}

/// Where an owned route points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    pub device: IfaceName,
    pub via: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ForwardingScope {
    /// `net.ipv{4,6}.conf.all.forwarding`.
    All,
    Device(IfaceName),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

/// A desired object that cannot be reconciled without touching something
/// foreign. The caller turns it into a condition; nothing else is affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// A link that kwire does not own already has the device's name.
    InterfaceNameTaken {
        device: IfaceName,
        owner: OwnerRef,
        kind: LinkKind,
    },
    /// A foreign route holds the same table, destination and metric.
    RouteTaken {
        key: RouteKey,
        metric: u32,
        protocol: u8,
    },
    /// The route's device is not desired on this node, or is in conflict.
    RouteDeviceUnavailable { key: RouteKey, device: IfaceName },
}

impl Conflict {
    /// A condition reason, CamelCase as Kubernetes conventions want.
    pub fn reason(&self) -> &'static str {
        match self {
            Conflict::InterfaceNameTaken { .. } => "InterfaceNameConflict",
            Conflict::RouteTaken { .. } => "RouteConflict",
            Conflict::RouteDeviceUnavailable { .. } => "DeviceUnavailable",
        }
    }
}
