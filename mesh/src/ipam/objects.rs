//! From API objects to allocator inputs.

use std::sync::Arc;

use ipnet::IpNet;
use kube_core::ResourceExt;
use kwire_crds::v1alpha1::{Interface, Network};

use super::{Outcome, Request, Reserved, allocate};

/// The UID that identifies an Interface as a holder. Objects read from files have no UID;
/// they stand in with their name, which is unique within a namespace.
pub fn holder_uid(interface: &Interface) -> String {
    interface
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| format!("name:{}", interface.name_any()))
}

/// The CIDR a Network allocates from: `spec.cidr`, else the one recorded in status
/// (carved from a pool). `None` until a pool CIDR is carved.
pub fn network_cidr(network: &Network) -> Option<IpNet> {
    network
        .spec
        .cidr
        .as_ref()
        .and_then(|c| c.net().ok())
        .or_else(|| network.status.as_ref()?.cidr.as_ref()?.parse().ok())
}

/// The Interfaces of the Network's namespace that ask it for an address, oldest first
/// (then by name), so that the oldest wins a contested `hostIndex`.
pub fn requests_for(network: &Network, interfaces: &[Arc<Interface>]) -> Vec<Request> {
    let name = network.name_any();
    let namespace = network.namespace();
    let mut askers: Vec<(&Interface, Option<u32>)> = interfaces
        .iter()
        .filter(|i| i.namespace() == namespace)
        .filter_map(|i| {
            let wanted = i
                .spec
                .networks
                .as_ref()?
                .iter()
                .find(|n| n.name.as_str() == name)?;
            Some((i.as_ref(), wanted.host_index))
        })
        .collect();
    askers.sort_by(|(a, _), (b, _)| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    askers
        .into_iter()
        .map(|(i, host_index)| Request {
            interface: i.name_any(),
            uid: holder_uid(i),
            host_index,
        })
        .collect()
}

/// Addresses written by hand on Interfaces of the namespace that fall inside `cidr`.
pub fn reserved_in(
    cidr: IpNet,
    namespace: Option<&str>,
    interfaces: &[Arc<Interface>],
) -> Vec<Reserved> {
    interfaces
        .iter()
        .filter(|i| i.namespace().as_deref() == namespace)
        .flat_map(|i| {
            i.spec
                .addresses
                .iter()
                .flatten()
                .filter_map(|a| a.net().ok())
                .filter(|a| cidr.contains(&a.addr()))
                .map(|a| Reserved {
                    address: a.addr(),
                    interface: i.name_any(),
                })
        })
        .collect()
}

/// Runs the allocator for one Network against the live Interfaces; `None` while the
/// Network has no CIDR yet.
pub fn allocate_for_network(
    network: &Network,
    cidr: Option<IpNet>,
    interfaces: &[Arc<Interface>],
) -> Option<Outcome> {
    let cidr = cidr.or_else(|| network_cidr(network))?;
    let recorded = network
        .status
        .as_ref()
        .map(|s| s.allocations.as_slice())
        .unwrap_or_default();
    Some(allocate(
        &network.name_any(),
        cidr,
        recorded,
        &requests_for(network, interfaces),
        &reserved_in(cidr, network.namespace().as_deref(), interfaces),
    ))
}
