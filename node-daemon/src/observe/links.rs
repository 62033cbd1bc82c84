use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};

use super::ObserveError;
use crate::model::LinkKind;

/// The parts of a link message kwire looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLink {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    pub alias: Option<String>,
    pub up: bool,
    pub mtu: u32,
}

/// Maps the kernel's `IFLA_INFO_KIND`.
pub fn link_kind(kind: Option<&InfoKind>) -> LinkKind {
    match kind {
        Some(InfoKind::Wireguard) => LinkKind::Wireguard,
        Some(InfoKind::Tun) => LinkKind::Tun,
        Some(other) => LinkKind::Other(other.to_string()),
        None => LinkKind::Other(String::new()),
    }
}

impl RawLink {
    pub fn from_message(msg: &LinkMessage) -> RawLink {
        let mut link = RawLink {
            index: msg.header.index,
            name: String::new(),
            kind: LinkKind::Other(String::new()),
            alias: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            mtu: 0,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::IfAlias(a) if !a.is_empty() => link.alias = Some(a.clone()),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::LinkInfo(infos) => {
                    let kind = infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(k) => Some(k),
                        _ => None,
                    });
                    link.kind = link_kind(kind);
                }
                _ => {}
            }
        }
        link
    }
}

pub(crate) async fn dump_links(handle: &rtnetlink::Handle) -> Result<Vec<RawLink>, ObserveError> {
    handle
        .link()
        .get()
        .execute()
        .map_ok(|m| RawLink::from_message(&m))
        .try_collect()
        .await
        .map_err(ObserveError::ListLinks)
}

fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

pub(crate) fn address_of(msg: &AddressMessage) -> Option<IpNet> {
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    if is_ipv6_link_local(&ip) {
        return None;
    }
    IpNet::new(ip, msg.header.prefix_len).ok()
}

/// Addresses by link index (IPv6 link-local ones left out: the kernel manages them).
pub(crate) async fn dump_addresses(
    handle: &rtnetlink::Handle,
) -> Result<BTreeMap<u32, BTreeSet<IpNet>>, ObserveError> {
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(ObserveError::ListAddresses)?;
    let mut out: BTreeMap<u32, BTreeSet<IpNet>> = BTreeMap::new();
    for msg in &msgs {
        if let Some(net) = address_of(msg) {
            out.entry(msg.header.index).or_default().insert(net);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(index: u32, attrs: Vec<AddressAttribute>, prefix_len: u8) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = prefix_len;
        m.attributes = attrs;
        m
    }

    #[test]
    fn the_local_address_wins_over_the_peer_address_on_point_to_point_links() {
        let m = message(
            3,
            vec![
                AddressAttribute::Address("10.0.0.2".parse().unwrap()),
                AddressAttribute::Local("10.0.0.1".parse().unwrap()),
            ],
            24,
        );
        assert_eq!(address_of(&m), Some("10.0.0.1/24".parse().unwrap()));
    }

    #[test]
    fn ipv6_link_local_addresses_are_left_to_the_kernel() {
        let m = message(
            3,
            vec![AddressAttribute::Address("fe80::1".parse().unwrap())],
            64,
        );
        assert_eq!(address_of(&m), None);
        let m = message(
            3,
            vec![AddressAttribute::Address("fd00::1".parse().unwrap())],
            64,
        );
        assert_eq!(address_of(&m), Some("fd00::1/64".parse().unwrap()));
    }

    #[test]
    fn link_kinds_map_to_wireguard_tun_or_other() {
        assert_eq!(link_kind(Some(&InfoKind::Wireguard)), LinkKind::Wireguard);
        assert_eq!(link_kind(Some(&InfoKind::Tun)), LinkKind::Tun);
        assert_eq!(
            link_kind(Some(&InfoKind::Veth)),
            LinkKind::Other("veth".into())
        );
        assert_eq!(link_kind(None), LinkKind::Other(String::new()));
    }
}
