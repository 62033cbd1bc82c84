//! Reading one WireGuard device: a wireguard-go device with kwire's own `get=1`
//! request ([`crate::uapi::get`], with a timeout), a kernel device through
//! wireguard-control (generic netlink).
//!
//! wireguard-control's `Device` derives a `Debug` that prints the private key:
//! it is converted into kwire's redacted types right here and never logged.

use std::io;

use ipnet::IpNet;
use std::collections::BTreeMap;

use wireguard_control::{Backend, Device, InterfaceName, PeerInfo};

use crate::uapi::UapiError;

use crate::model::{
    IfaceName, LinkKind, ObservedPeer, ObservedWireguard, PeerConfig, PeerStats, PresharedKey,
    PrivateKey, PublicKey,
};

#[derive(Debug, thiserror::Error)]
pub enum WireguardReadError {
    /// Nothing answers for this device: no UAPI socket, no such kernel
    /// device, or a link that is not WireGuard at all.
    #[error("no WireGuard configuration reachable: {0}")]
    Unreachable(ReadFailure),
    /// Something answered, but reading failed.
    #[error("{0}")]
    Failed(ReadFailure),
}

/// What went wrong reading a device.
#[derive(Debug, thiserror::Error)]
pub enum ReadFailure {
    /// wireguard-go, over its UAPI socket.
    #[error(transparent)]
    Userspace(#[from] UapiError),
    /// Kernel WireGuard, over generic netlink.
    #[error("{0}")]
    Kernel(io::Error),
    #[error("{name} is a {kind} link, not WireGuard")]
    NotWireguard { name: IfaceName, kind: LinkKind },
}

/// The wireguard-control backend that speaks to a link of this kind.
pub fn backend_for(kind: &LinkKind) -> Option<Backend> {
    match kind {
        LinkKind::Wireguard => Some(Backend::Kernel),
        LinkKind::Tun => Some(Backend::Userspace),
        LinkKind::Other(_) => None,
    }
}

pub fn wg_name(name: &IfaceName) -> io::Result<InterfaceName> {
    name.as_str()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))
}

/// Reads the WireGuard configuration of `name`, a link of kind `kind`.
pub async fn read_wireguard(
    name: &IfaceName,
    kind: &LinkKind,
) -> Result<ObservedWireguard, WireguardReadError> {
    match kind {
        LinkKind::Tun => crate::uapi::get(name).await.map_err(|e| {
            if e.is_unreachable() {
                WireguardReadError::Unreachable(e.into())
            } else {
                WireguardReadError::Failed(e.into())
            }
        }),
        LinkKind::Wireguard => {
            let failed = |e| WireguardReadError::Failed(ReadFailure::Kernel(e));
            let iface = wg_name(name).map_err(failed)?;
            let result = tokio::task::spawn_blocking(move || Device::get(&iface, Backend::Kernel))
                .await
                .map_err(|e| failed(io::Error::other(e.to_string())))?;
            match result {
                Ok(device) => Ok(observed_wireguard(device)),
                Err(e) if is_unreachable(&e) => {
                    Err(WireguardReadError::Unreachable(ReadFailure::Kernel(e)))
                }
                Err(e) => Err(failed(e)),
            }
        }
        LinkKind::Other(_) => Err(WireguardReadError::Unreachable(ReadFailure::NotWireguard {
            name: name.clone(),
            kind: kind.clone(),
        })),
    }
}

fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    ) || e.raw_os_error() == Some(nix::libc::ENODEV)
}

/// Converts wireguard-control's device (consumed, never printed). Zero
/// preshared keys and zero keepalives, which both backends report for
/// "unset", become `None`.
pub fn observed_wireguard(device: Device) -> ObservedWireguard {
    let private_key = device
        .private_key
        .map(|k| PrivateKey::from_bytes(k.0))
        .filter(|k| !k.is_zero());
    ObservedWireguard {
        public_key: device.public_key.map(|k| PublicKey::from_bytes(k.0)),
        private_key,
        listen_port: device.listen_port.filter(|p| *p != 0),
        peers: observed_peers(device.peers),
    }
}

fn observed_peers(peers: Vec<PeerInfo>) -> BTreeMap<PublicKey, ObservedPeer> {
    peers
        .into_iter()
        .map(|p| {
            let c = p.config;
            let config = PeerConfig {
                endpoint: c.endpoint,
                allowed_ips: c
                    .allowed_ips
                    .iter()
                    .filter_map(|a| IpNet::new(a.address, a.cidr).ok().map(|n| n.trunc()))
                    .collect(),
                persistent_keepalive: c.persistent_keepalive_interval.filter(|k| *k != 0),
                preshared_key: c
                    .preshared_key
                    .map(|k| PresharedKey::from_bytes(k.0))
                    .filter(|k| !k.is_zero()),
            };
            let stats = PeerStats {
                last_handshake: p.stats.last_handshake_time,
                rx_bytes: p.stats.rx_bytes,
                tx_bytes: p.stats.tx_bytes,
            };
            (
                PublicKey::from_bytes(c.public_key.0),
                ObservedPeer { config, stats },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use wireguard_control::{AllowedIp, Key};

    use super::*;

    #[test]
    fn zero_preshared_keys_and_zero_keepalives_mean_unset_and_prefixes_are_canonical() {
        let mut peer = PeerInfo::from_public_key(Key([2; 32]));
        peer.config.preshared_key = Some(Key([0; 32]));
        peer.config.persistent_keepalive_interval = Some(0);
        peer.config.allowed_ips = vec![AllowedIp {
            address: "10.2.0.7".parse::<IpAddr>().unwrap(),
            cidr: 24,
        }];
        let peers = observed_peers(vec![peer]);
        let p = &peers[&PublicKey::from_bytes([2; 32])].config;
        assert_eq!(p.preshared_key, None);
        assert_eq!(p.persistent_keepalive, None);
        assert_eq!(p.allowed_ips, ["10.2.0.0/24".parse().unwrap()].into());
    }
}
