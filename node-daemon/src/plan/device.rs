//! Per-device planning: the link, its WireGuard configuration, its peers and
//! addresses, and forwarding.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::{ForwardingScope, IpFamily, PeerChange, Step, fresh_device};
use crate::model::{
    DesiredDevice, DesiredNode, IfaceName, ObservedDevice, ObservedNode, ObservedPeer,
    ObservedWireguard, PeerConfig, PublicKey, canonical_allowed_ips,
};

/// Steps for one desired device. `have` is `None` when the device must be created; `mtu`
/// is the MTU it must have (see [`super::mtu`]).
pub(super) fn plan_device(
    name: &IfaceName,
    want: &DesiredDevice,
    have: Option<&ObservedDevice>,
    mtu: u32,
    steps: &mut Vec<Step>,
) {
    let fresh;
    let have = match have {
        Some(h) => h,
        None => {
            steps.push(Step::CreateDevice {
                device: name.clone(),
                owner: want.owner.clone(),
            });
            fresh = fresh_device();
            &fresh
        }
    };
    let empty = ObservedWireguard::default();
    let wg = have.wireguard.as_ref().unwrap_or(&empty);
    let device = || name.clone();

    if have.mark.as_ref() != Some(&want.owner) {
        steps.push(Step::MarkDevice {
            device: device(),
            owner: want.owner.clone(),
        });
    }
    if have.mtu != mtu {
        steps.push(Step::SetMtu {
            device: device(),
            mtu,
        });
    }
    // A new key on a device that had one (a rotation) ends every session of the device.
    let rekeyed = wg.private_key.is_some() && wg.private_key.as_ref() != Some(&want.private_key);
    if wg.private_key.as_ref() != Some(&want.private_key) {
        steps.push(Step::SetPrivateKey {
            device: device(),
            key: want.private_key.clone(),
        });
    }
    if let Some(port) = want.listen_port
        && wg.listen_port != Some(port)
    {
        steps.push(Step::SetListenPort {
            device: device(),
            port,
        });
    }

    plan_peers(name, &want.peers, &wg.peers, steps);
    if rekeyed {
        start_handshakes(name, &want.peers, steps);
    }

    for address in have.addresses.difference(&want.addresses) {
        steps.push(Step::RemoveAddress {
            device: device(),
            address: *address,
        });
    }
    for address in want.addresses.difference(&have.addresses) {
        steps.push(Step::AddAddress {
            device: device(),
            address: *address,
        });
    }

    if !have.up {
        steps.push(Step::SetUp { device: device() });
    }

    if want.forwarding {
        for (family, current) in [
            (IpFamily::V4, have.forwarding.ipv4),
            (IpFamily::V6, have.forwarding.ipv6),
        ] {
            if current == Some(false) {
                steps.push(Step::EnableForwarding {
                    scope: ForwardingScope::Device(device()),
                    family,
                });
            }
        }
    }
}

/// Peer removals (key order), then upserts (key order) with only the fields
/// that differ. A changed public key is simply a different key: the old one
/// is removed, the new one added.
///
/// One merge pass over the two key-ordered maps, allocating only for peers that
/// change: a device with 10,000 unchanged peers plans in a few milliseconds,
/// which is what keeps "change one peer" far below a full `wg setconf`.
pub(super) fn plan_peers(
    name: &IfaceName,
    want: &BTreeMap<PublicKey, PeerConfig>,
    have: &BTreeMap<PublicKey, ObservedPeer>,
    steps: &mut Vec<Step>,
) {
    let mut upserts = Vec::new();
    let mut wanted = want.iter().peekable();
    let mut present = have.iter().peekable();
    loop {
        let order = match (wanted.peek(), present.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((w, _)), Some((h, _))) => w.cmp(h),
        };
        match order {
            std::cmp::Ordering::Less => {
                let (key, config) = wanted.next().expect("peeked");
                upserts.push((*key, new_peer(config)));
            }
            std::cmp::Ordering::Greater => {
                let (key, _) = present.next().expect("peeked");
                steps.push(Step::RemovePeer {
                    device: name.clone(),
                    peer: *key,
                });
            }
            std::cmp::Ordering::Equal => {
                let (key, config) = wanted.next().expect("peeked");
                let (_, observed) = present.next().expect("peeked");
                let change = peer_delta(config, &observed.config);
                if !change.is_empty() {
                    upserts.push((*key, change));
                }
            }
        }
    }
    let starts = replacements_without_keepalive(want, have, &upserts);
    steps.extend(upserts.into_iter().map(|(peer, change)| Step::UpsertPeer {
        device: name.clone(),
        peer,
        change,
    }));
    steps.extend(starts.into_iter().map(|peer| Step::StartHandshake {
        device: name.clone(),
        peer,
        keepalive: 0,
    }));
}

/// New entries that take over addresses of an entry this plan removes (a far end's key
/// rotation: the same link under a new key) and have no keepalive to start their handshake
/// when they are created. Traffic of the link was flowing, so a handshake is started at
/// once: should the far end already have switched and sent its own first initiation to this
/// device before this entry existed, nothing else would start one before WireGuard's 5 s
/// retry. (With a keepalive, creating the entry starts the handshake by itself.)
fn replacements_without_keepalive(
    want: &BTreeMap<PublicKey, PeerConfig>,
    have: &BTreeMap<PublicKey, ObservedPeer>,
    upserts: &[(PublicKey, PeerChange)],
) -> Vec<PublicKey> {
    let removed: Vec<&IpNet> = have
        .iter()
        .filter(|(key, _)| !want.contains_key(key))
        .flat_map(|(_, p)| &p.config.allowed_ips)
        .collect();
    if removed.is_empty() {
        return Vec::new();
    }
    upserts
        .iter()
        .filter(|(_, change)| change.create && change.persistent_keepalive.is_none())
        .filter(|(_, change)| {
            change.allowed_ips.iter().flatten().any(|ip| {
                removed
                    .iter()
                    .any(|old| old.contains(ip) || ip.contains(*old))
            })
        })
        .map(|(peer, _)| *peer)
        .collect()
}

/// After a device's private key changed: a handshake with every peer at once. The far ends
/// already expect the new key (the operator switches the device after its Peers), but
/// their own first initiation reached the device before the switch and was dropped, and
/// WireGuard retries only after 5 s (`REKEY_TIMEOUT`): without this, a link whose traffic
/// the far end starts would stop for those 5 s. Started from this end, after the switch,
/// the handshake meets the key it expects on both sides.
fn start_handshakes(
    name: &IfaceName,
    want: &BTreeMap<PublicKey, PeerConfig>,
    steps: &mut Vec<Step>,
) {
    steps.extend(want.iter().map(|(peer, config)| Step::StartHandshake {
        device: name.clone(),
        peer: *peer,
        keepalive: keepalive(config.persistent_keepalive).unwrap_or(0),
    }));
}

fn keepalive(k: Option<u16>) -> Option<u16> {
    k.filter(|k| *k != 0)
}

pub(super) fn new_peer(want: &PeerConfig) -> PeerChange {
    let allowed = canonical_allowed_ips(&want.allowed_ips);
    PeerChange {
        create: true,
        endpoint: want.endpoint,
        allowed_ips: (!allowed.is_empty()).then_some(allowed),
        persistent_keepalive: keepalive(want.persistent_keepalive),
        preshared_key: want.preshared_key.clone().map(Some),
    }
}

/// Whether `want` (as desired, maybe with host bits) is `have` (canonical, as the
/// kernel reports it); allocates only when `want` is not canonical already.
fn same_allowed_ips(want: &BTreeSet<IpNet>, have: &BTreeSet<IpNet>) -> bool {
    if want.iter().all(|n| *n == n.trunc()) {
        want == have
    } else {
        canonical_allowed_ips(want) == *have
    }
}

fn peer_delta(want: &PeerConfig, have: &PeerConfig) -> PeerChange {
    let have_psk = have.preshared_key.as_ref().filter(|k| !k.is_zero());
    PeerChange {
        create: false,
        // A missing desired endpoint leaves whatever the peer roamed to.
        endpoint: want.endpoint.filter(|e| have.endpoint != Some(*e)),
        allowed_ips: (!same_allowed_ips(&want.allowed_ips, &have.allowed_ips))
            .then(|| canonical_allowed_ips(&want.allowed_ips)),
        persistent_keepalive: (keepalive(want.persistent_keepalive)
            != keepalive(have.persistent_keepalive))
        .then(|| keepalive(want.persistent_keepalive).unwrap_or(0)),
        preshared_key: (want.preshared_key.as_ref() != have_psk)
            .then(|| want.preshared_key.clone()),
    }
}

/// An owned device that is no longer desired: its peers, then the device.
/// (Its routes were already removed with the other route removals.)
pub(super) fn plan_delete(name: &IfaceName, have: &ObservedDevice, steps: &mut Vec<Step>) {
    if let Some(wg) = &have.wireguard {
        for key in wg.peers.keys() {
            steps.push(Step::RemovePeer {
                device: name.clone(),
                peer: *key,
            });
        }
    }
    steps.push(Step::DeleteDevice {
        device: name.clone(),
    });
}

/// Node-wide forwarding is only ever switched on.
pub(super) fn plan_node_forwarding(
    desired: &DesiredNode,
    observed: &ObservedNode,
    steps: &mut Vec<Step>,
) {
    for (family, want, have) in [
        (
            IpFamily::V4,
            desired.forwarding.ipv4,
            observed.forwarding.ipv4,
        ),
        (
            IpFamily::V6,
            desired.forwarding.ipv6,
            observed.forwarding.ipv6,
        ),
    ] {
        if want && have == Some(false) {
            steps.push(Step::EnableForwarding {
                scope: ForwardingScope::All,
                family,
            });
        }
    }
}
