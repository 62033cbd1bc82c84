//! The MTU of a device whose desired state sets none: the underlay's MTU minus WireGuard's
//! overhead, decided from the observation alone (pure, like the rest of the planner).
//!
//! The rule, in order:
//! 1. **The links to the peers' endpoints.** For each desired endpoint of the device, the
//!    route of table `main` that the kernel would use for it among the routes through the
//!    node's own links (longest prefix, then lowest metric; routes through kwire's devices
//!    are left out, so a device never sizes itself on itself). The smallest MTU of those
//!    links is the underlay's.
//! 2. **The default route.** When no endpoint is desired (a device that waits for roaming
//!    clients) or none has such a route: the smallest MTU among the node's own links that
//!    carry a default route (`0.0.0.0/0` or `::/0`) in table `main`.
//! 3. **WireGuard's own default**, [`DEFAULT_WIREGUARD_MTU`], when neither is known.
//!
//! The MTU is then the underlay's minus [`WIREGUARD_OVERHEAD`], kept within
//! [`MIN_DEFAULT_MTU`]..=[`MAX_DEFAULT_MTU`], the range `spec.mtu` accepts.
//!
//! Not considered: policy routing rules and route-level MTUs (`ip route … mtu N`), which
//! kwire does not observe; set `spec.mtu` when they matter.

use std::fmt;
use std::net::IpAddr;

use super::DEFAULT_WIREGUARD_MTU;
use crate::model::{DesiredDevice, IfaceName, ObservedNode, Ownership, TABLE_MAIN};

/// WireGuard's overhead over IPv6: IPv6 header 40, UDP 8, WireGuard header 16 and
/// authentication tag 16. (Over IPv4 it is 60; the larger one is safe on both.)
pub const WIREGUARD_OVERHEAD: u32 = 80;
/// The smallest default: IPv6 needs 1280 on a link to keep its addresses.
pub const MIN_DEFAULT_MTU: u32 = 1280;
/// The largest default, the largest `spec.mtu`.
pub const MAX_DEFAULT_MTU: u32 = 9000;

/// Where a device's MTU comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MtuSource {
    /// Set in the desired state (`spec.mtu`).
    Desired,
    /// The link to a peer's endpoint (rule 1), with its MTU.
    EndpointLink { link: IfaceName, mtu: u32 },
    /// A link carrying a default route (rule 2), with its MTU.
    DefaultRouteLink { link: IfaceName, mtu: u32 },
    /// Nothing known about the underlay: WireGuard's default.
    WireguardDefault,
}

impl fmt::Display for MtuSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MtuSource::Desired => f.write_str("spec.mtu"),
            MtuSource::EndpointLink { link, mtu } => {
                write!(
                    f,
                    "{link} (MTU {mtu}, the link to the peers' endpoints) minus {WIREGUARD_OVERHEAD}"
                )
            }
            MtuSource::DefaultRouteLink { link, mtu } => {
                write!(
                    f,
                    "{link} (MTU {mtu}, the link of the default route) minus {WIREGUARD_OVERHEAD}"
                )
            }
            MtuSource::WireguardDefault => f.write_str(
                "WireGuard's default (no route to the peers' endpoints and no default route seen)",
            ),
        }
    }
}

/// The MTU a device should have, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtuChoice {
    pub mtu: u32,
    pub source: MtuSource,
}

/// The MTU `want` should have on the node `observed` describes. See the module docs.
pub fn device_mtu(want: &DesiredDevice, observed: &ObservedNode) -> MtuChoice {
    if let Some(mtu) = want.mtu {
        return MtuChoice {
            mtu,
            source: MtuSource::Desired,
        };
    }
    let endpoints = want
        .peers
        .values()
        .filter_map(|p| p.endpoint.map(|e| e.ip()));
    let source = smallest(endpoints.filter_map(|ip| route_link(observed, ip)))
        .map(|(link, mtu)| MtuSource::EndpointLink { link, mtu })
        .or_else(|| {
            smallest(default_route_links(observed))
                .map(|(link, mtu)| MtuSource::DefaultRouteLink { link, mtu })
        })
        .unwrap_or(MtuSource::WireguardDefault);
    let mtu = match &source {
        MtuSource::EndpointLink { mtu, .. } | MtuSource::DefaultRouteLink { mtu, .. } => mtu
            .saturating_sub(WIREGUARD_OVERHEAD)
            .clamp(MIN_DEFAULT_MTU, MAX_DEFAULT_MTU),
        MtuSource::Desired | MtuSource::WireguardDefault => DEFAULT_WIREGUARD_MTU,
    };
    MtuChoice { mtu, source }
}

/// The smallest MTU, the first link by name among equals.
fn smallest(links: impl Iterator<Item = (IfaceName, u32)>) -> Option<(IfaceName, u32)> {
    links.min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
}

/// The node's own (not kwire's) link a route of table `main` goes through, with its MTU.
fn own_link<'a>(
    observed: &'a ObservedNode,
    device: Option<&'a IfaceName>,
) -> Option<(&'a IfaceName, u32)> {
    let device = device?;
    let link = observed.devices.get(device)?;
    (link.ownership == Ownership::Foreign && link.mtu > 0).then_some((device, link.mtu))
}

/// The link of the route the kernel would take to `ip` in table `main`, among routes
/// through the node's own links: longest prefix, then lowest metric.
fn route_link(observed: &ObservedNode, ip: IpAddr) -> Option<(IfaceName, u32)> {
    observed
        .routes
        .iter()
        .filter(|(id, _)| id.table == TABLE_MAIN && id.destination.contains(&ip))
        .filter_map(|(id, route)| own_link(observed, route.device.as_ref()).map(|link| (id, link)))
        .min_by(|(a, _), (b, _)| {
            b.destination
                .prefix_len()
                .cmp(&a.destination.prefix_len())
                .then(a.metric.cmp(&b.metric))
        })
        .map(|(_, (link, mtu))| (link.clone(), mtu))
}

/// The node's own links that carry a default route in table `main`.
fn default_route_links(observed: &ObservedNode) -> impl Iterator<Item = (IfaceName, u32)> + '_ {
    observed
        .routes
        .iter()
        .filter(|(id, _)| id.table == TABLE_MAIN && id.destination.prefix_len() == 0)
        .filter_map(|(_, route)| own_link(observed, route.device.as_ref()))
        .map(|(link, mtu)| (link.clone(), mtu))
}
