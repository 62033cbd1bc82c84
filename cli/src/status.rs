//! `kwire status`: the Meshes, Interfaces, Peers and Routes of a namespace at a glance.
//!
//! [`view`] turns objects (as read from the API) into rows, [`render`] prints them as one
//! set of tables per namespace; both are pure, with the clock and the choice of colour
//! passed in. `-o json|yaml` prints the same rows for scripts.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt as _;
use kwire_crds::v1alpha1::mesh::{MemberPeersStatus, TopologyType};
use kwire_crds::v1alpha1::{Interface, Mesh, Peer, Route, condition};
use serde::Serialize;

use crate::table::{Cell, Table, Tone, heading, human_age, human_bytes};

/// A condition, without its timestamps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

fn condition_of(conditions: &[Condition], type_: &str) -> Option<ConditionView> {
    conditions.iter().find(|c| c.type_ == type_).map(view_of)
}

fn view_of(c: &Condition) -> ConditionView {
    ConditionView {
        type_: c.type_.clone(),
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
    }
}

/// Every condition that is not `True`, in the order the object lists them.
fn not_true(conditions: &[Condition]) -> Vec<ConditionView> {
    conditions
        .iter()
        .filter(|c| c.status != "True")
        .map(view_of)
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceRow {
    pub name: String,
    pub node: String,
    pub device: String,
    pub addresses: Vec<String>,
    pub listen_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<ConditionView>,
    /// On a Mesh member: how its node daemon sees the other members (`status.mesh`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh_peers: Option<MemberPeersStatus>,
    /// Every condition that is not `True` (the operator's and the node daemon's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ConditionView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRow {
    pub name: String,
    pub local: String,
    pub remote: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_handshake: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_age_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<ConditionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<ConditionView>,
    /// Every condition that is not `True`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ConditionView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRow {
    pub name: String,
    pub interface: String,
    pub destination: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<ConditionView>,
    /// Every condition that is not `True`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ConditionView>,
}

/// A location of a `Locations` mesh and its elected gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationView {
    pub name: String,
    pub members: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshRow {
    pub name: String,
    pub topology: String,
    /// Selected nodes (one generated Interface each), as the operator last reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_members: Option<u32>,
    /// Up to 16 nodes whose member is not `Ready`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unready_members: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<LocationView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_valid: Option<ConditionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<ConditionView>,
    /// Every condition that is not `True`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ConditionView>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NamespaceView {
    pub namespace: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub meshes: Vec<MeshRow>,
    pub interfaces: Vec<InterfaceRow>,
    pub peers: Vec<PeerRow>,
    pub routes: Vec<RouteRow>,
}

/// Everything `kwire status` shows, per namespace in name order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusView {
    pub namespaces: Vec<NamespaceView>,
}

fn time_of(t: &Time) -> SystemTime {
    let seconds = t.0.as_second();
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds as u64)
    } else {
        UNIX_EPOCH
    }
}

fn interface_row(i: &Interface) -> InterfaceRow {
    let status = i.status.clone().unwrap_or_default();
    let addresses = if status.addresses.is_empty() {
        i.spec
            .addresses
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect()
    } else {
        status.addresses.clone()
    };
    InterfaceRow {
        name: i.name_any(),
        node: i.spec.node_name.to_string(),
        device: i.device_name(),
        addresses,
        listen_port: i.spec.listen_port,
        public_key: status.public_key.clone(),
        endpoint: status.endpoint.clone(),
        backend: status.device.as_ref().and_then(|d| d.backend.clone()),
        ready: condition_of(&status.conditions, condition::READY),
        mesh_peers: status.mesh.clone(),
        problems: not_true(&status.conditions),
    }
}

fn peer_row(p: &Peer, now: SystemTime) -> PeerRow {
    let status = p.status.clone().unwrap_or_default();
    let resolved = status.resolved.clone().unwrap_or_default();
    let remote = status
        .remote_name
        .clone()
        .or_else(|| p.spec.remote.interface.as_ref().map(ToString::to_string))
        .or_else(|| {
            p.spec
                .remote
                .public_key
                .as_ref()
                .map(|k| format!("external:{}", k.prefix()))
        })
        .unwrap_or_default();
    let endpoint = resolved.endpoint.clone().or_else(|| {
        p.spec
            .remote
            .endpoint
            .as_ref()
            .map(|e| e.to_socket_string(0))
    });
    let handshake = status.latest_handshake.as_ref().map(time_of);
    PeerRow {
        name: p.name_any(),
        local: p.spec.interface.to_string(),
        remote,
        endpoint,
        latest_handshake: status.latest_handshake.as_ref().map(|t| t.0.to_string()),
        handshake_age_seconds: handshake
            .map(|h| now.duration_since(h).unwrap_or_default().as_secs()),
        rx_bytes: status.transfer.as_ref().map(|t| t.rx_bytes),
        tx_bytes: status.transfer.as_ref().map(|t| t.tx_bytes),
        connected: condition_of(&status.conditions, condition::CONNECTED),
        ready: condition_of(&status.conditions, condition::READY),
        problems: not_true(&status.conditions),
    }
}

fn route_row(r: &Route) -> RouteRow {
    let conditions = r.status.clone().unwrap_or_default().conditions;
    RouteRow {
        name: r.name_any(),
        interface: r.spec.interface.to_string(),
        destination: r.spec.destination.to_string(),
        via: r.spec.via.as_ref().map(ToString::to_string),
        ready: condition_of(&conditions, condition::READY),
        problems: not_true(&conditions),
    }
}

fn mesh_row(m: &Mesh) -> MeshRow {
    let status = m.status.clone().unwrap_or_default();
    let topology = match m.spec.topology.type_ {
        TopologyType::FullMesh => "FullMesh",
        TopologyType::HubAndSpoke => "HubAndSpoke",
        TopologyType::Locations => "Locations",
    };
    MeshRow {
        name: m.name_any(),
        topology: topology.to_string(),
        members: status.members,
        ready_members: status.ready_members,
        unready_members: status.unready_members.clone(),
        locations: status
            .locations
            .iter()
            .map(|l| LocationView {
                name: l.name.clone(),
                members: l.members,
                gateway: l.gateway.clone(),
            })
            .collect(),
        topology_valid: condition_of(&status.conditions, "TopologyValid"),
        ready: condition_of(&status.conditions, condition::READY),
        problems: not_true(&status.conditions),
    }
}

/// The rows of every namespace that has objects, sorted by namespace and name.
pub fn view(
    interfaces: &[Interface],
    peers: &[Peer],
    routes: &[Route],
    meshes: &[Mesh],
    now: SystemTime,
) -> StatusView {
    let mut by_ns: BTreeMap<String, NamespaceView> = BTreeMap::new();
    fn ns_view(
        map: &mut BTreeMap<String, NamespaceView>,
        ns: Option<String>,
    ) -> &mut NamespaceView {
        let ns = ns.unwrap_or_default();
        map.entry(ns.clone()).or_insert_with(|| NamespaceView {
            namespace: ns,
            ..NamespaceView::default()
        })
    }
    for m in meshes {
        let row = mesh_row(m);
        ns_view(&mut by_ns, m.namespace()).meshes.push(row);
    }
    for i in interfaces {
        let row = interface_row(i);
        ns_view(&mut by_ns, i.namespace()).interfaces.push(row);
    }
    for p in peers {
        let row = peer_row(p, now);
        ns_view(&mut by_ns, p.namespace()).peers.push(row);
    }
    for r in routes {
        let row = route_row(r);
        ns_view(&mut by_ns, r.namespace()).routes.push(row);
    }
    let mut namespaces: Vec<NamespaceView> = by_ns.into_values().collect();
    for ns in &mut namespaces {
        ns.meshes.sort_by(|a, b| a.name.cmp(&b.name));
        ns.interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        ns.peers.sort_by(|a, b| a.name.cmp(&b.name));
        ns.routes.sort_by(|a, b| a.name.cmp(&b.name));
    }
    StatusView { namespaces }
}

fn condition_cell(c: Option<&ConditionView>, show_reason: bool) -> Cell {
    match c {
        None => Cell::toned("-", Tone::Pending),
        Some(c) => {
            let text = if c.status == "True" && !show_reason {
                c.status.clone()
            } else if show_reason {
                c.reason.clone()
            } else {
                format!("{} ({})", c.status, c.reason)
            };
            Cell::toned(text, Tone::of_status(Some(&c.status)))
        }
    }
}

/// `3/3 connected`, with the unhealthy ones by node (`2/3 connected, not: c`).
fn mesh_peers_cell(m: Option<&MemberPeersStatus>) -> Cell {
    let Some(m) = m else {
        return Cell::toned("-", Tone::Dim);
    };
    let mut text = format!("{}/{} connected", m.connected, m.peers);
    if !m.unhealthy.is_empty() {
        text.push_str(&format!(", not: {}", m.unhealthy.join(",")));
    }
    let tone = if m.connected == m.peers {
        Tone::Good
    } else if m.stale > 0 {
        Tone::Bad
    } else {
        Tone::Pending
    };
    Cell::toned(text, tone)
}

fn or_dash(text: Option<String>) -> Cell {
    match text {
        Some(t) if !t.is_empty() => Cell::plain(t),
        _ => Cell::toned("-", Tone::Dim),
    }
}

/// One line per condition that is not `True`, with its message: what to act on.
fn problems(ns: &NamespaceView) -> Vec<String> {
    let rows = ns
        .meshes
        .iter()
        .map(|m| ("Mesh", &m.name, &m.problems))
        .chain(
            ns.interfaces
                .iter()
                .map(|i| ("Interface", &i.name, &i.problems)),
        )
        .chain(ns.peers.iter().map(|p| ("Peer", &p.name, &p.problems)))
        .chain(ns.routes.iter().map(|r| ("Route", &r.name, &r.problems)));
    let mut out = Vec::new();
    for (kind, name, problems) in rows {
        for c in problems {
            out.push(format!(
                "{kind}/{name}: {}={} {}: {}",
                c.type_, c.status, c.reason, c.message
            ));
        }
    }
    out
}

/// The tables of every namespace; `colour` adds ANSI colours (use it on a terminal only).
pub fn render(view: &StatusView, colour: bool) -> String {
    let mut out = String::new();
    for (n, ns) in view.namespaces.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let name = if ns.namespace.is_empty() {
            "(none)"
        } else {
            ns.namespace.as_str()
        };
        out.push_str(&heading(&format!("Namespace {name}"), colour));
        out.push_str("\n\n");

        let mut t = Table::new(&["MESH", "TOPOLOGY", "MEMBERS", "READY", "GATEWAYS", "VALID"]);
        for m in &ns.meshes {
            let gateways: Vec<String> = m
                .locations
                .iter()
                .map(|l| format!("{}={}", l.name, l.gateway.as_deref().unwrap_or("<none>")))
                .collect();
            t.row(vec![
                Cell::plain(&m.name),
                Cell::plain(&m.topology),
                match (m.ready_members, m.members) {
                    (Some(r), Some(n)) => Cell::toned(
                        format!("{r}/{n} ready"),
                        if r == n { Tone::Good } else { Tone::Pending },
                    ),
                    _ => Cell::toned("<pending>", Tone::Pending),
                },
                condition_cell(m.ready.as_ref(), false),
                or_dash((!gateways.is_empty()).then(|| gateways.join(","))),
                condition_cell(m.topology_valid.as_ref(), false),
            ]);
        }
        let meshes_shown = !t.is_empty();
        if meshes_shown {
            out.push_str(&t.render(colour));
            if !ns.interfaces.is_empty() || !ns.peers.is_empty() || !ns.routes.is_empty() {
                out.push('\n');
            }
        }

        // Mesh members add how their devices see the other members.
        let members = ns.interfaces.iter().any(|i| i.mesh_peers.is_some());
        let mut headers = vec![
            "INTERFACE",
            "NODE",
            "DEVICE",
            "ADDRESS",
            "PORT",
            "KEY",
            "BACKEND",
            "READY",
        ];
        if members {
            headers.push("MESH PEERS");
        }
        let mut t = Table::new(&headers);
        for i in &ns.interfaces {
            let mut row = vec![
                Cell::plain(&i.name),
                Cell::plain(&i.node),
                Cell::plain(&i.device),
                if i.addresses.is_empty() {
                    Cell::toned("<pending>", Tone::Pending)
                } else {
                    Cell::plain(i.addresses.join(","))
                },
                Cell::plain(i.listen_port.to_string()),
                match &i.public_key {
                    Some(k) => Cell::plain(k.chars().take(8).collect::<String>()),
                    None => Cell::toned("<pending>", Tone::Pending),
                },
                or_dash(i.backend.clone()),
                condition_cell(i.ready.as_ref(), false),
            ];
            if members {
                row.push(mesh_peers_cell(i.mesh_peers.as_ref()));
            }
            t.row(row);
        }
        if !t.is_empty() {
            out.push_str(&t.render(colour));
        }

        let mut t = Table::new(&[
            "PEER",
            "LOCAL → REMOTE",
            "ENDPOINT",
            "HANDSHAKE",
            "RX",
            "TX",
            "CONNECTED",
        ]);
        for p in &ns.peers {
            t.row(vec![
                Cell::plain(&p.name),
                Cell::plain(format!("{} → {}", p.local, p.remote)),
                or_dash(p.endpoint.clone()),
                match p.handshake_age_seconds {
                    Some(s) => Cell::plain(format!("{} ago", human_age(Duration::from_secs(s)))),
                    None => Cell::toned("never", Tone::Dim),
                },
                or_dash(p.rx_bytes.map(human_bytes)),
                or_dash(p.tx_bytes.map(human_bytes)),
                condition_cell(p.connected.as_ref(), true),
            ]);
        }
        if !t.is_empty() {
            if !ns.interfaces.is_empty() {
                out.push('\n');
            }
            out.push_str(&t.render(colour));
        }

        let mut t = Table::new(&["ROUTE", "INTERFACE", "DESTINATION", "VIA", "READY"]);
        for r in &ns.routes {
            t.row(vec![
                Cell::plain(&r.name),
                Cell::plain(&r.interface),
                Cell::plain(&r.destination),
                or_dash(r.via.clone()),
                condition_cell(r.ready.as_ref(), false),
            ]);
        }
        if !t.is_empty() {
            if !ns.interfaces.is_empty() || !ns.peers.is_empty() {
                out.push('\n');
            }
            out.push_str(&t.render(colour));
        }

        let problems = problems(ns);
        if !problems.is_empty() {
            out.push('\n');
            for p in problems {
                out.push_str(&format!("! {p}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kwire_crds::manifest::{KwireObject, parse_manifests};
    use kwire_crds::v1alpha1::{DeviceStatus, InterfaceStatus, PeerStatus, ResolvedPeer, Transfer};

    const RELAY: &str = include_str!("../../examples/seed/relay.yaml");
    const NOW: u64 = 1_800_000_000;

    fn at(seconds: u64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds as i64).unwrap())
    }

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: at(NOW - 600),
            observed_generation: Some(1),
        }
    }

    /// The relay as the API shows it once the operator and daemons wrote status; the
    /// b-to-c link has not seen a handshake yet.
    fn fixture() -> (Vec<Interface>, Vec<Peer>, Vec<Route>) {
        let (mut interfaces, mut peers, mut routes) = (vec![], vec![], vec![]);
        for (n, o) in parse_manifests(RELAY).unwrap().into_iter().enumerate() {
            match o {
                KwireObject::Interface(mut i) => {
                    i.metadata.namespace = Some("seed".into());
                    i.status = Some(InterfaceStatus {
                        public_key: Some(format!("{n}bcdefghXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX=")),
                        addresses: i
                            .spec
                            .addresses
                            .iter()
                            .flatten()
                            .map(|a| a.to_string())
                            .collect(),
                        device: Some(DeviceStatus {
                            backend: Some("userspace".into()),
                            ..DeviceStatus::default()
                        }),
                        conditions: vec![cond("Ready", "True", "Configured", "device up")],
                        ..InterfaceStatus::default()
                    });
                    interfaces.push(*i);
                }
                KwireObject::Peer(mut p) => {
                    p.metadata.namespace = Some("seed".into());
                    let a_to_b = p.name_any() == "a-to-b";
                    p.status = Some(PeerStatus {
                        remote_name: p.spec.remote.interface.as_ref().map(|r| r.to_string()),
                        resolved: Some(ResolvedPeer {
                            endpoint: Some(
                                if a_to_b {
                                    "10.211.55.11:22222"
                                } else {
                                    "10.211.55.12:33333"
                                }
                                .into(),
                            ),
                            ..ResolvedPeer::default()
                        }),
                        latest_handshake: a_to_b.then(|| at(NOW - 12)),
                        transfer: a_to_b.then_some(Transfer {
                            rx_bytes: 1536,
                            tx_bytes: 4 * 1024 * 1024,
                        }),
                        conditions: vec![if a_to_b {
                            cond("Connected", "True", "HandshakeRecent", "handshake 12s ago")
                        } else {
                            cond(
                                "Connected",
                                "False",
                                "NoHandshake",
                                "no handshake since the peer was configured 3m ago: is c reachable on 10.211.55.12:33333?",
                            )
                        }],
                        ..PeerStatus::default()
                    });
                    peers.push(*p);
                }
                KwireObject::Route(mut r) => {
                    r.metadata.namespace = Some("seed".into());
                    routes.push(*r);
                }
                _ => {}
            }
        }
        (interfaces, peers, routes)
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    #[test]
    fn the_relay_renders_as_tables_with_ages_bytes_and_reasons() {
        let (i, p, r) = fixture();
        let text = render(&view(&i, &p, &r, &[], now()), false);
        let expected = "\
Namespace seed

INTERFACE      NODE   DEVICE       ADDRESS       PORT    KEY        BACKEND     READY
a-wg0-client   a      wg0-client   10.1.0.1/24   11111   0bcdefgh   userspace   True
b-wg0-server   b      wg0-server   10.1.0.2/24   22222   1bcdefgh   userspace   True
b-wg1-client   b      wg1-client   10.2.0.1/24   23333   2bcdefgh   userspace   True
c-wg0-server   c      wg0-server   10.2.0.2/24   33333   3bcdefgh   userspace   True

PEER     LOCAL → REMOTE                ENDPOINT             HANDSHAKE   RX        TX        CONNECTED
a-to-b   a-wg0-client → b-wg0-server   10.211.55.11:22222   12s ago     1.5 KiB   4.0 MiB   HandshakeRecent
b-to-c   b-wg1-client → c-wg0-server   10.211.55.12:33333   never       -         -         NoHandshake

ROUTE            INTERFACE      DESTINATION   VIA        READY
a-to-c-network   a-wg0-client   10.2.0.0/24   10.1.0.2   -
c-to-a-network   c-wg0-server   10.1.0.0/24   10.2.0.1   -

! Peer/b-to-c: Connected=False NoHandshake: no handshake since the peer was configured 3m ago: is c reachable on 10.211.55.12:33333?
";
        assert_eq!(text, expected);
    }

    #[test]
    fn colour_marks_good_and_bad_conditions_only_when_asked() {
        let (i, p, r) = fixture();
        let v = view(&i, &p, &r, &[], now());
        let coloured = render(&v, true);
        assert!(coloured.contains("\x1b[32mHandshakeRecent\x1b[0m"));
        assert!(coloured.contains("\x1b[31mNoHandshake\x1b[0m"));
        assert!(!render(&v, false).contains('\x1b'));
    }

    #[test]
    fn objects_without_status_show_what_is_pending() {
        let (mut i, mut p, _) = fixture();
        i.truncate(1);
        p.truncate(1);
        i[0].status = None;
        i[0].spec.addresses = None;
        p[0].status = None;
        let text = render(&view(&i, &p, &[], &[], now()), false);
        assert!(
            text.contains(
                "a-wg0-client   a      wg0-client   <pending>   11111   <pending>   -         -"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "a-to-b   a-wg0-client → b-wg0-server   -          never       -    -    -"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_json_rows_carry_full_values_for_scripts() {
        let (i, p, r) = fixture();
        let v = view(&i, &p, &r, &[], now());
        let json = serde_json::to_value(&v).unwrap();
        let peer = &json["namespaces"][0]["peers"][0];
        assert_eq!(peer["handshakeAgeSeconds"], 12);
        assert_eq!(peer["txBytes"], 4 * 1024 * 1024);
        assert_eq!(peer["connected"]["reason"], "HandshakeRecent");
        assert_eq!(
            peer["latestHandshake"],
            "2027-01-15T08:00:00Z".replace("08:00:00", "07:59:48")
        );
        assert_eq!(
            json["namespaces"][0]["interfaces"][0]["publicKey"]
                .as_str()
                .unwrap()
                .len(),
            44
        );
    }

    #[test]
    fn namespaces_are_separate_sections_in_name_order() {
        let (mut i, _, _) = fixture();
        i[0].metadata.namespace = Some("alpha".into());
        let v = view(&i, &[], &[], &[], now());
        let names: Vec<&str> = v.namespaces.iter().map(|n| n.namespace.as_str()).collect();
        assert_eq!(names, ["alpha", "seed"]);
    }

    /// A Locations Mesh as the operator reports it: one gateway per location, a member not
    /// ready yet, and a FullMesh whose status has not been written.
    fn meshes() -> Vec<Mesh> {
        let yaml = "\
apiVersion: kwire.dev/v1alpha1
kind: Mesh
metadata: {name: sites, namespace: seed}
spec:
  nodeSelector: {}
  topology: {type: Locations}
  networks: [{name: sites-v4}]
  device: {deviceName: wgsites}
status:
  members: 6
  readyMembers: 5
  unreadyMembers: [f]
  locations:
  - {name: east, members: 3, gateway: a}
  - {name: west, members: 3, gateway: d}
  conditions:
  - {type: TopologyValid, status: 'True', reason: Valid, message: ok, lastTransitionTime: '2027-01-15T07:00:00Z'}
  - {type: Ready, status: 'False', reason: MembersNotReady, message: '1 of 6 members not Ready: f', lastTransitionTime: '2027-01-15T07:00:00Z'}
---
apiVersion: kwire.dev/v1alpha1
kind: Mesh
metadata: {name: overlay, namespace: seed}
spec:
  nodeSelector: {}
  networks: [{name: overlay-v4}]
  device: {deviceName: wgmesh}
";
        yaml.split("---\n")
            .map(|doc| serde_saphyr::from_str(doc).unwrap())
            .collect()
    }

    #[test]
    fn meshes_come_first_with_members_gateways_and_what_is_wrong() {
        let (i, _, _) = fixture();
        let text = render(&view(&i[..1], &[], &[], &meshes(), now()), false);
        let expected = "\
Namespace seed

MESH      TOPOLOGY    MEMBERS     READY                     GATEWAYS        VALID
overlay   FullMesh    <pending>   -                         -               -
sites     Locations   5/6 ready   False (MembersNotReady)   east=a,west=d   True

INTERFACE      NODE   DEVICE       ADDRESS       PORT    KEY        BACKEND     READY
a-wg0-client   a      wg0-client   10.1.0.1/24   11111   0bcdefgh   userspace   True

! Mesh/sites: Ready=False MembersNotReady: 1 of 6 members not Ready: f
";
        assert_eq!(text, expected);
        let json = serde_json::to_value(view(&[], &[], &[], &meshes(), now())).unwrap();
        let sites = &json["namespaces"][0]["meshes"][1];
        assert_eq!(sites["unreadyMembers"][0], "f");
        assert_eq!(sites["locations"][1]["gateway"], "d");
        assert_eq!(sites["topologyValid"]["status"], "True");
    }

    #[test]
    fn mesh_members_show_how_their_devices_see_the_others() {
        let (mut i, _, _) = fixture();
        i.truncate(2);
        let status = i[0].status.get_or_insert_with(Default::default);
        status.mesh = Some(MemberPeersStatus {
            peers: 3,
            connected: 2,
            stale: 1,
            unhealthy: vec!["c".into()],
            ..MemberPeersStatus::default()
        });
        let text = render(&view(&i, &[], &[], &[], now()), false);
        let expected = "\
Namespace seed

INTERFACE      NODE   DEVICE       ADDRESS       PORT    KEY        BACKEND     READY   MESH PEERS
a-wg0-client   a      wg0-client   10.1.0.1/24   11111   0bcdefgh   userspace   True    2/3 connected, not: c
b-wg0-server   b      wg0-server   10.1.0.2/24   22222   1bcdefgh   userspace   True    -
";
        assert_eq!(text, expected);
        let json = serde_json::to_value(view(&i, &[], &[], &[], now())).unwrap();
        assert_eq!(
            json["namespaces"][0]["interfaces"][0]["meshPeers"]["stale"],
            1
        );
    }
}
