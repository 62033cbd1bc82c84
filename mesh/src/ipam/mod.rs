//! Address allocation for Interfaces that take their addresses from a Network.
//!
//! The allocator is a pure function of the Network's CIDR, the allocations recorded in
//! `Network.status.allocations`, and the live Interfaces that ask for an address
//! ([`allocate`]). Guarantees, each covered by property tests:
//! - **sticky**: an allocation whose holder (same UID) is still live is kept as it is;
//!   it moves only when the holder's own `hostIndex` asks for another address that is free;
//! - **unique**: no address is handed out twice, and addresses written by hand inside the
//!   network ([`Reserved`]) are never handed out;
//! - **released only by absence**: an allocation is dropped only when no live Interface
//!   with its UID asks for this Network any more; a re-created Interface (same name, new
//!   UID) is a new holder, served after the old holder's allocation is released;
//! - **reproducible**: running the allocator on its own output changes nothing, so a
//!   restarted operator rebuilds the same state from status.
//!
//! Requests with a `hostIndex` are served before the others, so that "lowest free" never
//! takes the address a `hostIndex` names in the same pass.

mod pool;
#[cfg(test)]
mod tests;

pub use pool::{CarveError, Pool, PoolParseError, carve, choose_pool};

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use kwire_crds::v1alpha1::Allocation;

/// An Interface that asks the Network for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub interface: String,
    pub uid: String,
    /// The n-th usable address (1-based), or the lowest free one.
    pub host_index: Option<u32>,
}

/// An address written by hand (`spec.addresses`) inside the network: never handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    pub address: IpAddr,
    pub interface: String,
}

/// Why an Interface got no address, or not the one it asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error(
        "hostIndex {host_index} of Network {network} ({address}) is requested by Interface {wanted_by} but already held by Interface {held_by}: give {wanted_by} another hostIndex, or remove its hostIndex to take the lowest free address"
    )]
    HostIndexConflict {
        network: String,
        host_index: u32,
        address: String,
        wanted_by: String,
        held_by: String,
    },
    #[error(
        "hostIndex {host_index} is outside Network {network} ({cidr}), which has {usable} usable addresses: choose a hostIndex from 1 to {usable}"
    )]
    HostIndexOutOfRange {
        network: String,
        cidr: IpNet,
        host_index: u32,
        usable: u128,
    },
    #[error(
        "Network {network} ({cidr}) has no free address for Interface {interface}: all {usable} usable addresses are held; use a larger network or delete Interfaces that no longer need one"
    )]
    Exhausted {
        network: String,
        cidr: IpNet,
        interface: String,
        usable: u128,
    },
}

impl IpamError {
    /// A CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            IpamError::HostIndexConflict { .. } => "HostIndexConflict",
            IpamError::HostIndexOutOfRange { .. } => "HostIndexOutOfRange",
            IpamError::Exhausted { .. } => "NetworkExhausted",
        }
    }
}

/// The allocator's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Every allocation after this pass, sorted by address.
    pub allocations: Vec<Allocation>,
    /// Allocations made in this pass.
    pub added: Vec<Allocation>,
    /// Recorded allocations dropped in this pass (holder gone, duplicate, or outside the network).
    pub released: Vec<Allocation>,
    /// Problems by the requesting Interface's UID. An Interface listed here may still hold
    /// its previous address (a `hostIndex` it cannot move to).
    pub errors: BTreeMap<String, IpamError>,
}

impl Outcome {
    /// The address (with prefix length) held by the Interface with this UID.
    pub fn address_of(&self, uid: &str) -> Option<&str> {
        self.allocations
            .iter()
            .find(|a| a.uid.as_deref() == Some(uid))
            .map(|a| a.address.as_str())
    }
}

/// The addresses of a network that can be given to interfaces, as offsets from the
/// network address: IPv4 skips the network and broadcast addresses below /31, IPv6 skips
/// the subnet-router anycast address (offset 0) below /127.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usable {
    pub first: u128,
    pub last: u128,
}

impl Usable {
    pub fn of(cidr: IpNet) -> Self {
        let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
        let size_minus_one = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        match cidr {
            IpNet::V4(_) if host_bits >= 2 => Usable {
                first: 1,
                last: size_minus_one - 1,
            },
            IpNet::V6(_) if host_bits >= 2 => Usable {
                first: 1,
                last: size_minus_one,
            },
            _ => Usable {
                first: 0,
                last: size_minus_one,
            },
        }
    }

    pub fn count(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }
}

fn base(cidr: IpNet) -> u128 {
    match cidr.network() {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn offset_of(cidr: IpNet, addr: IpAddr) -> Option<u128> {
    if !cidr.contains(&addr) {
        return None;
    }
    let value = match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    Some(value - base(cidr))
}

fn addr_at(cidr: IpNet, offset: u128) -> IpAddr {
    let value = base(cidr) + offset;
    match cidr {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// The `n`-th usable address of `cidr` (1 is the first), if the network has that many.
pub fn nth_usable(cidr: IpNet, n: u32) -> Option<IpAddr> {
    let usable = Usable::of(cidr);
    let index = u128::from(n.checked_sub(1)?);
    (index < usable.count()).then(|| addr_at(cidr, usable.first + index))
}

/// `address/prefix-length`, as `Network.status.allocations[].address` records it.
pub fn with_prefix(cidr: IpNet, addr: IpAddr) -> String {
    format!("{addr}/{}", cidr.prefix_len())
}

/// Reads a recorded address (`10.1.0.1/24`, or a bare `10.1.0.1`).
pub fn parse_recorded(address: &str) -> Option<IpAddr> {
    address
        .parse::<IpNet>()
        .map(|n| n.addr())
        .or_else(|_| address.parse::<IpAddr>())
        .ok()
}

/// Allocates addresses of `cidr` (the Network `network`) to `requests`, starting from the
/// `recorded` allocations. See the module documentation for the guarantees.
pub fn allocate(
    network: &str,
    cidr: IpNet,
    recorded: &[Allocation],
    requests: &[Request],
    reserved: &[Reserved],
) -> Outcome {
    let usable = Usable::of(cidr);
    let in_range = |o: u128| o >= usable.first && o <= usable.last;
    let by_uid: BTreeMap<&str, &Request> = requests.iter().map(|r| (r.uid.as_str(), r)).collect();
    let by_name: BTreeMap<&str, &Request> =
        requests.iter().map(|r| (r.interface.as_str(), r)).collect();

    let mut outcome = Outcome::default();
    // offset -> (holder name, holder uid)
    let mut held: BTreeMap<u128, (String, String)> = BTreeMap::new();
    let mut holding: BTreeMap<String, u128> = BTreeMap::new();
    let reserved: BTreeMap<u128, &str> = reserved
        .iter()
        .filter_map(|r| offset_of(cidr, r.address).map(|o| (o, r.interface.as_str())))
        .collect();

    // 1. Keep every recorded allocation whose holder is still live, in address order.
    let mut recorded_sorted: Vec<(Option<u128>, &Allocation)> = recorded
        .iter()
        .map(|a| {
            (
                parse_recorded(&a.address).and_then(|ip| offset_of(cidr, ip)),
                a,
            )
        })
        .collect();
    recorded_sorted.sort_by_key(|(o, _)| *o);
    for (offset, allocation) in recorded_sorted {
        let holder = match &allocation.uid {
            Some(uid) => by_uid.get(uid.as_str()),
            None => by_name.get(allocation.interface.as_str()),
        };
        let keep = match (offset, holder) {
            (Some(o), Some(h)) => {
                in_range(o) && !held.contains_key(&o) && !holding.contains_key(&h.uid)
            }
            _ => false,
        };
        match (offset, holder) {
            (Some(o), Some(h)) if keep => {
                held.insert(o, (h.interface.clone(), h.uid.clone()));
                holding.insert(h.uid.clone(), o);
            }
            _ => outcome.released.push(allocation.clone()),
        }
    }

    let holder_of = |o: u128, held: &BTreeMap<u128, (String, String)>| -> Option<String> {
        held.get(&o)
            .map(|(name, _)| name.clone())
            .or_else(|| reserved.get(&o).map(|name| name.to_string()))
    };

    // 2. Requests with a hostIndex: take it, or move to it when the holder asks for another.
    for request in requests.iter().filter(|r| r.host_index.is_some()) {
        let Some(host_index) = request.host_index else {
            continue;
        };
        let Some(target) = nth_usable(cidr, host_index).and_then(|ip| offset_of(cidr, ip)) else {
            outcome.errors.insert(
                request.uid.clone(),
                IpamError::HostIndexOutOfRange {
                    network: network.to_string(),
                    cidr,
                    host_index,
                    usable: usable.count(),
                },
            );
            continue;
        };
        let current = holding.get(&request.uid).copied();
        if current == Some(target) {
            continue;
        }
        match holder_of(target, &held) {
            Some(other) => {
                outcome.errors.insert(
                    request.uid.clone(),
                    IpamError::HostIndexConflict {
                        network: network.to_string(),
                        host_index,
                        address: with_prefix(cidr, addr_at(cidr, target)),
                        wanted_by: request.interface.clone(),
                        held_by: other,
                    },
                );
            }
            None => {
                if let Some(old) = current {
                    held.remove(&old);
                    outcome.released.push(Allocation {
                        address: with_prefix(cidr, addr_at(cidr, old)),
                        interface: request.interface.clone(),
                        uid: Some(request.uid.clone()),
                    });
                }
                held.insert(target, (request.interface.clone(), request.uid.clone()));
                holding.insert(request.uid.clone(), target);
                outcome.added.push(Allocation {
                    address: with_prefix(cidr, addr_at(cidr, target)),
                    interface: request.interface.clone(),
                    uid: Some(request.uid.clone()),
                });
            }
        }
    }

    // 3. The others: the lowest free address.
    for request in requests.iter().filter(|r| r.host_index.is_none()) {
        if holding.contains_key(&request.uid) {
            continue;
        }
        match lowest_free(usable, &held, &reserved) {
            Some(o) => {
                held.insert(o, (request.interface.clone(), request.uid.clone()));
                holding.insert(request.uid.clone(), o);
                outcome.added.push(Allocation {
                    address: with_prefix(cidr, addr_at(cidr, o)),
                    interface: request.interface.clone(),
                    uid: Some(request.uid.clone()),
                });
            }
            None => {
                outcome.errors.insert(
                    request.uid.clone(),
                    IpamError::Exhausted {
                        network: network.to_string(),
                        cidr,
                        interface: request.interface.clone(),
                        usable: usable.count(),
                    },
                );
            }
        }
    }

    outcome.allocations = held
        .into_iter()
        .map(|(o, (interface, uid))| Allocation {
            address: with_prefix(cidr, addr_at(cidr, o)),
            interface,
            uid: Some(uid),
        })
        .collect();
    outcome
}

/// The lowest usable offset that is neither held nor reserved.
fn lowest_free(
    usable: Usable,
    held: &BTreeMap<u128, (String, String)>,
    reserved: &BTreeMap<u128, &str>,
) -> Option<u128> {
    let taken: BTreeSet<u128> = held
        .keys()
        .chain(reserved.keys())
        .copied()
        .filter(|o| *o >= usable.first)
        .collect();
    let mut candidate = usable.first;
    for t in taken {
        if t > candidate {
            break;
        }
        if t == candidate {
            candidate = candidate.checked_add(1)?;
        }
    }
    (candidate <= usable.last).then_some(candidate)
}

mod objects;
pub use objects::{allocate_for_network, holder_uid, network_cidr, requests_for, reserved_in};
