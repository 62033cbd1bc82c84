//! Reading the kernel into an [`ObservedNode`]. Read-only; ownership tags are
//! attached here (see [`crate::ownership`]).
//!
//! What is read:
//! - every link (name, kind, alias, `IFF_UP`, MTU) and its addresses, through
//!   rtnetlink;
//! - the WireGuard configuration of owned links only, through
//!   wireguard-control, addressed by name with the backend that matches the
//!   link kind (`wireguard` → kernel, `tun` → userspace UAPI; listing
//!   userspace devices is unreliable, so kwire never lists);
//! - every IPv4/IPv6 route of every table (dumped and filtered here, so that
//!   foreign routes that would collide with kwire's are seen too);
//! - the forwarding sysctls of owned links and of `all`.

mod links;
mod routes;
mod sysctl;
mod wireguard;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

pub use links::{RawLink, link_kind};
pub use routes::{RawRoute, classify_routes};
pub use sysctl::{forwarding_path, read_forwarding};
pub use wireguard::{
    ReadFailure, WireguardReadError, backend_for, observed_wireguard, read_wireguard,
    wg_name as wg_interface_name,
};

use crate::model::{IfaceName, ObservedDevice, ObservedForwarding, ObservedNode, Ownership};
use crate::ownership::{OwnedDevices, classify_link};
use crate::plan::IpFamily;

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("listing links: {0}")]
    ListLinks(rtnetlink::Error),
    #[error("listing addresses: {0}")]
    ListAddresses(rtnetlink::Error),
    #[error("listing routes: {0}")]
    ListRoutes(rtnetlink::Error),
    #[error("reading WireGuard device {device}: {source}")]
    ReadWireguard {
        device: IfaceName,
        source: ReadFailure,
    },
    #[error("reading {path}: {source}")]
    ReadSysctl { path: PathBuf, source: io::Error },
    /// A failure the fake dataplane of the unit tests was told to inject.
    #[cfg(test)]
    #[error("injected failure")]
    Injected,
}

/// Reads the node. `owned` is the state file's record of created devices.
pub async fn observe_kernel(
    handle: &rtnetlink::Handle,
    owned: &OwnedDevices,
    sysctl_root: &Path,
) -> Result<ObservedNode, ObserveError> {
    let raw_links = links::dump_links(handle).await?;
    let mut addresses = links::dump_addresses(handle).await?;
    let raw_routes = routes::dump_routes(handle).await?;

    let mut node = ObservedNode::default();
    let mut names = BTreeMap::new();
    for link in raw_links {
        let Ok(name) = IfaceName::new(link.name.clone()) else {
            continue;
        };
        names.insert(link.index, name.clone());
        let (ownership, mark) = classify_link(&name, &link.kind, link.alias.as_deref(), owned);
        let mut device = ObservedDevice {
            ownership,
            mark,
            kind: link.kind.clone(),
            up: link.up,
            mtu: link.mtu,
            addresses: addresses.remove(&link.index).unwrap_or_default(),
            wireguard: None,
            forwarding: ObservedForwarding::default(),
        };
        if ownership == Ownership::Owned {
            device.forwarding = ObservedForwarding {
                ipv4: read_forwarding(sysctl_root, IpFamily::V4, Some(&name))?,
                ipv6: read_forwarding(sysctl_root, IpFamily::V6, Some(&name))?,
            };
            device.wireguard = match read_wireguard(&name, &link.kind).await {
                Ok(wg) => Some(wg),
                Err(WireguardReadError::Unreachable(e)) => {
                    tracing::warn!(device = %name, error = %e,
                        "owned device has no reachable WireGuard configuration; it will be recreated");
                    None
                }
                Err(WireguardReadError::Failed(source)) => {
                    return Err(ObserveError::ReadWireguard {
                        device: name,
                        source,
                    });
                }
            };
        }
        node.devices.insert(name, device);
    }
    node.routes = classify_routes(raw_routes, &names);
    node.forwarding = ObservedForwarding {
        ipv4: read_forwarding(sysctl_root, IpFamily::V4, None)?,
        ipv6: read_forwarding(sysctl_root, IpFamily::V6, None)?,
    };
    Ok(node)
}
