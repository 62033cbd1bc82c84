use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};

use super::ObserveError;
use crate::model::{IfaceName, ObservedRoute, Ownership, RouteId};
use crate::ownership::route_protocol;

/// The parts of a route message kwire looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRoute {
    pub table: u32,
    pub destination: IpNet,
    pub source_prefix_len: u8,
    pub tos: u8,
    pub metric: u32,
    pub protocol: u8,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

pub(crate) fn raw_route(msg: &RouteMessage, v6: bool) -> Option<RawRoute> {
    let mut table = u32::from(msg.header.table);
    let mut destination = None;
    let mut metric = 0;
    let mut oif = None;
    let mut gateway = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => destination = ip_of(a),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(a) => gateway = ip_of(a),
            _ => {}
        }
    }
    let destination = destination.unwrap_or(if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    Some(RawRoute {
        table,
        destination: IpNet::new(destination, msg.header.destination_prefix_length)
            .ok()?
            .trunc(),
        source_prefix_len: msg.header.source_prefix_length,
        tos: msg.header.tos,
        metric,
        protocol: msg.header.protocol.into(),
        oif,
        gateway,
    })
}

/// Tags routes and keys them by the kernel's identity. Routes with a TOS or
/// a source prefix are left out: kwire never creates such routes and they
/// never collide with the ones it does. When two routes share an identity
/// (possible with `append`), a foreign one wins, so it is never touched.
pub fn classify_routes(
    raw: Vec<RawRoute>,
    names: &BTreeMap<u32, IfaceName>,
) -> BTreeMap<RouteId, ObservedRoute> {
    let mut out: BTreeMap<RouteId, ObservedRoute> = BTreeMap::new();
    for r in raw {
        if r.tos != 0 || r.source_prefix_len != 0 {
            continue;
        }
        let id = RouteId {
            table: r.table,
            destination: r.destination,
            metric: r.metric,
        };
        let route = ObservedRoute {
            ownership: if r.protocol == route_protocol() {
                Ownership::Owned
            } else {
                Ownership::Foreign
            },
            protocol: r.protocol,
            device: r.oif.and_then(|i| names.get(&i).cloned()),
            via: r.gateway,
        };
        match out.get(&id) {
            Some(existing) if existing.ownership == Ownership::Foreign => {}
            _ => {
                out.insert(id, route);
            }
        }
    }
    out
}

/// Every IPv4 and IPv6 route of every table.
pub(crate) async fn dump_routes(handle: &rtnetlink::Handle) -> Result<Vec<RawRoute>, ObserveError> {
    let mut out = Vec::new();
    let v4 = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let v6 = RouteMessageBuilder::<Ipv6Addr>::new().build();
    for (msg, is_v6) in [(v4, false), (v6, true)] {
        let msgs: Vec<RouteMessage> = handle
            .route()
            .get(msg)
            .execute()
            .try_collect()
            .await
            .map_err(ObserveError::ListRoutes)?;
        out.extend(msgs.iter().filter_map(|m| raw_route(m, is_v6)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::ROUTE_PROTOCOL;

    fn raw(dst: &str, metric: u32, protocol: u8) -> RawRoute {
        RawRoute {
            table: 254,
            destination: dst.parse().unwrap(),
            source_prefix_len: 0,
            tos: 0,
            metric,
            protocol,
            oif: Some(3),
            gateway: None,
        }
    }

    #[test]
    fn routes_with_kwires_protocol_are_owned_and_all_others_foreign() {
        let names = [(3, "wg0".parse().unwrap())].into();
        let out = classify_routes(
            vec![
                raw("10.2.0.0/24", 0, ROUTE_PROTOCOL),
                raw("10.2.0.0/24", 10, 4),
            ],
            &names,
        );
        let ids: Vec<_> = out.values().map(|r| r.ownership).collect();
        assert_eq!(ids, vec![Ownership::Owned, Ownership::Foreign]);
        assert_eq!(
            out.values().next().unwrap().device,
            Some("wg0".parse().unwrap())
        );
    }

    #[test]
    fn a_foreign_route_sharing_an_identity_with_an_owned_one_wins() {
        let out = classify_routes(
            vec![
                raw("10.2.0.0/24", 0, ROUTE_PROTOCOL),
                raw("10.2.0.0/24", 0, 4),
            ],
            &BTreeMap::new(),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out.values().next().unwrap().ownership, Ownership::Foreign);
    }

    #[test]
    fn routes_with_a_tos_or_source_prefix_are_ignored() {
        let mut tos = raw("10.2.0.0/24", 0, ROUTE_PROTOCOL);
        tos.tos = 4;
        let mut src = raw("fd00::/64", 0, ROUTE_PROTOCOL);
        src.source_prefix_len = 64;
        assert!(classify_routes(vec![tos, src], &BTreeMap::new()).is_empty());
    }
}
