//! The one canonical shape of node state, shared by what kwire wants
//! ([`DesiredNode`]) and what the kernel has ([`ObservedNode`]).
//!
//! Everything is keyed (`BTreeMap`/`BTreeSet`) so that comparing desired and
//! observed state is a per-key set comparison and every plan, log line and
//! test has a deterministic order.
//!
//! Guarantees:
//! - Private and preshared keys live in [`PrivateKey`] and [`PresharedKey`]
//!   (`kwire_crds::keys`, the types the operator and the CLI use too), whose `Debug` and
//!   `Display` print `<redacted>`, which implement no `Serialize`, and whose bytes are
//!   wiped when dropped, so they cannot leak through logs or JSON reports.
//! - [`IfaceName`] and [`OwnerRef`] are validated when constructed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::SystemTime;

use ipnet::IpNet;
pub use kwire_crds::keys::{KeyError, PresharedKey, PrivateKey, PublicKey};

/// Routing table `main`, the kernel's default.
pub const TABLE_MAIN: u32 = 254;

/// Errors from parsing the validated newtypes of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid interface name {0:?}: must be 1-15 bytes without '/', ':' or whitespace")]
    IfaceName(String),
    #[error("invalid owner {0:?}: expected \"<namespace>/<name>\"")]
    Owner(String),
    #[error("the key {0}")]
    Key(#[from] KeyError),
}

/// A kernel interface name: 1–15 bytes, no `/`, `:` or whitespace, not `.`/`..`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfaceName(String);

impl IfaceName {
    pub fn new(name: impl Into<String>) -> Result<Self, ParseError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 15
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if ok {
            Ok(Self(name))
        } else {
            Err(ParseError::IfaceName(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfaceName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for IfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The API object that wants a device, as `"<namespace>/<name>"`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerRef {
    namespace: String,
    name: String,
}

impl OwnerRef {
    pub fn new(namespace: &str, name: &str) -> Result<Self, ParseError> {
        let bad = |s: &str| {
            s.is_empty()
                || s.len() > 253
                || s.chars()
                    .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        };
        // The alias `kwire:<namespace>/<name>` must fit IFLA_IFALIAS (255 bytes).
        if bad(namespace) || bad(name) || namespace.len() + name.len() > 248 {
            return Err(ParseError::Owner(format!("{namespace}/{name}")));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl FromStr for OwnerRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) => Self::new(ns, name),
            None => Err(ParseError::Owner(s.to_owned())),
        }
    }
}

impl fmt::Display for OwnerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl fmt::Debug for OwnerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// The configuration of one WireGuard peer on one device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerConfig {
    /// `None` leaves the endpoint to roaming (a learned endpoint is never cleared).
    pub endpoint: Option<SocketAddr>,
    /// Canonical (host bits cleared) prefixes; see [`canonical_allowed_ips`].
    pub allowed_ips: BTreeSet<IpNet>,
    /// `None` and `Some(0)` both mean "off".
    pub persistent_keepalive: Option<u16>,
    pub preshared_key: Option<PresharedKey>,
}

/// Clears host bits, the way WireGuard stores AllowedIPs.
pub fn canonical_allowed_ips<'a>(ips: impl IntoIterator<Item = &'a IpNet>) -> BTreeSet<IpNet> {
    ips.into_iter().map(|n| n.trunc()).collect()
}

/// One WireGuard device that this node must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredDevice {
    /// The Interface object that wants this device; written into the link alias.
    pub owner: OwnerRef,
    pub private_key: PrivateKey,
    /// `None`: any port (the kernel picks one on creation and kwire leaves it).
    pub listen_port: Option<u16>,
    /// Interface addresses with their prefix length (host bits kept), e.g. `10.0.0.1/24`.
    pub addresses: BTreeSet<IpNet>,
    /// `None`: leave the kernel's default.
    pub mtu: Option<u32>,
    pub peers: BTreeMap<PublicKey, PeerConfig>,
    /// This device relays traffic: enable IPv4/IPv6 forwarding on it.
    /// `false` means "no requirement"; kwire never disables forwarding.
    pub forwarding: bool,
}

/// The identity kwire gives a route: its table and canonical destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub table: u32,
    pub destination: IpNet,
}

impl RouteKey {
    pub fn new(table: u32, destination: IpNet) -> Self {
        Self {
            table,
            destination: destination.trunc(),
        }
    }
}

/// What a kwire route looks like, apart from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRoute {
    /// The kwire device the route goes out of; must be in [`DesiredNode::devices`].
    pub device: IfaceName,
    pub via: Option<IpAddr>,
    /// `None`: the kernel default (0 for IPv4, 1024 for IPv6).
    pub metric: Option<u32>,
}

/// Node-wide forwarding switches. `true` means "must be on"; kwire never turns
/// forwarding off, since other software on the node may rely on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeForwarding {
    pub ipv4: bool,
    pub ipv6: bool,
}

/// Everything kwire wants on this node. Produced by the API translation (or the
/// `--desired-file` debugging mode); consumed by [`crate::plan::plan`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredNode {
    pub devices: BTreeMap<IfaceName, DesiredDevice>,
    pub routes: BTreeMap<RouteKey, DesiredRoute>,
    pub forwarding: NodeForwarding,
    /// Owned devices to leave exactly as they are, with their routes: their object still
    /// exists but cannot be configured right now (a key Secret unreadable, say), and a
    /// transient gap must never tear a working link down.
    pub retained: BTreeSet<IfaceName>,
}

/// Whether kwire may change or delete an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ownership {
    /// Created by kwire (marked, or recorded in the state file).
    Owned,
    /// Anything else. kwire never changes or deletes it.
    Foreign,
}

/// The kind of a link as the kernel reports it (`IFLA_INFO_KIND`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkKind {
    /// Kernel WireGuard.
    Wireguard,
    /// A TUN device, which is how wireguard-go shows up.
    Tun,
    Other(String),
}

impl LinkKind {
    pub fn is_wireguard_capable(&self) -> bool {
        matches!(self, LinkKind::Wireguard | LinkKind::Tun)
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkKind::Wireguard => f.write_str("wireguard"),
            LinkKind::Tun => f.write_str("tun"),
            LinkKind::Other(k) if k.is_empty() => f.write_str("(no kind)"),
            LinkKind::Other(k) => f.write_str(k),
        }
    }
}

/// Per-device forwarding sysctls; `None` when the knob does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObservedForwarding {
    pub ipv4: Option<bool>,
    pub ipv6: Option<bool>,
}

/// Handshake and traffic counters: reported, never planned on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerStats {
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedPeer {
    pub config: PeerConfig,
    pub stats: PeerStats,
}

/// The WireGuard side of a device, as read through its UAPI or genetlink.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedWireguard {
    pub private_key: Option<PrivateKey>,
    pub public_key: Option<PublicKey>,
    pub listen_port: Option<u16>,
    pub peers: BTreeMap<PublicKey, ObservedPeer>,
}

/// One link in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedDevice {
    pub ownership: Ownership,
    /// The owner named by the link alias, when the link carries kwire's mark.
    /// An owned device without a mark was adopted from the state file.
    pub mark: Option<OwnerRef>,
    pub kind: LinkKind,
    /// Administrative state (`IFF_UP`).
    pub up: bool,
    pub mtu: u32,
    /// Addresses other than IPv6 link-local ones (which the kernel manages).
    pub addresses: BTreeSet<IpNet>,
    /// `None` for foreign links, and for owned links whose WireGuard
    /// configuration could not be read (for instance a wireguard-go whose UAPI
    /// socket is gone): such a device is recreated.
    pub wireguard: Option<ObservedWireguard>,
    pub forwarding: ObservedForwarding,
}

/// The kernel's identity of a route, as far as kwire cares: table,
/// destination, metric (routes with a TOS are not considered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteId {
    pub table: u32,
    pub destination: IpNet,
    pub metric: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRoute {
    /// Owned exactly when the route carries kwire's `rtm_protocol`.
    pub ownership: Ownership,
    pub protocol: u8,
    pub device: Option<IfaceName>,
    pub via: Option<IpAddr>,
}

/// Everything the kernel has that matters to kwire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedNode {
    pub devices: BTreeMap<IfaceName, ObservedDevice>,
    pub routes: BTreeMap<RouteId, ObservedRoute>,
    /// `net.ipv4.conf.all.forwarding` and `net.ipv6.conf.all.forwarding`.
    pub forwarding: ObservedForwarding,
}

impl ObservedNode {
    pub fn owned_devices(&self) -> impl Iterator<Item = (&IfaceName, &ObservedDevice)> {
        self.devices
            .iter()
            .filter(|(_, d)| d.ownership == Ownership::Owned)
    }
}

/// The metric the kernel will report for a route added with `metric`.
pub fn effective_metric(destination: &IpNet, metric: Option<u32>) -> u32 {
    match (destination, metric) {
        // IPv6 turns metric 0 into IP6_RT_PRIO_USER.
        (IpNet::V6(_), None | Some(0)) => 1024,
        (IpNet::V4(_), None) => 0,
        (_, Some(m)) => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_longer_than_fifteen_bytes_are_rejected() {
        assert!(IfaceName::new("wg0-server").is_ok());
        assert!(IfaceName::new("0123456789abcdef").is_err());
        assert!(IfaceName::new("").is_err());
        assert!(IfaceName::new("a/b").is_err());
        assert!(IfaceName::new("a b").is_err());
        assert!(IfaceName::new("..").is_err());
    }

    #[test]
    fn owners_parse_as_namespace_slash_name() {
        let o: OwnerRef = "default/wg0".parse().unwrap();
        assert_eq!(o.namespace(), "default");
        assert_eq!(o.name(), "wg0");
        assert!("nonamespace".parse::<OwnerRef>().is_err());
        assert!("a/b/c".parse::<OwnerRef>().is_err());
        assert!("/b".parse::<OwnerRef>().is_err());
        let long = format!("{}/{}", "n".repeat(63), "x".repeat(200));
        assert!(
            long.parse::<OwnerRef>().is_err(),
            "alias would not fit IFLA_IFALIAS"
        );
    }

    #[test]
    fn ipv6_routes_without_a_metric_get_1024() {
        let v6: IpNet = "fd00::/64".parse().unwrap();
        let v4: IpNet = "10.0.0.0/24".parse().unwrap();
        assert_eq!(effective_metric(&v6, None), 1024);
        assert_eq!(effective_metric(&v6, Some(0)), 1024);
        assert_eq!(effective_metric(&v4, None), 0);
        assert_eq!(effective_metric(&v4, Some(5)), 5);
    }
}
