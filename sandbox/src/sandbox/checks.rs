//! Checks of a running sandbox: readiness of every object, the pings a user of the topology
//! expects to work, the status table, and the last lines of every component's log.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde_json::Value;

use super::{Sandbox, check_interrupted, interrupted};
use crate::error::{Error, Result};
use crate::external::FarSide;
use crate::teardown;

impl Sandbox {
    /// Objects whose `type` condition is not `True`, as `Kind/name: reason: message`.
    pub fn not_true(&self, kinds: &str, condition: &str) -> Result<Vec<String>> {
        Ok(self
            .get(kinds)?
            .iter()
            .filter_map(|o| not_true_line(o, condition))
            .collect())
    }

    /// Waits until every Mesh, Interface, Peer and Route is Ready and every Peer Connected
    /// (or, without a keepalive, waiting for the traffic that starts its handshake).
    pub fn wait_ready(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            check_interrupted()?;
            let objects = self.get("meshes,interfaces,peers,routes")?;
            let mut pending: Vec<String> = objects
                .iter()
                .filter_map(|o| not_true_line(o, "Ready"))
                .collect();
            pending.extend(
                objects
                    .iter()
                    .filter(|o| o["kind"] == "Peer" && !waiting_for_traffic(o))
                    .filter_map(|o| not_true_line(o, "Connected")),
            );
            if pending.is_empty() {
                // The operator listens on its metrics port by now.
                self.record_ports()?;
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout(format!(
                    "not ready after {}s:\n  {}\n{}",
                    timeout.as_secs(),
                    pending.join("\n  "),
                    self.logs_tail(15)
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last lines of every component's log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut logs: Vec<(String, PathBuf)> =
            vec![("operator".into(), self.run_dir.join("operator.log"))];
        logs.extend(
            self.nodes
                .iter()
                .map(|(n, node)| (format!("node {n}"), node.log.clone())),
        );
        logs.extend(
            self.externals
                .iter()
                .map(|(p, e)| (format!("far side of Peer {p}"), e.log.clone())),
        );
        for node in self.nodes.values() {
            if let Some(k) = &node.kubelet {
                logs.extend(k.container_logs());
            }
        }
        for (name, path) in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            let _ = writeln!(out, "--- {name} ({})", path.display());
            for line in tail.iter().rev() {
                let _ = writeln!(out, "{line}");
            }
        }
        for node in self.nodes.values() {
            if let Some(k) = &node.kubelet {
                out.push_str(&k.logs_tail(lines));
            }
        }
        out
    }

    /// The pings a user of this topology expects to work: every Peer's remote address from
    /// the local node, every address inside a Route's destination from the Route's node,
    /// for an external Peer, its far side to the Interface's addresses and back, and every
    /// member of a Mesh to every other member's addresses.
    pub fn expected_pings(&self) -> Result<Vec<Ping>> {
        let interfaces = self.get("interfaces")?;
        let node_of = |name: &str| {
            interfaces
                .iter()
                .find(|i| i["metadata"]["name"] == name)
                .and_then(|i| i["spec"]["nodeName"].as_str().map(str::to_owned))
        };
        let mut pings = Vec::new();
        for peer in self.get("peers")? {
            let (Some(local), Some(remote)) = (
                peer["spec"]["interface"].as_str(),
                peer["spec"]["remote"]["interface"].as_str(),
            ) else {
                continue;
            };
            let (Some(from), Some(remote_if)) = (
                node_of(local),
                interfaces.iter().find(|i| i["metadata"]["name"] == remote),
            ) else {
                continue;
            };
            for address in status_addresses(remote_if) {
                pings.push(Ping {
                    from: from.clone(),
                    to: address.addr(),
                    label: format!("{local} → {remote} ({})", address.addr()),
                });
            }
        }
        // The far side first: its traffic is what a roaming laptop would send.
        for ext in self.externals.values() {
            let side = &ext.side;
            let Some(local) = interfaces
                .iter()
                .find(|i| i["metadata"]["name"] == side.interface.as_str())
            else {
                continue;
            };
            pings.extend(far_side_pings(
                side,
                &status_addresses(local),
                node_of(&side.interface).as_deref(),
            ));
        }
        for route in self.get("routes")? {
            let Some(destination) = route["spec"]["destination"]
                .as_str()
                .and_then(|d| d.parse::<IpNet>().ok())
            else {
                continue;
            };
            let Some(from) = route["spec"]["interface"].as_str().and_then(node_of) else {
                continue;
            };
            let route_name = route["metadata"]["name"].as_str().unwrap_or("?");
            for i in &interfaces {
                if i["spec"]["nodeName"].as_str() == Some(from.as_str()) {
                    continue;
                }
                for address in status_addresses(i) {
                    if destination.contains(&address.addr()) {
                        let to_node = i["spec"]["nodeName"].as_str().unwrap_or("?");
                        pings.push(Ping {
                            from: from.clone(),
                            to: address.addr(),
                            label: format!(
                                "{} → {} ({}, route {route_name})",
                                from.to_uppercase(),
                                to_node.to_uppercase(),
                                address.addr(),
                            ),
                        });
                    }
                }
            }
            // Far sides behind the route (through a relay that forwards to them).
            for ext in self.externals.values() {
                let side = &ext.side;
                if node_of(&side.interface).as_deref() == Some(from.as_str()) {
                    continue;
                }
                for address in &side.tunnel_addresses {
                    if destination.contains(address) {
                        pings.push(Ping {
                            from: from.clone(),
                            to: *address,
                            label: format!(
                                "{} → {} ({address}, route {route_name})",
                                from.to_uppercase(),
                                side.peer.to_uppercase(),
                            ),
                        });
                    }
                }
            }
        }
        pings.extend(mesh_pings(&interfaces));
        Ok(pings)
    }

    /// Runs the pings; returns each with whether it got replies.
    pub fn ping_all(&self, pings: &[Ping]) -> Vec<(Ping, bool)> {
        pings
            .iter()
            .map(|p| {
                let netns = match p.from.strip_prefix(EXTERNAL_ORIGIN) {
                    Some(peer) => self.externals.get(peer).map(|e| &e.netns),
                    None => self.nodes.get(&p.from).map(|n| &n.netns),
                };
                let ok = !interrupted()
                    && netns.is_some_and(|ns| {
                        ns.wait_for_ping(p.to, Duration::from_secs(10)).is_some()
                    });
                (p.clone(), ok)
            })
            .collect()
    }

    /// `kubectl get kwire -o wide` of the sandbox namespace.
    pub fn status_table(&self) -> String {
        let out = self
            .cp
            .kubectl()
            .args(["get", "kwire", "-n", &self.namespace, "-o", "wide"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Records the TCP ports the sandbox's host-side processes listen on.
    pub(super) fn record_ports(&self) -> Result<()> {
        let pids: BTreeSet<u32> = self
            .ledger
            .snapshot()
            .processes
            .iter()
            .filter(|p| p.netns.is_none())
            .map(|p| p.id.pid)
            .collect();
        let ports: Vec<u16> = teardown::listening_tcp_ports()
            .into_iter()
            .filter(|(_, owners)| !owners.is_disjoint(&pids))
            .map(|(port, _)| port)
            .collect();
        self.ledger.ports(&ports)
    }
}

/// `Ping::from` of a far side: `peer/<name>` (node names cannot contain `/`).
const EXTERNAL_ORIGIN: &str = "peer/";

fn external_origin(peer: &str) -> String {
    format!("{EXTERNAL_ORIGIN}{peer}")
}

/// The pings between the far side of an external Peer and its kwire Interface, whose
/// addresses are `interface_addresses` and which is on `node`: the far side to each
/// address of the Interface, and the node to each of the far side's tunnel addresses, each
/// family only where both sides have an address of it.
fn far_side_pings(side: &FarSide, interface_addresses: &[IpNet], node: Option<&str>) -> Vec<Ping> {
    let interface: Vec<IpAddr> = interface_addresses.iter().map(IpNet::addr).collect();
    let has_family =
        |addresses: &[IpAddr], of: &IpAddr| addresses.iter().any(|a| a.is_ipv4() == of.is_ipv4());
    let mut pings = Vec::new();
    for address in interface
        .iter()
        .filter(|a| has_family(&side.tunnel_addresses, a))
    {
        pings.push(Ping {
            from: external_origin(&side.peer),
            to: *address,
            label: format!("{} → {} ({address})", side.peer, side.interface),
        });
    }
    if let Some(node) = node {
        for address in side
            .tunnel_addresses
            .iter()
            .filter(|a| has_family(&interface, a))
        {
            pings.push(Ping {
                from: node.to_string(),
                to: *address,
                label: format!("{} → {} ({address})", side.interface, side.peer),
            });
        }
    }
    pings
}

/// The Mesh an Interface was generated for: its namespace, its `kwire.dev/mesh` label and
/// the controlling Mesh's uid (a hand-written Interface carrying the label has no such
/// owner, and is not a member).
fn mesh_of(interface: &Value) -> Option<(String, String, String)> {
    let label = interface["metadata"]["labels"]["kwire.dev/mesh"].as_str()?;
    let owner = interface["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == "Mesh" && o["controller"] == true)?;
    Some((
        interface["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        label.to_string(),
        owner["uid"].as_str()?.to_string(),
    ))
}

/// Every member of each Mesh to every address of every other member of the same Mesh,
/// whatever the topology: a full mesh answers directly, a hub and spoke or a mesh of
/// locations through its hubs or gateways.
fn mesh_pings(interfaces: &[Value]) -> Vec<Ping> {
    let members: Vec<(&Value, (String, String, String))> = interfaces
        .iter()
        .filter_map(|i| Some((i, mesh_of(i)?)))
        .collect();
    let mut pings = Vec::new();
    for (from, mesh) in &members {
        let Some(node) = from["spec"]["nodeName"].as_str() else {
            continue;
        };
        // A member pings the families it has an address of itself.
        let families: BTreeSet<bool> = status_addresses(from)
            .iter()
            .map(|a| a.addr().is_ipv4())
            .collect();
        for (to, other) in &members {
            if other != mesh || std::ptr::eq(*from, *to) {
                continue;
            }
            let to_node = to["spec"]["nodeName"].as_str().unwrap_or("?");
            for address in status_addresses(to) {
                if !families.contains(&address.addr().is_ipv4()) {
                    continue;
                }
                pings.push(Ping {
                    from: node.to_string(),
                    to: address.addr(),
                    label: format!(
                        "{} → {} ({}, Mesh {})",
                        node.to_uppercase(),
                        to_node.to_uppercase(),
                        address.addr(),
                        mesh.1
                    ),
                });
            }
        }
    }
    pings
}

/// The addresses in an Interface's status.
pub(super) fn status_addresses(interface: &Value) -> Vec<IpNet> {
    interface["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect()
}

/// One expected ping through the overlay.
#[derive(Debug, Clone)]
pub struct Ping {
    /// A node, or `peer/<name>` for the far side of an external Peer.
    pub from: String,
    pub to: IpAddr,
    pub label: String,
}

/// `Kind/name: reason: message` when `object`'s `condition` is not `True`.
fn not_true_line(object: &Value, condition: &str) -> Option<String> {
    let kind = object["kind"].as_str()?;
    let name = object["metadata"]["name"].as_str()?;
    let found = object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == condition));
    match found {
        Some(c) if c["status"] == "True" => None,
        Some(c) => Some(format!(
            "{kind}/{name}: {}: {}",
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        )),
        None => Some(format!("{kind}/{name}: no {condition} condition yet")),
    }
}

/// Whether a Peer without `Connected` is only waiting for traffic: a link without keepalive
/// hand-shakes once traffic flows (it stays `Connecting`, then `Idle`), and the sandbox's
/// pings are that traffic.
fn waiting_for_traffic(peer: &Value) -> bool {
    let reason = peer["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Connected"))
        .and_then(|c| c["reason"].as_str());
    let keepalive = peer["spec"]["persistentKeepalive"].as_u64().unwrap_or(0);
    reason == Some("Idle") || (reason == Some("Connecting") && keepalive == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kwire_crds::manifest::parse_manifests;

    /// The far side of Peer `laptop` of Interface `hub-wg0`, with `allowed_ips`.
    fn far_side(allowed_ips: &str) -> FarSide {
        let objects = parse_manifests(&format!(
            "apiVersion: kwire.dev/v1alpha1
kind: Interface
metadata: {{name: hub-wg0}}
spec: {{nodeName: hub, deviceName: wg0, listenPort: 51820, addresses: [10.7.0.1/24]}}
---
apiVersion: kwire.dev/v1alpha1
kind: Peer
metadata:
  name: laptop
  annotations: {{sandbox.kwire.dev/remote-private-key: wAv4R+4/xt1c1KIM7oObeU+swn4ycWcB9HMIoyHd71g=}}
spec:
  interface: hub-wg0
  remote:
    publicKey: EwYQdz0JfJ0WNkI0Lzvuynp9MOIg3zWJ80MLANykISo=
    endpoint: {{host: 10.211.55.100, port: 51820}}
  allowedIPs: {allowed_ips}
"
        ))
        .unwrap();
        crate::external::far_sides(&objects, super::super::lan(), &[])
            .unwrap()
            .remove(0)
    }

    fn labels(pings: &[Ping]) -> Vec<String> {
        pings
            .iter()
            .map(|p| format!("{}: {} [{}]", p.from, p.label, p.to))
            .collect()
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn a_dual_stack_far_side_pings_both_families_both_ways() {
        let side = far_side("[10.7.0.20/32, fd00:7::20/128]");
        let pings = far_side_pings(&side, &nets(&["10.7.0.1/24", "fd00:7::1/64"]), Some("hub"));
        assert_eq!(
            labels(&pings),
            [
                "peer/laptop: laptop → hub-wg0 (10.7.0.1) [10.7.0.1]",
                "peer/laptop: laptop → hub-wg0 (fd00:7::1) [fd00:7::1]",
                "hub: hub-wg0 → laptop (10.7.0.20) [10.7.0.20]",
                "hub: hub-wg0 → laptop (fd00:7::20) [fd00:7::20]",
            ]
        );
    }

    #[test]
    fn a_family_only_one_side_has_is_not_pinged() {
        let v4_only = far_side("[10.7.0.21/32]");
        let pings = far_side_pings(
            &v4_only,
            &nets(&["10.7.0.1/24", "fd00:7::1/64"]),
            Some("hub"),
        );
        assert_eq!(
            labels(&pings),
            [
                "peer/laptop: laptop → hub-wg0 (10.7.0.1) [10.7.0.1]",
                "hub: hub-wg0 → laptop (10.7.0.21) [10.7.0.21]",
            ]
        );
        let dual = far_side("[10.7.0.20/32, fd00:7::20/128]");
        let pings = far_side_pings(&dual, &nets(&["fd00:7::1/64"]), None);
        assert_eq!(
            labels(&pings),
            ["peer/laptop: laptop → hub-wg0 (fd00:7::1) [fd00:7::1]"]
        );
    }

    fn member(name: &str, node: &str, mesh: &str, uid: &str, addresses: &[&str]) -> Value {
        serde_json::json!({
            "kind": "Interface",
            "metadata": {"name": name, "namespace": "n", "labels": {"kwire.dev/mesh": mesh},
                "ownerReferences": [{"kind": "Mesh", "name": mesh, "uid": uid, "controller": true}]},
            "spec": {"nodeName": node},
            "status": {"addresses": addresses},
        })
    }

    #[test]
    fn every_mesh_member_pings_every_other_member_of_its_own_mesh_only() {
        let mut hand_written = member("x", "x", "overlay", "u1", &["10.60.0.9/24"]);
        hand_written["metadata"]["ownerReferences"] = serde_json::json!([]);
        let interfaces = vec![
            member(
                "m-a",
                "a",
                "overlay",
                "u1",
                &["10.60.0.1/24", "fd00:60::1/64"],
            ),
            member(
                "m-b",
                "b",
                "overlay",
                "u1",
                &["10.60.0.2/24", "fd00:60::2/64"],
            ),
            member("m-c", "c", "overlay", "u1", &["10.60.0.3/24"]),
            member("o-a", "a", "other", "u2", &["10.70.0.1/24"]),
            hand_written,
        ];
        let pings: Vec<String> = mesh_pings(&interfaces)
            .iter()
            .map(|p| format!("{}: {}", p.from, p.label))
            .collect();
        // C has no IPv6 address, so nobody pings it over IPv6 and it pings nobody over IPv6.
        assert_eq!(
            pings,
            [
                "a: A → B (10.60.0.2, Mesh overlay)",
                "a: A → B (fd00:60::2, Mesh overlay)",
                "a: A → C (10.60.0.3, Mesh overlay)",
                "b: B → A (10.60.0.1, Mesh overlay)",
                "b: B → A (fd00:60::1, Mesh overlay)",
                "b: B → C (10.60.0.3, Mesh overlay)",
                "c: C → A (10.60.0.1, Mesh overlay)",
                "c: C → B (10.60.0.2, Mesh overlay)",
            ]
        );
    }
}
