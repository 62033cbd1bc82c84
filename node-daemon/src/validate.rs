//! Checks on a [`DesiredNode`] that the planner relies on. The API side
//! validates its objects earlier; this is the last line before the kernel and
//! the only check in `--desired-file` mode.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::model::{DesiredNode, IfaceName, PublicKey, RouteKey};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("device {device}: peers {first} and {second} both claim AllowedIPs {prefix}")]
    SharedAllowedIp {
        device: IfaceName,
        prefix: IpNet,
        first: PublicKey,
        second: PublicKey,
    },
    #[error("device {device}: IPv6 link-local address {address} is managed by the kernel")]
    LinkLocalAddress { device: IfaceName, address: IpNet },
    #[error("route {} table {}: device {device} is not a desired device", key.destination, key.table)]
    UnknownRouteDevice { key: RouteKey, device: IfaceName },
    #[error("device {device}: MTU {mtu} is outside 68..=65535")]
    Mtu { device: IfaceName, mtu: u32 },
}

/// Every problem found, in a deterministic order.
pub fn validate(node: &DesiredNode) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    for (name, device) in &node.devices {
        if let Some(mtu) = device.mtu
            && !(68..=65535).contains(&mtu)
        {
            errors.push(ValidationError::Mtu {
                device: name.clone(),
                mtu,
            });
        }
        for address in &device.addresses {
            if let IpNet::V6(v6) = address
                && (v6.addr().segments()[0] & 0xffc0) == 0xfe80
            {
                errors.push(ValidationError::LinkLocalAddress {
                    device: name.clone(),
                    address: *address,
                });
            }
        }
        let mut claimed: BTreeMap<IpNet, PublicKey> = BTreeMap::new();
        for (key, peer) in &device.peers {
            for prefix in &peer.allowed_ips {
                if let Some(first) = claimed.insert(prefix.trunc(), *key) {
                    errors.push(ValidationError::SharedAllowedIp {
                        device: name.clone(),
                        prefix: prefix.trunc(),
                        first,
                        second: *key,
                    });
                }
            }
        }
    }
    for (key, route) in &node.routes {
        if !node.devices.contains_key(&route.device) {
            errors.push(ValidationError::UnknownRouteDevice {
                key: *key,
                device: route.device.clone(),
            });
        }
    }
    errors
}
