//! `kwire plan`: the kernel changes the node daemon would make, from files.
//!
//! The same code as the daemon: [`translate`] turns the objects of a node into its
//! `DesiredNode`, and [`plan`] diffs that against an `ObservedNode` (empty by default,
//! or the real kernel with `--observe`). What the operator would have resolved comes from
//! [`crate::offline`]; keys the files cannot know are placeholders, never printed
//! (private and pre-shared keys print as `<redacted>`, placeholder public keys as
//! `<public key of NAME>`).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs as _};

use kube::ResourceExt as _;
use kwire_crds::keys::{PresharedKey, PrivateKey};
use kwire_crds::v1alpha1::{Interface, Peer, Route};
use kwire_mesh::world::ns_of;
use kwire_node_daemon::api::desired::{NodeObjects, translate};
use kwire_node_daemon::model::{IfaceName, ObservedForwarding, ObservedNode};
use kwire_node_daemon::plan::plan;
use kwire_node_daemon::validate::validate;

use crate::offline::Offline;

/// The plan of one node, rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    pub node: String,
    /// The plan's `Display`, with placeholder keys replaced by their labels.
    pub plan: String,
    pub steps: usize,
    pub conflicts: usize,
    /// Objects the daemon could not configure, and desired state it would refuse.
    pub problems: Vec<String>,
}

/// What an empty node looks like: no devices, no routes, forwarding off (as on a freshly
/// installed machine), so that the plan shows every step the daemon would take.
pub fn fresh_node() -> ObservedNode {
    ObservedNode {
        forwarding: ObservedForwarding {
            ipv4: Some(false),
            ipv6: Some(false),
        },
        ..ObservedNode::default()
    }
}

/// A placeholder secret: the files never hold the real one, and it is never printed.
fn placeholder_secret(n: usize) -> [u8; 32] {
    let mut bytes = [0x5a; 32];
    bytes[..8].copy_from_slice(&(n as u64 + 1).to_be_bytes());
    bytes
}

/// Endpoints of the node's peers that are host names, to be looked up as the daemon does.
pub fn host_endpoints(off: &Offline) -> Vec<String> {
    let mut out: Vec<String> = off
        .peers
        .iter()
        .filter_map(|p| p.status.as_ref().and_then(|s| s.resolved.as_ref()))
        .flat_map(|r| [r.endpoint.clone(), r.local_endpoint.clone()])
        .flatten()
        .filter(|e| e.parse::<SocketAddr>().is_err())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Looks host-name endpoints up with the system resolver (unresolvable ones are left out,
/// and the daemon's translation reports them as `EndpointUnresolvable`).
pub fn lookup_hosts(endpoints: &[String]) -> BTreeMap<String, SocketAddr> {
    endpoints
        .iter()
        .filter_map(|e| {
            let addr = e.to_socket_addrs().ok()?.next()?;
            Some((e.clone(), addr))
        })
        .collect()
}

/// The plan for one node. When the kernel already has a device with a private key, that
/// key is taken as the desired one (files never know it), so that a converged node plans
/// no key change.
pub fn plan_node(
    off: &Offline,
    node: &str,
    observed: &ObservedNode,
    resolved_hosts: &BTreeMap<String, SocketAddr>,
) -> NodePlan {
    let interfaces: Vec<&Interface> = off
        .interfaces
        .iter()
        .filter(|i| i.spec.node_name.as_str() == node)
        .collect();
    let mut objects = NodeObjects {
        interfaces: interfaces.clone(),
        peers: off.peers.iter().collect::<Vec<&Peer>>(),
        routes: off.routes.iter().collect::<Vec<&Route>>(),
        resolved_hosts: resolved_hosts.clone(),
        ..NodeObjects::default()
    };
    for (n, i) in off.interfaces.iter().enumerate() {
        if i.spec.node_name.as_str() != node {
            continue;
        }
        let observed_key = IfaceName::new(i.device_name())
            .ok()
            .and_then(|d| observed.devices.get(&d))
            .and_then(|d| d.wireguard.as_ref())
            .and_then(|w| w.private_key.clone());
        let key = observed_key.unwrap_or_else(|| PrivateKey::from_bytes(placeholder_secret(n)));
        objects
            .private_keys
            .insert((ns_of(i), i.name_any()), Ok(key));
    }
    for (n, p) in off.peers.iter().enumerate() {
        if p.spec.preshared_key.is_some() {
            objects.preshared_keys.insert(
                (ns_of(p), p.name_any()),
                Ok(PresharedKey::from_bytes(placeholder_secret(1000 + n))),
            );
        }
    }

    let translation = translate(&objects);
    let mut problems = Vec::new();
    for (kind, found) in [
        ("Interface", &translation.interface_problems),
        ("Peer", &translation.peer_problems),
        ("Route", &translation.route_problems),
    ] {
        for ((_, name), p) in found {
            problems.push(format!("{kind}/{name}: {}: {}", p.reason, p.message));
        }
    }
    for error in validate(&translation.desired) {
        problems.push(format!("invalid desired state: {error}"));
    }
    let planned = plan(&translation.desired, observed);
    NodePlan {
        node: node.to_string(),
        plan: off.keys.redact(&planned.to_string()),
        steps: planned.steps.len(),
        conflicts: planned.conflicts.len(),
        problems: problems.iter().map(|p| off.keys.redact(p)).collect(),
    }
}

/// One section per node: `node b: N steps`, the steps, then what could not be configured.
pub fn render(plans: &[NodePlan], notes: &[String]) -> String {
    let mut out = String::new();
    for (i, p) in plans.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let steps = match p.steps {
            1 => "1 step".to_string(),
            n => format!("{n} steps"),
        };
        let conflicts = match p.conflicts {
            0 => String::new(),
            1 => ", 1 conflict".to_string(),
            n => format!(", {n} conflicts"),
        };
        out.push_str(&format!("node {}: {steps}{conflicts}\n", p.node));
        for line in p.plan.lines() {
            out.push_str(&format!("  {line}\n"));
        }
        for problem in &p.problems {
            out.push_str(&format!("  ! not configured: {problem}\n"));
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            out.push_str(&format!("note: {note}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::resolve_offline;
    use kwire_crds::manifest::parse_manifests;
    use kwire_mesh::world::NodeInfo;

    const RELAY: &str = include_str!("../../examples/seed/relay.yaml");

    fn relay(addresses: bool) -> Offline {
        let mut objects = parse_manifests(RELAY).unwrap();
        for o in &mut objects {
            if let kwire_crds::manifest::KwireObject::Interface(i) = o {
                i.metadata.namespace = Some("seed".into());
            } else if let kwire_crds::manifest::KwireObject::Peer(p) = o {
                p.metadata.namespace = Some("seed".into());
            } else if let kwire_crds::manifest::KwireObject::Route(r) = o {
                r.metadata.namespace = Some("seed".into());
            }
        }
        let nodes: Vec<NodeInfo> = if addresses {
            [
                ("a", "10.211.55.10"),
                ("b", "10.211.55.11"),
                ("c", "10.211.55.12"),
            ]
            .iter()
            .map(|(n, ip)| NodeInfo {
                name: n.to_string(),
                internal: vec![ip.to_string()],
                external: vec![],
            })
            .collect()
        } else {
            Vec::new()
        };
        resolve_offline(&objects, &nodes)
    }

    #[test]
    fn node_b_of_the_relay_gets_two_devices_forwarding_and_both_peers() {
        let off = relay(true);
        let p = plan_node(&off, "b", &fresh_node(), &BTreeMap::new());
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let expected = [
            "+ create device wg0-server for seed/b-wg0-server",
            "~ mark device wg0-server as kwire:seed/b-wg0-server",
            "~ wg0-server: set private key <redacted>",
            "~ wg0-server: set listen port 22222",
            "+ wg0-server: add peer <public key of a-wg0-client> endpoint 10.211.55.10:11111 allowed-ips 10.1.0.1/32 keepalive 15",
            "+ wg0-server: add address 10.1.0.2/24",
            "~ wg0-server: set up",
            "~ wg0-server: enable ipv4 forwarding",
            "~ wg0-server: enable ipv6 forwarding",
            "+ create device wg1-client for seed/b-wg1-client",
            "~ mark device wg1-client as kwire:seed/b-wg1-client",
            "~ wg1-client: set private key <redacted>",
            "~ wg1-client: set listen port 23333",
            "+ wg1-client: add peer <public key of c-wg0-server> endpoint 10.211.55.12:33333 allowed-ips 10.2.0.2/32 keepalive 15",
            "+ wg1-client: add address 10.2.0.1/24",
            "~ wg1-client: set up",
            "~ wg1-client: enable ipv4 forwarding",
            "~ wg1-client: enable ipv6 forwarding",
            "~ enable ipv4 forwarding (all)",
        ];
        assert_eq!(p.plan.lines().collect::<Vec<_>>(), expected, "{}", p.plan);
        assert_eq!(p.steps, expected.len());
    }

    #[test]
    fn node_a_gets_the_route_to_c_through_b() {
        let p = plan_node(&relay(true), "a", &fresh_node(), &BTreeMap::new());
        assert!(
            p.plan
                .lines()
                .any(|l| l == "+ route 10.2.0.0/24 table main metric 0 via 10.1.0.2 dev wg0-client"),
            "{}",
            p.plan
        );
    }

    #[test]
    fn without_node_addresses_peers_get_no_endpoint_and_a_note_says_why() {
        let off = relay(false);
        let p = plan_node(&off, "b", &fresh_node(), &BTreeMap::new());
        assert!(p.plan.contains(
            "+ wg1-client: add peer <public key of c-wg0-server> allowed-ips 10.2.0.2/32 keepalive 15"
        ));
        let text = render(&[p], &off.notes_for(&["b".to_string()]));
        assert!(text.starts_with("node b: 19 steps\n  + create device wg0-server"));
        assert!(text.contains("note: the address of node c is not known offline"));
    }

    #[test]
    fn no_key_material_is_printed() {
        let off = relay(true);
        for node in off.nodes() {
            let p = plan_node(&off, &node, &fresh_node(), &BTreeMap::new());
            let text = render(&[p], &[]);
            assert!(
                !text.contains("WlpaWl"),
                "a placeholder secret leaked: {text}"
            );
            assert!(
                !text.contains("a3dpcmUtcG"),
                "a placeholder public key leaked: {text}"
            );
        }
    }
}
